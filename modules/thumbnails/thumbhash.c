/*
 * modules/thumbnails/thumbhash.c — ThumbHash encoder, written from the published algorithm
 * (evanw.github.io/thumbhash): average colour, then a small DCT of luminance (L), yellow-blue
 * (P), red-green (Q) and alpha (A), each AC factor quantised to 4 bits. The web page decodes
 * it (web/js/thumbs.js). Pure; any thread.
 */
#include "thumbhash.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int iround(double x) { return (int)floor(x + 0.5); } /* JavaScript's Math.round */

typedef struct {
    double dc, scale;
    double ac[64];
    int n;
} chan;

static void encode_channel(const double *c, int w, int h, int nx, int ny, chan *out)
{
    double fx[100];
    out->dc = out->scale = 0;
    out->n = 0;
    for (int cy = 0; cy < ny; cy++)
        for (int cx = 0; cx * ny < nx * (ny - cy); cx++) {
            double f = 0;
            for (int x = 0; x < w; x++)
                fx[x] = cos(M_PI / w * cx * (x + 0.5));
            for (int y = 0; y < h; y++) {
                double fy = cos(M_PI / h * cy * (y + 0.5));
                for (int x = 0; x < w; x++)
                    f += c[x + y * w] * fx[x] * fy;
            }
            f /= w * h;
            if (cx || cy) {
                if (out->n < 64)
                    out->ac[out->n++] = f;
                if (fabs(f) > out->scale)
                    out->scale = fabs(f);
            } else
                out->dc = f;
        }
    if (out->scale > 0)
        for (int i = 0; i < out->n; i++)
            out->ac[i] = 0.5 + 0.5 / out->scale * out->ac[i];
}

size_t thumbhash_encode(int w, int h, const uint8_t *rgba, uint8_t out[THUMBHASH_MAX])
{
    if (w < 1 || h < 1 || w > 100 || h > 100)
        return 0;
    int n = w * h;
    double ar = 0, ag = 0, ab = 0, aa = 0;
    for (int i = 0; i < n; i++) {
        double alpha = rgba[4 * i + 3] / 255.0;
        ar += alpha / 255.0 * rgba[4 * i];
        ag += alpha / 255.0 * rgba[4 * i + 1];
        ab += alpha / 255.0 * rgba[4 * i + 2];
        aa += alpha;
    }
    if (aa > 0)
        ar /= aa, ag /= aa, ab /= aa;
    int has_alpha = aa < n;
    int l_limit = has_alpha ? 5 : 7;
    int mx = w > h ? w : h;
    int lx = iround((double)l_limit * w / mx), ly = iround((double)l_limit * h / mx);
    lx = lx < 1 ? 1 : lx;
    ly = ly < 1 ? 1 : ly;
    double *l = malloc(sizeof(double) * 4 * (size_t)n);
    if (!l)
        return 0;
    double *p = l + n, *q = p + n, *a = q + n;
    for (int i = 0; i < n; i++) { /* composite atop the average colour */
        double alpha = rgba[4 * i + 3] / 255.0;
        double r = ar * (1 - alpha) + alpha / 255.0 * rgba[4 * i];
        double g = ag * (1 - alpha) + alpha / 255.0 * rgba[4 * i + 1];
        double b = ab * (1 - alpha) + alpha / 255.0 * rgba[4 * i + 2];
        l[i] = (r + g + b) / 3;
        p[i] = (r + g) / 2 - b;
        q[i] = r - g;
        a[i] = alpha;
    }
    chan cl, cp, cq, ca;
    encode_channel(l, w, h, lx > 3 ? lx : 3, ly > 3 ? ly : 3, &cl);
    encode_channel(p, w, h, 3, 3, &cp);
    encode_channel(q, w, h, 3, 3, &cq);
    if (has_alpha)
        encode_channel(a, w, h, 5, 5, &ca);
    free(l);

    int landscape = w > h;
    uint32_t h24 = (uint32_t)iround(63 * cl.dc) | (uint32_t)iround(31.5 + 31.5 * cp.dc) << 6 |
                   (uint32_t)iround(31.5 + 31.5 * cq.dc) << 12 | (uint32_t)iround(31 * cl.scale) << 18 |
                   (uint32_t)has_alpha << 23;
    uint32_t h16 = (uint32_t)(landscape ? ly : lx) | (uint32_t)iround(63 * cp.scale) << 3 |
                   (uint32_t)iround(63 * cq.scale) << 9 | (uint32_t)landscape << 15;
    memset(out, 0, THUMBHASH_MAX);
    out[0] = h24 & 255, out[1] = (h24 >> 8) & 255, out[2] = (h24 >> 16) & 255;
    out[3] = h16 & 255, out[4] = (h16 >> 8) & 255;
    size_t start = has_alpha ? 6 : 5, idx = 0;
    if (has_alpha)
        out[5] = (uint8_t)(iround(15 * ca.dc) | iround(15 * ca.scale) << 4);
    chan *cs[4] = {&cl, &cp, &cq, &ca};
    for (int k = 0; k < (has_alpha ? 4 : 3); k++)
        for (int i = 0; i < cs[k]->n; i++, idx++) {
            size_t at = start + (idx >> 1);
            if (at >= THUMBHASH_MAX)
                return 0;
            out[at] |= (uint8_t)(iround(15 * cs[k]->ac[i]) << ((idx & 1) << 2));
        }
    return start + (idx + 1) / 2;
}

void thumbhash_average(const uint8_t *hash, size_t n, double *r, double *g, double *b, double *a)
{
    if (n < 5) {
        *r = *g = *b = *a = 0;
        return;
    }
    uint32_t h = hash[0] | hash[1] << 8 | (uint32_t)hash[2] << 16;
    double l = (h & 63) / 63.0, p = ((h >> 6) & 63) / 31.5 - 1, q = ((h >> 12) & 63) / 31.5 - 1;
    double bb = l - 2.0 / 3 * p, rr = (3 * l - bb + q) / 2, gg = rr - q;
    *r = fmax(0, fmin(1, rr)), *g = fmax(0, fmin(1, gg)), *b = fmax(0, fmin(1, bb));
    *a = (h >> 23) && n > 5 ? (hash[5] & 15) / 15.0 : 1;
}

double thumbhash_aspect(const uint8_t *hash, size_t n)
{
    if (n < 5)
        return 1;
    int has_alpha = hash[2] & 0x80, landscape = hash[4] & 0x80;
    int lx = landscape ? (has_alpha ? 5 : 7) : hash[3] & 7;
    int ly = landscape ? hash[3] & 7 : (has_alpha ? 5 : 7);
    return ly ? (double)lx / ly : 1;
}
