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
#include "txn.h"
#include "ns.h"

enum {
    FS_PARENTS = 1 << 0,      /* create missing parent folders */
    FS_NO_OVERWRITE = 1 << 1, /* refuse if the path exists (MB_EEXIST) */
};

typedef struct fs_writer fs_writer;
typedef struct fs_reader fs_reader;

int fs_init(mb_err *err);
void fs_fini(void);

/* The opening every file operation shares (fs.c): may u (NULL: the system) reach store sid,
 * who owns it, and `path` normalised (NULL: no path). On success op->path is malloc'd (NULL
 * without a path) and fs_op_end frees it; on failure nothing needs freeing. */
typedef struct fs_op {
    uint64_t sid, owner, uid;
    char *path;
} fs_op;
int fs_op_begin(fs_op *op, const mb_user *u, uint64_t sid, const char *path, mb_err *err);
void fs_op_end(fs_op *op);
/* fs_op_begin for a folder (the root included): *id its id; a file is MB_ECONFLICT. */
int fs_folder_begin(fs_op *op, const mb_user *u, uint64_t sid, const char *path, uint64_t *id, mb_err *err);

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

/* ---------------------------------------------------------------- ctype.c --- */
/* Content types (ctype.c). ctype_detect decides from signature, extension and text at once
 * (a new string) and sets *deep when only libmagic could say more: the commit then puts
 * ctype_mark's marker into its batch and calls ctype_kick after it; libmagic's answer is
 * recorded later, when no file changes are being committed (docs/storage.md). */
int ctype_init(mb_err *err);
void ctype_fini(void);
const char *ctype_by_name(const char *name); /* by extension, or NULL; a static string */
char *ctype_detect(const char *name, const uint8_t *head, size_t n, bool *deep);
void ctype_mark(db_batch *b, uint64_t sid, uint64_t fid, uint64_t ver, uint64_t pid, const char *name);
void ctype_kick(void);

/* Open a file (version 0 = current) for reading; *info as above. */
int fs_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, fs_reader **r, json_t **info,
            mb_err *err);
/* Read up to n bytes at offset; returns bytes read (0 at end) or a negative MB_E* with err. A chunk
 * whose bytes do not match its hash is never returned (MB_EINTEGRITY). */
ssize_t fs_read(fs_reader *r, uint64_t off, void *buf, size_t n, mb_err *err);
void fs_close(fs_reader *r);
/* Zero-copy reads: the local chunk file holding byte off, verified first, as a new read-only
 * descriptor (the caller closes it) with the offset of off in it and the bytes from there to
 * the chunk's end. MB_EUNSUPP when the chunk is inline or in a module's backend. */
int fs_read_fd(fs_reader *r, uint64_t off, int *fd, uint64_t *fd_off, uint64_t *len, mb_err *err);
/* The len bytes from off as one span of one verified local chunk file: true with a new
 * descriptor (the caller owns it) and the span's offset in it; false when they cross chunk
 * files, are inline or in a module's backend, or cannot be read (read them with fs_read,
 * which says why). For answers sent with sendfile (http_reply_span). */
bool fs_span_fd(fs_reader *r, uint64_t off, uint64_t len, int *fd, uint64_t *fd_off);

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

/* --------------------------------------------------- files (branch files) --- */

/* More flags (same values as MB_FS_* in abi/mbyte.h). */
enum {
    FS_RECURSIVE = 1 << 2, /* delete: a folder with everything in it */
    FS_OVERWRITE = 1 << 3, /* move/copy: replace an existing file at the destination */
};

#define FS_NAME_MAX 255   /* bytes of one name after NFC */
#define FS_PATH_MAX 4096  /* bytes of a whole path */
#define FS_DEPTH_MAX 64   /* levels of a path */

/* Names and paths (pure; unit-tested). A name is NFC-normalised UTF-8 without '/', NUL or
 * control characters, not '.' or '..', 1..255 bytes. fs_name_normalize writes the NFC form
 * of in[0..n) into out (at least FS_NAME_MAX+1 bytes); on refusal err says which rule
 * ("name: may not be '..'"). fs_path_normalize splits on '/', ignores empty segments,
 * normalises each name and returns "a/b/c" ("" is the root), malloc'd in *out. */
int fs_name_normalize(const char *in, size_t n, char *out, mb_err *err);
int fs_path_normalize(const char *in, size_t n, char **out, mb_err *err);
/* May a new entry (file, folder, store) get this NFC name? Refuses the formatting characters
 * that can make a name show as something it is not (bidi embeddings, overrides and isolates,
 * the BOM, line and paragraph separators) with "name: may not contain U+202E ...". Checked
 * only where a name is created, so entries made before the rule stay reachable. Pure. */
