/*
 * secret.c — secret references and key wrapping (issue 20, docs/security.md).
 *
 * Any string value in conf.d may be a reference instead of a value: `env:NAME`, `file:/path`
 * (a file only its owner can read), or `<scheme>:<rest>` for a scheme a module registered
 * (the vault module's `vault:<mount>/<path>#<key>[@version]`). cfg.c and modmgr.c hand each
 * parsed YAML document to secret_resolve_tree, which swaps every reference for its value, so
 * a module's configuration JSON only ever holds values. Errors name the reference and the
 * file, never a value; nothing here logs a value.
 *
 * Key wrapping (api->key_wrap and neighbours): a data key is wrapped under a key reference,
 * "file:/path" (built in: a 32-byte master key file, libsodium secretbox) or "<scheme>:<name>"
 * for a registered key-wrap provider (the vault module's "transit:<key>").
 *
 * The providers of both kinds live in owner-tagged registries (registry.c): a provider call
 * enters the owning module's busy count, so it is never unloaded under a call, and its
 * registrations go when it is unloaded (secret_remove_owner, from modmgr).
 *
 * Every read is noted in a small table of (reader, reference, digest of the value): the first
 * read and a read that sees a new value go to the read observer (secret_http.c turns that into
 * the "secret.read" event the audit module records). The digest is a keyed BLAKE2b with a key
 * made at start, so the table says nothing about a value to whoever reads memory dumps later.
 *
 * Threads: any. The registries have their own rwlocks; `reads_mu` guards the read table.
 * This file sits in the base layer: it calls modref.c, registry.c, util.c and log.c only, and
 * reaches higher layers through the function pointers they set (observer, change callback).
 */
#include "kernel.h"
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_MAX (64 * 1024) /* a file: secret larger than this is surely not a secret */
#define SCHEME_MAX 31
#define MASTER_KEY_BYTES crypto_secretbox_KEYBYTES
#define FILE_WRAP_PREFIX "mbkw1:"
#define READS_MAX 1024

/* ---------------------------------------------------------- the parser --- */

static bool scheme_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }

/* A vault-style body: <mount>/<path>#<key>[@<version>], each part non-empty, no spaces. */
static int parse_kv_body(const char *ref, const char *b, secret_ref *out, mb_err *err)
{
    const char *hash = strrchr(b, '#');
    const char *slash = strchr(b, '/');
    if (!slash || slash == b || !hash || hash < slash + 2)
        return err_set(err, MB_EINVAL, "%s: a vault reference reads <mount>/<path>#<key>[@version]", ref);
    const char *at = strchr(hash, '@');
    size_t keylen = at ? (size_t)(at - hash - 1) : strlen(hash + 1);
    if (keylen == 0 || keylen >= sizeof out->key)
        return err_set(err, MB_EINVAL, "%s: the key after '#' is missing or too long", ref);
    if ((size_t)(hash - b) >= sizeof out->path)
        return err_set(err, MB_EINVAL, "%s: the path is too long", ref);
    for (const char *p = b; p < hash; p++)
        if ((unsigned char)*p <= ' ' || *p == '?' || *p == '%' || (*p == '/' && (p[1] == '/' || p + 1 == hash)) ||
            (*p == '.' && (p == b || p[-1] == '/') && (p[1] == '/' || p + 1 == hash || (p[1] == '.' &&
                                                                                       (p[2] == '/' || p + 2 == hash)))))
            return err_set(err, MB_EINVAL, "%s: the path has an empty, '.' or '..' segment or a space, '?' or '%%'",
                           ref);
    for (const char *p = hash + 1; p < hash + 1 + keylen; p++)
        if ((unsigned char)*p <= ' ')
            return err_set(err, MB_EINVAL, "%s: the key holds a space or a control character", ref);
    memcpy(out->path, b, (size_t)(hash - b));
    out->path[hash - b] = 0;
    memcpy(out->key, hash + 1, keylen);
    out->key[keylen] = 0;
    out->version = 0;
    if (at) {
        uint64_t v;
        if (!parse_u64(at + 1, &v) || v == 0 || v > 1000000000)
            return err_set(err, MB_EINVAL, "%s: the version after '@' must be a whole number from 1", ref);
        out->version = (int64_t)v;
    }
    return 0;
}

