/*
 * modules/thumbnails/thumbd.c — mbyte-thumbd, the thumbnail worker process (issue 18).
 *
 * The thumbnails module never decodes a picture inside mbyted: for each file it starts this
 * program (fork + exec, modules/thumbnails/thumbnails.c), which reads one file, writes its
 * thumbnails and exits. A decompression bomb, a decoder bug or a crash therefore ends only
 * this process; the module records the reason and the file gets the placeholder.
 *
 *   mbyte-thumbd [-m MB] IN OUT      thumbnails of IN: OUT-{64,256,1024}.{webp,jpg}; prints
 *                                    {"kind","hash"} or {"kind","error"}
 *                                    (exit 1) on stdout as one JSON line
 *   mbyte-thumbd --placeholders DIR  draws the default placeholders DIR/<class>-<size>.<ext>
 *
 * Limits, in layers: the parent sets RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE and RLIMIT_NOFILE
 * before exec; this program sets RLIMIT_AS to -m megabytes first thing (not in sanitizer
 * builds, whose shadow memory needs terabytes of address space); ImageMagick gets resource
 * limits (memory, map, disk, area, width, height, time, one thread) and the coder policy the
 * module writes (MAGICK_CONFIGURE_PATH: only the coders below, no delegates); the coder is
 * chosen by thumb_sniff from the magic bytes and forced with a "JPEG:" prefix, so
 * ImageMagick never guesses another one; the declared size is checked (MagickPingImage)
 * before any pixel is decoded; JPEGs are decoded shrunk (jpeg:size; a 12 MP one at 2000x1500).
 * PDFs are drawn by poppler-glib into cairo (Ghostscript never runs), text files
 * by cairo.
 *
 * Threads: one (ImageMagick's OpenMP is held to one thread). No shared state.
 */
#include "thumb_util.h"
#include "thumbhash.h"
#include <cairo.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <poppler.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <wand/MagickWand.h>

/* LeakSanitizer (sanitizer builds): fontconfig, glib and ImageMagick keep process-lifetime
 * caches that this one-shot process never frees; our own allocations stay checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig\nleak:libglib\nleak:libgobject\nleak:libMagickCore\nleak:libpoppler\nleak:libcairo\n"
           "leak:libheif\nleak:libde265\nleak:heic.so\n";
}

#define LONGEST 1024
static const int sizes[] = {1024, 256, 64};

static char reason[512];

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    if (reason[0])
        return; /* the first cause is the one to tell */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
}

static void wand_fail(MagickWand *w, const char *what)
{
    ExceptionType sev;
    char *d = MagickGetException(w, &sev);
    char buf[400];
    if (d && *d)
        snprintf(buf, sizeof buf, "%s: %s", what, d);
    else
        snprintf(buf, sizeof buf, "%s", what);
    fail("%s", buf);
    MagickRelinquishMemory(d);
}

/* ------------------------------------------------------------- sources --- */

/* A picture through ImageMagick with the coder forced, the size checked before decoding. */
static MagickWand *read_image(const char *in, thumb_kind k, int64_t max_pixels)
{
    char spec[4200];
    snprintf(spec, sizeof spec, "%s:%s[0]", thumb_kind_coder(k), in);
    MagickWand *w = NewMagickWand();
    if (MagickPingImage(w, spec) == MagickFalse) {
        /* a size over the width/height limits fails here, often without a message */
        wand_fail(w, "unreadable, or over the size limits (16384 px a side, 64 MP)");
        return DestroyMagickWand(w);
    }
    size_t iw = MagickGetImageWidth(w), ih = MagickGetImageHeight(w);
    if (!iw || !ih || (int64_t)iw * (int64_t)ih > max_pixels) {
        fail("declares %zux%zu pixels, more than the limit of %lld", iw, ih, (long long)max_pixels);
        return DestroyMagickWand(w);
    }
    ClearMagickWand(w);
    if (k == TH_JPEG) /* shrink-on-load: libjpeg decodes at a scale that keeps >= 1024 px, at */
        MagickSetOption(w, "jpeg:size", "1024x1024"); /* most 1/8 (IM6 takes the whole factor) */
    if (MagickReadImage(w, spec) == MagickFalse) {
        wand_fail(w, "undecodable");
        return DestroyMagickWand(w);
    }
    if (getenv("MBYTE_THUMBD_DEBUG"))
        fprintf(stderr, "decoded %zux%zu\n", MagickGetImageWidth(w), MagickGetImageHeight(w));
    MagickAutoOrientImage(w); /* EXIF orientation; also resets the tag */
    return w;
}

