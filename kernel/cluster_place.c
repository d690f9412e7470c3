/*
 * cluster_place.c — where each store is kept (issue 23, docs/cluster.md "Replicas and failover",
 * "Moving a store", "Rebalancing"): the placement thread and the moves. The placement thread looks
 * at every store's placement (sp/<sid16>) each TICK_MS: the stores another node kept whose lease
 * ended are considered for a takeover (cluster_replica.c), a store this node keeps without a
 * replica is given one (repl_fill, cluster_repl.c), the stores whose replica must still be dropped
 * are tried again, and the node with the most load moves one store to the node with the least. A
 * move is a task on the store's keeper: the target is filled as its replica, then the placement
 * switches once no request for the store is under way here and no change of it is unanswered.
 * A store that comes to be kept here has its modules told (cluster.store) before its first request
 * is served.
 *
 * Threads: the placement thread (mb-cl-place), a move's task worker, and whichever request thread
 * first serves a store kept here (cluster_store_ready). pl.mu guards the thread's start and stop;
 * told.mu the stores whose modules know; a fill holds cluster_repl.c's fill lock.
 */
#include "cluster_repl.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 500            /* the placement thread's look at the placements */
#define BALANCE_PAUSE_MS 10000 /* rebalancing: between two moves, and after the start */
#define MOVE_TASK "kernel.cluster_move"
#define MOVE_DRAIN_MS 30000 /* requests under way for the store the switch waits for, at most */

static struct {
    atomic_bool on;
    char node[64];
    pthread_t th;
    bool run;            /* mu */
    pthread_mutex_t mu;
    pthread_cond_t tick; /* the thread's stop */
    CURL *fill_curl;     /* the placement thread's */
    _Atomic int moving;  /* move tasks running here */
    int64_t balanced_ms; /* placement thread: when this node last moved a store to rebalance */
} pl = {.mu = PTHREAD_MUTEX_INITIALIZER, .tick = PTHREAD_COND_INITIALIZER};

/* ------------------------------------------------------------------ moves --- */

/* Store sid to node `to`: `to` becomes its replica (filled) unless it is already, then, once no
 * request served here for it is under way (the gate) and no change of it is in flight (the
 * commit lock; the sender's queue empty), the placement swaps: `to` keeps it, this node is its
 * replica (it has every change), epoch + 1. Requests that arrived meanwhile go to `to`. */
static int move_steps(mb_task *t, uint64_t sid, const char *to, json_t *rec, mb_err *err);

static int move_run(mb_task *t, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    uint64_t sid = (uint64_t)jint(args, "store");
    const char *to = jstr(args, "to");
    json_t *rec = cluster_store_record(sid);
    int rc = 0;
    if (!rec || strcmp(jstr(rec, "node"), pl.node)) {
        rc = !rec || strcmp(jstr(rec, "node"), to)
                 ? err_set(err, MB_ECONFLICT, "store %llu is not kept by this node (node %s) any more",
                           (unsigned long long)sid, pl.node)
                 : 0; /* a move retried after its switch: done */
        json_decref(rec);
        return rc;
    }
    task_progress(t, 5, "making the target the store's replica");
    atomic_fetch_add(&pl.moving, 1);
    rc = move_steps(t, sid, to, rec, err);
    atomic_fetch_sub(&pl.moving, 1);
    return rc;
}

