/*
 * modules/thumbnails/thumbhash.h — ThumbHash (Evan Wallace's published algorithm, our own C
 * code): a ~25-byte picture of a picture, drawn blurred by the web page before the thumbnail
 * arrives. Pure functions, no state, any thread.
 */
#ifndef THUMBHASH_H
#define THUMBHASH_H
#include <stddef.h>
#include <stdint.h>

enum { THUMBHASH_MAX = 32 };

/* Encode w x h RGBA pixels (w, h <= 100) into out (THUMBHASH_MAX bytes); returns the
 * length, or 0 for a size it does not take. */
size_t thumbhash_encode(int w, int h, const uint8_t *rgba, uint8_t out[THUMBHASH_MAX]);
/* The average colour a hash carries, each 0..1. */
void thumbhash_average(const uint8_t *hash, size_t n, double *r, double *g, double *b, double *a);
/* The approximate aspect ratio (width / height) a hash carries. */
double thumbhash_aspect(const uint8_t *hash, size_t n);

#endif
