/* Unit tests: the thumbnails module's pure parts — ThumbHash (modules/thumbnails/thumbhash.c),
 * kinds from first bytes and Accept parsing (modules/thumbnails/thumb_util.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../../modules/thumbnails/thumb_util.h"
#include "../../modules/thumbnails/thumbhash.h"

static uint8_t *solid(int w, int h, uint8_t r, uint8_t g, uint8_t b, uint8_t a)
{
    uint8_t *p = malloc((size_t)w * h * 4);
    for (int i = 0; i < w * h; i++)
        p[4 * i] = r, p[4 * i + 1] = g, p[4 * i + 2] = b, p[4 * i + 3] = a;
    return p;
}

static void test_a_solid_picture_hashes_to_its_colour_and_shape(void **s)
{
    (void)s;
    uint8_t hash[THUMBHASH_MAX];
    uint8_t *px = solid(64, 32, 200, 40, 30, 255);
    size_t n = thumbhash_encode(64, 32, px, hash);
    free(px);
    /* 64x32 opaque: L takes 7x4 factors (18 AC), P and Q 3x3 (5 AC each): 28 nibbles after
     * the 5 header bytes */
    assert_int_equal(n, 19);
    double r, g, b, a;
    thumbhash_average(hash, n, &r, &g, &b, &a);
    assert_true(fabs(r - 200 / 255.0) < 0.05 && fabs(g - 40 / 255.0) < 0.05 && fabs(b - 30 / 255.0) < 0.05);
    assert_true(a == 1);
    assert_true(fabs(thumbhash_aspect(hash, n) - 2.0) < 0.35); /* landscape, 2:1 (7/4 in its units) */
    assert_int_equal(hash[4] & 0x80, 0x80);                     /* the landscape bit */
}

static void test_transparency_sets_the_alpha_flag_and_average(void **s)
{
    (void)s;
    uint8_t hash[THUMBHASH_MAX];
    uint8_t *px = solid(40, 60, 0, 0, 255, 255);
    for (int i = 0; i < 40 * 30; i++) /* the top half fully transparent */
        px[4 * i + 3] = 0;
    size_t n = thumbhash_encode(40, 60, px, hash);
    free(px);
    assert_int_equal(hash[2] & 0x80, 0x80);
    double r, g, b, a;
    thumbhash_average(hash, n, &r, &g, &b, &a);
    assert_true(b > 0.9 && r < 0.1);
    assert_true(fabs(a - 0.5) < 0.1);
    assert_true(thumbhash_aspect(hash, n) < 1); /* portrait */
}

static void test_a_known_picture_always_gives_the_same_hash(void **s)
{
    (void)s;
    /* a horizontal red-to-blue ramp, 32x32: pinned so a change to the encoder shows */
    uint8_t px[32 * 32 * 4], hash[THUMBHASH_MAX];
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            uint8_t *p = px + 4 * (y * 32 + x);
            p[0] = (uint8_t)(255 - x * 8), p[1] = 0, p[2] = (uint8_t)(x * 8), p[3] = 255;
        }
    size_t n = thumbhash_encode(32, 32, px, hash);
    uint8_t again[THUMBHASH_MAX];
    assert_int_equal(thumbhash_encode(32, 32, px, again), n);
    assert_memory_equal(hash, again, n);
    /* the first factor of L along x carries the ramp's brightness change; P (yellow-blue)
     * and Q (red-green) are non-trivial: not a flat colour */
    assert_true(hash[3] >> 3 != 0 || hash[4] != 0);
}

static void test_sizes_it_does_not_take(void **s)
{
    (void)s;
    uint8_t hash[THUMBHASH_MAX], px[4] = {0};
    assert_int_equal(thumbhash_encode(0, 1, px, hash), 0);
    assert_int_equal(thumbhash_encode(101, 1, px, hash), 0);
}

static void test_kinds_come_from_the_bytes_not_the_name(void **s)
{
    (void)s;
    const struct {
        const char *b;
        size_t n;
        thumb_kind k;
    } cases[] = {
        {"\xff\xd8\xff\xe1\0\0Exif", 10, TH_JPEG},
        {"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, TH_PNG},
        {"GIF89a\1\0\1\0", 10, TH_GIF},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, TH_WEBP},
        {"II*\0\x08\0\0\0", 8, TH_TIFF},
        {"MM\0*\0\0\0\x08", 8, TH_TIFF},
        {"BM\x36\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\1\0\0\0\1\0\0\0", 26, TH_BMP},
        {"\0\0\0\x18" "ftypheic\0\0\0\0", 16, TH_HEIC},
        {"\0\0\0\x18" "ftypavif\0\0\0\0", 16, TH_NONE},
        {"\0\0\0\x18" "ftypisom\0\0\0\0", 16, TH_NONE},
        {"%PDF-1.4\n", 9, TH_PDF},
        {"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>", 62, TH_SVG},
        {"# Title\n\nSome text, caf\xc3\xa9.\n", 26, TH_TEXT},
        {"int main(void) { return 0; }\n", 29, TH_TEXT},
        {"PK\3\4\0\0", 6, TH_NONE},
        {"text\0with a NUL", 15, TH_NONE},
        {"bad \xff utf-8", 11, TH_NONE},
        {"", 0, TH_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(thumb_sniff((const uint8_t *)cases[i].b, cases[i].n), cases[i].k);
    /* a multi-byte character cut by the window's end is still text */
    assert_int_equal(thumb_sniff((const uint8_t *)"ab\xc3", 3), TH_TEXT);
    assert_string_equal(thumb_kind_class(TH_HEIC), "image");
    assert_string_equal(thumb_kind_class(TH_SVG), "file");
    assert_string_equal(thumb_kind_coder(TH_PDF) ? "set" : "null", "null"); /* never through ImageMagick */
}

static void test_webp_only_when_the_client_names_it(void **s)
{
    (void)s;
    assert_true(thumb_accepts_webp("image/avif,image/webp,*/*"));
    assert_true(thumb_accepts_webp("text/html, image/webp;q=0.8"));
    assert_false(thumb_accepts_webp("image/webp;q=0"));
    assert_false(thumb_accepts_webp("image/png,image/*;q=0.8,*/*;q=0.5"));
    assert_false(thumb_accepts_webp("image/webpx"));
    assert_false(thumb_accepts_webp(""));
    assert_false(thumb_accepts_webp(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_solid_picture_hashes_to_its_colour_and_shape),
        cmocka_unit_test(test_transparency_sets_the_alpha_flag_and_average),
        cmocka_unit_test(test_a_known_picture_always_gives_the_same_hash),
        cmocka_unit_test(test_sizes_it_does_not_take),
        cmocka_unit_test(test_kinds_come_from_the_bytes_not_the_name),
        cmocka_unit_test(test_webp_only_when_the_client_names_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
