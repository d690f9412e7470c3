/*
 * dav_xml.c — the XML side of the webdav module: request bodies parsed with libxml2
 * (PROPFIND, PROPPATCH, LOCK), multistatus answers built as text, and dead properties.
 * A PROPFIND answer is streamed (api->reply_stream): pf_read makes it one response at a time
 * from a page of a folder's listing at a time (a stack of them for Depth: infinity) and the
 * dead properties of that page's members, so a folder of any size costs a page and one buffer.
 * The stream owns a copy of the request's context; it runs after the handler returned.
 *
 * Parsing never loads a DTD, an external entity or anything from the network, and refuses
 * a body that is not namespace-well-formed (400). Answers are written directly, with every
 * DAV: element under the prefix D; a property of another namespace gets its own
 * declaration on the element.
 *
 * Dead properties (PROPPATCH) are kept in the module's kv as one JSON object per resource,
 * `p/<sid16>/<path>` (the store root: `p/<sid16>`), mapping "<namespace>\n<name>" to the
 * property element serialised on its own (its namespace declarations copied in), so it is
 * answered byte-for-byte as stored, mixed content and foreign namespaces included. They
 * follow COPY and MOVE and go with DELETE (webdav.c calls dav_props_*).
 *
 * Threads: HTTP workers; libxml2 is initialised once by init (xmlInitParser).
 */
#include "dav.h"
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---------------------------------------------------------------- parse --- */

int dav_xml_parse(const void *body, size_t len, void **doc, mb_err *err)
{
    *doc = NULL;
    if (!body || !len)
        return 0;
    if (len > INT32_MAX)
        return MB_ETOOBIG;
    xmlDocPtr d = dav_xml_read(body, len);
    if (!d) {
        if (err) {
            err->code = MB_EINVAL;
            snprintf(err->msg, sizeof err->msg, "the request body is not well-formed XML");
        }
        return MB_EINVAL;
    }
    *doc = d;
    return 0;
}

static bool is_dav(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && n->ns && n->ns->href && !strcmp((const char *)n->ns->href, "DAV:") &&
           !strcmp((const char *)n->name, name);
}

static xmlNodePtr first_el(xmlNodePtr n)
{
    for (; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE)
            return n;
    return NULL;
}

static const char *ns_of(xmlNodePtr n) { return n->ns && n->ns->href ? (const char *)n->ns->href : ""; }

/* The element on its own: a copy in a new document carries the namespace declarations it
 * uses, so the text stands alone. malloc'd. */
static char *standalone(xmlNodePtr n)
{
    xmlDocPtr d = xmlNewDoc((const xmlChar *)"1.0");
    xmlNodePtr c = xmlDocCopyNode(n, d, 1);
    xmlDocSetRootElement(d, c);
    xmlReconciliateNs(d, c);
    xmlBufferPtr b = xmlBufferCreate();
    xmlNodeDump(b, d, c, 0, 0);
    char *out = strdup((const char *)xmlBufferContent(b));
    xmlBufferFree(b);
    xmlFreeDoc(d);
    return out;
}

