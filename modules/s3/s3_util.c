/*
 * s3_util.c — AWS Signature Version 4, S3 addressing and the ListObjectsV2 parser (see
 * s3_util.h). Pure functions: no I/O, no shared state.
 *
 * The signing follows AWS's "Signature Version 4 signing process": a canonical request
 * (method, path, sorted query, sorted lower-case headers, signed header names, payload hash),
 * a string to sign naming the credential scope, and an HMAC-SHA256 chain
 * (secret -> date -> region -> service -> "aws4_request") that signs it.
 */
#include "s3_util.h"
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void hexs(const unsigned char *p, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[p[i] >> 4];
        out[2 * i + 1] = h[p[i] & 15];
    }
    out[2 * n] = 0;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned ml = 0;
    EVP_Digest(p, n, md, &ml, EVP_sha256(), NULL);
    hexs(md, 32, out);
}

static void hmac(const void *key, size_t kl, const char *msg, unsigned char out[32])
{
    unsigned ol = 32;
    HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), out, &ol);
}

/* A growing string. */
typedef struct sb {
    char *p;
    size_t n, cap;
    bool bad;
} sb;

static void sb_addn(sb *s, const char *t, size_t n)
{
    if (s->bad)
        return;
    if (s->n + n + 1 > s->cap) {
        size_t c = (s->n + n + 1) * 2;
        char *q = realloc(s->p, c);
        if (!q) {
            s->bad = true;
            return;
        }
        s->p = q;
        s->cap = c;
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_add(sb *s, const char *t) { sb_addn(s, t, strlen(t)); }

typedef struct canon_hdr {
    char *name, *value;
} canon_hdr;

static int hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const canon_hdr *)a)->name, ((const canon_hdr *)b)->name);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A header value trimmed, inner runs of spaces collapsed to one (SigV4 "Trimall"). */
static char *trimall(const char *v)
{
    char *o = malloc(strlen(v) + 1), *w = o;
    if (!o)
        return NULL;
    while (*v == ' ' || *v == '\t')
        v++;
    bool sp = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            sp = true;
            continue;
        }
        if (sp && w != o)
            *w++ = ' ';
        sp = false;
        *w++ = *v;
    }
    *w = 0;
    return o;
}

/* The query string with its pairs sorted (each "k=v", a bare "k" becoming "k="). */
static void canon_query(const char *q, sb *out)
{
    if (!q || !*q)
        return;
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    char **v = calloc(n, sizeof *v);
    char *dup = strdup(q);
    if (!v || !dup) {
        out->bad = true;
        free(v);
        free(dup);
        return;
    }
    size_t k = 0;
    for (char *save = NULL, *t = strtok_r(dup, "&", &save); t; t = strtok_r(NULL, "&", &save)) {
        size_t l = strlen(t);
        v[k] = malloc(l + 2);
        if (!v[k])
            break;
        memcpy(v[k], t, l + 1);
        if (!strchr(t, '='))
            strcat(v[k], "=");
        k++;
    }
    qsort(v, k, sizeof *v, str_cmp);
    for (size_t i = 0; i < k; i++) {
        if (i)
            sb_add(out, "&");
        sb_add(out, v[i]);
        free(v[i]);
    }
    free(v);
    free(dup);
}

