/*
 * apppass.c — app passwords: per-user secrets for the doors that cannot do a browser login
 * (WebDAV now, FTP once it switches over), each optionally limited to one store and to
 * reading, created and revoked under /api/v1/account/app-passwords and checked through
 * api->apppass_check (ABI minor 10).
 *
 * A password is 24 random characters (about 120 bits) shown once; only its argon2id hash is
 * kept, in `ap/<uid16>/<id>` = {"v":1,"id","name","hash","created","store","read_only"}
 * (docs/storage.md). The check goes through the kernel's login throttle first and the
 * cached password check (auth_password_check), so a client that sends Basic credentials on
 * every request (every WebDAV client does) pays argon2id once per login_cache_ttl.
 *
 * FTP's own app passwords (module kv `m/ftp/pw/<uid16>/<id>`, {"v":1,"id","name","hash",
 * "created"}) are read through, not copied: they keep working for every door with full
 * scope, /api/v1/ftp/passwords keeps creating and revoking them, and this file's list shows
 * them ("source":"ftp") and can revoke them. Nothing to migrate, and nothing to go stale
 * when the FTP module changes one.
 *
 * Threads: HTTP workers and module workers (apppass_check blocks on argon2id on a cache
 * miss). Its only state in memory is the cache of verified app passwords below; LevelDB is
 * the truth.
 */
#include "fs.h"
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PW_LEN 24
#define MAX_PER_USER 100

static const char alphabet[] = "abcdefghijkmnpqrstuvwxyz23456789"; /* 32: no 0/o, 1/l */

static void prefix_of(char *out, size_t n, const char *table, uint64_t uid)
{
    char k16[17];
    key_u64(k16, uid);
    snprintf(out, n, "%s%s/", table, k16);
}

/* Call fn for each app password record of user uid (kernel's, then FTP's); stops early when
 * fn returns non-zero. `rec` is borrowed for the call. */
typedef int (*rec_fn)(json_t *rec, const char *key, bool ftp, void *ud);

static int each_record(uint64_t uid, rec_fn fn, void *ud)
{
    static const struct {
        const char *table;
        bool ftp;
    } tables[] = {{"ap/", false}, {"m/ftp/pw/", true}};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        char prefix[64];
        prefix_of(prefix, sizeof prefix, tables[t].table, uid);
        db_iter *it = db_iter_prefix(prefix, strlen(prefix));
        int stop = 0;
        while (!stop && db_iter_next(it)) {
            size_t kl, vl;
            const char *k = db_iter_key(it, &kl);
            const char *v = db_iter_val(it, &vl);
            json_t *rec = json_loadb(v, vl, 0, NULL);
            if (!rec)
                continue;
            char *key = strndup(k, kl);
            stop = fn(rec, key, tables[t].ftp, ud);
            free(key);
            json_decref(rec);
        }
        db_iter_free(it);
        if (stop)
            return stop;
    }
    return 0;
}

/* ------------------------------------------------------------ the check --- */

typedef struct {
    const char *pw;
    mb_apppass_scope *scope;
    bool ok;
} match_ud;

static int match_one(json_t *rec, const char *key, bool ftp, void *ud)
{
    (void)key;
    match_ud *m = ud;
    const char *hash = json_string_value(json_object_get(rec, "hash"));
    if (!hash || !auth_password_check(hash, m->pw))
        return 0;
    m->ok = true;
    m->scope->store = ftp ? 0 : (uint64_t)json_integer_value(json_object_get(rec, "store"));
    m->scope->read_only = !ftp && json_is_true(json_object_get(rec, "read_only"));
    m->scope->account = false;
    snprintf(m->scope->id, sizeof m->scope->id, "%s", json_string_value(json_object_get(rec, "id")) ?: "");
    return 1;
}

/* Verified app passwords. A WebDAV client sends Basic credentials with every request; the
 * check walked the user's records and MACed the password against each (auth_password_check's
 * cache), about 90,000 instructions of a 4 KiB PUT's 630,000. A name and password that matched
 * are remembered here, keyed by a BLAKE2b of both under a key drawn at start (never the
 * password), with what they matched: the user and the scope. An entry holds while `gen` is
 * what it was before the records were read: every write of a user record or of either table
 * of app passwords moves it (db_watch_prefix), so a revoke, a password or role change or a
 * deleted user is seen by the next request; and for login_cache_ttl at most (0: no cache). */
#define APCACHE_SLOTS 64
static struct {
    uint8_t mac[crypto_generichash_BYTES];
    uint64_t gen;
    int64_t until; /* 0: empty */
    uint64_t uid;
    int role;
    char name[72];
    mb_apppass_scope scope;
} apcache[APCACHE_SLOTS];
static uint8_t apcache_key[crypto_generichash_KEYBYTES];
static pthread_mutex_t apcache_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t cred_gen;
static pthread_once_t apcache_once = PTHREAD_ONCE_INIT;

