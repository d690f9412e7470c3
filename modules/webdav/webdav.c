/*
 * webdav.c — the webdav module: every store of a user as a WebDAV collection at
 * /dav/{store name or id}/..., RFC 4918 class 1 and 2 with RFC 4331 quotas, so file
 * managers (Windows Explorer, Finder, GNOME Files, Dolphin), rclone, davfs2 and office
 * suites mount MByte. This file authenticates, finds the store, and serves the methods that
 * change or read bytes (GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, OPTIONS); dav_xml.c
 * answers PROPFIND and PROPPATCH, dav_lock.c LOCK, UNLOCK and the If header. The module's
 * client side is apart: dav_backend.c keeps blob backends on outside WebDAV servers (the
 * `backends` setting), started and stopped from this file's init, reconfigure and fini.
 *
 * Every change goes through the kernel's file calls with the caller as `u`, so quotas,
 * the trash (DELETE moves to it when the trash module is loaded), versions, events and the
 * store's settings apply exactly as to the HTTP API. PUT is taken as a stream from its
 * route's begin (ABI minor 10) and fed to file_write_*: never buffered whole, chunked
 * bodies without Content-Length work, and a PUT that does not finish stores nothing.
 *
 * Authentication: HTTP Basic with an app password (api->apppass_check: the kernel's login
 * throttle and cached argon2id check; an app password limited to one store sees only it,
 * a read-only one can only read), the account password only when allow_account_password
 * is set, or a Bearer token / browser session the kernel already resolved.
 *
 * Threads: every handler runs on a libmicrohttpd worker. Shared state is the lock table
 * (dav_lock.c, its own mutex) and the config fields, written only by init.
 */
#include "dav.h"
#include "httppool.h"
#include <libxml/parser.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>

#define BODY_MAX (1024 * 1024) /* PROPFIND, PROPPATCH, LOCK bodies */

/* ------------------------------------------------------------- buffers --- */

void dav_buf_add(dav_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void dav_buf_str(dav_buf *b, const char *s) { dav_buf_add(b, s, strlen(s)); }

void dav_buf_fmt(dav_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        dav_buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void dav_buf_xml(dav_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': dav_buf_str(b, "&lt;"); break;
        case '>': dav_buf_str(b, "&gt;"); break;
        case '&': dav_buf_str(b, "&amp;"); break;
        case '"': dav_buf_str(b, "&quot;"); break;
        default: dav_buf_add(b, s, 1);
        }
    }
}

void dav_buf_href(dav_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("/-._~!$'()*+,;=:@", *p))
            dav_buf_add(b, (const char *)p, 1);
        else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            dav_buf_add(b, e, 3);
        }
    }
}

void dav_href(dav_req *r, dav_buf *b, const char *path, bool folder)
{
    dav_buf_str(b, "/dav/");
    if (r->root && !path)
        return;
    dav_buf_href(b, r->store_seg);
    if (path && *path) {
        dav_buf_str(b, "/");
        dav_buf_href(b, path);
    }
    if (folder)
        dav_buf_str(b, "/");
}

const char *dav_join(dav_req *r, const char *dir, const char *name)
{
    size_t a = strlen(dir), n = strlen(name);
    char *p = r->api->req_alloc(r->req, a + n + 2);
    memcpy(p, dir, a);
    size_t o = a;
    if (a)
        p[o++] = '/';
    memcpy(p + o, name, n + 1);
    return p;
}

void dav_etag_of(dav_req *r, const char *path, char out[72])
{
    json_t *info = NULL;
    mb_err e;
    out[0] = 0;
    if (r->api->file_stat(&r->user, r->sid, path, &info, &e) == 0) {
        const char *sha = json_string_value(json_object_get(info, "sha256"));
        if (sha && !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "file"))
            snprintf(out, 72, "\"%s\"", sha);
    }
    json_decref(info);
}

/* An answer with a status libmicrohttpd's problem table has no MB_E* code for (201, 204,
 * 207, 423, 502) or a WebDAV error body. */
static int reply_status(dav_req *r, int status, const char *body)
{
    if (!body)
        return r->api->reply_bytes(r->req, status, NULL, "", 0);
    return r->api->reply_bytes(r->req, status, "application/xml; charset=utf-8", body, strlen(body));
}

/* -------------------------------------------------- authentication --- */