int secret_ref_parse(const char *s, secret_ref *out, mb_err *err)
{
    memset(out, 0, sizeof *out);
    size_t n = 0;
    while (n <= SCHEME_MAX && scheme_char(s[n]))
        n++;
    if (n == 0 || n > SCHEME_MAX || s[n] != ':')
        return err_set(err, MB_EINVAL, "'%.40s' is not a reference (<scheme>:<name>)", s);
    memcpy(out->scheme, s, n);
    const char *b = s + n + 1;
    if (!*b || strlen(b) >= sizeof out->rest)
        return err_set(err, MB_EINVAL, "%.40s: the name after '%s:' is missing or too long", s, out->scheme);
    if (!utf8_valid(b, strlen(b)))
        return err_set(err, MB_EINVAL, "%s: the reference is not UTF-8 text", out->scheme);
    snprintf(out->rest, sizeof out->rest, "%s", b);
    if (!strcmp(out->scheme, "env")) {
        if (!((*b >= 'A' && *b <= 'Z') || (*b >= 'a' && *b <= 'z') || *b == '_') ||
            strspn(b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != strlen(b))
            return err_set(err, MB_EINVAL, "%s: an environment variable name is letters, digits and '_'", s);
        return 0;
    }
    if (!strcmp(out->scheme, "file")) {
        if (*b != '/')
            return err_set(err, MB_EINVAL, "%s: a file reference needs an absolute path", s);
        return 0;
    }
    if (!strcmp(out->scheme, "vault"))
        return parse_kv_body(s, b, out, err);
    return 0;
}

/* ---------------------------------------------------------- registries --- */

typedef struct pentry {
    mb_module *owner;
    char scheme[SCHEME_MAX + 1];
    mb_secret_ops sops;
    mb_keywrap_ops kops;
    void *ctx;
} pentry;
REG_ENTRY(pentry);

static const reg_ops prov_ops = {.size = sizeof(pentry)};
static registry secret_provs = REG_INIT(&prov_ops);
static registry wrap_provs = REG_INIT(&prov_ops);

static bool has_scheme(const void *e, const void *key) { return !strcmp(((const pentry *)e)->scheme, key); }
static bool any_entry(const void *e, const void *key) { return (void)e, (void)key, true; }

/* Register or remove (ops NULL; only the owner's entry). One provider per scheme: a reload's
 * new copy takes the scheme over from the old one. */
static int provider_set(registry *r, mb_module *self, const char *scheme, const void *ops, size_t opsize,
                        void *ctx, mb_err *err)
{
    size_t n = scheme ? strlen(scheme) : 0;
    if (n == 0 || n > SCHEME_MAX || strspn(scheme, "abcdefghijklmnopqrstuvwxyz0123456789_") != n ||
        !strcmp(scheme, "env") || (r == &secret_provs && !strcmp(scheme, "file")) ||
        (r == &wrap_provs && !strcmp(scheme, "file")))
        return err_set(err, MB_EINVAL, "'%.40s' cannot be a provider scheme (a-z, 0-9, _; not env or file)",
                       scheme ? scheme : "");
    pentry have;
    if (reg_get(r, has_scheme, scheme, &have, false) && (ops || have.owner == self))
        reg_remove(r, has_scheme, scheme);
    if (!ops)
        return 0;
    pentry e = {.owner = self, .ctx = ctx};
    snprintf(e.scheme, sizeof e.scheme, "%s", scheme);
    size_t given = *(const size_t *)ops; /* both ops structs start with their size */
    memcpy(r == &secret_provs ? (void *)&e.sops : (void *)&e.kops, ops, given < opsize ? given : opsize);
    return reg_add(r, &e, err);
}

int secret_provider_set(mb_module *self, const char *scheme, const mb_secret_ops *ops, void *ctx, mb_err *err)
{
    if (ops && !ops->get)
        return err_set(err, MB_EINVAL, "a secret provider needs a get function");
    return provider_set(&secret_provs, self, scheme, ops, sizeof(mb_secret_ops), ctx, err);
}

int keywrap_provider_set(mb_module *self, const char *scheme, const mb_keywrap_ops *ops, void *ctx, mb_err *err)
{
    return provider_set(&wrap_provs, self, scheme, ops, sizeof(mb_keywrap_ops), ctx, err);
}

void secret_remove_owner(mb_module *owner)
{
    reg_remove_owner(&secret_provs, owner);
    reg_remove_owner(&wrap_provs, owner);
}

bool secret_is_ref(const char *s)
{
    size_t n = 0;
    while (n <= SCHEME_MAX && scheme_char(s[n]))
        n++;
    if (n == 0 || n > SCHEME_MAX || s[n] != ':')
        return false;
    char scheme[SCHEME_MAX + 1];
    memcpy(scheme, s, n);
    scheme[n] = 0;
    /* vault is reserved even before its module is loaded: a reference to it must fail with
     * "no provider", never be taken as a literal value. */
    return !strcmp(scheme, "env") || !strcmp(scheme, "file") || !strcmp(scheme, "vault") ||
           reg_get(&secret_provs, has_scheme, scheme, NULL, false);
}

/* ------------------------------------------------------- the read table --- */

typedef struct {
    char who[72];
    char ref[160];
    uint8_t digest[16];
} read_note;

static pthread_mutex_t reads_mu = PTHREAD_MUTEX_INITIALIZER;
static read_note reads[READS_MAX];
static size_t n_reads;
static uint8_t digest_key[crypto_generichash_KEYBYTES];
static bool digest_key_made;
static void (*read_observer)(const char *who, const char *ref);
static void (*change_fn)(void);

void secret_set_callbacks(void (*on_read)(const char *who, const char *ref), void (*on_change)(void))
{
    read_observer = on_read;
    change_fn = on_change;
}

void secrets_changed(void)
{
    if (change_fn)
        change_fn();
}

/* Note a successful read; tell the observer about a first read or a new value. */
static void note_read(const char *who, const char *ref, const char *value, size_t n)
{
    uint8_t d[16];
    pthread_mutex_lock(&reads_mu);
    if (!digest_key_made) {
        randombytes_buf(digest_key, sizeof digest_key);
        digest_key_made = true;
    }
    crypto_generichash(d, sizeof d, (const uint8_t *)value, n, digest_key, sizeof digest_key);
    bool tell = true;
    size_t i;
    for (i = 0; i < n_reads; i++)
        if (!strcmp(reads[i].who, who) && !strcmp(reads[i].ref, ref))
            break;
    if (i < n_reads) {
        tell = memcmp(reads[i].digest, d, sizeof d) != 0;
        memcpy(reads[i].digest, d, sizeof d);
    } else if (n_reads < READS_MAX) {
        snprintf(reads[n_reads].who, sizeof reads[0].who, "%s", who);
        snprintf(reads[n_reads].ref, sizeof reads[0].ref, "%s", ref);
        memcpy(reads[n_reads].digest, d, sizeof d);
        n_reads++;
    }
    pthread_mutex_unlock(&reads_mu);
    sodium_memzero(d, sizeof d);
    if (tell && read_observer)
        read_observer(who, ref);
}

/* ------------------------------------------------------------ resolving --- */

/* An owner-only regular file (mode 0600 or 0400, owned by the user the server runs as), read
 * whole into *out (NUL-terminated, *n bytes). `what` names it in errors. */
int secret_read_private(const char *path, const char *what, size_t max, char **out, size_t *n, mb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? MB_ENOENT : MB_EIO, "%s: cannot open: %s", what, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, MB_EINVAL, "%s: not a regular file", what);
    }
    if ((st.st_mode & 077) || st.st_uid != geteuid()) {
        close(fd);
        return err_set(err, MB_EPERM,
                       "%s: refused: the file is mode %04o owned by uid %u; a secret file must be readable by its "
                       "owner only (chmod 600) and owned by the server's user (uid %u)",
                       what, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)geteuid());
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return err_set(err, MB_ETOOBIG, "%s: larger than %zu bytes", what, max);
    }
    char *buf = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *out = buf;
    *n = got;
    return 0;
}

