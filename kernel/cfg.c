/*
 * cfg.c — configuration: YAML (libyaml) turned into JSON, checked, with every error naming
 * file, line and reason. conf.d/mbyte.yaml configures the kernel; conf.d/<module>.yaml each
 * module, checked against the module's config table. Environment variables MBYTE_LISTEN,
 * MBYTE_DATA and MBYTE_MODULE_DIR override the file. A value may be a secret reference
 * (env:NAME, file:/path; secret.c): mbyte.yaml's are resolved here, a module file's by modmgr.
 * Threads: loaded on the loop thread at start and on SIGHUP; a new kcfg replaces the old only
 * when it is entirely valid, so a bad file never changes the running configuration.
 */
#include "kernel.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

kcfg *g_cfg;

/* ------------------------------------------------------- YAML -> JSON --- */

typedef struct {
    yaml_parser_t p;
    const char *name;
    json_t *lines;
    mb_err *err;
} yctx;

static int yerr(yctx *y, size_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int yerr(yctx *y, size_t line, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(y->err, MB_EINVAL, "%s:%zu: %s", y->name, line, msg);
}

static json_t *scalar_value(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(v, n);
    if (n == 0 || !strcmp(v, "~") || !strcmp(v, "null"))
        return json_null();
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
        return json_true();
    if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
        return json_false();
    char *end;
    errno = 0;
    long long ll = strtoll(v, &end, 10);
    if (*v && !*end && errno == 0)
        return json_integer(ll);
    double d = strtod(v, &end);
    if (*v && !*end && errno == 0 && strspn(v, "0123456789.-+eE") == n)
        return json_real(d);
    return json_stringn(v, n);
}

static int parse_node(yctx *y, yaml_event_t *ev, const char *path, json_t **out, int depth);

static int next_event(yctx *y, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&y->p, ev))
        return yerr(y, y->p.problem_mark.line + 1, "%s", y->p.problem ? y->p.problem : "syntax error");
    return 0;
}

static int parse_node(yctx *y, yaml_event_t *ev, const char *path, json_t **out, int depth)
{
    if (depth > 32)
        return yerr(y, ev->start_mark.line + 1, "nesting is too deep");
    if (ev->type == YAML_SCALAR_EVENT) {
        *out = scalar_value(ev);
        return 0;
    }
    if (ev->type == YAML_ALIAS_EVENT)
        return yerr(y, ev->start_mark.line + 1, "aliases are not supported");
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        json_t *arr = json_array();
        for (;;) {
            yaml_event_t e;
            if (next_event(y, &e)) {
                json_decref(arr);
                return MB_EINVAL;
            }
            if (e.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            json_t *v = NULL;
            int rc = parse_node(y, &e, path, &v, depth + 1);
            yaml_event_delete(&e);
            if (rc) {
                json_decref(arr);
                return rc;
            }
            json_array_append_new(arr, v);
        }
        *out = arr;
        return 0;
    }
    if (ev->type == YAML_MAPPING_START_EVENT) {
        json_t *obj = json_object();
        for (;;) {
            yaml_event_t k;
            if (next_event(y, &k)) {
                json_decref(obj);
                return MB_EINVAL;
            }
            if (k.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&k);
                break;
            }
            if (k.type != YAML_SCALAR_EVENT) {
                int rc = yerr(y, k.start_mark.line + 1, "a mapping key must be a plain name");
                yaml_event_delete(&k);
                json_decref(obj);
                return rc;
            }
            char key[256];
            snprintf(key, sizeof key, "%s", (const char *)k.data.scalar.value);
            size_t kline = k.start_mark.line + 1;
            yaml_event_delete(&k);
            if (json_object_get(obj, key)) {
                json_decref(obj);
                return yerr(y, kline, "key '%s' appears twice", key);
            }
            char sub[512];
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
            if (y->lines)
                json_object_set_new(y->lines, sub, json_integer((json_int_t)kline));
            yaml_event_t v;
            if (next_event(y, &v)) {
                json_decref(obj);
                return MB_EINVAL;
            }
            json_t *val = NULL;
            int rc = parse_node(y, &v, sub, &val, depth + 1);
            yaml_event_delete(&v);
            if (rc) {
                json_decref(obj);
                return rc;
            }
            json_object_set_new(obj, key, val);
        }
        *out = obj;
        return 0;
    }
    return yerr(y, ev->start_mark.line + 1, "unexpected YAML construct");
}

