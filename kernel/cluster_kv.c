/*
 * cluster_kv.c — cluster-wide records (issue 23, second slice; docs/cluster.md "Accounts and
 * tokens on every node"). In cluster mode, accounts, tokens and app passwords are the
 * cluster's, not a node's: a user created on one node logs in on every node, a token revoked
 * on one is refused on all.
 *
 * The records stay where the kernel reads them, in each node's LevelDB (u/, ui/, t/, ut/, ap/,
 * the FTP module's m/ftp/pw/, mc/ (which modules are switched on) and the quotas module's limits
 * m/quotas/user/ and m/quotas/role/, sp/ (which node keeps each store), cs/key (the key nodes
 * sign forwarded requests with), tn/ (which node keeps a tus upload), and the sharing module's
 * share records and link token hashes m/sharing/s/ and m/sharing/t/: the "wide" keys), so nothing on a request's path talks to etcd. etcd holds the cluster's copy under /mbyte/kv/<key>, and its revision order is the
 * truth: the last change etcd took is every node's value.
 *
 * Out: db_repl.c queues every local write of a wide key as a "cq/<seq>" entry in the same LevelDB
 * write (atomic with the change, durable as it is). The publisher thread hands each entry to
 * etcd as one transaction (its puts and deletes together), then deletes it (synced, so an old
 * change is never handed on again over a newer one). While etcd is away entries wait; nothing
 * is lost and the node keeps serving.
 *
 * In: the watcher thread watches /mbyte/kv/ from the revision it applied last ("cl/rev") and
 * writes what etcd reports into LevelDB, its own changes included (a no-op), with cl/rev in the
 * same batch. A key with a local change still queued is skipped: that change comes later in
 * etcd's order and will be everyone's value. The check and the write hold the replication
 * lock (no local wide write lands between them) and the publish lock (no entry is between its
 * etcd transaction and its deletion). When the watch's start was compacted away, and at every
 * start, the node reads the whole prefix (in pages, at one revision) and makes its wide keys
 * equal to it.
 *
 * Joining: the first node of a cluster (the one that creates /mbyte/kv-init) hands its records
 * to etcd and may create the first admin; a node that joins later starts from the cluster's
 * records, and refuses to join if its data directory already has accounts of its own (they
 * would be lost). User ids come from /mbyte/ids/user (compare-and-swap), unique cluster-wide.
 *
 * Threads: cluster_kv_join/stop on the loop thread at start and stop; the publisher and the
 * watcher each own an etcd client; cluster_next_id from any thread (its client's mutex).
 */
#include "kernel.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KV_PREFIX "/mbyte/kv/"
#define INIT_KEY "/mbyte/kv-init"
#define IDS_PREFIX "/mbyte/ids/"
#define REV_KEY "cl/rev"
#define NUMBER_KEY "cl/number"
#define TXN_OPS 100  /* etcd refuses a transaction of more than 128 operations by default */
#define PAGE 500     /* keys per page of a full read */
#define WATCH_MS 15000 /* a watch is started again this often: a silently dead connection ends */

static const char *const wide_prefixes[] = {"u/",  "ui/", "t/",  "ut/", "ap/", "m/ftp/pw/", "mc/", "ms/", "m/quotas/user/",
                                            "m/quotas/role/", "sp/", "cs/", "tn/", "m/sharing/s/",
                                            "m/sharing/t/", "m/sharing/o/", "m/sharing/g/", "nt/", NULL};

static struct {
    bool on;     /* the threads run */
    bool member; /* cluster mode, from the start of the join: ids and placements are the cluster's */
    char node[64]; /* this node's name, copied at the join (a reload may replace g_cfg) */
    etcd *pub, *watch, *ids; /* one client per thread that talks to etcd */
    pthread_t pub_th, watch_th;
    pthread_mutex_t mu; /* stop, kicked, cv */
    pthread_cond_t cv;
    bool kicked;
    atomic_bool stop;
    pthread_mutex_t publish_mu; /* an entry between its etcd txn and its deletion */
    _Atomic int64_t rev;        /* the revision applied last (written by the watcher) */
    bool resync;                /* watcher: read everything again */
    bool replaced;              /* watcher: etcd lost the records (replaced or wiped): start them again */
    int64_t init_rev;           /* the create_revision of the /mbyte/kv-init the records were read under */
    atomic_bool down;           /* etcd did not answer the last call (one warning per outage) */
    struct {
        const char *prefix;
        void (*fn)(const char *rest);
    } ears[4]; /* cluster_kv_on */
} kv = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .publish_mu = PTHREAD_MUTEX_INITIALIZER};

static int start_records(bool joined, bool *first, mb_err *err);
static void own_stores(void);
static void ensure_secret(void);

static bool wide(const char *key, size_t klen)
{
    for (const char *const *p = wide_prefixes; *p; p++) {
        size_t l = strlen(*p);
        if (klen >= l && !memcmp(key, *p, l))
            return true;
    }
    return false;
}

static void kick(void)
{
    pthread_mutex_lock(&kv.mu);
    kv.kicked = true;
    pthread_cond_broadcast(&kv.cv);
    pthread_mutex_unlock(&kv.mu);
}

static void trouble(const char *what, const mb_err *err)
{
    if (!atomic_exchange(&kv.down, true))
        log_warn("cluster: %s: %s (changes of accounts and tokens wait here until etcd answers)", what, err->msg);
}

