/*
 * modules/discord/dc_rest.c — Discord's HTTP API v10 through libcurl, within its rate limits.
 *
 * Rate limits as Discord documents them (docs/discord.md "Rate limits"):
 *   - per route: every answer names its bucket (X-RateLimit-Bucket) with how many requests are
 *     left (X-RateLimit-Remaining) and when it refills (X-RateLimit-Reset-After, seconds). A
 *     route is its method and path shape plus its top-level resource (the channel, guild or
 *     webhook id), because Discord counts those apart. With nothing left, the next request of
 *     that bucket waits for the refill instead of being sent to be refused.
 *   - a 429 carries retry_after (seconds, in the JSON body) and global (true for the global
 *     limit, also X-RateLimit-Global / X-RateLimit-Scope: global); the request waits exactly
 *     that long, the whole module too when it was global, and is sent again.
 *   - the global limit (50 requests a second for a bot) is kept ahead of time: requests take
 *     evenly spaced slots, global_per_second (45) of them a second.
 *   - invalid requests (401, 403, and 429 not of the "shared" scope) are counted; Discord
 *     bans an address for 10,000 in 10 minutes, so after max_invalid (500) in 10 minutes the
 *     module sends nothing more until the window ends (MB_EBUSY, the backup records it).
 * A wait longer than max_wait_ms (60 s) in one call ends it with MB_EAGAIN: the task is
 * retried later by the kernel instead of holding a worker.
 *
 * Threads: worker pool only (every call blocks). rl_lock guards the bucket table, the
 * global slot and the invalid count; it is never held across a request or a sleep.
 */
#include "discord.h"
#include "dc_interact.h"
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_BODY (16u << 20)
#define INVALID_WINDOW_MS (10 * 60 * 1000)

