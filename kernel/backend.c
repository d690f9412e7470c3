/*
 * backend.c — named blob backends and store placement (issue 21; docs/storage.md "Backends").
 *
 * A module (s3, and later webdav, rclone) registers backends by name (api->backend_register),
 * as many as its conf.d file declares: "s3a", "archive"... The kernel's own disk is the
 * backend "local" and is not in this table: blob.c serves it (its "active" backend). A store
 * says where its chunks live with its placement, {"backend": name, "encrypt": bool}, given
 * at creation and kept in the store record ("s/<sid16>" member "placement", docs/storage.md);
 * blob.c asks backend_for_store which backend a chunk of a store goes to or comes from.
 *
 * The table is an owner-tagged registry (registry.c): a module's backends go when its fini
 * has returned (blob_backend_unregister calls backend_remove_owner), and a lookup enters the
 * owner's busy count before the lock is released, so a call in flight keeps the module loaded
 * until it returns (drain). From the moment an unload starts, its backends are closing: no
 * lookup finds them (backend_close_owner, under the write lock), so no call can start while
 * the module drains or while its fini frees their state; a fini that refuses opens them again. A store whose backend is missing (its module unloaded, or not yet
 * loaded at start) is refused, not redirected: every read and write of it answers MB_EBUSY
 * until a module registers the name again. Writing it elsewhere would scatter a store's
 * chunks over backends nobody chose.
 *
 * Placement is chosen at creation and changed only by a live migration (migrate.c), which
 * calls backend_placement_forget after it rewrote the record: the sid -> backend cache below
 * keeps an entry until then (a deleted store's sid is never given out again, stores.c counts
 * ids up), and a lookup that read the record before the change does not cache what it read.
 *
 * Stores that encrypt ({"encrypt": true}, external backends only) carry their data key wrapped
 * by the master key in the placement ("key"); the cache keeps the unwrapped subkeys (crypt.c)
 * and the encrypting stores are listed for the collector, fsck and the scrub (backend_store_views).
 *
 * A placement may also be a redundancy set ({"copies": N, "of": [...]} or {"erasure": {"data": k,
 * "parity": m}, "of": [...]}): backend_for_store then hands out the set (backend_set.c), a
 * composite backend over its members, and the set's stores are listed with the encrypting ones.
 *
 * Threads: any. The registry's rwlock guards the table; cache_mu the placement cache; enc_mu
 * the list of encrypting stores.
 * Calls db.c, registry.c/modref.c, crypt.c and blob.c (its own layer, "blob"; docs/architecture.md).
 */
#include "fs.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bentry {
    mb_module *owner;
    char name[BACKEND_NAME_MAX + 1];
    mb_blob_backend ops; /* copied: the module's table may be shorter than ours (older ABI) */
    void *state;
    bool closing; /* its module is unloading: found by no lookup (backend_close_owner) */
} bentry;
REG_ENTRY(bentry);

static bool be_conflict(const void *have, const void *fresh)
{
    return !strcmp(((const bentry *)have)->name, ((const bentry *)fresh)->name);
}

static void be_describe(const void *e, char *buf, size_t n) { snprintf(buf, n, "backend '%s'", ((const bentry *)e)->name); }

static const reg_ops be_ops = {.size = sizeof(bentry), .conflict = be_conflict, .describe = be_describe};
static registry backends = REG_INIT(&be_ops);

bool backend_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > BACKEND_NAME_MAX)
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static bool by_name(const void *e, const void *key)
{
    return !((const bentry *)e)->closing && !strcmp(((const bentry *)e)->name, key);
}

/* A reload: the fresh copy of module X registers names its old copy still holds. */
static bool held_by_other_copy(const void *e, const void *key)
{
    const bentry *b = e;
    const bentry *f = key;
    return !strcmp(b->name, f->name) && b->owner != f->owner &&
           !strcmp(modref_name(b->owner), modref_name(f->owner));
}

