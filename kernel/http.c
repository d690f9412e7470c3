/*
 * http.c — the HTTP door: one request from libmicrohttpd's first call to its end. Reads the
 * client's address (and, from a trusted proxy, X-Forwarded-For/-Proto), routes the decoded
 * path (http_route.c), serves the static web page, authorises the caller for the route's
 * role, buffers or streams the body, calls the handler and queues its answer
 * (http_reply.c). The other files of the door are listed in http_int.h.
 *
 * Threads: every callback here runs on a libmicrohttpd thread. The route table is read
 * under its registry's read lock, and a call into a module is counted (modref_enter) while
 * that lock is held, so a module seen by a request cannot be closed under it; a reload
 * swaps the owner of a route under the write lock, so no request ever sees "no route".
 *
 * Every TCP connection is also known to conn.c (header deadline, per-address and global
 * caps against slowloris floods) from accept to close. A 404 under /api/v1 that a module not
 * loaded would serve names that module (its route table is read from module_dir once).
 */
#include "http_int.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

static atomic_int in_flight;
static atomic_bool stopping; /* set by http_stop: new requests are refused with 503 */

void http_refuse_new(void) { atomic_store(&stopping, true); }
int http_requests_in_flight(void) { return atomic_load(&in_flight); }

static int parse_path(mb_req *req, mb_err *err)
{
    return http_parse_target(req->a, req->raw_uri, req->segs, MAX_SEGS, &req->nsegs, &req->path, err);
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

typedef struct {
    const char *name;
    json_t *out;
} query_all;

static enum MHD_Result query_one(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    query_all *q = cls;
    if (key && !strcmp(key, q->name))
        json_array_append_new(q->out, json_string(value ? value : ""));
    return MHD_YES;
}

json_t *http_req_query_all(mb_req *req, const char *name)
{
    query_all q = {name, json_array()};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_one, &q);
    return q.out;
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
    http_set_response(req, 200, r);
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
    return http_queue(req);
}

static enum MHD_Result fail_now(mb_req *req, const mb_err *err)
{
    http_reply_error(req, err);
    return answer_early(req);
}

/* The answer for a request no route takes (`found`: http_route_lookup's MB_EMETHOD or
 * MB_ENOENT): 405, or 404 naming the module whose route it is when that module is not loaded.
 * Also the answer when the route went while the request was read (its module was unloaded):
 * the same one the next request gets. */
static void route_missing(mb_req *req, int found, mb_err *err)
{
    const char *mod = found == MB_EMETHOD ? NULL : http_route_hint(req);
    if (found == MB_EMETHOD)
        err_set(err, MB_EMETHOD, "%s is not allowed on %s", req->method, req->path);
    else if (mod)
        err_set(err, MB_ENOENT, "the %s module is not loaded, so %s is not served here (an administrator "
                "can load it: mbytectl module load %s)", mod, req->path, mod);
    else
        err_set(err, MB_ENOENT, "no such endpoint: %s", req->path);
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
    http_hit hit;
    int found = http_route_lookup(req, &hit, true);
    if (found) { /* its module was unloaded meanwhile */
        route_missing(req, found, err);
        http_reply_error(req, err);
        return;
    }
    if (hit.stream || !hit.fn) { /* reloaded as another kind of route */
        modref_leave(hit.owner);
        err_set(err, MB_EBUSY, "the route changed while the request was read; try again");
        http_reply_error(req, err);
        return;
    }
    int rc = hit.fn(req, hit.state, err); /* the owner was entered by the lookup */
    modref_leave(hit.owner);
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
void http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
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

static enum MHD_Result route_begin(mb_req *req, mb_err *err);

/* The body is complete and a stream takes it: its end answers, or suspends the connection and
 * returns HTTP_STREAM_LATER (libmicrohttpd calls the handler again once it is resumed). */
static enum MHD_Result stream_end(mb_req *req)
{
    mb_err err = {0};
    req->stream_done = true;
    if (req->failed_early) {
        if (req->stream->abort)
            req->stream->abort(req, req->sctx);
        http_reply_error(req, &req->early);
        return http_queue(req);
    }
    int rc = req->stream->end(req, req->sctx, &err);
    if (rc == HTTP_STREAM_LATER)
        return MHD_YES; /* suspended: this call comes again once it is resumed */
    if (rc && (!req->replied || req->status < 400))
        http_reply_error(req, &err);
    return http_queue(req);
}

/* Where the request goes, once its path is parsed: another node (cluster mode), a route's begin,
 * a stream, or a buffered body for its handler. Called again for a request parked at a gate
 * (cluster_fwd.c) when it is resumed. */
static enum MHD_Result dispatch(mb_req *req, mb_err *err)
{
    struct MHD_Connection *conn = req->conn;
    if (!req->local && cluster_enabled()) { /* a store another node keeps: that node answers */
        int f = cluster_fwd_begin(req, err);
        if (f < 0)
            return fail_now(req, err);
        if (f == CLUSTER_PARKED)
            return MHD_YES; /* called again once resumed, req->parked set */
        if (f > 0) {
            accesslog_route(&req->rl, req, "(forwarded)", true);
            return MHD_YES;
        }
    }
    http_hit hit;
    int found = http_route_lookup(req, &hit, false);
    int role = found ? 0 : hit.role;
    const http_stream_ops *stream = found ? NULL : hit.stream;
    accesslog_route(&req->rl, req, found ? NULL : hit.pattern, stream != NULL);
    if (found) {
        if (serve_static(req))
            return answer_early(req);
        route_missing(req, found, err);
        return fail_now(req, err);
    }
    if (authorize(req, role, err)) {
        if (err->code == MB_EAUTH)
            http_reply_header(req, "WWW-Authenticate", "Bearer realm=\"mbyte\"");
        return fail_now(req, err);
    }
    if (!found && hit.begin)
        return route_begin(req, err);
    if (stream) {
        req->stream = stream;
        if (stream->begin(req, &req->sctx, err)) {
            req->stream_done = true;
            if (stream->abort)
                stream->abort(req, req->sctx);
            req->sctx = NULL;
            return fail_now(req, err);
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
        err_set(err, MB_ETOOBIG, "the body is larger than %lld bytes", (long long)g_cfg->max_body);
        return fail_now(req, err);
    }
    return MHD_YES;
}

_Thread_local const mb_req *http_serving;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls);

enum MHD_Result http_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_serving = *con_cls;
    enum MHD_Result r = on_request(cls, conn, url, method, version, upload_data, upload_data_size, con_cls);
    http_serving = NULL;
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    mb_req *req = *con_cls;
    mb_err err = {0};
    hook_ip_set(req->started ? req->ip : NULL); /* events emitted while serving carry "ip" */
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
        hook_ip_set(req->ip);
        size_t hbytes = 0;
        MHD_get_connection_values(conn, MHD_HEADER_KIND, header_size_cb, &hbytes);
        if (hbytes > MAX_HEADER_BYTES) {
            err_set(&err, MB_ETOOBIG, "the request headers are larger than %d bytes", MAX_HEADER_BYTES);
            http_reply_problem(req, 431, MB_ETOOBIG, err.msg);
            return http_queue(req);
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
        return dispatch(req, &err);
    }
    if (req->parked) { /* resumed: its store's switch is over (cluster_fwd.c's gate) */
        req->parked = false;
        enum MHD_Result r = dispatch(req, &err);
        if (r != MHD_YES || req->parked || !*upload_data_size)
            return r; /* libmicrohttpd calls again as for a first call: the body comes next */
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
        return http_queue(req);
    if (req->stream)
        return stream_end(req);
    if (req->failed_early)
        http_reply_error(req, &req->early);
    if (req->replied)
        return http_queue(req);
    call_handler(req, &err);
    if (req->stream && !req->replied) /* the handler handed its answer on (cluster_fwd_file) */
        return stream_end(req);
    return http_queue(req);
}

/* ----------------------------------------------- a module's look at the headers --- */
/* A route's begin (mb_route.begin) runs before the body is read. It answers at once, takes
 * the body as a stream (sink_ops forward to the module's mb_body_sink; the module stays
 * entered until its end or abort returned), or leaves the body to be buffered for fn. */
static int sink_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    return req->sink->data(req, ctx, buf, len, err);
}

