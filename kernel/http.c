/*
 * http.c — the HTTP door: libmicrohttpd on its internal epoll thread pool, a route table
 * shared by the kernel and the modules, problem+json errors, streamed bodies both ways,
 * server-sent events, the static web page, and the local admin socket for mbytectl.
 *
 * Threads: every callback here runs on a libmicrohttpd thread. The route table is read
 * under a rwlock by those threads and changed (module load, unload, reload) by the loop
 * thread under the write lock. A call into a module is counted (modmgr_enter) while the
 * read lock is held, so a module seen by a request cannot be closed under it; a reload
 * swaps the owner of a route under the write lock, so no request ever sees "no route".
 *
 * Paths are routed from the RAW request URI: each segment is percent-decoded on its own,
 * and a segment that decodes to '.', '..', or contains '/' or NUL is refused before any
 * handler runs. No handler ever sees an encoded slash or a traversal segment.
 *
 * Every TCP connection is also known to conn.c (header deadline, per-address and global
 * caps against slowloris floods) from accept to close. A 404 under /api/v1 that a module not
 * loaded would serve names that module (its route table is read from module_dir once).
 */
#include "kernel.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_SEGS 80 /* 64 folder levels plus the route's own segments */
#define MAX_HEADER_BYTES (16 * 1024)

struct http_route {
    char *method;
    char *pattern;
    char *segs[MAX_SEGS];
    int nsegs;
    bool rest; /* last segment is {name*} */
    int role;
    mb_module *owner;
    mb_route_fn fn;
    mb_route_fn begin; /* minor 10: a module's look at the headers before the body */
    void *state;
    const http_stream_ops *stream;
};

typedef struct hdr {
    struct hdr *next;
    const char *name, *value;
} hdr;

struct mb_req {
    struct MHD_Connection *conn;
    arena *a;
    const char *method;
    const char *raw_uri;
    const char *path; /* decoded, segments joined by '/' */
    const char *segs[MAX_SEGS];
    int nsegs;
    const char *pnames[MAX_SEGS], *pvals[MAX_SEGS];
    int nparams;
    bool local; /* came through the admin socket */
    bool started;
    bool have_user;
    mb_user user;
    char ip[64];
    bool secure; /* over TLS to mbyted, or to a trusted proxy that said X-Forwarded-Proto: https */
    /* buffered body */
    char *body;
    size_t blen, bcap;
    json_t *json;
    /* streaming route */
    const http_stream_ops *stream;
    void *sctx;
    bool stream_done;
    /* a module's body sink (minor 10): set by api->req_body_sink during its route's begin */
    const mb_body_sink *sink;
    mb_module *sink_owner;
    bool in_begin;
    /* answer */
    struct MHD_Response *resp;
    int status;
    hdr *headers;
    bool replied;
    mb_err early; /* error found before the body was read */
    bool failed_early;
    bool held; /* answered from the headers of a bodiless request: queued in the last call */
    int64_t t0;
    accesslog_rec rl; /* accesslog.c: request id, sizes, route (issue 26) */
};

static struct MHD_Daemon *daemon_tcp, *daemon_local, *daemon_redirect;
static char *tls_pem[2]; /* tls_cert and tls_key, read at start: libmicrohttpd keeps pointers to them */
static pthread_rwlock_t routes_lock = PTHREAD_RWLOCK_INITIALIZER;
static http_route **routes;
static size_t nroutes;
static atomic_int in_flight;
static atomic_bool stopping; /* set by http_stop: new requests are refused with 503 */
static char *local_sock_path;

/* ------------------------------------------------------------ routes --- */

static http_route *route_new(const char *method, const char *pattern, int role, mb_err *err)
{
    if (pattern[0] != '/')
        return err_set(err, MB_EINVAL, "route pattern '%s' must start with '/'", pattern), NULL;
    http_route *r = xcalloc(1, sizeof *r);
    r->method = xstrdup(method);
    r->pattern = xstrdup(pattern);
    r->role = role;
    char *copy = xstrdup(pattern + 1), *save = NULL;
    for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (r->nsegs == MAX_SEGS || r->rest) {
            free(copy);
            free(r->method);
            free(r->pattern);
            for (int i = 0; i < r->nsegs; i++)
                free(r->segs[i]);
            free(r);
            return err_set(err, MB_EINVAL, "route pattern '%s' is malformed", pattern), NULL;
        }
        size_t n = strlen(t);
        if (n > 3 && t[0] == '{' && t[n - 2] == '*' && t[n - 1] == '}')
            r->rest = true;
        r->segs[r->nsegs++] = xstrdup(t);
    }
    free(copy);
    return r;
}

static void route_free(http_route *r)
{
    free(r->method);
    free(r->pattern);
    for (int i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r);
}

static int route_insert(http_route *r, mb_err *err)
{
    pthread_rwlock_wrlock(&routes_lock);
    for (size_t i = 0; i < nroutes; i++)
        if (!strcmp(routes[i]->method, r->method) && !strcmp(routes[i]->pattern, r->pattern)) {
            pthread_rwlock_unlock(&routes_lock);
            int rc = err_set(err, MB_EEXIST, "route %s %s is already registered by %s", r->method, r->pattern,
                             routes[i]->owner ? modmgr_name(routes[i]->owner) : "the kernel");
            route_free(r);
            return rc;
        }
    routes = xrealloc(routes, (nroutes + 1) * sizeof *routes);
    routes[nroutes++] = r;
    pthread_rwlock_unlock(&routes_lock);
    return 0;
}

int http_route_add(mb_module *owner, const char *method, const char *pattern, int role, mb_route_fn fn, void *state,
                   mb_err *err)
{
    http_route *r = route_new(method, pattern, role, err);
    if (!r)
        return err->code;
    r->owner = owner;
    r->fn = fn;
    r->state = state;
    return route_insert(r, err);
}

int http_module_route_add(mb_module *owner, const mb_route *mr, void *state, mb_err *err)
{
    http_route *r = route_new(mr->method, mr->pattern, mr->role, err);
    if (!r)
        return err->code;
    r->owner = owner;
    r->fn = mr->fn;
    r->begin = mr->begin;
    r->state = state;
    return route_insert(r, err);
}

