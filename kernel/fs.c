/*
 * fs.c — the file service (DESIGN.md: Storage; issue 3): stores, the namespace, file
 * versions made of content-defined chunks, the write pipeline, reads, move/copy/delete and
 * fsck. Every door (HTTP, tus, FTP, modules through mb_api) goes through these calls, so
 * names, filters (quotas, limits) and events apply the same everywhere.
 *
 * Layout (docs/storage.md "## Files"):
 *   s/<sid16>                      store record
 *   so/<uid16>/<sid16>             the owner's index of stores
 *   d/<sid16>/<pid16>/<name>       a directory entry: <name> inside folder <pid> (root = 0)
 *   f/<sid16>/<fid16>/<ver16>      a file version: size, sha256, ordered chunk list
 *   c/<sha256>                     chunk refcount (blob.c)
 * Folders and files have ids from reserved blocks (db_alloc_id); entries are keyed by their
 * parent's id, not its path: listing a folder is one prefix scan, and moving or renaming a folder of any size
 * is one delete plus one put in one batch — its subtree follows because it hangs off the id.
 * A file id is stable across renames and moves (the versioning module keys on it).
 *
 * Write order (DESIGN.md): chunks are written durably while the body streams in (blob.c;
 * small ones ride in the commit batch instead); then one batch commits the version, the
 * refcounts, the directory entry and the outbox event, and is durable by group commit when
 * blob_unlock returns (blob_commit, db.c); only then does the caller reply. A crash before
 * the batch leaves the old file and some orphan chunks (collected after the grace); after
 * it, the new file.
 *
 * Threads: any (HTTP workers, task workers, FTP jobs). A big upload also has a store thread
 * of its own (store_main) that hashes, writes and syncs its chunk files in order while the
 * caller cuts the next ones; fs_writer says which fields each side owns. Every namespace change is a read-modify-write
 * done under blob_lock() (the one commit lock, which also guards refcounts), so concurrent
 * writers of one path serialise at commit time and the last commit wins cleanly; bodies are
 * streamed and chunks written without any lock. Reads take no lock: each LevelDB read is
 * consistent and entries point only at committed versions. Content types: ctype.c.
 */
#include "fs.h"
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#define HEAD_BYTES 8192
#define WBUF_CAP (2 * CHUNK_MAX)


/* ============================================================== names === */

int fs_name_normalize(const char *in, size_t n, char *out, mb_err *err)
{
    if (n == 0)
        return err_set(err, MB_EINVAL, "name: may not be empty");
    if (memchr(in, 0, n))
        return err_set(err, MB_EINVAL, "name: may not contain NUL");
    if (memchr(in, '/', n))
        return err_set(err, MB_EINVAL, "name: may not contain '/'");
    if (n > 4 * FS_NAME_MAX) /* NFC never shrinks text by more than this; don't normalise a novel */
        return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
    if (!utf8_valid(in, n))
        return err_set(err, MB_EINVAL, "name: is not valid UTF-8");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (unsigned char)in[i + 1] < 0xa0))
            return err_set(err, MB_EINVAL, "name: may not contain control characters");
    }
    /* NFC through ICU: UTF-8 -> UTF-16, quick check, normalise only when needed. */
    UErrorCode ue = U_ZERO_ERROR;
    const UNormalizer2 *nfc = unorm2_getNFCInstance(&ue);
    UChar src[4 * FS_NAME_MAX + 1], dst[8 * FS_NAME_MAX + 1];
    int32_t slen = 0;
    u_strFromUTF8(src, (int32_t)(sizeof src / sizeof src[0]), &slen, in, (int32_t)n, &ue);
    if (U_FAILURE(ue))
        return err_set(err, MB_EINVAL, "name: is not valid UTF-8");
    const UChar *res = src;
    int32_t rlen = slen;
    if (!unorm2_isNormalized(nfc, src, slen, &ue)) {
        ue = U_ZERO_ERROR;
        rlen = unorm2_normalize(nfc, src, slen, dst, (int32_t)(sizeof dst / sizeof dst[0]), &ue);
        if (U_FAILURE(ue))
            return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
        res = dst;
    }
    ue = U_ZERO_ERROR;
    int32_t olen = 0;
    u_strToUTF8(out, FS_NAME_MAX + 1, &olen, res, rlen, &ue);
    if (U_FAILURE(ue) || ue == U_STRING_NOT_TERMINATED_WARNING || olen > FS_NAME_MAX)
        return err_set(err, MB_EINVAL, "name: may be at most %d bytes", FS_NAME_MAX);
    out[olen] = 0;
    if (!strcmp(out, "."))
        return err_set(err, MB_EINVAL, "name: may not be '.'");
    if (!strcmp(out, ".."))
        return err_set(err, MB_EINVAL, "name: may not be '..'");
    return 0;
}

/* Formatting characters refused in new names: each can make a name show as something it is not
 * (bidi embeddings, overrides and isolates reorder what follows; a BOM is invisible; the
 * separators break a name across lines; U+206A..F are deprecated). Zero-width (non-)joiners and
 * spaces and the bidi marks are not here: Persian, Indic scripts, emoji sequences and Thai need
 * them, they cannot reorder text, and the web page marks them visibly. */
static const struct {
    uint32_t lo, hi;
    const char *what;
} fs_refused_chars[] = {
    {0x2028, 0x2028, "LINE SEPARATOR"},
    {0x2029, 0x2029, "PARAGRAPH SEPARATOR"},
    {0x202A, 0x202A, "LEFT-TO-RIGHT EMBEDDING"},
    {0x202B, 0x202B, "RIGHT-TO-LEFT EMBEDDING"},
    {0x202C, 0x202C, "POP DIRECTIONAL FORMATTING"},
    {0x202D, 0x202D, "LEFT-TO-RIGHT OVERRIDE"},
    {0x202E, 0x202E, "RIGHT-TO-LEFT OVERRIDE"},
    {0x2066, 0x2066, "LEFT-TO-RIGHT ISOLATE"},
    {0x2067, 0x2067, "RIGHT-TO-LEFT ISOLATE"},
    {0x2068, 0x2068, "FIRST STRONG ISOLATE"},
    {0x2069, 0x2069, "POP DIRECTIONAL ISOLATE"},
    {0x206A, 0x206F, "a deprecated format character"},
    {0xFEFF, 0xFEFF, "ZERO WIDTH NO-BREAK SPACE (byte order mark)"},
    {0xFFF9, 0xFFFB, "an interlinear annotation character"},
};

int fs_name_creatable(const char *name, mb_err *err)
{
    const unsigned char *p = (const unsigned char *)name;
    while (*p) {
        uint32_t cp = *p;
        int len = 1;
        if (cp >= 0xf0)
            cp &= 0x07, len = 4;
        else if (cp >= 0xe0)
            cp &= 0x0f, len = 3;
        else if (cp >= 0xc0)
            cp &= 0x1f, len = 2;
        for (int i = 1; i < len && (p[i] & 0xc0) == 0x80; i++)
            cp = cp << 6 | (p[i] & 0x3f);
        for (size_t i = 0; i < sizeof fs_refused_chars / sizeof fs_refused_chars[0]; i++)
            if (cp >= fs_refused_chars[i].lo && cp <= fs_refused_chars[i].hi)
                return err_set(err, MB_EINVAL,
                               "name: may not contain U+%04X %s: it can make the name show as something it is not",
                               (unsigned)cp, fs_refused_chars[i].what);
        for (int i = 0; i < len && *p; i++)
            p++;
    }
    return 0;
}

int fs_path_normalize(const char *in, size_t n, char **out, mb_err *err)
{
    if (n > FS_PATH_MAX)
        return err_set(err, MB_EINVAL, "path: may be at most %d bytes", FS_PATH_MAX);
    if (memchr(in, 0, n))
        return err_set(err, MB_EINVAL, "path: may not contain NUL");
    char *res = xmalloc(FS_PATH_MAX + FS_NAME_MAX + 2);
    size_t len = 0;
    int depth = 0;
    const char *p = in, *end = in + n;
    while (p < end) {
        const char *s = memchr(p, '/', (size_t)(end - p));
        const char *e = s ? s : end;
        if (e > p) {
            char name[FS_NAME_MAX + 1];
            int rc = fs_name_normalize(p, (size_t)(e - p), name, err);
            if (rc) {
                free(res);
                return rc;
            }
            if (++depth > FS_DEPTH_MAX) {
                free(res);
                return err_set(err, MB_EINVAL, "path: may have at most %d levels", FS_DEPTH_MAX);
            }
            size_t l = strlen(name);
            if (len + l + 1 > FS_PATH_MAX) {
                free(res);
                return err_set(err, MB_EINVAL, "path: may be at most %d bytes", FS_PATH_MAX);
            }
            if (len)
                res[len++] = '/';
            memcpy(res + len, name, l);
            len += l;
        }
        p = s ? s + 1 : end;
    }
    res[len] = 0;
    *out = res;
    return 0;
}

/* ======================================================== small helpers === */

/* File and folder ids: unique for the life of the database, small enough to be exact as
 * JSON numbers in a browser (2^53), stable across renames. */
static uint64_t new_id(void) { return db_alloc_id("entry"); }

