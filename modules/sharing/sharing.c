/*
 * modules/sharing — share a file or folder with another user or through a link (issue 8).
 *
 * A share is a record in kv (docs/storage.md "sharing"): the owner's store and path, the
 * type ("link" | "user"), the permission and the limits. Links are reached by a bearer
 * token of 256 random bits that only its creator ever sees: kv keeps its SHA-256, so a
 * copy of the database does not open any link. Link passwords are argon2id hashes.
 *
 *   permission  list  read (file bytes)  folder zip  upload  overwrite
 *   view        yes   yes                no          no      no
 *   download    yes   yes                yes         no      no
 *   upload      no    no                 no          yes     no   (a drop box)
 *   edit        yes   yes                yes         yes     yes
 *
 * Security: the public and shared routes reach another user's store, so they call the file
 * API as the system (u == NULL). Before any file call, EVERY request is checked here: the
 * token or the grantee, revocation (the record is gone), expiry, the download limit, the
 * password, the permission, and that the path stays inside the shared subtree (the kernel
 * already refuses '.', '..', encoded '/' and NUL in request paths; join_path refuses them
 * again, and the namespace has no symlinks). A revoked or expired share stops working at
 * once because nothing is cached.
 *
 * Threads: handlers run on HTTP workers concurrently. `lock` serialises the read-modify-
 * write of a share's download count; everything else is read from kv per request.
 */
#include "mbyte.h"
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SHARING_VERSION "1.0.0"
#define TOKEN_BYTES 32

/* Wrong link passwords count in the kernel's throttles (api->throttle_*), so a guesser locks
 * out only himself: GUESS_MAX per link from one address per GUESS_WINDOW, then that address
 * waits the window out; GUESS_MAX_ADDR per address across links; and a link guessed at from
 * many addresses (past GUESS_SLOW_AFTER) is slowed to one try a second, never locked. Each
 * guess costs an argon2id verification, so this also caps the CPU one link can be made to
 * cost. The counts live in the kernel and survive a reload of the module. */
#define GUESS_MAX 10
#define GUESS_WINDOW 600
#define GUESS_MAX_ADDR 50
#define GUESS_SLOW_AFTER 50

typedef struct sharing {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t lock; /* download counting */
    char base_url[256];   /* prefix of the "url" answered at creation ("" = relative) */
    mb_throttle *guess_pair, *guess_addr, *guess_link; /* kernel-owned, valid until exit */
} sharing;

typedef struct guess_keys {
    char pair[96], addr[64], link[17];
} guess_keys;

static void guess_keys_for(sharing *s, mb_req *req, const char *id, guess_keys *k)
{
    const char *ip = s->api->req_client_ip(req);
    snprintf(k->pair, sizeof k->pair, "%s\n%s", id, ip ? ip : "");
    snprintf(k->addr, sizeof k->addr, "%s", ip ? ip : "");
    snprintf(k->link, sizeof k->link, "%s", id);
}

/* Seconds this address must wait before guessing this link's password again (0: now). */
static int64_t guess_wait(sharing *s, const guess_keys *k)
{
    const mb_api *api = s->api;
    int64_t w = api->throttle_wait(s->guess_pair, k->pair), w2;
    if ((w2 = api->throttle_wait(s->guess_addr, k->addr)) > w)
        w = w2;
    if (!w)
        w = api->throttle_wait(s->guess_link, k->link);
    return w;
}

static void guess_failed(sharing *s, const guess_keys *k)
{
    s->api->throttle_fail(s->guess_pair, k->pair);
    s->api->throttle_fail(s->guess_addr, k->addr);
    s->api->throttle_fail(s->guess_link, k->link);
}

enum { P_LIST = 1, P_READ = 2, P_ZIP = 4, P_UPLOAD = 8, P_OVERWRITE = 16 };

static int perm_bits(const char *p)
{
    if (!p)
        return -1;
    if (!strcmp(p, "view"))
        return P_LIST | P_READ;
    if (!strcmp(p, "download"))
        return P_LIST | P_READ | P_ZIP;
    if (!strcmp(p, "upload"))
        return P_UPLOAD;
    if (!strcmp(p, "edit"))
        return P_LIST | P_READ | P_ZIP | P_UPLOAD | P_OVERWRITE;
    return -1;
}


