/* Unit tests: the task queue's pure pieces (kernel/task.c) — the retry backoff schedule
 * and the decision taken after each attempt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include "../../kernel/kernel.h"

#define CAP (300 * 1000)

/* rnd = UINT32_MAX-ish extremes give the jitter bounds; a span+1 multiple gives no jitter. */
static int64_t top(int attempt) { return task_backoff_ms(attempt, 1000, CAP, 0xffffffffu); }

static void test_backoff_doubles_from_one_second(void **s)
{
    (void)s;
    /* With rnd = 0 the delay is the bottom of its window: 3/4 of base * 2^(n-1). */
    assert_int_equal(task_backoff_ms(1, 1000, CAP, 0), 750);
    assert_int_equal(task_backoff_ms(2, 1000, CAP, 0), 1500);
    assert_int_equal(task_backoff_ms(3, 1000, CAP, 0), 3000);
    assert_int_equal(task_backoff_ms(4, 1000, CAP, 0), 6000);
    for (int a = 1; a < 8; a++)
        assert_true(task_backoff_ms(a + 1, 1000, CAP, 0) == 2 * task_backoff_ms(a, 1000, CAP, 0));
}

static void test_backoff_is_capped_at_five_minutes(void **s)
{
    (void)s;
    for (int a = 10; a < 200; a++) {
        assert_true(task_backoff_ms(a, 1000, CAP, 0xffffffffu) <= CAP);
        assert_true(task_backoff_ms(a, 1000, CAP, 0) >= CAP * 3 / 4);
    }
    /* Huge attempt counts do not overflow into negative or zero delays. */
    assert_true(task_backoff_ms(1000000, 1000, CAP, 12345) > 0);
}

static void test_backoff_jitter_stays_within_its_window(void **s)
{
    (void)s;
    for (int a = 1; a <= 12; a++) {
        int64_t d = 1000LL << (a - 1);
        if (d > CAP)
            d = CAP;
        int64_t lo = d - d / 4;
        int distinct = 0;
        int64_t prev = -1;
        for (uint32_t r = 0; r < 5000; r += 7) {
            int64_t v = task_backoff_ms(a, 1000, CAP, r * 2654435761u);
            assert_true(v >= lo);
            assert_true(v <= d);
            if (v != prev)
                distinct++;
            prev = v;
        }
        assert_true(distinct > 10); /* it really varies */
    }
    assert_true(top(1) <= 1000);
}

static void test_backoff_scales_with_the_base(void **s)
{
    (void)s;
    /* Tests run with MBYTE_TASK_BACKOFF_MS=10: the same schedule, 100 times faster. */
    assert_int_equal(task_backoff_ms(1, 10, 3000, 0), 8); /* 10 - 10/4 */
    assert_int_equal(task_backoff_ms(3, 10, 3000, 0), 30);
    assert_true(task_backoff_ms(30, 10, 3000, 0xffffffffu) <= 3000);
    assert_true(task_backoff_ms(0, 0, 3000, 0) >= 1); /* nonsense in, a positive delay out */
}

static void test_retry_decision(void **s)
{
    (void)s;
    assert_int_equal(task_next_state(0, false, 1, 5), TASK_NEXT_DONE);
    assert_int_equal(task_next_state(0, true, 1, 5), TASK_NEXT_DONE); /* finished before it saw the cancel */
    assert_int_equal(task_next_state(MB_EAGAIN, false, 1, 5), TASK_NEXT_RETRY);
    assert_int_equal(task_next_state(MB_EIO, false, 4, 5), TASK_NEXT_RETRY);
    assert_int_equal(task_next_state(MB_EIO, false, 5, 5), TASK_NEXT_FAILED);
    assert_int_equal(task_next_state(MB_EAGAIN, false, 3, 3), TASK_NEXT_FAILED);
    assert_int_equal(task_next_state(MB_ECANCELED, false, 1, 5), TASK_NEXT_CANCELLED);
    assert_int_equal(task_next_state(MB_EAGAIN, true, 1, 5), TASK_NEXT_CANCELLED);
    assert_int_equal(task_next_state(MB_ECANCELED, false, 5, 5), TASK_NEXT_CANCELLED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_from_one_second),
        cmocka_unit_test(test_backoff_is_capped_at_five_minutes),
        cmocka_unit_test(test_backoff_jitter_stays_within_its_window),
        cmocka_unit_test(test_backoff_scales_with_the_base),
        cmocka_unit_test(test_retry_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
