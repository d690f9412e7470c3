/*
 * stores.c — store management and usage accounting (issue 4), the kernel half of the
 * multistore, taskmgr, storeconfig and quotas modules.
 *
 * What it adds to the file service (fs.c, ns.c):
 *   - Store states. A store record ("s/<sid16>") may carry "state": "provisioning" (made by
 *     store_create, hidden from users and refusing them until store_ready) or "deleting"
 *     (store_delete_begin: hidden from everyone; store_delete_step empties it a slice at a
 *     time and finally removes the record). No "state" means ready. ns.c asks
 *     ns_store_reachable() in its one access check, so every door obeys the state.
 *   - Per-store settings ("settings" object in the store record), read and replaced whole
 *     by modules (storeconfig validates them; versioning and trash read them).
 *   - Usage, kept incrementally: "us/<sid16>" and "uu/<uid16>" hold {"v":2,"bytes","files",...}.
 *     Every change notes its usage delta in its transaction (txn_usage, txn.c), which writes
 *     it into the same synced batch as the change, so usage is exact across kill -9: it is
 *     never recomputed, except once by the migrations below for data made before it counted.
 *   - The per-user default store ("sd/<uid16>" = sid as decimal text).
 *
 * Threads: any. Every function here that changes a store record, a usage record or a default
 * store does it in a transaction (txn.c), so read-modify-writes of store records and usage
 * never interleave with a change, and every one reaches the commit observer.
 */
#include "fs.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef txn_usage_t usage_t;

/* ================================================================ states === */


/* ================================================================= usage === */

/* Cluster mode: the owner's usage in the stores this node keeps (uu/ counts what this node has
 * kept: a store that moved away still counts in it, one taken over or moved here joins it). */
static void usage_kept(uint64_t owner, usage_t *u)
{
    char prefix[32], o[17], key[32];
    key_u64(o, owner);
    snprintf(prefix, sizeof prefix, "so/%s/", o);
    memset(u, 0, sizeof *u);
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        char hex[17] = {0};
        if (kl != strlen(prefix) + 16)
            continue;
        memcpy(hex, k + kl - 16, 16);
        uint64_t sid = strtoull(hex, NULL, 16);
        if (cluster_store_elsewhere(sid))
            continue;
        usage_t one;
        id_key(key, sizeof key, "us", sid);
        txn_usage_read(key, &one);
        u->bytes += one.bytes;
        u->files += one.files;
        u->versions += one.versions;
        u->trash += one.trash;
    }
    db_iter_free(it);
}

int stores_usage_get(uint64_t sid, uint64_t owner, json_t **out, mb_err *err)
{
    char key[64];
    usage_t u;
    if (!sid && cluster_enabled())
        usage_kept(owner, &u);
    else if (sid) {
        id_key(key, sizeof key, "s", sid);
        json_t *s = NULL;
        if (db_get_json(key, &s))
            return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
        json_decref(s);
        id_key(key, sizeof key, "us", sid);
        txn_usage_read(key, &u);
    } else {
        id_key(key, sizeof key, "uu", owner);
        txn_usage_read(key, &u);
    }
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I}", "bytes", (json_int_t)u.bytes, "files", (json_int_t)u.files,
                     "current", (json_int_t)(u.bytes - u.versions - u.trash), "versions", (json_int_t)u.versions,
                     "trash", (json_int_t)u.trash);
    return 0;
}

/* Counts per store for the migrations below: sid16 -> [bytes, files, versions, trash]. */
static void count(json_t *per_store, const char *k_sid, int field, int64_t delta)
{
    char sid[17];
    memcpy(sid, k_sid, 16);
    sid[16] = 0;
    json_t *c = json_object_get(per_store, sid);
    if (!c)
        json_object_set_new(per_store, sid, c = json_pack("[I, I, I, I]", (json_int_t)0, (json_int_t)0,
                                                          (json_int_t)0, (json_int_t)0));
    json_array_set_new(c, (size_t)field, json_integer(json_integer_value(json_array_get(c, (size_t)field)) + delta));
}

/* Add what a migration counted to the usage records of the stores (deleting ones left their
 * owner's usage already) and of their owners, with the marker, in one batch. */
