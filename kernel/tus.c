/*
 * tus.c — resumable uploads: the tus 1.0 protocol (core, creation, termination, checksum,
 * expiration) under /api/v1/uploads, so off-the-shelf tus clients work (issue 3).
 *
 * How it fits: an upload is a record in LevelDB ("up/<id>", docs/storage.md "## Uploads")
 * and a part file <data_dir>/uploads/<id>.part that PATCH bodies are appended to. Nothing
 * reaches the store until the last byte is in: then the part file is streamed through the
 * normal write path (fs_write_begin/data/commit: chunker, dedup, refcounts, events, quota
 * filters), so a tus upload is indistinguishable from a PUT. Creation already runs the
 * same filters (fs_write_begin with the announced length, then abort), so a refusal
 * (quota, name, missing parent, another user's store) comes before any byte is sent.
 *
 * Durability: a PATCH answers 204 only after its bytes were fdatasync'ed and the new
 * offset was written with sync=true; the final PATCH answers only after the commit is
 * durable. A crash loses at most the bytes of unacknowledged PATCHes: the next PATCH
 * truncates the part file back to the recorded offset before appending. A PATCH whose
 * client went away keeps the bytes it delivered (unless it carried Upload-Checksum,
 * which cannot be verified on a partial body), as the tus core protocol recommends.
 *
 * Threads: handlers and stream callbacks run on libmicrohttpd threads; the expiry sweep
 * runs on its own thread. One mutex guards the set of uploads in use ("busy"): a PATCH,
 * DELETE, finalisation or sweep of an upload holds its id there, so a record and its part
 * file have one writer at a time; a second PATCH meanwhile is answered 423 Locked (tus
 * clients retry it). Record reads need no lock: LevelDB is thread-safe and writes are
 * whole values.
 */
#include "kernel.h"
#include "fs.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TUS_VERSION "1.0.0"
#define TUS_EXTENSIONS "creation,termination,checksum,expiration"
#define TUS_ALGOS "sha1,sha256"
#define REC_FORMAT 1
#define ID_HEX 32

static int64_t expiry_seconds = 24 * 3600;
static uint64_t max_size = 1ULL << 40; /* Tus-Max-Size: 1 TiB unless configured */
static int sweep_seconds = 60;
static char *upload_dir;

static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
typedef struct busy {
    struct busy *next;
    char id[ID_HEX + 1];
} busy;
static busy *busy_list;

static pthread_t sweeper;
static bool sweeper_running, sweeper_stop;
static pthread_mutex_t sweep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sweep_cond = PTHREAD_COND_INITIALIZER;

/* --------------------------------------------------------- pure pieces --- */

