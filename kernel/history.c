/*
 * history.c — the kernel primitives behind trash, file versions and integrity (issue 5;
 * mb_api minor 2). The modules trash, versioning and integrity hold the policy (retention,
 * schedules, findings); this file holds only what must touch the metadata layout, so every
 * change stays one synced batch under the commit lock like every other namespace change.
 *
 * Trash: an entry hangs off its parent folder's id (ns.c), so "detach" is one directory
 * entry deleted and one trash record put: a folder's subtree keeps hanging off the folder's
 * id, every version record and every chunk reference stays where it was, and nothing is
 * copied. "attach" puts the entry back (parents recreated, a taken name suffixed); "purge"
 * drops the subtree's entries and versions with their refcounts, as a delete would have.
 *   tr/<sid16>/<tid16>  {"v":1,"id","store","owner","path","name","type","size","deleted",
 *                        "deleted_by","entry":<the directory entry as stored>}
 * Versions: f/<sid16>/<fid16>/<ver16> records already exist; fs_write_commit keeps the old
 * ones when a file.version.drop filter answers MB_HANDLED (the versioning module).
 * Integrity: chunk refcount records (c/) list what must exist; a damaged mark
 *   x/<sid16>/<fid16>/<ver16>  {"v":1,"reason","since"}
 * makes fs_open refuse that version with MB_EINTEGRITY.
 *
 * Usage and quotas (docs/storage.md): trashed bytes still count until purged, so detach and
 * attach only move bytes into and out of usage's trash part; old versions count too (their
 * own part); purge and version_delete are where bytes leave.
 *
 * Threads: any (HTTP workers, task workers, filters on the deleting thread). Every change
 * is a read-modify-write under the commit lock (txn.c); reads take no lock.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tkey(char *out, size_t n, uint64_t sid, uint64_t tid)
{
    char a[17], b[17];
    key_u64(a, sid);
    key_u64(b, tid);
    snprintf(out, n, "tr/%s/%s", a, b);
}

static void xkey(char *out, size_t n, uint64_t sid, uint64_t fid, uint64_t ver)
{
    char a[17], b[17], c[17];
    key_u64(a, sid);
    key_u64(b, fid);
    key_u64(c, ver);
    snprintf(out, n, "x/%s/%s/%s", a, b, c);
}

/* Drop every damaged mark of file fid into b. */
static void marks_drop(uint64_t sid, uint64_t fid, db_batch *b)
{
    char prefix[64], a[17], c[17];
    key_u64(a, sid);
    key_u64(c, fid);
    snprintf(prefix, sizeof prefix, "x/%s/%s/", a, c);
    db_batch_del_prefix(b, prefix);
}

/* Normalise a path that must name something below the root. */
static int norm(const char *path, char **np, mb_err *err)
{
    int rc = fs_path_normalize(path ? path : "", path ? strlen(path) : 0, np, err);
    if (!rc && !**np) {
        free(*np);
        *np = NULL;
        return err_set(err, MB_EINVAL, "path: the root folder has no trash entry or versions");
    }
    return rc;
}

/* ================================================================ trash === */

static int size_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    (void)pid, (void)name, (void)rel;
    *(int64_t *)ud += jint(e, "size");
    return 0;
}

