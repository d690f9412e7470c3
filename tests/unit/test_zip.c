/* Unit tests: the streaming zip writer (kernel/zip.c) driven by an in-memory source. The
 * archives it produces are checked by independent readers: Python's zipfile (always) and
 * Info-ZIP's unzip -t (when installed; tests/setup/tus.sh installs it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "../../kernel/kernel.h"

/* ---- an in-memory source: entry i's bytes are a pattern computed from its name ---- */

typedef struct {
    const char *name;
    uint64_t size;
    int pattern; /* 0: zeros; else byte j is (j * pattern + name[0]) & 0xff */
} spec;

typedef struct {
    const spec *specs;
    size_t n;
    const spec *cur;
    uint64_t off;
    int opens, closes;
} src_state;

static uint8_t byte_at(const spec *s, uint64_t j)
{
    return s->pattern ? (uint8_t)((j * (uint64_t)s->pattern + (uint8_t)s->name[0]) & 0xff) : 0;
}

static int m_open(void *ud, const char *key, uint64_t *size, mb_err *err)
{
    src_state *st = ud;
    for (size_t i = 0; i < st->n; i++)
        if (!strcmp(st->specs[i].name, key)) {
            st->cur = &st->specs[i];
            st->off = 0;
            *size = st->specs[i].size;
            st->opens++;
            return 0;
        }
    return err_set(err, MB_ENOENT, "no %s", key);
}

static ssize_t m_read(void *ud, void *buf, size_t n, mb_err *err)
{
    (void)err;
    src_state *st = ud;
    uint64_t left = st->cur->size - st->off;
    if (n > left)
        n = (size_t)left;
    uint8_t *b = buf;
    if (!st->cur->pattern)
        memset(b, 0, n);
    else
        for (size_t i = 0; i < n; i++)
            b[i] = byte_at(st->cur, st->off + i);
    st->off += n;
    return (ssize_t)n;
}

static void m_close(void *ud) { ((src_state *)ud)->closes++; }

static const zip_source msrc = {m_open, m_read, m_close};

/* Drain a stream into a file, reading `step` bytes at a time; runs of zeros become holes so
 * a multi-GiB archive costs no disk. Returns the archive length. */
static uint64_t drain(zip_stream *z, int fd, size_t step)
{
    char *buf = malloc(step);
    static const char zeros[1 << 16];
    uint64_t pos = 0;
    for (;;) {
        mb_err err = {0};
        ssize_t n = zip_stream_read(z, buf, step, &err);
        assert_true(n >= 0);
        if (n == 0)
            break;
        bool hole = (size_t)n <= sizeof zeros && (size_t)n >= 4096 && !memcmp(buf, zeros, (size_t)n);
        if (!hole)
            assert_int_equal(pwrite(fd, buf, (size_t)n, (off_t)pos), n);
        pos += (uint64_t)n;
    }
    assert_int_equal(ftruncate(fd, (off_t)pos), 0);
    free(buf);
    return pos;
}

static char tmpl[64];

static int make_tmp(void)
{
    snprintf(tmpl, sizeof tmpl, "/tmp/mbzipXXXXXX");
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    return fd;
}

/* Python's zipfile: names, sizes and every byte (or only listed entries for big archives). */
static const char *checker =
    "import sys, zipfile, json\n"
    "path, want = sys.argv[1], json.loads(sys.argv[2])\n"
    "z = zipfile.ZipFile(path)\n"
    "infos = {i.filename: i for i in z.infolist()}\n"
    "assert len(infos) == want['count'], (len(infos), want['count'])\n"
    "for name, exp in want['entries'].items():\n"
    "    i = infos[name]\n"
    "    assert i.file_size == exp['size'], (name, i.file_size, exp['size'])\n"
    "    assert i.flag_bits & 0x800, name\n"
    "    if 'crc' in exp: assert i.CRC == exp['crc'], (name, i.CRC, exp['crc'])\n"
    "    if 'min_offset' in exp: assert i.header_offset >= exp['min_offset'], (name, i.header_offset)\n"
    "    if exp.get('read'):\n"
    "        data = z.read(name)\n"
    "        p, c = exp['pattern'], name.encode()[0] if name else 0\n"
    "        assert data == bytes(((j * p + c) & 0xff) if p else 0 for j in range(exp['size'])), name\n"
    "if want.get('testzip'): assert z.testzip() is None\n"
    "print('ok')\n";

