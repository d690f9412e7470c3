/*
 * backend_http.c — the HTTP side of external storage (issue 21):
 *   GET /api/v1/admin/backends           every blob backend with its state, what it holds and how
 *                                        many stores are placed on it (backend.c's backend_status);
 *                                        admin only: names, types and sizes say how the server is built
 *   GET /api/v1/stores/{sid}/manifest/{path*}  what recovering the file without the server takes
 *                                        (docs/crypto.md, tools/mbyte-decrypt): the store's placement
 *                                        with its wrapped data key, and the current version's chunks
 *                                        in order (small ones, which never leave the server, inline)
 *   POST /api/v1/admin/backends/rewrap[?rotate=true]  every encrypted store's data key wrapped
 *                                        again under the newest master key version (after rotating
 *                                        it); the data is not re-encrypted
 *   POST /api/v1/admin/backends, DELETE /api/v1/admin/backends/{name}  a backend declared (and
 *                                        removed) in the web page instead of a module's conf.d file
 *   GET /api/v1/admin/stores/{sid}/datakey  a store's unwrapped data key, for mbyte-decrypt when
 *                                        the master key is Vault transit; admin only, and every
 *                                        export is the audited event "store.datakey_exported"
 *
 * Threads: HTTP workers; the backend listing blocks on each backend (a walk of <data>/chunks,
 * S3 ListObjectsV2 pages), and the key routes on the key provider (Vault), never the loop
 * thread. A rewrap writes each store record under the commit lock (txn) and only if its key is
 * still the one it rewrapped.
 */
#include "fs.h"
#include "ns.h"
#include "txn.h"
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GET /api/v1/admin/backends -> [{"name","type","state","objects","bytes","queued","stores"}] */
static int h_backends(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    return http_reply_json(req, 200, backend_status());
}

/* ------------------------------------------ backends declared in the page --- */
/* POST /api/v1/admin/backends {"name","type","settings":{...}} -> 201 with the backend's row, once
 * module `type` (s3, webdav, rclone: any active module whose settings have "backends") has been
 * reloaded with it and registers it; DELETE /api/v1/admin/backends/{name} -> 204 for one declared
 * here that no store uses. The record is bd/<name> (backend.c); modmgr.c adds it to the module's
 * settings as if its file declared it, so the module checks the settings with its own words.
 * Settings are strings or booleans; a key that names a secret (secret, password, token) must hold
 * a reference (env:, file:, vault:...), never the value: the record lives in the data directory
 * (docs/security.md). One declaration at a time (decl_mu): each reloads a module. */
static pthread_mutex_t decl_mu = PTHREAD_MUTEX_INITIALIZER;

static bool secret_named(const char *k)
{
    return strstr(k, "secret") || strstr(k, "password") || strstr(k, "token");
}

static int decl_check(const char *name, const char *type, const json_t *set, mb_err *err)
{
    if (!name || !backend_name_ok(name) || !strcmp(name, "local"))
        return err_set(err, MB_EINVAL, "name: 1 to 32 of a-z, 0-9, '-' and '_', and not 'local'");
    if (!type || !modmgr_takes_key(type, "backends"))
        return err_set(err, MB_ECONFLICT, "type: '%.64s' is not a loaded backend module (s3, webdav, rclone: switch it "
                                          "on under Modules first)", type ? type : "");
    if (!json_is_object(set))
        return err_set(err, MB_EINVAL, "settings: an object of the module's backend settings");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)set, k, v) {
        size_t kl = strlen(k);
        if (!kl || kl > 32 || strspn(k, "abcdefghijklmnopqrstuvwxyz_") != kl)
            return err_set(err, MB_EINVAL, "settings: '%.40s' is not a setting name", k);
        if (!json_is_string(v) && !json_is_boolean(v))
            return err_set(err, MB_EINVAL, "settings.%s: a string or true/false", k);
        if (json_is_string(v) && json_string_length(v) > 1024)
            return err_set(err, MB_ETOOBIG, "settings.%s: longer than 1024 bytes", k);
        if (secret_named(k) && json_is_string(v) && json_string_length(v) && !secret_is_ref(json_string_value(v)))
            return err_set(err, MB_EINVAL, "settings.%s: a reference to the secret (env:NAME, file:/path or "
                                           "vault:path#key), never the secret itself: what the page declares is kept "
                                           "in the data directory", k);
    }
    backend_ref r;
    mb_err e = {0};
    if (backend_enter(name, &r, &e) == 0) {
        backend_leave(&r);
        return err_set(err, MB_EEXIST, "a backend '%s' exists already", name);
    }
    json_t *rec = NULL;
    int had = backend_decl_get(name, &rec);
    json_decref(rec);
    if (had == 0)
        return err_set(err, MB_EEXIST, "a backend '%s' is declared already (its module is not loaded)", name);
    if (backend_stores_on(name))
        return err_set(err, MB_EEXIST, "stores are placed on a backend '%s' that is not declared now: declare it "
                                       "where it was (conf.d/%s.yaml)", name, type);
    return 0;
}

