/*
 * modules/search/tagfilt.c — the tag: filter of the query language (issue 19). The tags live in
 * the tags module; this file asks it through the kernel's module services (api->service_call
 * "tags.match", ABI 2.1) which of a store's hits carry the query's tags, so the two modules never
 * link against each other. Without the tags module a tag: query is refused with a sentence.
 * Threads: HTTP workers (h_search); no state of its own.
 */
#include "mbyte.h"
#include "search.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tf_apply(const struct mb_api *api, uint64_t sid, const sq_query *q, si_hit *h, int *n, char *err, size_t errlen)
{
    if (!q->ntags) /* with no hits it still asks: without the tags module a tag: query is a 400 */
        return 0;
    json_t *tags = json_array(), *paths = json_array();
    for (int i = 0; i < q->ntags; i++)
        json_array_append_new(tags, json_string(q->tags[i]));
    for (int i = 0; i < *n; i++)
        json_array_append_new(paths, json_string(h[i].path));
    json_t *arg = json_pack("{s:I, s:o, s:o}", "store", (json_int_t)sid, "tags", tags, "paths", paths);
    json_t *out = NULL;
    mb_err e = {0};
    int rc = api->service_call("tags.match", arg, &out, &e);
    json_decref(arg);
    if (rc) {
        json_decref(out);
        snprintf(err, errlen, "%s", rc == MB_ENOENT ? "tag: filters need the tags module, which is not loaded" : e.msg);
        return rc == MB_ENOENT ? MB_EINVAL : rc;
    }
    json_t *keep = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(out, "paths"), i, v) json_object_set(keep, json_string_value(v), json_true());
    json_decref(out);
    int k = 0;
    for (int j = 0; j < *n; j++) {
        if (json_object_get(keep, h[j].path))
            h[k++] = h[j];
        else
            free(h[j].path), free(h[j].name), free(h[j].kind), free(h[j].snippet);
    }
    *n = k;
    json_decref(keep);
    return 0;
}
