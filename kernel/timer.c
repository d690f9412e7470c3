/*
 * timer.c — module timers (api->timer_add / timer_cancel): one-shot and recurring work
 * that a module used to run on a pthread of its own (trash's daily purge, integrity's
 * scrub), now owned by the module's handle so an unload or reload cancels it.
 *
 * Each timer is an entry of an owner-tagged registry (registry.c), so modmgr removes a
 * module's timers with the rest of its registrations (timer_remove_owner) before its fini,
 * and the module never sees a callback after that. A timer's libevent event lives on the
 * loop; when it fires, the callback is handed to the blocking pool (pool.c),
 * which counts the module busy until it returned: a draining module waits for a run in
 * progress, and a recurring timer is re-armed only after its run ended (runs never
 * overlap; the period counts from the end of a run).
 *
 * Threads: timer_add and timer_cancel may be called from any thread. Arming, firing,
 * re-arming and freeing happen on the loop thread only; other threads reach a timer
 * through the registry by its id (the handle a module holds is that id), under the read
 * lock, and only set its atomic `cancelled` flag. A timer's state is freed on the loop
 * once it is out of the registry and not running.
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>

typedef struct tstate {
    mb_module *owner;
    uint64_t id;
    struct event *ev; /* loop thread */
    mb_timer_fn fn;
    void *arg;
    int64_t delay_ms, period_ms;
    bool running; /* loop thread: handed to the pool, its done not yet called */
    atomic_bool cancelled;
} tstate;

typedef struct tentry {
    mb_module *owner;
    tstate *t;
} tentry;

static _Atomic uint64_t next_id = 1;

static void tkill(void *e)
{
    tstate *t = ((tentry *)e)->t;
    atomic_store(&t->cancelled, true);
    if (t->ev) {
        event_free(t->ev);
        t->ev = NULL;
    }
    if (!t->running)
        free(t);
}

static void tdescribe(const void *e, char *buf, size_t n) { snprintf(buf, n, "timer %llu", (unsigned long long)((const tentry *)e)->t->id); }

REG_ENTRY(tentry);
static const reg_ops timer_ops = {.size = sizeof(tentry), .drop = tkill, .describe = tdescribe};
static registry timers = REG_INIT(&timer_ops);

static bool has_id(const void *e, const void *key) { return ((const tentry *)e)->t->id == *(const uint64_t *)key; }

/* Under the read lock: the flag is set where the timer cannot be freed under us. */
static bool flag_cancel(const void *e, const void *key)
{
    if (!has_id(e, key))
        return false;
    atomic_store(&((const tentry *)e)->t->cancelled, true);
    return true;
}

static void fire(evutil_socket_t fd, short what, void *arg);

static void arm(tstate *t, int64_t ms)
{
    if (!t->ev)
        t->ev = evtimer_new(main_loop(), fire, t);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
    evtimer_add(t->ev, &tv);
}

static void work(void *arg)
{
    tstate *t = arg;
    if (!atomic_load(&t->cancelled))
        t->fn(t->arg);
}

static void done(void *arg)
{
    tstate *t = arg;
    t->running = false;
    if (!t->ev) { /* removed from the registry while it ran */
        free(t);
        return;
    }
    if (t->period_ms > 0 && !atomic_load(&t->cancelled))
        arm(t, t->period_ms);
    else
        reg_remove(&timers, has_id, &t->id); /* a one-shot timer, or cancelled: gone */
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    tstate *t = arg;
    if (atomic_load(&t->cancelled)) {
        reg_remove(&timers, has_id, &t->id);
        return;
    }
    mb_err e = {0};
    t->running = true;
    if (pool_run(t->owner, work, done, t, &e)) {
        /* The pool is full: try again in a second rather than lose the run. */
        t->running = false;
        log_msg(LOG_WARN, modref_name(t->owner), "timer delayed: %s", e.msg);
        arm(t, 1000);
    }
}

/* Loop thread: arm timer `id` if it is still registered (its module may be gone). */
static void arm_on_loop(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    tentry te;
    if (reg_get(&timers, has_id, &id, &te, false) && !atomic_load(&te.t->cancelled))
        arm(te.t, te.t->delay_ms);
}

static void cancel_on_loop(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    tentry te;
    if (reg_get(&timers, has_id, &id, &te, false) && !te.t->running)
        reg_remove(&timers, has_id, &id);
    /* A running timer is removed by its done. */
}

int timer_add(mb_module *self, int64_t delay_ms, int64_t period_ms, mb_timer_fn fn, void *arg, mb_timer **out,
              mb_err *err)
{
    if (!self || !fn)
        return err_set(err, MB_EINVAL, "a timer needs its module's handle and a function");
    if (delay_ms < 0 || period_ms < 0)
        return err_set(err, MB_EINVAL, "a timer's delay and period must not be negative");
    tstate *t = xcalloc(1, sizeof *t);
    *t = (tstate){.owner = self, .id = atomic_fetch_add(&next_id, 1), .fn = fn, .arg = arg, .delay_ms = delay_ms,
                  .period_ms = period_ms};
    uint64_t id = t->id;
    int rc = reg_add(&timers, &(tentry){self, t}, err);
    if (rc)
        return rc;
    /* Registered first, armed on the loop: an unload before the arming finds and drops it. */
    main_call(arm_on_loop, (void *)(uintptr_t)id);
    if (out)
        *out = (mb_timer *)(uintptr_t)id;
    return 0;
}

void timer_cancel(mb_timer *timer)
{
    uint64_t id = (uint64_t)(uintptr_t)timer;
    if (id && reg_get(&timers, flag_cancel, &id, NULL, false))
        main_call(cancel_on_loop, (void *)(uintptr_t)id);
}

void timer_remove_owner(mb_module *owner)
{
    if (owner)
        reg_remove_owner(&timers, owner);
}
