/*
 * modules/discord/dc_backup.c — one run of a channel backup (the task "discord.backup").
 *
 * A run reads the channel with GET /channels/{id}/messages?after=<cursor>&limit=100 until it
 * is caught up, then every thread of the channel (active ones from GET
 * /guilds/{guild}/threads/active, archived ones from GET
 * /channels/{id}/threads/archived/public) the same way, each with its own cursor.
 *
 * What lands in the store (folder F of the backup; docs/discord.md "Files"):
 *   F/<channel>/<YYYY-MM-DD>.jsonl             one JSON object a line, a message or a later
 *                                             edit or deletion of one
 *   F/<channel>/<YYYY-MM-DD>.md                the same day rendered as Markdown
 *   F/<channel>/threads/<thread>/<day>.jsonl   threads alike, and their .md
 *   F/attachments/<message id>-<file name>     attachments, downloaded at once
 * Everything is written through the kernel's file calls as the backup's owner, so quotas,
 * versioning, search, thumbnails and tags apply as to any upload.
 *
 * The rule that makes a kill -9 lose and repeat nothing, page by page (100 messages):
 *   1. the page's attachments are written (one already there with its size is kept);
 *   2. each day file the page touches is read, the page's messages whose id is NOT already in
 *      it are appended, and it is written whole (one durable commit);
 *   3. the cursor (kv "c/<backup>/<channel>": the page's last id) is written, synced.
 * A crash before 3 leaves the cursor at the page before, so the page is read again; step 2
 * then finds those of its messages that already reached the file and appends only the
 * others. A crash after 3 resumes after the page. So the day files hold every message up to
 * the cursor exactly once, whatever moment the process died. The .md of a day is rendered
 * from its .jsonl each time the page touches it, so it agrees with it after any crash too.
 *
 * Edits and deletions: after catching up a run reads the newest 100 messages again; one whose
 * edited_timestamp changed since it was stored gets an "edit" line (new content, time), one
 * stored in that range but no longer returned a "delete" line. Nothing stored is rewritten.
 *
 * Expired attachment URLs: an attachment whose signed URL is refused (403/404/410) is read
 * again through GET /channels/{id}/messages/{message}, which hands out a fresh URL.
 *
 * Threads: a task runner on the worker pool; run_claim keeps one run per backup at a time, also
 * across a reload of the module.
 */
#include "discord.h"
#include "dc_interact.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 100
#define MAX_DAY_FILE (256u << 20)

typedef struct run {
    dc *d;
    const mb_api *api;
    mb_task *task;
    mb_user user;
    char uname[128];
    uint64_t sid;
    char folder[600];
    char bid[17];
    int64_t added, attachments, refreshed;
    char last_message[24];
} run;

static uint64_t snow(const char *s) { return dc_snowflake(s) ? strtoull(s, NULL, 10) : 0; }

static void join(char *out, size_t n, const char *folder, const char *rest)
{
    snprintf(out, n, "%s%s%s", folder, *folder ? "/" : "", rest);
}

/* ----------------------------------------------------------------- files --- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int buf_add(buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n + 1)
            c *= 2;
        char *np = realloc(b->p, c);
        if (!np)
            return MB_ENOMEM;
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static int buf_addf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_addf(buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return buf_add(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* The whole file at path into b (empty when there is none). */
static int read_file(run *r, const char *path, buf *b, mb_err *err)
{
    mb_file_reader *fr;
    int rc = r->api->file_open(&r->user, r->sid, path, 0, &fr, NULL, err);
    if (rc == MB_ENOENT)
        return 0;
    if (rc)
        return rc;
    char tmp[65536];
    uint64_t off = 0;
    for (;;) {
        int64_t n = r->api->file_read(fr, off, tmp, sizeof tmp, err);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (n == 0)
            break;
        if (off + (uint64_t)n > MAX_DAY_FILE) {
            rc = r->api->err_set(err, MB_ETOOBIG, "%s is larger than 256 MiB", path);
            break;
        }
        if ((rc = buf_add(b, tmp, (size_t)n)))
            break;
        off += (uint64_t)n;
    }
    r->api->file_close(fr);
    return rc;
}

