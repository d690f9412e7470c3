/*
 * log.c — one line per message on stderr: time, level, who, text.
 * Thread-safe: each line is formatted into a local buffer and written with one write(2),
 * so lines from different threads never interleave. Secrets are never passed here.
 *
 * log_format: json (mbyte.yaml) writes one JSON object per line instead, for log shippers:
 * {"time","level","who","msg"} plus "request_id" while an HTTP request is served on the
 * thread (accesslog.c sets it per thread); in text lines that id ends the line as
 * "(request <id>)".
 */
#include "kernel.h"
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int min_level = LOG_INFO;
static atomic_bool json_lines;
static _Thread_local char request_id[65];

void log_init(int level) { min_level = level; }
void log_set_json(bool on) { atomic_store(&json_lines, on); }
void log_request_set(const char *id) { snprintf(request_id, sizeof request_id, "%s", id ? id : ""); }
const char *log_request_get(void) { return request_id; }

/* The message as a JSON string body: quotes, backslashes and control characters escaped. */
static size_t json_text(char *out, size_t room, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 7 < room; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            out[o++] = '\\', out[o++] = (char)c;
        else if (c < 0x20)
            o += (size_t)snprintf(out + o, room - o, "\\u%04x", c);
        else
            out[o++] = (char)c;
    }
    return o;
}

void log_vmsg(int level, const char *who, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    if (level < 0 || level > LOG_ERROR)
        level = LOG_ERROR;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     names[level], who ? who : "kernel");
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    /* No control characters from user input may forge log lines. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20)
            line[i] = ' ';
    char out[4400];
    if (atomic_load(&json_lines)) {
        size_t o = (size_t)snprintf(out, sizeof out, "{\"time\":\"%.24s\",\"level\":\"%s\",\"who\":\"", line,
                                    names[level]);
        const char *w = who ? who : "kernel";
        o += json_text(out + o, sizeof out - o - 200, w, strlen(w));
        o += (size_t)snprintf(out + o, sizeof out - o, "\",\"msg\":\"");
        o += json_text(out + o, sizeof out - o - 120, line + n, len - (size_t)n);
        o += (size_t)snprintf(out + o, sizeof out - o, request_id[0] ? "\",\"request_id\":\"%s\"}\n" : "\"}\n",
                              request_id);
        len = o < sizeof out ? o : sizeof out - 1;
    } else {
        memcpy(out, line, len);
        if (request_id[0])
            len += (size_t)snprintf(out + len, sizeof out - len, " (request %s)", request_id);
        out[len++] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, out, len);
    (void)w;
}

void log_msg(int level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, who, fmt, ap);
    va_end(ap);
}
