/*
 * modules/httppool.h — what the modules that keep blob backends behind HTTP share (s3,
 * webdav's client backends, rclone): a bounded pool of libcurl easy handles, the answer sinks (a
 * caller's buffer for a ranged GET, a bounded growing buffer for listings and errors, the
 * Content-Length and Last-Modified headers), request bodies read from a caller's buffer, the
 * backoff with jitter between attempts, and the chunk layout in directories that webdav and
 * rclone backends both keep (<prefix><aa>/<sha256>).
 * Compiled into each module that uses it (modules/meson.build); no state of its own.
 *
 * Threads: a pool is taken from and given back to by any thread, guarded by its mutex.
 */
#ifndef MBYTE_HTTPPOOL_H
#define MBYTE_HTTPPOOL_H
#include "mbyte.h"
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HP_MAX_CONNECTIONS 256 /* the highest max_connections a module's table allows */
#define HP_BODY_MAX (16u << 20) /* an answer read whole is a listing or an error: never bigger */

/* At most `max` easy handles at once; a caller takes one (waiting when all are busy) and
 * gives it back, so connections are reused and their number is bounded. */
typedef struct hp_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CURL *idle[HP_MAX_CONNECTIONS];
    int nidle, made, max;
} hp_pool;

void hp_pool_init(hp_pool *p, int max);
/* Only once no handle is taken (the module's fini, after the kernel drained it). */
void hp_pool_free(hp_pool *p);
/* A new bound (reconfigure); handles beyond it are closed as they come back. */
void hp_pool_resize(hp_pool *p, int max);
/* NULL only when libcurl cannot make a handle. */
CURL *hp_take(hp_pool *p);
/* Give a handle back; a broken one (keep false) is closed, so the next call connects anew. */
void hp_give(hp_pool *p, CURL *c, bool keep);

/* An answer: its status, its body (into the caller's buffer when `fixed`: at most cap bytes,
 * `over` when more came; else a growing NUL-terminated buffer of at most HP_BODY_MAX, the
 * transfer cut beyond it), and the Content-Length and Last-Modified headers. */
typedef struct hp_reply {
    long status;
    struct {
        char *buf;
        size_t len, cap;
        bool fixed, over;
    } body;
    uint64_t length;
    int64_t mtime;
} hp_reply;

/* Set on `c` the write and header callbacks that fill r (cleared first; `out`, when not
 * NULL, is the fixed buffer of `cap` bytes). */
void hp_reply_bind(CURL *c, hp_reply *r, void *out, size_t cap);
/* Free a growing body (a fixed one is the caller's). */
void hp_reply_free(hp_reply *r);

/* Reset c and set what every backend request has: url, http and https only, no signals, no
 * redirect followed, the two timeouts, the headers, the user agent, the method (HEAD without
 * a body) and the answer sinks (hp_reply_bind). */
void hp_setup(CURL *c, const char *url, const char *method, long timeout_ms, long connect_timeout_ms,
              const struct curl_slist *headers, const char *agent, hp_reply *r, void *out, size_t cap);
/* Perform, read the status into r, forget any password set on c, give it back to p (closed
 * unless the transfer completed) and free `headers` (hp_setup's). CURLE_OK, or the error with
 * its words in cerr and r's body freed. */
CURLcode hp_perform(hp_pool *p, CURL *c, struct curl_slist *headers, hp_reply *r, char cerr[CURL_ERROR_SIZE]);

/* Up to `tries` calls of once with hp_backoff between them: once returns 0 with a final
 * answer, or non-zero with err saying why (a transport error, a 5xx, a 429...) to be tried
 * again. 0, or after the last try err's code (MB_EIO when it has none). */
int hp_retry(int tries, long base_ms, int (*once)(void *ctx, mb_err *err), void *ctx, mb_err *err);

/* A blob backend's get from a ranged GET's answer: the bytes read, 0 past the end (416),
 * MB_ENOENT (404), MB_EIO when the server ignored the Range at an offset or answered anything
 * else (err names `backend`). */
int64_t hp_get_result(const mb_api *api, const char *backend, const char *key, const hp_reply *r, uint64_t off,
                      mb_err *err);
/* A blob backend's stat from a HEAD's answer: 1 with *size and *mtime filled (either may be
 * NULL), 0 for a 404, -1 for any other status (the caller words it). */
int hp_stat_result(const hp_reply *r, uint64_t *size, int64_t *mtime);

/* Backend `name` of conf.d/<file>: o must be a map whose every member is one of known[] and a
 * string (true or false for `boolkey`, NULL when none is); the first `required` of known[]
 * must be there. 0 or MB_EINVAL with the file, the key and the reason. */
int hp_check_keys(const mb_api *api, const char *file, const char *name, const json_t *o, const char *const *known,
                  size_t n, size_t required, const char *boolkey, mb_err *err);

/* A request body read from a borrowed buffer (CURLOPT_READFUNCTION and SEEKFUNCTION, or a mime
 * part's callbacks): libcurl rewinds it when it sends the body again. */
typedef struct hp_cursor {
    const char *p;
    size_t len, at;
} hp_cursor;
size_t hp_cursor_read(char *dst, size_t sz, size_t nm, void *cursor);
int hp_cursor_seek(void *cursor, curl_off_t off, int origin);

/* ---- chunks in directories (webdav and rclone backends) ---- */

/* Backend `name`'s prefix setting of conf.d/<file> (NULL: none), checked (up to 200 of letters,
 * digits, '.', '_', '-' and '/', not leading, no "..") and kept ending in '/' ("" for none) in
 * *out (malloc'd). 0 or MB_EINVAL / MB_ENOMEM with err set. */
int hp_prefix_parse(const mb_api *api, const char *file, const char *name, const char *prefix, char **out,
                    mb_err *err);

/* <prefix><dir><aa>/<base> for key "<dir><base>" (dir "" or "e/"; aa: base's first two
 * characters) into out; *base_at (may be NULL) points at <base> in out. false for a key that is
 * not a chunk name (the kernel's are lower-hex, with an optional "e/") or a path that does not fit. */
bool hp_object_path(const char *prefix, const char *key, char *out, size_t n, const char **base_at);

/* A listing of that layout for the collector and fsck: the prefix's aa/ directories, then each
 * one's chunks. */
typedef struct hp_aa_list {
    int (*fn)(const char *key, uint64_t size, int64_t mtime, void *ud);
    void *ud;
    char aa[3];       /* listing one aa/ directory: its name; "" listing the prefix */
    char found[256][3];
    int nfound;
} hp_aa_list;

/* One member of the directory being listed: at the prefix an aa/ directory is noted; in aa/ a
 * file named by a chunk of that aa goes to fn (its answer is returned); anything else is not
 * ours and is passed over (0). */
int hp_aa_entry(hp_aa_list *l, const char *name, uint64_t size, int64_t mtime, bool dir);

/* list_dir(ctx, path, l, err) for `prefix` itself, then for "<prefix><aa>/" of each aa/ it
 * had (l->aa says which is listed; list_dir hands each member to hp_aa_entry): 0, the first
 * non-zero answer of fn, or list_dir's failure. */
int hp_aa_walk(const char *prefix, int (*list_dir)(void *ctx, const char *path, hp_aa_list *l, mb_err *err),
               void *ctx, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err);

/* Before attempt i (1, 2, ...): sleep base_ms << (i-1) (capped at 2^10 times) plus up to half
 * again at random, so callers that failed together do not come back together. */
void hp_backoff(int i, long base_ms);

#endif
