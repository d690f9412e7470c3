/*
 * backend_set.c — redundancy sets (issue 21; docs/storage.md "Redundancy sets"): a store placed
 * on {"copies": N, "of": [...]} or {"erasure": {"data": k, "parity": m}, "of": [...]} sees one
 * composite blob backend with the ops of mb_blob_backend, made here over its member backends
 * (each entered through backend_enter). blob.c's encryption stays above it, so with
 * "encrypt": true every piece holds ciphertext; the set never sees a chunk's plaintext or hash.
 *
 * An object is stored as pieces (piece.c): a copy on every member for "copies" (the 1+0 code),
 * piece i on member of[i] for "erasure". A piece is named k<k>m<m>p<i>/<object name>
 * (k1m0p0/<name> for a copy): a plain store's listing never takes it for a chunk (its first
 * segment is not two hex digits) and two geometries over the same backends never share a name.
 *
 *   put   every member in parallel (one thread each); acknowledged once `need` pieces are
 *         durable (copies: N; erasure: k + 1, so an acknowledged chunk survives the loss of one
 *         more backend before its missing pieces arrive). The pieces that did not land are queued
 *         durably (rq/<backend>/<sid16>/<piece name> -> {"v":1,"len"}, synced before the put
 *         returns) and written by the retry thread below once their backend answers again; the
 *         queue holds names, the piece is rebuilt from the others. A member already holding a
 *         piece of the right size is not written again (dedup per piece). Members in backoff
 *         (below) are not tried while the others suffice; when too few took the chunk, the
 *         failed ones are tried once more before the put fails (503, nothing acknowledged).
 *   get   copies: the members in order of their recent answer time, down ones last, until one
 *         copy is sound; erasure: the k data pieces at once (a thread each), then parity, one at a
 *         time, only for those missing or bad, then
 *         decoded (a part from off > 0: only the data pieces holding it, see part_get). Every
 *         piece read whole is checked against its own checksum; a missing or bad one that was
 *         read is rewritten from the sound ones at once (queued if that fails).
 *   has   enough sound-looking pieces to read the object (1 copy, k pieces).
 *   stat  never claims the object (0): blob.c's put then always reaches put here, which skips
 *         the pieces that are there.
 *   del   every piece on every member (an unreachable member fails the delete: the collector
 *         tries again later), and the object's queue entries.
 *   list  none: orphans of a set are found through their put records (po/, blob.c and gc.c).
 *
 * Member health: a member whose call failed is "down" for a backoff (1 s doubling to 10 s):
 * puts queue its pieces without trying, reads try it last. The retry thread (one, started by
 * blob_init) walks rq/ every second and retries the entries of members out of backoff; success
 * marks the member up.
 *
 * Threads: any (HTTP workers, upload threads, task workers, the retry thread), never the loop.
 * health_mu guards the health table; a bset belongs to its caller; q_mu/q_cv the retry thread.
 */
#include "fs.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bset {
    backend_set_spec sp;
    unsigned k, m, need; /* the code (copies: 1 + 0) and the pieces a put needs durable */
    backend_ref mem[PIECE_MAX];
    bool in[PIECE_MAX]; /* mem[i] entered */
};

/* ------------------------------------------------------------ health --- */

#define HEALTH_MAX 64
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 10000
static struct health {
    char name[BACKEND_NAME_MAX + 1];
    int64_t down_until, backoff_ms, ewma_ms;
} health[HEALTH_MAX];
static pthread_mutex_t health_mu = PTHREAD_MUTEX_INITIALIZER;

/* The entry of name (made if new; the last one is shared once the table is full). Under health_mu. */
static struct health *health_of(const char *name)
{
    for (int i = 0; i < HEALTH_MAX; i++) {
        if (!strcmp(health[i].name, name))
            return &health[i];
        if (!health[i].name[0]) {
            snprintf(health[i].name, sizeof health[i].name, "%s", name);
            return &health[i];
        }
    }
    return &health[HEALTH_MAX - 1];
}

static bool member_down(const char *name)
{
    pthread_mutex_lock(&health_mu);
    bool down = health_of(name)->down_until > now_mono_ms();
    pthread_mutex_unlock(&health_mu);
    return down;
}

