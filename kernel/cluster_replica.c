/*
 * cluster_replica.c — the replica's side of a store's replication (issue 23, docs/cluster.md
 * "Replicas and failover"; the owner's side is cluster_repl.c).
 *
 * The replication port: the owner's changes and the chunks they name arrive on a port of this
 * node's own, served by a thread per connection (on the HTTP door's thread pool a request could
 * wait behind writers that wait for their own replicas, and two nodes each waiting for the other
 * there would wait until a timeout). Every request is signed with the cluster's key.
 *
 * Applying: each store's changes are applied when this node is the replica of that epoch (or the
 * store is new and its placement still on its way), all of one request as one transaction:
 * chunk refcounts follow the version records written and deleted (this node's own counts), usage
 * records come as they are, this node's id counters are raised to the owner's. Any other epoch, or a
 * store this node now keeps, is refused (409): the fence that keeps a stale owner from
 * acknowledging anything.
 *
 * Filling: a new replica is wiped of the store and filled from the owner's snapshot while the
 * owner's live changes already arrive; a key a live change wrote is not overwritten by the
 * snapshot's older value.
 *
 * Takeover: a store whose replica is this node and whose owner's lease ended (gone from the
 * view, and not registered in etcd) is taken over with a compare-and-swap: this node keeps it at
 * epoch + 1, without a replica; the store's usage joins its owner's usage here.
 *
 * Threads: the replication port's connection threads, the placement thread (takeovers).
 * apply_mu: a replicated change's check and write, a fill's steps and a takeover, one at a time.
 */
#include "cluster_repl.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    atomic_bool on;               /* takes replicas (replica_start) */
    char node[64];
    pthread_mutex_t apply_mu;
    json_t *taken;                /* apply_mu: "<sid16>" -> the epoch this node took the store over at */
    json_t *filling;              /* apply_mu: "<sid16>" -> {"from": owner, "touched": {key: true}} */
    pthread_mutex_t stale_mu;
    json_t *stale;                /* stale_mu: "<sid16>" -> {"epoch", "since" (wall s)}: old copies here */
    struct MHD_Daemon *daemon;
    int port;
} rs = {.apply_mu = PTHREAD_MUTEX_INITIALIZER, .stale_mu = PTHREAD_MUTEX_INITIALIZER};

/* ---------------------------------------------------------------- takeover --- */

/* The store's usage joins its owner's usage on this node (the user's usage is each node's sum). */
static void usage_joins(uint64_t sid, uint64_t owner)
{
    char key[24];
    id_key(key, sizeof key, "us", sid);
    txn_usage_t u;
    txn_usage_read(key, &u);
    id_key(key, sizeof key, "uu", owner);
    txn t;
    txn_begin(&t, NULL);
    txn_usage_add(t.b, key, &u);
    mb_err err;
    if (txn_end(&t, 0, &err, "the usage of a store taken over"))
        log_warn("cluster: %s", err.msg);
}

static void take_over(uint64_t sid, const json_t *rec)
{
    /* still kept by the dead owner, this node its replica (not filling), this epoch */
    struct repl_swap t = {.node = jstr(rec, "node"), .replica = rs.node, .epoch = (uint64_t)jint(rec, "epoch"),
                     .not_filling = true, .to_node = rs.node, .to_replica = "", .step = 1};
    char hex[17];
    key_u64(hex, sid);
    mb_err err;
    json_t *now = NULL;
    bool up = true;
    if (cluster_node_registered(t.node, &up, &err) || up)
        return; /* the view was behind (the owner registered again), or etcd cannot say */
    pthread_mutex_lock(&rs.apply_mu); /* no replicated change of it is applied meanwhile */
    int rc = cluster_store_cas(sid, repl_swap_change, &t, &now, &err);
    if (!rc)
        json_object_set_new(rs.taken, hex, json_integer(jint(now, "epoch")));
    pthread_mutex_unlock(&rs.apply_mu);
    if (rc) {
        if (rc != MB_ECONFLICT)
            log_warn("cluster: store %llu could not be taken over from node %s: %s", (unsigned long long)sid, t.node,
                     err.msg);
        return;
    }
    usage_joins(sid, (uint64_t)jint(now, "owner"));
    log_info("cluster: took store %llu over from node %s, which is down (epoch %lld)", (unsigned long long)sid,
             t.node, (long long)jint(now, "epoch"));
    json_decref(now);
}

