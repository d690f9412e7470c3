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
    json_object_set_new(v, "collector", cluster_gc_view());
    json_object_set_new(v, "old_copies", cluster_stale_view());
    return http_reply_json(req, 200, v);
}

/* POST /api/v1/admin/cluster/stores/{sid}/move {"to"}: on the node keeping the store (any other node
 * forwards it there, cluster_fwd.c), a task moves it (cluster_place.c). */
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

/* GET /api/v1/cluster/usage[?store=SID]: the caller's usage in the stores this node keeps (or in
 * that one store, if this node keeps it): what another node adds up for the caller's quota
 * (cluster_ops.c). Alone: the caller's usage. */
static int h_usage(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    const char *s = http_req_query(req, "store");
    uint64_t sid = 0;
    json_t *out, *rec = NULL;
    if (s && (!parse_u64(s, &sid) || !sid))
        return err_set(err, MB_EINVAL, "store: a store id");
    if (sid && (cluster_store_elsewhere(sid) || !(rec = cluster_store_record(sid)) ||
                (uint64_t)jint(rec, "owner") != http_req_user(req)->id)) {
        json_decref(rec);
        return err_set(err, MB_ENOENT, "no store %llu of yours is kept by this node", (unsigned long long)sid);
    }
    json_decref(rec);
    int rc = stores_usage_get(sid, http_req_user(req)->id, &out, err);
    return rc ? rc : http_reply_json(req, 200, out);
}

const kroute cluster_routes[] = {
    {"GET", "/api/v1/cluster/usage", MB_ROLE_USER, h_usage, NULL},
    {"GET", "/api/v1/admin/cluster", MB_ROLE_ADMIN, h_cluster, NULL},
    {"POST", "/api/v1/admin/cluster/stores/{sid}/move", MB_ROLE_ADMIN, h_move, NULL},
    {NULL},
};
