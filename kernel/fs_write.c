/*
 * fs_write.c — the write pipeline (fs.h: fs_write_begin/data/commit/abort): every door's
 * upload (HTTP PUT, tus, FTP STOR, modules) becomes a file version here.
 *
 * Write order (DESIGN.md): chunks are cut (chunker.c) and written durably while the body
 * streams in (blob.c; small ones ride in the commit batch instead); then one transaction
 * (txn.c) commits the version, the refcounts, the directory entry, the usage and the outbox
 * event, durable by group commit when txn_end returns; only then does the caller reply. A
 * crash before the commit leaves the old file and some orphan chunks (collected after the
 * grace, gc.c); after it, the new file. Filters (file.write, file.write.chunk: quotas,
 * limits) run at begin with the announced length and at every chunk.
 *
 * Threads: a writer belongs to one caller thread at a time. A big upload also has a store
 * thread of its own (store_main) that hashes, writes and syncs its chunk files in order while
 * the caller cuts the next ones; fs_writer says which fields each side owns. Nothing is locked
 * while the body streams; the commit takes the commit lock (txn_begin).
 */
#include "fs.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_BYTES 8192
#define WBUF_CAP (2 * CHUNK_MAX)
/* Chunk files of one upload are stored by ST_THREADS threads. Each chunk file waits for its
 * own fdatasync, its folder's creation and the fsync that makes its rename durable: journal
 * commits of a few ms each, one after the other, against well under 1 ms of hashing and
 * writing. One thread spent most of an upload waiting on them and the upload waited on its
 * queue (1.2-1.9 s of a 4 s GiB on the AMD guest); up to six in flight share the commits.
 * 1 GiB WebDAV PUT, release build, nine runs alternating with the one-thread build: 208 ->
 * 294 MB/s median (two threads: 247; eight: no better than six). Memory: up to ST_QUEUE +
 * ST_THREADS + 1 chunk buffers an upload, each touched as far as its chunk (1.2 MiB on
 * average, CHUNK_MAX at most), within one budget for all uploads (BUF_BUDGET below).
 * Threads start as chunks wait for one (store_chunk); a store on a module's backend keeps one. */
#define ST_THREADS 6
#define ST_QUEUE 2 /* chunks cut and waiting */
#define SPARE_MAX (ST_QUEUE + ST_THREADS) /* buffers kept for reuse */
/* Chunk buffers are counted across uploads: each may always have BUF_OWN of its own (one
 * stored while the next is queued), and more while all uploads together have fewer than
 * BUF_BUDGET. Past that an upload waits for one of its own to be stored, never for another
 * upload's, so it cannot wait in a circle. Without a budget every big upload kept up to nine
 * (about 20 MiB resident each: eight 256 MiB uploads at once peaked at 191 MiB). */
#define BUF_OWN 2
#define BUF_BUDGET 16
static atomic_int bufs_live; /* chunk buffers of every upload, spares included */

/* An inline chunk waiting for the commit: its bytes (a few KiB, at most chunk_inline_max). */
struct inl {
    struct inl *next;
    char hash[65];
    size_t n;
    uint8_t bytes[];
};

