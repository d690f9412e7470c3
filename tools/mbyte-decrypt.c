/*
 * tools/mbyte-decrypt — recover one file from a backend's objects with no server running
 * (issue 21; the format is docs/crypto.md). Inputs: the master key file, the file's manifest
 * (GET /api/v1/stores/{sid}/manifest/{path}, saved while the server ran: its placement with the
 * wrapped data key and its chunks in order) and a directory holding the bucket's objects under
 * their names (e.g. `rclone copy s3a:bucket DIR`).
 *
 *   mbyte-decrypt --key /etc/mbyte/master.key --manifest report.json --objects DIR [--prefix P] --out FILE
 *   mbyte-decrypt --datakey store7.key --manifest report.json --objects DIR [--prefix P] --out FILE
 *
 * A store on a redundancy set (docs/storage.md "Redundancy sets"): --objects once per member, in
 * the placement's "of" order (a member whose copy is lost: any path that does not exist). Piece
 * i is read from the i-th directory, named <prefix>k<k>m<m>p<i>/<object> there or, as WebDAV and
 * rclone keep it, <prefix>k<k>m<m>p<i>/[e/]<aa>/<name>; any k sound pieces of one object give it
 * back (kernel/piece.c, ISA-L), any one sound copy of a "copies" set.
 *
 * --key: the master key file (master_key: file:/path) opens the manifest's wrapped data key, in
 * either format (v1: of the first release, mbkw1: since). --datakey: a file holding the store's
 * unwrapped data key (64 hex, GET /api/v1/admin/stores/{sid}/datakey), for a master key kept in
 * Vault transit, which no tool outside the server can reach.
 *
 * Every chunk is authenticated block by block and then checked against its SHA-256, and the
 * whole file against the manifest's: on any mismatch nothing is left at FILE and the exit
 * status is 1 with the chunk named. Plain (unencrypted) placements work too.
 * Single-threaded; uses kernel/crypt.c for the format.
 */
#include "fs.h"
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mbyte-decrypt: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* The whole file at path (malloc'd into *out), or -1. */
static ssize_t slurp(const char *path, uint8_t **out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = xmalloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            b = xrealloc(b, cap *= 2);
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return -1;
    }
    *out = b;
    return (ssize_t)n;
}

