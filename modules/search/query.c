/*
 * modules/search/query.c — the search query language (docs/search.md) turned into an FTS5
 * MATCH expression and a set of filters.
 *
 * Safety: user text never reaches MATCH as syntax. Every word and phrase becomes an FTS5
 * string ("..." with '"' doubled); the only syntax in the output is what this file writes
 * (AND, OR, NOT, parentheses, the prefix '*'). A word made of punctuation only ("-", "(",
 * "***") carries no token and is dropped, so FTS5 never sees an empty string. Input that is
 * not UTF-8, too long or with too many terms is refused with a sentence (the route answers 400).
 *
 * Grammar: terms separated by spaces; "a phrase" (an open quote runs to the end); word* is a
 * prefix; -term excludes; OR between two terms makes them alternatives (binds tighter than
 * the implicit AND); filters type:x in:/path store:name size>10MB modified>2026-01-01 tag:x.
 *
 * Pure: no globals, any thread (the fuzz target compiles this file).
 */
#include "search.h"
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sq_buf_add(sq_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void sq_buf_s(sq_buf *b, const char *s) { sq_buf_add(b, s, strlen(s)); }

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static bool utf8_ok(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s & 0xE0) == 0xC0 ? 1 : (*s & 0xF0) == 0xE0 ? 2 : (*s & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && *s < 0xC2) || (n == 3 && *s > 0xF4))
            return false;
        unsigned cp = n == 0 ? *s : n == 1 ? (*s & 0x1F) : n == 2 ? (*s & 0x0F) : (*s & 0x07);
        s++;
        for (int i = 0; i < n; i++, s++) {
            if ((*s & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (*s & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
    }
    return true;
}

/* Does the text hold anything the unicode61 tokenizer keeps (a letter, a digit, non-ASCII)? */
static bool has_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (isalnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* One FTS5 string: "..." with every '"' doubled. */
static void fts_string(sq_buf *b, const char *s, size_t n)
{
    sq_buf_s(b, "\"");
    for (size_t i = 0; i < n; i++)
        sq_buf_add(b, s[i] == '"' ? "\"\"" : s + i, 1 + (s[i] == '"'));
    sq_buf_s(b, "\"");
}

typedef struct term {
    const char *s;
    size_t n;
    bool phrase, prefix, neg, or_next;
} term;

/* A token of the input: a quoted phrase or a run of non-space bytes. *end is after it. */
static const char *next_token(const char *p, const char **end, bool *quoted)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
        p++;
    if (!*p)
        return NULL;
    const char *q = p;
    if (*q == '-' && q[1] == '"')
        q++;
    if (*q == '"') {
        const char *c = strchr(q + 1, '"');
        *end = c ? c + 1 : q + strlen(q);
        *quoted = true;
        return p;
    }
    while (*q && !strchr(" \t\n\r\f\v", *q)) {
        if (*q == ':' && q[1] == '"') { /* in:"/My Documents" */
            const char *c = strchr(q + 2, '"');
            q = c ? c + 1 : q + strlen(q);
            break;
        }
        q++;
    }
    *end = q;
    *quoted = false;
    return p;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        abort();
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* The value of a filter, quotes taken off. */
static char *filter_value(const char *s, size_t n)
{
    if (n && s[0] == '"') {
        s++, n--;
        if (n && s[n - 1] == '"')
            n--;
    }
    return dup_n(s, n);
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* YYYY, YYYY-MM or YYYY-MM-DD -> [start, end) in Unix seconds (UTC). */
static bool parse_date(const char *v, int64_t *start, int64_t *end)
{
    int y = 0, m = 0, d = 0, used = 0;
    size_t n = strlen(v);
    if (n == 10 && sscanf(v, "%4d-%2d-%2d%n", &y, &m, &d, &used) == 3 && used == 10) {
        if (m < 1 || d < 1) /* 2026-00-01, 2026-01-00: no such day */
            return false;
    } else if (n == 7 && sscanf(v, "%4d-%2d%n", &y, &m, &used) == 2 && used == 7) {
        if (m < 1)
            return false;
        d = 0;
    } else if (n == 4 && sscanf(v, "%4d%n", &y, &used) == 1 && used == 4) {
        m = 0;
    } else
        return false;
    if (y < 1970 || y > 9999 || m < 0 || m > 12 || d < 0 || d > 31 || strspn(v, "0123456789-") != n)
        return false;
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d && ((unsigned)d > mdays[m - 1] || (m == 2 && d == 29 && !leap)))
        return false;
    if (!m) {
        *start = days_from_civil(y, 1, 1) * 86400;
        *end = days_from_civil(y + 1, 1, 1) * 86400;
    } else if (!d) {
        *start = days_from_civil(y, (unsigned)m, 1) * 86400;
        *end = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : (unsigned)m + 1, 1) * 86400;
    } else {
        *start = days_from_civil(y, (unsigned)m, (unsigned)d) * 86400;
        *end = *start + 86400;
    }
    return true;
}

/* 10MB, 1.5g, 500, 2KiB -> bytes (1024-based units). */
static bool parse_size(const char *v, int64_t *out)
{
    char *e;
    if (!isdigit((unsigned char)*v))
        return false;
    double x = strtod(v, &e);
    double mul = 1;
    char u[8] = {0};
    size_t n = strlen(e);
    if (n > 3)
        return false;
    for (size_t i = 0; i < n; i++)
        u[i] = (char)tolower((unsigned char)e[i]);
    if (!*u || !strcmp(u, "b"))
        mul = 1;
    else if (!strcmp(u, "k") || !strcmp(u, "kb") || !strcmp(u, "kib"))
        mul = 1024.0;
    else if (!strcmp(u, "m") || !strcmp(u, "mb") || !strcmp(u, "mib"))
        mul = 1024.0 * 1024;
    else if (!strcmp(u, "g") || !strcmp(u, "gb") || !strcmp(u, "gib"))
        mul = 1024.0 * 1024 * 1024;
    else if (!strcmp(u, "t") || !strcmp(u, "tb") || !strcmp(u, "tib"))
        mul = 1024.0 * 1024 * 1024 * 1024;
    else
        return false;
    x *= mul;
    if (!(x >= 0) || x > 9.0e18)
        return false;
    *out = (int64_t)x;
    return true;
}

/* "size>10MB" or "modified<=2026-01" : the comparison after the key. */
static int comparison(const char *s, size_t n, const char **val)
{
    if (n >= 2 && s[0] == '>' && s[1] == '=')
        return *val = s + 2, 3;
    if (n >= 2 && s[0] == '<' && s[1] == '=')
        return *val = s + 2, 4;
    if (n >= 1 && s[0] == '>')
        return *val = s + 1, 1;
    if (n >= 1 && s[0] == '<')
        return *val = s + 1, 2;
    if (n >= 1 && (s[0] == '=' || s[0] == ':'))
        return *val = s + 1, 5;
    return 0;
}

static void narrow(int64_t *min, int64_t *max, int64_t lo, int64_t hi)
{
    if (lo >= 0 && (*min < 0 || lo > *min))
        *min = lo;
    if (hi >= 0 && (*max < 0 || hi < *max))
        *max = hi;
}

/* tag:x (every one must be there) or tag:-x (must not): kept as given, the tags module reads the
 * names (tagfilt.c). 1 taken, -1 refused. */
static int take_tag(sq_query *q, char **v, char *err, size_t errlen)
{
    if (!**v || !strcmp(*v, "-"))
        return fail(err, errlen, "tag: needs a tag name, as in tag:invoice or tag:-paid");
    if (q->ntags == SQ_MAX_FILTERS)
        return fail(err, errlen, "too many tag: filters (at most %d)", SQ_MAX_FILTERS);
    q->tags[q->ntags++] = *v;
    *v = NULL;
    return 1;
}

/* A filter token: 1 taken, 0 not a filter, -1 refused (err filled). */
static int take_filter(sq_query *q, const char *s, size_t n, char *err, size_t errlen)
{
    static const char *const keys[] = {"type", "in", "store", "tag", "size", "modified"};
    size_t k = 0;
    for (; k < sizeof keys / sizeof *keys; k++) {
        size_t kl = strlen(keys[k]);
        if (n > kl && !strncasecmp(s, keys[k], kl) && strchr(":<>=", s[kl]))
            break;
    }
    if (k == sizeof keys / sizeof *keys)
        return 0;
    size_t kl = strlen(keys[k]);
    const char *rest = s + kl;
    size_t rn = n - kl;
    if (k <= 3) { /* type, in, store, tag take ':' only */
        if (*rest != ':')
            return 0;
        char *v = filter_value(rest + 1, rn - 1);
        int rc = 1;
        if (k == 3)
            rc = take_tag(q, &v, err, errlen);
        else if (!*v && k != 1)
            rc = fail(err, errlen, "%s: needs a value, as in %s", keys[k], k == 0 ? "type:pdf" : "store:Home");
        else if (k == 0) {
            for (char *c = v; *c; c++) {
                *c = (char)tolower((unsigned char)*c);
                if (!isalnum((unsigned char)*c))
                    rc = fail(err, errlen, "type: is a kind (pdf, document, image...) or an extension, letters and digits only");
            }
            if (rc == 1 && q->ntypes == SQ_MAX_FILTERS)
                rc = fail(err, errlen, "too many type: filters (at most %d)", SQ_MAX_FILTERS);
            if (rc == 1)
                q->types[q->ntypes++] = v, v = NULL;
        } else if (k == 1) {
            char *p = v;
            while (*p == '/')
                p++;
            size_t l = strlen(p);
            while (l && p[l - 1] == '/')
                l--;
            if (q->nins == SQ_MAX_FILTERS)
                rc = fail(err, errlen, "too many in: filters (at most %d)", SQ_MAX_FILTERS);
            else
                q->ins[q->nins++] = dup_n(p, l);
        } else {
            if (q->nstores == SQ_MAX_FILTERS)
                rc = fail(err, errlen, "too many store: filters (at most %d)", SQ_MAX_FILTERS);
            else
                q->stores[q->nstores++] = v, v = NULL;
        }
        free(v);
        return rc;
    }
    const char *val = NULL;
    int op = comparison(rest, rn, &val);
    if (!op)
        return 0;
    char *v = filter_value(val, rn - (size_t)(val - rest));
    int rc = 1;
    if (k == 4) {
        int64_t b;
        if (!parse_size(v, &b))
            rc = fail(err, errlen, "size: expected a number with an optional unit (B, KB, MB, GB, TB), as in size>10MB");
        else if (op == 1)
            narrow(&q->size_min, &q->size_max, b + 1, -1);
        else if (op == 3)
            narrow(&q->size_min, &q->size_max, b, -1);
        else if (op == 2 && b == 0)
            q->size_min = 1, q->size_max = 0; /* nothing is smaller than 0 bytes */
        else if (op == 2)
            narrow(&q->size_min, &q->size_max, -1, b - 1);
        else if (op == 4)
            narrow(&q->size_min, &q->size_max, -1, b);
        else
            narrow(&q->size_min, &q->size_max, b, b);
    } else {
        int64_t st, en;
        if (!parse_date(v, &st, &en))
            rc = fail(err, errlen, "modified: expected a date YYYY-MM-DD, YYYY-MM or YYYY, as in modified>2026-01-01");
        else if (op == 1)
            narrow(&q->mod_min, &q->mod_max, en, -1);
        else if (op == 3)
            narrow(&q->mod_min, &q->mod_max, st, -1);
        else if (op == 2)
            narrow(&q->mod_min, &q->mod_max, -1, st);
        else if (op == 4)
            narrow(&q->mod_min, &q->mod_max, -1, en);
        else
            narrow(&q->mod_min, &q->mod_max, st, en);
    }
    free(v);
    return rc;
}

static bool word_byte(unsigned char c) { return isalnum(c) || c >= 0x80; }

/* The words of a wanted term, for snippets. */
static void take_words(sq_query *q, const term *t)
{
    size_t i = 0;
    while (i < t->n && q->nwords < 2 * SQ_MAX_TERMS) {
        while (i < t->n && !word_byte((unsigned char)t->s[i]))
            i++;
        size_t st = i;
        while (i < t->n && word_byte((unsigned char)t->s[i]))
            i++;
        if (i == st)
            break;
        char *w = dup_n(t->s + st, i - st);
        for (char *c = w; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        q->wprefix[q->nwords] = t->prefix && i >= t->n;
        q->words[q->nwords++] = w;
    }
}

/* One term as FTS5 syntax. */
static void term_fts(sq_buf *b, const term *t)
{
    fts_string(b, t->s, t->n);
    if (t->prefix)
        sq_buf_s(b, " *");
}

int sq_parse(const char *qs, sq_query *q, char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    q->size_min = q->size_max = q->mod_min = q->mod_max = -1;
    if (!qs)
        qs = "";
    if (strlen(qs) > SQ_MAX_INPUT)
        return fail(err, errlen, "the query is too long (at most %d bytes)", SQ_MAX_INPUT);
    if (!utf8_ok((const unsigned char *)qs))
        return fail(err, errlen, "the query is not valid UTF-8");
    term terms[SQ_MAX_TERMS];
    int nt = 0;
    bool pending_or = false;
    const char *p = qs, *end;
    bool quoted;
    int rc = 0;
    while ((p = next_token(p, &end, &quoted))) {
        const char *s = p;
        size_t n = (size_t)(end - p);
        p = end;
        if (!quoted && n == 2 && !strncmp(s, "OR", 2)) {
            if (nt > 0 && !terms[nt - 1].neg)
                pending_or = true;
            continue;
        }
        if (!quoted) {
            int f = take_filter(q, s, n, err, errlen);
            if (f < 0) {
                rc = -1;
                break;
            }
            if (f > 0) {
                pending_or = false;
                continue;
            }
        }
        term t = {0};
        if (*s == '-' && n > 1) {
            t.neg = true;
            s++, n--;
        }
        if (*s == '"') {
            t.phrase = true;
            s++, n--;
            if (n && s[n - 1] == '"')
                n--;
        } else {
            while (n && s[n - 1] == '*')
                n--, t.prefix = true;
            while (n && (*s == '(' || *s == ')')) /* grouping is not part of the language */
                s++, n--;
            while (n && (s[n - 1] == ')' || s[n - 1] == '('))
                n--;
        }
        if (n > 256)
            n = 256;
        if (!has_token(s, n)) {
            pending_or = false;
            continue;
        }
        if (nt == SQ_MAX_TERMS) {
            rc = fail(err, errlen, "the query has too many terms (at most %d)", SQ_MAX_TERMS);
            break;
        }
        t.s = s, t.n = n;
        if (pending_or && !t.neg)
            terms[nt - 1].or_next = true;
        pending_or = false;
        terms[nt++] = t;
    }
    if (rc) {
        sq_free(q);
        return rc;
    }
    sq_buf m = {0}, x = {0}, tri = {0};
    bool simple = true; /* only plain words (no phrase, OR): the trigram table can match them in names */
    int npos = 0;
    for (int i = 0; i < nt; i++) {
        if (terms[i].neg) {
            if (x.n)
                sq_buf_s(&x, " OR ");
            term_fts(&x, &terms[i]);
            continue;
        }
        if (m.n)
            sq_buf_s(&m, " AND ");
        npos++;
        for (int j = i; j < nt && (j == i || terms[j - 1].or_next); j++)
            take_words(q, &terms[j]);
        bool group = terms[i].or_next;
        if (group) {
            simple = false;
            sq_buf_s(&m, "(");
        }
        term_fts(&m, &terms[i]);
        while (terms[i].or_next && i + 1 < nt) {
            sq_buf_s(&m, " OR ");
            term_fts(&m, &terms[++i]);
        }
        if (group)
            sq_buf_s(&m, ")");
        if (terms[i].phrase)
            simple = false;
        if (simple) {
            if (terms[i].n < 3)
                simple = false; /* trigram strings need 3 bytes */
            else {
                if (tri.n)
                    sq_buf_s(&tri, " AND ");
                fts_string(&tri, terms[i].s, terms[i].n);
            }
        }
    }
    q->match = m.p;
    q->exclude = x.p;
    if (simple && npos)
        q->trigram = tri.p;
    else
        free(tri.p);
    if (!q->match && !q->ntypes && !q->nins && !q->nstores && !q->ntags && q->size_min < 0 && q->size_max < 0 &&
        q->mod_min < 0 && q->mod_max < 0) {
        sq_free(q);
        return fail(err, errlen, "the query has no word or filter to search for");
    }
    return 0;
}

void sq_free(sq_query *q)
{
    free(q->match);
    free(q->exclude);
    free(q->trigram);
    for (int i = 0; i < q->ntypes; i++)
        free(q->types[i]);
    for (int i = 0; i < q->nins; i++)
        free(q->ins[i]);
    for (int i = 0; i < q->nstores; i++)
        free(q->stores[i]);
    for (int i = 0; i < q->ntags; i++)
        free(q->tags[i]);
    for (int i = 0; i < q->nwords; i++)
        free(q->words[i]);
    memset(q, 0, sizeof *q);
}
