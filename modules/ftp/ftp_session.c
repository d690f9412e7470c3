/*
 * modules/ftp/ftp_session.c — an FTP session's control connection: accepting it (with the
 * limits on sessions in all, per address and before login), reading command lines (CRLF
 * framing, line-break refusals, the length cap), replies, the idle and login timeouts,
 * QUIT's last flush, AUTH TLS on the control connection, and freeing the session.
 *
 * Threads: the loop thread only. The session list and counts in ftp_srv are touched only
 * here and in ftp_login.c (per-user counts), all on the loop. A session with a password
 * check or an I/O job in flight is only marked dead by sess_close and freed when the last
 * job comes back (login_done, io_done call sess_close again).
 */
#include "ftp.h"
#include <arpa/inet.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg);
static void ctl_write_cb(struct bufferevent *bev, void *arg);

/* ------------------------------------------------------------ replies --- */

void reply(sess *s, int code, const char *fmt, ...)
{
    if (!s->ctl)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++) /* a reply is one line: names with CR/LF cannot forge more */
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    evbuffer_add_printf(bufferevent_get_output(s->ctl), "%d %s\r\n", code, buf);
}

/* The kernel's reply for a failed call, with its sentence. */
void reply_err(sess *s, const mb_err *e)
{
    reply(s, s->srv->api->err_ftp_reply(e->code), "%s", e->msg[0] ? e->msg : "failed");
}

void sess_idle_reset(sess *s)
{
    struct timeval tv = {s->srv->idle_timeout, 0};
    evtimer_add(s->idle, &tv);
}

/* ------------------------------------------------------ path and stores --- */

/* Resolve arg to (store id, path inside it). *sid 0 with *rest "" is the root; a store
 * name that is not the user's answers MB_ENOENT like any missing name. */
int sess_resolve(sess *s, const char *arg, char *vpath, uint64_t *sid, const char **rest, mb_err *e)
{
    const mb_api *api = s->srv->api;
    if (ftpu_path(s->cwd, arg, vpath, FTPU_PATH_MAX + 1))
        return api->err_set(e, MB_EINVAL, "path too long");
    char store[1024];
    if (ftpu_split(vpath, store, sizeof store, rest))
        return api->err_set(e, MB_EINVAL, "path too long");
    *sid = 0;
    if (!store[0])
        return 0;
    json_t *arr;
    int rc = api->store_list(&s->user, &arr, e);
    if (rc)
        return rc;
    size_t i;
    json_t *st;
    json_array_foreach(arr, i, st)
    {
        const char *n = json_string_value(json_object_get(st, "name"));
        if (n && !strcmp(n, store)) {
            *sid = (uint64_t)json_integer_value(json_object_get(st, "id"));
            break;
        }
    }
    json_decref(arr);
    if (!*sid)
        return api->err_set(e, MB_ENOENT, "no such file or folder");
    return 0;
}


/* ------------------------------------------------------------- sessions --- */

void sess_close(sess *s)
{
    ftp_srv *f = s->srv;
    if (s->xkind != X_NONE)
        xfer_end(s, 0, "");
    else
        data_close(s);
    data_linger_free(s);
    list_stop(s);
    if (s->ctl) {
        bufferevent_free(s->ctl);
        s->ctl = NULL;
    }
    ev_clear(&s->idle);
    ev_clear(&s->login_ev);
    if (!s->dead) {
        for (sess **pp = &f->sessions; *pp; pp = &(*pp)->next)
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        f->nsessions--;
        f->api->metric_add(MB_METRIC_FTP_SESSIONS, -1);
        s->dead = true;
    }
    if (s->jobs || s->iojobs) /* login_done or io_done frees it */
        return;
    if (s->io_retry)
        event_free(s->io_retry);
    if (s->rate)
        ev_token_bucket_cfg_free(s->rate);
    free(s);
}

/* Everything written to the control connection has left, including the encrypted bytes
 * an AUTH TLS filter holds in the plain bufferevent under it. */
static bool ctl_flushed(sess *s)
{
    struct bufferevent *u = bufferevent_get_underlying(s->ctl);
    return evbuffer_get_length(bufferevent_get_output(s->ctl)) == 0 &&
           (!u || evbuffer_get_length(bufferevent_get_output(u)) == 0);
}

