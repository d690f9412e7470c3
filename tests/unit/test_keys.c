/* Unit tests: key encoding, ids and the metadata store primitives (kernel/db.c, util.c), and a
 * module's key-value calls (kernel/api.c) as a queue reader uses them: kv_scan from the prefix's
 * start and kv_scan_after (ABI 2.1, queues) from the key after the last one taken, and the
 * modules' queue reader over them (modules/qread.h): ahead first, then what a writer said it
 * wrote behind, and the front at least every QREAD_FRONT_MS for what nobody announced. The
 * kernel's own keys (owner NULL) land under "m/kernel/". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../kernel/kernel.h"
#include "../../modules/qread.h"

static char dir[64];

static int setup(void **s)
{
    (void)s;
    snprintf(dir, sizeof dir, "/tmp/mbkeysXXXXXX");
    if (!mkdtemp(dir))
        return -1;
    mb_err err;
    return db_open(dir, &err);
}

static int teardown(void **s)
{
    (void)s;
    db_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static void test_u64_keys_sort_numerically(void **s)
{
    (void)s;
    char a[17], b[17], c[17];
    key_u64(a, 9);
    key_u64(b, 10);
    key_u64(c, 0xffffffffffffffffULL);
    assert_true(strcmp(a, b) < 0);
    assert_true(strcmp(b, c) < 0);
    assert_string_equal(b, "000000000000000a");
}

static void test_prefix_iteration_stays_inside_the_prefix(void **s)
{
    (void)s;
    db_put("x/1", 3, "a", 1, false);
    db_put("x/2", 3, "b", 1, false);
    db_put("y/1", 3, "c", 1, false);
    db_put("x", 1, "d", 1, false);
    db_iter *it = db_iter_prefix("x/", 2);
    int n = 0;
    while (db_iter_next(it))
        n++;
    db_iter_free(it);
    assert_int_equal(n, 2);
}

static void test_batch_is_atomic_and_json_roundtrips(void **s)
{
    (void)s;
    db_batch *b = db_batch_new();
    json_t *v = json_pack("{s:i, s:s}", "v", 1, "name", "über");
    db_batch_put_json(b, "j/1", v);
    db_batch_del(b, "x/1", 3);
    assert_int_equal(db_batch_commit(b, true), 0);
    json_t *got;
    assert_int_equal(db_get_json("j/1", &got), 0);
    assert_true(json_equal(v, got));
    json_decref(v);
    json_decref(got);
    char *val;
    assert_int_equal(db_get("x/1", 3, &val, NULL), MB_ENOENT);
}

static void test_ids_never_repeat_across_reopen(void **s)
{
    (void)s;
    uint64_t a = db_next_id("t"), b = db_next_id("t");
    assert_true(b == a + 1);
    db_close();
    mb_err err;
    assert_int_equal(db_open(dir, &err), 0);
    assert_true(db_next_id("t") == b + 1);
}

static void test_block_ids_are_unique_small_and_survive_reopen(void **s)
{
    (void)s;
    uint64_t first = db_alloc_id("e"), last = first;
    for (int i = 0; i < 3000; i++) { /* crosses several reserved blocks */
        uint64_t v = db_alloc_id("e");
        assert_true(v == last + 1);
        last = v;
    }
    db_close(); /* as after a crash: the rest of the block is skipped, never reused */
    mb_err err;
    assert_int_equal(db_open(dir, &err), 0);
    uint64_t after = db_alloc_id("e");
    assert_true(after > last);
    assert_true(after < (1ULL << 53));
}

