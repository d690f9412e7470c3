/*
 * gc.c — the chunk collector: deletes chunks whose refcount has been zero for longer than the
 * grace (MBYTE_GC_GRACE seconds, 3600 by default) and orphans (chunk files no refcount names:
 * an upload that never committed) older than it, every MBYTE_GC_INTERVAL seconds (600) on its
 * own thread, or when asked (fsck repair, a store's deletion). Orphans are found by listing the
 * backends, and, for objects no listing can tell apart (encrypted stores', redundancy sets'),
 * by the put records blob.c writes before each such put (po/<hash>).
 *
 * Against writers (blob.c "Collector and writers"): each candidate is re-checked under the
 * commit lock (txn.c), so no change adds a reference meanwhile, and deleted under blob.c's
 * pending lock (blob_del_unheld), so a chunk an upload is writing or deduplicating is skipped.
 * Holds (an online backup) stop it altogether (gc_hold).
 *
 * In cluster mode it deletes from this node's own disk only: what lies on a backend other nodes may
 * share is left to the leader's collector (blob_del_mine, cluster_gc.c).
 *
 * Threads: its own (gc_main) plus any caller of gc_run/gc_discard/gc_hold. gc_mu guards the
 * thread's stop flag; gc_hold_mu the holds and the "collecting" flag.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t gc_grace = 3600, gc_interval = 600;
static pthread_t gc_thread;
static bool gc_running, gc_stop;
static pthread_mutex_t gc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cv = PTHREAD_COND_INITIALIZER;

int64_t gc_grace_secs(void) { return gc_grace; }
int64_t gc_interval_secs(void) { return gc_interval; }

bool chunk_recorded(const char *hash)
{
    char key[80], *v = NULL;
    snprintf(key, sizeof key, "c/%s", hash);
    int rc = db_get(key, strlen(key), &v, NULL);
    free(v);
    return rc != MB_ENOENT; /* unreadable counts as recorded: never delete on a doubt */
}

int64_t put_record_time(const char *v, size_t vl)
{
    json_t *rec = json_loadb(v, vl, 0, NULL);
    int64_t t = rec ? (int64_t)json_integer_value(json_object_get(rec, "t")) : 0;
    json_decref(rec);
    return t;
}

static void put_record_del(const char *hash)
{
    char key[72];
    snprintf(key, sizeof key, "po/%s", hash);
    db_del(key, strlen(key), false);
}

typedef struct {
    int64_t cutoff;
    json_t *orphans; /* array of hashes */
} orphan_scan;

static int orphan_cb(const char *hash, uint64_t size, int64_t mtime, void *ud)
{
    (void)size;
    orphan_scan *o = ud;
    if (mtime > o->cutoff || chunk_recorded(hash))
        return 0;
    json_array_append_new(o->orphans, json_string(hash));
    return 0;
}

/* Holds (an online backup, backup.c) keep the collector from deleting anything: a chunk that a
 * backup's snapshot still references may lose its last reference meanwhile. gc_hold waits
 * out a collection under way, so none overlaps a hold. */
static int gc_holds;
static bool gc_collecting;
static pthread_mutex_t gc_hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_hold_cv = PTHREAD_COND_INITIALIZER;

void gc_hold(int delta)
{
    pthread_mutex_lock(&gc_hold_mu);
    gc_holds += delta;
    while (delta > 0 && gc_collecting)
        pthread_cond_wait(&gc_hold_cv, &gc_hold_mu);
    pthread_mutex_unlock(&gc_hold_mu);
}

bool gc_held(void)
{
    pthread_mutex_lock(&gc_hold_mu);
    bool held = gc_holds > 0;
    pthread_mutex_unlock(&gc_hold_mu);
    return held;
}

static int gc_collect(int64_t grace, mb_err *err);

int gc_run(int64_t grace, mb_err *err)
{
    pthread_mutex_lock(&gc_hold_mu);
    if (gc_holds > 0) {
        pthread_mutex_unlock(&gc_hold_mu);
        log_msg(LOG_DEBUG, "blob", "collector skipped: a backup holds it");
        return 0;
    }
    gc_collecting = true;
    pthread_mutex_unlock(&gc_hold_mu);
    int rc = gc_collect(grace, err);
    pthread_mutex_lock(&gc_hold_mu);
    gc_collecting = false;
    pthread_cond_broadcast(&gc_hold_cv);
    pthread_mutex_unlock(&gc_hold_mu);
    return rc;
}

