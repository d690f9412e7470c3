/*
 * modules/search/index.c — one store's index: a SQLite database with FTS5 (issue 17).
 *
 * Schema (docs/search.md, docs/storage.md):
 *   docs(id, path UNIQUE, name, kind, ctype, size, mtime, sha256, status, reason)
 *   fts  FTS5(name, body), rowid = docs.id, unicode61 without diacritics; BM25 with the
 *        name column weighted NAME_WEIGHT times the body, so a word in a name ranks first
 *   tri  FTS5(name, tokenize=trigram), rowid = docs.id: substrings of names ("port" finds
 *        report.pdf)
 * The database is in WAL mode with synchronous=FULL: a commit that returned is on disk, so
 * the queue entry that asked for it can be deleted after it (search.c).
 *
 * Threads: a si_db is one connection, used by one thread at a time; search.c holds a mutex
 * per store around every call.
 */
#include "search.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NAME_WEIGHT "10.0"
#define SCHEMA_VERSION "2" /* PRAGMA user_version of a database this file made (2: prefix index of 4) */

struct si_db {
    sqlite3 *db;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
    " kind TEXT, ctype TEXT, size INTEGER, mtime INTEGER, sha256 TEXT, status TEXT, reason TEXT, tlen INTEGER);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(name, body, tokenize='unicode61 remove_diacritics 2',"
    " prefix='2 3 4');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS tri USING fts5(name, tokenize='trigram');";

static int open_one(const char *file, sqlite3 **out)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(file, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        rc = sqlite3_exec(db, schema, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) { /* a damaged file often opens fine and fails only here */
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "ok")
                     ? SQLITE_OK
                     : SQLITE_CORRUPT;
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "INSERT INTO fts(fts) VALUES('integrity-check')", NULL, NULL, NULL);
    if (rc == SQLITE_OK) { /* made by another version of this file: rebuilt like a damaged one */
        sqlite3_stmt *st = NULL;
        int have = -1, empty = 0;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            have = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (sqlite3_prepare_v2(db, "SELECT NOT EXISTS (SELECT 1 FROM docs)", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            empty = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (have == 0 && empty)
            rc = sqlite3_exec(db, "PRAGMA user_version = " SCHEMA_VERSION, NULL, NULL, NULL);
        else if (have != atoi(SCHEMA_VERSION))
            rc = SQLITE_SCHEMA;
    }
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

int si_open(const char *file, si_db **out, bool *rebuilt, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    *rebuilt = false;
    int rc = open_one(file, &db);
    if (rc) { /* corrupt or unreadable: keep it aside for a post-mortem and start anew */
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.corrupt", file);
        rename(file, aside);
        for (const char *ext = "-wal"; ext; ext = strcmp(ext, "-wal") ? NULL : "-shm") {
            char f[4200];
            snprintf(f, sizeof f, "%s%s", file, ext);
            unlink(f);
        }
        *rebuilt = true;
        rc = open_one(file, &db);
    }
    if (rc) {
        snprintf(err, errlen, "cannot open the index %s: %s", file, sqlite3_errstr(rc));
        return -1;
    }
    si_db *d = calloc(1, sizeof *d);
    if (!d) {
        sqlite3_close(db);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d->db = db;
    *out = d;
    return 0;
}

void si_close(si_db *db)
{
    if (db) {
        sqlite3_close(db->db);
        free(db);
    }
}

int si_begin(si_db *db) { return sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1; }
int si_commit(si_db *db) { return sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1; }
void si_rollback(si_db *db) { sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL); }

static sqlite3_stmt *prep(si_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db->db, sql, -1, 0, &st, NULL) != SQLITE_OK)
        return NULL;
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

int si_get(si_db *db, const char *path, char sha[65], int64_t *mtime)
{
    sqlite3_stmt *st = prep(db, "SELECT sha256, mtime FROM docs WHERE path = ?1");
    if (!st)
        return -1;
    bind_text(st, 1, path);
    int found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(sha, 65, "%s", col(st, 0));
        *mtime = sqlite3_column_int64(st, 1);
        found = 1;
    }
    sqlite3_finalize(st);
    return found;
}

static int exec_id(si_db *db, const char *sql, int64_t id)
{
    sqlite3_stmt *st = prep(db, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

static int remove_id(si_db *db, int64_t id)
{
    if (exec_id(db, "DELETE FROM fts WHERE rowid = ?1", id) || exec_id(db, "DELETE FROM tri WHERE rowid = ?1", id) ||
        exec_id(db, "DELETE FROM docs WHERE id = ?1", id))
        return -1;
    return 0;
}

int si_put(si_db *db, const si_doc *d)
{
    sqlite3_stmt *st = prep(db, "SELECT id FROM docs WHERE path = ?1");
    if (!st)
        return -1;
    bind_text(st, 1, d->path);
    int64_t old = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (old && remove_id(db, old))
        return -1;
    st = prep(db, "INSERT INTO docs(path, name, kind, ctype, size, mtime, sha256, status, reason, tlen)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (!st)
        return -1;
    bind_text(st, 1, d->path);
    bind_text(st, 2, d->name);
    bind_text(st, 3, d->kind);
    bind_text(st, 4, d->ctype);
    sqlite3_bind_int64(st, 5, d->size);
    sqlite3_bind_int64(st, 6, d->mtime);
    bind_text(st, 7, d->sha256);
    bind_text(st, 8, d->status);
    bind_text(st, 9, d->reason);
    sqlite3_bind_int64(st, 10, d->body ? (int64_t)strlen(d->body) : 0);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    if (rc)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(db->db);
    st = prep(db, "INSERT INTO fts(rowid, name, body) VALUES(?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, d->name);
    bind_text(st, 3, d->body ? d->body : "");
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    if (rc || !(st = prep(db, "INSERT INTO tri(rowid, name) VALUES(?1, ?2)")))
        return -1;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, d->name);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

/* Rows equal to prefix or under prefix/ ("" is everything): the range [prefix/, prefix0)
 * keeps the UNIQUE index in use, and '/' + 1 is '0'. */
/* `select` over the rows at or under path, every row for "" (?1 is path). Two forms, so that SQLite
 * searches the path index: one WHERE for both, with "?1 = ''" ORed in, made it scan the whole
 * table, per reconciled file: an upload burst into a big folder was indexed in O(files^2). */
static sqlite3_stmt *prep_under(si_db *db, const char *select, const char *path)
{
    char sql[160];
    snprintf(sql, sizeof sql, "%s%s", select, *path ? " WHERE path = ?1 OR (path >= ?1 || '/' AND path < ?1 || '0')" : "");
    sqlite3_stmt *st = prep(db, sql);
    if (st && *path)
        bind_text(st, 1, path);
    return st;
}

int si_remove(si_db *db, const char *path)
{
    sqlite3_stmt *st = prep_under(db, "SELECT id FROM docs", path);
    if (!st)
        return -1;
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *p = realloc(ids, cap * sizeof *ids);
            if (!p)
                break;
            ids = p;
        }
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = remove_id(db, ids[i]);
    free(ids);
    return rc;
}

int si_paths_after(si_db *db, const char *prefix, const char *after, int limit,
                   void (*fn)(const char *path, void *ud), void *ud)
{
    /* one range of the path index: (max(after, prefix/), prefix0) */
    sqlite3_stmt *st = prep(db, *prefix ? "SELECT path FROM docs WHERE path > max(?2, ?1 || '/') AND path < ?1 || '0'"
                                          " ORDER BY path LIMIT ?3"
                                        : "SELECT path FROM docs WHERE path > ?2 ORDER BY path LIMIT ?3");
    if (!st)
        return -1;
    bind_text(st, 1, prefix);
    bind_text(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        fn(col(st, 0), ud);
        n++;
    }
    sqlite3_finalize(st);
    return n;
}

int si_counts(si_db *db, int64_t *ok, int64_t *failed, int64_t *skipped)
{
    sqlite3_stmt *st = prep(db, "SELECT status, count(*) FROM docs WHERE kind != 'folder' GROUP BY status"); /* files */
    if (!st)
        return -1;
    *ok = *failed = *skipped = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *s = col(st, 0);
        int64_t n = sqlite3_column_int64(st, 1);
        *(strcmp(s, "failed") == 0 ? failed : strcmp(s, "skipped") == 0 ? skipped : ok) += n;
    }
    sqlite3_finalize(st);
    return 0;
}

int si_failures(si_db *db, int max, void (*fn)(const char *path, const char *reason, void *ud), void *ud)
{
    sqlite3_stmt *st = prep(db, "SELECT path, reason FROM docs WHERE status = 'failed' ORDER BY path LIMIT ?1");
    if (!st)
        return -1;
    sqlite3_bind_int(st, 1, max);
    while (sqlite3_step(st) == SQLITE_ROW)
        fn(col(st, 0), col(st, 1), ud);
    sqlite3_finalize(st);
    return 0;
}

int si_text(si_db *db, const char *path, size_t max, char **text, char sha[65])
{
    sqlite3_stmt *st = prep(db, "SELECT f.body, d.sha256 FROM docs d JOIN fts f ON f.rowid = d.id"
                                " WHERE d.path = ?1 AND d.status = 'ok'");
    if (!st)
        return -1;
    bind_text(st, 1, path);
    int rc = 0;
    *text = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *b = col(st, 0);
        size_t n = strlen(b);
        if (n > max) { /* cut at a character boundary */
            n = max;
            while (n && ((unsigned char)b[n] & 0xC0) == 0x80)
                n--;
        }
        *text = strndup(b, n);
        snprintf(sha, 65, "%s", col(st, 1));
        rc = *text ? 1 : -1;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------------ search --- */

/* The WHERE of the filters; parameters from ?10 on (?1 match, ?2 trigram, ?3 exclude). */
static void filters_sql(sq_buf *b, const sq_query *q)
{
    char t[160];
    int p = 10;
    if (q->ntypes) {
        sq_buf_s(b, " AND (0");
        for (int i = 0; i < q->ntypes; i++, p++) {
            snprintf(t, sizeof t, " OR d.kind = ?%d OR lower(d.name) LIKE '%%.' || ?%d ESCAPE '\\'", p, p);
            sq_buf_s(b, t);
        }
        sq_buf_s(b, ")");
    }
    if (q->nins) {
        sq_buf_s(b, " AND (0");
        for (int i = 0; i < q->nins; i++, p++) {
            snprintf(t, sizeof t, " OR ?%d = '' OR (d.path >= ?%d || '/' AND d.path < ?%d || '0')", p, p, p);
            sq_buf_s(b, t);
        }
        sq_buf_s(b, ")");
    }
    if (q->size_min >= 0 || q->size_max >= 0) /* a folder has no size of its own */
        sq_buf_s(b, " AND d.kind != 'folder'");
    if (q->size_min >= 0)
        snprintf(t, sizeof t, " AND d.size >= %lld", (long long)q->size_min), sq_buf_s(b, t);
    if (q->size_max >= 0)
        snprintf(t, sizeof t, " AND d.size <= %lld", (long long)q->size_max), sq_buf_s(b, t);
    if (q->mod_min >= 0)
        snprintf(t, sizeof t, " AND d.mtime >= %lld", (long long)q->mod_min), sq_buf_s(b, t);
    if (q->mod_max >= 0)
        snprintf(t, sizeof t, " AND d.mtime < %lld", (long long)q->mod_max), sq_buf_s(b, t);
}

/* A type value holds letters and digits only (query.c), so LIKE needs no escaping. */
static void filters_bind(sqlite3_stmt *st, const sq_query *q)
{
    int p = 10;
    for (int i = 0; i < q->ntypes; i++)
        bind_text(st, p++, q->types[i]);
    for (int i = 0; i < q->nins; i++)
        bind_text(st, p++, q->ins[i]);
}

static bool word_byte(unsigned char c) { return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80; }

/* Does the word [w, w+n) match wanted word k (ASCII case folded; a prefix word may be longer)? */
static bool word_is(const sq_query *q, int k, const char *w, size_t n)
{
    size_t l = strlen(q->words[k]);
    if (n < l || (n > l && !q->wprefix[k]))
        return false;
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c >= 'A' && c <= 'Z')
            c |= 32;
        if (c != (unsigned char)q->words[k][i])
            return false;
    }
    return true;
}

static bool wanted(const sq_query *q, const char *w, size_t n)
{
    for (int k = 0; k < q->nwords; k++)
        if (word_is(q, k, w, n))
            return true;
    return false;
}

/* A snippet of a long text, in time linear in the part read: FTS5's snippet() scores every window
 * against every match, which a long text with thousands of matches (a prefix) turns into minutes.
 * 16 words around the first wanted word of the first SNIPPET_SCAN bytes, the same markers. */
#define SNIPPET_SCAN (1 << 20)
static char *long_snippet(const sq_query *q, const char *t, size_t n)
{
    if (n > SNIPPET_SCAN)
        n = SNIPPET_SCAN;
    size_t starts[6] = {0}, first = 0, i = 0, seen = 0;
    bool found = false;
    while (i < n && !found) {
        while (i < n && !word_byte((unsigned char)t[i]))
            i++;
        size_t st = i;
        while (i < n && word_byte((unsigned char)t[i]))
            i++;
        if (i == st)
            break;
        starts[seen++ % 6] = st;
        if (wanted(q, t + st, i - st))
            found = true, first = starts[seen > 6 ? seen % 6 : 0];
    }
    if (!found)
        first = 0;
    sq_buf b = {0};
    if (first)
        sq_buf_s(&b, "…");
    int words = 0;
    for (i = first; i < n && words < 16;) {
        size_t st = i;
        while (i < n && !word_byte((unsigned char)t[i]))
            i++;
        sq_buf_add(&b, t + st, i - st);
        st = i;
        while (i < n && word_byte((unsigned char)t[i]))
            i++;
        if (i == st)
            break;
        bool m = wanted(q, t + st, i - st);
        if (m)
            sq_buf_s(&b, "\2");
        sq_buf_add(&b, t + st, i - st);
        if (m)
            sq_buf_s(&b, "\3");
        words++;
    }
    if (i < n)
        sq_buf_s(&b, "…");
    return b.p ? b.p : strdup("");
}

#define SHORT_TEXT 65536

/* The ids of the hits whose text is short (or long) as "1,2,3", or NULL when none. */
static char *id_list(const si_hit *hits, int n, bool longer)
{
    sq_buf b = {0};
    for (int i = 0; i < n; i++) {
        if ((hits[i].tlen > SHORT_TEXT) != longer)
            continue;
        char id[24];
        snprintf(id, sizeof id, "%s%lld", b.n ? "," : "", (long long)hits[i].id);
        sq_buf_s(&b, id);
    }
    return b.p;
}

static void take_snippets(si_db *db, const char *sql, const char *ids, const sq_query *q, si_hit *hits, int n,
                          bool longer)
{
    if (!ids)
        return;
    sq_buf b = {0};
    sq_buf_s(&b, sql);
    sq_buf_s(&b, ids);
    sq_buf_s(&b, ")");
    sqlite3_stmt *st = prep(db, b.p);
    free(b.p);
    if (!st)
        return;
    if (!longer)
        bind_text(st, 1, q->match);
    while (sqlite3_step(st) == SQLITE_ROW)
        for (int i = 0; i < n; i++)
            if (hits[i].id == sqlite3_column_int64(st, 0) && !hits[i].snippet)
                hits[i].snippet = longer ? long_snippet(q, col(st, 1), (size_t)sqlite3_column_bytes(st, 1))
                                         : strdup(col(st, 1));
    sqlite3_finalize(st);
}

int si_snippets(si_db *db, const sq_query *q, si_hit *hits, int n)
{
    char *shorter = id_list(hits, n, false), *longer = id_list(hits, n, true);
    /* short texts: FTS5's snippet (its tokenizer: case and diacritics folded like the index) */
    take_snippets(db,
                  "SELECT rowid, snippet(fts, -1, char(2), char(3), '…', 16) FROM fts WHERE fts MATCH ?1 AND rowid IN (",
                  shorter, q, hits, n, false);
    take_snippets(db, "SELECT rowid, body FROM fts WHERE rowid IN (", longer, q, hits, n, true);
    free(shorter);
    free(longer);
    return 0;
}

/* What every search asks of a match besides its words: no excluded word, the filters, a share's
 * subtree. Parameters ?3 (exclude), ?5 (within) and from ?10 on (the filters). */
static void where_sql(sq_buf *b, const sq_query *q)
{
    if (q->exclude)
        sq_buf_s(b, " AND d.id NOT IN (SELECT rowid FROM fts WHERE fts MATCH ?3)");
    filters_sql(b, q);
    if (q->within) /* a share: its file, or its folder's subtree */
        sq_buf_s(b, " AND (d.path = ?5 OR (d.path >= ?5 || '/' AND d.path < ?5 || '0'))");
}

static void where_bind(sqlite3_stmt *st, const sq_query *q)
{
    if (q->exclude)
        bind_text(st, 3, q->exclude);
    if (q->within)
        bind_text(st, 5, q->within);
    filters_bind(st, q);
}

static bool has_where(const sq_query *q)
{
    return q->exclude || q->within || q->ntypes || q->nins || q->size_min >= 0 || q->size_max >= 0 ||
           q->mod_min >= 0 || q->mod_max >= 0;
}

/* Where the newest `cap` matches of q start (rows are numbered as documents are added): *from
 * that row, or 0 when q has no more than cap matches. Walking a match list from its end is cheap;
 * ranking it whole is not (bm25 reads every match's positions and sizes). */
static int newest_from(si_db *db, const sq_query *q, int cap, int64_t *from, char *err, size_t errlen)
{
    sq_buf b = {0};
    *from = 0;
    if (has_where(q)) {
        sq_buf_s(&b, "SELECT d.id FROM fts JOIN docs d ON d.id = fts.rowid WHERE fts MATCH ?1");
        where_sql(&b, q);
    } else
        sq_buf_s(&b, "SELECT rowid FROM fts WHERE fts MATCH ?1");
    sq_buf_s(&b, " ORDER BY fts.rowid DESC LIMIT 1 OFFSET ?4");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->db, b.p, -1, &st, NULL);
    free(b.p);
    if (rc == SQLITE_OK) {
        bind_text(st, 1, q->match);
        sqlite3_bind_int(st, 4, cap - 1);
        where_bind(st, q);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *from = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, errlen, "the search index refused the query: %s", sqlite3_errmsg(db->db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

int si_search(si_db *db, const sq_query *q, int max, int cap, si_hit **hits, int *n, bool *cut, char *err,
              size_t errlen)
{
    sq_buf b = {0};
    int64_t from = 0;
    *hits = NULL, *n = 0, *cut = false;
    if (q->match && cap > 0 && newest_from(db, q, cap, &from, err, errlen))
        return -1;
    *cut = from > 0;
    /* matches first (FTS5 ranks them: bm25 is negative, lower is better; a name substring from
     * the trigram table only counts 0, so it comes after every match and is not asked for when
     * the matches were cut: there are more of them than any page reaches), then the documents'
     * rows and the filters */
    if (q->match) {
        sq_buf_s(&b, "SELECT d.id, d.path, d.name, d.kind, d.size, d.mtime, -b.r, d.tlen FROM (SELECT rowid AS id, bm25(fts, "
                     NAME_WEIGHT ", 1.0) AS r FROM fts WHERE fts MATCH ?1");
        if (*cut)
            sq_buf_s(&b, " AND rowid >= ?6");
        else if (q->trigram) /* names holding the words as substrings, unless the words matched already */
            sq_buf_s(&b, " UNION ALL SELECT rowid, 0.0 FROM tri WHERE tri MATCH ?2"
                         " AND rowid NOT IN (SELECT rowid FROM fts WHERE fts MATCH ?1)");
        sq_buf_s(&b, ") b JOIN docs d ON d.id = b.id WHERE 1");
    } else
        sq_buf_s(&b, "SELECT d.id, d.path, d.name, d.kind, d.size, d.mtime, 0.0, d.tlen FROM docs d WHERE 1");
    where_sql(&b, q);
    sq_buf_s(&b, " ORDER BY 7 DESC, d.mtime DESC, d.id LIMIT ?4");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->db, b.p, -1, &st, NULL);
    free(b.p);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "the search index refused the query: %s", sqlite3_errmsg(db->db));
        return -1;
    }
    if (q->match)
        bind_text(st, 1, q->match);
    if (q->trigram && !*cut)
        bind_text(st, 2, q->trigram);
    sqlite3_bind_int(st, 4, max);
    if (*cut)
        sqlite3_bind_int64(st, 6, from);
    where_bind(st, q);
    si_hit *h = calloc((size_t)(max > 0 ? max : 1), sizeof *h);
    int64_t *ids = calloc((size_t)(max > 0 ? max : 1), sizeof *ids);
    int k = 0;
    while (h && ids && k < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        ids[k] = sqlite3_column_int64(st, 0);
        h[k].path = strdup(col(st, 1));
        h[k].name = strdup(col(st, 2));
        h[k].kind = strdup(col(st, 3));
        h[k].size = sqlite3_column_int64(st, 4);
        h[k].mtime = sqlite3_column_int64(st, 5);
        h[k].score = sqlite3_column_double(st, 6);
        h[k].tlen = sqlite3_column_int64(st, 7);
        k++;
    }
    if (!h || !ids || (k < max && rc != SQLITE_DONE)) {
        snprintf(err, errlen, "the search index failed: %s", h && ids ? sqlite3_errmsg(db->db) : "out of memory");
        sqlite3_finalize(st);
        si_hits_free(h, k);
        free(ids);
        return -1;
    }
    sqlite3_finalize(st);
    for (int i = 0; i < k; i++)
        h[i].id = ids[i];
    free(ids);
    *hits = h, *n = k;
    return 0;
}

void si_hits_free(si_hit *hits, int n)
{
    for (int i = 0; hits && i < n; i++) {
        free(hits[i].path);
        free(hits[i].name);
        free(hits[i].kind);
        free(hits[i].snippet);
    }
    free(hits);
}
