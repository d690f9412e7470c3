/*
 * modules/httppool.c — libcurl handle pool, answer sinks, backoff and the chunk layout
 * in directories (httppool.h).
 */
#include "httppool.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void hp_pool_init(hp_pool *p, int max)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max = max < 1 ? 1 : max > HP_MAX_CONNECTIONS ? HP_MAX_CONNECTIONS : max;
}

void hp_pool_free(hp_pool *p)
{
    for (int i = 0; i < p->nidle; i++)
        curl_easy_cleanup(p->idle[i]);
    p->nidle = 0;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

void hp_pool_resize(hp_pool *p, int max)
{
    pthread_mutex_lock(&p->mu);
    p->max = max < 1 ? 1 : max > HP_MAX_CONNECTIONS ? HP_MAX_CONNECTIONS : max;
    while (p->nidle && p->made > p->max) {
        curl_easy_cleanup(p->idle[--p->nidle]);
        p->made--;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

CURL *hp_take(hp_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->nidle && p->made >= p->max)
        pthread_cond_wait(&p->cv, &p->mu);
    CURL *c = NULL;
    if (p->nidle)
        c = p->idle[--p->nidle];
    else
        p->made++;
    pthread_mutex_unlock(&p->mu);
    if (!c && !(c = curl_easy_init())) {
        pthread_mutex_lock(&p->mu);
        p->made--;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return c;
}

void hp_give(hp_pool *p, CURL *c, bool keep)
{
    pthread_mutex_lock(&p->mu);
    if (keep && p->made <= p->max && p->nidle < HP_MAX_CONNECTIONS)
        p->idle[p->nidle++] = c;
    else {
        curl_easy_cleanup(c);
        p->made--;
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static size_t on_body(char *s, size_t sz, size_t nm, void *ud)
{
    hp_reply *r = ud;
    size_t n = sz * nm;
    if (r->body.fixed) {
        size_t k = r->body.cap - r->body.len < n ? r->body.cap - r->body.len : n;
        memcpy(r->body.buf + r->body.len, s, k);
        r->body.len += k;
        r->body.over |= k < n;
        return n;
    }
    if (r->body.len + n > HP_BODY_MAX)
        return 0;
    if (r->body.len + n + 1 > r->body.cap) {
        size_t c = (r->body.len + n + 1) * 2;
        char *q = realloc(r->body.buf, c);
        if (!q)
            return 0;
        r->body.buf = q;
        r->body.cap = c;
    }
    memcpy(r->body.buf + r->body.len, s, n);
    r->body.len += n;
    r->body.buf[r->body.len] = 0;
    return n;
}

static size_t on_header(char *s, size_t sz, size_t nm, void *ud)
{
    hp_reply *r = ud;
    size_t n = sz * nm;
    char line[256];
    size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, s, k);
    line[k] = 0;
    if (!strncasecmp(line, "content-length:", 15))
        r->length = strtoull(line + 15, NULL, 10);
    else if (!strncasecmp(line, "last-modified:", 14)) {
        struct tm tm = {0};
        if (strptime(line + 14, " %a, %d %b %Y %H:%M:%S", &tm))
            r->mtime = (int64_t)timegm(&tm);
    }
    return n;
}

void hp_reply_bind(CURL *c, hp_reply *r, void *out, size_t cap)
{
    memset(r, 0, sizeof *r);
    if (out) {
        r->body.buf = out;
        r->body.cap = cap;
        r->body.fixed = true;
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
}

void hp_reply_free(hp_reply *r)
{
    if (!r->body.fixed)
        free(r->body.buf);
    r->body.buf = NULL;
}

void hp_backoff(int i, long base_ms)
{
    if (i < 1)
        return;
    long base = base_ms << (i - 1 < 10 ? i - 1 : 10);
    long ms = base + (long)(random() % (base / 2 + 1));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts))
        ;
}

void hp_setup(CURL *c, const char *url, const char *method, long timeout_ms, long connect_timeout_ms,
              const struct curl_slist *headers, const char *agent, hp_reply *r, void *out, size_t cap)
{
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* credentials go to the configured host only */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, agent);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    hp_reply_bind(c, r, out, cap);
}

CURLcode hp_perform(hp_pool *p, CURL *c, struct curl_slist *headers, hp_reply *r, char cerr[CURL_ERROR_SIZE])
{
    cerr[0] = 0;
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_PASSWORD, ""); /* no copy of a password lingers in an idle handle */
    hp_give(p, c, cc == CURLE_OK);
    curl_slist_free_all(headers);
    if (cc != CURLE_OK) {
        hp_reply_free(r);
        if (!cerr[0])
            snprintf(cerr, CURL_ERROR_SIZE, "%s", curl_easy_strerror(cc));
    }
    return cc;
}

int hp_retry(int tries, long base_ms, int (*once)(void *ctx, mb_err *err), void *ctx, mb_err *err)
{
    for (int i = 0; i < tries; i++) {
        hp_backoff(i, base_ms);
        mb_err e = {0};
        if (!once(ctx, &e))
            return 0;
        *err = e;
    }
    return err->code ? err->code : MB_EIO;
}

int64_t hp_get_result(const mb_api *api, const char *backend, const char *key, const hp_reply *r, uint64_t off,
                      mb_err *err)
{
    if (r->status == 404)
        return api->err_set(err, MB_ENOENT, "backend '%s' has no object %.12s…", backend, key);
    if (r->status == 416)
        return 0; /* past the end */
    if (r->status == 200 && off) /* a server that ignored the Range: the offset cannot be taken */
        return api->err_set(err, MB_EIO, "backend '%s' ignored a Range read", backend);
    if (r->status != 206 && r->status != 200)
        return api->err_set(err, MB_EIO, "backend '%s': GET answered %ld", backend, r->status);
    return (int64_t)r->body.len;
}

int hp_stat_result(const hp_reply *r, uint64_t *size, int64_t *mtime)
{
    if (r->status == 404)
        return 0;
    if (r->status != 200)
        return -1;
    if (size)
        *size = r->length;
    if (mtime)
        *mtime = r->mtime;
    return 1;
}

int hp_check_keys(const mb_api *api, const char *file, const char *name, const json_t *o, const char *const *known,
                  size_t n, size_t required, const char *boolkey, mb_err *err)
{
    if (!json_is_object(o))
        return api->err_set(err, MB_EINVAL, "%s: backends.%s must be a map of its settings", file, name);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        size_t i = 0;
        while (i < n && strcmp(known[i], k))
            i++;
        if (i == n)
            return api->err_set(err, MB_EINVAL, "%s: backends.%s.%s: unknown key", file, name, k);
        bool is_bool = boolkey && !strcmp(k, boolkey);
        if (is_bool ? !json_is_boolean(v) : !json_is_string(v))
            return api->err_set(err, MB_EINVAL, "%s: backends.%s.%s must be %s", file, name, k,
                                is_bool ? "true or false" : "a string");
    }
    for (size_t i = 0; i < required && i < n; i++)
        if (!json_object_get(o, known[i]))
            return api->err_set(err, MB_EINVAL, "%s: backends.%s.%s is required", file, name, known[i]);
    return 0;
}

