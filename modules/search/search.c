/*
 * modules/search — full-text search over names and contents (issue 17, docs/search.md).
 *
 * How a change reaches the index, and why a crash loses nothing:
 *   1. A batched observer (ABI minor 6) turns each file event into a queue entry
 *      "q/<seq16>" = {"s": store, "p": path} put into the dispatcher turn's write, the same
 *      LevelDB write that deletes the event from the outbox: after kill -9 either the event
 *      comes again or its queue entry is there.
 *   2. A worker thread this module owns drains the queue in key order. An entry means
 *      "make the index agree with the namespace at this path": the path is looked up as the
 *      system; a file is extracted (plain text in this thread by extract.c, every other kind by
 *      mbyte-extractd, a server that forks a worker with limits per file: run_extractor) and
 *      written to the store's SQLite index unless its sha256 and mtime are what the index
 *      holds already; a folder is walked and
 *      compared; a missing path is removed with everything under it. The entry is deleted
 *      only after the SQLite commit returned (synchronous=FULL), so an entry that disappears
 *      was applied. Entries are idempotent and need no order.
 *   3. At start (and after a reload) the worker first reconciles every store from its root,
 *      which catches up with what changed while the module was not loaded (an event nobody
 *      observes is not recorded), drops the indexes of stores that are gone, and fills an
 *      index that was missing or found corrupt (index.c moves a damaged file aside).
 *
 * Threads: observers and done on the loop thread (they only add to the batch and wake the
 * worker); the worker thread; rebuild tasks on the pool; route handlers on HTTP workers.
 * `mu` protects the table of open indexes, the worker's wake flag, `stop`, the extractor's path
 * and the extractor servers' slots (`kids`: a thread takes a slot, busy, for one file and alone
 * uses its pipes; fini kills every server pid); each open index has its own mutex held around
 * every SQLite call on it (extraction runs outside any lock).
 * `seq` and `turn_items` belong to the loop thread.
 */
#include "mbyte.h"
#include "qread.h"
#include "search.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEARCH_VERSION "1.0.0"
#define BATCH_DOCS 32
#define PAGE 1000 /* a folder's entries, and indexed paths, looked at per step */

static int64_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ------------------------------------------------------------ indexes --- */

static void index_file_name(search *s, uint64_t sid, char *out, size_t n)
{
    snprintf(out, n, "%s/%llu.db", s->dir, (unsigned long long)sid);
}

/* The slot of store sid, its mutex held and its database open; NULL with err on failure.
 * Release with slot_release. */