static void apcache_init(void)
{
    randombytes_buf(apcache_key, sizeof apcache_key);
    db_watch_prefix("u/", &cred_gen);
    db_watch_prefix("ap/", &cred_gen);
    db_watch_prefix("m/ftp/pw/", &cred_gen);
}

static size_t apcache_mac(const char *name, const char *pw, uint8_t mac[crypto_generichash_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, apcache_key, sizeof apcache_key, crypto_generichash_BYTES);
    crypto_generichash_update(&st, (const uint8_t *)name, strlen(name) + 1); /* with its NUL: no ambiguity */
    crypto_generichash_update(&st, (const uint8_t *)pw, strlen(pw));
    crypto_generichash_final(&st, mac, crypto_generichash_BYTES);
    return (size_t)(mac[0] | mac[1] << 8) % APCACHE_SLOTS;
}

static bool apcache_get(const uint8_t mac[crypto_generichash_BYTES], size_t i, mb_user *out, char *namebuf,
                        size_t n, mb_apppass_scope *sc)
{
    pthread_mutex_lock(&apcache_lock);
    bool hit = apcache[i].until > now_mono_ms() && apcache[i].gen == atomic_load(&cred_gen) &&
               sodium_memcmp(apcache[i].mac, mac, crypto_generichash_BYTES) == 0;
    if (hit) {
        snprintf(namebuf, n, "%s", apcache[i].name);
        *out = (mb_user){.size = sizeof *out, .id = apcache[i].uid, .name = namebuf, .role = apcache[i].role};
        *sc = apcache[i].scope;
    }
    pthread_mutex_unlock(&apcache_lock);
    return hit;
}

static void apcache_put(const uint8_t mac[crypto_generichash_BYTES], size_t i, uint64_t gen, const mb_user *u,
                        const mb_apppass_scope *sc)
{
    pthread_mutex_lock(&apcache_lock);
    memcpy(apcache[i].mac, mac, crypto_generichash_BYTES);
    apcache[i].gen = gen;
    apcache[i].until = now_mono_ms() + g_cfg->login_cache_ttl * 1000;
    apcache[i].uid = u->id;
    apcache[i].role = u->role;
    snprintf(apcache[i].name, sizeof apcache[i].name, "%s", u->name);
    apcache[i].scope = *sc;
    pthread_mutex_unlock(&apcache_lock);
}

int apppass_check(const char *name, const char *pw, const char *ip, bool allow_account, mb_user *out, char *namebuf,
                  size_t n, mb_apppass_scope *scope, mb_err *err)
{
    mb_apppass_scope sc = {.size = sizeof sc};
    if (!name || !pw || !*name || !*pw)
        return err_set(err, MB_EAUTH, "wrong username or password");
    if (auth_login_wait(name, ip, err))
        return MB_ETHROTTLE;
    pthread_once(&apcache_once, apcache_init);
    bool cache = g_cfg && g_cfg->login_cache_ttl > 0;
    uint8_t mac[crypto_generichash_BYTES];
    size_t slot = cache ? apcache_mac(name, pw, mac) : 0;
    uint64_t gen = atomic_load(&cred_gen); /* before the records are read: a write meanwhile moves it */
    mb_user u;
    bool ok = cache && apcache_get(mac, slot, &u, namebuf, n, &sc);
    if (!ok && auth_user_find(name, &u, namebuf, n, err) == 0) {
        match_ud m = {pw, &sc, false};
        each_record(u.id, match_one, &m);
        if ((ok = m.ok) && cache)
            apcache_put(mac, slot, gen, &u, &sc);
    }
    if (ok) {
        auth_login_succeeded(name, ip);
        *out = u;
        if (scope)
            memcpy(scope, &sc, scope->size && scope->size < sizeof sc ? scope->size : sizeof sc);
        return 0;
    }
    if (allow_account) { /* auth_password counts its own failure: one per wrong guess */
        int rc = auth_password(name, pw, ip, out, namebuf, n, err);
        if (rc == 0 && scope) {
            sc.account = true;
            memcpy(scope, &sc, scope->size && scope->size < sizeof sc ? scope->size : sizeof sc);
        }
        return rc;
    }
    auth_login_failed(name, ip);
    return err_set(err, MB_EAUTH, "wrong username or app password");
}

/* ------------------------------------------------------------- routes --- */

static int list_one(json_t *rec, const char *key, bool ftp, void *ud)
{
    (void)key;
    json_t *o = json_pack("{s:O?, s:O?, s:O?, s:s}", "id", json_object_get(rec, "id"), "name",
                          json_object_get(rec, "name"), "created", json_object_get(rec, "created"), "source",
                          ftp ? "ftp" : "account");
    uint64_t sid = ftp ? 0 : (uint64_t)json_integer_value(json_object_get(rec, "store"));
    json_object_set_new(o, "store", sid ? json_integer((json_int_t)sid) : json_null());
    json_object_set_new(o, "read_only", json_boolean(!ftp && json_is_true(json_object_get(rec, "read_only"))));
    json_array_append_new(ud, o);
    return 0;
}

