/* tests/modules/ticker — kernel timers (api->timer_add / timer_cancel, ABI 2.0). A recurring
 * timer counts its runs in kv (each run sleeps a little, so an unload often finds one in
 * progress), a one-shot timer runs once, and a timer cancelled in init never runs. fini
 * writes "stopped/<copy>"; a run of that copy that sees it (one the kernel let through after
 * fini) marks "late" (or, reading the freed state, trips ASan). GET /api/v1/ticker reports what the previous copies left. Test-only. */
#include "mbyte.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    mb_module *self;
    const mb_api *api;
    bool late_before; /* a previous copy's timer ran after its fini */
    char stopped[48];  /* "stopped/<this copy>": a reload runs two copies side by side */
} ticker;

static int64_t kv_num(ticker *t, const char *key)
{
    char *v = NULL;
    size_t n = 0;
    mb_err e;
    if (t->api->kv_get(t->self, key, &v, &n, &e))
        return 0;
    int64_t x = strtoll(v, NULL, 10);
    free(v);
    return x;
}

static void kv_set(ticker *t, const char *key, int64_t x)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", (long long)x);
    mb_err e;
    t->api->kv_put(t->self, key, b, (size_t)n, false, &e);
}

static void tick(void *arg)
{
    ticker *t = arg;
    if (kv_num(t, t->stopped))
        kv_set(t, "late", 1);
    kv_set(t, "ticks", kv_num(t, "ticks") + 1);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL); /* a run in progress for the unload to wait for */
}

static void once(void *arg)
{
    ticker *t = arg;
    kv_set(t, "once", kv_num(t, "once") + 1);
}

static void never(void *arg)
{
    ticker *t = arg;
    kv_set(t, "cancelled_ran", 1);
}

static int h_get(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    ticker *t = state;
    return t->api->reply_json(req, 200,
                              json_pack("{s:I, s:I, s:I, s:b}", "ticks", (json_int_t)kv_num(t, "ticks"), "once",
                                        (json_int_t)kv_num(t, "once"), "cancelled_ran",
                                        (json_int_t)kv_num(t, "cancelled_ran"), "late",
                                        t->late_before || kv_num(t, "late")));
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)config;
    ticker *t = calloc(1, sizeof *t);
    t->self = self;
    t->api = api;
    t->late_before = kv_num(t, "late") != 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(t->stopped, sizeof t->stopped, "stopped/%lld.%09ld", (long long)now.tv_sec, now.tv_nsec);
    mb_err e;
    api->kv_del(self, "once", true, &e);
    mb_timer *c = NULL;
    if (api->timer_add(self, 10, 10, tick, t, NULL, err) || api->timer_add(self, 5, 0, once, t, NULL, err) ||
        api->timer_add(self, 300, 0, never, t, &c, err)) {
        free(t);
        return err->code;
    }
    api->timer_cancel(c);
    *state = t;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    ticker *t = state;
    kv_set(t, t->stopped, 1);
    free(t);
    return 0;
}

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/ticker", MB_ROLE_USER, h_get},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "ticker",
    .version = "1.0.0",
    .routes = routes,
    .init = init,
    .fini = fini,
};
