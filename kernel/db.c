/*
 * db.c — the metadata store: one LevelDB database, every table a key prefix
 * (docs/storage.md lists them). A change that must be atomic is one WriteBatch; a change a
 * client is told succeeded is written with sync=true first. Group commit and the durability
 * setting (db_batch_commit_grouped, db_sync_through, db_sync_ack) live in db_sync.c.
 * Decoded records (db_get_json_shared): the hot records of every request (token, user,
 * store, folders on a path, usage counters) are parsed JSON kept in a small cache, so a
 * small upload stops parsing the same ten records again. It is coherent by construction:
 * every write goes through this file, and a write marks the slots of the keys it writes
 * before LevelDB applies it and again after (jc_mark): each mark drops the cached copy. A
 * reader that missed takes the slot's generation before it reads LevelDB and fills the slot
 * only if no mark came meanwhile and no write is between its marks, so an old value read
 * before a write can never be put back during or after it.
 * db_test_hook (NULL in the server) lets tests/unit/test_keys.c stop a writer and a reader at
 * the points between these steps, so it proves that order deterministically.
 *
 * Threads: any. LevelDB is thread-safe for reads and writes; the id counters are guarded
 * by one mutex so an id is never handed out twice, even across restarts. Each cache slot is
 * guarded by its shard's mutex; cached json_t values are never changed once cached
 * (jansson's reference counts are atomic), so readers share them.
 */
#include "db_int.h"
#include <fcntl.h>
#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static leveldb_t *db;
static leveldb_options_t *opts;
static leveldb_readoptions_t *ropts;
static leveldb_writeoptions_t *wsync, *wasync;
static leveldb_cache_t *cache;
static leveldb_filterpolicy_t *bloom;
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static char *db_dir;

#define ID_BLOCK 1024
static struct {
    char name[32];
    uint64_t next, end;
} id_blocks[8]; /* see db_alloc_id */


struct db_iter {
    leveldb_iterator_t *it;
    char *prefix, *start; /* start: where the first db_iter_next seeks, if not the prefix */
    size_t plen, slen;
    bool started;
};

/* ------------------------------------------------------ decoded records --- */

#define JC_SLOTS 4096   /* direct-mapped by key hash */
#define JC_SHARDS 64
#define JC_VALUE_MAX 2048 /* bigger records (a version's chunk list) are not worth keeping */
static struct jc_slot {
    uint64_t hash, gen;
    uint32_t writing; /* writes to a key of this slot between their two jc_mark calls */
    char *key;
    json_t *val;
} jc[JC_SLOTS];
static pthread_mutex_t jc_lock[JC_SHARDS];
static pthread_once_t jc_once = PTHREAD_ONCE_INIT;

static void jc_init(void)
{
    for (int i = 0; i < JC_SHARDS; i++)
        pthread_mutex_init(&jc_lock[i], NULL);
}

static uint64_t jc_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

static void jc_slot_clear(struct jc_slot *s)
{
    free(s->key);
    json_decref(s->val);
    s->key = NULL;
    s->val = NULL;
}

/* Watched key prefixes: every write of a key under one (both marks, below) moves its
 * counter, so a cache of something derived from several records (apppass.c's verified app
 * passwords) holds while the counter it read before deriving is unchanged. Registered at
 * init, before the threads that write; read without a lock after. */
#define WATCH_MAX 8
static struct {
    const char *prefix;
    size_t len;
    _Atomic uint64_t *gen;
} watches[WATCH_MAX];
static _Atomic size_t nwatches;

void db_watch_prefix(const char *prefix, _Atomic uint64_t *gen)
{
    size_t i = atomic_load(&nwatches);
    if (i == WATCH_MAX)
        abort(); /* a fixed table: a programming error, found at the first start */
    watches[i].prefix = prefix;
    watches[i].len = strlen(prefix);
    watches[i].gen = gen;
    atomic_store(&nwatches, i + 1);
}

static void watch_mark(const char *key, size_t klen)
{
    size_t n = atomic_load(&nwatches);
    for (size_t i = 0; i < n; i++)
        if (klen >= watches[i].len && !memcmp(key, watches[i].prefix, watches[i].len))
            atomic_fetch_add(watches[i].gen, 1);
}