struct fs_writer {
    uint64_t sid, owner, uid;
    char *path; /* normalised */
    int flags;
    char expect[65], if_match[65];
    uint8_t *buf;
    size_t start, len, cap; /* unconsumed bytes are buf[start .. len); cap <= WBUF_CAP */
    EVP_MD_CTX *md;
    /* While the body is no longer than the smallest chunk it will be ONE chunk, whose SHA-256
     * is the file's: md is fed only once the body grows past that (a small upload then
     * hashes its bytes once, not twice), and whole_sha is that one digest. */
    bool md_lazy;
    char whole_sha[65];
    uint64_t total;
    int64_t expected;
    int64_t existing; /* size of the file this write replaces (0 if new), for quotas */
    json_t *chunks; /* [{"h","n"}] in order; each one is pending in blob.c */
    struct inl *inl, **inl_end; /* the inline chunks, put into the commit batch (blob.c) */
    /* The store threads of a big upload (started at its first chunk file): cut chunks queue
     * here and are hashed, written and synced there while the next bytes arrive and are cut
     * on the caller's thread. st_mu guards the queue, st_rc and `chunks` (the caller appends
     * a chunk's slot in order when it queues it, a store thread fills it in); `chunks` is the
     * caller's alone once st_finish returned or st_drain saw every thread idle. */
    pthread_t st[ST_THREADS];
    int st_n, st_max; /* threads started, and at most (ST_THREADS on the local backend, else 1) */
    pthread_mutex_t st_mu;
    pthread_cond_t st_cv;
    struct cjob *q_head, *q_tail;
    int q_len, st_busy;
    bool st_on, st_stop, st_abandon;
    int st_rc;
    mb_err st_err;
    uint8_t *spare[SPARE_MAX]; /* chunk buffers for reuse (buf_take) */
    int nspare;
    int nbuf; /* chunk buffers this upload has (in jobs and spare), counted in bufs_live */
    uint8_t head[HEAD_BYTES];
    size_t headlen;
};

static json_t *filter_payload(const fs_writer *w)
{
    return json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)w->sid, "owner", (json_int_t)w->owner, "path",
                     w->path, "user", (json_int_t)w->uid);
}

int fs_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                   const char *expect_sha256, int flags, fs_writer **out, mb_err *err)
{
    *out = NULL;
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, path, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    char *np = op.path;
    if (!*np) {
        free(np);
        return err_set(err, MB_EINVAL, "path: the root folder is not a file");
    }
    if (expect_sha256 && (strlen(expect_sha256) != 64 || strspn(expect_sha256, "0123456789abcdef") != 64)) {
        free(np);
        return err_set(err, MB_EINVAL, "the expected SHA-256 must be 64 lower-case hex digits");
    }
    /* Early checks, so a doomed upload is refused before its body is read; commit checks
     * again under the lock. */
    const char *name;
    char *dir = ns_parent_of(np, &name);
    uint64_t pid = 0;
    json_t *pe = NULL, *existing = NULL;
    if (*dir) {
        rc = ns_resolve(sid, dir, NULL, &pe, err);
        if (rc == MB_ENOENT && (flags & FS_PARENTS))
            rc = 0;
        else if (rc == MB_ENOENT)
            rc = err_set(err, MB_ECONFLICT, "the folder '%s' does not exist (create it, or use parents=true)", dir);
        else if (!rc && !ns_is_folder(pe))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a file, not a folder", dir);
        if (pe)
            pid = (uint64_t)jint(pe, "id");
    }
    if (!rc && (pe || !*dir) && ns_entry_get(sid, pid, name, &existing) == 0) {
        if (ns_is_folder(existing))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", np);
        else if (flags & FS_NO_OVERWRITE)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", np);
    }
    if (!rc && !existing)
        rc = ns_creatable(*dir && !pe ? dir : NULL, name, err);
    json_decref(pe);
    free(dir);
    fs_writer *w = NULL;
    if (!rc) {
        w = xcalloc(1, sizeof *w);
        w->sid = sid;
        w->owner = owner;
        w->uid = u ? u->id : 0;
        w->path = np;
        np = NULL;
        w->flags = flags;
        w->expected = expected_size;
        if (expect_sha256)
            memcpy(w->expect, expect_sha256, 65);
        w->existing = existing ? jint(existing, "size") : 0;
        if (hook_subscribed("file.write", MB_HOOK_FILTER)) {
            json_t *p = filter_payload(w);
            const char *guess = ctype_by_name(name);
            json_object_set_new(p, "size", json_integer(expected_size));
            json_object_set_new(p, "ctype", json_string(guess ? guess : "application/octet-stream"));
            json_object_set_new(p, "existing_size", json_integer(w->existing));
            json_object_set_new(p, "exists", json_boolean(existing != NULL));
            rc = hook_filter("file.write", p, err);
            json_decref(p);
        }
    }
    json_decref(existing);
    free(np);
    if (rc) {
        if (w) {
            free(w->path);
            free(w);
        }
        return rc;
    }
    w->cap = 64 * 1024; /* grows to WBUF_CAP only for bodies that need it */
    w->buf = xmalloc(w->cap);
    w->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
    w->md_lazy = true;
    w->chunks = json_array();
    *out = w;
    return 0;
}