static int wipe(uint64_t sid, bool records, mb_err *err);

/* Seconds an old copy waits before it is removed: the placement must have named two other nodes for
 * that long (a view a moment behind etcd never costs a copy this node is about to keep). */
static int64_t stale_wait(void) { return g_cfg->cluster_lease_ttl * 2 > 10 ? g_cfg->cluster_lease_ttl * 2 : 10; }

/* A copy of store sid here while its placement r names two other nodes: this node kept it before
 * a move or a takeover, or was its replica before being dropped. Nothing reads it (ns.c refuses a
 * store kept elsewhere), and its references hold chunks on this disk and on shared backends. Once
 * the placement has said so at one epoch for stale_wait() seconds, the copy goes (its chunks then
 * go with the collector). The modules' records of it stay: what a client set through this node
 * while another kept the store (WebDAV's dead properties by store name) lives nowhere else. */
static void stale_copy(uint64_t sid, const json_t *r, bool neither)
{
    char hex[17];
    key_u64(hex, sid);
    json_int_t epoch = jint(r, "epoch"), now = (json_int_t)now_wall();
    pthread_mutex_lock(&rs.stale_mu);
    json_t *seen = json_object_get(rs.stale, hex);
    bool fresh = !seen || jint(seen, "epoch") != epoch;
    if (!neither || (!fresh && !json_is_true(json_object_get(seen, "here")))) { /* one look per epoch */
        if (!neither)
            json_object_del(rs.stale, hex);
        pthread_mutex_unlock(&rs.stale_mu);
        return;
    }
    pthread_mutex_unlock(&rs.stale_mu);
    if (fresh) {
        char key[24], *v = NULL;
        id_key(key, sizeof key, "s", sid);
        bool here = db_get(key, strlen(key), &v, NULL) == 0;
        free(v);
        pthread_mutex_lock(&rs.stale_mu);
        json_object_set_new(rs.stale, hex, json_pack("{s:I, s:I, s:b}", "epoch", epoch, "since", now, "here", here));
        pthread_mutex_unlock(&rs.stale_mu);
        return;
    }
    bool due = now - jint(seen, "since") >= stale_wait();
    pthread_mutex_unlock(&rs.stale_mu);
    if (!due)
        return;
    mb_err err = {0};
    int rc = 1; /* not now: the placement changed, or etcd cannot confirm it */
    char key[24];
    id_key(key, sizeof key, "sp", sid);
    /* etcd's placement, not this node's copy of it, which a watch that fell behind could leave
     * naming two other nodes after a fill made this node the replica */
    json_t *now_rec = cluster_kv_read(key);
    pthread_mutex_lock(&rs.apply_mu); /* no fill begins meanwhile (one that began is in rs.filling) */
    json_t *taken = json_object_get(rs.taken, hex);
    if (now_rec && jint(now_rec, "epoch") == epoch && strcmp(jstr(now_rec, "node"), rs.node) &&
        strcmp(jstr(now_rec, "replica"), rs.node) && !json_object_get(rs.filling, hex) &&
        (!taken || json_integer_value(taken) < epoch))
        rc = wipe(sid, false, &err);
    pthread_mutex_unlock(&rs.apply_mu);
    if (!rc)
        log_info("cluster: this node's old copy of store %llu is removed (node %s keeps it, epoch %lld)",
                 (unsigned long long)sid, jstr(now_rec, "node"), (long long)epoch);
    else if (rc < 0)
        log_warn("cluster: this node's old copy of store %llu could not be removed: %s", (unsigned long long)sid,
                 err.msg);
    json_decref(now_rec);
    pthread_mutex_lock(&rs.stale_mu);
    if ((seen = json_object_get(rs.stale, hex)))
        json_object_set_new(seen, rc ? "since" : "here", rc ? json_integer(now) : json_false()); /* failed: later */
    pthread_mutex_unlock(&rs.stale_mu);
}

