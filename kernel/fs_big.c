/*
 * fs_big.c — recursive delete, purge and copy of big subtrees (issue 27; docs/storage.md "Big
 * folders"): in bounded batches, driven by a journal, as the kernel task "kernel.subtree".
 *
 * A subtree of more than `subtree_task_above` entries (mbyte.yaml) is not changed in one batch
 * (whose memory would grow with the subtree). Instead the request's own transaction makes the
 * outcome visible at once and records what is left to do:
 *   sj/<id16>  {"v":1,"id","op":"delete"|"purge"|"copy","store","owner","user","root","path",
 *               copy only: "src","dst","name","dir","from","to","top"}
 * - delete / purge: the folder's entry (or its trash record) goes in that transaction, so
 *   nobody sees a half-deleted folder; its subtree keeps hanging off the folder's id (`root`),
 *   unreachable, and the task frees it `subtree_batch` entries per transaction, children
 *   before their folder, so whatever a crash leaves is still reachable from `root`. The last
 *   batch deletes the journal.
 * - copy: the task builds the copy below a new folder id (`root`) that nothing names yet,
 *   a folder's entry before its children; the last transaction names it (`top` at `name` in
 *   folder `dst`) and deletes the journal. A resumed copy first frees what an interrupted run
 *   built below `root` and starts over, so a copy is either complete or absent.
 * Cancel (POST /api/v1/tasks/{id}/cancel): a copy is given up, as if it never was: the journal
 *   is marked "cancelled" first (a stop midway then resumes the freeing, not the copy), what
 *   was built is freed, the journal goes, and the task ends "cancelled". A delete or purge has
 *   already happened for everyone; a cancel cannot bring it back, so its cleanup finishes and
 *   the task ends "done".
 * At start every journal gets a task (fs_big_init): an unfinished operation is finished. Its
 * task's id is kept beside it (sjt/<id16> -> the id, written after the submit): a copy whose
 * task was cancelled while still queued (it never ran, so it never marked its journal) is
 * marked cancelled at the next start and given up there, not done.
 * A task whose journal is gone has nothing to do (two tasks of one journal, the one requeued
 * from before a crash and the one start submitted, run one after the other: `busy`).
 *
 * Threads: task workers and the callers of fs_delete/fs_copy/history_purge (a copy asked for
 * without a task runs its batches on the caller's thread). `busy_mu` protects `busy`; each
 * batch is a transaction (the commit lock, txn.h), held for one batch only.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_TYPE "kernel.subtree"
#define BUSY_MAX 64

static pthread_mutex_t busy_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t busy[BUSY_MAX];

static bool busy_take(uint64_t jid)
{
    pthread_mutex_lock(&busy_mu);
    int free_slot = -1;
    bool there = false;
    for (int i = 0; i < BUSY_MAX; i++) {
        there |= busy[i] == jid;
        if (!busy[i] && free_slot < 0)
            free_slot = i;
    }
    bool ok = !there && free_slot >= 0;
    if (ok)
        busy[free_slot] = jid;
    pthread_mutex_unlock(&busy_mu);
    return ok;
}

static void busy_drop(uint64_t jid)
{
    pthread_mutex_lock(&busy_mu);
    for (int i = 0; i < BUSY_MAX; i++)
        if (busy[i] == jid)
            busy[i] = 0;
    pthread_mutex_unlock(&busy_mu);
}

static void jkey(char *out, size_t n, uint64_t jid)
{
    id_key(out, n, "sj", jid);
}

static void tkey(char *out, size_t n, uint64_t jid)
{
    id_key(out, n, "sjt", jid);
}

static int count_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    (void)pid, (void)name, (void)e, (void)rel;
    int64_t *c = ud;
    return ++c[0] > c[1]; /* stop once past the limit */
}

/* Entries below folder id, counted up to limit + 1 (limit < 0: all). */
static int64_t subtree_count(uint64_t sid, uint64_t id, int64_t limit)
{
    int64_t c[2] = {0, limit < 0 ? INT64_MAX : limit};
    ns_walk_ids(sid, id, "", 0, count_cb, c);
    return c[0];
}

bool fs_big_over(uint64_t sid, uint64_t id)
{
    return subtree_count(sid, id, g_cfg->subtree_task_above) > g_cfg->subtree_task_above;
}

uint64_t fs_big_journal(txn *t, json_t *rec)
{
    uint64_t jid = ns_new_id();
    char key[32];
    jkey(key, sizeof key, jid);
    json_object_set_new(rec, "v", json_integer(1));
    json_object_set_new(rec, "id", json_integer((json_int_t)jid));
    db_batch_put_json(t->b, key, rec);
    json_decref(rec);
    return jid;
}

/* ------------------------------------------------------------- batches --- */

