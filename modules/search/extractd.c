/*
 * modules/search/extractd.c — mbyte-extractd, the search module's text extractor (issue 17).
 *
 * The search module never runs a decoder library inside mbyted: each PDF, office document,
 * EPUB, e-mail, HTML/XML file or photo is written to a temporary file and read by this program.
 * The module starts it once (modules/spawn.c) as a server, `--serve DIR`, which loads the
 * libraries and then forks one worker per file (a fork and _exit cost about 5 ms, a start of
 * this program with poppler and glib about 60 ms); the worker prints the text and exits. A poppler crash, a
 * zip bomb or an endless loop in a parser therefore ends only that worker; the server reports
 * it and the module records the reason on the file (status failed) and goes on.
 *
 *   mbyte-extractd --serve DIR                        requests on stdin (see serve())
 *   mbyte-extractd [-t MAX_TEXT_BYTES] [-s SECONDS] KIND FILE    one file, by hand
 *
 * KIND is the module's (sx_kind, sx_content_kind). A worker's output: one JSON line {"kind"}
 * (exit 0), {"kind","note"} when a limit cut the text (exit 0) or {"kind","error"} (exit 1),
 * then the text itself (UTF-8, at most MAX_TEXT_BYTES).
 *
 * Libraries: HTML with libxml2's HTML parser and XML with its XML parser (no network, no
 * entity expansion, no DTD loading); PDF with poppler-glib; DOCX, XLSX, PPTX, ODT, ODS, ODP
 * and EPUB are zip files read with libzip whose XML parts go through libxml2; e-mail (.eml)
 * through a small MIME walk of our own (headers, text/plain and text/html parts, base64 and
 * quoted-printable, nested multiparts at most 8 deep and 200 parts); image metadata (camera,
 * date, GPS as coordinates) with libexif.
 *
 * Limits, in layers: the module starts the server with RLIMIT_AS (not in sanitizer builds),
 * RLIMIT_NOFILE and no core dumps, and kills it when it stops answering; the server gives each
 * worker RLIMIT_CPU, RLIMIT_FSIZE (its output) and RLIMIT_NOFILE and kills it after a
 * wall-clock limit; the worker dies with the server (PR_SET_PDEATHSIG); the text stops at
 * MAX_TEXT_BYTES, every zip entry is inflated to at most 4 * MAX_TEXT_BYTES (a zip bomb inflates
 * no further), and the SECONDS budget is checked between pages, entries and MIME parts (what
 * was read by then is indexed).
 *
 * Threads: one per process (the server forks before any library work). No shared state.
 */
#include "search.h"
#include "spawn.h"
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <jansson.h>
#include <libexif/exif-data.h>
#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <poppler.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <signal.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

/* LeakSanitizer (sanitizer builds): glib and poppler keep process-lifetime caches that this
 * one-shot process never frees; our own allocations stay checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libglib\nleak:libgobject\nleak:libgio\nleak:libpoppler\nleak:libfontconfig\n";
}

/* ------------------------------------------------------------ XML/HTML --- */

static bool block_element(const char *name)
{
    static const char *const blocks[] = {"p", "br", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5",
                                         "h6", "title", "row", "c", "t", "si", "tab", "sp", "s", "a:p", "h", NULL};
    const char *colon = strchr(name, ':');
    if (colon)
        name = colon + 1;
    for (int i = 0; blocks[i]; i++)
        if (!strcasecmp(name, blocks[i]))
            return true;
    return false;
}

static void walk(sx_text *c, xmlNode *n, int depth)
{
    for (; n && !c->full && depth < 256; n = n->next) {
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
            if (n->content)
                sx_puts(c, (const char *)n->content);
        } else if (n->type == XML_ELEMENT_NODE) {
            const char *name = (const char *)n->name;
            if (!strcasecmp(name, "script") || !strcasecmp(name, "style"))
                continue;
            walk(c, n->children, depth + 1);
            /* words of neighbouring cells, paragraphs and runs must not run together */
            sx_puts(c, block_element(name) ? "\n" : "");
            if (!strcasecmp(name, "t") || !strcasecmp(name, "v") || !strcasecmp(name, "span"))
                sx_puts(c, " ");
        }
    }
}

