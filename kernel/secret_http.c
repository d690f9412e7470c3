/*
 * secret_http.c — the doors of secret references (issue 20, docs/security.md): the admin call
 * `POST /api/v1/admin/secrets/refresh` (mbytectl secrets refresh), `POST /api/v1/admin/keys/check`
 * (a key reference proved end to end, no key shown), the kernel's refresh timer
 * (mbyte.yaml `secrets_refresh`), the "secret.read" event the audit module records, and the
 * answer to a provider's api->secrets_changed. secret.c (base layer) resolves; this file
 * (doors) re-applies: every module whose file holds references gets its settings resolved
 * again and, where they differ, its reconfigure call (modmgr_secrets_apply).
 *
 * Threads: the refresh route runs on an HTTP thread: it asks the providers to re-read (they
 * may block on the network) and hands the apply to the loop (main_call), waiting for its end.
 * The timer is a libevent timer on the loop. `apply_queued` (atomic) folds
 * a burst of change notices into one apply.
 */
#include "kernel.h"
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_bool apply_queued;

/* Loop thread. */
static int apply_now(json_t *report)
{
    int refused = modmgr_secrets_apply(report);
    size_t i;
    json_t *o;
    int changed = 0;
    json_array_foreach(report, i, o)
    {
        const char *a = json_string_value(json_object_get(o, "action"));
        changed += a && (!strcmp(a, "reconfigured") || !strcmp(a, "reloaded"));
    }
    if (changed || refused)
        log_info("secret references read again: %d module(s) got new settings, %d refused", changed, refused);
    return refused;
}

static void apply_on_loop(void *arg)
{
    (void)arg;
    atomic_store(&apply_queued, false);
    json_t *report = json_array();
    apply_now(report);
    json_decref(report);
}

static void on_change(void)
{
    if (!atomic_exchange(&apply_queued, true))
        main_call(apply_on_loop, NULL);
}

static void on_read(const char *who, const char *ref)
{
    mb_err e = {0};
    if (hook_emit("secret.read", json_pack("{s:s, s:s}", "module", who, "ref", ref), &e))
        log_warn("secret.read event not sent: %s", e.msg);
}

/* The kernel's timer (a libevent timer on the loop): file: and env: references have nobody to
 * tell of a change. Re-armed after each run, so a reload's new secrets_refresh applies next. */
static struct event *timer_ev;

