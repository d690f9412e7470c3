/*
 * blob.c — the chunk store: the blob-backend interface, the kernel's local filesystem
 * backend, inline chunks and verified reads (DESIGN.md: Storage; the pending table is blob_pending.c). Chunk
 * refcounts are written by each change's transaction (txn.c); the collector is gc.c.
 *
 * Chunks are immutable and named by the SHA-256 of their bytes. The local backend keeps
 * them at <data>/chunks/ab/cd/<sha256>, each written as a temp file in <data>/chunks/tmp,
 * fdatasync'd, renamed into place, and the directory fsync'd, so a chunk that exists is whole.
 * A module may register another backend (S3, WebDAV, encryption); the last registered is
 * the active one, and unloading it falls back to the local one. Modules may also register
 * named backends (backend.c) that stores are placed on: blob_*_store put and read a store's
 * chunks there; has, del and list reach every backend.
 *
 * Small chunks (at most chunk_inline_max bytes, mbyte.yaml; 32 KiB by default) live in
 * LevelDB itself as ci/<sha256>, put into the same batch as the version that uses
 * them (blob_put_inline): a small file then costs one group-committed write instead of a
 * file create, two fsyncs and a rename. Only the last piece of a file can be that small
 * (the chunker never cuts below 256 KiB), so big files are untouched. Reads look in LevelDB
 * first for any chunk that could be inline, whatever the active backend; the collector
 * deletes both forms.
 *
 * Chunk files are written with O_DIRECT from aligned buffers when the file system allows it
 * (local_put): written once and synced at once, they gain nothing from the page cache but the
 * first download right after the upload, which chunk_direct_io: false buys with upload CPU.
 *
 * Reads verify every chunk before a byte of it is served (a chunk file verified lately and
 * still wholly in the page cache is trusted for sendfile: "verified while cached" below).
 * Version records carry each chunk's
 * XXH3-128 ("x", blob_fastsum), which is checked instead of re-hashing with SHA-256: it finds
 * the same bit rot and torn writes at about 30 times the speed (btrfs offers xxhash64 data
 * checksums for the same reason). Records older than "x" are checked with SHA-256; the
 * SHA-256 name stays the identity and the integrity scrub (blob_get) still re-hashes with it.
 *
 * Refcounts live in LevelDB as c/<sha256> -> {"v":1,"refs","size","zero_since"} and change
 * only in the same batch as the namespace change that needs them (txn.c), under the
 * one commit lock: refcount read-modify-write and the collector (gc.c) never interleave.
 *
 * Collector and writers: a write marks each chunk it produced (written or deduplicated) as
 * pending until it commits or aborts. The collector deletes a chunk only when, under the
 * pending lock, it is not pending; a writer marks a chunk pending (under the same lock)
 * BEFORE it checks whether the chunk exists. So either the collector deleted it first and
 * the writer stores it again, or the writer got there first and the collector skips it.
 *
 * Reading local chunk files through the page cache (the verified-while-cached table, verify,
 * read-ahead and the descriptors sent with sendfile) is blob_cache.c.
 *
 * Threads: any. backend_lock (rwlock) guards the active backend; pend_lock the pending
 * table. Lock order: txn.c's commit lock -> pend (the collector and gc_discard hold the
 * first around the second).
 */
#include "fs.h"
#include "blob_int.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>
#include <xxhash.h>

/* ------------------------------------------------------------ backends --- */

typedef struct backend {
    const mb_blob_backend *ops;
    void *state;
    mb_module *owner;
} backend;

static pthread_rwlock_t backend_lock = PTHREAD_RWLOCK_INITIALIZER;
static backend active;
static mb_blob_backend local_ops;
static char *chunk_dir;