bool tus_valid_id(const char *id)
{
    if (!id || strlen(id) != ID_HEX)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

void tus_http_date(int64_t t, char out[40])
{
    time_t tt = (time_t)t;
    struct tm tm;
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    gmtime_r(&tt, &tm);
    /* Spelled out rather than strftime so the locale can never change it. */
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday, mons[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Standard base64, with or without padding, into a NUL-terminated malloc'd buffer. */
static int b64_decode(const char *in, size_t n, uint8_t **out, size_t *outlen)
{
    size_t cap = n / 4 * 3 + 3;
    uint8_t *buf = xmalloc(cap + 1);
    size_t len = 0;
    const char *end = NULL;
    int rc = sodium_base642bin(buf, cap, in, n, NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL);
    if (rc || end != in + n)
        rc = sodium_base642bin(buf, cap, in, n, NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    if (rc || end != in + n) {
        free(buf);
        return -1;
    }
    buf[len] = 0;
    *out = buf;
    *outlen = len;
    return 0;
}

int tus_parse_metadata(const char *hdr, json_t **out, mb_err *err)
{
    json_t *m = json_object();
    const char *p = hdr ? hdr : "";
    if (strlen(p) > 8192) {
        json_decref(m);
        return err_set(err, MB_EINVAL, "Upload-Metadata is longer than 8192 bytes");
    }
    while (*p) {
        while (*p == ' ')
            p++;
        const char *pair_end = strchr(p, ',');
        size_t plen = pair_end ? (size_t)(pair_end - p) : strlen(p);
        const char *sp = memchr(p, ' ', plen);
        size_t klen = sp ? (size_t)(sp - p) : plen;
        while (klen && p[klen - 1] == ' ')
            klen--;
        if (klen == 0 || klen > 128) {
            json_decref(m);
            return err_set(err, MB_EINVAL, "Upload-Metadata has an empty or overlong key");
        }
        char key[129];
        memcpy(key, p, klen);
        key[klen] = 0;
        for (size_t i = 0; i < klen; i++)
            if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e) {
                json_decref(m);
                return err_set(err, MB_EINVAL, "Upload-Metadata key '%.40s' is not printable ASCII", key);
            }
        if (json_object_get(m, key)) {
            json_decref(m);
            return err_set(err, MB_EINVAL, "Upload-Metadata key '%s' appears twice", key);
        }
        const char *v = sp ? sp + 1 : p + plen;
        const char *vend = p + plen;
        while (v < vend && *v == ' ')
            v++;
        while (vend > v && vend[-1] == ' ')
            vend--;
        uint8_t *val = NULL;
        size_t vlen = 0;
        if (v < vend) {
            if (b64_decode(v, (size_t)(vend - v), &val, &vlen)) {
                json_decref(m);
                return err_set(err, MB_EINVAL, "Upload-Metadata value of '%s' is not base64", key);
            }
            if (memchr(val, 0, vlen) || !utf8_valid((const char *)val, vlen)) {
                free(val);
                json_decref(m);
                return err_set(err, MB_EINVAL, "Upload-Metadata value of '%s' is not UTF-8 text", key);
            }
        }
        json_object_set_new(m, key, json_string(val ? (const char *)val : ""));
        free(val);
        p = pair_end ? pair_end + 1 : p + plen;
    }
    *out = m;
    return 0;
}

int tus_parse_checksum(const char *hdr, int *algo, uint8_t digest[32], size_t *dlen, mb_err *err)
{
    const char *sp = hdr ? strchr(hdr, ' ') : NULL;
    if (!sp)
        return err_set(err, MB_EINVAL, "Upload-Checksum must be '<algorithm> <base64 digest>'");
    size_t alen = (size_t)(sp - hdr);
    size_t want;
    if (alen == 4 && !strncmp(hdr, "sha1", 4)) {
        *algo = 1;
        want = 20;
    } else if (alen == 6 && !strncmp(hdr, "sha256", 6)) {
        *algo = 256;
        want = 32;
    } else
        return err_set(err, MB_EINVAL, "Upload-Checksum algorithm '%.*s' is not supported (use %s)",
                       (int)(alen > 20 ? 20 : alen), hdr, TUS_ALGOS);
    uint8_t *d = NULL;
    size_t n = 0;
    if (b64_decode(sp + 1, strlen(sp + 1), &d, &n) || n != want) {
        free(d);
        return err_set(err, MB_EINVAL, "Upload-Checksum digest is not %zu bytes of base64", want);
    }
    memcpy(digest, d, n);
    *dlen = n;
    free(d);
    return 0;
}

/* ------------------------------------------------------------ records --- */

static void rec_key(const char *id, char out[3 + ID_HEX + 1]) { snprintf(out, 3 + ID_HEX + 1, "up/%s", id); }

static void part_path(const char *id, char *out, size_t n) { snprintf(out, n, "%s/%s.part", upload_dir, id); }

static int rec_get(const char *id, json_t **rec)
{
    char k[3 + ID_HEX + 1];
    rec_key(id, k);
    return db_get_json(k, rec);
}

static int rec_put(const char *id, json_t *rec)
{
    char k[3 + ID_HEX + 1];
    rec_key(id, k);
    return db_put_json(k, rec, true);
}

static uint64_t rec_u64(const json_t *rec, const char *name)
{
    json_int_t v = json_integer_value(json_object_get(rec, name));
    return v > 0 ? (uint64_t)v : 0;
}

/* Remove the record and the part file (caller holds the id busy). */
static void rec_remove(const char *id)
{
    char k[3 + ID_HEX + 1], p[4200];
    rec_key(id, k);
    db_del(k, strlen(k), true);
    cluster_upload_placed(id, false);
    part_path(id, p, sizeof p);
    unlink(p);
}

static bool busy_take(const char *id)
{
    pthread_mutex_lock(&busy_lock);
    for (busy *b = busy_list; b; b = b->next)
        if (!strcmp(b->id, id)) {
            pthread_mutex_unlock(&busy_lock);
            return false;
        }
    busy *b = xmalloc(sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", id);
    b->next = busy_list;
    busy_list = b;
    pthread_mutex_unlock(&busy_lock);
    return true;
}

static void busy_give(const char *id)
{
    pthread_mutex_lock(&busy_lock);
    for (busy **pp = &busy_list; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->id, id)) {
            busy *b = *pp;
            *pp = b->next;
            free(b);
            break;
        }
    pthread_mutex_unlock(&busy_lock);
}

/* ------------------------------------------------------------ answers --- */

static void tus_headers(mb_req *req) { http_reply_header(req, "Tus-Resumable", TUS_VERSION); }

/* problem+json with a status the MB_E* table does not have (423, 460); `code` as every problem
 * carries one (docs/api.md "Conventions"). */
static int tus_problem(mb_req *req, int status, const char *title, const char *code, const char *detail)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", title, "status", status,
                          "detail", detail, "code", code);
    char *s = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    http_reply_bytes(req, status, "application/problem+json", s, strlen(s));
    free(s);
    log_msg(LOG_INFO, "tus", "%s %s -> %d: %s", http_req_method(req), http_req_path(req), status, detail);
    return 0;
}

static void set_u64_header(mb_req *req, const char *name, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    http_reply_header(req, name, b);
}

static void expires_header(mb_req *req, const json_t *rec)
{
    char d[40];
    tus_http_date((int64_t)rec_u64(rec, "expires"), d);
    http_reply_header(req, "Upload-Expires", d);
}

/* Every tus request but OPTIONS must speak our version: 412 with Tus-Version otherwise. */
static int check_version(mb_req *req, mb_err *err)
{
    const char *v = http_req_header(req, "Tus-Resumable");
    if (v && !strcmp(v, TUS_VERSION))
        return 0;
    http_reply_header(req, "Tus-Version", TUS_VERSION);
    return err_set(err, MB_EPRECOND, "Tus-Resumable must be %s (got %s)", TUS_VERSION, v ? v : "nothing");
}

/* Look up an upload the caller owns. Someone else's upload is "not found", never "forbidden",
 * so upload ids cannot be probed. An expired one is 410 and is removed when it is not busy. */
static int load_owned(mb_req *req, const char *id, json_t **rec, mb_err *err)
{
    const mb_user *u = http_req_user(req);
    if (!u || !tus_valid_id(id))
        return err_set(err, MB_ENOENT, "no such upload");
    json_t *r = NULL;
    int rc = rec_get(id, &r);
    if (rc == MB_ENOENT || (!rc && rec_u64(r, "owner") != u->id)) {
        json_decref(r);
        return err_set(err, MB_ENOENT, "no such upload");
    }
    if (rc)
        return err_set(err, MB_EIO, "the upload record cannot be read");
    if ((int64_t)rec_u64(r, "expires") <= now_wall()) {
        json_decref(r);
        if (busy_take(id)) {
            rec_remove(id);
            busy_give(id);
        }
        return err_set(err, MB_EGONE, "the upload expired");
    }
    *rec = r;
    return 0;
}

/* ------------------------------------------------------- finalisation --- */

/* The part file (fd) into the store, here or (far) on the node that keeps it: committed (*info,
 * *created), or nothing. */
static int send_part(const mb_user *u, uint64_t sid, const char *path, uint64_t length, int flags, bool far, int fd,
                     json_t **info, bool *created, mb_err *err)
{
    kept_writer *w;
    int rc = kept_write_begin(u, sid, path, (int64_t)length, NULL, flags, far, &w, err);
    if (rc)
        return rc;
    size_t cap = 1 << 20;
    char *buf = xmalloc(cap);
    uint64_t done = 0;
    while (done < length) {
        size_t want = length - done < cap ? (size_t)(length - done) : cap;
        ssize_t n = pread(fd, buf, want, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = err_set(err, MB_EIO, "the upload's data ends early (%llu of %llu bytes)", (unsigned long long)done,
                         (unsigned long long)length);
            break;
        }
        if ((rc = kept_write_data(w, buf, (size_t)n, err)))
            break;
        done += (uint64_t)n;
        /* Dropping the pages we handed on keeps the page cache from filling with part files. */
        if (done % (64u << 20) < (uint64_t)n)
            posix_fadvise(fd, 0, (off_t)done, POSIX_FADV_DONTNEED);
    }
    free(buf);
    if (rc) {
        kept_write_abort(w);
        return rc;
    }
    return kept_write_commit(w, info, created, err);
}

/* The last byte is in: stream the part file through the normal write path. In cluster mode the
 * store may have moved to another node since the upload began (uploads stay on the node that made
 * them): the file then goes to the store's keeper as the user, as a module's write does; a commit
 * here that failed because the store switched over meanwhile (nothing was committed) goes there
 * too. */
static int finalize(const mb_user *u, const char *id, json_t *rec, mb_err *err)
{
    uint64_t sid = rec_u64(rec, "store");
    const char *path = json_string_value(json_object_get(rec, "path"));
    uint64_t length = rec_u64(rec, "length");
    int flags = (int)rec_u64(rec, "flags");
    char pp[4200];
    part_path(id, pp, sizeof pp);
    int fd = open(pp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, MB_EIO, "the upload's data is missing");
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    json_t *info = NULL;
    bool created = false, far = cluster_enabled() && cluster_store_elsewhere(sid);
    int rc = send_part(u, sid, path, length, flags, far, fd, &info, &created, err);
    if (rc && !far && cluster_enabled() && cluster_store_elsewhere(sid)) {
        far = true; /* it switched over while the file was written here */
        rc = send_part(u, sid, path, length, flags, true, fd, &info, &created, err);
    }
    close(fd);
    if (rc)
        return rc;
    if (far)
        log_msg(LOG_INFO, "tus", "upload %s: store %llu moved to another node since the upload began; the file was "
                "sent to it", id, (unsigned long long)sid);
    /* The file is durable; now the upload is finished. A crash before the next line leaves the
     * old offset recorded: the client resends the tail and the same bytes are committed again. */
    json_object_set_new(rec, "done", json_true());
    if (info) {
        json_t *v = json_object_get(info, "version");
        if (v)
            json_object_set(rec, "version", v);
        json_decref(info);
    }
    rec_put(id, rec);
    unlink(pp);
    log_msg(LOG_INFO, "tus", "upload %s committed to store %llu as %s (%llu bytes)", id, (unsigned long long)sid,
            path, (unsigned long long)length);
    return 0;
}

/* --------------------------------------------------------- OPTIONS/POST --- */

static int h_options(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    tus_headers(req);
    http_reply_header(req, "Tus-Version", TUS_VERSION);
    http_reply_header(req, "Tus-Extension", TUS_EXTENSIONS);
    http_reply_header(req, "Tus-Checksum-Algorithm", TUS_ALGOS);
    set_u64_header(req, "Tus-Max-Size", max_size);
    return http_reply_bytes(req, 204, NULL, NULL, 0);
}

static bool truthy(const char *s) { return s && (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")); }

static int h_create(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    tus_headers(req);
    int rc = check_version(req, err);
    if (rc)
        return rc;
    const mb_user *u = http_req_user(req);
    if (http_req_header(req, "Upload-Defer-Length"))
        return err_set(err, MB_EINVAL, "Upload-Defer-Length is not supported: send Upload-Length");
    const char *ls = http_req_header(req, "Upload-Length");
    uint64_t length;
    if (!ls || !parse_u64(ls, &length))
        return err_set(err, MB_EINVAL, "Upload-Length must be a non-negative decimal number");
    if (length > max_size)
        return err_set(err, MB_ETOOBIG, "Upload-Length %llu is larger than Tus-Max-Size %llu",
                       (unsigned long long)length, (unsigned long long)max_size);
    const char *mh = http_req_header(req, "Upload-Metadata");
    json_t *meta = NULL;
    if ((rc = tus_parse_metadata(mh, &meta, err)))
        return rc;
    const char *store = json_string_value(json_object_get(meta, "store"));
    const char *path = json_string_value(json_object_get(meta, "path"));
    const char *fname = json_string_value(json_object_get(meta, "filename"));
    const char *folder = json_string_value(json_object_get(meta, "folder"));
    uint64_t sid;
    if (!store) {
        json_decref(meta);
        return err_set(err, MB_EINVAL, "Upload-Metadata needs 'store' (the store id)");
    }
    if (!parse_u64(store, &sid)) {
        rc = err_set(err, MB_EINVAL, "Upload-Metadata 'store' is invalid: a store id is a whole number, not '%.64s'",
                     store);
        json_decref(meta);
        return rc;
    }
    char *full = NULL;
    if (path && *path)
        rc = asprintf(&full, "%s%s", path[0] == '/' ? "" : "/", path);
    else if (fname && *fname) {
        const char *f = folder ? folder : "";
        while (*f == '/')
            f++;
        size_t fl = strlen(f);
        while (fl && f[fl - 1] == '/')
            fl--;
        rc = asprintf(&full, "/%.*s%s%s", (int)fl, f, fl ? "/" : "", fname);
    } else {
        json_decref(meta);
        return err_set(err, MB_EINVAL, "Upload-Metadata needs 'path', or 'filename' and an optional 'folder'");
    }
    if (rc < 0) {
        json_decref(meta);
        return err_set(err, MB_ENOMEM, "out of memory");
    }
    int flags = truthy(json_string_value(json_object_get(meta, "parents"))) ? FS_PARENTS : 0;

    /* Run the same checks a PUT runs (store reachable, name rules, parent, quota and limit
     * filters with the announced size) before any byte is accepted. */
    fs_writer *w = NULL;
    if ((rc = fs_write_begin(u, sid, full, (int64_t)length, NULL, flags, &w, err))) {
        free(full);
        json_decref(meta);
        return rc;
    }
    char id[ID_HEX + 1];
    random_hex(id, ID_HEX / 2);
    int64_t now = now_wall();
    json_t *rec = json_pack("{s:i, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:i, s:o, s:s, s:b}", "v", REC_FORMAT,
                            "owner", (json_int_t)u->id, "store", (json_int_t)sid, "path", full, "length",
                            (json_int_t)length, "offset", (json_int_t)0, "created", (json_int_t)now, "expires",
                            (json_int_t)(now + expiry_seconds), "flags", flags, "metadata", meta,
                            "metadata_raw", mh ? mh : "", "done", false);
    free(full);
    if (length == 0) { /* nothing to wait for: the file is complete now */
        json_t *info = NULL;
        bool created = false;
        if ((rc = fs_write_commit(w, &info, &created, err))) {
            json_decref(rec);
            return rc;
        }
        json_decref(info);
        json_object_set_new(rec, "done", json_true());
    } else {
        fs_write_abort(w);
        char pp[4200];
        part_path(id, pp, sizeof pp);
        int fd = open(pp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || fsync(fd)) {
            if (fd >= 0)
                close(fd);
            json_decref(rec);
            return err_set(err, MB_EIO, "cannot create the upload's part file: %s", strerror(errno));
        }
        close(fd);
        int dfd = open(upload_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (rec_put(id, rec)) {
        json_decref(rec);
        return err_set(err, MB_EIO, "cannot record the upload");
    }
    cluster_upload_placed(id, true); /* cluster mode: its next requests may reach any node */
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/uploads/%s", id);
    http_reply_header(req, "Location", loc);
    expires_header(req, rec);
    set_u64_header(req, "Upload-Offset", rec_u64(rec, "offset"));
    json_decref(rec);
    log_msg(LOG_INFO, "tus", "upload %s created by user %llu (%llu bytes)", id, (unsigned long long)u->id,
            (unsigned long long)length);
    return http_reply_bytes(req, 201, NULL, NULL, 0);
}

/* ---------------------------------------------------------- HEAD/DELETE --- */

static int h_head(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    tus_headers(req);
    http_reply_header(req, "Cache-Control", "no-store");
    int rc = check_version(req, err);
    if (rc)
        return rc;
    json_t *rec = NULL;
    if ((rc = load_owned(req, http_req_param(req, "id"), &rec, err)))
        return rc;
    set_u64_header(req, "Upload-Offset", rec_u64(rec, "offset"));
    set_u64_header(req, "Upload-Length", rec_u64(rec, "length"));
    expires_header(req, rec);
    const char *raw = json_string_value(json_object_get(rec, "metadata_raw"));
    if (raw && *raw)
        http_reply_header(req, "Upload-Metadata", raw);
    json_decref(rec);
    return http_reply_bytes(req, 200, NULL, NULL, 0);
}

static int h_delete(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    tus_headers(req);
    int rc = check_version(req, err);
    if (rc)
        return rc;
    const char *id = http_req_param(req, "id");
    json_t *rec = NULL;
    if ((rc = load_owned(req, id, &rec, err)))
        return rc;
    json_decref(rec);
    if (!busy_take(id))
        return tus_problem(req, 423, "Locked", "locked",
                           "the upload is receiving data; try again when that PATCH ended");
    rec_remove(id);
    busy_give(id);
    log_msg(LOG_INFO, "tus", "upload %s terminated", id);
    return http_reply_bytes(req, 204, NULL, NULL, 0);
}

/* ---------------------------------------------------------------- PATCH --- */

typedef struct patch {
    char id[ID_HEX + 1];
    json_t *rec;
    int fd;
    uint64_t start, pos, length;
    EVP_MD_CTX *md;
    uint8_t want[32];
    size_t wantlen;
    bool failed; /* a data error: the PATCH's bytes are dropped */
} patch;

static void patch_free(patch *p)
{
    if (p->fd >= 0)
        close(p->fd);
    if (p->md)
        EVP_MD_CTX_free(p->md);
    json_decref(p->rec);
    busy_give(p->id);
    free(p);
}

/* Make [start, pos) durable and record pos as the offset. */
static int patch_persist(patch *p, mb_err *err)
{
    if (p->pos == p->start)
        return 0;
    if (fdatasync(p->fd))
        return err_set(err, MB_EIO, "cannot make the upload's bytes durable: %s", strerror(errno));
    json_object_set_new(p->rec, "offset", json_integer((json_int_t)p->pos));
    json_object_set_new(p->rec, "expires", json_integer((json_int_t)(now_wall() + expiry_seconds)));
    if (rec_put(p->id, p->rec))
        return err_set(err, MB_EIO, "cannot record the upload's offset");
    return 0;
}

static int patch_begin(mb_req *req, void **ctx, mb_err *err)
{
    *ctx = NULL;
    tus_headers(req);
    int rc = check_version(req, err);
    if (rc)
        return rc;
    const char *id = http_req_param(req, "id");
    json_t *rec = NULL;
    if ((rc = load_owned(req, id, &rec, err)))
        return rc;
    json_decref(rec); /* read again below, once the upload is ours */
    const char *ct = http_req_header(req, "Content-Type");
    if (!ct || strncmp(ct, "application/offset+octet-stream", 31) || (ct[31] && ct[31] != ';' && ct[31] != ' '))
        return err_set(err, MB_EUNSUPP, "a PATCH body must be Content-Type: application/offset+octet-stream");
    const char *os = http_req_header(req, "Upload-Offset");
    uint64_t off;
    if (!os || !parse_u64(os, &off))
        return err_set(err, MB_EINVAL, "Upload-Offset must be a non-negative decimal number");
    patch *p = xcalloc(1, sizeof *p);
    p->fd = -1;
    snprintf(p->id, sizeof p->id, "%s", id);
    const char *ck = http_req_header(req, "Upload-Checksum");
    int algo = 0;
    if (ck && (rc = tus_parse_checksum(ck, &algo, p->want, &p->wantlen, err))) {
        free(p);
        return rc;
    }
    if (!busy_take(id)) {
        free(p);
        return tus_problem(req, 423, "Locked", "locked", "another PATCH to this upload is in progress");
    }
    /* From here patch_free() releases the id. The record is read while we hold it, so the
     * offset compared below is the one no other request can move. */
    if (rec_get(id, &p->rec)) {
        patch_free(p);
        return err_set(err, MB_ENOENT, "no such upload");
    }
    uint64_t cur = rec_u64(p->rec, "offset"), length = rec_u64(p->rec, "length");
    p->start = p->pos = cur;
    p->length = length;
    if (off != cur) {
        set_u64_header(req, "Upload-Offset", cur);
        patch_free(p);
        return err_set(err, MB_ECONFLICT, "Upload-Offset is %llu but the upload has %llu bytes",
                       (unsigned long long)off, (unsigned long long)cur);
    }
    const char *cl = http_req_header(req, "Content-Length");
    uint64_t clen;
    if (cl && parse_u64(cl, &clen) && clen > length - cur) {
        patch_free(p);
        return err_set(err, MB_ETOOBIG, "the PATCH carries %llu bytes but only %llu remain of Upload-Length",
                       (unsigned long long)clen, (unsigned long long)(length - cur));
    }
    if (json_is_true(json_object_get(p->rec, "done"))) {
        /* Finished already (the client lost our answer): report completion again. */
        set_u64_header(req, "Upload-Offset", cur);
        expires_header(req, p->rec);
        patch_free(p);
        return http_reply_bytes(req, 204, NULL, NULL, 0);
    }
    char pp[4200];
    part_path(id, pp, sizeof pp);
    p->fd = open(pp, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (p->fd < 0 || fstat(p->fd, &st) || (uint64_t)st.st_size < cur) {
        patch_free(p);
        return err_set(err, MB_EIO, "the upload's data is missing or shorter than its offset");
    }
    /* Bytes past the recorded offset were never acknowledged (a crash mid-PATCH): drop them. */
    if ((uint64_t)st.st_size > cur && ftruncate(p->fd, (off_t)cur)) {
        patch_free(p);
        return err_set(err, MB_EIO, "cannot trim the upload's data: %s", strerror(errno));
    }
    if (algo) {
        p->md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(p->md, algo == 1 ? EVP_sha1() : EVP_sha256(), NULL);
    }
    *ctx = p;
    return 0;
}

static int patch_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    (void)req;
    patch *p = ctx;
    if (len > p->length - p->pos) {
        p->failed = true;
        return err_set(err, MB_ETOOBIG, "the PATCH goes past Upload-Length (%llu bytes)",
                       (unsigned long long)p->length);
    }
    if (p->md)
        EVP_DigestUpdate(p->md, buf, len);
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(p->fd, buf + done, len - done, (off_t)(p->pos + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            p->failed = true;
            return err_set(err, errno == ENOSPC ? MB_EQUOTA : MB_EIO, "cannot store the upload's bytes: %s",
                           strerror(errno));
        }
        done += (size_t)n;
    }
    p->pos += len;
    return 0;
}

static int patch_end(mb_req *req, void *ctx, mb_err *err)
{
    patch *p = ctx;
    int rc = 0;
    if (p->md) {
        uint8_t got[EVP_MAX_MD_SIZE];
        unsigned glen = 0;
        EVP_DigestFinal_ex(p->md, got, &glen);
        if (glen != p->wantlen || sodium_memcmp(got, p->want, glen)) {
            if (ftruncate(p->fd, (off_t)p->start))
                log_msg(LOG_WARN, "tus", "upload %s: cannot drop a failed PATCH: %s", p->id, strerror(errno));
            set_u64_header(req, "Upload-Offset", p->start);
            tus_problem(req, 460, "Checksum Mismatch", "checksum_mismatch",
                        "the PATCH body does not match Upload-Checksum; its bytes were discarded");
            patch_free(p);
            return 0;
        }
    }
    if (p->pos < p->length) {
        if ((rc = patch_persist(p, err))) {
            patch_free(p);
            return rc;
        }
    } else {
        /* The last byte is in. The offset is recorded as complete only together with "done",
         * after the commit: HEAD must never tell a client "all there" for a file that a crash
         * kept from being committed. */
        if (fdatasync(p->fd)) {
            patch_free(p);
            return err_set(err, MB_EIO, "cannot make the upload's bytes durable: %s", strerror(errno));
        }
        json_object_set_new(p->rec, "offset", json_integer((json_int_t)p->pos));
        json_object_set_new(p->rec, "expires", json_integer((json_int_t)(now_wall() + expiry_seconds)));
        if ((rc = finalize(http_req_user(req), p->id, p->rec, err))) {
            patch_free(p);
            return rc;
        }
    }
    set_u64_header(req, "Upload-Offset", p->pos);
    expires_header(req, p->rec);
    patch_free(p);
    return http_reply_bytes(req, 204, NULL, NULL, 0);
}

static void patch_abort(mb_req *req, void *ctx)
{
    (void)req;
    patch *p = ctx;
    if (!p)
        return;
    mb_err err = {0};
    /* The client went away: keep what arrived (resumable), unless it cannot be verified, or
     * it is everything (only a commit may record a complete offset: see patch_end). */
    if (p->failed || p->md || p->pos == p->length) {
        if (ftruncate(p->fd, (off_t)p->start))
            log_msg(LOG_WARN, "tus", "upload %s: cannot drop a broken PATCH: %s", p->id, strerror(errno));
    } else if (patch_persist(p, &err))
        log_msg(LOG_WARN, "tus", "upload %s: %s", p->id, err.msg);
    else if (p->pos > p->start)
        log_msg(LOG_DEBUG, "tus", "upload %s: kept %llu bytes of an interrupted PATCH", p->id,
                (unsigned long long)(p->pos - p->start));
    patch_free(p);
}

static const http_stream_ops patch_ops = {patch_begin, patch_data, patch_end, patch_abort};

/* ---------------------------------------------------------- expiry sweep --- */

static void sweep_once(void)
{
    int64_t now = now_wall();
    char **ids = NULL;
    size_t n = 0, cap = 0;
    db_iter *it = db_iter_prefix("up/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        bool expired = !rec || (int64_t)rec_u64(rec, "expires") <= now;
        json_decref(rec);
        if (expired && kl == 3 + ID_HEX) {
            if (n == cap)
                ids = xrealloc(ids, (cap = cap ? cap * 2 : 16) * sizeof *ids);
            ids[n++] = strndup(k + 3, ID_HEX);
        }
    }
    db_iter_free(it);
    for (size_t i = 0; i < n; i++) {
        if (busy_take(ids[i])) {
            rec_remove(ids[i]);
            busy_give(ids[i]);
            log_msg(LOG_INFO, "tus", "upload %s expired and was removed", ids[i]);
        }
        free(ids[i]);
    }
    free(ids);
    /* Part files without a record: a crash between creating the file and recording it. */
    DIR *d = opendir(upload_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l != ID_HEX + 5 || strcmp(de->d_name + ID_HEX, ".part"))
            continue;
        char id[ID_HEX + 1];
        memcpy(id, de->d_name, ID_HEX);
        id[ID_HEX] = 0;
        json_t *rec = NULL;
        if (!tus_valid_id(id) || rec_get(id, &rec) != MB_ENOENT) {
            json_decref(rec);
            continue;
        }
        char pp[4200];
        struct stat st;
        part_path(id, pp, sizeof pp);
        /* A POST records its upload right after creating the file: give it time. */
        if (!stat(pp, &st) && st.st_mtime < time(NULL) - 600 && busy_take(id)) {
            unlink(pp);
            busy_give(id);
        }
    }
    closedir(d);
}

static void *sweep_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&sweep_lock);
    while (!sweeper_stop) {
        pthread_mutex_unlock(&sweep_lock);
        sweep_once();
        pthread_mutex_lock(&sweep_lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += sweep_seconds;
        while (!sweeper_stop && pthread_cond_timedwait(&sweep_cond, &sweep_lock, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&sweep_lock);
    return NULL;
}

/* --------------------------------------------------------------- start --- */

static int64_t env_int(const char *name, int64_t def, int64_t min, int64_t max, mb_err *err, int *rc)
{
    const char *e = getenv(name);
    uint64_t v;
    if (!e || !*e)
        return def;
    if (!parse_u64(e, &v) || (int64_t)v < min || (int64_t)v > max) {
        *rc = err_set(err, MB_EINVAL, "%s must be a number from %lld to %lld", name, (long long)min,
                      (long long)max);
        return def;
    }
    return (int64_t)v;
}

/* tus's routes (main.c registers them). */
const kroute tus_routes[] = {
    {"OPTIONS", "/api/v1/uploads", MB_ROLE_NONE, h_options, NULL},
    {"POST", "/api/v1/uploads", MB_ROLE_USER, h_create, NULL},
    {"HEAD", "/api/v1/uploads/{id}", MB_ROLE_USER, h_head, NULL},
    {"DELETE", "/api/v1/uploads/{id}", MB_ROLE_USER, h_delete, NULL},
    {"OPTIONS", "/api/v1/uploads/{id}", MB_ROLE_NONE, h_options, NULL},
    {"PATCH", "/api/v1/uploads/{id}", MB_ROLE_USER, NULL, &patch_ops},
    {NULL, NULL, 0, NULL, NULL},
};

int tus_init(mb_err *err)
{
    int rc = 0;
    /* conf.d/mbyte.yaml "upload_expiry" when the kernel's key table has it; the environment wins. */
    json_t *ce = g_cfg && g_cfg->raw ? json_object_get(g_cfg->raw, "upload_expiry") : NULL;
    if (json_is_integer(ce) && json_integer_value(ce) >= 60)
        expiry_seconds = (int64_t)json_integer_value(ce);
    expiry_seconds = env_int("MBYTE_UPLOAD_EXPIRY", expiry_seconds, 60, 365LL * 24 * 3600, err, &rc);
    max_size = (uint64_t)env_int("MBYTE_UPLOAD_MAX_SIZE", (int64_t)max_size, 1, INT64_MAX, err, &rc);
    sweep_seconds = (int)env_int("MBYTE_UPLOAD_SWEEP", sweep_seconds, 1, 86400, err, &rc);
    if (rc)
        return rc;
    free(upload_dir);
    if (asprintf(&upload_dir, "%s/uploads", g_cfg->data_dir) < 0)
        return err_set(err, MB_ENOMEM, "out of memory");
    if (mkdir_p(upload_dir, 0700))
        return err_set(err, MB_EIO, "cannot create %s: %s", upload_dir, strerror(errno));
    sweeper_stop = false;
    if (pthread_create(&sweeper, NULL, sweep_main, NULL))
        return err_set(err, MB_EIO, "cannot start the upload expiry sweep");
    sweeper_running = true;
    return 0;
}

void tus_fini(void)
{
    if (sweeper_running) {
        pthread_mutex_lock(&sweep_lock);
        sweeper_stop = true;
        pthread_cond_signal(&sweep_cond);
        pthread_mutex_unlock(&sweep_lock);
        pthread_join(sweeper, NULL);
        sweeper_running = false;
    }
    free(upload_dir);
    upload_dir = NULL;
}