/* Free a value without leaving it in freed memory. */
void secret_free(char *value)
{
    if (value) {
        sodium_memzero(value, strlen(value));
        free(value);
    }
}

int secret_resolve(const char *who, const char *ref, char **value, mb_err *err)
{
    secret_ref r;
    *value = NULL;
    int rc = secret_ref_parse(ref, &r, err);
    if (rc)
        return rc;
    char *v = NULL;
    size_t n = 0;
    if (!strcmp(r.scheme, "env")) {
        const char *e = getenv(r.rest);
        if (!e)
            return err_set(err, MB_ENOENT, "%s: the environment variable is not set", ref);
        v = xstrdup(e);
        n = strlen(v);
    } else if (!strcmp(r.scheme, "file")) {
        if ((rc = secret_read_private(r.rest, ref, SECRET_MAX, &v, &n, err)))
            return rc;
        if (n && v[n - 1] == '\n') /* `echo secret > file` is the usual way to write one */
            v[--n] = 0;
        if (n && v[n - 1] == '\r')
            v[--n] = 0;
    } else {
        pentry p;
        if (!reg_get(&secret_provs, has_scheme, r.scheme, &p, true))
            return err_set(err, MB_ENOENT, "%s: no provider for '%s:' references (is the %s module loaded?)", ref,
                           r.scheme, r.scheme);
        mb_err e = {0};
        rc = p.sops.get(p.ctx, r.rest, &v, &e);
        modref_leave(p.owner);
        if (rc || !v) {
            free(v);
            return err_set(err, rc ? rc : MB_EINTERNAL, "%s: %s", ref, e.msg[0] ? e.msg : "the provider gave no value");
        }
        n = strlen(v);
    }
    if (!utf8_valid(v, n) || memchr(v, 0, n)) {
        secret_free(v);
        return err_set(err, MB_EINVAL, "%s: the value is not UTF-8 text", ref);
    }
    note_read(who, ref, v, n);
    *value = v;
    return 0;
}

