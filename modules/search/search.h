/*
 * modules/search/search.h — what the parts of the search module share (issue 17).
 *
 *   query.c    the query language -> a safe FTS5 MATCH expression and filters (pure)
 *   extract.c  bytes of one file -> plain text, with size and time limits (pure, libraries)
 *   index.c    one SQLite FTS5 database per store: schema, writes, the search query
 *   search.c   the module: observers, the durable queue and its worker, routes, tasks
 *
 * Nothing here is shared state; each part says which threads call it.
 */
#ifndef MBYTE_SEARCH_H
#define MBYTE_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    int64_t size_min, size_max;   /* bytes, inclusive; -1 when not given */
    int64_t mod_min, mod_max;     /* Unix seconds, [min, max); -1 when not given */
    /* the wanted words, ASCII lower-cased, for snippets of long texts (index.c): a phrase gives
     * each of its words; `wprefix` marks the last word of a prefix term */
    char *words[2 * SQ_MAX_TERMS];
    bool wprefix[2 * SQ_MAX_TERMS];
    int nwords;
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

/* The kind of a file from its name and content type (no bytes needed). */
const char *sx_kind(const char *name, const char *ctype);
/* Extract the text of one file held in memory. Returns 0 (text may still be NULL: nothing
 * to extract), or -1 with out->reason set. Stops at max_text bytes of text and after
 * `seconds` of work (checked between pages, parts and entries). Any thread. */
int sx_extract(const char *name, const char *ctype, const unsigned char *data, size_t len, size_t max_text,
               double seconds, sx_result *out);
void sx_free(sx_result *r);
void sx_global_init(void);

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
/* Call fn for each indexed path equal to or under prefix ("" for all). */
int si_paths(si_db *db, const char *prefix, void (*fn)(const char *path, const char *sha, int64_t mtime, void *ud),
             void *ud);
/* Counts for status. */
int si_counts(si_db *db, int64_t *ok, int64_t *failed, int64_t *skipped);
/* Up to `max` failures as "path: reason" into a JSON-free callback. */
int si_failures(si_db *db, int max, void (*fn)(const char *path, const char *reason, void *ud), void *ud);

typedef struct si_hit {
    int64_t id, tlen; /* the row and the length of its text, for si_snippets */
    char *path, *name, *kind, *snippet;
    int64_t size, mtime;
    double score; /* higher is better */
} si_hit;

/* Run q against one store's index: up to `max` hits, best first. *n receives the count,
 * *hits a malloc'd array (si_hits_free). -1 with err on a database failure. */
int si_search(si_db *db, const sq_query *q, int max, si_hit **hits, int *n, char *err, size_t errlen);
void si_hits_free(si_hit *hits, int n);
/* The snippets of hits[0..n) (their `id`) for q: FTS5's snippet() for texts up to 64 KiB,
 * a linear scan of our own for longer ones (snippet() is quadratic in the matches of a row).
 * Asked only for the hits shown, never for every match. Matched words are between the bytes
 * 2 and 3. */
int si_snippets(si_db *db, const sq_query *q, si_hit *hits, int n);

#endif
