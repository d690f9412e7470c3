/*
 * modules/versioning/retention.h — which old versions to keep (pure; unit-tested in
 * tests/unit/test_retention.c, compiled into versioning.so and the test).
 */
#ifndef VERSIONING_RETENTION_H
#define VERSIONING_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct retention_item {
    uint64_t version;
    int64_t time; /* Unix seconds the version was made */
    bool current;
} retention_item;

#define RETENTION_DAY 86400
#define RETENTION_MONTH (30 * RETENTION_DAY)

/* Decide, for versions v[0..n) of one file, which to keep (keep[i] true) at time `now`:
 *   - the current version always;
 *   - every version younger than a day;
 *   - from a day to a month old, the newest version of each clock hour;
 *   - older than a month, the newest version of each UTC day;
 *   - none older than max_age seconds (0: no age limit);
 *   - then at most max_count versions (0: no limit), dropping the oldest first.
 * Order of v does not matter. Returns how many are dropped. Pure, thread-safe. */
size_t retention_select(const retention_item *v, size_t n, int64_t now, size_t max_count, int64_t max_age,
                        bool *keep);

#endif
