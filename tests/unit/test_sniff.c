/* Unit tests: content types from first bytes (kernel/sniff.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include "../../kernel/kernel.h"

static const char *type_of(const void *p, size_t n, bool *container)
{
    bool c;
    const char *t = sniff_type(p, n, container ? container : &c);
    return t ? t : "(none)";
}

static void test_common_formats_are_named_by_their_signature(void **s)
{
    (void)s;
    assert_string_equal(type_of("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, NULL), "image/png");
    assert_string_equal(type_of("\xff\xd8\xff\xe0\0\x10JFIF", 10, NULL), "image/jpeg");
    assert_string_equal(type_of("GIF89a\1\0\1\0", 10, NULL), "image/gif");
    assert_string_equal(type_of("RIFF\0\0\0\0WEBPVP8 ", 16, NULL), "image/webp");
    assert_string_equal(type_of("RIFF\0\0\0\0WAVEfmt ", 16, NULL), "audio/wav");
    assert_string_equal(type_of("%PDF-1.7\n", 9, NULL), "application/pdf");
    assert_string_equal(type_of("\x1f\x8b\x08\0", 4, NULL), "application/gzip");
    assert_string_equal(type_of("\0\0\0\x20" "ftypisom", 12, NULL), "video/mp4");
    assert_string_equal(type_of("\0\0\0\x18" "ftypheic", 12, NULL), "image/heic");
    assert_string_equal(type_of("SQLite format 3\0", 16, NULL), "application/vnd.sqlite3");
    assert_string_equal(type_of("wOF2\0\1\0\0", 8, NULL), "font/woff2");
}

static void test_tar_is_found_at_offset_257_and_not_before(void **s)
{
    (void)s;
    char tar[512] = "name.txt";
    memcpy(tar + 257, "ustar", 5);
    assert_string_equal(type_of(tar, sizeof tar, NULL), "application/x-tar");
    assert_string_equal(type_of(tar, 260, NULL), "(none)"); /* too short to hold the magic */
}

static void test_zip_and_ole_are_containers_an_extension_may_refine(void **s)
{
    (void)s;
    bool c = false;
    assert_string_equal(type_of("PK\3\4\x14\0", 6, &c), "application/zip");
    assert_true(c);
    assert_string_equal(type_of("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8, &c), "application/x-ole-storage");
    assert_true(c);
    assert_string_equal(type_of("%PDF-", 5, &c), "application/pdf");
    assert_false(c);
}

static void test_html_and_random_bytes_are_not_sniffed(void **s)
{
    (void)s;
    const char *html = "<!DOCTYPE html><script>alert(1)</script>";
    assert_string_equal(type_of(html, strlen(html), NULL), "(none)");
    assert_string_equal(type_of("\x13\x37\xca\xfe\x99", 5, NULL), "(none)");
    assert_string_equal(type_of("", 0, NULL), "(none)");
}

static void test_text_is_bytes_without_binary_data_bytes(void **s)
{
    (void)s;
    const char *t = "line one\r\n\tcaf\xc3\xa9 \x1b[1mbold\x1b[0m\f\n";
    assert_true(sniff_is_text((const uint8_t *)t, strlen(t)));
    assert_false(sniff_is_text((const uint8_t *)"a\0b", 3));
    assert_false(sniff_is_text((const uint8_t *)"a\x01", 2));
    assert_false(sniff_is_text((const uint8_t *)"a\x1f", 2));
    assert_true(sniff_is_text((const uint8_t *)"\xff\xfeh\0i\0", 6)); /* UTF-16 with its BOM */
    assert_false(sniff_is_text((const uint8_t *)"", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_formats_are_named_by_their_signature),
        cmocka_unit_test(test_tar_is_found_at_offset_257_and_not_before),
        cmocka_unit_test(test_zip_and_ole_are_containers_an_extension_may_refine),
        cmocka_unit_test(test_html_and_random_bytes_are_not_sniffed),
        cmocka_unit_test(test_text_is_bytes_without_binary_data_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
