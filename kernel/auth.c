/*
 * auth.c — users, passwords, tokens, browser sessions and login throttling.
 *
 * Users have argon2id password hashes (libsodium crypto_pwhash_str). Every credential a
 * client holds (login token, named API token, browser session) is 32 random bytes shown
 * once; only its SHA-256 is stored, so a copy of the database grants nothing. Browser
 * sessions are an HttpOnly SameSite=Strict cookie plus a CSRF token that the page sends in
 * X-CSRF-Token on every unsafe method.
 *
 * Keys (docs/storage.md): u/<name>, ui/<id>, t/<sha256(token)>, ut/<uid>/<token id>.
 * Threads: any HTTP worker. The throttle table is guarded by its own mutex.
 */
#include "fs.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_PREFIX "mbt_"
#define SESSION_COOKIE "mb_session"

/* --------------------------------------------------------- throttling --- */
/* A failed login counts in three throttles (throttle.c), so an attacker locks out only
 * himself, never the account's owner elsewhere:
 *  - (account, address): login_max_failures per login_window, then locked for the rest of it;
 *  - address: login_max_failures_per_ip per window across accounts (password spraying);
 *  - account: past login_account_slow_after failures from anywhere in the window, one try per
 *    LOGIN_SLOW_S after each failure: slowed, never locked. */
#define LOGIN_SLOW_S 1

typedef struct {
    mb_throttle *pair, *addr, *account;
    char kpair[160], kaddr[80], kaccount[80];
} login_throttle;

/* Looked up on each login, so a SIGHUP's new limits apply at once. */
static void login_throttle_for(login_throttle *t, const char *name, const char *ip)
{
    t->pair = throttle_get("login.account_address", g_cfg->login_max_failures, g_cfg->login_window, 0);
    t->addr = throttle_get("login.address", g_cfg->login_max_failures_per_ip, g_cfg->login_window, 0);
    t->account = throttle_get("login.account", g_cfg->login_account_slow_after, g_cfg->login_window, LOGIN_SLOW_S);
    snprintf(t->kpair, sizeof t->kpair, "%.64s\n%s", name ? name : "", ip ? ip : "");
    snprintf(t->kaddr, sizeof t->kaddr, "%s", ip ? ip : "");
    snprintf(t->kaccount, sizeof t->kaccount, "%.64s", name ? name : "");
}

static int64_t login_wait(const login_throttle *t, mb_err *err)
{
    int64_t w;
    if ((w = throttle_wait(t->pair, t->kpair)))
        err_set(err, MB_ETHROTTLE, "too many failed logins for this account from your address; try again in %lld s",
                (long long)w);
    else if ((w = throttle_wait(t->addr, t->kaddr)))
        err_set(err, MB_ETHROTTLE, "too many failed logins from your address; try again in %lld s", (long long)w);
    else if ((w = throttle_wait(t->account, t->kaccount)))
        err_set(err, MB_ETHROTTLE,
                "this account is receiving many wrong passwords, so its logins are slowed; try again in %lld s",
                (long long)w);
    return w;
}

int64_t auth_login_wait(const char *name, const char *ip, mb_err *err)
{
    login_throttle t;
    login_throttle_for(&t, name, ip);
    return login_wait(&t, err);
}

/* ------------------------------------------------------------ helpers --- */

static const char *role_name(int role) { return role == MB_ROLE_ADMIN ? "admin" : "user"; }

static int role_parse(const char *s)
{
    if (!s || !strcmp(s, "user"))
        return MB_ROLE_USER;
    if (!strcmp(s, "admin"))
        return MB_ROLE_ADMIN;
    return -1;
}

void auth_token_hash(const char *token, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const uint8_t *)token, strlen(token));
    hex_encode(h, sizeof h, out);
}

static int user_read(const char *name, json_t **out, bool shared)
{
    char key[128];
    if (!auth_valid_username(name))
        return MB_ENOENT; /* also keeps the key from being truncated into another name */
    snprintf(key, sizeof key, "u/%.64s", name);
    int rc = shared ? db_get_json_shared(key, out) : db_get_json(key, out);
    if (rc && cluster_kv_fetch(key)) /* cluster mode: made on another node a moment ago */
        rc = shared ? db_get_json_shared(key, out) : db_get_json(key, out);
    return rc;
}

static int user_get(const char *name, json_t **out) { return user_read(name, out, false); }
/* Shared from the decoded-record cache (db.c): the caller only reads it. */
static int user_get_shared(const char *name, json_t **out) { return user_read(name, out, true); }

