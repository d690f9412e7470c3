/*
 * modmgr.c — the module manager: load, unload and reload <name>.so modules while the
 * server runs (DESIGN.md "Modules", STYLE.md "Hot unload").
 *
 * One loaded copy of a module is a `modcopy`; its `self` (an mb_module, modref.c) is the
 * handle every registration carries and the module is given.
 * A copy moves LOADING -> ACTIVE -> DRAINING -> COLD:
 *   load    copy <module_dir>/<name>.so to <data_dir>/modcache/<name>-<sha256 prefix>-<n>.so
 *           (a fresh file name per copy, so dlopen can never hand back an old mapping), dlopen,
 *           check the descriptor (ABI major equal, minor not newer — the Varnish rule —, size,
 *           name, dependencies ACTIVE), validate <config_dir>/<name>.yaml, call init, and only
 *           then register its routes, hooks and task types: nothing of a module is reachable
 *           before init returned 0, and init must not expect its own tables to be live.
 *           Any failure undoes everything and leaves the server as it was.
 *   unload  refuse while an ACTIVE module depends on it; remove its registrations (under
 *           the tables' write locks, so no new call enters), ask its running tasks to stop,
 *           mark DRAINING, and poll the busy count with a libevent timer (never a sleep on
 *           the loop). At zero, fini may still refuse (the registrations come back and the
 *           copy is ACTIVE again); otherwise COLD, and dlclose on a later loop turn.
 *   reload  load and init a new copy beside the old, swap every table atomically to it
 *           (http_routes_swap, hook_swap, task_types_swap re-point function pointers too),
 *           then drain the old copy as above with fini(reloading = true).
 *
 * Threads: load/unload/reload run on the loop thread. The admin routes run on HTTP threads:
 * they hand the operation to the loop (main_call) and wait for its end (a `job`). The busy
 * count is atomic: HTTP threads, task workers and the loop enter and leave modules, always
 * while holding the read lock of the table they found the module in (http.c, hook.c,
 * task.c), so once a copy's registrations are removed under the write lock, its count only
 * goes down. `mods_lock` guards the list of copies for readers on other threads (list,
 * health); only the loop thread changes it. The count itself lives in modref.c, a leaf, so
 * the registries count calls without calling back into this file.
 */
#include "kernel.h"
#include "modmgr_int.h"
#include "fs.h"
#include "fileio.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD_LOADING 0
#define DRAIN_TICK_MS 5
#define JOB_WAIT_S 10
#define SHUTDOWN_WAIT_MS 10000

typedef struct job job;
typedef struct modcopy modcopy;

struct modcopy {
    struct modcopy *next;
    mb_module *self; /* the handle and its busy count (modref.c) */
    char *name;
    char *file; /* the modcache copy that is mapped */
    void *dl;
    const mb_module_desc *desc;
    /* The descriptor's tables copied at the kernel's struct sizes (an older module's
     * shorter entries are zero-extended), each ended by a zeroed entry. */
    mb_route *routes;
    mb_hook *hooks;
    mb_task_type *tasks;
    mb_config_key *config_keys;
    json_t *config;
    void *state;
    _Atomic int st;
    bool registered, reloading, inited;
    struct event *drain_ev;
    job *waiter;
};

/* What an administrator asks of a module: travels as this value from the route to the loop. */
typedef enum { MOD_OP_LOAD, MOD_OP_UNLOAD, MOD_OP_RELOAD } mod_op;

/* An operation handed from an HTTP thread to the loop; both sides hold a reference. */
struct job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    mod_op op;
    char name[72];
    int rc;
    mb_err err;
    json_t *entry;
};

static pthread_mutex_t mods_lock = PTHREAD_MUTEX_INITIALIZER;
static modcopy *mods;
static struct event_base *base;
static pthread_t loop_thread;
static bool have_loop;
static unsigned copy_seq;

static void job_unref(job *j);
static void drain_start(modcopy *m);

/* ------------------------------------------------------------- helpers --- */

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static const char *state_name(int st)
{
    switch (st) {
    case MOD_ACTIVE:
        return "active";
    case MOD_DRAINING:
        return "draining";
    case MOD_COLD:
        return "cold";
    default:
        return "loading";
    }
}

static bool enabled_in_config(const char *name)
{
    if (g_cfg && g_cfg->modules_enabled)
        for (char **m = g_cfg->modules_enabled; *m; m++)
            if (!strcmp(*m, name))
                return true;
    return false;
}

/* The copy that answers for `name`: LOADING or ACTIVE. Loop thread (or mods_lock held). */
static modcopy *find_live(const char *name)
{
    for (modcopy *m = mods; m; m = m->next)
        if (!strcmp(m->name, name) && (m->st == MOD_ACTIVE || m->st == MOD_LOADING))
            return m;
    return NULL;
}

/* Copy a descriptor table into kernel-sized, zero-extended entries. Each module entry
 * starts with its own size; a table ends at an entry whose size is 0 or whose first pointer
 * (right after the size) is NULL. */
