/*
 * modules/thumbnails — thumbnails and previews, made in the background, a placeholder until
 * they are ready (issue 18, docs/thumbnails.md).
 *
 * Nothing is decoded inside mbyted. Each file goes to mbyte-thumbd (thumbd.c), a worker
 * process started per file (modules/spawn.c, shared with search) with CPU, file-size
 * and address-space limits, ImageMagick's resource limits and a coder policy this module
 * writes (only the coders it uses, every delegate off). A bomb, a bad file or a crash ends that process only: the file gets state
 * "none", the reason is kept and shown (admin status, X-Thumbnail-Reason), and the server
 * goes on answering.
 *
 * The cache is content-addressed: <data>/m/thumbnails/cache/<sha[0:2]>/<sha>-<size>.<webp|jpg>,
 * the sha being the file version's SHA-256, so a new version has new thumbnails by itself and
 * copies share theirs. Its size is capped (cache_max_mb, outside every quota); when past it
 * the least recently used files go (serving one touches its mtime) and a request for an
 * evicted one makes it again.
 *
 * kv (this module's namespace):
 *   q/<sid>/<path>   {"sha","fid"}  the durable queue: a file to make thumbnails for. Put by
 *                    the batched observer in the dispatcher's own write (so an event is never
 *                    lost nor queued twice), one key per file: a file changed many times
 *                    before the worker reached it is made once (coalesced).
 *   d/<sid>/<fid>    ""             a deleted or purged file whose thumbnails must go.
 *   f/<sid>/<fid>    sha            the content the thumbnails of a file id were made for, so
 *                    a new version or a deletion drops the old ones.
 *   t/<sha>          {"state":"ready"|"none","kind","hash","reason"}  the outcome per content.
 *   rebuild          ""             set by POST .../rebuild: the worker queues every file.
 *
 * Threads: observers, flush and done on the loop thread (they only add to the turn's write
 * and wake the workers); routes and the listing decorator on HTTP workers; `workers` threads
 * of this module's own drain the queue, each running one mbyte-thumbd at a time, and evict;
 * a worker claims a queue key before it works on it, so no two make one file. fini stops them:
 * it kills their running children (so an unload never waits for a decode) and joins them.
 * `mu` guards stop, kick, each worker's child and claim; `cache_mu` orders cache file removals
 * (eviction, purge) against moving new files in; cache_bytes and the counters are atomic.
 */
#include "mbyte.h"
#include "qread.h"
#include "sfmt.h"
#include "spawn.h"
#include "thumb_util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NSIZES 3
static const int sizes[NSIZES] = {64, 256, 1024};
static const char *const classes[] = {"image", "pdf", "text", "file"};
#define NCLASSES 4

/* The coder policy mbyte-thumbd runs under (MAGICK_CONFIGURE_PATH): everything off, then the
 * picture coders it reads and the two it writes (the last matching rule wins, so JPEG and WebP
 * get read|write in one rule). No delegate (Ghostscript, curl, ffmpeg) and
 * no indirect reads (@file), whatever the system policy says. */
static const char policy_xml[] =
    "<policymap>\n"
    "  <policy domain=\"delegate\" rights=\"none\" pattern=\"*\"/>\n"
    "  <policy domain=\"path\" rights=\"none\" pattern=\"@*\"/>\n"
    "  <policy domain=\"coder\" rights=\"none\" pattern=\"*\"/>\n"
    "  <policy domain=\"coder\" rights=\"read\" pattern=\"{PNG,GIF,TIFF,BMP,HEIC}\"/>\n"
    "  <policy domain=\"coder\" rights=\"read|write\" pattern=\"{JPEG,WEBP}\"/>\n"
    "  <policy domain=\"resource\" name=\"width\" value=\"16KP\"/>\n"
    "  <policy domain=\"resource\" name=\"height\" value=\"16KP\"/>\n"
    "  <policy domain=\"resource\" name=\"area\" value=\"64MP\"/>\n"
    "  <policy domain=\"resource\" name=\"disk\" value=\"0\"/>\n"
    "</policymap>\n";

typedef struct blob {
    char *data;
    size_t len;
} blob;

#define MAX_WORKERS 8

typedef struct th {
    mb_module *self;
    const mb_api *api;
    char dir[PATH_MAX], cache[PATH_MAX], tmp[PATH_MAX], helper[PATH_MAX];
    int64_t cache_max, mem_mb, cpu_s, timeout_s, max_input;
    blob ph[NCLASSES][NSIZES][2]; /* placeholders: class, size, [webp, jpeg]; read in init */
    atomic_llong cache_bytes;
    atomic_llong made, failed;
    struct wk {
        struct th *t;
        int idx;
        pthread_t id;
        bool on;
        pid_t child;   /* its running mbyte-thumbd, 0 when none (under mu) */
        char *claim;   /* the queue key it works on, so no other worker takes it (under mu) */
        uint64_t csid, cfid; /* the store and file id of that key (under mu) */
        qread q, dq;   /* where its reads of q/ (and, worker 0, of d/) stopped (modules/qread.h) */
    } wk[MAX_WORKERS];
    int nworkers;
    char *turn_q, *turn_d; /* the least q/ and d/ key of the observers' turn (loop thread) */
    bool stop, kick;
    pthread_mutex_t mu, cache_mu;
    pthread_cond_t cv;
} th;

