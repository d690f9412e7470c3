/*
 * kernel/kernel.h — interfaces between the kernel's own files.
 *
 * Each kernel file is one subsystem with one prefix (Lua's lstring.c -> luaS_ idea):
 *   log.c log_*   util.c (arena_*, str_*, json helpers)   err.c err_*
 *   cfg.c cfg_*   db.c db_*   http*.c http_* (the door's files: http_int.h)   auth.c auth_*
 *   hook.c hook_*   task.c task_*   timer.c timer_*   pool.c pool_*   notify.c notify_*   luas.c luas_*
 *   modmgr.c modmgr_* (load, unload, reload)   modref.c modref_* (the module handle and its
 *   busy count, a leaf)   registry.c reg_* (owner-tagged tables: routes, hooks, task types, timers)
 *   etcd.c etcd_* (the etcd client)   cluster.c cluster_* (membership, leadership)
 *   api.c (fills mb_api)   main.c (mbyted: loop, signals, start and stop)
 * Modules never see this header; they get abi/mbyte.h and the mb_api table.
 */
#ifndef MBYTE_KERNEL_H
#define MBYTE_KERNEL_H

#include "../abi/mbyte.h"
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#define MBYTE_VERSION "0.1.0"

/* ------------------------------------------------------------------ log.c --- */
enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
void log_init(int min_level);
/* ops (issue 26): the server log as JSON lines (log_format: json) instead of text, and the
 * request id this thread serves, appended to its lines (accesslog.c sets it; NULL clears). */
