/*
 * loop.c — the event-loop thread's mailbox. Other threads (HTTP workers, task workers) hand
 * work to the loop thread with main_call(); it runs there in order, so state owned by the
 * loop (module tables, timers) is changed by one thread only.
 */
#include "kernel.h"
#include <stdlib.h>

static struct event_base *base;
static struct event *ev_call;
static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct call {
    struct call *next;
    void (*fn)(void *);
    void *arg;
} call;
static call *calls_head, *calls_tail;

struct event_base *main_loop(void) { return base; }

void loop_drain(void)
{
    pthread_mutex_lock(&call_lock);
    call *c = calls_head;
    calls_head = calls_tail = NULL;
    pthread_mutex_unlock(&call_lock);
    while (c) {
        call *n = c->next;
        c->fn(c->arg);
        free(c);
        c = n;
    }
}

static void on_call(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    loop_drain();
}

void main_call(void (*fn)(void *), void *arg)
{
    call *c = xmalloc(sizeof *c);
    c->fn = fn;
    c->arg = arg;
    c->next = NULL;
    pthread_mutex_lock(&call_lock);
    if (calls_tail)
        calls_tail->next = c;
    else
        calls_head = c;
    calls_tail = c;
    pthread_mutex_unlock(&call_lock);
    if (ev_call)
        event_active(ev_call, EV_READ, 0);
}

void loop_init(struct event_base *b)
{
    base = b;
    ev_call = event_new(base, -1, EV_PERSIST, on_call, NULL);
    event_add(ev_call, NULL);
}

void loop_fini(void)
{
    loop_drain();
    if (ev_call)
        event_free(ev_call);
    ev_call = NULL;
}
