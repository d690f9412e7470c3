/*
 * modmgr.c — STUB: the module manager (to be written; see issue 2).
 */
#include "kernel.h"

int modmgr_init(struct event_base *base, mb_err *err) { (void)base, (void)err; return 0; }
void modmgr_fini(void) {}
int modmgr_load(const char *name, mb_err *err) { return err_set(err, MB_EUNSUPP, "cannot load %s yet", name); }
int modmgr_unload(const char *name, mb_err *err) { return err_set(err, MB_ENOENT, "%s is not loaded", name); }
int modmgr_reload(const char *name, mb_err *err) { return err_set(err, MB_ENOENT, "%s is not loaded", name); }
json_t *modmgr_list(void) { return json_array(); }
void modmgr_enter(mb_module *m) { (void)m; }
void modmgr_leave(mb_module *m) { (void)m; }
const char *modmgr_name(mb_module *m) { (void)m; return "kernel"; }