int backend_register(mb_module *owner, const char *name, const mb_blob_backend *b, void *state, mb_err *err)
{
    if (!backend_name_ok(name) || !strcmp(name, "local"))
        return err_set(err, MB_EINVAL, "a backend name is 1-%d of a-z, 0-9, '_' and '-', and not 'local'",
                       BACKEND_NAME_MAX);
    if (!b || b->size < offsetof(mb_blob_backend, list) + sizeof b->list || !b->put || !b->get || !b->has ||
        !b->del)
        return err_set(err, MB_EINVAL, "backend '%s' needs put, get, has and del", name);
    bentry e = {.owner = owner, .state = state};
    snprintf(e.name, sizeof e.name, "%s", name);
    memcpy(&e.ops, b, b->size < sizeof e.ops ? b->size : sizeof e.ops);
    e.ops.size = sizeof e.ops;
    if (b->size < offsetof(mb_blob_backend, stat) + sizeof b->stat)
        e.ops.stat = NULL;
    reg_remove(&backends, held_by_other_copy, &e); /* the old copy's calls in flight still hold it */
    int rc = reg_add(&backends, &e, err);
    if (!rc)
        log_info("backend '%s' (%s) is available", name, b->name ? b->name : modref_name(owner));
    return rc;
}

static void set_closing(void *e, void *ud) { ((bentry *)e)->closing = *(const bool *)ud; }

void backend_close_owner(mb_module *owner, bool closing)
{
    if (owner)
        reg_update_owner(&backends, owner, set_closing, &closing);
}

void backend_remove_owner(mb_module *owner)
{
    if (owner)
        reg_remove_owner(&backends, owner);
}

/* ------------------------------------------------------------- lookups --- */

int backend_enter(const char *name, backend_ref *out, mb_err *err)
{
    bentry e;
    memset(out, 0, sizeof *out);
    if (!reg_get(&backends, by_name, name, &e, true))
        return err_set(err, MB_EBUSY, "backend '%s' is not available (its module is not loaded or does not declare it)",
                       name);
    out->owner = e.owner;
    out->ops = e.ops;
    out->state = e.state;
    snprintf(out->name, sizeof out->name, "%s", e.name);
    return 0;
}

void backend_leave(backend_ref *r)
{
    backend_set_close(r->set);
    r->set = NULL;
    if (r->owner)
        modref_leave(r->owner);
    r->owner = NULL;
    if (r->encrypt)
        sodium_memzero(r->nk, sizeof r->nk + sizeof r->ck);
}

static bool any(const void *e, const void *key)
{
    (void)key;
    return !((const bentry *)e)->closing;
}

size_t backend_enter_all(backend_ref *out, size_t max)
{
    bentry *v = xcalloc(max ? max : 1, sizeof *v);
    size_t n = reg_collect(&backends, any, NULL, v, max);
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].owner = v[i].owner;
        out[i].ops = v[i].ops;
        out[i].state = v[i].state;
        snprintf(out[i].name, sizeof out[i].name, "%s", v[i].name);
    }
    free(v);
    return n;
}

/* ------------------------------------------------------------ placement --- */

#define CACHE_SLOTS 1024
typedef struct placed {
    uint64_t sid; /* 0: empty */
    char name[BACKEND_NAME_MAX + 1]; /* "" for a set */
    bool isset;
    backend_set_spec set; /* isset: its members and code */
    bool encrypt;
    uint8_t nk[CRYPT_KEY], ck[CRYPT_KEY];
} placed;
static placed cache[CACHE_SLOTS];
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t cache_gen; /* moved on by backend_placement_forget, under cache_mu */

/* The encrypting stores (backend name and keys), read from the store records on first use
 * and again after backend_enc_changed. Under enc_mu. */
static placed *encs;
static size_t nencs;
static bool encs_loaded;
static pthread_mutex_t enc_mu = PTHREAD_MUTEX_INITIALIZER;

