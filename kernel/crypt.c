/*
 * crypt.c — client-side encryption of chunks before they leave for an external backend
 * (issue 21; docs/crypto.md is the format, written so anyone can write a decrypter).
 *
 *   the master key (mbyte.yaml master_key: file:/path or transit:<key>) wraps each encrypted
 *     store's data key DK (32 random bytes) through the kernel's key-wrap registry (secret.c
 *     key_wrap, the calls api->key_* make); keys wrapped in the first format ("v1:", a 64-hex
 *     key file and XChaCha20-Poly1305) are still opened, and a rewrap moves them to the registry's;
 *   DK gives two subkeys by keyed BLAKE2b: NK names objects, CK encrypts them;
 *   an object is named "e/" + hex(BLAKE2b-256 keyed with NK of the chunk's raw SHA-256), so
 *     the backend learns neither contents nor which chunks two stores share;
 *   its bytes are "MBE1", a 16-byte random nonce prefix, then the chunk in 64 KiB blocks, each
 *     sealed with XChaCha20-Poly1305 (nonce = prefix || block number, additional data = chunk
 *     hash || block number || last-block flag): a block read alone can be checked and
 *     decrypted, and blocks cannot be moved, swapped between chunks or cut off unnoticed.
 *   Overhead: 20 bytes per object + 16 per 64 KiB block, 0.026 % of a 1 MiB chunk.
 *
 * Threads: any; no state of its own (the key providers guard theirs). Calls to a transit:
 * provider block on the network: workers and HTTP handlers only.
 */
#include "fs.h"
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char WRAP_AD[] = "mbyte data key v1";

/* mbyte.yaml master_key: read once at start, never replaced (a change needs a restart). */
static const char *master_ref(void) { return g_cfg ? g_cfg->master_key : NULL; }
int crypt_key_load(const char *source, uint8_t out[CRYPT_KEY], char kid[17], mb_err *err)
{
    if (!source || strncmp(source, "file:", 5) || source[5] != '/')
        return err_set(err, MB_EINVAL, "a key file must be given as file:/absolute/path (mbyte.yaml master_key)");
    const char *path = source + 5;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, MB_EINVAL, "the master key file %s cannot be opened: %s", path, strerror(errno));
    struct stat st;
    char text[80];
    ssize_t n = fstat(fd, &st) ? -1 : read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0)
        return err_set(err, MB_EIO, "the master key file %s cannot be read", path);
    if (st.st_mode & 077)
        return err_set(err, MB_EPERM, "the master key file %s must be readable by its owner only (chmod 600)", path);
    text[n] = 0;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        text[--n] = 0;
    size_t got = 0;
    if (n != 2 * CRYPT_KEY || sodium_hex2bin(out, CRYPT_KEY, text, (size_t)n, NULL, &got, NULL) || got != CRYPT_KEY) {
        sodium_memzero(text, sizeof text);
        return err_set(err, MB_EINVAL, "the master key file %s must hold 64 hex characters (openssl rand -hex 32)",
                       path);
    }
    sodium_memzero(text, sizeof text);
    uint8_t id[8];
    crypto_generichash(id, sizeof id, (const uint8_t *)"mbyte key id v1", 15, out, CRYPT_KEY);
    sodium_bin2hex(kid, 17, id, sizeof id);
    return 0;
}

bool crypt_available(mb_err *err)
{
    if (master_ref())
        return true;
    err_set(err, MB_EUNSUPP, "mbyte.yaml has no master_key (file:/path or transit:<key>)");
    return false;
}