static int write_file(run *r, const char *path, const void *data, size_t len, mb_err *err)
{
    mb_file_writer *w;
    int rc = r->api->file_write_begin(&r->user, r->sid, path, (int64_t)len, NULL, MB_FS_PARENTS, &w, err);
    if (rc)
        return rc;
    if ((rc = r->api->file_write_data(w, data, len, err))) {
        r->api->file_write_abort(w);
        return rc;
    }
    return r->api->file_write_commit(w, NULL, NULL, err);
}

/* ------------------------------------------------------------ attachments --- */

/* A name that is one path segment: no '/', '\\' or control bytes, not too long. */
static void safe_name(char *out, size_t n, const char *mid, const char *name)
{
    int k = snprintf(out, n, "%s-", mid);
    size_t i = (size_t)k;
    for (const char *p = name ? name : ""; *p && i + 1 < n && i < 200; p++)
        out[i++] = (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f) ? '_' : *p;
    out[i] = 0;
    if (i == (size_t)k)
        snprintf(out + k, n - (size_t)k, "file");
}

/* A fresh URL for attachment aid of message mid (its old signed URL expired). */
static char *fresh_url(run *r, const char *cid, const char *mid, const char *aid, mb_err *err)
{
    char path[128];
    long st = 0;
    json_t *m = NULL;
    snprintf(path, sizeof path, "/channels/%s/messages/%s", cid, mid);
    if (dc_rest(r->d, "GET", path, NULL, &st, &m, err))
        return NULL;
    char *url = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(m, "attachments"), i, a)
    {
        const char *id = mb_jstr(a, "id");
        if (id && !strcmp(id, aid) && mb_jstr(a, "url"))
            url = strdup(mb_jstr(a, "url"));
    }
    json_decref(m);
    if (!url)
        r->api->err_set(err, MB_ENOENT, "message %s no longer has attachment %s (HTTP %ld)", mid, aid, st);
    return url;
}

/* Download one attachment into attachments/. 0 with its path in rel, or 0 with rel empty and
 * the reason in *missing when it cannot be had any more (deleted since, refused for good, a
 * host outside cdn_hosts): the message is kept without it rather than stopping the backup at
 * this page forever. Transient failures (Discord away, rate limits, a full quota) fail the run,
 * which is tried again. */
static int save_attachment(run *r, const char *cid, const char *mid, const json_t *a, char *rel, size_t reln,
                           char *missing, size_t mn, mb_err *err)
{
    *missing = 0;
    char name[256], path[1024];
    safe_name(name, sizeof name, mid, mb_jstr(a, "filename"));
    snprintf(rel, reln, "attachments/%s", name);
    join(path, sizeof path, r->folder, rel);
    int64_t size = mb_jint(a, "size");
    json_t *info = NULL;
    if (r->api->file_stat(&r->user, r->sid, path, &info, err) == 0) {
        bool same = mb_jint(info, "size") == size;
        json_decref(info);
        if (same)
            return 0; /* written before a crash, or by an earlier run */
    }
    char *url = mb_jstr(a, "url") ? strdup(mb_jstr(a, "url")) : NULL;
    int rc = MB_EINVAL;
    for (int attempt = 0; attempt < 2 && url; attempt++) {
        mb_file_writer *w;
        if ((rc = r->api->file_write_begin(&r->user, r->sid, path, size > 0 ? size : -1, NULL, MB_FS_PARENTS, &w, err)))
            break;
        int64_t got = 0;
        rc = dc_rest_download(r->d, url, w, &got, err);
        if (!rc)
            rc = r->api->file_write_commit(w, NULL, NULL, err);
        else
            r->api->file_write_abort(w);
        if (rc != MB_EGONE || attempt)
            break;
        free(url);
        r->refreshed++;
        url = fresh_url(r, cid, mid, mb_jstr(a, "id") ? mb_jstr(a, "id") : "", err);
        if (!url)
            rc = err->code;
    }
    free(url);
    if (!rc)
        r->attachments++;
    else if (rc == MB_EGONE || rc == MB_ENOENT || rc == MB_EPERM || rc == MB_EINVAL) {
        r->api->log(r->d->self, MB_LOG_WARN, "backup %s: attachment of message %s left out: %s", r->bid, mid, err->msg);
        snprintf(missing, mn, "%s", err->msg);
        rel[0] = 0;
        rc = 0;
    }
    return rc;
}