/* cairo ARGB32 on a little-endian machine is B,G,R,A in memory; an opaque background makes
 * the premultiplication moot. */
static MagickWand *from_surface(cairo_surface_t *s)
{
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    unsigned char *d = cairo_image_surface_get_data(s);
    unsigned char *packed = malloc((size_t)w * h * 4);
    if (!packed)
        return NULL;
    for (int y = 0; y < h; y++)
        memcpy(packed + (size_t)y * w * 4, d + (size_t)y * stride, (size_t)w * 4);
    MagickWand *mw = NewMagickWand();
    if (MagickConstituteImage(mw, (size_t)w, (size_t)h, "BGRA", CharPixel, packed) == MagickFalse) {
        wand_fail(mw, "internal");
        mw = DestroyMagickWand(mw);
    }
    free(packed);
    return mw;
}

/* The first page of a PDF, drawn by poppler into cairo with its longest side LONGEST. */
static MagickWand *read_pdf(const char *in)
{
    GError *ge = NULL;
    char abs[PATH_MAX];
    char *uri = realpath(in, abs) ? g_filename_to_uri(abs, NULL, &ge) : NULL;
    PopplerDocument *doc = uri ? poppler_document_new_from_file(uri, NULL, &ge) : NULL;
    g_free(uri);
    if (!doc) {
        fail("unreadable PDF: %s", ge ? ge->message : "");
        if (ge)
            g_error_free(ge);
        return NULL;
    }
    PopplerPage *page = poppler_document_get_n_pages(doc) > 0 ? poppler_document_get_page(doc, 0) : NULL;
    if (!page) {
        g_object_unref(doc);
        fail("PDF without pages");
        return NULL;
    }
    double pw, ph;
    poppler_page_get_size(page, &pw, &ph);
    if (pw < 1 || ph < 1 || pw > 1e5 || ph > 1e5) {
        g_object_unref(page);
        g_object_unref(doc);
        fail("PDF page of an unusable size");
        return NULL;
    }
    double scale = LONGEST / (pw > ph ? pw : ph);
    int w = (int)(pw * scale + 0.5), h = (int)(ph * scale + 0.5);
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w < 1 ? 1 : w, h < 1 ? 1 : h);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_scale(cr, scale, scale);
    poppler_page_render(page, cr);
    cairo_destroy(cr);
    MagickWand *mw = from_surface(s);
    cairo_surface_destroy(s);
    g_object_unref(page);
    g_object_unref(doc);
    return mw;
}

/* A text file's first lines in a monospaced font on a portrait page. */
static MagickWand *read_text(const char *in)
{
    FILE *f = fopen(in, "rb");
    if (!f) {
        fail("cannot open the input: %s", strerror(errno));
        return NULL;
    }
    char buf[THUMB_SNIFF_BYTES + 1];
    size_t n = fread(buf, 1, THUMB_SNIFF_BYTES, f);
    fclose(f);
    buf[n] = 0;
    int w = 768, h = LONGEST;
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_set_source_rgb(cr, 0.13, 0.13, 0.13);
    cairo_select_font_face(cr, "monospace", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 22);
    double y = 44;
    for (char *line = buf, *next; line && *line && y < h - 20; line = next, y += 28) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char shown[64];
        size_t k = 0;
        for (size_t i = 0; line[i] && k < 56; i++) /* tabs as spaces, no control bytes */
            shown[k++] = line[i] == '\t' ? ' ' : ((unsigned char)line[i] < 0x20 ? ' ' : line[i]);
        while (k && ((unsigned char)shown[k - 1] & 0xC0) == 0x80) /* never cut a UTF-8 sequence */
            k--;
        if (k && (unsigned char)shown[k - 1] >= 0xC0)
            k--;
        shown[k] = 0;
        cairo_move_to(cr, 28, y);
        cairo_show_text(cr, shown);
    }
    cairo_destroy(cr);
    MagickWand *mw = from_surface(s);
    cairo_surface_destroy(s);
    return mw;
}

