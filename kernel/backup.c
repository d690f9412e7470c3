/*
 * backup.c — online backups of a running server (docs/operations.md "Backing up").
 *
 * `POST /api/v1/admin/backup {"dir"}` queues a kernel task ("kernel.backup") that copies one
 * point in time of the server into a backup directory while clients go on writing:
 *   1. the chunk collector is held (gc_hold), so no chunk the point in time references is
 *      deleted before it is copied;
 *   2. the metadata is copied from a LevelDB snapshot into a new database (db_snapshot_copy),
 *      noting on the way every referenced chunk (c/ records with refs > 0) and which of them
 *      live inline in LevelDB (ci/, copied with the metadata);
 *   3. the module files under <data>/m/ (e.g. the FTP module's TLS certificate) are copied;
 *   4. every other referenced chunk is read through the active backend, which checks its
 *      SHA-256, and written into DIR/chunks/ab/cd/<sha256> unless a chunk of that name and size
 *      is already there: backups into the same DIR are incremental, content-addressed;
 *   5. a manifest (counts, and the SHA-256 of every metadata and module file) and the list of
 *      chunks are written, everything is synced, and the snapshot's folder is renamed from
 *      DIR/snapshots/.<name>.partial to DIR/snapshots/<name>; DIR/latest names it.
 * A backup that fails or is cancelled leaves only a .partial folder (removed) and chunk files
 * that later runs reuse. DIR/.lock (flock) keeps `mbytectl backup prune DIR` out meanwhile, so
 * no chunk is deleted between this backup finding it present and listing it. `mbytectl backup verify` and `mbytectl restore` read this layout
 * without a server (tools/mbytectl.c).
 *
 * Threads: the request (POST /api/v1/admin/backup, files_http.c) runs on an HTTP worker, the copy on a task worker. One backup at a time
 * (the `running` flag).
 */
#include "fs.h"
#include "fileio.h"
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_bool running;

typedef struct {
    char hash[65];
    uint64_t size;
    bool inline_;
} bchunk;

typedef struct {
    bchunk *v;
    size_t n, cap;
    mb_err *err;
} bscan;

/* ------------------------------------------------------------ files --- */

