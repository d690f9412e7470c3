/*
 * tools/mbytectl.c — the admin command line. It speaks the same HTTP API as every other
 * client, through the daemon's local admin socket (<data>/mbyte.sock, owner-only, so being
 * able to open it is the credential), or through MBYTE_URL + MBYTE_TOKEN to a remote server.
 * Each command is one row of the `commands` table at the bottom of this file.
 */
#include "backup_offline.h"
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

typedef struct {
    char *data;
    size_t len;
} buf;

static const char *sock_path, *base_url, *token;
static bool raw_json;

static size_t on_body(char *p, size_t s, size_t n, void *ud)
{
    buf *b = ud;
    size_t k = s * n;
    char *d = realloc(b->data, b->len + k + 1);
    if (!d)
        return 0;
    b->data = d;
    memcpy(b->data + b->len, p, k);
    b->len += k;
    b->data[b->len] = 0;
    return k;
}

static char *escape_seg(const char *s)
{
    CURL *c = curl_easy_init();
    char *e = curl_easy_escape(c, s, 0);
    char *out = strdup(e);
    curl_free(e);
    curl_easy_cleanup(c);
    return out;
}

/* Perform one call; prints the answer; returns the process exit status. */
static int call(const char *method, const char *path, json_t *body, json_t **out)
{
    CURL *c = curl_easy_init();
    char url[4096];
    snprintf(url, sizeof url, "%s%s", base_url ? base_url : "http://localhost", path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (!base_url)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock_path);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    struct curl_slist *h = NULL;
    char auth[300];
    if (base_url && token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    char *payload = NULL;
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    } else if (strcmp(method, "GET"))
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    buf b = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(payload);
    json_decref(body);
    if (rc != CURLE_OK) {
        fprintf(stderr, "mbytectl: cannot reach mbyted (%s): %s\n", base_url ? base_url : sock_path,
                curl_easy_strerror(rc));
        free(b.data);
        return 3;
    }
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    if (status >= 400) {
        const char *detail = j ? json_string_value(json_object_get(j, "detail")) : NULL;
        fprintf(stderr, "mbytectl: %ld %s\n", status, detail ? detail : (b.data ? b.data : ""));
        json_decref(j);
        free(b.data);
        return 1;
    }
    if (out)
        *out = j;
    else {
        if (j) {
            char *s = json_dumps(j, JSON_INDENT(2));
            puts(s);
            free(s);
        } else if (b.data)
            fputs(b.data, stdout);
        json_decref(j);
    }
    free(b.data);
    return 0;
}

static char *read_password(const char *prompt)
{
    const char *env = getenv("MBYTE_PASSWORD");
    if (env)
        return strdup(env);
    static char line[1100];
    struct termios old, noecho;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &noecho);
    }
    char *r = fgets(line, sizeof line, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fprintf(stderr, "\n");
    }
    if (!r)
        return NULL;
    line[strcspn(line, "\r\n")] = 0;
    return strdup(line);
}

static int print_table(json_t *arr, const char *const *cols)
{
    size_t i;
    json_t *row;
    for (const char *const *c = cols; *c; c++)
        printf("%-20s", *c);
    printf("\n");
    json_array_foreach(arr, i, row)
    {
        for (const char *const *c = cols; *c; c++) {
            json_t *v = json_object_get(row, *c);
            char *s = v ? (json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY))
                        : strdup("-");
            printf("%-20s", s);
            free(s);
        }
        printf("\n");
    }
    json_decref(arr);
    return 0;
}

static int listing(const char *path, const char *const *cols)
{
    json_t *j = NULL;
    int rc = call("GET", path, NULL, raw_json ? NULL : &j);
    if (rc || raw_json)
        return rc;
    json_t *arr = json_is_array(j) ? j : json_incref(json_object_get(j, "items"));
    if (arr != j)
        json_decref(j);
    return print_table(arr ? arr : json_array(), cols);
}

/* ----------------------------------------------------------- commands --- */

static int c_user_add(int argc, char **argv)
{
    if (argc < 1)
        return -1;
    const char *role = "user";
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--role"))
            role = argv[i + 1];
    char *pw = read_password("password: ");
    if (!pw)
        return -1;
    int rc = call("POST", "/api/v1/admin/users",
                  json_pack("{s:s, s:s, s:s}", "username", argv[0], "password", pw, "role", role), NULL);
    free(pw);
    return rc;
}

