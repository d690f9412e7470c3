/*
 * ns.c — the namespace (ns.h): stores, directory entries and file versions as keys, and the
 * reads every file operation starts from.
 *
 * Layout (docs/storage.md "## Files"):
 *   s/<sid16>                      store record
 *   so/<uid16>/<sid16>             the owner's index of stores
 *   d/<sid16>/<pid16>/<name>       a directory entry: <name> inside folder <pid> (root = 0)
 *   f/<sid16>/<fid16>/<ver16>      a file version: size, sha256, ordered chunk list
 *   c/<sha256>                     chunk refcount (txn.c)
 * Folders and files have ids from reserved blocks (db_alloc_id); entries are keyed by their
 * parent's id, not its path: listing a folder is one prefix scan, and moving or renaming a
 * folder of any size is one delete plus one put in one batch — its subtree follows because
 * it hangs off the id. A file id is stable across renames and moves (the versioning module
 * keys on it).
 *
 * Threads: any. Reads take no lock: each LevelDB read is consistent and entries point only at
 * committed versions. The changes (ns_folder_for_change, ns_drop_version(s)) are made inside
 * a transaction, whose commit lock serialises them.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* File and folder ids: unique for the life of the database, small enough to be exact as
 * JSON numbers in a browser (2^53), stable across renames. */
uint64_t ns_new_id(void) { return db_alloc_id("entry"); }

void ns_dkey(char *out, size_t n, uint64_t sid, uint64_t pid, const char *name)
{
    char a[17], b[17];
    key_u64(a, sid);
    key_u64(b, pid);
    snprintf(out, n, "d/%s/%s/%s", a, b, name);
}

void ns_fkey(char *out, size_t n, uint64_t sid, uint64_t fid, uint64_t ver)
{
    char a[17], b[17], c[17];
    key_u64(a, sid);
    key_u64(b, fid);
    key_u64(c, ver);
    snprintf(out, n, "f/%s/%s/%s", a, b, c);
}

const char *ns_last_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

char *ns_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *r = xmalloc(la + lb + 2);
    memcpy(r, a, la);
    size_t o = la;
    if (la && lb)
        r[o++] = '/';
    memcpy(r + o, b, lb);
    r[o + lb] = 0;
    return r;
}

/* The public form of an entry: the stored record plus where it is, without "v". */
json_t *ns_public_info(const json_t *e, const char *path)
{
    json_t *o = json_deep_copy(e);
    json_object_del(o, "v");
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "name", json_string(ns_last_name(path)));
    return o;
}

json_t *ns_root_info(void)
{
    return json_pack("{s:s, s:s, s:s, s:i}", "path", "", "name", "", "type", "folder", "id", 0);
}

json_t *ns_store_public(const json_t *s)
{
    json_t *o = json_deep_copy(s);
    json_object_del(o, "v");
    return o;
}

bool ns_store_reachable(const json_t *rec, const mb_user *u)
{
    const char *st = json_string_value(json_object_get(rec, "state"));
    if (!st || !strcmp(st, "ready"))
        return true;
    /* The system (u == NULL: a module's background work) provisions the store. */
    return !u && !strcmp(st, "provisioning");
}

/* The store record if u may reach it; another user's store is indistinguishable from none. */
int ns_store_access(const mb_user *u, uint64_t sid, json_t **rec, mb_err *err)
{
    if (rec)
        *rec = NULL;
    char key[32], a[17];
    key_u64(a, sid);
    snprintf(key, sizeof key, "s/%s", a);
    json_t *s = NULL;
    int rc = db_get_json_shared(key, &s); /* *rec is shared: callers only read it */
    if (rc == MB_ENOENT || (rc == 0 && u && (uint64_t)jint(s, "owner") != u->id) ||
        (rc == 0 && !ns_store_reachable(s, u))) { /* stores.c: provisioning or deleting */
        json_decref(s);
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    }
    if (rc)
        return err_set(err, MB_EIO, "cannot read store %llu", (unsigned long long)sid);
    if (rec)
        *rec = s;
    else
        json_decref(s);
    return 0;
}

/* Read the entry `name` in folder pid; MB_ENOENT if absent. */
int ns_entry_get(uint64_t sid, uint64_t pid, const char *name, json_t **e)
{
    char key[NS_KEYMAX];
    ns_dkey(key, sizeof key, sid, pid, name);
    return db_get_json(key, e);
}

/* The same, shared from the decoded-record cache (db.c): for the folders along a path,
 * which are only looked at. */
static int folder_get(uint64_t sid, uint64_t pid, const char *name, json_t **e)
{
    char key[NS_KEYMAX];
    ns_dkey(key, sizeof key, sid, pid, name);
    return db_get_json_shared(key, e);
}

/* Resolve a normalised path to its entry. For the root, *e is NULL and *id 0. *pid is the
 * parent folder's id. */