index_slot *slot_take(search *s, uint64_t sid, mb_err *err)
{
    pthread_mutex_lock(&s->mu);
    index_slot *x = s->slots;
    while (x && x->sid != sid)
        x = x->next;
    if (!x && (x = calloc(1, sizeof *x))) {
        x->sid = sid;
        pthread_mutex_init(&x->mu, NULL);
        x->next = s->slots;
        s->slots = x;
    }
    pthread_mutex_unlock(&s->mu);
    if (!x) {
        s->api->err_set(err, MB_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&x->mu);
    if (!x->db) {
        char file[1100], why[300];
        bool rebuilt = false;
        index_file_name(s, sid, file, sizeof file);
        if (si_open(file, &x->db, &rebuilt, why, sizeof why)) {
            pthread_mutex_unlock(&x->mu);
            s->api->err_set(err, MB_EIO, "%s", why);
            return NULL;
        }
        if (rebuilt)
            s->api->log(s->self, MB_LOG_WARN, "the index of store %llu was damaged: kept aside as %s.corrupt, rebuilding it",
                        (unsigned long long)sid, file);
    }
    return x;
}

void slot_release(index_slot *x) { pthread_mutex_unlock(&x->mu); }

/* Close and delete store sid's index (the store is gone, or a rebuild starts anew). */
static void slot_drop(search *s, uint64_t sid)
{
    mb_err e;
    index_slot *x = slot_take(s, sid, &e);
    if (x) {
        si_close(x->db);
        x->db = NULL;
    }
    char file[1100], f[1200];
    index_file_name(s, sid, file, sizeof file);
    unlink(file);
    snprintf(f, sizeof f, "%s-wal", file);
    unlink(f);
    snprintf(f, sizeof f, "%s-shm", file);
    unlink(f);
    if (x)
        slot_release(x);
}

/* ----------------------------------------------------------- indexing --- */

typedef struct pending {
    char *path, *name, *ctype, *sha256, *text, *reason;
    const char *kind, *status;
    int64_t size, mtime;
    bool remove;
} pending;

typedef struct writer {
    search *s;
    uint64_t sid;
    pending docs[BATCH_DOCS];
    int n;
    int64_t done; /* files looked at, for progress */
    mb_task *task;
    int64_t total;
    bool cancelled;
    bool failed; /* a transaction of this writer's failed: the queue entries it served stay */
} writer;

static void pending_free(pending *p)
{
    free(p->path), free(p->name), free(p->ctype), free(p->sha256), free(p->text), free(p->reason);
    memset(p, 0, sizeof *p);
}

/* search.extracted {"store","path","sha256"} for each document just written with text, so the
 * tags module runs its rules again with file.text (issue 19). The event waits in the durable
 * outbox like every event; a lost one only means a rule did not see the text. */
static void announce_text(writer *w)
{
    for (int i = 0; i < w->n; i++) {
        pending *p = &w->docs[i];
        mb_err e;
        if (!p->remove && p->text && *p->text && p->status && !strcmp(p->status, "ok"))
            w->s->api->hook_emit("search.extracted",
                                 json_pack("{s:I, s:s, s:s?}", "store", (json_int_t)w->sid, "path", p->path, "sha256",
                                           p->sha256),
                                 &e);
    }
}

/* The service "search.text" {"store","path","max"} -> {"text","sha256"} (ABI 2.1 module services):
 * a file's extracted text for the tags module's rules. MB_ENOENT when there is none (yet). */
static int s_text(const json_t *arg, json_t **out, void *state, mb_err *err)
{
    search *s = state;
    int64_t max = jint(arg, "max");
    const char *path = jstr(arg, "path");
    if (!path || max <= 0)
        return s->api->err_set(err, MB_EINVAL, "search.text takes {\"store\",\"path\",\"max\"}");
    index_slot *x = slot_take(s, (uint64_t)jint(arg, "store"), err);
    if (!x)
        return err->code;
    char *text = NULL, sha[65] = "";
    int rc = si_text(x->db, path + strspn(path, "/"), (size_t)max, &text, sha);
    slot_release(x);
    if (rc <= 0)
        return s->api->err_set(err, rc ? MB_EIO : MB_ENOENT, "no extracted text for %s", path);
    *out = json_pack("{s:s, s:s}", "text", text, "sha256", sha);
    free(text);
    return *out ? 0 : s->api->err_set(err, MB_EINVAL, "the text of %s is not UTF-8", path);
}

/* Write what is pending in one transaction. */
static int flush_docs(writer *w, mb_err *err)
{
    if (!w->n)
        return 0;
    index_slot *x = slot_take(w->s, w->sid, err);
    int rc = x ? 0 : err->code;
    if (x) {
        rc = si_begin(x->db);
        for (int i = 0; i < w->n && !rc; i++) {
            pending *p = &w->docs[i];
            if (p->remove)
                rc = si_remove(x->db, p->path);
            else {
                si_doc d = {.path = p->path, .name = p->name, .kind = p->kind, .ctype = p->ctype, .sha256 = p->sha256,
                            .size = p->size, .mtime = p->mtime, .body = p->text, .status = p->status,
                            .reason = p->reason};
                rc = si_put(x->db, &d);
            }
        }
        if (!rc)
            rc = si_commit(x->db);
        else
            si_rollback(x->db);
        slot_release(x);
        if (!rc)
            announce_text(w);
        if (rc)
            rc = w->s->api->err_set(err, MB_EIO, "writing the index of store %llu failed",
                                    (unsigned long long)w->sid);
    }
    if (rc)
        w->failed = true;
    for (int i = 0; i < w->n; i++)
        pending_free(&w->docs[i]);
    w->n = 0;
    return rc;
}

static pending *next_slot(writer *w, mb_err *err)
{
    if (w->n == BATCH_DOCS && flush_docs(w, err))
        return NULL;
    return &w->docs[w->n++];
}

static int queue_remove(writer *w, const char *path, mb_err *err)
{
    pending *p = next_slot(w, err);
    if (!p)
        return err->code;
    p->path = strdup(path);
    p->remove = true;
    return 0;
}

static const char *last_name(const char *path)
{
    const char *sl = strrchr(path, '/');
    return sl ? sl + 1 : path;
}

/* Read the file (at most max_file_bytes) and extract its text into p: plain text here, every
 * other kind through mbyte-extractd. Failures are recorded on the document (status failed,
 * reason), never returned: one bad file never stops a queue. Returns MB_ECANCELED only when
 * the module is stopping (p must then not be written). */
static int extract_into(search *s, uint64_t sid, const char *path, pending *p)
{
    const mb_api *api = s->api;
    mb_file_reader *r = NULL;
    json_t *info = NULL;
    mb_err e = {0};
    p->status = "ok";
    p->kind = sx_kind(p->name, p->ctype);
    if (p->size > s->max_file_bytes) {
        p->status = "skipped";
        char why[160];
        snprintf(why, sizeof why, "larger than %lld bytes: only the name is indexed", (long long)s->max_file_bytes);
        p->reason = strdup(why);
        return 0;
    }
    if (api->file_open(NULL, sid, path, 0, &r, &info, &e)) {
        p->status = "failed";
        p->reason = strdup(e.msg);
        return 0;
    }
    /* the version opened is the one described: take its identity from the reader */
    free(p->sha256);
    p->sha256 = strdup(jstr(info, "sha256") ? jstr(info, "sha256") : "");
    p->size = jint(info, "size");
    p->mtime = jint(info, "mtime");
    json_decref(info);
    size_t want = (size_t)(p->size < s->max_file_bytes ? p->size : s->max_file_bytes), got = 0;
    unsigned char *buf = malloc(want + 1);
    while (buf && got < want) {
        int64_t n = api->file_read(r, got, buf + got, want - got, &e);
        if (n <= 0) {
            if (n < 0) {
                p->status = "failed";
                p->reason = strdup(e.msg);
            }
            break;
        }
        got += (size_t)n;
    }
    api->file_close(r);
    if (!buf) {
        p->status = "failed";
        p->reason = strdup("out of memory reading the file");
        return 0;
    }
    int rc = 0;
    if (!p->reason) {
        sx_result x;
        const char *kind = sx_content_kind(buf, got, p->kind);
        rc = sx_in_process(kind)
                 ? sx_extract_text(kind, buf, got, (size_t)s->max_text_bytes, (double)s->extract_seconds, &x)
                 : xr_extract(&s->xr, kind, buf, got, s->max_text_bytes, s->extract_seconds, &x);
        if (rc == MB_ECANCELED) {
            free(buf);
            return rc;
        }
        if (rc) {
            p->status = "failed";
            p->reason = strdup(x.reason);
            rc = 0;
        } else {
            p->text = x.text;
            if (*x.reason)
                p->reason = strdup(x.reason); /* indexed, with a note (cut at the limit) */
        }
        p->kind = x.kind;
    }
    free(buf);
    return rc;
}

/* Index the file described by `info` (a listing entry or stat) at path, unless the index
 * holds this version already. */
static int index_file(writer *w, const char *path, const json_t *info, mb_err *err)
{
    search *s = w->s;
    const char *sha = jstr(info, "sha256");
    int64_t mtime = jint(info, "mtime");
    char have[65] = "";
    int64_t have_mtime = 0;
    int found = 0;
    index_slot *x = slot_take(s, w->sid, err);
    if (!x)
        return err->code;
    found = si_get(x->db, path, have, &have_mtime);
    slot_release(x);
    if (found == 1 && sha && !strcmp(have, sha) && have_mtime == mtime)
        return 0;
    for (int i = 0; i < w->n; i++)
        if (!w->docs[i].remove && !strcmp(w->docs[i].path, path))
            return 0; /* already pending in this batch */
    pending *p = next_slot(w, err);
    if (!p)
        return err->code;
    p->path = strdup(path);
    p->name = strdup(last_name(path));
    p->ctype = strdup(jstr(info, "ctype") ? jstr(info, "ctype") : "");
    p->sha256 = strdup(sha ? sha : "");
    p->size = jint(info, "size");
    p->mtime = mtime;
    if (extract_into(s, w->sid, path, p) == MB_ECANCELED) { /* unloading: this file stays for the next copy */
        pending_free(p);
        w->n--;
        w->cancelled = true;
        return s->api->err_set(err, MB_ECANCELED, "cancelled");
    }
    return 0;
}

/* A folder is a document too (issue 17: folders are hits): its name, kind "folder", no
 * body, no hash. Written again only when its mtime changed. The store's root is not one. */
static int index_folder(writer *w, const char *path, const json_t *info, mb_err *err)
{
    if (!*path)
        return 0;
    int64_t mtime = jint(info, "mtime") ? jint(info, "mtime") : jint(info, "created");
    char have[65] = "";
    int64_t have_mtime = 0;
    index_slot *x = slot_take(w->s, w->sid, err);
    if (!x)
        return err->code;
    int found = si_get(x->db, path, have, &have_mtime);
    slot_release(x);
    if (found == 1 && !*have && have_mtime == mtime)
        return 0;
    for (int i = 0; i < w->n; i++)
        if (!w->docs[i].remove && !strcmp(w->docs[i].path, path))
            return 0;
    pending *p = next_slot(w, err);
    if (!p)
        return err->code;
    p->path = strdup(path);
    p->name = strdup(last_name(path));
    p->ctype = strdup("");
    p->sha256 = strdup("");
    p->kind = "folder";
    p->status = "ok";
    p->mtime = mtime;
    return 0;
}

static bool is_file(const json_t *info) { return !strcmp(jstr(info, "type") ? jstr(info, "type") : "", "file"); }

static bool progress(writer *w)
{
    w->done++;
    if (w->task && (w->done % 16) == 0) {
        int pct = w->total ? (int)(w->done * 100 / w->total) : 0;
        if (w->s->api->task_progress(w->task, pct > 99 ? 99 : pct, "indexing"))
            w->cancelled = true;
    }
    pthread_mutex_lock(&w->s->mu);
    if (w->s->stop) /* unload or shutdown: what is left of this entry is done by the next copy */
        w->cancelled = true;
    pthread_mutex_unlock(&w->s->mu);
    return w->cancelled;
}

typedef struct walk_ctx {
    writer *w;
    mb_err *err;
    bool failed; /* an entry failed, err says why */
} walk_ctx;

static int walk_entry(const json_t *en, void *ud)
{
    walk_ctx *c = ud;
    if (progress(c->w))
        return MB_ECANCELED;
    const char *full = jstr(en, "path") ? jstr(en, "path") : ""; /* the full path */
    int rc = is_file(en) ? index_file(c->w, full, en, c->err) : index_folder(c->w, full, en, c->err);
    c->failed = rc != 0;
    return rc;
}

/* Index every entry of the store's subtree at folder `path`, walked a page at a time (folder_walk):
 * memory follows the depth of the tree, not its size (issue 27: the whole recursive listing of a
 * restored folder of 100,000 files took 130 MB). */
static int walk_folder(writer *w, const char *path, mb_err *err)
{
    const mb_api *api = w->s->api;
    json_t *first = NULL;
    mb_err e = {0};
    if (w->task && !w->total && api->folder_page(NULL, w->sid, path, NULL, 1, &first, &e) == 0)
        w->total = jint(first, "total"); /* the folder's own entries: progress is a guess past them */
    json_decref(first);
    walk_ctx c = {w, err, false};
    int rc = api->folder_walk(NULL, w->sid, path, walk_entry, &c, &e);
    if (!c.failed && ((rc == MB_ECANCELED && w->cancelled) || rc == MB_ENOENT || rc == MB_ECONFLICT))
        return 0; /* stopping (the caller sees w->cancelled), or gone meanwhile: its own event follows */
    if (rc && !c.failed)
        *err = e; /* the walk's own failure */
    return rc;
}

typedef struct stale {
    char *paths[PAGE];
    int n;
} stale;

static void stale_add(const char *path, void *ud)
{
    stale *c = ud;
    if (c->n < PAGE)
        c->paths[c->n++] = strdup(path);
}

/* Every indexed path under `path` that the store no longer shows (checked now, not a moment
 * ago) is removed, a page of PAGE paths at a time (read first: removing writes the index). */
static int drop_stale(writer *w, const char *path, mb_err *err)
{
    stale *c = calloc(1, sizeof *c);
    char *last = strdup("");
    int rc = c && last ? 0 : w->s->api->err_set(err, MB_ENOMEM, "out of memory");
    for (int got = PAGE; !rc && got == PAGE && !w->cancelled;) {
        index_slot *x = slot_take(w->s, w->sid, err);
        if (!x) {
            rc = err->code;
            break;
        }
        got = si_paths_after(x->db, path, last, PAGE, stale_add, c);
        slot_release(x);
        for (int i = 0; i < c->n; i++) {
            json_t *now = NULL;
            mb_err e;
            if (!c->paths[i])
                rc = w->s->api->err_set(err, MB_ENOMEM, "out of memory");
            else if (!rc && w->s->api->file_stat(NULL, w->sid, c->paths[i], &now, &e) == MB_ENOENT)
                rc = queue_remove(w, c->paths[i], err);
            json_decref(now);
            if (i == c->n - 1 && c->paths[i]) /* the next page starts after it */
                free(last), last = c->paths[i];
            else
                free(c->paths[i]);
        }
        c->n = 0;
    }
    free(last);
    free(c);
    return rc;
}

/* Make the index of store sid agree with the namespace at path (see the top of the file). */
static int reconcile(writer *w, const char *path, mb_err *err)
{
    search *s = w->s;
    const mb_api *api = s->api;
    json_t *info = NULL, *st = NULL;
    mb_err e = {0};
    if (api->store_get(NULL, w->sid, &st, &e) == MB_ENOENT) {
        for (int i = 0; i < w->n; i++) /* what earlier entries left pending for it is moot */
            pending_free(&w->docs[i]);
        w->n = 0;
        slot_drop(s, w->sid); /* the store is gone (or being deleted): so is its index */
        return 0;
    }
    json_decref(st);
    int rc = api->file_stat(NULL, w->sid, path, &info, &e);
    if (rc == MB_ENOENT)
        return queue_remove(w, path, err);
    if (rc) {
        *err = e;
        return rc;
    }
    if (is_file(info)) {
        rc = index_file(w, path, info, err);
        progress(w);
    } else if (!(rc = index_folder(w, path, info, err)))
        rc = walk_folder(w, path, err);
    /* indexed but gone: what a removal's own event has not taken yet, or what was under a
     * folder that became a file */
    if (!rc)
        rc = drop_stale(w, path, err);
    json_decref(info);
    return rc;
}

/* Reconcile path in store sid and write everything: the one entry point for the worker and
 * for rebuild tasks. */
static writer *writer_new(search *s, uint64_t sid, mb_task *task, mb_err *err)
{
    writer *w = calloc(1, sizeof *w);
    if (!w)
        s->api->err_set(err, MB_ENOMEM, "out of memory");
    else
        w->s = s, w->sid = sid, w->task = task;
    return w;
}

/* What is pending written, the writer freed: 0 when every transaction it made was committed. */
static int writer_end(writer *w, mb_err *err)
{
    int rc = flush_docs(w, err);
    if (!rc && w->failed)
        rc = w->s->api->err_set(err, MB_EIO, "writing the index of store %llu failed", (unsigned long long)w->sid);
    free(w);
    return rc;
}

/* One path of one store made true in its index (the reindex task, the catch-up). */
static int apply(search *s, uint64_t sid, const char *path, mb_task *task, mb_err *err)
{
    writer *w = writer_new(s, sid, task, err);
    if (!w)
        return err->code;
    int rc = reconcile(w, path, err);
    bool cancelled = w->cancelled;
    int frc = writer_end(w, rc ? &(mb_err){0} : err);
    if (!rc)
        rc = frc;
    if (!rc && cancelled)
        rc = s->api->err_set(err, MB_ECANCELED, "cancelled");
    return rc;
}

/* -------------------------------------------------------------- worker --- */

typedef struct qitem {
    char key[40];
    uint64_t sid;
    char *path;
} qitem;

typedef struct qscan {
    qitem items[256];
    int n;
} qscan;

static int queue_fn(const char *key, const void *value, size_t len, void *ud)
{
    qscan *q = ud;
    json_t *v = json_loadb(value, len, 0, NULL);
    qitem *it = &q->items[q->n];
    snprintf(it->key, sizeof it->key, "%s", key);
    it->sid = (uint64_t)jint(v, "s");
    it->path = strdup(jstr(v, "p") ? jstr(v, "p") : "");
    json_decref(v);
    q->n++;
    return q->n == 256;
}

static bool stopping(search *s)
{
    pthread_mutex_lock(&s->mu);
    bool st = s->stop;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* Every store from its root; indexes of stores that no longer exist are deleted. */
static void catch_up(search *s)
{
    json_t *stores = NULL;
    mb_err e = {0};
    if (s->api->store_list_all(0, &stores, &e)) {
        s->api->log(s->self, MB_LOG_WARN, "cannot list the stores to catch up: %s", e.msg);
        return;
    }
    size_t i;
    json_t *st;
    json_array_foreach(stores, i, st) {
        const char *state = jstr(st, "state");
        if (stopping(s) || (state && strcmp(state, "ready")))
            continue;
        uint64_t sid = (uint64_t)jint(st, "id");
        if (apply(s, sid, "", NULL, &e) && e.code != MB_ECANCELED)
            s->api->log(s->self, MB_LOG_WARN, "catching up store %llu failed: %s", (unsigned long long)sid, e.msg);
    }
    json_decref(stores);
}

/* Entries q->items[from, to) applied through *w: what they wrote is committed, then they leave the
 * queue (not before: a crash in between applies them again, which changes nothing). False when a
 * transaction failed: they stay, and the worker comes back to them. */
static bool commit_entries(search *s, writer **w, const qscan *q, int from, int to)
{
    mb_err e = {0};
    uint64_t sid = *w ? (*w)->sid : 0;
    int rc = *w ? writer_end(*w, &e) : 0;
    *w = NULL;
    if (rc) {
        s->api->log(s->self, MB_LOG_WARN, "indexing store %llu failed (retried later): %s", (unsigned long long)sid,
                    e.msg);
        return false;
    }
    for (int k = from; k < to; k++)
        s->api->kv_del(s->self, q->items[k].key, false, &e);
    return true;
}

/* One pass over up to 256 queue entries. The entries of one store share a writer, so a burst of
 * uploads is indexed in transactions of BATCH_DOCS documents (one fsync each), not one a file.
 * False when some stay in the queue (stopping, or a failure retried later). */
static bool drain(search *s, const qscan *q)
{
    writer *w = NULL;
    int from = 0, i; /* q->items[from, i) are applied through w and not yet committed */
    mb_err e = {0};
    for (i = 0; i < q->n && !stopping(s); i++) {
        const qitem *it = &q->items[i];
        if (w && w->sid != it->sid) {
            if (!commit_entries(s, &w, q, from, i))
                return false;
            from = i;
        }
        bool dup = false; /* the same path twice in one pass: one reconcile serves both */
        for (int j = 0; j < i && !dup; j++)
            dup = q->items[j].sid == it->sid && !strcmp(q->items[j].path, it->path);
        if (dup)
            continue;
        if (!sf_kept_here(s->api, it->sid)) { /* kept elsewhere now (moved, taken over): indexed there */
            if (w && !commit_entries(s, &w, q, from, i))
                return false;
            s->api->kv_del(s->self, it->key, false, &e);
            from = i + 1;
            continue;
        }
        if (!w && !(w = writer_new(s, it->sid, NULL, &e)))
            break;
        int rc = reconcile(w, it->path, &e);
        if (!rc && w->cancelled)
            rc = MB_ECANCELED;
        if (rc == MB_ECANCELED)
            break; /* stopping: the entry stays for the next copy */
        if (rc == MB_EIO || rc == MB_EBUSY || rc == MB_ENOMEM || rc == MB_EAGAIN) {
            s->api->log(s->self, MB_LOG_WARN, "indexing %s in store %llu failed (retried later): %s", it->path,
                        (unsigned long long)it->sid, e.msg);
            break; /* the index or the machine is in trouble: the same entry again in 2 s */
        }
        if (rc) /* this entry can never apply (a path the kernel refuses): it must not stop the queue */
            s->api->log(s->self, MB_LOG_WARN, "indexing %s in store %llu failed, dropped: %s", it->path,
                        (unsigned long long)it->sid, e.msg);
    }
    return commit_entries(s, &w, q, from, i) && i == q->n;
}

static void *worker_main(void *arg)
{
    search *s = arg;
    catch_up(s);
    atomic_store(&s->catching_up, false);
    qread rd; /* where the last read of q/ stopped (modules/qread.h); the keys only grow */
    qread_init(&rd);
    while (!stopping(s)) {
        qscan *q = calloc(1, sizeof *q);
        if (q) {
            qread_scan(s->api, s->self, &rd, "q/", queue_fn, q);
            if (!drain(s, q))
                qread_wrote(&rd, NULL); /* what it left is behind the reader: from the front next */
        }
        int n = q ? q->n : 0;
        for (int i = 0; q && i < q->n; i++)
            free(q->items[i].path);
        free(q);
        pthread_mutex_lock(&s->mu);
        if (n > 0 && n < 256) /* ahead of the uploads: let a few gather (modules/qread.h) */
            qread_pace(&s->cv, &s->mu, &s->stop);
        else if (!s->stop && !s->wake && n < 256) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 2;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        s->wake = false;
        pthread_mutex_unlock(&s->mu);
    }
    qread_fini(&rd);
    return NULL;
}

/* ------------------------------------------------------------ observers --- */

static void enqueue(search *s, mb_batch *b, uint64_t sid, const char *path)
{
    uint64_t t = now_us();
    s->seq = t > s->seq ? t : s->seq + 1;
    char key[40];
    snprintf(key, sizeof key, "q/%016llx", (unsigned long long)s->seq);
    json_t *v = json_pack("{s:I, s:s}", "s", (json_int_t)sid, "p", path ? path : "");
    char *txt = json_dumps(v, JSON_COMPACT);
    mb_err e;
    if (txt && s->api->batch_put(b, s->self, key, txt, strlen(txt), &e))
        s->api->log(s->self, MB_LOG_ERROR, "cannot queue %s for indexing: %s", path ? path : "", e.msg);
    free(txt);
    json_decref(v);
    s->turn_items++;
}

/* Every event that changes which files exist where or what they hold. */
static void o_file(const char *event, const json_t *p, mb_batch *b, void *state)
{
    search *s = state;
    uint64_t sid = (uint64_t)jint(p, "store");
    if (!sid)
        return;
    if (!strcmp(event, "file.moved") || !strcmp(event, "folder.moved")) {
        enqueue(s, b, sid, jstr(p, "from"));
        enqueue(s, b, sid, jstr(p, "to"));
    } else if (!strcmp(event, "file.copied") || !strcmp(event, "folder.copied"))
        enqueue(s, b, sid, jstr(p, "to"));
    else if (!strcmp(event, "store.deleted") || !strcmp(event, "cluster.store"))
        enqueue(s, b, sid, ""); /* the whole store: gone, or kept here now (taken over, moved here) */
    else if (!json_is_true(json_object_get(p, "from_trash"))) /* a purge: its path is the trash's */
        enqueue(s, b, sid, jstr(p, "path"));
}

static void o_done(int status, void *state)
{
    search *s = state;
    if (!status && s->turn_items) {
        pthread_mutex_lock(&s->mu);
        s->wake = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    s->turn_items = 0;
}

/* -------------------------------------------------------------- routes --- */
/* GET /api/v1/search is find.c's (sf_search). */

typedef struct qcount {
    uint64_t sid;
    int64_t n;
} qcount;

static int count_fn(const char *key, const void *value, size_t len, void *ud)
{
    (void)key;
    qcount *c = ud;
    json_t *v = json_loadb(value, len, 0, NULL);
    if ((uint64_t)jint(v, "s") == c->sid)
        c->n++;
    json_decref(v);
    return 0;
}

static void failure_fn(const char *path, const char *reason, void *ud)
{
    json_array_append_new(ud, json_pack("{s:s, s:s}", "path", path, "reason", reason));
}

/* GET /api/v1/search/status -> {"stores":[{"store","name","indexed","queued","failed","skipped","failures"}]} */
static int h_status(mb_req *req, void *state, mb_err *err)
{
    search *s = state;
    const mb_api *api = s->api;
    const mb_user *u = api->req_user(req);
    json_t *stores = NULL;
    int rc = u->role == MB_ROLE_ADMIN ? api->store_list_all(0, &stores, err) : api->store_list(u, &stores, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    size_t i;
    json_t *st;
    json_array_foreach(stores, i, st) {
        const char *state_ = jstr(st, "state");
        if (state_ && strcmp(state_, "ready"))
            continue;
        uint64_t sid = (uint64_t)jint(st, "id");
        int64_t ok = 0, failed = 0, skipped = 0;
        json_t *fails = json_array();
        index_slot *x = slot_take(s, sid, err);
        if (!x) {
            json_decref(fails);
            json_decref(arr);
            json_decref(stores);
            return err->code;
        }
        si_counts(x->db, &ok, &failed, &skipped);
        si_failures(x->db, 20, failure_fn, fails);
        slot_release(x);
        qcount c = {sid, 0};
        mb_err e;
        api->kv_scan(s->self, "q/", count_fn, &c, &e);
        json_array_append_new(arr, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:o}", "store", (json_int_t)sid, "name",
                                             jstr(st, "name") ? jstr(st, "name") : "", "indexed",
                                             (json_int_t)(ok + skipped + failed), "queued", (json_int_t)c.n, "failed",
                                             (json_int_t)failed, "skipped", (json_int_t)skipped, "failures", fails));
    }
    json_decref(stores);
    return api->reply_json(req, 200,
                           json_pack("{s:o, s:b}", "stores", arr, "catching_up", atomic_load(&s->catching_up)));
}

/* POST /api/v1/admin/search/rebuild {"store"?} -> 202 {"task"} */
static int h_rebuild(mb_req *req, void *state, mb_err *err)
{
    search *s = state;
    const mb_api *api = s->api;
    json_t *body = NULL;
    const void *raw;
    size_t len = 0;
    api->req_body(req, &raw, &len);
    if (len && !(body = api->req_json(req, err)))
        return err->code;
    json_t *sv = json_object_get(body, "store");
    json_t *args = json_object();
    if (sv && !json_is_null(sv)) {
        json_t *st = NULL;
        if (!json_is_integer(sv) || json_integer_value(sv) <= 0 ||
            api->store_get(NULL, (uint64_t)json_integer_value(sv), &st, err)) {
            json_decref(args);
            return api->err_set(err, MB_ENOENT, "store: no such store");
        }
        json_decref(st);
        json_object_set(args, "store", sv);
    }
    uint64_t id = 0;
    int rc = api->task_submit("search.rebuild", api->req_user(req)->id, args, &id, err);
    if (rc)
        return rc;
    return api->reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)id));
}

