/*
 * modules/storeconfig — per-store settings and the limits they set, enforced for every
 * door (HTTP PUT, tus, FTP, modules) through the files core's filters.
 *
 *   routes   GET   /api/v1/stores/{sid}/config   the effective settings (store overrides
 *                                                over the defaults; versioning as the
 *                                                versioning module applies it) and which
 *                                                are overridden
 *            PATCH /api/v1/stores/{sid}/config   {"key": value | null, ...}; null returns a
 *                                                key to its default; a bad value is 400
 *                                                naming the field and the rule, and changes
 *                                                nothing; {"placement": {...}} alone is
 *                                                an administrator's live migration of the
 *                                                store (api->store_migrate): 202 {"task"}
 *   hooks    filters on file.write (size known or not), file.write.chunk (bytes so far),
 *            file.copy and file.move (the new name's extension)
 *   config   the defaults of every setting (conf.d/storeconfig.yaml)
 *
 * Settings live in the kernel's store record (api->store_settings_*), so other modules
 * (versioning, trash) read the same values: max_bytes, max_files, max_file_size,
 * allowed_extensions, blocked_extensions, allowed_types, blocked_types, versioning
 * {"enabled","max_versions","max_age_days"}, trash_retention_days. 0 means "no limit" for
 * the three limits; an empty allowed list allows everything.
 * Threads: handlers on HTTP workers, filters on whatever thread writes; the defaults are
 * replaced under `lock` by reconfigure.
 */
#include "mbyte.h"
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct sc {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t lock;
    json_t *defaults; /* effective-settings shape */
} sc;

static const char *const LIST_KEYS[] = {"allowed_extensions", "blocked_extensions", "allowed_types", "blocked_types"};
static const char *const INT_KEYS[] = {"max_bytes", "max_files", "max_file_size", "trash_retention_days"};

static json_t *defaults_from(const json_t *c)
{
    json_t *d = json_object();
    for (size_t i = 0; i < 4; i++) {
        json_object_set(d, INT_KEYS[i], json_object_get(c, INT_KEYS[i]));
        json_object_set(d, LIST_KEYS[i], json_object_get(c, LIST_KEYS[i]));
    }
    json_object_set_new(d, "versioning",
                        json_pack("{s:O, s:O, s:O}", "enabled", json_object_get(c, "versioning"), "max_versions",
                                  json_object_get(c, "versioning_max_versions"), "max_age_days",
                                  json_object_get(c, "versioning_max_age_days")));
    return d;
}

/* ----------------------------------------------------------- validation --- */

static bool ext_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool mime_ok(const char *s)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1] || strlen(s) > 127 || strchr(slash + 1, '/'))
        return false;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("/.+-_*", *p)) || isupper((unsigned char)*p))
            return false;
    return !strchr(s, '*') || !strcmp(slash + 1, "*");
}

static int check_int(const mb_api *api, const char *field, json_t *v, json_int_t max, mb_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return api->err_set(err, MB_EINVAL, "%s: must be a whole number from 0 to %lld", field, (long long)max);
    return 0;
}

