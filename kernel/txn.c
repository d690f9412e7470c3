/*
 * txn.c — one durable change of the namespace: the commit lock, the chunk refcount and usage
 * deltas of the change, its group-commit sync ticket, the outbox kick, and the one place a
 * committed batch is handed on (txn.h says how a change is made).
 *
 * Write order (DESIGN.md): an upload's chunks are durable before its transaction starts; the
 * transaction's one batch then carries the version, the directory entry, the refcounts, the
 * usage and the outbox event, written by group commit (db_sync.c: many threads' batches share one
 * fsync). The caller replies after txn_end, which returns once that sync covers its write
 * (durability: strict), or once it is scheduled within durability_window_ms (relaxed, db_sync.c).
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
static const txn_observer *observer;

static void (*pre_commit)(db_batch *b);
void txn_pre_commit(void (*fn)(db_batch *b)) { pre_commit = fn; }

void txn_observe(const txn_observer *o)
{
    pthread_mutex_lock(&commit_lock);
    observer = o;
    pthread_mutex_unlock(&commit_lock);
}

/* db_committer tells the group commit a write is on its way, so a sync leader waits a moment
 * for it instead of syncing twice (db_sync.c). */
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
    t->handed = 0;
    t->n_usage = 0;
    txn_lock();
}

/* ----------------------------------------------------------- refcounts --- */

static json_t *ref(txn *t, const char *hash, uint64_t size, int delta)
{
    json_t *e = json_object_get(t->refs, hash);
    if (!e) {
        json_object_set_new(t->refs, hash, json_pack("[i, I]", 0, (json_int_t)size));
        e = json_object_get(t->refs, hash);
    }
    json_array_set_new(e, 0, json_integer(json_integer_value(json_array_get(e, 0)) + delta));
    return e;
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

/* (a third element, true, only here: the deltas of every other change stay two numbers) */
void txn_ref_hold(txn *t, const char *hash, uint64_t size)
{
    json_t *e = ref(t, hash, size, 0);
    if (json_array_size(e) == 2)
        json_array_append_new(e, json_true());
}

static int refs_apply(txn *t, mb_err *err)
{
    const char *hash;
    json_t *e;
    int64_t now = now_wall();
    json_object_foreach(t->refs, hash, e) {
        json_int_t delta = json_integer_value(json_array_get(e, 0));
        bool held = json_is_true(json_array_get(e, 2));
        if (delta == 0 && !held)
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
        if (delta == 0 && refs > 0)
            continue; /* held, and named already */
        refs += delta;
        if (refs < 0) {
            log_error("refcount of chunk %s would drop below zero; clamped (fsck will check)", hash);
            refs = 0;
        }
        if (refs == 0 && (delta < 0 || !zs || held))
            zs = now; /* (held: a full grace for the changes it is held for) */
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

/* The usage records are read and rewritten by every change (two per small upload), so they
 * are printed and read here directly in the one form usage_put writes, not through jansson
 * (json_pack, json_dumps, json_loadb and their mallocs were about 80,000 instructions of a
 * 4 KiB upload: docs/performance.md). The bytes are the same JSON as before; a record in any
 * other form (format 1, written by hand, an older build) is read by jansson. */
static const char *const usage_field[4] = {"{\"v\":2,\"bytes\":", ",\"files\":", ",\"versions\":", ",\"trash\":"};

static char *put_i64(char *p, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0)
        *p++ = '-';
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Up to 18 digits (no overflow possible), optional minus, no leading zeros: what put_i64 writes. */
static const char *get_i64(const char *p, const char *end, int64_t *out)
{
    bool neg = p < end && *p == '-';
    p += neg;
    const char *start = p;
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 18)
        v = v * 10 + (*p++ - '0');
    if (p == start || (p < end && *p >= '0' && *p <= '9') || (*start == '0' && p - start > 1) || (neg && v == 0))
        return NULL;
    *out = neg ? -v : v;
    return p;
}

size_t txn_usage_print(char *out, const txn_usage_t *u)
{
    const int64_t f[4] = {u->bytes, u->files, u->versions, u->trash};
    char *p = out;
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(usage_field[i]);
        memcpy(p, usage_field[i], n);
        p = put_i64(p + n, f[i]);
    }
    *p++ = '}';
    *p = 0;
    return (size_t)(p - out);
}

bool txn_usage_parse(const char *v, size_t n, txn_usage_t *out)
{
    const char *p = v, *end = v + n;
    int64_t f[4];
    for (int i = 0; i < 4; i++) {
        size_t k = strlen(usage_field[i]);
        if ((size_t)(end - p) < k || memcmp(p, usage_field[i], k))
            return false;
        if (!(p = get_i64(p + k, end, &f[i])))
            return false;
    }
    if (end - p != 1 || *p != '}')
        return false;
    *out = (txn_usage_t){f[0], f[1], f[2], f[3]};
    return true;
}

void txn_usage_read(const char *key, txn_usage_t *out)
{
    *out = (txn_usage_t){0};
    char *v;
    size_t n;
    if (db_get(key, strlen(key), &v, &n))
        return;
    bool fast = txn_usage_parse(v, n, out);
    if (!fast) {
        json_error_t je;
        json_t *u = json_loadb(v, n, 0, &je);
        if (u)
            *out = (txn_usage_t){jint0(u, "bytes"), jint0(u, "files"), jint0(u, "versions"), jint0(u, "trash")};
        else
            log_error("corrupt JSON value at %s: %s", key, je.text);
        json_decref(u);
    }
    free(v);
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
    char v[TXN_USAGE_TEXT];
    size_t n = txn_usage_print(v, &u);
    db_batch_put(b, key, strlen(key), v, n);
}

void txn_usage_add(db_batch *b, const char *key, const txn_usage_t *d)
{
    txn_usage_t u;
    txn_usage_read(key, &u);
    usage_sum(&u, d);
    usage_put(b, key, u);
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
        id_key(key, sizeof key, "s", t->usage[i].sid);
        json_t *s = NULL;
        if (db_get_json_shared(key, &s))
            continue;
        uint64_t owner = (uint64_t)jint0(s, "owner");
        json_decref(s);
        id_key(key, sizeof key, "us", t->usage[i].sid);
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
        id_key(key, sizeof key, "uu", owners[j]);
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
        if (!rc && observer)
            rc = observer->hand(t->b, &t->handed, err);
        if (!rc) {
            rc = db_batch_commit_grouped(t->b, &t->ticket); /* frees the batch */
            t->b = NULL;
            if (rc)
                err_set(err, rc, "%s could not be committed", what);
        }
    }
    uint64_t ticket = t->ticket, handed = t->handed;
    const txn_observer *o = observer;
    txn_unlock();
    if (ticket)
        db_sync_ack(ticket); /* visible to the next lock holder already; durable now (strict) or soon */
    if (handed && o) { /* and safe on the replica: only then is it acknowledged (always waited: it frees) */
        mb_err ignored;
        int w = o->wait(handed, rc ? &ignored : err);
        if (!rc)
            rc = w;
    }
    db_batch_free(t->b);
    json_decref(t->refs);
    t->b = NULL;
    t->refs = NULL;
    if (!rc && kick)
        hook_kick();
    return rc;
}
