/*
 * blob_cache.c — reading local chunk files through the page cache: the verified-while-cached
 * table (a chunk file verified lately and still wholly resident is trusted for sendfile), the
 * check of every chunk read (blob_verify: XXH3-128 from the version record, else SHA-256), the
 * read-ahead threads and the descriptors blob_read_fd hands to a zero-copy send (issue 16).
 *
 * Two read-ahead threads (mb-readahead) read in the chunks readers will want next
 * (blob_prefetch) and, given their XXH3-128, verify them there, so a first download hashes on
 * one CPU while it sends on the other. With chunk_read_direct they read a chunk that is not in
 * the page cache around it instead, into the stage, and mb-warm puts what was read that way
 * into the page cache later, when a CPU is idle. Chunk files themselves (names, paths, writes)
 * are blob.c's.
 *
 * Threads: any, plus the read-ahead threads and mb-warm (blob_cache_init .. blob_cache_fini).
 * trust_lock guards the verified-while-cached table; pq_mu the read-ahead queue, the stage and
 * the warm queue. Neither is held while another lock is taken.
 */
#include "fs.h"
#include "blob_int.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
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
/* Sightings before this are void: a reader found a chunk gone from the page cache that had been
 * seen there within SEEN_MS (the cache was dropped, or memory ran short), so the others may be
 * gone too, and skipping their read-ahead would leave the reader reading every one itself. */
static _Atomic int64_t seen_floor;

/* With sb, a file the caller found wholly in the page cache: the chunk was verified in this
 * very file (and the entry notes that it was seen cached now). Without sb: the chunk was
 * seen wholly cached in the last SEEN_MS (and since seen_floor), so reading it ahead would
 * only cost system calls. Pages go out of the cache after being idle for a while (LRU, DAMON),
 * not seconds after a read; when they do, the first reader to find that out voids every
 * sighting (trust_gone). */
static bool trust_holds(const char *hash, const struct stat *sb)
{
    uint8_t md[32];
    struct trust *set;
    if (!trust_set(hash, md, &set))
        return false;
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&trust_lock);
    struct trust *t = trust_find(set, md, now);
    bool ok = t && (sb ? same_file(t, sb) : now - t->seen < SEEN_MS && t->seen > atomic_load(&seen_floor));
    if (ok && sb)
        t->seen = now;
    pthread_mutex_unlock(&trust_lock);
    return ok;
}

/* A reader found chunk hash not wholly in the page cache: if it was seen there lately, the
 * cache lost it, and every sighting is void from now on. */
