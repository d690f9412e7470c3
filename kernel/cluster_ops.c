/*
 * cluster_ops.c — a module's file call on a store another node keeps (issue 23, docs/cluster.md
 * "Modules' file calls"). FTP, WebDAV by store name and every other module reach files through
 * the ABI's calls (api.c); in cluster mode a call for a store this node does not keep is carried
 * out on the node that keeps it, through that node's HTTP API as the same user (signed with the
 * cluster's key, cluster_fwd.c), so the keeper authorizes, checks quotas, replicates and runs its
 * hooks exactly as for its own clients, and a client never needs to know where a store lives.
 *
 * - store_list adds the stores other nodes keep (as they list them); store_get asks the keeper;
 *   reply_file forwards the client's request (Range, conditionals) to the keeper's GET of the file
 *   and streams its answer back (cluster_fwd.c).
 * - A read fetches the file in windows of WINDOW bytes (Range) pinned to the content opened
 *   (If-Match on its SHA-256): a file replaced while it is read fails the read (MB_EPRECOND),
 *   never mixes two versions. Only the current version can be opened this way.
 * - A write is spooled to an unlinked file of the data folder while it arrives and sent as one
 *   PUT at commit, with its SHA-256 for the keeper to verify: nothing is visible before commit,
 *   an abort sends nothing, and a refusal (quota, a folder in the way) comes at commit.
 * - The system's own calls (u NULL: modules' background work) are never carried over: a store's
 *   background work is its keeper's. They fail with MB_EBUSY, as every call for a store kept
 *   elsewhere did before (ns.c refuses to touch a replica's copy).
 *
 * Threads: any; every call blocks on the other node for up to OP_TIMEOUT_MS (reads and a
 * commit's upload while bytes move). Modules calling from the loop thread (FTP's commands)
 * hold it that long at worst: a node that stopped answering leaves the view within its lease.
 */
#include "fileio.h"
#include "fs.h"
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_TIMEOUT_MS 5000L
#define WINDOW (1u << 20)            /* bytes fetched per read request */
#define ANSWER_MAX (256u << 20)      /* a JSON answer (a whole subtree's listing) */
#define TARGET_MAX 8192

/* ------------------------------------------------------------ one call --- */

typedef struct call {
    const char *method;
    char *target;             /* path and query, as sent and signed (malloc'd by the caller) */
    struct curl_slist *h;     /* extra headers; run frees them */
    const char *json;         /* request body, or NULL */
    FILE *upload;             /* or a body from a file of upsize bytes */
    uint64_t upsize;
    char *sink;               /* an answer's bytes go here (cap), else to memory as JSON */
    size_t cap, got;
    long status;
    json_t *answer;           /* a 2xx answer's JSON (NULL for none) */
    void *c;                  /* an easy handle to reuse, or NULL for one of its own */
} call;

typedef struct mem {
    char *p;
    size_t n, cap;
    call *k;
    void *c;
} mem;

static size_t on_body(char *buf, size_t sz, size_t nm, void *ud)
{
    mem *m = ud;
    size_t n = sz * nm;
    long status = 0;
    curl_easy_getinfo(m->c, CURLINFO_RESPONSE_CODE, &status);
    if (m->k->sink && status >= 200 && status < 300) { /* a problem's text goes to memory */
        if (m->k->got + n > m->k->cap)
            return 0; /* more than asked for: the Range was not honoured */
        memcpy(m->k->sink + m->k->got, buf, n);
        m->k->got += n;
        return n;
    }
    if (m->n + n > ANSWER_MAX)
        return 0;
    if (m->n + n + 1 > m->cap) {
        m->cap = (m->n + n + 1) * 2;
        m->p = xrealloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, buf, n);
    m->n += n;
    m->p[m->n] = 0;
    return n;
}

