/*
 * share.c — kernel support for the sharing, audit and webhooks modules (issue 8, ABI 1.2):
 *   - the client address of the HTTP request a thread is serving, so every event emitted
 *     while serving it carries "ip" (hook_emit_batch adds it; the audit log needs it);
 *   - the mb_api adapters reply_file and req_body;
 *   - share_redact: link tokens are secrets, so logged paths show them as "***".
 *
 * Threads: share_ip_set/share_ip use a thread-local copy; libmicrohttpd keeps one
 * connection on one thread while a callback runs, and other threads (loop, workers) never
 * set it, so events they emit carry no address. Nothing here is shared between threads.
 */
#include "fs.h"
#include <stdio.h>
#include <string.h>

static _Thread_local char tls_ip[64];

void share_ip_set(const char *ip) { snprintf(tls_ip, sizeof tls_ip, "%s", ip ? ip : ""); }

const char *share_ip(void) { return tls_ip[0] ? tls_ip : NULL; }

int share_reply_file(mb_req *req, const mb_user *u, uint64_t sid, const char *path, mb_err *err)
{
    return files_reply_get(req, u, sid, path ? path : "", err);
}

int share_req_body(mb_req *req, const void **data, size_t *len)
{
    *data = http_req_body(req, len);
    return 0;
}

const char *share_redact(const char *path, char *buf, size_t n)
{
    static const char *const prefixes[] = {"/api/v1/public/", "/s/"};
    for (size_t i = 0; path && i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t pl = strlen(prefixes[i]);
        if (!strncmp(path, prefixes[i], pl)) {
            const char *rest = strchr(path + pl, '/');
            snprintf(buf, n, "%s***%s", prefixes[i], rest ? rest : "");
            return buf;
        }
    }
    return path;
}