int s3_sign(const s3_sign_in *in, char *out, size_t outlen, char **creq_out, char **sts_out)
{
    if (!in->amz_date || strlen(in->amz_date) != 16)
        return -1;
    canon_hdr *h = calloc(in->nhdrs ? in->nhdrs : 1, sizeof *h);
    if (!h)
        return -1;
    int rc = -1;
    size_t nh = 0;
    for (; nh < in->nhdrs; nh++) {
        h[nh].name = strdup(in->hdrs[nh].name);
        h[nh].value = trimall(in->hdrs[nh].value);
        if (!h[nh].name || !h[nh].value || !*h[nh].name) {
            nh++;
            goto out;
        }
        for (char *p = h[nh].name; *p; p++) {
            if (*p <= ' ' || *p == ':' || *p >= 127)
                goto out_n;
            *p = (char)tolower((unsigned char)*p);
        }
    }
    qsort(h, nh, sizeof *h, hdr_cmp);
    sb creq = {0}, signed_h = {0}, sts = {0};
    sb_add(&creq, in->method);
    sb_add(&creq, "\n");
    sb_add(&creq, in->uri && *in->uri ? in->uri : "/");
    sb_add(&creq, "\n");
    canon_query(in->query, &creq);
    sb_add(&creq, "\n");
    for (size_t i = 0; i < nh; i++) {
        sb_add(&creq, h[i].name);
        sb_add(&creq, ":");
        sb_add(&creq, h[i].value);
        sb_add(&creq, "\n");
        if (i)
            sb_add(&signed_h, ";");
        sb_add(&signed_h, h[i].name);
    }
    sb_add(&creq, "\n");
    sb_add(&creq, signed_h.p ? signed_h.p : "");
    sb_add(&creq, "\n");
    sb_add(&creq, in->payload_sha256);
    char date[9], creq_hash[65], scope[256];
    memcpy(date, in->amz_date, 8);
    date[8] = 0;
    snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", date, in->region, in->service);
    if (!creq.bad && creq.p)
        sha256_hex(creq.p, creq.n, creq_hash);
    sb_add(&sts, "AWS4-HMAC-SHA256\n");
    sb_add(&sts, in->amz_date);
    sb_add(&sts, "\n");
    sb_add(&sts, scope);
    sb_add(&sts, "\n");
    sb_add(&sts, creq_hash);
    if (!creq.bad && !signed_h.bad && !sts.bad && signed_h.p) {
        size_t sl = strlen(in->secret_key);
        char *k0 = malloc(sl + 5);
        if (k0) {
            memcpy(k0, "AWS4", 4);
            memcpy(k0 + 4, in->secret_key, sl + 1);
            unsigned char kd[32], kr[32], ks[32], kk[32], sig[32];
            hmac(k0, sl + 4, date, kd);
            hmac(kd, 32, in->region, kr);
            hmac(kr, 32, in->service, ks);
            hmac(ks, 32, "aws4_request", kk);
            hmac(kk, 32, sts.p, sig);
            free(k0);
            char sighex[65];
            hexs(sig, 32, sighex);
            int w = snprintf(out, outlen, "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                             in->access_key, scope, signed_h.p, sighex);
            rc = w > 0 && (size_t)w < outlen ? 0 : -1;
            if (creq_out) {
                *creq_out = creq.p;
                creq.p = NULL;
            }
            if (sts_out) {
                *sts_out = sts.p;
                sts.p = NULL;
            }
        }
    }
    free(creq.p);
    free(signed_h.p);
    free(sts.p);
    goto out;
out_n:
    nh++;
out:
    for (size_t i = 0; i < nh; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    return rc;
}

int s3_uri_encode(const char *s, bool keep_slash, char *out, size_t outlen)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool keep = isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' || (keep_slash && *p == '/');
        if (o + (keep ? 1 : 3) >= outlen)
            return -1;
        if (keep)
            out[o++] = (char)*p;
        else {
            out[o++] = '%';
            out[o++] = hx[*p >> 4];
            out[o++] = hx[*p & 15];
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = 0;
    return 0;
}

int s3_url(const char *endpoint, const char *bucket, bool path_style, const char *key, char *url, size_t urllen,
           char *host, size_t hostlen, char *path, size_t pathlen)
{
    const char *sep = strstr(endpoint, "://");
    if (!sep || !bucket || !*bucket)
        return -1;
    size_t sl = (size_t)(sep - endpoint);
    if (!((sl == 4 && !strncmp(endpoint, "http", 4)) || (sl == 5 && !strncmp(endpoint, "https", 5))))
        return -1;
    const char *hp = sep + 3;
    size_t hl = strcspn(hp, "/?#");
    if (!hl || hp[hl] == '?' || hp[hl] == '#' || (hp[hl] == '/' && hp[hl + 1]))
        return -1; /* an endpoint is scheme://host[:port], no path */
    char ek[2048], eb[256];
    if (s3_uri_encode(key ? key : "", true, ek, sizeof ek) || s3_uri_encode(bucket, false, eb, sizeof eb))
        return -1;
    int w1, w2, w3;
    if (path_style) {
        w1 = snprintf(host, hostlen, "%.*s", (int)hl, hp);
        w2 = snprintf(path, pathlen, "/%s/%s", eb, ek);
    } else {
        w1 = snprintf(host, hostlen, "%s.%.*s", eb, (int)hl, hp);
        w2 = snprintf(path, pathlen, "/%s", ek);
    }
    if (w1 < 0 || (size_t)w1 >= hostlen || w2 < 0 || (size_t)w2 >= pathlen)
        return -1;
    w3 = snprintf(url, urllen, "%.*s://%s%s", (int)sl, endpoint, host, path);
    return w3 < 0 || (size_t)w3 >= urllen ? -1 : 0;
}

/* ------------------------------------------------------------- parsing --- */

/* The text between <tag> and </tag> at or after p (before end): its start and length. */
static const char *element(const char *p, const char *end, const char *tag, size_t *len, const char **after)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    size_t ol = strlen(open), cl = strlen(close);
    for (const char *s = p; s + ol <= end; s++) {
        if (memcmp(s, open, ol))
            continue;
        const char *v = s + ol;
        for (const char *e = v; e + cl <= end; e++)
            if (!memcmp(e, close, cl)) {
                *len = (size_t)(e - v);
                if (after)
                    *after = e + cl;
                return v;
            }
        return NULL;
    }
    return NULL;
}

/* XML text with the five predefined entities decoded into out; false if it does not fit. */
static bool xml_text(const char *v, size_t n, char *out, size_t outlen)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (o + 1 >= outlen) {
            out[0] = 0; /* never a half-decoded, unterminated value */
            return false;
        }
        char c = v[i];
        size_t used = 1;
        if (c == '&')
            for (size_t e = 0; e < sizeof ents / sizeof *ents; e++) {
                size_t el = strlen(ents[e].ent);
                if (i + el <= n && !memcmp(v + i, ents[e].ent, el)) {
                    c = ents[e].c;
                    used = el;
                    break;
                }
            }
        out[o++] = c;
        i += used;
    }
    out[o] = 0;
    return true;
}

