/*
 * modules/rclone/rc_util.c — rcd's answers read, names encoded (rc_util.h).
 */
#include "rc_util.h"
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t rcu_time(const char *s, size_t n)
{
    char t[40];
    if (!s || n < 20 || n >= sizeof t)
        return 0;
    memcpy(t, s, n);
    t[n] = 0;
    struct tm tm = {0};
    const char *p = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return 0;
    if (*p == '.') /* the fraction of a second: not kept */
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int64_t off = 0;
    if (*p == 'Z')
        p++;
    else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '2' && p[2] >= '0' && p[2] <= '9' && p[3] == ':' &&
             p[4] >= '0' && p[4] <= '5' && p[5] >= '0' && p[5] <= '9') {
        off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
        if (*p == '-')
            off = -off;
        p += 6;
    } else
        return 0;
    if (*p)
        return 0;
    return (int64_t)timegm(&tm) - off;
}

static void item_fields(const json_t *it, uint64_t *size, int64_t *mtime)
{
    json_int_t sz = json_integer_value(json_object_get(it, "Size"));
    const json_t *mt = json_object_get(it, "ModTime");
    if (size)
        *size = sz > 0 ? (uint64_t)sz : 0;
    if (mtime)
        *mtime = json_is_string(mt) ? rcu_time(json_string_value(mt), json_string_length(mt)) : 0;
}

int rcu_list_parse(const char *buf, size_t len,
                   int (*fn)(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud), void *ud)
{
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *list = json_object_get(doc, "list");
    if (!json_is_array(list)) {
        json_decref(doc);
        return -1;
    }
    size_t i;
    const json_t *it;
    int rc = 0;
    json_array_foreach(list, i, it) {
        const json_t *name = json_object_get(it, "Name");
        if (!json_is_string(name))
            continue; /* not an item (jansson refuses a whole answer with a NUL in a string) */
        uint64_t size;
        int64_t mtime;
        item_fields(it, &size, &mtime);
        if ((rc = fn(json_string_value(name), size, mtime, json_is_true(json_object_get(it, "IsDir")), ud)) != 0)
            break;
    }
    json_decref(doc);
    return rc;
}

int rcu_stat_parse(const char *buf, size_t len, uint64_t *size, int64_t *mtime)
{
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *it = json_object_get(doc, "item");
    int rc = -1;
    if (json_is_object(doc) && it && json_is_null(it))
        rc = 0;
    else if (json_is_object(it) && !json_is_true(json_object_get(it, "IsDir")) &&
             json_is_integer(json_object_get(it, "Size"))) {
        item_fields(it, size, mtime);
        rc = 1;
    }
    json_decref(doc);
    return rc;
}

bool rcu_encode(const char *s, bool keep_slash, char *out, size_t n)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (o + (plain ? 1 : 3) >= n)
            return false;
        if (plain)
            out[o++] = (char)c;
        else {
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    if (o >= n)
        return false;
    out[o] = 0;
    return true;
}
