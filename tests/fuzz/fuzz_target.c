/* Fuzz target: the request-target parser (kernel/http.c). Whatever comes in, an accepted
 * path never holds a '.' or '..' segment, a NUL, or invalid UTF-8. */
#include "../../kernel/kernel.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw = malloc(size + 1);
    memcpy(raw, data, size);
    raw[size] = 0;
    arena *a = arena_new();
    const char *segs[80], *path = NULL;
    int n = 0;
    mb_err err = {0};
    if (http_parse_target(a, raw, segs, 80, &n, &path, &err) == 0) {
        for (int i = 0; i < n; i++) {
            if (!strcmp(segs[i], ".") || !strcmp(segs[i], "..") || strchr(segs[i], '/') || !*segs[i] ||
                !utf8_valid(segs[i], strlen(segs[i])))
                __builtin_trap();
        }
        if (path[0] != '/' || strstr(path, "//"))
            __builtin_trap();
    }
    arena_free(a);
    free(raw);
    return 0;
}
