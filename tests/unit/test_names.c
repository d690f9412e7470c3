/* Unit tests: the rules for names and paths in a store (kernel/fs.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/fs.h"

static void refused(const char *in, size_t n, const char *rule)
{
    char out[FS_NAME_MAX + 1];
    mb_err err = {0};
    assert_int_equal(fs_name_normalize(in, n, out, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    if (!strstr(err.msg, rule))
        fail_msg("'%s' does not mention '%s'", err.msg, rule);
}

static void test_each_rule_is_refused_with_its_own_sentence(void **s)
{
    (void)s;
    refused("", 0, "may not be empty");
    refused(".", 1, "may not be '.'");
    refused("..", 2, "may not be '..'");
    refused("a/b", 3, "may not contain '/'");
    refused("a\0b", 3, "may not contain NUL");
    refused("a\nb", 3, "control characters");
    refused("a\x7f", 2, "control characters");
    refused("a\xc2\x85", 3, "control characters"); /* U+0085, a C1 control */
    refused("\xff\xfe", 2, "not valid UTF-8");
    refused("\xc0\xaf", 2, "not valid UTF-8"); /* overlong '/' */
    char big[300];
    memset(big, 'a', sizeof big);
    refused(big, 256, "at most 255 bytes");
}

static void test_names_up_to_255_bytes_pass_unchanged(void **s)
{
    (void)s;
    char big[256], out[FS_NAME_MAX + 1];
    memset(big, 'a', 255);
    big[255] = 0;
    mb_err err = {0};
    assert_int_equal(fs_name_normalize(big, 255, out, &err), 0);
    assert_string_equal(out, big);
    assert_int_equal(fs_name_normalize("...", 3, out, &err), 0); /* only '.' and '..' are special */
    assert_string_equal(out, "...");
    assert_int_equal(fs_name_normalize("r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x93\x84.pdf", 15, out, &err), 0);
}

static void test_decomposed_names_are_normalised_to_nfc(void **s)
{
    (void)s;
    char out[FS_NAME_MAX + 1];
    mb_err err = {0};
    assert_int_equal(fs_name_normalize("e\xcc\x81", 3, out, &err), 0); /* e + U+0301 */
    assert_string_equal(out, "\xc3\xa9");                              /* é */
    /* Hangul jamo compose algorithmically: U+1112 U+1161 U+11AB -> U+D55C */
    assert_int_equal(fs_name_normalize("\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", 9, out, &err), 0);
    assert_string_equal(out, "\xed\x95\x9c");
    /* Combining marks are put in canonical order: a + U+0323 + U+0302 from a + U+0302 + U+0323 */
    assert_int_equal(fs_name_normalize("a\xcc\x82\xcc\xa3", 5, out, &err), 0);
    assert_string_equal(out, "\xe1\xba\xad"); /* U+1EAD */
}

static void test_a_name_that_is_too_long_only_before_nfc_is_accepted(void **s)
{
    (void)s;
    /* 128 x "e\u0301" is 384 bytes decomposed and 256 composed: still refused; 127 passes. */
    char in[400], out[FS_NAME_MAX + 1];
    size_t n = 0;
    for (int i = 0; i < 127; i++) {
        memcpy(in + n, "e\xcc\x81", 3);
        n += 3;
    }
    mb_err err = {0};
    assert_int_equal(fs_name_normalize(in, n, out, &err), 0);
    assert_int_equal(strlen(out), 254);
    memcpy(in + n, "e\xcc\x81", 3);
    refused(in, n + 3, "at most 255 bytes");
}

static void test_paths_are_split_normalised_and_bounded(void **s)
{
    (void)s;
    char *out = NULL;
    mb_err err = {0};
    assert_int_equal(fs_path_normalize("/a//b/e\xcc\x81/", 10, &out, &err), 0);
    assert_string_equal(out, "a/b/\xc3\xa9");
    free(out);
    assert_int_equal(fs_path_normalize("/", 1, &out, &err), 0);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(fs_path_normalize("a/../b", 6, &out, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "'..'"));
    char deep[200] = "";
    for (int i = 0; i < 65; i++)
        strcat(deep, "a/");
    assert_int_equal(fs_path_normalize(deep, strlen(deep), &out, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "64 levels"));
    char *longp = malloc(5000);
    memset(longp, 'a', 5000);
    for (int i = 200; i < 5000; i += 200)
        longp[i] = '/';
    assert_int_equal(fs_path_normalize(longp, 4097, &out, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "4096 bytes"));
    free(longp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_rule_is_refused_with_its_own_sentence),
        cmocka_unit_test(test_names_up_to_255_bytes_pass_unchanged),
        cmocka_unit_test(test_decomposed_names_are_normalised_to_nfc),
        cmocka_unit_test(test_a_name_that_is_too_long_only_before_nfc_is_accepted),
        cmocka_unit_test(test_paths_are_split_normalised_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
