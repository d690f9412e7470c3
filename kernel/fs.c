/*
 * fs.c — the file operations (fs.h): stores as a user sees them, stat, list and walk, mkdir,
 * delete, move and copy, and the one opening every operation shares (fs_op_begin: may the
 * user reach the store, who owns it, the path normalised). The namespace they work on is
 * ns.c; the write pipeline fs_write.c; reads fs_read.c; fsck fsck.c. Every door (HTTP, tus,
 * FTP, modules through mb_api) goes through these calls, so names, filters (quotas, limits)
 * and events apply the same everywhere.
 *
 * A change is one transaction (txn.h): the filter runs first, without the lock, so a refused
 * change costs nothing; then under the commit lock the change re-resolves what it needs,
 * refuses what became impossible meanwhile, and puts its keys, refcount and usage deltas and
 * outbox events into the transaction, which commits them in one synced batch. Concurrent
 * changes of one path serialise at the lock and the last commit wins cleanly.
 *
 * Threads: any (HTTP workers, task workers, FTP jobs). Reads take no lock.
 */
#include "fs.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fs_op_begin(fs_op *op, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    memset(op, 0, sizeof *op);
    json_t *store = NULL;
    int rc = ns_store_access(u, sid, &store, err);
    if (rc)
        return rc;
    op->sid = sid;
    op->owner = (uint64_t)jint(store, "owner");
    op->uid = u ? u->id : 0;
    json_decref(store);
    return path ? fs_path_normalize(path, strlen(path), &op->path, err) : 0;
}

void fs_op_end(fs_op *op)
{
    free(op->path);
    op->path = NULL;
}

int fs_folder_begin(fs_op *op, const mb_user *u, uint64_t sid, const char *path, uint64_t *id, mb_err *err)
{
    int rc = fs_op_begin(op, u, sid, path, err);
    if (!rc && (rc = ns_folder_id(sid, op->path, id, err)))
        fs_op_end(op);
    return rc;
}

void fs_store_create_batch(db_batch *b, uint64_t id, uint64_t uid, const char *name)
{
    json_t *rec = json_pack("{s:i, s:I, s:I, s:s, s:I, s:s}", "v", 1, "id", (json_int_t)id, "owner", (json_int_t)uid,
                            "name", name, "created", (json_int_t)now_wall(), "backend", "local");
    char key[64], a[17], o[17];
    key_u64(a, id);
    key_u64(o, uid);
    snprintf(key, sizeof key, "s/%s", a);
    db_batch_put_json(b, key, rec);
    snprintf(key, sizeof key, "so/%s/%s", o, a);
    db_batch_put(b, key, strlen(key), "", 0);
    cluster_store_placed(b, id, uid);
    hook_emit_batch(b, "store.created",
                    json_pack("{s:I, s:I, s:s}", "store", (json_int_t)id, "owner", (json_int_t)uid, "name", name));
    json_decref(rec);
}

int fs_store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err)
{
    json_t *s = NULL;
    int rc = ns_store_access(u, sid, &s, err);
    if (rc)
        return rc;
    *out = ns_store_public(s);
    json_decref(s);
    return 0;
}

typedef struct {
    const mb_user *u;
    json_t *arr;
} list_ctx;

static void list_store_cb(json_t *s, void *ud)
{
    list_ctx *c = ud;
    if (ns_store_reachable(s, c->u))
        json_array_append_new(c->arr, ns_store_public(s));
    json_decref(s);
}

int fs_stores_list(const mb_user *u, json_t **out, mb_err *err)
{
    (void)err;
    list_ctx c = {u, json_array()};
    stores_each(u ? u->id : 0, list_store_cb, &c);
    stores_list_decorate(u, c.arr); /* marks the user's default store */
    *out = c.arr;
    return 0;
}

int fs_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, path, err);
    if (rc)
        return rc;
    char *np = op.path;
    json_t *e;
    rc = ns_resolve(sid, np, NULL, &e, err);
    if (!rc)
        *info = e ? ns_public_info(e, np) : ns_root_info();
    json_decref(e);
    fs_op_end(&op);
    return rc;
}

typedef struct {
    int (*fn)(const char *, const json_t *, void *);
    void *ud;
    const char *base;
} pub_walk;

