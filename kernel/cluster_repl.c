/*
 * cluster_repl.c — each store kept on two nodes (issue 23, docs/cluster.md "Replicas and
 * failover"): the owner's side. The node that keeps a store (its owner, sp/<sid16>'s "node") hands
 * every committed change of the store to the store's replica ("replica") and acknowledges the
 * change to its client only once the replica has written it durably. The replica's side (the
 * replication port, applying, takeovers) is cluster_replica.c.
 *
 * Handing on. txn_end's observer (txn_observe) sees each change's batch under the commit lock: the
 * puts and deletes of a store's own keys (s/ so/ d/ dn/ f/ tr/ x/ us/ of that store, and the
 * inline chunks ci/ the batch writes) are queued for the store's replica with the store's epoch, in
 * commit order; after the local write and the lock's release, txn_end waits for the replica's
 * answer. Each replica node has a sender thread that posts its queue in order, consecutive changes
 * in one request, so a node that is slow or away holds back only the changes of the stores it
 * replicates. A replica that lacks chunks the changes name says which; its sender puts them and
 * posts again. When the replica cannot be reached or refuses, the owner drops it with a compare-and-swap
 * on the placement in etcd (epoch + 1, no replica): the change is then safe here alone and
 * acknowledged, and a replica that missed it can never take the store over. If etcd refuses the
 * swap (another node took the store over: this node is a stale owner) or cannot be reached, the
 * change is refused (503) and so is every later change of the store until the swap succeeds: a
 * change is never acknowledged unless both nodes have it, or the placement says that only this
 * one counts.
 *
 * Filling. A store without a replica gets one (the placement thread, one store at a time): the
 * chosen node is wiped of the store; under the commit lock the placement names it the replica
 * (filling, epoch + 1) and a LevelDB snapshot is taken, so every change after the snapshot reaches
 * it live; the snapshot's records follow in frames (the replica keeps what a live change wrote
 * over them), then the placement says it is filled. Until then it cannot take the store over.
 *
 * Threads: hand() on writers (under the commit lock), wait_for() on writers, the sender threads,
 * the placement thread (takeovers, fills). mu guards the queue, the answers and the broken
 * stores; the commit lock is never held while a node is asked anything.
 */
#include "cluster_repl.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POST_MAX (16u << 20) /* changes posted in one request (one change may be bigger) */
#define FILL_FRAME (4u << 20) /* a fill's records per request */
#define TICK_MS 500           /* the placement thread's look at the placements */
#define FILL_RETRY_S 10       /* a store whose fill failed waits this long before the next */
#define BALANCE_PAUSE_MS 10000 /* rebalancing: between two moves, and after the start */
#define SENDERS_MAX 32        /* sender threads (one per replica node, made when first needed) */

typedef struct group { /* one change's items: its writer waits for them */
    int pending, rc;
    char why[512];
} group;

typedef struct item {
    struct item *next;
    group *g;
    char node[64];
    uint64_t sid, epoch, hw[2]; /* hw: this node's id counters (db_id_high) when the change was made */
    char *ops;
    size_t len;
} item;

/* A sender thread and its queue: the changes for one replica node, posted in order. Each node has
 * its own, so a node that is slow or away (a post waits up to REPL_WAIT_MS) holds back only the
 * changes of the stores it replicates. Past SENDERS_MAX nodes, nodes share them by name. */
typedef struct sender {
    char node[64];
    item *head, **tail; /* mu */
    bool sending;       /* mu: a run is being posted */
    pthread_t th;
    CURL *curl;
} sender;

static struct {
    atomic_bool on;
    bool closing; /* mu: stopping; no more placement swaps */
    char node[64];
    pthread_t place_th;
    bool send_run, place_run;
    pthread_mutex_t mu;
    pthread_cond_t cv, done, tick; /* cv: a queue or stop; done: an item answered; tick: the placement thread's stop */
    sender snd[SENDERS_MAX]; /* mu: the senders made so far (nsnd), each for one node */
    int nsnd;
    json_t *broken; /* mu: "<sid>" -> the epoch whose replica missed a change nobody dropped */
    CURL *fill_curl;        /* the placement thread's */
    json_t *fill_failed;    /* fill_mu: "<sid16>" -> when its last fill failed (monotonic ms) */
    pthread_mutex_t fill_mu; /* one fill at a time (the placement thread's, a move's) */
    _Atomic int moving;     /* move tasks running here */
    int64_t balanced_ms;    /* placement thread: when this node last moved a store to rebalance */
    json_t *kept;           /* placement thread: "<sid16>" -> true, the stores this node keeps (NULL: not looked yet) */
} rp = {.mu = PTHREAD_MUTEX_INITIALIZER, .fill_mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER, .tick = PTHREAD_COND_INITIALIZER};

_Thread_local bool repl_applying;

/* ----------------------------------------------------------- store keys --- */

/* Modules' records of a store (mb_api.store_records): "m/<module>/<prefix>", each a key prefix
 * followed by a store's sid16. Kept until the server stops (a module unloaded and loaded again
 * declares the same); records_lock guards them. */
#define RECORDS_MAX 64
static struct {
    char p[96];
    size_t n;
} records[RECORDS_MAX];
static int nrecords;
static pthread_rwlock_t records_lock = PTHREAD_RWLOCK_INITIALIZER;

int cluster_store_records(const char *module, const char *prefix, mb_err *err)
{
    size_t n = strlen(prefix);
    if (!n || n > 32 || prefix[n - 1] != '/' || strspn(prefix, "abcdefghijklmnopqrstuvwxyz0123456789_-/") != n)
        return err_set(err, MB_EINVAL, "a store's record prefix is 1-32 of a-z, 0-9, '_', '-', '/' ending in '/'");
    char p[96];
    snprintf(p, sizeof p, "m/%s/%s", module, prefix);
    int rc = 0;
    pthread_rwlock_wrlock(&records_lock);
    int i = 0;
    while (i < nrecords && strcmp(records[i].p, p))
        i++;
    if (i == nrecords && nrecords == RECORDS_MAX)
        rc = err_set(err, MB_EINVAL, "too many modules' store record prefixes (%d)", RECORDS_MAX);
    else if (i == nrecords) {
        snprintf(records[i].p, sizeof records[i].p, "%s", p);
        records[i].n = strlen(p);
        nrecords++;
    }
    pthread_rwlock_unlock(&records_lock);
    return rc;
}

/* A module's record of a store: "<prefix><sid16>" or "<prefix><sid16>/...". */
static bool record_of(const char *k, size_t kl, uint64_t *sid)
{
    if (kl < 2 || memcmp(k, "m/", 2))
        return false;
    bool found = false;
    pthread_rwlock_rdlock(&records_lock);
    for (int i = 0; i < nrecords && !found; i++) {
        size_t pl = records[i].n;
        if (kl >= pl + 16 && !memcmp(k, records[i].p, pl) && (kl == pl + 16 || k[pl + 16] == '/')) {
            char hex[17], *end;
            memcpy(hex, k + pl, 16);
            hex[16] = 0;
            *sid = strtoull(hex, &end, 16);
            found = end == hex + 16 && strspn(hex, "0123456789abcdef") == 16;
        }
    }
    pthread_rwlock_unlock(&records_lock);
    return found;
}

