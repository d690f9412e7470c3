/*
 * hook.c — the hook bus (DESIGN.md): named events with a JSON payload.
 *
 * Filters run synchronously, in priority order, on the thread doing the operation; the
 * first refusal stops the operation with its error. Observers run after the change, on the
 * loop thread, fed from a durable outbox: hook_emit_batch() puts the event into the SAME
 * LevelDB batch as the change it describes ("o/<seq>"), so after a crash every committed
 * change still reaches every observer (at least once). An event nobody observes when it is
 * emitted gets no entry at all: an observer sees the changes made after it subscribed, and
 * a server without observers pays nothing for its events (about a tenth of the CPU of a
 * small upload went to writing, reading back and deleting entries nobody read).
 *
 * The dispatcher works in turns of up to DISPATCH_BATCH entries; a turn ends with ONE
 * LevelDB write that deletes the entries its observers saw, and batched observers (ABI
 * minor 6) put their own writes into that same write, so what they record lands atomically
 * with the deletion (exactly once per event for them, one write per turn instead of one
 * per event).
 *
 * Where a turn starts reading: deleted outbox entries stay in LevelDB as tombstones until a
 * compaction drops them, and a seek to "o/" walks over every one of them; with one turn per
 * upload that made each turn cost O(uploads so far) (bench/audit, docs/performance.md). So a
 * turn starts at the lowest sequence number it has not seen. Numbers are taken before their
 * batch commits, so commits can land out of order: a number passed over becomes a gap, and
 * the next turn starts at the lowest gap. A full scan from "o/" follows every other turn
 * within FULL_SCAN_MS (a timer), so an entry the fast path could miss (a gap dropped after
 * GAP_TTL_MS whose commit was merely slow) still waits at most that long.
 *
 * Beside those, the kernel's own live listeners (hook_listen, hook_tell): told at once on the
 * emitting thread, never stored, for what only matters while it happens (a task's progress,
 * pushed to its owner's open pages by notify.c), where an outbox entry per step would cost a
 * LevelDB write and arrive late. They are how a lower layer (task.c) reaches a higher one
 * (notify.c) without calling it.
 *
 * Threads: subscriptions are read under a rwlock by any thread and changed by the loop
 * thread (module load/unload/reload), in an owner-tagged registry (registry.c). Calls into
 * modules are counted with modref_enter/modref_leave, taken while the read lock is held,
 * so a draining module is never called after its count reached zero. The dispatcher, its reading position and the turn's batch
 * belong to the loop thread. The client address an event carries (hook_ip_set) is
 * thread-local.
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A kernel listener's kind (hook_listen): beside MB_HOOK_FILTER and MB_HOOK_OBSERVER, never
 * a module's. */
#define HOOK_LIVE 0

typedef struct sub {
    mb_module *owner;
    char *event;
    int kind, priority;
    uint64_t seq;
    hook_live_fn live;
    mb_filter_fn filter;
    mb_observer_fn observer;
    mb_batch_observer_fn observer_batch;
    mb_flush_fn flush;
    mb_done_fn done;
    void *state;
} sub;

static uint64_t sub_seq; /* loop thread: registration order among equal priorities */
static _Atomic uint64_t outbox_seq;
static struct event *ev_dispatch, *ev_full;
static atomic_bool kick_due; /* a turn is due: further kicks need not wake the loop */

#define MAX_CALL 64
#define DISPATCH_BATCH 256
#define GAP_MAX 64
#define GAP_TTL_MS 1000
#define FULL_SCAN_MS 1000
#define BATCH_KEYMAX 1024
#define TURN_GAP_MS 5  /* in a burst, at most one turn per this many ms */
#define BURST_TURNS 8  /* this many quick turns in a row start a burst */

/* The dispatcher's reading position (see the top of the file). Loop thread only. */
static struct {
    uint64_t next; /* every sequence number below was seen, or is a gap */
    struct {
        uint64_t seq;
        int64_t since; /* now_mono_ms() when it was passed over */
    } gap[GAP_MAX];
    size_t ngap;
    uint64_t resume; /* a turn cut short at DISPATCH_BATCH goes on from here */
    bool resuming, full_owed;
    int64_t last_turn; /* now_mono_ms() when the last turn ran */
    int quick;         /* turns in a row that ran within TURN_GAP_MS of the one before */
    bool burst;        /* events arrive faster than turns pay off: one turn per TURN_GAP_MS */
} rd;

