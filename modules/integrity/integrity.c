/*
 * modules/integrity — the background scrub (issue 5).
 *
 * Chunks are named by their SHA-256 and the kernel verifies each one it reads, so corrupted
 * bytes are never served. This module looks before a user does: a scrub walks every chunk
 * some version references (api->chunk_list, in hash order), re-reads and re-hashes it
 * (api->chunk_verify) at most rate_mb_s MB/s, and for a mismatch or a missing chunk:
 *   - finds the file versions that hold it (api->chunk_files) and marks each damaged
 *     (api->file_mark_damaged): every door's open of that version then fails with a clear
 *     MB_EINTEGRITY problem, even for chunks past the first;
 *   - keeps a finding (kv "finding/<sha256>"), raises integrity.mismatch (event), and
 *     notifies each affected store's owner and whoever started the scrub.
 * With one local chunk store there is no second copy to serve instead; a replicating blob
 * backend would be where a healthy copy comes from.
 *
 * Resuming: the last chunk verified is kept in kv "cursor". A scrub stopped by a restart goes
 * back to the kernel's persistent queue and, when it runs again, continues after the cursor.
 *
 *   config   rate_mb_s (20), interval_hours (168; 0 = only on request)
 *   routes   POST /api/v1/admin/integrity/scrub -> 202 {"task"}
 *            GET  /api/v1/admin/integrity       -> {"findings":[...], "scrub":{...}}
 *   tasks    integrity.scrub
 *
 * Threads: handlers on HTTP workers, the runner and the timer (api->timer_add, every
 * interval_hours; the kernel cancels it on unload and reload) on the pool. `running` keeps
 * two scrubs from sharing the cursor.
 */
#include "mbyte.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64

typedef struct integ {
    mb_module *self;
    const mb_api *api;
    int64_t rate_mb_s, interval_hours;
    atomic_bool running;
} integ;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *kv_json(integ *g, const char *key)
{
    char *v = NULL;
    size_t n = 0;
    mb_err e = {0};
    if (g->api->kv_get(g->self, key, &v, &n, &e))
        return NULL;
    json_t *j = json_loadb(v, n, 0, NULL);
    free(v);
    return j;
}

static void kv_put_json(integ *g, const char *key, const json_t *j, bool sync)
{
    char *s = json_dumps(j, JSON_COMPACT);
    mb_err e = {0};
    if (s && g->api->kv_put(g->self, key, s, strlen(s), sync, &e))
        g->api->log(g->self, MB_LOG_WARN, "could not save %s: %s", key, e.msg);
    free(s);
}

/* ------------------------------------------------------------------ routes --- */

/* POST /api/v1/admin/integrity/scrub -> 202 {"task": id} */
static int h_scrub(mb_req *req, void *state, mb_err *err)
{
    integ *g = state;
    uint64_t id;
    int rc = g->api->task_submit("integrity.scrub", g->api->req_user(req)->id, json_object(), &id, err);
    if (rc)
        return rc;
    return g->api->reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)id));
}

static int collect_finding(const char *key, json_t *j, void *ud)
{
    (void)key;
    json_array_append(ud, j);
    return 0;
}

/* GET /api/v1/admin/integrity */
static int h_findings(mb_req *req, void *state, mb_err *err)
{
    integ *g = state;
    json_t *f = json_array();
    g->api->kv_scan_json(g->self, "finding/", collect_finding, f, err);
    json_t *s = kv_json(g, "scrub");
    if (!s)
        s = json_object();
    json_object_set_new(s, "running", json_boolean(atomic_load(&g->running)));
    json_object_set_new(s, "rate_mb_s", json_integer(g->rate_mb_s));
    json_t *cur = kv_json(g, "cursor");
    json_object_set_new(s, "resume_after", cur ? json_incref(json_object_get(cur, "after")) : json_null());
    json_decref(cur);
    return g->api->reply_json(req, 200, json_pack("{s:o, s:o}", "findings", f, "scrub", s));
}

/* ------------------------------------------------------------------- tasks --- */

typedef struct {
    char hash[BATCH][65];
    uint64_t size[BATCH];
    int n;
    uint64_t total;
} batch;

static int batch_cb(const char *hash, uint64_t size, void *ud)
{
    batch *b = ud;
    snprintf(b->hash[b->n], 65, "%s", hash);
    b->size[b->n++] = size;
    return b->n == BATCH;
}

static int count_cb(const char *hash, uint64_t size, void *ud)
{
    (void)hash, (void)size;
    (*(uint64_t *)ud)++;
    return 0;
}