static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static int64_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static void wake(th *t)
{
    pthread_mutex_lock(&t->mu);
    t->kick = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* A q/ (or, dq, d/) key was written: a worker that read past it goes back to the front. */
static void wrote(th *t, const char *key, bool dq)
{
    for (int i = 0; i < t->nworkers; i++)
        qread_wrote(dq ? &t->wk[i].dq : &t->wk[i].q, key);
}

static bool is_sha(const char *s) { return s && strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64; }

static void cache_path(th *t, char *out, size_t n, const char *sha, int size, bool webp)
{
    sfmt(out, n, "%s/%.2s/%s-%d.%s", t->cache, sha, sha, size, webp ? "webp" : "jpg");
}

static json_t *kv_json(th *t, const char *key)
{
    char *v;
    size_t n;
    mb_err e;
    if (t->api->kv_get(t->self, key, &v, &n, &e))
        return NULL;
    json_t *j = json_loadb(v, n, 0, NULL);
    free(v);
    return j;
}

static void kv_put_json(th *t, const char *key, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    mb_err e;
    if (s && t->api->kv_put(t->self, key, s, strlen(s), false, &e))
        t->api->log(t->self, MB_LOG_WARN, "cannot record %s: %s", key, e.msg);
    free(s);
}

static json_t *meta_get(th *t, const char *sha)
{
    char key[80];
    sfmt(key, sizeof key, "t/%s", sha);
    return kv_json(t, key);
}

/* Queue one file (HTTP thread or worker) unless it is queued already. */
static void enqueue(th *t, uint64_t sid, const char *path, const char *sha, uint64_t fid)
{
    size_t n = strlen(path) + 48;
    char *key = malloc(n);
    if (!key)
        return;
    sfmt(key, n, "q/%llu/%s", (unsigned long long)sid, path);
    char *had = NULL;
    size_t len;
    mb_err e;
    if (t->api->kv_get(t->self, key, &had, &len, &e)) { /* an event's entry (with the file id) stays */
        json_t *v = json_pack("{s:s, s:I}", "sha", sha, "fid", (json_int_t)fid);
        kv_put_json(t, key, v);
        json_decref(v);
        wrote(t, key, false);
    }
    free(had);
    free(key);
    wake(t);
}

/* ------------------------------------------------------------ the cache --- */

/* Remove the thumbnails of one content (all sizes, both formats). */
static void cache_drop(th *t, const char *sha)
{
    pthread_mutex_lock(&t->cache_mu);
    for (int i = 0; i < NSIZES; i++)
        for (int w = 0; w < 2; w++) {
            char p[PATH_MAX];
            struct stat st;
            cache_path(t, p, sizeof p, sha, sizes[i], w);
            if (stat(p, &st) == 0 && unlink(p) == 0)
                atomic_fetch_sub(&t->cache_bytes, (long long)st.st_size);
        }
    pthread_mutex_unlock(&t->cache_mu);
}

typedef struct cfile {
    char name[96];
    char sub[3];
    struct timespec mtime; /* nanoseconds: thumbnails made in one second still have an order */
    off_t size;
} cfile;

typedef struct cscan {
    cfile *v;
    size_t n, cap;
    long long total;
} cscan;

static void scan_cache(th *t, cscan *s)
{
    DIR *d1 = opendir(t->cache);
    struct dirent *e1, *e2;
    while (d1 && (e1 = readdir(d1))) {
        if (strlen(e1->d_name) != 2)
            continue;
        char p1[PATH_MAX];
        sfmt(p1, sizeof p1, "%s/%s", t->cache, e1->d_name);
        DIR *d2 = opendir(p1);
        while (d2 && (e2 = readdir(d2))) {
            char p2[PATH_MAX + 100];
            struct stat st;
            if (e2->d_name[0] == '.' || strlen(e2->d_name) >= 96)
                continue;
            sfmt(p2, sizeof p2, "%s/%s", p1, e2->d_name);
            if (stat(p2, &st) || !S_ISREG(st.st_mode))
                continue;
            if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 256;
                cfile *nv = realloc(s->v, cap * sizeof *nv);
                if (!nv)
                    break;
                s->v = nv, s->cap = cap;
            }
            cfile *c = &s->v[s->n++];
            sfmt(c->name, sizeof c->name, "%s", e2->d_name);
            memcpy(c->sub, e1->d_name, 3);
            c->mtime = st.st_mtim, c->size = st.st_size;
            s->total += st.st_size;
        }
        if (d2)
            closedir(d2);
    }
    if (d1)
        closedir(d1);
}

