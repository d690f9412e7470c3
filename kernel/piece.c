/*
 * piece.c — the pieces of a redundancy set (issue 21; docs/storage.md "Redundancy sets"):
 * the piece format and Reed-Solomon coding with Intel ISA-L. Pure: no I/O, no locks, any
 * thread; backend_set.c reads and writes the pieces, tests/unit/test_piece.c and
 * tests/fuzz/fuzz_piece.c check this file alone.
 *
 * An object (a chunk, or its ciphertext when the store encrypts) of L bytes is cut into k data
 * shards of S = ceil(L / k) bytes (the last zero-padded) and m parity shards of S bytes made from
 * them with a Cauchy matrix (gf_gen_cauchy1_matrix: every k x k submatrix of it is invertible,
 * so any k shards give the object back). A copy of a "copies" set is the same format with k = 1,
 * m = 0: the whole object. Each shard is kept as one piece:
 *
 *     "MBR1"  k  m  i  0   LE64 L   LE64 tag   shard (S bytes)   LE64 XXH3-64 of everything before it
 *
 * 24 + S + 8 bytes. The checksum finds a rotten or cut piece without the chunk's hash, so the
 * set knows which piece to leave out and rewrite; L lets the padding be trimmed. The tag is the
 * XXH3-64 of the whole object: an encrypted chunk sealed twice (a fresh nonce each time) gives two
 * objects under one name, and only pieces of one tag may be decoded together. The checksum is not
 * a defence against a forger (an encrypted store's AEAD is, one layer up).
 */
#include "fs.h"
#include <isa-l/erasure_code.h>
#include <string.h>
#include <xxhash.h>

static void le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

size_t piece_shard(uint64_t len, unsigned k) { return (size_t)((len + k - 1) / k); }

size_t piece_size(uint64_t len, unsigned k) { return PIECE_HDR + piece_shard(len, k) + PIECE_SUM; }

bool piece_geometry_ok(unsigned k, unsigned m)
{
    return k >= 1 && k + m <= PIECE_MAX && (m >= 1 || k == 1);
}

/* Header and checksum around a shard already at p + PIECE_HDR. */
static void seal(uint8_t *p, unsigned k, unsigned m, unsigned i, uint64_t len, uint64_t tag)
{
    memcpy(p, "MBR1", 4);
    p[4] = (uint8_t)k, p[5] = (uint8_t)m, p[6] = (uint8_t)i, p[7] = 0;
    le64_put(p + 8, len);
    le64_put(p + 16, tag);
    size_t body = PIECE_HDR + piece_shard(len, k);
    le64_put(p + body, XXH3_64bits(p, body));
}

int piece_parse_header(const uint8_t *p, size_t n, piece_hdr *h)
{
    if (n < PIECE_HDR || memcmp(p, "MBR1", 4) || p[7])
        return MB_EINTEGRITY;
    h->k = p[4], h->m = p[5], h->i = p[6];
    h->len = le64_get(p + 8);
    h->tag = le64_get(p + 16);
    if (!piece_geometry_ok(h->k, h->m) || h->i >= h->k + h->m || h->len == 0 || h->len > PIECE_OBJ_MAX)
        return MB_EINTEGRITY;
    return 0;
}

int piece_parse(const uint8_t *p, size_t n, piece_hdr *h)
{
    if (n < PIECE_HDR + PIECE_SUM || piece_parse_header(p, n, h))
        return MB_EINTEGRITY;
    size_t body = PIECE_HDR + piece_shard(h->len, h->k);
    if (n != body + PIECE_SUM || le64_get(p + body) != XXH3_64bits(p, body))
        return MB_EINTEGRITY;
    return 0;
}

/* The coding matrix ((k+m) x k, identity on top) and ISA-L's tables for rows `rows` of it. */
static void tables(unsigned k, unsigned m, uint8_t mat[PIECE_MAX * PIECE_MAX])
{
    gf_gen_cauchy1_matrix(mat, (int)(k + m), (int)k);
}

