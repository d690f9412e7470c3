/*
 * modules/rclone — blob backends through `rclone rcd`'s remote-control API (issue 21), so any
 * service rclone speaks (Google Drive, Dropbox, OneDrive, SFTP, WebDAV...) can hold a store's
 * chunks.
 *
 * conf.d/rclone.yaml declares backends by name (`backends: {<name>: {remote, prefix}}`, remote
 * an rclone remote with its path, "gdrive:mbyte", or a local path); init registers each with the
 * kernel (api->backend_register), and a store placed on it ({"placement": {"backend": "<name>"}})
 * keeps its chunks there as objects <remote>/<prefix><aa>/<sha256> (aa: the hash's first two
 * characters; an encrypted store's keyed names "e/<hex>" become <prefix>e/<aa>/<hex>), the
 * webdav backends' layout. The remotes themselves are rclone's: in the rclone.conf that
 * `config` names (or rclone's default one), or in RCLONE_CONFIG_<NAME>_* variables.
 *
 * rcd: with `url` empty, the module starts `rclone rcd` on a free loopback port and keeps it
 * running (rcd.c: a random rc password in its environment, restarted with a backoff when it
 * dies, stopped by fini); with `url`, it talks to an rcd someone else runs (`user` and
 * `password`, which may be secret references), which must have been started with --rc-serve.
 * The rc calls used (all POST with a JSON body, answers JSON; rclone v1.60's documented API):
 *
 *   put   operations/uploadfile?fs=<remote>&remote=<prefix><aa> (multipart/form-data, the
 *         chunk as one part named by its hash); 0 only on a 200, which rcd sends once the
 *         remote has the object: the kernel commits a version only after every chunk of it was
 *         put, so an acknowledged upload is on the remote. An rcd killed during it can leave a
 *         cut-short object under the chunk's name (the local remote writes in place): the
 *         kernel's put asks stat first and puts again when the size differs, and the
 *         collector takes it as an orphan otherwise.
 *   get   GET /[<remote>]/<prefix><aa>/<sha256> with Range (--rc-serve): only the bytes asked
 *         for travel. A 404 is checked with stat: an rcd without --rc-serve answers 404 for
 *         everything, which must not read as a lost chunk.
 *   stat / has   operations/stat (opt filesOnly): Size and ModTime, "item": null when missing.
 *   del   operations/deletefile (404 is success).
 *   list  operations/list of <prefix> (dirsOnly) for its aa/ directories, then of each
 *         (filesOnly); an answer is read whole up to 16 MiB (about 80,000 chunks per aa/)
 *         and parsed with jansson (rc_util.c, fuzzed).
 *
 * Retries: a connection error, a 5xx or a 429 is tried again up to `retries` times, with
 * exponential backoff from `retry_base_ms` and jitter (modules/httppool.c); anything else
 * is final (401: the rc user or password is wrong, said so). After the last attempt the caller
 * gets MB_EIO and an upload fails: nothing is acknowledged. Redirects are never followed.
 * The rc password is never logged, put in an error or on a command line.
 *
 * Threads: backend calls come from HTTP workers, upload threads and task workers, never the
 * loop thread (they block on the network). The rcd URL changes when the supervisor starts rcd
 * anew (another port): it is read under `mu`. The handle pool has its own mutex. fini stops
 * the supervisor once no backend call is in flight (the kernel drained the module).
 */
#include "httppool.h"
#include "mbyte.h"
#include "rc_util.h"
#include "rcd.h"
#include <curl/curl.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RC_VERSION "1.0.0"
#define URL_MAX 4096
#define SECRET_MAX 512
#define PATH_LEN 1024 /* <prefix><dir><aa>/<base>: a prefix of 200 and a name of 200 at most */

typedef struct rcmod rcmod;

typedef struct rcb {
    rcmod *mod;
    char *name;
    char *remote; /* the fs string: "gdrive:mbyte", "/srv/chunks" */
    char *prefix; /* "" or segments ending in '/' */
} rcb;

struct rcmod {
    mb_module *self;
    const mb_api *api;
    pthread_rwlock_t mu; /* url: the supervisor moves rcd to another port on a restart */
    char url[256];       /* http[s]://host:port, no trailing '/' */
    char user[SECRET_MAX], password[SECRET_MAX];
    int retries;
    long retry_base_ms, timeout_ms, connect_timeout_ms;
    hp_pool pool;
    rcb **b;
    size_t nb;
    rcd_sup *sup; /* NULL when talking to an rcd that someone else runs */
};

