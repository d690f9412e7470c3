/*
 * test_piece.c — the pieces of redundancy sets (kernel/piece.c, docs/storage.md "Redundancy
 * sets"): Reed-Solomon with ISA-L gives every object back from every choice of up to m missing
 * pieces, for each geometry up to 6+4 and lengths that do and do not divide by k; the piece
 * format (header, shard, XXH3-64) is parsed only when whole and sound, and every damage is
 * refused: each single flipped bit, a cut or lengthened piece, a header that lies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../kernel/fs.h"
#include <stdlib.h>
#include <string.h>

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* Every subset of up to m of the k + m pieces left out decodes to the object. */
static void every_loss(unsigned k, unsigned m, size_t len)
{
    uint8_t *obj = malloc(len), *back = malloc(len);
    fill(obj, len, k * 31 + m * 7 + (unsigned)len);
    size_t plen = piece_size(len, k);
    uint8_t *buf = malloc(plen * (k + m)), *p[PIECE_MAX];
    for (unsigned i = 0; i < k + m; i++)
        p[i] = buf + i * plen;
    assert_int_equal(piece_encode(k, m, obj, len, p), 0);
    for (unsigned i = 0; i < k + m; i++) {
        piece_hdr h;
        assert_int_equal(piece_parse(p[i], plen, &h), 0);
        assert_true(h.k == k && h.m == m && h.i == i && h.len == len);
    }
    unsigned tried = 0;
    for (unsigned mask = 0; mask < (1u << (k + m)); mask++) {
        if ((unsigned)__builtin_popcount(mask) > m)
            continue;
        uint8_t *have[PIECE_MAX] = {0};
        for (unsigned i = 0; i < k + m; i++)
            have[i] = mask & (1u << i) ? NULL : p[i];
        memset(back, 0xa5, len);
        assert_int_equal(piece_decode(k, m, have, len, back), 0);
        assert_memory_equal(back, obj, len);
        tried++;
    }
    assert_true(tried > 0);
    /* one loss too many is said so, not guessed */
    uint8_t *few[PIECE_MAX] = {0};
    for (unsigned i = m + 1; i < k + m; i++)
        few[i] = p[i];
    assert_int_equal(piece_decode(k, m, few, len, back), MB_ENOENT);
    free(buf);
    free(obj);
    free(back);
}

static void test_every_choice_of_up_to_m_lost_pieces_decodes(void **st)
{
    (void)st;
    static const unsigned geo[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {3, 2}, {4, 2}, {4, 3}, {5, 3}, {6, 4}};
    static const size_t lens[] = {1, 2, 7, 4096, 65537, 300001};
    for (size_t g = 0; g < sizeof geo / sizeof *geo; g++)
        for (size_t l = 0; l < sizeof lens / sizeof *lens; l++)
            every_loss(geo[g][0], geo[g][1], lens[l]);
}

static void test_a_copy_is_the_object_with_header_and_checksum(void **st)
{
    (void)st;
    uint8_t obj[1000], piece[1000 + PIECE_HDR + PIECE_SUM], back[1000];
    fill(obj, sizeof obj, 3);
    uint8_t *p[1] = {piece};
    assert_int_equal(piece_size(sizeof obj, 1), sizeof piece);
    assert_int_equal(piece_encode(1, 0, obj, sizeof obj, p), 0);
    assert_memory_equal(piece, "MBR1\x01\x00\x00\x00\xe8\x03\0\0\0\0\0\0", 16);
    piece_hdr h;
    assert_int_equal(piece_parse(piece, sizeof piece, &h), 0);
    obj[0] ^= 1; /* another object: another tag */
    uint8_t other[sizeof piece], *q[1] = {other};
    assert_int_equal(piece_encode(1, 0, obj, sizeof obj, q), 0);
    piece_hdr h2;
    assert_int_equal(piece_parse(other, sizeof other, &h2), 0);
    assert_true(h.tag != h2.tag && h.len == h2.len);
    obj[0] ^= 1;
    assert_memory_equal(piece + PIECE_HDR, obj, sizeof obj);
    uint8_t *have[1] = {piece};
    assert_int_equal(piece_decode(1, 0, have, sizeof obj, back), 0);
    assert_memory_equal(back, obj, sizeof obj);
}

static void test_geometry_limits(void **st)
{
    (void)st;
    assert_true(piece_geometry_ok(1, 0));
    assert_true(piece_geometry_ok(2, 1));
    assert_true(piece_geometry_ok(8, 8));
    assert_false(piece_geometry_ok(2, 0)); /* that is no code: a set says "copies" */
    assert_false(piece_geometry_ok(0, 2));
    assert_false(piece_geometry_ok(9, 8));
    uint8_t obj[10] = {0}, *p[PIECE_MAX] = {0};
    assert_int_equal(piece_encode(0, 2, obj, 10, p), MB_EINVAL);
    assert_int_equal(piece_encode(2, 1, obj, 0, p), MB_EINVAL);
    assert_int_equal(piece_size(10, 3), PIECE_HDR + 4 + PIECE_SUM);
}

static void test_every_damage_to_a_piece_is_refused(void **st)
{
    (void)st;
    size_t len = 333;
    uint8_t obj[333];
    fill(obj, len, 9);
    size_t plen = piece_size(len, 2);
    uint8_t *buf = malloc(plen * 3), *p[3] = {buf, buf + plen, buf + 2 * plen};
    assert_int_equal(piece_encode(2, 1, obj, len, p), 0);
    piece_hdr h;
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(piece_parse(p[i], plen, &h), 0);
    uint8_t *c = malloc(plen + 1);
    for (size_t at = 0; at < plen; at++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(c, p[2], plen);
            c[at] ^= (uint8_t)(1 << bit);
            assert_int_equal(piece_parse(c, plen, &h), MB_EINTEGRITY);
        }
    memcpy(c, p[0], plen);
    for (size_t n = 0; n < plen; n++)
        assert_int_equal(piece_parse(c, n, &h), MB_EINTEGRITY);
    c[plen] = 0;
    assert_int_equal(piece_parse(c, plen + 1, &h), MB_EINTEGRITY);
    free(c);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_choice_of_up_to_m_lost_pieces_decodes),
        cmocka_unit_test(test_a_copy_is_the_object_with_header_and_checksum),
        cmocka_unit_test(test_geometry_limits),
        cmocka_unit_test(test_every_damage_to_a_piece_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