static int h_list(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    json_t *arr = json_array();
    each_record(http_req_user(req)->id, list_one, arr);
    return http_reply_json(req, 200, arr);
}

static int h_create(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const mb_user *u = http_req_user(req);
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (!name || !*name || strlen(name) > 100 || !utf8_valid(name, strlen(name)))
        return err_set(err, MB_EINVAL, "name: an app password needs a name of 1 to 100 characters");
    json_t *js = json_object_get(b, "store"), *jr = json_object_get(b, "read_only");
    uint64_t sid = 0;
    if (js && !json_is_null(js)) {
        if (!json_is_integer(js) || json_integer_value(js) < 1)
            return err_set(err, MB_EINVAL, "store: the id of one of your stores, or null for all of them");
        sid = (uint64_t)json_integer_value(js);
        json_t *store = NULL;
        int rc = fs_store_get(u, sid, &store, err); /* another user's store is a 404 like a missing one */
        json_decref(store);
        if (rc)
            return rc;
    }
    if (jr && !json_is_boolean(jr))
        return err_set(err, MB_EINVAL, "read_only: true or false");
    json_t *all = json_array();
    each_record(u->id, list_one, all);
    size_t have = json_array_size(all);
    json_decref(all);
    if (have >= MAX_PER_USER)
        return err_set(err, MB_ECONFLICT, "you have %d app passwords already; revoke some first", MAX_PER_USER);

    char pw[PW_LEN + 1], id[17], hash[crypto_pwhash_STRBYTES];
    uint8_t r[PW_LEN], rid[8];
    randombytes_buf(r, sizeof r);
    randombytes_buf(rid, sizeof rid);
    for (int i = 0; i < PW_LEN; i++)
        pw[i] = alphabet[r[i] & 31];
    pw[PW_LEN] = 0;
    hex_encode(rid, sizeof rid, id);
    if (auth_pwhash_str(hash, pw, PW_LEN))
        return err_set(err, MB_ENOMEM, "could not hash the password");
    int64_t now = now_wall();
    bool ro = json_is_true(jr);
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:b}", "v", 1, "id", id, "name", name, "hash", hash,
                            "created", (json_int_t)now, "store", (json_int_t)sid, "read_only", ro);
    char key[64];
    prefix_of(key, sizeof key, "ap/", u->id);
    strcat(key, id);
    int rc = db_put_json(key, rec, true);
    if (!rc) /* cluster mode: in etcd before the password is shown, for every node to take */
        cluster_kv_flush(2000);
    json_decref(rec);
    if (rc) {
        sodium_memzero(pw, sizeof pw);
        return err_set(err, MB_EIO, "could not store the app password");
    }
    hook_emit("apppass.created", json_pack("{s:I, s:s, s:s}", "user_id", (json_int_t)u->id, "id", id, "name", name),
              NULL);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:b, s:s}", "id", id, "name", name, "username", u->name,
                          "password", pw, "created", (json_int_t)now, "read_only", ro, "source", "account");
    json_object_set_new(o, "store", sid ? json_integer((json_int_t)sid) : json_null());
    sodium_memzero(pw, sizeof pw);
    return http_reply_json(req, 201, o);
}

typedef struct {
    const char *id;
    char key[96];
} find_ud;

static int find_one(json_t *rec, const char *key, bool ftp, void *ud)
{
    (void)ftp;
    find_ud *f = ud;
    const char *id = json_string_value(json_object_get(rec, "id"));
    if (!id || strcmp(id, f->id))
        return 0;
    snprintf(f->key, sizeof f->key, "%s", key);
    return 1;
}

static int h_delete(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const mb_user *u = http_req_user(req);
    const char *id = http_req_param(req, "id");
    find_ud f = {id, ""};
    if (!id || strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16 || !each_record(u->id, find_one, &f))
        return err_set(err, MB_ENOENT, "no app password with id %s", id ? id : "");
    if (db_del(f.key, strlen(f.key), true))
        return err_set(err, MB_EIO, "could not revoke the app password");
    hook_emit("apppass.revoked", json_pack("{s:I, s:s}", "user_id", (json_int_t)u->id, "id", id), NULL);
    return http_reply_bytes(req, 204, NULL, "", 0);
}

int apppass_init(mb_err *err)
{
    int rc;
    if ((rc = http_route_add(NULL, "GET", "/api/v1/account/app-passwords", MB_ROLE_USER, h_list, NULL, err)) ||
        (rc = http_route_add(NULL, "POST", "/api/v1/account/app-passwords", MB_ROLE_USER, h_create, NULL, err)) ||
        (rc = http_route_add(NULL, "DELETE", "/api/v1/account/app-passwords/{id}", MB_ROLE_USER, h_delete, NULL,
                             err)))
        return rc;
    return 0;
}