/* --------------------------------------------------------------- tasks --- */

/* search.rebuild {store?}: each index dropped and filled again from the namespace. */
static int t_rebuild(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    search *s = state;
    const mb_api *api = s->api;
    json_t *stores = NULL;
    uint64_t only = (uint64_t)jint(args, "store");
    int rc = api->store_list_all(0, &stores, err);
    if (rc)
        return rc;
    size_t i;
    json_t *st;
    int done = 0;
    json_array_foreach(stores, i, st) {
        uint64_t sid = (uint64_t)jint(st, "id");
        const char *state_ = jstr(st, "state");
        if ((only && sid != only) || (state_ && strcmp(state_, "ready")))
            continue;
        slot_drop(s, sid);
        if ((rc = apply(s, sid, "", task, err)))
            break;
        done++;
    }
    json_decref(stores);
    if (rc)
        return rc;
    api->task_progress(task, 100, "done");
    api->task_result(task, json_pack("{s:i}", "stores", done));
    return 0;
}

/* ------------------------------------------------------- init and fini --- */

static int read_config(search *s, const json_t *c)
{
    s->max_file_bytes = jint(c, "max_file_mb") * 1024 * 1024;
    s->max_text_bytes = jint(c, "max_text_kb") * 1024;
    s->extract_seconds = jint(c, "extract_seconds");
    s->rank_newest = (int)jint(c, "rank_newest");
    s->xr.as_mb = jint(c, "extractor_memory_mb");
    const char *x = jstr(c, "extractor");
    if (x && *x)
        snprintf(s->xr.prog, sizeof s->xr.prog, "%s", x);
    else /* beside the modules (build dir and install dir alike) */
        snprintf(s->xr.prog, sizeof s->xr.prog, "%s/mbyte-extractd", s->api->module_dir());
    return 0;
}