/* Around every write to key: before it (begin) and after LevelDB applied it (end). Both drop
 * a cached copy and move the slot's generation; between them no reader may fill the slot.
 * Without the mark before, a reader that read the old value from LevelDB just before the
 * write could fill the slot after another reader had already seen the new value and filled
 * it, and the cache went backwards until the write's drop (test_keys catches this). */
static void jc_mark(const char *key, size_t klen, bool begin)
{
    uint64_t h = jc_hash(key, klen);
    size_t i = h & (JC_SLOTS - 1);
    pthread_mutex_t *m = &jc_lock[i % JC_SHARDS];
    pthread_once(&jc_once, jc_init);
    watch_mark(key, klen);
    pthread_mutex_lock(m);
    jc[i].gen++;
    if (begin)
        jc[i].writing++;
    else if (jc[i].writing)
        jc[i].writing--;
    if (jc[i].key && jc[i].hash == h && strlen(jc[i].key) == klen && !memcmp(jc[i].key, key, klen))
        jc_slot_clear(&jc[i]);
    pthread_mutex_unlock(m);
}

/* leveldb_writebatch_iterate callbacks; st points to the begin flag. */
static void jc_mark_put(void *st, const char *k, size_t kl, const char *v, size_t vl)
{
    (void)v, (void)vl;
    jc_mark(k, kl, *(const bool *)st);
}

static void jc_mark_del(void *st, const char *k, size_t kl) { jc_mark(k, kl, *(const bool *)st); }

void (*_Atomic db_test_hook)(int point);

static inline void test_point(int point)
{
    void (*f)(int) = atomic_load_explicit(&db_test_hook, memory_order_relaxed);
    if (f)
        f(point);
}

static void jc_clear_all(void)
{
    pthread_once(&jc_once, jc_init);
    for (size_t i = 0; i < JC_SLOTS; i++) {
        pthread_mutex_lock(&jc_lock[i % JC_SHARDS]);
        jc[i].gen++;
        jc_slot_clear(&jc[i]);
        pthread_mutex_unlock(&jc_lock[i % JC_SHARDS]);
    }
}

static int parse_json(const char *key, const char *v, size_t n, json_t **out)
{
    json_error_t je;
    *out = json_loadb(v, n, 0, &je);
    if (!*out) {
        log_error("corrupt JSON value at %s: %s", key, je.text);
        return MB_EIO;
    }
    return 0;
}

/* LevelDB reads its tables through mmap (up to 1,000 of them; Debian's library exports no way to
 * lower that), and every page a read touched stays in mbyted's resident size until the table is
 * closed: after one zip of a million-file folder that was 116 MiB of RSS (issue 27). The kernel
 * could reclaim those pages, but a container limit, a monitor or a user reading RSS sees them.
 * db_mapped (mbyte.yaml) bounds them: every MAPPED_CHECK reads and iterator steps (256: what a
 * walk touches between two checks stays resident past the bound, so fewer steps between checks
 * mean less over it; each check is one pread of statm), the first
 * thread past the mark compares the process's file-backed resident size with what it was when
 * nothing of the tables was resident, and past db_mapped pages the table mappings out.
 * MADV_PAGEOUT, not MADV_DONTNEED: a table LevelDB closes between our read of /proc/self/maps
 * and the madvise may have its addresses reused by the heap at once; PAGEOUT keeps the contents
 * of any page it touches (it only asks for reclaim), DONTNEED would zero anonymous memory. The
 * cost is that a paged-out block is read from the file again when next wanted; a store whose
 * tables fit in db_mapped never pays it. */
#define MAPPED_CHECK 256
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21 /* Linux 5.4 */
#endif
static _Atomic uint64_t touches;
static _Atomic int64_t mapped_max;   /* bytes; 0 = no bound (or the kernel cannot page out) */
static _Atomic int64_t mapped_floor; /* file-backed resident bytes that are not the tables */
static _Atomic uint64_t mapped_given; /* bytes of table mappings paged out, for the metrics */
static pthread_mutex_t mapped_mu = PTHREAD_MUTEX_INITIALIZER;
static char *db_real; /* db_dir as /proc/self/maps names it */

