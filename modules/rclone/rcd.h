/*
 * modules/rclone/rcd.h — the `rclone rcd` process that the rclone module starts and supervises
 * when conf.d/rclone.yaml gives no url (rcd.c), apart from the backends that talk to it
 * (rclone.c).
 */
#ifndef MBYTE_RCD_H
#define MBYTE_RCD_H
#include "mbyte.h"

typedef struct rcd_sup rcd_sup;

/* Where a started rcd listens: called by the supervisor's thread before each start, with its
 * http://127.0.0.1:<port> (the caller copies it). */
typedef void (*rcd_url_fn)(void *ud, const char *url);

typedef struct rcd_opts {
    const char *prog;     /* the rclone program */
    const char *config;   /* rclone.conf for it, "" for rclone's own default */
    const char *dir;      /* its log (rcd.log) and cache (cache/) go here; made when missing */
    const char *user;     /* its rc user and password: given through its environment, never */
    const char *password; /* its command line, which anyone on the machine can read */
    long restart_base_ms, restart_max_ms;
} rcd_opts;

/* Start the supervisor's thread: it starts rcd on a free loopback port, and starts it again
 * with a backoff (restart_base_ms doubled up to restart_max_ms; back to the base once one ran
 * a minute) whenever it ends. 0, or a negative code with err set. */
int rcd_start(const mb_api *api, mb_module *self, const rcd_opts *o, rcd_url_fn on_url, void *ud, rcd_sup **out,
              mb_err *err);

/* Stop it (SIGTERM, SIGKILL after 5 s) and wait for the thread; NULL is fine. */
void rcd_stop(rcd_sup *s);

#endif
