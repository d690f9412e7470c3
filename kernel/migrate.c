/*
 * migrate.c — the live migration of a store from one placement to another (issue 21;
 * docs/storage.md "Live migration", docs/api.md "Store settings"), while its files are read
 * and written.
 *
 *   PATCH /api/v1/stores/{sid}/config {"placement": {...}} (storeconfig, api->store_migrate)
 *   -> 202 {"task"}; an administrator's call
 *
 * migrate_submit rewrites the store record in one synced change: "placement" becomes the new
 * one (so every write from then on goes there: blob_put_store asks backend.c per chunk) and
 * "migrating" = {"from": the old placement, "task", "by"} says where the older chunks still
 * are. Reads need nothing more: blob_read_store tries the new placement, then every other
 * backend (an encrypted old placement is kept readable by backend.c's list of encrypting stores,
 * which reads "migrating.from" too). An encrypting store keeps its data key across a migration
 * (the new placement gets the old "key"), so its object names stay the same on any backend.
 *
 * The task "kernel.migrate" ({"store"}) then:
 *   1. waits until the writes that were putting chunks when the placement changed have committed
 *      or failed (the chunks pending then, blob_pending_snapshot): they may have put a chunk to the
 *      old placement, and the walk must see their versions;
 *   2. walks every version record of the store (f/<sid16>/..., so every file, old version and
 *      trashed file) in key order and copies each chunk the new placement does not hold whole,
 *      read from the old placement (else from wherever it is) and verified first
 *      (blob_copy_placed); a chunk missing everywhere is counted, not fatal (fsck's business);
 *   3. walks them again and deletes each chunk's old copy (blob_del_placed) when no other store
 *      references the chunk (its refcount is no more than this store's references) and no write
 *      holds it, under the commit lock and the pending lock as the collector deletes; a chunk
 *      shared with another store keeps its old copy (the collector removes it at refcount 0).
 *      In cluster mode an old placement off this node's disk may be a backend other nodes share,
 *      where one object is the chunk of every store that wrote it: the other nodes are asked too,
 *      MIGRATE_SPARE_BATCH chunks at a time, and hold the ones they do not need while they go
 *      (migrate_cluster's spare, cluster_gc.c); the store's replica counts the store's references as this node does,
 *      once it has every change the count saw (same_edit). A store moved onto this node's disk
 *      has each chunk put on its replica's disk first (to_replica);
 *   4. removes "migrating" from the record.
 * Where it is, is kept beside the task, so a stop (shutdown, SIGKILL) resumes where it was:
 *   mg/<task16> {"phase": "copy"|"clean", "after": the last version key done, "done", "total",
 *                "copied", "missing", "deleted", "kept"}
 * written unsynced (a copy done twice is a stat that finds the chunk). The key goes when the
 * task ends. A cancel turns the migration round: the record goes back to the old placement,
 * "migrating.from" becomes the new one, and a new kernel.migrate task copies back what was
 * written there meanwhile; no chunk is left where the store does not look.
 *
 * Threads: HTTP threads (migrate_submit) and task workers (run). The record is read and written
 * under the commit lock (txn_begin), so two requests cannot both start a migration.
 */
#include "fs.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TASK_TYPE "kernel.migrate"
#define MIGRATE_TELL_EVERY 16     /* versions between progress reports and notes */
#define MIGRATE_WAIT_MS 600000    /* longest wait for the writes under way at the switch */
#define MIGRATE_SEEN_MAX 200000   /* chunks remembered so a shared one is asked once per run */
#define MIGRATE_PAGE 64           /* versions read through one LevelDB iterator */
#define MIGRATE_SPARE_BATCH 128   /* old copies asked about (cluster mode) and deleted between two reports */

static const migrate_cluster *_Atomic mcl; /* cluster mode: what the other nodes are asked */

void migrate_on_cluster(const migrate_cluster *mc) { atomic_store(&mcl, mc); }

