/*
 * modules/audit — the activity log (issue 8): every event on the hook bus (logins, failed
 * logins, tokens, shares and every access through them, admin actions, module loads,
 * config reloads, every file change) becomes one append-only entry: who, what, when, from
 * which address, result.
 *
 * Tamper evidence: entry n carries prev = hash(n-1) and hash = SHA-256(prev "\n" body),
 * body being the entry without "hash" as compact JSON with sorted keys. `head` holds the
 * last seq and hash; `anchor` the first seq kept (retention removes from the front only).
 * GET /api/v1/admin/audit/verify (mbytectl audit verify) walks the chain and names the
 * first entry whose hash, link or sequence number does not hold.
 *
 * Cost: a batched observer (ABI minor 6) on the loop thread, after the change was committed
 * and answered, so uploads never wait for it. Its entries go into the dispatcher turn's
 * write, the same LevelDB write that deletes the outbox entries they record: a crash keeps
 * both or neither (then the events come again and get the same sequence numbers), so no
 * entry is lost and none is written twice. The head is put once per turn (flush), and a turn
 * costs one write however many events it carries (bench/audit, docs/performance.md).
 *
 * Threads: the observer, flush and done (loop thread) are the only writers; routes (HTTP
 * workers) only read. The head is kept in the state: `head_*` runs ahead during a turn,
 * `kept_*` is what the last written turn left in kv, and done() moves one to the other
 * (forward when the turn was written, back when it was not). A reloaded copy reads the head
 * in init, which runs on the loop thread after the old copy's last done().
 */
#include "mbyte.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUDIT_VERSION "1.1.0"
#define PRUNE_EVERY 256

#define NAME_CACHE 64

typedef struct audit {
    mb_module *self;
    const mb_api *api;
    int64_t retention_days; /* 0 keeps everything */
    int since_prune;
    /* Loop thread only (observer, flush, done): see the top of the file. */
    uint64_t head_seq, kept_seq;
    char head_hash[65], kept_hash[65];
    int turn_entries; /* entries added in the current turn */
    struct {
        json_int_t id;
        char name[72];
    } names[NAME_CACHE]; /* user id -> name: names never change, ids are never reused */
} audit;

static void hex16(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }

/* hash = SHA-256(prev "\n" canonical body), lower hex; `e` is the entry without "hash".
 * Returns the canonical body (malloc'd) when `body` is not NULL. */
static void entry_hash(const json_t *e, char out[65], char **body)
{
    char *txt = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    const char *prev = mb_jstr(e, "prev");
    crypto_hash_sha256_state st;
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)(prev ? prev : ""), prev ? strlen(prev) : 0);
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)txt, strlen(txt));
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof h);
    if (body)
        *body = txt;
    else
        free(txt);
}

static json_t *kv_json(audit *a, const char *key)
{
    char *v;
    size_t n;
    mb_err e;
    if (a->api->kv_get(a->self, key, &v, &n, &e))
        return NULL;
    json_t *j = json_loadb(v, n, 0, NULL);
    free(v);
    return j;
}

/* Write j under key: into the turn's batch b, or straight to kv when b is NULL. */
static void put_json(audit *a, mb_batch *b, const char *key, const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    mb_err e;
    if (b ? a->api->batch_put(b, a->self, key, t, strlen(t), &e) : a->api->kv_put(a->self, key, t, strlen(t), false, &e))
        a->api->log(a->self, MB_LOG_ERROR, "could not write %s: %s", key, e.msg);
    free(t);
}

/* ------------------------------------------------------------ retention --- */

typedef struct prune_ctx {
    audit *a;
    int64_t cutoff;
    uint64_t first_kept;
    int deleted;
    char (*keys)[32];
    int nkeys;
} prune_ctx;

static int prune_fn(const char *key, const void *v, size_t len, void *ud)
{
    prune_ctx *p = ud;
    json_t *e = json_loadb(v, len, 0, NULL);
    int64_t t = e ? mb_jint(e, "time") : 0;
    uint64_t seq = e ? (uint64_t)mb_jint(e, "seq") : 0;
    json_decref(e);
    if (t >= p->cutoff || p->nkeys == 1024) {
        p->first_kept = seq;
        return 1;
    }
    snprintf(p->keys[p->nkeys++], 32, "%s", key);
    return 0;
}

