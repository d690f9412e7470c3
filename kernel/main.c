/*
 * main.c — mbyted: parse the command line, load conf.d, open the data directory, start
 * every kernel subsystem, load the enabled modules, serve, and stop gracefully.
 *
 * Threads: this file owns the libevent loop on the main thread. Signals arrive as loop
 * events: SIGTERM/SIGINT stop (requests in flight finish, the database is closed cleanly,
 * exit 0); SIGHUP re-reads conf.d and keeps the running configuration if the new one is bad.
 * Other threads hand work to the loop with main_call().
 */
#include "kernel.h"
#include "fs.h"
#include <event2/thread.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <curl/curl.h>

static struct event_base *base;

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    log_info("signal %d: stopping", (int)sig);
    event_base_loopbreak(base);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    reload_on_signal();
}

static void usage(void)
{
    fprintf(stderr, "usage: mbyted [--config DIR] [--backup DIR | --no-backup] [--version]\n"
                    "  DIR defaults to $MBYTE_CONFIG, else " MBYTE_CONFIG_DIR "\n"
                    "environment: MBYTE_LISTEN host:port, MBYTE_DATA dir, MBYTE_MODULE_DIR dir,\n"
                    "             MBYTE_ETCD url,url MBYTE_NODE name MBYTE_ADVERTISE host:port (cluster)\n"
                    "             MBYTE_ADMIN_PASSWORD (first start only)\n");
}

/* Every connection, every chunk file queued for sendfile (up to ~35 per FTP download) and
 * LevelDB's tables hold a descriptor, and the soft limit is often 1024: raise it to the hard
 * limit, as nginx (worker_rlimit_nofile) and Go's runtime do. Everything here waits with
 * epoll or poll, never select, so descriptors above 1023 are fine. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl))
        log_warn("cannot raise the open-files limit to %llu: %s", (unsigned long long)want, strerror(errno));
}

/* The generated admin password, once, where a person starting MByte for the first time cannot miss
 * it (stdout, so a service manager's journal keeps it; never the log). */
static void first_start_box(const char *url, const char *pw)
{
    char lines[5][400];
    snprintf(lines[0], sizeof lines[0], "MByte is ready at %s", url);
    snprintf(lines[1], sizeof lines[1], "First start: log in as 'admin' with the password");
    snprintf(lines[2], sizeof lines[2], "    %s", pw);
    snprintf(lines[3], sizeof lines[3], "It is shown only this once. Change it with");
    snprintf(lines[4], sizeof lines[4], "    mbytectl user passwd admin");
    size_t w = 0;
    for (int i = 0; i < 5; i++)
        w = strlen(lines[i]) > w ? strlen(lines[i]) : w;
    char bar[408];
    memset(bar, '=', w + 4);
    bar[w + 4] = '\0';
    printf("\n+%s+\n", bar);
    for (int i = 0; i < 5; i++)
        printf("|  %-*s  |\n", (int)w, lines[i]);
    printf("+%s+\n\n", bar);
    fflush(stdout);
    sodium_memzero(lines, sizeof lines);
}