/* Member k of o if it is a string, else NULL (jstr gives "" instead). */
static const char *str_or_null(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Is task id queued or running? */
static bool task_live(uint64_t id)
{
    json_t *view = NULL;
    const char *st = id && task_get(id, &view) == 0 ? jstr(view, "state") : NULL;
    bool live = st && (!strcmp(st, "queued") || !strcmp(st, "running"));
    json_decref(view);
    return live;
}

static bool task_cancelled(uint64_t id)
{
    json_t *view = NULL;
    bool c = id && task_get(id, &view) == 0 && !strcmp(jstr(view, "state"), "cancelled");
    json_decref(view);
    return c;
}

/* Rewrite store sid's record under the commit lock: edit(rec, ud) changes it (0) or refuses
 * (an MB_E* with err). Then drop what backend.c cached of the placement. */
static int record_edit(uint64_t sid, int (*edit)(json_t *rec, void *ud, mb_err *err), void *ud, mb_err *err)
{
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *rec = NULL;
    txn t;
    txn_begin(&t, NULL);
    int rc = db_get_json(key, &rec) ? err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid)
                                    : edit(rec, ud, err);
    if (!rc)
        db_batch_put_json(t.b, key, rec);
    rc = txn_end(&t, rc, err, rc ? NULL : "the store's placement");
    json_decref(rec);
    if (!rc)
        backend_placement_forget(sid);
    return rc;
}

/* ------------------------------------------------------------ the request --- */

typedef struct {
    const json_t *to; /* the new placement record (with the store's key when it encrypts) */
    uint64_t by;
    bool resume; /* the migration there is unfinished and has no task: give it one */
} begin_ctx;

static void set_backend_name(json_t *rec)
{
    /* the older member beside the placement, for readers that know only it (null for a set) */
    const char *b = str_or_null(json_object_get(rec, "placement"), "backend");
    json_object_set_new(rec, "backend", b ? json_string(b) : json_null());
}

static int begin_edit(json_t *rec, void *ud, mb_err *err)
{
    begin_ctx *c = ud;
    json_t *mig = json_object_get(rec, "migrating");
    json_t *cur = json_object_get(rec, "placement");
    if (json_is_string(json_object_get(rec, "state")))
        return err_set(err, MB_ECONFLICT, "the store is %s; move it once that is done", jstr(rec, "state"));
    if (mig) {
        if (task_live((uint64_t)jint(mig, "task")))
            return err_set(err, MB_ECONFLICT, "a migration of this store is already running (task %lld)",
                           (long long)jint(mig, "task"));
        if (!cur || !backend_placement_same(cur, c->to))
            return err_set(err, MB_ECONFLICT, "an earlier migration of this store to %s did not finish; ask for "
                                              "that placement again to finish it first",
                           str_or_null(cur, "backend") ? str_or_null(cur, "backend") : "another placement");
        c->resume = true;
        json_object_set_new(mig, "task", json_integer(0));
        json_object_set_new(mig, "by", json_integer((json_int_t)c->by));
        return 0;
    }
    json_t *from = cur ? json_incref(cur) : backend_placement_norm(NULL);
    if (backend_placement_same(from, c->to)) {
        json_decref(from);
        return 1; /* there already */
    }
    json_object_set_new(rec, "migrating", json_pack("{s:o, s:I, s:I}", "from", from, "task", (json_int_t)0, "by",
                                                    (json_int_t)c->by));
    json_object_set(rec, "placement", (json_t *)c->to);
    set_backend_name(rec);
    return 0;
}

static int task_edit(json_t *rec, void *ud, mb_err *err)
{
    (void)err;
    json_t *mig = json_object_get(rec, "migrating");
    if (mig)
        json_object_set_new(mig, "task", json_integer((json_int_t)*(uint64_t *)ud));
    return 0;
}

/* Queue the task of store sid's migration (owned by uid) and name it in the record. */
static int start_task(uint64_t sid, uint64_t uid, uint64_t *task, mb_err *err)
{
    int rc = task_submit(TASK_TYPE, uid, json_pack("{s:I}", "store", (json_int_t)sid), task, err);
    if (!rc) {
        mb_err ig = {0}; /* the task runs even so: the id only serves the 409 and the start's check */
        record_edit(sid, task_edit, task, &ig);
    }
    return rc;
}

