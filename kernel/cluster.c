/*
 * cluster.c — cluster mode, first slice (issue 23, docs/cluster.md): this node's membership
 * and the cluster-wide leadership, kept in etcd (etcd.c). Without `cluster` in mbyte.yaml
 * nothing here runs: no thread, no connection.
 *
 * Membership: at start the node takes a lease (cluster.lease_ttl) and creates
 * /mbyte/nodes/<name> under it with a create-if-absent transaction, so a second process with a
 * live node's name refuses to start (cluster_start fails with the holder's address). A thread
 * keeps the lease alive (every third of its TTL) and rewrites the record with the data
 * directory's capacity and free space each time; a node whose process dies disappears when
 * its lease expires, and a clean stop revokes the lease so it disappears at once.
 *
 * Leadership: the same thread reads /mbyte/leader every tick and, when it is absent, creates
 * it bound to its lease (create-if-absent: whoever creates it leads until its lease ends), so a
 * new leader takes over about a tick after etcd expires the old one's lease. Fencing by time: a node leads only until
 * lease_ttl after the moment it SENT its last successful keepalive (the monotonic clock),
 * because etcd may expire the lease any time after that. cluster_is_leader() reads that
 * deadline itself, so a node that was stopped (SIGSTOP) or cut off from etcd stops claiming
 * at once, before its thread has noticed anything. Gaining and losing leadership are told on
 * the hook bus as `cluster.leader` ({"node","state":"gained"|"lost"}): to the kernel's live
 * listeners (hook_tell) and to modules' observers (hook_emit).
 *
 * The settings are read once, at start (a reload that changes them changes nothing here).
 * cluster_register takes the lease and the name first thing (before anything of this node
 * reaches etcd: a second process with a live name leaves no trace); cluster_start starts the
 * thread once the modules are loaded, so their observers hear the first cluster.leader.
 * Threads: cluster_register/start/stop on the loop thread at start and stop; the membership
 * thread owns the etcd client, the lease and the claim; any thread calls cluster_is_leader
 * (atomics) and cluster_view (the last view, under view_mu).
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define NODES_PREFIX "/mbyte/nodes/"
#define LEADER_KEY "/mbyte/leader"

static struct {
    bool on;
    etcd *e;
    char node[64], key[128], advertise[300];
    char *data_dir;  /* a copy: a reload may replace g_cfg */
    int ttl;         /* seconds */
    _Atomic int repl_port;   /* the replica side's port (cluster_repl.c), in the record as "replication" */
    _Atomic int64_t kept;    /* bytes of the stores this node keeps (cluster_place.c), in the record as "kept" */
    _Atomic uint64_t number; /* this node's number in the cluster (cluster_kv.c), in the record as "number" */
    atomic_bool republish;   /* write the record at the next turn, not at the next keepalive */
    int64_t started; /* wall clock, for the record */
    pthread_t th;
    pthread_mutex_t mu; /* stop and cv */
    pthread_cond_t cv;
    bool stop;
    /* membership thread only */
    int64_t lease, valid_until, next_keepalive;
    bool registered, name_taken;
    atomic_bool etcd_down; /* written by the thread, read by cluster_view */
    /* any thread */
    atomic_bool claimed;   /* this node created /mbyte/leader under its lease */
    _Atomic int64_t fence; /* ... and may say so until this monotonic ms */
    pthread_mutex_t view_mu;
    json_t *nodes;  /* view_mu: [{"name","address","state","capacity","free",...}] */
    char leader[64]; /* view_mu: the leader etcd named last ("" none) */
} cl = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .view_mu = PTHREAD_MUTEX_INITIALIZER};

bool cluster_enabled(void) { return cl.on; }

bool cluster_is_leader(void) { return atomic_load(&cl.claimed) && now_mono_ms() < atomic_load(&cl.fence); }