/* One setting: 0 if v is a valid value for key. */
static int check_setting(const mb_api *api, const char *key, json_t *v, mb_err *err)
{
    for (size_t i = 0; i < 4; i++)
        if (!strcmp(key, INT_KEYS[i]))
            return check_int(api, key, v, i == 3 ? 36500 : (json_int_t)1 << 53, err);
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(key, LIST_KEYS[i]))
            continue;
        bool ext = i < 2;
        if (!json_is_array(v) || json_array_size(v) > 256)
            return api->err_set(err, MB_EINVAL, "%s: must be a list of at most 256 %s", key,
                                ext ? "extensions" : "MIME types");
        size_t j;
        json_t *e;
        json_array_foreach(v, j, e) {
            const char *s = json_string_value(e);
            if (!s || strlen(s) != json_string_length(e) || (ext ? !ext_ok(s) : !mime_ok(s)))
                return api->err_set(err, MB_EINVAL,
                                    ext ? "%s: each extension is 1 to 32 lower-case letters or digits, without the dot"
                                        : "%s: each entry is a lower-case MIME type like \"image/png\" or \"image/*\"",
                                    key);
        }
        return 0;
    }
    if (!strcmp(key, "versioning")) {
        if (!json_is_object(v))
            return api->err_set(err, MB_EINVAL, "versioning: must be an object {enabled, max_versions, max_age_days}");
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!strcmp(k, "enabled")) {
                if (!json_is_boolean(x))
                    return api->err_set(err, MB_EINVAL, "versioning.enabled: must be true or false");
            } else if (!strcmp(k, "max_versions")) {
                if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 1000)
                    return api->err_set(err, MB_EINVAL, "versioning.max_versions: must be a whole number from 1 to 1000");
            } else if (!strcmp(k, "max_age_days")) {
                if (check_int(api, "versioning.max_age_days", x, 36500, err))
                    return MB_EINVAL;
            } else
                return api->err_set(err, MB_EINVAL, "versioning.%s: is not a versioning setting", k);
        }
        return 0;
    }
    return api->err_set(err, MB_EINVAL, "%s: is not a store setting", key);
}

static bool key_known(const char *k)
{
    for (size_t i = 0; i < 4; i++)
        if (!strcmp(k, INT_KEYS[i]) || !strcmp(k, LIST_KEYS[i]))
            return true;
    return !strcmp(k, "versioning");
}

/* The effective settings of a store: the defaults, overridden by what the store sets. */
static json_t *effective(sc *s, const json_t *stored)
{
    pthread_mutex_lock(&s->lock);
    json_t *e = json_deep_copy(s->defaults);
    pthread_mutex_unlock(&s->lock);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)stored, k, v) {
        if (!json_object_get(e, k))
            continue; /* another module's key */
        if (!strcmp(k, "versioning") && json_is_object(v))
            json_object_update(json_object_get(e, "versioning"), v);
        else
            json_object_set(e, k, v);
    }
    return e;
}

/* What the store really does with versions: the versioning module decides (loaded, and the
 * store not switched off), so ask it the way the kernel does at an overwrite: its
 * file.version.drop filter answers MB_HANDLED (keep) and names the limits it applies. */
static void effective_versioning(sc *s, uint64_t sid, json_t *ver)
{
    json_t *probe = json_pack("{s:I, s:I, s:I, s:s}", "store", (json_int_t)sid, "owner", (json_int_t)0, "file_id",
                              (json_int_t)0, "path", "");
    mb_err e = {0};
    bool keeps = s->api->hook_filter("file.version.drop", probe, &e) == MB_HANDLED;
    json_object_set_new(ver, "enabled", json_boolean(keeps));
    if (keeps)
        for (const char *const *k = (const char *const[]){"max_versions", "max_age_days", NULL}; *k; k++)
            if (json_is_integer(json_object_get(probe, *k)))
                json_object_set(ver, *k, json_object_get(probe, *k));
    json_decref(probe);
}

/* ------------------------------------------------------------------ routes --- */

static int req_store(sc *s, mb_req *req, uint64_t *sid, mb_err *err)
{
    const char *p = s->api->req_param(req, "sid");
    char *end = NULL;
    if (!p || *p < '0' || *p > '9' || ((*sid = strtoull(p, &end, 10)), *end) || !*sid)
        return s->api->err_set(err, MB_ENOENT, "no such store: %s", p ? p : "");
    json_t *st = NULL;
    int rc = s->api->store_get(s->api->req_user(req), *sid, &st, err); /* owner check */
    json_decref(st);
    return rc;
}