static int pub_walk_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    (void)pid, (void)name;
    pub_walk *w = ud;
    char *full = ns_join(w->base, rel);
    json_t *info = ns_public_info(e, full);
    free(full);
    int rc = w->fn(rel, info, w->ud);
    json_decref(info);
    return rc;
}

int fs_walk(const mb_user *u, uint64_t sid, const char *path,
            int (*fn)(const char *relpath, const json_t *entry, void *ud), void *ud, mb_err *err)
{
    fs_op op;
    uint64_t id;
    int rc = fs_folder_begin(&op, u, sid, path, &id, err);
    if (rc)
        return rc;
    pub_walk w = {fn, ud, op.path};
    rc = ns_walk_ids(sid, id, "", 0, pub_walk_cb, &w);
    fs_op_end(&op);
    return rc;
}

typedef struct {
    json_t *entries;
    const char *dir;
    char *last; /* the last name put in (the next cursor) */
} page_ctx;

static int page_cb(const char *name, json_t *e, void *ud)
{
    page_ctx *p = ud;
    char *full = ns_join(p->dir, name);
    /* e was parsed for this call alone (ns_children_each): no copy needed */
    json_array_append(p->entries, ns_make_public(e, full));
    free(full);
    free(p->last);
    p->last = xstrdup(name);
    return 0;
}

static int list_cb(const char *rel, const json_t *e, void *ud)
{
    json_t *o = json_deep_copy(e);
    json_object_set_new(o, "relpath", json_string(rel));
    json_array_append_new(ud, o);
    return 0;
}

int fs_list(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out, mb_err *err)
{
    fs_op op;
    uint64_t id;
    int rc = fs_folder_begin(&op, u, sid, path, &id, err);
    if (rc)
        return rc;
    char *np = op.path;
    json_t *entries = json_array();
    if (recursive) {
        pub_walk w = {list_cb, entries, np};
        rc = ns_walk_ids(sid, id, "", 0, pub_walk_cb, &w);
    } else {
        page_ctx p = {entries, np, NULL};
        rc = ns_children_each(sid, id, NULL, 0, page_cb, &p, NULL);
        free(p.last);
    }
    *out = json_pack("{s:s, s:o}", "path", np, "entries", entries);
    fs_op_end(&op);
    return rc;
}

/* A cursor is the last name of a page in hex: opaque to clients, and valid whatever is added
 * or removed meanwhile, since the next page starts at the first name after it. */
static int cursor_decode(const char *c, char *name, mb_err *err)
{
    size_t n = strlen(c);
    if (n % 2 || n / 2 > FS_NAME_MAX)
        return err_set(err, MB_EINVAL, "cursor: not a cursor this server gave");
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (!isxdigit((unsigned char)c[2 * i]) || !isxdigit((unsigned char)c[2 * i + 1]) ||
            sscanf(c + 2 * i, "%2x", &v) != 1 || !v)
            return err_set(err, MB_EINVAL, "cursor: not a cursor this server gave");
        name[i] = (char)v;
    }
    name[n / 2] = 0;
    return 0;
}

int fs_list_page(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit, json_t **out,
                 mb_err *err)
{
    char after[FS_NAME_MAX + 1] = "";
    if (cursor && *cursor && cursor_decode(cursor, after, err))
        return MB_EINVAL;
    if (!limit)
        limit = FS_LIST_DEFAULT;
    if (limit > FS_LIST_MAX)
        limit = FS_LIST_MAX;
    fs_op op;
    uint64_t id;
    int rc = fs_folder_begin(&op, u, sid, path, &id, err);
    if (rc)
        return rc;
    json_t *entries = json_array();
    page_ctx p = {entries, op.path, NULL};
    bool more = false;
    rc = ns_children_each(sid, id, after, limit, page_cb, &p, &more);
    json_t *next = json_null();
    if (more && p.last) {
        size_t n = strlen(p.last);
        char *hex = xmalloc(2 * n + 1);
        hex_encode((const uint8_t *)p.last, n, hex);
        next = json_string(hex);
        free(hex);
    }
    free(p.last);
    *out = json_pack("{s:s, s:o, s:I, s:I, s:o}", "path", op.path, "entries", entries, "total",
                     (json_int_t)ns_child_count(sid, id), "limit", (json_int_t)limit, "next_cursor", next);
    fs_op_end(&op);
    return rc;
}

/* ===================================================== namespace changes === */