bool valid_key(const char *k)
{
    if (strlen(k) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
            return false;
    return true;
}

static void local_path(const char *key, char *out, size_t n)
{
    snprintf(out, n, "%s/%.2s/%.2s/%s", chunk_dir, key, key + 2, key);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Create chunks/ab/cd if missing; a new directory entry is made durable in its parent. */
static int local_mkdirs(const char *key, mb_err *err)
{
    char d1[4200], d2[4300];
    snprintf(d1, sizeof d1, "%s/%.2s", chunk_dir, key);
    snprintf(d2, sizeof d2, "%s/%.2s", d1, key + 2);
    struct stat st;
    if (stat(d2, &st) == 0)
        return 0;
    if (mkdir(d1, 0700) == 0)
        fsync_dir(chunk_dir);
    else if (errno != EEXIST)
        return err_set(err, MB_EIO, "cannot create the chunk folder %s: %s", d1, strerror(errno));
    if (mkdir(d2, 0700) == 0)
        fsync_dir(d1);
    else if (errno != EEXIST)
        return err_set(err, MB_EIO, "cannot create the chunk folder %s: %s", d2, strerror(errno));
    return 0;
}

static int local_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    (void)st;
    if (!valid_key(key))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    int rc = local_mkdirs(key, err);
    if (rc)
        return rc;
    char tmp[4200], final[4200], rnd[17];
    random_hex(rnd, 8);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.%s", chunk_dir, key, rnd);
    local_path(key, final, sizeof final);
    /* Chunks are written once and synced at once: with O_DIRECT the bytes go from our buffer
     * to the disk without a copy into the page cache, which cost this project's VM about
     * 2.6 ms of CPU per MiB (write + fsync) against 0.25 ms direct. It needs a 4 KiB-aligned
     * buffer and length: the aligned body goes direct, the tail through the page cache. A
     * file system without O_DIRECT (tmpfs) or an unaligned buffer takes the ordinary way, and
     * so does every chunk with chunk_direct_io: false, which leaves a new file in the page
     * cache for its first download (docs/operations.md has the trade, measured). */
    bool direct = (!g_cfg || g_cfg->chunk_direct_io) && ((uintptr_t)data % BLOB_ALIGN) == 0 && len >= BLOB_ALIGN;
    int fd = -1;
    if (direct && (fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600)) < 0 && errno != EINVAL)
        return err_set(err, MB_EIO, "cannot create a chunk file: %s", strerror(errno));
    if (fd < 0) { /* not asked for, or EINVAL: this file system has no O_DIRECT (tmpfs) */
        direct = false;
        if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
            return err_set(err, MB_EIO, "cannot create a chunk file: %s", strerror(errno));
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        if (direct && left < BLOB_ALIGN) { /* the tail: back to the page cache */
            int fl = fcntl(fd, F_GETFL);
            direct = !(fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0);
            if (direct) {
                int e = errno;
                close(fd);
                unlink(tmp);
                return err_set(err, MB_EIO, "cannot write a chunk: %s", strerror(e));
            }
        }
        size_t want = direct ? left - left % BLOB_ALIGN : left;
        ssize_t w = write(fd, p, want);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EINVAL && direct) { /* opened with O_DIRECT, yet refuses it (FUSE) */
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0) {
                direct = false;
                continue;
            }
        }
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return err_set(err, e == ENOSPC ? MB_EQUOTA : MB_EIO, "cannot write a chunk: %s",
                           strerror(e ? e : EIO));
        }
        if (direct && (size_t)w % BLOB_ALIGN) { /* a short direct write: finish buffered */
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0)
                fcntl(fd, F_SETFL, fl & ~O_DIRECT);
            direct = false;
        }
        p += w;
        left -= (size_t)w;
    }
    /* fdatasync: the bytes and what reading them back needs (size, blocks); not the times. */
    if (fdatasync(fd) || close(fd)) {
        int e = errno;
        unlink(tmp);
        return err_set(err, MB_EIO, "cannot make a chunk durable: %s", strerror(e));
    }
    if (rename(tmp, final)) {
        int e = errno;
        unlink(tmp);
        return err_set(err, MB_EIO, "cannot move a chunk into place: %s", strerror(e));
    }
    /* The rename is durable only once the directory is. */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%.2s/%.2s", chunk_dir, key, key + 2);
    if (fsync_dir(dir))
        return err_set(err, MB_EIO, "cannot sync the chunk folder: %s", strerror(errno));
    return 0;
}

/* Up to len bytes of chunk file fd from off (fewer at its end); MB_EIO on a read error. */
int64_t read_at(int fd, void *buf, size_t len, uint64_t off, const char *key, mb_err *err)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_set(err, MB_EIO, "chunk %.12s… cannot be read: %s", key, strerror(errno));
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (int64_t)got;
}

/* A read-only descriptor on the chunk file of key, or MB_ENOENT / MB_EIO with a sentence. */
int chunk_open(const char *key, mb_err *err)
{
    char path[4200];
    local_path(key, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? MB_ENOENT : MB_EIO, "chunk %.12s… cannot be opened: %s", key,
                       strerror(errno));
    return fd;
}

static int64_t local_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    (void)st;
    if (!valid_key(key))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    int fd = chunk_open(key, err);
    if (fd < 0)
        return fd;
    int64_t got = read_at(fd, buf, len, off, key, err);
    close(fd);
    return got;
}