/* The ABI's mb_batch: the current turn's write, open while observers and flushes run. */
struct mb_batch {
    db_batch *db;
    bool open;
};

/* A subscription with a flush or done that saw an event in the current turn, entered once
 * more for the turn so that it cannot be drained before its done ran. */
typedef struct turn_sub {
    mb_module *owner;
    void *state;
    mb_flush_fn flush;
    mb_done_fn done;
} turn_sub;

static struct {
    mb_batch b;
    turn_sub *subs;
    size_t n, cap;
    pthread_t thread;
} turn;

static int sub_cmp(const void *a, const void *b)
{
    const sub *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* On a reload, a subscription with the same event, kind and priority keeps its place in
 * the order (its seq). The kernel's live listeners are told apart by their function too:
 * notify.c and migrate.c both listen to task.update, and neither replaces the other. */
static bool sub_same(const void *have, const void *fresh)
{
    const sub *x = have, *y = fresh;
    return x->kind == y->kind && x->priority == y->priority && !strcmp(x->event, y->event) &&
           (x->kind != HOOK_LIVE || x->live == y->live);
}

static void sub_drop(void *e) { free(((sub *)e)->event); }

static void sub_retake(void *have, void *fresh)
{
    sub *x = have, *y = fresh;
    uint64_t seq = x->seq;
    sub_drop(x);
    *x = *y;
    x->seq = seq;
}

static void sub_describe(const void *e, char *buf, size_t n) { snprintf(buf, n, "hook on %s", ((const sub *)e)->event); }

REG_ENTRY(sub);
static const reg_ops sub_ops = {.size = sizeof(sub), .same = sub_same, .retake = sub_retake, .drop = sub_drop,
                                .order = sub_cmp, .describe = sub_describe};
static registry subs = REG_INIT(&sub_ops);

/* h is a kernel-stride entry (modmgr copied the module's table), so the minor-6 fields read
 * as NULL for a module built before them. */
static int hook_check(const mb_hook *h, mb_err *err)
{
    if (!h->event || !*h->event)
        return err_set(err, MB_EINVAL, "a hook needs an event name");
    if (h->kind == MB_HOOK_FILTER ? !h->filter : h->kind == MB_HOOK_OBSERVER ? !h->observer == !h->observer_batch
                                                                             : true)
        return err_set(err, MB_EINVAL, "hook on %s: kind and function do not match", h->event);
    if (h->kind == MB_HOOK_FILTER && !strcmp(h->event, "*"))
        return err_set(err, MB_EINVAL, "a filter must name its event; '*' is for observers");
    return 0;
}

static sub sub_of(mb_module *owner, const mb_hook *h, void *state, uint64_t seq)
{
    bool obs = h->kind == MB_HOOK_OBSERVER;
    return (sub){.owner = owner, .event = xstrdup(h->event), .kind = h->kind, .priority = h->priority, .seq = seq,
                 .filter = obs ? NULL : h->filter, .observer = obs ? h->observer : NULL,
                 .observer_batch = obs ? h->observer_batch : NULL, .flush = obs ? h->flush : NULL,
                 .done = obs ? h->done : NULL, .state = state};
}

int hook_add(mb_module *owner, const mb_hook *h, void *state, mb_err *err)
{
    int rc = hook_check(h, err);
    if (rc)
        return rc;
    sub s = sub_of(owner, h, state, ++sub_seq);
    return reg_add(&subs, &s, err);
}

void hook_remove(mb_module *owner) { reg_remove_owner(&subs, owner); }

/* Reload: replace the subscriptions of `from` by `table` (kernel-stride entries, ended by
 * a NULL event) owned by `to`, in one write-locked step. A subscription with the same
 * event, kind and priority keeps its place in the order. Nothing changes on error. */
int hook_swap(mb_module *from, mb_module *to, const mb_hook *table, void *new_state, mb_err *err)
{
    size_t n = 0;
    while (table && table[n].event)
        n++;
    for (size_t i = 0; i < n; i++) {
        int rc = hook_check(&table[i], err);
        if (rc)
            return rc;
    }
    sub *fresh = xcalloc(n + 1, sizeof *fresh);
    for (size_t i = 0; i < n; i++)
        fresh[i] = sub_of(to, &table[i], new_state, ++sub_seq);
    int rc = reg_swap_owner(&subs, from, fresh, n, err);
    free(fresh);
    return rc;
}

typedef struct sub_key {
    const char *event;
    int kind;
} sub_key;

static bool sub_matches(const void *e, const void *key)
{
    const sub *s = e;
    const sub_key *k = key;
    return s->kind == k->kind && (!strcmp(s->event, k->event) || !strcmp(s->event, "*"));
}

/* Snapshot the matching subscriptions with their modules entered. The copies' event
 * strings are not theirs (a reload may free them): cleared. */
static size_t collect(const char *event, int kind, sub *out)
{
    size_t n = reg_collect(&subs, sub_matches, &(sub_key){event, kind}, out, MAX_CALL);
    for (size_t i = 0; i < n; i++)
        out[i].event = NULL;
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
                    err_set(&e, rc, "refused by %s", list[i].owner ? modref_name(list[i].owner) : "the kernel");
                if (err)
                    *err = e;
                rc = e.code;
            }
        }
        modref_leave(list[i].owner);
    }
    return rc;
}

