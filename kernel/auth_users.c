/*
 * auth_users.c — the account records' two lookups that the file service needs below the doors:
 * is a username well formed, and an account's name by its id (docs/storage.md: u/<name>,
 * ui/<uid16>). Kept apart from auth.c (logins, sessions, tokens, their HTTP routes) so that
 * history.c and stores.c call down, not up into a door (docs/architecture.md "Layers").
 *
 * Threads: any; reads only.
 */
#include "kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool auth_valid_username(const char *n)
{
    size_t len = strlen(n);
    if (len < 1 || len > 64)
        return false;
    if (!((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9')))
        return false;
    return strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

int auth_user_name(uint64_t id, char *buf, size_t n)
{
    char key[32], k16[17];
    key_u64(k16, id);
    snprintf(key, sizeof key, "ui/%s", k16);
    char *v;
    if (db_get(key, strlen(key), &v, NULL))
        return MB_ENOENT;
    snprintf(buf, n, "%s", v);
    free(v);
    return 0;
}
