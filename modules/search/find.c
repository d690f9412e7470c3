/*
 * modules/search/find.c — answering GET /api/v1/search (issue 17): the query parsed (query.c),
 * every store the caller reaches searched in its own index (index.c) — the caller's stores, and
 * each store shared with the caller within the shared file or folder (the module service
 * "sharing.grants", which the sharing module offers) — the hits merged by score, one page of them given snippets.
 *
 * Threads: HTTP workers, concurrently; each index is used under its slot's mutex
 * (search.c's slot_take / slot_release), nothing else is shared.
 */
#include "mbyte.h"
#include "search.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_LIMIT 100
#define MAX_OFFSET 10000


static bool parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!v || !*v || strlen(v) > 19 || strspn(v, "0123456789") != strlen(v))
        return false;
    *out = strtoull(v, NULL, 10);
    return *out <= max;
}

/* In cluster mode each node searches the stores it keeps (its index of a store kept elsewhere is
 * missing, or an old copy's); the node a request reached merges the others' answers (search_cluster). */
bool sf_kept_here(const mb_api *api, uint64_t sid)
{
    return api->size <= offsetof(mb_api, store_here) || api->store_here(sid);
}

/* A snippet for HTML: the text escaped, the markers 2 and 3 (index.c) as <mark>. */
static json_t *snippet_json(const char *s)
{
    if (!s)
        return json_string("");
    size_t n = strlen(s), k = 0;
    char *o = malloc(n * 7 + 1);
    if (!o)
        return json_string("");
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '&' ? "&amp;" : s[i] == '<' ? "&lt;" : s[i] == '>' ? "&gt;" : s[i] == '"' ? "&quot;"
                        : s[i] == '\'' ? "&#39;" : s[i] == 2 ? "<mark>" : s[i] == 3 ? "</mark>" : NULL;
        if (rep) {
            memcpy(o + k, rep, strlen(rep));
            k += strlen(rep);
        } else
            o[k++] = s[i];
    }
    o[k] = 0;
    json_t *j = json_stringn(o, k);
    if (!j)
        j = json_string("");
    free(o);
    return j;
}

typedef struct hit {
    si_hit h;
    uint64_t sid;
    const char *store;
    const char *share; /* the share it was found through, NULL in the caller's own store */
} hit;

static bool store_named(const sq_query *q, const char *name);

/* The hits so far of one search, over every store it reaches. */
typedef struct hits {
    hit *v;
    size_t n;
    int cut;  /* some store had more matches than this, and only its newest this many were ranked */
} hits;

/* Search one store's index (the whole store, or q->within of it) and add its hits. */
static int search_store(search *s, const sq_query *q, uint64_t sid, const char *store, const char *share, int want,
                        hits *all, mb_err *err)
{
    char why[256];
    index_slot *x = slot_take(s, sid, err);
    if (!x)
        return err->code;
    si_hit *h = NULL;
    int n = 0;
    /* a query matching more documents than rank_newest in a store ranks the newest rank_newest of
     * them and the answer says so: ranking the 50,000 matches of a common word took 50-200 ms on
     * a 2-vCPU guest, the newest 1,000 a few (docs/performance.md). tag: filters drop hits after
     * the index answered: such a query ranks every match. */
    bool cut = false;
    int cap = q->ntags ? 0 : s->rank_newest;
    int rc = si_search(x->db, q, want, cap, &h, &n, &cut, why, sizeof why);
    slot_release(x);
    if (cut)
        all->cut = cap;
    if (rc)
        return s->api->err_set(err, MB_EIO, "%s", why);
    if ((rc = tf_apply(s->api, sid, q, h, &n, why, sizeof why))) {
        si_hits_free(h, n);
        return s->api->err_set(err, rc, "q: %s", why);
    }
    hit *grown = realloc(all->v, (all->n + (size_t)n + 1) * sizeof *all->v);
    if (!grown) {
        si_hits_free(h, n);
        return s->api->err_set(err, MB_ENOMEM, "out of memory");
    }
    all->v = grown;
    for (int k = 0; k < n; k++) {
        bool dup = false; /* two shares of one store can overlap (a folder and a file in it) */
        for (size_t j = 0; share && j < all->n && !dup; j++)
            dup = all->v[j].sid == sid && !strcmp(all->v[j].h.path, h[k].path);
        if (dup) {
            free(h[k].path), free(h[k].name), free(h[k].kind), free(h[k].snippet);
            continue;
        }
        all->v[all->n++] = (hit){h[k], sid, store, share};
    }
    free(h); /* the strings moved into all */
    return 0;
}