static int last_key_fn(const char *key, const void *value, size_t len, void *ud)
{
    (void)value, (void)len;
    uint64_t *seq = ud, v = strtoull(key + 2, NULL, 16);
    if (v > *seq)
        *seq = v;
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    search *s = calloc(1, sizeof *s);
    if (!s)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    s->self = self;
    s->api = api;
    read_config(s, config);
    if (access(s->xr.prog, X_OK)) {
        int rc = api->err_set(err, MB_EIO, "the extractor %s is missing: %s", s->xr.prog, strerror(errno));
        free(s);
        return rc;
    }
    snprintf(s->dir, sizeof s->dir, "%s/m", api->data_dir());
    mkdir(s->dir, 0700);
    snprintf(s->dir, sizeof s->dir, "%s/m/search", api->data_dir());
    if (mkdir(s->dir, 0700) && errno != EEXIST) {
        int e = errno;
        free(s);
        return api->err_set(err, MB_EIO, "cannot make %s/m/search: %s", api->data_dir(), strerror(e));
    }
    char tmp[1100], why[1300];
    snprintf(tmp, sizeof tmp, "%s/tmp", s->dir);
    if (xr_init(&s->xr, &s->mu, &s->stop, tmp, why, sizeof why)) {
        free(s);
        return api->err_set(err, MB_EIO, "%s", why);
    }
    api->kv_scan(self, "q/", last_key_fn, &s->seq, err);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->catching_up, true);
    s->worker_on = pthread_create(&s->worker, NULL, worker_main, s) == 0;
    if (!s->worker_on) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return api->err_set(err, MB_ENOMEM, "cannot start the indexing thread");
    }
    api->service_set(self, "search.text", s_text, s, err); /* names nobody else offers */
    api->service_set(self, "search.query", sf_query_service, s, err);
    *state = s;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    search *s = state;
    mb_err e;
    s->api->service_set(s->self, "search.text", NULL, NULL, &e); /* waits for calls in flight */
    s->api->service_set(s->self, "search.query", NULL, NULL, &e);
    pthread_mutex_lock(&s->mu);
    s->stop = true; /* from here no extractor server starts (sp_start checks it under mu) */
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    xr_kill(&s->xr); /* the file being extracted stays queued for the next copy */
    pthread_join(s->worker, NULL); /* an unload never waits for an extraction */
    xr_fini(&s->xr); /* the servers: reaped, their pipes closed */
    for (index_slot *x = s->slots, *nx; x; x = nx) {
        nx = x->next;
        si_close(x->db);
        pthread_mutex_destroy(&x->mu);
        free(x);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    return 0;
}