bool cluster_record_store(const char *k, size_t kl, uint64_t *sid) { return record_of(k, kl, sid); }

/* The store whose own key k is (false: not a store's key). ci/ puts count for every store. */
static bool store_of(const char *k, size_t kl, uint64_t *sid)
{
    static const struct {
        const char *p;
        size_t skip;
    } t[] = {{"s/", 2}, {"so/", 20}, {"d/", 2}, {"dn/", 3}, {"f/", 2}, {"tr/", 3}, {"x/", 2}, {"us/", 3}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t pl = strlen(t[i].p);
        if (kl >= t[i].skip + 16 && !memcmp(k, t[i].p, pl) &&
            (kl == t[i].skip + 16 || k[t[i].skip + 16] == '/')) {
            char hex[17];
            memcpy(hex, k + t[i].skip, 16);
            hex[16] = 0;
            char *end;
            *sid = strtoull(hex, &end, 16);
            return end == hex + 16;
        }
    }
    return record_of(k, kl, sid);
}

#define SIDS_MAX 64 /* stores one change may touch (a change touches one today) */

struct sids {
    uint64_t id[SIDS_MAX];
    int n;
    bool over;      /* more than SIDS_MAX: refused, never handed on in part */
    json_t *placed; /* "<sid>" -> a placement record the batch itself writes */
};

static void note_sid(struct sids *s, uint64_t sid)
{
    for (int i = 0; i < s->n; i++)
        if (s->id[i] == sid)
            return;
    if (s->n < SIDS_MAX)
        s->id[s->n++] = sid;
    else
        s->over = true;
}

static void scan_put(void *ud, const char *k, size_t kl, const char *v, size_t vl)
{
    struct sids *s = ud;
    uint64_t sid;
    if (store_of(k, kl, &sid))
        note_sid(s, sid);
    else if (kl == 19 && !memcmp(k, "sp/", 3)) {
        char hex[17];
        memcpy(hex, k + 3, 16);
        hex[16] = 0;
        json_t *r = json_loadb(v, vl, 0, NULL);
        if (r)
            json_object_set_new(s->placed, hex, r);
    }
}

static void scan_del(void *ud, const char *k, size_t kl)
{
    uint64_t sid;
    if (store_of(k, kl, &sid))
        note_sid(ud, sid);
}

static bool keep_store(const char *k, size_t kl, char op, void *ud)
{
    uint64_t sid;
    if (kl > 3 && !memcmp(k, "ci/", 3))
        return op == 'P';
    return store_of(k, kl, &sid) && sid == *(const uint64_t *)ud;
}

static void sid_text(char out[17], uint64_t sid) { key_u64(out, sid); }

/* fn for each key with prefix (in snap) that is store sid's own. */
static void each_key(db_snap *snap, const char *prefix, uint64_t sid,
                     void (*fn)(const char *k, size_t kl, const char *v, size_t vl, void *ud), void *ud)
{
    db_iter *it = db_snap_iter_prefix(snap, prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        uint64_t got;
        if (store_of(k, kl, &got) && got == sid) /* s/<sid16> and us/<sid16> are whole keys */
            fn(k, kl, v, vl, ud);
    }
    db_iter_free(it);
}

void repl_store_keys(db_snap *snap, uint64_t sid,
                     void (*fn)(const char *k, size_t kl, const char *v, size_t vl, void *ud), void *ud)
{
    static const char *const tables[] = {"s/", "d/", "dn/", "f/", "tr/", "x/", "us/"};
    char hex[17], prefix[160];
    sid_text(hex, sid);
    for (size_t t = 0; t <= sizeof tables / sizeof tables[0]; t++) {
        if (t == sizeof tables / sizeof tables[0]) { /* so/<owner16>/<sid16>: the owner from s/ */
            char key[24];
            snprintf(key, sizeof key, "s/%s", hex);
            json_t *st = NULL;
            db_iter *one = db_snap_iter_prefix(snap, key, strlen(key));
            if (db_iter_next(one)) {
                size_t vl;
                const char *v = db_iter_val(one, &vl);
                st = json_loadb(v, vl, 0, NULL);
            }
            db_iter_free(one);
            if (!st)
                break;
            char o[17];
            key_u64(o, (uint64_t)jint(st, "owner"));
            json_decref(st);
            snprintf(prefix, sizeof prefix, "so/%s/%s", o, hex);
        } else
            snprintf(prefix, sizeof prefix, "%s%s%s", tables[t], hex, !strcmp(tables[t], "s/") || !strcmp(tables[t], "us/") ? "" : "/");
        each_key(snap, prefix, sid, fn, ud);
    }
    char mods[RECORDS_MAX][96];
    pthread_rwlock_rdlock(&records_lock);
    int n = nrecords;
    for (int i = 0; i < n; i++)
        memcpy(mods[i], records[i].p, sizeof mods[i]);
    pthread_rwlock_unlock(&records_lock);
    for (int i = 0; i < n; i++) { /* the modules' records of it */
        snprintf(prefix, sizeof prefix, "%.95s%s", mods[i], hex);
        each_key(snap, prefix, sid, fn, ud);
    }
}

/* ------------------------------------------------------------ handing on --- */

static sender *sender_for(const char *node);

static int hand(const db_batch *b, uint64_t *wait, mb_err *err)
{
    if (repl_applying || !atomic_load(&rp.on))
        return 0;
    struct sids s = {.placed = json_object()};
    db_batch_each(b, scan_put, scan_del, &s);
    json_t *recs[SIDS_MAX] = {0};
    int rc = s.over ? err_set(err, MB_EINVAL, "a change of more than %d stores at once cannot be replicated", SIDS_MAX)
                    : 0;
    /* Check every store first: a refused change queues nothing. */
    for (int i = 0; i < s.n && !rc; i++) {
        char hex[17];
        sid_text(hex, s.id[i]);
        json_t *rec = json_incref(json_object_get(s.placed, hex));
        if (!rec && !(rec = cluster_store_record(s.id[i]))) { /* a replica's copy whose placement is on its way */
            rc = err_set(err, MB_EBUSY, "store %llu's placement has not reached this node yet: try again",
                         (unsigned long long)s.id[i]);
            break;
        }
        recs[i] = rec;
        const char *owner = jstr(rec, "node");
        pthread_mutex_lock(&rp.mu);
        json_int_t broken = jint(rp.broken, hex);
        bool sending = rp.send_run;
        pthread_mutex_unlock(&rp.mu);
        if (!sending && *jstr(rec, "replica"))
            rc = err_set(err, MB_EBUSY, "the server is stopping: store %llu takes no changes now",
                         (unsigned long long)s.id[i]);
        else if (strcmp(owner, rp.node))
            rc = err_set(err, MB_EBUSY, "store %llu is kept by node %s now: try again",
                         (unsigned long long)s.id[i], owner);
        else if (broken && broken == jint(rec, "epoch"))
            rc = err_set(err, MB_EBUSY,
                         "store %llu takes no changes now: its replica on node %s missed one and etcd has not "
                         "confirmed that the store goes on without it; try again in a moment",
                         (unsigned long long)s.id[i], jstr(rec, "replica"));
    }
    group *g = NULL;
    for (int i = 0; i < s.n; i++) {
        if (!rc && recs[i] && *jstr(recs[i], "replica")) {
            item *it = xcalloc(1, sizeof *it);
            it->sid = s.id[i];
            it->epoch = (uint64_t)jint(recs[i], "epoch");
            snprintf(it->node, sizeof it->node, "%s", jstr(recs[i], "replica"));
            it->ops = db_batch_encode(b, keep_store, &it->sid, &it->len);
            it->hw[0] = db_id_high("entry");
            it->hw[1] = db_id_high("trash");
            if (!g)
                g = xcalloc(1, sizeof *g);
            it->g = g;
            pthread_mutex_lock(&rp.mu);
            sender *to = rp.send_run ? sender_for(it->node) : NULL;
            if (to) {
                g->pending++;
                *to->tail = it;
                to->tail = &it->next;
                pthread_cond_broadcast(&rp.cv);
                it = NULL;
            } else if (!g->rc) { /* the senders stopped meanwhile: the change is not confirmed */
                g->rc = MB_EBUSY;
                snprintf(g->why, sizeof g->why, "the server is stopping: store %llu's change was not confirmed",
                         (unsigned long long)s.id[i]);
            }
            pthread_mutex_unlock(&rp.mu);
            if (it) {
                free(it->ops);
                free(it);
            }
        }
        json_decref(recs[i]);
    }
    json_decref(s.placed);
    *wait = (uint64_t)(uintptr_t)g;
    return rc;
}

