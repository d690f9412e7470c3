/*
 * http_route.c — the route table of the HTTP door: the kernel's routes and the modules',
 * matched against the request's decoded segments, plus the hints that name a module not
 * loaded when a path belongs to it.
 *
 * The table is an owner-tagged registry (registry.c): module load adds a module's routes,
 * unload removes them all, reload swaps them to the new copy in one write-locked step (a
 * route both copies serve keeps its slot, so no request ever sees "no route"). A lookup
 * takes the read lock once, matches, binds the {params} into the request's arena and, when
 * the handler is about to be called, enters the owner's busy count before the lock is
 * released: an unloading module is drained, never called after its count reached zero.
 *
 * Threads: lookups on libmicrohttpd threads; changes on the loop thread (and at start).
 */
#include "http_int.h"
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct http_route {
    mb_module *owner; /* first: the registry's tag */
    char *method;
    char *pattern;
    char *segs[MAX_SEGS];
    int nsegs;
    bool rest; /* last segment is {name*} */
    int role;
    mb_route_fn fn;
    mb_route_fn begin; /* a module's look at the headers before the body (mb_route.begin) */
    void *state;
    const http_stream_ops *stream;
};

static void route_drop(void *e);

static http_route *route_new(const char *method, const char *pattern, int role, mb_err *err)
{
    if (pattern[0] != '/')
        return err_set(err, MB_EINVAL, "route pattern '%s' must start with '/'", pattern), NULL;
    http_route *r = xcalloc(1, sizeof *r);
    r->method = xstrdup(method);
    r->pattern = xstrdup(pattern);
    r->role = role;
    char *copy = xstrdup(pattern + 1), *save = NULL;
    for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (r->nsegs == MAX_SEGS || r->rest) {
            free(copy);
            route_drop(r);
            free(r);
            return err_set(err, MB_EINVAL, "route pattern '%s' is malformed", pattern), NULL;
        }
        size_t n = strlen(t);
        if (n > 3 && t[0] == '{' && t[n - 2] == '*' && t[n - 1] == '}')
            r->rest = true;
        r->segs[r->nsegs++] = xstrdup(t);
    }
    free(copy);
    return r;
}

static bool route_conflict(const void *have, const void *fresh)
{
    const http_route *x = have, *y = fresh;
    return !strcmp(x->method, y->method) && !strcmp(x->pattern, y->pattern);
}