static int local_has(void *st, const char *key, mb_err *err)
{
    (void)st, (void)err;
    if (!valid_key(key))
        return 0;
    char path[4200];
    local_path(key, path, sizeof path);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int local_del(void *st, const char *key, mb_err *err)
{
    (void)st;
    if (!valid_key(key))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    char path[4200];
    local_path(key, path, sizeof path);
    if (unlink(path) && errno != ENOENT)
        return err_set(err, MB_EIO, "cannot delete chunk %.12s…: %s", key, strerror(errno));
    return 0;
}

static bool hex2(const char *s) { return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2; }

static int local_list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    (void)st, (void)err;
    DIR *d1 = opendir(chunk_dir);
    if (!d1)
        return 0;
    struct dirent *e1;
    int stop = 0;
    while (!stop && (e1 = readdir(d1))) {
        if (!hex2(e1->d_name))
            continue;
        char p1[4200];
        snprintf(p1, sizeof p1, "%s/%s", chunk_dir, e1->d_name);
        DIR *d2 = opendir(p1);
        if (!d2)
            continue;
        struct dirent *e2;
        while (!stop && (e2 = readdir(d2))) {
            if (!hex2(e2->d_name))
                continue;
            char p2[4500];
            snprintf(p2, sizeof p2, "%s/%s", p1, e2->d_name);
            DIR *d3 = opendir(p2);
            if (!d3)
                continue;
            struct dirent *e3;
            while (!stop && (e3 = readdir(d3))) {
                if (!valid_key(e3->d_name))
                    continue;
                char p3[4800];
                snprintf(p3, sizeof p3, "%s/%s", p2, e3->d_name);
                struct stat sb;
                if (stat(p3, &sb) == 0 && S_ISREG(sb.st_mode))
                    stop = fn(e3->d_name, (uint64_t)sb.st_size, (int64_t)sb.st_mtime, ud);
            }
            closedir(d3);
        }
        closedir(d2);
    }
    closedir(d1);
    return stop;
}

static mb_blob_backend local_ops = {
    .size = sizeof(mb_blob_backend),
    .name = "local",
    .put = local_put,
    .get = local_get,
    .has = local_has,
    .del = local_del,
    .list = local_list,
};

/* Take a reference on the active backend for one call. */
static backend be_enter(void)
{
    pthread_rwlock_rdlock(&backend_lock);
    backend b = active;
    modref_enter(b.owner);
    pthread_rwlock_unlock(&backend_lock);
    return b;
}

static void be_leave(backend b) { modref_leave(b.owner); }

int blob_backend_register(mb_module *owner, const mb_blob_backend *b, void *state, mb_err *err)
{
    if (!b || b->size < offsetof(mb_blob_backend, list) || !b->put || !b->get || !b->has || !b->del || !b->name)
        return err_set(err, MB_EINVAL, "a blob backend needs a name and put, get, has and del");
    pthread_rwlock_wrlock(&backend_lock);
    active = (backend){.ops = b, .state = state, .owner = owner};
    pthread_rwlock_unlock(&backend_lock);
    log_info("chunks are now stored through the '%s' backend", b->name);
    return 0;
}

void blob_backend_unregister(mb_module *owner)
{
    pthread_rwlock_wrlock(&backend_lock);
    if (owner && active.owner == owner)
        active = (backend){.ops = &local_ops};
    pthread_rwlock_unlock(&backend_lock);
    backend_remove_owner(owner); /* and its named backends (backend.c) */
}

/* ------------------------------------------------------ inline chunks --- */

static size_t inline_max = 32768;

size_t blob_inline_max(void) { return inline_max; }

/* Chunk buffers are mapped, not taken from malloc: they are page-aligned for O_DIRECT, and
 * their memory goes back to the system at once (malloc kept megabytes of freed aligned
 * blocks per thread arena, which tripled the resident size of a big upload). */
void *blob_buf_alloc(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort(); /* as xmalloc */
    return p;
}

void blob_buf_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

static void inline_key(char out[72], const char *hash) { snprintf(out, 72, "ci/%s", hash); }

/* Where the bytes of inline chunk `hash` are: cb/<seq, 16 hex digits><sha256>. */
static void body_key(char out[BODY_KEY + 1], const char *seq, const char *hash)
{
    memcpy(out, "cb/", 3);
    memcpy(out + 3, seq, 16);
    memcpy(out + 19, hash, 64);
    out[BODY_KEY] = '\0';
}

