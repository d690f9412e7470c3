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
#include <malloc.h>
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
json_t *ns_make_public(json_t *e, const char *path)
{
    json_object_del(e, "v");
    json_object_set_new(e, "path", json_string(path));
    json_object_set_new(e, "name", json_string(ns_last_name(path)));
    return e;
}

json_t *ns_public_info(const json_t *e, const char *path) { return ns_make_public(json_deep_copy(e), path); }

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
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *s = NULL;
    int rc = db_get_json_shared(key, &s); /* *rec is shared: callers only read it */
    if (rc == MB_ENOENT || (rc == 0 && u && (uint64_t)jint(s, "owner") != u->id) ||
        (rc == 0 && !ns_store_reachable(s, u))) { /* stores.c: provisioning or deleting */
        json_decref(s);
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    }
    if (rc)
        return err_set(err, MB_EIO, "cannot read store %llu", (unsigned long long)sid);
    if (cluster_store_elsewhere(sid)) { /* a replica's copy, or one left by a move: its keeper's */
        json_decref(s);
        return err_set(err, MB_EBUSY, "store %llu is kept by another node", (unsigned long long)sid);
    }
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

static size_t kids_prefix(char *out, size_t n, uint64_t sid, uint64_t pid)
{
    char a[17], b[17];
    key_u64(a, sid);
    key_u64(b, pid);
    return (size_t)snprintf(out, n, "d/%s/%s/", a, b);
}

/* Children of folder pid in key (name) order, straight from one iterator: nothing but the
 * current entry is in memory, so a folder of any size costs the same. */
int ns_children_each(uint64_t sid, uint64_t pid, const char *after, size_t limit, ns_child_fn fn, void *ud,
                     bool *more)
{
    char prefix[64], key[NS_KEYMAX];
    size_t pl = kids_prefix(prefix, sizeof prefix, sid, pid);
    db_iter *it = db_iter_prefix(prefix, pl);
    if (after && *after) {
        /* The first name after `after`: its key with a NUL appended sorts right behind it
         * (names hold no NUL), whether `after` itself still exists or not. */
        size_t kl = (size_t)snprintf(key, sizeof key, "%s%s", prefix, after);
        db_iter_seek(it, key, kl + 1 < sizeof key ? kl + 1 : kl);
    }
    size_t n = 0;
    int rc = 0;
    if (more)
        *more = false;
    while (db_iter_next(it)) {
        if (limit && n == limit) {
            if (more)
                *more = true;
            break;
        }
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *e = json_loadb(v, vl, 0, NULL);
        if (!e || kl - pl > FS_NAME_MAX) {
            json_decref(e);
            continue;
        }
        char name[FS_NAME_MAX + 1];
        memcpy(name, k + pl, kl - pl);
        name[kl - pl] = 0;
        rc = fn(name, e, ud);
        json_decref(e);
        n++;
        if (rc)
            break;
    }
    db_iter_free(it);
    return rc;
}

static int children_cb(const char *name, json_t *e, void *ud)
{
    json_array_append_new(ud, json_pack("[s, O]", name, e));
    return 0;
}

json_t *ns_children(uint64_t sid, uint64_t pid)
{
    json_t *arr = json_array();
    ns_children_each(sid, pid, NULL, 0, children_cb, arr, NULL);
    return arr;
}

bool ns_has_children(uint64_t sid, uint64_t pid)
{
    char prefix[64];
    size_t pl = kids_prefix(prefix, sizeof prefix, sid, pid);
    db_iter *it = db_iter_prefix(prefix, pl);
    bool any = db_iter_next(it);
    db_iter_free(it);
    return any;
}

/* ------------------------------------------------------ child counters --- */
/* dn/<sid16>/<pid16>: how many entries folder pid holds (decimal text), absent when it holds
 * none or when it was never counted (folders written before the counter: counted by one scan
 * the first time). Kept by ns_count_batch, which sees every change's batch under the commit
 * lock (txn_pre_commit), so the count moves in the same batch as the entries. */
static void dnkey(char *out, size_t n, const char *sp, size_t spl)
{
    snprintf(out, n, "dn/%.*s", (int)spl, sp);
}

