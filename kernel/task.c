/*
 * task.c — the persistent task queue (DESIGN.md "Tasks").
 *
 * A task is a record in LevelDB (k/<id16>, JSON, see docs/storage.md) plus two index keys:
 * kq/<id16> while it is not finished (queued or running) and ko/<owner16>/<id16> for the
 * owner's list. The record is the truth; the queue in memory (`pending`) is rebuilt from kq/
 * at start. A task found "running" at start belongs to a process that died mid-task: its
 * attempt was already counted when it started, so it simply goes back to "queued".
 *
 * A pool of g_cfg->workers threads takes the earliest due task whose type is registered,
 * counts the call into the type's module (modref_enter, taken under the type table's read
 * lock, so an unloading module is drained of its running tasks), runs it, and records the
 * outcome: done, a retry with exponential backoff (task_backoff_ms), failed after
 * max_attempts, or cancelled. Tasks of a type nobody registers stay queued until a module
 * registers it again. Every change of state and progress is told on the hook bus
 * ("task.update", hook_tell; notify.c pushes it to the owner's event stream and turns an end
 * into a notification) and written to the record at most every PROGRESS_WRITE_MS. The HTTP
 * side (GET /api/v1/tasks...) is task_http.c's, over task_get, task_list and task_cancel.
 *
 * Threads: workers, HTTP threads (task_http.c, task_submit from module handlers), the loop
 * thread (type registration by modmgr). `q_lock` protects pending/running/stopping; the
 * type table is an owner-tagged registry (registry.c) with its own rwlock; lock order is
 * q_lock then the type table's. A task's record is
 * written only by whoever holds the task: its worker while running, or a caller holding
 * q_lock while it is queued (cancel).
 */
#include "kernel.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_ATTEMPTS 5
#define PROGRESS_WRITE_MS 250

typedef struct ttype {
    mb_module *owner; /* first: the registry's tag */
    char *name;
    mb_task_fn run;
    void *state;
    int max_attempts;
} ttype;

typedef struct pend {
    uint64_t id;
    char *type;
    int64_t due_ms; /* monotonic */
} pend;

struct mb_task {
    struct mb_task *next;
    uint64_t id, owner;
    char type[128];
    mb_module *module;
    json_t *rec; /* owned by the worker thread while the task runs */
    atomic_bool cancel, preempt;
    int64_t last_write_ms;
};

static bool type_named(const void *have, const void *fresh)
{
    return !strcmp(((const ttype *)have)->name, ((const ttype *)fresh)->name);
}
static void type_drop(void *e) { free(((ttype *)e)->name); }
static void type_retake(void *have, void *fresh)
{
    type_drop(have);
    *(ttype *)have = *(ttype *)fresh;
}
static void type_describe(const void *e, char *buf, size_t n)
{
    snprintf(buf, n, "task type %s", ((const ttype *)e)->name);
}
REG_ENTRY(ttype);
static const reg_ops type_ops = {.size = sizeof(ttype), .conflict = type_named, .same = type_named,
                                 .retake = type_retake, .drop = type_drop, .describe = type_describe};
static registry types = REG_INIT(&type_ops); /* owner-tagged (registry.c) */

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond;
static pend *pending;
static size_t npending, cap_pending;
static mb_task *running;
static atomic_bool stopping;
static bool started;
static pthread_t *threads;
static int nthreads;
static int64_t backoff_base_ms = 1000;

/* ------------------------------------------------------------ pure logic --- */

int64_t task_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint32_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    if (base_ms < 1)
        base_ms = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d *= 2; /* stops doubling at the cap, so it never overflows */
    if (d > cap_ms)
        d = cap_ms;
    /* Jitter spreads retries of tasks that failed together (a backend outage) apart. */
    int64_t span = d / 4;
    return d - span + (span ? (int64_t)(rnd % (uint64_t)(span + 1)) : 0);
}

int task_next_state(int rc, bool cancel_requested, int attempts, int max_attempts)
{
    if (rc == 0)
        return TASK_NEXT_DONE;
    if (rc == MB_ECANCELED || cancel_requested)
        return TASK_NEXT_CANCELLED;
    if (attempts < max_attempts)
        return TASK_NEXT_RETRY;
    return TASK_NEXT_FAILED;
}

