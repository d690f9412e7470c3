/* Unit tests: content-defined chunking (kernel/chunker.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/fs.h"

#define BIG (24u * 1024 * 1024)

/* Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
static uint8_t *random_buf(size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n);
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)(x >> 24);
    }
    return b;
}

/* Cut a whole buffer the way fs.c does; returns the number of chunks, lengths in lens. */
static size_t cut_all(const uint8_t *p, size_t n, size_t *lens, size_t max)
{
    size_t k = 0, off = 0;
    while (off < n && k < max) {
        size_t c = chunker_cut(p + off, n - off);
        lens[k++] = c;
        off += c;
    }
    return k;
}

static void test_same_bytes_give_the_same_boundaries(void **s)
{
    (void)s;
    uint8_t *b = random_buf(BIG, 7);
    size_t a[64], c[64];
    size_t na = cut_all(b, BIG, a, 64), nc = cut_all(b, BIG, c, 64);
    assert_int_equal(na, nc);
    assert_memory_equal(a, c, na * sizeof a[0]);
    free(b);
}

static void test_chunks_respect_min_and_max_and_average_near_one_mib(void **s)
{
    (void)s;
    uint8_t *b = random_buf(BIG, 11);
    size_t lens[128];
    size_t n = cut_all(b, BIG, lens, 128), total = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n)
            assert_true(lens[i] >= CHUNK_MIN);
        assert_true(lens[i] <= CHUNK_MAX);
        total += lens[i];
    }
    assert_int_equal(total, BIG);
    size_t avg = BIG / n;
    assert_true(avg >= CHUNK_AVG / 2 && avg <= 2 * CHUNK_AVG);
    free(b);
}

static void test_an_insertion_near_the_start_changes_only_the_first_chunks(void **s)
{
    (void)s;
    uint8_t *b = random_buf(BIG, 3);
    uint8_t *e = malloc(BIG + 10);
    memcpy(e, b, 1000);
    memcpy(e + 1000, "0123456789", 10);
    memcpy(e + 1010, b + 1000, BIG - 1000);
    size_t la[128], lb[128];
    size_t na = cut_all(b, BIG, la, 128), nb = cut_all(e, BIG + 10, lb, 128);
    /* Compare from the end: every chunk but the first one or two is the same bytes. */
    size_t same = 0;
    size_t oa = BIG, ob = BIG + 10;
    for (size_t i = na, j = nb; i > 0 && j > 0; i--, j--) {
        oa -= la[i - 1];
        ob -= lb[j - 1];
        if (la[i - 1] != lb[j - 1] || memcmp(b + oa, e + ob, la[i - 1]))
            break;
        same++;
    }
    assert_true(na >= 8);
    assert_true(same >= na - 2);
    assert_true(same < nb); /* the edited chunk itself did change */
    free(b);
    free(e);
}

static void test_empty_and_tiny_inputs(void **s)
{
    (void)s;
    uint8_t one = 42;
    assert_int_equal(chunker_cut(&one, 0), 0);
    assert_int_equal(chunker_cut(&one, 1), 1);
    uint8_t *b = random_buf(CHUNK_MIN, 5);
    assert_int_equal(chunker_cut(b, CHUNK_MIN), CHUNK_MIN);
    free(b);
}

static void test_uniform_bytes_are_cut_at_the_maximum(void **s)
{
    (void)s;
    size_t n = 3 * CHUNK_MAX;
    uint8_t *z = calloc(1, n);
    size_t lens[8];
    size_t k = cut_all(z, n, lens, 8);
    for (size_t i = 0; i < k; i++)
        assert_true(lens[i] <= CHUNK_MAX);
    assert_true(k >= 3);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes_give_the_same_boundaries),
        cmocka_unit_test(test_chunks_respect_min_and_max_and_average_near_one_mib),
        cmocka_unit_test(test_an_insertion_near_the_start_changes_only_the_first_chunks),
        cmocka_unit_test(test_empty_and_tiny_inputs),
        cmocka_unit_test(test_uniform_bytes_are_cut_at_the_maximum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