/* A damaged chunk: mark what holds it, keep the finding, tell people. */
static void found(integ *g, const char *hash, int code, const char *why, uint64_t starter)
{
    json_t *files = NULL;
    mb_err e = {0};
    if (g->api->chunk_files(hash, &files, &e))
        files = json_array();
    const char *kind = code == MB_ENOENT ? "missing" : "corrupt";
    char reason[160];
    snprintf(reason, sizeof reason, "chunk %.12s… is %s", hash, code == MB_ENOENT ? "missing" : "corrupted");
    size_t i;
    json_t *f;
    json_t *owners = json_object();
    json_array_foreach(files, i, f) {
        g->api->file_mark_damaged((uint64_t)json_integer_value(json_object_get(f, "store")),
                                  (uint64_t)json_integer_value(json_object_get(f, "file_id")),
                                  (uint64_t)json_integer_value(json_object_get(f, "version")), reason, true, &e);
        char o[24];
        snprintf(o, sizeof o, "%lld", (long long)json_integer_value(json_object_get(f, "owner")));
        if (!json_object_get(owners, o))
            json_object_set(owners, o, f);
    }
    char key[96];
    snprintf(key, sizeof key, "finding/%s", hash);
    json_t *prev = kv_json(g, key);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:I, s:O}", "chunk", hash, "kind", kind, "detail", why, "found",
                            (json_int_t)(prev ? json_integer_value(json_object_get(prev, "found")) : g->api->now()),
                            "files", files);
    kv_put_json(g, key, rec, true);
    if (!prev) { /* a new finding: event and notifications once, not on every scrub */
        e = (mb_err){0};
        g->api->hook_emit("integrity.mismatch", json_incref(rec), &e);
        const char *o;
        json_t *any;
        json_object_foreach(owners, o, any) {
            const char *p = json_string_value(json_object_get(any, "path"));
            char body[512];
            snprintf(body, sizeof body, "'%s' holds a %s chunk; downloads of it are refused. Restore it from "
                     "a backup or an older version.", p ? p : "a file in the trash", kind);
            g->api->notify((uint64_t)strtoull(o, NULL, 10), "error", "A file is damaged", body);
        }
        if (starter) {
            char body[256];
            snprintf(body, sizeof body, "chunk %s is %s; %zu file versions are marked damaged", hash, kind,
                     json_array_size(files));
            g->api->notify(starter, "error", "Integrity scrub found damage", body);
        }
        g->api->log(g->self, MB_LOG_ERROR, "chunk %s is %s (%zu file versions affected)", hash, kind, json_array_size(files));
    }
    json_decref(prev);
    json_decref(rec);
    json_decref(owners);
    json_decref(files);
}

