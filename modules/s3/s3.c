/*
 * modules/s3 — blob backends on any S3-compatible object store (issue 21).
 *
 * conf.d/s3.yaml declares backends by name (`backends: {<name>: {endpoint, region, bucket,
 * access_key, secret_key, path_style, prefix}}`); init registers each one with the kernel
 * (api->backend_register), and a store placed on it ({"placement": {"backend": "<name>"}} at
 * POST /api/v1/stores) keeps its chunks there as objects <prefix><sha256>.
 *
 *   put   PUT object, the body's SHA-256 signed (x-amz-content-sha256), so the service checks
 *         what it received; 0 only on a 200: the kernel commits a version only after every
 *         chunk of it was put, so an acknowledged upload is on the backend.
 *   get   GET with Range: only the bytes asked for travel.
 *   has / stat  HEAD.   del  DELETE (a missing object is success).
 *   list  ListObjectsV2 pages (the collector's and fsck's orphan scans).
 *
 * Requests are signed with AWS Signature V4 (s3_util.c), addressed path-style
 * (<endpoint>/<bucket>/<key>) or virtual-host style (<bucket>.<host>/<key>). A connection
 * error, a 5xx, a 429 or an S3 "SlowDown" is retried up to `retries` times with exponential
 * backoff from `retry_base_ms` (with jitter); anything else is final. After the last
 * attempt the caller gets MB_EIO (an upload then fails: nothing is acknowledged).
 *
 * Connections: each backend keeps at most `max_connections` libcurl easy handles
 * (modules/httppool.c, shared with webdav's client backends); a caller takes one
 * (waiting when all are busy) and gives it back, so connections are reused and bounded.
 *
 * Threads: backend calls come from HTTP workers, the store thread of uploads and task
 * workers, never the loop thread (they block on the network). Each backend's pool is guarded
 * by its own mutex; everything else is read-only after init. fini runs once no call is in flight.
 */
#include "mbyte.h"
#include "httppool.h"
#include "s3_util.h"
#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S3_VERSION "1.0.0"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct s3b {
    struct s3mod *mod;
    char *name, *endpoint, *region, *bucket, *access, *secret, *prefix;
    bool path_style;
    hp_pool pool;
} s3b;

typedef struct s3mod {
    mb_module *self;
    const mb_api *api;
    s3b **b;
    size_t nb;
    int retries;
    long retry_base_ms, timeout_ms, connect_timeout_ms;
} s3mod;

/* ------------------------------------------------------------- requests --- */

typedef struct req {
    const char *method;
    const char *key;   /* object key ("" for the bucket) */
    const char *query; /* "" or already encoded pairs */
    const void *body;
    size_t blen;
    uint64_t range_off, range_len; /* range_len 0: no Range */
    void *out;                     /* GET: where the bytes go (range_len bytes at most) */
} req;

typedef hp_reply reply;

