/*
 * modules/tags/rules.c — automated tagging: Lua rules run on a file, their suggestions, the
 * rules and suggestions routes and the apply-to-existing task (issue 19, docs/rules.md).
 *
 * A rule is a Lua chunk defining `rule(file)`, run in the kernel's sandbox (no io/os/require/
 * debug; instruction, memory and wall-clock budgets): global ones are scripts/lua/ files named by
 * the `global_rules` config list (api->lua_call reads the file on every call, so an edit takes
 * effect at once), a store's own are kept in r/<sid16>/<name> (api->lua_run). `file` is a
 * read-only table (name, path, extension, size, type, modified, version, sha256, store, head:
 * the first head_bytes bytes, text and exif when the search module has extracted them); the
 * result is {apply={...}, suggest={...}}, each item a tag name or {tag=, reason=}.
 * A rule that fails counts an error with its sentence (rs/) and the other rules go on.
 *
 * Threads: rules_file runs on the pool (the queue drain, the run task) and on HTTP workers (the
 * test call, a dry run never writes). Record changes go through tg_change or under t->mu.
 */
#include "tags.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULE_NAME_MAX 60
#define RULES_MAX 64 /* rules of one store */

static bool rule_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= RULE_NAME_MAX && s[0] != '.' &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static void rkey(char *out, size_t n, const char *kind, uint64_t sid, const char *name)
{
    snprintf(out, n, "%s/%016llx/%s", kind, (unsigned long long)sid, name);
}

/* ------------------------------------------------------------ the file table --- */

/* Bytes as a JSON string: invalid UTF-8 and NUL become '.', so magic numbers ("%PDF") and text
 * still read as they are. */
static json_t *bytes_string(const unsigned char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = len && i + len <= n && c != 0 && !(len == 2 && c < 0xC2) && !(len == 4 && c > 0xF4);
        for (size_t j = 1; ok && j < len; j++)
            ok = (s[i + j] & 0xC0) == 0x80;
        if (ok && len == 3 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0)))
            ok = false;
        if (ok && len == 4 && ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)))
            ok = false;
        if (!ok) {
            o[k++] = '.';
            i++;
            continue;
        }
        memcpy(o + k, s + i, len);
        k += len;
        i += len;
    }
    json_t *j = json_stringn(o, k);
    free(o);
    return j;
}

/* EXIF fields from the lines the search module's extractor writes for images ("Camera: ",
 * "Model: ", "Taken: ", ...). */