/* The placement record p asks for, given the store's present one: an encrypting store keeps its
 * data key (its objects keep their names), a store that starts encrypting gets a new one. */
static int target_placement(uint64_t sid, const json_t *p, json_t **out, mb_err *err)
{
    int rc = backend_placement_make(p, out, err);
    if (rc || !json_is_true(json_object_get(*out, "encrypt")))
        return rc;
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *rec = NULL;
    if (db_get_json(key, &rec) == 0) {
        json_t *cur = json_object_get(rec, "placement");
        json_t *mig = json_object_get(json_object_get(rec, "migrating"), "from");
        const char *k = str_or_null(cur, "key") ? str_or_null(cur, "key") : str_or_null(mig, "key");
        if (k)
            json_object_set_new(*out, "key", json_string(k));
    }
    json_decref(rec);
    return 0;
}

int migrate_submit(const mb_user *u, uint64_t sid, const json_t *p, uint64_t *task, mb_err *err)
{
    *task = 0;
    if (!u || u->role != MB_ROLE_ADMIN)
        return err_set(err, MB_EPERM, "placement: only an administrator may move a store to other backends");
    int rc = backend_placement_check(p, err);
    if (rc)
        return rc;
    json_t *to = NULL;
    if ((rc = target_placement(sid, p, &to, err)))
        return rc;
    begin_ctx c = {.to = to, .by = u->id};
    rc = record_edit(sid, begin_edit, &c, err);
    json_decref(to);
    if (rc)
        return rc; /* 1: nothing to do */
    if ((rc = start_task(sid, u->id, task, err)) && !c.resume)
        log_error("store %llu: its migration could not be queued (%s); it is queued again at the next start",
                  (unsigned long long)sid, err->msg);
    if (!rc)
        log_info("store %llu: migration to %s started (task %llu)", (unsigned long long)sid,
                 str_or_null(p, "backend") ? str_or_null(p, "backend") : "a new placement", (unsigned long long)*task);
    return rc;
}

int migrate_placement_get(uint64_t sid, json_t **out, mb_err *err)
{
    int rc = backend_placement_get(sid, out, err);
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *rec = NULL;
    if (!rc && db_get_json(key, &rec) == 0) {
        json_t *mig = json_object_get(rec, "migrating");
        if (mig)
            json_object_set_new(*out, "migrating",
                                json_pack("{s:o, s:I}", "from", backend_placement_norm(json_object_get(mig, "from")),
                                          "task", (json_int_t)jint(mig, "task")));
    }
    json_decref(rec);
    return rc;
}

/* ---------------------------------------------------------------- the task --- */

typedef struct {
    mb_task *task;
    uint64_t sid;
    char key[32], prefix[24];
    json_t *st;   /* the note mg/<task16> */
    json_t *seen; /* hash -> true (copy: asked once a run), or [references, size, fastsum] (clean) */
    backend_ref from, to;
    bool from_local, to_local;
    mb_err *err;
} mig;

static void save(mig *m) { db_put_json(m->key, m->st, false); }

static void add(mig *m, const char *what, json_int_t n) { json_object_set_new(m->st, what, json_integer(jint(m->st, what) + n)); }

/* Tell the progress: 0, MB_EAGAIN (the kernel wants the worker: resume later) or MB_ECANCELED. */
static int tell(mig *m, const char *msg)
{
    json_int_t done = jint(m->st, "done"), total = jint(m->st, "total");
    int pct = total ? (int)(done * 99 / total) : 0;
    if (!task_progress(m->task, pct > 99 ? 99 : pct, msg))
        return 0;
    if (task_must_yield(m->task))
        return err_set(m->err, MB_EAGAIN, "stopped after %lld of %lld chunks; it resumes", (long long)done,
                       (long long)total);
    return err_set(m->err, MB_ECANCELED, "cancelled after %lld of %lld chunks", (long long)done, (long long)total);
}

