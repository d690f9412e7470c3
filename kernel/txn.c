/*
 * txn.c — one durable change of the namespace: the commit lock, the chunk refcount and usage
 * deltas of the change, its group-commit sync ticket, the outbox kick, and the one place a
 * committed batch is handed on (txn.h says how a change is made).
 *
 * Write order (DESIGN.md): an upload's chunks are durable before its transaction starts; the
 * transaction's one batch then carries the version, the directory entry, the refcounts, the
 * usage and the outbox event, written by group commit (db.c: many threads' batches share one
 * fsync). The caller replies after txn_end, which returns once that sync covers its write
 * (durability: strict), or once it is scheduled within durability_window_ms (relaxed, db.c).
 *
 * Records this file writes: c/<sha256> refcounts {"v":1,"refs","size","zero_since"} and the
 * usage records us/<sid16> and uu/<uid16> {"v":2,"bytes","files","versions","trash"}
 * (docs/storage.md). It reads the store record s/<sid16> for its owner.
 *
 * Threads: any. commit_lock (below) serialises every transaction and every txn_lock holder:
 * read-modify-writes of refcounts, usage and the namespace never interleave, and the
 * collector (gc.c) never deletes a chunk a change is about to reference. The deltas live in
 * the caller's txn. The observer pointer is set at start (or by a module's init) and read
 * under the commit lock.
 */
#include "txn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t commit_lock = PTHREAD_MUTEX_INITIALIZER;
static txn_observer_fn observer;
static void *observer_ud;

static void (*pre_commit)(db_batch *b);
void txn_pre_commit(void (*fn)(db_batch *b)) { pre_commit = fn; }

void txn_observe(txn_observer_fn fn, void *ud)
{
    pthread_mutex_lock(&commit_lock);
    observer = fn;
    observer_ud = ud;
    pthread_mutex_unlock(&commit_lock);
}

/* db_committer tells the group commit a write is on its way, so a sync leader waits a moment
 * for it instead of syncing twice (db.c). */
void txn_lock(void)
{
    db_committer(+1);
    pthread_mutex_lock(&commit_lock);
}

void txn_unlock(void)
{
    pthread_mutex_unlock(&commit_lock);
    db_committer(-1);
}

void txn_begin(txn *t, db_batch *b)
{
    t->b = b ? b : db_batch_new();
    t->refs = json_object();
    t->ticket = 0;
    t->n_usage = 0;
    txn_lock();
}

/* ----------------------------------------------------------- refcounts --- */

static void ref(txn *t, const char *hash, uint64_t size, int delta)
{
    json_t *e = json_object_get(t->refs, hash);
    if (!e) {
        json_object_set_new(t->refs, hash, json_pack("[i, I]", 0, (json_int_t)size));
        e = json_object_get(t->refs, hash);
    }
    json_array_set_new(e, 0, json_integer(json_integer_value(json_array_get(e, 0)) + delta));
}

void txn_ref_chunks(txn *t, const json_t *chunks, int delta)
{
    size_t i;
    json_t *ch;
    json_array_foreach(chunks, i, ch) {
        const char *h = json_string_value(json_object_get(ch, "h"));
        ref(t, h ? h : "", (uint64_t)json_integer_value(json_object_get(ch, "n")), delta);
    }
}

static int refs_apply(txn *t, mb_err *err)
{
    const char *hash;
    json_t *e;
    int64_t now = now_wall();
    json_object_foreach(t->refs, hash, e) {
        json_int_t delta = json_integer_value(json_array_get(e, 0));
        if (delta == 0)
            continue;
        char key[80];
        snprintf(key, sizeof key, "c/%s", hash);
        json_t *rec = NULL;
        int rc = db_get_json(key, &rec);
        if (rc && rc != MB_ENOENT)
            return err_set(err, MB_EIO, "cannot read the refcount of chunk %.12s…", hash);
        json_int_t refs = rec ? json_integer_value(json_object_get(rec, "refs")) : 0;
        json_int_t size = rec ? json_integer_value(json_object_get(rec, "size"))
                              : json_integer_value(json_array_get(e, 1));
        json_int_t zs = rec ? json_integer_value(json_object_get(rec, "zero_since")) : 0;
        json_decref(rec);
        refs += delta;
        if (refs < 0) {
            log_error("refcount of chunk %s would drop below zero; clamped (fsck will check)", hash);
            refs = 0;
        }
        if (refs == 0 && (delta < 0 || !zs))
            zs = now;
        if (refs > 0)
            zs = 0;
        json_t *nrec = json_pack("{s:i, s:I, s:I, s:I}", "v", 1, "refs", refs, "size", size, "zero_since", zs);
        db_batch_put_json(t->b, key, nrec);
        json_decref(nrec);
    }
    return 0;
}

/* --------------------------------------------------------------- usage --- */

static void usage_sum(txn_usage_t *a, const txn_usage_t *d)
{
    a->bytes += d->bytes;
    a->files += d->files;
    a->versions += d->versions;
    a->trash += d->trash;
}

