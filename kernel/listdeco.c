/*
 * kernel/listdeco.c — listing decorators (ABI minor 10, thumbs branch): a module adds fields
 * to the file entries of GET /api/v1/stores/{sid}/files/{path}?list (the thumbnails module
 * adds "thumb"). The listing code calls listdeco_apply once per answer.
 *
 * A module registers one decorator (api->listing_decorator_set) in init and clears it in
 * fini; a newer copy's registration replaces an older copy's, and an older copy's clear
 * leaves the newer one alone (reload runs the new init before the old fini).
 *
 * Threads: apply runs on HTTP workers and holds the read lock for the whole call into the
 * module, so a clear (write lock, from fini) returns only once no call is in flight; after
 * it the module is never called again. Calls are counted with modref_enter too.
 *
 * Listing filters (ABI 2.1, tags branch) live in a second table under the same lock and rules:
 * a module removes entries (the tags module answers ?tag=a&tag=-b&any=c) before decorators run.
 */
#include "kernel.h"
#include <pthread.h>
#include <string.h>

#define LISTDECO_MAX 8

typedef struct {
    mb_module *owner;
    mb_listing_fn fn;
    void *state;
} deco;

typedef struct {
    mb_module *owner;
    mb_listing_filter_fn fn;
    void *state;
} filt;

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static deco decos[LISTDECO_MAX];
static int ndecos;
static filt filts[LISTDECO_MAX];
static int nfilts;

/* One registration per module name in `tab` (decos or filts, both start with the owner):
 * replace, add, or (fn NULL) remove this copy's own. Under the write lock. */
static int slot_set(void *tab, size_t width, int *n, mb_module *self, const void *item, bool clear,
                    const char *what, mb_err *err)
{
    if (!self)
        return err_set(err, MB_EINVAL, "a listing %s belongs to a module", what);
    const char *name = modref_name(self);
    char *base = tab;
    pthread_rwlock_wrlock(&lock);
    int at = -1;
    for (int i = 0; i < *n; i++)
        if (strcmp(modref_name(*(mb_module **)(base + (size_t)i * width)), name) == 0)
            at = i;
    int rc = 0;
    if (clear) { /* only this copy's own registration */
        if (at >= 0 && *(mb_module **)(base + (size_t)at * width) == self)
            memcpy(base + (size_t)at * width, base + (size_t)--*n * width, width);
    } else if (at < 0 && *n == LISTDECO_MAX) {
        rc = err_set(err, MB_EBUSY, "too many listing %ss (%d)", what, LISTDECO_MAX);
    } else {
        if (at < 0)
            at = (*n)++;
        memcpy(base + (size_t)at * width, item, width);
    }
    pthread_rwlock_unlock(&lock);
    return rc;
}

int listdeco_set(mb_module *self, mb_listing_fn fn, void *state, mb_err *err)
{
    deco d = {self, fn, state};
    return slot_set(decos, sizeof d, &ndecos, self, &d, !fn, "decorator", err);
}

int listdeco_filter_set(mb_module *self, mb_listing_filter_fn fn, void *state, mb_err *err)
{
    filt f = {self, fn, state};
    return slot_set(filts, sizeof f, &nfilts, self, &f, !fn, "filter", err);
}

int listdeco_filter(mb_req *req, uint64_t sid, json_t *listing, mb_err *err)
{
    int rc = 0;
    pthread_rwlock_rdlock(&lock);
    for (int i = 0; i < nfilts && !rc; i++) {
        modref_enter(filts[i].owner);
        rc = filts[i].fn(req, sid, listing, filts[i].state, err);
        modref_leave(filts[i].owner);
    }
    pthread_rwlock_unlock(&lock);
    return rc;
}

void listdeco_apply(uint64_t sid, json_t *listing)
{
    json_t *entries = json_object_get(listing, "entries");
    if (!json_is_array(entries))
        return;
    pthread_rwlock_rdlock(&lock);
    for (int i = 0; i < ndecos; i++) {
        modref_enter(decos[i].owner);
        size_t k;
        json_t *e;
        json_array_foreach(entries, k, e) decos[i].fn(sid, e, decos[i].state);
        modref_leave(decos[i].owner);
    }
    pthread_rwlock_unlock(&lock);
}
