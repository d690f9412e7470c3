/*
 * modules/webhooks — POST a signed JSON message to URLs that users register for the events
 * of their stores (issue 8).
 *
 * A hook belongs to one store and hears that store's events; "store.created" (a new store
 * has no hooks yet) goes to the hooks of the new store's owner that ask for it.
 *
 * Durability: an observer ("*", loop thread) turns each matching event into a delivery
 * record and a "webhooks.deliver" task. The task queue is persistent and retries with
 * exponential backoff, so deliveries survive restarts and kill -9 (at least once: a
 * receiver dedupes on X-MByte-Delivery). Each attempt is appended to the delivery record,
 * which is the per-hook delivery log. After `disable_after` deliveries in a row failed
 * every attempt, the hook is switched off and its owner notified.
 *
 * Signature: X-MByte-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 * with X-MByte-Timestamp: <timestamp> (Unix seconds); docs/api.md shows how to verify.
 *
 * Outbound safety: only http and https, no redirects, connect and total timeouts, and the
 * deny list (loopback, private, link-local... by default; `allow` exempts ranges, for
 * tests) is enforced on the address curl actually connects to (CURLOPT_OPENSOCKETFUNCTION),
 * after DNS resolution, so a name that resolves (or re-resolves) to a denied address is
 * refused. A hook whose host already is or resolves to one is refused when it is created or
 * changed (check_host), instead of failing six attempts per event and being switched off.
 *
 * Threads: the observer on the loop thread; routes on HTTP workers; runners on the worker
 * pool. `lock` serialises read-modify-write of hook records (failure counts).
 */
#include "mbyte.h"
#include "cidr.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEBHOOKS_VERSION "1.0.0"
#define MAX_ATTEMPTS 6
#define MAX_RANGES 64

typedef struct webhooks {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t lock;
    cidr deny[MAX_RANGES], allow[MAX_RANGES];
    int ndeny, nallow;
    long timeout_ms, connect_timeout_ms;
    int disable_after;
} webhooks;

static void hex16(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

static bool valid_id(const char *s) { return s && strlen(s) == 16 && strspn(s, "0123456789abcdef") == 16; }

static json_t *kv_json(webhooks *w, const char *key)
{
    char *v;
    size_t n;
    mb_err e;
    if (w->api->kv_get(w->self, key, &v, &n, &e))
        return NULL;
    json_t *j = json_loadb(v, n, 0, NULL);
    free(v);
    return j;
}

static int kv_put_json(webhooks *w, const char *key, const json_t *j, bool sync, mb_err *err)
{
    char *t = json_dumps(j, JSON_COMPACT);
    int rc = w->api->kv_put(w->self, key, t, strlen(t), sync, err);
    free(t);
    return rc;
}

static json_t *hook_load(webhooks *w, const char *id)
{
    char key[32];
    if (!valid_id(id))
        return NULL;
    snprintf(key, sizeof key, "h/%s", id);
    return kv_json(w, key);
}

static json_t *hook_public(const json_t *h)
{
    json_t *o = json_deep_copy(h);
    json_object_del(o, "secret");
    json_object_del(o, "v");
    return o;
}

/* A fresh id: 10 hex digits of microseconds then 6 random, so keys sort by creation. */
static void new_id(char out[17])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint64_t v = ((us & 0xffffffffffull) << 24) | (randombytes_random() & 0xffffff);
    hex16(out, v);
}

/* ----------------------------------------------------------- delivering --- */

typedef struct conn_ctx {
    webhooks *w;
    bool denied;
    char addr[64];
} conn_ctx;

/* Is sa in the deny list and not exempted by allow? Writes its text form into addr. */
static bool denied(const webhooks *w, const struct sockaddr *sa, char *addr, size_t n)
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, (socklen_t)n);
    return cidr_match_any(w->deny, w->ndeny, sa) && !cidr_match_any(w->allow, w->nallow, sa);
}

