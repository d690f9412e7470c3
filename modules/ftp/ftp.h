/*
 * modules/ftp/ftp.h — what the FTP module's files share: the server state (ftp_srv), a
 * session (sess), the sizes that bound memory, and each file's calls to the others.
 *
 * Files and prefixes (one concern each; ftp.c's opening comment tells the whole design):
 *   ftp.c          the module: config, init/fini, the connection-details route, descriptor
 *   ftp_session.c  sess_*   control connections: accept, read lines, replies, timeouts, close
 *   ftp_cmd.c      cmd_*    the command table and the commands that touch no file
 *   ftp_files.c    files_*  commands on files and folders (RETR, STOR, LIST, CWD, DELE, ...)
 *   ftp_list.c     list_*   LIST/NLST/MLSD/MLST lines
 *   ftp_login.c    login_*  PASS: the password check on a worker and its answer
 *   ftp_data.c     data_*, xfer_*  data connections (PASV/PORT, TLS) and a transfer's end
 *   ftp_io.c       io_*     the I/O jobs that move file bytes on workers (RETR, STOR, resume)
 *   ftp_tls.c      tls_*    the TLS context and the self-signed certificate
 *   ftp_apppass.c  apppass_* per-user app passwords (routes and the check)
 *   ftp_util.c     ftpu_*   pure parsing (paths, PORT/EPRT, command lines), fuzzed and tested
 *
 * Threads: everything here runs on the kernel's loop thread, except io_work and the login
 * check, which run on workers and touch only their own job (see ftp_io.c, ftp_login.c).
 * Nothing is static: a reload's two copies of the module are independent.
 */
#ifndef MBYTE_FTP_H
#define MBYTE_FTP_H
#include "mbyte.h"
#include "ftp_util.h"
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

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
    bool rcopied; /* RETR: the last job copied bytes (no chunk files: a store on another node, an
                   * inline chunk, another backend), so what waits for sending costs memory */
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
    /* A folder listing in pages (ftp_list.c): what the next page is asked for, while more
     * follow; the next page is fetched once the last one left the output buffer. */
    char *list_cursor, *list_path;
    uint64_t list_sid;
    int list_kind;
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
    int max_sessions, per_user, per_ip, idle_timeout;
    int max_prelogin, login_timeout; /* connections not logged in: how many, for how long */
    int64_t bandwidth;
};

/* Free a session's event, if any, and forget it. */
static inline void ev_clear(struct event **e)
{
    if (*e) {
        event_free(*e);
        *e = NULL;
    }
}

static inline int64_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* ftp_session.c */
void reply(sess *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void reply_err(sess *s, const mb_err *e); /* the kernel's reply for a failed call, with its sentence */
void sess_idle_reset(sess *s);
int sess_resolve(sess *s, const char *arg, char *vpath, uint64_t *sid, const char **rest, mb_err *e);
void sess_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg);
void sess_read_cb(struct bufferevent *bev, void *arg);
void sess_close(sess *s);
void sess_quit_check(sess *s);
void sess_login_deadline(sess *s);
void sess_tls_upgrade(sess *s);
void sess_flush_now(sess *s);

/* ftp_cmd.c */
void cmd_dispatch(sess *s, char *line);

/* ftp_files.c */
void files_list(sess *s, const char *arg, int kind);
void files_retr(sess *s, const char *arg);
void files_stor(sess *s, const char *arg, int mode);
void files_path(sess *s, const char *cmd, const char *arg);

/* ftp_list.c */
void list_time(int64_t t, char *buf, size_t n, bool mlsx);
/* paged: a folder's first page only, the rest through list_more (LIST/NLST/MLSD); else all
 * of it (STAT on the control connection). */
int list_build(sess *s, const char *arg, int kind, struct evbuffer *b, bool paged, mb_err *e);
void list_mlst(sess *s, const char *arg);

/* ftp_login.c */
void login_pass(sess *s, const char *arg);

/* ftp_data.c */
void data_nodelay(evutil_socket_t fd);
bool data_same_host(const struct sockaddr *a, const struct sockaddr *b);
int data_pasv_open(sess *s, int *port);
void data_close(sess *s);
void data_linger(sess *s);
void data_linger_free(sess *s);
void xfer_start(sess *s, int kind, struct evbuffer *listing, const char *what);
/* The next page of a listing under way into b: true if one was added (ftp_list.c). */
bool list_more(sess *s, struct evbuffer *b);
void list_stop(sess *s);
void xfer_end(sess *s, int code, const char *msg);
void xfer_fail(sess *s, const mb_err *e);

/* ftp_io.c */
void io_copy(sess *s, uint64_t off, uint64_t end); /* a resumed upload's old bytes first */
void io_detach(sess *s);
void io_retry_cb(evutil_socket_t fd, short what, void *arg);
void io_retr_fill(sess *s);
size_t io_retr_ahead(const sess *s);
void io_stor_kick(sess *s);
void io_stor_recv_cb(evutil_socket_t fd, short what, void *arg);

/* ftp_tls.c */
int tls_setup(ftp_srv *f, const char *cert, const char *key, mb_err *e);

/* ftp_apppass.c */
int apppass_create(mb_req *req, void *state, mb_err *err);
int apppass_list(mb_req *req, void *state, mb_err *err);
int apppass_delete(mb_req *req, void *state, mb_err *err);

#endif
