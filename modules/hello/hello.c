/* modules/hello — placeholder, replaced by the example module. */
#include "mbyte.h"

static const mb_api *api;

static int h_hello(mb_req *req, void *state, mb_err *err)
{
    (void)state, (void)err;
    return api->reply_json(req, 200, json_pack("{s:s}", "hello", "world"));
}

static int init(mb_module *self, const mb_api *a, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)config, (void)state, (void)err;
    api = a;
    return 0;
}

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/hello", MB_ROLE_USER, h_hello},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "hello",
    .version = "0.1.0",
    .routes = routes,
    .init = init,
};