static void counted_apply(json_t *per_store, const char *marker, const char *value, const char *what)
{
    txn t;
    txn_begin(&t, NULL);
    db_batch *b = t.b;
    json_t *per_user = json_object();
    const char *sid;
    json_t *c;
    json_object_foreach(per_store, sid, c) {
        char key[64];
        snprintf(key, sizeof key, "s/%s", sid);
        json_t *s = NULL;
        if (db_get_json(key, &s))
            continue;
        const char *st = json_string_value(json_object_get(s, "state"));
        bool deleting = st && !strcmp(st, "deleting");
        char owner[17];
        key_u64(owner, (uint64_t)jint(s, "owner"));
        json_decref(s);
        if (deleting)
            continue;
        snprintf(key, sizeof key, "us/%s", sid);
        usage_t d = {0};
        int64_t *f[] = {&d.bytes, &d.files, &d.versions, &d.trash};
        for (size_t i = 0; i < 4; i++) {
            *f[i] = json_integer_value(json_array_get(c, i));
            count(per_user, owner, (int)i, *f[i]);
        }
        txn_usage_add(b, key, &d);
    }
    json_object_foreach(per_user, sid, c) {
        char key[64];
        snprintf(key, sizeof key, "uu/%s", sid);
        txn_usage_add(b, key, &(usage_t){json_integer_value(json_array_get(c, 0)), json_integer_value(json_array_get(c, 1)),
                                    json_integer_value(json_array_get(c, 2)), json_integer_value(json_array_get(c, 3))});
    }
    db_batch_put(b, marker, strlen(marker), value, strlen(value));
    mb_err e = {0};
    if (txn_end(&t, 0, &e, what))
        log_error("usage: %s could not be written", what);
    json_decref(per_user);
}

/* The format the usage records were counted in: "n/usage_format" (2 since old versions
 * count), else 1 once the first count was made ("n/usage_counted"), else 0. */
static int usage_format(void)
{
    char *v = NULL;
    int f = 0;
    if (db_get("n/usage_format", 14, &v, NULL) == 0)
        f = atoi(v);
    else if (db_get("n/usage_counted", 15, &v, NULL) == 0)
        f = 1;
    free(v);
    return f;
}

static void count_entry(const char *k, size_t kl, json_t *e, void *per_store)
{
    if (kl >= 19 && e && !strcmp(json_string_value(json_object_get(e, "type")) ?: "", "file")) {
        count(per_store, k + 2, 0, jint(e, "size"));
        count(per_store, k + 2, 1, 1);
    }
}

/* Usage was introduced after the file service: a database without the marker gets its
 * usage counted once from the directory entries (the only rescan there ever is). */
static void usage_migrate(void)
{
    if (usage_format() >= 1)
        return;
    json_t *per_store = json_object();
    db_each_json("d/", count_entry, per_store);
    counted_apply(per_store, "n/usage_counted", "1", "the first count");
    json_decref(per_store);
}

typedef struct {
    json_t *per_store;
    char group[34]; /* "<sid16>/<fid16>" of the record before */
    int64_t prev_size;
} version_count;

/* f/ records come in key order, a file's versions by rising number: each one followed by
 * another of the same file is not the newest, so it is an old version. */
static void count_version(const char *k, size_t kl, json_t *rec, void *ud)
{
    version_count *vc = ud;
    if (kl != 52)
        return;
    if (!memcmp(vc->group, k + 2, 33)) {
        count(vc->per_store, k + 2, 0, vc->prev_size);
        count(vc->per_store, k + 2, 2, vc->prev_size);
    }
    memcpy(vc->group, k + 2, 33);
    vc->prev_size = jint(rec, "size");
}

static void count_trash(const char *k, size_t kl, json_t *rec, void *per_store)
{
    if (kl >= 19)
        count(per_store, k + 3, 3, jint(rec, "size"));
}

/* Usage format 2 counts old versions and names the trash's part: a database counted in
 * format 1 gets both counted once (f/ records: every version of a file but its newest is an
 * old one, as writes and restores always add the next number; tr/ records: their size). */