void fs_write_if_match(fs_writer *w, const char *sha256)
{
    if (w && sha256)
        snprintf(w->if_match, sizeof w->if_match, "%s", sha256);
}

/* Hash and store one chunk of n bytes at p (a store thread's work for chunk files, which
 * fill in their `slot` of w->chunks under st_mu; the caller's for inline chunks, appended
 * with every store thread idle, which go into the commit batch). */
static int put_chunk(fs_writer *w, const uint8_t *p, size_t n, size_t slot, mb_err *err)
{
    char hex[65], fast[33];
    if (w->whole_sha[0] && n == w->total) { /* the whole file is this chunk: already hashed */
        memcpy(hex, w->whole_sha, sizeof hex);
    } else {
        uint8_t md[32];
        unsigned mdl = 0;
        EVP_Digest(p, n, md, &mdl, EVP_sha256(), NULL);
        hex_encode(md, 32, hex);
    }
    blob_fastsum(p, n, fast);
    /* Pending first, then store: see blob.c on why this order beats the collector. */
    blob_pending_add(hex);
    json_t *rec = json_pack("{s:s, s:I, s:s}", "h", hex, "n", (json_int_t)n, "x", fast);
    if (slot == SIZE_MAX) {
        json_array_append_new(w->chunks, rec);
    } else {
        pthread_mutex_lock(&w->st_mu);
        json_array_set_new(w->chunks, slot, rec);
        pthread_mutex_unlock(&w->st_mu);
    }
    if (n <= blob_inline_max()) {
        struct inl *c = xmalloc(sizeof *c + n);
        memcpy(c->hash, hex, sizeof c->hash);
        c->n = n;
        memcpy(c->bytes, p, n);
        c->next = NULL;
        if (!w->inl_end)
            w->inl_end = &w->inl;
        *w->inl_end = c;
        w->inl_end = &c->next;
        return 0;
    }
    return blob_put_store(w->sid, hex, p, n, err); /* to the store's backend (backend.c) */
}

typedef struct cjob {
    struct cjob *next;
    size_t n;
    size_t slot; /* its place in w->chunks */
    uint8_t *data; /* blob_buf_alloc: aligned for the local backend's O_DIRECT writes */
} cjob;

/* One more buffer within BUF_BUDGET. */
static bool budget_take(void)
{
    int n = atomic_load(&bufs_live);
    while (n < BUF_BUDGET)
        if (atomic_compare_exchange_weak(&bufs_live, &n, n + 1))
            return true;
    return false;
}

/* Chunk buffers (CHUNK_MAX each) are kept for the writer's next chunks: mapping and faulting
 * in fresh pages for every chunk cost more than hashing it. A new one only within the budget
 * (BUF_OWN, BUF_BUDGET); else this waits until a store thread has stored one of the upload's
 * own chunks (store_main broadcasts st_cv after each), or failed. */
static uint8_t *buf_take(fs_writer *w)
{
    uint8_t *p = NULL;
    pthread_mutex_lock(&w->st_mu);
    for (;;) {
        if (w->nspare) {
            p = w->spare[--w->nspare];
            break;
        }
        if (w->nbuf < BUF_OWN || w->st_rc) { /* a failed upload's caller frees it at once */
            atomic_fetch_add(&bufs_live, 1);
            break;
        }
        if (budget_take())
            break;
        pthread_cond_wait(&w->st_cv, &w->st_mu);
    }
    if (!p)
        w->nbuf++; /* counted in bufs_live above */
    pthread_mutex_unlock(&w->st_mu);
    return p ? p : blob_buf_alloc(CHUNK_MAX);
}