static json_t *exif_of(const char *text)
{
    static const char *const labels[][2] = {{"Camera: ", "make"},       {"Model: ", "model"},
                                            {"Taken: ", "date"},        {"Description: ", "description"},
                                            {"Artist: ", "artist"}};
    json_t *o = json_object();
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        for (size_t k = 0; k < sizeof labels / sizeof labels[0]; k++) {
            size_t ln = strlen(labels[k][0]);
            if (n > ln && !strncmp(line, labels[k][0], ln) && !json_object_get(o, labels[k][1]))
                json_object_set_new(o, labels[k][1], json_stringn(line + ln, n - ln));
        }
        line = end ? end + 1 : NULL;
    }
    if (!json_object_size(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *file_table(tags *t, uint64_t sid, const char *path, json_t **info_out, mb_err *err)
{
    json_t *info = NULL;
    mb_file_reader *r = NULL;
    int rc = t->api->file_open(NULL, sid, path, 0, &r, &info, err);
    if (rc)
        return NULL;
    const char *name = mb_jstr(info, "name");
    const char *dot = name ? strrchr(name, '.') : NULL;
    char ext[32] = "";
    if (dot && dot != name && strlen(dot + 1) < sizeof ext)
        tagx_lower(dot + 1, ext, sizeof ext);
    json_t *f = json_pack("{s:O, s:O, s:s, s:O, s:O, s:O, s:O, s:O, s:I}", "name", json_object_get(info, "name"),
                          "path", json_object_get(info, "path"), "extension", ext, "size",
                          json_object_get(info, "size"), "type",
                          json_object_get(info, "ctype") ? json_object_get(info, "ctype") : json_string(""),
                          "modified", json_object_get(info, "mtime"), "version", json_object_get(info, "version"),
                          "sha256", json_object_get(info, "sha256"), "store", (json_int_t)sid);
    int64_t head = atomic_load(&t->head_bytes), text_max = atomic_load(&t->text_max);
    if (head > 0) {
        unsigned char *buf = malloc((size_t)head);
        size_t got = 0;
        while (got < (size_t)head) {
            int64_t n = t->api->file_read(r, got, buf + got, (size_t)head - got, err);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        json_object_set_new(f, "head", bytes_string(buf, got));
        free(buf);
    }
    t->api->file_close(r);
    json_t *sx = NULL;
    mb_err e;
    json_t *q = json_pack("{s:I, s:s, s:I}", "store", (json_int_t)sid, "path", mb_jstr(info, "path"), "max",
                          (json_int_t)text_max);
    if (text_max > 0 && t->api->service_call("search.text", q, &sx, &e) == 0 && mb_jstr(sx, "text") &&
        (!mb_jstr(sx, "sha256") || !strcmp(mb_jstr(sx, "sha256"), mb_jstr(info, "sha256") ?: ""))) {
        json_object_set(f, "text", json_object_get(sx, "text"));
        json_t *ex = exif_of(mb_jstr(sx, "text"));
        if (ex)
            json_object_set_new(f, "exif", ex);
    }
    json_decref(q);
    json_decref(sx);
    if (info_out)
        *info_out = info;
    else
        json_decref(info);
    return f;
}

/* ------------------------------------------------------------------- rules --- */

/* The result's list `key` as [{"tag","reason"}], valid names only; a bad item is the rule's error. */
static int result_list(tags *t, const json_t *res, const char *key, const char *rule, json_t *out, mb_err *err)
{
    json_t *list = json_object_get(res, key);
    if (!list)
        return 0;
    if (!json_is_array(list))
        return t->api->err_set(err, MB_EINVAL, "rule %s: %s is not a list", rule, key);
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it) {
        const char *tag = json_is_string(it) ? json_string_value(it) : mb_jstr(it, "tag");
        char name[TAG_MAX + 1], why[128];
        if (tagx_norm(tag, name, sizeof name, why, sizeof why))
            return t->api->err_set(err, MB_EINVAL, "rule %s: %s item %zu: %s", rule, key, i + 1, why);
        json_t *o = json_pack("{s:s, s:s}", "tag", name, "rule", rule);
        if (mb_jstr(it, "reason"))
            json_object_set(o, "reason", json_object_get(it, "reason"));
        json_array_append_new(out, o);
    }
    return 0;
}

static void stats(tags *t, uint64_t sid, const char *rule, const mb_err *fail, size_t applied)
{
    char key[128];
    rkey(key, sizeof key, "rs", sid, rule);
    pthread_mutex_lock(&t->mu);
    json_t *s = tg_get(t, key);
    if (!s)
        s = json_object();
    json_object_set_new(s, "runs", json_integer(mb_jint(s, "runs") + 1));
    json_object_set_new(s, "applied", json_integer(mb_jint(s, "applied") + (json_int_t)applied));
    if (fail) {
        json_object_set_new(s, "errors", json_integer(mb_jint(s, "errors") + 1));
        json_object_set_new(s, "last_error", json_string(fail->msg));
        json_object_set_new(s, "last_error_at", json_integer(t->api->now()));
    }
    mb_err e;
    char *txt = json_dumps(s, JSON_COMPACT);
    if (txt) /* counts: not synced, a crash may lose the last few */
        t->api->kv_put(t->self, key, txt, strlen(txt), false, &e);
    free(txt);
    pthread_mutex_unlock(&t->mu);
    json_decref(s);
}

/* Run one rule; its items appended to apply and suggest. */
static int run_one(tags *t, const char *rule, const char *src, const json_t *file, json_t *apply,
                   json_t *suggest, mb_err *err)
{
    char script[RULE_NAME_MAX + 8];
    json_t *res = NULL;
    int rc;
    if (src) {
        snprintf(script, sizeof script, "%s.lua", rule);
        rc = t->api->lua_run(script, src, "rule", file, &res, err);
    } else
        rc = t->api->lua_call(rule, "rule", file, &res, err);
    if (!rc && res && !json_is_object(res))
        rc = t->api->err_set(err, MB_EINVAL, "rule %s: rule(file) returns {apply=..., suggest=...}", rule);
    size_t a0 = json_array_size(apply), s0 = json_array_size(suggest);
    if (!rc && res)
        rc = result_list(t, res, "apply", rule, apply, err);
    if (!rc && res)
        rc = result_list(t, res, "suggest", rule, suggest, err);
    if (rc) { /* nothing of a failing rule counts */
        while (json_array_size(apply) > a0)
            json_array_remove(apply, a0);
        while (json_array_size(suggest) > s0)
            json_array_remove(suggest, s0);
    }
    json_decref(res);
    return rc;
}

typedef struct store_rules {
    json_t *names, *srcs;
} store_rules;

static int rule_collect(const char *key, json_t *v, void *ud)
{
    store_rules *r = ud;
    json_array_append_new(r->names, json_string(strrchr(key, '/') + 1));
    json_array_append(r->srcs, json_object_get(v, "src"));
    return 0;
}

static void store_rules_load(tags *t, uint64_t sid, store_rules *r)
{
    r->names = json_array();
    r->srcs = json_array();
    char prefix[40];
    snprintf(prefix, sizeof prefix, "r/%016llx/", (unsigned long long)sid);
    mb_err e;
    t->api->kv_scan_json(t->self, prefix, rule_collect, r, &e);
}

/* Keep suggestions not already applied nor dismissed for this version; under mu. */
static void suggest_keep(tags *t, uint64_t sid, const json_t *info, const json_t *suggest)
{
    uint64_t id = (uint64_t)mb_jint(info, "id");
    int64_t ver = mb_jint(info, "version");
    char ekey[64], skey[64], dkey[64];
    tg_key(ekey, sizeof ekey, "e", sid, id);
    tg_key(skey, sizeof skey, "s", sid, id);
    tg_key(dkey, sizeof dkey, "d", sid, id);
    json_t *rec = tg_get(t, ekey), *s = tg_get(t, skey), *d = tg_get(t, dkey);
    if (!s)
        s = json_pack("{s:{}}", "items");
    json_t *items = json_object_get(s, "items");
    json_object_set(s, "path", json_object_get(info, "path"));
    json_object_set_new(s, "version", json_integer(ver));
    size_t i;
    json_t *it;
    json_array_foreach(suggest, i, it) {
        char low[TAG_MAX + 1];
        tagx_lower(mb_jstr(it, "tag"), low, sizeof low);
        bool have = false;
        size_t k;
        json_t *n;
        json_array_foreach(json_object_get(rec, "tags"), k, n) {
            char l2[TAG_MAX + 1];
            tagx_lower(json_string_value(n), l2, sizeof l2);
            have |= !strcmp(low, l2);
        }
        if (!have && mb_jint(d, low) != ver)
            json_object_set(items, low, it);
    }
    mb_err e;
    if (json_object_size(items))
        tg_put(t, skey, s, &e);
    json_decref(rec);
    json_decref(s);
    json_decref(d);
}

int rules_file(tags *t, uint64_t sid, const char *path, const char *only_rule, const char *only_src, bool dry,
               json_t **result, mb_err *err)
{
    store_rules sr = {0};
    if (!only_rule)
        store_rules_load(t, sid, &sr);
    json_t *globals = tg_globals(t);
    size_t ng = only_rule ? 1 : json_array_size(globals);
    size_t total = ng + (only_rule ? 0 : json_array_size(sr.names));
    json_t *info = NULL, *file = NULL;
    if (!total || !(file = file_table(t, sid, path, &info, err))) { /* no rule: the file is not even read */
        json_decref(globals);
        json_decref(sr.names);
        json_decref(sr.srcs);
        if (!total && result)
            *result = json_pack("{s:s, s:[], s:[], s:[]}", "path", path + strspn(path, "/"), "apply", "suggest",
                                "errors");
        return total ? err->code : 0;
    }
    json_t *apply = json_array(), *suggest = json_array(), *errors = json_array();
    for (size_t i = 0; i < total; i++) {
        bool global = i < ng && !only_src;
        const char *rule = only_rule ? only_rule
                           : i < ng  ? json_string_value(json_array_get(globals, i))
                                     : json_string_value(json_array_get(sr.names, i - ng));
        const char *src = only_rule ? only_src : i < ng ? NULL : json_string_value(json_array_get(sr.srcs, i - ng));
        if (!rule)
            continue;
        mb_err e = {0};
        size_t a0 = json_array_size(apply);
        int rc = run_one(t, rule, src, file, apply, suggest, &e);
        if (rc)
            json_array_append_new(errors, json_pack("{s:s, s:s}", "rule", rule, "error", e.msg));
        if (!dry)
            stats(t, global ? 0 : sid, rule, rc ? &e : NULL, json_array_size(apply) - a0);
    }
    int rc = 0;
    if (!dry) {
        if (json_array_size(apply)) {
            json_t *names = json_array();
            size_t i;
            json_t *it;
            json_array_foreach(apply, i, it) json_array_append(names, json_object_get(it, "tag"));
            rc = tg_change(t, sid, (uint64_t)mb_jint(info, "id"), mb_jstr(info, "path"), "file", names, NULL, NULL,
                           err);
            json_decref(names);
        }
        if (!rc && json_array_size(suggest)) {
            pthread_mutex_lock(&t->mu);
            suggest_keep(t, sid, info, suggest);
            pthread_mutex_unlock(&t->mu);
        }
    }
    if (result)
        *result = json_pack("{s:O, s:O, s:O, s:O}", "path", json_object_get(info, "path"), "apply", apply, "suggest",
                            suggest, "errors", errors);
    json_decref(apply);
    json_decref(suggest);
    json_decref(errors);
    json_decref(globals);
    json_decref(sr.names);
    json_decref(sr.srcs);
    json_decref(file);
    json_decref(info);
    return rc;
}

int rules_init(tags *t, mb_err *err)
{
    (void)t, (void)err;
    return 0;
}

/* ------------------------------------------------------------------ routes --- */

static int req_rule(tags *t, mb_req *req, uint64_t *sid, const char **name, mb_err *err)
{
    int rc = tg_req_sid(t, req, sid, err);
    if (rc)
        return rc;
    *name = t->api->req_param(req, "name");
    if (!rule_name_ok(*name))
        return t->api->err_set(err, MB_EINVAL,
                               "'%.64s' is not a rule name: 1 to 60 letters, digits, '_' or '-'", *name ? *name : "");
    return 0;
}

/* POST /api/v1/admin/tags/rules/reload (mbytectl rules reload): after an administrator fixed a
 * global rule's file. The files are read on every call already; this clears each global rule's
 * error count and last error, so GET .../rules shows whether the fix holds, and answers the
 * global rules now configured: {"rules": [names], "reset": n}. */
int rules_h_reload(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    json_t *globals = tg_globals(t);
    json_int_t reset = 0;
    size_t i;
    json_t *g;
    pthread_mutex_lock(&t->mu); /* stats() read-modify-writes under mu */
    json_array_foreach(globals, i, g) {
        char key[128];
        rkey(key, sizeof key, "rs", 0, json_string_value(g));
        json_t *s = tg_get(t, key);
        if (s && (mb_jint(s, "errors") || json_object_get(s, "last_error"))) {
            json_object_set_new(s, "errors", json_integer(0));
            json_object_del(s, "last_error");
            json_object_del(s, "last_error_at");
            if (tg_put(t, key, s, err) == 0)
                reset++;
        }
        json_decref(s);
    }
    pthread_mutex_unlock(&t->mu);
    t->api->log(t->self, MB_LOG_INFO, "global rules reloaded: %zu configured, %lld error counts cleared",
                json_array_size(globals), (long long)reset);
    return t->api->reply_json(req, 200, json_pack("{s:o, s:I}", "rules", globals, "reset", reset));
}

typedef struct list_ctx {
    tags *t;
    json_t *out;
    uint64_t sid;
} list_ctx;

static json_t *rule_stats(tags *t, uint64_t sid, const char *name)
{
    char key[128];
    rkey(key, sizeof key, "rs", sid, name);
    json_t *s = tg_get(t, key);
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:O}", "name", name, "runs", (json_int_t)mb_jint(s, "runs"), "errors",
                          (json_int_t)mb_jint(s, "errors"), "applied", (json_int_t)mb_jint(s, "applied"), "last_error",
                          json_object_get(s, "last_error") ? json_object_get(s, "last_error") : json_null());
    json_decref(s);
    return o;
}