void log_set_json(bool on);
void log_request_set(const char *id);
const char *log_request_get(void);
void log_msg(int level, const char *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_vmsg(int level, const char *who, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
#define log_debug(...) log_msg(LOG_DEBUG, "kernel", __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, "kernel", __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, "kernel", __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, "kernel", __VA_ARGS__)

/* ------------------------------------------------------------------ err.c --- */
int err_set(mb_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int err_http_status(int code);
int err_ftp_reply(int code);
const char *err_title(int code);
const char *err_name(int code);
int err_code(const char *name); /* err_name backwards: MB_EINTERNAL for a name it does not know */

/* ----------------------------------------------------------------- util.c --- */
/* A request arena: blocks freed in one go (nginx pools). Not thread-safe: one owner. */
typedef struct arena arena;
arena *arena_new(void);
void *arena_alloc(arena *a, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(arena *a);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

bool utf8_valid(const char *s, size_t n);
void hex_encode(const uint8_t *in, size_t n, char *out); /* out has 2n+1 bytes */
/* Member k of object o as an integer (0 when absent or not one) and as a string ("" when
 * absent or not one; borrowed from o). */
json_int_t jint(const json_t *o, const char *k);
const char *jstr(const json_t *o, const char *k);
int hex_decode(const char *in, uint8_t *out, size_t n);  /* 0 if exactly 2n hex digits */
int hex_digit(int c);                                   /* 0..15, or -1 for a non-hex character */
/* Random id text of `bytes` random bytes as lower hex (out has 2*bytes+1). */
void random_hex(char *out, size_t bytes);
int64_t now_wall(void);    /* seconds, shifted by MBYTE_CLOCK_OFFSET when set */
int64_t now_mono_ms(void); /* monotonic milliseconds */
/* *ts = ms from now on clock: the deadline for pthread_cond_timedwait (CLOCK_REALTIME for a
 * condition variable made with PTHREAD_COND_INITIALIZER). */
void wait_deadline(struct timespec *ts, clockid_t clock, int64_t ms);
int mkdir_p(const char *path, mode_t mode);
/* Parse a decimal u64 with no sign, no spaces, no overflow. */
bool parse_u64(const char *s, uint64_t *out);

/* ------------------------------------------------------------------ cfg.c --- */
/* The kernel configuration (conf.d/mbyte.yaml, then environment overrides). */
/* 8 MiB each keep a store of any size under 128 MiB of RSS with every module on (issue 27,
 * docs/performance.md "One folder of a million files"); 32 MiB before 2026-12-04. */
#define DB_WRITE_BUFFER (8 << 20) /* db_write_buffer's default (db.c) */
#define DB_CACHE (8 << 20)        /* db_cache's default (db.c) */
#define DB_MAPPED (16 << 20)       /* db_mapped's default (db.c) */
/* glibc malloc arenas (main.c, mallopt M_ARENA_MAX). glibc's own limit is 8 per core; with
 * 16 HTTP threads and the modules' workers each freeing into an arena of its own, freed memory
 * scattered among them stays resident (issue 27: 59 MiB of RssAnon for 37 of live heap at
 * 100,000 files; 37 with 2 arenas, at the same speed). */
#define MALLOC_ARENAS 2
#define CHUNK_INLINE_LIMIT (256 * 1024) /* the largest chunk_inline_max (= the smallest cut chunk) */
typedef struct kcfg {
    char *config_dir;
    char *listen_host;
    int listen_port;
    char *tls_cert, *tls_key;  /* PEM files: HTTPS on `listen` (NULL: plain HTTP) */
    char *redirect_host;       /* http_redirect_listen: plain HTTP that answers 308 to https (NULL: none) */
    int redirect_port;
    bool require_tls;          /* refuse plain HTTP on an address that is not loopback */
    char **trusted_proxies;    /* NULL or NULL-terminated: peers whose X-Forwarded-For/-Proto count */
    char *data_dir;
    char *module_dir;
    char *web_dir;
    char *lua_dir;
    int http_threads;
    int64_t chunk_inline_max; /* chunks up to this size live in LevelDB (blob.c); 0 = none */
    int64_t subtree_task_above; /* a recursive delete, purge or copy of more entries is a task (fs_big.c) */
    int64_t subtree_batch;      /* entries per transaction of such a task */
    int64_t db_write_buffer;  /* bytes of LevelDB memtable before it is written out as a table */
    int64_t db_cache;         /* bytes of LevelDB's block cache (decompressed table blocks) */
    int64_t db_mapped;        /* bytes of LevelDB's mapped tables kept resident (db.c); 0 = no bound */
    int malloc_arenas;        /* glibc's M_ARENA_MAX (main.c); 0 = glibc's own limit */
    int durability_relaxed;   /* durability: relaxed (1) or strict (0, default); db_sync.c db_sync_ack */
    int64_t durability_window_ms; /* relaxed: a change is synced at most this long after its answer */
    int chunk_large_folios;   /* read chunks in as large folios (blob.c): 1 yes, 0 no, -1 auto */
    bool chunk_direct_io;     /* write chunk files with O_DIRECT, around the page cache (blob.c); default true */
    int chunk_read_direct;    /* read uncached chunks with O_DIRECT (blob_cache.c): 1 yes, 0 no, -1 auto */
    int workers;
    int64_t max_body;        /* bytes for JSON bodies */
    int64_t token_ttl;       /* seconds a login token lives */
    int64_t login_cache_ttl; /* seconds a verified password is remembered (auth.c); 0 = never */
    int login_max_failures;  /* per window, per user and per IP */
    int login_window;        /* seconds */
    int task_retention_days; /* finished tasks older than this are removed (task.c) */
    int login_max_failures_per_ip;  /* per window, per client address across accounts */
    int login_account_slow_after;   /* failures per window per account before it is slowed */
    int http_max_connections;        /* open HTTP connections in all; 0 = libmicrohttpd's default */
    int http_max_connections_per_ip; /* per client address; 0 = no cap */
    int http_header_timeout;         /* seconds to deliver a request's headers (does not restart) */
    int log_level;
    int64_t secrets_refresh; /* seconds between re-reads of secret references, 0: never */
    char *master_key;        /* key reference wrapping stores' data keys (crypt.c), NULL: none */
    char *previous_master_key; /* the one before: data keys still wrapped by it open (crypt.c) */
    char **modules_enabled;  /* NULL-terminated */
    /* cluster: (cluster.c, docs/cluster.md), read once at start. cluster_etcd NULL: a single
     * server, no etcd. */
    char **cluster_etcd;     /* NULL-terminated endpoints, no trailing '/' */
    char *cluster_node;      /* this node's name (set whenever cluster_etcd is) */
    char *cluster_advertise; /* host:port the others reach this node at (default: listen) */
    int cluster_lease_ttl;   /* seconds; default 5 */
    bool cluster_rebalance;  /* keepers move stores to nodes with less load (cluster_place.c); default true */
    int64_t cluster_store_weight; /* bytes a store counts for in a node's load besides its own; default 64 MiB */
    json_t *raw;             /* the whole mbyte.yaml as JSON */
} kcfg;

/* Convert one YAML file into JSON. On error err->msg is "file:line: reason". If `lines`
 * is not NULL it receives an object mapping dotted key paths ("http.threads") to the
 * line they stand on, so later checks can name the line too. */
int cfg_yaml_load(const char *path, json_t **out, json_t **lines, mb_err *err);
/* Same, from memory (unit tests); `name` is used in messages. */
int cfg_yaml_parse(const char *name, const char *text, size_t len, json_t **out, json_t **lines, mb_err *err);
/* Load conf.d/mbyte.yaml from dir plus environment overrides into *cfg. */
int cfg_load(const char *dir, kcfg *cfg, mb_err *err);
void cfg_free(kcfg *cfg);
/* Validate a module's YAML (may be NULL: all defaults) against its key table; the result
 * has every key with its default filled in. `file` names the file in messages. */
int cfg_module(const char *file, const json_t *yaml, const json_t *lines, const mb_config_key *keys, json_t **out,
               mb_err *err);

extern kcfg *g_cfg; /* set by main.c; replaced only on the loop thread (SIGHUP) */

/* ----------------------------------------------------------------- etcd.c --- */
/* An etcd v3 client over the JSON gateway (cluster mode). Keys and values are text here. */
typedef struct etcd etcd;
typedef struct etcd_kv {
    char *key, *value; /* decoded, NUL-terminated, the answer's (etcd_answer_free) */
    size_t value_len;
    int64_t lease, create_rev, mod_rev;
    bool deleted;              /* a watch's DELETE event (value empty) */
} etcd_kv;
typedef struct etcd_answer {
    int64_t id, ttl, revision; /* a lease's ID and TTL; the header's revision (0 when absent) */
    bool succeeded;            /* a txn took its success branch */
    bool more;                 /* a range stopped at its limit: more keys follow */
    bool created, canceled;    /* a watch message: the watch started, or etcd ended it */
    int64_t compact_revision;  /* a canceled watch: its start revision was compacted away */
    etcd_kv *kvs;              /* a range's entries, those of every range in a txn, or a watch message's events */
    size_t nkvs;
    int code;                  /* an error answer's gRPC code (5: not found), else 0 */
    char error[200];
} etcd_answer;
/* Pure: the request bodies (new references) and the answer parser (0, or MB_EINVAL with a
 * sentence; an error answer parses fine and sets code). */
char *etcd_b64(const void *p, size_t n); /* malloc'd, padded standard alphabet */
json_t *etcd_req_put(const char *key, const char *value, int64_t lease);
json_t *etcd_req_range(const char *key, bool prefix);
json_t *etcd_req_create(const char *key, const char *value, int64_t lease); /* txn: put if absent, else range */
/* txn: put key=value if its mod_revision is still mod_rev (0: absent), else range it. */
json_t *etcd_req_cas(const char *key, const char *value, int64_t mod_rev);
/* Keys from `from` up to the end of `prefix`, at most limit (0: all), as of revision (0: now). */
json_t *etcd_req_page(const char *prefix, const char *from, int64_t revision, int64_t limit);
/* A watch of every key under prefix from revision start on. */
json_t *etcd_req_watch(const char *prefix, int64_t start);
int etcd_answer_parse(const char *body, size_t len, etcd_answer *a, mb_err *err);
void etcd_answer_free(etcd_answer *a);
/* A client of the endpoints urls (copied), each call bounded by timeout_ms. One thread at a
 * time (a mutex makes it so). Calls return 0, MB_EBUSY when no endpoint answered, MB_ENOENT
 * for etcd's "not found", MB_EIO otherwise; *a is the caller's to free on 0. */
etcd *etcd_new(char *const *urls, long timeout_ms);
void etcd_free(etcd *e);
int etcd_call(etcd *e, const char *path, json_t *req, etcd_answer *a, mb_err *err); /* steals req */
int etcd_lease_grant(etcd *e, int ttl, int64_t *id, int64_t *granted, mb_err *err);
int etcd_lease_keepalive(etcd *e, int64_t id, int64_t *ttl, mb_err *err); /* *ttl 0: lease gone */
int etcd_lease_revoke(etcd *e, int64_t id, mb_err *err);
int etcd_put(etcd *e, const char *key, const char *value, int64_t lease, mb_err *err);
int etcd_range(etcd *e, const char *key, bool prefix, etcd_answer *a, mb_err *err);
int etcd_create(etcd *e, const char *key, const char *value, int64_t lease, etcd_answer *a, mb_err *err);
/* Stream the watch req (steals it; etcd_req_watch) to on_msg, one parsed message at a time,
 * until on_msg returns non-zero, *stop turns true, max_ms passes or the stream ends. 0 when
 * it ended like that; MB_EBUSY/MB_EIO when etcd could not be reached or the stream broke. */
int etcd_watch(etcd *e, json_t *req, int (*on_msg)(const etcd_answer *a, void *ud), void *ud,
               const atomic_bool *stop, long max_ms, mb_err *err);

/* --------------------------------------------------------------- secret.c --- */
/* Secret references in configuration values and key wrapping (docs/security.md). */
typedef struct secret_ref {
    char scheme[32];
    char rest[1024]; /* everything after "<scheme>:" */
    char path[1024]; /* vault: <mount>/<path> before '#' */
    char key[256];   /* vault: the key after '#' */
    int64_t version; /* vault: after '@', 0 for the newest */
} secret_ref;
/* Check one reference's syntax (env:NAME, file:/abs, vault:<mount>/<path>#<key>[@n], other
 * schemes: any non-empty rest). Errors name the reference. Pure: the fuzz target's entry. */
int secret_ref_parse(const char *s, secret_ref *out, mb_err *err);
/* True when s is a reference: a built-in scheme (env, file, vault) or a registered one. */
bool secret_is_ref(const char *s);
/* Resolve one reference for reader `who` (a module's name, "kernel"): *value is the caller's
 * (free with secret_free). The read is noted (the observer hears first reads and changes). */
int secret_resolve(const char *who, const char *ref, char **value, mb_err *err);
/* Swap every reference in doc for its value. refs (may be NULL) gets one {"key","ref",
 * "resolves"[,"error"]} per reference; *count (may be NULL) how many were resolved. On error
 * err is "file:line: key: ref: reason". */
int secret_resolve_tree(const char *who, const char *file, json_t *doc, const json_t *lines, json_t *refs,
                        int *count, mb_err *err);
void secret_free(char *value);
/* An owner-only regular file read whole (NUL-terminated); `what` names it in errors. */
int secret_read_private(const char *path, const char *what, size_t max, char **out, size_t *n, mb_err *err);
/* Ask every provider to re-read its values now (blocking): how many providers saw a change,
 * or a negative code (err filled) when one failed. HTTP or worker thread. */
int secret_refresh_providers(mb_err *err);
/* Set by secret_http.c: on_read hears (who, ref) of first reads and changed values; on_change
 * runs when a provider calls api->secrets_changed. */
void secret_set_callbacks(void (*on_read)(const char *who, const char *ref), void (*on_change)(void));
void secret_remove_owner(mb_module *owner); /* modmgr: a copy's fini is done */
void secret_fini(void);
/* The mb_api entries (abi/mbyte.h, 2.1). */
int secret_provider_set(mb_module *self, const char *scheme, const mb_secret_ops *ops, void *ctx, mb_err *err);
int keywrap_provider_set(mb_module *self, const char *scheme, const mb_keywrap_ops *ops, void *ctx, mb_err *err);
int secret_api_get(mb_module *self, const char *ref, char **value, mb_err *err);
void secrets_changed(void);
int key_wrap(const char *keyref, const uint8_t *key, size_t n, char **wrapped, mb_err *err);
int key_unwrap(const char *keyref, const char *wrapped, uint8_t *key, size_t n, mb_err *err);
int key_rewrap(const char *keyref, const char *wrapped, char **rewrapped, mb_err *err);
int key_datakey(const char *keyref, uint8_t *key, size_t n, char **wrapped, mb_err *err);
int key_rotate(const char *keyref, mb_err *err);

/* ---------------------------------------------------------- secret_http.c --- */
/* POST /api/v1/admin/secrets/refresh, the kernel's refresh timer (mbyte.yaml secrets_refresh)
 * and the secret.read event. */
int secret_http_init(struct event_base *base, mb_err *err);
void secret_http_fini(void); /* after modmgr_fini */

/* ------------------------------------------------------------------- db.c --- */
/* The metadata store: one LevelDB. Thread-safe (LevelDB is). Values returned are malloc'd. */
typedef struct db_batch db_batch;
typedef struct db_iter db_iter;
int db_open(const char *dir, mb_err *err);
void db_close(void);
int db_get(const char *key, size_t klen, char **val, size_t *vlen);   /* 0, MB_ENOENT, MB_EIO */
int db_put(const char *key, size_t klen, const void *val, size_t vlen, bool sync);
int db_del(const char *key, size_t klen, bool sync);
/* JSON values: stored as compact JSON text. */
int db_get_json(const char *key, json_t **out);
/* The same record from the decoded-record cache: *out is a new reference to a value other
 * threads share, which the caller must only read (and json_decref). Any thread. */
int db_get_json_shared(const char *key, json_t **out);
int db_put_json(const char *key, const json_t *val, bool sync);
/* Every write of a key starting with prefix (before LevelDB applies it and after) adds 1 to
 * *gen. Call at init, before any write; prefix and gen stay valid until exit. */
void db_watch_prefix(const char *prefix, _Atomic uint64_t *gen);

/* jsonw.c: json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)'s text, byte for byte, in a
 * fraction of its time; malloc'd and NUL-terminated, its length in *len (len may be NULL). */
char *jsonw_dump(const json_t *v, size_t *len);
/* Test hook (tests/unit/test_keys.c): when set, called at these points of a write and of a
 * cache-filling read, so a test can pause one thread there and force an interleaving. NULL
 * (a no-op) unless a test sets it; never set in the server. */
enum { DB_TP_WRITE_BEFORE_APPLY, DB_TP_WRITE_AFTER_APPLY, DB_TP_READ_BEFORE_FILL };
extern void (*_Atomic db_test_hook)(int point);
db_batch *db_batch_new(void);
void db_batch_put(db_batch *b, const char *key, size_t klen, const void *val, size_t vlen);
void db_batch_put_json(db_batch *b, const char *key, const json_t *val);
void db_batch_del(db_batch *b, const char *key, size_t klen);
/* Visit the batch's operations in order (ns.c counts a folder's children from them). */
void db_batch_each(const db_batch *b, void (*put)(void *ud, const char *k, size_t kl, const char *v, size_t vl),
                   void (*del)(void *ud, const char *k, size_t kl), void *ud);
void db_batch_note_events(db_batch *b);        /* hook_emit_batch put an outbox entry into b */
bool db_batch_has_events(const db_batch *b);   /* ... so its commit should be followed by hook_kick */
void db_batch_del_prefix(db_batch *b, const char *prefix); /* every key with the prefix, as it is now */
int db_batch_commit(db_batch *b, bool sync); /* frees b */
/* Group commit (see db_sync.c): write b unsynced (visible at once, frees b) and get its ticket;
 * db_sync_through(ticket) returns once it is durable, sharing one fsync with every writer
 * that arrived meanwhile. A failed sync aborts the process before anyone is answered. */
int db_batch_commit_grouped(db_batch *b, uint64_t *seq);
void db_sync_through(uint64_t seq);
/* What must happen to ticket seq before its change is acknowledged: with durability strict
 * (the default) db_sync_through; with relaxed, a sync is scheduled within
 * durability_window_ms and the caller answers at once (docs/operations.md). */
void db_sync_ack(uint64_t seq);
void db_committer(int delta);     /* +1 before taking a commit lock, -1 after its release */
uint64_t db_grouped_writes(void); /* how many grouped writes so far: file changes are being made if it moves */
/* The number of the LevelDB log the sync barrier syncs (0 before its first sync); tests. */
unsigned long long db_synced_log(void);
void db_batch_free(db_batch *b);
/* Cluster-wide records (db_repl.c, cluster_kv.c, docs/cluster.md): once db_replicate is called, every
 * write of a key for which wide(key) holds also puts one "cq/<seq16>" entry (the batch's wide
 * puts and deletes, db_repl_next reads them) into the same LevelDB write, under the
 * replication lock, and calls kick() after it. A batch marked db_batch_from_cluster (what
 * another node wrote, applied here) is not queued again. */
void db_replicate(bool (*wide)(const char *key, size_t klen), void (*kick)(void));
void db_replicate_off(void);
void db_batch_from_cluster(db_batch *b);
void db_repl_lock(void); /* no local wide write lands while it is held */
void db_repl_unlock(void);
/* Puts and deletes encoded as a cq/ entry's value (db_repl_next reads them); p is malloc'd. */
typedef struct db_ops {
    char *p;
    size_t n, cap;
} db_ops;
void db_ops_add(db_ops *o, const void *p, size_t n); /* raw bytes: a frame's head, a body */
void db_ops_put(db_ops *o, const char *k, size_t kl, const char *v, size_t vl);
void db_ops_del(db_ops *o, const char *k, size_t kl);
/* The puts and deletes of b for which keep(key, 'P' or 'D') holds, encoded as a cq/ entry's value
 * (db_repl_next reads them): malloc'd (NULL when none), *n its length. */
char *db_batch_encode(const db_batch *b, bool (*keep)(const char *k, size_t kl, char op, void *ud), void *ud,
                      size_t *n);
/* The next op of a cq/ entry's value v (n bytes) from *off: 'P' (put, with *val) or 'D';
 * 0 at the end, -1 when the entry is malformed. */
int db_repl_next(const char *v, size_t n, size_t *off, const char **key, size_t *klen, const char **val,
                 size_t *vlen);
db_iter *db_iter_prefix(const char *prefix, size_t plen);
/* The highest n among the keys "<prefix><n as 16 hex digits>" (a queue's last entry), 0 when
 * there is none; keys of another length under the prefix are skipped. */
uint64_t db_last_seq(const char *prefix);
/* A point-in-time view of the whole database: iterators over it see no later write. Release it
 * after its iterators are freed. */
typedef struct db_snap db_snap;
db_snap *db_snap_take(void);
db_iter *db_snap_iter_prefix(db_snap *s, const char *prefix, size_t plen); /* s NULL: now */
void db_snap_release(db_snap *s);
bool db_iter_next(db_iter *it); /* advance; false at end of prefix (first call positions) */
/* Make the next db_iter_next start at the first key >= key (a key inside the prefix)
 * instead of at the prefix: a reader that knows where it stopped skips what lies before. */
void db_iter_seek(db_iter *it, const char *key, size_t klen);
const char *db_iter_key(db_iter *it, size_t *klen);
const char *db_iter_val(db_iter *it, size_t *vlen);
void db_iter_free(db_iter *it);
/* fn(key, key length, record, ud) for every record under prefix, parsed as JSON (a record that
 * does not parse is passed as NULL; fn must not keep it). */
void db_each_json(const char *prefix, void (*fn)(const char *key, size_t klen, json_t *rec, void *ud), void *ud);
/* A persistent counter ("n/<name>"), thread-safe, never returns the same value twice. */
/* Copies the database as it is at one instant into a new LevelDB at `dir` (which must not exist),
 * calling each(key, value) on the way (a negative return stops with that code, err being the
 * callback's to fill; a positive one leaves that key out of the copy); *keys gets the count. For online backups; any thread but the loop's. */
int db_snapshot_copy(const char *dir, int (*each)(const char *k, size_t kl, const char *v, size_t vl, void *ud),
                     void *ud, uint64_t *keys, mb_err *err);
uint64_t db_next_id(const char *name);
/* The same, for ids handed out often: reserved in synced blocks, so most calls cost no I/O.
 * Unused ids of a block are skipped after a crash, never reused. */
uint64_t db_alloc_id(const char *name);
/* Counter `name`'s value on disk: no id of it handed out so far is above it (cluster_repl.c
 * sends it with each change of a store, so the node that takes the store over never hands out
 * an id the store already uses). */
uint64_t db_id_high(const char *name);
/* Every id of counter `name` handed out from now on is above floor. */
void db_id_floor(const char *name, uint64_t floor);
/* Key encoding: big-endian u64 as 16 hex digits so keys sort numerically. */
void key_u64(char out[17], uint64_t v);
/* "<table>/<id as key_u64>": a record keyed by one id (s/, us/, uu/, sd/...). */
void id_key(char *out, size_t n, const char *table, uint64_t id);

/* ----------------------------------------------------------------- conn.c --- */
/* The HTTP door's guard against connection floods (see conn.c). All but conn_start/stop are
 * called on libmicrohttpd's threads; conn_start/stop on the loop thread. */
typedef struct conn_rec conn_rec;
struct sockaddr;
void conn_start(int max, int per_ip, int header_timeout_s); /* 0 = no cap */
void conn_stop(void);
conn_rec *conn_opened(int fd, const struct sockaddr *client); /* owned by conn.c until conn_closed */
void conn_closed(conn_rec *r);
bool conn_headers(conn_rec *r);       /* a request's headers arrived; true: over its address's cap */
void conn_request_done(conn_rec *r); /* the header deadline starts again for the next request */
int conn_limit_per_ip(void);
int conn_open(void); /* HTTP connections open now (the metrics page) */

/* ------------------------------------------------------------------ xff.c --- */
#define XFF_MAX 2048 /* a longer X-Forwarded-For is ignored */
/* The client behind trusted proxies: the rightmost X-Forwarded-For entry that is not itself a
 * trusted proxy (entries further left were written by the client and prove nothing), copied
 * into out (n bytes). false (out untouched) when the header is longer than XFF_MAX, when an
 * entry on the way from the right is not an IP address (or does not fit), or when every
 * entry is trusted: the proxy's own address stands then. */
bool xff_client(const char *xff, bool (*trusted)(const char *ip), char *out, size_t n);

/* ----------------------------------------------------------------- http.c --- */
/* The kernel side of mb_req. Route handlers (kernel and module) see it via mb_api. */
typedef struct http_route http_route;
int http_start(mb_err *err);
void http_stop(void); /* waits for requests in flight */
/* Register a route owned by `owner` (NULL for the kernel). */
int http_route_add(mb_module *owner, const char *method, const char *pattern, int role,
                   mb_route_fn fn, void *state, mb_err *err);
/* Streaming-body routes (uploads). begin runs once headers are in (may refuse), data for
 * each body piece, end once the body is complete and must reply. ctx is per request. data and
 * end may suspend the connection (MHD_suspend_connection; another thread resumes it), never
 * twice in a row: libmicrohttpd 0.9.75 may still hand data the rest of a chunked body's pieces it
 * has read, and a second suspend breaks its list of suspended connections. end returns
 * HTTP_STREAM_LATER and is called again once the connection is resumed. */
#define HTTP_STREAM_LATER 0x4c415445 /* "LATE": no error code, nor any handler's 0 or 1 */
typedef struct http_stream_ops {
    int (*begin)(mb_req *req, void **ctx, mb_err *err);
    int (*data)(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err);
    int (*end)(mb_req *req, void *ctx, mb_err *err);
    void (*abort)(mb_req *req, void *ctx); /* client went away or an error was answered */
} http_stream_ops;
int http_stream_route_add(const char *method, const char *pattern, int role, const http_stream_ops *ops, mb_err *err);
/* api->req_body_sink (minor 10): from a route's begin, take the body as a stream. */
int http_req_body_sink(mb_req *req, const mb_body_sink *sink, void *ctx, mb_err *err);
/* Remove all routes of `owner`. */
void http_routes_remove(mb_module *owner);
/* A kernel route table (like a module's mb_route array), ended by a {NULL} entry: a plain
 * route (fn) or a streaming-body one (stream). main.c registers every table at start. */
typedef struct kroute {
    const char *method, *pattern;
    int role;
    mb_route_fn fn;
    const http_stream_ops *stream;
} kroute;
/* Reload: the routes of `from` become `table` (kernel-stride mb_route entries ended by a
 * NULL method) owned by `to`, function pointers included, atomically with respect to
 * requests. Changes nothing on error (a new route another owner already serves). */
int http_routes_swap(mb_module *from, mb_module *to, const mb_route *table, void *new_state, mb_err *err);

/* Request accessors used by mb_api and kernel handlers. */
const char *http_req_method(mb_req *req);
const char *http_req_path(mb_req *req);
const char *http_req_param(mb_req *req, const char *name);
const char *http_req_query(mb_req *req, const char *name);
const char *http_req_header(mb_req *req, const char *name);
const char *http_req_cookie(mb_req *req, const char *name);
const mb_user *http_req_user(mb_req *req);
const char *http_req_client_ip(mb_req *req);
bool http_req_secure(mb_req *req); /* came over TLS, to mbyted or (trusted_proxies) to the proxy */
json_t *http_req_json(mb_req *req, mb_err *err);
/* The check behind http_req_json, for any body: valid UTF-8, well-formed JSON without duplicate
 * keys, an object. A new reference, or NULL with err (MB_EINVAL and the reason). */
json_t *http_json_body(const char *body, size_t len, mb_err *err);
void *http_req_alloc(mb_req *req, size_t n);
arena *http_req_arena(mb_req *req);
int http_reply_json(mb_req *req, int status, json_t *body);
int http_reply_error(mb_req *req, const mb_err *err);
int http_reply_bytes(mb_req *req, int status, const char *ctype, const void *data, size_t len);
void http_reply_header(mb_req *req, const char *name, const char *value);
/* A streamed answer: size may be MHD_SIZE_UNKNOWN (-1); read returns bytes written,
 * 0 for "nothing yet" is not allowed, -1 for end of stream, -2 for error. */
typedef ssize_t (*http_reader_fn)(void *cls, uint64_t pos, char *buf, size_t max);
int http_reply_stream(mb_req *req, int status, const char *ctype, uint64_t size,
                      http_reader_fn read, void *cls, void (*free_cls)(void *));
/* A GET answered with len bytes of a file from off, when they lie in one local chunk file and
 * the connection is plain TCP: sent with sendfile. False (nothing answered) otherwise: the
 * caller streams it (http_reply_stream). */
struct fs_reader;
bool http_reply_span(mb_req *req, int status, const char *ctype, struct fs_reader *r, uint64_t off, uint64_t len);
/* Server-sent events: the request becomes a long-lived stream for user `uid`. */
int http_reply_sse(mb_req *req, uint64_t uid);
/* Send one SSE frame ("event: x\ndata: {...}\n\n") to every live stream of `uid`. */
void http_sse_publish(uint64_t uid, const char *frame, size_t len);
/* Split a raw request target into percent-decoded segments (at most max) and the joined
 * path, refusing '.', '..', encoded '/', NUL, bad escapes and invalid UTF-8. Pure; fuzzed. */
int http_parse_target(arena *a, const char *raw, const char **segs, int max, int *nsegs, const char **path,
                      mb_err *err);
/* True when the request came through the local admin socket (mbytectl). */
bool http_req_local(mb_req *req);

/* ----------------------------------------------------------------- auth.c --- */
int auth_init(mb_err *err);
void auth_fini(void);
/* Resolve the caller from Authorization: Bearer or the session cookie (with the CSRF
 * header for unsafe methods). 0 with *user filled (name owned by the arena), MB_EAUTH. */
int auth_request(mb_req *req, mb_user *user, mb_err *err);
/* Create a user; role MB_ROLE_USER or MB_ROLE_ADMIN. */
int auth_user_add(const char *name, const char *password, int role, uint64_t *id, mb_err *err);
/* On first start: create "admin" with MBYTE_ADMIN_PASSWORD or a generated password
 * (printed once). */
/* On the first start, creates `admin` with $MBYTE_ADMIN_PASSWORD or a generated password, which it
 * leaves in `generated` (else ""): the caller shows it once and wipes it. */
int auth_bootstrap(char generated[33], mb_err *err);
/* Pure pieces, exposed for unit tests: names, password hashes (argon2id, 128-byte
 * buffer), and the SHA-256 under which a token is stored. */
bool auth_valid_username(const char *name);
int auth_password_hash(const char *pw, char out[128], mb_err *err);
/* argon2id through the kernel's gate (auth.c: a few at once, each takes 64 MiB): a
 * crypto_pwhash_str string of pw (0, or -1 out of memory); whether pw matches hash. */
int auth_pwhash_str(char out[128], const char *pw, size_t n);
bool auth_pwhash_verify(const char *hash, const char *pw);
/* pw against an argon2id hash; a match is remembered for login_cache_ttl seconds (auth.c).
 * Any thread. */
bool auth_password_check(const char *hash, const char *pw);
void auth_token_hash(const char *token, char out[65]);
/* Look up a user by id; fills name into buf. */
int auth_user_name(uint64_t id, char *buf, size_t n);

/* ----------------------------------------------------------------- hook.c --- */
int hook_init(struct event_base *base, mb_err *err);
void hook_fini(void);
int hook_add(mb_module *owner, const mb_hook *h, void *state, mb_err *err);
void hook_remove(mb_module *owner);
/* Reload: the subscriptions of `from` become `table` (ended by a NULL event) owned by `to`. */
int hook_swap(mb_module *from, mb_module *to, const mb_hook *table, void *new_state, mb_err *err);
int hook_filter(const char *event, json_t *payload, mb_err *err);
/* The kernel's live listeners: hook_tell calls every listener of event (or "*") at once, on
 * the caller's thread; nothing is stored, nothing survives a crash (use the outbox for
 * that). For a lower layer's news that a higher one shows (task.c -> notify.c). */
typedef void (*hook_live_fn)(const char *event, const json_t *payload, void *state);
int hook_listen(const char *event, hook_live_fn fn, void *state, mb_err *err);
void hook_tell(const char *event, const json_t *payload);
bool hook_subscribed(const char *event, int kind); /* a hook of that kind subscribes to event (or "*") */
bool hook_observed(const char *event);             /* an observer subscribes to event (or to "*") */
/* Put the event into the outbox as part of batch b (committed by the caller), unless no
 * observer subscribes to it; steals payload. Call hook_kick() after the batch is committed. */
void hook_emit_batch(db_batch *b, const char *event, json_t *payload);
int hook_emit(const char *event, json_t *payload, mb_err *err);
void hook_kick(void); /* thread-safe: wake the dispatcher */
/* The client address of the HTTP request this thread serves (http.c sets it; NULL or "" on
 * leaving): events emitted meanwhile without an "ip" get it. */
void hook_ip_set(const char *ip);
/* api->batch_put / batch_del (minor 6): writes into the dispatcher turn's batch. */
int hook_batch_put(mb_batch *b, mb_module *self, const char *key, const void *value, size_t len, mb_err *err);
int hook_batch_del(mb_batch *b, mb_module *self, const char *key, mb_err *err);

/* -------------------------------------------------------------- cluster.c --- */
/* Cluster mode (docs/cluster.md): membership and leadership in etcd. Without g_cfg's cluster
 * settings every call is a no-op or false. */
int cluster_register(mb_err *err); /* loop thread, first: the lease and the name (MB_EEXIST: a live node has it) */
int cluster_start(mb_err *err);    /* loop thread, before serving: the membership thread */
void cluster_stop(void);         /* revokes the lease: this node leaves at once */
bool cluster_enabled(void);
/* This node leads cluster-wide work now: it holds /mbyte/leader under its lease, and its last
 * keepalive was sent less than lease_ttl ago (fencing by time). Any thread, cheap. */
bool cluster_is_leader(void);
/* This node's name ("" on a single server), and a live node's address (host:port) from the
 * last view: false when the node is not up. Any thread. */
const char *cluster_node_name(void);
/* Ids this node hands out that other nodes must tell apart (tasks): in cluster mode each node has
 * a number of its own (given once by etcd, kept in cl/number) and its ids start at number <<
 * CLUSTER_ID_BITS (0 alone); cluster_node_numbered names the node that is up with that number. */
#define CLUSTER_ID_BITS 40
void cluster_set_number(uint64_t number);
uint64_t cluster_id_base(void);
bool cluster_node_numbered(uint64_t number, char *out, size_t n);
bool cluster_node_address(const char *node, char *out, size_t n); /* false: the node is not up */
/* The up node taking replicas (its record has a replication port), other than this one and
 * `except` (may be NULL), with the most free space: a store's replica (false: there is none). */
bool cluster_pick_node(const char *except, char *out, size_t n);
/* The port the replica side listens on (cluster_repl.c), for this node's record once it takes
 * replicas (0 until then); and node's
 * "<advertised host>:<its replication port>" (false: not up, or it has none). */
void cluster_set_replication_port(int port);
bool cluster_node_replication(const char *node, char *out, size_t n);
/* The bytes of the stores this node keeps (the placement thread counts them at each look), in its
 * record as "kept" from its next refresh on: the others' rebalancing reads it there. */
void cluster_set_kept(int64_t bytes);
/* Cluster-wide accounts and tokens (cluster_kv.c): before auth_bootstrap, join etcd's copy of
 * them; *first is true when this node may create the first admin (a single server, or the
 * node that started the cluster). MB_EEXIST: this node has accounts of its own and the
 * cluster has others. */
int cluster_kv_join(bool *first, mb_err *err);
void cluster_kv_stop(void);
/* {"revision","queued","etcd"} of the cluster-wide records (NULL on a single server). */
json_t *cluster_kv_view(void);
/* Every store's placement: [{"id","owner" (node),"replica" (null: not yet),"epoch","user"}]. */
json_t *cluster_kv_stores(void);
/* The leader's collector of chunks on shared backends (cluster_gc.c): {"rounds","deleted","kept","last","waits"}. */
json_t *cluster_gc_view(void);
/* The old copies of stores this node keeps until they go (cluster_replica.c): [{"store","removed_at"}]. */
json_t *cluster_stale_view(void);
/* A live event of user uid (notify.c: a task's) for the streams open on the other nodes too
 * (cluster_events.c): queued and posted in the background, dropped when the queue is full or
 * outside cluster mode. data is not taken. */
void cluster_event_share(uint64_t uid, const char *event, const json_t *data);
/* A store's placement record {"v":1,"node","owner","replica","epoch","filling"} (new reference), NULL
 * when there is none (or a single server). */
json_t *cluster_store_record(uint64_t sid);
/* Change store sid's placement in etcd with a compare-and-swap on what etcd holds now: change(cur)
 * returns the record wanted (new reference) or NULL to give up (MB_ECONFLICT, as when another node
 * changed it first). On success the record is written here at once; *out (may be NULL) gets it. */
int cluster_store_cas(uint64_t sid, json_t *(*change)(const json_t *cur, void *ud), void *ud, json_t **out,
                      mb_err *err);
/* In cluster mode, the placement record "sp/<sid16>" {"v":1,"node","owner"} of a store this node
 * keeps, put into (or deleted from) the batch that creates (deletes) the store. No-ops alone. */
void cluster_store_placed(db_batch *b, uint64_t sid, uint64_t owner);
/* Cluster mode: record (placed) or forget the node that keeps tus upload `id` ("tn/<id>", a
 * cluster-wide record, in etcd before the upload's client is told), and read it. No-ops alone. */
void cluster_upload_placed(const char *id, bool placed);
bool cluster_upload_node(const char *id, char *node, size_t n);
/* The node that keeps store sid (its placement record), into node; false when none is known. */
bool cluster_store_node(uint64_t sid, char *node, size_t n);
/* Ask etcd itself whether node is registered now (*up), not the membership view. */
int cluster_node_registered(const char *node, bool *up, mb_err *err);
/* Store sid is kept by another node, or its placement has not reached this node yet (this node may
 * hold a replica's copy of it): not this node's to list or serve. */
bool cluster_store_elsewhere(uint64_t sid);
/* Modules' records of a store (mb_api.store_records, cluster_repl.c): module's keys "<prefix><sid16>"
 * and "<prefix><sid16>/..." belong to store sid, handed on to its replica with its other records. */
int cluster_store_records(const char *module, const char *prefix, mb_err *err);
/* Full key k ("m/<module>/...") is such a record: its store in *sid. */
bool cluster_record_store(const char *k, size_t kl, uint64_t *sid);
/* Wait (ms at most; not while etcd is away) until this node has applied every cluster-wide record
 * etcd holds now: a list that may have raced a change made on another node a moment ago. */
void cluster_kv_catch_up(int64_t ms);
/* Wait (at most ms, not while etcd is away) until every change made here is in etcd: a token
 * is handed on before the client that asked for it can show it to another node. */
void cluster_kv_flush(int64_t ms);
/* A cluster-wide record this node does not have (yet): read it from etcd and write it here.
 * True when it is here now. On a miss of a request's path only (a token made elsewhere a moment
 * ago). */
bool cluster_kv_fetch(const char *key);
/* What etcd holds for cluster-wide record `key` now, parsed (new reference; this node's copy is
 * left as it is), or NULL: none, not JSON, or etcd not answering. One etcd call. */
json_t *cluster_kv_read(const char *key);
/* The cluster's key for signing forwarded requests (false: none yet, or a single server). */
bool cluster_kv_secret(uint8_t out[32]);
/* The other nodes that keep a store of account uid: a new array of names. */
json_t *cluster_kv_user_nodes(uint64_t uid);
void cluster_store_gone(db_batch *b, uint64_t sid);
/* fn(rest of the key) runs (on the watcher thread, or the loop's at the join; no lock held) for
 * every record under prefix that etcd reported and this node wrote, its own changes included:
 * auth.c hears "u/" (a Home store for an account new here), modmgr.c "mc/" (a module switched
 * on or off on some node). Set before the join. */
void cluster_kv_on(const char *prefix, void (*fn)(const char *rest));
/* A new id of counter `name`: db_next_id on a single server, etcd's counter in cluster mode
 * (MB_EBUSY when etcd does not answer). */
int cluster_next_id(const char *name, uint64_t *out, mb_err *err);
/* {"node","leader","nodes","stores","etcd"}: the membership thread's last view; NULL when not
 * in cluster mode. New reference; any thread. */
json_t *cluster_view(void);
/* cluster_fwd.c: a request for a store another node keeps goes there (1: req->stream set, the
 * request is that node's now; 0: serve it here; CLUSTER_PARKED: its store is switching over to
 * another node, the connection is suspended until the switch is done and libmicrohttpd then calls
 * the handler again as for its first call, req->parked set; < 0: refused with err, e.g. the node
 * is down). */
#define CLUSTER_PARKED 2
int cluster_fwd_begin(mb_req *req, mb_err *err);
/* At stop: every request parked at a gate is resumed, and none parks any more (libmicrohttpd must
 * not stop with a connection suspended). */
void cluster_gate_release_all(void);
void cluster_fwd_fini(void); /* at stop, after the HTTP door: the connection cache */
/* The gate of a store this node serves: a request served here for it leaves when it ends; a move
 * closes it (newcomers are parked, CLUSTER_PARKED, and go where the store is once it opens) and
 * waits up to ms for those under way (how many are left), then opens it once the store is elsewhere. */
void cluster_gate_leave(uint64_t sid);
/* A module's write (kept_writer) served here counts in at its store's gate like a request, so a
 * move waits for it: true (leave when it ends), or false while the gate is closed (the write then
 * goes where the store will be: kept_write_begin), unless the request this thread serves is counted
 * at the gate already (the switch waits for it anyway). Never blocks. */
bool cluster_gate_join(uint64_t sid);
int cluster_gate_close(uint64_t sid, int64_t ms);
void cluster_gate_open(uint64_t sid);
/* cluster_place.c: before a request or a module's call serves store sid here: when this node keeps it
 * now and its modules have not been told yet (it was taken over or moved here a moment ago), the hook
 * event cluster.store is emitted first (its observers reload the store's records), and meanwhile
 * other requests for the store wait. Nothing outside cluster mode. */
void cluster_store_ready(uint64_t sid);
/* cluster_place.c: move store sid to node `to` (a task on this node, its keeper): *task its id. */
int cluster_move_submit(uint64_t sid, const char *to, uint64_t uid, uint64_t *task, mb_err *err);
/* GET /api/v1/stores in cluster mode: append to list the stores of account uid that other nodes
 * keep, as those nodes list them (asked as that user, signed), unless the request itself came
 * from another node. cluster_stores_far: the same for a module's store_list (cluster_ops.c). */
void cluster_fwd_stores(mb_req *req, uint64_t uid, json_t *list);
void cluster_stores_far(uint64_t uid, json_t *list);
/* Cluster mode, a request not forwarded: GET target (a list) of every other node that is up, as
 * user uid, each answer's items appended to into; *more set when a node gave `limit` or more.
 * False (nothing asked) when alone or when the request came from another node. */
bool cluster_fwd_gather(mb_req *req, uint64_t uid, const char *target, size_t limit, json_t *into, bool *more);
/* Cluster mode, a request not forwarded: the other nodes that are up (names); NULL when alone or when
 * the request came from another node. */
json_t *cluster_fwd_nodes(mb_req *req);
/* GET target on node as user uid for request req (its credentials passed on), marked as forwarded:
 * the JSON of a 200 answer, else NULL (logged). */
json_t *cluster_fwd_ask_for(mb_req *req, uint64_t uid, const char *node, const char *target);
/* GET path on `node` as user uid, marked as forwarded (that node answers from its own data): the
 * parsed JSON of a 200 answer, else NULL (logged). */
json_t *cluster_fwd_ask(uint64_t uid, const char *node, const char *path);
/* For a call to another node as user uid (cluster_ops.c): h with this node's name and the signed
 * user for `method target`; the URL of target on `node` (false: the node is not up); an easy
 * handle on the shared connection cache (kept-alive connections), freed with _handle_free. */
struct curl_slist;
struct curl_slist *cluster_fwd_as(struct curl_slist *h, uint64_t uid, const char *method, const char *target);
bool cluster_fwd_url(const char *node, const char *target, char *url, size_t n);
void *cluster_fwd_handle(void);
void cluster_fwd_handle_free(void *c);
/* Answer req with what the node keeping store sid answers to req's method and headers (Range,
 * conditionals) on `target`, asked as user uid, streamed (a module's reply_file, cluster_ops.c).
 * Sets req->stream and returns 0 unanswered: once the handler returned, http.c calls the
 * stream's end, which suspends the connection until the keeper's headers are in. */
int cluster_fwd_file(mb_req *req, uint64_t uid, uint64_t sid, const char *target, mb_err *err);
/* A module's route begin hands the whole request (method, raw target, headers, the body still to
 * come) to the node that keeps store sid, as sent (its credentials checked there again): 1 and
 * req->stream set; 0 when sid is kept here, when not in a begin, or when req came from another node
 * (a store that moved a moment ago: the module serves it through its file calls); < 0 with err
 * when that node is down (api.c forward_store). */
int cluster_fwd_store(mb_req *req, uint64_t sid, mb_err *err);
/* cluster_ops.c: the ABI's file calls for a store another node keeps, carried out there through
 * its HTTP API as user u (api.c calls these when cluster_store_elsewhere(sid)); same contracts
 * as fs.c's, except: reads open the current version only, a write is sent at commit. */
typedef struct cops_reader cops_reader;
typedef struct cops_writer cops_writer;
int cops_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err);
int cops_page(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit, json_t **out,
              mb_err *err);
int cops_list(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out, mb_err *err);
int cops_mkdir(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err);
int cops_xfer(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, bool copy, json_t **info,
              mb_err *err);
int cops_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err);
int cops_store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err);
int cops_reply_file(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err);
/* usage_get in cluster mode: a store another node keeps (asked there), or (sid 0) the owner's
 * usage in every node's stores (this node's, and each other node's that keeps some, asked). */
int cops_usage(uint64_t sid, uint64_t owner, json_t **out, mb_err *err);
int cops_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, cops_reader **r, json_t **info,
              mb_err *err);
