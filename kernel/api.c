/*
 * api.c — the mb_api table handed to every module (the kernel's own small routes, health
 * and status, are in health.c). Every entry is a thin adapter onto a kernel subsystem, so the table is
 * the only place the ABI and the kernel's internal names meet.
 * Threads: the table is immutable after start; each entry is as thread-safe as the
 * subsystem it calls (all are).
 */
#include "fs.h"
#include "txn.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void api_log(mb_module *self, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void api_log(mb_module *self, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, self ? modref_name(self) : "module", fmt, ap);
    va_end(ap);
}

static int api_err_set(mb_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int api_err_set(mb_err *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Module keys live under "m/<module>/": a module cannot reach kernel tables or another
 * module's keys. */
static char *kv_key(mb_module *self, const char *key, size_t *n)
{
    const char *name = modref_name(self);
    size_t len = 2 + strlen(name) + 1 + strlen(key);
    char *k = xmalloc(len + 1);
    snprintf(k, len + 1, "m/%s/%s", name, key);
    *n = len;
    return k;
}

static int kv_get(mb_module *self, const char *key, char **value, size_t *len, mb_err *err)
{
    size_t kn;
    char *k = kv_key(self, key, &kn);
    int rc = db_get(k, kn, value, len);
    free(k);
    if (rc == MB_ENOENT)
        return err_set(err, rc, "no value for %s", key);
    if (rc)
        return err_set(err, rc, "metadata read failed");
    return 0;
}

/* In cluster mode a module's record of a store this node keeps (store_records) is a change of the
 * store: written through the commit path, so its replica has it before the call returns. 1: not such
 * a record, or a store kept elsewhere (the caller writes it here as any other key). */
static int kv_store_write(const char *k, size_t kn, const void *value, size_t len, bool put, mb_err *err)
{
    uint64_t sid;
    json_t *placed = NULL;
    if (!cluster_enabled() || !cluster_record_store(k, kn, &sid) || !(placed = cluster_store_record(sid)))
        return 1; /* alone, another module's key, or a store already deleted */
    bool here = !strcmp(jstr(placed, "node"), cluster_node_name());
    json_decref(placed);
    if (!here) /* as before: written where it was made (WebDAV by store name through another node) */
        return 1;
    txn t;
    txn_begin(&t, NULL);
    if (put)
        db_batch_put(t.b, k, kn, value, len);
    else
        db_batch_del(t.b, k, kn);
    return txn_end(&t, 0, err, "a module's record of a store");
}

static int kv_put(mb_module *self, const char *key, const void *value, size_t len, bool sync, mb_err *err)
{
    size_t kn;
    char *k = kv_key(self, key, &kn);
    int rc = kv_store_write(k, kn, value, len, true, err);
    if (rc == 1 && (rc = db_put(k, kn, value, len, sync)))
        err_set(err, rc, "metadata write failed");
    free(k);
    return rc;
}

static int kv_del(mb_module *self, const char *key, bool sync, mb_err *err)
{
    size_t kn;
    char *k = kv_key(self, key, &kn);
    int rc = kv_store_write(k, kn, NULL, 0, false, err);
    if (rc == 1 && (rc = db_del(k, kn, sync)))
        err_set(err, rc, "metadata write failed");
    free(k);
    return rc;
}

/* cluster_nodes, cluster_ask, store_here (2.1, cluster) */
static int api_cluster_nodes(mb_req *req, json_t **out, mb_err *err)
{
    json_t *nodes = cluster_fwd_nodes(req);
    if (!nodes)
        return err_set(err, MB_EUNSUPP, "not in cluster mode, or a request from another node");
    *out = json_pack("{s:s, s:o}", "node", cluster_node_name(), "nodes", nodes);
    return 0;
}

static int api_cluster_ask(mb_req *req, const char *node, const char *target, json_t **answer, mb_err *err)
{
    const mb_user *u = http_req_user(req);
    *answer = u ? cluster_fwd_ask_for(req, u->id, node, target) : NULL;
    return *answer ? 0 : err_set(err, MB_EBUSY, "node %s did not answer %s", node, target);
}

static bool api_store_here(uint64_t sid) { return !cluster_enabled() || !cluster_store_elsewhere(sid); }

static int api_password_hash(const char *password, char out[128])
{
    return password && !auth_pwhash_str(out, password, strlen(password)) ? 0 : MB_ENOMEM;
}

static int api_forward_store(mb_req *req, uint64_t sid, mb_err *err)
{
    return cluster_enabled() ? cluster_fwd_store(req, sid, err) : 0;
}

/* store_records (2.1, cluster) */
static int store_records(mb_module *self, const char *prefix, mb_err *err)
{
    return cluster_store_records(modref_name(self), prefix ? prefix : "", err);
}

/* kv_scan_after (ABI 2.1, queues): the keys with prefix after `after` (a key with the prefix). */
static int kv_scan_after(mb_module *self, const char *prefix, const char *after,
                         int (*fn)(const char *, const void *, size_t, void *), void *ud, mb_err *err)
{
    (void)err;
    size_t kn;
    char *k = kv_key(self, prefix, &kn);
    size_t strip = kn - strlen(prefix);
    db_iter *it = db_iter_prefix(k, kn);
    if (after && *after && strncmp(after, prefix, strlen(prefix)) >= 0) {
        /* the first key after it: its key with a NUL appended sorts right behind it (keys are
         * C strings). A key before the prefix: from the prefix's start, as without one. */
        size_t an;
        char *a = kv_key(self, after, &an);
        a[an] = 0;
        db_iter_seek(it, a, an + 1);
        free(a);
    }
    while (db_iter_next(it)) {
        size_t klen, vlen;
        const char *key = db_iter_key(it, &klen);
        const char *val = db_iter_val(it, &vlen);
        char *kcopy = xmalloc(klen - strip + 1);
        memcpy(kcopy, key + strip, klen - strip);
        kcopy[klen - strip] = 0;
        int stop = fn(kcopy, val, vlen, ud);
        free(kcopy);
        if (stop)
            break;
    }
    db_iter_free(it);
    free(k);
    return 0;
}

static int kv_scan(mb_module *self, const char *prefix, int (*fn)(const char *, const void *, size_t, void *),
                   void *ud, mb_err *err)
{
    return kv_scan_after(self, prefix, NULL, fn, ud, err);
}

/* kv_scan with each value parsed: the loop every module wrote around json_loadb. */
typedef struct scan_json {
    mb_module *self;
    int (*fn)(const char *key, json_t *value, void *ud);
    void *ud;
} scan_json;

static int scan_json_one(const char *key, const void *value, size_t len, void *ud)
{
    scan_json *c = ud;
    json_t *v = json_loadb(value, len, 0, NULL);
    if (!v) {
        log_msg(LOG_WARN, modref_name(c->self), "value of %s is not JSON; skipped", key);
        return 0;
    }
    int stop = c->fn(key, v, c->ud);
    json_decref(v);
    return stop;
}

static int kv_scan_json(mb_module *self, const char *prefix, int (*fn)(const char *, json_t *, void *), void *ud,
                        mb_err *err)
{
    scan_json c = {self, fn, ud};
    return kv_scan(self, prefix, scan_json_one, &c, err);
}

static int reply_file(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    return cluster_store_elsewhere(sid) ? cops_reply_file(req, u, sid, path ? path : "", err)
                                        : files_reply_get(req, u, sid, path ? path : "", err);
}
static int req_body(mb_req *req, const void **data, size_t *len)
{
    *data = http_req_body(req, len);
    return 0;
}
static int reply_error(mb_req *req, const mb_err *err) { return http_reply_error(req, err); }
static int64_t api_now(void) { return now_wall(); }

/* The one user look-up: by name, else by id. */
static int user_lookup(uint64_t id, const char *name, mb_user *out, char *namebuf, size_t namelen, mb_err *err)
{
    char byid[256], tmp[256];
    mb_user u;
    if (!name) {
        if (auth_user_name(id, byid, sizeof byid))
            return err_set(err, MB_ENOENT, "no user with id %llu", (unsigned long long)id);
        name = byid;
    }
    if (!out || !namebuf || !namelen) { /* existence, or the caller wants no name */
        namebuf = tmp;
        namelen = sizeof tmp;
    }
    if (auth_user_find(name, out ? out : &u, namebuf, namelen, NULL))
        return err_set(err, MB_ENOENT, "no user '%s'", name);
    if (out && namebuf == tmp)
        out->name = NULL; /* it pointed into tmp */
    return 0;
}

/* Files. In cluster mode a call for a store another node keeps is carried out there
 * (cluster_ops.c); the ABI's opaque reader/writer say which of the two holds the file. */
#define FAR(sid) cluster_store_elsewhere(sid)

typedef struct api_reader {
    fs_reader *near;
    cops_reader *far;
} api_reader;

static int stores_list(const mb_user *u, json_t **out, mb_err *err)
{
    int rc = fs_stores_list(u, out, err);
    if (!rc && u && cluster_enabled())
        cluster_stores_far(u->id, *out);
    return rc;
}
static int store_get(const mb_user *u, uint64_t sid, json_t **out, mb_err *err)
{
    return FAR(sid) ? cops_store_get(u, sid, out, err) : fs_store_get(u, sid, out, err);
}
static int file_stat(const mb_user *u, uint64_t sid, const char *path, json_t **info, mb_err *err)
{
    return FAR(sid) ? cops_stat(u, sid, path, info, err) : fs_stat(u, sid, path, info, err);
}
static int folder_list(const mb_user *u, uint64_t sid, const char *path, bool recursive, json_t **out, mb_err *err)
{
    return FAR(sid) ? cops_list(u, sid, path, recursive, out, err) : fs_list(u, sid, path, recursive, out, err);
}
static int folder_page(const mb_user *u, uint64_t sid, const char *path, const char *cursor, size_t limit,
                       json_t **out, mb_err *err)
{
    return FAR(sid) ? cops_page(u, sid, path, cursor, limit, out, err)
                    : fs_list_page(u, sid, path, cursor, limit, out, err);
}
/* One folder of a walk: its page being visited, and where its next page starts. */
typedef struct walk_frame {
    char *path, *cursor; /* cursor NULL once fetched: the page held is the folder's last */
    json_t *page;
    size_t i;
    bool fetched;
} walk_frame;

static void walk_push(walk_frame **st, size_t *n, size_t *cap, const char *path)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *st = xrealloc(*st, *cap * sizeof **st);
    }
    (*st)[(*n)++] = (walk_frame){.path = xstrdup(path)};
}

