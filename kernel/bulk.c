/*
 * bulk.c — one operation on every entry of a folder, as a task (issue 27; docs/api.md
 * "Operations on a whole folder"): "select all" in a folder of a million entries is one
 * request, not a million, and the work goes on after the page is closed.
 *
 *   POST /api/v1/stores/{sid}/bulk {"op":"move"|"copy"|"delete","folder","to","except":[names]}
 *   -> 202 {"task","total"}
 *
 * The task "kernel.bulk" (args {"store","op","folder","to","except","total"}, owned by the
 * user who asked) walks the folder a page at a time in name order and applies the ordinary
 * per-entry operation to each entry not named in `except`: fs_move, fs_copy_task or
 * fs_delete_task (recursive; the trash takes deletes when it is on). So every entry gets the
 * same checks, hooks, events and quotas as one moved by hand, and the task never holds more
 * than a page. An entry that fails (a name already taken at the destination, a quota, a folder
 * moved into itself) is counted and skipped, with the first BULK_ERRORS_MAX reasons kept for
 * the result; one that vanished meanwhile is skipped silently.
 *
 * Where it is, is kept beside the task, so a stop (shutdown, crash, unload) resumes after the
 * last entry done instead of starting over:
 *   bk/<task16> {"after": hex of the last name done, "doing": name under way, "done", "failed",
 *                "errors"}
 * written unsynced (the next entry's synced commit carries it to disk). "doing" is written
 * before an entry's operation: after a crash, a copy of that entry found at the destination
 * is the one made before the crash (counted done, not failed), and a moved or deleted entry
 * is no longer listed. The key goes when the task ends. A cancel stops after the entry under
 * way; what was done stays done.
 *
 * Threads: HTTP threads (bulk_submit) and task workers (run). No state of its own in memory.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_TYPE "kernel.bulk"
#define BULK_EXCEPT_MAX 1000 /* names a request may leave out */
#define BULK_ERRORS_MAX 100  /* failures kept with their reasons */
#define BULK_PAGE 256        /* entries listed at a time */
#define BULK_TELL_EVERY 32   /* entries between progress reports */

static void bkey(char *out, size_t n, uint64_t task)
{
    id_key(out, n, "bk", task);
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* ------------------------------------------------------------ the request --- */

/* The except list as NFC names, sorted, no duplicates: a new array (or an error). */
static json_t *except_names(const json_t *in, mb_err *err)
{
    json_t *out = json_array();
    if (!in || json_is_null(in))
        return out;
    if (!json_is_array(in) || json_array_size(in) > BULK_EXCEPT_MAX) {
        json_decref(out);
        err_set(err, MB_EINVAL, "except: an array of at most %d names", BULK_EXCEPT_MAX);
        return NULL;
    }
    size_t n = json_array_size(in);
    const char **v = xmalloc((n ? n : 1) * sizeof *v);
    char (*norm)[FS_NAME_MAX + 1] = xmalloc((n ? n : 1) * sizeof *norm);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(in, i));
        mb_err e = {0};
        if (!s || fs_name_normalize(s, strlen(s), norm[i], &e)) {
            err_set(err, MB_EINVAL, "except[%zu]: %s", i, s ? e.msg : "not a name");
            free(v);
            free(norm);
            json_decref(out);
            return NULL;
        }
        v[i] = norm[i];
    }
    qsort(v, n, sizeof *v, name_cmp);
    for (size_t i = 0; i < n; i++)
        if (!i || strcmp(v[i], v[i - 1]))
            json_array_append_new(out, json_string(v[i]));
    free(v);
    free(norm);
    return out;
}

