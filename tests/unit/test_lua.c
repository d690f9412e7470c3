/*
 * Unit tests: the sandboxed Lua service (kernel/luas.c) and the example rule script
 * scripts/lua/tag_rules.lua. MBYTE_SOURCE_ROOT (set by tests/meson.build) locates the script
 * directory. The suite runs under ASan/LSan, so every limit test is also a leak test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../kernel/kernel.h"

static char script_dir[4096];

static int setup(void **s)
{
    (void)s;
    const char *root = getenv("MBYTE_SOURCE_ROOT");
    snprintf(script_dir, sizeof script_dir, "%s/scripts/lua", root ? root : ".");
    mb_err err = {0};
    return luas_init(script_dir, &err);
}

static int teardown(void **s)
{
    (void)s;
    luas_fini();
    return 0;
}

/* Limits back to the defaults after each test that changes them. */
static int reset_limits(void **s)
{
    (void)s;
    luas_set_limits(0, 0);
    return 0;
}

/* Run `src` (its chunk's return value is the result) and expect success. */
static json_t *run_ok(const char *src, const json_t *arg)
{
    json_t *out = NULL;
    mb_err err = {0};
    int rc = luas_run_string("t.lua", src, NULL, arg, &out, &err);
    if (rc)
        fail_msg("script failed (%d): %s", rc, err.msg);
    return out;
}

/* Run `src` and expect failure with `code` and `needle` in the message. */
static void run_fails(const char *src, int code, const char *needle)
{
    json_t *out = NULL;
    mb_err err = {0};
    int rc = luas_run_string("t.lua", src, NULL, NULL, &out, &err);
    if (rc != code || !strstr(err.msg, needle))
        fail_msg("expected %d with '%s', got %d: '%s'", code, needle, rc, err.msg);
    assert_null(out);
}

/* ------------------------------------------------------------ JSON <-> Lua --- */

static void test_json_round_trips_through_a_lua_function_unchanged(void **s)
{
    (void)s;
    json_error_t je;
    json_t *in = json_loads("{\"name\":\"a.txt\",\"size\":12,\"ratio\":0.5,\"whole_real\":2.0,\"ok\":true,"
                            "\"no\":false,\"none\":null,\"empty_obj\":{},\"empty_arr\":[],"
                            "\"nested\":{\"list\":[1,2.5,\"x\",[true,null],{\"k\":\"v\"}]},"
                            "\"big\":9007199254740993,\"neg\":-7,\"utf\":\"\\u00e9t\\u00e9\"}",
                            0, &je);
    assert_non_null(in);
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(luas_run_string("id.lua", "function id(x) return x end", "id", in, &out, &err), 0);
    assert_non_null(out);
    /* json_equal tells an integer from a real, so 12 must come back as 12, 2.0 as 2.0. */
    if (!json_equal(in, out)) {
        char *a = json_dumps(in, JSON_SORT_KEYS), *b = json_dumps(out, JSON_SORT_KEYS);
        fail_msg("in %s\nout %s", a, b);
    }
    assert_true(json_is_integer(json_object_get(out, "size")));
    assert_true(json_is_real(json_object_get(out, "whole_real")));
    json_decref(in);
    json_decref(out);
}

/* A function's argument (a tagging rule's `file`) is read-only at every level, and reads, #,
 * ipairs and pairs still see all of it. */