static int wait_for(uint64_t ticket, mb_err *err)
{
    group *g = (group *)(uintptr_t)ticket;
    pthread_mutex_lock(&rp.mu);
    while (g->pending)
        pthread_cond_wait(&rp.done, &rp.mu);
    pthread_mutex_unlock(&rp.mu);
    int rc = g->rc ? err_set(err, g->rc, "%s", g->why) : 0;
    free(g);
    return rc;
}

static const txn_observer observer = {hand, wait_for};

/* ---------------------------------------------------------------- sender --- */

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    db_ops *b = ud;
    if (b->n + sz * n <= 1u << 20)
        db_ops_add(b, p, sz * n);
    return sz * n;
}

/* One signed request to node's `path`: 2xx -> 0, otherwise MB_EBUSY (unreachable) or MB_ECONFLICT
 * (refused) with the reason in err and the answer in *ans (may be NULL; JSON or NULL). */
static int ask(CURL *c, const char *node, const char *method, const char *path, const void *data, size_t len,
               bool sign_body, long timeout_ms, json_t **ans, mb_err *err)
{
    char addr[300], url[700], mac[65], line[400];
    if (ans)
        *ans = NULL;
    if (!cluster_node_replication(node, addr, sizeof addr))
        return err_set(err, MB_EBUSY, "node %s is not up", node);
    long long t = (long long)now_wall();
    char head[65];
    if (!cluster_mac(mac, data, sign_body ? len : 0, "%s.%lld.%s %s", rp.node, t, method, path) ||
        !cluster_mac(head, NULL, 0, "%s.%lld.%s %s %zu", rp.node, t, method, path, len))
        return err_set(err, MB_EBUSY, "the cluster's key is not here yet");
    snprintf(url, sizeof url, strchr(addr, ':') != strrchr(addr, ':') ? "http://[%s]%s" : "http://%s%s", addr, path);
    struct curl_slist *h = NULL;
    snprintf(line, sizeof line, SIGN_HEADER ": %s.%lld.%s", rp.node, t, mac);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof line, HEAD_HEADER ": %s", head);
    h = curl_slist_append(h, line);
    h = curl_slist_append(h, "Content-Type: application/octet-stream");
    h = curl_slist_append(h, "Expect:");
    db_ops got = {0};
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    int rc = 0;
    json_t *j = got.n ? json_loadb(got.p, got.n, 0, NULL) : NULL;
    if (cc != CURLE_OK)
        rc = err_set(err, MB_EBUSY, "node %s did not answer (%s)", node, curl_easy_strerror(cc));
    else if (status < 200 || status > 299)
        rc = err_set(err, MB_ECONFLICT, "node %s refused (HTTP %ld: %s)", node, status,
                     *jstr(j, "detail") ? jstr(j, "detail") : "no reason given");
    free(got.p);
    if (ans)
        *ans = j;
    else
        json_decref(j);
    return rc;
}

int repl_ask(void *curl, const char *node, const char *path, const char *body, size_t len, long timeout_ms,
             json_t **ans, mb_err *err)
{
    return ask(curl, node, "POST", path, body, len, true, timeout_ms, ans, err);
}

/* Put the chunks the replica said it lacks ([{"h","n","s"}]) from this node's store. */
static int put_missing(CURL *c, const char *node, const json_t *missing, mb_err *err)
{
    size_t i;
    json_t *m;
    json_array_foreach(missing, i, m)
    {
        const char *h = jstr(m, "h");
        size_t n = (size_t)jint(m, "n");
        if (strlen(h) != 64 || n > CHUNK_MAX)
            return err_set(err, MB_EIO, "node %s asked for a chunk that is not one", node);
        void *buf = xmalloc(n ? n : 1);
        int rc = blob_read_store((uint64_t)jint(m, "s"), h, NULL, buf, n, err);
        char path[128];
        snprintf(path, sizeof path, CHUNK_PATH "%s", h);
        if (!rc)
            rc = ask(c, node, "PUT", path, buf, n, false, REPL_WAIT_MS, NULL, err);
        free(buf);
        if (rc)
            return rc;
    }
    return 0;
}

int cluster_chunk_to_replica(uint64_t sid, const char *hash, size_t n, mb_err *err)
{
    if (!atomic_load(&rp.on) || n <= blob_inline_max())
        return 0;
    json_t *rec = cluster_store_record(sid);
    char replica[64] = "";
    if (rec && !strcmp(jstr(rec, "node"), rp.node))
        snprintf(replica, sizeof replica, "%s", jstr(rec, "replica"));
    json_decref(rec);
    if (!*replica) /* none now: the one filled later names the chunks it lacks */
        return 0;
    CURL *c = curl_easy_init();
    if (!c)
        return err_set(err, MB_EIO, "no curl handle");
    json_t *one = json_pack("[{s:s, s:I, s:I}]", "h", hash, "n", (json_int_t)n, "s", (json_int_t)sid);
    int rc = put_missing(c, replica, one, err);
    json_decref(one);
    curl_easy_cleanup(c);
    return rc;
}

json_t *repl_swap_change(const json_t *cur, void *ud)
{
    const struct repl_swap *w = ud;
    if (w->kept_later && !strcmp(jstr(cur, "node"), w->node) && (uint64_t)jint(cur, "epoch") > w->epoch)
        *w->kept_later = true;
    if (strcmp(jstr(cur, "node"), w->node) || strcmp(jstr(cur, "replica"), w->replica) ||
        (uint64_t)jint(cur, "epoch") != w->epoch || (w->not_filling && json_is_true(json_object_get(cur, "filling"))))
        return NULL;
    json_t *r = json_deep_copy(cur);
    json_object_set_new(r, "node", json_string(w->to_node));
    if (*w->to_replica)
        json_object_set_new(r, "replica", json_string(w->to_replica));
    else
        json_object_del(r, "replica");
    if (w->filling)
        json_object_set_new(r, "filling", json_true());
    else
        json_object_del(r, "filling");
    json_object_set_new(r, "epoch", json_integer((json_int_t)(w->epoch + (uint64_t)w->step)));
    return r;
}