int64_t cops_read(cops_reader *r, uint64_t off, void *buf, size_t n, mb_err *err);
void cops_close(cops_reader *r);
int cops_write_begin(const mb_user *u, uint64_t sid, const char *path, const char *expect_sha256, int flags,
                     cops_writer **w, mb_err *err);
int cops_write_data(cops_writer *w, const void *buf, size_t n, mb_err *err);
int cops_write_commit(cops_writer *w, json_t **info, bool *created, mb_err *err);
void cops_write_abort(cops_writer *w);
/* A file write wherever its store is kept: on this node (fs_write_*) or, far, on its keeper
 * (cops_write_*), for the ABI's file calls (far when cluster_store_elsewhere) and a tus upload's
 * end (tus.c). fs_write_*'s contracts; commit and abort free w. */
typedef struct kept_writer kept_writer;
int kept_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size, const char *expect_sha256,
                     int flags, bool far, kept_writer **w, mb_err *err);
int kept_write_data(kept_writer *w, const void *buf, size_t n, mb_err *err);
int kept_write_commit(kept_writer *w, json_t **info, bool *created, mb_err *err);
void kept_write_abort(kept_writer *w);
/* A request another node forwarded for a user it had authenticated, signed with the cluster's
 * key (X-MByte-Forwarded-User): true with that user's id. Any other request: false. */
