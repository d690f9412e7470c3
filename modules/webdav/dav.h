/*
 * dav.h — what the three files of the webdav module share: the request context (dav_req),
 * the XML side (dav_xml.c: request bodies parsed with libxml2, multistatus answers, dead
 * properties) and the lock side (dav_lock.c: the lock table, the If header, Destination).
 * Nothing here crosses the ABI; only webdav.c talks to the descriptor.
 */
#ifndef MB_DAV_H
#define MB_DAV_H

#include "../../abi/mbyte.h"
#include <pthread.h>

typedef struct dav_srv dav_srv;

/* A growable byte buffer (answers are built in it, then copied by reply_bytes). */
typedef struct dav_buf {
    char *p;
    size_t n, cap;
} dav_buf;
void dav_buf_add(dav_buf *b, const char *s, size_t n);
void dav_buf_str(dav_buf *b, const char *s);
void dav_buf_fmt(dav_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dav_buf_xml(dav_buf *b, const char *s); /* escaped text */
void dav_buf_href(dav_buf *b, const char *s); /* percent-encoded path, '/' kept */

/* A check that answered the request itself (423): the handler returns it, as success. */
#define DAV_REPLIED 1

/* One request, after authentication and the store look-up. */
typedef struct dav_req {
    dav_srv *d;
    const mb_api *api;
    mb_req *req;
    mb_user user;
    char namebuf[128];
    mb_apppass_scope scope;
    /* the store: its id, and the first URL segment as the client wrote it (hrefs reuse it) */
    uint64_t sid;
    const char *store_seg;
    const char *path; /* inside the store, "" for its root, no leading or trailing '/' */
    bool root;        /* /dav/ itself: the list of stores */
} dav_req;

/* ------------------------------------------------------------ dav_xml.c --- */
/* Parse a request body (NULL or empty gives *doc NULL). MB_EINVAL for anything not
 * well-formed, namespace errors included; no DTD, entity or network is ever loaded. */
int dav_xml_parse(const void *body, size_t len, void **doc, mb_err *err);
int dav_propfind(dav_req *r, const void *body, size_t len, mb_err *err);
/* The page of folder dir of store sid after cursor (NULL: the first; DAV_PAGE members), or the
 * stores when sid is 0: *list as folder_page or store_list give it, *next the cursor of the page
 * after it (malloc'd) or NULL. */
int dav_page(dav_req *r, uint64_t sid, const char *dir, const char *cursor, json_t **list, char **next, mb_err *e);
int dav_proppatch(dav_req *r, const void *body, size_t len, mb_err *err);
/* The owner element of a LOCK body as standalone XML (malloc'd, may be NULL), the scope
 * (true = exclusive); MB_EINVAL for a body that is not a lockinfo. */
int dav_xml_lockinfo(const void *body, size_t len, bool *exclusive, char **owner, mb_err *err);
/* Dead properties follow their resource: copy or move every one at or under `from` (of r's
 * store) to `to` of store to_sid, or drop them. */
void dav_props_copy(dav_req *r, const char *from, uint64_t to_sid, const char *to, bool move);
void dav_props_drop(dav_req *r, const char *path);
/* href of `path` in this request's store ("/dav/<store>/<path>", '/' appended for folders). */
void dav_href(dav_req *r, dav_buf *b, const char *path, bool folder);

/* ----------------------------------------------------------- dav_lock.c --- */
typedef struct dav_lock {
    char token[64]; /* "opaquelocktoken:<uuid>" */
    uint64_t sid, uid;
    char *path;  /* locked resource, "" the store root */
    char *owner; /* the client's owner XML, may be NULL */
    bool exclusive;
    bool infinite; /* Depth: infinity */
    int64_t timeout_s, expires;
    bool legacy; /* its record is an older build's, l/<token>, not the store's l/<sid16>/<token> */
    /* Under mu. Its record is written outside mu (LOCK, refresh): saving counts the writes under
     * way. Taken out of the table meanwhile (UNLOCK, DELETE, expiry), it is `out`, and the last
     * write to end deletes the record it wrote (unless `keep`: a reload of its store, whose records
     * are another node's word) and frees it. Before, an UNLOCK between a refresh's table update and
     * its write left the record behind: the lock came back at the next start. */
    int saving;
    bool out, keep;
    /* Held around a write of the record, which writes the lock as it is then (read under mu): two
     * refreshes at once write in turn, so the last write has the latest expiry. Before, each wrote
     * its own copy, and the earlier refresh's could land last: the record kept the shorter expiry. */
    pthread_mutex_t save_mu;
    struct dav_lock *next;
} dav_lock;

typedef struct dav_locks {
    pthread_mutex_t mu;
    dav_lock *head;
    dav_lock *dead; /* taken out under mu; their records go once it is let go (unlock_bury) */
} dav_locks;

/* One parsed If header: lists of conditions, each list optionally tagged with a resource. */
#define DAV_IF_MAX 16
typedef struct dav_if_cond {
    bool not_;
    bool etag; /* else a state token */
    char value[160];
} dav_if_cond;
typedef struct dav_if_list {
    char tag[512]; /* "" untagged: the request URI */
    int n;
    dav_if_cond c[DAV_IF_MAX];
} dav_if_list;
typedef struct dav_if {
    int n;
    dav_if_list l[DAV_IF_MAX];
} dav_if;

/* dav_parse.c: skip blanks; copy up to `close` into out (cut to n-1 bytes), returning the
 * char after `close`, or NULL when there is none. */
const char *dav_skip_ws(const char *s);
const char *dav_read_until(const char *s, char close, char *out, size_t n);
/* Parse an If header (RFC 4918 section 10.4). Pure; fuzzed. 0 or MB_EINVAL. */
int dav_if_parse(const char *s, dav_if *out);
/* Split an absolute or absolute-path URI into percent-decoded segments after "/dav/" and
 * return the path joined by '/' in out (decoded; '.', '..', encoded '/', NUL refused).
 * Pure; fuzzed. 0 or MB_EINVAL; MB_ENOENT when it is not under /dav/. */
int dav_uri_path(const char *uri, char *out, size_t n);

void dav_locks_init(dav_locks *t);
/* Load the saved locks (kv `l/<sid16>/<token>`, and an older build's `l/<token>`) into d->locks;
 * init calls it. */
void dav_locks_load(dav_srv *d);
/* This node keeps store sid now (cluster.store): its locks are read again from its records (the
 * replica's copy), replacing what this node remembered of them. Reads only: the loop thread. */
void dav_locks_reload(dav_srv *d, uint64_t sid);
void dav_locks_free(dav_locks *t);
/* May the caller change `path` (and, when `deep`, everything below it)? The If header must
 * hold (else MB_EPRECOND, 412) and every lock covering what changes (a depth-infinity lock
 * of a parent covers a new member) must be the caller's with its token submitted in the If
 * header; else the request is answered 423 here and DAV_REPLIED returned. 0 when allowed. */
int dav_lock_check(dav_req *r, const char *path, bool deep, mb_err *err);
/* The If header alone: 0 when absent or when one of its lists holds, else MB_EPRECOND. */
int dav_if_check(dav_req *r, mb_err *err);
int dav_lock_handle(dav_req *r, const void *body, size_t len, mb_err *err);
int dav_unlock_handle(dav_req *r, mb_err *err);
/* Drop every lock at or under `path` (DELETE, MOVE's source). */
void dav_locks_drop(dav_req *r, const char *path);
/* <D:lockdiscovery> content for `path` (locks on it or inherited from above). */
void dav_lockdiscovery(dav_req *r, const char *path, dav_buf *b);

/* ----------------------------------------------------------- dav_copy.c --- */
/* Copy r->path (a file, or a folder with everything under it) to `to` of the caller's other
 * store dsid through the kernel's read and write paths (webdav.c's COPY and MOVE do the
 * checks, the Overwrite, dead properties and, for MOVE, the source's deletion). */
int dav_copy_across(dav_req *r, uint64_t dsid, const char *to, bool folder, mb_err *err);

/* ------------------------------------------------------------- dav_ms.c --- */
/* Multistatus answers of outside servers (the client backends' listings). Pure; fuzzed. */
#define DAV_MS_BODY_MAX (16u << 20) /* = HP_BODY_MAX: a listing answer is read whole */
#define DAV_MS_HREF_MAX 2048        /* a longer href is skipped */
/* Called for each response with its href as sent (percent-encoded, NUL-terminated, shorter
 * than DAV_MS_HREF_MAX), its getcontentlength (0 when absent), getlastmodified (Unix seconds,
 * 0 when absent or unreadable) and whether its resourcetype is a collection; non-zero stops. */
typedef int (*dav_ms_fn)(const char *href, uint64_t size, int64_t mtime, bool collection, void *ud);
/* 0 after every response, fn's non-zero, or MB_EINVAL for a body that is not a well-formed
 * DAV: multistatus (or bigger than DAV_MS_BODY_MAX). */
int dav_ms_parse(const char *xml, size_t len, dav_ms_fn fn, void *ud);
/* Outside XML read safely: a libxml2 document (xmlDocPtr, the caller frees it with xmlFreeDoc)
 * when body is well-formed, namespaces included, and has a root; else NULL. No DTD, entity
 * or network is ever loaded. */
void *dav_xml_read(const void *body, size_t len);
/* An RFC 1123 date ("Sun, 06 Nov 1994 08:49:37 GMT") in Unix seconds, 0 when it is not one. */
int64_t dav_http_time(const char *s);

/* -------------------------------------------------------- dav_backend.c --- */
/* Blob backends on outside WebDAV servers (issue 21): conf.d/webdav.yaml's `backends`. init
 * registers each with the kernel (state in *out, NULL when none are declared); reconfigure
 * takes new settings of the same names (a name added or removed needs a reload: MB_EINVAL
 * with that sentence); fini frees them once the kernel drained the module. Loop thread. */
typedef struct dav_backends dav_backends;
int dav_backends_init(mb_module *self, const mb_api *api, const json_t *config, dav_backends **out, mb_err *err);
int dav_backends_reconfigure(dav_backends *bs, const json_t *config, mb_err *err);
void dav_backends_fini(dav_backends *bs);

/* ------------------------------------------------------------ webdav.c --- */
struct dav_srv {
    mb_module *self;
    const mb_api *api;
    bool allow_account_password;
    bool keep_macos_metadata;
    int64_t lock_timeout_max;
    int64_t propfind_infinity_max; /* Depth: infinity answers up to this many resources (0: never) */
    dav_locks locks;
    dav_backends *backends; /* the client side (dav_backend.c) */
    /* The store a (user, first URL segment) named last time, so a request costs one store_get
     * instead of listing every store of the user; checked by name on every use. */
    pthread_mutex_t memo_mu;
    struct {
        uint64_t uid, sid;
        char name[96];
    } memo[64];
};
/* RFC 4331 for this request's store: what it may still take (its max_bytes setting, else the
 * disk's free space, whichever is less) and what it holds, in bytes. */
void dav_quota(dav_req *r, int64_t *avail, int64_t *used);
/* The ETag of a resource ("" when missing; folders have none). */
void dav_etag_of(dav_req *r, const char *path, char out[72]);
/* Join a store path and a child name into the request arena. */
const char *dav_join(dav_req *r, const char *dir, const char *name);

#endif
