/*
 * modules/discord/dc_notify.c — store events posted to Discord.
 *
 * An observer on every event (loop thread, never blocks) picks the events worth a message
 * (docs/discord.md "Notifications"): task.failed and task.done (from task.finished),
 * quota.warning at 90 % or more, quota.exceeded, integrity.mismatch, share.accessed and
 * discord.backup.failed. Each becomes one "discord.notify" task per destination:
 *   - the administrator's, from conf.d/discord.yaml: notify_webhook (a Discord webhook URL)
 *     or else notify_channel (posted by the bot), for the events in notify_events;
 *   - the user's own, set with PUT /api/v1/discord/notifications: a Discord webhook URL and
 *     the events they chose, for events about them (the payload's owner or user).
 * The task queue is durable and retries with backoff, so a message survives a restart and
 * Discord being away for a while. Every URL posted to is under api_base/webhooks/ or a
 * channel of api_base: nothing else is ever contacted (no SSRF through a webhook URL).
 * Messages carry allowed_mentions {"parse": []}: a file name cannot ping @everyone.
 *
 * Threads: the observer on the loop thread, the runner on the worker pool; the config
 * strings are read under cfg_lock.
 */
#include "discord.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool listed(const json_t *events, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) if (json_string_value(e) && !strcmp(json_string_value(e), name)) return true;
    return false;
}

/* The notification's name and text for an event, or false when it is not one we post. */
static bool describe(const char *event, const json_t *p, char *name, size_t nn, char *text, size_t tn, uint64_t *who)
{
    *who = (uint64_t)(mb_jint(p, "owner") ? mb_jint(p, "owner") : mb_jint(p, "user"));
    if (!strcmp(event, "task.finished")) {
        const char *state = mb_jstr(p, "state"), *type = mb_jstr(p, "type");
        if (!state || !type || !strncmp(type, "discord.notify", 14) || (strcmp(state, "failed") && strcmp(state, "done")))
            return false;
        snprintf(name, nn, "task.%s", state);
        snprintf(text, tn, "MByte: task %lld (%s) %s%s%s", (long long)mb_jint(p, "id"), type,
                 !strcmp(state, "done") ? "finished" : "failed", mb_jstr(p, "error") ? ": " : "",
                 mb_jstr(p, "error") ? mb_jstr(p, "error") : "");
    } else if (!strcmp(event, "quota.warning") || !strcmp(event, "quota.exceeded")) {
        if (!strcmp(event, "quota.warning") && mb_jint(p, "percent") < 90)
            return false;
        snprintf(name, nn, "%s", event);
        snprintf(text, tn, "MByte: %s %lld%% of the quota used (%lld of %lld bytes)",
                 !strcmp(event, "quota.warning") ? "storage almost full:" : "an upload was refused, storage full:",
                 (long long)mb_jint(p, "percent"), (long long)mb_jint(p, "bytes"), (long long)mb_jint(p, "quota_bytes"));
    } else if (!strcmp(event, "integrity.mismatch")) {
        snprintf(name, nn, "%s", event);
        snprintf(text, tn, "MByte: integrity damage found: chunk %.16s... (%s): %s",
                 mb_jstr(p, "chunk") ? mb_jstr(p, "chunk") : "?", mb_jstr(p, "kind") ? mb_jstr(p, "kind") : "damaged",
                 mb_jstr(p, "detail") ? mb_jstr(p, "detail") : "it failed verification");
    } else if (!strcmp(event, "share.accessed")) {
        snprintf(name, nn, "%s", event);
        snprintf(text, tn, "MByte: share link %s used (%s) for %s", mb_jstr(p, "share") ? mb_jstr(p, "share") : "?",
                 mb_jstr(p, "action") ? mb_jstr(p, "action") : "read", mb_jstr(p, "path") ? mb_jstr(p, "path") : "/");
    } else if (!strcmp(event, "discord.backup.failed")) {
        snprintf(name, nn, "%s", event);
        snprintf(text, tn, "MByte: the backup of channel %s failed: %s", mb_jstr(p, "channel"), mb_jstr(p, "error"));
    } else
        return false;
    return true;
}

/* The task names its destination ("admin", or "user" with the user's id), never the URL:
 * a webhook URL holds a token, which then stays out of the task queue and its records. */
static void submit(dc *d, uint64_t owner, const char *name, const char *text, const char *to)
{
    uint64_t tid;
    mb_err e;
    if (d->api->task_submit("discord.notify", owner,
                            json_pack("{s:s, s:s, s:s, s:I}", "event", name, "text", text, "to", to, "user",
                                      (json_int_t)owner),
                            &tid, &e))
        d->api->log(d->self, MB_LOG_ERROR, "could not queue a Discord notification: %s", e.msg);
}

static json_t *user_settings(dc *d, uint64_t who)
{
    char key[40];
    snprintf(key, sizeof key, "n/%016llx", (unsigned long long)who);
    return dc_kv_json(d, key);
}

void dc_notify_observe(const char *event, const json_t *payload, void *state)
{
    dc *d = state;
    char name[48], text[1500];
    uint64_t who = 0;
    if (!describe(event, payload, name, sizeof name, text, sizeof text, &who))
        return;
    pthread_mutex_lock(&d->cfg_lock);
    bool admin = listed(d->notify_events, name) && ((d->notify_webhook && *d->notify_webhook) ||
                                                    (d->notify_channel && *d->notify_channel));
    pthread_mutex_unlock(&d->cfg_lock);
    if (admin)
        submit(d, 0, name, text, "admin");
    if (who) {
        json_t *n = user_settings(d, who);
        if (n && mb_jstr(n, "webhook_url") && listed(json_object_get(n, "events"), name))
            submit(d, who, name, text, "user");
        json_decref(n);
    }
}

/* discord.notify {"event","text","to":"admin"|"user","user"}: one attempt, to where the
 * destination points now (a changed setting applies to messages still queued). */
int dc_notify_send(mb_task *task, const json_t *args, void *state, mb_err *err)
{
    (void)task;
    dc *d = state;
    const char *to = mb_jstr(args, "to");
    char *url = NULL, path[96] = "";
    if (to && !strcmp(to, "user")) {
        json_t *n = user_settings(d, (uint64_t)mb_jint(args, "user"));
        if (mb_jstr(n, "webhook_url"))
            url = strdup(mb_jstr(n, "webhook_url"));
        json_decref(n);
    } else if (to && !strcmp(to, "admin")) {
        pthread_mutex_lock(&d->cfg_lock);
        if (d->notify_webhook && *d->notify_webhook)
            url = strdup(d->notify_webhook);
        else if (d->notify_channel && *d->notify_channel)
            snprintf(path, sizeof path, "/channels/%.24s/messages", d->notify_channel);
        pthread_mutex_unlock(&d->cfg_lock);
    }
    if (!url && !path[0])
        return 0; /* the destination was removed meanwhile: nothing to send */
    json_t *msg = json_pack("{s:s, s:{s:[]}}", "content", mb_jstr(args, "text") ? mb_jstr(args, "text") : "",
                            "allowed_mentions", "parse");
    long st = 0;
    int rc = url ? dc_rest_url(d, url, msg, &st, err) : dc_rest(d, "POST", path, msg, &st, NULL, err);
    json_decref(msg);
    free(url);
    if (!rc && (st < 200 || st > 299))
        rc = d->api->err_set(err, MB_EAGAIN, "Discord answered %ld to a notification", st);
    return rc;
}