static void test_hex_and_utf8(void **s)
{
    (void)s;
    uint8_t in[3] = {0x00, 0xab, 0xff}, out[3];
    char hex[7];
    hex_encode(in, 3, hex);
    assert_string_equal(hex, "00abff");
    assert_int_equal(hex_decode(hex, out, 3), 0);
    assert_memory_equal(in, out, 3);
    assert_int_not_equal(hex_decode("00abf", out, 3), 0);
    assert_int_not_equal(hex_decode("00abfg", out, 3), 0);
    assert_true(utf8_valid("caf\xc3\xa9", 5));
    assert_false(utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(utf8_valid("\xe2\x82", 2));         /* truncated */
}

static void test_parse_u64_rejects_junk_and_overflow(void **s)
{
    (void)s;
    uint64_t v;
    assert_true(parse_u64("18446744073709551615", &v));
    assert_true(v == UINT64_MAX);
    assert_false(parse_u64("18446744073709551616", &v));
    assert_false(parse_u64("-1", &v));
    assert_false(parse_u64(" 1", &v));
    assert_false(parse_u64("", &v));
}

static void test_arena_alignment_and_big_blocks(void **s)
{
    (void)s;
    arena *a = arena_new();
    for (int i = 1; i < 100; i++) {
        void *p = arena_alloc(a, (size_t)i * 7);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, 0xaa, (size_t)i * 7);
    }
    void *big = arena_alloc(a, 1 << 20);
    memset(big, 1, 1 << 20);
    assert_string_equal(arena_printf(a, "%d-%s", 42, "x"), "42-x");
    arena_free(a);
}

static json_int_t shared_n(const char *key)
{
    json_t *v;
    if (db_get_json_shared(key, &v))
        return -1;
    json_int_t n = json_integer_value(json_object_get(v, "n"));
    json_decref(v);
    return n;
}

static void put_n(const char *key, json_int_t n, int how)
{
    json_t *v = json_pack("{s:I}", "n", n);
    if (how == 0) {
        assert_int_equal(db_put_json(key, v, false), 0);
    } else {
        db_batch *b = db_batch_new();
        db_batch_put_json(b, key, v);
        uint64_t seq;
        assert_int_equal(how == 1 ? db_batch_commit(b, true) : db_batch_commit_grouped(b, &seq), 0);
    }
    json_decref(v);
}

static void test_shared_records_follow_every_kind_of_write(void **s)
{
    (void)s;
    assert_int_equal(shared_n("c/1"), -1);
    put_n("c/1", 1, 0);
    assert_int_equal(shared_n("c/1"), 1);
    assert_int_equal(shared_n("c/1"), 1); /* now from the cache */
    put_n("c/1", 2, 0);                   /* db_put */
    assert_int_equal(shared_n("c/1"), 2);
    put_n("c/1", 3, 1);                   /* a synced batch */
    assert_int_equal(shared_n("c/1"), 3);
    put_n("c/1", 4, 2);                   /* a grouped batch */
    assert_int_equal(shared_n("c/1"), 4);
    db_batch *b = db_batch_new();
    db_batch_del(b, "c/1", 3);
    assert_int_equal(db_batch_commit(b, false), 0);
    assert_int_equal(shared_n("c/1"), -1);
    put_n("c/1", 5, 0);
    assert_int_equal(shared_n("c/1"), 5);
    assert_int_equal(db_del("c/1", 3, false), 0);
    assert_int_equal(shared_n("c/1"), -1);
}

typedef struct {
    int stop;
    int backwards;
    json_int_t seen;
} reader_ctx;

static void *reader_main(void *arg)
{
    reader_ctx *c = arg;
    json_int_t last = -1;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        json_int_t n = shared_n("c/race");
        if (n < last)
            c->backwards++;
        if (n > last)
            last = n;
    }
    c->seen = last;
    return NULL;
}

/* A pauser stops one thread at chosen points of db.c (db_test_hook) until the test lets it
 * go, so the test decides the interleaving instead of the scheduler. */
typedef struct {
    unsigned mask; /* 1 << DB_TP_* where this thread stops */
    int at;        /* the point it waits at now, or -1 */
    int go;        /* releases granted and not yet used */
    bool done;     /* its thread has finished its call */
} pauser;
static pthread_mutex_t tp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tp_cond = PTHREAD_COND_INITIALIZER;
static __thread pauser *tp_self;

static void tp_hook(int point)
{
    pauser *p = tp_self;
    if (!p || !(p->mask & (1u << point)))
        return;
    pthread_mutex_lock(&tp_lock);
    p->at = point;
    pthread_cond_broadcast(&tp_cond);
    while (!p->go)
        pthread_cond_wait(&tp_cond, &tp_lock);
    p->go--;
    p->at = -1;
    pthread_mutex_unlock(&tp_lock);
}

