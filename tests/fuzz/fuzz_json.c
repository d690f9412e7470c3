/* Fuzz target: JSON request bodies (kernel/http.c http_json_body, the check behind every
 * handler's api->req_json). Invariants: an accepted body is valid UTF-8 and a JSON object
 * that survives a dump and reload unchanged with duplicate keys refused; a refused one is
 * MB_EINVAL with a sentence. */
#include "../../kernel/kernel.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mb_err err = {0};
    json_t *j = http_json_body((const char *)data, size, &err);
    if (!j) {
        if (err.code != MB_EINVAL || !err.msg[0])
            __builtin_trap();
        return 0;
    }
    if (!json_is_object(j) || !utf8_valid((const char *)data, size))
        __builtin_trap();
    char *txt = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!txt)
        __builtin_trap();
    mb_err e2 = {0};
    json_t *back = http_json_body(txt, strlen(txt), &e2);
    if (!back || !json_equal(j, back))
        __builtin_trap();
    json_decref(back);
    free(txt);
    json_decref(j);
    return 0;
}
