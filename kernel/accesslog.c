/*
 * accesslog.c — what each HTTP request leaves behind when it ends: its request id, its line in
 * the access log (the combined log format, so goaccess, fail2ban and log shippers read it), and
 * its place in the metrics (metrics.c). Also the logs' settings: access_log, log_format.
 *
 * http.c calls in at four points of a request, each one line: accesslog_enter on every call
 * of its request handler (the first one picks the request id: the client's X-Request-Id when
 * the peer is one of trusted_proxies and the value is sane, else 16 random bytes in hex; it
 * goes into the answer's X-Request-Id header, and log.c appends it to the server log lines
 * written meanwhile on that thread), accesslog_route once the route is known,
 * accesslog_problem for a problem+json body, and accesslog_done when the request completes.
 *
 * The access log is opened with O_APPEND and each line is one write(2), so lines never mix.
 * SIGHUP (reload.c) reopens it, which is what logrotate's postrotate needs (docs/operations.md).
 *
 * Threads: libmicrohttpd's for requests; the loop thread for accesslog_configure. `log_lock`
 * (rwlock) guards the descriptor: writers hold it shared for their write, a reopen exclusively.
 */
#include "kernel.h"
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_rwlock_t log_lock = PTHREAD_RWLOCK_INITIALIZER;
static atomic_int log_fd = -1; /* read without the lock only to skip the work when off */
static char *log_path;

/* ------------------------------------------------------------ settings --- */

/* At start and on every reload (loop thread): the server log's format, and the access log
 * (re)opened, so logrotate's rename-then-HUP starts a new file. A file that cannot be opened
 * keeps the old one and says why. */
void accesslog_configure(void)
{
    const char *fmt = json_string_value(json_object_get(g_cfg->raw, "log_format"));
    log_set_json(fmt && !strcmp(fmt, "json"));
    const char *path = json_string_value(json_object_get(g_cfg->raw, "access_log"));
    int fd = -1;
    if (path && *path) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            log_error("cannot open access_log %s: %s; access logging stays as it was", path, strerror(errno));
            return;
        }
    }
    pthread_rwlock_wrlock(&log_lock);
    int old = log_fd;
    log_fd = fd;
    free(log_path);
    log_path = path && *path ? xstrdup(path) : NULL;
    pthread_rwlock_unlock(&log_lock);
    if (old >= 0)
        close(old);
}

void accesslog_fini(void)
{
    pthread_rwlock_wrlock(&log_lock);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    free(log_path);
    log_path = NULL;
    pthread_rwlock_unlock(&log_lock);
}

/* ----------------------------------------------------------- a request --- */

static bool trusted(const char *ip)
{
    for (char **t = g_cfg->trusted_proxies; t && *t; t++)
        if (!strcmp(*t, ip))
            return true;
    return false;
}

/* A client's id is taken only if it is short and plain: it goes into logs and headers. */
static bool sane_id(const char *s)
{
    static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:";
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n < sizeof((accesslog_rec *)0)->id && strspn(s, ok) == n;
}

/* A new request id: 16 random bytes as hex. The bytes come from a pool of the thread's, filled
 * from the kernel's generator 512 bytes at a time: one getrandom(2) per 32 requests instead of
 * one per request (a system call is a few microseconds on a guest; a small upload is a few
 * hundred). The ids are as unpredictable as before; nothing else draws from the pool. */
static void new_request_id(char out[33])
{
    static _Thread_local uint8_t pool[512];
    static _Thread_local size_t left;
    if (left < 16) {
        randombytes_buf(pool, sizeof pool);
        left = sizeof pool;
    }
    left -= 16;
    hex_encode(pool + left, 16, out);
}

void accesslog_enter(accesslog_rec *rl, mb_req *req, struct MHD_Connection *conn, const char *url, const char *version)
{
    if (!rl->begun) {
        rl->begun = true;
        rl->start = now_wall();
        rl->target = arena_strdup(http_req_arena(req), url ? url : "");
        rl->version = arena_strdup(http_req_arena(req), version ? version : "HTTP/1.1");
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        char peer[NI_MAXHOST] = "";
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6))
            getnameinfo(sa, sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6), peer,
                        sizeof peer, NULL, 0, NI_NUMERICHOST);
        const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (peer[0] && trusted(peer) && sane_id(given))
            snprintf(rl->id, sizeof rl->id, "%s", given);
        else
            new_request_id(rl->id);
        http_reply_header(req, "X-Request-Id", rl->id);
    }
    log_request_set(rl->id);
}