/* Remove entries older than the retention from the front; the anchor moves with them. */
static void prune(audit *a)
{
    if (a->retention_days <= 0)
        return;
    char(*keys)[32] = malloc(1024 * 32);
    if (!keys)
        return;
    prune_ctx p = {a, a->api->now() - a->retention_days * 86400, 0, 0, keys, 0};
    mb_err e;
    a->api->kv_scan(a->self, "e/", prune_fn, &p, &e);
    if (p.nkeys) {
        /* Everything went: the next entry starts the log (prune runs when kv holds the head). */
        uint64_t first = p.first_kept ? p.first_kept : a->kept_seq + 1;
        json_t *anchor = json_pack("{s:i, s:I}", "v", 1, "first", (json_int_t)first);
        put_json(a, NULL, "anchor", anchor); /* first: a crash mid-way leaves extra entries, never a gap */
        json_decref(anchor);
        for (int i = 0; i < p.nkeys; i++)
            a->api->kv_del(a->self, keys[i], false, &e);
        a->api->log(a->self, MB_LOG_INFO, "retention: removed %d entries older than %lld days", p.nkeys,
                    (long long)a->retention_days);
    }
    free(keys);
}

/* ------------------------------------------------------------- observer --- */

/* Who acted: a user id and name from whatever the event names. */
static void actor(audit *a, const json_t *p, const char *event, json_int_t *uid, char *name, size_t n)
{
    json_t *u = json_object_get(p, "user");
    *uid = json_is_integer(u) ? json_integer_value(u) : mb_jint(p, "user_id");
    name[0] = 0;
    if (json_is_string(u))
        snprintf(name, n, "%s", json_string_value(u));
    else if (mb_jstr(p, "by"))
        snprintf(name, n, "%s", mb_jstr(p, "by"));
    else if (!strncmp(event, "auth.", 5) && mb_jstr(p, "username"))
        snprintf(name, n, "%s", mb_jstr(p, "username"));
    else if (*uid > 0) {
        size_t slot = (size_t)*uid % NAME_CACHE;
        if (a->names[slot].id != *uid) {
            a->names[slot].id = 0;
            mb_user who;
            if (a->api->user_lookup((uint64_t)*uid, NULL, &who, a->names[slot].name, sizeof a->names[slot].name,
                                    NULL) == 0)
                a->names[slot].id = *uid;
        }
        if (a->names[slot].id == *uid)
            snprintf(name, n, "%s", a->names[slot].name);
    }
}

static void o_all(const char *event, const json_t *payload, mb_batch *b, void *state)
{
    audit *a = state;
    uint64_t seq = a->head_seq + 1;
    if (seq == 1) {
        json_t *anchor = json_pack("{s:i, s:I}", "v", 1, "first", (json_int_t)1);
        put_json(a, b, "anchor", anchor);
        json_decref(anchor);
    }
    json_int_t uid;
    char name[128];
    actor(a, payload, event, &uid, name, sizeof name);
    json_t *detail = json_copy((json_t *)payload); /* shallow: only top-level keys are dropped */
    json_object_del(detail, "_event_time");
    json_object_del(detail, "ip");
    const char *path = mb_jstr(payload, "path") ? mb_jstr(payload, "path") : mb_jstr(payload, "from");
    bool failed = strstr(event, "failed") || (mb_jstr(payload, "result") && !strcmp(mb_jstr(payload, "result"), "failed")) ||
                  (!strcmp(event, "task.finished") && mb_jstr(payload, "state") &&
                   strcmp(mb_jstr(payload, "state"), "done"));
    int64_t t = json_is_integer(json_object_get(payload, "_event_time")) ? mb_jint(payload, "_event_time")
                                                                          : a->api->now();
    json_t *e = json_pack("{s:i, s:I, s:I, s:s, s:s, s:I, s:s, s:s, s:s, s:o, s:s}", "v", 1, "seq",
                          (json_int_t)seq, "time", (json_int_t)t, "action", event, "user", name, "user_id", uid, "ip",
                          mb_jstr(payload, "ip") ? mb_jstr(payload, "ip") : "", "path", path ? path : "", "result",
                          failed ? "failed" : "ok", "detail", detail, "prev", a->head_hash);
    json_t *store = json_object_get(payload, "store");
    if (json_is_integer(store))
        json_object_set_new(e, "store", json_integer(json_integer_value(store)));
    char hash[65], key[64], s16[17], *body;
    entry_hash(e, hash, &body);
    json_decref(e);
    /* Stored: the hashed body with "hash" in front (key order is not part of the format:
     * verify re-encodes with sorted keys), which spares a second encoding per entry. */
    size_t blen = strlen(body);
    char *stored = malloc(blen + 80);
    if (!stored)
        abort();
    int n = snprintf(stored, blen + 80, "{\"hash\":\"%s\",%s", hash, body + 1);
    free(body);
    hex16(s16, seq);
    snprintf(key, sizeof key, "e/%s", s16);
    mb_err err;
    if (a->api->batch_put(b, a->self, key, stored, (size_t)n, &err))
        a->api->log(a->self, MB_LOG_ERROR, "could not write %s: %s", key, err.msg);
    free(stored);
    if (json_is_integer(store)) {
        char st16[17];
        hex16(st16, (uint64_t)json_integer_value(store));
        snprintf(key, sizeof key, "s/%s/%s", st16, s16);
        a->api->batch_put(b, a->self, key, "", 0, &err);
    }
    a->head_seq = seq;
    snprintf(a->head_hash, sizeof a->head_hash, "%s", hash);
    a->turn_entries++;
}