static void dkey(char *out, size_t n, uint64_t sid, uint64_t pid, const char *name)
{
    char a[17], b[17];
    key_u64(a, sid);
    key_u64(b, pid);
    snprintf(out, n, "d/%s/%s/%s", a, b, name);
}

static void fkey(char *out, size_t n, uint64_t sid, uint64_t fid, uint64_t ver)
{
    char a[17], b[17], c[17];
    key_u64(a, sid);
    key_u64(b, fid);
    key_u64(c, ver);
    snprintf(out, n, "f/%s/%s/%s", a, b, c);
}

#define KEYMAX (2 * FS_NAME_MAX + 64)

static json_int_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}
static bool is_folder(const json_t *e) { return !strcmp(jstr(e, "type"), "folder"); }

static const char *last_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static char *join(const char *a, const char *b)
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
static json_t *public_info(const json_t *e, const char *path)
{
    json_t *o = json_deep_copy(e);
    json_object_del(o, "v");
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "name", json_string(last_name(path)));
    return o;
}

static json_t *root_info(void)
{
    return json_pack("{s:s, s:s, s:s, s:i}", "path", "", "name", "", "type", "folder", "id", 0);
}

/* ============================================================= stores === */

static json_t *store_public(const json_t *s)
{
    json_t *o = json_deep_copy(s);
    json_object_del(o, "v");
    return o;
}

void fs_store_create_batch(db_batch *b, uint64_t uid, const char *name, uint64_t *sid)
{
    uint64_t id = db_next_id("store");
    json_t *rec = json_pack("{s:i, s:I, s:I, s:s, s:I, s:s}", "v", 1, "id", (json_int_t)id, "owner", (json_int_t)uid,
                            "name", name, "created", (json_int_t)now_wall(), "backend", "local");
    char key[64], a[17], o[17];
    key_u64(a, id);
    key_u64(o, uid);
    snprintf(key, sizeof key, "s/%s", a);
    db_batch_put_json(b, key, rec);
    snprintf(key, sizeof key, "so/%s/%s", o, a);
    db_batch_put(b, key, strlen(key), "", 0);
    hook_emit_batch(b, "store.created",
                    json_pack("{s:I, s:I, s:s}", "store", (json_int_t)id, "owner", (json_int_t)uid, "name", name));
    json_decref(rec);
    if (sid)
        *sid = id;
}

/* The store record if u may reach it; another user's store is indistinguishable from none. */
static int store_access(const mb_user *u, uint64_t sid, json_t **rec, mb_err *err)
{
    if (rec)
        *rec = NULL;
    char key[32], a[17];
    key_u64(a, sid);
    snprintf(key, sizeof key, "s/%s", a);
    json_t *s = NULL;
    int rc = db_get_json_shared(key, &s); /* *rec is shared: callers only read it */
    if (rc == MB_ENOENT || (rc == 0 && u && (uint64_t)jint(s, "owner") != u->id) ||
        (rc == 0 && !stores_reachable(s, u))) { /* stores.c: provisioning or deleting */
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

int fs_store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err)
{
    json_t *s = NULL;
    int rc = store_access(u, sid, &s, err);
    if (rc)
        return rc;
    *out = store_public(s);
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
    if (stores_reachable(s, c->u))
        json_array_append_new(c->arr, store_public(s));
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

/* ========================================================== namespace === */

/* Read the entry `name` in folder pid; MB_ENOENT if absent. */
static int entry_get(uint64_t sid, uint64_t pid, const char *name, json_t **e)
{
    char key[KEYMAX];
    dkey(key, sizeof key, sid, pid, name);
    return db_get_json(key, e);
}

/* The same, shared from the decoded-record cache (db.c): for the folders along a path,
 * which are only looked at. */
static int folder_get(uint64_t sid, uint64_t pid, const char *name, json_t **e)
{
    char key[KEYMAX];
    dkey(key, sizeof key, sid, pid, name);
    return db_get_json_shared(key, e);
}

/* Resolve a normalised path to its entry. For the root, *e is NULL and *id 0. *pid is the
 * parent folder's id. */
static int resolve(uint64_t sid, const char *path, uint64_t *pid, json_t **e, mb_err *err)
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
        int rc = s ? folder_get(sid, cur, name, &ent) : entry_get(sid, cur, name, &ent);
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
        if (!is_folder(ent)) {
            json_decref(ent);
            return err_set(err, MB_ECONFLICT, "'%.*s' is a file, not a folder", (int)(p - path + l), path);
        }
        cur = (uint64_t)jint(ent, "id");
        json_decref(ent);
        p = s + 1;
    }
}

/* Split "a/b/c" into "a/b" (malloc'd) and "c" (points into path). */
static char *parent_of(const char *path, const char **name)
{
    const char *s = strrchr(path, '/');
    *name = s ? s + 1 : path;
    return s ? strndup(path, (size_t)(s - path)) : xstrdup("");
}

/* The names a change would create must pass fs_name_creatable: `name` (NULL: none) and each
 * name of `missing_dir` (NULL: the parent exists), a folder that parents=true would make.
 * Checked before the change, so a refused name costs no upload; entries made before the rule
 * keep their names and stay reachable, movable and writable. */
static int creatable(const char *missing_dir, const char *name, mb_err *err)
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
static const char *missing(uint64_t sid, const char *dir)
{
    json_t *e = NULL;
    mb_err scratch = {0};
    int rc = *dir ? resolve(sid, dir, NULL, &e, &scratch) : 0;
    json_decref(e);
    return rc == MB_ENOENT ? dir : NULL;
}

static json_t *folder_record(uint64_t id, uint64_t uid, int64_t now)
{
    return json_pack("{s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "v", 1, "type", "folder", "id", (json_int_t)id,
                     "mtime", (json_int_t)now, "created", (json_int_t)now, "created_by", (json_int_t)uid, "updated",
                     (json_int_t)now, "updated_by", (json_int_t)uid);
}

/* Resolve the folder `dir` for a change, under the commit lock. With create, missing
 * folders are added to b (with folder.created events); a missing one otherwise is
 * MB_ECONFLICT ("the parent folder does not exist"). *ids (optional) receives the chain of
 * folder ids from the root down, for the "into itself" check. */
static int folder_for_change(uint64_t sid, uint64_t owner, const char *dir, bool create, uint64_t uid,
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
            uint64_t id = new_id();
            int64_t now = now_wall();
            json_t *rec = folder_record(id, uid, now);
            char key[KEYMAX];
            dkey(key, sizeof key, sid, cur, name);
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
            if (!is_folder(ent)) {
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
static json_t *children(uint64_t sid, uint64_t pid)
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

/* Depth-first walk below folder id; fn(pid, name, entry, relpath, ud). */
typedef int (*walk_fn)(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud);

static int walk_ids(uint64_t sid, uint64_t id, const char *rel, int depth, walk_fn fn, void *ud)
{
    if (depth > 4 * FS_DEPTH_MAX)
        return MB_EINTERNAL; /* a cycle would be a bug; never loop forever */
    json_t *kids = children(sid, id);
    size_t i;
    json_t *kv;
    int rc = 0;
    json_array_foreach(kids, i, kv) {
        const char *name = json_string_value(json_array_get(kv, 0));
        json_t *e = json_array_get(kv, 1);
        char *r = join(rel, name);
        rc = fn(id, name, e, r, ud);
        if (!rc && is_folder(e))
            rc = walk_ids(sid, (uint64_t)jint(e, "id"), r, depth + 1, fn, ud);
        free(r);
        if (rc)
            break;
    }
    json_decref(kids);
    return rc;
}

int fs_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err)
{
    int rc = store_access(u, sid, NULL, err);
    if (rc)
        return rc;
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    json_t *e;
    rc = resolve(sid, np, NULL, &e, err);
    if (!rc)
        *info = e ? public_info(e, np) : root_info();
    json_decref(e);
    free(np);
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
    char *full = join(w->base, rel);
    json_t *info = public_info(e, full);
    free(full);
    int rc = w->fn(rel, info, w->ud);
    json_decref(info);
    return rc;
}

/* Resolve a folder (the root included) for reading. */
static int folder_id(uint64_t sid, const char *np, uint64_t *id, mb_err *err)
{
    json_t *e;
    int rc = resolve(sid, np, NULL, &e, err);
    if (rc)
        return rc;
    if (e && !is_folder(e)) {
        json_decref(e);
        return err_set(err, MB_ECONFLICT, "'%s' is a file, not a folder", np);
    }
    *id = e ? (uint64_t)jint(e, "id") : 0;
    json_decref(e);
    return 0;
}

int fs_walk(const mb_user *u, uint64_t sid, const char *path,
            int (*fn)(const char *relpath, const json_t *entry, void *ud), void *ud, mb_err *err)
{
    int rc = store_access(u, sid, NULL, err);
    if (rc)
        return rc;
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    uint64_t id;
    rc = folder_id(sid, np, &id, err);
    if (!rc) {
        pub_walk w = {fn, ud, np};
        rc = walk_ids(sid, id, "", 0, pub_walk_cb, &w);
    }
    free(np);
    return rc;
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
    int rc = store_access(u, sid, NULL, err);
    if (rc)
        return rc;
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    uint64_t id;
    if ((rc = folder_id(sid, np, &id, err))) {
        free(np);
        return rc;
    }
    json_t *entries = json_array();
    if (recursive) {
        pub_walk w = {list_cb, entries, np};
        rc = walk_ids(sid, id, "", 0, pub_walk_cb, &w);
    } else {
        json_t *kids = children(sid, id);
        size_t i;
        json_t *kv;
        json_array_foreach(kids, i, kv) {
            char *full = join(np, json_string_value(json_array_get(kv, 0)));
            json_array_append_new(entries, public_info(json_array_get(kv, 1), full));
            free(full);
        }
        json_decref(kids);
    }
    *out = json_pack("{s:s, s:o}", "path", np, "entries", entries);
    free(np);
    return rc;
}

/* ============================================================ writing === */

struct fs_writer {
    uint64_t sid, owner, uid;
    char *path; /* normalised */
    int flags;
    char expect[65], if_match[65];
    uint8_t *buf;
    size_t start, len, cap; /* unconsumed bytes are buf[start .. len); cap <= WBUF_CAP */
    EVP_MD_CTX *md;
    /* While the body is no longer than the smallest chunk it will be ONE chunk, whose SHA-256
     * is the file's: md is fed only once the body grows past that (a small upload then
     * hashes its bytes once, not twice), and whole_sha is that one digest. */
    bool md_lazy;
    char whole_sha[65];
    uint64_t total;
    int64_t expected;
    int64_t existing; /* size of the file this write replaces (0 if new), for quotas */
    json_t *chunks; /* [{"h","n"}] in order; each one is pending in blob.c */
    db_batch *inl;  /* the inline chunks' puts: becomes the commit batch (blob.c) */
    /* The store thread of a big upload (started at its first chunk file): cut chunks queue
     * here and are hashed, written and synced there while the next bytes arrive and are cut
     * on the caller's thread. st_mu guards the queue and st_rc; `chunks` belongs to the
     * store thread while it runs and to the caller once st_finish returned or st_drain saw
     * it idle. */
    pthread_t st;
    pthread_mutex_t st_mu;
    pthread_cond_t st_cv;
    struct cjob *q_head, *q_tail;
    int q_len;
    bool st_on, st_stop, st_abandon, st_busy;
    int st_rc;
    mb_err st_err;
    uint8_t *spare[3]; /* up to SPARE_MAX chunk buffers for reuse (buf_take) */
    int nspare;
    uint8_t head[HEAD_BYTES];
    size_t headlen;
};

static json_t *filter_payload(const fs_writer *w)
{
    return json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)w->sid, "owner", (json_int_t)w->owner, "path",
                     w->path, "user", (json_int_t)w->uid);
}

