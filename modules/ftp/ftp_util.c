/*
 * modules/ftp/ftp_util.c — the pure parts of the FTP server: virtual path normalisation,
 * PORT/EPRT argument parsing, command-line splitting and cleaning. No I/O, no kernel calls;
 * compiled into ftp.so and into tests/fuzz/fuzz_ftp_line.c.
 * Threads: none of its own; every function is reentrant.
 */
#include "ftp_util.h"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ftpu_path(const char *cwd, const char *arg, char *out, size_t n)
{
    char buf[FTPU_PATH_MAX * 2 + 2];
    if (!arg)
        arg = "";
    if (strlen(cwd) + strlen(arg) + 2 > sizeof buf)
        return -1;
    if (arg[0] == '/')
        snprintf(buf, sizeof buf, "%s", arg);
    else
        snprintf(buf, sizeof buf, "%s/%s", cwd, arg);
    /* Rebuild segment by segment; ".." above the root stays at the root, as on any
     * Unix server, so no argument can name anything outside the user's own tree. */
    size_t o = 0;
    out[0] = 0;
    char *save = NULL;
    for (char *seg = strtok_r(buf, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (!strcmp(seg, "."))
            continue;
        if (!strcmp(seg, "..")) {
            char *s = strrchr(out, '/');
            if (s) {
                *s = 0;
                o = (size_t)(s - out);
            }
            continue;
        }
        size_t l = strlen(seg);
        if (o + 1 + l + 1 > n || o + 1 + l > FTPU_PATH_MAX)
            return -1;
        out[o++] = '/';
        memcpy(out + o, seg, l);
        o += l;
        out[o] = 0;
    }
    if (o == 0) {
        if (n < 2)
            return -1;
        strcpy(out, "/");
    }
    return 0;
}

int ftpu_split(const char *vpath, char *store, size_t n, const char **rest)
{
    const char *p = vpath[0] == '/' ? vpath + 1 : vpath;
    if (!*p) {
        store[0] = 0;
        *rest = "";
        return 0;
    }
    const char *s = strchr(p, '/');
    size_t l = s ? (size_t)(s - p) : strlen(p);
    if (l + 1 > n)
        return -1;
    memcpy(store, p, l);
    store[l] = 0;
    *rest = s ? s + 1 : "";
    return 0;
}

int ftpu_parse_port(const char *arg, char *ip, size_t n, int *port)
{
    unsigned h[6];
    char tail;
    if (!arg || sscanf(arg, "%u,%u,%u,%u,%u,%u%c", &h[0], &h[1], &h[2], &h[3], &h[4], &h[5], &tail) != 6)
        return -1;
    for (int i = 0; i < 6; i++)
        if (h[i] > 255)
            return -1;
    snprintf(ip, n, "%u.%u.%u.%u", h[0], h[1], h[2], h[3]);
    *port = (int)(h[4] * 256 + h[5]);
    return *port > 0 ? 0 : -1;
}

int ftpu_parse_eprt(const char *arg, int *family, char *ip, size_t n, int *port)
{
    /* |1|132.235.1.2|6275|  — the delimiter is the first character (RFC 2428). */
    if (!arg || !arg[0] || arg[0] < 33 || arg[0] > 126)
        return -1;
    char d = arg[0];
    const char *a = arg + 1, *b = strchr(a, d);
    if (!b)
        return -1;
    const char *c = strchr(b + 1, d);
    if (!c)
        return -1;
    const char *e = strchr(c + 1, d);
    if (!e || e[1])
        return -1;
    if (b - a != 1 || (a[0] != '1' && a[0] != '2'))
        return -1;
    *family = a[0] - '0';
    size_t il = (size_t)(c - b - 1);
    if (il == 0 || il + 1 > n || il >= 64)
        return -1;
    memcpy(ip, b + 1, il);
    ip[il] = 0;
    unsigned char tmp[16];
    if (inet_pton(*family == 1 ? AF_INET : AF_INET6, ip, tmp) != 1)
        return -1;
    char pb[8];
    size_t pl = (size_t)(e - c - 1);
    if (pl == 0 || pl >= sizeof pb)
        return -1;
    memcpy(pb, c + 1, pl);
    pb[pl] = 0;
    if (strspn(pb, "0123456789") != pl)
        return -1;
    long p = strtol(pb, NULL, 10);
    if (p < 1 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

int ftpu_clean_line(char *line, size_t len)
{
    /* Telnet IAC sequences (IP, Synch) that some clients put before ABOR are dropped. */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch == 0)
            return -1;
        if (ch == 0xFF && i + 1 < len && (unsigned char)line[i + 1] >= 0xF0) {
            i++;
            continue;
        }
        if (ch == 0xF2 && o == 0) /* a Synch's data mark sent out of band lands here */
            continue;
        line[o++] = line[i];
    }
    line[o] = 0;
    return (int)o;
}

int ftpu_command(char *line, char cmd[8], char **arg)
{
    *arg = strchr(line, ' ');
    if (*arg)
        *(*arg)++ = 0;
    size_t cl = strlen(line);
    if (cl == 0 || cl > 4)
        return -1;
    for (size_t i = 0; i <= cl; i++)
        cmd[i] = (char)(line[i] >= 'a' && line[i] <= 'z' ? line[i] - 32 : line[i]);
    return 0;
}

bool ftpu_name_ok(const char *name)
{
    /* CR and LF would let a name inject reply lines into a listing. */
    return name && !strpbrk(name, "\r\n");
}
