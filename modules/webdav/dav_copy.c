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

static int by_relpath(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "relpath"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "relpath"));
    return strcmp(x ? x : "", y ? y : "");
}

/* The folder `from` of r's store, with everything under it, to `to` of store dsid. */
static int copy_tree(dav_req *r, uint64_t dsid, const char *from, const char *to, char *buf, mb_err *err)
{
    const mb_api *api = r->api;
    int rc = api->folder_create(&r->user, dsid, to, 0, NULL, err);
    json_t *list = NULL;
    if (rc || (rc = api->folder_list(&r->user, r->sid, from, true, &list, err)))
        return rc;
    json_t *entries = json_object_get(list, "entries");
    size_t n = json_array_size(entries);
    json_t **v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        abort();
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(entries, i);
    qsort(v, n, sizeof *v, by_relpath); /* "a" before "a/b": parents first */
    for (size_t i = 0; i < n && !rc; i++) {
        const char *rel = json_string_value(json_object_get(v[i], "relpath"));
        if (!rel || !*rel)
            continue;
        const char *dst = dav_join(r, to, rel), *src = dav_join(r, from, rel);
        if (strcmp(json_string_value(json_object_get(v[i], "type")) ?: "", "file"))
            rc = api->folder_create(&r->user, dsid, dst, 0, NULL, err);
        else
            rc = copy_file(r, dsid, src, dst, buf, err);
    }
    free(v);
    json_decref(list);
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
