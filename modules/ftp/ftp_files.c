/*
 * modules/ftp/ftp_files.c — the commands that act on files and folders: RETR, STOR/APPE/STOU
 * (with REST), LIST/NLST/MLSD, and the metadata commands CWD, SIZE, MDTM, DELE, RMD, MKD,
 * RNFR/RNTO. Each resolves its path in the session's tree (sess_resolve) and calls the
 * kernel's file API as the logged-in user, so every check and filter applies as over HTTP;
 * a refusal's reply comes from the kernel's one error table.
 *
 * Threads: the loop thread. Transfers only open the file here; ftp_data.c and ftp_io.c
 * move the bytes.
 */
#include "ftp.h"
#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ transfers --- */

void files_list(sess *s, const char *arg, int kind)
{
    mb_err e = {0};
    struct evbuffer *b = evbuffer_new();
    int rc = list_build(s, arg, kind, b, true, &e);
    if (rc) {
        evbuffer_free(b);
        reply_err(s, &e);
        return;
    }
    xfer_start(s, X_LIST, b, "file list");
}

void files_retr(sess *s, const char *arg)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (sess_resolve(s, arg, vp, &sid, &rest, &e) == 0 && (!sid || !*rest))
        api->err_set(&e, MB_EPERM, "%s is a folder", vp);
    json_t *info = NULL;
    if (e.code || api->file_open(&s->user, sid, rest, 0, &s->rd, &info, &e)) {
        s->rest = 0;
        reply_err(s, &e);
        return;
    }
    s->rsize = (uint64_t)jint(info, "size");
    json_decref(info);
    if (s->rest > s->rsize) {
        api->file_close(s->rd);
        s->rd = NULL;
        s->rest = 0;
        reply(s, api->err_ftp_reply(MB_ERANGE), "REST offset is past the end of the file");
        return;
    }
    s->roff = s->rest;
    s->rcopied = false;
    char what[FTPU_PATH_MAX + 64];
    snprintf(what, sizeof what, "%s (%llu bytes)", vp, (unsigned long long)s->rsize);
    xfer_start(s, X_RETR, NULL, what);
}

/* STOR, APPE, STOU: a new version through the kernel's writer; with an offset, the old
 * bytes up to it are copied in first (REST+STOR, APPE). */
void files_stor(sess *s, const char *arg, int mode)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1], uniq[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (mode == 'U') {
        unsigned char r[6];
        randombytes_buf(r, sizeof r);
        snprintf(uniq, sizeof uniq, "%s%sftp-%02x%02x%02x%02x%02x%02x", arg && *arg ? arg : "",
                 arg && *arg ? "." : "", r[0], r[1], r[2], r[3], r[4], r[5]);
        arg = uniq;
    }
    if (sess_resolve(s, arg, vp, &sid, &rest, &e) == 0 && (!sid || !*rest))
        api->err_set(&e, MB_EPERM, "cannot write a file at %s", vp);
    uint64_t off = s->rest;
    s->rest = 0;
    if (!e.code && (mode == 'A' || off > 0)) {
        json_t *info = NULL;
        int rc = api->file_open(&s->user, sid, rest, 0, &s->old, &info, &e);
        if (rc == MB_ENOENT && (mode == 'A' || off == 0)) {
            e.code = 0;
        } else if (rc == 0) {
            uint64_t size = (uint64_t)jint(info, "size");
            if (mode == 'A')
                off = size;
            if (off > size)
                api->err_set(&e, MB_ERANGE, "REST offset %llu is past the end of the file (%llu bytes)",
                             (unsigned long long)off, (unsigned long long)size);
            json_decref(info);
        }
        if (off == 0 && s->old) {
            api->file_close(s->old);
            s->old = NULL;
        }
    }
    if (!e.code)
        api->file_write_begin(&s->user, sid, rest, -1, NULL, mode == 'U' ? MB_FS_NO_OVERWRITE : 0, &s->wr, &e);
    if (e.code) {
        if (s->old) {
            api->file_close(s->old);
            s->old = NULL;
        }
        reply_err(s, &e);
        return;
    }
    s->copy_off = 0;
    s->copy_end = off;
    /* No other reply between the 150 and the 226: a client takes the first 2xx as the end. */
    char label[FTPU_PATH_MAX + 8];
    snprintf(label, sizeof label, "%s%s", mode == 'U' ? "FILE: " : "", vp);
    xfer_start(s, X_STOR, NULL, label);
}

/* ------------------------------------------------------- path commands --- */

