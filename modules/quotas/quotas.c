/*
 * modules/quotas — how many bytes each user may keep, with warnings.
 *
 *   routes   GET /api/v1/me/usage                      the caller's usage and quota, per store
 *            GET /api/v1/stores/{sid}/usage            one store's usage (owner only)
 *            GET|PUT /api/v1/admin/quotas/users/{username}   {"bytes": n | null}
 *            GET|PUT /api/v1/admin/quotas/roles/{role}       {"bytes": n | null}
 *   hooks    filters on file.write (refused before any byte when the length is known),
 *            file.write.chunk (stopped as soon as the bytes so far cross it) and file.copy:
 *            507 naming the limit, unless deleting the user's oldest old versions makes room
 *            (then they go first, oldest first; a write that cannot fit even without any of
 *            them deletes nothing). Observers on file.created/updated/deleted/copied
 *            raise quota.warning at each configured level crossed upwards (once per
 *            crossing) and a refusal raises quota.exceeded once until usage drops again;
 *            both notify the user.
 *            queue quotas.prune when a change left usage above the quota.
 *   tasks    quotas.prune {user}: oldest old versions go until usage fits the quota and
 *            old versions fit their share of it
 *   config   default_bytes (-1: unlimited), warn_percent (list, default [80, 95]),
 *            versions_max_percent (50: old versions may use half the room the quota leaves
 *            beside current files and the trash, as in Nextcloud's versions app)
 *
 * The quota of a user: their own override (kv "user/<name>"), else their role's default
 * (kv "role/<role>"), else default_bytes. Usage is the kernel's (api->usage_get: current
 * versions, old versions and the trash, each also as its own part), kept in
 * the same batch as each change, so it is exact after a crash and right again the moment
 * this module is loaded after being off. Per-store limits are storeconfig's max_bytes.
 * Kv "lvl/<uid>" keeps the highest level announced (index into warn_percent + 1; 99 after
 * quota.exceeded), "full/<uid>" the bytes in use at that refusal: the user is told "full" once
 * until usage falls below them, whatever order the refusal and the observer of the change before
 * it run in (a refusal announces a warning level crossed and not yet announced first).
 * Threads: filters on the writer's thread, observers on the loop thread, handlers on HTTP
 * workers; `lock` serialises the level read-modify-write.
 */
#include "mbyte.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEVEL_EXCEEDED 99

typedef struct qs {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t lock;
    json_int_t default_bytes;
    int warn[8];
    int n_warn;
    int versions_pct;            /* old versions may use this share of the room current files leave */
    pthread_mutex_t prune_lock;  /* one pruning at a time, so two cannot both free the same need */
} qs;

static int kv_int(qs *q, const char *key, json_int_t *out)
{
    char *v = NULL;
    size_t n;
    mb_err e = {0};
    if (q->api->kv_get(q->self, key, &v, &n, &e))
        return MB_ENOENT;
    *out = strtoll(v, NULL, 10);
    free(v);
    return 0;
}

/* The quota of user `uid` (-1: unlimited) and a sentence on where it comes from. */
static json_int_t quota_of(qs *q, uint64_t uid, const char **name_out, char *src, size_t srcn, json_t **user)
{
    json_t *u = NULL;
    mb_err e = {0};
    json_int_t b;
    char key[300], nb[256];
    mb_user mu;
    *user = NULL;
    if (q->api->user_lookup(uid, NULL, &mu, nb, sizeof nb, &e)) {
        snprintf(src, srcn, "default");
        pthread_mutex_lock(&q->lock);
        b = q->default_bytes;
        pthread_mutex_unlock(&q->lock);
        return b;
    }
    u = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)mu.id, "name", nb, "role",
                  mu.role == MB_ROLE_ADMIN ? "admin" : "user");
    *user = u;
    *name_out = json_string_value(json_object_get(u, "name"));
    snprintf(key, sizeof key, "user/%s", *name_out);
    if (kv_int(q, key, &b) == 0) {
        snprintf(src, srcn, "the quota of user %s", *name_out);
        return b;
    }
    snprintf(key, sizeof key, "role/%s", json_string_value(json_object_get(u, "role")));
    if (kv_int(q, key, &b) == 0) {
        snprintf(src, srcn, "the quota of role %s", json_string_value(json_object_get(u, "role")));
        return b;
    }
    snprintf(src, srcn, "the default quota");
    pthread_mutex_lock(&q->lock);
    b = q->default_bytes;
    pthread_mutex_unlock(&q->lock);
    return b;
}

