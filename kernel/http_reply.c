/*
 * http_reply.c — how a request is answered: JSON, raw bytes, streamed bodies, problem+json
 * errors (one table maps MB_E* codes to statuses, err.c), the headers a handler adds, and
 * the security headers every answer carries. An answer is prepared on the request and
 * handed to libmicrohttpd once (http_queue), when the request's last call decides it.
 *
 * Streamed answers (file downloads) go out in STREAM_BLOCK slices through libmicrohttpd's
 * callback; an answer that is one span of one chunk file goes out with sendfile instead
 * (http_reply_span), on plain connections: with TLS every byte is encrypted by us anyway.
 *
 * Threads: libmicrohttpd threads; each function touches only its own request.
 */
#include "http_int.h"
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void http_set_response(mb_req *req, int status, struct MHD_Response *resp)
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
    http_set_response(req, status, r);
    return 0;
}

int http_reply_json(mb_req *req, int status, json_t *body)
{
    size_t n;
    char *s = jsonw_dump(body ? body : json_null(), &n);
    json_decref(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
    req->rl.out = n;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    http_set_response(req, status, r);
    return 0;
}

/* A problem+json answer with an explicit status (431 has no MB_E* code of its own). */
int http_reply_problem(mb_req *req, int status, int code, const char *detail)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title",
                          status == 431 ? "Request header fields too large" : err_title(code), "status", status,
                          "detail", detail && *detail ? detail : err_title(code), "code", err_name(code));
    accesslog_problem(p);
    size_t n;
    char *s = jsonw_dump(p, &n);
    json_decref(p);
    struct MHD_Response *r = MHD_create_response_from_buffer(req->rl.out = n, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
    /* Headers a handler added (e.g. WWW-Authenticate) stay; nothing else leaks. */
    http_set_response(req, status, r);
    char redacted[512];
    log_msg(status >= 500 ? LOG_ERROR : LOG_INFO, "http", "%s %s -> %d %s: %s", req->method,
            req->path ? accesslog_redact(req->path, redacted, sizeof redacted) : "(unparsed)", status, err_name(code),
            detail ? detail : "");
    return 0;
}

int http_reply_error(mb_req *req, const mb_err *err)
{
    int code = err && err->code ? err->code : MB_EINTERNAL;
    return http_reply_problem(req, err_http_status(code), code, err && err->msg[0] ? err->msg : NULL);
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

/* libmicrohttpd allocates one such buffer per streamed answer and asks for this much per
 * call: 256 KiB took a warm download from 16k to 4k callbacks (and as many send calls) per
 * GiB against 64 KiB. */
#define STREAM_BLOCK (256 * 1024)

int http_reply_stream(mb_req *req, int status, const char *ctype, uint64_t size, http_reader_fn read, void *cls,
                      void (*free_cls)(void *))
{
    stream_cb *s = xmalloc(sizeof *s);
    s->read = read;
    s->cls = cls;
    s->free_cls = free_cls;
    struct MHD_Response *r = MHD_create_response_from_callback(size, STREAM_BLOCK, stream_reader, s, stream_free);
    req->rl.out = size == MHD_SIZE_UNKNOWN ? 0 : size;
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    http_set_response(req, status, r);
    return 0;
}

/* libmicrohttpd sends a descriptor answer with sendfile only when its daemon has no TLS;
 * with TLS it would read the file in 4 KiB slices, slower than our own stream. */
static bool plain_daemon(mb_req *req)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_DAEMON);
    const union MHD_DaemonInfo *di = ci ? MHD_get_daemon_info(ci->daemon, MHD_DAEMON_INFO_FLAGS) : NULL;
    return di && !(di->flags & MHD_USE_TLS);
}

bool http_reply_span(mb_req *req, int status, const char *ctype, struct fs_reader *r, uint64_t off, uint64_t len)
{
    int fd;
    uint64_t fd_off;
    if (strcmp(req->method, "GET") || !plain_daemon(req) || !fs_span_fd(r, off, len, &fd, &fd_off))
        return false;
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, fd_off);
    if (!resp) {
        close(fd);
        return false;
    }
    req->rl.out = len;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    http_set_response(req, status, resp);
    return true;
}

/* On every answer: no MIME sniffing, no Referer leaving the server (share links carry their
 * token in the path), never framed. An answer that is not the web page (JSON, problems, files a
 * user stored, which may be HTML) gets a policy under which nothing in it can run or load. */
void http_security_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    if (!MHD_get_response_header(r, "Content-Security-Policy"))
        MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
}

enum MHD_Result http_queue(mb_req *req)
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
    http_security_headers(req->resp);
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return rc;
}
