/*
 * jsonw.c — the compact JSON text of a jansson value, byte for byte what
 * json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes, for the records and replies every
 * request makes.
 *
 * jansson's dump goes through a growing strbuffer a few bytes at a time, formats every
 * integer with snprintf and decodes every string as UTF-8 to find what to escape: about
 * 19,000 instructions for one namespace record, 4 records and a reply per small upload
 * (a fifth of a 4 KiB PUT, callgrind). Here the text goes into one buffer, integers are
 * written by hand, and a string is copied in runs between the bytes that need escaping
 * (json_t strings are valid UTF-8 already: jansson checks at creation, so the bytes above
 * 0x7f are copied as they are, as jansson's dump without JSON_ENSURE_ASCII does). A real
 * number, rare in records, is handed to jansson so its text is jansson's.
 *
 * tests/unit/test_jsonw.c compares the two on every kind of value and on random trees.
 */
#include "kernel.h"
#include <stdlib.h>
#include <string.h>

typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

static void grow(jbuf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static inline void put(jbuf *b, const char *s, size_t n)
{
    grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static inline void putc1(jbuf *b, char c)
{
    grow(b, 1);
    b->p[b->n++] = c;
}

static void put_int(jbuf *b, json_int_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    /* through unsigned so that the most negative value has a magnitude */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    put(b, tmp + i, sizeof tmp - i);
}

static void put_str(jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    grow(b, n + 2);
    b->p[b->n++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(b, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            en = 6;
        }
        put(b, e, en);
    }
    put(b, s + run, n - run);
    putc1(b, '"');
}

static void dump(jbuf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        putc1(b, '{');
        const char *k;
        size_t kl;
        json_t *m;
        bool first = true;
        json_object_keylen_foreach((json_t *)v, k, kl, m) {
            if (!first)
                putc1(b, ',');
            first = false;
            put_str(b, k, kl);
            putc1(b, ':');
            dump(b, m);
        }
        putc1(b, '}');
        break;
    }
    case JSON_ARRAY: {
        putc1(b, '[');
        for (size_t i = 0, n = json_array_size(v); i < n; i++) {
            if (i)
                putc1(b, ',');
            dump(b, json_array_get(v, i));
        }
        putc1(b, ']');
        break;
    }
    case JSON_STRING: put_str(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: put_int(b, json_integer_value(v)); break;
    case JSON_REAL: {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!s)
            abort(); /* as xmalloc: only out of memory fails for a number */
        put(b, s, strlen(s));
        free(s);
        break;
    }
    case JSON_TRUE: put(b, "true", 4); break;
    case JSON_FALSE: put(b, "false", 5); break;
    case JSON_NULL: put(b, "null", 4); break;
    }
}

char *jsonw_dump(const json_t *v, size_t *len)
{
    jbuf b = {0};
    grow(&b, 256);
    dump(&b, v);
    putc1(&b, 0);
    if (len)
        *len = b.n - 1;
    return b.p;
}
