/*
 * cluster_gc.c — the cluster's collector of chunks on backends several nodes may share (issue 23,
 * docs/cluster.md "Chunks on a shared backend").
 *
 * A node knows its own references only (the refcounts of the stores it keeps or replicates). So in
 * cluster mode its own collector (gc.c) deletes from this node's disk alone; a chunk that may also
 * lie on another backend (S3, WebDAV, rclone, an encrypting view of one: possibly another node's
 * chunk too) gets a candidate record instead (gq/<hash>, blob_del_mine). The leader, once a
 * collector interval, runs rounds of up to ROUND hashes over every node:
 *
 *   1. Candidates: every node's gq/ records; and, every LIST_EVERY intervals, the objects of the
 *      leader's own external backends older than the grace (uploads that never committed anywhere).
 *   2. Claim: each node says which of them it still needs (a refcount or put record, a write holding
 *      the chunk, a backup holding its collector) and holds the others for HOLD_MS: a write of such
 *      a chunk on that node waits (blob_pending_add) until they are released.
 *   3. Delete: if every node answered within HOLD_MS / 4 of the round's start, every node deletes the
 *      chunks nobody claimed from its own external backends (a node deletes only while its hold has
 *      more than HOLD_MS / 2 to go).
 *   4. Release: every node ends its holds and drops the candidates the round handled.
 *
 * Deleting happens on every node before any node lets a write through again (3 before 4; when a
 * node does not answer a delete call, nobody is released and the holds end on their own), and a hold
 * outlives every delete the round can make (HOLD_MS: a delete starts before 3/4 of it and a backend
 * call ends within its timeout, 60 s at most), so no write counts on an object that is going. A round
 * needs every node that keeps or replicates a store to be up and to answer, else it waits for the next
 * interval: a node that is away may still count on a chunk.
 *
 * A store's keeper migrating it off a backend (migrate.c) asks the same way about the store's old
 * copies (cluster_spare): every other node claims what it needs besides the store and holds the rest
 * while the keeper deletes them from the old backend alone, then unholds.
 *
 * Threads: its own (mb-cl-gc) on every node, working only while the node leads; claim, delete,
 * release, candidates, spare and unhold run on the replication port's connection threads
 * (cluster_replica.c); cluster_spare on the migration's task worker.
 */
#include "cluster_repl.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUND 1000          /* hashes per round */
#define HOLD_MS 300000      /* a node's hold on the chunks it did not claim */
#define LIST_EVERY 6        /* intervals between two listings of the external backends */
#define ROUNDS_MAX 100      /* rounds of candidates per interval (the rest waits for the next) */
#define DEL_BATCH 100       /* hashes per delete call (each node deletes them one by one) */

static struct {
    pthread_t th;
    bool run, started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CURL *c;
    /* mu: what GET /api/v1/admin/cluster shows of the leader's work */
    json_int_t rounds, deleted, kept;
    int64_t last; /* Unix seconds of the last round, 0 none */
    char why[300]; /* why the last interval ran no round, "" when it did */
} gc = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static bool is_hash(const char *h) { return h && strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64; }

static bool recorded(const char *prefix, const char *hash)
{
    char key[80], *v = NULL;
    snprintf(key, sizeof key, "%s%s", prefix, hash);
    int rc = db_get(key, strlen(key), &v, NULL);
    free(v);
    return rc != MB_ENOENT; /* unreadable counts as there: never delete on a doubt */
}

/* The keys of object o, as a new array; o is released. */
static json_t *keys_of(json_t *o)
{
    json_t *out = json_array(), *v;
    const char *k;
    json_object_foreach(o, k, v) json_array_append_new(out, json_string(k));
    json_decref(o);
    return out;
}

/* ----------------------------------------------------- each node's side --- */

/* A record here names the chunk: a refcount (c/, at any count: this node's grace runs) or a put
 * record (po/: an upload in flight). */
static bool needed(const char *hash) { return recorded("c/", hash) || recorded("po/", hash); }

/* fn(hash, ud) for each chunk name of the array (anything else is skipped). */
static void each_hash(const json_t *hashes, void (*fn)(const char *hash, void *ud), void *ud)
{
    size_t i;
    json_t *h;
    json_array_foreach(hashes, i, h) {
        if (is_hash(json_string_value(h)))
            fn(json_string_value(h), ud);
    }
}

