/* Fuzz target: the usage records' direct reader (kernel/txn.c txn_usage_parse), which reads
 * "us/" and "uu/" records without jansson. Invariants: what it accepts is JSON that jansson
 * reads to the same four counters, and printing them again gives back the very same bytes;
 * whatever it refuses is left to jansson by its caller, so refusing is always safe. */
#include "../../kernel/txn.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    txn_usage_t u;
    if (!txn_usage_parse((const char *)data, size, &u))
        return 0;
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j || json_integer_value(json_object_get(j, "v")) != 2 ||
        json_integer_value(json_object_get(j, "bytes")) != u.bytes ||
        json_integer_value(json_object_get(j, "files")) != u.files ||
        json_integer_value(json_object_get(j, "versions")) != u.versions ||
        json_integer_value(json_object_get(j, "trash")) != u.trash)
        __builtin_trap();
    json_decref(j);
    char out[TXN_USAGE_TEXT];
    size_t n = txn_usage_print(out, &u);
    if (n != size || memcmp(out, data, size))
        __builtin_trap();
    return 0;
}