static json_t *usage_of(qs *q, uint64_t sid, uint64_t uid)
{
    json_t *u = NULL;
    mb_err e = {0};
    if (q->api->usage_get(sid, uid, &u, &e))
        u = json_pack("{s:i, s:i, s:i, s:i, s:i}", "bytes", 0, "files", 0, "current", 0, "versions", 0, "trash", 0);
    return u;
}

/* ---------------------------------------------------------------- levels --- */

static int level_get(qs *q, uint64_t uid)
{
    char key[64];
    json_int_t v = 0;
    snprintf(key, sizeof key, "lvl/%llu", (unsigned long long)uid);
    kv_int(q, key, &v);
    return (int)v;
}

static void level_set(qs *q, uint64_t uid, int lvl)
{
    char key[64], val[16];
    mb_err e = {0};
    snprintf(key, sizeof key, "lvl/%llu", (unsigned long long)uid);
    int n = snprintf(val, sizeof val, "%d", lvl);
    q->api->kv_put(q->self, key, val, (size_t)n, false, &e);
}

/* The bytes in use when a write was last refused ("full/<uid>"): the user stays told "full" until
 * usage falls below them. -1: no record (an older build's refusal). */
static json_int_t full_at_get(qs *q, uint64_t uid)
{
    char key[64];
    json_int_t v = -1;
    snprintf(key, sizeof key, "full/%llu", (unsigned long long)uid);
    kv_int(q, key, &v);
    return v;
}

static void full_at_set(qs *q, uint64_t uid, json_int_t used)
{
    char key[64], val[24];
    mb_err e = {0};
    snprintf(key, sizeof key, "full/%llu", (unsigned long long)uid);
    int n = snprintf(val, sizeof val, "%lld", (long long)used);
    q->api->kv_put(q->self, key, val, (size_t)n, false, &e);
}

/* The warning level of `used` bytes of `quota` (an index into warn_percent + 1, 0 below the first)
 * and its percentage in *thr. Under q->lock. */
static int level_of(qs *q, json_int_t used, json_int_t quota, int *thr)
{
    int pct = quota ? (int)(used * 100 / quota) : (used ? 100 : 0), lvl = 0;
    for (int i = 0; i < q->n_warn; i++)
        if (pct >= q->warn[i])
            lvl = i + 1;
    *thr = lvl ? q->warn[lvl - 1] : 0;
    return lvl;
}

static void announce(qs *q, const char *event, const char *kind, uint64_t uid, json_int_t used, json_int_t quota,
                     int percent)
{
    char body[300];
    mb_err e = {0};
    if (!strcmp(event, "quota.exceeded"))
        snprintf(body, sizeof body, "An upload was refused: %lld of your %lld bytes are used.", (long long)used,
                 (long long)quota);
    else
        snprintf(body, sizeof body, "You have used %d%% of your storage (%lld of %lld bytes).", percent,
                 (long long)used, (long long)quota);
    q->api->notify(uid, kind, !strcmp(event, "quota.exceeded") ? "Storage full" : "Storage almost full", body);
    q->api->hook_emit(event,
                      json_pack("{s:I, s:I, s:I, s:i}", "user", (json_int_t)uid, "bytes", used, "quota_bytes", quota,
                                "percent", percent),
                      &e);
}

/* ---------------------------------------------------------------- pruning --- */

/* One old version (not the current one) of a file of the user, by age. */
typedef struct old_version {
    json_int_t time, size;
    uint64_t sid, version;
    char *path;
} old_version;