int fs_name_creatable(const char *name, mb_err *err);

/* Stores. fs_store_create_batch puts store `id` (cluster_next_id("store")) with its owner index,
 * its placement record in cluster mode and the store.created event into b; the caller commits. */
void fs_store_create_batch(db_batch *b, uint64_t id, uint64_t uid, const char *name);
/* The stores `u` owns: a new JSON array of {"id","name","owner","created",...}. */
int fs_stores_list(const mb_user *u, json_t **out, mb_err *err);
/* One store `u` may reach (its owner); another user's store is MB_ENOENT. New reference. */
int fs_store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err);

/* Metadata of one entry (file or folder; "" is the root folder), new reference. */
int fs_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err);
/* {"path","entries":[...]} of a folder; recursive adds every entry below with its "path". */
int fs_list(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out, mb_err *err);
/* One page of a folder's children in name order, straight from the database (never the whole
 * folder): {"path","entries","total","limit","next_cursor"} where next_cursor (null on the
 * last page) continues after the page's last name. limit 0 is FS_LIST_DEFAULT; more than
 * FS_LIST_MAX is cut to it. A cursor not made here is MB_EINVAL. */
#define FS_LIST_DEFAULT 1000
#define FS_LIST_MAX 10000
int fs_list_page(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit, json_t **out,
                 mb_err *err);
/* Create a folder (FS_PARENTS creates missing parents). Exists -> MB_EEXIST. */
int fs_mkdir(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err);
/* Move or rename a file or a folder with its subtree, atomically (one batch). A folder into
 * itself -> MB_ECONFLICT; an existing destination -> MB_EEXIST unless FS_OVERWRITE (files). */
int fs_move(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
            mb_err *err);
/* Copy a file or a folder subtree; chunks are shared (refcounts up), no byte is copied. */
int fs_copy(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
            mb_err *err);
/* Delete a file, or a folder (not empty -> MB_ECONFLICT unless FS_RECURSIVE). */
int fs_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err);
/* The same; a folder of more than subtree_task_above entries is gone when this returns, and
 * a task (fs_big.c) frees what it held: its id in *task (0 when there is none). */
int fs_delete_task(const mb_user *u, uint64_t sid, const char *path, int flags, uint64_t *task, mb_err *err);
/* fs_copy; with task, a folder of more than subtree_task_above entries is copied by a task
 * (*task its id, *info NULL; the copy appears whole when it ends); without, in batches here. */
int fs_copy_task(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                 uint64_t *task, mb_err *err);

/* ------------------------------------------- big subtrees (kernel/fs_big.c) --- */

typedef struct {
    uint64_t sid, owner, uid;
} fs_who;
/* ns_drop_fn's for a deleted file (fs.c) and a purged one (history.c): versions, usage, the
 * file.deleted event; ud is an fs_who. */
void fs_file_deleted(txn *t, json_t *e, const char *path, void *ud);
void history_file_purged(txn *t, json_t *e, const char *path, void *ud);
/* A copy of file entry e as a new file (new id, version 1) sharing its chunks (fs.c). */
int fs_copy_file_into(txn *t, uint64_t sid, json_t *e, uint64_t uid, int64_t now, json_t **out, mb_err *err);
/* Does folder id hold more than subtree_task_above entries (counted no further)? */
bool fs_big_over(uint64_t sid, uint64_t id);
/* Put the journal record rec (stolen; docs/storage.md sj/) into t; its id. */
uint64_t fs_big_journal(txn *t, json_t *rec);
/* After the journal's transaction: run it here (here), or as a task owned by uid (*task). */
int fs_big_start(uint64_t jid, uint64_t uid, uint64_t *task, bool here, mb_err *err);
/* Register the task type and give every unfinished journal a task (after task_init). */
int fs_big_init(mb_err *err);
/* ------------------------------------ operations on a whole folder (bulk.c) --- */

/* Check body {"op":"move"|"copy"|"delete","folder","to","except":[names]} against what u may
 * do in store sid and queue the task that does it to every entry of the folder but the
 * excepted: *task its id, *total the entries it will go through. */
int bulk_submit(const mb_user *u, uint64_t sid, const json_t *body, uint64_t *task, int64_t *total, mb_err *err);
/* Register the task type and drop the notes of ended ones (after task_init). */
int bulk_init(mb_err *err);
/* ------------------------------------------- live migration of a store (migrate.c) --- */

/* Move store sid to placement p (PATCH /api/v1/stores/{sid}/config {"placement"}): an
 * administrator's call. 0 with *task the kernel.migrate task queued, 1 when the store is there
 * already (nothing to do), or MB_EPERM / MB_ENOENT / MB_EINVAL / MB_EUNSUPP / MB_ECONFLICT. */