static void *copy_table(const void *table, size_t kernel_size, const char *what, const char *mod, mb_err *err)
{
    size_t n = 0, stride = 0;
    const char *p = table;
    if (p) {
        stride = *(const size_t *)p;
        if (stride && (stride < sizeof(size_t) + sizeof(void *) || stride > 4096)) {
            err_set(err, MB_EINVAL, "module %s has a malformed %s table (entry size %zu)", mod, what, stride);
            return NULL;
        }
        while (stride && *(const size_t *)(p + n * stride) &&
               *(void *const *)(p + n * stride + sizeof(size_t)) && n < 1024)
            n++;
    }
    char *out = xcalloc(n + 1, kernel_size);
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * kernel_size, p + i * stride, stride < kernel_size ? stride : kernel_size);
    return out;
}

static json_t *entry_of(const modcopy *m)
{
    json_t *deps = json_array();
    if (m->desc->depends)
        for (const char *const *d = m->desc->depends; *d; d++)
            json_array_append_new(deps, json_string(*d));
    char abi[32];
    snprintf(abi, sizeof abi, "%u.%u", m->desc->abi_major, m->desc->abi_minor);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:b}", "name", m->name, "version",
                     m->desc->version ? m->desc->version : "", "state", state_name(m->st), "abi", abi, "depends",
                     deps, "description", m->desc->description ? m->desc->description : "", "enabled",
                     enabled_in_config(m->name));
}

/* -------------------------------------------------------- open a copy --- */

static int sha256_file(const char *path, char hex[65], mb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, MB_EIO, "cannot read %s: %s", path, strerror(errno));
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
    close(fd);
    if (n < 0)
        return err_set(err, MB_EIO, "cannot read %s: %s", path, strerror(errno));
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    hex_encode(h, sizeof h, hex);
    return 0;
}

