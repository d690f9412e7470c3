/* Fuzz target: the tus request headers (kernel/tus.c and util.c): Upload-Length and
 * Upload-Offset (parse_u64), Upload-Metadata (tus_parse_metadata) and Upload-Checksum
 * (tus_parse_checksum). The input is up to three lines, one value each, in that order; every
 * line is tried as every header. Invariants: a number is accepted only when it is all digits
 * and prints back the same (without leading zeros); accepted metadata is an object whose keys
 * are 1-128 printable ASCII bytes with no space or comma and whose values are UTF-8 text
 * without NUL; an accepted checksum is sha1 with 20 bytes or sha256 with 32; every refusal is
 * MB_EINVAL with a sentence. */
#include "../../kernel/kernel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_number(const char *s)
{
    uint64_t v;
    bool ok = parse_u64(s, &v);
    bool digits = *s && strspn(s, "0123456789") == strlen(s);
    if (ok && !digits)
        __builtin_trap();
    if (ok) {
        char back[32];
        snprintf(back, sizeof back, "%llu", (unsigned long long)v);
        const char *t = s;
        while (t[0] == '0' && t[1])
            t++;
        if (strcmp(back, t))
            __builtin_trap();
    } else if (digits && strlen(s) < 20) { /* short digit strings always fit in 64 bits */
        __builtin_trap();
    }
}

static void check_metadata(const char *s)
{
    json_t *m = NULL;
    mb_err err = {0};
    if (tus_parse_metadata(s, &m, &err)) {
        if (err.code != MB_EINVAL || !err.msg[0] || m)
            __builtin_trap();
        return;
    }
    if (!json_is_object(m))
        __builtin_trap();
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        size_t kl = strlen(k);
        if (kl < 1 || kl > 128 || strchr(k, ',') || !json_is_string(v))
            __builtin_trap();
        for (size_t i = 0; i < kl; i++)
            if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
                __builtin_trap();
        size_t vl = json_string_length(v);
        if (memchr(json_string_value(v), 0, vl) || !utf8_valid(json_string_value(v), vl))
            __builtin_trap();
    }
    json_decref(m);
}

static void check_checksum(const char *s)
{
    int algo = -1;
    uint8_t d[32];
    size_t n = 0;
    mb_err err = {0};
    if (tus_parse_checksum(s, &algo, d, &n, &err)) {
        if (err.code != MB_EINVAL || !err.msg[0])
            __builtin_trap();
        return;
    }
    if (!((algo == 1 && n == 20 && !strncmp(s, "sha1 ", 5)) || (algo == 256 && n == 32 && !strncmp(s, "sha256 ", 7))))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    memcpy(in, data, size);
    in[size] = 0; /* a header value ends at its first NUL, as libmicrohttpd hands it over */
    char *save = NULL;
    int k = 0;
    for (char *line = strtok_r(in, "\n", &save); line && k < 3; line = strtok_r(NULL, "\n", &save), k++) {
        check_number(line);
        check_metadata(line);
        check_checksum(line);
    }
    free(in);
    return 0;
}
