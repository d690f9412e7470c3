/*
 * db_sync.c — when a write to the metadata store is durable: group commit and the durability
 * setting (docs/operations.md "Durability"). db.c writes; this file makes the writes durable.
 *
 * Group commit (db_batch_commit_grouped + db_sync_through): a writer that must read, modify
 * and write under a lock (txn.c's commit lock) writes its batch unsynced while it holds the
 * lock, so the next holder reads its result, and makes it durable after releasing the lock.
 * One fdatasync of LevelDB's log makes every earlier write in it durable, so the writers
 * that arrive while one fsync runs share the next one: under load a group of commits costs
 * one fsync instead of one each, and nobody holds the commit lock across an fsync. The
 * barrier syncs its own descriptor on the newest log rather than making a synced LevelDB
 * write, because LevelDB queues every writer behind the one that syncs (a commit holding
 * the commit lock then waited out the fsync).
 * LevelDB closes a full log file WITHOUT syncing it when it switches to a new one (its
 * memtable is then flushed to a synced table in the background). So after a switch the
 * barrier also fdatasyncs every older *.log still present, and the folder for the new
 * name: a record is then durable in the current log, in an older log, or in a synced table.
 * A write that landed in a new log was made after the log was created, so the inotify
 * event of its creation is queued before the barrier looks: it never syncs a stale log.
 *
 * Durability (mbyte.yaml `durability`, issue 16; db_sync_ack): strict, the default, answers a
 * change only after the sync above covers it. relaxed answers once the write is in LevelDB's
 * log (in the kernel: a killed mbyted loses nothing) and leaves the sync to the flusher
 * thread, which syncs everything written within durability_window_ms of the first unsynced
 * answer: a power cut or kernel crash loses at most the changes answered in the last window
 * (plus the one sync then running). Chunk files are still synced before their change is
 * written (blob.c), so what a lost window loses is whole changes, never a file's bytes.
 *
 *
 * Threads: any. The sync barrier is lock-free: `syncing` elects one leader at a time, and the
 * others sleep on a futex on sync_gen, which the leader bumps after each sync (a condition
 * variable made every woken waiter queue again for its mutex: about half a context switch per
 * small upload). fl_mu guards the flusher's start, stop and due flag.
 */
#include "db_int.h"
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char *log_dir; /* LevelDB's folder */

/* Group commit: write_seq counts grouped writes that have returned; synced_seq is the
 * highest of them known durable. */
static _Atomic uint64_t write_seq;
static _Atomic uint64_t synced_seq;
static atomic_bool syncing;
static _Atomic uint32_t sync_gen; /* bumped after every sync; followers wait for it to move */
static _Atomic int sync_waiters;
static _Atomic int committers; /* threads on their way to a grouped write (db_committer) */
/* How long a sync leader lets writers already in the commit section catch up. 16 clients of
 * 4 KiB uploads went from 1.3 to about 4 writes per fsync and from about 2,300 to 3,000
 * uploads/s with 200-500 us here; the wait ends as soon as nobody is in the section. */
#define COMMIT_DELAY_US 300

static atomic_bool leader_waits; /* a sync leader sleeps until committers reaches 0 */

void db_committer(int delta)
{
    if (atomic_fetch_add(&committers, delta) + delta == 0 && atomic_load(&leader_waits))
        syscall(SYS_futex, &committers, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Our own descriptor on LevelDB's newest log file: fdatasync on it makes every record
 * LevelDB has written there durable (a grouped write has returned, so its record was
 * handed to the kernel: LevelDB flushes each record as it appends it). */
static int cur_log = -1;
static unsigned long long cur_log_num;

/* LevelDB creating a file in its folder is how a log switch shows: an inotify watch tells
 * the barrier whether it must look for older logs at all (a readdir per fsync was 7 % of the
 * CPU of sequential small uploads). Without inotify, or after its queue overflowed, it looks
 * every time. */
static int log_watch = -1;
static bool logs_maybe_old = true; /* one scan after open */

static void watch_logs(void)
{
    log_watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (log_watch >= 0 && inotify_add_watch(log_watch, log_dir, IN_CREATE | IN_MOVED_TO) < 0) {
        close(log_watch);
        log_watch = -1;
    }
    logs_maybe_old = true;
}

static bool log_switched(void)
{
    if (log_watch < 0)
        return true;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(log_watch, buf, sizeof buf)) > 0)
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            size_t l = ev->len ? strlen(ev->name) : 0;
            if ((ev->mask & IN_Q_OVERFLOW) || (l > 4 && !strcmp(ev->name + l - 4, ".log")))
                logs_maybe_old = true;
            p += sizeof *ev + ev->len;
        }
    return logs_maybe_old;
}

uint64_t db_grouped_writes(void) { return atomic_load(&write_seq); }