static int list_one(const char *key, json_t *v, void *ud)
{
    list_ctx *c = ud;
    json_t *o = rule_stats(c->t, c->sid, strrchr(key, '/') + 1);
    json_object_set_new(o, "scope", json_string("store"));
    json_object_set(o, "updated", json_object_get(v, "updated"));
    json_array_append_new(c->out, o);
    return 0;
}

/* GET /api/v1/stores/{sid}/rules */
int rules_h_list(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc)
        return rc;
    list_ctx c = {t, json_array(), sid};
    size_t i;
    json_t *g;
    json_t *globals = tg_globals(t);
    json_array_foreach(globals, i, g) {
        json_t *o = rule_stats(t, 0, json_string_value(g));
        json_object_set_new(o, "scope", json_string("global"));
        json_array_append_new(c.out, o);
    }
    json_decref(globals);
    char prefix[40];
    snprintf(prefix, sizeof prefix, "r/%016llx/", (unsigned long long)sid);
    if ((rc = t->api->kv_scan_json(t->self, prefix, list_one, &c, err))) {
        json_decref(c.out);
        return rc;
    }
    return t->api->reply_json(req, 200, c.out);
}

static json_t *rule_get(tags *t, uint64_t sid, const char *name)
{
    char key[128];
    rkey(key, sizeof key, "r", sid, name);
    return tg_get(t, key);
}