static const int xml_opts = XML_PARSE_NONET | XML_PARSE_RECOVER | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                            XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA;

static int put_xml(sx_text *c, const char *data, size_t n, bool html)
{
    if (n > (size_t)INT32_MAX)
        return -1;
    xmlDoc *doc = html ? htmlReadMemory(data, (int)n, NULL, NULL,
                                        HTML_PARSE_NONET | HTML_PARSE_RECOVER | HTML_PARSE_NOERROR |
                                            HTML_PARSE_NOWARNING | HTML_PARSE_NOBLANKS)
                       : xmlReadMemory(data, (int)n, NULL, NULL, xml_opts);
    if (!doc)
        return -1;
    walk(c, xmlDocGetRootElement(doc), 0);
    xmlFreeDoc(doc);
    sx_puts(c, "\n");
    return 0;
}

/* ------------------------------------------------------------------ zip --- */

static int zip_entry(sx_text *c, zip_t *z, zip_int64_t i, bool html)
{
    zip_stat_t st;
    if (zip_stat_index(z, (zip_uint64_t)i, 0, &st) || !(st.valid & ZIP_STAT_SIZE))
        return -1;
    size_t cap = c->max * 4 + 1024;
    size_t want = st.size < cap ? (size_t)st.size : cap;
    zip_file_t *f = zip_fopen_index(z, (zip_uint64_t)i, 0);
    if (!f)
        return -1;
    char *buf = malloc(want + 1);
    zip_int64_t got = buf ? zip_fread(f, buf, want) : -1;
    zip_fclose(f);
    int rc = -1;
    if (got >= 0)
        rc = put_xml(c, buf, (size_t)got, html);
    free(buf);
    return rc;
}

static bool name_matches(const char *name, const char *prefix, const char *suffix)
{
    size_t n = strlen(name), p = strlen(prefix), s = strlen(suffix);
    return n >= p + s && !strncmp(name, prefix, p) && !strcmp(name + n - s, suffix);
}