int fs_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                   const char *expect_sha256, int flags, fs_writer **out, mb_err *err)
{
    *out = NULL;
    json_t *store;
    int rc = store_access(u, sid, &store, err);
    if (rc)
        return rc;
    uint64_t owner = (uint64_t)jint(store, "owner");
    json_decref(store);
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    if (!*np) {
        free(np);
        return err_set(err, MB_EINVAL, "path: the root folder is not a file");
    }
    if (expect_sha256 && (strlen(expect_sha256) != 64 || strspn(expect_sha256, "0123456789abcdef") != 64)) {
        free(np);
        return err_set(err, MB_EINVAL, "the expected SHA-256 must be 64 lower-case hex digits");
    }
    /* Early checks, so a doomed upload is refused before its body is read; commit checks
     * again under the lock. */
    const char *name;
    char *dir = parent_of(np, &name);
    uint64_t pid = 0;
    json_t *pe = NULL, *existing = NULL;
    if (*dir) {
        rc = resolve(sid, dir, NULL, &pe, err);
        if (rc == MB_ENOENT && (flags & FS_PARENTS))
            rc = 0;
        else if (rc == MB_ENOENT)
            rc = err_set(err, MB_ECONFLICT, "the folder '%s' does not exist (create it, or use parents=true)", dir);
        else if (!rc && !is_folder(pe))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a file, not a folder", dir);
        if (pe)
            pid = (uint64_t)jint(pe, "id");
    }
    if (!rc && (pe || !*dir) && entry_get(sid, pid, name, &existing) == 0) {
        if (is_folder(existing))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", np);
        else if (flags & FS_NO_OVERWRITE)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", np);
    }
    if (!rc && !existing)
        rc = creatable(*dir && !pe ? dir : NULL, name, err);
    json_decref(pe);
    free(dir);
    fs_writer *w = NULL;
    if (!rc) {
        w = xcalloc(1, sizeof *w);
        w->sid = sid;
        w->owner = owner;
        w->uid = u ? u->id : 0;
        w->path = np;
        np = NULL;
        w->flags = flags;
        w->expected = expected_size;
        if (expect_sha256)
            memcpy(w->expect, expect_sha256, 65);
        w->existing = existing ? jint(existing, "size") : 0;
        if (hook_subscribed("file.write", MB_HOOK_FILTER)) {
            json_t *p = filter_payload(w);
            const char *guess = ctype_by_name(name);
            json_object_set_new(p, "size", json_integer(expected_size));
            json_object_set_new(p, "ctype", json_string(guess ? guess : "application/octet-stream"));
            json_object_set_new(p, "existing_size", json_integer(w->existing));
            json_object_set_new(p, "exists", json_boolean(existing != NULL));
            rc = hook_filter("file.write", p, err);
            json_decref(p);
        }
    }
    json_decref(existing);
    free(np);
    if (rc) {
        if (w) {
            free(w->path);
            free(w);
        }
        return rc;
    }
    w->cap = 64 * 1024; /* grows to WBUF_CAP only for bodies that need it */
    w->buf = xmalloc(w->cap);
    w->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
    w->md_lazy = true;
    w->chunks = json_array();
    *out = w;
    return 0;
}

void fs_write_if_match(fs_writer *w, const char *sha256)
{
    if (w && sha256)
        snprintf(w->if_match, sizeof w->if_match, "%s", sha256);
}

/* Hash and store one chunk of n bytes at p (the store thread's work for chunk files; the
 * caller's for inline chunks, which go into the commit batch). */
static int put_chunk(fs_writer *w, const uint8_t *p, size_t n, mb_err *err)
{
    char hex[65], fast[33];
    if (w->whole_sha[0] && n == w->total) { /* the whole file is this chunk: already hashed */
        memcpy(hex, w->whole_sha, sizeof hex);
    } else {
        uint8_t md[32];
        unsigned mdl = 0;
        EVP_Digest(p, n, md, &mdl, EVP_sha256(), NULL);
        hex_encode(md, 32, hex);
    }
    blob_fastsum(p, n, fast);
    /* Pending first, then store: see blob.c on why this order beats the collector. */
    blob_pending_add(hex);
    json_array_append_new(w->chunks, json_pack("{s:s, s:I, s:s}", "h", hex, "n", (json_int_t)n, "x", fast));
    if (n <= blob_inline_max()) {
        if (!w->inl)
            w->inl = db_batch_new();
        blob_put_inline(w->inl, hex, p, n);
        return 0;
    }
    return blob_put(hex, p, n, err);
}

#define ST_QUEUE 2            /* chunks cut and waiting */
#define SPARE_MAX (ST_QUEUE + 1) /* so at most 3 chunk buffers of 4 MiB per upload */

typedef struct cjob {
    struct cjob *next;
    size_t n;
    uint8_t *data; /* blob_buf_alloc: aligned for the local backend's O_DIRECT writes */
} cjob;

/* Chunk buffers (CHUNK_MAX each) are kept for the writer's next chunks: mapping and faulting
 * in fresh pages for every chunk cost more than hashing it. Under st_mu. */
static uint8_t *buf_take(fs_writer *w)
{
    pthread_mutex_lock(&w->st_mu);
    uint8_t *p = w->nspare ? w->spare[--w->nspare] : NULL;
    pthread_mutex_unlock(&w->st_mu);
    return p ? p : blob_buf_alloc(CHUNK_MAX);
}

static void cjob_free(fs_writer *w, cjob *j)
{
    pthread_mutex_lock(&w->st_mu);
    if (w->nspare < SPARE_MAX) {
        w->spare[w->nspare++] = j->data;
        j->data = NULL;
    }
    pthread_mutex_unlock(&w->st_mu);
    blob_buf_free(j->data, CHUNK_MAX);
    free(j);
}


static void *store_main(void *arg)
{
    fs_writer *w = arg;
    pthread_mutex_lock(&w->st_mu);
    for (;;) {
        while (!w->q_head && !w->st_stop)
            pthread_cond_wait(&w->st_cv, &w->st_mu);
        cjob *j = w->q_head;
        if (!j)
            break;
        w->q_head = j->next;
        if (!w->q_head)
            w->q_tail = NULL;
        w->q_len--;
        w->st_busy = true;
        bool skip = w->st_rc || w->st_abandon;
        pthread_mutex_unlock(&w->st_mu);
        mb_err e = {0};
        int rc = skip ? 0 : put_chunk(w, j->data, j->n, &e);
        cjob_free(w, j);
        pthread_mutex_lock(&w->st_mu);
        w->st_busy = false;
        if (rc && !w->st_rc) {
            w->st_rc = rc;
            w->st_err = e;
        }
        pthread_cond_broadcast(&w->st_cv);
    }
    pthread_mutex_unlock(&w->st_mu);
    return NULL;
}