static json_t *op_payload(uint64_t sid, uint64_t owner, const mb_user *u)
{
    return json_pack("{s:I, s:I, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "user",
                     (json_int_t)(u ? u->id : 0));
}

int fs_mkdir(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err)
{
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, path, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    char *np = op.path;
    if (!*np) {
        fs_op_end(&op);
        return err_set(err, MB_EEXIST, "the root folder always exists");
    }
    const char *name;
    char *dir = ns_parent_of(np, &name);
    if (!(rc = ns_creatable(ns_missing(sid, dir), name, err))) {
        json_t *p = op_payload(sid, owner, u);
        json_object_set_new(p, "path", json_string(np));
        rc = hook_filter("folder.create", p, err);
        json_decref(p);
    }
    json_t *rec = NULL;
    if (!rc) {
        uint64_t uid = u ? u->id : 0, pid;
        txn c;
        txn_begin(&c, NULL);
        db_batch *b = c.b;
        rc = ns_folder_for_change(sid, owner, dir, flags & FS_PARENTS, uid, b, &pid, NULL, NULL, err);
        json_t *ex = NULL;
        if (!rc && ns_entry_get(sid, pid, name, &ex) == 0)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", np);
        json_decref(ex);
        if (!rc) {
            rec = ns_folder_record(ns_new_id(), uid, now_wall());
            char key[NS_KEYMAX];
            ns_dkey(key, sizeof key, sid, pid, name);
            db_batch_put_json(b, key, rec);
            hook_emit_batch(b, "folder.created",
                            json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner,
                                      "path", np, "user", (json_int_t)uid));
        }
        char what[512];
        snprintf(what, sizeof what, "the new folder '%s'", np);
        rc = txn_end(&c, rc, err, what);
    }
    if (!rc && info)
        *info = ns_public_info(rec, np);
    json_decref(rec);
    free(dir);
    fs_op_end(&op);
    return rc;
}

static int depth_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    (void)pid, (void)name;
    (void)e;
    int *max = ud, d = 1;
    for (const char *c = rel; *c; c++)
        d += *c == '/';
    if (d > *max)
        *max = d;
    return 0;
}

/* How many levels the subtree of folder id has (1: only direct children), walked in bounded
 * memory. */
static int subtree_depth(uint64_t sid, uint64_t id)
{
    int max = 0;
    ns_walk_ids(sid, id, "", 0, depth_cb, &max);
    return max;
}

static int path_depth(const char *p)
{
    if (!*p)
        return 0;
    int d = 1;
    for (; *p; p++)
        d += *p == '/';
    return d;
}

static void file_deleted_into(txn *t, uint64_t sid, uint64_t owner, uint64_t uid, json_t *e, const char *path)
{
    ns_drop_versions(t, sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
    txn_usage(t, sid, -jint(e, "size"), -1);
    hook_emit_batch(t->b, "file.deleted",
                    json_pack("{s:I, s:I, s:s, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner,
                              "path", path, "file_id", jint(e, "id"), "size", jint(e, "size"), "user",
                              (json_int_t)uid));
}

void fs_file_deleted(txn *t, json_t *e, const char *path, void *ud)
{
    fs_who *d = ud;
    file_deleted_into(t, d->sid, d->owner, d->uid, e, path);
}

/* Delete an entry (and, for a folder, everything below it) into b. The subtree is walked
 * (one entry in memory at a time); the batch holds its deletes. */
static void delete_into(txn *t, uint64_t sid, uint64_t owner, uint64_t uid, uint64_t pid, const char *name,
                        json_t *e, const char *path)
{
    db_batch *b = t->b;
    char key[NS_KEYMAX];
    if (ns_is_folder(e)) {
        fs_who d = {sid, owner, uid};
        ns_drop_subtree(t, sid, (uint64_t)jint(e, "id"), path, fs_file_deleted, &d);
        hook_emit_batch(b, "folder.deleted",
                        json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner,
                                  "path", path, "user", (json_int_t)uid));
    } else
        file_deleted_into(t, sid, owner, uid, e, path);
    ns_dkey(key, sizeof key, sid, pid, name);
    db_batch_del(b, key, strlen(key));
}

int fs_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err)
{
    return fs_delete_task(u, sid, path, flags, NULL, err);
}