static void fine(void)
{
    if (atomic_exchange(&kv.down, false))
        log_info("cluster: accounts and tokens flow through etcd again");
}

/* ------------------------------------------------------------------ out --- */

static char *etcd_key(const char *key, size_t klen)
{
    size_t l = strlen(KV_PREFIX);
    char *k = xmalloc(l + klen + 1);
    memcpy(k, KV_PREFIX, l);
    memcpy(k + l, key, klen);
    k[l + klen] = 0;
    return k;
}

/* One op of a transaction: a put of bytes (not text: etcd_req_put takes strings) or a delete. */
static json_t *txn_op(const char *key, size_t klen, const char *val, size_t vlen, bool put)
{
    char *k = etcd_key(key, klen);
    char *kb = etcd_b64(k, strlen(k));
    free(k);
    json_t *op;
    if (put) {
        char *vb = etcd_b64(val, vlen);
        op = json_pack("{s:{s:s, s:s}}", "request_put", "key", kb, "value", vb);
        free(vb);
    } else
        op = json_pack("{s:{s:s}}", "request_delete_range", "key", kb);
    free(kb);
    return op;
}

static int txn_send(etcd *e, json_t *ops, mb_err *err)
{
    etcd_answer a;
    int rc = etcd_call(e, "/v3/kv/txn", json_pack("{s:o}", "success", ops), &a, err);
    if (!rc)
        etcd_answer_free(&a);
    return rc;
}

/* Hand one queue entry to etcd (in transactions of TXN_OPS). */
static int publish_entry(const char *v, size_t n, mb_err *err)
{
    json_t *ops = json_array();
    size_t off = 0, kl, vl;
    const char *k, *val;
    int op, rc = 0;
    while ((op = db_repl_next(v, n, &off, &k, &kl, &val, &vl)) > 0) {
        json_array_append_new(ops, txn_op(k, kl, val, vl, op == 'P'));
        if (json_array_size(ops) == TXN_OPS) {
            if ((rc = txn_send(kv.pub, ops, err)))
                return rc;
            ops = json_array();
        }
    }
    if (op < 0) /* cannot happen: db.c wrote it; dropped rather than stopping the queue */
        log_error("cluster: a queued change of accounts does not read: dropped");
    if (json_array_size(ops))
        return txn_send(kv.pub, ops, err);
    json_decref(ops);
    return 0;
}

/* Every queued entry, oldest first, until the queue is empty or etcd does not answer. */
static void publish_all(void)
{
    while (!atomic_load(&kv.stop)) {
        pthread_mutex_lock(&kv.publish_mu);
        db_iter *it = db_iter_prefix("cq/", 3);
        if (!db_iter_next(it)) {
            db_iter_free(it);
            pthread_mutex_unlock(&kv.publish_mu);
            return;
        }
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(kl < 31 ? kl : 31), k);
        mb_err err;
        int rc = publish_entry(v, vl, &err);
        db_iter_free(it);
        if (!rc)
            db_del(key, strlen(key), true);
        pthread_mutex_unlock(&kv.publish_mu);
        if (rc) {
            trouble("handing a change to etcd", &err);
            return;
        }
        fine();
    }
}

static void *publisher(void *arg)
{
    (void)arg;
    while (!atomic_load(&kv.stop)) {
        publish_all();
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1; /* retries while etcd is away */
        pthread_mutex_lock(&kv.mu);
        if (!kv.kicked && !atomic_load(&kv.stop))
            pthread_cond_timedwait(&kv.cv, &kv.mu, &ts);
        kv.kicked = false;
        pthread_mutex_unlock(&kv.mu);
    }
    return NULL;
}

/* ------------------------------------------------------------------- in --- */

/* A key as a C string (keys are text; json objects want one). */
static char *key_text(const char *k, size_t kl)
{
    char *s = xmalloc(kl + 1);
    memcpy(s, k, kl);
    s[kl] = 0;
    return s;
}

/* The keys of the changes still queued here (the publish lock held): a json object. */
static json_t *queued_keys(void)
{
    json_t *q = json_object();
    db_iter *it = db_iter_prefix("cq/", 3);
    while (db_iter_next(it)) {
        size_t vl, off = 0, kl, dl;
        const char *v = db_iter_val(it, &vl), *k, *d;
        while (db_repl_next(v, vl, &off, &k, &kl, &d, &dl) > 0) {
            char *s = key_text(k, kl);
            json_object_set_new(q, s, json_true());
            free(s);
        }
    }
    db_iter_free(it);
    return q;
}

static void rev_put(db_batch *b, int64_t rev)
{
    char s[24];
    int n = snprintf(s, sizeof s, "%lld", (long long)rev);
    db_batch_put(b, REV_KEY, strlen(REV_KEY), s, (size_t)n);
}

void cluster_kv_on(const char *prefix, void (*fn)(const char *rest))
{
    for (size_t i = 0; i < sizeof kv.ears / sizeof kv.ears[0]; i++)
        if (!kv.ears[i].fn || !strcmp(kv.ears[i].prefix, prefix)) {
            kv.ears[i].prefix = prefix;
            kv.ears[i].fn = fn;
            return;
        }
    abort(); /* a programming error: more listeners than slots */
}