/* Members "of" of a set placement: 1..PIECE_MAX distinct declared backends, "local" not one. */
static int set_members_check(const json_t *of, mb_err *err)
{
    if (!json_is_array(of) || json_array_size(of) < 1 || json_array_size(of) > PIECE_MAX)
        return err_set(err, MB_EINVAL, "placement.of: must be a list of 1 to %d backend names", PIECE_MAX);
    size_t i;
    json_t *v;
    json_array_foreach((json_t *)of, i, v) {
        const char *name = json_string_value(v);
        if (!name || !backend_name_ok(name))
            return err_set(err, MB_EINVAL, "placement.of[%zu]: must be the name of a backend", i);
        if (!strcmp(name, "local"))
            return err_set(err, MB_EINVAL, "placement.of[%zu]: the local disk cannot be a member of a set (it "
                                           "keeps plain chunks only); name external backends", i);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(json_string_value(json_array_get(of, j)), name))
                return err_set(err, MB_EINVAL, "placement.of: '%s' is named twice; each member must be another "
                                               "backend, or losing it loses more than one piece", name);
        if (!reg_get(&backends, by_name, name, NULL, false))
            return err_set(err, MB_EINVAL,
                           "placement.of[%zu]: no backend '%s' is declared (see GET /api/v1/admin/backends)", i, name);
    }
    return 0;
}

/* {"copies": N, "of": [...]} or {"erasure": {"data": k, "parity": m}, "of": [...]} */
static int set_check(const json_t *p, mb_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)p, k, v) {
        if (strcmp(k, "copies") && strcmp(k, "erasure") && strcmp(k, "of") && strcmp(k, "encrypt"))
            return err_set(err, MB_EINVAL, "placement.%s: unknown member of a set placement (\"copies\" or "
                                           "\"erasure\", \"of\", \"encrypt\")", k);
    }
    json_t *copies = json_object_get(p, "copies"), *ec = json_object_get(p, "erasure"), *of = json_object_get(p, "of");
    if (copies && ec)
        return err_set(err, MB_EINVAL, "placement: a set has either \"copies\" or \"erasure\", not both");
    int rc = set_members_check(of, err);
    if (rc)
        return rc;
    json_int_t n = (json_int_t)json_array_size(of);
    if (copies) {
        if (!json_is_integer(copies) || json_integer_value(copies) < 1 || json_integer_value(copies) > n)
            return err_set(err, MB_EINVAL, "placement.copies: must be a whole number from 1 to the %lld backends "
                                           "named in \"of\"", (long long)n);
        return 0;
    }
    json_t *d = json_object_get(ec, "data"), *m = json_object_get(ec, "parity");
    if (!json_is_object(ec) || json_object_size(ec) != 2 || !json_is_integer(d) || !json_is_integer(m))
        return err_set(err, MB_EINVAL, "placement.erasure: must be {\"data\": k, \"parity\": m}");
    if (json_integer_value(d) < 1)
        return err_set(err, MB_EINVAL, "placement.erasure.data: must be at least 1");
    if (json_integer_value(m) < 1)
        return err_set(err, MB_EINVAL, "placement.erasure.parity: must be at least 1 (with none, use \"backend\")");
    if (json_integer_value(d) + json_integer_value(m) != n)
        return err_set(err, MB_EINVAL, "placement.of: erasure %lld+%lld needs exactly %lld backends, one per piece; "
                                       "%lld are named", (long long)json_integer_value(d),
                       (long long)json_integer_value(m), (long long)(json_integer_value(d) + json_integer_value(m)),
                       (long long)n);
    return 0;
}

static bool is_set(const json_t *p) { return json_object_get(p, "copies") || json_object_get(p, "erasure"); }