/* Called by curl with the resolved address it is about to connect to. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    conn_ctx *c = ud;
    (void)purpose;
    if (denied(c->w, &a->addr, c->addr, sizeof c->addr)) {
        c->denied = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p, (void)ud;
    return s * n;
}

/* One POST. Returns the HTTP status (0 when none) and an error sentence in err. */
static long post(webhooks *w, const char *url, const char *body, const char *event, const char *did,
                 const char *secret, char *errbuf, size_t errlen)
{
    char ts[24], sig[crypto_auth_hmacsha256_BYTES * 2 + 1], hdr[5][200];
    snprintf(ts, sizeof ts, "%lld", (long long)w->api->now());
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(sig, sizeof sig, mac, sizeof mac);
    snprintf(hdr[0], sizeof hdr[0], "X-MByte-Event: %s", event);
    snprintf(hdr[1], sizeof hdr[1], "X-MByte-Delivery: %s", did);
    snprintf(hdr[2], sizeof hdr[2], "X-MByte-Timestamp: %s", ts);
    snprintf(hdr[3], sizeof hdr[3], "X-MByte-Signature: sha256=%s", sig);
    snprintf(hdr[4], sizeof hdr[4], "Content-Type: application/json");
    struct curl_slist *h = NULL;
    for (int i = 0; i < 5; i++)
        h = curl_slist_append(h, hdr[i]);
    h = curl_slist_append(h, "Expect:");
    conn_ctx cc = {w, false, ""};
    char cerr[CURL_ERROR_SIZE] = "";
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, w->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, w->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &cc);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "MByte-Webhooks/" WEBHOOKS_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    errbuf[0] = 0;
    if (cc.denied)
        snprintf(errbuf, errlen, "address %s is in the deny list", cc.addr);
    else if (rc != CURLE_OK)
        snprintf(errbuf, errlen, "%s", *cerr ? cerr : curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        snprintf(errbuf, errlen, "the receiver answered %ld", status);
    return rc == CURLE_OK ? status : 0;
}

/* After a delivery failed every attempt: count it against the hook, maybe disable it. */
static void hook_failed(webhooks *w, const char *hid, bool ok)
{
    pthread_mutex_lock(&w->lock);
    json_t *h = hook_load(w, hid);
    if (h) {
        int64_t f = ok ? 0 : mb_jint(h, "failures") + 1;
        bool was = json_is_true(json_object_get(h, "active"));
        json_object_set_new(h, "failures", json_integer(f));
        if (!ok && was && f >= w->disable_after) {
            json_object_set_new(h, "active", json_false());
            char body[512];
            snprintf(body, sizeof body, "The webhook to %s failed %lld deliveries in a row and was switched off.",
                     mb_jstr(h, "url"), (long long)f);
            w->api->notify((uint64_t)mb_jint(h, "owner"), "error", "Webhook disabled", body);
            w->api->hook_emit("webhook.disabled",
                              json_pack("{s:s, s:I, s:I, s:s}", "hook", hid, "store", (json_int_t)mb_jint(h, "store"),
                                        "owner", (json_int_t)mb_jint(h, "owner"), "url", mb_jstr(h, "url")),
                              NULL);
            w->api->log(w->self, MB_LOG_WARN, "hook %s disabled after %lld failed deliveries", hid, (long long)f);
        }
        mb_err e;
        char key[32];
        snprintf(key, sizeof key, "h/%s", hid);
        kv_put_json(w, key, h, true, &e);
        json_decref(h);
    }
    pthread_mutex_unlock(&w->lock);
}