/* Limits only: the worker reads them between files. */
static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    search *s = state;
    pthread_mutex_lock(&s->mu);
    read_config(s, config);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "max_file_mb", MB_CFG_INT, "64", 1, 4096},
    {sizeof(mb_config_key), "max_text_kb", MB_CFG_INT, "2048", 16, 65536},
    {sizeof(mb_config_key), "extract_seconds", MB_CFG_INT, "10", 1, 600},
    {sizeof(mb_config_key), "rank_newest", MB_CFG_INT, "1000", 0, 1000000},
    {sizeof(mb_config_key), "extractor_memory_mb", MB_CFG_INT, "1024", 128, 16384},
    {sizeof(mb_config_key), "extractor", MB_CFG_STRING, "\"\"", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/search", MB_ROLE_USER, sf_search},
    {sizeof(mb_route), "GET", "/api/v1/search/status", MB_ROLE_USER, h_status},
    {sizeof(mb_route), "POST", "/api/v1/admin/search/rebuild", MB_ROLE_ADMIN, h_rebuild},
    {0},
};

#define OBSERVE(ev) {sizeof(mb_hook), ev, MB_HOOK_OBSERVER, 500, NULL, NULL, o_file, NULL, o_done}
static const mb_hook hooks[] = {
    OBSERVE("file.created"),  OBSERVE("file.updated"),  OBSERVE("file.deleted"),  OBSERVE("folder.deleted"),
    OBSERVE("file.moved"),    OBSERVE("folder.moved"),  OBSERVE("file.copied"),   OBSERVE("folder.copied"),
    OBSERVE("file.trashed"),  OBSERVE("file.restored"), OBSERVE("store.deleted"), OBSERVE("folder.created"),
    OBSERVE("cluster.store"),
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "search.rebuild", t_rebuild, 2},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "search",
    .version = SEARCH_VERSION,
    .description = "Full-text search over names and contents (SQLite FTS5), indexed live from file events",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