/* The keeper's answer as this node's error: its problem's code and detail. */
static int problem(call *k, const mem *m, const char *node, CURLcode cc, mb_err *err)
{
    if (cc != CURLE_OK)
        return err_set(err, MB_EBUSY, "store kept by node %s, which did not answer (%s); try again later", node,
                       curl_easy_strerror(cc));
    json_t *p = m->p ? json_loadb(m->p, m->n, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(p, "code"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    int rc = code                ? err_code(code)
             : k->status == 404 ? MB_ENOENT
             : k->status == 412 ? MB_EPRECOND
             : k->status == 503 ? MB_EBUSY
                                : MB_EIO;
    err_set(err, rc, "%s", detail ? detail : code ? code : "the keeping node refused");
    json_decref(p);
    return rc;
}

/* Send k as user uid to the node keeping store sid: 0 with a 2xx status (and k->answer), else
 * the error. k->target and k->h are consumed. */
static int run(call *k, uint64_t uid, uint64_t sid, mb_err *err)
{
    char node[64], url[TARGET_MAX + 400];
    int rc = 0;
    k->h = cluster_fwd_as(k->h, uid, k->method, k->target);
    if (!cluster_store_node(sid, node, sizeof node))
        rc = err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    else if (!cluster_fwd_url(node, k->target, url, sizeof url))
        rc = err_set(err, MB_EBUSY, "store %llu is kept by node %s, which is not up now; try again later",
                     (unsigned long long)sid, node);
    if (rc) {
        curl_slist_free_all(k->h);
        free(k->target);
        return rc;
    }
    CURL *c = k->c ? k->c : cluster_fwd_handle();
    mem m = {NULL, 0, 0, k, c};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, k->method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
    if (k->json) {
        k->h = curl_slist_append(k->h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, k->json);
    } else if (k->upload) {
        k->h = curl_slist_append(k->h, "Expect:"); /* no 100-continue round trip */
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READDATA, k->upload);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)k->upsize);
    }
    if (k->upload || k->sink) { /* bytes: as long as they keep moving */
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 0L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, OP_TIMEOUT_MS / 1000);
    } else
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, OP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, k->h);
    CURLcode cc = curl_easy_perform(c);
    k->status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &k->status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL); /* a reader's handle is used again (GETs only) */
    if (!k->c)
        cluster_fwd_handle_free(c);
    curl_slist_free_all(k->h);
    free(k->target);
    k->h = NULL;
    k->target = NULL;
    if (cc == CURLE_OK && k->status >= 200 && k->status < 300) {
        k->answer = m.p && !k->sink ? json_loadb(m.p, m.n, 0, NULL) : NULL;
        if (m.p && !k->sink && !k->answer)
            rc = err_set(err, MB_EIO, "node %s answered with JSON it could not parse", node);
    } else
        rc = problem(k, &m, node, cc, err);
    free(m.p);
    return rc;
}

/* "/api/v1/stores/<sid>/<what>[/<path, each segment escaped>]" + query: malloc'd, NULL when the
 * path is too long for a request line. */
static char *target(uint64_t sid, const char *what, const char *path, const char *query)
{
    char *out = xmalloc(TARGET_MAX);
    int n = snprintf(out, TARGET_MAX, "/api/v1/stores/%llu/%s", (unsigned long long)sid, what);
    for (const char *p = path ? path : ""; *p && n > 0 && n < TARGET_MAX;) {
        size_t l = strcspn(p, "/");
        if (l) {
            char *e = curl_easy_escape(NULL, p, (int)l);
            n += snprintf(out + n, TARGET_MAX - (size_t)n, "/%s", e ? e : "");
            curl_free(e);
        }
        p += l + (p[l] == '/');
    }
    if (n > 0 && n < TARGET_MAX && query)
        n += snprintf(out + n, TARGET_MAX - (size_t)n, "%s", query);
    if (n <= 0 || n >= TARGET_MAX) {
        free(out);
        return NULL;
    }
    return out;
}

/* The system's own call (no user) for a store kept elsewhere: that is its keeper's work. */
static int keepers_work(uint64_t sid, mb_err *err)
{
    return err_set(err, MB_EBUSY, "store %llu is kept by another node: its background work is done there",
                   (unsigned long long)sid);
}

/* One call with a JSON answer as user u: *out (new reference; may be NULL). */
static int ask(const mb_user *u, uint64_t sid, const char *method, char *tgt, json_t *body, json_t **out,
               long *status, mb_err *err)
{
    char *json = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!u || !tgt) {
        free(json);
        free(tgt);
        return !u ? keepers_work(sid, err) : err_set(err, MB_EINVAL, "path too long");
    }
    call k = {.method = method, .target = tgt, .json = json};
    int rc = run(&k, u->id, sid, err);
    free(json);
    if (status)
        *status = k.status;
    if (out && !rc)
        *out = k.answer;
    else
        json_decref(k.answer);
    return rc;
}

/* ------------------------------------------------------ namespace calls --- */

int cops_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err)
{
    return ask(u, sid, "GET", target(sid, "info", path, NULL), NULL, info, NULL, err);
}

