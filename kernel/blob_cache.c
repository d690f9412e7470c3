/*
 * blob_cache.c — reading local chunk files through the page cache: the verified-while-cached
 * table (a chunk file verified lately and still wholly resident is trusted for sendfile), the
 * check of every chunk read (blob_verify: XXH3-128 from the version record, else SHA-256), the
 * read-ahead threads and the descriptors blob_read_fd hands to a zero-copy send (issue 16).
 *
 * Two read-ahead threads read in the chunks readers will want next (blob_prefetch) and, given
 * their XXH3-128, verify them there, so a first download hashes on one CPU while it sends on
 * the other. Chunk files themselves (names, paths, writes) are blob.c's.
 *
 * Threads: any, plus the read-ahead threads (blob_cache_init .. blob_cache_fini). trust_lock
 * guards the verified-while-cached table; pq_mu the read-ahead queue. Neither is held while
 * another lock is taken.
 */
#include "fs.h"
#include "blob_int.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>
#include <xxhash.h>

/* ------------------------------------------------- verified while cached --- */

/* A chunk file read and verified stays trusted while its pages stay in the page cache: the
 * bytes a later sendfile takes from there are the ones that were checked, and only the disk
 * below can rot. So a chunk file verified in the last TRUST_MS, still the same file
 * (device, inode, size, change time), whose pages are all resident (mincore), is handed out
 * without reading it again; if any page was dropped, the next read verifies it from the
 * disk. This is how ZFS trusts its ARC. It is what lets a RETR of a warm file cost what
 * vsftpd's sendfile costs (docs/performance.md). What it does not see: a page dropped and
 * read back by another process (a backup reading the data directory) in between; TRUST_MS
 * bounds that. */
#define TRUST_SETS 4096 /* x TRUST_WAYS entries: about 19 GiB of 1.2 MiB chunks */
#define TRUST_WAYS 4
#define TRUST_MS (10 * 60 * 1000)
/* Set-associative, so that the chunks of one large file do not evict each other: with one
 * slot per hash, a 1 GiB file's ~900 chunks collided in ~100 slots, and those ~100 chunks
 * were read and hashed again on every RETR. */
struct trust {
    uint8_t hash[32];
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec ctime;
    int64_t at;   /* verified then; 0: empty */
    int64_t seen; /* last found wholly in the page cache */
};
static struct trust trusted[TRUST_SETS][TRUST_WAYS];
static pthread_mutex_t trust_lock = PTHREAD_MUTEX_INITIALIZER;

/* The set the chunk belongs in; false for a name that is not a SHA-256 in hex. */
static bool trust_set(const char *hash, uint8_t md[32], struct trust **set)
{
    if (hex_decode(hash, md, 32))
        return false;
    *set = trusted[(md[0] | (unsigned)md[1] << 8) % TRUST_SETS];
    return true;
}

/* The live entry for md in set, or NULL. Called with trust_lock held. */
static struct trust *trust_find(struct trust *set, const uint8_t md[32], int64_t now)
{
    for (int w = 0; w < TRUST_WAYS; w++)
        if (set[w].at && now - set[w].at < TRUST_MS && !memcmp(set[w].hash, md, 32))
            return &set[w];
    return NULL;
}

static bool same_file(const struct trust *t, const struct stat *sb)
{
    return t->dev == sb->st_dev && t->ino == sb->st_ino && t->size == sb->st_size &&
           t->ctime.tv_sec == sb->st_ctim.tv_sec && t->ctime.tv_nsec == sb->st_ctim.tv_nsec;
}

static void trust_note(const char *hash, const struct stat *sb)
{
    uint8_t md[32];
    struct trust *set;
    if (!trust_set(hash, md, &set))
        return;
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&trust_lock);
    struct trust *t = trust_find(set, md, now);
    if (!t) { /* else an empty way, or the one verified longest ago */
        t = &set[0];
        for (int w = 1; w < TRUST_WAYS; w++)
            if (set[w].at < t->at)
                t = &set[w];
    }
    memcpy(t->hash, md, 32);
    t->dev = sb->st_dev;
    t->ino = sb->st_ino;
    t->size = sb->st_size;
    t->ctime = sb->st_ctim;
    t->at = t->seen = now;
    pthread_mutex_unlock(&trust_lock);
}

