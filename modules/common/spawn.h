/*
 * modules/common/spawn.h — run a helper program in a box of limits (the thumbnails and search
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

/* Run prog (argv, envp) with stdin from /dev/null, stdout into out_fd, stderr to /dev/null,
 * under the limits; wait for it. 0 with *r filled, or -errno when it could not be started. */
int sp_run(const char *prog, char *const argv[], char *const envp[], int out_fd, const sp_limits *l,
           const sp_owner *o, sp_result *r);

/* What a signal means under these limits: ": CPU time limit", ": file size limit", "". */
const char *sp_signal_note(int sig);

#endif