/* claim {"hashes"} -> {"claimed"}: the ones this node needs; the rest held until released. The
 * hold comes first and the records are read after it: a write that took the chunk before the hold
 * either still holds it (blob_condemn refuses) or has committed its refcount (read here). A backup
 * holding the collector (gc_held) may still read what its snapshot names: then all are claimed. */
struct claiming {
    bool all;
    json_t *claimed;
};

static void claim_one(const char *hash, void *ud)
{
    struct claiming *c = ud;
    if (c->all || !blob_condemn(hash, now_mono_ms() + HOLD_MS) || needed(hash)) {
        blob_condemn_end(hash);
        json_array_append_new(c->claimed, json_string(hash));
    }
}

/* delete {"hashes"} -> {"deleted"}: from every backend of this node but its disk, each only while
 * this node's hold on it is young and no record names it. */
static void drop_one(const char *hash, void *ud)
{
    mb_err e = {0};
    if (!blob_condemned(hash, HOLD_MS / 2) || needed(hash))
        return;
    int rc = blob_del_in(hash, BLOB_ELSEWHERE, &e);
    if (rc == 0)
        ++*(json_int_t *)ud;
    else if (rc != MB_ENOENT)
        log_warn("cluster: collector: chunk %.12s…: %s", hash, e.msg);
}

/* release {"hashes"}: the holds end, the candidates go. */
static void release_one(const char *hash, void *ud)
{
    (void)ud;
    blob_condemn_end(hash);
    char key[72];
    snprintf(key, sizeof key, GC_CANDIDATE "%s", hash);
    db_del(key, strlen(key), false);
}

/* candidates {"max"} -> {"hashes"}: this node's gq/ records, oldest key first. */
static json_t *candidates(json_int_t max)
{
    json_t *out = json_array();
    size_t pl = strlen(GC_CANDIDATE);
    db_iter *it = db_iter_prefix(GC_CANDIDATE, pl);
    while ((json_int_t)json_array_size(out) < max && db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl == pl + 64)
            json_array_append_new(out, json_stringn(k + pl, 64));
    }
    db_iter_free(it);
    return json_pack("{s:o}", "hashes", out);
}

/* A migration's old copies (migrate.c, cluster_spare): does this node hold store sid whole, as its
 * keeper or its filled replica? Then its references to a chunk include the store's, counted by the
 * keeper; an old copy of the store, or a replica being filled, counts as any other store. */
static bool holds_whole(uint64_t sid)
{
    json_t *rec = cluster_store_record(sid);
    const char *me = cluster_node_name();
    bool whole = rec && !json_is_true(json_object_get(rec, "filling")) &&
                 (!strcmp(jstr(rec, "node"), me) || !strcmp(jstr(rec, "replica"), me));
    json_decref(rec);
    return whole;
}

/* spare {"store", "refs": {hash: the store's references}} -> {"claimed"}: the chunks this node needs
 * besides the store (a reference more than the store's own when it holds the store whole, any
 * reference when not, an upload in flight, a write holding it); the rest held until unhold. An
 * unreadable refcount is a need. */
static json_t *spare(const json_t *in)
{
    json_t *refs = json_object_get(in, "refs"), *n, *claimed;
    const char *h;
    if (jint(in, "store") <= 0 || !json_is_object(refs) || json_object_size(refs) > ROUND)
        return NULL;
    bool whole = holds_whole((uint64_t)jint(in, "store")), all = gc_held();
    claimed = json_array();
    json_object_foreach(refs, h, n) {
        if (!is_hash(h))
            continue;
        char key[72];
        snprintf(key, sizeof key, "c/%s", h);
        json_t *rec = NULL;
        bool held = !all && blob_condemn(h, now_mono_ms() + HOLD_MS);
        int rc = held ? db_get_json(key, &rec) : MB_EBUSY;
        json_int_t mine = whole ? json_integer_value(n) : 0;
        if ((rc && rc != MB_ENOENT) || (!rc && jint(rec, "refs") > mine) || recorded("po/", h)) {
            if (held)
                blob_condemn_end(h);
            json_array_append_new(claimed, json_string(h));
        }
        json_decref(rec);
    }
    return json_pack("{s:o}", "claimed", claimed);
}

static void unhold_one(const char *hash, void *ud)
{
    (void)ud;
    blob_condemn_end(hash);
}

