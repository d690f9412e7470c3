/*
 * etcd.c — a small etcd v3 client over etcd's JSON gateway (grpc-gateway, etcd 3.4: /v3/kv/..., /v3/lease/...),
 * with libcurl. Cluster mode is its only user: cluster.c (leases, puts under a lease, ranges,
 * create-if-absent) and cluster_kv.c (transactions, compare-and-swap, ranges in pages, and a
 * watch: the one streaming call, one JSON message per line).
 *
 * The wire: every call is a POST of a JSON object; keys and values are base64 (standard
 * alphabet, padded); 64-bit numbers come back as decimal strings ("revision":"12"), and proto3
 * leaves out fields at their default (a failed txn has no "succeeded", a keepalive of an unknown
 * lease no "TTL"). An error is {"error","message","code"} with the gRPC code. The request
 * builders and the answer parser are pure (tests/unit/test_etcd.c, tests/fuzz/fuzz_etcd.c: the
 * answers are outside bytes).
 *
 * Endpoints: a client holds the list from mbyte.yaml (cluster.etcd) and sticks to the one
 * that answered last; a connection failure, a timeout or a 503 moves it to the next, each
 * endpoint tried once per call.
 * Threads: a client is used by one thread at a time (its mutex makes that true; a watch holds it
 * for as long as it streams, so a watching thread has a client of its own); the builders
 * and the parser are pure and any thread may call them.
 */
#include "kernel.h"
#include <curl/curl.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_ANSWER_MAX (4u << 20)

struct etcd {
    pthread_mutex_t mu;
    CURL *curl;
    struct curl_slist *headers;
    char **urls;
    size_t n, cur; /* cur: the endpoint that answered last */
    long timeout_ms;
};

/* ------------------------------------------------------------ encoding --- */

