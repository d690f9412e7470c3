/*
 * test_crypt.c — the chunk encryption format (kernel/crypt.c, docs/crypto.md): sizes and the
 * overhead bound, names that depend on the store's key, and that every change an attacker with
 * the backend could make (a flipped bit, blocks swapped, an object cut short or moved to another
 * chunk's name, another store's key) is refused instead of decrypted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../kernel/fs.h"
#include <sodium.h>
#include <string.h>

static const char *H = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
static const char *H2 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

static void keys(uint8_t nk[32], uint8_t ck[32], uint8_t seed)
{
    uint8_t dk[32];
    memset(dk, seed, sizeof dk);
    crypt_subkeys(dk, nk, ck);
}

static void test_overhead_is_under_one_percent_and_sizes_invert(void **st)
{
    (void)st;
    assert_int_equal(crypt_sealed_size(1), CRYPT_HDR + 1 + 16);
    assert_int_equal(crypt_sealed_size(CRYPT_BLOCK), CRYPT_HDR + CRYPT_BLOCK + 16);
    assert_int_equal(crypt_sealed_size(CRYPT_BLOCK + 1), CRYPT_HDR + CRYPT_BLOCK + 1 + 32);
    for (size_t len = 256 * 1024; len <= 4 * 1024 * 1024; len += 777777) {
        size_t s = crypt_sealed_size(len);
        assert_true((double)(s - len) / (double)len < 0.001);
        assert_int_equal(crypt_plain_size(s), (int64_t)len);
    }
    assert_int_equal(crypt_plain_size(CRYPT_HDR + 16), -1);
}

static void test_names_are_keyed_per_store_and_hide_the_hash(void **st)
{
    (void)st;
    uint8_t nk1[32], ck1[32], nk2[32], ck2[32];
    keys(nk1, ck1, 1);
    keys(nk2, ck2, 2);
    char a[CRYPT_NAME], b[CRYPT_NAME], c[CRYPT_NAME];
    assert_int_equal(crypt_name(nk1, H, a), 0);
    assert_int_equal(crypt_name(nk1, H, b), 0);
    assert_int_equal(crypt_name(nk2, H, c), 0);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 66);
    assert_memory_equal(a, "e/", 2);
    assert_null(strstr(a, H));
    assert_int_equal(crypt_name(nk1, "xyz", a), -1);
}

static void test_seal_open_round_trip_and_every_tampering_is_refused(void **st)
{
    (void)st;
    uint8_t nk[32], ck[32], nk2[32], ck2[32];
    keys(nk, ck, 7);
    keys(nk2, ck2, 8);
    size_t len = 3 * CRYPT_BLOCK + 1234;
    uint8_t *plain = malloc(len), *out = malloc(len);
    randombytes_buf(plain, len);
    size_t sl = crypt_sealed_size(len);
    uint8_t *obj = malloc(sl), *bad = malloc(sl);
    assert_int_equal(crypt_seal(ck, H, plain, len, obj), 0);
    assert_memory_equal(obj, "MBE1", 4);
    mb_err e = {0};
    assert_int_equal(crypt_open(ck, H, obj, sl, out, len, &e), 0);
    assert_memory_equal(out, plain, len);
    /* the same chunk sealed twice differs (random nonce prefix) */
    assert_int_equal(crypt_seal(ck, H, plain, len, bad), 0);
    assert_memory_not_equal(bad, obj, sl);
    /* one flipped bit in each block */
    for (size_t at = CRYPT_HDR + 5; at < sl; at += CRYPT_BLOCK + 16) {
        memcpy(bad, obj, sl);
        bad[at] ^= 1;
        assert_int_equal(crypt_open(ck, H, bad, sl, out, len, &e), MB_EINTEGRITY);
        assert_non_null(strstr(e.msg, "failed authentication"));
    }
    /* blocks 0 and 1 swapped */
    memcpy(bad, obj, sl);
    memcpy(bad + CRYPT_HDR, obj + CRYPT_HDR + CRYPT_BLOCK + 16, CRYPT_BLOCK + 16);
    memcpy(bad + CRYPT_HDR + CRYPT_BLOCK + 16, obj + CRYPT_HDR, CRYPT_BLOCK + 16);
    assert_int_equal(crypt_open(ck, H, bad, sl, out, len, &e), MB_EINTEGRITY);
    /* cut after whole blocks: the last remaining block is not marked last */
    size_t cut = 3 * CRYPT_BLOCK;
    assert_int_equal(crypt_open(ck, H, obj, crypt_sealed_size(cut), out, cut, &e), MB_EINTEGRITY);
    /* another chunk's name, another store's key, a wrong size */
    assert_int_equal(crypt_open(ck, H2, obj, sl, out, len, &e), MB_EINTEGRITY);
    assert_int_equal(crypt_open(ck2, H, obj, sl, out, len, &e), MB_EINTEGRITY);
    assert_int_equal(crypt_open(ck, H, obj, sl - 1, out, len, &e), MB_EINTEGRITY);
    for (size_t i = 0; i < len; i++) /* a refusal leaves no plaintext behind */
        if (out[i])
            fail_msg("byte %zu of a refused chunk was left in the buffer", i);
    free(plain);
    free(out);
    free(obj);
    free(bad);
}

static void test_wrapped_keys_open_only_with_their_master_key(void **st)
{
    (void)st;
    uint8_t mk[32], mk2[32], dk[32], back[32];
    randombytes_buf(mk, 32);
    randombytes_buf(mk2, 32);
    randombytes_buf(dk, 32);
    char w[256];
    assert_int_equal(crypt_wrap_with(mk, "0123456789abcdef", dk, w, sizeof w), 0);
    assert_memory_equal(w, "v1:0123456789abcdef:", 20);
    mb_err e = {0};
    assert_int_equal(crypt_unwrap_with(mk, "0123456789abcdef", w, back, &e), 0);
    assert_memory_equal(back, dk, 32);
    assert_int_equal(crypt_unwrap_with(mk, "fedcba9876543210", w, back, &e), MB_EPERM);
    assert_int_equal(crypt_unwrap_with(mk2, "0123456789abcdef", w, back, &e), MB_EINTEGRITY);
    w[40] = w[40] == 'a' ? 'b' : 'a';
    assert_int_equal(crypt_unwrap_with(mk, "0123456789abcdef", w, back, &e), MB_EINTEGRITY);
    assert_int_equal(crypt_unwrap_with(mk, "0123456789abcdef", "v1:short", back, &e), MB_EINVAL);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overhead_is_under_one_percent_and_sizes_invert),
        cmocka_unit_test(test_names_are_keyed_per_store_and_hide_the_hash),
        cmocka_unit_test(test_seal_open_round_trip_and_every_tampering_is_refused),
        cmocka_unit_test(test_wrapped_keys_open_only_with_their_master_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