/* Wait until the store thread has stored everything queued; its first error, or 0. */
static int st_drain(fs_writer *w, mb_err *err)
{
    if (!w->st_on)
        return 0;
    pthread_mutex_lock(&w->st_mu);
    while ((w->q_head || w->st_busy) && !w->st_rc)
        pthread_cond_wait(&w->st_cv, &w->st_mu);
    int rc = w->st_rc;
    if (rc && err)
        *err = w->st_err;
    pthread_mutex_unlock(&w->st_mu);
    return rc;
}

/* Stop the store thread: after storing what is queued, or (abandon) dropping it. */
static void st_finish(fs_writer *w, bool abandon)
{
    if (!w->st_on)
        return;
    pthread_mutex_lock(&w->st_mu);
    w->st_stop = true;
    w->st_abandon = abandon;
    pthread_cond_broadcast(&w->st_cv);
    pthread_mutex_unlock(&w->st_mu);
    pthread_join(w->st, NULL);
    w->st_on = false;
    while (w->nspare)
        blob_buf_free(w->spare[--w->nspare], CHUNK_MAX);
    pthread_mutex_destroy(&w->st_mu);
    pthread_cond_destroy(&w->st_cv);
}

/* One chunk cut from the body: the filters see it here, on the caller's thread; a chunk
 * file is then stored by the store thread (a copy of the bytes is queued), an inline one at
 * once. An error of the store thread is returned by a later call (or the commit). */
static int store_chunk(fs_writer *w, const uint8_t *p, size_t n, mb_err *err)
{
    int rc = 0;
    if (hook_subscribed("file.write.chunk", MB_HOOK_FILTER)) { /* no payload to build for nobody */
        json_t *fp = filter_payload(w);
        json_object_set_new(fp, "bytes", json_integer((json_int_t)(w->total)));
        json_object_set_new(fp, "size", json_integer(w->expected));
        json_object_set_new(fp, "existing_size", json_integer(w->existing));
        rc = hook_filter("file.write.chunk", fp, err);
        json_decref(fp);
        if (rc)
            return rc;
    }
    if (n <= blob_inline_max()) /* after the chunks before it: their order is the file's */
        return (rc = st_drain(w, err)) ? rc : put_chunk(w, p, n, err);
    if (!w->st_on) {
        pthread_mutex_init(&w->st_mu, NULL);
        pthread_cond_init(&w->st_cv, NULL);
        w->st_stop = w->st_abandon = w->st_busy = false;
        if (pthread_create(&w->st, NULL, store_main, w)) {
            pthread_mutex_destroy(&w->st_mu);
            pthread_cond_destroy(&w->st_cv);
            return put_chunk(w, p, n, err); /* no thread: store it here */
        }
        w->st_on = true;
    }
    cjob *j = xmalloc(sizeof *j);
    j->next = NULL;
    j->n = n;
    j->data = buf_take(w);
    memcpy(j->data, p, n);
    pthread_mutex_lock(&w->st_mu);
    while (w->q_len >= ST_QUEUE && !w->st_rc)
        pthread_cond_wait(&w->st_cv, &w->st_mu);
    rc = w->st_rc;
    if (rc) {
        if (err)
            *err = w->st_err;
        pthread_mutex_unlock(&w->st_mu);
        cjob_free(w, j);
        return rc;
    }
    if (w->q_tail)
        w->q_tail->next = j;
    else
        w->q_head = j;
    w->q_tail = j;
    w->q_len++;
    pthread_cond_broadcast(&w->st_cv);
    pthread_mutex_unlock(&w->st_mu);
    return 0;
}

