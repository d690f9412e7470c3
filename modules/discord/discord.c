/*
 * modules/discord — a Discord bot: channel backups into a store, notifications, slash
 * commands (issue 22; docs/discord.md).
 *
 *   config   conf.d/discord.yaml: bot_token and public_key (secrets: never logged), api_base,
 *            cdn_hosts, guilds, poll_interval, rate-limit margins, notify_* (the admin's
 *            notification channel)
 *   routes   POST/GET   /api/v1/discord/backups             connect a channel / list with state
 *            GET/DELETE /api/v1/discord/backups/{id}
 *            POST       /api/v1/discord/backups/{id}/run    -> 202 {"task"}
 *            GET/DELETE /api/v1/discord/link                the caller's linked Discord user id
 *            POST       /api/v1/discord/link/code           a code to type as /mbyte link <code>
 *            GET/PUT    /api/v1/discord/notifications       the caller's webhook and events
 *            POST       /api/v1/discord/interactions        Discord calls it (Ed25519-signed)
 *   hooks    observer "*": notifications (dc_notify.c)
 *   tasks    discord.backup (dc_backup.c), discord.notify (dc_notify.c)
 *   timer    every poll_interval seconds a discord.backup task for each backup not running
 *
 * kv: "b/<id>" a backup {"v","id","owner","channel","guild","name","store","folder","created",
 * "state","last_run","last_error","last_message","messages","threads"}; "bo/<owner>/<id>" the
 * owner's index; "c/<backup>/<channel>" a channel's cursor (dc_backup.c); "l/<discord user>"
 * -> {"user"} and "lu/<user>" -> {"discord_user"}: the link; "lc/<code>", "lcu/<user>": link
 * codes; "n/<user>" notification settings.
 *
 * Linking a Discord user (docs/discord.md "Linking"): a signed-in user gets a one-time code and
 * types "/mbyte link <code>" in Discord; the Ed25519-signed interaction names the Discord account
 * that typed it, so an account is linked only by whoever holds it. Answers go only to that
 * Discord user (ephemeral messages).
 *
 * Threads: routes on HTTP workers (creating a backup reads the channel from Discord there:
 * a worker may block, the loop never does), the observer on the loop, runners and timers on
 * the pool. cfg_lock guards the config strings; rl_lock the rate limits (dc_rest.c);
 * run_lock orders run claims (dc_backup.c) and link changes.
 */
#include "discord.h"
#include "dc_interact.h"
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The module's kv values are JSON (docs/storage.md "discord"); shared by every file of the module. */
json_t *dc_kv_json(dc *d, const char *key)
{
    char *v;
    size_t n;
    mb_err e;
    if (d->api->kv_get(d->self, key, &v, &n, &e))
        return NULL;
    json_t *j = json_loadb(v, n, 0, NULL);
    free(v);
    return j;
}

int dc_kv_put_json(dc *d, const char *key, const json_t *j, bool sync, mb_err *err)
{
    char *t = json_dumps(j, JSON_COMPACT);
    if (!t)
        return d->api->err_set(err, MB_ENOMEM, "out of memory");
    int rc = d->api->kv_put(d->self, key, t, strlen(t), sync, err);
    free(t);
    return rc;
}

static void hex16(char out[17], uint64_t v) { snprintf(out, 17, "%016llx", (unsigned long long)v); }
static bool valid_id(const char *s) { return s && strlen(s) == 16 && strspn(s, "0123456789abcdef") == 16; }

static void new_id(char out[17])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    hex16(out, ((us & 0xffffffffffull) << 24) | (randombytes_random() & 0xffffff));
}

static json_t *public_rec(const json_t *b)
{
    json_t *o = json_deep_copy(b);
    json_object_del(o, "v");
    return o;
}

/* The caller's backup {id}, or MB_ENOENT (also for another user's: no hint that it exists). */
static int backup_of(dc *d, mb_req *req, json_t **out, mb_err *err)
{
    const char *id = d->api->req_param(req, "id");
    char key[40];
    snprintf(key, sizeof key, "b/%.16s", valid_id(id) ? id : "");
    json_t *b = valid_id(id) ? dc_kv_json(d, key) : NULL;
    if (!b || (uint64_t)mb_jint(b, "owner") != d->api->req_user(req)->id) {
        json_decref(b);
        return d->api->err_set(err, MB_ENOENT, "no such Discord backup");
    }
    *out = b;
    return 0;
}

/* A folder path inside the store: no leading or trailing '/', the kernel checks the names. */
static int clean_folder(dc *d, const char *in, char *out, size_t n, mb_err *err)
{
    if (!in || strlen(in) >= n)
        return d->api->err_set(err, MB_EINVAL, "folder: a path of at most %zu bytes is required", n - 1);
    while (*in == '/')
        in++;
    snprintf(out, n, "%s", in);
    size_t l = strlen(out);
    while (l && out[l - 1] == '/')
        out[--l] = 0;
    return 0;
}