static int oldest_first(const void *a, const void *b)
{
    const old_version *x = a, *y = b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    return x->version < y->version ? -1 : x->version > y->version;
}

typedef struct old_scan {
    qs *q;
    uint64_t sid;
    old_version *v;
    size_t n, cap;
    json_int_t total;
} old_scan;

/* One entry of a store's walk: its old versions, if it is a file that has some. */
static int old_of(const json_t *f, void *ud)
{
    old_scan *o = ud;
    const char *path = json_string_value(json_object_get(f, "path"));
    json_t *vl = NULL, *ver;
    mb_err e;
    size_t k;
    if (!path || strcmp(json_string_value(json_object_get(f, "type")) ?: "", "file") ||
        o->q->api->version_list(NULL, o->sid, path, &vl, &e))
        return 0;
    json_array_foreach(vl, k, ver) {
        if (json_is_true(json_object_get(ver, "current")))
            continue;
        if (o->n == o->cap && !(o->v = realloc(o->v, (o->cap = o->cap ? 2 * o->cap : 16) * sizeof *o->v)))
            abort();
        o->v[o->n++] = (old_version){json_integer_value(json_object_get(ver, "time")),
                                     json_integer_value(json_object_get(ver, "size")), o->sid,
                                     (uint64_t)json_integer_value(json_object_get(ver, "version")), strdup(path)};
        o->total += json_integer_value(json_object_get(ver, "size"));
    }
    json_decref(vl);
    return 0;
}

/* Every old version of the files in the user's ready stores, oldest first; *total their
 * bytes. Walks the namespace a page at a time (only the old versions are kept): run only when a
 * write needs the room (usage says versions exist and the quota is reached). Old versions of
 * trashed files are not reachable here: they go with the purge. */
static old_version *old_versions(qs *q, uint64_t owner, size_t *n, json_int_t *total)
{
    json_t *stores = NULL, *s;
    mb_err e = {0};
    old_scan o = {q, 0, NULL, 0, 0, 0};
    *n = 0;
    *total = 0;
    if (q->api->store_list_all(owner, &stores, &e))
        return NULL;
    size_t i;
    json_array_foreach(stores, i, s) {
        const char *st = json_string_value(json_object_get(s, "state"));
        if (st && strcmp(st, "ready"))
            continue;
        o.sid = (uint64_t)json_integer_value(json_object_get(s, "id"));
        q->api->folder_walk(NULL, o.sid, "", old_of, &o, &e);
    }
    json_decref(stores);
    if (o.n)
        qsort(o.v, o.n, sizeof *o.v, oldest_first);
    *n = o.n;
    *total = o.total;
    return o.v;
}