/* {"backend": name} */
static int single_check(const json_t *p, mb_err *err)
{
    json_t *enc = json_object_get(p, "encrypt");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)p, k, v) {
        if (strcmp(k, "backend") && strcmp(k, "encrypt"))
            return err_set(err, MB_EINVAL,
                           "placement.%s: unknown member (a placement is {\"backend\"}, {\"copies\", \"of\"} or "
                           "{\"erasure\", \"of\"}, each with \"encrypt\")",
                           k);
    }
    json_t *b = json_object_get(p, "backend");
    if (!json_is_string(b) || !backend_name_ok(json_string_value(b)))
        return err_set(err, MB_EINVAL, "placement.backend: must be the name of a backend, e.g. \"local\"");
    const char *name = json_string_value(b);
    if (json_is_true(enc) && !strcmp(name, "local"))
        return err_set(err, MB_EUNSUPP, "placement.encrypt: encryption is for external backends; the local "
                                        "disk is this server's own");
    if (strcmp(name, "local") && !reg_get(&backends, by_name, name, NULL, false))
        return err_set(err, MB_EINVAL, "placement.backend: no backend '%s' is declared (see GET /api/v1/admin/backends)",
                       name);
    return 0;
}

int backend_placement_check(const json_t *p, mb_err *err)
{
    if (!json_is_object(p))
        return err_set(err, MB_EINVAL, "placement: must be an object such as {\"backend\": \"local\"}");
    json_t *enc = json_object_get(p, "encrypt");
    if (enc && !json_is_boolean(enc))
        return err_set(err, MB_EINVAL, "placement.encrypt: must be true or false");
    int rc = is_set(p) ? set_check(p, err) : single_check(p, err);
    mb_err ke = {0};
    if (!rc && json_is_true(enc) && !crypt_available(&ke))
        return err_set(err, MB_EUNSUPP, "placement.encrypt: this server has no master key (%s)", ke.msg);
    return rc;
}

json_t *backend_placement_norm(const json_t *p)
{
    bool enc = p && json_is_true(json_object_get(p, "encrypt"));
    json_t *of = json_object_get(p, "of");
    if (p && json_object_get(p, "copies"))
        return json_pack("{s:I, s:O, s:b}", "copies", json_integer_value(json_object_get(p, "copies")), "of", of,
                         "encrypt", enc);
    if (p && json_object_get(p, "erasure")) {
        json_t *ec = json_object_get(p, "erasure");
        return json_pack("{s:{s:I, s:I}, s:O, s:b}", "erasure", "data", json_integer_value(json_object_get(ec, "data")),
                         "parity", json_integer_value(json_object_get(ec, "parity")), "of", of, "encrypt", enc);
    }
    return json_pack("{s:s, s:b}", "backend", p ? json_string_value(json_object_get(p, "backend")) : "local",
                     "encrypt", enc);
}

int backend_placement_make(const json_t *p, json_t **out, mb_err *err)
{
    json_t *o = backend_placement_norm(p);
    if (json_is_true(json_object_get(o, "encrypt"))) {
        uint8_t dk[CRYPT_KEY];
        char *wrapped = NULL;
        randombytes_buf(dk, sizeof dk);
        int rc = crypt_key_wrap(dk, &wrapped, err);
        sodium_memzero(dk, sizeof dk);
        if (rc) {
            json_decref(o);
            return rc;
        }
        json_object_set_new(o, "key", json_string(wrapped));
        free(wrapped);
    }
    *out = o;
    return 0;
}

