/* Fuzz target: what the encryption layer reads from outside (kernel/crypt.c, docs/crypto.md): an
 * object a backend sends back for an encrypted store, and a wrapped data key (mbyte-decrypt reads
 * it from a manifest). Invariants: no input of its own is ever accepted as an object (it was not
 * sealed with the key: the forgery would be Poly1305's), whatever length is asked; the input sealed
 * as a chunk opens back to itself and, with any one byte changed, is refused with the output
 * wiped; a wrapped key never unwraps under a key it was not made with. */
#include "../../kernel/fs.h"
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static int ready;
    if (!ready)
        ready = sodium_init() >= 0 ? 1 : -1;
    if (ready < 0)
        __builtin_trap();
    uint8_t ck[CRYPT_KEY];
    memset(ck, 0x5a, sizeof ck);
    const char *hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    mb_err e = {0};
    int64_t plain = crypt_plain_size(n);
    size_t lens[3] = {plain > 0 ? (size_t)plain : 1, n, n > 1 ? n - 1 : 1};
    for (int k = 0; k < 3; k++) {
        uint8_t *out = malloc(lens[k]);
        if (!out || crypt_open(ck, hash, data, n, out, lens[k], &e) == 0)
            __builtin_trap();
        free(out);
    }
    if (n && n <= 1 << 18) { /* the input as a chunk: sealed, opened, and damaged */
        size_t sl = crypt_sealed_size(n);
        uint8_t *obj = malloc(sl), *back = malloc(n);
        if (!obj || !back || crypt_seal(ck, hash, data, n, obj) || crypt_plain_size(sl) != (int64_t)n ||
            crypt_open(ck, hash, obj, sl, back, n, &e) || memcmp(back, data, n))
            __builtin_trap();
        size_t at = (size_t)data[0] * 257 % sl;
        obj[at] ^= 0x01;
        if (crypt_open(ck, hash, obj, sl, back, n, &e) == 0)
            __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (back[i])
                __builtin_trap(); /* a refused object leaves no plaintext behind */
        free(obj);
        free(back);
    }
    char *s = malloc(n + 1); /* the input as a wrapped data key */
    if (!s)
        __builtin_trap();
    memcpy(s, data, n);
    s[n] = 0;
    uint8_t dk[CRYPT_KEY];
    if (crypt_unwrap_with(ck, "fuzz", s, dk, &e) == 0)
        __builtin_trap();
    free(s);
    return 0;
}
