/*
 * dav_backend.c — blob backends on outside WebDAV servers (issue 21): the webdav module's
 * client side, beside its server side (webdav.c).
 *
 * conf.d/webdav.yaml declares backends by name (`backends: {<name>: {url, user, password,
 * prefix}}`; the password may be a secret reference, which the kernel resolves before the
 * module sees its settings); init registers each with the kernel (api->backend_register), and
 * a store placed on it ({"placement": {"backend": "<name>"}}) keeps its chunks there as
 * resources <url>/<prefix><aa>/<sha256> (aa: the hash's first two characters; an encrypted
 * store's keyed names "e/<hex>" become <url>/<prefix>e/<aa>/<hex>):
 *
 *   put   PUT with Content-Length, streamed from the caller's buffer; 0 only on 201 or 204:
 *         the kernel commits a version only after every chunk of it was put, so an acknowledged
 *         upload is on the server. A 409 or 404 (the collection is missing) makes the
 *         collections from the prefix down with MKCOL (405, "exists", is success; 423 or 403, a
 *         concurrent MKCOL of the same collection, is asked again after a wait), then puts
 *         again. A PUT cut short by a dying server leaves an object of the wrong size, which the
 *         kernel's put (it asks stat first) writes again and the collector takes as an orphan.
 *   get   GET with Range: only the bytes asked for travel.
 *   has / stat  HEAD (Content-Length, Last-Modified).   del  DELETE (404 is success).
 *   list  PROPFIND Depth 1 of <prefix> for its aa/ collections, then of each (dav_ms.c parses
 *         the multistatus; an answer is read whole up to 16 MiB, about 40,000 chunks per aa/).
 *
 * Retries: a connection error, a 5xx or a 429 is tried again up to `retries` times, with
 * exponential backoff from `retry_base_ms` and jitter; anything else is final (401: the user
 * or password is wrong, said so). After the last attempt the caller gets MB_EIO and an upload
 * fails: nothing is acknowledged. Redirects are never followed (a 3xx is an error), so the
 * credentials go to the configured host only; Basic auth is sent on every request, over http
 * or https. The password is never logged or put in an error.
 *
 * Connections: each backend keeps at most `max_connections` libcurl easy handles
 * (modules/httppool.c, as the s3 module does).
 *
 * Threads: backend calls come from HTTP workers, upload threads and task workers, never the
 * loop thread (they block on the network). A backend's settings are read under its rwlock
 * (reconfigure, on the loop thread, writes them); its pool has its own mutex. fini runs once
 * no call is in flight.
 */
#include "dav.h"
#include "httppool.h"
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAVB_VERSION "1.0.0"
#define URL_MAX 2048
#define SECRET_MAX 512

typedef struct davb {
    dav_backends *mod;
    char *name;
    pthread_rwlock_t mu; /* guards the settings: reconfigure replaces them */
    char *url;           /* http[s]://host[:port][/path], no trailing '/' */
    char *user, *password;
    char *prefix; /* "" or segments ending in '/' */
    int retries;
    long retry_base_ms, timeout_ms, connect_timeout_ms;
    hp_pool pool;
} davb;

struct dav_backends {
    mb_module *self;
    const mb_api *api;
    davb **b;
    size_t nb;
};

/* One request's copy of the settings, taken under the lock (the password zeroed after). */
typedef struct settings {
    char url[URL_MAX], user[SECRET_MAX], password[SECRET_MAX], prefix[URL_MAX];
    int retries;
    long retry_base_ms, timeout_ms, connect_timeout_ms;
} settings;

static void settings_take(davb *b, settings *s)
{
    pthread_rwlock_rdlock(&b->mu);
    snprintf(s->url, sizeof s->url, "%s", b->url);
    snprintf(s->user, sizeof s->user, "%s", b->user);
    snprintf(s->password, sizeof s->password, "%s", b->password);
    snprintf(s->prefix, sizeof s->prefix, "%s", b->prefix);
    s->retries = b->retries;
    s->retry_base_ms = b->retry_base_ms;
    s->timeout_ms = b->timeout_ms;
    s->connect_timeout_ms = b->connect_timeout_ms;
    pthread_rwlock_unlock(&b->mu);
}