/* This node's record: what the others see of it. */
static char *node_record(void)
{
    struct statvfs vs;
    json_int_t cap = 0, avail = 0;
    if (statvfs(cl.data_dir, &vs) == 0) {
        cap = (json_int_t)vs.f_blocks * (json_int_t)vs.f_frsize;
        avail = (json_int_t)vs.f_bavail * (json_int_t)vs.f_frsize;
    }
    json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:i, s:I, s:I}", "name", cl.node, "address", cl.advertise,
                          "started", (json_int_t)cl.started, "version", MBYTE_VERSION, "capacity", cap, "free", avail,
                          "replication", atomic_load(&cl.repl_port), "number", (json_int_t)atomic_load(&cl.number),
                          "kept", (json_int_t)atomic_load(&cl.kept));
    char *s = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    return s;
}

static void etcd_trouble(const char *what, const mb_err *err)
{
    if (!atomic_exchange(&cl.etcd_down, true))
        log_warn("cluster: %s: %s (this node keeps serving; it retries)", what, err->msg);
}

static void etcd_fine(void)
{
    if (atomic_exchange(&cl.etcd_down, false))
        log_info("cluster: etcd answers again");
}

/* Create this node's record under the lease. 0 when it is ours (now or already: a retried
 * create that had landed), MB_EEXIST with the holder in err when a live node has the name. */
static int node_register(mb_err *err)
{
    char *rec = node_record();
    etcd_answer a;
    int rc = etcd_create(cl.e, cl.key, rec, cl.lease, &a, err);
    free(rec);
    if (rc)
        return rc;
    if (!a.succeeded && !(a.nkvs && a.kvs[0].lease == cl.lease)) {
        json_t *h = a.nkvs ? json_loads(a.kvs[0].value, 0, NULL) : NULL;
        rc = err_set(err, MB_EEXIST,
                     "cluster.node '%s' is already registered in etcd by a running node (address %s): give this node "
                     "another name, or wait until that node has stopped for lease_ttl seconds",
                     cl.node, h && *jstr(h, "address") ? jstr(h, "address") : "unknown");
        json_decref(h);
    }
    etcd_answer_free(&a);
    cl.registered = rc == 0;
    return rc;
}

static void tell_leader(const char *state)
{
    json_t *p = json_pack("{s:s, s:s}", "node", cl.node, "state", state);
    hook_tell("cluster.leader", p);
    mb_err err;
    if (hook_emit("cluster.leader", p, &err)) /* takes p */
        log_warn("cluster: the cluster.leader event was not recorded: %s", err.msg);
}

static void set_claim(bool now, const char *why)
{
    bool was = atomic_load(&cl.claimed);
    if (now) {
        atomic_store(&cl.fence, cl.valid_until); /* the deadline first, then the claim */
        atomic_store(&cl.claimed, true);
    } else
        atomic_store(&cl.claimed, false);
    if (was == now)
        return;
    if (now)
        log_info("cluster: node %s is now the leader", cl.node);
    else
        log_warn("cluster: node %s is no longer the leader: %s", cl.node, why);
    tell_leader(now ? "gained" : "lost");
}

/* A new lease and this node's record under it (the old lease is gone: its record with it). */
static int lease_take(mb_err *err)
{
    int64_t sent = now_mono_ms(), granted;
    int rc = etcd_lease_grant(cl.e, cl.ttl, &cl.lease, &granted, err);
    if (rc) {
        cl.lease = 0;
        return rc;
    }
    cl.valid_until = sent + (int64_t)cl.ttl * 1000;
    cl.next_keepalive = sent + (int64_t)cl.ttl * 1000 / 3;
    cl.registered = false;
    return node_register(err);
}