/* argon2id takes 64 MiB for the ~70 ms it runs (crypto_pwhash_MEMLIMIT_INTERACTIVE). Every
 * hash and every check that reaches it passes this gate, which lets as many run at once as the
 * machine has CPUs and never more than PWHASH_MAX: more would only share the same CPUs, while
 * their memory added up (sixteen logins at once, one per request thread, took mbyted to 593 MiB
 * on a 2-CPU machine, enough to get a small box's server killed; 145 MiB through the gate).
 * The others wait their turn. */
#define PWHASH_MAX 4
static pthread_mutex_t pwhash_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pwhash_cv = PTHREAD_COND_INITIALIZER;
static int pwhash_busy;

static void pwhash_enter(void)
{
    static int limit;
    pthread_mutex_lock(&pwhash_mu);
    if (!limit) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        limit = n < 1 ? 1 : n > PWHASH_MAX ? PWHASH_MAX : (int)n;
    }
    while (pwhash_busy >= limit)
        pthread_cond_wait(&pwhash_cv, &pwhash_mu);
    pwhash_busy++;
    pthread_mutex_unlock(&pwhash_mu);
}

static void pwhash_leave(void)
{
    pthread_mutex_lock(&pwhash_mu);
    pwhash_busy--;
    pthread_cond_signal(&pwhash_cv);
    pthread_mutex_unlock(&pwhash_mu);
}

int auth_pwhash_str(char out[128], const char *pw, size_t n)
{
    pwhash_enter();
    int rc = crypto_pwhash_str(out, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
    pwhash_leave();
    return rc;
}

bool auth_pwhash_verify(const char *hash, const char *pw)
{
    if (!hash || !pw)
        return false;
    pwhash_enter();
    bool ok = crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
    pwhash_leave();
    return ok;
}

int auth_password_hash(const char *pw, char out[128], mb_err *err)
{
    size_t n = strlen(pw);
    if (n < 8)
        return err_set(err, MB_EINVAL, "password: must be at least 8 characters");
    if (n > 1024)
        return err_set(err, MB_EINVAL, "password: must be at most 1024 bytes");
    if (auth_pwhash_str(out, pw, n))
        return err_set(err, MB_ENOMEM, "password hashing ran out of memory");
    return 0;
}

int auth_user_add(const char *name, const char *password, int role, uint64_t *id, mb_err *err)
{
    static pthread_mutex_t add_lock = PTHREAD_MUTEX_INITIALIZER;
    if (!auth_valid_username(name))
        return err_set(err, MB_EINVAL,
                       "username: 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit");
    char hash[crypto_pwhash_STRBYTES];
    int rc = auth_password_hash(password, hash, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&add_lock); /* check-then-create must not race with itself */
    json_t *existing = NULL;
    if (user_get(name, &existing) == 0) {
        json_decref(existing);
        pthread_mutex_unlock(&add_lock);
        return err_set(err, MB_EEXIST, "user '%s' already exists", name);
    }
    uint64_t uid, sid;
    if ((rc = cluster_next_id("user", &uid, err)) || (rc = cluster_next_id("store", &sid, err))) {
        pthread_mutex_unlock(&add_lock);
        return rc;
    }
    json_t *u = json_pack("{s:i, s:I, s:s, s:s, s:s, s:I}", "v", 1, "id", (json_int_t)uid, "name", name, "role",
                          role_name(role), "hash", hash, "created", (json_int_t)now_wall());
    /* One transaction, like every store creation: the commit observer sees the new store, and
     * txn_end wakes the outbox for user.created and store.created once it is durable. */
    txn t;
    txn_begin(&t, NULL);
    db_batch *b = t.b;
    char key[128], k16[17];
    snprintf(key, sizeof key, "u/%.64s", name);
    db_batch_put_json(b, key, u);
    key_u64(k16, uid);
    snprintf(key, sizeof key, "ui/%s", k16);
    db_batch_put(b, key, strlen(key), name, strlen(name));
    hook_emit_batch(b, "user.created",
                    json_pack("{s:I, s:s, s:s}", "user_id", (json_int_t)uid, "username", name, "role", role_name(role)));
    fs_store_create_batch(b, sid, uid, "Home"); /* the default store comes with the account, atomically */
    json_decref(u);
    rc = txn_end(&t, 0, err, "the new user");
    pthread_mutex_unlock(&add_lock);
    if (!rc) /* cluster mode: in etcd before anyone is told, so every node finds it at once */
        cluster_kv_flush(2000);
    sodium_memzero(hash, sizeof hash);
    if (rc)
        return rc;
    if (id)
        *id = uid;
    log_info("user %s created with role %s", name, role_name(role));
    return 0;
}

/* Issue a token of `kind` for uid; the clear token goes to out (shown once). */
static int token_issue(uint64_t uid, const char *kind, const char *name, int64_t ttl, char out[80], char *csrf_out,
                       char *id_out)
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    char hex[65];
    hex_encode(raw, sizeof raw, hex);
    snprintf(out, 80, TOKEN_PREFIX "%s", hex);
    char h[65];
    auth_token_hash(out, h);
    char tid[17];
    random_hex(tid, 8);
    json_t *t = json_pack("{s:i, s:I, s:s, s:s, s:s, s:I, s:I}", "v", 1, "uid", (json_int_t)uid, "kind", kind, "id",
                          tid, "name", name ? name : "", "created", (json_int_t)now_wall(), "expires",
                          (json_int_t)(ttl > 0 ? now_wall() + ttl : 0));
    if (csrf_out) {
        random_hex(csrf_out, 16);
        json_object_set_new(t, "csrf", json_string(csrf_out));
    }
    db_batch *b = db_batch_new();
    char key[128], k16[17];
    snprintf(key, sizeof key, "t/%s", h);
    db_batch_put_json(b, key, t);
    key_u64(k16, uid);
    snprintf(key, sizeof key, "ut/%s/%s", k16, tid);
    db_batch_put(b, key, strlen(key), h, strlen(h));
    json_decref(t);
    if (id_out)
        memcpy(id_out, tid, 17);
    sodium_memzero(raw, sizeof raw);
    int rc = db_batch_commit(b, true);
    if (!rc) /* cluster mode: in etcd before the client has it, so every node can read it at once */
        cluster_kv_flush(2000);
    return rc;
}