static int copy_file(const char *from, const char *to, mb_err *err)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return err_set(err, MB_EIO, "cannot read %s: %s", from, strerror(errno));
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
    if (out < 0) {
        close(in);
        return err_set(err, MB_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) {
            rc = err_set(err, MB_EIO, "cannot write %s: %s", tmp, strerror(errno));
            break;
        }
    if (n < 0 && !rc)
        rc = err_set(err, MB_EIO, "cannot read %s: %s", from, strerror(errno));
    close(in);
    if (close(out) && !rc)
        rc = err_set(err, MB_EIO, "cannot write %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, to))
        rc = err_set(err, MB_EIO, "cannot rename %s: %s", tmp, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

static void copy_free(modcopy *m)
{
    if (m->drain_ev)
        event_free(m->drain_ev);
    if (m->dl)
        dlclose(m->dl);
    if (m->file) {
        unlink(m->file); /* only after dlclose: a reused inode could alias the old mapping */
        free(m->file);
    }
    free(m->routes);
    free(m->hooks);
    free(m->tasks);
    free(m->config_keys);
    json_decref(m->config);
    free(m->name);
    modref_free(m->self);
    free(m);
}

/* yaml (may be NULL) with the backends an administrator declared for module `name` in the web
 * page (backend.c: bd/ records) added under "backends": a name the file declares too keeps the
 * file's settings. Returns the document to use (yaml itself, or a new mapping when it was NULL). */
static json_t *with_declared(const char *name, const char *file, json_t *yaml)
{
    json_t *decl = backend_declared(name);
    if (json_object_size(decl)) {
        if (!yaml)
            yaml = json_object();
        json_t *bs = json_object_get(yaml, "backends");
        if (!bs || json_is_null(bs)) {
            bs = json_object();
            json_object_set_new(yaml, "backends", bs);
        }
        const char *k;
        json_t *v;
        json_object_foreach(decl, k, v) {
            if (!json_is_object(bs))
                break; /* the module refuses the file with its own words */
            if (json_object_get(bs, k))
                log_warn("backend '%s' is declared both in %s and in the web page: the file's settings are used", k,
                         file);
            else
                json_object_set(bs, k, v);
        }
    }
    json_decref(decl);
    return yaml;
}

/* <config_dir>/<name>.yaml validated against a module's config keys, defaults filled in (*out is
 * the caller's). A missing or empty file means every default. Backends declared in the web page
 * are added (with_declared). Secret references become values first (secret.c): refs (may be
 * NULL) lists them, *nrefs (may be NULL) counts them. */
static int module_config(const char *name, const mb_config_key *keys, json_t **out, json_t *refs, int *nrefs,
                         mb_err *err)
{
    char yaml_path[4200];
    snprintf(yaml_path, sizeof yaml_path, "%s/%s.yaml", g_cfg->config_dir, name);
    json_t *yaml = NULL, *lines = NULL;
    if (nrefs)
        *nrefs = 0;
    if (access(yaml_path, F_OK) == 0 && cfg_yaml_load(yaml_path, &yaml, &lines, err))
        return err->code ? err->code : MB_EINVAL;
    if (yaml && json_is_null(yaml)) { /* an empty file: all defaults */
        json_decref(yaml);
        yaml = NULL;
    }
    if (yaml && !json_is_object(yaml)) {
        json_decref(yaml);
        json_decref(lines);
        return err_set(err, MB_EINVAL, "%s: the module configuration must be a mapping of keys", yaml_path);
    }
    yaml = with_declared(name, yaml_path, yaml);
    int rc = secret_resolve_tree(name, yaml_path, yaml, lines, refs, nrefs, err);
    if (!rc)
        rc = cfg_module(yaml_path, yaml, lines, keys, out, err);
    json_decref(yaml);
    json_decref(lines);
    return rc;
}

/* Start order: a module whose file holds a reference to a scheme that an enabled module of
 * that name provides (vault:) loads after it. Stable; names is NULL-terminated. */
void modmgr_order(char **names)
{
    size_t n = 0;
    while (names && names[n])
        n++;
    bool *late = xcalloc(n + 1, sizeof(bool));
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.yaml", g_cfg->config_dir, names[i]);
        json_t *doc = NULL;
        mb_err e = {0};
        if (cfg_yaml_load(path, &doc, NULL, &e))
            doc = NULL;
        if (doc && !json_is_object(doc)) {
            json_decref(doc);
            continue;
        }
        doc = with_declared(names[i], path, doc);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        for (size_t k = 0; k < n && text; k++) {
            char pat[80];
            snprintf(pat, sizeof pat, "\"%s:", names[k]); /* a string value starting "<module>:" */
            if (k != i && strstr(text, pat) && secret_is_ref(strstr(text, pat) + 1))
                late[i] = true;
        }
        free(text);
        json_decref(doc);
    }
    char **sorted = xcalloc(n + 1, sizeof(char *));
    size_t j = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (late[i] == (pass == 1))
                sorted[j++] = names[i];
    memcpy(names, sorted, n * sizeof(char *));
    free(sorted);
    free(late);
}

/* Open, check and configure a copy of `name` (not registered, not initialised). `self`
 * is the copy being replaced on reload (it does not count as a missing dependency). */
static modcopy *copy_open(const char *name, mb_err *err)
{
    char src[4200], dst[4200], hex[65];
    snprintf(src, sizeof src, "%s/%s.so", g_cfg->module_dir, name);
    struct stat sb;
    if (stat(src, &sb) || !S_ISREG(sb.st_mode)) {
        err_set(err, MB_ENOENT, "there is no module %s (no %s.so in %s)", name, name, g_cfg->module_dir);
        return NULL;
    }
    if (sha256_file(src, hex, err))
        return NULL;
    snprintf(dst, sizeof dst, "%s/modcache", g_cfg->data_dir);
    if (mkdir_p(dst, 0700)) {
        err_set(err, MB_EIO, "cannot create %s", dst);
        return NULL;
    }
    /* Content-addressed, plus a per-process counter: two live copies of the same bytes
     * (a reload of an unchanged file) still get two mappings, so their static data is not
     * shared and dlclose of the old one really unmaps it. */
    snprintf(dst, sizeof dst, "%s/modcache/%s-%.16s-%u.so", g_cfg->data_dir, name, hex, ++copy_seq);
    if (copy_file(src, dst, err))
        return NULL;
    modcopy *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name);
    m->self = modref_new(name);
    m->file = xstrdup(dst);
    m->st = MOD_LOADING;
    m->dl = dlopen(dst, RTLD_NOW | RTLD_LOCAL);
    if (!m->dl) {
        const char *why = dlerror();
        err_set(err, MB_EINVAL, "module %s cannot be opened: %s", name, why ? why : "unknown reason");
        goto fail;
    }
    m->desc = dlsym(m->dl, MB_MODULE_SYMBOL);
    if (!m->desc) {
        err_set(err, MB_EINVAL, "module %s exports no %s descriptor", name, MB_MODULE_SYMBOL);
        goto fail;
    }
    const mb_module_desc *d = m->desc;
    if (d->size < offsetof(mb_module_desc, abi_minor) + sizeof d->abi_minor) {
        err_set(err, MB_EINVAL, "module %s has a malformed descriptor (size %zu)", name, d->size);
        goto fail;
    }
    if (d->abi_major != MB_ABI_MAJOR || d->abi_minor > MB_ABI_MINOR) {
        err_set(err, MB_EINVAL, "module %s was built for ABI %u.%u, this kernel speaks %d.%d", name, d->abi_major,
                d->abi_minor, MB_ABI_MAJOR, MB_ABI_MINOR);
        goto fail;
    }
    /* Every ABI 1.x descriptor has at least the fields up to fini. */
    if (d->size < offsetof(mb_module_desc, fini) + sizeof d->fini || d->size > 65536) {
        err_set(err, MB_EINVAL, "module %s has a malformed descriptor (size %zu)", name, d->size);
        goto fail;
    }
    if (!d->name || strcmp(d->name, name)) {
        err_set(err, MB_EINVAL, "module file %s.so calls itself '%s'; the names must match", name,
                d->name ? d->name : "(none)");
        goto fail;
    }
    if (!d->init) {
        err_set(err, MB_EINVAL, "module %s has no init function", name);
        goto fail;
    }
    if (d->depends)
        for (const char *const *dep = d->depends; *dep; dep++) {
            modcopy *o = find_live(*dep);
            if (!o || o->st != MOD_ACTIVE) {
                err_set(err, MB_ECONFLICT, "module %s needs module %s, which is not loaded", name, *dep);
                goto fail;
            }
        }
    if (!(m->routes = copy_table(d->routes, sizeof(mb_route), "route", name, err)) ||
        !(m->hooks = copy_table(d->hooks, sizeof(mb_hook), "hook", name, err)) ||
        !(m->tasks = copy_table(d->tasks, sizeof(mb_task_type), "task type", name, err)) ||
        !(m->config_keys = copy_table(d->config, sizeof(mb_config_key), "config", name, err)))
        goto fail;
    for (mb_route *r = m->routes; r->method; r++)
        if (!r->pattern || !r->fn || (strncmp(r->pattern, "/api/", 5) && strncmp(r->pattern, "/dav/", 5) &&
                                      (strcmp(r->pattern, "/") || strcmp(r->method, "OPTIONS")))) {
            /* OPTIONS / is WebDAV's: Windows' mini-redirector probes the root before mapping */
            err_set(err, MB_EINVAL, "module %s: route %s %s must have a handler and a pattern under /api/ or /dav/",
                    name,
                    r->method, r->pattern ? r->pattern : "(none)");
            goto fail;
        }
    if (module_config(name, m->config_keys, &m->config, NULL, NULL, err))
        goto fail;
    return m;
fail:
    copy_free(m);
    return NULL;
}

static int copy_init(modcopy *m, mb_err *err)
{
    mb_err e = {0};
    int rc = m->desc->init(m->self, api_table(), m->config, &m->state, &e);
    if (rc) {
        blob_backend_unregister(m->self); /* backends init registered before it failed */
        /* A module that cannot start is a conflict with how things are (409), or bad
         * configuration (400) if it says so; never a 500, the kernel is fine. */
        int code = (e.code ? e.code : rc) == MB_EINVAL ? MB_EINVAL : MB_ECONFLICT;
        return err_set(err, code, "module %s failed to start: %s", m->name,
                       e.msg[0] ? e.msg : err_title(e.code ? e.code : rc));
    }
    m->inited = true;
    return 0;
}

static void copy_fini(modcopy *m, bool reloading)
{
    if (!m->inited || !m->desc->fini)
        return;
    mb_err e = {0};
    if (m->desc->fini(m->state, reloading, &e))
        log_msg(LOG_WARN, m->name, "fini refused during %s (ignored): %s", reloading ? "reload" : "a forced stop",
                e.msg);
    m->inited = false;
    /* A blob backend the module registered in init lives until its fini: only then can no
     * call of this copy be reading through it. A newer copy's registration is left alone. */
    blob_backend_unregister(m->self);
    secret_remove_owner(m->self); /* the same for secret and key-wrap providers */
}

static void unregister_all(modcopy *m)
{
    timer_remove_owner(m->self); /* first: no timer starts a run while the rest goes */
    http_routes_remove(m->self);
    hook_remove(m->self);
    task_types_remove(m->self);
    secret_remove_owner(m->self); /* its secret and key-wrap providers: no new call once draining */
    backend_close_owner(m->self, true); /* its blob backends stay until fini, but no call starts */
    m->registered = false;
}

static int register_all(modcopy *m, mb_err *err)
{
    /* Each table in one write-locked step (a swap from nothing): added one by one, a request
     * between a module's POST and GET of one path was answered 405 (test_reload_all, CI). */
    int rc = http_routes_swap(m->self, m->self, m->routes, m->state, err);
    if (!rc)
        rc = hook_swap(m->self, m->self, m->hooks, m->state, err);
    if (!rc)
        rc = task_types_swap(m->self, m->self, m->tasks, m->state, err);
    if (rc) {
        unregister_all(m);
        char why[256];
        snprintf(why, sizeof why, "%s", err->msg);
        return err_set(err, rc, "module %s cannot register: %s", m->name, why);
    }
    m->registered = true;
    return 0;
}

static void list_add(modcopy *m)
{
    pthread_mutex_lock(&mods_lock);
    m->next = mods;
    mods = m;
    pthread_mutex_unlock(&mods_lock);
}

static void list_del(modcopy *m)
{
    pthread_mutex_lock(&mods_lock);
    for (modcopy **pp = &mods; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    pthread_mutex_unlock(&mods_lock);
}

static void set_state(modcopy *m, int st)
{
    pthread_mutex_lock(&mods_lock); /* readers of the list see one state or the other */
    m->st = st;
    pthread_mutex_unlock(&mods_lock);
}

static void emit(const char *event, const modcopy *m, bool reloaded)
{
    mb_err e = {0};
    json_t *p = json_pack("{s:s, s:s}", "name", m->name, "version", m->desc->version ? m->desc->version : "");
    if (reloaded)
        json_object_set_new(p, "reloaded", json_true());
    if (hook_emit(event, p, &e))
        log_warn("%s", e.msg);
}

/* ------------------------------------------------- the loop-thread side --- */

static int do_load(const char *name, json_t **entry, mb_err *err)
{
    if (!valid_name(name))
        return err_set(err, MB_EINVAL, "'%.64s' is not a module name (a-z, 0-9 and _)", name);
    if (find_live(name))
        return err_set(err, MB_EEXIST, "module %s is already loaded", name);
    modcopy *m = copy_open(name, err);
    if (!m)
        return err->code;
    list_add(m); /* visible as "loading" from here on, and its name serves kv and logs */
    int rc = copy_init(m, err);
    if (!rc && (rc = register_all(m, err)))
        copy_fini(m, false);
    if (rc) {
        log_msg(LOG_ERROR, name, "not loaded: %s", err->msg);
        list_del(m);
        copy_free(m);
        return rc;
    }
    set_state(m, MOD_ACTIVE);
    log_msg(LOG_INFO, name, "loaded version %s (ABI %u.%u) from %s/%s.so", m->desc->version ? m->desc->version : "?",
            m->desc->abi_major, m->desc->abi_minor, g_cfg->module_dir, name);
    emit("module.loaded", m, false);
    if (entry)
        *entry = entry_of(m);
    return 0;
}

static void job_finish(job *j, int rc, const mb_err *err, json_t *entry)
{
    pthread_mutex_lock(&j->mu);
    j->rc = rc;
    if (err)
        j->err = *err;
    j->entry = entry;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
}

static void close_later(void *arg)
{
    modcopy *m = arg;
    list_del(m);
    log_msg(LOG_DEBUG, m->name, "closed %s", m->file);
    copy_free(m);
}

/* The drain timer: wait (on the loop, without blocking) until no call is in the copy. */
static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    modcopy *m = arg;
    if (modref_busy(m->self) > 0) {
        struct timeval tv = {0, DRAIN_TICK_MS * 1000};
        evtimer_add(m->drain_ev, &tv);
        return;
    }
    job *w = m->waiter;
    m->waiter = NULL;
    mb_err e = {0};
    if (!m->reloading && m->desc->fini && m->inited) {
        int rc = m->desc->fini(m->state, false, &e);
        if (rc) {
            /* The module said no: it goes back to serving, with its reason. */
            mb_err re = {0};
            if (!e.code)
                err_set(&e, MB_ECONFLICT, "no reason given");
            if (register_all(m, &re))
                log_msg(LOG_ERROR, m->name, "refused unload, but could not re-register: %s", re.msg);
            backend_close_owner(m->self, false);
            set_state(m, MOD_ACTIVE);
            mb_err out;
            err_set(&out, MB_ECONFLICT, "module %s refused to unload: %s", m->name, e.msg);
            log_msg(LOG_WARN, m->name, "%s", out.msg);
            if (w)
                job_finish(w, out.code, &out, NULL);
            return;
        }
        m->inited = false;
        blob_backend_unregister(m->self);
        secret_remove_owner(m->self);
    } else
        copy_fini(m, m->reloading);
    set_state(m, MOD_COLD);
    log_msg(LOG_INFO, m->name, "%s copy drained and stopped", m->reloading ? "old" : "the");
    if (!m->reloading)
        emit("module.unloaded", m, false);
    if (w)
        job_finish(w, 0, NULL, entry_of(m));
    main_call(close_later, m); /* dlclose on a later turn: nothing of it is on the stack */
}

static void drain_start(modcopy *m)
{
    set_state(m, MOD_DRAINING);
    if (!m->drain_ev)
        m->drain_ev = evtimer_new(base, drain_tick, m);
    struct timeval tv = {0, 0};
    evtimer_add(m->drain_ev, &tv);
}

static int do_unload(const char *name, job *j, mb_err *err)
{
    modcopy *m = valid_name(name) ? find_live(name) : NULL;
    if (!m)
        return err_set(err, MB_ENOENT, "module %.64s is not loaded", name);
    for (modcopy *o = mods; o; o = o->next)
        if (o != m && (o->st == MOD_ACTIVE || o->st == MOD_LOADING) && o->desc->depends)
            for (const char *const *d = o->desc->depends; *d; d++)
                if (!strcmp(*d, name))
                    return err_set(err, MB_ECONFLICT, "module %s is needed by module %s; unload %s first", name,
                                   o->name, o->name);
    unregister_all(m);
    task_preempt(m->self); /* its running tasks go back to the queue and wait for it */
    m->reloading = false;
    m->waiter = j;
    log_msg(LOG_INFO, name, "unloading: no new calls; draining %ld in flight", (long)modref_busy(m->self));
    drain_start(m);
    return 0;
}

static int do_reload(const char *name, job *j, mb_err *err)
{
    modcopy *old = valid_name(name) ? find_live(name) : NULL;
    if (!old || old->st != MOD_ACTIVE)
        return err_set(err, MB_ENOENT, "module %.64s is not loaded", name);
    modcopy *m = copy_open(name, err);
    if (!m)
        return err->code;
    list_add(m);
    int rc = copy_init(m, err);
    if (rc) {
        log_msg(LOG_ERROR, name, "reload failed, the running copy stays: %s", err->msg);
        list_del(m);
        copy_free(m);
        return rc;
    }
    set_state(m, MOD_ACTIVE);
    set_state(old, MOD_DRAINING); /* find_live now finds the new copy */
    if ((rc = http_routes_swap(old->self, m->self, m->routes, m->state, err)) ||
        (rc = hook_swap(old->self, m->self, m->hooks, m->state, err)) ||
        (rc = task_types_swap(old->self, m->self, m->tasks, m->state, err))) {
        mb_err ig = {0};
        /* Put everything back on the old copy (these cannot fail: its own tables). */
        http_routes_swap(m->self, old->self, old->routes, old->state, &ig);
        hook_swap(m->self, old->self, old->hooks, old->state, &ig);
        task_types_swap(m->self, old->self, old->tasks, old->state, &ig);
        set_state(old, MOD_ACTIVE);
        log_msg(LOG_ERROR, name, "reload failed, the running copy stays: %s", err->msg);
        /* The new copy may have been entered between a swap and its undo: drain it like
         * an old copy (its fini is told "reloading" and cannot refuse). */
        m->reloading = true;
        timer_remove_owner(m->self);
        drain_start(m);
        return rc;
    }
    m->registered = true;
    old->registered = false;
    old->reloading = true;
    timer_remove_owner(old->self); /* the new copy's init made its own */
    backend_close_owner(old->self, true); /* a name the new copy did not take: no call starts */
    log_msg(LOG_INFO, name, "reloaded: version %s now serves; draining the old copy (%s)",
            m->desc->version ? m->desc->version : "?", old->desc->version ? old->desc->version : "?");
    emit("module.loaded", m, true);
    drain_start(old);
    /* The caller is answered now: the new copy serves. The old one drains on its own (a
     * long task may keep it a while) and shows as "old_copies_draining" in the list. */
    if (j)
        job_finish(j, 0, NULL, entry_of(m));
    return 0;
}

/* ---------------------------------------------------- new settings --- */

static int (*reconfigure_of(const modcopy *m))(void *, const json_t *, mb_err *)
{
    const mb_module_desc *d = m->desc;
    return d->size >= offsetof(mb_module_desc, reconfigure) + sizeof d->reconfigure ? d->reconfigure : NULL;
}

static json_t *outcome(const char *name, const char *action, const char *detail)
{
    return json_pack("{s:s,s:s,s:s}", "module", name, "action", action, "detail", detail ? detail : "");
}

/* Re-read and apply; refs_only: only modules whose file holds secret references (a refresh);
 * only: that module alone (NULL: every active one). */
static int reconfigure_where(json_t *report, bool refs_only, const char *only)
{
    char names[64][72];
    int n = 0, refused = 0;
    for (modcopy *m = mods; m && n < 64; m = m->next)
        if (m->st == MOD_ACTIVE && (!only || !strcmp(m->name, only)))
            snprintf(names[n++], sizeof names[0], "%s", m->name);
    for (int i = 0; i < n; i++) {
        modcopy *m = find_live(names[i]);
        if (!m || m->st != MOD_ACTIVE)
            continue;
        mb_err e = {0};
        json_t *conf = NULL;
        int nrefs = 0;
        if (module_config(m->name, m->config_keys, &conf, NULL, &nrefs, &e)) {
            log_msg(LOG_ERROR, m->name, "new settings refused, the running ones stay: %s", e.msg);
            json_array_append_new(report, outcome(m->name, "refused", e.msg));
            refused++;
            continue;
        }
        if (refs_only && !nrefs) {
            json_decref(conf);
            continue;
        }
        if (json_equal(conf, m->config)) {
            json_decref(conf);
            json_array_append_new(report, outcome(m->name, "unchanged", NULL));
            continue;
        }
        int (*fn)(void *, const json_t *, mb_err *) = reconfigure_of(m);
        int rc;
        if (fn) {
            modref_enter(m->self);
            rc = fn(m->state, conf, &e);
            modref_leave(m->self);
            if (!rc) {
                json_decref(m->config);
                m->config = conf;
                conf = NULL;
            }
        } else
            rc = do_reload(m->name, NULL, &e); /* reads the new file; requests in flight finish on the old copy */
        json_decref(conf);
        if (rc) {
            log_msg(LOG_ERROR, names[i], "new settings refused, the running ones stay: %s", e.msg);
            json_array_append_new(report, outcome(names[i], "refused", e.msg));
            refused++;
        } else {
            log_msg(LOG_INFO, names[i], "new settings applied (%s)", fn ? "reconfigured" : "reloaded");
            json_array_append_new(report, outcome(names[i], fn ? "reconfigured" : "reloaded", NULL));
        }
    }
    return refused;
}


/* A reload: every module's new settings; in cluster mode each module whose settings changed here
 * has its file's text recorded for the other nodes ("Module settings on every node"). */
int modmgr_reconfigure(json_t *report)
{
    size_t from = json_array_size(report);
    int refused = reconfigure_where(report, false, NULL);
    for (size_t i = from; i < json_array_size(report); i++) {
        const json_t *o = json_array_get(report, i);
        if (!strcmp(jstr(o, "action"), "reconfigured") || !strcmp(jstr(o, "action"), "reloaded"))
            modmgr_cluster_settings_put(jstr(o, "module"));
    }
    return refused;
}

int modmgr_secrets_apply(json_t *report) { return reconfigure_where(report, true, NULL); }

int modmgr_check_config(json_t *report)
{
    int bad = 0;
    pthread_mutex_lock(&mods_lock);
    for (modcopy *m = mods; m; m = m->next) {
        if (m->st != MOD_ACTIVE)
            continue;
        mb_err e = {0};
        json_t *conf = NULL, *refs = json_array(), *o;
        if (module_config(m->name, m->config_keys, &conf, refs, NULL, &e)) {
            o = outcome(m->name, "refused", e.msg);
            bad++;
        } else
            o = outcome(m->name, json_equal(conf, m->config) ? "unchanged" : "changed", NULL);
        json_object_set_new(o, "secrets", refs); /* names only: {key, ref, resolves[, error]} */
        json_array_append_new(report, o);
        json_decref(conf);
    }
    pthread_mutex_unlock(&mods_lock);
    return bad;
}

/* For modmgr_cluster.c (modmgr_int.h): on the loop thread. */
bool modmgr_name_ok(const char *name) { return valid_name(name); }
bool modmgr_live(const char *name) { return find_live(name) != NULL; }
int modmgr_switch(const char *name, bool on, mb_err *err) { return on ? do_load(name, NULL, err) : do_unload(name, NULL, err); }
void modmgr_reconfigure_one(const char *name)
{
    json_t *report = json_array();
    reconfigure_where(report, false, name);
    json_decref(report);
}

/* ---------------------------------------------------- public entry points --- */

static bool on_loop(void) { return !have_loop || pthread_equal(pthread_self(), loop_thread); }

static void job_unref(job *j)
{
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) {
        json_decref(j->entry);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
    }
}