static void keepalive(void)
{
    mb_err err;
    int64_t sent = now_mono_ms(), ttl;
    if (etcd_lease_keepalive(cl.e, cl.lease, &ttl, &err)) {
        etcd_trouble("keeping the lease alive", &err);
        cl.next_keepalive = sent + 300;
        return;
    }
    etcd_fine();
    if (ttl <= 0) {
        log_warn("cluster: etcd no longer has this node's lease (it expired): registering again");
        set_claim(false, "etcd no longer has its lease");
        cl.lease = 0;
        cl.registered = false;
        return;
    }
    cl.valid_until = sent + (int64_t)cl.ttl * 1000;
    cl.next_keepalive = sent + (int64_t)cl.ttl * 1000 / 3;
    if (atomic_load(&cl.claimed))
        atomic_store(&cl.fence, cl.valid_until);
    char *rec = node_record(); /* capacity and free, fresh */
    if (etcd_put(cl.e, cl.key, rec, cl.lease, &err))
        etcd_trouble("refreshing this node's record", &err);
    free(rec);
}

/* Learn who leads; ask for the leadership when nobody does. A read first: a transaction goes
 * through etcd's log (a disk write on every member) even when its compare fails, and this runs
 * twice a second on every node. */
static void campaign(void)
{
    mb_err err;
    etcd_answer a;
    int rc = etcd_range(cl.e, LEADER_KEY, false, &a, &err);
    if (!rc && a.nkvs == 0) {
        etcd_answer_free(&a);
        rc = etcd_create(cl.e, LEADER_KEY, cl.node, cl.lease, &a, &err);
    }
    if (rc) {
        etcd_trouble("asking for the leadership", &err);
        return;
    }
    bool mine = a.succeeded || (a.nkvs && a.kvs[0].lease == cl.lease);
    pthread_mutex_lock(&cl.view_mu);
    snprintf(cl.leader, sizeof cl.leader, "%s", mine ? cl.node : a.nkvs ? a.kvs[0].value : "");
    pthread_mutex_unlock(&cl.view_mu);
    etcd_answer_free(&a);
    set_claim(mine, "another node holds /mbyte/leader");
}

static void refresh_nodes(void)
{
    mb_err err;
    etcd_answer a;
    if (etcd_range(cl.e, NODES_PREFIX, true, &a, &err)) {
        etcd_trouble("reading the node list", &err);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < a.nkvs; i++) {
        json_t *r = json_loads(a.kvs[i].value, 0, NULL);
        if (json_is_object(r) && json_is_string(json_object_get(r, "name")))
            json_array_append_new(
                list, json_pack("{s:O, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:I}", "name", json_object_get(r, "name"),
                                "address", jstr(r, "address"), "state", "up", "capacity", jint(r, "capacity"), "free",
                                jint(r, "free"), "started", jint(r, "started"), "version", jstr(r, "version"),
                                "replication", jint(r, "replication"), "number", jint(r, "number"), "kept",
                                jint(r, "kept")));
        json_decref(r);
    }
    etcd_answer_free(&a);
    pthread_mutex_lock(&cl.view_mu);
    json_decref(cl.nodes);
    cl.nodes = list;
    pthread_mutex_unlock(&cl.view_mu);
}

/* One turn: the lease, the record, the leadership, the view. */
static void turn(void)
{
    mb_err err;
    int64_t now = now_mono_ms();
    if (atomic_load(&cl.claimed) && now >= cl.valid_until)
        set_claim(false, "its lease may have expired (no keepalive answered for lease_ttl)");
    if (cl.lease && (now >= cl.next_keepalive || atomic_exchange(&cl.republish, false)))
        keepalive();
    if (!cl.lease || !cl.registered) {
        int rc = cl.lease ? node_register(&err) : lease_take(&err);
        if (rc == MB_EEXIST && !cl.name_taken) /* once, not every turn */
            log_error("cluster: %s", err.msg);
        cl.name_taken = rc == MB_EEXIST;
        if (rc && rc != MB_EEXIST)
            etcd_trouble("registering this node", &err);
        if (rc)
            return;
        log_info("cluster: node %s registered again (lease %lld)", cl.node, (long long)cl.lease);
    }
    if (now_mono_ms() < cl.valid_until)
        campaign();
    refresh_nodes();
}

