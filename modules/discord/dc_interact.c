/*
 * modules/discord/dc_interact.c — Discord interaction requests (see dc_interact.h).
 *
 * Discord signs every request to an Interactions endpoint with the application's Ed25519
 * key: X-Signature-Ed25519 is the hex signature of X-Signature-Timestamp followed by the raw
 * body. The body is parsed only after the signature held, but the parser is written for
 * hostile bytes anyway (it has a fuzz target). Pure; any thread.
 */
#include "dc_interact.h"
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool dc_snowflake(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= 20 && strspn(s, "0123456789") == n;
}

int dc_ix_verify(const unsigned char pk[32], const char *sig_hex, const char *timestamp, const void *body,
                 size_t len)
{
    unsigned char sig[crypto_sign_BYTES];
    size_t got = 0;
    if (!sig_hex || !timestamp || strlen(sig_hex) != 2 * crypto_sign_BYTES || !*timestamp || strlen(timestamp) > 32)
        return 0;
    if (sodium_hex2bin(sig, sizeof sig, sig_hex, strlen(sig_hex), NULL, &got, NULL) || got != sizeof sig)
        return 0;
    size_t tl = strlen(timestamp);
    unsigned char *msg = malloc(tl + len + 1);
    if (!msg)
        return 0;
    memcpy(msg, timestamp, tl);
    if (len)
        memcpy(msg + tl, body, len);
    int ok = crypto_sign_verify_detached(sig, msg, tl + len, pk) == 0;
    free(msg);
    return ok;
}

static bool copy_str(char *dst, size_t n, const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= n || json_string_length(v) != strlen(s))
        return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

/* The first option of `opts` (an array), or NULL. */
static const json_t *first_option(const json_t *opts)
{
    const json_t *o = json_array_get(opts, 0);
    return json_is_object(o) ? o : NULL;
}

static int parse_command(const json_t *data, dc_ix *out)
{
    const char *name = json_string_value(json_object_get(data, "name"));
    if (!name || strcmp(name, "mbyte"))
        return 0;
    const json_t *sub = first_option(json_object_get(data, "options"));
    const char *sn = json_string_value(json_object_get(sub, "name"));
    if (!sn)
        return 0;
    if (!strcmp(sn, "usage"))
        out->command = DC_CMD_USAGE;
    else if (!strcmp(sn, "search")) {
        const json_t *w = first_option(json_object_get(sub, "options"));
        if (!copy_str(out->words, sizeof out->words, json_object_get(w, "value")) || !out->words[0])
            return -1;
        out->command = DC_CMD_SEARCH;
    } else if (!strcmp(sn, "link")) {
        const json_t *c = first_option(json_object_get(sub, "options"));
        if (!copy_str(out->code, sizeof out->code, json_object_get(c, "value")) || !out->code[0])
            return -1;
        out->command = DC_CMD_LINK;
    } else if (!strcmp(sn, "backup")) {
        /* "/mbyte backup now": a subcommand group with the subcommand "now" */
        const char *n2 = json_string_value(json_object_get(first_option(json_object_get(sub, "options")), "name"));
        if (n2 && !strcmp(n2, "now"))
            out->command = DC_CMD_BACKUP_NOW;
    }
    return 0;
}

int dc_ix_parse(const void *body, size_t len, dc_ix *out)
{
    memset(out, 0, sizeof *out);
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = -1;
    if (!json_is_object(j))
        goto done;
    json_t *t = json_object_get(j, "type");
    if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 100)
        goto done;
    out->type = (int)json_integer_value(t);
    if (out->type != DC_IX_COMMAND) {
        rc = 0;
        goto done;
    }
    const json_t *user = json_object_get(json_object_get(j, "member"), "user");
    if (!user)
        user = json_object_get(j, "user");
    if (!copy_str(out->app_id, sizeof out->app_id, json_object_get(j, "application_id")) ||
        !copy_str(out->user, sizeof out->user, json_object_get(user, "id")) ||
        !copy_str(out->token, sizeof out->token, json_object_get(j, "token")) || !dc_snowflake(out->app_id) ||
        !dc_snowflake(out->user) || !out->token[0] || strspn(out->token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != strlen(out->token))
        goto done;
    rc = parse_command(json_object_get(j, "data"), out);
done:
    json_decref(j);
    return rc;
}