static void job_run(void *arg)
{
    job *j = arg;
    mb_err e = {0};
    json_t *entry = NULL;
    int rc;
    switch (j->op) {
    case MOD_OP_LOAD:
        rc = do_load(j->name, &entry, &e);
        job_finish(j, rc, &e, entry);
        return;
    case MOD_OP_UNLOAD:
        rc = do_unload(j->name, j, &e);
        break;
    case MOD_OP_RELOAD:
    default:
        rc = do_reload(j->name, j, &e);
        break;
    }
    if (rc) /* otherwise the drain finishes the job */
        job_finish(j, rc, &e, NULL);
}

/* Run op on the loop and wait up to JOB_WAIT_S. Returns 0 with *entry, MB_EBUSY when the
 * drain is still going on (*entry then shows "draining"), or the operation's error. */
static int job_call(mod_op op, const char *name, json_t **entry, mb_err *err)
{
    job *j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->refs = 2;
    j->op = op;
    snprintf(j->name, sizeof j->name, "%.64s", name);
    main_call(job_run, j);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += JOB_WAIT_S;
    pthread_mutex_lock(&j->mu);
    while (!j->done)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT)
            break;
    int rc;
    if (j->done) {
        rc = j->rc;
        if (rc)
            *err = j->err;
        else if (entry) {
            *entry = j->entry;
            j->entry = NULL;
        }
    } else
        rc = err_set(err, MB_EBUSY, "module %s is still draining calls in flight", name);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    return rc;
}

