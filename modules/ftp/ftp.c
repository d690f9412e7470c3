/*
 * modules/ftp — an FTP/FTPS server on the kernel's libevent loop (no thread per session).
 *
 * Doors: RFC 959 core, RFC 2389 FEAT/OPTS (UTF8), RFC 2428 EPSV/EPRT (IPv6), RFC 3659
 * MLSD/MLST/SIZE/MDTM/REST STREAM, RFC 4217 explicit FTPS (AUTH TLS, PBSZ, PROT P, TLS on
 * the data channel with session reuse required by default) and an optional implicit-TLS
 * port. docs/ftp.md lists every command and reply.
 *
 * The tree a user sees: "/" lists their stores as folders (by store name); "/<store>/..."
 * is the store. Every file operation goes through the mb_api file calls, so quotas, trash,
 * versioning and every other filter apply exactly as over HTTP; a refusal's MB_E* code is
 * turned into the FTP reply by the kernel's one error table (api->err_ftp_reply).
 *
 * Threads and blocking: sessions live on the loop thread — control and data connections
 * are bufferevents (OpenSSL bufferevents for TLS). Nothing that blocks runs there: file
 * bytes (reading and verifying chunks, chunking, hashing, writing and fsyncing them, the
 * commit) and the argon2id password check run on workers through api->run_blocking and
 * answer back on the loop. A transfer has at most one I/O job in flight (an iojob, up to
 * IO_JOB bytes); while it runs, the loop keeps the network side moving (sending what the
 * previous job read, or reading what the next job will write), so disk and network work
 * overlap. Memory per transfer is bounded: OUTBUF_HIGH queued for sending plus one job,
 * or INBUF_HIGH received plus one job. A job owns the reader/writer it was given while it
 * runs; a transfer that ends meanwhile (ABOR, a cut connection, fini) orphans the job,
 * and the job's done callback closes what it held (the kernel keeps the module loaded
 * until then).
 *
 * Lifetime: the module's state owns the listeners, the TLS context and every session;
 * fini closes them all (sessions get 421). A session with a password check or an I/O job
 * in flight is only marked dead and freed when the job comes back (the kernel keeps the
 * module loaded until then). Nothing lives in static variables, so a reload's two copies are
 * independent (listeners use SO_REUSEPORT so the new copy can bind before the old closes).
 *
 * Keys (docs/storage.md): m/ftp/pw/<uid 16 hex>/<id> = {"v":1,"id","name","hash","created"}
 * — per-user FTP app passwords, argon2id-hashed.
 */
#include "mbyte.h"
#include "ftp_util.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <ctype.h>
#include <time.h>
#include <unistd.h>

#define FTP_VERSION "1.0.0"
#define SLICE (256 * 1024)              /* one read() from a file, one socket read or write */
#define IO_JOB (1024 * 1024)            /* bytes one worker job reads or writes */
#define OUTBUF_HIGH (2 * 1024 * 1024)   /* RETR: queued for sending before the next job starts */
#define SENDFILE_AHEAD (32 * 1024 * 1024) /* the same when what is queued is chunk files */
#define INBUF_HIGH (2 * 1024 * 1024)    /* STOR: received while a job writes, before reading pauses */
#define LINE_MAX_BYTES 8192
#define QUIT_FLUSH 10 /* seconds a closing session waits for its last reply to leave */

typedef struct ftp_srv ftp_srv;
typedef struct sess sess;
typedef struct iojob iojob;

enum { X_NONE, X_RETR, X_STOR, X_LIST };

struct sess {
    ftp_srv *srv;
    sess *next;
    struct bufferevent *ctl;
    struct event *idle;
    struct event *login_ev; /* the deadline for logging in (login_timeout) */
    struct sockaddr_storage peer, local;
    char ip[64];
    bool loopback, tls, implicit, dead, quitting;
    int64_t quit_by; /* quitting: closed at this time even if the last reply is still queued */
    int jobs;   /* password checks in flight */
    int iojobs; /* I/O jobs in flight (0 or 1), orphaned ones included */
    /* login */
    char uname[128], namebuf[128];
    mb_user user;
    bool logged_in;
    int failures;
    /* state */
    char cwd[FTPU_PATH_MAX + 1];
    char rnfr[FTPU_PATH_MAX + 1];
    bool prot_p, pbsz, utf8;
    bool lf_tail; /* a command with a bare LF was refused: the rest of its line is refused too */
    uint64_t rest;
    /* data connection */
    struct evconnlistener *pasv;
    struct event *connecting;
    struct sockaddr_storage port_addr;
    bool have_port;
    int data_fd;
    struct bufferevent *data;
    struct bufferevent *linger; /* a finished download's connection, closed once the client closes */
    /* transfer */
    int xkind;
    bool xstarted, xeof, in_eof; /* in_eof: an upload's data connection has ended */
    char *deferred_what; /* a resumed upload waits for its old bytes before the 150 reply */
    mb_file_reader *rd;
    uint64_t roff, rsize;
    mb_file_writer *wr;
    uint64_t sid;
    char xpath[FTPU_PATH_MAX + 1];
    uint64_t copy_off, copy_end; /* resume: old bytes still to copy into wr */
    mb_file_reader *old;
    iojob *io;              /* the transfer's job in flight or waiting for a worker */
    struct event *rdev;     /* a plain upload's socket, read without the bufferevent ... */
    struct evbuffer *inbuf; /* ... into this */
    struct event *io_retry; /* a job the kernel had no worker for is tried again */
    struct evbuffer *listing; /* LIST/NLST/MLSD output waiting for the data connection */
    uint64_t xbytes;
    struct ev_token_bucket_cfg *rate;
};

struct ftp_srv {
    mb_module *self;
    const mb_api *api;
    struct event_base *base;
    struct evconnlistener *lst, *ilst;
    SSL_CTX *ctx;
    sess *sessions;
    int nsessions;
    char listen[256], implicit_listen[256], pasv_address[64];
    int pasv_min, pasv_max, pasv_next;
    bool require_tls, require_reuse;
    int max_sessions, per_user, per_ip, idle_timeout, max_failures, lockout;
    int max_prelogin, login_timeout; /* connections not logged in: how many, for how long */
    int64_t bandwidth;
};

static void reply(sess *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sess_close(sess *s);
static void xfer_end(sess *s, int code, const char *msg);
static void data_run(sess *s);
static void io_detach(sess *s);
static void start_xfer(sess *s, int kind, struct evbuffer *listing, const char *what);
static void ctl_read_cb(struct bufferevent *bev, void *arg);
static void quit_check(sess *s);
static void login_deadline(sess *s);

/* ------------------------------------------------------------ replies --- */

static void reply(sess *s, int code, const char *fmt, ...)
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
static void reply_err(sess *s, const mb_err *e)
{
    reply(s, s->srv->api->err_ftp_reply(e->code), "%s", e->msg[0] ? e->msg : "failed");
}

static void idle_reset(sess *s)
{
    struct timeval tv = {s->srv->idle_timeout, 0};
    evtimer_add(s->idle, &tv);
}

/* ------------------------------------------------------ path and stores --- */

/* Resolve arg to (store id, path inside it). *sid 0 with *rest "" is the root; a store
 * name that is not the user's answers MB_ENOENT like any missing name. */
static int resolve(sess *s, const char *arg, char *vpath, uint64_t *sid, const char **rest, mb_err *e)
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

static int64_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* ------------------------------------------------------------ listings --- */

static void fmt_time(int64_t t, char *buf, size_t n, bool mlsx)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (mlsx)
        strftime(buf, n, "%Y%m%d%H%M%S", &tm);
    else if (time(NULL) - t > 180 * 86400 || t > time(NULL) + 86400)
        strftime(buf, n, "%b %e  %Y", &tm);
    else
        strftime(buf, n, "%b %e %H:%M", &tm);
}

/* One entry in the format each listing command uses. */
static void list_line(struct evbuffer *b, int kind, const char *name, bool folder, int64_t size, int64_t mtime,
                      const char *owner)
{
    if (!ftpu_name_ok(name))
        return;
    char tb[32];
    if (kind == 'N') {
        evbuffer_add_printf(b, "%s\r\n", name);
    } else if (kind == 'M' || kind == 'T') {
        fmt_time(mtime, tb, sizeof tb, true);
        evbuffer_add_printf(b, "%stype=%s;%ssize=%lld;modify=%s;perm=%s; %s\r\n", kind == 'T' ? " " : "",
                            folder ? "dir" : "file", "", (long long)size, tb, folder ? "elcmfpd" : "adfrw", name);
    } else {
        fmt_time(mtime, tb, sizeof tb, false);
        evbuffer_add_printf(b, "%s 1 %-8s %-8s %12lld %s %s\r\n", folder ? "drwxr-xr-x" : "-rw-r--r--", owner,
                            owner, (long long)size, tb, name);
    }
}