typedef struct {
    txn t;
    bool open;
    size_t n;
    int64_t done, total;
    mb_task *task;
    const char *what;
    mb_err *err;
    bool finish_on_cancel; /* a delete's cleanup, a cancelled copy's freeing: a cancel does not stop it */
} batcher;

static txn *bt(batcher *b)
{
    if (!b->open) {
        txn_begin(&b->t, NULL);
        b->open = true;
    }
    return &b->t;
}

/* Commit the open batch and tell the progress. A task the kernel wants back (shutdown,
 * unload) stops after a batch: the journal stays, and the next run finishes the work. A
 * cancel stops it too (MB_ECANCELED), unless the work finishes whatever it is asked. */
static int bflush(batcher *b)
{
    if (!b->open)
        return 0;
    b->open = false;
    b->n = 0;
    int rc = txn_end(&b->t, 0, b->err, b->what);
    if (!rc && b->task) {
        char msg[96];
        snprintf(msg, sizeof msg, "%lld of %lld entries", (long long)b->done, (long long)b->total);
        int pct = b->total ? (int)(b->done * 99 / b->total) : 0;
        if (task_progress(b->task, pct, msg)) {
            if (task_must_yield(b->task))
                rc = err_set(b->err, MB_EAGAIN, "stopped after %lld entries; it resumes", (long long)b->done);
            else if (!b->finish_on_cancel)
                rc = err_set(b->err, MB_ECANCELED, "cancelled after %lld entries", (long long)b->done);
        }
    }
    ns_trim((size_t)g_cfg->subtree_batch);
    return rc;
}

static int bcount(batcher *b)
{
    b->done++;
    return ++b->n >= (size_t)g_cfg->subtree_batch ? bflush(b) : 0;
}

/* ------------------------------------------------------------- freeing --- */

typedef struct {
    batcher *b;
    uint64_t sid, pid;
    const char *path;
    ns_drop_fn fn; /* each file's versions, usage and event */
    fs_who *who;
} reclaim;

static int reclaim_folder(reclaim *r, uint64_t id, const char *path);

static int reclaim_cb(const char *name, json_t *e, void *ud)
{
    reclaim *r = ud;
    char *full = ns_join(r->path, name);
    int rc = 0;
    if (ns_is_folder(e)) /* children first: what a crash leaves stays reachable from root */
        rc = reclaim_folder(r, (uint64_t)jint(e, "id"), full);
    if (!rc) {
        txn *t = bt(r->b);
        char key[NS_KEYMAX];
        ns_dkey(key, sizeof key, r->sid, r->pid, name);
        db_batch_del(t->b, key, strlen(key));
        if (!ns_is_folder(e))
            r->fn(t, e, full, r->who);
        rc = bcount(r->b);
    }
    free(full);
    return rc;
}

static int reclaim_folder(reclaim *r, uint64_t id, const char *path)
{
    reclaim sub = *r;
    sub.pid = id;
    sub.path = path;
    return ns_children_each(r->sid, id, NULL, 0, reclaim_cb, &sub, NULL);
}