int modmgr_load(const char *name, mb_err *err)
{
    if (on_loop())
        return do_load(name, NULL, err);
    return job_call(MOD_OP_LOAD, name, NULL, err);
}

int modmgr_unload(const char *name, mb_err *err)
{
    if (on_loop())
        return do_unload(name, NULL, err); /* completes on later loop turns */
    int rc = job_call(MOD_OP_UNLOAD, name, NULL, err);
    return rc == MB_EBUSY ? 0 : rc;
}

int modmgr_reload(const char *name, mb_err *err)
{
    if (on_loop())
        return do_reload(name, NULL, err);
    int rc = job_call(MOD_OP_RELOAD, name, NULL, err);
    return rc == MB_EBUSY ? 0 : rc;
}

bool modmgr_takes_key(const char *name, const char *key)
{
    pthread_mutex_lock(&mods_lock);
    modcopy *m = find_live(name);
    bool yes = false;
    for (const mb_config_key *k = m && m->st == MOD_ACTIVE ? m->config_keys : NULL; k && k->name; k++)
        yes = yes || !strcmp(k->name, key);
    pthread_mutex_unlock(&mods_lock);
    return yes;
}

json_t *modmgr_list(void)
{
    json_t *arr = json_array();
    json_t *seen = json_object();
    pthread_mutex_lock(&mods_lock);
    /* Newest copy first in the list: the first one seen per name is the one that answers,
     * unless an older copy is still live (never both live). */
    for (int pass = 0; pass < 2; pass++)
        for (modcopy *m = mods; m; m = m->next) {
            bool live = m->st == MOD_ACTIVE || m->st == MOD_LOADING;
            if ((pass == 0) != live || json_object_get(seen, m->name))
                continue;
            json_object_set_new(seen, m->name, json_true());
            json_t *e = entry_of(m);
            int old = 0;
            for (modcopy *o = mods; o; o = o->next)
                if (o != m && !strcmp(o->name, m->name) && o->st == MOD_DRAINING)
                    old++;
            if (old && live)
                json_object_set_new(e, "old_copies_draining", json_integer(old));
            json_array_append_new(arr, e);
        }
    pthread_mutex_unlock(&mods_lock);
    DIR *d = g_cfg ? opendir(g_cfg->module_dir) : NULL;
    if (d) {
        struct dirent *de;
        json_t *avail = json_array();
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            if (n < 4 || strcmp(de->d_name + n - 3, ".so"))
                continue;
            char name[80];
            if (n - 3 >= sizeof name)
                continue;
            memcpy(name, de->d_name, n - 3);
            name[n - 3] = 0;
            if (!valid_name(name) || json_object_get(seen, name))
                continue;
            json_array_append_new(avail, json_pack("{s:s, s:s, s:b}", "name", name, "state", "available", "enabled",
                                                   enabled_in_config(name)));
        }
        closedir(d);
        /* readdir order is arbitrary: sort by name so listings are stable. */
        size_t na = json_array_size(avail);
        for (size_t i = 1; i < na; i++)
            for (size_t k = i; k > 0; k--) {
                json_t *a = json_array_get(avail, k - 1), *b = json_array_get(avail, k);
                if (strcmp(json_string_value(json_object_get(a, "name")),
                           json_string_value(json_object_get(b, "name"))) <= 0)
                    break;
                json_incref(a);
                json_array_set(avail, k - 1, b);
                json_array_set_new(avail, k, a);
            }
        json_array_extend(arr, avail);
        json_decref(avail);
    }
    json_decref(seen);
    return arr;
}

