/* tests/modules/stubborn — its fini refuses an unload (never a reload): the kernel must
 * keep it ACTIVE, its route served, and report the reason. It agrees to go once
 * POST /api/v1/stubborn/release was called. Test-only. */
#include "mbyte.h"
#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
    const mb_api *api;
    atomic_bool released;
} stubborn;

static int h_get(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    stubborn *s = state;
    return s->api->reply_json(req, 200, json_pack("{s:b}", "stubborn", 1));
}

static int h_release(mb_req *req, void *state, mb_err *err)
{
    (void)err;
    stubborn *s = state;
    atomic_store(&s->released, true);
    return s->api->reply_json(req, 200, json_pack("{s:b}", "released", 1));
}

static int init(mb_module *self, const mb_api *api, const json_t *config, void **state, mb_err *err)
{
    (void)self, (void)config, (void)err;
    stubborn *s = calloc(1, sizeof *s);
    s->api = api;
    *state = s;
    return 0;
}

static int fini(void *state, bool reloading, mb_err *err)
{
    stubborn *s = state;
    if (!reloading && !atomic_load(&s->released))
        return s->api->err_set(err, MB_EBUSY, "it still holds work nobody else can take");
    free(s);
    return 0;
}

static const mb_route routes[] = {
    {sizeof(mb_route), "GET", "/api/v1/stubborn", MB_ROLE_USER, h_get},
    {sizeof(mb_route), "POST", "/api/v1/stubborn/release", MB_ROLE_ADMIN, h_release},
    {0},
};

MB_MODULE_EXPORT = {
    .size = sizeof(mb_module_desc),
    .abi_major = MB_ABI_MAJOR,
    .abi_minor = MB_ABI_MINOR,
    .name = "stubborn",
    .version = "1.0.0",
    .routes = routes,
    .init = init,
    .fini = fini,
};
