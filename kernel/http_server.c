/*
 * http_server.c — the HTTP door's listeners: libmicrohttpd on its internal epoll thread
 * pool for the configured address (HTTPS with tls_cert/tls_key, plain HTTP only on
 * loopback unless require_tls is false), the plain listener that redirects to HTTPS
 * (http_redirect_listen), and the local admin socket mbytectl talks to. Start and stop.
 *
 * Threads: http_start and http_stop run on the main thread at start and exit; the
 * redirect's callbacks run on its libmicrohttpd thread and share nothing.
 */
#include "http_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

static struct MHD_Daemon *daemon_tcp, *daemon_local, *daemon_redirect;
static char *tls_pem[2]; /* tls_cert and tls_key, read at start: libmicrohttpd keeps pointers to them */
static char *local_sock_path;
static const bool door_tcp = false, door_local = true; /* http_on_uri's cls: came through the admin socket */

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_vmsg(LOG_DEBUG, "mhd", fmt, ap);
}

static int local_socket(const char *path, mb_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return err_set(err, MB_EINVAL, "the admin socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_set(err, MB_EIO, "socket: %s", strerror(errno));
    mode_t old = umask(0177); /* the socket file is the credential: owner only */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc || listen(fd, 64)) {
        close(fd);
        return err_set(err, MB_EIO, "cannot listen on %s: %s", path, strerror(errno));
    }
    return fd;
}

/* ------------------------------------------------------------- HTTPS --- */

static bool loopback_host(const char *h)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return !strcmp(h, "localhost");
}

static char *read_pem(const char *path, mb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(err, MB_EINVAL, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (!n || !strstr(buf, "-----BEGIN ")) {
        free(buf);
        err_set(err, MB_EINVAL, "%s is not a PEM file", path);
        return NULL;
    }
    return buf;
}

/* http_redirect_listen: every request on the plain port is sent to the same path over HTTPS on
 * `listen` (308 keeps the method and body). The host comes from the Host header when it is a plain
 * host name or address, else from `listen`. */
static enum MHD_Result on_redirect(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    (void)cls, (void)method, (void)version, (void)upload_data, (void)upload_data_size;
    if (*con_cls) /* the whole request target, query included (redirect_uri) */
        url = *con_cls;
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    char h[256];
    snprintf(h, sizeof h, "%s", host && *host ? host : g_cfg->listen_host);
    if (h[0] == '[') {
        char *close = strchr(h, ']');
        if (close)
            close[1] = '\0';
    } else
        h[strcspn(h, ":")] = '\0';
    if (strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-[]:") != strlen(h) || !h[0])
        snprintf(h, sizeof h, "%s", g_cfg->listen_host);
    size_t n = strlen(url) + strlen(h) + 32;
    char *loc = xmalloc(n);
    snprintf(loc, n, "https://%s:%d%s", h, g_cfg->listen_port, url[0] == '/' ? url : "/");
    static const char body[] = "This server answers over HTTPS only.\n";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    http_security_headers(r);
    enum MHD_Result rc = MHD_queue_response(conn, 308, r);
    MHD_destroy_response(r);
    free(loc);
    return rc;
}

static void *redirect_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    return uri && strlen(uri) < 8192 ? xstrdup(uri) : NULL;
}

static void redirect_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode tc)
{
    (void)cls, (void)conn, (void)tc;
    free(*con_cls);
    *con_cls = NULL;
}

static int redirect_start(mb_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, g_cfg->redirect_host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->redirect_port);
    } else if (inet_pton(AF_INET6, g_cfg->redirect_host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)g_cfg->redirect_port);
        flags |= MHD_USE_IPv6;
    } else
        return err_set(err, MB_EINVAL, "http_redirect_listen host '%s' must be an IP address", g_cfg->redirect_host);
    daemon_redirect = MHD_start_daemon(flags, (uint16_t)g_cfg->redirect_port, NULL, NULL, on_redirect, NULL,
                                       MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &ss,
                                       MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, 1024u,
                                       MHD_OPTION_PER_IP_CONNECTION_LIMIT, 16u, MHD_OPTION_URI_LOG_CALLBACK,
                                       redirect_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, redirect_done, NULL,
                                       MHD_OPTION_END);
    if (!daemon_redirect)
        return err_set(err, MB_EIO, "cannot listen on %s:%d for the HTTPS redirect", g_cfg->redirect_host,
                       g_cfg->redirect_port);
    return 0;
}