int hook_listen(const char *event, hook_live_fn fn, void *state, mb_err *err)
{
    if (!event || !*event || !fn)
        return err_set(err, MB_EINVAL, "a listener needs an event name and a function");
    sub s = {.event = xstrdup(event), .kind = HOOK_LIVE, .seq = ++sub_seq, .live = fn, .state = state};
    return reg_add(&subs, &s, err);
}

void hook_tell(const char *event, const json_t *payload)
{
    sub list[MAX_CALL];
    size_t n = collect(event, HOOK_LIVE, list);
    for (size_t i = 0; i < n; i++)
        list[i].live(event, payload, list[i].state); /* the kernel's: no module to leave */
}

static void outbox_key(char key[32], uint64_t seq)
{
    char k16[17];
    key_u64(k16, seq);
    snprintf(key, 32, "o/%s", k16);
}

/* The client address of the HTTP request this thread serves, which every event emitted while
 * serving it carries as "ip" (the audit log needs it). Thread-local: libmicrohttpd keeps one
 * connection on one thread while a callback runs, and other threads (loop, workers) never set
 * it, so the events they emit carry no address. */
static _Thread_local char tls_ip[64];

void hook_ip_set(const char *ip) { snprintf(tls_ip, sizeof tls_ip, "%s", ip ? ip : ""); }

bool hook_subscribed(const char *event, int kind)
{
    return reg_get(&subs, sub_matches, &(sub_key){event, kind}, NULL, false);
}

bool hook_observed(const char *event) { return hook_subscribed(event, MB_HOOK_OBSERVER); }

/* The outbox entry itself, once an observer was found. */
static void outbox_put(db_batch *b, const char *event, json_t *payload)
{
    db_batch_note_events(b);
    uint64_t seq = atomic_fetch_add(&outbox_seq, 1);
    char key[32];
    outbox_key(key, seq);
    if (payload && !json_object_get(payload, "ip") && tls_ip[0]) /* the client, for the audit log */
        json_object_set_new(payload, "ip", json_string(tls_ip));
    json_t *rec = json_pack("{s:i, s:I, s:s, s:I, s:o}", "v", 1, "seq", (json_int_t)seq, "event", event, "time",
                            (json_int_t)now_wall(), "payload", payload ? payload : json_object());
    db_batch_put_json(b, key, rec);
    json_decref(rec);
}

void hook_emit_batch(db_batch *b, const char *event, json_t *payload)
{
    if (hook_observed(event))
        outbox_put(b, event, payload);
    else
        json_decref(payload); /* nobody to deliver it to: no outbox entry, no turn */
}

int hook_emit(const char *event, json_t *payload, mb_err *err)
{
    if (!hook_observed(event)) {
        json_decref(payload);
        return 0;
    }
    db_batch *b = db_batch_new();
    outbox_put(b, event, payload);
    int rc = db_batch_commit(b, true);
    if (rc)
        return err_set(err, rc, "could not record event %s", event);
    hook_kick();
    return 0;
}

void hook_kick(void)
{
    /* One wake-up per turn: a turn that is due already reads everything committed so far. */
    if (ev_dispatch && !atomic_exchange(&kick_due, true))
        event_active(ev_dispatch, EV_READ, 0);
}

/* ------------------------------------------------------------ dispatcher --- */

/* The turn saw outbox entry `seq`: move the reading position past it, keeping what it
 * passed over as gaps (numbers taken whose commit has not landed yet). */