static void test_a_functions_argument_is_read_only_at_every_level(void **s)
{
    (void)s;
    json_t *arg = json_pack("{s:s, s:{s:s}, s:[s,s]}", "name", "a.txt", "exif", "model", "X100", "tags", "a", "b");
    json_t *out = NULL;
    mb_err err = {0};
    const char *reads = "function f(x)\n"
                        "  local n, keys = 0, {}\n"
                        "  for k in pairs(x) do keys[#keys + 1] = k end\n"
                        "  for _, v in ipairs(x.tags) do n = n + #v end\n"
                        "  table.sort(keys)\n"
                        "  return {x.name, x.exif.model, #x.tags, n, table.concat(keys, ','), getmetatable(x)}\n"
                        "end\n";
    assert_int_equal(luas_run_string("r.lua", reads, "f", arg, &out, &err), 0);
    char *got = json_dumps(out, JSON_COMPACT);
    assert_string_equal(got, "[\"a.txt\",\"X100\",2,2,\"exif,name,tags\",\"read-only\"]");
    free(got);
    json_decref(out);
    static const char *const writes[] = {
        "function f(x)\n  x.name = 'b.txt'\nend\n",
        "function f(x)\n  x.exif.model = 'Y'\nend\n",
        "function f(x)\n  x.tags[3] = 'c'\nend\n",
        "function f(x)\n  table.insert(x.tags, 'c')\nend\n",
        "function f(x)\n  setmetatable(x, nil)\nend\n",
    };
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
        out = NULL;
        assert_int_equal(luas_run_string("w.lua", writes[i], "f", arg, &out, &err), MB_EINVAL);
        assert_null(out);
        if (i < 3 && !strstr(err.msg, "w.lua:2: the argument is read-only"))
            fail_msg("%s: %s", writes[i], err.msg);
    }
    /* returned as it came, it is the same JSON */
    assert_int_equal(luas_run_string("id.lua", "function id(x) return {x, x.exif} end", "id", arg, &out, &err), 0);
    assert_true(json_equal(json_array_get(out, 0), arg));
    json_decref(out);
    json_decref(arg);
}

static void test_lua_sees_json_types_as_lua_types(void **s)
{
    (void)s;
    json_t *arg = json_pack("{s:i, s:f, s:b, s:n, s:[i,i,i], s:s}", "i", 3, "r", 1.5, "b", 1, "n", "a", 10, 20,
                            30, "s", "hi");
    json_t *out = run_ok("local x = ...\n"
                         "return { math.type(x.i), math.type(x.r), type(x.b), x.n == json.null,\n"
                         "         #x.a, x.a[1], x.a[3], x.s .. '!' }",
                         arg);
    json_t *want = json_pack("[s, s, s, b, i, i, i, s]", "integer", "float", "boolean", 1, 3, 10, 30, "hi!");
    assert_true(json_equal(out, want));
    json_decref(arg);
    json_decref(out);
    json_decref(want);
}

static void test_lua_integers_stay_integers_and_floats_stay_reals(void **s)
{
    (void)s;
    json_t *out = run_ok("return {a = 7 // 2, b = 7 / 2, c = 6 / 2, d = math.maxinteger, e = 2^10}", NULL);
    assert_int_equal(json_integer_value(json_object_get(out, "a")), 3);
    assert_true(json_is_real(json_object_get(out, "b")));
    assert_true(json_is_real(json_object_get(out, "c"))); /* 3.0 is a float in Lua 5.4 */
    assert_true(json_is_integer(json_object_get(out, "d")));
    assert_int_equal(json_integer_value(json_object_get(out, "d")), INT64_MAX);
    assert_true(json_is_real(json_object_get(out, "e")));
    json_decref(out);
}

static void test_lua_tables_become_arrays_or_objects_by_their_keys(void **s)
{
    (void)s;
    json_t *out = run_ok("return { seq = {'a', 'b'}, obj = {x = 1}, empty = {}, marked = json.object(),\n"
                         "         null = json.null }",
                         NULL);
    json_t *want = json_pack("{s:[s,s], s:{s:i}, s:[], s:{}, s:n}", "seq", "a", "b", "obj", "x", 1, "empty",
                             "marked", "null");
    assert_true(json_equal(out, want));
    json_decref(out);
    json_decref(want);
    run_fails("return {1, 2, x = 3}", MB_EINVAL, "mixes keys");
    run_fails("return {[1] = 'a', [3] = 'c'}", MB_EINVAL, "sparse");
    run_fails("return {f = print}", MB_EINVAL, "function value has no JSON form");
    run_fails("return {0/0}", MB_EINVAL, "not finite");
    run_fails("return {'\\xff'}", MB_EINVAL, "UTF-8");
}