/* 1. The writes that held chunks when the placement changed have ended. */
static int wait_writes(mig *m)
{
    json_t *held = blob_pending_snapshot();
    int rc = 0;
    for (int64_t waited = 0; !rc && json_array_size(held) && waited < MIGRATE_WAIT_MS; waited += 50) {
        size_t i = json_array_size(held);
        while (i-- > 0)
            if (!blob_pending_held(json_string_value(json_array_get(held, i))))
                json_array_remove(held, i);
        if (json_array_size(held)) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            rc = tell(m, "waiting for uploads under way to finish");
        }
    }
    if (!rc && json_array_size(held))
        log_warn("store %llu: %zu chunks still held by writes after %d s; migrating on", (unsigned long long)m->sid,
                 json_array_size(held), MIGRATE_WAIT_MS / 1000);
    json_decref(held);
    return rc;
}

typedef int (*chunk_fn)(mig *m, const json_t *chunk);

/* fn on each chunk of each of the store's version records. With `what` (the progress word), a
 * step of the task: it starts after the note's "after", moves it on, counts "done" and tells;
 * without, a count that starts at the beginning and changes nothing in the note. A LevelDB
 * iterator holds its snapshot's files and memtable while it lives, so one is opened per page of
 * MIGRATE_PAGE versions, not for the whole (maybe hours long) walk. */
static int walk(mig *m, chunk_fn fn, const char *what)
{
    const char *after = what ? str_or_null(m->st, "after") : NULL;
    char *pos = after ? xstrdup(after) : NULL; /* the last version gone through */
    int rc = 0, n = 0;
    for (bool more = true; more && !rc;) {
        db_iter *it = db_iter_prefix(m->prefix, strlen(m->prefix));
        if (pos)
            db_iter_seek(it, pos, strlen(pos));
        more = false;
        for (int page = 0; !rc && db_iter_next(it);) {
            size_t kl, vl;
            const char *k = db_iter_key(it, &kl);
            const char *v = db_iter_val(it, &vl);
            if (pos && kl == strlen(pos) && !memcmp(k, pos, kl))
                continue;
            if (page++ == MIGRATE_PAGE) {
                more = true; /* the next page starts here */
                break;
            }
            json_t *ver = json_loadb(v, vl, 0, NULL);
            size_t i;
            json_t *ch;
            json_array_foreach(json_object_get(ver, "chunks"), i, ch) {
                if ((rc = fn(m, ch)))
                    break;
                if (what)
                    add(m, "done", 1);
            }
            json_decref(ver);
            if (rc)
                break;
            free(pos);
            pos = strndup(k, kl);
            if (!what)
                continue;
            json_object_set_new(m->st, "after", json_string(pos));
            if (++n % MIGRATE_TELL_EVERY == 0) {
                save(m);
                char msg[160];
                snprintf(msg, sizeof msg, "%s %lld of %lld chunks", what, (long long)jint(m->st, "done"),
                         (long long)jint(m->st, "total"));
                rc = tell(m, msg);
            }
        }
        db_iter_free(it);
    }
    free(pos);
    return rc;
}

static int count_one(mig *m, const json_t *ch)
{
    (void)ch;
    add(m, "total", 1);
    return 0;
}

/* 2. Chunk ch is on the new placement. */
static int copy_one(mig *m, const json_t *ch)
{
    const char *h = str_or_null(ch, "h");
    if (!h || json_object_get(m->seen, h))
        return 0;
    mb_err e = {0};
    int rc = blob_copy_placed(m->from_local ? NULL : &m->from, m->to_local ? NULL : &m->to, h, jstr(ch, "x"),
                              (size_t)jint(ch, "n"), &e);
    if (rc == MB_ENOENT || rc == MB_EINTEGRITY) { /* lost before the migration: fsck reports it */
        log_error("store %llu: chunk %s cannot be migrated: %s", (unsigned long long)m->sid, h, e.msg);
        add(m, "missing", 1);
    } else if (rc < 0) { /* a backend that failed: the task tries again later, from here */
        *m->err = e;
        return rc;
    } else if (rc == 0)
        add(m, "copied", 1);
    if (json_object_size(m->seen) < MIGRATE_SEEN_MAX)
        json_object_set_new(m->seen, h, json_true());
    return 0;
}

