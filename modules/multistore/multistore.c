/*
 * modules/multistore — several stores per user: rename, delete (a task, confirmed by
 * name) and the default store the web page opens ("switch"). Creating a store is
 * taskmgr's (POST /api/v1/stores); listing is the kernel's (GET /api/v1/stores, which
 * marks the default store with "default": true).
 *
 *   routes   PATCH  /api/v1/stores/{sid}        {"name"} rename
 *            DELETE /api/v1/stores/{sid}        {"confirm": "<name>"} -> 202 {"task"}
 *            GET    /api/v1/me/default-store    {"store"}
 *            PUT    /api/v1/me/default-store    {"store": sid}
 *   tasks    multistore.delete {store, name, files}: empties the store a slice at a time
 *            through api->store_delete_step (idempotent, so a restart resumes it), reports
 *            progress, notifies the owner; the kernel raises store.deleted.
 *   config   delete_slice (keys removed per step)
 *
 * Deleting: the handler hides the store (store_delete_begin) before it answers, so the
 * store is gone for its owner at once; kv "del/<sid>" names the task. At init, a store
 * left "deleting" without that key (a crash between the two) gets a new task.
 * Threads: handlers on HTTP workers, the runner on the worker pool; the state is
 * read-only after init.
 */
#include "mbyte.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ms {
    mb_module *self;
    const mb_api *api;
    int slice;
} ms;

static int req_sid(ms *m, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = m->api->req_param(req, "sid");
    char *end = NULL;
    if (!s || !*s || *s < '0' || *s > '9' || ((*sid = strtoull(s, &end, 10)), *end) || !*sid)
        return m->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    return 0;
}

static int str_field(ms *m, json_t *body, const char *k, const char **out, mb_err *err)
{
    json_t *v = json_object_get(body, k);
    if (!json_is_string(v))
        return m->api->err_set(err, MB_EINVAL, "%s: is required and must be a string", k);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return m->api->err_set(err, MB_EINVAL, "%s: may not contain NUL", k);
    *out = json_string_value(v);
    return 0;
}

/* PATCH /api/v1/stores/{sid} {"name"} */
static int h_rename(mb_req *req, void *state, mb_err *err)
{
    ms *m = state;
    uint64_t sid = 0;
    const char *name;
    json_t *body, *out = NULL;
    int rc = req_sid(m, req, &sid, err);
    if (rc)
        return rc;
    const mb_user *u = m->api->req_user(req);
    if ((rc = m->api->store_get(u, sid, &out, err))) /* another user's store: 404 */
        return rc;
    json_decref(out);
    if (!(body = m->api->req_json(req, err)))
        return err->code;
    if ((rc = str_field(m, body, "name", &name, err)) || (rc = m->api->store_rename(u, sid, name, err)) ||
        (rc = m->api->store_get(u, sid, &out, err)))
        return rc;
    return m->api->reply_json(req, 200, out);
}

/* DELETE /api/v1/stores/{sid} {"confirm": "<the store's name>"} -> 202 {"task"} */
static int h_delete(mb_req *req, void *state, mb_err *err)
{
    ms *m = state;
    uint64_t sid, task;
    const char *confirm;
    json_t *store = NULL, *body, *usage = NULL;
    int rc = req_sid(m, req, &sid, err);
    if (rc)
        return rc;
    const mb_user *u = m->api->req_user(req);
    if ((rc = m->api->store_get(u, sid, &store, err)))
        return rc;
    char name[512];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(store, "name")));
    json_decref(store);
    if (!(body = m->api->req_json(req, err)))
        return err->code;
    if ((rc = str_field(m, body, "confirm", &confirm, err)))
        return rc;
    if (strcmp(confirm, name))
        return m->api->err_set(err, MB_EINVAL, "confirm: must be the store's name exactly ('%s')", name);
    json_int_t files = 0;
    if (m->api->usage_get(sid, 0, &usage, err) == 0)
        files = json_integer_value(json_object_get(usage, "files"));
    json_decref(usage);
    if ((rc = m->api->store_delete_begin(u, sid, err)))
        return rc;
    rc = m->api->task_submit("multistore.delete", u->id,
                             json_pack("{s:I, s:s, s:I}", "store", (json_int_t)sid, "name", name, "files", files), &task,
                             err);
    if (rc)
        return rc; /* the store stays hidden; init resubmits the task at the next start */
    char key[64], val[32];
    snprintf(key, sizeof key, "del/%016llx", (unsigned long long)sid);
    int n = snprintf(val, sizeof val, "%llu", (unsigned long long)task);
    m->api->kv_put(m->self, key, val, (size_t)n, true, err);
    return m->api->reply_json(req, 202, json_pack("{s:I, s:I}", "task", (json_int_t)task, "store", (json_int_t)sid));
}