static void buf_release(fs_writer *w, uint8_t *p)
{
    blob_buf_free(p, CHUNK_MAX);
    w->nbuf--;
    atomic_fetch_sub(&bufs_live, 1);
}

static void cjob_free(fs_writer *w, cjob *j)
{
    pthread_mutex_lock(&w->st_mu);
    if (w->nspare < SPARE_MAX)
        w->spare[w->nspare++] = j->data;
    else
        buf_release(w, j->data);
    pthread_mutex_unlock(&w->st_mu);
    free(j);
}

static void *store_main(void *arg)
{
    fs_writer *w = arg;
    pthread_mutex_lock(&w->st_mu);
    for (;;) {
        while (!w->q_head && !w->st_stop)
            pthread_cond_wait(&w->st_cv, &w->st_mu);
        cjob *j = w->q_head;
        if (!j)
            break;
        w->q_head = j->next;
        if (!w->q_head)
            w->q_tail = NULL;
        w->q_len--;
        w->st_busy++;
        bool skip = w->st_rc || w->st_abandon;
        pthread_mutex_unlock(&w->st_mu);
        mb_err e = {0};
        int rc = skip ? 0 : put_chunk(w, j->data, j->n, j->slot, &e);
        cjob_free(w, j);
        pthread_mutex_lock(&w->st_mu);
        w->st_busy--;
        if (rc && !w->st_rc) {
            w->st_rc = rc;
            w->st_err = e;
        }
        pthread_cond_broadcast(&w->st_cv);
    }
    pthread_mutex_unlock(&w->st_mu);
    return NULL;
}

/* Wait until the store threads have stored everything queued; their first error, or 0. */
static int st_drain(fs_writer *w, mb_err *err)
{
    if (!w->st_on)
        return 0;
    pthread_mutex_lock(&w->st_mu);
    while ((w->q_head || w->st_busy) && !w->st_rc)
        pthread_cond_wait(&w->st_cv, &w->st_mu);
    int rc = w->st_rc;
    if (rc && err)
        *err = w->st_err;
    pthread_mutex_unlock(&w->st_mu);
    return rc;
}

/* Stop the store threads: after storing what is queued, or (abandon) dropping it. */
static void st_finish(fs_writer *w, bool abandon)
{
    if (!w->st_on)
        return;
    pthread_mutex_lock(&w->st_mu);
    w->st_stop = true;
    w->st_abandon = abandon;
    pthread_cond_broadcast(&w->st_cv);
    pthread_mutex_unlock(&w->st_mu);
    for (int i = 0; i < w->st_n; i++)
        pthread_join(w->st[i], NULL);
    w->st_on = false;
    while (w->nspare)
        buf_release(w, w->spare[--w->nspare]);
    pthread_mutex_destroy(&w->st_mu);
    pthread_cond_destroy(&w->st_cv);
}

/* One chunk cut from the body: the filters see it here, on the caller's thread; a chunk
 * file is then stored by the store thread (a copy of the bytes is queued), an inline one at
 * once. An error of the store thread is returned by a later call (or the commit). */
