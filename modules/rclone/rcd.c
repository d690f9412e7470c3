/*
 * modules/rclone/rcd.c — the `rclone rcd` that the rclone module starts and supervises (rcd.h).
 *
 * One thread per module copy: pick a free loopback port, tell the backends the URL, start
 * `rclone rcd --rc-addr 127.0.0.1:<port> --rc-serve` (modules/spawn.c), wait for it to
 * end, and start it again after a backoff. The rc user and password (made at random by the
 * module) go through RCLONE_RC_USER and RCLONE_RC_PASS in its environment, which only its own
 * user can read (/proc/<pid>/environ), never on its command line, which `ps` shows to anyone.
 * The child gets SIGTERM when the thread ends (PR_SET_PDEATHSIG), so a killed mbyted leaves no
 * rcd behind.
 *
 * Between a death and the next start the backends' requests fail to connect and are tried
 * again (httppool's backoff); an upload whose chunk could not be put fails, nothing is
 * acknowledged. The port is picked by binding port 0 and closing it: another process may take
 * it before rcd does, and then rcd exits at once and the next start picks another.
 *
 * Threads: the supervisor's thread and the loop thread (rcd_start, rcd_stop in fini); `mu`
 * guards stop and pid, and rcd_stop's signal reaches the thread through `cv` or the kill.
 */
#include "rcd.h"
#include "sfmt.h"
#include "spawn.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define RUN_FOREVER_S (100LL * 365 * 86400) /* sp_wait's wall clock: a daemon has none */
#define RAN_LONG_S 60                       /* a run this long resets the backoff */

struct rcd_sup {
    const mb_api *api;
    mb_module *self;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    pid_t pid;
    char *prog, *config, *dir;
    char **envp; /* mbyted's environment without rclone's rc auth settings, and with ours */
    long base_ms, max_ms;
    rcd_url_fn on_url;
    void *ud;
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &al))
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Sleep ms unless stopped meanwhile: true when stopped. */
static bool nap(rcd_sup *s, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

static void *supervise(void *arg)
{
    rcd_sup *s = arg;
    long backoff = s->base_ms;
    char log_path[4200], cache[4200];
    sfmt(log_path, sizeof log_path, "%s/rcd.log", s->dir);
    sfmt(cache, sizeof cache, "%s/cache", s->dir);
    for (;;) {
        int port = free_port();
        int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        pid_t pid = -1;
        time_t started = time(NULL);
        if (port > 0 && logfd >= 0) {
            char addr[40], url[64];
            snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
            snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
            s->on_url(s->ud, url);
            char *argv[] = {s->prog, "rcd", "--rc-addr", addr, "--rc-serve", "--log-file", log_path,
                            "--cache-dir", cache, s->config[0] ? "--config" : NULL, s->config, NULL};
            sp_limits lim = {.nofile = 65536, .death_signal = SIGTERM};
            pid = sp_start(s->prog, argv, s->envp, -1, logfd, &lim, &(sp_owner){&s->mu, &s->stop, &s->pid});
        }
        if (logfd >= 0)
            close(logfd);
        if (pid == 0)
            break; /* stopping */
        sp_result r = {0};
        if (pid > 0) {
            s->api->log(s->self, MB_LOG_INFO, "rclone rcd started (pid %d) on 127.0.0.1:%d", (int)pid, port);
            sp_wait(pid, RUN_FOREVER_S, &(sp_owner){&s->mu, &s->stop, &s->pid}, &r);
            if (r.stopped)
                break;
            if (time(NULL) - started >= RAN_LONG_S)
                backoff = s->base_ms;
            s->api->log(s->self, MB_LOG_WARN, "rclone rcd (pid %d) ended (%s %d; see %s); starting it again in %ld ms",
                        (int)pid, r.signal ? "signal" : "exit status", r.signal ? r.signal : r.code, log_path,
                        backoff);
        } else
            s->api->log(s->self, MB_LOG_ERROR, "rclone rcd cannot be started (%s); trying again in %ld ms",
                        port <= 0 ? "no free port" : logfd < 0 ? "its log cannot be opened" : strerror((int)-pid),
                        backoff);
        if (nap(s, backoff))
            break;
        backoff = backoff * 2 > s->max_ms ? s->max_ms : backoff * 2;
    }
    return NULL;
}

static bool rc_auth_var(const char *e)
{
    static const char *const ours[] = {"RCLONE_RC_USER=", "RCLONE_RC_PASS=", "RCLONE_RC_HTPASSWD=",
                                       "RCLONE_RC_NO_AUTH=", "RCLONE_RC_ADDR=", "RCLONE_RC_BASEURL="};
    for (size_t i = 0; i < sizeof ours / sizeof *ours; i++)
        if (!strncmp(e, ours[i], strlen(ours[i])))
            return true;
    return false;
}

static void env_free(char **envp)
{
    if (!envp)
        return;
    for (char **e = envp; *e; e++) {
        explicit_bzero(*e, strlen(*e)); /* the password is one of them */
        free(*e);
    }
    free(envp);
}

static char **env_make(const char *user, const char *password)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **envp = calloc(n + 3, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (char **e = environ; *e; e++)
        if (!rc_auth_var(*e) && !(envp[k++] = strdup(*e)))
            goto fail;
    size_t ul = strlen(user) + 16, pl = strlen(password) + 16;
    if (!(envp[k] = malloc(ul)))
        goto fail;
    snprintf(envp[k++], ul, "RCLONE_RC_USER=%s", user);
    if (!(envp[k] = malloc(pl)))
        goto fail;
    snprintf(envp[k++], pl, "RCLONE_RC_PASS=%s", password);
    return envp;
fail:
    env_free(envp);
    return NULL;
}

static void sup_free(rcd_sup *s)
{
    env_free(s->envp);
    free(s->prog);
    free(s->config);
    free(s->dir);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int rcd_start(const mb_api *api, mb_module *self, const rcd_opts *o, rcd_url_fn on_url, void *ud, rcd_sup **out,
              mb_err *err)
{
    *out = NULL;
    if (access(o->prog, X_OK))
        return api->err_set(err, MB_EINVAL, "rclone.yaml: rclone '%s' cannot be run: %s", o->prog, strerror(errno));
    if (mkdir(o->dir, 0700) && errno != EEXIST)
        return api->err_set(err, MB_EIO, "cannot make %s: %s", o->dir, strerror(errno));
    rcd_sup *s = calloc(1, sizeof *s);
    if (!s)
        return api->err_set(err, MB_ENOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->api = api;
    s->self = self;
    s->prog = strdup(o->prog);
    s->config = strdup(o->config);
    s->dir = strdup(o->dir);
    s->envp = env_make(o->user, o->password);
    s->base_ms = o->restart_base_ms;
    s->max_ms = o->restart_max_ms;
    s->on_url = on_url;
    s->ud = ud;
    if (!s->prog || !s->config || !s->dir || !s->envp) {
        sup_free(s);
        return api->err_set(err, MB_ENOMEM, "out of memory");
    }
    int e = pthread_create(&s->th, NULL, supervise, s);
    if (e) {
        sup_free(s);
        return api->err_set(err, MB_EIO, "cannot start the rcd supervisor: %s", strerror(e));
    }
    *out = s;
    return 0;
}

void rcd_stop(rcd_sup *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (s->pid > 0)
        kill(s->pid, SIGTERM);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    if (pthread_timedjoin_np(s->th, NULL, &until)) {
        pthread_mutex_lock(&s->mu);
        if (s->pid > 0)
            kill(s->pid, SIGKILL); /* it did not end on SIGTERM: nothing of ours is in flight */
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    sup_free(s);
}
