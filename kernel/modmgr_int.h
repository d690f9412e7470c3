/*
 * modmgr_int.h — between modmgr.c and modmgr_cluster.c (the module manager's cluster side).
 */
#ifndef MB_MODMGR_INT_H
#define MB_MODMGR_INT_H
#include "kernel.h"

/* modmgr.c, for the cluster side; on the loop thread. */
bool modmgr_name_ok(const char *name);
bool modmgr_live(const char *name); /* a copy of it is loaded */
int modmgr_switch(const char *name, bool on, mb_err *err); /* load or unload it here */
void modmgr_reconfigure_one(const char *name);             /* apply conf.d/<name>.yaml anew */

/* modmgr_cluster.c */
void modmgr_cluster_init(void);                                /* follow mc/ and ms/ from now on */
void modmgr_cluster_stop(void);                                /* a switch heard from now on is not followed */
void modmgr_cluster_state_put(const char *name, bool enabled); /* record a switch made here */
void modmgr_cluster_settings_put(const char *name);            /* record new settings taken here */
#endif
