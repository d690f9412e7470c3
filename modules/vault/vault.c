/*
 * modules/vault — secrets from HashiCorp Vault (issue 20, docs/security.md).
 *
 * It registers two providers with the kernel (kernel/secret.c):
 *   vault:<mount>/<path>#<key>[@version]   a KV v2 value (GET /v1/<mount>/data/<path>), for
 *                                          any string value in conf.d: the kernel resolves
 *                                          the reference and the module using it sees a value
 *   transit:<key name>                     key wrapping through the transit engine (encrypt,
 *                                          decrypt, datakey, rotate, rewrap) for api->key_wrap
 * Values are cached in memory. A timer (worker pool, every 250 ms) renews the token at two
 * thirds of its TTL (vault_http.c) and, every `refresh` seconds, asks Vault whether a cached
 * path has a new version (KV v2 metadata); a changed value makes the kernel re-resolve and
 * reconfigure the modules that use it (api->secrets_changed). A sealed (503) or unreachable
 * Vault is retried with a doubling backoff up to `retry_max` seconds while the cached values
 * keep serving; one warning says so when it starts and one line when Vault is back. Nothing
 * is ever revoked.
 *
 * Threads: provider calls come from the loop (module loads and reconfigures: answered from the
 * cache; only a first read goes to Vault), HTTP threads and workers; the timer from a worker.
 * libcurl never runs on the loop thread: a first read asked for there, and init's first contact,
 * run on a helper thread that the loop waits for (off_loop). vault.h says which lock guards what.
 */
#include "vault.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAULT_VERSION "1.0.0"
#define TICK_MS 250

/* ------------------------------------------------------------ references --- */

/* "<mount>/<path>#<key>[@version]" split into the API paths and the key. The kernel checked
 * the syntax (secret_ref_parse); this only cuts it. */
typedef struct {
    char data_path[1200], meta_path[1200], shown[1100], key[256];
    int64_t version;
} kvref;

static int kv_split(const mb_api *api, const char *rest, kvref *k, mb_err *err)
{
    memset(k, 0, sizeof *k);
    const char *slash = strchr(rest, '/'), *hash = strrchr(rest, '#');
    if (!slash || !hash || hash < slash + 2)
        return api->err_set(err, MB_EINVAL, "a vault reference reads <mount>/<path>#<key>[@version]");
    const char *at = strchr(hash, '@');
    size_t keylen = at ? (size_t)(at - hash - 1) : strlen(hash + 1);
    if (!keylen || keylen >= sizeof k->key)
        return api->err_set(err, MB_EINVAL, "the key after '#' is missing or too long");
    memcpy(k->key, hash + 1, keylen);
    int ml = (int)(slash - rest), pl = (int)(hash - slash - 1);
    snprintf(k->data_path, sizeof k->data_path, "%.*s/data/%.*s", ml, rest, pl, slash + 1);
    snprintf(k->meta_path, sizeof k->meta_path, "%.*s/metadata/%.*s", ml, rest, pl, slash + 1);
    snprintf(k->shown, sizeof k->shown, "%.*s", (int)(hash - rest), rest);
    if (at) {
        k->version = strtoll(at + 1, NULL, 10);
        size_t n = strlen(k->data_path);
        snprintf(k->data_path + n, sizeof k->data_path - n, "?version=%lld", (long long)k->version);
    }
    return 0;
}

/* A call with the token. A 403 is a dead token (expired, revoked: log in once more and try
 * again) or a policy that does not allow the path (answered as it is). net held. */
static int authed_call(vault *v, const char *method, const char *path, const json_t *body, vresp *r, mb_err *err)
{
    for (int attempt = 0;; attempt++) {
        int rc = vault_login(v, err);
        if (rc)
            return rc;
        vault_call(v, method, path, v->token, body, r);
        if (r->status != 403 || attempt == 1)
            return 0;
        mb_err e = {0};
        int alive = vault_token_alive(v, &e);
        if (alive != 0)
            return 0; /* the token is fine (a policy said no), or Vault cannot say: keep it */
        v->api->log(v->self, MB_LOG_WARN, "Vault no longer accepts the token; logging in again");
        json_decref(r->body);
        vault_drop_token(v);
    }
}