static void route_drop(void *e)
{
    http_route *r = e;
    free(r->method);
    free(r->pattern);
    for (int i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
}

/* A reload re-points the kept slot: functions, state, role and owner. */
static void route_retake(void *have, void *fresh)
{
    http_route *x = have, *y = fresh;
    x->owner = y->owner;
    x->fn = y->fn;
    x->begin = y->begin;
    x->state = y->state;
    x->role = y->role;
    route_drop(y);
}

static void route_describe(const void *e, char *buf, size_t n)
{
    const http_route *r = e;
    snprintf(buf, n, "route %s %s", r->method, r->pattern);
}

REG_ENTRY(http_route);
static const reg_ops route_ops = {.size = sizeof(http_route), .conflict = route_conflict, .same = route_conflict,
                                  .retake = route_retake, .drop = route_drop, .describe = route_describe};
static registry routes = REG_INIT(&route_ops);

/* route_new'd entries go into the table by value: the shell is freed here. */
static int route_insert(http_route *r, mb_err *err)
{
    http_route v = *r;
    free(r);
    return reg_add(&routes, &v, err);
}

int http_route_add(mb_module *owner, const char *method, const char *pattern, int role, mb_route_fn fn, void *state,
                   mb_err *err)
{
    http_route *r = route_new(method, pattern, role, err);
    if (!r)
        return err->code;
    r->owner = owner;
    r->fn = fn;
    r->state = state;
    return route_insert(r, err);
}

int http_stream_route_add(const char *method, const char *pattern, int role, const http_stream_ops *ops, mb_err *err)
{
    http_route *r = route_new(method, pattern, role, err);
    if (!r)
        return err->code;
    r->stream = ops;
    return route_insert(r, err);
}

void http_routes_remove(mb_module *owner) { reg_remove_owner(&routes, owner); }

/* Reload: make the routes of `to` exactly `table` (kernel-stride entries, ended by a NULL
 * method), replacing those of `from` in one write-locked step. A route in both keeps its
 * slot and is re-pointed (fn, state, role, owner); one only `from` had goes; one only the
 * table has is added. No request ever sees "no route" for a route both copies serve, and
 * none is handed a function of the old copy once this returns. Nothing changes on error. */
int http_routes_swap(mb_module *from, mb_module *to, const mb_route *table, void *new_state, mb_err *err)
{
    size_t n = 0;
    while (table && table[n].method)
        n++;
    http_route *fresh = xcalloc(n + 1, sizeof *fresh);
    for (size_t i = 0; i < n; i++) {
        http_route *r = route_new(table[i].method, table[i].pattern ? table[i].pattern : "", table[i].role, err);
        if (!r) {
            for (size_t k = 0; k < i; k++)
                route_drop(&fresh[k]);
            free(fresh);
            return err->code;
        }
        fresh[i] = *r;
        free(r);
        fresh[i].owner = to;
        fresh[i].fn = table[i].fn;
        fresh[i].begin = table[i].begin;
        fresh[i].state = new_state;
    }
    int rc = reg_swap_owner(&routes, from, fresh, n, err);
    free(fresh);
    return rc;
}

/* Segment match score: more literal segments win over parameters; no match is -1. */
static int route_match(const http_route *r, mb_req *req, bool bind)
{
    int n = r->rest ? r->nsegs - 1 : r->nsegs;
    if (r->rest ? req->nsegs < n : req->nsegs != n)
        return -1;
    int score = 0;
    for (int i = 0; i < n; i++) {
        const char *p = r->segs[i];
        if (p[0] == '{')
            continue;
        if (strcmp(p, req->segs[i]))
            return -1;
        score++;
    }
    if (!bind)
        return score;
    req->nparams = 0;
    for (int i = 0; i < n; i++) {
        const char *p = r->segs[i];
        if (p[0] != '{')
            continue;
        req->pnames[req->nparams] = arena_strndup(req->a, p + 1, strlen(p) - 2);
        req->pvals[req->nparams++] = req->segs[i];
    }
    if (r->rest) {
        const char *p = r->segs[r->nsegs - 1];
        size_t total = 1;
        for (int i = n; i < req->nsegs; i++)
            total += strlen(req->segs[i]) + 1;
        char *joined = arena_alloc(req->a, total), *w = joined;
        for (int i = n; i < req->nsegs; i++) {
            size_t l = strlen(req->segs[i]);
            if (i > n)
                *w++ = '/';
            memcpy(w, req->segs[i], l);
            w += l;
        }
        *w = 0;
        req->pnames[req->nparams] = arena_strndup(req->a, p + 1, strlen(p) - 3);
        req->pvals[req->nparams++] = joined;
    }
    return score;
}

/* The lookup, under the table's read lock (reg_read). */
typedef struct find_ctx {
    mb_req *req;
    bool enter;
    http_hit *hit;
    bool mismatch;
    bool found;
} find_ctx;

static void *route_pick(const void *entries, size_t n, void *ud)
{
    find_ctx *c = ud;
    mb_req *req = c->req;
    const http_route *v = entries, *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < n; i++) {
        int s = route_match(&v[i], req, false);
        if (s < 0)
            continue;
        if (strcmp(v[i].method, req->method) && !(!strcmp(req->method, "HEAD") && !strcmp(v[i].method, "GET"))) {
            c->mismatch = true;
            continue;
        }
        /* Exact method beats HEAD->GET fallback at equal score. */
        if (s > best_score ||
            (s == best_score && best && strcmp(best->method, req->method) && !strcmp(v[i].method, req->method))) {
            best = &v[i];
            best_score = s;
        }
    }
    if (!best)
        return NULL;
    route_match(best, req, true);
    *c->hit = (http_hit){.owner = best->owner, .fn = best->fn, .state = best->state, .role = best->role,
                         .stream = best->stream, .begin = best->begin,
                         .pattern = arena_strdup(req->a, best->pattern)};
    if (c->enter)
        modref_enter(best->owner); /* under the read lock: the owner cannot be drained past us */
    c->found = true;
    return NULL;
}

