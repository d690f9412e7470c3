/*
 * modules/hello — the example module: copy this file to start your own.
 *
 * It shows every kind of thing a module can plug in, each listed in a table at the bottom
 * of this file (the descriptor is data; STYLE.md):
 *   config   `greeting` (string, default "hello"), from conf.d/hello.yaml; like any string
 *            value it may be a secret reference (env:, file:, vault:), resolved by the kernel
 *   routes   GET  /api/v1/hello        the greeting, the caller, the version and how many
 *                                      hello.ping events the observer has seen
 *            POST /api/v1/hello/tasks  queue a "hello.count" task {steps, step_ms, fail_first}
 *            POST /api/v1/hello/ping   run the hello.ping filters, then emit the event
 *   hooks    a filter on hello.ping that refuses payloads with "deny": true, and an
 *            observer on hello.ping that counts the events it saw
 *   tasks    hello.count: counts to `steps`, reporting progress; fails its first
 *            `fail_first` attempts with MB_EAGAIN (the kernel retries with backoff); stops
 *            when cancelled
 *
 * Rules a module lives by (docs/modules.md explains them):
 *   - Include only abi/mbyte.h; call the kernel only through the mb_api table init gets.
 *   - Keep state in the struct handed back through *state, not in globals: on reload a new
 *     copy runs beside the old one for a while, and each has its own state.
 *   - Anything that must survive a restart or a reload goes to api->kv_* (the kernel
 *     namespaces keys under m/hello/).
 *   - Route handlers and task runners run on several threads at once; observers run on the
 *     loop thread and must not block.
 */
#include "mbyte.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef HELLO_VERSION
#define HELLO_VERSION "1.0.0"
#endif

/* Everything this copy of the module owns. Freed by fini. */
typedef struct hello {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t mu; /* guards greeting: reconfigure (loop) writes it while routes read it */
    char greeting[128];
    atomic_long observed; /* hello.ping events seen, mirrored to kv "observed" */
} hello;

/* ------------------------------------------------------------------ routes --- */

/* GET /api/v1/hello */
static int h_hello(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    hello *h = state;
    const mb_user *u = h->api->req_user(req);
    char greeting[sizeof h->greeting];
    pthread_mutex_lock(&h->mu);
    memcpy(greeting, h->greeting, sizeof greeting);
    pthread_mutex_unlock(&h->mu);
    return h->api->reply_json(req, 200,
                              json_pack("{s:s, s:s, s:s, s:I}", "greeting", greeting, "user", u ? u->name : "",
                                        "module_version", HELLO_VERSION, "observed",
                                        (json_int_t)atomic_load(&h->observed)));
}

/* Read an optional whole-number field within [min, max]. */
static int int_arg(hello *h, json_t *body, const char *key, int def, int min, int max, int *out, mb_err *err)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return h->api->err_set(err, MB_EINVAL, "%s must be a whole number from %d to %d", key, min, max);
    *out = (int)json_integer_value(v);
    return 0;
}

/* POST /api/v1/hello/tasks {"steps": 5, "step_ms": 100, "fail_first": 0} -> 202 {"id": n} */
static int h_submit(mb_req *req, void *state, mb_err *err)
{
    hello *h = state;
    json_t *body = h->api->req_json(req, err);
    if (!body)
        return err->code;
    int steps = 0, step_ms = 0, fail_first = 0, rc;
    if ((rc = int_arg(h, body, "steps", 5, 1, 1000, &steps, err)) ||
        (rc = int_arg(h, body, "step_ms", 100, 0, 10000, &step_ms, err)) ||
        (rc = int_arg(h, body, "fail_first", 0, 0, 100, &fail_first, err)))
        return rc;
    uint64_t id;
    rc = h->api->task_submit("hello.count", h->api->req_user(req)->id,
                             json_pack("{s:i, s:i, s:i}", "steps", steps, "step_ms", step_ms, "fail_first", fail_first),
                             &id, err);
    if (rc)
        return rc;
    return h->api->reply_json(req, 202, json_pack("{s:I}", "id", (json_int_t)id));
}

/* POST /api/v1/hello/ping {...} — the pattern every operation with hooks follows:
 * filters first (they may refuse), then the change, then the event for the observers. */
