/*
 * abi/mbyte.h — the one header a module includes: the versioned kernel API.
 *
 * A module is a shared object that exports one data symbol, `mb_module_descriptor`
 * (use MB_MODULE_EXPORT). The descriptor is data: name, version, dependencies and
 * tables of routes, hooks and task types. The kernel reads the tables, then calls
 * init() with a table of function pointers (mb_api). The module never links against
 * kernel symbols, so it can be unloaded and reloaded while the server runs.
 *
 * Versioning (Vulkan/Win32 style):
 *   - MB_ABI_MAJOR changes only when something is removed or changes meaning; a module
 *     built for another major is refused.
 *   - New calls are appended at the END of mb_api and bump MB_ABI_MINOR. A module built
 *     against minor N loads into any kernel with minor >= N.
 *   - Every struct that crosses the ABI starts with `size_t size` (sizeof as the module
 *     saw it), so a newer kernel can tell which fields an older module filled in.
 * The change log of every version is in docs/modules.md ("ABI versions").
 *
 * mb_api is laid out by topic: lifecycle, config, storage, files, hooks, tasks and timers,
 * HTTP, users and auth, logging and errors. Calls added by later minors go at its end.
 *
 * JSON values crossing the ABI are jansson `json_t`. Modules link libjansson themselves.
 * Reference rules are jansson's: a function documented as "borrows" does not take a
 * reference; one documented as "steals" takes the caller's reference.
 *
 * Threads: route handlers run on libmicrohttpd worker threads; filters run on the thread
 * that performs the operation (an HTTP worker, an FTP transfer's worker job or the loop
 * thread for other FTP commands, a task worker); observers run on the event-loop thread and
 * must not block (hand slow work to a task); task runners and timer callbacks run on the
 * worker pool. Every function in mb_api is thread-safe unless its comment says otherwise.
 */
#ifndef MBYTE_ABI_H
#define MBYTE_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdarg.h>
#include <jansson.h>

struct event_base; /* libevent's, for api->event_base */