/* End of a turn, before its write: the head once, not per entry. */
static void o_flush(mb_batch *b, void *state)
{
    audit *a = state;
    if (!a->turn_entries)
        return;
    json_t *h = json_pack("{s:i, s:I, s:s}", "v", 1, "seq", (json_int_t)a->head_seq, "hash", a->head_hash);
    put_json(a, b, "head", h);
    json_decref(h);
}

/* After the turn's write: keep the head it wrote, or go back to the last one written (the
 * turn's events come again and get the same numbers). */
static void o_done(int status, void *state)
{
    audit *a = state;
    if (status) {
        a->head_seq = a->kept_seq;
        snprintf(a->head_hash, sizeof a->head_hash, "%s", a->kept_hash);
        a->api->log(a->self, MB_LOG_WARN, "the last %d entries were not written; their events will be recorded again",
                    a->turn_entries);
        a->turn_entries = 0;
        return;
    }
    a->kept_seq = a->head_seq;
    snprintf(a->kept_hash, sizeof a->kept_hash, "%s", a->head_hash);
    a->since_prune += a->turn_entries;
    a->turn_entries = 0;
    if (a->since_prune >= PRUNE_EVERY) {
        a->since_prune = 0;
        prune(a);
    }
}

/* --------------------------------------------------------------- verify --- */

typedef struct verify_ctx {
    audit *a;
    uint64_t expect; /* next seq */
    char prev[65];
    bool first;
    uint64_t n;
    json_t *bad; /* {"seq","key","reason"} */
} verify_ctx;

static int verify_fn(const char *key, const void *v, size_t len, void *ud)
{
    verify_ctx *c = ud;
    json_t *e = json_loadb(v, len, 0, NULL);
    uint64_t kseq = strtoull(key + 2, NULL, 16);
    const char *why = NULL;
    char h[65], stored[65] = "";
    if (!e || !json_is_object(e))
        why = "the entry is not a JSON object";
    else if ((uint64_t)mb_jint(e, "seq") != kseq)
        why = "the entry's sequence number does not match its key";
    else if (kseq != c->expect)
        why = "entries are missing before this one";
    else if (!c->first && (!mb_jstr(e, "prev") || strcmp(mb_jstr(e, "prev"), c->prev)))
        why = "its link to the previous entry does not match";
    else {
        snprintf(stored, sizeof stored, "%s", mb_jstr(e, "hash") ? mb_jstr(e, "hash") : "");
        json_object_del(e, "hash");
        entry_hash(e, h, NULL);
        if (strcmp(stored, h))
            why = "its content does not match its hash (edited)";
    }
    if (why) {
        c->bad = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)kseq, "key", key, "reason", why);
        json_decref(e);
        return 1;
    }
    snprintf(c->prev, sizeof c->prev, "%s", stored);
    c->first = false;
    c->expect = kseq + 1;
    c->n++;
    json_decref(e);
    return 0;
}

