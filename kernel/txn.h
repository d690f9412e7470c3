/*
 * kernel/txn.h — one durable change of the namespace (docs/architecture.md "Layers": txn).
 *
 * Every change of the namespace (fs.c and its files, history.c, stores.c, tus.c through the
 * write pipeline) is one transaction:
 *
 *     txn t;
 *     txn_begin(&t, NULL);             // commit lock taken; t.b is the batch to fill
 *     ... read what the change needs, put and delete into t.b,
 *         txn_ref_chunks() for chunk refcounts, txn_usage*() for usage ...
 *     rc = txn_end(&t, rc, err, "the move");   // commits (when rc is 0), unlocks, syncs
 *     reply only now: the change is durable
 *
 * txn_end adds the usage and refcount deltas to the batch, hands the batch to the commit
 * observer (the one place a committed batch is handed on, e.g. to a replica: txn_observe),
 * writes it as part of a group commit (db_sync.c), releases the lock, waits for the group's sync
 * (the transaction's own sync ticket, not a thread-local) and kicks the outbox when the batch
 * carries events. The deltas live in the transaction (on the caller's stack), never in statics.
 *
 * Threads: any. The commit lock serialises every read-modify-write of the namespace, of
 * refcounts and of usage records; it is held from txn_begin to txn_end (or txn_lock to
 * txn_unlock). Lock order: commit -> blob's pending lock.
 */
#ifndef MBYTE_TXN_H
#define MBYTE_TXN_H

#include "kernel.h"

/* One usage record's counters (docs/storage.md "Stores, settings and usage"): bytes is
 * everything the owner keeps (current versions, trashed files, old versions), versions and
 * trash are the parts of it that are old versions and trashed current versions. */
typedef struct {
    int64_t bytes, files, versions, trash;
} txn_usage_t;

#define TXN_USAGE_MAX 8 /* stores one change may touch (a change touches one today) */

typedef struct txn {
    db_batch *b;      /* the change: fill it between begin and end */
    uint64_t handed;  /* the observer's ticket (txn_observe) */
    json_t *refs;     /* chunk hash -> [delta, size(, held)] (txn_ref_chunks, txn_ref_hold) */
    uint64_t ticket;  /* the group commit this change waits for (db_sync_through) */
    int n_usage;
    struct {
        uint64_t sid;
        txn_usage_t d;
    } usage[TXN_USAGE_MAX];
} txn;

/* Take the commit lock and start a change: t->b is b (its puts join the change: the write
 * pipeline's inline chunks) or a new batch. */
void txn_begin(txn *t, db_batch *b);
/* End the change started by txn_begin. When rc is 0 and `what` names the change (NULL: there
 * is nothing to commit), the usage and refcount deltas go into the batch, the observer sees
 * it and it is written ("<what> could not be committed" on failure). Then the lock is released
 * and, once the write is durable (group commit), the outbox woken if the batch holds events.
 * Frees the batch and the deltas. Returns rc or the commit's error. Reply after it. */
int txn_end(txn *t, int rc, mb_err *err, const char *what);

/* Chunk refcount deltas (records c/<sha256>, docs/storage.md), applied at txn_end: delta for
 * every chunk of a version record's "chunks" list ([{"h","n"}...]). */
void txn_ref_chunks(txn *t, const json_t *chunks, int delta);
/* A chunk stored ahead of the change that names it (a replica's inline chunk sent by its keeper
 * before the records, cluster_replica.c): a record at zero references unless it has
 * references (at zero, its grace starts again), so that the collector takes it after the grace
 * if that change never comes (a fill or a change cut off) and fsck never finds it without one. */
void txn_ref_hold(txn *t, const char *hash, uint64_t size);

/* Usage deltas of store sid (and so of its owner), written at txn_end. */
void txn_usage(txn *t, uint64_t sid, int64_t bytes, int64_t files);
/* Old versions kept (+) or dropped (-): they count in bytes and in the versions part. */
void txn_usage_versions(txn *t, uint64_t sid, int64_t bytes);
/* Bytes moved into (+) or out of (-) the trash: only the trash part changes. */
void txn_usage_trash(txn *t, uint64_t sid, int64_t bytes);
/* A usage record ("us/<sid16>" or "uu/<uid16>"): read (format 1 reads with no versions and
 * trash part), and add a delta into b. Two deltas to one key in one batch would lose the
 * first: aggregate per key first. For stores.c's count and its migrations. */
void txn_usage_read(const char *key, txn_usage_t *out);
/* The record's text as usage_put writes it, {"v":2,"bytes":..,"files":..,"versions":..,"trash":..}
 * (out: TXN_USAGE_TEXT bytes; returns its length), and its strict reader: false for any other
 * text, which is then read as JSON (tests/fuzz/fuzz_usage.c holds the two to agree). */
#define TXN_USAGE_TEXT 128
size_t txn_usage_print(char *out, const txn_usage_t *u);
bool txn_usage_parse(const char *v, size_t n, txn_usage_t *out);
void txn_usage_add(db_batch *b, const char *key, const txn_usage_t *d);

/* The commit lock alone, for work that reads and writes under it without a change of its own
 * (the collector, fsck and its repairs). */
void txn_lock(void);
void txn_unlock(void);

/* Called under the commit lock with every change's batch before its deltas are added: the
 * namespace (ns.c) adds the child counters of the folders the batch changes. Set once at start. */
void txn_pre_commit(void (*fn)(db_batch *b));

/* The one place a committed change is handed on (cluster_repl.c: to the replica of each store
 * the change touches). hand(b) sees every change's final batch, in commit order, under the commit
 * lock, before the local write: it must not block and must not take the commit lock; it may
 * queue the batch and set *wait to a ticket (0: nothing to wait for). A non-zero return refuses
 * the change (nothing is written; the caller's error is hand's). After the local write and the
 * lock's release, txn_end calls wait(ticket) and returns its error: the change is acknowledged
 * only once what was handed on is safe too. One observer; NULLs remove it. */
typedef struct txn_observer {
    int (*hand)(const db_batch *b, uint64_t *wait, mb_err *err);
    int (*wait)(uint64_t ticket, mb_err *err);
} txn_observer;
void txn_observe(const txn_observer *o);

#endif
