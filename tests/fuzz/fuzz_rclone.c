/* Fuzz target: the rclone module's readers of rcd's answers (modules/rclone/rc_util.c, compiled
 * in): rcu_list_parse over an operations/list body, rcu_stat_parse over an operations/stat body,
 * rcu_time over the input's first bytes as a ModTime, and rcu_encode of the input as a name.
 * Invariants: every name handed to the callback is NUL-terminated; a stat that found a file gave
 * a size; an encoded name fits its buffer and holds only unreserved characters and %XX. */
#include "../../modules/rclone/rc_util.h"
#include <stdlib.h>
#include <string.h>

static int one(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud)
{
    (void)size, (void)mtime, (void)dir;
    if (strlen(name) > (size_t)*(size_t *)ud)
        __builtin_trap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return 0;
    memcpy(s, data, n);
    s[n] = 0;
    size_t cap = n;
    rcu_list_parse(s, n, one, &cap);
    uint64_t size = UINT64_MAX;
    int64_t mtime = 0;
    if (rcu_stat_parse(s, n, &size, &mtime) == 1 && size == UINT64_MAX)
        __builtin_trap();
    rcu_time(s, n < 40 ? n : 40);
    char enc[96];
    if (rcu_encode(s, n & 1, enc, sizeof enc)) {
        size_t el = strnlen(enc, sizeof enc);
        if (el >= sizeof enc || strspn(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%/") != el)
            __builtin_trap();
    }
    free(s);
    return 0;
}