/* What other users share with the caller and it may list (the service "sharing.grants";
 * without the sharing module nothing is shared): each share's store searched within the
 * shared path. in: names folders of the caller's own stores, so a query with in: searches no
 * share. */
static int search_shares(search *s, uint64_t uid, sq_query *q, uint64_t only, int want, hits *all, json_t *keep,
                         mb_err *err)
{
    const mb_api *api = s->api;
    if (q->nins)
        return 0;
    json_t *grants = NULL, *arg = json_pack("{s:I}", "user", (json_int_t)uid);
    int rc = api->service_call("sharing.grants", arg, &grants, err);
    json_decref(arg);
    if (rc == MB_ENOENT)
        rc = 0; /* the sharing module is not loaded: nothing is shared */
    size_t i;
    json_t *g;
    json_array_foreach(grants, i, g) {
        uint64_t sid = (uint64_t)mb_jint(g, "store");
        if (rc || (only && sid != only) || !sf_kept_here(api, sid))
            continue;
        json_t *st = NULL;
        mb_err e;
        if (api->store_get(NULL, sid, &st, &e))
            continue; /* the store went meanwhile */
        json_array_append_new(keep, st); /* its name and the share's id outlive this loop */
        json_array_append(keep, g);
        if (!store_named(q, mb_jstr(st, "name")))
            continue;
        q->within = mb_jstr(g, "path") && *mb_jstr(g, "path") ? mb_jstr(g, "path") : NULL; /* "": the whole store */
        rc = search_store(s, q, sid, mb_jstr(st, "name"), mb_jstr(g, "id"), want, all, err);
        q->within = NULL;
    }
    json_decref(grants);
    return rc;
}

static int cmp_hit(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->h.score != y->h.score)
        return x->h.score < y->h.score ? 1 : -1;
    if (x->h.mtime != y->h.mtime)
        return x->h.mtime < y->h.mtime ? 1 : -1;
    if (x->sid != y->sid)
        return x->sid < y->sid ? -1 : 1;
    return strcmp(x->h.path, y->h.path);
}

static bool store_named(const sq_query *q, const char *name)
{
    if (!q->nstores)
        return true;
    for (int i = 0; i < q->nstores; i++)
        if (name && !strcasecmp(q->stores[i], name))
            return true;
    return false;
}

/* The snippets of the hits shown (text matches only), one statement per store. */
static void show_snippets(search *s, const sq_query *q, hit *shown, size_t n)
{
    si_hit *batch = calloc(n + 1, sizeof *batch);
    for (size_t i = 0; q->match && batch && i < n; i++) {
        if (shown[i].h.score <= 0 || shown[i].h.snippet)
            continue; /* a name substring or filters only: no text matched; or done with its store */
        size_t k = 0;
        for (size_t j = i; j < n; j++)
            if (shown[j].sid == shown[i].sid && shown[j].h.score > 0)
                batch[k++] = (si_hit){.id = shown[j].h.id, .tlen = shown[j].h.tlen};
        mb_err e;
        index_slot *x = slot_take(s, shown[i].sid, &e);
        if (x) {
            si_snippets(x->db, q, batch, (int)k);
            slot_release(x);
        }
        for (size_t j = i, m = 0; j < n && m < k; j++)
            if (shown[j].sid == shown[i].sid && shown[j].h.score > 0)
                shown[j].h.snippet = batch[m].snippet ? batch[m].snippet : strdup(""), batch[m++].snippet = NULL;
    }
    free(batch);
}

