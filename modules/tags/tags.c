/*
 * modules/tags — store-scoped tags on files and folders, and automated tagging by Lua rules
 * (issue 19; docs/rules.md, docs/api.md "Tags").
 *
 * A tag belongs to a store: everyone who reaches the store sees it. Tags are kept per entry by
 * the entry's stable id (e/<sid16>/<id16>, tags.h), so renames, moves, trash and restore keep
 * them without a write; purge and delete drop them. The record also keeps the entry's path, so
 * the apply-to-existing run, suggestions and search's tag: filter can name it; paths follow the
 * hook bus (moves rewrite them, a trashed subtree is marked with its trash id, a copy's entries
 * get the tags of the entries they copy).
 *
 * Every change arrives through the hook bus, whichever door made it (HTTP, tus, FTP, WebDAV, a
 * module): a batched observer copies each event into q/<seq> in the dispatcher's own write (so an
 * event is queued exactly when it is delivered), and a kernel timer of this module drains the
 * queue on the worker pool: path bookkeeping first, then the rules (rules.c) for created, updated
 * and moved files and when the search module says a file's extracted text is ready
 * (search.extracted). Rules therefore never run on the loop thread nor in an HTTP handler, and a
 * rule that fails or runs out of budget only costs its own result.
 *
 *   config   text_max, head_bytes, global_rules, queue_interval_ms, run_result_max
 *   routes   GET  /api/v1/stores/{sid}/tags                     [{"name","color","count"}]
 *            GET  /api/v1/stores/{sid}/tags/{path*}             {"path","tags"}
 *            POST /api/v1/stores/{sid}/tags/{path*}             {"add","remove"} -> {"path","tags"}
 *            and the rules and suggestions routes of rules.c, with
 *            POST /api/v1/admin/tags/rules/reload (admin: clear global rules' error counts)
 *   listing  a decorator adds "tags" to each entry; a filter answers ?tag=a&tag=-b&any=c
 *   service  "tags.match" {"store","paths":[...],"tags":[...]} -> the paths carrying all of them
 *            (search's tag: filter)
 *
 * Threads: handlers, the decorator, the filter and the service run on HTTP workers; the observer
 * on the loop thread (it only adds to the turn's write); the queue drain and the run task on the
 * pool (the kernel never runs one timer twice at once). `mu` serialises every read-modify-write
 * of a record and the swap of the global rules list (reconfigure, loop thread; readers take a
 * reference with tg_globals); the two size limits are atomics.
 */
#include "tags.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tg_key(char *out, size_t n, const char *kind, uint64_t sid, uint64_t id)
{
    snprintf(out, n, "%s/%016llx/%016llx", kind, (unsigned long long)sid, (unsigned long long)id);
}

json_t *tg_get(tags *t, const char *key)
{
    char *v = NULL;
    size_t len = 0;
    mb_err e;
    if (t->api->kv_get(t->self, key, &v, &len, &e))
        return NULL;
    json_t *j = json_loadb(v, len, 0, NULL);
    free(v);
    return j;
}

int tg_put(tags *t, const char *key, const json_t *v, mb_err *err)
{
    char *s = json_dumps(v, JSON_COMPACT);
    if (!s)
        return t->api->err_set(err, MB_ENOMEM, "out of memory");
    int rc = t->api->kv_put(t->self, key, s, strlen(s), true, err);
    free(s);
    return rc;
}

static bool parse_id(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s))
        return false;
    *out = strtoull(s, NULL, 10);
    return *out > 0;
}

int tg_req_sid(tags *t, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *s = t->api->req_param(req, "sid");
    if (!parse_id(s, sid))
        return t->api->err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    json_t *st = NULL;
    int rc = t->api->store_get(t->api->req_user(req), *sid, &st, err); /* the caller's own store only */
    json_decref(st);
    return rc;
}

static const char *strip(const char *p) { return p ? p + strspn(p, "/") : ""; }

/* ----------------------------------------------------------------- records --- */

