/*
 * names.c — names and paths of the namespace (docs/storage.md "Names"): NFC normalisation
 * through ICU, the rules a name must pass, and the characters refused in new names. Pure
 * functions (unit-tested in tests/unit/test_names.c, which is why they keep the fs_name_ and
 * fs_path_ names the rest of the kernel and the ABI know them by). Any thread.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

int fs_name_normalize(const char *in, size_t n, char *out, mb_err *err)
{
    if (n == 0)
        return err_set(err, MB_EINVAL, "name: may not be empty");
    if (memchr(in, 0, n))
        return err_set(err, MB_EINVAL, "name: may not contain NUL");
    if (memchr(in, '/', n))
        return err_set(err, MB_EINVAL, "name: may not contain '/'");
    if (n > 4 * FS_NAME_MAX) /* NFC never shrinks text by more than this; don't normalise a novel */
        return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
    if (!utf8_valid(in, n))
        return err_set(err, MB_EINVAL, "name: is not valid UTF-8");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (unsigned char)in[i + 1] < 0xa0))
            return err_set(err, MB_EINVAL, "name: may not contain control characters");
    }
    /* NFC through ICU: UTF-8 -> UTF-16, quick check, normalise only when needed. */
    UErrorCode ue = U_ZERO_ERROR;
    const UNormalizer2 *nfc = unorm2_getNFCInstance(&ue);
    UChar src[4 * FS_NAME_MAX + 1], dst[8 * FS_NAME_MAX + 1];
    int32_t slen = 0;
    u_strFromUTF8(src, (int32_t)(sizeof src / sizeof src[0]), &slen, in, (int32_t)n, &ue);
    if (U_FAILURE(ue))
        return err_set(err, MB_EINVAL, "name: is not valid UTF-8");
    const UChar *res = src;
    int32_t rlen = slen;
    if (!unorm2_isNormalized(nfc, src, slen, &ue)) {
        ue = U_ZERO_ERROR;
        rlen = unorm2_normalize(nfc, src, slen, dst, (int32_t)(sizeof dst / sizeof dst[0]), &ue);
        if (U_FAILURE(ue))
            return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
        res = dst;
    }
    ue = U_ZERO_ERROR;
    int32_t olen = 0;
    u_strToUTF8(out, FS_NAME_MAX + 1, &olen, res, rlen, &ue);
    if (U_FAILURE(ue) || ue == U_STRING_NOT_TERMINATED_WARNING || olen > FS_NAME_MAX)
        return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
    out[olen] = 0;
    if (!strcmp(out, "."))
        return err_set(err, MB_EINVAL, "name: may not be '.'");
    if (!strcmp(out, ".."))
        return err_set(err, MB_EINVAL, "name: may not be '..'");
    return 0;
}

/* Formatting characters refused in new names: each can make a name show as something it is not
 * (bidi embeddings, overrides and isolates reorder what follows; a BOM is invisible; the
 * separators break a name across lines; U+206A..F are deprecated). Zero-width (non-)joiners and
 * spaces and the bidi marks are not here: Persian, Indic scripts, emoji sequences and Thai need
 * them, they cannot reorder text, and the web page marks them visibly. */
static const struct {
    uint32_t lo, hi;
    const char *what;
} fs_refused_chars[] = {
    {0x2028, 0x2028, "LINE SEPARATOR"},
    {0x2029, 0x2029, "PARAGRAPH SEPARATOR"},
    {0x202A, 0x202A, "LEFT-TO-RIGHT EMBEDDING"},
    {0x202B, 0x202B, "RIGHT-TO-LEFT EMBEDDING"},
    {0x202C, 0x202C, "POP DIRECTIONAL FORMATTING"},
    {0x202D, 0x202D, "LEFT-TO-RIGHT OVERRIDE"},
    {0x202E, 0x202E, "RIGHT-TO-LEFT OVERRIDE"},
    {0x2066, 0x2066, "LEFT-TO-RIGHT ISOLATE"},
    {0x2067, 0x2067, "RIGHT-TO-LEFT ISOLATE"},
    {0x2068, 0x2068, "FIRST STRONG ISOLATE"},
    {0x2069, 0x2069, "POP DIRECTIONAL ISOLATE"},
    {0x206A, 0x206F, "a deprecated format character"},
    {0xFEFF, 0xFEFF, "ZERO WIDTH NO-BREAK SPACE (byte order mark)"},
    {0xFFF9, 0xFFFB, "an interlinear annotation character"},
};

int fs_name_creatable(const char *name, mb_err *err)
{
    const unsigned char *p = (const unsigned char *)name;
    while (*p) {
        uint32_t cp = *p;
        int len = 1;
        if (cp >= 0xf0)
            cp &= 0x07, len = 4;
        else if (cp >= 0xe0)
            cp &= 0x0f, len = 3;
        else if (cp >= 0xc0)
            cp &= 0x1f, len = 2;
        for (int i = 1; i < len && (p[i] & 0xc0) == 0x80; i++)
            cp = cp << 6 | (p[i] & 0x3f);
        for (size_t i = 0; i < sizeof fs_refused_chars / sizeof fs_refused_chars[0]; i++)
            if (cp >= fs_refused_chars[i].lo && cp <= fs_refused_chars[i].hi)
                return err_set(err, MB_EINVAL,
                               "name: may not contain U+%04X %s: it can make the name show as something it is not",
                               (unsigned)cp, fs_refused_chars[i].what);
        for (int i = 0; i < len && *p; i++)
            p++;
    }
    return 0;
}

int fs_path_normalize(const char *in, size_t n, char **out, mb_err *err)
{
    if (n > FS_PATH_MAX)
        return err_set(err, MB_EINVAL, "path: may be at most %d bytes", FS_PATH_MAX);
    if (memchr(in, 0, n))
        return err_set(err, MB_EINVAL, "path: may not contain NUL");
    char *res = xmalloc(FS_PATH_MAX + FS_NAME_MAX + 2);
    size_t len = 0;
    int depth = 0;
    const char *p = in, *end = in + n;
    while (p < end) {
        const char *s = memchr(p, '/', (size_t)(end - p));
        const char *e = s ? s : end;
        if (e > p) {
            char name[FS_NAME_MAX + 1];
            int rc = fs_name_normalize(p, (size_t)(e - p), name, err);
            if (rc) {
                free(res);
                return rc;
            }
            if (++depth > FS_DEPTH_MAX) {
                free(res);
                return err_set(err, MB_EINVAL, "path: may have at most %d levels", FS_DEPTH_MAX);
            }
            size_t l = strlen(name);
            if (len + l + 1 > FS_PATH_MAX) {
                free(res);
                return err_set(err, MB_EINVAL, "path: may be at most %d bytes", FS_PATH_MAX);
            }
            if (len)
                res[len++] = '/';
            memcpy(res + len, name, l);
            len += l;
        }
        p = s ? s + 1 : end;
    }
    res[len] = 0;
    *out = res;
    return 0;
}