/* Commands that name a path and change or read metadata. */
void files_path(sess *s, const char *cmd, const char *arg)
{
    const mb_api *api = s->srv->api;
    mb_err e = {0};
    char vp[FTPU_PATH_MAX + 1];
    const char *rest;
    uint64_t sid;
    if (!arg || !*arg) {
        reply(s, 501, "%s needs a path", cmd);
        return;
    }
    if (sess_resolve(s, arg, vp, &sid, &rest, &e)) {
        char store[1024];
        if (!strcmp(cmd, "MKD") && e.code == MB_ENOENT && !ftpu_split(vp, store, sizeof store, &rest) && !*rest)
            reply(s, 550, "Stores are created through the web page or the API (POST /api/v1/stores), not over FTP");
        else
            reply_err(s, &e);
        return;
    }
    bool top = !sid || !*rest; /* "/" or a store itself */
    if (!strcmp(cmd, "CWD")) {
        json_t *info = NULL;
        if (!top && api->file_stat(&s->user, sid, rest, &info, &e)) {
            reply_err(s, &e);
            return;
        }
        bool folder = top || !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
        json_decref(info);
        if (!folder) {
            reply(s, 550, "%s is not a folder", vp);
            return;
        }
        snprintf(s->cwd, sizeof s->cwd, "%s", vp);
        reply(s, 250, "Directory changed to %s", vp);
    } else if (!strcmp(cmd, "SIZE") || !strcmp(cmd, "MDTM")) {
        json_t *info = NULL;
        if (top || api->file_stat(&s->user, sid, rest, &info, &e)) {
            if (top)
                api->err_set(&e, MB_ENOENT, "%s is a folder", vp);
            reply_err(s, &e);
            return;
        }
        if (strcmp(json_string_value(json_object_get(info, "type")) ?: "", "file")) {
            reply(s, 550, "%s is not a file", vp);
        } else if (cmd[0] == 'S') {
            reply(s, 213, "%lld", (long long)jint(info, "size"));
        } else {
            char tb[32];
            list_time(jint(info, "mtime"), tb, sizeof tb, true);
            reply(s, 213, "%s", tb);
        }
        json_decref(info);
    } else if (!strcmp(cmd, "DELE") || !strcmp(cmd, "RMD")) {
        if (top) {
            reply(s, 550, "Stores are deleted in the web page, not over FTP");
            return;
        }
        json_t *info = NULL;
        if (api->file_stat(&s->user, sid, rest, &info, &e)) {
            reply_err(s, &e);
            return;
        }
        bool folder = !strcmp(json_string_value(json_object_get(info, "type")) ?: "", "folder");
        json_decref(info);
        if (folder != (cmd[0] == 'R')) {
            reply(s, 550, "%s is %s", vp, folder ? "a folder; use RMD" : "a file; use DELE");
            return;
        }
        if (folder) {
            json_t *l = NULL;
            /* one entry tells empty from not: never the whole folder */
            if (api->folder_page(&s->user, sid, rest, NULL, 1, &l, &e)) {
                reply_err(s, &e);
                return;
            }
            size_t n = json_array_size(json_object_get(l, "entries"));
            json_decref(l);
            if (n) {
                reply(s, 550, "Folder %s is not empty", vp);
                return;
            }
        }
        if (api->file_delete(&s->user, sid, rest, 0, &e))
            reply_err(s, &e);
        else
            reply(s, 250, "%s deleted", vp);
    } else if (!strcmp(cmd, "MKD")) {
        if (top) {
            reply(s, 550, "%s exists; stores are created through the web page or the API", vp);
            return;
        }
        if (api->folder_create(&s->user, sid, rest, 0, NULL, &e)) {
            /* An existing name is 550, as vsftpd and ProFTPD answer: rclone (and others) take
             * only 550 as "already there" and fail the sync on the kernel's 553. */
            if (e.code == MB_EEXIST)
                reply(s, 550, "%s", e.msg[0] ? e.msg : "already exists");
            else
                reply_err(s, &e);
            return;
        }
        char q[FTPU_PATH_MAX * 2 + 4];
        size_t o = 0;
        for (const char *p = vp; *p && o + 3 < sizeof q; p++) { /* RFC 959: "" doubles a quote */
            if (*p == '"')
                q[o++] = '"';
            q[o++] = *p;
        }
        q[o] = 0;
        reply(s, 257, "\"%s\" created", q);
    } else if (!strcmp(cmd, "RNFR")) {
        json_t *info = NULL;
        if (top || api->file_stat(&s->user, sid, rest, &info, &e)) {
            if (top)
                api->err_set(&e, MB_EPERM, "stores are renamed in the web page");
            reply_err(s, &e);
            return;
        }
        json_decref(info);
        snprintf(s->rnfr, sizeof s->rnfr, "%s", vp);
        reply(s, 350, "Ready for RNTO");
    } else if (!strcmp(cmd, "RNTO")) {
        if (!s->rnfr[0]) {
            reply(s, 503, "Send RNFR first");
            return;
        }
        char from[FTPU_PATH_MAX + 1];
        const char *frest;
        uint64_t fsid;
        snprintf(from, sizeof from, "%s", s->rnfr);
        s->rnfr[0] = 0;
        if (sess_resolve(s, from, vp, &fsid, &frest, &e)) {
            reply_err(s, &e);
            return;
        }
        char fromrest[FTPU_PATH_MAX + 1];
        snprintf(fromrest, sizeof fromrest, "%s", frest);
        if (sess_resolve(s, arg, vp, &sid, &rest, &e)) {
            reply_err(s, &e);
            return;
        }
        if (!sid || !*rest || sid != fsid) {
            reply(s, 553, "Renames stay inside one store");
            return;
        }
        if (api->file_move(&s->user, sid, fromrest, rest, 0, NULL, &e))
            reply_err(s, &e);
        else
            reply(s, 250, "Renamed");
    }
}