/* The next body's sequence: microseconds of the wall clock, or one more than the last one when
 * the clock has not moved on (or went back). Only the order of the keys depends on it (a later
 * body sorts after an earlier one, so LevelDB moves it down its levels without rewriting it);
 * the hash in the key keeps two bodies apart whatever their sequence. */
static _Atomic uint64_t last_seq;

static uint64_t next_seq(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    uint64_t prev = atomic_load(&last_seq), next;
    do
        next = prev >= now ? prev + 1 : now;
    while (!atomic_compare_exchange_weak(&last_seq, &prev, next));
    return next;
}

/* ci/<hash>'s record into *v: *at is its body's sequence (16 hex digits inside *v, format 2), or
 * NULL when the record holds the bytes itself (format 1). MB_ENOENT / MB_EIO when it is missing /
 * unreadable. */
static int inline_where(const char *hash, char **v, size_t *vl, const char **at)
{
    char key[72];
    inline_key(key, hash);
    int rc = db_get(key, strlen(key), v, vl);
    if (rc)
        return rc;
    *at = NULL;
    if (*vl >= 1 && (*v)[0] == INLINE_BYTES)
        return 0;
    if (*vl == 17 && (*v)[0] == INLINE_AT) {
        *at = *v + 1;
        return 0;
    }
    free(*v);
    *v = NULL;
    return MB_EIO;
}

bool blob_put_inline(db_batch *b, const char *hash, const void *data, size_t len)
{
    if (blob_inline_has(hash))
        return false;
    char key[BODY_KEY + 1], at[18];
    at[0] = INLINE_AT;
    key_u64(at + 1, next_seq());
    body_key(key, at + 1, hash);
    uint8_t *v = xmalloc(len + 1);
    v[0] = INLINE_BYTES;
    memcpy(v + 1, data, len);
    db_batch_put(b, key, BODY_KEY, v, len + 1);
    free(v);
    inline_key(key, hash);
    db_batch_put(b, key, strlen(key), at, 17);
    return true;
}

/* The bytes of inline chunk `hash` into buf (len bytes at most): their length, MB_ENOENT when
 * it is not inline, MB_EIO on an unreadable record or a missing body. */
static int64_t inline_get(const char *hash, void *buf, size_t len)
{
    if (len > CHUNK_INLINE_LIMIT)
        return MB_ENOENT;
    char *v;
    size_t vl;
    const char *at;
    int rc = inline_where(hash, &v, &vl, &at);
    if (rc)
        return rc;
    if (at) {
        char key[BODY_KEY + 1];
        body_key(key, at, hash);
        free(v);
        if (db_get(key, BODY_KEY, &v, &vl))
            return MB_EIO; /* a pointer without its body: reported like damaged bytes */
    }
    int64_t n = MB_EIO;
    if (vl >= 1 && v[0] == INLINE_BYTES) {
        n = (int64_t)(vl - 1 < len ? vl - 1 : len);
        memcpy(buf, v + 1, (size_t)n);
    }
    free(v);
    return n;
}

bool blob_inline_has(const char *hash)
{
    char key[72], *v;
    inline_key(key, hash);
    if (db_get(key, strlen(key), &v, NULL))
        return false;
    free(v);
    return true;
}

bool blob_inline_body(const char *k, size_t kl, char hash[65])
{
    if (kl != BODY_KEY || memcmp(k, "cb/", 3))
        return false;
    memcpy(hash, k + 19, 64);
    hash[64] = '\0';
    char *cur;
    size_t cl;
    const char *at;
    if (inline_where(hash, &cur, &cl, &at))
        return false;
    bool named = at && !memcmp(at, k + 3, 16);
    free(cur);
    return named;
}

void blob_inline_relink(db_batch *b, const char *k, const char *hash)
{
    char key[72], at[18];
    at[0] = INLINE_AT;
    memcpy(at + 1, k + 3, 16);
    inline_key(key, hash);
    db_batch_put(b, key, strlen(key), at, 17);
}

/* ------------------------------------------------------------- chunks --- */

/* 1 when the backend holds object key whole (len bytes), 0 when not, or a negative MB_E*. A
 * backend that can say the size is asked it: an object of another size was cut short (a
 * service that died while writing it in place) and is put again, never taken for stored. */
static int has_whole(const mb_blob_backend *ops, void *state, const char *key, size_t len, mb_err *err)
{
    uint64_t have = len;
    int rc = ops->stat ? ops->stat(state, key, &have, NULL, err) : ops->has(state, key, err);
    return rc == 1 && have != len ? 0 : rc;
}

