/*
 * fileio.c — see fileio.h. Built into mbyted (kernel_src) and mbytectl (tools/meson.build).
 */
#include "fileio.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int fio_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int fio_sync(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int fio_mkdirs(const char *path)
{
    char tmp[4400];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0700) && errno != EEXIST ? -1 : 0;
}

int fio_sha256_copy(const char *from, const char *to, char hex[65], unsigned long long *size)
{
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1;
    if (in < 0)
        return -1;
    if (to) {
        char folder[4400];
        snprintf(folder, sizeof folder, "%s", to);
        char *slash = strrchr(folder, '/');
        if (slash)
            *slash = '\0';
        if ((slash && fio_mkdirs(folder)) || (out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
            int e = errno;
            close(in);
            errno = e;
            return -1;
        }
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    char buf[65536];
    ssize_t r;
    int rc = 0;
    *size = 0;
    while ((r = read(in, buf, sizeof buf)) > 0) {
        EVP_DigestUpdate(c, buf, (size_t)r);
        *size += (unsigned long long)r;
        if (out >= 0 && fio_write_all(out, buf, (size_t)r))
            rc = -1;
    }
    int e = errno;
    if (r < 0)
        rc = -1;
    unsigned char md[32];
    EVP_DigestFinal_ex(c, md, NULL);
    EVP_MD_CTX_free(c);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    close(in);
    if (out >= 0 && (fsync(out) | close(out)))
        rc = -1, e = errno;
    errno = e;
    return rc;
}

int fio_walk(const char *dir, const char *rel, int (*fn)(const char *path, const char *rel, void *ud), void *ud)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[4400], name[4400];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        snprintf(name, sizeof name, "%s/%s", rel, de->d_name);
        struct stat st;
        if (lstat(path, &st))
            continue;
        if (S_ISDIR(st.st_mode))
            rc = fio_walk(path, name, fn, ud);
        else if (S_ISREG(st.st_mode))
            rc = fn(path, name, ud);
    }
    closedir(d);
    return rc;
}

int fio_lock(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

FILE *fio_spill(const char *dir)
{
    int fd = dir ? open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (!f && fd >= 0)
        close(fd);
    return f ? f : tmpfile();
}