char *etcd_b64(const void *p, size_t n)
{
    size_t l = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = xmalloc(l);
    sodium_bin2base64(s, l, p, n, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

/* base64 text -> malloc'd bytes plus a NUL (so text values read as strings). */
static int unb64(const char *s, char **out, size_t *n)
{
    size_t l = strlen(s), got = 0;
    char *buf = xmalloc(l / 4 * 3 + 4);
    if (sodium_base642bin((unsigned char *)buf, l / 4 * 3 + 3, s, l, NULL, &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL)) {
        free(buf);
        return MB_EINVAL;
    }
    buf[got] = 0;
    *out = buf;
    *n = got;
    return 0;
}

static void set_b64(json_t *o, const char *field, const char *s)
{
    char *b = etcd_b64(s, strlen(s));
    json_object_set_new(o, field, json_string(b));
    free(b);
}

static json_t *int64_str(int64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%lld", (long long)v);
    return json_string(b);
}

json_t *etcd_req_put(const char *key, const char *value, int64_t lease)
{
    json_t *r = json_object();
    set_b64(r, "key", key);
    set_b64(r, "value", value);
    if (lease)
        json_object_set_new(r, "lease", int64_str(lease));
    return r;
}

/* The end of the range of keys starting with prefix: prefix with its last byte + 1 (our
 * prefixes end in '/', never in 0xff). */
static void set_prefix_end(json_t *r, const char *prefix)
{
    size_t l = strlen(prefix);
    if (!l)
        return;
    char *end = xstrdup(prefix);
    end[l - 1]++;
    set_b64(r, "range_end", end);
    free(end);
}

json_t *etcd_req_range(const char *key, bool prefix)
{
    json_t *r = json_object();
    set_b64(r, "key", key);
    if (prefix)
        set_prefix_end(r, key);
    return r;
}

json_t *etcd_req_page(const char *prefix, const char *from, int64_t revision, int64_t limit)
{
    json_t *r = json_object();
    set_b64(r, "key", from && *from ? from : prefix);
    set_prefix_end(r, prefix);
    if (revision)
        json_object_set_new(r, "revision", int64_str(revision));
    if (limit)
        json_object_set_new(r, "limit", int64_str(limit));
    return r;
}

json_t *etcd_req_watch(const char *prefix, int64_t start)
{
    json_t *r = json_object();
    set_b64(r, "key", prefix);
    set_prefix_end(r, prefix);
    json_object_set_new(r, "start_revision", int64_str(start));
    return json_pack("{s:o}", "create_request", r);
}

/* A txn: put key=value when `target` of key equals v, else read key back. */
static json_t *txn_if(const char *key, const char *value, int64_t lease, const char *target, const char *field,
                      int64_t v)
{
    json_t *cmp = json_object();
    set_b64(cmp, "key", key);
    json_object_set_new(cmp, "target", json_string(target));
    json_object_set_new(cmp, "result", json_string("EQUAL"));
    json_object_set_new(cmp, field, int64_str(v));
    return json_pack("{s:[o], s:[{s:o}], s:[{s:o}]}", "compare", cmp, "success", "request_put",
                     etcd_req_put(key, value, lease), "failure", "request_range", etcd_req_range(key, false));
}

json_t *etcd_req_create(const char *key, const char *value, int64_t lease)
{
    return txn_if(key, value, lease, "CREATE", "create_revision", 0);
}

json_t *etcd_req_cas(const char *key, const char *value, int64_t mod_rev)
{
    return txn_if(key, value, 0, "MOD", "mod_revision", mod_rev);
}

/* ------------------------------------------------------------- parsing --- */

/* A 64-bit field as etcd writes it: a decimal string, or a JSON number; absent is 0. */
static int get_i64(const json_t *o, const char *k, int64_t *out)
{
    const json_t *v = json_object_get(o, k);
    *out = 0;
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return MB_EINVAL;
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno || (*s != '-' && (*s < '0' || *s > '9')))
        return MB_EINVAL;
    *out = x;
    return 0;
}

static int parse_kv(const json_t *kv, etcd_answer *a, bool deleted, mb_err *err)
{
    etcd_kv x = {.deleted = deleted};
    const char *k = jstr(kv, "key"), *v = jstr(kv, "value");
    size_t kl;
    if (!json_is_object(kv) || unb64(k, &x.key, &kl) || unb64(v, &x.value, &x.value_len) ||
        get_i64(kv, "lease", &x.lease) || get_i64(kv, "create_revision", &x.create_rev) ||
        get_i64(kv, "mod_revision", &x.mod_rev)) {
        free(x.key);
        free(x.value);
        return err_set(err, MB_EINVAL, "etcd answered with a key-value entry that does not parse");
    }
    a->kvs = xrealloc(a->kvs, (a->nkvs + 1) * sizeof *a->kvs);
    a->kvs[a->nkvs++] = x;
    return 0;
}

/* A range's "kvs" ([{kv}...]) or a watch message's "events" ([{"type":"DELETE"?, "kv":{...}}...],
 * where a put has no "type": proto3), appended to a->kvs in order. */
static int parse_list(const json_t *arr, const char *field, etcd_answer *a, mb_err *err)
{
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return err_set(err, MB_EINVAL, "etcd answered with \"%s\" that is not a list", field);
    bool events = !strcmp(field, "events");
    size_t i;
    json_t *one;
    json_array_foreach(arr, i, one)
    {
        const char *type = events ? jstr(one, "type") : "";
        if (events && (!json_is_object(one) || (*type && strcmp(type, "PUT") && strcmp(type, "DELETE"))))
            return err_set(err, MB_EINVAL, "etcd answered with a watch event that does not parse");
        int rc = parse_kv(events ? json_object_get(one, "kv") : one, a, !strcmp(type, "DELETE"), err);
        if (rc)
            return rc;
    }
    return 0;
}

/* An optional boolean field: absent is false (proto3). */
static int get_bool(const json_t *o, const char *k, bool *out)
{
    const json_t *v = json_object_get(o, k);
    *out = json_is_true(v);
    return v && !json_is_boolean(v) ? MB_EINVAL : 0;
}

int etcd_answer_parse(const char *body, size_t len, etcd_answer *a, mb_err *err)
{
    memset(a, 0, sizeof *a);
    json_error_t je;
    /* A keepalive answers as a stream of {"result": ...} lines: the first is the one asked for. */
    json_t *root = json_loadb(body, len, JSON_DISABLE_EOF_CHECK, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(err, MB_EINVAL, "etcd's answer is not a JSON object");
    }
    const json_t *r = json_object_get(root, "result");
    r = json_is_object(r) ? r : root;
    const json_t *e = json_object_get(r, "error");
    int rc = 0;
    if (e) {
        /* {"error":"text","message":"text","code":5}, or in a stream {"error":{"grpc_code":5,"message":..}} */
        const json_t *m = json_is_object(e) ? e : r;
        int64_t code = 0;
        if (get_i64(m, json_object_get(m, "grpc_code") ? "grpc_code" : "code", &code))
            code = 2; /* gRPC's UNKNOWN */
        a->code = code ? (int)code : 2;
        snprintf(a->error, sizeof a->error, "%s", *jstr(m, "message") ? jstr(m, "message") : jstr(r, "error"));
        json_decref(root);
        return 0;
    }
    if (get_i64(r, "ID", &a->id) || get_i64(r, "TTL", &a->ttl) ||
        get_i64(json_object_get(r, "header"), "revision", &a->revision))
        rc = err_set(err, MB_EINVAL, "etcd answered with a number that does not parse");
    if (!rc && (get_bool(r, "succeeded", &a->succeeded) || get_bool(r, "more", &a->more) ||
                get_bool(r, "created", &a->created) || get_bool(r, "canceled", &a->canceled) ||
                get_i64(r, "compact_revision", &a->compact_revision)))
        rc = err_set(err, MB_EINVAL, "etcd answered with a flag or number that does not parse");
    if (!rc)
        rc = parse_list(json_object_get(r, "kvs"), "kvs", a, err);
    if (!rc)
        rc = parse_list(json_object_get(r, "events"), "events", a, err);
    /* A txn's answers: the kvs of each range in it, in order. */
    const json_t *resps = json_object_get(r, "responses");
    if (!rc && resps && !json_is_array(resps))
        rc = err_set(err, MB_EINVAL, "etcd answered with \"responses\" that is not a list");
    size_t i;
    json_t *one;
    if (!rc && resps)
        json_array_foreach(resps, i, one)
        {
            const json_t *rr = json_object_get(one, "response_range");
            if (rr && (rc = parse_list(json_object_get(rr, "kvs"), "kvs", a, err)))
                break;
        }
    json_decref(root);
    if (rc)
        etcd_answer_free(a);
    return rc;
}

void etcd_answer_free(etcd_answer *a)
{
    for (size_t i = 0; i < a->nkvs; i++) {
        free(a->kvs[i].key);
        free(a->kvs[i].value);
    }
    free(a->kvs);
    a->kvs = NULL;
    a->nkvs = 0;
}

/* ------------------------------------------------------------- client --- */

etcd *etcd_new(char *const *urls, long timeout_ms)
{
    etcd *e = xcalloc(1, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    while (urls[e->n])
        e->n++;
    e->urls = xcalloc(e->n + 1, sizeof(char *));
    for (size_t i = 0; i < e->n; i++)
        e->urls[i] = xstrdup(urls[i]);
    e->timeout_ms = timeout_ms;
    e->curl = curl_easy_init();
    e->headers = curl_slist_append(NULL, "Content-Type: application/json");
    return e;
}

void etcd_free(etcd *e)
{
    if (!e)
        return;
    if (e->curl)
        curl_easy_cleanup(e->curl);
    curl_slist_free_all(e->headers);
    for (size_t i = 0; i < e->n; i++)
        free(e->urls[i]);
    free(e->urls);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* The answer into a memory stream, bounded: etcd's answers here are small. */
static size_t on_body(char *s, size_t sz, size_t nm, void *f)
{
    if ((size_t)ftell(f) + sz * nm > ETCD_ANSWER_MAX)
        return 0;
    return fwrite(s, 1, sz * nm, f);
}

/* Failures where another endpoint may do better: it did not answer, or said it cannot. */
static bool try_next(CURLcode cc, long status)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_OPERATION_TIMEDOUT ||
           cc == CURLE_GOT_NOTHING || cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR || (!cc && status == 503);
}

/* The client's handle, reset and set to POST body (JSON) to url. */
static CURL *post_to(etcd *e, const char *url, const char *body)
{
    CURL *c = e->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->headers);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms < 1000 ? e->timeout_ms : 1000L);
    return c;
}

