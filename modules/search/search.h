/*
 * modules/search/search.h — what the parts of the search module share (issue 17).
 *
 *   query.c    the query language -> a safe FTS5 MATCH expression and filters (pure)
 *   extract.c  bounded text, plain-text decoding, kinds (pure; also in mbyte-extractd)
 *   extractd.c mbyte-extractd: PDF, office, EPUB, e-mail, HTML/XML, EXIF -> text, in its own
 *              process with limits (not part of the module)
 *   runx.c     the module's side of mbyte-extractd: its servers, requests and answers
 *   index.c    one SQLite FTS5 database per store: schema, writes, the search query
 *   search.c   the module: observers, the durable queue and its worker, routes, tasks
 *   find.c     the module: answering a search (every store the caller reaches, shares too)
 *
 * Nothing here is shared state; each part says which threads call it.
 */
#ifndef MBYTE_SEARCH_H
#define MBYTE_SEARCH_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------ query.c --- */

/* A growing string (aborts when memory runs out, like req_alloc). */
typedef struct sq_buf {
    char *p;
    size_t n, cap;
} sq_buf;
void sq_buf_add(sq_buf *b, const char *s, size_t n);
void sq_buf_s(sq_buf *b, const char *s);

enum { SQ_MAX_TERMS = 64, SQ_MAX_FILTERS = 16, SQ_MAX_INPUT = 4096 };

typedef struct sq_query {
    char *match;     /* FTS5 expression of the wanted terms, or NULL (filters only) */
    char *exclude;   /* FTS5 expression of the excluded terms (OR-ed), or NULL */
    char *trigram;   /* trigram expression matching the words as substrings of names, or NULL */
    char *types[SQ_MAX_FILTERS];  /* type:x (any of them) */
    int ntypes;
    char *ins[SQ_MAX_FILTERS];    /* in:/path (any of them), without leading or trailing '/' */
    int nins;
    char *stores[SQ_MAX_FILTERS]; /* store:name (any of them) */
    int nstores;
    char *tags[SQ_MAX_FILTERS];   /* tag:x (all of them) and tag:-x (none), applied by tagfilt.c */
    int ntags;
    int64_t size_min, size_max;   /* bytes, inclusive; -1 when not given */
    int64_t mod_min, mod_max;     /* Unix seconds, [min, max); -1 when not given */
    /* the wanted words, ASCII lower-cased, for snippets of long texts (index.c): a phrase gives
     * each of its words; `wprefix` marks the last word of a prefix term */
    char *words[2 * SQ_MAX_TERMS];
    bool wprefix[2 * SQ_MAX_TERMS];
    int nwords;
    /* not from the query text: search.c sets it to a share's path (the file, or the folder
     * and everything under it) when it searches a store shared with the caller; borrowed */
    const char *within;
} sq_query;

/* Parse `q` (any bytes, NUL-terminated). 0 with *out filled (free with sq_free), or -1 with a
 * sentence for the user in err (the caller answers 400). Never passes user text through
 * unquoted: every term is an FTS5 string with '"' doubled. */
int sq_parse(const char *q, sq_query *out, char *err, size_t errlen);
void sq_free(sq_query *q);

/* ---------------------------------------------------------- extract.c --- */

typedef struct sx_result {
    char *text;       /* malloc'd UTF-8, NUL-terminated, at most max_text bytes; NULL if none */
    size_t len;
    const char *kind; /* static: "pdf", "document", "text", "image", ... */
    char reason[200]; /* why extraction failed or stopped short; "" when it did not */
} sx_result;

/* The text being extracted: at most `max` bytes, until `deadline` (sx_now seconds). */
typedef struct sx_text {
    char *p;
    size_t n, cap, max;
    double deadline;
    bool full, late; /* stopped by the size limit, by the time limit */
} sx_text;

void sx_text_init(sx_text *c, size_t max_text, double seconds);
double sx_now(void);
/* True (and c->late set) once the deadline passed, or when the text is full. */
bool sx_out_of_time(sx_text *c);
/* Append UTF-8 text: control characters as spaces, runs of white space as one; stops at
 * c->max without cutting a character in two. */