static void member_failed(const char *name)
{
    pthread_mutex_lock(&health_mu);
    struct health *h = health_of(name);
    h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (h->backoff_ms > BACKOFF_MAX_MS)
        h->backoff_ms = BACKOFF_MAX_MS;
    h->down_until = now_mono_ms() + h->backoff_ms;
    pthread_mutex_unlock(&health_mu);
}

static void member_answered(const char *name, int64_t ms)
{
    pthread_mutex_lock(&health_mu);
    struct health *h = health_of(name);
    h->backoff_ms = h->down_until = 0;
    h->ewma_ms = h->ewma_ms ? (h->ewma_ms * 7 + ms) / 8 : ms + 1;
    pthread_mutex_unlock(&health_mu);
}

/* Read order: up members by recent answer time, down ones last. */
static int64_t member_rank(const char *name)
{
    pthread_mutex_lock(&health_mu);
    struct health *h = health_of(name);
    int64_t r = (h->down_until > now_mono_ms() ? INT64_C(1) << 40 : 0) + h->ewma_ms;
    pthread_mutex_unlock(&health_mu);
    return r;
}

/* ------------------------------------------------------------ pieces --- */

static unsigned piece_index(const struct bset *s, unsigned member) { return s->sp.erasure ? member : 0; }

static void piece_name(const struct bset *s, unsigned member, const char *key, char *out, size_t n)
{
    snprintf(out, n, "k%um%up%u/%s", s->k, s->m, piece_index(s, member), key);
}

#define PNAME_MAX (CRYPT_NAME + 32)

/* rq/<member>/<sid16>/ */
static void queue_prefix(const struct bset *s, unsigned member, char *out, size_t n)
{
    char a[17];
    key_u64(a, s->sp.sid);
    snprintf(out, n, "rq/%s/%s/", s->sp.of[member], a);
}

static int queue_put(db_batch *b, const struct bset *s, unsigned member, const char *key, size_t len)
{
    char qk[256], pn[PNAME_MAX];
    queue_prefix(s, member, qk, sizeof qk);
    piece_name(s, member, key, pn, sizeof pn);
    snprintf(qk + strlen(qk), sizeof qk - strlen(qk), "%s", pn);
    json_t *v = json_pack("{s:i, s:I}", "v", 1, "len", (json_int_t)len);
    db_batch_put_json(b, qk, v);
    json_decref(v);
    log_warn("backend '%s' is down: piece %s of store %llu is queued for it", s->sp.of[member], pn,
             (unsigned long long)s->sp.sid);
    return 0;
}

/* Piece of member i of object key into a new buffer (*out, free it): its length, MB_ENOENT when
 * the member answered that it has none, another negative code when it did not answer. */
static int64_t fetch(struct bset *s, unsigned i, const char *key, size_t cap, uint8_t **out, mb_err *err)
{
    *out = NULL;
    if (!s->in[i])
        return err_set(err, MB_EBUSY, "backend '%s' is not available", s->sp.of[i]);
    char pn[PNAME_MAX];
    piece_name(s, i, key, pn, sizeof pn);
    backend_ref *r = &s->mem[i];
    for (int round = 0; round < 2; round++) {
        uint8_t *b = xmalloc(cap);
        int64_t t0 = now_mono_ms();
        int64_t n = r->ops.get(r->state, pn, 0, b, cap, err);
        if (n < 0 && n != MB_ENOENT)
            member_failed(s->sp.of[i]);
        else
            member_answered(s->sp.of[i], now_mono_ms() - t0);
        /* a piece longer than the caller's guess (a ranged read): once more, whole */
        size_t full = 0;
        if (n >= PIECE_HDR && !memcmp(b, "MBR1", 4) && b[4]) {
            uint64_t len = 0;
            for (int j = 15; j >= 8; j--)
                len = len << 8 | b[j];
            if (len && len <= PIECE_OBJ_MAX)
                full = piece_size(len, b[4]);
        }
        if (round == 0 && n == (int64_t)cap && full > cap) {
            free(b);
            cap = full;
            continue;
        }
        if (n < 0)
            free(b);
        else
            *out = b;
        return n;
    }
    return err_set(err, MB_EIO, "piece %s could not be read", pn);
}

/* Put piece p (plen bytes) of object key to member i, unless it holds one of that size (force:
 * in any case, to replace a damaged one). A member in backoff is not tried unless try_down. */