/* The store's spelling of a tag (n/), made from `name` (and `color`) the first time. Under mu. */
static int name_of(tags *t, uint64_t sid, const char *name, const char *color, char *out, size_t n, mb_err *err)
{
    char low[TAG_MAX + 1], key[200];
    tagx_lower(name, low, sizeof low);
    snprintf(key, sizeof key, "n/%016llx/%s", (unsigned long long)sid, low);
    json_t *rec = tg_get(t, key);
    int rc = 0;
    if (!rec || (color && strcmp(color, mb_jstr(rec, "color") ? mb_jstr(rec, "color") : ""))) {
        if (!rec)
            rec = json_pack("{s:s}", "name", name);
        if (color)
            json_object_set_new(rec, "color", json_string(color));
        rc = tg_put(t, key, rec, err);
    }
    snprintf(out, n, "%s", mb_jstr(rec, "name"));
    json_decref(rec);
    return rc;
}

static bool color_ok(const char *c)
{
    size_t n = strlen(c);
    return (n == 4 || n == 7) && c[0] == '#' && strspn(c + 1, "0123456789abcdefABCDEF") == n - 1;
}

static int item_name(tags *t, const json_t *it, char *name, const char **color, mb_err *err)
{
    const char *raw = json_is_string(it) ? json_string_value(it) : mb_jstr(it, "name");
    *color = json_is_object(it) ? mb_jstr(it, "color") : NULL;
    char why[128];
    if (tagx_norm(raw, name, TAG_MAX + 1, why, sizeof why))
        return t->api->err_set(err, MB_EINVAL, "tag '%.64s': %s", raw ? raw : "", why);
    if (*color && !color_ok(*color))
        return t->api->err_set(err, MB_EINVAL, "color: a colour is #rgb or #rrggbb");
    return 0;
}

static bool names_has(const json_t *names, const char *name)
{
    char a[TAG_MAX + 1], b[TAG_MAX + 1];
    tagx_lower(name, a, sizeof a);
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v) {
        tagx_lower(json_string_value(v), b, sizeof b);
        if (!strcmp(a, b))
            return true;
    }
    return false;
}

int tg_change(tags *t, uint64_t sid, uint64_t id, const char *path, const char *type, const json_t *add,
              const json_t *remove, json_t **out, mb_err *err)
{
    if (!id)
        return t->api->err_set(err, MB_EINVAL, "the root folder of a store has no tags");
    if ((add && !json_is_array(add)) || (remove && !json_is_array(remove)))
        return t->api->err_set(err, MB_EINVAL, "add and remove are lists of tags");
    if (json_array_size(add) + json_array_size(remove) > 256)
        return t->api->err_set(err, MB_ETOOBIG, "at most 256 tags in one change");
    char key[64], name[TAG_MAX + 1];
    const char *color;
    size_t i;
    json_t *it;
    /* Check everything before changing anything: a bad name refuses the whole change. */
    json_array_foreach(add, i, it) if (item_name(t, it, name, &color, err)) return err->code;
    json_array_foreach(remove, i, it) if (item_name(t, it, name, &color, err)) return err->code;
    tg_key(key, sizeof key, "e", sid, id);
    pthread_mutex_lock(&t->mu);
    json_t *rec = tg_get(t, key);
    if (!rec)
        rec = json_pack("{s:[]}", "tags");
    json_t *names = json_object_get(rec, "tags");
    if (!json_is_array(names))
        json_object_set_new(rec, "tags", names = json_array());
    int rc = 0;
    json_array_foreach(remove, i, it) {
        item_name(t, it, name, &color, err);
        char a[TAG_MAX + 1], b[TAG_MAX + 1];
        tagx_lower(name, a, sizeof a);
        for (size_t k = json_array_size(names); k-- > 0;) {
            tagx_lower(json_string_value(json_array_get(names, k)), b, sizeof b);
            if (!strcmp(a, b))
                json_array_remove(names, k);
        }
    }
    json_array_foreach(add, i, it) {
        char shown[TAG_MAX + 1];
        item_name(t, it, name, &color, err);
        if ((rc = name_of(t, sid, name, color, shown, sizeof shown, err)))
            break;
        if (!names_has(names, shown))
            json_array_append_new(names, json_string(shown));
    }
    if (!rc) {
        if (path)
            json_object_set_new(rec, "path", json_string(strip(path)));
        if (type)
            json_object_set_new(rec, "type", json_string(type));
        if (json_array_size(names))
            rc = tg_put(t, key, rec, err);
        else
            rc = t->api->kv_del(t->self, key, true, err);
    }
    if (!rc && out)
        *out = json_incref(names);
    pthread_mutex_unlock(&t->mu);
    json_decref(rec);
    return rc;
}