/* POST /api/v1/discord/backups {"channel","store","folder"} -> 201 */
static int h_create(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    const mb_api *api = d->api;
    const mb_user *u = api->req_user(req);
    json_t *b = api->req_json(req, err);
    if (!b)
        return err->code;
    const char *channel = mb_jstr(b, "channel");
    json_t *store = json_object_get(b, "store");
    char folder[400];
    int rc;
    if (!dc_snowflake(channel))
        return api->err_set(err, MB_EINVAL, "channel: a Discord channel id (a snowflake, digits) is required");
    if (!json_is_integer(store) || json_integer_value(store) <= 0)
        return api->err_set(err, MB_EINVAL, "store: the id of one of your stores is required");
    if ((rc = clean_folder(d, mb_jstr(b, "folder") ? mb_jstr(b, "folder") : "", folder, sizeof folder, err)))
        return rc;
    uint64_t sid = (uint64_t)json_integer_value(store);
    json_t *s = NULL;
    if ((rc = api->store_get(u, sid, &s, err))) /* another user's store is MB_ENOENT */
        return rc;
    json_decref(s);
    if (*folder && (rc = api->folder_create(u, sid, folder, MB_FS_PARENTS, NULL, err)) && rc != MB_EEXIST)
        return rc;
    /* The bot must see the channel, and it must be in a guild the administrator allows. */
    char path[64];
    long st = 0;
    json_t *ch = NULL;
    snprintf(path, sizeof path, "/channels/%s", channel);
    if ((rc = dc_rest(d, "GET", path, NULL, &st, &ch, err)))
        return rc == MB_EIO ? api->err_set(err, MB_EBUSY, "%s", err->msg) : rc;
    if (st != 200) {
        json_decref(ch);
        return api->err_set(err, MB_EINVAL, "channel: the bot cannot read channel %s (Discord answered %ld)", channel, st);
    }
    const char *guild = mb_jstr(ch, "guild_id");
    pthread_mutex_lock(&d->cfg_lock);
    bool allowed = json_array_size(d->guilds) == 0;
    size_t i;
    json_t *g;
    json_array_foreach(d->guilds, i, g) allowed = allowed || (guild && !strcmp(json_string_value(g), guild));
    pthread_mutex_unlock(&d->cfg_lock);
    if (!allowed) {
        json_decref(ch);
        return api->err_set(err, MB_EPERM, "channel: its server is not in the list this MByte may back up (guilds)");
    }
    char id[17], key[64], o16[17];
    new_id(id);
    json_t *rec = json_pack("{s:i, s:s, s:I, s:s, s:s?, s:s?, s:I, s:s, s:I, s:s, s:n, s:n, s:n, s:i, s:i}", "v", 1,
                            "id", id, "owner", (json_int_t)u->id, "channel", channel, "guild", guild, "name",
                            mb_jstr(ch, "name"), "store", (json_int_t)sid, "folder", folder, "created",
                            (json_int_t)api->now(), "state", "new", "last_run", "last_error", "last_message",
                            "messages", 0, "threads", 0);
    json_decref(ch);
    snprintf(key, sizeof key, "b/%s", id);
    if (!(rc = dc_kv_put_json(d, key, rec, false, err))) {
        hex16(o16, u->id);
        snprintf(key, sizeof key, "bo/%s/%s", o16, id);
        rc = api->kv_put(d->self, key, "", 0, true, err);
    }
    if (rc) {
        json_decref(rec);
        return rc;
    }
    json_t *out = public_rec(rec);
    json_decref(rec);
    return api->reply_json(req, 201, out);
}

typedef struct list_ctx {
    dc *d;
    json_t *arr;
} list_ctx;

static int list_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    list_ctx *l = ud;
    const char *id = strrchr(key, '/');
    char k[40];
    snprintf(k, sizeof k, "b/%.16s", id ? id + 1 : "");
    json_t *b = dc_kv_json(l->d, k);
    if (b)
        json_array_append_new(l->arr, public_rec(b));
    json_decref(b);
    return 0;
}

static json_t *backups_of(dc *d, uint64_t owner)
{
    char prefix[40], o16[17];
    hex16(o16, owner);
    snprintf(prefix, sizeof prefix, "bo/%s/", o16);
    list_ctx l = {d, json_array()};
    mb_err e;
    d->api->kv_scan(d->self, prefix, list_fn, &l, &e);
    return l.arr;
}

static int h_list(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    dc *d = state;
    return d->api->reply_json(req, 200, json_pack("{s:o}", "backups", backups_of(d, d->api->req_user(req)->id)));
}

static int h_get(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    json_t *b;
    int rc = backup_of(d, req, &b, err);
    if (rc)
        return rc;
    json_t *out = public_rec(b);
    json_decref(b);
    return d->api->reply_json(req, 200, out);
}

typedef struct keys_ctx {
    char (*keys)[80];
    int n, max;
} keys_ctx;

static int key_fn(const char *key, const void *v, size_t len, void *ud)
{
    (void)v, (void)len;
    keys_ctx *k = ud;
    snprintf(k->keys[k->n++], 80, "%s", key);
    return k->n == k->max;
}

