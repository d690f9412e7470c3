/* Unit tests: kernel/etcd.c's request bodies and its parser of etcd's answers. The answers are
 * what etcd 3.4.23 (Debian 12's etcd-server) wrote through its JSON gateway, copied from curl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/kernel.h"

static void dumps_as(json_t *req, const char *want)
{
    char *got = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    if (strcmp(got, want))
        fail_msg("got  %s\nwant %s", got, want);
    free(got);
    json_decref(req);
}

static void test_keys_and_values_are_base64_and_numbers_decimal_strings(void **s)
{
    (void)s;
    /* "/mbyte/leader" and "n1" in base64; a lease above 2^53 survives as a string */
    dumps_as(etcd_req_put("/mbyte/leader", "n1", 7587869371451296517LL),
             "{\"key\":\"L21ieXRlL2xlYWRlcg==\",\"lease\":\"7587869371451296517\",\"value\":\"bjE=\"}");
    dumps_as(etcd_req_put("k", "", 0), "{\"key\":\"aw==\",\"value\":\"\"}");
    dumps_as(etcd_req_range("/mbyte/leader", false), "{\"key\":\"L21ieXRlL2xlYWRlcg==\"}");
}

static void test_a_prefix_range_ends_at_the_prefix_with_its_last_byte_plus_one(void **s)
{
    (void)s;
    /* "/mbyte/nodes/" .. "/mbyte/nodes0" */
    dumps_as(etcd_req_range("/mbyte/nodes/", true),
             "{\"key\":\"L21ieXRlL25vZGVzLw==\",\"range_end\":\"L21ieXRlL25vZGVzMA==\"}");
}

static void test_create_if_absent_compares_the_create_revision_with_zero(void **s)
{
    (void)s;
    dumps_as(etcd_req_create("/mbyte/leader", "n1", 12),
             "{\"compare\":[{\"create_revision\":\"0\",\"key\":\"L21ieXRlL2xlYWRlcg==\",\"result\":\"EQUAL\","
             "\"target\":\"CREATE\"}],\"failure\":[{\"request_range\":{\"key\":\"L21ieXRlL2xlYWRlcg==\"}}],"
             "\"success\":[{\"request_put\":{\"key\":\"L21ieXRlL2xlYWRlcg==\",\"lease\":\"12\",\"value\":\"bjE=\"}}]}");
}

static void parses(const char *body, etcd_answer *a);

static void test_compare_and_swap_compares_the_mod_revision(void **s)
{
    (void)s;
    /* "/mbyte/ids/user" from 41 to 42, if nobody moved it since revision 7 */
    dumps_as(etcd_req_cas("/mbyte/ids/user", "42", 7),
             "{\"compare\":[{\"key\":\"L21ieXRlL2lkcy91c2Vy\",\"mod_revision\":\"7\",\"result\":\"EQUAL\","
             "\"target\":\"MOD\"}],\"failure\":[{\"request_range\":{\"key\":\"L21ieXRlL2lkcy91c2Vy\"}}],"
             "\"success\":[{\"request_put\":{\"key\":\"L21ieXRlL2lkcy91c2Vy\",\"value\":\"NDI=\"}}]}");
}

static void test_a_page_starts_at_its_key_and_a_watch_at_its_revision(void **s)
{
    (void)s;
    /* "/mbyte/kv/" .. "/mbyte/kv0", from "/mbyte/kv/u/a" then 0x00, at revision 9, 500 keys */
    dumps_as(etcd_req_page("/mbyte/kv/", "/mbyte/kv/u/a", 9, 500),
             "{\"key\":\"L21ieXRlL2t2L3UvYQ==\",\"limit\":\"500\",\"range_end\":\"L21ieXRlL2t2MA==\","
             "\"revision\":\"9\"}");
    dumps_as(etcd_req_page("/mbyte/kv/", NULL, 0, 0), "{\"key\":\"L21ieXRlL2t2Lw==\",\"range_end\":\"L21ieXRlL2t2MA==\"}");
    dumps_as(etcd_req_watch("/mbyte/kv/", 4),
             "{\"create_request\":{\"key\":\"L21ieXRlL2t2Lw==\",\"range_end\":\"L21ieXRlL2t2MA==\","
             "\"start_revision\":\"4\"}}");
}