static int store_chunk(fs_writer *w, const uint8_t *p, size_t n, mb_err *err)
{
    int rc = 0;
    if (hook_subscribed("file.write.chunk", MB_HOOK_FILTER)) { /* no payload to build for nobody */
        json_t *fp = filter_payload(w);
        json_object_set_new(fp, "bytes", json_integer((json_int_t)(w->total)));
        json_object_set_new(fp, "size", json_integer(w->expected));
        json_object_set_new(fp, "existing_size", json_integer(w->existing));
        rc = hook_filter("file.write.chunk", fp, err);
        json_decref(fp);
        if (rc)
            return rc;
    }
    if (n <= blob_inline_max()) /* after the chunks before it: their order is the file's */
        return (rc = st_drain(w, err)) ? rc : put_chunk(w, p, n, SIZE_MAX, err);
    if (!w->st_on) {
        pthread_mutex_init(&w->st_mu, NULL);
        pthread_cond_init(&w->st_cv, NULL);
        w->st_stop = w->st_abandon = false;
        w->st_busy = 0;
        /* A module's backend (a bucket, a WebDAV server, a redundancy set) is one store thread
         * as before: its puts are round trips whose concurrency is the backend's to choose, and
         * six an upload crowded out a migration beside it (test_redundancy's SetMigrateTest
         * took 3 times as long). */
        w->st_max = backend_store_local(w->sid) ? ST_THREADS : 1;
        w->st_n = pthread_create(&w->st[0], NULL, store_main, w) == 0;
        if (!w->st_n) {
            pthread_mutex_destroy(&w->st_mu);
            pthread_cond_destroy(&w->st_cv);
            return put_chunk(w, p, n, SIZE_MAX, err); /* no thread: store it here */
        }
        w->st_on = true;
    }
    cjob *j = xmalloc(sizeof *j);
    j->next = NULL;
    j->n = n;
    j->data = buf_take(w);
    memcpy(j->data, p, n);
    pthread_mutex_lock(&w->st_mu);
    while (w->q_len >= ST_QUEUE && !w->st_rc)
        pthread_cond_wait(&w->st_cv, &w->st_mu);
    rc = w->st_rc;
    if (rc) {
        if (err)
            *err = w->st_err;
        pthread_mutex_unlock(&w->st_mu);
        cjob_free(w, j);
        return rc;
    }
    if (w->q_tail)
        w->q_tail->next = j;
    else
        w->q_head = j;
    w->q_tail = j;
    w->q_len++;
    j->slot = json_array_size(w->chunks);
    if (json_array_append_new(w->chunks, json_null()))
        abort();
    /* Another thread when every one is busy and a chunk waits: a file of a few chunks starts
     * one or two, a big one ST_THREADS. None started: the ones there take it in turn. */
    if (w->st_busy + w->q_len > w->st_n && w->st_n < w->st_max &&
        pthread_create(&w->st[w->st_n], NULL, store_main, w) == 0)
        w->st_n++;
    pthread_cond_broadcast(&w->st_cv);
    pthread_mutex_unlock(&w->st_mu);
    return 0;
}