int history_detach(const mb_user *u, uint64_t sid, const char *path, int flags, uint64_t by, uint64_t *id,
                   mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    char *np;
    if ((rc = norm(path, &np, err)))
        return rc;
    json_t *e = NULL;
    uint64_t pid = 0, tid = 0;
    txn c;
    txn_begin(&c, NULL);
    rc = ns_resolve(sid, np, &pid, &e, err);
    int64_t size = 0;
    if (!rc && ns_is_folder(e)) {
        uint64_t fid = (uint64_t)jint(e, "id");
        if (!(flags & FS_RECURSIVE) && ns_has_children(sid, fid))
            rc = err_set(err, MB_ECONFLICT, "the folder '%s' is not empty (delete it with recursive=true)", np);
        else /* walked one entry at a time: a folder of any size costs no memory here */
            ns_walk_ids(sid, fid, "", 0, size_cb, &size);
    } else if (!rc)
        size = jint(e, "size");
    if (!rc) {
        tid = db_next_id("trash");
        int64_t now = now_wall();
        const char *name = strrchr(np, '/') ? strrchr(np, '/') + 1 : np;
        db_batch *b = c.b;
        char key[NS_KEYMAX];
        ns_dkey(key, sizeof key, sid, pid, name);
        db_batch_del(b, key, strlen(key));
        json_t *rec = json_pack("{s:i, s:I, s:I, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:O}", "v", 1, "id",
                                (json_int_t)tid, "store", (json_int_t)sid, "owner", (json_int_t)owner, "path", np,
                                "name", name, "type", jstr(e, "type"), "size", (json_int_t)size, "deleted",
                                (json_int_t)now, "deleted_by", (json_int_t)by, "entry", e);
        tkey(key, sizeof key, sid, tid);
        db_batch_put_json(b, key, rec);
        json_decref(rec);
        txn_usage_trash(&c, sid, size);
        hook_emit_batch(b, "file.trashed",
                        json_pack("{s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)owner, "path", np, "type", jstr(e, "type"), "trash_id", (json_int_t)tid,
                                  "file_id", jint(e, "id"), "size", (json_int_t)size, "user", (json_int_t)by));
    }
    rc = txn_end(&c, rc, err, "moving to the trash");
    json_decref(e);
    free(np);
    if (!rc && id)
        *id = tid;
    return rc;
}

static int trash_get(uint64_t sid, uint64_t tid, json_t **rec, mb_err *err)
{
    char key[64];
    tkey(key, sizeof key, sid, tid);
    int rc = db_get_json(key, rec);
    if (rc == MB_ENOENT)
        return err_set(err, MB_ENOENT, "no such item in the trash: %llu", (unsigned long long)tid);
    return rc ? err_set(err, MB_EIO, "cannot read trash item %llu", (unsigned long long)tid) : 0;
}

/* "name (restored).ext", then "name (restored 2).ext", ... ; folders keep no extension. */
static char *suffixed(const char *name, bool folder, int n)
{
    const char *dot = folder ? NULL : strrchr(name, '.');
    if (dot == name)
        dot = NULL;
    size_t stem = dot ? (size_t)(dot - name) : strlen(name);
    char num[24] = "";
    if (n > 1)
        snprintf(num, sizeof num, " %d", n);
    char *r;
    if (asprintf(&r, "%.*s (restored%s)%s", (int)stem, name, num, dot ? dot : "") < 0)
        abort();
    return r;
}

int history_attach(const mb_user *u, uint64_t sid, uint64_t tid, char **out_path, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    json_t *rec = NULL;
    char *dir = NULL, *final = NULL;
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    rc = trash_get(sid, tid, &rec, err);
    uint64_t pid = 0;
    const char *name = NULL;
    if (!rc) {
        dir = ns_parent_of(jstr(rec, "path"), &name);
        rc = ns_folder_for_change(sid, owner, dir, true, u ? u->id : 0, b, &pid, NULL, NULL, err);
    }
    char *cand = NULL;
    for (int n = 0; !rc && n < 1000; n++) {
        cand = n ? suffixed(name, ns_is_folder(json_object_get(rec, "entry")), n) : xstrdup(name);
        json_t *ex = NULL;
        if (strlen(cand) <= FS_NAME_MAX && ns_entry_get(sid, pid, cand, &ex) == MB_ENOENT)
            break;
        json_decref(ex);
        free(cand);
        cand = NULL;
    }
    if (!rc && !cand)
        rc = err_set(err, MB_EEXIST, "no free name to restore '%s' to", jstr(rec, "path"));
    if (!rc) {
        final = ns_join(dir, cand);
        char key[NS_KEYMAX];
        ns_dkey(key, sizeof key, sid, pid, cand);
        db_batch_put_json(b, key, json_object_get(rec, "entry"));
        tkey(key, sizeof key, sid, tid);
        db_batch_del(b, key, strlen(key));
        txn_usage_trash(&c, sid, -jint(rec, "size"));
        hook_emit_batch(b, "file.restored",
                        json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)owner, "path", final, "from", jstr(rec, "path"), "type",
                                  jstr(rec, "type"), "trash_id", (json_int_t)tid, "user",
                                  (json_int_t)(u ? u->id : 0)));
    }
    rc = txn_end(&c, rc, err, "the restore");
    free(cand);
    free(dir);
    json_decref(rec);
    if (!rc && out_path)
        *out_path = final;
    else
        free(final);
    return rc;
}

