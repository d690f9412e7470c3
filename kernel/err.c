/*
 * err.c — the one table that maps MB_E* codes to HTTP statuses, FTP replies and titles,
 * so that HTTP, FTP and tasks report a failure the same way (STYLE.md: errors).
 */
#include "kernel.h"
#include <stdio.h>
#include <string.h>

static const struct {
    int code, http, ftp;
    const char *name, *title;
} table[] = {
    {MB_OK, 200, 200, "ok", "OK"},
    {MB_EINVAL, 400, 553, "invalid", "Bad request"}, /* FTP: what the kernel refuses as invalid is a name or path */
    {MB_EAUTH, 401, 530, "unauthenticated", "Authentication required"},
    {MB_EPERM, 403, 550, "forbidden", "Forbidden"},
    {MB_ENOENT, 404, 550, "not_found", "Not found"},
    {MB_EEXIST, 409, 553, "exists", "Already exists"},
    {MB_ECONFLICT, 409, 553, "conflict", "Conflict"},
    {MB_ETOOBIG, 413, 552, "too_large", "Payload too large"},
    {MB_EQUOTA, 507, 552, "quota", "Insufficient storage"},
    {MB_ERANGE, 416, 554, "range", "Range not satisfiable"},
    {MB_EPRECOND, 412, 550, "precondition", "Precondition failed"},
    {MB_EGONE, 410, 550, "gone", "Gone"},
    {MB_ETHROTTLE, 429, 421, "throttled", "Too many requests"},
    {MB_EBUSY, 503, 450, "busy", "Service unavailable"},
    {MB_EUNSUPP, 415, 502, "unsupported", "Unsupported"},
    {MB_EINTEGRITY, 500, 451, "integrity", "Stored data failed verification"},
    {MB_EIO, 500, 451, "io", "Storage error"},
    {MB_ENOMEM, 500, 451, "nomem", "Out of memory"},
    {MB_ECANCELED, 409, 426, "cancelled", "Cancelled"},
    {MB_EAGAIN, 503, 450, "again", "Try again later"},
    {MB_EMETHOD, 405, 502, "method", "Method not allowed"},
    {MB_EINTERNAL, 500, 451, "internal", "Internal error"},
};

static int find(int code)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].code == code)
            return (int)i;
    return (int)(sizeof table / sizeof table[0]) - 1; /* MB_EINTERNAL */
}

int err_http_status(int code) { return table[find(code)].http; }
int err_ftp_reply(int code) { return table[find(code)].ftp; }
const char *err_title(int code) { return table[find(code)].title; }
const char *err_name(int code) { return table[find(code)].name; }

int err_code(const char *name)
{
    for (size_t i = 0; name && i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].name, name))
            return table[i].code;
    return MB_EINTERNAL;
}

int err_set(mb_err *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}