/* -------------------------------------------------------------- day files --- */

/* The record kept for one message (docs/discord.md "The JSON Lines format"). */
static json_t *record_of(const json_t *m, const char *cid, json_t *atts)
{
    const json_t *au = json_object_get(m, "author");
    const json_t *ref = json_object_get(m, "message_reference");
    json_t *embeds = json_object_get(m, "embeds");
    embeds = json_is_array(embeds) ? json_incref(embeds) : json_array();
    return json_pack("{s:s, s:s, s:s, s:I, s:{s:s?, s:s?, s:s?, s:b}, s:s?, s:s?, s:s?, s:o, s:o, s:s?}", "kind",
                     "message", "id", mb_jstr(m, "id"), "channel", cid, "type", (json_int_t)mb_jint(m, "type"),
                     "author", "id", mb_jstr(au, "id"), "username", mb_jstr(au, "username"), "global_name",
                     mb_jstr(au, "global_name"), "bot", json_is_true(json_object_get(au, "bot")), "timestamp",
                     mb_jstr(m, "timestamp"), "edited_timestamp", mb_jstr(m, "edited_timestamp"), "content",
                     mb_jstr(m, "content"), "attachments", atts, "embeds", embeds,
                     "reply_to", mb_jstr(ref, "message_id"));
}

static void render_md(buf *md, const char *title, const char *up, const buf *jl)
{
    buf_addf(md, "# %s\n\n", title);
    const char *p = jl->p ? jl->p : "";
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        json_t *j = json_loadb(p, n, 0, NULL);
        const char *kind = mb_jstr(j, "kind");
        if (kind && !strcmp(kind, "message")) {
            const json_t *au = json_object_get(j, "author");
            const char *who = mb_jstr(au, "global_name") ? mb_jstr(au, "global_name") : mb_jstr(au, "username");
            const char *ts = mb_jstr(j, "timestamp");
            buf_addf(md, "**%s** · %.8s · `%s`", who ? who : "?", ts && strlen(ts) > 11 ? ts + 11 : "",
                     mb_jstr(j, "id"));
            if (mb_jstr(j, "reply_to"))
                buf_addf(md, " · reply to `%s`", mb_jstr(j, "reply_to"));
            buf_add(md, "\n\n", 2);
            const char *c = mb_jstr(j, "content");
            if (c && *c) {
                buf_add(md, c, strlen(c));
                buf_add(md, "\n\n", 2);
            }
            size_t i;
            json_t *a;
            json_array_foreach(json_object_get(j, "attachments"), i, a)
            {
                const char *fn = mb_jstr(a, "filename") ? mb_jstr(a, "filename") : "file";
                if (mb_jstr(a, "path"))
                    buf_addf(md, "- [%s](%s%s)\n", fn, up, mb_jstr(a, "path"));
                else
                    buf_addf(md, "- %s *(not saved: %s)*\n", fn, mb_jstr(a, "missing") ? mb_jstr(a, "missing") : "?");
            }
            if (json_array_size(json_object_get(j, "attachments")))
                buf_add(md, "\n", 1);
        } else if (kind && !strcmp(kind, "edit")) {
            const char *c = mb_jstr(j, "content");
            buf_addf(md, "*`%s` was edited at %s:*\n\n", mb_jstr(j, "id"), mb_jstr(j, "edited_timestamp"));
            if (c)
                buf_add(md, c, strlen(c));
            buf_add(md, "\n\n", 2);
        } else if (kind && !strcmp(kind, "delete"))
            buf_addf(md, "*`%s` was deleted (seen %s).*\n\n", mb_jstr(j, "id"), mb_jstr(j, "seen"));
        json_decref(j);
        p += n;
        if (*p)
            p++;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ids of the "message" lines of a day file, sorted. */
static uint64_t *ids_of(const buf *jl, size_t *n)
{
    size_t cap = 64;
    uint64_t *ids = malloc(cap * sizeof *ids);
    *n = 0;
    const char *p = jl->p ? jl->p : "";
    while (ids && *p) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        json_t *j = json_loadb(p, l, 0, NULL);
        const char *kind = mb_jstr(j, "kind");
        if (kind && !strcmp(kind, "message")) {
            if (*n == cap) {
                uint64_t *ni = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!ni) {
                    free(ids);
                    json_decref(j);
                    return NULL;
                }
                ids = ni;
            }
            ids[(*n)++] = snow(mb_jstr(j, "id"));
        }
        json_decref(j);
        p += l;
        if (*p)
            p++;
    }
    if (ids)
        qsort(ids, *n, sizeof *ids, cmp_u64);
    return ids;
}