static int by_mtime(const void *a, const void *b)
{
    const cfile *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

/* Past the cap: the least recently used files go until the cache is at 90 % of it. Worker
 * thread. Returns how many files went. */
static int evict(th *t)
{
    if (atomic_load(&t->cache_bytes) <= t->cache_max)
        return 0;
    cscan s = {0};
    pthread_mutex_lock(&t->cache_mu);
    scan_cache(t, &s);
    atomic_store(&t->cache_bytes, s.total); /* the truth, whatever was counted */
    qsort(s.v, s.n, sizeof *s.v, by_mtime);
    long long goal = t->cache_max / 10 * 9;
    int gone = 0;
    for (size_t i = 0; i < s.n && atomic_load(&t->cache_bytes) > goal; i++) {
        char p[PATH_MAX + 100];
        sfmt(p, sizeof p, "%s/%s/%s", t->cache, s.v[i].sub, s.v[i].name);
        if (unlink(p) == 0) {
            atomic_fetch_sub(&t->cache_bytes, (long long)s.v[i].size);
            gone++;
        }
    }
    pthread_mutex_unlock(&t->cache_mu);
    free(s.v);
    if (gone)
        t->api->log(t->self, MB_LOG_INFO, "cache past %lld bytes: %d least recently used thumbnails removed",
                    (long long)t->cache_max, gone);
    return gone;
}

/* ------------------------------------------------------------ the worker --- */

static bool cached(th *t, const char *sha)
{
    char p[PATH_MAX];
    for (int i = 0; i < NSIZES; i++) {
        cache_path(t, p, sizeof p, sha, sizes[i], true);
        if (access(p, F_OK))
            return false;
    }
    return true;
}

/* The outcome already known for content sha (its thumbnails in the cache, or none to make), or
 * NULL: then they must be made. */
static json_t *made_already(th *t, const char *sha)
{
    json_t *old = meta_get(t, sha);
    if (old && (strcmp(jstr(old, "state") ? jstr(old, "state") : "", "none") == 0 || cached(t, sha)))
        return old;
    json_decref(old);
    return NULL;
}

/* Copy the current version of sid:path to tmp/<worker>-<sha>.in; *sha receives its content hash.
 * Unless that content's outcome is known already (*made then: another copy of the same bytes, or
 * the same version queued again): nothing is read. */
static int fetch(struct wk *w, uint64_t sid, const char *path, char sha[65], char *in, size_t inlen, json_t **made,
                 mb_err *err)
{
    th *t = w->t;
    mb_file_reader *r;
    json_t *info;
    int rc = t->api->file_open(NULL, sid, path, 0, &r, &info, err);
    if (rc)
        return rc;
    sfmt(sha, 65, "%s", jstr(info, "sha256") ? jstr(info, "sha256") : "");
    int64_t size = jint(info, "size");
    json_decref(info);
    if (!is_sha(sha) || size > t->max_input) {
        t->api->file_close(r);
        return t->api->err_set(err, MB_ETOOBIG, "larger than max_input_mb");
    }
    if ((*made = made_already(t, sha))) {
        t->api->file_close(r);
        return 0;
    }
    sfmt(in, inlen, "%s/%d-%s.in", t->tmp, w->idx, sha);
    int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        t->api->file_close(r);
        return t->api->err_set(err, MB_EIO, "cannot write %s: %s", in, strerror(errno));
    }
    static __thread char buf[1 << 16];
    uint64_t off = 0;
    int64_t n;
    while ((n = t->api->file_read(r, off, buf, sizeof buf, err)) > 0) {
        if (write(fd, buf, (size_t)n) != n) {
            rc = t->api->err_set(err, MB_EIO, "cannot write %s: %s", in, strerror(errno));
            break;
        }
        off += (uint64_t)n;
    }
    if (n < 0)
        rc = (int)n;
    close(fd);
    t->api->file_close(r);
    return rc;
}

/* Run mbyte-thumbd on `in`; its JSON line lands in *out. Returns 0 when it ran to the end
 * (exit 0 or 1), else a sentence in err (killed by a limit, crashed, timed out). */
static int run_helper(struct wk *w, const char *in, const char *prefix, json_t **out, mb_err *err)
{
    th *t = w->t;
    char outp[PATH_MAX + 8], mem[32], cfg[PATH_MAX + 16], tmpenv[PATH_MAX + 32], home[PATH_MAX + 8];
    sfmt(outp, sizeof outp, "%s.out", prefix);
    sfmt(mem, sizeof mem, "%lld", (long long)t->mem_mb);
    sfmt(cfg, sizeof cfg, "MAGICK_CONFIGURE_PATH=%s/magick", t->dir);
    sfmt(tmpenv, sizeof tmpenv, "MAGICK_TEMPORARY_PATH=%s", t->tmp);
    sfmt(home, sizeof home, "HOME=%s", t->tmp);
    char *argv[] = {t->helper, "-m", mem, (char *)in, (char *)prefix, NULL};
    char *envp[] = {cfg, tmpenv, home, "PATH=/usr/bin:/bin", "OMP_NUM_THREADS=1", "MAGICK_THREAD_LIMIT=1", NULL};
    int ofd = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (ofd < 0)
        return t->api->err_set(err, MB_EIO, "cannot write %s: %s", outp, strerror(errno));
    sp_limits lim = {.cpu_s = t->cpu_s, .wall_s = t->timeout_s, .fsize = 64 << 20, .nofile = 64};
    sp_result r;
    int rc = sp_run(t->helper, argv, envp, ofd, &lim, &(sp_owner){&t->mu, &t->stop, &w->child}, &r);
    close(ofd);
    if (rc)
        return t->api->err_set(err, MB_EIO, "cannot start %s: %s", t->helper, strerror(-rc));
    if (r.stopped)
        return t->api->err_set(err, MB_ECANCELED, "stopping");
    if (r.timed_out)
        return t->api->err_set(err, MB_EBUSY, "the decoder took longer than %llds and was stopped",
                               (long long)t->timeout_s);
    if (r.signal)
        return t->api->err_set(err, MB_EINTERNAL, "the decoder ended on signal %d (%s)%s", r.signal,
                               strsignal(r.signal), sp_signal_note(r.signal));
    int code = r.code;
    *out = json_load_file(outp, 0, NULL);
    unlink(outp);
    if ((code != 0 && code != 1) || !*out) {
        json_decref(*out);
        *out = NULL;
        return t->api->err_set(err, MB_EINTERNAL, "the decoder failed (exit %d%s)", code,
                               code == 127 ? ": mbyte-thumbd missing" : "; out of memory?");
    }
    return 0;
}

/* Move the helper's files into the cache. */
static void cache_take(th *t, const char *prefix, const char *sha)
{
    char sub[PATH_MAX];
    sfmt(sub, sizeof sub, "%s/%.2s", t->cache, sha);
    mkdir(sub, 0700);
    pthread_mutex_lock(&t->cache_mu);
    for (int i = 0; i < NSIZES; i++)
        for (int w = 0; w < 2; w++) {
            char from[PATH_MAX + 32], to[PATH_MAX];
            struct stat st;
            sfmt(from, sizeof from, "%s-%d.%s", prefix, sizes[i], w ? "webp" : "jpg");
            cache_path(t, to, sizeof to, sha, sizes[i], w);
            if (stat(from, &st) == 0 && rename(from, to) == 0)
                atomic_fetch_add(&t->cache_bytes, (long long)st.st_size);
        }
    pthread_mutex_unlock(&t->cache_mu);
}

/* Thumbnails for one queued file. Returns MB_ECANCELED when the module is stopping (the
 * entry stays queued for the next copy). */
