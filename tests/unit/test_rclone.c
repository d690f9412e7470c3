/* The rclone module's readers of rcd's answers (modules/rclone/rc_util.c): operations/list and
 * operations/stat as rclone v1.60's rcd sends them (tab-indented JSON), the ModTime forms it
 * writes (UTC with nanoseconds, or a local offset), and the encoding of names put in URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../modules/rclone/rc_util.h"

/* rcd's answer to operations/list of an aa/ directory (filesOnly, noMimeType). */
static const char list_answer[] =
    "{\n\t\"list\": [\n\t\t{\n\t\t\t\"Path\": \"14/143d59659c2301463e8786b81d7a3bec9c643b6d2a4bb015ddd931c127c4e41b\",\n"
    "\t\t\t\"Name\": \"143d59659c2301463e8786b81d7a3bec9c643b6d2a4bb015ddd931c127c4e41b\",\n"
    "\t\t\t\"Size\": 300000,\n\t\t\t\"ModTime\": \"2026-12-04T07:01:35.747353545Z\",\n\t\t\t\"IsDir\": false\n"
    "\t\t},\n\t\t{\"Path\": \"14/x\", \"Name\": \"x\", \"Size\": -1, \"ModTime\": \"2026-12-04T08:01:35+01:00\", "
    "\"IsDir\": true}\n\t]\n}\n";

typedef struct seen {
    int n;
    char names[4][80];
    uint64_t sizes[4];
    int64_t mtimes[4];
    bool dirs[4];
} seen;

static int note(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud)
{
    seen *s = ud;
    if (s->n < 4) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
        s->sizes[s->n] = size;
        s->mtimes[s->n] = mtime;
        s->dirs[s->n] = dir;
    }
    s->n++;
    return 0;
}

static int stop_at_first(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud)
{
    (void)name, (void)size, (void)mtime, (void)dir;
    ++*(int *)ud;
    return 7;
}

static void test_a_list_answer_gives_names_sizes_times_and_directories(void **state)
{
    (void)state;
    seen s = {0};
    assert_int_equal(rcu_list_parse(list_answer, strlen(list_answer), note, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.names[0], "143d59659c2301463e8786b81d7a3bec9c643b6d2a4bb015ddd931c127c4e41b");
    assert_int_equal(s.sizes[0], 300000);
    assert_int_equal(s.mtimes[0], 1796367695); /* 2026-12-04T07:01:35Z */
    assert_false(s.dirs[0]);
    assert_string_equal(s.names[1], "x");
    assert_int_equal(s.sizes[1], 0); /* a directory's -1 */
    assert_int_equal(s.mtimes[1], 1796367695); /* the same instant written with +01:00 */
    assert_true(s.dirs[1]);
    int n = 0;
    assert_int_equal(rcu_list_parse(list_answer, strlen(list_answer), stop_at_first, &n), 7);
    assert_int_equal(n, 1);
}

static void test_what_is_not_a_list_answer_is_refused_and_odd_members_skipped(void **state)
{
    (void)state;
    seen s = {0};
    static const char *const bad[] = {"", "[]", "{\"list\": {}}", "{\"error\": \"directory not found\"}",
                                      "{\"list\": [", "null",
                                      "{\"list\": [{\"Name\": \"a\\u0000b\"}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(rcu_list_parse(bad[i], strlen(bad[i]), note, &s), -1);
    static const char odd[] = "{\"list\": [1, null, {\"Name\": 5}, {\"Name\": \"ok\"}]}";
    assert_int_equal(rcu_list_parse(odd, strlen(odd), note, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], "ok");
}

static void test_a_stat_answer_is_a_file_with_its_size_or_not_there(void **state)
{
    (void)state;
    uint64_t size = 0;
    int64_t mtime = 0;
    static const char item[] = "{\n\t\"item\": {\n\t\t\"Path\": \"14/143d\",\n\t\t\"Name\": \"143d\",\n"
                               "\t\t\"Size\": 300000,\n\t\t\"ModTime\": \"2026-12-04T07:01:35.747353545Z\",\n"
                               "\t\t\"IsDir\": false\n\t}\n}\n";
    assert_int_equal(rcu_stat_parse(item, strlen(item), &size, &mtime), 1);
    assert_int_equal(size, 300000);
    assert_int_equal(mtime, 1796367695);
    static const char none[] = "{\n\t\"item\": null\n}\n";
    assert_int_equal(rcu_stat_parse(none, strlen(none), &size, &mtime), 0);
    static const char *const bad[] = {"{}", "{\"item\": {\"Name\": \"x\"}}", "{\"item\": {\"Size\": 1, \"IsDir\": true}}",
                                      "null", "{\"item\": 3}", "{\"item\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(rcu_stat_parse(bad[i], strlen(bad[i]), NULL, NULL), -1);
}

static void test_times_rclone_writes_and_what_is_not_one(void **state)
{
    (void)state;
    assert_int_equal(rcu_time("1970-01-01T00:00:00Z", 20), 0);
    assert_int_equal(rcu_time("2026-12-04T07:01:35Z", 20), 1796367695);
    assert_int_equal(rcu_time("2026-12-04T02:01:35.5-05:00", 27), 1796367695);
    assert_int_equal(rcu_time("2026-12-04T07:01:35", 19), 0);    /* no zone */
    assert_int_equal(rcu_time("2026-12-04T07:01:35Zjunk", 24), 0);
    assert_int_equal(rcu_time("2026-12-04T07:01:35+1:00", 24), 0);
    assert_int_equal(rcu_time("2026-12-04T07:01:35Z", 10), 0);   /* cut */
}

static void test_names_are_percent_encoded_and_never_overflow(void **state)
{
    (void)state;
    char out[64];
    assert_true(rcu_encode("gdrive:mbyte chunks/é", false, out, sizeof out));
    assert_string_equal(out, "gdrive%3Ambyte%20chunks%2F%C3%A9");
    assert_true(rcu_encode("c/14/143d", true, out, sizeof out));
    assert_string_equal(out, "c/14/143d");
    assert_true(rcu_encode("a&remote=x", false, out, sizeof out)); /* cannot add a query parameter */
    assert_string_equal(out, "a%26remote%3Dx");
    assert_false(rcu_encode("::::", false, out, 12)); /* 12 bytes and the NUL do not fit in 12 */
    assert_true(rcu_encode("::::", false, out, 13));
    assert_false(rcu_encode("", false, out, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_list_answer_gives_names_sizes_times_and_directories),
        cmocka_unit_test(test_what_is_not_a_list_answer_is_refused_and_odd_members_skipped),
        cmocka_unit_test(test_a_stat_answer_is_a_file_with_its_size_or_not_there),
        cmocka_unit_test(test_times_rclone_writes_and_what_is_not_one),
        cmocka_unit_test(test_names_are_percent_encoded_and_never_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