static void arm(void)
{
    int64_t every = g_cfg && g_cfg->secrets_refresh > 0 ? g_cfg->secrets_refresh : 60;
    struct timeval tv = {(time_t)every, 0};
    evtimer_add(timer_ev, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (g_cfg && g_cfg->secrets_refresh > 0)
        on_change();
    arm();
}

/* ------------------------------------------------------------ the route --- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int refused;
    json_t *report;
} handoff;

static void route_on_loop(void *arg)
{
    handoff *h = arg;
    int refused = apply_now(h->report);
    pthread_mutex_lock(&h->mu);
    h->refused = refused;
    h->done = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* POST /api/v1/admin/secrets/refresh -> {"providers_changed": n, "modules": [...], "refused": n};
 * 503 when a provider cannot reach its store (cached values keep serving). */
static int h_refresh(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    mb_err e = {0};
    int changed = secret_refresh_providers(&e);
    if (changed < 0)
        return err_set(err, MB_EBUSY, "secrets not refreshed, the cached values keep serving: %s", e.msg);
    handoff h = {.report = json_array()};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    main_call(route_on_loop, &h);
    pthread_mutex_lock(&h.mu);
    while (!h.done) /* the loop always runs it: h must outlive the call */
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
    return http_reply_json(req, 200,
                           json_pack("{s:i, s:o, s:i}", "providers_changed", changed, "modules", h.report, "refused",
                                     h.refused));
}

/* First bytes of a wrapped key, enough to show its form and key version ("vault:v2:"). */
static json_t *shown(const char *wrapped)
{
    const char *c = wrapped ? strchr(wrapped, ':') : NULL;
    c = c ? strchr(c + 1, ':') : NULL;
    size_t n = c ? (size_t)(c - wrapped) + 1 : 6;
    return json_stringn(wrapped ? wrapped : "", wrapped && strlen(wrapped) < n ? strlen(wrapped) : n);
}

/* POST /api/v1/admin/keys/check {"keyref": "transit:mbyte" | "file:/path", "rotate": false}:
 * proves a key reference works end to end without showing a key: a data key is made and
 * unwrapped, a known key wrapped and unwrapped, and (rotate) the key rotated and the wrapped
 * key rewrapped under the new version and unwrapped again. Answers the wrapped forms' prefixes
 * ({"datakey": "vault:v1:", "rewrapped": "vault:v2:"}). HTTP thread: providers may block. */
static int h_keys_check(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *body = http_req_json(req, err);
    if (!body)
        return err->code;
    const char *keyref = json_string_value(json_object_get(body, "keyref"));
    if (!keyref)
        return err_set(err, MB_EINVAL, "keyref is required (file:/path or transit:<key>)");
    uint8_t k1[32], k2[32];
    char *w1 = NULL, *w2 = NULL, *w3 = NULL;
    json_t *out = json_object();
    int rc = key_datakey(keyref, k1, sizeof k1, &w1, err);
    if (!rc && !(rc = key_unwrap(keyref, w1, k2, sizeof k2, err)) && sodium_memcmp(k1, k2, sizeof k1))
        rc = err_set(err, MB_EINTEGRITY, "%s: a data key did not unwrap to itself", keyref);
    if (!rc) {
        json_object_set_new(out, "datakey", shown(w1));
        randombytes_buf(k1, sizeof k1);
        rc = key_wrap(keyref, k1, sizeof k1, &w2, err);
    }
    if (!rc && !(rc = key_unwrap(keyref, w2, k2, sizeof k2, err)) && sodium_memcmp(k1, k2, sizeof k1))
        rc = err_set(err, MB_EINTEGRITY, "%s: a wrapped key did not unwrap to itself", keyref);
    if (!rc) {
        json_object_set_new(out, "wrapped", shown(w2));
        if (json_is_true(json_object_get(body, "rotate")))
            rc = key_rotate(keyref, err);
    }
    if (!rc && !(rc = key_rewrap(keyref, w2, &w3, err)) && !(rc = key_unwrap(keyref, w3, k2, sizeof k2, err)) &&
        sodium_memcmp(k1, k2, sizeof k1))
        rc = err_set(err, MB_EINTEGRITY, "%s: a rewrapped key did not unwrap to itself", keyref);
    if (!rc) {
        json_object_set_new(out, "rewrapped", shown(w3));
        /* the old wrapped form still opens after a rotation */
        rc = key_unwrap(keyref, w2, k2, sizeof k2, err);
    }
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    free(w1);
    free(w2);
    free(w3);
    if (rc) {
        json_decref(out);
        return rc;
    }
    json_object_set_new(out, "ok", json_true());
    return http_reply_json(req, 200, out);
}

int secret_http_init(struct event_base *base, mb_err *err)
{
    secret_set_callbacks(on_read, on_change);
    timer_ev = evtimer_new(base, on_timer, NULL);
    arm();
    int rc = http_route_add(NULL, "POST", "/api/v1/admin/secrets/refresh", MB_ROLE_ADMIN, h_refresh, NULL, err);
    return rc ? rc : http_route_add(NULL, "POST", "/api/v1/admin/keys/check", MB_ROLE_ADMIN, h_keys_check, NULL, err);
}

void secret_http_fini(void)
{
    secret_set_callbacks(NULL, NULL);
    if (timer_ev)
        event_free(timer_ev);
    timer_ev = NULL;
    secret_fini();
}
