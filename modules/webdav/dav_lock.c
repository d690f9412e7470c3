/*
 * dav_lock.c — WebDAV class 2: write locks (LOCK, UNLOCK, refresh), the If header
 * (RFC 4918 section 10.4) and the Destination / tagged-list URI parser.
 *
 * Locks are advisory leases with a timeout that clients refresh. They are served from memory
 * (a list under the table's mutex) and written through to the module's kv, one record per
 * lock (`l/<store sid16>/<token>`: store, user, path, owner XML, scope, depth, expiry), synced
 * before the LOCK is answered, so an office document stays locked across a restart of mbyted or a
 * reload of the module (init loads every record not yet expired and drops the others; an
 * expired record found later is dropped too). The records are the store's (store_records "l/"):
 * in a cluster they reach its replica with its files, and a node that comes to keep a store
 * reads that store's locks again (the hook event cluster.store, dav_locks_reload). A record of
 * an older build (`l/<token>`, the node's own) is read as it is, moves under the store's key when
 * its lock is refreshed and is deleted with its lock. A lock belongs to the user who took it: another
 * user can neither use its token nor see the resource anyway (stores are per user). A change
 * needs the token of every lock covering what it changes, submitted in the If header
 * (423 Locked with lock-token-submitted otherwise); the If header itself must hold (412).
 *
 * The If header and URI parsers are in dav_parse.c (pure, fuzzed by tests/fuzz/fuzz_dav.c).
 * Threads: HTTP workers; the lock list is guarded by dav_locks.mu.
 */
#include "dav.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- table --- */

void dav_locks_init(dav_locks *t)
{
    pthread_mutex_init(&t->mu, NULL);
    t->head = t->dead = NULL;
}

static dav_lock *lock_new(void)
{
    dav_lock *l = calloc(1, sizeof *l);
    if (l)
        pthread_mutex_init(&l->save_mu, NULL);
    return l;
}

static void lock_free(dav_lock *l)
{
    pthread_mutex_destroy(&l->save_mu);
    free(l->path);
    free(l->owner);
    free(l);
}

/* -------------------------------------------------------- persistence --- */

static void lock_key(uint64_t sid, const char *token, char *out, size_t n)
{
    snprintf(out, n, "l/%016llx/%s", (unsigned long long)sid, token);
}

/* The token of record key (after "l/"): "<sid16>/<token>", or an older build's "<token>". */
static const char *key_token(const char *key, bool *old)
{
    const char *k = key + 2;
    *old = !(strlen(k) > 17 && strspn(k, "0123456789abcdef") == 16 && k[16] == '/');
    return *old ? k : k + 17;
}

/* Write l's record, synced. */
static void record_write(dav_srv *d, const dav_lock *l)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:b, s:b, s:I, s:I}", "sid", (json_int_t)l->sid, "uid",
                          (json_int_t)l->uid, "path", l->path, "exclusive", l->exclusive, "infinite", l->infinite,
                          "timeout", (json_int_t)l->timeout_s, "expires", (json_int_t)l->expires);
    if (l->owner)
        json_object_set_new(o, "owner", json_string(l->owner));
    char key[128], *txt = json_dumps(o, JSON_COMPACT);
    mb_err e;
    lock_key(l->sid, l->token, key, sizeof key);
    if (d->api->kv_put(d->self, key, txt, strlen(txt), true, &e))
        d->api->log(d->self, MB_LOG_WARN, "lock %s is not kept across a restart: %s", l->token, e.msg);
    free(txt);
    json_decref(o);
}

/* Its record goes (UNLOCK, DELETE, MOVE, expiry, or an older build's record moved at a refresh):
 * the one key it is under. Not synced: a record that comes back after a crash is one more lock
 * the client gave up, and it expires. */
static void lock_forget(dav_srv *d, const dav_lock *l)
{
    char key[128];
    mb_err e;
    if (l->legacy)
        snprintf(key, sizeof key, "l/%s", l->token);
    else
        lock_key(l->sid, l->token, key, sizeof key);
    d->api->kv_del(d->self, key, false, &e);
}