static void old_versions_free(old_version *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

/* Delete old versions oldest first until `need` bytes are freed; the bytes freed. Called
 * with prune_lock held. */
static json_int_t prune(qs *q, old_version *v, size_t n, json_int_t need)
{
    json_int_t freed = 0;
    for (size_t i = 0; i < n && freed < need; i++) {
        mb_err e = {0};
        if (q->api->version_delete(NULL, v[i].sid, v[i].path, v[i].version, &e) == 0)
            freed += v[i].size;
    }
    return freed;
}

/* Room for `add` more bytes of user `owner` (`replaced`: bytes of the version a write
 * replaces, which becomes an old version and so can go too). Old versions are pruned
 * first, oldest first, and only when the write fits with them gone; otherwise nothing is
 * pruned and MB_EQUOTA is the answer. */
static int make_room(qs *q, uint64_t owner, json_int_t quota, const char *src, json_int_t add, json_int_t replaced,
                     mb_err *err)
{
    json_t *u = usage_of(q, 0, owner);
    json_int_t used = json_integer_value(json_object_get(u, "bytes"));
    json_int_t versions = json_integer_value(json_object_get(u, "versions"));
    json_decref(u);
    if (used + add <= quota)
        return 0;
    pthread_mutex_lock(&q->prune_lock);
    u = usage_of(q, 0, owner); /* again: a pruning that held the lock may have made room */
    used = json_integer_value(json_object_get(u, "bytes"));
    versions = json_integer_value(json_object_get(u, "versions"));
    json_decref(u);
    size_t n = 0;
    json_int_t prunable = 0;
    old_version *v = NULL;
    /* Cheap first: usage says how much could be pruned at most; walk only if it may do. */
    if (versions > 0 && used - versions - replaced + add <= quota)
        v = old_versions(q, owner, &n, &prunable);
    int rc = 0;
    if (used - prunable - replaced + add > quota) {
        rc = q->api->err_set(err, MB_EQUOTA,
                             "quota exceeded: %s is %lld bytes; %lld are used (%lld by old versions) and this needs "
                             "%lld more",
                             src, (long long)quota, (long long)used, (long long)versions, (long long)add);
        /* The change that brought usage here may not have reached the observer yet (it runs later,
         * on the loop thread): a warning level it crossed is announced first, as it would have been. */
        pthread_mutex_lock(&q->lock);
        int old = level_get(q, owner), thr, lvl = level_of(q, used, quota, &thr);
        bool first = old != LEVEL_EXCEEDED;
        if (first) {
            full_at_set(q, owner, used);
            level_set(q, owner, LEVEL_EXCEEDED);
        }
        pthread_mutex_unlock(&q->lock);
        if (first && lvl > old)
            announce(q, "quota.warning", "warning", owner, used, quota, thr);
        if (first)
            announce(q, "quota.exceeded", "error", owner, used, quota, quota ? (int)(used * 100 / quota) : 100);
    } else if (used + add > quota)
        prune(q, v, n, used + add - quota);
    pthread_mutex_unlock(&q->prune_lock);
    old_versions_free(v, n);
    return rc;
}

/* How many bytes old versions may use: versions_pct of the room the quota leaves beside
 * current files and the trash (Nextcloud's versions app keeps them within half of the free
 * space). Unlimited without a quota. */
static json_int_t versions_allowed(qs *q, json_int_t quota, const json_t *usage)
{
    if (quota < 0)
        return INT64_MAX;
    json_int_t kept = json_integer_value(json_object_get(usage, "bytes")) -
                      json_integer_value(json_object_get(usage, "versions"));
    pthread_mutex_lock(&q->lock);
    int pct = q->versions_pct;
    pthread_mutex_unlock(&q->lock);
    return quota > kept ? (quota - kept) * pct / 100 : 0;
}

/* After a change: the level now, announced when it went up; remembered either way, so
 * falling below a level and crossing it again announces again. */
static void recheck(qs *q, uint64_t uid)
{
    char src[300];
    const char *name = NULL;
    json_t *user = NULL;
    json_int_t quota = quota_of(q, uid, &name, src, sizeof src, &user);
    json_decref(user);
    if (quota < 0)
        return;
    json_t *u = usage_of(q, 0, uid);
    json_int_t used = json_integer_value(json_object_get(u, "bytes"));
    json_int_t versions = json_integer_value(json_object_get(u, "versions"));
    json_int_t allowed = versions_allowed(q, quota, u);
    json_decref(u);
    mb_err e = {0};
    uint64_t tid;
    if ((used > quota || versions > allowed) && versions > 0 && /* the loop thread: pruning is a task */
        q->api->task_submit("quotas.prune", 0, json_pack("{s:I}", "user", (json_int_t)uid), &tid, &e))
        q->api->log(q->self, MB_LOG_WARN, "could not queue the pruning of old versions: %s", e.msg);
    pthread_mutex_lock(&q->lock);
    int thr, lvl = level_of(q, used, quota, &thr);
    int old = level_get(q, uid);
    json_int_t full_at = old == LEVEL_EXCEEDED ? full_at_get(q, uid) : 0;
    if (old == LEVEL_EXCEEDED && (full_at >= 0 ? used >= full_at : used >= quota && quota)) {
        pthread_mutex_unlock(&q->lock);
        return; /* no less in use than at the refusal (this may be the change before it): still full */
    }
    if (old != lvl)
        level_set(q, uid, lvl);
    pthread_mutex_unlock(&q->lock);
    if (lvl > (old == LEVEL_EXCEEDED ? 0 : old) && old != LEVEL_EXCEEDED)
        announce(q, "quota.warning", "warning", uid, used, quota, thr);
}

static void o_change(const char *event, const json_t *p, void *state)
{
    (void)event;
    recheck(state, (uint64_t)json_integer_value(json_object_get(p, "owner")));
}

/* ---------------------------------------------------------------- filters --- */

/* file.write (length known), file.write.chunk (so far) and file.copy. The bytes a write
 * replaces may be kept as an old version, so the room asked for is the whole new size; the
 * replaced bytes only count as prunable. */
static int f_quota(const char *event, json_t *p, void *state, mb_err *err)
{
    qs *q = state;
    uint64_t owner = (uint64_t)json_integer_value(json_object_get(p, "owner"));
    json_int_t add, replaced = json_integer_value(json_object_get(p, "existing_size"));
    if (!strcmp(event, "file.write")) {
        add = json_integer_value(json_object_get(p, "size"));
        if (add < 0)
            return 0; /* unknown length: checked chunk by chunk */
    } else if (!strcmp(event, "file.write.chunk"))
        add = json_integer_value(json_object_get(p, "bytes"));
    else
        add = json_integer_value(json_object_get(p, "size")), replaced = 0;
    if (add <= 0)
        return 0;
    char src[300];
    const char *name = NULL;
    json_t *user = NULL;
    json_int_t quota = quota_of(q, owner, &name, src, sizeof src, &user);
    int rc = quota < 0 ? 0 : make_room(q, owner, quota, src, add, replaced, err);
    json_decref(user);
    return rc;
}

/* quotas.prune {user}: after a change left usage above the quota (a write whose replaced
 * version was kept, a restore) or old versions above their share (versions_allowed), the
 * oldest old versions go until both hold again. */
static int t_prune(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)err;
    qs *q = state;
    uint64_t owner = (uint64_t)json_integer_value(json_object_get(args, "user"));
    char src[300];
    const char *name = NULL;
    json_t *user = NULL;
    json_int_t quota = quota_of(q, owner, &name, src, sizeof src, &user), freed = 0;
    json_decref(user);
    if (quota < 0)
        return 0;
    pthread_mutex_lock(&q->prune_lock);
    json_t *u = usage_of(q, 0, owner);
    json_int_t used = json_integer_value(json_object_get(u, "bytes"));
    json_int_t over = json_integer_value(json_object_get(u, "versions")) - versions_allowed(q, quota, u);
    json_decref(u);
    json_int_t need = used - quota > over ? used - quota : over;
    if (need > 0) {
        size_t n = 0;
        json_int_t total = 0;
        old_version *v = old_versions(q, owner, &n, &total);
        freed = prune(q, v, n, need);
        old_versions_free(v, n);
    }
    pthread_mutex_unlock(&q->prune_lock);
    q->api->task_result(task, json_pack("{s:I}", "freed", freed));
    return 0;
}

