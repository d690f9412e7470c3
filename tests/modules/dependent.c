/* tests/modules/dependent — depends on hello, so hello cannot be unloaded while it is
 * loaded, and it cannot load without hello. Test-only. */
#include "mbyte.h"

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)api, (void)config, (void)state, (void)err;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    (void)state, (void)reloading, (void)err;
    return 0;
}

static const char *const depends[] = {"hello", NULL};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "dependent",
    .version = "1.0.0",
    .description = "needs hello",
    .depends = depends,
    .init = init,
    .fini = fini,
};
