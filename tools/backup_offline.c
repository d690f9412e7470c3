/*
 * tools/backup_offline.c — the parts of `mbytectl` that read a backup directory without a server:
 * `backup verify DIR` and `restore DIR --data NEWDIR`. The layout is written by the running
 * server's backup task (kernel/backup.c, docs/operations.md "Backing up"):
 *   DIR/latest                          the newest snapshot's name
 *   DIR/snapshots/<name>/manifest.json  counts and the SHA-256 of every metadata and module file
 *   DIR/snapshots/<name>/chunks.list    "<sha256> <size>" of every chunk the snapshot references
 *   DIR/snapshots/<name>/meta/          a LevelDB database: the metadata at that point in time
 *   DIR/snapshots/<name>/files/m/       module files (<data>/m/)
 *   DIR/chunks/ab/cd/<sha256>           chunks, shared by every snapshot in DIR
 * Everything read is checked against its SHA-256, so a damaged backup is named, never restored.
 * `backup prune DIR` removes old snapshots and the chunks no remaining snapshot lists, under
 * DIR/.lock, which a running backup holds too.
 */
#include "backup_offline.h"
#include "fileio.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *dir;
    char name[64];
    char snap[4200];
    json_t *manifest;
    int problems;
} backup;

/* One damaged or missing thing: "<what>: <why>" (the first 20 are printed, all are counted). */
static void problem(backup *b, const char *what, const char *why)
{
    if (b->problems++ < 20)
        fprintf(stderr, "%s: %s\n", what, why);
}

static int open_backup(backup *b, const char *dir, const char *name)
{
    memset(b, 0, sizeof *b);
    b->dir = dir;
    if (name)
        snprintf(b->name, sizeof b->name, "%s", name);
    else {
        char path[4200];
        snprintf(path, sizeof path, "%s/latest", dir);
        FILE *f = fopen(path, "r");
        if (!f || !fgets(b->name, sizeof b->name, f)) {
            fprintf(stderr, "mbytectl: %s is not a backup directory (no readable 'latest'): %s\n", dir,
                    strerror(errno));
            if (f)
                fclose(f);
            return 1;
        }
        fclose(f);
        b->name[strcspn(b->name, "\r\n")] = '\0';
    }
    if (!b->name[0] || strchr(b->name, '/') || b->name[0] == '.') {
        fprintf(stderr, "mbytectl: '%s' is not a snapshot name\n", b->name);
        return 2;
    }
    snprintf(b->snap, sizeof b->snap, "%s/snapshots/%s", dir, b->name);
    char path[4400];
    snprintf(path, sizeof path, "%s/manifest.json", b->snap);
    json_error_t je;
    b->manifest = json_load_file(path, 0, &je);
    if (!json_is_object(b->manifest) || !json_is_object(json_object_get(b->manifest, "files"))) {
        fprintf(stderr, "mbytectl: snapshot %s has no readable manifest (%s): %s\n", b->name, path, je.text);
        json_decref(b->manifest);
        b->manifest = NULL;
        return 1;
    }
    return 0;
}

/* Every metadata and module file against the manifest; with `to`, copied under it
 * (meta/... -> to/meta/..., files/m/... -> to/m/...). */
static void check_files(backup *b, const char *to)
{
    const char *name;
    json_t *want;
    json_object_foreach(json_object_get(b->manifest, "files"), name, want)
    {
        char from[4400], dest[4400], hex[65];
        unsigned long long size;
        snprintf(from, sizeof from, "%s/%s", b->snap, name);
        snprintf(dest, sizeof dest, "%s/%s", to ? to : "", !strncmp(name, "files/", 6) ? name + 6 : name);
        if (strstr(name, "..")) {
            problem(b, name, "a name that leaves the snapshot");
            continue;
        }
        if (fio_sha256_copy(from, to ? dest : NULL, hex, &size))
            problem(b, from, strerror(errno));
        else if (strcmp(hex, json_string_value(want) ? json_string_value(want) : ""))
            problem(b, from, "its SHA-256 is not the one the manifest recorded");
    }
}