size_t hp_cursor_read(char *dst, size_t sz, size_t nm, void *cursor)
{
    hp_cursor *c = cursor;
    size_t n = sz * nm, left = c->len - c->at;
    if (n > left)
        n = left;
    memcpy(dst, c->p + c->at, n);
    c->at += n;
    return n;
}

int hp_cursor_seek(void *cursor, curl_off_t off, int origin)
{
    hp_cursor *c = cursor;
    if (origin != SEEK_SET || off < 0 || (size_t)off > c->len)
        return CURL_SEEKFUNC_CANTSEEK;
    c->at = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

int hp_prefix_parse(const mb_api *api, const char *file, const char *name, const char *prefix, char **out,
                    mb_err *err)
{
    *out = NULL;
    if (!prefix)
        prefix = "";
    size_t pl = strlen(prefix);
    if (pl > 200 ||
        strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") != pl ||
        prefix[0] == '/' || strstr(prefix, "//") || strstr(prefix, ".."))
        return api->err_set(err, MB_EINVAL, "%s: backends.%s.prefix is up to 200 of letters, digits, "
                                             "'.', '_', '-' and '/' (not leading, no '..')", file, name);
    if (!(*out = malloc(pl + 2)))
        return api->err_set(err, MB_ENOMEM, "out of memory");
    snprintf(*out, pl + 2, "%s%s", prefix, pl && prefix[pl - 1] != '/' ? "/" : "");
    return 0;
}

bool hp_object_path(const char *prefix, const char *key, char *out, size_t n, const char **base_at)
{
    size_t kl = strlen(key);
    if (kl < 2 || kl > 200 || strspn(key, "0123456789abcdefghijklmnopqrstuvwxyz/") != kl || strstr(key, "//") ||
        key[0] == '/' || key[kl - 1] == '/')
        return false;
    const char *base = strrchr(key, '/');
    base = base ? base + 1 : key;
    size_t bl = strlen(base);
    if (bl < 2)
        return false;
    int w = snprintf(out, n, "%s%.*s%.2s/%s", prefix, (int)(base - key), key, base, base);
    if (w < 0 || (size_t)w >= n)
        return false;
    if (base_at)
        *base_at = out + w - bl;
    return true;
}

static bool hex_name(const char *s, size_t n) { return strlen(s) == n && strspn(s, "0123456789abcdef") == n; }

int hp_aa_entry(hp_aa_list *l, const char *name, uint64_t size, int64_t mtime, bool dir)
{
    if (!l->aa[0]) {
        if (dir && hex_name(name, 2) && l->nfound < 256) {
            for (int i = 0; i < l->nfound; i++)
                if (!strcmp(l->found[i], name))
                    return 0;
            memcpy(l->found[l->nfound++], name, 3);
        }
        return 0;
    }
    /* a chunk of this aa/ only: the directory itself and anything else are not chunks */
    if (dir || !hex_name(name, 64) || memcmp(name, l->aa, 2))
        return 0;
    return l->fn(name, size, mtime, l->ud);
}

int hp_aa_walk(const char *prefix, int (*list_dir)(void *ctx, const char *path, hp_aa_list *l, mb_err *err),
               void *ctx, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    hp_aa_list *l = calloc(1, sizeof *l);
    char path[300];
    if (!l || strlen(prefix) > 201) { /* a prefix is up to 200 and its '/' (hp_prefix_parse) */
        free(l);
        err->code = l ? MB_EINVAL : MB_ENOMEM;
        snprintf(err->msg, sizeof err->msg, "%s", l ? "the prefix is too long" : "out of memory");
        return err->code;
    }
    l->fn = fn;
    l->ud = ud;
    int rc = list_dir(ctx, prefix, l, err);
    for (int i = 0; !rc && i < l->nfound; i++) {
        snprintf(path, sizeof path, "%s%s/", prefix, l->found[i]);
        memcpy(l->aa, l->found[i], 3);
        rc = list_dir(ctx, path, l, err);
    }
    free(l);
    return rc;
}
