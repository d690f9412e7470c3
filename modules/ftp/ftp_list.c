/*
 * modules/ftp/ftp_list.c — listings: the lines of LIST (ls -l style), NLST (names) and
 * MLSD/MLST (RFC 3659 facts), for "/" (the user's stores as folders), a folder or one file.
 * Names with CR or LF are left out, so a name cannot forge reply lines. A folder is listed a
 * page at a time (api->folder_page): the next page is read when the previous one has left for
 * the client, so a folder of a million entries costs one page of memory.
 *
 * Threads: the loop thread (the kernel's folder_page and file_stat read the metadata
 * database, which does not block on the network).
 */
#include "ftp.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ listings --- */

void list_time(int64_t t, char *buf, size_t n, bool mlsx)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (mlsx)
        strftime(buf, n, "%Y%m%d%H%M%S", &tm);
    else if (time(NULL) - t > 180 * 86400 || t > time(NULL) + 86400)
        strftime(buf, n, "%b %e  %Y", &tm);
    else
        strftime(buf, n, "%b %e %H:%M", &tm);
}

/* One entry in the format each listing command uses. */
static void list_line(struct evbuffer *b, int kind, const char *name, bool folder, int64_t size, int64_t mtime,
                      const char *owner)
{
    if (!ftpu_name_ok(name))
        return;
    char tb[32];
    if (kind == 'N') {
        evbuffer_add_printf(b, "%s\r\n", name);
    } else if (kind == 'M' || kind == 'T') {
        list_time(mtime, tb, sizeof tb, true);
        evbuffer_add_printf(b, "%stype=%s;%ssize=%lld;modify=%s;perm=%s; %s\r\n", kind == 'T' ? " " : "",
                            folder ? "dir" : "file", "", (long long)size, tb, folder ? "elcmfpd" : "adfrw", name);
    } else {
        list_time(mtime, tb, sizeof tb, false);
        evbuffer_add_printf(b, "%s 1 %-8s %-8s %12lld %s %s\r\n", folder ? "drwxr-xr-x" : "-rw-r--r--", owner,
                            owner, (long long)size, tb, name);
    }
}

#define LIST_PAGE 1000
static int list_page(sess *s, uint64_t sid, const char *path, int kind, const char *cursor, struct evbuffer *b,
                     char **next, mb_err *e);

/* Fill b with the listing of arg (a folder, or one file). kind 'L' LIST, 'N' NLST, 'M' MLSD.
 * A folder's first page only: list_more adds the next as the data connection drains. */
int list_build(sess *s, const char *arg, int kind, struct evbuffer *b, bool paged, mb_err *e)
{
    const mb_api *api = s->srv->api;
    char vpath[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    /* ls-style options ("-la") that clients send are ignored, not taken as a name. */
    while (arg && arg[0] == '-') {
        const char *sp = strchr(arg, ' ');
        arg = sp ? sp + 1 : "";
    }
    int rc = sess_resolve(s, arg, vpath, &sid, &rest, e);
    if (rc)
        return rc;
    if (!sid) {
        json_t *arr;
        if ((rc = api->store_list(&s->user, &arr, e)))
            return rc;
        size_t i;
        json_t *st;
        json_array_foreach(arr, i, st)
            list_line(b, kind, json_string_value(json_object_get(st, "name")), true, 0, jint(st, "created"),
                      s->user.name);
        json_decref(arr);
        return 0;
    }
    json_t *info;
    if ((rc = api->file_stat(&s->user, sid, rest, &info, e)))
        return rc;
    bool folder = !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
    if (!folder) {
        if (kind == 'M') {
            json_decref(info);
            return api->err_set(e, MB_EINVAL, "MLSD lists folders; use MLST for a file");
        }
        list_line(b, kind, kind == 'N' ? arg : json_string_value(json_object_get(info, "name")), false,
                  jint(info, "size"), jint(info, "mtime"), s->user.name);
        json_decref(info);
        return 0;
    }
    json_decref(info);
    char *next = NULL;
    rc = list_page(s, sid, rest, kind, NULL, b, &next, e);
    while (!rc && next && !paged) { /* STAT on the control connection: the whole folder */
        char *cur = next;
        rc = list_page(s, sid, rest, kind, cur, b, &next, e);
        free(cur);
    }
    if (!rc && next) { /* the rest as the data connection drains (list_more) */
        list_stop(s);
        s->list_sid = sid;
        s->list_kind = kind;
        s->list_path = strdup(rest);
        s->list_cursor = next;
        next = NULL;
    }
    free(next);
    return rc;
}

/* The next page of the folder being listed into b (a page of LIST_PAGE entries, so a folder
 * of any size costs one page of memory); keeps the cursor for the one after. */
static int list_page(sess *s, uint64_t sid, const char *path, int kind, const char *cursor, struct evbuffer *b,
                     char **next, mb_err *e)
{
    json_t *out;
    *next = NULL;
    int rc = s->srv->api->folder_page(&s->user, sid, path, cursor, LIST_PAGE, &out, e);
    if (rc)
        return rc;
    size_t i;
    json_t *en;
    json_array_foreach(json_object_get(out, "entries"), i, en)
    {
        const char *t = json_string_value(json_object_get(en, "type"));
        list_line(b, kind, json_string_value(json_object_get(en, "name")), t && !strcmp(t, "folder"),
                  jint(en, "size"), jint(en, "mtime"), s->user.name);
    }
    const char *nc = json_string_value(json_object_get(out, "next_cursor"));
    *next = nc ? strdup(nc) : NULL;
    json_decref(out);
    return 0;
}

bool list_more(sess *s, struct evbuffer *b)
{
    if (!s->list_cursor)
        return false;
    mb_err e = {0};
    char *cursor = s->list_cursor;
    s->list_cursor = NULL;
    int rc = list_page(s, s->list_sid, s->list_path, s->list_kind, cursor, b, &s->list_cursor, &e);
    free(cursor);
    if (rc) { /* the folder went away meanwhile: the listing ends with what was sent */
        list_stop(s);
        return false;
    }
    return evbuffer_get_length(b) > 0 || list_more(s, b);
}

void list_stop(sess *s)
{
    free(s->list_cursor);
    free(s->list_path);
    s->list_cursor = s->list_path = NULL;
}

/* MLST: one entry's facts on the control connection (RFC 3659 7.2). */
void list_mlst(sess *s, const char *arg)
{
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    const mb_api *api = s->srv->api;
    if (sess_resolve(s, arg, vp, &sid, &rest, &e)) {
        reply_err(s, &e);
        return;
    }
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    struct evbuffer *b = evbuffer_new();
    if (!sid || !*rest) {
        list_line(b, 'T', vp, true, 0, api->now(), s->user.name);
    } else {
        json_t *info;
        if (api->file_stat(&s->user, sid, rest, &info, &e)) {
            evbuffer_free(b);
            reply_err(s, &e);
            return;
        }
        const char *t = json_string_value(json_object_get(info, "type"));
        list_line(b, 'T', vp, t && !strcmp(t, "folder"), jint(info, "size"), jint(info, "mtime"), s->user.name);
        json_decref(info);
    }
    evbuffer_add_printf(o, "250-Listing %s\r\n", vp);
    evbuffer_add_buffer(o, b);
    evbuffer_add_printf(o, "250 End\r\n");
    evbuffer_free(b);
}

