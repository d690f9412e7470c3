/*
 * modules/ftp/ftp_util.h — pure helpers of the FTP module (ftp_util.c), shared with the
 * unit test. Prefix ftpu_.
 */
#ifndef MBYTE_FTP_UTIL_H
#define MBYTE_FTP_UTIL_H
#include <stdbool.h>
#include <stddef.h>

#define FTPU_PATH_MAX 4096

/* Resolve `arg` against the absolute virtual `cwd` into an absolute, normalised path
 * ("/", "/Home/docs"): ".", ".." and repeated '/' are folded; ".." never climbs above
 * "/". 0, or -1 when the result would be too long. */
int ftpu_path(const char *cwd, const char *arg, char *out, size_t n);
/* Split an absolute virtual path into the store name (first segment) and the rest inside
 * the store (points into vpath). The root gives store "" . 0 or -1 (too long). */
int ftpu_split(const char *vpath, char *store, size_t n, const char **rest);
/* "h1,h2,h3,h4,p1,p2" -> dotted IPv4 and port. 0 or -1. */
int ftpu_parse_port(const char *arg, char *ip, size_t n, int *port);
/* RFC 2428 "|1|1.2.3.4|5282|" / "|2|::1|5282|": family 1 or 2, the address text and port. */
int ftpu_parse_eprt(const char *arg, int *family, char *ip, size_t n, int *port);
/* Split a cleaned command line in place into the verb, upper-cased into cmd (NUL-ended), and
 * its argument (*arg: after the first space, NULL without one). -1 when the verb is empty or
 * longer than 4 bytes (no FTP verb is). */
int ftpu_command(char *line, char cmd[8], char **arg);
/* Drop Telnet IAC sequences in place; -1 if the line holds a NUL byte, else the new length. */
int ftpu_clean_line(char *line, size_t len);
/* Names that can be shown in a listing (no CR/LF). */
bool ftpu_name_ok(const char *name);

#endif