/* The row of GET /api/v1/admin/backends for name (new reference), or NULL. */
static json_t *status_of(const char *name)
{
    json_t *all = backend_status(), *v, *row = NULL;
    size_t i;
    json_array_foreach(all, i, v) if (!strcmp(jstr(v, "name"), name)) row = json_incref(v);
    json_decref(all);
    return row;
}

static int h_declare(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    json_t *body = http_req_json(req, err); /* the request's: borrowed */
    if (!body)
        return err->code ? err->code : MB_EINVAL;
    const char *name = mb_jstr(body, "name"), *type = mb_jstr(body, "type");
    json_t *set = json_object_get(body, "settings");
    pthread_mutex_lock(&decl_mu);
    int rc = decl_check(name, type, set, err);
    if (!rc) {
        const mb_user *u = http_req_user(req);
        json_t *rec = json_pack("{s:i, s:s, s:O, s:s, s:I}", "v", 1, "type", type, "settings", set, "by", u->name,
                                "time", (json_int_t)now_wall());
        if (backend_decl_put(name, rec))
            rc = err_set(err, MB_EIO, "the declaration could not be written");
        json_decref(rec);
    }
    if (!rc) {
        mb_err e = {0};
        backend_ref r;
        if ((rc = modmgr_reload(type, &e)) != 0) /* the module refused its settings: the old copy serves on */
            rc = err_set(err, MB_EINVAL, "%s", e.msg);
        else if (backend_enter(name, &r, &e) == 0)
            backend_leave(&r);
        else
            rc = err_set(err, MB_EINVAL, "the %s module did not take the backend '%s' (see the server log)", type, name);
        if (rc) {
            backend_decl_del(name);
            log_warn("backend '%s' (%s) declared in the page was refused: %s", name, type, err->msg);
        } else
            log_info("backend '%s' (%s) declared in the page by %s", name, type, http_req_user(req)->name);
    }
    pthread_mutex_unlock(&decl_mu);
    if (rc)
        return rc;
    json_t *row = status_of(name);
    return http_reply_json(req, 201, row ? row : json_pack("{s:s}", "name", name));
}

static int h_undeclare(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *name = http_req_param(req, "name");
    json_t *rec = NULL;
    pthread_mutex_lock(&decl_mu);
    int rc = 0;
    long held;
    backend_ref r;
    mb_err e = {0};
    if (!name || backend_decl_get(name, &rec)) {
        bool known = name && backend_enter(name, &r, &e) == 0;
        if (known)
            backend_leave(&r);
        rc = known ? err_set(err, MB_ECONFLICT, "backend '%s' is declared in conf.d: remove it there, then reload its "
                                                "module", name)
                   : err_set(err, MB_ENOENT, "there is no backend '%.40s'", name ? name : "");
    } else if ((held = backend_stores_on(name)) > 0) /* one scan of the store records */
        rc = err_set(err, MB_ECONFLICT, "%ld store(s) keep files on backend '%s': move them first (store settings, "
                                        "\"Where the files are kept\")", held, name);
    const char *type = rc ? NULL : jstr(rec, "type");
    if (!rc && backend_decl_del(name))
        rc = err_set(err, MB_EIO, "the declaration could not be removed");
    if (!rc && modmgr_takes_key(type, "backends") && modmgr_reload(type, &e)) {
        backend_decl_put(name, rec); /* the old copy still serves it: keep saying so */
        rc = err_set(err, MB_EIO, "the %s module could not be reloaded without '%s': %s", type, name, e.msg);
    }
    if (!rc)
        log_info("backend '%s' (%s) removed in the page by %s", name, type, http_req_user(req)->name);
    pthread_mutex_unlock(&decl_mu);
    json_decref(rec);
    return rc ? rc : http_reply_bytes(req, 204, NULL, "", 0);
}

/* The chunk list of the current version of the file at path (op checked), each
 * {"h","n"} and, for a chunk kept in the metadata database, "i" (its bytes, base64). */
