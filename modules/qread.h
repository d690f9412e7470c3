/*
 * modules/qread.h — reading a module's queue (its keys under a prefix) from where the last read
 * stopped. A deleted key stays in LevelDB as a tombstone until a compaction carries it to the
 * bottom level, and a scan from the prefix's start steps over every one of them, so a queue
 * read from its front after each batch costs more the more it has carried: at a million
 * uploads the thumbnails worker's scans took a tenth of mbyted's CPU. A reader passes the last
 * key it was given (api->kv_scan_after) and reads from the front only when nothing is after
 * that key and a writer said it wrote behind it (qread_wrote: keys named by path, written by
 * 16 uploads at once, land on both sides), and at least every QREAD_FRONT_MS (a key written
 * behind it unannounced, such as a sequence number taken before another's but committed after
 * it, waits at most that long). A kernel without kv_scan_after: always the front. Header only;
 * shared by the thumbnails, search and tags modules. One reader per thread; writers on other
 * threads call qread_wrote.
 */
#ifndef MBYTE_QREAD_H
#define MBYTE_QREAD_H
#include "mbyte.h"
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QREAD_FRONT_MS 10000
#define QREAD_PACE_MS 200

typedef struct qread {
    pthread_mutex_t mu; /* guards behind, and last against writers (the reader swaps it under it) */
    char *last;         /* the last key given to the reader's fn, or NULL */
    bool behind;        /* a key was written before last since the last read from the front */
    int64_t front_ms;   /* when it last read from the front (CLOCK_MONOTONIC) */
} qread;

static inline void qread_init(qread *r)
{
    *r = (qread){.front_ms = 0};
    pthread_mutex_init(&r->mu, NULL);
}

static inline void qread_fini(qread *r)
{
    free(r->last);
    r->last = NULL;
    pthread_mutex_destroy(&r->mu);
}

/* A writer committed key (NULL: some key, unknown) to the queue r reads: behind where r stopped? */
static inline void qread_wrote(qread *r, const char *key)
{
    pthread_mutex_lock(&r->mu);
    if (!key || (r->last && strcmp(key, r->last) <= 0))
        r->behind = true;
    pthread_mutex_unlock(&r->mu);
}

typedef struct qread_call {
    int (*fn)(const char *key, const void *value, size_t len, void *ud);
    void *ud;
    int n;
    char *last; /* the last key given to fn (grown as needed), or NULL */
    size_t cap;
    bool lost;  /* a key could not be kept: the next read is from the front */
} qread_call;

static int qread_one(const char *key, const void *value, size_t len, void *ud)
{
    qread_call *c = ud;
    size_t kl = strlen(key) + 1;
    if (kl > c->cap) {
        char *b = realloc(c->last, kl);
        if (b)
            c->last = b, c->cap = kl;
    }
    if (kl <= c->cap)
        memcpy(c->last, key, kl);
    else
        c->lost = true;
    c->n++;
    return c->fn(key, value, len, c->ud);
}

/* fn (as kv_scan's) over prefix's keys for reader r: after its last key, or from the front.
 * Only the reader's thread changes r->last, so it reads it without the lock. */
static inline void qread_scan(const mb_api *api, mb_module *self, qread *r, const char *prefix,
                              int (*fn)(const char *key, const void *value, size_t len, void *ud), void *ud)
{
    qread_call c = {fn, ud, 0, NULL, 0, false};
    mb_err e;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    bool after = r->last && now - r->front_ms < QREAD_FRONT_MS && api->size > offsetof(mb_api, kv_scan_after);
    if (after)
        api->kv_scan_after(self, prefix, r->last, qread_one, &c, &e);
    pthread_mutex_lock(&r->mu);
    bool front = !after || (!c.n && r->behind); /* what is behind waits until nothing is ahead */
    if (front)
        r->behind = false; /* before the read: a key written during it sets it again */
    pthread_mutex_unlock(&r->mu);
    if (front) {
        r->front_ms = now;
        api->kv_scan(self, prefix, qread_one, &c, &e);
    }
    pthread_mutex_lock(&r->mu);
    if (c.n && !c.lost) {
        free(r->last);
        r->last = c.last;
        c.last = NULL;
    } else if (c.lost) {
        free(r->last);
        r->last = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    free(c.last);
}

/* A reader whose last read found only a few keys (it is ahead of the writers) sleeps
 * QREAD_PACE_MS on cv, with mu held, whatever signals come (unless *stop): a few keys gather
 * meanwhile, instead of a read of the queue for each one a writer adds. */
static inline void qread_pace(pthread_cond_t *cv, pthread_mutex_t *mu, const bool *stop)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += QREAD_PACE_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (!*stop && pthread_cond_timedwait(cv, mu, &until) == 0) {
    }
}

#endif
