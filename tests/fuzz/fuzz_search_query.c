/* Fuzz target: the search query parser (modules/search/query.c). Any input is refused with a
 * sentence or accepted; an accepted query's expressions are what FTS5 accepts (each is run
 * against an in-memory FTS5 table: a syntax error there would be a 500 in the server), and
 * the filters hold sane values. */
#include "../../modules/search/search.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3 *db;

static void must_run(const char *table, const char *expr)
{
    if (!expr)
        return;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE %s MATCH ?1", table, table);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        __builtin_trap();
    sqlite3_bind_text(st, 1, expr, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        __builtin_trap(); /* FTS5 refused what the parser wrote */
    sqlite3_finalize(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!db) {
        if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
            sqlite3_exec(db,
                         "CREATE VIRTUAL TABLE fts USING fts5(name, body, tokenize='unicode61 remove_diacritics 2');"
                         "CREATE VIRTUAL TABLE tri USING fts5(name, tokenize='trigram');"
                         "INSERT INTO fts VALUES('report.pdf', 'alpha beta gamma');"
                         "INSERT INTO tri VALUES('report.pdf');",
                         NULL, NULL, NULL) != SQLITE_OK)
            abort();
    }
    char *q = malloc(size + 1);
    memcpy(q, data, size);
    q[size] = 0;
    sq_query out;
    char err[256] = "";
    if (sq_parse(q, &out, err, sizeof err) == 0) {
        must_run("fts", out.match);
        must_run("fts", out.exclude);
        must_run("tri", out.trigram);
        if (!out.match && !out.ntypes && !out.nins && !out.nstores && !out.ntags && out.size_min < 0 && out.size_max < 0 &&
            out.mod_min < 0 && out.mod_max < 0)
            __builtin_trap(); /* an accepted query searches for something */
        for (int i = 0; i < out.nins; i++)
            if (out.ins[i][0] == '/' || (*out.ins[i] && out.ins[i][strlen(out.ins[i]) - 1] == '/'))
                __builtin_trap();
        sq_free(&out);
    } else if (!err[0])
        __builtin_trap(); /* every refusal has a sentence */
    free(q);
    return 0;
}