static int c_user_list(int argc, char **argv)
{
    (void)argc, (void)argv;
    static const char *const cols[] = {"id", "username", "role", NULL};
    return listing("/api/v1/admin/users", cols);
}

static int c_user_passwd(int argc, char **argv)
{
    if (argc < 1)
        return -1;
    char *pw = read_password("new password: ");
    if (!pw)
        return -1;
    char path[512];
    char *e = escape_seg(argv[0]);
    snprintf(path, sizeof path, "/api/v1/admin/users/%s", e);
    free(e);
    int rc = call("PATCH", path, json_pack("{s:s}", "password", pw), NULL);
    free(pw);
    return rc;
}

static int c_token_create(int argc, char **argv)
{
    const char *user = NULL, *name = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--user") && i + 1 < argc)
            user = argv[++i];
        else if (!name)
            name = argv[i];
    }
    if (!user || !name)
        return -1;
    char path[512];
    char *e = escape_seg(user);
    snprintf(path, sizeof path, "/api/v1/admin/users/%s/tokens", e);
    free(e);
    return call("POST", path, json_pack("{s:s}", "name", name), NULL);
}

static int c_token_list(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[0], "--user"))
        return -1;
    char path[512];
    char *e = escape_seg(argv[1]);
    snprintf(path, sizeof path, "/api/v1/admin/users/%s/tokens", e);
    free(e);
    static const char *const cols[] = {"id", "name", "created", "expires", NULL};
    return listing(path, cols);
}

static int c_token_revoke(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "--user"))
        return -1;
    char path[512];
    char *u = escape_seg(argv[2]), *t = escape_seg(argv[0]);
    snprintf(path, sizeof path, "/api/v1/admin/users/%s/tokens/%s", u, t);
    free(u);
    free(t);
    return call("DELETE", path, NULL, NULL);
}

static int c_module_list(int argc, char **argv)
{
    (void)argc, (void)argv;
    static const char *const cols[] = {"name", "version", "state", "enabled", NULL};
    return listing("/api/v1/admin/modules", cols);
}

static int module_action(int argc, char **argv, const char *action)
{
    if (argc < 1)
        return -1;
    char path[512];
    char *e = escape_seg(argv[0]);
    snprintf(path, sizeof path, "/api/v1/admin/modules/%s/%s", e, action);
    free(e);
    return call("POST", path, NULL, NULL);
}

static int c_module_load(int argc, char **argv) { return module_action(argc, argv, "load"); }
static int c_module_unload(int argc, char **argv) { return module_action(argc, argv, "unload"); }
static int c_module_reload(int argc, char **argv) { return module_action(argc, argv, "reload"); }

static int c_task_list(int argc, char **argv)
{
    (void)argc, (void)argv;
    static const char *const cols[] = {"id", "type", "state", "progress", "attempts", NULL};
    return listing("/api/v1/admin/tasks", cols);
}

static int c_task_cancel(int argc, char **argv)
{
    if (argc < 1)
        return -1;
    char path[256];
    snprintf(path, sizeof path, "/api/v1/tasks/%s/cancel", argv[0]);
    return call("POST", path, NULL, NULL);
}

/* decrypt ARGS: no server needed. The decrypter is its own program (tools/mbyte-decrypt.c, linked
 * with the kernel's format code, which mbytectl is not); run the one installed beside this one, or
 * the one on PATH, with the same arguments, as git runs git-<command>. */
static int c_decrypt(int argc, char **argv)
{
    char self[4096], prog[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (!args)
        return 1;
    args[0] = "mbyte-decrypt";
    for (int i = 0; i < argc; i++)
        args[i + 1] = argv[i];
    fflush(NULL);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(prog, sizeof prog, "%s/mbyte-decrypt", self);
            execv(prog, args);
        }
    }
    execvp("mbyte-decrypt", args);
    fprintf(stderr, "mbytectl decrypt: cannot run mbyte-decrypt (beside mbytectl or on PATH): %s\n", strerror(errno));
    free(args);
    return 1;
}

static int c_status(int argc, char **argv)
{
    (void)argc, (void)argv;
    return call("GET", "/api/v1/admin/status", NULL, NULL);
}