bool cluster_fwd_vouched(mb_req *req, uint64_t *uid);
/* HMAC-SHA-256 under the cluster's key (cs/key) of the formatted head and then body (blen may be
 * 0), as 64 hex digits (false: no key yet, or the head is over 1 KiB). */
bool cluster_mac(char out[65], const void *body, size_t blen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* cluster_repl.c: synchronous replication of each store to its replica node, and failover
 * (docs/cluster.md "Replicas and failover"). start after cluster_start; stop before
 * cluster_stop (no more takeovers), fini after the HTTP door (the sender). No-ops alone. */
int cluster_repl_listen(mb_err *err); /* first of all: the replica side's port, for the node's record */
int cluster_repl_start(mb_err *err);
void cluster_repl_stop(void);
void cluster_repl_fini(void);
/* GET /api/v1/admin/cluster (cluster_http.c) */
extern const kroute cluster_routes[];

/* ----------------------------------------------------------------- pool.c --- */
/* api->run_blocking: work(arg) on a pool thread, then done(arg) on the loop; self (NULL:
 * the kernel) is counted busy until done returned. MB_EBUSY when POOL_MAX_JOBS are in flight. */
int pool_run(mb_module *self, void (*work)(void *), void (*done)(void *), void *arg, mb_err *err);
void pool_fini(void); /* after modmgr_fini: ends the idle workers */

/* ----------------------------------------------------------------- task.c --- */
int task_init(struct event_base *base, int workers, mb_err *err);
void task_fini(void);
int task_type_add(mb_module *owner, const mb_task_type *t, void *state, mb_err *err);
void task_types_remove(mb_module *owner);
/* Reload: the types of `from` become `table` (ended by a NULL name) owned by `to`. */
int task_types_swap(mb_module *from, mb_module *to, const mb_task_type *table, void *new_state, mb_err *err);
int task_submit(const char *type, uint64_t owner, json_t *args, uint64_t *id, mb_err *err);
bool task_progress(mb_task *t, int percent, const char *message);
/* Why task_progress said stop: true when the kernel wants the worker back (shutdown, module
 * unload: the task resumes later); false when only the task's owner asked for a cancel. */
bool task_must_yield(mb_task *t);
void task_result(mb_task *t, json_t *result);
uint64_t task_id(mb_task *t);
uint64_t task_owner(mb_task *t);
/* What a client sees of task id (its record without the format version): 0 or MB_ENOENT. */
int task_get(uint64_t id, json_t **view);
/* Cancel task id: a queued one at once, a running one by telling its runner (the view then
 * has "cancel_requested": true); MB_ECONFLICT when it has already ended. */
int task_cancel(uint64_t id, json_t **view, mb_err *err);
/* Delete every key "<prefix><task16>" (a task's note of where it is: bulk.c's bk/, migrate.c's
 * mg/) whose task has ended or is gone. At start, after the queue is loaded. */
void task_notes_sweep(const char *prefix);
/* A page of tasks, newest first: owner's (NULL: everyone's), at most max, ids below before
 * (0: no bound) or, with at (a creation time), those after (at, before) in the order by creation
 * time then id (cluster mode: task_http.c's list of every node's); *more when older ones
 * remain. New reference. */
json_t *task_list(const uint64_t *owner, size_t max, uint64_t before, int64_t at, bool *more);
extern const kroute task_routes[]; /* task_http.c */
/* Stop the worker pool (idempotent): running runners see task_progress() return true and
 * their tasks go back to the queue without spending an attempt. Called by modmgr_fini
 * before modules are closed, and by task_fini. */
void task_stop(void);
/* Ask the running tasks of `owner` to stop and go back to the queue (module unload). */
void task_preempt(mb_module *owner);
/* Pure pieces, exposed for unit tests. The delay before retry number `attempt` (1 = after
 * the first failure): base * 2^(attempt-1), capped at cap_ms, then jittered into
 * [3/4 d, d] by `rnd`. */
int64_t task_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd);
enum { TASK_NEXT_DONE = 1, TASK_NEXT_RETRY = 2, TASK_NEXT_FAILED = 3, TASK_NEXT_CANCELLED = 4 };
/* What happens after an attempt returned rc (0 = done), given whether cancel was asked,
 * how many attempts have run and the most allowed. */
