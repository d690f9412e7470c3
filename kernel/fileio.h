/*
 * fileio.h — file helpers shared by mbyted (backup.c) and mbytectl (tools/backup_offline.c), so
 * the server's writer and the offline reader of a backup copy, hash and sync files the same way.
 * No kernel dependencies: any thread, any program; errors are -1 with errno set.
 */
#ifndef MBYTE_FILEIO_H
#define MBYTE_FILEIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

int fio_write_all(int fd, const void *p, size_t n);
int fio_sync(const char *path, bool dir); /* fsync a file, or a folder's entries */
int fio_mkdirs(const char *path);         /* mkdir -p, mode 0700 */
/* Reads `from` whole: its SHA-256 (lower hex) into hex, its length into *size; with `to`, a new
 * file (O_EXCL, mode 0600, its folder made) gets the same bytes and is synced. */
int fio_sha256_copy(const char *from, const char *to, char hex[65], unsigned long long *size);
/* Calls fn(path, rel) for every regular file below dir, rel being "<rel>/<name>/..."; a folder that
 * does not exist has no files; a non-zero return from fn stops the walk and is returned. */
int fio_walk(const char *dir, const char *rel, int (*fn)(const char *path, const char *rel, void *ud), void *ud);
/* An exclusive lock on a backup directory (DIR/.lock, flock): a backup into DIR and a prune of
 * it never overlap. The descriptor to close when done, or -1 (errno EWOULDBLOCK: held). */
int fio_lock(const char *dir);
/* A file of folder dir (the data folder: not a /tmp that may be tmpfs) that vanishes when closed
 * (O_TMPFILE: nothing to clean up after a crash), for bytes that must not sit in memory;
 * tmpfile() where unsupported or dir is NULL. NULL on failure. */
FILE *fio_spill(const char *dir);
#endif