int migrate_submit(const mb_user *u, uint64_t sid, const json_t *p, uint64_t *task, mb_err *err);
/* backend_placement_get, plus "migrating": {"from", "task"} while a migration runs. */
int migrate_placement_get(uint64_t sid, json_t **out, mb_err *err);
/* Register the task type; give a migration left without a live task one (after task_init). */
int migrate_init(mb_err *err);
/* What a migration asks of the other nodes in cluster mode (cluster_repl.c registers them at start,
 * NULL at stop; without them a cluster's migration keeps every old copy off this node's disk):
 * - spare: every other node that is up says which of refs' chunks ({hash: the store's references,
 *   counted here}, at most 1,000) it still needs and holds the others (a write of one waits) while
 *   drop(hash, ud) is called for each of them (0: deleted) on this thread, within the holds' time;
 *   then the holds end. The number dropped, or an MB_E* with err (nothing dropped: a node keeping or
 *   replicating a store is down, or did not answer). cluster_gc.c.
 * - to_replica: chunk hash (n bytes) of store sid, read from the store's placement, put on the disk
 *   of the store's replica when this node keeps it (a store moved onto this node's disk, whose replica
 *   read its chunks from a shared backend until then); 0 also when there is no replica. */
typedef struct migrate_cluster {
    int (*spare)(uint64_t sid, const json_t *refs, int (*drop)(const char *hash, void *ud), void *ud, mb_err *err);
    int (*to_replica)(uint64_t sid, const char *hash, size_t n, mb_err *err);
} migrate_cluster;
void migrate_on_cluster(const migrate_cluster *mc);
/* Safe overwrite (If-Match): the commit fails with MB_EPRECOND unless the file exists and
 * its current content hash is sha256 (64 lower-hex); checked under the commit lock. */
void fs_write_if_match(fs_writer *w, const char *sha256);
/* Check (and with repair, fix what is safe) chunks, refcounts and entries. New reference:
 * {"chunks_checked","files_checked","problems":[...],"repaired","unrepaired",...}. */
int fs_fsck(bool repair, json_t **report, mb_err *err);

/* ------------------------------------------------------------- chunker.c --- */
#define CHUNK_MIN (256u * 1024)
#define CHUNK_AVG (1024u * 1024)
#define CHUNK_MAX (4u * 1024 * 1024)
/* Length of the next chunk at p. Call with n >= CHUNK_MAX, or with what is left at the end
 * of the input; returns n when n <= CHUNK_MIN (0 only for n == 0). Pure, thread-safe. */
size_t chunker_cut(const uint8_t *p, size_t n);

/* ---------------------------------------------------------------- blob.c --- */
/* The chunk store: the active mb_blob_backend (the local one under <data>/chunks unless a
 * module registered another), inline chunks and the pending table. Refcounts ("c/<sha256>")
 * are txn.c's, the collector gc.c's. Keys are 64 lower-hex SHA-256 digests. Thread-safe. */
int blob_init(mb_err *err);
void blob_fini(void);
/* Store a chunk durably unless it is already there (dedup). The caller has marked hash as
 * pending (blob_pending_add) so the collector leaves it alone until the commit. */
int blob_put(const char *hash, const void *data, size_t len, mb_err *err);
/* Read the whole chunk into buf (len bytes) and verify its hash: MB_EINTEGRITY if the bytes
 * are not what the name says, MB_ENOENT if it is missing. */
int blob_get(const char *hash, void *buf, size_t len, mb_err *err);
/* The same, checked against `fastsum` (blob_fastsum of the bytes, recorded when the chunk was
 * written) instead of re-hashing with SHA-256; NULL or "" falls back to SHA-256. */
int blob_read(const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err);
/* XXH3-128 of the bytes as 32 lower-hex characters. */
void blob_fastsum(const void *data, size_t len, char out[33]);
/* Pending chunks: written or deduplicated by a write that has not committed yet. */
void blob_pending_add(const char *hash);
void blob_pending_drop(const char *hash);
/* Drop as pending after a failed write, deleting the chunk if no one else holds or names it.
 * Under the commit lock: call gc_discard. */
void blob_pending_drop_discard(const char *hash);
/* The collector's delete: 0 deleted, 1 held pending by a write (kept), or a negative MB_E*. */
int blob_del_unheld(const char *hash, mb_err *err);
void blob_pending_fini(void); /* blob_fini: the table's memory */
/* Every chunk a write holds pending now: a new array of hashes (migrate.c waits them out). */
json_t *blob_pending_snapshot(void);
bool blob_pending_held(const char *hash);
/* Run fn(ud) under the pending lock unless a write holds hash: fn's answer, or 1 (held). */
int blob_pending_unheld(const char *hash, int (*fn)(void *ud), void *ud);
/* Delete the inline form (ci/<sha256> and its body record) of a chunk into b. */
void blob_inline_del(db_batch *b, const char *hash);

