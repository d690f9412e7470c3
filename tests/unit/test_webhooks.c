/*
 * tests/unit/test_webhooks.c — the webhooks deny list's address ranges (modules/webhooks/cidr.c):
 * parsing, prefix matching at odd bit counts, and IPv4-mapped IPv6 addresses that must not slip
 * past an IPv4 range.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include "../../modules/webhooks/cidr.h"

static struct sockaddr_storage addr(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else {
        assert_int_equal(inet_pton(AF_INET6, s, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
    }
    return ss;
}

static bool in(const char *range, const char *ip)
{
    cidr c;
    assert_int_equal(cidr_parse(range, &c), 0);
    struct sockaddr_storage ss = addr(ip);
    return cidr_match_any(&c, 1, (struct sockaddr *)&ss);
}

static void test_parse_refuses_malformed_ranges(void **st)
{
    (void)st;
    cidr c;
    const char *bad[] = {"", "10.0.0.0/", "10.0.0.0/33", "::1/129", "10.0.0/8", "10.0.0.0/8x", "host/8",
                         "10.0.0.0/-1", "1.2.3.4/0008", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(cidr_parse(bad[i], &c), -1);
    assert_int_equal(cidr_parse("127.0.0.1", &c), 0);
    assert_int_equal(c.bits, 32);
    assert_int_equal(cidr_parse("fc00::/7", &c), 0);
    assert_int_equal(c.bits, 7);
}

static void test_prefixes_match_at_every_bit_count(void **st)
{
    (void)st;
    assert_true(in("127.0.0.0/8", "127.255.0.1"));
    assert_false(in("127.0.0.0/8", "128.0.0.1"));
    assert_true(in("172.16.0.0/12", "172.31.255.255"));
    assert_false(in("172.16.0.0/12", "172.32.0.0"));
    assert_true(in("169.254.0.0/16", "169.254.169.254"));
    assert_true(in("0.0.0.0/0", "8.8.8.8"));
    assert_true(in("fc00::/7", "fd12:3456::1"));
    assert_false(in("fc00::/7", "fe00::1"));
    assert_true(in("::1/128", "::1"));
    assert_false(in("::1/128", "::2"));
}

static void test_ipv4_mapped_ipv6_is_checked_as_ipv4(void **st)
{
    (void)st;
    assert_true(in("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_true(in("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_false(in("10.0.0.0/8", "::ffff:11.1.2.3"));
    assert_false(in("127.0.0.0/8", "::1")); /* IPv6 loopback needs its own range */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_refuses_malformed_ranges),
        cmocka_unit_test(test_prefixes_match_at_every_bit_count),
        cmocka_unit_test(test_ipv4_mapped_ipv6_is_checked_as_ipv4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
