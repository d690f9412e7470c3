/*
 * xff.c — who the client is behind trusted proxies: the X-Forwarded-For parser (http.c calls
 * it for requests from a peer listed in trusted_proxies). Pure: no state, no I/O, so the
 * fuzz target tests/fuzz/fuzz_cidr.c runs it on any bytes.
 *
 * Threads: any (reentrant).
 */
#include "kernel.h"
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

bool xff_client(const char *xff, bool (*trusted)(const char *ip), char *out, size_t n)
{
    if (!xff || strlen(xff) > XFF_MAX)
        return false;
    /* From the right end over the WHOLE header: a cap on the number of entries read from the
     * left (it was 64) let a client write 64 entries of its own before the proxy's, and be
     * believed as the 64th (tests/fuzz/corpus/cidr/regress-xff-over-64-entries). */
    const char *end = xff + strlen(xff);
    for (;;) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        if (start < end) { /* an empty entry (",,") is skipped */
            size_t len = (size_t)(end - start);
            while (len && (*start == ' ' || *start == '\t'))
                start++, len--;
            while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
                len--;
            char e[64];
            unsigned char buf[16];
            if (len >= n || len >= sizeof e)
                return false; /* not an address: keep the proxy's own peer */
            memcpy(e, start, len);
            e[len] = 0;
            if (inet_pton(AF_INET, e, buf) != 1 && inet_pton(AF_INET6, e, buf) != 1)
                return false;
            if (!trusted(e)) {
                memcpy(out, e, len + 1);
                return true;
            }
        }
        if (start == xff)
            return false; /* every entry is a trusted proxy */
        end = start - 1;
    }
}
