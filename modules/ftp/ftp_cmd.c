/*
 * modules/ftp/ftp_cmd.c — the command table: which verbs exist, which may run before login
 * and which while a transfer runs, and the commands that touch no file (login, TLS, options,
 * PORT/PASV, STAT, SITE). Commands on files are in ftp_files.c, PASS in ftp_login.c.
 *
 * One command runs at a time per session (sess_read_cb hands over one CRLF-ended line). Rules
 * the table keeps: while a transfer runs only ABOR, STAT, NOOP and QUIT are taken (450
 * otherwise); before login only the commands marked ANON (530 otherwise, unknown verbs
 * included); RNTO must follow RNFR directly.
 *
 * Threads: the loop thread only.
 */
#include "ftp.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------- commands --- */

static const char *const feat_lines[] = {"AUTH TLS", "PBSZ", "PROT", "UTF8", "EPRT", "EPSV", "MDTM", "SIZE",
                                         "REST STREAM", "MLST type*;size*;modify*;perm*;", "TVFS", NULL};

static void cmd_port(sess *s, const char *cmd, char *arg)
{
    char ip[64];
    int port, fam = 1;
    bool ok = !strcmp(cmd, "PORT") ? ftpu_parse_port(arg, ip, sizeof ip, &port) == 0
                                    : ftpu_parse_eprt(arg, &fam, ip, sizeof ip, &port) == 0;
    if (!ok) {
        reply(s, 501, "Syntax error in the %s argument", cmd);
        return;
    }
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    if (fam == 1) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &in->sin_addr);
        in->sin_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in6 *in = (struct sockaddr_in6 *)&a;
        in->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &in->sin6_addr);
        in->sin6_port = htons((uint16_t)port);
    }
    /* Bounce attacks: data goes only to the client's own address, never to a privileged
     * port (RFC 2577). */
    if (!data_same_host((struct sockaddr *)&a, (struct sockaddr *)&s->peer) || port < 1024) {
        reply(s, 500, "Illegal %s: data connections go only to your own address and a port >= 1024", cmd);
        return;
    }
    data_close(s);
    s->port_addr = a;
    s->have_port = true;
    reply(s, 200, "%s command successful", cmd);
}

static void cmd_pasv(sess *s, bool extended)
{
    if (!extended && s->local.ss_family != AF_INET) {
        reply(s, 425, "PASV is IPv4 only; use EPSV");
        return;
    }
    int port;
    if (data_pasv_open(s, &port)) {
        reply(s, 425, "No free passive port; try again");
        return;
    }
    if (extended) {
        reply(s, 229, "Entering Extended Passive Mode (|||%d|)", port);
        return;
    }
    char ip[64];
    if (s->srv->pasv_address[0])
        snprintf(ip, sizeof ip, "%s", s->srv->pasv_address);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&s->local)->sin_addr, ip, sizeof ip);
    for (char *p = ip; *p; p++)
        if (*p == '.')
            *p = ',';
    reply(s, 227, "Entering Passive Mode (%s,%d,%d)", ip, port / 256, port % 256);
}


static void cmd_stat(sess *s, const char *arg)
{
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    if (arg && *arg && s->logged_in) {
        mb_err e = {0};
        struct evbuffer *b = evbuffer_new();
        if (list_build(s, arg, 'L', b, false, &e)) {
            evbuffer_free(b);
            reply_err(s, &e);
            return;
        }
        evbuffer_add_printf(o, "213-Status of %s:\r\n", arg);
        evbuffer_add_buffer(o, b);
        evbuffer_add_printf(o, "213 End of status\r\n");
        evbuffer_free(b);
        return;
    }
    evbuffer_add_printf(o, "211-MByte FTP server status:\r\n Connected from %s\r\n %s\r\n TLS %s, data %s\r\n",
                        s->ip, s->logged_in ? s->user.name : "Not logged in", s->tls ? "on" : "off",
                        s->prot_p ? "private" : "clear");
    if (s->xkind != X_NONE)
        evbuffer_add_printf(o, " Transfer in progress: %llu bytes\r\n", (unsigned long long)s->xbytes);
    evbuffer_add_printf(o, "211 End of status\r\n");
}

