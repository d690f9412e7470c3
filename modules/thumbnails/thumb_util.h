/*
 * modules/thumbnails/thumb_util.h — the pure parts of the thumbnails module, shared by the
 * module, the worker (mbyte-thumbd), a unit test and a fuzz target: what a file is from its
 * first bytes, and whether a client takes WebP. No state; any thread.
 */
#ifndef THUMB_UTIL_H
#define THUMB_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    TH_NONE = 0, /* no thumbnail for this kind of file */
    TH_JPEG,
    TH_PNG,
    TH_GIF,
    TH_WEBP,
    TH_TIFF,
    TH_BMP,
    TH_HEIC,
    TH_PDF,
    TH_SVG, /* recognised, never rasterised: a placeholder */
    TH_TEXT,
    TH_KINDS
} thumb_kind;

/* How many leading bytes thumb_sniff looks at (text needs the most). */
enum { THUMB_SNIFF_BYTES = 4096 };

/* The kind of a file from its first n bytes (magic numbers, never the name). */
thumb_kind thumb_sniff(const uint8_t *b, size_t n);
/* "jpeg", "png", ... "text", "none". */
const char *thumb_kind_name(thumb_kind k);
/* ImageMagick's coder for an image kind ("JPEG", "PNG", ...), NULL for the others. */
const char *thumb_kind_coder(thumb_kind k);
/* The placeholder a kind gets: "image", "pdf", "text" or "file". */
const char *thumb_kind_class(thumb_kind k);
/* True when an Accept header names image/webp with q > 0. */
bool thumb_accepts_webp(const char *accept);

#endif