static void body_sha(const void *p, size_t n, char out[65])
{
    static const char hx[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned ml = 0;
    EVP_Digest(p, n, md, &ml, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[md[i] >> 4];
        out[2 * i + 1] = hx[md[i] & 15];
    }
    out[64] = 0;
}

/* One attempt. 0 with r filled (any HTTP status), or a negative code for a transport error. */
static int attempt(s3b *b, const req *q, reply *r, mb_err *err)
{
    const mb_api *api = b->mod->api;
    char full[1200], url[4096], host[512], path[2048];
    snprintf(full, sizeof full, "%s%s", q->key && *q->key ? b->prefix : "", q->key ? q->key : "");
    if (s3_url(b->endpoint, b->bucket, b->path_style, full, url, sizeof url, host, sizeof host, path, sizeof path))
        return api->err_set(err, MB_EINVAL, "backend '%s': the endpoint or bucket makes no URL", b->name);
    if (q->query && *q->query) {
        size_t ul = strlen(url);
        snprintf(url + ul, sizeof url - ul, "?%s", q->query);
    }
    char sha[65], date[17], range[80] = "", auth[600];
    if (q->blen)
        body_sha(q->body, q->blen, sha);
    else
        memcpy(sha, EMPTY_SHA, sizeof sha);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y%m%dT%H%M%SZ", &tm);
    s3_hdr h[4] = {{"host", host}, {"x-amz-content-sha256", sha}, {"x-amz-date", date}};
    size_t nh = 3;
    if (q->range_len) {
        snprintf(range, sizeof range, "bytes=%llu-%llu", (unsigned long long)q->range_off,
                 (unsigned long long)(q->range_off + q->range_len - 1));
        h[nh++] = (s3_hdr){"range", range};
    }
    s3_sign_in in = {q->method, path, q->query ? q->query : "", h, nh, sha, b->access, b->secret, b->region, "s3",
                     date};
    if (s3_sign(&in, auth, sizeof auth, NULL, NULL))
        return api->err_set(err, MB_EINVAL, "backend '%s': the request cannot be signed", b->name);
    CURL *c = hp_take(&b->pool);
    if (!c)
        return api->err_set(err, MB_ENOMEM, "backend '%s': no connection handle", b->name);
    struct curl_slist *hl = NULL;
    char line[700];
    snprintf(line, sizeof line, "Authorization: %s", auth);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", sha);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "x-amz-date: %s", date);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "Host: %s", host);
    hl = curl_slist_append(hl, line);
    if (q->range_len) {
        snprintf(line, sizeof line, "Range: %s", range);
        hl = curl_slist_append(hl, line);
    }
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip per chunk */
    hl = curl_slist_append(hl, "Content-Type:");
    hp_setup(c, url, q->method, b->mod->timeout_ms, b->mod->connect_timeout_ms, hl, "MByte-S3/" S3_VERSION, r, q->out,
             q->range_len);
    if (!strcmp(q->method, "PUT")) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->blen ? (const char *)q->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->blen);
    }
    char cerr[CURL_ERROR_SIZE];
    if (hp_perform(&b->pool, c, hl, r, cerr) != CURLE_OK)
        return api->err_set(err, MB_EIO, "backend '%s': %s %s failed: %s", b->name, q->method,
                            q->key && *q->key ? "an object" : "the bucket", cerr);
    return 0;
}

typedef struct call {
    s3b *b;
    const req *q;
    reply *r;
} call;

/* One try for hp_retry: 0 with a final answer, non-zero for a transport error, a 5xx, a 429
 * or an S3 "SlowDown" (err says which). */
static int once(void *ctx, mb_err *err)
{
    call *k = ctx;
    const mb_api *api = k->b->mod->api;
    reply *r = k->r;
    int rc = attempt(k->b, k->q, r, err);
    if (rc)
        return rc;
    char code[64] = "";
    if (!r->body.fixed && r->body.buf)
        s3_error_code(r->body.buf, r->body.len, code, sizeof code);
    if (r->status >= 500 || r->status == 429 || !strcmp(code, "SlowDown")) {
        rc = api->err_set(err, MB_EIO, "backend '%s': %s answered %ld%s%s", k->b->name, k->q->method, r->status,
                          code[0] ? " " : "", code);
        hp_reply_free(r);
        return rc;
    }
    return 0;
}

/* A request with retries: 0 with r filled with a final answer (not 5xx/429/SlowDown), or
 * MB_EIO after the last attempt (err says why). */
static int request(s3b *b, const req *q, reply *r, mb_err *err)
{
    int tries = b->mod->retries + 1;
    int rc = hp_retry(tries, b->mod->retry_base_ms, once, &(call){b, q, r}, err);
    if (rc)
        b->mod->api->log(b->mod->self, MB_LOG_WARN, "%s (after %d attempts)", err->msg, tries);
    return rc;
}

static int status_error(s3b *b, const char *what, reply *r, mb_err *err)
{
    char code[64] = "";
    if (!r->body.fixed && r->body.buf)
        s3_error_code(r->body.buf, r->body.len, code, sizeof code);
    int rc = b->mod->api->err_set(err, r->status == 403 ? MB_EPERM : MB_EIO, "backend '%s': %s answered %ld%s%s",
                                  b->name, what, r->status, code[0] ? " " : "", code);
    hp_reply_free(r);
    return rc;
}

/* ------------------------------------------------------------ the backend --- */

static int s3_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    s3b *b = st;
    reply r;
    int rc = request(b, &(req){.method = "PUT", .key = key, .body = data, .blen = len}, &r, err);
    if (rc)
        return rc;
    if (r.status != 200)
        return status_error(b, "PUT", &r, err);
    hp_reply_free(&r);
    return 0;
}