/* A big folder's entry goes now, with the journal of what is left (fs_big.c). */
static uint64_t detach_big(txn *t, uint64_t sid, uint64_t owner, uint64_t uid, uint64_t pid, json_t *e,
                           const char *path)
{
    char key[NS_KEYMAX];
    ns_dkey(key, sizeof key, sid, pid, ns_last_name(path));
    db_batch_del(t->b, key, strlen(key));
    hook_emit_batch(t->b, "folder.deleted",
                    json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "path",
                              path, "user", (json_int_t)uid));
    return fs_big_journal(t, json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "op", "delete", "store", (json_int_t)sid,
                                       "owner", (json_int_t)owner, "user", (json_int_t)uid, "root", jint(e, "id"),
                                       "path", path));
}

int fs_delete_task(const mb_user *u, uint64_t sid, const char *path, int flags, uint64_t *task, mb_err *err)
{
    if (task)
        *task = 0;
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, path, err);
    if (rc)
        return rc;
    uint64_t owner = op.owner;
    char *np = op.path;
    if (!*np) {
        fs_op_end(&op);
        return err_set(err, MB_EINVAL, "path: the root folder cannot be deleted");
    }
    json_t *e = NULL;
    if ((rc = ns_resolve(sid, np, NULL, &e, err))) {
        fs_op_end(&op);
        return rc;
    }
    json_t *p = op_payload(sid, owner, u);
    json_object_set_new(p, "path", json_string(np));
    json_object_set_new(p, "type", json_string(jstr(e, "type")));
    json_object_set_new(p, "recursive", json_boolean(flags & FS_RECURSIVE));
    json_decref(e);
    e = NULL;
    rc = hook_filter("file.delete", p, err);
    json_decref(p);
    bool handled = rc == MB_HANDLED; /* the trash took it over (history.c) */
    if (handled)
        rc = 0;
    if (!rc && !handled) {
        txn c;
        txn_begin(&c, NULL);
        uint64_t pid;
        rc = ns_resolve(sid, np, &pid, &e, err);
        if (!rc && ns_is_folder(e) && !(flags & FS_RECURSIVE) && ns_has_children(sid, (uint64_t)jint(e, "id")))
            rc = err_set(err, MB_ECONFLICT, "the folder '%s' is not empty (delete it with recursive=true)", np);
        uint64_t jid = 0;
        if (!rc && ns_is_folder(e) && fs_big_over(sid, (uint64_t)jint(e, "id")))
            jid = detach_big(&c, sid, owner, u ? u->id : 0, pid, e, np);
        else if (!rc)
            delete_into(&c, sid, owner, u ? u->id : 0, pid, ns_last_name(np), e, np);
        rc = txn_end(&c, rc, err, "the delete");
        json_decref(e);
        if (!rc && jid)
            rc = fs_big_start(jid, u ? u->id : 0, task, false, err);
    }
    fs_op_end(&op);
    return rc;
}

/* Shared by move and copy: normalise both paths, run the filter, and under the lock find
 * the source, the destination folder and what is at the destination. */
typedef struct {
    char *from, *to;
    const char *to_name;
    char *to_dir;
    uint64_t owner, uid, src_pid, dst_pid;
    json_t *src, *dst, *chain;
} xfer;

static void xfer_free(xfer *x)
{
    free(x->from);
    free(x->to);
    free(x->to_dir);
    json_decref(x->src);
    json_decref(x->dst);
    json_decref(x->chain);
}

static int size_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    (void)pid, (void)name, (void)rel;
    if (!ns_is_folder(e)) {
        json_int_t *t = ud;
        t[0] += jint(e, "size");
        t[1]++;
    }
    return 0;
}

/* "size" and "files" the copy of `from` would add (0 if it does not resolve: the copy
 * fails later with the reason). */
static void copy_size(uint64_t sid, const char *from, json_t *p)
{
    json_int_t t[2] = {0, 0};
    json_t *e = NULL;
    mb_err ig = {0};
    if (ns_resolve(sid, from, NULL, &e, &ig) == 0 && e) {
        if (ns_is_folder(e))
            ns_walk_ids(sid, (uint64_t)jint(e, "id"), "", 0, size_cb, t);
        else {
            t[0] = jint(e, "size");
            t[1] = 1;
        }
    }
    json_decref(e);
    json_object_set_new(p, "size", json_integer(t[0]));
    json_object_set_new(p, "files", json_integer(t[1]));
}