/* DELETE: the backup and its cursors go; the files already in the store stay. */
static int h_delete(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    json_t *b;
    int rc = backup_of(d, req, &b, err);
    if (rc)
        return rc;
    char key[80], o16[17];
    const char *id = mb_jstr(b, "id");
    snprintf(key, sizeof key, "b/%s", id);
    if ((rc = d->api->kv_del(d->self, key, true, err))) {
        json_decref(b);
        return rc;
    }
    hex16(o16, (uint64_t)mb_jint(b, "owner"));
    snprintf(key, sizeof key, "bo/%s/%s", o16, id);
    d->api->kv_del(d->self, key, true, err);
    keys_ctx k = {calloc(256, 80), 0, 256};
    snprintf(key, sizeof key, "c/%s/", id);
    do {
        k.n = 0;
        d->api->kv_scan(d->self, key, key_fn, &k, err);
        for (int i = 0; i < k.n; i++)
            d->api->kv_del(d->self, k.keys[i], false, err);
    } while (k.n == k.max);
    free(k.keys);
    json_decref(b);
    return d->api->reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static int submit_run(dc *d, const char *id, uint64_t owner, uint64_t *tid, mb_err *err)
{
    return d->api->task_submit("discord.backup", owner, json_pack("{s:s}", "backup", id), tid, err);
}

/* POST .../{id}/run -> 202 {"task"} */
static int h_run(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    json_t *b;
    int rc = backup_of(d, req, &b, err);
    if (rc)
        return rc;
    uint64_t tid;
    rc = submit_run(d, mb_jstr(b, "id"), (uint64_t)mb_jint(b, "owner"), &tid, err);
    json_decref(b);
    return rc ? rc : d->api->reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)tid));
}

/* ------------------------------------------------------------------- link --- */

static int h_link_get(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    dc *d = state;
    char key[40], u16[17];
    hex16(u16, d->api->req_user(req)->id);
    snprintf(key, sizeof key, "lu/%s", u16);
    json_t *l = dc_kv_json(d, key);
    json_t *out = json_pack("{s:s?}", "discord_user", mb_jstr(l, "discord_user"));
    json_decref(l);
    return d->api->reply_json(req, 200, out);
}

static void unlink_user(dc *d, uint64_t uid)
{
    char key[48], u16[17];
    mb_err e;
    hex16(u16, uid);
    snprintf(key, sizeof key, "lu/%s", u16);
    json_t *l = dc_kv_json(d, key);
    if (l && mb_jstr(l, "discord_user")) {
        char k2[48];
        snprintf(k2, sizeof k2, "l/%s", mb_jstr(l, "discord_user"));
        d->api->kv_del(d->self, k2, false, &e);
    }
    json_decref(l);
    d->api->kv_del(d->self, key, true, &e);
}

/* Link codes (docs/discord.md "Linking"): the signed-in user asks for a code and types
 * "/mbyte link <code>" in Discord; the signed interaction proves which Discord account typed it,
 * so nobody can link a Discord account they do not hold. A code is 8 characters of a 32-letter
 * alphabet without look-alikes (40 bits; only signed interactions can try one), lives
 * LINK_CODE_SECONDS, is used once, and a new code replaces the user's previous one. kv:
 * "lc/<CODE>" -> {"user","exp"}, "lcu/<user>" -> {"code"}. */
#define LINK_CODE_SECONDS 600
static const char code_alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/* "abcd-efgh" or "ABCDEFGH" -> "ABCDEFGH"; false for anything else. */
static bool code_norm(const char *in, char out[9])
{
    size_t n = 0;
    for (; *in; in++) {
        char c = *in >= 'a' && *in <= 'z' ? (char)(*in - 32) : *in;
        if (c == '-' || c == ' ')
            continue;
        if (n == 8 || !strchr(code_alphabet, c) || !c)
            return false;
        out[n++] = c;
    }
    out[n] = 0;
    return n == 8;
}

/* POST /api/v1/discord/link/code -> 201 {"code","expires"} */
static int h_link_code(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    uint64_t uid = d->api->req_user(req)->id;
    char code[9], key[48], ukey[48], u16[17];
    for (int i = 0; i < 8; i++)
        code[i] = code_alphabet[randombytes_uniform(sizeof code_alphabet - 1)];
    code[8] = 0;
    hex16(u16, uid);
    snprintf(ukey, sizeof ukey, "lcu/%s", u16);
    long long exp = (long long)time(NULL) + LINK_CODE_SECONDS;
    pthread_mutex_lock(&d->run_lock);
    json_t *old = dc_kv_json(d, ukey);
    mb_err e;
    if (mb_jstr(old, "code")) {
        snprintf(key, sizeof key, "lc/%s", mb_jstr(old, "code"));
        d->api->kv_del(d->self, key, false, &e);
    }
    json_decref(old);
    snprintf(key, sizeof key, "lc/%s", code);
    json_t *c = json_pack("{s:i, s:I, s:I}", "v", 1, "user", (json_int_t)uid, "exp", (json_int_t)exp);
    json_t *cu = json_pack("{s:i, s:s}", "v", 1, "code", code);
    int rc = dc_kv_put_json(d, key, c, false, err);
    if (!rc)
        rc = dc_kv_put_json(d, ukey, cu, true, err);
    json_decref(c);
    json_decref(cu);
    pthread_mutex_unlock(&d->run_lock);
    if (rc)
        return rc;
    char shown[10];
    snprintf(shown, sizeof shown, "%.4s-%.4s", code, code + 4);
    return d->api->reply_json(req, 201, json_pack("{s:s, s:I}", "code", shown, "expires", (json_int_t)exp));
}