static int count_ref(mig *m, const json_t *ch)
{
    const char *h = str_or_null(ch, "h");
    if (!h || jint(ch, "n") <= (json_int_t)blob_inline_max()) /* inline chunks are not on a backend */
        return 0;
    json_t *c = json_object_get(m->seen, h); /* [references, size, fastsum] */
    if (c)
        json_array_set_new(c, 0, json_integer(json_integer_value(json_array_get(c, 0)) + 1));
    else
        json_object_set_new(m->seen, h, json_pack("[i, I, s]", 1, jint(ch, "n"), jstr(ch, "x")));
    return 0;
}

typedef struct {
    mig *m;
    const char *hash;
    mb_err *err;
} del_ctx;

static int del_old(void *ud)
{
    del_ctx *d = ud;
    return blob_del_placed(d->m->from_local ? NULL : &d->m->from, d->hash, d->err);
}

/* The old copy of chunk hash goes if this node has no reference to it but the store's (refs of
 * them) and no write holds it, under the commit lock and the pending lock as the collector deletes:
 * 0 deleted (or gone already), 1 kept. */
static int drop_old(mig *m, const char *hash, json_int_t refs)
{
    char ck[80];
    snprintf(ck, sizeof ck, "c/%s", hash);
    json_t *rec = NULL;
    mb_err e = {0};
    int d = 1;
    txn_lock();
    if (db_get_json(ck, &rec) == 0 && jint(rec, "refs") <= refs) {
        del_ctx dc = {m, hash, &e};
        d = blob_pending_unheld(hash, del_old, &dc);
        d = d == MB_ENOENT ? 0 : d; /* gone already */
    }
    txn_unlock();
    json_decref(rec);
    if (d < 0)
        log_warn("store %llu: the old copy of chunk %.12s… is kept: %s", (unsigned long long)m->sid, hash, e.msg);
    return d ? 1 : 0;
}

typedef struct {
    mig *m;
    const json_t *batch;
} spare_ctx;

static int drop_spared(const char *hash, void *ud)
{
    spare_ctx *c = ud;
    return drop_old(c->m, hash, json_integer_value(json_object_get(c->batch, hash)));
}

/* The old copies of a batch ({hash: the store's references}) go where nothing else needs them. On a
 * backend other nodes may share (cluster mode), they are asked too: a chunk is one object there for
 * every store of every node that wrote it. A batch they cannot be asked about is kept whole. */
static int drop_batch(mig *m, const json_t *batch, bool shared)
{
    const char *h;
    json_t *n;
    json_int_t deleted = 0;
    if (shared) {
        spare_ctx c = {m, batch};
        mb_err e = {0};
        const migrate_cluster *mc = atomic_load(&mcl);
        int rc = mc ? mc->spare(m->sid, batch, drop_spared, &c, &e)
                    : err_set(&e, MB_EBUSY, "the cluster is not started, or it stops");
        if (rc < 0)
            log_warn("store %llu: %zu old copies are kept: the other nodes could not say whether they need them (%s)",
                     (unsigned long long)m->sid, json_object_size(batch), e.msg);
        deleted = rc < 0 ? 0 : rc;
    } else
        json_object_foreach((json_t *)batch, h, n) deleted += drop_old(m, h, json_integer_value(n)) == 0;
    add(m, "deleted", deleted);
    add(m, "kept", (json_int_t)json_object_size(batch) - deleted);
    return tell(m, "deleting the old copies");
}

/* The record written again as it is: a change of the store like any other, handed on to its replica
 * in commit order (cluster_repl.c) and acknowledged once the replica has it, so once it is every
 * change before it is there too. The replica's refcounts are then no lower than the store's
 * references the walk before it counted, when the other nodes are asked about the old copies. */