int cluster_gc_answer(const char *what, const char *body, size_t len, char **answer)
{
    json_t *in = json_loadb(body, len, 0, NULL), *hashes = json_object_get(in, "hashes"), *out = NULL;
    bool list = json_is_array(hashes) && json_array_size(hashes) <= ROUND;
    if (!strcmp(what, "candidates") && json_is_object(in))
        out = candidates(jint(in, "max") > 0 && jint(in, "max") <= ROUND ? jint(in, "max") : ROUND);
    else if (list && !strcmp(what, "claim")) {
        struct claiming c = {gc_held(), json_array()};
        each_hash(hashes, claim_one, &c);
        out = json_pack("{s:o}", "claimed", c.claimed);
    } else if (list && !strcmp(what, "delete")) {
        json_int_t n = 0;
        each_hash(hashes, drop_one, &n);
        out = json_pack("{s:I}", "deleted", n);
    } else if (list && !strcmp(what, "release")) {
        each_hash(hashes, release_one, NULL);
        out = json_object();
    } else if (list && !strcmp(what, "unhold")) {
        each_hash(hashes, unhold_one, NULL);
        out = json_object();
    } else if (!strcmp(what, "spare") && json_is_object(in))
        out = spare(in);
    json_decref(in);
    int status = out ? 200 : 400;
    if (!out)
        out = json_pack("{s:s, s:i, s:s}", "title", "Bad Request", "status", 400, "detail",
                        "the body is not {\"hashes\": [at most 1000 chunk names]} ({\"max\"} for candidates, "
                        "{\"store\", \"refs\": {at most 1000 chunk names: references}} for spare)");
    *answer = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    return status;
}

/* ---------------------------------------------------------- the leader --- */

static int post(void *curl, const char *node, const char *what, json_t *body, json_t **ans, mb_err *err)
{
    char path[100];
    snprintf(path, sizeof path, GC_PATH "%s", what);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int rc = repl_ask(curl, node, path, text, strlen(text), REPL_WAIT_MS, ans, err);
    free(text);
    return rc;
}

/* The nodes a round asks: every node up, provided each node that keeps or replicates a store is
 * among them. NULL (why set) when a round must wait. */
static json_t *round_nodes(char *why, size_t n)
{
    json_t *v = cluster_view(), *names = json_object(), *e;
    size_t i;
    json_array_foreach(json_object_get(v, "nodes"), i, e)
    {
        if (jint(e, "replication") > 0)
            json_object_set_new(names, jstr(e, "name"), json_true());
    }
    json_array_foreach(json_object_get(v, "stores"), i, e)
    {
        const char *need[2] = {jstr(e, "owner"), jstr(e, "replica")};
        for (int k = 0; k < 2; k++)
            if (*need[k] && !json_object_get(names, need[k])) {
                snprintf(why, n, "node %s keeps or replicates store %lld and is not up", need[k], (long long)jint(e, "id"));
                json_decref(names);
                json_decref(v);
                return NULL;
            }
    }
    json_decref(v);
    return keys_of(names);
}

/* One round over hashes (at most ROUND): 0, or -1 with why set (nothing deleted unless every node
 * claimed in time). */