/* ------------------------------------------------------------------ routes --- */

static json_t *quota_json(json_int_t q) { return q < 0 ? json_null() : json_integer(q); }

/* GET /api/v1/me/usage */
static int h_me(mb_req *req, void *state, mb_err *err)
{
    qs *q = state;
    const mb_user *me = q->api->req_user(req);
    char src[300];
    const char *name = NULL;
    json_t *user = NULL, *stores = NULL;
    json_int_t quota = quota_of(q, me->id, &name, src, sizeof src, &user);
    json_decref(user);
    json_t *out = usage_of(q, 0, me->id);
    json_object_set_new(out, "quota_bytes", quota_json(quota));
    json_object_set_new(out, "quota_source", json_string(src));
    json_int_t used = json_integer_value(json_object_get(out, "bytes"));
    json_object_set_new(out, "percent", quota > 0 ? json_real((double)used * 100.0 / (double)quota) : json_null());
    int rc = q->api->store_list(me, &stores, err);
    if (rc) {
        json_decref(out);
        return rc;
    }
    json_t *per = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(stores, i, s) {
        uint64_t sid = (uint64_t)json_integer_value(json_object_get(s, "id"));
        json_t *su = usage_of(q, sid, 0);
        json_object_set(su, "id", json_object_get(s, "id"));
        json_object_set(su, "name", json_object_get(s, "name"));
        json_array_append_new(per, su);
    }
    json_decref(stores);
    json_object_set_new(out, "stores", per);
    return q->api->reply_json(req, 200, out);
}