/* Append the lines of `recs` whose message id the day file lacks (edits and deletions always),
 * write it, and render its .md. dir is "<channel>" or "<channel>/threads/<thread>". */
static int append_day(run *r, const char *dir, const char *up, const char *day, const json_t *recs, mb_err *err)
{
    char rel[256], path[1024], mdpath[1024];
    snprintf(rel, sizeof rel, "%s/%s.jsonl", dir, day);
    join(path, sizeof path, r->folder, rel);
    snprintf(rel, sizeof rel, "%s/%s.md", dir, day);
    join(mdpath, sizeof mdpath, r->folder, rel);
    buf jl = {0}, md = {0}, old_md = {0};
    int rc = read_file(r, path, &jl, err);
    size_t nids = 0, added = 0;
    uint64_t *ids = rc ? NULL : ids_of(&jl, &nids);
    if (!rc && !ids)
        rc = r->api->err_set(err, MB_ENOMEM, "out of memory");
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        if (rc)
            break;
        uint64_t id = snow(mb_jstr(rec, "id"));
        const char *kind = mb_jstr(rec, "kind");
        if (!strcmp(kind, "message") && bsearch(&id, ids, nids, sizeof *ids, cmp_u64))
            continue; /* it reached the file before a crash: the rule in the opening comment */
        char *line = json_dumps(rec, JSON_COMPACT);
        if (jl.len && jl.p[jl.len - 1] != '\n')
            rc = buf_add(&jl, "\n", 1);
        if (!rc && line)
            rc = buf_add(&jl, line, strlen(line));
        if (!rc)
            rc = buf_add(&jl, "\n", 1);
        free(line);
        added++;
    }
    free(ids);
    if (!rc && added)
        rc = write_file(r, path, jl.p, jl.len, err);
    if (!rc) {
        char title[128];
        snprintf(title, sizeof title, "%s, %s", dir, day);
        render_md(&md, title, up, &jl);
        rc = read_file(r, mdpath, &old_md, err);
        if (!rc && (old_md.len != md.len || memcmp(old_md.p, md.p, md.len)))
            rc = write_file(r, mdpath, md.p, md.len, err);
    }
    free(jl.p);
    free(md.p);
    free(old_md.p);
    return rc;
}

/* Group records by the day of their message's time and append each group. */
static int write_days(run *r, const char *dir, const char *up, json_t *recs, mb_err *err)
{
    json_t *days = json_object();
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        const char *ts = mb_jstr(rec, "day") ? mb_jstr(rec, "day") : mb_jstr(rec, "timestamp");
        char day[11] = "unknown";
        if (ts && strlen(ts) >= 10 && strspn(ts, "0123456789-") >= 10)
            snprintf(day, sizeof day, "%.10s", ts);
        json_t *g = json_object_get(days, day);
        if (!g)
            json_object_set_new(days, day, g = json_array());
        json_object_del(rec, "day");
        json_array_append(g, rec);
    }
    int rc = 0;
    const char *day;
    json_t *g;
    json_object_foreach(days, day, g)
    {
        if ((rc = append_day(r, dir, up, day, g, err)))
            break;
    }
    json_decref(days);
    return rc;
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = snow(mb_jstr(*(json_t *const *)a, "id")), y = snow(mb_jstr(*(json_t *const *)b, "id"));
    return x < y ? -1 : x > y;
}