static void trust_gone(const char *hash)
{
    if (trust_holds(hash, NULL))
        atomic_store(&seen_floor, now_mono_ms());
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

/* A queue of chunks for a thread to read: a hint, so a chunk that finds it full is dropped.
 * Guarded by pq_mu, as everything of the read-ahead is. */
struct chunk_job {
    char hash[65];
    char fast[33]; /* XXH3-128, or "" */
    size_t len;
};
struct chunkq {
    struct chunk_job *job;
    size_t cap, head, n;
    bool on; /* a thread serves it */
    pthread_cond_t cv;
};
static pthread_mutex_t pq_mu = PTHREAD_MUTEX_INITIALIZER;
static bool pq_stop;

/* Called with pq_mu held. */
static void q_push_locked(struct chunkq *q, const char *hash, const char *fastsum, size_t len)
{
    if (q->on && q->n < q->cap) {
        struct chunk_job *j = &q->job[(q->head + q->n++) % q->cap];
        memcpy(j->hash, hash, 65);
        snprintf(j->fast, sizeof j->fast, "%s", fastsum ? fastsum : "");
        j->len = len;
        pthread_cond_signal(&q->cv);
    }
}

static void q_push(struct chunkq *q, const char *hash, const char *fastsum, size_t len)
{
    pthread_mutex_lock(&pq_mu);
    q_push_locked(q, hash, fastsum, len);
    pthread_mutex_unlock(&pq_mu);
}

/* Take chunk hash out of q if it is still waiting there (its reader read it itself). */
static void q_drop(struct chunkq *q, const char *hash)
{
    pthread_mutex_lock(&pq_mu);
    for (size_t i = 0; i < q->n; i++)
        if (!strcmp(q->job[(q->head + i) % q->cap].hash, hash)) {
            for (size_t k = i + 1; k < q->n; k++)
                q->job[(q->head + k - 1) % q->cap] = q->job[(q->head + k) % q->cap];
            q->n--;
            break;
        }
    pthread_mutex_unlock(&pq_mu);
}

/* A thread's life: take each chunk from q and hand it, opened, to fn (with a buffer of
 * VERIFY_SLICE bytes), until blob_cache_fini. */
static void q_serve(struct chunkq *q, void (*fn)(int f, const struct chunk_job *j, uint8_t *buf));

/* Threads that read in the chunks readers will want next (blob_prefetch), so that disk reads
 * overlap with serving the current chunk. */
#define PREFETCH_THREADS 2
#define PREFETCH_QUEUE 64
static struct chunk_job pq_job[PREFETCH_QUEUE];
static struct chunkq pq = {pq_job, PREFETCH_QUEUE, 0, 0, false, PTHREAD_COND_INITIALIZER};
static int pq_threads;
static pthread_t pq_thread[PREFETCH_THREADS];

#define VERIFY_SLICE (256 * 1024)

/* Reads around the page cache (chunk_read_direct). A chunk file not in the page cache is read
 * with O_DIRECT into memory the process has touched before, instead of into new page-cache
 * pages: on a guest whose hypervisor takes freed memory back, the first touch of each such page
 * costs a host fault, and a download right after an upload spent most of its time in that copy
 * (docs/performance.md). The read-ahead threads read the next chunks that way into the stage,
 * a few buffers of CHUNK_MAX kept for the life of the process, verify them there, and the
 * reader takes a staged chunk by trading its own buffer for the slot's (stage_take): no copy.
 * A slot is free, being read (a reader of that chunk waits for it rather than reading it
 * twice) or ready; a ready slot no reader took within STAGE_KEEP_MS may be reused. Guarded by
 * pq_mu. */
#define STAGE_SLOTS 6
#define STAGE_KEEP_MS 1000 /* a ready slot no reader took in this long is reused first */
enum { SLOT_FREE, SLOT_LOADING, SLOT_READY };
static struct {
    char hash[65];
    size_t len;
    int state;
    int64_t at; /* when it became ready: the oldest unclaimed goes first */
    uint8_t *buf;
} stage[STAGE_SLOTS];
static pthread_cond_t stage_cv = PTHREAD_COND_INITIALIZER;
static bool direct_reads; /* chunk_read_direct, decided at blob_cache_init */

uint8_t *blob_chunk_buf(void)
{
    void *p = aligned_alloc(BLOB_ALIGN, CHUNK_MAX); /* the heap: reused from one reader to the next */
    if (!p) {
        log_error("out of memory (%u bytes)", CHUNK_MAX);
        abort();
    }
    return p;
}

#define ROUND_UP(n) (((n) + BLOB_ALIGN - 1) & ~(size_t)(BLOB_ALIGN - 1))

static _Atomic int64_t around_at; /* when a chunk was last read around the cache (mb-warm waits) */

/* Read len bytes of chunk file f with O_DIRECT into buf (BLOB_ALIGN-aligned, room for len
 * rounded up): the bytes read (len, or fewer for a short file), or -1 when the file system
 * refuses O_DIRECT or the read fails (the caller reads it the ordinary way). */
static int64_t read_direct(int f, void *buf, size_t len)
{
    atomic_store(&around_at, now_mono_ms());
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl | O_DIRECT))
        return -1;
    size_t want = ROUND_UP(len), got = 0;
    ssize_t r = 0;
    while (got < want) {
        r = pread(f, (char *)buf + got, want - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got % BLOB_ALIGN)
            break; /* short of a block boundary: the end of the file */
    }
    fcntl(f, F_SETFL, fl);
    atomic_store(&around_at, now_mono_ms());
    if (r < 0)
        return -1; /* refused (alignment the device will not take) or an I/O error */
    return got > len ? (int64_t)len : (int64_t)got;
}