/* ------------------------------------------------------------ admin API --- */

/* GET /api/v1/admin/modules */
static int h_list(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    return http_reply_json(req, 200, modmgr_list());
}

/* POST /api/v1/admin/modules/{name}/{load|unload|reload}: 200 with the module's entry once
 * the operation is complete (load: ACTIVE; unload: COLD, or 409 if fini refused; reload: the
 * new copy serves, the old one drains in the background). An unload whose drain is still
 * going on after JOB_WAIT_S answers 202 with the entry showing "draining". */
static int h_action(mb_req *req, mod_op op, mb_err *err)
{
    const char *name = http_req_param(req, "name");
    if (!name || !valid_name(name))
        return err_set(err, MB_ENOENT, "there is no module '%.64s'", name ? name : "");
    json_t *entry = NULL;
    int rc = job_call(op, name, &entry, err);
    if ((rc == 0 || rc == MB_EBUSY) && op != MOD_OP_RELOAD)
        modmgr_cluster_state_put(name, op == MOD_OP_LOAD);
    if (rc == MB_EBUSY) {
        json_t *all = modmgr_list(), *v;
        size_t i;
        json_array_foreach(all, i, v) if (!strcmp(json_string_value(json_object_get(v, "name")), name))
        {
            entry = json_incref(v);
            break;
        }
        json_decref(all);
        return http_reply_json(req, 202, entry ? entry : json_pack("{s:s, s:s}", "name", name, "state", "draining"));
    }
    if (rc)
        return rc;
    return http_reply_json(req, 200, entry);
}