static void position_saw(uint64_t seq, int64_t now)
{
    if (seq < rd.next) {
        for (size_t i = 0; i < rd.ngap; i++)
            if (rd.gap[i].seq == seq) {
                rd.gap[i] = rd.gap[--rd.ngap];
                break;
            }
        return;
    }
    for (uint64_t g = seq - rd.next > GAP_MAX ? seq - GAP_MAX : rd.next; g < seq; g++) {
        size_t slot = rd.ngap;
        if (slot == GAP_MAX) { /* more in flight than we track: the oldest is left to the full scan */
            slot = 0;
            for (size_t i = 1; i < GAP_MAX; i++)
                if (rd.gap[i].seq < rd.gap[slot].seq)
                    slot = i;
        } else
            rd.ngap++;
        rd.gap[slot].seq = g;
        rd.gap[slot].since = now;
    }
    rd.next = seq + 1;
}

/* Where this turn starts: 0 (the whole outbox) for a full scan, else the lowest of the
 * unfinished turn's position, the oldest gap and the first number never seen. */
static uint64_t position_start(bool full, int64_t now)
{
    if (full) {
        size_t j = 0; /* a full scan sees every committed entry: gaps it outlived are given up */
        for (size_t i = 0; i < rd.ngap; i++)
            if (now - rd.gap[i].since < GAP_TTL_MS)
                rd.gap[j++] = rd.gap[i];
        rd.ngap = j;
        return 0;
    }
    uint64_t from = rd.resuming && rd.resume < rd.next ? rd.resume : rd.next;
    for (size_t i = 0; i < rd.ngap; i++)
        if (rd.gap[i].seq < from)
            from = rd.gap[i].seq;
    return from;
}

/* Remember a subscription with a flush or done for the end of the turn (once per distinct
 * owner, state and functions), entering its module once more until then. */
static void turn_note(const sub *s)
{
    if (!s->flush && !s->done)
        return;
    for (size_t i = 0; i < turn.n; i++)
        if (turn.subs[i].owner == s->owner && turn.subs[i].state == s->state && turn.subs[i].flush == s->flush &&
            turn.subs[i].done == s->done)
            return;
    if (turn.n == turn.cap) {
        turn.cap = turn.cap ? 2 * turn.cap : 8;
        turn.subs = xrealloc(turn.subs, turn.cap * sizeof *turn.subs);
    }
    modref_enter(s->owner); /* its count is already up for the observer call: it cannot drain */
    turn.subs[turn.n++] = (turn_sub){s->owner, s->state, s->flush, s->done};
}

/* Hand one outbox entry to every observer of its event. */
static void deliver(const char *k, size_t kl, const char *v, size_t vl)
{
    json_t *rec = json_loadb(v, vl, 0, NULL);
    if (!rec) {
        log_error("outbox entry %.*s is not JSON; dropped", (int)kl, k);
        return;
    }
    const char *event = json_string_value(json_object_get(rec, "event"));
    json_t *payload = json_object_get(rec, "payload");
    json_object_set_new(payload, "_event_time", json_incref(json_object_get(rec, "time")));
    sub list[MAX_CALL];
    size_t n = collect(event ? event : "", MB_HOOK_OBSERVER, list);
    for (size_t i = 0; i < n; i++) {
        turn_note(&list[i]);
        if (list[i].observer_batch)
            list[i].observer_batch(event, payload, &turn.b, list[i].state);
        else
            list[i].observer(event, payload, list[i].state);
        modref_leave(list[i].owner);
    }
    json_decref(rec);
}

/* One turn: deliver up to DISPATCH_BATCH entries from the reading position, let the batched
 * observers flush, then write their puts and the outbox deletions as one LevelDB write. */