/* "/mbyte link <code>" from Discord user `du` (the signature proved it): the code's MByte user is
 * linked to du, replacing du's link to anyone else and that user's link to another Discord
 * account. The user id, or 0 when the code is unknown, used or expired. */
static uint64_t link_by_code(dc *d, const char *du, const char *typed)
{
    char code[9], key[48], ukey[48], u16[17];
    if (!code_norm(typed, code))
        return 0;
    snprintf(key, sizeof key, "lc/%s", code);
    mb_err e;
    pthread_mutex_lock(&d->run_lock);
    json_t *c = dc_kv_json(d, key);
    uint64_t uid = (uint64_t)mb_jint(c, "user");
    if (uid && mb_jint(c, "exp") < (long long)time(NULL))
        uid = 0;
    json_decref(c);
    if (c) { /* used once, also when expired */
        d->api->kv_del(d->self, key, false, &e);
        hex16(u16, uid);
        snprintf(ukey, sizeof ukey, "lcu/%s", u16);
        if (uid)
            d->api->kv_del(d->self, ukey, false, &e);
    }
    if (uid) {
        snprintf(key, sizeof key, "l/%s", du);
        json_t *prev = dc_kv_json(d, key); /* du linked to another user before: that link ends */
        if (prev && (uint64_t)mb_jint(prev, "user") != uid)
            unlink_user(d, (uint64_t)mb_jint(prev, "user"));
        json_decref(prev);
        unlink_user(d, uid);
        json_t *a = json_pack("{s:i, s:I}", "v", 1, "user", (json_int_t)uid);
        json_t *l = json_pack("{s:i, s:s}", "v", 1, "discord_user", du);
        hex16(u16, uid);
        snprintf(ukey, sizeof ukey, "lu/%s", u16);
        if (dc_kv_put_json(d, key, a, false, &e) || dc_kv_put_json(d, ukey, l, true, &e))
            uid = 0;
        json_decref(a);
        json_decref(l);
    }
    pthread_mutex_unlock(&d->run_lock);
    return uid;
}

static int h_link_del(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    dc *d = state;
    pthread_mutex_lock(&d->run_lock);
    unlink_user(d, d->api->req_user(req)->id);
    pthread_mutex_unlock(&d->run_lock);
    return d->api->reply_json(req, 200, json_pack("{s:n}", "discord_user"));
}

/* ---------------------------------------------------------- notifications --- */

static const char *const notify_names[] = {"task.failed", "task.done", "quota.warning", "quota.exceeded",
                                           "integrity.mismatch", "share.accessed", "discord.backup.failed", NULL};

static int h_notify_get(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    dc *d = state;
    char key[40], u16[17];
    hex16(u16, d->api->req_user(req)->id);
    snprintf(key, sizeof key, "n/%s", u16);
    json_t *n = dc_kv_json(d, key), *all = json_array();
    for (int i = 0; notify_names[i]; i++)
        json_array_append_new(all, json_string(notify_names[i]));
    json_t *out = json_pack("{s:s?, s:O, s:o}", "webhook_url", mb_jstr(n, "webhook_url"), "events",
                            json_object_get(n, "events") ? json_object_get(n, "events") : json_array(), "available", all);
    if (!json_object_get(n, "events"))
        json_decref(json_object_get(out, "events"));
    json_decref(n);
    return d->api->reply_json(req, 200, out);
}

/* PUT /api/v1/discord/notifications {"webhook_url": "<api_base>/webhooks/..."|null, "events": [...]} */
static int h_notify_put(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    json_t *b = d->api->req_json(req, err);
    if (!b)
        return err->code;
    json_t *url = json_object_get(b, "webhook_url"), *ev = json_object_get(b, "events");
    if (url && !json_is_null(url)) {
        const char *s = json_string_value(url);
        pthread_mutex_lock(&d->cfg_lock);
        size_t bl = strlen(d->api_base);
        bool ok = s && strlen(s) < 512 && !strncmp(s, d->api_base, bl) && !strncmp(s + bl, "/webhooks/", 10) &&
                  strspn(s + bl + 10, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_/") ==
                      strlen(s + bl + 10);
        char base[256];
        snprintf(base, sizeof base, "%s", d->api_base);
        pthread_mutex_unlock(&d->cfg_lock);
        if (!ok)
            return d->api->err_set(err, MB_EINVAL, "webhook_url: a Discord webhook URL (%s/webhooks/<id>/<token>)", base);
    }
    if (!json_is_array(ev))
        return d->api->err_set(err, MB_EINVAL, "events: a list of event names is required (GET shows them)");
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        bool known = false;
        for (int k = 0; notify_names[k]; k++)
            known = known || (json_string_value(e) && !strcmp(json_string_value(e), notify_names[k]));
        if (!known)
            return d->api->err_set(err, MB_EINVAL, "events: '%s' is not one of the notifications",
                                   json_string_value(e) ? json_string_value(e) : "?");
    }
    char key[40], u16[17];
    hex16(u16, d->api->req_user(req)->id);
    snprintf(key, sizeof key, "n/%s", u16);
    json_t *n = json_pack("{s:i, s:O, s:O}", "v", 1, "webhook_url", url ? url : json_null(), "events", ev);
    int rc = dc_kv_put_json(d, key, n, true, err);
    json_object_del(n, "v");
    return rc ? (json_decref(n), rc) : d->api->reply_json(req, 200, n);
}