/* --------------------------------------------------------------- records --- */

static void key_task(char out[24], uint64_t id)
{
    char k16[17];
    key_u64(k16, id);
    snprintf(out, 24, "k/%s", k16);
}

static void key_queue(char out[24], uint64_t id)
{
    char k16[17];
    key_u64(k16, id);
    snprintf(out, 24, "kq/%s", k16);
}

static void key_owner(char out[48], uint64_t owner, uint64_t id)
{
    char o16[17], k16[17];
    key_u64(o16, owner);
    key_u64(k16, id);
    snprintf(out, 48, "ko/%s/%s", o16, k16);
}

static int rec_load(uint64_t id, json_t **out)
{
    char key[24];
    key_task(key, id);
    int rc = db_get_json(key, out);
    if (rc == 0 && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return MB_EIO;
    }
    return rc;
}

static const char *rec_str(const json_t *rec, const char *k)
{
    const char *s = json_string_value(json_object_get(rec, k));
    return s ? s : "";
}

static int rec_int(const json_t *rec, const char *k) { return (int)json_integer_value(json_object_get(rec, k)); }

/* The record as clients see it (without the format version). New reference. */
static json_t *rec_public(const json_t *rec)
{
    json_t *o = json_deep_copy(rec);
    json_object_del(o, "v");
    return o;
}

/* Tell the bus what the task is doing now: notify.c listens (hook_listen) and pushes it to the
 * owner's open pages, and turns a task's end into a notification. */
static void publish(const json_t *rec)
{
    json_t *p = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(rec, "id"), "owner",
                          json_object_get(rec, "owner"), "type", json_object_get(rec, "type"), "state",
                          json_object_get(rec, "state"), "progress", json_object_get(rec, "progress"), "message",
                          json_object_get(rec, "message"), "error", json_object_get(rec, "error"));
    hook_tell("task.update", p);
    json_decref(p);
}

/* Write a finished task: record, index removal and the task.finished event in one synced
 * batch, then tell the bus (its owner hears of it through notify.c). */
static void finish_record(json_t *rec)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(rec, "id"));
    uint64_t owner = (uint64_t)json_integer_value(json_object_get(rec, "owner"));
    char key[24];
    db_batch *b = db_batch_new();
    key_task(key, id);
    db_batch_put_json(b, key, rec);
    key_queue(key, id);
    db_batch_del(b, key, strlen(key));
    hook_emit_batch(b, "task.finished",
                    json_pack("{s:I, s:s, s:I, s:s, s:O}", "id", (json_int_t)id, "type", rec_str(rec, "type"), "owner",
                              (json_int_t)owner, "state", rec_str(rec, "state"), "error",
                              json_object_get(rec, "error")));
    if (db_batch_commit(b, true))
        log_error("task %llu: could not record its end", (unsigned long long)id);
    hook_kick();
    publish(rec);
}

/* ------------------------------------------------------------- the queue --- */

static void pending_add(uint64_t id, const char *type, int64_t due_ms)
{
    if (npending == cap_pending) {
        cap_pending = cap_pending ? cap_pending * 2 : 64;
        pending = xrealloc(pending, cap_pending * sizeof *pending);
    }
    pending[npending++] = (pend){.id = id, .type = xstrdup(type), .due_ms = due_ms};
}

static void pending_del(size_t i)
{
    free(pending[i].type);
    pending[i] = pending[--npending];
}

/* Read lock of `types` held (inside reg_read). */
static const ttype *type_find(const ttype *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return &v[i];
    return NULL;
}

static bool type_is(const void *e, const void *name) { return !strcmp(((const ttype *)e)->name, name); }

/* The worker's pick, under the type table's read lock (q_lock held): the earliest due task
 * whose type is registered, its module entered so that an unload drains it. */
typedef struct pick_ctx {
    int64_t now, wake;
    ssize_t pick;
    ttype chosen;
} pick_ctx;