/* Drop one file's versions, marks and announce it gone, into b. */
static void purge_file(txn *t, uint64_t sid, uint64_t owner, const json_t *e, const char *path, uint64_t uid)
{
    db_batch *b = t->b;
    uint64_t fid = (uint64_t)jint(e, "id");
    ns_drop_versions(t, sid, fid, (uint64_t)jint(e, "version"));
    marks_drop(sid, fid, b);
    txn_usage(t, sid, -jint(e, "size"), -1); /* trashed bytes counted until now */
    txn_usage_trash(t, sid, -jint(e, "size"));
    hook_emit_batch(b, "file.deleted",
                    json_pack("{s:I, s:I, s:s, s:I, s:I, s:I, s:b}", "store", (json_int_t)sid, "owner",
                              (json_int_t)owner, "path", path, "file_id", (json_int_t)fid, "size", jint(e, "size"),
                              "user", (json_int_t)uid, "from_trash", 1));
}

void history_file_purged(txn *t, json_t *e, const char *path, void *ud)
{
    fs_who *p = ud;
    purge_file(t, p->sid, p->owner, e, path, p->uid);
}

int history_purge(const mb_user *u, uint64_t sid, uint64_t tid, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    uint64_t uid = u ? u->id : 0;
    json_t *rec = NULL;
    uint64_t jid = 0;
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    rc = trash_get(sid, tid, &rec, err);
    if (!rc) {
        json_t *e = json_object_get(rec, "entry");
        const char *path = jstr(rec, "path");
        char key[NS_KEYMAX];
        if (ns_is_folder(e) && fs_big_over(sid, (uint64_t)jint(e, "id"))) /* freed by a task (fs_big.c) */
            jid = fs_big_journal(&c, json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "op", "purge", "store",
                                               (json_int_t)sid, "owner", (json_int_t)owner, "user", (json_int_t)uid,
                                               "root", jint(e, "id"), "path", path));
        else if (ns_is_folder(e)) {
            fs_who pw = {sid, owner, uid};
            ns_drop_subtree(&c, sid, (uint64_t)jint(e, "id"), path, history_file_purged, &pw);
        } else
            purge_file(&c, sid, owner, e, path, uid);
        tkey(key, sizeof key, sid, tid);
        db_batch_del(b, key, strlen(key));
        hook_emit_batch(b, "file.purged",
                        json_pack("{s:I, s:I, s:s, s:s, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)owner, "path", path, "type", jstr(rec, "type"), "trash_id",
                                  (json_int_t)tid, "size", jint(rec, "size"), "user", (json_int_t)uid));
    }
    rc = txn_end(&c, rc, err, "the purge");
    json_decref(rec);
    if (!rc && jid)
        rc = fs_big_start(jid, uid, NULL, false, err);
    return rc;
}

int history_trash_list(const mb_user *u, uint64_t sid, json_t **out, mb_err *err)
{
    char prefix[32];
    if (u || sid) {
        fs_op op;
        int rc = fs_op_begin(&op, u, sid, NULL, err);
        if (rc)
            return rc;
        char a[17];
        key_u64(a, sid);
        snprintf(prefix, sizeof prefix, "tr/%s/", a);
    } else
        snprintf(prefix, sizeof prefix, "tr/");
    json_t *arr = json_array();
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        if (!rec)
            continue;
        json_object_del(rec, "entry");
        json_object_del(rec, "v");
        json_array_append_new(arr, rec);
    }
    db_iter_free(it);
    *out = arr;
    return 0;
}