int task_next_state(int rc, bool cancel_requested, int attempts, int max_attempts);

/* --------------------------------------------------------------- notify.c --- */
/* Per-user event stream: notifications and task updates. Thread-safe. */
int notify_init(mb_err *err);
void notify_fini(void);
int notify_user(uint64_t uid, const char *kind, const char *title, const char *body);
/* Publish an event (already JSON text with its "type") to a user's live streams only. */
void notify_publish(uint64_t uid, const char *event, json_t *data); /* steals data */
extern const kroute notify_routes[];

/* --------------------------------------------------------------- modmgr.c --- */
typedef enum { MOD_ACTIVE = 1, MOD_DRAINING = 2, MOD_COLD = 3 } mod_state;
/* reload.c: SIGHUP and POST /api/v1/admin/config/reload|check (docs/operations.md). */
int reload_init(mb_err *err);
void reload_on_signal(void); /* loop thread */
void reload_fini(void);      /* at exit: frees the replaced configurations */
/* New settings for the active modules (reload.c; loop thread): each whose <name>.yaml reads
 * differently gets them through its reconfigure call, or is reloaded from the same .so when it has
 * none; a file that does not validate is refused and the module keeps its settings. Appends one
 * {"module","action":"unchanged"|"reconfigured"|"reloaded"|"refused","detail"} per module to
 * report; returns how many were refused. */