/* The store's rule the request names, or MB_ENOENT. */
static int req_rule_rec(tags *t, mb_req *req, uint64_t *sid, const char **name, json_t **rec, mb_err *err)
{
    int rc = req_rule(t, req, sid, name, err);
    if (rc)
        return rc;
    if (!(*rec = rule_get(t, *sid, *name)))
        return t->api->err_set(err, MB_ENOENT, "no rule %s in this store", *name);
    return 0;
}

/* GET /api/v1/stores/{sid}/rules/{name} -> the Lua source */
int rules_h_get(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    const char *name;
    json_t *r;
    int rc = req_rule_rec(t, req, &sid, &name, &r, err);
    if (rc)
        return rc;
    const char *src = mb_jstr(r, "src");
    rc = t->api->reply_bytes(req, 200, "text/x-lua; charset=utf-8", src, strlen(src));
    json_decref(r);
    return rc;
}

/* PUT /api/v1/stores/{sid}/rules/{name} (text/x-lua) -> 201; a syntax error -> 422 with line */
int rules_h_put(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    const char *name;
    int rc = req_rule(t, req, &sid, &name, err);
    if (rc)
        return rc;
    const void *data;
    size_t len;
    t->api->req_body(req, &data, &len);
    char *src = t->api->req_alloc(req, len + 1);
    memcpy(src, data ? data : "", len);
    src[len] = 0;
    if (strlen(src) != len)
        return t->api->err_set(err, MB_EINVAL, "a rule is Lua source text (no NUL bytes)");
    char script[RULE_NAME_MAX + 8];
    snprintf(script, sizeof script, "%s.lua", name);
    mb_err e = {0};
    if ((rc = t->api->lua_check(script, src, &e))) {
        if (rc != MB_EINVAL)
            return *err = e, rc;
        const char *colon = strstr(e.msg, ".lua:");
        long line = colon ? strtol(colon + 5, NULL, 10) : 0;
        json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:I}", "type", "about:blank", "title", "Unprocessable Content",
                              "status", 422, "detail", e.msg, "line", (json_int_t)line);
        char *s = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        rc = t->api->reply_bytes(req, 422, "application/problem+json", s, strlen(s));
        free(s);
        return rc;
    }
    char key[128];
    rkey(key, sizeof key, "r", sid, name);
    json_t *old = tg_get(t, key);
    if (!old) { /* a new rule: every upload runs them all, so a store keeps a bounded number */
        store_rules sr;
        store_rules_load(t, sid, &sr);
        size_t n = json_array_size(sr.names);
        json_decref(sr.names);
        json_decref(sr.srcs);
        if (n >= RULES_MAX)
            return t->api->err_set(err, MB_ETOOBIG, "a store has at most %d rules", RULES_MAX);
    }
    json_decref(old);
    json_t *r = json_pack("{s:s, s:I}", "src", src, "updated", (json_int_t)t->api->now());
    rc = tg_put(t, key, r, err);
    json_decref(r);
    if (rc)
        return rc;
    return t->api->reply_json(req, 201, json_pack("{s:s, s:s}", "name", name, "scope", "store"));
}