/* ----------------------------------------------------------- interactions --- */

typedef struct followup {
    dc *d;
    dc_ix ix;
    uint64_t user;
    struct followup *next;
} followup;

/* A follow-up waits on a one-shot timer; if the module stops first, the kernel cancels the timer
 * and fini frees what was left on this list. */
static void followup_unlist(dc *d, followup *f)
{
    pthread_mutex_lock(&d->run_lock);
    for (followup **p = &d->followups; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    pthread_mutex_unlock(&d->run_lock);
}

static void human(char *out, size_t n, double v)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (v >= 1024 && i < 4)
        v /= 1024, i++;
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* True if every word of `words` (spaces between) is in `name`, ignoring ASCII case. */
static bool all_words_in(const char *name, const char *words)
{
    char w[64];
    for (const char *p = words; *p;) {
        while (*p == ' ')
            p++;
        size_t l = strcspn(p, " ");
        if (!l)
            break;
        snprintf(w, sizeof w, "%.*s", (int)(l < 63 ? l : 63), p);
        if (!strcasestr(name, w))
            return false;
        p += l;
    }
    return true;
}

typedef struct name_hits {
    const char *words;
    char *text;
    size_t n, len, found;
    const char *store; /* the name of the store walked */
} name_hits;

/* One entry of the name-only walk: listed when its name holds every word; 10 stop the walk. */
static int name_hit(const json_t *ent, void *ud)
{
    name_hits *h = ud;
    const char *name = mb_jstr(ent, "name"), *path = mb_jstr(ent, "path");
    if (name && path && all_words_in(name, h->words) && h->len < h->n) {
        h->len += (size_t)snprintf(h->text + h->len, h->n - h->len, "\n- %s: %s", h->store, path);
        h->found++;
    }
    return h->found >= 10;
}

/* /mbyte search without the search module: file and folder NAMES in the linked user's stores.
 * At most 10. */
static void search_names(followup *f, char *text, size_t n)
{
    dc *d = f->d;
    mb_user u;
    char uname[128];
    mb_err e = {0};
    json_t *stores = NULL;
    if (d->api->user_lookup(f->user, NULL, &u, uname, sizeof uname, &e) || d->api->store_list(&u, &stores, &e)) {
        snprintf(text, n, "Search failed: %s", e.msg);
        return;
    }
    size_t i;
    json_t *s;
    name_hits h = {f->ix.words, text, n, (size_t)snprintf(text, n, "Names with \"%s\":", f->ix.words), 0, NULL};
    json_array_foreach(stores, i, s)
    {
        h.store = mb_jstr(s, "name");
        if (h.found < 10)
            d->api->folder_walk(&u, (uint64_t)mb_jint(s, "id"), "", name_hit, &h, &e);
    }
    json_decref(stores);
    if (!h.found)
        snprintf(text, n, "No file or folder name has \"%s\".", f->ix.words);
}

/* /mbyte search: the search module's full-text search (its service "search.query": names and
 * contents, the user's stores and what is shared with the user), at most 10 hits; the name-only
 * walk when the search module is not loaded (MB_ENOENT: nobody offers the service). */
static void search_words(followup *f, char *text, size_t n)
{
    dc *d = f->d;
    mb_err e = {0};
    json_t *out = NULL, *arg = json_pack("{s:I, s:s, s:i}", "user", (json_int_t)f->user, "q", f->ix.words, "limit", 10);
    int rc = d->api->service_call("search.query", arg, &out, &e);
    json_decref(arg);
    if (rc == MB_ENOENT) {
        json_decref(out);
        search_names(f, text, n);
        return;
    }
    json_t *hits = json_object_get(out, "hits");
    if (rc)
        snprintf(text, n, "Search failed: %s", e.msg);
    else if (!json_array_size(hits))
        snprintf(text, n, "Nothing has \"%s\".", f->ix.words);
    else {
        size_t len = (size_t)snprintf(text, n, "Files with \"%s\":", f->ix.words), i;
        json_t *h;
        json_array_foreach(hits, i, h)
        {
            if (len < n)
                len += (size_t)snprintf(text + len, n - len, "\n- %s: %s%s", mb_jstr(h, "store_name"),
                                        mb_jstr(h, "path"), json_object_get(h, "share") ? " (shared with you)" : "");
        }
    }
    json_decref(out);
}

static void answer_text(followup *f, char *text, size_t n)
{
    dc *d = f->d;
    mb_err e = {0};
    if (f->ix.command == DC_CMD_USAGE) {
        json_t *u = NULL;
        if (d->api->usage_get(0, f->user, &u, &e)) {
            snprintf(text, n, "Your usage could not be read: %s", e.msg);
            return;
        }
        char h[32];
        human(h, sizeof h, (double)mb_jint(u, "bytes"));
        snprintf(text, n, "You use %s (%lld bytes) in %lld files: current %lld, old versions %lld, trash %lld bytes.",
                 h, (long long)mb_jint(u, "bytes"), (long long)mb_jint(u, "files"), (long long)mb_jint(u, "current"),
                 (long long)mb_jint(u, "versions"), (long long)mb_jint(u, "trash"));
        json_decref(u);
    } else if (f->ix.command == DC_CMD_BACKUP_NOW) {
        json_t *all = backups_of(d, f->user);
        size_t i, started = 0;
        json_t *b;
        json_array_foreach(all, i, b)
        {
            uint64_t tid;
            if (!submit_run(d, mb_jstr(b, "id"), f->user, &tid, &e))
                started++;
        }
        json_decref(all);
        snprintf(text, n, started ? "Started %zu backup%s." : "You have no Discord backups yet.", started,
                 started == 1 ? "" : "s");
    } else if (f->ix.command == DC_CMD_SEARCH)
        search_words(f, text, n);
    else
        snprintf(text, n, "Unknown command. Try /mbyte usage or /mbyte backup now.");
}

/* The follow-up message of a deferred answer (a timer: on the pool, after the answer left). */
static void send_followup(void *arg)
{
    followup *f = arg;
    dc *d = f->d;
    char text[1800], url[1400];
    answer_text(f, text, sizeof text);
    pthread_mutex_lock(&d->cfg_lock);
    snprintf(url, sizeof url, "%s/webhooks/%s/%s", d->api_base, f->ix.app_id, f->ix.token);
    pthread_mutex_unlock(&d->cfg_lock);
    json_t *msg = json_pack("{s:s, s:i, s:{s:[]}}", "content", text, "flags", 64, "allowed_mentions", "parse");
    long st = 0;
    mb_err e = {0};
    if (dc_rest_url(d, url, msg, &st, &e) || st < 200 || st > 299)
        d->api->log(d->self, MB_LOG_WARN, "interaction follow-up failed (HTTP %ld): %s", st, e.msg);
    json_decref(msg);
    followup_unlist(d, f);
    sodium_memzero(f, sizeof *f);
    free(f);
}

static int problem(dc *d, mb_req *req, int status, const char *detail)
{
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                          status == 401 ? "Unauthorized" : "Bad Request", "status", status, "detail", detail);
    char *t = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    int rc = d->api->reply_bytes(req, status, "application/problem+json", t, strlen(t));
    free(t);
    return rc;
}