/* The placement thread's look at one placement this node does not keep: a store this node is the
 * replica of whose owner is gone is taken over; an old copy of a store two other nodes hold goes. */
void replica_consider(uint64_t sid, const json_t *r)
{
    char addr[300];
    bool replica = !strcmp(jstr(r, "replica"), rs.node);
    if (replica && strcmp(jstr(r, "node"), rs.node) && !json_is_true(json_object_get(r, "filling")) &&
        !cluster_node_address(jstr(r, "node"), addr, sizeof addr))
        take_over(sid, r);
    stale_copy(sid, r, !replica && strcmp(jstr(r, "node"), rs.node));
}

json_t *cluster_stale_view(void)
{
    json_t *out = json_array();
    const char *hex;
    json_t *e;
    pthread_mutex_lock(&rs.stale_mu);
    json_object_foreach(rs.stale, hex, e)
        if (json_is_true(json_object_get(e, "here")) && cluster_store_elsewhere(strtoull(hex, NULL, 16)))
            json_array_append_new(out, json_pack("{s:I, s:I}", "store", (json_int_t)strtoull(hex, NULL, 16), "removed_at",
                                             jint(e, "since") + stale_wait()));
    pthread_mutex_unlock(&rs.stale_mu);
    return out;
}

/* ------------------------------------------------------------ the replica --- */

/* The replica's side listens on a port of its own (the node record's "replication"), served by a
 * thread per connection: the HTTP door's thread pool may be busy with writers that wait for their
 * own replicas, and two nodes each waiting for the other there would wait for good. */
enum { K_NONE, K_CHANGES, K_CHUNK, K_FILL_BEGIN, K_FILL_DATA, K_FILL_END, K_GC, K_EVENT };

typedef struct inreq {
    db_ops b;
    char node[64], mac[65], path[160];
    long long t;
    int kind;       /* K_* */
    int status;     /* early refusal, answered once the body is read */
    char *detail;
} inreq;

static void in_free(inreq *r)
{
    free(r->b.p);
    free(r->detail);
    free(r);
}

static bool in_signed(const inreq *r)
{
    char want[65];
    long long now = (long long)now_wall();
    return r->t >= now - SIGN_SKEW && r->t <= now + SIGN_SKEW &&
           cluster_mac(want, r->b.p, r->kind != K_CHUNK ? r->b.n : 0, "%s.%lld.%s %s", r->node, r->t,
                       r->kind != K_CHUNK ? "POST" : "PUT", r->path) &&
           !sodium_memcmp(want, r->mac, 64);
}

/* The head's signature (before the body: who, when, what, how long), in constant time. */
static bool head_signed(const inreq *r, const char *method, uint64_t len, const char *got)
{
    char want[65];
    long long now = (long long)now_wall();
    return got && strlen(got) == 64 && r->t >= now - SIGN_SKEW && r->t <= now + SIGN_SKEW &&
           cluster_mac(want, NULL, 0, "%s.%lld.%s %s %llu", r->node, r->t, method, r->path, (unsigned long long)len) &&
           !sodium_memcmp(want, got, 64);
}

/* A problem+json answer (status, detail, extra members) as text. */
static char *problem(int status, const char *detail, json_t *extra)
{
    const char *title = status == 409   ? "Conflict"
                        : status == 401 ? "Unauthorized"
                        : status == 404 ? "Not Found"
                        : status == 413 ? "Content Too Large"
                        : status == 500 ? "Internal Server Error"
                        : status == 503 ? "Service Unavailable"
                                        : "Bad Request";
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", title, "status", status, "detail",
                          detail);
    if (extra)
        json_object_update(p, extra);
    json_decref(extra);
    char *s = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return s;
}

