/*
 * hook.c — the hook bus (DESIGN.md): named events with a JSON payload.
 *
 * Filters run synchronously, in priority order, on the thread doing the operation; the
 * first refusal stops the operation with its error. Observers run after the change, on the
 * loop thread, fed from a durable outbox: hook_emit_batch() puts the event into the SAME
 * LevelDB batch as the change it describes ("o/<seq>"), so after a crash every committed
 * change still reaches every observer (at least once). The dispatcher deletes an outbox
 * entry after all observers saw it.
 *
 * Threads: subscriptions are read under a rwlock by any thread and changed by the loop
 * thread (module load/unload/reload). Calls into modules are counted with modmgr_enter/
 * modmgr_leave, taken while the read lock is held, so a draining module is never called
 * after its count reached zero.
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sub {
    mb_module *owner;
    char *event;
    int kind, priority;
    uint64_t seq;
    mb_filter_fn filter;
    mb_observer_fn observer;
    void *state;
} sub;

static pthread_rwlock_t subs_lock = PTHREAD_RWLOCK_INITIALIZER;
static sub *subs;
static size_t nsubs;
static uint64_t sub_seq;
static _Atomic uint64_t outbox_seq;
static struct event *ev_dispatch;

#define MAX_CALL 64
#define DISPATCH_BATCH 256

static int sub_cmp(const void *a, const void *b)
{
    const sub *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int hook_add(mb_module *owner, const mb_hook *h, void *state, mb_err *err)
{
    if (!h->event || !*h->event)
        return err_set(err, MB_EINVAL, "a hook needs an event name");
    if (h->kind == MB_HOOK_FILTER ? !h->filter : h->kind == MB_HOOK_OBSERVER ? !h->observer : true)
        return err_set(err, MB_EINVAL, "hook on %s: kind and function do not match", h->event);
    if (h->kind == MB_HOOK_FILTER && !strcmp(h->event, "*"))
        return err_set(err, MB_EINVAL, "a filter must name its event; '*' is for observers");
    pthread_rwlock_wrlock(&subs_lock);
    subs = xrealloc(subs, (nsubs + 1) * sizeof *subs);
    subs[nsubs++] = (sub){.owner = owner, .event = xstrdup(h->event), .kind = h->kind, .priority = h->priority,
                          .seq = ++sub_seq, .filter = h->filter, .observer = h->observer, .state = state};
    qsort(subs, nsubs, sizeof *subs, sub_cmp);
    pthread_rwlock_unlock(&subs_lock);
    return 0;
}

void hook_remove(mb_module *owner)
{
    pthread_rwlock_wrlock(&subs_lock);
    size_t j = 0;
    for (size_t i = 0; i < nsubs; i++) {
        if (subs[i].owner == owner)
            free(subs[i].event);
        else
            subs[j++] = subs[i];
    }
    nsubs = j;
    pthread_rwlock_unlock(&subs_lock);
}

/* Reload: replace the subscriptions of `from` by `table` (kernel-stride entries, ended by
 * a NULL event) owned by `to`, in one write-locked step. A subscription with the same
 * event, kind and priority keeps its place in the order. Nothing changes on error. */
int hook_swap(mb_module *from, mb_module *to, const mb_hook *table, void *new_state, mb_err *err)
{
    size_t n = 0;
    while (table && table[n].event)
        n++;
    for (size_t i = 0; i < n; i++) {
        const mb_hook *h = &table[i];
        if (!*h->event || (h->kind == MB_HOOK_FILTER ? !h->filter : h->kind == MB_HOOK_OBSERVER ? !h->observer : true))
            return err_set(err, MB_EINVAL, "hook on %s: kind and function do not match", h->event);
        if (h->kind == MB_HOOK_FILTER && !strcmp(h->event, "*"))
            return err_set(err, MB_EINVAL, "a filter must name its event; '*' is for observers");
    }
    pthread_rwlock_wrlock(&subs_lock);
    size_t old_n = nsubs;
    subs = xrealloc(subs, (nsubs + n + 1) * sizeof *subs);
    for (size_t i = 0; i < n; i++) {
        const mb_hook *h = &table[i];
        uint64_t seq = 0;
        for (size_t j = 0; j < old_n && !seq; j++)
            if (subs[j].owner == from && subs[j].event && subs[j].kind == h->kind &&
                subs[j].priority == h->priority && !strcmp(subs[j].event, h->event)) {
                seq = subs[j].seq;
                free(subs[j].event);
                subs[j].event = NULL; /* taken over; dropped below */
            }
        subs[nsubs++] = (sub){.owner = to, .event = xstrdup(h->event), .kind = h->kind, .priority = h->priority,
                              .seq = seq ? seq : ++sub_seq, .filter = h->filter, .observer = h->observer,
                              .state = new_state};
    }
    size_t k = 0;
    for (size_t j = 0; j < nsubs; j++) {
        if (j < old_n && subs[j].owner == from) {
            free(subs[j].event);
            continue;
        }
        subs[k++] = subs[j];
    }
    nsubs = k;
    qsort(subs, nsubs, sizeof *subs, sub_cmp);
    pthread_rwlock_unlock(&subs_lock);
    return 0;
}

