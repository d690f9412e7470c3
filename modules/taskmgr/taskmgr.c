/*
 * modules/taskmgr — creates stores in the background.
 *
 *   routes   POST /api/v1/stores {"name"} -> 202 {"task","store"} at once
 *   tasks    taskmgr.provision {store, name}: layout (read the template), default folders
 *            from the template, initial settings, quota assignment, then ready — which
 *            makes the store visible and raises store.created (kernel). Every step
 *            reports progress. Any failure rolls everything back (the store is deleted
 *            through the kernel's store_delete_* calls) and the task fails with the
 *            reason; the owner is notified either way.
 *            taskmgr.home {user} (a system task, queued by the user.created observer):
 *            the same template into the Home store made with every account.
 *   config   template, max_concurrent, max_pending_per_user, max_stores_per_user,
 *            store_quota_bytes, step_delay_ms (conf.d/taskmgr.yaml)
 *
 * Crash safety: the store exists from the POST on, hidden ("provisioning"); kv
 * "p/<sid16>" = {"owner","task"} while its task is pending. A restart re-runs the task
 * (the kernel re-queues it): each step is idempotent (folders that exist are fine), so it
 * resumes; a store found already ready is done, one found being deleted finishes the
 * rollback. At init, a provisioning store with no "p/" key (a crash between creating it
 * and queueing its task) gets a rollback task. So after any crash there is either a
 * complete store or none.
 * Threads: handler on HTTP workers, runners on the worker pool; `slots` (mutex + cond)
 * bounds how many provisions run at once; `lock` guards the pending count.
 */
#include "mbyte.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct tm_state {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t lock;
    char template[256];
    int max_concurrent, max_pending, max_stores, step_delay_ms;
    json_int_t quota;
    int running;
} tm_state;

static void config_apply(tm_state *t, const json_t *c)
{
    pthread_mutex_lock(&t->lock);
    snprintf(t->template, sizeof t->template, "%s", json_string_value(json_object_get(c, "template")));
    t->max_concurrent = (int)json_integer_value(json_object_get(c, "max_concurrent"));
    t->max_pending = (int)json_integer_value(json_object_get(c, "max_pending_per_user"));
    t->max_stores = (int)json_integer_value(json_object_get(c, "max_stores_per_user"));
    t->quota = json_integer_value(json_object_get(c, "store_quota_bytes"));
    t->step_delay_ms = (int)json_integer_value(json_object_get(c, "step_delay_ms"));
    pthread_mutex_unlock(&t->lock);
}

static void pkey(char *out, size_t n, uint64_t sid) { snprintf(out, n, "p/%016llx", (unsigned long long)sid); }

typedef struct {
    uint64_t owner;
    int n;
} pend_count;

static int count_pending(const char *key, json_t *v, void *ud)
{
    (void)key;
    pend_count *pc = ud;
    if ((uint64_t)mb_jint(v, "owner") == pc->owner)
        pc->n++;
    return 0;
}

/* POST /api/v1/stores {"name"} -> 202 {"task","store"} */
static int h_create(mb_req *req, void *state, mb_err *err)
{
    tm_state *t = state;
    const mb_api *api = t->api;
    const mb_user *u = api->req_user(req);
    json_t *body = api->req_json(req, err);
    if (!body)
        return err->code;
    json_t *nv = json_object_get(body, "name");
    if (!json_is_string(nv) || strlen(json_string_value(nv)) != json_string_length(nv))
        return api->err_set(err, MB_EINVAL, "name: is required and must be a string without NUL");
    pthread_mutex_lock(&t->lock);
    int max_stores = t->max_stores, max_pending = t->max_pending;
    pthread_mutex_unlock(&t->lock);
    /* The limits: stores the user has (ready or being made) and provisions pending. */
    json_t *all = NULL;
    int rc = api->store_list_all(u->id, &all, err);
    if (rc)
        return rc;
    int have = 0;
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s) have += strcmp(json_string_value(json_object_get(s, "state")), "deleting") != 0;
    json_decref(all);
    if (have >= max_stores)
        return api->err_set(err, MB_ECONFLICT,
                            "you have %d stores and at most %d are allowed (taskmgr.max_stores_per_user)", have,
                            max_stores);
    pend_count pc = {u->id, 0};
    api->kv_scan_json(t->self, "p/", count_pending, &pc, err);
    if (pc.n >= max_pending)
        return api->err_set(err, MB_ETHROTTLE,
                            "%d of your stores are still being created; at most %d may wait at once "
                            "(taskmgr.max_pending_per_user)",
                            pc.n, max_pending);
    uint64_t sid, task;
    /* Where the store's chunks live (issue 21): the kernel checks it and keeps it. */
    json_t *place = json_object_get(body, "placement");
    json_t *settings = place && api->abi_minor >= 1 ? json_pack("{s:O}", "placement", place) : NULL;
    rc = api->store_create(u->id, json_string_value(nv), settings, &sid, err);
    json_decref(settings);
    if (rc)
        return rc;
    rc = api->task_submit("taskmgr.provision", u->id,
                          json_pack("{s:I, s:O}", "store", (json_int_t)sid, "name", nv), &task, err);
    if (rc) { /* nothing queued: take the hidden store away again */
        mb_err e = {0};
        if (api->store_delete_begin(NULL, sid, &e) == 0)
            while (api->store_delete_step(sid, 1000, NULL, &e) == 1)
                ;
        return rc;
    }
    char key[64];
    pkey(key, sizeof key, sid);
    json_t *pv = json_pack("{s:I, s:I}", "owner", (json_int_t)u->id, "task", (json_int_t)task);
    char *txt = json_dumps(pv, JSON_COMPACT);
    api->kv_put(t->self, key, txt, strlen(txt), true, err);
    free(txt);
    json_decref(pv);
    return api->reply_json(req, 202, json_pack("{s:I, s:I}", "task", (json_int_t)task, "store", (json_int_t)sid));
}