int modmgr_reconfigure(json_t *report);
/* The same check without applying anything (any thread): actions "unchanged", "changed", "refused". */
int modmgr_check_config(json_t *report);
int modmgr_init(struct event_base *base, mb_err *err);
void modmgr_fini(void);
int modmgr_load(const char *name, mb_err *err);
int modmgr_unload(const char *name, mb_err *err);
int modmgr_reload(const char *name, mb_err *err);
json_t *modmgr_list(void); /* [{"name","version","state",...}] new reference */
/* Module `name` is active and its configuration has the key `key` (any thread). */
bool modmgr_takes_key(const char *name, const char *key);
/* Order the modules to start so that a module using a provider module's references
 * (vault:) comes after it (main.c, before loading). */
void modmgr_order(char **names);
/* Re-resolve the secret references of every module whose file holds some; reconfigure (or
 * reload) where the resolved settings changed. Loop thread. Returns how many were refused. */
int modmgr_secrets_apply(json_t *report);

/* --------------------------------------------------------------- modref.c --- */
/* The handle of one loaded copy of a module and its busy count (a leaf: registries and
 * modmgr both use it). modmgr makes one per copy and frees it once the copy is closed. */
mb_module *modref_new(const char *name);
void modref_free(mb_module *m);
/* Count a call into a module (enter before, leave after). owner NULL is the kernel: free. */
void modref_enter(mb_module *m);
void modref_leave(mb_module *m);
long modref_busy(const mb_module *m);
const char *modref_name(const mb_module *m); /* "kernel" for NULL */