static int move_steps(mb_task *t, uint64_t sid, const char *to, json_t *rec, mb_err *err)
{
    int rc = 0;
    repl_fill_lock(false);
    if (strcmp(jstr(rec, "replica"), to) || json_is_true(json_object_get(rec, "filling"))) {
        if (*jstr(rec, "replica")) { /* the old replica goes: the target takes its place */
            struct repl_swap d = {.node = pl.node, .replica = jstr(rec, "replica"),
                                  .epoch = (uint64_t)jint(rec, "epoch"), .to_node = pl.node, .to_replica = "",
                                  .step = 1};
            json_t *now = NULL;
            rc = cluster_store_cas(sid, repl_swap_change, &d, &now, err);
            json_decref(rec);
            rec = now;
        }
        CURL *c = rc ? NULL : curl_easy_init();
        if (c) {
            rc = repl_fill(c, sid, rec, to, err);
            curl_easy_cleanup(c);
        }
        json_decref(rec);
        rec = rc ? NULL : cluster_store_record(sid);
    }
    repl_fill_unlock();
    if (rc || !rec) {
        json_decref(rec);
        return rc ? rc : err_set(err, MB_EIO, "store %llu's placement went missing", (unsigned long long)sid);
    }
    task_progress(t, 80, "switching over");
    log_info("cluster: store %llu switches over to node %s once the requests under way for it here have ended "
             "(those that come meanwhile wait)", (unsigned long long)sid, to);
    int left = cluster_gate_close(sid, MOVE_DRAIN_MS);
    if (left)
        log_warn("cluster: store %llu moves with %d requests still under way here", (unsigned long long)sid, left);
    txn_lock(); /* no change of it in flight, and none handed on still unanswered */
    repl_wait_sent();
    struct repl_swap w = {.node = pl.node, .replica = to, .epoch = (uint64_t)jint(rec, "epoch"), .not_filling = true,
                          .to_node = to, .to_replica = pl.node, .step = 1};
    json_t *now = NULL;
    rc = cluster_store_cas(sid, repl_swap_change, &w, &now, err);
    txn_unlock();
    cluster_gate_open(sid);
    if (!rc) {
        log_info("cluster: store %llu moved to node %s (this node is its replica now; epoch %lld)",
                 (unsigned long long)sid, to, (long long)jint(now, "epoch"));
        task_result(t, json_pack("{s:I, s:s, s:s, s:I}", "store", (json_int_t)sid, "from", pl.node, "to", to,
                                 "epoch", jint(now, "epoch")));
    }
    json_decref(now);
    json_decref(rec);
    return rc;
}

int cluster_move_submit(uint64_t sid, const char *to, uint64_t uid, uint64_t *task, mb_err *err)
{
    char addr[300];
    json_t *rec = cluster_store_record(sid);
    int rc = 0;
    if (!rec)
        rc = err_set(err, MB_ENOENT, "no store %llu in the cluster", (unsigned long long)sid);
    else if (strcmp(jstr(rec, "node"), pl.node))
        rc = err_set(err, MB_ECONFLICT, "store %llu is kept by node %s, not by this one: ask it there",
                     (unsigned long long)sid, jstr(rec, "node"));
    else if (!strcmp(to, pl.node))
        rc = err_set(err, MB_ECONFLICT, "store %llu is kept by node %s already", (unsigned long long)sid, to);
    else if (!cluster_node_replication(to, addr, sizeof addr))
        rc = err_set(err, MB_EINVAL, "node '%s' is not up (or does not take stores yet)", to);
    json_decref(rec);
    return rc ? rc : task_submit(MOVE_TASK, uid, json_pack("{s:I, s:s}", "store", (json_int_t)sid, "to", to), task, err);
}

/* What one look saw of the placements for rebalancing: stores per node, this node's own with their
 * bytes. */
struct tally {
    json_t *count;   /* node -> stores it keeps */
    bool filling;    /* a store gets a replica somewhere (a fill, a move): no new move meanwhile */
    uint64_t *sid;   /* this node's stores, with their replicas and bytes */
    char (*replica)[64];
    int64_t *bytes;
    int64_t kept;    /* their bytes together */
    size_t n, cap;
};