static void *pick_due(const void *entries, size_t n, void *ud)
{
    pick_ctx *c = ud;
    for (size_t i = 0; i < npending; i++) {
        if (!type_find(entries, n, pending[i].type))
            continue; /* its module is not loaded: it waits */
        if (pending[i].due_ms > c->now) {
            if (pending[i].due_ms < c->wake)
                c->wake = pending[i].due_ms;
            continue;
        }
        if (c->pick < 0 || pending[i].due_ms < pending[c->pick].due_ms ||
            (pending[i].due_ms == pending[c->pick].due_ms && pending[i].id < pending[c->pick].id))
            c->pick = (ssize_t)i;
    }
    if (c->pick >= 0) {
        c->chosen = *type_find(entries, n, pending[c->pick].type);
        modref_enter(c->chosen.owner);
    }
    return NULL;
}

static void wake_workers(void)
{
    pthread_mutex_lock(&q_lock);
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

static void run_one(mb_task *t, const ttype *ty)
{
    json_t *rec = NULL;
    if (rec_load(t->id, &rec) || strcmp(rec_str(rec, "state"), "queued")) {
        json_decref(rec);
        return;
    }
    t->owner = (uint64_t)json_integer_value(json_object_get(rec, "owner"));
    int attempts = rec_int(rec, "attempts") + 1;
    int max = rec_int(rec, "max_attempts");
    if (max < 1)
        max = DEFAULT_MAX_ATTEMPTS;
    json_object_set_new(rec, "attempts", json_integer(attempts));
    json_object_set_new(rec, "state", json_string("running"));
    json_object_set_new(rec, "updated", json_integer(now_wall()));
    char key[24];
    key_task(key, t->id);
    db_put_json(key, rec, false); /* a crash now finds it "running" and queues it again */
    t->rec = rec;
    t->last_write_ms = now_mono_ms();
    publish(rec);
    log_msg(LOG_DEBUG, "task", "task %llu (%s) attempt %d of %d", (unsigned long long)t->id, t->type, attempts, max);

    mb_err e = {0};
    int rc = ty->run(t, json_object_get(rec, "args"), ty->state, &e);
    if (rc > 0)
        rc = MB_EINTERNAL; /* a runner must return 0 or a negative code */
    if (rc && !e.code)
        err_set(&e, rc, "%s", err_title(rc));

    json_object_set_new(rec, "updated", json_integer(now_wall()));
    if (rc && task_must_yield(t) && !atomic_load(&t->cancel)) {
        /* Stopped by the kernel (shutdown, module unload), not by its own failure: this
         * attempt does not count, and the task waits for its type to come back. */
        json_object_set_new(rec, "attempts", json_integer(attempts - 1));
        json_object_set_new(rec, "state", json_string("queued"));
        json_object_set_new(rec, "message", json_string("interrupted; will resume"));
        db_put_json(key, rec, true);
        publish(rec);
        pthread_mutex_lock(&q_lock);
        pending_add(t->id, t->type, now_mono_ms());
        pthread_mutex_unlock(&q_lock);
        return;
    }
    switch (task_next_state(rc, atomic_load(&t->cancel), attempts, max)) {
    case TASK_NEXT_DONE:
        json_object_set_new(rec, "state", json_string("done"));
        json_object_set_new(rec, "progress", json_integer(100));
        json_object_set_new(rec, "error", json_null());
        finish_record(rec);
        break;
    case TASK_NEXT_CANCELLED:
        json_object_set_new(rec, "state", json_string("cancelled"));
        json_object_set_new(rec, "error", json_string(rc == MB_ECANCELED || !e.msg[0] ? "cancelled" : e.msg));
        finish_record(rec);
        break;
    case TASK_NEXT_RETRY: {
        int64_t delay = task_backoff_ms(attempts, backoff_base_ms, backoff_base_ms * 300, (uint32_t)random());
        json_object_set_new(rec, "state", json_string("queued"));
        json_object_set_new(rec, "error", json_string(e.msg));
        json_object_set_new(rec, "next_run", json_integer(now_wall() + (delay + 999) / 1000));
        db_put_json(key, rec, true);
        publish(rec);
        log_msg(LOG_INFO, "task", "task %llu (%s) attempt %d failed, retry in %lld ms: %s",
                (unsigned long long)t->id, t->type, attempts, (long long)delay, e.msg);
        pthread_mutex_lock(&q_lock);
        pending_add(t->id, t->type, now_mono_ms() + delay);
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
        break;
    }
    default:
        metrics_task_failed();
        json_object_set_new(rec, "state", json_string("failed"));
        json_object_set_new(rec, "error", json_string(e.msg));
        log_msg(LOG_WARN, "task", "task %llu (%s) failed after %d attempts: %s", (unsigned long long)t->id, t->type,
                attempts, e.msg);
        finish_record(rec);
        break;
    }
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q_lock);
    while (!atomic_load(&stopping)) {
        pick_ctx c = {.now = now_mono_ms(), .pick = -1};
        c.wake = c.now + 60000;
        reg_read(&types, pick_due, &c);
        ssize_t pick = c.pick;
        int64_t now = c.now, wake = c.wake;
        ttype chosen = c.chosen;
        if (pick < 0) {
            struct timespec ts;
            wait_deadline(&ts, CLOCK_MONOTONIC, wake - now);
            pthread_cond_timedwait(&q_cond, &q_lock, &ts);
            continue;
        }
        mb_task *t = xcalloc(1, sizeof *t);
        t->id = pending[pick].id;
        snprintf(t->type, sizeof t->type, "%s", pending[pick].type);
        t->module = chosen.owner;
        pending_del((size_t)pick);
        t->next = running;
        running = t;
        pthread_mutex_unlock(&q_lock);

        run_one(t, &chosen);
        modref_leave(chosen.owner);

        pthread_mutex_lock(&q_lock);
        for (mb_task **pp = &running; *pp; pp = &(*pp)->next)
            if (*pp == t) {
                *pp = t->next;
                break;
            }
        json_decref(t->rec);
        free(t);
    }
    pthread_mutex_unlock(&q_lock);
    return NULL;
}