static int statm_fd = -1; /* /proc/self/statm, open while the database is (db_open, or mapped_mu held) */

static int64_t rss_file(void)
{
    /* statm's third field: resident pages backed by a file (RssFile + RssShmem); read again
     * through one descriptor (a /proc file regenerates at offset 0): 4 checks per 1,024 reads */
    char b[160];
    if (statm_fd < 0 && (statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    ssize_t n = pread(statm_fd, b, sizeof b - 1, 0);
    long long size, res, shared;
    if (n <= 0)
        return -1;
    b[n] = 0;
    if (sscanf(b, "%lld %lld %lld", &size, &res, &shared) != 3)
        return -1;
    return shared * (int64_t)sysconf(_SC_PAGESIZE);
}

/* Page out every mapping of a table file of ours; its size in bytes, or -1 if madvise refused. */
static int64_t pageout_tables(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return 0;
    size_t dl = strlen(db_real);
    int64_t total = 0;
    char line[4096 + 256];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &at) != 2 || !at)
            continue;
        char *path = line + at;
        size_t pl = strcspn(path, "\n");
        path[pl] = 0;
        if (pl < dl + 5 || strncmp(path, db_real, dl) || path[dl] != '/' || strcmp(path + pl - 4, ".ldb"))
            continue;
        if (madvise((void *)lo, hi - lo, MADV_PAGEOUT) == 0)
            total += (int64_t)(hi - lo);
        else if (errno == EINVAL) {
            total = -1;
            break;
        }
    }
    fclose(f);
    return total;
}

static void mapped_check(void)
{
    if (pthread_mutex_trylock(&mapped_mu))
        return; /* another thread is at it */
    int64_t max = atomic_load(&mapped_max), now = rss_file();
    if (max > 0 && now >= 0 && now > atomic_load(&mapped_floor) + max) {
        int64_t given = pageout_tables();
        if (given < 0) {
            log_warn("this kernel cannot page out LevelDB's mapped tables (MADV_PAGEOUT needs Linux 5.4): "
                     "db_mapped has no effect");
            atomic_store(&mapped_max, 0);
        } else {
            atomic_fetch_add(&mapped_given, (uint64_t)given);
            /* what stays resident now is not the tables (libraries, modules loaded since the
             * start): the floor, so it is not paged out again and again. Set, not raised: the
             * table pages another thread (a compaction, a concurrent read) touched between the
             * page-out and this read would otherwise add up in the floor, check after check,
             * and let the tables grow past db_mapped (test_scale saw 2.1 MiB over a 1 MiB bound) */
            atomic_store(&mapped_floor, rss_file());
        }
    }
    pthread_mutex_unlock(&mapped_mu);
}

static inline void db_touched(void)
{
    uint64_t n = atomic_fetch_add_explicit(&touches, 1, memory_order_relaxed) + 1;
    if (n % MAPPED_CHECK == 0 && atomic_load_explicit(&mapped_max, memory_order_relaxed))
        mapped_check();
}

uint64_t db_mapped_given(void) { return atomic_load(&mapped_given); }

/* LevelDB compacts in one background thread of its own (its default Env, one per process), made
 * by whichever thread first schedules a compaction, and a new thread takes its maker's name and
 * nice value: that was a request thread, so compaction ran as an "MHD-worker" at the requests'
 * priority. Under many small uploads it is a third to a half of mbyted's CPU (their bytes are
 * rewritten at every level, docs/performance.md), and on two cores it took that time from the
 * requests. Here the database is opened by a thread named mb-leveldb running COMPACT_NICE below
 * the caller, which then asks for the compaction of a range past every key (no key holds the byte
 * 0xff: prefixes are ASCII and names UTF-8; it flushes the memtable, empty at open, and compacts
 * nothing, and would only compact early if a key did): that schedules the first
 * compaction, so LevelDB's thread is made here and keeps the name and the lower priority for
 * the life of the process (RocksDB lowers its compaction pool's priority for the same reason).
 * It still gets the CPU whenever the requests leave any, and when it falls behind LevelDB's own
 * brake (a millisecond's pause per write from eight level-0 tables) gives it more: the work is
 * moved out of the requests' way, not skipped. */