/* One page of messages (sorted, all after the cursor): attachments, then day files. */
static int write_page(run *r, const char *cid, const char *dir, const char *up, json_t **msgs, size_t n, mb_err *err)
{
    json_t *recs = json_array();
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *mid = mb_jstr(msgs[i], "id");
        json_t *atts = json_array();
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(msgs[i], "attachments"), k, a)
        {
            char rel[300], missing[256];
            if ((rc = save_attachment(r, cid, mid, a, rel, sizeof rel, missing, sizeof missing, err)))
                break;
            json_t *o = json_pack("{s:s?, s:s?, s:I, s:s?}", "id", mb_jstr(a, "id"), "filename", mb_jstr(a, "filename"),
                                  "size", (json_int_t)mb_jint(a, "size"), "content_type", mb_jstr(a, "content_type"));
            json_object_set_new(o, "path", rel[0] ? json_string(rel) : json_null());
            if (missing[0])
                json_object_set_new(o, "missing", json_string(missing));
            json_array_append_new(atts, o);
        }
        if (rc) {
            json_decref(atts);
            break;
        }
        json_array_append_new(recs, record_of(msgs[i], cid, atts));
    }
    if (!rc)
        rc = write_days(r, dir, up, recs, err);
    json_decref(recs);
    return rc;
}

/* ---------------------------------------------------------- edits, deletes --- */

typedef struct seen {
    json_t *edited; /* id -> last edited_timestamp known ("" for none) */
    json_t *day;    /* id -> day of the message */
    json_t *deleted;
} seen;

/* What the day files say about the messages of these days. */
static int load_seen(run *r, const char *dir, json_t *days, seen *s, mb_err *err)
{
    const char *day;
    json_t *v;
    json_object_foreach(days, day, v)
    {
        char rel[256], path[1024];
        snprintf(rel, sizeof rel, "%s/%s.jsonl", dir, day);
        join(path, sizeof path, r->folder, rel);
        buf jl = {0};
        int rc = read_file(r, path, &jl, err);
        if (rc) {
            free(jl.p);
            return rc;
        }
        const char *p = jl.p ? jl.p : "";
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            json_t *j = json_loadb(p, l, 0, NULL);
            const char *kind = mb_jstr(j, "kind"), *id = mb_jstr(j, "id");
            if (kind && id) {
                if (!strcmp(kind, "delete"))
                    json_object_set_new(s->deleted, id, json_true());
                else {
                    const char *et = mb_jstr(j, "edited_timestamp");
                    json_object_set_new(s->edited, id, json_string(et ? et : ""));
                    if (!strcmp(kind, "message"))
                        json_object_set_new(s->day, id, json_string(day));
                }
            }
            json_decref(j);
            p += l;
            if (*p)
                p++;
        }
        free(jl.p);
    }
    return 0;
}

/* Read the newest PAGE messages again and record edits and deletions among them. */
static int recheck(run *r, const char *cid, const char *dir, const char *up, uint64_t cursor, mb_err *err)
{
    char path[128];
    long st = 0;
    json_t *arr = NULL;
    snprintf(path, sizeof path, "/channels/%s/messages?limit=%d", cid, PAGE);
    int rc = dc_rest(r->d, "GET", path, NULL, &st, &arr, err);
    if (rc || st != 200 || !json_is_array(arr)) {
        json_decref(arr);
        return rc;
    }
    uint64_t lo = UINT64_MAX;
    json_t *days = json_object(), *fetched = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m)
    {
        uint64_t id = snow(mb_jstr(m, "id"));
        const char *ts = mb_jstr(m, "timestamp");
        if (!id || id > cursor || !ts || strlen(ts) < 10)
            continue;
        lo = id < lo ? id : lo;
        char day[11];
        snprintf(day, sizeof day, "%.10s", ts);
        json_object_set_new(days, day, json_true());
        json_object_set(fetched, mb_jstr(m, "id"), m);
    }
    if (json_array_size(arr) < PAGE)
        lo = 1; /* the channel has no older messages: everything stored is in the range */
    seen s = {json_object(), json_object(), json_object()};
    if (lo != UINT64_MAX)
        rc = load_seen(r, dir, days, &s, err);
    json_t *recs = json_array();
    const char *id;
    json_t *v;
    json_object_foreach(s.day, id, v)
    {
        if (rc || snow(id) < lo || snow(id) > cursor || json_object_get(s.deleted, id))
            continue;
        json_t *now = json_object_get(fetched, id);
        if (!now)
            json_array_append_new(recs, json_pack("{s:s, s:s, s:s, s:I, s:s}", "kind", "delete", "id", id, "channel",
                                                  cid, "seen", (json_int_t)r->api->now(), "day", json_string_value(v)));
        else {
            const char *et = mb_jstr(now, "edited_timestamp");
            if (et && strcmp(et, mb_jstr(s.edited, id) ? mb_jstr(s.edited, id) : ""))
                json_array_append_new(recs, json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s}", "kind", "edit", "id", id,
                                                      "channel", cid, "edited_timestamp", et, "content",
                                                      mb_jstr(now, "content"), "day", json_string_value(v)));
        }
    }
    if (!rc && json_array_size(recs))
        rc = write_days(r, dir, up, recs, err);
    json_decref(recs);
    json_decref(s.edited);
    json_decref(s.day);
    json_decref(s.deleted);
    json_decref(days);
    json_decref(fetched);
    json_decref(arr);
    return rc;
}