int http_stream_route_add(const char *method, const char *pattern, int role, const http_stream_ops *ops, mb_err *err)
{
    http_route *r = route_new(method, pattern, role, err);
    if (!r)
        return err->code;
    r->stream = ops;
    return route_insert(r, err);
}

void http_routes_remove(mb_module *owner)
{
    pthread_rwlock_wrlock(&routes_lock);
    size_t j = 0;
    for (size_t i = 0; i < nroutes; i++) {
        if (routes[i]->owner == owner)
            route_free(routes[i]);
        else
            routes[j++] = routes[i];
    }
    nroutes = j;
    pthread_rwlock_unlock(&routes_lock);
}

/* Reload: make the routes of `to` exactly `table` (kernel-stride entries, ended by a NULL
 * method), replacing those of `from` in one write-locked step. A route in both keeps its
 * slot and is re-pointed (fn, state, role, owner); one only `from` had goes; one only the
 * table has is added. No request ever sees "no route" for a route both copies serve, and
 * none is handed a function of the old copy once this returns. Nothing changes on error. */
int http_routes_swap(mb_module *from, mb_module *to, const mb_route *table, void *new_state, mb_err *err)
{
    size_t n = 0;
    while (table && table[n].method)
        n++;
    http_route **fresh = xcalloc(n + 1, sizeof *fresh);
    for (size_t i = 0; i < n; i++) {
        fresh[i] = route_new(table[i].method, table[i].pattern ? table[i].pattern : "", table[i].role, err);
        if (!fresh[i]) {
            for (size_t k = 0; k < i; k++)
                route_free(fresh[k]);
            free(fresh);
            return err->code;
        }
        fresh[i]->owner = to;
        fresh[i]->fn = table[i].fn;
        fresh[i]->begin = table[i].begin;
        fresh[i]->state = new_state;
    }
    pthread_rwlock_wrlock(&routes_lock);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nroutes; j++)
            if (routes[j]->owner != from && !strcmp(routes[j]->method, fresh[i]->method) &&
                !strcmp(routes[j]->pattern, fresh[i]->pattern)) {
                pthread_rwlock_unlock(&routes_lock);
                int rc = err_set(err, MB_EEXIST, "route %s %s is already registered by %s", fresh[i]->method,
                                 fresh[i]->pattern, routes[j]->owner ? modmgr_name(routes[j]->owner) : "the kernel");
                for (size_t k = 0; k < n; k++)
                    route_free(fresh[k]);
                free(fresh);
                return rc;
            }
    size_t keep = 0;
    for (size_t j = 0; j < nroutes; j++) {
        http_route *r = routes[j];
        if (r->owner != from) {
            routes[keep++] = r;
            continue;
        }
        size_t i = 0;
        while (i < n && (!fresh[i] || strcmp(fresh[i]->method, r->method) || strcmp(fresh[i]->pattern, r->pattern)))
            i++;
        if (i == n) {
            route_free(r);
            continue;
        }
        r->owner = to;
        r->fn = fresh[i]->fn;
        r->begin = fresh[i]->begin;
        r->state = new_state;
        r->role = fresh[i]->role;
        route_free(fresh[i]);
        fresh[i] = NULL;
        routes[keep++] = r;
    }
    nroutes = keep;
    for (size_t i = 0; i < n; i++)
        if (fresh[i]) {
            routes = xrealloc(routes, (nroutes + 1) * sizeof *routes);
            routes[nroutes++] = fresh[i];
        }
    pthread_rwlock_unlock(&routes_lock);
    free(fresh);
    return 0;
}

/* Segment match score: more literal segments win over parameters; no match is -1. */
static int route_match(const http_route *r, mb_req *req, bool bind)
{
    int n = r->rest ? r->nsegs - 1 : r->nsegs;
    if (r->rest ? req->nsegs < n : req->nsegs != n)
        return -1;
    int score = 0;
    for (int i = 0; i < n; i++) {
        const char *p = r->segs[i];
        if (p[0] == '{')
            continue;
        if (strcmp(p, req->segs[i]))
            return -1;
        score++;
    }
    if (!bind)
        return score;
    req->nparams = 0;
    for (int i = 0; i < n; i++) {
        const char *p = r->segs[i];
        if (p[0] != '{')
            continue;
        req->pnames[req->nparams] = arena_strndup(req->a, p + 1, strlen(p) - 2);
        req->pvals[req->nparams++] = req->segs[i];
    }
    if (r->rest) {
        const char *p = r->segs[r->nsegs - 1];
        size_t total = 1;
        for (int i = n; i < req->nsegs; i++)
            total += strlen(req->segs[i]) + 1;
        char *joined = arena_alloc(req->a, total), *w = joined;
        for (int i = n; i < req->nsegs; i++) {
            size_t l = strlen(req->segs[i]);
            if (i > n)
                *w++ = '/';
            memcpy(w, req->segs[i], l);
            w += l;
        }
        *w = 0;
        req->pnames[req->nparams] = arena_strndup(req->a, p + 1, strlen(p) - 3);
        req->pvals[req->nparams++] = joined;
    }
    return score;
}

/* Find the best route; on success the returned route is valid while routes_lock is held
 * (the caller holds the read lock). *method_mismatch tells 405 from 404. */
static http_route *route_find(mb_req *req, bool *method_mismatch)
{
    http_route *best = NULL;
    int best_score = -1;
    *method_mismatch = false;
    for (size_t i = 0; i < nroutes; i++) {
        int s = route_match(routes[i], req, false);
        if (s < 0)
            continue;
        if (strcmp(routes[i]->method, req->method) &&
            !(!strcmp(req->method, "HEAD") && !strcmp(routes[i]->method, "GET"))) {
            *method_mismatch = true;
            continue;
        }
        /* Exact method beats HEAD->GET fallback at equal score. */
        if (s > best_score || (s == best_score && best && strcmp(best->method, req->method) &&
                               !strcmp(routes[i]->method, req->method))) {
            best = routes[i];
            best_score = s;
        }
    }
    if (best)
        route_match(best, req, true);
    return best;
}

/* ------------------------------------------------- routes of modules not loaded --- */
/* A request for a route of a module that is not loaded was a bare "no such endpoint". The
 * module's descriptor is data (its route table), so the first such 404 reads the tables of
 * the modules in module_dir once (dlopen, read, dlclose; no init runs) and remembers which
 * patterns belong to which module. The answer then names the module. */