/* folder_walk (ABI): depth first over folder_page, so a store another node keeps is walked
 * through its keeper page by page like one kept here. */
static int folder_walk(const mb_user *u, uint64_t sid, const char *path, int (*fn)(const json_t *entry, void *ud),
                       void *ud, mb_err *err)
{
    walk_frame *st = NULL;
    size_t n = 0, cap = 0, skip = 0; /* skip: the length of the root's normalized path */
    int rc = 0;
    walk_push(&st, &n, &cap, path);
    while (!rc && n) {
        walk_frame *f = &st[n - 1];
        if (f->i == json_array_size(f->page)) { /* json_array_size(NULL) is 0 */
            if (f->fetched && !f->cursor) { /* the folder is done */
                free(f->path), json_decref(f->page);
                n--;
                continue;
            }
            json_t *out = NULL;
            mb_err e = {0};
            rc = folder_page(u, sid, f->path, f->cursor, 0, &out, &e);
            free(f->cursor), f->cursor = NULL;
            json_decref(f->page), f->page = NULL;
            f->i = 0, f->fetched = true;
            if (rc && n > 1 && (rc == MB_ENOENT || rc == MB_ECONFLICT)) /* removed (or a file now) meanwhile */
                rc = 0;
            else if (rc)
                *err = e;
            else {
                if (n == 1)
                    skip = strlen(jstr(out, "path"));
                f->page = json_incref(json_object_get(out, "entries"));
                const char *next = json_string_value(json_object_get(out, "next_cursor")); /* null: the last page */
                f->cursor = next && *next ? xstrdup(next) : NULL;
            }
            json_decref(out);
            continue;
        }
        json_t *en = json_array_get(f->page, f->i++);
        const char *full = jstr(en, "path");
        const char *rel = full + (skip && strlen(full) > skip && full[skip] == '/' ? skip + 1 : 0);
        json_object_set_new(en, "relpath", json_string(rel));
        if ((rc = fn(en, ud)))
            break;
        if (!strcmp(jstr(en, "type"), "folder"))
            walk_push(&st, &n, &cap, full); /* en stays in f's page: full stays valid */
    }
    while (n--)
        free(st[n].path), free(st[n].cursor), json_decref(st[n].page);
    free(st);
    return rc;
}