/* webhooks.deliver {"hook","delivery"}: one attempt. */
static int t_deliver(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)task;
    webhooks *w = state;
    const char *hid = mb_jstr(args, "hook"), *did = mb_jstr(args, "delivery");
    json_t *h = hook_load(w, hid);
    char key[64];
    snprintf(key, sizeof key, "d/%s/%s", hid ? hid : "", did ? did : "");
    json_t *d = valid_id(did) ? kv_json(w, key) : NULL;
    if (!h || !d) { /* the hook or its log was deleted: nothing to deliver */
        json_decref(h);
        json_decref(d);
        return 0;
    }
    if (!json_is_true(json_object_get(h, "active"))) {
        json_object_set_new(d, "state", json_string("skipped"));
        kv_put_json(w, key, d, true, err);
        json_decref(h);
        json_decref(d);
        return 0;
    }
    json_t *msg = json_pack("{s:s, s:s, s:I, s:s, s:I, s:O}", "id", did, "event", mb_jstr(d, "event"), "time",
                            (json_int_t)mb_jint(d, "created"), "hook", hid, "store", (json_int_t)mb_jint(h, "store"), "data",
                            json_object_get(d, "payload"));
    char *body = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    char errbuf[256];
    int64_t t0 = w->api->now();
    long status = post(w, mb_jstr(h, "url"), body, mb_jstr(d, "event"), did, mb_jstr(h, "secret"), errbuf, sizeof errbuf);
    free(body);
    bool ok = status >= 200 && status <= 299;
    json_t *attempts = json_object_get(d, "attempts");
    if (!json_is_array(attempts)) {
        attempts = json_array();
        json_object_set_new(d, "attempts", attempts);
    }
    json_t *at = json_pack("{s:I, s:I, s:I}", "n", (json_int_t)json_array_size(attempts) + 1, "time", (json_int_t)t0,
                           "status", (json_int_t)status);
    if (!ok)
        json_object_set_new(at, "error", json_string(errbuf));
    json_array_append_new(attempts, at);
    bool last = json_array_size(attempts) >= MAX_ATTEMPTS;
    json_object_set_new(d, "state", json_string(ok ? "delivered" : last ? "failed" : "retrying"));
    json_object_set_new(d, "status", json_integer(status));
    mb_err e;
    kv_put_json(w, key, d, true, &e);
    json_decref(d);
    json_decref(h);
    if (ok || last)
        hook_failed(w, hid, ok);
    if (ok)
        return 0;
    return w->api->err_set(err, last ? MB_EIO : MB_EAGAIN, "delivery %s failed: %s", did, errbuf);
}

/* Create a delivery record and its task. */
static int enqueue(webhooks *w, const json_t *h, const char *event, json_t *payload, const char *redelivery_of,
                   char did[17], mb_err *err)
{
    new_id(did);
    json_t *d = json_pack("{s:i, s:s, s:s, s:s, s:O, s:I, s:s, s:[]}", "v", 1, "id", did, "hook", mb_jstr(h, "id"),
                          "event", event, "payload", payload, "created", (json_int_t)w->api->now(), "state",
                          "pending", "attempts");
    if (redelivery_of)
        json_object_set_new(d, "redelivery_of", json_string(redelivery_of));
    char key[64];
    snprintf(key, sizeof key, "d/%s/%s", mb_jstr(h, "id"), did);
    /* Not synced alone: task_submit syncs right after, and LevelDB keeps write order. */
    int rc = kv_put_json(w, key, d, false, err);
    json_decref(d);
    if (rc)
        return rc;
    uint64_t tid;
    return w->api->task_submit("webhooks.deliver", (uint64_t)mb_jint(h, "owner"),
                               json_pack("{s:s, s:s}", "hook", mb_jstr(h, "id"), "delivery", did), &tid, err);
}

static bool event_matches(const json_t *events, const char *event)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *s = json_string_value(e);
        size_t n = s ? strlen(s) : 0;
        if (!s)
            continue;
        if (!strcmp(s, "*") || !strcmp(s, event) || (n > 1 && s[n - 1] == '*' && !strncmp(s, event, n - 1)))
            return true;
    }
    return false;
}

typedef struct match_ctx {
    webhooks *w;
    const char *event;
    json_t *payload;
} match_ctx;

static int match_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    match_ctx *m = ud;
    const char *id = strrchr(key, '/');
    json_t *h = id ? hook_load(m->w, id + 1) : NULL;
    if (h && json_is_true(json_object_get(h, "active")) && event_matches(json_object_get(h, "events"), m->event)) {
        char did[17];
        mb_err e;
        if (enqueue(m->w, h, m->event, m->payload, NULL, did, &e))
            m->w->api->log(m->w->self, MB_LOG_ERROR, "could not queue a delivery for hook %s: %s", mb_jstr(h, "id"), e.msg);
    }
    json_decref(h);
    return 0;
}