int cfg_yaml_parse(const char *name, const char *text, size_t len, json_t **out, json_t **lines, mb_err *err)
{
    yctx y = {.name = name, .err = err, .lines = lines ? json_object() : NULL};
    *out = NULL;
    if (!utf8_valid(text, len)) {
        json_decref(y.lines);
        return err_set(err, MB_EINVAL, "%s:1: the file is not valid UTF-8", name);
    }
    yaml_parser_initialize(&y.p);
    yaml_parser_set_input_string(&y.p, (const unsigned char *)text, len);
    json_t *doc = NULL;
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(&y, &ev)))
            break;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT || t == YAML_SCALAR_EVENT) {
            if (doc) {
                yaml_event_delete(&ev);
                rc = yerr(&y, ev.start_mark.line + 1, "only one YAML document is allowed");
                break;
            }
            if (t != YAML_MAPPING_START_EVENT && !(t == YAML_SCALAR_EVENT && ev.data.scalar.length == 0)) {
                size_t line = ev.start_mark.line + 1;
                yaml_event_delete(&ev);
                rc = yerr(&y, line, "the top level must be a mapping of keys");
                break;
            }
            rc = parse_node(&y, &ev, "", &doc, 0);
            yaml_event_delete(&ev);
            if (rc)
                break;
            continue;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&y.p);
    if (rc) {
        json_decref(doc);
        json_decref(y.lines);
        return rc;
    }
    if (!doc || json_is_null(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    *out = doc;
    if (lines)
        *lines = y.lines;
    return 0;
}

int cfg_yaml_load(const char *path, json_t **out, json_t **lines, mb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, errno == ENOENT ? MB_ENOENT : MB_EIO, "%s:0: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (4u << 20)) {
                free(buf);
                fclose(f);
                return err_set(err, MB_ETOOBIG, "%s:0: the file is larger than 4 MiB", path);
            }
            buf = xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    int rc = cfg_yaml_parse(path, buf ? buf : "", n, out, lines, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------- checked access --- */

static size_t line_of(const json_t *lines, const char *key)
{
    json_t *l = lines ? json_object_get(lines, key) : NULL;
    return l ? (size_t)json_integer_value(l) : 1;
}

static int want_int(const char *file, const json_t *root, const json_t *lines, const char *key, int64_t min,
                    int64_t max, int64_t *out, mb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return err_set(err, MB_EINVAL, "%s:%zu: %s must be a whole number", file, line_of(lines, key), key);
    int64_t x = json_integer_value(v);
    if (x < min || x > max)
        return err_set(err, MB_EINVAL, "%s:%zu: %s must be between %lld and %lld", file, line_of(lines, key), key,
                       (long long)min, (long long)max);
    *out = x;
    return 0;
}

static int want_str(const char *file, const json_t *root, const json_t *lines, const char *key, char **out,
                    mb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return err_set(err, MB_EINVAL, "%s:%zu: %s must be a non-empty string", file, line_of(lines, key), key);
    free(*out);
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int parse_listen(const char *where, const char *s, char **host, int *port, mb_err *err)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;
    if (!colon || colon == s || !parse_u64(colon + 1, &p) || p > 65535)
        return err_set(err, MB_EINVAL, "%s: listen must be host:port, got '%s'", where, s);
    free(*host);
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    *host = xmalloc(hl + 1);
    memcpy(*host, h, hl);
    (*host)[hl] = 0;
    *port = (int)p;
    return 0;
}

/* want_int for an int field. */
static int want_i32(const char *file, const json_t *root, const json_t *lines, const char *key, int min, int max,
                    int *out, mb_err *err)
{
    int64_t v = *out;
    int rc = want_int(file, root, lines, key, min, max, &v, err);
    if (!rc)
        *out = (int)v;
    return rc;
}

/* A boolean key of obj, named `name` in messages and line numbers (the key itself at the top level,
 * "<section>.<key>" in a section): *out stays as it is when the key is absent. */
static int want_bool(const char *file, const json_t *obj, const json_t *lines, const char *key, const char *name,
                     bool *out, mb_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (v && !json_is_boolean(v))
        return err_set(err, MB_EINVAL, "%s:%zu: %s must be true or false", file, line_of(lines, name), name);
    if (v)
        *out = json_is_true(v);
    return 0;
}

/* true, false or "auto" (-1): left as it was when absent. */
static int want_auto(const char *file, const json_t *obj, const json_t *lines, const char *key, int *out, mb_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (v && json_is_boolean(v))
        *out = json_is_true(v);
    else if (v && json_is_string(v) && !strcmp(json_string_value(v), "auto"))
        *out = -1;
    else if (v)
        return err_set(err, MB_EINVAL, "%s:%zu: %s must be true, false or auto", file, line_of(lines, key), key);
    return 0;
}

static const char *const kernel_keys[] = {"listen", "data_dir", "module_dir", "web_dir", "lua_dir", "http_threads",
                                          "workers", "max_body", "token_ttl", "login_max_failures",
                                          "login_window", "log_level", "modules", "chunk_inline_max", "subtree_task_above", "subtree_batch", "db_write_buffer", "db_cache", "db_mapped", "malloc_arenas",
                                          "login_cache_ttl", "chunk_large_folios", "chunk_direct_io", "chunk_read_direct", "http_max_connections",
                                          "http_max_connections_per_ip", "http_header_timeout", "login_max_failures_per_ip",
                                          "login_account_slow_after", "task_retention_days", "tls_cert", "tls_key",
                                          "http_redirect_listen", "require_tls", "trusted_proxies",
                                          "metrics_listen", "access_log", "log_format", "secrets_refresh",
                                          "durability", "durability_window_ms", "master_key", "previous_master_key", "cluster", NULL};

/* A NULL-terminated list of strings, and the list itself (NULL is fine). */
static void strv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

void cfg_free(kcfg *c)
{
    if (!c)
        return;
    free(c->config_dir);
    free(c->listen_host);
    free(c->data_dir);
    free(c->module_dir);
    free(c->web_dir);
    free(c->lua_dir);
    strv_free(c->trusted_proxies);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->redirect_host);
    free(c->master_key);
    free(c->previous_master_key);
    strv_free(c->cluster_etcd);
    free(c->cluster_node);
    free(c->cluster_advertise);
    strv_free(c->modules_enabled);
    json_decref(c->raw);
    memset(c, 0, sizeof *c);
}

/* access_log and log_format (accesslog.c applies them). */
static int logs_check(const char *file, const json_t *root, const json_t *lines, mb_err *err)
{
    const json_t *a = json_object_get(root, "access_log");
    if (a && !json_is_null(a) && !json_is_string(a))
        return err_set(err, MB_EINVAL, "%s:%lld: access_log must be a file path", file,
                       (long long)json_integer_value(json_object_get(lines, "access_log")));
    const json_t *f = json_object_get(root, "log_format");
    if (f && !(json_is_string(f) && (!strcmp(json_string_value(f), "text") || !strcmp(json_string_value(f), "json"))))
        return err_set(err, MB_EINVAL, "%s:%lld: log_format must be text or json", file,
                       (long long)json_integer_value(json_object_get(lines, "log_format")));
    return 0;
}

/* ------------------------------------------------------------ cluster --- */

/* One etcd endpoint: http(s)://host:port with nothing after it but an optional '/'. */
static bool etcd_url_ok(const char *u)
{
    const char *h = !strncmp(u, "http://", 7) ? u + 7 : !strncmp(u, "https://", 8) ? u + 8 : NULL;
    if (!h || !*h || strlen(u) > 200)
        return false;
    const char *colon = strrchr(h, ':');
    uint64_t p;
    char port[8];
    size_t pl = colon ? strcspn(colon + 1, "/") : 0;
    if (!colon || colon == h || pl == 0 || pl >= sizeof port || (colon[1 + pl] && strcmp(colon + 1 + pl, "/")))
        return false;
    memcpy(port, colon + 1, pl);
    port[pl] = 0;
    return parse_u64(port, &p) && p > 0 && p <= 65535 && !strpbrk(h, " @?#");
}

/* host:port that another node can connect to (cluster.advertise, MBYTE_ADVERTISE). */
static int advertise_check(const char *where, const char *what, const char *a, mb_err *err)
{
    const char *colon = strrchr(a, ':');
    uint64_t p;
    if (!colon || colon == a || !parse_u64(colon + 1, &p) || p == 0 || p > 65535 || strpbrk(a, " /@"))
        return err_set(err, MB_EINVAL, "%s: %s must be host:port (where the other nodes reach this one), got '%s'",
                       where, what, a);
    return 0;
}

/* A node name: it is part of an etcd key and shows in every node's view. */
static bool node_name_ok(const char *n)
{
    size_t l = strlen(n);
    return l >= 1 && l <= 63 && strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == l && n[0] != '.' &&
           n[0] != '-';
}

static int set_etcd_url(kcfg *c, size_t i, const char *u, const char *where, mb_err *err)
{
    if (!etcd_url_ok(u))
        return err_set(err, MB_EINVAL, "%s: '%s' is not an etcd endpoint (http://host:port or https://host:port)",
                       where, u);
    size_t l = strlen(u);
    c->cluster_etcd[i] = xstrdup(u);
    if (c->cluster_etcd[i][l - 1] == '/')
        c->cluster_etcd[i][l - 1] = 0;
    return 0;
}

/* cluster: {etcd: [urls], node, advertise, lease_ttl, rebalance, store_weight_mb} (cluster.c), then MBYTE_ETCD, MBYTE_NODE
 * and MBYTE_ADVERTISE. MBYTE_ETCD alone turns cluster mode on; without either, nothing is set
 * and the server stays a single one. */
static int cluster_check(const char *file, const json_t *root, const json_t *lines, kcfg *c, mb_err *err)
{
    const json_t *cl = json_object_get(root, "cluster");
    char where[4200];
    c->cluster_lease_ttl = 5;
    c->cluster_rebalance = true;
    c->cluster_store_weight = 64LL << 20;
    if (cl && !json_is_null(cl)) {
        if (!json_is_object(cl))
            return err_set(err, MB_EINVAL, "%s:%zu: cluster must be a mapping (etcd, node, advertise, lease_ttl, rebalance)", file,
                           line_of(lines, "cluster"));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)cl, key, val)
        {
            char kp[300];
            snprintf(kp, sizeof kp, "cluster.%s", key);
            if (strcmp(key, "etcd") && strcmp(key, "node") && strcmp(key, "advertise") && strcmp(key, "lease_ttl") &&
                strcmp(key, "rebalance") && strcmp(key, "store_weight_mb"))
                return err_set(err, MB_EINVAL, "%s:%zu: unknown key 'cluster.%s'", file, line_of(lines, kp), key);
        }
        const json_t *e = json_object_get(cl, "etcd");
        snprintf(where, sizeof where, "%s:%zu", file, line_of(lines, e ? "cluster.etcd" : "cluster"));
        if (!json_is_array(e) || json_array_size(e) == 0)
            return err_set(err, MB_EINVAL, "%s: cluster.etcd must be a list of etcd endpoints (http://host:port)",
                           where);
        c->cluster_etcd = xcalloc(json_array_size(e) + 1, sizeof(char *));
        size_t i;
        json_t *u;
        json_array_foreach(e, i, u)
        {
            int rc = set_etcd_url(c, i, json_is_string(u) ? json_string_value(u) : "(not a string)", where, err);
            if (rc)
                return rc;
        }
        const json_t *n = json_object_get(cl, "node");
        if (n && !(json_is_string(n) && node_name_ok(json_string_value(n))))
            return err_set(err, MB_EINVAL, "%s:%zu: cluster.node must be a name of 1 to 63 of a-z, 0-9, '-', '_', '.'",
                           file, line_of(lines, "cluster.node"));
        if (n)
            c->cluster_node = xstrdup(json_string_value(n));
        const json_t *a = json_object_get(cl, "advertise");
        if (a) {
            snprintf(where, sizeof where, "%s:%zu", file, line_of(lines, "cluster.advertise"));
            int rc = advertise_check(where, "cluster.advertise", json_is_string(a) ? json_string_value(a) : "", err);
            if (rc)
                return rc;
            c->cluster_advertise = xstrdup(json_string_value(a));
        }
        if (json_object_get(cl, "lease_ttl")) {
            int64_t t = 5;
            int rc = want_int(file, cl, lines, "lease_ttl", 2, 300, &t, err);
            if (rc) /* want_int names the key without its section */
                return err_set(err, MB_EINVAL, "%s:%zu: cluster.lease_ttl must be a whole number of seconds from 2 to 300",
                               file, line_of(lines, "cluster.lease_ttl"));
            c->cluster_lease_ttl = (int)t;
        }
        int rc = want_bool(file, cl, lines, "rebalance", "cluster.rebalance", &c->cluster_rebalance, err);
        if (rc)
            return rc;
        if (json_object_get(cl, "store_weight_mb")) {
            int64_t w = 64;
            if (want_int(file, cl, lines, "store_weight_mb", 1, 1 << 20, &w, err))
                return err_set(err, MB_EINVAL, "%s:%zu: cluster.store_weight_mb must be a whole number of MiB from 1 to "
                               "1048576", file, line_of(lines, "cluster.store_weight_mb"));
            c->cluster_store_weight = w << 20;
        }
    }
    const char *ev;
    if ((ev = getenv("MBYTE_ETCD")) && *ev) {
        strv_free(c->cluster_etcd);
        size_t n = 1;
        for (const char *p = ev; *p; p++)
            n += *p == ',';
        c->cluster_etcd = xcalloc(n + 1, sizeof(char *));
        char *copy = xstrdup(ev), *save = NULL;
        size_t i = 0;
        int rc = 0;
        for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save))
            rc = set_etcd_url(c, i++, t, "MBYTE_ETCD", err);
        free(copy);
        if (rc)
            return rc;
        if (i == 0)
            return err_set(err, MB_EINVAL, "MBYTE_ETCD: give one or more etcd endpoints, separated by commas");
    }
    if ((ev = getenv("MBYTE_NODE")) && *ev) {
        if (!node_name_ok(ev))
            return err_set(err, MB_EINVAL, "MBYTE_NODE: '%s' is not a node name (1 to 63 of a-z, 0-9, '-', '_', '.')",
                           ev);
        free(c->cluster_node);
        c->cluster_node = xstrdup(ev);
    }
    if ((ev = getenv("MBYTE_ADVERTISE")) && *ev) {
        int rc = advertise_check("MBYTE_ADVERTISE", "the value", ev, err);
        if (rc)
            return rc;
        free(c->cluster_advertise);
        c->cluster_advertise = xstrdup(ev);
    }
    if (!c->cluster_etcd) { /* MBYTE_NODE or MBYTE_ADVERTISE alone: still a single server */
        free(c->cluster_node);
        free(c->cluster_advertise);
        c->cluster_node = c->cluster_advertise = NULL;
        return 0;
    }
    if (!c->cluster_node)
        return err_set(err, MB_EINVAL, "%s:%zu: cluster mode needs cluster.node (or MBYTE_NODE): this node's name",
                       file, line_of(lines, "cluster"));
    return 0;
}