static void trust_drop(const char *hash)
{
    uint8_t md[32];
    struct trust *set;
    if (!trust_set(hash, md, &set))
        return;
    pthread_mutex_lock(&trust_lock);
    struct trust *t = trust_find(set, md, now_mono_ms());
    if (t)
        t->at = 0;
    pthread_mutex_unlock(&trust_lock);
}

void blob_distrust(const char *hash) { trust_drop(hash); }

#define SEEN_MS 5000 /* a chunk found wholly cached this recently is not read ahead */

/* With sb, a file the caller found wholly in the page cache: the chunk was verified in this
 * very file (and the entry notes that it was seen cached now). Without sb: the chunk was
 * seen wholly cached in the last SEEN_MS, so reading it ahead would only cost system calls.
 * Pages go out of the cache after being idle for a while (LRU, DAMON), not seconds after a
 * read; if they did, the reader reads the chunk in itself (blob_read_fd). */
static bool trust_holds(const char *hash, const struct stat *sb)
{
    uint8_t md[32];
    struct trust *set;
    if (!trust_set(hash, md, &set))
        return false;
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&trust_lock);
    struct trust *t = trust_find(set, md, now);
    bool ok = t && (sb ? same_file(t, sb) : now - t->seen < SEEN_MS);
    if (ok && sb)
        t->seen = now;
    pthread_mutex_unlock(&trust_lock);
    return ok;
}

/* cachestat(2), Linux 6.5: page-cache counts for a range of a file, without a mapping. Not
 * in Debian 12's headers, hence the numbers here (451 on every architecture). */
struct cachestat_range_ {
    uint64_t off, len;
};
struct cachestat_ {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#define SYS_cachestat_ 451

/* Every page of the first len bytes of fd is in the page cache. cachestat when the kernel has
 * it (no mapping to make and tear down: an munmap interrupts every core the process runs
 * on); otherwise mincore on a throwaway mapping. */
static bool resident(int fd, size_t len)
{
    static long pg;
    static atomic_bool no_cachestat;
    if (!pg)
        pg = sysconf(_SC_PAGESIZE);
    size_t pages = (len + (size_t)pg - 1) / (size_t)pg;
    if (!atomic_load(&no_cachestat)) {
        struct cachestat_range_ r = {0, len};
        struct cachestat_ cs;
        if (syscall(SYS_cachestat_, fd, &r, &cs, 0) == 0)
            return cs.nr_cache >= pages;
        if (errno == ENOSYS)
            atomic_store(&no_cachestat, true);
        else
            return false;
    }
    unsigned char vec[CHUNK_MAX / 4096 + 1];
    if (!len || pages > sizeof vec)
        return false;
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return false;
    bool all = mincore(p, len, vec) == 0;
    for (size_t i = 0; all && i < pages; i++)
        all = vec[i] & 1;
    munmap(p, len);
    return all;
}

/* Check n bytes read for chunk `hash` (len expected) against fastsum, or SHA-256 without one. */
int blob_verify(const char *hash, const char *fastsum, const void *buf, size_t n, size_t len, mb_err *err)
{
    char got[65];
    bool ok;
    if (fastsum && *fastsum) {
        blob_fastsum(buf, n, got);
        ok = !strcmp(got, fastsum);
    } else {
        uint8_t md[32];
        unsigned mdlen = 0;
        EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL);
        hex_encode(md, 32, got);
        ok = !strcmp(got, hash);
    }
    if (n != len || !ok) {
        trust_drop(hash);
        log_error("chunk %s failed verification (%zu of %zu bytes, %s %s)", hash, n, len,
                  fastsum && *fastsum ? "XXH3-128" : "SHA-256", got);
        return err_set(err, MB_EINTEGRITY, "stored chunk %.12s… failed verification; its bytes are not served",
                       hash);
    }
    return 0;
}

/* ------------------------------------------------------------ read-ahead --- */

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

static bool large_folios; /* chunk_large_folios, decided at blob_init */