static int round_run(const json_t *nodes, json_t *hashes, char *why, size_t wn)
{
    int64_t t0 = now_mono_ms();
    json_t *claimed = json_object(), *e;
    size_t i, asked = 0;
    mb_err err = {0};
    int rc = 0;
    json_array_foreach(nodes, i, e) {
        json_t *ans = NULL;
        rc = post(gc.c, json_string_value(e), "claim", json_pack("{s:O}", "hashes", hashes), &ans, &err);
        asked = i + 1;
        size_t j;
        json_t *h;
        json_array_foreach(json_object_get(ans, "claimed"), j, h) {
            if (json_is_string(h))
                json_object_set_new(claimed, json_string_value(h), json_true());
        }
        json_decref(ans);
        if (rc)
            break;
    }
    if (!rc && now_mono_ms() - t0 > HOLD_MS / 4)
        rc = -1, snprintf(err.msg, sizeof err.msg, "the nodes took %lld ms to claim", (long long)(now_mono_ms() - t0));
    json_t *doomed = json_array(), *h;
    json_array_foreach(hashes, i, h) {
        if (!json_object_get(claimed, json_string_value(h)))
            json_array_append(doomed, h);
    }
    /* Every node deletes, DEL_BATCH a call; only then is any hold released. A node that did not
     * answer may still be deleting: then nobody is released, and every hold ends on its own. */
    json_int_t deleted = 0;
    bool unsure = false;
    if (!rc && json_array_size(doomed))
        json_array_foreach(nodes, i, e) {
            for (size_t from = 0; from < json_array_size(doomed) && !unsure; from += DEL_BATCH) {
                json_t *part = json_array(), *ans = NULL;
                for (size_t j = from; j < from + DEL_BATCH && j < json_array_size(doomed); j++)
                    json_array_append(part, json_array_get(doomed, j));
                mb_err de = {0};
                if (post(gc.c, json_string_value(e), "delete", json_pack("{s:o}", "hashes", part), &ans, &de)) {
                    log_warn("cluster: collector: node %s: %s; the round's holds end on their own in %d s",
                             json_string_value(e), de.msg, HOLD_MS / 1000);
                    unsure = true;
                }
                deleted += jint(ans, "deleted");
                json_decref(ans);
            }
        }
    json_array_foreach(nodes, i, e) {
        if (i >= asked || unsure)
            break;
        mb_err re = {0};
        if (post(gc.c, json_string_value(e), "release", json_pack("{s:O}", "hashes", hashes), NULL, &re))
            log_debug("cluster: collector: node %s keeps its hold until it ends: %s", json_string_value(e), re.msg);
    }
    pthread_mutex_lock(&gc.mu);
    if (!rc) {
        gc.rounds++;
        gc.deleted += json_array_size(doomed);
        gc.kept += json_object_size(claimed);
        gc.last = now_wall();
    }
    pthread_mutex_unlock(&gc.mu);
    if (rc)
        snprintf(why, wn, "%s", err.msg);
    else if (json_array_size(doomed))
        log_info("cluster: collector: %zu chunks no node needs deleted (%lld objects)", json_array_size(doomed),
                 (long long)deleted);
    json_decref(doomed);
    json_decref(claimed);
    return rc ? -1 : 0;
}

/* ------------------------------------------ a migration's old copies --- */

int cluster_spare(uint64_t sid, const json_t *refs, int (*drop)(const char *hash, void *ud), void *ud, mb_err *err)
{
    char why[300] = "";
    json_t *nodes = round_nodes(why, sizeof why), *claimed = json_object(), *e, *h, *n;
    if (!nodes) {
        json_decref(claimed);
        return err_set(err, MB_EBUSY, "%s", why);
    }
    CURL *c = curl_easy_init();
    int64_t t0 = now_mono_ms();
    size_t i, asked = 0, j;
    int rc = c ? 0 : err_set(err, MB_EIO, "no curl handle");
    json_array_foreach(nodes, i, e) {
        if (rc)
            break;
        if (!strcmp(json_string_value(e), cluster_node_name()))
            continue; /* this node's own check is the caller's, under the commit lock */
        json_t *ans = NULL;
        rc = post(c, json_string_value(e), "spare", json_pack("{s:I, s:O}", "store", (json_int_t)sid, "refs", refs),
                  &ans, err);
        asked = i + 1;
        json_array_foreach(json_object_get(ans, "claimed"), j, h) {
            if (json_is_string(h))
                json_object_set_new(claimed, json_string_value(h), json_true());
        }
        json_decref(ans);
    }
    if (!rc && now_mono_ms() - t0 > HOLD_MS / 4)
        rc = err_set(err, MB_EBUSY, "the nodes took %lld ms to answer", (long long)(now_mono_ms() - t0));
    const char *k;
    int dropped = 0;
    if (!rc) /* a delete starts while every hold has more than half its time to go */
        json_object_foreach((json_t *)refs, k, n) {
            if (!json_object_get(claimed, k) && is_hash(k) && now_mono_ms() - t0 < HOLD_MS / 2 && drop(k, ud) == 0)
                dropped++;
        }
    json_t *hashes = keys_of(json_deep_copy(refs));
    json_array_foreach(nodes, i, e) {
        if (i >= asked)
            break;
        mb_err ue = {0};
        if (strcmp(json_string_value(e), cluster_node_name()) &&
            post(c, json_string_value(e), "unhold", json_pack("{s:O}", "hashes", hashes), NULL, &ue))
            log_debug("cluster: node %s keeps its hold of a migration's chunks until it ends: %s", json_string_value(e),
                      ue.msg);
    }
    json_decref(hashes);
    if (c)
        curl_easy_cleanup(c);
    json_decref(claimed);
    json_decref(nodes);
    return rc ? rc : dropped;
}