typedef struct hint {
    http_route *route; /* route_new'd, owner NULL; only its pattern is used */
    char module[65];
} hint;

static pthread_once_t hints_once = PTHREAD_ONCE_INIT;
static hint *hints;
static size_t nhints;

static void hints_read(const char *dir, const char *file)
{
    char path[4096], name[65];
    size_t fl = strlen(file);
    if (fl < 4 || fl - 3 >= sizeof name || strcmp(file + fl - 3, ".so"))
        return;
    snprintf(name, sizeof name, "%.*s", (int)(fl - 3), file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    void *dl = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!dl)
        return;
    const mb_module_desc *d = dlsym(dl, MB_MODULE_SYMBOL);
    if (d && d->size >= offsetof(mb_module_desc, routes) + sizeof d->routes && d->abi_major == MB_ABI_MAJOR &&
        d->routes && d->routes->size >= offsetof(mb_route, pattern) + sizeof(char *) && d->routes->size <= 4096) {
        size_t stride = d->routes->size;
        for (size_t i = 0; i < 1024; i++) {
            const mb_route *r = (const mb_route *)((const char *)d->routes + i * stride);
            if (!r->size || !r->method || !r->pattern)
                break;
            mb_err e = {0};
            http_route *hr = route_new(r->method, r->pattern, MB_ROLE_NONE, &e);
            if (!hr)
                continue;
            hints = xrealloc(hints, (nhints + 1) * sizeof *hints);
            hints[nhints].route = hr;
            snprintf(hints[nhints++].module, sizeof hints->module, "%s", name);
        }
    }
    dlclose(dl);
}

static void hints_build(void)
{
    DIR *d = opendir(g_cfg->module_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        hints_read(g_cfg->module_dir, de->d_name);
    closedir(d);
}

/* The module (not loaded, or it would have matched) whose route the path is, or NULL. */
static const char *module_of_path(mb_req *req)
{
    if (req->nsegs < 3 || strcmp(req->segs[0], "api") || strcmp(req->segs[1], "v1"))
        return NULL;
    pthread_once(&hints_once, hints_build);
    for (size_t i = 0; i < nhints; i++)
        if (route_match(hints[i].route, req, false) >= 0)
            return hints[i].module;
    return NULL;
}

static void hints_free(void)
{
    for (size_t i = 0; i < nhints; i++)
        route_free(hints[i].route);
    free(hints);
    hints = NULL;
    nhints = 0;
}

/* -------------------------------------------------------- path parsing --- */

static int hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode one segment; refuses malformed escapes, NUL, '/', invalid UTF-8, '.' and '..'. */
static int decode_segment(arena *a, const char *s, size_t n, const char **out, mb_err *err)
{
    char *d = arena_alloc(a, n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? hexv((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexv((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return err_set(err, MB_EINVAL, "the path has a malformed percent escape");
            d[j++] = (char)(hi << 4 | lo);
            i += 2;
            continue;
        }
        d[j++] = s[i];
    }
    d[j] = 0;
    if (memchr(d, 0, j))
        return err_set(err, MB_EINVAL, "a path segment may not contain NUL");
    if (memchr(d, '/', j))
        return err_set(err, MB_EINVAL, "a path segment may not contain an encoded '/'");
    if (!strcmp(d, ".") || !strcmp(d, ".."))
        return err_set(err, MB_EINVAL, "a path may not contain '.' or '..' segments");
    if (!utf8_valid(d, j))
        return err_set(err, MB_EINVAL, "the path is not valid UTF-8");
    *out = d;
    return 0;
}

int http_parse_target(arena *a, const char *raw, const char **segs, int max, int *nsegs, const char **out,
                      mb_err *err)
{
    size_t plen = strcspn(raw, "?#");
    *nsegs = 0;
    if (plen == 0 || raw[0] != '/')
        return err_set(err, MB_EINVAL, "the request target must be an absolute path");
    const char *p = raw + 1, *end = raw + plen;
    size_t joined_len = 1;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *segend = slash ? slash : end;
        if (segend > p) {
            if (*nsegs == max)
                return err_set(err, MB_EINVAL, "the path is nested too deeply");
            int rc = decode_segment(a, p, (size_t)(segend - p), &segs[*nsegs], err);
            if (rc)
                return rc;
            joined_len += strlen(segs[*nsegs]) + 1;
            (*nsegs)++;
        }
        p = slash ? slash + 1 : end;
    }
    char *path = arena_alloc(a, joined_len + 1), *w = path;
    *w++ = '/';
    for (int i = 0; i < *nsegs; i++) {
        size_t l = strlen(segs[i]);
        memcpy(w, segs[i], l);
        w += l;
        if (i + 1 < *nsegs)
            *w++ = '/';
    }
    *w = 0;
    *out = path;
    return 0;
}

static int parse_path(mb_req *req, mb_err *err)
{
    return http_parse_target(req->a, req->raw_uri, req->segs, MAX_SEGS, &req->nsegs, &req->path, err);
}

/* ----------------------------------------------------------- answers --- */

static void set_response(mb_req *req, int status, struct MHD_Response *resp)
{
    if (req->resp)
        MHD_destroy_response(req->resp);
    req->resp = resp;
    req->status = status;
    req->replied = true;
}

int http_reply_bytes(mb_req *req, int status, const char *ctype, const void *data, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    req->rl.out = len;
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    set_response(req, status, r);
    return 0;
}

int http_reply_json(mb_req *req, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s)
        s = xstrdup("null");
    size_t n = strlen(s);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
    req->rl.out = n;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    set_response(req, status, r);
    return 0;
}

/* A problem+json answer with an explicit status (431 has no MB_E* code of its own). */
static int reply_problem(mb_req *req, int status, int code, const char *detail)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title",
                          status == 431 ? "Request header fields too large" : err_title(code), "status", status,
                          "detail", detail && *detail ? detail : err_title(code), "code", err_name(code));
    accesslog_problem(p);
    char *s = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    struct MHD_Response *r = MHD_create_response_from_buffer(req->rl.out = strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
    /* Headers a handler added (e.g. WWW-Authenticate) stay; nothing else leaks. */
    set_response(req, status, r);
    char redacted[512];
    log_msg(status >= 500 ? LOG_ERROR : LOG_INFO, "http", "%s %s -> %d %s: %s", req->method,
            req->path ? share_redact(req->path, redacted, sizeof redacted) : "(unparsed)", status, err_name(code),
            detail ? detail : "");
    return 0;
}

int http_reply_error(mb_req *req, const mb_err *err)
{
    int code = err && err->code ? err->code : MB_EINTERNAL;
    return reply_problem(req, err_http_status(code), code, err && err->msg[0] ? err->msg : NULL);
}

void http_reply_header(mb_req *req, const char *name, const char *value)
{
    hdr *h = arena_alloc(req->a, sizeof *h);
    h->name = arena_strdup(req->a, name);
    h->value = arena_strdup(req->a, value);
    h->next = req->headers;
    req->headers = h;
}

typedef struct {
    http_reader_fn read;
    void *cls;
    void (*free_cls)(void *);
} stream_cb;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_cb *s = cls;
    ssize_t n = s->read(s->cls, pos, buf, max);
    if (n == -1)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls)
{
    stream_cb *s = cls;
    if (s->free_cls)
        s->free_cls(s->cls);
    free(s);
}