static int challenge(dav_srv *d, mb_req *req, mb_err *err, const char *why)
{
    d->api->reply_header(req, "WWW-Authenticate", "Basic realm=\"MByte WebDAV\", charset=\"UTF-8\"");
    return d->api->err_set(err, MB_EAUTH, "%s", why);
}

static int authenticate(dav_srv *d, mb_req *req, dav_req *r, mb_err *err)
{
    const mb_api *api = d->api;
    r->scope = (mb_apppass_scope){.size = sizeof r->scope};
    const mb_user *ku = api->req_user(req); /* a Bearer token or a browser session */
    if (ku) {
        r->user = *ku;
        snprintf(r->namebuf, sizeof r->namebuf, "%s", ku->name ? ku->name : "");
        r->user.name = r->namebuf;
        r->scope.account = true;
        return 0;
    }
    const char *h = api->req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Basic ", 6))
        return challenge(d, req, err, "log in with your user name and an app password");
    const char *b64 = h + 6;
    while (*b64 == ' ')
        b64++;
    size_t cap = strlen(b64), n = 0;
    char *raw = api->req_alloc(req, cap + 1);
    if (sodium_base642bin((unsigned char *)raw, cap, b64, strlen(b64), NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) ||
        n == 0)
        return challenge(d, req, err, "the Basic credentials are not base64");
    raw[n] = 0;
    char *colon = memchr(raw, ':', n);
    if (!colon || strlen(raw) != n)
        return challenge(d, req, err, "the Basic credentials must be 'name:password'");
    *colon = 0;
    int rc = api->apppass_check(raw, colon + 1, api->req_client_ip(req), d->allow_account_password, &r->user,
                                r->namebuf, sizeof r->namebuf, &r->scope, err);
    sodium_memzero(raw, n);
    if (rc == MB_EAUTH)
        return challenge(d, req, err,
                         d->allow_account_password ? "wrong user name or password"
                                                   : "wrong user name or app password (create one in your account)");
    return rc;
}

