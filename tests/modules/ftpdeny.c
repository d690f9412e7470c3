/*
 * tests/modules/ftpdeny.c — a test-only filter module standing in for quotas and policy:
 * a write whose path contains "over-quota" is refused with MB_EQUOTA, a delete whose
 * path contains "protected" with MB_EPERM. test_ftp.py checks that the FTP door turns
 * them into 552 and 550 through the kernel's error table.
 */
#include "mbyte.h"
#include <string.h>

static const mb_api *g_api; /* test module: one copy only, never reloaded */

static int f_write(const char *event, json_t *payload, void *state, mb_err *err)
{
    (void)event, (void)state;
    const char *p = json_string_value(json_object_get(payload, "path"));
    if (p && strstr(p, "over-quota"))
        return g_api->err_set(err, MB_EQUOTA, "store is full (test quota)");
    return 0;
}

static int f_delete(const char *event, json_t *payload, void *state, mb_err *err)
{
    (void)event, (void)state;
    const char *p = json_string_value(json_object_get(payload, "path"));
    if (p && strstr(p, "protected"))
        return g_api->err_set(err, MB_EPERM, "this file is protected (test policy)");
    return 0;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)config, (void)err;
    g_api = api;
    *state = NULL;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)state, (void)reloading, (void)err;
    return 0;
}

static const mb_hook hooks[] = {
    {sizeof(mb_hook), "file.write", MB_HOOK_FILTER, 10, f_write, NULL},
    {sizeof(mb_hook), "file.delete", MB_HOOK_FILTER, 10, f_delete, NULL},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = 1,
    .name = "ftpdeny",
    .version = "1.0.0",
    .description = "test filters: quota and permission refusals",
    .hooks = hooks,
    .init = init,
    .fini = fini,
};