/* DELETE /api/v1/stores/{sid}/rules/{name} */
int rules_h_delete(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    const char *name;
    json_t *r;
    int rc = req_rule_rec(t, req, &sid, &name, &r, err);
    if (rc)
        return rc;
    json_decref(r);
    char key[128];
    rkey(key, sizeof key, "r", sid, name);
    if ((rc = t->api->kv_del(t->self, key, true, err)))
        return rc;
    rkey(key, sizeof key, "rs", sid, name);
    t->api->kv_del(t->self, key, true, err);
    return t->api->reply_bytes(req, 204, NULL, "", 0);
}

/* POST /api/v1/stores/{sid}/rules/{name}/test {"path"} -> {"apply","suggest","error"?} */
int rules_h_test(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    json_t *body = t->api->req_json(req, err);
    if (!body)
        return err->code;
    uint64_t sid;
    const char *name = t->api->req_param(req, "name");
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc)
        return rc;
    const char *path = mb_jstr(body, "path");
    json_t *info = NULL;
    if (!path)
        return t->api->err_set(err, MB_EINVAL, "path: the file to test the rule on");
    if ((rc = t->api->file_stat(t->api->req_user(req), sid, path, &info, err)))
        return rc;
    json_decref(info);
    json_t *r = NULL, *res = NULL;
    bool global = false;
    size_t i;
    json_t *g;
    json_t *globals = tg_globals(t);
    json_array_foreach(globals, i, g) global |= name && !strcmp(json_string_value(g), name);
    json_decref(globals);
    if (!global && (rc = req_rule_rec(t, req, &sid, &name, &r, err)))
        return rc;
    rc = rules_file(t, sid, path, name, global ? NULL : mb_jstr(r, "src"), true, &res, err);
    json_decref(r);
    if (rc)
        return rc;
    json_t *out = json_pack("{s:O, s:O}", "apply", json_object_get(res, "apply"), "suggest",
                            json_object_get(res, "suggest"));
    json_t *errs = json_object_get(res, "errors");
    if (json_array_size(errs))
        json_object_set(out, "error", json_object_get(json_array_get(errs, 0), "error"));
    json_decref(res);
    return t->api->reply_json(req, 200, out);
}