/* Fill b with the listing of arg (a folder, or one file). kind 'L' LIST, 'N' NLST, 'M' MLSD. */
static int build_list(sess *s, const char *arg, int kind, struct evbuffer *b, mb_err *e)
{
    const mb_api *api = s->srv->api;
    char vpath[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    /* ls-style options ("-la") that clients send are ignored, not taken as a name. */
    while (arg && arg[0] == '-') {
        const char *sp = strchr(arg, ' ');
        arg = sp ? sp + 1 : "";
    }
    int rc = resolve(s, arg, vpath, &sid, &rest, e);
    if (rc)
        return rc;
    if (!sid) {
        json_t *arr;
        if ((rc = api->store_list(&s->user, &arr, e)))
            return rc;
        size_t i;
        json_t *st;
        json_array_foreach(arr, i, st)
            list_line(b, kind, json_string_value(json_object_get(st, "name")), true, 0, jint(st, "created"),
                      s->user.name);
        json_decref(arr);
        return 0;
    }
    json_t *info;
    if ((rc = api->file_stat(&s->user, sid, rest, &info, e)))
        return rc;
    bool folder = !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
    if (!folder) {
        if (kind == 'M') {
            json_decref(info);
            return api->err_set(e, MB_EINVAL, "MLSD lists folders; use MLST for a file");
        }
        list_line(b, kind, kind == 'N' ? arg : json_string_value(json_object_get(info, "name")), false,
                  jint(info, "size"), jint(info, "mtime"), s->user.name);
        json_decref(info);
        return 0;
    }
    json_decref(info);
    json_t *out;
    if ((rc = api->folder_list(&s->user, sid, rest, false, &out, e)))
        return rc;
    size_t i;
    json_t *en;
    json_array_foreach(json_object_get(out, "entries"), i, en)
    {
        const char *t = json_string_value(json_object_get(en, "type"));
        list_line(b, kind, json_string_value(json_object_get(en, "name")), t && !strcmp(t, "folder"),
                  jint(en, "size"), jint(en, "mtime"), s->user.name);
    }
    json_decref(out);
    return 0;
}

/* ------------------------------------------------------ data connection --- */

static void linger_free(sess *s)
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
    linger_free(arg);
}

/* A download is complete: end our side (close_notify, FIN) and close only once the client
 * has closed too, so unread bytes on our side never turn the close into a reset that
 * could cut the last bytes of the file. */