static void hex16(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

static void sha256_hex(const char *s, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* A link password against its argon2id hash: the kernel's cached check (ABI minor 8) when
 * it has one, so a browser fetching the files of a protected link pays argon2id once. */
static bool password_ok(const mb_api *api, const char *hash, const char *pw)
{
    if (api->size > offsetof(mb_api, password_check) && api->password_check)
        return api->password_check(hash, pw);
    return crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
}

/* ------------------------------------------------------------- records --- */

static int share_load(sharing *s, const char *id, json_t **out, mb_err *err)
{
    char key[64], *val;
    size_t len;
    if (!id || strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16)
        return s->api->err_set(err, MB_ENOENT, "no such share");
    snprintf(key, sizeof key, "s/%s", id);
    if (s->api->kv_get(s->self, key, &val, &len, err))
        return s->api->err_set(err, MB_ENOENT, "no such share");
    *out = json_loadb(val, len, 0, NULL);
    free(val);
    if (!*out)
        return s->api->err_set(err, MB_EIO, "share %s is damaged", id);
    return 0;
}

static int share_save(sharing *s, const json_t *rec, mb_err *err)
{
    char key[64];
    snprintf(key, sizeof key, "s/%s", mb_jstr(rec, "id"));
    char *txt = json_dumps(rec, JSON_COMPACT);
    int rc = s->api->kv_put(s->self, key, txt, strlen(txt), true, err);
    free(txt);
    return rc;
}

static int kv_mark(sharing *s, const char *key, mb_err *err) { return s->api->kv_put(s->self, key, "", 0, true, err); }

/* What owners and grantees see: never the token hash nor the password hash. */
static json_t *share_public(const json_t *r)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:b, s:I}", "id", mb_jstr(r, "id"), "type",
                          mb_jstr(r, "type"), "permission", mb_jstr(r, "permission"), "store", (json_int_t)mb_jint(r, "store"),
                          "path", mb_jstr(r, "path"), "target", mb_jstr(r, "target"), "expires",
                          (json_int_t)mb_jint(r, "expires"), "max_downloads", (json_int_t)mb_jint(r, "max_downloads"),
                          "downloads", (json_int_t)mb_jint(r, "downloads"), "has_password",
                          json_object_get(r, "password") != NULL, "created", (json_int_t)mb_jint(r, "created"));
    if (mb_jstr(r, "user_name"))
        json_object_set_new(o, "user", json_string(mb_jstr(r, "user_name")));
    if (!strcmp(mb_jstr(r, "type"), "user")) {
        char url[64];
        snprintf(url, sizeof url, "/api/v1/shared/%s", mb_jstr(r, "id"));
        json_object_set_new(o, "url", json_string(url));
    }
    return o;
}

/* "expires": Unix seconds or an RFC 3339 UTC time ("2026-12-01T10:00:00Z"). */
static int parse_expires(sharing *s, json_t *v, int64_t *out, mb_err *err)
{
    if (!v || json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (json_is_string(v)) {
        struct tm tm = {0};
        const char *end = strptime(json_string_value(v), "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end || (strcmp(end, "Z") && strcmp(end, "+00:00") && *end))
            return s->api->err_set(err, MB_EINVAL, "expires: use Unix seconds or a UTC time like 2026-12-01T10:00:00Z");
        *out = (int64_t)timegm(&tm);
    } else
        return s->api->err_set(err, MB_EINVAL, "expires: use Unix seconds or a UTC time like 2026-12-01T10:00:00Z");
    if (*out <= s->api->now())
        return s->api->err_set(err, MB_EINVAL, "expires: the time must be in the future");
    return 0;
}

static int req_sid(sharing *s, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *v = s->api->req_param(req, "sid");
    char *end;
    if (!v || !*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 19)
        return s->api->err_set(err, MB_ENOENT, "no such store: %s", v ? v : "");
    *sid = strtoull(v, &end, 10);
    return 0;
}

/* ------------------------------------------------------- owner routes --- */

/* POST /api/v1/stores/{sid}/shares */
static int h_create(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    const mb_api *api = s->api;
    const mb_user *u = api->req_user(req);
    uint64_t sid;
    int rc;
    json_t *store = NULL, *info = NULL;
    if ((rc = req_sid(s, req, &sid, err)) || (rc = api->store_get(u, sid, &store, err)))
        return rc;
    json_decref(store);
    json_t *b = api->req_json(req, err);
    if (!b)
        return err->code;
    const char *path = mb_jstr(b, "path"), *type = mb_jstr(b, "type"), *perm = mb_jstr(b, "permission");
    if (!path)
        return api->err_set(err, MB_EINVAL, "path: a string is required");
    if (!type || (strcmp(type, "link") && strcmp(type, "user")))
        return api->err_set(err, MB_EINVAL, "type: must be 'link' or 'user'");
    int bits = perm_bits(perm);
    if (bits < 0)
        return api->err_set(err, MB_EINVAL, "permission: must be 'view', 'download', 'upload' or 'edit'");
    json_t *pw = json_object_get(b, "password"), *md = json_object_get(b, "max_downloads");
    if (pw && !json_is_null(pw) &&
        (!json_is_string(pw) || json_string_length(pw) < 1 || json_string_length(pw) > 1024 ||
         strlen(json_string_value(pw)) != json_string_length(pw)))
        return api->err_set(err, MB_EINVAL, "password: a string of 1 to 1024 bytes");
    if (pw && json_is_string(pw) && !strcmp(type, "user"))
        return api->err_set(err, MB_EINVAL, "password: only links have passwords");
    if (md && !json_is_null(md) &&
        (!json_is_integer(md) || json_integer_value(md) < 1 || json_integer_value(md) > 1000000000))
        return api->err_set(err, MB_EINVAL, "max_downloads: a whole number from 1 to 1000000000");
    int64_t expires = 0;
    if ((rc = parse_expires(s, json_object_get(b, "expires"), &expires, err)))
        return rc;
    uint64_t grantee = 0;
    const char *gname = NULL;
    if (!strcmp(type, "user")) {
        gname = mb_jstr(b, "user");
        if (!gname)
            return api->err_set(err, MB_EINVAL, "user: the name of the user to share with is required");
        mb_user gu;
        char gbuf[128];
        if (api->user_lookup(0, gname, &gu, gbuf, sizeof gbuf, err))
            return api->err_set(err, MB_EINVAL, "user: no user '%s'", gname);
        grantee = gu.id;
        if (grantee == u->id)
            return api->err_set(err, MB_EINVAL, "user: sharing with yourself is not needed");
    }
    if ((rc = api->file_stat(u, sid, path, &info, err)))
        return rc;
    const char *target = mb_jstr(info, "type");
    if ((bits & P_UPLOAD) && strcmp(target, "folder")) {
        json_decref(info);
        return api->err_set(err, MB_EINVAL, "permission: upload and edit need a folder");
    }
    char id[17], token[128] = "", thash[65] = "";
    unsigned char rnd[TOKEN_BYTES];
    randombytes_buf(rnd, 8);
    sodium_bin2hex(id, sizeof id, rnd, 8);
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I}", "v", 1, "id", id, "type",
                            type, "permission", perm, "store", (json_int_t)sid, "owner", (json_int_t)u->id, "path",
                            mb_jstr(info, "path"), "target", target, "expires", (json_int_t)expires, "max_downloads",
                            (json_int_t)(md ? json_integer_value(md) : 0), "downloads", (json_int_t)0, "created",
                            (json_int_t)api->now());
    json_decref(info);
    if (gname) {
        json_object_set_new(rec, "user", json_integer((json_int_t)grantee));
        json_object_set_new(rec, "user_name", json_string(gname));
    } else {
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2base64(token, sizeof token, rnd, sizeof rnd, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sha256_hex(token, thash);
        json_object_set_new(rec, "token_sha256", json_string(thash));
    }
    if (pw && json_is_string(pw)) {
        char hash[crypto_pwhash_STRBYTES];
        const char *p = json_string_value(pw);
        /* the kernel's (ABI 2.2): argon2id waits its turn with every other password check */
        int hrc = api->size > offsetof(mb_api, password_hash) && api->password_hash
                      ? api->password_hash(p, hash)
                      : crypto_pwhash_str_alg(hash, p, strlen(p), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                              crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13);
        if (hrc) {
            json_decref(rec);
            return api->err_set(err, MB_ENOMEM, "could not hash the password (out of memory)");
        }
        json_object_set_new(rec, "password", json_string(hash));
    }
    char key[96], s16[17];
    hex16(s16, sid);
    /* The record first, the indexes after: an index without a record is skipped when read. */
    if ((rc = share_save(s, rec, err))) {
        json_decref(rec);
        return rc;
    }
    snprintf(key, sizeof key, "o/%s/%s", s16, id);
    rc = kv_mark(s, key, err);
    if (!rc && grantee) {
        char g16[17];
        hex16(g16, grantee);
        snprintf(key, sizeof key, "g/%s/%s", g16, id);
        rc = kv_mark(s, key, err);
    }
    if (!rc && *thash) {
        snprintf(key, sizeof key, "t/%s", thash);
        rc = api->kv_put(s->self, key, id, 16, true, err);
    }
    if (rc) {
        json_decref(rec);
        return rc;
    }
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:I}", "share", id, "type", type, "permission", perm,
                           "store", (json_int_t)sid, "owner", (json_int_t)u->id, "path", mb_jstr(rec, "path"), "user",
                           (json_int_t)u->id);
    if (gname)
        json_object_set_new(ev, "grantee", json_string(gname));
    api->hook_emit("share.created", ev, NULL);
    json_t *out = share_public(rec);
    json_decref(rec);
    char url[512];
    if (*token) {
        json_object_set_new(out, "token", json_string(token));
        snprintf(url, sizeof url, "%s/s/%s", s->base_url, token);
        json_object_set_new(out, "url", json_string(url));
        snprintf(url, sizeof url, "%s/api/v1/public/%s", s->base_url, token);
        json_object_set_new(out, "api_url", json_string(url));
        sodium_memzero(token, sizeof token);
    } else
        json_object_set_new(out, "token", json_null());
    return api->reply_json(req, 201, out);
}