static int folder_create(const mb_user *u, uint64_t sid, const char *path, int flags, json_t **info, mb_err *err)
{
    return FAR(sid) ? cops_mkdir(u, sid, path, flags, info, err) : fs_mkdir(u, sid, path, flags, info, err);
}
static int file_move(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                     mb_err *err)
{
    return FAR(sid) ? cops_xfer(u, sid, from, to, flags, false, info, err)
                    : fs_move(u, sid, from, to, flags, info, err);
}
static int file_copy(const mb_user *u, uint64_t sid, const char *from, const char *to, int flags, json_t **info,
                     mb_err *err)
{
    return FAR(sid) ? cops_xfer(u, sid, from, to, flags, true, info, err)
                    : fs_copy(u, sid, from, to, flags, info, err);
}
static int file_delete(const mb_user *u, uint64_t sid, const char *path, int flags, mb_err *err)
{
    return FAR(sid) ? cops_delete(u, sid, path, flags, err) : fs_delete(u, sid, path, flags, err);
}

/* A user's usage counts every node's stores (a quota holds across the cluster). */
static int usage_get(uint64_t sid, uint64_t owner, json_t **out, mb_err *err)
{
    return cluster_enabled() && (!sid || FAR(sid)) ? cops_usage(sid, owner, out, err)
                                                   : stores_usage_get(sid, owner, out, err);
}

