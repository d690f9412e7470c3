/*
 * s3_util.h — the pure parts of the s3 module (modules/s3/s3_util.c): AWS Signature Version 4,
 * URL and host building for path-style and virtual-host addressing, and the ListObjectsV2
 * answer's parser. No I/O, no globals: thread-safe, unit-tested (tests/unit/test_s3.c against
 * AWS's published vectors) and fuzzed (tests/fuzz/fuzz_s3_list.c).
 */
#ifndef MBYTE_S3_UTIL_H
#define MBYTE_S3_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One request header as it will be sent (name in any case; the signer lower-cases it). */
typedef struct s3_hdr {
    const char *name, *value;
} s3_hdr;

/* What is signed (docs: AWS "Create a canonical request"). `uri` is the path as sent
 * (already URI-encoded, e.g. "/bucket/key"); `query` the query string as sent, or "" (the
 * signer sorts its pairs). `payload_sha256` is the lower-hex SHA-256 of the body.
 * amz_date is "YYYYMMDDTHHMMSSZ". */
typedef struct s3_sign_in {
    const char *method, *uri, *query;
    const s3_hdr *hdrs;
    size_t nhdrs;
    const char *payload_sha256;
    const char *access_key, *secret_key, *region, *service, *amz_date;
} s3_sign_in;

/* The Authorization header's value into out (at least 512 bytes); 0, or -1 if it does not
 * fit or a header is malformed. When creq/sts are not NULL they receive the canonical request
 * and the string to sign (malloc'd; the caller frees), for tests. */
int s3_sign(const s3_sign_in *in, char *out, size_t outlen, char **creq, char **sts);

/* Percent-encode s as SigV4 wants (unreserved A-Za-z0-9-._~ kept; '/' kept when keep_slash)
 * into out; 0, or -1 if it does not fit. */
int s3_uri_encode(const char *s, bool keep_slash, char *out, size_t outlen);

/* The URL to request and the Host header for object `key` ("" for the bucket itself) of
 * `bucket` at `endpoint` ("http[s]://host[:port]", no path): path-style
 * <endpoint>/<bucket>/<key>, else virtual-host <scheme>://<bucket>.<host[:port]>/<key>.
 * *path receives the path part (for signing). 0, or -1 on a bad endpoint or overflow. */
int s3_url(const char *endpoint, const char *bucket, bool path_style, const char *key, char *url, size_t urllen,
           char *host, size_t hostlen, char *path, size_t pathlen);

/* Parse one ListObjectsV2 answer: fn(key, size, mtime, ud) for every <Contents> (key
 * entity-decoded, at most 1023 bytes; longer ones are skipped), until fn returns non-zero
 * (then that value is returned). *truncated and next (NUL-terminated, at most nextlen-1
 * bytes) say whether and where to go on. Returns 0, the fn's stop value, or -1 when the
 * answer is not a ListBucketResult. */
int s3_list_parse(const char *xml, size_t n, int (*fn)(const char *key, uint64_t size, int64_t mtime, void *ud),
                  void *ud, bool *truncated, char *next, size_t nextlen);

/* The text of the first <Code> element of an S3 error answer ("SlowDown", "NoSuchKey"...)
 * into out, or "" when there is none. */
void s3_error_code(const char *xml, size_t n, char *out, size_t outlen);

/* ISO 8601 "2026-12-03T13:50:00.000Z" to Unix seconds; -1 if malformed. */
int64_t s3_parse_time(const char *s, size_t n);

#endif