static void data_linger(sess *s)
{
    linger_free(s);
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

static void data_close(sess *s)
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
    if (s->rdev) {
        event_free(s->rdev);
        s->rdev = NULL;
    }
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
static void xfer_end(sess *s, int code, const char *msg)
{
    ftp_srv *f = s->srv;
    io_detach(s);
    data_close(s);
    if (s->listing) {
        evbuffer_free(s->listing);
        s->listing = NULL;
    }
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

static void xfer_fail(sess *s, const mb_err *e)
{
    xfer_end(s, s->srv->api->err_ftp_reply(e->code), e->msg);
}

/* ------------------------------------------------------------ I/O jobs --- */

/* Chunk files one RETR job hands over for sendfile. 16 saved a few wakeups per GiB but made a
 * cold RETR (read from the disk) 25 % slower: the loop waited for a bigger first batch. */
#define MAX_SEGS 8
typedef struct {
    int fd;
    uint64_t off, len;
} fileseg;

struct iojob {
    sess *s;
    const mb_api *api;
    int kind;                     /* X_RETR read, X_STOR write (and commit), 'C' copy old bytes */
    atomic_bool orphan;           /* the transfer ended while the job ran: done only cleans up */
    bool commit, committed, waiting;
    bool sendfile;                /* RETR on a plain data connection, kernel with file_read_fd */
    fileseg seg[MAX_SEGS];        /* RETR: verified chunk files to send, in order */
    int nseg;
    mb_file_reader *rd;           /* lent by the session (s->rd, or s->old for a copy) */
    mb_file_writer *wr;           /* lent by the session (s->wr) */
    uint64_t off, end;            /* RETR, copy: the byte range to read */
    struct evbuffer *buf;         /* RETR: bytes read; STOR: bytes to write */
    size_t moved;
    int rc;
    mb_err e;
};

/* Worker thread: touches only the job (and the reader/writer lent to it). */
static void io_work(void *arg)
{
    iojob *j = arg;
    const mb_api *api = j->api;
    if (j->kind == X_RETR) {
        while (!j->rc && j->off < j->end && evbuffer_get_length(j->buf) < IO_JOB && !atomic_load(&j->orphan)) {
            /* The verified chunk files themselves, for sendfile: io_done adds them to the
             * socket's buffer on the loop (a buffer that drains to a socket is what makes
             * libevent use sendfile). A job sends files or copied bytes, never both. */
            if (j->sendfile && evbuffer_get_length(j->buf) == 0) {
                if (j->nseg == MAX_SEGS)
                    break;
                int fd;
                uint64_t fd_off, len;
                mb_err e = {0};
                if (api->file_read_fd(j->rd, j->off, &fd, &fd_off, &len, &e) == 0) {
                    if (len > j->end - j->off)
                        len = j->end - j->off;
                    j->seg[j->nseg++] = (fileseg){fd, fd_off, len};
                    j->off += len;
                    j->moved += len;
                    continue;
                }
                if (e.code != MB_EUNSUPP) {
                    j->rc = e.code;
                    j->e = e;
                    break;
                }
                if (j->nseg) /* the next job copies this one (an inline chunk, another backend) */
                    break;
            }
            struct evbuffer_iovec v;
            if (evbuffer_reserve_space(j->buf, SLICE, &v, 1) < 1) {
                j->rc = api->err_set(&j->e, MB_ENOMEM, "out of memory");
                break;
            }
            uint64_t want = j->end - j->off < v.iov_len ? j->end - j->off : v.iov_len;
            int64_t n = api->file_read(j->rd, j->off, v.iov_base, (size_t)want, &j->e);
            v.iov_len = n > 0 ? (size_t)n : 0;
            evbuffer_commit_space(j->buf, &v, 1);
            if (n < 0)
                j->rc = (int)n;
            else if (n == 0)
                j->end = j->off; /* the file is shorter than it said: it ends here */
            j->off += v.iov_len;
            j->moved += v.iov_len;
        }
        return;
    }
    if (j->kind == 'C') { /* a resumed upload's old bytes, into the new version */
        char *tmp = malloc(SLICE);
        if (!tmp)
            j->rc = api->err_set(&j->e, MB_ENOMEM, "out of memory");
        while (!j->rc && j->off < j->end && !atomic_load(&j->orphan)) {
            uint64_t want = j->end - j->off < SLICE ? j->end - j->off : SLICE;
            int64_t n = api->file_read(j->rd, j->off, tmp, (size_t)want, &j->e);
            if (n == 0)
                j->rc = api->err_set(&j->e, MB_EIO, "the file changed while resuming");
            else if (n < 0)
                j->rc = (int)n;
            else if ((j->rc = api->file_write_data(j->wr, tmp, (size_t)n, &j->e)) == 0)
                j->off += (uint64_t)n;
        }
        free(tmp);
        return;
    }
    /* The received pieces go to the writer as they lie in the buffer (up to SLICE each, as
     * stor_recv_cb read them): no copy into one block first. */
    struct evbuffer_iovec v[16];
    while (!j->rc && evbuffer_get_length(j->buf)) {
        int nv = evbuffer_peek(j->buf, -1, NULL, v, 16);
        if (nv > 16)
            nv = 16;
        size_t took = 0;
        for (int i = 0; i < nv && !j->rc; i++) {
            j->rc = api->file_write_data(j->wr, v[i].iov_base, v[i].iov_len, &j->e);
            took += v[i].iov_len;
        }
        evbuffer_drain(j->buf, took);
        j->moved += took;
    }
    if (!j->rc && j->commit) {
        j->committed = true; /* commit frees the writer whatever it answers */
        j->rc = api->file_write_commit(j->wr, NULL, NULL, &j->e);
    }
}

static void retr_fill(sess *s);
static void stor_kick(sess *s);

static void io_free(iojob *j)
{
    for (int i = 0; i < j->nseg; i++)
        if (j->seg[i].fd >= 0)
            close(j->seg[i].fd);
    evbuffer_free(j->buf);
    free(j);
}

/* Loop thread: the job is back. */
static void io_done(void *arg)
{
    iojob *j = arg;
    sess *s = j->s;
    s->iojobs--;
    if (atomic_load(&j->orphan)) {
        if (j->rd)
            j->api->file_close(j->rd);
        if (j->wr && !j->committed)
            j->api->file_write_abort(j->wr);
        io_free(j);
        if (s->dead)
            sess_close(s); /* frees it once nothing else is in flight */
        return;
    }
    s->io = NULL;
    s->xbytes += j->moved;
    if (j->committed)
        s->wr = NULL;
    if (j->rc) {
        mb_err e = j->e;
        io_free(j);
        xfer_fail(s, &e);
        return;
    }
    if (j->kind == X_RETR) {
        struct evbuffer *out = bufferevent_get_output(s->data);
        for (int i = 0; i < j->nseg; i++) {
            int fd = j->seg[i].fd;
            j->seg[i].fd = -1;
            if (evbuffer_add_file(out, fd, (ev_off_t)j->seg[i].off, (ev_off_t)j->seg[i].len)) { /* takes fd */
                mb_err e = {0};
                j->api->err_set(&e, MB_ENOMEM, "out of memory");
                io_free(j);
                xfer_fail(s, &e);
                return;
            }
        }
        evbuffer_add_buffer(out, j->buf);
        s->roff = j->off;
        s->xeof = j->off >= j->end;
        io_free(j);
        retr_fill(s);
    } else if (j->kind == 'C') {
        io_free(j);
        s->copy_off = s->copy_end;
        s->srv->api->file_close(s->old);
        s->old = NULL;
        /* The old bytes are in: only now does the client hear 150 and send the rest, so no
         * client byte is read (or must be held back) while the copy runs. */
        char *label = s->deferred_what;
        s->deferred_what = NULL;
        start_xfer(s, X_STOR, NULL, label ? label : "upload");
        free(label);
    } else if (j->committed) {
        io_free(j);
        xfer_end(s, 226, "Transfer complete");
    } else {
        io_free(j);
        stor_kick(s);
    }
}

/* Hand the job to a worker; without a free one, try again shortly (the job waits in s->io). */
static void io_start(sess *s, iojob *j)
{
    mb_err e = {0};
    s->io = j;
    j->waiting = s->srv->api->run_blocking(s->srv->self, io_work, io_done, j, &e) != 0;
    if (j->waiting) {
        struct timeval tv = {0, 5000};
        evtimer_add(s->io_retry, &tv);
        return;
    }
    s->iojobs++;
}

static void io_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    sess *s = arg;
    if (s->io && s->io->waiting)
        io_start(s, s->io);
}

static iojob *io_new(sess *s, int kind, mb_file_reader *rd, mb_file_writer *wr)
{
    iojob *j = calloc(1, sizeof *j);
    if (j && !(j->buf = evbuffer_new())) {
        free(j);
        j = NULL;
    }
    if (!j) {
        xfer_end(s, 451, "out of memory");
        return NULL;
    }
    j->s = s;
    j->api = s->srv->api;
    j->kind = kind;
    atomic_init(&j->orphan, false);
    j->rd = rd;
    j->wr = wr;
    return j;
}

/* The transfer ends: a waiting job is dropped, a running one is orphaned and takes the
 * reader/writer it was lent with it (its done callback closes them). */
static void io_detach(sess *s)
{
    iojob *j = s->io;
    if (!j)
        return;
    s->io = NULL;
    evtimer_del(s->io_retry);
    if (j->waiting) {
        io_free(j);
        return;
    }
    if (j->rd == s->rd)
        s->rd = NULL;
    if (j->rd == s->old)
        s->old = NULL;
    if (j->wr == s->wr)
        s->wr = NULL;
    atomic_store(&j->orphan, true);
}

/* TLS encrypts in user space, and a bandwidth cap meters what is written: both need the
 * bytes in our buffers. Otherwise RETR sends the chunk files with sendfile (ABI minor 7). */
static bool retr_sendfile(const sess *s)
{
    const mb_api *api = s->srv->api;
    return !s->prot_p && !s->rate && api->size > offsetof(mb_api, file_read_fd) && api->file_read_fd;
}

/* How much RETR keeps queued for sending: copied bytes cost memory, file segments do not, and
 * sendfile drains them faster than a job verifies the next ones. */
static size_t retr_ahead(const sess *s) { return retr_sendfile(s) ? SENDFILE_AHEAD : OUTBUF_HIGH; }

/* RETR: a job reads (and the kernel verifies) the next bytes while the loop sends what is
 * queued; a new job starts once less than retr_ahead waits to be sent. */
static void retr_fill(sess *s)
{
    struct evbuffer *out = bufferevent_get_output(s->data);
    if (!s->io && !s->xeof && evbuffer_get_length(out) < retr_ahead(s)) {
        iojob *j = io_new(s, X_RETR, s->rd, NULL);
        if (!j)
            return;
        j->sendfile = retr_sendfile(s);
        j->off = s->roff;
        j->end = s->rsize;
        io_start(s, j);
        return;
    }
    if (!s->io && s->xeof && evbuffer_get_length(out) == 0) {
        data_linger(s);
        xfer_end(s, 226, "Transfer complete");
    }
}

/* STOR: hand what arrived to a job once there is a slice of it or the upload has ended;
 * the job that takes the last bytes also commits (durable before the 226). */
static void stor_kick(sess *s)
{
    if (s->io || s->xkind != X_STOR || !s->wr || !s->data)
        return;
    struct evbuffer *in = s->rdev ? s->inbuf : bufferevent_get_input(s->data);
    if (!s->in_eof && evbuffer_get_length(in) < SLICE)
        return;
    iojob *j = io_new(s, X_STOR, NULL, s->wr);
    if (!j)
        return;
    evbuffer_remove_buffer(in, j->buf, IO_JOB);
    j->commit = s->in_eof && evbuffer_get_length(in) == 0;
    if (s->rdev && !s->in_eof)
        event_add(s->rdev, NULL); /* room again, if stor_recv_cb had paused */
    io_start(s, j);
}

/* A plain upload's bytes, read straight from the socket: libevent 2.1's bufferevents read
 * at most 4 KiB per loop turn (a turn and three system calls per 4 KiB); this reads up
 * to SLICE at once. Reading pauses at INBUF_HIGH until a job takes the bytes. */
static void stor_recv_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    sess *s = arg;
    idle_reset(s);
    for (int i = 0; i < 4 && evbuffer_get_length(s->inbuf) < INBUF_HIGH; i++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(s->inbuf, SLICE, &v, 1) < 1) {
            xfer_end(s, 451, "out of memory");
            return;
        }
        size_t room = v.iov_len;
        ssize_t n = recv(fd, v.iov_base, room, 0);
        v.iov_len = n > 0 ? (size_t)n : 0;
        evbuffer_commit_space(s->inbuf, &v, 1);
        if (n == 0) {
            s->in_eof = true;
            event_del(s->rdev);
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            xfer_end(s, 426, "Data connection closed; transfer aborted");
            return;
        }
        if ((size_t)n < room) /* the socket is empty for now */
            break;
    }
    if (evbuffer_get_length(s->inbuf) >= INBUF_HIGH)
        event_del(s->rdev);
    stor_kick(s);
}

static void data_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    idle_reset(s);
    stor_kick(s);
}