/* PUT .../chunks/{sha256}: a chunk the replica lacked, its bytes checked against the name. */
static int put_chunk(inreq *r, char **answer)
{
    const char *h = r->path + strlen(CHUNK_PATH);
    uint8_t md[32];
    unsigned mdl = 0;
    char hex[65];
    EVP_Digest(r->b.p ? r->b.p : "", r->b.n, md, &mdl, EVP_sha256(), NULL);
    hex_encode(md, 32, hex);
    if (strcmp(h, hex)) {
        *answer = problem(400, "the bytes are not the chunk the path names", NULL);
        return 400;
    }
    mb_err err = {0};
    int rc;
    if (r->b.n <= blob_inline_max()) {
        /* with a record at zero references: the changes naming it may never come (a fill or a
         * change cut off), and an inline chunk is the collector's only through its record */
        txn t;
        txn_begin(&t, NULL);
        blob_put_inline(t.b, hex, r->b.p, r->b.n);
        txn_ref_hold(&t, hex, r->b.n);
        rc = txn_end(&t, 0, &err, "a chunk from another node");
    } else {
        blob_pending_add(hex); /* (blob_put's rule: the collector leaves it alone meanwhile) */
        rc = blob_put(hex, r->b.p, r->b.n, &err);
        blob_pending_drop(hex);
    }
    if (rc) {
        log_warn("cluster: chunk %s from node %s could not be stored: %s", hex, r->node, err.msg);
        *answer = problem(500, "the chunk could not be stored here", NULL);
        return 500;
    }
    return 204;
}

/* May this node apply sender's change of store sid at epoch? NULL, or why not. */
static const char *refuse(uint64_t sid, uint64_t epoch, const char *sender, char *why, size_t n)
{
    char hex[17];
    key_u64(hex, sid);
    if (jint(rs.taken, hex) && (uint64_t)jint(rs.taken, hex) >= epoch) {
        snprintf(why, n, "store %llu is kept by node %s now (epoch %lld)", (unsigned long long)sid, rs.node,
                 (long long)jint(rs.taken, hex));
        return why;
    }
    for (int tries = 0; tries < 2; tries++) {
        json_t *rec = cluster_store_record(sid);
        if (!rec)
            return NULL; /* a store being made: its placement is on its way through etcd */
        const char *node = jstr(rec, "node"), *replica = jstr(rec, "replica");
        uint64_t e = (uint64_t)jint(rec, "epoch");
        bool ok = !strcmp(node, sender) && !strcmp(replica, rs.node) && e == epoch;
        if (!ok)
            snprintf(why, n, "store %llu is at epoch %llu, kept by node %s with replica %s (the change is of epoch %llu "
                     "from node %s)", (unsigned long long)sid, (unsigned long long)e, node, *replica ? replica : "none",
                     (unsigned long long)epoch, sender);
        json_decref(rec);
        if (ok)
            return NULL;
        if (e >= epoch)
            return why;
        char key[20];
        id_key(key, sizeof key, "sp", sid);
        cluster_kv_fetch(key); /* newer in etcd than here? */
    }
    return why;
}

/* The chunks of the version records the frames put that this node lacks: [{"h","n","s"}]. Those
 * it has are held pending (added to `held`) until the change is applied or refused: the collector
 * never deletes one between this look and the refcount the change gives it (blob_pending.c). */
