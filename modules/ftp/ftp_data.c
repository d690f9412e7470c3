/*
 * modules/ftp/ftp_data.c — a session's data connection and the end of a transfer: PASV/EPSV
 * listeners and PORT/EPRT connects (only to and from the client's own address), wrapping
 * the socket in TLS for PROT P (session reuse enforced), running it once both the command
 * and the connection are there, lingering after a download so the last bytes are not cut,
 * and xfer_end, which closes everything a transfer held and answers once.
 *
 * Threads: the loop thread only. The file bytes themselves are moved by ftp_io.c's jobs;
 * this file wires the socket's callbacks to them.
 */
#include "ftp.h"
#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void data_run(sess *s);

/* ------------------------------------------------------ data connection --- */

void data_linger_free(sess *s)
{
    if (s->linger) {
        bufferevent_free(s->linger);
        s->linger = NULL;
    }
}

static void linger_read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void linger_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what;
    data_linger_free(arg);
}

/* A download is complete: end our side (close_notify, FIN) and close only once the client
 * has closed too, so unread bytes on our side never turn the close into a reset that
 * could cut the last bytes of the file. */
void data_linger(sess *s)
{
    data_linger_free(s);
    struct bufferevent *b = s->data;
    s->data = NULL;
    s->data_fd = -1; /* the lingering bufferevent owns the socket now */
    SSL *ssl = bufferevent_openssl_get_ssl(b);
    if (ssl)
        SSL_shutdown(ssl);
    shutdown(bufferevent_getfd(b), SHUT_WR);
    bufferevent_setcb(b, linger_read_cb, NULL, linger_event_cb, s);
    struct timeval tv = {10, 0};
    bufferevent_set_timeouts(b, &tv, NULL);
    bufferevent_disable(b, EV_WRITE);
    bufferevent_enable(b, EV_READ);
    s->linger = b;
}

void data_close(sess *s)
{
    if (s->pasv) {
        evconnlistener_free(s->pasv);
        s->pasv = NULL;
    }
    if (s->connecting) {
        evutil_socket_t fd = event_get_fd(s->connecting);
        event_free(s->connecting);
        s->connecting = NULL;
        evutil_closesocket(fd);
    }
    ev_clear(&s->rdev);
    if (s->inbuf) {
        evbuffer_free(s->inbuf);
        s->inbuf = NULL;
    }
    if (s->data) {
        SSL *ssl = bufferevent_openssl_get_ssl(s->data);
        if (ssl) /* a close_notify, so the client sees a clean end of the stream */
            SSL_shutdown(ssl);
        bufferevent_free(s->data);
        s->data = NULL;
    } else if (s->data_fd >= 0) {
        evutil_closesocket(s->data_fd);
    }
    s->data_fd = -1;
    s->have_port = false;
}

/* End the transfer: close the data connection and the file handles, answer once. */
void xfer_end(sess *s, int code, const char *msg)
{
    ftp_srv *f = s->srv;
    io_detach(s);
    data_close(s);
    if (s->listing) {
        evbuffer_free(s->listing);
        s->listing = NULL;
    }
    list_stop(s);
    if (s->rd) {
        f->api->file_close(s->rd);
        s->rd = NULL;
    }
    if (s->old) {
        f->api->file_close(s->old);
        s->old = NULL;
    }
    if (s->wr) {
        if (code == 226) {
            mb_err e = {0};
            mb_file_writer *w = s->wr;
            s->wr = NULL;
            if (f->api->file_write_commit(w, NULL, NULL, &e)) {
                s->xkind = X_NONE;
                reply_err(s, &e);
                return;
            }
        } else {
            f->api->file_write_abort(s->wr);
            s->wr = NULL;
        }
    }
    s->xkind = X_NONE;
    s->xstarted = s->xeof = s->in_eof = false;
    free(s->deferred_what);
    s->deferred_what = NULL;
    s->rest = 0;
    if (code)
        reply(s, code, "%s", msg);
}

void xfer_fail(sess *s, const mb_err *e)
{
    xfer_end(s, s->srv->api->err_ftp_reply(e->code), e->msg);
}

static void data_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    sess_idle_reset(s);
    io_stor_kick(s);
}

static void data_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    sess_idle_reset(s);
    if (s->xkind == X_RETR)
        io_retr_fill(s);
    else if (s->xkind == X_LIST && evbuffer_get_length(bufferevent_get_output(s->data)) == 0) {
        if (list_more(s, bufferevent_get_output(s->data)))
            return; /* the next page of a big folder is on its way */
        data_linger(s);
        xfer_end(s, 226, "Transfer complete");
    }
}