/* A store's placement from its record (p: the "placement" member or NULL) into *pl. */
static int placed_from(uint64_t sid, const json_t *p, placed *pl, mb_err *err)
{
    memset(pl, 0, sizeof *pl);
    pl->sid = sid;
    const char *name = json_string_value(json_object_get(p, "backend"));
    snprintf(pl->name, sizeof pl->name, "%s", name && backend_name_ok(name) ? name : "local");
    if (is_set(p)) { /* checked when the store was made */
        pl->name[0] = 0;
        pl->isset = true;
        backend_set_spec *sp = &pl->set;
        sp->sid = sid;
        json_t *ec = json_object_get(p, "erasure"), *of = json_object_get(p, "of");
        sp->erasure = ec != NULL;
        sp->copies = (unsigned)json_integer_value(json_object_get(p, "copies"));
        sp->k = (unsigned)json_integer_value(json_object_get(ec, "data"));
        sp->m = (unsigned)json_integer_value(json_object_get(ec, "parity"));
        sp->n = (unsigned)json_array_size(of) < PIECE_MAX ? (unsigned)json_array_size(of) : PIECE_MAX;
        for (unsigned i = 0; i < sp->n; i++)
            snprintf(sp->of[i], sizeof sp->of[i], "%s", json_string_value(json_array_get(of, i)));
    }
    if (!json_is_true(json_object_get(p, "encrypt")))
        return 0;
    uint8_t dk[CRYPT_KEY];
    mb_err ue = {0};
    if (crypt_key_unwrap(json_string_value(json_object_get(p, "key")), dk, &ue))
        /* the server's key, not the request, is at fault: unavailable until it is given */
        return err_set(err, MB_EBUSY, "store %llu is encrypted and its data key cannot be unwrapped: %s",
                       (unsigned long long)sid, ue.msg);
    pl->encrypt = true;
    crypt_subkeys(dk, pl->nk, pl->ck);
    sodium_memzero(dk, sizeof dk);
    return 0;
}

/* Store sid's placement from the cache or its record ("local" without one). */
static int store_placed(uint64_t sid, placed *out, mb_err *err)
{
    size_t slot = (size_t)(sid % CACHE_SLOTS);
    pthread_mutex_lock(&cache_mu);
    bool hit = cache[slot].sid == sid;
    if (hit)
        *out = cache[slot];
    uint64_t gen = cache_gen;
    pthread_mutex_unlock(&cache_mu);
    if (hit)
        return 0;
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *rec = NULL;
    int rc = db_get_json(key, &rec);
    if (rc)
        return err_set(err, rc == MB_ENOENT ? MB_ENOENT : MB_EIO, "the record of store %llu cannot be read",
                       (unsigned long long)sid);
    rc = placed_from(sid, json_object_get(rec, "placement"), out, err);
    json_decref(rec);
    if (rc)
        return rc;
    pthread_mutex_lock(&cache_mu);
    if (gen == cache_gen) /* else the record changed since it was read (a migration began) */
        cache[slot] = *out;
    pthread_mutex_unlock(&cache_mu);
    return 0;
}

static int store_backend_name(uint64_t sid, char out[BACKEND_NAME_MAX + 1], mb_err *err)
{
    placed pl;
    int rc = store_placed(sid, &pl, err);
    if (!rc)
        memcpy(out, pl.name, BACKEND_NAME_MAX + 1);
    sodium_memzero(&pl, sizeof pl);
    return rc;
}

void backend_enc_changed(void)
{
    pthread_mutex_lock(&enc_mu);
    encs_loaded = false;
    pthread_mutex_unlock(&enc_mu);
}

static void encs_load(void)
{
    sodium_free(encs);
    encs = NULL;
    nencs = 0;
    size_t cap = 0;
    db_iter *it = db_iter_prefix("s/", 2);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        /* encrypting stores and sets; a store being migrated from both placements (migrate.c) */
        const json_t *both[] = {json_object_get(rec, "placement"),
                                json_object_get(json_object_get(rec, "migrating"), "from")};
        for (size_t i = 0; i < 2; i++) {
            const json_t *p = both[i];
            if (!json_is_true(json_object_get(p, "encrypt")) && !is_set(p))
                continue;
            if (nencs == cap) {
                placed *n = sodium_malloc((cap = cap ? cap * 2 : 16) * sizeof *n);
                if (!n)
                    abort(); /* as xmalloc */
                if (encs)
                    memcpy(n, encs, nencs * sizeof *n);
                sodium_free(encs);
                encs = n;
            }
            mb_err e = {0};
            uint64_t sid = (uint64_t)json_integer_value(json_object_get(rec, "id"));
            if (placed_from(sid, p, &encs[nencs], &e) == 0)
                nencs++;
            else
                log_warn("store %.*s: %s", (int)kl, k, e.msg);
        }
        json_decref(rec);
    }
    db_iter_free(it);
    encs_loaded = true;
}