static void test_a_watch_message_gives_puts_and_deletes_in_order(void **s)
{
    (void)s;
    etcd_answer a;
    /* a put of /mbyte/kv/u/ann, then a txn deleting it and putting /mbyte/kv/t/ab */
    parses("{\"result\":{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\","
           "\"revision\":\"3\",\"raft_term\":\"2\"},\"events\":[{\"kv\":{\"key\":\"L21ieXRlL2t2L3UvYW5u\","
           "\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":\"1\",\"value\":\"eyJ2IjoxfQ==\"}},"
           "{\"type\":\"DELETE\",\"kv\":{\"key\":\"L21ieXRlL2t2L3UvYW5u\",\"mod_revision\":\"3\"}},{\"kv\":{\"key\":"
           "\"L21ieXRlL2t2L3QvYWI=\",\"create_revision\":\"3\",\"mod_revision\":\"3\",\"version\":\"1\",\"value\":"
           "\"eA==\"}}]}}",
           &a);
    assert_int_equal(a.nkvs, 3);
    assert_string_equal(a.kvs[0].key, "/mbyte/kv/u/ann");
    assert_string_equal(a.kvs[0].value, "{\"v\":1}");
    assert_false(a.kvs[0].deleted);
    assert_string_equal(a.kvs[1].key, "/mbyte/kv/u/ann");
    assert_true(a.kvs[1].deleted);
    assert_int_equal(a.kvs[1].mod_rev, 3);
    assert_string_equal(a.kvs[2].key, "/mbyte/kv/t/ab");
    assert_false(a.kvs[2].deleted);
    assert_false(a.canceled);
    etcd_answer_free(&a);
    /* the start was compacted away: etcd ends the watch */
    parses("{\"result\":{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\","
           "\"raft_term\":\"2\"},\"canceled\":true,\"compact_revision\":\"3\"}}",
           &a);
    assert_true(a.canceled);
    assert_int_equal(a.compact_revision, 3);
    assert_int_equal(a.nkvs, 0);
    etcd_answer_free(&a);
    parses("{\"result\":{\"header\":{\"revision\":\"3\"},\"created\":true}}", &a);
    assert_true(a.created);
    etcd_answer_free(&a);
}

static void parses(const char *body, etcd_answer *a)
{
    mb_err err = {0};
    if (etcd_answer_parse(body, strlen(body), a, &err))
        fail_msg("%s: %s", body, err.msg);
}

static void test_a_grant_and_a_keepalive_give_the_lease_and_its_ttl(void **s)
{
    (void)s;
    etcd_answer a;
    parses("{\"header\":{\"cluster_id\":\"324952591200643719\",\"member_id\":\"3319814642761637952\",\"revision\":"
           "\"1\",\"raft_term\":\"2\"},\"ID\":\"2324035809203888389\",\"TTL\":\"3\"}", &a);
    assert_int_equal(a.id, 2324035809203888389LL);
    assert_int_equal(a.ttl, 3);
    assert_int_equal(a.revision, 1);
    assert_int_equal(a.code, 0);
    /* a keepalive answers as a stream of {"result":...} lines */
    parses("{\"result\":{\"header\":{\"revision\":\"1\"},\"ID\":\"2324035809203888391\",\"TTL\":\"3\"}}\n", &a);
    assert_int_equal(a.id, 2324035809203888391LL);
    assert_int_equal(a.ttl, 3);
    /* the lease is gone: no TTL at all */
    parses("{\"result\":{\"header\":{\"revision\":\"1\"},\"ID\":\"12345\"}}\n", &a);
    assert_int_equal(a.ttl, 0);
}