/* A chunk that verifies again (an admin put the bytes back): lift its marks. */
static void healed(integ *g, const char *hash)
{
    char key[96];
    snprintf(key, sizeof key, "finding/%s", hash);
    json_t *prev = kv_json(g, key);
    if (!prev)
        return;
    size_t i;
    json_t *f;
    mb_err e = {0};
    json_array_foreach(json_object_get(prev, "files"), i, f)
        g->api->file_mark_damaged((uint64_t)json_integer_value(json_object_get(f, "store")),
                                  (uint64_t)json_integer_value(json_object_get(f, "file_id")),
                                  (uint64_t)json_integer_value(json_object_get(f, "version")), NULL, false, &e);
    g->api->kv_del(g->self, key, true, &e);
    json_decref(prev);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int t_scrub(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)args;
    integ *g = state;
    bool idle = false;
    if (!atomic_compare_exchange_strong(&g->running, &idle, true)) {
        g->api->task_result(task, json_pack("{s:s}", "skipped", "a scrub is already running"));
        return 0;
    }
    char after[65] = "";
    json_t *cur = kv_json(g, "cursor");
    if (cur)
        snprintf(after, sizeof after, "%s",
                 json_is_string(json_object_get(cur, "after")) ? json_string_value(json_object_get(cur, "after")) : "");
    json_decref(cur);
    json_t *stats = kv_json(g, "scrub");
    if (!stats || !after[0]) { /* a fresh scrub, not a resumed one */
        json_decref(stats);
        stats = json_pack("{s:I, s:I, s:I, s:i, s:i}", "started", (json_int_t)g->api->now(), "chunks_checked",
                          (json_int_t)0, "bytes_checked", (json_int_t)0, "problems", 0, "unreadable", 0);
    }
    uint64_t total = 0, done = 0;
    g->api->chunk_list(NULL, count_cb, &total, err);
    if (after[0]) {
        uint64_t left = 0;
        g->api->chunk_list(after, count_cb, &left, err);
        done = total > left ? total - left : 0;
    }
    double rate = (double)g->rate_mb_s * 1024 * 1024; /* bytes per second */
    int64_t t0 = mono_ms();
    uint64_t bytes = 0;
    int rc = 0;
    batch *b = malloc(sizeof *b);
    for (;;) {
        b->n = 0;
        g->api->chunk_list(after, batch_cb, b, err);
        if (!b->n)
            break;
        for (int i = 0; i < b->n && !rc; i++) {
            mb_err e = {0};
            int v = g->api->chunk_verify(b->hash[i], &e);
            if (v == MB_EINTEGRITY || v == MB_ENOENT) {
                found(g, b->hash[i], v, e.msg, g->api->task_owner(task));
                json_object_set_new(stats, "problems",
                                    json_integer(json_integer_value(json_object_get(stats, "problems")) + 1));
            } else if (v == 0)
                healed(g, b->hash[i]);
            else { /* not known sound, not known damaged: a backend did not answer (checked next time) */
                g->api->log(g->self, MB_LOG_WARN, "chunk %s could not be checked: %s", b->hash[i], e.msg);
                json_object_set_new(stats, "unreadable",
                                    json_integer(json_integer_value(json_object_get(stats, "unreadable")) + 1));
            }
            bytes += b->size[i];
            done++;
            snprintf(after, sizeof after, "%s", b->hash[i]);
            json_object_set_new(stats, "chunks_checked",
                                json_integer(json_integer_value(json_object_get(stats, "chunks_checked")) + 1));
            json_object_set_new(stats, "bytes_checked",
                                json_integer(json_integer_value(json_object_get(stats, "bytes_checked")) +
                                             (json_int_t)b->size[i]));
            json_t *c = json_pack("{s:s}", "after", after);
            kv_put_json(g, "cursor", c, false);
            json_decref(c);
            /* The rate limit: never ahead of rate_mb_s since this run started. */
            int64_t due = t0 + (int64_t)((double)bytes * 1000.0 / rate);
            int64_t now = mono_ms();
            if (due > now)
                sleep_ms(due - now);
            char msg[96];
            snprintf(msg, sizeof msg, "verified %llu of %llu chunks", (unsigned long long)done,
                     (unsigned long long)total);
            if (g->api->task_progress(task, total ? (int)(done * 100 / total) : 100, msg))
                rc = g->api->err_set(err, MB_ECANCELED, "the scrub stopped after %llu chunks; it resumes there",
                                     (unsigned long long)done);
        }
        kv_put_json(g, "scrub", stats, true);
        if (rc)
            break;
    }
    free(b);
    if (!rc) {
        mb_err e = {0};
        g->api->kv_del(g->self, "cursor", true, &e);
        json_object_set_new(stats, "finished", json_integer(g->api->now()));
        kv_put_json(g, "scrub", stats, true);
        g->api->task_result(task, json_deep_copy(stats));
    }
    json_decref(stats);
    atomic_store(&g->running, false);
    return rc;
}

/* Every interval_hours: queue a scrub. */
static void tick(void *arg)
{
    integ *g = arg;
    uint64_t id;
    mb_err e = {0};
    if (g->api->task_submit("integrity.scrub", 0, json_object(), &id, &e))
        g->api->log(g->self, MB_LOG_WARN, "could not queue the scrub: %s", e.msg);
}

/* ---------------------------------------------------------- init and fini --- */

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    integ *g = calloc(1, sizeof *g);
    if (!g)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    g->self = self;
    g->api = api;
    g->rate_mb_s = json_integer_value(json_object_get(config, "rate_mb_s"));
    g->interval_hours = json_integer_value(json_object_get(config, "interval_hours"));
    int64_t period = g->interval_hours * 3600 * 1000;
    if (period > 0 && api->timer_add(self, period, period, tick, g, NULL, err)) {
        free(g);
        return err->code;
    }
    *state = g;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)reloading, (void)err;
    free(state); /* the kernel cancelled the timer before calling fini */
    return 0;
}

/* ------------------------------------------------------------------ tables --- */

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "rate_mb_s", MB_CFG_INT, "20", 1, 10000},
    {sizeof(mb_config_key), "interval_hours", MB_CFG_INT, "168", 0, 8760},
    {0},
};

static const mb_route routes[] = {
    {sizeof(mb_route), "POST", "/api/v1/admin/integrity/scrub", MB_ROLE_ADMIN, h_scrub},
    {sizeof(mb_route), "GET", "/api/v1/admin/integrity", MB_ROLE_ADMIN, h_findings},
    {0},
};

static const mb_task_type tasks[] = {
    {sizeof(mb_task_type), "integrity.scrub", t_scrub, 3},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 0,
    .name = "integrity",
    .version = "1.0.0",
    .description = "Background scrub: re-hash every chunk, mark damaged files, report findings",
    .config = config_keys,
    .routes = routes,
    .tasks = tasks,
    .init = init,
    .fini = fini,
};