/* ---------------------------------------------------------------- channels --- */

static int channel_error(run *r, const char *cid, long st, mb_err *err)
{
    if (st == 401)
        return r->api->err_set(err, MB_EAUTH, "Discord refused the bot token (401)");
    if (st == 403 || st == 404)
        return r->api->err_set(err, MB_EPERM, "the bot cannot read channel %s (HTTP %ld)", cid, st);
    return r->api->err_set(err, MB_EAGAIN, "Discord answered %ld for channel %s", st, cid);
}

/* Back up one channel or thread up to now. */
static int sync_channel(run *r, const char *cid, const char *dir, const char *up, mb_err *err)
{
    char key[80], path[160];
    snprintf(key, sizeof key, "c/%s/%s", r->bid, cid);
    json_t *cur = dc_kv_json(r->d, key);
    char last[24];
    snprintf(last, sizeof last, "%s", mb_jstr(cur, "last") ? mb_jstr(cur, "last") : "0");
    int64_t count = mb_jint(cur, "messages");
    json_decref(cur);
    int rc = 0;
    for (;;) {
        long st = 0;
        json_t *arr = NULL;
        snprintf(path, sizeof path, "/channels/%s/messages?after=%s&limit=%d", cid, last, PAGE);
        if ((rc = dc_rest(r->d, "GET", path, NULL, &st, &arr, err)))
            break;
        if (st != 200 || !json_is_array(arr)) {
            json_decref(arr);
            rc = channel_error(r, cid, st, err);
            break;
        }
        size_t n = json_array_size(arr), k = 0;
        json_t **msgs = calloc(n ? n : 1, sizeof *msgs);
        uint64_t cursor = snow(last);
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_array_get(arr, i);
            if (snow(mb_jstr(m, "id")) > cursor)
                msgs[k++] = m;
        }
        qsort(msgs, k, sizeof *msgs, by_id);
        if (k)
            rc = write_page(r, cid, dir, up, msgs, k, err);
        if (!rc && k) {
            snprintf(last, sizeof last, "%s", mb_jstr(msgs[k - 1], "id"));
            count += (int64_t)k;
            r->added += (int64_t)k;
            json_t *c = json_pack("{s:i, s:s, s:I}", "v", 1, "last", last, "messages", (json_int_t)count);
            rc = dc_kv_put_json(r->d, key, c, true, err);
            json_decref(c);
            if (snow(last) > snow(r->last_message))
                snprintf(r->last_message, sizeof r->last_message, "%s", last);
        }
        free(msgs);
        json_decref(arr);
        if (rc || n < PAGE)
            break;
        char msg[96];
        snprintf(msg, sizeof msg, "%lld messages so far", (long long)r->added);
        if (r->task && r->api->task_progress(r->task, 50, msg)) {
            rc = r->api->err_set(err, MB_ECANCELED, "cancelled");
            break;
        }
    }
    if (!rc && snow(last))
        rc = recheck(r, cid, dir, up, snow(last), err);
    return rc;
}