/* GET /api/v1/admin/audit/verify */
static int h_verify(mb_req *req, void *state, mb_err *err)
{
    audit *a = state;
    json_t *anchor = kv_json(a, "anchor"), *head = kv_json(a, "head");
    verify_ctx c = {a, anchor ? (uint64_t)mb_jint(anchor, "first") : 1, "", true, 0, NULL};
    a->api->kv_scan(a->self, "e/", verify_fn, &c, err);
    if (!c.bad && head && (c.expect != (uint64_t)mb_jint(head, "seq") + 1 || strcmp(c.prev, mb_jstr(head, "hash"))))
        c.bad = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)c.expect, "key", "head", "reason",
                          "the log ends before its recorded head (entries were removed from the end)");
    json_decref(anchor);
    json_decref(head);
    json_t *out;
    if (c.bad) {
        out = json_pack("{s:b, s:I, s:o}", "ok", 0, "verified", (json_int_t)c.n, "first_bad", c.bad);
        a->api->log(a->self, MB_LOG_WARN, "audit chain verification failed at entry %lld",
                    (long long)mb_jint(c.bad, "seq"));
    } else
        out = json_pack("{s:b, s:I, s:s}", "ok", 1, "verified", (json_int_t)c.n, "head", c.prev);
    return a->api->reply_json(req, 200, out);
}

/* ---------------------------------------------------------------- search --- */

static bool parse_time(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    if (strspn(s, "0123456789") == strlen(s)) {
        *out = strtoll(s, NULL, 10);
        return true;
    }
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || (*end && strcmp(end, "Z")))
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* The newest `cap` of the entries seen, for answers newest first. kv_scan walks keys
 * oldest first and cannot start anywhere but a prefix, so a page is the last `cap` matches
 * before the cursor: a ring keeps them without moving any. */
typedef struct ring {
    json_t **e;
    size_t cap, n, next; /* next: the slot the next push takes */
    bool dropped;        /* an older match fell out: there is a next page */
} ring;

static void ring_push(ring *r, json_t *e)
{
    if (r->n == r->cap) {
        json_decref(r->e[r->next]);
        r->dropped = true;
    } else
        r->n++;
    r->e[r->next] = e;
    r->next = (r->next + 1) % r->cap;
}

/* {"entries": [newest first], "next": "<seq of the oldest>" while older matches exist, else
 * null}. Frees the ring. */
static json_t *ring_page(ring *r)
{
    json_t *out = json_array();
    for (size_t i = 0; i < r->n; i++)
        json_array_append_new(out, r->e[(r->next + r->cap - 1 - i) % r->cap]);
    free(r->e);
    json_t *last = json_array_get(out, json_array_size(out) - 1);
    char cur[24];
    snprintf(cur, sizeof cur, "%lld", (long long)json_integer_value(json_object_get(last, "seq")));
    return json_pack("{s:o, s:o}", "entries", out, "next", r->dropped && last ? json_string(cur) : json_null());
}

/* ?before=<seq>: the cursor a page's "next" gives (0: from the newest). */
static int before_arg(audit *a, mb_req *req, uint64_t *out, mb_err *err)
{
    const char *b = a->api->req_query(req, "before");
    *out = 0;
    if (!b)
        return 0;
    if (!*b || strspn(b, "0123456789") != strlen(b) || strlen(b) > 19)
        return a->api->err_set(err, MB_EINVAL, "before: the \"next\" of the previous page (a whole number)");
    *out = strtoull(b, NULL, 10);
    return 0;
}

static void ring_init(ring *r, size_t cap)
{
    *r = (ring){calloc(cap, sizeof(json_t *)), cap, 0, 0, false};
    if (!r->e)
        abort();
}

typedef struct search_ctx {
    const char *user, *action, *path;
    int64_t from, to;
    uint64_t before;
    ring r;
} search_ctx;

static int search_fn(const char *key, json_t *e, void *ud)
{
    (void)key;
    search_ctx *c = ud;
    if (c->before && (uint64_t)mb_jint(e, "seq") >= c->before)
        return 1; /* keys are in seq order: nothing after this is older */
    bool ok = true;
    if (c->user) {
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)mb_jint(e, "user_id"));
        ok = !strcmp(c->user, mb_jstr(e, "user") ? mb_jstr(e, "user") : "") || !strcmp(c->user, id);
    }
    if (ok && c->action) {
        size_t n = strlen(c->action);
        const char *act = mb_jstr(e, "action") ? mb_jstr(e, "action") : "";
        ok = n && (c->action[n - 1] == '*' || c->action[n - 1] == '.') ? !strncmp(act, c->action, n - (c->action[n - 1] == '*'))
                                                                        : !strcmp(act, c->action);
    }
    if (ok && c->path)
        ok = mb_jstr(e, "path") && !strncmp(mb_jstr(e, "path"), c->path, strlen(c->path));
    if (ok && c->from && mb_jint(e, "time") < c->from)
        ok = false;
    if (ok && c->to && mb_jint(e, "time") > c->to)
        ok = false;
    if (ok)
        ring_push(&c->r, json_incref(e));
    return 0;
}

