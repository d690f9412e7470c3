/*
 * task_http.c — the HTTP side of the task queue (docs/api.md "Tasks"): a user's own tasks,
 * one task, its cancel, and the admin's list of everyone's. The queue itself (records,
 * workers, cancel) is task.c's; this file checks who may see what and shapes the answers.
 * main.c registers task_routes.
 *
 * Threads: libmicrohttpd's; nothing of its own is shared.
 */
#include "kernel.h"
#include <stdio.h>

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

/* A page of a task list: ?limit=N (1-1000, default 100) newest first, ?before=ID for the next
 * page, which a Link header names (rel="next") while older tasks remain. */
static int list_page(mb_req *req, const char *route, const uint64_t *owner, mb_err *err)
{
    uint64_t limit = LIST_DEFAULT, before = 0;
    const char *l = http_req_query(req, "limit"), *b = http_req_query(req, "before");
    if (l && (!parse_u64(l, &limit) || limit < 1 || limit > LIST_MAX))
        return err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", LIST_MAX);
    if (b && (!parse_u64(b, &before) || before < 1))
        return err_set(err, MB_EINVAL, "before: a task id");
    bool more;
    json_t *arr = task_list(owner, (size_t)limit, before, &more);
    size_t n = json_array_size(arr);
    if (more && n) {
        char link[200];
        snprintf(link, sizeof link, "<%s?before=%lld&limit=%llu>; rel=\"next\"", route,
                 (long long)json_integer_value(json_object_get(json_array_get(arr, n - 1), "id")),
                 (unsigned long long)limit);
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