static void settings_drop(settings *s) { sodium_memzero(s->password, sizeof s->password); }

/* ------------------------------------------------------------- requests --- */

typedef struct dreq {
    const char *method;
    const char *path; /* under the url, prefix included, no leading '/' */
    const void *body;
    size_t blen;
    uint64_t range_off, range_len; /* range_len 0: no Range */
    void *out;                     /* GET: where the bytes go (range_len bytes at most) */
    const char *depth;             /* PROPFIND */
} dreq;

/* One attempt. 0 with r filled (any HTTP status), or MB_EIO for a transport error. */
static int attempt(davb *b, const settings *s, const dreq *q, hp_reply *r, mb_err *err)
{
    const mb_api *api = b->mod->api;
    char url[2 * URL_MAX + 8], line[96];
    if (snprintf(url, sizeof url, "%s/%s", s->url, q->path) >= (int)sizeof url)
        return api->err_set(err, MB_EINVAL, "backend '%s': the URL is too long", b->name);
    CURL *c = hp_take(&b->pool);
    if (!c)
        return api->err_set(err, MB_ENOMEM, "backend '%s': no connection handle", b->name);
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip per chunk */
    if (q->range_len) {
        snprintf(line, sizeof line, "Range: bytes=%llu-%llu", (unsigned long long)q->range_off,
                 (unsigned long long)(q->range_off + q->range_len - 1));
        hl = curl_slist_append(hl, line);
    }
    if (q->depth) {
        snprintf(line, sizeof line, "Depth: %s", q->depth);
        hl = curl_slist_append(hl, line);
        hl = curl_slist_append(hl, "Content-Type: application/xml; charset=utf-8");
    }
    hp_setup(c, url, q->method, s->timeout_ms, s->connect_timeout_ms, hl, "MByte-WebDAV/" DAVB_VERSION, r, q->out,
             q->range_len);
    if (s->user[0]) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, s->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, s->password);
    }
    hp_cursor cur = {q->body, q->blen, 0};
    if (!strcmp(q->method, "PUT")) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, hp_cursor_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &cur);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, hp_cursor_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, &cur);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->blen);
    } else if (q->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)q->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->blen);
    }
    char cerr[CURL_ERROR_SIZE];
    if (hp_perform(&b->pool, c, hl, r, cerr) != CURLE_OK)
        return api->err_set(err, MB_EIO, "backend '%s': %s failed: %s", b->name, q->method, cerr);
    return 0;
}

typedef struct call {
    davb *b;
    const settings *s;
    const dreq *q;
    hp_reply *r;
} call;

/* One try for hp_retry: 0 with a final answer, non-zero for a transport error, a 5xx or a 429. */
static int once(void *ctx, mb_err *err)
{
    call *k = ctx;
    int rc = attempt(k->b, k->s, k->q, k->r, err);
    if (rc || (k->r->status < 500 && k->r->status != 429))
        return rc;
    rc = k->b->mod->api->err_set(err, MB_EIO, "backend '%s': %s answered %ld", k->b->name, k->q->method,
                                 k->r->status);
    hp_reply_free(k->r);
    return rc;
}

/* A request with retries: 0 with r filled with a final answer (not 5xx/429), or MB_EIO after
 * the last attempt (err says why). */
static int request(davb *b, const dreq *q, hp_reply *r, mb_err *err)
{
    settings *s = malloc(sizeof *s);
    if (!s)
        return b->mod->api->err_set(err, MB_ENOMEM, "out of memory");
    settings_take(b, s);
    int tries = s->retries + 1;
    int rc = hp_retry(tries, s->retry_base_ms, once, &(call){b, s, q, r}, err);
    settings_drop(s);
    free(s);
    if (rc)
        b->mod->api->log(b->mod->self, MB_LOG_WARN, "%s (after %d attempts)", err->msg, tries);
    return rc;
}