/* Write live lock l's record (LOCK, refresh; l->saving counts this write, so l stays), synced: an
 * answered LOCK survives a crash. What is written is l as it is once the writes before are done:
 * its expiry is the latest refresh's. A record of an older build (legacy) goes once it is written. */
static void lock_save(dav_srv *d, dav_lock *l)
{
    pthread_mutex_lock(&l->save_mu);
    pthread_mutex_lock(&d->locks.mu);
    dav_lock now = *l;
    l->legacy = false; /* saved under the store's key below */
    pthread_mutex_unlock(&d->locks.mu);
    record_write(d, &now);
    if (now.legacy)
        lock_forget(d, &now);
    pthread_mutex_unlock(&l->save_mu);
}

typedef struct {
    dav_srv *d;
    uint64_t sid;  /* only this store's (dav_locks_reload), or 0: every one */
    dav_lock *got; /* the locks read, in a list of their own */
} load_ctx;

/* One record into c->got. An expired one is taken too: expire() drops it with its record on the
 * next check, from an HTTP thread (in a cluster the delete of a store's record goes through the
 * store's commit path, which neither init nor the loop thread may wait for). */
static int load_one(const char *key, json_t *v, void *ud)
{
    load_ctx *c = ud;
    bool old;
    const char *tok = key_token(key, &old), *path = json_string_value(json_object_get(v, "path"));
    const char *owner = json_string_value(json_object_get(v, "owner"));
    uint64_t sid = (uint64_t)json_integer_value(json_object_get(v, "sid"));
    if (!path || !sid || strlen(tok) >= sizeof((dav_lock *)0)->token || (c->sid && sid != c->sid)) {
        if (!path && old) /* unreadable, and no store's: dropped here */
            c->d->api->kv_del(c->d->self, key, false, &(mb_err){0});
        return 0;
    }
    dav_lock *l = lock_new();
    if (!l)
        return 0;
    snprintf(l->token, sizeof l->token, "%s", tok);
    l->sid = sid;
    l->uid = (uint64_t)json_integer_value(json_object_get(v, "uid"));
    l->path = strdup(path);
    l->owner = owner ? strdup(owner) : NULL;
    l->exclusive = json_is_true(json_object_get(v, "exclusive"));
    l->infinite = json_is_true(json_object_get(v, "infinite"));
    l->timeout_s = json_integer_value(json_object_get(v, "timeout"));
    l->expires = json_integer_value(json_object_get(v, "expires"));
    l->legacy = old;
    l->next = c->got;
    c->got = l;
    return 0;
}

/* Under mu: the locks read (a list of their own) join the table. */
static void adopt(dav_locks *t, dav_lock *got)
{
    for (dav_lock *l = got, *n; l; l = n) {
        n = l->next;
        l->next = t->head;
        t->head = l;
    }
}

void dav_locks_load(dav_srv *d)
{
    load_ctx c = {d, 0, NULL};
    mb_err e;
    if (d->api->kv_scan_json(d->self, "l/", load_one, &c, &e))
        d->api->log(d->self, MB_LOG_WARN, "the saved locks could not be read: %s", e.msg);
    pthread_mutex_lock(&d->locks.mu);
    adopt(&d->locks, c.got);
    pthread_mutex_unlock(&d->locks.mu);
}

void dav_locks_reload(dav_srv *d, uint64_t sid)
{
    char prefix[40];
    snprintf(prefix, sizeof prefix, "l/%016llx/", (unsigned long long)sid);
    load_ctx c = {d, sid, NULL};
    mb_err e;
    if (d->api->kv_scan_json(d->self, prefix, load_one, &c, &e))
        d->api->log(d->self, MB_LOG_WARN, "the locks of store %llu could not be read: %s", (unsigned long long)sid,
                    e.msg);
    pthread_mutex_lock(&d->locks.mu);
    for (dav_lock **pp = &d->locks.head; *pp;) { /* what this node remembered of it may be stale */
        if ((*pp)->sid == sid && !(*pp)->legacy) { /* an older build's record is this node's own */
            dav_lock *l = *pp;
            *pp = l->next;
            if (l->saving) /* its writer frees it, and leaves the record read here alone */
                l->out = l->keep = true;
            else
                lock_free(l);
        } else
            pp = &(*pp)->next;
    }
    adopt(&d->locks, c.got);
    pthread_mutex_unlock(&d->locks.mu);
}

