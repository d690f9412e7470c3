/*
 * health.c — the kernel's own small routes about the server itself: whether it is up
 * (GET /api/v1/health), which features a signed-in user may see (GET /api/v1/features), and
 * what an administrator is told about it (the same health call with an admin credential, and
 * GET /api/v1/admin/status, what mbytectl status prints).
 *
 * Who learns what: anyone may ask whether the server is up, and nothing more, since module
 * names and versions tell an attacker which code to aim at. Users learn which features are
 * on (module names, without versions or states) so the page shows only what works;
 * administrators see everything.
 * Threads: HTTP workers; everything read here is modmgr's (locked there) or immutable.
 */
#include "kernel.h"
#include <string.h>

/* GET /api/v1/health — public: {"status":"ok"}; an admin also gets the version and modules. */
static int h_health(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    const mb_user *u = http_req_user(req);
    if (!u || u->role < MB_ROLE_ADMIN)
        return http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
    return http_reply_json(req, 200,
                           json_pack("{s:s, s:s, s:o}", "status", "ok", "version", MBYTE_VERSION, "modules",
                                     modmgr_list()));
}

/* GET /api/v1/features — user: {"features": [names of the active modules]}, sorted. */
static int h_features(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    json_t *all = modmgr_list(), *m, *on = json_array();
    size_t i;
    json_array_foreach(all, i, m)
    {
        const char *st = json_string_value(json_object_get(m, "state"));
        if (st && !strcmp(st, "active"))
            json_array_append(on, json_object_get(m, "name"));
    }
    json_decref(all);
    /* modmgr lists live copies first, then the available ones: sort so the answer reads
     * the same whatever was loaded when. */
    size_t n = json_array_size(on);
    for (size_t a = 1; a < n; a++)
        for (size_t k = a; k > 0; k--) {
            json_t *x = json_array_get(on, k - 1), *y = json_array_get(on, k);
            if (strcmp(json_string_value(x), json_string_value(y)) <= 0)
                break;
            json_incref(x);
            json_array_set(on, k - 1, y);
            json_array_set_new(on, k, x);
        }
    return http_reply_json(req, 200, json_pack("{s:o}", "features", on));
}

/* GET /api/v1/admin/status — admin: what mbytectl status prints. */
static int h_status(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    return http_reply_json(req, 200,
                           json_pack("{s:s, s:s, s:{s:i, s:i}, s:s, s:s, s:o}", "status", "ok", "version",
                                     MBYTE_VERSION, "abi", "major", MB_ABI_MAJOR, "minor", MB_ABI_MINOR, "listen",
                                     g_cfg->listen_host, "data_dir", g_cfg->data_dir, "modules", modmgr_list()));
}

int health_routes_init(mb_err *err)
{
    int rc;
    if ((rc = http_route_add(NULL, "GET", "/api/v1/health", MB_ROLE_NONE, h_health, NULL, err)) ||
        (rc = http_route_add(NULL, "GET", "/api/v1/features", MB_ROLE_USER, h_features, NULL, err)) ||
        (rc = http_route_add(NULL, "GET", "/api/v1/admin/status", MB_ROLE_ADMIN, h_status, NULL, err)))
        return rc;
    return 0;
}