static int c_fsck(int argc, char **argv)
{
    bool repair = argc > 0 && !strcmp(argv[0], "--repair");
    json_t *j = NULL;
    int rc = call("POST", repair ? "/api/v1/admin/fsck?repair=true" : "/api/v1/admin/fsck", NULL, &j);
    if (rc)
        return rc;
    char *s = json_dumps(j, JSON_INDENT(2));
    puts(s);
    free(s);
    json_t *problems = json_object_get(j, "problems");
    bool clean = json_is_array(problems) && json_array_size(problems) == 0;
    bool unrepaired = json_integer_value(json_object_get(j, "unrepaired")) > 0;
    json_decref(j);
    return clean ? 0 : (repair && !unrepaired ? 0 : 1);
}

/* One line per module, "<name>: <action>[: reason]", and under it its secret references by
 * name (never a value): "  <key>: <ref>: resolves". */
static void print_outcomes(const json_t *mods)
{
    size_t i;
    json_t *m;
    json_array_foreach(mods, i, m)
    {
        const char *detail = json_string_value(json_object_get(m, "detail"));
        printf("%s: %s%s%s\n", json_string_value(json_object_get(m, "module")),
               json_string_value(json_object_get(m, "action")), detail && *detail ? ": " : "", detail ? detail : "");
        size_t k;
        json_t *r;
        json_array_foreach(json_object_get(m, "secrets"), k, r)
        {
            const char *why = json_string_value(json_object_get(r, "error"));
            printf("  %s: %s: %s%s%s\n", json_string_value(json_object_get(r, "key")),
                   json_string_value(json_object_get(r, "ref")),
                   json_is_true(json_object_get(r, "resolves")) ? "resolves" : "does not resolve", why ? ": " : "",
                   why ? why : "");
        }
    }
}

/* config reload | config check | secrets refresh: the outcome per module; exit 1 when anything
 * was refused. */
static int config_call(const char *path)
{
    json_t *j = NULL;
    int rc = call("POST", path, NULL, &j);
    if (rc)
        return rc;
    if (raw_json) {
        char *s = json_dumps(j, JSON_INDENT(2));
        puts(s);
        free(s);
    } else {
        if (json_object_get(j, "kernel"))
            printf("kernel: %s\n", json_string_value(json_object_get(j, "kernel")));
        if (json_object_get(j, "providers_changed"))
            printf("providers with new values: %lld\n",
                   (long long)json_integer_value(json_object_get(j, "providers_changed")));
        print_outcomes(json_object_get(j, "modules"));
    }
    bool ok = json_object_get(j, "ok") ? json_is_true(json_object_get(j, "ok"))
                                       : json_integer_value(json_object_get(j, "refused")) == 0;
    json_decref(j);
    return ok ? 0 : 1;
}

static int c_config_reload(int argc, char **argv)
{
    (void)argv;
    return argc ? -1 : config_call("/api/v1/admin/config/reload");
}

static int c_config_check(int argc, char **argv)
{
    (void)argv;
    return argc ? -1 : config_call("/api/v1/admin/config/check");
}

/* secrets refresh: the providers read every reference again now; modules whose settings
 * changed get them. */
static int c_secrets_refresh(int argc, char **argv)
{
    (void)argv;
    return argc ? -1 : config_call("/api/v1/admin/secrets/refresh");
}

/* Follow task `id` until it ends, printing "<what>: N% message" on stderr when it changes.
 * *out: the final task record (caller frees); returns 0 when the task is done, 1 otherwise. */