#ifdef __cplusplus
extern "C" {
#endif

#define MB_ABI_MAJOR 2
#define MB_ABI_MINOR 2

/* Log levels for api->log. */
enum { MB_LOG_DEBUG = 0, MB_LOG_INFO = 1, MB_LOG_WARN = 2, MB_LOG_ERROR = 3 };

/* Metrics a module feeds (api->metric_add). */
enum { MB_METRIC_FTP_SESSIONS = 1, MB_METRIC_FTP_BYTES_IN = 2, MB_METRIC_FTP_BYTES_OUT = 3 };

/* ---------------------------------------------------------------- errors --- */

/* Status codes: 0 is success, failures are negative (libuv style). One kernel table maps
 * each code to an HTTP status and an FTP reply, so every door reports a failure alike. */
enum {
    MB_OK = 0,
    MB_EINVAL = -1,      /* bad input: 400 / 501 */
    MB_EAUTH = -2,       /* not authenticated: 401 / 530 */
    MB_EPERM = -3,       /* authenticated but not allowed: 403 / 550 */
    MB_ENOENT = -4,      /* no such thing: 404 / 550 */
    MB_EEXIST = -5,      /* already exists: 409 / 553 */
    MB_ECONFLICT = -6,   /* state conflict (missing parent, not empty): 409 / 553 */
    MB_ETOOBIG = -7,     /* body or field too large: 413 / 552 */
    MB_EQUOTA = -8,      /* quota or storage limit: 507 / 552 */
    MB_ERANGE = -9,      /* unsatisfiable range: 416 / 554 */
    MB_EPRECOND = -10,   /* precondition failed: 412 / 550 */
    MB_EGONE = -11,      /* expired: 410 / 550 */
    MB_ETHROTTLE = -12,  /* too many attempts: 429 / 421 */
    MB_EBUSY = -13,      /* temporarily unavailable: 503 / 450 */
    MB_EUNSUPP = -14,    /* not supported: 415 or 501 / 502 */
    MB_EINTEGRITY = -15, /* stored bytes failed verification: 500 / 451 */
    MB_EIO = -16,        /* storage failure: 500 / 451 */
    MB_ENOMEM = -17,     /* out of memory: 500 / 451 */
    MB_ECANCELED = -18,  /* the operation was cancelled: 409 / 426 */
    MB_EAGAIN = -19,     /* transient: try again later (tasks retry with backoff) */
    MB_EMETHOD = -20,    /* method not allowed: 405 / 502 */
    MB_EINTERNAL = -21,  /* a bug: 500 / 451 */
};

/* Not an error: a filter returns MB_HANDLED (a positive code) to say "I took this operation
 * over, consider it done". Only the operations documented to accept it do:
 *   file.delete        the trash moved the entry away; fs_delete answers success and deletes nothing.
 *   file.version.drop  the versioning module keeps the previous version of a file being
 *                      overwritten; the kernel keeps it instead of dropping it. This filter runs
 *                      under the kernel's commit lock: it must only look at the payload and answer,
 *                      never call a file function.
 * Everywhere else a positive return from a filter is a refusal like any other. */
enum { MB_HANDLED = 1 };

/* An error a person will read: a code and one sentence. Filled by api->err_set. */
typedef struct mb_err {
    int code;
    char msg[256];
} mb_err;

/* ------------------------------------------------------------ opaque types --- */

typedef struct mb_module mb_module; /* the kernel's handle for one loaded module */
typedef struct mb_req mb_req;       /* one HTTP request, valid until the handler returns */
typedef struct mb_task mb_task;     /* one running task, valid until its runner returns */
typedef struct mb_throttle mb_throttle; /* a named failure throttle, valid until the server ends */
/* A listing decorator adds fields to one entry (an info object, borrowed) of a
 * folder listing of store sid. HTTP worker thread; it must not block for long (one kv_get per
 * entry is fine). */
typedef void (*mb_listing_fn)(uint64_t sid, json_t *entry, void *state);
/* A listing filter (ABI 2.1, tags branch) may remove entries from a folder listing of store sid
 * the HTTP API is about to answer (`listing` is {"path","entries":[info...]}, borrowed and
 * changeable), reading its own query arguments from req (api->req_query_all). 0, or a negative
 * code with err filled to answer with that problem (a malformed filter: MB_EINVAL). HTTP worker. */
typedef int (*mb_listing_filter_fn)(mb_req *req, uint64_t sid, json_t *listing, void *state, mb_err *err);
/* A module service (ABI 2.1, tags branch): a named function one module offers to others without
 * linking them together (the search module offers a file's extracted text, tags offers which
 * entries carry which tags). `arg` is borrowed; *out a new reference (may stay NULL). Any thread;
 * it must not block for long. */
typedef int (*mb_service_fn)(const json_t *arg, json_t **out, void *state, mb_err *err);

typedef struct mb_timer mb_timer;       /* a module's timer, valid until it is cancelled or the module stops */

enum { MB_ROLE_NONE = 0, MB_ROLE_USER = 1, MB_ROLE_ADMIN = 2 };

/* The authenticated caller. Valid for the lifetime of the request or task that gave it. */
typedef struct mb_user {
    size_t size;
    uint64_t id;
    const char *name;
    int role; /* MB_ROLE_USER or MB_ROLE_ADMIN */
} mb_user;

/* Reading a member of a JSON object (a record, a payload, a body): NULL or 0 when the member
 * is missing or of another type. Borrowed like json_object_get. */
static inline const char *mb_jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}
static inline int64_t mb_jint(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

/* ---------------------------------------------------------- module tables --- */

/* A route handler. Runs on an HTTP worker thread. It must answer through api->reply_*
 * exactly once and return 0; returning a negative code with `err` filled answers with
 * that problem instead. Per-request memory comes from api->req_alloc and is freed when
 * the request ends. */
typedef int (*mb_route_fn)(mb_req *req, void *state, mb_err *err);

typedef struct mb_route {
    size_t size;
    const char *method;  /* "GET", "POST", ... any token, e.g. "PROPFIND" */
    const char *pattern; /* "/api/v1/hello/{name}"; a last segment "{path*}" takes the rest. Under
                          * /api/ or /dav/ */
    int role;            /* least role: MB_ROLE_NONE (public), MB_ROLE_USER, MB_ROLE_ADMIN */
    mb_route_fn fn;
    /* Optional: called as soon as the headers are in and the caller
     * is authorized, before any of the body is read (same thread and rules as fn). It may
     * answer at once with api->reply_* (the body is then dropped unread: a refused upload costs
     * no bytes), take the body as a stream with api->req_body_sink (then the sink's end
     * answers and fn is never called), or do neither and return 0: the body is buffered as
     * usual and fn runs. A negative return answers with err. */
    mb_route_fn begin;
} mb_route;

/* A filter runs synchronously before an operation; returning a negative code with `err`
 * filled refuses the operation. `payload` is borrowed and may be read, not kept. */
typedef int (*mb_filter_fn)(const char *event, json_t *payload, void *state, mb_err *err);
/* An observer runs after the change is durable, on the loop thread, at least once per
 * event (the kernel's outbox survives crashes). It must not block. */
typedef void (*mb_observer_fn)(const char *event, const json_t *payload, void *state);

/* Batched observers. The dispatcher delivers the outbox in turns (up to a few
 * hundred events each, on the loop thread) and ends every turn with ONE LevelDB write that
 * deletes the delivered outbox entries. A batched observer puts its own writes into that
 * same write (api->batch_put / batch_del), so they land atomically with the deletion of the
 * events they answer: after a crash either both are there or neither is (then the events
 * come again), and an observer that records each event once stays exactly-once. It also
 * costs one write per turn instead of one per event. The handle is valid only during the
 * call it is passed to; writes in it are invisible to kv_get/kv_scan until `done`. */
typedef struct mb_batch mb_batch;
typedef void (*mb_batch_observer_fn)(const char *event, const json_t *payload, mb_batch *b, void *state);
/* Called once per turn, after the last event of the turn this subscription saw and before
 * the turn's write: put what summarises the turn (a head, a counter) once, not per event. */
typedef void (*mb_flush_fn)(mb_batch *b, void *state);
/* Called once per turn after the turn's write: status 0 means it is in LevelDB's log, ordered
 * before anything written later (unsynced: an OS crash may lose it together with the outbox
 * deletions, and the events come again); a negative status means nothing of the turn was
 * written and its events will be delivered again, so state kept in memory for the turn must
 * be rolled back. Work that must follow the write (starting deliveries, pruning) goes here. */
typedef void (*mb_done_fn)(int status, void *state);

enum { MB_HOOK_FILTER = 1, MB_HOOK_OBSERVER = 2 };

typedef struct mb_hook {
    size_t size;
    const char *event; /* "file.created"; "*" for every event (observers only) */
    int kind;          /* MB_HOOK_FILTER or MB_HOOK_OBSERVER */
    int priority;      /* lower runs first; equal priorities run in load order */
    mb_filter_fn filter;
    mb_observer_fn observer;
    /* Observers only, all optional: an observer sets observer OR observer_batch;
     * flush and done are called once per turn in which the subscription saw an event (once
     * per distinct (flush, done, state) of a module, however many hooks share them). */
    mb_batch_observer_fn observer_batch;
    mb_flush_fn flush;
    mb_done_fn done;
} mb_hook;

/* A task runner runs on the worker pool. Return 0 when done, MB_EAGAIN (or any negative
 * code with err filled) to fail this attempt; the kernel retries with exponential backoff
 * up to max_attempts, then marks the task failed with the last error's sentence. */
typedef int (*mb_task_fn)(mb_task *task, const json_t *args, void *state, mb_err *err);

typedef struct mb_task_type {
    size_t size;
    const char *name; /* global, e.g. "hello.sleep" */
    mb_task_fn run;
    int max_attempts; /* 0 means the kernel default (5) */
} mb_task_type;

/* A config key with its default. The kernel validates the module's YAML against this
 * table before init: unknown keys and wrong types are refused with file:line. */
enum { MB_CFG_STRING = 1, MB_CFG_INT = 2, MB_CFG_BOOL = 3, MB_CFG_LIST = 4, MB_CFG_MAP = 5 /* ABI 2.1 */ };

typedef struct mb_config_key {
    size_t size;
    const char *name;
    int type;
    const char *default_value; /* as YAML text; NULL for none */
    int64_t min, max;          /* for MB_CFG_INT; both 0 means unbounded */
} mb_config_key;

typedef struct mb_api mb_api;

typedef struct mb_module_desc {
    size_t size;
    uint32_t abi_major, abi_minor; /* MB_ABI_MAJOR, MB_ABI_MINOR as the module was built */
    const char *name;              /* must equal the file name without ".so" */
    const char *version;           /* the module's own version, "1.2.0" */
    const char *description;
    const char *const *depends;    /* NULL-terminated names of modules it needs, or NULL */
    const mb_config_key *config;   /* arrays end with an entry whose first pointer is NULL */
    const mb_route *routes;
    const mb_hook *hooks;
    const mb_task_type *tasks;
    /* init: called once on the loop thread after the tables were registered (they are
     * live only once init returned 0). `config` is the validated YAML as JSON, borrowed.
     * Set *state to the module's private state; it is passed to every callback. */
    int (*init)(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err);
    /* fini: called once no call into the module is in flight (its timers are cancelled
     * before). Returning a negative code
     * refuses an unload (the module stays ACTIVE); on the reload path it is never refused. */
    int (*fini)(void *state, bool reloading, mb_err *err);
    /* reconfigure: optional; a new validated config while running. */
    int (*reconfigure)(void *state, const json_t *config, mb_err *err);
} mb_module_desc;

#define MB_MODULE_SYMBOL "mb_module_descriptor"
#define MB_MODULE_EXPORT __attribute__((visibility("default"))) const mb_module_desc mb_module_descriptor

/* ------------------------------------------------------------------ files --- */

/* A blob backend stores chunks: immutable byte strings named by the lower-hex SHA-256 of
 * their content (64 chars). The kernel's local backend keeps them under <data>/chunks; a
 * module (S3, WebDAV, encryption, replication) registers its own with
 * api->blob_backend_register. The kernel verifies every chunk it reads against its name,
 * so a backend need not. All functions are called from any thread, concurrently, and may
 * block (they run on HTTP workers and task workers, never on the loop thread). */
typedef struct mb_blob_backend {
    size_t size;
    const char *name; /* "local", "s3", ... */
    /* Store len bytes under key durably before returning 0 (a crash after 0 must not lose
     * them). `data` is borrowed. A key that exists may be overwritten with equal bytes. */
    int (*put)(void *state, const char *key, const void *data, size_t len, mb_err *err);
    /* Read up to len bytes at off into buf; returns the bytes read (0 past the end), or
     * MB_ENOENT / another negative code with err filled. */
    int64_t (*get)(void *state, const char *key, uint64_t off, void *buf, size_t len, mb_err *err);
    /* 1 if key exists, 0 if not, negative on failure. */
    int (*has)(void *state, const char *key, mb_err *err);
    /* Remove key; a missing key is success. */
    int (*del)(void *state, const char *key, mb_err *err);
    /* Optional (NULL if the backend cannot list): call fn for every key with its size and
     * modification time (Unix seconds) until fn returns non-zero. Used by fsck and the
     * collector to find orphans. Pointers passed to fn are borrowed for the call. */
    int (*list)(void *state, int (*fn)(const char *key, uint64_t size, int64_t mtime, void *ud), void *ud,
                mb_err *err);
    /* ABI 2.1 (ext), optional: 1 with *size and *mtime (Unix seconds) filled if key exists,
     * 0 if not, negative on failure. A backend without it is asked `has`. */
    int (*stat)(void *state, const char *key, uint64_t *size, int64_t *mtime, mb_err *err);
} mb_blob_backend;

/* Open files. A reader or writer belongs to one thread at a time; close or finish it on
 * any thread. */
typedef struct mb_file_reader mb_file_reader;
typedef struct mb_file_writer mb_file_writer;

enum {
    MB_FS_PARENTS = 1 << 0,      /* create missing parent folders */
    MB_FS_NO_OVERWRITE = 1 << 1, /* write: refuse if the path exists (MB_EEXIST) */
    MB_FS_RECURSIVE = 1 << 2,    /* delete: a folder with everything in it */
    MB_FS_OVERWRITE = 1 << 3,    /* move/copy: replace an existing file at the destination */
};

/* ------------------------------- app passwords and streamed request bodies --- */

/* What an app password may reach (api->apppass_check). */
typedef struct mb_apppass_scope {
    size_t size;
    uint64_t store;  /* 0: every store of the user; else only this store */
    bool read_only;  /* true: reading only (no write, move, copy, delete, folder creation) */
    bool account;    /* true: it was the account password (allow_account), not an app password */
    char id[17];     /* the app password's id ("" for the account password) */
} mb_apppass_scope;

/* A request body taken as a stream (api->req_body_sink, from a route's begin). Called on the
 * request's HTTP worker thread, in order: data for each piece as it arrives (`buf` borrowed
 * for the call; a negative return stops the upload: the rest is dropped and abort follows),
 * then exactly one of end (the body is complete: it must answer with api->reply_*, or return
 * a negative code with err filled) or abort (the client went away, or data failed: free ctx,
 * store nothing). The module stays loaded until end or abort has returned. */
typedef struct mb_body_sink {
    size_t size;
    int (*data)(mb_req *req, void *ctx, const void *buf, size_t n, mb_err *err);
    int (*end)(mb_req *req, void *ctx, mb_err *err);
    void (*abort)(mb_req *req, void *ctx);
} mb_body_sink;

/* A timer callback (api->timer_add). Runs on a worker of the pool (it may block), never
 * twice at once for one timer; the module counts as busy while it runs. */
typedef void (*mb_timer_fn)(void *arg);

/* --- vault (2.1): a secret provider (api->secret_provider_set). get resolves the part of a
 * reference after "<scheme>:" to a value (malloc'd, NUL-terminated; the kernel frees it),
 * or fails with err naming the reference only. It is called wherever references are
 * resolved (module loads and reconfigures on the loop thread, api->secret_get on any
 * thread): it must answer from memory when it can and block only for a first read.
 * refresh (may be NULL) re-reads every value now (blocking; an HTTP or worker thread) and
 * returns 1 when one changed, 0 when none did, or a negative code. */
typedef struct mb_secret_ops {
    size_t size;
    int (*get)(void *ctx, const char *rest, char **value, mb_err *err);
    int (*refresh)(void *ctx, mb_err *err);
} mb_secret_ops;

/* A key-wrap provider (api->keywrap_provider_set): `name` is the part of the key reference
 * after "<scheme>:". Same contracts as api->key_wrap and its neighbours. May block. */
typedef struct mb_keywrap_ops {
    size_t size;
    int (*wrap)(void *ctx, const char *name, const uint8_t *key, size_t n, char **wrapped, mb_err *err);
    int (*unwrap)(void *ctx, const char *name, const char *wrapped, uint8_t *key, size_t n, mb_err *err);
    int (*rewrap)(void *ctx, const char *name, const char *wrapped, char **rewrapped, mb_err *err);
    int (*datakey)(void *ctx, const char *name, uint8_t *key, size_t n, char **wrapped, mb_err *err);
    int (*rotate)(void *ctx, const char *name, mb_err *err);
} mb_keywrap_ops;

/* -------------------------------------------------------------- the API --- */

struct mb_api {
    size_t size;
    uint32_t abi_major, abi_minor;

    /* ----------------------------------------------------------- lifecycle --- */

    /* The kernel's libevent base. Touch it only from the loop thread (init, fini, observers
     * and the module's own event callbacks run there); the module links libevent itself.
     * Every event the module adds must be freed by its fini. */
    struct event_base *(*event_base)(void);

    /* The data directory (absolute or as configured); borrowed, valid while the server runs.
     * A module keeps its files under <data_dir>/m/<module>/. */
    const char *(*data_dir)(void);

    /* The module directory (module_dir in mbyte.yaml), where a module's helper programs and
     * data files are installed beside its .so (the .so itself runs from a copy in modcache).
     * Borrowed; copy it in init (a config reload may change it). Loop thread. */
    const char *(*module_dir)(void);

    /* Wall clock in seconds; tests may shift it (MBYTE_CLOCK_OFFSET) so retention is testable. */
    int64_t (*now)(void);

    /* -------------------------------------------------------------- config --- */

    /* Read a YAML file of the configuration directory (conf.d) as JSON (new reference):
     * `file` is a plain file name ("store-template.yaml"); a '/' or ".." is refused.
     * Errors name file:line. */
    int (*conf_load)(const char *file, json_t **out, mb_err *err);

    /* ------------------------------------------------------------- storage --- */

    /* Keys are namespaced by the kernel as "m/<module>/<key>" so modules cannot collide
     * with each other or with kernel tables. Values are owned by the caller (free()). */
    int (*kv_get)(mb_module *self, const char *key, char **value, size_t *len, mb_err *err);
    int (*kv_put)(mb_module *self, const char *key, const void *value, size_t len, bool sync, mb_err *err);
    int (*kv_del)(mb_module *self, const char *key, bool sync, mb_err *err);

    /* Calls fn for each key with the given prefix in key order until fn returns non-zero.
     * The key passed to fn is without the module namespace; both pointers are borrowed. */
    int (*kv_scan)(mb_module *self, const char *prefix,
                   int (*fn)(const char *key, const void *value, size_t len, void *ud), void *ud, mb_err *err);

    /* kv_scan with each value parsed as JSON: fn gets the key (without the module namespace)
     * and the value as a json_t, both borrowed for the call (json_incref to keep it). A
     * value that is not JSON is skipped with a warning in the log. fn returns non-zero to
     * stop. Replaces the scan + json_loadb loop:
     *     static int one(const char *key, json_t *v, void *ud) { ...; return 0; }
     *     api->kv_scan_json(self, "share/", one, &ctx, err); */
    int (*kv_scan_json)(mb_module *self, const char *prefix, int (*fn)(const char *key, json_t *value, void *ud),
                        void *ud, mb_err *err);

    /* --------------------------------------------------------------- files --- */

    /* Ownership rules for every call below (SQLite style):
     *  - `u` is the user on whose behalf the call acts; it may reach only the stores it owns
     *    (admins too: the admin role is not a way into other people's files). Another user's
     *    store answers MB_ENOENT, exactly like a store that does not exist. u == NULL acts
     *    as the system (a module's background work) and reaches every store.
     *  - Paths are '/'-separated inside the store ("" or "/" is the root); every name is
     *    checked and NFC-normalised as the HTTP API does; refusals are MB_EINVAL with the
     *    rule in err.
     *  - JSON results are NEW references the caller must json_decref; `info` objects have
     *    "path","name","type" ("file"|"folder"),"size","mtime","sha256","version","ctype",
     *    "created","created_by","updated","updated_by".
     *  - Filters (file.write, file.write.chunk, file.delete, file.move, file.copy,
     *    folder.create) run inside these calls, and events are raised by them: a module
     *    calling them is subject to quotas and seen by observers like any door. */
    /* Register a blob backend owned by `self`; it becomes the one new chunks are written to
     * and read from (the kernel's local backend otherwise). `b` and `state` must stay valid
     * until the module is unloaded; the kernel drops the registration then. */
    int (*blob_backend_register)(mb_module *self, const mb_blob_backend *b, void *state, mb_err *err);

    /* Stores: *out is a new array of the stores `u` owns / one store `u` may reach. */
    int (*store_list)(const mb_user *u, json_t **out, mb_err *err);
    int (*store_get)(const mb_user *u, uint64_t sid, json_t **out, mb_err *err);

    /* Metadata of one file or folder (*info new reference). */
    int (*file_stat)(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err);

    /* {"path","entries":[info...]} of a folder; recursive adds the whole subtree (each
     * entry then carries its "path" relative to the folder). */
    int (*folder_list)(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out,
                       mb_err *err);

    /* Read a file: version 0 is the current one. *r is owned by the caller until
     * file_close; *info (may be NULL if not wanted) is a new reference. file_read returns
     * the bytes read at off (fewer than n is normal; 0 at the end) or a negative code;
     * a chunk whose bytes do not match its hash is never returned (MB_EINTEGRITY). */
    int (*file_open)(const mb_user *u, uint64_t sid, const char *path, uint64_t version, mb_file_reader **r,
                     json_t **info, mb_err *err);
    int64_t (*file_read)(mb_file_reader *r, uint64_t off, void *buf, size_t n, mb_err *err);

    /* For sendfile: the stored chunk file that holds byte `off` of r's version, verified
     * against its checksum before this returns (like file_read), as a new read-only
     * descriptor *fd that the caller closes, with *fd_off the position of `off` in it and
     * *len the bytes from there to the chunk's end (take less near the end of a range). The
     * chunk file is immutable, so the bytes stay what was verified. MB_EUNSUPP when the bytes
     * are not in a local chunk file (small chunks kept in the metadata database, a module's
     * backend): use file_read for those. Same threads as file_read. */
    int (*file_read_fd)(mb_file_reader *r, uint64_t off, int *fd, uint64_t *fd_off, uint64_t *len, mb_err *err);
    void (*file_close)(mb_file_reader *r);

    /* Write a file as a stream: begin (filters run with expected_size, -1 when unknown),
     * data any number of times, then exactly one of commit or abort. expect_sha256 (64
     * lower-hex) or NULL is verified at commit; a mismatch stores nothing. commit frees w
     * in every case and on success gives the file's info (new reference) and whether it
     * was created (else replaced). Nothing is visible to readers before commit returns 0. */
    int (*file_write_begin)(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                            const char *expect_sha256, int flags, mb_file_writer **w, mb_err *err);
    int (*file_write_data)(mb_file_writer *w, const void *buf, size_t n, mb_err *err);
    int (*file_write_commit)(mb_file_writer *w, json_t **info, bool *created, mb_err *err);
    void (*file_write_abort)(mb_file_writer *w);

    /* Namespace changes, each one atomic and durable when it returns 0. info may be NULL. */
    int (*folder_create)(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err);
    int (*file_move)(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                     mb_err *err);
    int (*file_copy)(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                     mb_err *err);
    int (*file_delete)(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err);

    /* Answer `req` with the file at `path` exactly as GET /api/v1/stores/{sid}/files/{path}
     * does (Range, If-Range, ETag, conditionals, HEAD, Content-Disposition; ?download=1 forces
     * an attachment), or, when `path` is a folder, with the subtree as a streamed zip (501 in
     * builds without kernel/zip.c). `u` as for the file calls (NULL = the system: the module
     * must have checked that the caller may reach `path`). Returns 0 once the answer is
     * under way, or a negative code with err filled and nothing sent; after a 0 the handler
     * returns it and adds nothing (in a cluster the answer comes from the node that keeps the
     * store, after the handler returned). HTTP worker thread. */
    int (*reply_file)(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err);

    /* Register fn (one per module; a reloaded copy's replaces the old copy's) to decorate the
     * file entries of every folder listing the HTTP API answers (GET .../files/{path}?list),
     * or with fn NULL remove this copy's own. Call it in init, and with NULL in fini: the
     * removal returns once no call of fn is in flight, and fn is never called after it. */
    int (*listing_decorator_set)(mb_module *self, mb_listing_fn fn, void *state, mb_err *err);

    /* --------------------------------- history: trash, versions, integrity --- */

    /* Same ownership rules as the file calls above (u NULL is the system; another user's
     * store is MB_ENOENT; JSON results are new references). Each change is one synced batch
     * under the kernel's commit lock, with its event in the same batch. */
    /* Trash. detach moves the entry at `path` (a folder with its whole subtree; a non-empty
     * folder needs MB_FS_RECURSIVE) out of the namespace into a trash record of store sid,
     * keeping every version and chunk reference; `by` is the user recorded as having deleted
     * it. *id receives the record id. Emits file.trashed. No filter runs (the trash calls it
     * from its file.delete filter). */
    int (*trash_detach)(const mb_user *u, uint64_t sid, const char *path, int flags, uint64_t by, uint64_t *id,
                        mb_err *err);

    /* Put record `id` back at its original path, creating missing parent folders; if the path
     * is taken the entry gets a free " (restored)" / " (restored N)" name. *path (may be NULL)
     * receives where it went, malloc'd: the caller free()s it. Emits file.restored. */
    int (*trash_attach)(const mb_user *u, uint64_t sid, uint64_t id, char **path, mb_err *err);

    /* Drop record `id` for good: its versions' chunk references go down (the collector frees
     * the bytes). Emits file.deleted for each file and file.purged. */
    int (*trash_purge)(const mb_user *u, uint64_t sid, uint64_t id, mb_err *err);

    /* The trash records of store sid, oldest first: [{"id","store","path","name","type",
     * "size","deleted","deleted_by"}]. With u NULL and sid 0: every store's records. */
    int (*trash_list)(const mb_user *u, uint64_t sid, json_t **out, mb_err *err);

    /* Versions of the file at path, oldest first: [{"version","size","sha256","author",
     * "time","current"}]. */
    int (*version_list)(const mb_user *u, uint64_t sid, const char *path, json_t **out, mb_err *err);

    /* Make a copy of `version` the newest version (history kept; chunks shared, no byte
     * copied). *info (may be NULL) is the file's new info. Emits file.updated with
     * "restored_from". */
    int (*version_restore)(const mb_user *u, uint64_t sid, const char *path, uint64_t version, json_t **info,
                           mb_err *err);

    /* Delete one version that is not the current one (MB_ECONFLICT for the current one);
     * its chunk references go down in the same batch. Emits file.version.deleted. */
    int (*version_delete)(const mb_user *u, uint64_t sid, const char *path, uint64_t version, mb_err *err);

    /* Integrity. chunk_list calls fn for every chunk some version references (refcount > 0)
     * in hash order, starting after `after` (NULL or "" for the first), until fn returns
     * non-zero; `hash` is borrowed for the call. Any thread; reads a consistent snapshot. */
    int (*chunk_list)(const char *after, int (*fn)(const char *hash, uint64_t size, void *ud), void *ud,
                      mb_err *err);

    /* Re-read chunk `hash` from the active backend and re-hash it: 0 if whole, MB_EINTEGRITY
     * if its bytes differ from its name, MB_ENOENT if the backend lost it. Blocks on I/O. */
    int (*chunk_verify)(const char *hash, mb_err *err);

    /* Every file version referencing `hash` (a scan of the version records): new array of
     * {"store","owner","file_id","version","current","path"} ("path" is null when the file is
     * in the trash, then "trash_id" is set). */
    int (*chunk_files)(const char *hash, json_t **out, mb_err *err);

    /* Mark (damaged true) or unmark one version of a file: while marked, opening that version
     * fails with MB_EINTEGRITY and `reason` in the sentence, so no door serves it. Synced. */
    int (*file_mark_damaged)(uint64_t sid, uint64_t file_id, uint64_t version, const char *reason, bool damaged,
                             mb_err *err);

    /* -------------------------------------------------------------- stores --- */

    /* Store management for the multistore, taskmgr, storeconfig and quotas modules.
     * A store is "provisioning" from store_create until store_ready: hidden from its owner
     * (GET /api/v1/stores does not list it, every file call answers MB_ENOENT) but
     * reachable by the system (u == NULL), which fills it. A store being deleted is
     * hidden from everyone. JSON results are new references the caller json_decrefs. */
    /* Create a store for user `owner` in the provisioning state with initial settings
     * (borrowed object, may be NULL); synced. store.created is raised by store_ready. */
    int (*store_create)(uint64_t owner, const char *name, const json_t *settings, uint64_t *sid, mb_err *err);

    /* Make a provisioning store visible and raise store.created (same batch). Idempotent. */
    int (*store_ready)(uint64_t sid, mb_err *err);

    /* Rename (u must own it, or NULL for the system); raises store.renamed. */
    int (*store_rename)(const mb_user *u, uint64_t sid, const char *name, mb_err *err);

    /* Hide the store at once and take its usage off the owner's (one batch). u NULL may
     * also begin deleting a provisioning store (a rollback) and may call it again on a
     * store already being deleted (a resumed task). */
    int (*store_delete_begin)(const mb_user *u, uint64_t sid, mb_err *err);

    /* Remove up to max_keys entries and versions of a store being deleted, releasing their
     * chunk references. Returns 1 while more is left, 0 when the store is gone (the last
     * step removes the record and raises store.deleted; chunks nobody references any more
     * are deleted then), negative on failure. Idempotent, so a task can resume it after a
     * crash; *removed (may be NULL) receives how many keys this step removed. Blocks: call
     * it from a task. */
    int (*store_delete_step)(uint64_t sid, int max_keys, int64_t *removed, mb_err *err);

    /* Every store of `owner` (0: of everyone), provisioning and deleting ones included,
     * each with "state": "provisioning" | "ready" | "deleting" and "settings". */
    int (*store_list_all)(uint64_t owner, json_t **out, mb_err *err);

    /* Usage, kept by the kernel in the same batch as every change, in store sid or (sid == 0)
     * in every ready store of user `owner`: {"bytes","files","current","versions","trash"},
     * `bytes` being everything stored (current versions, old versions and the trash) and the
     * other three its parts (docs/api.md). Exact across crashes. No ownership check: the
     * caller checks. The caller owns *out. */
    int (*usage_get)(uint64_t sid, uint64_t owner, json_t **out, mb_err *err);

    /* The store's settings object (kept in its record; {} if none) / replace it whole. No
     * ownership check and no validation: storeconfig validates. */
    int (*store_settings_get)(uint64_t sid, json_t **out, mb_err *err);
    int (*store_settings_set)(uint64_t sid, const json_t *settings, mb_err *err);

    /* The user's default store (the one the web page opens): the one set, else the oldest
     * ready store. set: u must own sid. */
    int (*store_default_get)(uint64_t owner, uint64_t *sid, mb_err *err);
    int (*store_default_set)(const mb_user *u, uint64_t sid, mb_err *err);

    /* --------------------------------------------------------------- hooks --- */

    /* Run the filters of `event` on payload (borrowed). 0, or the first refusal. */
    int (*hook_filter)(const char *event, json_t *payload, mb_err *err);

    /* Record an event in the durable outbox (synced) and wake the observers. Steals payload. */
    int (*hook_emit)(const char *event, json_t *payload, mb_err *err);

    /* Add a put / a delete of the module's key (namespaced "m/<module>/<key>" like kv_put) to
     * the dispatcher turn's write `b` (see mb_batch_observer_fn). Loop thread, only while the
     * observer_batch or flush call that was given `b` runs; MB_EINVAL otherwise. `value` is
     * copied. Later puts of the same key in one turn win. */
    int (*batch_put)(mb_batch *b, mb_module *self, const char *key, const void *value, size_t len, mb_err *err);
    int (*batch_del)(mb_batch *b, mb_module *self, const char *key, mb_err *err);

    /* ------------------------------------- tasks, timers and blocking work --- */

    /* Queue a task of a registered type for `owner` (a user id, 0 for the system).
     * Steals args. On success *id holds the task id. */
    int (*task_submit)(const char *type, uint64_t owner, json_t *args, uint64_t *id, mb_err *err);

    /* From a runner: report progress (0..100) and a short message; returns true if the
     * task was cancelled and the runner should stop (returning MB_ECANCELED). */
    bool (*task_progress)(mb_task *task, int percent, const char *message);

    /* From a runner: set the result object shown to the user (steals). */
    void (*task_result)(mb_task *task, json_t *result);
    uint64_t (*task_id)(mb_task *task);
    uint64_t (*task_owner)(mb_task *task);

    /* Run work(arg) on a worker thread, then done(arg) on the loop thread. The module counts
     * as busy (it is not unloaded) until done has returned. arg is the module's; the kernel
     * only passes it along. */
    int (*run_blocking)(mb_module *self, void (*work)(void *arg), void (*done)(void *arg), void *arg, mb_err *err);

    /* Run fn(arg) after delay_ms milliseconds, and then every period_ms milliseconds when
     * period_ms > 0 (0: once). The timer belongs to `self`: the kernel cancels every timer
     * of a module when it is unloaded or reloaded, before its fini is called, and waits for
     * a run in progress. fn runs on a worker of the pool (it may block; a recurring timer's
     * next run is counted from the end of the previous one, so runs never overlap). *timer
     * (may be NULL) receives a handle for timer_cancel, valid until the timer is cancelled
     * or, for a one-shot timer, has run. Any thread. */
    int (*timer_add)(mb_module *self, int64_t delay_ms, int64_t period_ms, mb_timer_fn fn, void *arg,
                     mb_timer **timer, mb_err *err);

    /* Cancel a timer: it does not fire again. A run already in progress finishes (the module
     * stays busy until then). Any thread, including the timer's own callback; NULL is a no-op. */
    void (*timer_cancel)(mb_timer *timer);

    /* ---------------------------------------------------------------- HTTP --- */

    const char *(*req_method)(mb_req *req);
    const char *(*req_path)(mb_req *req);

    /* A {name} from the route pattern, percent-decoded, or NULL. Owned by the request. */
    const char *(*req_param)(mb_req *req, const char *name);

    /* A query argument or a request header, or NULL. Owned by the request. */
    const char *(*req_query)(mb_req *req, const char *name);
    const char *(*req_header)(mb_req *req, const char *name);

    /* The caller, or NULL on a public route without credentials. */
    const mb_user *(*req_user)(mb_req *req);
    const char *(*req_client_ip)(mb_req *req);

    /* The body parsed as a JSON object (bodies are capped at 1 MiB for module routes).
     * Returns a borrowed reference owned by the request, or NULL with err filled. */
    json_t *(*req_json)(mb_req *req, mb_err *err);

    /* The raw request body (module routes buffer it, capped like JSON bodies): *data is owned
     * by the request (NULL with *len 0 when there was none). Returns 0. */
    int (*req_body)(mb_req *req, const void **data, size_t *len);

    /* From a route's begin only: take the request body as a stream into `sink` (borrowed,
     * must stay valid until end or abort) with the module's `ctx`. 0, or MB_EINVAL outside a
     * begin call or after an answer was given. */
    int (*req_body_sink)(mb_req *req, const mb_body_sink *sink, void *ctx, mb_err *err);

    /* Memory that lives until the request ends; never NULL (aborts on exhaustion). */
    void *(*req_alloc)(mb_req *req, size_t n);

    /* Answer: JSON body (steals `body`), a problem (from err), or raw bytes (copied). */
    int (*reply_json)(mb_req *req, int status, json_t *body);
    int (*reply_error)(mb_req *req, const mb_err *err);
    int (*reply_bytes)(mb_req *req, int status, const char *content_type, const void *data, size_t len);

    /* Add a response header to the answer about to be sent (call before reply_*). */
    void (*reply_header)(mb_req *req, const char *name, const char *value);

    /* ------------------------------------------------------ users and auth --- */

    /* One account: by name when `name` is not NULL, else by `id`. 0 with *out filled (its
     * name copied into namebuf, out->name pointing there), or MB_ENOENT with err filled
     * ("no user 'x'"). out may be NULL to test existence. Never blocks on a password hash. */
    int (*user_lookup)(uint64_t id, const char *name, mb_user *out, char *namebuf, size_t namelen, mb_err *err);

    /* Check an account password with the kernel's login throttling (per IP and per user,
     * like POST /api/v1/auth/login): 0 with *out filled (out->name points into namebuf),
     * MB_EAUTH for a wrong name or password, MB_ETHROTTLE while locked out. Blocks for the
     * argon2id verification (tens of ms): call it through run_blocking, never on the loop. */
    int (*auth_password)(const char *username, const char *password, const char *client_ip, mb_user *out,
                         char *namebuf, size_t namelen, mb_err *err);

    /* True if `password` matches `hash` (a libsodium crypto_pwhash_str string, argon2id). A
     * match is remembered for login_cache_ttl seconds (mbyte.yaml), so a client that logs in
     * for every transfer pays argon2id once, not each time; a mismatch is never remembered,
     * and a new hash (a changed password) is a new entry. The kernel keeps only a keyed hash
     * of (hash, password). Neither string is kept. Any thread; it may take ~70 ms on a miss. */
    bool (*password_check)(const char *hash, const char *password);

    /* The login throttle auth_password applies (per account and address, per address, and
     * per account slowed; limits in mbyte.yaml): seconds before `username` may try a password
     * from `client_ip` (0: now), with err filled (MB_ETHROTTLE and a sentence naming the wait)
     * when not 0. For a door that checks passwords of its own (FTP app passwords) before
     * auth_password, which records the failures. Records nothing. Any thread, never blocks. */
    int64_t (*login_wait)(const char *username, const char *client_ip, mb_err *err);

    /* Check `password` for `username` against the user's app passwords (POST
     * /api/v1/account/app-passwords, and the FTP module's older ones, which reach everything),
     * and, only when allow_account is true, against the account password. The kernel's login
     * throttle applies first and counts a failure once (MB_ETHROTTLE with the wait in err while
     * locked out). 0 with *out filled (out->name points into namebuf) and *scope saying what
     * the password may reach; MB_EAUTH for a wrong name or password. Blocks for argon2id on a
     * cache miss (password_check): HTTP worker or run_blocking, never the loop thread. */
    int (*apppass_check)(const char *username, const char *password, const char *client_ip, bool allow_account,
                         mb_user *out, char *namebuf, size_t namelen, mb_apppass_scope *scope, mb_err *err);

    /* The kernel's one failure throttle (the login throttle is built from it). A throttle
     * counts failures per key (any string; longer than 159 bytes is cut) in a window of
     * window_s seconds that starts at the key's first failure. Once a key has `max` failures
     * in its window it must wait: until the window ends (slow_s 0: a lock), or slow_s seconds
     * after each further failure (slow_s > 0: slowed, never locked; for things many addresses
     * share, such as an account or a link). Combine keys, e.g. (link, address) as a lock and
     * the link alone as slowed, so an attacker locks out only himself.
     * throttle_get: the throttle called `name` (namespace it: "<module>.<what>"), created on
     * first use and updated to these limits on each call. The kernel owns it; the pointer
     * stays valid until the server ends, across the module's unload and reload (counts
     * survive a reload). Memory is bounded (old keys are forgotten first). */
    mb_throttle *(*throttle_get)(const char *name, int max, int window_s, int slow_s);

    /* Seconds `key` must wait before it may try again (rounded up: use it as Retry-After),
     * 0 when it may try now. Records nothing. */
    int64_t (*throttle_wait)(mb_throttle *t, const char *key);

    /* Record one failure for `key`; returns what throttle_wait would now. */
    int64_t (*throttle_fail)(mb_throttle *t, const char *key);

    /* Forget `key`'s failures (after a success, for the most specific key only). */
    void (*throttle_clear)(mb_throttle *t, const char *key);

    /* Send a notification to one user's event stream (and keep it in their list).
     * kind: "info" | "success" | "warning" | "error". Borrowed strings. */
    int (*notify)(uint64_t user, const char *kind, const char *title, const char *body);

    /* ----------------------------------------------------------- scripting --- */

    /* Run `script` (a file name under scripts/lua/) calling its global function `fn` with
     * `arg` converted to a Lua table; the returned value comes back as JSON (new reference
     * in *result, may be NULL). Instruction and memory limits apply. */
    int (*lua_call)(const char *script, const char *fn, const json_t *arg, json_t **result, mb_err *err);

    /* ----------------------------------------- logging, metrics and errors --- */

    /* Log a line prefixed with the module's name at `level` (MB_LOG_DEBUG, MB_LOG_INFO,
     * MB_LOG_WARN, MB_LOG_ERROR). Never pass secrets. */
    void (*log)(mb_module *self, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

    /* Add delta to one of the kernel's metrics that a module feeds (GET /metrics, see
     * docs/operations.md): MB_METRIC_FTP_SESSIONS is a gauge (+1 when a control connection
     * opens, -1 when it closes); MB_METRIC_FTP_BYTES_IN/OUT count file bytes received and
     * sent. A metric this kernel does not know is ignored. Lock-free, any thread. */
    void (*metric_add)(int metric, int64_t delta);

    /* Fill err with a code and a printf-formatted sentence; returns code. */
    int (*err_set)(mb_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

    /* The FTP reply code for an MB_E* code, from the kernel's one error table. */
    int (*err_ftp_reply)(int code);

    /* --- vault (2.1): secret references and key wrapping (kernel/secret.c) --- */

    /* Register (ops not NULL) or remove (ops NULL; only the owner's) the secret provider for
     * references "<scheme>:<rest>" in any configuration value (docs/security.md). ops and ctx
     * stay the module's; the kernel counts the module busy while it calls them and drops the
     * registration when the module is unloaded. Loop thread (init, fini). */
    int (*secret_provider_set)(mb_module *self, const char *scheme, const struct mb_secret_ops *ops, void *ctx,
                               mb_err *err);

    /* Resolve one reference ("env:NAME", "file:/path", "vault:secret/app#key@3", ...): 0 with
     * *value (NUL-terminated, the caller frees it, best with sodium_memzero first), or a
     * negative code with err naming the reference, never a value. The read is recorded
     * (the "secret.read" event: module and reference). May block on a provider's first read:
     * a worker thread, an HTTP thread or init, not an observer. */
    int (*secret_get)(mb_module *self, const char *ref, char **value, mb_err *err);

    /* A provider says cached values changed (a new KV version): the kernel re-resolves every
     * module's configuration on the loop and calls reconfigure where it differs. Any thread. */
    void (*secrets_changed)(void);

    /* Register (ops not NULL) or remove (NULL) the key-wrap provider for key references
     * "<scheme>:<name>" (the vault module's "transit"; "file" is built in). Loop thread. */
    int (*keywrap_provider_set)(mb_module *self, const char *scheme, const struct mb_keywrap_ops *ops, void *ctx,
                                mb_err *err);

    /* Key wrapping for data keys (external storage, docs/modules.md "Secrets and key wrapping").
     * keyref is "file:/path/master.key" or "transit:<key name>". wrapped strings are printable
     * (safe in JSON and kv) and the caller frees them. key_wrap: n bytes of key -> *wrapped.
     * key_unwrap: *wrapped -> exactly n bytes into key (MB_EINVAL if the length differs).
     * key_rewrap: the same key under the newest version of keyref's key, never in the clear
     * outside the provider where it can. key_datakey: a fresh random key of n bytes and its
     * wrapped form. key_rotate: a new version of keyref's key (older versions still unwrap).
     * Any thread but the loop (they may block on the network): worker, HTTP or task thread. */
    int (*key_wrap)(const char *keyref, const uint8_t *key, size_t n, char **wrapped, mb_err *err);
    int (*key_unwrap)(const char *keyref, const char *wrapped, uint8_t *key, size_t n, mb_err *err);
    int (*key_rewrap)(const char *keyref, const char *wrapped, char **rewrapped, mb_err *err);
    int (*key_datakey)(const char *keyref, uint8_t *key, size_t n, char **wrapped, mb_err *err);
    int (*key_rotate)(const char *keyref, mb_err *err);
    /* --- tags (2.1): listing filters, repeated query arguments, module services, Lua rule text --- */

    /* Register fn (one per module, replaced by a reloaded copy's; fn NULL removes this copy's,
     * returning once no call is in flight) to filter the entries of every folder listing the HTTP
     * API answers, before the decorators run. Call it in init, and with NULL in fini. */
    int (*listing_filter_set)(mb_module *self, mb_listing_filter_fn fn, void *state, mb_err *err);

    /* Every value of query argument `name` in order (?tag=a&tag=b): a new array of strings, empty
     * when there is none. The caller json_decrefs it. */
    json_t *(*req_query_all)(mb_req *req, const char *name);

    /* Offer fn under `name` ("<module>.<what>"; one owner per name, a reloaded copy's replaces the
     * old copy's; fn NULL withdraws this copy's, returning once no call is in flight). Call it in
     * init, and with NULL in fini. */
    int (*service_set)(mb_module *self, const char *name, mb_service_fn fn, void *state, mb_err *err);

    /* Call the service `name`: MB_ENOENT ("no service x") when no loaded module offers it. */
    int (*service_call)(const char *name, const json_t *arg, json_t **out, mb_err *err);

    /* lua_call with the script's source text given (`name` names it in errors, "x.lua"), for
     * rules kept in a module's kv rather than scripts/lua/. Same sandbox and budgets, plus the
     * wall-clock limit every call has (MBYTE_LUA_SECONDS, 5 s by default). */
    int (*lua_run)(const char *name, const char *src, const char *fn, const json_t *arg, json_t **result,
                   mb_err *err);

    /* Compile `src` without running it: 0, or MB_EINVAL with "name:LINE: message" in err. */
    int (*lua_check)(const char *name, const char *src, mb_err *err);

    /* --- ext (2.1): named blob backends and store placement (docs/storage.md "Backends") --- */

    /* Register backend `name` (1-32 of [a-z0-9_-]; "local" is the kernel's own disk) served by
     * `b` with `state`, owned by `self`. Stores placed on it ({"backend": name} at store
     * creation) keep their chunks there. b->size must cover `list`; put, get, has and del are
     * required. MB_EEXIST if another module holds the name; a reloaded copy of the same module
     * takes its old copy's names over. `b`, `state` and `name`'s characters are copied / must
     * stay valid until the module's fini returned: the kernel removes the module's backends
     * then, and calls into them in flight finish first (the module stays busy). No call starts
     * once an unload has begun (so fini may free what the backend uses); a fini that refuses
     * the unload gets its backends back. While a backend
     * is missing, every read and write of a store placed on it is refused with MB_EBUSY (503);
     * nothing is lost, and it works again once a module registers the name. Loop thread (init). */
    int (*backend_register)(mb_module *self, const char *name, const mb_blob_backend *b, void *state, mb_err *err);

    /* The placement of store sid, {"backend": name, "encrypt": bool}, or a redundancy set
     * {"copies": N, "of": [names], "encrypt": bool} / {"erasure": {"data": k, "parity": m},
     * "of": [names], "encrypt": bool} (new reference in *out);
     * {"backend": "local", "encrypt": false} for a store made without one. No ownership
     * check. A placement is given at creation as store_create's settings member "placement"
     * (validated there: an unknown backend is MB_EINVAL) and kept in the store record, apart
     * from the settings. Any thread. */
    int (*store_placement_get)(uint64_t sid, json_t **out, mb_err *err);
    /* --- dav (2.1): answers streamed by a module --- */
    /* Answer `req` with a body of unknown length (chunked) that `read` produces after the
     * handler has returned: read fills buf with 1..max bytes and returns how many, 0 at the
     * end, or a negative MB_E* code to cut the answer short (the client sees a broken
     * transfer). read runs on HTTP worker threads, one call at a time; it must not touch
     * `req` (it is gone by then). free_ctx (may be NULL) runs exactly once, when the answer
     * ends or the client leaves. The module `self` stays busy (not unloaded) until free_ctx
     * has returned. Headers set with reply_header before this call are sent. 0, or a negative
     * code with err filled (then nothing was sent and free_ctx was not called). */
    int (*reply_stream)(mb_module *self, mb_req *req, int status, const char *content_type,
                        int64_t (*read)(void *ctx, char *buf, size_t max), void *ctx, void (*free_ctx)(void *ctx),
                        mb_err *err);
    /* --- scale (2.1): folders of any size --- */

    /* One page of folder `path` in name order without loading the folder (docs/api.md "list"):
     * *out is {"path","entries":[...],"total","limit","next_cursor"}; pass next_cursor (a
     * string, NULL for the first page) to get the page after; next_cursor is null on the last
     * page. limit 0 is the default (1,000), more than 10,000 is cut to 10,000. A page holds
     * every entry present throughout exactly once while entries come and go. Any thread. */
    int (*folder_page)(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit,
                       json_t **out, mb_err *err);
    /* --- migrate (2.1): live migration of a store (docs/storage.md "Live migration") --- */

    /* Move store sid to placement p (as at creation: {"backend": name, "encrypt": bool}) while it
     * is used: an administrator's call (u->role MB_ROLE_ADMIN, else MB_EPERM). 0 with *task the
     * kernel.migrate task that copies the chunks (new writes go to p at once); 1 when the store is
     * there already (nothing queued); MB_EINVAL / MB_EUNSUPP for a bad placement (as at
     * creation), MB_ENOENT for no such store, MB_ECONFLICT while a migration of it runs. `p` is
     * the caller's. May block (a new data key is wrapped, maybe by Vault): never the loop thread.
     * store_placement_get's answer has "migrating": {"from", "task"} meanwhile. A module checks
     * api->size > offsetof(mb_api, store_migrate) before calling it. */
    int (*store_migrate)(const mb_user *u, uint64_t sid, const json_t *p, uint64_t *task, mb_err *err);
    /* --- walk (2.1): a subtree of any size in bounded memory --- */

    /* Every entry under folder `path` of store sid ("" for the root; not the folder itself), depth
     * first, a folder before what it holds, each folder's entries in name order: fn(entry, ud) with
     * the entry as folder_page gives it plus "relpath" (its path under `path`). Memory follows the
     * depth of the tree (one page of 1,000 entries per level), not its size: for a whole subtree use
     * this, not folder_list(recursive). An entry present throughout the walk is seen exactly once;
     * one added or removed meanwhile may or may not be. fn returning non-zero stops the walk, which
     * returns that value; a folder removed while walked is skipped. Authorized as folder_page for u
     * (NULL: the system). May take long: never the loop thread. A module checks api->size >
     * offsetof(mb_api, folder_walk) before calling it. */
    int (*folder_walk)(const mb_user *u, uint64_t sid, const char *path, int (*fn)(const json_t *entry, void *ud),
                       void *ud, mb_err *err);
    /* --- queues (2.1): a queue read from where the last read stopped --- */

    /* kv_scan over the keys with `prefix` that sort after `after` (a key as fn was given it, with
     * the prefix; NULL or "" for the first key): a queue's reader passes the last key it took, so
     * it does not step again over the deleted keys in front of it. LevelDB keeps a deleted key as a
     * tombstone until a compaction reaches the bottom level, and a scan from the prefix walks them
     * all: a queue that is read from its start each time costs more the more it has carried. A
     * reader whose keys do not only grow (written out of order, or named by path) must still start
     * from the front now and then. A module checks api->size > offsetof(mb_api, kv_scan_after). */
    int (*kv_scan_after)(mb_module *self, const char *prefix, const char *after,
                         int (*fn)(const char *key, const void *value, size_t len, void *ud), void *ud, mb_err *err);
    /* --- cluster (2.1): a module's records that belong to a store --- */

    /* Declare that this module's keys "<prefix><sid16>" and "<prefix><sid16>/..." (sid16: store
     * sid as 16 lower-hex digits, "%016llx") are store sid's records. In cluster mode
     * (docs/cluster.md) they then travel with the store: kv_put and kv_del of such a key, for a
     * store this node keeps, go through the store's commit path and return once its replica has the
     * change (so they may wait for the other node: never call them on the loop thread), and
     * filling a new replica and moving the store carry them; on a node that does not keep the store
     * they are written there only, as any key (not replicated). Alone, nothing changes. prefix: 1-32 of a-z, 0-9, '_', '-',
     * '/', ending in '/'. Call from init; kept until the server stops. A module checks api->size >
     * offsetof(mb_api, store_records). */
    int (*store_records)(mb_module *self, const char *prefix, mb_err *err);
    /* For a module's answer that spans every node (a search of every store): in cluster mode, for a
     * request that did not come from another node, *out = {"node": this node's name, "nodes": [the
     * other nodes up]}; MB_EUNSUPP (answer from this node's own data) when alone or when req came
     * from another node. cluster_ask then GETs target (a path and query) on one of them as req's
     * user, marked as forwarded, so that node answers from its own data: *answer is the JSON of its
     * 200 answer; MB_EBUSY when it did not answer (5 s at most). Blocks: an HTTP handler's call. */
    int (*cluster_nodes)(mb_req *req, json_t **out, mb_err *err);
    int (*cluster_ask)(mb_req *req, const char *node, const char *target, json_t **answer, mb_err *err);
    /* Store sid is kept by this node: always alone; in cluster mode false for a store another node
     * keeps (this node may hold a replica or an old copy of it, or nothing). Any thread. */
    bool (*store_here)(uint64_t sid);
    /* From a route's begin (before any of the body is read): in cluster mode, when store sid is kept
     * by another node, hand the whole request to that node (its method, target, headers as sent,
     * credentials included, and the body as it arrives) and answer with what it answers: returns 1,
     * and the begin returns 0 at once and does nothing more with req. Returns 0 (serve it here) when
     * alone, when this node keeps sid, or when req came from another node; MB_EBUSY when the
     * keeper is down. The other node runs the same module and route. A module checks api->size >
     * offsetof(mb_api, forward_store). */
    int (*forward_store)(mb_req *req, uint64_t sid, mb_err *err);

    /* --- 2.2 --- */

    /* A libsodium crypto_pwhash_str string (argon2id, interactive limits) of password into out
     * (crypto_pwhash_STRBYTES, 128): 0, or MB_ENOMEM. It waits its turn as every password check
     * does (password_check, auth_password, apppass_check): the kernel runs at most as many
     * argon2id at once as there are CPUs and never more than 4, each taking 64 MiB. Blocks for
     * ~70 ms or longer: never on the loop thread. A module checks api->size > offsetof(mb_api,
     * password_hash) and hashes by itself on an older kernel. */
    int (*password_hash)(const char *password, char out[128]);
};

#ifdef __cplusplus
}
#endif
#endif
