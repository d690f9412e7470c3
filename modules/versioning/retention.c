/*
 * modules/versioning/retention.c — the thinning rule for old versions (retention.h says
 * which). Pure: no kernel, no I/O; the versioning module calls it, the cmocka test too.
 */
#include "retention.h"
#include <stdlib.h>

typedef struct slot {
    size_t i;
    int64_t time;
    uint64_t version;
} slot;

/* Newest first: by time, then by version (two saves in one second). */
static int newest_first(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    if (x->time != y->time)
        return x->time > y->time ? -1 : 1;
    return x->version > y->version ? -1 : x->version < y->version;
}

size_t retention_select(const retention_item *v, size_t n, int64_t now, size_t max_count, int64_t max_age,
                        bool *keep)
{
    if (!n)
        return 0;
    slot *s = malloc(n * sizeof *s);
    if (!s) { /* keep everything rather than guess */
        for (size_t i = 0; i < n; i++)
            keep[i] = true;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        s[i] = (slot){i, v[i].time, v[i].version};
    qsort(s, n, sizeof *s, newest_first);
    /* Walking newest to oldest, a version is the newest of its bucket when its bucket differs
     * from the last kept one's in the same tier (buckets only grow older along the walk). */
    int64_t last_hour = INT64_MIN, last_day = INT64_MIN;
    size_t kept = 0;
    for (size_t k = 0; k < n; k++) {
        const retention_item *it = &v[s[k].i];
        int64_t age = now - it->time;
        bool on;
        if (it->current)
            on = true;
        else if (max_age > 0 && age > max_age)
            on = false;
        else if (age < RETENTION_DAY)
            on = true;
        else if (age < RETENTION_MONTH) {
            int64_t h = it->time / 3600;
            on = h != last_hour;
            if (on)
                last_hour = h;
        } else {
            int64_t d = it->time / RETENTION_DAY;
            on = d != last_day;
            if (on)
                last_day = d;
        }
        keep[s[k].i] = on;
        kept += on;
    }
    /* Over the count: the oldest kept ones go, never the current one. */
    for (size_t k = n; max_count && kept > max_count && k-- > 0;) {
        size_t i = s[k].i;
        if (keep[i] && !v[i].current) {
            keep[i] = false;
            kept--;
        }
    }
    free(s);
    return n - kept;
}
