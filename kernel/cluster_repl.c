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
 * Filling. A store without a replica gets one (the placement thread of cluster_place.c, or a
 * move's task, one store at a time under the fill lock): the
 * chosen node is wiped of the store; under the commit lock the placement names it the replica
 * (filling, epoch + 1) and a LevelDB snapshot is taken, so every change after the snapshot reaches
 * it live; the snapshot's records follow in frames (the replica keeps what a live change wrote
 * over them), then the placement says it is filled. Until then it cannot take the store over.
 *
 * Threads: hand() on writers (under the commit lock), wait_for() on writers, the sender threads,
 * the placement thread and a move's task (fills, the broken stores' drops). mu guards the queues,
 * the answers and the broken stores; fill_mu the fills; the commit lock is never held while a node
 * is asked anything.
 */
#include "cluster_repl.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POST_MAX (16u << 20) /* changes posted in one request (one change may be bigger) */
#define FILL_FRAME (4u << 20) /* a fill's records per request */
#define FILL_RETRY_S 10       /* a store whose fill failed waits this long before the next */
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
    bool send_run;
    pthread_mutex_t mu;
    pthread_cond_t cv, done; /* cv: a queue or stop; done: an item answered */
    sender snd[SENDERS_MAX]; /* mu: the senders made so far (nsnd), each for one node */
    int nsnd;
    json_t *broken; /* mu: "<sid>" -> the epoch whose replica missed a change nobody dropped */
    json_t *fill_failed;    /* fill_mu: "<sid16>" -> when its last fill failed (monotonic ms) */
    pthread_mutex_t fill_mu; /* one fill at a time (the placement thread's, a move's) */
} rp = {.mu = PTHREAD_MUTEX_INITIALIZER, .fill_mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER};

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
    if (kl > 3 && (!memcmp(k, "ci/", 3) || !memcmp(k, "cb/", 3))) /* an inline chunk, its body */
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
            id_key(key, sizeof key, "s", sid);
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

int repl_fill(void *curl, uint64_t sid, const json_t *rec, const char *to, mb_err *err)
{
    uint64_t e = (uint64_t)jint(rec, "epoch");
    struct fill f = {.c = curl, .sid = sid, .epoch = e + 1, .to = to, .hw = {db_id_high("entry"), db_id_high("trash")}};
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

bool repl_fill_lock(bool try)
{
    if (try)
        return !pthread_mutex_trylock(&rp.fill_mu);
    pthread_mutex_lock(&rp.fill_mu);
    return true;
}

void repl_fill_unlock(void) { pthread_mutex_unlock(&rp.fill_mu); }

bool repl_fill_due(uint64_t sid)
{
    char hex[17];
    sid_text(hex, sid);
    json_int_t failed = jint(rp.fill_failed, hex);
    return !failed || now_mono_ms() - failed > FILL_RETRY_S * 1000;
}

void repl_wait_sent(void)
{
    pthread_mutex_lock(&rp.mu);
    while (!senders_idle())
        pthread_cond_wait(&rp.done, &rp.mu);
    pthread_mutex_unlock(&rp.mu);
}

bool repl_closing(void)
{
    pthread_mutex_lock(&rp.mu);
    bool closing = rp.closing;
    pthread_mutex_unlock(&rp.mu);
    return closing;
}


void repl_retry_broken(void)
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

/* ------------------------------------------------------------ start, stop --- */

int cluster_repl_start(mb_err *err)
{
    if (!cluster_enabled())
        return 0;
    snprintf(rp.node, sizeof rp.node, "%s", cluster_node_name());
    rp.broken = json_object();
    rp.fill_failed = json_object();
    rp.send_run = true;
    int rc = place_start(rp.node, err);
    if (rc)
        return rc;
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
    rp.closing = true;
    pthread_mutex_unlock(&rp.mu);
    place_stop();
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
        place_fini();
        json_decref(rp.broken);
        json_decref(rp.fill_failed);
        rp.broken = rp.fill_failed = NULL;
        blob_on_store_put(NULL); /* (an upload still storing may finish its copy first) */
        migrate_on_cluster(NULL);
        pthread_mutex_lock(&early.mu);
        while (early.n)
            curl_easy_cleanup(early.free[--early.n]);
        pthread_mutex_unlock(&early.mu);
    }
    replica_stop();
}