int cfg_load(const char *dir, kcfg *c, mb_err *err)
{
    memset(c, 0, sizeof *c);
    c->config_dir = xstrdup(dir);
    c->listen_host = xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->data_dir = xstrdup("var");
    c->module_dir = xstrdup("build-release/modules");
    c->web_dir = xstrdup("web");
    c->lua_dir = xstrdup("scripts/lua");
    c->http_threads = 16;
    c->chunk_inline_max = 32768;
    c->subtree_task_above = 10000;
    c->subtree_batch = 1000;
    c->db_write_buffer = DB_WRITE_BUFFER;
    c->db_cache = DB_CACHE;
    c->db_mapped = DB_MAPPED;
    c->malloc_arenas = MALLOC_ARENAS;
    c->durability_window_ms = 50;
    c->chunk_large_folios = -1;
    c->chunk_read_direct = -1;
    c->chunk_direct_io = true;
    c->workers = 2;
    c->max_body = 1 << 20;
    c->token_ttl = 7 * 24 * 3600;
    c->login_cache_ttl = 600;
    c->secrets_refresh = 300;
    c->login_max_failures = 5;
    c->login_window = 300;
    c->task_retention_days = 30;
    c->login_max_failures_per_ip = 20;
    c->login_account_slow_after = 20;
    c->http_max_connections = 4096;
    c->http_max_connections_per_ip = 128;
    c->http_header_timeout = 30;
    c->log_level = LOG_INFO;

    char path[4096];
    snprintf(path, sizeof path, "%s/mbyte.yaml", dir);
    json_t *root = NULL, *lines = NULL;
    int rc = cfg_yaml_load(path, &root, &lines, err);
    if (rc == MB_ENOENT) {
        root = json_object();
        lines = json_object();
        rc = 0;
    }
    /* master_key names a key (file:/path, transit:<key>) that wraps data keys (crypt.c); it is
     * not a secret to read, so it is kept out of the resolution below. */
    /* previous_master_key: the key the data keys were wrapped with before master_key changed
     * (file: to transit:, one key file to another); they open with it until a rewrap. */
    static const char *const keyrefs[] = {"master_key", "previous_master_key"};
    char **dest[] = {&c->master_key, &c->previous_master_key};
    for (size_t i = 0; !rc && i < 2; i++) {
        json_t *mk = json_object_get(root, keyrefs[i]);
        if (mk && !(json_is_string(mk) && strchr(json_string_value(mk), ':') && json_string_value(mk)[0] != ':')) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: %s must be a key reference: file:/path or transit:<key>", path,
                         line_of(lines, keyrefs[i]), keyrefs[i]);
            goto fail;
        }
        if (mk) {
            *dest[i] = xstrdup(json_string_value(mk));
            json_object_del(root, keyrefs[i]);
        }
    }
    if (!rc && c->previous_master_key && !c->master_key) {
        rc = err_set(err, MB_EINVAL, "%s:%zu: previous_master_key needs a master_key to move the data keys to",
                     path, line_of(lines, "previous_master_key"));
        goto fail;
    }
    /* References (env:, file:) become values first: every check below sees values only. */
    if (rc || (rc = secret_resolve_tree("kernel", path, root, lines, NULL, NULL, err)))
        goto fail;
    for (size_t i = 0; i < 2; i++)
        if (*dest[i])
            json_object_set_new(root, keyrefs[i], json_string(*dest[i]));
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        bool known = false;
        for (const char *const *k = kernel_keys; *k; k++)
            known |= !strcmp(*k, key);
        if (!known) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: unknown key '%s'", path, line_of(lines, key), key);
            goto fail;
        }
    }
    json_t *l = json_object_get(root, "listen");
    if (l) {
        if (!json_is_string(l)) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: listen must be host:port", path, line_of(lines, "listen"));
            goto fail;
        }
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu", path, line_of(lines, "listen"));
        if ((rc = parse_listen(where, json_string_value(l), &c->listen_host, &c->listen_port, err)))
            goto fail;
    }
    json_t *rl = json_object_get(root, "http_redirect_listen");
    if (rl && !(json_is_string(rl) && !json_string_length(rl))) {
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu", path, line_of(lines, "http_redirect_listen"));
        if (!json_is_string(rl) ||
            (rc = parse_listen(where, json_string_value(rl), &c->redirect_host, &c->redirect_port, err))) {
            rc = rc ? rc : err_set(err, MB_EINVAL, "%s: http_redirect_listen must be host:port", where);
            goto fail;
        }
    }
    c->require_tls = true;
    if ((rc = want_bool(path, root, lines, "require_tls", "require_tls", &c->require_tls, err)))
        goto fail;
    int64_t v;
    if ((rc = want_str(path, root, lines, "tls_cert", &c->tls_cert, err)) ||
        (rc = want_str(path, root, lines, "tls_key", &c->tls_key, err)))
        goto fail;
    if (!c->tls_cert != !c->tls_key) {
        rc = err_set(err, MB_EINVAL, "%s:%zu: tls_cert and tls_key go together", path,
                     line_of(lines, c->tls_cert ? "tls_cert" : "tls_key"));
        goto fail;
    }
    if ((rc = want_str(path, root, lines, "data_dir", &c->data_dir, err)) ||
        (rc = want_str(path, root, lines, "module_dir", &c->module_dir, err)) ||
        (rc = want_str(path, root, lines, "web_dir", &c->web_dir, err)) ||
        (rc = want_str(path, root, lines, "lua_dir", &c->lua_dir, err)))
        goto fail;
    v = c->http_threads;
    if ((rc = want_int(path, root, lines, "http_threads", 1, 256, &v, err)))
        goto fail;
    c->http_threads = (int)v;
    if ((rc = want_int(path, root, lines, "chunk_inline_max", 0, CHUNK_INLINE_LIMIT, &c->chunk_inline_max, err)))
        goto fail;
    if ((rc = want_int(path, root, lines, "subtree_task_above", 0, INT32_MAX, &c->subtree_task_above, err)) ||
        (rc = want_int(path, root, lines, "subtree_batch", 1, 1000000, &c->subtree_batch, err)))
        goto fail;
    if ((rc = want_int(path, root, lines, "db_write_buffer", 1 << 20, 1 << 30, &c->db_write_buffer, err)) ||
        (rc = want_int(path, root, lines, "db_cache", 1 << 20, 1 << 30, &c->db_cache, err)) ||
        (rc = want_int(path, root, lines, "db_mapped", 0, 1 << 30, &c->db_mapped, err)) ||
        (rc = want_i32(path, root, lines, "malloc_arenas", 0, 64, &c->malloc_arenas, err)))
        goto fail;
    v = c->workers;
    if ((rc = want_int(path, root, lines, "workers", 1, 256, &v, err)))
        goto fail;
    c->workers = (int)v;
    if ((rc = want_int(path, root, lines, "max_body", 1024, 64 << 20, &c->max_body, err)) ||
        (rc = want_int(path, root, lines, "token_ttl", 60, 365LL * 24 * 3600, &c->token_ttl, err)) ||
        (rc = want_int(path, root, lines, "login_cache_ttl", 0, 86400, &c->login_cache_ttl, err)) ||
        (rc = want_int(path, root, lines, "secrets_refresh", 0, 86400, &c->secrets_refresh, err)))
        goto fail;
    v = c->login_max_failures;
    if ((rc = want_int(path, root, lines, "login_max_failures", 1, 1000, &v, err)))
        goto fail;
    c->login_max_failures = (int)v;
    v = c->login_window;
    if ((rc = want_int(path, root, lines, "login_window", 1, 86400, &v, err)))
        goto fail;
    c->login_window = (int)v;
    v = c->task_retention_days;
    if ((rc = want_int(path, root, lines, "task_retention_days", 1, 36500, &v, err)))
        goto fail;
    c->task_retention_days = (int)v;
    if ((rc = want_i32(path, root, lines, "login_max_failures_per_ip", 1, 100000, &c->login_max_failures_per_ip,
                       err)) ||
        (rc = want_i32(path, root, lines, "login_account_slow_after", 1, 100000, &c->login_account_slow_after, err)) ||
        (rc = want_i32(path, root, lines, "http_max_connections", 64, 1 << 20, &c->http_max_connections, err)) ||
        (rc = want_i32(path, root, lines, "http_max_connections_per_ip", 0, 1 << 20, &c->http_max_connections_per_ip,
                       err)) ||
        (rc = want_i32(path, root, lines, "http_header_timeout", 1, 3600, &c->http_header_timeout, err)))
        goto fail;
    json_t *du = json_object_get(root, "durability"); /* issue 16: see db_sync_ack */
    if (du && !(json_is_string(du) && (!strcmp(json_string_value(du), "strict") ||
                                       (c->durability_relaxed = !strcmp(json_string_value(du), "relaxed"))))) {
        rc = err_set(err, MB_EINVAL, "%s:%zu: durability must be strict or relaxed", path, line_of(lines, "durability"));
        goto fail;
    }
    if ((rc = want_int(path, root, lines, "durability_window_ms", 1, 10000, &c->durability_window_ms, err)))
        goto fail;
    if ((rc = want_bool(path, root, lines, "chunk_direct_io", "chunk_direct_io", &c->chunk_direct_io, err)))
        goto fail;
    if ((rc = want_auto(path, root, lines, "chunk_large_folios", &c->chunk_large_folios, err)) ||
        (rc = want_auto(path, root, lines, "chunk_read_direct", &c->chunk_read_direct, err)))
        goto fail;
    if ((rc = metrics_cfg_check(path, root, lines, err)) || (rc = logs_check(path, root, lines, err)))
        goto fail;
    json_t *ll = json_object_get(root, "log_level");
    if (ll) {
        const char *names[] = {"debug", "info", "warn", "error"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (json_is_string(ll) && !strcmp(json_string_value(ll), names[i]))
                found = i;
        if (found < 0) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: log_level must be debug, info, warn or error", path,
                         line_of(lines, "log_level"));
            goto fail;
        }
        c->log_level = found;
    }
    json_t *mods = json_object_get(root, "modules");
    size_t nm = 0;
    if (mods) {
        if (!json_is_object(mods)) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: modules must map module names to true or false", path,
                         line_of(lines, "modules"));
            goto fail;
        }
        nm = json_object_size(mods);
    }
    json_t *tp = json_object_get(root, "trusted_proxies");
    if (tp && !json_is_null(tp)) {
        if (!json_is_array(tp)) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: trusted_proxies must be a list of IP addresses", path,
                         line_of(lines, "trusted_proxies"));
            goto fail;
        }
        c->trusted_proxies = xcalloc(json_array_size(tp) + 1, sizeof(char *));
        size_t k;
        json_t *a;
        json_array_foreach(tp, k, a)
        {
            unsigned char buf[16];
            const char *ip = json_string_value(a);
            if (!ip || (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1)) {
                rc = err_set(err, MB_EINVAL, "%s:%zu: trusted_proxies: '%s' is not an IP address", path,
                             line_of(lines, "trusted_proxies"), ip ? ip : "(not a string)");
                goto fail;
            }
            c->trusted_proxies[k] = xstrdup(ip);
        }
    }
    c->modules_enabled = xcalloc(nm + 1, sizeof(char *));
    size_t i = 0;
    if (mods)
        json_object_foreach(mods, key, val)
        {
            char kp[300];
            snprintf(kp, sizeof kp, "modules.%s", key);
            if (!json_is_boolean(val)) {
                rc = err_set(err, MB_EINVAL, "%s:%zu: modules.%s must be true or false", path, line_of(lines, kp),
                             key);
                goto fail;
            }
            if (strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(key) || strlen(key) > 64) {
                rc = err_set(err, MB_EINVAL, "%s:%zu: '%s' is not a module name (a-z, 0-9, _)", path,
                             line_of(lines, kp), key);
                goto fail;
            }
            if (json_is_true(val))
                c->modules_enabled[i++] = xstrdup(key);
        }

    /* Environment overrides (the contract of issue 2). */
    const char *e;
    if ((e = getenv("MBYTE_LISTEN")) && *e && (rc = parse_listen("MBYTE_LISTEN", e, &c->listen_host,
                                                                   &c->listen_port, err)))
        goto fail;
    if ((e = getenv("MBYTE_DATA")) && *e) {
        free(c->data_dir);
        c->data_dir = xstrdup(e);
    }
    if ((e = getenv("MBYTE_MODULE_DIR")) && *e) {
        free(c->module_dir);
        c->module_dir = xstrdup(e);
    }
    if ((e = getenv("MBYTE_WEB_DIR")) && *e) {
        free(c->web_dir);
        c->web_dir = xstrdup(e);
    }
    if ((e = getenv("MBYTE_LUA_DIR")) && *e) {
        free(c->lua_dir);
        c->lua_dir = xstrdup(e);
    }
    if ((rc = cluster_check(path, root, lines, c, err)))
        goto fail;
    /* A node tells the others where to reach it: its listen address unless told otherwise. */
    if (c->cluster_etcd && !c->cluster_advertise) {
        if (!strcmp(c->listen_host, "0.0.0.0") || !strcmp(c->listen_host, "::")) {
            rc = err_set(err, MB_EINVAL, "%s:%zu: cluster.advertise (or MBYTE_ADVERTISE) is needed when listen is %s: "
                         "the address the other nodes reach this one at", path, line_of(lines, "cluster"),
                         c->listen_host);
            goto fail;
        }
        char a[300];
        snprintf(a, sizeof a, strchr(c->listen_host, ':') ? "[%s]:%d" : "%s:%d", c->listen_host, c->listen_port);
        c->cluster_advertise = xstrdup(a);
    }
    c->raw = root;
    json_decref(lines);
    return 0;
