/*
 * log.c — one line per message on stderr: time, level, who, text.
 * Thread-safe: each line is formatted into a local buffer and written with one write(2),
 * so lines from different threads never interleave. Secrets are never passed here.
 */
#include "kernel.h"
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int min_level = LOG_INFO;

void log_init(int level) { min_level = level; }

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
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_msg(int level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, who, fmt, ap);
    va_end(ap);
}