#define COMPACT_NICE 10

struct opening {
    const char *dir;
    char *e;
};

static void *open_low(void *arg)
{
    struct opening *o = arg;
    pthread_setname_np(pthread_self(), "mb-leveldb");
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0); /* this thread's, inherited from the caller */
    if (errno == 0)
        setpriority(PRIO_PROCESS, 0, nice + COMPACT_NICE > 19 ? 19 : nice + COMPACT_NICE);
    db = leveldb_open(opts, o->dir, &o->e);
    if (db && !o->e) {
        static const char past[] = "\xff\xff\xff\xff";
        leveldb_compact_range(db, past, sizeof past - 1, past, sizeof past - 1);
    }
    return NULL;
}

int db_open(const char *dir, mb_err *err)
{
    char *e = NULL;
    opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(opts, 1);
    /* The block cache and the memtable are most of mbyted's memory on a big store (issue 27):
     * db_cache and db_write_buffer (mbyte.yaml) bound them. */
    cache = leveldb_cache_create_lru((size_t)(g_cfg ? g_cfg->db_cache : DB_CACHE));
    leveldb_options_set_cache(opts, cache);
    bloom = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_filter_policy(opts, bloom);
    leveldb_options_set_compression(opts, leveldb_snappy_compression);
    /* The memtable is written out as a level-0 table, and compacted into the levels below,
     * every few thousand small uploads (their bytes live here, blob.c). db_write_buffer
     * (8 MiB by default; 32 MiB before 2026-12-04, when memory on a big store mattered more,
     * docs/operations.md) sets how many; 32 MiB instead of 8 changed small-upload rates by
     * less than their noise (docs/performance.md). */
    leveldb_options_set_write_buffer_size(opts, (size_t)(g_cfg ? g_cfg->db_write_buffer : DB_WRITE_BUFFER));
    pthread_t th;
    struct opening o = {dir, NULL};
    if (!pthread_create(&th, NULL, open_low, &o)) {
        pthread_join(th, NULL);
        e = o.e;
    } else
        db = leveldb_open(opts, dir, &e); /* compaction then runs at the threads' own priority */
    free(db_dir);
    db_dir = xstrdup(dir);
    free(db_real);
    db_real = realpath(dir, NULL);
    atomic_store(&mapped_floor, rss_file());
    atomic_store(&mapped_max, db_real ? (g_cfg ? g_cfg->db_mapped : DB_MAPPED) : 0);
    db_sync_open(dir);
    if (e) {
        err_set(err, MB_EIO, "cannot open the metadata database %s: %s", dir, e);
        leveldb_free(e);
        db_close();
        return MB_EIO;
    }
    ropts = leveldb_readoptions_create();
    wsync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wsync, 1);
    wasync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wasync, 0);
    return 0;
}

void db_close(void)
{
    db_sync_close(db != NULL);
    jc_clear_all();
    memset(id_blocks, 0, sizeof id_blocks); /* a reopened database reserves afresh */
    if (db)
        leveldb_close(db);
    db = NULL;
    free(db_dir);
    db_dir = NULL;
    free(db_real);
    db_real = NULL;
    atomic_store(&mapped_max, 0);
    pthread_mutex_lock(&mapped_mu);
    if (statm_fd >= 0)
        close(statm_fd);
    statm_fd = -1;
    pthread_mutex_unlock(&mapped_mu);
    if (ropts)
        leveldb_readoptions_destroy(ropts);
    if (wsync)
        leveldb_writeoptions_destroy(wsync);
    if (wasync)
        leveldb_writeoptions_destroy(wasync);
    if (opts)
        leveldb_options_destroy(opts);
    if (cache)
        leveldb_cache_destroy(cache);
    if (bloom)
        leveldb_filterpolicy_destroy(bloom);
    ropts = NULL;
    wsync = wasync = NULL;
    opts = NULL;
    cache = NULL;
    bloom = NULL;
}