static void hex_sha256(const uint8_t *p, size_t n, char out[65])
{
    uint8_t md[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(md, p, n);
    sodium_bin2hex(out, 65, md, sizeof md);
}

#define DIRS_MAX PIECE_MAX

/* Object `name` of a redundancy set (placement pl) from its pieces in dirs (one per member):
 * its length with *out (malloc'd), or -1. The first sound piece names the object (its tag); the
 * others must be of it. */
static ssize_t set_object(const json_t *pl, const char *const dirs[], size_t ndirs, const char *prefix,
                          const char *name, uint8_t **out)
{
    json_t *ec = json_object_get(pl, "erasure");
    unsigned k = ec ? (unsigned)jint(ec, "data") : 1, m = ec ? (unsigned)jint(ec, "parity") : 0, got = 0;
    size_t n = json_array_size(json_object_get(pl, "of"));
    if (!piece_geometry_ok(k, m) || n > DIRS_MAX)
        return -1;
    uint8_t *have[PIECE_MAX] = {0}, *raw[PIECE_MAX] = {0};
    piece_hdr first = {0};
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    for (size_t i = 0; i < n && i < ndirs && got < k; i++) {
        unsigned pi = ec ? (unsigned)i : 0;
        char path[8192];
        snprintf(path, sizeof path, "%s/%sk%um%up%u/%s", dirs[i], prefix, k, m, pi, name);
        ssize_t l = slurp(path, &raw[i]);
        if (l < 0) {
            snprintf(path, sizeof path, "%s/%sk%um%up%u/%.*s%.2s/%s", dirs[i], prefix, k, m, pi, (int)(base - name),
                     name, base, base);
            l = slurp(path, &raw[i]);
        }
        piece_hdr h;
        if (l < 0 || piece_parse(raw[i], (size_t)l, &h) || h.k != k || h.m != m || h.i != pi ||
            (got && (h.tag != first.tag || h.len != first.len)) || have[pi]) {
            if (l >= 0)
                fprintf(stderr, "mbyte-decrypt: %s is damaged or of another object; passed over\n", path);
            continue;
        }
        if (!got++)
            first = h;
        have[pi] = raw[i];
    }
    ssize_t rc = -1;
    if (got >= k) {
        *out = xmalloc(first.len);
        rc = piece_decode(k, m, have, first.len, *out) ? -1 : (ssize_t)first.len;
        if (rc < 0)
            free(*out);
    }
    for (size_t i = 0; i < PIECE_MAX; i++)
        free(raw[i]);
    return rc;
}

/* One chunk's bytes into *data (malloc'd, n bytes): 0, or 1 with the reason printed. */
static int chunk_bytes(json_t *c, const json_t *pl, const char *const dirs[], size_t ndirs, const char *prefix,
                       bool enc, const uint8_t nk[32], const uint8_t ck[32], uint8_t **data)
{
    const char *h = mb_jstr(c, "h");
    size_t n = (size_t)jint(c, "n");
    if (!h || strlen(h) != 64)
        return fail("the manifest names a chunk without a 64-hex hash");
    uint8_t *out = xmalloc(n ? n : 1);
    const char *inl = mb_jstr(c, "i");
    if (inl) { /* kept in the server's database, never on the backend: the manifest carries it */
        size_t got = 0;
        if (sodium_base642bin(out, n, inl, strlen(inl), NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL) ||
            got != n) {
            free(out);
            return fail("chunk %s: its inline bytes are not base64 of its size", h);
        }
    } else {
        char name[CRYPT_NAME], path[8192];
        if (enc && crypt_name(nk, h, name)) {
            free(out);
            return fail("chunk %s: bad hash", h);
        }
        snprintf(path, sizeof path, "%s/%s%s", dirs[0], prefix, enc ? name : h);
        uint8_t *obj = NULL;
        bool set = json_object_get(pl, "of") != NULL;
        if (set)
            snprintf(path, sizeof path, "the pieces of %s", enc ? name : h);
        ssize_t ol = set ? set_object(pl, dirs, ndirs, prefix, enc ? name : h, &obj) : slurp(path, &obj);
        if (ol < 0) {
            free(out);
            return fail("chunk %s: its object %s cannot be read", h, path);
        }
        mb_err e = {0};
        int rc = 0;
        if (enc)
            rc = crypt_open(ck, h, obj, (size_t)ol, out, n, &e);
        else if ((size_t)ol != n)
            rc = err_set(&e, MB_EINTEGRITY, "object %s has %zd bytes, not the chunk's %zu", path, ol, n);
        else
            memcpy(out, obj, n);
        free(obj);
        if (rc) {
            free(out);
            return fail("%s", e.msg);
        }
    }
    char got[65];
    hex_sha256(out, n, got);
    if (strcmp(got, h)) {
        free(out);
        return fail("chunk %s: the bytes recovered have SHA-256 %s; not written", h, got);
    }
    *data = out;
    return 0;
}

/* A data key file: 64 hex characters, a newline allowed. */
static int read_datakey(const char *path, uint8_t dk[32], mb_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_set(err, MB_EINVAL, "the data key file %s cannot be opened: %s", path, strerror(errno));
    char text[80] = {0};
    size_t n = fread(text, 1, sizeof text - 1, f), got = 0;
    fclose(f);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        n--;
    int rc = n != 64 || sodium_hex2bin(dk, 32, text, n, NULL, &got, NULL) || got != 32
                 ? err_set(err, MB_EINVAL, "the data key file %s must hold the 64 hex characters of a store's data key",
                           path)
                 : 0;
    sodium_memzero(text, sizeof text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *keyf = NULL, *dkf = NULL, *manf = NULL, *dirs[DIRS_MAX] = {0}, *prefix = "", *outf = NULL;
    size_t ndirs = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--key"))
            keyf = argv[i + 1];
        else if (!strcmp(argv[i], "--datakey"))
            dkf = argv[i + 1];
        else if (!strcmp(argv[i], "--manifest"))
            manf = argv[i + 1];
        else if (!strcmp(argv[i], "--objects") && ndirs < DIRS_MAX)
            dirs[ndirs++] = argv[i + 1];
        else if (!strcmp(argv[i], "--prefix"))
            prefix = argv[i + 1];
        else if (!strcmp(argv[i], "--out"))
            outf = argv[i + 1];
        else
            return fail("unknown option %s", argv[i]);
    }
    if (!manf || !ndirs || !outf || argc % 2 == 0) {
        fprintf(stderr, "usage: mbyte-decrypt --key KEYFILE|--datakey DATAKEYFILE --manifest MANIFEST.json --objects DIR "
                        "[--objects DIR (a set: one per member)]... [--prefix P] --out FILE\n");
        return 2;
    }
    if (sodium_init() < 0)
        return fail("libsodium cannot start");
    json_error_t je;
    json_t *m = json_load_file(manf, 0, &je);
    if (!m || !json_is_array(json_object_get(m, "chunks")))
        return fail("%s is not a manifest (%s)", manf, m ? "no chunks" : je.text);
    json_t *pl = json_object_get(m, "placement");
    bool enc = json_is_true(json_object_get(pl, "encrypt"));
    uint8_t *keys = sodium_malloc(96); /* mk, nk, ck */
    if (!keys)
        return fail("no locked memory");
    if (enc) {
        if (!keyf == !dkf)
            return fail("the file is encrypted: --key (the master key file) or --datakey (the store's data key) "
                        "is needed, one of them");
        mb_err e = {0};
        uint8_t dk[32];
        if (dkf && read_datakey(dkf, dk, &e))
            return fail("%s", e.msg);
        if (keyf) {
            char src[4200], kid[17];
            snprintf(src, sizeof src, "%s%s", strncmp(keyf, "file:", 5) ? "file:" : "", keyf);
            const char *w = mb_jstr(pl, "key");
            int rc = w && !strncmp(w, "v1:", 3)
                         ? (crypt_key_load(src, keys, kid, &e) || crypt_unwrap_with(keys, kid, w, dk, &e))
                         : key_unwrap(src, w, dk, sizeof dk, &e);
            if (rc)
                return fail("%s", e.msg);
        }
        crypt_subkeys(dk, keys + 32, keys + 64);
        sodium_memzero(dk, sizeof dk);
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.partial", outf);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail("cannot create %s: %s", tmp, strerror(errno));
    crypto_hash_sha256_state whole;
    crypto_hash_sha256_init(&whole);
    uint64_t total = 0;
    size_t i;
    json_t *c;
    int rc = 0;
    json_array_foreach(json_object_get(m, "chunks"), i, c) {
        uint8_t *data = NULL;
        if ((rc = chunk_bytes(c, pl, dirs, ndirs, prefix, enc, keys + 32, keys + 64, &data)))
            break;
        size_t n = (size_t)jint(c, "n");
        crypto_hash_sha256_update(&whole, data, n);
        total += n;
        bool ok = write(fd, data, n) == (ssize_t)n;
        free(data);
        if (!ok) {
            rc = fail("cannot write %s: %s", tmp, strerror(errno));
            break;
        }
    }
    uint8_t md[32];
    char got[65];
    crypto_hash_sha256_final(&whole, md);
    sodium_bin2hex(got, sizeof got, md, sizeof md);
    if (!rc && (total != (uint64_t)jint(m, "size") || (mb_jstr(m, "sha256") && strcmp(got, mb_jstr(m, "sha256")))))
        rc = fail("the whole file does not match the manifest (SHA-256 %s, want %s)", got,
                  mb_jstr(m, "sha256") ? mb_jstr(m, "sha256") : "?");
    if (!rc && (fsync(fd) || rename(tmp, outf)))
        rc = fail("cannot finish %s: %s", outf, strerror(errno));
    close(fd);
    if (rc)
        unlink(tmp);
    sodium_free(keys);
    json_decref(m);
    return rc;
}
