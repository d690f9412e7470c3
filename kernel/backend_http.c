/*
 * backend_http.c — GET /api/v1/admin/backends (issue 21): every blob backend with its state,
 * what it holds and how many stores are placed on it (backend.c's backend_status), for the
 * administrator. Admin only: names, types and sizes say how the server is built.
 *
 * Threads: an HTTP worker; the listing blocks on each backend (a walk of <data>/chunks, S3
 * ListObjectsV2 pages), never the loop thread.
 */
#include "fs.h"

/* GET /api/v1/admin/backends -> [{"name","type","state","objects","bytes","queued","stores"}] */
static int h_backends(mb_req *req, void *st, mb_err *err)
{
    (void)st, (void)err;
    return http_reply_json(req, 200, backend_status());
}

const kroute backend_routes[] = {
    {"GET", "/api/v1/admin/backends", MB_ROLE_ADMIN, h_backends, NULL},
    {NULL},
};