int crypt_wrap_with(const uint8_t key[CRYPT_KEY], const char *kid, const uint8_t dk[CRYPT_KEY], char *out, size_t n)
{
    uint8_t box[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + CRYPT_KEY + crypto_aead_xchacha20poly1305_ietf_ABYTES];
    randombytes_buf(box, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    unsigned long long cl = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(box + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &cl, dk,
                                               CRYPT_KEY, (const uint8_t *)WRAP_AD, sizeof WRAP_AD - 1, NULL, box,
                                               key);
    char hex[2 * sizeof box + 1];
    sodium_bin2hex(hex, sizeof hex, box, sizeof box);
    int w = snprintf(out, n, "v1:%s:%s", kid, hex);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

int crypt_unwrap_with(const uint8_t key[CRYPT_KEY], const char *kid, const char *wrapped, uint8_t dk[CRYPT_KEY],
                      mb_err *err)
{
    uint8_t box[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + CRYPT_KEY + crypto_aead_xchacha20poly1305_ietf_ABYTES];
    size_t got = 0;
    if (!wrapped || strncmp(wrapped, "v1:", 3) || strlen(wrapped) != 3 + 16 + 1 + 2 * sizeof box ||
        wrapped[19] != ':' ||
        sodium_hex2bin(box, sizeof box, wrapped + 20, 2 * sizeof box, NULL, &got, NULL) || got != sizeof box)
        return err_set(err, MB_EINVAL, "a wrapped data key is not in the v1 format");
    if (strncmp(wrapped + 3, kid, 16))
        return err_set(err, MB_EPERM, "the data key was wrapped with master key %.16s, not with the one given (%s)",
                       wrapped + 3, kid);
    unsigned long long pl = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(dk, &pl, NULL, box + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                                                   sizeof box - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                                                   (const uint8_t *)WRAP_AD, sizeof WRAP_AD - 1, box, key))
        return err_set(err, MB_EINTEGRITY, "the wrapped data key does not open with this master key");
    return 0;
}

int crypt_key_wrap(const uint8_t dk[CRYPT_KEY], char **wrapped, mb_err *err)
{
    *wrapped = NULL;
    if (!crypt_available(err))
        return err->code;
    return key_wrap(master_ref(), dk, CRYPT_KEY, wrapped, err);
}

/* A key in the first format ("v1:<key id>:<hex>", made while the master key came from
 * MBYTE_MASTER_KEY): opened with the same key file given as master_key: file:/path (ref). */
static int legacy_unwrap(const char *ref, const char *wrapped, uint8_t dk[CRYPT_KEY], mb_err *err)
{
    if (strncmp(ref, "file:", 5))
        return err_set(err, MB_EPERM, "a data key wrapped by a key file (v1:) needs master_key: file:/path, not %s",
                       ref);
    uint8_t *k = sodium_malloc(CRYPT_KEY);
    if (!k)
        return err_set(err, MB_ENOMEM, "no locked memory for the master key");
    char kid[17];
    int rc = crypt_key_load(ref, k, kid, err);
    if (!rc)
        rc = crypt_unwrap_with(k, kid, wrapped, dk, err);
    sodium_free(k);
    return rc;
}

static bool is_legacy(const char *wrapped) { return wrapped && !strncmp(wrapped, "v1:", 3); }

static int unwrap_by(const char *ref, const char *wrapped, uint8_t dk[CRYPT_KEY], mb_err *err)
{
    return is_legacy(wrapped) ? legacy_unwrap(ref, wrapped, dk, err) : key_unwrap(ref, wrapped, dk, CRYPT_KEY, err);
}

/* mbyte.yaml previous_master_key: the master key before the present one (a move from a key
 * file to Vault transit, or to another key file or transit key). A data key that does not
 * open with master_key is tried with it, so stores stay readable until a rewrap has moved
 * every data key to master_key (POST /api/v1/admin/backends/rewrap); then it can go. */
static const char *previous_ref(void) { return g_cfg ? g_cfg->previous_master_key : NULL; }

int crypt_key_unwrap(const char *wrapped, uint8_t dk[CRYPT_KEY], mb_err *err)
{
    if (!crypt_available(err))
        return err->code;
    mb_err first = {0}, second = {0};
    int rc = unwrap_by(master_ref(), wrapped, dk, &first);
    if (!rc || !previous_ref()) {
        if (rc && err)
            *err = first;
        return rc;
    }
    if (!unwrap_by(previous_ref(), wrapped, dk, &second))
        return 0;
    return err_set(err, rc, "%s; with previous_master_key: %s", first.msg, second.msg);
}

int crypt_key_rewrap(const char *wrapped, char **out, mb_err *err)
{
    *out = NULL;
    if (!crypt_available(err))
        return err->code;
    mb_err e = {0};
    /* A key of master_key is rewrapped by its provider (transit: to the newest version,
     * without the key leaving Vault); one of the previous key (or of the first format) is
     * opened and wrapped again by master_key. */
    if (!is_legacy(wrapped) && (key_rewrap(master_ref(), wrapped, out, &e) == 0 || !previous_ref())) {
        if (e.code && err)
            *err = e;
        return e.code;
    }
    uint8_t dk[CRYPT_KEY];
    int rc = crypt_key_unwrap(wrapped, dk, err);
    if (!rc)
        rc = key_wrap(master_ref(), dk, CRYPT_KEY, out, err);
    sodium_memzero(dk, sizeof dk);
    return rc;
}

int crypt_key_rotate(mb_err *err)
{
    if (!crypt_available(err))
        return err->code;
    return key_rotate(master_ref(), err);
}

void crypt_subkeys(const uint8_t dk[CRYPT_KEY], uint8_t nk[CRYPT_KEY], uint8_t ck[CRYPT_KEY])
{
    crypto_generichash(nk, CRYPT_KEY, (const uint8_t *)"mbyte names v1", 14, dk, CRYPT_KEY);
    crypto_generichash(ck, CRYPT_KEY, (const uint8_t *)"mbyte chunks v1", 15, dk, CRYPT_KEY);
}

int crypt_name(const uint8_t nk[CRYPT_KEY], const char *hash, char out[CRYPT_NAME])
{
    uint8_t raw[32], h[32];
    size_t got = 0;
    if (sodium_hex2bin(raw, 32, hash, strlen(hash), NULL, &got, NULL) || got != 32)
        return -1;
    crypto_generichash(h, 32, raw, 32, nk, CRYPT_KEY);
    memcpy(out, "e/", 2);
    sodium_bin2hex(out + 2, 65, h, 32);
    return 0;
}

size_t crypt_sealed_size(size_t len)
{
    size_t blocks = (len + CRYPT_BLOCK - 1) / CRYPT_BLOCK;
    return CRYPT_HDR + len + blocks * crypto_aead_xchacha20poly1305_ietf_ABYTES;
}

/* Nonce and additional data of block i of a chunk of `blocks` blocks. */
static void block_params(const uint8_t prefix[16], const uint8_t hash[32], uint64_t i, uint64_t blocks,
                         uint8_t nonce[24], uint8_t ad[41])
{
    memcpy(nonce, prefix, 16);
    memcpy(ad, hash, 32);
    for (int b = 0; b < 8; b++)
        nonce[16 + b] = ad[32 + b] = (uint8_t)(i >> (8 * b));
    ad[40] = i + 1 == blocks;
}

int crypt_seal(const uint8_t ck[CRYPT_KEY], const char *hash, const void *in, size_t len, uint8_t *out)
{
    uint8_t raw[32];
    size_t got = 0;
    if (sodium_hex2bin(raw, 32, hash, strlen(hash), NULL, &got, NULL) || got != 32 || !len)
        return -1;
    memcpy(out, "MBE1", 4);
    randombytes_buf(out + 4, 16);
    uint64_t blocks = (len + CRYPT_BLOCK - 1) / CRYPT_BLOCK;
    uint8_t *w = out + CRYPT_HDR;
    for (uint64_t i = 0; i < blocks; i++) {
        size_t off = (size_t)i * CRYPT_BLOCK, n = len - off < CRYPT_BLOCK ? len - off : CRYPT_BLOCK;
        uint8_t nonce[24], ad[41];
        block_params(out + 4, raw, i, blocks, nonce, ad);
        unsigned long long cl = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(w, &cl, (const uint8_t *)in + off, n, ad, sizeof ad, NULL, nonce,
                                                   ck);
        w += cl;
    }
    return 0;
}

int64_t crypt_plain_size(uint64_t objlen)
{
    const uint64_t step = CRYPT_BLOCK + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (objlen <= CRYPT_HDR + crypto_aead_xchacha20poly1305_ietf_ABYTES)
        return -1;
    uint64_t body = objlen - CRYPT_HDR, blocks = (body + step - 1) / step;
    return (int64_t)(body - blocks * crypto_aead_xchacha20poly1305_ietf_ABYTES);
}

int crypt_open(const uint8_t ck[CRYPT_KEY], const char *hash, const uint8_t *obj, size_t objlen, uint8_t *out,
               size_t len, mb_err *err)
{
    uint8_t raw[32];
    size_t got = 0;
    if (sodium_hex2bin(raw, 32, hash, strlen(hash), NULL, &got, NULL) || got != 32) {
        sodium_memzero(out, len); /* every refusal leaves out wiped, as a failed block does */
        return err_set(err, MB_EINVAL, "a chunk name must be 64 hex characters");
    }
    if (objlen != crypt_sealed_size(len) || memcmp(obj, "MBE1", 4)) {
        sodium_memzero(out, len);
        return err_set(err, MB_EINTEGRITY,
                       "the encrypted object of chunk %.12s… is not one (%zu bytes, MBE1 of %zu expected)", hash,
                       objlen, crypt_sealed_size(len));
    }
    uint64_t blocks = (len + CRYPT_BLOCK - 1) / CRYPT_BLOCK;
    const uint8_t *r = obj + CRYPT_HDR;
    for (uint64_t i = 0; i < blocks; i++) {
        size_t off = (size_t)i * CRYPT_BLOCK, n = len - off < CRYPT_BLOCK ? len - off : CRYPT_BLOCK;
        uint8_t nonce[24], ad[41];
        block_params(obj + 4, raw, i, blocks, nonce, ad);
        unsigned long long pl = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(out + off, &pl, NULL, r,
                                                       n + crypto_aead_xchacha20poly1305_ietf_ABYTES, ad, sizeof ad,
                                                       nonce, ck)) {
            sodium_memzero(out, len);
            return err_set(err, MB_EINTEGRITY,
                           "block %llu of the encrypted object of chunk %.12s… failed authentication (damaged, or "
                           "another key)",
                           (unsigned long long)i, hash);
        }
        r += n + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    }
    return 0;
}