void dav_locks_free(dav_locks *t)
{
    for (dav_lock *l = t->head, *n; l; l = n) {
        n = l->next;
        lock_free(l);
    }
    for (dav_lock *l = t->dead, *n; l; l = n) {
        n = l->next;
        lock_free(l);
    }
    t->head = t->dead = NULL;
    pthread_mutex_destroy(&t->mu);
}

/* Under mu: take lock *pp out of the table; its record goes at unlock_bury, or after the write of
 * it under way (save_done). */
static void take_out(dav_locks *t, dav_lock **pp)
{
    dav_lock *l = *pp;
    *pp = l->next;
    if (l->saving) {
        l->out = true;
        return;
    }
    l->next = t->dead;
    t->dead = l;
}

/* Let mu go, then delete the records of the locks taken out meanwhile: in a cluster the delete of a
 * store's record goes through the store's commit path (it waits for the replica), which no other
 * request's lock check should wait behind. */
static void unlock_bury(dav_srv *d)
{
    dav_lock *dead = d->locks.dead;
    d->locks.dead = NULL;
    pthread_mutex_unlock(&d->locks.mu);
    for (dav_lock *l = dead, *n; l; l = n) {
        n = l->next;
        lock_forget(d, l);
        lock_free(l);
    }
}

/* Lock l's record was written (l->saving counted it under mu): if l was taken out meanwhile, its
 * record goes now, after the write that would have brought it back. */
static void save_done(dav_srv *d, dav_lock *l)
{
    pthread_mutex_lock(&d->locks.mu);
    if (--l->saving == 0 && l->out) {
        if (l->keep)
            lock_free(l);
        else {
            l->next = d->locks.dead;
            d->locks.dead = l;
        }
    }
    unlock_bury(d);
}

/* Under mu: take out what has expired (its record goes at unlock_bury). */
static void expire(dav_srv *d, int64_t now)
{
    for (dav_lock **pp = &d->locks.head; *pp;)
        if ((*pp)->expires <= now)
            take_out(&d->locks, pp);
        else
            pp = &(*pp)->next;
}

/* Does lock l cover `path` of its store (the path itself, or below a depth-infinity lock)? */
static bool covers(const dav_lock *l, const char *path)
{
    size_t n = strlen(l->path);
    if (!strcmp(l->path, path))
        return true;
    if (!l->infinite)
        return false;
    return n == 0 ? *path != 0 : (!strncmp(path, l->path, n) && path[n] == '/');
}

/* Is `path` at or under lock l's path (a deep change reaches l)? */
static bool under(const dav_lock *l, const char *path)
{
    size_t n = strlen(path);
    return n == 0 || !strcmp(l->path, path) || (!strncmp(l->path, path, n) && l->path[n] == '/');
}

/* The store path a tagged list names; false when it is not in this request's store. */
static bool tag_path(dav_req *r, const char *tag, char *out, size_t n)
{
    if (!*tag) {
        snprintf(out, n, "%s", r->path);
        return true;
    }
    if (dav_uri_path(tag, out, n))
        return false;
    char *slash = strchr(out, '/');
    size_t sl = slash ? (size_t)(slash - out) : strlen(out);
    if (!r->store_seg || strlen(r->store_seg) != sl || strncmp(out, r->store_seg, sl))
        return false;
    memmove(out, slash ? slash + 1 : out + sl, strlen(slash ? slash + 1 : out + sl) + 1);
    return true;
}