/* The tags of one listing entry (its "id"), a new array. */
static json_t *entry_tags(tags *t, uint64_t sid, const json_t *entry)
{
    char key[64];
    uint64_t id = (uint64_t)mb_jint(entry, "id");
    if (!id)
        return json_array();
    tg_key(key, sizeof key, "e", sid, id);
    json_t *rec = tg_get(t, key);
    json_t *names = json_incref(json_object_get(rec, "tags"));
    json_decref(rec);
    return json_is_array(names) ? names : (json_decref(names), json_array());
}

/* ------------------------------------------------------------------ routes --- */

/* GET /api/v1/stores/{sid}/tags */
typedef struct count_ctx {
    json_t *counts; /* lower -> count */
} count_ctx;

static int count_one(const char *key, json_t *v, void *ud)
{
    (void)key;
    count_ctx *c = ud;
    if (json_object_get(v, "trash"))
        return 0; /* in the trash: not counted until restored */
    size_t i;
    json_t *n;
    char low[TAG_MAX + 1];
    json_array_foreach(json_object_get(v, "tags"), i, n) {
        tagx_lower(json_string_value(n), low, sizeof low);
        json_object_set_new(c->counts, low, json_integer(mb_jint(c->counts, low) + 1));
    }
    return 0;
}

typedef struct names_ctx {
    json_t *out, *counts;
} names_ctx;

static int name_one(const char *key, json_t *v, void *ud)
{
    names_ctx *c = ud;
    const char *low = strrchr(key, '/') + 1;
    int64_t n = mb_jint(c->counts, low);
    if (n || mb_jstr(v, "color"))
        json_array_append_new(c->out, json_pack("{s:O, s:O, s:I}", "name", json_object_get(v, "name"), "color",
                                                json_object_get(v, "color") ? json_object_get(v, "color") : json_null(),
                                                "count", (json_int_t)n));
    return 0;
}

static int h_tags(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc)
        return rc;
    char prefix[64];
    count_ctx c = {json_object()};
    snprintf(prefix, sizeof prefix, "e/%016llx/", (unsigned long long)sid);
    if ((rc = t->api->kv_scan_json(t->self, prefix, count_one, &c, err))) {
        json_decref(c.counts);
        return rc;
    }
    names_ctx nc = {json_array(), c.counts};
    snprintf(prefix, sizeof prefix, "n/%016llx/", (unsigned long long)sid);
    rc = t->api->kv_scan_json(t->self, prefix, name_one, &nc, err);
    json_decref(c.counts);
    if (rc) {
        json_decref(nc.out);
        return rc;
    }
    return t->api->reply_json(req, 200, nc.out);
}

/* The entry at the request's {path*}, as the caller sees it (another user's store: 404). */
static int req_entry(tags *t, mb_req *req, uint64_t *sid, json_t **info, mb_err *err)
{
    int rc = tg_req_sid(t, req, sid, err);
    if (rc)
        return rc;
    const char *path = t->api->req_param(req, "path");
    return t->api->file_stat(t->api->req_user(req), *sid, path ? path : "", info, err);
}

/* GET /api/v1/stores/{sid}/tags/{path*} */
static int h_entry_get(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    json_t *info;
    int rc = req_entry(t, req, &sid, &info, err);
    if (rc)
        return rc;
    json_t *names = entry_tags(t, sid, info);
    json_t *out = json_pack("{s:O, s:o}", "path", json_object_get(info, "path"), "tags", names);
    json_decref(info);
    return t->api->reply_json(req, 200, out);
}

/* POST /api/v1/stores/{sid}/tags/{path*} {"add":[...],"remove":[...]} */
static int h_entry_post(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    json_t *body = t->api->req_json(req, err);
    if (!body)
        return err->code;
    uint64_t sid;
    json_t *info, *names = NULL;
    int rc = req_entry(t, req, &sid, &info, err);
    if (rc)
        return rc;
    rc = tg_change(t, sid, (uint64_t)mb_jint(info, "id"), mb_jstr(info, "path"), mb_jstr(info, "type"),
                   json_object_get(body, "add"), json_object_get(body, "remove"), &names, err);
    if (rc) {
        json_decref(info);
        return rc;
    }
    json_t *out = json_pack("{s:O, s:o}", "path", json_object_get(info, "path"), "tags", names);
    json_decref(info);
    return t->api->reply_json(req, 200, out);
}