/* One search for user u (its stores and what is shared with it): *out {"hits": [...], "next"}.
 * The HTTP route and the "search.query" service both answer with it. */
static int find_run(search *s, const mb_user *u, const char *qs, uint64_t only, uint64_t limit, uint64_t offset,
                    json_t **out, mb_err *err)
{
    const mb_api *api = s->api;
    if (!qs || !*qs)
        return api->err_set(err, MB_EINVAL, "q: say what to search for, as in q=invoice type:pdf");
    sq_query q;
    char why[256];
    if (sq_parse(qs, &q, why, sizeof why))
        return api->err_set(err, MB_EINVAL, "q: %s", why);
    /* The user's stores whose records are here: each node searches the ones it keeps, and the
     * node the request reached asks the others (store_list would ask every node for its list). */
    json_t *stores = NULL;
    int rc = api->store_list_all(u->id, &stores, err);
    if (rc) {
        sq_free(&q);
        return rc;
    }
    hits found = {0};
    json_t *keep = json_array();
    bool found_only = false;
    size_t i;
    json_t *st;
    /* tag: filters drop hits after the index answered (tagfilt.c): take all a page may reach */
    int want = q.ntags ? MAX_OFFSET + MAX_LIMIT + 1 : (int)(offset + limit + 1);
    json_array_foreach(stores, i, st) {
        uint64_t sid = (uint64_t)mb_jint(st, "id");
        if ((only && sid != only) || strcmp(mb_jstr(st, "state"), "ready"))
            continue;
        found_only = true;
        if (!sf_kept_here(api, sid) || !store_named(&q, mb_jstr(st, "name")))
            continue;
        if ((rc = search_store(s, &q, sid, mb_jstr(st, "name"), NULL, want, &found, err)))
            break;
    }
    size_t own = found.n;
    if (!rc)
        rc = search_shares(s, u->id, &q, only, want, &found, keep, err);
    if (!rc && only && !found_only && found.n == own) {
        json_t *rec = NULL; /* in cluster mode: kept by another node (it answers for it) */
        if (!sf_kept_here(api, only) && !api->store_get(u, only, &rec, NULL))
            found_only = true;
        json_decref(rec);
        if (!found_only)
            rc = api->err_set(err, MB_ENOENT, "no such store: %llu", (unsigned long long)only);
    }
    hit *all = found.v;
    size_t nall = found.n;
    if (!rc) {
        if (nall)
            qsort(all, nall, sizeof *all, cmp_hit);
        show_snippets(s, &q, all + (offset < nall ? offset : nall),
                      offset < nall ? (nall - offset < limit ? nall - offset : limit) : 0);
        json_t *arr = json_array();
        for (size_t k = offset; k < nall && k < offset + limit; k++)
            json_array_append_new(
                arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:f, s:o, s:s?}", "store", (json_int_t)all[k].sid,
                               "store_name", all[k].store ? all[k].store : "", "path", all[k].h.path, "name",
                               all[k].h.name, "type", all[k].h.kind, "size", (json_int_t)all[k].h.size, "modified",
                               (json_int_t)all[k].h.mtime, "score", all[k].h.score, "snippet",
                               snippet_json(all[k].h.snippet), "share", all[k].share));
        char next[24];
        snprintf(next, sizeof next, "%llu", (unsigned long long)(offset + limit));
        *out = json_pack("{s:o, s:s?}", "hits", arr, "next",
                        nall > offset + limit && offset + limit <= MAX_OFFSET ? next : NULL);
        if (found.cut)
            json_object_set_new(*out, "ranked_newest", json_integer(found.cut));
    }
    for (size_t k = 0; k < nall; k++) {
        si_hit *h = &all[k].h;
        free(h->path), free(h->name), free(h->kind), free(h->snippet);
    }
    free(all);
    json_decref(keep);
    json_decref(stores);
    sq_free(&q);
    return rc;
}

/* ----------------------------------------------------- every node's hits --- */

#define NODES_MAX 64

