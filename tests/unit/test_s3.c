/*
 * test_s3.c — the s3 module's pure parts (modules/s3/s3_util.c): SigV4 signatures against
 * AWS's published examples (s3_vectors.h names each source), path-style and virtual-host
 * URLs, and the ListObjectsV2 parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../modules/s3/s3_util.h"
#include "s3_vectors.h"

static void test_sigv4_matches_every_published_example(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof S3_VECTORS / sizeof *S3_VECTORS; i++) {
        const s3_vector *v = &S3_VECTORS[i];
        s3_sign_in in = {v->method, v->uri, v->query, v->hdrs, v->nhdrs, v->payload_sha256, v->access, v->secret,
                         v->region, v->service, v->date};
        char auth[512];
        assert_int_equal(s3_sign(&in, auth, sizeof auth, NULL, NULL), 0);
        if (strcmp(auth, v->authorization))
            fail_msg("%s:\n got  %s\n want %s", v->name, auth, v->authorization);
    }
}

static void test_sigv4_canonical_request_of_the_range_example(void **st)
{
    (void)st;
    const s3_vector *v = &S3_VECTORS[2];
    s3_sign_in in = {v->method, v->uri, v->query, v->hdrs, v->nhdrs, v->payload_sha256, v->access, v->secret,
                     v->region, v->service, v->date};
    char auth[512], *creq = NULL, *sts = NULL;
    assert_int_equal(s3_sign(&in, auth, sizeof auth, &creq, &sts), 0);
    assert_string_equal(creq, "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                              "x-amz-content-sha256:" EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
                              "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256);
    assert_string_equal(sts, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                             "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    free(creq);
    free(sts);
}

static void test_sigv4_refuses_a_header_name_with_a_colon(void **st)
{
    (void)st;
    s3_hdr h[] = {{"Ho:st", "x"}};
    s3_sign_in in = {"GET", "/", "", h, 1, EMPTY_SHA256, "a", "b", "us-east-1", "s3", "20130524T000000Z"};
    char auth[512];
    assert_int_equal(s3_sign(&in, auth, sizeof auth, NULL, NULL), -1);
}

static void test_url_path_style_and_virtual_host(void **st)
{
    (void)st;
    char url[512], host[256], path[512];
    assert_int_equal(s3_url("http://127.0.0.1:9000", "b1", true, "chunks/ab", url, sizeof url, host, sizeof host,
                            path, sizeof path),
                     0);
    assert_string_equal(url, "http://127.0.0.1:9000/b1/chunks/ab");
    assert_string_equal(host, "127.0.0.1:9000");
    assert_string_equal(path, "/b1/chunks/ab");
    assert_int_equal(s3_url("https://s3.eu-west-1.amazonaws.com", "b1", false, "a b", url, sizeof url, host,
                            sizeof host, path, sizeof path),
                     0);
    assert_string_equal(url, "https://b1.s3.eu-west-1.amazonaws.com/a%20b");
    assert_string_equal(host, "b1.s3.eu-west-1.amazonaws.com");
    assert_string_equal(path, "/a%20b");
    assert_int_equal(s3_url("ftp://x", "b", true, "", url, sizeof url, host, sizeof host, path, sizeof path), -1);
    assert_int_equal(s3_url("http://x/some/path", "b", true, "", url, sizeof url, host, sizeof host, path,
                            sizeof path),
                     -1);
}

typedef struct seen {
    int n;
    char keys[4][80];
    uint64_t sizes[4];
    int64_t mtimes[4];
} seen;

static int one(const char *key, uint64_t size, int64_t mtime, void *ud)
{
    seen *s = ud;
    if (s->n < 4) {
        snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
        s->sizes[s->n] = size;
        s->mtimes[s->n] = mtime;
    }
    s->n++;
    return 0;
}

static void test_list_parse_reads_keys_sizes_times_and_the_token(void **st)
{
    (void)st;
    const char *xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
                      "<Contents><Key>a&amp;b</Key><LastModified>2026-12-03T13:50:00.000Z</LastModified>"
                      "<ETag>&quot;x&quot;</ETag><Size>1048576</Size></Contents>"
                      "<Contents><Key>c</Key><Size>7</Size></Contents>"
                      "<IsTruncated>true</IsTruncated><NextContinuationToken>t+/=&lt;</NextContinuationToken>"
                      "</ListBucketResult>";
    seen s = {0};
    bool trunc;
    char next[64];
    assert_int_equal(s3_list_parse(xml, strlen(xml), one, &s, &trunc, next, sizeof next), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[0], "a&b");
    assert_int_equal(s.sizes[0], 1048576);
    assert_int_equal(s.mtimes[0], 1796305800);
    assert_string_equal(s.keys[1], "c");
    assert_true(trunc);
    assert_string_equal(next, "t+/=<");
    const char *bad = "<Error><Code>SlowDown</Code></Error>";
    assert_int_equal(s3_list_parse(bad, strlen(bad), one, &s, &trunc, next, sizeof next), -1);
    char code[32];
    s3_error_code(bad, strlen(bad), code, sizeof code);
    assert_string_equal(code, "SlowDown");
    const char *loop = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
    assert_int_equal(s3_list_parse(loop, strlen(loop), one, &s, &trunc, next, sizeof next), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigv4_matches_every_published_example),
        cmocka_unit_test(test_sigv4_canonical_request_of_the_range_example),
        cmocka_unit_test(test_sigv4_refuses_a_header_name_with_a_colon),
        cmocka_unit_test(test_url_path_style_and_virtual_host),
        cmocka_unit_test(test_list_parse_reads_keys_sizes_times_and_the_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