static int xfer_prepare(const mb_user *u, uint64_t sid, const char *from, const char *to, const char *event,
                        xfer *x, mb_err *err)
{
    memset(x, 0, sizeof *x);
    fs_op op;
    int rc = fs_op_begin(&op, u, sid, from, err);
    x->owner = op.owner;
    x->uid = op.uid;
    x->from = op.path; /* xfer_free frees it */
    if (rc)
        return rc;
    if ((rc = fs_path_normalize(to, strlen(to), &x->to, err)))
        return rc;
    if (!*x->from)
        return err_set(err, MB_EINVAL, "from: the root folder cannot be moved or copied");
    if (!*x->to)
        return err_set(err, MB_EEXIST, "to: the root folder already exists");
    x->to_dir = ns_parent_of(x->to, &x->to_name);
    /* A name carried over unchanged is not a new name (moving an entry made before the rule). */
    if ((rc = ns_creatable(ns_missing(sid, x->to_dir), strcmp(x->to_name, ns_last_name(x->from)) ? x->to_name : NULL, err)))
        return rc;
    json_t *p = op_payload(sid, x->owner, u);
    json_object_set_new(p, "from", json_string(x->from));
    json_object_set_new(p, "to", json_string(x->to));
    if (!strcmp(event, "file.copy")) /* what the copy adds, for quotas and limits (stores.c) */
        copy_size(sid, x->from, p);
    rc = hook_filter(event, p, err);
    json_decref(p);
    return rc;
}

/* Under the lock: resolve source and destination, refuse what cannot be done. */
static int xfer_resolve(uint64_t sid, int flags, db_batch *b, xfer *x, bool copy, mb_err *err)
{
    int rc = ns_resolve(sid, x->from, &x->src_pid, &x->src, err);
    if (rc)
        return rc;
    x->chain = json_array();
    if ((rc = ns_folder_for_change(sid, x->owner, x->to_dir, flags & FS_PARENTS, x->uid, b, &x->dst_pid, x->chain,
                                NULL, err)))
        return rc;
    if (ns_is_folder(x->src)) {
        json_int_t id = jint(x->src, "id");
        size_t i;
        json_t *c;
        json_array_foreach(x->chain, i, c) if (json_integer_value(c) == id)
            return err_set(err, MB_ECONFLICT, "cannot %s the folder '%s' into itself", copy ? "copy" : "move",
                           x->from);
    }
    if (ns_entry_get(sid, x->dst_pid, x->to_name, &x->dst) == 0) {
        if (!copy && x->dst_pid == x->src_pid && !strcmp(x->to_name, ns_last_name(x->from)))
            return 0; /* onto itself: nothing to do */
        if (!(flags & FS_OVERWRITE))
            return err_set(err, MB_EEXIST, "'%s' already exists", x->to);
        if (ns_is_folder(x->dst) || ns_is_folder(x->src))
            return err_set(err, MB_ECONFLICT, "'%s' exists and only a file may replace a file", x->to);
    }
    return 0;
}

int fs_move(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info, mb_err *err)
{
    xfer x;
    int rc = xfer_prepare(u, sid, from, to, "file.move", &x, err);
    if (rc) {
        xfer_free(&x);
        return rc;
    }
    txn c;
    txn_begin(&c, NULL);
    rc = xfer_resolve(sid, flags, c.b, &x, false, err);
    bool noop = !rc && x.dst && x.dst_pid == x.src_pid && !strcmp(x.to_name, ns_last_name(x.from));
    /* Only a move deeper can nest the subtree past the limit: it was within it where it was. A
     * rename in place or a move up never walks the subtree (a walk of a folder of a million
     * files took 9-13 s, holding the commit lock). */
    if (!rc && !noop && ns_is_folder(x.src) && path_depth(x.to) > path_depth(x.from)) {
        if (path_depth(x.to) + subtree_depth(sid, (uint64_t)jint(x.src, "id")) > FS_DEPTH_MAX)
            rc = err_set(err, MB_EINVAL, "path: the move would nest deeper than %d levels", FS_DEPTH_MAX);
    }
    if (!rc && !noop) {
        char key[NS_KEYMAX];
        if (x.dst) /* replacing a file: it goes, with its versions */
            delete_into(&c, sid, x.owner, x.uid, x.dst_pid, x.to_name, x.dst, x.to);
        ns_dkey(key, sizeof key, sid, x.src_pid, ns_last_name(x.from));
        db_batch_del(c.b, key, strlen(key));
        ns_dkey(key, sizeof key, sid, x.dst_pid, x.to_name);
        db_batch_put_json(c.b, key, x.src);
        hook_emit_batch(c.b, ns_is_folder(x.src) ? "folder.moved" : "file.moved",
                        json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)x.owner, "from", x.from, "to", x.to, "type", jstr(x.src, "type"), "id",
                                  jint(x.src, "id"), "user", (json_int_t)x.uid));
    }
    rc = txn_end(&c, rc, err, noop ? NULL : "the move");
    if (!rc && info)
        *info = ns_public_info(x.src, x.to);
    xfer_free(&x);
    return rc;
}