/* ---------------------------------------------------- listing and service --- */

static void decorate(uint64_t sid, json_t *entry, void *state)
{
    json_object_set_new(entry, "tags", entry_tags(state, sid, entry));
}

/* ?tag=a&tag=-b (AND, NOT) and ?any=c&any=d (OR); nothing asked: nothing removed. */
static int req_filter(tags *t, mb_req *req, tag_filter *f, mb_err *err)
{
    static const char *const keys[] = {"tag", "any"};
    for (int k = 0; k < 2; k++) {
        json_t *vals = t->api->req_query_all(req, keys[k]);
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v) {
            char why[128];
            if (tagx_filter_add(f, json_string_value(v), k == 1, why, sizeof why)) {
                json_decref(vals);
                tagx_filter_free(f);
                return t->api->err_set(err, MB_EINVAL, "%s=%.64s: %s", keys[k], json_string_value(v), why);
            }
        }
        json_decref(vals);
    }
    return 0;
}

static int filter(mb_req *req, uint64_t sid, json_t *listing, void *state, mb_err *err)
{
    tags *t = state;
    tag_filter f = {0};
    int rc = req_filter(t, req, &f, err);
    if (rc || (!f.want && !f.not && !f.any))
        return rc;
    json_t *entries = json_object_get(listing, "entries");
    for (size_t i = json_array_size(entries); i-- > 0;) {
        json_t *names = entry_tags(t, sid, json_array_get(entries, i));
        if (!tagx_match(&f, names))
            json_array_remove(entries, i);
        json_decref(names);
    }
    tagx_filter_free(&f);
    return 0;
}

typedef struct match_ctx {
    json_t *by_path; /* path -> tags, entries outside the trash */
} match_ctx;

static int match_one(const char *key, json_t *v, void *ud)
{
    (void)key;
    match_ctx *m = ud;
    const char *path = mb_jstr(v, "path");
    if (path && !json_object_get(v, "trash"))
        json_object_set(m->by_path, path, json_object_get(v, "tags"));
    return 0;
}

/* "tags.match" {"store","tags":["a","-b"],"any"?:[...],"paths"?:[...]} -> {"paths":[...]}: of the
 * paths given (an untagged one has no tags), or else of every tagged entry, those the filter keeps. */
static int s_match(const json_t *arg, json_t **out, void *state, mb_err *err)
{
    tags *t = state;
    tag_filter f = {0};
    static const char *const keys[] = {"tags", "any"};
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(arg, keys[k]), i, v) {
            char why[128];
            if (tagx_filter_add(&f, json_string_value(v), k == 1, why, sizeof why)) {
                tagx_filter_free(&f);
                return t->api->err_set(err, MB_EINVAL, "tag:%.64s: %s", json_string_value(v) ?: "", why);
            }
        }
    }
    match_ctx m = {json_object()};
    char prefix[64];
    snprintf(prefix, sizeof prefix, "e/%016llx/", (unsigned long long)mb_jint(arg, "store"));
    int rc = t->api->kv_scan_json(t->self, prefix, match_one, &m, err);
    json_t *res = json_array(), *none = json_array();
    if (!rc) {
        json_t *given = json_object_get(arg, "paths");
        size_t i;
        json_t *v;
        const char *path;
        if (json_is_array(given)) {
            json_array_foreach(given, i, v) {
                path = strip(json_string_value(v));
                json_t *names = json_object_get(m.by_path, path);
                if (json_is_string(v) && tagx_match(&f, names ? names : none))
                    json_array_append(res, v);
            }
        } else
            json_object_foreach(m.by_path, path, v) if (tagx_match(&f, v)) json_array_append_new(res, json_string(path));
    }
    tagx_filter_free(&f);
    json_decref(m.by_path);
    json_decref(none);
    if (rc) {
        json_decref(res);
        return rc;
    }
    *out = json_pack("{s:o}", "paths", res);
    return 0;
}