/* Observer on every event: the ones of a store with hooks become deliveries. */
static void o_all(const char *event, const json_t *payload, void *state)
{
    webhooks *w = state;
    json_t *store = json_object_get(payload, "store");
    if (!json_is_integer(store) || !strncmp(event, "webhook.", 8))
        return;
    char prefix[40], s16[17];
    hex16(s16, (uint64_t)json_integer_value(store));
    snprintf(prefix, sizeof prefix, "hs/%s/", s16);
    json_t *p = json_deep_copy(payload);
    json_object_del(p, "_event_time");
    match_ctx m = {w, event, p};
    mb_err e;
    if (!strcmp(event, "store.created")) {
        /* A new store has no hooks yet: its owner's hooks (on any store) that ask for
         * store.created hear about it. */
        json_t *owner = json_object_get(payload, "owner");
        if (json_is_integer(owner)) {
            hex16(s16, (uint64_t)json_integer_value(owner));
            snprintf(prefix, sizeof prefix, "ho/%s/", s16);
            w->api->kv_scan(w->self, prefix, match_fn, &m, &e);
        }
    } else
        w->api->kv_scan(w->self, prefix, match_fn, &m, &e);
    json_decref(p);
}

/* ----------------------------------------------------------------- routes --- */

static int store_of(webhooks *w, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = w->api->req_param(req, "sid");
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return w->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    *sid = strtoull(s, NULL, 10);
    json_t *st = NULL;
    int rc = w->api->store_get(w->api->req_user(req), *sid, &st, err);
    json_decref(st);
    return rc;
}

/* The hook {id} of the store in the URL, which the caller owns. */
static int hook_of(webhooks *w, mb_req *req, uint64_t *sid, json_t **out, mb_err *err)
{
    int rc = store_of(w, req, sid, err);
    if (rc)
        return rc;
    json_t *h = hook_load(w, w->api->req_param(req, "id"));
    if (!h || (uint64_t)mb_jint(h, "store") != *sid) {
        json_decref(h);
        return w->api->err_set(err, MB_ENOENT, "no such webhook");
    }
    *out = h;
    return 0;
}

/* A hook whose host is, or resolves to, a denied address would only fail its six attempts and
 * be switched off: refuse it when it is created or changed. Every address the name has now
 * counts (curl may try any of them). A name that does not resolve now is accepted, as DNS may
 * come back; delivery checks the address it connects to anyway (open_socket), so a name that
 * re-resolves to a denied address later is still refused there. Runs on an HTTP worker, where
 * a DNS lookup may block. */
static int check_host(webhooks *w, const char *host, mb_err *err)
{
    char h[256];
    size_t n = strlen(host);
    if (n >= sizeof h)
        return w->api->err_set(err, MB_EINVAL, "url: the host name is too long");
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') /* an IPv6 literal comes bracketed */
        host++, n -= 2;
    memcpy(h, host, n);
    h[n] = 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(h, NULL, &hints, &res))
        return 0;
    int rc = 0;
    for (struct addrinfo *a = res; a && !rc; a = a->ai_next) {
        char addr[64] = "";
        if (denied(w, a->ai_addr, addr, sizeof addr))
            rc = w->api->err_set(err, MB_EINVAL, "url: %s is the address %s, which is in the webhooks deny list", h,
                                 addr);
    }
    freeaddrinfo(res);
    return rc;
}

static int check_url(webhooks *w, const char *url, mb_err *err)
{
    if (!url || strlen(url) > 2048)
        return w->api->err_set(err, MB_EINVAL, "url: an http or https URL of at most 2048 bytes is required");
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int bad = curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
              curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK;
    if (!bad && strcmp(scheme, "http") && strcmp(scheme, "https"))
        bad = 2;
    curl_free(scheme);
    curl_url_cleanup(u);
    if (bad == 2)
        bad = w->api->err_set(err, MB_EINVAL, "url: only http and https are allowed");
    else if (bad)
        bad = w->api->err_set(err, MB_EINVAL, "url: not a valid URL");
    else
        bad = check_host(w, host, err);
    curl_free(host);
    return bad;
}

static int check_events(webhooks *w, json_t *ev, mb_err *err)
{
    if (!json_is_array(ev) || json_array_size(ev) < 1 || json_array_size(ev) > 32)
        return w->api->err_set(err, MB_EINVAL, "events: a list of 1 to 32 event names (\"file.created\", \"*\")");
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        const char *s = json_string_value(e);
        if (!s || !*s || strlen(s) > 64 || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.*") != strlen(s) ||
            json_string_length(e) != strlen(s))
            return w->api->err_set(err, MB_EINVAL, "events: '%s' is not an event name", s ? s : "?");
    }
    return 0;
}