/* The answer for a run of items to one node: each item's group learns it. A failed item drops the
 * replica (or marks the store broken) before its group is told. */
static void answer(item *run, int rc, const mb_err *why)
{
    for (item *it = run; it; it = it->next) {
        int irc = rc;
        char msg[512] = "";
        if (rc) {
            char hex[17];
            sid_text(hex, it->sid);
            pthread_mutex_lock(&rp.mu);
            bool closing = rp.closing, broken = jint(rp.broken, hex) == (json_int_t)it->epoch;
            pthread_mutex_unlock(&rp.mu);
            json_t *now = cluster_store_record(it->sid);
            bool dropped = now && !strcmp(jstr(now, "node"), rp.node) && (uint64_t)jint(now, "epoch") > it->epoch;
            json_decref(now);
            mb_err e;
            /* the store goes on without the replica: still this node's, this epoch, this replica. Or this
             * node dropped or replaced that replica itself meanwhile (a move's first step), which etcd
             * says before the record here does: the change is safe here too. */
            struct repl_swap d = {.node = rp.node, .replica = it->node, .epoch = it->epoch, .to_node = rp.node,
                             .to_replica = "", .step = 1, .kept_later = &dropped};
            int crc = MB_ENOENT;
            /* a store made a moment ago: its placement must reach etcd first (the queue may be long) */
            for (int64_t until = now_mono_ms() + 10000; !dropped && !broken && !closing && crc == MB_ENOENT &&
                                                        now_mono_ms() < until;) {
                cluster_kv_flush(2000);
                crc = cluster_store_cas(it->sid, repl_swap_change, &d, NULL, &e);
            }
            if (!crc) {
                log_warn("cluster: store %llu goes on without its replica on node %s (%s); epoch %llu",
                         (unsigned long long)it->sid, it->node, why->msg, (unsigned long long)it->epoch + 1);
                dropped = true;
            } else if (!dropped && !broken && !closing)
                log_warn("cluster: store %llu could not drop its replica on node %s: %s", (unsigned long long)it->sid,
                         it->node, e.msg);
            if (dropped)
                irc = 0;
            else {
                pthread_mutex_lock(&rp.mu);
                if (!broken)
                    json_object_set_new(rp.broken, hex, json_integer((json_int_t)it->epoch));
                pthread_mutex_unlock(&rp.mu);
                irc = MB_EBUSY;
                snprintf(msg, sizeof msg, "store %llu's change was not confirmed by its replica on node %s (%s): try again",
                         (unsigned long long)it->sid, it->node, why->msg);
            }
        }
        pthread_mutex_lock(&rp.mu);
        if (irc && !it->g->rc) {
            it->g->rc = irc;
            snprintf(it->g->why, sizeof it->g->why, "%s", msg);
        }
        it->g->pending--;
        pthread_cond_broadcast(&rp.done);
        pthread_mutex_unlock(&rp.mu);
    }
}

void repl_frame_head(db_ops *o, uint64_t sid, uint64_t epoch, const uint64_t hw[2], size_t len)
{
    char head[FRAME_HEAD];
    repl_put_u(head, sid, 8);
    repl_put_u(head + 8, epoch, 8);
    repl_put_u(head + 16, hw[0], 8);
    repl_put_u(head + 24, hw[1], 8);
    repl_put_u(head + 32, len, 4);
    db_ops_add(o, head, sizeof head);
}

const char *repl_frames(const char *p, size_t n, const char *(*fn)(const repl_frame *f, void *ud), void *ud)
{
    const char *end = p + n;
    while (p < end) {
        if (end - p < FRAME_HEAD || (size_t)(end - p - FRAME_HEAD) < repl_get_u(p + 32, 4))
            return "the body is not a list of changes";
        repl_frame f = {repl_get_u(p, 8), repl_get_u(p + 8, 8), {repl_get_u(p + 16, 8), repl_get_u(p + 24, 8)},
                        p + FRAME_HEAD, (size_t)repl_get_u(p + 32, 4)};
        size_t off = 0, kl, vl;
        const char *k, *v;
        int op;
        while ((op = db_repl_next(f.ops, f.len, &off, &k, &kl, &v, &vl)) > 0)
            ;
        if (op < 0)
            return "a change in the body is not well formed";
        const char *no = fn ? fn(&f, ud) : NULL;
        if (no)
            return no;
        p += FRAME_HEAD + f.len;
    }
    return NULL;
}

/* Post frames to node's path; put the chunks the replica says it lacks and post again. */
static int post_frames(CURL *c, const char *node, const char *path, const db_ops *b, mb_err *err)
{
    json_t *ans = NULL;
    int rc = 0;
    for (int round = 0; round < 1000; round++) { /* the replica names at most 1,000 chunks at a time */
        json_decref(ans);
        rc = ask(c, node, "POST", path, b->p, b->n, true, REPL_WAIT_MS, &ans, err);
        json_t *missing = json_object_get(ans, "missing");
        if (!rc || !json_is_array(missing))
            break;
        if ((rc = put_missing(c, node, missing, err)))
            break;
        rc = err_set(err, MB_EIO, "node %s still lacked chunks", node);
    }
    json_decref(ans);
    return rc;
}

/* Post a run of items (one node) as frames; each item's group learns the answer. */
static void post_run(CURL *c, item *run)
{
    db_ops b = {0};
    for (item *it = run; it; it = it->next) {
        repl_frame_head(&b, it->sid, it->epoch, it->hw, it->len);
        db_ops_add(&b, it->ops, it->len);
    }
    mb_err err = {0};
    int rc = post_frames(c, run->node, REPL_PATH, &b, &err);
    free(b.p);
    answer(run, rc, &err);
}

static void *send_main(void *arg)
{
    sender *me = arg;
    pthread_setname_np(pthread_self(), "mb-cl-repl");
    pthread_mutex_lock(&rp.mu);
    for (;;) {
        while (!me->head && rp.send_run)
            pthread_cond_wait(&rp.cv, &rp.mu);
        if (!me->head)
            break;
        /* the run: consecutive items for one node, up to POST_MAX bytes */
        item *run = me->head, *last = run;
        size_t bytes = run->len;
        while (last->next && !strcmp(last->next->node, run->node) && bytes + last->next->len <= POST_MAX) {
            last = last->next;
            bytes += last->len;
        }
        me->head = last->next;
        if (!me->head)
            me->tail = &me->head;
        last->next = NULL;
        me->sending = true;
        pthread_mutex_unlock(&rp.mu);
        post_run(me->curl, run);
        while (run) {
            item *n = run->next;
            free(run->ops);
            free(run);
            run = n;
        }
        pthread_mutex_lock(&rp.mu);
        me->sending = false;
        pthread_cond_broadcast(&rp.done);
    }
    pthread_mutex_unlock(&rp.mu);
    return NULL;
}