static int same_edit(json_t *rec, void *ud, mb_err *err)
{
    (void)rec, (void)ud, (void)err;
    return 0;
}

/* 3. The old copies nothing else needs go. */
static int clean(mig *m)
{
    json_object_clear(m->seen);
    walk(m, count_ref, NULL); /* counted again on every run: a resumed clean deletes again, harmlessly */
    bool shared = !m->from_local && cluster_enabled();
    int rc = shared ? record_edit(m->sid, same_edit, NULL, m->err) : 0;
    const char *h;
    json_t *c, *batch = json_object();
    json_object_foreach(m->seen, h, c) {
        if (rc)
            break;
        mb_err e = {0};
        /* Never the last copy: the new placement holds it whole first (a chunk the copy phase
         * could not see, or could not copy, is copied now or keeps its old copy). */
        int d = blob_copy_placed(m->from_local ? NULL : &m->from, m->to_local ? NULL : &m->to, h,
                                 json_string_value(json_array_get(c, 2)),
                                 (size_t)json_integer_value(json_array_get(c, 1)), &e);
        if (d < 0) {
            log_warn("store %llu: the old copy of chunk %.12s… is kept: %s", (unsigned long long)m->sid, h, e.msg);
            add(m, "kept", 1);
            continue;
        }
        if (d == 0)
            add(m, "copied", 1);
        /* Onto this node's disk: the replica's disk has to hold it too before the shared copy it
         * read until now may go (a takeover reads the store from the replica's own disk). */
        const migrate_cluster *mc = shared && m->to_local ? atomic_load(&mcl) : NULL;
        if (shared && m->to_local &&
            (mc ? mc->to_replica(m->sid, h, (size_t)json_integer_value(json_array_get(c, 1)), &e)
                : err_set(&e, MB_EBUSY, "the cluster is not started, or it stops"))) {
            log_warn("store %llu: the old copy of chunk %.12s… is kept: the store's replica did not take it (%s)",
                     (unsigned long long)m->sid, h, e.msg);
            add(m, "kept", 1);
            continue;
        }
        json_object_set(batch, h, json_array_get(c, 0));
        if (json_object_size(batch) >= MIGRATE_SPARE_BATCH) {
            rc = drop_batch(m, batch, shared);
            json_object_clear(batch);
        }
    }
    if (!rc && json_object_size(batch))
        rc = drop_batch(m, batch, shared);
    json_decref(batch);
    return rc;
}

static int end_edit(json_t *rec, void *ud, mb_err *err)
{
    (void)ud, (void)err;
    json_object_del(rec, "migrating");
    return 0;
}

/* A cancel: back to where the store was, the chunks written meanwhile copied back. */
static int turn_edit(json_t *rec, void *ud, mb_err *err)
{
    (void)ud, (void)err;
    json_t *mig = json_object_get(rec, "migrating");
    json_t *from = json_incref(json_object_get(mig, "from"));
    json_t *to = json_object_get(rec, "placement");
    json_object_set(mig, "from", to ? to : json_object());
    json_object_set_new(mig, "task", json_integer(0));
    json_object_set_new(rec, "placement", from);
    set_backend_name(rec);
    return 0;
}

/* Turn store sid's migration round and queue the task that goes back (owned by uid): its id, or
 * 0 when that failed (the migration then stays as it is, and goes on at the next start). */
static uint64_t turn_back(uint64_t sid, uint64_t uid)
{
    mb_err e = {0};
    uint64_t back = 0;
    if (record_edit(sid, turn_edit, NULL, &e) || start_task(sid, uid, &back, &e)) {
        log_error("store %llu: its cancelled migration could not be turned back: %s", (unsigned long long)sid, e.msg);
        return 0;
    }
    log_info("store %llu: migration cancelled; it goes back (task %llu)", (unsigned long long)sid,
             (unsigned long long)back);
    return back;
}