/* Every chunk of chunks.list: present, of its size, and its bytes hash to its name. */
static void check_chunks(backup *b, const char *to, unsigned long long *count, unsigned long long *bytes)
{
    char path[4400], line[256];
    snprintf(path, sizeof path, "%s/chunks.list", b->snap);
    FILE *f = fopen(path, "r");
    *count = *bytes = 0;
    if (!f) {
        problem(b, path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f)) {
        char hash[65];
        unsigned long long want;
        if (sscanf(line, "%64[0-9a-f] %llu", hash, &want) != 2 || strlen(hash) != 64) {
            problem(b, path, "a line that is not '<sha256> <size>'");
            continue;
        }
        char from[4400], dest[4400], hex[65];
        unsigned long long size;
        snprintf(from, sizeof from, "%s/chunks/%.2s/%.2s/%s", b->dir, hash, hash + 2, hash);
        snprintf(dest, sizeof dest, "%s/chunks/%.2s/%.2s/%s", to ? to : "", hash, hash + 2, hash);
        if (fio_sha256_copy(from, to ? dest : NULL, hex, &size))
            problem(b, from, strerror(errno));
        else if (size != want || strcmp(hex, hash))
            problem(b, from, size != want ? "its size is not the recorded one" : "its bytes do not hash to its name");
        (*count)++;
        *bytes += want;
    }
    fclose(f);
    json_int_t listed = json_integer_value(json_object_get(b->manifest, "chunks"));
    if ((unsigned long long)listed != *count)
        problem(b, path, "it does not list as many chunks as the manifest counts");
}

int backup_verify(const char *dir, const char *snapshot)
{
    backup b;
    int rc = open_backup(&b, dir, snapshot);
    if (rc)
        return rc;
    unsigned long long n, bytes;
    check_files(&b, NULL);
    check_chunks(&b, NULL, &n, &bytes);
    if (b.problems)
        fprintf(stderr, "mbytectl: backup %s in %s is damaged: %d problems\n", b.name, dir, b.problems);
    else
        printf("backup %s ok: %zu metadata and module files, %llu chunks (%llu bytes) verified\n", b.name,
               json_object_size(json_object_get(b.manifest, "files")), n, bytes);
    json_decref(b.manifest);
    return b.problems ? 1 : 0;
}

int backup_restore(const char *dir, const char *snapshot, const char *data)
{
    struct stat st;
    if (!stat(data, &st)) {
        char probe[4400];
        snprintf(probe, sizeof probe, "%s/meta", data);
        if (!S_ISDIR(st.st_mode) || !stat(probe, &st)) {
            fprintf(stderr, "mbytectl: %s already holds data: restore into a new directory\n", data);
            return 1;
        }
    }
    backup b;
    int rc = open_backup(&b, dir, snapshot);
    if (rc)
        return rc;
    if (fio_mkdirs(data)) {
        fprintf(stderr, "mbytectl: cannot create %s: %s\n", data, strerror(errno));
        json_decref(b.manifest);
        return 1;
    }
    unsigned long long n, bytes;
    check_files(&b, data);
    check_chunks(&b, data, &n, &bytes);
    char path[4400];
    snprintf(path, sizeof path, "%s/meta", data);
    fio_sync(path, true);
    fio_sync(data, true);
    if (b.problems)
        fprintf(stderr, "mbytectl: the restore into %s is incomplete: %d problems (the backup is damaged; try an "
                        "older snapshot with --snapshot NAME)\n", data, b.problems);
    else
        printf("restored backup %s into %s: %llu chunks (%llu bytes); start mbyted with MBYTE_DATA=%s\n", b.name,
               data, n, bytes, data);
    json_decref(b.manifest);
    return b.problems ? 1 : 0;
}

/* ------------------------------------------------------------- prune --- */

typedef struct {
    char (*v)[65];
    size_t n, cap;
} hashset;

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int by_hash(const void *a, const void *b) { return memcmp(a, b, 64); }

