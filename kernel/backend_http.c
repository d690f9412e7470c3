/*
 * backend_http.c — the HTTP side of external storage (issue 21):
 *   GET /api/v1/admin/backends           every blob backend with its state, what it holds and how
 *                                        many stores are placed on it (backend.c's backend_status);
 *                                        admin only: names, types and sizes say how the server is built
 *   GET /api/v1/stores/{sid}/manifest/{path*}  what recovering the file without the server takes
 *                                        (docs/crypto.md, tools/mbyte-decrypt): the store's placement
 *                                        with its wrapped data key, and the current version's chunks
 *                                        in order (small ones, which never leave the server, inline)
 *
 * Threads: HTTP workers; the backend listing blocks on each backend (a walk of <data>/chunks,
 * S3 ListObjectsV2 pages), never the loop thread.
 */
#include "fs.h"
#include "ns.h"
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
    char key[32], a[17];
    key_u64(a, sid);
    snprintf(key, sizeof key, "s/%s", a);
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

const kroute backend_routes[] = {
    {"GET", "/api/v1/admin/backends", MB_ROLE_ADMIN, h_backends, NULL},
    {"GET", "/api/v1/stores/{sid}/manifest/{path*}", MB_ROLE_USER, h_manifest, NULL},
    {NULL},
};