/* Put through one backend unless it has the chunk already (dedup). */
static int put_via(const mb_blob_backend *ops, void *state, const char *hash, const void *data, size_t len,
                   mb_err *err)
{
    mb_err e = {0};
    int rc = has_whole(ops, state, hash, len, &e);
    if (rc == 0)
        rc = ops->put(state, hash, data, len, &e);
    else if (rc == 1)
        rc = 0; /* dedup: the same bytes are already stored */
    if (rc < 0) {
        if (err)
            *err = e.code ? e : (mb_err){.code = rc};
        if (err && !err->msg[0])
            err_set(err, rc, "the chunk store refused a chunk");
    }
    return rc < 0 ? rc : 0;
}

int blob_put(const char *hash, const void *data, size_t len, mb_err *err)
{
    backend b = be_enter();
    int rc = put_via(b.ops, b.state, hash, data, len, err);
    be_leave(b);
    return rc;
}

void blob_fastsum(const void *data, size_t len, char out[33])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
    hex_encode(c.digest, sizeof c.digest, out);
}

/* ------------------------------------------ named backends (backend.c) --- */

#define NAMED_MAX 64

/* Get chunk hash (len bytes) from backend r: plain, or its encrypted object decrypted and
 * authenticated (crypt.c). The bytes read, or a negative MB_E* with err set. */
static int64_t ref_get(backend_ref *r, const char *hash, void *buf, size_t len, mb_err *err)
{
    if (!r->encrypt)
        return r->ops.get(r->state, hash, 0, buf, len, err);
    char name[CRYPT_NAME];
    if (crypt_name(r->nk, hash, name))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    size_t olen = crypt_sealed_size(len);
    uint8_t *obj = blob_buf_alloc(olen);
    int64_t n = r->ops.get(r->state, name, 0, obj, olen, err);
    if (n >= 0) {
        int rc = crypt_open(r->ck, hash, obj, (size_t)n, buf, len, err);
        n = rc ? rc : (int64_t)len;
    }
    blob_buf_free(obj, olen);
    return n;
}

/* Put chunk hash to backend r, sealed first when its store encrypts. */
static int ref_put(backend_ref *r, const char *hash, const void *data, size_t len, mb_err *err)
{
    if (!r->encrypt)
        return put_via(&r->ops, r->state, hash, data, len, err);
    char name[CRYPT_NAME];
    if (crypt_name(r->nk, hash, name))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    size_t olen = crypt_sealed_size(len);
    uint8_t *obj = blob_buf_alloc(olen);
    int rc = crypt_seal(r->ck, hash, data, len, obj) ? err_set(err, MB_EINVAL, "an empty chunk cannot be sealed")
                                                     : put_via(&r->ops, r->state, name, obj, olen, err);
    blob_buf_free(obj, olen);
    return rc;
}

/* The object name of hash on backend r (itself, or its encrypted name). */
static const char *ref_name(const backend_ref *r, const char *hash, char name[CRYPT_NAME])
{
    return !r->encrypt ? hash : crypt_name(r->nk, hash, name) ? NULL : name;
}

/* Every named backend, then every encrypting store's view of its backend, each entered. */
static size_t enter_named(backend_ref *r, size_t max)
{
    size_t n = backend_enter_all(r, max);
    return n + backend_store_views(r + n, max - n);
}

/* Read chunk hash from whichever named backend has it: bytes read, or MB_ENOENT. */
/* Read chunk hash from whichever named backend has it whole and sound: 0 with buf filled and
 * verified, MB_ENOENT when none has it, or the first other failure. A copy that fails (being
 * written in place by a migration, damaged) does not end the search. */
static int named_get(const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err)
{
    backend_ref r[NAMED_MAX];
    size_t n = enter_named(r, NAMED_MAX);
    int rc = MB_ENOENT;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (!found) {
            mb_err e = {0};
            int64_t got = ref_get(&r[i], hash, buf, len, &e);
            int v = got < 0 ? (int)got : blob_verify(hash, fastsum, buf, (size_t)got, len, &e);
            if (v == 0)
                found = true, rc = 0;
            else if (v != MB_ENOENT && rc == MB_ENOENT) {
                rc = e.code ? e.code : v;
                if (err)
                    *err = e;
            }
        }
        backend_leave(&r[i]);
    }
    if (rc == MB_ENOENT)
        err_set(err, MB_ENOENT, "chunk %.12s… is in no backend", hash);
    return rc;
}