void sx_put(sx_text *c, const char *s, size_t n);
void sx_puts(sx_text *c, const char *s);
/* Decode and append text: UTF-8 (BOM or not), UTF-16 LE/BE with a BOM, otherwise Latin-1. */
void sx_put_text(sx_text *c, const unsigned char *s, size_t n);
/* No NUL in the first 8 KiB (or a UTF-16 BOM). */
bool sx_looks_text(const unsigned char *s, size_t n);
/* Move the text into out, with a note when it was cut by a limit. */
void sx_finish(sx_text *c, size_t max_text, double seconds, sx_result *out);

/* The kind of a file from its name and content type (no bytes needed). */
const char *sx_kind(const char *name, const char *ctype);
/* Content wins over a wrong extension for the formats with a signature. */
const char *sx_content_kind(const unsigned char *d, size_t n, const char *kind);
/* True for the kinds read inside mbyted (no decoder library: text, Markdown, CSV, JSON,
 * code, other); false for those mbyte-extractd reads (PDF, office, EPUB, e-mail, HTML, XML,
 * images). */
bool sx_in_process(const char *kind);
/* The text of an in-process kind held in memory. Returns 0; text may be NULL (binary). */
int sx_extract_text(const char *kind, const unsigned char *data, size_t len, size_t max_text, double seconds,
                    sx_result *out);
void sx_free(sx_result *r);

/* --------------------------------------------------------------- runx.c --- */

enum { XR_MAX = 8 }; /* extractions at once: the indexing worker and rebuild tasks (2 at a time) */

typedef struct xr_kid {
    bool busy;    /* taken by a thread extracting a file (under *mu) */
    pid_t pid;    /* its mbyte-extractd --serve, 0 when none (under *mu) */
    int to, from; /* the server's stdin and stdout (used by the thread that took the slot) */
} xr_kid;

typedef struct xr_pool {
    pthread_mutex_t *mu; /* the module's */
    const bool *stop;    /* the module's (under *mu) */
    char prog[PATH_MAX]; /* mbyte-extractd (under *mu: reconfigure changes it) */
    int64_t as_mb;       /* its address-space limit (under *mu) */
    char tmp[1100];      /* <data>/m/search/tmp: each file's <n>.in and <n>.out */
    xr_kid kids[XR_MAX];
    atomic_uint seq;
} xr_pool;

/* Make and empty tmp; prog and as_mb are the caller's to set. -1 with why. */
int xr_init(xr_pool *p, pthread_mutex_t *mu, const bool *stop, const char *tmp, char *why, size_t whylen);
/* The text of one file of a decoder kind, through an extractor server (started when none runs).
 * 0 with x filled, -1 with x->reason (a crash, a limit, the file unreadable), or MB_ECANCELED
 * when *stop was set meanwhile (the file must not be recorded). Any thread. */
int xr_extract(xr_pool *p, const char *kind, const unsigned char *buf, size_t len, int64_t max_text, int64_t secs,
               sx_result *x);
/* SIGKILL every server (fini, after setting *stop): a running extraction ends at once. */
void xr_kill(xr_pool *p);
/* Reap the servers and close their pipes, once no thread extracts any more. */
void xr_fini(xr_pool *p);

/* ------------------------------------------------------------ index.c --- */

typedef struct si_db si_db;

typedef struct si_doc {
    const char *path, *name, *kind, *ctype, *sha256;
    int64_t size, mtime;
    const char *body;  /* may be NULL */
    const char *status; /* "ok" | "failed" | "skipped" */
    const char *reason;
} si_doc;

/* Open (creating) the index at `file`; a database that fails its check is moved aside and
 * made anew (*rebuilt set). -1 with err when even that fails. */
int si_open(const char *file, si_db **out, bool *rebuilt, char *err, size_t errlen);
void si_close(si_db *db);
int si_begin(si_db *db);
int si_commit(si_db *db);
void si_rollback(si_db *db);
/* The sha256 and mtime the index holds for path: 1 found, 0 not. */
int si_get(si_db *db, const char *path, char sha[65], int64_t *mtime);
int si_put(si_db *db, const si_doc *d);
/* Remove path and everything under path/ ("" removes everything). */
int si_remove(si_db *db, const char *path);
/* Up to `limit` indexed paths strictly under prefix ("" for all) that sort after `after` ("" for
 * the first), in path order, each to fn; how many (-1 on error). Pages through a subtree of any
 * size in bounded memory: the next page starts after the last path of this one. */