static void test_nil_return_gives_no_result(void **s)
{
    (void)s;
    json_t *out = (json_t *)1;
    mb_err err = {0};
    assert_int_equal(luas_run_string("n.lua", "function f() end", "f", NULL, &out, &err), 0);
    assert_null(out);
}

static void test_cycles_and_deep_nesting_are_refused(void **s)
{
    (void)s;
    run_fails("local t = {} t.self = t return t", MB_EINVAL, "cycle");
    run_fails("local t = {} t[1] = t return t", MB_EINVAL, "cycle");
    run_fails("local t = {} for i = 1, 70 do t = {t} end return t", MB_EINVAL, "deeper than 64");
    /* 64 levels in all is fine, and a table shared twice (no cycle) too. */
    json_t *out = run_ok("local t = {} for i = 1, 62 do t = {t} end local s = {1} return {t, s, s}", NULL);
    assert_int_equal(json_array_size(out), 3);
    json_decref(out);
    /* An argument nested too deeply is refused before the script sees it. */
    json_t *deep = json_array();
    for (int i = 0; i < 70; i++) {
        json_t *up = json_array();
        json_array_append_new(up, deep);
        deep = up;
    }
    json_t *res = NULL;
    mb_err err = {0};
    assert_int_equal(luas_run_string("d.lua", "function f(x) return 1 end", "f", deep, &res, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "deeper than 64"));
    json_decref(deep);
}

/* ------------------------------------------------------------ tag_rules --- */

static json_t *tags_of(const char *name, json_int_t size, const char *ctype)
{
    json_t *file = json_pack("{s:s}", "name", name);
    if (size >= 0)
        json_object_set_new(file, "size", json_integer(size));
    if (ctype)
        json_object_set_new(file, "content_type", json_string(ctype));
    json_t *out = NULL;
    mb_err err = {0};
    int rc = luas_call("tag_rules.lua", "tags", file, &out, &err);
    if (rc)
        fail_msg("tag_rules.lua failed (%d): %s", rc, err.msg);
    json_decref(file);
    assert_true(json_is_array(out));
    return out;
}

static void expect_tags(const char *name, json_int_t size, const char *ctype, const char *want_json)
{
    json_t *got = tags_of(name, size, ctype), *want = json_loads(want_json, 0, NULL);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, 0);
        fail_msg("%s: got %s, want %s", name, g, want_json);
    }
    json_decref(got);
    json_decref(want);
}

static void test_tag_rules_tag_by_content_type_extension_and_size(void **s)
{
    (void)s;
    expect_tags("holiday.PNG", 2048, "image/png", "[\"image\"]");
    expect_tags("movie.bin", 200LL << 20, "video/mp4", "[\"video\", \"large\"]");
    expect_tags("report.pdf", 1000, NULL, "[\"document\"]");                  /* by extension */
    expect_tags("notes.txt", 0, "text/plain; charset=utf-8", "[\"text\", \"empty\"]");
    expect_tags("data.xyz", 5, "application/octet-stream", "[]");             /* nothing known */
    expect_tags(".bashrc", -1, NULL, "[\"hidden\"]");
    expect_tags("backup.tar.gz", 150LL << 20, NULL, "[\"archive\", \"large\"]");
}

/* The example tagging rules of scripts/lua/ (docs/rules.md): rule(file) on a file table as the tags
 * module builds it, compared as JSON. */
static void expect_rule(const char *script, const char *file_json, const char *want_json)
{
    json_t *file = json_loads(file_json, 0, NULL), *want = json_loads(want_json, 0, NULL), *out = NULL;
    assert_non_null(file);
    assert_non_null(want);
    mb_err err = {0};
    int rc = luas_call(script, "rule", file, &out, &err);
    if (rc)
        fail_msg("%s failed (%d): %s", script, rc, err.msg);
    if (!json_equal(out, want)) {
        char *got = json_dumps(out, JSON_COMPACT);
        fail_msg("%s on %s: got %s, want %s", script, file_json, got, want_json);
    }
    json_decref(file), json_decref(want), json_decref(out);
}

