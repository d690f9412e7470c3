/*
 * cluster_fwd.c — any node answers for any store (issue 23, docs/cluster.md "Requests for a
 * store kept by another node"): a request for /api/v1/stores/{sid}/... or /dav/{sid}/... whose
 * store this node does not keep (or for a tus upload another node made, or a share link to such a
 * store) is forwarded to the node that does (the store's placement record sp/<sid16>,
 * the node's address from the membership view), streaming both ways: the request body as it
 * arrives, the answer (status, headers, body) as the other node sends it. Accounts and tokens
 * are cluster-wide, so the keeping node authorizes the request itself.
 *
 * One forwarded request is one `fwd`: a thread runs its libcurl transfer; the request body
 * passes through a bounded buffer, the answer through another (the curl thread waits while it is
 * full). libmicrohttpd's thread never waits for the other node: while the body buffer is full,
 * until the answer's headers are in and while the answer buffer is empty, the connection is
 * suspended and the curl thread resumes it, as http_sse.c does. (A worker of the thread pool
 * serves many connections; one that waited for the other node could hold up the very request
 * that node had forwarded here on a kept-alive connection of that worker, each node then waiting
 * for the other until a timeout: the owner-kill failover test met it.) Two references: the
 * thread's and libmicrohttpd's (dropped when the answer is freed, or at abort).
 * A forwarded request carries X-MByte-Forwarded: a node never forwards it again (no loops).
 */
#include "http_int.h"
#include <curl/curl.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BUF_MAX (1u << 20) /* each direction's buffer */
#define FWD_HEADER "X-MByte-Forwarded"
#define USER_HEADER "X-MByte-Forwarded-User"
#define ANSWER_WAIT_S 300 /* for the keeping node's answer once the whole body was handed on */
#define VOUCH_SKEW 120 /* seconds a signed user may be old (or ahead: clocks differ a little) */

/* A byte buffer one side fills and the other drains (the fwd's mutex held). */
typedef struct bbuf {
    char *p;
    size_t len, off, cap;
} bbuf;

static size_t bb_used(const bbuf *b) { return b->len - b->off; }

static void bb_put(bbuf *b, const char *data, size_t n)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap && b->off) { /* move what is left to the front first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        b->cap = b->len + n > 65536 ? b->len + n : 65536;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static size_t bb_take(bbuf *b, char *out, size_t max)
{
    size_t n = bb_used(b) < max ? bb_used(b) : max;
    memcpy(out, b->p + b->off, n);
    b->off += n;
    return n;
}

typedef struct fwd {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    struct MHD_Connection *conn;
    char node[64], url[4400];
    CURL *c;
    struct curl_slist *out_hdrs;
    bool upload;
    bbuf in; /* request body: libmicrohttpd -> curl */
    bool in_done;
    /* answer: curl -> libmicrohttpd */
    long status;
    uint64_t length; /* the answer's Content-Length (MHD_SIZE_UNKNOWN: none) */
    json_t *headers; /* [[name, value]...], without those skipped() names */
    bool headers_done;
    bbuf out; /* answer body: curl -> libmicrohttpd */
    bool out_done, failed, aborted, suspended; /* suspended: the connection, by us (any phase) */
    int64_t in_done_ms; /* when the whole body was handed on (the wait for the answer starts) */
    char why[256];
} fwd;

/* One connection cache for every forwarded request (libcurl's share interface): a request to a
 * node reuses a kept-alive connection to it instead of opening one each time. */
static pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
static CURLSH *share;
static pthread_once_t share_once = PTHREAD_ONCE_INIT;

static void share_lock(CURL *c, curl_lock_data d, curl_lock_access a, void *u)
{
    (void)c, (void)a, (void)u;
    pthread_mutex_lock(&share_mu[d]);
}

static void share_unlock(CURL *c, curl_lock_data d, void *u)
{
    (void)c, (void)u;
    pthread_mutex_unlock(&share_mu[d]);
}

static void share_init(void)
{
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&share_mu[i], NULL);
    share = curl_share_init();
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
}

static _Atomic int live; /* fwd objects not yet freed: each holds an easy handle on the share */