int http_reply_stream(mb_req *req, int status, const char *ctype, uint64_t size, http_reader_fn read, void *cls,
                      void (*free_cls)(void *))
{
    stream_cb *s = xmalloc(sizeof *s);
    s->read = read;
    s->cls = cls;
    s->free_cls = free_cls;
    struct MHD_Response *r = MHD_create_response_from_callback(size, 64 * 1024, stream_reader, s, stream_free);
    req->rl.out = size == MHD_SIZE_UNKNOWN ? 0 : size;
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    set_response(req, status, r);
    return 0;
}

/* ------------------------------------------------------ server-sent events --- */

typedef struct sse {
    struct sse *next;
    uint64_t uid;
    struct MHD_Connection *conn;
    char *buf;
    size_t len, cap, off;
    bool suspended, closed;
} sse;

static pthread_mutex_t sse_lock = PTHREAD_MUTEX_INITIALIZER;
static sse *sse_list;
static struct event *sse_keepalive;

static void sse_append(sse *s, const char *data, size_t n)
{
    if (s->len - s->off + n > (1u << 20)) { /* a stuck client: drop it rather than grow */
        s->closed = true;
        return;
    }
    if (s->off && s->off == s->len)
        s->off = s->len = 0;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void sse_wake(sse *s)
{
    if (s->suspended) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse *s = cls;
    pthread_mutex_lock(&sse_lock);
    if (s->len > s->off) {
        size_t n = s->len - s->off;
        if (n > max)
            n = max;
        memcpy(buf, s->buf + s->off, n);
        s->off += n;
        pthread_mutex_unlock(&sse_lock);
        return (ssize_t)n;
    }
    if (s->closed) {
        pthread_mutex_unlock(&sse_lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to send: park the connection until a publisher or the keepalive wakes it. */
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&sse_lock);
    return 0;
}

static void sse_free(void *cls)
{
    sse *s = cls;
    pthread_mutex_lock(&sse_lock);
    for (sse **pp = &sse_list; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&sse_lock);
    free(s->buf);
    free(s);
}

int http_reply_sse(mb_req *req, uint64_t uid)
{
    sse *s = xcalloc(1, sizeof *s);
    s->uid = uid;
    s->conn = req->conn;
    static const char hello[] = ": connected\nretry: 3000\n\n";
    sse_append(s, hello, sizeof hello - 1); /* not its NUL: it would start the next event */
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, s, sse_free);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    pthread_mutex_lock(&sse_lock);
    s->next = sse_list;
    sse_list = s;
    pthread_mutex_unlock(&sse_lock);
    set_response(req, 200, r);
    return 0;
}

void http_sse_publish(uint64_t uid, const char *frame, size_t len)
{
    pthread_mutex_lock(&sse_lock);
    for (sse *s = sse_list; s; s = s->next)
        if (s->uid == uid && !s->closed) {
            sse_append(s, frame, len);
            sse_wake(s);
        }
    pthread_mutex_unlock(&sse_lock);
}

static void sse_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    pthread_mutex_lock(&sse_lock);
    for (sse *s = sse_list; s; s = s->next) {
        sse_append(s, ": keepalive\n\n", 13);
        sse_wake(s);
    }
    pthread_mutex_unlock(&sse_lock);
}

static void sse_close_all(void)
{
    pthread_mutex_lock(&sse_lock);
    for (sse *s = sse_list; s; s = s->next) {
        s->closed = true;
        sse_wake(s);
    }
    pthread_mutex_unlock(&sse_lock);
}

/* ------------------------------------------------------- request access --- */

const char *http_req_method(mb_req *req) { return req->method; }
const char *http_req_path(mb_req *req) { return req->path; }
bool http_req_local(mb_req *req) { return req->local; }
arena *http_req_arena(mb_req *req) { return req->a; }
void *http_req_alloc(mb_req *req, size_t n) { return arena_alloc(req->a, n); }
const char *http_req_client_ip(mb_req *req) { return req->ip; }
bool http_req_secure(mb_req *req) { return req->secure; }

static bool trusted_proxy(const char *ip)
{
    if (g_cfg->trusted_proxies)
        for (char **t = g_cfg->trusted_proxies; *t; t++)
            if (!strcmp(*t, ip))
                return true;
    return false;
}

/* Behind a trusted proxy, the client is the rightmost X-Forwarded-For entry that is not itself a
 * trusted proxy (entries further left were written by the client and prove nothing), and the
 * proxy's X-Forwarded-Proto says whether the client used TLS. From any other peer both headers
 * are ignored. */
static void forwarded(mb_req *req)
{
    if (!trusted_proxy(req->ip))
        return;
    const char *proto = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Forwarded-Proto");
    req->secure = req->secure || (proto && !strcasecmp(proto, "https"));
    const char *xff = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Forwarded-For");
    xff_client(xff, trusted_proxy, req->ip, sizeof req->ip);
}
const mb_user *http_req_user(mb_req *req) { return req->have_user ? &req->user : NULL; }