int etcd_call(etcd *e, const char *path, json_t *req, etcd_answer *a, mb_err *err)
{
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    memset(a, 0, sizeof *a);
    int rc = err_set(err, MB_EBUSY, "etcd: no endpoint configured");
    pthread_mutex_lock(&e->mu);
    for (size_t tried = 0; tried < e->n && e->curl; tried++) {
        size_t at = (e->cur + tried) % e->n;
        char url[300];
        snprintf(url, sizeof url, "%s%s", e->urls[at], path);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        CURL *c = post_to(e, url, body);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, e->timeout_ms);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
        CURLcode cc = curl_easy_perform(c);
        fclose(f); /* buf and len are final now */
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (try_next(cc, status)) {
            rc = err_set(err, MB_EBUSY, "etcd at %s: %s", e->urls[at],
                         cc ? curl_easy_strerror(cc) : "503 service unavailable");
            free(buf);
            continue;
        }
        e->cur = at;
        if (cc)
            rc = err_set(err, MB_EIO, "etcd at %s: %s", e->urls[at], curl_easy_strerror(cc));
        else if ((rc = etcd_answer_parse(buf, len, a, err)) == 0 && a->code)
            rc = err_set(err, a->code == 5 ? MB_ENOENT : MB_EIO, "etcd at %s: %s", e->urls[at], a->error);
        else if (!rc && status != 200)
            rc = err_set(err, MB_EIO, "etcd at %s: HTTP %ld", e->urls[at], status);
        if (rc)
            etcd_answer_free(a);
        free(buf);
        break;
    }
    pthread_mutex_unlock(&e->mu);
    free(body);
    return rc;
}