static void data_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    idle_reset(s);
    if (s->xkind == X_RETR)
        retr_fill(s);
    else if (s->xkind == X_LIST && evbuffer_get_length(bufferevent_get_output(s->data)) == 0) {
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
        stor_kick(s);
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
        bufferevent_setwatermark(s->data, EV_WRITE, retr_ahead(s) / 2, 0);
        bufferevent_enable(s->data, EV_WRITE);
        bufferevent_disable(s->data, EV_READ);
        retr_fill(s);
    } else if (s->xkind == X_LIST) {
        bufferevent_enable(s->data, EV_WRITE);
        if (evbuffer_get_length(bufferevent_get_output(s->data)) == 0)
            xfer_end(s, 226, "Transfer complete");
    } else if (s->xkind == X_STOR && !s->prot_p && !s->rate) {
        /* TLS and the bandwidth cap need the bufferevent; a plain upload reads directly. */
        s->inbuf = evbuffer_new();
        s->rdev = s->inbuf ? event_new(s->srv->base, bufferevent_getfd(s->data), EV_READ | EV_PERSIST,
                                       stor_recv_cb, s)
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
static void sock_nodelay(evutil_socket_t fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static bool same_host(const struct sockaddr *a, const struct sockaddr *b)
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
    if (!same_host(sa, (struct sockaddr *)&s->peer)) {
        evutil_closesocket(fd);
        return;
    }
    evconnlistener_free(s->pasv);
    s->pasv = NULL;
    if (s->data_fd >= 0)
        evutil_closesocket(s->data_fd);
    s->data_fd = fd;
    evutil_make_socket_nonblocking(fd);
    sock_nodelay(fd);
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
    sock_nodelay(fd);
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
static int pasv_open(sess *s, int *port)
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
static void start_xfer(sess *s, int kind, struct evbuffer *listing, const char *what)
{
    if (kind == X_STOR && s->old && !s->io) {
        /* A resumed upload: a job copies the old bytes first, then io_done comes back here
         * to open the transfer. */
        free(s->deferred_what);
        s->deferred_what = strdup(what);
        s->xkind = kind; /* so a disconnect during the copy cleans up the transfer */
        iojob *j = io_new(s, 'C', s->old, s->wr);
        if (!j)
            return;
        j->off = s->copy_off;
        j->end = s->copy_end;
        io_start(s, j);
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

static void cmd_list(sess *s, const char *arg, int kind)
{
    mb_err e = {0};
    struct evbuffer *b = evbuffer_new();
    int rc = build_list(s, arg, kind, b, &e);
    if (rc) {
        evbuffer_free(b);
        reply_err(s, &e);
        return;
    }
    start_xfer(s, X_LIST, b, "file list");
}

static void cmd_retr(sess *s, const char *arg)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (resolve(s, arg, vp, &sid, &rest, &e) == 0 && (!sid || !*rest))
        api->err_set(&e, MB_EPERM, "%s is a folder", vp);
    json_t *info = NULL;
    if (e.code || api->file_open(&s->user, sid, rest, 0, &s->rd, &info, &e)) {
        s->rest = 0;
        reply_err(s, &e);
        return;
    }
    s->rsize = (uint64_t)jint(info, "size");
    json_decref(info);
    if (s->rest > s->rsize) {
        api->file_close(s->rd);
        s->rd = NULL;
        s->rest = 0;
        reply(s, api->err_ftp_reply(MB_ERANGE), "REST offset is past the end of the file");
        return;
    }
    s->roff = s->rest;
    char what[FTPU_PATH_MAX + 64];
    snprintf(what, sizeof what, "%s (%llu bytes)", vp, (unsigned long long)s->rsize);
    start_xfer(s, X_RETR, NULL, what);
}

/* STOR, APPE, STOU: a new version through the kernel's writer; with an offset, the old
 * bytes up to it are copied in first (REST+STOR, APPE). */
static void cmd_stor(sess *s, const char *arg, int mode)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1], uniq[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (mode == 'U') {
        unsigned char r[6];
        randombytes_buf(r, sizeof r);
        snprintf(uniq, sizeof uniq, "%s%sftp-%02x%02x%02x%02x%02x%02x", arg && *arg ? arg : "",
                 arg && *arg ? "." : "", r[0], r[1], r[2], r[3], r[4], r[5]);
        arg = uniq;
    }
    if (resolve(s, arg, vp, &sid, &rest, &e) == 0 && (!sid || !*rest))
        api->err_set(&e, MB_EPERM, "cannot write a file at %s", vp);
    uint64_t off = s->rest;
    s->rest = 0;
    if (!e.code && (mode == 'A' || off > 0)) {
        json_t *info = NULL;
        int rc = api->file_open(&s->user, sid, rest, 0, &s->old, &info, &e);
        if (rc == MB_ENOENT && (mode == 'A' || off == 0)) {
            e.code = 0;
        } else if (rc == 0) {
            uint64_t size = (uint64_t)jint(info, "size");
            if (mode == 'A')
                off = size;
            if (off > size)
                api->err_set(&e, MB_ERANGE, "REST offset %llu is past the end of the file (%llu bytes)",
                             (unsigned long long)off, (unsigned long long)size);
            json_decref(info);
        }
        if (off == 0 && s->old) {
            api->file_close(s->old);
            s->old = NULL;
        }
    }
    if (!e.code)
        api->file_write_begin(&s->user, sid, rest, -1, NULL, mode == 'U' ? MB_FS_NO_OVERWRITE : 0, &s->wr, &e);
    if (e.code) {
        if (s->old) {
            api->file_close(s->old);
            s->old = NULL;
        }
        reply_err(s, &e);
        return;
    }
    s->copy_off = 0;
    s->copy_end = off;
    /* No other reply between the 150 and the 226: a client takes the first 2xx as the end. */
    char label[FTPU_PATH_MAX + 8];
    snprintf(label, sizeof label, "%s%s", mode == 'U' ? "FILE: " : "", vp);
    start_xfer(s, X_STOR, NULL, label);
}

/* ------------------------------------------------------------- logins --- */

typedef struct login_job {
    sess *s;
    char name[128], pw[512], ip[64];
    mb_user user;
    char namebuf[128];
    mb_err err;
    int rc;
    const mb_api *api;
    mb_module *self;
} login_job;

typedef struct pwscan {
    const mb_api *api;
    const char *pw;
    bool ok;
} pwscan;

static int pw_match(const char *key, const void *v, size_t len, void *ud)
{
    (void)key;
    pwscan *p = ud;
    const mb_api *api = p->api;
    json_t *o = json_loadb(v, len, 0, NULL);
    const char *h = json_string_value(json_object_get(o, "hash"));
    /* The kernel's cached check (ABI minor 8) when there is one: clients log in per transfer. */
    bool cached = api->size > offsetof(mb_api, password_check) && api->password_check;
    if (h && (cached ? api->password_check(h, p->pw) : crypto_pwhash_str_verify(h, p->pw, strlen(p->pw)) == 0))
        p->ok = true;
    json_decref(o);
    return p->ok;
}

/* Worker thread: app passwords first (the module's own), then the account password with
 * the kernel's throttling. Touches only the job. */
static void login_work(void *arg)
{
    login_job *j = arg;
    if (j->api->user_lookup(0, j->name, &j->user, j->namebuf, sizeof j->namebuf, &j->err) == 0) {
        char prefix[40];
        snprintf(prefix, sizeof prefix, "pw/%016llx/", (unsigned long long)j->user.id);
        pwscan p = {j->api, j->pw, false};
        mb_err e;
        j->api->kv_scan(j->self, prefix, pw_match, &p, &e);
        if (p.ok) {
            j->rc = 0;
            return;
        }
    }
    j->rc = j->api->auth_password(j->name, j->pw, j->ip, &j->user, j->namebuf, sizeof j->namebuf, &j->err);
}

static int count_user(ftp_srv *f, uint64_t uid)
{
    int n = 0;
    for (sess *o = f->sessions; o; o = o->next)
        if (o->logged_in && o->user.id == uid && !o->dead)
            n++;
    return n;
}

/* Loop thread: the answer. */
static void login_done(void *arg)
{
    login_job *j = arg;
    sess *s = j->s;
    ftp_srv *f = s->srv;
    s->jobs--;
    if (s->dead) {
        sodium_memzero(j, sizeof *j);
        free(j);
        sess_close(s); /* frees it once nothing else is in flight */
        return;
    }
    if (j->rc) {
        /* auth_password counted the failure in the kernel's login throttle (per account and
         * address, per address, per account slowed): one throttle for every door. */
        if (j->rc == MB_ETHROTTLE) {
            reply_err(s, &j->err);
            s->quitting = true;
        } else {
            reply(s, 530, "Login incorrect");
        }
        f->api->log(f->self, MB_LOG_INFO, "failed login for %s from %s", j->name, s->ip);
    } else if (f->per_user > 0 && count_user(f, j->user.id) >= f->per_user) {
        reply(s, 421, "Too many sessions for this user");
        s->quitting = true;
    } else {
        s->user = j->user;
        snprintf(s->namebuf, sizeof s->namebuf, "%s", j->namebuf);
        s->user.name = s->namebuf;
        s->logged_in = true;
        evtimer_del(s->login_ev);
        strcpy(s->cwd, "/");
        reply(s, 230, "Logged in; your stores are the folders in /");
    }
    sodium_memzero(j, sizeof *j);
    free(j);
    if (s->quitting) {
        bufferevent_disable(s->ctl, EV_READ);
        quit_check(s);
    } else {
        bufferevent_enable(s->ctl, EV_READ);
        ctl_read_cb(s->ctl, s); /* commands the client pipelined behind PASS */
    }
}

static void cmd_pass(sess *s, const char *arg)
{
    ftp_srv *f = s->srv;
    if (s->logged_in) {
        reply(s, 230, "Already logged in");
        return;
    }
    if (!s->uname[0]) {
        reply(s, 503, "Send USER first");
        return;
    }
    /* The kernel's login throttle, before app passwords are tried too (they are guesses). */
    mb_err te = {0};
    if (f->api->login_wait(s->uname, s->ip, &te)) {
        reply_err(s, &te);
        s->quitting = true;
        bufferevent_disable(s->ctl, EV_READ);
        return;
    }
    login_job *j = calloc(1, sizeof *j);
    j->s = s;
    j->api = f->api;
    j->self = f->self;
    snprintf(j->name, sizeof j->name, "%s", s->uname);
    snprintf(j->pw, sizeof j->pw, "%s", arg ? arg : "");
    snprintf(j->ip, sizeof j->ip, "%s", s->ip);
    mb_err e = {0};
    if (f->api->run_blocking(f->self, login_work, login_done, j, &e)) {
        free(j);
        reply_err(s, &e);
        return;
    }
    s->jobs++;
    s->uname[0] = 0;
    bufferevent_disable(s->ctl, EV_READ); /* one command at a time until the answer */
}

/* ------------------------------------------------------------- commands --- */

static const char *const feat_lines[] = {"AUTH TLS", "PBSZ", "PROT", "UTF8", "EPRT", "EPSV", "MDTM", "SIZE",
                                         "REST STREAM", "MLST type*;size*;modify*;perm*;", "TVFS", NULL};

static void reply_feat(sess *s)
{
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    evbuffer_add_printf(o, "211-Features:\r\n");
    for (int i = 0; feat_lines[i]; i++)
        evbuffer_add_printf(o, " %s\r\n", feat_lines[i]);
    evbuffer_add_printf(o, "211 End\r\n");
}

static void tls_upgrade(sess *s)
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
}

static void ctl_read_cb(struct bufferevent *bev, void *arg);
static void ctl_event_cb(struct bufferevent *bev, short what, void *arg);
static void ctl_write_cb(struct bufferevent *bev, void *arg);
static void tls_upgraded(sess *s);
static void ctl_read_cb(struct bufferevent *bev, void *arg);

static void mlst(sess *s, const char *arg)
{
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    const mb_api *api = s->srv->api;
    if (resolve(s, arg, vp, &sid, &rest, &e)) {
        reply_err(s, &e);
        return;
    }
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    struct evbuffer *b = evbuffer_new();
    if (!sid || !*rest) {
        list_line(b, 'T', vp, true, 0, api->now(), s->user.name);
    } else {
        json_t *info;
        if (api->file_stat(&s->user, sid, rest, &info, &e)) {
            evbuffer_free(b);
            reply_err(s, &e);
            return;
        }
        const char *t = json_string_value(json_object_get(info, "type"));
        list_line(b, 'T', vp, t && !strcmp(t, "folder"), jint(info, "size"), jint(info, "mtime"), s->user.name);
        json_decref(info);
    }
    evbuffer_add_printf(o, "250-Listing %s\r\n", vp);
    evbuffer_add_buffer(o, b);
    evbuffer_add_printf(o, "250 End\r\n");
    evbuffer_free(b);
}

static void cmd_port(sess *s, const char *cmd, const char *arg)
{
    char ip[64];
    int port, fam = 1;
    bool ok = !strcmp(cmd, "PORT") ? ftpu_parse_port(arg, ip, sizeof ip, &port) == 0
                                    : ftpu_parse_eprt(arg, &fam, ip, sizeof ip, &port) == 0;
    if (!ok) {
        reply(s, 501, "Syntax error in the %s argument", cmd);
        return;
    }
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    if (fam == 1) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &in->sin_addr);
        in->sin_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in6 *in = (struct sockaddr_in6 *)&a;
        in->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &in->sin6_addr);
        in->sin6_port = htons((uint16_t)port);
    }
    /* Bounce attacks: data goes only to the client's own address, never to a privileged
     * port (RFC 2577). */
    if (!same_host((struct sockaddr *)&a, (struct sockaddr *)&s->peer) || port < 1024) {
        reply(s, 500, "Illegal %s: data connections go only to your own address and a port >= 1024", cmd);
        return;
    }
    data_close(s);
    s->port_addr = a;
    s->have_port = true;
    reply(s, 200, "%s command successful", cmd);
}