static int run_phases(mig *m, json_t *rec)
{
    /* 1: on the local disk (NULL to blob.c), 0: entered; a backend whose module is away is
     * waited for (the task's retries), its chunks being unreadable meanwhile */
    int frc = backend_for_placement(m->sid, json_object_get(json_object_get(rec, "migrating"), "from"), &m->from,
                                    m->err);
    if (frc < 0)
        return frc;
    int trc = backend_for_placement(m->sid, json_object_get(rec, "placement"), &m->to, m->err);
    if (trc < 0) {
        if (frc == 0)
            backend_leave(&m->from);
        return trc;
    }
    m->from_local = frc == 1;
    m->to_local = trc == 1;
    int rc = 0;
    if (!str_or_null(m->st, "phase")) { /* a first run */
        walk(m, count_one, NULL);
        json_object_set_new(m->st, "phase", json_string("copy"));
        save(m);
    }
    else
        log_info("store %llu: migration resumes (%s phase, after %s)", (unsigned long long)m->sid,
                 jstr(m->st, "phase"), str_or_null(m->st, "after") ? jstr(m->st, "after") : "the start");
    if (!strcmp(jstr(m->st, "phase"), "copy") && !(rc = wait_writes(m)) && !(rc = walk(m, copy_one, "copied"))) {
        /* what was written meanwhile was walked too: the total is what was gone through */
        json_object_set_new(m->st, "total", json_integer(jint(m->st, "done")));
        json_object_set_new(m->st, "phase", json_string("clean"));
        json_object_del(m->st, "after");
        save(m);
    }
    if (!rc && !strcmp(jstr(m->st, "phase"), "clean"))
        rc = clean(m);
    if (frc == 0)
        backend_leave(&m->from);
    if (trc == 0)
        backend_leave(&m->to);
    return rc;
}

static int run(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    mig m = {.task = task, .sid = (uint64_t)jint(args, "store"), .err = err, .seen = json_object()};
    char a[17], key[32];
    key_u64(a, m.sid);
    snprintf(m.prefix, sizeof m.prefix, "f/%s/", a);
    id_key(m.key, sizeof m.key, "mg", task_id(task));
    id_key(key, sizeof key, "s", m.sid);
    json_t *rec = NULL;
    if (db_get_json(key, &rec) || !json_object_get(rec, "migrating")) { /* deleted, or nothing left to do */
        json_decref(rec);
        json_decref(m.seen);
        task_result(task, json_pack("{s:I, s:b}", "store", (json_int_t)m.sid, "moved", 0));
        db_del(m.key, strlen(m.key), false);
        return 0;
    }
    if (db_get_json(m.key, &m.st) || !json_is_object(m.st)) {
        json_decref(m.st);
        m.st = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "done", (json_int_t)0, "total", (json_int_t)0, "copied",
                         (json_int_t)0, "missing", (json_int_t)0, "deleted", (json_int_t)0, "kept", (json_int_t)0);
    }
    int rc = run_phases(&m, rec);
    json_t *from = backend_placement_norm(json_object_get(json_object_get(rec, "migrating"), "from"));
    json_t *to = backend_placement_norm(json_object_get(rec, "placement"));
    if (rc == MB_ECANCELED) {
        uint64_t back = turn_back(m.sid, task_owner(task));
        if (back)
            err_set(err, MB_ECANCELED, "cancelled; the store goes back to its placement before (task %llu)",
                    (unsigned long long)back);
        db_del(m.key, strlen(m.key), false);
    } else if (rc == 0 && (rc = record_edit(m.sid, end_edit, NULL, err)) == 0) {
        json_t *res = json_pack("{s:I, s:O, s:O}", "store", (json_int_t)m.sid, "from", from, "to", to);
        json_object_update(res, m.st);
        json_object_del(res, "after");
        json_object_del(res, "phase");
        task_result(task, res);
        char msg[160];
        snprintf(msg, sizeof msg, "moved: %lld chunks, %lld copied, %lld old copies deleted",
                 (long long)jint(m.st, "total"), (long long)jint(m.st, "copied"), (long long)jint(m.st, "deleted"));
        task_progress(task, 100, msg);
        db_del(m.key, strlen(m.key), false);
        log_info("store %llu: migration done (%s)", (unsigned long long)m.sid, msg);
    } else
        save(&m);
    json_decref(from);
    json_decref(to);
    json_decref(rec);
    json_decref(m.st);
    json_decref(m.seen);
    return rc;
}