static int make_one(struct wk *w, uint64_t sid, const char *path, uint64_t fid)
{
    th *t = w->t;
    char sha[65] = "", in[PATH_MAX + 80];
    mb_err e = {0};
    json_t *meta = NULL;
    int rc = fetch(w, sid, path, sha, in, sizeof in, &meta, &e);
    if (rc == MB_ENOENT)
        return 0; /* gone or moved: a later event or request brings it back */
    if (rc == 0) {
        if (!meta) {
            char prefix[PATH_MAX + 80];
            sfmt(prefix, sizeof prefix, "%s/%d-%s", t->tmp, w->idx, sha);
            json_t *out = NULL;
            rc = run_helper(w, in, prefix, &out, &e);
            unlink(in);
            if (rc == MB_ECANCELED)
                return rc;
            if (rc == 0 && !jstr(out, "error")) {
                cache_take(t, prefix, sha);
                meta = json_pack("{s:s, s:s, s:s}", "state", "ready", "kind", jstr(out, "kind") ? jstr(out, "kind") : "",
                                 "hash", jstr(out, "hash") ? jstr(out, "hash") : "");
                atomic_fetch_add(&t->made, 1);
            } else {
                const char *why = rc ? e.msg : jstr(out, "error");
                meta = json_pack("{s:s, s:s, s:s, s:I}", "state", "none", "kind",
                                 out && jstr(out, "kind") ? jstr(out, "kind") : "unknown", "reason", why,
                                 "time", (json_int_t)t->api->now());
                if (!out || strcmp(jstr(out, "kind"), "none") != 0) { /* a kind without thumbnails is no failure */
                    atomic_fetch_add(&t->failed, 1);
                    t->api->log(t->self, MB_LOG_WARN, "no thumbnail for store %llu %s: %s", (unsigned long long)sid, path, why);
                }
            }
            json_decref(out);
            char key[80];
            sfmt(key, sizeof key, "t/%s", sha);
            kv_put_json(t, key, meta);
        }
    } else {
        meta = json_pack("{s:s, s:s, s:s}", "state", "none", "kind", "unknown", "reason", e.msg);
        char key[80];
        sfmt(key, sizeof key, "t/%s", is_sha(sha) ? sha : "unknown");
        if (is_sha(sha))
            kv_put_json(t, key, meta);
    }
    json_decref(meta);
    if (fid && is_sha(sha)) { /* a new version: the old content's thumbnails go */
        char key[64], *old = NULL;
        size_t n;
        sfmt(key, sizeof key, "f/%llu/%llu", (unsigned long long)sid, (unsigned long long)fid);
        if (t->api->kv_get(t->self, key, &old, &n, &e) == 0 && n == 64 && memcmp(old, sha, 64) != 0) {
            char prev[65];
            memcpy(prev, old, 64), prev[64] = 0;
            cache_drop(t, prev);
        }
        free(old);
        t->api->kv_put(t->self, key, sha, 64, false, &e);
    }
    return 0;
}

typedef struct item {
    char *key;
    char *val;
} item;

#define BATCH 16 /* queue entries a worker reads at a time */
typedef struct batch {
    item v[BATCH];
    int n;
} batch;

static int collect(const char *key, const void *value, size_t len, void *ud)
{
    batch *b = ud;
    b->v[b->n].key = strdup(key);
    b->v[b->n].val = strndup(value, len);
    return ++b->n == BATCH;
}

static void batch_free(batch *b)
{
    for (int i = 0; i < b->n; i++)
        free(b->v[i].key), free(b->v[i].val);
    b->n = 0;
}

static bool stopping(th *t)
{
    pthread_mutex_lock(&t->mu);
    bool s = t->stop;
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* Is a worker making the thumbnails of file id fid of store sid right now? */
static bool making(th *t, uint64_t sid, uint64_t fid)
{
    bool busy = false;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->nworkers; i++)
        busy |= t->wk[i].claim && t->wk[i].csid == sid && t->wk[i].cfid == fid;
    pthread_mutex_unlock(&t->mu);
    return busy;
}

/* Deleted files: drop the thumbnails their content had. Worker 0. A file a worker is making
 * thumbnails for stays queued: its f/ key, which names them, is written just before the worker
 * lets the file go, so asked before f/ is read, "not making it" means f/ is there (or nothing
 * will be made: the file is gone when a later worker opens it). Read f/ first, and a deletion
 * that came while another worker made the file lost the thumbnails it moved in after. */
static int drain_deletes(struct wk *w)
{
    th *t = w->t;
    batch b = {0};
    mb_err e;
    qread_scan(t->api, t->self, &w->dq, "d/", collect, &b);
    int n = b.n;
    for (int i = 0; i < b.n; i++) {
        char fkey[64], *sha = NULL, *end;
        size_t len;
        uint64_t sid = strtoull(b.v[i].key + 2, &end, 10), fid = *end == '/' ? strtoull(end + 1, NULL, 10) : 0;
        if (making(t, sid, fid)) {
            qread_wrote(&w->dq, b.v[i].key); /* read again once the worker is done */
            continue;
        }
        sfmt(fkey, sizeof fkey, "f/%s", b.v[i].key + 2);
        if (t->api->kv_get(t->self, fkey, &sha, &len, &e) == 0 && len == 64) {
            char s[65];
            memcpy(s, sha, 64), s[64] = 0;
            cache_drop(t, s);
        }
        free(sha);
        t->api->kv_del(t->self, fkey, false, &e);
        t->api->kv_del(t->self, b.v[i].key, false, &e);
    }
    batch_free(&b);
    return n;
}

/* Take key for worker w unless another worker has it. */
static bool claim(struct wk *w, const char *key, uint64_t sid, uint64_t fid)
{
    th *t = w->t;
    pthread_mutex_lock(&t->mu);
    bool free_ = true;
    for (int i = 0; i < t->nworkers; i++)
        if (t->wk[i].claim && !strcmp(t->wk[i].claim, key))
            free_ = false;
    if (free_)
        w->claim = strdup(key), w->csid = sid, w->cfid = fid;
    pthread_mutex_unlock(&t->mu);
    return free_ && w->claim;
}

