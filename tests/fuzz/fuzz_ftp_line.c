/* Fuzz target: an FTP control line through the module's parsers (modules/ftp/ftp_util.c, compiled
 * in): Telnet IAC cleaning, the verb/argument split, path resolution against a working
 * directory, PORT and EPRT arguments, and the listing-name check. The input is one line as the
 * session hands it over (CRLF already cut). Invariants: a resolved path is absolute and
 * normalised (no ".", "..", empty segment or trailing '/') and its split names a store without
 * '/'; a verb is 1-4 bytes with no lower-case letter or space; an accepted PORT/EPRT names a
 * real address of its family and a port in 1-65535. */
#include "../../modules/ftp/ftp_util.h"
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_path(const char *p)
{
    size_t l = strlen(p);
    if (p[0] != '/' || l > FTPU_PATH_MAX || (l > 1 && p[l - 1] == '/') || strstr(p, "//") || strstr(p, "/./") ||
        strstr(p, "/../") || (l >= 2 && !strcmp(p + l - 2, "/.")) || (l >= 3 && !strcmp(p + l - 3, "/..")))
        __builtin_trap();
    char store[FTPU_PATH_MAX + 1];
    const char *rest;
    if (ftpu_split(p, store, sizeof store, &rest) || strchr(store, '/') || rest[0] == '/')
        __builtin_trap();
    if (!store[0] && *rest) /* the root has no rest */
        __builtin_trap();
}

static void check_addr(int family, const char *ip, int port)
{
    unsigned char buf[16];
    if (inet_pton(family == 1 ? AF_INET : AF_INET6, ip, buf) != 1 || port < 1 || port > 65535)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 9000) /* the session refuses lines over LINE_MAX_BYTES (8192) */
        return 0;
    char *line = malloc(size + 1);
    memcpy(line, data, size);
    line[size] = 0;
    int l = ftpu_clean_line(line, size);
    if (l < 0) {
        if (!memchr(data, 0, size)) /* only a NUL byte is refused */
            __builtin_trap();
        free(line);
        return 0;
    }
    if ((size_t)l > size || line[l] || strlen(line) != (size_t)l)
        __builtin_trap();
    if (ftpu_name_ok(line) != !strpbrk(line, "\r\n"))
        __builtin_trap();
    char cmd[8], *arg;
    if (ftpu_command(line, cmd, &arg) == 0) {
        size_t cl = strlen(cmd);
        if (cl < 1 || cl > 4 || strchr(cmd, ' '))
            __builtin_trap();
        for (size_t i = 0; i < cl; i++)
            if (cmd[i] >= 'a' && cmd[i] <= 'z')
                __builtin_trap();
        if (arg && (arg < line || arg > line + l))
            __builtin_trap();
        char out[FTPU_PATH_MAX + 1], again[FTPU_PATH_MAX + 1];
        static const char *const cwds[] = {"/", "/Home", "/Home/a b/c"};
        for (int i = 0; i < 3; i++)
            if (ftpu_path(cwds[i], arg, out, sizeof out) == 0) {
                check_path(out);
                /* resolving a normalised path again changes nothing */
                if (ftpu_path("/", out, again, sizeof again) || strcmp(out, again))
                    __builtin_trap();
            }
        char ip[64];
        int port, fam;
        if (ftpu_parse_port(arg, ip, sizeof ip, &port) == 0)
            check_addr(1, ip, port);
        if (ftpu_parse_eprt(arg, &fam, ip, sizeof ip, &port) == 0) {
            if (fam != 1 && fam != 2)
                __builtin_trap();
            check_addr(fam, ip, port);
        }
    }
    free(line);
    return 0;
}
