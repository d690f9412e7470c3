/*
 * modules/spawn.c — run a helper program in a box of limits (spawn.h).
 *
 * The calling thread forks, sets the limits in the child and execs; then it waits on a pidfd
 * (woken the moment the child ends; 5 ms naps on kernels without one), killing the child once
 * wall_s passed. mbyte-extractd uses the limits and
 * the wait for the workers it forks per file. The fork happens with the owner's mutex
 * held, so fini (which takes it, sets stop and kills the recorded pid) either sees the child
 * or makes the run refuse to start. Any thread; no state of its own.
 */
#include "spawn.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
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

void sp_apply_limits(const sp_limits *l)
{
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    if (l->death_signal > 0)
        prctl(PR_SET_PDEATHSIG, l->death_signal);
    if (l->cpu_s > 0) {
        struct rlimit cpu = {(rlim_t)l->cpu_s, (rlim_t)l->cpu_s + 1};
        setrlimit(RLIMIT_CPU, &cpu);
    }
    if (l->fsize > 0) {
        struct rlimit fsz = {(rlim_t)l->fsize, (rlim_t)l->fsize};
        setrlimit(RLIMIT_FSIZE, &fsz);
    }
    if (l->nofile > 0) {
        struct rlimit nofile = {(rlim_t)l->nofile, (rlim_t)l->nofile};
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
#ifndef SP_SANITIZED
    if (l->as_mb > 0) {
        struct rlimit as = {(rlim_t)l->as_mb << 20, (rlim_t)l->as_mb << 20};
        setrlimit(RLIMIT_AS, &as);
    }
#endif
}

pid_t sp_start(const char *prog, char *const argv[], char *const envp[], int in_fd, int out_fd, const sp_limits *l,
               const sp_owner *o)
{
    pthread_mutex_lock(o->mu);
    if (*o->stop) {
        pthread_mutex_unlock(o->mu);
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) { /* only async-signal-safe calls until exec */
        sp_apply_limits(l);
        int nul = open("/dev/null", O_RDWR);
        dup2(in_fd >= 0 ? in_fd : nul, 0);
        dup2(out_fd, 1);
        if (nul >= 0)
            dup2(nul, 2);
        execve(prog, argv, envp);
        _exit(127);
    }
    int fork_errno = errno;
    *o->pid = pid > 0 ? pid : 0;
    pthread_mutex_unlock(o->mu);
    return pid < 0 ? -fork_errno : pid;
}

void sp_wait(pid_t pid, int64_t wall_s, const sp_owner *o, sp_result *r)
{
    memset(r, 0, sizeof *r);
    int status = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* a pidfd becomes readable the moment the child ends (Linux 5.3); without one, naps */
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid || (got < 0 && errno != EINTR))
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left_ms = wall_s * 1000 - ((int64_t)(now.tv_sec - start.tv_sec) * 1000 +
                                           (now.tv_nsec - start.tv_nsec) / 1000000);
        if (!r->timed_out && left_ms <= 0) {
            kill(pid, SIGKILL);
            r->timed_out = true;
        }
        if (pfd >= 0 && !r->timed_out) {
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms);
        } else {
            struct timespec nap = {0, 5 * 1000 * 1000};
            nanosleep(&nap, NULL);
        }
    }
    if (pfd >= 0)
        close(pfd);
    if (o) {
        pthread_mutex_lock(o->mu);
        *o->pid = 0;
        r->stopped = *o->stop;
        pthread_mutex_unlock(o->mu);
    }
    r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int sp_run(const char *prog, char *const argv[], char *const envp[], int out_fd, const sp_limits *l,
           const sp_owner *o, sp_result *r)
{
    memset(r, 0, sizeof *r);
    pid_t pid = sp_start(prog, argv, envp, -1, out_fd, l, o);
    if (pid < 0)
        return (int)pid;
    if (pid == 0)
        r->stopped = true;
    else
        sp_wait(pid, l->wall_s, o, r);
    return 0;
}

const char *sp_signal_note(int sig)
{
    return sig == SIGXCPU ? ": CPU time limit" : sig == SIGXFSZ ? ": file size limit" : "";
}
