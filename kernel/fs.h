/*
 * kernel/fs.h — the kernel's file service (issue 3): stores, namespace, content-addressed
 * chunks, versions. Every door (HTTP PUT, tus, FTP, modules through mb_api) reads and writes
 * through these calls, so limits, quotas and events apply the same everywhere.
 *
 * Write order for every upload (DESIGN.md): chunks durable -> one synced batch commits
 * version + refcounts + directory entry + outbox event -> reply.
 *
 * Threads: every call is thread-safe. A writer or reader belongs to one thread at a time.
 */
#ifndef MBYTE_FS_H
#define MBYTE_FS_H

#include "kernel.h"

enum {
    FS_PARENTS = 1 << 0,      /* create missing parent folders */
    FS_NO_OVERWRITE = 1 << 1, /* refuse if the path exists (MB_EEXIST) */
};

typedef struct fs_writer fs_writer;
typedef struct fs_reader fs_reader;

int fs_init(mb_err *err);
void fs_fini(void);

/* Begin writing `path` in store `sid` as user `u`. expected_size is the announced length or -1
 * when unknown (chunked); filters (quota, limits) run here with it, so a known-too-large upload
 * is refused before any byte is stored. expect_sha256 (64 lower-hex chars) or NULL: verified at
 * commit, a mismatch stores nothing. */
int fs_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                   const char *expect_sha256, int flags, fs_writer **w, mb_err *err);
/* Feed bytes; chunks are cut, hashed and written durably as they fill. May refuse (a size limit
 * crossed mid-stream). On error the writer must still be aborted. */
int fs_write_data(fs_writer *w, const void *buf, size_t n, mb_err *err);
/* Finish: verify, commit the version in one synced batch, emit file.created or file.updated.
 * On success *info is the file's metadata JSON (new reference) and *created tells 201 from 200.
 * Frees w in every case. */
int fs_write_commit(fs_writer *w, json_t **info, bool *created, mb_err *err);
/* Drop an unfinished write; nothing becomes visible. Frees w. NULL is fine. */
void fs_write_abort(fs_writer *w);

/* Open a file (version 0 = current) for reading; *info as above. */
int fs_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, fs_reader **r, json_t **info,
            mb_err *err);
/* Read up to n bytes at offset; returns bytes read (0 at end) or a negative MB_E* with err. A chunk
 * whose bytes do not match its hash is never returned (MB_EINTEGRITY). */
ssize_t fs_read(fs_reader *r, uint64_t off, void *buf, size_t n, mb_err *err);
void fs_close(fs_reader *r);

/* ------------------------------------------------ tus and zip (branch tus) --- */

/* Walk the subtree under the folder `path` ("" or "/" is the store's root) as user `u`,
 * depth first, each folder's children in name order, a folder before what it holds. fn is
 * called for every entry BELOW `path` (never for `path` itself) with:
 *   relpath  the entry's path relative to `path`, '/'-separated, no leading or trailing '/';
 *   entry    its listing object, borrowed, valid only during the call, with at least
 *            "type": "file" | "folder", "size": integer bytes (files), "mtime": integer
 *            Unix seconds (optional).
 * A non-zero return from fn stops the walk and is returned as is. Errors: MB_ENOENT (no
 * such store or folder, or the user cannot reach it), MB_ECONFLICT (`path` is a file).
 * The walk reads a consistent-enough view: entries created during the walk may or may not
 * be seen; an entry seen was valid when seen. Thread-safe; any thread. */
int fs_walk(const mb_user *u, uint64_t sid, const char *path,
            int (*fn)(const char *relpath, const json_t *entry, void *ud), void *ud, mb_err *err);

/* kernel/zip.c: answer `req` with the folder subtree as a streamed application/zip
 * (200, unknown length): stored entries, data descriptors, ZIP64 when needed, UTF-8 names.
 * Reads each file through fs_open/fs_read while sending; never holds a file in memory.
 * Returns 0 once the answer is queued, or a negative MB_E* (nothing queued) with err. */
int zip_folder_reply(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err);

#endif