/* The listener of key k's prefix (NULL: none); *rest is what follows the prefix. */
static void (*listener(const char *k, const char **rest))(const char *)
{
    for (size_t i = 0; i < sizeof kv.ears / sizeof kv.ears[0] && kv.ears[i].fn; i++) {
        size_t l = strlen(kv.ears[i].prefix);
        if (!strncmp(k, kv.ears[i].prefix, l)) {
            *rest = k + l;
            return kv.ears[i].fn;
        }
    }
    return NULL;
}

/* A placement record (sp/) with a lower epoch than the one here: this node's own compare-and-swap
 * (cluster_store_cas) wrote the newer one before the watch brought the older change. */
static bool placement_older(const char *k, const char *v, size_t vl)
{
    if (strncmp(k, "sp/", 3))
        return false;
    json_t *now = NULL, *in = json_loadb(v, vl, 0, NULL);
    bool older = db_get_json(k, &now) == 0 && jint(in, "epoch") < jint(now, "epoch");
    json_decref(now);
    json_decref(in);
    return older;
}

/* Write what etcd reported (kvs under KV_PREFIX) and the revision, skipping queued keys.
 * all: the kvs are the whole prefix, and wide keys missing from it are deleted. Then tell the
 * listeners (cluster_kv_on) of every record put, no lock held. */
static int apply(const etcd_kv *kvs, size_t n, int64_t rev, bool all)
{
    json_t *told = json_array(); /* the keys put that a listener hears */
    size_t pl = strlen(KV_PREFIX);
    pthread_mutex_lock(&kv.publish_mu);
    db_repl_lock();
    json_t *q = queued_keys(), *seen = all ? json_object() : NULL;
    db_batch *b = db_batch_new();
    db_batch_from_cluster(b);
    for (size_t i = 0; i < n; i++) {
        const char *k = kvs[i].key;
        if (strncmp(k, KV_PREFIX, pl) || !wide(k + pl, strlen(k + pl)))
            continue; /* not a record this version keeps cluster-wide */
        k += pl;
        if (seen)
            json_object_set_new(seen, k, json_true());
        if (json_object_get(q, k))
            continue;
        if (kvs[i].deleted)
            db_batch_del(b, k, strlen(k));
        else if (placement_older(k, kvs[i].value, kvs[i].value_len))
            continue; /* this node swapped it in etcd a moment ago: that change's event follows */
        else {
            db_batch_put(b, k, strlen(k), kvs[i].value, kvs[i].value_len);
            const char *rest = NULL;
            if (listener(k, &rest))
                json_array_append_new(told, json_string(k));
        }
    }
    if (all)
        for (const char *const *p = wide_prefixes; *p; p++) {
            db_iter *it = db_iter_prefix(*p, strlen(*p));
            while (db_iter_next(it)) {
                size_t kl;
                const char *k = db_iter_key(it, &kl);
                char *s = key_text(k, kl);
                if (!json_object_get(seen, s) && !json_object_get(q, s))
                    db_batch_del(b, k, kl);
                free(s);
            }
            db_iter_free(it);
        }
    rev_put(b, rev);
    int rc = db_batch_commit(b, false); /* a crash replays from the older cl/rev: the same values */
    db_repl_unlock();
    pthread_mutex_unlock(&kv.publish_mu);
    json_decref(q);
    json_decref(seen);
    if (!rc)
        atomic_store(&kv.rev, rev);
    size_t i;
    json_t *key;
    json_array_foreach(told, i, key)
    {
        const char *rest = NULL;
        void (*fn)(const char *) = listener(json_string_value(key), &rest);
        if (!rc && fn)
            fn(rest);
    }
    json_decref(told);
    return rc;
}

/* etcd's /mbyte/kv-init at revision rev (0: now): *create is its create_revision, 0 when it is
 * absent (etcd lost the cluster's records: a new or wiped etcd, whose empty prefix must never
 * be read as "every account was deleted"); *now is the revision etcd answered at. */
static int init_mark(etcd *e, int64_t rev, int64_t *create, int64_t *now, mb_err *err)
{
    json_t *req = etcd_req_range(INIT_KEY, false);
    if (rev) {
        char r[24];
        snprintf(r, sizeof r, "%lld", (long long)rev);
        json_object_set_new(req, "revision", json_string(r));
    }
    etcd_answer a;
    int rc = etcd_call(e, "/v3/kv/range", req, &a, err);
    if (rc)
        return rc;
    *create = a.nkvs ? a.kvs[0].create_rev : 0;
    *now = a.revision;
    etcd_answer_free(&a);
    return 0;
}

/* The whole prefix at one revision, page by page, made this node's, if etcd still has the
 * cluster's records at that revision (else kv.replaced, and nothing is written). */
