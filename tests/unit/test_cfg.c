/* Unit tests: YAML configuration parsing and checking (kernel/cfg.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../kernel/kernel.h"

static json_t *parse_ok(const char *text)
{
    json_t *out = NULL, *lines = NULL;
    mb_err err = {0};
    assert_int_equal(cfg_yaml_parse("t.yaml", text, strlen(text), &out, &lines, &err), 0);
    json_decref(lines);
    return out;
}

static void test_scalars_become_typed_json(void **s)
{
    (void)s;
    json_t *j = parse_ok("a: 12\nb: true\nc: hello\nd: '12'\ne: ~\nf: 1.5\n");
    assert_int_equal(json_integer_value(json_object_get(j, "a")), 12);
    assert_true(json_is_true(json_object_get(j, "b")));
    assert_string_equal(json_string_value(json_object_get(j, "c")), "hello");
    assert_string_equal(json_string_value(json_object_get(j, "d")), "12"); /* quoted stays a string */
    assert_true(json_is_null(json_object_get(j, "e")));
    assert_true(json_is_real(json_object_get(j, "f")));
    json_decref(j);
}

static void test_nested_maps_and_lists(void **s)
{
    (void)s;
    json_t *j = parse_ok("modules:\n  hello: true\n  ftp: false\nlist:\n  - a\n  - b\n");
    assert_true(json_is_true(json_object_get(json_object_get(j, "modules"), "hello")));
    assert_int_equal(json_array_size(json_object_get(j, "list")), 2);
    json_decref(j);
}

static void test_syntax_error_names_file_and_line(void **s)
{
    (void)s;
    const char *text = "a: 1\nb: [1, 2\nc: 3\n";
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_not_equal(cfg_yaml_parse("conf.d/x.yaml", text, strlen(text), &out, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "conf.d/x.yaml:"));
    assert_null(out);
}

static void test_duplicate_key_is_refused_with_line(void **s)
{
    (void)s;
    const char *text = "a: 1\nb: 2\na: 3\n";
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(cfg_yaml_parse("f.yaml", text, strlen(text), &out, NULL, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "f.yaml:3:"));
    assert_non_null(strstr(err.msg, "twice"));
}

static void test_top_level_must_be_mapping(void **s)
{
    (void)s;
    const char *text = "- a\n- b\n";
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(cfg_yaml_parse("f.yaml", text, strlen(text), &out, NULL, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "f.yaml:1:"));
}

static void test_invalid_utf8_is_refused(void **s)
{
    (void)s;
    const char text[] = "a: \xff\xfe\n";
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(cfg_yaml_parse("f.yaml", text, sizeof text - 1, &out, NULL, &err), MB_EINVAL);
}

static const mb_config_key keys[] = {
    {sizeof(mb_config_key), "greeting", MB_CFG_STRING, "hello", 0, 0},
    {sizeof(mb_config_key), "count", MB_CFG_INT, "3", 1, 10},
    {sizeof(mb_config_key), "loud", MB_CFG_BOOL, "false", 0, 0},
    {0},
};

static void test_module_config_defaults_fill_in(void **s)
{
    (void)s;
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(cfg_module("m.yaml", NULL, NULL, keys, &out, &err), 0);
    assert_string_equal(json_string_value(json_object_get(out, "greeting")), "hello");
    assert_int_equal(json_integer_value(json_object_get(out, "count")), 3);
    assert_true(json_is_false(json_object_get(out, "loud")));
    json_decref(out);
}