int db_batch_commit_grouped(db_batch *b, uint64_t *seq)
{
    int rc = db_batch_commit(b, false);
    *seq = rc ? 0 : atomic_fetch_add(&write_seq, 1) + 1;
    return rc;
}

/* Write zeros ahead of LevelDB's new log, once per log: an append then overwrites blocks that
 * hold data already, inside the file's size, and the fdatasync that makes it durable writes the
 * record's pages and nothing of the inode (neither a size nor a block map). On ext4 here, for
 * 5,000 bytes and fdatasync: a plain append 187-189 us, into blocks allocated with fallocate
 * 144-149, over zeros written and synced before 105-109 (docs/performance.md). LevelDB's log
 * reader skips zeros (a zero-length record of type 0, what its own preallocating writer used to
 * leave), so recovery reads the records and passes over the zeros. LevelDB appends at its own
 * offset, which is the file's size between its writes (it flushes each record): every write to
 * LevelDB is held off (db_writes_hold) from the size read to the last zero written. About a
 * memtable (db_write_buffer and an eighth, 9 MiB by default); past that a log grows as before.
 * The zeros' pages are the ones LevelDB's appends would have taken in the page cache anyway;
 * the sync that follows writes them out once. */
static void zero_ahead(int fd)
{
    static const char zeros[4096];
    int64_t want = g_cfg ? g_cfg->db_write_buffer : DB_WRITE_BUFFER;
    want += want / 8;
    db_writes_hold();
    struct stat st;
    off_t at = fstat(fd, &st) ? want : st.st_size;
    /* A page a call: one bigger write puts the range in large folios, and every append of
     * LevelDB's after that dirties a whole folio, which the process's I/O accounting
     * (/proc/PID/io, iotop) then counts as written: 300 KiB per 4 KiB upload (the disk wrote
     * what it did before; only the count was wrong). */
    while (at < want) {
        ssize_t w = pwrite(fd, zeros, (size_t)(want - at < (int64_t)sizeof zeros ? want - at : (int64_t)sizeof zeros), at);
        if (w <= 0)
            break; /* a full disk: LevelDB's own appends will say so */
        at += w;
    }
    db_writes_release();
}

/* After a log switch: take the newest log, fdatasync the older ones still present (LevelDB
 * closes a full log without syncing it), and sync the folder once for the new name. */
