/*
 * files_http.c — the HTTP door of the file service (docs/api.md "## Files"): stores, PUT
 * upload streamed into the chunker, GET/HEAD download streamed out with Range, If-Range,
 * ETag and the other RFC 9110 conditionals, listing, folders, move, copy, delete, and the
 * admin fsck. Every handler is a thin translation between HTTP and fs.h: rules, filters
 * and events all live in fs.c, so FTP and modules behave the same.
 *
 * Threads: libmicrohttpd workers. Each request owns its writer or reader; nothing here is
 * shared between requests.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include <time.h>

#define MAX_RANGES 32

/* ------------------------------------------------------------ helpers --- */

static int req_sid(mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = http_req_param(req, "sid");
    if (!s || !parse_u64(s, sid))
        return err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    return 0;
}

/* The store of the path and the JSON body of a POST: the body (borrowed), or NULL with err. */
static json_t *req_sid_body(mb_req *req, uint64_t *sid, mb_err *err)
{
    return req_sid(req, sid, err) ? NULL : http_req_json(req, err);
}

static const char *req_path(mb_req *req)
{
    const char *p = http_req_param(req, "path");
    return p ? p : "";
}

static bool query_true(mb_req *req, const char *name)
{
    const char *v = http_req_query(req, name);
    return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}

/* A JSON string field, refusing embedded NUL (jansson keeps it, C strings would cut it). */
static int json_path(json_t *b, const char *field, bool required, const char **out, mb_err *err)
{
    json_t *v = json_object_get(b, field);
    if (!v && !required) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return err_set(err, MB_EINVAL, "%s: must be a string", field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return err_set(err, MB_EINVAL, "%s: may not contain NUL", field);
    *out = json_string_value(v);
    return 0;
}

static void http_date(int64_t t, char out[64])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static bool parse_http_date(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *e = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!e || *e)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* Does an If-Match / If-None-Match list name our tag? weak: W/ prefixes are ignored. */
static bool etag_list_matches(const char *list, const char *sha, bool weak)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return true;
        bool is_weak = false;
        if (p[0] == 'W' && p[1] == '/') {
            is_weak = true;
            p += 2;
        }
        if (*p != '"')
            return false;
        const char *q = strchr(p + 1, '"');
        if (!q)
            return false;
        if ((weak || !is_weak) && (size_t)(q - p - 1) == strlen(sha) && !strncmp(p + 1, sha, 64))
            return true;
        p = q + 1;
    }
    return false;
}

/* ------------------------------------------------------------- stores --- */

static int h_stores(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *out;
    int rc = fs_stores_list(http_req_user(req), &out, err);
    if (!rc) /* cluster mode: with the stores other nodes keep (docs/cluster.md) */
        cluster_fwd_stores(req, http_req_user(req)->id, out);
    return rc ? rc : http_reply_json(req, 200, out);
}

/* ------------------------------------------------------------- upload --- */

/* Content-Digest: sha-256=:BASE64:   Digest: SHA-256=BASE64   X-Checksum-Sha256: hex */
static int client_digest(mb_req *req, char out[65], bool *have, mb_err *err)
{
    *have = false;
    const char *cd = http_req_header(req, "Content-Digest");
    const char *dg = http_req_header(req, "Digest");
    const char *xc = http_req_header(req, "X-Checksum-Sha256");
    char b64[128] = "";
    if (cd) {
        const char *p = strcasestr(cd, "sha-256=:");
        if (p) {
            p += 9;
            const char *q = strchr(p, ':');
            if (!q || (size_t)(q - p) >= sizeof b64)
                return err_set(err, MB_EINVAL, "Content-Digest: sha-256 must be :base64:");
            memcpy(b64, p, (size_t)(q - p));
            b64[q - p] = 0;
        }
    }
    if (!b64[0] && dg) {
        const char *p = strcasestr(dg, "sha-256=");
        if (p) {
            p += 8;
            size_t l = strcspn(p, ", ");
            if (l >= sizeof b64)
                return err_set(err, MB_EINVAL, "Digest: SHA-256 is malformed");
            memcpy(b64, p, l);
            b64[l] = 0;
        }
    }
    if (b64[0]) {
        uint8_t raw[32];
        size_t n = 0;
        if (sodium_base642bin(raw, sizeof raw, b64, strlen(b64), NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) ||
            n != 32)
            return err_set(err, MB_EINVAL, "the client digest is not a base64 SHA-256");
        hex_encode(raw, 32, out);
        *have = true;
    } else if (xc) {
        if (strlen(xc) != 64 || strspn(xc, "0123456789abcdefABCDEF") != 64)
            return err_set(err, MB_EINVAL, "X-Checksum-Sha256: must be 64 hex digits");
        for (int i = 0; i < 64; i++)
            out[i] = (char)(xc[i] >= 'A' && xc[i] <= 'F' ? xc[i] - 'A' + 'a' : xc[i]);
        out[64] = 0;
        *have = true;
    }
    return 0;
}

