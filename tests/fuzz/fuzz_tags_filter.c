/* Fuzz target: tag names and the listing filter of the tags module (modules/tags/tagexpr.c),
 * which read ?tag=, ?any= values and POSTed names. The input is split at '&' into values; the
 * first byte of each says tag= (even) or any= (odd). Every value is accepted or refused with a
 * sentence; an accepted name is 1..64 bytes of UTF-8 without control bytes, commas or a leading
 * '-', and matching a filter against the accepted names never fails. */
#include "../../modules/tags/tags.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    memcpy(in, data, size);
    in[size] = 0;
    tag_filter f = {0};
    json_t *names = json_array();
    for (char *v = in, *next; v; v = next) {
        next = strchr(v, '&');
        if (next)
            *next++ = 0;
        bool any = *v && (*v & 1);
        const char *val = *v ? v + 1 : v;
        char why[128] = "", name[TAG_MAX + 1];
        int rc = tagx_filter_add(&f, val, any, why, sizeof why);
        if (rc && !*why)
            __builtin_trap(); /* a refusal always says why */
        if (tagx_norm(val, name, sizeof name, why, sizeof why) == 0) {
            size_t n = strlen(name);
            if (!n || n > TAG_MAX || name[0] == '-' || strchr(name, ',') || name[0] == ' ' || name[n - 1] == ' ')
                __builtin_trap();
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)name[i] < 0x20)
                    __builtin_trap();
            json_t *s = json_string(name); /* jansson refuses invalid UTF-8 */
            if (!s)
                __builtin_trap();
            json_array_append_new(names, s);
        }
    }
    (void)tagx_match(&f, names);
    /* a filter of exactly the accepted names (no NOT, no any) matches them */
    tag_filter all = {0};
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n) {
        char why[128];
        if (tagx_filter_add(&all, json_string_value(n), false, why, sizeof why))
            __builtin_trap();
    }
    if (!tagx_match(&all, names))
        __builtin_trap();
    tagx_filter_free(&all);
    tagx_filter_free(&f);
    json_decref(names);
    free(in);
    return 0;
}