/* Read the first len bytes of fd into the page cache in large folios. read() and
 * fadvise(WILLNEED) of a 1 MiB chunk file fill the page cache with 4 KiB pages (the kernel
 * grows its folios only along a long sequential read); a fault in a mapping marked
 * MADV_HUGEPAGE reads up to 2 MiB folios. sendfile then moves a few folios per chunk instead
 * of ~300 pages. Waits for the disk. Nothing reads the mapping itself: MADV_POPULATE_READ
 * reports an I/O error where a touch would raise SIGBUS. False if it could not (turned off,
 * THP off, an old kernel, an I/O error: the read that follows reports that). */
static bool cache_large(int fd, size_t len)
{
    if (!len || !large_folios)
        return false;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return false;
    bool ok = madvise(m, len, MADV_HUGEPAGE) == 0 && madvise(m, len, MADV_POPULATE_READ) == 0;
    munmap(m, len);
    return ok;
}

/* The hypervisor takes free memory back (virtio-balloon free page reporting, feature bit 5):
 * then the first touch of memory the guest freed a while ago costs a host fault per page, and
 * large folios are made from exactly such free 2 MiB blocks. Measured on such a VM: the first
 * download after an upload took 1.7-1.9 s per GiB with large folios, 0.75-0.95 s without. */
static bool free_page_reporting(void)
{
    const char *dir = "/sys/bus/virtio/drivers/virtio_balloon";
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool on = false;
    struct dirent *e;
    while (!on && (e = readdir(d)))
        if (!strncmp(e->d_name, "virtio", 6)) {
            char p[512], bits[160] = "";
            snprintf(p, sizeof p, "%s/%s/features", dir, e->d_name);
            FILE *f = fopen(p, "r");
            if (f) {
                on = fgets(bits, sizeof bits, f) && strlen(bits) > 5 && bits[5] == '1';
                fclose(f);
            }
        }
    closedir(d);
    return on;
}

/* Threads that read in the chunks readers will want next (blob_prefetch), so that disk reads
 * overlap with serving the current chunk. A hint: when the queue is full it is dropped. */
#define PREFETCH_THREADS 2
#define PREFETCH_QUEUE 64
static struct {
    char hash[65];
    char fast[33];
    size_t len;
} pq[PREFETCH_QUEUE];
static size_t pq_head, pq_n;
static bool pq_stop;
static int pq_threads;
static pthread_t pq_thread[PREFETCH_THREADS];
static pthread_mutex_t pq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pq_cv = PTHREAD_COND_INITIALIZER;

#define VERIFY_SLICE (256 * 1024)

/* Verify chunk file f (len bytes) against fastsum in slices through buf, and trust it when it
 * matches. A mismatch or a read error is left for the reader to find and report (blob_read_fd
 * reads it again, verifies and logs). */
static void verify_ahead(int f, const char *hash, const char *fastsum, size_t len, uint8_t *buf)
{
    struct stat sb;
    if (trust_holds(hash, NULL) || fstat(f, &sb) || (uint64_t)sb.st_size != len)
        return;
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return;
    XXH3_128bits_reset(st);
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < VERIFY_SLICE ? len - done : VERIFY_SLICE;
        int64_t got = read_at(f, buf, want, done, hash, NULL);
        if (got <= 0)
            break;
        XXH3_128bits_update(st, buf, (size_t)got);
        done += (size_t)got;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    XXH3_freeState(st);
    char got[33];
    hex_encode(c.digest, sizeof c.digest, got);
    if (done == len && !strcmp(got, fastsum) && resident(f, len))
        trust_note(hash, &sb);
}

static void *prefetch_main(void *arg)
{
    (void)arg;
    uint8_t *buf = blob_buf_alloc(VERIFY_SLICE);
    pthread_mutex_lock(&pq_mu);
    for (;;) {
        while (!pq_n && !pq_stop)
            pthread_cond_wait(&pq_cv, &pq_mu);
        if (pq_stop)
            break;
        char hash[65], fast[33];
        size_t len = pq[pq_head].len;
        memcpy(hash, pq[pq_head].hash, sizeof hash);
        memcpy(fast, pq[pq_head].fast, sizeof fast);
        pq_head = (pq_head + 1) % PREFETCH_QUEUE;
        pq_n--;
        pthread_mutex_unlock(&pq_mu);
        int f = chunk_open(hash, NULL);
        if (f >= 0) {
            if (!resident(f, len) && !cache_large(f, len))
                posix_fadvise(f, 0, (off_t)len, POSIX_FADV_WILLNEED);
            if (fast[0])
                verify_ahead(f, hash, fast, len, buf);
            close(f);
        }
        pthread_mutex_lock(&pq_mu);
    }
    pthread_mutex_unlock(&pq_mu);
    blob_buf_free(buf, VERIFY_SLICE);
    return NULL;
}