static int h_load(mb_req *req, void *st, mb_err *err) { return (void)st, h_action(req, MOD_OP_LOAD, err); }
static int h_unload(mb_req *req, void *st, mb_err *err) { return (void)st, h_action(req, MOD_OP_UNLOAD, err); }
static int h_reload(mb_req *req, void *st, mb_err *err) { return (void)st, h_action(req, MOD_OP_RELOAD, err); }

/* ------------------------------------------------------------ start, stop --- */

/* Copies left in modcache by a previous process are mapped by nobody now. */
static void clean_cache(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/modcache", g_cfg->data_dir);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            char p[4500];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    closedir(d);
}

int modmgr_init(struct event_base *b, mb_err *err)
{
    base = b;
    loop_thread = pthread_self();
    have_loop = true;
    clean_cache();
    modmgr_cluster_init();
    int rc;
    if ((rc = http_route_add(NULL, "GET", "/api/v1/admin/modules", MB_ROLE_ADMIN, h_list, NULL, err)) ||
        (rc = http_route_add(NULL, "POST", "/api/v1/admin/modules/{name}/load", MB_ROLE_ADMIN, h_load, NULL, err)) ||
        (rc = http_route_add(NULL, "POST", "/api/v1/admin/modules/{name}/unload", MB_ROLE_ADMIN, h_unload, NULL,
                             err)) ||
        (rc = http_route_add(NULL, "POST", "/api/v1/admin/modules/{name}/reload", MB_ROLE_ADMIN, h_reload, NULL,
                             err)))
        return rc;
    return 0;
}