/* ------------------------------------------------------------------ start --- */

typedef struct {
    uint64_t task, sid, by; /* in: the task; out: its store and who asked */
} task_store;

static void match_task(const char *k, size_t kl, json_t *rec, void *ud)
{
    (void)k, (void)kl;
    task_store *ts = ud;
    json_t *mg = json_object_get(rec, "migrating");
    if (mg && (uint64_t)jint(mg, "task") == ts->task) {
        ts->sid = (uint64_t)jint(rec, "id");
        ts->by = (uint64_t)jint(mg, "by");
    }
}

/* A migration cancelled before it ran (task_cancel of a queued task does not call run): turned
 * round on a pool thread, not under the task queue's lock that told us. */
static void cancelled_work(void *arg)
{
    task_store ts = {.task = *(uint64_t *)arg};
    db_each_json("s/", match_task, &ts);
    if (ts.sid)
        turn_back(ts.sid, ts.by);
}

static void cancelled_done(void *arg) { free(arg); }

static void on_task(const char *event, const json_t *p, void *state)
{
    (void)event, (void)state;
    if (strcmp(jstr(p, "type"), TASK_TYPE) || strcmp(jstr(p, "state"), "cancelled"))
        return;
    uint64_t *id = xmalloc(sizeof *id);
    *id = (uint64_t)jint(p, "id");
    mb_err e = {0};
    if (pool_run(NULL, cancelled_work, cancelled_done, id, &e)) {
        log_error("task %llu: a cancelled migration cannot be turned back now (%s); it is at the next start",
                  (unsigned long long)*id, e.msg);
        free(id);
    }
}

/* Store record rec has a migration without a live task: [sid, by, cancelled] into todo. */
static void unfinished(const char *k, size_t kl, json_t *rec, void *todo)
{
    (void)k, (void)kl;
    json_t *mg = json_object_get(rec, "migrating");
    if (mg && !task_live((uint64_t)jint(mg, "task")))
        json_array_append_new(todo, json_pack("[I, I, b]", jint(rec, "id"), jint(mg, "by"),
                                              task_cancelled((uint64_t)jint(mg, "task"))));
}

/* Drop the notes of ended tasks; give a migration whose task is gone (failed for good, or never
 * queued) a new one, and turn one cancelled before it ran round. */
static void sweep(void)
{
    task_notes_sweep("mg/");
    json_t *todo = json_array();
    db_each_json("s/", unfinished, todo);
    size_t i;
    json_t *t;
    json_array_foreach(todo, i, t) {
        uint64_t sid = (uint64_t)json_integer_value(json_array_get(t, 0)), task = 0;
        uint64_t by = (uint64_t)json_integer_value(json_array_get(t, 1));
        mb_err e = {0};
        if (json_is_true(json_array_get(t, 2)))
            turn_back(sid, by);
        else if (start_task(sid, by, &task, &e))
            log_error("store %llu: its migration could not be queued again: %s", (unsigned long long)sid, e.msg);
        else
            log_info("store %llu: its unfinished migration goes on (task %llu)", (unsigned long long)sid,
                     (unsigned long long)task);
    }
    json_decref(todo);
}

int migrate_init(mb_err *err)
{
    static const mb_task_type type = {.size = sizeof type, .name = TASK_TYPE, .run = run, .max_attempts = 50};
    int rc = task_type_add(NULL, &type, NULL, err);
    if (!rc)
        rc = hook_listen("task.update", on_task, NULL, err);
    if (!rc)
        sweep();
    return rc;
}