static int token_revoke(uint64_t uid, const char *tid)
{
    char key[128], k16[17];
    key_u64(k16, uid);
    snprintf(key, sizeof key, "ut/%s/%s", k16, tid);
    char *h;
    /* in cluster mode a token made on another node a moment ago may not be here yet: etcd has it */
    if (db_get(key, strlen(key), &h, NULL) && (!cluster_kv_fetch(key) || db_get(key, strlen(key), &h, NULL)))
        return MB_ENOENT;
    db_batch *b = db_batch_new();
    db_batch_del(b, key, strlen(key));
    snprintf(key, sizeof key, "t/%s", h);
    db_batch_del(b, key, strlen(key));
    free(h);
    return db_batch_commit(b, true);
}

/* Account uid: its name and record (shared). In cluster mode an account made on another node a
 * moment ago may not be here yet: it is read from etcd then. */
static int account_of(uint64_t uid, char *name, size_t n, json_t **u)
{
    char key[200], k16[17];
    key_u64(k16, uid);
    snprintf(key, sizeof key, "ui/%s", k16);
    if (auth_user_name(uid, name, n) && (!cluster_kv_fetch(key) || auth_user_name(uid, name, n)))
        return MB_ENOENT;
    snprintf(key, sizeof key, "u/%s", name);
    if (user_get_shared(name, u) && (!cluster_kv_fetch(key) || user_get_shared(name, u)))
        return MB_ENOENT;
    return 0;
}

/* Look up a presented token; on success fills user (name in the arena) and *tok (new ref). */
static int token_resolve(arena *a, const char *token, mb_user *user, json_t **tok)
{
    if (strncmp(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) || strlen(token) != strlen(TOKEN_PREFIX) + 64)
        return MB_EAUTH;
    char h[65], key[80];
    auth_token_hash(token, h);
    snprintf(key, sizeof key, "t/%s", h);
    json_t *t; /* shared from the decoded-record cache: only read (a revocation deletes the key) */
    if (db_get_json_shared(key, &t) && (!cluster_kv_fetch(key) || db_get_json_shared(key, &t)))
        return MB_EAUTH; /* unknown here, and (cluster mode) in etcd */
    int64_t exp = json_integer_value(json_object_get(t, "expires"));
    if (exp && exp < now_wall()) {
        json_decref(t);
        return MB_EAUTH;
    }
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(t, "uid"));
    char name[128];
    json_t *u = NULL;
    if (account_of(uid, name, sizeof name, &u)) {
        json_decref(t);
        return MB_EAUTH;
    }
    user->size = sizeof *user;
    user->id = uid;
    user->name = arena_strdup(a, name);
    user->role = role_parse(json_string_value(json_object_get(u, "role")));
    json_decref(u);
    if (tok)
        *tok = t;
    else
        json_decref(t);
    return 0;
}

static const char *cookie_value(mb_req *req, const char *name)
{
    return http_req_cookie(req, name);
}

static int user_fill(json_t *u, mb_user *out, char *namebuf, size_t n);