static void python_check(const char *zip, const char *want_json)
{
    char script[] = "/tmp/mbzipchkXXXXXX";
    int sfd = mkstemp(script);
    assert_true(sfd >= 0);
    assert_int_equal(write(sfd, checker, strlen(checker)), (ssize_t)strlen(checker));
    close(sfd);
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "python3 %s %s '%s'", script, zip, want_json) > 0);
    int rc = system(cmd);
    free(cmd);
    unlink(script);
    assert_int_equal(rc, 0);
}

static bool have_unzip(void) { return system("command -v unzip >/dev/null 2>&1") == 0; }

static void test_zip_of_files_and_folders_reads_back_byte_identical(void **s)
{
    (void)s;
    static const spec specs[] = {
        {"docs/a.txt", 1000, 7}, {"docs/empty.txt", 0, 3}, {"docs/sub/b.bin", 300000, 13},
        {"Ünïcödé – 日本.txt", 5, 1}, {"back\\slash.txt", 10, 5},
    };
    size_t steps[] = {1, 7, 4096, 1 << 20};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        src_state st = {specs, sizeof specs / sizeof specs[0], NULL, 0, 0, 0};
        zip_stream *z = zip_stream_new(&msrc, &st);
        zip_stream_add(z, "docs", NULL, true, 1700000000);
        zip_stream_add(z, "docs/a.txt", NULL, false, 1700000000);
        zip_stream_add(z, "docs/empty.txt", NULL, false, 0);
        zip_stream_add(z, "docs/sub", NULL, true, 1700000000);
        zip_stream_add(z, "docs/sub/b.bin", NULL, false, 1700000001);
        zip_stream_add(z, "Ünïcödé – 日本.txt", NULL, false, 1700000000);
        /* the name inside the archive loses its '\', the source is still asked for the real key */
        zip_stream_add(z, "back\\slash.txt", "back\\slash.txt", false, 1700000000);
        assert_int_equal(zip_stream_count(z), 7);
        int fd = make_tmp();
        drain(z, fd, steps[k]);
        close(fd);
        zip_stream_free(z);
        assert_int_equal(st.opens, 5);
        assert_int_equal(st.closes, 5);
        python_check(tmpl, "{\"count\": 7, \"testzip\": true, \"entries\": {"
                           "\"docs/\": {\"size\": 0}, \"docs/sub/\": {\"size\": 0},"
                           "\"docs/a.txt\": {\"size\": 1000, \"read\": 1, \"pattern\": 7},"
                           "\"docs/empty.txt\": {\"size\": 0, \"read\": 1, \"pattern\": 3},"
                           "\"docs/sub/b.bin\": {\"size\": 300000, \"read\": 1, \"pattern\": 13},"
                           "\"\\u00dcn\\u00efc\\u00f6d\\u00e9 \\u2013 \\u65e5\\u672c.txt\": "
                           "{\"size\": 5, \"read\": 1, \"pattern\": 1},"
                           "\"back_slash.txt\": {\"size\": 10, \"read\": 1, \"pattern\": 5}}}");
        if (have_unzip()) {
            char *cmd = NULL;
            assert_true(asprintf(&cmd, "unzip -tq %s >/dev/null", tmpl) > 0);
            assert_int_equal(system(cmd), 0);
            free(cmd);
        }
        unlink(tmpl);
    }
}

static void test_empty_folder_gives_a_valid_empty_zip(void **s)
{
    (void)s;
    src_state st = {NULL, 0, NULL, 0, 0, 0};
    zip_stream *z = zip_stream_new(&msrc, &st);
    int fd = make_tmp();
    uint64_t len = drain(z, fd, 4096);
    close(fd);
    zip_stream_free(z);
    assert_int_equal(len, 22); /* just the end-of-central-directory record */
    python_check(tmpl, "{\"count\": 0, \"testzip\": true, \"entries\": {}}");
    unlink(tmpl);
}

