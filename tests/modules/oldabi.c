/* tests/modules/oldabi — a module built for ABI 1.9, the last 1.x: its mb_api was laid out
 * by the change that added each call, so a 2.x kernel must refuse it with the same sentence
 * as any other major, never hand it the new table. Test-only; never installed. */
#include "mbyte.h"

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)api, (void)config, (void)state, (void)err;
    return 0; /* never reached */
}

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = 1,
    .abi_minor = 9,
    .name = "oldabi",
    .version = "1.0.0",
    .init = init,
};
