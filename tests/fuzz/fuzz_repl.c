/* Fuzz target: the reader of a replication request's body (kernel/cluster_repl.c, repl_frames),
 * bytes from another node. Whatever comes in: it either refuses with a sentence or walks frames
 * that lie inside the body, whose ops each decode to their end (db_repl_next) with every key and
 * value inside the frame. */
#include "../../kernel/cluster_repl.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct span {
    const char *p, *end;
};

static const char *each(const repl_frame *f, void *ud)
{
    const struct span *s = ud;
    if (f->ops < s->p || f->ops + f->len > s->end)
        __builtin_trap();
    size_t off = 0, kl, vl;
    const char *k, *v;
    int op;
    while ((op = db_repl_next(f->ops, f->len, &off, &k, &kl, &v, &vl)) > 0)
        if (k < f->ops || k + kl > f->ops + f->len || (op == 'P' && (v < f->ops || v + vl > f->ops + f->len)))
            __builtin_trap();
    if (op < 0) /* repl_frames checked every frame's ops before handing it on */
        __builtin_trap();
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct span s = {(const char *)data, (const char *)data + size};
    const char *no = repl_frames((const char *)data, size, each, &s);
    if (no && !no[0])
        __builtin_trap();
    return 0;
}