/* Office Open XML, OpenDocument and EPUB: the parts that hold the text. */
static int put_zip(sx_text *c, const unsigned char *data, size_t n, const char *kind, char *why, size_t whylen)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, n, 0, &ze);
    zip_t *z = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : NULL;
    if (!z) {
        snprintf(why, whylen, "not a readable zip file: %s", zip_error_strerror(&ze));
        if (src)
            zip_source_free(src);
        zip_error_fini(&ze);
        return -1;
    }
    zip_error_fini(&ze);
    zip_int64_t count = zip_get_num_entries(z, 0);
    int parts = 0;
    for (int pass = 0; pass < 2; pass++) /* shared strings and text first, then the rest */
        for (zip_int64_t i = 0; i < count && !sx_out_of_time(c); i++) {
            const char *e = zip_get_name(z, (zip_uint64_t)i, 0);
            if (!e)
                continue;
            bool html = false, take = false;
            if (pass == 0)
                take = !strcmp(e, "word/document.xml") || !strcmp(e, "xl/sharedStrings.xml") ||
                       !strcmp(e, "content.xml") || !strcmp(e, "meta.xml") || !strcmp(e, "docProps/core.xml");
            else {
                take = name_matches(e, "ppt/slides/slide", ".xml") || name_matches(e, "xl/worksheets/sheet", ".xml") ||
                       name_matches(e, "word/header", ".xml") || name_matches(e, "word/footer", ".xml") ||
                       name_matches(e, "word/footnotes", ".xml");
                if (!strcmp(kind, "ebook") &&
                    (name_matches(e, "", ".xhtml") || name_matches(e, "", ".html") || name_matches(e, "", ".htm")))
                    take = html = true;
            }
            if (take && zip_entry(c, z, i, html) == 0)
                parts++;
        }
    zip_discard(z);
    if (!parts) {
        snprintf(why, whylen, "no text part found in the %s", kind);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ pdf --- */

static int put_pdf(sx_text *c, const unsigned char *data, size_t n, char *why, size_t whylen)
{
    GBytes *bytes = g_bytes_new_static(data, n);
    GError *ge = NULL;
    PopplerDocument *doc = poppler_document_new_from_bytes(bytes, NULL, &ge);
    if (!doc) {
        snprintf(why, whylen, "not a readable PDF: %s", ge ? ge->message : "unknown error");
        if (ge)
            g_error_free(ge);
        g_bytes_unref(bytes);
        return -1;
    }
    gchar *title = poppler_document_get_title(doc);
    if (title) {
        sx_puts(c, title);
        sx_puts(c, "\n");
        g_free(title);
    }
    int pages = poppler_document_get_n_pages(doc);
    for (int i = 0; i < pages && !sx_out_of_time(c); i++) {
        PopplerPage *pg = poppler_document_get_page(doc, i);
        if (!pg)
            continue;
        gchar *t = poppler_page_get_text(pg);
        if (t) {
            sx_puts(c, t);
            sx_puts(c, "\n");
            g_free(t);
        }
        g_object_unref(pg);
    }
    g_object_unref(doc);
    g_bytes_unref(bytes);
    return 0;
}

/* ----------------------------------------------------------------- EXIF --- */

static void exif_tag(sx_text *c, ExifData *ed, ExifIfd ifd, ExifTag tag, const char *label)
{
    ExifEntry *e = exif_content_get_entry(ed->ifd[ifd], tag);
    char v[256];
    if (!e || !exif_entry_get_value(e, v, sizeof v) || !*v)
        return;
    sx_puts(c, label);
    sx_puts(c, v);
    sx_puts(c, "\n");
}

/* GPS degrees, minutes, seconds as a signed decimal. */
static bool gps_coord(ExifData *ed, ExifTag tag, ExifTag ref, double *out)
{
    ExifEntry *e = exif_content_get_entry(ed->ifd[EXIF_IFD_GPS], tag);
    if (!e || e->format != EXIF_FORMAT_RATIONAL || e->components < 3)
        return false;
    ExifByteOrder o = exif_data_get_byte_order(ed);
    double v = 0, div = 1;
    for (int i = 0; i < 3; i++, div *= 60) {
        ExifRational r = exif_get_rational(e->data + 8 * i, o);
        if (!r.denominator)
            return false;
        v += (double)r.numerator / r.denominator / div;
    }
    ExifEntry *re = exif_content_get_entry(ed->ifd[EXIF_IFD_GPS], ref);
    if (re && re->data && re->size && (re->data[0] == 'S' || re->data[0] == 'W'))
        v = -v;
    *out = v;
    return true;
}

static int put_exif(sx_text *c, const unsigned char *data, size_t n, char *why, size_t whylen)
{
    ExifData *ed = exif_data_new_from_data(data, (unsigned int)(n > 0xFFFFFFFFu ? 0xFFFFFFFFu : n));
    if (!ed) {
        snprintf(why, whylen, "no EXIF data");
        return 0;
    }
    exif_tag(c, ed, EXIF_IFD_0, EXIF_TAG_MAKE, "Camera: ");
    exif_tag(c, ed, EXIF_IFD_0, EXIF_TAG_MODEL, "Model: ");
    exif_tag(c, ed, EXIF_IFD_EXIF, EXIF_TAG_DATE_TIME_ORIGINAL, "Taken: ");
    exif_tag(c, ed, EXIF_IFD_0, EXIF_TAG_IMAGE_DESCRIPTION, "Description: ");
    exif_tag(c, ed, EXIF_IFD_0, EXIF_TAG_ARTIST, "Artist: ");
    exif_tag(c, ed, EXIF_IFD_EXIF, EXIF_TAG_USER_COMMENT, "Comment: ");
    double lat, lon;
    if (gps_coord(ed, (ExifTag)EXIF_TAG_GPS_LATITUDE, (ExifTag)EXIF_TAG_GPS_LATITUDE_REF, &lat) &&
        gps_coord(ed, (ExifTag)EXIF_TAG_GPS_LONGITUDE, (ExifTag)EXIF_TAG_GPS_LONGITUDE_REF, &lon)) {
        char b[96];
        snprintf(b, sizeof b, "GPS: %.6f, %.6f\n", lat, lon);
        sx_puts(c, b);
    }
    exif_data_unref(ed);
    return 0;
}

/* ----------------------------------------------------------------- e-mail --- */

static int unhex(int ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Decode base64 (skipping anything outside the alphabet) or quoted-printable into a new buffer. */
static unsigned char *decode_cte(const char *s, size_t n, const char *cte, size_t *outn)
{
    unsigned char *o = malloc(n + 1);
    size_t k = 0;
    if (!o)
        return NULL;
    if (cte && !strncasecmp(cte, "base64", 6)) {
        unsigned acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
            const char *al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            const char *p = s[i] ? strchr(al, s[i]) : NULL;
            if (!p)
                continue;
            acc = acc << 6 | (unsigned)(p - al);
            if ((bits += 6) >= 8) {
                bits -= 8;
                o[k++] = (unsigned char)(acc >> bits);
            }
        }
    } else if (cte && !strncasecmp(cte, "quoted-printable", 16)) {
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '=' && i + 1 < n && (s[i + 1] == '\n' || s[i + 1] == '\r')) {
                i += s[i + 1] == '\r' && i + 2 < n && s[i + 2] == '\n' ? 2 : 1;
            } else if (s[i] == '=' && i + 2 < n && unhex(s[i + 1]) >= 0 && unhex(s[i + 2]) >= 0) {
                o[k++] = (unsigned char)(unhex(s[i + 1]) << 4 | unhex(s[i + 2]));
                i += 2;
            } else
                o[k++] = (unsigned char)s[i];
        }
    } else {
        memcpy(o, s, n);
        k = n;
    }
    *outn = k;
    return o;
}