/* Map a failed answer to a code and a sentence naming the reference, never a value. */
static int answer_error(vault *v, const vresp *r, const char *what, mb_err *err)
{
    char why[1100];
    vault_why(r, why, sizeof why);
    if (!r->status || r->status >= 500)
        return v->api->err_set(err, MB_EBUSY, "%s", why);
    if (r->status == 404)
        return v->api->err_set(err, MB_ENOENT, "%s: not found in Vault", what);
    if (r->status == 403)
        return v->api->err_set(err, MB_EPERM, "%s: %s", what, why);
    return v->api->err_set(err, MB_EINVAL, "%s: %s", what, why);
}

/* Read one KV v2 value from Vault. net held. */
static int kv_fetch(vault *v, const kvref *k, char **value, int64_t *version, mb_err *err)
{
    vresp r;
    int rc = authed_call(v, "GET", k->data_path, NULL, &r, err);
    if (rc)
        return rc;
    if (r.status != 200) {
        rc = answer_error(v, &r, k->shown, err);
        json_decref(r.body);
        return rc;
    }
    json_t *d = json_object_get(r.body, "data");
    json_t *val = json_object_get(json_object_get(d, "data"), k->key);
    *version = json_integer_value(json_object_get(json_object_get(d, "metadata"), "version"));
    if (json_is_string(val))
        *value = strdup(json_string_value(val));
    else if (val && !json_is_null(val))
        *value = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
    else
        rc = v->api->err_set(err, MB_ENOENT, "%s has no key '%s'", k->shown, k->key);
    if (!rc && !*value)
        rc = v->api->err_set(err, MB_ENOMEM, "out of memory");
    json_decref(r.body);
    return rc;
}

/* The newest version of a path (KV v2 metadata), 0 with err when it cannot be read. net held. */
static int64_t kv_current_version(vault *v, const kvref *k, mb_err *err)
{
    vresp r;
    if (authed_call(v, "GET", k->meta_path, NULL, &r, err))
        return 0;
    int64_t cur = 0;
    if (r.status == 200)
        cur = json_integer_value(json_object_get(json_object_get(r.body, "data"), "current_version"));
    else
        answer_error(v, &r, k->shown, err);
    json_decref(r.body);
    return cur;
}

/* ----------------------------------------------------------------- cache --- */

static void cache_free_one(vcache *c)
{
    if (c->value) {
        sodium_memzero(c->value, strlen(c->value));
        free(c->value);
    }
    free(c->ref);
    free(c);
}

/* A copy of the cached value, or NULL. */
static char *cache_get(vault *v, const char *ref)
{
    char *out = NULL;
    pthread_mutex_lock(&v->cache_mu);
    for (vcache *c = v->cache; c; c = c->next)
        if (!strcmp(c->ref, ref)) {
            out = strdup(c->value);
            break;
        }
    pthread_mutex_unlock(&v->cache_mu);
    return out;
}

/* Store a value; true when it differs from what was cached. */
static bool cache_put(vault *v, const char *ref, const char *value, int64_t version)
{
    bool changed = true;
    pthread_mutex_lock(&v->cache_mu);
    vcache *c = v->cache;
    while (c && strcmp(c->ref, ref))
        c = c->next;
    if (!c) {
        c = calloc(1, sizeof *c);
        c->ref = strdup(ref);
        c->next = v->cache;
        v->cache = c;
    } else if (c->value) {
        changed = strcmp(c->value, value) != 0;
        sodium_memzero(c->value, strlen(c->value));
        free(c->value);
    }
    c->value = strdup(value);
    c->version = version;
    pthread_mutex_unlock(&v->cache_mu);
    return changed;
}

/* ---------------------------------------------------- outages and backoff --- */

/* After the timer's work: a failure starts or continues an outage (doubling backoff up to
 * retry_max, one line when it starts: a warning for a sealed or unreachable Vault, an error for a
 * refused login); a success ends one. Provider calls report only MB_EBUSY and success here: a
 * missing key is the caller's error, not an outage. net held. */
