/* Fuzz target: address lists. The webhooks deny list's CIDR parser and matcher
 * (modules/webhooks/cidr.c, compiled in) and the X-Forwarded-For parser behind trusted_proxies
 * (kernel/xff.c). The input is three lines: CIDR entries separated by ','; trusted proxy
 * addresses separated by ','; an X-Forwarded-For value.
 * Invariants: a parsed range has a real family and prefix length and contains its own address
 * (also as an IPv4-mapped IPv6 address), and every address differing only after the prefix;
 * the client found behind the proxies is the rightmost entry of the WHOLE header that is not a
 * trusted proxy, reached only through trusted, well-formed entries; otherwise none. */
#include "../../kernel/kernel.h"
#include "../../modules/webhooks/cidr.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static void check_cidr(const char *s)
{
    cidr c;
    if (cidr_parse(s, &c))
        return;
    int max = c.family == AF_INET ? 32 : c.family == AF_INET6 ? 128 : -1;
    if (max < 0 || c.bits < 0 || c.bits > max)
        __builtin_trap();
    struct sockaddr_storage ss = {0};
    if (c.family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, c.addr, 4);
        if (!cidr_match_any(&c, 1, (struct sockaddr *)&ss))
            __builtin_trap();
        struct sockaddr_in6 m = {.sin6_family = AF_INET6};
        m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
        memcpy(m.sin6_addr.s6_addr + 12, c.addr, 4);
        if (!cidr_match_any(&c, 1, (struct sockaddr *)&m)) /* a mapped address cannot slip past */
            __builtin_trap();
        if (c.bits < 32) {
            in->sin_addr.s_addr ^= htonl(1u);
            if (!cidr_match_any(&c, 1, (struct sockaddr *)&ss))
                __builtin_trap();
        }
        if (c.bits > 0) {
            memcpy(&in->sin_addr, c.addr, 4);
            ((uint8_t *)&in->sin_addr)[(c.bits - 1) / 8] ^= (uint8_t)(0x80 >> ((c.bits - 1) % 8));
            if (cidr_match_any(&c, 1, (struct sockaddr *)&ss))
                __builtin_trap();
        }
    } else {
        struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;
        in->sin6_family = AF_INET6;
        memcpy(&in->sin6_addr, c.addr, 16);
        if (!cidr_match_any(&c, 1, (struct sockaddr *)&ss))
            __builtin_trap();
        if (c.bits < 128) {
            in->sin6_addr.s6_addr[15] ^= 1;
            if (!cidr_match_any(&c, 1, (struct sockaddr *)&ss))
                __builtin_trap();
        }
        if (c.bits > 0) {
            memcpy(&in->sin6_addr, c.addr, 16);
            in->sin6_addr.s6_addr[(c.bits - 1) / 8] ^= (uint8_t)(0x80 >> ((c.bits - 1) % 8));
            if (cidr_match_any(&c, 1, (struct sockaddr *)&ss))
                __builtin_trap();
        }
    }
}

static char *g_trusted; /* ",a,b," : the trusted list of this input */

static bool trusted(const char *ip)
{
    char key[80];
    if (strlen(ip) > 70)
        return false;
    key[0] = ',';
    strcpy(key + 1, ip);
    strcat(key, ",");
    return strstr(g_trusted, key) != NULL;
}

static bool is_ip(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* What the answer must be, from the whole header: walk the entries from the right. */
static bool expected(const char *xff, char *want)
{
    if (strlen(xff) > XFF_MAX)
        return false;
    const char *end = xff + strlen(xff);
    while (end > xff || (end == xff && *xff)) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        size_t len = (size_t)(end - start);
        if (len) { /* an empty entry (",,") is skipped */
            while (len && (*start == ' ' || *start == '\t'))
                start++, len--;
            while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
                len--;
            char e[64];
            if (len >= sizeof e)
                return false;
            memcpy(e, start, len);
            e[len] = 0;
            if (!is_ip(e))
                return false;
            if (!trusted(e)) {
                strcpy(want, e);
                return true;
            }
        }
        if (start == xff)
            break;
        end = start - 1;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    memcpy(in, data, size);
    in[size] = 0;
    char *l2 = strchr(in, '\n'), *l3 = NULL;
    if (l2) {
        *l2++ = 0;
        if ((l3 = strchr(l2, '\n')))
            *l3++ = 0;
    }
    char *save = NULL;
    for (char *t = strtok_r(in, ",", &save); t; t = strtok_r(NULL, ",", &save))
        check_cidr(t);
    if (l3) {
        size_t tl = strlen(l2);
        g_trusted = malloc(tl + 3);
        g_trusted[0] = ',';
        memcpy(g_trusted + 1, l2, tl);
        g_trusted[tl + 1] = ',';
        g_trusted[tl + 2] = 0;
        char got[64] = "", want[64] = "";
        bool g = xff_client(l3, trusted, got, sizeof got), w = expected(l3, want);
        if (g != w || (g && strcmp(got, want)))
            __builtin_trap();
        free(g_trusted);
    }
    free(in);
    return 0;
}