/* Enter what pl names (its backend, or its set) with its keys: 0, or MB_EBUSY. */
static int placed_enter(const placed *pl, backend_ref *out, mb_err *err)
{
    int rc = pl->isset ? backend_set_open(&pl->set, out, err) : backend_enter(pl->name, out, err);
    if (!rc && pl->encrypt) {
        out->encrypt = true;
        memcpy(out->nk, pl->nk, CRYPT_KEY);
        memcpy(out->ck, pl->ck, CRYPT_KEY);
    }
    return rc;
}

/* Two unencrypted sets that name their pieces alike on the same members hold the same objects. */
static bool same_plain_set(const placed *a, const placed *b)
{
    if (!a->isset || !b->isset || a->encrypt || b->encrypt || a->set.erasure != b->set.erasure ||
        a->set.k != b->set.k || a->set.m != b->set.m || a->set.n != b->set.n)
        return false;
    for (unsigned i = 0; i < a->set.n; i++)
        if (strcmp(a->set.of[i], b->set.of[i]))
            return false;
    return true;
}

size_t backend_store_views(backend_ref *out, size_t max)
{
    size_t got = 0;
    pthread_mutex_lock(&enc_mu);
    if (!encs_loaded)
        encs_load();
    for (size_t i = 0; i < nencs && got < max; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = same_plain_set(&encs[i], &encs[j]);
        mb_err e = {0};
        if (!seen && placed_enter(&encs[i], &out[got], &e) == 0)
            got++; /* else its backend is not loaded: nothing to reach */
    }
    pthread_mutex_unlock(&enc_mu);
    return got;
}

int backend_for_store(uint64_t sid, backend_ref *out, mb_err *err)
{
    memset(out, 0, sizeof *out);
    placed pl;
    int rc = store_placed(sid, &pl, err);
    if (rc)
        return rc;
    if (!pl.isset && !strcmp(pl.name, "local"))
        return 1;
    rc = placed_enter(&pl, out, err);
    sodium_memzero(&pl, sizeof pl);
    return rc;
}

bool backend_store_local(uint64_t sid)
{
    char name[BACKEND_NAME_MAX + 1];
    mb_err e = {0};
    /* a store whose placement cannot be read is not taken for local: its reader goes the
     * backend way, which answers why (a data key that cannot be unwrapped: 503) */
    return store_backend_name(sid, name, &e) == 0 && !strcmp(name, "local");
}

int backend_placement_get(uint64_t sid, json_t **out, mb_err *err)
{
    char key[32];
    id_key(key, sizeof key, "s", sid);
    json_t *rec = NULL;
    if (db_get_json(key, &rec))
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    *out = backend_placement_norm(json_object_get(rec, "placement"));
    json_decref(rec);
    return 0;
}

/* ---------------------------------------------------------------- status --- */

typedef struct tally {
    json_int_t objects, bytes;
} tally;

static int count_one(const char *key, uint64_t size, int64_t mtime, void *ud)
{
    (void)key, (void)mtime;
    tally *t = ud;
    t->objects++;
    t->bytes += (json_int_t)size;
    return 0;
}

static json_t *status_row(const char *name, const char *type, bool up, const tally *t, json_int_t stores)
{
    return json_pack("{s:s, s:s?, s:s, s:o, s:o, s:I, s:I}", "name", name, "type", type, "state", up ? "up" : "down",
                     "objects", up ? json_integer(t->objects) : json_null(), "bytes",
                     up ? json_integer(t->bytes) : json_null(), "queued", (json_int_t)backend_set_queued(name), "stores",
                     stores);
}