/* ----------------------------------------------------------- the ABI side --- */

static ttype type_of(mb_module *owner, const mb_task_type *t, void *state)
{
    return (ttype){.name = xstrdup(t->name), .owner = owner, .run = t->run, .state = state,
                   .max_attempts = t->max_attempts > 0 ? t->max_attempts : DEFAULT_MAX_ATTEMPTS};
}

int task_type_add(mb_module *owner, const mb_task_type *t, void *state, mb_err *err)
{
    if (!t->name || !*t->name || !t->run)
        return err_set(err, MB_EINVAL, "a task type needs a name and a runner");
    if (strlen(t->name) >= 120)
        return err_set(err, MB_EINVAL, "task type name '%.40s...' is too long", t->name);
    ttype ty = type_of(owner, t, state);
    int rc = reg_add(&types, &ty, err);
    if (!rc)
        wake_workers(); /* tasks of this type may have waited for it */
    return rc;
}

void task_types_remove(mb_module *owner) { reg_remove_owner(&types, owner); }

int task_types_swap(mb_module *from, mb_module *to, const mb_task_type *table, void *new_state, mb_err *err)
{
    size_t n = 0;
    while (table && table[n].name)
        n++;
    for (size_t i = 0; i < n; i++)
        if (!table[i].run)
            return err_set(err, MB_EINVAL, "task type %s has no runner", table[i].name);
    ttype *fresh = xcalloc(n + 1, sizeof *fresh);
    for (size_t i = 0; i < n; i++)
        fresh[i] = type_of(to, &table[i], new_state);
    int rc = reg_swap_owner(&types, from, fresh, n, err);
    free(fresh);
    if (!rc)
        wake_workers();
    return rc;
}

void task_preempt(mb_module *owner)
{
    pthread_mutex_lock(&q_lock);
    for (mb_task *t = running; t; t = t->next)
        if (t->module == owner)
            atomic_store(&t->preempt, true);
    pthread_mutex_unlock(&q_lock);
}