static int reply_config(sc *s, mb_req *req, uint64_t sid, mb_err *err)
{
    json_t *stored = NULL;
    int rc = s->api->store_settings_get(sid, &stored, err);
    if (rc)
        return rc;
    json_t *e = effective(s, stored), *over = json_array();
    effective_versioning(s, sid, json_object_get(e, "versioning"));
    const char *k;
    json_t *v;
    json_object_foreach(stored, k, v) if (json_object_get(e, k)) json_array_append_new(over, json_string(k));
    json_decref(stored);
    json_t *out = json_pack("{s:I, s:o, s:o}", "store", (json_int_t)sid, "settings", e, "overridden", over);
    json_t *place = NULL; /* where the chunks live (issue 21), kept by the kernel */
    mb_err pe = {0};
    if (s->api->abi_minor >= 1 && s->api->store_placement_get(sid, &place, &pe) == 0)
        json_object_set_new(out, "placement", place);
    return s->api->reply_json(req, 200, out);
}

/* GET /api/v1/stores/{sid}/config */
static int h_get(mb_req *req, void *state, mb_err *err)
{
    sc *s = state;
    uint64_t sid = 0;
    int rc = req_store(s, req, &sid, err);
    return rc ? rc : reply_config(s, req, sid, err);
}

/* PATCH .../config {"placement": {...}}: the kernel's live migration, an administrator's call
 * (any user's store), alone in its request. 202 {"task"}, or 200 with the config when the store
 * is there already. */
static int patch_placement(sc *s, mb_req *req, json_t *body, mb_err *err)
{
    const mb_api *api = s->api;
    const char *p = api->req_param(req, "sid");
    char *end = NULL;
    uint64_t sid = p && *p >= '0' && *p <= '9' ? strtoull(p, &end, 10) : 0;
    if (!sid || *end)
        return api->err_set(err, MB_ENOENT, "no such store: %s", p ? p : "");
    if (api->size <= offsetof(mb_api, store_migrate))
        return api->err_set(err, MB_EUNSUPP, "placement: this server cannot move a store to other backends");
    if (json_object_size(body) != 1)
        return api->err_set(err, MB_EINVAL, "placement: is changed alone, in a request of its own");
    uint64_t task = 0;
    int rc = api->store_migrate(api->req_user(req), sid, json_object_get(body, "placement"), &task, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return reply_config(s, req, sid, err);
    return api->reply_json(req, 202, json_pack("{s:I, s:I}", "task", (json_int_t)task, "store", (json_int_t)sid));
}

/* PATCH /api/v1/stores/{sid}/config {"max_bytes": 1000, "blocked_extensions": ["exe"], ...} */
static int h_patch(mb_req *req, void *state, mb_err *err)
{
    sc *s = state;
    uint64_t sid = 0;
    json_t *body = s->api->req_json(req, err);
    if (!body)
        return err->code;
    if (json_object_get(body, "placement"))
        return patch_placement(s, req, body, err);
    int rc = req_store(s, req, &sid, err);
    if (rc)
        return rc;
    if (!json_object_size(body))
        return s->api->err_set(err, MB_EINVAL, "the body must name at least one setting");
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (json_is_null(v) ? !key_known(k) : (rc = check_setting(s->api, k, v, err)) != 0)
            return json_is_null(v) ? s->api->err_set(err, MB_EINVAL, "%s: is not a store setting", k) : rc;
    }
    json_t *stored = NULL;
    if ((rc = s->api->store_settings_get(sid, &stored, err)))
        return rc;
    json_object_foreach(body, k, v) {
        if (json_is_null(v))
            json_object_del(stored, k);
        else if (!strcmp(k, "versioning") && json_is_object(json_object_get(stored, k)))
            json_object_update(json_object_get(stored, k), v);
        else
            json_object_set(stored, k, v);
    }
    rc = s->api->store_settings_set(sid, stored, err);
    json_decref(stored);
    return rc ? rc : reply_config(s, req, sid, err);
}

/* ------------------------------------------------------------------- hooks --- */

static bool list_has(const json_t *list, const char *v, bool mime)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *s = json_string_value(e);
        if (!s)
            continue;
        if (!strcasecmp(s, v))
            return true;
        size_t n = strlen(s);
        if (mime && n > 2 && !strcmp(s + n - 2, "/*") && !strncasecmp(s, v, n - 1))
            return true;
    }
    return false;
}

