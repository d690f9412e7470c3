/*
 * blob_pending.c — the pending table: chunks a write in flight has stored but not yet committed.
 *
 * A write marks each chunk it stores (blob_pending_add) until its transaction committed or failed
 * (blob_pending_drop, or blob_pending_drop_discard which deletes a chunk nobody reaches). The
 * collector deletes a chunk only when no write holds it (blob_del_unheld), so a chunk being
 * written again is never collected from under the write.
 *
 * In cluster mode the leader's collector (cluster_gc.c) condemns chunks on shared backends that no
 * node claims: from this node's answer until the leader releases it (or the hold ends), a write
 * that would take a condemned chunk waits in blob_pending_add, so it stores the chunk again after
 * the delete instead of counting on an object that is about to go.
 *
 * Threads: any writer thread and the collector. pend_lock guards the table and the condemned; the
 * collector's check and delete happen under it, so a writer that marks the chunk meanwhile waits
 * for the delete.
 */
#include "fs.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Open addressing on the first 64 bits of the hash (already uniform); entries are hash +
 * count. The table grows by doubling; deleted slots are tombstones dropped on growth. */
typedef struct pend {
    char hash[65];
    int count; /* 0 empty, -1 tombstone */
} pend;

static pthread_mutex_t pend_lock = PTHREAD_MUTEX_INITIALIZER;
static pend *ptab;
static size_t pcap, pused;
static json_t *condemned; /* hash -> until, monotonic ms (NULL: none yet) */
static pthread_cond_t condemn_cv = PTHREAD_COND_INITIALIZER;

/* Under pend_lock: hash is condemned for at least left_ms more (an ended hold is dropped). */
static bool condemned_for(const char *hash, int64_t left_ms)
{
    json_t *u = condemned ? json_object_get(condemned, hash) : NULL;
    if (!u)
        return false;
    int64_t left = json_integer_value(u) - now_mono_ms();
    if (left <= 0)
        json_object_del(condemned, hash);
    return left > left_ms;
}

static uint64_t phash(const char *h)
{
    uint64_t v = 0;
    for (int i = 0; i < 16 && h[i]; i++)
        v = v * 16 + (uint64_t)(h[i] <= '9' ? h[i] - '0' : h[i] - 'a' + 10);
    return v;
}

static pend *pfind(const char *h, bool create)
{
    if (create && (pused + 1) * 2 > pcap) {
        size_t ncap = pcap ? pcap * 2 : 256;
        pend *nt = xcalloc(ncap, sizeof *nt);
        for (size_t i = 0; i < pcap; i++)
            if (ptab[i].count > 0) {
                size_t j = (size_t)phash(ptab[i].hash) & (ncap - 1);
                while (nt[j].count)
                    j = (j + 1) & (ncap - 1);
                nt[j] = ptab[i];
            }
        free(ptab);
        ptab = nt;
        pcap = ncap;
        pused = 0;
        for (size_t i = 0; i < pcap; i++)
            pused += ptab[i].count > 0;
    }
    if (!pcap)
        return NULL;
    size_t j = (size_t)phash(h) & (pcap - 1);
    pend *tomb = NULL;
    for (size_t n = 0; n < pcap; n++, j = (j + 1) & (pcap - 1)) {
        if (ptab[j].count == 0)
            break;
        if (ptab[j].count < 0) {
            if (!tomb)
                tomb = &ptab[j];
            continue;
        }
        if (!strcmp(ptab[j].hash, h))
            return &ptab[j];
    }
    if (!create)
        return NULL;
    pend *p = tomb ? tomb : &ptab[j];
    if (p->count == 0)
        pused++;
    snprintf(p->hash, sizeof p->hash, "%s", h);
    p->count = 0;
    return p;
}