static void usage_migrate_v2(void)
{
    if (usage_format() >= 2)
        return;
    version_count vc = {.per_store = json_object()};
    db_each_json("f/", count_version, &vc);
    db_each_json("tr/", count_trash, vc.per_store);
    counted_apply(vc.per_store, "n/usage_format", "2", "the count of old versions and the trash");
    json_decref(vc.per_store);
}

int stores_init(mb_err *err)
{
    (void)err;
    usage_migrate();
    usage_migrate_v2();
    return 0;
}

/* ================================================================ stores === */

static int store_read(uint64_t sid, json_t **rec, mb_err *err)
{
    char key[64];
    id_key(key, sizeof key, "s", sid);
    int rc = db_get_json(key, rec);
    if (rc == MB_ENOENT)
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    if (rc)
        return err_set(err, MB_EIO, "cannot read store %llu", (unsigned long long)sid);
    return 0;
}

/* A store name: what a new folder's name may be (fs_name_normalize, fs_name_creatable), at most
 * 100 bytes. */
static int store_name_check(const char *name, char out[FS_NAME_MAX + 1], mb_err *err)
{
    if (!name)
        return err_set(err, MB_EINVAL, "name: must be a string");
    mb_err e = {0};
    if (fs_name_normalize(name, strlen(name), out, &e) || fs_name_creatable(out, &e))
        return err_set(err, MB_EINVAL, "name: %s", strncmp(e.msg, "name: ", 6) ? e.msg : e.msg + 6);
    if (strlen(out) > 100)
        return err_set(err, MB_EINVAL, "name: may be at most 100 bytes");
    return 0;
}

int stores_create(uint64_t owner, const char *name, const json_t *settings, uint64_t *sid, mb_err *err)
{
    char nn[FS_NAME_MAX + 1];
    int rc = store_name_check(name, nn, err);
    if (rc)
        return rc;
    if (settings && !json_is_object(settings))
        return err_set(err, MB_EINVAL, "settings: must be an object");
    /* The placement (issue 21, backend.c) is kept beside the settings, which modules replace
     * whole: a store's chunks must never lose the backend that holds them. */
    json_t *place = settings ? json_object_get(settings, "placement") : NULL;
    if (place && (rc = backend_placement_check(place, err)))
        return rc;
    if ((rc = backend_placement_make(place, &place, err)))
        return rc;
    uint64_t id;
    if ((rc = cluster_next_id("store", &id, err))) {
        json_decref(place);
        return rc;
    }
    json_t *st = settings ? json_deep_copy(settings) : json_object();
    json_object_del(st, "placement");
    json_t *rec = json_pack("{s:i, s:I, s:I, s:s, s:I, s:s?, s:s, s:o, s:o}", "v", 1, "id", (json_int_t)id, "owner",
                            (json_int_t)owner, "name", nn, "created", (json_int_t)now_wall(), "backend",
                            json_string_value(json_object_get(place, "backend")), "state", "provisioning", "settings",
                            st, "placement", place);
    char key[64], a[17], o[17];
    key_u64(a, id);
    key_u64(o, owner);
    txn t;
    txn_begin(&t, NULL);
    snprintf(key, sizeof key, "s/%s", a);
    db_batch_put_json(t.b, key, rec);
    snprintf(key, sizeof key, "so/%s/%s", o, a);
    db_batch_put(t.b, key, strlen(key), "", 0);
    cluster_store_placed(t.b, id, owner);
    json_decref(rec);
    rc = txn_end(&t, 0, err, "the new store");
    if (rc)
        return err_set(err, rc, "the store could not be created");
    backend_enc_changed(); /* the collector must reach an encrypting store's objects */
    *sid = id;
    return 0;
}

int stores_ready(uint64_t sid, mb_err *err)
{
    txn c;
    txn_begin(&c, NULL);
    json_t *rec = NULL;
    int rc = store_read(sid, &rec, err);
    const char *st = rc ? NULL : json_string_value(json_object_get(rec, "state"));
    if (!rc && st && strcmp(st, "provisioning"))
        rc = err_set(err, MB_ECONFLICT, "store %llu is being deleted", (unsigned long long)sid);
    if (!rc && st) {
        json_object_del(rec, "state");
        char key[64];
        id_key(key, sizeof key, "s", sid);
        db_batch_put_json(c.b, key, rec);
        hook_emit_batch(c.b, "store.created",
                        json_pack("{s:I, s:O, s:O}", "store", (json_int_t)sid, "owner", json_object_get(rec, "owner"),
                                  "name", json_object_get(rec, "name")));
    }
    rc = txn_end(&c, rc, err, st ? "marking the store ready" : NULL);
    json_decref(rec);
    return rc;
}