static int h_ping(mb_req *req, void *state, mb_err *err)
{
    hello *h = state;
    json_t *body = h->api->req_json(req, err);
    if (!body)
        return err->code;
    json_t *payload = json_deep_copy(body);
    json_object_set_new(payload, "user", json_string(h->api->req_user(req)->name));
    int rc = h->api->hook_filter("hello.ping", payload, err);
    if (rc) {
        json_decref(payload);
        return rc;
    }
    if ((rc = h->api->hook_emit("hello.ping", payload, err))) /* steals payload */
        return rc;
    return h->api->reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

/* ------------------------------------------------------------------- hooks --- */

/* Filter: refuse a ping that asks to be refused. Runs on the caller's thread. */
static int f_ping(const char *event, json_t *payload, void *state, mb_err *err)
{
    (void)event;
    hello *h = state;
    if (json_is_true(json_object_get(payload, "deny")))
        return h->api->err_set(err, MB_EPERM, "hello refuses this ping: it asked to be denied");
    return 0;
}

/* Observer: count the pings. Runs on the loop thread; a small kv write does not block. */
static void o_ping(const char *event, const json_t *payload, void *state)
{
    (void)event, (void)payload;
    hello *h = state;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld", atomic_fetch_add(&h->observed, 1) + 1);
    mb_err e;
    if (h->api->kv_put(h->self, "observed", buf, (size_t)n, false, &e))
        h->api->log(h->self, MB_LOG_WARN, "could not save the count: %s", e.msg);
}

/* ------------------------------------------------------------------- tasks --- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* hello.count. Runs on a worker thread. Its attempt number lives in kv, so "fail the
 * first N attempts" holds across retries, reloads and restarts. */
static int t_count(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    hello *h = state;
    int steps = (int)json_integer_value(json_object_get(args, "steps"));
    int step_ms = (int)json_integer_value(json_object_get(args, "step_ms"));
    int fail_first = (int)json_integer_value(json_object_get(args, "fail_first"));
    char key[64], *val = NULL, buf[32];
    size_t len;
    snprintf(key, sizeof key, "attempt/%llu", (unsigned long long)h->api->task_id(task));
    long attempt = 1;
    if (h->api->kv_get(h->self, key, &val, &len, err) == 0) {
        attempt = strtol(val, NULL, 10) + 1;
        free(val);
    }
    int n = snprintf(buf, sizeof buf, "%ld", attempt);
    if (h->api->kv_put(h->self, key, buf, (size_t)n, true, err))
        return err->code;
    if (attempt <= fail_first)
        return h->api->err_set(err, MB_EAGAIN, "hello.count fails attempt %ld of the first %d, as asked", attempt,
                               fail_first);
    for (int i = 1; i <= steps; i++) {
        sleep_ms(step_ms);
        char msg[64];
        snprintf(msg, sizeof msg, "counted %d of %d", i, steps);
        if (h->api->task_progress(task, i * 100 / steps, msg))
            return h->api->err_set(err, MB_ECANCELED, "stopped at %d of %d", i, steps);
    }
    h->api->kv_del(h->self, key, false, err);
    h->api->task_result(task, json_pack("{s:i}", "counted", steps));
    return 0;
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    hello *h = calloc(1, sizeof *h);
    if (!h)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    h->self = self;
    h->api = api;
    pthread_mutex_init(&h->mu, NULL);
    /* The kernel validated the config against config_keys and filled in defaults. */
    snprintf(h->greeting, sizeof h->greeting, "%s", json_string_value(json_object_get(config, "greeting")));
    char *val;
    size_t len;
    mb_err e;
    if (api->kv_get(self, "observed", &val, &len, &e) == 0) {
        atomic_store(&h->observed, strtol(val, NULL, 10));
        free(val);
    }
    *state = h;
    /* The greeting may come from a secret reference (vault:...): never logged. */
    api->log(self, MB_LOG_INFO, "version %s ready", HELLO_VERSION);
    return 0;
}

/* Called once no call into this copy is in flight. hello never refuses an unload. */
static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    hello *h = state;
    pthread_mutex_destroy(&h->mu);
    free(h);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    hello *h = state;
    pthread_mutex_lock(&h->mu);
    snprintf(h->greeting, sizeof h->greeting, "%s", json_string_value(json_object_get(config, "greeting")));
    pthread_mutex_unlock(&h->mu);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "greeting", MB_CFG_STRING, "hello", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/hello", MB_ROLE_USER, h_hello},
    {sizeof(mb_route), "POST", "/api/v1/hello/tasks", MB_ROLE_USER, h_submit},
    {sizeof(mb_route), "POST", "/api/v1/hello/ping", MB_ROLE_USER, h_ping},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "hello.ping", MB_HOOK_FILTER, 100, f_ping, NULL},
    {sizeof(mb_hook), "hello.ping", MB_HOOK_OBSERVER, 100, NULL, o_ping},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "hello.count", t_count, 3},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "hello",
    .version = HELLO_VERSION,
    .description = "The example module: a greeting, a counting task and a ping event",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
