/* Unit tests: the hook bus (kernel/hook.c) — filter order and refusal, and observers fed
 * from the durable outbox, including entries a crash left behind. The dispatcher's turns
 * (ABI minor 6): batched observers write in the same LevelDB write that deletes the outbox
 * entries they saw (never before, never after), flush and done run once per turn, and the
 * reading position misses nothing (events committed out of order, a number given up as a
 * gap, long backlogs, bursts of quick turns). The kernel itself owns these subscriptions
 * (owner NULL), so modref_enter/leave(NULL) must be free and work without a module manager,
 * and module keys land under "m/kernel/". The kernel's live listeners (hook_listen,
 * hook_tell) are told at once and leave nothing behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../kernel/kernel.h"

static char dir[64];
static struct event_base *base;
static char trace[64];
static int observed;
static char last_event[64];
static json_int_t last_n;
/* What the batched observers and their flush and done saw. */
static int flushes, dones, last_status;
static size_t outbox_at_flush, outbox_at_done;
static bool head_at_flush, head_at_done;
static mb_batch *kept_batch;
static json_int_t seen[1024];
static size_t nseen;

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
    observed = flushes = dones = 0;
    last_status = 1;
    nseen = 0;
    kept_batch = NULL;
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
    if (nseen < 1024)
        seen[nseen++] = last_n;
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
    modref_enter(NULL); /* the kernel's own calls cost nothing and need no manager */
    modref_leave(NULL);
    assert_string_equal(modref_name(NULL), "kernel");
}

static void test_an_event_left_in_the_outbox_is_delivered_after_a_restart(void **s)
{
    (void)s;
    /* Commit an observed event but "crash" before the loop ran: nothing delivered yet. */
    add("x.done", MB_HOOK_OBSERVER, 0, NULL, o_count);
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

static void test_an_event_nobody_observes_leaves_no_outbox_entry(void **s)
{
    (void)s;
    mb_err err;
    add("x.seen", MB_HOOK_OBSERVER, 0, NULL, o_count);
    add("y.unseen", MB_HOOK_FILTER, 0, f_a, NULL); /* a filter is not an observer */
    assert_false(hook_observed("y.unseen"));
    assert_true(hook_observed("x.seen"));
    assert_int_equal(hook_emit("y.unseen", json_pack("{s:i}", "n", 1), &err), 0);
    db_batch *b = db_batch_new();
    hook_emit_batch(b, "y.unseen", json_pack("{s:i}", "n", 2));
    hook_emit_batch(b, "x.seen", json_pack("{s:i}", "n", 3));
    assert_int_equal(db_batch_commit(b, true), 0);
    assert_int_equal(outbox_size(), 1); /* only the observed one */
    hook_kick();
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 1);
    assert_int_equal(last_n, 3);
    assert_int_equal(outbox_size(), 0);
    add("*", MB_HOOK_OBSERVER, 0, NULL, o_count); /* "*" observes every event */
    assert_true(hook_observed("y.unseen"));
}

static void l_count(const char *e, const json_t *p, void *st)
{
    (*(int *)st)++;
    snprintf(last_event, sizeof last_event, "%s", e);
    last_n = json_integer_value(json_object_get(p, "n"));
}

/* The kernel's live listeners (task.c tells notify.c this way): called at once on the
 * telling thread, nothing stored, and invisible to modules' observers and filters. */
static void test_a_listener_is_told_at_once_and_nothing_is_stored(void **s)
{
    (void)s;
    mb_err err;
    int told = 0, star = 0;
    add("task.update", MB_HOOK_OBSERVER, 0, NULL, o_count);
    add("task.update", MB_HOOK_FILTER, 0, f_a, NULL);
    assert_int_equal(hook_listen("task.update", l_count, &told, &err), 0);
    assert_int_equal(hook_listen("*", l_count, &star, &err), 0);
    assert_int_not_equal(hook_listen("", l_count, &told, &err), 0);
    json_t *p = json_pack("{s:i}", "n", 7);
    hook_tell("task.update", p);
    json_decref(p);
    assert_int_equal(told, 1);
    assert_int_equal(star, 1);
    assert_string_equal(last_event, "task.update");
    assert_int_equal(last_n, 7);
    hook_tell("other", NULL);
    assert_int_equal(told, 1);
    assert_int_equal(star, 2);
    assert_int_equal(outbox_size(), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 0);
    assert_string_equal(trace, "");
}

static bool has_key(const char *key)
{
    char *v;
    size_t n;
    if (db_get(key, strlen(key), &v, &n))
        return false;
    free(v);
    return true;
}

static void ob_record(const char *e, const json_t *p, mb_batch *b, void *st)
{
    (void)e, (void)st;
    observed++;
    kept_batch = b;
    json_int_t n = json_integer_value(json_object_get(p, "n"));
    if (nseen < 1024)
        seen[nseen++] = n;
    char key[32];
    snprintf(key, sizeof key, "seen/%lld", (long long)n);
    mb_err err;
    assert_int_equal(hook_batch_put(b, NULL, key, "1", 1, &err), 0);
}

