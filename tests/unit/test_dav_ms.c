/* The webdav module's multistatus parser (modules/webdav/dav_ms.c), which its client backends
 * run on outside servers' PROPFIND answers: the answers of Apache mod_dav_fs and rclone as they
 * come (found properties in one propstat, missing ones in a 404 propstat), and what must be
 * refused or skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../modules/webdav/dav.h"

/* Apache mod_dav_fs: Depth 1 of an aa/ collection (the collection, then a member). */
static const char apache_answer[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
    "<D:multistatus xmlns:D=\"DAV:\"><D:response xmlns:lp1=\"DAV:\">"
    "<D:href>/dav/c/ab/</D:href><D:propstat><D:prop><lp1:resourcetype><D:collection/>"
    "</lp1:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
    "<D:propstat><D:prop><D:getcontentlength/></D:prop>"
    "<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response>"
    "<D:response xmlns:lp1=\"DAV:\"><D:href>/dav/c/ab/abcd</D:href><D:propstat><D:prop>"
    "<lp1:resourcetype/><lp1:getcontentlength> 1048576 </lp1:getcontentlength>"
    "<lp1:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</lp1:getlastmodified></D:prop>"
    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>";

/* rclone: absolute hrefs, a prefix other than D. */
static const char rclone_answer[] =
    "<m:multistatus xmlns:m=\"DAV:\"><m:response><m:href>http://h:1/c/0f/</m:href>"
    "<m:propstat><m:prop><m:resourcetype><m:collection/></m:resourcetype></m:prop>"
    "</m:propstat></m:response></m:multistatus>";

/* An empty href, a negative size, a date that is not one. */
static const char odd_answer[] =
    "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href> </D:href></D:response>"
    "<D:response><D:href>/y</D:href><D:propstat><D:prop>"
    "<D:getcontentlength>-5</D:getcontentlength><D:getlastmodified>yesterday"
    "</D:getlastmodified></D:prop></D:propstat></D:response></D:multistatus>";

typedef struct seen {
    int n;
    char href[4][128];
    uint64_t size[4];
    int64_t mtime[4];
    bool coll[4];
} seen;

static int keep(const char *href, uint64_t size, int64_t mtime, bool coll, void *ud)
{
    seen *s = ud;
    if (s->n < 4) {
        snprintf(s->href[s->n], sizeof s->href[0], "%s", href);
        s->size[s->n] = size;
        s->mtime[s->n] = mtime;
        s->coll[s->n] = coll;
    }
    s->n++;
    return 0;
}

static int parse(const char *xml, seen *s)
{
    memset(s, 0, sizeof *s);
    return dav_ms_parse(xml, strlen(xml), keep, s);
}

static void test_apache_and_rclone_answers_give_hrefs_sizes_times_and_collections(void **st)
{
    (void)st;
    seen s;
    assert_int_equal(parse(apache_answer, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.href[0], "/dav/c/ab/");
    assert_true(s.coll[0]);
    assert_string_equal(s.href[1], "/dav/c/ab/abcd");
    assert_false(s.coll[1]);
    assert_int_equal(s.size[1], 1048576);
    assert_int_equal(s.mtime[1], 784111777);
    assert_int_equal(parse(rclone_answer, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.href[0], "http://h:1/c/0f/");
    assert_true(s.coll[0]);
}

static void test_not_a_multistatus_or_not_well_formed_is_refused(void **st)
{
    (void)st;
    seen s;
    assert_int_equal(parse("<multistatus><response><href>/x</href></response></multistatus>", &s), MB_EINVAL);
    assert_int_equal(parse("<D:multistatus xmlns:D=\"DAV:\"><D:response>", &s), MB_EINVAL);
    assert_int_equal(parse("<D:error xmlns:D=\"DAV:\"/>", &s), MB_EINVAL);
    assert_int_equal(dav_ms_parse("", 0, keep, &s), MB_EINVAL);
    assert_int_equal(s.n, 0);
}

static void test_a_bad_size_is_zero_and_an_empty_href_is_skipped(void **st)
{
    (void)st;
    seen s;
    assert_int_equal(parse(odd_answer, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.size[0], 0);
    assert_int_equal(s.mtime[0], 0);
}

static int stop_at_first(const char *href, uint64_t size, int64_t mtime, bool coll, void *ud)
{
    (void)href, (void)size, (void)mtime, (void)coll;
    ++*(int *)ud;
    return 5;
}

static void test_a_callback_stops_the_walk(void **st)
{
    (void)st;
    const char *xml = "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/a</D:href></D:response>"
                      "<D:response><D:href>/b</D:href></D:response></D:multistatus>";
    int n = 0;
    assert_int_equal(dav_ms_parse(xml, strlen(xml), stop_at_first, &n), 5);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apache_and_rclone_answers_give_hrefs_sizes_times_and_collections),
        cmocka_unit_test(test_not_a_multistatus_or_not_well_formed_is_refused),
        cmocka_unit_test(test_a_bad_size_is_zero_and_an_empty_href_is_skipped),
        cmocka_unit_test(test_a_callback_stops_the_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