/* The record if u may change it: its owner (or the system), in a state u may reach. */
static int store_for_change(const mb_user *u, uint64_t sid, json_t **rec, mb_err *err)
{
    int rc = store_read(sid, rec, err);
    if (rc)
        return rc;
    if ((u && (uint64_t)jint(*rec, "owner") != u->id) || !ns_store_reachable(*rec, u)) {
        json_decref(*rec);
        *rec = NULL;
        return err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    }
    return 0;
}

int stores_rename(const mb_user *u, uint64_t sid, const char *name, mb_err *err)
{
    char nn[FS_NAME_MAX + 1];
    int rc = store_name_check(name, nn, err);
    if (rc)
        return rc;
    json_t *rec = NULL;
    txn c;
    txn_begin(&c, NULL);
    rc = store_for_change(u, sid, &rec, err);
    if (!rc) {
        json_t *old = json_incref(json_object_get(rec, "name"));
        json_object_set_new(rec, "name", json_string(nn));
        char key[64];
        id_key(key, sizeof key, "s", sid);
        db_batch_put_json(c.b, key, rec);
        hook_emit_batch(c.b, "store.renamed",
                        json_pack("{s:I, s:O, s:o, s:s, s:I}", "store", (json_int_t)sid, "owner",
                                  json_object_get(rec, "owner"), "from", old, "to", nn, "user",
                                  (json_int_t)(u ? u->id : 0)));
    }
    rc = txn_end(&c, rc, err, "the new name");
    json_decref(rec);
    return rc;
}

int stores_delete_begin(const mb_user *u, uint64_t sid, mb_err *err)
{
    json_t *rec = NULL;
    txn c;
    txn_begin(&c, NULL);
    const char *what = NULL;
    int rc = store_read(sid, &rec, err);
    const char *st = rc ? NULL : json_string_value(json_object_get(rec, "state"));
    if (!rc && st && !strcmp(st, "deleting") && !u) {
        /* Resumed after a crash: already begun. */
    } else if (!rc && ((u && (uint64_t)jint(rec, "owner") != u->id) || !ns_store_reachable(rec, u))) {
        rc = err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)sid);
    } else if (!rc) {
        /* From here on the store's files no longer count: its usage leaves the owner's in
         * the same batch that hides the store, so usage is exact at every step. */
        db_batch *b = c.b;
        char key[64];
        usage_t was;
        id_key(key, sizeof key, "us", sid);
        txn_usage_read(key, &was);
        db_batch_del(b, key, strlen(key));
        id_key(key, sizeof key, "uu", (uint64_t)jint(rec, "owner"));
        was = (usage_t){-was.bytes, -was.files, -was.versions, -was.trash};
        txn_usage_add(b, key, &was);
        json_object_set_new(rec, "state", json_string("deleting"));
        id_key(key, sizeof key, "s", sid);
        db_batch_put_json(b, key, rec);
        what = "marking the store for deletion";
    }
    rc = txn_end(&c, rc, err, what);
    json_decref(rec);
    return rc;
}

/* Delete up to max keys of one prefix into b; version records give back their chunks. */
static int delete_slice(txn *t, const char *prefix, bool versions, int max)
{
    db_batch *b = t->b;
    int n = 0;
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (n < max && db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        if (versions) {
            const char *v = db_iter_val(it, &vl);
            json_t *ver = json_loadb(v, vl, 0, NULL);
            txn_ref_chunks(t, json_object_get(ver, "chunks"), -1);
            json_decref(ver);
        }
        db_batch_del(b, k, kl);
        n++;
    }
    db_iter_free(it);
    return n;
}

