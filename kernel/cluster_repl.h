/*
 * kernel/cluster_repl.h — what the two sides of a store's replication share (docs/cluster.md
 * "Replicas and failover"): cluster_repl.c is the owner's side (handing changes on, the senders,
 * dropping a replica, filling a new one), cluster_place.c the placement thread and the moves,
 * cluster_replica.c the replica's side (the replication port, applying changes, takeovers). The
 * rest of the kernel sees kernel.h.
 */
#ifndef MBYTE_CLUSTER_REPL_H
#define MBYTE_CLUSTER_REPL_H

#include "fs.h"
#include "txn.h"

#define REPL_PATH "/api/v1/internal/cluster/replicate"
#define CHUNK_PATH "/api/v1/internal/cluster/chunks/"
#define FILL_PATH "/api/v1/internal/cluster/fill/" /* + begin, data, end */
#define GC_PATH "/api/v1/internal/cluster/gc/"     /* + candidates, claim, delete, release */
#define EVENT_PATH "/api/v1/internal/cluster/event"  /* a user's live event (cluster_events.c) */
#define SIGN_HEADER "X-MByte-Replication"
/* The same signature without the body but with its length: checked before a byte of the body is
 * read, so nobody without the cluster's key makes a node hold a body (SIGN_HEADER covers it after). */
#define HEAD_HEADER "X-MByte-Replication-Head"
#define SIGN_SKEW 120         /* seconds a signed request may be old (or ahead) */
#define BODY_MAX (256u << 20) /* what the replica takes in one request */
/* A frame: sid, epoch, the owner's id counters "entry" and "trash" (8 bytes each, little endian),
 * the length of the ops (4), then the ops (db_ops, as a cq/ entry's value). */
#define FRAME_HEAD 36

static inline void repl_put_u(char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (char)(uint8_t)(v >> (8 * i));
}

static inline uint64_t repl_get_u(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)(uint8_t)p[i] << (8 * i);
    return v;
}

/* Append a frame's head (store sid, epoch, the id counters hw, its ops len bytes long) to o. */
void repl_frame_head(db_ops *o, uint64_t sid, uint64_t epoch, const uint64_t hw[2], size_t len);

/* One frame of a request, as repl_frames walks them. */
typedef struct repl_frame {
    uint64_t sid, epoch, hw[2];
    const char *ops;
    size_t len;
} repl_frame;
/* Walk the frames of body p (n bytes): fn(frame, ud) for each (fn may be NULL), stopping at its
 * first non-NULL answer, which is returned; a sentence when the body is not a list of frames whose
 * ops are well formed (each one's ops checked whole before fn sees it). Pure: fuzz_repl. */
const char *repl_frames(const char *p, size_t n, const char *(*fn)(const repl_frame *f, void *ud), void *ud);

/* A change of a store's placement, compared and swapped in etcd (cluster_store_cas): from what this
 * node saw ({node, replica ("" none), epoch}, and not filling when not_filling) to {to_node,
 * to_replica ("" none), epoch + step, filling}. Dropping a replica, a takeover, a fill all go so. */
struct repl_swap {
    const char *node, *replica;
    uint64_t epoch;
    bool not_filling;
    const char *to_node, *to_replica;
    int step;
    bool filling;
    bool *kept_later; /* or NULL: set when etcd's record has this node (node) keep it at a later epoch */
};
json_t *repl_swap_change(const json_t *cur, void *ud);

/* The keys of store sid (s/ so/ d/ dn/ f/ tr/ x/ us/ of it), in snap (NULL: now): fn for each. */
void repl_store_keys(db_snap *snap, uint64_t sid,
                     void (*fn)(const char *k, size_t kl, const char *v, size_t vl, void *ud), void *ud);

extern _Thread_local bool repl_applying; /* this thread writes a replicated change: not handed on */

/* A call between nodes waits this long: what a replica may take to write a change durably. */
#define REPL_WAIT_MS 30000L
/* A signed POST of body (len bytes) to node's replication port at path, waiting timeout_ms at most:
 * 0 on a 2xx, its answer in *ans (JSON or NULL; ans may be NULL); MB_EBUSY (unreachable) or
 * MB_ECONFLICT (refused), err says why. */
int repl_ask(void *curl, const char *node, const char *path, const char *body, size_t len, long timeout_ms,
             json_t **ans, mb_err *err);

/* cluster_events.c: a user's live task events on every node (notify.c hands them over) */
void cluster_events_start(void);
void cluster_events_stop(void);
/* POST EVENT_PATH on the replication port: the status, *answer the JSON text (malloc'd). */
int cluster_events_answer(const char *body, size_t len, char **answer);

/* cluster_gc.c: the leader's collector of chunks on shared backends, and each node's answers. */
void cluster_gc_start(void);
void cluster_gc_stop(void);
/* POST GC_PATH<what> on the replication port: the status, *answer the JSON text (malloc'd). */
int cluster_gc_answer(const char *what, const char *body, size_t len, char **answer);

/* A migration's questions (migrate_cluster, fs.h): cluster_gc.c, cluster_repl.c. */
int cluster_spare(uint64_t sid, const json_t *refs, int (*drop)(const char *hash, void *ud), void *ud, mb_err *err);
int cluster_chunk_to_replica(uint64_t sid, const char *hash, size_t n, mb_err *err);

/* cluster_repl.c, for the placement (cluster_place.c): */
/* Give store sid (this node's, at rec's epoch, without a replica) a replica on node `to`, with
 * curl (a CURL *): 0, or the failure (the store then waits FILL_RETRY_S before the next fill). The
 * caller holds the fill lock. */
int repl_fill(void *curl, uint64_t sid, const json_t *rec, const char *to, mb_err *err);
bool repl_fill_lock(bool try); /* one fill at a time: taken (try: only when free; false if not) */
void repl_fill_unlock(void);
bool repl_fill_due(uint64_t sid); /* its last fill did not fail within FILL_RETRY_S (fill lock held) */
/* Under the commit lock (a move's switch): until no change handed on is still unanswered. */
void repl_wait_sent(void);
bool repl_closing(void); /* the server stops: no more fills or moves */
/* Stores whose replica missed a change while etcd could not confirm dropping it take no change
 * until it does: the drop is tried again (each look of the placement thread). */
void repl_retry_broken(void);

/* cluster_place.c: the placement thread (takeovers, fills, rebalancing) and the moves */
int place_start(const char *node, mb_err *err);
void place_stop(void); /* the thread ends (no more takeovers, fills or moves started here) */
void place_fini(void);

/* cluster_replica.c */
void replica_start(const char *node); /* takes replicas from now on */
void replica_stop(void);
void replica_consider(uint64_t sid, const json_t *rec); /* the placement thread: take it over? */

#endif
