/*
 * modmgr_cluster.c — the module manager in cluster mode (docs/cluster.md "Modules on every node",
 * "Module settings on every node"): a module switched on or off, or given new settings, on one node
 * is recorded as a cluster-wide record (mc/<name>, ms/<name>), and every node follows it on its loop.
 * modmgr.c calls the two puts; cluster_kv.c calls the two "heard" callbacks from its watcher.
 * Threads: the puts on the loop (modmgr's jobs) or an HTTP worker; the rest on the loop (main_call).
 */
#include "kernel.h"
#include "fileio.h"
#include "modmgr_int.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Cluster mode (docs/cluster.md "Modules on every node"): a load or unload an administrator asks
 * of any node is recorded as "mc/<name>" {"v":1,"enabled","by","time"}, a cluster-wide record;
 * every node (this one too, and a node starting later) hears it and makes its own state match,
 * on the loop, after the modules of its conf.d. */
void modmgr_cluster_state_put(const char *name, bool enabled)
{
    if (!cluster_enabled())
        return;
    char key[96];
    snprintf(key, sizeof key, "mc/%s", name);
    json_t *r = json_pack("{s:i, s:b, s:s, s:I}", "v", 1, "enabled", enabled, "by", g_cfg->cluster_node, "time",
                          (json_int_t)now_wall());
    if (db_put_json(key, r, true))
        log_error("cluster: module %s was switched %s here, but not recorded for the other nodes", name,
                  enabled ? "on" : "off");
    json_decref(r);
}

static bool finishing; /* modmgr_fini began: a switch heard late is not followed */

static void cluster_state_apply(void *arg)
{
    char *name = arg;
    if (finishing) {
        free(name);
        return;
    }
    char key[96];
    snprintf(key, sizeof key, "mc/%s", name);
    json_t *r = NULL;
    if (modmgr_name_ok(name) && db_get_json(key, &r) == 0 && json_is_boolean(json_object_get(r, "enabled"))) {
        bool want = json_is_true(json_object_get(r, "enabled")), have = modmgr_live(name);
        mb_err e = {0};
        if (want != have) {
            log_msg(LOG_INFO, name, "switched %s on node %s: %s here too", want ? "on" : "off", jstr(r, "by"),
                    want ? "loading" : "unloading");
            if (modmgr_switch(name, want, &e))
                log_msg(LOG_ERROR, name, "could not follow the cluster: %s", e.msg);
        }
    }
    json_decref(r);
    free(name);
}

static void cluster_state_heard(const char *name) { main_call(cluster_state_apply, xstrdup(name)); }

/* Module settings on every node (docs/cluster.md): a reload that changed a module's settings records
 * its file's text as "ms/<name>" {"v":1,"text","by","time"}, a cluster-wide record; every other node
 * (and a node starting later) writes that text into its own conf.d/<name>.yaml and applies it. A
 * node's own environment overrides (MBYTE_FTP_LISTEN...) still apply on top. */
#define SETTINGS_MAX (256 * 1024) /* a module's file, at most */

static char *settings_text(const char *name, size_t *len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.yaml", g_cfg->config_dir, name);
    FILE *f = fopen(path, "rb");
    char *buf = xmalloc(SETTINGS_MAX + 1);
    *len = f ? fread(buf, 1, SETTINGS_MAX + 1, f) : 0;
    if (f)
        fclose(f);
    if (*len > SETTINGS_MAX) {
        free(buf);
        return NULL;
    }
    buf[*len] = 0;
    return buf;
}

void modmgr_cluster_settings_put(const char *name)
{
    if (!cluster_enabled())
        return;
    size_t len;
    char *text = settings_text(name, &len);
    if (!text || strlen(text) != len) {
        log_msg(LOG_ERROR, name, "cluster: the settings file is over %d KiB or not text: the other nodes keep theirs",
                SETTINGS_MAX / 1024);
        free(text);
        return;
    }
    char key[96];
    snprintf(key, sizeof key, "ms/%s", name);
    json_t *r = json_pack("{s:i, s:s, s:s, s:I}", "v", 1, "text", text, "by", g_cfg->cluster_node, "time",
                          (json_int_t)now_wall());
    if (!r || db_put_json(key, r, true))
        log_msg(LOG_ERROR, name, "cluster: the new settings were applied here, but not recorded for the other nodes");
    json_decref(r);
    free(text);
}

/* Replace conf.d/<name>.yaml with text (a new file renamed over it, synced). */
static int settings_write(const char *name, const char *text, mb_err *err)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/%s.yaml", g_cfg->config_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.yaml.cluster", g_cfg->config_dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return err_set(err, MB_EIO, "cannot write %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    int rc = fio_write_all(fd, text, n) || fsync(fd) ? MB_EIO : 0;
    close(fd);
    if (rc || rename(tmp, path)) {
        unlink(tmp);
        return err_set(err, MB_EIO, "cannot replace %s: %s", path, strerror(errno));
    }
    fio_sync(g_cfg->config_dir, true);
    return 0;
}

static void cluster_settings_apply(void *arg)
{
    char *name = arg;
    char key[96];
    snprintf(key, sizeof key, "ms/%s", name);
    json_t *r = NULL;
    size_t len;
    char *have = NULL;
    mb_err e = {0};
    if (!finishing && modmgr_name_ok(name) && db_get_json(key, &r) == 0 && json_is_string(json_object_get(r, "text")) &&
        (have = settings_text(name, &len)) && strcmp(have, jstr(r, "text"))) {
        if (settings_write(name, jstr(r, "text"), &e))
            log_msg(LOG_ERROR, name, "could not take the cluster's settings (changed on node %s): %s", jstr(r, "by"), e.msg);
        else {
            log_msg(LOG_INFO, name, "settings changed on node %s: applying them here too", jstr(r, "by"));
            modmgr_reconfigure_one(name); /* not recorded again: they are the cluster's already */
        }
    }
    free(have);
    json_decref(r);
    free(name);
}

static void cluster_settings_heard(const char *name) { main_call(cluster_settings_apply, xstrdup(name)); }

void modmgr_cluster_init(void)
{
    cluster_kv_on("mc/", cluster_state_heard);
    cluster_kv_on("ms/", cluster_settings_heard);
}

void modmgr_cluster_stop(void) { finishing = true; }