int auth_request(mb_req *req, mb_user *user, mb_err *err)
{
    const char *h = http_req_header(req, "Authorization");
    arena *a = http_req_arena(req);
    uint64_t vid;
    json_t *vu;
    char vname[72];
    /* Cluster mode: another node forwarded the request for a user it authenticated (signed),
     * perhaps with a token made there a moment ago that has not reached this node yet. */
    if (cluster_fwd_vouched(req, &vid) && auth_user_name(vid, vname, sizeof vname) == 0 && user_get(vname, &vu) == 0) {
        user_fill(vu, user, arena_alloc(a, 72), 72);
        json_decref(vu);
        return 0;
    }
    if (h) {
        if (strncasecmp(h, "Bearer ", 7))
            return err_set(err, MB_EAUTH, "the Authorization header must be 'Bearer <token>'");
        if (token_resolve(a, h + 7, user, NULL))
            return err_set(err, MB_EAUTH, "the token is unknown, revoked or expired");
        return 0;
    }
    const char *c = cookie_value(req, SESSION_COOKIE);
    if (!c)
        return err_set(err, MB_EAUTH, "log in first: send 'Authorization: Bearer <token>'");
    json_t *t = NULL;
    if (token_resolve(a, c, user, &t))
        return err_set(err, MB_EAUTH, "the session has expired; log in again");
    const char *m = http_req_method(req);
    bool safe = !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS");
    const char *want = json_string_value(json_object_get(t, "csrf"));
    const char *got = http_req_header(req, "X-CSRF-Token");
    bool ok = safe || (want && got && strlen(want) == strlen(got) && sodium_memcmp(want, got, strlen(want)) == 0);
    json_decref(t);
    if (!ok)
        return err_set(err, MB_EPERM, "the X-CSRF-Token header is missing or wrong");
    return 0;
}

int auth_bootstrap(char generated[33], mb_err *err)
{
    generated[0] = '\0';
    db_iter *it = db_iter_prefix("u/", 2);
    bool any = db_iter_next(it);
    db_iter_free(it);
    if (any)
        return 0;
    const char *pw = getenv("MBYTE_ADMIN_PASSWORD");
    if (!pw || !*pw) {
        random_hex(generated, 16);
        pw = generated;
    }
    int rc = auth_user_add("admin", pw, MB_ROLE_ADMIN, NULL, err);
    if (rc) {
        sodium_memzero(generated, 33);
        return rc;
    }
    if (pw != generated)
        printf("First start: created user 'admin' with the password from MBYTE_ADMIN_PASSWORD\n");
    return 0;
}

/* ------------------------------------------------------------- routes --- */

static const char *jstr_or_null(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *user_public(json_t *u)
{
    return json_pack("{s:O, s:O, s:O, s:O}", "id", json_object_get(u, "id"), "username", json_object_get(u, "name"),
                     "role", json_object_get(u, "role"), "created", json_object_get(u, "created"));
}

static int password_login(const char *name, const char *pw, const char *ip, mb_user *out, char *namebuf, size_t n,
                          int64_t *wait, mb_err *err);

/* POST /api/v1/auth/login {"username","password","session"?} */
static int h_login(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *name = jstr_or_null(b, "username"), *pw = jstr_or_null(b, "password");
    if (!name || !pw)
        return err_set(err, MB_EINVAL, "username and password are required strings");
    mb_user who;
    char namebuf[80];
    int64_t wait = 0;
    int rc = password_login(name, pw, http_req_client_ip(req), &who, namebuf, sizeof namebuf, &wait, err);
    if (rc == MB_ETHROTTLE) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)wait);
        http_reply_header(req, "Retry-After", ra);
    }
    json_t *u = NULL;
    if (rc == 0 && user_get(namebuf, &u))
        rc = err_set(err, MB_EAUTH, "wrong username or password");
    if (rc)
        return rc;
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(u, "id"));
    bool session = json_is_true(json_object_get(b, "session"));
    char token[80], csrf[33];
    if (token_issue(uid, session ? "session" : "login", "login", g_cfg->token_ttl, token, session ? csrf : NULL,
                    NULL)) {
        json_decref(u);
        return err_set(err, MB_EIO, "could not store the token");
    }
    json_t *out = json_pack("{s:s, s:I, s:o}", "token", token, "expires", (json_int_t)(now_wall() + g_cfg->token_ttl),
                            "user", user_public(u));
    if (session) {
        char cookie[200];
        snprintf(cookie, sizeof cookie, SESSION_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s", token,
                 (long long)g_cfg->token_ttl, http_req_secure(req) ? "; Secure" : ""); /* never sent in clear */
        http_reply_header(req, "Set-Cookie", cookie);
        json_object_set_new(out, "csrf", json_string(csrf));
        json_object_del(out, "token"); /* the cookie carries it; scripts never see it */
    }
    http_reply_header(req, "Cache-Control", "no-store"); /* a credential: no cache may keep it */
    hook_emit("auth.login", json_pack("{s:I, s:s, s:s}", "user_id", (json_int_t)uid, "username", name, "ip",
                                      http_req_client_ip(req)),
              NULL);
    json_decref(u);
    sodium_memzero(token, sizeof token);
    return http_reply_json(req, 200, out);
}

