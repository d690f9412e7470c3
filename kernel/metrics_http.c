/*
 * metrics_http.c — the Prometheus page (GET /metrics, docs/operations.md "Metrics"): the
 * counters of metrics.c plus the gauges pulled from their owners when a scraper asks: module
 * states (modmgr_list), the task queue (kq/ keys), the chunk store (c/ refcount records: a scan,
 * so one that took longer than SCAN_CHEAP_MS is reused for CHUNK_SCAN_S seconds), LevelDB's size
 * (its files) and compaction statistics (its "leveldb.stats" property).
 *
 * The page is served at /metrics to admins through the main HTTP door, and without
 * credentials on metrics_listen (mbyte.yaml) by a small libmicrohttpd daemon of its own,
 * meant for a loopback or otherwise private address that only the scraper reaches.
 *
 * Threads: rendering on the HTTP thread of the scrape. The chunk scan's cache is under chunk_mu.
 */
#include "kernel.h"
#include <dirent.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHUNK_SCAN_S 30
#define SCAN_CHEAP_MS 50
#define CTYPE "text/plain; version=0.0.4; charset=utf-8"

static pthread_mutex_t chunk_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t chunk_at = -1, chunk_took;
static uint64_t chunk_n, chunk_bytes;

static struct MHD_Daemon *scrape_daemon;

static void render_tasks_modules(FILE *f)
{
    uint64_t depth = 0;
    db_iter *it = db_iter_prefix("kq/", 3);
    while (db_iter_next(it))
        depth++;
    db_iter_free(it);
    metrics_head(f, "mbyte_task_queue_depth", "gauge", "Tasks not finished yet (queued or running).");
    fprintf(f, "mbyte_task_queue_depth %llu\n", (unsigned long long)depth);
    metrics_head(f, "mbyte_http_connections", "gauge", "HTTP connections open now (the scrape's own included).");
    fprintf(f, "mbyte_http_connections %d\n", conn_open());
    json_t *mods = modmgr_list();
    metrics_head(f, "mbyte_module_state", "gauge", "1 for each module's current state (active, draining, cold, available).");
    size_t i;
    json_t *m;
    json_array_foreach(mods, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *state = json_string_value(json_object_get(m, "state"));
        if (!name || !state)
            continue;
        fputs("mbyte_module_state{module=\"", f);
        metrics_label(f, name);
        fputs("\",state=\"", f);
        metrics_label(f, state);
        fputs("\"} 1\n", f);
    }
    json_decref(mods);
}

static void chunk_scan(uint64_t *n, uint64_t *total)
{
    pthread_mutex_lock(&chunk_mu);
    int64_t now = now_mono_ms();
    if (chunk_at < 0 || chunk_took < SCAN_CHEAP_MS || now - chunk_at > CHUNK_SCAN_S * 1000) {
        chunk_n = chunk_bytes = 0;
        db_iter *it = db_iter_prefix("c/", 2);
        while (db_iter_next(it)) {
            size_t vl;
            const char *v = db_iter_val(it, &vl);
            json_t *rec = json_loadb(v, vl, 0, NULL);
            chunk_n++;
            chunk_bytes += (uint64_t)json_integer_value(json_object_get(rec, "size"));
            json_decref(rec);
        }
        db_iter_free(it);
        chunk_at = now;
        chunk_took = now_mono_ms() - now;
    }
    *n = chunk_n;
    *total = chunk_bytes;
    pthread_mutex_unlock(&chunk_mu);
}

static uint64_t dir_bytes(const char *dir)
{
    uint64_t sum = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[4352];
    struct stat st;
    while (d && (de = readdir(d)))
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < (int)sizeof p && !stat(p, &st) && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    if (d)
        closedir(d);
    return sum;
}

/* LevelDB's "leveldb.stats": per level, files, size (MB), compaction time (s), read and
 * written (MB). Its C API counts no compactions, so their time and volume stand for them. */