static int put_begin(mb_req *req, void **ctx, mb_err *err)
{
    *ctx = NULL;
    uint64_t sid;
    int rc = req_sid(req, &sid, err);
    if (rc)
        return rc;
    const mb_user *u = http_req_user(req);
    const char *path = req_path(req);
    int flags = query_true(req, "parents") ? FS_PARENTS : 0;
    const char *inm = http_req_header(req, "If-None-Match");
    const char *im = http_req_header(req, "If-Match");
    if (inm && !strcmp(inm, "*"))
        flags |= FS_NO_OVERWRITE;
    char match_sha[65] = "";
    if (im) {
        json_t *info = NULL, *store = NULL;
        if ((rc = fs_store_get(u, sid, &store, err))) /* another user's store stays a 404 */
            return rc;
        json_decref(store);
        rc = fs_stat(u, sid, path, &info, err);
        if (rc == MB_ENOENT)
            rc = err_set(err, MB_EPRECOND, "If-Match: '%s' does not exist", path);
        if (!rc && strcmp(json_string_value(json_object_get(info, "type")), "file"))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", path);
        if (!rc) {
            const char *sha = json_string_value(json_object_get(info, "sha256"));
            if (!etag_list_matches(im, sha, false))
                rc = err_set(err, MB_EPRECOND, "If-Match: '%s' has changed", path);
            else
                snprintf(match_sha, sizeof match_sha, "%s", sha);
        }
        json_decref(info);
        if (rc)
            return rc;
    }
    char digest[65];
    bool have;
    if ((rc = client_digest(req, digest, &have, err)))
        return rc;
    int64_t expected = -1;
    const char *cl = http_req_header(req, "Content-Length");
    uint64_t n;
    if (cl && parse_u64(cl, &n))
        expected = (int64_t)n;
    fs_writer *w;
    rc = fs_write_begin(u, sid, path, expected, have ? digest : NULL, flags, &w, err);
    if (rc == MB_EEXIST && (flags & FS_NO_OVERWRITE))
        err->code = rc = MB_EPRECOND; /* If-None-Match: * failed: 412, not 409 */
    if (rc)
        return rc;
    if (match_sha[0] && strcmp(im, "*"))
        fs_write_if_match(w, match_sha);
    *ctx = w;
    return 0;
}

static int put_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    (void)req;
    return fs_write_data(ctx, buf, len, err);
}

static int put_end(mb_req *req, void *ctx, mb_err *err)
{
    json_t *info = NULL;
    bool created = false;
    int rc = fs_write_commit(ctx, &info, &created, err);
    if (rc == MB_EEXIST && http_req_header(req, "If-None-Match"))
        err->code = rc = MB_EPRECOND;
    if (rc)
        return rc;
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s\"", json_string_value(json_object_get(info, "sha256")));
    http_reply_header(req, "ETag", etag);
    return http_reply_json(req, created ? 201 : 200, info);
}

static void put_abort(mb_req *req, void *ctx)
{
    (void)req;
    fs_write_abort(ctx);
}

static const http_stream_ops put_ops = {put_begin, put_data, put_end, put_abort};

/* ----------------------------------------------------------- download --- */

typedef struct seg {
    uint64_t start; /* position in the response body */
    uint64_t off;   /* file offset (data segments) */
    uint64_t len;
    char *text;     /* literal bytes (multipart headers), or NULL for file data */
} seg;