void cluster_fwd_fini(void)
{
    /* After the HTTP door stopped, only transfers stopping on their own hold the share. */
    for (int i = 0; i < 500 && atomic_load(&live); i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (share && curl_share_cleanup(share) == CURLSHE_OK)
        share = NULL;
}

static void fwd_unref(fwd *f)
{
    pthread_mutex_lock(&f->mu);
    bool last = --f->refs == 0;
    pthread_mutex_unlock(&f->mu);
    if (!last)
        return;
    cluster_fwd_handle_free(f->c);
    curl_slist_free_all(f->out_hdrs);
    json_decref(f->headers);
    free(f->in.p);
    free(f->out.p);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* Suspend f's connection until the curl thread resumes it (f->mu held). Never twice in a row:
 * libmicrohttpd 0.9.75 goes on handing a chunked body's next chunk to the handler after it
 * suspended (process_request_body's instant retry does not look), and a second
 * MHD_suspend_connection unlinks the connection from a list it is no longer in, leaving the
 * daemon's list of suspended connections broken (MHD_stop_daemon then aborts the process). */
static void park(fwd *f)
{
    if (!f->suspended && f->conn) {
        f->suspended = true;
        MHD_suspend_connection(f->conn);
    }
}

static void wake_reader(fwd *f) /* f->mu held */
{
    pthread_cond_broadcast(&f->cv);
    if (f->suspended) {
        f->suspended = false;
        MHD_resume_connection(f->conn);
    }
}

/* ----------------------------------------------------- the curl thread --- */

static size_t on_read(char *buf, size_t sz, size_t nm, void *p)
{
    fwd *f = p;
    pthread_mutex_lock(&f->mu);
    while (!bb_used(&f->in) && !f->in_done && !f->aborted)
        pthread_cond_wait(&f->cv, &f->mu);
    size_t n = 0;
    if (f->aborted)
        n = CURL_READFUNC_ABORT;
    else if (bb_used(&f->in)) {
        n = bb_take(&f->in, buf, sz * nm);
        if (bb_used(&f->in) < BUF_MAX)
            wake_reader(f); /* room for libmicrohttpd's next piece */
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Hop-by-hop headers, and those this node's own answer sets (length, date, security). */
static bool skipped(const char *name)
{
    static const char *const skip[] = {"connection", "keep-alive", "transfer-encoding", "content-length", "date",
                                       "x-content-type-options", "referrer-policy", "x-frame-options",
                                       "content-security-policy", "upgrade", "proxy-connection", NULL};
    for (const char *const *s = skip; *s; s++)
        if (!strcasecmp(name, *s))
            return true;
    return false;
}

static size_t on_header(char *buf, size_t sz, size_t nm, void *p)
{
    fwd *f = p;
    size_t n = sz * nm, l = n;
    while (l && (buf[l - 1] == '\r' || buf[l - 1] == '\n'))
        l--;
    pthread_mutex_lock(&f->mu);
    if (l >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a status line: a new answer (after a 1xx) */
        json_array_clear(f->headers);
        f->length = MHD_SIZE_UNKNOWN;
        const char *sp = memchr(buf, ' ', l);
        f->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    } else if (l == 0) { /* the end of an answer's headers */
        if (f->status >= 200) {
            f->headers_done = true;
            wake_reader(f); /* fwd_end's parked connection */
        }
    } else {
        const char *colon = memchr(buf, ':', l);
        if (colon && colon > buf) {
            char name[128], value[8192];
            size_t nl = (size_t)(colon - buf), vo = nl + 1;
            while (vo < l && (buf[vo] == ' ' || buf[vo] == '\t'))
                vo++;
            if (nl < sizeof name && l - vo < sizeof value) {
                memcpy(name, buf, nl);
                name[nl] = 0;
                memcpy(value, buf + vo, l - vo);
                value[l - vo] = 0;
                if (!strcasecmp(name, "Content-Length") && !parse_u64(value, &f->length))
                    f->length = MHD_SIZE_UNKNOWN;
                json_t *pair = json_pack("[s,s]", name, value);
                if (pair && !skipped(name))
                    json_array_append(f->headers, pair);
                json_decref(pair);
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

static size_t on_write(char *buf, size_t sz, size_t nm, void *p)
{
    fwd *f = p;
    size_t n = sz * nm;
    pthread_mutex_lock(&f->mu);
    while (bb_used(&f->out) + n > BUF_MAX && !f->aborted)
        pthread_cond_wait(&f->cv, &f->mu);
    if (f->aborted) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    bb_put(&f->out, buf, n);
    wake_reader(f);
    pthread_mutex_unlock(&f->mu);
    return n;
}

static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    fwd *f = p;
    pthread_mutex_lock(&f->mu);
    bool stop = f->aborted;
    if (!stop && http_stop_overdue()) { /* the server stops: a parked connection is let go */
        stop = f->failed = true;
        snprintf(f->why, sizeof f->why, "this node is stopping");
    } else if (!stop && f->in_done_ms && !f->headers_done && now_mono_ms() - f->in_done_ms > ANSWER_WAIT_S * 1000LL) {
        stop = f->failed = true; /* libcurl calls this at least once a second, bytes or not */
        snprintf(f->why, sizeof f->why, "no answer within %d s", ANSWER_WAIT_S);
    }
    pthread_mutex_unlock(&f->mu);
    return stop;
}

static void *run(void *arg)
{
    fwd *f = arg;
    CURLcode cc = curl_easy_perform(f->c);
    pthread_mutex_lock(&f->mu);
    if (cc != CURLE_OK && !f->failed) {
        f->failed = true;
        snprintf(f->why, sizeof f->why, "node %s: %s", f->node, curl_easy_strerror(cc));
    }
    f->out_done = true;
    f->headers_done = true;
    f->in_done = true;
    wake_reader(f);
    pthread_mutex_unlock(&f->mu);
    fwd_unref(f);
    return NULL;
}

/* ---------------------------------------------- the libmicrohttpd side --- */

static enum MHD_Result add_header(void *p, enum MHD_ValueKind kind, const char *name, const char *value)
{
    (void)kind;
    fwd *f = p;
    /* Host passes through: WebDAV's Destination names it, and links the other node makes use it */
    static const char *const skip[] = {"connection", "keep-alive", "transfer-encoding", "expect",
                                       "content-length", "x-forwarded-for", FWD_HEADER, USER_HEADER, NULL};
    for (const char *const *s = skip; *s; s++)
        if (!strcasecmp(name, *s))
            return MHD_YES;
    char line[9000];
    if ((size_t)snprintf(line, sizeof line, "%s: %s", name, value ? value : "") < sizeof line)
        f->out_hdrs = curl_slist_append(f->out_hdrs, line);
    return MHD_YES;
}

static int fwd_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    (void)req, (void)err;
    fwd *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (!f->out_done && !f->aborted) { /* else the other node has answered already: dropped */
        bb_put(&f->in, buf, len);
        pthread_cond_broadcast(&f->cv);
        if (bb_used(&f->in) >= BUF_MAX) /* full: no more until the curl thread took some (on_read) */
            park(f); /* a chunk libmicrohttpd still hands on is kept: at most its read buffer more */
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    fwd *f = cls;
    pthread_mutex_lock(&f->mu);
    ssize_t n = 0;
    if (bb_used(&f->out)) {
        n = (ssize_t)bb_take(&f->out, buf, max);
        pthread_cond_broadcast(&f->cv); /* room for the curl thread */
    } else if (f->out_done)
        n = f->failed ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    else /* nothing yet: park the connection until the curl thread has more */
        park(f);
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* libmicrohttpd is done with the request (client served or gone): the transfer stops if it still
 * runs, and the connection, which may carry another request by now, is never resumed from here. */
static void forget(fwd *f)
{
    pthread_mutex_lock(&f->mu);
    f->aborted = true;
    f->suspended = false;
    f->conn = NULL;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    fwd_unref(f);
}

static void answer_freed(void *cls) { forget(cls); }

/* The answer of f (its transfer running), once the body was handed on: while its headers have
 * not come, the connection is suspended and HTTP_STREAM_LATER returned (the curl thread resumes
 * it, and http.c calls this again; on_progress ends a transfer with no answer in ANSWER_WAIT_S).
 * No libmicrohttpd worker ever waits here for another node: the node asked may be waiting for
 * this worker (a request it forwarded here, on a kept-alive connection this worker serves). */
static int fwd_end(mb_req *req, void *ctx, mb_err *err)
{
    fwd *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (!f->in_done) {
        f->in_done = true;
        f->in_done_ms = now_mono_ms();
        pthread_cond_broadcast(&f->cv);
    }
    if (!f->headers_done) {
        park(f);
        pthread_mutex_unlock(&f->mu);
        return HTTP_STREAM_LATER;
    }
    bool failed = f->failed && f->status < 200;
    char why[sizeof f->why];
    snprintf(why, sizeof why, "%s", f->why);
    long status = f->status;
    uint64_t size = f->length;
    if (failed)
        f->conn = NULL; /* answered here: the curl thread has nothing to resume */
    size_t i;
    json_t *h;
    char node[sizeof f->node];
    snprintf(node, sizeof node, "%s", f->node);
    pthread_mutex_unlock(&f->mu);
    if (failed) {
        fwd_unref(f); /* libmicrohttpd's reference: no answer of its own holds it */
        return err_set(err, MB_EBUSY, "the store is kept by node %s, which did not answer (%s)", node, why);
    }
    struct MHD_Response *r = MHD_create_response_from_callback(size, 65536, reader, f, answer_freed);
    pthread_mutex_lock(&f->mu);
    json_array_foreach(f->headers, i, h)
        MHD_add_response_header(r, json_string_value(json_array_get(h, 0)), json_string_value(json_array_get(h, 1)));
    pthread_mutex_unlock(&f->mu);
    http_set_response(req, (int)status, r);
    return 0;
}

static void fwd_abort(mb_req *req, void *ctx)
{
    (void)req;
    forget(ctx);
}

static const http_stream_ops fwd_ops = {NULL, fwd_data, fwd_end, fwd_abort};

/* ------------------------------------------------------ the signed user --- */
/* The forwarding node authenticated the request; the keeping node may not know a token made a
 * moment ago yet (it comes through etcd), so the user travels signed: "<uid>.<unix time>.<hmac>"
 * with HMAC-SHA-256 under the cluster's key over "<uid>.<time>.<method> <raw target>". */
bool cluster_mac(char out[65], const void *body, size_t blen, const char *fmt, ...)
{
    uint8_t key[32], mac[crypto_auth_hmacsha256_BYTES];
    if (!cluster_kv_secret(key))
        return false;
    char head[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof head) {
        sodium_memzero(key, sizeof key);
        return false;
    }
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, sizeof key);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)head, (size_t)n);
    if (blen)
        crypto_auth_hmacsha256_update(&st, body, blen);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(key, sizeof key);
    sodium_memzero(&st, sizeof st);
    hex_encode(mac, sizeof mac, out);
    return true;
}

static bool vouch_mac(uint64_t uid, int64_t t, const char *method, const char *target, char out[65])
{
    return cluster_mac(out, NULL, 0, "%llu.%lld.%s %s", (unsigned long long)uid, (long long)t, method, target);
}

/* The signed user: `uid` for `method target` on the other node, which then authorizes the
 * request as that user without a token of its own. */
static struct curl_slist *vouch(struct curl_slist *h, uint64_t uid, const char *method, const char *target)
{
    char line[300], mac[65];
    int64_t now = now_wall();
    if (vouch_mac(uid, now, method, target, mac)) {
        snprintf(line, sizeof line, USER_HEADER ": %llu.%lld.%s", (unsigned long long)uid, (long long)now, mac);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* Add the forwarding headers to h: this node's name, the client's address and, when this node
 * can authenticate the request, the signed user for `method target` on the other node. */
static struct curl_slist *signed_user(mb_req *req, const char *method, const char *target, struct curl_slist *h)
{
    char line[300];
    const char *from = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, FWD_HEADER);
    if (from) /* forwarded once more (the store moved): the list says so, and it goes no further */
        snprintf(line, sizeof line, FWD_HEADER ": %.100s,%s", from, cluster_node_name());
    else
        snprintf(line, sizeof line, FWD_HEADER ": %s", cluster_node_name());
    h = curl_slist_append(h, line);
    snprintf(line, sizeof line, "X-Forwarded-For: %s", req->ip);
    h = curl_slist_append(h, line);
    mb_user who;
    mb_err ignored;
    return auth_request(req, &who, &ignored) == 0 ? vouch(h, who.id, method, target) : h;
}

struct curl_slist *cluster_fwd_as(struct curl_slist *h, uint64_t uid, const char *method, const char *target)
{
    char line[200];
    snprintf(line, sizeof line, FWD_HEADER ": %s", cluster_node_name());
    return vouch(curl_slist_append(h, line), uid, method, target);
}

bool cluster_fwd_url(const char *node, const char *target, char *url, size_t n)
{
    char addr[300];
    if (!cluster_node_address(node, addr, sizeof addr))
        return false;
    int k = snprintf(url, n, strchr(addr, ':') != strrchr(addr, ':') ? "http://[%s]%s" : "http://%s%s", addr, target);
    return k > 0 && (size_t)k < n;
}

void *cluster_fwd_handle(void)
{
    pthread_once(&share_once, share_init);
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    atomic_fetch_add(&live, 1);
    curl_easy_setopt(c, CURLOPT_SHARE, share);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L); /* bytes as they are */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    return c;
}

void cluster_fwd_handle_free(void *c)
{
    if (c) {
        curl_easy_cleanup(c);
        atomic_fetch_sub(&live, 1);
    }
}

bool cluster_fwd_vouched(mb_req *req, uint64_t *uid)
{
    const char *v = cluster_enabled() ? MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, USER_HEADER) : NULL;
    if (!v || req->local)
        return false;
    unsigned long long u;
    long long t;
    char got[80], want[65];
    if (sscanf(v, "%llu.%lld.%79s", &u, &t, got) != 3 || strlen(got) != 64)
        return false;
    int64_t now = now_wall();
    if (t < now - VOUCH_SKEW || t > now + VOUCH_SKEW || !vouch_mac(u, t, req->method, req->raw_uri, want))
        return false;
    if (sodium_memcmp(got, want, 64))
        return false;
    *uid = u;
    return true;
}

static bool kept_here(const char *prefix, const char *id)
{
    char key[96], *v = NULL;
    snprintf(key, sizeof key, "%s%.64s", prefix, id);
    bool here = db_get(key, strlen(key), &v, NULL) == 0;
    free(v);
    return here;
}

/* The store a tus creation is for: Upload-Metadata's "store" (base64 of its id), or 0. */
static uint64_t upload_store(mb_req *req)
{
    const char *m = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Upload-Metadata");
    for (const char *p = m; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!strncmp(p, "store ", 6)) {
            const char *v = p + 6, *end = strchr(v, ',');
            size_t vl = end ? (size_t)(end - v) : strlen(v), got = 0;
            char out[32];
            uint64_t sid = 0;
            if (vl < 40 && !sodium_base642bin((unsigned char *)out, sizeof out - 1, v, vl, NULL, &got, NULL,
                                              sodium_base64_VARIANT_ORIGINAL)) {
                out[got] = 0;
                parse_u64(out, &sid);
            }
            return sid;
        }
        p = strchr(p, ',');
    }
    return 0;
}

/* The store a share link's token opens (the sharing module's records, cluster-wide: the
 * SHA-256 of the token names the share, the share its store), or 0. */
/* The store of the sharing module's share record `id` (cluster-wide), 0 for none. */
static uint64_t share_store(const char *id, size_t n)
{
    char key[96];
    snprintf(key, sizeof key, "m/sharing/s/%.*s", (int)(n < 32 ? n : 32), id);
    json_t *share = NULL;
    uint64_t sid = db_get_json(key, &share) == 0 && jint(share, "store") > 0 ? (uint64_t)jint(share, "store") : 0;
    json_decref(share);
    return sid;
}

static uint64_t link_store(const char *token)
{
    uint8_t h[crypto_hash_sha256_BYTES];
    char hex[65], key[96], *id = NULL;
    size_t n;
    crypto_hash_sha256(h, (const uint8_t *)token, strlen(token));
    hex_encode(h, sizeof h, hex);
    snprintf(key, sizeof key, "m/sharing/t/%s", hex);
    if (db_get(key, strlen(key), &id, &n))
        return 0;
    uint64_t sid = share_store(id, n);
    free(id);
    return sid;
}

/* Where req should be answered: 1 with the node (another) that keeps what it names, 0 when this
 * node answers it (it keeps it, or nobody does, or it names no store). What names a store:
 * /api/v1/stores/{sid}..., /dav/{sid}... (a store named by its id), a tus creation for a store
 * (POST /api/v1/uploads, Upload-Metadata "store"), /api/v1/uploads/{id} (the node that made
 * the upload), a share link /api/v1/public/{token}... (the link's store), a user share
 * /api/v1/shared/{id}... (its store), a task /api/v1/tasks/{id}... (the node its id names) and a
 * search of one store, /api/v1/search?store={sid} (the keeper's index). */
static int fwd_target(mb_req *req, char *node, size_t n, uint64_t *sid)
{
    *sid = 0;
    bool api = req->nsegs >= 3 && !strcmp(req->segs[0], "api") && !strcmp(req->segs[1], "v1");
    if (api && !strcmp(req->segs[2], "uploads")) {
        if (req->nsegs >= 4) /* an upload in progress */
            return !kept_here("up/", req->segs[3]) && cluster_upload_node(req->segs[3], node, n) &&
                   strcmp(node, cluster_node_name());
        if (strcmp(req->method, "POST") || !(*sid = upload_store(req)))
            return 0;
    } else if (api && req->nsegs >= 4 && !strcmp(req->segs[2], "tasks")) { /* made by the node its id names */
        uint64_t id, number;
        if (!parse_u64(req->segs[3], &id) || !(number = id >> CLUSTER_ID_BITS) ||
            number == cluster_id_base() >> CLUSTER_ID_BITS)
            return 0;
        if (!cluster_node_numbered(number, node, n))
            snprintf(node, n, "number %llu", (unsigned long long)number); /* not up: 503 below */
        return 1;
    } else if (api && req->nsegs >= 4 && !strcmp(req->segs[2], "stores")) {
        if (!parse_u64(req->segs[3], sid))
            return 0;
    } else if (api && req->nsegs == 7 && !strcmp(req->segs[2], "admin") && !strcmp(req->segs[3], "cluster") &&
               !strcmp(req->segs[4], "stores") && !strcmp(req->segs[6], "move")) { /* asked of its keeper */
        if (!parse_u64(req->segs[5], sid))
            return 0;
    } else if (api && req->nsegs >= 4 && !strcmp(req->segs[2], "shared")) { /* a user share: its store's */
        if (!(*sid = share_store(req->segs[3], strlen(req->segs[3]))))
            return 0;
    } else if (api && req->nsegs >= 4 && !strcmp(req->segs[2], "public")) {
        if (!(*sid = link_store(req->segs[3])))
            return 0;
    } else if (req->nsegs >= 2 && !strcmp(req->segs[0], "dav")) {
        if (!parse_u64(req->segs[1], sid))
            return 0;
    } else if (api && req->nsegs == 3 && !strcmp(req->segs[2], "search")) { /* one store's: its keeper's index */
        const char *st = http_req_query(req, "store");
        if (!st || !parse_u64(st, sid))
            return 0;
    } else
        return 0;
    /* the placement decides: a replica has the store's records too, but only its owner serves it; a
     * placement that has not reached this node yet (a replica's copy) is asked of etcd once */
    if (!cluster_store_node(*sid, node, n)) { /* only for a copy here: a made-up id asks etcd nothing */
        char key[20];
        id_key(key, sizeof key, "s", *sid);
        char *v = NULL;
        if (db_get(key, strlen(key), &v, NULL) == 0) {
            id_key(key, sizeof key, "sp", *sid);
            cluster_kv_fetch(key);
        }
        free(v);
    }
    return cluster_store_node(*sid, node, n) && strcmp(node, cluster_node_name());
}

/* ------------------------------------------------------------- the gate --- */
/* A store moving to another node (cluster_place.c's move) is switched over only once no request
 * this node serves for it is under way. A request that arrives meanwhile is parked: its connection
 * is suspended (it holds none of libmicrohttpd's threads, which serve the other connections,
 * among them the requests the switch waits for) and resumed when the gate opens; it then looks
 * again where the store is. One that finds the gate closed once more gets 503. */
typedef struct gate {
    uint64_t sid;
    int inside;   /* requests served here for it, under way */
    bool closing; /* a switch waits for inside to reach 0; newcomers are parked until it opens */
    struct MHD_Connection **parked;
    size_t nparked, cap;
} gate;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gate *g;
    size_t n, cap;
    bool released; /* stopping: nothing parks */
} gates = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static gate *gate_find(uint64_t sid, bool make)
{
    for (size_t i = 0; i < gates.n; i++)
        if (gates.g[i].sid == sid)
            return &gates.g[i];
    if (!make)
        return NULL;
    if (gates.n == gates.cap) {
        gates.cap = gates.cap ? gates.cap * 2 : 16;
        gates.g = xrealloc(gates.g, gates.cap * sizeof *gates.g);
    }
    gates.g[gates.n] = (gate){.sid = sid};
    return &gates.g[gates.n++];
}

static void gate_tidy(gate *g)
{
    if (!g->inside && !g->closing && !g->nparked) {
        free(g->parked);
        *g = gates.g[--gates.n];
    }
}

/* Resume what waits at g (gates.mu held). */
static void gate_unpark(gate *g)
{
    for (size_t i = 0; i < g->nparked; i++)
        MHD_resume_connection(g->parked[i]);
    g->nparked = 0;
}

/* 0: counted in (leave once the request ends); CLUSTER_PARKED: suspended until the gate opens
 * (called from the request's first call of the handler, as libmicrohttpd allows); < 0: the gate
 * is closed and the request was parked once already, or the server stops: err. */
static int gate_enter(mb_req *req, uint64_t sid, mb_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&gates.mu);
    gate *g = gate_find(sid, true);
    if (!g->closing)
        g->inside++;
    else if (req->was_parked || gates.released) {
        http_reply_header(req, "Retry-After", "1");
        rc = err_set(err, MB_EBUSY, "store %llu is moving to another node; try again in a moment", (unsigned long long)sid);
    } else {
        if (g->nparked == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 8;
            g->parked = xrealloc(g->parked, g->cap * sizeof *g->parked);
        }
        g->parked[g->nparked++] = req->conn;
        req->parked = req->was_parked = true;
        MHD_suspend_connection(req->conn);
        rc = CLUSTER_PARKED;
    }
    pthread_mutex_unlock(&gates.mu);
    return rc;
}

void cluster_gate_release_all(void)
{
    pthread_mutex_lock(&gates.mu);
    gates.released = true;
    for (size_t i = 0; i < gates.n; i++)
        gate_unpark(&gates.g[i]);
    pthread_mutex_unlock(&gates.mu);
}

bool cluster_gate_join(uint64_t sid)
{
    pthread_mutex_lock(&gates.mu);
    gate *g = gate_find(sid, true);
    /* A write inside a request that is counted at this gate already (a WebDAV LOCK that makes a new
     * file, its body read after the close began) joins it too: the switch waits for that request
     * anyway. Sent away instead (a far write, through this node's HTTP door), it met the closed gate
     * behind its own request, and the request failed with 503. */
    bool in = !g->closing || (http_serving && http_serving->gate == sid);
    if (in)
        g->inside++;
    pthread_mutex_unlock(&gates.mu);
    return in;
}

void cluster_gate_leave(uint64_t sid)
{
    pthread_mutex_lock(&gates.mu);
    gate *g = gate_find(sid, false);
    if (g && g->inside > 0) {
        g->inside--;
        gate_tidy(g);
        pthread_cond_broadcast(&gates.cv);
    }
    pthread_mutex_unlock(&gates.mu);
}

int cluster_gate_close(uint64_t sid, int64_t ms)
{
    struct timespec ts;
    wait_deadline(&ts, CLOCK_REALTIME, ms);
    pthread_mutex_lock(&gates.mu);
    gate *g = gate_find(sid, true);
    g->closing = true;
    int left = g->inside;
    while ((g = gate_find(sid, false)) && g->inside && pthread_cond_timedwait(&gates.cv, &gates.mu, &ts) == 0)
        ;
    left = g ? g->inside : 0;
    pthread_mutex_unlock(&gates.mu);
    return left;
}

void cluster_gate_open(uint64_t sid)
{
    pthread_mutex_lock(&gates.mu);
    gate *g = gate_find(sid, false);
    if (g) {
        g->closing = false;
        gate_unpark(g);
        gate_tidy(g);
    }
    pthread_mutex_unlock(&gates.mu);
}

/* Forward req (its method, headers and body) to `target` on `node` (at addr), as the user req
 * authenticated or, with uid, as that user: the fwd with its transfer running (two references:
 * the thread's and the answer's), or NULL with err. */
static fwd *fwd_start(mb_req *req, const char *node, const char *addr, const char *target, uint64_t uid, mb_err *err)
{
    fwd *f = xcalloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->refs = 2;
    f->conn = req->conn;
    f->headers = json_array();
    f->length = MHD_SIZE_UNKNOWN;
    snprintf(f->node, sizeof f->node, "%s", node);
    snprintf(f->url, sizeof f->url, strchr(addr, ':') != strrchr(addr, ':') ? "http://[%s]%s" : "http://%s%s", addr,
             target);
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, add_header, f);
    f->out_hdrs = uid ? cluster_fwd_as(f->out_hdrs, uid, req->method, target)
                      : signed_user(req, req->method, target, f->out_hdrs);
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    uint64_t len = 0;
    f->upload = (cl && parse_u64(cl, &len) && len > 0) || te;
    CURL *c = f->c = cluster_fwd_handle();
    curl_easy_setopt(c, CURLOPT_URL, f->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    if (!strcmp(req->method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (f->upload) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, f);
        if (cl)
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
        f->out_hdrs = curl_slist_append(f->out_hdrs, "Expect:"); /* no 100-continue round trip */
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->out_hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
    pthread_t th;
    if (pthread_create(&th, NULL, run, f)) {
        f->refs = 1;
        fwd_unref(f);
        err_set(err, MB_EBUSY, "cannot forward the request to node %s now", node);
        return NULL;
    }
    pthread_detach(th);
    return f;
}

/* Hand req on to `node` (`what` names what it keeps, for the error), asking for `target` as user uid
 * or, with 0, as req authenticated: req->stream is the forward from now on. MB_EBUSY when the node
 * is not up. */
static int hand_on(mb_req *req, const char *node, const char *what, const char *target, uint64_t uid, mb_err *err)
{
    char addr[300];
    if (!cluster_node_address(node, addr, sizeof addr))
        return err_set(err, MB_EBUSY, "%s is kept by node %s, which is not up now; try again later", what, node);
    fwd *f = fwd_start(req, node, addr, target, uid, err);
    if (!f)
        return err->code;
    req->stream = &fwd_ops;
    req->sctx = f;
    log_debug("forwarding %s %s to node %s", req->method, req->path, node);
    return 0;
}

int cluster_fwd_begin(mb_req *req, mb_err *err)
{
    const char *from = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, FWD_HEADER);
    char node[64], what[40];
    uint64_t sid;
    int found = fwd_target(req, node, sizeof node, &sid);
    const char *last = from ? strrchr(from, ',') : NULL;
    last = last ? last + 1 : from;
    if (found > 0 && sid && last && !strcmp(last, node)) {
        /* the node this placement names sent it here: one of the two is behind (a store moved a
         * moment ago); etcd knows which */
        char key[20];
        id_key(key, sizeof key, "sp", sid);
        if (cluster_kv_fetch(key))
            found = fwd_target(req, node, sizeof node, &sid);
    }
    if (found == 0 && sid) { /* served here: counted in at its gate, or parked there */
        cluster_store_ready(sid);
        int g = gate_enter(req, sid, err);
        if (g == 0)
            req->gate = sid; /* left when the request ends (http_on_completed) */
        return g;
    }
    if (found <= 0 || (from && strchr(from, ',')))
        return 0; /* served here (a forwarded request is forwarded once more at most), or nowhere: a 404 */
    if (sid)
        snprintf(what, sizeof what, "store %llu", (unsigned long long)sid);
    else
        snprintf(what, sizeof what, "this %s", strcmp(req->segs[2], "tasks") ? "upload" : "task");
    return hand_on(req, node, what, req->raw_uri, 0, err) ? err->code : 1;
}

int cluster_fwd_file(mb_req *req, uint64_t uid, uint64_t sid, const char *target, mb_err *err)
{
    char node[64], what[40];
    if (!cluster_store_node(sid, node, sizeof node))
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    snprintf(what, sizeof what, "store %llu", (unsigned long long)sid);
    return hand_on(req, node, what, target, uid, err); /* the handler returns unanswered: http.c calls fwd_end */
}

int cluster_fwd_store(mb_req *req, uint64_t sid, mb_err *err)
{
    char node[64], what[40];
    if (!req->in_begin || req->replied || req->sink || req->stream ||
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, FWD_HEADER) || !cluster_store_node(sid, node, sizeof node) ||
        !strcmp(node, cluster_node_name())) {
        cluster_store_ready(sid);
        return 0; /* kept here, or came from another node (a store moved a moment ago): the module's calls */
    }
    snprintf(what, sizeof what, "store %llu", (unsigned long long)sid);
    return hand_on(req, node, what, req->raw_uri, 0, err) ? err->code : 1; /* the credentials travel as sent */
}

/* ------------------------------------------------- the list of stores --- */

static size_t to_mem(char *buf, size_t sz, size_t nm, void *p)
{
    FILE *f = p;
    return ftell(f) + sz * nm > BUF_MAX ? 0 : fwrite(buf, 1, sz * nm, f);
}

/* GET path on `node` as user uid, marked as forwarded so that node answers from its own data
 * only: the parsed JSON answer, or NULL. */
/* cluster_fwd_ask, with req's own credentials (Authorization, Cookie) besides the signed user
 * when the call is made for a request (the other node may know a token the signature cannot
 * vouch for yet: an account made a moment ago reaches it with its token). */
static json_t *ask_for(mb_req *req, uint64_t uid, const char *node, const char *path)
{
    char url[600], line[9000];
    if (!cluster_fwd_url(node, path, url, sizeof url))
        return NULL;
    struct curl_slist *h = NULL;
    static const char *const pass[] = {"Authorization", "Cookie", NULL};
    for (const char *const *n = pass; req && *n; n++) {
        const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, *n);
        if (v && (size_t)snprintf(line, sizeof line, "%s: %s", *n, v) < sizeof line)
            h = curl_slist_append(h, line);
    }
    h = cluster_fwd_as(h, uid, "GET", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CURL *c = cluster_fwd_handle();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_mem);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    cluster_fwd_handle_free(c);
    curl_slist_free_all(h);
    fclose(f);
    json_t *j = cc == CURLE_OK && status == 200 ? json_loadb(buf, len, 0, NULL) : NULL;
    if (!j)
        log_warn("cluster: node %s did not answer %s (%s, HTTP %ld)", node, path,
                 cc ? curl_easy_strerror(cc) : "answered", status);
    free(buf);
    return j;
}