int bulk_submit(const mb_user *u, uint64_t sid, const json_t *body, uint64_t *task, int64_t *total, mb_err *err)
{
    const char *op = json_string_value(json_object_get(body, "op"));
    const json_t *jf = json_object_get(body, "folder"), *jt = json_object_get(body, "to");
    bool move = op && !strcmp(op, "move"), copy = op && !strcmp(op, "copy");
    if (!move && !copy && !(op && !strcmp(op, "delete")))
        return err_set(err, MB_EINVAL, "op: one of \"move\", \"copy\", \"delete\"");
    if (jf && !json_is_string(jf))
        return err_set(err, MB_EINVAL, "folder: a path (\"\" is the store's top folder)");
    if ((move || copy) && !json_is_string(jt))
        return err_set(err, MB_EINVAL, "to: the folder the entries go into");
    fs_op f, t = {0};
    uint64_t fid, tid = 0;
    int rc = fs_folder_begin(&f, u, sid, jf ? json_string_value(jf) : "", &fid, err);
    if (rc)
        return rc;
    if ((move || copy) && (rc = fs_folder_begin(&t, u, sid, json_string_value(jt), &tid, err))) {
        fs_op_end(&f);
        return rc;
    }
    if (move && tid == fid)
        rc = err_set(err, MB_EINVAL, "to: the entries are in '%s' already", t.path);
    json_t *except = rc ? NULL : except_names(json_object_get(body, "except"), err);
    if (!rc && !except)
        rc = MB_EINVAL;
    if (!rc) {
        int64_t n = ns_child_count(sid, fid);
        size_t i;
        json_t *name;
        json_array_foreach(except, i, name) {
            json_t *e = NULL;
            if (ns_entry_get(sid, fid, json_string_value(name), &e) == 0)
                n--;
            json_decref(e);
        }
        *total = n < 0 ? 0 : n;
        json_t *args = json_pack("{s:I, s:s, s:s, s:o, s:I}", "store", (json_int_t)sid, "op", op, "folder", f.path,
                                 "except", except, "total", (json_int_t)*total);
        if (move || copy)
            json_object_set_new(args, "to", json_string(t.path));
        rc = task_submit(TASK_TYPE, u->id, args, task, err);
    }
    fs_op_end(&f);
    fs_op_end(&t);
    return rc;
}

/* ---------------------------------------------------------------- the task --- */

typedef struct {
    mb_task *task;
    mb_user user;
    uint64_t sid;
    const char *op, *folder, *to;
    const json_t *except;
    int64_t total;
    char key[32];
    json_t *st; /* {"after","doing","done","failed","errors"}: bk/<task16> */
    mb_err *err;
} bulk;

static bool excepted(const bulk *b, const char *name)
{
    size_t lo = 0, hi = json_array_size(b->except);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, json_string_value(json_array_get(b->except, mid)));
        if (!c)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

static void save(bulk *b) { db_put_json(b->key, b->st, false); }

static void count(bulk *b, const char *what) { json_object_set_new(b->st, what, json_integer(jint(b->st, what) + 1)); }

static const char *past(const char *op) { return !strcmp(op, "move") ? "moved" : !strcmp(op, "copy") ? "copied" : "deleted"; }

/* Apply the operation to one entry; 0 (done), 1 (skipped: gone), or an MB_E* with err. */
static int one(bulk *b, const char *name, bool was_doing, mb_err *err)
{
    char *from = ns_join(b->folder, name), *to = b->to ? ns_join(b->to, name) : NULL;
    json_t *info = NULL;
    uint64_t sub = 0; /* a big folder's own task (fs_big.c) */
    int rc;
    if (!strcmp(b->op, "move"))
        rc = fs_move(&b->user, b->sid, from, to, 0, &info, err);
    else if (!strcmp(b->op, "copy")) {
        rc = fs_copy_task(&b->user, b->sid, from, to, 0, &info, &sub, err);
        if (rc == MB_EEXIST && was_doing)
            rc = 0; /* copied before a stop that lost the note saying so */
    } else
        rc = fs_delete_task(&b->user, b->sid, from, FS_RECURSIVE, &sub, err);
    json_decref(info);
    free(from);
    free(to);
    return rc == MB_ENOENT ? 1 : rc;
}

/* Tell the progress; MB_EAGAIN (the kernel wants the worker: resume later) or MB_ECANCELED. */
static int tell(bulk *b, bool now)
{
    int64_t done = jint(b->st, "done"), failed = jint(b->st, "failed");
    if (!now && (done + failed) % BULK_TELL_EVERY)
        return 0;
    char msg[128];
    snprintf(msg, sizeof msg, "%s %lld of %lld%s", past(b->op), (long long)done, (long long)b->total,
             failed ? ", some failed" : "");
    int pct = b->total ? (int)((done + failed) * 99 / b->total) : 0;
    if (!task_progress(b->task, pct > 99 ? 99 : pct, msg))
        return 0;
    if (task_must_yield(b->task))
        return err_set(b->err, MB_EAGAIN, "stopped after %lld entries; it resumes", (long long)done);
    return err_set(b->err, MB_ECANCELED, "cancelled after %s %lld of %lld", past(b->op), (long long)done,
                   (long long)b->total);
}