static int64_t s3_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    s3b *b = st;
    if (!len)
        return 0;
    reply r;
    int rc = request(b, &(req){.method = "GET", .key = key, .range_off = off, .range_len = len, .out = buf}, &r,
                     err);
    if (rc)
        return rc;
    return hp_get_result(b->mod->api, b->name, key, &r, off, err);
}

static int s3_stat(void *st, const char *key, uint64_t *size, int64_t *mtime, mb_err *err)
{
    s3b *b = st;
    reply r;
    int rc = request(b, &(req){.method = "HEAD", .key = key}, &r, err);
    if (rc)
        return rc;
    hp_reply_free(&r);
    int got = hp_stat_result(&r, size, mtime);
    if (got < 0)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': HEAD answered %ld", b->name, r.status);
    return got;
}

static int s3_has(void *st, const char *key, mb_err *err) { return s3_stat(st, key, NULL, NULL, err); }

static int s3_del(void *st, const char *key, mb_err *err)
{
    s3b *b = st;
    reply r;
    int rc = request(b, &(req){.method = "DELETE", .key = key}, &r, err);
    if (rc)
        return rc;
    if (r.status != 204 && r.status != 200 && r.status != 404)
        return status_error(b, "DELETE", &r, err);
    hp_reply_free(&r);
    return 0;
}

typedef struct list_ctx {
    s3b *b;
    int (*fn)(const char *, uint64_t, int64_t, void *);
    void *ud;
} list_ctx;

/* Only keys of this backend's prefix that name a chunk; the prefix is taken off. */
static int list_one(const char *key, uint64_t size, int64_t mtime, void *ud)
{
    list_ctx *l = ud;
    size_t pl = strlen(l->b->prefix);
    if (strncmp(key, l->b->prefix, pl))
        return 0;
    const char *h = key + pl;
    if (strlen(h) != 64 || strspn(h, "0123456789abcdef") != 64)
        return 0;
    return l->fn(h, size, mtime, l->ud);
}

static int s3_list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    s3b *b = st;
    list_ctx l = {b, fn, ud};
    char token[1024] = "", enc_token[3100], enc_prefix[700], query[4000];
    if (s3_uri_encode(b->prefix, false, enc_prefix, sizeof enc_prefix))
        return b->mod->api->err_set(err, MB_EINVAL, "backend '%s': the prefix is too long", b->name);
    for (;;) {
        if (s3_uri_encode(token, false, enc_token, sizeof enc_token))
            return b->mod->api->err_set(err, MB_EIO, "backend '%s': a continuation token is too long", b->name);
        snprintf(query, sizeof query, "%s%s%slist-type=2&prefix=%s", token[0] ? "continuation-token=" : "",
                 token[0] ? enc_token : "", token[0] ? "&" : "", enc_prefix);
        reply r;
        int rc = request(b, &(req){.method = "GET", .key = "", .query = query}, &r, err);
        if (rc)
            return rc;
        if (r.status != 200)
            return status_error(b, "ListObjectsV2", &r, err);
        bool more = false;
        int stop = r.body.buf ? s3_list_parse(r.body.buf, r.body.len, list_one, &l, &more, token, sizeof token) : -1;
        hp_reply_free(&r);
        if (stop < 0)
            return b->mod->api->err_set(err, MB_EIO, "backend '%s': the listing answer is not one", b->name);
        if (stop)
            return stop;
        if (!more)
            return 0;
    }
}

static const mb_blob_backend s3_ops = {
    .size = sizeof(mb_blob_backend),
    .name = "s3",
    .put = s3_put,
    .get = s3_get,
    .has = s3_has,
    .del = s3_del,
    .list = s3_list,
    .stat = s3_stat,
};

/* ------------------------------------------------------------ lifecycle --- */

static void backend_free(s3b *b)
{
    if (!b)
        return;
    hp_pool_free(&b->pool);
    free(b->name);
    free(b->endpoint);
    free(b->region);
    free(b->bucket);
    free(b->access);
    free(b->secret);
    free(b->prefix);
    free(b);
}

static void mod_free(s3mod *m)
{
    for (size_t i = 0; i < m->nb; i++)
        backend_free(m->b[i]);
    free(m->b);
    free(m);
}