/* A copy's partial files go without events: nobody ever saw them. */
static void quiet_drop(txn *t, json_t *e, const char *path, void *ud)
{
    (void)path;
    fs_who *w = ud;
    ns_drop_versions(t, w->sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
    txn_usage(t, w->sid, -jint(e, "size"), -1);
}

/* -------------------------------------------------------------- copying --- */

typedef struct {
    batcher *b;
    uint64_t sid, dst;
    fs_who *who;
    int64_t now;
} copier;

static int copy_folder(copier *c, uint64_t src, uint64_t dst);

static int copy_cb(const char *name, json_t *e, void *ud)
{
    copier *c = ud;
    txn *t = bt(c->b);
    json_t *ne = NULL;
    uint64_t nid = 0;
    int rc = 0;
    if (ns_is_folder(e))
        ne = ns_folder_record(nid = ns_new_id(), c->who->uid, c->now);
    else
        rc = fs_copy_file_into(t, c->sid, e, c->who->uid, c->now, &ne, c->b->err);
    if (!rc) {
        char key[NS_KEYMAX];
        ns_dkey(key, sizeof key, c->sid, c->dst, name);
        db_batch_put_json(t->b, key, ne);
        rc = bcount(c->b); /* a folder's entry before its children (pre-order) */
    }
    json_decref(ne);
    if (!rc && nid)
        rc = copy_folder(c, (uint64_t)jint(e, "id"), nid);
    return rc;
}

static int copy_folder(copier *c, uint64_t src, uint64_t dst)
{
    copier sub = *c;
    sub.dst = dst;
    return ns_children_each(c->sid, src, NULL, 0, copy_cb, &sub, NULL);
}

/* ----------------------------------------------------------- one journal --- */

/* Free what a copy built below its root and delete its journal: the copy goes as if it never
 * was. Nothing stops it but the kernel wanting the worker back (it then resumes). */
static int drop_copy(batcher *b, json_t *j)
{
    fs_who w = {(uint64_t)jint(j, "store"), (uint64_t)jint(j, "owner"), (uint64_t)jint(j, "user")};
    reclaim r = {b, w.sid, 0, "", quiet_drop, &w};
    b->finish_on_cancel = true;
    int rc = reclaim_folder(&r, (uint64_t)jint(j, "root"), "");
    if (!rc) {
        char key[32];
        jkey(key, sizeof key, (uint64_t)jint(j, "id"));
        db_batch_del(bt(b)->b, key, strlen(key));
        rc = bflush(b);
    }
    return rc;
}

/* A cancelled copy: marked so in its journal, then dropped; the task ends "cancelled". */
static int cancel_copy(batcher *b, json_t *j, mb_err *err)
{
    if (b->open) {
        mb_err ig = {0};
        txn_end(&b->t, MB_ECANCELED, &ig, NULL);
        b->open = false;
    }
    if (!json_is_true(json_object_get(j, "cancelled"))) {
        char key[32];
        jkey(key, sizeof key, (uint64_t)jint(j, "id"));
        json_object_set_new(j, "cancelled", json_true());
        int rc = db_put_json(key, j, true);
        if (rc)
            return err_set(err, rc, "the cancelled copy could not be marked so; it resumes");
    }
    if (b->task)
        task_progress(b->task, 0, "cancelled: freeing what was copied");
    b->done = 0;
    int rc = drop_copy(b, j);
    return rc ? rc : err_set(err, MB_ECANCELED, "cancelled; nothing of the copy is left");
}

/* Free what is below the journal's root, then end: for a copy, name it (or, when that
 * became impossible, free it and fail); delete the journal in the last transaction. */
static int finish(batcher *b, json_t *j, mb_err *err)
{
    uint64_t sid = (uint64_t)jint(j, "store"), jid = (uint64_t)jint(j, "id");
    const char *op = jstr(j, "op");
    char key[NS_KEYMAX];
    int rc = 0;
    txn *t = bt(b);
    if (!strcmp(op, "copy")) {
        uint64_t dst;
        mb_err ig = {0};
        json_t *there = NULL;
        const char *name = jstr(j, "name");
        if (ns_folder_id(sid, jstr(j, "dir"), &dst, &ig) || dst != (uint64_t)jint(j, "dst"))
            rc = err_set(err, MB_ECONFLICT, "the folder '%s' went away during the copy", jstr(j, "dir"));
        else if (ns_entry_get(sid, dst, name, &there) == 0)
            rc = err_set(err, MB_EEXIST, "'%s' was created during the copy", jstr(j, "to"));
        json_decref(there);
        if (!rc) {
            ns_dkey(key, sizeof key, sid, dst, name);
            db_batch_put_json(t->b, key, json_object_get(j, "top"));
            hook_emit_batch(t->b, "folder.copied",
                            json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                      jint(j, "owner"), "from", jstr(j, "from"), "to", jstr(j, "to"), "type", "folder",
                                      "id", jint(j, "root"), "user", jint(j, "user")));
        }
    }
    if (!rc) {
        jkey(key, sizeof key, jid);
        db_batch_del(t->b, key, strlen(key));
        b->open = false;
        return txn_end(&b->t, 0, err, b->what);
    }
    /* The copy cannot be named: it goes as if it never was. */
    mb_err ig = {0};
    txn_end(&b->t, rc, &ig, NULL);
    b->open = false;
    int r2 = drop_copy(b, j);
    return r2 ? r2 : rc;
}