/* The order of cmp_hit, on answered hits. */
static int cmp_json(const json_t *x, const json_t *y)
{
    double a = json_number_value(json_object_get(x, "score")), b = json_number_value(json_object_get(y, "score"));
    if (a != b)
        return a < b ? 1 : -1;
    if (mb_jint(x, "modified") != mb_jint(y, "modified"))
        return mb_jint(x, "modified") < mb_jint(y, "modified") ? 1 : -1;
    if (mb_jint(x, "store") != mb_jint(y, "store"))
        return mb_jint(x, "store") < mb_jint(y, "store") ? -1 : 1;
    return strcmp(mb_jstr(x, "path"), mb_jstr(y, "path"));
}

static void url_encode(const char *in, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < n; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~", *p))
            out[o++] = (char)*p;
        else
            out[o++] = '%', out[o++] = hex[*p >> 4], out[o++] = hex[*p & 15];
    out[o] = 0;
}

/* A search of every store in cluster mode: this node's hits and each other node's (asked as the
 * caller, each answering from the stores it keeps), merged in cmp_hit's order. The cursor is
 * "c:<node>=<offset>,..." (the nodes that have more, each at its own offset); without one every node
 * starts at 0. A node that does not answer is left out of this page (logged). */
static int search_cluster(search *s, mb_req *req, const char *qs, uint64_t limit, const char *cv, const json_t *cl,
                          mb_err *err)
{
    const mb_api *api = s->api;
    struct src {
        const char *node;
        uint64_t off;
        json_t *ans;
        size_t taken;
    } src[NODES_MAX];
    int n = 0, rc = 0;
    src[n++] = (struct src){mb_jstr(cl, "node"), 0, NULL, 0};
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(cl, "nodes"), i, v) if (n < NODES_MAX) src[n++] =
        (struct src){json_string_value(v), 0, NULL, 0};
    bool first = !cv || !*cv;
    if (!first && strncmp(cv, "c:", 2))
        return api->err_set(err, MB_EINVAL, "cursor: not a cursor this server gave (use \"next\" of the last answer)");
    bool listed[NODES_MAX] = {false};
    for (const char *p = first ? "" : cv + 2; *p;) { /* name=offset,... */
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        char num[24];
        uint64_t off;
        if (!eq || eq > end || end - eq - 1 <= 0 || end - eq - 1 >= (int)sizeof num)
            return api->err_set(err, MB_EINVAL, "cursor: not a cursor this server gave (use \"next\" of the last answer)");
        snprintf(num, sizeof num, "%.*s", (int)(end - eq - 1), eq + 1);
        if (!parse_u64(num, MAX_OFFSET, &off))
            return api->err_set(err, MB_EINVAL, "cursor: not a cursor this server gave (use \"next\" of the last answer)");
        for (int k = 0; k < n; k++)
            if (strlen(src[k].node) == (size_t)(eq - p) && !strncmp(src[k].node, p, (size_t)(eq - p)))
                src[k].off = off, listed[k] = true; /* a node no longer up is left out */
        p = *end ? end + 1 : end;
    }
    char enc[3 * 1024 + 1], target[3300];
    url_encode(qs ? qs : "", enc, sizeof enc);
    for (int k = 0; k < n && !rc; k++) {
        if (!first && !listed[k])
            continue; /* it had no more */
        mb_err e = {0};
        if (k == 0)
            rc = find_run(s, api->req_user(req), qs, 0, limit, src[k].off, &src[k].ans, err);
        else {
            snprintf(target, sizeof target, "/api/v1/search?q=%s&limit=%llu&cursor=%llu", enc, (unsigned long long)limit,
                     (unsigned long long)src[k].off);
            if (api->cluster_ask(req, src[k].node, target, &src[k].ans, &e))
                api->log(s->self, MB_LOG_WARN, "search: node %s left out of a search: %s", src[k].node, e.msg);
        }
    }
    json_t *hits = json_array();
    while (!rc && json_array_size(hits) < limit) {
        int best = -1;
        for (int k = 0; k < n; k++) {
            json_t *h = json_array_get(json_object_get(src[k].ans, "hits"), src[k].taken);
            if (h && (best < 0 || cmp_json(h, json_array_get(json_object_get(src[best].ans, "hits"), src[best].taken)) < 0))
                best = k;
        }
        if (best < 0)
            break;
        json_array_append(hits, json_array_get(json_object_get(src[best].ans, "hits"), src[best].taken++));
    }
    char next[NODES_MAX * 90] = "";
    size_t used = 0;
    for (int k = 0; k < n && !rc; k++) {
        bool more = src[k].taken < json_array_size(json_object_get(src[k].ans, "hits")) ||
                    json_is_string(json_object_get(src[k].ans, "next"));
        if (more && src[k].off + src[k].taken <= MAX_OFFSET && used + 90 < sizeof next)
            used += (size_t)snprintf(next + used, sizeof next - used, "%s%s=%llu", used ? "," : "c:", src[k].node,
                                     (unsigned long long)(src[k].off + src[k].taken));
    }
    for (int k = 0; k < n; k++)
        json_decref(src[k].ans);
    if (rc) {
        json_decref(hits);
        return rc;
    }
    return api->reply_json(req, 200, json_pack("{s:o, s:s?}", "hits", hits, "next", used ? next : NULL));
}

