/*
 * kernel/grants.c — what is shared with a user, asked by one module and answered by another
 * (dav branch, ABI 2.1). The sharing module keeps its shares in its own kv, which no other
 * module can read; the search module must search a grantee's shares too. So the sharing
 * module registers a provider (api->grants_provider_set) and any module asks through the
 * kernel (api->grants_list), which calls the provider with the provider's module entered.
 * With no provider registered (sharing not loaded) a user has no shares: an empty list.
 *
 * One provider at a time: a newer copy's registration replaces an older copy's, and an older
 * copy's clear leaves the newer one alone (a reload runs the new init before the old fini).
 *
 * Threads: grants_list runs on any thread and holds the read lock for the whole call into
 * the provider, so a clear (write lock, from fini) returns once no call is in flight; after
 * it the provider is never called again.
 */
#include "kernel.h"
#include <pthread.h>
#include <string.h>

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static mb_module *owner;
static mb_grants_fn provider;
static void *provider_state;

int grants_provider_set(mb_module *self, mb_grants_fn fn, void *state, mb_err *err)
{
    if (!self)
        return err_set(err, MB_EINVAL, "a grants provider belongs to a module");
    pthread_rwlock_wrlock(&lock);
    if (fn) {
        owner = self;
        provider = fn;
        provider_state = state;
    } else if (owner == self) {
        owner = NULL;
        provider = NULL;
        provider_state = NULL;
    }
    pthread_rwlock_unlock(&lock);
    return 0;
}

int grants_list(uint64_t uid, json_t **out, mb_err *err)
{
    *out = NULL;
    int rc = 0;
    pthread_rwlock_rdlock(&lock);
    if (provider) {
        modref_enter(owner);
        rc = provider(provider_state, uid, out, err);
        modref_leave(owner);
    }
    pthread_rwlock_unlock(&lock);
    if (!rc && !json_is_array(*out)) {
        json_decref(*out);
        *out = json_array();
    }
    return rc;
}