static size_t memo_slot(uint64_t uid, const char *seg)
{
    uint64_t h = uid * 0x9E3779B97F4A7C15ull;
    for (const unsigned char *p = (const unsigned char *)seg; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    return (size_t)(h % 64);
}

/* The store this user's segment named before, if it still has that name (one store_get). */
static uint64_t memo_get(dav_req *r, const char *seg)
{
    dav_srv *d = r->d;
    size_t i = memo_slot(r->user.id, seg);
    uint64_t sid = 0;
    pthread_mutex_lock(&d->memo_mu);
    if (d->memo[i].sid && d->memo[i].uid == r->user.id && !strcmp(d->memo[i].name, seg))
        sid = d->memo[i].sid;
    pthread_mutex_unlock(&d->memo_mu);
    json_t *st = NULL;
    mb_err ig;
    if (sid && (r->api->store_get(&r->user, sid, &st, &ig) ||
                strcmp(json_string_value(json_object_get(st, "name")) ?: "", seg)))
        sid = 0; /* gone, or renamed: the full look-up decides */
    json_decref(st);
    return sid;
}

static void memo_put(dav_req *r, const char *seg, uint64_t sid)
{
    dav_srv *d = r->d;
    if (strlen(seg) >= sizeof d->memo[0].name)
        return;
    size_t i = memo_slot(r->user.id, seg);
    pthread_mutex_lock(&d->memo_mu);
    d->memo[i].uid = r->user.id;
    d->memo[i].sid = sid;
    snprintf(d->memo[i].name, sizeof d->memo[i].name, "%s", seg);
    pthread_mutex_unlock(&d->memo_mu);
}

/* Find the store named by the first segment (its name, else its id) among the caller's. */
static int resolve_store(dav_req *r, const char *seg, uint64_t *sid, mb_err *err)
{
    uint64_t known = memo_get(r, seg);
    if (known && (!r->scope.store || r->scope.store == known)) {
        *sid = known;
        return 0;
    }
    json_t *stores = NULL;
    int rc = r->api->store_list(&r->user, &stores, err);
    if (rc)
        return rc;
    size_t i;
    json_t *s;
    uint64_t found = 0;
    json_array_foreach(stores, i, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        if (name && !strcmp(name, seg)) {
            found = (uint64_t)json_integer_value(json_object_get(s, "id"));
            memo_put(r, seg, found);
            break;
        }
    }
    if (!found) {
        char *end = NULL;
        unsigned long long v = strtoull(seg, &end, 10);
        if (*seg >= '1' && *seg <= '9' && end && !*end) {
            json_array_foreach(stores, i, s) {
                if ((uint64_t)json_integer_value(json_object_get(s, "id")) == v)
                    found = v;
            }
        }
    }
    json_decref(stores);
    if (!found || (r->scope.store && r->scope.store != found))
        return r->api->err_set(err, MB_ENOENT, "no store called '%s' is yours", seg);
    *sid = found;
    return 0;
}

/* Authenticate and split /dav/<store>/<path>. */
static int prepare(dav_srv *d, mb_req *req, dav_req **out, mb_err *err)
{
    const mb_api *api = d->api;
    dav_req *r = api->req_alloc(req, sizeof *r);
    memset(r, 0, sizeof *r);
    r->d = d;
    r->api = api;
    r->req = req;
    int rc = authenticate(d, req, r, err);
    if (rc)
        return rc;
    const char *p = api->req_param(req, "path");
    p = p ? p : "";
    const char *slash = strchr(p, '/');
    if (!*p) {
        r->root = true;
        r->path = "";
    } else {
        size_t sl = slash ? (size_t)(slash - p) : strlen(p);
        char *seg = api->req_alloc(req, sl + 1);
        memcpy(seg, p, sl);
        seg[sl] = 0;
        r->store_seg = seg;
        r->path = slash ? slash + 1 : "";
        size_t pl = strlen(r->path);
        if (pl && r->path[pl - 1] == '/') {
            char *t = api->req_alloc(req, pl);
            memcpy(t, r->path, pl - 1);
            t[pl - 1] = 0;
            r->path = t;
        }
        if ((rc = resolve_store(r, seg, &r->sid, err)))
            return rc;
    }
    *out = r;
    return 0;
}

static bool writes(const char *m)
{
    return !strcmp(m, "PUT") || !strcmp(m, "DELETE") || !strcmp(m, "MKCOL") || !strcmp(m, "MOVE") ||
           !strcmp(m, "PROPPATCH") || !strcmp(m, "LOCK") || !strcmp(m, "UNLOCK") || !strcmp(m, "COPY");
}

/* macOS Finder writes AppleDouble "._name" files and ".DS_Store" next to everything. */
static bool macos_junk(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    return !strncmp(b, "._", 2) || !strcmp(b, ".DS_Store");
}

/* --------------------------------------------------------------- OPTIONS --- */

#define ALLOW "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND, PROPPATCH, LOCK, UNLOCK"

static int do_options(const mb_api *api, mb_req *req)
{
    api->reply_header(req, "DAV", "1, 2");
    api->reply_header(req, "MS-Author-Via", "DAV"); /* Windows and Office look for it */
    api->reply_header(req, "Allow", ALLOW);
    api->reply_header(req, "Accept-Ranges", "bytes");
    return api->reply_bytes(req, 200, NULL, "", 0);
}

/* ------------------------------------------------------------- GET, HEAD --- */

static int do_get(dav_req *r, mb_err *err)
{
    const mb_api *api = r->api;
    json_t *info = NULL;
    if (!r->root) {
        int rc = api->file_stat(&r->user, r->sid, r->path, &info, err);
        if (rc)
            return rc;
        bool folder = strcmp(json_string_value(json_object_get(info, "type")) ?: "", "file");
        json_decref(info);
        if (!folder) {
            if (macos_junk(r->path) && !r->d->keep_macos_metadata)
                return api->err_set(err, MB_ENOENT, "not found");
            return api->reply_file(r->req, &r->user, r->sid, r->path, err);
        }
    }
    /* A collection: a plain HTML index of its first page, for a browser pointed at the URL. */
    json_t *list = NULL;
    char *next = NULL;
    int rc = dav_page(r, r->root ? 0 : r->sid, r->path, NULL, &list, &next, err);
    if (rc)
        return rc;
    json_t *entries = r->root ? list : json_object_get(list, "entries");
    dav_buf b = {0};
    dav_buf_str(&b, "<!DOCTYPE html><meta charset=utf-8><title>MByte WebDAV</title><ul>\n");
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name)
            continue;
        uint64_t id = (uint64_t)json_integer_value(json_object_get(e, "id"));
        if (r->root && r->scope.store && id != r->scope.store)
            continue;
        bool folder = r->root || strcmp(json_string_value(json_object_get(e, "type")) ?: "", "file");
        dav_buf_str(&b, "<li><a href=\"");
        dav_href(r, &b, r->root ? NULL : r->path, true);
        dav_buf_href(&b, name);
        dav_buf_str(&b, folder ? "/\">" : "\">");
        dav_buf_xml(&b, name);
        dav_buf_str(&b, "</a>\n");
    }
    dav_buf_str(&b, "</ul>\n");
    if (next) { /* a page is what a browser gets; a WebDAV client's PROPFIND lists them all */
        dav_buf_fmt(&b, "<p>The first %zu of %lld entries; a WebDAV client or the web page lists them all.</p>\n",
                    json_array_size(entries), (long long)json_integer_value(json_object_get(list, "total")));
        free(next);
    }
    json_decref(list);
    rc = api->reply_bytes(r->req, 200, "text/html; charset=utf-8", b.p, b.n);
    free(b.p);
    return rc;
}