/* The value of header `name` in the header block [h, h+n) (first occurrence, unfolded
 * into out), or false. */
static bool header(const char *h, size_t n, const char *name, char *out, size_t outn)
{
    size_t ln = strlen(name);
    for (size_t i = 0; i < n;) {
        const char *eol = memchr(h + i, '\n', n - i);
        size_t len = eol ? (size_t)(eol - (h + i)) : n - i;
        if (len > ln && !strncasecmp(h + i, name, ln) && h[i + ln] == ':') {
            size_t k = 0, j = i + ln + 1;
            while (j < n && k + 1 < outn) {
                if (h[j] == '\r' || h[j] == '\n') {
                    size_t nx = h[j] == '\r' && j + 1 < n && h[j + 1] == '\n' ? j + 2 : j + 1;
                    if (nx < n && (h[nx] == ' ' || h[nx] == '\t')) { /* folded */
                        j = nx;
                        continue;
                    }
                    break;
                }
                out[k++] = h[j++];
            }
            out[k] = 0;
            char *p = out;
            while (*p == ' ' || *p == '\t')
                p++;
            memmove(out, p, strlen(p) + 1);
            return true;
        }
        i += len + 1;
    }
    return false;
}

/* A parameter of a header value: boundary="x" or charset=utf-8. */
static bool param(const char *v, const char *name, char *out, size_t outn)
{
    size_t ln = strlen(name);
    for (const char *p = v; (p = strcasestr(p, name)); p += ln) {
        if (p != v && p[-1] != ';' && p[-1] != ' ' && p[-1] != '\t')
            continue;
        const char *q = p + ln;
        while (*q == ' ')
            q++;
        if (*q != '=')
            continue;
        q++;
        while (*q == ' ')
            q++;
        size_t k = 0;
        if (*q == '"') {
            q++;
            while (*q && *q != '"' && k + 1 < outn)
                out[k++] = *q++;
        } else
            while (*q && *q != ';' && *q != ' ' && *q != '\t' && *q != '\r' && k + 1 < outn)
                out[k++] = *q++;
        out[k] = 0;
        return k > 0;
    }
    return false;
}

/* Bytes in the MIME charset `cs` (ISO-8859-x, Windows-125x, KOI8-R, Shift_JIS, ... anything
 * glibc's iconv knows) as UTF-8 into the text. No charset, UTF-8 or US-ASCII, or one iconv does
 * not know: sx_put_text's guess (UTF-8, UTF-16 with a BOM, else Latin-1). A byte the charset
 * does not map becomes U+FFFD and the rest goes on. */
