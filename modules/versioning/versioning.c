/*
 * modules/versioning — every overwrite keeps the previous version (issue 5).
 *
 * How: the kernel's fs_write_commit runs the file.version.drop filters before it would drop
 * the old versions of a file being overwritten; this module's filter answers MB_HANDLED, so
 * the kernel keeps them (in the same batch as the new version; chunks the versions share
 * are shared, so a small edit of a large file costs only the chunks that changed). Unloaded,
 * or switched off for a store (settings versioning.enabled false), no new version is kept;
 * versions already kept stay until the user deletes them, the file is deleted, or
 * retention thins them.
 *
 *   config   max_versions (100), max_age_days (365)
 *   routes   GET    /api/v1/stores/{sid}/versions/{path}            the versions, oldest first
 *            GET    /api/v1/stores/{sid}/versions/{path}?version=V  that version's bytes
 *            POST   /api/v1/stores/{sid}/versions/{path} {"restore": V}
 *            DELETE /api/v1/stores/{sid}/versions/{path}?version=V
 *   hooks    filter file.version.drop (keep); observer file.updated (queue the thinning)
 *   tasks    versioning.thin {store, path}: retention.c decides, version_delete drops
 *
 * Threads: handlers on HTTP workers; the filter on the committing thread under the kernel's
 * commit lock (it only answers); the observer on the loop thread (queues a task); the runner
 * on the pool. State is the immutable config.
 */
#include "mbyte.h"
#include "retention.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct versioning {
    mb_module *self;
    const mb_api *api;
    int64_t max_versions, max_age_days;
} versioning;

/* The one place a store's versioning settings are read: the store's own settings (kept by
 * the kernel, edited through storeconfig) win over this module's YAML defaults. */
static json_t *store_versioning(versioning *v, uint64_t sid)
{
    json_t *s = NULL;
    mb_err e;
    if (v->api->store_settings_get(sid, &s, &e))
        return NULL;
    json_t *o = json_incref(json_object_get(s, "versioning"));
    json_decref(s);
    return json_is_object(o) ? o : (json_decref(o), NULL);
}

static void store_limits(versioning *v, uint64_t sid, size_t *max_count, int64_t *max_age)
{
    *max_count = (size_t)v->max_versions;
    *max_age = v->max_age_days * 86400;
    json_t *o = store_versioning(v, sid);
    json_t *c = json_object_get(o, "max_versions"), *a = json_object_get(o, "max_age_days");
    if (json_is_integer(c) && json_integer_value(c) > 0)
        *max_count = (size_t)json_integer_value(c);
    if (json_is_integer(a) && json_integer_value(a) > 0)
        *max_age = json_integer_value(a) * 86400;
    json_decref(o);
}

static int req_sid(versioning *v, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = v->api->req_param(req, "sid");
    if (!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s) || !(*sid = strtoull(s, NULL, 10)))
        return v->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    return 0;
}

static int parse_version(versioning *v, const char *s, uint64_t *out, mb_err *err)
{
    if (!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s) || !(*out = strtoull(s, NULL, 10)))
        return v->api->err_set(err, MB_EINVAL, "version: must be a whole number from 1");
    return 0;
}

static const char *req_path(versioning *v, mb_req *req)
{
    const char *p = v->api->req_param(req, "path");
    return p ? p : "";
}

/* ------------------------------------------------------------------ routes --- */

/* One version's bytes, streamed by the kernel's file reply (Range, ETag and the rest, never
 * held in memory): the request's own ?version=V selects the version there. */
static int download(versioning *v, mb_req *req, uint64_t sid, uint64_t ver, mb_err *err)
{
    char vh[32];
    snprintf(vh, sizeof vh, "%llu", (unsigned long long)ver);
    v->api->reply_header(req, "X-MByte-Version", vh);
    return v->api->reply_file(req, v->api->req_user(req), sid, req_path(v, req), err);
}

/* GET /api/v1/stores/{sid}/versions/{path}[?version=V] */
static int h_list(mb_req *req, void *state, mb_err *err)
{
    versioning *v = state;
    uint64_t sid, ver;
    int rc = req_sid(v, req, &sid, err);
    if (rc)
        return rc;
    const char *q = v->api->req_query(req, "version");
    if (q) {
        if ((rc = parse_version(v, q, &ver, err)))
            return rc;
        return download(v, req, sid, ver, err);
    }
    json_t *list;
    if ((rc = v->api->version_list(v->api->req_user(req), sid, req_path(v, req), &list, err)))
        return rc;
    return v->api->reply_json(req, 200, list);
}

/* POST /api/v1/stores/{sid}/versions/{path} {"restore": V} -> the file's info */
static int h_restore(mb_req *req, void *state, mb_err *err)
{
    versioning *v = state;
    uint64_t sid = 0;
    int rc = req_sid(v, req, &sid, err);
    if (rc)
        return rc;
    json_t *body = v->api->req_json(req, err);
    if (!body)
        return err->code;
    json_t *r = json_object_get(body, "restore");
    if (!json_is_integer(r) || json_integer_value(r) < 1)
        return v->api->err_set(err, MB_EINVAL, "restore: must be a version number (a whole number from 1)");
    json_t *info;
    if ((rc = v->api->version_restore(v->api->req_user(req), sid, req_path(v, req),
                                      (uint64_t)json_integer_value(r), &info, err)))
        return rc;
    return v->api->reply_json(req, 200, info);
}