static int put_piece(struct bset *s, unsigned i, const char *key, const uint8_t *p, size_t plen, bool force,
                     bool try_down, mb_err *err)
{
    if (!s->in[i]) { /* not registered (its module is not loaded): a backoff as for one down */
        member_failed(s->sp.of[i]);
        return err_set(err, MB_EBUSY, "backend '%s' is not available", s->sp.of[i]);
    }
    if (!try_down && member_down(s->sp.of[i]))
        return err_set(err, MB_EBUSY, "backend '%s' is down", s->sp.of[i]);
    char pn[PNAME_MAX];
    piece_name(s, i, key, pn, sizeof pn);
    backend_ref *r = &s->mem[i];
    uint64_t have = 0;
    int64_t t0 = now_mono_ms();
    int rc = force ? 0 : r->ops.stat ? r->ops.stat(r->state, pn, &have, NULL, err) : r->ops.has(r->state, pn, err);
    if (rc == 1 && (!r->ops.stat || have == plen))
        rc = 0;
    else if (rc >= 0)
        rc = r->ops.put(r->state, pn, p, plen, err);
    if (rc < 0)
        member_failed(s->sp.of[i]);
    else
        member_answered(s->sp.of[i], now_mono_ms() - t0);
    return rc < 0 ? rc : 0;
}

typedef struct put_job {
    struct bset *s;
    unsigned i;
    const char *key;
    const uint8_t *p;
    size_t plen;
    bool force, try_down;
    int rc;
    mb_err e;
    pthread_t t;
    bool threaded;
} put_job;

static void *put_main(void *a)
{
    put_job *j = a;
    j->rc = put_piece(j->s, j->i, j->key, j->p, j->plen, j->force, j->try_down, &j->e);
    return NULL;
}

/* Put pieces[piece_index(i)] to every member i with want[i], in parallel; rc per member. */
static void put_all(struct bset *s, const char *key, uint8_t *const pieces[], size_t plen, const bool want[],
                    bool force, bool try_down, put_job *jobs)
{
    for (unsigned i = 0; i < s->sp.n; i++) {
        jobs[i] = (put_job){.s = s, .i = i, .key = key, .p = pieces[piece_index(s, i)], .plen = plen,
                            .force = force, .try_down = try_down, .rc = 1};
        if (want[i])
            jobs[i].threaded = pthread_create(&jobs[i].t, NULL, put_main, &jobs[i]) == 0;
        if (want[i] && !jobs[i].threaded)
            put_main(&jobs[i]);
    }
    for (unsigned i = 0; i < s->sp.n; i++)
        if (jobs[i].threaded)
            pthread_join(jobs[i].t, NULL);
}

/* Encode object obj (len) into freshly allocated pieces (free pieces[0]). */
static size_t encode(const struct bset *s, const void *obj, size_t len, uint8_t *pieces[PIECE_MAX])
{
    size_t plen = piece_size(len, s->k);
    uint8_t *buf = xmalloc(plen * (s->k + s->m));
    for (unsigned i = 0; i < s->k + s->m; i++)
        pieces[i] = buf + i * plen;
    piece_encode(s->k, s->m, obj, len, pieces);
    return plen;
}

/* Rewrite the members marked in fix from object obj; what cannot be written is queued. */
static void repair(struct bset *s, const char *key, const uint8_t *obj, size_t len, const bool fix[])
{
    bool any = false;
    for (unsigned i = 0; i < s->sp.n; i++)
        any |= fix[i];
    if (!any)
        return;
    uint8_t *pieces[PIECE_MAX];
    size_t plen = encode(s, obj, len, pieces);
    put_job jobs[PIECE_MAX];
    put_all(s, key, pieces, plen, fix, true, false, jobs);
    db_batch *b = NULL;
    for (unsigned i = 0; i < s->sp.n; i++) {
        if (!fix[i])
            continue;
        if (jobs[i].rc == 0) {
            log_warn("backend '%s': piece %u of %s (store %llu) was missing or damaged and is rewritten",
                     s->sp.of[i], piece_index(s, i), key, (unsigned long long)s->sp.sid);
            continue;
        }
        if (!b)
            b = db_batch_new();
        queue_put(b, s, i, key, len);
    }
    if (b)
        db_batch_commit(b, true);
    free(pieces[0]);
}