static int64_t count_scan(const char *prefix, size_t pl)
{
    int64_t n = 0;
    db_iter *it = db_iter_prefix(prefix, pl);
    while (db_iter_next(it))
        n++;
    db_iter_free(it);
    return n;
}

static int64_t count_get(const char *sp, size_t spl)
{
    char key[64], *v = NULL;
    size_t vl;
    dnkey(key, sizeof key, sp, spl);
    if (db_get(key, strlen(key), &v, &vl) == 0) {
        char buf[24] = "";
        memcpy(buf, v, vl < sizeof buf - 1 ? vl : sizeof buf - 1);
        free(v);
        return strtoll(buf, NULL, 10);
    }
    char prefix[64];
    int pl = snprintf(prefix, sizeof prefix, "d/%.*s/", (int)spl, sp);
    return count_scan(prefix, (size_t)pl);
}

int64_t ns_child_count(uint64_t sid, uint64_t pid)
{
    char sp[40], a[17], b[17];
    key_u64(a, sid);
    key_u64(b, pid);
    int l = snprintf(sp, sizeof sp, "%s/%s", a, b);
    return count_get(sp, (size_t)l);
}

typedef struct {
    json_t *seen;  /* d/ key -> true/false: exists after the batch's operations so far */
    json_t *delta; /* "<sid16>/<pid16>" -> children added minus removed */
} count_ctx;

static void count_op(count_ctx *c, const char *k, size_t kl, bool put)
{
    if (kl < 2 + 34 + 1 || memcmp(k, "d/", 2) || k[18] != '/' || k[35] != '/')
        return;
    char *key = strndup(k, kl);
    json_t *s = json_object_get(c->seen, key);
    bool existed;
    if (s)
        existed = json_is_true(s);
    else {
        char *v = NULL;
        size_t vl;
        existed = db_get(k, kl, &v, &vl) == 0;
        free(v);
    }
    json_object_set_new(c->seen, key, json_boolean(put));
    free(key);
    int d = put && !existed ? 1 : !put && existed ? -1 : 0;
    if (!d)
        return;
    char parent[34];
    memcpy(parent, k + 2, 33);
    parent[33] = 0;
    json_object_set_new(c->delta, parent, json_integer(jint(c->delta, parent) + d));
}

static void count_put(void *ud, const char *k, size_t kl, const char *v, size_t vl)
{
    (void)v, (void)vl;
    count_op(ud, k, kl, true);
}

static void count_del(void *ud, const char *k, size_t kl) { count_op(ud, k, kl, false); }

void ns_count_batch(db_batch *b)
{
    count_ctx c = {json_object(), json_object()};
    db_batch_each(b, count_put, count_del, &c);
    const char *sp;
    json_t *d;
    json_object_foreach(c.delta, sp, d) {
        if (!json_integer_value(d))
            continue;
        int64_t n = count_get(sp, strlen(sp)) + json_integer_value(d);
        char key[64], num[24];
        dnkey(key, sizeof key, sp, strlen(sp));
        if (n <= 0) /* empty: no record (an empty folder's scan is one seek) */
            db_batch_del(b, key, strlen(key));
        else {
            int l = snprintf(num, sizeof num, "%lld", (long long)n);
            db_batch_put(b, key, strlen(key), num, (size_t)l);
        }
    }
    json_decref(c.seen);
    json_decref(c.delta);
}

/* ---------------------------------------------------------------- walks --- */

/* A depth-first walk as a pull: one open iterator per level (a stack of at most
 * 4 * FS_DEPTH_MAX), so memory grows with the depth, never with the number of entries, and a
 * streamed answer can take one entry at a time. */
typedef struct {
    db_iter *it;
    size_t pl;
    uint64_t id;
    char *rel;
} wframe;

struct ns_walker {
    uint64_t sid;
    wframe st[4 * FS_DEPTH_MAX + 1];
    int n;
    json_t *e;   /* the entry last returned */
    char *rel;   /* its path below the walk's folder */
    char name[FS_NAME_MAX + 1];
    uint64_t pid;
    bool broken; /* deeper than any path may be: a cycle, which would be a bug */
};