static void url_set(void *ud, const char *url)
{
    rcmod *m = ud;
    pthread_rwlock_wrlock(&m->mu);
    snprintf(m->url, sizeof m->url, "%s", url);
    pthread_rwlock_unlock(&m->mu);
}

/* ------------------------------------------------------------- requests --- */

typedef struct rreq {
    const char *what;   /* for messages: the rc call, or "GET" of an object */
    const char *method; /* POST or GET */
    const char *path;   /* after the url, with its leading '/', already encoded */
    const char *json;   /* POST: the body */
    /* put: one multipart part named `file` with these bytes */
    const void *part;
    size_t plen;
    const char *part_name;
    uint64_t range_off, range_len; /* GET: range_len 0: no Range */
    void *out;
} rreq;

/* One attempt. 0 with r filled (any HTTP status), or MB_EIO for a transport error. */
static int attempt(rcmod *m, const char *who, const rreq *q, hp_reply *r, mb_err *err)
{
    const mb_api *api = m->api;
    char url[URL_MAX + 300], line[96];
    char *user = malloc(2 * SECRET_MAX);
    if (!user)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    char *pw = user + SECRET_MAX;
    pthread_rwlock_rdlock(&m->mu);
    int ul = snprintf(url, sizeof url, "%s%s", m->url, q->path);
    memcpy(user, m->user, SECRET_MAX);
    memcpy(pw, m->password, SECRET_MAX);
    pthread_rwlock_unlock(&m->mu);
    int rc = 0;
    CURL *c = NULL;
    if (ul >= (int)sizeof url)
        rc = api->err_set(err, MB_EINVAL, "backend '%s': the URL is too long", who);
    else if (!(c = hp_take(&m->pool)))
        rc = api->err_set(err, MB_ENOMEM, "backend '%s': no connection handle", who);
    if (rc) {
        sodium_memzero(user, 2 * SECRET_MAX);
        free(user);
        return rc;
    }
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip per chunk */
    if (q->range_len) {
        snprintf(line, sizeof line, "Range: bytes=%llu-%llu", (unsigned long long)q->range_off,
                 (unsigned long long)(q->range_off + q->range_len - 1));
        hl = curl_slist_append(hl, line);
    }
    if (q->json)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    hp_setup(c, url, q->method, m->timeout_ms, m->connect_timeout_ms, hl, "MByte-rclone/" RC_VERSION, r, q->out,
             q->range_len);
    if (user[0]) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, pw);
    }
    hp_cursor cur = {q->part, q->plen, 0};
    curl_mime *mime = NULL;
    if (q->part_name) {
        mime = curl_mime_init(c);
        curl_mimepart *p = curl_mime_addpart(mime);
        curl_mime_name(p, "file");
        curl_mime_filename(p, q->part_name);
        curl_mime_type(p, "application/octet-stream");
        curl_mime_data_cb(p, (curl_off_t)q->plen, hp_cursor_read, hp_cursor_seek, NULL, &cur);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    } else if (q->json) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->json);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(q->json));
    }
    char cerr[CURL_ERROR_SIZE];
    CURLcode cc = hp_perform(&m->pool, c, hl, r, cerr);
    curl_mime_free(mime);
    sodium_memzero(user, 2 * SECRET_MAX);
    free(user);
    if (cc != CURLE_OK)
        return api->err_set(err, MB_EIO, "backend '%s': %s: rcd did not answer: %s", who, q->what, cerr);
    return 0;
}

/* rcd's error answers say why in "error" (a remote missing from the config, the service's own
 * refusal): ": <that>" into out, "" when there is none. Never a secret of ours: rcd does not
 * echo its auth. */
static void why_of(const hp_reply *r, char *out, size_t n)
{
    json_t *doc = r->body.fixed || !r->body.buf ? NULL : json_loadb(r->body.buf, r->body.len, 0, NULL);
    const char *why = json_string_value(json_object_get(doc, "error"));
    snprintf(out, n, "%s%s", why ? ": " : "", why ? why : "");
    json_decref(doc);
}

typedef struct call {
    rcmod *m;
    const char *who;
    const rreq *q;
    hp_reply *r;
} call;