const char *http_req_param(mb_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (!strcmp(req->pnames[i], name))
            return req->pvals[i];
    return NULL;
}

const char *http_req_query(mb_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_req_header(mb_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_req_cookie(mb_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, name);
}

/* A sentence for a person in place of jansson's text, which names library options
 * ("\u0000 is not allowed without JSON_ALLOW_NUL") and parser internals. */
static const char *json_problem(const json_error_t *je)
{
    switch (json_error_code(je)) {
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "a string contains the character \\u0000 (NUL), which is not allowed";
    case json_error_duplicate_key:
        return "an object has the same key twice";
    case json_error_premature_end_of_input:
        return "the JSON ends before its value is complete";
    case json_error_end_of_input_expected:
        return "there is more after the JSON value";
    case json_error_invalid_utf8:
        return "the JSON is not valid UTF-8";
    case json_error_numeric_overflow:
        return "a number is too large";
    case json_error_stack_overflow:
        return "the JSON is nested too deeply";
    default:
        return "the body is not well-formed JSON";
    }
}

json_t *http_req_json(mb_req *req, mb_err *err)
{
    if (!req->json)
        req->json = http_json_body(req->body, req->blen, err);
    return req->json;
}

json_t *http_json_body(const char *body, size_t blen, mb_err *err)
{
    if (!blen) {
        err_set(err, MB_EINVAL, "a JSON object body is required");
        return NULL;
    }
    if (!utf8_valid(body, blen)) {
        err_set(err, MB_EINVAL, "the body is not valid UTF-8");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        err_set(err, MB_EINVAL, "malformed JSON at line %d column %d: %s", je.line, je.column, json_problem(&je));
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        err_set(err, MB_EINVAL, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------ static files --- */

static const char *mime_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
                 {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
                 {".svg", "image/svg+xml"}, {".png", "image/png"}, {".ico", "image/x-icon"},
                 {".json", "application/json"}, {".txt", "text/plain; charset=utf-8"}};
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

static bool serve_static(mb_req *req)
{
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
        return false;
    if (req->nsegs > 0 && !strcmp(req->segs[0], "api"))
        return false;
    char file[4096];
    const char *rel = req->nsegs ? req->path + 1 : "index.html";
    /* Single-page app: /s/{token} and unknown deep links get index.html (segments were
     * already checked for traversal by parse_path). */
    int n = snprintf(file, sizeof file, "%s/%s", g_cfg->web_dir, rel);
    if (n < 0 || (size_t)n >= sizeof file)
        return false;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        if (strchr(rel, '.') && req->nsegs && strcmp(req->segs[0], "s"))
            return false;
        snprintf(file, sizeof file, "%s/index.html", g_cfg->web_dir);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
            if (fd >= 0)
                close(fd);
            return false;
        }
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    req->rl.out = (uint64_t)st.st_size;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, mime_of(file));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    /* The page's scripts are files of its own: no inline script, no eval, no plugins, never
     * framed (clickjacking). Styles may be set inline by the page's code. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; script-src 'self'; img-src 'self' data: blob:; "
                            "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
                            "form-action 'self'; frame-ancestors 'none'");
    set_response(req, 200, r);
    return true;
}

/* ------------------------------------------------------------ dispatch --- */

static enum MHD_Result header_size_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    size_t *total = cls;
    *total += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* On every answer: no MIME sniffing, no Referer leaving the server (share links carry their
 * token in the path), never framed. An answer that is not the web page (JSON, problems, files a
 * user stored, which may be HTML) gets a policy under which nothing in it can run or load. */
static void security_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    if (!MHD_get_response_header(r, "Content-Security-Policy"))
        MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
}

static enum MHD_Result queue(mb_req *req)
{
    if (!req->replied) {
        mb_err e;
        err_set(&e, MB_EINTERNAL, "the handler for %s %s gave no answer", req->method, req->path);
        http_reply_error(req, &e);
    }
    for (hdr *h = req->headers; h; h = h->next) {
        /* A handler names the file before it knows the answer; an error must not carry the
         * name, or `curl -OJ` saves the problem text under the file's name (a 416, a 412). */
        if (req->status >= 400 && !strcasecmp(h->name, "Content-Disposition"))
            continue;
        MHD_add_response_header(req->resp, h->name, h->value);
    }
    security_headers(req->resp);
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return rc;
}

/* An answer decided from the headers alone. libmicrohttpd closes the connection after a
 * reply queued before the request's body was read: right when a big body follows (it is
 * then never read), but for a request without one it cost a new TCP connection per asset
 * of the web page, per 404 and per 401. Those, and requests whose announced body is small
 * enough to read and drop (a refused small upload), are held and queued in the last call. */
#define DRAIN_MAX (64 * 1024)
static enum MHD_Result answer_early(mb_req *req)
{
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    uint64_t len = 0;
    if (!te && (!cl || (parse_u64(cl, &len) && len <= DRAIN_MAX))) {
        req->held = true;
        return MHD_YES;
    }
    return queue(req);
}

static enum MHD_Result fail_now(mb_req *req, const mb_err *err)
{
    http_reply_error(req, err);
    return answer_early(req);
}

/* Resolve the caller for a route of the given least role. */
static int authorize(mb_req *req, int role, mb_err *err)
{
    if (req->local) {
        req->have_user = true;
        req->user = (mb_user){.size = sizeof(mb_user), .id = 0, .name = "local-admin", .role = MB_ROLE_ADMIN};
        return 0;
    }
    int rc = auth_request(req, &req->user, err);
    if (rc == 0)
        req->have_user = true;
    if (role == MB_ROLE_NONE)
        return 0; /* public: a bad or missing credential just means anonymous */
    if (rc)
        return rc;
    if (req->user.role < role)
        return err_set(err, MB_EPERM, "this call needs the %s role", role == MB_ROLE_ADMIN ? "admin" : "user");
    return 0;
}

static void call_handler(mb_req *req, mb_err *err)
{
    bool mismatch;
    pthread_rwlock_rdlock(&routes_lock);
    http_route *r = route_find(req, &mismatch);
    if (!r || r->stream) {
        pthread_rwlock_unlock(&routes_lock);
        err_set(err, MB_EBUSY, "the route went away while the request was read; try again");
        http_reply_error(req, err);
        return;
    }
    mb_module *owner = r->owner;
    mb_route_fn fn = r->fn;
    void *state = r->state;
    modmgr_enter(owner); /* under the read lock: the owner cannot be drained past us */
    pthread_rwlock_unlock(&routes_lock);
    int rc = fn(req, state, err);
    modmgr_leave(owner);
    if (rc < 0) {
        if (!err->code)
            err_set(err, rc, "%s", err_title(rc));
        http_reply_error(req, err);
    }
}

static conn_rec *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Every TCP connection is known to the flood guard (conn.c) from accept to close. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        *socket_context = fd ? conn_opened(fd->connect_fd, ad ? ad->client_addr : NULL) : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_closed(*socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result route_begin(mb_req *req, mb_route_fn begin, mb_module *owner, void *state);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls, (void)url, (void)version;
    mb_req *req = *con_cls;
    mb_err err = {0};
    share_ip_set(req->started ? req->ip : NULL); /* events emitted while serving carry "ip" */
    accesslog_enter(&req->rl, req, conn, url, version);
    if (!req->started) {
        req->started = true;
        req->conn = conn;
        req->method = arena_strdup(req->a, method);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (req->local || !ci || !ci->client_addr)
            snprintf(req->ip, sizeof req->ip, "local");
        else if (ci->client_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, req->ip, sizeof req->ip);
        else if (ci->client_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, req->ip, sizeof req->ip);
        else
            snprintf(req->ip, sizeof req->ip, "local");
        req->secure = g_cfg->tls_cert != NULL && !req->local;
        forwarded(req);
        share_ip_set(req->ip);
        size_t hbytes = 0;
        MHD_get_connection_values(conn, MHD_HEADER_KIND, header_size_cb, &hbytes);
        if (hbytes > MAX_HEADER_BYTES) {
            err_set(&err, MB_ETOOBIG, "the request headers are larger than %d bytes", MAX_HEADER_BYTES);
            reply_problem(req, 431, MB_ETOOBIG, err.msg);
            return queue(req);
        }
        conn_rec *cr = req->local ? NULL : conn_of(conn);
        if (conn_headers(cr)) {
            err_set(&err, MB_EBUSY, "this address has %d connections open already (the server's limit); "
                    "close some or try again in a moment", conn_limit_per_ip());
            http_reply_header(req, "Connection", "close");
            http_reply_header(req, "Retry-After", "2");
            return fail_now(req, &err);
        }
        if (atomic_load(&stopping)) {
            err_set(&err, MB_EBUSY, "the server is stopping; try again in a moment");
            http_reply_header(req, "Connection", "close");
            http_reply_header(req, "Retry-After", "5");
            return fail_now(req, &err);
        }
        if (parse_path(req, &err))
            return fail_now(req, &err);
        bool mismatch;
        pthread_rwlock_rdlock(&routes_lock);
        http_route *r = route_find(req, &mismatch);
        int role = r ? r->role : 0;
        const http_stream_ops *stream = r ? r->stream : NULL;
        accesslog_route(&req->rl, req, r ? r->pattern : NULL, stream != NULL);
        mb_route_fn begin = r ? r->begin : NULL;
        mb_module *owner = r ? r->owner : NULL;
        void *bstate = r ? r->state : NULL;
        if (begin)
            modmgr_enter(owner); /* under the read lock, as call_handler does */
        pthread_rwlock_unlock(&routes_lock);
        if (!r) {
            if (serve_static(req))
                return answer_early(req);
            const char *mod = mismatch ? NULL : module_of_path(req);
            if (mismatch)
                err_set(&err, MB_EMETHOD, "%s is not allowed on %s", req->method, req->path);
            else if (mod)
                err_set(&err, MB_ENOENT, "the %s module is not loaded, so %s is not served here (an administrator "
                        "can load it: mbytectl module load %s)", mod, req->path, mod);
            else
                err_set(&err, MB_ENOENT, "no such endpoint: %s", req->path);
            return fail_now(req, &err);
        }
        if (authorize(req, role, &err)) {
            if (begin)
                modmgr_leave(owner);
            if (err.code == MB_EAUTH)
                http_reply_header(req, "WWW-Authenticate", "Bearer realm=\"mbyte\"");
            return fail_now(req, &err);
        }
        if (begin)
            return route_begin(req, begin, owner, bstate);
        if (stream) {
            req->stream = stream;
            if (stream->begin(req, &req->sctx, &err)) {
                req->stream_done = true;
                if (stream->abort)
                    stream->abort(req, req->sctx);
                req->sctx = NULL;
                return fail_now(req, &err);
            }
            if (req->replied) { /* answered from headers alone (e.g. 304, HEAD) */
                req->stream_done = true;
                return answer_early(req);
            }
            return MHD_YES;
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t len;
        if (cl && parse_u64(cl, &len) && len > (uint64_t)g_cfg->max_body) {
            err_set(&err, MB_ETOOBIG, "the body is larger than %lld bytes", (long long)g_cfg->max_body);
            return fail_now(req, &err);
        }
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        req->rl.in += n;
        if (req->failed_early || req->replied || req->held)
            return MHD_YES; /* drain; the answer is already decided */
        if (req->stream) {
            if (req->stream->data(req, req->sctx, upload_data, n, &err)) {
                req->early = err;
                req->failed_early = true;
            }
            return MHD_YES;
        }
        if (req->blen + n > (size_t)g_cfg->max_body) {
            err_set(&req->early, MB_ETOOBIG, "the body is larger than %lld bytes", (long long)g_cfg->max_body);
            req->failed_early = true;
            return MHD_YES;
        }
        if (req->blen + n > req->bcap) {
            req->bcap = (req->blen + n) * 2;
            req->body = xrealloc(req->body, req->bcap);
        }
        memcpy(req->body + req->blen, upload_data, n);
        req->blen += n;
        return MHD_YES;
    }

    /* The body is complete. */
    if (req->held)
        return queue(req);
    if (req->stream) {
        req->stream_done = true;
        if (req->failed_early) {
            if (req->stream->abort)
                req->stream->abort(req, req->sctx);
            http_reply_error(req, &req->early);
            return queue(req);
        }
        if (req->stream->end(req, req->sctx, &err)) {
            if (!req->replied || req->status < 400)
                http_reply_error(req, &err);
        }
        return queue(req);
    }
    if (req->failed_early)
        http_reply_error(req, &req->early);
    if (req->replied)
        return queue(req);
    call_handler(req, &err);
    return queue(req);
}

/* ------------------------------------- a module's look at the headers (minor 10) --- */
/* A route's begin runs before the body is read. It answers at once, takes the body as a
 * stream (sink_ops forward to the module's mb_body_sink; the module stays entered until its
 * end or abort returned), or leaves the body to be buffered for fn as usual. */
static int sink_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    return req->sink->data(req, ctx, buf, len, err);
}

static int sink_end(mb_req *req, void *ctx, mb_err *err)
{
    int rc = req->sink->end(req, ctx, err);
    modmgr_leave(req->sink_owner);
    return rc;
}

static void sink_abort(mb_req *req, void *ctx)
{
    if (req->sink->abort)
        req->sink->abort(req, ctx);
    modmgr_leave(req->sink_owner);
}

static const http_stream_ops sink_ops = {NULL, sink_data, sink_end, sink_abort};

int http_req_body_sink(mb_req *req, const mb_body_sink *sink, void *ctx, mb_err *err)
{
    if (!req->in_begin || req->replied || req->sink || !sink || !sink->data || !sink->end)
        return err_set(err, MB_EINVAL, "req_body_sink: only once, from a route's begin, before an answer");
    req->sink = sink;
    req->sctx = ctx;
    return 0;
}

static enum MHD_Result route_begin(mb_req *req, mb_route_fn begin, mb_module *owner, void *state)
{
    mb_err err = {0};
    req->in_begin = true;
    int rc = begin(req, state, &err);
    req->in_begin = false;
    if (req->sink) {
        req->sink_owner = owner; /* left by sink_end or sink_abort */
        req->stream = &sink_ops;
        if (rc < 0) {
            req->stream_done = true;
            sink_abort(req, req->sctx);
            req->sctx = NULL;
            if (!err.code)
                err_set(&err, rc, "%s", err_title(rc));
            return fail_now(req, &err);
        }
        return MHD_YES;
    }
    modmgr_leave(owner);
    if (rc < 0) {
        if (!err.code)
            err_set(&err, rc, "%s", err_title(rc));
        return fail_now(req, &err);
    }
    if (req->replied)
        return answer_early(req);
    return MHD_YES; /* buffered for fn */
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    mb_req *req = xcalloc(1, sizeof *req);
    req->a = arena_new();
    req->raw_uri = arena_strdup(req->a, uri);
    req->local = cls == &daemon_local;
    req->t0 = now_mono_ms();
    atomic_fetch_add(&in_flight, 1);
    return req;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    mb_req *req = *con_cls;
    if (!req)
        return;
    if (!req->local)
        conn_request_done(conn_of(conn));
    if (req->stream && !req->stream_done && req->stream->abort)
        req->stream->abort(req, req->sctx);
    if (req->resp)
        MHD_destroy_response(req->resp);
    char redacted[512];
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->started)
        log_msg(LOG_DEBUG, "http", "%s %s ended early (%d)", req->method,
                req->path ? share_redact(req->path, redacted, sizeof redacted) : "", (int)toe);
    accesslog_done(&req->rl, req, req->status, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK, now_mono_ms() - req->t0);
    json_decref(req->json);
    free(req->body);
    arena_free(req->a);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_vmsg(LOG_DEBUG, "mhd", fmt, ap);
}

static int local_socket(const char *path, mb_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return err_set(err, MB_EINVAL, "the admin socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_set(err, MB_EIO, "socket: %s", strerror(errno));
    mode_t old = umask(0177); /* the socket file is the credential: owner only */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc || listen(fd, 64)) {
        close(fd);
        return err_set(err, MB_EIO, "cannot listen on %s: %s", path, strerror(errno));
    }
    return fd;
}

/* ------------------------------------------------------------- HTTPS --- */

static bool loopback_host(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return !strcmp(h, "localhost");
}

static char *read_pem(const char *path, mb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(err, MB_EINVAL, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (!n || !strstr(buf, "-----BEGIN ")) {
        free(buf);
        err_set(err, MB_EINVAL, "%s is not a PEM file", path);
        return NULL;
    }
    return buf;
}

/* http_redirect_listen: every request on the plain port is sent to the same path over HTTPS on
 * `listen` (308 keeps the method and body). The host comes from the Host header when it is a plain
 * host name or address, else from `listen`. */
static enum MHD_Result on_redirect(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    (void)cls, (void)method, (void)version, (void)upload_data, (void)upload_data_size;
    if (*con_cls) /* the whole request target, query included (redirect_uri) */
        url = *con_cls;
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    char h[256];
    snprintf(h, sizeof h, "%s", host && *host ? host : g_cfg->listen_host);
    if (h[0] == '[') {
        char *close = strchr(h, ']');
        if (close)
            close[1] = '\0';
    } else
        h[strcspn(h, ":")] = '\0';
    if (strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-[]:") != strlen(h) || !h[0])
        snprintf(h, sizeof h, "%s", g_cfg->listen_host);
    size_t n = strlen(url) + strlen(h) + 32;
    char *loc = xmalloc(n);
    snprintf(loc, n, "https://%s:%d%s", h, g_cfg->listen_port, url[0] == '/' ? url : "/");
    static const char body[] = "This server answers over HTTPS only.\n";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    security_headers(r);
    enum MHD_Result rc = MHD_queue_response(conn, 308, r);
    MHD_destroy_response(r);
    free(loc);
    return rc;
}

static void *redirect_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    return uri && strlen(uri) < 8192 ? xstrdup(uri) : NULL;
}

static void redirect_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode tc)
{
    (void)cls, (void)conn, (void)tc;
    free(*con_cls);
    *con_cls = NULL;
}

static int redirect_start(mb_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, g_cfg->redirect_host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->redirect_port);
    } else if (inet_pton(AF_INET6, g_cfg->redirect_host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)g_cfg->redirect_port);
        flags |= MHD_USE_IPv6;
    } else
        return err_set(err, MB_EINVAL, "http_redirect_listen host '%s' must be an IP address", g_cfg->redirect_host);
    daemon_redirect = MHD_start_daemon(flags, (uint16_t)g_cfg->redirect_port, NULL, NULL, on_redirect, NULL,
                                       MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &ss,
                                       MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, 1024u,
                                       MHD_OPTION_PER_IP_CONNECTION_LIMIT, 16u, MHD_OPTION_URI_LOG_CALLBACK,
                                       redirect_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, redirect_done, NULL,
                                       MHD_OPTION_END);
    if (!daemon_redirect)
        return err_set(err, MB_EIO, "cannot listen on %s:%d for the HTTPS redirect", g_cfg->redirect_host,
                       g_cfg->redirect_port);
    return 0;
}