/* GET /api/v1/search?q=&store=&limit=&cursor= */
int sf_search(mb_req *req, void *state, mb_err *err)
{
    search *s = state;
    const mb_api *api = s->api;
    const char *qs = api->req_query(req, "q"), *sv = api->req_query(req, "store");
    const char *lv = api->req_query(req, "limit"), *cv = api->req_query(req, "cursor");
    uint64_t limit = 20, offset = 0, only = 0;
    if (lv && !parse_u64(lv, MAX_LIMIT, &limit))
        return api->err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", MAX_LIMIT);
    if (!limit)
        return api->err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", MAX_LIMIT);
    if (sv && *sv && (!parse_u64(sv, UINT64_MAX, &only) || !only))
        return api->err_set(err, MB_ENOENT, "no such store: %s", sv);
    json_t *cl = NULL;
    mb_err ce = {0};
    if (!only && api->size > offsetof(mb_api, cluster_nodes) && api->cluster_nodes(req, &cl, &ce) == 0) {
        int rc = search_cluster(s, req, qs, limit, cv, cl, err);
        json_decref(cl);
        return rc;
    }
    if (cv && *cv && !parse_u64(cv, MAX_OFFSET, &offset))
        return api->err_set(err, MB_EINVAL, "cursor: not a cursor this server gave (use \"next\" of the last answer)");
    json_t *out = NULL;
    int rc = find_run(s, api->req_user(req), qs, only, limit, offset, &out, err);
    return rc ? rc : api->reply_json(req, 200, out);
}

/* The module service "search.query" {"user": uid, "q": "...", "limit": n} -> {"hits": [...]}
 * (the Discord module's /mbyte search): what GET /api/v1/search answers that user, first page. */
int sf_query_service(const json_t *arg, json_t **out, void *state, mb_err *err)
{
    search *s = state;
    const mb_api *api = s->api;
    json_t *uv = json_object_get(arg, "user"), *lv = json_object_get(arg, "limit");
    if (!json_is_integer(uv) || json_integer_value(uv) <= 0 || (lv && !json_is_integer(lv)))
        return api->err_set(err, MB_EINVAL, "search.query takes {\"user\": id, \"q\": text, \"limit\": n}");
    json_int_t limit = lv ? json_integer_value(lv) : 20;
    if (limit < 1 || limit > MAX_LIMIT)
        return api->err_set(err, MB_EINVAL, "limit: a whole number from 1 to %d", MAX_LIMIT);
    mb_user u;
    char name[128];
    if (api->user_lookup((uint64_t)json_integer_value(uv), NULL, &u, name, sizeof name, err))
        return err->code;
    return find_run(s, &u, json_string_value(json_object_get(arg, "q")), 0, (uint64_t)limit, 0, out, err);
}