/* ------------------------------------------------------------- outputs --- */

static int write_pair(MagickWand *w, const char *prefix, int size)
{
    char path[4200];
    snprintf(path, sizeof path, "WEBP:%s-%d.webp", prefix, size);
    MagickSetImageCompressionQuality(w, 80);
    if (MagickWriteImage(w, path) == MagickFalse) {
        wand_fail(w, "cannot write WebP");
        return -1;
    }
    MagickWand *j = CloneMagickWand(w);
    PixelWand *white = NewPixelWand();
    PixelSetColor(white, "white");
    MagickSetImageBackgroundColor(j, white);
    DestroyPixelWand(white);
    MagickSetImageAlphaChannel(j, RemoveAlphaChannel); /* JPEG has no alpha: on white */
    MagickSetImageCompressionQuality(j, 82);
    snprintf(path, sizeof path, "JPEG:%s-%d.jpg", prefix, size);
    int rc = MagickWriteImage(j, path) == MagickFalse ? -1 : 0;
    if (rc)
        wand_fail(j, "cannot write JPEG");
    DestroyMagickWand(j);
    return rc;
}

/* Each size from the one before (1024 -> 256 -> 64): the big decode is shrunk once. Never
 * enlarged. The 64 px one gives the ThumbHash. */
static int make_sizes(MagickWand *w, const char *prefix, char *hash_b64, size_t hn)
{
    MagickStripImage(w);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t iw = MagickGetImageWidth(w), ih = MagickGetImageHeight(w), s = (size_t)sizes[i];
        if (iw > s || ih > s) {
            size_t nw = iw >= ih ? s : (iw * s + ih / 2) / ih, nh = ih > iw ? s : (ih * s + iw / 2) / iw;
            if (MagickThumbnailImage(w, nw ? nw : 1, nh ? nh : 1) == MagickFalse) {
                wand_fail(w, "cannot scale");
                return -1;
            }
        }
        if (write_pair(w, prefix, sizes[i]))
            return -1;
    }
    size_t iw = MagickGetImageWidth(w), ih = MagickGetImageHeight(w);
    uint8_t *px = malloc(iw * ih * 4), hash[THUMBHASH_MAX];
    size_t n = 0;
    if (px && MagickExportImagePixels(w, 0, 0, iw, ih, "RGBA", CharPixel, px) != MagickFalse)
        n = thumbhash_encode((int)iw, (int)ih, px, hash);
    free(px);
    hash_b64[0] = 0;
    if (n) {
        gchar *b = g_base64_encode(hash, n);
        snprintf(hash_b64, hn, "%s", b);
        g_free(b);
    }
    return 0;
}

/* -------------------------------------------------------- placeholders --- */

