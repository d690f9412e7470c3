/* tests/modules/slowfini — a blob backend "slow" (chunks as files in the directory of its
 * setting `dir`) whose fini takes 1.5 s and refuses the first unload it is asked for. Any call
 * into the backend once fini has begun aborts the server: the kernel must stop new calls when
 * an unload starts, not when fini has returned, and open the backend again when fini refuses.
 * Each get takes `get_ms` (default 0), so that a download of many chunks lasts long enough for
 * an unload to begin in its middle (a download that has begun must end whole).
 * Test-only (test_modules' BackendUnloadTest). */
#include "mbyte.h"
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const mb_api *api;
    mb_module *self;
    char dir[512];
    unsigned get_ms;
    atomic_bool finishing;
} slow;

static void check(slow *s, const char *op)
{
    if (atomic_load(&s->finishing)) {
        s->api->log(s->self, MB_LOG_ERROR, "backend %s called while fini runs", op);
        abort();
    }
}

static void path_of(slow *s, const char *key, char *out, size_t n) { snprintf(out, n, "%s/%s", s->dir, key); }

static int put(void *st, const char *key, const void *data, size_t len, mb_err *err)
{
    slow *s = st;
    check(s, "put");
    char p[640];
    path_of(s, key, p, sizeof p);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        if (f)
            fclose(f);
        return s->api->err_set(err, MB_EIO, "cannot write %s", p);
    }
    fclose(f);
    return 0;
}

static int64_t get(void *st, const char *key, uint64_t off, void *buf, size_t len, mb_err *err)
{
    slow *s = st;
    check(s, "get");
    if (s->get_ms)
        usleep(s->get_ms * 1000);
    char p[640];
    path_of(s, key, p, sizeof p);
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return s->api->err_set(err, MB_ENOENT, "no chunk %s", key);
    ssize_t n = pread(fd, buf, len, (off_t)off);
    close(fd);
    return n < 0 ? s->api->err_set(err, MB_EIO, "cannot read %s", p) : (int64_t)n;
}

static int has(void *st, const char *key, mb_err *err)
{
    (void)err;
    slow *s = st;
    check(s, "has");
    char p[640];
    path_of(s, key, p, sizeof p);
    return access(p, F_OK) == 0;
}

static int del(void *st, const char *key, mb_err *err)
{
    (void)err;
    slow *s = st;
    check(s, "del");
    char p[640];
    path_of(s, key, p, sizeof p);
    unlink(p);
    return 0;
}

static int list(void *st, int (*fn)(const char *, uint64_t, int64_t, void *), void *ud, mb_err *err)
{
    (void)fn, (void)ud, (void)err;
    check(st, "list");
    return 0;
}

static const mb_blob_backend ops = {sizeof ops, "slowfini", put, get, has, del, list, NULL};

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    const char *dir = json_string_value(json_object_get(config, "dir"));
    if (!dir)
        return api->err_set(err, MB_EINVAL, "slowfini.yaml: dir is required");
    slow *s = calloc(1, sizeof *s);
    s->api = api;
    s->self = self;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->get_ms = (unsigned)json_integer_value(json_object_get(config, "get_ms"));
    mkdir(s->dir, 0700);
    int rc = api->backend_register(self, "slow", &ops, s, err);
    if (rc) {
        free(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    slow *s = state;
    char mark[600];
    snprintf(mark, sizeof mark, "%s/.refused", s->dir); /* once per test, across copies */
    if (!reloading && access(mark, F_OK) != 0) {
        FILE *f = fopen(mark, "w");
        if (f)
            fclose(f);
        return s->api->err_set(err, MB_EBUSY, "the first unload is refused");
    }
    atomic_store(&s->finishing, true);
    usleep(1500 * 1000); /* the window in which no call may start */
    free(s);
    return 0;
}

static const mb_config_key config_keys[] = {
    {sizeof(mb_config_key), "dir", MB_CFG_STRING, NULL, 0, 0},
    {sizeof(mb_config_key), "get_ms", MB_CFG_INT, "0", 0, 1000},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "slowfini",
    .version = "1.0.0",
    .config = config_keys,
    .init = init,
    .fini = fini,
};