typedef struct collect {
    sharing *s;
    json_t *arr;
    size_t skip; /* bytes of the key before the share id */
} collect;

static int collect_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    collect *c = ud;
    json_t *r = NULL;
    mb_err e;
    if (strlen(key) > c->skip && share_load(c->s, key + c->skip, &r, &e) == 0) {
        json_array_append_new(c->arr, share_public(r));
        json_decref(r);
    }
    return 0;
}

/* GET /api/v1/stores/{sid}/shares */
static int h_list(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    uint64_t sid;
    json_t *store;
    int rc;
    if ((rc = req_sid(s, req, &sid, err)) || (rc = s->api->store_get(s->api->req_user(req), sid, &store, err)))
        return rc;
    json_decref(store);
    char prefix[32], s16[17];
    hex16(s16, sid);
    snprintf(prefix, sizeof prefix, "o/%s/", s16);
    collect c = {s, json_array(), strlen(prefix)};
    s->api->kv_scan(s->self, prefix, collect_fn, &c, err);
    return s->api->reply_json(req, 200, json_pack("{s:o}", "shares", c.arr));
}

/* DELETE /api/v1/shares/{id}: only the owner; someone else's share is "no such share". */
static int h_delete(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    const mb_api *api = s->api;
    json_t *r = NULL;
    int rc;
    if ((rc = share_load(s, api->req_param(req, "id"), &r, err)))
        return rc;
    if ((uint64_t)mb_jint(r, "owner") != api->req_user(req)->id) {
        json_decref(r);
        return api->err_set(err, MB_ENOENT, "no such share");
    }
    char key[96], s16[17], g16[17];
    const char *id = mb_jstr(r, "id");
    /* The token index first: the link stops working with this write. */
    if (mb_jstr(r, "token_sha256")) {
        snprintf(key, sizeof key, "t/%s", mb_jstr(r, "token_sha256"));
        if ((rc = api->kv_del(s->self, key, true, err))) {
            json_decref(r);
            return rc;
        }
    }
    snprintf(key, sizeof key, "s/%s", id);
    if ((rc = api->kv_del(s->self, key, true, err))) {
        json_decref(r);
        return rc;
    }
    hex16(s16, (uint64_t)mb_jint(r, "store"));
    snprintf(key, sizeof key, "o/%s/%s", s16, id);
    api->kv_del(s->self, key, true, err);
    if (mb_jint(r, "user")) {
        hex16(g16, (uint64_t)mb_jint(r, "user"));
        snprintf(key, sizeof key, "g/%s/%s", g16, id);
        api->kv_del(s->self, key, true, err);
    }
    api->hook_emit("share.revoked",
                   json_pack("{s:s, s:I, s:I, s:s, s:I}", "share", id, "store", (json_int_t)mb_jint(r, "store"), "owner",
                             (json_int_t)mb_jint(r, "owner"), "path", mb_jstr(r, "path"), "user",
                             (json_int_t)api->req_user(req)->id),
                   NULL);
    json_decref(r);
    return api->reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

/* GET /api/v1/shared-with-me */
static int h_with_me(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    const mb_user *u = s->api->req_user(req);
    char prefix[32], u16[17];
    hex16(u16, u->id);
    snprintf(prefix, sizeof prefix, "g/%s/", u16);
    collect c = {s, json_array(), strlen(prefix)};
    s->api->kv_scan(s->self, prefix, collect_fn, &c, err);
    size_t i;
    json_t *e;
    int64_t now = s->api->now();
    json_array_foreach(c.arr, i, e)
    {
        char name[128] = "";
        json_t *r = NULL;
        mb_err e2;
        if (share_load(s, mb_jstr(e, "id"), &r, &e2) == 0) {
            mb_user ou;
            if (s->api->user_lookup((uint64_t)mb_jint(r, "owner"), NULL, &ou, name, sizeof name, NULL) == 0)
                json_object_set_new(e, "owner", json_string(name));
            json_decref(r);
        }
        json_object_set_new(e, "expired", json_boolean(mb_jint(e, "expires") && mb_jint(e, "expires") <= now));
        json_object_del(e, "user");
    }
    return s->api->reply_json(req, 200, json_pack("{s:o}", "shares", c.arr));
}

/* What is shared with a user and usable now, for other modules: the module service
 * "sharing.grants" {"user": uid} -> [{"id","store","owner","path","target","permission",
 * "expires"}] (the search module searches a grantee's shares). A share that only takes
 * uploads lists nothing. */
typedef struct grants_ud {
    sharing *s;
    json_t *arr;
    size_t skip;
} grants_ud;

static int check_live(sharing *s, mb_req *req, const json_t *r, mb_err *err);

static int grant_one(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    grants_ud *g = ud;
    json_t *r = NULL;
    mb_err e;
    if (strlen(key) <= g->skip || share_load(g->s, key + g->skip, &r, &e))
        return 0;
    if (!strcmp(mb_jstr(r, "type"), "user") && (perm_bits(mb_jstr(r, "permission")) & P_LIST) &&
        check_live(g->s, NULL, r, &e) == 0)
        json_array_append_new(
            g->arr, json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:I}", "id", mb_jstr(r, "id"), "store",
                              (json_int_t)mb_jint(r, "store"), "owner", (json_int_t)mb_jint(r, "owner"), "path",
                              mb_jstr(r, "path"), "target", mb_jstr(r, "target"), "permission",
                              mb_jstr(r, "permission"), "expires", (json_int_t)mb_jint(r, "expires")));
    json_decref(r);
    return 0;
}