static int file_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, mb_file_reader **r,
                     json_t **info, mb_err *err)
{
    api_reader x = {0};
    int rc = FAR(sid) ? cops_open(u, sid, path, version, &x.far, info, err)
                      : fs_open(u, sid, path, version, &x.near, info, err);
    if (!rc) {
        api_reader *p = xmalloc(sizeof *p);
        *p = x;
        *r = (mb_file_reader *)p;
    }
    return rc;
}
static int64_t file_read(mb_file_reader *r, uint64_t off, void *buf, size_t n, mb_err *err)
{
    api_reader *x = (api_reader *)r;
    return x->far ? cops_read(x->far, off, buf, n, err) : fs_read(x->near, off, buf, n, err);
}
static void file_close(mb_file_reader *r)
{
    api_reader *x = (api_reader *)r;
    if (!x)
        return;
    if (x->far)
        cops_close(x->far);
    else
        fs_close(x->near);
    free(x);
}
static int file_read_fd(mb_file_reader *r, uint64_t off, int *fd, uint64_t *fd_off, uint64_t *len, mb_err *err)
{
    api_reader *x = (api_reader *)r;
    return x->far ? err_set(err, MB_EUNSUPP, "the file is kept by another node")
                  : fs_read_fd(x->near, off, fd, fd_off, len, err);
}
static int file_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                            const char *expect_sha256, int flags, mb_file_writer **w, mb_err *err)
{
    return kept_write_begin(u, sid, path, expected_size, expect_sha256, flags, FAR(sid), (kept_writer **)w, err);
}
static int file_write_data(mb_file_writer *w, const void *buf, size_t n, mb_err *err)
{
    return kept_write_data((kept_writer *)w, buf, n, err);
}
static int file_write_commit(mb_file_writer *w, json_t **info, bool *created, mb_err *err)
{
    return kept_write_commit((kept_writer *)w, info, created, err);
}
static void file_write_abort(mb_file_writer *w) { kept_write_abort((kept_writer *)w); }

/* Where the kernel's own constants stand for the ABI's they must be the same numbers: the
 * adapters pass them through unchanged. */
