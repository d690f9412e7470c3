/*
 * kernel/ns.h — the namespace (ns.c): the keys and layout of stores, directory entries and file
 * versions (docs/storage.md "## Files"), store access, resolving a path, a folder's children,
 * walking a subtree, and an entry's public form. The file operations (fs.c, fs_write.c,
 * fs_read.c, fsck.c), history.c, stores.c and ctype.c build on these; nothing here replies,
 * emits a filter or knows a door.
 *
 * Paths given here are normalised (fs_path_normalize): "a/b/c", "" for the root.
 * Threads: any. Reads take no lock (each LevelDB read is consistent); the *_for_change calls
 * and ns_drop_version(s) run inside a transaction (txn.h) and put their changes into it.
 */
#ifndef MBYTE_NS_H
#define MBYTE_NS_H

#include "kernel.h"
#include "txn.h"

#define NS_KEYMAX (2 * 255 + 64) /* a d/ or f/ key: two names' worth with room to spare */

/* A new file or folder id: unique for the life of the database, exact as a JSON number in a
 * browser (below 2^53), stable across renames and moves. */
uint64_t ns_new_id(void);
/* d/<sid16>/<pid16>/<name>: entry <name> in folder <pid> (root = 0). */
void ns_dkey(char *out, size_t n, uint64_t sid, uint64_t pid, const char *name);
/* f/<sid16>/<fid16>/<ver16>: one version of file <fid>; ver 0 gives the file's prefix
 * without the version ("f/<sid16>/<fid16>/" + 16 zeros: callers cut it). */
void ns_fkey(char *out, size_t n, uint64_t sid, uint64_t fid, uint64_t ver);

bool ns_is_folder(const json_t *e);
const char *ns_last_name(const char *path);     /* points into path */
char *ns_join(const char *a, const char *b);     /* "a/b" (or either alone), malloc'd */
char *ns_parent_of(const char *path, const char **name); /* "a/b" of "a/b/c" (malloc'd); *name "c" */

/* The public form of an entry: the stored record plus "path" and "name", without "v". New. */
json_t *ns_public_info(const json_t *e, const char *path);
/* ns_public_info in place: e (the caller's own, not shared) made public; returns e. */
json_t *ns_make_public(json_t *e, const char *path);
json_t *ns_root_info(void);
json_t *ns_store_public(const json_t *store_record);

/* Is a store with this record usable by u? A store being provisioned (made by store_create,
 * until stores_ready) is reachable only by the system (u NULL); one being deleted by nobody. */
bool ns_store_reachable(const json_t *store_record, const mb_user *u);
/* The store record (shared: only read it) if u may reach store sid; another user's store is
 * indistinguishable from none (MB_ENOENT). rec may be NULL. u NULL is the system. */
int ns_store_access(const mb_user *u, uint64_t sid, json_t **rec, mb_err *err);

/* The entry `name` in folder pid (a new reference); MB_ENOENT if absent. */
int ns_entry_get(uint64_t sid, uint64_t pid, const char *name, json_t **e);
/* Resolve a path to its entry. For the root, *e is NULL. *pid (optional) is the parent
 * folder's id. MB_ENOENT / MB_ECONFLICT (a file on the way) / MB_EIO with err. */
int ns_resolve(uint64_t sid, const char *path, uint64_t *pid, json_t **e, mb_err *err);
/* A folder (the root included) for reading: its id; MB_ECONFLICT when path is a file. */
int ns_folder_id(uint64_t sid, const char *path, uint64_t *id, mb_err *err);
/* Children of folder pid in name order: a new array of [name, entry] (small folders only:
 * it holds them all; ns_children_each holds one at a time). */
json_t *ns_children(uint64_t sid, uint64_t pid);
/* fn(name, entry, ud) for each child of folder pid in name order, starting after the name
 * `after` (NULL or "": from the first; `after` need not exist any more), at most limit of them
 * (0: all), from one LevelDB iterator. *more (optional): more children follow. A non-zero
 * return from fn stops and is returned. The entry is parsed for fn alone: fn may change it
 * or keep a reference. */
