/* blob_int.h — what blob.c (chunk files, backends, store reads) and blob_cache.c (reads through
 * the page cache) share; nothing outside the two includes it. */
#ifndef MBYTE_BLOB_INT_H
#define MBYTE_BLOB_INT_H
#include "fs.h"

/* blob.c */
bool valid_key(const char *k);                          /* 64 lower-hex characters */
int chunk_open(const char *key, mb_err *err);           /* the local chunk file, O_RDONLY */
int64_t read_at(int fd, void *buf, size_t len, uint64_t off, const char *key, mb_err *err);
bool local_active(void);                                /* the kernel's own backend is the active one */

/* blob_cache.c */
/* Check n bytes read for chunk `hash` (len expected) against fastsum, or SHA-256 without one. */
int blob_verify(const char *hash, const char *fastsum, const void *buf, size_t n, size_t len, mb_err *err);
void blob_cache_init(void); /* decides chunk_large_folios, starts the read-ahead threads */
void blob_cache_fini(void);
#endif