static void test_example_tagging_rules(void **s)
{
    (void)s;
    expect_rule("invoices.lua", "{\"name\":\"a.pdf\",\"text\":\"Your INVOICE no. 4\"}",
                "{\"apply\":[{\"tag\":\"invoice\",\"reason\":\"the text says 'invoice'\"}]}");
    expect_rule("invoices.lua", "{\"name\":\"Rechnung-2026.pdf\"}",
                "{\"suggest\":[{\"tag\":\"invoice\",\"reason\":\"the name says 'rechnung'\"}]}");
    expect_rule("invoices.lua", "{\"name\":\"cat.jpg\",\"text\":\"meow\"}", "[]");
    expect_rule("photos.lua", "{\"name\":\"p.jpg\",\"exif\":{\"make\":\"Hasselblad\",\"model\":\"X2D\"}}",
                "{\"apply\":[{\"tag\":\"photo\",\"reason\":\"it has camera EXIF data\"},"
                "{\"tag\":\"camera:X2D\",\"reason\":\"EXIF Model\"}]}");
    expect_rule("exif_date.lua", "{\"exif\":{\"date\":\"2026:05:04 10:11:12\"}}",
                "{\"apply\":[{\"tag\":\"taken:2026\",\"reason\":\"EXIF date 2026:05:04 10:11:12\"},"
                "{\"tag\":\"taken:2026-05\"}]}");
    expect_rule("screenshots.lua", "{\"name\":\"Screenshot 2026-01-02.png\",\"extension\":\"png\",\"head\":\".PNG\"}",
                "{\"apply\":[{\"tag\":\"screenshot\",\"reason\":\"named like a screenshot\"}]}");
    expect_rule("screenshots.lua", "{\"name\":\"holiday.png\",\"extension\":\"png\",\"head\":\".PNG\"}", "[]");
    expect_rule("source_code.lua", "{\"name\":\"x.rs\",\"extension\":\"rs\",\"head\":\"fn main\"}",
                "{\"apply\":[\"code\",{\"tag\":\"lang:rust\",\"reason\":\"extension or #! line\"}]}");
    expect_rule("by_path.lua", "{\"path\":\"Projects/apollo/Taxes/x.pdf\"}",
                "{\"apply\":[{\"tag\":\"taxes\",\"reason\":\"in a taxes folder\"},{\"tag\":\"project:apollo\"}]}");
    expect_rule("words.lua", "{\"text\":\"Your itinerary and the rental agreement\"}",
                "{\"suggest\":[{\"tag\":\"contract\",\"reason\":\"mentions 'agreement'\"},"
                "{\"tag\":\"travel\",\"reason\":\"mentions 'itinerary'\"}]}");
}

static void test_missing_script_and_missing_function_are_not_found(void **s)
{
    (void)s;
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(luas_call("no_such_rules.lua", "tags", NULL, &out, &err), MB_ENOENT);
    assert_non_null(strstr(err.msg, "no_such_rules.lua"));
    assert_int_equal(luas_call("tag_rules.lua", "no_such_function", NULL, &out, &err), MB_ENOENT);
    assert_non_null(strstr(err.msg, "has no function no_such_function"));
    assert_null(out);
}

static void test_bad_script_names_are_refused_with_a_sentence(void **s)
{
    (void)s;
    const char *bad[] = {"../tag_rules.lua", "sub/x.lua", "/etc/passwd", ".hidden.lua", "tag_rules",
                         "tag_rules.txt", "tag rules.lua", "x.lua\n", "", ".lua", "..lua",
                         "a\\b.lua", NULL};
    for (const char **b = bad; *b; b++) {
        json_t *out = NULL;
        mb_err err = {0};
        if (luas_call(*b, "tags", NULL, &out, &err) != MB_EINVAL || !strstr(err.msg, "is not a script name"))
            fail_msg("name '%s' was not refused: %s", *b, err.msg);
    }
    mb_err err = {0};
    assert_int_equal(luas_call(NULL, "tags", NULL, NULL, &err), MB_EINVAL);
    assert_int_equal(luas_call("tag_rules.lua", "os.exit", NULL, NULL, &err), MB_EINVAL);
}