int dav_if_check(dav_req *r, mb_err *err)
{
    const char *h = r->api->req_header(r->req, "If");
    if (!h)
        return 0;
    dav_if *ifh = r->api->req_alloc(r->req, sizeof *ifh);
    if (dav_if_parse(h, ifh))
        return r->api->err_set(err, MB_EINVAL, "the If header is malformed");
    dav_locks *t = &r->d->locks;
    int64_t now = r->api->now();
    char *path = r->api->req_alloc(r->req, 1024);
    for (int i = 0; i < ifh->n; i++) {
        dav_if_list *l = &ifh->l[i];
        if (!tag_path(r, l->tag, path, 1024))
            continue;
        char etag[72];
        etag[0] = 1; /* not fetched yet */
        bool all = true;
        for (int k = 0; k < l->n && all; k++) {
            dav_if_cond *c = &l->c[k];
            bool v = false;
            if (c->etag) {
                if (etag[0] == 1)
                    dav_etag_of(r, path, etag);
                v = etag[0] && !strcmp(c->value, etag);
            } else {
                pthread_mutex_lock(&t->mu);
                expire(r->d, now);
                for (dav_lock *x = t->head; x && !v; x = x->next)
                    v = x->sid == r->sid && !strcmp(x->token, c->value) && covers(x, path);
                unlock_bury(r->d);
            }
            all = c->not_ ? !v : v;
        }
        if (all)
            return 0;
    }
    return r->api->err_set(err, MB_EPRECOND, "the If header's conditions do not hold");
}

/* Was token `tok` submitted (a positive condition of the If header)? */
static bool submitted(const dav_if *ifh, const char *tok)
{
    for (int i = 0; ifh && i < ifh->n; i++)
        for (int k = 0; k < ifh->l[i].n; k++)
            if (!ifh->l[i].c[k].not_ && !ifh->l[i].c[k].etag && !strcmp(ifh->l[i].c[k].value, tok))
                return true;
    return false;
}

int dav_lock_check(dav_req *r, const char *path, bool deep, mb_err *err)
{
    int rc = dav_if_check(r, err);
    if (rc)
        return rc;
    const char *h = r->api->req_header(r->req, "If");
    dav_if *ifh = NULL;
    if (h) {
        ifh = r->api->req_alloc(r->req, sizeof *ifh);
        if (dav_if_parse(h, ifh))
            ifh = NULL;
    }
    dav_locks *t = &r->d->locks;
    char *blocked = NULL;
    pthread_mutex_lock(&t->mu);
    expire(r->d, r->api->now());
    for (dav_lock *l = t->head; l && !blocked; l = l->next) {
        if (l->sid != r->sid || !(covers(l, path) || (deep && under(l, path))))
            continue;
        if (l->uid != r->user.id || !submitted(ifh, l->token))
            blocked = strdup(l->path);
    }
    unlock_bury(r->d);
    if (!blocked)
        return 0;
    dav_buf b = {0};
    dav_buf_str(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:lock-token-submitted>"
                    "<D:href>");
    dav_href(r, &b, blocked, false);
    dav_buf_str(&b, "</D:href></D:lock-token-submitted></D:error>\n");
    free(blocked);
    rc = r->api->reply_bytes(r->req, 423, "application/xml; charset=utf-8", b.p, b.n);
    free(b.p);
    return rc ? rc : DAV_REPLIED;
}

void dav_locks_drop(dav_req *r, const char *path)
{
    dav_locks *t = &r->d->locks;
    pthread_mutex_lock(&t->mu);
    for (dav_lock **pp = &t->head; *pp;)
        if ((*pp)->sid == r->sid && under(*pp, path))
            take_out(t, pp);
        else
            pp = &(*pp)->next;
    unlock_bury(r->d);
}

/* ---------------------------------------------------------- the answers --- */

/* Lock l as an activelock, with `left` seconds to go. */
static void activelock(dav_req *r, const dav_lock *l, int64_t left, dav_buf *b)
{
    dav_buf_fmt(b, "<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:%s/></D:lockscope>"
                   "<D:depth>%s</D:depth>",
                l->exclusive ? "exclusive" : "shared", l->infinite ? "infinity" : "0");
    if (l->owner)
        dav_buf_str(b, l->owner);
    dav_buf_fmt(b, "<D:timeout>Second-%lld</D:timeout><D:locktoken><D:href>", (long long)left);
    dav_buf_xml(b, l->token);
    dav_buf_str(b, "</D:href></D:locktoken><D:lockroot><D:href>");
    dav_href(r, b, l->path, false);
    dav_buf_str(b, "</D:href></D:lockroot></D:activelock>");
}

