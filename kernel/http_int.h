/*
 * http_int.h — what the files of the HTTP door share (http.c, http_route.c, http_target.c,
 * http_reply.c, http_sse.c, http_server.c); the rest of the kernel sees only kernel.h.
 *
 *   http.c         one request from its first call to its end: request access, static
 *                  files, authorisation, bodies, calling the handler
 *   http_route.c   the route table (an owner-tagged registry) and the not-loaded hints
 *   http_target.c  the request target: raw URI to decoded, checked segments
 *   http_reply.c   answers: JSON, bytes, streams, problem+json, security headers, queueing
 *   http_sse.c     server-sent event streams
 *   http_server.c  libmicrohttpd daemons: listen, TLS, the HTTPS redirect, the admin socket
 */
#ifndef MBYTE_HTTP_INT_H
#define MBYTE_HTTP_INT_H
#include "kernel.h"
#include <microhttpd.h>

#define MAX_SEGS 80 /* 64 folder levels plus the route's own segments */
#define MAX_HEADER_BYTES (16 * 1024)

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
    uint64_t gate; /* cluster mode: the store this request is served here for (cluster_fwd.c's gate) */
    bool parked, was_parked; /* suspended at a closed gate until it opens (cluster_fwd.c); it was once */
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
    /* a module's body sink: set by api->req_body_sink during its route's begin */
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
    accesslog_rec rl; /* accesslog.c: request id, sizes, route */
};

/* http_route.c: the route of req (its {params} bound into the request). 0 with *hit
 * filled (the owner entered when `enter`: the caller leaves after the call), MB_EMETHOD when
 * only another method matches, MB_ENOENT when nothing does. One read lock, no allocation. */
typedef struct http_hit {
    mb_module *owner;
    mb_route_fn fn;
    void *state;
    int role;
    const http_stream_ops *stream;
    mb_route_fn begin;   /* a module's look at the headers before the body */
    const char *pattern; /* the route's pattern, copied into the request's arena */
} http_hit;
int http_route_lookup(mb_req *req, http_hit *hit, bool enter);
const char *http_route_hint(mb_req *req); /* the not-loaded module whose route req's path is, or NULL */
void http_routes_fini(void);

/* http_reply.c */
void http_set_response(mb_req *req, int status, struct MHD_Response *resp); /* replaces an earlier one */
int http_reply_problem(mb_req *req, int status, int code, const char *detail);
enum MHD_Result http_queue(mb_req *req); /* hand the answer to libmicrohttpd */
void http_security_headers(struct MHD_Response *r);

/* http_sse.c */
void http_sse_start(void);     /* keepalive timer on the loop */
void http_sse_stop(void);
void http_sse_close_all(void); /* at stop: end every stream */

/* http.c: libmicrohttpd's callbacks, for http_server.c. The cls of http_on_uri points to a
 * bool: true for the admin socket. */
/* The request this thread is serving now (inside http_on_request), NULL outside: a module's write
 * that begins while it is served knows whether the request holds its store's gate already
 * (cluster_gate_join). */
extern _Thread_local const mb_req *http_serving;
enum MHD_Result http_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                const char *version, const char *upload_data, size_t *upload_data_size,
                                void **con_cls);
void *http_on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
void http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                       enum MHD_RequestTerminationCode toe);
void http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode code);
void http_refuse_new(void);     /* http_stop: new requests get 503 from now on */
bool http_stop_overdue(void);    /* http_stop waited its time: what waits for another node gives up */
int http_requests_in_flight(void);
#endif