static void lacking(uint64_t sid, const char *ops, size_t len, const json_t *inl, json_t *held, json_t *missing)
{
    size_t off = 0, kl, vl;
    const char *k, *v;
    int op;
    while ((op = db_repl_next(ops, len, &off, &k, &kl, &v, &vl)) > 0) {
        if (op != 'P' || kl < 2 || memcmp(k, "f/", 2))
            continue;
        json_t *rec = json_loadb(v, vl, 0, NULL), *c;
        size_t i;
        json_array_foreach(json_object_get(rec, "chunks"), i, c)
        {
            const char *h = jstr(c, "h");
            if (strlen(h) != 64 || strspn(h, "0123456789abcdef") != 64)
                continue; /* not a chunk name: nothing to look for (and no path to build from it) */
            if (json_object_get(inl, h) || json_object_get(held, h))
                continue; /* put by the frames themselves, or looked at (and asked for) once */
            blob_pending_add(h);
            json_object_set_new(held, h, json_true());
            if (blob_has(h) || json_array_size(missing) >= 1000)
                continue; /* (at most 1,000 named at a time: the owner puts them and asks again) */
            json_array_append_new(missing, json_pack("{s:s, s:I, s:I}", "h", h, "n", jint(c, "n"), "s", (json_int_t)sid));
        }
        json_decref(rec);
    }
}

/* Apply one frame's ops into t: chunk refcounts follow the version records. */
static void apply_ops(txn *t, const char *ops, size_t len, json_t *seen, json_t *mark, const json_t *skip)
{
    size_t off = 0, kl, vl;
    const char *k, *v;
    int op;
    while ((op = db_repl_next(ops, len, &off, &k, &kl, &v, &vl)) > 0) {
        char key[512];
        snprintf(key, sizeof key, "%.*s", (int)(kl < sizeof key - 1 ? kl : sizeof key - 1), k);
        if (skip && json_object_get(skip, key))
            continue; /* a fill's older value of a key a live change wrote */
        if (mark)
            json_object_set_new(mark, key, json_true());
        if (kl >= 2 && !memcmp(k, "f/", 2)) {
            json_t *old = json_incref(json_object_get(seen, key));
            if (!old && db_get_json(key, &old))
                old = NULL;
            if (json_is_object(old))
                txn_ref_chunks(t, json_object_get(old, "chunks"), -1);
            json_decref(old);
            json_t *now = op == 'P' ? json_loadb(v, vl, 0, NULL) : NULL;
            if (json_is_object(now))
                txn_ref_chunks(t, json_object_get(now, "chunks"), +1);
            json_object_set_new(seen, key, now ? now : json_null());
        }
        if (op == 'P' && ((kl == 67 && !memcmp(k, "ci/", 3)) || (kl == BODY_KEY && !memcmp(k, "cb/", 3)))) {
            char h[65];
            memcpy(h, k + kl - 64, 64);
            h[64] = 0;
            if (blob_inline_has(h))
                continue; /* stored here already (sent as a chunk): a second body would be nobody's */
        }
        if (op == 'P')
            db_batch_put(t->b, k, kl, v, vl);
        else
            db_batch_del(t->b, k, kl);
    }
}

/* The inline chunks a frame's ops put (ci/<sha256>). */
static void inline_puts(const char *ops, size_t len, json_t *inl)
{
    size_t off = 0, kl, vl;
    const char *k, *v;
    int op;
    while ((op = db_repl_next(ops, len, &off, &k, &kl, &v, &vl)) > 0)
        if (op == 'P' && kl == 67 && !memcmp(k, "ci/", 3)) {
            char h[65];
            memcpy(h, k + 3, 64);
            h[64] = 0;
            json_object_set_new(inl, h, json_true());
        }
}

static const char *frames(const char *p, const char *end, const char *(*fn)(const repl_frame *f, void *ud), void *ud)
{
    return repl_frames(p, (size_t)(end - p), fn, ud);
}

struct check {
    const char *sender;
    json_t *inl, *held, *missing;
    char why[300];
};

static const char *check_frame(const repl_frame *f, void *ud)
{
    struct check *c = ud;
    const char *no = refuse(f->sid, f->epoch, c->sender, c->why, sizeof c->why);
    if (!no)
        inline_puts(f->ops, f->len, c->inl);
    return no;
}

static const char *lack_frame(const repl_frame *f, void *ud)
{
    struct check *c = ud;
    lacking(f->sid, f->ops, f->len, c->inl, c->held, c->missing);
    return NULL;
}

