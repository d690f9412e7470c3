/*
 * modules/search/extract.c — the decoder-free part of text extraction (issue 17), compiled
 * into both the module and mbyte-extractd (extractd.c).
 *
 * Here: the bounded text buffer every extractor writes into (control characters as spaces,
 * white space folded, cut at a limit without splitting a character); decoding plain text
 * (UTF-8 with or without a BOM, UTF-16 LE/BE with a BOM, otherwise Latin-1); a file's kind from
 * its name, content type and first bytes; and the in-process extraction of the kinds that need
 * no decoder library (text, Markdown, CSV, JSON, source code). That code is simple, linear and
 * bounded (one pass over at most max_file_mb bytes, at most max_text_kb out), so it runs inside
 * mbyted; everything that needs poppler, libzip, libxml2 or libexif runs in mbyte-extractd,
 * a separate process with limits (docs/search.md).
 *
 * Pure: no globals, any thread.
 */
#include "search.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

double sx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

bool sx_out_of_time(sx_text *c)
{
    if (sx_now() > c->deadline)
        c->late = true;
    return c->late || c->full;
}

/* Append UTF-8 text, control characters (including the snippet markers 2 and 3) as spaces,
 * runs of white space as one. Stops at c->max, never cutting a character in two. */
void sx_put(sx_text *c, const char *s, size_t n)
{
    for (size_t i = 0; i < n && !c->full; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            ch = ch == '\n' ? '\n' : ' ';
        if ((ch == ' ' || ch == '\n') && (c->n == 0 || c->p[c->n - 1] == ' ' || c->p[c->n - 1] == '\n'))
            continue;
        if (c->n + 5 >= c->max) {
            while (c->n && ((unsigned char)c->p[c->n - 1] & 0xC0) == 0x80)
                c->n--;
            if (c->n && (unsigned char)c->p[c->n - 1] >= 0xC0)
                c->n--;
            c->full = true;
            break;
        }
        if (c->n + 2 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4096;
            char *p = realloc(c->p, cap);
            if (!p) {
                c->full = true;
                break;
            }
            c->p = p, c->cap = cap;
        }
        c->p[c->n++] = (char)ch;
    }
    if (c->p)
        c->p[c->n] = 0;
}
void sx_puts(sx_text *c, const char *s) { sx_put(c, s, strlen(s)); }

/* ------------------------------------------------------------- text --- */

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        int k = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 && b >= 0xC2 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 && b <= 0xF4 ? 3 : -1;
        if (k < 0)
            return false;
        if (i + (size_t)k >= n)
            return false;
        for (int j = 1; j <= k; j++)
            if ((s[i + (size_t)j] & 0xC0) != 0x80)
                return false;
        i += (size_t)k + 1;
    }
    return true;
}

static void put_cp(sx_text *c, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80)
        b[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3F)), b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3F)), b[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
        b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    sx_put(c, b, n);
}

/* Decode text: UTF-8 (BOM or not), UTF-16 LE/BE with a BOM, otherwise Latin-1. */
void sx_put_text(sx_text *c, const unsigned char *s, size_t n)
{
    if (n >= 2 && ((s[0] == 0xFF && s[1] == 0xFE) || (s[0] == 0xFE && s[1] == 0xFF))) {
        bool le = s[0] == 0xFF;
        for (size_t i = 2; i + 1 < n && !c->full; i += 2) {
            unsigned u = le ? (unsigned)(s[i] | s[i + 1] << 8) : (unsigned)(s[i] << 8 | s[i + 1]);
            if (u >= 0xD800 && u < 0xDC00 && i + 3 < n) {
                unsigned l = le ? (unsigned)(s[i + 2] | s[i + 3] << 8) : (unsigned)(s[i + 2] << 8 | s[i + 3]);
                if (l >= 0xDC00 && l < 0xE000) {
                    put_cp(c, 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00));
                    i += 2;
                    continue;
                }
            }
            put_cp(c, u >= 0xD800 && u < 0xE000 ? 0xFFFD : u);
        }
        return;
    }
    if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)
        s += 3, n -= 3;
    for (size_t back = 1; back <= 3 && back <= n; back++) { /* a character cut by the size limit */
        unsigned char b = s[n - back];
        if ((b & 0xC0) == 0x80)
            continue;
        size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        if (need > back)
            n -= back;
        break;
    }
    if (valid_utf8(s, n)) {
        sx_put(c, (const char *)s, n);
        return;
    }
    for (size_t i = 0; i < n && !c->full; i++)
        put_cp(c, s[i]);
}

/* Text files hold no NUL in their first 8 KiB (UTF-16 is recognised by its BOM first). */
bool sx_looks_text(const unsigned char *s, size_t n)
{
    if (n >= 2 && ((s[0] == 0xFF && s[1] == 0xFE) || (s[0] == 0xFE && s[1] == 0xFF)))
        return true;
    return memchr(s, 0, n < 8192 ? n : 8192) == NULL;
}

