/*
 * modules/discord/discord.h — what the files of the discord module share (issue 22).
 *
 *   discord.c      the module: config, routes, hooks, task types, the poll timer
 *   dc_rest.c      dc_rest_*: Discord's HTTP API v10 through libcurl, with its rate limits
 *   dc_backup.c    dc_backup_*: one backup run (messages, threads, attachments, cursor)
 *   dc_notify.c    dc_notify_*: store events posted to Discord
 *   dc_interact.c  dc_ix_*: pure parsing and Ed25519 checking of interaction requests (also
 *                  compiled into tests/fuzz/fuzz_discord.c and tests/unit/test_discord.c)
 *
 * Threads: dc_rest, dc_backup and the notify runner block on the network and run only on the
 * worker pool (task runners, timers, run_blocking work); never on the loop thread.
 */
#ifndef MBYTE_DISCORD_H
#define MBYTE_DISCORD_H

#include "mbyte.h"
#include <pthread.h>

#define DC_VERSION "1.0.0"
#define DC_BUCKETS 64

/* One rate-limit bucket as Discord's X-RateLimit-* headers describe it. `key` is
 * "<route>" until a response named its bucket, then "<bucket>:<top-level id>". */
typedef struct dc_bucket {
    char route[96];  /* "GET /channels/{id}/messages 123" (method, path shape, top-level id) */
    char key[96];    /* the bucket this route was told it belongs to, with the top-level id */
    int64_t remaining;
    int64_t reset_ms; /* monotonic ms when remaining refills */
    int64_t used_ms;  /* for replacing the least recently used */
} dc_bucket;

typedef struct dc {
    mb_module *self;
    const mb_api *api;
    /* config (strings owned here; replaced only under lock by reconfigure) */
    char *token, *public_key_hex, *api_base, *notify_channel, *notify_webhook;
    unsigned char public_key[32];
    bool have_key;
    json_t *cdn_hosts, *guilds, *notify_events; /* arrays of strings */
    int64_t poll_interval, timeout_ms, max_wait_ms, global_per_second, max_invalid;
    mb_timer *timer;
    /* rate limits, under rl_lock */
    pthread_mutex_t rl_lock;
    dc_bucket buckets[DC_BUCKETS];
    int64_t global_until_ms, next_slot_ms;
    int64_t invalid_window_ms, invalid_count;
    /* orders run claims (dc_backup.c) and link changes; guards followups */
    pthread_mutex_t run_lock;
    struct followup *followups; /* interaction answers not sent yet (under run_lock): fini frees them */
    pthread_mutex_t cfg_lock;
} dc;

/* ------------------------------------------------------------- discord.c --- */

/* The JSON value of a kv key of the module (new reference), or NULL. / Store one. */
json_t *dc_kv_json(dc *d, const char *key);
int dc_kv_put_json(dc *d, const char *key, const json_t *j, bool sync, mb_err *err);

/* ------------------------------------------------------------- dc_rest.c --- */

int64_t dc_now_ms(void);

/* One call of Discord's API: `method` on api_base + `path` (with its query) with the bot
 * token, JSON `body` (borrowed, may be NULL). Waits for the route's bucket and the global
 * limit first, retries after a 429 as told (retry_after), at most max_wait_ms in all.
 * 0 with *status and *out (new reference, may be NULL when the answer was not JSON) for any
 * answer that is not a 429; MB_EAGAIN when the wait would be too long; MB_EBUSY when the
 * module stopped itself because of too many refused requests; MB_EIO when Discord could not
 * be reached. Worker threads only. */
int dc_rest(dc *d, const char *method, const char *path, const json_t *body, long *status, json_t **out, mb_err *err);

/* POST a JSON body to a full URL under api_base (webhooks, interaction follow-ups): no bot
 * token, same rate limits. */
int dc_rest_url(dc *d, const char *url, const json_t *body, long *status, mb_err *err);

/* Download `url` (an attachment; its host must be in cdn_hosts) into w, without the bot token,
 * no redirects. 0, or MB_EGONE when the signed URL expired or was refused (403/404/410: read
 * the message again for a fresh one), or another code with err filled. */
int dc_rest_download(dc *d, const char *url, mb_file_writer *w, int64_t *bytes, mb_err *err);

/* ----------------------------------------------------------- dc_backup.c --- */

/* The task "discord.backup" {"backup": id}. */
int dc_backup_run(mb_task *task, const json_t *args, void *state, mb_err *err);

/* True while a run of backup `bid` goes on in this process (any copy of the module). */
bool dc_backup_running(dc *d, const char *bid);


/* ----------------------------------------------------------- dc_notify.c --- */

void dc_notify_observe(const char *event, const json_t *payload, void *state);
int dc_notify_send(mb_task *task, const json_t *args, void *state, mb_err *err);

#endif
