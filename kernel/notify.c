/*
 * notify.c — each user's notifications and live event stream.
 * A notification is stored ("nt/<uid>/<seq>") and pushed to the user's open
 * /api/v1/events streams as an SSE frame; task updates are pushed only (the task itself is
 * the durable record): notify listens to task.c's "task.update" on the hook bus (task.c,
 * a lower layer, never calls here), and a task that ends done or failed becomes a
 * notification. main.c registers notify_routes. Marking read (one, or all) rewrites the stored records and pushes
 * `event: unread` {"unread": n} to the user's streams, so every open page's bell agrees.
 * Cluster mode: nt/ is a cluster-wide record (cluster_kv.c), so a user's list, count and marks are
 * the same on every node; ids start at this node's cluster_id_base, so no two nodes make one id.
 * A notification another node made reaches this node's streams when its record arrives from etcd
 * (nt_heard): a new one as `notification`, one marked read there as the new `unread` count. A
 * task's events go to the streams open on the other nodes too (cluster_events.c): every change of
 * state, its progress at most once a second (share_now).
 * Threads: any; storage is LevelDB, streams are http.c's (locked). Two marks racing on one
 * record both write read=1, so no lock is needed.
 */
#include "kernel.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t nseq;

void notify_publish(uint64_t uid, const char *event, json_t *data)
{
    char *s = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!s)
        return;
    size_t n = strlen(s) + strlen(event) + 32;
    char *frame = xmalloc(n);
    int len = snprintf(frame, n, "event: %s\ndata: %s\n\n", event, s);
    http_sse_publish(uid, frame, (size_t)len);
    free(frame);
    free(s);
}

int notify_user(uint64_t uid, const char *kind, const char *title, const char *body)
{
    uint64_t seq = cluster_id_base() + atomic_fetch_add(&nseq, 1); /* cluster mode: no other node's id */
    char key[64], u16[17], s16[17];
    key_u64(u16, uid);
    key_u64(s16, seq);
    snprintf(key, sizeof key, "nt/%s/%s", u16, s16);
    json_t *n = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:b}", "v", 1, "id", s16, "kind", kind ? kind : "info",
                          "title", title ? title : "", "body", body ? body : "", "time", (json_int_t)now_wall(),
                          "read", 0);
    int rc = db_put_json(key, n, true);
    json_object_del(n, "v");
    notify_publish(uid, "notification", n);
    return rc;
}

/* Cluster mode: does this event of a task go to the other nodes' streams? Every change of state
 * does; progress while it runs at most once a second. One slot per task id in a small table (two
 * running tasks sharing a slot just both get through more often). */
#define SHARE_SLOTS 64
#define SHARE_EVERY_MS 1000

typedef struct share_slot {
    uint64_t id;
    int64_t ms;
    char state[16];
} share_slot;

static bool share_now(uint64_t id, const char *state)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static share_slot slot[SHARE_SLOTS];
    if (!cluster_enabled())
        return false;
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&mu);
    share_slot *s = &slot[id % SHARE_SLOTS];
    bool share = s->id != id || strcmp(s->state, state) || now - s->ms >= SHARE_EVERY_MS;
    if (share) {
        s->id = id;
        s->ms = now;
        snprintf(s->state, sizeof s->state, "%s", state);
    }
    pthread_mutex_unlock(&mu);
    return share;
}

/* hook_listen("task.update"): the task's new state to its owner's pages (on every node in cluster
 * mode); an end (done or failed) also as a notification. System tasks (owner 0) have no event stream. */