static int follow_task(const char *what, json_int_t id, json_t **out)
{
    char path[128], last[512] = "";
    snprintf(path, sizeof path, "/api/v1/tasks/%lld", (long long)id);
    for (;;) {
        json_t *j = NULL;
        int rc = call("GET", path, NULL, &j);
        if (rc)
            return rc;
        const char *state = json_string_value(json_object_get(j, "state"));
        const char *msg = json_string_value(json_object_get(j, "message"));
        char line[512];
        snprintf(line, sizeof line, "%s: %lld%% %s", what, (long long)json_integer_value(json_object_get(j, "progress")),
                 msg ? msg : "");
        if (strcmp(line, last) && !raw_json)
            fprintf(stderr, "%s\n", line);
        snprintf(last, sizeof last, "%s", line);
        if (state && (!strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled"))) {
            *out = j;
            if (strcmp(state, "done")) {
                json_t *res = json_object_get(j, "error");
                fprintf(stderr, "mbytectl: the %s %s: %s\n", what, state,
                        json_is_string(res) ? json_string_value(res) : "(no reason given)");
                return 1;
            }
            return 0;
        }
        json_decref(j);
        usleep(200 * 1000);
    }
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    puts(s);
    free(s);
}

/* backup DIR: the server copies one point in time into DIR (a task); follow its progress. */
static int c_backup(int argc, char **argv)
{
    if (argc != 1)
        return -1;
    json_t *j = NULL;
    int rc = call("POST", "/api/v1/admin/backup", json_pack("{s:s}", "dir", argv[0]), &j);
    if (rc)
        return rc;
    json_int_t id = json_integer_value(json_object_get(j, "task"));
    json_decref(j);
    j = NULL;
    rc = follow_task("backup", id, &j);
    json_t *res = json_object_get(j, "result");
    if (!rc && !raw_json)
        printf("backup %s into %s: %lld keys, %lld chunks, %lld copied (%lld bytes) in %.1f s\n",
               json_string_value(json_object_get(res, "name")), argv[0],
               (long long)json_integer_value(json_object_get(res, "keys")),
               (long long)json_integer_value(json_object_get(res, "chunks")),
               (long long)json_integer_value(json_object_get(res, "copied")),
               (long long)json_integer_value(json_object_get(res, "copied_bytes")),
               json_number_value(json_object_get(res, "seconds")));
    else if (!rc)
        print_json(res);
    json_decref(j);
    return rc;
}

/* search rebuild [STORE]: the search module rebuilds one store's index or all (a task). */
static int c_search_rebuild(int argc, char **argv)
{
    if (argc > 1 || (argc == 1 && strspn(argv[0], "0123456789") != strlen(argv[0])))
        return -1;
    json_t *j = NULL;
    int rc = call("POST", "/api/v1/admin/search/rebuild",
                  argc ? json_pack("{s:I}", "store", (json_int_t)strtoll(argv[0], NULL, 10)) : json_object(), &j);
    if (rc)
        return rc;
    json_int_t id = json_integer_value(json_object_get(j, "task"));
    json_decref(j);
    j = NULL;
    rc = follow_task("search rebuild", id, &j);
    if (!rc && !raw_json)
        printf("search index rebuilt: %lld store(s)\n",
               (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "stores")));
    else if (!rc)
        print_json(json_object_get(j, "result"));
    json_decref(j);
    return rc;
}

/* search status: per store, documents indexed, queued and failed (with reasons). */
static int c_search_status(int argc, char **argv)
{
    (void)argv;
    if (argc)
        return -1;
    json_t *j = NULL;
    int rc = call("GET", "/api/v1/search/status", NULL, &j);
    if (rc)
        return rc;
    if (raw_json)
        print_json(j);
    else {
        size_t i, k;
        json_t *st, *f;
        json_array_foreach(json_object_get(j, "stores"), i, st)
        {
            printf("store %lld %s: %lld indexed, %lld queued, %lld failed, %lld skipped\n",
                   (long long)json_integer_value(json_object_get(st, "store")),
                   json_string_value(json_object_get(st, "name")),
                   (long long)json_integer_value(json_object_get(st, "indexed")),
                   (long long)json_integer_value(json_object_get(st, "queued")),
                   (long long)json_integer_value(json_object_get(st, "failed")),
                   (long long)json_integer_value(json_object_get(st, "skipped")));
            json_array_foreach(json_object_get(st, "failures"), k, f)
            printf("  failed %s: %s\n", json_string_value(json_object_get(f, "path")),
                   json_string_value(json_object_get(f, "reason")));
        }
        if (json_is_true(json_object_get(j, "catching_up")))
            printf("(still catching up with changes made while the module was not loaded)\n");
    }
    json_decref(j);
    return 0;
}

static int c_backup_verify(int argc, char **argv)
{
    if (argc == 1)
        return backup_verify(argv[0], NULL);
    if (argc == 3 && !strcmp(argv[1], "--snapshot"))
        return backup_verify(argv[0], argv[2]);
    return -1;
}

/* backup prune DIR [--keep-last N]: forget old snapshots and delete unreferenced chunks. */
static int c_backup_prune(int argc, char **argv)
{
    if (argc == 1)
        return backup_prune(argv[0], 0);
    char *end = NULL;
    long keep = argc == 3 && !strcmp(argv[1], "--keep-last") ? strtol(argv[2], &end, 10) : 0;
    if (keep >= 1 && keep <= 100000 && !*end)
        return backup_prune(argv[0], (int)keep);
    return -1;
}