typedef int (*ns_child_fn)(const char *name, json_t *e, void *ud);
int ns_children_each(uint64_t sid, uint64_t pid, const char *after, size_t limit, ns_child_fn fn, void *ud,
                     bool *more);
/* Does folder pid hold anything? One seek, whatever its size. */
bool ns_has_children(uint64_t sid, uint64_t pid);
/* How many entries folder pid holds: its dn/ counter (one read), or one scan for a folder
 * never changed since the counter exists. */
int64_t ns_child_count(uint64_t sid, uint64_t pid);
/* txn_pre_commit's hook: the dn/ counters of the folders batch b adds to or removes from. */
void ns_count_batch(db_batch *b);
/* Depth-first walk below folder id, each folder's children in name order, a folder before
 * what it holds: fn(pid, name, entry, relpath, ud); a non-zero return stops the walk. */
typedef int (*ns_walk_fn)(uint64_t pid, const char *name, json_t *e, const char *rel, void *ud);
int ns_walk_ids(uint64_t sid, uint64_t id, const char *rel, int depth, ns_walk_fn fn, void *ud);
/* Delete every entry below folder id into t (walked one entry at a time); fn(t, entry, path,
 * ud) for each file (its versions, usage and event are the caller's), path below `path`. */
typedef void (*ns_drop_fn)(txn *t, json_t *e, const char *path, void *ud);
void ns_drop_subtree(txn *t, uint64_t sid, uint64_t id, const char *path, ns_drop_fn fn, void *ud);
/* The same walk as a pull, for streamed answers: each ns_walker_next gives the next entry
 * (borrowed until the next call) with its parent's id, name and path below folder id; false at
 * the end. Memory grows with the depth only. One thread at a time. */
typedef struct ns_walker ns_walker;
/* After work that touched this many entries, hand freed memory back to the system. */
#define NS_TRIM_AFTER 4096
void ns_trim(size_t entries);
ns_walker *ns_walker_new(uint64_t sid, uint64_t id);
bool ns_walker_next(ns_walker *w, uint64_t *pid, const char **name, json_t **e, const char **rel);
bool ns_walker_broken(const ns_walker *w); /* stopped deeper than any path may be (a bug) */
void ns_walker_free(ns_walker *w);
/* Everything below folder id, in walk order: a new array of [pid, name, entry, relpath]. */
json_t *ns_subtree(uint64_t sid, uint64_t id);

/* The names a change would create must pass fs_name_creatable: `name` (NULL: none) and each
 * name of missing_dir (NULL: the parent exists), which FS_PARENTS would create. */
int ns_creatable(const char *missing_dir, const char *name, mb_err *err);
/* The folder `dir` if it does not exist yet, else NULL (for ns_creatable). */
const char *ns_missing(uint64_t sid, const char *dir);
json_t *ns_folder_record(uint64_t id, uint64_t uid, int64_t now);
/* Resolve the folder `dir` for a change, inside a transaction. With create, missing folders
 * are put into b (with folder.created events); otherwise a missing one is MB_ECONFLICT.
 * ids (optional) receives the chain of folder ids from the root down; *created (optional)
 * counts the folders made. */
int ns_folder_for_change(uint64_t sid, uint64_t owner, const char *dir, bool create, uint64_t uid, db_batch *b,
                         uint64_t *out_id, json_t *ids, int *created, mb_err *err);
/* Remove every version of file fid into t (refcounts down); the old versions (all but
 * `current`) leave usage here, the caller notes the current one's. */
void ns_drop_versions(txn *t, uint64_t sid, uint64_t fid, uint64_t current);
/* Remove one version record of file fid into t (its refcounts down). */
void ns_drop_version(txn *t, uint64_t sid, uint64_t fid, uint64_t ver);

#endif