typedef struct dl {
    fs_reader *r;
    seg *segs;
    size_t n;
    uint64_t total;
    char *path;
} dl;

static void dl_free(void *cls)
{
    dl *d = cls;
    fs_close(d->r);
    for (size_t i = 0; i < d->n; i++)
        free(d->segs[i].text);
    free(d->segs);
    free(d->path);
    free(d);
}

static ssize_t dl_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    dl *d = cls;
    if (pos >= d->total)
        return -1;
    size_t i = 0;
    while (i + 1 < d->n && d->segs[i + 1].start <= pos)
        i++;
    seg *s = &d->segs[i];
    uint64_t in = pos - s->start;
    size_t k = s->len - in < max ? (size_t)(s->len - in) : max;
    if (s->text) {
        memcpy(buf, s->text + in, k);
        return (ssize_t)k;
    }
    mb_err e = {0};
    ssize_t n = fs_read(d->r, s->off + in, buf, k, &e);
    if (n <= 0) {
        log_error("download of %s stopped at byte %llu: %s", d->path, (unsigned long long)pos,
                  n ? e.msg : "the file is shorter than its record");
        return -2; /* the connection is cut: a client never takes bad bytes for good ones */
    }
    return n;
}

static void dl_add(dl *d, uint64_t off, uint64_t len, char *text)
{
    d->segs = xrealloc(d->segs, (d->n + 1) * sizeof *d->segs);
    d->segs[d->n] = (seg){.start = d->total, .off = off, .len = len, .text = text};
    d->n++;
    d->total += len;
}

/* Parse "bytes=..." into satisfiable ranges. Returns the count, 0 when none is satisfiable
 * (416), or -1 when the header is to be ignored (bad syntax, other unit, too many). */
int parse_ranges(const char *h, uint64_t size, brange *out)
{
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "bytes=", 6))
        return -1;
    h += 6;
    int n = 0, seen = 0;
    while (*h) {
        while (*h == ' ' || *h == '\t')
            h++;
        if (*h == ',') {
            h++;
            continue;
        }
        if (++seen > MAX_RANGES)
            return -1;
        uint64_t a = 0, b = 0;
        bool ha = false, hb = false;
        while (*h >= '0' && *h <= '9') {
            if (a > (UINT64_MAX - 9) / 10)
                return -1;
            a = a * 10 + (uint64_t)(*h++ - '0');
            ha = true;
        }
        if (*h++ != '-')
            return -1;
        while (*h >= '0' && *h <= '9') {
            if (b > (UINT64_MAX - 9) / 10)
                return -1;
            b = b * 10 + (uint64_t)(*h++ - '0');
            hb = true;
        }
        while (*h == ' ' || *h == '\t')
            h++;
        if (*h && *h != ',')
            return -1;
        if (!ha && !hb)
            return -1;
        if (ha && hb && b < a)
            return -1;
        brange r;
        if (!ha) { /* suffix */
            if (b == 0 || size == 0)
                continue;
            r.first = b >= size ? 0 : size - b;
            r.last = size - 1;
        } else {
            if (a >= size)
                continue;
            r.first = a;
            r.last = hb && b < size ? b : size - 1;
        }
        out[n++] = r;
    }
    return seen ? n : -1;
}

/* Types a browser may render inline without running anything of ours. */
static bool inline_safe(const char *ct)
{
    static const char *ok[] = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
                               "text/plain", "application/pdf", "application/json", "text/csv", "text/markdown"};
    if (!strncmp(ct, "audio/", 6) || !strncmp(ct, "video/", 6))
        return true;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(ct, ok[i]))
            return true;
    return false;
}