static void tally_add(struct tally *ty, uint64_t sid, const json_t *r)
{
    const char *node = jstr(r, "node");
    json_object_set_new(ty->count, node, json_integer(jint(ty->count, node) + 1));
    ty->filling = ty->filling || json_is_true(json_object_get(r, "filling"));
    if (strcmp(node, pl.node))
        return;
    if (ty->n == ty->cap) {
        ty->cap = ty->cap ? ty->cap * 2 : 16;
        ty->sid = xrealloc(ty->sid, ty->cap * sizeof *ty->sid);
        ty->replica = xrealloc(ty->replica, ty->cap * sizeof *ty->replica);
        ty->bytes = xrealloc(ty->bytes, ty->cap * sizeof *ty->bytes);
    }
    char key[32];
    txn_usage_t u;
    id_key(key, sizeof key, "us", sid);
    txn_usage_read(key, &u);
    ty->sid[ty->n] = sid;
    ty->bytes[ty->n] = u.bytes > 0 ? u.bytes : 0;
    ty->kept += ty->bytes[ty->n];
    snprintf(ty->replica[ty->n++], 64, "%s", jstr(r, "replica"));
}

/* Rebalancing (cluster.rebalance, on by default). A node's load is the bytes of the stores it keeps
 * plus cluster.store_weight_mb for each of them (a store costs metadata and requests whatever its
 * size). The node with the most load (the first by name among equals; its own load counted now, the
 * others' bytes as their records said at their last refresh) moves one store to the node with the
 * least, when that lowers the larger of the two by a store's weight at least: the store's load is at
 * most their difference less one weight. Among those, a store whose replica is that node already
 * (no fill), else the one that evens the two best. Each move lowers the sum of the loads' squares
 * by two weights' squares at least, so the moves end; with stores of no bytes, this is "move when
 * the counts differ by two or more". One move at a time in the whole cluster (none while any store
 * is filling), BALANCE_PAUSE_MS at least between two, and two record refreshes, so that the
 * receiving node's record counts the last move's bytes before the next is weighed. */
static void rebalance(const struct tally *ty)
{
    int64_t pause = (int64_t)g_cfg->cluster_lease_ttl * 1000 * 2 / 3 + 1000;
    if (!g_cfg->cluster_rebalance || ty->filling || atomic_load(&pl.moving) || !ty->n ||
        now_mono_ms() - pl.balanced_ms < (pause > BALANCE_PAUSE_MS ? pause : BALANCE_PAUSE_MS))
        return;
    int64_t w = g_cfg->cluster_store_weight;
    json_t *view = cluster_view(), *e;
    char most[64] = "", least[64] = "";
    int64_t hi = -1, lo = 0;
    size_t i;
    json_array_foreach(json_object_get(view, "nodes"), i, e)
    {
        const char *name = jstr(e, "name");
        if (jint(e, "replication") <= 0) /* it does not take stores yet */
            continue;
        int64_t load = jint(ty->count, name) * w + (strcmp(name, pl.node) ? jint(e, "kept") : ty->kept);
        if (load > hi || (load == hi && strcmp(name, most) < 0))
            hi = load, snprintf(most, sizeof most, "%s", name);
        if (!*least || load < lo || (load == lo && strcmp(name, least) < 0))
            lo = load, snprintf(least, sizeof least, "%s", name);
    }
    json_decref(view);
    if (strcmp(most, pl.node) || hi - lo < 2 * w)
        return;
    size_t k = ty->n;
    int64_t best = INT64_MAX;
    for (i = 0; i < ty->n; i++) {
        int64_t load = ty->bytes[i] + w, off = hi - lo - 2 * load;
        if (load > hi - lo - w)
            continue;
        if (off < 0)
            off = -off;
        if (!strcmp(ty->replica[i], least))
            off = -1; /* no fill: before any other */
        if (off < best)
            best = off, k = i;
    }
    if (k == ty->n)
        return; /* every store here is too big to even the two by moving it */
    uint64_t task;
    mb_err err;
    pl.balanced_ms = now_mono_ms();
    if (cluster_move_submit(ty->sid[k], least, 0, &task, &err))
        log_warn("cluster: rebalancing: store %llu cannot move to node %s: %s", (unsigned long long)ty->sid[k], least,
                 err.msg);
    else
        log_info("cluster: rebalancing: store %llu (%lld bytes) moves to node %s (load %lld MiB here, %lld MiB there; "
                 "task %llu)", (unsigned long long)ty->sid[k], (long long)ty->bytes[k], least, (long long)(hi >> 20),
                 (long long)(lo >> 20), (unsigned long long)task);
}

