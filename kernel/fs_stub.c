/*
 * fs_stub.c — TEMPORARY (branch tus only): a trivial kernel/fs.h so tus.c and zip.c link
 * and their tests run before the real file service (fs.c, files_http.c) is merged.
 * REMOVE WHEN fs.c LANDS (meson.build lists it on its own line).
 *
 * Model: store id == owner's user id; a file is a plain file under
 * <data_dir>/tmpfiles/<sid>/<path>, written to a temp file, fsync'ed and renamed into
 * place (so a crash shows the old or the new content). It also serves the few routes the
 * tests need: GET /api/v1/stores, PUT/GET /api/v1/stores/{sid}/files/{path*} (GET of a
 * folder answers a zip) and POST /api/v1/admin/fsck (always clean: there are no chunks).
 * No quotas, no events, no chunks.
 */
#include "kernel.h"
#include "fs.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int stub_routes(mb_err *err);

struct fs_writer {
    int fd;
    char tmp[4300], dst[4300];
    uint64_t size;
    bool existed;
};
struct fs_reader {
    int fd;
};

static char root[4200];

static int resolve(const mb_user *u, uint64_t sid, const char *path, char *out, size_t n, mb_err *err)
{
    if (!u || sid != u->id)
        return err_set(err, MB_ENOENT, "no such store");
    while (*path == '/')
        path++;
    /* Every segment must be a valid name: no '.', '..', empty or overlong segments. */
    const char *p = path;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if ((l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.') || l > 255 || (l == 0 && e))
            return err_set(err, MB_EINVAL, "the path has an invalid name");
        p += l + (e ? 1 : 0);
    }
    snprintf(out, n, "%s/%llu", root, (unsigned long long)sid);
    mkdir_p(out, 0700); /* a user's store exists from the start */
    snprintf(out, n, "%s/%llu%s%s", root, (unsigned long long)sid, *path ? "/" : "", path);
    return 0;
}

int fs_init(mb_err *err)
{
    snprintf(root, sizeof root, "%s/tmpfiles", g_cfg->data_dir);
    char t[4300];
    snprintf(t, sizeof t, "%s/.tmp", root);
    if (mkdir_p(t, 0700))
        return err_set(err, MB_EIO, "cannot create %s", t);
    return stub_routes(err);
}

void fs_fini(void) {}

int fs_write_begin(const mb_user *u, uint64_t sid, const char *path, int64_t expected_size,
                   const char *expect_sha256, int flags, fs_writer **w, mb_err *err)
{
    (void)expected_size, (void)expect_sha256;
    char dst[4300];
    int rc = resolve(u, sid, path, dst, sizeof dst, err);
    if (rc)
        return rc;
    char *slash = strrchr(dst, '/');
    if (!slash || strlen(slash + 1) == 0)
        return err_set(err, MB_EINVAL, "a file needs a name");
    *slash = 0;
    struct stat st;
    if (stat(dst, &st) || !S_ISDIR(st.st_mode)) {
        if (!(flags & FS_PARENTS))
            return err_set(err, MB_ECONFLICT, "the parent folder does not exist");
        if (mkdir_p(dst, 0700))
            return err_set(err, MB_EIO, "cannot create the parent folder");
    }
    *slash = '/';
    bool existed = !stat(dst, &st);
    if (existed && S_ISDIR(st.st_mode))
        return err_set(err, MB_ECONFLICT, "a folder has that name");
    if (existed && (flags & FS_NO_OVERWRITE))
        return err_set(err, MB_EEXIST, "the file exists");
    fs_writer *x = xcalloc(1, sizeof *x);
    char rnd[33];
    random_hex(rnd, 16);
    snprintf(x->tmp, sizeof x->tmp, "%s/.tmp/%s", root, rnd);
    snprintf(x->dst, sizeof x->dst, "%s", dst);
    x->existed = existed;
    x->fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (x->fd < 0) {
        free(x);
        return err_set(err, MB_EIO, "cannot create a temp file");
    }
    *w = x;
    return 0;
}

int fs_write_data(fs_writer *w, const void *buf, size_t n, mb_err *err)
{
    const char *b = buf;
    while (n) {
        ssize_t k = write(w->fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return err_set(err, MB_EIO, "write failed: %s", strerror(errno));
        b += k;
        n -= (size_t)k;
        w->size += (uint64_t)k;
    }
    return 0;
}

int fs_write_commit(fs_writer *w, json_t **info, bool *created, mb_err *err)
{
    int rc = 0;
    if (fsync(w->fd) || rename(w->tmp, w->dst))
        rc = err_set(err, MB_EIO, "commit failed: %s", strerror(errno));
    close(w->fd);
    if (rc)
        unlink(w->tmp);
    else {
        char d[4300];
        snprintf(d, sizeof d, "%s", w->dst);
        *strrchr(d, '/') = 0;
        int dfd = open(d, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        if (info)
            *info = json_pack("{s:I, s:I}", "size", (json_int_t)w->size, "version", (json_int_t)1);
        if (created)
            *created = !w->existed;
    }
    free(w);
    return rc;
}

void fs_write_abort(fs_writer *w)
{
    if (!w)
        return;
    close(w->fd);
    unlink(w->tmp);
    free(w);
}

int fs_open(const mb_user *u, uint64_t sid, const char *path, uint64_t version, fs_reader **r, json_t **info,
            mb_err *err)
{
    (void)version;
    char p[4300];
    int rc = resolve(u, sid, path, p, sizeof p, err);
    if (rc)
        return rc;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return err_set(err, MB_ENOENT, "no such file");
    }
    *r = xcalloc(1, sizeof **r);
    (*r)->fd = fd;
    if (info)
        *info = json_pack("{s:I, s:I}", "size", (json_int_t)st.st_size, "mtime", (json_int_t)st.st_mtime);
    return 0;
}

ssize_t fs_read(fs_reader *r, uint64_t off, void *buf, size_t n, mb_err *err)
{
    ssize_t k = pread(r->fd, buf, n, (off_t)off);
    if (k < 0)
        return err_set(err, MB_EIO, "read failed: %s", strerror(errno));
    return k;
}

void fs_close(fs_reader *r)
{
    if (r) {
        close(r->fd);
        free(r);
    }
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int walk_dir(const char *abs, const char *rel, int (*fn)(const char *, const json_t *, void *), void *ud)
{
    DIR *d = opendir(abs);
    if (!d)
        return MB_EIO;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            names = xrealloc(names, (n + 1) * sizeof *names);
            names[n++] = xstrdup(de->d_name);
        }
    closedir(d);
    qsort(names, n, sizeof *names, name_cmp);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        char a[4300], r[4300];
        snprintf(a, sizeof a, "%s/%s", abs, names[i]);
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        struct stat st;
        if (lstat(a, &st))
            continue;
        bool dir = S_ISDIR(st.st_mode);
        json_t *e = json_pack("{s:s, s:I, s:I}", "type", dir ? "folder" : "file", "size",
                              (json_int_t)(dir ? 0 : st.st_size), "mtime", (json_int_t)st.st_mtime);
        rc = fn(r, e, ud);
        json_decref(e);
        if (!rc && dir)
            rc = walk_dir(a, r, fn, ud);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int fs_walk(const mb_user *u, uint64_t sid, const char *path,
            int (*fn)(const char *relpath, const json_t *entry, void *ud), void *ud, mb_err *err)
{
    char p[4300];
    int rc = resolve(u, sid, path, p, sizeof p, err);
    if (rc)
        return rc;
    struct stat st;
    if (stat(p, &st))
        return err_set(err, MB_ENOENT, "no such folder");
    if (!S_ISDIR(st.st_mode))
        return err_set(err, MB_ECONFLICT, "that is a file");
    rc = walk_dir(p, "", fn, ud);
    if (rc < 0 && !err->code)
        err_set(err, rc, "the walk failed");
    return rc;
}

/* ---- the few routes the tests need ---- */

static int h_stores(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    const mb_user *u = http_req_user(req);
    return http_reply_json(req, 200, json_pack("[{s:I, s:s}]", "id", (json_int_t)u->id, "name", "default"));
}

static ssize_t fd_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    fs_reader *r = cls;
    ssize_t n = pread(r->fd, buf, max, (off_t)pos);
    return n > 0 ? n : (n == 0 ? -1 : -2);
}

static void fd_free(void *cls) { fs_close(cls); }

static int h_get(mb_req *req, void *state, mb_err *err)
{
    (void)state;
    const mb_user *u = http_req_user(req);
    uint64_t sid;
    if (!parse_u64(http_req_param(req, "sid"), &sid))
        return err_set(err, MB_ENOENT, "no such store");
    const char *path = http_req_param(req, "path");
    char p[4300];
    int rc = resolve(u, sid, path, p, sizeof p, err);
    if (rc)
        return rc;
    struct stat st;
    if (!stat(p, &st) && S_ISDIR(st.st_mode))
        return zip_folder_reply(req, u, sid, path, err);
    fs_reader *r = NULL;
    json_t *info = NULL;
    if ((rc = fs_open(u, sid, path, 0, &r, &info, err)))
        return rc;
    uint64_t size = (uint64_t)json_integer_value(json_object_get(info, "size"));
    json_decref(info);
    return http_reply_stream(req, 200, "application/octet-stream", size, fd_read, r, fd_free);
}

typedef struct {
    fs_writer *w;
} put_ctx;

static int put_begin(mb_req *req, void **ctx, mb_err *err)
{
    uint64_t sid;
    if (!parse_u64(http_req_param(req, "sid"), &sid))
        return err_set(err, MB_ENOENT, "no such store");
    put_ctx *c = xcalloc(1, sizeof *c);
    const char *pq = http_req_query(req, "parents");
    int rc = fs_write_begin(http_req_user(req), sid, http_req_param(req, "path"), -1, NULL,
                            pq && !strcmp(pq, "true") ? FS_PARENTS : 0, &c->w, err);
    if (rc) {
        free(c);
        return rc;
    }
    *ctx = c;
    return 0;
}

static int put_data(mb_req *req, void *ctx, const char *buf, size_t len, mb_err *err)
{
    (void)req;
    return fs_write_data(((put_ctx *)ctx)->w, buf, len, err);
}

static int put_end(mb_req *req, void *ctx, mb_err *err)
{
    put_ctx *c = ctx;
    json_t *info = NULL;
    bool created = false;
    int rc = fs_write_commit(c->w, &info, &created, err);
    free(c);
    if (rc)
        return rc;
    json_object_set_new(info, "path", json_string(http_req_param(req, "path")));
    return http_reply_json(req, created ? 201 : 200, info);
}

static void put_abort(mb_req *req, void *ctx)
{
    (void)req;
    put_ctx *c = ctx;
    if (c) {
        fs_write_abort(c->w);
        free(c);
    }
}

static const http_stream_ops put_ops = {put_begin, put_data, put_end, put_abort};

static int h_fsck(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    return http_reply_json(req, 200, json_pack("{s:[], s:i}", "problems", "unrepaired", 0));
}

static int stub_routes(mb_err *err)
{
    int rc;
    if ((rc = http_route_add(NULL, "GET", "/api/v1/stores", MB_ROLE_USER, h_stores, NULL, err)) ||
        (rc = http_route_add(NULL, "GET", "/api/v1/stores/{sid}/files/{path*}", MB_ROLE_USER, h_get, NULL, err)) ||
        (rc = http_stream_route_add("PUT", "/api/v1/stores/{sid}/files/{path*}", MB_ROLE_USER, &put_ops, err)) ||
        (rc = http_route_add(NULL, "POST", "/api/v1/admin/fsck", MB_ROLE_ADMIN, h_fsck, NULL, err)))
        return rc;
    return 0;
}