/* Under mu: node's sender, made (with its thread) when first needed; NULL when none can be. */
static sender *sender_for(const char *node)
{
    for (int i = 0; i < rp.nsnd; i++)
        if (!strcmp(rp.snd[i].node, node))
            return &rp.snd[i];
    if (rp.nsnd == SENDERS_MAX) { /* shared by name: a node's changes still go through one queue, in order */
        uint32_t h = 2166136261u;
        for (const char *p = node; *p; p++)
            h = (h ^ (uint8_t)*p) * 16777619u;
        return &rp.snd[h % SENDERS_MAX];
    }
    sender *s = &rp.snd[rp.nsnd];
    *s = (sender){.curl = curl_easy_init()};
    snprintf(s->node, sizeof s->node, "%s", node);
    s->tail = &s->head;
    if (!s->curl || pthread_create(&s->th, NULL, send_main, s)) {
        if (s->curl)
            curl_easy_cleanup(s->curl);
        log_error("cluster: no sender thread for node %s: its stores' changes are refused until one can start", node);
        return NULL;
    }
    rp.nsnd++;
    return s;
}

/* Under mu: nothing queued or being posted to any node. */
static bool senders_idle(void)
{
    for (int i = 0; i < rp.nsnd; i++)
        if (rp.snd[i].head || rp.snd[i].sending)
            return false;
    return true;
}

/* -------------------------------------------------------------- failover --- */

/* ----------------------------------------------------------- chunks early --- */
/* A chunk an upload just wrote to this node's disk goes to the store's replica at once, on the
 * upload's store thread, while the client is still sending: at the commit the replica lacks
 * nothing and the change is confirmed in one round trip. A copy that fails is left to the commit
 * (the replica names what it lacks). Easy handles are pooled (one per concurrent upload). */
#define EARLY_POOL 8

static struct {
    pthread_mutex_t mu;
    CURL *free[EARLY_POOL];
    int n;
} early = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void chunk_early(uint64_t sid, const char *hash, const void *data, size_t len)
{
    if (!atomic_load(&rp.on) || len <= blob_inline_max())
        return;
    json_t *rec = cluster_store_record(sid);
    char replica[64];
    bool mine = rec && !strcmp(jstr(rec, "node"), rp.node) && *jstr(rec, "replica");
    snprintf(replica, sizeof replica, "%s", mine ? jstr(rec, "replica") : "");
    json_decref(rec);
    if (!mine)
        return;
    pthread_mutex_lock(&early.mu);
    CURL *c = early.n ? early.free[--early.n] : NULL;
    pthread_mutex_unlock(&early.mu);
    if (!c && !(c = curl_easy_init()))
        return;
    char path[128];
    snprintf(path, sizeof path, CHUNK_PATH "%s", hash);
    mb_err err;
    if (ask(c, replica, "PUT", path, data, len, false, REPL_WAIT_MS, NULL, &err))
        log_debug("cluster: chunk %s did not reach node %s early (%s): the commit sends it", hash, replica, err.msg);
    pthread_mutex_lock(&early.mu);
    if (early.n < EARLY_POOL) {
        early.free[early.n++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&early.mu);
    if (c)
        curl_easy_cleanup(c);
}

/* ---------------------------------------------------------------- filling --- */

struct fill {
    CURL *c;
    db_ops b, ops; /* the request being built, the frame's records */
    uint64_t sid, epoch, hw[2];
    const char *to;
    int rc;
    mb_err err;
    size_t records;
};

static void fill_flush(struct fill *f)
{
    if (f->rc || !f->ops.n)
        return;
    f->b.n = 0;
    repl_frame_head(&f->b, f->sid, f->epoch, f->hw, f->ops.n);
    db_ops_add(&f->b, f->ops.p, f->ops.n);
    f->rc = post_frames(f->c, f->to, FILL_PATH "data", &f->b, &f->err);
    f->ops.n = 0;
}

static void fill_key(const char *k, size_t kl, const char *v, size_t vl, void *ud)
{
    struct fill *f = ud;
    if (f->rc)
        return;
    db_ops_put(&f->ops, k, kl, v, vl);
    f->records++;
    if (f->ops.n >= FILL_FRAME)
        fill_flush(f);
}

/* begin or end: one frame without records */
static int fill_say(struct fill *f, const char *what)
{
    char path[80];
    snprintf(path, sizeof path, FILL_PATH "%s", what);
    f->b.n = 0;
    repl_frame_head(&f->b, f->sid, f->epoch, f->hw, 0);
    return post_frames(f->c, f->to, path, &f->b, &f->err);
}

/* Give store sid (this node's, at rec's epoch, without a replica) a replica on node `to`. */
static int fill(CURL *c, uint64_t sid, const json_t *rec, const char *to, mb_err *err)
{
    uint64_t e = (uint64_t)jint(rec, "epoch");
    struct fill f = {.c = c, .sid = sid, .epoch = e + 1, .to = to, .hw = {db_id_high("entry"), db_id_high("trash")}};
    bool named = false;
    if (!(f.rc = fill_say(&f, "begin"))) { /* wiped there; it takes the store's changes from this node */
        struct repl_swap w = {.node = rp.node, .replica = "", .epoch = e, .to_node = rp.node, .to_replica = to,
                              .step = 1, .filling = true};
        txn_lock(); /* no change in flight: every one after the snapshot is handed on live */
        f.rc = cluster_store_cas(sid, repl_swap_change, &w, NULL, &f.err);
        db_snap *snap = f.rc ? NULL : db_snap_take();
        txn_unlock();
        named = !f.rc;
        if (snap) {
            repl_store_keys(snap, sid, fill_key, &f);
            fill_flush(&f);
            db_snap_release(snap);
        }
    }
    if (named && !f.rc)
        f.rc = fill_say(&f, "end");
    if (named && !f.rc) {
        struct repl_swap w = {.node = rp.node, .replica = to, .epoch = e + 1, .not_filling = false,
                              .to_node = rp.node, .to_replica = to, .step = 0};
        f.rc = cluster_store_cas(sid, repl_swap_change, &w, NULL, &f.err);
    }
    char hex[17];
    sid_text(hex, sid);
    if (!f.rc) {
        log_info("cluster: store %llu has a replica on node %s again (%zu records copied; epoch %llu)",
                 (unsigned long long)sid, to, f.records, (unsigned long long)e + 1);
        json_object_del(rp.fill_failed, hex);
    } else {
        log_warn("cluster: store %llu could not be given a replica on node %s: %s", (unsigned long long)sid, to,
                 f.err.msg);
        if (named) { /* a replica half filled is dropped: it can never take the store over */
            struct repl_swap d = {.node = rp.node, .replica = to, .epoch = e + 1, .to_node = rp.node,
                                  .to_replica = "", .step = 1};
            mb_err ignored;
            cluster_store_cas(sid, repl_swap_change, &d, NULL, &ignored);
        }
        json_object_set_new(rp.fill_failed, hex, json_integer(now_mono_ms()));
        *err = f.err;
    }
    free(f.b.p);
    free(f.ops.p);
    return f.rc;
}


/* ------------------------------------------------------------------ moves --- */

#define MOVE_TASK "kernel.cluster_move"
#define MOVE_DRAIN_MS 30000 /* requests under way for the store the switch waits for, at most */

/* Store sid to node `to`: `to` becomes its replica (filled) unless it is already, then, once no
 * request served here for it is under way (the gate) and no change of it is in flight (the
 * commit lock; the sender's queue empty), the placement swaps: `to` keeps it, this node is its
 * replica (it has every change), epoch + 1. Requests that arrived meanwhile go to `to`. */
static int move_steps(mb_task *t, uint64_t sid, const char *to, json_t *rec, mb_err *err);

static int move_run(mb_task *t, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    uint64_t sid = (uint64_t)jint(args, "store");
    const char *to = jstr(args, "to");
    json_t *rec = cluster_store_record(sid);
    int rc = 0;
    if (!rec || strcmp(jstr(rec, "node"), rp.node)) {
        rc = !rec || strcmp(jstr(rec, "node"), to)
                 ? err_set(err, MB_ECONFLICT, "store %llu is not kept by this node (node %s) any more",
                           (unsigned long long)sid, rp.node)
                 : 0; /* a move retried after its switch: done */
        json_decref(rec);
        return rc;
    }
    task_progress(t, 5, "making the target the store's replica");
    atomic_fetch_add(&rp.moving, 1);
    rc = move_steps(t, sid, to, rec, err);
    atomic_fetch_sub(&rp.moving, 1);
    return rc;
}

static int move_steps(mb_task *t, uint64_t sid, const char *to, json_t *rec, mb_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&rp.fill_mu);
    if (strcmp(jstr(rec, "replica"), to) || json_is_true(json_object_get(rec, "filling"))) {
        if (*jstr(rec, "replica")) { /* the old replica goes: the target takes its place */
            struct repl_swap d = {.node = rp.node, .replica = jstr(rec, "replica"),
                                  .epoch = (uint64_t)jint(rec, "epoch"), .to_node = rp.node, .to_replica = "",
                                  .step = 1};
            json_t *now = NULL;
            rc = cluster_store_cas(sid, repl_swap_change, &d, &now, err);
            json_decref(rec);
            rec = now;
        }
        CURL *c = rc ? NULL : curl_easy_init();
        if (c) {
            rc = fill(c, sid, rec, to, err);
            curl_easy_cleanup(c);
        }
        json_decref(rec);
        rec = rc ? NULL : cluster_store_record(sid);
    }
    pthread_mutex_unlock(&rp.fill_mu);
    if (rc || !rec) {
        json_decref(rec);
        return rc ? rc : err_set(err, MB_EIO, "store %llu's placement went missing", (unsigned long long)sid);
    }
    task_progress(t, 80, "switching over");
    log_info("cluster: store %llu switches over to node %s once the requests under way for it here have ended "
             "(those that come meanwhile wait)", (unsigned long long)sid, to);
    int left = cluster_gate_close(sid, MOVE_DRAIN_MS);
    if (left)
        log_warn("cluster: store %llu moves with %d requests still under way here", (unsigned long long)sid, left);
    txn_lock(); /* no change of it in flight, and none handed on still unanswered */
    pthread_mutex_lock(&rp.mu);
    while (!senders_idle())
        pthread_cond_wait(&rp.done, &rp.mu);
    pthread_mutex_unlock(&rp.mu);
    struct repl_swap w = {.node = rp.node, .replica = to, .epoch = (uint64_t)jint(rec, "epoch"), .not_filling = true,
                          .to_node = to, .to_replica = rp.node, .step = 1};
    json_t *now = NULL;
    rc = cluster_store_cas(sid, repl_swap_change, &w, &now, err);
    txn_unlock();
    cluster_gate_open(sid);
    if (!rc) {
        log_info("cluster: store %llu moved to node %s (this node is its replica now; epoch %lld)",
                 (unsigned long long)sid, to, (long long)jint(now, "epoch"));
        task_result(t, json_pack("{s:I, s:s, s:s, s:I}", "store", (json_int_t)sid, "from", rp.node, "to", to,
                                 "epoch", jint(now, "epoch")));
    }
    json_decref(now);
    json_decref(rec);
    return rc;
}

