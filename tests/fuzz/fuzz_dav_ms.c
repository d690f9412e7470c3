/* Fuzz target: the multistatus parser of the webdav module's client backends
 * (modules/webdav/dav_ms.c, compiled in): the body of an outside server's PROPFIND answer, as
 * received. Invariants: every href handed to the callback is NUL-terminated, non-empty and
 * shorter than DAV_MS_HREF_MAX; a callback's non-zero stops the walk and is returned; the date
 * parser takes any string. */
#include "../../modules/webdav/dav.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int one(const char *href, uint64_t size, int64_t mtime, bool coll, void *ud)
{
    (void)size, (void)mtime, (void)coll;
    size_t l = strnlen(href, DAV_MS_HREF_MAX);
    if (l == 0 || l >= DAV_MS_HREF_MAX)
        __builtin_trap();
    return ++*(int *)ud >= 1000 ? 7 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    int count = 0;
    int rc = dav_ms_parse((const char *)data, n, one, &count);
    if (rc != 0 && rc != 7 && rc != MB_EINVAL && rc != MB_ENOMEM)
        __builtin_trap();
    if (rc == 7 && count != 1000)
        __builtin_trap();
    char *date = strndup((const char *)data, n); /* the date parser reads a C string */
    if (date)
        dav_http_time(date);
    free(date);
    return 0;
}