int secret_api_get(mb_module *self, const char *ref, char **value, mb_err *err)
{
    return secret_resolve(modref_name(self), ref, value, err);
}

/* Walk one node. `path` is the dotted key path (the `lines` map's keys). */
static int resolve_node(const char *who, const char *file, json_t *node, const char *path, const json_t *lines,
                        json_t *refs, int *count, mb_err *err)
{
    if (json_is_object(node)) {
        const char *k;
        json_t *v;
        json_object_foreach(node, k, v)
        {
            char sub[512];
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k);
            if (json_is_string(v) && secret_is_ref(json_string_value(v))) {
                char *val = NULL;
                mb_err e = {0};
                const char *ref = json_string_value(v);
                json_t *l = lines ? json_object_get(lines, sub) : NULL;
                int rc = secret_resolve(who, ref, &val, &e);
                if (refs)
                    json_array_append_new(refs, rc ? json_pack("{s:s, s:s, s:b, s:s}", "key", sub, "ref", ref,
                                                               "resolves", 0, "error", e.msg)
                                                   : json_pack("{s:s, s:s, s:b}", "key", sub, "ref", ref,
                                                               "resolves", 1));
                if (rc)
                    return err_set(err, rc, "%s:%lld: %s: %s", file, l ? (long long)json_integer_value(l) : 1LL, sub,
                                   e.msg);
                json_object_set_new(node, k, json_string(val));
                secret_free(val);
                (*count)++;
            } else {
                int rc = resolve_node(who, file, v, sub, lines, refs, count, err);
                if (rc)
                    return rc;
            }
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v)
        {
            if (json_is_string(v) && secret_is_ref(json_string_value(v))) {
                char *val = NULL;
                mb_err e = {0};
                json_t *l = lines ? json_object_get(lines, path) : NULL;
                char ref[sizeof(((secret_ref *)0)->rest) + 40];
                snprintf(ref, sizeof ref, "%s", json_string_value(v));
                int rc = secret_resolve(who, ref, &val, &e);
                if (refs)
                    json_array_append_new(refs, json_pack("{s:s, s:s, s:b}", "key", path, "ref", ref, "resolves", !rc));
                if (rc)
                    return err_set(err, rc, "%s:%lld: %s: %s", file, l ? (long long)json_integer_value(l) : 1LL, path,
                                   e.msg);
                json_array_set_new(node, i, json_string(val));
                secret_free(val);
                (*count)++;
            } else {
                int rc = resolve_node(who, file, v, path, lines, refs, count, err);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

int secret_resolve_tree(const char *who, const char *file, json_t *doc, const json_t *lines, json_t *refs,
                        int *count, mb_err *err)
{
    int c = 0;
    int rc = doc ? resolve_node(who, file, doc, "", lines, refs, &c, err) : 0;
    if (count)
        *count = c;
    return rc;
}

int secret_refresh_providers(mb_err *err)
{
    pentry all[16];
    size_t n = reg_collect(&secret_provs, any_entry, NULL, all, 16);
    int changed = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        mb_err e = {0};
        int rc = all[i].sops.refresh ? all[i].sops.refresh(all[i].ctx, &e) : 0;
        modref_leave(all[i].owner);
        if (rc < 0) {
            bad = rc;
            err_set(err, rc, "%s: %s", all[i].scheme, e.msg);
        } else
            changed += rc;
    }
    return bad ? bad : changed;
}

/* --------------------------------------------------------- key wrapping --- */

/* The built-in "file:" key-wrap provider: secretbox under a 32-byte owner-only key file.
 * Wrapped form: "mbkw1:" + base64(nonce | ciphertext). */
static int master_key(const char *path, uint8_t key[MASTER_KEY_BYTES], mb_err *err)
{
    char *buf = NULL, what[4200];
    size_t n = 0;
    snprintf(what, sizeof what, "file:%s", path);
    int rc = secret_read_private(path, what, 4096, &buf, &n, err);
    if (rc)
        return rc;
    /* 64 hex characters (and a newline): the key files made for MBYTE_MASTER_KEY before it
     * became mbyte.yaml master_key (crypt.c) serve as they are. */
    size_t hn = n, got = 0;
    while (hn > 0 && (buf[hn - 1] == '\n' || buf[hn - 1] == '\r'))
        hn--;
    if (hn == 2 * MASTER_KEY_BYTES &&
        !sodium_hex2bin(key, MASTER_KEY_BYTES, buf, hn, NULL, &got, NULL) && got == MASTER_KEY_BYTES) {
        sodium_memzero(buf, n);
        free(buf);
        return 0;
    }
    if (n != MASTER_KEY_BYTES) {
        sodium_memzero(buf, n);
        free(buf);
        return err_set(err, MB_EINVAL, "%s: a master key file holds exactly %d random bytes (head -c %d /dev/urandom) "
                       "or %d hex characters (openssl rand -hex %d)",
                       what, MASTER_KEY_BYTES, MASTER_KEY_BYTES, 2 * MASTER_KEY_BYTES, MASTER_KEY_BYTES);
    }
    memcpy(key, buf, MASTER_KEY_BYTES);
    sodium_memzero(buf, n);
    free(buf);
    return 0;
}

static int file_wrap(const char *path, const uint8_t *in, size_t n, char **wrapped, mb_err *err)
{
    uint8_t key[MASTER_KEY_BYTES];
    if (n == 0 || n > 1024)
        return err_set(err, MB_EINVAL, "a key to wrap is 1 to 1024 bytes");
    int rc = master_key(path, key, err);
    if (rc)
        return rc;
    size_t blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
    uint8_t *box = xmalloc(blen);
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, in, n, box, key);
    sodium_memzero(key, sizeof key);
    size_t plen = strlen(FILE_WRAP_PREFIX);
    size_t b64 = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_ORIGINAL);
    char *out = xmalloc(plen + b64);
    memcpy(out, FILE_WRAP_PREFIX, plen);
    sodium_bin2base64(out + plen, b64, box, blen, sodium_base64_VARIANT_ORIGINAL);
    free(box);
    *wrapped = out;
    return 0;
}