/* ------------------------------------------------------------- the ops --- */

static int set_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    struct bset *s = st;
    if (len == 0 || len > PIECE_OBJ_MAX)
        return err_set(err, MB_EINVAL, "a set stores objects of 1 byte to %u MiB", PIECE_OBJ_MAX >> 20);
    uint8_t *pieces[PIECE_MAX];
    size_t plen = encode(s, data, len, pieces);
    bool want[PIECE_MAX];
    put_job jobs[PIECE_MAX], again[PIECE_MAX];
    /* Members in backoff are left to the queue while the others can make the put durable. When
     * they cannot, or turn out not to (one more failed meanwhile), the failed ones are tried once
     * more, backoff or not: a backoff is a guess, a failed upload is not. */
    unsigned up = 0, ok = 0;
    for (unsigned i = 0; i < s->sp.n; i++) {
        want[i] = true;
        up += s->in[i] && !member_down(s->sp.of[i]);
    }
    put_all(s, key, pieces, plen, want, false, up < s->need, jobs);
    for (unsigned i = 0; i < s->sp.n; i++)
        ok += (want[i] = jobs[i].rc != 0) == false;
    if (ok < s->need && up >= s->need) {
        put_all(s, key, pieces, plen, want, false, true, again);
        for (unsigned i = 0; i < s->sp.n; i++)
            if (want[i] && again[i].rc == 0)
                jobs[i] = again[i], ok++;
    }
    free(pieces[0]);
    if (ok < s->need) {
        char why[sizeof err->msg] = "";
        for (unsigned i = 0, at = 0; i < s->sp.n && at < sizeof why; i++)
            if (jobs[i].rc)
                at += (unsigned)snprintf(why + at, sizeof why - at, "%s%s", at ? "; " : "", jobs[i].e.msg);
        return err_set(err, MB_EBUSY, "only %u of the %u backends of the set took the chunk, %u needed (%s)", ok,
                       s->sp.n, s->need, why);
    }
    if (ok == s->sp.n)
        return 0;
    db_batch *b = db_batch_new();
    for (unsigned i = 0; i < s->sp.n; i++)
        if (jobs[i].rc)
            queue_put(b, s, i, key, len);
    if (db_batch_commit(b, true))
        return err_set(err, MB_EIO, "the missing pieces of a chunk could not be queued");
    return 0;
}

typedef struct fetch_job {
    struct bset *s;
    unsigned i;
    const char *key;
    size_t cap;
    uint8_t *buf;
    int64_t got;
    mb_err e;
    pthread_t t;
    bool threaded, done;
} fetch_job;

static void *fetch_main(void *a)
{
    fetch_job *j = a;
    j->got = fetch(j->s, j->i, j->key, j->cap, &j->buf, &j->e);
    return NULL;
}

/* Fetch the pieces of members order[0..count) at once, one thread each (a member's answer
 * time is what a read of an erasure set waits for, k times over when they are read in turn). */
static void fetch_all(struct bset *s, const unsigned order[], unsigned count, const char *key, size_t cap,
                      fetch_job jobs[])
{
    for (unsigned o = 0; o < count; o++) {
        fetch_job *j = &jobs[order[o]];
        *j = (fetch_job){.s = s, .i = order[o], .key = key, .cap = cap, .done = true};
        j->threaded = pthread_create(&j->t, NULL, fetch_main, j) == 0;
        if (!j->threaded)
            fetch_main(j);
    }
    for (unsigned o = 0; o < count; o++)
        if (jobs[order[o]].threaded)
            pthread_join(jobs[order[o]].t, NULL);
}

/* How many sound pieces hold the object that member b's piece is of. */
static unsigned same_object(const struct bset *s, const piece_hdr hs[], const bool sound[], unsigned b)
{
    unsigned c = 0;
    for (unsigned i = 0; i < s->sp.n; i++)
        c += sound[i] && hs[i].tag == hs[b].tag && hs[i].len == hs[b].len;
    return c;
}

/* The object of key, read and decoded from sound pieces into a new buffer (*obj, *len), the
 * members found missing or damaged marked in bad[]. With all (the scrub), every member is read,
 * one that did not answer once more after the others, and *unread counts those that still did
 * not (err says why; their pieces are neither sound nor bad). 0, MB_ENOENT when no member has
 * a piece, another MB_E* when too few are sound. */