int si_paths_after(si_db *db, const char *prefix, const char *after, int limit,
                   void (*fn)(const char *path, void *ud), void *ud);
/* Counts for status. */
int si_counts(si_db *db, int64_t *ok, int64_t *failed, int64_t *skipped);
/* Up to `max` failures as "path: reason" into a JSON-free callback. */
int si_failures(si_db *db, int max, void (*fn)(const char *path, const char *reason, void *ud), void *ud);
/* The extracted text of `path` (at most max bytes, malloc'd into *text) and the sha256 it was
 * extracted from; 1 when the document has text, 0 when not, -1 on a database failure. */
int si_text(si_db *db, const char *path, size_t max, char **text, char sha[65]);


typedef struct si_hit {
    int64_t id, tlen; /* the row and the length of its text, for si_snippets */
    char *path, *name, *kind, *snippet;
    int64_t size, mtime;
    double score; /* higher is better */
} si_hit;

/* Run q against one store's index: up to `max` hits, best first. *n receives the count,
 * *hits a malloc'd array (si_hits_free). With cap > 0 and more than cap matches (after the
 * filters), only the newest cap of them are ranked and *cut says so: a word in half the store
 * costs what a rarer one does. -1 with err on a database failure. */
int si_search(si_db *db, const sq_query *q, int max, int cap, si_hit **hits, int *n, bool *cut, char *err,
              size_t errlen);
void si_hits_free(si_hit *hits, int n);
/* The snippets of hits[0..n) (their `id`) for q: FTS5's snippet() for texts up to 64 KiB,
 * a linear scan of our own for longer ones (snippet() is quadratic in the matches of a row).
 * Asked only for the hits shown, never for every match. Matched words are between the bytes
 * 2 and 3. */
int si_snippets(si_db *db, const sq_query *q, si_hit *hits, int n);

/* ----------------------------------------------------------- tagfilt.c --- */

/* Keep only the hits of store sid that the tags module's "tags.match" service says carry the
 * query's tag: filters; hits dropped are freed and *n lowered. 0, or a negative MB_E* code with
 * err filled (MB_EUNSUPP when the tags module is not loaded). */
struct mb_api;
int tf_apply(const struct mb_api *api, uint64_t sid, const sq_query *q, si_hit *h, int *n, char *err, size_t errlen);

/* ------------------------------------------------------------ search.c --- */
/* The module's state and its open indexes (search.c's top comment says what protects what);
 * find.c answers searches with them. Only for the module's files, which include mbyte.h first
 * (mbyte-extractd and the fuzz targets do not). */
#ifdef MBYTE_ABI_H
typedef struct index_slot {
    uint64_t sid;
    si_db *db; /* NULL until first used */
    pthread_mutex_t mu;
    struct index_slot *next;
} index_slot;

typedef struct search {
    mb_module *self;
    const mb_api *api;
    _Atomic int64_t max_file_bytes, max_text_bytes, extract_seconds; /* reconfigure vs the worker */
    _Atomic int rank_newest; /* matches ranked per store at most (find.c); 0: all */
    char dir[1024];
    xr_pool xr; /* the mbyte-extractd servers (runx.c); guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    index_slot *slots;
    pthread_t worker;
    bool worker_on, stop, wake;
    atomic_bool catching_up;
    uint64_t seq;   /* loop thread */
    int turn_items; /* loop thread */
} search;
/* The index of store sid, opened on first use, with its mutex held; slot_release unlocks it.
 * NULL with err when it cannot be opened. */
index_slot *slot_take(search *s, uint64_t sid, mb_err *err);
void slot_release(index_slot *x);

/* -------------------------------------------------------------- find.c --- */
/* GET /api/v1/search?q=&store=&limit=&cursor= (state: the module's search). */
int sf_search(mb_req *req, void *state, mb_err *err);
/* Store sid is kept by this node (always alone; cluster mode: mb_api.store_here). */
bool sf_kept_here(const mb_api *api, uint64_t sid);
int sf_query_service(const json_t *arg, json_t **out, void *state, mb_err *err);
#endif

#endif