/* ------------------------------------------------------------------ kinds --- */

static const struct {
    const char *ext, *kind;
} ext_kinds[] = {
    {"txt", "text"},         {"text", "text"},         {"log", "text"},          {"md", "markdown"},
    {"markdown", "markdown"}, {"rst", "text"},          {"csv", "csv"},           {"tsv", "csv"},
    {"html", "html"},        {"htm", "html"},          {"xhtml", "html"},        {"xml", "xml"},
    {"svg", "xml"},          {"json", "json"},         {"yaml", "text"},         {"yml", "text"},
    {"toml", "text"},        {"ini", "text"},          {"conf", "text"},         {"c", "code"},
    {"h", "code"},           {"cc", "code"},           {"cpp", "code"},          {"hpp", "code"},
    {"py", "code"},          {"js", "code"},           {"ts", "code"},           {"go", "code"},
    {"rs", "code"},          {"java", "code"},         {"kt", "code"},           {"rb", "code"},
    {"php", "code"},         {"sh", "code"},           {"lua", "code"},          {"pl", "code"},
    {"sql", "code"},         {"css", "code"},          {"swift", "code"},        {"cs", "code"},
    {"pdf", "pdf"},          {"docx", "document"},     {"odt", "document"},      {"xlsx", "spreadsheet"},
    {"ods", "spreadsheet"},  {"pptx", "presentation"}, {"odp", "presentation"},  {"epub", "ebook"},
    {"eml", "email"},        {"jpg", "image"},         {"jpeg", "image"},        {"tif", "image"},
    {"tiff", "image"},       {"png", "image"},         {"gif", "image"},         {"webp", "image"},
    {"heic", "image"},       {NULL, NULL},
};

const char *sx_kind(const char *name, const char *ctype)
{
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (dot)
        for (int i = 0; ext_kinds[i].ext; i++)
            if (!strcasecmp(dot + 1, ext_kinds[i].ext))
                return ext_kinds[i].kind;
    if (!ctype)
        return "other";
    if (!strncmp(ctype, "application/pdf", 15))
        return "pdf";
    if (!strncmp(ctype, "image/", 6))
        return "image";
    if (!strncmp(ctype, "message/rfc822", 14))
        return "email";
    if (!strncmp(ctype, "text/html", 9))
        return "html";
    if (strstr(ctype, "json"))
        return "json";
    if (strstr(ctype, "xml"))
        return "xml";
    if (!strncmp(ctype, "text/", 5))
        return "text";
    return "other";
}

/* Content wins over a wrong extension for the formats with a signature. */
const char *sx_content_kind(const unsigned char *d, size_t n, const char *kind)
{
    if (n >= 5 && !memcmp(d, "%PDF-", 5))
        return "pdf";
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return "image";
    if (n >= 4 && !memcmp(d, "PK\3\4", 4) && strcmp(kind, "document") && strcmp(kind, "spreadsheet") &&
        strcmp(kind, "presentation") && strcmp(kind, "ebook"))
        return "archive";
    return kind;
}

/* Kinds whose text comes from a decoder library, in mbyte-extractd; the rest is read here. */
bool sx_in_process(const char *kind)
{
    static const char *const outside[] = {"pdf", "document", "spreadsheet", "presentation", "ebook",
                                          "image", "email", "html", "xml", NULL};
    for (int i = 0; outside[i]; i++)
        if (!strcmp(kind, outside[i]))
            return false;
    return true;
}

void sx_finish(sx_text *c, size_t max_text, double seconds, sx_result *out)
{
    if (c->late)
        snprintf(out->reason, sizeof out->reason, "stopped after %.0f s: the text indexed is what was read by then",
                 seconds);
    else if (c->full)
        snprintf(out->reason, sizeof out->reason, "text longer than %zu bytes: the rest is not indexed", max_text);
    out->text = c->p;
    out->len = c->n;
    c->p = NULL;
}

void sx_text_init(sx_text *c, size_t max_text, double seconds)
{
    *c = (sx_text){.max = max_text < 64 ? 64 : max_text, .deadline = sx_now() + seconds};
}

int sx_extract_text(const char *kind, const unsigned char *data, size_t len, size_t max_text, double seconds,
                    sx_result *out)
{
    memset(out, 0, sizeof *out);
    sx_text c;
    sx_text_init(&c, max_text, seconds);
    out->kind = kind;
    if (strcmp(kind, "archive") && sx_looks_text(data, len)) {
        sx_put_text(&c, data, len);
        if (!strcmp(kind, "other"))
            out->kind = "text";
    }
    sx_finish(&c, max_text, seconds, out);
    return 0;
}

void sx_free(sx_result *r)
{
    free(r->text);
    r->text = NULL;
}
