/*
 * evapi.c — what an event-driven module (ftp) needs from the kernel beyond files: the
 * loop itself, the data directory, the FTP column of the error table, and a way to run one
 * blocking call (an argon2id check, a certificate generation) off the loop and be called
 * back on it. ABI minor 2; api.c points the mb_api entries here.
 *
 * Threads: event_base/data_dir/err_ftp_reply are read-only. run_blocking hands a job to a
 * small pool: a worker that is idle takes it, otherwise a new worker starts (at most
 * EVAPI_MAX_JOBS, which also bounds queued plus running jobs); a worker idle for
 * EVAPI_IDLE_S ends. The ftp module runs a job per MiB of a transfer and per small file, so
 * a thread per job cost a clone, a fresh stack and a scheduler placement each time (112 per
 * GiB of RETR). The job's module is counted busy from submit until its done callback has
 * returned on the loop, so the module cannot be unloaded under a job; evapi_fini (after
 * modmgr_fini: no job left) ends the idle workers.
 */
#include "kernel.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define EVAPI_MAX_JOBS 64
#define EVAPI_IDLE_S 30

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
static pthread_t worker_id[EVAPI_MAX_JOBS];
static bool worker_live[EVAPI_MAX_JOBS]; /* evapi_fini joins these */

struct event_base *evapi_event_base(void) { return main_loop(); }
const char *evapi_data_dir(void) { return g_cfg->data_dir; }
/* thumbs branch (minor 10): where the modules' .so files are, for programs shipped beside them. */
const char *evapi_module_dir(void) { return g_cfg->module_dir; }
int evapi_err_ftp_reply(int code) { return err_ftp_reply(code); }

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
            until.tv_sec += EVAPI_IDLE_S;
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
            break; /* stopping, nothing left: evapi_fini joins us */
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
    for (int i = 0; i < EVAPI_MAX_JOBS; i++)
        if (!worker_live[i]) {
            if (pthread_create(&worker_id[i], NULL, worker_main, (void *)(intptr_t)i))
                return false;
            worker_live[i] = true;
            workers++;
            return true;
        }
    return false;
}

int evapi_run_blocking(mb_module *self, void (*work)(void *), void (*done)(void *), void *arg, mb_err *err)
{
    if (!work || !done)
        return err_set(err, MB_EINVAL, "run_blocking needs a work and a done function");
    if (atomic_fetch_add(&running, 1) >= EVAPI_MAX_JOBS) {
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

void evapi_fini(void)
{
    pthread_t ids[EVAPI_MAX_JOBS];
    int n = 0;
    pthread_mutex_lock(&pool_mu);
    stopping = true;
    for (int i = 0; i < EVAPI_MAX_JOBS; i++)
        if (worker_live[i]) {
            ids[n++] = worker_id[i];
            worker_live[i] = false;
        }
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    for (int i = 0; i < n; i++)
        pthread_join(ids[i], NULL);
}
