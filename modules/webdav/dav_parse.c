/*
 * dav_parse.c — the webdav module's parsers of outside bytes that need nothing else: the If
 * header (RFC 4918 section 10.4) and the path of a Destination or tagged-list URI. Pure
 * functions, compiled into the module and into tests/fuzz/fuzz_dav.c. No state, any thread.
 */
#include "dav.h"
#include <ctype.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *dav_skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    return s;
}

/* Copy up to `close` into out (cut to n-1 bytes); returns the char after `close` or NULL. */
const char *dav_read_until(const char *s, char close, char *out, size_t n)
{
    const char *e = strchr(s, close);
    if (!e)
        return NULL;
    size_t l = (size_t)(e - s);
    if (l >= n)
        l = n - 1;
    memcpy(out, s, l);
    out[l] = 0;
    return e + 1;
}

/* The header ended inside its last list. Some clients cut long If headers (litmus sends
 * about 200 bytes, so two lists of a lock token and a SHA-256 ETag lose their end): the cut
 * list is dropped, as one that cannot hold; it neither makes a request pass nor submits a
 * token. With no whole list left the header is malformed. */
static int cut_off(dav_if *out)
{
    out->n--;
    return out->n ? 0 : MB_EINVAL;
}

int dav_if_parse(const char *s, dav_if *out)
{
    out->n = 0;
    char tag[512] = "";
    bool tagged = false;
    s = dav_skip_ws(s);
    if (!*s)
        return MB_EINVAL;
    while (*(s = dav_skip_ws(s))) {
        if (*s == '<') {
            if (!(s = dav_read_until(s + 1, '>', tag, sizeof tag)))
                return MB_EINVAL;
            tagged = true;
            if (*dav_skip_ws(s) != '(')
                return MB_EINVAL;
            continue;
        }
        if (*s != '(' || out->n == DAV_IF_MAX)
            return MB_EINVAL;
        dav_if_list *l = &out->l[out->n++];
        snprintf(l->tag, sizeof l->tag, "%s", tagged ? tag : "");
        l->n = 0;
        s++;
        for (;;) {
            s = dav_skip_ws(s);
            if (!*s)
                return cut_off(out);
            if (*s == ')') {
                s++;
                break;
            }
            if (l->n == DAV_IF_MAX)
                return MB_EINVAL;
            dav_if_cond *c = &l->c[l->n];
            c->not_ = false;
            if (!strncasecmp(s, "Not", 3) && (s[3] == ' ' || s[3] == '\t' || s[3] == '<' || s[3] == '[')) {
                c->not_ = true;
                s = dav_skip_ws(s + 3);
            }
            if (*s == '<') {
                c->etag = false;
                s = dav_read_until(s + 1, '>', c->value, sizeof c->value);
            } else if (*s == '[') {
                c->etag = true;
                s = dav_read_until(s + 1, ']', c->value, sizeof c->value);
            } else
                return MB_EINVAL;
            if (!s)
                return cut_off(out);
            l->n++;
        }
        if (l->n == 0)
            return MB_EINVAL;
    }
    return 0;
}

int dav_uri_path(const char *uri, char *out, size_t n)
{
    const char *p = uri;
    const char *scheme = strstr(uri, "://");
    if (scheme) {
        p = strchr(scheme + 3, '/');
        if (!p)
            return MB_ENOENT;
    }
    if (strncmp(p, "/dav", 4) || (p[4] && p[4] != '/' && p[4] != '?' && p[4] != '#'))
        return MB_ENOENT;
    p += 4;
    size_t o = 0;
    while (*p == '/')
        p++;
    while (*p && *p != '?' && *p != '#') {
        size_t start = o;
        while (*p && *p != '/' && *p != '?' && *p != '#') {
            int c = (unsigned char)*p;
            if (c == '%') {
                char hx[3] = {p[1], p[1] ? p[2] : 0, 0};
                if (!isxdigit((unsigned char)hx[0]) || !isxdigit((unsigned char)hx[1]))
                    return MB_EINVAL;
                c = (int)strtol(hx, NULL, 16);
                p += 3;
            } else
                p++;
            if (c == 0 || c == '/')
                return MB_EINVAL;
            if (o + 2 >= n)
                return MB_EINVAL;
            out[o++] = (char)c;
        }
        size_t seg = o - start;
        if ((seg == 1 && out[start] == '.') || (seg == 2 && out[start] == '.' && out[start + 1] == '.'))
            return MB_EINVAL;
        while (*p == '/')
            p++;
        if (seg && *p && *p != '?' && *p != '#')
            out[o++] = '/';
    }
    if (o && out[o - 1] == '/')
        o--;
    out[o] = 0;
    return 0;
}