int task_submit(const char *type, uint64_t owner, json_t *args, uint64_t *id, mb_err *err)
{
    if (!args)
        args = json_object();
    if (!json_is_object(args)) {
        json_decref(args);
        return err_set(err, MB_EINVAL, "task arguments must be a JSON object");
    }
    ttype ty;
    if (!type || !reg_get(&types, type_is, type, &ty, false)) {
        json_decref(args);
        return err_set(err, MB_EINVAL, "no task type '%s' is registered", type ? type : "(null)");
    }
    uint64_t tid = cluster_id_base() + db_next_id("task"); /* cluster mode: no other node has this id */
    int64_t now = now_wall();
    json_t *rec = json_pack("{s:i, s:I, s:s, s:I, s:s, s:i, s:s, s:i, s:i, s:o, s:n, s:n, s:I, s:I, s:I}", "v", 1,
                            "id", (json_int_t)tid, "type", type, "owner", (json_int_t)owner, "state", "queued",
                            "progress", 0, "message", "", "attempts", 0, "max_attempts", ty.max_attempts, "args", args, "result",
                            "error", "created", (json_int_t)now, "updated", (json_int_t)now, "next_run",
                            (json_int_t)now);
    char key[48];
    db_batch *b = db_batch_new();
    key_task(key, tid);
    db_batch_put_json(b, key, rec);
    key_queue(key, tid);
    db_batch_put(b, key, strlen(key), "", 0);
    key_owner(key, owner, tid);
    db_batch_put(b, key, strlen(key), "", 0);
    int rc = db_batch_commit(b, true);
    if (rc) {
        json_decref(rec);
        return err_set(err, rc, "could not record the task");
    }
    publish(rec); /* before a worker can see it, so "queued" is always the first event */
    json_decref(rec);
    pthread_mutex_lock(&q_lock);
    pending_add(tid, type, now_mono_ms());
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    if (id)
        *id = tid;
    return 0;
}

bool task_progress(mb_task *t, int percent, const char *message)
{
    if (percent < 0)
        percent = 0;
    if (percent > 100)
        percent = 100;
    json_object_set_new(t->rec, "progress", json_integer(percent));
    json_object_set_new(t->rec, "message", json_string(message && utf8_valid(message, strlen(message)) ? message : ""));
    int64_t now = now_mono_ms();
    if (percent == 100 || now - t->last_write_ms >= PROGRESS_WRITE_MS) {
        json_object_set_new(t->rec, "updated", json_integer(now_wall()));
        char key[24];
        key_task(key, t->id);
        db_put_json(key, t->rec, false);
        t->last_write_ms = now;
    }
    publish(t->rec);
    return atomic_load(&t->cancel) || task_must_yield(t);
}

bool task_must_yield(mb_task *t) { return atomic_load(&t->preempt) || atomic_load(&stopping); }

void task_result(mb_task *t, json_t *result) { json_object_set_new(t->rec, "result", result ? result : json_null()); }
uint64_t task_id(mb_task *t) { return t->id; }
uint64_t task_owner(mb_task *t) { return t->owner; }

/* ------------------------------------------------------------ reading, cancel --- */

int task_get(uint64_t id, json_t **view)
{
    json_t *rec;
    int rc = rec_load(id, &rec);
    if (rc)
        return rc;
    *view = rec_public(rec);
    json_decref(rec);
    return 0;
}

/* The record as the caller of a cancel sees it; a record that vanished under us reads {}. */
static json_t *view_or_empty(uint64_t id)
{
    json_t *v;
    return task_get(id, &v) ? json_object() : v;
}

int task_cancel(uint64_t id, json_t **view, mb_err *err)
{
    pthread_mutex_lock(&q_lock);
    for (mb_task *t = running; t; t = t->next)
        if (t->id == id) {
            atomic_store(&t->cancel, true);
            pthread_mutex_unlock(&q_lock);
            *view = view_or_empty(id);
            json_object_set_new(*view, "cancel_requested", json_true());
            return 0;
        }
    for (size_t i = 0; i < npending; i++)
        if (pending[i].id == id) {
            pending_del(i);
            json_t *rec;
            if (rec_load(id, &rec) == 0) {
                json_object_set_new(rec, "state", json_string("cancelled"));
                json_object_set_new(rec, "error", json_string("cancelled"));
                json_object_set_new(rec, "updated", json_integer(now_wall()));
                finish_record(rec);
                *view = rec_public(rec);
                json_decref(rec);
            } else
                *view = json_object();
            pthread_mutex_unlock(&q_lock);
            return 0;
        }
    pthread_mutex_unlock(&q_lock);
    json_t *rec = NULL;
    if (rec_load(id, &rec))
        rec = NULL;
    *view = NULL;
    int rc = err_set(err, MB_ECONFLICT, "task %llu has already ended (%s)", (unsigned long long)id, rec_str(rec, "state"));
    json_decref(rec);
    return rc;
}

