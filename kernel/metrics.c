/*
 * metrics.c — the server's counters for the Prometheus page (GET /metrics, docs/operations.md
 * "Metrics"); metrics_http.c adds the gauges it pulls from their owners and serves the page.
 *
 * This file is in the base layer (docs/architecture.md): db.c, task.c and the doors bump its
 * counters, so it calls nothing above it.
 *
 * Counters live here as atomics and are bumped on the request path with no lock: a request
 * ends (accesslog.c) by adding itself to one series of (route pattern, method, status), whose
 * latency buckets the scrape sums into one histogram per (route, method). Series are kept in
 * an insert-only open-addressing table: a new one is published with one compare-and-swap and
 * never removed, so readers need no lock either. A table that is three quarters full sends
 * new combinations to one "other" series: a client cannot grow it without bound (routes are
 * patterns, methods outside the known list are "OTHER"). Modules report through api->metric_add.
 *
 * Threads: counters from any thread; rendering on the HTTP thread of the scrape.
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#define TABLE_SIZE 1024

/* Request latency buckets, seconds (in microseconds to compare with integers). */
static const double lat_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NLAT (sizeof lat_le / sizeof lat_le[0])
/* Writes that shared one fsync of the group commit. */
static const int gc_le[] = {1, 2, 4, 8, 16, 32, 64, 128};
#define NGC (sizeof gc_le / sizeof gc_le[0])

typedef struct series {
    char route[128];
    char method[12];
    int status;
    _Atomic uint64_t count, sum_us;
    _Atomic uint64_t bucket[NLAT]; /* not cumulative: the scrape adds them up */
} series;

static _Atomic(series *) table[TABLE_SIZE];
static atomic_int nseries;
static series other = {.route = "other", .method = "OTHER"};

static _Atomic uint64_t bytes[2][2]; /* [http, ftp][in, out] */
static _Atomic int64_t uploads, ftp_sessions;
static _Atomic uint64_t login_failures, task_failures;
static _Atomic uint64_t gc_count, gc_sum, gc_bucket[NGC + 1];

/* ------------------------------------------------------------ counting --- */

static uint64_t mix(const char *s, uint64_t h)
{
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static series *series_of(const char *route, const char *method, int status)
{
    uint64_t h = mix(method, mix(route, 14695981039346656037ull)) ^ (uint64_t)status * 0x9e3779b97f4a7c15ull;
    series *fresh = NULL;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        _Atomic(series *) *slot = &table[(h + i) % TABLE_SIZE];
        series *s = atomic_load(slot);
        if (!s) {
            if (atomic_load(&nseries) >= TABLE_SIZE * 3 / 4)
                break;
            if (!fresh) {
                fresh = xcalloc(1, sizeof *fresh);
                snprintf(fresh->route, sizeof fresh->route, "%s", route);
                snprintf(fresh->method, sizeof fresh->method, "%s", method);
                fresh->status = status;
            }
            if (atomic_compare_exchange_strong(slot, &s, fresh)) {
                atomic_fetch_add(&nseries, 1);
                return fresh;
            }
        }
        if (s->status == status && !strcmp(s->method, method) && !strncmp(s->route, route, sizeof s->route - 1))
            return free(fresh), s;
    }
    free(fresh);
    return &other;
}

void metrics_http_request(const char *route, const char *method, int status, int64_t usec, uint64_t in,
                          uint64_t out)
{
    static const char *known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
                                  "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", NULL};
    const char *m = "OTHER";
    for (const char **k = known; *k; k++)
        if (!strcmp(*k, method))
            m = *k;
    series *s = series_of(route, m, status);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (uint64_t)(usec > 0 ? usec : 0), memory_order_relaxed);
    for (size_t i = 0; i < NLAT; i++)
        if ((double)usec <= lat_le[i] * 1e6) {
            atomic_fetch_add_explicit(&s->bucket[i], 1, memory_order_relaxed);
            break;
        }
    metrics_bytes(METRICS_HTTP, in, out);
}

void metrics_bytes(int proto, uint64_t in, uint64_t out)
{
    atomic_fetch_add_explicit(&bytes[proto][0], in, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes[proto][1], out, memory_order_relaxed);
}