/* POST /api/v1/stores/{sid}/rules/run {"path"?, "dry_run"} -> 202 {"task"} */
int rules_h_run(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    json_t *body = t->api->req_json(req, err);
    if (!body)
        return err->code;
    uint64_t sid, id;
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc)
        return rc;
    const char *path = mb_jstr(body, "path") ? mb_jstr(body, "path") : "";
    json_t *info = NULL;
    if ((rc = t->api->file_stat(t->api->req_user(req), sid, path, &info, err)))
        return rc;
    json_decref(info);
    json_t *args = json_pack("{s:I, s:s, s:b}", "store", (json_int_t)sid, "path", path, "dry_run",
                             json_is_true(json_object_get(body, "dry_run")));
    if ((rc = t->api->task_submit("tags.run", t->api->req_user(req)->id, args, &id, err)))
        return rc;
    return t->api->reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)id));
}

/* One tags.run: what it has done so far. */
typedef struct rules_run {
    tags *t;
    mb_task *task;
    uint64_t sid;
    bool dry;
    json_t *files; /* the first `max` files whose rules gave tags, with what they gave */
    size_t n, done, errors, changed, max;
} rules_run;

static int count_file(const json_t *en, void *ud)
{
    if (!strcmp(mb_jstr(en, "type") ?: "", "file"))
        ((rules_run *)ud)->n++;
    return 0;
}