static int walk(bulk *b)
{
    const char *doing = jstr(b->st, "doing");
    char *was = doing ? xstrdup(doing) : NULL; /* the entry under way when the last run stopped */
    json_object_del(b->st, "doing");
    if (was && strcmp(b->op, "copy")) { /* moved or deleted before the stop lost the count */
        char *path = ns_join(b->folder, was);
        json_t *info = NULL;
        mb_err ig = {0};
        if (fs_stat(&b->user, b->sid, path, &info, &ig) == MB_ENOENT)
            count(b, "done");
        json_decref(info);
        free(path);
    }
    int rc = 0;
    for (bool more = true; more && !rc;) {
        json_t *page = NULL;
        const char *after = jstr(b->st, "after");
        if ((rc = fs_list_page(&b->user, b->sid, b->folder, after ? after : "", BULK_PAGE, &page, b->err)))
            break;
        more = !json_is_null(json_object_get(page, "next_cursor"));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(page, "entries"), i, e) {
            const char *name = jstr(e, "name");
            if (!name)
                continue;
            if (!excepted(b, name)) {
                json_object_set_new(b->st, "doing", json_string(name));
                save(b);
                mb_err oe = {0};
                int r = one(b, name, was && !strcmp(was, name), &oe);
                if (r == 0)
                    count(b, "done");
                else if (r < 0) {
                    count(b, "failed");
                    json_t *errors = json_object_get(b->st, "errors");
                    if (json_array_size(errors) < BULK_ERRORS_MAX)
                        json_array_append_new(errors, json_pack("{s:s, s:s}", "name", name, "error", oe.msg));
                }
                json_object_del(b->st, "doing");
            }
            size_t n = strlen(name);
            char *hex = xmalloc(2 * n + 1);
            hex_encode((const uint8_t *)name, n, hex);
            json_object_set_new(b->st, "after", json_string(hex));
            free(hex);
            save(b);
            if ((rc = tell(b, false)))
                break;
        }
        json_decref(page);
    }
    free(was);
    return rc;
}

static int run(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    char name[128];
    bulk b = {.task = task, .sid = (uint64_t)jint(args, "store"), .op = jstr(args, "op"), .folder = jstr(args, "folder"),
              .to = jstr(args, "to"), .except = json_object_get(args, "except"), .total = jint(args, "total"),
              .err = err};
    if (!b.op || !b.folder || !json_is_array(b.except))
        return err_set(err, MB_EINVAL, "the task's arguments are not a bulk operation's");
    if (auth_user_name(task_owner(task), name, sizeof name))
        return err_set(err, MB_ENOENT, "the user who asked for it is gone");
    b.user = (mb_user){.size = sizeof(mb_user), .id = task_owner(task), .name = name, .role = MB_ROLE_USER};
    bkey(b.key, sizeof b.key, task_id(task));
    if (db_get_json(b.key, &b.st) || !json_is_object(b.st)) { /* a first run */
        json_decref(b.st);
        b.st = json_pack("{s:I, s:I, s:[]}", "done", (json_int_t)0, "failed", (json_int_t)0, "errors");
    } else if (!json_is_array(json_object_get(b.st, "errors")))
        json_object_set_new(b.st, "errors", json_array());
    int rc = walk(&b);
    if (rc == 0 || rc == MB_ECANCELED) { /* ended, with what was done either way */
        json_t *res = json_pack("{s:s, s:s, s:I, s:I, s:O}", "op", b.op, "folder", b.folder, "done",
                                (json_int_t)jint(b.st, "done"), "failed", (json_int_t)jint(b.st, "failed"), "errors",
                                json_object_get(b.st, "errors"));
        if (b.to)
            json_object_set_new(res, "to", json_string(b.to));
        task_result(task, res);
        if (!rc) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s %lld, %lld failed", past(b.op), (long long)jint(b.st, "done"),
                     (long long)jint(b.st, "failed"));
            task_progress(task, 100, msg);
        }
        db_del(b.key, strlen(b.key), false);
    } else /* stopped, or an attempt that failed: the next one resumes here (bulk_init sweeps) */
        save(&b);
    json_decref(b.st);
    return rc;
}

int bulk_init(mb_err *err)
{
    static const mb_task_type type = {.size = sizeof type, .name = TASK_TYPE, .run = run, .max_attempts = 3};
    task_notes_sweep("bk/"); /* tasks that ended without deleting theirs (failed for good) */
    return task_type_add(NULL, &type, NULL, err);
}
