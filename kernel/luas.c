/*
 * luas.c — STUB: sandboxed Lua 5.4 (to be written; see issue 2).
 */
#include "kernel.h"

int luas_init(const char *script_dir, mb_err *err) { (void)script_dir, (void)err; return 0; }
void luas_fini(void) {}
int luas_call(const char *script, const char *fn, const json_t *arg, json_t **result, mb_err *err)
{
    (void)fn, (void)arg, (void)result;
    return err_set(err, MB_EUNSUPP, "cannot run %s yet", script);
}
int luas_run_string(const char *name, const char *src, const char *fn, const json_t *arg, json_t **result,
                    mb_err *err)
{
    (void)src, (void)fn, (void)arg, (void)result;
    return err_set(err, MB_EUNSUPP, "cannot run %s yet", name);
}