int64_t s3_parse_time(const char *s, size_t n)
{
    char b[32];
    if (n < 19 || n >= sizeof b)
        return -1;
    memcpy(b, s, n);
    b[n] = 0;
    struct tm tm = {0};
    if (sscanf(b, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        return -1;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60 || tm.tm_year < 1970)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

int s3_list_parse(const char *xml, size_t n, int (*fn)(const char *key, uint64_t size, int64_t mtime, void *ud),
                  void *ud, bool *truncated, char *next, size_t nextlen)
{
    const char *end = xml + n;
    *truncated = false;
    if (nextlen)
        next[0] = 0;
    size_t l;
    if (!element(xml, end, "ListBucketResult", &l, NULL) && !memmem(xml, n, "<ListBucketResult", 17))
        return -1;
    const char *p = xml, *after;
    const char *c;
    while ((c = element(p, end, "Contents", &l, &after))) {
        const char *ce = c + l;
        size_t kl = 0, szl = 0, tl = 0;
        const char *k = element(c, ce, "Key", &kl, NULL);
        const char *sz = element(c, ce, "Size", &szl, NULL);
        const char *t = element(c, ce, "LastModified", &tl, NULL);
        char key[1024], num[24];
        if (k && xml_text(k, kl, key, sizeof key)) {
            uint64_t size = 0;
            if (sz && szl < sizeof num) {
                memcpy(num, sz, szl);
                num[szl] = 0;
                size = strtoull(num, NULL, 10);
            }
            int64_t mtime = t ? s3_parse_time(t, tl) : -1;
            int stop = fn(key, size, mtime < 0 ? 0 : mtime, ud);
            if (stop)
                return stop;
        }
        p = after;
    }
    const char *tr = element(xml, end, "IsTruncated", &l, NULL);
    *truncated = tr && l == 4 && !memcmp(tr, "true", 4);
    const char *nt = element(xml, end, "NextContinuationToken", &l, NULL);
    if (nt && nextlen && !xml_text(nt, l, next, nextlen))
        return -1;
    if (*truncated && (!nt || !nextlen || !next[0]))
        return -1; /* truncated without a way on: stop rather than loop */
    return 0;
}

void s3_error_code(const char *xml, size_t n, char *out, size_t outlen)
{
    size_t l;
    const char *c = element(xml, xml + n, "Code", &l, NULL);
    if (!outlen)
        return;
    out[0] = 0;
    if (c && !xml_text(c, l, out, outlen))
        out[0] = 0;
}