/* One try for hp_retry: 0 with a final answer, non-zero for a transport error, a 5xx or a 429. */
static int once(void *ctx, mb_err *err)
{
    call *k = ctx;
    int rc = attempt(k->m, k->who, k->q, k->r, err);
    if (rc || (k->r->status < 500 && k->r->status != 429))
        return rc;
    char why[320];
    why_of(k->r, why, sizeof why);
    rc = k->m->api->err_set(err, MB_EIO, "backend '%s': %s: rcd answered %ld%s", k->who, k->q->what, k->r->status,
                            why);
    hp_reply_free(k->r);
    return rc;
}

/* A request with retries: 0 with r filled with a final answer (not 5xx/429), or MB_EIO after
 * the last attempt (err says why). */
static int request(rcb *b, const rreq *q, hp_reply *r, mb_err *err)
{
    rcmod *m = b->mod;
    int tries = m->retries + 1;
    int rc = hp_retry(tries, m->retry_base_ms, once, &(call){m, b->name, q, r}, err);
    if (rc)
        m->api->log(m->self, MB_LOG_WARN, "%s (after %d attempts)", err->msg, tries);
    return rc;
}

/* A final answer that is not the one expected, worded for the person who reads it. */
static int status_error(rcb *b, const char *what, hp_reply *r, mb_err *err)
{
    long st = r->status;
    char why[320];
    why_of(r, why, sizeof why);
    hp_reply_free(r);
    const mb_api *api = b->mod->api;
    if (st == 401)
        return api->err_set(err, MB_EIO, "backend '%s': rcd refused the rc user or password (%s answered 401)",
                            b->name, what);
    if (st >= 300 && st < 400)
        return api->err_set(err, MB_EIO, "backend '%s': %s was redirected (%ld), which is not followed: check "
                                         "rclone.yaml's url", b->name, what, st);
    return api->err_set(err, MB_EIO, "backend '%s': %s answered %ld%s", b->name, what, st, why);
}

/* POST a JSON call to rcd: 0 with r holding a 200's answer (or the status in ok2, 0 for none),
 * else the reason. `in` is borrowed. */
static int rc_call(rcb *b, const char *op, json_t *in, long ok2, hp_reply *r, mb_err *err)
{
    char *body = json_dumps(in, JSON_COMPACT);
    char path[64];
    snprintf(path, sizeof path, "/%s", op);
    if (!body)
        return b->mod->api->err_set(err, MB_ENOMEM, "out of memory");
    int rc = request(b, &(rreq){.what = op, .method = "POST", .path = path, .json = body}, r, err);
    free(body);
    if (rc)
        return rc;
    if (r->status != 200 && (!ok2 || r->status != ok2))
        return status_error(b, op, r, err);
    return 0;
}

/* ------------------------------------------------------------ the layout --- */

static json_t *fs_args(const rcb *b, const char *remote)
{
    return json_pack("{s:s, s:s}", "fs", b->remote, "remote", remote);
}

/* ------------------------------------------------------------ the backend --- */

static int rc_stat(void *st, const char *key, uint64_t *size, int64_t *mtime, mb_err *err)
{
    rcb *b = st;
    char path[PATH_LEN];
    if (!hp_object_path(b->prefix, key, path, sizeof path, NULL))
        return 0; /* not a chunk name: not here */
    json_t *in = fs_args(b, path);
    json_object_set_new(in, "opt", json_pack("{s:b, s:b}", "filesOnly", 1, "noMimeType", 1));
    hp_reply r;
    int rc = rc_call(b, "operations/stat", in, 0, &r, err);
    json_decref(in);
    if (rc)
        return rc;
    int got = r.body.buf ? rcu_stat_parse(r.body.buf, r.body.len, size, mtime) : -1;
    hp_reply_free(&r);
    if (got < 0)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': the operations/stat answer is not one", b->name);
    return got;
}

static int rc_has(void *st, const char *key, mb_err *err) { return rc_stat(st, key, NULL, NULL, err); }

