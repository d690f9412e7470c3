/*
 * ctype.c — the content type of every stored file version (docs/api.md, GET files).
 *
 * At commit, fs.c asks ctype_detect, which decides from cheap evidence only: a format
 * signature in the first bytes (sniff.c), then the name's extension, then "is it text". That
 * names nearly every real file in microseconds. What is left — binary bytes that no
 * signature and no extension name — starts as application/octet-stream and is handed to
 * libmagic on a background thread (ctype_refine_later), which records a better answer when
 * it finds one (fs_set_ctype). libmagic runs thousands of tests: 0.2 ms for 4 KiB of binary,
 * over 1 ms for text, more than the whole rest of a small upload, so it stays off the
 * request path. The refinement is best effort: the queue holds at most QUEUE_MAX jobs and
 * lives in memory, so a job dropped when it is full, or pending at shutdown, leaves the
 * conservative octet-stream in place.
 *
 * Threads: ctype_detect and ctype_by_name are pure, any thread. Any thread queues jobs under
 * q_lock; one thread, under SCHED_IDLE (it runs only when a CPU would otherwise idle), takes them and is the only user of the
 * libmagic cookie (libmagic is not thread-safe).
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

#define QUEUE_MAX 4096

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

typedef struct job {
    struct job *next;
    uint64_t sid, fid, ver, pid;
    char *name;
    size_t n;
    uint8_t head[];
} job;

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static job *q_head, *q_tail;
static size_t q_len;
static bool q_stop, q_running;
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

void ctype_refine_later(uint64_t sid, uint64_t fid, uint64_t ver, uint64_t pid, const char *name,
                        const uint8_t *head, size_t n)
{
    pthread_mutex_lock(&q_lock);
    if (!q_running || q_stop || q_len >= QUEUE_MAX) {
        pthread_mutex_unlock(&q_lock);
        log_debug("content type of %s left as application/octet-stream (refinement queue %s)", name,
                  q_running ? "full" : "off");
        return;
    }
    job *j = xmalloc(sizeof *j + n);
    *j = (job){.sid = sid, .fid = fid, .ver = ver, .pid = pid, .name = xstrdup(name), .n = n};
    memcpy(j->head, head, n);
    if (q_tail)
        q_tail->next = j;
    else
        q_head = j;
    q_tail = j;
    q_len++;
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
    for (;;) {
        while (!q_head && !q_stop)
            pthread_cond_wait(&q_cv, &q_lock);
        if (q_stop)
            break;
        job *j = q_head;
        q_head = j->next;
        if (!q_head)
            q_tail = NULL;
        q_len--;
        pthread_mutex_unlock(&q_lock);
        const char *r = cookie ? magic_buffer(cookie, j->head, j->n) : NULL;
        if (r && strcmp(r, "application/octet-stream") && !strstr(r, "x-empty") && !runnable(r))
            fs_set_ctype(j->sid, j->fid, j->ver, j->pid, j->name, r);
        free(j->name);
        free(j);
        pthread_mutex_lock(&q_lock);
    }
    pthread_mutex_unlock(&q_lock);
    if (cookie)
        magic_close(cookie);
    return NULL;
}

int ctype_init(mb_err *err)
{
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
    while (q_head) { /* left as octet-stream: see the top of this file */
        job *j = q_head;
        q_head = j->next;
        free(j->name);
        free(j);
    }
    q_tail = NULL;
    q_len = 0;
}