static void render_storage(FILE *f)
{
    uint64_t n, total;
    chunk_scan(&n, &total);
    metrics_head(f, "mbyte_chunks", "gauge",
         "Chunks in the chunk store (refcount records; in a big store recounted every 30 s).");
    fprintf(f, "mbyte_chunks %llu\n", (unsigned long long)n);
    metrics_head(f, "mbyte_chunk_bytes", "gauge", "Bytes of the chunks in the chunk store (before any backend layer).");
    fprintf(f, "mbyte_chunk_bytes %llu\n", (unsigned long long)total);
    char meta[4200];
    snprintf(meta, sizeof meta, "%s/meta", g_cfg->data_dir);
    metrics_head(f, "mbyte_leveldb_size_bytes", "gauge", "Bytes of the metadata database's files.");
    fprintf(f, "mbyte_leveldb_size_bytes %llu\n", (unsigned long long)dir_bytes(meta));
    char *stats = db_property("leveldb.stats");
    static const char *names[] = {"mbyte_leveldb_files", "mbyte_leveldb_compaction_seconds_total",
                                  "mbyte_leveldb_compaction_read_bytes_total",
                                  "mbyte_leveldb_compaction_written_bytes_total"};
    static const char *types[] = {"gauge", "counter", "counter", "counter"};
    static const char *helps[] = {"Table files per LevelDB level.", "Time LevelDB spent compacting into each level.",
                                  "Bytes LevelDB read compacting into each level.",
                                  "Bytes LevelDB wrote compacting into each level."};
    int level[8];
    double val[8][4];
    int nl = 0;
    for (char *line = stats ? strchr(stats, '\n') : NULL; line && nl < 8; line = strchr(line + 1, '\n')) {
        double files, mb, sec, rd, wr;
        if (sscanf(line + 1, " %d %lf %lf %lf %lf %lf", &level[nl], &files, &mb, &sec, &rd, &wr) == 6) {
            val[nl][0] = files, val[nl][1] = sec, val[nl][2] = rd * 1048576, val[nl][3] = wr * 1048576;
            nl++;
        }
    }
    free(stats);
    metrics_head(f, "mbyte_leveldb_mapped_paged_out_bytes_total", "counter",
                 "Bytes of LevelDB's mapped tables given back to the kernel to keep within db_mapped.");
    fprintf(f, "mbyte_leveldb_mapped_paged_out_bytes_total %llu\n", (unsigned long long)db_mapped_given());
    for (int k = 0; k < 4; k++) {
        metrics_head(f, names[k], types[k], helps[k]);
        for (int i = 0; i < nl; i++)
            fprintf(f, "%s{level=\"%d\"} %.0f\n", names[k], level[i], val[i][k]);
    }
}

/* The whole page, malloc'd (the caller frees). */
char *metrics_render(size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    metrics_render_counters(f);
    render_tasks_modules(f);
    render_storage(f);
    fclose(f);
    return buf;
}

/* --------------------------------------------------------------- doors --- */

/* GET /metrics (admin): the same page through the API door. */
static int h_metrics(mb_req *req, void *st, mb_err *err)
{
    (void)st;
    size_t n;
    char *page = metrics_render(&n);
    if (!page)
        return err_set(err, MB_ENOMEM, "the metrics page could not be built");
    http_reply_bytes(req, 200, CTYPE, page, n);
    free(page);
    return 0;
}

static enum MHD_Result on_scrape(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)cls, (void)version, (void)upload_data, (void)con_cls;
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r;
    int status = 200;
    if (strcmp(url, "/metrics")) {
        static const char nf[] = "not found: this address serves /metrics only\n";
        r = MHD_create_response_from_buffer(sizeof nf - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
        status = 404;
    } else if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        static const char na[] = "only GET\n";
        r = MHD_create_response_from_buffer(sizeof na - 1, (void *)na, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Allow", "GET, HEAD");
        status = 405;
    } else {
        size_t n;
        char *page = metrics_render(&n);
        if (!page)
            return MHD_NO;
        r = MHD_create_response_from_buffer(n, page, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CTYPE);
    }
    if (status != 200)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

int metrics_init(mb_err *err)
{
    if (http_route_add(NULL, "GET", "/metrics", MB_ROLE_ADMIN, h_metrics, NULL, err))
        return err->code;
    const char *where = json_string_value(json_object_get(g_cfg->raw, "metrics_listen"));
    struct sockaddr_storage ss;
    if (!where || !*where)
        return 0;
    if (metrics_parse_addr(where, &ss))
        return err_set(err, MB_EINVAL, "metrics_listen '%s' is not ip:port", where);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    scrape_daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_scrape, NULL, MHD_OPTION_SOCK_ADDR, &ss,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                     MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!scrape_daemon)
        return err_set(err, MB_EIO, "cannot listen on metrics_listen %s (in use, or not an address of this machine)",
                       where);
    log_info("metrics without credentials on http://%s/metrics", where);
    return 0;
}

void metrics_fini(void)
{
    if (scrape_daemon)
        MHD_stop_daemon(scrape_daemon);
    scrape_daemon = NULL;
    metrics_reset();
}