/* POST /api/v1/discord/interactions: public; the Ed25519 signature is the authentication. */
static int h_interactions(mb_req *req, void *state, mb_err *err)
{
    dc *d = state;
    const mb_api *api = d->api;
    const void *body;
    size_t len;
    api->req_body(req, &body, &len);
    const char *sig = api->req_header(req, "X-Signature-Ed25519"), *ts = api->req_header(req, "X-Signature-Timestamp");
    pthread_mutex_lock(&d->cfg_lock);
    unsigned char pk[32];
    bool have = d->have_key;
    memcpy(pk, d->public_key, sizeof pk);
    pthread_mutex_unlock(&d->cfg_lock);
    if (!have || !dc_ix_verify(pk, sig, ts, body, len))
        return problem(d, req, 401, "invalid request signature");
    /* A signed request replayed long after: refused like a forged one. */
    char *end = NULL;
    long long t = strtoll(ts, &end, 10);
    if (!end || *end || llabs(t - (long long)time(NULL)) > 300)
        return problem(d, req, 401, "the signature timestamp is more than 5 minutes away");
    followup *f = calloc(1, sizeof *f);
    if (!f)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    f->d = d;
    if (dc_ix_parse(body, len, &f->ix)) {
        free(f);
        return problem(d, req, 400, "not an interaction this endpoint understands");
    }
    if (f->ix.type == DC_IX_PING) {
        free(f);
        return api->reply_json(req, 200, json_pack("{s:i}", "type", 1));
    }
    if (f->ix.type != DC_IX_COMMAND) {
        free(f);
        return problem(d, req, 400, "only PING and application commands are handled");
    }
    if (f->ix.command == DC_CMD_LINK) {
        uint64_t uid = link_by_code(d, f->ix.user, f->ix.code);
        char uname[128] = "", text[256];
        mb_user u;
        mb_err e;
        if (uid && !api->user_lookup(uid, NULL, &u, uname, sizeof uname, &e))
            snprintf(text, sizeof text, "Linked: your /mbyte commands now act as the MByte user %s.", uname);
        else
            snprintf(text, sizeof text, "%s", "This code is unknown, used or expired: get a new one in MByte "
                                              "(Discord page, \"Get a link code\").");
        free(f);
        return api->reply_json(req, 200, json_pack("{s:i, s:{s:s, s:i}}", "type", 4, "data", "content", text, "flags", 64));
    }
    char key[48];
    snprintf(key, sizeof key, "l/%s", f->ix.user);
    json_t *l = dc_kv_json(d, key);
    f->user = (uint64_t)mb_jint(l, "user");
    json_decref(l);
    if (!f->user) {
        free(f);
        return api->reply_json(req, 200,
                               json_pack("{s:i, s:{s:s, s:i}}", "type", 4, "data", "content",
                                         "Your Discord account is not linked to an MByte user: get a link code in MByte "
                                         "(Discord page) and type /mbyte link <code> here.",
                                         "flags", 64));
    }
    /* Deferred (type 5) now, well within Discord's 3 s; the answer follows as a follow-up
     * message once this reply has left (the timer runs on the pool). */
    pthread_mutex_lock(&d->run_lock);
    f->next = d->followups;
    d->followups = f;
    pthread_mutex_unlock(&d->run_lock);
    if (api->timer_add(d->self, 100, 0, send_followup, f, NULL, err)) {
        followup_unlist(d, f);
        free(f);
        return err->code;
    }
    return api->reply_json(req, 200, json_pack("{s:i, s:{s:i}}", "type", 5, "data", "flags", 64));
}