/* ------------------------------------------------------------- registry.c --- */
/* An owner-tagged table (routes, hooks, task types, timers). Entries are ops->size bytes
 * and start with `mb_module *owner`. See registry.c for the locking pattern. */
typedef struct reg_ops {
    size_t size;
    /* Two entries name the same thing: adding the second is MB_EEXIST (NULL: never). */
    bool (*conflict)(const void *have, const void *fresh);
    /* On a reload, the old entry `have` keeps its slot for the fresh entry (NULL: conflict). */
    bool (*same)(const void *have, const void *fresh);
    /* The kept slot takes over fresh (owner, function, state...) and frees fresh's rest. */
    void (*retake)(void *have, void *fresh);
    void (*drop)(void *e);                                 /* free what an entry owns (may be NULL) */
    int (*order)(const void *a, const void *b);            /* qsort order kept after changes (may be NULL) */
    void (*describe)(const void *e, char *buf, size_t n);  /* "route GET /api/v1/x", for messages */
} reg_ops;
typedef struct registry {
    const reg_ops *ops;
    pthread_rwlock_t lock;
    char *v;
    size_t n, cap;
} registry;
/* Every entry type names its owner first: REG_ENTRY(type) checks it at compile time. */
#define REG_ENTRY(type) _Static_assert(offsetof(type, owner) == 0, #type " must start with its owner")
#define REG_INIT(ops_) {.ops = (ops_), .lock = PTHREAD_RWLOCK_INITIALIZER}
void reg_init(registry *r, const reg_ops *ops);
void reg_clear(registry *r); /* drops every entry (at exit) */
/* Add one entry (copied; on failure it is dropped). Loop thread or start-up. */
int reg_add(registry *r, const void *e, mb_err *err);
/* Drop every entry of owner, under the write lock: no new lookup finds them. */
void reg_remove_owner(registry *r, mb_module *owner);
/* Change every entry of owner with fn under the write lock: a lookup that enters an owner
 * does so before or after the change, never across it. */
void reg_update_owner(registry *r, mb_module *owner, void (*fn)(void *e, void *ud), void *ud);
/* Drop the first entry matching key. */
void reg_remove(registry *r, bool (*match)(const void *e, const void *key), const void *key);
/* Reload: the entries of `from` become exactly fresh[0..n) (owned by the new copy) in one
 * write-locked step; an entry of `from` that is the same thing keeps its slot (retake).
 * The fresh entries are consumed, also on failure (MB_EEXIST: nothing changed). */
int reg_swap_owner(registry *r, mb_module *from, void *fresh, size_t n, mb_err *err);
/* Lookups under the read lock. reg_get: the first entry matching key, copied to out (may be
 * NULL), its owner entered when `enter` (the caller leaves after the call). reg_collect: up
 * to max matching entries copied to out, each owner entered. In a copy, function and state
 * pointers stay valid while the owner is entered; what the entry owns (its strings) may be
 * freed as soon as the lock is released, so take those inside `match`. reg_read: run fn over the entries with the read lock
 * held (fn enters the owner it will call). */
bool reg_get(registry *r, bool (*match)(const void *e, const void *key), const void *key, void *out, bool enter);
size_t reg_collect(registry *r, bool (*match)(const void *e, const void *key), const void *key, void *out,
                   size_t max);
void *reg_read(registry *r, void *(*fn)(const void *entries, size_t n, void *ud), void *ud);

/* ---------------------------------------------------------------- timer.c --- */
/* api->timer_add / timer_cancel (abi/mbyte.h). timer_remove_owner: modmgr, loop thread,
 * before a copy's fini (unload and the old copy of a reload); a run in progress finishes
 * and keeps the module busy until then. */
int timer_add(mb_module *self, int64_t delay_ms, int64_t period_ms, mb_timer_fn fn, void *arg, mb_timer **out,
              mb_err *err);
void timer_cancel(mb_timer *timer);
void timer_remove_owner(mb_module *owner);

/* ----------------------------------------------------------------- luas.c --- */
int luas_init(const char *script_dir, mb_err *err);
void luas_fini(void);
int luas_call(const char *script, const char *fn, const json_t *arg, json_t **result, mb_err *err);
/* Run source text (unit tests and mbytectl lua check). */
int luas_run_string(const char *name, const char *src, const char *fn, const json_t *arg,
                    json_t **result, mb_err *err);
/* Budgets for every later call: instructions and bytes (0 restores the default: 10 million
 * instructions, 32 MiB). Thread-safe; luas_init also reads MBYTE_LUA_INSTRUCTIONS/MEMORY. */
void luas_set_limits(uint64_t instructions, size_t memory);

/* ------------------------------------------------------------------ api.c --- */
const mb_api *api_table(void);

/* --------------------------------------------------------------- health.c --- */
/* GET /api/v1/health, /api/v1/features, /api/v1/admin/status. */
int health_routes_init(mb_err *err);

/* ----------------------------------------------------------------- loop.c --- */
void loop_init(struct event_base *base);
void loop_fini(void); /* runs what is still queued */
void loop_drain(void);
struct event_base *main_loop(void);
/* Run fn(arg) on the loop thread (thread-safe); used to hand work to the owning thread. */
void main_call(void (*fn)(void *), void *arg);

/* ------------------------------------------------------------ zip.c, tus.c --- */
/* zip.c: a pull-driven zip writer (stored entries, data descriptors, ZIP64, UTF-8 names).
 * List the entries, then call zip_stream_read until it returns 0. One owner at a time. */
typedef struct zip_stream zip_stream;
typedef struct zip_source {
    /* Open the file listed under `key`; *size is the exact number of bytes read() will give. */
    int (*open)(void *ud, const char *key, uint64_t *size, mb_err *err);
    /* Sequential read of up to n bytes; > 0 bytes, 0 at end, negative MB_E* with err. */
    ssize_t (*read)(void *ud, void *buf, size_t n, mb_err *err);
    void (*close)(void *ud);
} zip_source;
zip_stream *zip_stream_new(const zip_source *src, void *ud);
/* name: the name inside the archive ('\' becomes '_', folders get a trailing '/');
 * key: what src->open receives (NULL: name). mtime in Unix seconds (<= 0: 1980). */
void zip_stream_add(zip_stream *z, const char *name, const char *key, bool folder, int64_t mtime);
size_t zip_stream_count(const zip_stream *z);
/* Entries on demand instead of all first: when every added entry is written, fn(ud, z) adds
 * the next ones (zip_stream_add); it returns 0 (none added: the end) or a negative MB_E*.
 * Each entry is freed once written (its central record waits in a temporary file), so an
 * archive of any number of entries takes constant memory. */
typedef int (*zip_feed_fn)(void *ud, zip_stream *z);
void zip_stream_feed(zip_stream *z, zip_feed_fn fn, void *ud);
/* Fill buf with up to max bytes of the archive: > 0 bytes, 0 at the end, negative on error. */
ssize_t zip_stream_read(zip_stream *z, char *buf, size_t max, mb_err *err);
void zip_stream_free(zip_stream *z);

/* tus.c: tus 1.0 resumable uploads under /api/v1/uploads (after fs_init). */
int tus_init(mb_err *err);
extern const kroute tus_routes[];
void tus_fini(void);
/* Pure pieces, exposed for unit tests. Upload-Metadata: "key b64,key2 b64,flag" into a JSON
 * object of strings (a key without a value maps to ""); keys must be unique ASCII without
 * spaces or commas, values valid base64 of UTF-8 text without NUL. */
int tus_parse_metadata(const char *hdr, json_t **out, mb_err *err);
/* Upload-Checksum: "<algo> <base64 digest>", algo sha1 or sha256; *algo is 1 or 256 and
 * digest receives the decoded bytes (20 or 32); *dlen its length. */