_Static_assert((int)LOG_DEBUG == (int)MB_LOG_DEBUG && (int)LOG_INFO == (int)MB_LOG_INFO &&
                   (int)LOG_WARN == (int)MB_LOG_WARN && (int)LOG_ERROR == (int)MB_LOG_ERROR,
               "kernel log levels mirror MB_LOG_*");
_Static_assert((int)FS_PARENTS == (int)MB_FS_PARENTS && (int)FS_NO_OVERWRITE == (int)MB_FS_NO_OVERWRITE &&
                   (int)FS_RECURSIVE == (int)MB_FS_RECURSIVE && (int)FS_OVERWRITE == (int)MB_FS_OVERWRITE,
               "kernel file flags mirror MB_FS_*");

/* Laid out like struct mb_api: by topic. */
/* dav (2.1): a module's streamed answer. The module stays entered until the stream is freed,
 * so its code and ctx outlive the handler for as long as libmicrohttpd pulls bytes. */
typedef struct {
    mb_module *self;
    int64_t (*read)(void *, char *, size_t);
    void *ctx;
    void (*free_ctx)(void *);
} mod_stream;

static ssize_t mod_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    mod_stream *s = cls;
    int64_t n = s->read(s->ctx, buf, max);
    return n > 0 ? (ssize_t)(n > (int64_t)max ? (int64_t)max : n) : n == 0 ? -1 : -2;
}

static void mod_stream_free(void *cls)
{
    mod_stream *s = cls;
    if (s->free_ctx)
        s->free_ctx(s->ctx);
    modref_leave(s->self);
    free(s);
}

static int api_reply_stream(mb_module *self, mb_req *req, int status, const char *ctype,
                            int64_t (*read)(void *, char *, size_t), void *ctx, void (*free_ctx)(void *), mb_err *err)
{
    if (!read || status < 200 || status > 599)
        return err_set(err, MB_EINVAL, "reply_stream needs a reader and an HTTP status");
    mod_stream *s = xmalloc(sizeof *s);
    *s = (mod_stream){self, read, ctx, free_ctx};
    modref_enter(self);
    return http_reply_stream(req, status, ctype, (uint64_t)-1, mod_stream_read, s, mod_stream_free);
}