/* POST /api/v1/stores/{sid}/webhooks {"url","events"} -> 201 {"id","secret",...} */
static int h_create(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    const mb_api *api = w->api;
    uint64_t sid;
    int rc = store_of(w, req, &sid, err);
    if (rc)
        return rc;
    json_t *b = api->req_json(req, err);
    if (!b)
        return err->code;
    const char *url = mb_jstr(b, "url");
    json_t *events = json_object_get(b, "events");
    if ((rc = check_url(w, url, err)) || (rc = check_events(w, events, err)))
        return rc;
    char id[17], secret[65], key[64], s16[17];
    unsigned char rnd[32];
    new_id(id);
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(secret, sizeof secret, rnd, sizeof rnd);
    json_t *h = json_pack("{s:i, s:s, s:I, s:I, s:s, s:O, s:s, s:b, s:i, s:I}", "v", 1, "id", id, "store",
                          (json_int_t)sid, "owner", (json_int_t)api->req_user(req)->id, "url", url, "events", events,
                          "secret", secret, "active", 1, "failures", 0, "created", (json_int_t)api->now());
    snprintf(key, sizeof key, "h/%s", id);
    if ((rc = kv_put_json(w, key, h, true, err))) {
        json_decref(h);
        return rc;
    }
    hex16(s16, sid);
    snprintf(key, sizeof key, "hs/%s/%s", s16, id);
    if ((rc = api->kv_put(w->self, key, "", 0, true, err))) {
        json_decref(h);
        return rc;
    }
    hex16(s16, api->req_user(req)->id); /* the owner's hooks: they also hear store.created */
    snprintf(key, sizeof key, "ho/%s/%s", s16, id);
    if ((rc = api->kv_put(w->self, key, "", 0, true, err))) {
        json_decref(h);
        return rc;
    }
    api->hook_emit("webhook.created",
                   json_pack("{s:s, s:I, s:I, s:s, s:I}", "hook", id, "store", (json_int_t)sid, "owner",
                             (json_int_t)api->req_user(req)->id, "url", url, "user", (json_int_t)api->req_user(req)->id),
                   NULL);
    json_t *out = hook_public(h);
    json_object_set_new(out, "secret", json_string(secret)); /* shown once */
    sodium_memzero(secret, sizeof secret);
    json_decref(h);
    return api->reply_json(req, 201, out);
}

typedef struct list_ctx {
    webhooks *w;
    json_t *arr;
} list_ctx;

static int list_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    list_ctx *l = ud;
    const char *id = strrchr(key, '/');
    json_t *h = id ? hook_load(l->w, id + 1) : NULL;
    if (h)
        json_array_append_new(l->arr, hook_public(h));
    json_decref(h);
    return 0;
}

static int h_list(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    int rc = store_of(w, req, &sid, err);
    if (rc)
        return rc;
    char prefix[40], s16[17];
    hex16(s16, sid);
    snprintf(prefix, sizeof prefix, "hs/%s/", s16);
    list_ctx l = {w, json_array()};
    w->api->kv_scan(w->self, prefix, list_fn, &l, err);
    return w->api->reply_json(req, 200, json_pack("{s:o}", "webhooks", l.arr));
}

static int h_get(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    json_t *h;
    int rc = hook_of(w, req, &sid, &h, err);
    if (rc)
        return rc;
    json_t *out = hook_public(h);
    json_decref(h);
    return w->api->reply_json(req, 200, out);
}

/* PATCH .../webhooks/{id} {"active"?, "url"?, "events"?}: e.g. switch a disabled hook on. */
static int h_patch(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    json_t *h, *b = w->api->req_json(req, err);
    if (!b)
        return err->code;
    int rc = hook_of(w, req, &sid, &h, err);
    if (rc)
        return rc;
    json_t *a = json_object_get(b, "active"), *ev = json_object_get(b, "events");
    const char *url = mb_jstr(b, "url");
    if ((a && !json_is_boolean(a) && (rc = w->api->err_set(err, MB_EINVAL, "active: true or false"))) ||
        (json_object_get(b, "url") && (rc = check_url(w, url, err))) || (ev && (rc = check_events(w, ev, err)))) {
        json_decref(h);
        return rc;
    }
    pthread_mutex_lock(&w->lock);
    json_decref(h);
    h = hook_load(w, w->api->req_param(req, "id"));
    if (h) {
        if (a) {
            json_object_set(h, "active", a);
            if (json_is_true(a))
                json_object_set_new(h, "failures", json_integer(0));
        }
        if (url)
            json_object_set_new(h, "url", json_string(url));
        if (ev)
            json_object_set(h, "events", ev);
        char key[32];
        snprintf(key, sizeof key, "h/%s", mb_jstr(h, "id"));
        rc = kv_put_json(w, key, h, true, err);
    }
    pthread_mutex_unlock(&w->lock);
    if (!h)
        return w->api->err_set(err, MB_ENOENT, "no such webhook");
    json_t *out = rc ? NULL : hook_public(h);
    json_decref(h);
    return rc ? rc : w->api->reply_json(req, 200, out);
}

