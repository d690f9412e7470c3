/*
 * task.c — STUB: the persistent task queue (to be written; see issue 2).
 */
#include "kernel.h"

int task_init(struct event_base *base, int workers, mb_err *err) { (void)base, (void)workers, (void)err; return 0; }
void task_fini(void) {}
int task_type_add(mb_module *owner, const mb_task_type *t, void *state, mb_err *err)
{
    (void)owner, (void)t, (void)state;
    return err_set(err, MB_EUNSUPP, "tasks are not implemented yet");
}
void task_types_remove(mb_module *owner) { (void)owner; }
void task_types_swap(mb_module *from, mb_module *to, void *new_state) { (void)from, (void)to, (void)new_state; }
int task_submit(const char *type, uint64_t owner, json_t *args, uint64_t *id, mb_err *err)
{
    (void)type, (void)owner, (void)id;
    json_decref(args);
    return err_set(err, MB_EUNSUPP, "tasks are not implemented yet");
}
bool task_progress(mb_task *t, int percent, const char *message) { (void)t, (void)percent, (void)message; return false; }
void task_result(mb_task *t, json_t *result) { (void)t; json_decref(result); }
uint64_t task_id(mb_task *t) { (void)t; return 0; }
uint64_t task_owner(mb_task *t) { (void)t; return 0; }