static const mb_api table = {
    .size = sizeof(mb_api),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    /* lifecycle (kernel/evapi.c) */
    .event_base = evapi_event_base,
    .data_dir = evapi_data_dir,
    .now = api_now,
    /* config */
    .conf_load = stores_conf_load,
    /* storage: the module's own keys */
    .kv_get = kv_get,
    .kv_put = kv_put,
    .kv_del = kv_del,
    .kv_scan = kv_scan,
    .kv_scan_json = kv_scan_json,
    /* files (kernel/fs.c; reply_file through files_http.c) */
    .blob_backend_register = blob_backend_register,
    .store_list = stores_list,
    .store_get = store_get,
    .file_stat = file_stat,
    .folder_list = folder_list,
    .file_open = file_open,
    .file_read = file_read,
    .file_read_fd = file_read_fd,
    .file_close = file_close,
    .file_write_begin = file_write_begin,
    .file_write_data = file_write_data,
    .file_write_commit = file_write_commit,
    .file_write_abort = file_write_abort,
    .folder_create = folder_create,
    .file_move = file_move,
    .file_copy = file_copy,
    .file_delete = file_delete,
    .reply_file = reply_file,
    /* history (kernel/history.c) */
    .trash_detach = history_detach,
    .trash_attach = history_attach,
    .trash_purge = history_purge,
    .trash_list = history_trash_list,
    .version_list = history_versions,
    .version_restore = history_version_restore,
    .version_delete = history_version_delete,
    .chunk_list = history_chunk_list,
    .chunk_verify = history_chunk_verify,
    .chunk_files = history_chunk_files,
    .file_mark_damaged = history_mark_damaged,
    /* stores (kernel/stores.c) */
    .store_create = stores_create,
    .store_ready = stores_ready,
    .store_rename = stores_rename,
    .store_delete_begin = stores_delete_begin,
    .store_delete_step = stores_delete_step,
    .store_list_all = stores_list_all,
    .usage_get = usage_get,
    .store_settings_get = stores_settings_get,
    .store_settings_set = stores_settings_set,
    .store_default_get = stores_default_get,
    .store_default_set = stores_default_set,
    /* hooks (kernel/hook.c) */
    .hook_filter = hook_filter,
    .hook_emit = hook_emit,
    .batch_put = hook_batch_put,
    .batch_del = hook_batch_del,
    /* tasks, timers, blocking work (kernel/task.c, kernel/timer.c, kernel/pool.c) */
    .task_submit = task_submit,
    .task_progress = task_progress,
    .task_result = task_result,
    .task_id = task_id,
    .task_owner = task_owner,
    .run_blocking = pool_run,
    .timer_add = timer_add,
    .timer_cancel = timer_cancel,
    /* HTTP (kernel/http*.c) */
    .req_method = http_req_method,
    .req_path = http_req_path,
    .req_param = http_req_param,
    .req_query = http_req_query,
    .req_header = http_req_header,
    .req_user = http_req_user,
    .req_client_ip = http_req_client_ip,
    .req_json = http_req_json,
    .req_body = req_body,
    .req_alloc = http_req_alloc,
    .reply_json = http_reply_json,
    .reply_error = reply_error,
    .reply_bytes = http_reply_bytes,
    .reply_header = http_reply_header,
    /* users and auth (kernel/auth.c, kernel/throttle.c, kernel/notify.c) */
    .user_lookup = user_lookup,
    .auth_password = auth_password,
    .password_check = auth_password_check,
    .login_wait = auth_login_wait,
    .throttle_get = throttle_get,
    .throttle_wait = throttle_wait,
    .throttle_fail = throttle_fail,
    .throttle_clear = throttle_clear,
    .notify = notify_user,
    /* scripting (kernel/luas.c) */
    .lua_call = luas_call,
    /* logging and errors */
    .log = api_log,
    .err_set = api_err_set,
    .err_ftp_reply = evapi_err_ftp_reply,
    .metric_add = metrics_module_add,
    /* app passwords (kernel/apppass.c), streamed request bodies (kernel/http.c), listing
     * decorators (kernel/listdeco.c), metrics (kernel/metrics.c) */
    .apppass_check = apppass_check,
    .req_body_sink = http_req_body_sink,
    .listing_decorator_set = listdeco_set,
    .module_dir = evapi_module_dir,
    /* --- vault (2.1): secret references and key wrapping (kernel/secret.c) --- */
    .secret_provider_set = secret_provider_set,
    .secret_get = secret_api_get,
    .secrets_changed = secrets_changed,
    .keywrap_provider_set = keywrap_provider_set,
    .key_wrap = key_wrap,
    .key_unwrap = key_unwrap,
    .key_rewrap = key_rewrap,
    .key_datakey = key_datakey,
    .key_rotate = key_rotate,
    /* tags branch (2.1): listing filters (kernel/listdeco.c), repeated query arguments
     * (kernel/http.c), module services (kernel/modsvc.c), Lua rule text (kernel/luas.c) */
    .listing_filter_set = listdeco_filter_set,
    .req_query_all = http_req_query_all,
    .service_set = modsvc_set,
    .service_call = modsvc_call,
    .lua_run = luas_run_string,
    .lua_check = luas_check,
    /* ext (2.1): named blob backends and store placement (kernel/backend.c) */
    .backend_register = backend_register,
    .store_placement_get = migrate_placement_get,
    /* dav (2.1): streamed answers (kernel/http_reply.c) */
    .reply_stream = api_reply_stream,
    /* --- scale (2.1) --- */
    .folder_page = folder_page,
    /* --- migrate (2.1): live migration of a store (kernel/migrate.c) --- */
    .store_migrate = migrate_submit,
    /* --- walk (2.1) --- */
    .folder_walk = folder_walk,
    /* --- queues (2.1) --- */
    .kv_scan_after = kv_scan_after,
    /* --- cluster (2.1): modules' records of a store --- */
    .store_records = store_records,
    .cluster_nodes = api_cluster_nodes,
    .cluster_ask = api_cluster_ask,
    .store_here = api_store_here,
    .forward_store = api_forward_store,
    .password_hash = api_password_hash,
};

const mb_api *api_table(void) { return &table; }
