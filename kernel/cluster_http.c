/*
 * cluster_http.c — GET /api/v1/admin/cluster (docs/api.md): what this node knows of the
 * cluster (cluster.c's last view: the nodes up in etcd, the leader, and the stores, an empty
 * list until store placement exists). Without cluster mode it is 404 "not in cluster mode".
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

const kroute cluster_routes[] = {
    {"GET", "/api/v1/admin/cluster", MB_ROLE_ADMIN, h_cluster, NULL},
    {NULL},
};
