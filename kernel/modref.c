/*
 * modref.c — the module handle (`mb_module`) and its busy count: the one thing about a
 * module that the registries (routes, hooks, task types, blob backends, timers) and the
 * module manager share.
 *
 * Why a file of its own: a registry counts every call into a module (enter before, leave
 * after) and names the owner in its messages, while modmgr removes and swaps registrations.
 * With the count living in modmgr, the registries called back up into the manager that was
 * calling them. Here the handle is a leaf: it includes nothing of the kernel and calls
 * nothing, so registries and modmgr both call down into it.
 *
 * A handle is made by modmgr for each loaded copy of a module (modref_new) and freed when
 * that copy is closed (modref_free, once its count is zero). The handle NULL is the kernel:
 * entering it is free and it is named "kernel".
 *
 * Threads: the count is atomic, because libmicrohttpd threads, task workers and the loop
 * enter and leave concurrently; the name is set at creation and never changes.
 */
#include "kernel.h"
#include <stdlib.h>

struct mb_module {
    char *name;
    atomic_long busy;
};

mb_module *modref_new(const char *name)
{
    mb_module *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name);
    return m;
}

void modref_free(mb_module *m)
{
    if (m) {
        free(m->name);
        free(m);
    }
}

void modref_enter(mb_module *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->busy, 1, memory_order_acquire);
}

void modref_leave(mb_module *m)
{
    if (m)
        atomic_fetch_sub_explicit(&m->busy, 1, memory_order_release);
}

long modref_busy(const mb_module *m) { return m ? atomic_load(&m->busy) : 0; }

const char *modref_name(const mb_module *m) { return m ? m->name : "kernel"; }