static void wpush(ns_walker *w, uint64_t id, const char *rel)
{
    char prefix[64];
    wframe *f = &w->st[w->n++];
    f->pl = kids_prefix(prefix, sizeof prefix, w->sid, id);
    f->it = db_iter_prefix(prefix, f->pl);
    f->id = id;
    f->rel = xstrdup(rel);
}

static void wpop(ns_walker *w)
{
    wframe *f = &w->st[--w->n];
    db_iter_free(f->it);
    free(f->rel);
}

ns_walker *ns_walker_new(uint64_t sid, uint64_t id)
{
    ns_walker *w = xcalloc(1, sizeof *w);
    w->sid = sid;
    wpush(w, id, "");
    return w;
}

bool ns_walker_next(ns_walker *w, uint64_t *pid, const char **name, json_t **e, const char **rel)
{
    json_decref(w->e);
    w->e = NULL;
    free(w->rel);
    w->rel = NULL;
    while (w->n) {
        wframe *f = &w->st[w->n - 1];
        if (!db_iter_next(f->it)) {
            wpop(w);
            continue;
        }
        size_t kl, vl;
        const char *k = db_iter_key(f->it, &kl);
        const char *v = db_iter_val(f->it, &vl);
        json_t *ent = json_loadb(v, vl, 0, NULL);
        if (!ent || kl - f->pl > FS_NAME_MAX) {
            json_decref(ent);
            continue;
        }
        memcpy(w->name, k + f->pl, kl - f->pl);
        w->name[kl - f->pl] = 0;
        w->e = ent;
        w->pid = f->id;
        w->rel = ns_join(f->rel, w->name);
        if (ns_is_folder(ent)) { /* a folder before what it holds */
            if (w->n == (int)(sizeof w->st / sizeof w->st[0])) {
                w->broken = true;
                break;
            }
            wpush(w, (uint64_t)jint(ent, "id"), w->rel);
        }
        *pid = w->pid;
        *name = w->name;
        *e = w->e;
        *rel = w->rel;
        return true;
    }
    return false;
}

bool ns_walker_broken(const ns_walker *w) { return w->broken; }

void ns_walker_free(ns_walker *w)
{
    if (!w)
        return;
    while (w->n)
        wpop(w);
    json_decref(w->e);
    free(w->rel);
    free(w);
}

int ns_walk_ids(uint64_t sid, uint64_t id, const char *rel, int depth, ns_walk_fn fn, void *ud)
{
    (void)depth;
    ns_walker *w = ns_walker_new(sid, id);
    uint64_t pid;
    const char *name, *r;
    json_t *e;
    int rc = 0;
    size_t n = 0;
    while (!rc && ns_walker_next(w, &pid, &name, &e, &r)) {
        char *full = ns_join(rel, r);
        rc = fn(pid, name, e, full, ud);
        free(full);
        n++;
    }
    if (!rc && ns_walker_broken(w))
        rc = MB_EINTERNAL; /* a cycle would be a bug; never loop forever */
    ns_walker_free(w);
    ns_trim(n);
    return rc;
}

/* glibc keeps freed memory in its arenas; after a burst (a walk over a big subtree, the batch
 * that deletes it) give it back, so one request on a big folder does not keep the server big. */
void ns_trim(size_t entries)
{
    if (entries >= NS_TRIM_AFTER)
        malloc_trim(0);
}

typedef struct {
    txn *t;
    uint64_t sid;
    const char *path;
    ns_drop_fn fn;
    void *ud;
} drop_ctx;

static int drop_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    drop_ctx *d = ud;
    char key[NS_KEYMAX];
    ns_dkey(key, sizeof key, d->sid, pid, name);
    db_batch_del(d->t->b, key, strlen(key));
    if (!ns_is_folder(e)) {
        char *full = ns_join(d->path, rel);
        d->fn(d->t, e, full, d->ud);
        free(full);
    }
    return 0;
}

void ns_drop_subtree(txn *t, uint64_t sid, uint64_t id, const char *path, ns_drop_fn fn, void *ud)
{
    drop_ctx d = {t, sid, path, fn, ud};
    ns_walk_ids(sid, id, "", 0, drop_cb, &d);
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