static int gc_collect(int64_t grace, mb_err *err)
{
    int64_t cutoff = now_wall() - grace;
    int deleted = 0;
    /* durability: relaxed answers before the sync; a refcount read here at zero must be
     * durable before its chunk file goes, or a crash brings the reference back without it. */
    db_sync_through(db_grouped_writes());
    /* 1. Records at zero for longer than the grace: collect the candidates first (no lock
     * held during the scan), then re-check each one under the locks. */
    json_t *cand = json_array();
    db_iter *it = db_iter_prefix("c/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        if (rec && json_integer_value(json_object_get(rec, "refs")) == 0 &&
            json_integer_value(json_object_get(rec, "zero_since")) <= cutoff && kl == 66)
            json_array_append_new(cand, json_stringn(k + 2, 64));
        json_decref(rec);
    }
    db_iter_free(it);
    size_t i;
    json_t *h;
    json_array_foreach(cand, i, h) {
        const char *hash = json_string_value(h);
        char key[80];
        snprintf(key, sizeof key, "c/%s", hash);
        txn_lock();
        json_t *rec = NULL;
        if (db_get_json(key, &rec) == 0 && json_integer_value(json_object_get(rec, "refs")) == 0 &&
            json_integer_value(json_object_get(rec, "zero_since")) <= cutoff) {
            mb_err e = {0};
            int rc = blob_del_unheld(hash, &e);
            if (rc == 0) {
                db_batch *b = db_batch_new();
                db_batch_del(b, key, strlen(key));
                blob_inline_del(b, hash);
                db_batch_commit(b, true);
                deleted++;
            } else if (rc < 0)
                log_warn("collector: %s", e.msg);
        }
        json_decref(rec);
        txn_unlock();
    }
    json_decref(cand);
    /* 2. Orphans: chunk files no record names (an upload that never committed). */
    orphan_scan o = {.cutoff = cutoff, .orphans = json_array()};
    blob_list_mine(orphan_cb, &o, err); /* in cluster mode this node's disk: the rest is the leader's */
    json_array_foreach(o.orphans, i, h) {
        const char *hash = json_string_value(h);
        txn_lock();
        mb_err e = {0};
        if (!chunk_recorded(hash) && blob_del_unheld(hash, &e) == 0)
            deleted++;
        txn_unlock();
    }
    json_decref(o.orphans);
    /* 3. Put records (po/, blob.c): objects of encrypted stores and sets, which no listing
     * finds. A record whose chunk has a refcount record is done with (the chunk is the
     * collector's business from now on, step 1); one older than the grace without it names an
     * upload that never committed: its objects go wherever they are, then the record. */
    json_t *done = json_array(), *stale = json_array();
    it = db_iter_prefix("po/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        if (kl != 67)
            continue;
        json_t *hs = json_stringn(k + 3, 64);
        if (chunk_recorded(json_string_value(hs)))
            json_array_append(done, hs);
        else if (put_record_time(v, vl) <= cutoff)
            json_array_append(stale, hs);
        json_decref(hs);
    }
    db_iter_free(it);
    json_array_foreach(done, i, h) put_record_del(json_string_value(h));
    json_array_foreach(stale, i, h) {
        const char *hash = json_string_value(h);
        txn_lock();
        if (!chunk_recorded(hash)) {
            mb_err e = {0};
            int rc = blob_del_unheld(hash, &e);
            if (rc == 0) {
                put_record_del(hash);
                deleted++;
            } else if (rc < 0)
                log_warn("collector: %s", e.msg);
        } else
            put_record_del(hash);
        txn_unlock();
    }
    json_decref(done);
    json_decref(stale);
    if (deleted)
        log_info("collector: deleted %d unreferenced chunks", deleted);
    return deleted;
}

static void *gc_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gc_mu);
    while (!gc_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += gc_interval;
        pthread_cond_timedwait(&gc_cv, &gc_mu, &ts);
        if (gc_stop)
            break;
        pthread_mutex_unlock(&gc_mu);
        mb_err e = {0};
        gc_run(gc_grace, &e);
        pthread_mutex_lock(&gc_mu);
    }
    pthread_mutex_unlock(&gc_mu);
    return NULL;
}

/* A failed write drops chunk `hash`: gone at once if nothing else holds or names it. */
void gc_discard(const char *hash)
{
    txn_lock();
    blob_pending_drop_discard(hash);
    txn_unlock();
}

static int64_t env_secs(const char *name, int64_t def)
{
    const char *s = getenv(name);
    uint64_t v;
    if (s && parse_u64(s, &v) && v < (1ULL << 40))
        return (int64_t)v;
    if (s)
        log_warn("%s=%s is not a number of seconds; using %lld", name, s, (long long)def);
    return def;
}

int gc_init(mb_err *err)
{
    gc_grace = env_secs("MBYTE_GC_GRACE", 3600);
    gc_interval = env_secs("MBYTE_GC_INTERVAL", 600);
    if (gc_interval < 1)
        gc_interval = 1;
    gc_stop = false;
    if (pthread_create(&gc_thread, NULL, gc_main, NULL))
        return err_set(err, MB_EIO, "cannot start the chunk collector");
    gc_running = true;
    return 0;
}

void gc_fini(void)
{
    if (!gc_running)
        return;
    pthread_mutex_lock(&gc_mu);
    gc_stop = true;
    pthread_cond_signal(&gc_cv);
    pthread_mutex_unlock(&gc_mu);
    pthread_join(gc_thread, NULL);
    gc_running = false;
}