fail:
    json_decref(root);
    json_decref(lines);
    cfg_free(c);
    return rc;
}

/* ------------------------------------------------------- module config --- */

int cfg_module(const char *file, const json_t *yaml, const json_t *lines, const mb_config_key *keys, json_t **out,
               mb_err *err)
{
    json_t *res = json_object();
    const char *key;
    json_t *val;
    if (yaml)
        json_object_foreach((json_t *)yaml, key, val)
        {
            const mb_config_key *k = keys;
            while (k && k->name && strcmp(k->name, key))
                k++;
            if (!k || !k->name) {
                json_decref(res);
                return err_set(err, MB_EINVAL, "%s:%zu: unknown key '%s'", file, line_of(lines, key), key);
            }
        }
    for (const mb_config_key *k = keys; k && k->name; k++) {
        json_t *v = yaml ? json_object_get(yaml, k->name) : NULL;
        json_t *owned = NULL;
        if (!v && k->default_value) {
            mb_err e2;
            json_t *doc = NULL;
            char text[1200];
            snprintf(text, sizeof text, "v: %s\n", k->default_value);
            if (cfg_yaml_parse("default", text, strlen(text), &doc, NULL, &e2) == 0) {
                owned = json_incref(json_object_get(doc, "v"));
                json_decref(doc);
            }
            v = owned;
        }
        if (!v)
            continue;
        size_t line = line_of(lines, k->name);
        bool ok = true;
        const char *want = "";
        switch (k->type) {
        case MB_CFG_STRING:
            ok = json_is_string(v);
            want = "a string";
            break;
        case MB_CFG_INT:
            ok = json_is_integer(v);
            want = "a whole number";
            if (ok && (k->min || k->max) &&
                (json_integer_value(v) < k->min || json_integer_value(v) > k->max)) {
                json_decref(owned);
                json_decref(res);
                return err_set(err, MB_EINVAL, "%s:%zu: %s must be between %lld and %lld", file, line, k->name,
                               (long long)k->min, (long long)k->max);
            }
            break;
        case MB_CFG_BOOL:
            ok = json_is_boolean(v);
            want = "true or false";
            break;
        case MB_CFG_LIST:
            ok = json_is_array(v);
            want = "a list";
            break;
        case MB_CFG_MAP:
            ok = json_is_object(v);
            want = "a mapping of keys";
            break;
        }
        if (!ok) {
            json_decref(owned);
            json_decref(res);
            return err_set(err, MB_EINVAL, "%s:%zu: %s must be %s", file, line, k->name, want);
        }
        json_object_set(res, k->name, v);
        json_decref(owned);
    }
    *out = res;
    return 0;
}