/* RFC 6266: an ASCII fallback with the risky characters replaced, plus filename* (RFC 8187). */
static char *disposition(arena *a, const char *kind, const char *name)
{
    size_t n = strlen(name);
    char *fb = arena_alloc(a, n + 1), *enc = arena_alloc(a, 3 * n + 1);
    size_t j = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        fb[j++] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '%' || c == ';') ? '_' : (char)c;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$&+-.^_`|~", c))
            enc[k++] = (char)c;
        else
            k += (size_t)sprintf(enc + k, "%%%02X", c);
    }
    fb[j] = enc[k] = 0;
    return arena_printf(a, "%s; filename=\"%s\"; filename*=UTF-8''%s", kind, fb, enc);
}

static int h_get(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid;
    int rc = req_sid(req, &sid, err);
    if (rc)
        return rc;
    return files_reply_get(req, http_req_user(req), sid, req_path(req), err);
}

/* The download answer, shared with mb_api reply_file (the sharing module serves links). */
int files_reply_get(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    int rc;
    json_t *info = NULL;
    if ((rc = fs_stat(u, sid, path, &info, err)))
        return rc;
    bool folder = !strcmp(json_string_value(json_object_get(info, "type")), "folder");
    json_decref(info);
    if (folder)
        return zip_folder_reply(req, u, sid, path, err);
    /* ?version=V serves an older version (kept by the versioning module) the same way. */
    uint64_t version = 0;
    const char *vq = http_req_query(req, "version");
    if (vq && (!parse_u64(vq, &version) || version == 0))
        return err_set(err, MB_EINVAL, "version: must be a whole number from 1");
    fs_reader *r;
    if ((rc = fs_open(u, sid, path, version, &r, &info, err)))
        return rc;
    arena *a = http_req_arena(req);
    uint64_t size = (uint64_t)json_integer_value(json_object_get(info, "size"));
    int64_t mtime = json_integer_value(json_object_get(info, "mtime"));
    char sha[65];
    snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(info, "sha256")));
    const char *ct = json_string_value(json_object_get(info, "ctype"));
    char etag[80], lm[64];
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    http_date(mtime, lm);
    const char *ctype = arena_strdup(a, ct && *ct ? ct : "application/octet-stream");
    bool attach = query_true(req, "download") || !inline_safe(ctype);
    http_reply_header(req, "ETag", etag);
    http_reply_header(req, "Last-Modified", lm);
    http_reply_header(req, "Accept-Ranges", "bytes");
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_header(req, "Cache-Control", "private, no-cache");
    http_reply_header(req, "Content-Disposition",
                      disposition(a, attach ? "attachment" : "inline",
                                  json_string_value(json_object_get(info, "name"))));
    char *dpath = xstrdup(json_string_value(json_object_get(info, "path")));
    json_decref(info);

    /* RFC 9110 section 13.2.2: the order preconditions are evaluated in. */
    const char *im = http_req_header(req, "If-Match");
    const char *ius = http_req_header(req, "If-Unmodified-Since");
    const char *inm = http_req_header(req, "If-None-Match");
    const char *ims = http_req_header(req, "If-Modified-Since");
    int64_t t;
    int status = 200;
    if (im && !etag_list_matches(im, sha, false))
        status = 412;
    else if (!im && ius && parse_http_date(ius, &t) && mtime > t)
        status = 412;
    else if (inm && etag_list_matches(inm, sha, true))
        status = 304;
    else if (!inm && ims && parse_http_date(ims, &t) && mtime <= t)
        status = 304;
    if (status != 200) {
        fs_close(r);
        free(dpath);
        if (status == 412)
            return err_set(err, MB_EPRECOND, "the file has changed (precondition failed)");
        return http_reply_bytes(req, 304, NULL, "", 0);
    }

    dl *d = xcalloc(1, sizeof *d);
    d->r = r;
    d->path = dpath;
    const char *range = http_req_header(req, "Range");
    const char *ifr = http_req_header(req, "If-Range");
    if (range && ifr) { /* If-Range: a strong ETag or the exact Last-Modified, else send it all */
        bool same = ifr[0] == '"' ? (strlen(ifr) == strlen(etag) && !strcmp(ifr, etag))
                                  : (parse_http_date(ifr, &t) && t == mtime);
        if (!same)
            range = NULL;
    }
    brange rs[MAX_RANGES];
    int nr = range && strcmp(http_req_method(req), "GET") == 0 ? parse_ranges(range, size, rs) : -1;
    if (!range && strcmp(http_req_method(req), "GET")) /* HEAD still announces what a GET gives */
        nr = -1;
    if (nr == 0) {
        dl_free(d);
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
        http_reply_header(req, "Content-Range", cr);
        return err_set(err, MB_ERANGE, "none of the requested ranges is inside the %llu bytes of the file",
                       (unsigned long long)size);
    }
    if (nr < 0) {
        dl_add(d, 0, size, NULL);
        status = 200;
    } else if (nr == 1) {
        dl_add(d, rs[0].first, rs[0].last - rs[0].first + 1, NULL);
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)rs[0].first,
                 (unsigned long long)rs[0].last, (unsigned long long)size);
        http_reply_header(req, "Content-Range", cr);
        status = 206;
    } else {
        char boundary[33];
        random_hex(boundary, 16);
        for (int i = 0; i < nr; i++) {
            char *hdr;
            if (asprintf(&hdr, "%s--%s\r\nContent-Type: %s\r\nContent-Range: bytes %llu-%llu/%llu\r\n\r\n",
                         i ? "\r\n" : "", boundary, ctype, (unsigned long long)rs[i].first,
                         (unsigned long long)rs[i].last, (unsigned long long)size) < 0)
                abort();
            dl_add(d, 0, strlen(hdr), hdr);
            dl_add(d, rs[i].first, rs[i].last - rs[i].first + 1, NULL);
        }
        char *tail;
        if (asprintf(&tail, "\r\n--%s--\r\n", boundary) < 0)
            abort();
        dl_add(d, 0, strlen(tail), tail);
        ctype = arena_printf(a, "multipart/byteranges; boundary=%s", boundary);
        status = 206;
    }
    /* Verify the first chunk before the status line goes out: a damaged file answers a
     * problem instead of a 200 that breaks off later. */
    if (!strcmp(http_req_method(req), "GET")) {
        for (size_t i = 0; i < d->n; i++)
            if (!d->segs[i].text && d->segs[i].len) {
                char one;
                ssize_t n = fs_read(d->r, d->segs[i].off, &one, 1, err);
                if (n < 0) {
                    dl_free(d);
                    return (int)n;
                }
                break;
            }
    }
    if (d->n == 1 && http_reply_span(req, status, ctype, d->r, d->segs[0].off, d->total)) {
        dl_free(d); /* one chunk file's span: sent with sendfile */
        return 0;
    }
    return http_reply_stream(req, status, ctype, d->total, dl_read, d, dl_free);
}

/* ------------------------------------------------------- the rest --- */

/* ?recursive=true streamed: the walk is pulled one batch of entries at a time as the client
 * reads, so the answer for a subtree of any size costs one batch of memory. The JSON has the
 * shape of a page without its paging fields: {"path","entries":[...]}. */
typedef struct {
    ns_walker *w;
    uint64_t sid;
    char *base;       /* the listed folder's path */
    char *buf;        /* JSON text not yet handed out */
    size_t len, off, n;
    int stage;        /* 0 header, 1 entries, 2 done */
    bool first;
} rlist;

#define RLIST_BATCH 64

static void rlist_free(void *cls)
{
    rlist *r = cls;
    ns_trim(r->n);
    ns_walker_free(r->w);
    free(r->base);
    free(r->buf);
    free(r);
}

static void rlist_put(rlist *r, const char *s, size_t n)
{
    r->buf = xrealloc(r->buf, r->len + n);
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

/* The next batch of entries (or the head or the tail) as text into r->buf. */
static void rlist_fill(rlist *r)
{
    if (r->stage == 0) {
        json_t *p = json_string(r->base);
        char *ps = json_dumps(p, JSON_ENCODE_ANY);
        rlist_put(r, "{\"path\":", 8);
        rlist_put(r, ps, strlen(ps));
        rlist_put(r, ",\"entries\":[", 12);
        free(ps);
        json_decref(p);
        r->stage = 1;
        return;
    }
    json_t *batch = json_array();
    uint64_t pid;
    const char *name, *rel;
    json_t *e;
    while (json_array_size(batch) < RLIST_BATCH && ns_walker_next(r->w, &pid, &name, &e, &rel)) {
        char *full = ns_join(r->base, rel);
        json_t *o = ns_public_info(e, full);
        json_object_set_new(o, "relpath", json_string(rel));
        json_array_append_new(batch, o);
        free(full);
        r->n++;
    }
    json_t *listing = json_pack("{s:o}", "entries", batch);
    listdeco_apply(r->sid, listing); /* modules' fields, e.g. "thumb" */
    size_t i;
    json_t *o;
    json_array_foreach(batch, i, o) {
        size_t tn;
        char *t = jsonw_dump(o, &tn);
        if (!r->first)
            rlist_put(r, ",", 1);
        r->first = false;
        rlist_put(r, t, tn);
        free(t);
    }
    if (!json_array_size(batch)) {
        rlist_put(r, "]}", 2);
        r->stage = 2;
    }
    json_decref(listing);
}

static ssize_t rlist_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    rlist *r = cls;
    while (r->off == r->len) {
        if (r->stage == 2)
            return -1;
        r->len = r->off = 0;
        rlist_fill(r);
    }
    size_t n = r->len - r->off < max ? r->len - r->off : max;
    memcpy(out, r->buf + r->off, n);
    r->off += n;
    return (ssize_t)n;
}

static int list_recursive(mb_req *req, uint64_t sid, mb_err *err)
{
    fs_op op;
    uint64_t id;
    int rc = fs_folder_begin(&op, http_req_user(req), sid, req_path(req), &id, err);
    if (rc)
        return rc;
    rlist *r = xcalloc(1, sizeof *r);
    r->w = ns_walker_new(sid, id);
    r->sid = sid;
    r->base = op.path; /* rlist_free frees it */
    r->first = true;
    return http_reply_stream(req, 200, "application/json", (uint64_t)-1, rlist_read, r, rlist_free);
}

static int h_list(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid;
    int rc = req_sid(req, &sid, err);
    if (rc)
        return rc;
    json_t *out;
    if (query_true(req, "recursive"))
        return list_recursive(req, sid, err);
    else { /* a page (docs/api.md): the first FS_LIST_DEFAULT entries without a limit */
        const char *ls = http_req_query(req, "limit");
        char *end = NULL;
        long long limit = ls ? strtoll(ls, &end, 10) : 0;
        if (ls && (!*ls || *end || limit < 1))
            return err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", FS_LIST_MAX);
        rc = fs_list_page(http_req_user(req), sid, req_path(req), http_req_query(req, "cursor"), (size_t)limit, &out,
                          err);
    }
    if (rc)
        return rc;
    if ((rc = listdeco_filter(req, sid, out, err))) { /* e.g. ?tag= (kernel/listdeco.c) */
        json_decref(out);
        return rc;
    }
    listdeco_apply(sid, out); /* modules' fields, e.g. "thumb" (kernel/listdeco.c) */
    return http_reply_json(req, 200, out);
}

/* GET /api/v1/stores/{sid}/info[/{path}]: one entry's metadata (the store's root without a path). */
static int h_info(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid;
    json_t *info;
    int rc = req_sid(req, &sid, err);
    if (rc || (rc = fs_stat(http_req_user(req), sid, req_path(req), &info, err)))
        return rc;
    return http_reply_json(req, 200, info);
}

static int h_mkdir(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid;
    json_t *b = req_sid_body(req, &sid, err);
    if (!b)
        return err->code;
    const char *path;
    int rc;
    if ((rc = json_path(b, "path", true, &path, err)))
        return rc;
    int flags = json_is_true(json_object_get(b, "parents")) ? FS_PARENTS : 0;
    json_t *info;
    if ((rc = fs_mkdir(http_req_user(req), sid, path, flags, &info, err)))
        return rc;
    return http_reply_json(req, 201, info);
}

static int xfer(mb_req *req, bool copy, mb_err *err)
{
    uint64_t sid;
    json_t *b = req_sid_body(req, &sid, err);
    if (!b)
        return err->code;
    const char *from, *to;
    int rc;
    if ((rc = json_path(b, "from", true, &from, err)) || (rc = json_path(b, "to", true, &to, err)))
        return rc;
    int flags = (json_is_true(json_object_get(b, "overwrite")) ? FS_OVERWRITE : 0) |
                (json_is_true(json_object_get(b, "parents")) ? FS_PARENTS : 0);
    json_t *info = NULL;
    uint64_t task = 0; /* a big folder's copy is a task: 202 (fs_big.c) */
    rc = copy ? fs_copy_task(http_req_user(req), sid, from, to, flags, &info, &task, err)
              : fs_move(http_req_user(req), sid, from, to, flags, &info, err);
    if (rc)
        return rc;
    if (task)
        return http_reply_json(req, 202, json_pack("{s:I, s:s}", "task", (json_int_t)task, "path", to));
    return http_reply_json(req, copy ? 201 : 200, info);
}

static int h_move(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    return xfer(req, false, err);
}

static int h_copy(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    return xfer(req, true, err);
}

static int h_delete(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid;
    int rc = req_sid(req, &sid, err);
    if (rc)
        return rc;
    int flags = query_true(req, "recursive") ? FS_RECURSIVE : 0;
    uint64_t task = 0; /* a big folder is gone now and freed by a task: 202 (fs_big.c) */
    if ((rc = fs_delete_task(http_req_user(req), sid, req_path(req), flags, &task, err)))
        return rc;
    if (task)
        return http_reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)task));
    return http_reply_bytes(req, 204, NULL, "", 0);
}

/* POST /api/v1/stores/{sid}/bulk: 202 with the task that does it (bulk.c). */
static int h_bulk(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t sid, task;
    int64_t total;
    json_t *b = req_sid_body(req, &sid, err);
    if (!b)
        return err->code;
    int rc = bulk_submit(http_req_user(req), sid, b, &task, &total, err);
    if (rc)
        return rc;
    return http_reply_json(req, 202, json_pack("{s:I, s:I}", "task", (json_int_t)task, "total", (json_int_t)total));
}

static int h_fsck(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *report;
    int rc = fs_fsck(query_true(req, "repair"), &report, err);
    return rc ? rc : http_reply_json(req, 200, report);
}

/* POST /api/v1/admin/backup {"dir"}: 202 with the task (backup.c does the work). */
static int h_backup(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *b = http_req_json(req, err);
    if (!b)
        return MB_EINVAL;
    char real[4096];
    uint64_t id = 0;
    int rc = backup_request(json_string_value(json_object_get(b, "dir")), http_req_user(req)->id, &id, real, err);
    if (rc)
        return rc;
    return http_reply_json(req, 202, json_pack("{s:I,s:s}", "task", (json_int_t)id, "dir", real));
}

/* The file service's routes (main.c registers them). */
const kroute files_routes[] = {
    {"GET", "/api/v1/stores", MB_ROLE_USER, h_stores, NULL},
    {"GET", "/api/v1/stores/{sid}/files/{path*}", MB_ROLE_USER, h_get, NULL},
    {"DELETE", "/api/v1/stores/{sid}/files/{path*}", MB_ROLE_USER, h_delete, NULL},
    {"GET", "/api/v1/stores/{sid}/list", MB_ROLE_USER, h_list, NULL},
    {"GET", "/api/v1/stores/{sid}/list/{path*}", MB_ROLE_USER, h_list, NULL},
    {"GET", "/api/v1/stores/{sid}/info", MB_ROLE_USER, h_info, NULL},
    {"GET", "/api/v1/stores/{sid}/info/{path*}", MB_ROLE_USER, h_info, NULL},
    {"POST", "/api/v1/stores/{sid}/folders", MB_ROLE_USER, h_mkdir, NULL},
    {"POST", "/api/v1/stores/{sid}/move", MB_ROLE_USER, h_move, NULL},
    {"POST", "/api/v1/stores/{sid}/copy", MB_ROLE_USER, h_copy, NULL},
    {"POST", "/api/v1/stores/{sid}/bulk", MB_ROLE_USER, h_bulk, NULL},
    {"POST", "/api/v1/admin/fsck", MB_ROLE_ADMIN, h_fsck, NULL},
    {"POST", "/api/v1/admin/backup", MB_ROLE_ADMIN, h_backup, NULL},
    {"PUT", "/api/v1/stores/{sid}/files/{path*}", MB_ROLE_USER, NULL, &put_ops},
    {NULL, NULL, 0, NULL, NULL},
};