static void test_module_config_checks_type_range_and_unknown_keys(void **s)
{
    (void)s;
    const char *cases[][2] = {
        {"count: many\n", "m.yaml:1: count must be a whole number"},
        {"greeting: hi\ncount: 11\n", "m.yaml:2: count must be between 1 and 10"},
        {"colour: red\n", "m.yaml:1: unknown key 'colour'"},
        {"loud: 3\n", "m.yaml:1: loud must be true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *y = NULL, *lines = NULL, *out = NULL;
        mb_err err = {0};
        assert_int_equal(cfg_yaml_parse("m.yaml", cases[i][0], strlen(cases[i][0]), &y, &lines, &err), 0);
        assert_int_equal(cfg_module("m.yaml", y, lines, keys, &out, &err), MB_EINVAL);
        assert_string_equal(err.msg, cases[i][1]);
        json_decref(y);
        json_decref(lines);
    }
}

static void test_kernel_config_unknown_key_and_env_override(void **s)
{
    (void)s;
    char dir[] = "/tmp/mbcfgXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/mbyte.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("listen: 127.0.0.1:9999\nworkers: 3\n", f);
    fclose(f);
    kcfg c;
    mb_err err = {0};
    setenv("MBYTE_LISTEN", "127.0.0.1:7777", 1);
    assert_int_equal(cfg_load(dir, &c, &err), 0);
    assert_int_equal(c.listen_port, 7777);
    assert_int_equal(c.workers, 3);
    cfg_free(&c);
    unsetenv("MBYTE_LISTEN");
    f = fopen(path, "w");
    fputs("listen: 127.0.0.1:9999\nworkers: 3\nwrokers: 4\n", f);
    fclose(f);
    assert_int_equal(cfg_load(dir, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "mbyte.yaml:3: unknown key 'wrokers'"));
    f = fopen(path, "w");
    fputs("workers: 0\n", f);
    fclose(f);
    assert_int_equal(cfg_load(dir, &c, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "mbyte.yaml:1: workers must be between 1 and 256"));
    unlink(path);
    rmdir(dir);
}

/* mbyte.yaml in dir is `text`; cfg_load's status. */
static int load_text(const char *dir, const char *text, kcfg *c, mb_err *err)
{
    char path[256];
    snprintf(path, sizeof path, "%s/mbyte.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return cfg_load(dir, c, err);
}

static void test_cluster_settings_defaults_and_environment(void **s)
{
    (void)s;
    char dir[] = "/tmp/mbcfgXXXXXX";
    assert_non_null(mkdtemp(dir));
    kcfg c;
    mb_err err = {0};
    /* No cluster: a single server, nothing set. */
    assert_int_equal(load_text(dir, "listen: 127.0.0.1:9000\n", &c, &err), 0);
    assert_null(c.cluster_etcd);
    assert_null(c.cluster_node);
    cfg_free(&c);
    /* A trailing '/' goes; advertise defaults to listen; lease_ttl to 5. */
    assert_int_equal(load_text(dir, "listen: 127.0.0.1:9000\ncluster:\n  etcd: [http://e1:2379/, https://e2:2379]\n"
                                    "  node: node-1.a_b\n", &c, &err), 0);
    assert_string_equal(c.cluster_etcd[0], "http://e1:2379");
    assert_string_equal(c.cluster_etcd[1], "https://e2:2379");
    assert_null(c.cluster_etcd[2]);
    assert_string_equal(c.cluster_node, "node-1.a_b");
    assert_string_equal(c.cluster_advertise, "127.0.0.1:9000");
    assert_int_equal(c.cluster_lease_ttl, 5);
    cfg_free(&c);
    /* The environment wins, and MBYTE_ETCD alone turns cluster mode on. */
    setenv("MBYTE_ETCD", "http://a:1,http://b:2", 1);
    setenv("MBYTE_NODE", "n9", 1);
    setenv("MBYTE_ADVERTISE", "10.0.0.9:8080", 1);
    assert_int_equal(load_text(dir, "log_level: info\n", &c, &err), 0);
    assert_string_equal(c.cluster_etcd[0], "http://a:1");
    assert_string_equal(c.cluster_etcd[1], "http://b:2");
    assert_null(c.cluster_etcd[2]);
    assert_string_equal(c.cluster_node, "n9");
    assert_string_equal(c.cluster_advertise, "10.0.0.9:8080");
    cfg_free(&c);
    unsetenv("MBYTE_ETCD");
    unsetenv("MBYTE_NODE");
    unsetenv("MBYTE_ADVERTISE");
    /* Listening on every address, a node must say where the others reach it. */
    assert_int_equal(load_text(dir, "listen: 0.0.0.0:8080\ncluster:\n  etcd: [http://e:1]\n  node: a\n", &c, &err),
                     MB_EINVAL);
    assert_non_null(strstr(err.msg, "mbyte.yaml:2: cluster.advertise (or MBYTE_ADVERTISE) is needed when listen is 0.0.0.0"));
    char path[256];
    snprintf(path, sizeof path, "%s/mbyte.yaml", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_become_typed_json),
        cmocka_unit_test(test_nested_maps_and_lists),
        cmocka_unit_test(test_syntax_error_names_file_and_line),
        cmocka_unit_test(test_duplicate_key_is_refused_with_line),
        cmocka_unit_test(test_top_level_must_be_mapping),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_module_config_defaults_fill_in),
        cmocka_unit_test(test_module_config_checks_type_range_and_unknown_keys),
        cmocka_unit_test(test_kernel_config_unknown_key_and_env_override),
        cmocka_unit_test(test_cluster_settings_defaults_and_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
