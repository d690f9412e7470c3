/*
 * kernel/db_int.h — what db.c (the metadata store) and db_repl.c (its queue of cluster-wide
 * changes) share; the rest of the kernel sees only kernel.h.
 */
#ifndef MBYTE_DB_INT_H
#define MBYTE_DB_INT_H

#include "kernel.h"
#include <leveldb/c.h>

struct db_batch {
    leveldb_writebatch_t *wb;
    bool events; /* holds an outbox entry (hook_emit_batch): its commit should wake the dispatcher */
    bool remote; /* another node's change applied here (db_batch_from_cluster): not queued again */
};

/* Cluster mode is on and key is a cluster-wide record's: db_put and db_del write it as a batch. */
bool db_repl_wide(const char *key, size_t klen);
/* Before a batch is written: put its queue entry into it when it holds cluster-wide changes. True
 * then, with the replication lock held: call db_repl_done(written) once the write is over. */
bool db_repl_queue(db_batch *b);
void db_repl_done(bool written);

/* db_sync.c: follow LevelDB's logs in dir (db_open); stop the flusher, syncing what it had left
 * if the database was open, and let go of the logs (db_close). */
void db_sync_open(const char *dir);
void db_sync_close(bool was_open);

/* db.c: hold off every write to LevelDB (db_put, db_del, db_batch_commit) while db_sync.c
 * writes zeros ahead of LevelDB's log; let them go again. */
void db_writes_hold(void);
void db_writes_release(void);

#endif
