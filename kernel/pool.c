/*
 * pool.c — the blocking worker pool: run one blocking call (an argon2id check, a
 * certificate generation, a timer's run, the task retention sweep) off the loop and be
 * called back on it. api->run_blocking, timer.c and task.c hand their work here.
 *
 * A job goes to a small pool: a worker that is idle takes it, otherwise a new worker
 * starts (at most POOL_MAX_JOBS, which also bounds queued plus running jobs); a worker idle
 * for POOL_IDLE_S ends. The ftp module runs a job per MiB of a transfer and per small file,
 * so a thread per job cost a clone, a fresh stack and a scheduler placement each time (112
 * per GiB of RETR). The job's module is counted busy from submit until its done callback has
 * returned on the loop, so the module cannot be unloaded under a job.
 *
 * Why the bus layer: timers and the task queue (bus) run work here, so the pool sits beside
 * them and calls only down (loop.c's main_call, modref.c's busy count).
 *
 * Threads: any thread submits; workers run `work`; `done` runs on the loop thread. `pool_mu`
 * guards the queue and the worker table; `running` is atomic. pool_fini (after modmgr_fini:
 * no job left) ends the idle workers.
 */
#include "kernel.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define POOL_MAX_JOBS 64
#define POOL_IDLE_S 30

typedef struct job {
    mb_module *self;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
    struct job *next;
} job;

static atomic_int running; /* submitted, done callback not yet run */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static job *queue_head, **queue_tail = &queue_head;
static int queued, idle, workers;
static bool stopping;
static pthread_t worker_id[POOL_MAX_JOBS];
static bool worker_live[POOL_MAX_JOBS]; /* pool_fini joins these */

/* On the loop: the module's callback, then the module may drain. */
static void job_done(void *p)
{
    job *j = p;
    j->done(j->arg);
    modref_leave(j->self);
    free(j);
}

static void *worker_main(void *arg)
{
    int slot = (int)(intptr_t)arg;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (!queue_head && !stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += POOL_IDLE_S;
            idle++;
            int rc = pthread_cond_timedwait(&pool_cv, &pool_mu, &until);
            idle--;
            if (rc == ETIMEDOUT && !queue_head && !stopping) { /* not needed: end, unjoined */
                worker_live[slot] = false;
                workers--;
                pthread_detach(pthread_self());
                pthread_mutex_unlock(&pool_mu);
                return NULL;
            }
        }
        if (!queue_head)
            break; /* stopping, nothing left: pool_fini joins us */
        job *j = queue_head;
        if (!(queue_head = j->next))
            queue_tail = &queue_head;
        queued--;
        pthread_mutex_unlock(&pool_mu);
        j->work(j->arg);
        atomic_fetch_sub(&running, 1);
        main_call(job_done, j);
        pthread_mutex_lock(&pool_mu);
    }
    pthread_mutex_unlock(&pool_mu);
    return NULL;
}

/* A new worker, with pool_mu held; false if none could start. */
static bool worker_start(void)
{
    for (int i = 0; i < POOL_MAX_JOBS; i++)
        if (!worker_live[i]) {
            if (pthread_create(&worker_id[i], NULL, worker_main, (void *)(intptr_t)i))
                return false;
            worker_live[i] = true;
            workers++;
            return true;
        }
    return false;
}

int pool_run(mb_module *self, void (*work)(void *), void (*done)(void *), void *arg, mb_err *err)
{
    if (!work || !done)
        return err_set(err, MB_EINVAL, "run_blocking needs a work and a done function");
    if (atomic_fetch_add(&running, 1) >= POOL_MAX_JOBS) {
        atomic_fetch_sub(&running, 1);
        return err_set(err, MB_EBUSY, "too many blocking jobs at once; try again");
    }
    job *j = xmalloc(sizeof *j);
    *j = (job){self, work, done, arg, NULL};
    modref_enter(self);
    pthread_mutex_lock(&pool_mu);
    *queue_tail = j;
    queue_tail = &j->next;
    queued++;
    if (queued > idle && !worker_start() && workers == 0) {
        queue_head = NULL; /* j is the only job: no worker runs */
        queue_tail = &queue_head;
        queued = 0;
        pthread_mutex_unlock(&pool_mu);
        modref_leave(self);
        atomic_fetch_sub(&running, 1);
        free(j);
        return err_set(err, MB_EBUSY, "could not start a worker thread");
    }
    pthread_cond_signal(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    return 0;
}

void pool_fini(void)
{
    pthread_t ids[POOL_MAX_JOBS];
    int n = 0;
    pthread_mutex_lock(&pool_mu);
    stopping = true;
    for (int i = 0; i < POOL_MAX_JOBS; i++)
        if (worker_live[i]) {
            ids[n++] = worker_id[i];
            worker_live[i] = false;
        }
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    for (int i = 0; i < n; i++)
        pthread_join(ids[i], NULL);
}