/* A final answer that is not the one expected, worded for the person who reads it. */
static int status_error(davb *b, const char *what, hp_reply *r, mb_err *err)
{
    long st = r->status;
    hp_reply_free(r);
    if (st == 401)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': the WebDAV server refused the user or password "
                                                 "(%s answered 401)", b->name, what);
    if (st >= 300 && st < 400)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': %s was redirected (%ld), which is not followed: "
                                                 "check the backend's url", b->name, what, st);
    return b->mod->api->err_set(err, MB_EIO, "backend '%s': %s answered %ld", b->name, what, st);
}

/* A request whose answer has nothing to read: 0 when its status is one of ok[] (0 ends the
 * list), else the reason; *status (may be NULL) gets the status, 0 when none came. */
static int request_expect(davb *b, const dreq *q, const long *ok, long *status, mb_err *err)
{
    hp_reply r = {0};
    int rc = request(b, q, &r, err);
    if (status)
        *status = rc ? 0 : r.status;
    if (rc)
        return rc;
    while (*ok && *ok != r.status)
        ok++;
    if (!*ok)
        return status_error(b, q->method, &r, err);
    hp_reply_free(&r);
    return 0;
}

/* ------------------------------------------------------------ the layout --- */

/* The resource of key under b's current settings, into path: false for a key that is not
 * a chunk name. */
static bool object_of(davb *b, const char *key, char *path, size_t n)
{
    settings *s = malloc(sizeof *s);
    if (!s)
        return false;
    settings_take(b, s);
    settings_drop(s);
    bool ok = hp_object_path(s->prefix, key, path, n, NULL);
    free(s);
    return ok;
}

#define MKCOL_LOCKED_TRIES 5

/* MKCOL every collection of `path` (up to its last '/'), from the top: 201 made, 405 there. A
 * 423 (Locked: rclone serve webdav answers so while another request makes the same collection,
 * as concurrent puts into a new aa/ do) or a 403 (Apache's mod_dav_fs, when another request made
 * the collection between its check and its mkdir) is asked again after a short wait: then it is
 * there (405), or the refusal stands. */
