/*
 * modules/rclone/rc_util.h — the rclone module's pure part: reading rcd's JSON answers
 * (operations/list and operations/stat, parsed with jansson), the times in them, and the
 * percent-encoding of the names it puts in URLs. Compiled into the module and into its fuzz
 * target (tests/fuzz/fuzz_rclone.c). No state; any thread.
 */
#ifndef MBYTE_RC_UTIL_H
#define MBYTE_RC_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An lsjson item's ModTime ("2026-12-04T07:01:35.747353545Z", or with a "+01:00" offset) as
 * Unix seconds; 0 for anything else. Reads at most n bytes of s. */
int64_t rcu_time(const char *s, size_t n);

/* Each member of an operations/list answer's "list" array, handed to fn with its Name (a
 * NUL-terminated string), Size (0 when absent or negative), ModTime and IsDir, until fn returns
 * non-zero (then that). -1 when the answer is not a JSON object with a "list" array; a member
 * that is not an object with a string Name is skipped. */
int rcu_list_parse(const char *buf, size_t len,
                   int (*fn)(const char *name, uint64_t size, int64_t mtime, bool dir, void *ud), void *ud);

/* An operations/stat answer: 1 with *size and *mtime (either may be NULL) for a file, 0 when
 * "item" is null (not there), -1 when the answer is not one (or names a directory). */
int rcu_stat_parse(const char *buf, size_t len, uint64_t *size, int64_t *mtime);

/* s percent-encoded into out (all but unreserved characters, and '/' when keep_slash): false
 * when it does not fit in n bytes (NUL included). */
bool rcu_encode(const char *s, bool keep_slash, char *out, size_t n);

#endif