static int gather(struct bset *s, const char *key, size_t want, bool all, uint8_t **obj, size_t *len, bool bad[],
                  unsigned *unread, mb_err *err)
{
    unsigned n = s->sp.n, order[PIECE_MAX], good = 0, answered_none = 0, failed = 0, damaged = 0;
    uint8_t *have[PIECE_MAX] = {0}; /* by piece index */
    uint8_t *buf[PIECE_MAX] = {0};  /* by member */
    bool sound[PIECE_MAX] = {0};
    piece_hdr hs[PIECE_MAX];
    unsigned best = 0; /* the member whose object (tag) most sound pieces belong to */
    mb_err last = {0};
    for (unsigned i = 0; i < n; i++)
        order[i] = i, bad[i] = false;
    if (!s->sp.erasure) /* copies: the quickest first */
        for (unsigned a = 1; a < n; a++)
            for (unsigned b = a; b > 0 && member_rank(s->sp.of[order[b]]) < member_rank(s->sp.of[order[b - 1]]); b--) {
                unsigned t = order[b];
                order[b] = order[b - 1], order[b - 1] = t;
            }
    size_t cap = PIECE_HDR + piece_shard(want ? want : 1, s->k) + PIECE_SUM;
    /* Erasure: the k data pieces (every piece for the scrub) at once; the parity ones below,
     * in turn, only for those missing or unsound. Copies: one at a time, the quickest first. */
    fetch_job pre[PIECE_MAX];
    for (unsigned i = 0; i < n; i++)
        pre[i].done = false;
    if (s->sp.erasure && s->k > 1)
        fetch_all(s, order, all ? n : s->k, key, cap, pre);
    bool unreached[PIECE_MAX] = {0};
    for (unsigned pass = 0; pass < 2; pass++) {
        for (unsigned o = 0; o < n; o++) {
            unsigned i = order[o];
            if (pass && !unreached[i])
                continue;
            if (pass) /* the scrub's second try (a member busy for a moment is not left unchecked) */
                failed--, unreached[i] = false;
            else if (!all && good && same_object(s, hs, sound, best) >= s->k)
                break;
            mb_err e = {0};
            int64_t got;
            if (!pass && pre[i].done)
                got = pre[i].got, buf[i] = pre[i].buf, e = pre[i].e;
            else
                got = fetch(s, i, key, cap, &buf[i], &e);
            if (got == MB_ENOENT) {
                answered_none++;
                bad[i] = true;
                continue;
            }
            if (got < 0) {
                failed++;
                unreached[i] = true;
                last = e;
                continue;
            }
            piece_hdr h;
            if (piece_parse(buf[i], (size_t)got, &h) || h.k != s->k || h.m != s->m || h.i != piece_index(s, i)) {
                log_error("backend '%s': piece %u of %s (store %llu) is damaged", s->sp.of[i], piece_index(s, i), key,
                          (unsigned long long)s->sp.sid);
                bad[i] = true;
                damaged++;
                continue;
            }
            sound[i] = true;
            hs[i] = h;
            if (!good++ || same_object(s, hs, sound, i) > same_object(s, hs, sound, best))
                best = i;
        }
        if (!all || !failed)
            break;
    }
    if (unread) {
        *unread = failed;
        if (failed && err)
            *err = last;
    }
    for (unsigned i = 0; i < n; i++) /* fetched at once but not looked at (cannot happen today) */
        if (pre[i].done && buf[i] != pre[i].buf)
            free(pre[i].buf);
    /* Pieces of another object under the same name (sealed again, see piece.c) are as good as
     * damaged: rewritten from the object most pieces hold. */
    unsigned agree = good ? same_object(s, hs, sound, best) : 0;
    for (unsigned i = 0; i < n; i++) {
        if (!sound[i])
            continue;
        if (hs[i].tag != hs[best].tag || hs[i].len != hs[best].len) {
            bad[i] = true;
            damaged++;
        } else if (!have[hs[i].i]) /* a second sound copy (the scrub reads them all) is not needed */
            have[hs[i].i] = buf[i];
    }
    good = agree;
    int rc = 0;
    if (good >= s->k) {
        *len = (size_t)hs[best].len;
        *obj = xmalloc(*len);
        rc = piece_decode(s->k, s->m, have, *len, *obj);
        if (rc)
            free(*obj);
    } else if (good + damaged == 0 && answered_none)
        /* (some members may not have answered: those that did have nothing) */
        rc = err_set(err, MB_ENOENT, "no backend of the set has %s", key);
    else
        rc = err_set(err, damaged ? MB_EINTEGRITY : last.code ? last.code : MB_EIO,
                     "only %u of the %u pieces of %s needed are sound (%u damaged, %u missing, %u unreachable%s%s)",
                     good, s->k, key, damaged, answered_none, failed, failed ? ": " : "", failed ? last.msg : "");
    for (unsigned i = 0; i < n; i++)
        free(buf[i]);
    return rc;
}