int64_t dc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (ms > 0 && nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

typedef struct resp {
    char *buf;
    size_t len;
    bool too_big;
    char bucket[64], scope[16];
    int64_t remaining; /* -1: no header */
    double reset_after; /* -1: no header */
    bool global;
} resp;

static size_t on_body(char *p, size_t s, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = s * n;
    if (r->len + k > MAX_BODY) {
        r->too_big = true;
        return 0;
    }
    char *nb = realloc(r->buf, r->len + k + 1);
    if (!nb)
        return 0;
    r->buf = nb;
    memcpy(r->buf + r->len, p, k);
    r->len += k;
    r->buf[r->len] = 0;
    return k;
}

/* A header "Name: value\r\n": copies the value of `name` into v, or returns false. */
static bool header_is(const char *line, size_t n, const char *name, char *v, size_t vn)
{
    size_t nl = strlen(name);
    if (n <= nl + 1 || strncasecmp(line, name, nl) || line[nl] != ':')
        return false;
    const char *s = line + nl + 1, *e = line + n;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    size_t k = (size_t)(e - s) < vn - 1 ? (size_t)(e - s) : vn - 1;
    memcpy(v, s, k);
    v[k] = 0;
    return true;
}

static void cpy(char *dst, size_t n, const char *src)
{
    size_t l = strnlen(src, n - 1);
    memcpy(dst, src, l);
    dst[l] = 0;
}

static size_t on_header(char *p, size_t s, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = s * n;
    char v[80];
    if (header_is(p, k, "X-RateLimit-Bucket", v, sizeof v))
        cpy(r->bucket, sizeof r->bucket, v);
    else if (header_is(p, k, "X-RateLimit-Remaining", v, sizeof v))
        r->remaining = strtoll(v, NULL, 10);
    else if (header_is(p, k, "X-RateLimit-Reset-After", v, sizeof v))
        r->reset_after = strtod(v, NULL);
    else if (header_is(p, k, "X-RateLimit-Global", v, sizeof v))
        r->global = !strcasecmp(v, "true");
    else if (header_is(p, k, "X-RateLimit-Scope", v, sizeof v))
        cpy(r->scope, sizeof r->scope, v);
    return k;
}

/* Append src to the string in dst (of n bytes), cutting what does not fit. */
static void append(char *dst, size_t n, const char *src, size_t len)
{
    size_t have = strnlen(dst, n - 1), k = len < n - 1 - have ? len : n - 1 - have;
    memcpy(dst + have, src, k);
    dst[have + k] = 0;
}

/* The route of a path: "GET /channels/{id}/messages 123": method, shape (every id replaced),
 * top-level resource (the first id; for webhooks the id and token). */
static void route_of(const char *method, const char *path, char *out, size_t n)
{
    char shape[160] = "", top[80] = "";
    const char *p = path;
    int seg = 0;
    while (*p == '/') {
        p++;
        size_t l = strcspn(p, "/?");
        char part[80] = "";
        append(part, sizeof part, p, l);
        bool webhook_token = seg == 2 && !strncmp(shape, "/webhooks/", 10);
        bool id = dc_snowflake(part) || webhook_token;
        if (id && (!top[0] || webhook_token)) {
            if (top[0])
                append(top, sizeof top, "/", 1);
            append(top, sizeof top, part, strlen(part));
        }
        append(shape, sizeof shape, "/", 1);
        append(shape, sizeof shape, id ? "{id}" : part, id ? 4 : strlen(part));
        p += l;
        seg++;
    }
    out[0] = 0;
    append(out, n, method, strlen(method));
    append(out, n, " ", 1);
    append(out, n, shape, strlen(shape));
    append(out, n, " ", 1);
    append(out, n, top, strlen(top));
}

static dc_bucket *bucket_for(dc *d, const char *route)
{
    dc_bucket *old = &d->buckets[0];
    for (int i = 0; i < DC_BUCKETS; i++) {
        dc_bucket *b = &d->buckets[i];
        if (!strcmp(b->route, route))
            return b;
        if (b->used_ms < old->used_ms)
            old = b;
    }
    memset(old, 0, sizeof *old);
    snprintf(old->route, sizeof old->route, "%s", route);
    old->remaining = -1;
    return old;
}

/* When may this route send? Takes a global slot. Returns the monotonic ms to wait until. */
static int64_t reserve(dc *d, const char *route)
{
    int64_t now = dc_now_ms(), t = now;
    pthread_mutex_lock(&d->rl_lock);
    dc_bucket *b = bucket_for(d, route);
    b->used_ms = now;
    if (b->remaining == 0 && b->reset_ms > t)
        t = b->reset_ms;
    if (d->global_until_ms > t)
        t = d->global_until_ms;
    if (d->next_slot_ms > t)
        t = d->next_slot_ms;
    d->next_slot_ms = t + 1000 / (d->global_per_second > 0 ? d->global_per_second : 45);
    if (b->remaining > 0)
        b->remaining--;
    else if (b->remaining == 0)
        b->remaining = -1; /* refilled by the time we send; the answer tells the real count */
    pthread_mutex_unlock(&d->rl_lock);
    return t;
}

/* Learn from an answer; for a 429 returns the ms to wait (else 0). */
static int64_t learn(dc *d, const char *route, long status, const resp *r)
{
    int64_t now = dc_now_ms(), wait = 0;
    pthread_mutex_lock(&d->rl_lock);
    dc_bucket *b = bucket_for(d, route);
    const char *sp = strrchr(route, ' ');
    if (r->bucket[0])
        snprintf(b->key, sizeof b->key, "%s:%s", r->bucket, sp ? sp + 1 : "");
    if (r->remaining >= 0 && r->reset_after >= 0) {
        b->remaining = r->remaining;
        b->reset_ms = now + (int64_t)ceil(r->reset_after * 1000);
    }
    if (status == 429) {
        json_t *j = r->buf ? json_loadb(r->buf, r->len, 0, NULL) : NULL;
        double ra = json_number_value(json_object_get(j, "retry_after"));
        bool global = r->global || json_is_true(json_object_get(j, "global")) || !strcasecmp(r->scope, "global");
        json_decref(j);
        if (!(ra > 0) && r->reset_after > 0)
            ra = r->reset_after;
        if (!(ra > 0))
            ra = 1;
        wait = (int64_t)ceil(ra * 1000);
        if (global)
            d->global_until_ms = now + wait;
        else {
            b->remaining = 0;
            b->reset_ms = now + wait;
        }
    }
    /* Routes Discord put in the same bucket share what is left of it. */
    if (b->key[0])
        for (int i = 0; i < DC_BUCKETS; i++)
            if (&d->buckets[i] != b && !strcmp(d->buckets[i].key, b->key)) {
                d->buckets[i].remaining = b->remaining;
                d->buckets[i].reset_ms = b->reset_ms;
            }
    if (status == 401 || status == 403 || (status == 429 && strcasecmp(r->scope, "shared"))) {
        if (now - d->invalid_window_ms > INVALID_WINDOW_MS) {
            d->invalid_window_ms = now;
            d->invalid_count = 0;
        }
        d->invalid_count++;
    }
    pthread_mutex_unlock(&d->rl_lock);
    return wait;
}

static bool invalid_exhausted(dc *d)
{
    pthread_mutex_lock(&d->rl_lock);
    bool out = dc_now_ms() - d->invalid_window_ms <= INVALID_WINDOW_MS && d->invalid_count >= d->max_invalid;
    pthread_mutex_unlock(&d->rl_lock);
    return out;
}

static CURL *easy(dc *d, const char *url, char *cerr)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(d->timeout_ms < 10000 ? d->timeout_ms : 10000));
    /* Discord asks bots for this User-Agent form. */
    curl_easy_setopt(c, CURLOPT_USERAGENT, "DiscordBot (https://github.com/mbyte/mbyte, " DC_VERSION ")");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    return c;
}