/* A read-ahead thread: stage chunk hash from f, verified against fastsum. Called without
 * pq_mu. Nothing happens when it is staged already, or when every slot is being read or holds
 * a chunk younger than STAGE_KEEP_MS that its reader has not taken yet. */
static void stage_load(int f, const char *hash, const char *fastsum, size_t len)
{
    pthread_mutex_lock(&pq_mu);
    int pick = -1;
    int64_t now = now_mono_ms();
    for (int i = 0; i < STAGE_SLOTS; i++) {
        if (stage[i].state != SLOT_FREE && !strcmp(stage[i].hash, hash)) {
            pthread_mutex_unlock(&pq_mu);
            return;
        }
        if (stage[i].state == SLOT_FREE && (pick < 0 || stage[pick].state != SLOT_FREE))
            pick = i;
        else if (stage[i].state == SLOT_READY && now - stage[i].at > STAGE_KEEP_MS &&
                 (pick < 0 || (stage[pick].state == SLOT_READY && stage[i].at < stage[pick].at)))
            pick = i;
    }
    if (pick < 0) {
        pthread_mutex_unlock(&pq_mu);
        return;
    }
    stage[pick].state = SLOT_LOADING;
    memcpy(stage[pick].hash, hash, 65);
    stage[pick].len = len;
    if (!stage[pick].buf)
        stage[pick].buf = blob_chunk_buf();
    uint8_t *buf = stage[pick].buf;
    pthread_mutex_unlock(&pq_mu);
    char got[33];
    int64_t n = read_direct(f, buf, len);
    bool ok = n == (int64_t)len;
    if (ok) {
        blob_fastsum(buf, len, got);
        ok = !strcmp(got, fastsum);
    }
    pthread_mutex_lock(&pq_mu);
    stage[pick].state = ok ? SLOT_READY : SLOT_FREE; /* a bad one the reader reads and reports */
    stage[pick].at = now_mono_ms();
    pthread_cond_broadcast(&stage_cv);
    pthread_mutex_unlock(&pq_mu);
}

/* Chunks read around the page cache are put into it afterwards by one thread that runs only
 * when a CPU would otherwise idle (SCHED_IDLE), so that the next download of the file finds
 * them there, verified (sendfile, pread) as if they had been read the ordinary way: the first
 * download after an upload does not wait for the page cache, the later ones use it. It also
 * waits for the disk: while chunks are being read around the cache (a download reading cold
 * chunks), it starts nothing until WARM_QUIET_MS have passed without such a read, since its
 * reads would take the disk from the download (a cold 1 GiB download made 1.0-1.1 GiB/s with
 * mb-warm reading beside it, 1.25-1.45 without). Unless a chunk still waiting to be warmed is
 * read around the cache again (wq_urgent): a file downloaded back to back would otherwise
 * never get into the cache. A hint: dropped when the queue is full; a chunk not warmed is read
 * around the cache again. */
#define WARM_QUEUE 1024
#define WARM_QUIET_MS 200
static struct chunk_job wq_job[WARM_QUEUE];
static struct chunkq wq = {wq_job, WARM_QUEUE, 0, 0, false, PTHREAD_COND_INITIALIZER};
static pthread_t wq_thread;
static bool wq_urgent; /* a queued chunk was wanted again: warm without waiting for quiet */

static void warm_later(const char *hash, const char *fastsum, size_t len)
{
    if (!fastsum || !*fastsum) /* verify_ahead needs it; a chunk without stays out of the cache */
        return;
    pthread_mutex_lock(&pq_mu);
    size_t i = 0;
    while (i < wq.n && strcmp(wq.job[(wq.head + i) % wq.cap].hash, hash))
        i++;
    if (i < wq.n) {
        wq_urgent = true;
        pthread_cond_signal(&wq.cv);
    } else
        q_push_locked(&wq, hash, fastsum, len);
    pthread_mutex_unlock(&pq_mu);
}

