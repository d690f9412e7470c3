/*
 * modules/discord/dc_interact.h — Discord interaction requests: the Ed25519 check and the
 * parse of the body into the few things the module acts on. Pure (jansson and libsodium
 * only, no kernel call), so tests/fuzz/fuzz_discord.c and tests/unit/test_discord.c compile
 * it in. Any thread; no shared state.
 */
#ifndef MBYTE_DC_INTERACT_H
#define MBYTE_DC_INTERACT_H

#include <stdbool.h>
#include <stddef.h>

enum { DC_IX_PING = 1, DC_IX_COMMAND = 2 };
enum { DC_CMD_NONE = 0, DC_CMD_USAGE = 1, DC_CMD_SEARCH = 2, DC_CMD_BACKUP_NOW = 3, DC_CMD_LINK = 4 };

typedef struct dc_ix {
    int type;          /* DC_IX_PING, DC_IX_COMMAND, or another interaction type (answered 400) */
    int command;       /* DC_CMD_*: what /mbyte ... asked for (DC_CMD_NONE: unknown) */
    char app_id[24];   /* snowflakes as decimal text */
    char user[24];     /* the Discord user: member.user.id in a guild, user.id in a DM */
    char token[1024];  /* the interaction token (follow-ups go to /webhooks/<app_id>/<token>) */
    char words[256];   /* /mbyte search <words> */
    char code[32];     /* /mbyte link <code> (a code the MByte user got from POST /api/v1/discord/link/code) */
} dc_ix;

/* 1 if sig_hex (128 hex digits) is a valid Ed25519 signature by the 32-byte key `pk` over
 * timestamp followed by the body, else 0 (also for a missing or malformed header). */
int dc_ix_verify(const unsigned char pk[32], const char *sig_hex, const char *timestamp, const void *body,
                 size_t len);

/* Parse an interaction body. 0 with *out filled, -1 for anything that is not an interaction
 * object with a known shape (a PING needs only its type; a command needs an application id,
 * a token and a user). Never reads past len. */
int dc_ix_parse(const void *body, size_t len, dc_ix *out);

/* True if s is a snowflake: 1 to 20 decimal digits. */
bool dc_snowflake(const char *s);

#endif