/* method on url; `route_path` is the part after api_base (for the route's bucket). */
static int call(dc *d, const char *method, const char *url, const char *route_path, const json_t *body, bool token,
                long *status, json_t **out, mb_err *err)
{
    char route[96], auth[600], label[96];
    route_of(method, route_path, route, sizeof route);
    /* What logs and errors name: the method and path shape, never the ids after it (a
     * webhook's or an interaction's token is one of them). */
    snprintf(label, sizeof label, "%s", route);
    if (strrchr(label, ' ') > strchr(label, ' '))
        *strrchr(label, ' ') = 0;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int64_t waited = 0;
    int rc = 0;
    if (out)
        *out = NULL;
    for (int attempt = 0;; attempt++) {
        if (invalid_exhausted(d)) {
            rc = d->api->err_set(err, MB_EBUSY,
                                 "Discord refused %lld requests in 10 minutes: nothing is sent until that window ends",
                                 (long long)d->max_invalid);
            break;
        }
        int64_t until = reserve(d, route), w = until - dc_now_ms();
        if (w > 0) {
            if (waited + w > d->max_wait_ms) {
                rc = d->api->err_set(err, MB_EAGAIN, "Discord's rate limit asks to wait %lld ms more", (long long)w);
                break;
            }
            sleep_ms(w);
            waited += w;
        }
        resp r = {.remaining = -1, .reset_after = -1};
        char cerr[CURL_ERROR_SIZE] = "";
        CURL *c = easy(d, url, cerr);
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        if (token) {
            pthread_mutex_lock(&d->cfg_lock);
            snprintf(auth, sizeof auth, "Authorization: Bot %s", d->token ? d->token : "");
            pthread_mutex_unlock(&d->cfg_lock);
            h = curl_slist_append(h, auth);
        }
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (text)
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
        CURLcode cr = curl_easy_perform(c);
        long st = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        curl_easy_cleanup(c);
        curl_slist_free_all(h);
        memset(auth, 0, sizeof auth);
        if (cr != CURLE_OK) {
            rc = d->api->err_set(err, MB_EIO, "Discord could not be reached (%s): %s", label,
                                 r.too_big ? "the answer is larger than 16 MiB" : *cerr ? cerr : curl_easy_strerror(cr));
            free(r.buf);
            break;
        }
        int64_t wait = learn(d, route, st, &r);
        if (st == 429 && attempt < 20) {
            d->api->log(d->self, MB_LOG_INFO, "429 on %s: waiting %lld ms as Discord asks", label, (long long)wait);
            free(r.buf);
            continue; /* reserve() now waits for the bucket or the global limit */
        }
        *status = st;
        if (out && r.buf)
            *out = json_loadb(r.buf, r.len, 0, NULL);
        free(r.buf);
        break;
    }
    free(text);
    return rc;
}