static void unclaim(struct wk *w)
{
    pthread_mutex_lock(&w->t->mu);
    free(w->claim);
    w->claim = NULL;
    pthread_mutex_unlock(&w->t->mu);
}

/* Returns how many files this worker made (or found gone). */
static int drain_queue(struct wk *w)
{
    th *t = w->t;
    batch b = {0};
    mb_err e;
    qread_scan(t->api, t->self, &w->q, "q/", collect, &b);
    int n = 0;
    for (int i = 0; i < b.n && !stopping(t); i++) {
        char *slash = strchr(b.v[i].key + 2, '/');
        json_t *v = json_loads(b.v[i].val, 0, NULL);
        uint64_t sid = strtoull(b.v[i].key + 2, NULL, 10), fid = (uint64_t)jint(v, "fid");
        json_decref(v);
        if (!claim(w, b.v[i].key, sid, fid))
            continue;
        n++;
        int rc = slash ? make_one(w, sid, slash + 1, fid) : 0;
        if (rc == MB_ECANCELED) {
            unclaim(w);
            break;
        }
        /* done: unqueue, unless an event queued newer content meanwhile */
        char *now = NULL;
        size_t len;
        if (t->api->kv_get(t->self, b.v[i].key, &now, &len, &e) == 0 && len == strlen(b.v[i].val) &&
            memcmp(now, b.v[i].val, len) == 0)
            t->api->kv_del(t->self, b.v[i].key, false, &e);
        free(now);
        unclaim(w);
        evict(t);
    }
    batch_free(&b);
    return n;
}

typedef struct requeue {
    th *t;
    uint64_t sid;
} requeue;

static int requeue_one(const json_t *ent, void *ud)
{
    requeue *q = ud;
    if (is_sha(jstr(ent, "sha256")))
        enqueue(q->t, q->sid, jstr(ent, "path"), jstr(ent, "sha256"), (uint64_t)jint(ent, "id"));
    return 0;
}

/* POST .../rebuild: every file of every store is queued again (each walked in bounded memory). */
static void queue_everything(th *t)
{
    json_t *stores;
    mb_err e;
    if (t->api->store_list_all(0, &stores, &e))
        return;
    size_t i;
    json_t *s;
    json_array_foreach(stores, i, s) {
        requeue q = {t, (uint64_t)jint(s, "id")};
        if (!strcmp(jstr(s, "state") ? jstr(s, "state") : "", "ready"))
            t->api->folder_walk(NULL, q.sid, "", requeue_one, &q, &e);
    }
    json_decref(stores);
}

/* A worker thread. Worker 0 also measures the cache at start, drops deleted files' thumbnails
 * and queues a rebuild; all of them drain the queue, one file each at a time. */
static void *worker_main(void *arg)
{
    struct wk *w = arg;
    th *t = w->t;
    if (w->idx == 0) {
        cscan s = {0};
        scan_cache(t, &s);
        atomic_store(&t->cache_bytes, s.total);
        free(s.v);
    }
    while (!stopping(t)) {
        int did = 0;
        if (w->idx == 0) {
            mb_err e;
            char *v = NULL;
            size_t n;
            if (t->api->kv_get(t->self, "rebuild", &v, &n, &e) == 0) {
                t->api->kv_del(t->self, "rebuild", false, &e);
                queue_everything(t);
            }
            free(v);
            did += drain_deletes(w);
        }
        did += drain_queue(w);
        evict(t);
        if (did >= BATCH)
            continue; /* a full batch: more may be waiting */
        pthread_mutex_lock(&t->mu);
        if (did) /* ahead of the uploads: let a few gather rather than read the queue for each */
            qread_pace(&t->cv, &t->mu, &t->stop);
        else if (!t->kick && !t->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 30;
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        }
        t->kick = false;
        pthread_mutex_unlock(&t->mu);
    }
    return NULL;
}

/* ------------------------------------------------------------- observers --- */

/* *least = the smaller of it and key (loop thread). */
static void turn_least(char **least, const char *key)
{
    if (!*least || strcmp(key, *least) < 0) {
        char *k = strdup(key);
        if (k) {
            free(*least);
            *least = k;
        }
    }
}

/* file.created / file.updated: queue; file.deleted / file.purged: drop. Into the turn's write. */
static void o_file(const char *event, const json_t *p, mb_batch *b, void *state)
{
    th *t = state;
    mb_err e;
    uint64_t sid = (uint64_t)jint(p, "store"), fid = (uint64_t)jint(p, "file_id");
    const char *path = jstr(p, "path"), *sha = jstr(p, "sha256");
    if (strcmp(event, "file.deleted") == 0) {
        char key[64];
        sfmt(key, sizeof key, "d/%llu/%llu", (unsigned long long)sid, (unsigned long long)fid);
        t->api->batch_put(b, t->self, key, "", 0, &e);
        turn_least(&t->turn_d, key);
        return;
    }
    if (!path || !is_sha(sha))
        return;
    size_t n = strlen(path) + 48;
    char *key = malloc(n);
    json_t *v = json_pack("{s:s, s:I}", "sha", sha, "fid", (json_int_t)fid);
    char *s = json_dumps(v, JSON_COMPACT);
    if (key && s) {
        sfmt(key, n, "q/%llu/%s", (unsigned long long)sid, path);
        t->api->batch_put(b, t->self, key, s, strlen(s), &e);
        turn_least(&t->turn_q, key);
    }
    free(key);
    free(s);
    json_decref(v);
}