struct apply {
    txn t;
    json_t *seen;
    bool fill; /* a fill's records: keys a live change wrote are kept */
};

static const char *apply_frame(const repl_frame *f, void *ud)
{
    struct apply *a = ud;
    char hex[17];
    key_u64(hex, f->sid);
    json_t *touched = json_object_get(json_object_get(rs.filling, hex), "touched");
    apply_ops(&a->t, f->ops, f->len, a->seen, a->fill ? NULL : touched, a->fill ? touched : NULL);
    /* the ids this node hands out from now on are above every id the owner handed out: after a
     * takeover or a move no id the store uses comes twice */
    db_id_floor("entry", f->hw[0]);
    db_id_floor("trash", f->hw[1]);
    return NULL;
}

/* A fill's records come from the node that began it. */
static const char *check_fill(const repl_frame *f, void *ud)
{
    struct check *c = ud;
    char hex[17];
    key_u64(hex, f->sid);
    if (!strcmp(jstr(json_object_get(rs.filling, hex), "from"), c->sender) && *c->sender)
        return NULL;
    snprintf(c->why, sizeof c->why, "this node is not being filled with store %llu by node %s",
             (unsigned long long)f->sid, c->sender);
    return c->why;
}

/* POST .../replicate (the owner's changes) and .../fill/data (a fill's records): applied as one
 * transaction once every frame may be (this node is the replica of that epoch, or being filled
 * by the sender) and every chunk they name is here. */
static int changes(inreq *r, bool fill, char **answer)
{
    const char *p = r->b.p, *end = r->b.p + r->b.n;
    struct check c = {.sender = r->node, .inl = json_object(), .held = json_object(), .missing = json_array()};
    mb_err err = {0};
    int rc = 0;
    pthread_mutex_lock(&rs.apply_mu); /* a takeover waits for the change, or the change for it */
    const char *no = frames(p, end, fill ? check_fill : check_frame, &c);
    if (!no)
        frames(p, end, lack_frame, &c);
    if (!no && !json_array_size(c.missing)) {
        struct apply a = {.seen = json_object(), .fill = fill};
        txn_begin(&a.t, NULL);
        frames(p, end, apply_frame, &a);
        repl_applying = true;
        rc = txn_end(&a.t, 0, &err, "the replicated change");
        repl_applying = false;
        json_decref(a.seen);
    }
    const char *h;
    json_t *v;
    json_object_foreach(c.held, h, v) blob_pending_drop(h);
    pthread_mutex_unlock(&rs.apply_mu);
    json_decref(c.held);
    json_decref(c.inl);
    if (no) {
        json_decref(c.missing);
        *answer = problem(409, no, NULL);
        return 409;
    }
    if (json_array_size(c.missing)) {
        *answer = problem(409, "chunks the changes name are not on this node yet", json_pack("{s:o}", "missing", c.missing));
        return 409;
    }
    json_decref(c.missing);
    if (rc) {
        *answer = problem(500, err.msg, NULL);
        return 500;
    }
    return 204;
}

/* ---------------------------------------------------------------- filling --- */

struct wipe {
    txn t;
    int n, rc;
    bool records; /* the modules' records of the store too */
    mb_err err;
};

static void wipe_key(const char *k, size_t kl, const char *v, size_t vl, void *ud)
{
    struct wipe *w = ud;
    if (w->rc || (!w->records && kl >= 2 && !memcmp(k, "m/", 2)))
        return;
    if (kl >= 2 && !memcmp(k, "f/", 2)) {
        json_t *old = json_loadb(v, vl, 0, NULL);
        txn_ref_chunks(&w->t, json_object_get(old, "chunks"), -1);
        json_decref(old);
    }
    db_batch_del(w->t.b, k, kl);
    if (++w->n % 1000 == 0) { /* in transactions of 1,000 keys */
        w->rc = txn_end(&w->t, 0, &w->err, "the removal of a store's old copy");
        txn_begin(&w->t, NULL);
    }
}