void history_fsck_live(json_t *live)
{
    db_iter *it = db_iter_prefix("tr/", 3);
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_t *e = json_object_get(rec, "entry");
        if (e && !ns_is_folder(e)) {
            char key[NS_KEYMAX];
            ns_fkey(key, sizeof key, (uint64_t)jint(rec, "store"), (uint64_t)jint(e, "id"), 0);
            key[strlen(key) - 16] = 0;
            json_object_set_new(live, key, json_true());
        }
        json_decref(rec);
    }
    db_iter_free(it);
}

/* ============================================================= versions === */

bool history_keep_versions(uint64_t sid, uint64_t owner, uint64_t fid, const char *path)
{
    json_t *p = json_pack("{s:I, s:I, s:I, s:s}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "file_id",
                          (json_int_t)fid, "path", path);
    int rc = hook_filter("file.version.drop", p, NULL);
    json_decref(p);
    return rc == MB_HANDLED;
}

/* Resolve a file for a version call: its entry and its parent id. */
static int file_entry(uint64_t sid, const char *np, uint64_t *pid, json_t **e, mb_err *err)
{
    int rc = ns_resolve(sid, np, pid, e, err);
    if (!rc && ns_is_folder(*e)) {
        json_decref(*e);
        *e = NULL;
        return err_set(err, MB_ECONFLICT, "'%s' is a folder; only files have versions", np);
    }
    return rc;
}

int history_versions(const mb_user *u, uint64_t sid, const char *path, json_t **out, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    char *np;
    if ((rc = norm(path, &np, err)))
        return rc;
    json_t *e = NULL;
    uint64_t pid;
    if ((rc = file_entry(sid, np, &pid, &e, err))) {
        free(np);
        return rc;
    }
    char prefix[NS_KEYMAX];
    ns_fkey(prefix, sizeof prefix, sid, (uint64_t)jint(e, "id"), 0);
    size_t pl = strlen(prefix) - 16;
    json_t *arr = json_array();
    db_iter *it = db_iter_prefix(prefix, pl);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        if (!rec || kl != pl + 16) {
            json_decref(rec);
            continue;
        }
        char hex[17];
        memcpy(hex, k + pl, 16);
        hex[16] = 0;
        uint64_t ver = strtoull(hex, NULL, 16);
        char name[128] = "";
        uint64_t author = (uint64_t)jint(rec, "author");
        if (author)
            auth_user_name(author, name, sizeof name);
        json_t *o = json_pack("{s:I, s:I, s:s, s:I, s:s, s:I, s:b}", "version", (json_int_t)ver, "size",
                              jint(rec, "size"), "sha256", jstr(rec, "sha256"), "author", (json_int_t)author,
                              "author_name", name, "time", jint(rec, "time"), "current",
                              ver == (uint64_t)jint(e, "version"));
        if (json_object_get(rec, "restored_from"))
            json_object_set(o, "restored_from", json_object_get(rec, "restored_from"));
        json_array_append_new(arr, o);
        json_decref(rec);
    }
    db_iter_free(it);
    json_decref(e);
    free(np);
    *out = arr;
    return 0;
}