/* ---------------------------------------------------------------- the task --- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts))
        ;
}

static bool step(tm_state *t, mb_task *task, int pct, const char *msg)
{
    pthread_mutex_lock(&t->lock);
    int delay = t->step_delay_ms;
    pthread_mutex_unlock(&t->lock);
    if (delay)
        sleep_ms(delay);
    return t->api->task_progress(task, pct, msg);
}

/* Take the store away (idempotent) and forget its pending key. */
static void rollback(tm_state *t, uint64_t sid)
{
    mb_err e = {0};
    t->api->store_delete_begin(NULL, sid, &e);
    while (t->api->store_delete_step(sid, 1000, NULL, &e) == 1)
        ;
    char key[64];
    pkey(key, sizeof key, sid);
    t->api->kv_del(t->self, key, true, &e);
}

static json_t *find_store(tm_state *t, uint64_t owner, uint64_t sid)
{
    json_t *all = NULL, *found = NULL;
    mb_err e = {0};
    if (t->api->store_list_all(owner, &all, &e))
        return NULL;
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s) if ((uint64_t)json_integer_value(json_object_get(s, "id")) == sid) found =
        json_incref(s);
    json_decref(all);
    return found;
}

static int fail(tm_state *t, mb_task *task, uint64_t sid, const char *name, int code, const char *reason,
                mb_err *err)
{
    rollback(t, sid);
    char body[1400];
    snprintf(body, sizeof body, "The store '%s' could not be created: %s", name, reason);
    t->api->notify(t->api->task_owner(task), "error", "Store not created", body);
    return t->api->err_set(err, code, "%s; the store was rolled back", reason);
}

/* The template's folders and settings, and the store quota, into store sid. Each part is
 * idempotent (a folder that exists is fine; settings the store has win), so a resumed
 * task repeats it safely. 0, MB_ECANCELED, or another code with `reason` written. */
