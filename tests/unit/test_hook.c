/* Unit tests: the hook bus (kernel/hook.c) — filter order and refusal, and observers fed
 * from the durable outbox, including entries a crash left behind. The kernel itself owns
 * these subscriptions (owner NULL), so modmgr_enter/leave(NULL) must be free and work
 * without a module manager. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/kernel.h"

static char dir[64];
static struct event_base *base;
static char trace[64];
static int observed;
static char last_event[64];
static json_int_t last_n;

static int setup(void **s)
{
    (void)s;
    snprintf(dir, sizeof dir, "/tmp/mbhookXXXXXX");
    if (!mkdtemp(dir))
        return -1;
    mb_err err;
    if (db_open(dir, &err))
        return -1;
    base = event_base_new();
    trace[0] = 0;
    observed = 0;
    return hook_init(base, &err);
}

static int teardown(void **s)
{
    (void)s;
    hook_fini();
    event_base_free(base);
    db_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static void mark(const char *tag) { strncat(trace, tag, sizeof trace - strlen(trace) - 1); }

static int f_a(const char *e, json_t *p, void *st, mb_err *err) { (void)e, (void)p, (void)st, (void)err; mark("a"); return 0; }
static int f_b(const char *e, json_t *p, void *st, mb_err *err) { (void)e, (void)p, (void)st, (void)err; mark("b"); return 0; }
static int f_c(const char *e, json_t *p, void *st, mb_err *err) { (void)e, (void)p, (void)st, (void)err; mark("c"); return 0; }
static int f_refuse(const char *e, json_t *p, void *st, mb_err *err)
{
    (void)e, (void)p, (void)st;
    mark("R");
    return err_set(err, MB_EQUOTA, "the store is full");
}

static void o_count(const char *e, const json_t *p, void *st)
{
    (void)st;
    observed++;
    snprintf(last_event, sizeof last_event, "%s", e);
    last_n = json_integer_value(json_object_get(p, "n"));
}

static void add(const char *event, int kind, int prio, mb_filter_fn f, mb_observer_fn o)
{
    mb_hook h = {sizeof h, event, kind, prio, f, o};
    mb_err err;
    assert_int_equal(hook_add(NULL, &h, NULL, &err), 0);
}

static size_t outbox_size(void)
{
    size_t n = 0;
    db_iter *it = db_iter_prefix("o/", 2);
    while (db_iter_next(it))
        n++;
    db_iter_free(it);
    return n;
}

static void test_filters_run_by_priority_then_registration_order(void **s)
{
    (void)s;
    add("x.op", MB_HOOK_FILTER, 20, f_c, NULL);
    add("x.op", MB_HOOK_FILTER, 10, f_a, NULL);
    add("x.op", MB_HOOK_FILTER, 10, f_b, NULL);
    add("y.op", MB_HOOK_FILTER, 0, f_refuse, NULL); /* another event: never runs for x.op */
    mb_err err = {0};
    json_t *p = json_object();
    assert_int_equal(hook_filter("x.op", p, &err), 0);
    assert_string_equal(trace, "abc");
    json_decref(p);
}

static void test_first_refusal_stops_the_chain_and_its_error_comes_back(void **s)
{
    (void)s;
    add("x.op", MB_HOOK_FILTER, 10, f_a, NULL);
    add("x.op", MB_HOOK_FILTER, 20, f_refuse, NULL);
    add("x.op", MB_HOOK_FILTER, 30, f_c, NULL);
    mb_err err = {0};
    json_t *p = json_object();
    assert_int_equal(hook_filter("x.op", p, &err), MB_EQUOTA);
    assert_int_equal(err.code, MB_EQUOTA);
    assert_string_equal(err.msg, "the store is full");
    assert_string_equal(trace, "aR"); /* c never ran */
    json_decref(p);
}

static void test_a_filter_cannot_listen_to_every_event(void **s)
{
    (void)s;
    mb_hook h = {sizeof h, "*", MB_HOOK_FILTER, 0, f_a, NULL};
    mb_err err = {0};
    assert_int_equal(hook_add(NULL, &h, NULL, &err), MB_EINVAL);
}

static void test_observers_are_fed_from_the_outbox_and_it_empties(void **s)
{
    (void)s;
    add("x.done", MB_HOOK_OBSERVER, 0, NULL, o_count);
    add("*", MB_HOOK_OBSERVER, 5, NULL, o_count);
    mb_err err = {0};
    assert_int_equal(hook_emit("x.done", json_pack("{s:i}", "n", 7), &err), 0);
    assert_int_equal(outbox_size(), 1); /* durable before anyone saw it */
    assert_int_equal(observed, 0);      /* observers run on the loop, not in emit */
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 2); /* the named and the "*" observer */
    assert_string_equal(last_event, "x.done");
    assert_int_equal(last_n, 7);
    assert_int_equal(outbox_size(), 0);
    modmgr_enter(NULL); /* the kernel's own calls cost nothing and need no manager */
    modmgr_leave(NULL);
    assert_string_equal(modmgr_name(NULL), "kernel");
}

static void test_an_event_left_in_the_outbox_is_delivered_after_a_restart(void **s)
{
    (void)s;
    /* Commit an event but "crash" before the loop ran: nothing delivered yet. */
    db_batch *b = db_batch_new();
    hook_emit_batch(b, "x.done", json_pack("{s:i}", "n", 42));
    assert_int_equal(db_batch_commit(b, true), 0);
    hook_fini();
    event_base_free(base);
    db_close();
    assert_int_equal(observed, 0);

    mb_err err;
    assert_int_equal(db_open(dir, &err), 0);
    base = event_base_new();
    assert_int_equal(outbox_size(), 1);
    assert_int_equal(hook_init(base, &err), 0);
    add("x.done", MB_HOOK_OBSERVER, 0, NULL, o_count);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 1);
    assert_int_equal(last_n, 42);
    assert_int_equal(outbox_size(), 0);
    /* New events are numbered after the recovered one and still arrive. */
    assert_int_equal(hook_emit("x.done", json_pack("{s:i}", "n", 43), &err), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 2);
    assert_int_equal(last_n, 43);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_filters_run_by_priority_then_registration_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_refusal_stops_the_chain_and_its_error_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_filter_cannot_listen_to_every_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_observers_are_fed_from_the_outbox_and_it_empties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_left_in_the_outbox_is_delivered_after_a_restart, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