/* ----------------------------------------------------------- the event queue --- */

static void o_event(const char *event, const json_t *p, mb_batch *b, void *state)
{
    tags *t = state;
    char key[40];
    snprintf(key, sizeof key, "q/%020llu", (unsigned long long)atomic_fetch_add(&t->seq, 1));
    json_t *v = json_deep_copy(p);
    json_object_set_new(v, "event", json_string(event));
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    mb_err e;
    if (s && t->api->batch_put(b, t->self, key, s, strlen(s), &e))
        t->api->log(t->self, MB_LOG_WARN, "an event could not be queued: %s", e.msg);
    free(s);
}

/* Rewrite the paths of the records of store sid equal to or under `from` (a move, a restore). */
typedef struct each_ctx {
    tags *t;
    const json_t *ev;
    json_t *keys, *vals; /* collected, written after the scan */
} each_ctx;

static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/');
}

static int collect(const char *key, json_t *v, void *ud)
{
    each_ctx *c = ud;
    json_array_append_new(c->keys, json_string(key));
    json_array_append(c->vals, v);
    return 0;
}

/* Path bookkeeping for one event; under mu. */
static void book(tags *t, const char *ev, const json_t *p)
{
    uint64_t sid = (uint64_t)mb_jint(p, "store");
    mb_err e;
    char key[64];
    if (!strcmp(ev, "file.deleted")) {
        static const char *const kinds[] = {"e", "s", "d"};
        for (int k = 0; k < 3; k++) {
            tg_key(key, sizeof key, kinds[k], sid, (uint64_t)mb_jint(p, "file_id"));
            t->api->kv_del(t->self, key, false, &e);
        }
        return;
    }
    bool move = !strcmp(ev, "file.moved") || !strcmp(ev, "folder.moved");
    bool trashed = !strcmp(ev, "file.trashed"), restored = !strcmp(ev, "file.restored");
    bool purged = !strcmp(ev, "file.purged"), fdel = !strcmp(ev, "folder.deleted");
    if (!move && !trashed && !restored && !purged && !fdel)
        return;
    each_ctx c = {t, p, json_array(), json_array()};
    char prefix[64];
    snprintf(prefix, sizeof prefix, "e/%016llx/", (unsigned long long)sid);
    t->api->kv_scan_json(t->self, prefix, collect, &c, &e);
    const char *from = strip(move || restored ? mb_jstr(p, "from") : mb_jstr(p, "path"));
    const char *to = strip(mb_jstr(p, move ? "to" : "path"));
    int64_t tid = mb_jint(p, "trash_id");
    size_t i;
    json_t *v;
    json_array_foreach(c.vals, i, v) {
        const char *k = json_string_value(json_array_get(c.keys, i));
        const char *path = mb_jstr(v, "path");
        bool in_trash = json_object_get(v, "trash") != NULL;
        if (!path)
            continue;
        if ((move || trashed || fdel) && (in_trash || !under(path, from)))
            continue;
        if ((restored || purged) && (!in_trash || mb_jint(v, "trash") != tid))
            continue;
        if (fdel || purged) {
            t->api->kv_del(t->self, k, false, &e);
            continue;
        }
        if (trashed)
            json_object_set_new(v, "trash", json_integer(tid));
        else {
            char *np;
            if (asprintf(&np, "%s%s", to, path + strlen(from)) < 0)
                continue;
            json_object_set_new(v, "path", json_string(np));
            free(np);
            json_object_del(v, "trash");
        }
        tg_put(t, k, v, &e);
    }
    json_decref(c.keys);
    json_decref(c.vals);
}

/* A copy carries the tags of what it copies (file.copied, folder.copied): each tagged entry
 * equal to or under `from` gives its tags to the entry at the same place under `to`, which
 * has a new id. Not under mu (tg_change takes it per entry). */