int blob_check_pieces(const char *hash, size_t len, mb_err *err)
{
    backend_ref r[NAMED_MAX];
    size_t n = backend_store_views(r, NAMED_MAX);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char name[CRYPT_NAME];
        const char *k = r[i].set ? ref_name(&r[i], hash, name) : NULL;
        mb_err e = {0};
        int c = k ? backend_set_check(&r[i], k, r[i].encrypt ? crypt_sealed_size(len) : len, &e) : 0;
        if (c && c != MB_ENOENT && !rc) { /* ENOENT: a set that does not hold this chunk */
            rc = c;
            if (err)
                *err = e;
        }
        backend_leave(&r[i]);
    }
    return rc;
}

/* The put record of chunk hash (kernel table "po/", docs/storage.md): an object no listing can
 * find (an encrypted store's name is not its hash, a set's pieces are under their own names)
 * is recorded before it is put, so that the collector finds it again if no version ever names
 * the chunk: an upload cut by a crash, or a discard that could not reach the backend (gc.c).
 * Durable as the change it belongs to is (db_sync_ack): so under `durability: strict` a crash
 * never leaves such an object unrecorded. */
static int put_record(const char *hash, mb_err *err)
{
    char key[72], val[32];
    snprintf(key, sizeof key, "po/%s", hash);
    int n = snprintf(val, sizeof val, "{\"t\":%lld}", (long long)now_wall());
    db_batch *b = db_batch_new();
    db_batch_put(b, key, strlen(key), val, (size_t)n);
    uint64_t seq;
    if (db_batch_commit_grouped(b, &seq))
        return err_set(err, MB_EIO, "the put record of chunk %.12s… cannot be written", hash);
    db_sync_ack(seq);
    return 0;
}

static void (*store_put_hook)(uint64_t sid, const char *hash, const void *data, size_t len);
void blob_on_store_put(void (*fn)(uint64_t sid, const char *hash, const void *data, size_t len)) { store_put_hook = fn; }

int blob_put_store(uint64_t sid, const char *hash, const void *data, size_t len, mb_err *err)
{
    backend_ref r;
    int rc = backend_for_store(sid, &r, err);
    if (rc == 1) {
        rc = blob_put(hash, data, len, err);
        if (!rc && store_put_hook) /* a chunk on this node's disk: its store's replica gets it now */
            store_put_hook(sid, hash, data, len);
        return rc;
    }
    if (rc)
        return rc;
    /* Acknowledged = durable: the backend's put returns once the bytes are durable there
     * (an S3 PUT answered 200), before the version naming the chunk commits. */
    if (r.encrypt || r.set)
        rc = put_record(hash, err);
    if (!rc)
        rc = ref_put(&r, hash, data, len, err);
    backend_leave(&r);
    return rc;
}

int blob_read_store(uint64_t sid, const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err)
{
    backend_ref r;
    int rc = backend_for_store(sid, &r, err);
    if (rc == 1)
        return blob_read(hash, fastsum, buf, len, err);
    if (rc)
        return rc;
    rc = blob_read_ref(&r, hash, fastsum, buf, len, err);
    backend_leave(&r);
    return rc;
}

int blob_read_ref(backend_ref *r, const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err)
{
    mb_err e = {0};
    int64_t n = inline_get(hash, buf, len); /* small chunks never reach a backend */
    bool inl = n != MB_ENOENT;              /* in LevelDB (or its record unreadable): nowhere else */
    if (n == MB_EIO)
        err_set(&e, MB_EIO, "the record of chunk %.12s… cannot be read", hash);
    else if (n == MB_ENOENT)
        n = ref_get(r, hash, buf, len, &e);
    int v = n < 0 ? (e.code ? e.code : (int)n) : blob_verify(hash, fastsum, buf, (size_t)n, len, &e);
    if (v == 0)
        return 0;
    /* Not there, or not sound there: a chunk shared from a store placed elsewhere, or one a live
     * migration is writing to this placement right now (the old placement still has it). Any
     * sound copy will do: every one is verified. The first failure is what is said when none is. */
    int f = !inl ? blob_read(hash, fastsum, buf, len, v == MB_ENOENT ? err : NULL) : v;
    if (f == 0 || v == MB_ENOENT)
        return f; /* found, or what the search says (in err) */
    if (err)
        *err = e.code ? e : (mb_err){.code = v};
    return v;
}

/* ------------------------------------------------- live migration (migrate.c) --- */