static void cmd_pasv(sess *s, bool extended)
{
    if (!extended && s->local.ss_family != AF_INET) {
        reply(s, 425, "PASV is IPv4 only; use EPSV");
        return;
    }
    int port;
    if (pasv_open(s, &port)) {
        reply(s, 425, "No free passive port; try again");
        return;
    }
    if (extended) {
        reply(s, 229, "Entering Extended Passive Mode (|||%d|)", port);
        return;
    }
    char ip[64];
    if (s->srv->pasv_address[0])
        snprintf(ip, sizeof ip, "%s", s->srv->pasv_address);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&s->local)->sin_addr, ip, sizeof ip);
    for (char *p = ip; *p; p++)
        if (*p == '.')
            *p = ',';
    reply(s, 227, "Entering Passive Mode (%s,%d,%d)", ip, port / 256, port % 256);
}

/* Commands that name a path and change or read metadata. */
static void cmd_path(sess *s, const char *cmd, const char *arg)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (!arg || !*arg) {
        reply(s, 501, "%s needs a path", cmd);
        return;
    }
    if (resolve(s, arg, vp, &sid, &rest, &e)) {
        char store[1024];
        if (!strcmp(cmd, "MKD") && e.code == MB_ENOENT && !ftpu_split(vp, store, sizeof store, &rest) && !*rest)
            reply(s, 550, "Stores are created through the web page or the API (POST /api/v1/stores), not over FTP");
        else
            reply_err(s, &e);
        return;
    }
    bool top = !sid || !*rest; /* "/" or a store itself */
    if (!strcmp(cmd, "CWD")) {
        json_t *info = NULL;
        if (!top && api->file_stat(&s->user, sid, rest, &info, &e)) {
            reply_err(s, &e);
            return;
        }
        bool folder = top || !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
        json_decref(info);
        if (!folder) {
            reply(s, 550, "%s is not a folder", vp);
            return;
        }
        snprintf(s->cwd, sizeof s->cwd, "%s", vp);
        reply(s, 250, "Directory changed to %s", vp);
    } else if (!strcmp(cmd, "SIZE") || !strcmp(cmd, "MDTM")) {
        json_t *info = NULL;
        if (top || api->file_stat(&s->user, sid, rest, &info, &e)) {
            if (top)
                api->err_set(&e, MB_ENOENT, "%s is a folder", vp);
            reply_err(s, &e);
            return;
        }
        if (strcmp(json_string_value(json_object_get(info, "type")) ?: "", "file")) {
            reply(s, 550, "%s is not a file", vp);
        } else if (cmd[0] == 'S') {
            reply(s, 213, "%lld", (long long)jint(info, "size"));
        } else {
            char tb[32];
            fmt_time(jint(info, "mtime"), tb, sizeof tb, true);
            reply(s, 213, "%s", tb);
        }
        json_decref(info);
    } else if (!strcmp(cmd, "DELE") || !strcmp(cmd, "RMD")) {
        if (top) {
            reply(s, 550, "Stores are deleted in the web page, not over FTP");
            return;
        }
        json_t *info = NULL;
        if (api->file_stat(&s->user, sid, rest, &info, &e)) {
            reply_err(s, &e);
            return;
        }
        bool folder = !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
        json_decref(info);
        if (folder != (cmd[0] == 'R')) {
            reply(s, 550, "%s is %s", vp, folder ? "a folder; use RMD" : "a file; use DELE");
            return;
        }
        if (folder) {
            json_t *l = NULL;
            if (api->folder_list(&s->user, sid, rest, false, &l, &e)) {
                reply_err(s, &e);
                return;
            }
            size_t n = json_array_size(json_object_get(l, "entries"));
            json_decref(l);
            if (n) {
                reply(s, 550, "Folder %s is not empty", vp);
                return;
            }
        }
        if (api->file_delete(&s->user, sid, rest, 0, &e))
            reply_err(s, &e);
        else
            reply(s, 250, "%s deleted", vp);
    } else if (!strcmp(cmd, "MKD")) {
        if (top) {
            reply(s, 550, "%s exists; stores are created through the web page or the API", vp);
            return;
        }
        if (api->folder_create(&s->user, sid, rest, 0, NULL, &e)) {
            /* An existing name is 550, as vsftpd and ProFTPD answer: rclone (and others) take
             * only 550 as "already there" and fail the sync on the kernel's 553. */
            if (e.code == MB_EEXIST)
                reply(s, 550, "%s", e.msg[0] ? e.msg : "already exists");
            else
                reply_err(s, &e);
            return;
        }
        char q[FTPU_PATH_MAX * 2 + 4];
        size_t o = 0;
        for (const char *p = vp; *p && o + 3 < sizeof q; p++) { /* RFC 959: "" doubles a quote */
            if (*p == '"')
                q[o++] = '"';
            q[o++] = *p;
        }
        q[o] = 0;
        reply(s, 257, "\"%s\" created", q);
    } else if (!strcmp(cmd, "RNFR")) {
        json_t *info = NULL;
        if (top || api->file_stat(&s->user, sid, rest, &info, &e)) {
            if (top)
                api->err_set(&e, MB_EPERM, "stores are renamed in the web page");
            reply_err(s, &e);
            return;
        }
        json_decref(info);
        snprintf(s->rnfr, sizeof s->rnfr, "%s", vp);
        reply(s, 350, "Ready for RNTO");
    } else if (!strcmp(cmd, "RNTO")) {
        if (!s->rnfr[0]) {
            reply(s, 503, "Send RNFR first");
            return;
        }
        char from[FTPU_PATH_MAX + 1];
        const char *frest;
        uint64_t fsid;
        snprintf(from, sizeof from, "%s", s->rnfr);
        s->rnfr[0] = 0;
        if (resolve(s, from, vp, &fsid, &frest, &e)) {
            reply_err(s, &e);
            return;
        }
        char fromrest[FTPU_PATH_MAX + 1];
        snprintf(fromrest, sizeof fromrest, "%s", frest);
        if (resolve(s, arg, vp, &sid, &rest, &e)) {
            reply_err(s, &e);
            return;
        }
        if (!sid || !*rest || sid != fsid) {
            reply(s, 553, "Renames stay inside one store");
            return;
        }
        if (api->file_move(&s->user, sid, fromrest, rest, 0, NULL, &e))
            reply_err(s, &e);
        else
            reply(s, 250, "Renamed");
    }
}