int http_start(mb_err *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, g_cfg->listen_host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->listen_port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, g_cfg->listen_host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)g_cfg->listen_port);
        sl = sizeof *s6;
        flags |= MHD_USE_IPv6;
    } else if (!strcmp(g_cfg->listen_host, "localhost")) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)g_cfg->listen_port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *s4;
    } else
        return err_set(err, MB_EINVAL, "listen host '%s' must be an IP address", g_cfg->listen_host);
    (void)sl;
    /* HTTPS with tls_cert/tls_key; plain HTTP only on loopback unless require_tls is false (a TLS
     * proxy in front of mbyted is then the only way in). */
    struct MHD_OptionItem tls[4] = {{MHD_OPTION_END, 0, NULL}};
    if (g_cfg->tls_cert) {
        if (!(tls_pem[0] = read_pem(g_cfg->tls_cert, err)) || !(tls_pem[1] = read_pem(g_cfg->tls_key, err))) {
            free(tls_pem[0]);
            tls_pem[0] = NULL;
            return err->code;
        }
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, tls_pem[0]};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, tls_pem[1]};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                         (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
    } else if (g_cfg->require_tls && !loopback_host(g_cfg->listen_host))
        return err_set(err, MB_EINVAL,
                       "listen %s:%d is not a loopback address and would serve plain HTTP: set tls_cert and tls_key "
                       "(docs/operations.md \"HTTPS\"), or require_tls: false when a TLS proxy in front is the only "
                       "way in",
                       g_cfg->listen_host, g_cfg->listen_port);
    /* libmicrohttpd's hard connection limit, below the descriptors this process may open
     * (LevelDB, chunk files and FTP need some too). conn.c keeps headroom below it. */
    unsigned max_conns = (unsigned)g_cfg->http_max_connections;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_conns + 512) {
        unsigned fit = rl.rlim_cur > 576 ? (unsigned)(rl.rlim_cur - 512) : 64;
        log_msg(LOG_WARN, "http", "http_max_connections %u does not fit the open-files limit %llu: using %u",
                max_conns, (unsigned long long)rl.rlim_cur, fit);
        max_conns = fit;
    }
    conn_start((int)max_conns, g_cfg->http_max_connections_per_ip, g_cfg->http_header_timeout);
    /* The connection pool holds a request's headers and its read buffer, and libmicrohttpd
     * (0.9.75) clears all of it for every request on a kept-alive connection: at 256 KiB that
     * memset was 4 % of the CPU of small uploads, at 64 KiB still 98,000 instructions of a
     * 4 KiB upload's 700,000; 32 KiB halves it (docs/performance.md) and still carries headers
     * up to the 16 KiB limit with an upload (test_kernel; 16 KiB would not). */
    daemon_tcp = MHD_start_daemon(
        flags, (uint16_t)g_cfg->listen_port, NULL, NULL, http_on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)g_cfg->http_threads, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(32 * 1024), MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_URI_LOG_CALLBACK, http_on_uri, (void *)&door_tcp,
        MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, max_conns,
        MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!daemon_tcp) {
        conn_stop();
        return err_set(err, MB_EIO, "cannot listen on %s:%d (in use, not an address of this machine, or %s)",
                       g_cfg->listen_host, g_cfg->listen_port,
                       g_cfg->tls_cert ? "tls_cert and tls_key do not form a certificate and its key" : "no TLS");
    }
    if (g_cfg->redirect_host && redirect_start(err)) {
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err->code;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/mbyte.sock", g_cfg->data_dir);
    int fd = local_socket(path, err);
    if (fd < 0) {
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err->code;
    }
    local_sock_path = xstrdup(path);
    daemon_local = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, http_on_request,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_URI_LOG_CALLBACK, http_on_uri, (void *)&door_local, MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
    if (!daemon_local) {
        close(fd);
        MHD_stop_daemon(daemon_tcp);
        daemon_tcp = NULL;
        conn_stop();
        return err_set(err, MB_EIO, "cannot serve the admin socket %s", path);
    }
    http_sse_start();
    return 0;
}

static atomic_bool stop_overdue;
bool http_stop_overdue(void) { return atomic_load(&stop_overdue); }

void http_stop(void)
{
    if (daemon_redirect) {
        MHD_stop_daemon(daemon_redirect);
        daemon_redirect = NULL;
    }
    http_sse_stop();
    /* Requests in flight go on; new ones get 503. (MHD_quiesce_daemon would stop accepting,
     * but with an epoll thread pool it can abort the process in libmicrohttpd 0.9.75 when a
     * worker has taken its listen socket out of epoll: seen in CI.) */
    http_refuse_new();
    http_sse_close_all();
    cluster_gate_release_all(); /* what waits for a store's switch: 503 (or served, the switch done) */
    /* Let requests in flight finish (bounded), then stop. */
    for (int i = 0; i < 300 && http_requests_in_flight() > 0; i++) {
        http_sse_close_all();
        usleep(100 * 1000);
    }
    /* What still waits for another node (a forward's connection is parked, see cluster_fwd.c)
     * is cut short: libmicrohttpd must not stop with a connection suspended. */
    atomic_store(&stop_overdue, true);
    for (int i = 0; i < 50 && http_requests_in_flight() > 0; i++)
        usleep(100 * 1000);
    conn_stop(); /* no sweep while libmicrohttpd closes the connections */
    if (daemon_tcp)
        MHD_stop_daemon(daemon_tcp);
    if (daemon_local)
        MHD_stop_daemon(daemon_local);
    daemon_tcp = daemon_local = NULL;
    for (int i = 0; i < 2; i++) {
        free(tls_pem[i]);
        tls_pem[i] = NULL;
    }
    if (local_sock_path) {
        unlink(local_sock_path);
        free(local_sock_path);
        local_sock_path = NULL;
    }
    http_routes_fini();
}