/* Wait until p's thread stops at point: false if it finished its call without stopping
 * there (or 30 s went by: only a real hang). The caller lets every thread go before it
 * asserts, so a failure never leaves a thread stopped. */
static bool tp_wait_at(pauser *p, int point)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&tp_lock);
    int rc = 0;
    while (p->at != point && !p->done && rc == 0)
        rc = pthread_cond_timedwait(&tp_cond, &tp_lock, &dl);
    bool ok = p->at == point;
    pthread_mutex_unlock(&tp_lock);
    return ok;
}

static void tp_done(pauser *p)
{
    pthread_mutex_lock(&tp_lock);
    p->done = true;
    pthread_cond_broadcast(&tp_cond);
    pthread_mutex_unlock(&tp_lock);
}

static void tp_release(pauser *p)
{
    pthread_mutex_lock(&tp_lock);
    p->go++;
    pthread_cond_broadcast(&tp_cond);
    pthread_mutex_unlock(&tp_lock);
}

typedef struct {
    pauser p;
    int how;          /* writer: put_n's kind of write */
    json_int_t value; /* writer: what it writes; reader: what it read */
} racer;

static void *race_writer(void *arg)
{
    racer *r = arg;
    tp_self = &r->p;
    put_n("c/race", r->value, r->how);
    tp_done(&r->p);
    return NULL;
}

static void *race_reader(void *arg)
{
    racer *r = arg;
    tp_self = &r->p;
    r->value = shared_n("c/race");
    tp_done(&r->p);
    return NULL;
}

/* A reader that missed the cache and read LevelDB just before a write must not put that
 * older value back once another reader has seen the new one: values never go backwards.
 * The interleaving is forced, so the test fails every time the cache lets it happen:
 *   writer W is stopped just before LevelDB applies its write;
 *   reader A misses, reads the old value and is stopped just before it fills the slot;
 *   W applies and is stopped before its end mark; the main thread reads the new value;
 *   A is let go (it may fill the slot only if nothing told it a write came);
 *   the main thread must still read the new value. Then W finishes.
 * Without the mark before LevelDB applies, A fills the slot with the old value; without
 * "no fill while a write is between its marks", the main thread's read fills the slot
 * during the write and A, whose generation is still current, puts the old value back. */
static void test_shared_records_never_go_back_under_concurrent_writes(void **s)
{
    (void)s;
    for (int how = 0; how < 3; how++) {
        put_n("c/race", 10 * how, 0); /* not cached now: the write dropped it */
        db_test_hook = tp_hook;
        racer w = {.p = {.mask = 1u << DB_TP_WRITE_BEFORE_APPLY | 1u << DB_TP_WRITE_AFTER_APPLY, .at = -1},
                   .how = how, .value = 10 * how + 1};
        racer a = {.p = {.mask = 1u << DB_TP_READ_BEFORE_FILL, .at = -1}};
        pthread_t tw, ta;
        assert_int_equal(pthread_create(&tw, NULL, race_writer, &w), 0);
        bool w_before = tp_wait_at(&w.p, DB_TP_WRITE_BEFORE_APPLY);
        assert_int_equal(pthread_create(&ta, NULL, race_reader, &a), 0);
        bool a_before = tp_wait_at(&a.p, DB_TP_READ_BEFORE_FILL);
        tp_release(&w.p);
        bool w_after = tp_wait_at(&w.p, DB_TP_WRITE_AFTER_APPLY);
        json_int_t seen = shared_n("c/race"); /* the write is applied: the new value */
        tp_release(&a.p);
        pthread_join(ta, NULL);
        json_int_t again = shared_n("c/race"), twice = shared_n("c/race");
        tp_release(&w.p); /* let W finish before any assert can end the test */
        pthread_join(tw, NULL);
        db_test_hook = NULL;
        assert_true(w_before && a_before && w_after); /* the interleaving did happen */
        assert_int_equal(seen, 10 * how + 1);
        assert_int_equal(a.value, 10 * how); /* A read before the write: the old value is its answer */
        assert_int_equal(again, 10 * how + 1); /* ... but never anyone's once the new one was seen */
        assert_int_equal(twice, 10 * how + 1);
        assert_int_equal(shared_n("c/race"), 10 * how + 1);
    }
}