/* Close a quitting session once its last reply is out; re-check shortly otherwise. */
void sess_quit_check(sess *s)
{
    /* A client that reads nothing (or never finishes its TLS handshake, so nothing can be
     * written) does not keep its session: the last reply gets QUIT_FLUSH seconds. */
    int64_t now = time(NULL);
    if (!s->quit_by)
        s->quit_by = now + QUIT_FLUSH;
    if (ctl_flushed(s) || now >= s->quit_by) {
        sess_close(s);
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(s->idle, &tv);
}

enum { LINE_NONE, LINE_CRLF, LINE_BARE_LF };

/* How the first line in the buffer ends: RFC 959 ends a command with CRLF and nothing else. */
static int line_end(struct evbuffer *in)
{
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    if (lf.pos < 0)
        return LINE_NONE;
    char before = 0;
    struct evbuffer_ptr p;
    if (lf.pos > 0 && evbuffer_ptr_set(in, &p, (size_t)lf.pos - 1, EVBUFFER_PTR_SET) == 0)
        evbuffer_copyout_from(in, &p, &before, 1);
    return before == '\r' ? LINE_CRLF : LINE_BARE_LF;
}

static void refuse_line_break(sess *s)
{
    s->rnfr[0] = 0;
    reply(s, 553, "Commands end with CRLF; names with a line break (CR or LF) are not allowed; nothing was done");
}

void sess_read_cb(struct bufferevent *bev, void *arg)
{
    sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    sess_idle_reset(s);
    while (!s->quitting && !s->jobs && bev == s->ctl) {
        int ends = line_end(in);
        if (ends == LINE_NONE)
            break;
        if (ends == LINE_BARE_LF) {
            /* A line break inside a command (a file named "a<LF>DELE x"): everything up to
             * the CRLF is one refused command, whose pieces never run. Each piece gets its
             * own 553, because a client such as lftp sends one LF-ended piece at a time and
             * waits for a reply before it sends the next (the part after the LF). */
            struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
            evbuffer_drain(in, lf.pos + 1);
            refuse_line_break(s);
            s->lf_tail = true;
            continue;
        }
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
        if (!line)
            break;
        int l = ftpu_clean_line(line, n);
        if (s->lf_tail || (l > 0 && memchr(line, '\r', (size_t)l)))
            refuse_line_break(s); /* the last piece of a refused command, or a bare CR */
        else if (l < 0)
            reply(s, 501, "NUL bytes are not allowed in commands");
        else if (l > 0)
            cmd_dispatch(s, line);
        s->lf_tail = false;
        free(line);
        if (bev != s->ctl) /* AUTH TLS swapped the connection: the rest arrives encrypted */
            break;
    }
    if (bev == s->ctl && evbuffer_get_length(in) > LINE_MAX_BYTES) {
        reply(s, 500, "Command line too long");
        s->quitting = true;
    }
    if (s->quitting) {
        bufferevent_disable(s->ctl, EV_READ);
        sess_quit_check(s);
    }
}

static void ctl_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    if (s->quitting)
        sess_quit_check(s);
}

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    sess *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        sess_close(s);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    sess *s = arg;
    if (s->jobs) {
        sess_idle_reset(s);
        return;
    }
    if (s->quitting) {
        sess_quit_check(s);
        return;
    }
    reply(s, 421, "Idle timeout; closing the connection");
    if (s->xkind != X_NONE)
        xfer_end(s, 0, "");
    s->quitting = true;
    bufferevent_disable(s->ctl, EV_READ);
    sess_quit_check(s);
}

/* A connection that has not logged in within login_timeout seconds is closed: connections
 * that never log in must not hold session slots until the idle timeout. A password check
 * in flight gets its answer first. */
static void login_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    sess *s = arg;
    if (s->logged_in || s->quitting)
        return;
    if (s->jobs) {
        struct timeval tv = {1, 0};
        evtimer_add(s->login_ev, &tv);
        return;
    }
    reply(s, 421, "Login timeout: log in within %d seconds; closing the connection", s->srv->login_timeout);
    s->quitting = true;
    bufferevent_disable(s->ctl, EV_READ);
    sess_quit_check(s);
}

void sess_login_deadline(sess *s)
{
    struct timeval tv = {s->srv->login_timeout, 0};
    evtimer_add(s->login_ev, &tv);
}

typedef struct waiting {
    sess *s;
    int age; /* place in the session list counted from its newest end: larger is older */
} waiting;

static int waiting_cmp(const void *a, const void *b)
{
    const waiting *x = a, *y = b;
    int c = strcmp(x->s->ip, y->s->ip);
    return c ? c : (x->age > y->age) - (x->age < y->age);
}

/* Room for a new connection when the sessions in all (max_sessions) or those not logged in
 * (max_sessions_before_login) are at their limit: a session that has not logged in goes,
 * never one that has. The victim is the oldest such session of the address that holds the
 * most of them, so a flood from a few addresses evicts its own connections and not the one
 * of a user who is about to log in. Sorting by address keeps this O(n log n) however large
 * the limits are set. false: nobody can go (every session is logged in or checking a
 * password). */
static bool evict_prelogin(ftp_srv *f)
{
    waiting *w = malloc(sizeof *w * (size_t)(f->nsessions > 0 ? f->nsessions : 1));
    if (!w)
        return false;
    int n = 0, age = 0;
    for (sess *o = f->sessions; o; o = o->next, age++)
        if (!o->logged_in && !o->jobs && !o->dead && n < f->nsessions)
            w[n++] = (waiting){o, age};
    qsort(w, (size_t)n, sizeof *w, waiting_cmp);
    sess *victim = NULL;
    int most = 0;
    for (int i = 0, run = 1; i < n; i++, run++) {
        if (i + 1 < n && !strcmp(w[i].s->ip, w[i + 1].s->ip))
            continue; /* w[i] ends its address's run: the oldest of it, run long */
        if (run > most) {
            most = run;
            victim = w[i].s;
        }
        run = 0;
    }
    free(w);
    if (!victim)
        return false;
    f->api->log(f->self, MB_LOG_INFO, "closing a connection from %s that had not logged in, to make room", victim->ip);
    reply(victim, 421, "Too many connections that have not logged in; closing this one");
    if (victim->ctl)
        sess_flush_now(victim);
    sess_close(victim);
    return true;
}