/* The channel's threads, active and archived, as an object id -> true. */
static int threads_of(run *r, const char *cid, const char *guild, json_t *out, mb_err *err)
{
    char path[256];
    long st = 0;
    json_t *j = NULL;
    size_t i;
    json_t *t;
    int rc;
    if (guild) {
        snprintf(path, sizeof path, "/guilds/%s/threads/active", guild);
        if ((rc = dc_rest(r->d, "GET", path, NULL, &st, &j, err)))
            return rc;
        json_array_foreach(json_object_get(j, "threads"), i, t)
        {
            const char *p = mb_jstr(t, "parent_id"), *id = mb_jstr(t, "id");
            if (p && id && !strcmp(p, cid) && dc_snowflake(id))
                json_object_set_new(out, id, json_true());
        }
        json_decref(j);
    }
    char before[64] = "";
    for (int pages = 0; pages < 1000; pages++) {
        snprintf(path, sizeof path, "/channels/%s/threads/archived/public?limit=100%s%s", cid, before[0] ? "&before=" : "",
                 before);
        j = NULL;
        if ((rc = dc_rest(r->d, "GET", path, NULL, &st, &j, err)))
            return rc;
        if (st != 200) {
            json_decref(j);
            return 0; /* not a channel with threads (a thread itself, a DM) */
        }
        json_array_foreach(json_object_get(j, "threads"), i, t)
        {
            const char *id = mb_jstr(t, "id");
            const char *at = mb_jstr(json_object_get(t, "thread_metadata"), "archive_timestamp");
            if (id && dc_snowflake(id))
                json_object_set_new(out, id, json_true());
            if (at && strlen(at) < sizeof before && strspn(at, "0123456789-:.T+Z") == strlen(at))
                snprintf(before, sizeof before, "%s", at);
        }
        bool more = json_is_true(json_object_get(j, "has_more")) && json_array_size(json_object_get(j, "threads"));
        json_decref(j);
        if (!more)
            break;
    }
    return 0;
}

/* This process, as "<pid>.<start time in clock ticks>" (/proc/self/stat): the same in every
 * copy of the module (a reload runs the new copy beside the old one's last run), different in
 * the next process, even with the same pid. */
static void process_id(char *out, size_t n)
{
    char buf[1024] = "";
    FILE *f = fopen("/proc/self/stat", "r");
    size_t k = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[k] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold spaces: fields count from its end */
    unsigned long long start = 0;
    for (int field = 2; p && *p && field < 22; p++)
        if (*p == ' ' && ++field == 22)
            start = strtoull(p + 1, NULL, 10);
    snprintf(out, n, "%ld.%llu", (long)getpid(), start);
}

bool dc_backup_running(dc *d, const char *bid)
{
    char key[40], me[64];
    snprintf(key, sizeof key, "r/%s", bid);
    process_id(me, sizeof me);
    json_t *m = dc_kv_json(d, key);
    bool busy = m && mb_jstr(m, "process") && !strcmp(mb_jstr(m, "process"), me);
    json_decref(m);
    return busy;
}

/* One run per backup at a time, across reloads: kv "r/<backup>" names the process whose run
 * holds it. A marker left by a process that died (kill -9) names another process and is
 * ignored. run_lock orders claims within one copy of the module; two copies (during a reload)
 * could only race in the instant both start the same backup. */
static bool run_claim(dc *d, const char *bid, bool take)
{
    char key[40], me[64];
    snprintf(key, sizeof key, "r/%s", bid);
    process_id(me, sizeof me);
    mb_err e;
    pthread_mutex_lock(&d->run_lock);
    bool busy = dc_backup_running(d, bid);
    if (take && !busy) {
        json_t *v = json_pack("{s:i, s:s}", "v", 1, "process", me);
        dc_kv_put_json(d, key, v, false, &e);
        json_decref(v);
    }
    if (!take)
        d->api->kv_del(d->self, key, false, &e);
    pthread_mutex_unlock(&d->run_lock);
    return !busy;
}