static int s_grants(const json_t *arg, json_t **out, void *state, mb_err *err)
{
    sharing *s = state;
    json_t *u = json_object_get(arg, "user");
    if (!json_is_integer(u) || json_integer_value(u) <= 0)
        return s->api->err_set(err, MB_EINVAL, "sharing.grants needs {\"user\": a user id}");
    uint64_t uid = (uint64_t)json_integer_value(u);
    char prefix[32], u16[17];
    hex16(u16, uid);
    snprintf(prefix, sizeof prefix, "g/%s/", u16);
    grants_ud g = {s, json_array(), strlen(prefix)};
    int rc = s->api->kv_scan(s->self, prefix, grant_one, &g, err);
    if (rc) {
        json_decref(g.arr);
        return rc;
    }
    *out = g.arr;
    return 0;
}

/* ------------------------------------------------ access through a share --- */

/* The share's path joined with a request path that must stay inside it. */
static int join_path(sharing *s, mb_req *req, const char *root, const char *rel, char **out, mb_err *err)
{
    if (!rel)
        rel = "";
    const char *p = rel;
    while (*p) { /* each segment non-empty and not '.' or '..' (the kernel refused them already) */
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.') || memchr(p, '\\', n))
            return s->api->err_set(err, MB_EINVAL, "the path leaves the shared folder");
        p += n;
        if (*p == '/' && !*++p)
            return s->api->err_set(err, MB_EINVAL, "the path leaves the shared folder");
    }
    size_t n = strlen(root) + strlen(rel) + 2;
    char *j = s->api->req_alloc(req, n);
    if (!*root)
        snprintf(j, n, "%s", rel);
    else if (!*rel)
        snprintf(j, n, "%s", root);
    else
        snprintf(j, n, "%s/%s", root, rel);
    *out = j;
    return 0;
}

