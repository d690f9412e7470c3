/* Fuzz target: the secret reference parser (kernel/secret.c, secret_ref_parse). Whatever comes
 * in: an accepted reference has a scheme of a-z, 0-9 and _, an env: name of letters, digits
 * and '_', a file: path that is absolute, and a vault: path with a mount, no empty, '.' or
 * '..' segment, a key, and a version of 0 (the newest) or more. Anything else is refused
 * with MB_EINVAL and a sentence. */
#include "../../kernel/kernel.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    secret_ref r;
    mb_err err = {0};
    if (secret_ref_parse(s, &r, &err) == 0) {
        if (!r.scheme[0] || strspn(r.scheme, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(r.scheme) ||
            !r.rest[0])
            __builtin_trap();
        if (!strcmp(r.scheme, "env") &&
            strspn(r.rest, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != strlen(r.rest))
            __builtin_trap();
        if (!strcmp(r.scheme, "file") && r.rest[0] != '/')
            __builtin_trap();
        if (!strcmp(r.scheme, "vault")) {
            const char *slash = strchr(r.path, '/');
            if (!slash || slash == r.path || !slash[1] || !r.key[0] || r.version < 0 || strstr(r.path, "//") ||
                strstr(r.path, "/../") || strstr(r.path, "/./") || r.path[strlen(r.path) - 1] == '/')
                __builtin_trap();
            size_t n = strlen(r.path);
            if ((n >= 3 && !strcmp(r.path + n - 3, "/..")) || (n >= 2 && !strcmp(r.path + n - 2, "/.")))
                __builtin_trap();
        }
    } else if (err.code != MB_EINVAL || !err.msg[0])
        __builtin_trap();
    free(s);
    return 0;
}
