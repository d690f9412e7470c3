/* Fuzz target: the piece parser of redundancy sets (kernel/piece.c, docs/storage.md "Redundancy
 * sets"), which reads what a backend sends back. Invariants: a piece is accepted only at its exact
 * size for the length it claims, with a geometry and index in range, and its header alone
 * (piece_parse_header, for ranged reads) gives the same fields; a parsed copy (k = 1)
 * decodes to its shard; a piece made from the input (as an object) parses back to itself. */
#include "../../kernel/fs.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    piece_hdr h, hh;
    int head = piece_parse_header(data, n, &hh);
    if (head == 0 && (!piece_geometry_ok(hh.k, hh.m) || hh.i >= hh.k + hh.m || !hh.len || hh.len > PIECE_OBJ_MAX))
        __builtin_trap();
    if (piece_parse(data, n, &h) == 0) {
        if (n != piece_size(h.len, h.k) || !piece_geometry_ok(h.k, h.m) || h.i >= h.k + h.m || head ||
            h.k != hh.k || h.m != hh.m || h.i != hh.i || h.len != hh.len || h.tag != hh.tag)
            __builtin_trap();
        if (h.k == 1 && h.m == 0) {
            uint8_t *out = malloc(h.len);
            uint8_t *have[1] = {(uint8_t *)data};
            if (!out || piece_decode(1, 0, have, h.len, out) || memcmp(out, data + PIECE_HDR, h.len))
                __builtin_trap();
            free(out);
        }
    }
    if (n && n <= 65536) { /* the input as an object, 2+1: each piece parses as itself */
        size_t plen = piece_size(n, 2);
        uint8_t *buf = malloc(plen * 3), *p[3] = {buf, buf + plen, buf + 2 * plen};
        if (!buf || piece_encode(2, 1, data, n, p))
            __builtin_trap();
        for (unsigned i = 0; i < 3; i++)
            if (piece_parse(p[i], plen, &h) || h.i != i || h.len != n)
                __builtin_trap();
        free(buf);
    }
    return 0;
}
