/* Unit tests: the tus header parsers (kernel/tus.c): Upload-Metadata, Upload-Checksum,
 * upload ids and the Upload-Expires date format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "../../kernel/kernel.h"

static void test_metadata_pairs_decode_to_strings(void **s)
{
    (void)s;
    json_t *m = NULL;
    mb_err err = {0};
    /* store=1, path=/a b/ü.txt, an empty-valued flag, spaces around pairs, unpadded base64 */
    assert_int_equal(tus_parse_metadata("store MQ==, path L2EgYi/DvC50eHQ=,is_confidential ,name YWI", &m, &err), 0);
    assert_string_equal(json_string_value(json_object_get(m, "store")), "1");
    assert_string_equal(json_string_value(json_object_get(m, "path")), "/a b/\xc3\xbc.txt");
    assert_string_equal(json_string_value(json_object_get(m, "is_confidential")), "");
    assert_string_equal(json_string_value(json_object_get(m, "name")), "ab");
    assert_int_equal(json_object_size(m), 4);
    json_decref(m);
    assert_int_equal(tus_parse_metadata(NULL, &m, &err), 0);
    assert_int_equal(json_object_size(m), 0);
    json_decref(m);
    assert_int_equal(tus_parse_metadata("", &m, &err), 0);
    json_decref(m);
}

static void test_bad_metadata_is_refused_with_a_reason(void **s)
{
    (void)s;
    json_t *m = NULL;
    mb_err err = {0};
    assert_int_equal(tus_parse_metadata("a MQ==,a Mg==", &m, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    assert_int_equal(tus_parse_metadata("a !!!notbase64", &m, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "base64"));
    assert_int_equal(tus_parse_metadata("a AA==", &m, &err), MB_EINVAL); /* a NUL byte */
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_int_equal(tus_parse_metadata("a /w==", &m, &err), MB_EINVAL); /* 0xff */
    assert_int_equal(tus_parse_metadata(",", &m, &err), MB_EINVAL);
    assert_int_equal(tus_parse_metadata("k\x01y MQ==", &m, &err), MB_EINVAL);
    char *big = malloc(9000);
    memset(big, 'a', 8999);
    big[8999] = 0;
    assert_int_equal(tus_parse_metadata(big, &m, &err), MB_EINVAL);
    free(big);
}

static void test_checksum_header_gives_algorithm_and_digest(void **s)
{
    (void)s;
    uint8_t d[32];
    size_t n = 0;
    int algo = 0;
    mb_err err = {0};
    /* sha1("hello") */
    assert_int_equal(tus_parse_checksum("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", &algo, d, &n, &err), 0);
    assert_int_equal(algo, 1);
    assert_int_equal(n, 20);
    assert_int_equal(d[0], 0xaa);
    assert_int_equal(d[19], 0x4d);
    /* sha256("hello") */
    assert_int_equal(tus_parse_checksum("sha256 LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=", &algo, d, &n, &err), 0);
    assert_int_equal(algo, 256);
    assert_int_equal(n, 32);
    assert_int_equal(d[0], 0x2c);
}

static void test_bad_checksum_headers_are_refused(void **s)
{
    (void)s;
    uint8_t d[32];
    size_t n = 0;
    int algo = 0;
    mb_err err = {0};
    assert_int_equal(tus_parse_checksum("md5 XUFAKrxLKna5cZ2REBfFkg==", &algo, d, &n, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "not supported"));
    assert_int_equal(tus_parse_checksum("sha1", &algo, d, &n, &err), MB_EINVAL);
    assert_int_equal(tus_parse_checksum("sha1 aGVsbG8=", &algo, d, &n, &err), MB_EINVAL); /* 5 bytes */
    assert_int_equal(tus_parse_checksum("sha256 qvTGHdzF6KLavt4PO0gs2a6pQ00=", &algo, d, &n, &err), MB_EINVAL);
    assert_int_equal(tus_parse_checksum("sha1 ***", &algo, d, &n, &err), MB_EINVAL);
    assert_int_equal(tus_parse_checksum(NULL, &algo, d, &n, &err), MB_EINVAL);
}

static void test_upload_ids_are_exactly_32_lower_hex(void **s)
{
    (void)s;
    assert_true(tus_valid_id("0123456789abcdef0123456789abcdef"));
    assert_false(tus_valid_id("0123456789ABCDEF0123456789abcdef"));
    assert_false(tus_valid_id("0123456789abcdef0123456789abcde"));
    assert_false(tus_valid_id("0123456789abcdef0123456789abcdef0"));
    assert_false(tus_valid_id("../3456789abcdef0123456789abcdef"));
    assert_false(tus_valid_id(""));
    assert_false(tus_valid_id(NULL));
}

static void test_expiry_dates_are_rfc9110_imf_fixdate(void **s)
{
    (void)s;
    char d[40];
    tus_http_date(784111777, d);
    assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT");
    tus_http_date(0, d);
    assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_pairs_decode_to_strings),
        cmocka_unit_test(test_bad_metadata_is_refused_with_a_reason),
        cmocka_unit_test(test_checksum_header_gives_algorithm_and_digest),
        cmocka_unit_test(test_bad_checksum_headers_are_refused),
        cmocka_unit_test(test_upload_ids_are_exactly_32_lower_hex),
        cmocka_unit_test(test_expiry_dates_are_rfc9110_imf_fixdate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