/* A flat card with the class's colour and label: small, the same at every size. */
static int placeholders(const char *dir)
{
    mkdir(dir, 0755);
    static const struct {
        const char *cls, *label;
        double r, g, b;
    } cards[] = {{"image", "IMG", 0.36, 0.56, 0.78}, {"pdf", "PDF", 0.80, 0.26, 0.22},
                 {"text", "TXT", 0.45, 0.45, 0.50}, {"file", "FILE", 0.62, 0.62, 0.66}};
    for (size_t c = 0; c < sizeof cards / sizeof *cards; c++) {
        cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, LONGEST, LONGEST);
        cairo_t *cr = cairo_create(s);
        cairo_set_source_rgb(cr, 0.95, 0.95, 0.96);
        cairo_paint(cr);
        cairo_set_source_rgb(cr, cards[c].r, cards[c].g, cards[c].b);
        cairo_rectangle(cr, 192, 112, 640, 800);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
        cairo_set_font_size(cr, 170);
        cairo_text_extents_t te;
        cairo_text_extents(cr, cards[c].label, &te);
        cairo_move_to(cr, 512 - te.width / 2 - te.x_bearing, 512 - te.height / 2 - te.y_bearing);
        cairo_show_text(cr, cards[c].label);
        cairo_destroy(cr);
        MagickWand *w = from_surface(s);
        cairo_surface_destroy(s);
        char prefix[4200], hash[64];
        snprintf(prefix, sizeof prefix, "%s/%s", dir, cards[c].cls);
        int rc = w ? make_sizes(w, prefix, hash, sizeof hash) : -1;
        if (w)
            DestroyMagickWand(w);
        if (rc) {
            fprintf(stderr, "mbyte-thumbd: %s\n", reason);
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- main --- */

static void limits(int64_t mem_mb)
{
#ifndef __SANITIZE_ADDRESS__
    struct rlimit as = {(rlim_t)mem_mb << 20, (rlim_t)mem_mb << 20};
    setrlimit(RLIMIT_AS, &as);
#else
    (void)mem_mb;
#endif
    /* ImageMagick's own accounting, well inside the address-space cap */
    MagickSetResourceLimit(MemoryResource, (MagickSizeType)(mem_mb / 2) << 20);
    MagickSetResourceLimit(MapResource, (MagickSizeType)(mem_mb / 2) << 20);
    MagickSetResourceLimit(DiskResource, 0); /* no pixel cache on disk */
    MagickSetResourceLimit(AreaResource, 64 * 1000 * 1000);
    MagickSetResourceLimit(WidthResource, 16384);
    MagickSetResourceLimit(HeightResource, 16384);
    MagickSetResourceLimit(TimeResource, 60);
    MagickSetResourceLimit(ThreadResource, 1);
}

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout); /* before any exit-time check (LeakSanitizer) could end the process */
    free(s);
    json_decref(o);
}

int main(int argc, char **argv)
{
    int64_t mem_mb = 1024;
    int a = 1;
    if (a + 1 < argc && strcmp(argv[a], "-m") == 0) {
        mem_mb = strtoll(argv[a + 1], NULL, 10);
        a += 2;
    }
    if (mem_mb < 64)
        mem_mb = 64;
    MagickWandGenesis();
    limits(mem_mb);
    if (argc - a == 2 && strcmp(argv[a], "--placeholders") == 0) {
        int rc = placeholders(argv[a + 1]);
        MagickWandTerminus();
        return rc;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: mbyte-thumbd [-m MB] IN OUTPREFIX | mbyte-thumbd --placeholders DIR\n");
        return 2;
    }
    const char *in = argv[a], *out = argv[a + 1];
    uint8_t head[THUMB_SNIFF_BYTES];
    FILE *f = fopen(in, "rb");
    size_t n = f ? fread(head, 1, sizeof head, f) : 0;
    if (f)
        fclose(f);
    thumb_kind k = thumb_sniff(head, n);
    MagickWand *w = NULL;
    if (k == TH_PDF)
        w = read_pdf(in);
    else if (k == TH_TEXT)
        w = read_text(in);
    else if (k == TH_SVG)
        fail("SVG is never rasterised (scripts, external references)");
    else if (k == TH_NONE)
        fail("no thumbnail for this kind of file");
    else
        w = read_image(in, k, 64 * 1000 * 1000);
    char hash[64] = "";
    int rc = w ? make_sizes(w, out, hash, sizeof hash) : -1;
    json_t *o = json_pack("{s:s}", "kind", thumb_kind_name(k));
    if (rc == 0) {
        json_object_set_new(o, "hash", json_string(hash));
    } else
        json_object_set_new(o, "error", json_string(reason[0] ? reason : "failed"));
    emit(o);
    if (w)
        DestroyMagickWand(w);
    /* No MagickWandTerminus: it unloads the coder modules, and a leak report would then name no
     * library. The process ends here; the system takes everything back. */
    return rc ? 1 : 0;
}