/* DELETE /api/v1/stores/{sid}/versions/{path}?version=V */
static int h_delete(mb_req *req, void *state, mb_err *err)
{
    versioning *v = state;
    uint64_t sid, ver;
    int rc = req_sid(v, req, &sid, err);
    if (rc || (rc = parse_version(v, v->api->req_query(req, "version"), &ver, err)) ||
        (rc = v->api->version_delete(v->api->req_user(req), sid, req_path(v, req), ver, err)))
        return rc;
    return v->api->reply_bytes(req, 204, NULL, "", 0);
}

/* ------------------------------------------------------------------- hooks --- */

/* file.version.drop: keep the version being replaced. Runs under the kernel's commit lock:
 * answer only. The answer also writes the store's effective limits into the payload
 * ("max_versions", "max_age_days"), so storeconfig can show what this module applies by
 * asking the same filter (a probe with no file). */
static int f_keep(const char *event, json_t *p, void *state, mb_err *err)
{
    (void)event;
    versioning *v = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(p, "store"));
    /* A store whose settings switch versioning off keeps no new versions (as if unloaded);
     * the kernel still keeps the ones kept before. */
    json_t *o = store_versioning(v, sid);
    bool off = json_is_false(json_object_get(o, "enabled"));
    json_decref(o);
    if (off)
        return 0;
    size_t max_count;
    int64_t max_age;
    store_limits(v, sid, &max_count, &max_age);
    json_object_set_new(p, "max_versions", json_integer((json_int_t)max_count));
    json_object_set_new(p, "max_age_days", json_integer(max_age / 86400));
    return v->api->err_set(err, MB_HANDLED, "kept by versioning");
}

/* file.updated: thin that file's history on the pool, never on the loop thread. */
static void o_updated(const char *event, const json_t *p, void *state)
{
    (void)event;
    versioning *v = state;
    uint64_t id;
    mb_err e = {0};
    if (v->api->task_submit("versioning.thin", 0,
                            json_pack("{s:O, s:O}", "store", json_object_get(p, "store"), "path",
                                      json_object_get(p, "path")),
                            &id, &e))
        v->api->log(v->self, MB_LOG_WARN, "could not queue the thinning: %s", e.msg);
}

/* ------------------------------------------------------------------- tasks --- */

static int t_thin(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)task;
    versioning *v = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(args, "store"));
    const char *path = json_string_value(json_object_get(args, "path"));
    json_t *list;
    int rc = v->api->version_list(NULL, sid, path ? path : "", &list, err);
    if (rc == MB_ENOENT || rc == MB_ECONFLICT || rc == MB_EINVAL)
        return 0; /* moved, deleted or replaced by a folder since: nothing to thin here */
    if (rc)
        return rc;
    size_t n = json_array_size(list), max_count, dropped = 0;
    int64_t max_age;
    store_limits(v, sid, &max_count, &max_age);
    retention_item *items = calloc(n ? n : 1, sizeof *items);
    bool *keep = calloc(n ? n : 1, sizeof *keep);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(list, i);
        items[i] = (retention_item){(uint64_t)json_integer_value(json_object_get(o, "version")),
                                    json_integer_value(json_object_get(o, "time")),
                                    json_is_true(json_object_get(o, "current"))};
    }
    retention_select(items, n, v->api->now(), max_count, max_age, keep);
    for (size_t i = 0; i < n; i++) {
        if (keep[i])
            continue;
        mb_err e = {0};
        if (v->api->version_delete(NULL, sid, path, items[i].version, &e) == 0)
            dropped++;
    }
    free(items);
    free(keep);
    json_decref(list);
    v->api->task_result(task, json_pack("{s:I}", "dropped", (json_int_t)dropped));
    return 0;
}

/* ---------------------------------------------------------- init and fini --- */

static void read_config(versioning *v, const json_t *c)
{
    v->max_versions = json_integer_value(json_object_get(c, "max_versions"));
    v->max_age_days = json_integer_value(json_object_get(c, "max_age_days"));
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    versioning *v = calloc(1, sizeof *v);
    if (!v)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    v->self = self;
    v->api = api;
    read_config(v, config);
    *state = v;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    free(state);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    read_config(state, config);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "max_versions", MB_CFG_INT, "100", 1, 100000},
    {sizeof(mb_config_key), "max_age_days", MB_CFG_INT, "365", 1, 36500},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/versions/{path*}", MB_ROLE_USER, h_list},
    {sizeof(mb_route), "POST", "/api/v1/stores/{sid}/versions/{path*}", MB_ROLE_USER, h_restore},
    {sizeof(mb_route), "DELETE", "/api/v1/stores/{sid}/versions/{path*}", MB_ROLE_USER, h_delete},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "file.version.drop", MB_HOOK_FILTER, 100, f_keep, NULL},
    {sizeof(mb_hook), "file.updated", MB_HOOK_OBSERVER, 100, NULL, o_updated},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "versioning.thin", t_thin, 3},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "versioning",
    .version = "1.0.0",
    .description = "Every overwrite keeps the previous version; list, download, restore, delete, thinning",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