static int rc_put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    rcb *b = st;
    const mb_api *api = b->mod->api;
    char path[PATH_LEN], fs[3 * 512 + 1], dir[3 * PATH_LEN + 1], url[sizeof fs + sizeof dir + 64];
    const char *name;
    if (!hp_object_path(b->prefix, key, path, sizeof path, &name))
        return api->err_set(err, MB_EINVAL, "backend '%s': '%.80s' is not a chunk name", b->name, key);
    char d[PATH_LEN];
    snprintf(d, sizeof d, "%.*s", (int)(name - path - 1), path);
    if (!rcu_encode(b->remote, false, fs, sizeof fs) || !rcu_encode(d, false, dir, sizeof dir))
        return api->err_set(err, MB_EINVAL, "backend '%s': the remote is too long", b->name);
    snprintf(url, sizeof url, "/operations/uploadfile?fs=%s&remote=%s", fs, dir);
    hp_reply r;
    int rc = request(b, &(rreq){.what = "operations/uploadfile", .method = "POST", .path = url, .part = data ? data : "", .plen = len,
                                .part_name = name}, &r, err);
    if (rc)
        return rc;
    if (r.status != 200)
        return status_error(b, "operations/uploadfile", &r, err);
    hp_reply_free(&r);
    return 0;
}

static int64_t rc_get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    rcb *b = st;
    const mb_api *api = b->mod->api;
    char path[PATH_LEN], fs[3 * 512 + 1], enc[3 * PATH_LEN + 1], url[sizeof fs + sizeof enc + 16];
    if (!len)
        return 0;
    if (!hp_object_path(b->prefix, key, path, sizeof path, NULL))
        return api->err_set(err, MB_EINVAL, "backend '%s': '%.80s' is not a chunk name", b->name, key);
    if (!rcu_encode(b->remote, false, fs, sizeof fs) || !rcu_encode(path, true, enc, sizeof enc))
        return api->err_set(err, MB_EINVAL, "backend '%s': the remote is too long", b->name);
    snprintf(url, sizeof url, "/%%5B%s%%5D/%s", fs, enc);
    hp_reply r;
    int rc = request(b, &(rreq){.what = "GET", .method = "GET", .path = url, .range_off = off, .range_len = len, .out = buf}, &r,
                     err);
    if (rc)
        return rc;
    if (r.status == 401 || (r.status >= 300 && r.status < 400))
        return status_error(b, "GET", &r, err);
    if (r.status == 404) {
        mb_err se = {0};
        int there = rc_stat(st, key, NULL, NULL, &se);
        if (there > 0)
            return api->err_set(err, MB_EIO, "backend '%s': rcd does not serve objects (it must run with --rc-serve)",
                                b->name);
    }
    return hp_get_result(api, b->name, key, &r, off, err);
}

static int rc_del(void *st, const char *key, mb_err *err)
{
    rcb *b = st;
    char path[PATH_LEN];
    if (!hp_object_path(b->prefix, key, path, sizeof path, NULL))
        return 0; /* not a chunk name: nothing to remove */
    json_t *in = fs_args(b, path);
    hp_reply r;
    int rc = rc_call(b, "operations/deletefile", in, 404, &r, err);
    json_decref(in);
    if (!rc)
        hp_reply_free(&r);
    return rc;
}

static int list_one(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud)
{
    return hp_aa_entry(ud, name, size, mtime, dir);
}

/* operations/list of one directory ("" or ending in '/'): its directories at the prefix, its
 * files in an aa/ (l->aa), each handed to hp_aa_entry; a missing one is empty. */
static int list_dir(void *ctx, const char *dirpath, hp_aa_list *l, mb_err *err)
{
    rcb *b = ctx;
    bool dirs = !l->aa[0];
    char path[PATH_LEN];
    size_t pl = strlen(dirpath);
    snprintf(path, sizeof path, "%.*s", (int)(pl ? pl - 1 : 0), dirpath);
    json_t *in = fs_args(b, path);
    json_object_set_new(in, "opt", json_pack("{s:b, s:b, s:b}", dirs ? "dirsOnly" : "filesOnly", 1, "noMimeType", 1,
                                             "noModTime", dirs));
    hp_reply r;
    int rc = rc_call(b, "operations/list", in, 404, &r, err);
    json_decref(in);
    if (rc)
        return rc;
    if (r.status == 404) { /* "directory not found": nothing stored there yet */
        hp_reply_free(&r);
        return 0;
    }
    rc = r.body.buf ? rcu_list_parse(r.body.buf, r.body.len, list_one, l) : -1;
    hp_reply_free(&r);
    if (rc < 0)
        return b->mod->api->err_set(err, MB_EIO, "backend '%s': the operations/list answer is not one", b->name);
    return rc;
}

static int rc_list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    rcb *b = st;
    return hp_aa_walk(b->prefix, list_dir, b, fn, ud, err);
}

