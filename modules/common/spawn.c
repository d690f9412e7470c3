/*
 * modules/common/spawn.c — run a helper program in a box of limits (spawn.h).
 *
 * The calling thread forks, sets the limits in the child and execs; then it polls waitpid
 * every 0.5 to 5 ms, killing the child once wall_s passed. The fork happens with the owner's mutex
 * held, so fini (which takes it, sets stop and kills the recorded pid) either sees the child
 * or makes the run refuse to start. Any thread; no state of its own.
 */
#include "spawn.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SP_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SP_SANITIZED 1
#endif
#endif

int sp_run(const char *prog, char *const argv[], char *const envp[], int out_fd, const sp_limits *l,
           const sp_owner *o, sp_result *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_lock(o->mu);
    if (*o->stop) {
        pthread_mutex_unlock(o->mu);
        r->stopped = true;
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) { /* only async-signal-safe calls until exec */
        struct rlimit cpu = {(rlim_t)l->cpu_s, (rlim_t)l->cpu_s + 1}, fsz = {(rlim_t)l->fsize, (rlim_t)l->fsize},
                      core = {0, 0}, nofile = {(rlim_t)l->nofile, (rlim_t)l->nofile};
        setrlimit(RLIMIT_CPU, &cpu);
        setrlimit(RLIMIT_FSIZE, &fsz);
        setrlimit(RLIMIT_CORE, &core);
        setrlimit(RLIMIT_NOFILE, &nofile);
#ifndef SP_SANITIZED
        if (l->as_mb > 0) {
            struct rlimit as = {(rlim_t)l->as_mb << 20, (rlim_t)l->as_mb << 20};
            setrlimit(RLIMIT_AS, &as);
        }
#endif
        dup2(out_fd, 1);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 2);
        }
        execve(prog, argv, envp);
        _exit(127);
    }
    int fork_errno = errno;
    *o->pid = pid > 0 ? pid : 0;
    pthread_mutex_unlock(o->mu);
    if (pid < 0)
        return -fork_errno;
    int status = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long nap_ns = 500 * 1000; /* 0.5 ms, doubling to 5 ms: a quick child is seen quickly */
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid || (got < 0 && errno != EINTR))
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!r->timed_out && now.tv_sec - start.tv_sec >= l->wall_s) {
            kill(pid, SIGKILL);
            r->timed_out = true;
        }
        struct timespec nap = {0, nap_ns};
        nanosleep(&nap, NULL);
        nap_ns = nap_ns < 2500 * 1000 ? nap_ns * 2 : 5000 * 1000;
    }
    pthread_mutex_lock(o->mu);
    *o->pid = 0;
    r->stopped = *o->stop;
    pthread_mutex_unlock(o->mu);
    r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return 0;
}

const char *sp_signal_note(int sig)
{
    return sig == SIGXCPU ? ": CPU time limit" : sig == SIGXFSZ ? ": file size limit" : "";
}