/* -------------------------------------------------------------------- PUT --- */

typedef struct put_ctx {
    dav_req *r;
    mb_file_writer *w; /* NULL: a discarded macOS metadata file */
} put_ctx;

static int put_data(mb_req *req, void *ctx, const void *buf, size_t n, mb_err *err)
{
    (void)req;
    put_ctx *p = ctx;
    return p->w ? p->r->api->file_write_data(p->w, buf, n, err) : 0;
}

static int put_end(mb_req *req, void *ctx, mb_err *err)
{
    (void)req;
    put_ctx *p = ctx;
    dav_req *r = p->r;
    if (!p->w)
        return reply_status(r, 201, NULL);
    json_t *info = NULL;
    bool created = false;
    mb_file_writer *w = p->w;
    p->w = NULL; /* commit frees it in every case */
    int rc = r->api->file_write_commit(w, &info, &created, err);
    if (rc == MB_EEXIST)
        err->code = rc = MB_EPRECOND; /* If-None-Match: * lost a race */
    if (rc)
        return rc;
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s\"", json_string_value(json_object_get(info, "sha256")));
    json_decref(info);
    r->api->reply_header(r->req, "ETag", etag);
    return reply_status(r, created ? 201 : 204, NULL);
}

static void put_abort(mb_req *req, void *ctx)
{
    (void)req;
    put_ctx *p = ctx;
    if (p->w)
        p->r->api->file_write_abort(p->w);
    p->w = NULL;
}

static const mb_body_sink put_sink = {sizeof(mb_body_sink), put_data, put_end, put_abort};

static int put_begin(dav_req *r, mb_err *err)
{
    const mb_api *api = r->api;
    if (r->root || !*r->path)
        return api->err_set(err, MB_EMETHOD, "PUT needs a file path inside a store");
    if (api->req_header(r->req, "Content-Range"))
        return api->err_set(err, MB_EINVAL, "partial PUT (Content-Range) is not supported; send the whole file");
    put_ctx *p = api->req_alloc(r->req, sizeof *p);
    p->r = r;
    p->w = NULL;
    if (macos_junk(r->path) && !r->d->keep_macos_metadata)
        return api->req_body_sink(r->req, &put_sink, p, err);
    int rc = dav_lock_check(r, r->path, false, err);
    if (rc)
        return rc;
    int flags = 0;
    const char *inm = api->req_header(r->req, "If-None-Match");
    const char *im = api->req_header(r->req, "If-Match");
    if (inm && !strcmp(inm, "*"))
        flags |= MB_FS_NO_OVERWRITE;
    if (im) {
        char etag[72];
        dav_etag_of(r, r->path, etag);
        if (!etag[0] || (strcmp(im, "*") && !strstr(im, etag)))
            return api->err_set(err, MB_EPRECOND, "If-Match: '%s' has changed or does not exist", r->path);
    }
    int64_t expected = -1;
    const char *cl = api->req_header(r->req, "Content-Length");
    if (!cl)
        cl = api->req_header(r->req, "X-Expected-Entity-Length"); /* macOS Finder's chunked PUT */
    if (cl && *cl >= '0' && *cl <= '9')
        expected = strtoll(cl, NULL, 10);
    rc = api->file_write_begin(&r->user, r->sid, r->path, expected, NULL, flags, &p->w, err);
    if (rc == MB_EEXIST && (flags & MB_FS_NO_OVERWRITE))
        err->code = rc = MB_EPRECOND;
    if (rc)
        return rc;
    return api->req_body_sink(r->req, &put_sink, p, err);
}