static int make_collections(davb *b, const char *path, mb_err *err)
{
    char col[URL_MAX];
    size_t pl = strlen(path);
    for (size_t i = 0; i < pl && i < sizeof col - 1; i++) {
        if (path[i] != '/')
            continue;
        memcpy(col, path, i + 1);
        col[i + 1] = 0;
        static const long made_or_there[] = {201, 405, 200, 0};
        long st = 0;
        int rc = 0;
        for (int t = 0; t < MKCOL_LOCKED_TRIES; t++) {
            rc = request_expect(b, &(dreq){.method = "MKCOL", .path = col}, made_or_there, &st, err);
            if (st != 423 && st != 403)
                break;
            usleep(20000 * (unsigned)(t + 1));
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ the backend --- */

static int64_t davb_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    davb *b = st;
    char path[URL_MAX + 256];
    if (!len)
        return 0;
    if (!object_of(b, key, path, sizeof path))
        return b->mod->api->err_set(err, MB_EINVAL, "backend '%s': '%.80s' is not a chunk name", b->name, key);
    hp_reply r;
    int rc = request(b, &(dreq){.method = "GET", .path = path, .range_off = off, .range_len = len, .out = buf}, &r,
                     err);
    if (rc)
        return rc;
    if (r.status == 401 || (r.status >= 300 && r.status < 400))
        return status_error(b, "GET", &r, err);
    return hp_get_result(b->mod->api, b->name, key, &r, off, err);
}

static int davb_stat(void *st, const char *key, uint64_t *size, int64_t *mtime, mb_err *err)
{
    davb *b = st;
    char path[URL_MAX + 256];
    hp_reply r;
    int rc = object_of(b, key, path, sizeof path) ? request(b, &(dreq){.method = "HEAD", .path = path}, &r, err) : 1;
    if (rc)
        return rc > 0 ? 0 : rc; /* not a chunk name: not here */
    int got = hp_stat_result(&r, size, mtime);
    return got < 0 ? status_error(b, "HEAD", &r, err) : got;
}

static int davb_has(void *st, const char *key, mb_err *err) { return davb_stat(st, key, NULL, NULL, err); }

/* PUT data to path; a missing collection (409, or 404 on some servers) is made, then again. */
static int put_at(davb *b, const char *path, const void *data, size_t len, mb_err *err)
{
    dreq q = {.method = "PUT", .path = path, .body = data ? data : "", .blen = len};
    static const long stored[] = {201, 204, 0};
    long status;
    int rc = request_expect(b, &q, stored, &status, err);
    if (rc && (status == 409 || status == 404)) /* the aa/ collection is not there yet */
        if ((rc = make_collections(b, path, err)) == 0)
            rc = request_expect(b, &q, stored, NULL, err);
    return rc;
}

/* A server that writes a PUT in place (rclone serve webdav does) and dies during it leaves a
 * cut-short object under the chunk's name: the kernel asks stat before a put and puts again when
 * the size differs, and the collector takes it as an orphan otherwise. */
static int davb_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    davb *b = st;
    char path[URL_MAX + 256];
    if (!object_of(b, key, path, sizeof path))
        return b->mod->api->err_set(err, MB_EINVAL, "backend '%s': '%.80s' is not a chunk name", b->name, key);
    return put_at(b, path, data, len, err);
}

static int davb_del(void *st, const char *key, mb_err *err)
{
    davb *b = st;
    char path[URL_MAX + 256];
    if (!object_of(b, key, path, sizeof path))
        return 0; /* not a chunk name: nothing to remove */
    static const long gone[] = {204, 200, 404, 0};
    return request_expect(b, &(dreq){.method = "DELETE", .path = path}, gone, NULL, err);
}

static const char propfind_body[] = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                                    "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/><D:getcontentlength/>"
                                    "<D:getlastmodified/></D:prop></D:propfind>\n";

/* The last segment of an href ("/dav/c/ab/" -> "ab"), into out; false when it does not fit. */
static bool last_segment(const char *href, char *out, size_t n)
{
    size_t l = strlen(href);
    while (l && href[l - 1] == '/')
        l--;
    size_t s = l;
    while (s && href[s - 1] != '/')
        s--;
    if (l - s >= n)
        return false;
    memcpy(out, href + s, l - s);
    out[l - s] = 0;
    return true;
}

/* A member of a PROPFIND answer, by the last segment of its href. */
static int list_one(const char *href, uint64_t size, int64_t mtime, bool coll, void *ud)
{
    char name[80];
    return last_segment(href, name, sizeof name) ? hp_aa_entry(ud, name, size, mtime, coll) : 0;
}

/* PROPFIND Depth 1 of one collection, each member handed to hp_aa_entry. 404: empty. */
static int propfind(void *ctx, const char *path, hp_aa_list *l, mb_err *err)
{
    davb *b = ctx;
    hp_reply r;
    int rc = request(b, &(dreq){.method = "PROPFIND", .path = path, .depth = "1", .body = propfind_body,
                                .blen = sizeof propfind_body - 1}, &r, err);
    if (rc)
        return rc;
    if (r.status == 404) {
        hp_reply_free(&r);
        return 0;
    }
    if (r.status != 207)
        return status_error(b, "PROPFIND", &r, err);
    rc = r.body.buf ? dav_ms_parse(r.body.buf, r.body.len, list_one, l) : MB_EINVAL;
    hp_reply_free(&r);
    if (rc < 0)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': the PROPFIND answer is not a multistatus", b->name);
    return rc;
}

static int davb_list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    davb *b = st;
    settings s;
    settings_take(b, &s);
    settings_drop(&s);
    return hp_aa_walk(s.prefix, propfind, b, fn, ud, err);
}