/* ------------------------------------------------------------------ gc.c --- */
/* The chunk collector (gc.c): started after blob_init, stopped before blob_fini. */
int gc_init(mb_err *err);
void gc_fini(void);
/* Collect chunks unreferenced for longer than grace seconds and orphans older than it.
 * Returns how many chunks were deleted. */
int gc_run(int64_t grace, mb_err *err);
int64_t gc_grace_secs(void);
int64_t gc_interval_secs(void);
/* A hold is on (gc_hold): nothing may be deleted (cluster_gc.c claims every chunk meanwhile). */
bool gc_held(void);
/* Chunk hash has a refcount record (c/); an unreadable one counts as there (never delete on a
 * doubt). Any thread. */
bool chunk_recorded(const char *hash);
/* The time (Unix seconds) in a put record's value (po/<hash>, blob.c), 0 if unreadable. */
int64_t put_record_time(const char *v, size_t vl);
/* +1: the collector deletes nothing until the matching -1 (waits out a collection under way). */
void gc_hold(int delta);
/* A failed write drops chunk `hash` (blob_pending_drop_discard under the commit lock). */
void gc_discard(const char *hash);
/* backup.c: the kernel.backup task type and POST /api/v1/admin/backup (docs/operations.md). */
int backup_init(mb_err *err);
/* An administrator's backup request: dir checked (absolute, creatable, neither inside the data
 * directory nor holding it, no backup running), resolved into real, and a kernel.backup task
 * submitted for uid (*task its id). */
int backup_request(const char *dir, uint64_t uid, uint64_t *task, char real[4096], mb_err *err);
/* One backup into `dir` (absolute) now, on this thread; `t` (may be NULL) gets the progress. On
 * success *out is the result object (the caller owns it). MB_EBUSY while another runs. */
int backup_take(const char *dir, mb_task *t, json_t **out, mb_err *err);
/* format.c: the data format this mbyted writes, and the check at start (after db_open and
 * blob_init, before anything else): 0 ready; FORMAT_NEWER (refused) or FORMAT_OLDER (a migration
 * needs --backup DIR or --no-backup), which are also mbyted's exit statuses; or a negative MB_E*. */
#define MBYTE_FORMAT 2
enum { FORMAT_NEWER = 4, FORMAT_OLDER = 5 };
int format_check(const char *backup_dir, bool no_backup, mb_err *err);
/* Visit every stored chunk (fsck). */
int blob_list(int (*fn)(const char *hash, uint64_t size, int64_t mtime, void *ud), void *ud, mb_err *err);
bool blob_has(const char *hash); /* stored inline or in the active backend */
/* Inline chunks (blob.c): chunks of at most blob_inline_max() bytes are stored by putting
 * them into the batch that commits their first reference, instead of blob_put. */
size_t blob_inline_max(void);
bool blob_inline_has(const char *hash); /* ci/<hash> in LevelDB: the chunk is stored inline */
/* Put inline chunk `hash` into b unless it is stored already: true if it was put. Call it with
 * the commit lock held (txn_begin), so that two writes of the same new chunk do not both put
 * it (format 2 keeps its bytes under a key of their own, which the second would orphan). */
bool blob_put_inline(db_batch *b, const char *hash, const void *data, size_t len);
/* An inline chunk's body record (cb/<seq><sha256>, format 2): true with its hash when k is one
 * and its ci/ record names it; false for another key, or a body nobody names (fsck). */
bool blob_inline_body(const char *k, size_t kl, char hash[65]);
/* Make ci/<hash> name the body record k (fsck's repair of a pointer whose body is lost). */
void blob_inline_relink(db_batch *b, const char *k, const char *hash);
#define BODY_KEY 83 /* "cb/" + 16 hex + 64 hex */
/* The first byte of a ci/ record: the chunk's bytes follow (format 1, and every cb/ body record),
 * or the sequence of its cb/ body record as 16 hex digits (format 2). */
enum { INLINE_BYTES = 1, INLINE_AT = 2 };
/* A chunk handed to blob_put at this alignment (and at least this long) is written with
 * O_DIRECT by the local backend: allocate chunk buffers with blob_buf_alloc. */