int ns_resolve(uint64_t sid, const char *path, uint64_t *pid, json_t **e, mb_err *err)
{
    *e = NULL;
    if (pid)
        *pid = 0;
    if (!*path)
        return 0;
    uint64_t cur = 0;
    const char *p = path;
    for (;;) {
        const char *s = strchr(p, '/');
        size_t l = s ? (size_t)(s - p) : strlen(p);
        char name[FS_NAME_MAX + 1];
        memcpy(name, p, l);
        name[l] = 0;
        json_t *ent = NULL;
        int rc = s ? folder_get(sid, cur, name, &ent) : ns_entry_get(sid, cur, name, &ent);
        if (rc == MB_ENOENT)
            return err_set(err, MB_ENOENT, "'%.*s' does not exist", (int)(p - path + l), path);
        if (rc)
            return err_set(err, MB_EIO, "cannot read the folder entry for '%s'", path);
        if (!s) {
            if (pid)
                *pid = cur;
            *e = ent;
            return 0;
        }
        if (!ns_is_folder(ent)) {
            json_decref(ent);
            return err_set(err, MB_ECONFLICT, "'%.*s' is a file, not a folder", (int)(p - path + l), path);
        }
        cur = (uint64_t)jint(ent, "id");
        json_decref(ent);
        p = s + 1;
    }
}

/* Split "a/b/c" into "a/b" (malloc'd) and "c" (points into path). */
char *ns_parent_of(const char *path, const char **name)
{
    const char *s = strrchr(path, '/');
    *name = s ? s + 1 : path;
    return s ? strndup(path, (size_t)(s - path)) : xstrdup("");
}

/* The names a change would create must pass fs_name_creatable: `name` (NULL: none) and each
 * name of `missing_dir` (NULL: the parent exists), a folder that parents=true would make.
 * Checked before the change, so a refused name costs no upload; entries made before the rule
 * keep their names and stay reachable, movable and writable. */
int ns_creatable(const char *missing_dir, const char *name, mb_err *err)
{
    if (name && fs_name_creatable(name, err))
        return MB_EINVAL;
    if (!missing_dir)
        return 0;
    char *copy = xstrdup(missing_dir);
    int rc = 0;
    for (char *save = NULL, *seg = strtok_r(copy, "/", &save); seg && !rc; seg = strtok_r(NULL, "/", &save))
        rc = fs_name_creatable(seg, err);
    free(copy);
    return rc;
}

/* The folder `dir` if it does not exist yet, else NULL (for creatable). */
const char *ns_missing(uint64_t sid, const char *dir)
{
    json_t *e = NULL;
    mb_err scratch = {0};
    int rc = *dir ? ns_resolve(sid, dir, NULL, &e, &scratch) : 0;
    json_decref(e);
    return rc == MB_ENOENT ? dir : NULL;
}

json_t *ns_folder_record(uint64_t id, uint64_t uid, int64_t now)
{
    return json_pack("{s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "v", 1, "type", "folder", "id", (json_int_t)id,
                     "mtime", (json_int_t)now, "created", (json_int_t)now, "created_by", (json_int_t)uid, "updated",
                     (json_int_t)now, "updated_by", (json_int_t)uid);
}

/* Resolve the folder `dir` for a change, under the commit lock. With create, missing
 * folders are added to b (with folder.created events); a missing one otherwise is
 * MB_ECONFLICT ("the parent folder does not exist"). *ids (optional) receives the chain of
 * folder ids from the root down, for the "into itself" check. */
int ns_folder_for_change(uint64_t sid, uint64_t owner, const char *dir, bool create, uint64_t uid,
                             db_batch *b, uint64_t *out_id, json_t *ids, int *created, mb_err *err)
{
    uint64_t cur = 0;
    if (ids)
        json_array_append_new(ids, json_integer(0));
    if (!*dir) {
        *out_id = 0;
        return 0;
    }
    bool creating = false;
    const char *p = dir;
    for (;;) {
        const char *s = strchr(p, '/');
        size_t l = s ? (size_t)(s - p) : strlen(p);
        char name[FS_NAME_MAX + 1];
        memcpy(name, p, l);
        name[l] = 0;
        json_t *ent = NULL;
        int rc = creating ? MB_ENOENT : folder_get(sid, cur, name, &ent);
        if (rc == MB_ENOENT) {
            if (!create)
                return err_set(err, MB_ECONFLICT, "the folder '%.*s' does not exist (create it, or use parents)",
                               (int)(p - dir + l), dir);
            creating = true;
            uint64_t id = ns_new_id();
            int64_t now = now_wall();
            json_t *rec = ns_folder_record(id, uid, now);
            char key[NS_KEYMAX];
            ns_dkey(key, sizeof key, sid, cur, name);
            db_batch_put_json(b, key, rec);
            json_decref(rec);
            char *sub = strndup(dir, (size_t)(p - dir + l));
            hook_emit_batch(b, "folder.created",
                            json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner,
                                      "path", sub, "user", (json_int_t)uid));
            free(sub);
            if (created)
                (*created)++;
            cur = id;
        } else if (rc) {
            return err_set(err, MB_EIO, "cannot read the folder entry for '%s'", dir);
        } else {
            if (!ns_is_folder(ent)) {
                json_decref(ent);
                return err_set(err, MB_ECONFLICT, "'%.*s' is a file, not a folder", (int)(p - dir + l), dir);
            }
            cur = (uint64_t)jint(ent, "id");
            json_decref(ent);
        }
        if (ids)
            json_array_append_new(ids, json_integer((json_int_t)cur));
        if (!s)
            break;
        p = s + 1;
    }
    *out_id = cur;
    return 0;
}