/* One CSV field: quoted, quotes doubled, and a leading =+-@ defused for spreadsheets. */
static void csv_field(char **buf, size_t *len, size_t *cap, const char *s, bool last)
{
    size_t need = 2 * strlen(s) + 8;
    if (*len + need >= *cap) {
        *cap = (*len + need) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf)
            abort();
    }
    char *w = *buf + *len;
    *w++ = '"';
    if (strchr("=+-@\t\r", *s) && *s)
        *w++ = '\'';
    for (; *s; s++) {
        if (*s == '"')
            *w++ = '"';
        *w++ = *s;
    }
    *w++ = '"';
    *w++ = last ? '\n' : ',';
    *len = (size_t)(w - *buf);
}

/* A page (ring_page) as JSON, or its entries as CSV or JSON lines (the cursor then goes in
 * the X-Next-Before header). */
static int reply_entries(audit *a, mb_req *req, json_t *page, mb_err *err)
{
    (void)err;
    const char *fmt = a->api->req_query(req, "format");
    if (!fmt || !strcmp(fmt, "json"))
        return a->api->reply_json(req, 200, page);
    json_t *arr = json_incref(json_object_get(page, "entries"));
    if (json_string_value(json_object_get(page, "next")))
        a->api->reply_header(req, "X-Next-Before", json_string_value(json_object_get(page, "next")));
    json_decref(page);
    size_t len = 0, cap = 4096, i;
    char *buf = malloc(cap);
    json_t *e;
    if (!buf)
        abort();
    if (!strcmp(fmt, "csv")) {
        const char *hdr = "seq,time,action,user,ip,store,path,result,hash\n";
        memcpy(buf, hdr, strlen(hdr));
        len = strlen(hdr);
        json_array_foreach(arr, i, e)
        {
            char seq[24], t[32], st[24];
            time_t tt = (time_t)mb_jint(e, "time");
            struct tm tm;
            gmtime_r(&tt, &tm);
            strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(seq, sizeof seq, "%lld", (long long)mb_jint(e, "seq"));
            snprintf(st, sizeof st, "%lld", (long long)mb_jint(e, "store"));
            const char *f[] = {seq, t, mb_jstr(e, "action"), mb_jstr(e, "user"), mb_jstr(e, "ip"),
                               json_object_get(e, "store") ? st : "", mb_jstr(e, "path"), mb_jstr(e, "result"),
                               mb_jstr(e, "hash")};
            for (int k = 0; k < 9; k++)
                csv_field(&buf, &len, &cap, f[k] ? f[k] : "", k == 8);
        }
        json_decref(arr);
        int rc = a->api->reply_bytes(req, 200, "text/csv; charset=utf-8", buf, len);
        free(buf);
        return rc;
    }
    if (strcmp(fmt, "jsonl")) {
        free(buf);
        json_decref(arr);
        return a->api->err_set(err, MB_EINVAL, "format: must be json, jsonl or csv");
    }
    json_array_foreach(arr, i, e)
    {
        char *line = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
        size_t n = strlen(line);
        if (len + n + 2 >= cap) {
            cap = (len + n + 2) * 2;
            buf = realloc(buf, cap);
            if (!buf)
                abort();
        }
        memcpy(buf + len, line, n);
        len += n;
        buf[len++] = '\n';
        free(line);
    }
    json_decref(arr);
    int rc = a->api->reply_bytes(req, 200, "application/jsonl", buf, len);
    free(buf);
    return rc;
}

static int limit_arg(audit *a, mb_req *req, size_t def, size_t *out, mb_err *err)
{
    const char *l = a->api->req_query(req, "limit");
    *out = def;
    if (!l)
        return 0;
    if (!*l || strspn(l, "0123456789") != strlen(l) || strlen(l) > 6 || atol(l) < 1)
        return a->api->err_set(err, MB_EINVAL, "limit: a whole number from 1 to 999999");
    *out = (size_t)atol(l);
    return 0;
}