static void copy_tags(tags *t, const json_t *p)
{
    uint64_t sid = (uint64_t)mb_jint(p, "store");
    const char *from = strip(mb_jstr(p, "from")), *to = strip(mb_jstr(p, "to"));
    each_ctx c = {t, p, json_array(), json_array()};
    char prefix[64];
    mb_err e;
    snprintf(prefix, sizeof prefix, "e/%016llx/", (unsigned long long)sid);
    t->api->kv_scan_json(t->self, prefix, collect, &c, &e);
    size_t i;
    json_t *v;
    json_array_foreach(c.vals, i, v) {
        const char *path = mb_jstr(v, "path");
        char *np;
        if (!path || json_object_get(v, "trash") || !*from || !under(path, from) ||
            asprintf(&np, "%s%s", to, path + strlen(from)) < 0)
            continue;
        json_t *info = NULL;
        if (t->api->file_stat(NULL, sid, np, &info, &e) == 0) /* gone meanwhile: nothing to tag */
            tg_change(t, sid, (uint64_t)mb_jint(info, "id"), np, mb_jstr(info, "type"), json_object_get(v, "tags"),
                      NULL, NULL, &e);
        json_decref(info);
        free(np);
    }
    json_decref(c.keys);
    json_decref(c.vals);
}

typedef struct drain_ctx {
    json_t *keys, *vals;
} drain_ctx;

static int drain_one(const char *key, json_t *v, void *ud)
{
    drain_ctx *d = ud;
    json_array_append_new(d->keys, json_string(key));
    json_array_append(d->vals, v);
    return json_array_size(d->keys) >= 256;
}

/* drain_one for qread_scan, which passes the raw value: a value that is not JSON is skipped. */
static int drain_raw(const char *key, const void *value, size_t len, void *ud)
{
    json_t *v = json_loadb(value, len, 0, NULL);
    int stop = v ? drain_one(key, v, ud) : 0;
    json_decref(v);
    return stop;
}

static void drain(void *arg)
{
    tags *t = arg;
    for (;;) {
        drain_ctx d = {json_array(), json_array()};
        mb_err e;
        qread_scan(t->api, t->self, &t->rd, "q/", drain_raw, &d); /* keys only grow */
        size_t n = json_array_size(d.keys), i;
        json_t *p;
        json_array_foreach(d.vals, i, p) {
            const char *ev = mb_jstr(p, "event");
            pthread_mutex_lock(&t->mu);
            book(t, ev, p);
            pthread_mutex_unlock(&t->mu);
            if (!strcmp(ev, "file.copied") || !strcmp(ev, "folder.copied"))
                copy_tags(t, p);
            bool run = !strcmp(ev, "file.created") || !strcmp(ev, "file.updated") || !strcmp(ev, "file.moved") ||
                       !strcmp(ev, "search.extracted");
            const char *path = mb_jstr(p, !strcmp(ev, "file.moved") ? "to" : "path");
            if (run && path && !(json_is_string(json_object_get(p, "type")) && strcmp(mb_jstr(p, "type"), "file")))
                rules_file(t, (uint64_t)mb_jint(p, "store"), path, NULL, NULL, false, NULL, &e);
            t->api->kv_del(t->self, json_string_value(json_array_get(d.keys, i)), false, &e);
        }
        json_decref(d.keys);
        json_decref(d.vals);
        if (n < 256)
            break;
    }
}

/* ---------------------------------------------------------- init and fini --- */

static void read_config(tags *t, const json_t *config)
{
    atomic_store(&t->text_max, mb_jint(config, "text_max"));
    atomic_store(&t->result_max, mb_jint(config, "run_result_max"));
    atomic_store(&t->head_bytes, mb_jint(config, "head_bytes"));
    json_t *g = json_object_get(config, "global_rules");
    g = json_is_array(g) ? json_deep_copy(g) : json_array();
    pthread_mutex_lock(&t->mu); /* readers take their own reference under mu (tg_globals) */
    json_t *old = t->global_rules;
    t->global_rules = g;
    pthread_mutex_unlock(&t->mu);
    json_decref(old);
}