static void cmd_stat(sess *s, const char *arg)
{
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    if (arg && *arg && s->logged_in) {
        mb_err e = {0};
        struct evbuffer *b = evbuffer_new();
        if (build_list(s, arg, 'L', b, &e)) {
            evbuffer_free(b);
            reply_err(s, &e);
            return;
        }
        evbuffer_add_printf(o, "213-Status of %s:\r\n", arg);
        evbuffer_add_buffer(o, b);
        evbuffer_add_printf(o, "213 End of status\r\n");
        evbuffer_free(b);
        return;
    }
    evbuffer_add_printf(o, "211-MByte FTP server status:\r\n Connected from %s\r\n %s\r\n TLS %s, data %s\r\n",
                        s->ip, s->logged_in ? s->user.name : "Not logged in", s->tls ? "on" : "off",
                        s->prot_p ? "private" : "clear");
    if (s->xkind != X_NONE)
        evbuffer_add_printf(o, " Transfer in progress: %llu bytes\r\n", (unsigned long long)s->xbytes);
    evbuffer_add_printf(o, "211 End of status\r\n");
}

/* SITE CHMOD succeeds without changing anything: a store keeps no Unix permissions, and
 * clients that mirror (lftp's mirror -R sends one per file) treat a refusal as an error. The
 * path must exist, so a typo is still reported. */
static void cmd_site(sess *s, const char *arg)
{
    if (arg && !strncasecmp(arg, "CHMOD ", 6)) {
        const char *mode = arg + 6;
        size_t ml = strspn(mode, "01234567");
        if (ml == 0 || ml > 4 || mode[ml] != ' ' || !mode[ml + 1]) {
            reply(s, 501, "SITE CHMOD needs an octal mode and a path");
            return;
        }
        const mb_api *api = s->srv->api;
        mb_err e = {0};
        char vp[FTPU_PATH_MAX + 1];
        const char *rest;
        uint64_t sid;
        json_t *info = NULL;
        if (resolve(s, mode + ml + 1, vp, &sid, &rest, &e) || (sid && *rest && api->file_stat(&s->user, sid, rest,
                                                                                               &info, &e))) {
            reply_err(s, &e);
            return;
        }
        json_decref(info);
        reply(s, 200, "SITE CHMOD ok; stores keep no permissions, nothing changed");
    } else if (arg && !strncasecmp(arg, "HELP", 4)) {
        reply(s, 214, "SITE commands: CHMOD HELP");
    } else {
        reply(s, 504, "SITE commands: CHMOD HELP");
    }
}

static bool tls_needed(sess *s) { return s->srv->require_tls && !s->tls && !s->loopback; }

static void dispatch(sess *s, char *line)
{
    ftp_srv *f = s->srv;
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = 0;
    char cmd[8];
    size_t cl = strlen(line);
    if (cl == 0 || cl > 4) {
        reply(s, 500, "Unknown command");
        return;
    }
    for (size_t i = 0; i <= cl; i++)
        cmd[i] = (char)(line[i] >= 'a' && line[i] <= 'z' ? line[i] - 32 : line[i]);
#define IS(x) (!strcmp(cmd, x))
    if (s->xkind != X_NONE) { /* while a transfer runs only these make sense */
        if (IS("ABOR")) {
            xfer_end(s, 426, "Transfer aborted");
            reply(s, 226, "ABOR successful");
        } else if (IS("STAT")) {
            cmd_stat(s, NULL);
        } else if (IS("NOOP")) {
            reply(s, 200, "NOOP ok");
        } else if (IS("QUIT")) {
            xfer_end(s, 426, "Transfer aborted");
            reply(s, 221, "Goodbye");
            s->quitting = true;
        } else {
            reply(s, 450, "A transfer is in progress; wait or send ABOR");
        }
        return;
    }
    /* Commands allowed before login. */
    if (IS("USER")) {
        if (s->logged_in) {
            reply(s, 530, "Already logged in; REIN first to change user");
        } else if (tls_needed(s)) {
            reply(s, 530, "TLS is required: send AUTH TLS first");
        } else if (!arg || !*arg || strlen(arg) > 64) {
            reply(s, 501, "USER needs a user name");
        } else {
            snprintf(s->uname, sizeof s->uname, "%s", arg);
            reply(s, 331, "Password required for %s", s->uname);
        }
    } else if (IS("PASS")) {
        if (tls_needed(s))
            reply(s, 530, "TLS is required: send AUTH TLS first");
        else
            cmd_pass(s, arg);
    } else if (IS("AUTH")) {
        if (s->tls) {
            reply(s, 503, "TLS is already on");
        } else if (arg && (!strcasecmp(arg, "TLS") || !strcasecmp(arg, "SSL") || !strcasecmp(arg, "TLS-C"))) {
            reply(s, 234, "AUTH TLS successful");
            tls_upgrade(s);
            if (s->tls)
                tls_upgraded(s);
        } else {
            reply(s, 504, "Only AUTH TLS is supported");
        }
    } else if (IS("PBSZ")) {
        if (!s->tls)
            reply(s, 503, "PBSZ needs a TLS control connection");
        else {
            s->pbsz = true;
            reply(s, 200, "PBSZ=0");
        }
    } else if (IS("PROT")) {
        if (!s->tls)
            reply(s, 503, "PROT needs a TLS control connection");
        else if (arg && (!strcasecmp(arg, "P") || !strcasecmp(arg, "C"))) {
            bool p = toupper((unsigned char)arg[0]) == 'P';
            if (!p && f->require_tls && !s->loopback) {
                reply(s, 534, "Clear data connections are not allowed");
                return;
            }
            s->prot_p = p;
            reply(s, 200, "Protection level set to %s", p ? "Private" : "Clear");
        } else
            reply(s, 504, "PROT P or PROT C only");
    } else if (IS("FEAT")) {
        reply_feat(s);
    } else if (IS("OPTS")) {
        if (arg && (!strcasecmp(arg, "UTF8 ON") || !strcasecmp(arg, "UTF-8 ON"))) {
            s->utf8 = true;
            reply(s, 200, "UTF8 mode on");
        } else if (arg && !strncasecmp(arg, "MLST", 4)) {
            reply(s, 200, "MLST OPTS type;size;modify;perm;");
        } else
            reply(s, 501, "Option not understood");
    } else if (IS("SYST")) {
        reply(s, 215, "UNIX Type: L8");
    } else if (IS("NOOP")) {
        reply(s, 200, "NOOP ok");
    } else if (IS("QUIT")) {
        reply(s, 221, "Goodbye");
        s->quitting = true;
    } else if (IS("HELP")) {
        struct evbuffer *o = bufferevent_get_output(s->ctl);
        evbuffer_add_printf(o, "214-Commands:\r\n ABOR ACCT ALLO APPE AUTH CDUP CWD DELE EPRT EPSV FEAT HELP LIST "
                               "MDTM MKD MLSD MLST MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT REIN "
                               "REST RETR RMD RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD "
                               "XMKD XPWD XRMD\r\n214 Help OK\r\n");
    } else if (IS("STAT") && !s->logged_in) {
        cmd_stat(s, NULL);
    } else if (!s->logged_in) {
        reply(s, 530, "Please log in with USER and PASS");
    } else if (IS("REIN")) {
        data_close(s);
        s->logged_in = false;
        login_deadline(s);
        s->uname[0] = s->rnfr[0] = 0;
        s->rest = 0;
        reply(s, 220, "Ready for a new user");
    } else if (IS("ACCT")) {
        reply(s, 202, "ACCT not needed");
    } else if (IS("ALLO")) {
        reply(s, 202, "ALLO not needed");
    } else if (IS("PWD") || IS("XPWD")) {
        reply(s, 257, "\"%s\" is the current directory", s->cwd);
    } else if (IS("CWD") || IS("XCWD")) {
        cmd_path(s, "CWD", arg);
    } else if (IS("CDUP") || IS("XCUP")) {
        cmd_path(s, "CWD", "..");
    } else if (IS("TYPE")) {
        if (arg && (toupper((unsigned char)arg[0]) == 'I' || toupper((unsigned char)arg[0]) == 'A' ||
                    toupper((unsigned char)arg[0]) == 'L'))
            reply(s, 200, "Type set to %c", toupper((unsigned char)arg[0]));
        else
            reply(s, 504, "TYPE I or A only");
    } else if (IS("MODE")) {
        reply(s, arg && toupper((unsigned char)arg[0]) == 'S' ? 200 : 504, "Mode S only");
    } else if (IS("STRU")) {
        reply(s, arg && toupper((unsigned char)arg[0]) == 'F' ? 200 : 504, "Structure F only");
    } else if (IS("PORT") || IS("EPRT")) {
        cmd_port(s, cmd, arg);
    } else if (IS("PASV")) {
        cmd_pasv(s, false);
    } else if (IS("EPSV")) {
        if (arg && !strcasecmp(arg, "ALL"))
            reply(s, 200, "EPSV ALL ok");
        else
            cmd_pasv(s, true);
    } else if (IS("REST")) {
        char *end;
        unsigned long long v = arg ? strtoull(arg, &end, 10) : 0;
        if (!arg || !*arg || *end || arg[0] == '-') {
            reply(s, 501, "REST needs a byte offset");
        } else {
            s->rest = v;
            reply(s, 350, "Restarting at %llu; send RETR or STOR", v);
        }
    } else if (IS("RETR")) {
        cmd_retr(s, arg);
    } else if (IS("STOR")) {
        cmd_stor(s, arg, 'S');
    } else if (IS("APPE")) {
        cmd_stor(s, arg, 'A');
    } else if (IS("STOU")) {
        cmd_stor(s, arg, 'U');
    } else if (IS("LIST")) {
        cmd_list(s, arg, 'L');
    } else if (IS("NLST")) {
        cmd_list(s, arg, 'N');
    } else if (IS("MLSD")) {
        cmd_list(s, arg, 'M');
    } else if (IS("MLST")) {
        mlst(s, arg);
    } else if (IS("MKD") || IS("XMKD")) {
        cmd_path(s, "MKD", arg);
    } else if (IS("RMD") || IS("XRMD")) {
        cmd_path(s, "RMD", arg);
    } else if (IS("DELE") || IS("SIZE") || IS("MDTM") || IS("RNFR") || IS("RNTO")) {
        cmd_path(s, cmd, arg);
    } else if (IS("STAT")) {
        cmd_stat(s, arg);
    } else if (IS("ABOR")) {
        reply(s, 225, "No transfer to abort");
    } else if (IS("SITE")) {
        cmd_site(s, arg);
    } else {
        reply(s, 502, "Command not implemented");
    }
    if (!IS("RNFR"))
        s->rnfr[0] = 0; /* RNTO must follow RNFR directly */
#undef IS
}