int history_version_restore(const mb_user *u, uint64_t sid, const char *path, uint64_t version, json_t **info,
                            mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    if (!version)
        return err_set(err, MB_EINVAL, "restore: the version must be a whole number from 1");
    char *np;
    if ((rc = norm(path, &np, err)))
        return rc;
    uint64_t uid = u ? u->id : 0, pid = 0;
    json_t *e = NULL, *old = NULL, *ne = NULL;
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    rc = file_entry(sid, np, &pid, &e, err);
    char key[NS_KEYMAX];
    uint64_t fid = 0;
    if (!rc) {
        fid = (uint64_t)jint(e, "id");
        ns_fkey(key, sizeof key, sid, fid, version);
        int g = db_get_json(key, &old);
        if (g == MB_ENOENT)
            rc = err_set(err, MB_ENOENT, "'%s' has no version %llu", np, (unsigned long long)version);
        else if (g)
            rc = err_set(err, MB_EIO, "cannot read version %llu of '%s'", (unsigned long long)version, np);
    }
    if (!rc) {
        int64_t now = now_wall();
        uint64_t nv = (uint64_t)jint(e, "version") + 1;
        json_t *rec = json_deep_copy(old);
        json_object_set_new(rec, "author", json_integer((json_int_t)uid));
        json_object_set_new(rec, "time", json_integer(now));
        json_object_set_new(rec, "restored_from", json_integer((json_int_t)version));
        txn_ref_chunks(&c, json_object_get(rec, "chunks"), +1);
        ns_fkey(key, sizeof key, sid, fid, nv);
        db_batch_put_json(b, key, rec);
        json_decref(rec);
        ne = json_deep_copy(e);
        json_object_set(ne, "size", json_object_get(old, "size"));
        json_object_set(ne, "sha256", json_object_get(old, "sha256"));
        if (json_object_get(old, "ctype"))
            json_object_set(ne, "ctype", json_object_get(old, "ctype"));
        json_object_set_new(ne, "version", json_integer((json_int_t)nv));
        json_object_set_new(ne, "mtime", json_integer(now));
        json_object_set_new(ne, "updated", json_integer(now));
        json_object_set_new(ne, "updated_by", json_integer((json_int_t)uid));
        const char *name = strrchr(np, '/') ? strrchr(np, '/') + 1 : np;
        ns_dkey(key, sizeof key, sid, pid, name);
        db_batch_put_json(b, key, ne);
        hook_emit_batch(b, "file.updated",
                        json_pack("{s:I, s:I, s:s, s:I, s:I, s:s, s:I, s:s, s:I, s:I}", "store", (json_int_t)sid,
                                  "owner", (json_int_t)owner, "path", np, "file_id", (json_int_t)fid, "size",
                                  jint(old, "size"), "sha256", jstr(old, "sha256"), "version", (json_int_t)nv,
                                  "ctype", jstr(ne, "ctype"), "user", (json_int_t)uid, "restored_from",
                                  (json_int_t)version));
        /* The restored copy is a new current version; the one it replaces becomes old. */
        txn_usage(&c, sid, jint(old, "size") - jint(e, "size"), 0);
        txn_usage_versions(&c, sid, jint(e, "size"));
    }
    rc = txn_end(&c, rc, err, "the restore");
    if (!rc && info)
        *info = ns_public_info(ne, np);
    json_decref(ne);
    json_decref(old);
    json_decref(e);
    free(np);
    return rc;
}

int history_version_delete(const mb_user *u, uint64_t sid, const char *path, uint64_t version, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, NULL, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    char *np;
    if ((rc = norm(path, &np, err)))
        return rc;
    json_t *e = NULL, *old = NULL;
    uint64_t pid;
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    rc = file_entry(sid, np, &pid, &e, err);
    char key[NS_KEYMAX];
    if (!rc && version == (uint64_t)jint(e, "version"))
        rc = err_set(err, MB_ECONFLICT, "version %llu is the current version of '%s'; restore another one first",
                     (unsigned long long)version, np);
    if (!rc) {
        ns_fkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), version);
        int g = db_get_json(key, &old);
        if (g == MB_ENOENT)
            rc = err_set(err, MB_ENOENT, "'%s' has no version %llu", np, (unsigned long long)version);
        else if (g)
            rc = err_set(err, MB_EIO, "cannot read version %llu of '%s'", (unsigned long long)version, np);
    }
    if (!rc) {
        db_batch_del(b, key, strlen(key));
        txn_ref_chunks(&c, json_object_get(old, "chunks"), -1);
        txn_usage_versions(&c, sid, -jint(old, "size"));
        xkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), version);
        db_batch_del(b, key, strlen(key));
        hook_emit_batch(b, "file.version.deleted",
                        json_pack("{s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)owner, "path", np, "file_id", jint(e, "id"), "version",
                                  (json_int_t)version, "size", jint(old, "size"), "user",
                                  (json_int_t)(u ? u->id : 0)));
    }
    rc = txn_end(&c, rc, err, "deleting the version");
    json_decref(old);
    json_decref(e);
    free(np);
    return rc;
}