static void count_store(json_t *per, const char *n)
{
    json_object_set_new(per, n, json_integer(json_integer_value(json_object_get(per, n)) + 1));
}

static void count_placement(json_t *per, const json_t *p)
{
    const char *n = json_string_value(json_object_get(p, "backend"));
    size_t i;
    json_t *m;
    if (is_set(p)) /* a set's store counts for each of its members */
        json_array_foreach(json_object_get(p, "of"), i, m) count_store(per, json_is_string(m) ? json_string_value(m) : "?");
    else
        count_store(per, n && backend_name_ok(n) ? n : "local");
}

/* How many stores each backend holds, from the store records: {name: n}. With `moving`, a store
 * being migrated counts for the placement it leaves too (its older chunks are still there). */
static json_t *store_counts(bool moving)
{
    json_t *per = json_object();
    db_iter *it = db_iter_prefix("s/", 2);
    while (db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        count_placement(per, json_object_get(rec, "placement"));
        json_t *from = json_object_get(json_object_get(rec, "migrating"), "from");
        if (moving && from)
            count_placement(per, from);
        json_decref(rec);
    }
    db_iter_free(it);
    return per;
}

long backend_stores_on(const char *name)
{
    json_t *per = store_counts(true);
    long n = (long)json_integer_value(json_object_get(per, name));
    json_decref(per);
    return n;
}

/* ------------------------------------------ backends declared in the page --- */
/* bd/<name> = {"v":1,"type","settings","by","time"}: a backend an administrator declared in the
 * web page (POST /api/v1/admin/backends, backend_http.c), added to module `type`'s settings
 * under "backends" when they are read (modmgr.c). */

static void decl_key(char *out, size_t n, const char *name) { snprintf(out, n, "bd/%s", name); }

int backend_decl_get(const char *name, json_t **out)
{
    char key[BACKEND_NAME_MAX + 8];
    if (!backend_name_ok(name))
        return MB_ENOENT;
    decl_key(key, sizeof key, name);
    return db_get_json(key, out);
}

int backend_decl_put(const char *name, const json_t *rec)
{
    char key[BACKEND_NAME_MAX + 8];
    decl_key(key, sizeof key, name);
    return db_put_json(key, rec, true);
}

int backend_decl_del(const char *name)
{
    char key[BACKEND_NAME_MAX + 8];
    decl_key(key, sizeof key, name);
    return db_del(key, strlen(key), true);
}

json_t *backend_declared(const char *type)
{
    json_t *out = json_object();
    db_iter *it = db_iter_prefix("bd/", 3);
    while (db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_val(it, &vl);
        json_t *rec = json_loadb(v, vl, 0, NULL);
        json_t *st = json_object_get(rec, "settings");
        if (kl > 3 && json_is_object(st) && !strcmp(jstr(rec, "type"), type))
            json_object_setn(out, k + 3, kl - 3, st);
        json_decref(rec);
    }
    db_iter_free(it);
    return out;
}

/* Where row's backend was declared: "page" (bd/), or "conf.d" for another registered one. */
static void mark_declared(json_t *row, bool registered)
{
    json_t *rec = NULL;
    const char *name = jstr(row, "name");
    if (backend_decl_get(name, &rec) == 0)
        json_object_set_new(row, "declared", json_string("page"));
    else if (registered)
        json_object_set_new(row, "declared", json_string("conf.d"));
    json_decref(rec);
}