static char *page_query(const char *cursor, size_t limit)
{
    char *q = xmalloc(600), *e = cursor ? curl_easy_escape(NULL, cursor, 0) : NULL;
    snprintf(q, 600, "?limit=%zu%s%.500s", limit ? limit : 1000, e ? "&cursor=" : "", e ? e : "");
    curl_free(e);
    return q;
}

int cops_page(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit, json_t **out,
              mb_err *err)
{
    char *q = page_query(cursor, limit);
    int rc = ask(u, sid, "GET", target(sid, "list", path, q), NULL, out, NULL, err);
    free(q);
    return rc;
}

int cops_list(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out, mb_err *err)
{
    if (recursive) /* the same {"path","entries"} with each entry's relpath */
        return ask(u, sid, "GET", target(sid, "list", path, "?recursive=true"), NULL, out, NULL, err);
    json_t *all = NULL, *page = NULL;
    char *cursor = NULL;
    int rc;
    do { /* the whole folder: page after page */
        char *q = page_query(cursor, 10000);
        rc = ask(u, sid, "GET", target(sid, "list", path, q), NULL, &page, NULL, err);
        free(q);
        free(cursor);
        cursor = NULL;
        if (rc)
            break;
        if (!all)
            all = json_pack("{s:O, s:[]}", "path", json_object_get(page, "path"), "entries");
        json_array_extend(json_object_get(all, "entries"), json_object_get(page, "entries"));
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        cursor = next ? xstrdup(next) : NULL;
        json_decref(page);
    } while (cursor);
    if (rc)
        json_decref(all);
    else
        *out = all;
    return rc;
}

int cops_mkdir(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err)
{
    json_t *b = json_pack("{s:s, s:b}", "path", path ? path : "", "parents", (flags & FS_PARENTS) != 0);
    return ask(u, sid, "POST", target(sid, "folders", NULL, NULL), b, info, NULL, err);
}

int cops_xfer(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, bool copy, json_t **info,
              mb_err *err)
{
    json_t *b = json_pack("{s:s, s:s, s:b, s:b}", "from", from ? from : "", "to", to ? to : "", "overwrite",
                          (flags & FS_OVERWRITE) != 0, "parents", (flags & FS_PARENTS) != 0);
    return ask(u, sid, "POST", target(sid, copy ? "copy" : "move", NULL, NULL), b, info, NULL, err);
}

int cops_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err)
{
    return ask(u, sid, "DELETE", target(sid, "files", path, flags & FS_RECURSIVE ? "?recursive=true" : NULL), NULL,
               NULL, NULL, err);
}

int cops_store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err)
{
    json_t *list = NULL, *s; /* the keeper's list of the user's stores it keeps */
    int rc = ask(u, sid, "GET", xstrdup("/api/v1/stores"), NULL, &list, NULL, err);
    size_t i;
    *out = NULL;
    json_array_foreach(list, i, s) if ((uint64_t)jint(s, "id") == sid) *out = json_incref(s);
    json_decref(list);
    return rc ? rc : *out ? 0 : err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
}

int cops_reply_file(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    if (!u)
        return keepers_work(sid, err);
    char *t = target(sid, "files", path, NULL);
    int rc = t ? cluster_fwd_file(req, u->id, sid, t, err) : err_set(err, MB_EINVAL, "path too long");
    free(t);
    return rc;
}

int cops_usage(uint64_t sid, uint64_t owner, json_t **out, mb_err *err)
{
    static const char *const fields[] = {"bytes", "files", "current", "versions", "trash", NULL};
    if (sid) { /* as the store's owner, on its keeper */
        json_t *rec = cluster_store_record(sid);
        char t[80];
        snprintf(t, sizeof t, "/api/v1/cluster/usage?store=%llu", (unsigned long long)sid);
        *out = rec ? cluster_fwd_ask((uint64_t)jint(rec, "owner"), jstr(rec, "node"), t) : NULL;
        json_decref(rec);
        return *out ? 0 : err_set(err, MB_EBUSY, "store %llu's usage: its keeper did not answer", (unsigned long long)sid);
    }
    int rc = stores_usage_get(0, owner, out, err);
    json_t *nodes = rc ? NULL : cluster_kv_user_nodes(owner), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    { /* a node that is down counts nothing until it is back */
        json_t *theirs = cluster_fwd_ask(owner, json_string_value(n), "/api/v1/cluster/usage");
        for (const char *const *f = fields; theirs && *f; f++)
            json_object_set_new(*out, *f, json_integer(jint(*out, *f) + jint(theirs, *f)));
        json_decref(theirs);
    }
    json_decref(nodes);
    return rc;
}