static void put_charset(sx_text *c, const unsigned char *d, size_t n, const char *cs)
{
    iconv_t cd = (iconv_t)-1;
    if (cs && *cs && strcasecmp(cs, "utf-8") && strcasecmp(cs, "utf8") && strcasecmp(cs, "us-ascii"))
        cd = iconv_open("UTF-8", cs);
    if (cd == (iconv_t)-1) {
        sx_put_text(c, d, n);
        return;
    }
    char out[4096];
    char *in = (char *)d;
    size_t left = n;
    while (left && !c->full) {
        char *o = out;
        size_t room = sizeof out;
        size_t r = iconv(cd, &in, &left, &o, &room);
        sx_put(c, out, (size_t)(o - out));
        if (r == (size_t)-1 && errno != E2BIG) { /* EILSEQ or EINVAL (cut at the end): skip a byte */
            sx_puts(c, "\xEF\xBF\xBD");
            in++, left--;
            iconv(cd, NULL, NULL, NULL, NULL);
        }
    }
    iconv_close(cd);
}

/* "=?charset?B|Q?text?=" words of a header (RFC 2047), decoded from their charset. */
static void put_header_value(sx_text *c, const char *v)
{
    while (*v) {
        const char *s = strstr(v, "=?");
        if (!s) {
            sx_puts(c, v);
            return;
        }
        sx_put(c, v, (size_t)(s - v));
        const char *q1 = strchr(s + 2, '?');
        const char *q2 = q1 ? strchr(q1 + 1, '?') : NULL;
        const char *e = q2 ? strstr(q2 + 1, "?=") : NULL;
        if (!e || q2 != q1 + 2) {
            sx_put(c, s, 2);
            v = s + 2;
            continue;
        }
        char enc = (char)toupper((unsigned char)q1[1]);
        size_t n = (size_t)(e - (q2 + 1)), dn = 0;
        char *tmp = malloc(n + 1);
        if (tmp) {
            memcpy(tmp, q2 + 1, n);
            tmp[n] = 0;
            if (enc == 'Q')
                for (char *p = tmp; *p; p++)
                    if (*p == '_')
                        *p = ' ';
            unsigned char *d = decode_cte(tmp, n, enc == 'B' ? "base64" : "quoted-printable", &dn);
            char cs[64];
            snprintf(cs, sizeof cs, "%.*s", (int)(q1 - (s + 2)), s + 2);
            char *star = strchr(cs, '*'); /* RFC 2231: "charset*language" */
            if (star)
                *star = 0;
            if (d)
                put_charset(c, d, dn, cs);
            free(d);
            free(tmp);
        }
        v = e + 2;
    }
}

static void put_entity(sx_text *c, const char *s, size_t n, int depth, int *parts, bool top);
static void put_mime(sx_text *c, const char *s, size_t n, const char *boundary, int depth, int *parts);

/* One MIME entity: headers, then a body by its type. */
static void put_entity(sx_text *c, const char *s, size_t n, int depth, int *parts, bool top)
{
    if (depth > 8 || ++*parts > 200 || sx_out_of_time(c))
        return;
    size_t hl = 0; /* the header block ends at the first empty line */
    const char *body = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' && (i + 1 < n && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < n && s[i + 2] == '\n')))) {
            hl = i + 1;
            body = s + i + 1 + (s[i + 1] == '\r' ? 2 : 1);
            break;
        }
    if (n && (s[0] == '\n' || (s[0] == '\r' && n > 1 && s[1] == '\n'))) /* no headers at all */
        hl = 0, body = s + (s[0] == '\r' ? 2 : 1);
    if (!body)
        hl = n, body = s + n;
    size_t bl = (size_t)(s + n - body);
    char v[1024], ct[1024] = "text/plain", cte[64] = "", cs[64] = "";
    if (top)
        for (const char *const *h = (const char *const[]){"From", "To", "Cc", "Date", "Subject", NULL}; *h; h++)
            if (header(s, hl, *h, v, sizeof v)) {
                sx_puts(c, *h);
                sx_puts(c, ": ");
                put_header_value(c, v);
                sx_puts(c, "\n");
            }
    if (header(s, hl, "Content-Type", v, sizeof v))
        snprintf(ct, sizeof ct, "%s", v);
    header(s, hl, "Content-Transfer-Encoding", cte, sizeof cte);
    param(ct, "charset", cs, sizeof cs);
    if (!strncasecmp(ct, "multipart/", 10)) {
        char b[200];
        if (param(ct, "boundary", b, sizeof b))
            put_mime(c, body, bl, b, depth + 1, parts);
        return;
    }
    if (!strncasecmp(ct, "message/rfc822", 14)) {
        put_entity(c, body, bl, depth + 1, parts, true);
        return;
    }
    bool html = !strncasecmp(ct, "text/html", 9);
    if (strncasecmp(ct, "text/", 5))
        return; /* attachments: their names are in the headers we skip; bytes are not text */
    size_t dn = 0;
    unsigned char *d = decode_cte(body, bl, cte, &dn);
    if (!d)
        return;
    if (html && *cs) { /* the part's charset, not a guess: UTF-8 first, then the HTML parser */
        sx_text u;
        sx_text_init(&u, c->max, 3600);
        put_charset(&u, d, dn, cs);
        put_xml(c, u.p ? u.p : "", u.n, true);
        free(u.p);
    } else if (html)
        put_xml(c, (const char *)d, dn, true);
    else
        put_charset(c, d, dn, cs);
    sx_puts(c, "\n");
    free(d);
}