int db_get(const char *key, size_t klen, char **val, size_t *vlen)
{
    char *e = NULL;
    size_t n = 0;
    char *v = leveldb_get(db, ropts, key, klen, &n, &e);
    db_touched();
    if (e) {
        log_error("leveldb get: %s", e);
        leveldb_free(e);
        return MB_EIO;
    }
    if (!v)
        return MB_ENOENT;
    /* Copy into our allocator so callers free() without knowing about leveldb_free. */
    char *out = xmalloc(n + 1);
    memcpy(out, v, n);
    out[n] = 0;
    leveldb_free(v);
    *val = out;
    if (vlen)
        *vlen = n;
    return 0;
}

/* LevelDB's writes into its log hold this shared; db_sync.c holds it alone while it writes zeros
 * ahead of the log (db_writes_hold), so they never land where LevelDB is appending. Writers
 * first: a steady stream of writes must not keep the zeros out. */
static pthread_rwlock_t log_rw = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void db_writes_hold(void) { pthread_rwlock_wrlock(&log_rw); }
void db_writes_release(void) { pthread_rwlock_unlock(&log_rw); }

int db_put(const char *key, size_t klen, const void *val, size_t vlen, bool sync)
{
    if (db_repl_wide(key, klen)) { /* queued with its entry: one write */
        db_batch *b = db_batch_new();
        db_batch_put(b, key, klen, val, vlen);
        return db_batch_commit(b, sync);
    }
    char *e = NULL;
    jc_mark(key, klen, true);
    test_point(DB_TP_WRITE_BEFORE_APPLY);
    pthread_rwlock_rdlock(&log_rw);
    leveldb_put(db, sync ? wsync : wasync, key, klen, val, vlen, &e);
    pthread_rwlock_unlock(&log_rw);
    test_point(DB_TP_WRITE_AFTER_APPLY);
    jc_mark(key, klen, false);
    if (e) {
        log_error("leveldb put: %s", e);
        leveldb_free(e);
        return MB_EIO;
    }
    return 0;
}

int db_del(const char *key, size_t klen, bool sync)
{
    if (db_repl_wide(key, klen)) {
        db_batch *b = db_batch_new();
        db_batch_del(b, key, klen);
        return db_batch_commit(b, sync);
    }
    char *e = NULL;
    jc_mark(key, klen, true);
    test_point(DB_TP_WRITE_BEFORE_APPLY);
    pthread_rwlock_rdlock(&log_rw);
    leveldb_delete(db, sync ? wsync : wasync, key, klen, &e);
    pthread_rwlock_unlock(&log_rw);
    test_point(DB_TP_WRITE_AFTER_APPLY);
    jc_mark(key, klen, false);
    if (e) {
        log_error("leveldb delete: %s", e);
        leveldb_free(e);
        return MB_EIO;
    }
    return 0;
}

int db_get_json_shared(const char *key, json_t **out)
{
    size_t klen = strlen(key);
    uint64_t h = jc_hash(key, klen);
    size_t i = h & (JC_SLOTS - 1);
    pthread_mutex_t *m = &jc_lock[i % JC_SHARDS];
    pthread_once(&jc_once, jc_init);
    pthread_mutex_lock(m);
    if (jc[i].key && jc[i].hash == h && !strcmp(jc[i].key, key)) {
        *out = json_incref(jc[i].val);
        pthread_mutex_unlock(m);
        return 0;
    }
    uint64_t gen = jc[i].gen;
    pthread_mutex_unlock(m);
    char *v;
    size_t n;
    int rc = db_get(key, klen, &v, &n);
    if (rc)
        return rc;
    rc = parse_json(key, v, n, out);
    free(v);
    if (rc || n > JC_VALUE_MAX)
        return rc;
    test_point(DB_TP_READ_BEFORE_FILL);
    pthread_mutex_lock(m);
    if (jc[i].gen == gen && !jc[i].writing) {
        jc_slot_clear(&jc[i]);
        jc[i].hash = h;
        jc[i].key = xstrdup(key);
        jc[i].val = json_incref(*out);
    }
    pthread_mutex_unlock(m);
    return 0;
}