static void note_outcome(vault *v, int rc, const mb_err *e)
{
    if (rc) {
        v->backoff_ms = v->backoff_ms ? v->backoff_ms * 2 : 1000;
        if (v->backoff_ms > v->retry_max_s * 1000)
            v->backoff_ms = v->retry_max_s * 1000;
        v->retry_at = vault_now_ms() + v->backoff_ms;
        if (!v->down) {
            int n = 0;
            pthread_mutex_lock(&v->cache_mu);
            for (vcache *c = v->cache; c; c = c->next)
                n++;
            pthread_mutex_unlock(&v->cache_mu);
            v->api->log(v->self, rc == MB_EBUSY ? MB_LOG_WARN : MB_LOG_ERROR,
                        "%s; the %d cached value(s) keep serving, retrying with backoff", e->msg, n);
        } else
            v->api->log(v->self, MB_LOG_DEBUG, "still failing (%s); next try in %lld ms", e->msg,
                        (long long)v->backoff_ms);
        v->down = true;
    } else if (v->down) {
        v->down = false;
        v->backoff_ms = 0;
        v->retry_at = 0;
        v->api->log(v->self, MB_LOG_INFO, "Vault at %s answers again", v->addr);
    }
}

/* A provider call's outcome: only reachability counts (see note_outcome). */
static void note_call(vault *v, int rc, const mb_err *e)
{
    if (rc == 0 || rc == MB_EBUSY)
        note_outcome(v, rc, e);
}

/* Re-read every cached value that is not pinned to a version. net held. Returns how many
 * changed, or a negative code. */
static int refresh_all(vault *v, mb_err *err)
{
    char *refs[256];
    int64_t vers[256];
    int n = 0, changed = 0;
    pthread_mutex_lock(&v->cache_mu);
    for (vcache *c = v->cache; c && n < 256; c = c->next) {
        vers[n] = c->version;
        refs[n++] = strdup(c->ref);
    }
    pthread_mutex_unlock(&v->cache_mu);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        kvref k;
        if (kv_split(v->api, refs[i], &k, err) || k.version)
            continue;
        mb_err e = {0};
        int64_t cur = kv_current_version(v, &k, &e);
        if (!cur && e.code == MB_EBUSY) {
            rc = MB_EBUSY;
            *err = e;
            continue;
        }
        /* Unchanged; or the metadata cannot be read (a policy that allows only data/): read the
         * value itself and compare. */
        if (cur && cur == vers[i])
            continue;
        char *value = NULL;
        int64_t ver = 0;
        if ((rc = kv_fetch(v, &k, &value, &ver, err))) {
            if (rc != MB_EBUSY) {
                v->api->log(v->self, MB_LOG_WARN, "%s; the cached value keeps serving", err->msg);
                rc = 0;
            }
            continue;
        }
        if (cache_put(v, refs[i], value, ver)) {
            changed++;
            v->api->log(v->self, MB_LOG_INFO, "vault:%s changed (version %lld)", refs[i], (long long)ver);
        }
        sodium_memzero(value, strlen(value));
        free(value);
    }
    for (int i = 0; i < n; i++)
        free(refs[i]);
    return rc ? rc : changed;
}

/* ---------------------------------------------------------- the providers --- */

/* Network work asked for on the loop thread (a module load resolving a reference, this
 * module's init) runs on a helper thread: libcurl never runs on the loop. The loop waits for
 * it, at most about `timeout` seconds; cached values never come here. */
typedef struct {
    vault *v;
    int (*fn)(void *arg, mb_err *err);
    void *arg;
    int rc;
    mb_err err;
} offload;

static void *offload_run(void *p)
{
    offload *o = p;
    o->rc = o->fn(o->arg, &o->err);
    return NULL;
}

static int off_loop(vault *v, int (*fn)(void *arg, mb_err *err), void *arg, mb_err *err)
{
    if (!pthread_equal(pthread_self(), v->loop_thread))
        return fn(arg, err);
    offload o = {v, fn, arg, 0, {0}};
    pthread_t t;
    if (pthread_create(&t, NULL, offload_run, &o))
        return v->api->err_set(err, MB_ENOMEM, "cannot start a thread to reach Vault");
    pthread_join(t, NULL);
    if (o.rc)
        *err = o.err;
    return o.rc;
}