void blob_prefetch(const char *hash, const char *fastsum, size_t len)
{
    if (len <= blob_inline_max() || !valid_key(hash) || !local_active())
        return;
    if (trust_holds(hash, NULL))
        return; /* seen cached a moment ago */
    pthread_mutex_lock(&pq_mu);
    if (pq_threads && pq_n < PREFETCH_QUEUE) {
        size_t at = (pq_head + pq_n++) % PREFETCH_QUEUE;
        memcpy(pq[at].hash, hash, 65);
        snprintf(pq[at].fast, sizeof pq[at].fast, "%s", fastsum ? fastsum : "");
        pq[at].len = len;
        pthread_cond_signal(&pq_cv);
    }
    pthread_mutex_unlock(&pq_mu);
}

int blob_read_fd(const char *hash, const char *fastsum, void *buf, size_t len, int *fd, bool *filled, mb_err *err)
{
    *fd = -1;
    *filled = false;
    if ((len <= CHUNK_INLINE_LIMIT && inline_has(hash)) || !valid_key(hash) || !local_active())
        return 1;
    int f = chunk_open(hash, err);
    if (f < 0)
        return f;
    struct stat sb;
    bool cached = resident(f, len);
    if (cached && fstat(f, &sb) == 0 && (uint64_t)sb.st_size == len && trust_holds(hash, &sb)) {
        *fd = f;
        return 0;
    }
    if (!cached)
        cache_large(f, len); /* what sendfile will take next, in large folios */
    int64_t got = read_at(f, buf, len, 0, hash, err);
    int rc = got < 0 ? (int)got : blob_verify(hash, fastsum, buf, (size_t)got, len, err);
    if (rc) {
        close(f);
        return rc;
    }
    *filled = true;
    if (fstat(f, &sb) == 0)
        trust_note(hash, &sb);
    *fd = f;
    return 0;
}

int blob_read_fd_store(uint64_t sid, const char *hash, const char *fastsum, void *buf, size_t len, int *fd,
                       bool *filled, mb_err *err)
{
    if (!backend_store_local(sid)) {
        *fd = -1;
        *filled = false;
        return 1;
    }
    int rc = blob_read_fd(hash, fastsum, buf, len, fd, filled, err);
    /* not a local file (yet): a store migrated here from another backend, or a chunk shared
     * from a store placed elsewhere; blob_read_store finds it there */
    return rc == MB_ENOENT ? 1 : rc;
}

void blob_cache_init(void)
{
    large_folios = g_cfg->chunk_large_folios > 0 || (g_cfg->chunk_large_folios < 0 && !free_page_reporting());
    if (g_cfg->chunk_large_folios < 0)
        log_info("chunks are read into the page cache in %s (chunk_large_folios: auto%s)",
                 large_folios ? "large folios" : "4 KiB pages", large_folios ? "" : "; the hypervisor takes free memory back");
    pq_stop = false;
    pq_head = pq_n = 0;
    for (pq_threads = 0; pq_threads < PREFETCH_THREADS; pq_threads++)
        if (pthread_create(&pq_thread[pq_threads], NULL, prefetch_main, NULL))
            break; /* fewer threads, or none: blob_prefetch then does nothing */
}

void blob_cache_fini(void)
{
    pthread_mutex_lock(&pq_mu);
    pq_stop = true;
    pthread_cond_broadcast(&pq_cv);
    int n = pq_threads;
    pq_threads = 0;
    pthread_mutex_unlock(&pq_mu);
    for (int i = 0; i < n; i++)
        pthread_join(pq_thread[i], NULL);
}