/* In the order of mb_blob_backend: size, name, put, get, has, del, list, stat. */
static const mb_blob_backend davb_ops = {sizeof(mb_blob_backend), "webdav", davb_put, davb_get, davb_has,
                                         davb_del, davb_list, davb_stat};

/* ------------------------------------------------------------ lifecycle --- */

static void settings_free(davb *b)
{
    free(b->url);
    free(b->user);
    if (b->password)
        sodium_memzero(b->password, strlen(b->password));
    free(b->password);
    free(b->prefix);
}

static void backend_free(davb *b)
{
    if (!b)
        return;
    hp_pool_free(&b->pool);
    pthread_rwlock_destroy(&b->mu);
    settings_free(b);
    free(b->name);
    free(b);
}

/* One backend's settings from the config, checked, into fresh (the caller owns its strings). */
static int settings_parse(const mb_api *api, const char *name, const json_t *o, const json_t *config, davb *fresh,
                          mb_err *err)
{
    static const char *const known[] = {"url", "user", "password", "prefix"};
    int rc = hp_check_keys(api, "webdav.yaml", name, o, known, sizeof known / sizeof *known, 1, NULL, err);
    if (rc)
        return rc;
    const char *url = mb_jstr(o, "url"), *user = mb_jstr(o, "user"), *pw = mb_jstr(o, "password");
    if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
        return api->err_set(err, MB_EINVAL, "webdav.yaml: backends.%s.url must be http[s]://host[:port][/path]",
                            name);
    const char *host = strstr(url, "://") + 3;
    size_t hl = strcspn(host, "/");
    if (!hl || memchr(host, '@', hl) || strlen(url) >= URL_MAX / 2 || strpbrk(url, " \t\r\n?#"))
        return api->err_set(err, MB_EINVAL, "webdav.yaml: backends.%s.url must be http[s]://host[:port][/path] "
                                            "(user and password in their own keys)", name);
    if ((user && strlen(user) >= SECRET_MAX) || (pw && strlen(pw) >= SECRET_MAX))
        return api->err_set(err, MB_EINVAL, "webdav.yaml: backends.%s: user or password longer than %d bytes", name,
                            SECRET_MAX - 1);
    if ((rc = hp_prefix_parse(api, "webdav.yaml", name, mb_jstr(o, "prefix"), &fresh->prefix, err)) != 0)
        return rc;
    fresh->url = strdup(url);
    size_t ul = fresh->url ? strlen(fresh->url) : 0;
    while (ul && fresh->url[ul - 1] == '/')
        fresh->url[--ul] = 0;
    fresh->user = strdup(user ? user : "");
    fresh->password = strdup(pw ? pw : "");
    fresh->retries = (int)mb_jint(config, "backend_retries");
    fresh->retry_base_ms = (long)mb_jint(config, "backend_retry_base_ms");
    fresh->timeout_ms = (long)mb_jint(config, "backend_timeout_ms");
    fresh->connect_timeout_ms = (long)mb_jint(config, "backend_connect_timeout_ms");
    if (!fresh->url || !fresh->user || !fresh->password || !fresh->prefix) {
        settings_free(fresh);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    return 0;
}

static void backends_free(dav_backends *bs)
{
    if (!bs)
        return;
    for (size_t i = 0; i < bs->nb; i++)
        backend_free(bs->b[i]);
    free(bs->b);
    free(bs);
}

static const json_t *backends_of(const mb_api *api, const json_t *config, mb_err *err)
{
    const json_t *o = json_object_get(config, "backends");
    if (o && !json_is_object(o)) {
        api->err_set(err, MB_EINVAL, "webdav.yaml: backends must be a map of names to backends");
        return NULL;
    }
    return o;
}

int dav_backends_init(mb_module *self, const mb_api *api, const json_t *config, dav_backends **out, mb_err *err)
{
    *out = NULL;
    const json_t *o = backends_of(api, config, err);
    if (!o)
        return err->code ? err->code : 0;
    if (!json_object_size(o))
        return 0;
    if (api->abi_minor < 1 || !api->backend_register)
        return api->err_set(err, MB_EUNSUPP, "webdav backends need a kernel with ABI 2.1 (named backends)");
    dav_backends *bs = calloc(1, sizeof *bs);
    if (!bs || !(bs->b = calloc(json_object_size(o), sizeof *bs->b))) {
        free(bs);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    bs->self = self;
    bs->api = api;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)o, name, v) {
        davb *b = calloc(1, sizeof *b);
        int rc = b ? settings_parse(api, name, v, config, b, err) : api->err_set(err, MB_ENOMEM, "out of memory");
        if (rc) {
            free(b);
            backends_free(bs);
            return rc;
        }
        b->mod = bs;
        b->name = strdup(name);
        pthread_rwlock_init(&b->mu, NULL);
        hp_pool_init(&b->pool, (int)mb_jint(config, "backend_max_connections"));
        bs->b[bs->nb++] = b;
        /* on a failure the kernel drops what this copy registered already */
        if (!b->name || (rc = api->backend_register(self, name, &davb_ops, b, err)) != 0) {
            backends_free(bs);
            return rc ? rc : api->err_set(err, MB_ENOMEM, "out of memory");
        }
        api->log(self, MB_LOG_INFO, "backend '%s': WebDAV at %s%s%s", name, b->url, b->user[0] ? " as " : "",
                 b->user);
    }
    *out = bs;
    return 0;
}