/* This node's copy of store sid goes (a fill starts from nothing; an old copy, without the
 * modules' records unless `records`). Under apply_mu. */
static int wipe(uint64_t sid, bool records, mb_err *err)
{
    struct wipe w = {.records = records};
    repl_applying = true;
    txn_begin(&w.t, NULL);
    repl_store_keys(NULL, sid, wipe_key, &w);
    int rc = txn_end(&w.t, w.rc, &w.err, "the removal of a store's old copy");
    repl_applying = false;
    if (rc)
        *err = w.err;
    return rc;
}

/* .../fill/begin and .../fill/end: one frame naming the store. */
static int fill_step(inreq *r, bool begin, char **answer)
{
    if (r->b.n != FRAME_HEAD) {
        *answer = problem(400, "the body is not one frame", NULL);
        return 400;
    }
    uint64_t sid = repl_get_u(r->b.p, 8);
    char hex[17], why[300] = "";
    key_u64(hex, sid);
    mb_err err = {0};
    pthread_mutex_lock(&rs.apply_mu);
    json_t *rec = cluster_store_record(sid);
    if (begin && (!strcmp(jstr(rec, "node"), rs.node) || json_object_get(rs.taken, hex)))
        snprintf(why, sizeof why, "this node keeps store %llu", (unsigned long long)sid);
    else if (begin && wipe(sid, true, &err))
        snprintf(why, sizeof why, "%s", err.msg);
    else if (begin) {
        json_object_set_new(rs.filling, hex, json_pack("{s:s, s:o}", "from", r->node, "touched", json_object()));
        pthread_mutex_lock(&rs.stale_mu); /* a copy being filled is no old copy: its wait starts again */
        json_object_del(rs.stale, hex);
        pthread_mutex_unlock(&rs.stale_mu);
    }
    else if (!strcmp(jstr(json_object_get(rs.filling, hex), "from"), r->node))
        json_object_del(rs.filling, hex);
    pthread_mutex_unlock(&rs.apply_mu);
    json_decref(rec);
    if (*why) {
        *answer = problem(409, why, NULL);
        return 409;
    }
    return 204;
}

