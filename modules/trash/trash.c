/*
 * modules/trash — deleting moves files and folders to the store's trash (issue 5).
 *
 * How every door goes through it: the kernel's fs_delete (HTTP DELETE, FTP DELE/RMD, the
 * web page, other modules) runs the file.delete filters before it deletes. This module's
 * filter runs last (priority 1000, after quotas and policies had their say), moves the
 * entry out of the namespace with api->trash_detach (one synced batch: the directory entry
 * goes, a trash record with the entry, its original path, who and when comes in; versions
 * and chunk references stay) and answers MB_HANDLED, so fs_delete reports success without
 * deleting. Unloaded, the filter is gone and deletes are permanent again.
 *
 *   config   retention_days (30), purge_interval (seconds between purge runs, 3600)
 *   routes   GET    /api/v1/stores/{sid}/trash                list, oldest first
 *            POST   /api/v1/stores/{sid}/trash/{id}/restore   back to the original path or a
 *                                                             suffixed name (reported)
 *            DELETE /api/v1/stores/{sid}/trash/{id}           delete permanently
 *            DELETE /api/v1/stores/{sid}/trash                empty the trash
 *   hooks    filter file.delete (priority 1000)
 *   tasks    trash.purge: purge every item older than its store's retention; submitted
 *            right after load (so a restart with a moved clock purges at once) and every
 *            purge_interval seconds by a kernel timer this copy owns (api->timer_add: the
 *            kernel cancels it on unload and reload).
 *
 * Threads: handlers on HTTP workers, the filter on the deleting thread, the runner and the
 * timer on the pool; reconfigure on the loop. Shared state is the config (two integers,
 * read as they are) and the timer handle, which only init and reconfigure change.
 */
#include "mbyte.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct trash {
    mb_module *self;
    const mb_api *api;
    int64_t retention_days, purge_interval;
    mb_timer *timer;
} trash;

/* The one place the retention of a store is read: the store's own setting (kept by the
 * kernel, edited through storeconfig) wins over this module's YAML default. */
static int64_t store_retention_days(trash *t, uint64_t sid)
{
    int64_t days = t->retention_days;
    json_t *s = NULL;
    mb_err e;
    if (t->api->store_settings_get(sid, &s, &e) == 0) {
        json_t *d = json_object_get(s, "trash_retention_days");
        if (json_is_integer(d) && json_integer_value(d) > 0)
            days = json_integer_value(d);
        json_decref(s);
    }
    return days;
}

static bool parse_id(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s))
        return false;
    *out = strtoull(s, NULL, 10);
    return *out > 0;
}

static int req_sid(trash *t, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = t->api->req_param(req, "sid");
    if (!parse_id(s, sid))
        return t->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    return 0;
}

static int req_item(trash *t, mb_req *req, uint64_t *id, mb_err *err)
{
    const char *s = t->api->req_param(req, "id");
    if (!parse_id(s, id))
        return t->api->err_set(err, MB_EINVAL, "id: a trash item id is a whole number from 1");
    return 0;
}

/* ------------------------------------------------------------------ routes --- */

/* GET /api/v1/stores/{sid}/trash */
static int h_list(mb_req *req, void *state, mb_err *err)
{
    trash *t = state;
    uint64_t sid = 0;
    json_t *items;
    int rc = req_sid(t, req, &sid, err);
    if (rc || (rc = t->api->trash_list(t->api->req_user(req), sid, &items, err)))
        return rc;
    int64_t keep = store_retention_days(t, sid) * 86400;
    size_t i;
    json_t *it;
    json_int_t total = 0;
    json_array_foreach(items, i, it) {
        json_object_set_new(it, "expires",
                            json_integer(json_integer_value(json_object_get(it, "deleted")) + keep));
        total += json_integer_value(json_object_get(it, "size"));
    }
    return t->api->reply_json(req, 200,
                              json_pack("{s:o, s:I, s:I, s:b}", "items", items, "retention_days",
                                        (json_int_t)store_retention_days(t, sid), "size", total,
                                        "counts_toward_quota", 1));
}

/* The original path of item id (the answer reports it next to where it went). */
static int item_path(trash *t, const mb_user *u, uint64_t sid, uint64_t id, char **path, mb_err *err)
{
    json_t *items;
    int rc = t->api->trash_list(u, sid, &items, err);
    if (rc)
        return rc;
    size_t i;
    json_t *it;
    *path = NULL;
    json_array_foreach(items, i, it) if ((uint64_t)json_integer_value(json_object_get(it, "id")) == id)
        *path = strdup(json_string_value(json_object_get(it, "path")));
    json_decref(items);
    if (!*path)
        return t->api->err_set(err, MB_ENOENT, "no such item in the trash: %llu", (unsigned long long)id);
    return 0;
}

/* POST /api/v1/stores/{sid}/trash/{id}/restore -> {"path","original","renamed"} */
static int h_restore(mb_req *req, void *state, mb_err *err)
{
    trash *t = state;
    uint64_t sid, id;
    int rc = req_sid(t, req, &sid, err);
    if (rc || (rc = req_item(t, req, &id, err)))
        return rc;
    const mb_user *u = t->api->req_user(req);
    char *orig = NULL, *path = NULL;
    if ((rc = item_path(t, u, sid, id, &orig, err)))
        return rc;
    if ((rc = t->api->trash_attach(u, sid, id, &path, err))) {
        free(orig);
        return rc;
    }
    json_t *body = json_pack("{s:s, s:s, s:b}", "path", path, "original", orig, "renamed", strcmp(path, orig) != 0);
    free(orig);
    free(path);
    return t->api->reply_json(req, 200, body);
}