int http_start(mb_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, g_cfg->listen_host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->listen_port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, g_cfg->listen_host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)g_cfg->listen_port);
        sl = sizeof *s6;
        flags |= MHD_USE_IPv6;
    } else if (!strcmp(g_cfg->listen_host, "localhost")) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->listen_port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *s4;
    } else
        return err_set(err, MB_EINVAL, "listen host '%s' must be an IP address", g_cfg->listen_host);
    (void)sl;
    /* HTTPS with tls_cert/tls_key; plain HTTP only on loopback unless require_tls is false (a TLS
     * proxy in front of mbyted is then the only way in). */
    struct MHD_OptionItem tls[4] = {{MHD_OPTION_END, 0, NULL}};
    if (g_cfg->tls_cert) {
        if (!(tls_pem[0] = read_pem(g_cfg->tls_cert, err)) || !(tls_pem[1] = read_pem(g_cfg->tls_key, err))) {
            free(tls_pem[0]);
            tls_pem[0] = NULL;
            return err->code;
        }
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, tls_pem[0]};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, tls_pem[1]};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                         (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
    } else if (g_cfg->require_tls && !loopback_host(g_cfg->listen_host))
        return err_set(err, MB_EINVAL,
                       "listen %s:%d is not a loopback address and would serve plain HTTP: set tls_cert and tls_key "
                       "(docs/operations.md \"HTTPS\"), or require_tls: false when a TLS proxy in front is the only "
                       "way in",
                       g_cfg->listen_host, g_cfg->listen_port);
    /* libmicrohttpd's hard connection limit, below the descriptors this process may open
     * (LevelDB, chunk files and FTP need some too). conn.c keeps headroom below it. */
    unsigned max_conns = (unsigned)g_cfg->http_max_connections;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_conns + 512) {
        unsigned fit = rl.rlim_cur > 576 ? (unsigned)(rl.rlim_cur - 512) : 64;
        log_msg(LOG_WARN, "http", "http_max_connections %u does not fit the open-files limit %llu: using %u",
                max_conns, (unsigned long long)rl.rlim_cur, fit);
        max_conns = fit;
    }
    conn_start((int)max_conns, g_cfg->http_max_connections_per_ip, g_cfg->http_header_timeout);
    /* The connection pool holds a request's headers and its read buffer, and libmicrohttpd
     * clears all of it for every request on a kept-alive connection: at 256 KiB that memset
     * was 4 % of the CPU of small uploads. 64 KiB leaves about 32 KiB for headers and large
     * uploads ran at the same speed and CPU. */
    daemon_tcp = MHD_start_daemon(
        flags, (uint16_t)g_cfg->listen_port, NULL, NULL, on_request, &daemon_tcp, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)g_cfg->http_threads, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_URI_LOG_CALLBACK, on_uri, &daemon_tcp,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, max_conns,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!daemon_tcp) {
        conn_stop();
        return err_set(err, MB_EIO, "cannot listen on %s:%d (in use, not an address of this machine, or %s)",
                       g_cfg->listen_host, g_cfg->listen_port,
                       g_cfg->tls_cert ? "tls_cert and tls_key do not form a certificate and its key" : "no TLS");
    }
    if (g_cfg->redirect_host && redirect_start(err)) {
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err->code;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/mbyte.sock", g_cfg->data_dir);
    int fd = local_socket(path, err);
    if (fd < 0) {
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err->code;
    }
    local_sock_path = xstrdup(path);
    daemon_local = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request,
        &daemon_local, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, &daemon_local, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
    if (!daemon_local) {
        close(fd);
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err_set(err, MB_EIO, "cannot serve the admin socket %s", path);
    }
    sse_keepalive = event_new(main_loop(), -1, EV_PERSIST, sse_tick, NULL);
    struct timeval tv = {15, 0};
    event_add(sse_keepalive, &tv);
    return 0;
}