/* POST /api/v1/auth/logout: revoke the credential used for this request. */
static int h_logout(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    const char *h = http_req_header(req, "Authorization");
    const char *tok = h && !strncasecmp(h, "Bearer ", 7) ? h + 7 : cookie_value(req, SESSION_COOKIE);
    if (tok) {
        char hh[65], key[80];
        auth_token_hash(tok, hh);
        snprintf(key, sizeof key, "t/%s", hh);
        json_t *t;
        if (db_get_json(key, &t) == 0) {
            token_revoke((uint64_t)json_integer_value(json_object_get(t, "uid")), jstr_or_null(t, "id"));
            json_decref(t);
        }
    }
    http_reply_header(req, "Set-Cookie", SESSION_COOKIE "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    return http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static int h_me(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const mb_user *me = http_req_user(req);
    if (me->id == 0)
        return http_reply_json(req, 200, json_pack("{s:i, s:s, s:s}", "id", 0, "username", me->name, "role", "admin"));
    json_t *u;
    if (user_get(me->name, &u))
        return err_set(err, MB_ENOENT, "your account no longer exists");
    json_t *out = user_public(u);
    json_decref(u);
    return http_reply_json(req, 200, out);
}

static int set_password(const char *name, const char *pw, mb_err *err)
{
    json_t *u;
    if (user_get(name, &u))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    char hash[crypto_pwhash_STRBYTES];
    int rc = auth_password_hash(pw, hash, err);
    if (rc) {
        json_decref(u);
        return rc;
    }
    json_object_set_new(u, "hash", json_string(hash));
    char key[128];
    snprintf(key, sizeof key, "u/%.64s", name);
    rc = db_put_json(key, u, true);
    json_decref(u);
    return rc ? err_set(err, rc, "could not store the password") : 0;
}

/* POST /api/v1/me/password {"old","new"} */
static int h_passwd(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *old = jstr_or_null(b, "old"), *nw = jstr_or_null(b, "new");
    if (!old || !nw)
        return err_set(err, MB_EINVAL, "old and new are required strings");
    const mb_user *me = http_req_user(req);
    json_t *u;
    if (user_get(me->name, &u))
        return err_set(err, MB_ENOENT, "your account no longer exists");
    bool ok = auth_pwhash_verify(jstr_or_null(u, "hash"), old);
    json_decref(u);
    if (!ok)
        return err_set(err, MB_EPERM, "old: the current password is wrong");
    int rc = set_password(me->name, nw, err);
    return rc ? rc : http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static json_t *list_tokens(uint64_t uid)
{
    char prefix[64], k16[17];
    key_u64(k16, uid);
    snprintf(prefix, sizeof prefix, "ut/%s/", k16);
    json_t *arr = json_array();
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        char key[80];
        snprintf(key, sizeof key, "t/%.*s", (int)vl, v);
        json_t *t;
        if (db_get_json(key, &t))
            continue;
        if (!strcmp(jstr_or_null(t, "kind") ? jstr_or_null(t, "kind") : "", "api"))
            json_array_append_new(arr, json_pack("{s:O, s:O, s:O, s:O}", "id", json_object_get(t, "id"), "name",
                                                 json_object_get(t, "name"), "created", json_object_get(t, "created"),
                                                 "expires", json_object_get(t, "expires")));
        json_decref(t);
    }
    db_iter_free(it);
    return arr;
}

static int create_token(mb_req *req, uint64_t uid, mb_err *err)
{
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *name = jstr_or_null(b, "name");
    if (!name || !*name || strlen(name) > 100 || !utf8_valid(name, strlen(name)))
        return err_set(err, MB_EINVAL, "name: a token needs a name of 1 to 100 characters");
    json_t *d = json_object_get(b, "expires_days");
    int64_t ttl = 0;
    if (d) {
        if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > 3650)
            return err_set(err, MB_EINVAL, "expires_days: must be a whole number from 1 to 3650");
        ttl = json_integer_value(d) * 86400;
    }
    char token[80], tid[17];
    if (token_issue(uid, "api", name, ttl, token, NULL, tid))
        return err_set(err, MB_EIO, "could not store the token");
    hook_emit("token.created", json_pack("{s:I, s:s, s:s}", "user_id", (json_int_t)uid, "id", tid, "name", name),
              NULL);
    json_t *out = json_pack("{s:s, s:s, s:s}", "id", tid, "name", name, "token", token);
    sodium_memzero(token, sizeof token);
    return http_reply_json(req, 201, out);
}

