/*
 * modules/ftp/ftp_login.c — PASS: the password check and its answer. The check (the kernel's
 * app passwords — those made here under /api/v1/ftp/passwords and those of
 * /api/v1/account/app-passwords — then the account password: api->apppass_check) runs on a
 * worker because argon2id takes tens of milliseconds; the session reads no further command until
 * the answer is back. Failed logins count in the kernel's login throttle (per account and
 * address, per address, per account slowed; mbyte.yaml login_*), the same one as HTTP logins:
 * the module keeps no failure counts of its own.
 *
 * Threads: login_work on a worker touches only its job (a copy of the name, password and
 * address, wiped when done); everything else on the loop thread.
 */
#include "ftp.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct login_job {
    sess *s;
    char name[128], pw[512], ip[64];
    mb_user user;
    char namebuf[128];
    mb_err err;
    int rc;
    const mb_api *api;
    mb_module *self;
} login_job;

/* Worker thread: the kernel's app passwords, then the account password, under its login
 * throttle. An app password limited to one store or to reading is refused here: FTP sessions
 * see every store of the user and may write, so such a password would reach more than it
 * says. Touches only the job. */
static void login_work(void *arg)
{
    login_job *j = arg;
    mb_apppass_scope scope = {.size = sizeof scope};
    j->rc = j->api->apppass_check(j->name, j->pw, j->ip, true, &j->user, j->namebuf, sizeof j->namebuf, &scope,
                                  &j->err);
    if (!j->rc && (scope.store || scope.read_only))
        j->rc = j->api->err_set(&j->err, MB_EPERM,
                                "this app password is limited to %s; FTP takes only app passwords with full access",
                                scope.store ? "one store" : "reading");
}

static int count_user(ftp_srv *f, uint64_t uid)
{
    int n = 0;
    for (sess *o = f->sessions; o; o = o->next)
        if (o->logged_in && o->user.id == uid && !o->dead)
            n++;
    return n;
}

/* Loop thread: the answer. */
static void login_done(void *arg)
{
    login_job *j = arg;
    sess *s = j->s;
    ftp_srv *f = s->srv;
    s->jobs--;
    if (s->dead) {
        sodium_memzero(j, sizeof *j);
        free(j);
        sess_close(s); /* frees it once nothing else is in flight */
        return;
    }
    if (j->rc) {
        /* auth_password counted the failure in the kernel's login throttle (per account and
         * address, per address, per account slowed): one throttle for every door. */
        if (j->rc == MB_ETHROTTLE) {
            reply_err(s, &j->err);
            s->quitting = true;
        } else if (j->rc == MB_EPERM) {
            reply(s, 530, "%s", j->err.msg);
        } else {
            reply(s, 530, "Login incorrect");
        }
        f->api->log(f->self, MB_LOG_INFO, "failed login for %s from %s", j->name, s->ip);
    } else if (f->per_user > 0 && count_user(f, j->user.id) >= f->per_user) {
        reply(s, 421, "Too many sessions for this user");
        s->quitting = true;
    } else {
        s->user = j->user;
        snprintf(s->namebuf, sizeof s->namebuf, "%s", j->namebuf);
        s->user.name = s->namebuf;
        s->logged_in = true;
        evtimer_del(s->login_ev);
        strcpy(s->cwd, "/");
        reply(s, 230, "Logged in; your stores are the folders in /");
    }
    sodium_memzero(j, sizeof *j);
    free(j);
    if (s->quitting) {
        bufferevent_disable(s->ctl, EV_READ);
        sess_quit_check(s);
    } else {
        bufferevent_enable(s->ctl, EV_READ);
        sess_read_cb(s->ctl, s); /* commands the client pipelined behind PASS */
    }
}

void login_pass(sess *s, const char *arg)
{
    ftp_srv *f = s->srv;
    if (s->logged_in) {
        reply(s, 230, "Already logged in");
        return;
    }
    if (!s->uname[0]) {
        reply(s, 503, "Send USER first");
        return;
    }
    /* The kernel's login throttle, before app passwords are tried too (they are guesses). */
    mb_err te = {0};
    if (f->api->login_wait(s->uname, s->ip, &te)) {
        reply_err(s, &te);
        s->quitting = true;
        bufferevent_disable(s->ctl, EV_READ);
        return;
    }
    login_job *j = calloc(1, sizeof *j);
    j->s = s;
    j->api = f->api;
    j->self = f->self;
    snprintf(j->name, sizeof j->name, "%s", s->uname);
    snprintf(j->pw, sizeof j->pw, "%s", arg ? arg : "");
    snprintf(j->ip, sizeof j->ip, "%s", s->ip);
    mb_err e = {0};
    if (f->api->run_blocking(f->self, login_work, login_done, j, &e)) {
        free(j);
        reply_err(s, &e);
        return;
    }
    s->jobs++;
    s->uname[0] = 0;
    bufferevent_disable(s->ctl, EV_READ); /* one command at a time until the answer */
}
