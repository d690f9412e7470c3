/*
 * conn.c — the HTTP door's guard against connection floods (slowloris and friends), after
 * nginx's client_header_timeout and limit_conn. libmicrohttpd's idle timeout restarts with
 * every byte, so a client sending one byte every few seconds held a connection for ever, and
 * a thousand of them filled the connection table: nobody else got in. Three rules:
 *
 *  - Header deadline: a connection must deliver a request's complete headers within
 *    http_header_timeout seconds of being opened or of the end of its previous request.
 *    Bytes arriving do not move the deadline. A kept-alive connection idling past it is
 *    closed too (Apache's KeepAliveTimeout is 5 s; a client just opens a new one).
 *  - Per address: an address holding http_max_connections_per_ip connections gets, on the
 *    next one, a 503 with Retry-After once its headers arrive, or a close at its (short)
 *    deadline if they do not.
 *  - Global headroom: once more than http_max_connections minus a tenth are open, each new
 *    connection closes the header-waiting connection with the nearest deadline (the oldest
 *    dribbler), so a new client always finds a free slot below libmicrohttpd's hard limit.
 *
 * A connection is closed from outside libmicrohttpd by shutdown(2) of its socket: its own
 * thread then reads end-of-file and cleans up. libmicrohttpd calls conn_closed before it
 * closes the descriptor and conn_closed takes the same lock, so the descriptor shut down is
 * never one the kernel has handed to someone else.
 *
 * Threads: conn_opened/conn_closed/conn_headers/conn_request_done run on libmicrohttpd's
 * threads; the sweep runs on the loop thread. One mutex guards the list.
 */
#include "kernel.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define OVER_CAP_GRACE_MS 2000 /* an over-cap connection gets this long to show its headers */

struct conn_rec {
    struct conn_rec *prev, *next;
    int fd;
    char ip[64];
    int64_t deadline; /* monotonic ms; 0 while a request is being served */
    bool over;        /* opened while its address was at its cap: answered 503 */
    bool closing;     /* shut down by us; libmicrohttpd has not noticed yet */
};

static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static conn_rec *conn_list;
static int conn_count;
static int conn_max, conn_per_ip, conn_header_ms;
static struct event *conn_sweep_ev;

static void conn_shut(conn_rec *r)
{
    if (r->closing)
        return;
    r->closing = true;
    shutdown(r->fd, SHUT_RDWR);
}

/* The waiting connection (not this one) with the nearest deadline; caller holds the lock. */
static conn_rec *conn_victim(const conn_rec *skip)
{
    conn_rec *best = NULL;
    for (conn_rec *r = conn_list; r; r = r->next)
        if (r != skip && r->deadline && !r->closing && (!best || r->deadline < best->deadline))
            best = r;
    return best;
}

conn_rec *conn_opened(int fd, const struct sockaddr *sa)
{
    conn_rec *r = xcalloc(1, sizeof *r);
    r->fd = fd;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->ip, sizeof r->ip);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->ip, sizeof r->ip);
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&conn_lock);
    int same = 0;
    if (conn_per_ip > 0)
        for (conn_rec *o = conn_list; o; o = o->next)
            same += !o->over && !o->closing && !strcmp(o->ip, r->ip);
    r->over = conn_per_ip > 0 && same >= conn_per_ip;
    r->deadline = now + (r->over && conn_header_ms > OVER_CAP_GRACE_MS ? OVER_CAP_GRACE_MS : conn_header_ms);
    r->next = conn_list;
    if (conn_list)
        conn_list->prev = r;
    conn_list = r;
    conn_count++;
    int headroom = conn_max / 10 > 8 ? conn_max / 10 : 8;
    if (conn_max > 0 && conn_count > conn_max - headroom) {
        conn_rec *v = conn_victim(r);
        if (v)
            conn_shut(v);
    }
    pthread_mutex_unlock(&conn_lock);
    if (r->over)
        log_msg(LOG_DEBUG, "http", "%s holds %d connections already (the cap): the next one gets 503", r->ip, same);
    return r;
}

void conn_closed(conn_rec *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&conn_lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        conn_list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    conn_count--;
    pthread_mutex_unlock(&conn_lock);
    free(r);
}

bool conn_headers(conn_rec *r)
{
    if (!r)
        return false;
    pthread_mutex_lock(&conn_lock);
    r->deadline = 0;
    bool over = r->over;
    pthread_mutex_unlock(&conn_lock);
    return over;
}

void conn_request_done(conn_rec *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&conn_lock);
    r->deadline = now_mono_ms() + conn_header_ms;
    pthread_mutex_unlock(&conn_lock);
}

int conn_limit_per_ip(void) { return conn_per_ip; }

int conn_open(void)
{
    pthread_mutex_lock(&conn_lock);
    int n = conn_count;
    pthread_mutex_unlock(&conn_lock);
    return n;
}

static void conn_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    int64_t now = now_mono_ms();
    int n = 0;
    pthread_mutex_lock(&conn_lock);
    for (conn_rec *r = conn_list; r; r = r->next)
        if (r->deadline && r->deadline <= now && !r->closing) {
            conn_shut(r);
            n++;
        }
    pthread_mutex_unlock(&conn_lock);
    if (n)
        log_msg(LOG_DEBUG, "http", "closed %d connections that did not send their headers in time", n);
}

void conn_start(int max, int per_ip, int header_timeout_s)
{
    conn_max = max;
    conn_per_ip = per_ip;
    conn_header_ms = header_timeout_s * 1000;
    conn_sweep_ev = event_new(main_loop(), -1, EV_PERSIST, conn_sweep, NULL);
    struct timeval tv = {0, 250 * 1000};
    event_add(conn_sweep_ev, &tv);
}

void conn_stop(void)
{
    if (conn_sweep_ev) {
        event_free(conn_sweep_ev);
        conn_sweep_ev = NULL;
    }
}
