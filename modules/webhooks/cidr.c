/*
 * modules/webhooks/cidr.c — address ranges (see cidr.h). Pure functions, no state.
 */
#include "cidr.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cidr_parse(const char *s, cidr *out)
{
    char buf[64];
    if (!s || strlen(s) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", s);
    char *slash = strchr(buf, '/');
    int bits = -1;
    if (slash) {
        *slash++ = 0;
        if (!*slash || strspn(slash, "0123456789") != strlen(slash) || strlen(slash) > 3)
            return -1;
        bits = atoi(slash);
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        if (bits > 32)
            return -1;
        out->bits = bits < 0 ? 32 : bits;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        if (bits > 128)
            return -1;
        out->bits = bits < 0 ? 128 : bits;
    } else
        return -1;
    return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full))
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool cidr_match_any(const cidr *list, int n, const struct sockaddr *sa)
{
    uint8_t a4[4], a6[16];
    bool has4 = false, has6 = false;
    if (sa->sa_family == AF_INET) {
        memcpy(a4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        has4 = true;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(a6, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        has6 = true;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(a6, mapped, 12)) {
            memcpy(a4, a6 + 12, 4);
            has4 = true;
        }
    } else
        return true; /* not an internet address: never allowed */
    for (int i = 0; i < n; i++) {
        if (list[i].family == AF_INET && has4 && prefix_eq(a4, list[i].addr, list[i].bits))
            return true;
        if (list[i].family == AF_INET6 && has6 && prefix_eq(a6, list[i].addr, list[i].bits))
            return true;
    }
    return false;
}