int dc_rest(dc *d, const char *method, const char *path, const json_t *body, long *status, json_t **out, mb_err *err)
{
    char url[1024];
    pthread_mutex_lock(&d->cfg_lock);
    snprintf(url, sizeof url, "%s%s", d->api_base, path);
    pthread_mutex_unlock(&d->cfg_lock);
    return call(d, method, url, path, body, true, status, out, err);
}

int dc_rest_url(dc *d, const char *url, const json_t *body, long *status, mb_err *err)
{
    pthread_mutex_lock(&d->cfg_lock);
    size_t bl = strlen(d->api_base);
    bool under = !strncmp(url, d->api_base, bl) && !strncmp(url + bl, "/webhooks/", 10);
    pthread_mutex_unlock(&d->cfg_lock);
    if (!under)
        return d->api->err_set(err, MB_EINVAL, "a Discord webhook URL must be under api_base/webhooks/");
    return call(d, "POST", url, url + bl, body, false, status, NULL, err);
}

/* ---------------------------------------------------------------- download --- */

typedef struct dl {
    dc *d;
    CURL *c;
    mb_file_writer *w;
    int64_t bytes;
    long status;
    mb_err werr;
    bool werr_set;
} dl;

static size_t on_file(char *p, size_t s, size_t n, void *ud)
{
    dl *x = ud;
    if (!x->status)
        curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status != 200)
        return 0;
    if (x->d->api->file_write_data(x->w, p, s * n, &x->werr)) {
        x->werr_set = true;
        return 0;
    }
    x->bytes += (int64_t)(s * n);
    return s * n;
}

static bool host_allowed(dc *d, const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              (!strcmp(scheme, "https") || !strcmp(scheme, "http"));
    if (ok) {
        ok = false;
        size_t i;
        json_t *e;
        pthread_mutex_lock(&d->cfg_lock);
        json_array_foreach(d->cdn_hosts, i, e) ok = ok || !strcasecmp(json_string_value(e), host);
        pthread_mutex_unlock(&d->cfg_lock);
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

int dc_rest_download(dc *d, const char *url, mb_file_writer *w, int64_t *bytes, mb_err *err)
{
    if (!url || !host_allowed(d, url))
        return d->api->err_set(err, MB_EPERM, "attachment URL host is not in cdn_hosts");
    char cerr[CURL_ERROR_SIZE] = "";
    dl x = {.d = d, .w = w};
    x.c = easy(d, url, cerr);
    if (!x.c)
        return d->api->err_set(err, MB_ENOMEM, "out of memory");
    curl_easy_setopt(x.c, CURLOPT_WRITEFUNCTION, on_file);
    curl_easy_setopt(x.c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(x.c, CURLOPT_TIMEOUT_MS, 0L); /* big files: only a stall ends the download */
    curl_easy_setopt(x.c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(x.c, CURLOPT_LOW_SPEED_TIME, (long)(d->timeout_ms / 1000 + 1));
    CURLcode cr = curl_easy_perform(x.c);
    long st = 0;
    curl_easy_getinfo(x.c, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(x.c);
    *bytes = x.bytes;
    if (x.werr_set) {
        *err = x.werr;
        return err->code;
    }
    if (st == 403 || st == 404 || st == 410)
        return d->api->err_set(err, MB_EGONE, "the attachment URL expired (HTTP %ld)", st);
    if (st != 200)
        return d->api->err_set(err, MB_EIO, "attachment download answered %ld", st);
    if (cr != CURLE_OK)
        return d->api->err_set(err, MB_EIO, "attachment download failed: %s", *cerr ? cerr : curl_easy_strerror(cr));
    return 0;
}