/* ---------------------------------------------------- DELETE and MKCOL --- */

static int stat_type(dav_req *r, const char *path, bool *folder, mb_err *err)
{
    json_t *info = NULL;
    int rc = r->api->file_stat(&r->user, r->sid, path, &info, err);
    if (!rc)
        *folder = strcmp(json_string_value(json_object_get(info, "type")) ?: "", "file");
    json_decref(info);
    return rc;
}

static int do_delete(dav_req *r, mb_err *err)
{
    const mb_api *api = r->api;
    if (r->root || !*r->path)
        return api->err_set(err, MB_EPERM, "a store's root cannot be deleted over WebDAV");
    bool folder;
    int rc = stat_type(r, r->path, &folder, err);
    if (rc)
        return rc;
    const char *depth = api->req_header(r->req, "Depth");
    if (folder && depth && strcasecmp(depth, "infinity"))
        return api->err_set(err, MB_EINVAL, "DELETE of a collection needs Depth: infinity");
    if ((rc = dav_lock_check(r, r->path, true, err)))
        return rc;
    if ((rc = api->file_delete(&r->user, r->sid, r->path, MB_FS_RECURSIVE, err)))
        return rc;
    dav_props_drop(r, r->path);
    dav_locks_drop(r, r->path);
    return reply_status(r, 204, NULL);
}

static int do_mkcol(dav_req *r, size_t body_len, mb_err *err)
{
    const mb_api *api = r->api;
    if (body_len)
        return reply_status(r, 415, NULL); /* RFC 4918 9.3: a body MKCOL does not understand */
    if (r->root || !*r->path)
        return api->err_set(err, MB_EMETHOD, "the collection exists already");
    bool folder;
    mb_err ig;
    if (stat_type(r, r->path, &folder, &ig) == 0)
        return api->err_set(err, MB_EMETHOD, "'%s' exists already", r->path);
    int rc = dav_lock_check(r, r->path, false, err);
    if (rc)
        return rc;
    if ((rc = api->folder_create(&r->user, r->sid, r->path, 0, NULL, err)))
        return rc;
    return reply_status(r, 201, NULL);
}

/* ------------------------------------------------------ COPY and MOVE --- */