void dav_lockdiscovery(dav_req *r, const char *path, dav_buf *b)
{
    dav_locks *t = &r->d->locks;
    int64_t now = r->api->now();
    pthread_mutex_lock(&t->mu);
    for (dav_lock *l = t->head; l; l = l->next)
        if (l->sid == r->sid && l->expires > now && covers(l, path))
            activelock(r, l, l->expires - now, b);
    pthread_mutex_unlock(&t->mu);
}

static int reply_lock(dav_req *r, const dav_lock *l, int status)
{
    dav_buf b = {0};
    dav_buf_str(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:prop xmlns:D=\"DAV:\"><D:lockdiscovery>");
    activelock(r, l, l->timeout_s, &b); /* what was granted, even when a second ticked since */
    dav_buf_str(&b, "</D:lockdiscovery></D:prop>\n");
    int rc = r->api->reply_bytes(r->req, status, "application/xml; charset=utf-8", b.p, b.n);
    free(b.p);
    return rc;
}

/* "Second-N" / "Infinite" (the first of a list), clamped to lock_timeout_max. */
static int64_t timeout_of(dav_req *r)
{
    int64_t max = r->d->lock_timeout_max > 0 ? r->d->lock_timeout_max : 86400;
    const char *h = r->api->req_header(r->req, "Timeout");
    int64_t v = 3600;
    if (h) {
        h = dav_skip_ws(h);
        if (!strncasecmp(h, "Second-", 7))
            v = strtoll(h + 7, NULL, 10);
        else if (!strncasecmp(h, "Infinite", 8))
            v = max;
    }
    return v < 1 ? 3600 : v > max ? max : v;
}

static int refresh(dav_req *r, mb_err *err)
{
    const char *h = r->api->req_header(r->req, "If");
    dav_if *ifh = r->api->req_alloc(r->req, sizeof *ifh);
    if (!h || dav_if_parse(h, ifh))
        return r->api->err_set(err, MB_EINVAL, "a LOCK refresh needs the lock's token in an If header");
    dav_locks *t = &r->d->locks;
    int64_t now = r->api->now(), to = timeout_of(r);
    dav_lock copy = {0}, *found = NULL;
    pthread_mutex_lock(&t->mu);
    expire(r->d, now);
    for (dav_lock *l = t->head; l && !found; l = l->next)
        if (l->sid == r->sid && l->uid == r->user.id && covers(l, r->path) && submitted(ifh, l->token)) {
            l->expires = now + to;
            l->timeout_s = to;
            copy = *l;
            copy.path = strdup(l->path);
            copy.owner = l->owner ? strdup(l->owner) : NULL;
            l->saving++;
            found = l;
        }
    unlock_bury(r->d);
    if (!found)
        return r->api->err_set(err, MB_EPRECOND, "no lock of yours with that token covers this resource");
    lock_save(r->d, found);
    save_done(r->d, found);
    int rc = reply_lock(r, &copy, 200);
    free(copy.path);
    free(copy.owner);
    return rc;
}

