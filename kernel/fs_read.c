/*
 * fs_read.c — reading a file version (fs.h: fs_open/fs_read/fs_read_fd/fs_close): the chunk
 * list of a version, each chunk read and verified before a byte of it is served (blob.c), the
 * next few read ahead, and zero-copy descriptors for sendfile.
 *
 * A chunk file blob.c trusts (verified lately and still wholly in the page cache, the rule
 * FTP's sendfile follows) is read with pread straight into the caller's buffer: no copy into
 * the reader's own buffer and no second pass to check it (issue 16: four warm 32 MiB HTTP
 * downloads went from 290 M to 6.8 M instructions in user space, callgrind). Any other chunk
 * is read whole into that buffer and verified there first, as before.
 *
 * A reader of a store on a module's backend (s3, webdav, rclone, a redundancy set) enters that
 * backend when it opens and leaves it when it closes: a download that has begun keeps the
 * backend's module loaded until it ends, as a call in flight does (an unload drains it), while a
 * download asked for once the unload has begun is refused at the open (503, before any byte).
 * Entering it per chunk cut a download in the middle when an unload began (test_modules'
 * BackendUnloadTest, a CI run). A chunk the entered backend no longer has (a live migration
 * moved the store meanwhile) is looked for where the store's placement says now.
 *
 * Threads: a reader belongs to one thread at a time; opening takes no lock (an entry names
 * only committed versions, and a version's chunks stay referenced while it exists).
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

struct fs_reader {
    uint64_t sid; /* whose placement says which backend holds the chunks (backend.c) */
    uint64_t size;
    size_t n;
    char (*hash)[65];
    char (*fast)[33]; /* XXH3-128 per chunk, "" in versions written before it was recorded */
    uint64_t *off;    /* start of each chunk; off[n] == size */
    uint8_t *cache;
    size_t cached;     /* index of the chunk in cache, or SIZE_MAX */
    bool around;       /* that chunk was read around the page cache: no descriptor to offer */
    size_t prefetched; /* chunks below this index were handed to blob_prefetch */
    int fd;            /* a trusted chunk file, read with pread, or -1 */
    size_t fd_idx;     /* its index */
    bool held;         /* be is entered: the store is on a module's backend */
    backend_ref be;
};

#define PREFETCH_AHEAD 4 /* chunks (about 4 MiB) read ahead of the one being served */

/* Chunk i is being read: start reading the next few from the disk meanwhile. Each chunk is
 * its own file, so the kernel's readahead stops at the end of every one of them; without
 * this a download after an upload (O_DIRECT: nothing cached) waited for each chunk in turn. */
static void read_ahead(fs_reader *r, size_t i)
{
    if (r->held)
        return; /* the chunks are not files on this disk */
    size_t j = r->prefetched > i + 1 ? r->prefetched : i + 1;
    for (; j <= i + PREFETCH_AHEAD && j < r->n; j++)
        blob_prefetch(r->hash[j], r->fast[j], (size_t)(r->off[j + 1] - r->off[j]));
    if (j > r->prefetched)
        r->prefetched = j;
}

int fs_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, fs_reader **out, json_t **info,
            mb_err *err)
{
    *out = NULL;
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, path, err);
    if (rc)
        return rc;
    char *np = op.path;
    json_t *e = NULL, *ver = NULL;
    rc = ns_resolve(sid, np, NULL, &e, err);
    if (!rc && (!e || ns_is_folder(e)))
        rc = err_set(err, MB_ECONFLICT, "'%s' is a folder, not a file", np);
    if (!rc) {
        char key[NS_KEYMAX];
        ns_fkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), version ? version : (uint64_t)jint(e, "version"));
        int g = db_get_json(key, &ver);
        if (g == MB_ENOENT)
            rc = err_set(err, MB_ENOENT, "'%s' has no version %llu", np, (unsigned long long)version);
        else if (g)
            rc = err_set(err, MB_EIO, "cannot read the version record of '%s'", np);
        else
            rc = history_damaged(sid, (uint64_t)jint(e, "id"), version ? version : (uint64_t)jint(e, "version"), np,
                                 err);
    }
    if (!rc) {
        json_t *chunks = json_object_get(ver, "chunks");
        fs_reader *r = xcalloc(1, sizeof *r);
        r->sid = sid;
        r->n = json_array_size(chunks);
        r->hash = xcalloc(r->n + 1, sizeof *r->hash);
        r->fast = xcalloc(r->n + 1, sizeof *r->fast);
        r->off = xcalloc(r->n + 1, sizeof *r->off);
        r->cached = SIZE_MAX;
        r->fd = -1;
        uint64_t o = 0;
        for (size_t i = 0; i < r->n; i++) {
            json_t *c = json_array_get(chunks, i);
            snprintf(r->hash[i], 65, "%s", jstr(c, "h"));
            snprintf(r->fast[i], 33, "%s", jstr(c, "x"));
            r->off[i] = o;
            o += (uint64_t)jint(c, "n");
        }
        r->off[r->n] = o;
        r->size = o;
        int b = r->n ? backend_for_store(sid, &r->be, err) : 1;
        r->held = b == 0;
        if (b < 0) { /* its backend's module is not loaded, or unloading: 503 */
            rc = b;
            fs_close(r);
            r = NULL;
        }
        *out = r;
        if (r && info) {
            *info = ns_public_info(e, np);
            if (version) { /* an older version: its own size and hash */
                json_object_set(*info, "size", json_object_get(ver, "size"));
                json_object_set(*info, "sha256", json_object_get(ver, "sha256"));
                json_object_set_new(*info, "version", json_integer((json_int_t)version));
            }
        }
    }
    json_decref(e);
    json_decref(ver);
    fs_op_end(&op);
    return rc;
}