/* Shutdown: HTTP is stopped; stop the task workers, then close modules so that none is
 * closed while a module depending on it is still open. Off the loop: waits may block. */
void modmgr_fini(void)
{
    modmgr_cluster_stop();
    task_stop();
    loop_drain(); /* close_later calls already queued */
    for (;;) {
        modcopy *pick = NULL;
        for (modcopy *m = mods; m; m = m->next) {
            bool needed = false;
            for (modcopy *o = mods; o && !needed; o = o->next)
                if (o != m && o->st != MOD_COLD && o->desc->depends)
                    for (const char *const *d = o->desc->depends; *d; d++)
                        if (!strcmp(*d, m->name) && strcmp(o->name, m->name))
                            needed = true;
            if (!needed || m->st == MOD_COLD) {
                pick = m;
                break;
            }
        }
        if (!pick)
            pick = mods; /* a dependency cycle cannot be loaded, but never loop forever */
        if (!pick)
            break;
        if (pick->registered)
            unregister_all(pick);
        /* A call in flight may finish through the loop (a worker job's completion is queued
         * with loop_call), so run what is queued while waiting. */
        for (int i = 0; modref_busy(pick->self) > 0 && i < SHUTDOWN_WAIT_MS; i++) {
            loop_drain();
            usleep(1000);
        }
        if (modref_busy(pick->self) > 0) {
            log_msg(LOG_ERROR, pick->name, "calls still in flight at shutdown; left mapped");
            list_del(pick);
            continue; /* leak it rather than unmap code that runs */
        }
        if (pick->waiter) {
            mb_err e;
            err_set(&e, MB_EBUSY, "the server is stopping");
            job_finish(pick->waiter, e.code, &e, NULL);
            pick->waiter = NULL;
        }
        copy_fini(pick, pick->reloading);
        /* The loop has stopped: run once more so what the module's fini handed to libevent
         * (bufferevent finalizers, deferred callbacks) runs while its code is still mapped. */
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (pick->st != MOD_COLD)
            log_msg(LOG_INFO, pick->name, "stopped");
        list_del(pick);
        copy_free(pick);
    }
}
