/*
 * zip.c — a folder downloads as a streamed zip (issue 3).
 *
 * Two layers:
 *   - zip_stream_*: a pure, pull-driven zip writer. Entries (names only) are listed first;
 *     zip_stream_read() then produces the archive piece by piece, asking a zip_source for
 *     each file's bytes as it goes, so a file is never held in memory: it flows from the
 *     source straight into the caller's buffer while its CRC-32 is computed. Entries are
 *     "stored" (no compression: most large files are already compressed and the goal is
 *     disk-speed downloads), carry data descriptors (bit 3: the CRC is known only after the
 *     bytes went out), UTF-8 names (bit 11), and switch to ZIP64 per field when a size,
 *     an offset or the entry count does not fit the classic 16/32-bit fields.
 *     The unit test drives this layer with an in-memory source.
 *   - zip_folder_reply(): answers through http_reply_stream() (unknown length) with a
 *     source that reads fs_open/fs_read, pulling the subtree's entries from an ns_walker as
 *     the archive goes (zip_stream_feed), never the list of them.
 *
 * Memory is constant whatever the number of entries: an entry is freed once its bytes are
 * out, and its central directory record (needed only at the end) goes to a temporary file
 * in the data folder (O_TMPFILE: nothing to clean up after a crash), read back at the end.
 *
 * CRC-32 comes from zlib (crc32()): it is the zip polynomial, table-driven and vectorised,
 * and zlib is on every system that has a zip tool; nothing else of zlib is used.
 *
 * Threads: a zip_stream has one owner at a time. zip_folder_reply runs on an HTTP worker;
 * later reads run on whichever libmicrohttpd thread serves the connection, one at a time.
 * Nothing here is shared.
 */
#include "kernel.h"
#include "fs.h"
#include "fileio.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define Z32MAX 0xFFFFFFFFu
#define Z16MAX 0xFFFFu

typedef struct zent {
    char *name; /* archive name; folders end with '/' */
    char *key;  /* what the source opens (the name before sanitising) */
    bool folder;
    bool zip64; /* sizes written as ZIP64 (decided when opened) */
    uint32_t dostime, dosdate;
    int64_t mtime;
    uint32_t crc;
    uint64_t size, offset;
} zent;

enum { S_NEXT, S_DATA, S_CENTRAL, S_END, S_DONE, S_FAILED };

struct zip_stream {
    const zip_source *src;
    void *ud;
    zip_feed_fn feed; /* NULL: every entry was added before the first read */
    void *feed_ud;
    zent *ents;   /* entries added and not yet written (a window, not the archive) */
    size_t n, cap;
    uint64_t total; /* entries written: the central directory's count */
    FILE *cd;       /* the central directory, spilled as entries are written */
    size_t cur;        /* entry being written (S_NEXT/S_DATA) or central entry (S_CENTRAL) */
    int state;
    uint64_t written;  /* logical bytes produced so far (headers + data) */
    uint64_t remaining;
    uint32_t crc;
    uint64_t cd_start;
    uint8_t *pend; /* header bytes not yet handed out */
    size_t plen, poff, pcap;
};

zip_stream *zip_stream_new(const zip_source *src, void *ud)
{
    zip_stream *z = xcalloc(1, sizeof *z);
    z->src = src;
    z->ud = ud;
    z->state = S_NEXT;
    return z;
}

void zip_stream_free(zip_stream *z)
{
    if (!z)
        return;
    if (z->state == S_DATA && z->src->close)
        z->src->close(z->ud);
    if (z->cd)
        fclose(z->cd);
    for (size_t i = z->cur; i < z->n; i++) {
        free(z->ents[i].name);
        free(z->ents[i].key);
    }
    free(z->ents);
    free(z->pend);
    free(z);
}

size_t zip_stream_count(const zip_stream *z) { return (size_t)z->total + z->n - z->cur; }

void zip_stream_feed(zip_stream *z, zip_feed_fn fn, void *ud)
{
    z->feed = fn;
    z->feed_ud = ud;
}

