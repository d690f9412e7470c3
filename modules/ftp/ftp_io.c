/*
 * modules/ftp/ftp_io.c — the I/O jobs that move a transfer's file bytes: RETR reads (and the
 * kernel verifies) the next IO_JOB bytes, or hands over whole chunk files for sendfile; STOR
 * writes what arrived (and the last job commits, durable before the 226); a resumed upload
 * copies its old bytes first. Plain uploads are read from the socket here too, a SLICE at a
 * time, because libevent's bufferevents read 4 KiB per loop turn.
 *
 * Threads: io_work runs on a kernel worker (api->run_blocking) and touches only its job and
 * the reader/writer lent to it; everything else runs on the loop thread. A transfer has at
 * most one job (s->io). A transfer that ends while its job runs orphans it (an atomic flag):
 * the job then owns the reader/writer and io_done closes them, and frees a dead session.
 */
#include "ftp.h"
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

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
     * io_stor_recv_cb read them): no copy into one block first. */
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
    j->api->metric_add(j->kind == X_RETR ? MB_METRIC_FTP_BYTES_OUT : MB_METRIC_FTP_BYTES_IN,
                       j->kind == 'C' ? 0 : (int64_t)j->moved);
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
        s->rcopied = j->nseg == 0 && evbuffer_get_length(j->buf) > 0;
        evbuffer_add_buffer(out, j->buf);
        s->roff = j->off;
        s->xeof = j->off >= j->end;
        io_free(j);
        io_retr_fill(s);
    } else if (j->kind == 'C') {
        io_free(j);
        s->copy_off = s->copy_end;
        s->srv->api->file_close(s->old);
        s->old = NULL;
        /* The old bytes are in: only now does the client hear 150 and send the rest, so no
         * client byte is read (or must be held back) while the copy runs. */
        char *label = s->deferred_what;
        s->deferred_what = NULL;
        xfer_start(s, X_STOR, NULL, label ? label : "upload");
        free(label);
    } else if (j->committed) {
        io_free(j);
        xfer_end(s, 226, "Transfer complete");
    } else {
        io_free(j);
        io_stor_kick(s);
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

void io_retry_cb(evutil_socket_t fd, short what, void *arg)
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
void io_detach(sess *s)
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

/* A resumed upload (REST+STOR, APPE): the old bytes [off, end) go into the new version first;
 * io_done then opens the transfer (xfer_start again, with s->old closed). */
void io_copy(sess *s, uint64_t off, uint64_t end)
{
    iojob *j = io_new(s, 'C', s->old, s->wr);
    if (!j)
        return;
    j->off = off;
    j->end = end;
    io_start(s, j);
}

/* TLS encrypts in user space, and a bandwidth cap meters what is written: both need the
 * bytes in our buffers. Otherwise RETR sends the chunk files with sendfile (ABI minor 7). */
static bool retr_sendfile(const sess *s)
{
    const mb_api *api = s->srv->api;
    return !s->prot_p && !s->rate && api->size > offsetof(mb_api, file_read_fd) && api->file_read_fd;
}

/* How much RETR keeps queued for sending: copied bytes cost memory, file segments do not, and
 * sendfile drains them faster than a job verifies the next ones. A job sends one or the other; the
 * last one says which is queued (before, a file read by copying, such as one of a store another
 * node keeps, had 32 MiB of copied bytes queued per session). */
size_t io_retr_ahead(const sess *s) { return retr_sendfile(s) && !s->rcopied ? SENDFILE_AHEAD : OUTBUF_HIGH; }

/* RETR: a job reads (and the kernel verifies) the next bytes while the loop sends what is
 * queued; a new job starts once less than io_retr_ahead waits to be sent. */
void io_retr_fill(sess *s)
{
    struct evbuffer *out = bufferevent_get_output(s->data);
    if (!s->io && !s->xeof && evbuffer_get_length(out) < io_retr_ahead(s)) {
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
void io_stor_kick(sess *s)
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
        event_add(s->rdev, NULL); /* room again, if io_stor_recv_cb had paused */
    io_start(s, j);
}

/* A plain upload's bytes, read straight from the socket: libevent 2.1's bufferevents read
 * at most 4 KiB per loop turn (a turn and three system calls per 4 KiB); this reads up
 * to SLICE at once. Reading pauses at INBUF_HIGH until a job takes the bytes. */
void io_stor_recv_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    sess *s = arg;
    sess_idle_reset(s);
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
    io_stor_kick(s);
}
