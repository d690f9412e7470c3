/* Fuzz target: the access log's escaping of client bytes (kernel/accesslog.c). Whatever comes in,
 * a field holds only printable ASCII, never an unescaped '"', and fits its buffer, so a client
 * cannot end a quoted field, forge a line or a second line, or hide bytes from a log reader. */
#include "../../kernel/kernel.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw = malloc(size + 1);
    memcpy(raw, data, size);
    raw[size] = 0;
    size_t room = 8 + (size ? data[0] % 64 : 0);
    char q[80], t[80];
    memset(q, 'Z', sizeof q);
    memset(t, 'Z', sizeof t);
    size_t n = accesslog_quote(q, room, raw);
    accesslog_target(raw, t, room);
    if (n >= room || strlen(q) != n || strlen(t) >= room || q[room] != 'Z' || t[room] != 'Z')
        __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)q[i] < 0x20 || (unsigned char)q[i] >= 0x7f ||
            (q[i] == '"' && (i == 0 || q[i - 1] != '\\')))
            __builtin_trap();
    for (const char *p = t; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '"' || *p == '\\')
            __builtin_trap();
    free(raw);
    return 0;
}