static void fl_head(mb_batch *b, void *st)
{
    (void)st;
    flushes++;
    outbox_at_flush = outbox_size();
    head_at_flush = has_key("m/kernel/head");
    char v[16];
    int n = snprintf(v, sizeof v, "%d", observed);
    mb_err err;
    assert_int_equal(hook_batch_put(b, NULL, "head", v, (size_t)n, &err), 0);
}

static void dn_check(int status, void *st)
{
    (void)st;
    dones++;
    last_status = status;
    outbox_at_done = outbox_size();
    head_at_done = has_key("m/kernel/head");
}

static void add_batched(const char *event, mb_batch_observer_fn ob, mb_flush_fn fl, mb_done_fn dn)
{
    mb_hook h = {sizeof h, event, MB_HOOK_OBSERVER, 0, NULL, NULL, ob, fl, dn};
    mb_err err;
    assert_int_equal(hook_add(NULL, &h, NULL, &err), 0);
}

static void emit(const char *event, int n)
{
    mb_err err;
    assert_int_equal(hook_emit(event, json_pack("{s:i}", "n", n), &err), 0);
}

/* Run the loop until the outbox is empty (a turn may wait for a timer). */
static void drain(void)
{
    for (int i = 0; i < 1000 && outbox_size(); i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(outbox_size(), 0);
}

static void test_batched_writes_land_in_the_same_write_as_the_outbox_deletion(void **s)
{
    (void)s;
    add_batched("x.done", ob_record, fl_head, dn_check);
    emit("x.done", 1);
    emit("x.done", 2);
    emit("x.done", 3);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 3);
    /* Before the write: the outbox entries are all still there and nothing of the
     * observer's is visible yet. */
    assert_int_equal(flushes, 1);
    assert_int_equal(outbox_at_flush, 3);
    assert_false(head_at_flush);
    /* After it: both at once. */
    assert_int_equal(dones, 1);
    assert_int_equal(last_status, 0);
    assert_int_equal(outbox_at_done, 0);
    assert_true(head_at_done);
    assert_true(has_key("m/kernel/seen/1") && has_key("m/kernel/seen/2") && has_key("m/kernel/seen/3"));
    char *v;
    size_t n;
    assert_int_equal(db_get("m/kernel/head", 13, &v, &n), 0);
    assert_memory_equal(v, "3", 1); /* the flush wrote it once, after the last event */
    free(v);
}

static void test_a_batch_is_refused_outside_the_call_it_was_given_to(void **s)
{
    (void)s;
    add_batched("x.done", ob_record, NULL, NULL);
    emit("x.done", 1);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_non_null(kept_batch);
    mb_err err = {0};
    assert_int_equal(hook_batch_put(kept_batch, NULL, "late", "1", 1, &err), MB_EINVAL);
    assert_int_equal(hook_batch_del(kept_batch, NULL, "seen/1", &err), MB_EINVAL);
    assert_true(err.msg[0]);
    assert_false(has_key("m/kernel/late"));
    assert_true(has_key("m/kernel/seen/1"));
}

static void test_flush_and_done_run_once_per_turn_for_several_hooks_of_one_module(void **s)
{
    (void)s;
    add_batched("x.a", ob_record, fl_head, dn_check);
    add_batched("x.b", ob_record, fl_head, dn_check);
    emit("x.a", 1);
    emit("x.b", 2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 2);
    assert_int_equal(flushes, 1);
    assert_int_equal(dones, 1);
    /* A turn that none of its events reach calls neither. */
    emit("x.other", 3);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(outbox_size(), 0);
    assert_int_equal(flushes, 1);
    assert_int_equal(dones, 1);
}

static void test_an_observer_needs_exactly_one_function(void **s)
{
    (void)s;
    mb_err err;
    mb_hook none = {sizeof none, "x.a", MB_HOOK_OBSERVER, 0, NULL, NULL, NULL, fl_head, NULL};
    assert_int_equal(hook_add(NULL, &none, NULL, &err), MB_EINVAL);
    mb_hook both = {sizeof both, "x.a", MB_HOOK_OBSERVER, 0, NULL, o_count, ob_record, NULL, NULL};
    assert_int_equal(hook_add(NULL, &both, NULL, &err), MB_EINVAL);
}

static void test_events_committed_out_of_order_are_delivered_at_once(void **s)
{
    (void)s;
    add("x.done", MB_HOOK_OBSERVER, 0, NULL, o_count);
    /* Two operations take their numbers in one order and commit in the other. */
    db_batch *first = db_batch_new(), *second = db_batch_new();
    hook_emit_batch(first, "x.done", json_pack("{s:i}", "n", 1));
    hook_emit_batch(second, "x.done", json_pack("{s:i}", "n", 2));
    assert_int_equal(db_batch_commit(second, true), 0);
    hook_kick();
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 1);
    assert_int_equal(db_batch_commit(first, true), 0);
    hook_kick();
    event_base_loop(base, EVLOOP_NONBLOCK); /* no waiting for the full scan */
    assert_int_equal(observed, 2);
    assert_int_equal(seen[1], 1);
    assert_int_equal(outbox_size(), 0);
}