static int read_all(etcd *e, mb_err *err)
{
    etcd_kv *all = NULL;
    size_t n = 0;
    int64_t rev = 0;
    char *from = NULL;
    int rc;
    for (;;) {
        etcd_answer a;
        if ((rc = etcd_call(e, "/v3/kv/range", etcd_req_page(KV_PREFIX, from, rev, PAGE), &a, err)))
            break;
        if (!rev)
            rev = a.revision;
        all = xrealloc(all, (n + a.nkvs + 1) * sizeof *all);
        if (a.nkvs) /* the strings move to all */
            memcpy(all + n, a.kvs, a.nkvs * sizeof *all);
        n += a.nkvs;
        bool more = a.more && a.nkvs;
        free(from);
        from = NULL;
        if (more) { /* the next page starts just after the last key: key + "\0" is "key" then 0x00 */
            const char *last = all[n - 1].key;
            size_t l = strlen(last);
            from = xmalloc(l + 2);
            memcpy(from, last, l + 1);
            from[l + 1] = 0;
        }
        free(a.kvs);
        a.kvs = NULL;
        a.nkvs = 0;
        if (!more)
            break;
    }
    int64_t mark = 0, now;
    if (!rc && !(rc = init_mark(e, rev, &mark, &now, err)) && !mark) {
        kv.replaced = true;
        rc = err_set(err, MB_EAGAIN, "etcd has none of the cluster's records (a new or wiped etcd)");
    }
    if (!rc && (rc = apply(all, n, rev, true)))
        err_set(err, rc, "cluster: the accounts read from etcd could not be written here");
    if (!rc)
        kv.init_rev = mark; /* the records this node now has are those started then */
    for (size_t i = 0; i < n; i++) {
        free(all[i].key);
        free(all[i].value);
    }
    free(all);
    free(from);
    return rc;
}

static int on_watch(const etcd_answer *a, void *ud)
{
    (void)ud;
    if (a->code) {
        log_warn("cluster: etcd ended the watch of accounts: %s", a->error);
        return 1;
    }
    if (a->canceled) {
        if (a->compact_revision)
            log_info("cluster: etcd compacted its history past revision %lld: reading every account again",
                     (long long)atomic_load(&kv.rev));
        kv.resync = true;
        return 1;
    }
    if (a->nkvs && apply(a->kvs, a->nkvs, a->kvs[a->nkvs - 1].mod_rev, false))
        return 1; /* the write failed (logged): start again from the last revision applied */
    return 0;
}