/* SITE CHMOD succeeds without changing anything: a store keeps no Unix permissions, and
 * clients that mirror (lftp's mirror -R sends one per file) treat a refusal as an error. The
 * path must exist, so a typo is still reported. */
static void cmd_site(sess *s, const char *arg)
{
    if (arg && !strncasecmp(arg, "CHMOD ", 6)) {
        const char *mode = arg + 6;
        size_t ml = strspn(mode, "01234567");
        if (ml == 0 || ml > 4 || mode[ml] != ' ' || !mode[ml + 1]) {
            reply(s, 501, "SITE CHMOD needs an octal mode and a path");
            return;
        }
        const mb_api *api = s->srv->api;
        mb_err e = {0};
        char vp[FTPU_PATH_MAX + 1];
        const char *rest;
        uint64_t sid;
        json_t *info = NULL;
        if (sess_resolve(s, mode + ml + 1, vp, &sid, &rest, &e) || (sid && *rest && api->file_stat(&s->user, sid, rest,
                                                                                               &info, &e))) {
            reply_err(s, &e);
            return;
        }
        json_decref(info);
        reply(s, 200, "SITE CHMOD ok; stores keep no permissions, nothing changed");
    } else if (arg && !strncasecmp(arg, "HELP", 4)) {
        reply(s, 214, "SITE commands: CHMOD HELP");
    } else {
        reply(s, 504, "SITE commands: CHMOD HELP");
    }
}


static bool tls_needed(sess *s) { return s->srv->require_tls && !s->tls && !s->loopback; }

static void c_user(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (s->logged_in) {
        reply(s, 530, "Already logged in; REIN first to change user");
    } else if (tls_needed(s)) {
        reply(s, 530, "TLS is required: send AUTH TLS first");
    } else if (!arg || !*arg || strlen(arg) > 64) {
        reply(s, 501, "USER needs a user name");
    } else {
        snprintf(s->uname, sizeof s->uname, "%s", arg);
        reply(s, 331, "Password required for %s", s->uname);
    }
}

static void c_pass(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (tls_needed(s))
        reply(s, 530, "TLS is required: send AUTH TLS first");
    else
        login_pass(s, arg);
}

static void c_auth(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (s->tls) {
        reply(s, 503, "TLS is already on");
    } else if (arg && (!strcasecmp(arg, "TLS") || !strcasecmp(arg, "SSL") || !strcasecmp(arg, "TLS-C"))) {
        reply(s, 234, "AUTH TLS successful");
        sess_tls_upgrade(s);
    } else {
        reply(s, 504, "Only AUTH TLS is supported");
    }
}

static void c_pbsz(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    if (!s->tls) {
        reply(s, 503, "PBSZ needs a TLS control connection");
        return;
    }
    s->pbsz = true;
    reply(s, 200, "PBSZ=0");
}

static void c_prot(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (!s->tls) {
        reply(s, 503, "PROT needs a TLS control connection");
    } else if (arg && (!strcasecmp(arg, "P") || !strcasecmp(arg, "C"))) {
        bool p = toupper((unsigned char)arg[0]) == 'P';
        if (!p && s->srv->require_tls && !s->loopback) {
            reply(s, 534, "Clear data connections are not allowed");
            return;
        }
        s->prot_p = p;
        reply(s, 200, "Protection level set to %s", p ? "Private" : "Clear");
    } else {
        reply(s, 504, "PROT P or PROT C only");
    }
}

static void c_feat(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    struct evbuffer *o = bufferevent_get_output(s->ctl);
    evbuffer_add_printf(o, "211-Features:\r\n");
    for (int i = 0; feat_lines[i]; i++)
        evbuffer_add_printf(o, " %s\r\n", feat_lines[i]);
    evbuffer_add_printf(o, "211 End\r\n");
}

