/*
 * modules/search/runx.c — the module's side of mbyte-extractd (extractd.c): a server per slot,
 * started when the first file of a decoder kind comes, one request line per file, its answer
 * turned into the text or a reason (issue 17, docs/search.md "The extraction process").
 *
 * Threads: the indexing worker and rebuild tasks call xr_extract; each takes a slot (busy,
 * under the module's mutex) for one file and alone uses that slot's pipes; fini calls xr_kill
 * (holding no lock) and, after every caller is gone, xr_fini. The module's mutex guards busy,
 * pid, prog and as_mb.
 */
#include "mbyte.h"
#include "search.h"
#include "sfmt.h"
#include "spawn.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int xr_init(xr_pool *s, pthread_mutex_t *mu, const bool *stop, const char *tmp, char *why, size_t whylen)
{
    s->mu = mu;
    s->stop = stop;
    atomic_init(&s->seq, 0);
    for (int i = 0; i < XR_MAX; i++)
        s->kids[i] = (xr_kid){.to = -1, .from = -1};
    snprintf(s->tmp, sizeof s->tmp, "%s", tmp);
    if (mkdir(s->tmp, 0700) && errno != EEXIST) {
        sfmt(why, whylen, "cannot make %s: %s", s->tmp, strerror(errno));
        return -1;
    }
    DIR *d = opendir(s->tmp); /* what a crash of mbyted left there */
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.')
            unlinkat(dirfd(d), de->d_name, 0);
    if (d)
        closedir(d);
    return 0;
}

void xr_kill(xr_pool *s)
{
    pthread_mutex_lock(s->mu);
    for (int i = 0; i < XR_MAX; i++)
        if (s->kids[i].pid > 0)
            kill(s->kids[i].pid, SIGKILL); /* its worker dies with it (PR_SET_PDEATHSIG) */
    pthread_mutex_unlock(s->mu);
}

/* End the extractor server of slot k (it stopped answering, or the module stops). */
static void kid_end(xr_pool *s, int k)
{
    xr_kid *kd = &s->kids[k];
    pthread_mutex_lock(s->mu);
    pid_t pid = kd->pid;
    kd->pid = 0;
    pthread_mutex_unlock(s->mu);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (kd->to >= 0)
        close(kd->to);
    if (kd->from >= 0)
        close(kd->from);
    kd->to = kd->from = -1;
}

/* Start slot k's extractor server: mbyte-extractd --serve <tmp>, with an address-space limit,
 * 64 open files and no core dumps (each file's worker gets CPU, output and time limits from it).
 * 0, MB_ECANCELED when stopping, or -1 with reason. */
static int kid_start(xr_pool *s, int k, const char *prog, int64_t as_mb, char *reason, size_t rlen)
{
    xr_kid *kd = &s->kids[k];
    int req[2], resp[2];
    if (pipe2(req, O_CLOEXEC)) {
        sfmt(reason, rlen, "cannot make a pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(resp, O_CLOEXEC)) {
        sfmt(reason, rlen, "cannot make a pipe: %s", strerror(errno));
        close(req[0]), close(req[1]);
        return -1;
    }
    char home[1200], test[PATH_MAX + 32];
    sfmt(home, sizeof home, "HOME=%s", s->tmp);
    const char *t = getenv("MBYTE_EXTRACTD_TEST"); /* the tests' crash and hang switch */
    sfmt(test, sizeof test, "MBYTE_EXTRACTD_TEST=%s", t ? t : "");
    char *argv[] = {(char *)prog, "--serve", s->tmp, NULL};
    char *envp[] = {home, "PATH=/usr/bin:/bin", test, NULL};
    sp_limits lim = {.as_mb = as_mb, .nofile = 64};
    pid_t pid = sp_start(prog, argv, envp, req[0], resp[1], &lim, &(sp_owner){s->mu, s->stop, &kd->pid});
    close(req[0]);
    close(resp[1]);
    if (pid <= 0) {
        close(req[1]);
        close(resp[0]);
        if (pid == 0)
            return MB_ECANCELED;
        sfmt(reason, rlen, "cannot start the extractor %s: %s", prog, strerror((int)-pid));
        return -1;
    }
    kd->to = req[1];
    kd->from = resp[0];
    return 0;
}

/* One line from the server within `seconds`: 1 read, 0 no answer (it died or is stuck). */
static int kid_answer(xr_kid *kd, int64_t seconds, char *line, size_t n)
{
    size_t got = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (got + 1 < n) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left_ms = seconds * 1000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
        struct pollfd p = {.fd = kd->from, .events = POLLIN};
        if (left_ms <= 0 || poll(&p, 1, (int)left_ms) <= 0) {
            if (left_ms > 0 && errno == EINTR)
                continue;
            return 0;
        }
        ssize_t m = read(kd->from, line + got, 1); /* lines are short: one byte at a time keeps it simple */
        if (m <= 0)
            return 0;
        if (line[got] == '\n') {
            line[got] = 0;
            return 1;
        }
        got++;
    }
    return 0;
}

/* Have mbyte-extractd read the bytes of one file (written to a temporary file under the data
 * dir, never the store's own file: the extractor sees only what it must read). 0 with the text
 * in *x, -1 with x->reason (a crash, a limit, the extractor's own error), or MB_ECANCELED when
 * the module is stopping (the file is not recorded: the next copy extracts it). */