static void test_a_number_given_up_as_a_gap_is_still_delivered_by_the_full_scan(void **s)
{
    (void)s;
    add("x.done", MB_HOOK_OBSERVER, 0, NULL, o_count);
    emit("x.done", 0); /* the first turn after a start scans everything anyway */
    event_base_loop(base, EVLOOP_NONBLOCK);
    db_batch *slow = db_batch_new();
    hook_emit_batch(slow, "x.done", json_pack("{s:i}", "n", 1));
    emit("x.done", 2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(observed, 2);
    /* The slow commit takes longer than the dispatcher waits for a gap: the full scan
     * after the last turn gives the number up... */
    usleep(1200 * 1000);
    event_base_loop(base, EVLOOP_ONCE);
    /* ...and the commit lands only now: the full scan that follows finds it. */
    assert_int_equal(db_batch_commit(slow, true), 0);
    hook_kick();
    drain();
    assert_int_equal(observed, 3);
    assert_int_equal(seen[2], 1);
}

static void test_a_long_backlog_and_a_burst_of_quick_turns_arrive_complete_and_in_order(void **s)
{
    (void)s;
    add_batched("x.done", ob_record, fl_head, dn_check);
    /* A backlog longer than one turn takes. */
    for (int i = 0; i < 600; i++) {
        db_batch *b = db_batch_new();
        hook_emit_batch(b, "x.done", json_pack("{s:i}", "n", i));
        assert_int_equal(db_batch_commit(b, false), 0);
    }
    hook_kick();
    drain();
    assert_true(dones >= 3);
    /* Then one event per turn, quickly, as uploads raise them: once turns come fast the
     * dispatcher lets events gather for a few ms; none may be left behind. */
    for (int i = 600; i < 700; i++) {
        db_batch *b = db_batch_new();
        hook_emit_batch(b, "x.done", json_pack("{s:i}", "n", i));
        assert_int_equal(db_batch_commit(b, false), 0);
        hook_kick();
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    drain();
    assert_int_equal(observed, 700);
    assert_int_equal(nseen, 700);
    for (size_t i = 0; i < nseen; i++)
        assert_int_equal(seen[i], (json_int_t)i);
    assert_int_equal(last_status, 0);
}

/* ---- the owner-tagged registry under the hook bus and the route table (registry.c) ---- */
typedef struct named {
    mb_module *owner;
    const char *name;
} named;
REG_ENTRY(named);
static bool named_same(const void *a, const void *b) { return !strcmp(((const named *)a)->name, ((const named *)b)->name); }
static void named_retake(void *have, void *fresh) { ((named *)have)->owner = ((named *)fresh)->owner; }
static void named_describe(const void *e, char *buf, size_t n) { snprintf(buf, n, "entry %s", ((const named *)e)->name); }
static bool named_is(const void *e, const void *key) { return !strcmp(((const named *)e)->name, key); }

/* A module's table goes in at once (a swap from nothing, as modmgr loads it), and a table
 * naming one thing twice is refused whole, leaving what was there. */
static void test_a_table_naming_one_thing_twice_is_refused_whole(void **s)
{
    (void)s;
    static const reg_ops ops = {.size = sizeof(named), .conflict = named_same, .same = named_same,
                                .retake = named_retake, .describe = named_describe};
    registry r = REG_INIT(&ops);
    mb_module *m = (mb_module *)&r; /* any address serves as an owner tag */
    mb_err err = {0};
    named one[] = {{m, "a"}, {m, "b"}};
    assert_int_equal(reg_swap_owner(&r, m, one, 2, &err), 0);
    assert_true(reg_get(&r, named_is, "a", NULL, false) && reg_get(&r, named_is, "b", NULL, false));
    named twice[] = {{m, "c"}, {m, "d"}, {m, "c"}};
    assert_int_equal(reg_swap_owner(&r, m, twice, 3, &err), MB_EEXIST);
    assert_non_null(strstr(err.msg, "entry c is declared twice"));
    assert_true(reg_get(&r, named_is, "a", NULL, false));
    assert_false(reg_get(&r, named_is, "c", NULL, false));
    reg_clear(&r);
    pthread_rwlock_destroy(&r.lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_filters_run_by_priority_then_registration_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_refusal_stops_the_chain_and_its_error_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_filter_cannot_listen_to_every_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_observers_are_fed_from_the_outbox_and_it_empties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_nobody_observes_leaves_no_outbox_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_listener_is_told_at_once_and_nothing_is_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_event_left_in_the_outbox_is_delivered_after_a_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batched_writes_land_in_the_same_write_as_the_outbox_deletion, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_batch_is_refused_outside_the_call_it_was_given_to, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_and_done_run_once_per_turn_for_several_hooks_of_one_module, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_observer_needs_exactly_one_function, setup, teardown),
        cmocka_unit_test(test_a_table_naming_one_thing_twice_is_refused_whole),
        cmocka_unit_test_setup_teardown(test_events_committed_out_of_order_are_delivered_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_number_given_up_as_a_gap_is_still_delivered_by_the_full_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_long_backlog_and_a_burst_of_quick_turns_arrive_complete_and_in_order,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
