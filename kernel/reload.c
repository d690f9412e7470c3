/*
 * reload.c — new settings while the server runs (docs/operations.md "Configuration"): SIGHUP,
 * `POST /api/v1/admin/config/reload` (mbytectl config reload) and, without applying anything,
 * `POST /api/v1/admin/config/check` (mbytectl config check).
 *
 * A reload re-reads conf.d: if mbyte.yaml does not validate, nothing changes and the reason (file,
 * line) is returned and logged. Otherwise the kernel settings that can change live take effect
 * (log level, login and token settings, limits: everything read from g_cfg per use; the listen
 * address and the data directory wait for the next start), then every active module whose file
 * now reads differently gets its new settings (modmgr_reconfigure: its reconfigure call, or a
 * reload of the same .so, so requests in flight finish on the old copy). A module whose file is
 * refused keeps running with the settings it has.
 *
 * Threads: reloads run on the loop thread (the signal handler is a libevent event there; the
 * routes hand the work over with main_call and wait). Replaced kcfg structs are kept until exit:
 * readers on other threads may still hold g_cfg's old value.
 */
#include "kernel.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static kcfg *old_cfgs[64];
static int n_old_cfgs;

/* Loop thread. The report gets "kernel": "reloaded" and "modules": [...]; a refused mbyte.yaml is
 * MB_EINVAL with the reason in err and nothing applied. */
static int reload_apply(json_t *report, mb_err *err)
{
    kcfg *c = xcalloc(1, sizeof *c);
    if (cfg_load(g_cfg->config_dir, c, err)) {
        log_error("configuration not reloaded, the running one stays: %s", err->msg);
        free(c);
        return MB_EINVAL;
    }
    /* Cluster settings are read once, at start (cluster.c). */
    if (!c->cluster_node != !g_cfg->cluster_node ||
        (c->cluster_node && (strcmp(c->cluster_node, g_cfg->cluster_node) ||
                             strcmp(c->cluster_advertise, g_cfg->cluster_advertise) ||
                             c->cluster_lease_ttl != g_cfg->cluster_lease_ttl)))
        log_warn("cluster setting changes take effect at the next start");
    /* Listen address and data directory need a restart; keep the running ones. */
    if (strcmp(c->listen_host, g_cfg->listen_host) || c->listen_port != g_cfg->listen_port ||
        strcmp(c->data_dir, g_cfg->data_dir))
        log_warn("listen address and data directory changes take effect at the next start");
    free(c->listen_host);
    c->listen_host = xstrdup(g_cfg->listen_host);
    c->listen_port = g_cfg->listen_port;
    free(c->data_dir);
    c->data_dir = xstrdup(g_cfg->data_dir);
    if (n_old_cfgs < 64)
        old_cfgs[n_old_cfgs++] = g_cfg;
    else { /* after 64 reloads the oldest is freed; readers hold g_cfg for one call, not 64 reloads */
        cfg_free(old_cfgs[0]);
        free(old_cfgs[0]);
        memmove(old_cfgs, old_cfgs + 1, sizeof old_cfgs - sizeof old_cfgs[0]);
        old_cfgs[63] = g_cfg;
    }
    g_cfg = c;
    log_init(g_cfg->log_level);
    accesslog_configure();
    json_t *mods = json_array();
    int refused = modmgr_reconfigure(mods);
    json_object_set_new(report, "kernel", json_string("reloaded"));
    json_object_set_new(report, "modules", mods);
    json_object_set_new(report, "refused", json_integer(refused));
    log_info("configuration reloaded from %s (%d module files refused)", g_cfg->config_dir, refused);
    hook_emit("config.reloaded", json_pack("{s:s}", "dir", g_cfg->config_dir), NULL);
    return 0;
}

/* Any thread: validates conf.d as a reload would, applying nothing. */
static int reload_check(json_t *report)
{
    kcfg c;
    mb_err e = {0};
    int bad = 0;
    if (cfg_load(g_cfg->config_dir, &c, &e)) { /* cfg_load freed what it had */
        json_object_set_new(report, "kernel", json_string(e.msg));
        bad++;
    } else {
        json_object_set_new(report, "kernel", json_string("ok"));
        cfg_free(&c);
    }
    json_t *mods = json_array();
    bad += modmgr_check_config(mods);
    json_object_set_new(report, "modules", mods);
    json_object_set_new(report, "ok", json_boolean(bad == 0));
    return bad;
}

void reload_on_signal(void)
{
    json_t *report = json_object();
    mb_err err = {0};
    reload_apply(report, &err);
    json_decref(report);
}

/* ------------------------------------------------------ the routes --- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, check;
    int rc;
    mb_err err;
    json_t *report;
} handoff;

static void on_loop(void *arg)
{
    handoff *h = arg;
    int rc = h->check ? (reload_check(h->report), 0) : reload_apply(h->report, &h->err);
    pthread_mutex_lock(&h->mu);
    h->rc = rc;
    h->done = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static int h_config(mb_req *req, void *st, mb_err *err)
{
    handoff h = {.check = st != NULL, .report = json_object()};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    main_call(on_loop, &h);
    pthread_mutex_lock(&h.mu);
    while (!h.done) /* the loop always runs it: no deadline, or h would go out of scope under it */
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
    if (h.rc) {
        json_decref(h.report);
        *err = h.err;
        return h.rc;
    }
    return http_reply_json(req, 200, h.report);
}

int reload_init(mb_err *err)
{
    static int check_flag = 1;
    int rc = http_route_add(NULL, "POST", "/api/v1/admin/config/reload", MB_ROLE_ADMIN, h_config, NULL, err);
    if (!rc)
        rc = http_route_add(NULL, "POST", "/api/v1/admin/config/check", MB_ROLE_ADMIN, h_config, &check_flag, err);
    return rc;
}

void reload_fini(void)
{
    for (int i = 0; i < n_old_cfgs; i++) {
        cfg_free(old_cfgs[i]);
        free(old_cfgs[i]);
    }
    n_old_cfgs = 0;
}