int fs_write_data(fs_writer *w, const void *data, size_t n, mb_err *err)
{
    const uint8_t *p = data;
    if (w->expected >= 0 && w->total + n > (uint64_t)w->expected)
        return err_set(err, MB_EINVAL, "the body is longer than the %lld bytes announced", (long long)w->expected);
    if (w->md_lazy && w->total + n > CHUNK_MIN) {
        /* Nothing is cut before CHUNK_MAX bytes wait, so buf still holds every byte so far. */
        EVP_DigestUpdate(w->md, w->buf, w->len);
        w->md_lazy = false;
    }
    if (!w->md_lazy)
        EVP_DigestUpdate(w->md, p, n);
    if (w->headlen < HEAD_BYTES) {
        size_t k = n < HEAD_BYTES - w->headlen ? n : HEAD_BYTES - w->headlen;
        memcpy(w->head + w->headlen, p, k);
        w->headlen += k;
    }
    w->total += n;
    while (n) {
        if (w->len == w->cap && w->cap < WBUF_CAP) {
            w->cap = w->cap * 2 < WBUF_CAP ? w->cap * 2 : WBUF_CAP;
            w->buf = xrealloc(w->buf, w->cap);
        } else if (w->len == w->cap) { /* compact: keep the unconsumed tail at the front */
            memmove(w->buf, w->buf + w->start, w->len - w->start);
            w->len -= w->start;
            w->start = 0;
        }
        size_t k = w->cap - w->len < n ? w->cap - w->len : n;
        memcpy(w->buf + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
        while (w->len - w->start >= CHUNK_MAX) {
            size_t cut = chunker_cut(w->buf + w->start, w->len - w->start);
            int rc = store_chunk(w, w->buf + w->start, cut, err);
            if (rc)
                return rc;
            w->start += cut;
        }
    }
    return 0;
}

/* On failure the chunks only this write produced are deleted again: a refused or broken
 * upload leaves nothing behind (an interrupted process leaves orphans for the collector). */
static void writer_free(fs_writer *w, bool failed)
{
    st_finish(w, true); /* a commit has finished it already; an abort drops what is queued */
    size_t i;
    json_t *c;
    json_array_foreach(w->chunks, i, c) {
        if (failed)
            gc_discard(jstr(c, "h"));
        else
            blob_pending_drop(jstr(c, "h"));
    }
    json_decref(w->chunks);
    db_batch_free(w->inl);
    EVP_MD_CTX_free(w->md);
    free(w->buf);
    free(w->path);
    free(w);
}

void fs_write_abort(fs_writer *w)
{
    if (w)
        writer_free(w, true);
}

/* Remove every version of file fid (refcounts down into refs, deletes into b). The old
 * versions (all but `current`) leave usage here; the caller notes the current one's. */
static void drop_versions(txn *t, uint64_t sid, uint64_t fid, uint64_t current)
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
static void drop_version(txn *t, uint64_t sid, uint64_t fid, uint64_t ver)
{
    char key[KEYMAX];
    json_t *rec = NULL;
    fkey(key, sizeof key, sid, fid, ver);
    if (db_get_json(key, &rec))
        return;
    txn_ref_chunks(t, json_object_get(rec, "chunks"), -1);
    json_decref(rec);
    db_batch_del(t->b, key, strlen(key));
}

int fs_write_commit(fs_writer *w, json_t **info, bool *created, mb_err *err)
{
    int rc = 0;
    if (w->expected >= 0 && w->total != (uint64_t)w->expected) {
        rc = err_set(err, MB_EINVAL, "the body ended after %llu of the %lld bytes announced",
                     (unsigned long long)w->total, (long long)w->expected);
        writer_free(w, true);
        return rc;
    }
    /* Verify before the tail is stored: a small body with a wrong digest touches no disk. */
    uint8_t md[32];
    unsigned mdl = 0;
    char sha[65];
    if (w->md_lazy) {
        EVP_Digest(w->buf, w->len, md, &mdl, EVP_sha256(), NULL);
        hex_encode(md, 32, sha);
        memcpy(w->whole_sha, sha, sizeof sha); /* the one chunk's name too (put_chunk) */
    } else {
        EVP_DigestFinal_ex(w->md, md, &mdl);
        hex_encode(md, 32, sha);
    }
    if (w->expect[0] && strcmp(w->expect, sha)) {
        rc = err_set(err, MB_EINVAL, "the body's SHA-256 is %s but the client announced %s; nothing was stored", sha,
                     w->expect);
        writer_free(w, true);
        return rc;
    }
    /* The tail: whatever is left is cut as the end of the input. */
    while (w->len > w->start) {
        size_t cut = chunker_cut(w->buf + w->start, w->len - w->start);
        if ((rc = store_chunk(w, w->buf + w->start, cut, err))) {
            writer_free(w, true);
            return rc;
        }
        w->start += cut;
    }
    st_finish(w, false);
    if (w->st_rc) {
        rc = w->st_rc;
        if (err)
            *err = w->st_err;
        writer_free(w, true);
        return rc;
    }
    const char *name;
    char *dir = parent_of(w->path, &name);
    bool deep;
    char *ctype = ctype_detect(name, w->head, w->headlen, &deep);
    int64_t now = now_wall();
    json_t *existing = NULL, *entry = NULL;
    bool is_new = true;
    txn c;
    txn_begin(&c, w->inl); /* the inline chunks go in with their version */
    w->inl = NULL;
    db_batch *b = c.b;
    uint64_t pid;
    rc = store_access(NULL, w->sid, NULL, err);
    if (!rc)
        rc = folder_for_change(w->sid, w->owner, dir, w->flags & FS_PARENTS, w->uid, b, &pid, NULL, NULL, err);
    if (!rc && entry_get(w->sid, pid, name, &existing) == 0) {
        if (is_folder(existing))
            rc = err_set(err, MB_ECONFLICT, "'%s' is a folder", w->path);
        else if (w->flags & FS_NO_OVERWRITE)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", w->path);
        is_new = false;
    }
    if (!rc && w->if_match[0] && (is_new || strcmp(jstr(existing, "sha256"), w->if_match)))
        rc = err_set(err, MB_EPRECOND, "'%s' changed since it was read (If-Match does not match)", w->path);
    uint64_t fid = 0, ver = 0;
    if (!rc) {
        fid = is_new ? new_id() : (uint64_t)jint(existing, "id");
        ver = is_new ? 1 : (uint64_t)jint(existing, "version") + 1;
        /* The version replaced becomes an old version (counted in usage) when a module keeps
         * it (versioning), else it goes in this same batch with its refcounts. Versions kept
         * before (versioning since switched off) stay either way: only the user or retention
         * removes them. */
        bool keep = !is_new && history_keep_versions(w->sid, w->owner, fid, w->path);
        if (keep)
            txn_usage_versions(&c, w->sid, jint(existing, "size"));
        else if (!is_new)
            drop_version(&c, w->sid, fid, (uint64_t)jint(existing, "version"));
        txn_ref_chunks(&c, w->chunks, +1);
        json_t *vrec = json_pack("{s:i, s:I, s:s, s:O, s:I, s:I, s:s}", "v", 1, "size", (json_int_t)w->total,
                                 "sha256", sha, "chunks", w->chunks, "author", (json_int_t)w->uid, "time",
                                 (json_int_t)now, "ctype", ctype);
        char key[KEYMAX];
        fkey(key, sizeof key, w->sid, fid, ver);
        db_batch_put_json(b, key, vrec);
        json_decref(vrec);
        entry = json_pack("{s:i, s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:I, s:I, s:I, s:I}", "v", 1, "type", "file",
                          "id", (json_int_t)fid, "size", (json_int_t)w->total, "mtime", (json_int_t)now, "sha256",
                          sha, "version", (json_int_t)ver, "ctype", ctype, "created",
                          (json_int_t)(is_new ? now : jint(existing, "created")), "created_by",
                          (json_int_t)(is_new ? w->uid : (uint64_t)jint(existing, "created_by")), "updated",
                          (json_int_t)now, "updated_by", (json_int_t)w->uid);
        dkey(key, sizeof key, w->sid, pid, name);
        db_batch_put_json(b, key, entry);
        hook_emit_batch(b, is_new ? "file.created" : "file.updated",
                        json_pack("{s:I, s:I, s:s, s:I, s:I, s:s, s:I, s:s, s:I}", "store", (json_int_t)w->sid,
                                  "owner", (json_int_t)w->owner, "path", w->path, "file_id", (json_int_t)fid, "size",
                                  (json_int_t)w->total, "sha256", sha, "version", (json_int_t)ver, "ctype", ctype,
                                  "user", (json_int_t)w->uid));
        if (deep) /* libmagic names it later, when the server is idle (ctype.c) */
            ctype_mark(b, w->sid, fid, ver, pid, name);
        txn_usage(&c, w->sid, (int64_t)w->total - (is_new ? 0 : jint(existing, "size")), is_new ? 1 : 0);
    }
    char what[512];
    snprintf(what, sizeof what, "the new version of '%s'", w->path);
    rc = txn_end(&c, rc, err, what);
    if (!rc) {
        if (deep)
            ctype_kick();
        if (info)
            *info = public_info(entry, w->path);
        if (created)
            *created = is_new;
    }
    json_decref(entry);
    json_decref(existing);
    free(ctype);
    free(dir);
    writer_free(w, rc != 0);
    return rc;
}

void fs_ctype_done(const char *marker, uint64_t sid, uint64_t fid, uint64_t ver, uint64_t pid, const char *name,
                   const char *ctype)
{
    char key[KEYMAX];
    json_t *v = NULL, *e = NULL;
    txn c;
    txn_begin(&c, NULL);
    db_batch_del(c.b, marker, strlen(marker));
    fkey(key, sizeof key, sid, fid, ver);
    if (ctype && db_get_json(key, &v) == 0) {
        json_object_set_new(v, "ctype", json_string(ctype));
        db_batch_put_json(c.b, key, v);
        if (entry_get(sid, pid, name, &e) == 0 && jint(e, "id") == (json_int_t)fid &&
            jint(e, "version") == (json_int_t)ver) {
            json_object_set_new(e, "ctype", json_string(ctype));
            dkey(key, sizeof key, sid, pid, name);
            db_batch_put_json(c.b, key, e);
        }
    }
    mb_err err = {0};
    if (txn_end(&c, 0, &err, "the content type"))
        log_warn("file %llu: %s", (unsigned long long)fid, err.msg);
    json_decref(v);
    json_decref(e);
}

int fs_version_head(uint64_t sid, uint64_t fid, uint64_t ver, uint8_t *buf, size_t cap, size_t *n)
{
    char key[KEYMAX];
    json_t *v = NULL;
    fkey(key, sizeof key, sid, fid, ver);
    int rc = db_get_json(key, &v);
    *n = 0;
    if (rc)
        return rc;
    json_t *c = json_array_get(json_object_get(v, "chunks"), 0);
    size_t len = c ? (size_t)jint(c, "n") : 0;
    if (c && len) {
        uint8_t *tmp = xmalloc(len);
        rc = blob_read(jstr(c, "h"), jstr(c, "x"), tmp, len, NULL);
        if (!rc) {
            *n = len < cap ? len : cap;
            memcpy(buf, tmp, *n);
        }
        free(tmp);
    }
    json_decref(v);
    return rc;
}

/* ============================================================ reading === */

struct fs_reader {
    uint64_t size;
    size_t n;
    char (*hash)[65];
    char (*fast)[33]; /* XXH3-128 per chunk, "" in versions written before it was recorded */
    uint64_t *off;    /* start of each chunk; off[n] == size */
    uint8_t *cache;
    size_t cached;     /* index of the chunk in cache, or SIZE_MAX */
    size_t prefetched; /* chunks below this index were handed to blob_prefetch */
};

#define PREFETCH_AHEAD 4 /* chunks (about 4 MiB) read ahead of the one being served */

/* Chunk i is being read: start reading the next few from the disk meanwhile. Each chunk is
 * its own file, so the kernel's readahead stops at the end of every one of them; without
 * this a download after an upload (O_DIRECT: nothing cached) waited for each chunk in turn. */
static void read_ahead(fs_reader *r, size_t i)
{
    size_t j = r->prefetched > i + 1 ? r->prefetched : i + 1;
    for (; j <= i + PREFETCH_AHEAD && j < r->n; j++)
        blob_prefetch(r->hash[j], (size_t)(r->off[j + 1] - r->off[j]));
    if (j > r->prefetched)
        r->prefetched = j;
}

int fs_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, fs_reader **out, json_t **info,
            mb_err *err)
{
    *out = NULL;
    int rc = store_access(u, sid, NULL, err);
    if (rc)
        return rc;
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    json_t *e = NULL, *ver = NULL;
    rc = resolve(sid, np, NULL, &e, err);
    if (!rc && (!e || is_folder(e)))
        rc = err_set(err, MB_ECONFLICT, "'%s' is a folder, not a file", np);
    if (!rc) {
        char key[KEYMAX];
        fkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), version ? version : (uint64_t)jint(e, "version"));
        int g = db_get_json(key, &ver);
        if (g == MB_ENOENT)
            rc = err_set(err, MB_ENOENT, "'%s' has no version %llu", np, (unsigned long long)version);
        else if (g)
            rc = err_set(err, MB_EIO, "cannot read the version record of '%s'", np);
        else
            rc = history_damaged(sid, (uint64_t)jint(e, "id"), version ? version : (uint64_t)jint(e, "version"), np,
                                 err);
    }
    if (!rc) {
        json_t *chunks = json_object_get(ver, "chunks");
        fs_reader *r = xcalloc(1, sizeof *r);
        r->n = json_array_size(chunks);
        r->hash = xcalloc(r->n + 1, sizeof *r->hash);
        r->fast = xcalloc(r->n + 1, sizeof *r->fast);
        r->off = xcalloc(r->n + 1, sizeof *r->off);
        r->cached = SIZE_MAX;
        uint64_t o = 0;
        for (size_t i = 0; i < r->n; i++) {
            json_t *c = json_array_get(chunks, i);
            snprintf(r->hash[i], 65, "%s", jstr(c, "h"));
            snprintf(r->fast[i], 33, "%s", jstr(c, "x"));
            r->off[i] = o;
            o += (uint64_t)jint(c, "n");
        }
        r->off[r->n] = o;
        r->size = o;
        *out = r;
        if (info) {
            *info = public_info(e, np);
            if (version) { /* an older version: its own size and hash */
                json_object_set(*info, "size", json_object_get(ver, "size"));
                json_object_set(*info, "sha256", json_object_get(ver, "sha256"));
                json_object_set_new(*info, "version", json_integer((json_int_t)version));
            }
        }
    }
    json_decref(e);
    json_decref(ver);
    free(np);
    return rc;
}