json_t *tg_globals(tags *t)
{
    pthread_mutex_lock(&t->mu);
    json_t *g = json_incref(t->global_rules);
    pthread_mutex_unlock(&t->mu);
    return g;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    tags *t = calloc(1, sizeof *t);
    if (!t)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    t->self = self;
    t->api = api;
    pthread_mutex_init(&t->mu, NULL);
    qread_init(&t->rd);
    read_config(t, config);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* queue keys keep rising across restarts */
    atomic_store(&t->seq, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000);
    int rc = api->listing_decorator_set(self, decorate, t, err);
    /* A store's tags, tagged entries, rules and suggestions travel with it between cluster nodes
     * (docs/cluster.md); a rule's counters (rs/) stay each node's. */
    static const char *const own[] = {"n/", "e/", "r/", "s/", "d/"};
    for (size_t i = 0; i < sizeof own / sizeof own[0] && !rc && api->size > offsetof(mb_api, store_records); i++)
        rc = api->store_records(self, own[i], err);
    if (!rc)
        rc = api->listing_filter_set(self, filter, t, err);
    if (!rc)
        rc = api->service_set(self, "tags.match", s_match, t, err);
    if (!rc)
        rc = rules_init(t, err);
    if (!rc)
        rc = api->timer_add(self, 0, mb_jint(config, "queue_interval_ms"), drain, t, &t->timer, err);
    if (rc) {
        mb_err e;
        api->listing_decorator_set(self, NULL, NULL, &e);
        api->listing_filter_set(self, NULL, NULL, &e);
        api->service_set(self, "tags.match", NULL, NULL, &e);
        json_decref(t->global_rules);
        qread_fini(&t->rd);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return rc;
    }
    *state = t;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    tags *t = state;
    mb_err e;
    t->api->listing_decorator_set(t->self, NULL, NULL, &e);
    t->api->listing_filter_set(t->self, NULL, NULL, &e);
    t->api->service_set(t->self, "tags.match", NULL, NULL, &e);
    json_decref(t->global_rules);
    qread_fini(&t->rd);
    pthread_mutex_destroy(&t->mu);
    free(t);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    (void)err;
    read_config(state, config);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "text_max", MB_CFG_INT, "65536", 0, 16777216},
    {sizeof(mb_config_key), "head_bytes", MB_CFG_INT, "4096", 0, 65536},
    {sizeof(mb_config_key), "global_rules", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "queue_interval_ms", MB_CFG_INT, "200", 10, 60000},
    {sizeof(mb_config_key), "run_result_max", MB_CFG_INT, "1000", 0, 100000},
    {0},
};

#define R(m, p, f) {sizeof(mb_route), m, p, MB_ROLE_USER, f, NULL}
static const mb_route routes[] = {
    R("GET", "/api/v1/stores/{sid}/tags", h_tags),
    R("GET", "/api/v1/stores/{sid}/tags/{path*}", h_entry_get),
    R("POST", "/api/v1/stores/{sid}/tags/{path*}", h_entry_post),
    R("GET", "/api/v1/stores/{sid}/rules", rules_h_list),
    R("POST", "/api/v1/stores/{sid}/rules/run", rules_h_run),
    R("GET", "/api/v1/stores/{sid}/rules/{name}", rules_h_get),
    R("PUT", "/api/v1/stores/{sid}/rules/{name}", rules_h_put),
    R("DELETE", "/api/v1/stores/{sid}/rules/{name}", rules_h_delete),
    R("POST", "/api/v1/stores/{sid}/rules/{name}/test", rules_h_test),
    R("GET", "/api/v1/stores/{sid}/suggestions", rules_h_suggestions),
    R("POST", "/api/v1/stores/{sid}/suggestions/accept", rules_h_accept),
    R("POST", "/api/v1/stores/{sid}/suggestions/dismiss", rules_h_dismiss),
    {sizeof(mb_route), "POST", "/api/v1/admin/tags/rules/reload", MB_ROLE_ADMIN, rules_h_reload, NULL},
    {0},
};

#define EV(name) {sizeof(mb_hook), name, MB_HOOK_OBSERVER, 500, NULL, NULL, o_event, NULL, NULL}
static const mb_hook hooks[] = {
    EV("file.created"),  EV("file.updated"),  EV("file.moved"),    EV("folder.moved"),     EV("file.trashed"),
    EV("file.restored"), EV("file.deleted"),  EV("folder.deleted"), EV("file.purged"),     EV("search.extracted"),
    EV("file.copied"),   EV("folder.copied"),
    {0},
};

static const mb_task_type task_types[] = {
    {sizeof(mb_task_type), "tags.run", rules_task, 1},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 1,
    .name = "tags",
    .version = "1.0.0",
    .description = "Tags on files and folders, per store; automated tagging by Lua rules",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = task_types,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