#define BLOB_ALIGN 4096
void *blob_buf_alloc(size_t n); /* aligned to BLOB_ALIGN; give it back with blob_buf_free */
void blob_buf_free(void *p, size_t n);
/* A read-only descriptor on chunk `hash` (len bytes) in the kernel's local backend, its bytes
 * verified: 0 with *fd (the caller closes it); 1 when the chunk is not a local file (inline,
 * or another backend is active: read it with blob_read); a negative MB_E* code when it is
 * missing or fails verification. A chunk file verified before and still in the page cache
 * is not read again (blob.c, "verified while cached"); otherwise it is read into buf (len
 * bytes) to be checked, and *filled says buf now holds the chunk. With chunk_read_direct it is
 * read around the page cache (*buf from blob_chunk_buf): then *fd is -1, as nothing of it is
 * cached for a zero-copy send. Any thread. */
int blob_read_fd(const char *hash, const char *fastsum, uint8_t **buf, size_t len, int *fd, bool *filled, mb_err *err);
/* A buffer for one chunk (CHUNK_MAX bytes, aligned to BLOB_ALIGN) as blob_read_fd takes it:
 * *buf may come back as another such buffer (a chunk read ahead is handed over, not copied).
 * Give it back with free(). */
uint8_t *blob_chunk_buf(void);
/* Ask the local backend to start reading chunk `hash` (len bytes) into the page cache (or, with
 * chunk_read_direct, into a buffer of its own that blob_read_fd hands over), without
 * waiting: a reader going through a file's chunks in order calls it for the next few, so a
 * cold file streams at the disk's speed instead of one chunk-sized read at a time. With its
 * XXH3-128 (fastsum, may be "" or NULL) the read-ahead thread also verifies it, so the reader
 * finds it trusted (blob_read_fd) and the hashing runs beside the sending. */
void blob_prefetch(const char *hash, const char *fastsum, size_t len);
/* A trusted chunk file failed a read: the next read of it verifies it again. */
void blob_distrust(const char *hash);
int blob_del(const char *hash, mb_err *err);
/* Where blob_del_in deletes: this node's own disk, every other backend (docs/cluster.md). */
enum { BLOB_HERE = 1, BLOB_ELSEWHERE = 2 };
int blob_del_in(const char *hash, int where, mb_err *err);
/* The collector's delete: everywhere alone; in cluster mode this node's disk only, the rest left to
 * the leader's collector through a candidate record GC_CANDIDATE<hash> (cluster_gc.c). */
#define GC_CANDIDATE "gq/"
int blob_del_mine(const char *hash, mb_err *err);
/* blob_list alone, blob_list_local in cluster mode (the collector's and fsck's own chunks). */
int blob_list_mine(int (*fn)(const char *hash, uint64_t size, int64_t mtime, void *ud), void *ud, mb_err *err);
/* Every backend but this node's disk (cluster_gc.c's listing for orphans). */
int blob_list_elsewhere(int (*fn)(const char *hash, uint64_t size, int64_t mtime, void *ud), void *ud, mb_err *err);
/* The cluster's collector's hold (blob_pending.c): a chunk condemned until `until_ms` (monotonic)
 * may not be taken by a write (blob_pending_add waits) until blob_condemn_end. false: a write holds
 * it already (not condemned). */
bool blob_condemn(const char *hash, int64_t until_ms);
void blob_condemn_end(const char *hash);
/* Condemned, with at least `left_ms` of its hold to go. */
bool blob_condemned(const char *hash, int64_t left_ms);
int blob_backend_register(mb_module *owner, const mb_blob_backend *b, void *state, mb_err *err);
void blob_backend_unregister(mb_module *owner);
/* The same for a chunk of store sid: put to / read from the backend its placement names
 * (backend.c). MB_EBUSY when that backend is not loaded. */
/* Visit every chunk of the kernel's own (active) backend only, as blob_list does. */
int blob_list_local(int (*fn)(const char *hash, uint64_t size, int64_t mtime, void *ud), void *ud, mb_err *err);
/* The scrub's check of every piece of chunk `hash` (len bytes) on every redundancy set holding
 * it, the missing and bad ones rewritten (backend_set_check): 0, or the first failure. */
int blob_check_pieces(const char *hash, size_t len, mb_err *err);
int blob_put_store(uint64_t sid, const char *hash, const void *data, size_t len, mb_err *err);
/* Called (on the writer's store thread) with every chunk blob_put_store wrote to this node's own
 * disk: cluster_repl.c copies it to the store's replica while the upload goes on. Set once. */
void blob_on_store_put(void (*fn)(uint64_t sid, const char *hash, const void *data, size_t len));
int blob_read_store(uint64_t sid, const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err);
struct backend_ref;
/* blob_read_store through r, a backend the caller entered (backend_for_store) and keeps: a
 * reader that holds its store's backend for the whole download (fs_read.c). */