/* ---------------------------------------------------------------- sandbox --- */

static void test_forbidden_libraries_and_functions_are_absent(void **s)
{
    (void)s;
    json_t *out = run_ok("return { io = type(io), package = type(package), debug = type(debug),\n"
                         "  require = type(require), dofile = type(dofile), loadfile = type(loadfile),\n"
                         "  coroutine = type(coroutine), warn = type(warn), dump = type(string.dump),\n"
                         "  sdump = type(('').dump), execute = type(os.execute), getenv = type(os.getenv),\n"
                         "  remove = type(os.remove), exit = type(os.exit), time = type(os.time),\n"
                         "  date = type(os.date), clock = type(os.clock), fmt = type(string.format),\n"
                         "  concat = type(table.concat), floor = type(math.floor), char = type(utf8.char) }",
                         NULL);
    const char *absent[] = {"io",   "package", "debug",   "require", "dofile", "loadfile", "coroutine",
                            "warn", "dump",    "sdump",   "execute", "getenv", "remove",   "exit", NULL};
    for (const char **a = absent; *a; a++)
        if (strcmp(json_string_value(json_object_get(out, *a)), "nil"))
            fail_msg("%s is reachable from a script", *a);
    const char *present[] = {"time", "date", "clock", "fmt", "concat", "floor", "char", NULL};
    for (const char **p = present; *p; p++)
        assert_string_equal(json_string_value(json_object_get(out, *p)), "function");
    json_decref(out);

    /* Calling them fails with a runtime error that names the line. */
    run_fails("local x = 1\nreturn io.open('/etc/passwd')", MB_EINVAL,
              "t.lua:2: attempt to index a nil value (global 'io')");
    run_fails("return os.execute('true')", MB_EINVAL, "attempt to call a nil value (field 'execute')");
    run_fails("return require('os')", MB_EINVAL, "attempt to call a nil value (global 'require')");
    run_fails("return dofile('/etc/passwd')", MB_EINVAL, "attempt to call a nil value (global 'dofile')");
    run_fails("return debug.getinfo(1)", MB_EINVAL, "attempt to index a nil value (global 'debug')");
    run_fails("return package.loadlib('libc.so.6', 'system')", MB_EINVAL, "attempt to index a nil value (global 'package')");
    run_fails("return string.dump(function() end)", MB_EINVAL, "attempt to call a nil value (field 'dump')");
}