static void data_event_cb(struct bufferevent *bev, short what, void *arg)
{
    sess *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl && s->srv->require_reuse && !SSL_session_reused(ssl)) {
            xfer_end(s, 522, "TLS session of the data connection must reuse the control connection's session");
            return;
        }
        data_run(s);
        return;
    }
    if (what & BEV_EVENT_EOF && s->xkind == X_STOR && s->wr) {
        s->in_eof = true;
        io_stor_kick(s);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        xfer_end(s, 426, "Data connection closed; transfer aborted");
}

/* Both the command and the connection are there: move bytes. */
static void data_run(sess *s)
{
    s->xstarted = true;
    bufferevent_setcb(s->data, data_read_cb, data_write_cb, data_event_cb, s);
    if (s->xkind == X_RETR) {
        bufferevent_setwatermark(s->data, EV_WRITE, io_retr_ahead(s) / 2, 0);
        bufferevent_enable(s->data, EV_WRITE);
        bufferevent_disable(s->data, EV_READ);
        io_retr_fill(s);
    } else if (s->xkind == X_LIST) {
        bufferevent_enable(s->data, EV_WRITE);
        if (evbuffer_get_length(bufferevent_get_output(s->data)) == 0 && !list_more(s, bufferevent_get_output(s->data)))
            xfer_end(s, 226, "Transfer complete");
    } else if (s->xkind == X_STOR && !s->prot_p && !s->rate) {
        /* TLS and the bandwidth cap need the bufferevent; a plain upload reads directly. */
        s->inbuf = evbuffer_new();
        s->rdev = s->inbuf ? event_new(s->srv->base, bufferevent_getfd(s->data), EV_READ | EV_PERSIST,
                                       io_stor_recv_cb, s)
                           : NULL;
        if (!s->rdev) {
            xfer_end(s, 451, "out of memory");
            return;
        }
        bufferevent_disable(s->data, EV_READ);
        event_add(s->rdev, NULL);
    } else if (s->xkind == X_STOR) {
        bufferevent_setwatermark(s->data, EV_READ, 0, INBUF_HIGH);
        bufferevent_enable(s->data, EV_READ);
    }
}

/* TLS handshakes and delayed ACKs: a client such as lftp (GnuTLS) writes its TLS 1.3
 * ChangeCipherSpec and its Finished in two writes on a data socket with Nagle on, so the
 * Finished waits until our ACK of the first; having just sent our own flight, our side is in
 * "ping-pong" mode and delays that ACK by 40 ms: 40 ms per file, most of an FTPS transfer of a
 * small file (strace of lftp: Finished written, the file's first record 41-58 ms later). Each
 * time the handshake stops to wait for the client, and once it is done (an upload's first
 * bytes follow the Finished the same way), ACK what the client sends at once. */
static void tls_quickack_cb(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (!(where & SSL_CB_ACCEPT_EXIT))
        return;
    int fd = SSL_get_fd(ssl), one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

/* The socket is connected: wrap it (TLS when PROT P) and run or wait for the handshake. */
static void data_begin(sess *s, struct evbuffer *listing)
{
    ftp_srv *f = s->srv;
    if (s->prot_p) {
        SSL *ssl = SSL_new(f->ctx);
        /* No TLS 1.3 session tickets on data connections: an uploading client never reads
         * them, and a socket closed with unread bytes sends a reset that destroys the last
         * bytes of the upload in flight. Resumption uses the control connection's tickets. */
        if (ssl) {
            SSL_set_num_tickets(ssl, 0);
            SSL_set_info_callback(ssl, tls_quickack_cb);
        }
        s->data = bufferevent_openssl_socket_new(f->base, s->data_fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                 BEV_OPT_CLOSE_ON_FREE);
    } else {
        s->data = bufferevent_socket_new(f->base, s->data_fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!s->data) {
        if (listing)
            evbuffer_free(listing);
        xfer_end(s, 425, "Cannot open the data connection");
        return;
    }
    s->data_fd = -1; /* owned by the bufferevent now */
    /* A download may end without the client's close_notify; an upload may not: without it a
     * reset or a cut connection would look like the end of the file and be committed. */
    if (s->prot_p && s->xkind != X_STOR)
        bufferevent_openssl_set_allow_dirty_shutdown(s->data, 1);
    /* libevent moves at most 16 KiB per read or write callback by default: a loop turn per
     * 16 KiB. A slice per turn keeps bulk transfers cheap and still bounded. */
    bufferevent_set_max_single_read(s->data, SLICE);
    bufferevent_set_max_single_write(s->data, SLICE);
    if (f->bandwidth > 0 && s->rate)
        bufferevent_set_rate_limit(s->data, s->rate);
    if (listing) {
        evbuffer_add_buffer(bufferevent_get_output(s->data), listing);
        evbuffer_free(listing);
    }
    bufferevent_setcb(s->data, NULL, NULL, data_event_cb, s);
    if (s->prot_p)
        bufferevent_enable(s->data, EV_READ | EV_WRITE); /* drives the handshake */
    else
        data_run(s);
}

/* Replies and small files go out at once: with Nagle, a 226 written while the 150 is still
 * unacknowledged waits for the client's delayed ACK (40 ms per transfer on Linux). */
void data_nodelay(evutil_socket_t fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool data_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
}

static struct evbuffer *pending_listing(sess *s);

static void pasv_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l, (void)len;
    sess *s = arg;
    /* Only the client itself may connect: no stealing of another user's data. */
    if (!data_same_host(sa, (struct sockaddr *)&s->peer)) {
        evutil_closesocket(fd);
        return;
    }
    evconnlistener_free(s->pasv);
    s->pasv = NULL;
    if (s->data_fd >= 0)
        evutil_closesocket(s->data_fd);
    s->data_fd = fd;
    evutil_make_socket_nonblocking(fd);
    data_nodelay(fd);
    if (s->xkind != X_NONE && !s->xstarted && !s->data && !s->io) /* not while a resume copies */
        data_begin(s, pending_listing(s));
}

static void port_connected_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    sess *s = arg;
    event_free(s->connecting);
    s->connecting = NULL;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
        evutil_closesocket(fd);
        xfer_end(s, 425, "Cannot connect to the address given in PORT/EPRT");
        return;
    }
    s->data_fd = fd;
    data_nodelay(fd);
    data_begin(s, pending_listing(s));
}