static bool prelogin_full(ftp_srv *f)
{
    int n = 0;
    for (sess *o = f->sessions; o; o = o->next)
        n += !o->logged_in && !o->dead;
    return n >= f->max_prelogin;
}

/* A new control bufferevent (accepted, or the AUTH TLS filter) gets the session's callbacks. */
static void ctl_setup(sess *s)
{
    bufferevent_setcb(s->ctl, sess_read_cb, ctl_write_cb, ctl_event_cb, s);
    bufferevent_enable(s->ctl, EV_READ | EV_WRITE);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

void sess_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    ftp_srv *f = arg;
    char ip[64] = "";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);
    int per_ip = 0;
    for (sess *o = f->sessions; o; o = o->next)
        per_ip += !strcmp(o->ip, ip);
    bool room = f->per_ip <= 0 || per_ip < f->per_ip;
    if (room && (f->nsessions >= f->max_sessions || prelogin_full(f)))
        room = evict_prelogin(f);
    if (!room) {
        static const char msg[] = "421 Too many connections; try again later\r\n";
        if (send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            /* the client is gone already; nothing to tell it */
        }
        evutil_closesocket(fd);
        return;
    }
    sess *s = calloc(1, sizeof *s);
    if (!s) {
        evutil_closesocket(fd);
        return;
    }
    s->srv = f;
    s->data_fd = -1;
    data_nodelay(fd);
    memcpy(&s->peer, sa, (size_t)len < sizeof s->peer ? (size_t)len : sizeof s->peer);
    socklen_t ll = sizeof s->local;
    getsockname(fd, (struct sockaddr *)&s->local, &ll);
    snprintf(s->ip, sizeof s->ip, "%s", ip);
    s->loopback = is_loopback(sa);
    strcpy(s->cwd, "/");
    s->implicit = l == f->ilst;
    if (s->implicit) {
        s->ctl = bufferevent_openssl_socket_new(f->base, fd, SSL_new(f->ctx), BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        s->tls = true;
    } else {
        s->ctl = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!s->ctl) {
        evutil_closesocket(fd);
        free(s);
        return;
    }
    if (f->bandwidth > 0)
        s->rate = ev_token_bucket_cfg_new((size_t)f->bandwidth, (size_t)f->bandwidth, (size_t)f->bandwidth,
                                          (size_t)f->bandwidth, NULL);
    s->idle = evtimer_new(f->base, idle_cb, s);
    s->login_ev = evtimer_new(f->base, login_cb, s);
    s->io_retry = evtimer_new(f->base, io_retry_cb, s);
    s->next = f->sessions;
    f->sessions = s;
    f->nsessions++;
    f->api->metric_add(MB_METRIC_FTP_SESSIONS, 1);
    ctl_setup(s);
    sess_idle_reset(s);
    sess_login_deadline(s);
    reply(s, 220, "MByte FTP server ready");
}


/* AUTH TLS: the control connection continues inside a TLS filter (the reply 234 went out
 * in clear first); a failure ends the session. */
void sess_tls_upgrade(sess *s)
{
    ftp_srv *f = s->srv;
    SSL *ssl = SSL_new(f->ctx);
    struct bufferevent *b = bufferevent_openssl_filter_new(f->base, s->ctl, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                           BEV_OPT_CLOSE_ON_FREE);
    if (!b) {
        SSL_free(ssl);
        s->quitting = true;
        return;
    }
    s->ctl = b;
    s->tls = true;
    ctl_setup(s); /* the filter needs the session's callbacks */
}


/* The last words of a session closed by fini: the session is freed before the loop turns
 * again, so what its control connection holds is written to the socket now (best effort,
 * never blocking; a socket bufferevent has no flush of its own). */
void sess_flush_now(sess *s)
{
    struct bufferevent *b = s->ctl;
    SSL *ssl = bufferevent_openssl_get_ssl(b);
    struct bufferevent *u = bufferevent_get_underlying(b);
    if (ssl && !u) { /* implicit TLS: the SSL object writes to the socket itself */
        struct evbuffer *o = bufferevent_get_output(b);
        size_t n = evbuffer_get_length(o);
        if (n && SSL_write(ssl, evbuffer_pullup(o, -1), (int)n) <= 0)
            ERR_clear_error();
        return;
    }
    if (u) { /* AUTH TLS: encrypt into the socket bufferevent under the filter */
        bufferevent_flush(b, EV_WRITE, BEV_FLUSH);
        b = u;
    }
    struct evbuffer *o = bufferevent_get_output(b);
    evbuffer_unfreeze(o, 1); /* the bufferevent keeps the front for itself; it is freed next */
    evbuffer_write(o, bufferevent_getfd(b));
}