typedef struct del_ctx {
    webhooks *w;
    char keys[256][64];
    int n;
} del_ctx;

static int del_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    del_ctx *d = ud;
    snprintf(d->keys[d->n++], 64, "%s", key);
    return d->n == 256;
}

static int h_delete(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    json_t *h;
    int rc = hook_of(w, req, &sid, &h, err);
    if (rc)
        return rc;
    char key[64], s16[17];
    snprintf(key, sizeof key, "h/%s", mb_jstr(h, "id"));
    if ((rc = w->api->kv_del(w->self, key, true, err))) {
        json_decref(h);
        return rc;
    }
    hex16(s16, sid);
    snprintf(key, sizeof key, "hs/%s/%s", s16, mb_jstr(h, "id"));
    w->api->kv_del(w->self, key, true, err);
    hex16(s16, (uint64_t)mb_jint(h, "owner"));
    snprintf(key, sizeof key, "ho/%s/%s", s16, mb_jstr(h, "id"));
    w->api->kv_del(w->self, key, true, err);
    /* Its delivery log goes too; queued attempts find no hook and end. */
    snprintf(key, sizeof key, "d/%s/", mb_jstr(h, "id"));
    del_ctx *d = malloc(sizeof *d);
    if (d) {
        do {
            d->w = w;
            d->n = 0;
            w->api->kv_scan(w->self, key, del_fn, d, err);
            for (int i = 0; i < d->n; i++)
                w->api->kv_del(w->self, d->keys[i], false, err);
        } while (d->n == 256);
        free(d);
    }
    json_decref(h);
    return w->api->reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static int dlist_fn(const char *key, json_t *d, void *ud)
{
    (void)key;
    json_object_del(d, "v");
    json_array_append(ud, d);
    return 0;
}

/* GET .../webhooks/{id}/deliveries: the newest first. */
static int h_deliveries(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    json_t *h;
    int rc = hook_of(w, req, &sid, &h, err);
    if (rc)
        return rc;
    char prefix[40];
    snprintf(prefix, sizeof prefix, "d/%s/", mb_jstr(h, "id"));
    json_decref(h);
    json_t *all = json_array(), *out = json_array();
    w->api->kv_scan_json(w->self, prefix, dlist_fn, all, err);
    for (size_t i = json_array_size(all); i > 0 && json_array_size(out) < 200; i--)
        json_array_append(out, json_array_get(all, i - 1));
    json_decref(all);
    return w->api->reply_json(req, 200, json_pack("{s:o}", "deliveries", out));
}

/* POST .../deliveries/{did}/redeliver -> 202 {"id"}: the same message as a new delivery. */
static int h_redeliver(mb_req *req, void *state, mb_err *err)
{
    webhooks *w = state;
    uint64_t sid;
    json_t *h;
    int rc = hook_of(w, req, &sid, &h, err);
    if (rc)
        return rc;
    const char *did = w->api->req_param(req, "did");
    char key[64], nid[17];
    snprintf(key, sizeof key, "d/%s/%s", mb_jstr(h, "id"), valid_id(did) ? did : "");
    json_t *d = valid_id(did) ? kv_json(w, key) : NULL;
    if (!d) {
        json_decref(h);
        return w->api->err_set(err, MB_ENOENT, "no such delivery");
    }
    rc = enqueue(w, h, mb_jstr(d, "event"), json_object_get(d, "payload"), did, nid, err);
    json_decref(d);
    json_decref(h);
    if (rc)
        return rc;
    return w->api->reply_json(req, 202, json_pack("{s:s, s:s}", "id", nid, "redelivery_of", did));
}

/* ---------------------------------------------------------- init and fini --- */

static int load_ranges(webhooks *w, const json_t *list, cidr *out, int *n, const char *name, mb_err *err)
{
    size_t i;
    json_t *e;
    *n = 0;
    json_array_foreach(list, i, e)
    {
        if (*n == MAX_RANGES)
            return w->api->err_set(err, MB_EINVAL, "%s: at most %d ranges", name, MAX_RANGES);
        if (!json_is_string(e) || cidr_parse(json_string_value(e), &out[*n]))
            return w->api->err_set(err, MB_EINVAL, "%s: '%s' is not an address range like 10.0.0.0/8", name,
                                   json_is_string(e) ? json_string_value(e) : "?");
        (*n)++;
    }
    return 0;
}

static int configure(webhooks *w, const json_t *config, mb_err *err)
{
    int rc;
    webhooks tmp = *w;
    if ((rc = load_ranges(&tmp, json_object_get(config, "deny"), tmp.deny, &tmp.ndeny, "deny", err)) ||
        (rc = load_ranges(&tmp, json_object_get(config, "allow"), tmp.allow, &tmp.nallow, "allow", err)))
        return rc;
    memcpy(w->deny, tmp.deny, sizeof tmp.deny);
    memcpy(w->allow, tmp.allow, sizeof tmp.allow);
    w->ndeny = tmp.ndeny;
    w->nallow = tmp.nallow;
    w->timeout_ms = (long)json_integer_value(json_object_get(config, "timeout_ms"));
    w->connect_timeout_ms = (long)json_integer_value(json_object_get(config, "connect_timeout_ms"));
    w->disable_after = (int)json_integer_value(json_object_get(config, "disable_after"));
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium could not start");
    webhooks *w = calloc(1, sizeof *w);
    if (!w)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    w->self = self;
    w->api = api;
    int rc = configure(w, config, err);
    if (rc) {
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->lock, NULL);
    *state = w;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    webhooks *w = state;
    pthread_mutex_destroy(&w->lock);
    free(w);
    return 0;
}

/* Runners may read the ranges while this runs; the tables are replaced as a whole only
 * after the new ones parsed, and a torn read can only deny, never connect, as deny is
 * written before allow. */
static int reconfigure(void *state, const json_t *config, mb_err *err) { return configure(state, config, err); }

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "deny", MB_CFG_LIST,
     "[\"127.0.0.0/8\", \"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\", \"169.254.0.0/16\", \"0.0.0.0/8\", "
     "\"100.64.0.0/10\", \"224.0.0.0/4\", \"240.0.0.0/4\", \"::1/128\", \"::/128\", \"fc00::/7\", \"fe80::/10\", "
     "\"ff00::/8\"]",
     0, 0},
    {sizeof(mb_config_key), "allow", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "timeout_ms", MB_CFG_INT, "10000", 100, 120000},
    {sizeof(mb_config_key), "connect_timeout_ms", MB_CFG_INT, "5000", 100, 60000},
    {sizeof(mb_config_key), "disable_after", MB_CFG_INT, "5", 1, 1000},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/stores/{sid}/webhooks", MB_ROLE_USER, h_create},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/webhooks", MB_ROLE_USER, h_list},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/webhooks/{id}", MB_ROLE_USER, h_get},
    {sizeof(mb_route), "PATCH", "/api/v1/stores/{sid}/webhooks/{id}", MB_ROLE_USER, h_patch},
    {sizeof(mb_route), "DELETE", "/api/v1/stores/{sid}/webhooks/{id}", MB_ROLE_USER, h_delete},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/webhooks/{id}/deliveries", MB_ROLE_USER, h_deliveries},
    {sizeof(mb_route), "POST", "/api/v1/stores/{sid}/webhooks/{id}/deliveries/{did}/redeliver", MB_ROLE_USER,
     h_redeliver},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "*", MB_HOOK_OBSERVER, 500, NULL, o_all},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "webhooks.deliver", t_deliver, MAX_ATTEMPTS},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "webhooks",
    .version = WEBHOOKS_VERSION,
    .description = "Signed HTTP callbacks for the events of a store, from a durable queue with retries",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