static void *run(void *arg)
{
    (void)arg;
    int64_t tick = (int64_t)cl.ttl * 1000 / 6 < 500 ? (int64_t)cl.ttl * 1000 / 6 : 500;
    pthread_mutex_lock(&cl.mu);
    while (!cl.stop) {
        pthread_mutex_unlock(&cl.mu);
        turn();
        struct timespec ts;
        wait_deadline(&ts, CLOCK_REALTIME, tick);
        pthread_mutex_lock(&cl.mu);
        if (!cl.stop)
            pthread_cond_timedwait(&cl.cv, &cl.mu, &ts);
    }
    pthread_mutex_unlock(&cl.mu);
    return NULL;
}

int cluster_register(mb_err *err)
{
    if (!g_cfg->cluster_etcd)
        return 0;
    snprintf(cl.node, sizeof cl.node, "%s", g_cfg->cluster_node);
    snprintf(cl.key, sizeof cl.key, NODES_PREFIX "%s", cl.node);
    snprintf(cl.advertise, sizeof cl.advertise, "%s", g_cfg->cluster_advertise);
    free(cl.data_dir);
    cl.data_dir = xstrdup(g_cfg->data_dir);
    cl.ttl = g_cfg->cluster_lease_ttl;
    cl.started = now_wall();
    /* A call may take a third of the lease: the keepalive after a slow one still comes in time. */
    cl.e = etcd_new(g_cfg->cluster_etcd, cl.ttl * 1000 / 3 > 1000 ? cl.ttl * 1000 / 3 : 1000);
    int rc = lease_take(err);
    if (rc && rc != MB_EEXIST) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        rc = err_set(err, rc, "cluster: cannot register node %s in etcd (%s): %s", cl.node, g_cfg->cluster_etcd[0],
                     why);
    }
    if (rc) {
        if (cl.lease)
            etcd_lease_revoke(cl.e, cl.lease, &(mb_err){0});
        etcd_free(cl.e);
        cl.e = NULL;
        free(cl.data_dir);
        cl.data_dir = NULL;
        return rc;
    }
    log_info("cluster: node %s registered in etcd as %s (lease %lld, %d s)", cl.node, g_cfg->cluster_advertise,
             (long long)cl.lease, cl.ttl);
    return 0;
}

int cluster_start(mb_err *err)
{
    if (!cl.e)
        return 0;
    cl.nodes = json_array();
    cl.on = true;
    if (pthread_create(&cl.th, NULL, run, NULL)) {
        cl.on = false;
        return err_set(err, MB_EINTERNAL, "cluster: cannot start the membership thread");
    }
    pthread_setname_np(cl.th, "mb-cluster"); /* ps, top, and the tests: present only in cluster mode */
    return 0;
}

void cluster_stop(void)
{
    if (!cl.e) /* not registered */
        return;
    if (cl.on) {
        pthread_mutex_lock(&cl.mu);
        cl.stop = true;
        pthread_cond_signal(&cl.cv);
        pthread_mutex_unlock(&cl.mu);
        pthread_join(cl.th, NULL);
    }
    atomic_store(&cl.claimed, false);
    /* The record and the leadership go with the lease: the others see it at once. */
    mb_err err;
    if (cl.lease && etcd_lease_revoke(cl.e, cl.lease, &err))
        log_warn("cluster: the lease was not revoked (%s): this node disappears when it expires", err.msg);
    etcd_free(cl.e);
    cl.e = NULL;
    json_decref(cl.nodes);
    cl.nodes = NULL;
    free(cl.data_dir);
    cl.data_dir = NULL;
    cl.on = false;
}

const char *cluster_node_name(void) { return cl.node; }