int cluster_move_submit(uint64_t sid, const char *to, uint64_t uid, uint64_t *task, mb_err *err)
{
    char addr[300];
    json_t *rec = cluster_store_record(sid);
    int rc = 0;
    if (!rec)
        rc = err_set(err, MB_ENOENT, "no store %llu in the cluster", (unsigned long long)sid);
    else if (strcmp(jstr(rec, "node"), rp.node))
        rc = err_set(err, MB_ECONFLICT, "store %llu is kept by node %s, not by this one: ask it there",
                     (unsigned long long)sid, jstr(rec, "node"));
    else if (!strcmp(to, rp.node))
        rc = err_set(err, MB_ECONFLICT, "store %llu is kept by node %s already", (unsigned long long)sid, to);
    else if (!cluster_node_replication(to, addr, sizeof addr))
        rc = err_set(err, MB_EINVAL, "node '%s' is not up (or does not take stores yet)", to);
    json_decref(rec);
    return rc ? rc : task_submit(MOVE_TASK, uid, json_pack("{s:I, s:s}", "store", (json_int_t)sid, "to", to), task, err);
}

/* Stores whose replica missed a change while etcd could not confirm dropping it take no change
 * until it does: the drop is tried again each look. */
static void retry_broken(void)
{
    pthread_mutex_lock(&rp.mu);
    json_t *broken = json_deep_copy(rp.broken);
    pthread_mutex_unlock(&rp.mu);
    const char *hex;
    json_t *e;
    json_object_foreach(broken, hex, e)
    {
        uint64_t sid = strtoull(hex, NULL, 16);
        json_t *rec = cluster_store_record(sid);
        mb_err err;
        struct repl_swap d = {.node = rp.node, .replica = jstr(rec, "replica"), .epoch = (uint64_t)json_integer_value(e),
                              .to_node = rp.node, .to_replica = "", .step = 1};
        bool gone = !rec || strcmp(jstr(rec, "node"), rp.node) || jint(rec, "epoch") != json_integer_value(e);
        if (!gone && cluster_store_cas(sid, repl_swap_change, &d, NULL, &err) == 0) {
            log_warn("cluster: store %llu goes on without its replica on node %s (etcd confirmed it now); epoch %lld",
                     (unsigned long long)sid, d.replica, (long long)json_integer_value(e) + 1);
            gone = true;
        } else if (gone && rec && !strcmp(jstr(rec, "node"), rp.node))
            /* still this node's at a later epoch: an earlier try's swap that etcd made but whose answer
             * was lost (etcd starting again), or a move's or fill's own step */
            log_warn("cluster: store %llu takes changes again: etcd's record of it is at epoch %lld now (replica %s)",
                     (unsigned long long)sid, (long long)jint(rec, "epoch"),
                     *jstr(rec, "replica") ? jstr(rec, "replica") : "none");
        if (gone) { /* dropped now, or the store is another's or at another epoch: nothing to wait for */
            pthread_mutex_lock(&rp.mu);
            if (jint(rp.broken, hex) == json_integer_value(e))
                json_object_del(rp.broken, hex);
            pthread_mutex_unlock(&rp.mu);
        }
        json_decref(rec);
    }
    json_decref(broken);
}

/* What one look saw of the placements for rebalancing: stores per node, this node's own with their
 * bytes. */