/* GET /api/v1/stores/{sid}/usage */
static int h_store(mb_req *req, void *state, mb_err *err)
{
    qs *q = state;
    const char *p = q->api->req_param(req, "sid");
    char *end = NULL;
    uint64_t sid = 0;
    if (!p || *p < '0' || *p > '9' || ((sid = strtoull(p, &end, 10)), *end) || !sid)
        return q->api->err_set(err, MB_ENOENT, "no such store: %s", p ? p : "");
    const mb_user *me = q->api->req_user(req);
    json_t *st = NULL, *settings = NULL, *user = NULL;
    int rc = q->api->store_get(me, sid, &st, err);
    if (rc)
        return rc;
    json_decref(st);
    json_t *out = usage_of(q, sid, 0);
    json_int_t limit = 0;
    if (q->api->store_settings_get(sid, &settings, err) == 0)
        limit = json_integer_value(json_object_get(settings, "max_bytes"));
    json_decref(settings);
    char src[300];
    const char *name = NULL;
    json_int_t uq = quota_of(q, me->id, &name, src, sizeof src, &user);
    json_decref(user);
    json_object_set_new(out, "store", json_integer((json_int_t)sid));
    json_object_set_new(out, "quota_bytes", limit > 0 ? json_integer(limit) : json_null());
    json_object_set_new(out, "user_quota_bytes", quota_json(uq));
    return q->api->reply_json(req, 200, out);
}

static int body_bytes(qs *q, mb_req *req, json_t **v, mb_err *err)
{
    json_t *body = q->api->req_json(req, err);
    if (!body)
        return err->code;
    *v = json_object_get(body, "bytes");
    if (!*v || (!json_is_null(*v) && (!json_is_integer(*v) || json_integer_value(*v) < 0)))
        return q->api->err_set(err, MB_EINVAL, "bytes: must be a whole number of bytes (0 or more), or null to remove");
    return 0;
}

static int admin_reply(qs *q, mb_req *req, const char *what, const char *who, const char *key)
{
    json_int_t b;
    bool set = kv_int(q, key, &b) == 0;
    return q->api->reply_json(req, 200, json_pack("{s:s, s:o}", what, who, "bytes", set ? json_integer(b) : json_null()));
}

/* GET|PUT /api/v1/admin/quotas/users/{username} */
static int h_user(mb_req *req, void *state, mb_err *err)
{
    qs *q = state;
    const char *name = q->api->req_param(req, "username");
    json_t *v = NULL;
    int rc = q->api->user_lookup(0, name ? name : "", NULL, NULL, 0, err);
    if (rc)
        return rc;
    char key[300];
    snprintf(key, sizeof key, "user/%s", name);
    if (!strcmp(q->api->req_method(req), "PUT")) {
        if ((rc = body_bytes(q, req, &v, err)))
            return rc;
        char val[32];
        int n = snprintf(val, sizeof val, "%lld", (long long)json_integer_value(v));
        rc = json_is_null(v) ? q->api->kv_del(q->self, key, true, err)
                             : q->api->kv_put(q->self, key, val, (size_t)n, true, err);
        if (rc)
            return rc;
    }
    return admin_reply(q, req, "username", name, key);
}

