/*
 * modules/tags/tags.h — what the files of the tags module share (tags.c: tags, records, routes,
 * the event queue; rules.c: Lua rules, suggestions, the apply-to-existing task; tagexpr.c: the
 * pure filter syntax, fuzzed).
 *
 * Keys (module kv, docs/storage.md):
 *   n/<sid16>/<lower>      {"name","color"}        a store's tag: first spelling, colour
 *   e/<sid16>/<id16>       {"tags":[names],"type","path","trash"?}  one tagged entry, by its
 *                          stable id (renames, moves, trash and restore keep the id)
 *   q/<seq20>              an event to handle (copied from the hook bus in the turn's write)
 *   r/<sid16>/<name>       {"src","updated"}       a store's rule (Lua source)
 *   rs/<sid16>/<name>      {"runs","errors","last_error","applied","suggested"}  rule counts
 *                          (sid16 all zeros: global rules from scripts/lua/)
 *   s/<sid16>/<id16>       {"<lower>":{"tag","rule","reason","version"}}  open suggestions
 *   d/<sid16>/<id16>       {"<lower>":version}     dismissed suggestions, per file version
 * Threads: see tags.c. `mu` guards every read-modify-write of e/, n/, s/, d/ and rs/ records.
 */
#ifndef MB_TAGS_H
#define MB_TAGS_H
#include "mbyte.h"
#include "../qread.h" /* relative: the fuzz target includes this header too */
#include <pthread.h>
#include <stdatomic.h>

#define TAG_MAX 64 /* bytes in one tag name */

typedef struct tags {
    mb_module *self;
    const mb_api *api;
    pthread_mutex_t mu;
    mb_timer *timer;
    _Atomic uint64_t seq;
    qread rd;                   /* where the drain's last read of q/ stopped (the drain timer's) */
    _Atomic int64_t text_max;   /* bytes of extracted text a rule sees */
    _Atomic int64_t head_bytes; /* bytes of the file's start a rule sees */
    _Atomic int64_t result_max; /* files a tags.run result lists (run_result_max) */
    json_t *global_rules;       /* the names of scripts/lua/ rules to run (config); swapped under mu */
} tags;

/* tagexpr.c: the filter (?tag=a&tag=-b&any=c&any=d). Lowercased names; all of `want` and none
 * of `not`, and at least one of `any` when it is not empty. */
typedef struct tag_filter {
    json_t *want, *not, *any; /* arrays of lowercased names */
} tag_filter;
int tagx_norm(const char *in, char *out, size_t outlen, char *why, size_t whylen);
void tagx_lower(const char *in, char *out, size_t outlen);
int tagx_filter_add(tag_filter *f, const char *value, bool any, char *why, size_t whylen);
bool tagx_match(const tag_filter *f, const json_t *names);
void tagx_filter_free(tag_filter *f);

/* tags.c: records. */
void tg_key(char *out, size_t n, const char *kind, uint64_t sid, uint64_t id);
json_t *tg_get(tags *t, const char *key);
int tg_put(tags *t, const char *key, const json_t *v, mb_err *err);
/* Change the tags of entry id of store sid (at path, type) under mu: add and remove are arrays
 * of names or {"name","color"}. *out (may be NULL) the entry's tags afterwards. */
int tg_change(tags *t, uint64_t sid, uint64_t id, const char *path, const char *type, const json_t *add,
              const json_t *remove, json_t **out, mb_err *err);
int tg_req_sid(tags *t, mb_req *req, uint64_t *sid, mb_err *err);
/* The global rules' names now: a new reference (reconfigure may swap the list meanwhile). */
json_t *tg_globals(tags *t);

/* rules.c */
int rules_init(tags *t, mb_err *err);
/* Run every rule on one file of store sid (rule NULL: all; dry: compute only). *result (may be
 * NULL): {"apply":[...],"suggest":[...],"errors":[...]}. */
int rules_file(tags *t, uint64_t sid, const char *path, const char *only_rule, const char *only_src, bool dry,
               json_t **result, mb_err *err);
int rules_h_list(mb_req *req, void *state, mb_err *err);
int rules_h_get(mb_req *req, void *state, mb_err *err);
int rules_h_put(mb_req *req, void *state, mb_err *err);
int rules_h_delete(mb_req *req, void *state, mb_err *err);
int rules_h_test(mb_req *req, void *state, mb_err *err);
int rules_h_run(mb_req *req, void *state, mb_err *err);
int rules_h_suggestions(mb_req *req, void *state, mb_err *err);
int rules_h_accept(mb_req *req, void *state, mb_err *err);
int rules_h_dismiss(mb_req *req, void *state, mb_err *err);
int rules_h_reload(mb_req *req, void *state, mb_err *err);
int rules_task(mb_task *task, const json_t *args, void *state, mb_err *err);
#endif