/* DELETE /api/v1/stores/{sid}/trash/{id} */
static int h_purge(mb_req *req, void *state, mb_err *err)
{
    trash *t = state;
    uint64_t sid, id;
    int rc = req_sid(t, req, &sid, err);
    if (rc || (rc = req_item(t, req, &id, err)) || (rc = t->api->trash_purge(t->api->req_user(req), sid, id, err)))
        return rc;
    return t->api->reply_bytes(req, 204, NULL, "", 0);
}

/* DELETE /api/v1/stores/{sid}/trash -> {"purged": n} */
static int h_empty(mb_req *req, void *state, mb_err *err)
{
    trash *t = state;
    uint64_t sid = 0;
    json_t *items;
    const mb_user *u = t->api->req_user(req);
    int rc = req_sid(t, req, &sid, err);
    if (rc || (rc = t->api->trash_list(u, sid, &items, err)))
        return rc;
    size_t i;
    json_t *it;
    int n = 0;
    json_array_foreach(items, i, it) {
        mb_err e = {0};
        int r = t->api->trash_purge(u, sid, (uint64_t)json_integer_value(json_object_get(it, "id")), &e);
        if (r == 0)
            n++;
        else if (r != MB_ENOENT) { /* gone already: someone else purged it meanwhile */
            json_decref(items);
            *err = e;
            return r;
        }
    }
    json_decref(items);
    return t->api->reply_json(req, 200, json_pack("{s:i}", "purged", n));
}

/* ------------------------------------------------------------------- hooks --- */

/* file.delete: move to the trash instead. Runs on the deleting thread, before the kernel
 * takes its commit lock (trash_detach takes it). */
static int f_delete(const char *event, json_t *p, void *state, mb_err *err)
{
    (void)event;
    trash *t = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(p, "store"));
    const char *path = json_string_value(json_object_get(p, "path"));
    int flags = json_is_true(json_object_get(p, "recursive")) ? MB_FS_RECURSIVE : 0;
    uint64_t id;
    int rc = t->api->trash_detach(NULL, sid, path ? path : "", flags,
                                  (uint64_t)json_integer_value(json_object_get(p, "user")), &id, err);
    if (rc)
        return rc;
    return t->api->err_set(err, MB_HANDLED, "moved to the trash (item %llu)", (unsigned long long)id);
}

/* ------------------------------------------------------------------- tasks --- */

/* trash.purge: every item past its store's retention goes for good. */
static int t_purge(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)args;
    trash *t = state;
    json_t *items;
    int rc = t->api->trash_list(NULL, 0, &items, err);
    if (rc)
        return rc;
    int64_t now = t->api->now();
    int n = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        uint64_t sid = (uint64_t)json_integer_value(json_object_get(it, "store"));
        int64_t deleted = json_integer_value(json_object_get(it, "deleted"));
        if (now - deleted < store_retention_days(t, sid) * 86400)
            continue;
        mb_err e = {0};
        if (t->api->trash_purge(NULL, sid, (uint64_t)json_integer_value(json_object_get(it, "id")), &e) == 0)
            n++;
        else if (e.code != MB_ENOENT)
            t->api->log(t->self, MB_LOG_WARN, "purge of trash item failed: %s", e.msg);
        if (t->api->task_progress(task, (int)(i * 100 / json_array_size(items)), "purging"))
            break;
    }
    json_decref(items);
    if (n)
        t->api->log(t->self, MB_LOG_INFO, "purged %d trash items past their retention", n);
    t->api->task_result(task, json_pack("{s:i}", "purged", n));
    return 0;
}

/* The timer: a purge right after load (the kernel arms timers once init returned and the
 * tables are registered), then one every purge_interval seconds; a refused submit is
 * retried a second later. */
static void tick(void *arg)
{
    trash *t = arg;
    uint64_t id;
    mb_err e = {0};
    if (t->api->task_submit("trash.purge", 0, json_object(), &id, &e))
        t->api->timer_add(t->self, 1000, 0, tick, t, NULL, &e);
}

static int timer_start(trash *t, mb_err *err)
{
    t->api->timer_cancel(t->timer);
    t->timer = NULL;
    return t->api->timer_add(t->self, 0, t->purge_interval * 1000, tick, t, &t->timer, err);
}

/* ---------------------------------------------------------- init and fini --- */

static void read_config(trash *t, const json_t *config)
{
    t->retention_days = json_integer_value(json_object_get(config, "retention_days"));
    t->purge_interval = json_integer_value(json_object_get(config, "purge_interval"));
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    trash *t = calloc(1, sizeof *t);
    if (!t)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    t->self = self;
    t->api = api;
    read_config(t, config);
    int rc = timer_start(t, err);
    if (rc) {
        free(t);
        return rc;
    }
    *state = t;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    free(state); /* the kernel cancelled the timer before calling fini */
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    trash *t = state;
    int64_t interval = t->purge_interval;
    read_config(t, config);
    return t->purge_interval == interval ? 0 : timer_start(t, err); /* the new period */
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "retention_days", MB_CFG_INT, "30", 1, 36500},
    {sizeof(mb_config_key), "purge_interval", MB_CFG_INT, "3600", 1, 604800},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/trash", MB_ROLE_USER, h_list},
    {sizeof(mb_route), "DELETE", "/api/v1/stores/{sid}/trash", MB_ROLE_USER, h_empty},
    {sizeof(mb_route), "POST", "/api/v1/stores/{sid}/trash/{id}/restore", MB_ROLE_USER, h_restore},
    {sizeof(mb_route), "DELETE", "/api/v1/stores/{sid}/trash/{id}", MB_ROLE_USER, h_purge},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "file.delete", MB_HOOK_FILTER, 1000, f_delete, NULL},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "trash.purge", t_purge, 3},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "trash",
    .version = "1.0.0",
    .description = "Deleting moves files and folders to the store's trash; restore, purge, retention",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