/* ------------------------------------------------------------------ timer --- */

static int poll_fn(const char *key, json_t *b, void *ud)
{
    (void)key;
    dc *d = ud;
    bool busy = mb_jstr(b, "id") && dc_backup_running(d, mb_jstr(b, "id"));
    uint64_t tid;
    mb_err e;
    if (!busy && mb_jstr(b, "id"))
        submit_run(d, mb_jstr(b, "id"), (uint64_t)mb_jint(b, "owner"), &tid, &e);
    return 0;
}

static void poll_tick(void *arg)
{
    dc *d = arg;
    mb_err e;
    d->api->kv_scan_json(d->self, "b/", poll_fn, d, &e);
}

/* ---------------------------------------------------------- init and fini --- */

static char *cfg_str(const json_t *c, const char *k) { return strdup(mb_jstr(c, k) ? mb_jstr(c, k) : ""); }

/* Let go of the settings (the token wiped first); the caller holds cfg_lock or owns d alone. */
static void cfg_clear(dc *d)
{
    if (d->token)
        sodium_memzero(d->token, strlen(d->token));
    free(d->token);
    free(d->api_base);
    free(d->notify_channel);
    free(d->notify_webhook);
    json_decref(d->cdn_hosts);
    json_decref(d->guilds);
    json_decref(d->notify_events);
}

static int configure(dc *d, const json_t *c, mb_err *err)
{
    const char *pkh = mb_jstr(c, "public_key"), *base = mb_jstr(c, "api_base");
    unsigned char pk[32];
    size_t got = 0;
    bool have = pkh && *pkh;
    if (have && (strlen(pkh) != 64 || sodium_hex2bin(pk, sizeof pk, pkh, 64, NULL, &got, NULL) || got != 32))
        return d->api->err_set(err, MB_EINVAL, "public_key: the application's Ed25519 public key, 64 hex digits");
    if (!base || (strncmp(base, "https://", 8) && strncmp(base, "http://", 7)) || strlen(base) > 200)
        return d->api->err_set(err, MB_EINVAL, "api_base: an http(s) URL such as https://discord.com/api/v10");
    const char *hook = mb_jstr(c, "notify_webhook");
    if (hook && *hook && (strncmp(hook, base, strlen(base)) || strncmp(hook + strlen(base), "/webhooks/", 10)))
        return d->api->err_set(err, MB_EINVAL, "notify_webhook: a Discord webhook URL under api_base/webhooks/");
    const char *nc = mb_jstr(c, "notify_channel");
    if (nc && *nc && !dc_snowflake(nc))
        return d->api->err_set(err, MB_EINVAL, "notify_channel: a Discord channel id (digits)");
    pthread_mutex_lock(&d->cfg_lock);
    cfg_clear(d);
    d->token = cfg_str(c, "bot_token");
    d->api_base = strdup(base);
    size_t bl = strlen(d->api_base);
    while (bl && d->api_base[bl - 1] == '/')
        d->api_base[--bl] = 0;
    d->notify_channel = cfg_str(c, "notify_channel");
    d->notify_webhook = cfg_str(c, "notify_webhook");
    d->cdn_hosts = json_incref(json_object_get(c, "cdn_hosts"));
    d->guilds = json_incref(json_object_get(c, "guilds"));
    d->notify_events = json_incref(json_object_get(c, "notify_events"));
    d->have_key = have;
    if (have)
        memcpy(d->public_key, pk, sizeof pk);
    d->poll_interval = mb_jint(c, "poll_interval");
    d->timeout_ms = mb_jint(c, "timeout_ms");
    d->max_wait_ms = mb_jint(c, "max_wait_ms");
    d->global_per_second = mb_jint(c, "global_per_second");
    d->max_invalid = mb_jint(c, "max_invalid");
    pthread_mutex_unlock(&d->cfg_lock);
    return 0;
}

