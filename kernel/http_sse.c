/*
 * http_sse.c — server-sent event streams (GET /api/v1/events): one stream per open
 * connection of a user, fed by http_sse_publish (notify.c) and a keepalive every 15 s.
 *
 * Threads: streams are written by any thread (publishers) and read by libmicrohttpd
 * threads; `sse_lock` guards the list and every stream's buffer. The keepalive timer runs
 * on the loop thread.
 */
#include "http_int.h"
#include <stdlib.h>
#include <string.h>

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
    http_set_response(req, 200, r);
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

void http_sse_close_all(void)
{
    pthread_mutex_lock(&sse_lock);
    for (sse *s = sse_list; s; s = s->next) {
        s->closed = true;
        sse_wake(s);
    }
    pthread_mutex_unlock(&sse_lock);
}

void http_sse_start(void)
{
    sse_keepalive = event_new(main_loop(), -1, EV_PERSIST, sse_tick, NULL);
    struct timeval tv = {15, 0};
    event_add(sse_keepalive, &tv);
}

void http_sse_stop(void)
{
    if (sse_keepalive) {
        event_free(sse_keepalive);
        sse_keepalive = NULL;
    }
}
