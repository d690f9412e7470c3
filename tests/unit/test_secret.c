/* Unit tests: secret references and the built-in file: key wrapping (kernel/secret.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../kernel/kernel.h"

static char dir[] = "/tmp/mbyte-secret-XXXXXX";

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_parse_accepts_the_three_forms(void **s)
{
    (void)s;
    secret_ref r;
    mb_err e = {0};
    assert_int_equal(secret_ref_parse("env:MBYTE_S3_SECRET", &r, &e), 0);
    assert_string_equal(r.scheme, "env");
    assert_string_equal(r.rest, "MBYTE_S3_SECRET");
    assert_int_equal(secret_ref_parse("file:/etc/mbyte/key", &r, &e), 0);
    assert_int_equal(secret_ref_parse("vault:secret/app/web#password@7", &r, &e), 0);
    assert_string_equal(r.path, "secret/app/web");
    assert_string_equal(r.key, "password");
    assert_int_equal(r.version, 7);
    assert_int_equal(secret_ref_parse("vault:secret/mbyte#greeting", &r, &e), 0);
    assert_int_equal(r.version, 0);
}

static void test_parse_refuses_with_a_sentence_naming_the_reference(void **s)
{
    (void)s;
    const char *bad[] = {"env:", "env:1X", "env:A-B", "file:relative", "vault:secret#k", "vault:secret/x#",
                         "vault:secret/../x#k", "vault:secret//x#k", "vault:secret/x/#k", "vault:secret/x#k@0",
                         "vault:secret/x#k@z", "vault:/x#k", "vault:secret/a b#k", "nocolon", ":x", NULL};
    for (int i = 0; bad[i]; i++) {
        secret_ref r;
        mb_err e = {0};
        assert_int_equal(secret_ref_parse(bad[i], &r, &e), MB_EINVAL);
        assert_true(e.msg[0]);
    }
}

static void test_only_known_schemes_are_references(void **s)
{
    (void)s;
    assert_true(secret_is_ref("env:X"));
    assert_true(secret_is_ref("vault:secret/x#k"));
    assert_false(secret_is_ref("https://example.com"));
    assert_false(secret_is_ref("transit:key")); /* a key reference, not a secret reference */
    assert_false(secret_is_ref("hello"));
}

static void test_file_refused_unless_owner_only_and_error_never_holds_the_value(void **s)
{
    (void)s;
    char path[128], ref[160], *v = NULL;
    snprintf(path, sizeof path, "%s/pw", dir);
    snprintf(ref, sizeof ref, "file:%s", path);
    write_file(path, "hunter2-value\n", 14, 0644);
    mb_err e = {0};
    assert_int_equal(secret_resolve("test", ref, &v, &e), MB_EPERM);
    assert_non_null(strstr(e.msg, "chmod 600"));
    assert_null(strstr(e.msg, "hunter2"));
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(secret_resolve("test", ref, &v, &e), 0);
    assert_string_equal(v, "hunter2-value"); /* one trailing newline dropped */
    secret_free(v);
}

static void test_tree_swaps_references_at_any_depth(void **s)
{
    (void)s;
    setenv("MBYTE_UNIT_SECRET", "deep-value", 1);
    json_t *doc = json_pack("{s:s, s:{s:[s, s]}, s:s}", "a", "env:MBYTE_UNIT_SECRET", "b", "c", "x",
                            "env:MBYTE_UNIT_SECRET", "plain", "https://x");
    json_t *refs = json_array();
    int n = 0;
    mb_err e = {0};
    assert_int_equal(secret_resolve_tree("test", "t.yaml", doc, NULL, refs, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(json_string_value(json_object_get(doc, "a")), "deep-value");
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(doc, "b"), "c"), 1)),
                        "deep-value");
    assert_string_equal(json_string_value(json_object_get(doc, "plain")), "https://x");
    assert_int_equal(json_array_size(refs), 2);
    char *dump = json_dumps(refs, 0);
    assert_null(strstr(dump, "deep-value"));
    free(dump);
    json_decref(refs);
    json_decref(doc);
    json_t *bad = json_pack("{s:s}", "k", "env:MBYTE_UNIT_UNSET");
    assert_int_equal(secret_resolve_tree("test", "t.yaml", bad, NULL, NULL, NULL, &e), MB_ENOENT);
    assert_non_null(strstr(e.msg, "t.yaml:1: k: env:MBYTE_UNIT_UNSET"));
    json_decref(bad);
}

static void test_file_key_wraps_unwraps_and_rewraps(void **s)
{
    (void)s;
    char path[128], ref[160];
    uint8_t mk[32], key[32], back[32];
    randombytes_buf(mk, sizeof mk);
    snprintf(path, sizeof path, "%s/master.key", dir);
    snprintf(ref, sizeof ref, "file:%s", path);
    write_file(path, mk, sizeof mk, 0600);
    char *w = NULL, *w2 = NULL;
    mb_err e = {0};
    assert_int_equal(key_datakey(ref, key, sizeof key, &w, &e), 0);
    assert_int_equal(strncmp(w, "mbkw1:", 6), 0);
    assert_int_equal(key_unwrap(ref, w, back, sizeof back, &e), 0);
    assert_memory_equal(key, back, sizeof key);
    assert_int_equal(key_rewrap(ref, w, &w2, &e), 0);
    assert_string_not_equal(w, w2); /* a fresh nonce */
    assert_int_equal(key_unwrap(ref, w2, back, sizeof back, &e), 0);
    assert_memory_equal(key, back, sizeof key);
    assert_int_equal(key_unwrap(ref, w, back, 16, &e), MB_EINVAL); /* wrong length */
    w2[10] ^= 1;
    assert_int_not_equal(key_unwrap(ref, w2, back, sizeof back, &e), 0); /* tampered */
    assert_int_equal(key_rotate(ref, &e), MB_EUNSUPP);
    /* another master key does not open it */
    randombytes_buf(mk, sizeof mk);
    write_file(path, mk, sizeof mk, 0600);
    assert_int_equal(key_unwrap(ref, w, back, sizeof back, &e), MB_EINTEGRITY);
    free(w2);
    write_file(path, mk, 31, 0600);
    assert_int_equal(key_wrap(ref, key, sizeof key, &w2, &e), MB_EINVAL);
    assert_non_null(strstr(e.msg, "32"));
    assert_int_equal(key_wrap("transit:x", key, sizeof key, &w2, &e), MB_ENOENT); /* no provider */
    free(w);
    free(w2);
}

int main(void)
{
    assert_non_null(mkdtemp(dir));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts_the_three_forms),
        cmocka_unit_test(test_parse_refuses_with_a_sentence_naming_the_reference),
        cmocka_unit_test(test_only_known_schemes_are_references),
        cmocka_unit_test(test_file_refused_unless_owner_only_and_error_never_holds_the_value),
        cmocka_unit_test(test_tree_swaps_references_at_any_depth),
        cmocka_unit_test(test_file_key_wraps_unwraps_and_rewraps),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    secret_fini();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    return rc;
}
