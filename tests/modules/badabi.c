/* tests/modules/badabi — a module built for the next ABI major: the kernel must refuse it
 * with a sentence naming both versions, and keep serving. Test-only; never installed. */
#include "mbyte.h"

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)api, (void)config, (void)state, (void)err;
    return 0; /* never reached */
}

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR + 1,
    .abi_minor = 0,
    .name = "badabi",
    .version = "1.0.0",
    .init = init,
};