/* ============================================================ integrity === */

int history_chunk_list(const char *after, int (*fn)(const char *hash, uint64_t size, void *ud), void *ud,
                       mb_err *err)
{
    (void)err;
    db_iter *it = db_iter_prefix("c/", 2);
    int stop = 0;
    while (!stop && db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        if (kl != 66)
            continue;
        char hash[65];
        memcpy(hash, k + 2, 64);
        hash[64] = 0;
        if (after && *after && strcmp(hash, after) <= 0)
            continue;
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_int_t refs = jint(rec, "refs"), size = jint(rec, "size");
        json_decref(rec);
        if (refs > 0)
            stop = fn(hash, (uint64_t)size, ud);
    }
    db_iter_free(it);
    return 0;
}

int history_chunk_verify(const char *hash, mb_err *err)
{
    if (!hash || strlen(hash) != 64 || strspn(hash, "0123456789abcdef") != 64)
        return err_set(err, MB_EINVAL, "a chunk name is 64 lower-case hex digits");
    char key[80];
    snprintf(key, sizeof key, "c/%s", hash);
    json_t *rec = NULL;
    if (db_get_json(key, &rec))
        return err_set(err, MB_ENOENT, "chunk %.12s… is not known", hash);
    json_int_t size = jint(rec, "size");
    json_decref(rec);
    if (size < 0 || size > (json_int_t)CHUNK_MAX)
        return err_set(err, MB_EINTEGRITY, "chunk %.12s… has an impossible recorded size", hash);
    uint8_t *buf = xmalloc(size ? (size_t)size : 1);
    int rc = blob_get(hash, buf, (size_t)size, err);
    free(buf);
    if (rc == 0 && (size_t)size > blob_inline_max()) /* every piece of it on a redundancy set, too */
        rc = blob_check_pieces(hash, (size_t)size, err);
    if (rc == MB_ENOENT)
        err_set(err, MB_ENOENT, "chunk %.12s… is missing from the chunk store", hash);
    return rc;
}

typedef struct {
    uint64_t fid;
    char *path;
    uint64_t tid; /* in the trash: its record; else 0 */
} where;

static int where_cmp(const void *a, const void *b)
{
    uint64_t x = ((const where *)a)->fid, y = ((const where *)b)->fid;
    return x < y ? -1 : x > y;
}

/* Where every file of store sid is: the namespace, then the trash. Sorted by file id. */
static where *locate_all(uint64_t sid, size_t *n)
{
    json_t *sub = ns_subtree(sid, 0);
    size_t cap = json_array_size(sub) + 16, k = 0;
    where *w = xcalloc(cap, sizeof *w);
    size_t i;
    json_t *t;
    json_array_foreach(sub, i, t) {
        json_t *e = json_array_get(t, 2);
        if (!ns_is_folder(e))
            w[k++] = (where){(uint64_t)jint(e, "id"), xstrdup(json_string_value(json_array_get(t, 3))), 0};
    }
    json_decref(sub);
    json_t *tr = NULL;
    if (history_trash_list(NULL, 0, &tr, NULL) == 0) {
        json_array_foreach(tr, i, t) {
            if ((uint64_t)jint(t, "store") != sid)
                continue;
            char key[64];
            json_t *rec = NULL;
            tkey(key, sizeof key, sid, (uint64_t)jint(t, "id"));
            if (db_get_json(key, &rec))
                continue;
            json_t *e = json_object_get(rec, "entry");
            json_t *files = ns_is_folder(e) ? ns_subtree(sid, (uint64_t)jint(e, "id"))
                                            : json_pack("[[i, s, O, s]]", 0, "", e, "");
            size_t j;
            json_t *f;
            json_array_foreach(files, j, f) {
                json_t *fe = json_array_get(f, 2);
                if (ns_is_folder(fe))
                    continue;
                if (k == cap)
                    w = xrealloc(w, (cap *= 2) * sizeof *w);
                w[k++] = (where){(uint64_t)jint(fe, "id"), NULL, (uint64_t)jint(t, "id")};
            }
            json_decref(files);
            json_decref(rec);
        }
        json_decref(tr);
    }
    qsort(w, k, sizeof *w, where_cmp);
    *n = k;
    return w;
}

