/*
 * cluster_http.c — GET /api/v1/admin/cluster (docs/api.md): what this node knows of the
 * cluster (cluster.c's last view: the nodes up in etcd, the leader, and every store's placement),
 * and POST .../stores/{sid}/move. Without cluster mode both are 404 "not in cluster mode".
 * Threads: HTTP workers; cluster_view copies under cluster.c's lock.
 */
#include "kernel.h"

static int h_cluster(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    json_t *v = cluster_view();
    if (!v)
        return err_set(err, MB_ENOENT, "not in cluster mode: this server runs alone (no cluster in mbyte.yaml)");
    return http_reply_json(req, 200, v);
}

/* POST /api/v1/admin/cluster/stores/{sid}/move {"to"}: on the node keeping the store (any other node
 * forwards it there, cluster_fwd.c), a task moves it (cluster_repl.c). */
static int h_move(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    uint64_t sid, task;
    const json_t *body = http_req_json(req, err);
    if (!body)
        return err->code;
    const char *to = jstr(body, "to");
    if (!cluster_enabled())
        return err_set(err, MB_ENOENT, "not in cluster mode: this server runs alone (no cluster in mbyte.yaml)");
    if (!parse_u64(http_req_param(req, "sid"), &sid))
        return err_set(err, MB_EINVAL, "the store id must be a number");
    if (!*to)
        return err_set(err, MB_EINVAL, "say which node to move the store to: {\"to\": \"<node>\"}");
    int rc = cluster_move_submit(sid, to, http_req_user(req)->id, &task, err);
    return rc ? rc : http_reply_json(req, 202, json_pack("{s:I}", "task", (json_int_t)task));
}

const kroute cluster_routes[] = {
    {"GET", "/api/v1/admin/cluster", MB_ROLE_ADMIN, h_cluster, NULL},
    {"POST", "/api/v1/admin/cluster/stores/{sid}/move", MB_ROLE_ADMIN, h_move, NULL},
    {NULL},
};