int stores_delete_step(uint64_t sid, int max, int64_t *removed, mb_err *err)
{
    if (max < 1)
        max = 1;
    json_t *rec = NULL;
    txn c;
    txn_begin(&c, NULL);
    int rc = store_read(sid, &rec, err);
    if (rc == MB_ENOENT) { /* finished by an earlier attempt */
        txn_end(&c, 0, err, NULL);
        if (removed)
            *removed = 0;
        return 0;
    }
    const char *st = rc ? NULL : json_string_value(json_object_get(rec, "state"));
    if (!rc && (!st || strcmp(st, "deleting")))
        rc = err_set(err, MB_ECONFLICT, "store %llu is not being deleted", (unsigned long long)sid);
    int more = 0, n = 0;
    if (!rc) {
        char pf[64], pd[64], a[17];
        key_u64(a, sid);
        snprintf(pf, sizeof pf, "f/%s/", a);
        snprintf(pd, sizeof pd, "d/%s/", a);
        db_batch *b = c.b;
        n = delete_slice(&c, pf, true, max);
        if (n < max)
            n += delete_slice(&c, pd, false, max - n);
        /* Trash records and damage marks of the store (kernel/history.c) hold no chunk
         * references of their own: their entries and versions went with d/ and f/. */
        char pt[64], px[64];
        snprintf(pt, sizeof pt, "tr/%s/", a);
        snprintf(px, sizeof px, "x/%s/", a);
        if (n < max)
            n += delete_slice(&c, pt, false, max - n);
        if (n < max)
            n += delete_slice(&c, px, false, max - n);
        if (n == max) {
            more = 1;
        } else { /* the last slice: the record, the index, the default, the event */
            char key[64], o[17];
            uint64_t owner = (uint64_t)jint(rec, "owner");
            key_u64(o, owner);
            id_key(key, sizeof key, "s", sid);
            db_batch_del(b, key, strlen(key));
            snprintf(key, sizeof key, "so/%s/%s", o, a);
            db_batch_del(b, key, strlen(key));
            cluster_store_gone(b, sid);
            id_key(key, sizeof key, "us", sid);
            db_batch_del(b, key, strlen(key));
            id_key(key, sizeof key, "sd", owner);
            char *dv = NULL;
            if (db_get(key, strlen(key), &dv, NULL) == 0 && strtoull(dv, NULL, 10) == sid)
                db_batch_del(b, key, strlen(key));
            free(dv);
            hook_emit_batch(b, "store.deleted",
                            json_pack("{s:I, s:I, s:O}", "store", (json_int_t)sid, "owner", (json_int_t)owner, "name",
                                      json_object_get(rec, "name")));
        }
    }
    rc = txn_end(&c, rc, err, "deleting the store's files");
    json_decref(rec);
    if (rc)
        return rc;
    if (removed)
        *removed = n;
    if (!more) {
        /* Chunks nobody references any more are freed now, not after the grace: the
         * pending marks of writes in flight keep their chunks safe (blob.c). */
        mb_err e = {0};
        gc_run(0, &e);
    }
    return more;
}

void stores_each(uint64_t owner, void (*fn)(json_t *rec, void *ud), void *ud)
{
    char prefix[32], o[17];
    if (owner) {
        key_u64(o, owner);
        snprintf(prefix, sizeof prefix, "so/%s/", o);
    } else
        snprintf(prefix, sizeof prefix, "s/");
    db_iter *it = db_iter_prefix(prefix, strlen(prefix));
    while (db_iter_next(it)) {
        size_t kl;
        const char *k = db_iter_key(it, &kl);
        if (kl < 16)
            continue;
        char key[32];
        snprintf(key, sizeof key, "s/%.16s", k + kl - 16);
        json_t *s;
        if (db_get_json(key, &s) == 0) {
            if (cluster_store_elsewhere((uint64_t)jint(s, "id"))) /* a replica's copy: its owner lists it */
                json_decref(s);
            else
                fn(s, ud);
        }
    }
    db_iter_free(it);
}

static void all_cb(json_t *s, void *arr)
{
    json_object_del(s, "v");
    if (!json_object_get(s, "state"))
        json_object_set_new(s, "state", json_string("ready"));
    json_array_append_new(arr, s);
}

int stores_list_all(uint64_t owner, json_t **out, mb_err *err)
{
    (void)err;
    json_t *arr = json_array();
    stores_each(owner, all_cb, arr);
    *out = arr;
    return 0;
}