/* Every kernel route table: registered here, in one place, like a module's descriptor. */
static int routes_add(const kroute *t, mb_err *err)
{
    for (; t->method; t++) {
        int rc = t->stream ? http_stream_route_add(t->method, t->pattern, t->role, t->stream, err)
                           : http_route_add(NULL, t->method, t->pattern, t->role, t->fn, NULL, err);
        if (rc)
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* --config, else $MBYTE_CONFIG, else the installed configuration (meson.build). */
    const char *config_dir = getenv("MBYTE_CONFIG") && *getenv("MBYTE_CONFIG") ? getenv("MBYTE_CONFIG") : MBYTE_CONFIG_DIR;
    const char *backup_dir = NULL; /* --backup DIR: before a data format migration */
    bool no_backup = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config_dir = argv[++i];
        else if (!strcmp(argv[i], "--backup") && i + 1 < argc)
            backup_dir = argv[++i];
        else if (!strcmp(argv[i], "--no-backup"))
            no_backup = true;
        else if (!strncmp(argv[i], "--config=", 9))
            config_dir = argv[i] + 9;
        else if (!strcmp(argv[i], "--version")) {
            printf("mbyted %s (ABI %d.%d)\n", MBYTE_VERSION, MB_ABI_MAJOR, MB_ABI_MINOR);
            return 0;
        } else {
            usage();
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        fprintf(stderr, "mbyted: libsodium failed to initialise\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    evthread_use_pthreads();

    struct stat cst;
    if (stat(config_dir, &cst) || !S_ISDIR(cst.st_mode)) {
        fprintf(stderr, "mbyted: no configuration directory %s (give --config DIR or set MBYTE_CONFIG)\n", config_dir);
        return 2;
    }
    mb_err err = {0};
    g_cfg = xcalloc(1, sizeof *g_cfg);
    if (cfg_load(config_dir, g_cfg, &err)) {
        fprintf(stderr, "mbyted: bad configuration: %s\n", err.msg);
        free(g_cfg);
        return 2;
    }
    log_init(g_cfg->log_level);
    /* Before any thread allocates: every later thread takes its arena within this limit. An
     * operator's MALLOC_ARENA_MAX in the environment wins (glibc read it already). */
    if (g_cfg->malloc_arenas && !getenv("MALLOC_ARENA_MAX"))
        mallopt(M_ARENA_MAX, g_cfg->malloc_arenas);
    accesslog_configure();
    raise_fd_limit();
    int status = 1;
    char path[4096];
    if (mkdir_p(g_cfg->data_dir, 0700)) {
        log_error("cannot create the data directory %s", g_cfg->data_dir);
        goto out_cfg;
    }
    snprintf(path, sizeof path, "%s/meta", g_cfg->data_dir);
    if (db_open(path, &err)) {
        log_error("%s", err.msg);
        goto out_cfg;
    }
    /* The chunk store opens with the database: a format migration may take a backup first. */
    int frc = blob_init(&err);
    if (!frc)
        frc = gc_init(&err);
    if (!frc && (frc = format_check(backup_dir, no_backup, &err)) != 0) {
        gc_fini();
        blob_fini();
    }
    if (frc) {
        log_error("%s", err.msg);
        fprintf(stderr, "mbyted: %s\n", err.msg);
        db_close();
        status = frc > 0 ? frc : 1;
        goto out_cfg;
    }
    base = event_base_new();
    loop_init(base);
    struct event *ev_term = evsignal_new(base, SIGTERM, on_stop, NULL);
    struct event *ev_int = evsignal_new(base, SIGINT, on_stop, NULL);
    struct event *ev_hup = evsignal_new(base, SIGHUP, on_hup, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);

    char admin_pw[33] = "";
    bool first_node = true;
    if (notify_init(&err) || routes_add(notify_routes, &err) || hook_init(base, &err) ||
        task_init(base, g_cfg->workers, &err) || routes_add(task_routes, &err) || auth_init(&err) ||
        apppass_init(&err) ||
        fs_init(&err) || routes_add(files_routes, &err) || routes_add(backend_routes, &err) || stores_init(&err) || tus_init(&err) ||
        routes_add(tus_routes, &err) || luas_init(g_cfg->lua_dir, &err) ||
        health_routes_init(&err) || routes_add(cluster_routes, &err) || metrics_init(&err) || backup_init(&err) || reload_init(&err) || modmgr_init(base, &err) ||
        secret_http_init(base, &err) || cluster_repl_listen(&err) || cluster_register(&err) || cluster_kv_join(&first_node, &err) ||
        (first_node && auth_bootstrap(admin_pw, &err))) {
        log_error("start failed: %s", err.msg);
        goto out_stop;
    }
    /* Enabled modules load before the first request is served, so no client ever sees a
     * started server without its modules (health, their routes, their listeners). */
    modmgr_order(g_cfg->modules_enabled); /* providers (vault) before the modules using them */
    if (g_cfg->modules_enabled)
        for (char **m = g_cfg->modules_enabled; *m; m++)
            if (modmgr_load(*m, &err))
                log_error("module %s not loaded: %s", *m, err.msg);
    /* Cluster mode: registered under this node's name above (a live name refused the start
     * before anything of this node reached etcd); the membership thread starts after the
     * modules, so their observers hear the first cluster.leader. */
    if (cluster_start(&err) || cluster_repl_start(&err)) {
        log_error("start failed: %s", err.msg);
        goto out_stop;
    }
    if (http_start(&err)) {
        log_error("start failed: %s", err.msg);
        goto out_stop;
    }
    char url[300];
    snprintf(url, sizeof url, strchr(g_cfg->listen_host, ':') ? "http://[%s]:%d/" : "http://%s:%d/",
             g_cfg->listen_host, g_cfg->listen_port);
    printf("MByte %s is running at %s\n", MBYTE_VERSION, url);
    if (admin_pw[0])
        first_start_box(url, admin_pw);
    sodium_memzero(admin_pw, sizeof admin_pw);
    log_info("serving on %s:%d, data in %s", g_cfg->listen_host, g_cfg->listen_port, g_cfg->data_dir);
    event_base_dispatch(base);
    status = 0;
out_stop:
    cluster_repl_stop(); /* no more takeovers here */
    cluster_stop();      /* the others take over at once */
    cluster_kv_stop();
    http_stop();
    cluster_fwd_fini();
    cluster_repl_fini(); /* after the door: what requests in flight handed on is answered */
    metrics_fini();
    accesslog_fini();
    tus_fini();
    fs_fini();
    modmgr_fini();
    secret_http_fini();
    pool_fini();
    task_fini();
    hook_fini();
    luas_fini();
    fs_fini();
    auth_fini();
    notify_fini();
    loop_fini(); /* run what was handed over during the stop */
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    event_base_free(base);
    db_close();
    log_info("stopped");
out_cfg:
    reload_fini();
    cfg_free(g_cfg);
    free(g_cfg);
    curl_global_cleanup();
    return status;
}