static void note(txn *t, uint64_t sid, txn_usage_t d)
{
    for (int i = 0; i < t->n_usage; i++)
        if (t->usage[i].sid == sid) {
            usage_sum(&t->usage[i].d, &d);
            return;
        }
    if (t->n_usage == TXN_USAGE_MAX) {
        log_error("usage: more than %d stores in one change; usage of store %llu not counted", TXN_USAGE_MAX,
                  (unsigned long long)sid);
        return;
    }
    t->usage[t->n_usage].sid = sid;
    t->usage[t->n_usage++].d = d;
}

void txn_usage(txn *t, uint64_t sid, int64_t bytes, int64_t files) { note(t, sid, (txn_usage_t){bytes, files, 0, 0}); }

void txn_usage_versions(txn *t, uint64_t sid, int64_t bytes) { note(t, sid, (txn_usage_t){bytes, 0, bytes, 0}); }

void txn_usage_trash(txn *t, uint64_t sid, int64_t bytes) { note(t, sid, (txn_usage_t){0, 0, 0, bytes}); }

static json_int_t jint0(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

void txn_usage_read(const char *key, txn_usage_t *out)
{
    json_t *u = NULL;
    *out = (txn_usage_t){0};
    if (db_get_json_shared(key, &u) == 0)
        *out = (txn_usage_t){jint0(u, "bytes"), jint0(u, "files"), jint0(u, "versions"), jint0(u, "trash")};
    json_decref(u);
}

static void usage_put(db_batch *b, const char *key, txn_usage_t u)
{
    if (u.bytes < 0 || u.files < 0 || u.versions < 0 || u.trash < 0) {
        log_error("usage %s would go below zero (%lld bytes, %lld files, %lld in versions, %lld in the trash); "
                  "clamped",
                  key, (long long)u.bytes, (long long)u.files, (long long)u.versions, (long long)u.trash);
        u.bytes = u.bytes < 0 ? 0 : u.bytes;
        u.files = u.files < 0 ? 0 : u.files;
        u.versions = u.versions < 0 ? 0 : u.versions;
        u.trash = u.trash < 0 ? 0 : u.trash;
    }
    json_t *v = json_pack("{s:i, s:I, s:I, s:I, s:I}", "v", 2, "bytes", (json_int_t)u.bytes, "files",
                          (json_int_t)u.files, "versions", (json_int_t)u.versions, "trash", (json_int_t)u.trash);
    db_batch_put_json(b, key, v);
    json_decref(v);
}

void txn_usage_add(db_batch *b, const char *key, const txn_usage_t *d)
{
    txn_usage_t u;
    txn_usage_read(key, &u);
    usage_sum(&u, d);
    usage_put(b, key, u);
}

static void usage_key(char *out, size_t n, const char *prefix, uint64_t id)
{
    char a[17];
    key_u64(a, id);
    snprintf(out, n, "%s/%s", prefix, a);
}

/* Each store's deltas into its record, and summed per owner into the owner's. */
static void usage_flush(txn *t)
{
    uint64_t owners[TXN_USAGE_MAX];
    txn_usage_t od[TXN_USAGE_MAX];
    int no = 0;
    char key[64];
    for (int i = 0; i < t->n_usage; i++) {
        const txn_usage_t *d = &t->usage[i].d;
        if (!d->bytes && !d->files && !d->versions && !d->trash)
            continue;
        usage_key(key, sizeof key, "s", t->usage[i].sid);
        json_t *s = NULL;
        if (db_get_json_shared(key, &s))
            continue;
        uint64_t owner = (uint64_t)jint0(s, "owner");
        json_decref(s);
        usage_key(key, sizeof key, "us", t->usage[i].sid);
        txn_usage_add(t->b, key, d);
        int j = 0;
        while (j < no && owners[j] != owner)
            j++;
        if (j == no) {
            owners[no] = owner;
            od[no++] = (txn_usage_t){0};
        }
        usage_sum(&od[j], d);
    }
    for (int j = 0; j < no; j++) {
        usage_key(key, sizeof key, "uu", owners[j]);
        txn_usage_add(t->b, key, &od[j]);
    }
    t->n_usage = 0;
}

/* ---------------------------------------------------------------- end --- */

int txn_end(txn *t, int rc, mb_err *err, const char *what)
{
    /* A change whose events nobody observes (no outbox entry) has no turn to start: waking
     * the loop for nothing was a context switch per small upload. */
    bool kick = db_batch_has_events(t->b);
    if (!rc && what) {
        if (pre_commit)
            pre_commit(t->b);
        usage_flush(t);
        rc = refs_apply(t, err);
        if (!rc && observer && observer(t->b, observer_ud))
            rc = err_set(err, MB_EIO, "%s could not be committed: it was not handed on", what);
        if (!rc) {
            rc = db_batch_commit_grouped(t->b, &t->ticket); /* frees the batch */
            t->b = NULL;
            if (rc)
                err_set(err, rc, "%s could not be committed", what);
        }
    }
    uint64_t ticket = t->ticket;
    txn_unlock();
    if (ticket)
        db_sync_ack(ticket); /* visible to the next lock holder already; durable now (strict) or soon */
    db_batch_free(t->b);
    json_decref(t->refs);
    t->b = NULL;
    t->refs = NULL;
    if (!rc && kick)
        hook_kick();
    return rc;
}
