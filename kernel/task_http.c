/*
 * task_http.c — the HTTP side of the task queue (docs/api.md "Tasks"): a user's own tasks,
 * one task, its cancel, and the admin's list of everyone's. The queue itself (records,
 * workers, cancel) is task.c's; this file checks who may see what and shapes the answers.
 * main.c registers task_routes.
 *
 * Threads: libmicrohttpd's; nothing of its own is shared.
 */
#include "kernel.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LIST_DEFAULT 100 /* a page of a task list */
#define LIST_MAX 1000

/* Task {id} if the caller may see it; others get the same 404 as a missing task. */
static int task_for_caller(mb_req *req, uint64_t *id, json_t **view, mb_err *err)
{
    const char *s = http_req_param(req, "id");
    const mb_user *u = http_req_user(req);
    if (!s || !parse_u64(s, id) || task_get(*id, view))
        return err_set(err, MB_ENOENT, "no task %s", s ? s : "");
    if (u->role != MB_ROLE_ADMIN && (uint64_t)json_integer_value(json_object_get(*view, "owner")) != u->id) {
        json_decref(*view);
        return err_set(err, MB_ENOENT, "no task %s", s);
    }
    return 0;
}

/* GET /api/v1/tasks/{id} */
static int h_get(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t id;
    json_t *view;
    int rc = task_for_caller(req, &id, &view, err);
    return rc ? rc : http_reply_json(req, 200, view);
}

/* POST /api/v1/tasks/{id}/cancel — queued: cancelled at once; running: the runner is told. */
static int h_cancel(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t id;
    json_t *view;
    int rc = task_for_caller(req, &id, &view, err);
    if (rc)
        return rc;
    json_decref(view);
    rc = task_cancel(id, &view, err);
    return rc ? rc : http_reply_json(req, 200, view);
}

/* Newest first by creation time, then id: the order of a list merged from every node. */
static int newer_first(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t cx = json_integer_value(json_object_get(x, "created")), cy = json_integer_value(json_object_get(y, "created"));
    json_int_t ix = json_integer_value(json_object_get(x, "id")), iy = json_integer_value(json_object_get(y, "id"));
    return cx != cy ? (cx < cy ? 1 : -1) : ix != iy ? (ix < iy ? 1 : -1) : 0;
}

/* The first max items of arr in newest_first order (*more when some were cut). New reference. */
static json_t *merged(json_t *arr, size_t max, bool *more)
{
    size_t n = json_array_size(arr);
    json_t **v = xmalloc((n ? n : 1) * sizeof *v), *out = json_array();
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof *v, newer_first);
    for (size_t i = 0; i < n && i < max; i++)
        json_array_append(out, v[i]);
    *more = *more || n > max;
    free(v);
    json_decref(arr);
    return out;
}

/* A page of a task list: ?limit=N (1-1000, default 100) newest first, ?before=ID for the next
 * page, which a Link header names (rel="next") while older tasks remain. In cluster mode the list
 * holds every node's tasks (each node makes its own), merged by creation time: the next page is
 * then ?before=ID&at=CREATED, the last task's. */
static int list_page(mb_req *req, const char *route, const uint64_t *owner, mb_err *err)
{
    uint64_t limit = LIST_DEFAULT, before = 0, at = 0;
    const char *l = http_req_query(req, "limit"), *b = http_req_query(req, "before"), *a = http_req_query(req, "at");
    if (l && (!parse_u64(l, &limit) || limit < 1 || limit > LIST_MAX))
        return err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", LIST_MAX);
    if (b && (!parse_u64(b, &before) || before < 1))
        return err_set(err, MB_EINVAL, "before: a task id");
    if (a && (!b || !parse_u64(a, &at) || at > INT64_MAX))
        return err_set(err, MB_EINVAL, "at: the creation time (unix seconds) of the task named by before");
    bool more;
    json_t *arr = task_list(owner, (size_t)limit, before, (int64_t)at, &more);
    char target[200], at_arg[40] = "";
    if (before)
        snprintf(target, sizeof target, "%s?limit=%llu&before=%llu&at=%llu", route, (unsigned long long)limit,
                 (unsigned long long)before, (unsigned long long)at);
    else
        snprintf(target, sizeof target, "%s?limit=%llu", route, (unsigned long long)limit);
    bool all = cluster_fwd_gather(req, http_req_user(req)->id, target, (size_t)limit, arr, &more);
    if (all)
        arr = merged(arr, (size_t)limit, &more);
    size_t n = json_array_size(arr);
    if (more && n) {
        json_t *last = json_array_get(arr, n - 1);
        if (all)
            snprintf(at_arg, sizeof at_arg, "&at=%lld", (long long)json_integer_value(json_object_get(last, "created")));
        char link[240];
        snprintf(link, sizeof link, "<%s?before=%lld%s&limit=%llu>; rel=\"next\"", route,
                 (long long)json_integer_value(json_object_get(last, "id")), at_arg, (unsigned long long)limit);
        http_reply_header(req, "Link", link);
    }
    return http_reply_json(req, 200, arr);
}

/* GET /api/v1/tasks — the caller's own, newest first. */
static int h_list(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    uint64_t owner = http_req_user(req)->id;
    return list_page(req, "/api/v1/tasks", &owner, err);
}

/* GET /api/v1/admin/tasks — everyone's, newest first. */
static int h_admin_list(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    return list_page(req, "/api/v1/admin/tasks", NULL, err);
}

const kroute task_routes[] = {
    {"GET", "/api/v1/tasks", MB_ROLE_USER, h_list, NULL},
    {"GET", "/api/v1/tasks/{id}", MB_ROLE_USER, h_get, NULL},
    {"POST", "/api/v1/tasks/{id}/cancel", MB_ROLE_USER, h_cancel, NULL},
    {"GET", "/api/v1/admin/tasks", MB_ROLE_ADMIN, h_admin_list, NULL},
    {NULL},
};