static int name_check(sc *s, const json_t *e, const char *path, const char *ctype, mb_err *err)
{
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    const char *dot = strrchr(name, '.');
    const char *ext = dot && dot != name ? dot + 1 : "";
    json_t *al = json_object_get(e, "allowed_extensions"), *bl = json_object_get(e, "blocked_extensions");
    if (*ext && list_has(bl, ext, false))
        return s->api->err_set(err, MB_EUNSUPP, "blocked_extensions: files ending in .%s are not allowed in this store",
                               ext);
    if (json_array_size(al) && !list_has(al, ext, false))
        return s->api->err_set(err, MB_EUNSUPP,
                               "allowed_extensions: only some extensions are allowed in this store, not '%s'", ext);
    if (ctype) {
        json_t *at = json_object_get(e, "allowed_types"), *bt = json_object_get(e, "blocked_types");
        if (list_has(bt, ctype, true))
            return s->api->err_set(err, MB_EUNSUPP, "blocked_types: %s files are not allowed in this store", ctype);
        if (json_array_size(at) && !list_has(at, ctype, true))
            return s->api->err_set(err, MB_EUNSUPP, "allowed_types: %s files are not allowed in this store", ctype);
    }
    return 0;
}

/* Limits against what the store holds: `add_bytes` and `add_files` more. */
static int limit_check(sc *s, const json_t *e, uint64_t sid, json_int_t add_bytes, json_int_t add_files,
                       json_int_t file_size, mb_err *err)
{
    json_int_t mfs = json_integer_value(json_object_get(e, "max_file_size"));
    if (mfs > 0 && file_size > mfs)
        return s->api->err_set(err, MB_ETOOBIG, "max_file_size: files in this store may be at most %lld bytes",
                               (long long)mfs);
    json_int_t mb = json_integer_value(json_object_get(e, "max_bytes"));
    json_int_t mf = json_integer_value(json_object_get(e, "max_files"));
    if (mb <= 0 && mf <= 0)
        return 0;
    json_t *u = NULL;
    if (s->api->usage_get(sid, 0, &u, err))
        return 0;
    /* max_bytes limits what the store holds now (current files and its trash); old versions
     * are the user quota's to count and prune (quotas), else they would block saving. */
    json_int_t bytes = json_integer_value(json_object_get(u, "bytes")) - json_integer_value(json_object_get(u, "versions"));
    json_int_t files = json_integer_value(json_object_get(u, "files"));
    json_decref(u);
    if (mb > 0 && bytes + add_bytes > mb)
        return s->api->err_set(err, MB_EQUOTA,
                               "max_bytes: this store may hold %lld bytes; %lld are used and this needs %lld more",
                               (long long)mb, (long long)bytes, (long long)add_bytes);
    if (mf > 0 && add_files > 0 && files + add_files > mf)
        return s->api->err_set(err, MB_EQUOTA, "max_files: this store may hold %lld files and has %lld",
                               (long long)mf, (long long)files);
    return 0;
}

static json_t *store_effective(sc *s, uint64_t sid)
{
    json_t *stored = NULL;
    mb_err e = {0};
    if (s->api->store_settings_get(sid, &stored, &e))
        stored = json_object();
    json_t *eff = effective(s, stored);
    json_decref(stored);
    return eff;
}