void metrics_upload(int delta) { atomic_fetch_add(&uploads, delta); }
void metrics_login_failed(void) { atomic_fetch_add(&login_failures, 1); }
void metrics_task_failed(void) { atomic_fetch_add(&task_failures, 1); }

void metrics_group_commit(uint64_t writes)
{
    if (!writes)
        return;
    atomic_fetch_add_explicit(&gc_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&gc_sum, writes, memory_order_relaxed);
    size_t i = 0;
    while (i < NGC && writes > (uint64_t)gc_le[i])
        i++;
    atomic_fetch_add_explicit(&gc_bucket[i], 1, memory_order_relaxed);
}

/* api->metric_add: what modules report (abi/mbyte.h MB_METRIC_*). */
void metrics_module_add(int metric, int64_t delta)
{
    switch (metric) {
    case MB_METRIC_FTP_SESSIONS: atomic_fetch_add(&ftp_sessions, delta); break;
    case MB_METRIC_FTP_BYTES_IN: metrics_bytes(METRICS_FTP, delta > 0 ? (uint64_t)delta : 0, 0); break;
    case MB_METRIC_FTP_BYTES_OUT: metrics_bytes(METRICS_FTP, 0, delta > 0 ? (uint64_t)delta : 0); break;
    default: break; /* a newer module's metric this kernel does not know: not an error */
    }
}

/* ----------------------------------------------------------- rendering --- */

/* A label value: backslash, double quote and newline escaped (the exposition format). */
void metrics_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f), fputc(*v, f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

void metrics_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int by_route(const void *a, const void *b)
{
    const series *x = *(series *const *)a, *y = *(series *const *)b;
    int c = strcmp(x->route, y->route);
    if (!c)
        c = strcmp(x->method, y->method);
    return c ? c : x->status - y->status;
}

static void render_http(FILE *f)
{
    series *list[TABLE_SIZE + 1];
    size_t n = 0;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        series *s = atomic_load(&table[i]);
        if (s)
            list[n++] = s;
    }
    if (atomic_load(&other.count))
        list[n++] = &other;
    qsort(list, n, sizeof list[0], by_route);
    metrics_head(f, "mbyte_http_requests_total", "counter", "HTTP requests answered, by route pattern, method and status.");
    for (size_t i = 0; i < n; i++) {
        fputs("mbyte_http_requests_total{route=\"", f);
        metrics_label(f, list[i]->route);
        fprintf(f, "\",method=\"%s\",status=\"%d\"} %llu\n", list[i]->method, list[i]->status,
                (unsigned long long)atomic_load(&list[i]->count));
    }
    metrics_head(f, "mbyte_http_request_duration_seconds", "histogram",
         "Time from a request's first byte to its answer's last, by route pattern and method.");
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t b[NLAT] = {0}, count = 0, sum = 0;
        for (; j < n && !strcmp(list[j]->route, list[i]->route) && !strcmp(list[j]->method, list[i]->method); j++) {
            for (size_t k = 0; k < NLAT; k++)
                b[k] += atomic_load(&list[j]->bucket[k]);
            count += atomic_load(&list[j]->count);
            sum += atomic_load(&list[j]->sum_us);
        }
        uint64_t cum = 0;
        for (size_t k = 0; k <= NLAT; k++) {
            cum += k < NLAT ? b[k] : 0;
            fputs("mbyte_http_request_duration_seconds_bucket{route=\"", f);
            metrics_label(f, list[i]->route);
            if (k < NLAT)
                fprintf(f, "\",method=\"%s\",le=\"%g\"} %llu\n", list[i]->method, lat_le[k], (unsigned long long)cum);
            else
                fprintf(f, "\",method=\"%s\",le=\"+Inf\"} %llu\n", list[i]->method, (unsigned long long)count);
        }
        fputs("mbyte_http_request_duration_seconds_sum{route=\"", f);
        metrics_label(f, list[i]->route);
        fprintf(f, "\",method=\"%s\"} %.6f\n", list[i]->method, (double)sum / 1e6);
        fputs("mbyte_http_request_duration_seconds_count{route=\"", f);
        metrics_label(f, list[i]->route);
        fprintf(f, "\",method=\"%s\"} %llu\n", list[i]->method, (unsigned long long)count);
        i = j;
    }
}

