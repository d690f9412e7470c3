/*
 * modules/ftp/ftp_apppass.c — per-user FTP app passwords: one per device or program, shown
 * once at creation, revocable on its own. Routes POST/GET /api/v1/ftp/passwords and DELETE
 * /api/v1/ftp/passwords/{id}. The kernel's api->apppass_check reads these records too
 * (kernel/apppass.c), which is how PASS checks them (ftp_login.c): the module has no check
 * of its own, and lists its records through the kernel's JSON scan (api->kv_scan_json).
 *
 * Keys (docs/storage.md): m/ftp/pw/<uid 16 hex>/<id> = {"v":1,"id","name","hash","created"},
 * the password argon2id-hashed (libsodium). The kernel's own app passwords
 * (/api/v1/account/app-passwords, every door, with optional store and read-only limits) are
 * the way forward; these routes stay so existing clients and passwords keep working.
 *
 * Threads: the routes run on HTTP workers; all state is in the kernel's key-value store.
 */
#include "ftp.h"
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int apppass_create(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    const mb_api *api = f->api;
    json_t *b = api->req_json(req, err);
    if (!b)
        return err->code;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (!name || !*name || strlen(name) > 64)
        return api->err_set(err, MB_EINVAL, "name must be a string of 1 to 64 characters");
    const mb_user *u = api->req_user(req);
    static const char alpha[] = "abcdefghijkmnpqrstuvwxyz23456789";
    char pw[25], id[17], hash[crypto_pwhash_STRBYTES];
    unsigned char r[24], rid[8];
    randombytes_buf(r, sizeof r);
    randombytes_buf(rid, sizeof rid);
    for (int i = 0; i < 24; i++)
        pw[i] = alpha[r[i] & 31];
    pw[24] = 0;
    for (int i = 0; i < 8; i++)
        snprintf(id + 2 * i, 3, "%02x", rid[i]);
    /* the kernel's (ABI 2.2): argon2id waits its turn with every other password check */
    int hrc = api->size > offsetof(mb_api, password_hash) && api->password_hash
                  ? api->password_hash(pw, hash)
                  : crypto_pwhash_str(hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                      crypto_pwhash_MEMLIMIT_INTERACTIVE);
    if (hrc)
        return api->err_set(err, MB_ENOMEM, "could not hash the password");
    int64_t now = api->now();
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:I}", "v", 1, "id", id, "name", name, "hash", hash, "created",
                            (json_int_t)now);
    char *txt = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    char key[64];
    snprintf(key, sizeof key, "pw/%016llx/%s", (unsigned long long)u->id, id);
    int rc = api->kv_put(f->self, key, txt, strlen(txt), true, err);
    free(txt);
    if (rc)
        return rc;
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", id, "name", name, "username", u->name, "password", pw,
                            "created", (json_int_t)now);
    sodium_memzero(pw, sizeof pw);
    return api->reply_json(req, 201, out);
}

static int pw_list_one(const char *key, json_t *o, void *ud)
{
    (void)key;
    json_array_append_new(ud, json_pack("{s:O, s:O, s:O}", "id", json_object_get(o, "id"), "name",
                                        json_object_get(o, "name"), "created", json_object_get(o, "created")));
    return 0;
}

int apppass_list(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    char prefix[40];
    snprintf(prefix, sizeof prefix, "pw/%016llx/", (unsigned long long)f->api->req_user(req)->id);
    json_t *arr = json_array();
    int rc = f->api->kv_scan_json(f->self, prefix, pw_list_one, arr, err);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    return f->api->reply_json(req, 200, arr);
}

int apppass_delete(mb_req *req, void *state, mb_err *err)
{
    ftp_srv *f = state;
    const mb_api *api = f->api;
    const char *id = api->req_param(req, "id");
    if (!id || strlen(id) != 16 || strspn(id, "0123456789abcdef") != 16)
        return api->err_set(err, MB_ENOENT, "no such FTP password");
    char key[64], *v;
    size_t len;
    snprintf(key, sizeof key, "pw/%016llx/%s", (unsigned long long)api->req_user(req)->id, id);
    if (api->kv_get(f->self, key, &v, &len, err))
        return api->err_set(err, MB_ENOENT, "no such FTP password");
    free(v);
    int rc = api->kv_del(f->self, key, true, err);
    if (rc)
        return rc;
    return api->reply_bytes(req, 204, NULL, "", 0);
}
