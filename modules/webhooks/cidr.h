/*
 * modules/webhooks/cidr.h — address ranges for the webhooks deny list (pure; unit-tested by
 * tests/unit/test_webhooks.c). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is checked as
 * the IPv4 address it carries, so it cannot slip past an IPv4 range.
 */
#ifndef MB_WEBHOOKS_CIDR_H
#define MB_WEBHOOKS_CIDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct cidr {
    int family;         /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
} cidr;

/* Parse "10.0.0.0/8", "::1/128", "127.0.0.1" (a single address). 0, or -1 when malformed. */
int cidr_parse(const char *s, cidr *out);
/* True when the socket address lies inside one of the n ranges. */
bool cidr_match_any(const cidr *list, int n, const struct sockaddr *sa);

#endif