int blob_read_ref(struct backend_ref *r, const char *hash, const char *fastsum, void *buf, size_t len, mb_err *err);
/* blob_read_fd for a chunk of store sid: 1 (read it with blob_read_store) when the store is not
 * on the local disk. */
int blob_read_fd_store(uint64_t sid, const char *hash, const char *fastsum, uint8_t **buf, size_t len, int *fd,
                       bool *filled, mb_err *err);
/* Live migration (migrate.c): put chunk hash (len bytes, fastsum as recorded) to `to` (NULL: the
 * local disk) unless it is there whole already, its bytes read from `from` (NULL: local), or
 * else wherever they are, and verified first: 0 copied, 1 there already, or a negative MB_E*. */
int blob_copy_placed(struct backend_ref *from, struct backend_ref *to, const char *hash, const char *fastsum,
                     size_t len, mb_err *err);
/* Delete chunk hash from r (NULL: the local disk) only: 0, or a negative MB_E*. */
int blob_del_placed(struct backend_ref *r, const char *hash, mb_err *err);

/* ------------------------------------------------------------- backend.c --- */
/* Named blob backends that modules register, and which one a store's placement names
 * (issue 21). "local" is blob.c's own and never in the table. Thread-safe. */
#define BACKEND_NAME_MAX 32
#define CRYPT_KEY 32
typedef struct backend_ref {
    mb_module *owner; /* entered: backend_leave when done */
    mb_blob_backend ops;
    void *state;
    char name[BACKEND_NAME_MAX + 1];
    bool encrypt;           /* the store's placement encrypts (crypt.c): */
    uint8_t nk[CRYPT_KEY];  /* its object-name key */
    uint8_t ck[CRYPT_KEY];  /* its content key */
    struct bset *set;       /* a redundancy set (backend_set.c): ops/state are the set's, owner NULL */
} backend_ref;
bool backend_name_ok(const char *name);
int backend_register(mb_module *owner, const char *name, const mb_blob_backend *b, void *state, mb_err *err);
void backend_remove_owner(mb_module *owner);
/* Unloading owner: its backends are found by no lookup (true) or again (false, the unload refused). */
void backend_close_owner(mb_module *owner, bool closing);
/* Look a backend up by name and enter its owner: 0, or MB_EBUSY (not registered). */
int backend_enter(const char *name, backend_ref *out, mb_err *err);
void backend_leave(backend_ref *r);
/* Every registered backend, each entered (leave each), at most max. */
size_t backend_enter_all(backend_ref *out, size_t max);
/* The backend of store sid's placement: 1 for "local" (nothing entered), 0 with *out entered,
 * or a negative MB_E* (MB_EBUSY: its module is not loaded). */
int backend_for_store(uint64_t sid, backend_ref *out, mb_err *err);
bool backend_store_local(uint64_t sid);
/* Check a placement object given at store creation: 0, or MB_EINVAL / MB_EUNSUPP with a sentence. */
int backend_placement_check(const json_t *p, mb_err *err);
/* {"backend","encrypt"} of p (NULL: local, not encrypted), a new reference. */
json_t *backend_placement_norm(const json_t *p);
/* The placement record of a new store from a checked p (NULL: local): normalised, and with
 * "key" (a new data key wrapped by the master key) when it encrypts. *out: new reference. */
int backend_placement_make(const json_t *p, json_t **out, mb_err *err);
/* A store record with an encrypting or set placement was written: those stores are read anew. */
void backend_enc_changed(void);
/* Every store reached only through its own view, each entered (leave each), at most max: the
 * encrypting stores (their backend with their keys) and the stores on redundancy sets (the set,
 * one view per distinct unencrypted set). For the collector, fsck and the scrub, which know a
 * chunk only by its hash; 0 when there are none. */
size_t backend_store_views(backend_ref *out, size_t max);
int backend_placement_get(uint64_t sid, json_t **out, mb_err *err);
/* Live migration (migrate.c): store sid's record changed its placement; drop what is cached of
 * it (and re-read the encrypting stores). */