/* GET|PUT /api/v1/admin/quotas/roles/{role} */
static int h_role(mb_req *req, void *state, mb_err *err)
{
    qs *q = state;
    const char *role = q->api->req_param(req, "role");
    if (!role || (strcmp(role, "user") && strcmp(role, "admin")))
        return q->api->err_set(err, MB_ENOENT, "no such role: the roles are user and admin");
    char key[64];
    snprintf(key, sizeof key, "role/%s", role);
    if (!strcmp(q->api->req_method(req), "PUT")) {
        json_t *v = NULL;
        int rc = body_bytes(q, req, &v, err);
        if (rc)
            return rc;
        char val[32];
        int n = snprintf(val, sizeof val, "%lld", (long long)json_integer_value(v));
        rc = json_is_null(v) ? q->api->kv_del(q->self, key, true, err)
                             : q->api->kv_put(q->self, key, val, (size_t)n, true, err);
        if (rc)
            return rc;
    }
    return admin_reply(q, req, "role", role, key);
}

/* ---------------------------------------------------------- init and fini --- */

static int config_apply(qs *q, const json_t *c, mb_err *err)
{
    json_t *w = json_object_get(c, "warn_percent");
    int warn[8], n = 0;
    size_t i;
    json_t *x;
    if (json_array_size(w) > 8)
        return q->api->err_set(err, MB_EINVAL, "warn_percent: at most 8 levels");
    json_array_foreach(w, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 100 ||
            (n && json_integer_value(x) <= warn[n - 1]))
            return q->api->err_set(err, MB_EINVAL, "warn_percent: rising whole numbers from 1 to 100");
        warn[n++] = (int)json_integer_value(x);
    }
    pthread_mutex_lock(&q->lock);
    q->versions_pct = (int)json_integer_value(json_object_get(c, "versions_max_percent"));
    q->default_bytes = json_integer_value(json_object_get(c, "default_bytes"));
    memcpy(q->warn, warn, sizeof warn);
    q->n_warn = n;
    pthread_mutex_unlock(&q->lock);
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    qs *q = calloc(1, sizeof *q);
    if (!q)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    q->self = self;
    q->api = api;
    pthread_mutex_init(&q->lock, NULL);
    pthread_mutex_init(&q->prune_lock, NULL);
    int rc = config_apply(q, config, err);
    if (rc) {
        pthread_mutex_destroy(&q->prune_lock);
        pthread_mutex_destroy(&q->lock);
        free(q);
        return rc;
    }
    *state = q;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    qs *q = state;
    pthread_mutex_destroy(&q->prune_lock);
    pthread_mutex_destroy(&q->lock);
    free(q);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err) { return config_apply(state, config, err); }

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "default_bytes", MB_CFG_INT, "-1", -1, INT64_MAX},
    {sizeof(mb_config_key), "warn_percent", MB_CFG_LIST, "[80, 95]", 0, 0},
    {sizeof(mb_config_key), "versions_max_percent", MB_CFG_INT, "50", 1, 100},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/me/usage", MB_ROLE_USER, h_me},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/usage", MB_ROLE_USER, h_store},
    {sizeof(mb_route), "GET", "/api/v1/admin/quotas/users/{username}", MB_ROLE_ADMIN, h_user},
    {sizeof(mb_route), "PUT", "/api/v1/admin/quotas/users/{username}", MB_ROLE_ADMIN, h_user},
    {sizeof(mb_route), "GET", "/api/v1/admin/quotas/roles/{role}", MB_ROLE_ADMIN, h_role},
    {sizeof(mb_route), "PUT", "/api/v1/admin/quotas/roles/{role}", MB_ROLE_ADMIN, h_role},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "file.write", MB_HOOK_FILTER, 50, f_quota, NULL},
    {sizeof(mb_hook), "file.write.chunk", MB_HOOK_FILTER, 50, f_quota, NULL},
    {sizeof(mb_hook), "file.copy", MB_HOOK_FILTER, 50, f_quota, NULL},
    {sizeof(mb_hook), "file.created", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "file.updated", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "file.deleted", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "file.copied", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "folder.copied", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "store.deleted", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {sizeof(mb_hook), "file.restored", MB_HOOK_OBSERVER, 100, NULL, o_change},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "quotas.prune", t_prune, 3},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "quotas",
    .version = "1.1.0",
    .description = "Quotas per user and per role, usage, and warnings as notifications and events",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