/* Bytes [off, off + len) of an erasure-coded object from the data pieces that hold them alone,
 * each read from its start to the part's end (no parity, no other data piece). Their headers
 * must agree (length, tag); the checksum is not checked (the piece is not read whole; the kernel
 * reads whole objects and checks those). The bytes read, or a negative code when a piece is
 * missing or disagrees: the caller then reads the whole object (decoded and repaired). */
static int64_t part_get(struct bset *s, const char *key, uint64_t off, uint8_t *out, size_t len)
{
    char pn[PNAME_MAX];
    uint8_t hdr[PIECE_HDR];
    piece_hdr h0, h;
    mb_err e = {0};
    piece_name(s, 0, key, pn, sizeof pn);
    if (!s->in[0] || s->mem[0].ops.get(s->mem[0].state, pn, 0, hdr, PIECE_HDR, &e) != PIECE_HDR ||
        piece_parse_header(hdr, PIECE_HDR, &h0) || h0.k != s->k || h0.m != s->m || h0.i != 0)
        return MB_EIO;
    uint64_t S = piece_shard(h0.len, s->k), end = off + len < h0.len ? off + len : h0.len;
    if (off >= end)
        return 0;
    for (uint64_t j = off / S; j * S < end; j++) {
        uint64_t a = (off > j * S ? off : j * S) - j * S, b = (end < (j + 1) * S ? end : (j + 1) * S) - j * S;
        uint8_t *tmp = xmalloc(PIECE_HDR + b);
        piece_name(s, (unsigned)j, key, pn, sizeof pn);
        int64_t got = s->in[j] ? s->mem[j].ops.get(s->mem[j].state, pn, 0, tmp, PIECE_HDR + b, &e) : MB_EBUSY;
        bool ok = got == (int64_t)(PIECE_HDR + b) && !piece_parse_header(tmp, PIECE_HDR, &h) && h.k == s->k &&
                  h.m == s->m && h.i == j && h.len == h0.len && h.tag == h0.tag;
        if (ok)
            memcpy(out + (j * S + a - off), tmp + PIECE_HDR + a, b - a);
        free(tmp);
        if (!ok)
            return MB_EIO;
    }
    return (int64_t)(end - off);
}

static int64_t set_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    struct bset *s = st;
    if (s->sp.erasure && off > 0) { /* a part: see part_get (the kernel itself reads whole objects) */
        int64_t n = part_get(s, key, off, buf, len);
        if (n >= 0)
            return n;
    }
    uint8_t *obj;
    size_t olen;
    bool bad[PIECE_MAX];
    int rc = gather(s, key, (size_t)(off + len), false, &obj, &olen, bad, NULL, err);
    if (rc)
        return rc;
    repair(s, key, obj, olen, bad);
    size_t n = off >= olen ? 0 : olen - off < len ? olen - off : len;
    memcpy(buf, obj + off, n);
    free(obj);
    return (int64_t)n;
}

int backend_set_check(backend_ref *r, const char *key, size_t objlen, mb_err *err)
{
    struct bset *s = r->set;
    uint8_t *obj;
    size_t olen;
    bool bad[PIECE_MAX];
    unsigned unread = 0;
    mb_err why = {0};
    int rc = gather(s, key, objlen, true, &obj, &olen, bad, &unread, &why);
    if (rc) {
        if (err)
            *err = why;
        return rc;
    }
    repair(s, key, obj, olen, bad);
    free(obj);
    if (unread) /* what could be checked was (and rewritten); the rest is not known sound */
        return err_set(err, MB_EIO, "%u piece(s) of %s could not be read to be checked: %s", unread, key, why.msg);
    return 0;
}