int tus_parse_checksum(const char *hdr, int *algo, uint8_t digest[32], size_t *dlen, mb_err *err);
/* Upload id: exactly 32 lower-hex characters. */
bool tus_valid_id(const char *id);
/* RFC 9110 IMF-fixdate of t (out has at least 30 bytes). */
void tus_http_date(int64_t t, char out[40]);

/* --------------------------------------------------------------- stores.c --- */
/* Store states, settings, the default store and usage (issue 4; docs/storage.md "Stores").
 * Usage deltas ride in each change's transaction (txn.h). Thread-safe. */
int stores_init(mb_err *err);
/* Every store record of `owner` (0: every store), in id order; fn takes the reference. */
void stores_each(uint64_t owner, void (*fn)(json_t *rec, void *ud), void *ud);
void stores_list_decorate(const mb_user *u, json_t *stores);
int stores_usage_get(uint64_t sid, uint64_t owner, json_t **out, mb_err *err);
int stores_create(uint64_t owner, const char *name, const json_t *settings, uint64_t *sid, mb_err *err);
int stores_ready(uint64_t sid, mb_err *err);
int stores_rename(const mb_user *u, uint64_t sid, const char *name, mb_err *err);
int stores_delete_begin(const mb_user *u, uint64_t sid, mb_err *err);
int stores_delete_step(uint64_t sid, int max_keys, int64_t *removed, mb_err *err);
int stores_list_all(uint64_t owner, json_t **out, mb_err *err);
int stores_settings_get(uint64_t sid, json_t **out, mb_err *err);
int stores_settings_set(uint64_t sid, const json_t *settings, mb_err *err);
int stores_default_get(uint64_t owner, uint64_t *sid, mb_err *err);
int stores_default_set(const mb_user *u, uint64_t sid, mb_err *err);
int stores_conf_load(const char *file, json_t **out, mb_err *err);

/* ------------------------------------------------- HTTP helpers of the ABI --- */
/* http.c: the buffered body of a (non-streamed) request, NULL when none. */
const char *http_req_body(mb_req *req, size_t *len);
/* auth.c: the id of a user by name; 0 or MB_ENOENT. */
int auth_user_id(const char *name, uint64_t *id);
/* files_http.c: a Range header's byte ranges (parse_ranges): the count (at most 32, each inside
 * [0, size)), 0 when none is satisfiable (416), -1 when the header is to be ignored. */
typedef struct {
    uint64_t first, last;
} brange;
int parse_ranges(const char *h, uint64_t size, brange *out);
/* files_http.c: answer with a file download (or a folder's zip) as GET .../files/{path}. */
int files_reply_get(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err);

/* ---------------------------------------------- evapi.c, auth.c (ABI minor 2) --- */
/* auth.c: the password check and user lookup behind api->auth_password / api->user_lookup. */
int auth_password(const char *name, const char *pw, const char *ip, mb_user *out, char *namebuf, size_t n,
                  mb_err *err);
int auth_user_find(const char *name, mb_user *out, char *namebuf, size_t n, mb_err *err);
/* auth.c: api->login_wait, the login throttle's verdict (seconds to wait, err filled). */
int64_t auth_login_wait(const char *name, const char *ip, mb_err *err);
/* auth.c: record a wrong password of any door in the login throttle (and auth.login_failed),
 * or clear the (account, address) count after a right one. */
void auth_login_failed(const char *name, const char *ip);
void auth_login_succeeded(const char *name, const char *ip);

/* ------------------------------------------------ apppass.c (ABI minor 10, webdav) --- */
/* App passwords: per-user secrets for doors that cannot do a browser login (WebDAV, FTP),
 * each optionally limited to one store and to reading. */
int apppass_init(mb_err *err);
int apppass_check(const char *name, const char *pw, const char *ip, bool allow_account, mb_user *out, char *namebuf,
                  size_t n, mb_apppass_scope *scope, mb_err *err);

/* -------------------------------------------------------- throttle.c (ABI minor 9) --- */
/* api->throttle_*: named failure throttles, kernel-owned, valid until exit (throttle.c). */
mb_throttle *throttle_get(const char *name, int max, int window_s, int slow_s);
int64_t throttle_wait(mb_throttle *t, const char *key);
int64_t throttle_fail(mb_throttle *t, const char *key);
void throttle_clear(mb_throttle *t, const char *key);
/* evapi.c: the loop and worker entries of mb_api for event-driven modules (ftp). */
struct event_base *evapi_event_base(void);
const char *evapi_data_dir(void);
const char *evapi_module_dir(void);
int evapi_err_ftp_reply(int code);
/* listdeco.c (thumbs branch, ABI minor 10): modules' listing decorators. */
int listdeco_set(mb_module *self, mb_listing_fn fn, void *state, mb_err *err);
void listdeco_apply(uint64_t sid, json_t *listing);
/* listdeco.c (tags branch, ABI 2.1): listing filters, run by the listing before decorators. */
int listdeco_filter_set(mb_module *self, mb_listing_filter_fn fn, void *state, mb_err *err);
int listdeco_filter(mb_req *req, uint64_t sid, json_t *listing, mb_err *err);
/* modsvc.c (tags branch, ABI 2.1): named services modules offer each other. */
int modsvc_set(mb_module *self, const char *name, mb_service_fn fn, void *state, mb_err *err);
int modsvc_call(const char *name, const json_t *arg, json_t **out, mb_err *err);
/* http.c (tags branch): every value of a query argument, a new array. */
json_t *http_req_query_all(mb_req *req, const char *name);
/* luas.c (tags branch): compile only; the wall-clock limit of one call (0: the default, 5 s). */
int luas_check(const char *name, const char *src, mb_err *err);
void luas_set_time_limit(uint64_t ms);

/* ------------------------------------------- metrics.c, accesslog.c (issue 26) --- */
/* metrics.c: counters for GET /metrics and metrics_listen (docs/operations.md "Metrics").
 * Every counting call is lock-free and any thread's. */
enum { METRICS_HTTP = 0, METRICS_FTP = 1 };
int metrics_init(mb_err *err); /* after api_routes_init: registers /metrics, starts metrics_listen */
void metrics_fini(void);       /* after http_stop */
int metrics_cfg_check(const char *file, const json_t *root, const json_t *lines, mb_err *err);
void metrics_http_request(const char *route, const char *method, int status, int64_t usec, uint64_t in,
                          uint64_t out);
void metrics_bytes(int proto, uint64_t in, uint64_t out);
void metrics_upload(int delta);
void metrics_login_failed(void);
void metrics_task_failed(void);
void metrics_group_commit(uint64_t writes); /* db.c: writes one fsync made durable */
void metrics_module_add(int metric, int64_t delta); /* api->metric_add */
char *metrics_render(size_t *len);            /* metrics_http.c: the page, malloc'd */
void metrics_render_counters(FILE *f);        /* the counters' part of the page */
void metrics_head(FILE *f, const char *name, const char *type, const char *help);
void metrics_label(FILE *f, const char *v);   /* a label value, escaped */
void metrics_reset(void);
struct sockaddr_storage;
int metrics_parse_addr(const char *s, struct sockaddr_storage *ss); /* "ip:port", "[v6]:port" */
/* db.c: a LevelDB property ("leveldb.stats"), malloc'd, or NULL. */
char *db_property(const char *name);
uint64_t db_mapped_given(void); /* bytes of table mappings paged out to keep within db_mapped */

/* accesslog.c: a request's id, sizes and route, kept in its mb_req by http.c. */
struct MHD_Connection;
typedef struct accesslog_rec {
    char id[65];
    bool begun, upload;
    const char *route, *target, *version; /* in the request's arena */
    int64_t start;                        /* wall clock, seconds */
    uint64_t in, out;                     /* body bytes received; answer body bytes */
} accesslog_rec;
void accesslog_configure(void); /* loop thread: at start and on reload (reopens access_log) */
void accesslog_fini(void);
void accesslog_enter(accesslog_rec *rl, mb_req *req, struct MHD_Connection *conn, const char *url,
                     const char *version);
void accesslog_route(accesslog_rec *rl, mb_req *req, const char *pattern, bool streamed);
void accesslog_problem(json_t *problem);
void accesslog_done(accesslog_rec *rl, mb_req *req, int status, bool completed, int64_t ms);
/* Pure pieces, fuzzed (tests/fuzz/fuzz_accesslog.c): a client's text for a quoted field ('"', '\'
 * and bytes outside printable ASCII as \xhh), and a request target (share tokens redacted,
 * spaces, quotes, '%', '\' and non-ASCII bytes percent-encoded). Both cut to fit room (>= 8). */
size_t accesslog_quote(char *out, size_t room, const char *s);
void accesslog_target(const char *url, char *out, size_t room);
/* The path as it may be logged: a link token (/api/v1/public/<token>, /s/<token>) becomes
 * "***". Returns path itself or buf. */
const char *accesslog_redact(const char *path, char *buf, size_t n);

#endif


/* ---------------------------------------------------------------- sniff.c --- */
/* Content type from a file's first bytes by fixed signatures (WHATWG MIME Sniffing and a few
 * more), or NULL; *container is set for generic containers (zip, OLE) whose extension names
 * the content better. A static string. */
const char *sniff_type(const uint8_t *p, size_t n, bool *container);
/* True when the bytes hold no binary data byte (WHATWG), i.e. look like text; false if n == 0. */
bool sniff_is_text(const uint8_t *p, size_t n);