static void on_task(const char *event, const json_t *p, void *state)
{
    (void)event, (void)state;
    uint64_t owner = (uint64_t)json_integer_value(json_object_get(p, "owner"));
    if (!owner)
        return;
    const char *st = json_string_value(json_object_get(p, "state"));
    json_t *ev = json_pack("{s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(p, "id"), "type", json_object_get(p, "type"),
                           "state", json_object_get(p, "state"), "progress", json_object_get(p, "progress"),
                           "message", json_object_get(p, "message"));
    if (ev && share_now((uint64_t)json_integer_value(json_object_get(p, "id")), st ? st : ""))
        cluster_event_share(owner, "task", ev);
    notify_publish(owner, "task", ev);
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *error = json_string_value(json_object_get(p, "error"));
    if (!st || (strcmp(st, "done") && strcmp(st, "failed")))
        return;
    bool ok = !strcmp(st, "done");
    unsigned long long id = (unsigned long long)json_integer_value(json_object_get(p, "id"));
    char title[200], body[400];
    snprintf(title, sizeof title, "Task %s %s", type ? type : "", ok ? "finished" : "failed");
    const char *msg = json_string_value(json_object_get(p, "message"));
    if (ok && msg && *msg && strcmp(msg, "done"))
        snprintf(body, sizeof body, "Task %llu is done: %s.", id, msg); /* "deleted 20000, 0 failed" */
    else if (ok)
        snprintf(body, sizeof body, "Task %llu is done.", id);
    else
        snprintf(body, sizeof body, "Task %llu failed: %s", id, error ? error : "");
    notify_user(owner, ok ? "success" : "error", title, body);
}

/* GET /api/v1/events — text/event-stream of the caller's notifications and tasks. */
static int h_events(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    return http_reply_sse(req, http_req_user(req)->id);
}

/* Newest first: by time, then id (in cluster mode ids from several nodes mix). */
static int newer_first(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t tx = json_integer_value(json_object_get(x, "time")), ty = json_integer_value(json_object_get(y, "time"));
    int c = strcmp(json_string_value(json_object_get(y, "id")) ?: "", json_string_value(json_object_get(x, "id")) ?: "");
    return tx != ty ? (tx < ty ? 1 : -1) : c;
}

#define LIST_MAX 100

/* GET /api/v1/notifications — the newest LIST_MAX, newest first (by time, then id: in cluster mode
 * ids from several nodes mix, so the key order is not the time order). At most LIST_MAX are held. */
static int h_list(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    char prefix[40], u16[17];
    key_u64(u16, http_req_user(req)->id);
    snprintf(prefix, sizeof prefix, "nt/%s/", u16);
    json_t *top[LIST_MAX + 1];
    size_t n = 0;
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t vl;
        const char *val = db_iter_val(it, &vl);
        json_t *one = json_loadb(val, vl, 0, NULL);
        if (!one)
            continue;
        json_object_del(one, "v");
        size_t at = n; /* its place in the sorted top (LIST_MAX steps at most) */
        while (at > 0 && newer_first(&one, &top[at - 1]) < 0)
            at--;
        if (at == LIST_MAX) {
            json_decref(one);
            continue;
        }
        memmove(&top[at + 1], &top[at], (n - at) * sizeof *top);
        top[at] = one;
        if (n == LIST_MAX)
            json_decref(top[LIST_MAX]);
        else
            n++;
    }
    db_iter_free(it);
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(all, top[i]);
    return http_reply_json(req, 200, all);
}

/* Count the caller's unread notifications and, when `mark` (an id, or "" for all), mark the
 * matching unread ones read in one synced batch; *found tells whether `mark` named one. */
static int nt_unread(uint64_t uid, const char *mark, bool *found, size_t *unread)
{
    char prefix[40], u16[17];
    key_u64(u16, uid);
    snprintf(prefix, sizeof prefix, "nt/%s/", u16);
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    db_batch *b = mark ? db_batch_new() : NULL;
    size_t n = 0, changed = 0;
    while (db_iter_next(it)) {
        size_t vl, kl;
        const char *v = db_iter_val(it, &vl), *k = db_iter_key(it, &kl);
        json_t *nt = json_loadb(v, vl, 0, NULL);
        if (!nt)
            continue;
        const char *id = json_string_value(json_object_get(nt, "id"));
        bool hit = mark && (!*mark || (id && !strcmp(id, mark)));
        if (hit && mark && *mark)
            *found = true;
        if (!json_is_true(json_object_get(nt, "read"))) {
            if (hit) {
                json_object_set_new(nt, "read", json_true());
                char *txt = json_dumps(nt, JSON_COMPACT);
                db_batch_put(b, k, kl, txt, strlen(txt));
                free(txt);
                changed++;
            } else
                n++;
        }
        json_decref(nt);
    }
    db_iter_free(it);
    int rc = 0;
    if (b) {
        if (changed)
            rc = db_batch_commit(b, true);
        else
            db_batch_free(b);
    }
    *unread = n;
    return rc;
}