/* One backend's object from the config, checked: each member a string (path_style a bool). */
static int backend_parse(s3mod *m, const char *name, const json_t *o, int max_conn, s3b **out, mb_err *err)
{
    const mb_api *api = m->api;
    static const char *const known[] = {"endpoint", "region", "bucket", "access_key", "secret_key", "path_style",
                                        "prefix"};
    int rc = hp_check_keys(api, "s3.yaml", name, o, known, sizeof known / sizeof *known, 5, "path_style", err);
    if (rc)
        return rc;
    s3b *b = calloc(1, sizeof *b);
    if (!b)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    b->mod = m;
    b->name = strdup(name);
    b->endpoint = strdup(mb_jstr(o, "endpoint"));
    size_t el = strlen(b->endpoint);
    while (el && b->endpoint[el - 1] == '/')
        b->endpoint[--el] = 0;
    b->region = strdup(mb_jstr(o, "region"));
    b->bucket = strdup(mb_jstr(o, "bucket"));
    b->access = strdup(mb_jstr(o, "access_key"));
    b->secret = strdup(mb_jstr(o, "secret_key"));
    b->prefix = strdup(mb_jstr(o, "prefix") ? mb_jstr(o, "prefix") : "");
    b->path_style = json_is_true(json_object_get(o, "path_style"));
    hp_pool_init(&b->pool, max_conn);
    char url[4096], host[512], path[2048];
    if (s3_url(b->endpoint, b->bucket, b->path_style, "", url, sizeof url, host, sizeof host, path, sizeof path)) {
        backend_free(b);
        return api->err_set(err, MB_EINVAL, "s3.yaml: backends.%s: endpoint must be http[s]://host[:port] and "
                                            "bucket a name", name);
    }
    if (strlen(b->prefix) > 512) {
        backend_free(b);
        return api->err_set(err, MB_EINVAL, "s3.yaml: backends.%s.prefix is longer than 512 bytes", name);
    }
    *out = b;
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (api->abi_minor < 1)
        return api->err_set(err, MB_EUNSUPP, "s3 needs a kernel with ABI 2.1 (named backends)");
    s3mod *m = calloc(1, sizeof *m);
    if (!m)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    m->self = self;
    m->api = api;
    m->retries = (int)mb_jint(config, "retries");
    m->retry_base_ms = (long)mb_jint(config, "retry_base_ms");
    m->timeout_ms = (long)mb_jint(config, "timeout_ms");
    m->connect_timeout_ms = (long)mb_jint(config, "connect_timeout_ms");
    int max_conn = (int)mb_jint(config, "max_connections");
    json_t *bs = json_object_get(config, "backends");
    if (bs && !json_is_object(bs)) {
        mod_free(m);
        return api->err_set(err, MB_EINVAL, "s3.yaml: backends must be a map of names to backends");
    }
    m->b = calloc(json_object_size(bs) + 1, sizeof *m->b);
    const char *name;
    json_t *o;
    json_object_foreach(bs, name, o) {
        int rc = backend_parse(m, name, o, max_conn, &m->b[m->nb], err);
        if (rc) {
            mod_free(m);
            return rc;
        }
        m->nb++;
    }
    for (size_t i = 0; i < m->nb; i++) {
        int rc = api->backend_register(self, m->b[i]->name, &s3_ops, m->b[i], err);
        if (rc) { /* the kernel drops what this copy registered when init fails */
            mod_free(m);
            return rc;
        }
        api->log(self, MB_LOG_INFO, "backend '%s': bucket '%s' at %s (%s)", m->b[i]->name, m->b[i]->bucket,
                 m->b[i]->endpoint, m->b[i]->path_style ? "path-style" : "virtual-host");
    }
    *state = m;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    mod_free(state); /* no call is in flight: the kernel drained the module first */
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "backends", MB_CFG_MAP, "{}", 0, 0},
    {sizeof(mb_config_key), "max_connections", MB_CFG_INT, "8", 1, 256},
    {sizeof(mb_config_key), "retries", MB_CFG_INT, "4", 0, 20},
    {sizeof(mb_config_key), "retry_base_ms", MB_CFG_INT, "200", 1, 60000},
    {sizeof(mb_config_key), "timeout_ms", MB_CFG_INT, "60000", 100, 3600000},
    {sizeof(mb_config_key), "connect_timeout_ms", MB_CFG_INT, "5000", 100, 600000},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "s3",
    .version = S3_VERSION,
    .description = "Blob backends on S3-compatible object stores (AWS SigV4, Range reads, retries)",
    .config = config_keys,
    .init = init,
    .fini = fini,
};