static const mb_blob_backend rc_ops = {
    .size = sizeof(mb_blob_backend),
    .name = "rclone",
    .put = rc_put,
    .get = rc_get,
    .has = rc_has,
    .del = rc_del,
    .list = rc_list,
    .stat = rc_stat,
};

/* ------------------------------------------------------------ lifecycle --- */

static void backend_free(rcb *b)
{
    if (!b)
        return;
    free(b->name);
    free(b->remote);
    free(b->prefix);
    free(b);
}

static void mod_free(rcmod *m)
{
    rcd_stop(m->sup); /* first: nothing may call into the backends after this */
    for (size_t i = 0; i < m->nb; i++)
        backend_free(m->b[i]);
    free(m->b);
    hp_pool_free(&m->pool);
    pthread_rwlock_destroy(&m->mu);
    sodium_memzero(m->password, sizeof m->password);
    free(m);
}

static int backend_parse(rcmod *m, const char *name, const json_t *o, rcb **out, mb_err *err)
{
    const mb_api *api = m->api;
    static const char *const known[] = {"remote", "prefix"};
    int rc = hp_check_keys(api, "rclone.yaml", name, o, known, sizeof known / sizeof *known, 1, NULL, err);
    if (rc)
        return rc;
    const char *remote = mb_jstr(o, "remote");
    size_t rl = strlen(remote);
    if (!rl || rl > 500 || strpbrk(remote, "\r\n"))
        return api->err_set(err, MB_EINVAL, "rclone.yaml: backends.%s.remote is an rclone remote and path "
                                            "(\"gdrive:mbyte\") or a local path, up to 500 bytes", name);
    rcb *b = calloc(1, sizeof *b);
    if (!b)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    if ((rc = hp_prefix_parse(api, "rclone.yaml", name, mb_jstr(o, "prefix"), &b->prefix, err)) != 0) {
        free(b);
        return rc;
    }
    b->mod = m;
    b->name = strdup(name);
    b->remote = strdup(remote);
    if (!b->name || !b->remote || !b->prefix) {
        backend_free(b);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    *out = b;
    return 0;
}

/* How to reach rcd: the url given, or one the module starts (rcd.c). */
static int rcd_setup(rcmod *m, const json_t *config, mb_err *err)
{
    const mb_api *api = m->api;
    const char *url = mb_jstr(config, "url"), *user = mb_jstr(config, "user"), *pw = mb_jstr(config, "password");
    if ((user && strlen(user) >= SECRET_MAX) || (pw && strlen(pw) >= SECRET_MAX))
        return api->err_set(err, MB_EINVAL, "rclone.yaml: user or password longer than %d bytes", SECRET_MAX - 1);
    if (url && url[0]) {
        size_t ul = strlen(url);
        while (ul && url[ul - 1] == '/')
            ul--;
        if ((strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || ul >= sizeof m->url ||
            strpbrk(url, " \t\r\n?#@") || strchr(strstr(url, "://") + 3, '/') != NULL)
            return api->err_set(err, MB_EINVAL, "rclone.yaml: url must be http[s]://host:port of a running rcd "
                                                "(its user and password in their own keys), or \"\" to start one");
        snprintf(m->url, sizeof m->url, "%.*s", (int)ul, url);
        snprintf(m->user, sizeof m->user, "%s", user ? user : "");
        snprintf(m->password, sizeof m->password, "%s", pw ? pw : "");
        api->log(m->self, MB_LOG_INFO, "rcd at %s%s%s", m->url, m->user[0] ? " as " : "", m->user);
        return 0;
    }
    if ((user && user[0]) || (pw && pw[0]))
        return api->err_set(err, MB_EINVAL, "rclone.yaml: user and password are an existing rcd's (with url); the "
                                            "rcd this server starts gets a random password of its own");
    /* a fresh password each start, known to this process and the child only */
    uint8_t raw[24];
    randombytes_buf(raw, sizeof raw);
    snprintf(m->user, sizeof m->user, "mbyte");
    sodium_bin2hex(m->password, sizeof m->password, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
    char dir[4096];
    const char *cfg = mb_jstr(config, "config") ? mb_jstr(config, "config") : "";
    if (snprintf(dir, sizeof dir, "%s/m", api->data_dir()) >= (int)sizeof dir - 16)
        return api->err_set(err, MB_EINVAL, "the data directory's path is too long");
    if (mkdir(dir, 0700) && errno != EEXIST)
        return api->err_set(err, MB_EIO, "cannot make %s: %s", dir, strerror(errno));
    strcat(dir, "/rclone");
    rcd_opts o = {.prog = mb_jstr(config, "rclone") ? mb_jstr(config, "rclone") : "/usr/bin/rclone",
                  .config = cfg,
                  .dir = dir,
                  .user = m->user,
                  .password = m->password,
                  .restart_base_ms = (long)mb_jint(config, "restart_base_ms"),
                  .restart_max_ms = (long)mb_jint(config, "restart_max_ms")};
    return rcd_start(api, m->self, &o, url_set, m, &m->sup, err);
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    *state = NULL;
    const json_t *bs = json_object_get(config, "backends");
    if (bs && !json_is_object(bs))
        return api->err_set(err, MB_EINVAL, "rclone.yaml: backends must be a map of names to backends");
    if (!json_object_size(bs))
        return 0; /* nothing to serve: no rcd either */
    if (api->abi_minor < 1 || !api->backend_register)
        return api->err_set(err, MB_EUNSUPP, "rclone needs a kernel with ABI 2.1 (named backends)");
    if (sodium_init() < 0)
        return api->err_set(err, MB_EIO, "libsodium cannot start");
    rcmod *m = calloc(1, sizeof *m);
    if (!m || !(m->b = calloc(json_object_size(bs), sizeof *m->b))) {
        free(m);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    m->self = self;
    m->api = api;
    pthread_rwlock_init(&m->mu, NULL);
    hp_pool_init(&m->pool, (int)mb_jint(config, "max_connections"));
    m->retries = (int)mb_jint(config, "retries");
    m->retry_base_ms = (long)mb_jint(config, "retry_base_ms");
    m->timeout_ms = (long)mb_jint(config, "timeout_ms");
    m->connect_timeout_ms = (long)mb_jint(config, "connect_timeout_ms");
    const char *name;
    json_t *o;
    int rc = 0;
    json_object_foreach((json_t *)bs, name, o) {
        if ((rc = backend_parse(m, name, o, &m->b[m->nb], err)) != 0)
            break;
        m->nb++;
    }
    if (!rc)
        rc = rcd_setup(m, config, err);
    for (size_t i = 0; !rc && i < m->nb; i++) {
        /* on a failure the kernel drops what this copy registered already */
        if ((rc = api->backend_register(self, m->b[i]->name, &rc_ops, m->b[i], err)) == 0)
            api->log(self, MB_LOG_INFO, "backend '%s': rclone remote '%s'%s%s", m->b[i]->name, m->b[i]->remote,
                     m->b[i]->prefix[0] ? " under " : "", m->b[i]->prefix);
    }
    if (rc) {
        mod_free(m);
        return rc;
    }
    *state = m;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    if (state)
        mod_free(state); /* no backend call is in flight: the kernel drained the module first */
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "backends", MB_CFG_MAP, "{}", 0, 0},
    /* how to reach rcd: url "" starts one (rclone, config, restart_*), else user and password */
    {sizeof(mb_config_key), "url", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "user", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "password", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "rclone", MB_CFG_STRING, "/usr/bin/rclone", 0, 0},
    {sizeof(mb_config_key), "config", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "restart_base_ms", MB_CFG_INT, "500", 10, 600000},
    {sizeof(mb_config_key), "restart_max_ms", MB_CFG_INT, "30000", 10, 3600000},
    {sizeof(mb_config_key), "max_connections", MB_CFG_INT, "8", 1, HP_MAX_CONNECTIONS},
    {sizeof(mb_config_key), "retries", MB_CFG_INT, "4", 0, 20},
    {sizeof(mb_config_key), "retry_base_ms", MB_CFG_INT, "200", 1, 60000},
    {sizeof(mb_config_key), "timeout_ms", MB_CFG_INT, "60000", 100, 3600000},
    {sizeof(mb_config_key), "connect_timeout_ms", MB_CFG_INT, "5000", 100, 600000},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "rclone",
    .version = RC_VERSION,
    .description = "Blob backends through rclone rcd's remote-control API (Google Drive, Dropbox, OneDrive, SFTP, "
                   "WebDAV and every other rclone remote)",
    .config = config_keys,
    .init = init,
    .fini = fini,
};