static int set_has(void *st, const char *key, mb_err *err)
{
    struct bset *s = st;
    unsigned found = 0, failed = 0;
    for (unsigned i = 0; i < s->sp.n; i++) {
        char pn[PNAME_MAX];
        piece_name(s, i, key, pn, sizeof pn);
        int h = s->in[i] ? s->mem[i].ops.has(s->mem[i].state, pn, err) : MB_EBUSY;
        found += h == 1;
        failed += h < 0;
    }
    return found >= s->k ? 1 : failed ? MB_EIO : 0;
}

static int set_stat(void *st, const char *key, uint64_t *size, int64_t *mtime, mb_err *err)
{
    (void)st, (void)key, (void)size, (void)mtime, (void)err;
    return 0; /* see the top of the file: put skips the pieces that are there */
}

static int set_del(void *st, const char *key, mb_err *err)
{
    struct bset *s = st;
    int rc = 0;
    db_batch *b = db_batch_new();
    for (unsigned i = 0; i < s->sp.n; i++) {
        char pn[PNAME_MAX], qk[256];
        piece_name(s, i, key, pn, sizeof pn);
        mb_err e = {0};
        int d = !s->in[i]                 ? err_set(&e, MB_EBUSY, "backend '%s' is not available", s->sp.of[i])
                : member_down(s->sp.of[i]) ? err_set(&e, MB_EBUSY, "backend '%s' is down", s->sp.of[i])
                                           : s->mem[i].ops.del(s->mem[i].state, pn, &e);
        if (d < 0 && !rc) {
            rc = d;
            if (err)
                *err = e;
        }
        queue_prefix(s, i, qk, sizeof qk);
        snprintf(qk + strlen(qk), sizeof qk - strlen(qk), "%s", pn);
        if (d == 0)
            db_batch_del(b, qk, strlen(qk));
    }
    db_batch_commit(b, false);
    return rc;
}

static const mb_blob_backend set_ops = {
    .size = sizeof(mb_blob_backend),
    .name = "set",
    .put = set_put,
    .get = set_get,
    .has = set_has,
    .del = set_del,
    .list = NULL,
    .stat = set_stat,
};

int backend_set_open(const backend_set_spec *spec, backend_ref *out, mb_err *err)
{
    (void)err;
    memset(out, 0, sizeof *out);
    struct bset *s = xcalloc(1, sizeof *s);
    s->sp = *spec;
    s->k = spec->erasure ? spec->k : 1;
    s->m = spec->erasure ? spec->m : 0;
    /* erasure: k + 1, so that one more loss before the queue drains loses nothing */
    s->need = spec->erasure ? (spec->k + 1 < spec->n ? spec->k + 1 : spec->n) : spec->copies;
    for (unsigned i = 0; i < spec->n; i++) {
        mb_err e = {0};
        s->in[i] = backend_enter(spec->of[i], &s->mem[i], &e) == 0;
    }
    out->ops = set_ops;
    out->state = s;
    out->set = s;
    snprintf(out->name, sizeof out->name, "set");
    return 0;
}

void backend_set_close(struct bset *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->sp.n; i++)
        if (s->in[i])
            backend_leave(&s->mem[i]);
    free(s);
}

/* ------------------------------------------------------------- the queue --- */

long backend_set_queued(const char *name)
{
    char p[64];
    snprintf(p, sizeof p, "rq/%s/", name);
    long n = 0;
    db_iter *it = db_iter_prefix(p, strlen(p));
    while (db_iter_next(it))
        n++;
    db_iter_free(it);
    return n;
}

/* One queue entry "rq/<member>/<sid16>/<piece name>": 0 done (written, or nothing left to write
 * it for: the store or the object is gone), else the member is still unreachable. */