/* GET /api/v1/me/default-store */
static int h_default_get(mb_req *req, void *state, mb_err *err)
{
    ms *m = state;
    uint64_t sid = 0;
    int rc = m->api->store_default_get(m->api->req_user(req)->id, &sid, err);
    if (rc)
        return rc;
    return m->api->reply_json(req, 200, json_pack("{s:I}", "store", (json_int_t)sid));
}

/* PUT /api/v1/me/default-store {"store": sid} */
static int h_default_put(mb_req *req, void *state, mb_err *err)
{
    ms *m = state;
    json_t *body = m->api->req_json(req, err);
    if (!body)
        return err->code;
    json_t *v = json_object_get(body, "store");
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return m->api->err_set(err, MB_EINVAL, "store: must be a store id (a positive whole number)");
    int rc = m->api->store_default_set(m->api->req_user(req), (uint64_t)json_integer_value(v), err);
    if (rc)
        return rc;
    return m->api->reply_json(req, 200, json_pack("{s:O}", "store", v));
}

/* multistore.delete: runs until the kernel says the store is gone. */
static int t_delete(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    ms *m = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(args, "store"));
    const char *name = json_string_value(json_object_get(args, "name"));
    double total = 2.0 * (double)json_integer_value(json_object_get(args, "files")) + 1;
    int64_t done = 0, n = 0;
    int rc;
    /* A store still ready here was never begun (resubmitted by hand): begin it. */
    m->api->store_delete_begin(NULL, sid, err);
    while ((rc = m->api->store_delete_step(sid, m->slice, &n, err)) == 1) {
        done += n;
        int pct = (int)(done / total * 100);
        char msg[96];
        snprintf(msg, sizeof msg, "removed %lld entries and versions", (long long)done);
        if (m->api->task_progress(task, pct > 99 ? 99 : pct, msg))
            return m->api->err_set(err, MB_ECANCELED, "stopped; the store stays hidden and is deleted at the next try");
    }
    if (rc < 0)
        return rc;
    char key[64], body[600];
    snprintf(key, sizeof key, "del/%016llx", (unsigned long long)sid);
    m->api->kv_del(m->self, key, true, err);
    m->api->task_progress(task, 100, "deleted");
    m->api->task_result(task, json_pack("{s:I, s:s}", "store", (json_int_t)sid, "name", name ? name : ""));
    snprintf(body, sizeof body, "The store '%s' and everything in it were deleted.", name ? name : "");
    m->api->notify(m->api->task_owner(task), "success", "Store deleted", body);
    return 0;
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    ms *m = calloc(1, sizeof *m);
    if (!m)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    m->self = self;
    m->api = api;
    m->slice = (int)json_integer_value(json_object_get(config, "delete_slice"));
    *state = m;
    /* A store hidden for deletion with no task (a crash between the two) gets one now. */
    json_t *all = NULL;
    mb_err e = {0};
    if (api->store_list_all(0, &all, &e) == 0) {
        size_t i;
        json_t *s;
        json_array_foreach(all, i, s) {
            if (strcmp(json_string_value(json_object_get(s, "state")), "deleting"))
                continue;
            uint64_t sid = (uint64_t)json_integer_value(json_object_get(s, "id"));
            char key[64], *v = NULL;
            size_t len;
            snprintf(key, sizeof key, "del/%016llx", (unsigned long long)sid);
            if (api->kv_get(self, key, &v, &len, &e) == 0) {
                free(v);
                continue;
            }
            uint64_t task;
            if (api->task_submit("multistore.delete", (uint64_t)json_integer_value(json_object_get(s, "owner")),
                                 json_pack("{s:I, s:O, s:i}", "store", (json_int_t)sid, "name",
                                           json_object_get(s, "name"), "files", 0),
                                 &task, &e) == 0) {
                char val[32];
                int n = snprintf(val, sizeof val, "%llu", (unsigned long long)task);
                api->kv_put(self, key, val, (size_t)n, true, &e);
            }
        }
    }
    json_decref(all);
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
    ((ms *)state)->slice = (int)json_integer_value(json_object_get(config, "delete_slice"));
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "delete_slice", MB_CFG_INT, "500", 1, 100000},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "PATCH", "/api/v1/stores/{sid}", MB_ROLE_USER, h_rename},
    {sizeof(mb_route), "DELETE", "/api/v1/stores/{sid}", MB_ROLE_USER, h_delete},
    {sizeof(mb_route), "GET", "/api/v1/me/default-store", MB_ROLE_USER, h_default_get},
    {sizeof(mb_route), "PUT", "/api/v1/me/default-store", MB_ROLE_USER, h_default_put},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "multistore.delete", t_delete, 10},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "multistore",
    .version = "1.0.0",
    .description = "Several stores per user: rename, delete (a task), the default store",
    .config = config_keys,
    .routes = routes,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