static int job_run(uint64_t jid, mb_task *task, mb_err *err)
{
    char key[32];
    jkey(key, sizeof key, jid);
    json_t *j;
    if (db_get_json(key, &j)) {
        if (task)
            task_progress(task, 100, "finished already");
        return 0; /* done by another run */
    }
    uint64_t sid = (uint64_t)jint(j, "store"), root = (uint64_t)jint(j, "root");
    const char *op = jstr(j, "op");
    bool copy = !strcmp(op, "copy");
    fs_who w = {sid, (uint64_t)jint(j, "owner"), (uint64_t)jint(j, "user")};
    batcher b = {.task = task, .err = err, .what = copy ? "a batch of the copy" : "a batch of the delete"};
    int rc = 0;
    if (task)
        task_progress(task, 0, "counting");
    if (copy && json_is_true(json_object_get(j, "cancelled"))) { /* stopped while being dropped */
        b.total = subtree_count(sid, root, -1);
        rc = cancel_copy(&b, j, err);
    } else if (copy) {
        b.total = subtree_count(sid, (uint64_t)jint(j, "src"), -1);
        reclaim r = {&b, sid, 0, "", quiet_drop, &w}; /* what an interrupted run built */
        copier c = {&b, sid, root, &w, now_wall()};
        if (!(rc = reclaim_folder(&r, root, "")) && !(rc = bflush(&b))) {
            b.done = 0;
            rc = copy_folder(&c, (uint64_t)jint(j, "src"), root);
        }
        if (rc == MB_ECANCELED)
            rc = cancel_copy(&b, j, err);
    } else {
        b.total = subtree_count(sid, root, -1);
        b.finish_on_cancel = true; /* it happened for everyone already: the cleanup finishes */
        reclaim r = {&b, sid, 0, "", !strcmp(op, "purge") ? history_file_purged : fs_file_deleted, &w};
        rc = reclaim_folder(&r, root, jstr(j, "path"));
    }
    if (!rc)
        rc = finish(&b, j, err);
    else if (b.open) {
        mb_err ig = {0};
        txn_end(&b.t, rc, &ig, NULL);
    }
    if (!rc && task) {
        task_result(task, json_pack("{s:s, s:s, s:I}", "op", op, "path", jstr(j, copy ? "to" : "path"), "entries",
                                    (json_int_t)b.done));
        task_progress(task, 100, "done");
    }
    ns_trim(NS_TRIM_AFTER);
    json_decref(j);
    return rc;
}

static int run_one(uint64_t jid, mb_task *task, mb_err *err)
{
    if (!busy_take(jid))
        return err_set(err, MB_EAGAIN, "another run of this operation is under way");
    int rc = job_run(jid, task, err);
    busy_drop(jid);
    return rc;
}

static int run_task(mb_task *t, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    return run_one((uint64_t)jint(args, "journal"), t, err);
}

int fs_big_start(uint64_t jid, uint64_t uid, uint64_t *task, bool here, mb_err *err)
{
    if (here)
        return run_one(jid, NULL, err);
    uint64_t tid;
    int rc = task_submit(TASK_TYPE, uid, json_pack("{s:I}", "journal", (json_int_t)jid), &tid, err);
    if (rc) { /* the change is done for the user; the next start frees the rest */
        log_error("subtree journal %llu: %s", (unsigned long long)jid, err->msg);
        return 0;
    }
    char key[32], v[24];
    tkey(key, sizeof key, jid);
    snprintf(v, sizeof v, "%llu", (unsigned long long)tid);
    db_put(key, strlen(key), v, strlen(v), false); /* lost in a crash: the copy is done, as before */
    if (task)
        *task = tid;
    return 0;
}

/* A copy whose last task was cancelled before it ran: marked cancelled, so its run frees what
 * is there (nothing, or what an earlier run built) instead of copying. At start only. */
static void cancelled_while_queued(json_t *j)
{
    char key[32], *v = NULL;
    uint64_t jid = (uint64_t)jint(j, "id");
    tkey(key, sizeof key, jid);
    if (strcmp(jstr(j, "op"), "copy") || json_is_true(json_object_get(j, "cancelled")) ||
        db_get(key, strlen(key), &v, NULL))
        return;
    json_t *t = NULL;
    if (task_get(strtoull(v, NULL, 10), &t) == 0 && !strcmp(jstr(t, "state") ? jstr(t, "state") : "", "cancelled")) {
        jkey(key, sizeof key, jid);
        json_object_set_new(j, "cancelled", json_true());
        if (db_put_json(key, j, true) == 0)
            log_info("the copy to '%s' was cancelled before it ran: it is given up", jstr(j, "to"));
    }
    json_decref(t);
    free(v);
}

int fs_big_init(mb_err *err)
{
    static const mb_task_type type = {.size = sizeof type, .name = TASK_TYPE, .run = run_task, .max_attempts = 1000};
    int rc = task_type_add(NULL, &type, NULL, err);
    if (rc)
        return rc;
    db_iter *it = db_iter_prefix("sj/", 3);
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *j = json_loadb(v, vl, 0, NULL);
        if (j) {
            mb_err e = {0};
            cancelled_while_queued(j);
            if (!json_is_true(json_object_get(j, "cancelled")))
                log_info("resuming the unfinished %s of '%s'", jstr(j, "op"), jstr(j, jstr(j, "to") ? "to" : "path"));
            fs_big_start((uint64_t)jint(j, "id"), (uint64_t)jint(j, "user"), NULL, false, &e);
        }
        json_decref(j);
    }
    db_iter_free(it);
    /* task ids of journals that are gone (sjt/ is written after the submit, so it can outlive
     * a quick journal) */
    it = db_iter_prefix("sjt/", 4);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char jk[40], *v = NULL;
        snprintf(jk, sizeof jk, "sj/%.*s", (int)(kl - 4), k + 4);
        if (db_get(jk, strlen(jk), &v, NULL))
            db_del(k, kl, false);
        free(v);
    }
    db_iter_free(it);
    return 0;
}
