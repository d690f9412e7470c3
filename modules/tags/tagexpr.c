/*
 * modules/tags/tagexpr.c — tag names and the listing filter syntax, the parts of the tags module
 * that read outside bytes with no kernel call (fuzzed by tests/fuzz/fuzz_tags_filter.c).
 *
 * A tag name is 1..64 bytes of valid UTF-8 after trimming spaces, without control characters,
 * commas, or a leading '-' (which means NOT in a filter). Names compare case-insensitively
 * (ASCII letters folded; other letters compare as written). A filter value is one name, "-name"
 * (must not carry it), or, for `any`, one name of which at least one must be present.
 * Pure functions; no shared state.
 */
#include "tags.h"
#include <string.h>

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + len > n || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4))
            return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        if (len == 3 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0)))
            return false;
        if (len == 4 && ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)))
            return false;
        i += len;
    }
    return true;
}

static int why_set(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return -1;
}

int tagx_norm(const char *in, char *out, size_t outlen, char *why, size_t whylen)
{
    if (!in)
        return why_set(why, whylen, "a tag is a string");
    while (*in == ' ')
        in++;
    size_t n = strlen(in);
    while (n && in[n - 1] == ' ')
        n--;
    if (!n)
        return why_set(why, whylen, "a tag name is not empty");
    if (n > TAG_MAX || n >= outlen)
        return why_set(why, whylen, "a tag name is at most 64 bytes");
    if (in[0] == '-')
        return why_set(why, whylen, "a tag name does not start with '-' (a filter's NOT)");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)in[i] < 0x20 || in[i] == 0x7f || in[i] == ',')
            return why_set(why, whylen, "a tag name has no control characters and no commas");
    if (!utf8_valid((const unsigned char *)in, n))
        return why_set(why, whylen, "a tag name is UTF-8");
    memcpy(out, in, n);
    out[n] = 0;
    return 0;
}

void tagx_lower(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; in[i] && i + 1 < outlen; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] + 32) : in[i];
    out[i] = 0;
}

int tagx_filter_add(tag_filter *f, const char *value, bool any, char *why, size_t whylen)
{
    bool neg = !any && value && value[0] == '-';
    char name[TAG_MAX + 1], low[TAG_MAX + 1];
    if (tagx_norm(neg ? value + 1 : value, name, sizeof name, why, whylen))
        return -1;
    tagx_lower(name, low, sizeof low);
    json_t **arr = any ? &f->any : neg ? &f->not : &f->want;
    if (!*arr)
        *arr = json_array();
    json_array_append_new(*arr, json_string(low));
    return 0;
}

static bool has(const json_t *names, const char *low)
{
    size_t i;
    json_t *v;
    char l[TAG_MAX + 1];
    json_array_foreach(names, i, v) {
        const char *s = json_string_value(v);
        if (!s)
            continue;
        tagx_lower(s, l, sizeof l);
        if (!strcmp(l, low))
            return true;
    }
    return false;
}

bool tagx_match(const tag_filter *f, const json_t *names)
{
    size_t i;
    json_t *v;
    json_array_foreach(f->want, i, v) if (!has(names, json_string_value(v))) return false;
    json_array_foreach(f->not, i, v) if (has(names, json_string_value(v))) return false;
    if (json_array_size(f->any)) {
        json_array_foreach(f->any, i, v) if (has(names, json_string_value(v))) return true;
        return false;
    }
    return true;
}

void tagx_filter_free(tag_filter *f)
{
    json_decref(f->want);
    json_decref(f->not);
    json_decref(f->any);
    f->want = f->not = f->any = NULL;
}
