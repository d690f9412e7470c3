/* Unit tests: kernel/jsonw.c writes what json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes,
 * byte for byte, for every kind of value and for random trees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/kernel.h"

static void same(const json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = 12345;
    char *got = jsonw_dump(v, &n);
    assert_non_null(want);
    assert_int_equal(n, strlen(want));
    if (memcmp(got, want, n + 1))
        fail_msg("jsonw:  %s\njansson: %s", got, want);
    free(want);
    free(got);
}

static void test_every_kind_of_scalar(void **s)
{
    (void)s;
    json_t *v[] = {json_null(), json_true(), json_false(), json_integer(0), json_integer(7), json_integer(-1),
                   json_integer(INT64_MAX), json_integer(INT64_MIN), json_integer(1000000000000LL),
                   json_real(0.5), json_real(-3.0), json_real(1e300), json_real(0.1), json_string(""),
                   json_string("plain"), json_string("a/b"), json_string("qu\"ote back\\slash"),
                   json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), json_stringn("nul\0in", 6),
                   json_string("\x7f del")};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        same(v[i]);
        json_decref(v[i]);
    }
}

static void test_every_control_character_is_escaped_as_jansson_does(void **s)
{
    (void)s;
    for (int c = 0; c < 0x20; c++) {
        char str[3] = {'x', (char)c, 'y'};
        json_t *v = json_stringn(str, 3);
        same(v);
        json_t *o = json_object(); /* in a key too */
        json_object_setn_new(o, str, 3, json_integer(c));
        same(o);
        json_decref(o);
        json_decref(v);
    }
}

static void test_containers_keep_insertion_order(void **s)
{
    (void)s;
    json_t *v = json_pack("{s:{}, s:[], s:[i,s,{s:b}], s:{s:n, s:I}}", "z", "a", "m", 1, "two", "k", 1, "nested",
                          "x", "y", (json_int_t)-42);
    same(v);
    json_t *empty_key = json_object();
    json_object_set_new(empty_key, "", json_string("empty key"));
    same(empty_key);
    json_decref(empty_key);
    json_decref(v);
}

/* A small deterministic generator: the same trees on every run. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void random_text(char *buf, size_t *n)
{
    static const char *pieces[] = {"a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\xc3\xa9",
                                   "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f", "{", "}", ",", ":", "u"};
    size_t len = next() % 12, o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = pieces[next() % (sizeof pieces / sizeof pieces[0])];
        memcpy(buf + o, p, strlen(p));
        o += strlen(p);
    }
    if (next() % 16 == 0)
        buf[o++] = 0; /* a NUL inside */
    *n = o;
}

static json_t *random_tree(int depth)
{
    char text[64];
    size_t n;
    switch (next() % (depth > 3 ? 6 : 8)) {
    case 0: return json_null();
    case 1: return json_boolean(next() & 1);
    case 2: return json_integer((json_int_t)next() >> (next() % 64));
    case 3: return json_integer(-(json_int_t)(next() % 100000));
    case 4: return json_real((double)(int64_t)next() / (double)(next() | 1));
    case 5: random_text(text, &n); return json_stringn(text, n);
    case 6: {
        json_t *a = json_array();
        for (uint64_t i = 0, k = next() % 5; i < k; i++)
            json_array_append_new(a, random_tree(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (uint64_t i = 0, k = next() % 6; i < k; i++) {
            random_text(text, &n);
            json_object_setn_new(o, text, n, random_tree(depth + 1));
        }
        return o;
    }
    }
}

static void test_ten_thousand_random_trees(void **s)
{
    (void)s;
    for (int i = 0; i < 10000; i++) {
        json_t *v = random_tree(0);
        same(v);
        json_decref(v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_kind_of_scalar),
        cmocka_unit_test(test_every_control_character_is_escaped_as_jansson_does),
        cmocka_unit_test(test_containers_keep_insertion_order),
        cmocka_unit_test(test_ten_thousand_random_trees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