static void verify_ahead(int f, const char *hash, const char *fastsum, size_t len, uint8_t *buf);

static void warm_one(int f, const struct chunk_job *j, uint8_t *buf)
{
    pthread_mutex_lock(&pq_mu);
    int64_t wait;
    while (!pq_stop && !wq_urgent && (wait = atomic_load(&around_at) + WARM_QUIET_MS - now_mono_ms()) > 0) {
        struct timespec ts;
        wait_deadline(&ts, CLOCK_REALTIME, wait);
        pthread_cond_timedwait(&wq.cv, &pq_mu, &ts);
    }
    if (!wq.n)
        wq_urgent = false; /* this was the last one */
    bool stop = pq_stop;
    pthread_mutex_unlock(&pq_mu);
    if (stop)
        return;
    if (!resident(f, j->len))
        posix_fadvise(f, 0, (off_t)j->len, POSIX_FADV_WILLNEED);
    verify_ahead(f, j->hash, j->fast, j->len, buf); /* reads it in, and trusts it */
}

static void *warm_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-warm");
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp)) /* only when a CPU would idle */
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    q_serve(&wq, warm_one);
    return NULL;
}

/* The reader: if chunk hash (len bytes) is staged, trade buffers with its slot (*buf gets the
 * chunk, the slot the reader's old buffer), waiting for a read-ahead thread that is reading it
 * now. True: *buf holds its verified bytes. */
static bool stage_take(const char *hash, uint8_t **buf, size_t len)
{
    pthread_mutex_lock(&pq_mu);
    int i = 0;
    for (;;) {
        for (i = 0; i < STAGE_SLOTS; i++)
            if ((stage[i].state == SLOT_LOADING || stage[i].state == SLOT_READY) && !strcmp(stage[i].hash, hash))
                break;
        if (i == STAGE_SLOTS || stage[i].state == SLOT_READY)
            break;
        pthread_cond_wait(&stage_cv, &pq_mu);
    }
    bool ok = i < STAGE_SLOTS && stage[i].len == len;
    if (ok) {
        uint8_t *mine = *buf;
        *buf = stage[i].buf;
        stage[i].buf = mine;
        stage[i].state = SLOT_FREE;
        pthread_cond_broadcast(&stage_cv);
    }
    pthread_mutex_unlock(&pq_mu);
    return ok;
}

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

static void q_serve(struct chunkq *q, void (*fn)(int f, const struct chunk_job *j, uint8_t *buf))
{
    uint8_t *buf = blob_buf_alloc(VERIFY_SLICE);
    pthread_mutex_lock(&pq_mu);
    for (;;) {
        while (!q->n && !pq_stop)
            pthread_cond_wait(&q->cv, &pq_mu);
        if (pq_stop)
            break;
        struct chunk_job j = q->job[q->head];
        q->head = (q->head + 1) % q->cap;
        q->n--;
        pthread_mutex_unlock(&pq_mu);
        int f = chunk_open(j.hash, NULL);
        if (f >= 0) {
            fn(f, &j, buf);
            close(f);
        }
        pthread_mutex_lock(&pq_mu);
    }
    pthread_mutex_unlock(&pq_mu);
    blob_buf_free(buf, VERIFY_SLICE);
}

static void prefetch_one(int f, const struct chunk_job *j, uint8_t *buf)
{
    bool cached = resident(f, j->len);
    if (!cached && direct_reads && j->fast[0]) {
        stage_load(f, j->hash, j->fast, j->len);
        return;
    }
    if (!cached && !cache_large(f, j->len))
        posix_fadvise(f, 0, (off_t)j->len, POSIX_FADV_WILLNEED);
    if (j->fast[0])
        verify_ahead(f, j->hash, j->fast, j->len, buf);
}

static void *prefetch_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-readahead");
    q_serve(&pq, prefetch_one);
    return NULL;
}