/* Children of folder pid in key (name) order: an array of [name, entry]. */
json_t *ns_children(uint64_t sid, uint64_t pid)
{
    char prefix[64], a[17], b[17];
    key_u64(a, sid);
    key_u64(b, pid);
    snprintf(prefix, sizeof prefix, "d/%s/%s/", a, b);
    size_t pl = strlen(prefix);
    json_t *arr = json_array();
    db_iter *it = db_iter_prefix(prefix, pl);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *e = json_loadb(v, vl, 0, NULL);
        if (!e)
            continue;
        json_array_append_new(arr, json_pack("[s#, o]", k + pl, (int)(kl - pl), e));
    }
    db_iter_free(it);
    return arr;
}

int ns_walk_ids(uint64_t sid, uint64_t id, const char *rel, int depth, ns_walk_fn fn, void *ud)
{
    if (depth > 4 * FS_DEPTH_MAX)
        return MB_EINTERNAL; /* a cycle would be a bug; never loop forever */
    json_t *kids = ns_children(sid, id);
    size_t i;
    json_t *kv;
    int rc = 0;
    json_array_foreach(kids, i, kv) {
        const char *name = json_string_value(json_array_get(kv, 0));
        json_t *e = json_array_get(kv, 1);
        char *r = ns_join(rel, name);
        rc = fn(id, name, e, r, ud);
        if (!rc && ns_is_folder(e))
            rc = ns_walk_ids(sid, (uint64_t)jint(e, "id"), r, depth + 1, fn, ud);
        free(r);
        if (rc)
            break;
    }
    json_decref(kids);
    return rc;
}

/* Resolve a folder (the root included) for reading. */
static int gather_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    json_array_append_new(ud, json_pack("[I, s, O, s]", (json_int_t)pid, name, e, rel));
    return 0;
}

json_t *ns_subtree(uint64_t sid, uint64_t id)
{
    json_t *sub = json_array();
    ns_walk_ids(sid, id, "", 0, gather_cb, sub);
    return sub;
}

int ns_folder_id(uint64_t sid, const char *np, uint64_t *id, mb_err *err)
{
    json_t *e;
    int rc = ns_resolve(sid, np, NULL, &e, err);
    if (rc)
        return rc;
    if (e && !ns_is_folder(e)) {
        json_decref(e);
        return err_set(err, MB_ECONFLICT, "'%s' is a file, not a folder", np);
    }
    *id = e ? (uint64_t)jint(e, "id") : 0;
    json_decref(e);
    return 0;
}

/* Remove every version of file fid (refcounts down into refs, deletes into b). The old
 * versions (all but `current`) leave usage here; the caller notes the current one's. */
void ns_drop_versions(txn *t, uint64_t sid, uint64_t fid, uint64_t current)
{
    char prefix[64], a[17], c[17];
    key_u64(a, sid);
    key_u64(c, fid);
    snprintf(prefix, sizeof prefix, "f/%s/%s/", a, c);
    size_t pl = strlen(prefix);
    db_iter *it = db_iter_prefix(prefix, pl);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *ver = json_loadb(v, vl, 0, NULL);
        txn_ref_chunks(t, json_object_get(ver, "chunks"), -1);
        char hex[17] = "";
        if (kl == pl + 16)
            memcpy(hex, k + pl, 16);
        if (strtoull(hex, NULL, 16) != current)
            txn_usage_versions(t, sid, -jint(ver, "size"));
        json_decref(ver);
        db_batch_del(t->b, k, kl);
    }
    db_iter_free(it);
}

/* Remove one version record of file fid (an overwrite that keeps no history drops the version
 * it replaces; older ones kept while versioning was on stay until deleted or thinned). */
void ns_drop_version(txn *t, uint64_t sid, uint64_t fid, uint64_t ver)
{
    char key[NS_KEYMAX];
    json_t *rec = NULL;
    ns_fkey(key, sizeof key, sid, fid, ver);
    if (db_get_json(key, &rec))
        return;
    txn_ref_chunks(t, json_object_get(rec, "chunks"), -1);
    json_decref(rec);
    db_batch_del(t->b, key, strlen(key));
}

bool ns_is_folder(const json_t *e) { return !strcmp(jstr(e, "type"), "folder"); }
