/*
 * modules/vault/vault_http.c — the vault module's client side: one HTTP call to Vault's API
 * (libcurl, TLS checked against the configured CA), and the login life cycle: a token from a
 * file or VAULT_TOKEN, or an AppRole login whose secret_id may come response-wrapped; renewal
 * at two thirds of the TTL; a new login when a renewal is refused; the login state kept in the
 * operator's state_file so a restart needs no new wrapped secret_id. Endpoints follow Vault's
 * published HTTP API (docs/security.md names the version); nothing here ever revokes a token,
 * so a network error or a sealed Vault can only delay, never lose, the login.
 *
 * Threads: called from the module's timer (worker pool), from provider calls (any thread but
 * observers) and from init; every function that changes the login runs with v->net held.
 * Values and tokens never reach a log line or an error: errors carry Vault's own sentence
 * ("permission denied"), which never holds one.
 */
#include "vault.h"
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BODY_MAX (4 << 20)

int64_t vault_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    char *buf;
    size_t n, cap;
} sink;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t len = size * nmemb;
    if (s->n + len + 1 > BODY_MAX)
        return 0;
    if (s->n + len + 1 > s->cap) {
        size_t cap = (s->n + len + 1) * 2;
        char *nb = malloc(cap);
        if (!nb)
            return 0;
        if (s->buf) { /* grow by copy, so no old block with secret bytes is left to realloc */
            memcpy(nb, s->buf, s->n);
            sodium_memzero(s->buf, s->cap);
            free(s->buf);
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->n, p, len);
    s->n += len;
    s->buf[s->n] = 0;
    return len;
}

void vault_call(vault *v, const char *method, const char *path, const char *token, const json_t *body, vresp *r)
{
    memset(r, 0, sizeof *r);
    char url[2048], hdr[VAULT_TOKEN_MAX + 32], cerr[CURL_ERROR_SIZE] = "";
    snprintf(url, sizeof url, "%s/v1/%s", v->addr, path);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(r->why, sizeof r->why, "libcurl could not start a request");
        return;
    }
    struct curl_slist *h = NULL;
    if (token && *token) {
        snprintf(hdr, sizeof hdr, "X-Vault-Token: %s", token);
        h = curl_slist_append(h, hdr);
        sodium_memzero(hdr, sizeof hdr);
    }
    h = curl_slist_append(h, "X-Vault-Request: true");
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    sink s = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)v->timeout_s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)(v->timeout_s < 5 ? v->timeout_s : 5));
    if (v->ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, v->ca_file);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (text)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    else if (!strcmp(method, "POST") || !strcmp(method, "PUT"))
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "MByte-Vault/1.0");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        snprintf(r->why, sizeof r->why, "%.400s is unreachable: %.500s", v->addr, *cerr ? cerr : curl_easy_strerror(rc));
    else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        if (s.n)
            r->body = json_loadb(s.buf, s.n, 0, NULL);
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (text) {
        sodium_memzero(text, strlen(text));
        free(text);
    }
    if (s.buf) {
        sodium_memzero(s.buf, s.cap);
        free(s.buf);
    }
}

const char *vault_why(const vresp *r, char *buf, size_t n)
{
    if (!r->status)
        snprintf(buf, n, "%s", r->why);
    else {
        json_t *e = json_array_get(json_object_get(r->body, "errors"), 0);
        snprintf(buf, n, "Vault answered %ld%s%s", r->status, json_is_string(e) ? ": " : "",
                 json_is_string(e) ? json_string_value(e) : "");
    }
    return buf;
}

/* ------------------------------------------------------ the login state --- */

static void set_str(char *dst, size_t n, const char *src)
{
    sodium_memzero(dst, n);
    snprintf(dst, n, "%s", src ? src : "");
}

void vault_state_save(vault *v)
{
    if (!v->state_file[0])
        return;
    json_t *j = json_pack("{s:s, s:s, s:s}", "method", v->method == AUTH_APPROLE ? "approle" : "token", "role_id",
                          v->role_id, "token", v->token);
    if (v->secret_id[0])
        json_object_set_new(j, "secret_id", json_string(v->secret_id));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", v->state_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool ok = fd >= 0 && fchmod(fd, 0600) == 0;
    size_t len = strlen(text);
    ok = ok && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    ok = ok && rename(tmp, v->state_file) == 0;
    if (!ok) {
        v->api->log(v->self, MB_LOG_WARN, "cannot keep the login state in %s: %s", v->state_file, strerror(errno));
        unlink(tmp);
    }
    sodium_memzero(text, len);
    free(text);
}