int blob_copy_placed(backend_ref *from, backend_ref *to, const char *hash, const char *fastsum, size_t len,
                     mb_err *err)
{
    char name[CRYPT_NAME];
    const char *k = to ? ref_name(to, hash, name) : hash;
    if (!k || !valid_key(hash))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    if (len <= CHUNK_INLINE_LIMIT && blob_inline_has(hash))
        return 1; /* in LevelDB, whatever the placement */
    int rc;
    if (to)
        rc = has_whole(&to->ops, to->state, k, to->encrypt ? crypt_sealed_size(len) : len, err);
    else {
        backend b = be_enter();
        rc = b.ops->has(b.state, hash, err);
        be_leave(b);
    }
    if (rc)
        return rc; /* there already (1), or it cannot say (< 0) */
    uint8_t *buf = blob_buf_alloc(len);
    mb_err e = {0};
    int64_t n = from ? ref_get(from, hash, buf, len, &e) : MB_ENOENT;
    if (n >= 0)
        rc = blob_verify(hash, fastsum, buf, (size_t)n, len, err);
    else /* not on the old placement (a chunk shared from elsewhere): wherever it is */
        rc = blob_read(hash, fastsum, buf, len, err);
    if (!rc)
        rc = to ? ref_put(to, hash, buf, len, err) : blob_put(hash, buf, len, err);
    blob_buf_free(buf, len);
    return rc;
}

int blob_del_placed(backend_ref *r, const char *hash, mb_err *err)
{
    char name[CRYPT_NAME];
    const char *k = r ? ref_name(r, hash, name) : hash;
    if (!k || !valid_key(hash))
        return err_set(err, MB_EINVAL, "a chunk key must be 64 lower-hex characters");
    if (r)
        return r->ops.del(r->state, k, err);
    backend b = be_enter();
    int rc = b.ops->del(b.state, hash, err);
    be_leave(b);
    return rc;
}

int blob_read(const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err)
{
    mb_err e = {0};
    int64_t n = inline_get(hash, buf, len);
    if (n == MB_EIO)
        err_set(&e, MB_EIO, "the record of chunk %.12s… cannot be read", hash);
    else if (n == MB_ENOENT) {
        backend b = be_enter();
        n = b.ops->get(b.state, hash, 0, buf, len, &e);
        be_leave(b);
        if (n == MB_ENOENT) { /* no store named: a chunk of a store placed elsewhere (fsck, backup) */
            int rc = named_get(hash, fastsum, buf, len, &e);
            if (rc && err)
                *err = e;
            return rc; /* verified there */
        }
    }
    if (n < 0) {
        if (err)
            *err = e;
        return e.code ? e.code : (int)n;
    }
    return blob_verify(hash, fastsum, buf, (size_t)n, len, err);
}

int blob_get(const char *hash, void *buf, size_t len, mb_err *err) { return blob_read(hash, NULL, buf, len, err); }

/* The kernel's own local backend is the active one (not a module's). */
bool local_active(void)
{
    pthread_rwlock_rdlock(&backend_lock);
    bool local = active.ops == &local_ops;
    pthread_rwlock_unlock(&backend_lock);
    return local;
}

/* has / del / list reach the local backend and every named one: a chunk may be in several
 * (stores on different backends share its refcount record), and the collector, fsck and
 * the integrity scrub know only its hash. */
bool blob_has(const char *hash)
{
    if (blob_inline_has(hash))
        return true;
    backend b = be_enter();
    mb_err e = {0};
    int rc = b.ops->has(b.state, hash, &e);
    be_leave(b);
    backend_ref r[NAMED_MAX];
    size_t n = enter_named(r, NAMED_MAX);
    for (size_t i = 0; i < n; i++) {
        char name[CRYPT_NAME];
        const char *k = ref_name(&r[i], hash, name);
        if (rc != 1 && k)
            rc = r[i].ops.has(r[i].state, k, &e);
        backend_leave(&r[i]);
    }
    return rc == 1;
}

/* Delete chunk hash from the kernel's own disk (BLOB_HERE: the local backend, when it is the active
 * one), from everywhere else (BLOB_ELSEWHERE: a module's active backend, every named backend and
 * every encrypting store's view of one), or both. */
int blob_del_in(const char *hash, int where, mb_err *err)
{
    int rc = 0;
    backend b = be_enter();
    if (where & (b.ops == &local_ops ? BLOB_HERE : BLOB_ELSEWHERE))
        rc = b.ops->del(b.state, hash, err);
    be_leave(b);
    backend_ref r[NAMED_MAX];
    size_t n = where & BLOB_ELSEWHERE ? enter_named(r, NAMED_MAX) : 0;
    for (size_t i = 0; i < n; i++) {
        mb_err e = {0};
        char name[CRYPT_NAME];
        const char *k = ref_name(&r[i], hash, name);
        int d = k ? r[i].ops.del(r[i].state, k, &e) : 0;
        if (d < 0 && !rc) {
            rc = d;
            if (err)
                *err = e;
        }
        backend_leave(&r[i]);
    }
    return rc;
}

