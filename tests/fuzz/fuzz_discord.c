/* Fuzz target: Discord interaction requests (modules/discord/dc_interact.c, compiled in). The
 * input is three parts split at the first two newlines: an X-Signature-Ed25519 value, an
 * X-Signature-Timestamp value, and the body.
 * Invariants: the parser never reads past the body and, when it accepts, fills only sane values
 * (a type in range; for a command snowflake ids, a non-empty token of URL-safe bytes, search
 * words when it is a search); the signature check accepts the fuzzed signature only if it is
 * byte for byte the real signature of (timestamp, body) under the test key, always accepts
 * that real one, and refuses it for a body changed in one byte. */
#include "../../modules/discord/dc_interact.h"
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pk[0] && !pk[1]) {
        unsigned char seed[crypto_sign_SEEDBYTES];
        memset(seed, 7, sizeof seed);
        if (sodium_init() < 0)
            __builtin_trap();
        crypto_sign_seed_keypair(pk, sk, seed);
    }
    char *in = malloc(size + 1);
    memcpy(in, data, size);
    in[size] = 0;
    char *sig = in, *ts = memchr(in, '\n', size), *body = NULL;
    size_t blen = 0;
    if (ts) {
        *ts++ = 0;
        body = memchr(ts, '\n', size - (size_t)(ts - in));
        if (body) {
            *body++ = 0;
            blen = size - (size_t)(body - in);
        }
    }
    if (!body) {
        ts = "1700000000";
        body = in + size;
        blen = 0;
    }
    /* The body alone, copied so that a read past its end is caught. */
    unsigned char *b = malloc(blen ? blen : 1);
    memcpy(b, body, blen);
    dc_ix ix;
    if (dc_ix_parse(b, blen, &ix) == 0) {
        if (ix.type < 1 || ix.type > 100)
            __builtin_trap();
        if (ix.type == DC_IX_COMMAND) {
            if (!dc_snowflake(ix.app_id) || !dc_snowflake(ix.user) || !ix.token[0] ||
                strspn(ix.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != strlen(ix.token))
                __builtin_trap();
            if (ix.command == DC_CMD_SEARCH && !ix.words[0])
                __builtin_trap();
        }
    }
    size_t tl = strlen(ts);
    if (tl >= 1 && tl <= 32) {
        unsigned char real[crypto_sign_BYTES], *msg = malloc(tl + blen + 1);
        memcpy(msg, ts, tl);
        memcpy(msg + tl, b, blen);
        crypto_sign_detached(real, NULL, msg, tl + blen, sk);
        char hex[2 * crypto_sign_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, real, sizeof real);
        if (!dc_ix_verify(pk, hex, ts, b, blen))
            __builtin_trap();
        unsigned char got[crypto_sign_BYTES];
        size_t gl = 0;
        bool same = strlen(sig) == 2 * crypto_sign_BYTES &&
                    sodium_hex2bin(got, sizeof got, sig, strlen(sig), NULL, &gl, NULL) == 0 && gl == sizeof got &&
                    !memcmp(got, real, sizeof got);
        if (dc_ix_verify(pk, sig, ts, b, blen) != (int)same)
            __builtin_trap();
        if (blen) {
            b[blen / 2] ^= 1;
            if (dc_ix_verify(pk, hex, ts, b, blen))
                __builtin_trap();
        }
        free(msg);
    }
    free(b);
    free(in);
    return 0;
}
