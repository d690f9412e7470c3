/*
 * dav_copy.c — COPY and MOVE from one store of the caller to another (RFC 4918 9.8, 9.9).
 *
 * The kernel's file_copy and file_move work inside one store (a copy shares chunks, a move
 * renames); between stores there is no such call, so the bytes go through the kernel's one
 * read path and one write path, as a client copying them would: file_open/file_read from
 * the source, file_write_begin (with the source's size and SHA-256, verified at commit) into
 * the destination, so the destination store's quota, versions, events and filters apply and
 * nothing half-written is ever visible. A folder is copied parents first (its listing sorted
 * by path). MOVE deletes the source (to its store's trash when the trash module is loaded)
 * only once every member was copied; a failure on the way leaves the source whole and
 * answers the error (what was already copied stays, as RFC 4918 9.8.8 allows). Dead
 * properties follow; only the current version of each file is copied.
 *
 * Threads: an HTTP worker, for the length of the copy (bounded by the source's size).
 */
#include "dav.h"
#include <stdlib.h>
#include <string.h>

#define COPY_BUF (256 * 1024)

static int copy_file(dav_req *r, uint64_t dsid, const char *from, const char *to, char *buf, mb_err *err)
{
    const mb_api *api = r->api;
    mb_file_reader *rd = NULL;
    json_t *info = NULL;
    int rc = api->file_open(&r->user, r->sid, from, 0, &rd, &info, err);
    if (rc)
        return rc;
    int64_t size = json_integer_value(json_object_get(info, "size"));
    const char *sha = json_string_value(json_object_get(info, "sha256"));
    mb_file_writer *w = NULL;
    rc = api->file_write_begin(&r->user, dsid, to, size, sha, 0, &w, err);
    for (uint64_t off = 0; !rc;) {
        int64_t n = api->file_read(rd, off, buf, COPY_BUF, err);
        if (n < 0)
            rc = (int)n;
        else if (n == 0)
            break;
        else {
            rc = api->file_write_data(w, buf, (size_t)n, err);
            off += (uint64_t)n;
        }
    }
    if (w)
        rc = rc ? (api->file_write_abort(w), rc) : api->file_write_commit(w, NULL, NULL, err);
    api->file_close(rd);
    json_decref(info);
    return rc;
}

typedef struct tree_copy {
    dav_req *r;
    uint64_t dsid;
    const char *from, *to;
    char *buf;
    mb_err *err;
    bool failed; /* an entry failed (err says why), not the walk */
} tree_copy;

/* One entry of the walk (a folder comes before what it holds): made at the same place under `to`. */
static int copy_entry(const json_t *en, void *ud)
{
    tree_copy *c = ud;
    const char *rel = json_string_value(json_object_get(en, "relpath"));
    if (!rel || !*rel)
        return 0;
    char *dst = NULL, *src = NULL; /* not the request's arena: it would grow with the folder */
    if (asprintf(&dst, "%s%s%s", c->to, *c->to ? "/" : "", rel) < 0 ||
        asprintf(&src, "%s%s%s", c->from, *c->from ? "/" : "", rel) < 0)
        abort();
    int rc = strcmp(json_string_value(json_object_get(en, "type")) ?: "", "file")
                 ? c->r->api->folder_create(&c->r->user, c->dsid, dst, 0, NULL, c->err)
                 : copy_file(c->r, c->dsid, src, dst, c->buf, c->err);
    free(dst), free(src);
    c->failed = rc != 0;
    return rc;
}

/* The folder `from` of r's store, with everything under it, to `to` of store dsid: walked a page
 * at a time, so a folder of any size is copied in bounded memory. */
static int copy_tree(dav_req *r, uint64_t dsid, const char *from, const char *to, char *buf, mb_err *err)
{
    int rc = r->api->folder_create(&r->user, dsid, to, 0, NULL, err);
    tree_copy c = {r, dsid, from, to, buf, err, false};
    mb_err we = {0};
    if (!rc && (rc = r->api->folder_walk(&r->user, r->sid, from, copy_entry, &c, &we)) && !c.failed)
        *err = we; /* the walk's own failure: an entry's filled err itself */
    return rc;
}

int dav_copy_across(dav_req *r, uint64_t dsid, const char *to, bool folder, mb_err *err)
{
    char *buf = malloc(COPY_BUF);
    if (!buf)
        return r->api->err_set(err, MB_ENOMEM, "out of memory");
    int rc = folder ? copy_tree(r, dsid, r->path, to, buf, err) : copy_file(r, dsid, r->path, to, buf, err);
    free(buf);
    return rc;
}