static enum MHD_Result reply(struct MHD_Connection *conn, int status, char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(text ? strlen(text) : 0, text ? text : (void *)"",
                                                                 text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (text)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, status < 300 ? "application/json" : "application/problem+json");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **con_cls)
{
    (void)cls, (void)version;
    inreq *r = *con_cls;
    if (!r) { /* the headers: who sends what */
        r = *con_cls = xcalloc(1, sizeof *r);
        const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, SIGN_HEADER);
        const char *len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        uint64_t n = 0;
        bool post = !strcmp(method, "POST");
        r->kind = post && !strcmp(url, REPL_PATH)                    ? K_CHANGES
                  : post && !strcmp(url, FILL_PATH "begin")          ? K_FILL_BEGIN
                  : post && !strcmp(url, FILL_PATH "data")           ? K_FILL_DATA
                  : post && !strcmp(url, FILL_PATH "end")            ? K_FILL_END
                  : post && !strncmp(url, GC_PATH, strlen(GC_PATH))  ? K_GC
                  : post && !strcmp(url, EVENT_PATH)                 ? K_EVENT
                  : !strcmp(method, "PUT") && !strncmp(url, CHUNK_PATH, strlen(CHUNK_PATH)) &&
                          strlen(url) == strlen(CHUNK_PATH) + 64 ? K_CHUNK
                                                                 : K_NONE;
        snprintf(r->path, sizeof r->path, "%s", url);
        if (r->kind == K_NONE)
            r->status = 404, r->detail = problem(404, "no such call between the cluster's nodes", NULL);
        else if (!sig || sscanf(sig, "%63[^.].%lld.%64s", r->node, &r->t, r->mac) != 3 || strlen(r->mac) != 64 ||
                 !len || !parse_u64(len, &n) || !head_signed(r, method, n, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, HEAD_HEADER)))
            r->status = 401, r->detail = problem(401, "this call is for the cluster's nodes: it needs valid " SIGN_HEADER
                                                      " and " HEAD_HEADER " headers", NULL);
        else if (n > (r->kind != K_CHUNK ? BODY_MAX : CHUNK_MAX))
            r->status = 413, r->detail = problem(413, "the body is too large", NULL);
        else if (n) { /* signed with its length: room for the whole body at once, no copying as it grows */
            r->b.p = xmalloc(n);
            r->b.cap = n;
        }
        return MHD_YES;
    }
    if (*size) { /* the body */
        if (!r->status && r->b.n + *size > (r->kind != K_CHUNK ? BODY_MAX : CHUNK_MAX))
            r->status = 413, r->detail = problem(413, "the body is too large", NULL);
        if (!r->status)
            db_ops_add(&r->b, data, *size);
        *size = 0;
        return MHD_YES;
    }
    char *answer = NULL;
    int status = r->status;
    if (status) {
        answer = r->detail;
        r->detail = NULL;
    } else if (!atomic_load(&rs.on))
        status = 503, answer = problem(503, "this node does not take replicas yet: it is starting", NULL);
    else if (!in_signed(r))
        status = 401, answer = problem(401, "this call is for the cluster's nodes: its signature does not verify", NULL);
    else
        status = r->kind == K_CHUNK        ? put_chunk(r, &answer)
                 : r->kind == K_FILL_BEGIN ? fill_step(r, true, &answer)
                 : r->kind == K_FILL_END   ? fill_step(r, false, &answer)
                 : r->kind == K_GC         ? cluster_gc_answer(r->path + strlen(GC_PATH), r->b.p ? r->b.p : "", r->b.n, &answer)
                 : r->kind == K_EVENT      ? cluster_events_answer(r->b.p ? r->b.p : "", r->b.n, &answer)
                                           : changes(r, r->kind == K_FILL_DATA, &answer);
    return reply(conn, status, answer);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode tc)
{
    (void)cls, (void)conn, (void)tc;
    if (*con_cls)
        in_free(*con_cls);
    *con_cls = NULL;
}

int cluster_repl_listen(mb_err *err)
{
    if (!g_cfg->cluster_etcd)
        return 0;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET6, g_cfg->listen_host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        flags |= MHD_USE_IPv6;
    } else {
        s4->sin_family = AF_INET;
        if (inet_pton(AF_INET, g_cfg->listen_host, &s4->sin_addr) != 1)
            s4->sin_addr.s_addr = htonl(INADDR_ANY);
    }
    rs.daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &ss,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_CONNECTION_LIMIT, 256u,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    const union MHD_DaemonInfo *di = rs.daemon ? MHD_get_daemon_info(rs.daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    if (!di || !di->port)
        return err_set(err, MB_EIO, "cluster: cannot listen for the other nodes' replication on %s",
                       g_cfg->listen_host);
    rs.port = di->port; /* published once this node takes replicas (cluster_repl_start) */
    return 0;
}


void replica_start(const char *node)
{
    snprintf(rs.node, sizeof rs.node, "%s", node);
    rs.taken = json_object();
    rs.filling = json_object();
    pthread_mutex_lock(&rs.stale_mu);
    rs.stale = json_object();
    pthread_mutex_unlock(&rs.stale_mu);
    atomic_store(&rs.on, true);
    cluster_set_replication_port(rs.port); /* the others may choose this node as a replica now */
}

void replica_stop(void)
{
    if (rs.daemon) /* its connection threads end with it */
        MHD_stop_daemon(rs.daemon);
    rs.daemon = NULL;
    atomic_store(&rs.on, false);
    json_decref(rs.taken);
    json_decref(rs.filling);
    rs.taken = rs.filling = NULL;
    pthread_mutex_lock(&rs.stale_mu);
    json_decref(rs.stale);
    rs.stale = NULL;
    pthread_mutex_unlock(&rs.stale_mu);
}