typedef struct lister {
    const json_t *nodes;
    json_t *batch;
    int64_t cutoff;
    int rounds;
    bool stop;
    char *why;
    size_t wn;
} lister;

static int listed(const char *hash, uint64_t size, int64_t mtime, void *ud)
{
    (void)size;
    lister *l = ud;
    if (l->stop) /* a backend that does not stop when told: the rest waits for the next listing */
        return 1;
    if (mtime > l->cutoff || !is_hash(hash))
        return 0;
    json_array_append_new(l->batch, json_string(hash));
    if (json_array_size(l->batch) < ROUND)
        return 0;
    int rc = round_run(l->nodes, l->batch, l->why, l->wn);
    json_array_clear(l->batch);
    l->stop = rc || ++l->rounds >= ROUNDS_MAX;
    return l->stop ? 1 : 0;
}

/* One interval's work on the leader. */
static void interval(bool list, char *why, size_t wn)
{
    json_t *nodes = round_nodes(why, wn);
    if (!nodes)
        return;
    for (int r = 0; r < ROUNDS_MAX; r++) { /* the nodes' candidates */
        json_t *all = json_object(), *e, *h;
        size_t i, j;
        bool failed = false;
        json_array_foreach(nodes, i, e) {
            json_t *ans = NULL;
            mb_err err = {0};
            if (post(gc.c, json_string_value(e), "candidates", json_pack("{s:i}", "max", ROUND), &ans, &err)) {
                snprintf(why, wn, "%s", err.msg);
                failed = true;
            }
            json_array_foreach(json_object_get(ans, "hashes"), j, h) {
                if (is_hash(json_string_value(h)) && json_object_size(all) < ROUND)
                    json_object_set_new(all, json_string_value(h), json_true());
            }
            json_decref(ans);
        }
        json_t *batch = keys_of(all);
        size_t n = json_array_size(batch);
        int rc = failed || !n ? 0 : round_run(nodes, batch, why, wn);
        json_decref(batch);
        if (failed || rc || n < ROUND)
            break;
    }
    if (list && !*why) { /* orphans on the external backends: objects nobody ever committed */
        lister l = {.nodes = nodes, .batch = json_array(), .cutoff = now_wall() - gc_grace_secs(), .why = why, .wn = wn};
        mb_err err = {0};
        if (blob_list_elsewhere(listed, &l, &err) < 0 && !*why)
            snprintf(why, wn, "the external backends could not be listed: %s", err.msg);
        if (json_array_size(l.batch) && !l.stop && !*why)
            round_run(nodes, l.batch, why, wn);
        json_decref(l.batch);
    }
    json_decref(nodes);
}

static void *gc_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-cl-gc");
    int n = 0;
    pthread_mutex_lock(&gc.mu);
    while (gc.run) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += gc_interval_secs();
        pthread_cond_timedwait(&gc.cv, &gc.mu, &ts);
        if (!gc.run)
            break;
        pthread_mutex_unlock(&gc.mu);
        char why[300] = "";
        if (cluster_is_leader())
            interval(n++ % LIST_EVERY == 0, why, sizeof why);
        else
            snprintf(why, sizeof why, "this node does not lead");
        if (*why && cluster_is_leader())
            log_debug("cluster: collector: waits: %s", why);
        pthread_mutex_lock(&gc.mu);
        snprintf(gc.why, sizeof gc.why, "%s", why);
    }
    pthread_mutex_unlock(&gc.mu);
    return NULL;
}

json_t *cluster_gc_view(void)
{
    pthread_mutex_lock(&gc.mu);
    json_t *v = json_pack("{s:I, s:I, s:I, s:I, s:s?}", "rounds", gc.rounds, "deleted", gc.deleted, "kept", gc.kept,
                          "last", (json_int_t)gc.last, "waits", *gc.why ? gc.why : NULL);
    pthread_mutex_unlock(&gc.mu);
    return v;
}

void cluster_gc_start(void)
{
    gc.c = curl_easy_init();
    gc.run = true;
    gc.started = !pthread_create(&gc.th, NULL, gc_main, NULL);
}

void cluster_gc_stop(void)
{
    if (!gc.started)
        return;
    pthread_mutex_lock(&gc.mu);
    gc.run = false;
    pthread_cond_broadcast(&gc.cv);
    pthread_mutex_unlock(&gc.mu);
    pthread_join(gc.th, NULL);
    curl_easy_cleanup(gc.c);
    gc.started = false;
}
