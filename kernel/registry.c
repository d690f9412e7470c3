/*
 * registry.c — one owner-tagged table, the pattern behind the route table (http_route.c),
 * the hook subscriptions (hook.c), the task types (task.c) and the module timers (timer.c).
 *
 * Every entry starts with `mb_module *owner` (NULL is the kernel), so a module's
 * registrations can be added one by one, removed all at once (unload), or swapped to a new
 * copy of the module in one step (reload), and every lookup counts the call into the owner
 * the same way. The kind of entry is described by a reg_ops: its size, which two entries
 * name the same thing (a conflict, or the slot a reload keeps), how a kept slot takes over
 * a fresh entry, how an entry is freed, and an optional order.
 *
 * Locking, one pattern for all: a rwlock per table. Readers (any thread: HTTP workers, task
 * workers, the loop) look up under the read lock and, when they will call into the owner,
 * enter its busy count (modref_enter) BEFORE the lock is released; writers (the loop thread:
 * module load, unload, reload) change the table under the write lock. So once a module's
 * entries are removed or swapped away, no new call can reach it and its count only goes
 * down: modmgr can drain it. A lookup costs one read lock and no allocation.
 *
 * This file calls only modref.c (names and counts) and util.c: never modmgr, so a registry
 * may be changed while modmgr is in the middle of a load, unload or reload.
 */
#include "kernel.h"
#include <stdlib.h>
#include <string.h>

#define ENTRY(r, i) ((void *)((r)->v + (i) * (r)->ops->size))
#define OWNER(e) (*(mb_module *const *)(e))

void reg_init(registry *r, const reg_ops *ops)
{
    memset(r, 0, sizeof *r);
    r->ops = ops;
    pthread_rwlock_init(&r->lock, NULL);
}

static void drop(registry *r, void *e)
{
    if (r->ops->drop)
        r->ops->drop(e);
}

void reg_clear(registry *r)
{
    pthread_rwlock_wrlock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        drop(r, ENTRY(r, i));
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
    pthread_rwlock_unlock(&r->lock);
}

static void grow(registry *r, size_t more)
{
    if (r->n + more <= r->cap)
        return;
    r->cap = (r->n + more) * 2;
    r->v = xrealloc(r->v, r->cap * r->ops->size);
}

static void sort(registry *r)
{
    if (r->ops->order && r->n > 1)
        qsort(r->v, r->n, r->ops->size, r->ops->order);
}

/* Write lock held: MB_EEXIST if an entry names the same thing as e, leaving out those of
 * `swapped` (the copy a reload replaces) when `swapping`. */
static int conflict(registry *r, const void *e, bool swapping, mb_module *swapped, mb_err *err)
{
    if (!r->ops->conflict)
        return 0;
    for (size_t i = 0; i < r->n; i++) {
        const void *have = ENTRY(r, i);
        if (!(swapping && OWNER(have) == swapped) && r->ops->conflict(have, e)) {
            char what[200];
            r->ops->describe(e, what, sizeof what);
            return err_set(err, MB_EEXIST, "%s is already registered by %s", what, modref_name(OWNER(have)));
        }
    }
    return 0;
}

int reg_add(registry *r, const void *e, mb_err *err)
{
    pthread_rwlock_wrlock(&r->lock);
    int rc = conflict(r, e, false, NULL, err);
    if (!rc) {
        grow(r, 1);
        memcpy(ENTRY(r, r->n), e, r->ops->size);
        r->n++;
        sort(r);
    }
    pthread_rwlock_unlock(&r->lock);
    if (rc)
        drop(r, (void *)e);
    return rc;
}

void reg_remove_owner(registry *r, mb_module *owner)
{
    pthread_rwlock_wrlock(&r->lock);
    size_t j = 0;
    for (size_t i = 0; i < r->n; i++) {
        void *e = ENTRY(r, i);
        if (OWNER(e) == owner)
            drop(r, e);
        else {
            if (j != i)
                memcpy(ENTRY(r, j), e, r->ops->size);
            j++;
        }
    }
    r->n = j;
    pthread_rwlock_unlock(&r->lock);
}