static void render_traffic(FILE *f)
{
    static const char *proto[] = {"http", "ftp"};
    metrics_head(f, "mbyte_received_bytes_total", "counter", "Body bytes received from clients, by protocol.");
    for (int p = 0; p < 2; p++)
        fprintf(f, "mbyte_received_bytes_total{protocol=\"%s\"} %llu\n", proto[p],
                (unsigned long long)atomic_load(&bytes[p][0]));
    metrics_head(f, "mbyte_sent_bytes_total", "counter", "Body bytes sent to clients, by protocol.");
    for (int p = 0; p < 2; p++)
        fprintf(f, "mbyte_sent_bytes_total{protocol=\"%s\"} %llu\n", proto[p],
                (unsigned long long)atomic_load(&bytes[p][1]));
    metrics_head(f, "mbyte_http_uploads_in_flight", "gauge", "HTTP uploads whose body is being received now.");
    fprintf(f, "mbyte_http_uploads_in_flight %lld\n", (long long)atomic_load(&uploads));
    metrics_head(f, "mbyte_ftp_sessions", "gauge", "FTP control connections open now.");
    fprintf(f, "mbyte_ftp_sessions %lld\n", (long long)atomic_load(&ftp_sessions));
    metrics_head(f, "mbyte_login_failures_total", "counter", "Failed password logins, every door (HTTP, FTP).");
    fprintf(f, "mbyte_login_failures_total %llu\n", (unsigned long long)atomic_load(&login_failures));
}

/* The counters' part of the page: build info, requests, traffic, failures, group commits. */
void metrics_render_counters(FILE *f)
{
    metrics_head(f, "mbyte_build_info", "gauge", "The running version, always 1.");
    fprintf(f, "mbyte_build_info{version=\"%s\",abi=\"%d.%d\"} 1\n", MBYTE_VERSION, MB_ABI_MAJOR, MB_ABI_MINOR);
    render_http(f);
    render_traffic(f);
    metrics_head(f, "mbyte_task_failures_total", "counter", "Tasks that failed for good (every attempt spent).");
    fprintf(f, "mbyte_task_failures_total %llu\n", (unsigned long long)atomic_load(&task_failures));
    metrics_head(f, "mbyte_group_commit_writes", "histogram", "Writes made durable by one fsync of the group commit.");
    uint64_t cum = 0;
    for (size_t i = 0; i < NGC; i++) {
        cum += atomic_load(&gc_bucket[i]);
        fprintf(f, "mbyte_group_commit_writes_bucket{le=\"%d\"} %llu\n", gc_le[i], (unsigned long long)cum);
    }
    /* +Inf from the same reads as the buckets, so it is never below the last one. */
    cum += atomic_load(&gc_bucket[NGC]);
    fprintf(f, "mbyte_group_commit_writes_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    fprintf(f, "mbyte_group_commit_writes_sum %llu\n", (unsigned long long)atomic_load(&gc_sum));
    fprintf(f, "mbyte_group_commit_writes_count %llu\n", (unsigned long long)cum);
}

/* At shutdown: forget every series. */
void metrics_reset(void)
{
    for (size_t i = 0; i < TABLE_SIZE; i++)
        free(atomic_exchange(&table[i], NULL));
    atomic_store(&nseries, 0);
}

/* "host:port" or "[v6]:port" into a socket address; 0 or MB_EINVAL. */
int metrics_parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    uint64_t port;
    if (!colon || colon == s || !parse_u64(colon + 1, &port) || port == 0 || port > 65535)
        return MB_EINVAL;
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl > 2 && s[hl - 1] == ']')
        s++, hl -= 2;
    if (hl >= sizeof host)
        return MB_EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
    } else
        return MB_EINVAL;
    return 0;
}

int metrics_cfg_check(const char *file, const json_t *root, const json_t *lines, mb_err *err)
{
    const json_t *v = json_object_get(root, "metrics_listen");
    struct sockaddr_storage ss;
    if (v && !json_is_null(v) && !(json_is_string(v) && !json_string_length(v)) &&
        (!json_is_string(v) || metrics_parse_addr(json_string_value(v), &ss)))
        return err_set(err, MB_EINVAL, "%s:%lld: metrics_listen must be ip:port (e.g. 127.0.0.1:9464)", file,
                       (long long)json_integer_value(json_object_get(lines, "metrics_listen")));
    return 0;
}
