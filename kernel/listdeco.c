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

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static deco decos[LISTDECO_MAX];
static int ndecos;

int listdeco_set(mb_module *self, mb_listing_fn fn, void *state, mb_err *err)
{
    if (!self)
        return err_set(err, MB_EINVAL, "a listing decorator belongs to a module");
    const char *name = modref_name(self);
    pthread_rwlock_wrlock(&lock);
    int at = -1;
    for (int i = 0; i < ndecos; i++)
        if (strcmp(modref_name(decos[i].owner), name) == 0)
            at = i;
    if (!fn) { /* clear: only this copy's own registration */
        if (at >= 0 && decos[at].owner == self)
            decos[at] = decos[--ndecos];
        pthread_rwlock_unlock(&lock);
        return 0;
    }
    if (at < 0 && ndecos == LISTDECO_MAX) {
        pthread_rwlock_unlock(&lock);
        return err_set(err, MB_EBUSY, "too many listing decorators (%d)", LISTDECO_MAX);
    }
    if (at < 0)
        at = ndecos++;
    decos[at] = (deco){self, fn, state};
    pthread_rwlock_unlock(&lock);
    return 0;
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
