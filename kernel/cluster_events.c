/*
 * cluster_events.c — a user's live task events on every node (cluster mode, docs/cluster.md
 * "Tasks through any node"). A task runs on one node, and notify.c pushes its state and progress
 * to the owner's /api/v1/events streams open on that node; a page whose stream HAProxy sent to
 * another node heard nothing until the task's end became a notification. Now notify.c also hands
 * each such event here (its progress at most once a second per task), and one thread posts it to
 * every other node up, on the replication port (signed like the replicas' calls), where
 * cluster_events_answer pushes it to the owner's streams open there.
 *
 * Best effort, like the push itself: the task's record and the notification of its end stay the
 * truth. The queue holds EV_MAX events (one that finds it full is dropped and counted); a node
 * gets EV_WAIT_MS to answer (a paused node costs the others' events that much each, not the
 * replication's 30 s). Events reach each node in the order they were made (one thread, FIFO).
 *
 * Threads: notify.c's callers (task workers) queue; mb-cl-ev posts; the replication port's
 * connection threads answer.
 */
#include "kernel.h"
#include "cluster_repl.h"
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define EV_MAX 256
#define EV_WAIT_MS 2000L

typedef struct ev {
    struct ev *next;
    char *body; /* {"uid", "event", "data"} */
    size_t len;
} ev;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ev *head, **tail;
    int queued;
    bool run, on;
    pthread_t th;
    uint64_t dropped;
} q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void cluster_event_share(uint64_t uid, const char *event, const json_t *data)
{
    json_t *o = json_pack("{s:I, s:s, s:O}", "uid", (json_int_t)uid, "event", event, "data", (json_t *)data);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return;
    pthread_mutex_lock(&q.mu);
    if (!q.on || q.queued >= EV_MAX) {
        q.dropped += q.on;
        pthread_mutex_unlock(&q.mu);
        free(body);
        return;
    }
    ev *e = xmalloc(sizeof *e);
    *e = (ev){NULL, body, strlen(body)};
    *q.tail = e;
    q.tail = &e->next;
    q.queued++;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
}

/* Every node up but this one, that takes calls on its replication port. */
static json_t *others(void)
{
    json_t *v = cluster_view(), *out = json_array(), *n;
    size_t i;
    json_array_foreach(json_object_get(v, "nodes"), i, n)
    {
        if (jint(n, "replication") > 0 && strcmp(jstr(n, "name"), cluster_node_name()))
            json_array_append_new(out, json_string(jstr(n, "name")));
    }
    json_decref(v);
    return out;
}

static void *send_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mb-cl-ev");
    CURL *c = curl_easy_init();
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (q.run && !q.head)
            pthread_cond_wait(&q.cv, &q.mu);
        if (!q.head) /* stopped, and nothing left */
            break;
        ev *e = q.head;
        if (!(q.head = e->next))
            q.tail = &q.head;
        q.queued--;
        bool run = q.run;
        pthread_mutex_unlock(&q.mu);
        if (run) { /* at stop what is left is dropped */
            json_t *nodes = others(), *n;
            size_t i;
            json_array_foreach(nodes, i, n)
            {
                mb_err err = {0};
                if (repl_ask(c, json_string_value(n), EVENT_PATH, e->body, e->len, EV_WAIT_MS, NULL, &err))
                    log_debug("cluster: a live event for node %s: %s", json_string_value(n), err.msg);
            }
            json_decref(nodes);
        }
        free(e->body);
        free(e);
        pthread_mutex_lock(&q.mu);
    }
    pthread_mutex_unlock(&q.mu);
    curl_easy_cleanup(c);
    return NULL;
}

void cluster_events_start(void)
{
    pthread_mutex_lock(&q.mu);
    q.tail = &q.head;
    q.run = q.on = true;
    pthread_mutex_unlock(&q.mu);
    pthread_create(&q.th, NULL, send_main, NULL);
}

void cluster_events_stop(void)
{
    pthread_mutex_lock(&q.mu);
    bool was = q.on;
    q.run = q.on = false;
    pthread_cond_broadcast(&q.cv);
    pthread_mutex_unlock(&q.mu);
    if (!was)
        return;
    pthread_join(q.th, NULL);
    if (q.dropped)
        log_info("cluster: %llu live events were not passed on (the queue of %d was full)",
                 (unsigned long long)q.dropped, EV_MAX);
}

/* POST EVENT_PATH on the replication port (signed by a node): {"uid", "event": "task", "data": {}}
 * to uid's streams open here. The status; *answer the JSON text (malloc'd). */
int cluster_events_answer(const char *body, size_t len, char **answer)
{
    json_t *in = json_loadb(body, len, 0, NULL), *data = json_object_get(in, "data");
    json_int_t uid = json_integer_value(json_object_get(in, "uid"));
    int status = 400;
    if (uid > 0 && json_is_object(data) && !strcmp(jstr(in, "event"), "task")) {
        notify_publish((uint64_t)uid, "task", json_incref(data));
        status = 200;
    }
    json_decref(in);
    *answer = xstrdup(status == 200 ? "{}"
                                    : "{\"title\":\"Bad Request\",\"status\":400,\"detail\":\"the body is not "
                                      "{\\\"uid\\\", \\\"event\\\": \\\"task\\\", \\\"data\\\": {}}\"}");
    return status;
}