typedef struct {
    vault *v;
    const kvref *k;
    char *value;
    int64_t version;
} fetch_job;

static int fetch_locked(void *arg, mb_err *err)
{
    fetch_job *f = arg;
    pthread_mutex_lock(&f->v->net);
    int rc = kv_fetch(f->v, f->k, &f->value, &f->version, err);
    note_call(f->v, rc, err);
    pthread_mutex_unlock(&f->v->net);
    return rc;
}

static int p_get(void *ctx, const char *rest, char **value, mb_err *err)
{
    vault *v = ctx;
    kvref k;
    int rc = kv_split(v->api, rest, &k, err);
    if (rc)
        return rc;
    if ((*value = cache_get(v, rest)))
        return 0;
    fetch_job f = {v, &k, NULL, 0};
    rc = off_loop(v, fetch_locked, &f, err);
    if (!rc) {
        cache_put(v, rest, f.value, f.version);
        *value = f.value;
    } else
        free(f.value);
    return rc;
}

static int p_refresh(void *ctx, mb_err *err)
{
    vault *v = ctx;
    pthread_mutex_lock(&v->net);
    int rc = refresh_all(v, err);
    note_call(v, rc < 0 ? rc : 0, err);
    if (rc >= 0)
        v->next_refresh = vault_now_ms() + v->refresh_s * 1000;
    pthread_mutex_unlock(&v->net);
    return rc > 0 ? 1 : rc;
}

static const mb_secret_ops secret_ops = {sizeof(mb_secret_ops), p_get, p_refresh};

/* Transit: POST /v1/<transit_mount>/<op>/<name>. Key names: letters, digits, '-', '_', '.'. */
static int transit(vault *v, const char *op, const char *name, json_t *body, json_t **data, mb_err *err)
{
    if (!*name || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != strlen(name) ||
        strlen(name) > 128) {
        json_decref(body);
        return v->api->err_set(err, MB_EINVAL, "transit:%.60s: a key name is letters, digits, '-', '_' and '.'", name);
    }
    char path[512], what[200];
    if (!strcmp(op, "rotate"))
        snprintf(path, sizeof path, "%s/keys/%s/rotate", v->transit_mount, name);
    else
        snprintf(path, sizeof path, "%s/%s/%s", v->transit_mount, op, name);
    snprintf(what, sizeof what, "transit %s with key %s", op, name);
    vresp r;
    pthread_mutex_lock(&v->net);
    int rc = authed_call(v, "POST", path, body, &r, err);
    if (!rc && r.status != 200 && r.status != 204)
        rc = answer_error(v, &r, what, err);
    note_call(v, rc, err);
    pthread_mutex_unlock(&v->net);
    if (body) { /* it may hold a key in base64: blank it before it is freed */
        const char *pt = json_string_value(json_object_get(body, "plaintext"));
        if (pt)
            sodium_memzero((char *)pt, strlen(pt));
        json_decref(body);
    }
    if (!rc && data)
        *data = json_incref(json_object_get(r.body, "data"));
    if (!rc && r.body) {
        json_t *d = json_object_get(r.body, "data");
        const char *pt = json_string_value(json_object_get(d, "plaintext"));
        if (pt && !data)
            sodium_memzero((char *)pt, strlen(pt));
    }
    json_decref(r.body);
    return rc;
}