/* A form field from an application/x-www-form-urlencoded body, decoded into the request. */
static const char *form_field(sharing *s, mb_req *req, const char *name)
{
    const char *ct = s->api->req_header(req, "Content-Type");
    const void *data;
    size_t len;
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) || s->api->req_body(req, &data, &len) ||
        !data)
        return NULL;
    const char *b = data, *end = b + len;
    size_t nl = strlen(name);
    while (b < end) {
        const char *amp = memchr(b, '&', (size_t)(end - b));
        if (!amp)
            amp = end;
        if ((size_t)(amp - b) > nl && !memcmp(b, name, nl) && b[nl] == '=') {
            const char *v = b + nl + 1;
            char *o = s->api->req_alloc(req, (size_t)(amp - v) + 1), *w = o;
            for (; v < amp; v++) {
                if (*v == '+')
                    *w++ = ' ';
                else if (*v == '%' && amp - v > 2 && strchr("0123456789abcdefABCDEF", v[1]) && v[1] &&
                         strchr("0123456789abcdefABCDEF", v[2]) && v[2]) {
                    char hx[3] = {v[1], v[2], 0};
                    *w++ = (char)strtol(hx, NULL, 16);
                    v += 2;
                } else
                    *w++ = *v;
            }
            *w = 0;
            if (strlen(o) != (size_t)(w - o))
                return NULL; /* an encoded NUL */
            return o;
        }
        b = amp + 1;
    }
    return NULL;
}

/* ------------------------------------------------------- download counting --- */

#define FETCHERS_MAX 16 /* "fetched_by" keeps the newest ones */

/* Whether a request sends the resource's first byte, and so counts as a download (the rule
 * in docs/api.md): a GET (or form POST) without Range, with a Range the download code may
 * answer with the whole file (If-Range, another unit, bad syntax, more than 32 ranges), or
 * with a range that covers byte 0 of the `size` bytes. Seeks and resumed transfers (ranges
 * that all start later) and HEAD do not count. */
static bool fetches_start(sharing *s, mb_req *req, json_int_t size)
{
    const mb_api *api = s->api;
    if (!strcmp(api->req_method(req), "HEAD"))
        return false;
    const char *h = api->req_header(req, "Range");
    if (!h || api->req_header(req, "If-Range"))
        return true;
    h += strspn(h, " ");
    if (strncasecmp(h, "bytes=", 6))
        return true;
    h += 6;
    int specs = 0;
    while (*(h += strspn(h, " \t,"))) {
        if (++specs > 32)
            return true;
        char *end;
        bool has_first = *h >= '0' && *h <= '9', has_last;
        errno = 0;
        unsigned long long first = has_first ? strtoull(h, &end, 10) : 0, last = 0;
        if (has_first)
            h = end;
        if (*h++ != '-')
            return true;
        if ((has_last = *h >= '0' && *h <= '9'))
            last = strtoull(h, &end, 10), h = end;
        h += strspn(h, " \t");
        if (errno || (*h && *h != ',') || (!has_first && !has_last) || (has_first && has_last && last < first))
            return true;
        if (has_first ? first == 0 : last >= (unsigned long long)size) /* a suffix as long as the file */
            return true;
    }
    return !specs;
}

/* Who fetched: the grantee of a user share, the client's address for a link; kept as a
 * hash with the share id, never the address itself. */
static void fetcher_of(sharing *s, mb_req *req, const json_t *r, char out[17])
{
    char who[200], h[65];
    const mb_user *u = s->api->req_user(req);
    if (u)
        snprintf(who, sizeof who, "%s/user/%llu", mb_jstr(r, "id"), (unsigned long long)u->id);
    else
        snprintf(who, sizeof who, "%s/ip/%s", mb_jstr(r, "id"), s->api->req_client_ip(req) ?: "");
    sha256_hex(who, h);
    memcpy(out, h, 16);
    out[16] = 0;
}

/* A share at its download limit still answers a fetch that does not start at byte 0 (a
 * seek, a resumed transfer) to someone whose download was counted: the last allowed
 * download must be able to finish and seek. Everyone else gets 410. */
static bool continues_a_download(sharing *s, mb_req *req, const json_t *r)
{
    if (!req || fetches_start(s, req, INT64_MAX))
        return false;
    char me[17];
    fetcher_of(s, req, r, me);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "fetched_by"), i, f) {
        if (!strcmp(json_string_value(f) ?: "", me))
            return true;
    }
    return false;
}

/* Expiry and download limit: a share past them answers 410 from now on (see
 * continues_a_download for the one exception). req may be NULL: no exception. */
static int check_live(sharing *s, mb_req *req, const json_t *r, mb_err *err)
{
    if (mb_jint(r, "expires") && s->api->now() >= mb_jint(r, "expires"))
        return s->api->err_set(err, MB_EGONE, "this share has expired");
    if (mb_jint(r, "max_downloads") && mb_jint(r, "downloads") >= mb_jint(r, "max_downloads") &&
        !continues_a_download(s, req, r))
        return s->api->err_set(err, MB_EGONE, "this share has reached its download limit");
    return 0;
}