/* Open a wrapped key into out (cap bytes); *got is its length. */
static int file_open(const char *path, const char *wrapped, uint8_t *out, size_t cap, size_t *got, mb_err *err)
{
    size_t plen = strlen(FILE_WRAP_PREFIX);
    if (strncmp(wrapped, FILE_WRAP_PREFIX, plen))
        return err_set(err, MB_EINVAL, "the wrapped key was not made by a file: key (it does not start with %s)",
                       FILE_WRAP_PREFIX);
    size_t wl = strlen(wrapped + plen);
    uint8_t *box = xmalloc(wl + 1);
    size_t blen = 0;
    if (sodium_base642bin(box, wl + 1, wrapped + plen, wl, NULL, &blen, NULL, sodium_base64_VARIANT_ORIGINAL) ||
        blen <= crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES ||
        blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES > cap) {
        free(box);
        return err_set(err, MB_EINVAL, "the wrapped key is damaged or longer than %zu bytes", cap);
    }
    uint8_t key[MASTER_KEY_BYTES];
    int rc = master_key(path, key, err);
    if (!rc && crypto_secretbox_open_easy(out, box + crypto_secretbox_NONCEBYTES, blen - crypto_secretbox_NONCEBYTES,
                                          box, key))
        rc = err_set(err, MB_EINTEGRITY, "file:%s: the wrapped key does not open with this master key", path);
    sodium_memzero(key, sizeof key);
    free(box);
    *got = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    return rc;
}