int http_route_lookup(mb_req *req, http_hit *hit, bool enter)
{
    find_ctx c = {.req = req, .enter = enter, .hit = hit};
    reg_read(&routes, route_pick, &c);
    return c.found ? 0 : c.mismatch ? MB_EMETHOD : MB_ENOENT;
}

/* ------------------------------------------------- routes of modules not loaded --- */
/* A request for a route of a module that is not loaded was a bare "no such endpoint". The
 * module's descriptor is data (its route table), so the first such 404 reads the tables of
 * the modules in module_dir once (dlopen, read, dlclose; no init runs) and remembers which
 * patterns belong to which module. The answer then names the module. */
typedef struct hint {
    http_route *route; /* route_new'd, owner NULL; only its pattern is used */
    char module[65];
} hint;

static pthread_once_t hints_once = PTHREAD_ONCE_INIT;
static hint *hints;
static size_t nhints;

static void hints_read(const char *dir, const char *file)
{
    char path[4096], name[65];
    size_t fl = strlen(file);
    if (fl < 4 || fl - 3 >= sizeof name || strcmp(file + fl - 3, ".so"))
        return;
    snprintf(name, sizeof name, "%.*s", (int)(fl - 3), file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    void *dl = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!dl)
        return;
    const mb_module_desc *d = dlsym(dl, MB_MODULE_SYMBOL);
    if (d && d->size >= offsetof(mb_module_desc, routes) + sizeof d->routes && d->abi_major == MB_ABI_MAJOR &&
        d->routes && d->routes->size >= offsetof(mb_route, pattern) + sizeof(char *) && d->routes->size <= 4096) {
        size_t stride = d->routes->size;
        for (size_t i = 0; i < 1024; i++) {
            const mb_route *r = (const mb_route *)((const char *)d->routes + i * stride);
            if (!r->size || !r->method || !r->pattern)
                break;
            mb_err e = {0};
            http_route *hr = route_new(r->method, r->pattern, MB_ROLE_NONE, &e);
            if (!hr)
                continue;
            hints = xrealloc(hints, (nhints + 1) * sizeof *hints);
            hints[nhints].route = hr;
            snprintf(hints[nhints++].module, sizeof hints->module, "%s", name);
        }
    }
    dlclose(dl);
}

static void hints_build(void)
{
    DIR *d = opendir(g_cfg->module_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        hints_read(g_cfg->module_dir, de->d_name);
    closedir(d);
}

/* The module (not loaded, or it would have matched) whose route the path is, or NULL. */
const char *http_route_hint(mb_req *req)
{
    if (req->nsegs < 3 || strcmp(req->segs[0], "api") || strcmp(req->segs[1], "v1"))
        return NULL;
    pthread_once(&hints_once, hints_build);
    for (size_t i = 0; i < nhints; i++)
        if (route_match(hints[i].route, req, false) >= 0)
            return hints[i].module;
    return NULL;
}

static void hints_free(void)
{
    for (size_t i = 0; i < nhints; i++) {
        route_drop(hints[i].route);
        free(hints[i].route);
    }
    free(hints);
    hints = NULL;
    nhints = 0;
}

void http_routes_fini(void)
{
    hints_free();
    reg_clear(&routes);
}