/* Once the turn's write is durable, the workers learn whether it queued behind them. */
static void o_done(int status, void *state)
{
    th *t = state;
    if (status == 0) {
        if (t->turn_q)
            wrote(t, t->turn_q, false);
        if (t->turn_d)
            wrote(t, t->turn_d, true);
        wake(t);
    }
    free(t->turn_q);
    free(t->turn_d);
    t->turn_q = t->turn_d = NULL;
}

/* ------------------------------------------------------------------ routes --- */

static int size_index(const char *s)
{
    if (!s)
        return 1;
    for (int i = 0; i < NSIZES; i++) {
        char b[8];
        sfmt(b, sizeof b, "%d", sizes[i]);
        if (strcmp(s, b) == 0)
            return i;
    }
    return -1;
}

static const char *class_of(const char *kind, const char *ctype)
{
    if (kind && *kind && strcmp(kind, "unknown")) {
        if (!strcmp(kind, "pdf") || !strcmp(kind, "text"))
            return kind;
        return strcmp(kind, "none") && strcmp(kind, "svg") ? "image" : "file";
    }
    ctype = ctype ? ctype : "";
    if (!strncmp(ctype, "image/", 6) && strcmp(ctype, "image/svg+xml"))
        return "image";
    if (!strcmp(ctype, "application/pdf"))
        return "pdf";
    return !strncmp(ctype, "text/", 5) ? "text" : "file";
}

static int class_index(const char *c)
{
    for (int i = 0; i < NCLASSES; i++)
        if (!strcmp(classes[i], c))
            return i;
    return NCLASSES - 1;
}

static int reply_placeholder(th *t, mb_req *req, const char *cls, int si, bool webp, const char *state,
                             const char *reason)
{
    blob *b = &t->ph[class_index(cls)][si][webp ? 0 : 1];
    t->api->reply_header(req, "X-Thumbnail", "placeholder");
    t->api->reply_header(req, "X-Thumbnail-State", state);
    if (reason) { /* one header line: printable ASCII only */
        char r[200];
        size_t k = 0;
        for (size_t i = 0; reason[i] && k < sizeof r - 1; i++)
            r[k++] = reason[i] >= 0x20 && reason[i] < 0x7f ? reason[i] : '?';
        r[k] = 0;
        t->api->reply_header(req, "X-Thumbnail-Reason", r);
    }
    t->api->reply_header(req, "Cache-Control", "no-store");
    t->api->reply_header(req, "Vary", "Accept");
    return t->api->reply_bytes(req, 200, webp ? "image/webp" : "image/jpeg", b->data, b->len);
}

/* GET /api/v1/stores/{sid}/thumbnails/{path*}?size=64|256|1024 */
static int h_thumb(mb_req *req, void *state, mb_err *err)
{
    th *t = state;
    const char *s = t->api->req_param(req, "sid"), *path = t->api->req_param(req, "path");
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return t->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    uint64_t sid = strtoull(s, NULL, 10);
    int si = size_index(t->api->req_query(req, "size"));
    if (si < 0)
        return t->api->err_set(err, MB_EINVAL, "size: one of 64, 256 or 1024");
    json_t *info;
    int rc = t->api->file_stat(t->api->req_user(req), sid, path ? path : "", &info, err);
    if (rc)
        return rc;
    if (strcmp(jstr(info, "type") ? jstr(info, "type") : "", "file")) {
        json_decref(info);
        return t->api->err_set(err, MB_ENOENT, "thumbnails are made for files, not folders");
    }
    bool webp = thumb_accepts_webp(t->api->req_header(req, "Accept"));
    char sha[65];
    sfmt(sha, sizeof sha, "%s", jstr(info, "sha256") ? jstr(info, "sha256") : "");
    char ctype[128];
    sfmt(ctype, sizeof ctype, "%s", jstr(info, "ctype") ? jstr(info, "ctype") : "");
    uint64_t fid = (uint64_t)jint(info, "id");
    json_decref(info);
    json_t *meta = is_sha(sha) ? meta_get(t, sha) : NULL;
    const char *st = jstr(meta, "state");
    if (st && !strcmp(st, "none")) {
        rc = reply_placeholder(t, req, class_of(jstr(meta, "kind"), ctype), si, webp, "none", jstr(meta, "reason"));
        json_decref(meta);
        return rc;
    }
    char p[PATH_MAX];
    cache_path(t, p, sizeof p, sha, sizes[si], webp);
    int fd = st && !strcmp(st, "ready") ? open(p, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) { /* not made yet, or evicted: make it (again) */
        /* with the file's id, as an event's entry has it: the worker then records which file the
         * thumbnails are of (f/), and a deletion finds them, also when this request came before
         * the upload's event (without it the thumbnails of a deleted file stayed) */
        if (is_sha(sha))
            enqueue(t, sid, path ? path : "", sha, fid);
        rc = reply_placeholder(t, req, class_of(jstr(meta, "kind"), ctype), si, webp, "pending", NULL);
        json_decref(meta);
        return rc;
    }
    json_decref(meta);
    futimens(fd, NULL); /* recently used: the LRU keeps it */
    char etag[96];
    sfmt(etag, sizeof etag, "\"%.32s-%d-%s\"", sha, sizes[si], webp ? "w" : "j");
    t->api->reply_header(req, "ETag", etag);
    t->api->reply_header(req, "Cache-Control", "private, no-cache");
    t->api->reply_header(req, "Vary", "Accept");
    t->api->reply_header(req, "X-Thumbnail", "ready");
    const char *inm = t->api->req_header(req, "If-None-Match");
    if (inm && (strstr(inm, etag) || !strcmp(inm, "*"))) {
        close(fd);
        return t->api->reply_bytes(req, 304, NULL, "", 0);
    }
    struct stat sb;
    char *data = NULL;
    ssize_t got = -1;
    if (fstat(fd, &sb) == 0 && sb.st_size > 0 && sb.st_size < (64 << 20) &&
        (data = t->api->req_alloc(req, (size_t)sb.st_size)))
        got = pread(fd, data, (size_t)sb.st_size, 0);
    close(fd);
    if (got != sb.st_size)
        return t->api->err_set(err, MB_EIO, "cannot read a cached thumbnail");
    return t->api->reply_bytes(req, 200, webp ? "image/webp" : "image/jpeg", data, (size_t)got);
}