void blob_prefetch(const char *hash, const char *fastsum, size_t len)
{
    if (len <= blob_inline_max() || !valid_key(hash) || !local_active())
        return;
    if (trust_holds(hash, NULL))
        return; /* seen cached a moment ago */
    q_push(&pq, hash, fastsum, len);
}

int blob_read_fd(const char *hash, const char *fastsum, uint8_t **bufp, size_t len, int *fd, bool *filled, mb_err *err)
{
    *fd = -1;
    *filled = false;
    if ((len <= CHUNK_INLINE_LIMIT && blob_inline_has(hash)) || !valid_key(hash) || !local_active())
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
    int64_t got = -1;
    if (!cached)
        trust_gone(hash);
    if (!cached && direct_reads) {
        if (stage_take(hash, bufp, len)) {
            close(f);
            *filled = true;
            warm_later(hash, fastsum, len);
            return 0; /* verified by the read-ahead thread */
        }
        /* Not staged: read it here, and keep a read-ahead thread from staging it for nobody
         * (a slot no reader takes stays taken for STAGE_KEEP_MS; a few of those and the stage
         * was full of chunks already sent, the reader reading every later one itself). */
        q_drop(&pq, hash);
        got = read_direct(f, *bufp, len);
    }
    uint8_t *buf = *bufp;
    bool around = got >= 0; /* nothing of it is in the page cache */
    if (!around) {
        if (!cached)
            cache_large(f, len); /* what sendfile will take next, in large folios */
        got = read_at(f, buf, len, 0, hash, err);
    }
    int rc = got < 0 ? (int)got : blob_verify(hash, fastsum, buf, (size_t)got, len, err);
    if (rc) {
        close(f);
        return rc;
    }
    *filled = true;
    if (around) {
        close(f);
        warm_later(hash, fastsum, len);
        return 0;
    }
    if (fstat(f, &sb) == 0)
        trust_note(hash, &sb);
    *fd = f;
    return 0;
}

int blob_read_fd_store(uint64_t sid, const char *hash, const char *fastsum, uint8_t **buf, size_t len, int *fd,
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
    bool reporting = free_page_reporting();
    large_folios = g_cfg->chunk_large_folios > 0 || (g_cfg->chunk_large_folios < 0 && !reporting);
    direct_reads = g_cfg->chunk_read_direct > 0 || (g_cfg->chunk_read_direct < 0 && reporting);
    if (g_cfg->chunk_large_folios < 0 || g_cfg->chunk_read_direct < 0)
        log_info("chunks not in the page cache are read %s, into it in %s (chunk_read_direct, chunk_large_folios: "
                 "auto%s)", direct_reads ? "around it, then put into it when a CPU is idle" : "through it",
                 large_folios ? "large folios" : "4 KiB pages", reporting ? "; the hypervisor takes free memory back" : "");
    pq_stop = false;
    pq.head = pq.n = wq.head = wq.n = 0;
    wq_urgent = false;
    for (pq_threads = 0; pq_threads < PREFETCH_THREADS; pq_threads++)
        if (pthread_create(&pq_thread[pq_threads], NULL, prefetch_main, NULL))
            break; /* fewer threads, or none: blob_prefetch then does nothing */
    pq.on = pq_threads > 0;
    wq.on = direct_reads && pthread_create(&wq_thread, NULL, warm_main, NULL) == 0;
}

void blob_cache_fini(void)
{
    pthread_mutex_lock(&pq_mu);
    pq_stop = true;
    pthread_cond_broadcast(&pq.cv);
    pthread_cond_broadcast(&wq.cv);
    int n = pq_threads;
    bool warm = wq.on;
    pq_threads = 0;
    pq.on = wq.on = false;
    pthread_mutex_unlock(&pq_mu);
    for (int i = 0; i < n; i++)
        pthread_join(pq_thread[i], NULL);
    if (warm)
        pthread_join(wq_thread, NULL);
    for (int i = 0; i < STAGE_SLOTS; i++) {
        free(stage[i].buf);
        stage[i].buf = NULL;
        stage[i].state = SLOT_FREE;
    }
}