/* ------------------------------------------------------------- sessions --- */

static void sess_close(sess *s)
{
    ftp_srv *f = s->srv;
    if (s->xkind != X_NONE)
        xfer_end(s, 0, "");
    else
        data_close(s);
    linger_free(s);
    if (s->ctl) {
        bufferevent_free(s->ctl);
        s->ctl = NULL;
    }
    if (s->idle) {
        event_free(s->idle);
        s->idle = NULL;
    }
    if (s->login_ev) {
        event_free(s->login_ev);
        s->login_ev = NULL;
    }
    if (!s->dead) {
        for (sess **pp = &f->sessions; *pp; pp = &(*pp)->next)
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        f->nsessions--;
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
static void quit_check(sess *s)
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

static void ctl_read_cb(struct bufferevent *bev, void *arg)
{
    sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    idle_reset(s);
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
            dispatch(s, line);
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
        quit_check(s);
    }
}

static void ctl_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sess *s = arg;
    if (s->quitting)
        quit_check(s);
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
        idle_reset(s);
        return;
    }
    if (s->quitting) {
        quit_check(s);
        return;
    }
    reply(s, 421, "Idle timeout; closing the connection");
    if (s->xkind != X_NONE)
        xfer_end(s, 0, "");
    s->quitting = true;
    bufferevent_disable(s->ctl, EV_READ);
    quit_check(s);
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
    quit_check(s);
}

static void login_deadline(sess *s)
{
    struct timeval tv = {s->srv->login_timeout, 0};
    evtimer_add(s->login_ev, &tv);
}

static void ctl_flush_now(sess *s);

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
        ctl_flush_now(victim);
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

/* After AUTH TLS the filter bufferevent needs the session's callbacks. */
static void ctl_setup(sess *s)
{
    bufferevent_setcb(s->ctl, ctl_read_cb, ctl_write_cb, ctl_event_cb, s);
    bufferevent_enable(s->ctl, EV_READ | EV_WRITE);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
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
    sock_nodelay(fd);
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
    ctl_setup(s);
    idle_reset(s);
    login_deadline(s);
    reply(s, 220, "MByte FTP server ready");
}

/* Called from dispatch's AUTH branch: the filter replaced s->ctl. */
static void tls_upgraded(sess *s) { ctl_setup(s); }

/* ------------------------------------------------------------------ TLS --- */

static int write_pem(const char *path, int (*fn)(FILE *, void *), void *obj)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    FILE *fp = fdopen(fd, "w");
    if (!fp) {
        close(fd);
        return -1;
    }
    int ok = fn(fp, obj);
    return fclose(fp) == 0 && ok ? 0 : -1;
}
static int pem_key(FILE *fp, void *k) { return PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL); }
static int pem_cert(FILE *fp, void *x) { return PEM_write_X509(fp, x); }

/* A self-signed P-256 certificate for the first start without a configured one. */
static int tls_generate(const char *cert, const char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (pk && x) {
        unsigned char serial[8];
        randombytes_buf(serial, sizeof serial);
        serial[0] &= 0x7f;
        BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
        X509_set_version(x, 2);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400);
        X509_set_pubkey(x, pk);
        X509_NAME *n = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"MByte FTP", -1, -1, 0);
        X509_set_issuer_name(x, n);
        if (X509_sign(x, pk, EVP_sha256()) > 0 && write_pem(key, pem_key, pk) == 0 &&
            write_pem(cert, pem_cert, x) == 0)
            rc = 0;
    }
    X509_free(x);
    EVP_PKEY_free(pk);
    return rc;
}

static int tls_setup(ftp_srv *f, const char *cert, const char *key, mb_err *e)
{
    const mb_api *api = f->api;
    char c[1024], k[1024];
    if (!cert[0]) {
        char dir[900];
        snprintf(dir, sizeof dir, "%s/m", api->data_dir());
        mkdir(dir, 0700);
        snprintf(dir, sizeof dir, "%s/m/ftp", api->data_dir());
        mkdir(dir, 0700);
        snprintf(c, sizeof c, "%s/cert.pem", dir);
        snprintf(k, sizeof k, "%s/key.pem", dir);
        if (access(c, R_OK) || access(k, R_OK)) {
            if (tls_generate(c, k))
                return api->err_set(e, MB_EIO, "could not create a self-signed certificate in %s", dir);
            api->log(f->self, MB_LOG_INFO, "created a self-signed TLS certificate in %s", dir);
        }
        cert = c;
        key = k;
    }
    f->ctx = SSL_CTX_new(TLS_server_method());
    if (!f->ctx)
        return api->err_set(e, MB_ENOMEM, "could not create the TLS context");
    SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(f->ctx, SSL_OP_NO_RENEGOTIATION);
    static const unsigned char sid_ctx[] = "mbyte-ftp";
    SSL_CTX_set_session_id_context(f->ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(f->ctx, SSL_SESS_CACHE_SERVER);
    if (SSL_CTX_use_certificate_chain_file(f->ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(f->ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(f->ctx) != 1) {
        ERR_clear_error();
        return api->err_set(e, MB_EINVAL, "cannot use the TLS certificate %s with key %s", cert, key);
    }
    return 0;
}

/* ------------------------------------------------------- app passwords --- */

static int h_pw_create(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    const mb_api *api = f->api;
    json_t *b = api->req_json(req, err);
    if (!b)
        return err->code;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (!name || !*name || strlen(name) > 64)
        return api->err_set(err, MB_EINVAL, "name must be a string of 1 to 64 characters");
    const mb_user *u = api->req_user(req);
    static const char alpha[] = "abcdefghijkmnpqrstuvwxyz23456789";
    char pw[25], id[17], hash[crypto_pwhash_STRBYTES];
    unsigned char r[24], rid[8];
    randombytes_buf(r, sizeof r);
    randombytes_buf(rid, sizeof rid);
    for (int i = 0; i < 24; i++)
        pw[i] = alpha[r[i] & 31];
    pw[24] = 0;
    for (int i = 0; i < 8; i++)
        snprintf(id + 2 * i, 3, "%02x", rid[i]);
    if (crypto_pwhash_str(hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE))
        return api->err_set(err, MB_ENOMEM, "could not hash the password");
    int64_t now = api->now();
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:I}", "v", 1, "id", id, "name", name, "hash", hash, "created",
                            (json_int_t)now);
    char *txt = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    char key[64];
    snprintf(key, sizeof key, "pw/%016llx/%s", (unsigned long long)u->id, id);
    int rc = api->kv_put(f->self, key, txt, strlen(txt), true, err);
    free(txt);
    if (rc)
        return rc;
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", id, "name", name, "username", u->name, "password", pw,
                            "created", (json_int_t)now);
    sodium_memzero(pw, sizeof pw);
    return api->reply_json(req, 201, out);
}