typedef struct stat_acc {
    json_t *failures;
    int64_t ready, none, queued;
} stat_acc;

static int count_meta(const char *key, const void *value, size_t len, void *ud)
{
    stat_acc *a = ud;
    json_t *m = json_loadb(value, len, 0, NULL);
    const char *st = jstr(m, "state");
    if (st && !strcmp(st, "ready"))
        a->ready++;
    else if (st) {
        a->none++;
        if (strcmp(jstr(m, "kind") ? jstr(m, "kind") : "", "none") && json_array_size(a->failures) < 100)
            json_array_append_new(a->failures, json_pack("{s:s, s:s?, s:s?, s:I}", "sha256", key + 2, "kind",
                                                         jstr(m, "kind"), "reason", jstr(m, "reason"), "time",
                                                         (json_int_t)jint(m, "time")));
    }
    json_decref(m);
    return 0;
}

static int count_one(const char *key, const void *value, size_t len, void *ud)
{
    (void)key, (void)value, (void)len;
    ((stat_acc *)ud)->queued++;
    return 0;
}

/* GET /api/v1/admin/thumbnails */
static int h_status(mb_req *req, void *state, mb_err *err)
{
    th *t = state;
    stat_acc a = {json_array(), 0, 0, 0};
    if (t->api->kv_scan(t->self, "t/", count_meta, &a, err) || t->api->kv_scan(t->self, "q/", count_one, &a, err)) {
        json_decref(a.failures);
        return err->code;
    }
    return t->api->reply_json(
        req, 200,
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "cache_bytes",
                  (json_int_t)atomic_load(&t->cache_bytes), "cache_max", (json_int_t)t->cache_max, "ready",
                  (json_int_t)a.ready, "none", (json_int_t)a.none, "queued", (json_int_t)a.queued, "made",
                  (json_int_t)atomic_load(&t->made), "failed", (json_int_t)atomic_load(&t->failed), "failures",
                  a.failures));
}

static int del_meta(const char *key, const void *value, size_t len, void *ud)
{
    (void)value, (void)len;
    th *t = ud;
    mb_err e;
    t->api->kv_del(t->self, key, false, &e);
    return 0;
}

/* Everything made goes (files and outcomes); returns the files removed. */
static int purge_all(th *t)
{
    cscan s = {0};
    mb_err e;
    pthread_mutex_lock(&t->cache_mu);
    scan_cache(t, &s);
    int n = 0;
    for (size_t i = 0; i < s.n; i++) {
        char p[PATH_MAX + 100];
        sfmt(p, sizeof p, "%s/%s/%s", t->cache, s.v[i].sub, s.v[i].name);
        n += unlink(p) == 0;
    }
    atomic_store(&t->cache_bytes, 0);
    pthread_mutex_unlock(&t->cache_mu);
    free(s.v);
    t->api->kv_scan(t->self, "t/", del_meta, t, &e);
    return n;
}

/* POST /api/v1/admin/thumbnails/purge */
static int h_purge(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    th *t = state;
    int n = purge_all(t);
    t->api->log(t->self, MB_LOG_INFO, "cache purged: %d files", n);
    return t->api->reply_json(req, 200, json_pack("{s:i}", "removed", n));
}

/* POST /api/v1/admin/thumbnails/rebuild: purge, then the worker queues every file. */
static int h_rebuild(mb_req *req, void *state, mb_err *err)
{
    th *t = state;
    int n = purge_all(t);
    int rc = t->api->kv_put(t->self, "rebuild", "", 0, true, err);
    if (rc)
        return rc;
    wake(t);
    return t->api->reply_json(req, 202, json_pack("{s:i, s:b}", "removed", n, "queued", 1));
}

/* ------------------------------------------------------ listing decorator --- */

/* "thumb": {"state","hash"} on each file entry of a listing. HTTP thread. */
static void decorate(uint64_t sid, json_t *entry, void *state)
{
    th *t = state;
    const char *sha = jstr(entry, "sha256");
    if (strcmp(jstr(entry, "type") ? jstr(entry, "type") : "", "file") || !is_sha(sha))
        return;
    json_t *meta = meta_get(t, sha);
    const char *st = jstr(meta, "state");
    json_t *thumb;
    if (st && !strcmp(st, "none"))
        thumb = json_pack("{s:s}", "state", "none");
    else if (st && !strcmp(st, "ready")) {
        char p[PATH_MAX];
        cache_path(t, p, sizeof p, sha, 256, true);
        thumb = json_pack("{s:s, s:s}", "state", access(p, F_OK) ? "pending" : "ready", "hash",
                          jstr(meta, "hash") ? jstr(meta, "hash") : "");
    } else {
        thumb = json_pack("{s:s}", "state", "pending");
        (void)sid; /* made when asked for (GET .../thumbnails), not by listing: a listing stays a read */
    }
    json_decref(meta);
    json_object_set_new(entry, "thumb", thumb);
}

/* ---------------------------------------------------------- init and fini --- */

static void read_config(th *t, const json_t *c)
{
    t->cache_max = jint(c, "cache_max_mb") << 20;
    t->mem_mb = jint(c, "worker_memory_mb");
    t->cpu_s = jint(c, "worker_cpu_seconds");
    t->timeout_s = jint(c, "worker_timeout_seconds");
    t->max_input = jint(c, "max_input_mb") << 20;
}