/* --------------------------------------------------------------- reads --- */

struct cops_reader {
    uint64_t uid, sid, size;
    char *target;  /* the file's GET */
    char etag[80]; /* "<sha256>" of the content opened */
    char *win;     /* bytes [woff, woff + wlen) */
    uint64_t woff;
    size_t wlen;
    void *c; /* one kept-alive connection for the whole read */
};

int cops_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, cops_reader **r, json_t **info,
              mb_err *err)
{
    json_t *st = NULL;
    int rc = cops_stat(u, sid, path, &st, err);
    if (rc)
        return rc;
    const char *sha = jstr(st, "sha256");
    if (strcmp(jstr(st, "type"), "file"))
        rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", path);
    else if (version && version != (uint64_t)jint(st, "version"))
        rc = err_set(err, MB_EUNSUPP, "an older version of a file kept by another node is read through its HTTP API");
    else if (strlen(sha) != 64)
        rc = err_set(err, MB_EIO, "the keeping node gave no checksum for '%s'", path);
    char *t = rc ? NULL : target(sid, "files", path, NULL);
    if (!rc && !t)
        rc = err_set(err, MB_EINVAL, "path too long");
    if (rc) {
        json_decref(st);
        return rc;
    }
    cops_reader *x = xcalloc(1, sizeof *x);
    x->uid = u->id;
    x->sid = sid;
    x->size = (uint64_t)jint(st, "size");
    x->target = t;
    snprintf(x->etag, sizeof x->etag, "\"%s\"", sha);
    *r = x;
    if (info)
        *info = st;
    else
        json_decref(st);
    return 0;
}

int64_t cops_read(cops_reader *r, uint64_t off, void *buf, size_t n, mb_err *err)
{
    if (off >= r->size || !n)
        return 0;
    if (!r->win || off < r->woff || off >= r->woff + r->wlen) {
        uint64_t end = off + WINDOW < r->size ? off + WINDOW : r->size;
        char line[200];
        call k = {.method = "GET", .target = xstrdup(r->target), .cap = (size_t)(end - off)};
        if (!r->win)
            r->win = xmalloc(WINDOW);
        if (!r->c)
            r->c = cluster_fwd_handle();
        k.sink = r->win;
        k.c = r->c;
        snprintf(line, sizeof line, "Range: bytes=%llu-%llu", (unsigned long long)off, (unsigned long long)end - 1);
        k.h = curl_slist_append(NULL, line);
        snprintf(line, sizeof line, "If-Match: %s", r->etag);
        k.h = curl_slist_append(k.h, line);
        r->wlen = 0;
        int rc = run(&k, r->uid, r->sid, err);
        if (!rc && (k.status != 206 || k.got != k.cap))
            rc = err_set(err, MB_EIO, "the keeping node sent %zu bytes of %zu (HTTP %ld)", k.got, k.cap, k.status);
        if (rc == MB_EPRECOND)
            err_set(err, rc, "the file changed while it was read");
        if (rc)
            return rc;
        r->woff = off;
        r->wlen = k.got;
    }
    size_t have = (size_t)(r->woff + r->wlen - off);
    if (n > have)
        n = have;
    memcpy(buf, r->win + (off - r->woff), n);
    return (int64_t)n;
}

void cops_close(cops_reader *r)
{
    if (!r)
        return;
    if (r->c)
        cluster_fwd_handle_free(r->c);
    free(r->target);
    free(r->win);
    free(r);
}

/* -------------------------------------------------------------- writes --- */

struct cops_writer {
    uint64_t uid, sid;
    char *target; /* the file's PUT */
    int flags;
    FILE *spool;
    uint64_t n;
    crypto_hash_sha256_state h;
    char expect[65];
};

int cops_write_begin(const mb_user *u, uint64_t sid, const char *path, const char *expect_sha256, int flags,
                     cops_writer **w, mb_err *err)
{
    if (!u)
        return keepers_work(sid, err);
    char *t = target(sid, "files", path, flags & FS_PARENTS ? "?parents=true" : NULL);
    if (!t)
        return err_set(err, MB_EINVAL, "path too long");
    FILE *f = fio_spill(g_cfg ? g_cfg->data_dir : NULL);
    if (!f) {
        free(t);
        return err_set(err, MB_EIO, "no room for an upload to another node's store");
    }
    cops_writer *x = xcalloc(1, sizeof *x);
    x->uid = u->id;
    x->sid = sid;
    x->target = t;
    x->flags = flags;
    x->spool = f;
    crypto_hash_sha256_init(&x->h);
    if (expect_sha256)
        snprintf(x->expect, sizeof x->expect, "%s", expect_sha256);
    *w = x;
    return 0;
}

