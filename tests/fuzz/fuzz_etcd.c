/* Fuzz target: the parser of etcd's answers (kernel/etcd.c, etcd_answer_parse), outside bytes
 * from the network. Whatever comes in: an accepted answer is an error (a gRPC code and a
 * message) or has well-formed entries (a range's, a txn's or a watch message's events), each key and
 * value NUL-terminated at its length, a deleted one without a value; a
 * refusal is MB_EINVAL with a sentence and leaves nothing to free. */
#include "../../kernel/kernel.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    etcd_answer a;
    mb_err err = {0};
    if (etcd_answer_parse((const char *)data, size, &a, &err) == 0) {
        if (a.code < 0 || (a.code && a.nkvs) || (a.nkvs && !a.kvs))
            __builtin_trap();
        for (size_t i = 0; i < a.nkvs; i++)
            if (!a.kvs[i].key || !a.kvs[i].value || a.kvs[i].value[a.kvs[i].value_len] != 0 ||
                strlen(a.kvs[i].value) > a.kvs[i].value_len || (a.kvs[i].deleted && a.kvs[i].value_len))
                __builtin_trap();
        etcd_answer_free(&a);
    } else if (err.code != MB_EINVAL || !err.msg[0] || a.kvs || a.nkvs)
        __builtin_trap();
    return 0;
}