static char *b64(const uint8_t *p, size_t n)
{
    size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(len);
    if (s)
        sodium_bin2base64(s, len, p, n, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

/* data.plaintext (base64) into exactly n bytes; the string is blanked. */
static int plain_out(vault *v, json_t *data, uint8_t *key, size_t n, mb_err *err)
{
    const char *pt = json_string_value(json_object_get(data, "plaintext"));
    size_t got = 0;
    uint8_t buf[1024];
    int rc = 0;
    if (!pt || sodium_base642bin(buf, sizeof buf, pt, strlen(pt), NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL))
        rc = v->api->err_set(err, MB_EINTERNAL, "Vault's answer has no plaintext");
    else if (got != n)
        rc = v->api->err_set(err, MB_EINVAL, "the unwrapped key is %zu bytes long, not %zu", got, n);
    else
        memcpy(key, buf, n);
    if (pt)
        sodium_memzero((char *)pt, strlen(pt));
    sodium_memzero(buf, sizeof buf);
    return rc;
}

static int ciphertext_out(vault *v, json_t *data, char **wrapped, mb_err *err)
{
    const char *ct = json_string_value(json_object_get(data, "ciphertext"));
    if (!ct)
        return v->api->err_set(err, MB_EINTERNAL, "Vault's answer has no ciphertext");
    *wrapped = strdup(ct);
    return 0;
}

static int k_wrap(void *ctx, const char *name, const uint8_t *key, size_t n, char **wrapped, mb_err *err)
{
    vault *v = ctx;
    char *p = b64(key, n);
    json_t *data = NULL;
    int rc = transit(v, "encrypt", name, json_pack("{s:s}", "plaintext", p ? p : ""), &data, err);
    if (p) {
        sodium_memzero(p, strlen(p));
        free(p);
    }
    if (!rc)
        rc = ciphertext_out(v, data, wrapped, err);
    json_decref(data);
    return rc;
}

static int k_unwrap(void *ctx, const char *name, const char *wrapped, uint8_t *key, size_t n, mb_err *err)
{
    vault *v = ctx;
    json_t *data = NULL;
    int rc = transit(v, "decrypt", name, json_pack("{s:s}", "ciphertext", wrapped), &data, err);
    if (!rc)
        rc = plain_out(v, data, key, n, err);
    json_decref(data);
    return rc;
}

static int k_rewrap(void *ctx, const char *name, const char *wrapped, char **out, mb_err *err)
{
    vault *v = ctx;
    json_t *data = NULL;
    int rc = transit(v, "rewrap", name, json_pack("{s:s}", "ciphertext", wrapped), &data, err);
    if (!rc)
        rc = ciphertext_out(v, data, out, err);
    json_decref(data);
    return rc;
}

static int k_datakey(void *ctx, const char *name, uint8_t *key, size_t n, char **wrapped, mb_err *err)
{
    vault *v = ctx;
    if (n != 16 && n != 32 && n != 64)
        return v->api->err_set(err, MB_EINVAL, "transit makes data keys of 16, 32 or 64 bytes, not %zu", n);
    char op[64];
    snprintf(op, sizeof op, "datakey/plaintext");
    json_t *data = NULL;
    int rc = transit(v, op, name, json_pack("{s:i}", "bits", (int)(n * 8)), &data, err);
    if (!rc && !(rc = ciphertext_out(v, data, wrapped, err)) && (rc = plain_out(v, data, key, n, err))) {
        free(*wrapped);
        *wrapped = NULL;
    }
    json_decref(data);
    return rc;
}

static int k_rotate(void *ctx, const char *name, mb_err *err)
{
    vault *v = ctx;
    int rc = transit(v, "rotate", name, NULL, NULL, err);
    if (!rc)
        v->api->log(v->self, MB_LOG_INFO, "transit key %s rotated", name);
    return rc;
}

static const mb_keywrap_ops keywrap_ops = {sizeof(mb_keywrap_ops), k_wrap, k_unwrap, k_rewrap, k_datakey, k_rotate};

/* ----------------------------------------------------------------- timer --- */

static void tick(void *arg)
{
    vault *v = arg;
    int changed = 0;
    pthread_mutex_lock(&v->net);
    int64_t now = vault_now_ms();
    if (!v->retry_at || now >= v->retry_at) {
        mb_err e = {0};
        int rc = vault_renew_if_due(v, &e);
        if (!rc && now >= v->next_refresh) {
            rc = refresh_all(v, &e);
            if (rc >= 0) {
                changed = rc;
                rc = 0;
                v->next_refresh = now + v->refresh_s * 1000;
            }
        }
        note_outcome(v, rc, &e);
    }
    pthread_mutex_unlock(&v->net);
    if (changed)
        v->api->secrets_changed();
}

/* ---------------------------------------------------------- init and fini --- */

static int str_key(vault *v, const json_t *obj, const char *key, char *out, size_t n, mb_err *err)
{
    json_t *s = json_object_get(obj, key);
    if (!s || json_is_null(s))
        return 0;
    if (!json_is_string(s) || json_string_length(s) >= n)
        return v->api->err_set(err, MB_EINVAL, "%s must be a string shorter than %zu bytes", key, n);
    snprintf(out, n, "%s", json_string_value(s));
    return 0;
}

static int path_key(vault *v, const char *name, const char *path, mb_err *err)
{
    if (path[0] && path[0] != '/')
        return v->api->err_set(err, MB_EINVAL, "%s must be an absolute path", name);
    return 0;
}

static int settings(vault *v, const json_t *config, mb_err *err)
{
    const json_t *auth = json_object_get(config, "auth");
    char method[32] = "token";
    int rc;
    if ((rc = str_key(v, config, "address", v->addr, sizeof v->addr, err)) ||
        (rc = str_key(v, config, "ca_file", v->ca_file, sizeof v->ca_file, err)) ||
        (rc = str_key(v, config, "state_file", v->state_file, sizeof v->state_file, err)) ||
        (rc = str_key(v, config, "transit_mount", v->transit_mount, sizeof v->transit_mount, err)) ||
        (rc = str_key(v, auth, "method", method, sizeof method, err)) ||
        (rc = str_key(v, auth, "token_file", v->token_file, sizeof v->token_file, err)) ||
        (rc = str_key(v, auth, "role_id", v->role_id, sizeof v->role_id, err)) ||
        (rc = str_key(v, auth, "secret_id_file", v->secret_id_file, sizeof v->secret_id_file, err)))
        return rc;
    const char *known[] = {"method", "token_file", "role_id", "secret_id_file", "wrapped", NULL};
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)auth, k, val)
    {
        bool ok = false;
        for (int i = 0; known[i]; i++)
            ok |= !strcmp(known[i], k);
        if (!ok)
            return v->api->err_set(err, MB_EINVAL, "auth: unknown key '%s'", k);
    }
    json_t *w = json_object_get(auth, "wrapped");
    if (w && !json_is_boolean(w))
        return v->api->err_set(err, MB_EINVAL, "auth.wrapped must be true or false");
    v->wrapped = json_is_true(w);
    v->refresh_s = json_integer_value(json_object_get(config, "refresh"));
    v->retry_max_s = json_integer_value(json_object_get(config, "retry_max"));
    v->timeout_s = json_integer_value(json_object_get(config, "timeout"));
    /* As Vault's own CLI: VAULT_ADDR when the file names no address. */
    const char *env = getenv("VAULT_ADDR");
    if (!v->addr[0] && env)
        snprintf(v->addr, sizeof v->addr, "%s", env);
    size_t al = strlen(v->addr);
    while (al && v->addr[al - 1] == '/')
        v->addr[--al] = 0;
    if (strncmp(v->addr, "http://", 7) && strncmp(v->addr, "https://", 8))
        return v->api->err_set(err, MB_EINVAL, "address (or VAULT_ADDR) must be an http:// or https:// URL");
    if (!strcmp(method, "token"))
        v->method = AUTH_TOKEN;
    else if (!strcmp(method, "approle"))
        v->method = AUTH_APPROLE;
    else
        return v->api->err_set(err, MB_EINVAL, "auth.method must be token or approle");
    if (v->method == AUTH_APPROLE && (!v->role_id[0] || !v->secret_id_file[0]))
        return v->api->err_set(err, MB_EINVAL, "auth.method approle needs auth.role_id and auth.secret_id_file");
    if (v->wrapped && !v->state_file[0])
        return v->api->err_set(err, MB_EINVAL,
                               "auth.wrapped needs state_file: a wrapping token works once, so the unwrapped "
                               "secret_id must be kept for the next start");
    if ((rc = path_key(v, "ca_file", v->ca_file, err)) || (rc = path_key(v, "state_file", v->state_file, err)) ||
        (rc = path_key(v, "auth.token_file", v->token_file, err)) ||
        (rc = path_key(v, "auth.secret_id_file", v->secret_id_file, err)))
        return rc;
    return 0;
}

