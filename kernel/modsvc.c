/*
 * kernel/modsvc.c — module services (ABI 2.1, tags branch): a named function one module offers
 * and others call through the kernel, so modules never link against each other. The search
 * module offers "search.text" (a file's extracted text), the tags module "tags.match" (which
 * paths carry which tags, for search's tag: filter).
 *
 * A module registers a name in init (api->service_set) and withdraws it in fini; a reloaded
 * copy's registration replaces the old copy's, and the old copy's withdrawal leaves the new one
 * alone (reload runs the new init before the old fini). A call to a name nobody offers is
 * MB_ENOENT, which callers treat as "that module is not loaded".
 *
 * Threads: calls come from any thread. A read lock is held across each call into the module
 * (and the call counted with modref_enter), so a withdrawal (write lock, from fini) returns only
 * once no call is in flight, and the module is never called after it.
 */
#include "kernel.h"
#include <pthread.h>
#include <string.h>

#define MODSVC_MAX 32
#define MODSVC_NAME 64

typedef struct {
    mb_module *owner;
    char name[MODSVC_NAME];
    mb_service_fn fn;
    void *state;
} svc;

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static svc svcs[MODSVC_MAX];
static int nsvcs;

int modsvc_set(mb_module *self, const char *name, mb_service_fn fn, void *state, mb_err *err)
{
    if (!self)
        return err_set(err, MB_EINVAL, "a service belongs to a module");
    if (!name || !*name || strlen(name) >= MODSVC_NAME)
        return err_set(err, MB_EINVAL, "a service name is 1 to %d bytes", MODSVC_NAME - 1);
    pthread_rwlock_wrlock(&lock);
    int at = -1, rc = 0;
    for (int i = 0; i < nsvcs; i++)
        if (!strcmp(svcs[i].name, name))
            at = i;
    if (!fn) {
        if (at >= 0 && svcs[at].owner == self)
            svcs[at] = svcs[--nsvcs];
    } else if (at >= 0 && strcmp(modref_name(svcs[at].owner), modref_name(self))) {
        rc = err_set(err, MB_EEXIST, "service %s is offered by module %s", name, modref_name(svcs[at].owner));
    } else if (at < 0 && nsvcs == MODSVC_MAX) {
        rc = err_set(err, MB_EBUSY, "too many module services (%d)", MODSVC_MAX);
    } else {
        if (at < 0)
            at = nsvcs++;
        svcs[at].owner = self;
        snprintf(svcs[at].name, sizeof svcs[at].name, "%s", name);
        svcs[at].fn = fn;
        svcs[at].state = state;
    }
    pthread_rwlock_unlock(&lock);
    return rc;
}

int modsvc_call(const char *name, const json_t *arg, json_t **out, mb_err *err)
{
    if (out)
        *out = NULL;
    json_t *dummy = NULL;
    pthread_rwlock_rdlock(&lock);
    int rc = 0;
    bool found = false;
    for (int i = 0; i < nsvcs && !found; i++)
        if (name && !strcmp(svcs[i].name, name)) {
            found = true;
            modref_enter(svcs[i].owner);
            rc = svcs[i].fn(arg, out ? out : &dummy, svcs[i].state, err);
            modref_leave(svcs[i].owner);
        }
    pthread_rwlock_unlock(&lock);
    json_decref(dummy);
    if (!found)
        rc = err_set(err, MB_ENOENT, "no service %s", name ? name : "");
    return rc;
}