int cops_write_data(cops_writer *w, const void *buf, size_t n, mb_err *err)
{
    if (n && fwrite(buf, 1, n, w->spool) != n)
        return err_set(err, MB_EIO, "spooling an upload to another node's store failed");
    crypto_hash_sha256_update(&w->h, buf, n);
    w->n += n;
    return 0;
}

void cops_write_abort(cops_writer *w)
{
    if (!w)
        return;
    fclose(w->spool);
    free(w->target);
    free(w);
}

int cops_write_commit(cops_writer *w, json_t **info, bool *created, mb_err *err)
{
    uint8_t md[crypto_hash_sha256_BYTES];
    char hex[65], line[120];
    crypto_hash_sha256_final(&w->h, md);
    hex_encode(md, sizeof md, hex);
    call k = {.method = "PUT", .target = w->target, .upload = w->spool, .upsize = w->n};
    w->target = NULL; /* run frees it */
    snprintf(line, sizeof line, "X-Checksum-Sha256: %s", *w->expect ? w->expect : hex);
    k.h = curl_slist_append(NULL, line);
    if (w->flags & FS_NO_OVERWRITE)
        k.h = curl_slist_append(k.h, "If-None-Match: *");
    int rc = fflush(w->spool) || fseek(w->spool, 0, SEEK_SET)
                 ? err_set(err, MB_EIO, "spooling an upload to another node's store failed")
                 : run(&k, w->uid, w->sid, err);
    if (rc == MB_EPRECOND && (w->flags & FS_NO_OVERWRITE))
        rc = err_set(err, MB_EEXIST, "it exists");
    if (!rc && created)
        *created = k.status == 201;
    if (!rc && info)
        *info = k.answer;
    else
        json_decref(k.answer);
    cops_write_abort(w);
    return rc;
}

/* ------------------------------------------------- a write, here or there --- */

struct kept_writer {
    fs_writer *near;
    cops_writer *far;
    uint64_t gated; /* the store whose gate the write counts in at (near, cluster mode), 0 none */
};

/* In cluster mode a write here counts in at its store's gate (a move waits for it, as for a request,
 * instead of refusing its commit at the switch). While a move's switch is under way the gate is
 * closed: a user's write then goes as a far one, spooled here and sent at commit to the store's
 * keeper through the HTTP API, where it waits at this node's gate (parked) and goes to the new keeper
 * once the switch is done. The system's own writes (u NULL) are never sent away: they are written
 * here and fail at a switch that meets their commit. */
int kept_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size, const char *expect_sha256,
                     int flags, bool far, kept_writer **w, mb_err *err)
{
    kept_writer x = {0};
    if (!far && u && cluster_enabled()) {
        if (cluster_gate_join(sid))
            x.gated = sid;
        else
            far = true;
    }
    int rc = far ? cops_write_begin(u, sid, path, expect_sha256, flags, &x.far, err)
                 : fs_write_begin(u, sid, path, expected_size, expect_sha256, flags, &x.near, err);
    if (!rc) {
        *w = xmalloc(sizeof **w);
        **w = x;
    } else if (x.gated)
        cluster_gate_leave(x.gated);
    return rc;
}

int kept_write_data(kept_writer *w, const void *buf, size_t n, mb_err *err)
{
    return w->far ? cops_write_data(w->far, buf, n, err) : fs_write_data(w->near, buf, n, err);
}

int kept_write_commit(kept_writer *w, json_t **info, bool *created, mb_err *err)
{
    int rc = w->far ? cops_write_commit(w->far, info, created, err) : fs_write_commit(w->near, info, created, err);
    if (w->gated)
        cluster_gate_leave(w->gated);
    free(w);
    return rc;
}

void kept_write_abort(kept_writer *w)
{
    if (!w)
        return;
    if (w->far)
        cops_write_abort(w->far);
    else
        fs_write_abort(w->near);
    if (w->gated)
        cluster_gate_leave(w->gated);
    free(w);
}