void backend_placement_forget(uint64_t sid);
/* backend_for_store for the placement record p (the store's key, if it encrypts, in p). */
int backend_for_placement(uint64_t sid, const json_t *p, backend_ref *out, mb_err *err);
/* The two placements put chunks in the same place (a wrapped key is not compared). */
bool backend_placement_same(const json_t *a, const json_t *b);
/* ---------------------------------------------------------------- crypt.c --- */
/* Chunk encryption for external backends (docs/crypto.md). CRYPT_KEY (32) byte keys. */
#define CRYPT_BLOCK 65536
#define CRYPT_HDR 20  /* "MBE1" + 16-byte nonce prefix */
#define CRYPT_NAME 67 /* "e/" + 64 hex + NUL */
/* Read a key source ("file:/path": 64 hex, owner-only) into out, with its 16-hex key id. */
int crypt_key_load(const char *source, uint8_t out[CRYPT_KEY], char kid[17], mb_err *err);
/* mbyte.yaml names a master_key; else false with err set. */
bool crypt_available(mb_err *err);
/* Wrap / unwrap a store's data key with the master key (kernel key-wrap registry; "v1:" keys of
 * the first format are opened too). *wrapped: malloc'd. May block (transit:): never the loop. */
int crypt_key_wrap(const uint8_t dk[CRYPT_KEY], char **wrapped, mb_err *err);
int crypt_key_unwrap(const char *wrapped, uint8_t dk[CRYPT_KEY], mb_err *err);
/* The same data key under the newest version of the master key (a "v1:" key moves to the
 * registry's format); the data is not touched. *out: malloc'd. */
int crypt_key_rewrap(const char *wrapped, char **out, mb_err *err);
/* A new version of the master key (transit:; a file: key cannot, MB_EUNSUPP). */
int crypt_key_rotate(mb_err *err);
/* The same with a given key (mbyte-decrypt): wrapped strings are "v1:<kid>:<hex>". */
int crypt_wrap_with(const uint8_t key[CRYPT_KEY], const char *kid, const uint8_t dk[CRYPT_KEY], char *out, size_t n);
int crypt_unwrap_with(const uint8_t key[CRYPT_KEY], const char *kid, const char *wrapped, uint8_t dk[CRYPT_KEY],
                      mb_err *err);
void crypt_subkeys(const uint8_t dk[CRYPT_KEY], uint8_t nk[CRYPT_KEY], uint8_t ck[CRYPT_KEY]);
/* The object name of chunk `hash` (64 hex) under name key nk; -1 for a bad hash. */
int crypt_name(const uint8_t nk[CRYPT_KEY], const char *hash, char out[CRYPT_NAME]);
size_t crypt_sealed_size(size_t len);
/* The plaintext length of an object of objlen bytes, or -1 if none has that size. */
int64_t crypt_plain_size(uint64_t objlen);
/* Encrypt chunk `hash` (len > 0 bytes) into out (crypt_sealed_size(len) bytes). */
int crypt_seal(const uint8_t ck[CRYPT_KEY], const char *hash, const void *in, size_t len, uint8_t *out);
/* Decrypt and authenticate every block into out (len bytes): 0, or MB_EINTEGRITY (out wiped). */
int crypt_open(const uint8_t ck[CRYPT_KEY], const char *hash, const uint8_t *obj, size_t objlen, uint8_t *out,
               size_t len, mb_err *err);

/* ---------------------------------------------------------------- piece.c --- */
/* The pieces of a redundancy set and their Reed-Solomon code (ISA-L; docs/storage.md
 * "Redundancy sets"). A piece: 24-byte header, shard, 8-byte XXH3-64. Pure, any thread. */
#define PIECE_HDR 24
#define PIECE_SUM 8
#define PIECE_MAX 16                      /* k + m at most */
#define PIECE_OBJ_MAX (64u * 1024 * 1024) /* an object (a chunk, sealed or not) is far smaller */
typedef struct piece_hdr {
    unsigned k, m, i;
    uint64_t len; /* the whole object's */
    uint64_t tag; /* XXH3-64 of the whole object: which pieces belong together */
} piece_hdr;
size_t piece_shard(uint64_t len, unsigned k); /* S = ceil(len / k) */
size_t piece_size(uint64_t len, unsigned k);  /* PIECE_HDR + S + PIECE_SUM */
/* k data + m parity pieces: k >= 1, k + m <= PIECE_MAX, m >= 1 unless k == 1 (a copy). */
bool piece_geometry_ok(unsigned k, unsigned m);
/* 0 with *h when p (n bytes) is one whole, sound piece; MB_EINTEGRITY otherwise. */
int piece_parse(const uint8_t *p, size_t n, piece_hdr *h);
/* The header alone (the first PIECE_HDR of n bytes), for a ranged read: the checksum is not
 * checked. 0 with *h, or MB_EINTEGRITY. */
int piece_parse_header(const uint8_t *p, size_t n, piece_hdr *h);
/* Cut obj (len bytes) into the k + m pieces out[i], each piece_size(len, k) bytes. */
int piece_encode(unsigned k, unsigned m, const void *obj, size_t len, uint8_t *const out[]);
/* The object (len bytes into obj) from any k of the pieces have[i] (NULL: missing; the others
 * parsed sound with this k, m, len and one tag): 0, or MB_ENOENT with fewer than k. */