static int c_restore(int argc, char **argv)
{
    const char *data = NULL, *snap = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--data"))
            data = argv[i + 1];
        else if (!strcmp(argv[i], "--snapshot"))
            snap = argv[i + 1];
        else
            return -1;
    }
    if (argc < 3 || argc % 2 == 0 || !data)
        return -1;
    return backup_restore(argv[0], snap, data);
}

static void print_indented(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    puts(s);
    free(s);
}

/* audit verify: the audit module walks its hash chain; exit 1 and name the first bad entry. */
static int c_audit_verify(int argc, char **argv)
{
    (void)argc, (void)argv;
    json_t *j = NULL;
    int rc = call("GET", "/api/v1/admin/audit/verify", NULL, &j);
    if (rc)
        return rc;
    int ok = json_is_true(json_object_get(j, "ok"));
    json_t *bad = json_object_get(j, "first_bad");
    if (raw_json)
        print_indented(j);
    else if (ok)
        printf("audit chain ok: %lld entries verified\n",
               (long long)json_integer_value(json_object_get(j, "verified")));
    else
        printf("audit chain BROKEN at entry %lld (%s): %s\n", (long long)json_integer_value(json_object_get(bad, "seq")),
               json_string_value(json_object_get(bad, "key")), json_string_value(json_object_get(bad, "reason")));
    json_decref(j);
    return ok ? 0 : 1;
}

/* thumbnails status: the cache and the files that got no thumbnail, with the reason. */
static int c_thumbs_status(int argc, char **argv)
{
    (void)argc, (void)argv;
    json_t *j = NULL;
    int rc = call("GET", "/api/v1/admin/thumbnails", NULL, &j);
    if (rc)
        return rc;
    if (raw_json)
        print_indented(j);
    else {
        printf("cache: %lld of %lld bytes; ready %lld, none %lld, queued %lld; made %lld, failed %lld since start\n",
               (long long)json_integer_value(json_object_get(j, "cache_bytes")),
               (long long)json_integer_value(json_object_get(j, "cache_max")),
               (long long)json_integer_value(json_object_get(j, "ready")),
               (long long)json_integer_value(json_object_get(j, "none")),
               (long long)json_integer_value(json_object_get(j, "queued")),
               (long long)json_integer_value(json_object_get(j, "made")),
               (long long)json_integer_value(json_object_get(j, "failed")));
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(j, "failures"), i, f)
            printf("  %.16s  %-6s %s\n", json_string_value(json_object_get(f, "sha256")),
                   json_string_value(json_object_get(f, "kind")), json_string_value(json_object_get(f, "reason")));
    }
    json_decref(j);
    return 0;
}

static int thumbs_action(const char *verb)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/admin/thumbnails/%s", verb);
    json_t *j = NULL;
    int rc = call("POST", path, NULL, &j);
    if (!rc)
        printf("%lld thumbnail files removed%s\n", (long long)json_integer_value(json_object_get(j, "removed")),
               strcmp(verb, "rebuild") ? "" : "; every file is queued to be made again");
    json_decref(j);
    return rc;
}

static int c_thumbs_purge(int argc, char **argv) { return (void)argc, (void)argv, thumbs_action("purge"); }
static int c_thumbs_rebuild(int argc, char **argv) { return (void)argc, (void)argv, thumbs_action("rebuild"); }

static int c_rules_reload(int argc, char **argv)
{
    (void)argc, (void)argv;
    json_t *j = NULL;
    int rc = call("POST", "/api/v1/admin/tags/rules/reload", NULL, raw_json ? NULL : &j);
    if (!rc && !raw_json) {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(j, "rules"), i, r) printf("%s\n", json_string_value(r));
        printf("%zu global rule(s); error counts cleared for %lld\n", json_array_size(json_object_get(j, "rules")),
               (long long)json_integer_value(json_object_get(j, "reset")));
    }
    json_decref(j);
    return rc;
}

typedef struct {
    const char *group, *verb;
    int (*fn)(int, char **);
    const char *usage;
} command;