/* The listing waits in the session until the data connection exists; the caller owns it. */
static struct evbuffer *pending_listing(sess *s)
{
    struct evbuffer *b = s->listing;
    s->listing = NULL;
    return b;
}

/* Open a passive listener on the control connection's local address, in the range. */
int data_pasv_open(sess *s, int *port)
{
    ftp_srv *f = s->srv;
    data_close(s);
    int span = f->pasv_max - f->pasv_min + 1;
    for (int i = 0; i < span; i++) {
        int p = f->pasv_min + (f->pasv_next++ % span);
        struct sockaddr_storage a = s->local;
        if (a.ss_family == AF_INET)
            ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)p);
        else
            ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)p);
        /* REUSEABLE: a download's data connection ends with our FIN first, which leaves its
         * port in TIME_WAIT for a minute; without SO_REUSEADDR a busy session would run
         * out of passive ports after one range's worth of small files. */
        s->pasv = evconnlistener_new_bind(f->base, pasv_accept_cb, s,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE, 1,
                                          (struct sockaddr *)&a,
                                          a.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                                 : sizeof(struct sockaddr_in6));
        if (s->pasv) {
            *port = p;
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ transfers --- */

/* Start RETR/STOR/APPE/STOU/LIST once the file side is ready; the connection may follow. */
void xfer_start(sess *s, int kind, struct evbuffer *listing, const char *what)
{
    if (kind == X_STOR && s->old && !s->io) {
        /* A resumed upload: a job copies the old bytes first, then io_done comes back here
         * to open the transfer. */
        free(s->deferred_what);
        s->deferred_what = strdup(what);
        s->xkind = kind; /* so a disconnect during the copy cleans up the transfer */
        io_copy(s, s->copy_off, s->copy_end);
        return;
    }
    if (!s->pasv && s->data_fd < 0 && !s->have_port) {
        if (listing)
            evbuffer_free(listing);
        xfer_end(s, 0, "");
        reply(s, 425, "Use PORT, EPRT, PASV or EPSV first");
        return;
    }
    s->xkind = kind;
    s->xbytes = 0;
    s->listing = listing; /* parked until the connection exists */
    if (!strncmp(what, "FILE: ", 6)) /* STOU: RFC 1123 4.1.2.9 names the file in the 150 line itself */
        reply(s, 150, "%s", what);
    else
        reply(s, 150, "Opening %s mode data connection for %s", s->prot_p ? "TLS" : "BINARY", what);
    if (s->have_port) {
        int fd = socket(s->port_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        socklen_t al = s->port_addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        if (fd < 0 || (connect(fd, (struct sockaddr *)&s->port_addr, al) && errno != EINPROGRESS)) {
            if (fd >= 0)
                close(fd);
            xfer_end(s, 425, "Cannot connect to the address given in PORT/EPRT");
            return;
        }
        s->have_port = false;
        s->connecting = event_new(s->srv->base, fd, EV_WRITE, port_connected_cb, s);
        struct timeval tv = {30, 0};
        event_add(s->connecting, &tv);
        return;
    }
    if (s->data_fd >= 0)
        data_begin(s, pending_listing(s));
}
