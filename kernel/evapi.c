/*
 * evapi.c — what an event-driven module (ftp) needs from the kernel beyond files: the
 * loop itself, the data directory, the FTP column of the error table, and a way to run one
 * blocking call (an argon2id check, a certificate generation) off the loop and be called
 * back on it. ABI minor 2; api.c points the mb_api entries here.
 *
 * Threads: event_base/data_dir/err_ftp_reply are read-only. run_blocking starts one
 * detached thread per job (jobs are rare and short: logins), bounded by `running`
 * (atomic); the job's module is counted busy from submit until its done callback has
 * returned on the loop, so the module cannot be unloaded under a job.
 */
#include "kernel.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define EVAPI_MAX_JOBS 64

static atomic_int running;

struct event_base *evapi_event_base(void) { return main_loop(); }
const char *evapi_data_dir(void) { return g_cfg->data_dir; }
int evapi_err_ftp_reply(int code) { return err_ftp_reply(code); }

typedef struct job {
    mb_module *self;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
} job;

/* On the loop: the module's callback, then the module may drain. */
static void job_done(void *p)
{
    job *j = p;
    j->done(j->arg);
    modmgr_leave(j->self);
    free(j);
}

static void *job_thread(void *p)
{
    job *j = p;
    j->work(j->arg);
    atomic_fetch_sub(&running, 1);
    main_call(job_done, j);
    return NULL;
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
    *j = (job){self, work, done, arg};
    modmgr_enter(self);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, job_thread, j);
    pthread_attr_destroy(&at);
    if (rc) {
        modmgr_leave(self);
        atomic_fetch_sub(&running, 1);
        free(j);
        return err_set(err, MB_EBUSY, "could not start a worker thread");
    }
    return 0;
}