/* The rules of one file; MB_ECANCELED when the task was cancelled. */
static int run_file(rules_run *r, const char *path)
{
    json_t *res = NULL;
    mb_err e = {0};
    if (rules_file(r->t, r->sid, path, NULL, NULL, r->dry, &res, &e) == 0) {
        r->errors += json_array_size(json_object_get(res, "errors"));
        if ((json_array_size(json_object_get(res, "apply")) || json_array_size(json_object_get(res, "suggest"))) &&
            r->changed++ < r->max) /* a run over a million files keeps a page of them, and counts */
            json_array_append_new(r->files, json_pack("{s:O, s:O, s:O}", "path", json_object_get(res, "path"), "apply",
                                                      json_object_get(res, "apply"), "suggest",
                                                      json_object_get(res, "suggest")));
    } else if (e.code != MB_ENOENT) /* gone meanwhile: nothing to tag */
        r->errors++;
    json_decref(res);
    r->done++;
    size_t of = r->n > r->done ? r->n : r->done; /* files added since the count */
    return r->t->api->task_progress(r->task, (int)(r->done * 100 / of), r->dry ? "dry run" : "applying") ? MB_ECANCELED
                                                                                                      : 0;
}

static int run_entry(const json_t *en, void *ud)
{
    return strcmp(mb_jstr(en, "type") ?: "", "file") ? 0 : run_file(ud, mb_jstr(en, "path"));
}

/* tags.run: every file under args.path, a folder walked twice in bounded memory (a count for the
 * progress, then the run); the result counts the files whose rules gave tags ("changed") and lists
 * the first run_result_max of them with what they gave ("changes"), in a dry run and a real one
 * alike. */
int rules_task(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    tags *t = state;
    rules_run r = {t, task, (uint64_t)mb_jint(args, "store"), json_is_true(json_object_get(args, "dry_run")), NULL,
                   0, 0, 0, 0, (size_t)atomic_load(&t->result_max)};
    const char *base = mb_jstr(args, "path") ? mb_jstr(args, "path") : "";
    json_t *info = NULL;
    int rc = t->api->file_stat(NULL, r.sid, base, &info, err);
    if (rc)
        return rc;
    r.files = json_array();
    if (!strcmp(mb_jstr(info, "type") ?: "", "file")) {
        r.n = 1;
        rc = run_file(&r, mb_jstr(info, "path"));
    } else if (!(rc = t->api->folder_walk(NULL, r.sid, base, count_file, &r, err)))
        rc = t->api->folder_walk(NULL, r.sid, base, run_entry, &r, err);
    json_decref(info);
    if (rc) {
        json_decref(r.files);
        return rc == MB_ECANCELED ? t->api->err_set(err, MB_ECANCELED, "cancelled after %zu of %zu files", r.done, r.n)
                                  : rc;
    }
    t->api->task_result(task, json_pack("{s:b, s:I, s:I, s:I, s:o}", "dry_run", r.dry, "files", (json_int_t)r.done,
                                        "errors", (json_int_t)r.errors, "changed", (json_int_t)r.changed, "changes",
                                        r.files));
    return 0;
}

/* ------------------------------------------------------------- suggestions --- */

typedef struct sug_ctx {
    json_t *out;
} sug_ctx;

static int sug_one(const char *key, json_t *v, void *ud)
{
    (void)key;
    sug_ctx *c = ud;
    const char *low;
    json_t *it;
    json_object_foreach(json_object_get(v, "items"), low, it) {
        json_t *o = json_pack("{s:O, s:O, s:O, s:O}", "path", json_object_get(v, "path"), "tag",
                              json_object_get(it, "tag"), "rule", json_object_get(it, "rule"), "reason",
                              json_object_get(it, "reason") ? json_object_get(it, "reason") : json_null());
        json_array_append_new(c->out, o);
    }
    return 0;
}