int db_get_json(const char *key, json_t **out)
{
    char *v;
    size_t n;
    int rc = db_get(key, strlen(key), &v, &n);
    if (rc)
        return rc;
    rc = parse_json(key, v, n, out);
    free(v);
    return rc;
}

int db_put_json(const char *key, const json_t *val, bool sync)
{
    size_t n;
    char *s = jsonw_dump(val, &n);
    int rc = db_put(key, strlen(key), s, n, sync);
    free(s);
    return rc;
}

db_batch *db_batch_new(void)
{
    db_batch *b = xmalloc(sizeof *b);
    b->wb = leveldb_writebatch_create();
    b->events = false;
    b->remote = false;
    return b;
}

void db_batch_put(db_batch *b, const char *key, size_t klen, const void *val, size_t vlen)
{
    leveldb_writebatch_put(b->wb, key, klen, val, vlen);
}

void db_batch_put_json(db_batch *b, const char *key, const json_t *val)
{
    size_t n;
    char *s = jsonw_dump(val, &n);
    leveldb_writebatch_put(b->wb, key, strlen(key), s, n);
    free(s);
}

void db_batch_del(db_batch *b, const char *key, size_t klen) { leveldb_writebatch_delete(b->wb, key, klen); }

void db_batch_each(const db_batch *b, void (*put)(void *, const char *, size_t, const char *, size_t),
                   void (*del)(void *, const char *, size_t), void *ud)
{
    leveldb_writebatch_iterate(b->wb, ud, put, del);
}

void db_batch_note_events(db_batch *b) { b->events = true; }
bool db_batch_has_events(const db_batch *b) { return b && b->events; }

void db_batch_del_prefix(db_batch *b, const char *prefix)
{
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        db_batch_del(b, k, kl);
    }
    db_iter_free(it);
}

void db_batch_free(db_batch *b)
{
    if (!b)
        return;
    leveldb_writebatch_destroy(b->wb);
    free(b);
}

int db_batch_commit(db_batch *b, bool sync)
{
    char *e = NULL;
    bool begin = true, end = false;
    bool queued = db_repl_queue(b); /* cluster mode: the queue entry joins the write (db_repl.c) */
    leveldb_writebatch_iterate(b->wb, &begin, jc_mark_put, jc_mark_del);
    test_point(DB_TP_WRITE_BEFORE_APPLY);
    pthread_rwlock_rdlock(&log_rw);
    leveldb_write(db, sync ? wsync : wasync, b->wb, &e);
    pthread_rwlock_unlock(&log_rw);
    test_point(DB_TP_WRITE_AFTER_APPLY);
    leveldb_writebatch_iterate(b->wb, &end, jc_mark_put, jc_mark_del); /* even on error: it may be in part */
    db_batch_free(b);
    if (queued)
        db_repl_done(!e);
    if (e) {
        log_error("leveldb write: %s", e);
        leveldb_free(e);
        return MB_EIO;
    }
    return 0;
}

char *db_property(const char *name) { return db ? leveldb_property_value(db, name) : NULL; }
struct db_snap {
    const leveldb_snapshot_t *snap;
    leveldb_readoptions_t *ro;
};

db_snap *db_snap_take(void)
{
    db_snap *s = xcalloc(1, sizeof *s);
    s->snap = leveldb_create_snapshot(db);
    s->ro = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(s->ro, 0);
    leveldb_readoptions_set_snapshot(s->ro, s->snap);
    return s;
}

void db_snap_release(db_snap *s)
{
    if (!s)
        return;
    leveldb_readoptions_destroy(s->ro);
    leveldb_release_snapshot(db, s->snap);
    free(s);
}

db_iter *db_iter_prefix(const char *prefix, size_t plen) { return db_snap_iter_prefix(NULL, prefix, plen); }