static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    int64_t now = now_mono_ms();
    if (arg != &ev_full && rd.burst && !rd.resuming && now - rd.last_turn < TURN_GAP_MS) {
        /* Uploads keep coming: let a few more events gather for this turn (kick_due stays
         * set, so their kicks do not wake the loop meanwhile). */
        struct timeval tv = {0, (suseconds_t)(TURN_GAP_MS - (now - rd.last_turn)) * 1000};
        event_add(ev_dispatch, &tv);
        return;
    }
    atomic_store(&kick_due, false);
    rd.quick = now - rd.last_turn < TURN_GAP_MS ? rd.quick + 1 : 0;
    rd.last_turn = now;
    bool full = arg == &ev_full || rd.full_owed;
    rd.full_owed = false;
    uint64_t from = position_start(full, now), last = 0;
    db_iter *it = db_iter_prefix("o/", 2);
    if (from) {
        char key[32];
        outbox_key(key, from);
        db_iter_seek(it, key, strlen(key));
    }
    turn.b = (mb_batch){db_batch_new(), true};
    turn.thread = pthread_self();
    int done = 0;
    while (done < DISPATCH_BATCH && db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        char hex[17] = {0};
        if (kl == 18) { /* "o/" and 16 hex digits; anything else is delivered but not counted */
            memcpy(hex, k + 2, 16);
            last = strtoull(hex, NULL, 16);
            position_saw(last, now);
        }
        deliver(k, kl, v, vl);
        db_batch_del(turn.b.db, k, kl);
        done++;
    }
    db_iter_free(it);
    bool more = done == DISPATCH_BATCH;
    /* A burst starts after BURST_TURNS quick turns and lasts while turns gather events. */
    rd.burst = rd.burst ? done > 1 : rd.quick >= BURST_TURNS;
    rd.resuming = more;
    rd.resume = last + 1;
    for (size_t i = 0; i < turn.n; i++)
        if (turn.subs[i].flush)
            turn.subs[i].flush(&turn.b, turn.subs[i].state);
    turn.b.open = false;
    int rc = 0;
    if (done)
        rc = db_batch_commit(turn.b.db, false); /* unsynced: see mb_done_fn in abi/mbyte.h */
    else
        db_batch_free(turn.b.db);
    turn.b.db = NULL;
    if (rc) {
        /* Nothing of the turn was written: its entries are still there but behind the
         * reading position, so the next turn scans from the start. */
        log_error("could not remove %d delivered outbox entries; they will be delivered again", done);
        rd.full_owed = true;
        more = false;
    }
    for (size_t i = 0; i < turn.n; i++) {
        if (turn.subs[i].done)
            turn.subs[i].done(rc, turn.subs[i].state);
        modref_leave(turn.subs[i].owner);
    }
    turn.n = 0;
    if (more)
        hook_kick();
    else if (!full && ev_full && !evtimer_pending(ev_full, NULL)) {
        struct timeval tv = {FULL_SCAN_MS / 1000, FULL_SCAN_MS % 1000 * 1000};
        evtimer_add(ev_full, &tv);
    }
}

/* An mb_batch key: the module's namespace as for api->kv_put. Returns its length. */
static int batch_key(mb_batch *b, mb_module *self, const char *key, char out[BATCH_KEYMAX], mb_err *err)
{
    if (b != &turn.b || !b->open || !pthread_equal(pthread_self(), turn.thread))
        return err_set(err, MB_EINVAL, "a batch can be used only by the observer or flush call it was passed to");
    int n = snprintf(out, BATCH_KEYMAX, "m/%s/%s", modref_name(self), key ? key : "");
    if (n < 0 || n >= BATCH_KEYMAX)
        return err_set(err, MB_ETOOBIG, "a key in a batch is limited to %d bytes with the module's namespace",
                       BATCH_KEYMAX - 1);
    return n;
}

int hook_batch_put(mb_batch *b, mb_module *self, const char *key, const void *value, size_t len, mb_err *err)
{
    char k[BATCH_KEYMAX];
    int n = batch_key(b, self, key, k, err);
    if (n >= 0)
        db_batch_put(b->db, k, (size_t)n, value, len);
    return n < 0 ? n : 0;
}

int hook_batch_del(mb_batch *b, mb_module *self, const char *key, mb_err *err)
{
    char k[BATCH_KEYMAX];
    int n = batch_key(b, self, key, k, err);
    if (n >= 0)
        db_batch_del(b->db, k, (size_t)n);
    return n < 0 ? n : 0;
}

int hook_init(struct event_base *base, mb_err *err)
{
    (void)err;
    /* Continue numbering after whatever is still pending from before a crash. */
    uint64_t last = db_last_seq("o/");
    atomic_store(&outbox_seq, last + 1);
    rd.next = last + 1;
    rd.full_owed = true; /* deliver what a crash left pending */
    ev_dispatch = event_new(base, -1, 0, dispatch, NULL);
    ev_full = evtimer_new(base, dispatch, &ev_full);
    hook_kick();
    return 0;
}

void hook_fini(void)
{
    if (ev_dispatch)
        event_free(ev_dispatch);
    if (ev_full)
        event_free(ev_full);
    ev_dispatch = ev_full = NULL;
    free(turn.subs);
    turn.subs = NULL;
    turn.n = turn.cap = 0;
    memset(&rd, 0, sizeof rd);
    atomic_store(&kick_due, false);
    reg_clear(&subs);
}