/* The share behind a link token, checked: exists and live (not yet the password). */
static int link_lookup(sharing *s, mb_req *req, json_t **out, mb_err *err)
{
    const mb_api *api = s->api;
    const char *token = api->req_param(req, "token");
    size_t tl = token ? strlen(token) : 0;
    char thash[65], key[96], *id;
    size_t len;
    if (tl < 20 || tl > 100 ||
        strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != tl)
        return api->err_set(err, MB_ENOENT, "no such link");
    sha256_hex(token, thash);
    snprintf(key, sizeof key, "t/%s", thash);
    if (api->kv_get(s->self, key, &id, &len, err))
        return api->err_set(err, MB_ENOENT, "no such link (it may have been revoked)");
    if (len != 16) {
        free(id);
        return api->err_set(err, MB_ENOENT, "no such link (it may have been revoked)");
    }
    char idz[17];
    memcpy(idz, id, 16);
    idz[16] = 0;
    free(id);
    json_t *r = NULL;
    int rc;
    if ((rc = share_load(s, idz, &r, err)))
        return api->err_set(err, MB_ENOENT, "no such link (it may have been revoked)");
    if ((rc = check_live(s, req, r, err))) {
        json_decref(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* The link's password, when it has one: pw (NULL: none given) checked under the guess
 * throttles; a wrong one is an event and a 401. */
static int link_password(sharing *s, mb_req *req, const json_t *r, const char *pw, mb_err *err)
{
    const mb_api *api = s->api;
    const char *hash = mb_jstr(r, "password"), *idz = mb_jstr(r, "id");
    if (!hash)
        return 0;
    if (!pw) {
        api->reply_header(req, "WWW-Authenticate", "X-Share-Password");
        return api->err_set(err, MB_EAUTH, "this link needs a password (X-Share-Password header or form field)");
    }
    guess_keys gk;
    guess_keys_for(s, req, idz, &gk);
    int64_t wait = guess_wait(s, &gk);
    if (wait) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)wait);
        api->reply_header(req, "Retry-After", ra);
        return api->err_set(err, MB_ETHROTTLE, "too many wrong passwords for this link; try again in %lld s",
                            (long long)wait);
    }
    if (!password_ok(api, hash, pw)) {
        guess_failed(s, &gk);
        api->hook_emit("share.password_failed",
                       json_pack("{s:s, s:I, s:I, s:s}", "share", idz, "store", (json_int_t)mb_jint(r, "store"), "owner",
                                 (json_int_t)mb_jint(r, "owner"), "result", "failed"),
                       NULL);
        api->reply_header(req, "WWW-Authenticate", "X-Share-Password");
        return api->err_set(err, MB_EAUTH, "wrong password for this link");
    }
    api->throttle_clear(s->guess_pair, gk.pair);
    return 0;
}

