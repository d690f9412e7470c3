/*
 * ctype.c — the content type of every stored file version (docs/api.md, GET files).
 *
 * At commit, fs_write.c asks ctype_detect, which decides from cheap evidence only: a format
 * signature in the first bytes (sniff.c), then the name's extension, then "is it text". That
 * names nearly every real file in microseconds. What is left — binary bytes that no
 * signature and no extension name — starts as application/octet-stream, and the commit puts
 * a marker (cm/<sid>/<fid>/<ver>) into its own batch. A background thread names those
 * versions with libmagic when the server is idle (no file change committed for IDLE_MS),
 * records the answers and deletes their markers, up to NAME_BATCH versions a transaction
 * (record_types: one fsync for many, not one a file). libmagic runs
 * thousands of tests: 0.2 ms for 4 KiB of binary, over 1 ms for text, more than the whole
 * rest of a small upload; done during a burst of uploads it cost a fifth of their rate even
 * at the lowest CPU priority. Markers are durable, so nothing is skipped across a restart.
 *
 * Threads: ctype_detect, ctype_by_name and ctype_mark are pure, any thread. One thread,
 * under SCHED_IDLE, is the only user of the libmagic cookie (libmagic is not thread-safe);
 * q_lock guards its wake-up flags.
 */
#include "fs.h"
#include <magic.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct {
    const char *ext, *type;
} ext_types[] = {
    {"txt", "text/plain"}, {"md", "text/markdown"}, {"csv", "text/csv"}, {"html", "text/html"},
    {"htm", "text/html"}, {"css", "text/css"}, {"js", "text/javascript"}, {"mjs", "text/javascript"},
    {"json", "application/json"}, {"xml", "application/xml"}, {"svg", "image/svg+xml"}, {"png", "image/png"},
    {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
    {"avif", "image/avif"}, {"bmp", "image/bmp"}, {"ico", "image/x-icon"}, {"tif", "image/tiff"},
    {"tiff", "image/tiff"}, {"heic", "image/heic"}, {"pdf", "application/pdf"}, {"zip", "application/zip"},
    {"gz", "application/gzip"}, {"tar", "application/x-tar"}, {"7z", "application/x-7z-compressed"},
    {"mp3", "audio/mpeg"}, {"ogg", "audio/ogg"}, {"wav", "audio/wav"}, {"flac", "audio/flac"},
    {"mp4", "video/mp4"}, {"webm", "video/webm"}, {"mkv", "video/x-matroska"}, {"mov", "video/quicktime"},
    {"doc", "application/msword"},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    {"xls", "application/vnd.ms-excel"},
    {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
    {"odt", "application/vnd.oasis.opendocument.text"}, {"epub", "application/epub+zip"},
    {"wasm", "application/wasm"}, {"yaml", "application/yaml"}, {"yml", "application/yaml"},
    {"c", "text/x-c"}, {"h", "text/x-c"}, {"py", "text/x-python"}, {"sh", "application/x-sh"},
};

const char *ctype_by_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return NULL;
    for (size_t i = 0; i < sizeof ext_types / sizeof ext_types[0]; i++)
        if (!strcasecmp(dot + 1, ext_types[i].ext))
            return ext_types[i].type;
    return NULL;
}

#define IDLE_MS 50   /* no file change committed for this long: the server is idle */
static int idle_ms = IDLE_MS; /* MBYTE_CTYPE_IDLE_MS overrides it (tests hold naming back) */
#define HEAD_MAX 8192 /* bytes libmagic looks at */
#define MARK "cm/"   /* cm/<sid16>/<fid16>/<ver16> -> {"v":1,"pid","name"} (docs/storage.md) */
#define NAME_BATCH 64 /* versions named per transaction */

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static bool q_stop, q_running;
/* Set by every upload that leaves a marker; cleared by the thread before a pass. Atomic so
 * that an upload finding it already set takes no lock and wakes nobody: the thread is then
 * waiting for a quiet moment and needs no signal (a signal per upload was a context switch
 * per upload, and woke it into a pass in the middle of a burst). */
static atomic_bool q_kicked;
static pthread_t q_thread;

char *ctype_detect(const char *name, const uint8_t *head, size_t n, bool *deep)
{
    const char *ext = ctype_by_name(name);
    bool container;
    const char *sig = sniff_type(head, n, &container);
    *deep = false;
    if (sig && !(container && ext))
        return xstrdup(sig);
    if (ext || sig)
        return xstrdup(ext ? ext : sig);
    if (n > 0 && sniff_is_text(head, n))
        return xstrdup("text/plain");
    *deep = n > 0;
    return xstrdup("application/octet-stream");
}

void ctype_mark(db_batch *b, uint64_t sid, uint64_t fid, uint64_t ver, uint64_t pid, const char *name)
{
    char key[80], a[17], f[17], v[17];
    key_u64(a, sid);
    key_u64(f, fid);
    key_u64(v, ver);
    snprintf(key, sizeof key, MARK "%s/%s/%s", a, f, v);
    json_t *rec = json_pack("{s:i, s:I, s:s}", "v", 1, "pid", (json_int_t)pid, "name", name);
    db_batch_put_json(b, key, rec);
    json_decref(rec);
}

void ctype_kick(void)
{
    if (atomic_load(&q_kicked))
        return;
    pthread_mutex_lock(&q_lock);
    atomic_store(&q_kicked, true);
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_lock);
}