int piece_encode(unsigned k, unsigned m, const void *obj, size_t len, uint8_t *const out[])
{
    if (!piece_geometry_ok(k, m) || len == 0 || len > PIECE_OBJ_MAX)
        return MB_EINVAL;
    size_t s = piece_shard(len, k);
    uint8_t *data[PIECE_MAX], *par[PIECE_MAX];
    for (unsigned j = 0; j < k; j++) {
        size_t at = (size_t)j * s, n = at >= len ? 0 : len - at < s ? len - at : s;
        memcpy(out[j] + PIECE_HDR, (const uint8_t *)obj + at, n);
        memset(out[j] + PIECE_HDR + n, 0, s - n);
        data[j] = out[j] + PIECE_HDR;
    }
    if (m) {
        uint8_t mat[PIECE_MAX * PIECE_MAX], tbl[32 * PIECE_MAX * PIECE_MAX];
        tables(k, m, mat);
        ec_init_tables((int)k, (int)m, &mat[k * k], tbl);
        for (unsigned j = 0; j < m; j++)
            par[j] = out[k + j] + PIECE_HDR;
        ec_encode_data((int)s, (int)k, (int)m, tbl, data, par);
    }
    uint64_t tag = XXH3_64bits(obj, len);
    for (unsigned i = 0; i < k + m; i++)
        seal(out[i], k, m, i, len, tag);
    return 0;
}

int piece_decode(unsigned k, unsigned m, uint8_t *const have[], size_t len, uint8_t *obj)
{
    if (!piece_geometry_ok(k, m) || len == 0 || len > PIECE_OBJ_MAX)
        return MB_EINVAL;
    size_t s = piece_shard(len, k);
    unsigned src[PIECE_MAX], nsrc = 0;
    for (unsigned i = 0; i < k + m && nsrc < k; i++)
        if (have[i])
            src[nsrc++] = i;
    if (nsrc < k)
        return MB_ENOENT;
    uint8_t *shard[PIECE_MAX] = {0};
    uint8_t *tmp = NULL;
    unsigned lost[PIECE_MAX], nlost = 0;
    for (unsigned j = 0; j < k; j++)
        if (have[j])
            shard[j] = have[j] + PIECE_HDR;
        else
            lost[nlost++] = j;
    if (nlost) {
        /* Rows src of the matrix times the data give the pieces we have; its inverse's rows
         * `lost` give the missing data shards from them. */
        uint8_t mat[PIECE_MAX * PIECE_MAX], sub[PIECE_MAX * PIECE_MAX], inv[PIECE_MAX * PIECE_MAX],
            rows[PIECE_MAX * PIECE_MAX], tbl[32 * PIECE_MAX * PIECE_MAX];
        tables(k, m, mat);
        for (unsigned r = 0; r < k; r++)
            memcpy(&sub[r * k], &mat[src[r] * k], k);
        if (gf_invert_matrix(sub, inv, (int)k))
            return MB_EINTEGRITY; /* cannot happen with a Cauchy matrix */
        for (unsigned r = 0; r < nlost; r++)
            memcpy(&rows[r * k], &inv[lost[r] * k], k);
        ec_init_tables((int)k, (int)nlost, rows, tbl);
        uint8_t *in[PIECE_MAX], *outp[PIECE_MAX];
        for (unsigned r = 0; r < k; r++)
            in[r] = have[src[r]] + PIECE_HDR;
        tmp = xmalloc(nlost * s + 1);
        for (unsigned r = 0; r < nlost; r++)
            shard[lost[r]] = outp[r] = tmp + r * s;
        ec_encode_data((int)s, (int)k, (int)nlost, tbl, in, outp);
    }
    for (unsigned j = 0; j < k; j++) {
        size_t at = (size_t)j * s;
        if (at < len)
            memcpy(obj + at, shard[j], len - at < s ? len - at : s);
    }
    free(tmp);
    return 0;
}