static void test_a_source_error_fails_the_stream_and_closes_the_file(void **s)
{
    (void)s;
    static const spec specs[] = {{"a", 10, 1}};
    src_state st = {specs, 1, NULL, 0, 0, 0};
    zip_stream *z = zip_stream_new(&msrc, &st);
    zip_stream_add(z, "a", NULL, false, 1);
    zip_stream_add(z, "missing", NULL, false, 1);
    char buf[4096];
    mb_err err = {0};
    ssize_t n = zip_stream_read(z, buf, sizeof buf, &err);
    /* 'a' went out whole, then 'missing' fails to open */
    assert_true(n < 0 || (n > 0 && zip_stream_read(z, buf, sizeof buf, &err) < 0));
    assert_int_equal(err.code, MB_ENOENT);
    assert_true(zip_stream_read(z, buf, sizeof buf, &err) < 0);
    zip_stream_free(z);
    assert_int_equal(st.opens, st.closes);
}

static void test_more_than_65535_entries_use_zip64_end_records(void **s)
{
    (void)s;
    static const spec specs[] = {{"x", 0, 1}};
    src_state st = {specs, 1, NULL, 0, 0, 0};
    zip_stream *z = zip_stream_new(&msrc, &st);
    char name[32];
    for (int i = 0; i < 70000; i++) {
        snprintf(name, sizeof name, "f%05d/", i);
        zip_stream_add(z, name, NULL, true, 1700000000);
    }
    int fd = make_tmp();
    drain(z, fd, 1 << 16);
    close(fd);
    zip_stream_free(z);
    python_check(tmpl, "{\"count\": 70000, \"entries\": {\"f69999/\": {\"size\": 0}}}");
    unlink(tmpl);
}

/* A 4 GiB + 10 byte entry (ZIP64 sizes) followed by one whose header sits past 4 GiB
 * (ZIP64 offset). The zeros become holes, so the archive costs no disk. */
static void test_entries_past_4GiB_use_zip64_sizes_and_offsets(void **s)
{
    (void)s;
    const uint64_t big = (4ULL << 30) + 10;
    static spec specs[] = {{"big.bin", 0, 0}, {"after.txt", 5, 11}};
    specs[0].size = big;
    src_state st = {specs, 2, NULL, 0, 0, 0};
    zip_stream *z = zip_stream_new(&msrc, &st);
    zip_stream_add(z, "big.bin", NULL, false, 1700000000);
    zip_stream_add(z, "after.txt", NULL, false, 1700000000);
    int fd = make_tmp();
    drain(z, fd, 1 << 16);
    close(fd);
    zip_stream_free(z);
    /* the CRC of `big` zero bytes, built from pieces with crc32_combine */
    static const uint8_t zeros[1 << 20];
    uLong c1m = crc32(0, zeros, sizeof zeros), c = crc32(0, Z_NULL, 0);
    for (int i = 0; i < 4096; i++)
        c = crc32_combine(c, c1m, sizeof zeros);
    c = crc32(c, zeros, 10);
    char want[512];
    snprintf(want, sizeof want,
             "{\"count\": 2, \"entries\": {\"big.bin\": {\"size\": %llu, \"crc\": %lu},"
             "\"after.txt\": {\"size\": 5, \"read\": 1, \"pattern\": 11, \"min_offset\": %llu}}}",
             (unsigned long long)big, (unsigned long)c, (unsigned long long)big);
    python_check(tmpl, want);
    unlink(tmpl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zip_of_files_and_folders_reads_back_byte_identical),
        cmocka_unit_test(test_empty_folder_gives_a_valid_empty_zip),
        cmocka_unit_test(test_a_source_error_fails_the_stream_and_closes_the_file),
        cmocka_unit_test(test_more_than_65535_entries_use_zip64_end_records),
        cmocka_unit_test(test_entries_past_4GiB_use_zip64_sizes_and_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