/* This node keeps store sid from now on (it took it over, or it was moved here): the hook event
 * cluster.store {store, node, epoch, state: "kept"}, so that modules whose data of a store is their
 * own and not replicated (search's index) catch up on it: its filters at once, on this thread (the
 * WebDAV module reads the store's locks), its observers from the outbox. Not for the stores kept at start, nor for a
 * store just made here (epoch 1: its files' own events follow). */
static void tell_kept(uint64_t sid, const json_t *rec)
{
    mb_err e = {0};
    /* filters first, on this thread: what must be right before the store's first request is served
     * (the WebDAV module's locks); a refusal changes nothing. The observers then get the same
     * payload (hook_emit takes it). */
    json_t *p = json_pack("{s:I, s:s, s:I, s:s}", "store", (json_int_t)sid, "node", pl.node, "epoch", jint(rec, "epoch"),
                          "state", "kept");
    hook_filter("cluster.store", p, NULL);
    if (hook_emit("cluster.store", p, &e))
        log_warn("cluster: store %llu is kept here now, but the modules were not told: %s", (unsigned long long)sid,
                 e.msg);
}

/* The stores this node keeps whose modules know it: told once, by whichever comes first, the
 * placement thread's look or the first request or module call that serves the store here
 * (cluster_store_ready). Before, only the look told them, up to TICK_MS after the store was served
 * here: a WebDAV lock taken on the old keeper did not bind the first requests on the new one. */
static struct {
    pthread_mutex_t mu; /* held while the modules are told: a request for the store waits for it */
    json_t *set;        /* "<sid16>" -> true; NULL before the start */
} told = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Store sid, whose placement is rec, is kept here: its modules are told once (not at epoch 1, a store
 * just made here). */
static void tell_once(uint64_t sid, const json_t *rec)
{
    char hex[17];
    key_u64(hex, sid);
    pthread_mutex_lock(&told.mu);
    if (told.set && !json_object_get(told.set, hex)) {
        if (jint(rec, "epoch") > 1)
            tell_kept(sid, rec);
        json_object_set_new(told.set, hex, json_true());
    }
    pthread_mutex_unlock(&told.mu);
}

void cluster_store_ready(uint64_t sid)
{
    if (!atomic_load(&pl.on))
        return;
    char hex[17];
    key_u64(hex, sid);
    pthread_mutex_lock(&told.mu);
    bool known = !told.set || json_object_get(told.set, hex);
    pthread_mutex_unlock(&told.mu);
    if (known)
        return;
    json_t *rec = cluster_store_record(sid);
    if (rec && !strcmp(jstr(rec, "node"), pl.node))
        tell_once(sid, rec);
    json_decref(rec);
}

/* The look: kept is every store this node kept as it looked. One it no longer keeps (its placement
 * names another node now, read again: a request may have told one that came a moment ago) is told
 * again when it comes back. */
static void told_prune(const json_t *kept)
{
    pthread_mutex_lock(&told.mu);
    const char *k;
    json_t *v, *tmp;
    json_object_foreach_safe(told.set, tmp, k, v) {
        if (json_object_get(kept, k))
            continue;
        json_t *rec = cluster_store_record(strtoull(k, NULL, 16));
        if (!rec || strcmp(jstr(rec, "node"), pl.node))
            json_object_del(told.set, k);
        json_decref(rec);
    }
    pthread_mutex_unlock(&told.mu);
}

/* At the start: the stores this node keeps are known to its modules (they read everything). */
static void told_start(void)
{
    json_t *set = json_object();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        json_t *r = kl == 19 ? json_loadb(v, vl, 0, NULL) : NULL;
        if (r && !strcmp(jstr(r, "node"), pl.node)) {
            char hex[17];
            memcpy(hex, k + 3, 16);
            hex[16] = 0;
            json_object_set_new(set, hex, json_true());
        }
        json_decref(r);
    }
    db_iter_free(it);
    pthread_mutex_lock(&told.mu);
    json_decref(told.set);
    told.set = set;
    pthread_mutex_unlock(&told.mu);
}