static int manifest_chunks(const fs_op *op, json_t **out, json_t **info, mb_err *err)
{
    json_t *e = NULL, *ver = NULL;
    int rc = ns_resolve(op->sid, op->path, NULL, &e, err);
    if (!rc && (!e || ns_is_folder(e)))
        rc = err_set(err, MB_ECONFLICT, "'%s' is a folder, not a file", op->path);
    if (!rc) {
        char key[NS_KEYMAX];
        ns_fkey(key, sizeof key, op->sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
        if (db_get_json(key, &ver))
            rc = err_set(err, MB_EIO, "cannot read the version record of '%s'", op->path);
    }
    json_t *list = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(rc ? NULL : json_object_get(ver, "chunks"), i, c) {
        const char *h = jstr(c, "h");
        size_t n = (size_t)jint(c, "n");
        json_t *o = json_pack("{s:s, s:I}", "h", h, "n", (json_int_t)n);
        if (n <= blob_inline_max()) {
            uint8_t *buf = xmalloc(n ? n : 1);
            if ((rc = blob_get(h, buf, n, err)) == 0) {
                size_t bl = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
                char *b64 = xmalloc(bl);
                sodium_bin2base64(b64, bl, buf, n, sodium_base64_VARIANT_ORIGINAL);
                json_object_set_new(o, "i", json_string(b64));
                free(b64);
            }
            free(buf);
        }
        json_array_append_new(list, o);
        if (rc)
            break;
    }
    if (!rc)
        *info = json_pack("{s:O, s:O}", "size", json_object_get(ver, "size"), "sha256", json_object_get(ver, "sha256"));
    json_decref(e);
    json_decref(ver);
    if (rc) {
        json_decref(list);
        return rc;
    }
    *out = list;
    return 0;
}

/* GET /api/v1/stores/{sid}/manifest/{path*} -> {"store","path","size","sha256","placement","chunks"} */
static int h_manifest(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *s = http_req_param(req, "sid");
    uint64_t sid;
    if (!s || !parse_u64(s, &sid))
        return err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    fs_op op;
    const char *path = http_req_param(req, "path");
    int rc = fs_op_begin(&op, http_req_user(req), sid, path ? path : "", err);
    if (rc)
        return rc;
    json_t *chunks = NULL, *info = NULL, *rec = NULL;
    char key[32];
    id_key(key, sizeof key, "s", sid);
    rc = manifest_chunks(&op, &chunks, &info, err);
    if (!rc && db_get_json(key, &rec))
        rc = err_set(err, MB_EIO, "the record of store %llu cannot be read", (unsigned long long)sid);
    if (!rc) {
        json_t *p = backend_placement_norm(json_object_get(rec, "placement"));
        const char *wrapped = mb_jstr(json_object_get(rec, "placement"), "key");
        if (wrapped)
            json_object_set_new(p, "key", json_string(wrapped)); /* useless without the master key */
        json_object_set_new(info, "store", json_integer((json_int_t)sid));
        json_object_set_new(info, "path", json_string(op.path));
        json_object_set_new(info, "placement", p);
        json_object_set_new(info, "chunks", chunks);
        rc = http_reply_json(req, 200, info);
    } else {
        json_decref(chunks);
        json_decref(info);
    }
    json_decref(rec);
    fs_op_end(&op);
    return rc;
}

/* The scheme and version of a wrapped key ("vault:v2:", "mbkw1:", "v1:<key id>:"): what it
 * was wrapped with, without its body. */
static json_t *wrap_kind(const char *w)
{
    const char *c = strchr(w, ':');
    const char *d = c && strncmp(w, "mbkw1:", 6) ? strchr(c + 1, ':') : NULL;
    size_t n = d ? (size_t)(d - w) + 1 : c ? (size_t)(c - w) + 1 : 0;
    return json_stringn(w, n);
}

/* Store sid's record key into key (32 bytes). */
static void store_key(char key[32], uint64_t sid)
{
    id_key(key, 32, "s", sid);
}

/* Write store sid's wrapped key `to` if it still holds `from`: 0, or 1 when it changed meanwhile. */
static int rewrap_store(uint64_t sid, const char *from, const char *to, mb_err *err)
{
    char key[32];
    store_key(key, sid);
    txn t;
    txn_begin(&t, NULL);
    json_t *rec = NULL;
    int rc = db_get_json(key, &rec) ? err_set(err, MB_EIO, "the record of store %llu cannot be read",
                                              (unsigned long long)sid)
                                    : 0;
    json_t *p = rc ? NULL : json_object_get(rec, "placement");
    const char *now = mb_jstr(p, "key");
    bool same = now && !strcmp(now, from);
    if (!rc && same) {
        json_object_set_new(p, "key", json_string(to));
        db_batch_put_json(t.b, key, rec);
    }
    rc = txn_end(&t, rc, err, !rc && same ? "the rewrapped data key" : NULL);
    json_decref(rec);
    return rc ? rc : !same;
}

/* POST /api/v1/admin/backends/rewrap[?rotate=true] -> {"rotated", "stores": [{"store","from","to"}]} */
static int h_rewrap(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *q = http_req_query(req, "rotate");
    bool rotate = q && (!strcmp(q, "true") || !strcmp(q, "1"));
    if (q && !rotate && strcmp(q, "false") && strcmp(q, "0"))
        return err_set(err, MB_EINVAL, "rotate must be true or false");
    int rc = rotate ? crypt_key_rotate(err) : crypt_available(err) ? 0 : err->code;
    if (rc)
        return rc;
    json_t *todo = json_array();
    db_iter *it = db_iter_prefix("s/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_t *p = json_object_get(rec, "placement");
        if (kl == 18 && json_is_true(json_object_get(p, "encrypt")) && mb_jstr(p, "key"))
            json_array_append_new(todo, json_pack("{s:I, s:s}", "store", jint(rec, "id"), "key", mb_jstr(p, "key")));
        json_decref(rec);
    }
    db_iter_free(it);
    json_t *done = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(todo, i, o) {
        uint64_t sid = (uint64_t)jint(o, "store");
        const char *from = jstr(o, "key");
        char *to = NULL;
        rc = crypt_key_rewrap(from, &to, err);
        if (!rc)
            rc = rewrap_store(sid, from, to, err);
        if (rc < 0) {
            err_set(err, rc, "store %llu: %s", (unsigned long long)sid, err->msg);
            free(to);
            break;
        }
        if (rc == 0)
            json_array_append_new(done, json_pack("{s:I, s:o, s:o}", "store", (json_int_t)sid, "from",
                                                  wrap_kind(from), "to", wrap_kind(to)));
        free(to);
        rc = 0;
    }
    json_decref(todo);
    if (rc) {
        json_decref(done);
        return rc;
    }
    log_info("data keys rewrapped: %zu stores%s", json_array_size(done), rotate ? " (master key rotated)" : "");
    return http_reply_json(req, 200, json_pack("{s:b, s:o}", "rotated", rotate, "stores", done));
}

/* GET /api/v1/admin/stores/{sid}/datakey -> {"store","datakey"} (64 hex), audited. */
static int h_datakey(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    const char *s = http_req_param(req, "sid");
    uint64_t sid;
    if (!s || !parse_u64(s, &sid))
        return err_set(err, MB_ENOENT, "no such store: %s", s ? s : "");
    char key[32];
    store_key(key, sid);
    json_t *rec = NULL;
    if (db_get_json(key, &rec))
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    json_t *p = json_object_get(rec, "placement");
    int rc = json_is_true(json_object_get(p, "encrypt"))
                 ? 0
                 : err_set(err, MB_ECONFLICT, "store %llu is not encrypted: it has no data key", (unsigned long long)sid);
    uint8_t dk[CRYPT_KEY];
    if (!rc && (rc = crypt_key_unwrap(mb_jstr(p, "key"), dk, err)))
        rc = err_set(err, MB_EBUSY, "the data key of store %llu cannot be unwrapped: %s", (unsigned long long)sid,
                     err->msg);
    json_decref(rec);
    if (rc)
        return rc;
    const mb_user *u = http_req_user(req);
    mb_err he = {0};
    /* Audit first: a key that was not recorded as exported is not handed out. */
    if (hook_emit("store.datakey_exported", json_pack("{s:I, s:I, s:s, s:s?}", "store", (json_int_t)sid, "user",
                                                      (json_int_t)u->id, "name", u->name, "ip",
                                                      http_req_client_ip(req)),
                  &he)) {
        sodium_memzero(dk, sizeof dk);
        return err_set(err, MB_EIO, "the export could not be recorded, so the key is not given: %s", he.msg);
    }
    char hex[2 * CRYPT_KEY + 1];
    sodium_bin2hex(hex, sizeof hex, dk, sizeof dk);
    sodium_memzero(dk, sizeof dk);
    log_info("store %llu: data key exported to %s", (unsigned long long)sid, u->name);
    rc = http_reply_json(req, 200, json_pack("{s:I, s:s}", "store", (json_int_t)sid, "datakey", hex));
    sodium_memzero(hex, sizeof hex);
    return rc;
}

const kroute backend_routes[] = {
    {"GET", "/api/v1/admin/backends", MB_ROLE_ADMIN, h_backends, NULL},
    {"GET", "/api/v1/stores/{sid}/manifest/{path*}", MB_ROLE_USER, h_manifest, NULL},
    {"POST", "/api/v1/admin/backends", MB_ROLE_ADMIN, h_declare, NULL},
    {"DELETE", "/api/v1/admin/backends/{name}", MB_ROLE_ADMIN, h_undeclare, NULL},
    {"POST", "/api/v1/admin/backends/rewrap", MB_ROLE_ADMIN, h_rewrap, NULL},
    {"GET", "/api/v1/admin/stores/{sid}/datakey", MB_ROLE_ADMIN, h_datakey, NULL},
    {NULL},
};