static int sink_end(mb_req *req, void *ctx, mb_err *err)
{
    int rc = req->sink->end(req, ctx, err);
    modref_leave(req->sink_owner);
    return rc;
}

static void sink_abort(mb_req *req, void *ctx)
{
    if (req->sink->abort)
        req->sink->abort(req, ctx);
    modref_leave(req->sink_owner);
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

/* The route is looked up again with its owner entered (as call_handler does): a reload in
 * between re-points it, an unload makes it go. */
static enum MHD_Result route_begin(mb_req *req, mb_err *err)
{
    http_hit hit;
    int found = http_route_lookup(req, &hit, true);
    if (found) { /* its module was unloaded meanwhile */
        route_missing(req, found, err);
        return fail_now(req, err);
    }
    if (!hit.begin) { /* reloaded as another kind of route */
        modref_leave(hit.owner);
        err_set(err, MB_EBUSY, "the route changed while the request was read; try again");
        return fail_now(req, err);
    }
    req->in_begin = true;
    int rc = hit.begin(req, hit.state, err);
    req->in_begin = false;
    if (req->sink) {
        req->sink_owner = hit.owner; /* left by sink_end or sink_abort */
        req->stream = &sink_ops;
        if (rc < 0) {
            req->stream_done = true;
            sink_abort(req, req->sctx);
            req->sctx = NULL;
            if (!err->code)
                err_set(err, rc, "%s", err_title(rc));
            return fail_now(req, err);
        }
        return MHD_YES;
    }
    modref_leave(hit.owner);
    if (rc < 0) {
        if (!err->code)
            err_set(err, rc, "%s", err_title(rc));
        return fail_now(req, err);
    }
    if (req->replied)
        return answer_early(req);
    return MHD_YES; /* buffered for fn */
}

void *http_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    mb_req *req = xcalloc(1, sizeof *req);
    req->a = arena_new();
    req->raw_uri = arena_strdup(req->a, uri);
    req->local = *(const bool *)cls;
    req->t0 = now_mono_ms();
    atomic_fetch_add(&in_flight, 1);
    return req;
}

void http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    mb_req *req = *con_cls;
    if (!req)
        return;
    if (!req->local)
        conn_request_done(conn_of(conn));
    if (req->gate)
        cluster_gate_leave(req->gate);
    if (req->stream && !req->stream_done && req->stream->abort)
        req->stream->abort(req, req->sctx);
    if (req->resp)
        MHD_destroy_response(req->resp);
    char redacted[512];
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->started)
        log_msg(LOG_DEBUG, "http", "%s %s ended early (%d)", req->method,
                req->path ? accesslog_redact(req->path, redacted, sizeof redacted) : "", (int)toe);
    accesslog_done(&req->rl, req, req->status, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK, now_mono_ms() - req->t0);
    json_decref(req->json);
    free(req->body);
    arena_free(req->a);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&in_flight, 1);
}
/* Issue 8 (share.c, mb_api req_body): the buffered body of a module route. */
const char *http_req_body(mb_req *req, size_t *len)
{
    *len = req->blen;
    return req->blen ? req->body : NULL;
}