static int apply_template(tm_state *t, mb_task *task, uint64_t sid, char *reason, size_t rn)
{
    const mb_api *api = t->api;
    char tpl[256];
    pthread_mutex_lock(&t->lock);
    snprintf(tpl, sizeof tpl, "%s", t->template);
    json_int_t quota = t->quota;
    pthread_mutex_unlock(&t->lock);

    if (step(t, task, 10, "layout: reading the template"))
        return MB_ECANCELED;
    json_t *tp = NULL;
    mb_err e = {0};
    if (api->conf_load(tpl, &tp, &e)) {
        snprintf(reason, rn, "the store template '%s' cannot be read (%s)", tpl, e.msg);
        return MB_EIO;
    }
    json_t *folders = json_object_get(tp, "folders"), *settings = json_object_get(tp, "settings");
    if ((folders && !json_is_array(folders)) || (settings && !json_is_object(settings))) {
        json_decref(tp);
        snprintf(reason, rn, "the store template '%s' is not valid: folders must be a list and settings a map", tpl);
        return MB_EINVAL;
    }
    size_t n = json_array_size(folders), i;
    for (i = 0; i < n; i++) {
        const char *f = json_string_value(json_array_get(folders, i));
        char msg[300];
        snprintf(msg, sizeof msg, "folders: %s", f ? f : "?");
        if (step(t, task, 20 + (int)(40 * (i + 1) / n), msg)) {
            json_decref(tp);
            return MB_ECANCELED;
        }
        int rc = f ? api->folder_create(NULL, sid, f, MB_FS_PARENTS, NULL, &e) : MB_EINVAL;
        if (rc && rc != MB_EEXIST) { /* exists: a resumed task made it already */
            snprintf(reason, rn, "the template folder '%s' could not be created (%s)", f ? f : "?",
                     f ? e.msg : "not a string");
            json_decref(tp);
            return rc;
        }
    }
    if (step(t, task, 70, "settings")) {
        json_decref(tp);
        return MB_ECANCELED;
    }
    json_t *cur = NULL;
    if (api->store_settings_get(sid, &cur, &e) == 0) {
        if (settings)
            json_object_update_missing(cur, settings);
        if (step(t, task, 85, "quota")) {
            json_decref(cur);
            json_decref(tp);
            return MB_ECANCELED;
        }
        if (quota > 0 && !json_object_get(cur, "max_bytes"))
            json_object_set_new(cur, "max_bytes", json_integer(quota));
        api->store_settings_set(sid, cur, &e);
    }
    json_decref(cur);
    json_decref(tp);
    return 0;
}

static int provision(tm_state *t, mb_task *task, uint64_t sid, const char *name, mb_err *err)
{
    const mb_api *api = t->api;
    uint64_t owner = api->task_owner(task);
    char reason[1024];
    mb_err e = {0};
    int rc = apply_template(t, task, sid, reason, sizeof reason);
    if (rc == MB_ECANCELED)
        return api->err_set(err, MB_ECANCELED, "cancelled");
    if (rc)
        return fail(t, task, sid, name, rc, reason, err);
    if (step(t, task, 95, "ready"))
        return api->err_set(err, MB_ECANCELED, "cancelled");
    if (api->store_ready(sid, &e)) {
        snprintf(reason, sizeof reason, "the store could not be made ready (%s)", e.msg);
        return fail(t, task, sid, name, e.code, reason, err);
    }
    char key[64], body[600];
    pkey(key, sizeof key, sid);
    api->kv_del(t->self, key, true, &e);
    api->task_progress(task, 100, "ready");
    api->task_result(task, json_pack("{s:I, s:s}", "store", (json_int_t)sid, "name", name));
    snprintf(body, sizeof body, "The store '%s' is ready.", name);
    api->notify(owner, "success", "Store created", body);
    return 0;
}

/* taskmgr.home {user}: the Home store the kernel makes with every account (in the batch
 * that creates the user, before any module could take part) gets the template like every
 * store made later. A system task (owner 0): the user sees no task for it. */
static int t_home(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    tm_state *t = state;
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(args, "user")), sid = 0;
    json_t *all = NULL;
    if (t->api->store_list_all(uid, &all, err))
        return err->code;
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s) { /* the oldest store named Home: the one made with the account */
        const char *st = json_string_value(json_object_get(s, "state"));
        if (!sid && !strcmp(json_string_value(json_object_get(s, "name")) ?: "", "Home") && (!st || !strcmp(st, "ready")))
            sid = (uint64_t)json_integer_value(json_object_get(s, "id"));
    }
    json_decref(all);
    if (!sid)
        return 0; /* renamed or deleted since: nothing to lay out */
    char reason[1024];
    int rc = apply_template(t, task, sid, reason, sizeof reason);
    if (rc)
        return t->api->err_set(err, rc, "the Home store of user %llu did not get the template: %s",
                               (unsigned long long)uid, rc == MB_ECANCELED ? "cancelled" : reason);
    t->api->task_result(task, json_pack("{s:I}", "store", (json_int_t)sid));
    return 0;
}

/* user.created: lay out the new user's Home store on the pool, never on the loop thread. */
static void o_user_created(const char *event, const json_t *p, void *state)
{
    (void)event;
    tm_state *t = state;
    uint64_t id;
    mb_err e = {0};
    if (t->api->task_submit("taskmgr.home", 0, json_pack("{s:O}", "user", json_object_get(p, "user_id")), &id, &e))
        t->api->log(t->self, MB_LOG_WARN, "could not queue the Home store's template: %s", e.msg);
}