uint64_t db_last_seq(const char *prefix)
{
    size_t plen = strlen(prefix);
    uint64_t last = 0;
    db_iter *it = db_iter_prefix(prefix, plen);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char hex[17] = {0};
        if (kl != plen + 16)
            continue;
        memcpy(hex, k + plen, 16);
        uint64_t v = strtoull(hex, NULL, 16);
        if (v > last)
            last = v;
    }
    db_iter_free(it);
    return last;
}

db_iter *db_snap_iter_prefix(db_snap *s, const char *prefix, size_t plen)
{
    db_iter *it = xcalloc(1, sizeof *it);
    it->it = leveldb_create_iterator(db, s ? s->ro : ropts);
    it->prefix = xmalloc(plen + 1);
    memcpy(it->prefix, prefix, plen);
    it->prefix[plen] = 0;
    it->plen = plen;
    return it;
}

void db_iter_seek(db_iter *it, const char *key, size_t klen)
{
    free(it->start);
    it->start = xmalloc(klen + 1);
    memcpy(it->start, key, klen);
    it->slen = klen;
    it->started = false;
}

bool db_iter_next(db_iter *it)
{
    if (!it->started) {
        if (it->start)
            leveldb_iter_seek(it->it, it->start, it->slen);
        else
            leveldb_iter_seek(it->it, it->prefix, it->plen);
        it->started = true;
    } else
        leveldb_iter_next(it->it);
    db_touched();
    if (!leveldb_iter_valid(it->it))
        return false;
    size_t kl;
    const char *k = leveldb_iter_key(it->it, &kl);
    return kl >= it->plen && memcmp(k, it->prefix, it->plen) == 0;
}

const char *db_iter_key(db_iter *it, size_t *klen) { return leveldb_iter_key(it->it, klen); }
const char *db_iter_val(db_iter *it, size_t *vlen) { return leveldb_iter_value(it->it, vlen); }

void db_iter_free(db_iter *it)
{
    if (!it)
        return;
    leveldb_iter_destroy(it->it);
    free(it->prefix);
    free(it->start);
    free(it);
}

/* By hand, not snprintf: keys are built several times per request (16,000 instructions of a
 * 4 KiB upload went to formatting them). */
void db_each_json(const char *prefix, void (*fn)(const char *, size_t, json_t *, void *), void *ud)
{
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *val = db_iter_val(it, &vl);
        json_t *rec = json_loadb(val, vl, 0, NULL);
        fn(k, kl, rec, ud);
        json_decref(rec);
    }
    db_iter_free(it);
}

void key_u64(char out[17], uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
    out[16] = 0;
}

void id_key(char *out, size_t n, const char *table, uint64_t id)
{
    char a[17];
    key_u64(a, id);
    snprintf(out, n, "%s/%s", table, a);
}

/* Ids come from "n/<name>" counters, persisted with sync before the id is handed out:
 * an id seen by anyone is never reused after a crash. */
static uint64_t counter_read(const char *key)
{
    uint64_t v = 0;
    char *s;
    if (db_get(key, strlen(key), &s, NULL) == 0) {
        parse_u64(s, &v);
        free(s);
    }
    return v;
}

uint64_t db_next_id(const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "n/%s", name);
    pthread_mutex_lock(&id_lock);
    uint64_t v = counter_read(key) + 1;
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    db_put(key, strlen(key), buf, strlen(buf), true);
    pthread_mutex_unlock(&id_lock);
    return v;
}

uint64_t db_id_high(const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "n/%s", name);
    pthread_mutex_lock(&id_lock);
    uint64_t v = counter_read(key);
    pthread_mutex_unlock(&id_lock);
    return v;
}

void db_id_floor(const char *name, uint64_t floor)
{
    char key[128], buf[32];
    snprintf(key, sizeof key, "n/%s", name);
    pthread_mutex_lock(&id_lock);
    if (counter_read(key) < floor) {
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)floor);
        db_put(key, strlen(key), buf, strlen(buf), true);
    }
    for (size_t i = 0; i < sizeof id_blocks / sizeof id_blocks[0]; i++)
        if (!strcmp(id_blocks[i].name, name) && id_blocks[i].next <= floor)
            id_blocks[i].next = id_blocks[i].end = 0; /* the next id comes from a new block, past floor */
    pthread_mutex_unlock(&id_lock);
}