static void test_a_lost_txn_gives_the_holder_and_its_lease(void **s)
{
    (void)s;
    etcd_answer a;
    parses("{\"header\":{\"revision\":\"2\"},\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{"
           "\"revision\":\"2\"}}}]}", &a);
    assert_true(a.succeeded);
    assert_int_equal(a.nkvs, 0);
    parses("{\"header\":{\"revision\":\"2\"},\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"2\"},"
           "\"kvs\":[{\"key\":\"L21ieXRlL2xlYWRlcg==\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":"
           "\"1\",\"value\":\"bjE=\",\"lease\":\"2324035809203888391\"}],\"count\":\"1\"}}]}", &a);
    assert_false(a.succeeded);
    assert_int_equal(a.nkvs, 1);
    assert_string_equal(a.kvs[0].key, "/mbyte/leader");
    assert_string_equal(a.kvs[0].value, "n1");
    assert_int_equal(a.kvs[0].value_len, 2);
    assert_int_equal(a.kvs[0].lease, 2324035809203888391LL);
    assert_int_equal(a.kvs[0].create_rev, 2);
    etcd_answer_free(&a);
}

static void test_a_range_without_keys_is_empty(void **s)
{
    (void)s;
    etcd_answer a;
    parses("{\"header\":{\"cluster_id\":\"1\",\"revision\":\"2\"}}", &a);
    assert_int_equal(a.nkvs, 0);
    assert_null(a.kvs);
}

static void test_an_error_answer_carries_its_code_and_message(void **s)
{
    (void)s;
    etcd_answer a;
    parses("{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not "
           "found\",\"code\":5}", &a);
    assert_int_equal(a.code, 5);
    assert_string_equal(a.error, "etcdserver: requested lease not found");
    parses("{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}", &a);
    assert_int_equal(a.code, 14);
    assert_string_equal(a.error, "etcdserver: no leader");
}

static void test_what_is_not_etcd_is_refused_with_a_sentence(void **s)
{
    (void)s;
    const char *bad[] = {"", "[]", "nul", "{\"ID\":\"12x\"}", "{\"TTL\":true}", "{\"succeeded\":\"yes\"}",
                         "{\"kvs\":{}}", "{\"kvs\":[{\"key\":\"!!\",\"value\":\"\"}]}",
                         "{\"kvs\":[{\"key\":\"aw==\",\"value\":\"bjE=\",\"lease\":\"-\"}]}",
                         "{\"responses\":[{\"response_range\":{\"kvs\":[1]}}]}", "{\"responses\":7}",
                         "{\"header\":{\"revision\":\"99999999999999999999\"}}",
                         "{\"more\":1}", "{\"result\":{\"canceled\":\"yes\"}}", "{\"events\":{}}",
                         "{\"events\":[{\"type\":\"MOVE\",\"kv\":{\"key\":\"aw==\"}}]}", "{\"events\":[{\"type\":\"DELETE\"}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        etcd_answer a;
        mb_err err = {0};
        if (etcd_answer_parse(bad[i], strlen(bad[i]), &a, &err) != MB_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err.msg[0] != 0);
        assert_null(a.kvs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_and_values_are_base64_and_numbers_decimal_strings),
        cmocka_unit_test(test_a_prefix_range_ends_at_the_prefix_with_its_last_byte_plus_one),
        cmocka_unit_test(test_create_if_absent_compares_the_create_revision_with_zero),
        cmocka_unit_test(test_a_grant_and_a_keepalive_give_the_lease_and_its_ttl),
        cmocka_unit_test(test_a_lost_txn_gives_the_holder_and_its_lease),
        cmocka_unit_test(test_a_range_without_keys_is_empty),
        cmocka_unit_test(test_an_error_answer_carries_its_code_and_message),
        cmocka_unit_test(test_what_is_not_etcd_is_refused_with_a_sentence),
        cmocka_unit_test(test_compare_and_swap_compares_the_mod_revision),
        cmocka_unit_test(test_a_page_starts_at_its_key_and_a_watch_at_its_revision),
        cmocka_unit_test(test_a_watch_message_gives_puts_and_deletes_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