/* The share behind a link token, checked: exists, live, password. */
static int resolve_link(sharing *s, mb_req *req, json_t **out, mb_err *err)
{
    json_t *r = NULL;
    int rc = link_lookup(s, req, &r, err);
    if (rc)
        return rc;
    const char *pw = s->api->req_header(req, "X-Share-Password");
    if (!pw && mb_jstr(r, "password"))
        pw = form_field(s, req, "password");
    if ((rc = link_password(s, req, r, pw, err))) {
        json_decref(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* The share {id} for the signed-in grantee: exists, is theirs, live. */
static int resolve_user(sharing *s, mb_req *req, json_t **out, mb_err *err)
{
    json_t *r = NULL;
    int rc;
    if ((rc = share_load(s, s->api->req_param(req, "id"), &r, err)))
        return rc;
    if (strcmp(mb_jstr(r, "type"), "user") || (uint64_t)mb_jint(r, "user") != s->api->req_user(req)->id) {
        json_decref(r);
        return s->api->err_set(err, MB_ENOENT, "no such share");
    }
    if ((rc = check_live(s, req, r, err))) {
        json_decref(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Count one download against the limit, under the lock so two requests cannot both take
 * the last one, and remember who fetched (continues_a_download). */
static int count_download(sharing *s, mb_req *req, const char *id, mb_err *err)
{
    pthread_mutex_lock(&s->lock);
    json_t *r = NULL;
    int rc = share_load(s, id, &r, err);
    if (!rc && !(rc = check_live(s, NULL, r, err))) {
        json_object_set_new(r, "downloads", json_integer(mb_jint(r, "downloads") + 1));
        if (mb_jint(r, "max_downloads")) {
            char me[17];
            fetcher_of(s, req, r, me);
            json_t *f = json_object_get(r, "fetched_by");
            if (!json_is_array(f))
                json_object_set_new(r, "fetched_by", f = json_array());
            json_array_append_new(f, json_string(me));
            while (json_array_size(f) > FETCHERS_MAX)
                json_array_remove(f, 0);
            json_object_set_new(r, "v", json_integer(2));
        }
        rc = share_save(s, r, err);
    }
    json_decref(r);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void emit_access(sharing *s, mb_req *req, const json_t *r, const char *action, const char *path)
{
    const mb_user *u = s->api->req_user(req);
    json_t *p = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "share", mb_jstr(r, "id"), "via", mb_jstr(r, "type"), "store",
                          (json_int_t)mb_jint(r, "store"), "owner", (json_int_t)mb_jint(r, "owner"), "action", action,
                          "path", path);
    if (u)
        json_object_set_new(p, "user", json_integer((json_int_t)u->id));
    s->api->hook_emit("share.accessed", p, NULL);
}

/* The listing of a folder inside a share, paths relative to the share. */
static json_t *listing(const json_t *full, const char *root, const char *rel)
{
    json_t *entries = json_array(), *e;
    size_t i, rl = strlen(root);
    json_array_foreach(json_object_get(full, "entries"), i, e)
    {
        const char *p = mb_jstr(e, "path");
        if (rl)
            p += strlen(p) > rl ? rl + 1 : strlen(p);
        json_array_append_new(entries,
                              json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", mb_jstr(e, "name"), "path", p, "type",
                                        mb_jstr(e, "type"), "size", (json_int_t)mb_jint(e, "size"), "mtime",
                                        (json_int_t)mb_jint(e, "mtime")));
    }
    return json_pack("{s:s, s:o}", "path", rel, "entries", entries);
}

/* GET (or POST with a form password) on a share: list a folder, send a file, zip a folder. */
static int serve_read(sharing *s, mb_req *req, json_t *r, mb_err *err)
{
    const mb_api *api = s->api;
    int bits = perm_bits(mb_jstr(r, "permission")), rc;
    const char *rel = api->req_param(req, "path");
    char *full;
    if ((rc = join_path(s, req, mb_jstr(r, "path"), rel, &full, err)))
        return rc;
    if (!(bits & (P_LIST | P_READ)))
        return api->err_set(err, MB_EPERM, "this share only accepts uploads");
    uint64_t sid = (uint64_t)mb_jint(r, "store");
    json_t *info;
    if ((rc = api->file_stat(NULL, sid, full, &info, err)))
        return rc == MB_EINVAL ? rc : api->err_set(err, MB_ENOENT, "no such file in this share");
    bool folder = !strcmp(mb_jstr(info, "type"), "folder");
    json_int_t size = mb_jint(info, "size");
    json_decref(info);
    const char *zip = api->req_query(req, "zip");
    if (folder && !(zip && (!strcmp(zip, "1") || !strcmp(zip, "true")))) {
        json_t *out;
        if ((rc = api->folder_list(NULL, sid, full, false, &out, err)))
            return rc;
        json_t *l = listing(out, mb_jstr(r, "path"), rel ? rel : "");
        json_decref(out);
        /* What a visitor may know about the share: not the owner's store nor where the
         * folder sits in it. */
        const char *root = mb_jstr(r, "path"), *slash = strrchr(root, '/');
        json_object_set_new(l, "share",
                            json_pack("{s:s, s:s, s:s, s:I}", "name", slash ? slash + 1 : root, "permission",
                                      mb_jstr(r, "permission"), "target", mb_jstr(r, "target"), "expires",
                                      (json_int_t)mb_jint(r, "expires")));
        emit_access(s, req, r, "list", full);
        return api->reply_json(req, 200, l);
    }
    if (folder && !(bits & P_ZIP))
        return api->err_set(err, MB_EPERM, "this share does not allow downloading a folder");
    /* A zip's bytes are made on the fly: any fetch of it counts (but HEAD). */
    if ((folder ? strcmp(api->req_method(req), "HEAD") != 0 : fetches_start(s, req, size)) &&
        (rc = count_download(s, req, mb_jstr(r, "id"), err)))
        return rc;
    emit_access(s, req, r, folder ? "zip" : "download", full);
    return api->reply_file(req, NULL, sid, full, err);
}

/* PUT on a share: the raw body becomes the file (module bodies are capped like JSON ones). */
/* The kernel's sentences name the path in the owner's store; a visitor is told in the share's
 * own terms, which never show where the shared folder sits. */
static int visitor_error(sharing *s, int rc, const char *rel, mb_err *err)
{
    if (rc == MB_EEXIST)
        return s->api->err_set(err, rc, "'%s' is already in this shared folder and may not be replaced", rel);
    if (rc == MB_ECONFLICT)
        return s->api->err_set(err, rc, "'%s' cannot be stored here: a part of its path is a file", rel);
    return rc;
}

static int serve_upload(sharing *s, mb_req *req, json_t *r, mb_err *err)
{
    const mb_api *api = s->api;
    int bits = perm_bits(mb_jstr(r, "permission")), rc;
    if (!(bits & P_UPLOAD))
        return api->err_set(err, MB_EPERM, "this share does not allow uploads");
    const char *rel = api->req_param(req, "path");
    if (!rel || !*rel)
        return api->err_set(err, MB_EINVAL, "name the file to upload after the share in the URL");
    char *full;
    if ((rc = join_path(s, req, mb_jstr(r, "path"), rel, &full, err)))
        return rc;
    const void *data;
    size_t len;
    api->req_body(req, &data, &len);
    mb_file_writer *w;
    int flags = MB_FS_PARENTS | ((bits & P_OVERWRITE) ? 0 : MB_FS_NO_OVERWRITE);
    if ((rc = api->file_write_begin(NULL, (uint64_t)mb_jint(r, "store"), full, (int64_t)len, NULL, flags, &w, err)))
        return visitor_error(s, rc, rel, err);
    if (len && (rc = api->file_write_data(w, data, len, err))) {
        api->file_write_abort(w);
        return visitor_error(s, rc, rel, err);
    }
    json_t *info;
    bool created;
    if ((rc = api->file_write_commit(w, &info, &created, err)))
        return visitor_error(s, rc, rel, err);
    emit_access(s, req, r, "upload", full);
    const char *p = mb_jstr(info, "path");
    size_t rl = strlen(mb_jstr(r, "path"));
    json_t *out = json_pack("{s:s, s:s, s:I, s:s}", "name", mb_jstr(info, "name"), "path",
                            rl ? p + (strlen(p) > rl ? rl + 1 : strlen(p)) : p, "size", (json_int_t)mb_jint(info, "size"),
                            "sha256", mb_jstr(info, "sha256"));
    json_decref(info);
    return api->reply_json(req, created ? 201 : 200, out);
}

/* GET /api/v1/public/{token}?info=1: what a visitor's page shows before anything is fetched
 * (name, file or folder, size, expiry, whether a password is needed). It sends no file
 * bytes, so it never counts as a download (and, under the public prefix, its token is redacted
 * in the logs like any other). Without the password a protected link tells only
 * that it needs one (and its expiry); with X-Share-Password it is checked like any fetch. */
static int h_public_info(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    const mb_api *api = s->api;
    json_t *r = NULL;
    int rc = link_lookup(s, req, &r, err);
    if (rc)
        return rc;
    bool locked = mb_jstr(r, "password") != NULL;
    const char *pw = api->req_header(req, "X-Share-Password");
    json_t *out = json_pack("{s:b, s:I}", "password", locked, "expires", (json_int_t)mb_jint(r, "expires"));
    if (locked && !pw) {
        json_decref(r);
        json_object_set_new(out, "locked", json_true());
        return api->reply_json(req, 200, out);
    }
    if ((rc = link_password(s, req, r, pw, err))) {
        json_decref(out);
        json_decref(r);
        return rc;
    }
    const char *root = mb_jstr(r, "path"), *slash = strrchr(root, '/');
    json_object_set_new(out, "locked", json_false());
    json_object_set_new(out, "name", json_string(slash ? slash + 1 : root));
    json_object_set_new(out, "type", json_string(mb_jstr(r, "target")));
    json_object_set_new(out, "permission", json_string(mb_jstr(r, "permission")));
    json_object_set_new(out, "size", json_null());
    if (!strcmp(mb_jstr(r, "target"), "file") && (perm_bits(mb_jstr(r, "permission")) & P_READ)) {
        json_t *st;
        mb_err e2 = {0};
        if (api->file_stat(NULL, (uint64_t)mb_jint(r, "store"), root, &st, &e2) == 0) {
            json_object_set_new(out, "size", json_integer(mb_jint(st, "size")));
            json_decref(st);
        }
    }
    json_int_t max = mb_jint(r, "max_downloads");
    json_object_set_new(out, "downloads_left",
                        max ? json_integer(max > mb_jint(r, "downloads") ? max - mb_jint(r, "downloads") : 0) : json_null());
    json_decref(r);
    return api->reply_json(req, 200, out);
}

static int h_public_get(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    const char *rel = s->api->req_param(req, "path"), *info = s->api->req_query(req, "info");
    if (info && (!rel || !*rel) && !strcmp(s->api->req_method(req), "GET"))
        return h_public_info(req, state, err);
    json_t *r = NULL;
    int rc = resolve_link(s, req, &r, err);
    if (rc)
        return rc;
    rc = serve_read(s, req, r, err);
    json_decref(r);
    return rc;
}

static int h_public_put(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    json_t *r = NULL;
    int rc = resolve_link(s, req, &r, err);
    if (rc)
        return rc;
    rc = serve_upload(s, req, r, err);
    json_decref(r);
    return rc;
}

static int h_shared_get(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    json_t *r = NULL;
    int rc = resolve_user(s, req, &r, err);
    if (rc)
        return rc;
    rc = serve_read(s, req, r, err);
    json_decref(r);
    return rc;
}

static int h_shared_put(mb_req *req, void *state, mb_err *err)
{
    sharing *s = state;
    json_t *r = NULL;
    int rc = resolve_user(s, req, &r, err);
    if (rc)
        return rc;
    rc = serve_upload(s, req, r, err);
    json_decref(r);
    return rc;
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium could not start");
    sharing *s = calloc(1, sizeof *s);
    if (!s)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    s->self = self;
    s->api = api;
    pthread_mutex_init(&s->lock, NULL);
    s->guess_pair = api->throttle_get("sharing.link_address", GUESS_MAX, GUESS_WINDOW, 0);
    s->guess_addr = api->throttle_get("sharing.address", GUESS_MAX_ADDR, GUESS_WINDOW, 0);
    s->guess_link = api->throttle_get("sharing.link", GUESS_SLOW_AFTER, GUESS_WINDOW, 1);
    const char *bu = json_string_value(json_object_get(config, "base_url"));
    snprintf(s->base_url, sizeof s->base_url, "%s", bu ? bu : "");
    size_t n = strlen(s->base_url);
    while (n && s->base_url[n - 1] == '/')
        s->base_url[--n] = 0;
    if (api->service_set(self, "sharing.grants", s_grants, s, err)) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return err->code;
    }
    *state = s;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    sharing *s = state;
    mb_err e;
    s->api->service_set(s->self, "sharing.grants", NULL, NULL, &e); /* returns once no call is in flight */
    pthread_mutex_destroy(&s->lock);
    free(s);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    sharing *s = state;
    const char *bu = json_string_value(json_object_get(config, "base_url"));
    snprintf(s->base_url, sizeof s->base_url, "%s", bu ? bu : "");
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "base_url", MB_CFG_STRING, "\"\"", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/stores/{sid}/shares", MB_ROLE_USER, h_create},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/shares", MB_ROLE_USER, h_list},
    {sizeof(mb_route), "DELETE", "/api/v1/shares/{id}", MB_ROLE_USER, h_delete},
    {sizeof(mb_route), "GET", "/api/v1/shared-with-me", MB_ROLE_USER, h_with_me},
    {sizeof(mb_route), "GET", "/api/v1/shared/{id}/{path*}", MB_ROLE_USER, h_shared_get},
    {sizeof(mb_route), "PUT", "/api/v1/shared/{id}/{path*}", MB_ROLE_USER, h_shared_put},
    {sizeof(mb_route), "GET", "/api/v1/public/{token}/{path*}", MB_ROLE_NONE, h_public_get},
    {sizeof(mb_route), "POST", "/api/v1/public/{token}/{path*}", MB_ROLE_NONE, h_public_get},
    {sizeof(mb_route), "PUT", "/api/v1/public/{token}/{path*}", MB_ROLE_NONE, h_public_put},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 1, /* service_set (2.1) */
    .name = "sharing",
    .version = SHARING_VERSION,
    .description = "Share files and folders with other users or through links",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = NULL,
    .tasks = NULL,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