int dav_backends_reconfigure(dav_backends *bs, const json_t *config, mb_err *err)
{
    /* bs is NULL when init found no backend. A name added or removed needs the module's init
     * (the kernel takes registrations there only): refuse, saying how. */
    const json_t *o = json_object_get(config, "backends");
    size_t want = json_is_object(o) ? json_object_size(o) : 0, have = bs ? bs->nb : 0;
    bool same = want == have;
    for (size_t i = 0; same && i < have; i++)
        same = json_object_get(o, bs->b[i]->name) != NULL;
    if (!same) {
        if (err) {
            err->code = MB_EINVAL;
            snprintf(err->msg, sizeof err->msg, "webdav.yaml: backends added or removed take effect on a reload of "
                                                "the module (mbytectl module reload webdav)");
        }
        return MB_EINVAL;
    }
    davb **fresh = calloc(have + 1, sizeof *fresh);
    if (!fresh)
        return MB_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < have && !rc; i++) {
        fresh[i] = calloc(1, sizeof **fresh);
        rc = fresh[i] ? settings_parse(bs->api, bs->b[i]->name, json_object_get(o, bs->b[i]->name), config, fresh[i],
                                       err)
                      : MB_ENOMEM;
        if (rc) {
            free(fresh[i]);
            fresh[i] = NULL;
        }
    }
    for (size_t i = 0; i < have; i++) {
        davb *b = bs->b[i], *f = fresh[i];
        if (!f)
            continue;
        if (!rc) { /* swap the settings in; the old strings go with f */
            pthread_rwlock_wrlock(&b->mu);
            davb t = *b;
            b->url = f->url, b->user = f->user, b->password = f->password, b->prefix = f->prefix;
            b->retries = f->retries, b->retry_base_ms = f->retry_base_ms, b->timeout_ms = f->timeout_ms;
            b->connect_timeout_ms = f->connect_timeout_ms;
            f->url = t.url, f->user = t.user, f->password = t.password, f->prefix = t.prefix;
            pthread_rwlock_unlock(&b->mu);
            hp_pool_resize(&b->pool, (int)mb_jint(config, "backend_max_connections"));
        }
        settings_free(f);
        free(f);
    }
    free(fresh);
    return rc;
}

void dav_backends_fini(dav_backends *bs) { backends_free(bs); }