int piece_decode(unsigned k, unsigned m, uint8_t *const have[], size_t len, uint8_t *obj);

/* ----------------------------------------------------------- backend_set.c --- */
/* A redundancy set: "copies" or "erasure" over named member backends, one composite backend. */
typedef struct backend_set_spec {
    uint64_t sid;
    bool erasure;
    unsigned copies;  /* copies: N durable before a put is acknowledged */
    unsigned k, m, n; /* erasure: k data + m parity; n: members */
    char of[PIECE_MAX][BACKEND_NAME_MAX + 1];
} backend_set_spec;
/* *out becomes the set (ops, state, set; members entered, a missing one taken as down). */
int backend_set_open(const backend_set_spec *spec, backend_ref *out, mb_err *err);
void backend_set_close(struct bset *s);
/* Read every piece of object `key` (objlen bytes) from every member and rewrite the missing
 * and bad ones (the scrub): 0 when all were sound or were repaired, MB_EIO when a member did not
 * answer twice (its piece is not known sound; the rest was checked), else MB_E* with err. */
int backend_set_check(backend_ref *r, const char *key, size_t objlen, mb_err *err);
/* Pieces waiting for backend `name` (the queue rq/, docs/storage.md). */
long backend_set_queued(const char *name);
void backend_set_init(void); /* the queue's retry thread: blob_init */
void backend_set_fini(void);

/* GET /api/v1/admin/backends' rows: [{"name","type","state","objects","bytes","queued","stores"}],
 * local first; listing every backend (blocking: HTTP worker). New reference. */
json_t *backend_status(void);
/* How many stores are placed on backend name, or still hold chunks there (a migration from it). */
long backend_stores_on(const char *name);
/* Backends declared in the web page (bd/<name> = {"v":1,"type","settings","by","time"}): one
 * record, written and deleted synced, and module type's as {name: settings} (new reference). */
int backend_decl_get(const char *name, json_t **out);
int backend_decl_put(const char *name, const json_t *rec);
int backend_decl_del(const char *name);
json_t *backend_declared(const char *type);
void backend_fini(void);
/* backend_http.c: the route table of GET /api/v1/admin/backends (main.c registers it). */
extern const kroute backend_routes[];

/* ---------------------------------------------------------- files_http.c --- */
extern const kroute files_routes[]; /* files_http.c */

/* ------------------------------------------------- history.c (branch history) --- */
/* Trash, versions and integrity (issue 5). history_* are the kernel primitives behind the
 * minor-2 mb_api calls (abi/mbyte.h documents each); the file operations consult three:
 *   history_keep_versions  at overwrite: runs the file.version.drop filters; true when a
 *                          module (versioning) answered MB_HANDLED. Called in the commit's transaction.
 *   history_damaged        at open: MB_EINTEGRITY with a sentence if the version is marked.
 *   history_fsck_live      fsck: adds the "f/<sid>/<fid>/" prefixes of trashed files.
 * history.c works on the namespace through ns.h, like fs.c. */
bool history_keep_versions(uint64_t sid, uint64_t owner, uint64_t fid, const char *path);
int history_damaged(uint64_t sid, uint64_t fid, uint64_t ver, const char *path, mb_err *err);
void history_fsck_live(json_t *live);
int history_detach(const mb_user *u, uint64_t sid, const char *path, int flags, uint64_t by, uint64_t *id,
                   mb_err *err);
int history_attach(const mb_user *u, uint64_t sid, uint64_t id, char **path, mb_err *err);
int history_purge(const mb_user *u, uint64_t sid, uint64_t id, mb_err *err);
int history_trash_list(const mb_user *u, uint64_t sid, json_t **out, mb_err *err);
int history_versions(const mb_user *u, uint64_t sid, const char *path, json_t **out, mb_err *err);
int history_version_restore(const mb_user *u, uint64_t sid, const char *path, uint64_t version, json_t **info,
                            mb_err *err);
int history_version_delete(const mb_user *u, uint64_t sid, const char *path, uint64_t version, mb_err *err);
int history_chunk_list(const char *after, int (*fn)(const char *hash, uint64_t size, void *ud), void *ud,
                       mb_err *err);
int history_chunk_verify(const char *hash, mb_err *err);
int history_chunk_files(const char *hash, json_t **out, mb_err *err);
int history_mark_damaged(uint64_t sid, uint64_t fid, uint64_t ver, const char *reason, bool damaged, mb_err *err);

#endif