/* The same under free-running threads: many writes, readers never see a value go back,
 * and the last write is what everyone reads in the end. */
static void test_shared_records_never_go_back_under_many_writes(void **s)
{
    (void)s;
    put_n("c/race", 0, 0);
    reader_ctx ctx[3] = {{0}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &ctx[i]), 0);
    for (json_int_t n = 1; n <= 3000; n++)
        put_n("c/race", n, n % 3);
    for (int i = 0; i < 3; i++)
        __atomic_store_n(&ctx[i].stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ctx[i].backwards, 0);
    }
    assert_int_equal(shared_n("c/race"), 3000);
}

/* The sync barrier fdatasyncs its own descriptor on LevelDB's newest log: after writes that
 * make LevelDB switch logs many times (a 1 MiB memtable), it must always be syncing the
 * newest *.log in the folder, or acknowledged writes would sit unsynced in a log it no
 * longer looks at. Every write is still there after a reopen. */
static void test_the_sync_barrier_follows_log_switches(void **s)
{
    (void)s;
    db_close();
    kcfg cfg = {.db_write_buffer = 1 << 20, .db_cache = 1 << 20};
    kcfg *saved = g_cfg;
    g_cfg = &cfg;
    mb_err err;
    assert_int_equal(db_open(dir, &err), 0);
    char val[8192];
    memset(val, 'v', sizeof val);
    unsigned long long first = 0;
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof key, "g/%05d", i);
        db_batch *b = db_batch_new();
        db_batch_put(b, key, strlen(key), val, sizeof val);
        uint64_t seq;
        assert_int_equal(db_batch_commit_grouped(b, &seq), 0);
        db_sync_through(seq);
        if (!first)
            first = db_synced_log();
        if (i % 100 == 99) { /* the newest log in the folder is the one being synced */
            unsigned long long top = 0, v;
            char tail[8];
            DIR *d = opendir(dir);
            for (struct dirent *de; (de = readdir(d));)
                if (sscanf(de->d_name, "%llu.%7s", &v, tail) == 2 && !strcmp(tail, "log") && v > top)
                    top = v;
            closedir(d);
            assert_int_equal(db_synced_log(), top);
        }
    }
    assert_true(db_synced_log() > first); /* LevelDB did switch logs, several times */
    db_close();
    g_cfg = saved;
    assert_int_equal(db_open(dir, &err), 0);
    for (int i = 0; i < 2000; i += 37) {
        char key[32], *v;
        size_t n;
        snprintf(key, sizeof key, "g/%05d", i);
        assert_int_equal(db_get(key, strlen(key), &v, &n), 0);
        assert_int_equal(n, sizeof val);
        free(v);
    }
}

typedef struct seen {
    char keys[512];
    int n, stop_at;
} seen;

static int take(const char *key, const void *value, size_t len, void *ud)
{
    seen *s = ud;
    size_t k = strlen(s->keys);
    snprintf(s->keys + k, sizeof s->keys - k, "%s%s=%.*s", k ? " " : "", key, (int)len, (const char *)value);
    return ++s->n == s->stop_at;
}

static const char *scan_after(const char *prefix, const char *after, int stop_at)
{
    static seen s;
    memset(&s, 0, sizeof s);
    s.stop_at = stop_at;
    mb_err err;
    assert_int_equal(api_table()->kv_scan_after(NULL, prefix, after, take, &s, &err), 0);
    return s.keys;
}

static void put(const char *k)
{
    mb_err err;
    assert_int_equal(api_table()->kv_put(NULL, k, k + 2, strlen(k + 2), false, &err), 0);
}