int etcd_lease_grant(etcd *e, int ttl, int64_t *id, int64_t *granted, mb_err *err)
{
    etcd_answer a;
    int rc = etcd_call(e, "/v3/lease/grant", json_pack("{s:I}", "TTL", (json_int_t)ttl), &a, err);
    if (rc)
        return rc;
    if (!a.id || a.ttl <= 0)
        rc = err_set(err, MB_EIO, "etcd granted no lease");
    *id = a.id;
    *granted = a.ttl;
    etcd_answer_free(&a);
    return rc;
}

int etcd_lease_keepalive(etcd *e, int64_t id, int64_t *ttl, mb_err *err)
{
    etcd_answer a;
    int rc = etcd_call(e, "/v3/lease/keepalive", json_pack("{s:o}", "ID", int64_str(id)), &a, err);
    if (rc)
        return rc;
    *ttl = a.ttl; /* 0: etcd no longer has the lease */
    etcd_answer_free(&a);
    return 0;
}

int etcd_lease_revoke(etcd *e, int64_t id, mb_err *err)
{
    etcd_answer a;
    int rc = etcd_call(e, "/v3/lease/revoke", json_pack("{s:o}", "ID", int64_str(id)), &a, err);
    if (!rc)
        etcd_answer_free(&a);
    return rc;
}