static void c_opts(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (arg && (!strcasecmp(arg, "UTF8 ON") || !strcasecmp(arg, "UTF-8 ON"))) {
        s->utf8 = true;
        reply(s, 200, "UTF8 mode on");
    } else if (arg && !strncasecmp(arg, "MLST", 4)) {
        reply(s, 200, "MLST OPTS type;size;modify;perm;");
    } else {
        reply(s, 501, "Option not understood");
    }
}

static void c_help(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    evbuffer_add_printf(bufferevent_get_output(s->ctl),
                        "214-Commands:\r\n ABOR ACCT ALLO APPE AUTH CDUP CWD DELE EPRT EPSV FEAT HELP LIST "
                        "MDTM MKD MLSD MLST MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT REIN "
                        "REST RETR RMD RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD "
                        "XMKD XPWD XRMD\r\n214 Help OK\r\n");
}

/* NOOP, SYST, ACCT, ALLO: a fixed answer. */
static void c_syst(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    reply(s, 215, "UNIX Type: L8");
}

static void c_noop(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    reply(s, 200, "NOOP ok");
}

static void c_acct(sess *s, const char *cmd, char *arg)
{
    (void)arg;
    reply(s, 202, "%s not needed", cmd);
}

/* QUIT, ABOR and STAT also run during a transfer: QUIT and ABOR end it first. */
static void c_quit(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    if (s->xkind != X_NONE)
        xfer_end(s, 426, "Transfer aborted");
    reply(s, 221, "Goodbye");
    s->quitting = true;
}

static void c_abor(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    if (s->xkind == X_NONE) {
        reply(s, 225, "No transfer to abort");
        return;
    }
    xfer_end(s, 426, "Transfer aborted");
    reply(s, 226, "ABOR successful");
}

static void c_stat(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    cmd_stat(s, s->xkind == X_NONE && s->logged_in ? arg : NULL);
}

static void c_rein(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    data_close(s);
    s->logged_in = false;
    sess_login_deadline(s);
    s->uname[0] = s->rnfr[0] = 0;
    s->rest = 0;
    reply(s, 220, "Ready for a new user");
}

static void c_pwd(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    reply(s, 257, "\"%s\" is the current directory", s->cwd);
}

static void c_type(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    int t = arg ? toupper((unsigned char)arg[0]) : 0;
    if (t == 'I' || t == 'A' || t == 'L')
        reply(s, 200, "Type set to %c", t);
    else
        reply(s, 504, "TYPE I or A only");
}

static void c_mode(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    reply(s, arg && toupper((unsigned char)arg[0]) == 'S' ? 200 : 504, "Mode S only");
}

static void c_stru(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    reply(s, arg && toupper((unsigned char)arg[0]) == 'F' ? 200 : 504, "Structure F only");
}

static void c_pasv(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    cmd_pasv(s, false);
}

static void c_epsv(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    if (arg && !strcasecmp(arg, "ALL"))
        reply(s, 200, "EPSV ALL ok");
    else
        cmd_pasv(s, true);
}

static void c_rest(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    char *end;
    unsigned long long v = arg ? strtoull(arg, &end, 10) : 0;
    if (!arg || !*arg || *end || arg[0] == '-') {
        reply(s, 501, "REST needs a byte offset");
        return;
    }
    s->rest = v;
    reply(s, 350, "Restarting at %llu; send RETR or STOR", v);
}

static void c_retr(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    files_retr(s, arg);
}

/* STOR, APPE, STOU: the mode is the verb's first letter but STOU's ('U'). */
static void c_stor(sess *s, const char *cmd, char *arg) { files_stor(s, arg, cmd[3] == 'U' ? 'U' : cmd[0]); }

/* LIST, NLST, MLSD: the listing kind is the verb's first letter. */
static void c_list(sess *s, const char *cmd, char *arg) { files_list(s, arg, cmd[0]); }

static void c_mlst(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    list_mlst(s, arg);
}

static void c_path(sess *s, const char *cmd, char *arg) { files_path(s, cmd, arg); }

static void c_cdup(sess *s, const char *cmd, char *arg)
{
    (void)cmd, (void)arg;
    files_path(s, "CWD", "..");
}