static void test_load_accepts_text_but_never_bytecode(void **s)
{
    (void)s;
    json_t *out = run_ok("local f = load('return 1 + 1') local g = load('return x', 'c', 'bt', {x = 5})\n"
                         "local h, msg = load('\\27Lua\\x54\\0', 'bin', 'b')\n"
                         "return { f(), g(), h == nil, msg }",
                         NULL);
    assert_int_equal(json_integer_value(json_array_get(out, 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(out, 1)), 5);
    assert_true(json_is_true(json_array_get(out, 2)));
    assert_non_null(strstr(json_string_value(json_array_get(out, 3)), "binary chunk"));
    json_decref(out);
    /* A script file that is bytecode is refused too. */
    mb_err err = {0};
    assert_int_equal(luas_run_string("b.lua", "\x1bLua\x54", NULL, NULL, NULL, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "binary chunk"));
}

static void test_gc_metamethods_and_the_global_environment_stay_harmless(void **s)
{
    (void)s;
    run_fails("setmetatable({}, {__gc = function() while true do end end})", MB_EINVAL, "__gc");
    /* A script that breaks its own globals only breaks its own call. */
    json_t *out = run_ok("string.format = nil; _G.print = nil; return 1", NULL);
    json_decref(out);
    out = run_ok("return type(string.format)", NULL);
    assert_string_equal(json_string_value(out), "function");
    json_decref(out);
    out = run_ok("print('hello from a script', 1, nil, {}) return collectgarbage('count') > 0", NULL);
    assert_true(json_is_true(out));
    json_decref(out);
    run_fails("collectgarbage('stop')", MB_EINVAL, "invalid option");
}

static void test_pcall_and_xpcall_still_catch_ordinary_errors(void **s)
{
    (void)s;
    json_t *out = run_ok("local a = {pcall(error, 'e1', 0)}\n"
                         "local b = {xpcall(function() error('e2') end, function(e) return 'handled ' .. e end)}\n"
                         "local c = {pcall(function(x, y) return x + y, 'z' end, 1, 2)}\n"
                         "local d = {xpcall(function(x) return x * 2 end, print, 21)}\n"
                         "return {a, b, c, d}",
                         NULL);
    json_t *want = json_pack("[[b,s],[b,s],[b,i,s],[b,i]]", 0, "e1", 0, "handled t.lua:2: e2", 1, 3, "z", 1, 42);
    if (!json_equal(out, want))
        fail_msg("got %s", json_dumps(out, 0));
    json_decref(out);
    json_decref(want);
}

/* ---------------------------------------------------------------- limits --- */

static void test_an_endless_loop_stops_with_the_instruction_budget_error(void **s)
{
    (void)s;
    luas_set_limits(200000, 0);
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(luas_run_string("spin.lua", "function f() while true do end end", "f", NULL, &out, &err),
                     MB_ECANCELED);
    assert_non_null(strstr(err.msg, "script spin.lua exceeded its instruction budget"));
    assert_null(out);
    /* pcall, xpcall and a looping error handler cannot swallow the budget. */
    run_fails("while true do pcall(function() while true do end end) end", MB_ECANCELED, "instruction budget");
    run_fails("while true do xpcall(function() while true do end end, function(e) return e end) end",
              MB_ECANCELED, "instruction budget");
    run_fails("xpcall(function() error('x') end, function(e) while true do end end) return 1", MB_ECANCELED,
              "instruction budget");
    run_fails("local function r() return r() end return r()", MB_ECANCELED, "instruction budget");
    /* Loops inside C library functions are bounded too. */
    run_fails("return table.move({}, 1, 1e15, 1, {})", MB_ECANCELED, "instruction budget");
    json_t *rep = run_ok("return {('').rep('', 1e15), ('ab'):rep(3, ','), #table.move({1, 2, 3}, 1, 3, 2)}", NULL);
    json_t *want = json_pack("[s, s, i]", "", "ab,ab,ab", 4);
    assert_true(json_equal(rep, want));
    json_decref(rep);
    json_decref(want);
    /* A script within budget still runs. */
    json_t *ok = run_ok("local n = 0 for i = 1, 1000 do n = n + i end return n", NULL);
    assert_int_equal(json_integer_value(ok), 500500);
    json_decref(ok);
}

static void test_the_default_budget_stops_a_loop_too(void **s)
{
    (void)s;
    run_fails("local i = 0 while true do i = i + 1 end", MB_ECANCELED, "(10000000 instructions)");
}

static void test_a_memory_bomb_stops_with_the_out_of_memory_error(void **s)
{
    (void)s;
    luas_set_limits(0, 4u << 20);
    run_fails("local s = 'x' while true do s = s .. s end", MB_ENOMEM, "script t.lua ran out of memory");
    run_fails("local t = {} while true do t[#t + 1] = ('y'):rep(1000) .. #t end", MB_ENOMEM, "out of memory");
    run_fails("return ('x'):rep(100 * 1024 * 1024)", MB_ENOMEM, "out of memory");
    run_fails("local t = {} while true do pcall(function() t[#t + 1] = {1, 2, 3, 4} end) end", MB_ENOMEM,
              "out of memory");
    /* After all that, a normal call works (nothing was left half done). */
    json_t *ok = run_ok("return #('x'):rep(1024 * 1024)", NULL);
    assert_int_equal(json_integer_value(ok), 1 << 20);
    json_decref(ok);
}

static void test_the_default_memory_budget_stops_a_bomb_too(void **s)
{
    (void)s;
    run_fails("local t = {} for i = 1, 1e9 do t[i] = ('z'):rep(4096) .. i end", MB_ENOMEM,
              "(limit 33554432 bytes)");
}

static int reset_time(void **s)
{
    (void)s;
    luas_set_limits(0, 0);
    luas_set_time_limit(0);
    return 0;
}

/* A script with an instruction budget too large to matter still ends: the wall clock stops it,
 * and pcall cannot catch that either (issue 19). */
static void test_a_long_loop_stops_at_the_wall_clock_limit(void **s)
{
    (void)s;
    luas_set_limits(1000000000000ULL, 0);
    luas_set_time_limit(200);
    run_fails("while true do end", MB_ECANCELED, "script t.lua exceeded its time limit (200 ms)");
    run_fails("while true do pcall(function() while true do end end) end", MB_ECANCELED, "time limit");
    json_t *ok = run_ok("local n = 0 for i = 1, 1000 do n = n + i end return n", NULL);
    assert_int_equal(json_integer_value(ok), 500500);
    json_decref(ok);
}

/* luas_check compiles without running: a syntax error names the line, code that would fail
 * when run is accepted. */
static void test_check_compiles_without_running(void **s)
{
    (void)s;
    mb_err err = {0};
    assert_int_equal(luas_check("r.lua", "function rule(f)\n  return {apply = {\"x\"}\nend\n", &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "r.lua:3:"));
    assert_int_equal(luas_check("r.lua", "error('never run') while true do end", &err), 0);
    assert_int_equal(luas_check("r.lua", "\x1bLua", &err), MB_EINVAL); /* bytecode is refused */
    assert_int_equal(luas_check("../r.lua", "return 1", &err), MB_EINVAL);
}

/* ---------------------------------------------------------------- errors --- */

static void test_syntax_errors_name_script_and_line(void **s)
{
    (void)s;
    json_t *out = NULL;
    mb_err err = {0};
    assert_int_equal(luas_run_string("bad.lua", "x = 1\nlocal = 2\n", "f", NULL, &out, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "bad.lua:2:"));
}

static void test_runtime_errors_name_script_and_line(void **s)
{
    (void)s;
    json_t *out = NULL;
    mb_err err = {0};
    const char *src = "function f(x)\n  local y = 1\n  error('boom ' .. x.name)\nend\n";
    json_t *arg = json_pack("{s:s}", "name", "file.txt");
    assert_int_equal(luas_run_string("rt.lua", src, "f", arg, &out, &err), MB_EINVAL);
    assert_string_equal(err.msg, "rt.lua:3: boom file.txt");
    json_decref(arg);
    assert_int_equal(luas_run_string("rt.lua", "function f() return nil + 1 end", "f", NULL, &out, &err),
                     MB_EINVAL);
    assert_non_null(strstr(err.msg, "rt.lua:1: attempt to perform arithmetic on a nil value"));
    assert_int_equal(luas_run_string("rt.lua", "function f() error({}) end", "f", NULL, &out, &err), MB_EINVAL);
    assert_non_null(strstr(err.msg, "error object is a table value"));
}

/* ---------------------------------------------------------------- threads --- */

enum { THREADS = 4, CALLS = 150 };

static void *hammer(void *p)
{
    intptr_t id = (intptr_t)p, bad = 0;
    for (int i = 0; i < CALLS; i++) {
        json_t *arg = json_pack("{s:i, s:[i,i]}", "n", (json_int_t)(id * 1000 + i), "l", i, 2);
        json_t *out = NULL;
        mb_err err = {0};
        if (luas_run_string("par.lua", "function f(x) return {x.n * 2, x.l[1] + x.l[2]} end", "f", arg, &out,
                            &err) ||
            json_integer_value(json_array_get(out, 0)) != (id * 1000 + i) * 2 ||
            json_integer_value(json_array_get(out, 1)) != i + 2)
            bad++;
        json_decref(out);
        json_decref(arg);
        json_t *file = json_pack("{s:s, s:i}", "name", i % 2 ? "a.jpg" : "b.pdf", "size", 10);
        if (luas_call("tag_rules.lua", "tags", file, &out, &err) ||
            strcmp(json_string_value(json_array_get(out, 0)), i % 2 ? "image" : "document"))
            bad++;
        json_decref(out);
        json_decref(file);
        if (i % 50 == 0 && luas_run_string("spin.lua", "while true do end", NULL, NULL, NULL, &err) != MB_ECANCELED)
            bad++; /* a runaway script on one thread does not disturb the others */
    }
    return (void *)bad;
}

static void test_many_threads_calling_at_once_get_their_own_answers(void **s)
{
    (void)s;
    luas_set_limits(1000000, 0);
    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    intptr_t bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (intptr_t)r;
    }
    assert_int_equal(bad, 0);
}

