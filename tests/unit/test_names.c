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

/* Formatting characters that can make a name show as something it is not ("invoice<RLO>gpj.exe"
 * shows as "invoiceexe.jpg") are refused when a name is created; each refusal names the
 * character. Zero-width joiners, non-joiners and spaces and the bidi marks stay allowed: scripts
 * (Persian, Indic, emoji sequences, Thai) need them, they cannot reorder text, and the web page
 * shows them with a visible marker. */
static void creatable_refused(const char *name, const char *what)
{
    mb_err err = {0};
    assert_int_equal(fs_name_creatable(name, &err), MB_EINVAL);
    assert_int_equal(err.code, MB_EINVAL);
    if (!strstr(err.msg, what))
        fail_msg("'%s' does not mention '%s'", err.msg, what);
}

static void test_bidi_controls_and_bom_are_refused_at_creation_by_name(void **s)
{
    (void)s;
    creatable_refused("invoice\xe2\x80\xaegpj.exe", "U+202E RIGHT-TO-LEFT OVERRIDE");
    creatable_refused("\xe2\x80\xadx", "U+202D LEFT-TO-RIGHT OVERRIDE");
    creatable_refused("a\xe2\x80\xaa" "b", "U+202A LEFT-TO-RIGHT EMBEDDING");
    creatable_refused("a\xe2\x80\xab" "b", "U+202B RIGHT-TO-LEFT EMBEDDING");
    creatable_refused("a\xe2\x80\xac", "U+202C POP DIRECTIONAL FORMATTING");
    creatable_refused("a\xe2\x81\xa6" "b", "U+2066 LEFT-TO-RIGHT ISOLATE");
    creatable_refused("a\xe2\x81\xa7" "b", "U+2067 RIGHT-TO-LEFT ISOLATE");
    creatable_refused("a\xe2\x81\xa8" "b", "U+2068 FIRST STRONG ISOLATE");
    creatable_refused("a\xe2\x81\xa9" "b", "U+2069 POP DIRECTIONAL ISOLATE");
    creatable_refused("\xef\xbb\xbfreport.txt", "U+FEFF");
    creatable_refused("a\xe2\x80\xa8" "b", "U+2028 LINE SEPARATOR");
    creatable_refused("a\xe2\x80\xa9" "b", "U+2029 PARAGRAPH SEPARATOR");
    creatable_refused("a\xe2\x81\xaa" "b", "U+206A");
    creatable_refused("x\xe2\x80\xae", "name: may not contain");
}

static void test_joiners_marks_and_ordinary_names_may_be_created(void **s)
{
    (void)s;
    mb_err err = {0};
    const char *ok[] = {
        "report.txt",
        "\xd9\x85\xdb\x8c\xe2\x80\x8c\xd8\xb1\xd9\x88\xd9\x85", /* Persian "mi-ravam": ZWNJ */
        "\xe0\xa4\x95\xe0\xa5\x8d\xe2\x80\x8d\xe0\xa4\xb7",               /* Devanagari with ZWJ */
        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7.png", /* family emoji */
        "a\xe2\x80\x8b" "b",                                                 /* ZWSP (Thai word breaks) */
        "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d\xe2\x80\x8e.txt",       /* Hebrew + LRM */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (fs_name_creatable(ok[i], &err))
            fail_msg("'%s' refused: %s", ok[i], err.msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_rule_is_refused_with_its_own_sentence),
        cmocka_unit_test(test_names_up_to_255_bytes_pass_unchanged),
        cmocka_unit_test(test_decomposed_names_are_normalised_to_nfc),
        cmocka_unit_test(test_a_name_that_is_too_long_only_before_nfc_is_accepted),
        cmocka_unit_test(test_paths_are_split_normalised_and_bounded),
        cmocka_unit_test(test_bidi_controls_and_bom_are_refused_at_creation_by_name),
        cmocka_unit_test(test_joiners_marks_and_ordinary_names_may_be_created),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