static int follow_logs(void)
{
    DIR *d = opendir(log_dir);
    if (!d)
        return -1;
    unsigned long long nums[64], top = 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned long long v;
        char tail[8];
        if (sscanf(de->d_name, "%llu.%7s", &v, tail) == 2 && !strcmp(tail, "log")) {
            if (n < sizeof nums / sizeof nums[0])
                nums[n++] = v;
            if (v > top)
                top = v;
        }
    }
    closedir(d);
    if (!n)
        return -1;
    char path[4200];
    int rc = 0;
    if (cur_log < 0 || top != cur_log_num) {
        snprintf(path, sizeof path, "%s/%06llu.log", log_dir, top);
        int fd = open(path, O_WRONLY | O_CLOEXEC); /* synced, and the zeros ahead */
        if (fd < 0)
            return -1;
        zero_ahead(fd);
        if (cur_log >= 0) {
            if (fdatasync(cur_log)) /* what the old one got before the switch */
                rc = -1;
            close(cur_log);
        }
        cur_log = fd;
        cur_log_num = top;
        int dfd = open(log_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd))
            rc = -1;
        if (dfd >= 0)
            close(dfd);
    }
    for (size_t i = 0; i < n; i++) {
        if (nums[i] == top)
            continue;
        snprintf(path, sizeof path, "%s/%06llu.log", log_dir, nums[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* already flushed to a synced table and deleted */
        if (fdatasync(fd))
            rc = -1;
        close(fd);
    }
    if (rc == 0)
        logs_maybe_old = n > 1; /* older logs remain until LevelDB has flushed them: look again */
    return rc;
}

/* Make every grouped write that has returned durable. Not a synced LevelDB write: LevelDB
 * queues writers behind the one that syncs, so a commit (holding the commit lock) waited for
 * the fsync of the group before it; and the empty record it appended cost a write(). */
static int sync_now(void)
{
    if (log_switched() && follow_logs())
        return -1;
    return cur_log >= 0 && fdatasync(cur_log) == 0 ? 0 : -1;
}

unsigned long long db_synced_log(void) { return cur_log < 0 ? 0 : cur_log_num; }

static void gen_wait(uint32_t seen)
{
    atomic_fetch_add(&sync_waiters, 1);
    /* Returns at once if sync_gen moved after `seen` was read: no wake-up is lost. */
    syscall(SYS_futex, &sync_gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
    atomic_fetch_sub(&sync_waiters, 1);
}

static void gen_bump(void)
{
    atomic_fetch_add(&sync_gen, 1);
    if (atomic_load(&sync_waiters) > 0) /* seq_cst: a waiter counted after this sees the new gen */
        syscall(SYS_futex, &sync_gen, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

void db_sync_through(uint64_t seq)
{
    while (atomic_load(&synced_seq) < seq) {
        uint32_t gen = atomic_load(&sync_gen);
        bool idle = false;
        if (!atomic_compare_exchange_strong(&syncing, &idle, true)) {
            if (atomic_load(&synced_seq) < seq)
                gen_wait(gen); /* the leader's sync may not cover us: wait for its end, look again */
            continue;
        }
        /* Others are about to write: let them, so this sync covers them too (PostgreSQL's
         * commit_delay), but never wait long. */
        int64_t until = mono_us() + COMMIT_DELAY_US, now;
        int c;
        while ((c = atomic_load(&committers)) > 0 && (now = mono_us()) < until) {
            /* Sleep, not spin: on two cores a spinning leader took the CPU the writers it
             * waits for needed. The last writer out wakes it (db_committer). */
            struct timespec ts = {0, (long)(until - now) * 1000};
            atomic_store(&leader_waits, true);
            syscall(SYS_futex, &committers, FUTEX_WAIT_PRIVATE, c, &ts, NULL, 0);
            atomic_store(&leader_waits, false);
        }
        uint64_t target = atomic_load(&write_seq); /* every write counted here has returned */
        if (sync_now()) {
            /* The change is visible and may not be durable, and nobody has been answered
             * yet: stopping here is the only way no client is told it succeeded (PostgreSQL
             * panics on a failed fsync for the same reason). */
            log_error("the metadata database could not be synced; stopping to keep acknowledged writes honest");
            abort();
        }
        metrics_group_commit(target > atomic_load(&synced_seq) ? target - atomic_load(&synced_seq) : 0);
        if (target > atomic_load(&synced_seq)) /* only the leader writes it */
            atomic_store(&synced_seq, target);
        atomic_store(&syncing, false);
        gen_bump();
    }
}

/* ------------------------------------------------ relaxed durability --- */

static pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fl_cv;
static pthread_t fl_thread;
static bool fl_running, fl_stop, fl_due;

/* Sleeps until an answer went out unsynced, lets the window pass (the writes of that window
 * share one sync: group commit in time rather than in concurrency), syncs, and again. */
static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&fl_mu);
    while (!fl_stop) {
        if (!fl_due) {
            pthread_cond_wait(&fl_cv, &fl_mu);
            continue;
        }
        fl_due = false;
        struct timespec until;
        wait_deadline(&until, CLOCK_MONOTONIC, g_cfg ? g_cfg->durability_window_ms : 50);
        while (!fl_stop && pthread_cond_timedwait(&fl_cv, &fl_mu, &until) == 0)
            ; /* woken early by another answer: the window still runs from the first */
        pthread_mutex_unlock(&fl_mu);
        db_sync_through(atomic_load(&write_seq));
        pthread_mutex_lock(&fl_mu);
    }
    pthread_mutex_unlock(&fl_mu);
    return NULL;
}

void db_sync_ack(uint64_t seq)
{
    if (!g_cfg || !g_cfg->durability_relaxed) {
        db_sync_through(seq);
        return;
    }
    if (atomic_load(&synced_seq) >= seq)
        return;
    pthread_mutex_lock(&fl_mu);
    if (!fl_running) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&fl_cv, &ca);
        pthread_condattr_destroy(&ca);
        fl_stop = false;
        fl_running = pthread_create(&fl_thread, NULL, flusher_main, NULL) == 0;
    }
    if (!fl_running) { /* no thread: this answer waits for its sync */
        pthread_mutex_unlock(&fl_mu);
        db_sync_through(seq);
        return;
    }
    if (!fl_due) {
        fl_due = true;
        pthread_cond_signal(&fl_cv);
    }
    pthread_mutex_unlock(&fl_mu);
}

/* Stop the flusher and sync what it had still to sync. */
static void flusher_stop(bool was_open)
{
    pthread_mutex_lock(&fl_mu);
    bool running = fl_running;
    fl_stop = true;
    if (running)
        pthread_cond_broadcast(&fl_cv);
    pthread_mutex_unlock(&fl_mu);
    if (!running)
        return;
    pthread_join(fl_thread, NULL);
    pthread_cond_destroy(&fl_cv);
    fl_running = fl_due = false;
    if (was_open && atomic_load(&synced_seq) < atomic_load(&write_seq))
        db_sync_through(atomic_load(&write_seq));
}

void db_sync_open(const char *dir)
{
    free(log_dir);
    log_dir = xstrdup(dir);
    watch_logs();
}

void db_sync_close(bool was_open)
{
    flusher_stop(was_open);
    if (log_watch >= 0)
        close(log_watch);
    log_watch = -1;
    if (cur_log >= 0)
        close(cur_log);
    cur_log = -1;
    cur_log_num = 0;
    free(log_dir);
    log_dir = NULL;
}