/* The index of the chunk holding offset off (binary search). */
static size_t chunk_at(const fs_reader *r, uint64_t off)
{
    size_t lo = 0, hi = r->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (r->off[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The chunk holding byte off, loaded into r->cache and verified: its index, or a negative
 * MB_E* (err set). off < r->size. */
static ssize_t load_chunk(fs_reader *r, uint64_t off, mb_err *err)
{
    size_t lo = chunk_at(r, off);
    if (r->cached != lo) {
        if (!r->cache)
            r->cache = blob_chunk_buf();
        r->cached = SIZE_MAX;
        read_ahead(r, lo);
        size_t len = (size_t)(r->off[lo + 1] - r->off[lo]);
        int rc = r->held ? blob_read_ref(&r->be, r->hash[lo], r->fast[lo], r->cache, len, err) : MB_ENOENT;
        if (rc == MB_ENOENT) /* a local store, or a chunk the store's backend no longer has */
            rc = blob_read_store(r->sid, r->hash[lo], r->fast[lo], r->cache, len, err);
        if (rc)
            return rc;
        r->cached = lo;
        r->around = false;
    }
    return (ssize_t)lo;
}

/* Chunk i as a trusted descriptor in r->fd (true), or false when it is read through the
 * buffer instead: an inline chunk, a module's backend, or one just verified into r->cache
 * (the bytes are at hand then). A negative MB_E* with err on a failed read or check. */
static int trusted_fd(fs_reader *r, size_t i, mb_err *err)
{
    if (r->fd >= 0 && r->fd_idx == i)
        return 1;
    if (r->cached == i || r->held)
        return 0;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (!r->cache)
        r->cache = blob_chunk_buf();
    r->cached = SIZE_MAX;
    read_ahead(r, i);
    int fd;
    bool filled;
    int rc = blob_read_fd_store(r->sid, r->hash[i], r->fast[i], &r->cache, (size_t)(r->off[i + 1] - r->off[i]), &fd,
                                &filled, err);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return 0; /* not a local file: load_chunk reads it */
    if (filled) {
        r->cached = i;
        r->around = fd < 0;
        if (fd >= 0)
            close(fd);
        return 0;
    }
    r->fd = fd;
    r->fd_idx = i;
    return 1;
}

ssize_t fs_read(fs_reader *r, uint64_t off, void *buf, size_t n, mb_err *err)
{
    if (off >= r->size || n == 0)
        return 0;
    size_t c = chunk_at(r, off);
    int t = trusted_fd(r, c, err);
    if (t < 0)
        return t;
    size_t clen = (size_t)(r->off[c + 1] - r->off[c]), in = (size_t)(off - r->off[c]);
    size_t k = clen - in < n ? clen - in : n;
    if (t) {
        ssize_t got;
        while ((got = pread(r->fd, buf, k, (off_t)in)) < 0 && errno == EINTR)
            ;
        if (got > 0)
            return got;
        /* A trusted file that now fails or ends early: read it the careful way. */
        close(r->fd);
        r->fd = -1;
        blob_distrust(r->hash[c]);
    }
    ssize_t i = load_chunk(r, off, err);
    if (i < 0)
        return i;
    memcpy(buf, r->cache + in, k);
    return (ssize_t)k;
}

bool fs_span_fd(fs_reader *r, uint64_t off, uint64_t len, int *fd, uint64_t *fd_off)
{
    *fd = -1;
    if (!len || off >= r->size || len > r->size - off)
        return false;
    size_t i = chunk_at(r, off);
    if (off + len > r->off[i + 1])
        return false; /* it spans chunk files */
    uint64_t left;
    mb_err e = {0};
    if (fs_read_fd(r, off, fd, fd_off, &left, &e))
        return false;
    return true;
}

int fs_read_fd(fs_reader *r, uint64_t off, int *fd, uint64_t *fd_off, uint64_t *len, mb_err *err)
{
    *fd = -1;
    if (off >= r->size)
        return err_set(err, MB_ERANGE, "offset %llu is past the end", (unsigned long long)off);
    size_t i = chunk_at(r, off);
    if (r->cached == i && r->around)
        return err_set(err, MB_EUNSUPP, "chunk %.12s… was read into memory; copy it from there", r->hash[i]);
    if (!r->cache)
        r->cache = blob_chunk_buf();
    if (!r->held)
        r->cached = SIZE_MAX; /* whatever chunk the buffer holds, it may be overwritten or traded below */
    bool filled;
    read_ahead(r, i);
    int rc = r->held ? 1
                     : blob_read_fd_store(r->sid, r->hash[i], r->fast[i], &r->cache, (size_t)(r->off[i + 1] - r->off[i]),
                                          fd, &filled, err);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return err_set(err, MB_EUNSUPP, "chunk %.12s… is not a local file; read it instead", r->hash[i]);
    if (filled) {
        r->cached = i;
        r->around = *fd < 0;
    }
    if (*fd < 0) /* read around the page cache: the bytes are in the buffer only */
        return err_set(err, MB_EUNSUPP, "chunk %.12s… was read into memory; copy it from there", r->hash[i]);
    *fd_off = off - r->off[i];
    *len = r->off[i + 1] - off;
    return 0;
}

void fs_close(fs_reader *r)
{
    if (!r)
        return;
    free(r->hash);
    free(r->fast);
    free(r->off);
    free(r->cache);
    if (r->fd >= 0)
        close(r->fd);
    if (r->held)
        backend_leave(&r->be);
    free(r);
}