int history_chunk_files(const char *hash, json_t **out, mb_err *err)
{
    if (!hash || strlen(hash) != 64 || strspn(hash, "0123456789abcdef") != 64)
        return err_set(err, MB_EINVAL, "a chunk name is 64 lower-case hex digits");
    json_t *arr = json_array();
    uint64_t cur_sid = 0;
    where *w = NULL;
    size_t nw = 0;
    char needle[80];
    snprintf(needle, sizeof needle, "\"%s\"", hash);
    db_iter *it = db_iter_prefix("f/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        if (kl != 52 || !memmem(v, vl, needle, strlen(needle)))
            continue;
        char a[17], b[17], c[17];
        memcpy(a, k + 2, 16);
        memcpy(b, k + 19, 16);
        memcpy(c, k + 36, 16);
        a[16] = b[16] = c[16] = 0;
        uint64_t sid = strtoull(a, NULL, 16), fid = strtoull(b, NULL, 16), ver = strtoull(c, NULL, 16);
        if (!w || sid != cur_sid) {
            for (size_t i = 0; i < nw; i++)
                free(w[i].path);
            free(w);
            w = locate_all(sid, &nw);
            cur_sid = sid;
        }
        fs_op sop;
        uint64_t owner = fs_op_begin(&sop, NULL, sid, NULL, NULL) == 0 ? sop.owner : 0;
        where key = {.fid = fid}, *at = bsearch(&key, w, nw, sizeof *w, where_cmp);
        json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "file_id",
                              (json_int_t)fid, "version", (json_int_t)ver);
        bool current = false;
        if (at && at->path) {
            json_t *e = NULL;
            if (ns_resolve(sid, at->path, NULL, &e, NULL) == 0 && e)
                current = (uint64_t)jint(e, "version") == ver;
            json_decref(e);
            json_object_set_new(o, "path", json_string(at->path));
        } else {
            json_object_set_new(o, "path", json_null());
            if (at)
                json_object_set_new(o, "trash_id", json_integer((json_int_t)at->tid));
        }
        json_object_set_new(o, "current", json_boolean(current));
        json_array_append_new(arr, o);
    }
    db_iter_free(it);
    for (size_t i = 0; i < nw; i++)
        free(w[i].path);
    free(w);
    *out = arr;
    return 0;
}

int history_mark_damaged(uint64_t sid, uint64_t fid, uint64_t ver, const char *reason, bool damaged, mb_err *err)
{
    char key[80];
    xkey(key, sizeof key, sid, fid, ver);
    int rc;
    if (damaged) {
        json_t *rec = json_pack("{s:i, s:s, s:I}", "v", 1, "reason", reason ? reason : "damaged", "since",
                                (json_int_t)now_wall());
        rc = db_put_json(key, rec, true);
        json_decref(rec);
    } else
        rc = db_del(key, strlen(key), true);
    return rc ? err_set(err, rc, "the damaged mark could not be written") : 0;
}

int history_damaged(uint64_t sid, uint64_t fid, uint64_t ver, const char *path, mb_err *err)
{
    char key[80];
    xkey(key, sizeof key, sid, fid, ver);
    json_t *rec = NULL;
    if (db_get_json(key, &rec))
        return 0;
    err_set(err, MB_EINTEGRITY,
            "'%s' (version %llu) is marked damaged by the integrity scrub (%s); its bytes are not served, and with "
            "one local chunk store there is no second copy to serve instead",
            path, (unsigned long long)ver, jstr(rec, "reason"));
    json_decref(rec);
    return MB_EINTEGRITY;
}
