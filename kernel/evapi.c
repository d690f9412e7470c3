/*
 * evapi.c — what an event-driven module (ftp) needs from the kernel beyond files: the
 * loop itself, the data directory, the module directory and the FTP column of the error
 * table. api.c points the mb_api entries here; the blocking pool (api->run_blocking) is
 * pool.c's.
 *
 * Threads: any; everything here is read-only after start.
 */
#include "kernel.h"

struct event_base *evapi_event_base(void) { return main_loop(); }
const char *evapi_data_dir(void) { return g_cfg->data_dir; }
/* Where the modules' .so files are, for programs shipped beside them. */
const char *evapi_module_dir(void) { return g_cfg->module_dir; }
int evapi_err_ftp_reply(int code) { return err_ftp_reply(code); }
