/*
 * db_repl.c — the queue of cluster-wide changes (cluster mode; docs/cluster.md, cluster_kv.c).
 * Once db_replicate is called, every batch that writes a key for which wide(key) holds gets one
 * more put, "cq/<seq16>": the batch's wide puts and deletes, encoded below. It is written in the
 * same LevelDB write as the change (atomic with it, durable as it is), under the replication
 * lock, and kick() wakes cluster_kv.c's publisher after the write. A batch marked
 * db_batch_from_cluster (what another node wrote, applied here) is not queued again; the
 * applier holds the same lock between its check of the queue and its write.
 *
 * Threads: any writer; the lock orders queue entries and keeps the applier's check-then-write
 * whole. Without cluster mode nothing here runs but one atomic load per write.
 */
#include "db_int.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    _Atomic bool on;
    bool (*wide)(const char *, size_t);
    void (*kick)(void);
    pthread_mutex_t mu; /* a wide write and its queue entry; the applier's check-then-write */
    uint64_t seq;       /* mu: the last cq/ entry's number */
} repl = {.mu = PTHREAD_MUTEX_INITIALIZER};

bool db_repl_wide(const char *key, size_t klen) { return atomic_load(&repl.on) && repl.wide(key, klen); }

/* A queue entry's value: for each wide op, 'P' or 'D', the key's length (4 bytes, little
 * endian) and the key, and for a put the value's length and the value. */
void db_ops_add(db_ops *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 64;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->n, p, n);
    o->n += n;
}

static void ops_len(db_ops *o, size_t n)
{
    uint8_t l[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    db_ops_add(o, l, 4);
}

void db_ops_put(db_ops *o, const char *k, size_t kl, const char *v, size_t vl)
{
    db_ops_add(o, "P", 1);
    ops_len(o, kl);
    db_ops_add(o, k, kl);
    ops_len(o, vl);
    db_ops_add(o, v, vl);
}

void db_ops_del(db_ops *o, const char *k, size_t kl)
{
    db_ops_add(o, "D", 1);
    ops_len(o, kl);
    db_ops_add(o, k, kl);
}

struct repl_enc {
    db_ops o;
    bool (*keep)(const char *k, size_t kl, char op, void *ud);
    void *ud;
};

static void enc_put(void *ud, const char *k, size_t kl, const char *v, size_t vl)
{
    struct repl_enc *e = ud;
    if (e->keep(k, kl, 'P', e->ud))
        db_ops_put(&e->o, k, kl, v, vl);
}

static void enc_del(void *ud, const char *k, size_t kl)
{
    struct repl_enc *e = ud;
    if (e->keep(k, kl, 'D', e->ud))
        db_ops_del(&e->o, k, kl);
}

char *db_batch_encode(const db_batch *b, bool (*keep)(const char *k, size_t kl, char op, void *ud), void *ud,
                      size_t *n)
{
    struct repl_enc e = {.keep = keep, .ud = ud};
    leveldb_writebatch_iterate(b->wb, &e, enc_put, enc_del);
    *n = e.o.n;
    return e.o.p;
}

static bool keep_wide(const char *k, size_t kl, char op, void *ud)
{
    (void)op;
    (void)ud;
    return repl.wide(k, kl);
}

static size_t rd_len(const char *v, size_t n, size_t *off)
{
    if (n - *off < 4)
        return SIZE_MAX;
    const uint8_t *l = (const uint8_t *)v + *off;
    *off += 4;
    size_t len = (size_t)l[0] | (size_t)l[1] << 8 | (size_t)l[2] << 16 | (size_t)l[3] << 24;
    return len <= n - *off ? len : SIZE_MAX;
}

int db_repl_next(const char *v, size_t n, size_t *off, const char **key, size_t *klen, const char **val,
                 size_t *vlen)
{
    if (*off >= n)
        return 0;
    char op = v[(*off)++];
    if (op != 'P' && op != 'D')
        return -1;
    if ((*klen = rd_len(v, n, off)) == SIZE_MAX)
        return -1;
    *key = v + *off;
    *off += *klen;
    *val = NULL;
    *vlen = 0;
    if (op == 'P') {
        if ((*vlen = rd_len(v, n, off)) == SIZE_MAX)
            return -1;
        *val = v + *off;
        *off += *vlen;
    }
    return op;
}

void db_replicate(bool (*wide)(const char *key, size_t klen), void (*kick)(void))
{
    pthread_mutex_lock(&repl.mu);
    repl.wide = wide;
    repl.kick = kick;
    repl.seq = db_last_seq("cq/"); /* entries not yet handed on: number after them */
    atomic_store(&repl.on, true);
    pthread_mutex_unlock(&repl.mu);
}

void db_replicate_off(void) { atomic_store(&repl.on, false); }
void db_batch_from_cluster(db_batch *b) { b->remote = true; }
void db_repl_lock(void) { pthread_mutex_lock(&repl.mu); }
void db_repl_unlock(void) { pthread_mutex_unlock(&repl.mu); }

bool db_repl_queue(db_batch *b)
{
    if (!atomic_load(&repl.on) || b->remote)
        return false;
    size_t n;
    char *p = db_batch_encode(b, keep_wide, NULL, &n);
    if (!n) {
        free(p);
        return false;
    }
    pthread_mutex_lock(&repl.mu);
    char key[20], k16[17];
    key_u64(k16, ++repl.seq);
    snprintf(key, sizeof key, "cq/%s", k16);
    leveldb_writebatch_put(b->wb, key, 19, p, n);
    free(p);
    return true;
}

void db_repl_done(bool written)
{
    pthread_mutex_unlock(&repl.mu);
    if (written)
        repl.kick();
}