json_t *backend_status(void)
{
    json_t *per = store_counts(false);
    json_t *out = json_array();
    tally t = {0};
    mb_err e = {0};
    bool up = blob_list_local(count_one, &t, &e) >= 0;
    json_array_append_new(out, status_row("local", "local", up, &t, json_integer_value(json_object_get(per, "local"))));
    json_object_del(per, "local");
    backend_ref r[64];
    size_t n = backend_enter_all(r, 64);
    for (size_t i = 0; i < n; i++) {
        tally bt = {0};
        mb_err be = {0};
        bool ok = r[i].ops.list ? r[i].ops.list(r[i].state, count_one, &bt, &be) >= 0 : false;
        json_t *row = status_row(r[i].name, r[i].ops.name, ok, &bt, json_integer_value(json_object_get(per, r[i].name)));
        mark_declared(row, true);
        json_array_append_new(out, row);
        json_object_del(per, r[i].name);
        backend_leave(&r[i]);
    }
    const char *k;
    json_t *cnt;
    json_object_foreach(per, k, cnt) { /* named by stores, registered by no loaded module */
        json_t *row = status_row(k, NULL, false, &t, json_integer_value(cnt));
        mark_declared(row, false);
        json_array_append_new(out, row);
        json_object_set_new(per, k, json_null()); /* listed */
    }
    /* declared in the page, registered by no loaded module and holding no store */
    db_iter *it = db_iter_prefix("bd/", 3);
    while (db_iter_next(it)) {
        size_t kl;
        const char *dk = db_iter_key(it, &kl);
        char name[BACKEND_NAME_MAX + 1];
        if (kl - 3 > BACKEND_NAME_MAX)
            continue;
        memcpy(name, dk + 3, kl - 3);
        name[kl - 3] = 0;
        bool listed = !strcmp(name, "local") || json_object_get(per, name);
        for (size_t i = 0; !listed && i < n; i++)
            listed = !strcmp(r[i].name, name);
        if (!listed)
            json_array_append_new(out, json_pack("{s:s, s:n, s:s, s:n, s:n, s:i, s:i, s:s}", "name", name, "type",
                                                 "state", "down", "objects", "bytes", "queued", 0, "stores", 0,
                                                 "declared", "page"));
    }
    db_iter_free(it);
    json_decref(per);
    return out;
}

/* ------------------------------------------------------ live migration --- */
/* migrate.c's needs, kept here so the placement stays this file's business. */

void backend_placement_forget(uint64_t sid)
{
    pthread_mutex_lock(&cache_mu);
    cache_gen++;
    if (cache[sid % CACHE_SLOTS].sid == sid)
        sodium_memzero(&cache[sid % CACHE_SLOTS], sizeof cache[0]);
    pthread_mutex_unlock(&cache_mu);
    backend_enc_changed();
}

int backend_for_placement(uint64_t sid, const json_t *p, backend_ref *out, mb_err *err)
{
    memset(out, 0, sizeof *out);
    placed pl;
    int rc = placed_from(sid, p, &pl, err);
    if (!rc && !pl.isset && !strcmp(pl.name, "local"))
        rc = 1;
    else if (!rc)
        rc = placed_enter(&pl, out, err); /* a backend or a set, with the store's keys */
    sodium_memzero(&pl, sizeof pl);
    return rc;
}

bool backend_placement_same(const json_t *a, const json_t *b)
{
    json_t *x = json_deep_copy(a), *y = json_deep_copy(b); /* the wrapped key is not where */
    json_object_del(x, "key");
    json_object_del(y, "key");
    if (!json_object_get(x, "encrypt"))
        json_object_set_new(x, "encrypt", json_false());
    if (!json_object_get(y, "encrypt"))
        json_object_set_new(y, "encrypt", json_false());
    bool same = json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return same;
}

void backend_fini(void)
{
    reg_clear(&backends);
    pthread_mutex_lock(&cache_mu);
    sodium_memzero(cache, sizeof cache);
    pthread_mutex_unlock(&cache_mu);
    pthread_mutex_lock(&enc_mu);
    sodium_free(encs);
    encs = NULL;
    nencs = 0;
    encs_loaded = false;
    pthread_mutex_unlock(&enc_mu);
}
