/* tests/modules/needsdep — depends on a module that does not exist: refused with
 * "module needsdep needs module nosuchmodule, which is not loaded". Test-only. */
#include "mbyte.h"

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)api, (void)config, (void)state, (void)err;
    return 0; /* never reached */
}

static const char *const depends[] = {"nosuchmodule", NULL};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "needsdep",
    .version = "1.0.0",
    .depends = depends,
    .init = init,
};