static int h_tokens_list(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    return http_reply_json(req, 200, list_tokens(http_req_user(req)->id));
}

static int h_tokens_create(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    return create_token(req, http_req_user(req)->id, err);
}

static int h_tokens_delete(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *id = http_req_param(req, "id");
    if (token_revoke(http_req_user(req)->id, id))
        return err_set(err, MB_ENOENT, "no token with id %s", id);
    hook_emit("token.revoked", json_pack("{s:I, s:s}", "user_id", (json_int_t)http_req_user(req)->id, "id", id), NULL);
    return http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

/* POST /api/v1/admin/users {"username","password","role"} */
static int h_users_add(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *name = jstr_or_null(b, "username"), *pw = jstr_or_null(b, "password");
    int role = role_parse(jstr_or_null(b, "role"));
    if (!name || !pw)
        return err_set(err, MB_EINVAL, "username and password are required strings");
    if (role < 0 || (json_object_get(b, "role") && !jstr_or_null(b, "role")))
        return err_set(err, MB_EINVAL, "role: must be 'user' or 'admin'");
    uint64_t id;
    int rc = auth_user_add(name, pw, role, &id, err);
    if (rc)
        return rc;
    return http_reply_json(req, 201, json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "username", name, "role",
                                               role_name(role)));
}

static int h_users_list(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    json_t *arr = json_array();
    db_iter *it = db_iter_prefix("u/", 2);
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *u = json_loadb(v, vl, 0, NULL);
        if (u) {
            json_array_append_new(arr, user_public(u));
            json_decref(u);
        }
    }
    db_iter_free(it);
    return http_reply_json(req, 200, arr);
}

/* How many accounts have the admin role. */
static int admins_count(void)
{
    int n = 0;
    db_iter *it = db_iter_prefix("u/", 2);
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *u = json_loadb(v, vl, 0, NULL);
        n += u && role_parse(jstr_or_null(u, "role")) == MB_ROLE_ADMIN;
        json_decref(u);
    }
    db_iter_free(it);
    return n;
}

/* PATCH /api/v1/admin/users/{name} {"password"?, "role"?}: everything is checked before anything
 * changes, and both land in one write, so a refused request changes nothing. The last
 * administrator keeps the role: without one nobody could administer the server. */
static int h_users_patch(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *name = http_req_param(req, "name");
    json_t *b = http_req_json(req, err);
    if (!b)
        return err->code;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v) if (strcmp(k, "role") && strcmp(k, "password"))
        return err_set(err, MB_EINVAL, "%s: unknown field (role and password can be changed)", k);
    json_t *r = json_object_get(b, "role"), *p = json_object_get(b, "password");
    if (!r && !p)
        return err_set(err, MB_EINVAL, "role or password: give at least one");
    int role = r ? role_parse(json_string_value(r)) : -1;
    if (r && (!json_is_string(r) || role < 0))
        return err_set(err, MB_EINVAL, "role: must be 'user' or 'admin'");
    if (p && !json_is_string(p))
        return err_set(err, MB_EINVAL, "password: must be a string");
    json_t *u;
    if (user_get(name, &u))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    char hash[crypto_pwhash_STRBYTES];
    int rc = p ? auth_password_hash(json_string_value(p), hash, err) : 0;
    if (!rc && r && role != MB_ROLE_ADMIN && role_parse(jstr_or_null(u, "role")) == MB_ROLE_ADMIN && admins_count() <= 1)
        rc = err_set(err, MB_ECONFLICT, "role: '%s' is the last administrator", name);
    if (!rc) {
        if (r)
            json_object_set_new(u, "role", json_string(role_name(role)));
        if (p)
            json_object_set_new(u, "hash", json_string(hash));
        char key[128];
        snprintf(key, sizeof key, "u/%.64s", name);
        if (db_put_json(key, u, true))
            rc = err_set(err, MB_EIO, "could not store the change to '%s'", name);
    }
    sodium_memzero(hash, sizeof hash);
    if (!rc) {
        hook_emit("admin.user_changed", json_pack("{s:s, s:s}", "username", name, "by", http_req_user(req)->name),
                  NULL);
        json_t *out = user_public(u);
        json_decref(u);
        return http_reply_json(req, 200, out);
    }
    json_decref(u);
    return rc;
}