static void c_site(sess *s, const char *cmd, char *arg)
{
    (void)cmd;
    cmd_site(s, arg);
}

/* ----------------------------------------------------------------- table --- */

enum {
    ANON = 1, /* allowed before login */
    XFER = 2, /* allowed while a transfer runs */
};

typedef struct command {
    const char *verb;
    unsigned flags;
    void (*run)(sess *s, const char *cmd, char *arg);
    const char *as; /* an alias (XMKD) runs as this verb (MKD) */
} command;

static const command commands[] = {
    {"USER", ANON, c_user, NULL},        {"PASS", ANON, c_pass, NULL},
    {"AUTH", ANON, c_auth, NULL},        {"PBSZ", ANON, c_pbsz, NULL},
    {"PROT", ANON, c_prot, NULL},        {"FEAT", ANON, c_feat, NULL},
    {"OPTS", ANON, c_opts, NULL},        {"SYST", ANON, c_syst, NULL},
    {"NOOP", ANON | XFER, c_noop, NULL}, {"QUIT", ANON | XFER, c_quit, NULL},
    {"HELP", ANON, c_help, NULL},        {"STAT", ANON | XFER, c_stat, NULL},
    {"ABOR", XFER, c_abor, NULL},        {"REIN", 0, c_rein, NULL},
    {"ACCT", 0, c_acct, NULL},           {"ALLO", 0, c_acct, NULL},
    {"PWD", 0, c_pwd, NULL},             {"XPWD", 0, c_pwd, NULL},
    {"CWD", 0, c_path, NULL},            {"XCWD", 0, c_path, "CWD"},
    {"CDUP", 0, c_cdup, NULL},           {"XCUP", 0, c_cdup, NULL},
    {"TYPE", 0, c_type, NULL},           {"MODE", 0, c_mode, NULL},
    {"STRU", 0, c_stru, NULL},           {"PORT", 0, cmd_port, NULL},
    {"EPRT", 0, cmd_port, NULL},         {"PASV", 0, c_pasv, NULL},
    {"EPSV", 0, c_epsv, NULL},           {"REST", 0, c_rest, NULL},
    {"RETR", 0, c_retr, NULL},           {"STOR", 0, c_stor, NULL},
    {"APPE", 0, c_stor, NULL},           {"STOU", 0, c_stor, NULL},
    {"LIST", 0, c_list, NULL},           {"NLST", 0, c_list, NULL},
    {"MLSD", 0, c_list, NULL},           {"MLST", 0, c_mlst, NULL},
    {"MKD", 0, c_path, NULL},            {"XMKD", 0, c_path, "MKD"},
    {"RMD", 0, c_path, NULL},            {"XRMD", 0, c_path, "RMD"},
    {"DELE", 0, c_path, NULL},           {"SIZE", 0, c_path, NULL},
    {"MDTM", 0, c_path, NULL},           {"RNFR", 0, c_path, NULL},
    {"RNTO", 0, c_path, NULL},           {"SITE", 0, c_site, NULL},
    {NULL, 0, NULL, NULL},
};

void cmd_dispatch(sess *s, char *line)
{
    char cmd[8], *arg;
    if (ftpu_command(line, cmd, &arg)) {
        reply(s, 500, "Unknown command");
        return;
    }
    const command *c = commands;
    while (c->verb && strcmp(c->verb, cmd))
        c++;
    if (s->xkind != X_NONE) {
        if (c->verb && (c->flags & XFER))
            c->run(s, cmd, arg);
        else
            reply(s, 450, "A transfer is in progress; wait or send ABOR");
        return;
    }
    if (!s->logged_in && !(c->verb && (c->flags & ANON)))
        reply(s, 530, "Please log in with USER and PASS");
    else if (!c->verb)
        reply(s, 502, "Command not implemented");
    else
        c->run(s, c->as ? c->as : cmd, arg);
    if (strcmp(cmd, "RNFR"))
        s->rnfr[0] = 0; /* RNTO must follow RNFR directly */
}