static int pw_list_one(const char *key, const void *v, size_t len, void *ud)
{
    (void)key;
    json_t *o = json_loadb(v, len, 0, NULL);
    if (o)
        json_array_append_new(ud, json_pack("{s:O, s:O, s:O}", "id", json_object_get(o, "id"), "name",
                                            json_object_get(o, "name"), "created", json_object_get(o, "created")));
    json_decref(o);
    return 0;
}

static int h_pw_list(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    char prefix[40];
    snprintf(prefix, sizeof prefix, "pw/%016llx/", (unsigned long long)f->api->req_user(req)->id);
    json_t *arr = json_array();
    int rc = f->api->kv_scan(f->self, prefix, pw_list_one, arr, err);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    return f->api->reply_json(req, 200, arr);
}

static int h_pw_delete(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    const mb_api *api = f->api;
    const char *id = api->req_param(req, "id");
    if (!id || strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16)
        return api->err_set(err, MB_ENOENT, "no such FTP password");
    char key[64], *v;
    size_t len;
    snprintf(key, sizeof key, "pw/%016llx/%s", (unsigned long long)api->req_user(req)->id, id);
    if (api->kv_get(f->self, key, &v, &len, err))
        return api->err_set(err, MB_ENOENT, "no such FTP password");
    free(v);
    int rc = api->kv_del(f->self, key, true, err);
    if (rc)
        return rc;
    return api->reply_bytes(req, 204, NULL, "", 0);
}

/* --------------------------------------------------------- init and fini --- */

static const char *cstr(const json_t *c, const char *k)
{
    const char *v = json_string_value(json_object_get(c, k));
    return v ? v : "";
}

static struct evconnlistener *listen_on(ftp_srv *f, const char *addr, mb_err *e)
{
    struct sockaddr_storage a;
    int al = sizeof a;
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&a, &al)) {
        f->api->err_set(e, MB_EINVAL, "cannot parse the listen address '%s' (host:port or [v6]:port)", addr);
        return NULL;
    }
    /* REUSEABLE_PORT: on reload the new copy binds while the old one still listens. */
    struct evconnlistener *l = evconnlistener_new_bind(
        f->base, accept_cb, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
                                   LEV_OPT_REUSEABLE_PORT,
        128, (struct sockaddr *)&a, al);
    if (!l)
        f->api->err_set(e, MB_EIO, "cannot listen on %s: %s", addr, strerror(errno));
    return l;
}

/* The last words of a session closed by fini: the session is freed before the loop turns
 * again, so what its control connection holds is written to the socket now (best effort,
 * never blocking; a socket bufferevent has no flush of its own). */
static void ctl_flush_now(sess *s)
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

static void srv_free(ftp_srv *f)
{
    while (f->sessions) {
        sess *s = f->sessions;
        reply(s, 421, "Service shutting down; reconnect");
        if (s->ctl)
            ctl_flush_now(s);
        sess_close(s);
    }
    if (f->lst)
        evconnlistener_free(f->lst);
    if (f->ilst)
        evconnlistener_free(f->ilst);
    if (f->ctx)
        SSL_CTX_free(f->ctx);
    free(f);
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium failed to initialise");
    ftp_srv *f = calloc(1, sizeof *f);
    if (!f)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    f->self = self;
    f->api = api;
    f->base = api->event_base();
    const char *env = getenv("MBYTE_FTP_LISTEN");
    snprintf(f->listen, sizeof f->listen, "%s", env && *env ? env : cstr(config, "listen"));
    env = getenv("MBYTE_FTP_IMPLICIT_LISTEN");
    snprintf(f->implicit_listen, sizeof f->implicit_listen, "%s", env ? env : cstr(config, "implicit_listen"));
    snprintf(f->pasv_address, sizeof f->pasv_address, "%s", cstr(config, "pasv_address"));
    env = getenv("MBYTE_FTP_PASV_PORTS"); /* "min-max": tests pick a range of their own */
    if (!env || sscanf(env, "%d-%d", &f->pasv_min, &f->pasv_max) != 2) {
        f->pasv_min = (int)jint(config, "pasv_min");
        f->pasv_max = (int)jint(config, "pasv_max");
    }
    if (f->pasv_max < f->pasv_min) {
        free(f);
        return api->err_set(err, MB_EINVAL, "pasv_max must not be below pasv_min");
    }
    f->require_tls = json_is_true(json_object_get(config, "require_tls"));
    f->require_reuse = json_is_true(json_object_get(config, "require_tls_reuse"));
    f->max_sessions = (int)jint(config, "max_sessions");
    f->per_user = (int)jint(config, "max_sessions_per_user");
    f->per_ip = (int)jint(config, "max_sessions_per_ip");
    f->idle_timeout = (int)jint(config, "idle_timeout");
    f->max_prelogin = (int)jint(config, "max_sessions_before_login");
    f->login_timeout = (int)jint(config, "login_timeout");
    f->max_failures = (int)jint(config, "max_login_failures");
    f->lockout = (int)jint(config, "lockout_seconds");
    f->bandwidth = jint(config, "bandwidth_limit");
    int rc = tls_setup(f, cstr(config, "tls_cert"), cstr(config, "tls_key"), err);
    if (rc) {
        srv_free(f);
        return rc;
    }
    if (!(f->lst = listen_on(f, f->listen, err)) ||
        (f->implicit_listen[0] && !(f->ilst = listen_on(f, f->implicit_listen, err)))) {
        srv_free(f);
        return err->code;
    }
    *state = f;
    api->log(self, MB_LOG_INFO, "listening on %s%s%s, passive ports %d-%d, TLS %s", f->listen,
             f->ilst ? ", implicit TLS on " : "", f->ilst ? f->implicit_listen : "", f->pasv_min, f->pasv_max,
             f->require_tls ? "required (except loopback)" : "optional");
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    srv_free(state);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "listen", MB_CFG_STRING, "127.0.0.1:2121", 0, 0},
    {sizeof(mb_config_key), "implicit_listen", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "pasv_min", MB_CFG_INT, "50000", 1024, 65535},
    {sizeof(mb_config_key), "pasv_max", MB_CFG_INT, "50100", 1024, 65535},
    {sizeof(mb_config_key), "pasv_address", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "tls_cert", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "tls_key", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "require_tls", MB_CFG_BOOL, "true", 0, 0},
    {sizeof(mb_config_key), "require_tls_reuse", MB_CFG_BOOL, "true", 0, 0},
    {sizeof(mb_config_key), "max_sessions", MB_CFG_INT, "256", 1, 100000},
    {sizeof(mb_config_key), "max_sessions_per_user", MB_CFG_INT, "32", 0, 100000},
    {sizeof(mb_config_key), "max_sessions_per_ip", MB_CFG_INT, "64", 0, 100000},
    {sizeof(mb_config_key), "max_sessions_before_login", MB_CFG_INT, "64", 1, 100000},
    {sizeof(mb_config_key), "idle_timeout", MB_CFG_INT, "300", 1, 86400},
    {sizeof(mb_config_key), "login_timeout", MB_CFG_INT, "30", 1, 86400},
    {sizeof(mb_config_key), "max_login_failures", MB_CFG_INT, "5", 1, 1000},
    {sizeof(mb_config_key), "lockout_seconds", MB_CFG_INT, "60", 1, 86400},
    {sizeof(mb_config_key), "bandwidth_limit", MB_CFG_INT, "0", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/ftp/passwords", MB_ROLE_USER, h_pw_create},
    {sizeof(mb_route), "GET", "/api/v1/ftp/passwords", MB_ROLE_USER, h_pw_list},
    {sizeof(mb_route), "DELETE", "/api/v1/ftp/passwords/{id}", MB_ROLE_USER, h_pw_delete},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "ftp",
    .version = FTP_VERSION,
    .description = "FTP and FTPS access to stores",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = NULL,
    .tasks = NULL,
    .init = init,
    .fini = fini,
    .reconfigure = NULL,
};