int dav_xml_lockinfo(const void *body, size_t len, bool *exclusive, char **owner, mb_err *err)
{
    void *vd;
    int rc = dav_xml_parse(body, len, &vd, err);
    if (rc)
        return rc;
    xmlNodePtr root = xmlDocGetRootElement(vd);
    *exclusive = true;
    *owner = NULL;
    if (!is_dav(root, "lockinfo")) {
        xmlFreeDoc(vd);
        err->code = MB_EINVAL;
        snprintf(err->msg, sizeof err->msg, "a LOCK body must be a DAV:lockinfo");
        return MB_EINVAL;
    }
    bool write = false;
    for (xmlNodePtr c = first_el(root->children); c; c = first_el(c->next)) {
        if (is_dav(c, "lockscope"))
            *exclusive = !is_dav(first_el(c->children), "shared");
        else if (is_dav(c, "locktype"))
            write = is_dav(first_el(c->children), "write");
        else if (is_dav(c, "owner"))
            *owner = standalone(c);
    }
    xmlFreeDoc(vd);
    if (!write) {
        free(*owner);
        *owner = NULL;
        err->code = MB_EINVAL;
        snprintf(err->msg, sizeof err->msg, "only write locks exist");
        return MB_EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------- dead properties --- */

static void props_key(dav_req *r, const char *path, char *out, size_t n)
{
    if (*path)
        snprintf(out, n, "p/%016llx/%s", (unsigned long long)r->sid, path);
    else
        snprintf(out, n, "p/%016llx", (unsigned long long)r->sid);
}

static json_t *props_load(dav_req *r, const char *path)
{
    size_t kn = strlen(path) + 40;
    char *key = malloc(kn), *v = NULL;
    size_t len;
    mb_err e;
    props_key(r, path, key, kn);
    json_t *o = NULL;
    if (r->api->kv_get(r->d->self, key, &v, &len, &e) == 0) {
        o = json_loadb(v, len, 0, NULL);
        free(v);
    }
    free(key);
    return json_is_object(o) ? o : (json_decref(o), json_object());
}

static int props_store(dav_req *r, const char *path, json_t *o, mb_err *err)
{
    size_t kn = strlen(path) + 40;
    char *key = malloc(kn);
    props_key(r, path, key, kn);
    int rc;
    if (json_object_size(o) == 0)
        rc = r->api->kv_del(r->d->self, key, true, err);
    else {
        char *txt = json_dumps(o, JSON_COMPACT);
        rc = r->api->kv_put(r->d->self, key, txt, strlen(txt), true, err);
        free(txt);
    }
    free(key);
    return rc;
}

/* The dead properties of `path` and below, PROPS_BATCH keys at a time: memory is one batch
 * whatever the subtree (a COPY or MOVE of a folder of a million files with properties). */
#define PROPS_BATCH 256

typedef struct {
    json_t *keys, *vals;
    size_t max; /* stop at this many; 0: no limit */
} collect_ud;

static int collect(const char *key, const void *v, size_t len, void *ud)
{
    collect_ud *c = ud;
    if (json_array_append_new(c->keys, json_string(key)) || json_array_append_new(c->vals, json_stringn(v, len)))
        abort();
    return c->max && json_array_size(c->keys) >= c->max;
}

/* sync: the last key of its batch. The writes before it in the batch go unsynced and this one
 * syncs them all (LevelDB's log is written in order, so a crash keeps a prefix of them: never a
 * MOVE's delete without the put before it); one sync a batch, where it was two a key. */
typedef void props_fn(dav_req *r, const char *key, const char *val, size_t len, bool sync, void *ud);

/* fn for every props key at `path` and below: the exact key, then the subtree's in key order, a
 * batch at a time, each batch read from after the last key of the one before (kv_scan_after), so
 * fn may delete the keys it is given and writes outside the subtree do not disturb the walk. A
 * kernel without kv_scan_after gives the subtree in one batch. */
static void props_each(dav_req *r, const char *path, props_fn *fn, void *ud)
{
    const mb_api *api = r->api;
    bool paged = api->size > offsetof(mb_api, kv_scan_after);
    size_t kn = strlen(path) + 40, len;
    char *key = malloc(kn), *v = NULL, *after = NULL;
    mb_err e;
    if (!key)
        abort();
    props_key(r, path, key, kn);
    if (api->kv_get(r->d->self, key, &v, &len, &e) == 0) {
        fn(r, key, v, len, true, ud);
        free(v);
    }
    size_t l = strlen(key);
    key[l] = '/';
    key[l + 1] = 0;
    do {
        collect_ud c = {json_array(), json_array(), paged ? PROPS_BATCH : 0};
        if (!c.keys || !c.vals)
            abort();
        if (paged)
            api->kv_scan_after(r->d->self, key, after, collect, &c, &e);
        else
            api->kv_scan(r->d->self, key, collect, &c, &e);
        size_t n = json_array_size(c.keys);
        for (size_t i = 0; i < n; i++) {
            const json_t *val = json_array_get(c.vals, i);
            fn(r, json_string_value(json_array_get(c.keys, i)), json_string_value(val), json_string_length(val),
               i + 1 == n, ud);
        }
        free(after);
        after = paged && n == PROPS_BATCH ? strdup(json_string_value(json_array_get(c.keys, n - 1))) : NULL;
        json_decref(c.keys);
        json_decref(c.vals);
    } while (after);
    free(key);
}

typedef struct {
    size_t fl;       /* the source's key prefix's length: "p/<sid>/" + from, a root's "p/<sid>" */
    char tbase[64];  /* the destination store's "p/<sid>" */
    const char *to;
    bool move;
} copy_ud;

static void copy_one(dav_req *r, const char *old, const char *v, size_t len, bool sync, void *ud)
{
    copy_ud *c = ud;
    const char *rest = old + (strlen(old) >= c->fl ? c->fl : strlen(old));
    size_t nn = strlen(c->tbase) + strlen(c->to) + strlen(rest) + 3;
    char *nk = malloc(nn);
    mb_err e;
    if (!nk)
        abort();
    if (*c->to)
        snprintf(nk, nn, "%s/%s%s", c->tbase, c->to, rest);
    else /* a store's root: its own key, its members' below */
        snprintf(nk, nn, "%s%s", c->tbase, rest);
    r->api->kv_put(r->d->self, nk, v, len, sync && !c->move, &e);
    if (c->move)
        r->api->kv_del(r->d->self, old, sync, &e);
    free(nk);
}

/* The caller has refused a folder into itself: the keys written are never in the walk's range. */
void dav_props_copy(dav_req *r, const char *from, uint64_t to_sid, const char *to, bool move)
{
    char base[64];
    copy_ud c = {0, "", to, move};
    props_key(r, "", base, sizeof base);
    snprintf(c.tbase, sizeof c.tbase, "p/%016llx", (unsigned long long)to_sid);
    c.fl = strlen(base) + (*from ? 1 + strlen(from) : 0);
    props_each(r, from, copy_one, &c);
}

static void drop_one(dav_req *r, const char *key, const char *v, size_t len, bool sync, void *ud)
{
    (void)v, (void)len, (void)ud;
    mb_err e;
    r->api->kv_del(r->d->self, key, sync, &e);
}

void dav_props_drop(dav_req *r, const char *path) { props_each(r, path, drop_one, NULL); }

/* ---------------------------------------------------------- live props --- */

enum { LP_CREATION, LP_DISPLAY, LP_LENGTH, LP_TYPE, LP_ETAG, LP_MODIFIED, LP_RESTYPE, LP_SUPLOCK, LP_LOCKDISC,
       LP_QAVAIL, LP_QUSED, LP_N };
static const char *const live_names[LP_N] = {
    "creationdate", "displayname", "getcontentlength", "getcontenttype", "getetag", "getlastmodified",
    "resourcetype", "supportedlock", "lockdiscovery", "quota-available-bytes", "quota-used-bytes"};

static int live_index(const char *ns, const char *name)
{
    if (strcmp(ns, "DAV:"))
        return -1;
    for (int i = 0; i < LP_N; i++)
        if (!strcmp(live_names[i], name))
            return i;
    return -1;
}

/* One resource as PROPFIND sees it. */
typedef struct res {
    const char *path; /* in the store; NULL for /dav/ itself */
    bool folder, store_root, dav_root;
    const json_t *info; /* file_stat / folder_list entry, or a store */
} res;

/* A folder whose members are still to answer (Depth 1 and infinity): its listing a page at a
 * time (folder_page, so a folder of a million members costs one page of memory) with the dead
 * properties of that page's members (props_page), walked one entry per step. */
typedef struct frame {
    uint64_t sid;     /* the store listed; 0: the list of stores (/dav/) */
    char *seg;        /* its first URL segment (the store's name as in the request) */
    char *dir;        /* the folder, in the store */
    json_t *list;     /* the page of the listing being answered, or the stores */
    json_t *entries;  /* borrowed from list */
    size_t i;
    char *next;       /* the cursor of the page after it, NULL on the last */
    json_t *dead;     /* member name -> its dead properties, for the page */
    struct frame *up;
} frame;

#define DAV_PAGE 1000 /* members listed at a time */

/* A kernel without folder_page gives the folder whole. */
int dav_page(dav_req *r, uint64_t sid, const char *dir, const char *cursor, json_t **list, char **next, mb_err *e)
{
    const mb_api *api = r->api;
    *next = NULL;
    int rc = !sid                                          ? api->store_list(&r->user, list, e)
             : api->size > offsetof(mb_api, folder_page) ? api->folder_page(&r->user, sid, dir, cursor, DAV_PAGE, list, e)
                                                         : api->folder_list(&r->user, sid, dir, false, list, e);
    const char *nc = rc || !sid ? NULL : json_string_value(json_object_get(*list, "next_cursor"));
    if (nc && !(*next = strdup(nc)))
        abort();
    return rc;
}

/* A PROPFIND answer being streamed: everything it needs is its own (the request is gone
 * once the handler returned); the multistatus is made one response at a time into b,
 * which libmicrohttpd drains (pf_read), so memory is a listing plus one buffer. */
typedef struct pf {
    dav_req rq; /* a copy of the request's context, req NULL */
    dav_req *r;
    dav_buf b;
    size_t off; /* bytes of b already sent */
    int mode; /* 0 allprop, 1 propname, 2 prop */
    void *doc;
    xmlNodePtr prop;
    uint64_t quota_sid; /* the store qavail and qused are of (0: none yet); /dav/ lists several */
    int64_t qavail, qused;
    dav_buf ok, missing, one, path; /* scratch, reused */
    json_t *self;
    char *seg0, *path0; /* owned copies rq points into at the start */
    bool self_folder, infinite, deep, started, done;
    frame *top;
} pf;

static void buf_int(dav_buf *b, long long v)
{
    char t[24], *e = t + sizeof t, *q = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        *--q = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--q = '-';
    dav_buf_add(b, q, (size_t)(e - q));
}

static void buf_2(dav_buf *b, int v)
{
    char t[2] = {(char)('0' + v / 10 % 10), (char)('0' + v % 10)};
    dav_buf_add(b, t, 2);
}

/* RFC 3339 (creationdate) or RFC 1123 (getlastmodified), without strftime's locale work. */
static void buf_date(dav_buf *b, time_t t, bool rfc1123)
{
    static const char days[] = "SunMonTueWedThuFriSat", months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    gmtime_r(&t, &tm);
    if (rfc1123) {
        dav_buf_add(b, days + 3 * tm.tm_wday, 3);
        dav_buf_add(b, ", ", 2);
        buf_2(b, tm.tm_mday);
        dav_buf_add(b, " ", 1);
        dav_buf_add(b, months + 3 * tm.tm_mon, 3);
        dav_buf_add(b, " ", 1);
        buf_int(b, tm.tm_year + 1900);
        dav_buf_add(b, " ", 1);
    } else {
        buf_int(b, tm.tm_year + 1900);
        dav_buf_add(b, "-", 1);
        buf_2(b, tm.tm_mon + 1);
        dav_buf_add(b, "-", 1);
        buf_2(b, tm.tm_mday);
        dav_buf_add(b, "T", 1);
    }
    buf_2(b, tm.tm_hour);
    dav_buf_add(b, ":", 1);
    buf_2(b, tm.tm_min);
    dav_buf_add(b, ":", 1);
    buf_2(b, tm.tm_sec);
    dav_buf_str(b, rfc1123 ? " GMT" : "Z");
}

/* Write live property i's element (with value) into b; false when it does not apply. */
static bool live_value(pf *p, const res *x, int i, dav_buf *b)
{
    const json_t *in = x->info;
    if (x->dav_root && i != LP_DISPLAY && i != LP_RESTYPE)
        return false; /* /dav/ itself is only a list of stores: no dates, locks or quota */
    switch (i) {
    case LP_CREATION: {
        time_t c = (time_t)json_integer_value(json_object_get(in, "created"));
        if (!c)
            c = (time_t)json_integer_value(json_object_get(in, "mtime"));
        dav_buf_str(b, "<D:creationdate>");
        buf_date(b, c, false);
        dav_buf_str(b, "</D:creationdate>");
        return true;
    }
    case LP_DISPLAY: {
        const char *n = json_string_value(json_object_get(in, "name"));
        if (!n)
            return false;
        dav_buf_str(b, "<D:displayname>");
        dav_buf_xml(b, n);
        dav_buf_str(b, "</D:displayname>");
        return true;
    }
    case LP_LENGTH:
        if (x->folder)
            return false;
        dav_buf_str(b, "<D:getcontentlength>");
        buf_int(b, (long long)json_integer_value(json_object_get(in, "size")));
        dav_buf_str(b, "</D:getcontentlength>");
        return true;
    case LP_TYPE: {
        const char *ct = json_string_value(json_object_get(in, "ctype"));
        if (x->folder)
            return false;
        dav_buf_str(b, "<D:getcontenttype>");
        dav_buf_xml(b, ct && *ct ? ct : "application/octet-stream");
        dav_buf_str(b, "</D:getcontenttype>");
        return true;
    }
    case LP_ETAG: {
        const char *sha = json_string_value(json_object_get(in, "sha256"));
        if (x->folder || !sha)
            return false;
        dav_buf_str(b, "<D:getetag>\"");
        dav_buf_str(b, sha);
        dav_buf_str(b, "\"</D:getetag>");
        return true;
    }
    case LP_MODIFIED: {
        time_t m = (time_t)json_integer_value(json_object_get(in, "mtime"));
        if (!m)
            m = (time_t)json_integer_value(json_object_get(in, "created"));
        dav_buf_str(b, "<D:getlastmodified>");
        buf_date(b, m, true);
        dav_buf_str(b, "</D:getlastmodified>");
        return true;
    }
    case LP_RESTYPE:
        dav_buf_str(b, x->folder ? "<D:resourcetype><D:collection/></D:resourcetype>" : "<D:resourcetype/>");
        return true;
    case LP_SUPLOCK:
        dav_buf_str(b, "<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype>"
                       "<D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope>"
                       "<D:locktype><D:write/></D:locktype></D:lockentry></D:supportedlock>");
        return true;
    case LP_LOCKDISC:
        dav_buf_str(b, "<D:lockdiscovery>");
        dav_lockdiscovery(p->r, x->path, b);
        dav_buf_str(b, "</D:lockdiscovery>");
        return true;
    case LP_QAVAIL:
    case LP_QUSED:
        if (!x->folder)
            return false;
        if (p->quota_sid != p->r->sid) {
            dav_quota(p->r, &p->qavail, &p->qused);
            p->quota_sid = p->r->sid;
        }
        dav_buf_str(b, i == LP_QAVAIL ? "<D:quota-available-bytes>" : "<D:quota-used-bytes>");
        buf_int(b, (long long)(i == LP_QAVAIL ? p->qavail : p->qused));
        dav_buf_str(b, i == LP_QAVAIL ? "</D:quota-available-bytes>" : "</D:quota-used-bytes>");
        return true;
    }
    return false;
}

/* An empty element naming a property, with its namespace declared on it. */
static void name_el(dav_buf *b, const char *ns, const char *name)
{
    if (!strcmp(ns, "DAV:")) {
        dav_buf_fmt(b, "<D:%s/>", name);
        return;
    }
    dav_buf_str(b, *ns ? "<R:" : "<");
    dav_buf_str(b, name);
    dav_buf_str(b, *ns ? " xmlns:R=\"" : " xmlns=\"");
    dav_buf_xml(b, ns);
    dav_buf_str(b, "\"/>");
}

static void propstat(dav_buf *b, const dav_buf *props, int status)
{
    static const char *const text[] = {[0] = "200 OK", [1] = "404 Not Found", [2] = "403 Forbidden",
                                       [3] = "424 Failed Dependency"};
    int t = status == 200 ? 0 : status == 404 ? 1 : status == 403 ? 2 : 3;
    dav_buf_str(b, "<D:propstat><D:prop>");
    dav_buf_add(b, props->p ? props->p : "", props->n);
    dav_buf_str(b, "</D:prop><D:status>HTTP/1.1 ");
    dav_buf_str(b, text[t]);
    dav_buf_str(b, "</D:status></D:propstat>");
}

/* One <D:response> into p->b; `dead` is the resource's dead properties (NULL: none). */
static void response(pf *p, const res *x, const json_t *dead)
{
    dav_req *r = p->r;
    dav_buf *b = &p->b, *ok = &p->ok, *missing = &p->missing;
    ok->n = missing->n = 0;
    dav_buf_str(b, "<D:response><D:href>");
    if (x->dav_root)
        dav_buf_str(b, "/dav/");
    else
        dav_href(r, b, x->path, x->folder);
    dav_buf_str(b, "</D:href>");
    const char *k;
    json_t *v;
    if (p->mode == 0 || p->mode == 1) {
        for (int i = 0; i < LP_N; i++) {
            if (i == LP_QAVAIL || i == LP_QUSED)
                continue; /* RFC 4331: not in allprop */
            if (p->mode == 0)
                live_value(p, x, i, ok);
            else {
                p->one.n = 0;
                if (live_value(p, x, i, &p->one)) {
                    dav_buf_str(ok, "<D:");
                    dav_buf_str(ok, live_names[i]);
                    dav_buf_str(ok, "/>");
                }
            }
        }
        json_object_foreach((json_t *)dead, k, v) {
            if (p->mode == 1) {
                const char *nl = strchr(k, '\n');
                char *ns = strndup(k, nl ? (size_t)(nl - k) : 0);
                name_el(ok, ns, nl ? nl + 1 : k);
                free(ns);
            } else if (json_is_string(v))
                dav_buf_str(ok, json_string_value(v));
        }
    } else {
        for (xmlNodePtr c = first_el(p->prop->children); c; c = first_el(c->next)) {
            const char *ns = ns_of(c), *name = (const char *)c->name;
            int li = live_index(ns, name);
            if (li >= 0 && live_value(p, x, li, ok))
                continue;
            json_t *dv = NULL;
            if (dead && json_object_size(dead)) {
                size_t kl = strlen(ns) + strlen(name) + 2;
                char *key = malloc(kl);
                snprintf(key, kl, "%s\n%s", ns, name);
                dv = json_object_get(dead, key);
                free(key);
            }
            if (json_is_string(dv))
                dav_buf_str(ok, json_string_value(dv));
            else
                name_el(missing, ns, name);
        }
    }
    if (ok->n || !missing->n)
        propstat(b, ok, 200);
    if (missing->n)
        propstat(b, missing, 404);
    dav_buf_str(b, "</D:response>\n");
}

static bool is_folder_info(const json_t *in) { return strcmp(json_string_value(json_object_get(in, "type")) ?: "", "file"); }

static bool hidden(dav_srv *d, const char *name)
{
    return !d->keep_macos_metadata && (!strncmp(name, "._", 2) || !strcmp(name, ".DS_Store"));
}

/* The dead properties of the members on one page of folder `dir` (`entries`, in name order, the
 * bytes of the NFC names): name -> object. One scan of the kv from the page's first member to its
 * last (kv_scan_after), where it read every member's of the whole folder and stepped over every key
 * below them: memory and time follow the page. The keys below a member ("name/...": a subfolder's
 * own members) are stepped over with one seek: no path holds the byte 0xff (UTF-8), so nothing
 * sorts between "name/" followed by it and the next member. Keys of names not on the page (a
 * file deleted through another door keeps its dead properties) are read, not kept. A kernel
 * without kv_scan_after: one kv_get per member. */
typedef struct {
    size_t skip;       /* the prefix's length */
    const char *last;  /* the page's last name */
    const json_t *on;  /* the page's names */
    json_t *out;
    char *resume;      /* the key to scan after: a member's subtree was met */
} page_ud;

/* The first n bytes of a against the whole of b, in byte order. */
static int cmp_n(const char *a, size_t n, const char *b)
{
    size_t bl = strlen(b);
    int c = memcmp(a, b, n < bl ? n : bl);
    return c ? c : (n > bl) - (n < bl);
}

static int page_prop(const char *key, const void *v, size_t len, void *ud)
{
    page_ud *m = ud;
    const char *name = key + m->skip, *slash = strchr(name, '/');
    size_t nl = slash ? (size_t)(slash - name) : strlen(name);
    if (cmp_n(name, nl, m->last) > 0)
        return 1; /* past the page */
    if (slash) {
        size_t kl = (size_t)(slash - key) + 1;
        if (!(m->resume = malloc(kl + 2)))
            abort();
        memcpy(m->resume, key, kl);
        memcpy(m->resume + kl, "\xff", 2);
        return 1;
    }
    json_t *o = json_object_get(m->on, name) ? json_loadb(v, len, 0, NULL) : NULL;
    if (json_is_object(o))
        json_object_set_new(m->out, name, o);
    else
        json_decref(o);
    return 0;
}

static json_t *props_page(dav_req *r, uint64_t sid, const char *dir, const json_t *entries)
{
    const mb_api *api = r->api;
    json_t *out = json_object(), *on = json_object(), *e;
    size_t i, n = json_array_size(entries), kn = strlen(dir) + 64;
    char *prefix = malloc(kn);
    if (!out || !on || !prefix)
        abort();
    snprintf(prefix, kn, *dir ? "p/%016llx/%s/" : "p/%016llx/", (unsigned long long)sid, dir);
    json_array_foreach(entries, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name)
            json_object_set_new(on, name, json_true());
    }
    const char *first = n ? json_string_value(json_object_get(json_array_get(entries, 0), "name")) : NULL;
    const char *last = n ? json_string_value(json_object_get(json_array_get(entries, n - 1), "name")) : NULL;
    mb_err er;
    if (first && last && *first && api->size > offsetof(mb_api, kv_scan_after)) {
        /* after: the key just before the first member's, its last byte one less and 0xff added */
        size_t pl = strlen(prefix), fl = strlen(first);
        char *after = malloc(pl + fl + 2);
        if (!after)
            abort();
        memcpy(after, prefix, pl);
        memcpy(after + pl, first, fl);
        ((unsigned char *)after)[pl + fl - 1]--;
        memcpy(after + pl + fl, "\xff", 2);
        page_ud m = {pl, last, on, out, NULL};
        for (;;) {
            api->kv_scan_after(r->d->self, prefix, after, page_prop, &m, &er);
            free(after);
            if (!(after = m.resume))
                break;
            m.resume = NULL;
        }
    } else {
        const char *name;
        json_object_foreach(on, name, e) {
            char *key = malloc(kn + strlen(name)), *v = NULL;
            size_t len;
            if (!key)
                abort();
            snprintf(key, kn + strlen(name), "%s%s", prefix, name);
            json_t *o = api->kv_get(r->d->self, key, &v, &len, &er) == 0 ? json_loadb(v, len, 0, NULL) : NULL;
            if (json_is_object(o))
                json_object_set_new(out, name, o);
            else
                json_decref(o);
            free(v);
            free(key);
        }
    }
    json_decref(on);
    free(prefix);
    return out;
}

/* f's next page in place of the one answered; false on the last, or when it cannot be read. */
static bool frame_next_page(dav_req *r, frame *f)
{
    char *cursor = f->next;
    json_t *list = NULL;
    mb_err e;
    if (!cursor)
        return false;
    int rc = dav_page(r, f->sid, f->dir, cursor, &list, &f->next, &e);
    free(cursor);
    if (rc)
        return false; /* gone meanwhile: what was answered is the last word on it */
    json_decref(f->list);
    f->list = list;
    f->entries = json_object_get(list, "entries");
    f->i = 0;
    json_decref(f->dead);
    f->dead = props_page(r, f->sid, f->dir, f->entries);
    return true;
}

static void frame_push(pf *p, uint64_t sid, const char *seg, const char *dir)
{
    dav_req *r = p->r;
    json_t *list = NULL;
    char *next;
    mb_err e;
    if (dav_page(r, sid, dir, NULL, &list, &next, &e))
        return; /* gone meanwhile: the folder's own response was the last word on it */
    frame *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->sid = sid;
    f->seg = strdup(seg ? seg : "");
    f->dir = strdup(dir);
    f->list = list;
    f->entries = sid ? json_object_get(list, "entries") : list;
    f->next = next;
    f->dead = sid ? props_page(r, sid, dir, f->entries) : json_object();
    f->up = p->top;
    p->top = f;
}

static void frame_pop(pf *p)
{
    frame *f = p->top;
    p->top = f->up;
    json_decref(f->list);
    json_decref(f->dead);
    free(f->next);
    free(f->seg);
    free(f->dir);
    free(f);
}

/* Add the next response (or the closing tag) to p->b. */
static void pf_step(pf *p)
{
    dav_req *r = p->r;
    if (!p->started) {
        p->started = true;
        dav_buf_str(&p->b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n");
        res x = {.path = r->root ? NULL : r->path, .folder = p->self_folder, .dav_root = r->root,
                 .store_root = !r->root && !*r->path, .info = p->self};
        json_t *dead = r->root ? NULL : props_load(r, r->path);
        response(p, &x, dead);
        json_decref(dead);
        if (p->deep && p->self_folder)
            frame_push(p, r->root ? 0 : r->sid, r->store_seg, r->path);
        return;
    }
    while (p->top) {
        frame *f = p->top;
        json_t *e = json_array_get(f->entries, f->i++);
        if (!e) {
            if (!frame_next_page(r, f))
                frame_pop(p);
            continue;
        }
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!f->sid) { /* a store of /dav/ */
            uint64_t id = (uint64_t)json_integer_value(json_object_get(e, "id"));
            if (!name || (r->scope.store && id != r->scope.store))
                continue;
            r->sid = id;
            r->store_seg = name;
            res y = {.path = "", .folder = true, .store_root = true, .info = e};
            json_t *dead = props_load(r, "");
            response(p, &y, dead);
            json_decref(dead);
            if (p->infinite)
                frame_push(p, id, name, "");
            return;
        }
        if (!name || hidden(r->d, name))
            continue;
        r->sid = f->sid;
        r->store_seg = f->seg;
        p->path.n = 0;
        if (*f->dir) {
            dav_buf_str(&p->path, f->dir);
            dav_buf_str(&p->path, "/");
        }
        dav_buf_str(&p->path, name);
        bool folder = is_folder_info(e);
        res y = {.path = p->path.p, .folder = folder, .info = e};
        response(p, &y, json_object_get(f->dead, name));
        if (folder && p->infinite)
            frame_push(p, f->sid, f->seg, p->path.p);
        return;
    }
    dav_buf_str(&p->b, "</D:multistatus>\n");
    p->done = true;
}

static int64_t pf_read(void *ctx, char *buf, size_t max)
{
    pf *p = ctx;
    if (p->off) { /* keep what is not sent yet at the front: b stays about max bytes */
        memmove(p->b.p, p->b.p + p->off, p->b.n - p->off);
        p->b.n -= p->off;
        p->off = 0;
    }
    while (p->b.n < max && !p->done)
        pf_step(p);
    size_t n = p->b.n < max ? p->b.n : max;
    memcpy(buf, p->b.p, n);
    p->off = n;
    return (int64_t)n;
}

static void pf_free(void *ctx)
{
    pf *p = ctx;
    while (p->top)
        frame_pop(p);
    json_decref(p->self);
    xmlFreeDoc(p->doc);
    free(p->seg0);
    free(p->path0);
    free(p->b.p);
    free(p->ok.p);
    free(p->missing.p);
    free(p->one.p);
    free(p->path.p);
    free(p);
}

/* Depth: infinity under `dir`: are there more than `cap` resources? A walk of listings
 * that stops at the cap, so a huge tree costs no more than the cap to refuse. */
static bool over_cap_page(dav_req *r, uint64_t sid, const char *dir, json_t *entries, int64_t *left);

static bool over_cap(dav_req *r, uint64_t sid, const char *dir, int64_t *left)
{
    json_t *list = NULL;
    char *next = NULL;
    mb_err e;
    bool over = false;
    for (int rc = dav_page(r, sid, dir, NULL, &list, &next, &e); !rc;) {
        over = over_cap_page(r, sid, dir, sid ? json_object_get(list, "entries") : list, left);
        json_decref(list);
        list = NULL;
        char *cursor = next;
        next = NULL;
        if (over || !cursor) { /* over the cap: no page more is read */
            free(cursor);
            break;
        }
        rc = dav_page(r, sid, dir, cursor, &list, &next, &e);
        free(cursor);
    }
    json_decref(list);
    free(next);
    return over;
}

/* over_cap over one page of dir's entries (or the stores). */
static bool over_cap_page(dav_req *r, uint64_t sid, const char *dir, json_t *entries, int64_t *left)
{
    json_t *x;
    size_t i;
    bool over = false;
    json_array_foreach(entries, i, x) {
        if (--*left < 0) {
            over = true;
            break;
        }
        const char *name = json_string_value(json_object_get(x, "name"));
        if (!sid) {
            uint64_t id = (uint64_t)json_integer_value(json_object_get(x, "id"));
            if ((!r->scope.store || id == r->scope.store) && (over = over_cap(r, id, "", left)))
                break;
        } else if (name && is_folder_info(x)) {
            char *sub = *dir ? NULL : strdup(name);
            if (*dir && asprintf(&sub, "%s/%s", dir, name) < 0)
                abort();
            over = over_cap(r, sid, sub, left);
            free(sub);
            if (over)
                break;
        }
    }
    return over;
}

static int finite_depth(dav_req *r)
{
    static const char body[] = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">"
                               "<D:propfind-finite-depth/></D:error>\n";
    return r->api->reply_bytes(r->req, 403, "application/xml; charset=utf-8", body, sizeof body - 1);
}

int dav_propfind(dav_req *r, const void *body, size_t len, mb_err *err)
{
    const mb_api *api = r->api;
    const char *depth = api->req_header(r->req, "Depth");
    bool infinite = !depth || !strcasecmp(depth, "infinity"); /* RFC 4918 9.1: none means infinity */
    if (infinite && r->d->propfind_infinity_max <= 0)
        return finite_depth(r);
    if (!infinite && strcmp(depth, "1") && strcmp(depth, "0"))
        return api->err_set(err, MB_EINVAL, "Depth: 0, 1 or infinity");
    void *vd = NULL;
    int rc = dav_xml_parse(body, len, &vd, err);
    if (rc)
        return rc;
    int mode = 0;
    xmlNodePtr prop = NULL;
    if (vd) {
        xmlNodePtr root = xmlDocGetRootElement(vd);
        xmlNodePtr c = is_dav(root, "propfind") ? first_el(root->children) : NULL;
        const char *why = NULL;
        if (!c && !is_dav(root, "propfind"))
            why = "a PROPFIND body must be a DAV:propfind";
        else if (is_dav(c, "propname"))
            mode = 1;
        else if (is_dav(c, "prop")) {
            mode = 2;
            prop = c;
        } else if (c && !is_dav(c, "allprop"))
            why = "a DAV:propfind holds allprop, propname or prop";
        if (why) {
            xmlFreeDoc(vd);
            return api->err_set(err, MB_EINVAL, "%s", why);
        }
    }
    json_t *self = NULL;
    if (r->root)
        self = json_pack("{s:s}", "name", "dav");
    else if ((rc = api->file_stat(&r->user, r->sid, r->path, &self, err))) {
        xmlFreeDoc(vd);
        return rc;
    } else if (!*r->path) { /* the store's root shows the store's name and dates */
        json_t *st = NULL;
        mb_err ig;
        if (api->store_get(&r->user, r->sid, &st, &ig) == 0) {
            json_object_set(self, "name", json_object_get(st, "name"));
            if (!json_integer_value(json_object_get(self, "created")))
                json_object_set(self, "created", json_object_get(st, "created"));
        }
        json_decref(st);
    }
    bool folder = r->root || is_folder_info(self);
    int64_t left = r->d->propfind_infinity_max;
    if (infinite && folder && over_cap(r, r->root ? 0 : r->sid, r->path, &left)) {
        json_decref(self);
        xmlFreeDoc(vd);
        return finite_depth(r);
    }
    pf *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->rq = *r;
    p->rq.req = NULL;
    p->rq.user.name = p->rq.namebuf;
    p->rq.store_seg = p->seg0 = r->store_seg ? strdup(r->store_seg) : NULL;
    p->rq.path = p->path0 = strdup(r->path);
    p->r = &p->rq;
    p->mode = mode;
    p->doc = vd;
    p->prop = prop;
    p->self = self;
    p->self_folder = folder;
    p->infinite = infinite;
    p->deep = infinite || !strcmp(depth, "1");
    rc = api->reply_stream(r->d->self, r->req, 207, "application/xml; charset=utf-8", pf_read, p, pf_free, err);
    if (rc)
        pf_free(p);
    return rc;
}

/* -------------------------------------------------------------- PROPPATCH --- */

int dav_proppatch(dav_req *r, const void *body, size_t len, mb_err *err)
{
    const mb_api *api = r->api;
    if (r->root)
        return api->err_set(err, MB_EPERM, "/dav/ has no properties to change");
    json_t *info = NULL;
    int rc = api->file_stat(&r->user, r->sid, r->path, &info, err);
    if (rc)
        return rc;
    bool folder = is_folder_info(info);
    json_decref(info);
    void *vd = NULL;
    if ((rc = dav_xml_parse(body, len, &vd, err)))
        return rc;
    xmlNodePtr root = vd ? xmlDocGetRootElement(vd) : NULL;
    if (!is_dav(root, "propertyupdate")) {
        xmlFreeDoc(vd);
        return api->err_set(err, MB_EINVAL, "a PROPPATCH body must be a DAV:propertyupdate");
    }
    if ((rc = dav_lock_check(r, r->path, false, err))) {
        xmlFreeDoc(vd);
        return rc;
    }
    /* All or nothing (RFC 4918 9.2): a protected property fails the whole request. */
    json_t *dead = props_load(r, r->path);
    dav_buf done = {0}, refused = {0};
    for (xmlNodePtr op = first_el(root->children); op; op = first_el(op->next)) {
        bool set = is_dav(op, "set");
        if (!set && !is_dav(op, "remove"))
            continue;
        for (xmlNodePtr pr = first_el(op->children); pr; pr = first_el(pr->next)) {
            if (!is_dav(pr, "prop"))
                continue;
            for (xmlNodePtr c = first_el(pr->children); c; c = first_el(c->next)) {
                const char *ns = ns_of(c), *name = (const char *)c->name;
                if (live_index(ns, name) >= 0) {
                    name_el(&refused, ns, name);
                    continue;
                }
                name_el(&done, ns, name);
                size_t kl = strlen(ns) + strlen(name) + 2;
                char *key = malloc(kl);
                snprintf(key, kl, "%s\n%s", ns, name);
                if (set) {
                    char *txt = standalone(c);
                    json_object_set_new(dead, key, json_string(txt));
                    free(txt);
                } else
                    json_object_del(dead, key);
                free(key);
            }
        }
    }
    xmlFreeDoc(vd);
    if (!refused.n && (rc = props_store(r, r->path, dead, err))) {
        json_decref(dead);
        free(done.p);
        return rc;
    }
    json_decref(dead);
    dav_buf b = {0};
    dav_buf_str(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n<D:response><D:href>");
    dav_href(r, &b, r->path, folder);
    dav_buf_str(&b, "</D:href>");
    if (refused.n) {
        propstat(&b, &refused, 403);
        if (done.n)
            propstat(&b, &done, 424);
    } else
        propstat(&b, &done, 200);
    dav_buf_str(&b, "</D:response>\n</D:multistatus>\n");
    rc = api->reply_bytes(r->req, 207, "application/xml; charset=utf-8", b.p, b.n);
    free(b.p);
    free(done.p);
    free(refused.p);
    return rc;
}