struct tally {
    json_t *count;   /* node -> stores it keeps */
    bool filling;    /* a store gets a replica somewhere (a fill, a move): no new move meanwhile */
    uint64_t *sid;   /* this node's stores, with their replicas and bytes */
    char (*replica)[64];
    int64_t *bytes;
    int64_t kept;    /* their bytes together */
    size_t n, cap;
};

static void tally_add(struct tally *ty, uint64_t sid, const json_t *r)
{
    const char *node = jstr(r, "node");
    json_object_set_new(ty->count, node, json_integer(jint(ty->count, node) + 1));
    ty->filling = ty->filling || json_is_true(json_object_get(r, "filling"));
    if (strcmp(node, rp.node))
        return;
    if (ty->n == ty->cap) {
        ty->cap = ty->cap ? ty->cap * 2 : 16;
        ty->sid = xrealloc(ty->sid, ty->cap * sizeof *ty->sid);
        ty->replica = xrealloc(ty->replica, ty->cap * sizeof *ty->replica);
        ty->bytes = xrealloc(ty->bytes, ty->cap * sizeof *ty->bytes);
    }
    char key[32];
    txn_usage_t u;
    id_key(key, sizeof key, "us", sid);
    txn_usage_read(key, &u);
    ty->sid[ty->n] = sid;
    ty->bytes[ty->n] = u.bytes > 0 ? u.bytes : 0;
    ty->kept += ty->bytes[ty->n];
    snprintf(ty->replica[ty->n++], 64, "%s", jstr(r, "replica"));
}

/* Rebalancing (cluster.rebalance, on by default). A node's load is the bytes of the stores it keeps
 * plus cluster.store_weight_mb for each of them (a store costs metadata and requests whatever its
 * size). The node with the most load (the first by name among equals; its own load counted now, the
 * others' bytes as their records said at their last refresh) moves one store to the node with the
 * least, when that lowers the larger of the two by a store's weight at least: the store's load is at
 * most their difference less one weight. Among those, a store whose replica is that node already
 * (no fill), else the one that evens the two best. Each move lowers the sum of the loads' squares
 * by two weights' squares at least, so the moves end; with stores of no bytes, this is "move when
 * the counts differ by two or more". One move at a time in the whole cluster (none while any store
 * is filling), BALANCE_PAUSE_MS at least between two, and two record refreshes, so that the
 * receiving node's record counts the last move's bytes before the next is weighed. */
static void rebalance(const struct tally *ty)
{
    int64_t pause = (int64_t)g_cfg->cluster_lease_ttl * 1000 * 2 / 3 + 1000;
    if (!g_cfg->cluster_rebalance || ty->filling || atomic_load(&rp.moving) || !ty->n ||
        now_mono_ms() - rp.balanced_ms < (pause > BALANCE_PAUSE_MS ? pause : BALANCE_PAUSE_MS))
        return;
    int64_t w = g_cfg->cluster_store_weight;
    json_t *view = cluster_view(), *e;
    char most[64] = "", least[64] = "";
    int64_t hi = -1, lo = 0;
    size_t i;
    json_array_foreach(json_object_get(view, "nodes"), i, e)
    {
        const char *name = jstr(e, "name");
        if (jint(e, "replication") <= 0) /* it does not take stores yet */
            continue;
        int64_t load = jint(ty->count, name) * w + (strcmp(name, rp.node) ? jint(e, "kept") : ty->kept);
        if (load > hi || (load == hi && strcmp(name, most) < 0))
            hi = load, snprintf(most, sizeof most, "%s", name);
        if (!*least || load < lo || (load == lo && strcmp(name, least) < 0))
            lo = load, snprintf(least, sizeof least, "%s", name);
    }
    json_decref(view);
    if (strcmp(most, rp.node) || hi - lo < 2 * w)
        return;
    size_t k = ty->n;
    int64_t best = INT64_MAX;
    for (i = 0; i < ty->n; i++) {
        int64_t load = ty->bytes[i] + w, off = hi - lo - 2 * load;
        if (load > hi - lo - w)
            continue;
        if (off < 0)
            off = -off;
        if (!strcmp(ty->replica[i], least))
            off = -1; /* no fill: before any other */
        if (off < best)
            best = off, k = i;
    }
    if (k == ty->n)
        return; /* every store here is too big to even the two by moving it */
    uint64_t task;
    mb_err err;
    rp.balanced_ms = now_mono_ms();
    if (cluster_move_submit(ty->sid[k], least, 0, &task, &err))
        log_warn("cluster: rebalancing: store %llu cannot move to node %s: %s", (unsigned long long)ty->sid[k], least,
                 err.msg);
    else
        log_info("cluster: rebalancing: store %llu (%lld bytes) moves to node %s (load %lld MiB here, %lld MiB there; "
                 "task %llu)", (unsigned long long)ty->sid[k], (long long)ty->bytes[k], least, (long long)(hi >> 20),
                 (long long)(lo >> 20), (unsigned long long)task);
}

/* This node keeps store sid from now on (it took it over, or it was moved here): the hook event
 * cluster.store {store, node, epoch, state: "kept"}, so that modules whose data of a store is their
 * own and not replicated (search's index) catch up on it: its filters at once, on this thread (the
 * WebDAV module reads the store's locks), its observers from the outbox. Not for the stores kept at start, nor for a
 * store just made here (epoch 1: its files' own events follow). */
static void tell_kept(uint64_t sid, const json_t *rec)
{
    mb_err e = {0};
    /* filters first, on this thread: what must be right before the store's first request is served
     * (the WebDAV module's locks); a refusal changes nothing */
    json_t *p = json_pack("{s:I, s:s, s:I, s:s}", "store", (json_int_t)sid, "node", rp.node, "epoch", jint(rec, "epoch"),
                          "state", "kept");
    hook_filter("cluster.store", p, NULL);
    json_decref(p);
    if (hook_emit("cluster.store", json_pack("{s:I, s:s, s:I, s:s}", "store", (json_int_t)sid, "node", rp.node, "epoch",
                                             jint(rec, "epoch"), "state", "kept"), &e))
        log_warn("cluster: store %llu is kept here now, but the modules were not told: %s", (unsigned long long)sid,
                 e.msg);
}

/* The stores this node keeps whose modules know it: told once, by whichever comes first, the
 * placement thread's look or the first request or module call that serves the store here
 * (cluster_store_ready). Before, only the look told them, up to TICK_MS after the store was served
 * here: a WebDAV lock taken on the old keeper did not bind the first requests on the new one. */
static struct {
    pthread_mutex_t mu; /* held while the modules are told: a request for the store waits for it */
    json_t *set;        /* "<sid16>" -> true; NULL before the start */
} told = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Store sid, whose placement is rec, is kept here: its modules are told once (not at epoch 1, a store
 * just made here). */
static void tell_once(uint64_t sid, const json_t *rec)
{
    char hex[17];
    sid_text(hex, sid);
    pthread_mutex_lock(&told.mu);
    if (told.set && !json_object_get(told.set, hex)) {
        if (jint(rec, "epoch") > 1)
            tell_kept(sid, rec);
        json_object_set_new(told.set, hex, json_true());
    }
    pthread_mutex_unlock(&told.mu);
}