int dc_backup_run(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    dc *d = state;
    const mb_api *api = d->api;
    const char *bid = mb_jstr(args, "backup");
    char key[40];
    snprintf(key, sizeof key, "b/%.16s", bid ? bid : "");
    json_t *rec = bid && strlen(bid) == 16 ? dc_kv_json(d, key) : NULL;
    if (!rec)
        return 0; /* deleted since */
    if (!run_claim(d, bid, true)) {
        json_decref(rec);
        api->task_result(task, json_pack("{s:s}", "skipped", "a run of this backup is already going on"));
        return 0;
    }
    run *r = calloc(1, sizeof *r);
    r->d = d;
    r->api = api;
    r->task = task;
    snprintf(r->bid, sizeof r->bid, "%s", bid);
    r->sid = (uint64_t)mb_jint(rec, "store");
    snprintf(r->folder, sizeof r->folder, "%s", mb_jstr(rec, "folder") ? mb_jstr(rec, "folder") : "");
    char cid[24];
    snprintf(cid, sizeof cid, "%s", dc_snowflake(mb_jstr(rec, "channel")) ? mb_jstr(rec, "channel") : "0");
    int rc = api->user_lookup((uint64_t)mb_jint(rec, "owner"), NULL, &r->user, r->uname, sizeof r->uname, err);
    json_t *threads = json_object();
    if (!rc && !api->task_progress(task, 1, "reading the channel")) {
        long st = 0;
        json_t *ch = NULL;
        char path[96];
        snprintf(path, sizeof path, "/channels/%s", cid);
        rc = dc_rest(d, "GET", path, NULL, &st, &ch, err);
        if (!rc && st != 200)
            rc = channel_error(r, cid, st, err);
        char guild[24] = "";
        if (!rc && dc_snowflake(mb_jstr(ch, "guild_id")))
            snprintf(guild, sizeof guild, "%s", mb_jstr(ch, "guild_id"));
        json_decref(ch);
        if (!rc)
            rc = sync_channel(r, cid, cid, "../", err);
        if (!rc)
            rc = threads_of(r, cid, guild[0] ? guild : NULL, threads, err);
        const char *tid;
        json_t *v;
        json_object_foreach(threads, tid, v)
        {
            if (rc)
                break;
            char dir[80];
            snprintf(dir, sizeof dir, "%s/threads/%s", cid, tid);
            rc = sync_channel(r, tid, dir, "../../../", err);
        }
    }
    /* The record: state for the web page and GET /api/v1/discord/backups. Reloaded, because
     * a DELETE may have come meanwhile. */
    json_decref(rec);
    rec = dc_kv_json(d, key);
    if (rec) {
        /* One notification per outage, not one per attempt or poll: only when it was fine before. */
        bool was_failing = mb_jstr(rec, "state") && !strcmp(mb_jstr(rec, "state"), "error");
        json_object_set_new(rec, "last_run", json_integer(api->now()));
        json_object_set_new(rec, "state", json_string(rc ? "error" : "ok"));
        json_object_set_new(rec, "last_error", rc ? json_string(err->msg) : json_null());
        json_object_set_new(rec, "threads", json_integer((json_int_t)json_object_size(threads)));
        json_object_set_new(rec, "messages", json_integer(mb_jint(rec, "messages") + r->added));
        if (r->last_message[0])
            json_object_set_new(rec, "last_message", json_string(r->last_message));
        mb_err e;
        dc_kv_put_json(d, key, rec, true, &e);
        if (rc && rc != MB_ECANCELED && !was_failing)
            api->hook_emit("discord.backup.failed",
                           json_pack("{s:s, s:I, s:I, s:s, s:s}", "backup", bid, "owner", (json_int_t)mb_jint(rec, "owner"),
                                     "store", (json_int_t)r->sid, "channel", cid, "error", err->msg),
                           &e);
        json_decref(rec);
    }
    api->task_result(task, json_pack("{s:I, s:I, s:I, s:I}", "messages", (json_int_t)r->added, "attachments",
                                     (json_int_t)r->attachments, "threads", (json_int_t)json_object_size(threads),
                                     "refreshed_urls", (json_int_t)r->refreshed));
    api->log(d->self, MB_LOG_INFO, "backup %s: %lld new messages, %lld attachments, %zu threads%s%s", bid,
             (long long)r->added, (long long)r->attachments, json_object_size(threads), rc ? ": " : "",
             rc ? err->msg : "");
    json_decref(threads);
    run_claim(d, bid, false);
    free(r);
    return rc;
}