/* Snapshot the matching subscriptions with their modules entered. */
static size_t collect(const char *event, int kind, sub *out)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&subs_lock);
    for (size_t i = 0; i < nsubs && n < MAX_CALL; i++) {
        if (subs[i].kind != kind)
            continue;
        if (strcmp(subs[i].event, event) && strcmp(subs[i].event, "*"))
            continue;
        modmgr_enter(subs[i].owner);
        out[n] = subs[i];
        out[n++].event = NULL; /* not owned by the snapshot */
    }
    pthread_rwlock_unlock(&subs_lock);
    return n;
}

int hook_filter(const char *event, json_t *payload, mb_err *err)
{
    sub list[MAX_CALL];
    size_t n = collect(event, MB_HOOK_FILTER, list);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            mb_err e = {0};
            rc = list[i].filter(event, payload, list[i].state, &e);
            if (rc) {
                if (!e.code)
                    err_set(&e, rc, "refused by %s", list[i].owner ? modmgr_name(list[i].owner) : "the kernel");
                if (err)
                    *err = e;
                rc = e.code;
            }
        }
        modmgr_leave(list[i].owner);
    }
    return rc;
}

void hook_emit_batch(db_batch *b, const char *event, json_t *payload)
{
    uint64_t seq = atomic_fetch_add(&outbox_seq, 1);
    char key[32], k16[17];
    key_u64(k16, seq);
    snprintf(key, sizeof key, "o/%s", k16);
    if (payload && !json_object_get(payload, "ip") && share_ip()) /* the client, for the audit log */
        json_object_set_new(payload, "ip", json_string(share_ip()));
    json_t *rec = json_pack("{s:i, s:I, s:s, s:I, s:o}", "v", 1, "seq", (json_int_t)seq, "event", event, "time",
                            (json_int_t)now_wall(), "payload", payload ? payload : json_object());
    db_batch_put_json(b, key, rec);
    json_decref(rec);
}

int hook_emit(const char *event, json_t *payload, mb_err *err)
{
    db_batch *b = db_batch_new();
    hook_emit_batch(b, event, payload);
    int rc = db_batch_commit(b, true);
    if (rc)
        return err_set(err, rc, "could not record event %s", event);
    hook_kick();
    return 0;
}

void hook_kick(void)
{
    if (ev_dispatch)
        event_active(ev_dispatch, EV_READ, 0);
}

static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    db_iter *it = db_iter_prefix("o/", 2);
    int done = 0;
    db_batch *del = db_batch_new();
    while (done < DISPATCH_BATCH && db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        if (rec) {
            const char *event = json_string_value(json_object_get(rec, "event"));
            json_t *payload = json_object_get(rec, "payload");
            json_object_set_new(payload, "_event_time", json_incref(json_object_get(rec, "time")));
            sub list[MAX_CALL];
            size_t n = collect(event ? event : "", MB_HOOK_OBSERVER, list);
            for (size_t i = 0; i < n; i++) {
                list[i].observer(event, payload, list[i].state);
                modmgr_leave(list[i].owner);
            }
            json_decref(rec);
        } else
            log_error("outbox entry %.*s is not JSON; dropped", (int)kl, k);
        db_batch_del(del, k, kl);
        done++;
    }
    bool more = done == DISPATCH_BATCH;
    db_iter_free(it);
    db_batch_commit(del, false);
    if (more)
        hook_kick();
}

int hook_init(struct event_base *base, mb_err *err)
{
    (void)err;
    /* Continue numbering after whatever is still pending from before a crash. */
    uint64_t last = 0;
    db_iter *it = db_iter_prefix("o/", 2);
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char hex[17] = {0};
        if (kl == 18) {
            memcpy(hex, k + 2, 16);
            uint64_t v = strtoull(hex, NULL, 16);
            if (v > last)
                last = v;
        }
    }
    db_iter_free(it);
    atomic_store(&outbox_seq, last + 1);
    ev_dispatch = event_new(base, -1, 0, dispatch, NULL);
    hook_kick(); /* deliver what a crash left pending */
    return 0;
}

void hook_fini(void)
{
    if (ev_dispatch)
        event_free(ev_dispatch);
    ev_dispatch = NULL;
    pthread_rwlock_wrlock(&subs_lock);
    for (size_t i = 0; i < nsubs; i++)
        free(subs[i].event);
    free(subs);
    subs = NULL;
    nsubs = 0;
    pthread_rwlock_unlock(&subs_lock);
}