/* Ids handed out often (file and folder ids) come from the same counters, reserved in
 * blocks: the counter on disk is moved ahead by ID_BLOCK with one synced write, and the ids
 * of the block are handed out from memory. After a crash the unused rest of a block is
 * skipped, never reused. Ids stay small (they travel as JSON numbers to browsers, where
 * only 2^53 is exact) and unique without a collision check. */

uint64_t db_alloc_id(const char *name)
{
    pthread_mutex_lock(&id_lock);
    size_t i = 0;
    while (i < sizeof id_blocks / sizeof id_blocks[0] && id_blocks[i].name[0] && strcmp(id_blocks[i].name, name))
        i++;
    if (i == sizeof id_blocks / sizeof id_blocks[0])
        abort(); /* a programming error: more id families than slots */
    if (!id_blocks[i].name[0])
        snprintf(id_blocks[i].name, sizeof id_blocks[i].name, "%s", name);
    if (id_blocks[i].next == id_blocks[i].end) {
        char key[128], buf[32];
        snprintf(key, sizeof key, "n/%s", name);
        uint64_t v = counter_read(key);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)(v + ID_BLOCK));
        db_put(key, strlen(key), buf, strlen(buf), true);
        id_blocks[i].next = v + 1;
        id_blocks[i].end = v + ID_BLOCK + 1;
    }
    uint64_t id = id_blocks[i].next++;
    pthread_mutex_unlock(&id_lock);
    return id;
}

/* ------------------------------------------------------ snapshot copy --- */

/* A point-in-time copy for online backups (backup.c): a LevelDB snapshot read from start to end
 * and written into a new database at `dir` in batches of about 4 MiB, while writers go on. The
 * copy is compacted on close; its files are synced by the caller. */
int db_snapshot_copy(const char *dir, int (*each)(const char *k, size_t kl, const char *v, size_t vl, void *ud),
                     void *ud, uint64_t *keys, mb_err *err)
{
    char *e = NULL;
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    leveldb_options_set_error_if_exists(o, 1);
    leveldb_options_set_compression(o, leveldb_snappy_compression);
    leveldb_options_set_filter_policy(o, bloom);
    leveldb_t *out = leveldb_open(o, dir, &e);
    if (!out) {
        int rc = err_set(err, MB_EIO, "cannot create the backup database %s: %s", dir, e);
        leveldb_free(e);
        leveldb_options_destroy(o);
        return rc;
    }
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(db);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_readoptions_set_fill_cache(ro, 0);
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    size_t pending = 0;
    uint64_t n = 0;
    int rc = 0;
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it) && !rc; leveldb_iter_next(it), db_touched()) {
        size_t kl, vl;
        const char *k = leveldb_iter_key(it, &kl), *v = leveldb_iter_value(it, &vl);
        if (each && (rc = each(k, kl, v, vl, ud)) > 0) {
            rc = 0; /* the caller leaves this key out */
            continue;
        }
        leveldb_writebatch_put(wb, k, kl, v, vl);
        n++;
        pending += kl + vl;
        if (pending >= (4u << 20) && !rc) {
            leveldb_write(out, wo, wb, &e);
            leveldb_writebatch_clear(wb);
            pending = 0;
        }
        if (e)
            rc = err_set(err, MB_EIO, "cannot write the backup database %s: %s", dir, e);
    }
    if (!rc && !e) {
        leveldb_iter_get_error(it, &e);
        if (!e) {
            leveldb_writeoptions_set_sync(wo, 1);
            leveldb_write(out, wo, wb, &e);
        }
        if (e)
            rc = err_set(err, MB_EIO, "cannot copy the database into %s: %s", dir, e);
    }
    if (!rc)
        leveldb_compact_range(out, NULL, 0, NULL, 0);
    leveldb_free(e);
    leveldb_writebatch_destroy(wb);
    leveldb_writeoptions_destroy(wo);
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    leveldb_release_snapshot(db, snap);
    leveldb_close(out);
    leveldb_options_destroy(o);
    if (keys)
        *keys = n;
    return rc;
}