static int do_copymove(dav_req *r, bool move, mb_err *err)
{
    const mb_api *api = r->api;
    const char *dest = api->req_header(r->req, "Destination");
    if (!dest)
        return api->err_set(err, MB_EINVAL, "%s needs a Destination header", move ? "MOVE" : "COPY");
    if (r->root || (move && !*r->path))
        return api->err_set(err, MB_EPERM, "a store's root cannot be moved");
    size_t dn = strlen(dest) + 1;
    char *dp = api->req_alloc(r->req, dn);
    int rc = dav_uri_path(dest, dp, dn);
    if (rc == MB_ENOENT)
        return reply_status(r, 502, NULL); /* another server, or outside /dav/ */
    if (rc)
        return api->err_set(err, MB_EINVAL, "Destination: not a valid path");
    char *slash = strchr(dp, '/');
    const char *to = slash ? slash + 1 : "";
    if (slash)
        *slash = 0;
    uint64_t dsid = 0;
    mb_err ig;
    if (!*dp || resolve_store(r, dp, &dsid, &ig))
        return reply_status(r, 502, NULL); /* not a store of the caller's: unreachable (RFC 4918 9.8.5) */
    size_t tl = strlen(to);
    if (tl && to[tl - 1] == '/')
        ((char *)to)[tl - 1] = 0;
    if (!*to || (dsid == r->sid && !strcmp(to, r->path)))
        return api->err_set(err, MB_EPERM, "the destination is the source or the store's root");
    const char *ow = api->req_header(r->req, "Overwrite");
    bool overwrite = !ow || (ow[0] != 'F' && ow[0] != 'f');
    const char *depth = api->req_header(r->req, "Depth");
    bool shallow = false;
    if (depth && !strcasecmp(depth, "0") && !move)
        shallow = true;
    else if (depth && strcasecmp(depth, "infinity"))
        return api->err_set(err, MB_EINVAL, "Depth: %s only takes 0 or infinity", move ? "MOVE" : "COPY");
    bool sfolder, dfolder;
    if ((rc = stat_type(r, r->path, &sfolder, err)))
        return rc;
    size_t sl = strlen(r->path);
    if (dsid == r->sid && sfolder && (!*r->path || (!strncmp(to, r->path, sl) && to[sl] == '/')))
        return api->err_set(err, MB_EPERM, "a collection cannot go into itself");
    dav_req dr = *r; /* the destination's side: locks and dead properties are per store */
    dr.sid = dsid;
    dr.store_seg = dp;
    dr.path = to;
    bool exists = stat_type(&dr, to, &dfolder, &ig) == 0;
    if (exists && !overwrite)
        return api->err_set(err, MB_EPRECOND, "'%s' exists and Overwrite is F", to);
    if ((rc = dav_if_check(r, err)))
        return rc;
    if (move && (rc = dav_lock_check(r, r->path, true, err)))
        return rc;
    if ((rc = dav_lock_check(&dr, to, true, err)))
        return rc;
    if (exists) {
        if ((rc = api->file_delete(&r->user, dsid, to, MB_FS_RECURSIVE, err)))
            return rc;
        dav_props_drop(&dr, to);
        dav_locks_drop(&dr, to);
    }
    if (shallow && sfolder)
        rc = api->folder_create(&r->user, dsid, to, 0, NULL, err);
    else if (dsid != r->sid)
        rc = dav_copy_across(r, dsid, to, sfolder, err);
    else if (move)
        rc = api->file_move(&r->user, r->sid, r->path, to, 0, NULL, err);
    else
        rc = api->file_copy(&r->user, r->sid, r->path, to, 0, NULL, err);
    if (rc)
        return rc;
    bool renamed = move && dsid == r->sid;
    if (!(shallow && sfolder))
        dav_props_copy(r, r->path, dsid, to, renamed);
    if (move && !renamed) { /* across stores: everything is copied, the source goes now */
        if ((rc = api->file_delete(&r->user, r->sid, r->path, MB_FS_RECURSIVE, err)))
            return rc;
        dav_props_drop(r, r->path);
    }
    if (move)
        dav_locks_drop(r, r->path);
    return reply_status(r, exists ? 204 : 201, NULL);
}

/* ------------------------------------------------------------ dispatch --- */

static int dispatch(dav_req *r, const void *body, size_t len, mb_err *err)
{
    const mb_api *api = r->api;
    const char *m = api->req_method(r->req);
    if (writes(m) && r->scope.read_only)
        return api->err_set(err, MB_EPERM, "this app password is read-only");
    if (r->root && strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "PROPFIND"))
        return api->err_set(err, MB_EMETHOD, "%s is not allowed on /dav/ (the list of your stores)", m);
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD"))
        return do_get(r, err);
    if (!strcmp(m, "PROPFIND"))
        return dav_propfind(r, body, len, err);
    if (!strcmp(m, "PROPPATCH"))
        return dav_proppatch(r, body, len, err);
    if (!strcmp(m, "DELETE"))
        return do_delete(r, err);
    if (!strcmp(m, "MKCOL"))
        return do_mkcol(r, len, err);
    if (!strcmp(m, "COPY") || !strcmp(m, "MOVE"))
        return do_copymove(r, !strcmp(m, "MOVE"), err);
    if (!strcmp(m, "LOCK"))
        return dav_lock_handle(r, body, len, err);
    if (!strcmp(m, "UNLOCK"))
        return dav_unlock_handle(r, err);
    return api->err_set(err, MB_EMETHOD, "%s is not a WebDAV method here", m);
}

/* A small body (PROPFIND, PROPPATCH, LOCK, a MKCOL with one) gathered by a sink, so the
 * request is authenticated once, from its headers. */
typedef struct body_ctx {
    dav_req *r;
    dav_buf b;
    bool too_big;
} body_ctx;

static int body_data(mb_req *req, void *ctx, const void *buf, size_t n, mb_err *err)
{
    (void)req;
    body_ctx *c = ctx;
    if (c->b.n + n > BODY_MAX)
        return c->r->api->err_set(err, MB_ETOOBIG, "the request body is larger than %d bytes", BODY_MAX);
    dav_buf_add(&c->b, buf, n);
    return 0;
}

