/*
 * throttle.c — the one failure throttle of the server: login passwords (auth.c, for HTTP and
 * FTP alike) and share-link passwords (the sharing module, through mb_api) count their
 * failures here instead of in three tables of their own.
 *
 * A throttle is named and lives until the process ends, so a module reload keeps its counts.
 * It counts failures per key in a fixed window that starts at the key's first failure.
 * Past `max` failures in the window a key either waits for the window's end (a lock: the
 * answer is 429 with Retry-After = what is really left) or, for a "slow" throttle, waits
 * `slow` seconds after each further failure: an account or link under attack from many
 * addresses is slowed, never locked against its owner. Callers combine throttles with
 * keys such as (account, address), address, account; see auth_login_wait.
 *
 * Memory is bounded: each throttle has THROTTLE_SLOTS slots; a key probes a few slots from its
 * hash and, when none is free or expired, takes the one whose window began longest ago.
 *
 * Threads: any. Each throttle has its own mutex; the list of throttles has one too.
 */
#include "kernel.h"
#include <stdio.h>
#include <string.h>

#define THROTTLE_SLOTS 2048
#define THROTTLE_PROBE 8
#define THROTTLE_KEY 160

typedef struct tslot {
    char key[THROTTLE_KEY];
    int64_t start, last; /* monotonic ms: the window's start, the latest failure */
    int count;
} tslot;

struct mb_throttle {
    struct mb_throttle *next;
    char name[64];
    int max, window, slow;
    pthread_mutex_t lock;
    tslot *slots; /* THROTTLE_SLOTS, allocated at the first failure */
};

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static mb_throttle *list;

mb_throttle *throttle_get(const char *name, int max, int window_s, int slow_s)
{
    pthread_mutex_lock(&list_lock);
    mb_throttle *t = list;
    while (t && strcmp(t->name, name))
        t = t->next;
    if (!t) {
        t = xcalloc(1, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
        pthread_mutex_init(&t->lock, NULL);
        t->next = list;
        list = t;
    }
    pthread_mutex_lock(&t->lock);
    t->max = max > 0 ? max : 1;
    t->window = window_s > 0 ? window_s : 1;
    t->slow = slow_s > 0 ? slow_s : 0;
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_unlock(&list_lock);
    return t;
}

static uint32_t key_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

/* The key's slot, or with create a fresh one for it; caller holds t->lock. */
static tslot *slot_find(mb_throttle *t, const char *key, int64_t now, bool create)
{
    if (!t->slots) {
        if (!create)
            return NULL;
        t->slots = xcalloc(THROTTLE_SLOTS, sizeof *t->slots);
    }
    uint32_t h = key_hash(key);
    tslot *take = NULL;
    bool take_idle = false;
    for (int i = 0; i < THROTTLE_PROBE; i++) {
        tslot *s = &t->slots[(h + (uint32_t)i) % THROTTLE_SLOTS];
        if (s->key[0] && !strncmp(s->key, key, THROTTLE_KEY - 1))
            return s;
        bool idle = !s->key[0] || now - s->start >= (int64_t)t->window * 1000;
        if (idle && !take_idle) {
            take = s;
            take_idle = true;
        } else if (!take_idle && (!take || s->start < take->start))
            take = s;
    }
    if (!create)
        return NULL;
    snprintf(take->key, sizeof take->key, "%s", key);
    take->start = now;
    take->last = now;
    take->count = 0;
    return take;
}

/* Milliseconds the key must still wait, 0 when it may try; caller holds t->lock. */
static int64_t wait_ms(const mb_throttle *t, const tslot *s, int64_t now)
{
    if (!s || now - s->start >= (int64_t)t->window * 1000 || s->count < t->max)
        return 0;
    int64_t until = t->slow ? s->last + (int64_t)t->slow * 1000 : s->start + (int64_t)t->window * 1000;
    return until > now ? until - now : 0;
}

static int64_t ms_to_s(int64_t ms) { return (ms + 999) / 1000; }

int64_t throttle_wait(mb_throttle *t, const char *key)
{
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&t->lock);
    int64_t w = wait_ms(t, slot_find(t, key, now, false), now);
    pthread_mutex_unlock(&t->lock);
    return ms_to_s(w);
}

int64_t throttle_fail(mb_throttle *t, const char *key)
{
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&t->lock);
    tslot *s = slot_find(t, key, now, true);
    if (now - s->start >= (int64_t)t->window * 1000) {
        s->start = now;
        s->count = 0;
    }
    s->count++;
    s->last = now;
    int64_t w = wait_ms(t, s, now);
    pthread_mutex_unlock(&t->lock);
    return ms_to_s(w);
}

void throttle_clear(mb_throttle *t, const char *key)
{
    pthread_mutex_lock(&t->lock);
    tslot *s = slot_find(t, key, now_mono_ms(), false);
    if (s)
        memset(s, 0, sizeof *s);
    pthread_mutex_unlock(&t->lock);
}