/* GET /api/v1/admin/audit?user=&action=&from=&to=&path=&format=&limit=&before=: newest first. */
static int h_search(mb_req *req, void *state, mb_err *err)
{
    audit *a = state;
    const mb_api *api = a->api;
    search_ctx c = {api->req_query(req, "user"), api->req_query(req, "action"), api->req_query(req, "path"), 0, 0, 0,
                    {0}};
    const char *from = api->req_query(req, "from"), *to = api->req_query(req, "to"), *fmt = api->req_query(req, "format");
    if (from && !parse_time(from, &c.from))
        return api->err_set(err, MB_EINVAL, "from: Unix seconds or a UTC time like 2026-12-01T10:00:00Z");
    if (to && !parse_time(to, &c.to))
        return api->err_set(err, MB_EINVAL, "to: Unix seconds or a UTC time like 2026-12-01T10:00:00Z");
    if (fmt && strcmp(fmt, "json") && strcmp(fmt, "jsonl") && strcmp(fmt, "csv"))
        return api->err_set(err, MB_EINVAL, "format: must be json, jsonl or csv");
    int rc;
    size_t limit;
    if ((rc = limit_arg(a, req, 100000, &limit, err)) || (rc = before_arg(a, req, &c.before, err)))
        return rc;
    ring_init(&c.r, limit);
    api->kv_scan_json(a->self, "e/", search_fn, &c, err);
    return reply_entries(a, req, ring_page(&c.r), err);
}

typedef struct store_ctx {
    audit *a;
    uint64_t before;
    ring r;
} store_ctx;

static int store_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    store_ctx *c = ud;
    const char *seq = strrchr(key, '/');
    if (c->before && seq && strtoull(seq + 1, NULL, 16) >= c->before)
        return 1; /* "s/<store>/<seq>" keys are in seq order */
    char k[64];
    snprintf(k, sizeof k, "e/%s", seq ? seq + 1 : "");
    json_t *e = kv_json(c->a, k);
    if (e) {
        json_object_del(e, "prev");
        ring_push(&c->r, e);
    }
    return 0;
}

/* GET /api/v1/stores/{sid}/activity?limit=&before=: the newest first, owner only. */
static int h_activity(mb_req *req, void *state, mb_err *err)
{
    audit *a = state;
    const mb_api *api = a->api;
    const char *s = api->req_param(req, "sid");
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    uint64_t sid = strtoull(s, NULL, 10);
    json_t *store;
    int rc;
    if ((rc = api->store_get(api->req_user(req), sid, &store, err)))
        return rc;
    json_decref(store);
    size_t limit;
    store_ctx c = {a, 0, {0}};
    if ((rc = limit_arg(a, req, 100, &limit, err)) || (rc = before_arg(a, req, &c.before, err)))
        return rc;
    char prefix[32], s16[17];
    hex16(s16, sid);
    snprintf(prefix, sizeof prefix, "s/%s/", s16);
    ring_init(&c.r, limit);
    api->kv_scan(a->self, prefix, store_fn, &c, err);
    return api->reply_json(req, 200, ring_page(&c.r));
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium could not start");
    audit *a = calloc(1, sizeof *a);
    if (!a)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    a->self = self;
    a->api = api;
    a->retention_days = json_integer_value(json_object_get(config, "retention_days"));
    json_t *head = kv_json(a, "head");
    if (head) {
        a->head_seq = a->kept_seq = (uint64_t)mb_jint(head, "seq");
        snprintf(a->head_hash, sizeof a->head_hash, "%s", mb_jstr(head, "hash") ? mb_jstr(head, "hash") : "");
        snprintf(a->kept_hash, sizeof a->kept_hash, "%s", a->head_hash);
        json_decref(head);
    }
    *state = a;
    prune(a);
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    free(state);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    audit *a = state;
    a->retention_days = json_integer_value(json_object_get(config, "retention_days"));
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "retention_days", MB_CFG_INT, "0", 0, 36500},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/admin/audit", MB_ROLE_ADMIN, h_search},
    {sizeof(mb_route), "GET", "/api/v1/admin/audit/verify", MB_ROLE_ADMIN, h_verify},
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/activity", MB_ROLE_USER, h_activity},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "*", MB_HOOK_OBSERVER, 1000, NULL, NULL, o_all, o_flush, o_done},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "audit",
    .version = AUDIT_VERSION,
    .description = "Append-only, hash-chained activity log of every security-relevant action and file change",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = NULL,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
