/*
 * test_backend_set.c — a redundancy set's reads (kernel/backend_set.c) over three members that
 * are in-memory backends registered with the kernel's table, counting the bytes each is asked
 * for: a whole read takes the data pieces and no parity; a part takes only the data pieces that
 * hold it; with a data piece missing the part is decoded from the others and the piece written
 * back; the pieces an erasure set stores are the documented names and sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../kernel/fs.h"
#include <stdlib.h>
#include <string.h>

#define OBJS 4
typedef struct mem {
    char name[OBJS][128];
    uint8_t *data[OBJS];
    size_t len[OBJS];
    size_t gets, bytes_read;
} mem;

static mem members[3];

static int find(mem *m, const char *key)
{
    for (int i = 0; i < OBJS; i++)
        if (m->data[i] && !strcmp(m->name[i], key))
            return i;
    return -1;
}

static int m_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    (void)err;
    mem *m = st;
    int i = find(m, key);
    for (int j = 0; i < 0 && j < OBJS; j++)
        if (!m->data[j])
            i = j;
    free(m->data[i]);
    snprintf(m->name[i], sizeof m->name[i], "%s", key);
    m->data[i] = malloc(len);
    memcpy(m->data[i], data, len);
    m->len[i] = len;
    return 0;
}

static int64_t m_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    mem *m = st;
    int i = find(m, key);
    if (i < 0)
        return err_set(err, MB_ENOENT, "no %s", key);
    size_t n = off >= m->len[i] ? 0 : m->len[i] - off < len ? m->len[i] - off : len;
    memcpy(buf, m->data[i] + off, n);
    m->gets++;
    m->bytes_read += n;
    return (int64_t)n;
}

static int m_has(void *st, const char *key, mb_err *err)
{
    (void)err;
    return find(st, key) >= 0;
}

static int m_del(void *st, const char *key, mb_err *err)
{
    (void)err;
    mem *m = st;
    int i = find(m, key);
    if (i >= 0) {
        free(m->data[i]);
        m->data[i] = NULL;
    }
    return 0;
}

static int m_list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    (void)st, (void)fn, (void)ud, (void)err;
    return 0;
}

static const mb_blob_backend mem_ops = {
    .size = sizeof(mb_blob_backend), .name = "mem", .put = m_put, .get = m_get, .has = m_has, .del = m_del,
    .list = m_list};

static const char *KEY = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
#define L 300001

static uint8_t obj[L];

static int setup(void **st)
{
    (void)st;
    static const char *names[] = {"m0", "m1", "m2"};
    for (int i = 0; i < 3; i++) {
        mb_err e = {0};
        if (backend_register(NULL, names[i], &mem_ops, &members[i], &e))
            return -1;
    }
    for (size_t i = 0; i < L; i++)
        obj[i] = (uint8_t)(i * 7 + i / 251);
    return 0;
}

static void counts_reset(void)
{
    for (int i = 0; i < 3; i++)
        members[i].gets = members[i].bytes_read = 0;
}

/* The erasure 2+1 set over m0, m1, m2, with obj put under KEY. */
static void open_set(backend_ref *r)
{
    backend_set_spec sp = {.sid = 1, .erasure = true, .k = 2, .m = 1, .n = 3};
    for (int i = 0; i < 3; i++)
        snprintf(sp.of[i], sizeof sp.of[i], "m%d", i);
    mb_err e = {0};
    assert_int_equal(backend_set_open(&sp, r, &e), 0);
    assert_int_equal(r->ops.put(r->state, KEY, obj, L, &e), 0);
}

static void test_pieces_whole_reads_and_parts_read_only_what_they_need(void **st)
{
    (void)st;
    backend_ref r;
    open_set(&r);
    mb_err e = {0};
    size_t plen = PIECE_HDR + (L + 1) / 2 + PIECE_SUM;
    char want[96];
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "k2m1p%d/%s", i, KEY);
        int at = find(&members[i], want);
        assert_true(at >= 0);
        assert_int_equal(members[i].len[at], plen);
    }
    uint8_t *buf = malloc(L);
    counts_reset();
    assert_int_equal(r.ops.get(r.state, KEY, 0, buf, L, &e), L);
    assert_memory_equal(buf, obj, L);
    assert_int_equal(members[2].gets, 0); /* parity untouched */
    /* a part inside data shard 0: header of piece 0, then piece 0 up to the part's end */
    counts_reset();
    assert_int_equal(r.ops.get(r.state, KEY, 1000, buf, 5000, &e), 5000);
    assert_memory_equal(buf, obj + 1000, 5000);
    assert_int_equal(members[1].gets + members[2].gets, 0);
    assert_true(members[0].bytes_read <= PIECE_HDR + PIECE_HDR + 6000);
    /* a part across both data shards, to the end */
    counts_reset();
    assert_int_equal(r.ops.get(r.state, KEY, 140000, buf, L, &e), L - 140000);
    assert_memory_equal(buf, obj + 140000, L - 140000);
    assert_int_equal(members[2].gets, 0);
    assert_true(members[1].gets > 0);
    free(buf);
    backend_leave(&r);
}

static void test_a_part_of_a_missing_data_piece_is_decoded_and_the_piece_written_back(void **st)
{
    (void)st;
    backend_ref r;
    open_set(&r);
    mb_err e = {0};
    char name[96];
    snprintf(name, sizeof name, "k2m1p1/%s", KEY);
    int at = find(&members[1], name);
    uint8_t *saved = malloc(members[1].len[at]);
    size_t slen = members[1].len[at];
    memcpy(saved, members[1].data[at], slen);
    m_del(&members[1], name, &e);
    uint8_t buf[4000];
    counts_reset();
    assert_int_equal(r.ops.get(r.state, KEY, 200000, buf, sizeof buf, &e), (int64_t)sizeof buf);
    assert_memory_equal(buf, obj + 200000, sizeof buf);
    assert_true(members[2].gets > 0); /* the parity decoded it */
    at = find(&members[1], name);
    assert_true(at >= 0); /* written back, the same bytes */
    assert_int_equal(members[1].len[at], slen);
    assert_memory_equal(members[1].data[at], saved, slen);
    free(saved);
    backend_leave(&r);
}

static int teardown(void **st)
{
    (void)st;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < OBJS; j++)
            free(members[i].data[j]);
    backend_fini();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_whole_reads_and_parts_read_only_what_they_need),
        cmocka_unit_test(test_a_part_of_a_missing_data_piece_is_decoded_and_the_piece_written_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