void blob_pending_add(const char *hash)
{
    pthread_mutex_lock(&pend_lock);
    while (condemned_for(hash, 0)) { /* the leader's collector is deleting it: store it again after */
        struct timespec ts;
        wait_deadline(&ts, CLOCK_REALTIME, 100); /* and look at the hold's end again */
        pthread_cond_timedwait(&condemn_cv, &pend_lock, &ts);
    }
    pend *p = pfind(hash, true);
    p->count++;
    pthread_mutex_unlock(&pend_lock);
}

void blob_pending_drop(const char *hash)
{
    pthread_mutex_lock(&pend_lock);
    pend *p = pfind(hash, false);
    if (p && --p->count == 0)
        p->count = -1;
    pthread_mutex_unlock(&pend_lock);
}

/* A failed write lets go of a chunk: when no other write holds it and no refcount record
 * names it, nobody can reach it, so it goes now instead of waiting for the collector. The
 * caller holds the commit lock (gc_discard). */
void blob_pending_drop_discard(const char *hash)
{
    pthread_mutex_lock(&pend_lock);
    pend *p = pfind(hash, false);
    if (p && --p->count == 0) {
        p->count = -1;
        char key[80], *v = NULL;
        snprintf(key, sizeof key, "c/%s", hash);
        if (db_get(key, strlen(key), &v, NULL) == MB_ENOENT) {
            mb_err e = {0};
            blob_del_mine(hash, &e);
        }
        free(v);
    }
    pthread_mutex_unlock(&pend_lock);
}


/* The collector's delete (gc.c, under the commit lock): the pending check and the delete under
 * the pending lock, so a writer that marks the chunk pending meanwhile waits for the delete and
 * then stores it again. 0 deleted, 1 held by a write, or a negative MB_E* (err set). */
int blob_del_unheld(const char *hash, mb_err *err)
{
    pthread_mutex_lock(&pend_lock);
    int rc = pfind(hash, false) ? 1 : blob_del_mine(hash, err);
    pthread_mutex_unlock(&pend_lock);
    return rc;
}

json_t *blob_pending_snapshot(void)
{
    json_t *out = json_array();
    pthread_mutex_lock(&pend_lock);
    for (size_t i = 0; i < pcap; i++)
        if (ptab[i].count > 0)
            json_array_append_new(out, json_string(ptab[i].hash));
    pthread_mutex_unlock(&pend_lock);
    return out;
}

bool blob_pending_held(const char *hash)
{
    pthread_mutex_lock(&pend_lock);
    bool held = pfind(hash, false) != NULL;
    pthread_mutex_unlock(&pend_lock);
    return held;
}

int blob_pending_unheld(const char *hash, int (*fn)(void *ud), void *ud)
{
    pthread_mutex_lock(&pend_lock);
    int rc = pfind(hash, false) ? 1 : fn(ud);
    pthread_mutex_unlock(&pend_lock);
    return rc;
}

bool blob_condemn(const char *hash, int64_t until_ms)
{
    pthread_mutex_lock(&pend_lock);
    bool held = pfind(hash, false) != NULL;
    if (!held) {
        if (!condemned)
            condemned = json_object();
        json_t *had = json_object_get(condemned, hash); /* a hold is never shortened */
        if (!had || json_integer_value(had) < until_ms)
            json_object_set_new(condemned, hash, json_integer(until_ms));
    }
    pthread_mutex_unlock(&pend_lock);
    return !held;
}

void blob_condemn_end(const char *hash)
{
    pthread_mutex_lock(&pend_lock);
    if (condemned && json_object_del(condemned, hash) == 0)
        pthread_cond_broadcast(&condemn_cv);
    pthread_mutex_unlock(&pend_lock);
}

bool blob_condemned(const char *hash, int64_t left_ms)
{
    pthread_mutex_lock(&pend_lock);
    bool c = condemned_for(hash, left_ms);
    pthread_mutex_unlock(&pend_lock);
    return c;
}

void blob_pending_fini(void)
{
    pthread_mutex_lock(&pend_lock);
    json_decref(condemned);
    condemned = NULL;
    free(ptab);
    ptab = NULL;
    pcap = pused = 0;
    pthread_mutex_unlock(&pend_lock);
}