/* The newest `max` tasks under prefix with an id below `before` (0: no bound), newest first.
 * Keys sort by id, so the newest are last: keep a ring of the last `max`. *more says whether
 * older ones remain (the next page). */
/* Whether task id comes at or after the place (at, before) in the order newest first by creation
 * time, then id: the tasks listed after that place are those that come before it here. */
static bool at_or_after(uint64_t id, int64_t at, uint64_t before)
{
    json_t *v;
    if (task_get(id, &v))
        return false;
    int64_t created = (int64_t)json_integer_value(json_object_get(v, "created"));
    json_decref(v);
    return created > at || (created == at && id >= before);
}

json_t *task_list(const uint64_t *owner, size_t max, uint64_t before, int64_t at, bool *more)
{
    char prefix[40] = "k/", o16[17];
    if (owner) {
        key_u64(o16, *owner);
        snprintf(prefix, sizeof prefix, "ko/%s/", o16);
    }
    uint64_t *ids = xmalloc(max * sizeof *ids);
    size_t n = 0;
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) { /* ids rise with creation time: what is listed is a run from the start */
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl < 16)
            continue;
        char hex[17];
        memcpy(hex, k + kl - 16, 16);
        hex[16] = 0;
        uint64_t id = strtoull(hex, NULL, 16);
        if (before && (at ? at_or_after(id, at, before) : id >= before))
            break;
        ids[n % max] = id;
        n++;
    }
    db_iter_free(it);
    json_t *arr = json_array();
    size_t have = n < max ? n : max;
    *more = n > max;
    for (size_t i = 0; i < have; i++) {
        json_t *v;
        if (task_get(ids[(n - 1 - i) % max], &v) == 0)
            json_array_append_new(arr, v);
    }
    free(ids);
    return arr;
}

/* ---------------------------------------------------------------- retention --- */

/* Finished tasks (done, failed, cancelled) last updated more than task_retention_days ago go:
 * their record and their owner's index entry. At start and then hourly, on a run_blocking
 * worker (a scan of every task must not hold the loop). */
static struct event *prune_ev;

static void prune_work(void *arg)
{
    (void)arg;
    int64_t cutoff = now_wall() - (int64_t)g_cfg->task_retention_days * 86400;
    db_iter *it = db_iter_prefix("k/", 2);
    db_batch *b = db_batch_new();
    int n = 0, pending = 0;
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        const char *state = rec_str(rec, "state");
        if (rec && (!strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled")) &&
            json_integer_value(json_object_get(rec, "updated")) < cutoff) {
            char ko[48];
            key_owner(ko, (uint64_t)json_integer_value(json_object_get(rec, "owner")),
                      (uint64_t)json_integer_value(json_object_get(rec, "id")));
            db_batch_del(b, k, kl);
            db_batch_del(b, ko, strlen(ko));
            n++;
            if (++pending == 512) {
                db_batch_commit(b, false);
                b = db_batch_new();
                pending = 0;
            }
        }
        json_decref(rec);
    }
    db_iter_free(it);
    db_batch_commit(b, false);
    if (n)
        log_info("tasks: %d finished tasks older than %d days removed", n, g_cfg->task_retention_days);
}

static void prune_done(void *arg) { (void)arg; }

static void prune_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    mb_err e = {0};
    if (pool_run(NULL, prune_work, prune_done, NULL, &e))
        log_warn("tasks: the retention sweep could not start: %s", e.msg);
    struct timeval tv = {3600, 0};
    evtimer_add(prune_ev, &tv);
}

/* ------------------------------------------------------------ start, stop --- */