static int f_files(const char *event, json_t *p, void *state, mb_err *err)
{
    sc *s = state;
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(p, "store"));
    json_t *e = store_effective(s, sid);
    int rc = 0;
    json_int_t existing = json_integer_value(json_object_get(p, "existing_size"));
    if (!strcmp(event, "file.write")) {
        json_int_t size = json_integer_value(json_object_get(p, "size"));
        rc = name_check(s, e, json_string_value(json_object_get(p, "path")) ?: "",
                        json_string_value(json_object_get(p, "ctype")), err);
        if (!rc)
            rc = limit_check(s, e, sid, size < 0 ? 0 : size - existing,
                             json_is_true(json_object_get(p, "exists")) ? 0 : 1, size, err);
    } else if (!strcmp(event, "file.write.chunk")) {
        json_int_t bytes = json_integer_value(json_object_get(p, "bytes"));
        rc = limit_check(s, e, sid, bytes - existing, 0, bytes, err);
    } else if (!strcmp(event, "file.copy")) {
        json_int_t files = json_integer_value(json_object_get(p, "files"));
        if (files == 1)
            rc = name_check(s, e, json_string_value(json_object_get(p, "to")) ?: "", NULL, err);
        if (!rc)
            rc = limit_check(s, e, sid, json_integer_value(json_object_get(p, "size")), files, 0, err);
    } else if (!strcmp(event, "file.move")) {
        rc = name_check(s, e, json_string_value(json_object_get(p, "to")) ?: "", NULL, err);
    }
    json_decref(e);
    return rc;
}

/* ---------------------------------------------------------- init and fini --- */

static int validate_defaults(const mb_api *api, json_t *d, mb_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v) {
        mb_err e = {0};
        if (check_setting(api, k, v, &e))
            return api->err_set(err, MB_EINVAL, "conf.d/storeconfig.yaml: %s", e.msg);
    }
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    json_t *d = defaults_from(config);
    int rc = validate_defaults(api, d, err);
    if (rc) {
        json_decref(d);
        return rc;
    }
    sc *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(d);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    s->self = self;
    s->api = api;
    s->defaults = d;
    pthread_mutex_init(&s->lock, NULL);
    *state = s;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    sc *s = state;
    json_decref(s->defaults);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return 0;
}

static int reconfigure(void *state, const json_t *config, mb_err *err)
{
    sc *s = state;
    json_t *d = defaults_from(config);
    int rc = validate_defaults(s->api, d, err);
    if (rc) {
        json_decref(d);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    json_t *old = s->defaults;
    s->defaults = d;
    pthread_mutex_unlock(&s->lock);
    json_decref(old);
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "max_bytes", MB_CFG_INT, "0", 0, INT64_MAX},
    {sizeof(mb_config_key), "max_files", MB_CFG_INT, "0", 0, INT64_MAX},
    {sizeof(mb_config_key), "max_file_size", MB_CFG_INT, "0", 0, INT64_MAX},
    {sizeof(mb_config_key), "allowed_extensions", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "blocked_extensions", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "allowed_types", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "blocked_types", MB_CFG_LIST, "[]", 0, 0},
    {sizeof(mb_config_key), "versioning", MB_CFG_BOOL, "false", 0, 0},
    {sizeof(mb_config_key), "versioning_max_versions", MB_CFG_INT, "10", 1, 1000},
    {sizeof(mb_config_key), "versioning_max_age_days", MB_CFG_INT, "0", 0, 36500},
    {sizeof(mb_config_key), "trash_retention_days", MB_CFG_INT, "30", 0, 36500},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/stores/{sid}/config", MB_ROLE_USER, h_get},
    {sizeof(mb_route), "PATCH", "/api/v1/stores/{sid}/config", MB_ROLE_USER, h_patch},
    {0},
};

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "file.write", MB_HOOK_FILTER, 40, f_files, NULL},
    {sizeof(mb_hook), "file.write.chunk", MB_HOOK_FILTER, 40, f_files, NULL},
    {sizeof(mb_hook), "file.copy", MB_HOOK_FILTER, 40, f_files, NULL},
    {sizeof(mb_hook), "file.move", MB_HOOK_FILTER, 40, f_files, NULL},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "storeconfig",
    .version = "1.0.0",
    .description = "Per-store settings: storage and file limits, allowed types, versioning and trash retention",
    .config = config_keys,
    .routes = routes,
    .hooks = hooks,
    .init = init,
    .fini = fini,
    .reconfigure = reconfigure,
};