bool cluster_node_address(const char *node, char *out, size_t n)
{
    bool found = false;
    pthread_mutex_lock(&cl.view_mu);
    size_t i;
    json_t *e;
    json_array_foreach(cl.nodes, i, e) if (!strcmp(jstr(e, "name"), node) && *jstr(e, "address"))
    {
        snprintf(out, n, "%s", jstr(e, "address"));
        found = true;
        break;
    }
    pthread_mutex_unlock(&cl.view_mu);
    return found;
}

void cluster_set_replication_port(int port)
{
    atomic_store(&cl.repl_port, port);
    atomic_store(&cl.republish, true); /* the others may choose this node as a replica now */
    pthread_mutex_lock(&cl.mu);
    pthread_cond_signal(&cl.cv);
    pthread_mutex_unlock(&cl.mu);
}

void cluster_set_kept(int64_t bytes) { atomic_store(&cl.kept, bytes); }

void cluster_set_number(uint64_t number)
{
    atomic_store(&cl.number, number);
    atomic_store(&cl.republish, true);
}

uint64_t cluster_id_base(void) { return atomic_load(&cl.number) << CLUSTER_ID_BITS; }

bool cluster_node_numbered(uint64_t number, char *out, size_t n)
{
    bool found = false;
    pthread_mutex_lock(&cl.view_mu);
    size_t i;
    json_t *e;
    json_array_foreach(cl.nodes, i, e) if (number && (uint64_t)jint(e, "number") == number)
    {
        snprintf(out, n, "%s", jstr(e, "name"));
        found = true;
        break;
    }
    pthread_mutex_unlock(&cl.view_mu);
    return found;
}

bool cluster_node_replication(const char *node, char *out, size_t n)
{
    char addr[300];
    json_int_t port = 0;
    pthread_mutex_lock(&cl.view_mu);
    size_t i;
    json_t *e;
    addr[0] = 0;
    json_array_foreach(cl.nodes, i, e) if (!strcmp(jstr(e, "name"), node))
    {
        snprintf(addr, sizeof addr, "%s", jstr(e, "address"));
        port = jint(e, "replication");
        break;
    }
    pthread_mutex_unlock(&cl.view_mu);
    char *colon = strrchr(addr, ':');
    if (!port || !colon)
        return false;
    *colon = 0; /* the advertised host ("[v6]" stays bracketed), the replication port */
    snprintf(out, n, "%s:%lld", addr, (long long)port);
    return true;
}

bool cluster_pick_node(const char *except, char *out, size_t n)
{
    json_int_t best = -1;
    pthread_mutex_lock(&cl.view_mu);
    size_t i;
    json_t *e;
    json_array_foreach(cl.nodes, i, e)
    {
        const char *name = jstr(e, "name");
        if (strcmp(name, cl.node) && (!except || strcmp(name, except)) && jint(e, "replication") > 0 &&
            jint(e, "free") > best) {
            best = jint(e, "free");
            snprintf(out, n, "%s", name);
        }
    }
    pthread_mutex_unlock(&cl.view_mu);
    return best >= 0;
}

json_t *cluster_view(void)
{
    if (!cl.on)
        return NULL;
    bool lead = cluster_is_leader();
    pthread_mutex_lock(&cl.view_mu);
    /* This node names itself leader only while it may (fencing); another's name as etcd said. */
    const char *leader = lead ? cl.node : cl.leader[0] && strcmp(cl.leader, cl.node) ? cl.leader : NULL;
    json_t *v = json_pack("{s:s, s:s?, s:o, s:o, s:s}", "node", cl.node, "leader", leader, "nodes",
                          json_deep_copy(cl.nodes), "stores", cluster_kv_stores(), "etcd",
                          atomic_load(&cl.etcd_down) ? "unreachable" : "ok");
    pthread_mutex_unlock(&cl.view_mu);
    json_t *acc = cluster_kv_view();
    if (acc)
        json_object_set_new(v, "accounts", acc);
    return v;
}