/* Rebuild the queue from kq/: running tasks belong to a process that died. */
static void recover(void)
{
    db_iter *it = db_iter_prefix("kq/", 3);
    db_batch *b = db_batch_new();
    int requeued = 0, resumed = 0;
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl != 19)
            continue;
        char hex[17];
        memcpy(hex, k + 3, 16);
        hex[16] = 0;
        uint64_t id = strtoull(hex, NULL, 16);
        json_t *rec;
        if (rec_load(id, &rec)) {
            db_batch_del(b, k, kl); /* an index entry without its record */
            continue;
        }
        const char *state = rec_str(rec, "state");
        if (!strcmp(state, "running")) {
            int attempts = rec_int(rec, "attempts"), max = rec_int(rec, "max_attempts");
            bool rerun = json_is_true(json_object_get(rec, "crash_rerun"));
            if (max > 0 && attempts >= max && !rerun) {
                /* Its last attempt was cut short: it still gets one run to finish or undo what
                 * it started (at-least-once: taskmgr resumes or rolls back a half-made store).
                 * Only once: a task that brings the server down every time then fails. */
                json_object_set_new(rec, "crash_rerun", json_true());
                json_object_set_new(rec, "attempts", json_integer(max - 1));
            } else if (max > 0 && attempts >= max) {
                json_object_set_new(rec, "state", json_string("failed"));
                json_object_set_new(rec, "error",
                                    json_string("the server stopped while this task ran, and no attempts are left"));
                finish_record(rec);
                json_decref(rec);
                continue;
            }
            json_object_set_new(rec, "state", json_string("queued"));
            json_object_set_new(rec, "message", json_string("interrupted by a restart; will resume"));
            json_object_set_new(rec, "updated", json_integer(now_wall()));
            char key[24];
            key_task(key, id);
            db_batch_put_json(b, key, rec);
            requeued++;
        } else if (strcmp(state, "queued")) {
            db_batch_del(b, k, kl); /* finished: it left the queue */
            json_decref(rec);
            continue;
        }
        int64_t wait_s = json_integer_value(json_object_get(rec, "next_run")) - now_wall();
        pending_add(id, rec_str(rec, "type"), now_mono_ms() + (wait_s > 0 ? wait_s * 1000 : 0));
        resumed++;
        json_decref(rec);
    }
    db_iter_free(it);
    db_batch_commit(b, true);
    if (resumed)
        log_info("tasks: %d waiting in the queue (%d were interrupted by a restart)", resumed, requeued);
}

int task_init(struct event_base *base, int workers, mb_err *err)
{
    const char *e = getenv("MBYTE_TASK_BACKOFF_MS");
    uint64_t v;
    if (e && parse_u64(e, &v) && v > 0 && v <= 3600000)
        backoff_base_ms = (int64_t)v;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q_cond, &ca);
    pthread_condattr_destroy(&ca);
    srandom((unsigned)now_mono_ms());
    atomic_store(&stopping, false);
    recover();
    if (base) { /* the first sweep on the loop's first turn, then hourly */
        prune_ev = evtimer_new(base, prune_tick, NULL);
        struct timeval tv = {0, 0};
        evtimer_add(prune_ev, &tv);
    }
    nthreads = workers > 0 ? workers : 1;
    threads = xcalloc((size_t)nthreads, sizeof *threads);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[i], NULL, worker, NULL)) {
            nthreads = i;
            return err_set(err, MB_EINTERNAL, "cannot start task worker %d: %s", i, strerror(errno));
        }
    started = true;
    return 0;
}

void task_stop(void)
{
    if (!started)
        return;
    pthread_mutex_lock(&q_lock);
    atomic_store(&stopping, true);
    for (mb_task *t = running; t; t = t->next)
        atomic_store(&t->preempt, true);
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    threads = NULL;
    nthreads = 0;
    started = false;
}

void task_fini(void)
{
    task_stop();
    if (prune_ev) {
        event_free(prune_ev);
        prune_ev = NULL;
    }
    pthread_mutex_lock(&q_lock);
    while (npending)
        pending_del(npending - 1);
    free(pending);
    pending = NULL;
    cap_pending = 0;
    pthread_mutex_unlock(&q_lock);
    reg_clear(&types);
}

void task_notes_sweep(const char *prefix)
{
    size_t pl = strlen(prefix);
    db_iter *it = db_iter_prefix(prefix, pl);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char key[64], hex[17];
        if (kl != pl + 16 || kl >= sizeof key)
            continue;
        memcpy(hex, k + pl, 16);
        hex[16] = 0;
        json_t *view = NULL;
        const char *st = NULL;
        if (task_get(strtoull(hex, NULL, 16), &view) == 0)
            st = json_string_value(json_object_get(view, "state"));
        if (!st || !strcmp(st, "done") || !strcmp(st, "failed") || !strcmp(st, "cancelled")) {
            snprintf(key, sizeof key, "%.*s", (int)kl, k);
            db_del(key, kl, false);
        }
        json_decref(view);
    }
    db_iter_free(it);
}