/* The first contact: sys/health says what we talk to (a 503, sealed, is not fatal: the timer
 * retries), then a login. Unreachable: no login to wait for as well. */
static int start(void *arg, mb_err *err)
{
    vault *v = arg;
    vresp r;
    vault_call(v, "GET", "sys/health?standbyok=true", NULL, NULL, &r);
    json_t *b = r.body;
    if (r.status)
        v->api->log(v->self, r.status == 200 ? MB_LOG_INFO : MB_LOG_WARN, "Vault %s at %s: %s, %s (health %ld)",
                    json_string_value(json_object_get(b, "version")) ? json_string_value(json_object_get(b, "version"))
                                                                    : "?",
                    v->addr, json_is_true(json_object_get(b, "sealed")) ? "sealed" : "unsealed",
                    json_is_true(json_object_get(b, "initialized")) ? "initialized" : "not initialized", r.status);
    json_decref(b);
    pthread_mutex_lock(&v->net);
    int rc = r.status ? vault_login(v, err) : v->api->err_set(err, MB_EBUSY, "%s", r.why);
    if (rc == MB_EBUSY)
        note_outcome(v, rc, err);
    pthread_mutex_unlock(&v->net);
    return rc;
}

static void vault_free(vault *v)
{
    for (vcache *c = v->cache, *n; c; c = n) {
        n = c->next;
        cache_free_one(c);
    }
    pthread_mutex_destroy(&v->net);
    pthread_mutex_destroy(&v->cache_mu);
    sodium_memzero(v, sizeof *v);
    free(v);
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    vault *v = calloc(1, sizeof *v);
    if (!v)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    v->self = self;
    v->api = api;
    pthread_mutex_init(&v->net, NULL);
    pthread_mutex_init(&v->cache_mu, NULL);
    int rc = settings(v, config, err);
    if (rc) {
        vault_free(v);
        return rc;
    }
    v->loop_thread = pthread_self(); /* init runs on the loop */
    v->next_refresh = vault_now_ms() + v->refresh_s * 1000;
    mb_err e = {0};
    rc = off_loop(v, start, v, &e);
    if (rc && rc != MB_EBUSY) {
        *err = e;
        vault_free(v);
        return rc;
    }
    if ((rc = api->secret_provider_set(self, "vault", &secret_ops, v, err)) ||
        (rc = api->keywrap_provider_set(self, "transit", &keywrap_ops, v, err)) ||
        (rc = api->timer_add(self, TICK_MS, TICK_MS, tick, v, &v->timer, err))) {
        api->secret_provider_set(self, "vault", NULL, NULL, NULL);
        api->keywrap_provider_set(self, "transit", NULL, NULL, NULL);
        vault_free(v);
        return rc;
    }
    *state = v;
    api->log(self, MB_LOG_INFO, "version %s ready: vault: and transit: served from %s (%s login, refresh %llds)",
             VAULT_VERSION, v->addr, v->method == AUTH_APPROLE ? "AppRole" : "token", (long long)v->refresh_s);
    return 0;
}

/* The token is not revoked: the login state may serve the next start (state_file). */
static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    vault *v = state;
    v->api->secret_provider_set(v->self, "vault", NULL, NULL, NULL);
    v->api->keywrap_provider_set(v->self, "transit", NULL, NULL, NULL);
    vault_free(v);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "address", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "ca_file", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "auth", MB_CFG_MAP, "{method: token}", 0, 0},
    {sizeof(mb_config_key), "state_file", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "transit_mount", MB_CFG_STRING, "transit", 0, 0},
    {sizeof(mb_config_key), "refresh", MB_CFG_INT, "60", 1, 86400},
    {sizeof(mb_config_key), "retry_max", MB_CFG_INT, "60", 1, 3600},
    {sizeof(mb_config_key), "timeout", MB_CFG_INT, "10", 1, 300},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "vault",
    .version = VAULT_VERSION,
    .description = "Secrets from HashiCorp Vault: vault: references (KV v2) and transit: key wrapping",
    .config = config_keys,
    .init = init,
    .fini = fini,
};