void cluster_store_ready(uint64_t sid)
{
    if (!atomic_load(&rp.on))
        return;
    char hex[17];
    sid_text(hex, sid);
    pthread_mutex_lock(&told.mu);
    bool known = !told.set || json_object_get(told.set, hex);
    pthread_mutex_unlock(&told.mu);
    if (known)
        return;
    json_t *rec = cluster_store_record(sid);
    if (rec && !strcmp(jstr(rec, "node"), rp.node))
        tell_once(sid, rec);
    json_decref(rec);
}

/* The look: kept is every store this node kept as it looked. One it no longer keeps (its placement
 * names another node now, read again: a request may have told one that came a moment ago) is told
 * again when it comes back. */
static void told_prune(const json_t *kept)
{
    pthread_mutex_lock(&told.mu);
    const char *k;
    json_t *v, *tmp;
    json_object_foreach_safe(told.set, tmp, k, v) {
        if (json_object_get(kept, k))
            continue;
        json_t *rec = cluster_store_record(strtoull(k, NULL, 16));
        if (!rec || strcmp(jstr(rec, "node"), rp.node))
            json_object_del(told.set, k);
        json_decref(rec);
    }
    pthread_mutex_unlock(&told.mu);
}

/* At the start: the stores this node keeps are known to its modules (they read everything). */
static void told_start(void)
{
    json_t *set = json_object();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        json_t *r = kl == 19 ? json_loadb(v, vl, 0, NULL) : NULL;
        if (r && !strcmp(jstr(r, "node"), rp.node)) {
            char hex[17];
            memcpy(hex, k + 3, 16);
            hex[16] = 0;
            json_object_set_new(set, hex, json_true());
        }
        json_decref(r);
    }
    db_iter_free(it);
    pthread_mutex_lock(&told.mu);
    json_decref(told.set);
    told.set = set;
    pthread_mutex_unlock(&told.mu);
}

/* One look of the placement thread, one pass over the placements: the stores to take over
 * (cluster_replica.c), then the stores whose replica must still be dropped, then one store this node
 * keeps without a replica gets one, when another node takes replicas (and its last try is
 * FILL_RETRY_S old; a move's fill holds fill_mu meanwhile). */
static void look(void)
{
    pthread_mutex_lock(&rp.mu);
    bool closing = rp.closing;
    pthread_mutex_unlock(&rp.mu);
    char to[64];
    bool can_fill = !closing && cluster_pick_node(NULL, to, sizeof to) && !pthread_mutex_trylock(&rp.fill_mu);
    uint64_t sid = 0;
    json_t *pick = NULL;
    struct tally ty = {.count = json_object()};
    json_t *kept = json_object();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        char hex[17];
        if (kl != 19)
            continue;
        memcpy(hex, k + 3, 16);
        hex[16] = 0;
        json_t *r = json_loadb(v, vl, 0, NULL);
        uint64_t id = strtoull(hex, NULL, 16);
        if (r)
            tally_add(&ty, id, r);
        if (!strcmp(jstr(r, "node"), rp.node)) {
            json_object_set_new(kept, hex, json_true());
            tell_once(id, r); /* taken over, or moved here (the stores kept at the start are known) */
            json_int_t failed = jint(rp.fill_failed, hex);
            if (can_fill && !pick && !*jstr(r, "replica") && (!failed || now_mono_ms() - failed > FILL_RETRY_S * 1000)) {
                sid = id;
                pick = json_incref(r);
            }
        } else if (r)
            replica_consider(id, r);
        json_decref(r);
    }
    db_iter_free(it);
    json_decref(rp.kept);
    rp.kept = kept;
    told_prune(kept);
    retry_broken();
    mb_err err;
    if (pick)
        fill(rp.fill_curl, sid, pick, to, &err);
    json_decref(pick);
    if (can_fill)
        pthread_mutex_unlock(&rp.fill_mu);
    cluster_set_kept(ty.kept);
    if (!closing && !pick)
        rebalance(&ty);
    json_decref(ty.count);
    free(ty.sid);
    free(ty.replica);
    free(ty.bytes);
}

static void *place_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-cl-place");
    pthread_mutex_lock(&rp.mu);
    while (rp.place_run) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&rp.tick, &rp.mu, &ts);
        if (!rp.place_run)
            break;
        pthread_mutex_unlock(&rp.mu);
        look();
        pthread_mutex_lock(&rp.mu);
    }
    pthread_mutex_unlock(&rp.mu);
    return NULL;
}

/* ------------------------------------------------------------ start, stop --- */

int cluster_repl_start(mb_err *err)
{
    if (!cluster_enabled())
        return 0;
    snprintf(rp.node, sizeof rp.node, "%s", cluster_node_name());
    told_start();
    rp.broken = json_object();
    rp.fill_failed = json_object();
    rp.fill_curl = curl_easy_init();
    static const mb_task_type move = {.size = sizeof move, .name = MOVE_TASK, .run = move_run, .max_attempts = 3};
    int rc = task_type_add(NULL, &move, NULL, err);
    if (rc)
        return rc;
    rp.send_run = rp.place_run = true;
    rp.balanced_ms = now_mono_ms(); /* the view settles before the first rebalancing move */
    pthread_create(&rp.place_th, NULL, place_main, NULL);
    atomic_store(&rp.on, true);
    txn_observe(&observer);
    blob_on_store_put(chunk_early);
    static const migrate_cluster mc = {cluster_spare, cluster_chunk_to_replica};
    migrate_on_cluster(&mc);
    replica_start(rp.node); /* the others may choose this node as a replica from now on */
    cluster_gc_start();
    cluster_events_start();
    return 0;
}

void cluster_repl_stop(void)
{
    if (!atomic_load(&rp.on))
        return;
    pthread_mutex_lock(&rp.mu);
    rp.place_run = false;
    rp.closing = true;
    pthread_cond_broadcast(&rp.tick);
    pthread_mutex_unlock(&rp.mu);
    pthread_join(rp.place_th, NULL);
    cluster_gc_stop();
}

void cluster_repl_fini(void)
{
    if (atomic_load(&rp.on)) { /* the observer stays: what still commits (a task stopping) is refused */
        pthread_mutex_lock(&rp.mu);
        rp.send_run = false; /* no sender is made from now on */
        pthread_cond_broadcast(&rp.cv);
        int n = rp.nsnd;
        pthread_mutex_unlock(&rp.mu);
        for (int i = 0; i < n; i++) {
            pthread_join(rp.snd[i].th, NULL); /* each answers what is queued first */
            curl_easy_cleanup(rp.snd[i].curl);
        }
        rp.nsnd = 0;
        cluster_events_stop();
        curl_easy_cleanup(rp.fill_curl);
        json_decref(rp.broken);
        json_decref(rp.fill_failed);
        json_decref(rp.kept);
        rp.broken = rp.fill_failed = rp.kept = NULL;
        pthread_mutex_lock(&told.mu);
        json_decref(told.set);
        told.set = NULL;
        pthread_mutex_unlock(&told.mu);
        blob_on_store_put(NULL); /* (an upload still storing may finish its copy first) */
        migrate_on_cluster(NULL);
        pthread_mutex_lock(&early.mu);
        while (early.n)
            curl_easy_cleanup(early.free[--early.n]);
        pthread_mutex_unlock(&early.mu);
    }
    replica_stop();
}