int fs_copy_file_into(txn *t, uint64_t sid, json_t *e, uint64_t uid, int64_t now, json_t **out, mb_err *err)
{
    db_batch *b = t->b;
    char key[NS_KEYMAX];
    ns_fkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
    json_t *ver;
    if (db_get_json(key, &ver))
        return err_set(err, MB_EIO, "the current version of a file to copy is missing (run fsck)");
    uint64_t fid = ns_new_id();
    txn_ref_chunks(t, json_object_get(ver, "chunks"), +1);
    txn_usage(t, sid, jint(e, "size"), 1);
    json_object_set_new(ver, "author", json_integer((json_int_t)uid));
    json_object_set_new(ver, "time", json_integer(now));
    ns_fkey(key, sizeof key, sid, fid, 1);
    db_batch_put_json(b, key, ver);
    json_decref(ver);
    json_t *ne = json_deep_copy(e);
    json_object_set_new(ne, "id", json_integer((json_int_t)fid));
    json_object_set_new(ne, "version", json_integer(1));
    json_object_set_new(ne, "created", json_integer(now));
    json_object_set_new(ne, "created_by", json_integer((json_int_t)uid));
    json_object_set_new(ne, "updated", json_integer(now));
    json_object_set_new(ne, "updated_by", json_integer((json_int_t)uid));
    *out = ne;
    return 0;
}

int fs_copy(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info, mb_err *err)
{
    return fs_copy_task(u, sid, from, to, flags, info, NULL, err);
}

/* A big folder's copy: the journal only (fs_big.c builds it below a new id, then names it). */
static uint64_t copy_big(txn *t, uint64_t sid, const xfer *x, int64_t now, json_t **top)
{
    uint64_t nid = ns_new_id();
    *top = ns_folder_record(nid, x->uid, now);
    return fs_big_journal(t, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:O}", "op", "copy",
                                       "store", (json_int_t)sid, "owner", (json_int_t)x->owner, "user",
                                       (json_int_t)x->uid, "root", (json_int_t)nid, "src", jint(x->src, "id"), "dst",
                                       (json_int_t)x->dst_pid, "name", x->to_name, "dir", x->to_dir, "from", x->from,
                                       "to", x->to, "top", *top));
}