static int body_end(mb_req *req, void *ctx, mb_err *err)
{
    (void)req;
    body_ctx *c = ctx;
    int rc = dispatch(c->r, c->b.p, c->b.n, err);
    free(c->b.p);
    c->b.p = NULL;
    return rc;
}

static void body_abort(mb_req *req, void *ctx)
{
    (void)req;
    body_ctx *c = ctx;
    free(c->b.p);
    c->b.p = NULL;
}

static const mb_body_sink body_sink = {sizeof(mb_body_sink), body_data, body_end, body_abort};

static bool has_body(const mb_api *api, mb_req *req)
{
    const char *cl = api->req_header(req, "Content-Length");
    if (api->req_header(req, "Transfer-Encoding"))
        return true;
    return cl && strcmp(cl, "0");
}

/* Every method's begin: the headers are in, no byte of the body was read. */
static int h_begin(mb_req *req, void *state, mb_err *err)
{
    dav_srv *d = state;
    const mb_api *api = d->api;
    const char *m = api->req_method(req);
    if (!strcmp(m, "OPTIONS"))
        return do_options(api, req); /* before credentials: clients probe with it */
    dav_req *r;
    int rc = prepare(d, req, &r, err);
    if (rc)
        return rc;
    /* A store another cluster node keeps, named by its name (by its id the kernel forwarded the
     * request already): that node answers all of it, so its locks, dead properties and streamed
     * writes hold whichever node the client reached (docs/cluster.md). */
    if (!r->root && api->size > offsetof(mb_api, forward_store) && (rc = api->forward_store(req, r->sid, err)))
        return rc < 0 ? rc : 0;
    if (!strcmp(m, "PUT")) {
        if (r->scope.read_only)
            return api->err_set(err, MB_EPERM, "this app password is read-only");
        if (r->root)
            return api->err_set(err, MB_EMETHOD, "PUT needs a file path inside a store");
        return put_begin(r, err);
    }
    if (!has_body(api, req))
        return dispatch(r, NULL, 0, err);
    body_ctx *c = api->req_alloc(req, sizeof *c);
    memset(c, 0, sizeof *c);
    c->r = r;
    return api->req_body_sink(req, &body_sink, c, err);
}

/* Reached only if a begin left the body to the kernel (it never does); kept correct. */
static int h_route(mb_req *req, void *state, mb_err *err)
{
    dav_srv *d = state;
    if (!strcmp(d->api->req_method(req), "OPTIONS"))
        return do_options(d->api, req);
    dav_req *r;
    int rc = prepare(d, req, &r, err);
    if (rc)
        return rc;
    const void *b = NULL;
    size_t n = 0;
    d->api->req_body(req, &b, &n);
    return dispatch(r, b, n, err);
}

/* RFC 4331 (dav.h). */
void dav_quota(dav_req *r, int64_t *avail, int64_t *used)
{
    const mb_api *api = r->api;
    json_t *u = NULL, *s = NULL;
    mb_err e;
    *used = 0;
    *avail = -1;
    if (api->usage_get(r->sid, 0, &u, &e) == 0)
        *used = json_integer_value(json_object_get(u, "bytes"));
    json_decref(u);
    if (api->store_settings_get(r->sid, &s, &e) == 0) {
        int64_t max = json_integer_value(json_object_get(s, "max_bytes"));
        if (max > 0)
            *avail = max > *used ? max - *used : 0;
    }
    json_decref(s);
    struct statvfs vs;
    if (statvfs(api->data_dir(), &vs) == 0) {
        int64_t disk = (int64_t)vs.f_bavail * (int64_t)vs.f_frsize;
        if (*avail < 0 || disk < *avail)
            *avail = disk;
    }
}

/* --------------------------------------------------------- init and fini --- */

