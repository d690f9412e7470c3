/*
 * test_retention.c — the versioning module's thinning rule (modules/versioning/retention.c):
 * every version of the last day, one an hour for a month, one a day after, within the
 * maximum count and age; the current version always stays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "retention.h"

#define NOW 1700000000LL
#define H 3600LL
#define D 86400LL

static size_t kept(const bool *keep, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += keep[i];
    return k;
}

static void test_every_version_of_the_last_day_is_kept(void **s)
{
    (void)s;
    retention_item v[50];
    bool keep[50];
    for (int i = 0; i < 50; i++)
        v[i] = (retention_item){(uint64_t)i + 1, NOW - (50 - i) * 60, i == 49};
    assert_int_equal(retention_select(v, 50, NOW, 0, 0, keep), 0);
    assert_int_equal(kept(keep, 50), 50);
}

static void test_within_a_month_one_version_per_hour_the_newest(void **s)
{
    (void)s;
    /* Three versions inside one clock hour two days ago, plus the current one. */
    int64_t base = ((NOW - 2 * D) / H) * H;
    retention_item v[4] = {{1, base + 60, false}, {2, base + 600, false}, {3, base + 3000, false}, {4, NOW, true}};
    bool keep[4];
    assert_int_equal(retention_select(v, 4, NOW, 0, 0, keep), 2);
    assert_false(keep[0]);
    assert_false(keep[1]);
    assert_true(keep[2]);
    assert_true(keep[3]);
}

static void test_after_a_month_one_version_per_day(void **s)
{
    (void)s;
    int64_t day = ((NOW - 40 * D) / D) * D;
    retention_item v[5] = {{1, day + 1 * H, false}, {2, day + 5 * H, false}, {3, day + 20 * H, false},
                           {4, day + D + 2 * H, false}, {5, NOW, true}};
    bool keep[5];
    retention_select(v, 5, NOW, 0, 0, keep);
    assert_false(keep[0]);
    assert_false(keep[1]);
    assert_true(keep[2]); /* newest of that day */
    assert_true(keep[3]); /* the only one of the next day */
    assert_true(keep[4]);
}

static void test_versions_past_the_maximum_age_go_but_never_the_current(void **s)
{
    (void)s;
    retention_item v[3] = {{1, NOW - 400 * D, false}, {2, NOW - 10 * H, false}, {3, NOW - 500 * D, true}};
    bool keep[3];
    assert_int_equal(retention_select(v, 3, NOW, 0, 365 * D, keep), 1);
    assert_false(keep[0]);
    assert_true(keep[1]);
    assert_true(keep[2]);
}

static void test_over_the_count_the_oldest_go_first(void **s)
{
    (void)s;
    retention_item v[6];
    bool keep[6];
    for (int i = 0; i < 6; i++) /* listed newest first on purpose: order must not matter */
        v[i] = (retention_item){(uint64_t)(6 - i), NOW - i * 60, i == 0};
    assert_int_equal(retention_select(v, 6, NOW, 3, 0, keep), 3);
    assert_true(keep[0] && keep[1] && keep[2]);
    assert_false(keep[3] || keep[4] || keep[5]);
}

static void test_a_count_of_one_keeps_only_the_current(void **s)
{
    (void)s;
    retention_item v[3] = {{1, NOW - 100, false}, {2, NOW - 50, true}, {3, NOW - 10, false}};
    bool keep[3];
    retention_select(v, 3, NOW, 1, 0, keep);
    assert_false(keep[0]);
    assert_true(keep[1]);
    assert_false(keep[2]);
}

static void test_no_versions_is_fine(void **s)
{
    (void)s;
    bool keep[1] = {true};
    assert_int_equal(retention_select(NULL, 0, NOW, 5, 0, keep), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_version_of_the_last_day_is_kept),
        cmocka_unit_test(test_within_a_month_one_version_per_hour_the_newest),
        cmocka_unit_test(test_after_a_month_one_version_per_day),
        cmocka_unit_test(test_versions_past_the_maximum_age_go_but_never_the_current),
        cmocka_unit_test(test_over_the_count_the_oldest_go_first),
        cmocka_unit_test(test_a_count_of_one_keeps_only_the_current),
        cmocka_unit_test(test_no_versions_is_fine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