int etcd_put(etcd *e, const char *key, const char *value, int64_t lease, mb_err *err)
{
    etcd_answer a;
    int rc = etcd_call(e, "/v3/kv/put", etcd_req_put(key, value, lease), &a, err);
    if (!rc)
        etcd_answer_free(&a);
    return rc;
}

int etcd_range(etcd *e, const char *key, bool prefix, etcd_answer *a, mb_err *err)
{
    return etcd_call(e, "/v3/kv/range", etcd_req_range(key, prefix), a, err);
}

int etcd_create(etcd *e, const char *key, const char *value, int64_t lease, etcd_answer *a, mb_err *err)
{
    return etcd_call(e, "/v3/kv/txn", etcd_req_create(key, value, lease), a, err);
}

/* ------------------------------------------------------------- watch --- */

struct watch_st {
    char *buf;
    size_t len, cap;
    int (*on_msg)(const etcd_answer *, void *);
    void *ud;
    const atomic_bool *stop;
    int64_t until; /* monotonic ms */
    bool done;     /* on_msg asked to end */
    mb_err *err;
    int rc;        /* a message that did not parse */
};

/* The gateway streams one JSON message per line. */
static size_t on_watch_body(char *s, size_t sz, size_t nm, void *p)
{
    struct watch_st *w = p;
    size_t n = sz * nm;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\n') {
            if (w->len == w->cap) {
                if (w->cap >= ETCD_ANSWER_MAX) {
                    w->rc = err_set(w->err, MB_EIO, "etcd sent a watch message over %u bytes", ETCD_ANSWER_MAX);
                    return 0;
                }
                w->cap = w->cap ? w->cap * 2 : 4096;
                w->buf = xrealloc(w->buf, w->cap);
            }
            w->buf[w->len++] = s[i];
            continue;
        }
        etcd_answer a;
        if (w->len && (w->rc = etcd_answer_parse(w->buf, w->len, &a, w->err)) != 0)
            return 0;
        bool had = w->len > 0;
        w->len = 0;
        if (!had)
            continue;
        int stop = w->on_msg(&a, w->ud);
        etcd_answer_free(&a);
        if (stop) {
            w->done = true;
            return 0;
        }
    }
    return n;
}

static int on_watch_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    struct watch_st *w = p;
    if ((w->stop && atomic_load(w->stop)) || now_mono_ms() >= w->until) {
        w->done = true;
        return 1;
    }
    return 0;
}

int etcd_watch(etcd *e, json_t *req, int (*on_msg)(const etcd_answer *a, void *ud), void *ud,
               const atomic_bool *stop, long max_ms, mb_err *err)
{
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct watch_st w = {.on_msg = on_msg, .ud = ud, .stop = stop, .until = now_mono_ms() + max_ms, .err = err};
    int rc = err_set(err, MB_EBUSY, "etcd: no endpoint configured");
    pthread_mutex_lock(&e->mu);
    for (size_t tried = 0; tried < e->n && e->curl; tried++) {
        size_t at = (e->cur + tried) % e->n;
        char url[300];
        snprintf(url, sizeof url, "%s/v3/watch", e->urls[at]);
        CURL *c = post_to(e, url, body); /* no overall timeout: a watch lasts until max_ms */
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_watch_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_watch_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &w);
        w.len = 0;
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (w.rc) {
            rc = w.rc;
            break;
        }
        if (w.done || (!cc && status == 200)) {
            e->cur = at;
            rc = 0;
            break;
        }
        rc = err_set(err, try_next(cc, status) ? MB_EBUSY : MB_EIO, "etcd at %s: %s", e->urls[at],
                     cc ? curl_easy_strerror(cc) : "the watch was refused");
        if (!try_next(cc, status))
            break;
    }
    pthread_mutex_unlock(&e->mu);
    free(w.buf);
    free(body);
    return rc;
}