json_t *cluster_fwd_ask(uint64_t uid, const char *node, const char *path) { return ask_for(NULL, uid, node, path); }

static void stores_far(mb_req *req, uint64_t uid, json_t *list);

void cluster_fwd_stores(mb_req *req, uint64_t uid, json_t *list)
{
    if (cluster_enabled() && !MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, FWD_HEADER))
        stores_far(req, uid, list);
}

json_t *cluster_fwd_nodes(mb_req *req)
{
    if (!cluster_enabled() || MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, FWD_HEADER))
        return NULL;
    json_t *view = cluster_view(), *n, *out = json_array();
    size_t i;
    json_array_foreach(json_object_get(view, "nodes"), i, n)
    {
        if (strcmp(jstr(n, "name"), cluster_node_name()))
            json_array_append_new(out, json_string(jstr(n, "name")));
    }
    json_decref(view);
    return out;
}

json_t *cluster_fwd_ask_for(mb_req *req, uint64_t uid, const char *node, const char *target)
{
    return ask_for(req, uid, node, target);
}

bool cluster_fwd_gather(mb_req *req, uint64_t uid, const char *target, size_t limit, json_t *into, bool *more)
{
    json_t *nodes = cluster_fwd_nodes(req), *n;
    size_t i;
    json_array_foreach(nodes, i, n)
    {
        json_t *theirs = ask_for(req, uid, json_string_value(n), target);
        if (json_is_array(theirs)) {
            *more = *more || json_array_size(theirs) >= limit;
            json_array_extend(into, theirs);
        }
        json_decref(theirs);
    }
    json_decref(nodes);
    return nodes != NULL;
}

void cluster_stores_far(uint64_t uid, json_t *list) { stores_far(NULL, uid, list); }

static void stores_far(mb_req *req, uint64_t uid, json_t *list)
{
    if (!cluster_enabled())
        return;
    if (!json_array_size(list)) /* an account made on another node a moment ago: its Home's placement */
        cluster_kv_catch_up(1000);
    json_t *nodes = cluster_kv_user_nodes(uid), *n;
    size_t i, k;
    json_array_foreach(nodes, i, n)
    {
        json_t *theirs = ask_for(req, uid, json_string_value(n), "/api/v1/stores"), *st;
        json_array_foreach(theirs, k, st)
        {
            char where[64];
            uint64_t sid = (uint64_t)jint(st, "id");
            if (cluster_store_node(sid, where, sizeof where) && !strcmp(where, json_string_value(n)))
                json_array_append(list, st); /* kept there: not a Home it made for itself */
        }
        json_decref(theirs);
    }
    json_decref(nodes);
}