/* POST /api/v1/admin/users/{name}/tokens {"name"}: mbytectl token create --user */
static int h_admin_token(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *u;
    const char *name = http_req_param(req, "name");
    if (user_get(name, &u))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    return create_token(req, uid, err);
}

static int h_admin_tokens(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *u;
    const char *name = http_req_param(req, "name");
    if (user_get(name, &u))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    return http_reply_json(req, 200, list_tokens(uid));
}

static int h_admin_token_delete(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *u;
    const char *name = http_req_param(req, "name");
    if (user_get(name, &u))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    uint64_t uid = (uint64_t)json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    if (token_revoke(uid, http_req_param(req, "id")))
        return err_set(err, MB_ENOENT, "no token with id %s", http_req_param(req, "id"));
    return http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static const struct {
    const char *method, *pattern;
    int role;
    mb_route_fn fn;
} auth_routes[] = {
    {"POST", "/api/v1/auth/login", MB_ROLE_NONE, h_login},
    {"POST", "/api/v1/auth/logout", MB_ROLE_NONE, h_logout},
    {"GET", "/api/v1/me", MB_ROLE_USER, h_me},
    {"POST", "/api/v1/me/password", MB_ROLE_USER, h_passwd},
    {"GET", "/api/v1/me/tokens", MB_ROLE_USER, h_tokens_list},
    {"POST", "/api/v1/me/tokens", MB_ROLE_USER, h_tokens_create},
    {"DELETE", "/api/v1/me/tokens/{id}", MB_ROLE_USER, h_tokens_delete},
    {"GET", "/api/v1/admin/users", MB_ROLE_ADMIN, h_users_list},
    {"POST", "/api/v1/admin/users", MB_ROLE_ADMIN, h_users_add},
    {"PATCH", "/api/v1/admin/users/{name}", MB_ROLE_ADMIN, h_users_patch},
    {"GET", "/api/v1/admin/users/{name}/tokens", MB_ROLE_ADMIN, h_admin_tokens},
    {"POST", "/api/v1/admin/users/{name}/tokens", MB_ROLE_ADMIN, h_admin_token},
    {"DELETE", "/api/v1/admin/users/{name}/tokens/{id}", MB_ROLE_ADMIN, h_admin_token_delete},
};

int auth_init(mb_err *err)
{
    for (size_t i = 0; i < sizeof auth_routes / sizeof auth_routes[0]; i++) {
        int rc = http_route_add(NULL, auth_routes[i].method, auth_routes[i].pattern, auth_routes[i].role,
                                auth_routes[i].fn, NULL, err);
        if (rc)
            return rc;
    }
    return 0;
}

void auth_fini(void) {}

/* Issue 8 (mb_api user_find): a user's id by name. */
int auth_user_id(const char *name, uint64_t *id)
{
    json_t *u;
    if (user_get(name, &u))
        return MB_ENOENT;
    *id = (uint64_t)json_integer_value(json_object_get(u, "id"));
    json_decref(u);
    return 0;
}

/* ---------------------------------------------- other doors (ABI minor 5) --- */

/* Fill *out from the stored user record (name copied into namebuf). */
static int user_fill(json_t *u, mb_user *out, char *namebuf, size_t n)
{
    snprintf(namebuf, n, "%s", jstr_or_null(u, "name") ? jstr_or_null(u, "name") : "");
    out->size = sizeof *out;
    out->id = (uint64_t)json_integer_value(json_object_get(u, "id"));
    out->name = namebuf;
    out->role = role_parse(json_string_value(json_object_get(u, "role")));
    return 0;
}

int auth_user_find(const char *name, mb_user *out, char *namebuf, size_t n, mb_err *err)
{
    json_t *u;
    if (!name || user_get(name, &u))
        return err_set(err, MB_ENOENT, "no such user");
    user_fill(u, out, namebuf, n);
    json_decref(u);
    return 0;
}

/* Verified logins. argon2id costs about 70 ms of CPU and 64 MiB on purpose; an FTP client
 * logs in for every transfer (curl, scripts), so each of those paid it, which was most of
 * the cost of a small RETR. A password that verified is remembered for login_cache_ttl
 * seconds as a keyed BLAKE2b of (stored hash, password) under a key drawn at start
 * and never stored: a change of password (a new stored hash) or of the key (a restart)
 * forgets it, a failed attempt is never remembered, and the throttle still applies first.
 * SFTPGo's password caching does the same. What it gives up: someone who can read mbyted's
 * memory can test guesses against a fast hash for the users who logged in lately. */
#define PWCACHE_SLOTS 256
static struct {
    uint8_t mac[crypto_generichash_BYTES];
    int64_t until;
} pwcache[PWCACHE_SLOTS];
static uint8_t pwcache_key[crypto_generichash_KEYBYTES];
static pthread_mutex_t pwcache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pwcache_once = PTHREAD_ONCE_INIT;

static void pwcache_init(void) { randombytes_buf(pwcache_key, sizeof pwcache_key); }

static size_t pwcache_mac(const char *hash, const char *pw, uint8_t mac[crypto_generichash_BYTES])
{
    pthread_once(&pwcache_once, pwcache_init);
    crypto_generichash_state st;
    crypto_generichash_init(&st, pwcache_key, sizeof pwcache_key, crypto_generichash_BYTES);
    crypto_generichash_update(&st, (const uint8_t *)hash, strlen(hash) + 1);
    crypto_generichash_update(&st, (const uint8_t *)pw, strlen(pw));
    crypto_generichash_final(&st, mac, crypto_generichash_BYTES);
    return ((size_t)mac[0] << 8 | mac[1]) % PWCACHE_SLOTS;
}

bool auth_password_check(const char *hash, const char *pw)
{
    if (!hash || !pw)
        return false;
    int64_t ttl = g_cfg ? g_cfg->login_cache_ttl : 0;
    uint8_t mac[crypto_generichash_BYTES];
    size_t i = 0;
    if (ttl > 0) {
        i = pwcache_mac(hash, pw, mac);
        pthread_mutex_lock(&pwcache_lock);
        bool hit = pwcache[i].until > now_mono_ms() && sodium_memcmp(pwcache[i].mac, mac, sizeof mac) == 0;
        pthread_mutex_unlock(&pwcache_lock);
        if (hit)
            return true;
    }
    if (!auth_pwhash_verify(hash, pw))
        return false;
    if (ttl > 0) {
        pthread_mutex_lock(&pwcache_lock);
        memcpy(pwcache[i].mac, mac, sizeof mac);
        pwcache[i].until = now_mono_ms() + ttl * 1000;
        pthread_mutex_unlock(&pwcache_lock);
        sodium_memzero(mac, sizeof mac);
    }
    return true;
}

/* A wrong password from any door (the login, app passwords): counts in all three throttles
 * and raises auth.login_failed. */
void auth_login_failed(const char *name, const char *ip)
{
    login_throttle t;
    login_throttle_for(&t, name, ip);
    metrics_login_failed();
    throttle_fail(t.pair, t.kpair);
    throttle_fail(t.addr, t.kaddr);
    throttle_fail(t.account, t.kaccount);
    hook_emit("auth.login_failed", json_pack("{s:s, s:s}", "username", name, "ip", ip ? ip : ""), NULL);
    log_msg(LOG_INFO, "auth", "failed login for %s from %s", name, ip);
}

/* A right one: forget the (account, address) failures only (auth.c's throttling note). */
void auth_login_succeeded(const char *name, const char *ip)
{
    login_throttle t;
    login_throttle_for(&t, name, ip);
    throttle_clear(t.pair, t.kpair);
}

/* The login's password check with the throttle; *wait is the throttle's wait (Retry-After). */
static int password_login(const char *name, const char *pw, const char *ip, mb_user *out, char *namebuf, size_t n,
                          int64_t *wait, mb_err *err)
{
    if (!name || !pw)
        return err_set(err, MB_EAUTH, "wrong username or password");
    login_throttle t;
    login_throttle_for(&t, name, ip);
    if ((*wait = login_wait(&t, err))) {
        log_msg(LOG_WARN, "auth", "login throttled for %s from %s: %s", name, ip, err->msg);
        return MB_ETHROTTLE;
    }
    json_t *u = NULL;
    bool ok = user_get(name, &u) == 0;
    const char *hash = ok ? jstr_or_null(u, "hash") : NULL;
    ok = ok && hash && auth_password_check(hash, pw);
    if (!ok) {
        json_decref(u);
        auth_login_failed(name, ip);
        return err_set(err, MB_EAUTH, "wrong username or password");
    }
    throttle_clear(t.pair, t.kpair);
    user_fill(u, out, namebuf, n);
    json_decref(u);
    return 0;
}

/* The HTTP login's check for FTP and other doors: same hashes, same throttles. */
int auth_password(const char *name, const char *pw, const char *ip, mb_user *out, char *namebuf, size_t n,
                  mb_err *err)
{
    int64_t wait;
    return password_login(name, pw, ip, out, namebuf, n, &wait, err);
}