int dav_lock_handle(dav_req *r, const void *body, size_t len, mb_err *err)
{
    const mb_api *api = r->api;
    if (!len)
        return refresh(r, err);
    bool exclusive;
    char *owner = NULL;
    int rc = dav_xml_lockinfo(body, len, &exclusive, &owner, err);
    if (rc)
        return rc;
    const char *depth = api->req_header(r->req, "Depth");
    bool infinite = !depth || !strcasecmp(depth, "infinity");
    if (depth && !infinite && strcmp(depth, "0")) {
        free(owner);
        return api->err_set(err, MB_EINVAL, "LOCK takes Depth 0 or infinity");
    }
    if ((rc = dav_if_check(r, err))) {
        free(owner);
        return rc;
    }
    /* An unmapped URL gets an empty file (RFC 4918 7.3): Office locks before it writes. */
    json_t *info = NULL;
    mb_err ig;
    bool created = false;
    if (api->file_stat(&r->user, r->sid, r->path, &info, &ig) == MB_ENOENT) {
        mb_file_writer *w = NULL;
        if ((rc = api->file_write_begin(&r->user, r->sid, r->path, 0, NULL, MB_FS_NO_OVERWRITE, &w, err)) ||
            (rc = api->file_write_commit(w, NULL, NULL, err))) {
            free(owner);
            return rc;
        }
        created = true;
    }
    json_decref(info);
    dav_lock *l = lock_new();
    if (!l) {
        free(owner);
        return api->err_set(err, MB_EIO, "out of memory");
    }
    uint8_t u[16];
    randombytes_buf(u, sizeof u);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    snprintf(l->token, sizeof l->token,
             "opaquelocktoken:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
             u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    l->sid = r->sid;
    l->uid = r->user.id;
    l->path = strdup(r->path);
    l->owner = owner;
    l->exclusive = exclusive;
    l->infinite = infinite;
    l->timeout_s = timeout_of(r);
    int64_t now = api->now();
    l->expires = now + l->timeout_s;
    dav_locks *t = &r->d->locks;
    dav_lock copy = *l; /* answered from: once its save is done (save_done), l is another thread's to free */
    copy.path = strdup(l->path);
    copy.owner = l->owner ? strdup(l->owner) : NULL;
    bool conflict = false;
    pthread_mutex_lock(&t->mu);
    expire(r->d, now);
    for (dav_lock *x = t->head; x && !conflict; x = x->next)
        if (x->sid == l->sid && (covers(x, l->path) || (infinite && under(x, l->path))))
            conflict = x->exclusive || exclusive;
    if (!conflict) {
        l->saving = 1;
        l->next = t->head;
        t->head = l;
    }
    unlock_bury(r->d);
    if (conflict) {
        lock_free(l);
        free(copy.path);
        free(copy.owner);
        return r->api->reply_bytes(r->req, 423, "application/xml; charset=utf-8",
                                   "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">"
                                   "<D:no-conflicting-lock/></D:error>\n",
                                   strlen("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">"
                                          "<D:no-conflicting-lock/></D:error>\n"));
    }
    lock_save(r->d, l);
    save_done(r->d, l);
    char hdr[80];
    snprintf(hdr, sizeof hdr, "<%s>", copy.token);
    api->reply_header(r->req, "Lock-Token", hdr);
    rc = reply_lock(r, &copy, created ? 201 : 200);
    free(copy.path);
    free(copy.owner);
    return rc;
}

int dav_unlock_handle(dav_req *r, mb_err *err)
{
    const char *h = r->api->req_header(r->req, "Lock-Token");
    char tok[160];
    if (!h || !dav_read_until(dav_skip_ws(h)[0] == '<' ? dav_skip_ws(h) + 1 : "", '>', tok, sizeof tok))
        return r->api->err_set(err, MB_EINVAL, "UNLOCK needs a Lock-Token header: <token>");
    dav_locks *t = &r->d->locks;
    int found = 0;
    pthread_mutex_lock(&t->mu);
    expire(r->d, r->api->now());
    for (dav_lock **pp = &t->head; *pp; pp = &(*pp)->next) {
        dav_lock *l = *pp;
        if (l->sid != r->sid || strcmp(l->token, tok) || !covers(l, r->path))
            continue;
        if (l->uid != r->user.id) {
            found = -1;
            break;
        }
        take_out(t, pp);
        found = 1;
        break;
    }
    unlock_bury(r->d);
    if (found < 0)
        return r->api->err_set(err, MB_EPERM, "that lock belongs to someone else");
    if (!found)
        return r->api->reply_bytes(r->req, 409, "application/xml; charset=utf-8",
                                   "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">"
                                   "<D:lock-token-matches-request-uri/></D:error>\n",
                                   strlen("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">"
                                          "<D:lock-token-matches-request-uri/></D:error>\n"));
    return r->api->reply_bytes(r->req, 204, NULL, "", 0);
}