/* The parts of a multipart body, between lines starting with "--boundary". */
static void put_mime(sx_text *c, const char *s, size_t n, const char *boundary, int depth, int *parts)
{
    char delim[204];
    size_t bl = (size_t)snprintf(delim, sizeof delim, "--%s", boundary);
    if (bl >= sizeof delim)
        return;
    const char *part = NULL, *line = s;
    while (line < s + n && !sx_out_of_time(c)) {
        const char *nl = memchr(line, '\n', (size_t)(s + n - line));
        const char *next = nl ? nl + 1 : s + n;
        if ((size_t)(s + n - line) >= bl && !memcmp(line, delim, bl)) {
            if (part)
                put_entity(c, part, (size_t)(line - part), depth, parts, false);
            if ((size_t)(s + n - line) >= bl + 2 && line[bl] == '-' && line[bl + 1] == '-')
                return; /* the closing delimiter */
            part = next;
        }
        line = next;
    }
    if (part && part < s + n)
        put_entity(c, part, (size_t)(s + n - part), depth, parts, false);
}

/* ------------------------------------------------------------------ main --- */

/* The whole file (the module hands at most max_file_mb of it). */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) || st.st_size < 0) {
        if (f)
            fclose(f);
        return NULL;
    }
    unsigned char *b = malloc((size_t)st.st_size + 1);
    *len = b ? fread(b, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    return b;
}

static int extract(sx_text *c, const char *kind, const unsigned char *data, size_t len, char *why, size_t whylen)
{
    if (!strcmp(kind, "pdf"))
        return put_pdf(c, data, len, why, whylen);
    if (!strcmp(kind, "document") || !strcmp(kind, "spreadsheet") || !strcmp(kind, "presentation") ||
        !strcmp(kind, "ebook"))
        return put_zip(c, data, len, kind, why, whylen);
    if (!strcmp(kind, "image"))
        return put_exif(c, data, len, why, whylen);
    if (!strcmp(kind, "email")) {
        int parts = 0;
        put_entity(c, (const char *)data, len, 0, &parts, true);
        return 0;
    }
    if (!strcmp(kind, "html") || !strcmp(kind, "xml")) {
        if (put_xml(c, (const char *)data, len, !strcmp(kind, "html")) && sx_looks_text(data, len))
            sx_put_text(c, data, len); /* not well-formed enough even to recover: index it as text */
        return 0;
    }
    snprintf(why, whylen, "mbyte-extractd does not read files of kind %s", kind);
    return -1;
}

/* Tests only (MBYTE_EXTRACTD_TEST=<dir>, passed on by the module from mbyted's environment): a
 * file holding SEGFAULT-ME ends this process on SIGSEGV (the default action, as a decoder bug
 * would in a release build), one holding HANG-ME writes its pid to <dir>/hangs and sleeps. */
static void test_switch(const unsigned char *data, size_t len)
{
    const char *dir = getenv("MBYTE_EXTRACTD_TEST");
    if (!dir || !*dir)
        return;
    if (memmem(data, len, "SEGFAULT-ME", 11)) {
        signal(SIGSEGV, SIG_DFL); /* past a sanitizer's handler */
        raise(SIGSEGV);
    }
    if (memmem(data, len, "HANG-ME", 7)) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/hangs", dir);
        FILE *f = fopen(p, "a");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        }
        for (;;)
            pause();
    }
}