/* The index of the chunk holding offset off (binary search). */
static size_t chunk_at(const fs_reader *r, uint64_t off)
{
    size_t lo = 0, hi = r->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (r->off[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The chunk holding byte off, loaded into r->cache and verified: its index, or a negative
 * MB_E* (err set). off < r->size. */
static ssize_t load_chunk(fs_reader *r, uint64_t off, mb_err *err)
{
    size_t lo = chunk_at(r, off);
    if (r->cached != lo) {
        if (!r->cache)
            r->cache = xmalloc(CHUNK_MAX);
        r->cached = SIZE_MAX;
        read_ahead(r, lo);
        int rc = blob_read(r->hash[lo], r->fast[lo], r->cache, (size_t)(r->off[lo + 1] - r->off[lo]), err);
        if (rc)
            return rc;
        r->cached = lo;
    }
    return (ssize_t)lo;
}

ssize_t fs_read(fs_reader *r, uint64_t off, void *buf, size_t n, mb_err *err)
{
    if (off >= r->size || n == 0)
        return 0;
    ssize_t i = load_chunk(r, off, err);
    if (i < 0)
        return i;
    size_t clen = (size_t)(r->off[i + 1] - r->off[i]), in = (size_t)(off - r->off[i]);
    size_t k = clen - in < n ? clen - in : n;
    memcpy(buf, r->cache + in, k);
    return (ssize_t)k;
}

int fs_read_fd(fs_reader *r, uint64_t off, int *fd, uint64_t *fd_off, uint64_t *len, mb_err *err)
{
    *fd = -1;
    if (off >= r->size)
        return err_set(err, MB_ERANGE, "offset %llu is past the end", (unsigned long long)off);
    size_t i = chunk_at(r, off);
    if (!r->cache)
        r->cache = xmalloc(CHUNK_MAX);
    if (r->cached == i)
        r->cached = SIZE_MAX; /* the buffer may be overwritten below */
    bool filled;
    read_ahead(r, i);
    int rc = blob_read_fd(r->hash[i], r->fast[i], r->cache, (size_t)(r->off[i + 1] - r->off[i]), fd, &filled, err);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return err_set(err, MB_EUNSUPP, "chunk %.12s… is not a local file; read it instead", r->hash[i]);
    if (filled)
        r->cached = i;
    *fd_off = off - r->off[i];
    *len = r->off[i + 1] - off;
    return 0;
}

void fs_close(fs_reader *r)
{
    if (!r)
        return;
    free(r->hash);
    free(r->fast);
    free(r->off);
    free(r->cache);
    free(r);
}

/* ===================================================== namespace changes === */

static json_t *op_payload(uint64_t sid, uint64_t owner, const mb_user *u)
{
    return json_pack("{s:I, s:I, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "user",
                     (json_int_t)(u ? u->id : 0));
}

int fs_mkdir(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err)
{
    json_t *store;
    int rc = store_access(u, sid, &store, err);
    if (rc)
        return rc;
    uint64_t owner = (uint64_t)jint(store, "owner");
    json_decref(store);
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    if (!*np) {
        free(np);
        return err_set(err, MB_EEXIST, "the root folder always exists");
    }
    const char *name;
    char *dir = parent_of(np, &name);
    if (!(rc = creatable(missing(sid, dir), name, err))) {
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
        rc = folder_for_change(sid, owner, dir, flags & FS_PARENTS, uid, b, &pid, NULL, NULL, err);
        json_t *ex = NULL;
        if (!rc && entry_get(sid, pid, name, &ex) == 0)
            rc = err_set(err, MB_EEXIST, "'%s' already exists", np);
        json_decref(ex);
        if (!rc) {
            rec = folder_record(new_id(), uid, now_wall());
            char key[KEYMAX];
            dkey(key, sizeof key, sid, pid, name);
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
        *info = public_info(rec, np);
    json_decref(rec);
    free(dir);
    free(np);
    return rc;
}

/* Everything below a folder, gathered for delete/copy: [[pid, name, entry, rel]...]. */
static int gather_cb(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud)
{
    json_array_append_new(ud, json_pack("[I, s, O, s]", (json_int_t)pid, name, e, rel));
    return 0;
}

static int subtree_depth(const json_t *sub)
{
    int max = 0;
    size_t i;
    json_t *t;
    json_array_foreach(sub, i, t) {
        const char *rel = json_string_value(json_array_get(t, 3));
        int d = 1;
        for (const char *c = rel; *c; c++)
            d += *c == '/';
        if (d > max)
            max = d;
    }
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

/* Delete an entry (and, for a folder, everything below it) into b. */
static void delete_into(txn *t, uint64_t sid, uint64_t owner, uint64_t uid, uint64_t pid, const char *name,
                        json_t *e, const char *path)
{
    db_batch *b = t->b;
    char key[KEYMAX];
    if (is_folder(e)) {
        json_t *sub = json_array();
        walk_ids(sid, (uint64_t)jint(e, "id"), "", 0, gather_cb, sub);
        size_t i;
        json_t *it;
        json_array_foreach(sub, i, it) {
            json_t *se = json_array_get(it, 2);
            char *full = join(path, json_string_value(json_array_get(it, 3)));
            dkey(key, sizeof key, sid, (uint64_t)json_integer_value(json_array_get(it, 0)),
                 json_string_value(json_array_get(it, 1)));
            db_batch_del(b, key, strlen(key));
            if (!is_folder(se)) {
                drop_versions(t, sid, (uint64_t)jint(se, "id"), (uint64_t)jint(se, "version"));
                txn_usage(t, sid, -jint(se, "size"), -1);
                hook_emit_batch(b, "file.deleted",
                                json_pack("{s:I, s:I, s:s, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                          (json_int_t)owner, "path", full, "file_id", jint(se, "id"), "size",
                                          jint(se, "size"), "user", (json_int_t)uid));
            }
            free(full);
        }
        json_decref(sub);
        hook_emit_batch(b, "folder.deleted",
                        json_pack("{s:I, s:I, s:s, s:I}", "store", (json_int_t)sid, "owner", (json_int_t)owner,
                                  "path", path, "user", (json_int_t)uid));
    } else {
        drop_versions(t, sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
        txn_usage(t, sid, -jint(e, "size"), -1);
        hook_emit_batch(b, "file.deleted",
                        json_pack("{s:I, s:I, s:s, s:I, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)owner, "path", path, "file_id", jint(e, "id"), "size", jint(e, "size"),
                                  "user", (json_int_t)uid));
    }
    dkey(key, sizeof key, sid, pid, name);
    db_batch_del(b, key, strlen(key));
}

int fs_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err)
{
    json_t *store;
    int rc = store_access(u, sid, &store, err);
    if (rc)
        return rc;
    uint64_t owner = (uint64_t)jint(store, "owner");
    json_decref(store);
    char *np;
    if ((rc = fs_path_normalize(path, strlen(path), &np, err)))
        return rc;
    if (!*np) {
        free(np);
        return err_set(err, MB_EINVAL, "path: the root folder cannot be deleted");
    }
    json_t *e = NULL;
    if ((rc = resolve(sid, np, NULL, &e, err))) {
        free(np);
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
        rc = resolve(sid, np, &pid, &e, err);
        if (!rc && is_folder(e) && !(flags & FS_RECURSIVE)) {
            json_t *kids = children(sid, (uint64_t)jint(e, "id"));
            if (json_array_size(kids))
                rc = err_set(err, MB_ECONFLICT, "the folder '%s' is not empty (delete it with recursive=true)", np);
            json_decref(kids);
        }
        if (!rc)
            delete_into(&c, sid, owner, u ? u->id : 0, pid, last_name(np), e, np);
        rc = txn_end(&c, rc, err, "the delete");
        json_decref(e);
    }
    free(np);
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
    if (!is_folder(e)) {
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
    if (resolve(sid, from, NULL, &e, &ig) == 0 && e) {
        if (is_folder(e))
            walk_ids(sid, (uint64_t)jint(e, "id"), "", 0, size_cb, t);
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
    json_t *store;
    int rc = store_access(u, sid, &store, err);
    if (rc)
        return rc;
    x->owner = (uint64_t)jint(store, "owner");
    x->uid = u ? u->id : 0;
    json_decref(store);
    if ((rc = fs_path_normalize(from, strlen(from), &x->from, err)))
        return rc;
    if ((rc = fs_path_normalize(to, strlen(to), &x->to, err)))
        return rc;
    if (!*x->from)
        return err_set(err, MB_EINVAL, "from: the root folder cannot be moved or copied");
    if (!*x->to)
        return err_set(err, MB_EEXIST, "to: the root folder already exists");
    x->to_dir = parent_of(x->to, &x->to_name);
    /* A name carried over unchanged is not a new name (moving an entry made before the rule). */
    if ((rc = creatable(missing(sid, x->to_dir), strcmp(x->to_name, last_name(x->from)) ? x->to_name : NULL, err)))
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
    int rc = resolve(sid, x->from, &x->src_pid, &x->src, err);
    if (rc)
        return rc;
    x->chain = json_array();
    if ((rc = folder_for_change(sid, x->owner, x->to_dir, flags & FS_PARENTS, x->uid, b, &x->dst_pid, x->chain,
                                NULL, err)))
        return rc;
    if (is_folder(x->src)) {
        json_int_t id = jint(x->src, "id");
        size_t i;
        json_t *c;
        json_array_foreach(x->chain, i, c) if (json_integer_value(c) == id)
            return err_set(err, MB_ECONFLICT, "cannot %s the folder '%s' into itself", copy ? "copy" : "move",
                           x->from);
    }
    if (entry_get(sid, x->dst_pid, x->to_name, &x->dst) == 0) {
        if (!copy && x->dst_pid == x->src_pid && !strcmp(x->to_name, last_name(x->from)))
            return 0; /* onto itself: nothing to do */
        if (!(flags & FS_OVERWRITE))
            return err_set(err, MB_EEXIST, "'%s' already exists", x->to);
        if (is_folder(x->dst) || is_folder(x->src))
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
    bool noop = !rc && x.dst && x.dst_pid == x.src_pid && !strcmp(x.to_name, last_name(x.from));
    if (!rc && !noop && is_folder(x.src)) {
        json_t *sub = json_array();
        walk_ids(sid, (uint64_t)jint(x.src, "id"), "", 0, gather_cb, sub);
        if (path_depth(x.to) + subtree_depth(sub) > FS_DEPTH_MAX)
            rc = err_set(err, MB_EINVAL, "path: the move would nest deeper than %d levels", FS_DEPTH_MAX);
        json_decref(sub);
    }
    if (!rc && !noop) {
        char key[KEYMAX];
        if (x.dst) /* replacing a file: it goes, with its versions */
            delete_into(&c, sid, x.owner, x.uid, x.dst_pid, x.to_name, x.dst, x.to);
        dkey(key, sizeof key, sid, x.src_pid, last_name(x.from));
        db_batch_del(c.b, key, strlen(key));
        dkey(key, sizeof key, sid, x.dst_pid, x.to_name);
        db_batch_put_json(c.b, key, x.src);
        hook_emit_batch(c.b, is_folder(x.src) ? "folder.moved" : "file.moved",
                        json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)x.owner, "from", x.from, "to", x.to, "type", jstr(x.src, "type"), "id",
                                  jint(x.src, "id"), "user", (json_int_t)x.uid));
    }
    rc = txn_end(&c, rc, err, noop ? NULL : "the move");
    if (!rc && info)
        *info = public_info(x.src, x.to);
    xfer_free(&x);
    return rc;
}

/* A copy of file entry e as a new file (new id, version 1) sharing its chunks. */
static int copy_file_into(txn *t, uint64_t sid, json_t *e, uint64_t uid, int64_t now, json_t **out, mb_err *err)
{
    db_batch *b = t->b;
    char key[KEYMAX];
    fkey(key, sizeof key, sid, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
    json_t *ver;
    if (db_get_json(key, &ver))
        return err_set(err, MB_EIO, "the current version of a file to copy is missing (run fsck)");
    uint64_t fid = new_id();
    txn_ref_chunks(t, json_object_get(ver, "chunks"), +1);
    txn_usage(t, sid, jint(e, "size"), 1);
    json_object_set_new(ver, "author", json_integer((json_int_t)uid));
    json_object_set_new(ver, "time", json_integer(now));
    fkey(key, sizeof key, sid, fid, 1);
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
    if (!rc && x.dst && x.dst_pid == x.src_pid && !strcmp(x.to_name, last_name(x.from)))
        rc = err_set(err, MB_EEXIST, "a file cannot be copied onto itself");
    if (!rc && x.dst)
        delete_into(&c, sid, x.owner, x.uid, x.dst_pid, x.to_name, x.dst, x.to);
    char key[KEYMAX];
    if (!rc && !is_folder(x.src)) {
        rc = copy_file_into(&c, sid, x.src, x.uid, now, &top, err);
    } else if (!rc) {
        json_t *sub = json_array();
        walk_ids(sid, (uint64_t)jint(x.src, "id"), "", 0, gather_cb, sub);
        if (path_depth(x.to) + subtree_depth(sub) > FS_DEPTH_MAX)
            rc = err_set(err, MB_EINVAL, "path: the copy would nest deeper than %d levels", FS_DEPTH_MAX);
        /* New ids for every folder; children follow their parent's new id. */
        json_t *idmap = json_object();
        uint64_t nid = new_id();
        char ks[17];
        key_u64(ks, (uint64_t)jint(x.src, "id"));
        json_object_set_new(idmap, ks, json_integer((json_int_t)nid));
        top = folder_record(nid, x.uid, now);
        size_t i;
        json_t *t;
        json_array_foreach(sub, i, t) {
            if (rc)
                break;
            json_t *se = json_array_get(t, 2), *ne = NULL;
            key_u64(ks, (uint64_t)json_integer_value(json_array_get(t, 0)));
            uint64_t npid = (uint64_t)json_integer_value(json_object_get(idmap, ks));
            if (is_folder(se)) {
                uint64_t fid = new_id();
                key_u64(ks, (uint64_t)jint(se, "id"));
                json_object_set_new(idmap, ks, json_integer((json_int_t)fid));
                ne = folder_record(fid, x.uid, now);
            } else if ((rc = copy_file_into(&c, sid, se, x.uid, now, &ne, err)))
                break;
            dkey(key, sizeof key, sid, npid, json_string_value(json_array_get(t, 1)));
            db_batch_put_json(b, key, ne);
            json_decref(ne);
        }
        json_decref(idmap);
        json_decref(sub);
    }
    if (!rc) {
        dkey(key, sizeof key, sid, x.dst_pid, x.to_name);
        db_batch_put_json(b, key, top);
        hook_emit_batch(b, is_folder(x.src) ? "folder.copied" : "file.copied",
                        json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I}", "store", (json_int_t)sid, "owner",
                                  (json_int_t)x.owner, "from", x.from, "to", x.to, "type", jstr(x.src, "type"), "id",
                                  jint(top, "id"), "user", (json_int_t)x.uid));
    }
    rc = txn_end(&c, rc, err, "the copy");
    if (!rc && info)
        *info = public_info(top, x.to);
    json_decref(top);
    xfer_free(&x);
    return rc;
}

/* =============================================================== fsck === */

typedef struct {
    json_t *problems;
    int repaired;
    int64_t cutoff;
    json_t *counts; /* hash -> [refs, size] expected from the version records */
    json_int_t orphans_recent, chunks_stored;
} fsck_ctx;

static void problem(fsck_ctx *c, const char *kind, bool repaired, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void problem(fsck_ctx *c, const char *kind, bool repaired, json_t *extra, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *p = extra ? extra : json_object();
    json_object_set_new(p, "kind", json_string(kind));
    json_object_set_new(p, "detail", json_string(msg));
    json_object_set_new(p, "repaired", json_boolean(repaired));
    json_array_append_new(c->problems, p);
    if (repaired)
        c->repaired++;
}

static int fsck_blob_cb(const char *hash, uint64_t size, int64_t mtime, void *ud)
{
    (void)size;
    fsck_ctx *c = ud;
    c->chunks_stored++;
    if (json_object_get(c->counts, hash))
        return 0;
    char key[80];
    snprintf(key, sizeof key, "c/%s", hash);
    char *v;
    if (db_get(key, strlen(key), &v, NULL) == 0) {
        free(v);
        return 0; /* unreferenced but recorded: the collector's business */
    }
    if (mtime > c->cutoff)
        c->orphans_recent++; /* maybe an upload in flight or just interrupted */
    else
        problem(c, "orphan", false, json_pack("{s:s}", "chunk", hash),
                "chunk %s is stored but no file or refcount names it", hash);
    return 0;
}

/* The chunk hash at the end of key k ("<prefix><sha256 hex>"), or false for another shape. */
static bool key_hash(const char *k, size_t kl, size_t prefix, char out[65])
{
    if (kl != prefix + 64)
        return false;
    memcpy(out, k + prefix, 64);
    out[64] = 0;
    return true;
}

int fs_fsck(bool repair, json_t **report, mb_err *err)
{
    (void)err;
    fsck_ctx c = {.problems = json_array(), .cutoff = now_wall() - gc_grace_secs(), .counts = json_object()};
    json_int_t files = 0, chunks_checked = 0, versions = 0;
    db_batch *fix = db_batch_new();
    txn_lock();
    /* 1. Entries -> the version each names. */
    json_t *live = json_object();
    db_iter *it = db_iter_prefix("d/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *e = json_loadb(v, vl, 0, NULL);
        if (!e || kl < 36) {
            problem(&c, "bad_entry", false, NULL, "entry %.*s is not readable", (int)kl, k);
            json_decref(e);
            continue;
        }
        if (!is_folder(e)) {
            files++;
            char sid[17], fk[KEYMAX];
            memcpy(sid, k + 2, 16);
            sid[16] = 0;
            uint64_t s = strtoull(sid, NULL, 16);
            fkey(fk, sizeof fk, s, (uint64_t)jint(e, "id"), (uint64_t)jint(e, "version"));
            char *vv;
            if (db_get(fk, strlen(fk), &vv, NULL) == 0) {
                free(vv);
                fk[strlen(fk) - 16] = 0; /* every version of a live file is live (history.c) */
                json_object_set_new(live, fk, json_true());
            } else
                problem(&c, "dangling_entry", false, json_pack("{s:s#}", "key", k, (int)kl),
                        "entry %.*s names a version that does not exist", (int)kl, k);
        }
        json_decref(e);
    }
    db_iter_free(it);
    history_fsck_live(live);
    /* 2. Versions -> the chunks they hold. A version no entry names is kept only while a
     * retention policy says so; there is none yet, so it is a leak. */
    it = db_iter_prefix("f/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        versions++;
        char *key = strndup(k, kl);
        json_t *ver = json_loadb(v, vl, 0, NULL);
        char *fprefix = strndup(k, kl > 16 ? kl - 16 : kl);
        bool is_live = json_object_get(live, fprefix) != NULL;
        free(fprefix);
        if (!is_live) {
            if (repair)
                db_batch_del(fix, k, kl);
            problem(&c, "unreferenced_version", repair, json_pack("{s:s}", "key", key),
                    "version %s belongs to no file in the namespace or the trash", key);
            if (repair) {
                free(key);
                json_decref(ver);
                continue;
            }
        }
        free(key);
        size_t i;
        json_t *ch;
        json_array_foreach(json_object_get(ver, "chunks"), i, ch) {
            const char *h = jstr(ch, "h");
            json_t *cnt = json_object_get(c.counts, h);
            if (!cnt)
                json_object_set_new(c.counts, h, json_pack("[i, I]", 1, jint(ch, "n")));
            else
                json_array_set_new(cnt, 0, json_integer(json_integer_value(json_array_get(cnt, 0)) + 1));
        }
        json_decref(ver);
    }
    db_iter_free(it);
    json_decref(live);
    /* 3. Every referenced chunk exists and has its hash. */
    const char *h;
    json_t *cnt;
    uint8_t *buf = xmalloc(CHUNK_MAX);
    json_object_foreach(c.counts, h, cnt) {
        chunks_checked++;
        size_t n = (size_t)json_integer_value(json_array_get(cnt, 1));
        mb_err e = {0};
        int rc = n <= CHUNK_MAX ? blob_get(h, buf, n, &e) : MB_EINTEGRITY;
        if (rc == MB_ENOENT)
            problem(&c, "missing_chunk", false, json_pack("{s:s}", "chunk", h), "chunk %s is referenced but missing",
                    h);
        else if (rc)
            problem(&c, "corrupt_chunk", false, json_pack("{s:s}", "chunk", h),
                    "chunk %s does not hold the bytes its name promises: %s", h, e.msg);
    }
    free(buf);
    /* 4. Refcounts match the references. */
    it = db_iter_prefix("c/", 2);
    json_t *seen = json_object();
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        char hash[65];
        if (!key_hash(k, kl, 2, hash))
            continue;
        json_object_set_new(seen, hash, json_true());
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_int_t refs = jint(rec, "refs");
        json_t *want = json_object_get(c.counts, hash);
        json_int_t n = want ? json_integer_value(json_array_get(want, 0)) : 0;
        if (refs != n) {
            if (repair) {
                json_t *nr = json_pack("{s:i, s:I, s:I, s:I}", "v", 1, "refs", n, "size", jint(rec, "size"),
                                       "zero_since", n ? 0 : now_wall());
                db_batch_put_json(fix, k, nr);
                json_decref(nr);
            }
            problem(&c, "refcount", repair, json_pack("{s:s, s:I, s:I}", "chunk", hash, "recorded", refs, "actual", n),
                    "chunk %s has refcount %lld but %lld references", hash, (long long)refs, (long long)n);
        } else if (refs == 0 && !blob_has(hash)) {
            if (repair)
                db_batch_del(fix, k, kl);
            problem(&c, "stale_refcount", repair, json_pack("{s:s}", "chunk", hash),
                    "chunk %s has a refcount record but no bytes", hash);
        }
        json_decref(rec);
    }
    db_iter_free(it);
    json_object_foreach(c.counts, h, cnt) {
        if (json_object_get(seen, h))
            continue;
        json_int_t n = json_integer_value(json_array_get(cnt, 0));
        if (repair) {
            char key[80];
            snprintf(key, sizeof key, "c/%s", h);
            json_t *nr = json_pack("{s:i, s:I, s:O, s:i}", "v", 1, "refs", n, "size", json_array_get(cnt, 1),
                                   "zero_since", 0);
            db_batch_put_json(fix, key, nr);
            json_decref(nr);
        }
        problem(&c, "refcount", repair, json_pack("{s:s, s:i, s:I}", "chunk", h, "recorded", 0, "actual", n),
                "chunk %s has %lld references but no refcount record", h, (long long)n);
    }
    /* 5. Orphans: stored chunks nothing names. An inline chunk (blob.c) comes and goes in the
     * same batch as its refcount record, so one without a record is repaired at once. */
    blob_list(fsck_blob_cb, &c, NULL);
    it = db_iter_prefix("ci/", 3);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char hash[65];
        if (!key_hash(k, kl, 3, hash))
            continue;
        c.chunks_stored++;
        if (json_object_get(seen, hash))
            continue;
        if (repair)
            db_batch_del(fix, k, kl);
        problem(&c, "inline_orphan", repair, json_pack("{s:s}", "chunk", hash), "inline chunk %s has no refcount record",
                hash);
    }
    db_iter_free(it);
    json_decref(seen);
    int frc = db_batch_commit(fix, true);
    txn_unlock();
    if (frc)
        log_error("fsck: the repairs could not be written");
    if (repair) {
        /* The collector deletes orphans and zero-ref chunks older than the grace. */
        mb_err e = {0};
        gc_run(gc_grace_secs(), &e);
        size_t i;
        json_t *p;
        json_array_foreach(c.problems, i, p) {
            if (!strcmp(jstr(p, "kind"), "orphan") && !blob_has(jstr(p, "chunk"))) {
                json_object_set_new(p, "repaired", json_true());
                c.repaired++;
            }
        }
    }
    int unrepaired = 0;
    size_t i;
    json_t *p;
    json_array_foreach(c.problems, i, p) unrepaired += !json_is_true(json_object_get(p, "repaired"));
    *report = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:i, s:i, s:b}", "chunks_checked", chunks_checked,
                        "files_checked", files, "versions_checked", versions, "chunks_stored", c.chunks_stored,
                        "orphans_recent", c.orphans_recent, "problems", c.problems, "repaired", c.repaired,
                        "unrepaired", unrepaired, "repair", repair);
    json_decref(c.counts);
    if (json_array_size(json_object_get(*report, "problems")))
        log_warn("fsck: %zu problems, %d repaired", json_array_size(json_object_get(*report, "problems")),
                 c.repaired);
    return 0;
}

/* ============================================================== start === */

/* Accounts made before the file service existed get their default store now. */
static void ensure_default_stores(void)
{
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
        fs_store_create_batch(b, strtoull(hex, NULL, 16), "Home", NULL);
    }
    db_iter_free(it);
    if (b && db_batch_commit(b, true) == 0)
        hook_kick();
}

int fs_init(mb_err *err) /* after blob_init (main.c opens the chunk store with the database) */
{
    int rc;
    if ((rc = ctype_init(err)))
        return rc;
    ensure_default_stores();
    return files_routes_init(err);
}

void fs_fini(void)
{
    ctype_fini(); /* first: its thread records types in transactions */
    gc_fini();
    blob_fini();
}

/* ============================================ for history.c (branch history) === */
/* Thin non-static doors onto the namespace internals above, so kernel/history.c (trash,
 * versions, integrity) works on the same layout without fs.c growing its logic. */

int fs_x_store_owner(const mb_user *u, uint64_t sid, uint64_t *owner, mb_err *err)
{
    json_t *s = NULL;
    int rc = store_access(u, sid, &s, err);
    if (!rc) {
        *owner = (uint64_t)jint(s, "owner");
        json_decref(s);
    }
    return rc;
}

int fs_x_resolve(uint64_t sid, const char *np, uint64_t *pid, json_t **e, mb_err *err)
{
    return resolve(sid, np, pid, e, err);
}

int fs_x_folder_for_change(uint64_t sid, uint64_t owner, const char *dir, uint64_t uid, db_batch *b,
                           uint64_t *out_id, mb_err *err)
{
    return folder_for_change(sid, owner, dir, true, uid, b, out_id, NULL, NULL, err);
}

int fs_x_entry_get(uint64_t sid, uint64_t pid, const char *name, json_t **e) { return entry_get(sid, pid, name, e); }
json_t *fs_x_children(uint64_t sid, uint64_t pid) { return children(sid, pid); }
void fs_x_drop_versions(txn *t, uint64_t sid, uint64_t fid, uint64_t current)
{
    drop_versions(t, sid, fid, current);
}
json_t *fs_x_public_info(const json_t *e, const char *path) { return public_info(e, path); }
void fs_x_dkey(char *out, size_t n, uint64_t sid, uint64_t pid, const char *name) { dkey(out, n, sid, pid, name); }
void fs_x_fkey(char *out, size_t n, uint64_t sid, uint64_t fid, uint64_t ver) { fkey(out, n, sid, fid, ver); }
