/* Fuzz target: the HTTP Range header parser (kernel/files_http.c parse_ranges). The input is
 * "<file size>\n<header value>". Invariants: the answer is -1 (ignore the header), 0 (416) or
 * a count of at most 32 ranges, each inside the file (first <= last < size); a header that
 * does not start with "bytes=" (after spaces) is always ignored. */
#include "../../kernel/kernel.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_RANGES 32 /* files_http.c */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    memcpy(in, data, size);
    in[size] = 0;
    char *nl = strchr(in, '\n');
    uint64_t fsize = 0;
    const char *h = in;
    if (nl) {
        *nl = 0;
        if (!parse_u64(in, &fsize))
            fsize = strlen(in); /* not a number: any size will do */
        h = nl + 1;
    } else {
        fsize = size * 977;
    }
    brange r[MAX_RANGES + 1];
    int n = parse_ranges(h, fsize, r);
    if (n < -1 || n > MAX_RANGES)
        __builtin_trap();
    for (int i = 0; i < n; i++)
        if (r[i].first > r[i].last || r[i].last >= fsize)
            __builtin_trap();
    const char *p = h;
    while (*p == ' ')
        p++;
    if (n != -1 && strncasecmp(p, "bytes=", 6))
        __builtin_trap();
    if (n > 0 && fsize == 0)
        __builtin_trap();
    free(in);
    return 0;
}