/* Not an assertion (no timings are asserted): prints what one call costs, for the record. */
static void test_report_the_cost_of_one_call(void **s)
{
    (void)s;
    json_t *file = json_pack("{s:s, s:i, s:s}", "name", "photo.jpg", "size", 123456, "content_type", "image/jpeg");
    enum { N = 300 };
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        json_t *out = NULL;
        mb_err err = {0};
        assert_int_equal(luas_call("tag_rules.lua", "tags", file, &out, &err), 0);
        json_decref(out);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3) / N;
    print_message("luas_call(tag_rules.lua, tags): %.1f microseconds per call (fresh state, file read, parse)\n",
                  us);
    json_decref(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_round_trips_through_a_lua_function_unchanged),
        cmocka_unit_test(test_lua_sees_json_types_as_lua_types),
        cmocka_unit_test(test_lua_integers_stay_integers_and_floats_stay_reals),
        cmocka_unit_test(test_lua_tables_become_arrays_or_objects_by_their_keys),
        cmocka_unit_test(test_nil_return_gives_no_result),
        cmocka_unit_test(test_cycles_and_deep_nesting_are_refused),
        cmocka_unit_test(test_tag_rules_tag_by_content_type_extension_and_size),
        cmocka_unit_test(test_example_tagging_rules),
        cmocka_unit_test(test_missing_script_and_missing_function_are_not_found),
        cmocka_unit_test(test_bad_script_names_are_refused_with_a_sentence),
        cmocka_unit_test(test_forbidden_libraries_and_functions_are_absent),
        cmocka_unit_test(test_load_accepts_text_but_never_bytecode),
        cmocka_unit_test(test_gc_metamethods_and_the_global_environment_stay_harmless),
        cmocka_unit_test(test_pcall_and_xpcall_still_catch_ordinary_errors),
        cmocka_unit_test_teardown(test_an_endless_loop_stops_with_the_instruction_budget_error, reset_limits),
        cmocka_unit_test(test_the_default_budget_stops_a_loop_too),
        cmocka_unit_test_teardown(test_a_memory_bomb_stops_with_the_out_of_memory_error, reset_limits),
        cmocka_unit_test(test_the_default_memory_budget_stops_a_bomb_too),
        cmocka_unit_test_teardown(test_a_long_loop_stops_at_the_wall_clock_limit, reset_time),
        cmocka_unit_test(test_check_compiles_without_running),
        cmocka_unit_test(test_syntax_errors_name_script_and_line),
        cmocka_unit_test(test_runtime_errors_name_script_and_line),
        cmocka_unit_test_teardown(test_many_threads_calling_at_once_get_their_own_answers, reset_limits),
        cmocka_unit_test(test_a_functions_argument_is_read_only_at_every_level),
        cmocka_unit_test(test_report_the_cost_of_one_call),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