/* Adds every hash of one snapshot's chunks.list; -1 when it cannot be read whole. */
static int list_add(hashset *h, const char *snap)
{
    char path[4400], line[256];
    snprintf(path, sizeof path, "%s/chunks.list", snap);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char hash[65];
        if (sscanf(line, "%64[0-9a-f]", hash) != 1 || strlen(hash) != 64) {
            fclose(f);
            errno = EINVAL;
            return -1;
        }
        if (h->n == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 1024;
            h->v = realloc(h->v, h->cap * sizeof *h->v);
            if (!h->v)
                abort();
        }
        memcpy(h->v[h->n++], hash, 65);
    }
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

typedef struct {
    hashset *keep;
    unsigned long long removed, bytes, kept;
    int problems;
} sweep;

static int sweep_one(const char *path, const char *rel, void *ud)
{
    sweep *s = ud;
    const char *name = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
    bool tmp = !strncmp(rel, "/tmp/", 5); /* what a failed backup left half-written */
    bool chunk = !tmp && strlen(name) == 64 && strspn(name, "0123456789abcdef") == 64;
    if (!chunk && !tmp)
        return 0; /* not ours: left alone */
    if (chunk && bsearch(name, s->keep->v, s->keep->n, sizeof *s->keep->v, by_hash)) {
        s->kept++;
        return 0;
    }
    struct stat st;
    if (!stat(path, &st) && !unlink(path)) {
        s->removed += chunk;
        s->bytes += chunk ? (unsigned long long)st.st_size : 0;
    } else if (s->problems++ < 20)
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) ? -1 : 0;
}

int backup_prune(const char *dir, int keep_last)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/snapshots", dir);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "mbytectl: %s is not a backup directory (no snapshots/): %s\n", dir, strerror(errno));
        return 1;
    }
    int lock = fio_lock(dir);
    if (lock < 0) {
        fprintf(stderr, "mbytectl: a backup into %s is running (%s); prune when it is done\n", dir, strerror(errno));
        closedir(d);
        return 1;
    }
    char **names = NULL, **partial = NULL;
    size_t n = 0, np = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] != '.') {
            names = realloc(names, (n + 1) * sizeof *names);
            names[n++] = strdup(de->d_name);
        } else if (len > 8 && !strcmp(de->d_name + len - 8, ".partial")) {
            partial = realloc(partial, (np + 1) * sizeof *partial);
            partial[np++] = strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name); /* names are UTC times: oldest first */
    size_t drop = keep_last > 0 && n > (size_t)keep_last ? n - (size_t)keep_last : 0;
    hashset keep = {0};
    int rc = 0;
    for (size_t i = drop; i < n && !rc; i++) {
        char snap[4200];
        snprintf(snap, sizeof snap, "%s/snapshots/%s", dir, names[i]);
        if (list_add(&keep, snap)) {
            fprintf(stderr, "mbytectl: cannot read the chunk list of snapshot %s (%s): nothing pruned\n", names[i],
                    strerror(errno));
            rc = 1;
        }
    }
    sweep s = {.keep = &keep};
    if (!rc) {
        /* Snapshots first, chunks after: a crash in between leaves only unlisted chunks, which
         * the next prune removes. */
        for (size_t i = 0; i < drop + np; i++) {
            snprintf(path, sizeof path, "%s/snapshots/%s", dir, i < drop ? names[i] : partial[i - drop]);
            if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) && s.problems++ < 20)
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
        }
        snprintf(path, sizeof path, "%s/snapshots", dir);
        fio_sync(path, true);
        qsort(keep.v, keep.n, sizeof *keep.v, by_hash);
        snprintf(path, sizeof path, "%s/chunks", dir);
        fio_walk(path, "", sweep_one, &s);
        printf("pruned %s: %zu snapshots removed, %zu kept; %llu chunks removed (%llu bytes), %llu kept\n", dir,
               drop, n - drop, s.removed, s.bytes, s.kept);
        rc = s.problems ? 1 : 0;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    for (size_t i = 0; i < np; i++)
        free(partial[i]);
    free(names);
    free(partial);
    free(keep.v);
    close(lock);
    return rc;
}