static void test_queue_read_from_where_it_stopped(void **st)
{
    (void)st;
    const mb_api *a = api_table();
    assert_true(a->size > offsetof(mb_api, kv_scan_after));
    mb_err err;
    const char *keys[] = {"p/9", "q/001", "q/002", "q/003", "q/004", "q/005", "qq", "r/1"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        put(keys[i]);
    assert_string_equal(scan_after("q/", NULL, 0), "q/001=001 q/002=002 q/003=003 q/004=004 q/005=005");
    assert_string_equal(scan_after("q/", "", 2), "q/001=001 q/002=002");
    /* the reader took q/001..q/003 and deleted them: from the last one taken */
    for (int i = 1; i <= 3; i++) {
        char k[8];
        snprintf(k, sizeof k, "q/%03d", i);
        assert_int_equal(a->kv_del(NULL, k, false, &err), 0);
    }
    assert_string_equal(scan_after("q/", "q/003", 0), "q/004=004 q/005=005");
    assert_string_equal(scan_after("q/", "q/004", 0), "q/005=005");
    assert_string_equal(scan_after("q/", "q/0035", 1), "q/004=004"); /* a key that is not there */
    assert_string_equal(scan_after("q/", "q/005", 0), "");             /* nothing after the last */
    assert_string_equal(scan_after("q/", "r", 0), "");                 /* after the prefix's range */
    assert_string_equal(scan_after("q/", "a", 0), "q/004=004 q/005=005"); /* before it: from its start */
    assert_string_equal(scan_after("q/", "q", 0), "q/004=004 q/005=005");
    /* written behind the reader: found from the start, not from where it stopped */
    put("q/000");
    assert_string_equal(scan_after("q/", "q/005", 0), "");
    assert_string_equal(scan_after("q/", NULL, 0), "q/000=000 q/004=004 q/005=005");
    /* the module's namespace: the kernel's keys are m/kernel/<key> */
    char *v = NULL;
    size_t n;
    assert_int_equal(db_get("m/kernel/q/004", strlen("m/kernel/q/004"), &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "004", 3);
    free(v);
}

static const char *read_q(qread *r, int stop_at)
{
    static seen s;
    memset(&s, 0, sizeof s);
    s.stop_at = stop_at;
    qread_scan(api_table(), NULL, r, "w/", take, &s);
    return s.keys;
}

static void del(const char *k)
{
    mb_err err;
    assert_int_equal(api_table()->kv_del(NULL, k, false, &err), 0);
}

static void test_qread(void **st)
{
    (void)st;
    qread r;
    qread_init(&r);
    put("w/001"), put("w/002"), put("w/003"), put("w/004");
    assert_string_equal(read_q(&r, 2), "w/001=001 w/002=002");
    del("w/001"), del("w/002");
    put("w/000"); /* behind the reader, announced */
    qread_wrote(&r, "w/000");
    put("w/005"); /* ahead: no need to say so */
    qread_wrote(&r, "w/005");
    assert_string_equal(read_q(&r, 0), "w/003=003 w/004=004 w/005=005"); /* ahead first */
    del("w/003"), del("w/004"), del("w/005");
    assert_string_equal(read_q(&r, 0), "w/000=000"); /* nothing ahead: the front */
    del("w/000");
    assert_string_equal(read_q(&r, 0), "");
    put("w/00"); /* behind w/000, unannounced: not until the reader's next look at the front */
    assert_string_equal(read_q(&r, 0), "");
    r.front_ms -= QREAD_FRONT_MS;
    assert_string_equal(read_q(&r, 0), "w/00=00");
    del("w/00");
    put("w/0"); /* behind w/00: "something, somewhere" (a reader that left keys says so) */
    assert_string_equal(read_q(&r, 0), "");
    qread_wrote(&r, NULL);
    assert_string_equal(read_q(&r, 0), "w/0=0");
    qread_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_keys_sort_numerically),
        cmocka_unit_test(test_prefix_iteration_stays_inside_the_prefix),
        cmocka_unit_test(test_batch_is_atomic_and_json_roundtrips),
        cmocka_unit_test(test_shared_records_follow_every_kind_of_write),
        cmocka_unit_test(test_shared_records_never_go_back_under_concurrent_writes),
        cmocka_unit_test(test_shared_records_never_go_back_under_many_writes),
        cmocka_unit_test(test_the_sync_barrier_follows_log_switches),
        cmocka_unit_test(test_ids_never_repeat_across_reopen),
        cmocka_unit_test(test_block_ids_are_unique_small_and_survive_reopen),
        cmocka_unit_test(test_hex_and_utf8),
        cmocka_unit_test(test_parse_u64_rejects_junk_and_overflow),
        cmocka_unit_test(test_arena_alignment_and_big_blocks),
        cmocka_unit_test(test_queue_read_from_where_it_stopped),
        cmocka_unit_test(test_qread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