/* Types a browser would run: only a file's name may give those (the upload chose it). */
static bool runnable(const char *t)
{
    static const char *const deny[] = {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
                                       "application/xml", "text/javascript", "application/javascript"};
    for (size_t i = 0; i < sizeof deny / sizeof deny[0]; i++)
        if (!strcmp(t, deny[i]))
            return true;
    return false;
}

/* Sleep up to ms unless stopped or signalled; true when stopping. Called with q_lock held. */
static bool nap(int ms)
{
    struct timespec ts;
    wait_deadline(&ts, CLOCK_REALTIME, ms);
    if (!q_stop)
        pthread_cond_timedwait(&q_cv, &q_lock, &ts);
    return q_stop;
}

/* True once idle_ms have passed without a file change committed (a signal does not cut the
 * wait short); false when a change came, or when stopping. Called with q_lock held. */
static bool quiet_for(int ms)
{
    uint64_t before = db_grouped_writes();
    int64_t until = now_mono_ms() + ms;
    for (int64_t now = now_mono_ms(); now < until; now = now_mono_ms())
        if (nap((int)(until - now)))
            return false;
    return db_grouped_writes() == before;
}

/* One marked version named: its marker, where it is, and libmagic's answer (NULL: none). */
typedef struct named {
    char marker[80];
    uint64_t sid, fid, ver, pid;
    char *name, *ctype;
} named;

/* libmagic's answers, recorded in one transaction: each marker deleted and, when its ctype is
 * not NULL, the type put on version ver of file fid and on its directory entry <pid>/<name> if
 * that still shows this version. A crash before it leaves the markers: named again. */
static void record_types(named *v, int n)
{
    char key[NS_KEYMAX];
    txn c;
    txn_begin(&c, NULL);
    for (int i = 0; i < n; i++) {
        json_t *fv = NULL, *e = NULL;
        db_batch_del(c.b, v[i].marker, strlen(v[i].marker));
        ns_fkey(key, sizeof key, v[i].sid, v[i].fid, v[i].ver);
        if (v[i].ctype && db_get_json(key, &fv) == 0) {
            json_object_set_new(fv, "ctype", json_string(v[i].ctype));
            db_batch_put_json(c.b, key, fv);
            if (ns_entry_get(v[i].sid, v[i].pid, v[i].name, &e) == 0 && jint(e, "id") == (json_int_t)v[i].fid &&
                jint(e, "version") == (json_int_t)v[i].ver) {
                json_object_set_new(e, "ctype", json_string(v[i].ctype));
                ns_dkey(key, sizeof key, v[i].sid, v[i].pid, v[i].name);
                db_batch_put_json(c.b, key, e);
            }
        }
        json_decref(fv);
        json_decref(e);
    }
    mb_err err = {0};
    if (txn_end(&c, 0, &err, "the content types"))
        log_warn("%d content types: %s", n, err.msg);
    for (int i = 0; i < n; i++)
        free(v[i].name), free(v[i].ctype);
}

/* The first bytes (at most cap, from the first chunk, verified) of a stored version. */
static int version_head(uint64_t sid, uint64_t fid, uint64_t ver, uint8_t *buf, size_t cap, size_t *n)
{
    char key[NS_KEYMAX];
    json_t *v = NULL;
    ns_fkey(key, sizeof key, sid, fid, ver);
    int rc = db_get_json(key, &v);
    *n = 0;
    if (rc)
        return rc;
    json_t *c = json_array_get(json_object_get(v, "chunks"), 0);
    size_t len = c ? (size_t)jint(c, "n") : 0;
    if (c && len) {
        uint8_t *tmp = xmalloc(len);
        rc = blob_read(jstr(c, "h"), jstr(c, "x"), tmp, len, NULL);
        if (!rc) {
            *n = len < cap ? len : cap;
            memcpy(buf, tmp, *n);
        }
        free(tmp);
    }
    json_decref(v);
    return rc;
}