static const command commands[] = {
    {"user", "add", c_user_add, "user add NAME [--role user|admin]   (password from stdin or MBYTE_PASSWORD)"},
    {"user", "list", c_user_list, "user list"},
    {"user", "passwd", c_user_passwd, "user passwd NAME   (password from stdin or MBYTE_PASSWORD)"},
    {"token", "create", c_token_create, "token create NAME --user USER   (prints the token once)"},
    {"token", "list", c_token_list, "token list --user USER"},
    {"token", "revoke", c_token_revoke, "token revoke ID --user USER"},
    {"module", "list", c_module_list, "module list"},
    {"module", "load", c_module_load, "module load NAME"},
    {"module", "unload", c_module_unload, "module unload NAME"},
    {"module", "reload", c_module_reload, "module reload NAME"},
    {"task", "list", c_task_list, "task list"},
    {"task", "cancel", c_task_cancel, "task cancel ID"},
    {"status", NULL, c_status, "status"},
    {"decrypt", NULL, c_decrypt,
     "decrypt --key FILE|--datakey FILE --manifest FILE --objects DIR [--prefix P] --out FILE   (no server "
     "needed: a file back from a backend's objects, docs/crypto.md)"},
    {"fsck", NULL, c_fsck, "fsck [--repair]"},
    {"config", "reload", c_config_reload, "config reload   (re-read conf.d now, as SIGHUP does; exit 1 if a file was refused)"},
    {"config", "check", c_config_check, "config check   (validate conf.d without applying it; exit 1 names the problems)"},
    {"secrets", "refresh", c_secrets_refresh,
     "secrets refresh   (read every secret reference again now; modules whose values changed get them)"},
    {"backup", "verify", c_backup_verify, "backup verify DIR [--snapshot NAME]   (no server needed; exit 1 names damage)"},
    {"backup", "prune", c_backup_prune,
     "backup prune DIR [--keep-last N]   (no server needed: drops all but the newest N snapshots, then every chunk "
     "none of those lists)"},
    {"backup", NULL, c_backup, "backup DIR   (the running server copies one point in time into DIR, incrementally)"},
    {"restore", NULL, c_restore, "restore DIR --data NEWDIR [--snapshot NAME]   (no server needed; NEWDIR must be new)"},
    {"search", "rebuild", c_search_rebuild, "search rebuild [STORE]   (rebuild one store's search index, or all; follows the task)"},
    {"search", "status", c_search_status, "search status   (per store: indexed, queued, failed with reasons)"},
    {"rules", "reload", c_rules_reload,
     "rules reload   (tags: clear the global rules' error counts after fixing their files; lists them)"},
    {"audit", "verify", c_audit_verify, "audit verify   (checks the audit log's hash chain; exit 1 names the first bad entry)"},
    {"thumbnails", "status", c_thumbs_status, "thumbnails status   (cache use, and the files without one with the reason)"},
    {"thumbnails", "purge", c_thumbs_purge, "thumbnails purge   (empty the thumbnail cache; they are made again when asked for)"},
    {"thumbnails", "rebuild", c_thumbs_rebuild, "thumbnails rebuild   (empty the cache and queue every file)"},
};

static void usage(void)
{
    fprintf(stderr, "usage: mbytectl [--data DIR | --url URL] [--json] COMMAND\n"
                    "  talks to mbyted through DIR/mbyte.sock (default $MBYTE_DATA or " MBYTE_STATE_DIR "),\n"
                    "  or to URL with the token in MBYTE_TOKEN\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stderr, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    const char *data = getenv("MBYTE_DATA") ? getenv("MBYTE_DATA") : MBYTE_STATE_DIR; /* the installed data dir */
    base_url = getenv("MBYTE_URL");
    token = getenv("MBYTE_TOKEN");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc)
            data = argv[++i];
        else if (!strcmp(argv[i], "--url") && i + 1 < argc)
            base_url = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            raw_json = true;
        else {
            usage();
            return 2;
        }
    }
    if (i >= argc) {
        usage();
        return 2;
    }
    char sp[4096];
    snprintf(sp, sizeof sp, "%s/mbyte.sock", data);
    sock_path = sp;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = -1;
    bool found = false;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        const command *c = &commands[k];
        if (strcmp(argv[i], c->group))
            continue;
        if (c->verb && (i + 1 >= argc || strcmp(argv[i + 1], c->verb)))
            continue;
        int skip = c->verb ? 2 : 1;
        found = true;
        rc = c->fn(argc - i - skip, argv + i + skip);
        if (rc < 0)
            fprintf(stderr, "usage: mbytectl %s\n", c->usage);
        break;
    }
    curl_global_cleanup();
    if (!found) {
        usage();
        return 2;
    }
    return rc < 0 ? 2 : rc;
}
