/* Fuzz target: the webdav module's parsers of outside bytes (modules/webdav/dav_parse.c): the
 * If header and the Destination URI. Whatever comes in, a parsed If header has at least one
 * list and no list without a condition, and an accepted path holds no '.' or '..' segment, no
 * empty segment, no NUL, and fits its buffer. */
#include "../../modules/webdav/dav_parse.c"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw = malloc(size + 1);
    memcpy(raw, data, size);
    raw[size] = 0;
    dav_if *h = malloc(sizeof *h);
    if (dav_if_parse(raw, h) == 0) {
        if (h->n < 1 || h->n > DAV_IF_MAX)
            __builtin_trap();
        for (int i = 0; i < h->n; i++)
            if (h->l[i].n < 1 || h->l[i].n > DAV_IF_MAX)
                __builtin_trap();
    }
    free(h);
    char out[256];
    if (dav_uri_path(raw, out, sizeof out) == 0) {
        size_t n = strlen(out);
        if (n >= sizeof out || (n && (out[0] == '/' || out[n - 1] == '/')) || strstr(out, "//"))
            __builtin_trap();
        char *copy = strdup(out), *save = NULL;
        for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save))
            if (!strcmp(t, ".") || !strcmp(t, ".."))
                __builtin_trap();
        free(copy);
    }
    free(raw);
    return 0;
}