int fs_write_data(fs_writer *w, const void *data, size_t n, mb_err *err)
{
    const uint8_t *p = data;
    if (w->expected >= 0 && w->total + n > (uint64_t)w->expected)
        return err_set(err, MB_EINVAL, "the body is longer than the %lld bytes announced", (long long)w->expected);
    if (w->md_lazy && w->total + n > CHUNK_MIN) {
        /* Nothing is cut before CHUNK_MAX bytes wait, so buf still holds every byte so far. */
        EVP_DigestUpdate(w->md, w->buf, w->len);
        w->md_lazy = false;
    }
    if (!w->md_lazy)
        EVP_DigestUpdate(w->md, p, n);
    if (w->headlen < HEAD_BYTES) {
        size_t k = n < HEAD_BYTES - w->headlen ? n : HEAD_BYTES - w->headlen;
        memcpy(w->head + w->headlen, p, k);
        w->headlen += k;
    }
    w->total += n;
    while (n) {
        if (w->len == w->cap && w->cap < WBUF_CAP) {
            w->cap = w->cap * 2 < WBUF_CAP ? w->cap * 2 : WBUF_CAP;
            w->buf = xrealloc(w->buf, w->cap);
        } else if (w->len == w->cap) { /* compact: keep the unconsumed tail at the front */
            memmove(w->buf, w->buf + w->start, w->len - w->start);
            w->len -= w->start;
            w->start = 0;
        }
        size_t k = w->cap - w->len < n ? w->cap - w->len : n;
        memcpy(w->buf + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
        while (w->len - w->start >= CHUNK_MAX) {
            size_t cut = chunker_cut(w->buf + w->start, w->len - w->start);
            int rc = store_chunk(w, w->buf + w->start, cut, err);
            if (rc)
                return rc;
            w->start += cut;
        }
    }
    return 0;
}

/* On failure the chunks only this write produced are deleted again: a refused or broken
 * upload leaves nothing behind (an interrupted process leaves orphans for the collector). */
static void writer_free(fs_writer *w, bool failed)
{
    st_finish(w, true); /* a commit has finished it already; an abort drops what is queued */
    size_t i;
    json_t *c;
    json_array_foreach(w->chunks, i, c) {
        if (!json_is_object(c))
            continue; /* its job was dropped (an abort) before it was hashed */
        if (failed)
            gc_discard(jstr(c, "h"));
        else
            blob_pending_drop(jstr(c, "h"));
    }
    json_decref(w->chunks);
    while (w->inl) {
        struct inl *next = w->inl->next;
        free(w->inl);
        w->inl = next;
    }
    EVP_MD_CTX_free(w->md);
    free(w->buf);
    free(w->path);
    free(w);
}

void fs_write_abort(fs_writer *w)
{
    if (w)
        writer_free(w, true);
}

int fs_write_commit(fs_writer *w, json_t **info, bool *created, mb_err *err)
{
    int rc = 0;
    if (w->expected >= 0 && w->total != (uint64_t)w->expected) {
        rc = err_set(err, MB_EINVAL, "the body ended after %llu of the %lld bytes announced",
                     (unsigned long long)w->total, (long long)w->expected);
        writer_free(w, true);
        return rc;
    }
    /* Verify before the tail is stored: a small body with a wrong digest touches no disk. */
    uint8_t md[32];
    unsigned mdl = 0;
    char sha[65];
    if (w->md_lazy) {
        EVP_Digest(w->buf, w->len, md, &mdl, EVP_sha256(), NULL);
        hex_encode(md, 32, sha);
        memcpy(w->whole_sha, sha, sizeof sha); /* the one chunk's name too (put_chunk) */
    } else {
        EVP_DigestFinal_ex(w->md, md, &mdl);
        hex_encode(md, 32, sha);
    }
    if (w->expect[0] && strcmp(w->expect, sha)) {
        rc = err_set(err, MB_EINVAL, "the body's SHA-256 is %s but the client announced %s; nothing was stored", sha,
                     w->expect);
        writer_free(w, true);
        return rc;
    }
    /* The tail: whatever is left is cut as the end of the input. */
    while (w->len > w->start) {
        size_t cut = chunker_cut(w->buf + w->start, w->len - w->start);
        if ((rc = store_chunk(w, w->buf + w->start, cut, err))) {
            writer_free(w, true);
            return rc;
        }
        w->start += cut;
    }
    st_finish(w, false);
    if (w->st_rc) {
        rc = w->st_rc;
        if (err)
            *err = w->st_err;
        writer_free(w, true);
        return rc;
    }
    const char *name;
    char *dir = ns_parent_of(w->path, &name);
    bool deep;
    char *ctype = ctype_detect(name, w->head, w->headlen, &deep);
    int64_t now = now_wall();
    json_t *existing = NULL, *entry = NULL;
    bool is_new = true;
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    /* The inline chunks go in with their version, unless stored already (checked under the
     * commit lock: blob_put_inline), or earlier in this file. */
    for (struct inl *i = w->inl; i; i = i->next) {
        struct inl *j = w->inl;
        while (j != i && strcmp(j->hash, i->hash))
            j = j->next;
        if (j == i)
            blob_put_inline(b, i->hash, i->bytes, i->n);
    }
    uint64_t pid;
    rc = ns_store_access(NULL, w->sid, NULL, err);
    if (!rc)
        rc = ns_folder_for_change(w->sid, w->owner, dir, w->flags & FS_PARENTS, w->uid, b, &pid, NULL, NULL, err);
    if (!rc && ns_entry_get(w->sid, pid, name, &existing) == 0) {
        if (ns_is_folder(existing))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", w->path);
        else if (w->flags & FS_NO_OVERWRITE)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", w->path);
        is_new = false;
    }
    if (!rc && w->if_match[0] && (is_new || strcmp(jstr(existing, "sha256"), w->if_match)))
        rc = err_set(err, MB_EPRECOND, "'%s' changed since it was read (If-Match does not match)", w->path);
    uint64_t fid = 0, ver = 0;
    if (!rc) {
        fid = is_new ? ns_new_id() : (uint64_t)jint(existing, "id");
        ver = is_new ? 1 : (uint64_t)jint(existing, "version") + 1;
        /* The version replaced becomes an old version (counted in usage) when a module keeps
         * it (versioning), else it goes in this same batch with its refcounts. Versions kept
         * before (versioning since switched off) stay either way: only the user or retention
         * removes them. */
        bool keep = !is_new && history_keep_versions(w->sid, w->owner, fid, w->path);
        if (keep)
            txn_usage_versions(&c, w->sid, jint(existing, "size"));
        else if (!is_new)
            ns_drop_version(&c, w->sid, fid, (uint64_t)jint(existing, "version"));
        txn_ref_chunks(&c, w->chunks, +1);
        json_t *vrec = json_pack("{s:i, s:I, s:s, s:O, s:I, s:I, s:s}", "v", 1, "size", (json_int_t)w->total,
                                 "sha256", sha, "chunks", w->chunks, "author", (json_int_t)w->uid, "time",
                                 (json_int_t)now, "ctype", ctype);
        char key[NS_KEYMAX];
        ns_fkey(key, sizeof key, w->sid, fid, ver);
        db_batch_put_json(b, key, vrec);
        json_decref(vrec);
        entry = json_pack("{s:i, s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:I, s:I, s:I, s:I}", "v", 1, "type", "file",
                          "id", (json_int_t)fid, "size", (json_int_t)w->total, "mtime", (json_int_t)now, "sha256",
                          sha, "version", (json_int_t)ver, "ctype", ctype, "created",
                          (json_int_t)(is_new ? now : jint(existing, "created")), "created_by",
                          (json_int_t)(is_new ? w->uid : (uint64_t)jint(existing, "created_by")), "updated",
                          (json_int_t)now, "updated_by", (json_int_t)w->uid);
        ns_dkey(key, sizeof key, w->sid, pid, name);
        db_batch_put_json(b, key, entry);
        hook_emit_batch(b, is_new ? "file.created" : "file.updated",
                        json_pack("{s:I, s:I, s:s, s:I, s:I, s:s, s:I, s:s, s:I}", "store", (json_int_t)w->sid,
                                  "owner", (json_int_t)w->owner, "path", w->path, "file_id", (json_int_t)fid, "size",
                                  (json_int_t)w->total, "sha256", sha, "version", (json_int_t)ver, "ctype", ctype,
                                  "user", (json_int_t)w->uid));
        if (deep) /* libmagic names it later, when the server is idle (ctype.c) */
            ctype_mark(b, w->sid, fid, ver, pid, name);
        txn_usage(&c, w->sid, (int64_t)w->total - (is_new ? 0 : jint(existing, "size")), is_new ? 1 : 0);
    }
    char what[512];
    snprintf(what, sizeof what, "the new version of '%s'", w->path);
    rc = txn_end(&c, rc, err, what);
    if (!rc) {
        if (deep)
            ctype_kick();
        if (info)
            *info = ns_public_info(entry, w->path);
        if (created)
            *created = is_new;
    }
    json_decref(entry);
    json_decref(existing);
    free(ctype);
    free(dir);
    writer_free(w, rc != 0);
    return rc;
}