void accesslog_route(accesslog_rec *rl, mb_req *req, const char *pattern, bool streamed)
{
    rl->route = pattern; /* in the request's arena (http_route_lookup copied it) */
    const char *m = http_req_method(req);
    rl->upload = streamed && strcmp(m, "GET") && strcmp(m, "HEAD");
    if (rl->upload)
        metrics_upload(1);
}

void accesslog_problem(json_t *problem)
{
    const char *id = log_request_get();
    if (id && *id)
        json_object_set_new(problem, "request_id", json_string(id));
}

/* Apache's escaping for quoted fields: '"', '\' and bytes outside printable ASCII as \xhh. */
size_t accesslog_quote(char *out, size_t room, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 5 < room; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            n += (size_t)snprintf(out + n, room - n, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            n += (size_t)snprintf(out + n, room - n, "\\x%02x", c);
        else
            out[n++] = (char)c;
    }
    out[n] = 0;
    return n;
}

/* The path as it may be logged: a link token is a secret, so /api/v1/public/<token>/... and
 * /s/<token>/... show it as "***". Returns path itself or buf. */
const char *accesslog_redact(const char *path, char *buf, size_t n)
{
    static const char *const prefixes[] = {"/api/v1/public/", "/s/"};
    for (size_t i = 0; path && i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t pl = strlen(prefixes[i]);
        if (!strncmp(path, prefixes[i], pl)) {
            const char *rest = strchr(path + pl, '/');
            snprintf(buf, n, "%s***%s", prefixes[i], rest ? rest : "");
            return buf;
        }
    }
    return path;
}

/* The request target as it may be logged: share tokens redacted, and what a URL may not hold
 * as is (spaces, quotes, bytes past ASCII) percent-encoded again. */
void accesslog_target(const char *url, char *out, size_t room)
{
    char redacted[1024];
    const char *t = accesslog_redact(url, redacted, sizeof redacted);
    size_t n = 0;
    for (; *t && n + 4 < room; t++) {
        unsigned char c = (unsigned char)*t;
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '%' || c == '\\')
            n += (size_t)snprintf(out + n, room - n, "%%%02X", c);
        else
            out[n++] = (char)c;
    }
    out[n] = 0;
}

static const char *route_label(const accesslog_rec *rl, int status)
{
    if (rl->route)
        return rl->route;
    return status < 400 ? "(web page)" : "(no route)";
}

void accesslog_done(accesslog_rec *rl, mb_req *req, int status, bool completed, int64_t ms)
{
    if (!rl->begun)
        return; /* libmicrohttpd answered it alone (a malformed request) */
    if (rl->upload)
        metrics_upload(-1);
    const char *method = http_req_method(req);
    if (!status)
        status = 499; /* the client left before an answer (nginx's code for it) */
    uint64_t out = rl->out;
    if (!strcmp(method, "HEAD") || status == 204 || status == 304 || status < 200)
        out = 0;
    metrics_http_request(route_label(rl, status), method, status, ms * 1000, rl->in, completed ? out : 0);
    if (log_fd < 0 || http_req_local(req)) {
        log_request_set(NULL);
        return;
    }
    const mb_user *u = http_req_user(req);
    char line[6144], user[200], target[2048], ref[1024], ua[1024];
    accesslog_quote(user, sizeof user, u && u->name ? u->name : "-");
    accesslog_target(rl->target, target, sizeof target);
    accesslog_quote(ref, sizeof ref, http_req_header(req, "Referer") ? http_req_header(req, "Referer") : "-");
    accesslog_quote(ua, sizeof ua, http_req_header(req, "User-Agent") ? http_req_header(req, "User-Agent") : "-");
    struct tm tm;
    time_t t = (time_t)rl->start;
    gmtime_r(&t, &tm);
    char when[40], size[24] = "-";
    strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    if (completed && out)
        snprintf(size, sizeof size, "%llu", (unsigned long long)out);
    int n = snprintf(line, sizeof line, "%s - %s [%s] \"%s %s %s\" %d %s \"%s\" \"%s\" \"%s\"\n",
                     http_req_client_ip(req), user[0] && !strchr(user, ' ') ? user : "-", when, method, target,
                     rl->version, status, size, ref, ua, rl->id);
    if (n > 0 && (size_t)n >= sizeof line)
        line[sizeof line - 2] = '\n', n = (int)sizeof line - 1;
    pthread_rwlock_rdlock(&log_lock);
    if (log_fd >= 0 && n > 0) {
        ssize_t w = write(log_fd, line, (size_t)n);
        (void)w; /* a full disk loses log lines, never a request */
    }
    pthread_rwlock_unlock(&log_lock);
    log_request_set(NULL);
}