static int t_provision(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    tm_state *t = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(args, "store"));
    const char *name = json_string_value(json_object_get(args, "name"));
    name = name ? name : "";
    json_t *s = find_store(t, t->api->task_owner(task), sid);
    const char *st = s ? json_string_value(json_object_get(s, "state")) : NULL;
    int rc;
    if (!s || json_is_true(json_object_get(args, "rollback")) || !strcmp(st, "deleting")) {
        /* Gone, or rolling back: finish the rollback and fail with the reason. */
        json_decref(s);
        if (s)
            rollback(t, sid);
        return t->api->err_set(err, MB_ECANCELED, "the store '%s' was rolled back (it was interrupted)", name);
    }
    bool ready = !strcmp(st, "ready");
    json_decref(s);
    if (ready) { /* a crash after the last step: nothing left to do */
        char key[64];
        pkey(key, sizeof key, sid);
        t->api->kv_del(t->self, key, true, err);
        t->api->task_progress(task, 100, "ready");
        return 0;
    }
    /* Wait for a free slot: max_concurrent provisions at once. */
    for (;;) {
        pthread_mutex_lock(&t->lock);
        bool ok = t->running < t->max_concurrent;
        if (ok)
            t->running++;
        pthread_mutex_unlock(&t->lock);
        if (ok)
            break;
        if (t->api->task_progress(task, 0, "waiting for a free provisioning slot"))
            return t->api->err_set(err, MB_ECANCELED, "cancelled while waiting");
        sleep_ms(50);
    }
    rc = provision(t, task, sid, name, err);
    pthread_mutex_lock(&t->lock);
    t->running--;
    pthread_mutex_unlock(&t->lock);
    if (rc == MB_ECANCELED) {
        /* Cancelled by the owner, or the kernel stopping: either way the half-made store
         * goes, so "a complete store or none" holds (a re-queued attempt then reports the
         * rollback). */
        rollback(t, sid);
        t->api->err_set(err, MB_ECANCELED, "cancelled; the store '%s' was rolled back", name);
    }
    return rc;
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    tm_state *t = calloc(1, sizeof *t);
    if (!t)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    t->self = self;
    t->api = api;
    pthread_mutex_init(&t->lock, NULL);
    config_apply(t, config);
    *state = t;
    /* A hidden store without a pending key: its task was never queued. Roll it back. */
    json_t *all = NULL;
    mb_err e = {0};
    if (api->store_list_all(0, &all, &e) == 0) {
        size_t i;
        json_t *s;
        json_array_foreach(all, i, s) {
            if (strcmp(json_string_value(json_object_get(s, "state")), "provisioning"))
                continue;
            uint64_t sid = (uint64_t)json_integer_value(json_object_get(s, "id")), task;
            char key[64], *v = NULL;
            size_t len;
            pkey(key, sizeof key, sid);
            if (api->kv_get(self, key, &v, &len, &e) == 0) {
                free(v);
                continue;
            }
            api->task_submit("taskmgr.provision", (uint64_t)json_integer_value(json_object_get(s, "owner")),
                             json_pack("{s:I, s:O, s:b}", "store", (json_int_t)sid, "name", json_object_get(s, "name"),
                                       "rollback", 1),
                             &task, &e);
        }
    }
    json_decref(all);
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    tm_state *t = state;
    pthread_mutex_destroy(&t->lock);
    free(t);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    config_apply(state, config);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "template", MB_CFG_STRING, "store-template.yaml", 0, 0},
    {sizeof(mb_config_key), "max_concurrent", MB_CFG_INT, "2", 1, 64},
    {sizeof(mb_config_key), "max_pending_per_user", MB_CFG_INT, "5", 1, 1000},
    {sizeof(mb_config_key), "max_stores_per_user", MB_CFG_INT, "20", 1, 100000},
    {sizeof(mb_config_key), "store_quota_bytes", MB_CFG_INT, "0", 0, INT64_MAX},
    {sizeof(mb_config_key), "step_delay_ms", MB_CFG_INT, "0", 0, 60000},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/stores", MB_ROLE_USER, h_create},
    {0},
};

/* One attempt: a failure has already rolled back, so a retry could only fail again. A
 * crash mid-attempt still re-runs it (the kernel re-queues running tasks at start). */
static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "taskmgr.provision", t_provision, 1},
    {sizeof(mb_task_type), "taskmgr.home", t_home, 3},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "user.created", MB_HOOK_OBSERVER, 100, NULL, o_user_created},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "taskmgr",
    .version = "1.0.0",
    .description = "Creates stores in the background: template folders, settings, quota, then ready",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