static int sug_scan(tags *t, uint64_t sid, json_t **out, mb_err *err)
{
    sug_ctx c = {json_array()};
    char prefix[40];
    snprintf(prefix, sizeof prefix, "s/%016llx/", (unsigned long long)sid);
    int rc = t->api->kv_scan_json(t->self, prefix, sug_one, &c, err);
    if (rc)
        json_decref(c.out);
    else
        *out = c.out;
    return rc;
}

/* GET /api/v1/stores/{sid}/suggestions */
int rules_h_suggestions(mb_req *req, void *state, mb_err *err)
{
    tags *t = state;
    uint64_t sid;
    json_t *out;
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc || (rc = sug_scan(t, sid, &out, err)))
        return rc;
    return t->api->reply_json(req, 200, out);
}

/* Accept (tag it) or dismiss (remember it for this version) one suggestion. */
static int sug_decide(tags *t, const mb_user *u, uint64_t sid, const char *path, const char *tag, bool accept,
                      mb_err *err)
{
    json_t *info = NULL;
    int rc = t->api->file_stat(u, sid, path, &info, err);
    if (rc)
        return rc;
    uint64_t id = (uint64_t)mb_jint(info, "id");
    char skey[64], dkey[64], low[TAG_MAX + 1];
    tagx_lower(tag, low, sizeof low);
    tg_key(skey, sizeof skey, "s", sid, id);
    tg_key(dkey, sizeof dkey, "d", sid, id);
    pthread_mutex_lock(&t->mu);
    json_t *s = tg_get(t, skey);
    json_t *it = json_object_get(json_object_get(s, "items"), low);
    if (!it) {
        rc = t->api->err_set(err, MB_ENOENT, "no suggestion of tag '%.64s' for %s", tag, path);
    } else if (!accept) {
        json_t *d = tg_get(t, dkey);
        if (!d)
            d = json_object();
        json_object_set_new(d, low, json_integer(mb_jint(info, "version")));
        rc = tg_put(t, dkey, d, err);
        json_decref(d);
    }
    json_t *name = it ? json_incref(json_object_get(it, "tag")) : NULL;
    if (!rc) {
        json_object_del(json_object_get(s, "items"), low);
        rc = json_object_size(json_object_get(s, "items")) ? tg_put(t, skey, s, err)
                                                             : t->api->kv_del(t->self, skey, true, err);
    }
    pthread_mutex_unlock(&t->mu);
    json_decref(s);
    if (!rc && accept) {
        json_t *add = json_pack("[O]", name);
        rc = tg_change(t, sid, id, mb_jstr(info, "path"), mb_jstr(info, "type"), add, NULL, NULL, err);
        json_decref(add);
    }
    json_decref(name);
    json_decref(info);
    return rc;
}

/* POST .../suggestions/accept|dismiss {"path","tag"} or {"all":true} -> {"done": n} */
static int h_decide(mb_req *req, tags *t, bool accept, mb_err *err)
{
    json_t *body = t->api->req_json(req, err);
    if (!body)
        return err->code;
    uint64_t sid;
    int rc = tg_req_sid(t, req, &sid, err);
    if (rc)
        return rc;
    const mb_user *u = t->api->req_user(req);
    int n = 0;
    if (json_is_true(json_object_get(body, "all"))) {
        json_t *all;
        if ((rc = sug_scan(t, sid, &all, err)))
            return rc;
        size_t i;
        json_t *s;
        json_array_foreach(all, i, s) {
            mb_err e;
            if (sug_decide(t, u, sid, mb_jstr(s, "path"), mb_jstr(s, "tag"), accept, &e) == 0)
                n++;
        }
        json_decref(all);
    } else {
        if (!mb_jstr(body, "path") || !mb_jstr(body, "tag"))
            return t->api->err_set(err, MB_EINVAL, "give {\"path\",\"tag\"} or {\"all\":true}");
        if ((rc = sug_decide(t, u, sid, mb_jstr(body, "path"), mb_jstr(body, "tag"), accept, err)))
            return rc;
        n = 1;
    }
    return t->api->reply_json(req, 200, json_pack("{s:i}", "done", n));
}

int rules_h_accept(mb_req *req, void *state, mb_err *err) { return h_decide(req, state, true, err); }
int rules_h_dismiss(mb_req *req, void *state, mb_err *err) { return h_decide(req, state, false, err); }
