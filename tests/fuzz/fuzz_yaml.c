/* Fuzz target: the YAML configuration parser (kernel/cfg.c). Any input must either parse
 * or fail with a file:line message, never crash or leak. */
#include "../../kernel/kernel.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *out = NULL, *lines = NULL;
    mb_err err = {0};
    if (cfg_yaml_parse("fuzz.yaml", (const char *)data, size, &out, &lines, &err) == 0) {
        json_decref(out);
        json_decref(lines);
    } else if (strncmp(err.msg, "fuzz.yaml:", 10) != 0)
        __builtin_trap(); /* every refusal names the file and line */
    return 0;
}