void http_stop(void)
{
    if (daemon_redirect) {
        MHD_stop_daemon(daemon_redirect);
        daemon_redirect = NULL;
    }
    if (sse_keepalive) {
        event_free(sse_keepalive);
        sse_keepalive = NULL;
    }
    /* Requests in flight go on; new ones get 503. (MHD_quiesce_daemon would stop accepting,
     * but with an epoll thread pool it can abort the process in libmicrohttpd 0.9.75 when a
     * worker has taken its listen socket out of epoll: seen in CI.) */
    atomic_store(&stopping, true);
    sse_close_all();
    /* Let requests in flight finish (bounded), then stop. */
    for (int i = 0; i < 300 && atomic_load(&in_flight) > 0; i++) {
        sse_close_all();
        usleep(100 * 1000);
    }
    conn_stop(); /* no sweep while libmicrohttpd closes the connections */
    if (daemon_tcp)
        MHD_stop_daemon(daemon_tcp);
    if (daemon_local)
        MHD_stop_daemon(daemon_local);
    daemon_tcp = daemon_local = NULL;
    for (int i = 0; i < 2; i++) {
        free(tls_pem[i]);
        tls_pem[i] = NULL;
    }
    if (local_sock_path) {
        unlink(local_sock_path);
        free(local_sock_path);
        local_sock_path = NULL;
    }
    hints_free();
    pthread_rwlock_wrlock(&routes_lock);
    for (size_t i = 0; i < nroutes; i++)
        route_free(routes[i]);
    free(routes);
    routes = NULL;
    nroutes = 0;
    pthread_rwlock_unlock(&routes_lock);
}

/* Issue 8 (share.c, mb_api req_body): the buffered body of a module route. */
const char *http_req_body(mb_req *req, size_t *len)
{
    *len = req->blen;
    return req->blen ? req->body : NULL;
}