static int retry_one(const char *qk, size_t len)
{
    char member[BACKEND_NAME_MAX + 1], sidhex[17], pname[PNAME_MAX];
    const char *a = qk + 3, *b = strchr(a, '/');
    if (!b || b - a > BACKEND_NAME_MAX || strlen(b + 1) < 18 || b[17] != '/')
        return 0;
    snprintf(member, sizeof member, "%.*s", (int)(b - a), a);
    snprintf(sidhex, sizeof sidhex, "%.16s", b + 1);
    snprintf(pname, sizeof pname, "%s", b + 18);
    const char *key = strchr(pname, '/');
    if (!key || member_down(member))
        return key ? 1 : 0;
    key++;
    backend_ref r;
    mb_err e = {0};
    uint64_t sid = strtoull(sidhex, NULL, 16);
    int rc = backend_for_store(sid, &r, &e);
    if (rc == 1 || rc == MB_ENOENT || (rc == 0 && !r.set)) {
        if (rc == 0)
            backend_leave(&r);
        return 0; /* the store is gone or no longer on a set */
    }
    if (rc)
        return 1;
    struct bset *s = r.set;
    unsigned i = 0;
    char pn[PNAME_MAX];
    for (; i < s->sp.n; i++) {
        piece_name(s, i, key, pn, sizeof pn);
        if (!strcmp(s->sp.of[i], member) && !strcmp(pn, pname))
            break;
    }
    int out = 0;
    if (i < s->sp.n) {
        uint8_t *obj;
        size_t olen;
        bool bad[PIECE_MAX];
        rc = gather(s, key, len, false, &obj, &olen, bad, NULL, &e);
        if (rc == 0) {
            uint8_t *pieces[PIECE_MAX];
            size_t plen = encode(s, obj, olen, pieces);
            out = put_piece(s, i, key, pieces[piece_index(s, i)], plen, false, true, &e) ? 1 : 0;
            if (!out)
                log_info("backend '%s' is back: queued piece %s of store %llu is written", member, pname,
                         (unsigned long long)sid);
            free(pieces[0]);
            free(obj);
        } else if (rc != MB_ENOENT) /* ENOENT: the object was deleted */
            out = 1;
    }
    backend_leave(&r);
    return out;
}

static pthread_t q_thread;
static bool q_running, q_stop;
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;

#define RETRY_BATCH 64

static void retry_round(void)
{
    char *keys[RETRY_BATCH];
    size_t lens[RETRY_BATCH], n = 0;
    db_iter *it = db_iter_prefix("rq/", 3);
    while (n < RETRY_BATCH && db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *slash = memchr(k + 3, '/', kl - 3);
        if (slash && slash - (k + 3) <= BACKEND_NAME_MAX) {
            char member[BACKEND_NAME_MAX + 1], past[BACKEND_NAME_MAX + 8];
            snprintf(member, sizeof member, "%.*s", (int)(slash - (k + 3)), k + 3);
            if (member_down(member)) { /* its entries wait: on to the next member's ("/" + 1 is "0") */
                snprintf(past, sizeof past, "rq/%s0", member);
                db_iter_seek(it, past, strlen(past));
                continue;
            }
        }
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        lens[n] = (size_t)json_integer_value(json_object_get(rec, "len"));
        json_decref(rec);
        keys[n] = xmalloc(kl + 1);
        memcpy(keys[n], k, kl);
        keys[n++][kl] = 0;
    }
    db_iter_free(it);
    for (size_t i = 0; i < n; i++) {
        if (retry_one(keys[i], lens[i]) == 0)
            db_del(keys[i], strlen(keys[i]), true);
        free(keys[i]);
    }
}

static void *retry_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q_mu);
    while (!q_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&q_cv, &q_mu, &ts);
        if (q_stop)
            break;
        pthread_mutex_unlock(&q_mu);
        retry_round();
        pthread_mutex_lock(&q_mu);
    }
    pthread_mutex_unlock(&q_mu);
    return NULL;
}

void backend_set_init(void)
{
    pthread_mutex_lock(&q_mu);
    q_stop = false;
    q_running = pthread_create(&q_thread, NULL, retry_main, NULL) == 0;
    pthread_mutex_unlock(&q_mu);
}

void backend_set_fini(void)
{
    pthread_mutex_lock(&q_mu);
    bool running = q_running;
    q_stop = true;
    q_running = false;
    pthread_cond_broadcast(&q_cv);
    pthread_mutex_unlock(&q_mu);
    if (running)
        pthread_join(q_thread, NULL);
    pthread_mutex_lock(&health_mu);
    memset(health, 0, sizeof health);
    pthread_mutex_unlock(&health_mu);
}
