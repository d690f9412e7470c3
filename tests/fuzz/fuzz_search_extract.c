/* Fuzz target: the search module's in-process text extraction (modules/search/extract.c), the
 * one parser of file contents that runs inside mbyted (every other format goes to
 * mbyte-extractd, a separate process). For any bytes and every in-process kind: the text is at
 * most the limit, NUL-terminated with no NUL inside, and valid UTF-8 (it goes into SQLite and
 * into JSON answers as it is). */
#include "../../modules/search/search.h"
#include <stdlib.h>
#include <string.h>

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        int k = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 && b >= 0xC2 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 && b <= 0xF4 ? 3 : -1;
        if (k < 0)
            return 0;
        for (int j = 1; j <= k; j++)
            if (i + (size_t)j >= n || (s[i + (size_t)j] & 0xC0) != 0x80)
                return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"text", "markdown", "csv", "json", "code", "other", NULL};
    size_t max = size && data[0] < 128 ? 64 + data[0] : 4096; /* small limits cut characters too */
    for (int i = 0; kinds[i]; i++) {
        const char *kind = sx_content_kind(data, size, kinds[i]);
        if (!sx_in_process(kind))
            continue; /* a signature (PDF, JPEG, zip): mbyte-extractd's */
        sx_result r;
        if (sx_extract_text(kind, data, size, max, 10, &r))
            __builtin_trap();
        if (r.text && (r.len > max || strlen(r.text) != r.len || !valid_utf8((const unsigned char *)r.text, r.len)))
            __builtin_trap();
        sx_free(&r);
    }
    return 0;
}