void reg_update_owner(registry *r, mb_module *owner, void (*fn)(void *e, void *ud), void *ud)
{
    pthread_rwlock_wrlock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        if (OWNER(ENTRY(r, i)) == owner)
            fn(ENTRY(r, i), ud);
    pthread_rwlock_unlock(&r->lock);
}

void reg_remove(registry *r, bool (*match)(const void *e, const void *key), const void *key)
{
    pthread_rwlock_wrlock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        void *e = ENTRY(r, i);
        if (match(e, key)) {
            drop(r, e);
            memmove(e, ENTRY(r, i + 1), (r->n - i - 1) * r->ops->size);
            r->n--;
            break;
        }
    }
    pthread_rwlock_unlock(&r->lock);
}

int reg_swap_owner(registry *r, mb_module *from, void *fresh, size_t n, mb_err *err)
{
    size_t sz = r->ops->size;
    bool *taken = xcalloc(n + 1, sizeof *taken);
    pthread_rwlock_wrlock(&r->lock);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = conflict(r, (char *)fresh + i * sz, true, from, err);
    for (size_t i = 0; i < n && !rc && r->ops->conflict; i++) /* nor twice in the fresh table */
        for (size_t k = 0; k < i && !rc; k++)
            if (r->ops->conflict((char *)fresh + k * sz, (char *)fresh + i * sz)) {
                char what[200];
                r->ops->describe((char *)fresh + i * sz, what, sizeof what);
                rc = err_set(err, MB_EEXIST, "%s is declared twice", what);
            }
    if (rc) {
        pthread_rwlock_unlock(&r->lock);
        for (size_t i = 0; i < n; i++)
            drop(r, (char *)fresh + i * sz);
        free(taken);
        return rc;
    }
    /* Each entry of `from` keeps its slot if a fresh entry names the same thing (first
     * fresh one not yet taken), taking over that entry's function, state and owner. */
    size_t keep = 0;
    for (size_t j = 0; j < r->n; j++) {
        void *e = ENTRY(r, j);
        if (OWNER(e) == from) {
            size_t i = 0;
            while (i < n && (taken[i] || !r->ops->same(e, (char *)fresh + i * sz)))
                i++;
            if (i == n) {
                drop(r, e);
                continue;
            }
            taken[i] = true;
            r->ops->retake(e, (char *)fresh + i * sz);
        }
        if (keep != j)
            memcpy(ENTRY(r, keep), e, sz);
        keep++;
    }
    r->n = keep;
    grow(r, n);
    for (size_t i = 0; i < n; i++)
        if (!taken[i])
            memcpy(ENTRY(r, r->n++), (char *)fresh + i * sz, sz);
    sort(r);
    pthread_rwlock_unlock(&r->lock);
    free(taken);
    return 0;
}

bool reg_get(registry *r, bool (*match)(const void *e, const void *key), const void *key, void *out, bool enter)
{
    bool found = false;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n && !found; i++) {
        const void *e = ENTRY(r, i);
        if (match(e, key)) {
            found = true;
            if (out)
                memcpy(out, e, r->ops->size);
            if (enter)
                modref_enter(OWNER(e));
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return found;
}

size_t reg_collect(registry *r, bool (*match)(const void *e, const void *key), const void *key, void *out,
                   size_t max)
{
    size_t got = 0;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->n && got < max; i++) {
        const void *e = ENTRY(r, i);
        if (match(e, key)) {
            modref_enter(OWNER(e));
            memcpy((char *)out + got++ * r->ops->size, e, r->ops->size);
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return got;
}

void *reg_read(registry *r, void *(*fn)(const void *entries, size_t n, void *ud), void *ud)
{
    pthread_rwlock_rdlock(&r->lock);
    void *res = fn(r->v, r->n, ud);
    pthread_rwlock_unlock(&r->lock);
    return res;
}