/* The text of one file on stdout (the format at the top). 0, or 1 when it is unreadable. */
static int extract_file(const char *kind, const char *path, size_t max_text, double seconds)
{
    size_t len = 0;
    unsigned char *data = slurp(path, &len);
    char why[200] = "";
    sx_text c;
    sx_text_init(&c, max_text, seconds);
    int rc = -1;
    if (!data)
        snprintf(why, sizeof why, "mbyte-extractd cannot read its input");
    else {
        test_switch(data, len);
        rc = extract(&c, kind, data, len, why, sizeof why);
    }
    free(data);
    sx_result r = {0};
    sx_finish(&c, max_text, seconds, &r);
    json_t *o = json_pack("{s:s}", "kind", kind);
    if (rc)
        json_object_set_new(o, "error", json_string(why));
    else if (*r.reason)
        json_object_set_new(o, "note", json_string(r.reason));
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    printf("%s\n", line ? line : "{}");
    if (!rc && r.len)
        fwrite(r.text, 1, r.len, stdout);
    free(line);
    sx_free(&r);
    fflush(stdout); /* before any exit-time check (LeakSanitizer) could end the process */
    return rc ? 1 : 0;
}

/* --serve DIR: one request per line on stdin, "<n> <kind> <max text bytes> <seconds>", for the
 * file DIR/<n>.in; a worker forked per request (the libraries are loaded once, here, so a file
 * costs a fork, not a program start) writes DIR/<n>.out under its own limits (CPU and wall clock
 * seconds + 5, output size, open files; it dies with this process) and this process answers one
 * line on stdout: "exit <code>", "signal <n>" or "timeout". This process itself never parses a
 * file, so nothing a file does can reach the next one. */
static int serve(const char *dir)
{
    char line[256];
    pid_t self = getpid();
    while (fgets(line, sizeof line, stdin)) {
        unsigned n;
        char kind[32];
        unsigned long long max_text;
        double secs;
        if (sscanf(line, "%u %31s %llu %lf", &n, kind, &max_text, &secs) != 4 || secs < 0 || secs > 3600) {
            printf("error bad request\n");
            fflush(stdout);
            continue;
        }
        char in[PATH_MAX], out[PATH_MAX];
        snprintf(in, sizeof in, "%s/%u.in", dir, n);
        snprintf(out, sizeof out, "%s/%u.out", dir, n);
        int64_t limit = (int64_t)secs + 5;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* the module killed this server: its worker goes too */
            if (getppid() != self)
                _exit(1);
            sp_apply_limits(&(sp_limits){.cpu_s = limit, .fsize = (int64_t)max_text + (64 << 10), .nofile = 64});
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd < 0 || dup2(fd, 1) < 0)
                _exit(3);
            close(fd);
            int rc = extract_file(kind, in, (size_t)max_text, secs); /* its output is flushed */
#ifdef __SANITIZE_ADDRESS__
            exit(rc); /* LeakSanitizer checks the worker at exit */
#else
            _exit(rc); /* the libraries' exit handlers cost more than the extraction (~12 ms) */
#endif
        }
        if (pid < 0)
            printf("error fork: %s\n", strerror(errno));
        else {
            sp_result r;
            sp_wait(pid, limit, NULL, &r);
            if (r.timed_out)
                printf("timeout\n");
            else if (r.signal)
                printf("signal %d\n", r.signal);
            else
                printf("exit %d\n", r.code);
        }
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    xmlInitParser();
    if (argc == 3 && !strcmp(argv[1], "--serve"))
        return serve(argv[2]);
    size_t max_text = 2 << 20;
    double seconds = 10;
    int a = 1;
    for (; a + 1 < argc && argv[a][0] == '-'; a += 2) {
        if (!strcmp(argv[a], "-t"))
            max_text = (size_t)strtoull(argv[a + 1], NULL, 10);
        else if (!strcmp(argv[a], "-s"))
            seconds = strtod(argv[a + 1], NULL);
        else
            break;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: mbyte-extractd [-t MAX_TEXT_BYTES] [-s SECONDS] KIND FILE | mbyte-extractd --serve DIR\n");
        return 2;
    }
    return extract_file(argv[a], argv[a + 1], max_text, seconds);
}
