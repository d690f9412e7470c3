/*
 * fsck.c — the consistency check of the file service (fs.h: fs_fsck; POST /api/v1/admin/fsck
 * and mbytectl fsck): entries -> versions -> chunks -> refcounts -> stored chunks, each
 * mismatch reported as a problem of a kind (docs/operations.md), and with repair the safe
 * fixes (refcounts, unreferenced versions, orphan inline chunks) written in one batch, then
 * the collector run (gc.c) for orphan chunk files.
 *
 * Threads: the caller's (a task worker). The whole check holds the commit lock (txn_lock), so
 * it sees no change half made; reads only otherwise.
 */
#include "fs.h"
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    json_t *problems;
    int repaired;
    int64_t cutoff;
    json_t *counts; /* hash -> [refs, size] expected from the version records */
    json_int_t orphans_recent, chunks_stored;
} fsck_ctx;

static void problem(fsck_ctx *c, const char *kind, bool repaired, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void problem(fsck_ctx *c, const char *kind, bool repaired, json_t *extra, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *p = extra ? extra : json_object();
    json_object_set_new(p, "kind", json_string(kind));
    json_object_set_new(p, "detail", json_string(msg));
    json_object_set_new(p, "repaired", json_boolean(repaired));
    json_array_append_new(c->problems, p);
    if (repaired)
        c->repaired++;
}

static int fsck_blob_cb(const char *hash, uint64_t size, int64_t mtime, void *ud)
{
    (void)size;
    fsck_ctx *c = ud;
    c->chunks_stored++;
    if (json_object_get(c->counts, hash))
        return 0;
    if (chunk_recorded(hash))
        return 0; /* unreferenced but recorded: the collector's business */
    if (mtime > c->cutoff)
        c->orphans_recent++; /* maybe an upload in flight or just interrupted */
    else
        problem(c, "orphan", false, json_pack("{s:s}", "chunk", hash),
                "chunk %s is stored but no file or refcount names it", hash);
    return 0;
}

/* The chunk hash at the end of key k ("<prefix><sha256 hex>"), or false for another shape. */
static bool key_hash(const char *k, size_t kl, size_t prefix, char out[65])
{
    if (kl != prefix + 64)
        return false;
    memcpy(out, k + prefix, 64);
    out[64] = 0;
    return true;
}

int fs_fsck(bool repair, json_t **report, mb_err *err)
{
    (void)err;
    fsck_ctx c = {.problems = json_array(), .cutoff = now_wall() - gc_grace_secs(), .counts = json_object()};
    json_int_t files = 0, chunks_checked = 0, versions = 0;
    db_batch *fix = db_batch_new();
    txn_lock();
    /* 1. Entries -> the version each names. */
    json_t *live = json_object();
    db_iter *it = db_iter_prefix("d/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *e = json_loadb(v, vl, 0, NULL);
        if (!e || kl < 36) {
            problem(&c, "bad_entry", false, NULL, "entry %.*s is not readable", (int)kl, k);
            json_decref(e);
            continue;
        }
        if (!ns_is_folder(e)) {
            files++;
            char sid[17], fk[NS_KEYMAX];
            memcpy(sid, k + 2, 16);
            sid[16] = 0;
            uint64_t s = strtoull(sid, NULL, 16);
            ns_fkey(fk, sizeof fk, s, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
            char *vv;
            if (db_get(fk, strlen(fk), &vv, NULL) == 0) {
                free(vv);
                fk[strlen(fk) - 16] = 0; /* every version of a live file is live (history.c) */
                json_object_set_new(live, fk, json_true());
            } else
                problem(&c, "dangling_entry", false, json_pack("{s:s#}", "key", k, (int)kl),
                        "entry %.*s names a version that does not exist", (int)kl, k);
        }
        json_decref(e);
    }
    db_iter_free(it);
    history_fsck_live(live);
    /* 2. Versions -> the chunks they hold. A version no entry names is kept only while a
     * retention policy says so; there is none yet, so it is a leak. */
    it = db_iter_prefix("f/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        versions++;
        char *key = strndup(k, kl);
        json_t *ver = json_loadb(v, vl, 0, NULL);
        char *fprefix = strndup(k, kl > 16 ? kl - 16 : kl);
        bool is_live = json_object_get(live, fprefix) != NULL;
        free(fprefix);
        if (!is_live) {
            if (repair)
                db_batch_del(fix, k, kl);
            problem(&c, "unreferenced_version", repair, json_pack("{s:s}", "key", key),
                    "version %s belongs to no file in the namespace or the trash", key);
            if (repair) {
                free(key);
                json_decref(ver);
                continue;
            }
        }
        free(key);
        size_t i;
        json_t *ch;
        json_array_foreach(json_object_get(ver, "chunks"), i, ch) {
            const char *h = jstr(ch, "h");
            json_t *cnt = json_object_get(c.counts, h);
            if (!cnt)
                json_object_set_new(c.counts, h, json_pack("[i, I]", 1, jint(ch, "n")));
            else
                json_array_set_new(cnt, 0, json_integer(json_integer_value(json_array_get(cnt, 0)) + 1));
        }
        json_decref(ver);
    }
    db_iter_free(it);
    json_decref(live);
    /* 3. Every referenced chunk exists and has its hash. */
    const char *h;
    json_t *cnt;
    uint8_t *buf = xmalloc(CHUNK_MAX);
    json_object_foreach(c.counts, h, cnt) {
        chunks_checked++;
        size_t n = (size_t)json_integer_value(json_array_get(cnt, 1));
        mb_err e = {0};
        int rc = n <= CHUNK_MAX ? blob_get(h, buf, n, &e) : MB_EINTEGRITY;
        if (rc == MB_ENOENT)
            problem(&c, "missing_chunk", false, json_pack("{s:s}", "chunk", h), "chunk %s is referenced but missing",
                    h);
        else if (rc)
            problem(&c, "corrupt_chunk", false, json_pack("{s:s}", "chunk", h),
                    "chunk %s does not hold the bytes its name promises: %s", h, e.msg);
    }
    free(buf);
    /* 4. Refcounts match the references. */
    it = db_iter_prefix("c/", 2);
    json_t *seen = json_object();
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        char hash[65];
        if (!key_hash(k, kl, 2, hash))
            continue;
        json_object_set_new(seen, hash, json_true());
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_int_t refs = jint(rec, "refs");
        json_t *want = json_object_get(c.counts, hash);
        json_int_t n = want ? json_integer_value(json_array_get(want, 0)) : 0;
        if (refs != n) {
            if (repair) {
                json_t *nr = json_pack("{s:i, s:I, s:I, s:I}", "v", 1, "refs", n, "size", jint(rec, "size"),
                                       "zero_since", n ? 0 : now_wall());
                db_batch_put_json(fix, k, nr);
                json_decref(nr);
            }
            problem(&c, "refcount", repair, json_pack("{s:s, s:I, s:I}", "chunk", hash, "recorded", refs, "actual", n),
                    "chunk %s has refcount %lld but %lld references", hash, (long long)refs, (long long)n);
        } else if (refs == 0 && !blob_has(hash)) {
            if (repair)
                db_batch_del(fix, k, kl);
            problem(&c, "stale_refcount", repair, json_pack("{s:s}", "chunk", hash),
                    "chunk %s has a refcount record but no bytes", hash);
        }
        json_decref(rec);
    }
    db_iter_free(it);
    json_object_foreach(c.counts, h, cnt) {
        if (json_object_get(seen, h))
            continue;
        json_int_t n = json_integer_value(json_array_get(cnt, 0));
        if (repair) {
            char key[80];
            snprintf(key, sizeof key, "c/%s", h);
            json_t *nr = json_pack("{s:i, s:I, s:O, s:i}", "v", 1, "refs", n, "size", json_array_get(cnt, 1),
                                   "zero_since", 0);
            db_batch_put_json(fix, key, nr);
            json_decref(nr);
        }
        problem(&c, "refcount", repair, json_pack("{s:s, s:i, s:I}", "chunk", h, "recorded", 0, "actual", n),
                "chunk %s has %lld references but no refcount record", h, (long long)n);
    }
    /* 5. Orphans: stored chunks nothing names. An inline chunk (blob.c) comes and goes in the
     * same batch as its refcount record, so one without a record is repaired at once. */
    mb_err le = {0};
    if (blob_list_mine(fsck_blob_cb, &c, &le) < 0) /* orphans there are unknown: say so, never "clean" */
        problem(&c, "backend", false, json_pack("{s:s}", "error", le.msg),
                "the chunk backends could not all be listed, so orphans were not counted: %s", le.msg);
    /* Objects of encrypted stores and sets, which no listing finds: their put records (blob.c).
     * A record whose object is not there (the put failed, or a discard reached it) is only the
     * collector's to drop. */
    it = db_iter_prefix("po/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        char hash[65];
        if (!key_hash(k, kl, 3, hash) || json_object_get(c.counts, hash) || chunk_recorded(hash))
            continue;
        if (put_record_time(v, vl) > c.cutoff)
            c.orphans_recent++;
        else if (blob_has(hash))
            problem(&c, "orphan", false, json_pack("{s:s}", "chunk", hash),
                    "chunk %s was put to an external store by an upload that never committed", hash);
    }
    db_iter_free(it);
    it = db_iter_prefix("ci/", 3);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char hash[65];
        if (!key_hash(k, kl, 3, hash))
            continue;
        c.chunks_stored++;
        if (json_object_get(seen, hash))
            continue;
        if (repair)
            blob_inline_del(fix, hash);
        problem(&c, "inline_orphan", repair, json_pack("{s:s}", "chunk", hash), "inline chunk %s has no refcount record",
                hash);
    }
    db_iter_free(it);
    /* Body records (format 2) their chunk's ci/ record does not name (damage). One whose chunk
     * reads back otherwise is deleted; one holding the bytes of a chunk that no longer reads is
     * made its chunk's body again. (A named body that is damaged is step 3's corrupt_chunk.) */
    it = db_iter_prefix("cb/", 3);
    uint8_t *body = xmalloc(CHUNK_INLINE_LIMIT);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        char hash[65], got[65];
        if (kl != BODY_KEY || !vl || vl - 1 > CHUNK_INLINE_LIMIT || blob_inline_body(k, kl, hash))
            continue; /* named by its chunk, or not a body record's form */
        mb_err e = {0};
        bool lost = v[0] == INLINE_BYTES && json_object_get(seen, hash) && blob_get(hash, body, vl - 1, &e);
        if (lost) { /* and these bytes are that chunk's */
            uint8_t md[32];
            unsigned mdl = 0;
            EVP_Digest(v + 1, vl - 1, md, &mdl, EVP_sha256(), NULL);
            hex_encode(md, 32, got);
            lost = !strcmp(got, hash);
        }
        if (repair) {
            if (lost) {
                blob_inline_relink(fix, k, hash);
                size_t i;
                json_t *p;
                json_array_foreach(c.problems, i, p) /* what step 3 found unreadable reads again */
                    if (!strcmp(jstr(p, "chunk"), hash) && !json_is_true(json_object_get(p, "repaired"))) {
                        json_object_set_new(p, "repaired", json_true());
                        c.repaired++;
                    }
            } else
                db_batch_del(fix, k, kl);
        }
        problem(&c, "inline_orphan", repair, json_pack("{s:s, s:s}", "chunk", hash, "body", lost ? "relinked" : "deleted"),
                lost ? "inline chunk %s lost its bytes, which a record nobody named still holds" :
                       "inline chunk %s has a second body record nobody names", hash);
    }
    free(body);
    db_iter_free(it);
    json_decref(seen);
    int frc = db_batch_commit(fix, true);
    txn_unlock();
    if (frc)
        log_error("fsck: the repairs could not be written");
    if (repair) {
        /* The collector deletes orphans and zero-ref chunks older than the grace. */
        mb_err e = {0};
        gc_run(gc_grace_secs(), &e);
        size_t i;
        json_t *p;
        json_array_foreach(c.problems, i, p) {
            if (!strcmp(jstr(p, "kind"), "orphan") && !blob_has(jstr(p, "chunk"))) {
                json_object_set_new(p, "repaired", json_true());
                c.repaired++;
            }
        }
    }
    int unrepaired = 0;
    size_t i;
    json_t *p;
    json_array_foreach(c.problems, i, p) unrepaired += !json_is_true(json_object_get(p, "repaired"));
    *report = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:i, s:i, s:b}", "chunks_checked", chunks_checked,
                        "files_checked", files, "versions_checked", versions, "chunks_stored", c.chunks_stored,
                        "orphans_recent", c.orphans_recent, "problems", c.problems, "repaired", c.repaired,
                        "unrepaired", unrepaired, "repair", repair);
    json_decref(c.counts);
    if (json_array_size(json_object_get(*report, "problems")))
        log_warn("fsck: %zu problems, %d repaired", json_array_size(json_object_get(*report, "problems")),
                 c.repaired);
    return 0;
}