/* GET /api/v1/notifications/unread — {"unread": n}, the bell's number. */
static int h_unread(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    size_t n;
    nt_unread(http_req_user(req)->id, NULL, NULL, &n);
    return http_reply_json(req, 200, json_pack("{s:I}", "unread", (json_int_t)n));
}

/* POST /api/v1/notifications/read (all) and /api/v1/notifications/{id}/read (one): durable
 * before the answer, then the new count goes to the user's open pages. */
static int h_mark(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *id = http_req_param(req, "id");
    if (id && (strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16))
        return err_set(err, MB_ENOENT, "no such notification");
    uint64_t uid = http_req_user(req)->id;
    bool found = false;
    size_t n;
    int rc = nt_unread(uid, id ? id : "", &found, &n);
    if (rc)
        return err_set(err, rc, "the notifications could not be saved");
    if (id && !found)
        return err_set(err, MB_ENOENT, "no such notification");
    notify_publish(uid, "unread", json_pack("{s:I}", "unread", (json_int_t)n));
    return http_reply_json(req, 200, json_pack("{s:I}", "unread", (json_int_t)n));
}

/* DELETE /api/v1/notifications — clear the caller's list. */
static int h_clear(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    char prefix[40], u16[17];
    key_u64(u16, http_req_user(req)->id);
    snprintf(prefix, sizeof prefix, "nt/%s/", u16);
    db_batch *b = db_batch_new();
    db_batch_del_prefix(b, prefix);
    db_batch_commit(b, true);
    return http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

/* Cluster mode: record nt/<uid16>/<seq16> arrived from etcd (cluster_kv.c's watcher, no lock held).
 * This node's own (its number in the id's high bits) were pushed when made. A new one is pushed if
 * it is at most a minute old (a node catching up after an outage re-reads old records: not news). */
static void nt_heard(const char *rest)
{
    char u16[17] = {0}, key[64];
    if (strlen(rest) != 33 || rest[16] != '/')
        return;
    memcpy(u16, rest, 16);
    uint64_t uid = strtoull(u16, NULL, 16), seq = strtoull(rest + 17, NULL, 16);
    if (seq >> CLUSTER_ID_BITS == cluster_id_base() >> CLUSTER_ID_BITS)
        return;
    snprintf(key, sizeof key, "nt/%s", rest);
    json_t *n = NULL;
    if (db_get_json(key, &n))
        return;
    if (!json_is_true(json_object_get(n, "read")) && jint(n, "time") >= now_wall() - 60) {
        json_object_del(n, "v");
        notify_publish(uid, "notification", json_incref(n));
    } else if (json_is_true(json_object_get(n, "read"))) {
        size_t unread = 0;
        if (nt_unread(uid, NULL, NULL, &unread) == 0)
            notify_publish(uid, "unread", json_pack("{s:I}", "unread", (json_int_t)unread));
    }
    json_decref(n);
}

int notify_init(mb_err *err)
{
    cluster_kv_on("nt/", nt_heard);
    uint64_t last = 0;
    db_iter *it = db_iter_prefix("nt/", 3);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl == 3 + 16 + 1 + 16) {
            char hex[17] = {0};
            memcpy(hex, k + 20, 16);
            uint64_t v = strtoull(hex, NULL, 16) & ((1ull << CLUSTER_ID_BITS) - 1); /* this node's part */
            if (v > last)
                last = v;
        }
    }
    db_iter_free(it);
    atomic_store(&nseq, last + 1);
    return hook_listen("task.update", on_task, NULL, err);
}

const kroute notify_routes[] = {
    {"GET", "/api/v1/events", MB_ROLE_USER, h_events, NULL},
    {"GET", "/api/v1/notifications", MB_ROLE_USER, h_list, NULL},
    {"DELETE", "/api/v1/notifications", MB_ROLE_USER, h_clear, NULL},
    {"GET", "/api/v1/notifications/unread", MB_ROLE_USER, h_unread, NULL},
    {"POST", "/api/v1/notifications/read", MB_ROLE_USER, h_mark, NULL},
    {"POST", "/api/v1/notifications/{id}/read", MB_ROLE_USER, h_mark, NULL},
    {NULL},
};

void notify_fini(void) {}