static int mkdirs(th *t, mb_err *err)
{
    const char *dd = t->api->data_dir();
    char m[PATH_MAX];
    sfmt(m, sizeof m, "%s/m", dd);
    mkdir(m, 0700);
    sfmt(t->dir, sizeof t->dir, "%s/m/thumbnails", dd);
    sfmt(t->cache, sizeof t->cache, "%s/cache", t->dir);
    sfmt(t->tmp, sizeof t->tmp, "%s/tmp", t->dir);
    sfmt(m, sizeof m, "%s/magick", t->dir);
    const char *dirs[] = {t->dir, t->cache, t->tmp, m};
    for (int i = 0; i < 4; i++)
        if (mkdir(dirs[i], 0700) && errno != EEXIST)
            return t->api->err_set(err, MB_EIO, "cannot create %s: %s", dirs[i], strerror(errno));
    char pol[PATH_MAX + 16];
    sfmt(pol, sizeof pol, "%s/policy.xml", m);
    FILE *f = fopen(pol, "w");
    if (!f || fputs(policy_xml, f) < 0 || fclose(f))
        return t->api->err_set(err, MB_EIO, "cannot write %s", pol);
    return 0;
}

static int read_file(const char *p, blob *b)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b->data = n > 0 ? malloc((size_t)n) : NULL;
    b->len = b->data && fread(b->data, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b->len ? 0 : -1;
}

/* mbyte-thumbd and the placeholders sit in the module directory (build dir and install dir
 * alike), unless `helper` names the program. */
static int find_helper(th *t, const json_t *config, mb_err *err)
{
    char here[PATH_MAX];
    sfmt(here, sizeof here, "%s", t->api->module_dir());
    const char *h = jstr(config, "helper");
    if (h && *h)
        sfmt(t->helper, sizeof t->helper, "%s", h);
    else
        sfmt(t->helper, sizeof t->helper, "%s/mbyte-thumbd", here);
    if (access(t->helper, X_OK))
        return t->api->err_set(err, MB_EIO, "the worker program %s is missing: %s", t->helper, strerror(errno));
    for (int c = 0; c < NCLASSES; c++)
        for (int i = 0; i < NSIZES; i++)
            for (int w = 0; w < 2; w++) {
                char p[PATH_MAX + 64];
                sfmt(p, sizeof p, "%s/thumbnails-placeholders/%s-%d.%s", here, classes[c], sizes[i],
                         w ? "jpg" : "webp");
                if (read_file(p, &t->ph[c][i][w]))
                    return t->api->err_set(err, MB_EIO, "placeholder %s is missing", p);
            }
    return 0;
}

static void free_state(th *t)
{
    for (int c = 0; c < NCLASSES; c++)
        for (int i = 0; i < NSIZES; i++)
            for (int w = 0; w < 2; w++)
                free(t->ph[c][i][w].data);
    for (int i = 0; i < MAX_WORKERS; i++)
        qread_fini(&t->wk[i].q), qread_fini(&t->wk[i].dq);
    free(t->turn_q);
    free(t->turn_d);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->cache_mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    th *t = calloc(1, sizeof *t);
    if (!t)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    t->self = self;
    t->api = api;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->cache_mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    for (int i = 0; i < MAX_WORKERS; i++)
        qread_init(&t->wk[i].q), qread_init(&t->wk[i].dq);
    read_config(t, config);
    int rc = mkdirs(t, err);
    if (rc || (rc = find_helper(t, config, err)) || (rc = api->listing_decorator_set(self, decorate, t, err))) {
        free_state(t);
        return rc;
    }
    t->nworkers = (int)jint(config, "workers");
    for (int i = 0; i < t->nworkers; i++) {
        t->wk[i].t = t, t->wk[i].idx = i;
        t->wk[i].on = pthread_create(&t->wk[i].id, NULL, worker_main, &t->wk[i]) == 0;
    }
    *state = t;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading;
    th *t = state;
    t->api->listing_decorator_set(t->self, NULL, NULL, err);
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    for (int i = 0; i < t->nworkers; i++)
        if (t->wk[i].child > 0)
            kill(t->wk[i].child, SIGKILL); /* the file stays queued; the next copy makes it */
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->nworkers; i++)
        if (t->wk[i].on)
            pthread_join(t->wk[i].id, NULL);
    free_state(t);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    th *t = state;
    read_config(t, config); /* the worker reads these between files: a torn read costs one file's limits */
    wake(t);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "cache_max_mb", MB_CFG_INT, "1024", 1, 1048576},
    {sizeof(mb_config_key), "worker_memory_mb", MB_CFG_INT, "1024", 128, 16384},
    {sizeof(mb_config_key), "worker_cpu_seconds", MB_CFG_INT, "20", 1, 600},
    {sizeof(mb_config_key), "worker_timeout_seconds", MB_CFG_INT, "60", 1, 3600},
    {sizeof(mb_config_key), "max_input_mb", MB_CFG_INT, "200", 1, 65536},
    {sizeof(mb_config_key), "workers", MB_CFG_INT, "2", 1, MAX_WORKERS},
    {sizeof(mb_config_key), "helper", MB_CFG_STRING, "\"\"", 0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/thumbnails/{path*}", MB_ROLE_USER, h_thumb},
    {sizeof(mb_route), "GET", "/api/v1/admin/thumbnails", MB_ROLE_ADMIN, h_status},
    {sizeof(mb_route), "POST", "/api/v1/admin/thumbnails/purge", MB_ROLE_ADMIN, h_purge},
    {sizeof(mb_route), "POST", "/api/v1/admin/thumbnails/rebuild", MB_ROLE_ADMIN, h_rebuild},
    {0},
};

#define OBS(ev) {sizeof(mb_hook), ev, MB_HOOK_OBSERVER, 100, NULL, NULL, o_file, NULL, o_done}
static const mb_hook hooks[] = {
    OBS("file.created"),
    OBS("file.updated"),
    OBS("file.deleted"),
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "thumbnails",
    .version = "1.0.0",
    .description = "Thumbnails and previews made in a sandboxed worker process; placeholders until ready",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