/* The state file's fields, if it exists and belongs to this login (same method and role). */
static json_t *state_load(vault *v)
{
    if (!v->state_file[0] || access(v->state_file, F_OK))
        return NULL;
    char ref[1100], *text = NULL;
    snprintf(ref, sizeof ref, "file:%s", v->state_file);
    mb_err e = {0};
    if (v->api->secret_get(v->self, ref, &text, &e)) {
        v->api->log(v->self, MB_LOG_WARN, "the kept login state is not used: %s", e.msg);
        return NULL;
    }
    json_t *j = json_loads(text, 0, NULL);
    sodium_memzero(text, strlen(text));
    free(text);
    const char *m = json_string_value(json_object_get(j, "method"));
    const char *role = json_string_value(json_object_get(j, "role_id"));
    if (!m || strcmp(m, v->method == AUTH_APPROLE ? "approle" : "token") || !role || strcmp(role, v->role_id)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---------------------------------------------------------------- login --- */

static void plan_renewal(vault *v, int64_t ttl_s, bool renewable)
{
    v->token_ttl_s = ttl_s;
    v->renewable = renewable;
    /* Two thirds of the TTL: time to retry a failed renewal before the token ends. */
    v->renew_at = ttl_s > 0 && renewable ? vault_now_ms() + ttl_s * 1000 * 2 / 3 : 0;
}

/* Is `token` alive? 1 yes (TTL planned), 0 refused, negative: Vault unreachable or sealed. */
static int token_check(vault *v, const char *token, mb_err *err)
{
    vresp r;
    char why[1100];
    vault_call(v, "GET", "auth/token/lookup-self", token, NULL, &r);
    int rc;
    if (r.status == 200) {
        json_t *d = json_object_get(r.body, "data");
        plan_renewal(v, json_integer_value(json_object_get(d, "ttl")), json_is_true(json_object_get(d, "renewable")));
        rc = 1;
    } else if (r.status == 403 || r.status == 400 || r.status == 401)
        rc = 0;
    else
        rc = v->api->err_set(err, MB_EBUSY, "%s", vault_why(&r, why, sizeof why));
    json_decref(r.body);
    return rc;
}

int vault_token_alive(vault *v, mb_err *err)
{
    if (!v->token[0])
        return 0;
    char tok[VAULT_TOKEN_MAX];
    memcpy(tok, v->token, sizeof tok);
    int rc = token_check(v, tok, err);
    sodium_memzero(tok, sizeof tok);
    return rc;
}

/* Read an owner-only file through the kernel's file: references (the same mode check). */
static int read_file(vault *v, const char *path, char *out, size_t n, mb_err *err)
{
    char ref[1100], *text = NULL;
    snprintf(ref, sizeof ref, "file:%s", path);
    int rc = v->api->secret_get(v->self, ref, &text, err);
    if (rc)
        return rc;
    set_str(out, n, text);
    sodium_memzero(text, strlen(text));
    free(text);
    return 0;
}

/* The secret_id from its file: unwrapped first when it holds a wrapping token. */
static int secret_id_from_file(vault *v, mb_err *err)
{
    char raw[VAULT_TOKEN_MAX], why[300];
    int rc = read_file(v, v->secret_id_file, raw, sizeof raw, err);
    if (rc)
        return rc;
    if (!v->wrapped) {
        set_str(v->secret_id, sizeof v->secret_id, raw);
        sodium_memzero(raw, sizeof raw);
        return 0;
    }
    vresp r;
    vault_call(v, "POST", "sys/wrapping/unwrap", raw, NULL, &r);
    sodium_memzero(raw, sizeof raw);
    const char *sid = json_string_value(json_object_get(json_object_get(r.body, "data"), "secret_id"));
    if (r.status == 200 && sid) {
        set_str(v->secret_id, sizeof v->secret_id, sid);
        rc = 0;
        v->api->log(v->self, MB_LOG_INFO, "unwrapped the secret_id from %s", v->secret_id_file);
    } else
        rc = v->api->err_set(err, r.status && r.status < 500 ? MB_EAUTH : MB_EBUSY,
                             "the wrapped secret_id in %s cannot be unwrapped (a wrapping token works once; put a new "
                             "one there): %s",
                             v->secret_id_file, vault_why(&r, why, sizeof why));
    json_decref(r.body);
    return rc;
}

static int approle_login(vault *v, mb_err *err)
{
    vresp r;
    char why[1100];
    json_t *body = json_pack("{s:s, s:s}", "role_id", v->role_id, "secret_id", v->secret_id);
    vault_call(v, "POST", "auth/approle/login", NULL, body, &r);
    json_t *a = json_object_get(r.body, "auth");
    const char *tok = json_string_value(json_object_get(a, "client_token"));
    int rc;
    if (r.status == 200 && tok && strlen(tok) < sizeof v->token) {
        set_str(v->token, sizeof v->token, tok);
        plan_renewal(v, json_integer_value(json_object_get(a, "lease_duration")),
                     json_is_true(json_object_get(a, "renewable")));
        v->api->log(v->self, MB_LOG_INFO, "logged in with AppRole (token TTL %llds)", (long long)v->token_ttl_s);
        vault_state_save(v);
        rc = 0;
    } else
        rc = v->api->err_set(err, r.status && r.status < 500 ? MB_EAUTH : MB_EBUSY, "AppRole login refused: %s",
                             vault_why(&r, why, sizeof why));
    json_decref(r.body);
    /* json_pack copied the secret_id into body: it goes with body's memory. */
    json_object_set_new(body, "secret_id", json_string(""));
    json_decref(body);
    return rc;
}

int vault_login(vault *v, mb_err *err)
{
    if (v->token[0])
        return 0;
    json_t *st = state_load(v);
    int rc;
    if (st) {
        const char *tok = json_string_value(json_object_get(st, "token"));
        const char *sid = json_string_value(json_object_get(st, "secret_id"));
        if (sid && !v->secret_id[0])
            set_str(v->secret_id, sizeof v->secret_id, sid);
        rc = tok && *tok ? token_check(v, tok, err) : 0;
        if (rc == 1)
            set_str(v->token, sizeof v->token, tok);
        json_decref(st); /* the strings in it go with it */
        if (rc == 1) {
            v->api->log(v->self, MB_LOG_INFO, "using the token kept in %s", v->state_file);
            return 0;
        }
        if (rc < 0)
            return rc;
    }
    if (v->method == AUTH_TOKEN) {
        char tok[VAULT_TOKEN_MAX];
        const char *env = getenv("VAULT_TOKEN");
        if (v->token_file[0]) {
            if ((rc = read_file(v, v->token_file, tok, sizeof tok, err)))
                return rc;
        } else if (env && *env)
            set_str(tok, sizeof tok, env);
        else
            return v->api->err_set(err, MB_EINVAL, "no token: set auth.token_file or VAULT_TOKEN");
        rc = token_check(v, tok, err);
        if (rc == 1)
            set_str(v->token, sizeof v->token, tok);
        sodium_memzero(tok, sizeof tok);
        if (rc == 0)
            return v->api->err_set(err, MB_EAUTH, "Vault refuses the token from %s",
                                   v->token_file[0] ? v->token_file : "VAULT_TOKEN");
        if (rc < 0)
            return rc;
        vault_state_save(v);
        return 0;
    }
    /* AppRole: the kept secret_id first; when Vault refuses it, the file's (a new one). */
    bool kept = v->secret_id[0] != 0;
    if (!kept && (rc = secret_id_from_file(v, err)))
        return rc;
    rc = approle_login(v, err);
    if (rc == MB_EAUTH && kept) {
        v->api->log(v->self, MB_LOG_WARN, "the kept secret_id was refused; reading %s again", v->secret_id_file);
        sodium_memzero(v->secret_id, sizeof v->secret_id);
        if ((rc = secret_id_from_file(v, err)))
            return rc;
        rc = approle_login(v, err);
    }
    return rc;
}

void vault_drop_token(vault *v)
{
    sodium_memzero(v->token, sizeof v->token);
    v->renew_at = 0;
}

int vault_renew_if_due(vault *v, mb_err *err)
{
    if (!v->token[0])
        return vault_login(v, err);
    if (!v->renew_at || vault_now_ms() < v->renew_at)
        return 0;
    vresp r;
    char why[1100];
    vault_call(v, "POST", "auth/token/renew-self", v->token, NULL, &r);
    json_t *a = json_object_get(r.body, "auth");
    int rc = 0;
    if (r.status == 200 && a) {
        int64_t ttl = json_integer_value(json_object_get(a, "lease_duration"));
        int64_t was = v->token_ttl_s;
        plan_renewal(v, ttl, json_is_true(json_object_get(a, "renewable")));
        v->api->log(v->self, MB_LOG_DEBUG, "token renewed (TTL %llds)", (long long)ttl);
        /* Near its max TTL a renewal gives less and less: log in anew while the token works. */
        if (v->method == AUTH_APPROLE && was > 0 && ttl * 3 < was) {
            v->api->log(v->self, MB_LOG_INFO, "the token nears its max TTL; logging in again");
            vault_drop_token(v);
            rc = vault_login(v, err);
        }
    } else if (r.status >= 400 && r.status < 500) {
        v->api->log(v->self, MB_LOG_WARN, "token renewal refused (%s); %s", vault_why(&r, why, sizeof why),
                    v->method == AUTH_APPROLE ? "logging in again with AppRole" : "the token file needs a new token");
        vault_drop_token(v);
        rc = vault_login(v, err);
    } else {
        /* Unreachable or sealed: keep the token (never revoke) and try again soon. */
        v->renew_at = vault_now_ms() + 1000;
        rc = v->api->err_set(err, MB_EBUSY, "token renewal: %s", vault_why(&r, why, sizeof why));
    }
    json_decref(r.body);
    return rc;
}