/* Writes bytes to path through a temporary file, synced, renamed into place. */
static int put_file(const char *path, const void *data, size_t len, mb_err *err)
{
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(err, MB_EIO, "cannot write %s: %s", tmp, strerror(errno));
    int bad = fio_write_all(fd, data, len) || fsync(fd);
    bad |= close(fd) != 0;
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return err_set(err, MB_EIO, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* fio_walk callbacks: a snapshot file's SHA-256 into the manifest (and the file synced); a module
 * file copied into the snapshot. */
static int hash_one(const char *path, const char *rel, void *ud)
{
    char hex[65];
    unsigned long long size;
    if (fio_sha256_copy(path, NULL, hex, &size) || fio_sync(path, false))
        return -1;
    json_object_set_new(ud, rel, json_string(hex));
    return 0;
}

static int copy_one(const char *path, const char *rel, void *ud)
{
    char to[4500], hex[65];
    unsigned long long size;
    snprintf(to, sizeof to, "%s%s", (const char *)ud, rel);
    return fio_sha256_copy(path, to, hex, &size);
}

static int walk(const char *dir, const char *rel, int (*fn)(const char *, const char *, void *), void *ud,
                mb_err *err)
{
    if (fio_walk(dir, rel, fn, ud))
        return err_set(err, MB_EIO, "cannot copy or read back the files in %s: %s", dir, strerror(errno));
    fio_sync(dir, true);
    return 0;
}

static int rm_tree_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* ----------------------------------------------------------- chunks --- */

/* The referenced chunk named by the 64 hex digits at hash (s->v is sorted by hash), or NULL. */
static bchunk *find_chunk(bscan *s, const char *hash)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = memcmp(s->v[mid].hash, hash, 64);
        if (!cmp)
            return &s->v[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* db_snapshot_copy's callback: referenced chunks (c/ sorts before ci/ and cb/, so the list is
 * complete and sorted by hash when the inline ones and their bodies come). A chunk nobody references any more (refs 0,
 * waiting for the collector's grace) is left out with its record: its bytes are not copied, and
 * a restored server must not find a refcount record without them. */
static int note_key(const char *k, size_t kl, const char *v, size_t vl, void *ud)
{
    bscan *s = ud;
    if (kl == 66 && !memcmp(k, "c/", 2)) {
        json_t *j = json_loadb(v, vl, 0, NULL);
        json_int_t refs = json_integer_value(json_object_get(j, "refs"));
        json_int_t size = json_integer_value(json_object_get(j, "size"));
        json_decref(j);
        if (refs <= 0)
            return 1;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->v = xrealloc(s->v, s->cap * sizeof *s->v);
        }
        bchunk *c = &s->v[s->n++];
        memcpy(c->hash, k + 2, 64);
        c->hash[64] = '\0';
        c->size = size > 0 ? (uint64_t)size : 0;
        c->inline_ = false;
    } else if ((kl == 67 && !memcmp(k, "ci/", 3)) || (kl == BODY_KEY && !memcmp(k, "cb/", 3))) {
        bchunk *c = find_chunk(s, k + kl - 64);
        if (!c)
            return 1; /* an inline chunk nobody references, or its body */
        if (k[1] == 'i')
            c->inline_ = true;
        return 0;
    }
    return 0;
}

/* One chunk into DIR/chunks/ab/cd/<hash>, unless it is there already; *copied says which. */
static int copy_chunk(const char *dir, const bchunk *c, bool *copied, mb_err *err)
{
    char final[4400], folder[4200], tmp[4400];
    snprintf(folder, sizeof folder, "%s/chunks/%.2s/%.2s", dir, c->hash, c->hash + 2);
    snprintf(final, sizeof final, "%s/%s", folder, c->hash);
    struct stat st;
    *copied = false;
    if (!stat(final, &st) && (uint64_t)st.st_size == c->size)
        return 0;
    void *buf = blob_buf_alloc(c->size ? c->size : 1);
    int rc = blob_get(c->hash, buf, c->size, err);
    if (rc) {
        blob_buf_free(buf, c->size ? c->size : 1);
        return rc;
    }
    if (mkdir_p(folder, 0700)) {
        blob_buf_free(buf, c->size ? c->size : 1);
        return err_set(err, MB_EIO, "cannot create %s", folder);
    }
    char rnd[17];
    random_hex(rnd, 8);
    snprintf(tmp, sizeof tmp, "%s/chunks/tmp/%s.%s", dir, c->hash, rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int bad = fd < 0 || fio_write_all(fd, buf, c->size) || fsync(fd);
    if (fd >= 0)
        bad |= close(fd) != 0;
    blob_buf_free(buf, c->size ? c->size : 1);
    if (bad || rename(tmp, final) || fio_sync(folder, true)) {
        int e = errno;
        unlink(tmp);
        return err_set(err, MB_EIO, "cannot write chunk %s into the backup: %s", c->hash, strerror(e));
    }
    *copied = true;
    return 0;
}

/* ----------------------------------------------------------- the task --- */

/* A task's progress, or nothing when the backup runs before the server serves (format.c). */
static bool progress(mb_task *t, int percent, const char *msg)
{
    return t ? task_progress(t, percent, msg) : false;
}

int backup_take(const char *dir, mb_task *t, json_t **out, mb_err *err)
{
    *out = NULL;
    if (!dir || dir[0] != '/' || strlen(dir) > 3000)
        return err_set(err, MB_EINVAL, "a backup needs an absolute directory of at most 3000 bytes");
    bool idle = false;
    if (!atomic_compare_exchange_strong(&running, &idle, true))
        return err_set(err, MB_EBUSY, "another backup is running");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char name[32], part[4300], snaps[4200], path[4400], path2[4400];
    time_t now = (time_t)now_wall();
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(name, sizeof name, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(snaps, sizeof snaps, "%s/snapshots", dir);
    for (int i = 2; i < 100; i++) { /* two backups in one second: 20261203T080512Z-2 */
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", snaps, name);
        if (stat(path, &st))
            break;
        size_t base = strcspn(name, "-");
        snprintf(name + base, sizeof name - base, "-%d", i);
    }
    snprintf(part, sizeof part, "%s/.%s.partial", snaps, name);
    snprintf(path, sizeof path, "%s/chunks/tmp", dir);
    int lock = mkdir_p(path, 0700) ? -1 : fio_lock(dir); /* a prune would delete chunks this backup counts on */
    if (lock < 0 || mkdir_p(part, 0700)) {
        int e = errno;
        if (lock >= 0)
            close(lock);
        atomic_store(&running, false);
        if (e == EWOULDBLOCK)
            return err_set(err, MB_EBUSY, "%s is being pruned (mbytectl backup prune); back up when that is done", dir);
        return err_set(err, MB_EIO, "cannot create the backup folders in %s: %s", dir, strerror(e));
    }

    gc_hold(+1);
    bscan scan = {.err = err};
    uint64_t keys = 0, copied = 0, copied_bytes = 0, files = 0, file_bytes = 0;
    json_t *hashes = json_object();
    progress(t, 0, "copying the metadata at one point in time");
    snprintf(path, sizeof path, "%s/meta", part);
    int rc = db_snapshot_copy(path, note_key, &scan, &keys, err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/m", g_cfg->data_dir);
        snprintf(path2, sizeof path2, "%s/files", part);
        rc = walk(path, "/m", copy_one, path2, err);
    }
    for (size_t i = 0; !rc && i < scan.n; i++) {
        if (scan.v[i].inline_)
            continue;
        files++;
        file_bytes += scan.v[i].size;
        bool did;
        rc = copy_chunk(dir, &scan.v[i], &did, err);
        if (did) {
            copied++;
            copied_bytes += scan.v[i].size;
        }
        if (!rc && (i & 63) == 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "chunk %zu of %zu (%llu copied, the rest already in the backup)", i + 1, scan.n,
                     (unsigned long long)copied);
            if (progress(t, (int)(5 + 90 * i / (scan.n ? scan.n : 1)), msg))
                rc = err_set(err, MB_ECANCELED, "the backup was cancelled");
        }
    }
    gc_hold(-1);

    json_t *result = NULL;
    if (!rc) {
        /* The list of file chunks (restore and verify read it) and the manifest. */
        size_t cap = files * 84 + 1, len = 0;
        char *list = xmalloc(cap);
        for (size_t i = 0; i < scan.n; i++)
            if (!scan.v[i].inline_)
                len += (size_t)snprintf(list + len, cap - len, "%s %llu\n", scan.v[i].hash,
                                        (unsigned long long)scan.v[i].size);
        snprintf(path, sizeof path, "%s/chunks.list", part);
        rc = put_file(path, list, len, err);
        free(list);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/meta", part);
        rc = walk(path, "meta", hash_one, hashes, err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/files", part);
        rc = walk(path, "files", hash_one, hashes, err);
    }
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!rc) {
        result = json_pack("{s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:o}", "v", 1, "name", name, "version",
                           MBYTE_VERSION, "created", (json_int_t)now, "keys", (json_int_t)keys, "chunks",
                           (json_int_t)files, "chunk_bytes", (json_int_t)file_bytes, "copied", (json_int_t)copied,
                           "copied_bytes", (json_int_t)copied_bytes, "seconds",
                           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, "files",
                           json_incref(hashes));
        char *m = json_dumps(result, JSON_INDENT(1) | JSON_SORT_KEYS);
        snprintf(path, sizeof path, "%s/manifest.json", part);
        rc = put_file(path, m, strlen(m), err);
        free(m);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/%s", snaps, name);
        if (fio_sync(part, true) || rename(part, path) || fio_sync(snaps, true))
            rc = err_set(err, MB_EIO, "cannot put the snapshot %s in place: %s", path, strerror(errno));
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/latest", dir);
        char line[40];
        snprintf(line, sizeof line, "%s\n", name);
        rc = put_file(path, line, strlen(line), err);
        fio_sync(dir, true);
    }
    if (rc) {
        nftw(part, rm_tree_cb, 16, FTW_DEPTH | FTW_PHYS);
        json_decref(result);
    } else {
        json_object_del(result, "files");
        *out = result;
        log_info("backup %s into %s: %llu keys, %llu chunks (%llu copied, %llu bytes)", name, dir,
                 (unsigned long long)keys, (unsigned long long)files, (unsigned long long)copied,
                 (unsigned long long)copied_bytes);
    }
    json_decref(hashes);
    free(scan.v);
    close(lock);
    atomic_store(&running, false);
    return rc;
}

static int run_backup(mb_task *t, const json_t *args, void *state, mb_err *err)
{
    (void)state;
    json_t *result;
    int rc = backup_take(json_string_value(json_object_get(args, "dir")), t, &result, err);
    if (!rc)
        task_result(t, result);
    return rc;
}

/* ------------------------------------------------------------ requests --- */

/* A backup must not go into the data directory (it would back itself up) nor hold it. */
static bool nested(const char *a, const char *b)
{
    size_t n = strlen(b);
    return !strncmp(a, b, n) && (a[n] == '/' || a[n] == '\0');
}

int backup_request(const char *dir, uint64_t uid, uint64_t *task, char real[PATH_MAX], mb_err *err)
{
    int rc = 0;
    char data[PATH_MAX];
    if (!dir || dir[0] != '/')
        rc = err_set(err, MB_EINVAL, "give the backup directory as an absolute path in \"dir\"");
    else if (strlen(dir) > 3000)
        rc = err_set(err, MB_EINVAL, "the backup directory's path is too long");
    else if (mkdir_p(dir, 0700) || !realpath(dir, real))
        rc = err_set(err, MB_EINVAL, "cannot create the backup directory %s: %s", dir, strerror(errno));
    else if (!realpath(g_cfg->data_dir, data))
        rc = err_set(err, MB_EIO, "cannot resolve the data directory");
    else if (nested(real, data) || nested(data, real))
        rc = err_set(err, MB_EINVAL, "the backup directory %s and the data directory %s may not contain each other",
                     real, data);
    else if (atomic_load(&running))
        rc = err_set(err, MB_EBUSY, "another backup is running");
    if (!rc)
        rc = task_submit("kernel.backup", uid, json_pack("{s:s}", "dir", real), task, err);
    return rc;
}

int backup_init(mb_err *err)
{
    static const mb_task_type type = {.size = sizeof type, .name = "kernel.backup", .run = run_backup,
                                      .max_attempts = 1};
    return task_type_add(NULL, &type, NULL, err);
}