static void *watcher(void *arg)
{
    (void)arg;
    while (!atomic_load(&kv.stop)) {
        mb_err err;
        bool first;
        if (kv.replaced) {
            if (start_records(true, &first, &err)) {
                trouble("starting the accounts in a new etcd", &err);
                struct timespec ts = {0, 300 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            kv.replaced = false;
            kv.resync = true;
        }
        if (kv.resync) {
            if (read_all(kv.watch, &err)) {
                trouble("reading the accounts", &err);
                struct timespec ts = {0, 300 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            kv.resync = false;
            own_stores();
            ensure_secret();
        }
        /* Each watch starts only while etcd has the records this node read: not when they are
         * gone, were started again (another create_revision), or etcd's revision went back (a
         * new etcd, where a watch from our revision would wait for a future that never comes). */
        int64_t mark, now;
        int rc = init_mark(kv.watch, 0, &mark, &now, &err);
        if (!rc && (!mark || mark != kv.init_rev || now < atomic_load(&kv.rev))) {
            log_warn("cluster: etcd no longer has the accounts this node read (a new or wiped etcd): reading them "
                     "again");
            kv.replaced = true;
            continue;
        }
        if (rc || etcd_watch(kv.watch, etcd_req_watch(KV_PREFIX, atomic_load(&kv.rev) + 1), on_watch, NULL, &kv.stop,
                             WATCH_MS, &err)) {
            trouble("watching the accounts", &err);
            struct timespec ts = {0, 300 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- join --- */

/* The id in a key "<prefix><id16>" (s/, sp/: plen is the prefix's length). */
static uint64_t key_id(const char *k, size_t kl, size_t plen)
{
    char hex[17] = {0};
    memcpy(hex, k + plen, kl - plen < 16 ? kl - plen : 16);
    return strtoull(hex, NULL, 16);
}

/* The counters whose ids are the cluster's (cluster_next_id), and the records holding them. */
static const char *const id_counters[] = {"user", "store", NULL};

/* The highest id of counter `name` this node knows: its n/<name> and its records (accounts'
 * "id", stores' keys s/<sid16>). */
static uint64_t top_id(const char *name)
{
    char key[64], *n = NULL;
    uint64_t top = 0, v;
    snprintf(key, sizeof key, "n/%s", name);
    if (db_get(key, strlen(key), &n, NULL) == 0) {
        parse_u64(n, &top);
        free(n);
    }
    bool users = !strcmp(name, "user");
    db_iter *it = db_iter_prefix(users ? "u/" : "s/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *val = db_iter_val(it, &vl);
        if (users) {
            json_t *u = json_loadb(val, vl, 0, NULL);
            v = jint(u, "id") > 0 ? (uint64_t)jint(u, "id") : 0;
            json_decref(u);
        } else {
            v = key_id(k, kl, 2);
        }
        if (v > top)
            top = v;
    }
    db_iter_free(it);
    return top;
}

/* The first node: every wide record it has goes to etcd, and its id counters. */
static int seed(mb_err *err)
{
    json_t *ops = json_array();
    int rc = 0;
    size_t count = 0;
    for (const char *const *p = wide_prefixes; *p && !rc; p++) {
        db_iter *it = db_iter_prefix(*p, strlen(*p));
        while (!rc && db_iter_next(it)) {
            size_t kl, vl;
            const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
            json_array_append_new(ops, txn_op(k, kl, v, vl, true));
            count++;
            if (json_array_size(ops) == TXN_OPS) {
                rc = txn_send(kv.pub, ops, err);
                ops = json_array();
            }
        }
        db_iter_free(it);
    }
    /* The id counters: past every id here (ids an earlier etcd gave are not in n/<name>). */
    for (const char *const *c = id_counters; *c && !rc; c++) {
        char top_s[24], key[64];
        snprintf(top_s, sizeof top_s, "%llu", (unsigned long long)top_id(*c));
        snprintf(key, sizeof key, IDS_PREFIX "%s", *c);
        json_array_append_new(ops, json_pack("{s:o}", "request_put", etcd_req_put(key, top_s, 0)));
    }
    if (!rc && json_array_size(ops))
        rc = txn_send(kv.pub, ops, err);
    else
        json_decref(ops);
    if (!rc)
        log_info("cluster: this node started the cluster: %zu account and token records handed to etcd", count);
    return rc;
}

static bool has_accounts(void)
{
    db_iter *it = db_iter_prefix("u/", 2);
    bool any = db_iter_next(it);
    db_iter_free(it);
    return any;
}

static void stop_clients(void)
{
    db_replicate_off();
    etcd_free(kv.pub);
    etcd_free(kv.watch);
    etcd_free(kv.ids);
    kv.pub = kv.watch = kv.ids = NULL;
}

/* Whoever creates /mbyte/kv-init starts the cluster's records from its own (*first): the first
 * node, or the first to meet an etcd that lost them (replaced or wiped: reading that etcd as it
 * is would delete every account here). A node that never joined (!joined) and has accounts
 * refuses a cluster that has its own. */
static int start_records(bool joined, bool *first, mb_err *err)
{
    char mark[96];
    snprintf(mark, sizeof mark, "%s seeding", kv.node);
    etcd_answer a;
    int rc = etcd_create(kv.pub, INIT_KEY, mark, 0, &a, err);
    if (rc)
        return rc;
    *first = a.succeeded;
    etcd_answer_free(&a);
    if (*first && joined)
        log_warn("cluster: etcd has none of the cluster's accounts (a new or wiped etcd): node %s hands it its own",
                 kv.node);
    if (*first) { /* then the mark says the records are all there */
        if (!(rc = seed(err)))
            rc = etcd_put(kv.pub, INIT_KEY, kv.node, 0, err);
        return rc;
    }
    if (!joined && has_accounts())
        return err_set(err, MB_EEXIST,
                       "cluster: node %s has accounts of its own in %s, and the cluster has its own: a node joins a "
                       "running cluster with an empty data directory (its accounts would be lost)",
                       kv.node, g_cfg->data_dir);
    /* Another node is handing etcd its records: read them once it is done (30 s at most: a
     * seeding node that died leaves its mark, and what it handed on is read as it is). */
    for (int64_t until = now_mono_ms() + 30000; now_mono_ms() < until && !atomic_load(&kv.stop);) {
        if ((rc = etcd_range(kv.pub, INIT_KEY, false, &a, err)))
            return rc;
        bool seeding = a.nkvs && strstr(a.kvs[0].value, " seeding");
        etcd_answer_free(&a);
        if (!seeding)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int counter_move(const char *name, uint64_t floor, uint64_t *out, mb_err *err);

/* This node's number (cluster_id_base): given once by etcd's counter, then kept in cl/number. */
static int take_number(mb_err *err)
{
    char *v = NULL;
    uint64_t num = 0;
    if (db_get(NUMBER_KEY, strlen(NUMBER_KEY), &v, NULL) == 0)
        parse_u64(v, &num);
    free(v);
    uint64_t top;
    if (num) { /* a new or wiped etcd: its counter goes past this number, so no newcomer takes it */
        int rc = counter_move("node", num, &top, err);
        if (rc)
            return rc;
    } else {
        int rc = counter_move("node", 0, &num, err);
        if (rc)
            return rc;
        if (num >= (1u << (53 - CLUSTER_ID_BITS))) /* ids stay exact in JSON numbers (2^53) */
            return err_set(err, MB_EINVAL, "cluster: etcd's node counter is at %llu: more nodes than ids can tell apart",
                           (unsigned long long)num);
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)num);
        if ((rc = db_put(NUMBER_KEY, strlen(NUMBER_KEY), buf, strlen(buf), true)))
            return err_set(err, rc, "cluster: cannot keep this node's number");
    }
    cluster_set_number(num);
    return 0;
}

int cluster_kv_join(bool *first, mb_err *err)
{
    *first = true;
    if (!g_cfg->cluster_etcd)
        return 0;
    kv.member = true;
    snprintf(kv.node, sizeof kv.node, "%s", g_cfg->cluster_node);
    long to = g_cfg->cluster_lease_ttl * 1000 / 3 > 1000 ? g_cfg->cluster_lease_ttl * 1000 / 3 : 1000;
    kv.pub = etcd_new(g_cfg->cluster_etcd, to);
    kv.watch = etcd_new(g_cfg->cluster_etcd, to);
    kv.ids = etcd_new(g_cfg->cluster_etcd, to);
    char *r = NULL;
    bool joined = db_get(REV_KEY, strlen(REV_KEY), &r, NULL) == 0;
    free(r);
    int rc = start_records(joined, first, err);
    db_replicate(wide, kick); /* from here on every local change is queued */
    if (!rc)
        rc = read_all(kv.watch, err);
    if (rc && rc != MB_EEXIST) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        rc = err_set(err, rc, "cluster: cannot register node %s in etcd (%s): %s", kv.node,
                     g_cfg->cluster_etcd[0], why);
    }
    if (rc) {
        stop_clients();
        kv.member = false;
        return rc;
    }
    own_stores();
    ensure_secret();
    if ((rc = take_number(err))) {
        stop_clients();
        kv.member = false;
        return rc;
    }
    atomic_store(&kv.stop, false);
    kv.on = true;
    if (pthread_create(&kv.pub_th, NULL, publisher, NULL) ||
        (pthread_setname_np(kv.pub_th, "mb-cl-publish"), pthread_create(&kv.watch_th, NULL, watcher, NULL))) {
        kv.on = false;
        return err_set(err, MB_EINTERNAL, "cluster: cannot start the account threads");
    }
    pthread_setname_np(kv.watch_th, "mb-cl-watch");
    log_info("cluster: accounts and tokens are cluster-wide (etcd revision %lld)", (long long)atomic_load(&kv.rev));
    return 0;
}

void cluster_kv_stop(void)
{
    if (!kv.on)
        return;
    atomic_store(&kv.stop, true);
    kick();
    pthread_join(kv.pub_th, NULL);
    pthread_join(kv.watch_th, NULL);
    kv.on = false;
    stop_clients();
}

/* ------------------------------------------------------------- stores --- */

static void place_key(char key[20], uint64_t sid)
{
    id_key(key, 20, "sp", sid);
}

void cluster_store_placed(db_batch *b, uint64_t sid, uint64_t owner)
{
    if (!kv.member)
        return;
    char key[20], replica[64];
    place_key(key, sid);
    json_t *r = json_pack("{s:i, s:s, s:I, s:I}", "v", 1, "node", kv.node, "owner", (json_int_t)owner, "epoch",
                          (json_int_t)1);
    if (cluster_pick_node(NULL, replica, sizeof replica)) /* the up node with the most free space */
        json_object_set_new(r, "replica", json_string(replica));
    db_batch_put_json(b, key, r);
    json_decref(r);
}

json_t *cluster_store_record(uint64_t sid)
{
    char key[20];
    place_key(key, sid);
    json_t *r = NULL;
    if (!kv.member || db_get_json(key, &r) || !json_is_object(r)) {
        json_decref(r);
        return NULL;
    }
    return r;
}

int cluster_store_cas(uint64_t sid, json_t *(*change)(const json_t *cur, void *ud), void *ud, json_t **out,
                      mb_err *err)
{
    char key[20], ekey[40];
    place_key(key, sid);
    snprintf(ekey, sizeof ekey, KV_PREFIX "%s", key);
    etcd_answer a;
    int rc = etcd_range(kv.ids, ekey, false, &a, err);
    if (rc)
        return rc;
    json_t *cur = a.nkvs ? json_loads(a.kvs[0].value, 0, NULL) : NULL;
    int64_t mod = a.nkvs ? a.kvs[0].mod_rev : 0;
    etcd_answer_free(&a);
    if (!json_is_object(cur)) {
        json_decref(cur);
        return err_set(err, MB_ENOENT, "store %llu's placement is not in etcd (yet)", (unsigned long long)sid);
    }
    json_t *want = change(cur, ud);
    json_decref(cur);
    if (!want)
        return err_set(err, MB_ECONFLICT, "store %llu's placement is not what this change expected",
                       (unsigned long long)sid);
    char *text = json_dumps(want, JSON_COMPACT);
    rc = etcd_call(kv.ids, "/v3/kv/txn", etcd_req_cas(ekey, text, mod), &a, err);
    if (!rc) {
        bool won = a.succeeded;
        etcd_answer_free(&a);
        if (!won)
            rc = err_set(err, MB_ECONFLICT, "store %llu's placement changed meanwhile", (unsigned long long)sid);
    }
    if (!rc) { /* etcd's value now: written here at once, as the watch would (not queued again); under
                * the watcher's lock, so its check of the epoch here and its write are one step */
        db_batch *b = db_batch_new();
        db_batch_from_cluster(b);
        db_batch_put(b, key, strlen(key), text, strlen(text));
        db_repl_lock();
        if ((rc = db_batch_commit(b, true)))
            err_set(err, rc, "store %llu's new placement could not be written here", (unsigned long long)sid);
        db_repl_unlock();
    }
    free(text);
    if (!rc && out)
        *out = want;
    else
        json_decref(want);
    return rc;
}

void cluster_store_gone(db_batch *b, uint64_t sid)
{
    if (!kv.member)
        return;
    char key[20];
    place_key(key, sid);
    db_batch_del(b, key, strlen(key));
}

/* etcd's counter `name` (compare-and-swap, retried while other nodes move it): with floor 0 one
 * step up, *out the new value; with a floor, raised to it if it is below (*out what it is). */
static int counter_move(const char *name, uint64_t floor, uint64_t *out, mb_err *err)
{
    char key[128];
    snprintf(key, sizeof key, IDS_PREFIX "%s", name);
    for (int tries = 0; tries < 20; tries++) {
        etcd_answer a;
        int rc = etcd_range(kv.ids, key, false, &a, err);
        if (rc)
            return rc;
        uint64_t cur = 0;
        int64_t mod = a.nkvs ? a.kvs[0].mod_rev : 0;
        if (a.nkvs)
            parse_u64(a.kvs[0].value, &cur);
        etcd_answer_free(&a);
        uint64_t want = floor ? floor : cur + 1;
        if (floor && cur >= floor) {
            *out = cur;
            return 0;
        }
        char w[24];
        snprintf(w, sizeof w, "%llu", (unsigned long long)want);
        if ((rc = etcd_call(kv.ids, "/v3/kv/txn", etcd_req_cas(key, w, mod), &a, err)))
            return rc;
        bool won = a.succeeded;
        etcd_answer_free(&a);
        if (won) {
            *out = want;
            return 0;
        }
    }
    return err_set(err, MB_EBUSY, "cluster: a new %s id could not be taken (too many nodes at once): try again", name);
}

/* After every full read: each store this node has and no placement record names has one naming
 * this node (a read may have dropped it: a new etcd seeded by another node), and etcd's store counter is
 * past every store id here. */
static void own_stores(void)
{
    db_iter *it = db_iter_prefix("s/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        uint64_t sid = key_id(k, kl, 2);
        json_t *rec = json_loadb(v, vl, 0, NULL), *have = NULL;
        char key[20];
        place_key(key, sid);
        if (db_get_json(key, &have)) { /* nobody keeps it: this node does (a replica's copy names its owner) */
            db_batch *b = db_batch_new();
            cluster_store_placed(b, sid, (uint64_t)jint(rec, "owner"));
            if (db_batch_commit(b, false))
                log_warn("cluster: the placement of store %llu could not be recorded", (unsigned long long)sid);
        }
        json_decref(have);
        json_decref(rec);
    }
    db_iter_free(it);
    mb_err err;
    uint64_t now;
    uint64_t top = top_id("store");
    if (top && counter_move("store", top, &now, &err))
        trouble("raising the store counter", &err);
}

/* The cluster's signing key (cs/key, 32 random bytes as hex): made once, by whichever node asks
 * etcd first (create-if-absent); the others take that one. */
static void ensure_secret(void)
{
    char *v = NULL;
    if (db_get("cs/key", 6, &v, NULL) == 0) {
        free(v);
        return;
    }
    char hex[65];
    random_hex(hex, 32);
    etcd_answer a;
    mb_err err;
    if (etcd_create(kv.pub, KV_PREFIX "cs/key", hex, 0, &a, &err)) {
        trouble("making the cluster's signing key", &err);
        return;
    }
    const char *val = a.succeeded ? hex : a.nkvs ? a.kvs[0].value : NULL;
    if (val) { /* etcd's value, written as the watch would (not queued again) */
        db_batch *b = db_batch_new();
        db_batch_from_cluster(b);
        db_batch_put(b, "cs/key", 6, val, strlen(val));
        db_batch_commit(b, true);
    }
    etcd_answer_free(&a);
    sodium_memzero(hex, sizeof hex);
}

bool cluster_kv_secret(uint8_t out[32])
{
    char *v = NULL;
    size_t n;
    if (!kv.member || db_get("cs/key", 6, &v, &n))
        return false;
    bool ok = n == 64 && hex_decode(v, out, 32) == 0;
    sodium_memzero(v, n);
    free(v);
    return ok;
}

json_t *cluster_kv_view(void)
{
    if (!kv.on)
        return NULL;
    json_int_t queued = 0;
    db_iter *it = db_iter_prefix("cq/", 3);
    while (db_iter_next(it))
        queued++;
    db_iter_free(it);
    return json_pack("{s:I, s:I, s:s}", "revision", (json_int_t)atomic_load(&kv.rev), "queued", queued, "etcd",
                     atomic_load(&kv.down) ? "unreachable" : "ok");
}

void cluster_upload_placed(const char *id, bool placed)
{
    if (!kv.member)
        return;
    char key[96];
    snprintf(key, sizeof key, "tn/%.64s", id);
    if (!placed) {
        db_del(key, strlen(key), false);
        return;
    }
    json_t *r = json_pack("{s:i, s:s}", "v", 1, "node", kv.node);
    if (db_put_json(key, r, false) == 0)
        cluster_kv_flush(2000);
    json_decref(r);
}

bool cluster_upload_node(const char *id, char *node, size_t n)
{
    char key[96];
    snprintf(key, sizeof key, "tn/%.64s", id);
    json_t *r = NULL;
    bool found = kv.member && (db_get_json(key, &r) == 0 || (cluster_kv_fetch(key) && db_get_json(key, &r) == 0)) &&
                 *jstr(r, "node");
    if (found)
        snprintf(node, n, "%s", jstr(r, "node"));
    json_decref(r);
    return found;
}

bool cluster_store_node(uint64_t sid, char *node, size_t n)
{
    char key[20];
    place_key(key, sid);
    json_t *r = NULL;
    bool found = kv.member && db_get_json(key, &r) == 0 && *jstr(r, "node");
    if (found)
        snprintf(node, n, "%s", jstr(r, "node"));
    json_decref(r);
    return found;
}

int cluster_node_registered(const char *node, bool *up, mb_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "/mbyte/nodes/%s", node);
    etcd_answer a;
    int rc = etcd_range(kv.ids, key, false, &a, err);
    if (!rc) {
        *up = a.nkvs > 0;
        etcd_answer_free(&a);
    }
    return rc;
}

bool cluster_store_elsewhere(uint64_t sid)
{
    char node[64];
    return kv.member && (!cluster_store_node(sid, node, sizeof node) || strcmp(node, kv.node));
}

void cluster_kv_catch_up(int64_t ms)
{
    if (!kv.on || atomic_load(&kv.down))
        return;
    /* the newest change of a cluster-wide record in etcd: its mod_revision */
    json_t *req = etcd_req_range(KV_PREFIX, true);
    json_object_set_new(req, "limit", json_integer(1));
    json_object_set_new(req, "sort_order", json_string("DESCEND"));
    json_object_set_new(req, "sort_target", json_string("MOD"));
    json_object_set_new(req, "keys_only", json_true());
    etcd_answer a;
    mb_err err;
    if (etcd_call(kv.ids, "/v3/kv/range", req, &a, &err))
        return;
    int64_t want = a.nkvs ? a.kvs[0].mod_rev : 0;
    etcd_answer_free(&a);
    struct timespec ten = {0, 10 * 1000000L};
    for (int64_t end = now_mono_ms() + ms; atomic_load(&kv.rev) < want && now_mono_ms() < end;)
        nanosleep(&ten, NULL);
}

json_t *cluster_kv_user_nodes(uint64_t uid)
{
    json_t *seen = json_object(), *out = json_array();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (kv.member && db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *r = json_loadb(v, vl, 0, NULL);
        const char *node = jstr(r, "node");
        if (jint(r, "owner") == (json_int_t)uid && *node && strcmp(node, kv.node) && !json_object_get(seen, node)) {
            json_object_set_new(seen, node, json_true());
            json_array_append_new(out, json_string(node));
        }
        json_decref(r);
    }
    db_iter_free(it);
    json_decref(seen);
    return out;
}

json_t *cluster_kv_stores(void)
{
    json_t *list = json_array();
    db_iter *it = db_iter_prefix("sp/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl), *v = db_iter_val(it, &vl);
        json_t *r = json_loadb(v, vl, 0, NULL);
        if (json_is_object(r))
            json_array_append_new(list, json_pack("{s:I, s:s, s:s?, s:I, s:I, s:b}", "id", (json_int_t)key_id(k, kl, 3),
                                                  "owner", jstr(r, "node"), "replica",
                                                  *jstr(r, "replica") ? jstr(r, "replica") : NULL, "epoch",
                                                  jint(r, "epoch"), "user", jint(r, "owner"), "filling",
                                                  json_is_true(json_object_get(r, "filling"))));
        json_decref(r);
    }
    db_iter_free(it);
    return list;
}

/* ------------------------------------------------- the request's path --- */

static bool queue_empty(void)
{
    db_iter *it = db_iter_prefix("cq/", 3);
    bool empty = !db_iter_next(it);
    db_iter_free(it);
    return empty;
}

void cluster_kv_flush(int64_t ms)
{
    if (!kv.on)
        return;
    kick();
    for (int64_t until = now_mono_ms() + ms; !queue_empty() && !atomic_load(&kv.down) && now_mono_ms() < until;) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* etcd's answer for cluster-wide record key (0), or nonzero: not one, or etcd not answering. */
static int range_one(const char *key, size_t kl, etcd_answer *a)
{
    if (!kv.on || !wide(key, kl))
        return MB_EINVAL;
    char *ek = etcd_key(key, kl);
    mb_err err;
    int rc = etcd_range(kv.ids, ek, false, a, &err);
    free(ek);
    return rc;
}

bool cluster_kv_fetch(const char *key)
{
    size_t kl = strlen(key);
    etcd_answer a;
    if (range_one(key, kl, &a))
        return false;
    bool found = a.nkvs > 0;
    if (found) { /* as the watcher writes it: not over a change of this node still queued */
        pthread_mutex_lock(&kv.publish_mu);
        db_repl_lock();
        json_t *q = queued_keys();
        found = !json_object_get(q, key);
        if (found) {
            db_batch *b = db_batch_new();
            db_batch_from_cluster(b);
            db_batch_put(b, key, kl, a.kvs[0].value, a.kvs[0].value_len);
            found = db_batch_commit(b, false) == 0;
        }
        json_decref(q);
        db_repl_unlock();
        pthread_mutex_unlock(&kv.publish_mu);
    }
    etcd_answer_free(&a);
    return found;
}

json_t *cluster_kv_read(const char *key)
{
    etcd_answer a;
    if (range_one(key, strlen(key), &a))
        return NULL;
    json_t *v = a.nkvs > 0 ? json_loadb(a.kvs[0].value, a.kvs[0].value_len, 0, NULL) : NULL;
    etcd_answer_free(&a);
    return v;
}

/* ----------------------------------------------------------------- ids --- */

int cluster_next_id(const char *name, uint64_t *out, mb_err *err)
{
    if (!kv.member) {
        *out = db_next_id(name);
        return 0;
    }
    int rc = counter_move(name, 0, out, err);
    if (rc) { /* etcd away, or a counter others kept moving: 503, try again */
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        return err_set(err, MB_EBUSY, "cluster: no new %s id can be given now: %s", name, why);
    }
    /* this node's own counter follows, so it never hands out a cluster id later (alone) */
    char key[64], *mine = NULL, next[24];
    uint64_t have = 0;
    snprintf(key, sizeof key, "n/%s", name);
    if (db_get(key, strlen(key), &mine, NULL) == 0)
        parse_u64(mine, &have);
    free(mine);
    if (have < *out) {
        snprintf(next, sizeof next, "%llu", (unsigned long long)*out);
        db_put(key, strlen(key), next, strlen(next), false);
    }
    return 0;
}
