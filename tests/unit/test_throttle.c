/* Unit tests: the kernel's one failure throttle (kernel/throttle.c, api->throttle_*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "../../kernel/kernel.h"

/* A lock: after max failures the key waits out the rest of its window; other keys do not. */
static void test_a_locked_key_waits_for_the_rest_of_its_window_and_only_it(void **s)
{
    (void)s;
    mb_throttle *t = throttle_get("test.lock", 3, 300, 0);
    assert_int_equal(throttle_fail(t, "alice\n10.0.0.1"), 0);
    assert_int_equal(throttle_fail(t, "alice\n10.0.0.1"), 0);
    assert_int_equal(throttle_wait(t, "alice\n10.0.0.1"), 0);
    int64_t w = throttle_fail(t, "alice\n10.0.0.1");
    assert_true(w > 295 && w <= 300);
    assert_int_equal(throttle_wait(t, "alice\n10.0.0.1"), w);
    assert_int_equal(throttle_wait(t, "alice\n10.0.0.2"), 0);
    throttle_clear(t, "alice\n10.0.0.1");
    assert_int_equal(throttle_wait(t, "alice\n10.0.0.1"), 0);
    /* Same name, same throttle (a reload finds its counts), new limits apply. */
    assert_ptr_equal(throttle_get("test.lock", 1, 300, 0), t);
    assert_true(throttle_fail(t, "bob") > 0);
}

/* Slowed, never locked: past max, a key waits slow_s after each failure, then may try. */
static void test_a_slowed_key_may_try_again_after_slow_seconds(void **s)
{
    (void)s;
    mb_throttle *t = throttle_get("test.slow", 2, 300, 1);
    throttle_fail(t, "alice");
    assert_int_equal(throttle_fail(t, "alice"), 1);
    int64_t deadline = now_mono_ms() + 30000;
    while (throttle_wait(t, "alice") && now_mono_ms() < deadline)
        usleep(50 * 1000);
    assert_int_equal(throttle_wait(t, "alice"), 0); /* long before the 300 s window ends */
    assert_int_equal(throttle_fail(t, "alice"), 1);
}

/* Memory is bounded: many keys never grow it, and a busy key is not pushed out by a few new ones. */
static void test_many_keys_fit_in_the_bounded_table(void **s)
{
    (void)s;
    mb_throttle *t = throttle_get("test.many", 1, 300, 0);
    throttle_fail(t, "victim-of-interest");
    char k[32];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        assert_true(throttle_fail(t, k) > 0);
    }
    assert_true(throttle_wait(t, "victim-of-interest") > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_locked_key_waits_for_the_rest_of_its_window_and_only_it),
        cmocka_unit_test(test_a_slowed_key_may_try_again_after_slow_seconds),
        cmocka_unit_test(test_many_keys_fit_in_the_bounded_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