/* Name the marked versions, oldest store and file first, while nothing else is written;
 * how many were done. */
static int refine_pass(magic_t cookie)
{
    int done = 0, n = 0;
    named batch[NAME_BATCH];
    db_iter *it = db_iter_prefix(MARK, strlen(MARK));
    uint64_t seen = db_grouped_writes();
    uint8_t head[HEAD_MAX];
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        named *nv = &batch[n];
        if (kl != strlen(MARK) + 50 || kl >= sizeof nv->marker)
            continue;
        memcpy(nv->marker, k, kl);
        nv->marker[kl] = 0;
        char a[17] = {0}, f[17] = {0}, r[17] = {0};
        memcpy(a, nv->marker + 3, 16);
        memcpy(f, nv->marker + 20, 16);
        memcpy(r, nv->marker + 37, 16);
        nv->sid = strtoull(a, NULL, 16), nv->fid = strtoull(f, NULL, 16), nv->ver = strtoull(r, NULL, 16);
        if (cluster_store_elsewhere(nv->sid))
            continue; /* a replica's copy, or one a move left: its keeper names it (a write here is refused) */
        json_t *rec = json_loadb(v, vl, 0, NULL);
        const char *name = json_string_value(json_object_get(rec, "name"));
        nv->pid = (uint64_t)json_integer_value(json_object_get(rec, "pid"));
        size_t got = 0;
        const char *t = NULL;
        if (name && cookie && version_head(nv->sid, nv->fid, nv->ver, head, sizeof head, &got) == 0 && got)
            t = magic_buffer(cookie, head, got);
        if (t && (!strcmp(t, "application/octet-stream") || strstr(t, "x-empty") || runnable(t)))
            t = NULL;
        nv->name = xstrdup(name ? name : "");
        nv->ctype = t ? xstrdup(t) : NULL;
        json_decref(rec);
        n++;
        /* anything written meanwhile is someone else's upload: record what is named, then stop */
        bool busy = db_grouped_writes() != seen || q_stop;
        if (n == NAME_BATCH || busy) {
            record_types(batch, n);
            done += n, n = 0;
            if (busy)
                break;
            seen = db_grouped_writes(); /* our own write moved it */
        }
    }
    if (n)
        record_types(batch, n);
    db_iter_free(it);
    return done + n;
}

static void *refine_main(void *arg)
{
    (void)arg;
    /* Only when a CPU would otherwise idle (SCHED_IDLE, below nice 19): uploads first. */
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp))
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    magic_t cookie = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
    if (cookie && magic_load(cookie, NULL)) {
        log_warn("libmagic could not load its database (%s); unnamed binary files stay application/octet-stream",
                 magic_error(cookie));
        magic_close(cookie);
        cookie = NULL;
    }
    pthread_mutex_lock(&q_lock);
    atomic_store(&q_kicked, true); /* markers left by a previous run */
    while (!q_stop) {
        if (!atomic_load(&q_kicked)) {
            nap(10000);
            continue;
        }
        /* Wait for a quiet moment: no file change committed for idle_ms. */
        if (!quiet_for(idle_ms))
            continue;
        atomic_store(&q_kicked, false);
        pthread_mutex_unlock(&q_lock);
        int done = refine_pass(cookie);
        pthread_mutex_lock(&q_lock);
        if (done) /* it may have been interrupted, or more came meanwhile: look again */
            atomic_store(&q_kicked, true);
    }
    pthread_mutex_unlock(&q_lock);
    if (cookie)
        magic_close(cookie);
    return NULL;
}

int ctype_init(mb_err *err)
{
    const char *e = getenv("MBYTE_CTYPE_IDLE_MS");
    uint64_t v;
    idle_ms = e && parse_u64(e, &v) && v <= 3600000 ? (int)v : IDLE_MS;
    q_stop = false;
    if (pthread_create(&q_thread, NULL, refine_main, NULL))
        return err_set(err, MB_EIO, "cannot start the content-type thread");
    q_running = true;
    return 0;
}

void ctype_fini(void)
{
    if (!q_running)
        return;
    pthread_mutex_lock(&q_lock);
    q_stop = true;
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_lock);
    pthread_join(q_thread, NULL);
    q_running = false;
}
