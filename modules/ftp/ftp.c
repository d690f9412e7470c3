/*
 * modules/ftp — an FTP/FTPS server on the kernel's libevent loop (no thread per session).
 *
 * Doors: RFC 959 core, RFC 2389 FEAT/OPTS (UTF8), RFC 2428 EPSV/EPRT (IPv6), RFC 3659
 * MLSD/MLST/SIZE/MDTM/REST STREAM, RFC 4217 explicit FTPS (AUTH TLS, PBSZ, PROT P, TLS on
 * the data channel with session reuse required by default) and an optional implicit-TLS
 * port. docs/ftp.md lists every command and reply; ftp.h lists the files and what each owns.
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
#include "ftp.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        f->base, sess_accept_cb, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
                                   LEV_OPT_REUSEABLE_PORT,
        128, (struct sockaddr *)&a, al);
    if (!l)
        f->api->err_set(e, MB_EIO, "cannot listen on %s: %s", addr, strerror(errno));
    return l;
}

/* ---------------------------------------------------- connection details --- */

/* The address text and port of a "host:port" / "[v6]:port" listen setting; false if it does
 * not parse (init refused it already, so only for safety). */
static bool listen_parts(const char *addr, char *host, size_t n, int *port, bool *any, bool *loopback)
{
    struct sockaddr_storage a;
    int al = sizeof a;
    if (!addr[0] || evutil_parse_sockaddr_port(addr, (struct sockaddr *)&a, &al))
        return false;
    if (a.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)n);
        *port = ntohs(in->sin_port);
        *any = in->sin_addr.s_addr == htonl(INADDR_ANY);
        *loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)&a;
        inet_ntop(AF_INET6, &in->sin6_addr, host, (socklen_t)n);
        *port = ntohs(in->sin6_port);
        *any = IN6_IS_ADDR_UNSPECIFIED(&in->sin6_addr);
        *loopback = IN6_IS_ADDR_LOOPBACK(&in->sin6_addr);
    }
    return true;
}

/* The name the client reached this server by (the Host header without its port), for a
 * listener on every address: the FTP server answers there too. */
static void request_host(const mb_api *api, mb_req *req, char *host, size_t n)
{
    const char *h = api->req_header(req, "Host");
    if (!h || !*h)
        return;
    size_t l = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":");
    if (h[0] == '[' && l >= 2) /* "[::1]:8080": the address without the brackets */
        snprintf(host, n, "%.*s", (int)(l - 2), h + 1);
    else
        snprintf(host, n, "%.*s", (int)l, h);
}

/* GET /api/v1/ftp: how the logged-in user connects, from what this copy of the module really
 * listens on (conf.d/ftp.yaml and the MBYTE_FTP_* overrides), never from shipped defaults. */
static int h_info(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    ftp_srv *f = state;
    const mb_api *api = f->api;
    char host[INET6_ADDRSTRLEN + 1] = "", ihost[INET6_ADDRSTRLEN + 1] = "";
    int port = 0, iport = 0;
    bool any = false, loopback = false, iany = false, iloop = false;
    listen_parts(f->listen, host, sizeof host, &port, &any, &loopback);
    if (any)
        request_host(api, req, host, sizeof host);
    json_t *implicit = json_null();
    if (f->ilst && listen_parts(f->implicit_listen, ihost, sizeof ihost, &iport, &iany, &iloop)) {
        if (iany)
            request_host(api, req, ihost, sizeof ihost);
        implicit = json_pack("{s:s, s:i}", "host", ihost, "port", iport);
    }
    json_t *out = json_pack("{s:s, s:i, s:s, s:b, s:o, s:s, s:{s:i, s:i}, s:s?, s:b, s:s}", "host", host, "port",
                            port, "tls", "explicit", "tls_required", f->require_tls, "implicit_tls", implicit,
                            "username", api->req_user(req)->name, "passive_ports", "min", f->pasv_min, "max",
                            f->pasv_max, "passive_address", f->pasv_address[0] ? f->pasv_address : NULL,
                            "loopback_only", loopback, "listen", f->listen);
    return api->reply_json(req, 200, out);
}

static void srv_free(ftp_srv *f)
{
    while (f->sessions) {
        sess *s = f->sessions;
        reply(s, 421, "Service shutting down; reconnect");
        if (s->ctl)
            sess_flush_now(s);
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
    {sizeof(mb_config_key), "bandwidth_limit", MB_CFG_INT, "0", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/ftp", MB_ROLE_USER, h_info},
    {sizeof(mb_route), "POST", "/api/v1/ftp/passwords", MB_ROLE_USER, apppass_create},
    {sizeof(mb_route), "GET", "/api/v1/ftp/passwords", MB_ROLE_USER, apppass_list},
    {sizeof(mb_route), "DELETE", "/api/v1/ftp/passwords/{id}", MB_ROLE_USER, apppass_delete},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
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