static int file_unwrap(const char *path, const char *wrapped, uint8_t *out, size_t n, mb_err *err)
{
    uint8_t buf[1024];
    size_t got = 0;
    int rc = file_open(path, wrapped, buf, sizeof buf, &got, err);
    if (!rc && got != n)
        rc = err_set(err, MB_EINVAL, "the wrapped key is %zu bytes long, not %zu", got, n);
    if (!rc)
        memcpy(out, buf, n);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* Find the provider of keyref; *name points into keyref. NULL provider (0 returned, *builtin
 * true) for the built-in file: scheme. The caller leaves p->owner after its call. */
static int wrap_provider(const char *keyref, pentry *p, const char **name, bool *builtin, mb_err *err)
{
    const char *colon = keyref ? strchr(keyref, ':') : NULL;
    if (!colon || colon == keyref || colon - keyref > SCHEME_MAX || !colon[1])
        return err_set(err, MB_EINVAL, "'%.60s' is not a key reference (file:/path or transit:<key>)",
                       keyref ? keyref : "");
    char scheme[SCHEME_MAX + 1];
    memcpy(scheme, keyref, (size_t)(colon - keyref));
    scheme[colon - keyref] = 0;
    *name = colon + 1;
    *builtin = !strcmp(scheme, "file");
    if (*builtin)
        return **name == '/' ? 0 : err_set(err, MB_EINVAL, "%s: a file key reference needs an absolute path", keyref);
    if (!reg_get(&wrap_provs, has_scheme, scheme, p, true))
        return err_set(err, MB_ENOENT, "%s: no key-wrap provider for '%s:' (is its module loaded?)", keyref, scheme);
    return 0;
}

#define WRAP_CALL(keyref, builtin_expr, fn, ...)                                                                      \
    do {                                                                                                              \
        pentry p = {0};                                                                                               \
        const char *name = NULL;                                                                                      \
        bool builtin = false;                                                                                         \
        int rc_ = wrap_provider(keyref, &p, &name, &builtin, err);                                                    \
        if (rc_)                                                                                                      \
            return rc_;                                                                                               \
        if (builtin)                                                                                                  \
            return builtin_expr;                                                                                      \
        if (!p.kops.fn) {                                                                                             \
            modref_leave(p.owner);                                                                                    \
            return err_set(err, MB_EUNSUPP, "%s: the provider cannot " #fn, keyref);                                  \
        }                                                                                                             \
        rc_ = p.kops.fn(p.ctx, name, __VA_ARGS__);                                                                    \
        modref_leave(p.owner);                                                                                        \
        return rc_;                                                                                                   \
    } while (0)

int key_wrap(const char *keyref, const uint8_t *key, size_t n, char **wrapped, mb_err *err)
{
    *wrapped = NULL;
    WRAP_CALL(keyref, file_wrap(name, key, n, wrapped, err), wrap, key, n, wrapped, err);
}

int key_unwrap(const char *keyref, const char *wrapped, uint8_t *key, size_t n, mb_err *err)
{
    if (!wrapped)
        return err_set(err, MB_EINVAL, "no wrapped key given");
    WRAP_CALL(keyref, file_unwrap(name, wrapped, key, n, err), unwrap, wrapped, key, n, err);
}

/* file: has no versions: a rewrap opens and seals again (a fresh nonce, same master key). */
static int file_rewrap(const char *path, const char *wrapped, char **out, mb_err *err)
{
    uint8_t buf[1024];
    size_t got = 0;
    int rc = file_open(path, wrapped, buf, sizeof buf, &got, err);
    if (!rc)
        rc = file_wrap(path, buf, got, out, err);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

int key_rewrap(const char *keyref, const char *wrapped, char **rewrapped, mb_err *err)
{
    *rewrapped = NULL;
    if (!wrapped)
        return err_set(err, MB_EINVAL, "no wrapped key given");
    WRAP_CALL(keyref, file_rewrap(name, wrapped, rewrapped, err), rewrap, wrapped, rewrapped, err);
}

static int file_datakey(const char *path, uint8_t *key, size_t n, char **wrapped, mb_err *err)
{
    randombytes_buf(key, n);
    int rc = file_wrap(path, key, n, wrapped, err);
    if (rc)
        sodium_memzero(key, n);
    return rc;
}

int key_datakey(const char *keyref, uint8_t *key, size_t n, char **wrapped, mb_err *err)
{
    *wrapped = NULL;
    WRAP_CALL(keyref, file_datakey(name, key, n, wrapped, err), datakey, key, n, wrapped, err);
}

int key_rotate(const char *keyref, mb_err *err)
{
    WRAP_CALL(keyref,
              err_set(err, MB_EUNSUPP, "%s: a file key has no versions; make a new file and rewrap under it", keyref),
              rotate, err);
}

void secret_fini(void)
{
    reg_clear(&secret_provs);
    reg_clear(&wrap_provs);
    pthread_mutex_lock(&reads_mu);
    sodium_memzero(reads, sizeof reads);
    n_reads = 0;
    pthread_mutex_unlock(&reads_mu);
}