int blob_del(const char *hash, mb_err *err) { return blob_del_in(hash, BLOB_HERE | BLOB_ELSEWHERE, err); }

/* Chunks may be somewhere else than this node's disk: a module's backend is active, or named ones
 * exist (an encrypting view is of a named one). */
static bool elsewhere_any(void)
{
    backend_ref r[NAMED_MAX];
    size_t n = backend_enter_all(r, NAMED_MAX);
    for (size_t i = 0; i < n; i++)
        backend_leave(&r[i]);
    return n || !local_active();
}

/* The collector's and a failed write's delete. Alone: everywhere. In cluster mode a backend other
 * than this node's disk may be shared with other nodes, whose references this node does not know:
 * the chunk goes from this node's disk only, and a candidate record (gq/<hash>) hands the rest to
 * the leader's collector (cluster_gc.c), which asks every node first. */
int blob_del_mine(const char *hash, mb_err *err)
{
    if (!cluster_enabled())
        return blob_del(hash, err);
    if (elsewhere_any()) {
        char key[72], val[40];
        snprintf(key, sizeof key, GC_CANDIDATE "%s", hash);
        int vl = snprintf(val, sizeof val, "{\"t\":%lld}", (long long)now_wall());
        int rc = db_put(key, strlen(key), val, (size_t)vl, false);
        if (rc)
            return err_set(err, rc, "the collector's candidate record of chunk %.12s… cannot be written", hash);
    }
    return blob_del_in(hash, BLOB_HERE, err);
}

int blob_list_local(int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    mb_err spare = {0}; /* a backend is a module: it always gets somewhere to say why */
    if (!err)
        err = &spare;
    backend b = be_enter();
    int rc = b.ops->list ? b.ops->list(b.state, fn, ud, err) : 0;
    be_leave(b);
    return rc;
}

/* The kernel's active backend (when with_disk, or when it is a module's) and every named one, in
 * that order; the first failure, or a callback's non-zero answer, ends the walk. */
static int list_from(bool with_disk, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    mb_err spare = {0}; /* a backend is a module: it always gets somewhere to say why */
    if (!err)
        err = &spare;
    int rc = with_disk || !local_active() ? blob_list_local(fn, ud, err) : 0;
    backend_ref r[NAMED_MAX];
    size_t n = backend_enter_all(r, NAMED_MAX);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && r[i].ops.list)
            rc = r[i].ops.list(r[i].state, fn, ud, err);
        backend_leave(&r[i]);
    }
    return rc;
}

int blob_list(int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    return list_from(true, fn, ud, err);
}

/* What this node's collector and fsck may call its own: alone, every backend; in cluster mode its own
 * disk only (the rest is the leader's, blob_del_mine). */
int blob_list_mine(int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    return cluster_enabled() ? blob_list_local(fn, ud, err) : blob_list(fn, ud, err);
}

/* Every object of every backend but this node's disk (the leader's listing for orphans). */
int blob_list_elsewhere(int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    return list_from(false, fn, ud, err);
}

void blob_inline_del(db_batch *b, const char *hash)
{
    char ik[BODY_KEY + 1], *v;
    size_t vl;
    const char *at;
    if (!inline_where(hash, &v, &vl, &at)) {
        if (at) {
            body_key(ik, at, hash);
            db_batch_del(b, ik, BODY_KEY);
        }
        free(v);
    }
    inline_key(ik, hash);
    db_batch_del(b, ik, strlen(ik));
}

int blob_init(mb_err *err)
{
    inline_max = (size_t)g_cfg->chunk_inline_max;
    size_t n = strlen(g_cfg->data_dir) + 16;
    chunk_dir = xmalloc(n);
    snprintf(chunk_dir, n, "%s/chunks", g_cfg->data_dir);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/tmp", chunk_dir);
    if (mkdir_p(tmp, 0700))
        return err_set(err, MB_EIO, "cannot create the chunk folder %s", tmp);
    /* Temp files are leftovers of writes a crash interrupted: never referenced. */
    DIR *d = opendir(tmp);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') {
                char p[4500];
                snprintf(p, sizeof p, "%s/%s", tmp, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    active = (backend){.ops = &local_ops};
    backend_set_init();
    blob_cache_init();
    return 0;
}

void blob_fini(void)
{
    blob_cache_fini();
    backend_set_fini();
    free(chunk_dir);
    chunk_dir = NULL;
    blob_pending_fini();
    backend_fini();
}
