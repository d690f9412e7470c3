/*
 * modules/thumbnails/thumb_util.c — content sniffing and Accept parsing for the thumbnails
 * module (see thumb_util.h). Pure; fuzzed by tests/fuzz/fuzz_thumbsniff.c.
 */
#include "thumb_util.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool at(const uint8_t *b, size_t n, size_t off, const char *magic, size_t len)
{
    return n >= off + len && memcmp(b + off, magic, len) == 0;
}

/* Valid UTF-8 without NUL or most control bytes: plain text, Markdown, source code. A
 * multi-byte sequence cut at the end of the window counts as valid. */
static bool looks_text(const uint8_t *b, size_t n)
{
    if (n == 0)
        return false;
    size_t ctl = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = b[i];
        if (c < 0x80) {
            if (c == 0)
                return false;
            if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f')
                ctl++;
            i++;
            continue;
        }
        size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || c == 0xC0 || c == 0xC1 || c > 0xF4)
            return false;
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n)
                return true;
            if ((b[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += len;
    }
    return ctl * 50 < n;
}

static bool has_svg_root(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if (b[i] == '<' && strncasecmp((const char *)b + i + 1, "svg", 3) == 0)
            return true;
    return false;
}

thumb_kind thumb_sniff(const uint8_t *b, size_t n)
{
    if (n > THUMB_SNIFF_BYTES)
        n = THUMB_SNIFF_BYTES;
    if (at(b, n, 0, "\xFF\xD8\xFF", 3))
        return TH_JPEG;
    if (at(b, n, 0, "\x89PNG\r\n\x1A\n", 8))
        return TH_PNG;
    if (at(b, n, 0, "GIF87a", 6) || at(b, n, 0, "GIF89a", 6))
        return TH_GIF;
    if (at(b, n, 0, "RIFF", 4) && at(b, n, 8, "WEBP", 4))
        return TH_WEBP;
    if (at(b, n, 0, "II*\0", 4) || at(b, n, 0, "MM\0*", 4))
        return TH_TIFF;
    if (at(b, n, 0, "BM", 2) && n >= 26)
        return TH_BMP;
    if (at(b, n, 4, "ftyp", 4)) {
        static const char *brands[] = {"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1", "avif"};
        for (size_t i = 0; i < sizeof brands / sizeof *brands; i++)
            if (at(b, n, 8, brands[i], 4))
                return strcmp(brands[i], "avif") ? TH_HEIC : TH_NONE;
        return TH_NONE;
    }
    if (at(b, n, 0, "%PDF-", 5))
        return TH_PDF;
    if (looks_text(b, n))
        return has_svg_root(b, n) ? TH_SVG : TH_TEXT;
    return TH_NONE;
}

static const char *const names[TH_KINDS] = {"none", "jpeg", "png", "gif", "webp", "tiff",
                                            "bmp",  "heic", "pdf", "svg", "text"};
static const char *const coders[TH_KINDS] = {NULL, "JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIC"};

const char *thumb_kind_name(thumb_kind k) { return k < TH_KINDS ? names[k] : "none"; }
const char *thumb_kind_coder(thumb_kind k) { return k < TH_KINDS ? coders[k] : NULL; }

const char *thumb_kind_class(thumb_kind k)
{
    if (k >= TH_JPEG && k <= TH_HEIC)
        return "image";
    return k == TH_PDF ? "pdf" : k == TH_TEXT ? "text" : "file";
}

bool thumb_accepts_webp(const char *accept)
{
    if (!accept)
        return false;
    const char *p = accept;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t tl = strcspn(p, ";,");
        while (tl && p[tl - 1] == ' ')
            tl--;
        bool match = (tl == 10 && strncasecmp(p, "image/webp", 10) == 0) ||
                     (tl == 7 && strncasecmp(p, "image/*", 7) == 0) || (tl == 3 && strncmp(p, "*/*", 3) == 0);
        if (match) {
            const char *q = p;
            double qv = 1;
            while ((q = memchr(q, ';', (size_t)(p + len - q))) != NULL) {
                q++;
                while (*q == ' ')
                    q++;
                if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=')
                    qv = strtod(q + 2, NULL);
            }
            /* only an explicit image/webp counts: browsers that cannot show WebP send image/ *, too */
            if (qv > 0 && tl == 10)
                return true;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}