void zip_stream_add(zip_stream *z, const char *name, const char *key, bool folder, int64_t mtime)
{
    if (z->n == z->cap) {
        z->cap = z->cap ? z->cap * 2 : 64;
        z->ents = xrealloc(z->ents, z->cap * sizeof *z->ents);
    }
    zent *e = &z->ents[z->n++];
    memset(e, 0, sizeof *e);
    size_t l = strlen(name);
    e->name = xmalloc(l + 2);
    /* A zip name uses '/' only; a '\' in a file name would be a separator to Windows tools,
     * so it cannot be used to climb out of the extraction folder. Leading '/' likewise. */
    size_t j = 0;
    for (size_t i = 0; i < l; i++) {
        if (j == 0 && name[i] == '/')
            continue;
        e->name[j++] = name[i] == '\\' ? '_' : name[i];
    }
    if (folder && (j == 0 || e->name[j - 1] != '/'))
        e->name[j++] = '/';
    e->name[j] = 0;
    e->key = xstrdup(key ? key : name);
    e->folder = folder;
    e->mtime = mtime;
    time_t t = (time_t)mtime;
    struct tm tm;
    if (mtime <= 0 || !gmtime_r(&t, &tm) || tm.tm_year < 80) {
        e->dosdate = (0 << 9) | (1 << 5) | 1; /* 1980-01-01 */
        e->dostime = 0;
    } else {
        e->dosdate = (uint32_t)(((tm.tm_year - 80) << 9) | ((tm.tm_mon + 1) << 5) | tm.tm_mday);
        e->dostime = (uint32_t)((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
    }
}

/* ---- little-endian appends into the pending buffer ---- */

static void put(zip_stream *z, const void *p, size_t n)
{
    if (z->plen + n > z->pcap) {
        z->pcap = (z->plen + n) * 2;
        z->pend = xrealloc(z->pend, z->pcap);
    }
    memcpy(z->pend + z->plen, p, n);
    z->plen += n;
    z->written += n;
}

static void put16(zip_stream *z, uint32_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(z, b, 2);
}

static void put32(zip_stream *z, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(z, b, 4);
}

static void put64(zip_stream *z, uint64_t v)
{
    put32(z, (uint32_t)v);
    put32(z, (uint32_t)(v >> 32));
}

#define FLAG_DESCRIPTOR 0x0008
#define FLAG_UTF8 0x0800
#define MADE_BY (3 << 8 | 45) /* Unix, spec 4.5 */

/* The extended-timestamp extra (0x5455): Unix mtime, so unzip restores it exactly. */
static bool has_xtime(const zent *e) { return e->mtime > 0 && e->mtime <= (int64_t)Z32MAX; }

static void local_header(zip_stream *z, zent *e)
{
    e->offset = z->written;
    size_t nl = strlen(e->name);
    uint16_t xlen = (uint16_t)((e->zip64 ? 20 : 0) + (has_xtime(e) ? 9 : 0));
    put32(z, 0x04034b50);
    put16(z, e->zip64 ? 45 : 20);
    put16(z, FLAG_UTF8 | (e->folder ? 0 : FLAG_DESCRIPTOR));
    put16(z, 0); /* stored */
    put16(z, e->dostime);
    put16(z, e->dosdate);
    put32(z, 0); /* crc: in the descriptor */
    put32(z, e->zip64 ? Z32MAX : 0);
    put32(z, e->zip64 ? Z32MAX : 0);
    put16(z, (uint32_t)nl);
    put16(z, xlen);
    put(z, e->name, nl);
    if (e->zip64) { /* sizes follow in the descriptor; the fields must still be present */
        put16(z, 0x0001);
        put16(z, 16);
        put64(z, 0);
        put64(z, 0);
    }
    if (has_xtime(e)) {
        put16(z, 0x5455);
        put16(z, 5);
        uint8_t fl = 1;
        put(z, &fl, 1);
        put32(z, (uint32_t)e->mtime);
    }
}

static void descriptor(zip_stream *z, zent *e)
{
    put32(z, 0x08074b50);
    put32(z, e->crc);
    if (e->zip64) {
        put64(z, e->size);
        put64(z, e->size);
    } else {
        put32(z, (uint32_t)e->size);
        put32(z, (uint32_t)e->size);
    }
}

static void central_entry(zip_stream *z, const zent *e)
{
    bool big = e->size >= Z32MAX, far = e->offset >= Z32MAX;
    uint16_t x64 = (uint16_t)((big ? 16 : 0) + (far ? 8 : 0));
    uint16_t xlen = (uint16_t)((x64 ? 4 + x64 : 0) + (has_xtime(e) ? 9 : 0));
    size_t nl = strlen(e->name);
    put32(z, 0x02014b50);
    put16(z, MADE_BY);
    put16(z, (e->zip64 || x64) ? 45 : 20);
    put16(z, FLAG_UTF8 | (e->folder ? 0 : FLAG_DESCRIPTOR));
    put16(z, 0);
    put16(z, e->dostime);
    put16(z, e->dosdate);
    put32(z, e->crc);
    put32(z, big ? Z32MAX : (uint32_t)e->size);
    put32(z, big ? Z32MAX : (uint32_t)e->size);
    put16(z, (uint32_t)nl);
    put16(z, xlen);
    put16(z, 0); /* comment */
    put16(z, 0); /* disk */
    put16(z, 0); /* internal attributes */
    put32(z, e->folder ? (0040755u << 16 | 0x10) : (0100644u << 16));
    put32(z, far ? Z32MAX : (uint32_t)e->offset);
    put(z, e->name, nl);
    if (x64) {
        put16(z, 0x0001);
        put16(z, x64);
        if (big) {
            put64(z, e->size);
            put64(z, e->size);
        }
        if (far)
            put64(z, e->offset);
    }
    if (has_xtime(e)) {
        put16(z, 0x5455);
        put16(z, 5);
        uint8_t fl = 1;
        put(z, &fl, 1);
        put32(z, (uint32_t)e->mtime);
    }
}

static void end_records(zip_stream *z)
{
    uint64_t cd_end = z->written, cd_size = cd_end - z->cd_start;
    bool z64 = z->total >= Z16MAX || z->cd_start >= Z32MAX || cd_size >= Z32MAX;
    if (z64) {
        put32(z, 0x06064b50); /* ZIP64 end of central directory record */
        put64(z, 44);
        put16(z, MADE_BY);
        put16(z, 45);
        put32(z, 0);
        put32(z, 0);
        put64(z, z->total);
        put64(z, z->total);
        put64(z, cd_size);
        put64(z, z->cd_start);
        put32(z, 0x07064b50); /* locator */
        put32(z, 0);
        put64(z, cd_end);
        put32(z, 1);
    }
    put32(z, 0x06054b50);
    put16(z, 0);
    put16(z, 0);
    put16(z, z64 && z->total >= Z16MAX ? Z16MAX : (uint32_t)z->total);
    put16(z, z64 && z->total >= Z16MAX ? Z16MAX : (uint32_t)z->total);
    put32(z, cd_size >= Z32MAX ? Z32MAX : (uint32_t)cd_size);
    put32(z, z->cd_start >= Z32MAX ? Z32MAX : (uint32_t)z->cd_start);
    put16(z, 0);
}

/* Entry cur is written: its central record goes to the spill file and the entry is freed.
 * The record is formatted into the pending buffer and taken back out of it. */
static int spill(zip_stream *z, mb_err *err)
{
    zent *e = &z->ents[z->cur++];
    size_t plen = z->plen;
    uint64_t written = z->written;
    central_entry(z, e);
    bool ok = z->cd && fwrite(z->pend + plen, 1, z->plen - plen, z->cd) == z->plen - plen;
    z->plen = plen;
    z->written = written;
    free(e->name);
    free(e->key);
    e->name = e->key = NULL;
    z->total++;
    if (z->cur == z->n) /* the window is empty: start it over */
        z->cur = z->n = 0;
    if (!ok) {
        z->state = S_FAILED;
        return err_set(err, MB_EIO, "cannot write the zip's central directory to a temporary file");
    }
    return 0;
}

ssize_t zip_stream_read(zip_stream *z, char *buf, size_t max, mb_err *err)
{
    size_t n = 0;
    if (z->state == S_FAILED)
        return err_set(err, MB_EIO, "the zip stream already failed");
    while (n < max) {
        if (z->poff < z->plen) {
            size_t k = z->plen - z->poff;
            if (k > max - n)
                k = max - n;
            memcpy(buf + n, z->pend + z->poff, k);
            z->poff += k;
            n += k;
            continue;
        }
        z->plen = z->poff = 0;
        switch (z->state) {
        case S_NEXT: {
            if (!z->cd && !(z->cd = fio_spill(g_cfg ? g_cfg->data_dir : NULL))) {
                z->state = S_FAILED;
                return err_set(err, MB_EIO, "cannot make a temporary file for the zip's central directory");
            }
            if (z->cur == z->n && z->feed) {
                int rc = z->feed(z->feed_ud, z);
                if (rc < 0) {
                    z->state = S_FAILED;
                    return err_set(err, rc, "the folder could not be read to the end");
                }
            }
            if (z->cur == z->n) {
                z->cd_start = z->written;
                z->state = S_CENTRAL;
                rewind(z->cd);
                break;
            }
            zent *e = &z->ents[z->cur];
            if (e->folder) {
                local_header(z, e);
                int rc = spill(z, err);
                if (rc)
                    return rc;
                break;
            }
            uint64_t size = 0;
            int rc = z->src->open(z->ud, e->key, &size, err);
            if (rc) {
                z->state = S_FAILED;
                return rc;
            }
            e->size = size;
            e->zip64 = size >= Z32MAX;
            z->remaining = size;
            z->crc = (uint32_t)crc32(0L, Z_NULL, 0);
            local_header(z, e);
            z->state = S_DATA;
            break;
        }
        case S_DATA: {
            zent *e = &z->ents[z->cur];
            if (z->remaining == 0) {
                if (z->src->close)
                    z->src->close(z->ud);
                e->crc = z->crc;
                descriptor(z, e);
                z->state = S_NEXT;
                int rc = spill(z, err);
                if (rc)
                    return rc;
                break;
            }
            size_t want = max - n;
            if (want > z->remaining)
                want = (size_t)z->remaining;
            ssize_t r = z->src->read(z->ud, buf + n, want, err);
            if (r <= 0) {
                if (z->src->close)
                    z->src->close(z->ud);
                z->state = S_FAILED;
                if (r == 0)
                    return err_set(err, MB_EIO, "%s ended %llu bytes early", e->name,
                                   (unsigned long long)z->remaining);
                return r;
            }
            /* zlib's crc32 takes a uInt length: r <= max, which callers keep small. */
            z->crc = (uint32_t)crc32(z->crc, (const Bytef *)buf + n, (uInt)r);
            z->remaining -= (uint64_t)r;
            z->written += (uint64_t)r;
            n += (size_t)r;
            break;
        }
        case S_CENTRAL: {
            char piece[16384];
            size_t got = fread(piece, 1, sizeof piece, z->cd);
            if (got) {
                put(z, piece, got);
                break;
            }
            if (ferror(z->cd)) {
                z->state = S_FAILED;
                return err_set(err, MB_EIO, "cannot read the zip's central directory back");
            }
            end_records(z);
            z->state = S_END;
            break;
        }
        case S_END:
            z->state = S_DONE;
            return (ssize_t)n;
        default:
            return (ssize_t)n;
        }
    }
    return (ssize_t)n;
}

/* ------------------------------------------------------- the HTTP side --- */

typedef struct zsrc {
    mb_user user;
    bool system; /* act as the system (u NULL): a module already checked access */
    char *uname;
    uint64_t sid;
    char *base; /* folder path in the store, no leading or trailing '/' ("" for the root) */
    fs_reader *r;
    uint64_t off;
    zip_stream *z;
    ns_walker *walk; /* the entries still to come */
    char *prefix;    /* the folder's name and '/' in front of each entry's name */
} zsrc;

static int zsrc_open(void *ud, const char *relpath, uint64_t *size, mb_err *err)
{
    zsrc *s = ud;
    char *p = NULL;
    if (asprintf(&p, "/%s%s%s", s->base, *s->base ? "/" : "", relpath) < 0)
        return err_set(err, MB_ENOMEM, "out of memory");
    json_t *info = NULL;
    int rc = fs_open(s->system ? NULL : &s->user, s->sid, p, 0, &s->r, &info, err);
    free(p);
    if (rc)
        return rc;
    json_int_t sz = json_integer_value(json_object_get(info, "size"));
    json_decref(info);
    *size = sz > 0 ? (uint64_t)sz : 0;
    s->off = 0;
    return 0;
}

static ssize_t zsrc_read(void *ud, void *buf, size_t n, mb_err *err)
{
    zsrc *s = ud;
    ssize_t r = fs_read(s->r, s->off, buf, n, err);
    if (r > 0)
        s->off += (uint64_t)r;
    return r;
}

static void zsrc_close(void *ud)
{
    zsrc *s = ud;
    fs_close(s->r);
    s->r = NULL;
}

static const zip_source fs_source = {zsrc_open, zsrc_read, zsrc_close};

static void zsrc_free(void *cls)
{
    zsrc *s = cls;
    zip_stream_free(s->z); /* closes an open reader through the source */
    if (s->walk)
        ns_walker_free(s->walk);
    free(s->prefix);
    free(s->uname);
    free(s->base);
    free(s);
}

static ssize_t zsrc_pull(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    zsrc *s = cls;
    mb_err err = {0};
    ssize_t n = zip_stream_read(s->z, buf, max, &err);
    if (n < 0) {
        log_msg(LOG_ERROR, "zip", "folder download of store %llu '%s' broke off: %s", (unsigned long long)s->sid,
                s->base, err.msg);
        return -2;
    }
    return n == 0 ? -1 : n;
}

/* The next entry of the folder's walk (ns_walker: memory grows with the depth only). */
static int zsrc_feed(void *ud, zip_stream *z)
{
    zsrc *s = ud;
    uint64_t pid;
    const char *name, *rel;
    json_t *e;
    if (!ns_walker_next(s->walk, &pid, &name, &e, &rel))
        return ns_walker_broken(s->walk) ? MB_EIO : 0;
    json_t *mt = json_object_get(e, "mtime");
    int64_t mtime = json_is_integer(mt) ? (int64_t)json_integer_value(mt) : now_wall();
    char *full = NULL;
    if (asprintf(&full, "%s%s", s->prefix, rel) < 0)
        return MB_ENOMEM;
    zip_stream_add(z, full, rel, ns_is_folder(e), mtime);
    free(full);
    return 0;
}

/* attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded> (RFC 6266). */
static char *content_disposition(const char *fname)
{
    size_t l = strlen(fname);
    char *ascii = xmalloc(l + 1), *pct = xmalloc(3 * l + 1);
    size_t a = 0, p = 0;
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)fname[i];
        ascii[a++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != ';' && c != '%') ? (char)c : '_';
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
            pct[p++] = (char)c;
        else
            p += (size_t)sprintf(pct + p, "%%%02X", c);
    }
    ascii[a] = pct[p] = 0;
    char *out = NULL;
    if (asprintf(&out, "attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, pct) < 0)
        out = NULL;
    free(ascii);
    free(pct);
    return out;
}

int zip_folder_reply(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    zsrc *s = xcalloc(1, sizeof *s);
    /* The reader outlives the handler: keep our own copies of what it needs. */
    /* u NULL is the system (a share link checked by its module): keep acting as it. */
    s->system = u == NULL;
    s->uname = xstrdup(u && u->name ? u->name : "");
    if (u)
        s->user = *u;
    s->user.name = s->uname;
    s->sid = sid;
    while (*path == '/')
        path++;
    s->base = xstrdup(path);
    for (size_t l = strlen(s->base); l && s->base[l - 1] == '/'; l--)
        s->base[l - 1] = 0;
    const char *slash = strrchr(s->base, '/');
    const char *folder = *s->base ? (slash ? slash + 1 : s->base) : "";
    char *prefix = NULL;
    if (asprintf(&prefix, "%s%s", folder, *folder ? "/" : "") < 0)
        prefix = NULL;
    s->prefix = prefix ? prefix : xstrdup("");
    s->z = zip_stream_new(&fs_source, s);
    if (*s->prefix) /* the folder itself, so it exists even when empty */
        zip_stream_add(s->z, s->prefix, NULL, true, now_wall());
    fs_op op;
    uint64_t id;
    int rc = fs_folder_begin(&op, u, sid, s->base, &id, err); /* may u read it; its id */
    if (rc) {
        zsrc_free(s);
        return rc;
    }
    fs_op_end(&op);
    s->walk = ns_walker_new(sid, id);
    zip_stream_feed(s->z, zsrc_feed, s);
    char fname[600];
    snprintf(fname, sizeof fname, "%.*s.zip", 500, *folder ? folder : "files");
    char *cd = content_disposition(fname);
    if (cd) {
        http_reply_header(req, "Content-Disposition", cd);
        free(cd);
    }
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_header(req, "Cache-Control", "no-store");
    return http_reply_stream(req, 200, "application/zip", (uint64_t)-1, zsrc_pull, s, zsrc_free);
}