static void free_state(dc *d)
{
    while (d->followups) {
        followup *f = d->followups;
        d->followups = f->next;
        sodium_memzero(f, sizeof *f);
        free(f);
    }
    cfg_clear(d);
    pthread_mutex_destroy(&d->cfg_lock);
    pthread_mutex_destroy(&d->rl_lock);
    pthread_mutex_destroy(&d->run_lock);
    free(d);
}

static int start_timer(dc *d, mb_err *err)
{
    d->api->timer_cancel(d->timer);
    d->timer = NULL;
    if (d->poll_interval <= 0)
        return 0;
    return d->api->timer_add(d->self, d->poll_interval * 1000, d->poll_interval * 1000, poll_tick, d, &d->timer, err);
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    if (sodium_init() < 0)
        return api->err_set(err, MB_EINTERNAL, "libsodium could not start");
    dc *d = calloc(1, sizeof *d);
    if (!d)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    d->self = self;
    d->api = api;
    pthread_mutex_init(&d->cfg_lock, NULL);
    pthread_mutex_init(&d->rl_lock, NULL);
    pthread_mutex_init(&d->run_lock, NULL);
    int rc = configure(d, config, err);
    if (!rc)
        rc = start_timer(d, err);
    if (rc) {
        free_state(d);
        return rc;
    }
    if (!*d->token)
        api->log(self, MB_LOG_WARN, "bot_token is empty: backups and bot notifications will fail until it is set");
    *state = d;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    free_state(state);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    dc *d = state;
    int rc = configure(d, config, err);
    return rc ? rc : start_timer(d, err);
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "bot_token", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "public_key", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "api_base", MB_CFG_STRING, "https://discord.com/api/v10", 0, 0},
    {sizeof(mb_config_key), "cdn_hosts", MB_CFG_LIST, "[\"cdn.discordapp.com\", \"media.discordapp.net\"]", 0, 0},
    {sizeof(mb_config_key), "guilds", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "poll_interval", MB_CFG_INT, "300", 0, 604800},
    {sizeof(mb_config_key), "timeout_ms", MB_CFG_INT, "15000", 1000, 120000},
    {sizeof(mb_config_key), "max_wait_ms", MB_CFG_INT, "60000", 1000, 600000},
    {sizeof(mb_config_key), "global_per_second", MB_CFG_INT, "45", 1, 50},
    {sizeof(mb_config_key), "max_invalid", MB_CFG_INT, "500", 1, 9000},
    {sizeof(mb_config_key), "notify_channel", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "notify_webhook", MB_CFG_STRING, "\"\"", 0, 0},
    {sizeof(mb_config_key), "notify_events", MB_CFG_LIST,
     "[\"task.failed\", \"quota.warning\", \"quota.exceeded\", \"integrity.mismatch\", \"share.accessed\", "
     "\"discord.backup.failed\"]",
     0, 0},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/discord/backups", MB_ROLE_USER, h_create},
    {sizeof(mb_route), "GET", "/api/v1/discord/backups", MB_ROLE_USER, h_list},
    {sizeof(mb_route), "GET", "/api/v1/discord/backups/{id}", MB_ROLE_USER, h_get},
    {sizeof(mb_route), "DELETE", "/api/v1/discord/backups/{id}", MB_ROLE_USER, h_delete},
    {sizeof(mb_route), "POST", "/api/v1/discord/backups/{id}/run", MB_ROLE_USER, h_run},
    {sizeof(mb_route), "GET", "/api/v1/discord/link", MB_ROLE_USER, h_link_get},
    {sizeof(mb_route), "POST", "/api/v1/discord/link/code", MB_ROLE_USER, h_link_code},
    {sizeof(mb_route), "DELETE", "/api/v1/discord/link", MB_ROLE_USER, h_link_del},
    {sizeof(mb_route), "GET", "/api/v1/discord/notifications", MB_ROLE_USER, h_notify_get},
    {sizeof(mb_route), "PUT", "/api/v1/discord/notifications", MB_ROLE_USER, h_notify_put},
    {sizeof(mb_route), "POST", "/api/v1/discord/interactions", MB_ROLE_NONE, h_interactions},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "*", MB_HOOK_OBSERVER, 600, NULL, dc_notify_observe},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "discord.backup", dc_backup_run, 3},
    {sizeof(mb_task_type), "discord.notify", dc_notify_send, 6},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 1, /* service_call (2.1) */
    .name = "discord",
    .version = DC_VERSION,
    .description = "Discord bot: channel backups into a store, notifications, slash commands",
    .depends = NULL,
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .tasks = tasks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