/* One look of the placement thread, one pass over the placements: the stores to take over
 * (cluster_replica.c), then the stores whose replica must still be dropped, then one store this node
 * keeps without a replica gets one, when another node takes replicas (and its last try is
 * FILL_RETRY_S old; a move's fill holds fill_mu meanwhile). */
static void look(void)
{
    bool closing = repl_closing();
    char to[64];
    bool can_fill = !closing && cluster_pick_node(NULL, to, sizeof to) && repl_fill_lock(true);
    uint64_t sid = 0;
    json_t *pick = NULL;
    struct tally ty = {.count = json_object()};
    json_t *kept = json_object();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        char hex[17];
        if (kl != 19)
            continue;
        memcpy(hex, k + 3, 16);
        hex[16] = 0;
        json_t *r = json_loadb(v, vl, 0, NULL);
        uint64_t id = strtoull(hex, NULL, 16);
        if (r)
            tally_add(&ty, id, r);
        if (!strcmp(jstr(r, "node"), pl.node)) {
            json_object_set_new(kept, hex, json_true());
            tell_once(id, r); /* taken over, or moved here (the stores kept at the start are known) */
            if (can_fill && !pick && !*jstr(r, "replica") && repl_fill_due(id)) {
                sid = id;
                pick = json_incref(r);
            }
        } else if (r)
            replica_consider(id, r);
        json_decref(r);
    }
    db_iter_free(it);
    told_prune(kept);
    json_decref(kept);
    repl_retry_broken();
    mb_err err;
    if (pick)
        repl_fill(pl.fill_curl, sid, pick, to, &err);
    json_decref(pick);
    if (can_fill)
        repl_fill_unlock();
    cluster_set_kept(ty.kept);
    if (!closing && !pick)
        rebalance(&ty);
    json_decref(ty.count);
    free(ty.sid);
    free(ty.replica);
    free(ty.bytes);
}

static void *place_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-cl-place");
    pthread_mutex_lock(&pl.mu);
    while (pl.run) {
        struct timespec ts;
        wait_deadline(&ts, CLOCK_REALTIME, TICK_MS);
        pthread_cond_timedwait(&pl.tick, &pl.mu, &ts);
        if (!pl.run)
            break;
        pthread_mutex_unlock(&pl.mu);
        look();
        pthread_mutex_lock(&pl.mu);
    }
    pthread_mutex_unlock(&pl.mu);
    return NULL;
}

/* ------------------------------------------------------------ start, stop --- */

int place_start(const char *node, mb_err *err)
{
    snprintf(pl.node, sizeof pl.node, "%s", node);
    told_start();
    pl.fill_curl = curl_easy_init();
    static const mb_task_type move = {.size = sizeof move, .name = MOVE_TASK, .run = move_run, .max_attempts = 3};
    int rc = task_type_add(NULL, &move, NULL, err);
    if (rc)
        return rc;
    pl.run = true;
    pl.balanced_ms = now_mono_ms(); /* the view settles before the first rebalancing move */
    pthread_create(&pl.th, NULL, place_main, NULL);
    atomic_store(&pl.on, true);
    return 0;
}

void place_stop(void)
{
    if (!atomic_load(&pl.on))
        return;
    pthread_mutex_lock(&pl.mu);
    pl.run = false;
    pthread_cond_broadcast(&pl.tick);
    pthread_mutex_unlock(&pl.mu);
    pthread_join(pl.th, NULL);
}

void place_fini(void)
{
    curl_easy_cleanup(pl.fill_curl);
    pl.fill_curl = NULL;
    pthread_mutex_lock(&told.mu);
    json_decref(told.set);
    told.set = NULL;
    pthread_mutex_unlock(&told.mu);
}