int xr_extract(xr_pool *s, const char *kind, const unsigned char *buf, size_t len, int64_t max_text, int64_t secs,
               sx_result *x)
{
    memset(x, 0, sizeof *x);
    x->kind = kind;
    int64_t limit = secs + 5;
    char prog[PATH_MAX], in[1200], out[1200], req[128], ans[128];
    int k = 0;
    pthread_mutex_lock(s->mu);
    snprintf(prog, sizeof prog, "%s", s->prog);
    int64_t as_mb = s->as_mb;
    while (k < XR_MAX && s->kids[k].busy)
        k++;
    if (k < XR_MAX)
        s->kids[k].busy = true;
    pthread_mutex_unlock(s->mu);
    if (k == XR_MAX) {
        sfmt(x->reason, sizeof x->reason, "more than %d extractions at once", XR_MAX);
        return -1;
    }
    xr_kid *kd = &s->kids[k];
    unsigned n = atomic_fetch_add(&s->seq, 1);
    sfmt(in, sizeof in, "%s/%u.in", s->tmp, n);
    sfmt(out, sizeof out, "%s/%u.out", s->tmp, n);
    int rc = -1, ifd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (ifd < 0 || write(ifd, buf, len) != (ssize_t)len)
        sfmt(x->reason, sizeof x->reason, "cannot write %s: %s", in, strerror(errno));
    else if (kd->from >= 0 || (rc = kid_start(s, k, prog, as_mb, x->reason, sizeof x->reason)) == 0) {
        rc = -1;
        int rl = snprintf(req, sizeof req, "%u %s %lld %lld\n", n, kind, (long long)max_text, (long long)secs);
        bool asked = write(kd->to, req, (size_t)rl) == rl;
        if (!asked) { /* the idle server died (killed from outside): a new one, once */
            kid_end(s, k);
            int r2 = kid_start(s, k, prog, as_mb, x->reason, sizeof x->reason);
            asked = r2 == 0 && write(kd->to, req, (size_t)rl) == rl;
        }
        if (!asked || !kid_answer(kd, limit + 5, ans, sizeof ans)) {
            kid_end(s, k); /* dead or stuck: the next file gets a new one */
            pthread_mutex_lock(s->mu);
            bool stop = *s->stop;
            pthread_mutex_unlock(s->mu);
            if (stop)
                rc = MB_ECANCELED;
            else
                sfmt(x->reason, sizeof x->reason, "the extractor stopped answering and was restarted");
        } else {
            int v = 0;
            if (!strcmp(ans, "timeout"))
                sfmt(x->reason, sizeof x->reason, "extraction took longer than %lld s and was stopped",
                     (long long)limit);
            else if (sscanf(ans, "signal %d", &v) == 1 && v == SIGXCPU)
                sfmt(x->reason, sizeof x->reason, "extraction used more than %lld s of CPU and was stopped",
                     (long long)limit);
            else if (sscanf(ans, "signal %d", &v) == 1 && v == SIGXFSZ)
                sfmt(x->reason, sizeof x->reason, "the extractor wrote more than its output limit (signal %d)", v);
            else if (sscanf(ans, "signal %d", &v) == 1)
                sfmt(x->reason, sizeof x->reason, "extractor crashed (signal %d: %s)", v, strsignal(v));
            else if (sscanf(ans, "exit %d", &v) == 1 && v != 0 && v != 1)
                sfmt(x->reason, sizeof x->reason, "the extractor failed (exit %d; out of memory?)", v);
            else if (sscanf(ans, "exit %d", &v) == 1)
                rc = 0;
            else
                sfmt(x->reason, sizeof x->reason, "the extractor said: %s", ans);
        }
    } else if (rc == -1 && kd->from < 0)
        kid_end(s, k);
    if (ifd >= 0)
        close(ifd);
    int ofd = rc == 0 ? open(out, O_RDONLY | O_CLOEXEC) : -1;
    if (rc == 0) { /* its answer: {"kind"[,"note"|"error"]}\n then the text */
        size_t cap = (size_t)max_text + (64 << 10), got = 0;
        char *o = ofd >= 0 ? malloc(cap + 1) : NULL;
        ssize_t m = 0;
        while (o && got < cap && (m = read(ofd, o + got, cap - got)) > 0)
            got += (size_t)m;
        char *nl = o ? memchr(o, '\n', got) : NULL;
        json_t *head = nl ? json_loadb(o, (size_t)(nl - o), 0, NULL) : NULL;
        if (!head) {
            sfmt(x->reason, sizeof x->reason, "the extractor gave no answer");
            rc = -1;
        } else if (mb_jstr(head, "error")) {
            sfmt(x->reason, sizeof x->reason, "%s", mb_jstr(head, "error"));
            rc = -1;
        } else {
            sfmt(x->reason, sizeof x->reason, "%s", mb_jstr(head, "note") ? mb_jstr(head, "note") : "");
            size_t tl = got - (size_t)(nl + 1 - o);
            if (tl > (size_t)max_text)
                tl = (size_t)max_text;
            if (tl && (x->text = malloc(tl + 1))) {
                memcpy(x->text, nl + 1, tl);
                x->text[tl] = 0;
                x->len = tl;
            }
        }
        json_decref(head);
        free(o);
    }
    if (ofd >= 0)
        close(ofd);
    unlink(in);
    unlink(out);
    pthread_mutex_lock(s->mu);
    kd->busy = false;
    pthread_mutex_unlock(s->mu);
    return rc;
}

void xr_fini(xr_pool *s)
{
    for (int i = 0; i < XR_MAX; i++)
        kid_end(s, i);
}
