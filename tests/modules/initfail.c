/* tests/modules/initfail — its init fails: the load is refused with the module's own
 * sentence, and the route it declares must never become reachable. Test-only. */
#include "mbyte.h"

static int h_never(mb_req *req, void *state, mb_err *err)
{
    (void)req, (void)state, (void)err;
    return MB_EINTERNAL;
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)config, (void)state;
    return api->err_set(err, MB_EIO, "the frobnicator is missing");
}

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/initfail", MB_ROLE_USER, h_never},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "initfail",
    .version = "1.0.0",
    .routes = routes,
    .init = init,
};
