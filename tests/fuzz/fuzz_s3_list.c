/* Fuzz target: the s3 module's parsers of a service's answers (modules/s3/s3_util.c, compiled
 * in): s3_list_parse over a ListObjectsV2 body, s3_error_code over an error body, and
 * s3_parse_time over a LastModified value. The input is the body as received.
 * Invariants: every key handed to the callback is NUL-terminated and shorter than 1024 bytes;
 * the continuation token fits its buffer; a truncated answer that parsed has a token (a
 * listing can never loop on an empty one); an error code fits its buffer. */
#include "../../modules/s3/s3_util.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int one(const char *key, uint64_t size, int64_t mtime, void *ud)
{
    (void)size, (void)mtime;
    if (strlen(key) >= 1024)
        __builtin_trap();
    ++*(int *)ud;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *xml = malloc(n + 1);
    if (!xml)
        return 0;
    memcpy(xml, data, n);
    xml[n] = 0;
    int count = 0;
    bool more = false;
    char next[64];
    if (s3_list_parse(xml, n, one, &count, &more, next, sizeof next) == 0 && more && !next[0])
        __builtin_trap();
    if (strnlen(next, sizeof next) >= sizeof next)
        __builtin_trap();
    char code[32];
    s3_error_code(xml, n, code, sizeof code);
    if (strnlen(code, sizeof code) >= sizeof code)
        __builtin_trap();
    s3_parse_time(xml, n < 31 ? n : 31);
    free(xml);
    return 0;
}
