/*
 * http_target.c — the request target: the RAW request URI split into segments, each
 * percent-decoded on its own. A segment that decodes to '.', '..', or contains '/' or NUL,
 * or is not UTF-8, is refused before any handler runs: no handler ever sees an encoded
 * slash or a traversal segment. Pure functions on the request's arena; any thread.
 */
#include "kernel.h"
#include <string.h>

/* Decode one segment; refuses malformed escapes, NUL, '/', invalid UTF-8, '.' and '..'. */
static int decode_segment(arena *a, const char *s, size_t n, const char **out, mb_err *err)
{
    char *d = arena_alloc(a, n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? hex_digit((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_digit((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return err_set(err, MB_EINVAL, "the path has a malformed percent escape");
            d[j++] = (char)(hi << 4 | lo);
            i += 2;
            continue;
        }
        d[j++] = s[i];
    }
    d[j] = 0;
    if (memchr(d, 0, j))
        return err_set(err, MB_EINVAL, "a path segment may not contain NUL");
    if (memchr(d, '/', j))
        return err_set(err, MB_EINVAL, "a path segment may not contain an encoded '/'");
    if (!strcmp(d, ".") || !strcmp(d, ".."))
        return err_set(err, MB_EINVAL, "a path may not contain '.' or '..' segments");
    if (!utf8_valid(d, j))
        return err_set(err, MB_EINVAL, "the path is not valid UTF-8");
    *out = d;
    return 0;
}

int http_parse_target(arena *a, const char *raw, const char **segs, int max, int *nsegs, const char **out,
                      mb_err *err)
{
    size_t plen = strcspn(raw, "?#");
    *nsegs = 0;
    if (plen == 0 || raw[0] != '/')
        return err_set(err, MB_EINVAL, "the request target must be an absolute path");
    const char *p = raw + 1, *end = raw + plen;
    size_t joined_len = 1;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *segend = slash ? slash : end;
        if (segend > p) {
            if (*nsegs == max)
                return err_set(err, MB_EINVAL, "the path is nested too deeply");
            int rc = decode_segment(a, p, (size_t)(segend - p), &segs[*nsegs], err);
            if (rc)
                return rc;
            joined_len += strlen(segs[*nsegs]) + 1;
            (*nsegs)++;
        }
        p = slash ? slash + 1 : end;
    }
    char *path = arena_alloc(a, joined_len + 1), *w = path;
    *w++ = '/';
    for (int i = 0; i < *nsegs; i++) {
        size_t l = strlen(segs[i]);
        memcpy(w, segs[i], l);
        w += l;
        if (i + 1 < *nsegs)
            *w++ = '/';
    }
    *w = 0;
    *out = path;
    return 0;
}