/* ============================================================= settings === */

int stores_settings_get(uint64_t sid, json_t **out, mb_err *err)
{
    json_t *rec = NULL;
    int rc = store_read(sid, &rec, err);
    if (rc)
        return rc;
    json_t *s = json_object_get(rec, "settings");
    *out = json_is_object(s) ? json_deep_copy(s) : json_object();
    json_decref(rec);
    return 0;
}

int stores_settings_set(uint64_t sid, const json_t *settings, mb_err *err)
{
    if (!json_is_object(settings))
        return err_set(err, MB_EINVAL, "settings: must be an object");
    json_t *rec = NULL;
    txn t;
    txn_begin(&t, NULL);
    int rc = store_read(sid, &rec, err);
    if (!rc) {
        json_object_set_new(rec, "settings", json_deep_copy(settings));
        char key[64];
        id_key(key, sizeof key, "s", sid);
        db_batch_put_json(t.b, key, rec);
    }
    if (txn_end(&t, rc, err, rc ? NULL : "the settings") && !rc)
        rc = err_set(err, MB_EIO, "the settings of store %llu could not be written", (unsigned long long)sid);
    json_decref(rec);
    return rc;
}

/* ====================================================== default store === */

int stores_default_get(uint64_t owner, uint64_t *sid, mb_err *err)
{
    char key[64], *v = NULL;
    id_key(key, sizeof key, "sd", owner);
    *sid = 0;
    if (db_get(key, strlen(key), &v, NULL) == 0) {
        uint64_t s = strtoull(v, NULL, 10);
        free(v);
        json_t *rec = NULL;
        id_key(key, sizeof key, "s", s);
        if (db_get_json(key, &rec) == 0 && !json_object_get(rec, "state"))
            *sid = s;
        json_decref(rec);
    }
    if (*sid)
        return 0;
    /* None chosen (or it is gone): the oldest ready store, normally "Home". */
    json_t *all;
    stores_list_all(owner, &all, err);
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s) {
        if (!strcmp(json_string_value(json_object_get(s, "state")), "ready")) {
            *sid = (uint64_t)jint(s, "id");
            break;
        }
    }
    json_decref(all);
    return *sid ? 0 : err_set(err, MB_ENOENT, "the user has no store");
}

int stores_default_set(const mb_user *u, uint64_t sid, mb_err *err)
{
    if (!u)
        return err_set(err, MB_EINVAL, "a default store belongs to a user");
    json_t *rec = NULL;
    int rc = store_for_change(u, sid, &rec, err);
    json_decref(rec);
    if (rc)
        return rc;
    char key[64], v[24];
    id_key(key, sizeof key, "sd", u->id);
    int n = snprintf(v, sizeof v, "%llu", (unsigned long long)sid);
    txn t;
    txn_begin(&t, NULL);
    db_batch_put(t.b, key, strlen(key), v, (size_t)n);
    rc = txn_end(&t, 0, err, "the default store");
    return rc ? err_set(err, rc, "the default store could not be saved") : 0;
}

void stores_list_decorate(const mb_user *u, json_t *arr)
{
    if (!u)
        return;
    uint64_t def = 0;
    mb_err e = {0};
    stores_default_get(u->id, &def, &e);
    size_t i;
    json_t *s;
    json_array_foreach(arr, i, s) json_object_set_new(s, "default", json_boolean((uint64_t)jint(s, "id") == def));
}

/* ========================================================= conf files === */

int stores_conf_load(const char *file, json_t **out, mb_err *err)
{
    if (!file || !*file || strchr(file, '/') || strstr(file, ".."))
        return err_set(err, MB_EINVAL, "a configuration file is named without '/' or '..'");
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", g_cfg->config_dir, file);
    json_t *lines = NULL;
    int rc = cfg_yaml_load(path, out, &lines, err);
    json_decref(lines);
    size_t pl = strlen(path);
    if (rc && err && !strncmp(err->msg, path, pl)) { /* name the file, not the server's directories */
        char tail[256];
        snprintf(tail, sizeof tail, "%s", err->msg + pl);
        snprintf(err->msg, sizeof err->msg, "%s%s", file, tail);
    }
    return rc;
}
