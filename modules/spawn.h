/*
 * modules/spawn.h — run a helper program in a box of limits (the thumbnails and search
 * modules' decoders): fork + exec with rlimits, a wall-clock kill, and a pid a module's fini
 * can kill so an unload never waits for a decoder. Compiled into each module that uses it
 * (modules/meson.build); no state of its own.
 */
#ifndef MBYTE_SPAWN_H
#define MBYTE_SPAWN_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct sp_limits {
    int64_t cpu_s;   /* RLIMIT_CPU: SIGXCPU at it, SIGKILL a second later */
    int64_t wall_s;  /* SIGKILL after this long (a decoder asleep uses no CPU) */
    int64_t fsize;   /* RLIMIT_FSIZE in bytes: what it may write (SIGXFSZ past it) */
    int64_t as_mb;   /* RLIMIT_AS in MiB, 0 for none; never set in sanitizer builds, whose shadow
                      * memory needs terabytes of address space */
    int64_t nofile;  /* RLIMIT_NOFILE */
    int death_signal; /* sent to the child when the thread that started it ends, mbyted's death
                       * included (PR_SET_PDEATHSIG): a long-lived helper never outlives it */
} sp_limits;

/* Who may stop a run: under *mu, a run refuses to start when *stop is set, and keeps its
 * child's pid in *pid (0 when none) so that fini, holding mu, can SIGKILL it. */
typedef struct sp_owner {
    pthread_mutex_t *mu;
    const bool *stop;
    pid_t *pid;
} sp_owner;

typedef struct sp_result {
    bool stopped;   /* the owner stopped (the child was killed for it or never started) */
    bool timed_out; /* killed after wall_s */
    int signal;     /* the signal that ended it, 0 when it exited */
    int code;       /* its exit status when it exited (127: the program is missing) */
} sp_result;

/* Set the limits (and the death signal) in the calling process (a child between fork and exec,
 * or a forked worker): async-signal-safe; a limit of 0 is not set. */
void sp_apply_limits(const sp_limits *l);

/* Fork and exec prog (argv, envp) under the limits with stdin from in_fd (/dev/null when -1),
 * stdout into out_fd, stderr to /dev/null; its pid goes to *o->pid. Returns the pid, 0 when the
 * owner is stopping (nothing started), or -errno. */
pid_t sp_start(const char *prog, char *const argv[], char *const envp[], int in_fd, int out_fd, const sp_limits *l,
               const sp_owner *o);

/* Wait for pid, SIGKILLing it once wall_s passed; then, when o is not NULL, clear *o->pid and
 * tell whether the owner stopped meanwhile. */
void sp_wait(pid_t pid, int64_t wall_s, const sp_owner *o, sp_result *r);

/* sp_start + sp_wait with stdin from /dev/null. 0 with *r filled, or -errno when it could not
 * be started. */
int sp_run(const char *prog, char *const argv[], char *const envp[], int out_fd, const sp_limits *l,
           const sp_owner *o, sp_result *r);

/* What a signal means under these limits: ": CPU time limit", ": file size limit", "". */
const char *sp_signal_note(int sig);

#endif