int fs_copy_task(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                 uint64_t *task, mb_err *err)
{
    if (task)
        *task = 0;
    xfer x;
    int rc = xfer_prepare(u, sid, from, to, "file.copy", &x, err);
    if (rc) {
        xfer_free(&x);
        return rc;
    }
    json_t *top = NULL;
    int64_t now = now_wall();
    txn c;
    txn_begin(&c, NULL);
    db_batch *b = c.b;
    rc = xfer_resolve(sid, flags, b, &x, true, err);
    if (!rc && x.dst && x.dst_pid == x.src_pid && !strcmp(x.to_name, ns_last_name(x.from)))
        rc = err_set(err, MB_EEXIST, "a file cannot be copied onto itself");
    if (!rc && x.dst)
        delete_into(&c, sid, x.owner, x.uid, x.dst_pid, x.to_name, x.dst, x.to);
    char key[NS_KEYMAX];
    uint64_t jid = 0;
    if (!rc && !ns_is_folder(x.src)) {
        rc = fs_copy_file_into(&c, sid, x.src, x.uid, now, &top, err);
    } else if (!rc && path_depth(x.to) + subtree_depth(sid, (uint64_t)jint(x.src, "id")) > FS_DEPTH_MAX) {
        rc = err_set(err, MB_EINVAL, "path: the copy would nest deeper than %d levels", FS_DEPTH_MAX);
    } else if (!rc && fs_big_over(sid, (uint64_t)jint(x.src, "id"))) {
        jid = copy_big(&c, sid, &x, now, &top);
    } else if (!rc) {
        json_t *sub = ns_subtree(sid, (uint64_t)jint(x.src, "id"));
        /* New ids for every folder; children follow their parent's new id. */
        json_t *idmap = json_object();
        uint64_t nid = ns_new_id();
        char ks[17];
        key_u64(ks, (uint64_t)jint(x.src, "id"));
        json_object_set_new(idmap, ks, json_integer((json_int_t)nid));
        top = ns_folder_record(nid, x.uid, now);
        size_t i;
        json_t *t;
        json_array_foreach(sub, i, t) {
            if (rc)
                break;
            json_t *se = json_array_get(t, 2), *ne = NULL;
            key_u64(ks, (uint64_t)json_integer_value(json_array_get(t, 0)));
            uint64_t npid = (uint64_t)json_integer_value(json_object_get(idmap, ks));
            if (ns_is_folder(se)) {
                uint64_t fid = ns_new_id();
                key_u64(ks, (uint64_t)jint(se, "id"));
                json_object_set_new(idmap, ks, json_integer((json_int_t)fid));
                ne = ns_folder_record(fid, x.uid, now);
            } else if ((rc = fs_copy_file_into(&c, sid, se, x.uid, now, &ne, err)))
                break;
            ns_dkey(key, sizeof key, sid, npid, json_string_value(json_array_get(t, 1)));
            db_batch_put_json(b, key, ne);
            json_decref(ne);
        }
        json_decref(idmap);
        json_decref(sub);
    }
    if (!rc && !jid) {
        ns_dkey(key, sizeof key, sid, x.dst_pid, x.to_name);
        db_batch_put_json(b, key, top);
        hook_emit_batch(b, ns_is_folder(x.src) ? "folder.copied" : "file.copied",
                        json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)x.owner, "from", x.from, "to", x.to, "type", jstr(x.src, "type"), "id",
                                  jint(top, "id"), "user", (json_int_t)x.uid));
    }
    rc = txn_end(&c, rc, err, "the copy");
    if (!rc && jid) /* with a task the copy is not there yet: no info */
        rc = fs_big_start(jid, x.uid, task, !task, err);
    if (!rc && info)
        *info = task && *task ? NULL : ns_public_info(top, x.to);
    json_decref(top);
    xfer_free(&x);
    return rc;
}

/* ============================================================== start === */

/* Accounts made before the file service existed get their default store now. Not in cluster
 * mode: there an account's Home is kept by the node that made it, and another node lists it
 * from there (cluster_fwd.c). */
static void ensure_default_stores(void)
{
    if (g_cfg->cluster_etcd)
        return;
    db_iter *it = db_iter_prefix("ui/", 3);
    db_batch *b = NULL;
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl != 19)
            continue;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "so/%.16s/", k + 3);
        db_iter *s = db_iter_prefix(prefix, strlen(prefix));
        bool has = db_iter_next(s);
        db_iter_free(s);
        if (has)
            continue;
        char hex[17];
        memcpy(hex, k + 3, 16);
        hex[16] = 0;
        if (!b)
            b = db_batch_new();
        fs_store_create_batch(b, db_next_id("store"), strtoull(hex, NULL, 16), "Home"); /* before any cluster join */
    }
    db_iter_free(it);
    if (b) { /* one transaction, like every change; it wakes the outbox for store.created */
        txn t;
        txn_begin(&t, b);
        mb_err e = {0};
        if (txn_end(&t, 0, &e, "the default stores"))
            log_error("%s", e.msg);
    }
}

int fs_init(mb_err *err) /* after blob_init (main.c opens the chunk store with the database) */
{
    int rc;
    if ((rc = ctype_init(err)))
        return rc;
    txn_pre_commit(ns_count_batch); /* every change's batch keeps the dn/ child counters */
    ensure_default_stores();
    if ((rc = fs_big_init(err))) /* unfinished big deletes and copies go on */
        return rc;
    if ((rc = bulk_init(err)))
        return rc;
    return migrate_init(err); /* an unfinished store migration goes on */
}

void fs_fini(void)
{
    ctype_fini(); /* first: its thread records types in transactions */
    gc_fini();
    blob_fini();
}