static void read_config(dav_srv *d, const json_t *c)
{
    d->allow_account_password = json_is_true(json_object_get(c, "allow_account_password"));
    d->keep_macos_metadata = json_is_true(json_object_get(c, "keep_macos_metadata"));
    d->lock_timeout_max = json_integer_value(json_object_get(c, "lock_timeout_max"));
    d->propfind_infinity_max = json_integer_value(json_object_get(c, "propfind_infinity_max"));
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium failed to start");
    xmlInitParser(); /* once, before HTTP workers parse in parallel */
    dav_srv *d = calloc(1, sizeof *d);
    if (!d)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    d->self = self;
    d->api = api;
    read_config(d, config);
    /* A store's dead properties and locks travel with it between cluster nodes (docs/cluster.md). */
    int rc = api->size > offsetof(mb_api, store_records) ? api->store_records(self, "p/", err) : 0;
    if (!rc && api->size > offsetof(mb_api, store_records))
        rc = api->store_records(self, "l/", err);
    if (!rc)
        rc = dav_backends_init(self, api, config, &d->backends, err);
    if (rc) {
        free(d);
        return rc;
    }
    dav_locks_init(&d->locks);
    dav_locks_load(d);
    pthread_mutex_init(&d->memo_mu, NULL);
    *state = d;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    dav_srv *d = state;
    dav_locks_free(&d->locks);
    dav_backends_fini(d->backends); /* no backend call is in flight: the kernel drained the module */
    pthread_mutex_destroy(&d->memo_mu);
    free(d);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    dav_srv *d = state;
    int rc = dav_backends_reconfigure(d->backends, config, err);
    if (rc)
        return rc;
    read_config(d, config);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "allow_account_password", MB_CFG_BOOL, "false", 0, 0},
    {sizeof(mb_config_key), "keep_macos_metadata", MB_CFG_BOOL, "false", 0, 0},
    {sizeof(mb_config_key), "lock_timeout_max", MB_CFG_INT, "86400", 60, 604800},
    {sizeof(mb_config_key), "propfind_infinity_max", MB_CFG_INT, "100000", 0, 100000000},
    /* the client side (dav_backend.c): blob backends on outside WebDAV servers */
    {sizeof(mb_config_key), "backends", MB_CFG_MAP, "{}", 0, 0},
    {sizeof(mb_config_key), "backend_max_connections", MB_CFG_INT, "8", 1, HP_MAX_CONNECTIONS},
    {sizeof(mb_config_key), "backend_retries", MB_CFG_INT, "4", 0, 20},
    {sizeof(mb_config_key), "backend_retry_base_ms", MB_CFG_INT, "200", 1, 60000},
    {sizeof(mb_config_key), "backend_timeout_ms", MB_CFG_INT, "60000", 100, 3600000},
    {sizeof(mb_config_key), "backend_connect_timeout_ms", MB_CFG_INT, "5000", 100, 600000},
    {0},
};

#define DAV_ROUTE(m) {sizeof(mb_route), m, "/dav/{path*}", MB_ROLE_NONE, h_route, h_begin}
static const mb_route routes[] = {
    DAV_ROUTE("OPTIONS"), DAV_ROUTE("GET"),      DAV_ROUTE("HEAD"),      DAV_ROUTE("PUT"),
    DAV_ROUTE("DELETE"),  DAV_ROUTE("MKCOL"),    DAV_ROUTE("COPY"),      DAV_ROUTE("MOVE"),
    DAV_ROUTE("PROPFIND"), DAV_ROUTE("PROPPATCH"), DAV_ROUTE("LOCK"),    DAV_ROUTE("UNLOCK"),
    /* Windows' mini-redirector probes the server's root with OPTIONS before it maps a drive
     * (and /dav itself is /dav/{path*} with an empty path): answer it like /dav/'s. */
    {sizeof(mb_route), "OPTIONS", "/", MB_ROLE_NONE, h_route, h_begin},
    {0},
};

/* This node keeps a store now (taken over, or moved here): its locks are what its records say. A
 * filter, so it runs before the node serves the store's first request (an observer ran later, on the
 * loop thread, and a lock did not bind the first requests). */
static int f_store(const char *event, json_t *payload, void *state, mb_err *err)
{
    (void)event, (void)err;
    json_int_t sid = json_integer_value(json_object_get(payload, "store"));
    if (sid > 0)
        dav_locks_reload(state, (uint64_t)sid);
    return 0;
}

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "cluster.store", MB_HOOK_FILTER, 500, f_store, NULL, NULL, NULL, NULL},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "webdav",
    .version = "1.0.0",
    .description = "WebDAV (RFC 4918 class 1 and 2, RFC 4331 quotas) at /dav/<store>/: mount a store in any file manager; blob backends on outside WebDAV servers",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
