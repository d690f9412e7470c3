/*
 * luas.c — sandboxed Lua 5.4: the kernel runs small rule scripts (scripts/lua/) for modules.
 *
 * The contract (scripts/lua/README.md, docs/modules.md "Lua scripts"): luas_call(script, fn, arg)
 * loads <script_dir>/<script> as text, runs its top level, then calls its global function `fn`
 * with `arg` converted from JSON to a Lua value and converts the first value it returns back to
 * JSON. api->lua_call points here, so every module reaches Lua through these few functions.
 *
 * Every call gets a fresh lua_State that is closed when the call returns. That costs about 30 us
 * for an empty script and 90 us for tag_rules.lua (read, parsed, run; -O2, measured by
 * test_report_the_cost_of_one_call), far less than the I/O around a tagging decision, and it makes
 * calls independent: nothing a script does (globals,
 * metatables, string library changes) can leak into the next call, and no state is ever shared
 * between threads, so there is no pool to lock or reset.
 *
 * The sandbox is built as an allow list: only base, string, table, math, utf8 and a three-function
 * os are opened; dofile, loadfile, require, warn, string.dump, io, package, debug and coroutine are
 * absent; load only takes text ("t" mode, never bytecode); print goes to the kernel log.
 * Two budgets bound every call: an instruction count (a count hook that raises an error once the
 * budget is spent and again every 1000 instructions after, so a script cannot outlive it by
 * catching the error — pcall/xpcall are wrapped to re-raise it) and a memory budget (a lua_Alloc
 * that refuses growth past the limit; memory errors are re-raised through pcall too). A third
 * limit is wall-clock time (5 s, MBYTE_LUA_SECONDS; checked by the same hook against a monotonic
 * deadline), so a script slowed by a busy machine still ends in bounded time. __gc
 * metamethods are refused by setmetatable, so no script code can run from the collector or from
 * lua_close, outside the protected call.
 *
 * Threads: luas_call and luas_run_string are called from HTTP worker threads, task workers and the
 * loop thread at once. Each call touches only its own lua_State and its own `run` record; the shared
 * state is the script directory (written by luas_init/luas_fini, which main.c calls before any
 * caller starts and after all have stopped) and the two limits (atomics, so luas_set_limits may run
 * at any time).
 */
#include "kernel.h"
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LUAS_DEFAULT_INSTRUCTIONS 10000000ULL
#define LUAS_DEFAULT_MEMORY (32u << 20)
#define LUAS_MAX_SCRIPT (1u << 20) /* a rule script larger than this is a mistake */
#define LUAS_MAX_DEPTH 64          /* nesting of JSON <-> Lua values */
#define LUAS_HOOK_EVERY 1000       /* instructions between two budget checks */
#define LUAS_DEFAULT_MS 5000       /* wall-clock limit of one call */

static char *script_dir;
static _Atomic uint64_t max_instructions = LUAS_DEFAULT_INSTRUCTIONS;
static _Atomic size_t max_memory = LUAS_DEFAULT_MEMORY;
static _Atomic uint64_t max_ms = LUAS_DEFAULT_MS;

/* The sentinel `json.null`: its address is unique in the process, so a light userdata
 * pointing at it cannot be confused with anything a script builds. */
static const char json_null_tag = 0;
/* Registry key of the metatable that marks a table as a JSON object (so {} stays {}). */
static const char json_object_key = 0;

/* One call: the budgets and what went wrong, reachable from the allocator, the hook and the
 * pcall wrappers through the allocator's ud (lua_getallocf). */
typedef struct run {
    size_t mem_used, mem_limit;
    uint64_t steps, step_limit;
    uint64_t deadline_ns; /* CLOCK_MONOTONIC */
    bool over_budget; /* the hook fired past the instruction budget or the deadline */
    bool over_time;   /* ... the deadline */
    bool no_function; /* the script does not define `fn` */
    const char *name, *fn;
    const char *src;
    size_t srclen;
    const json_t *arg;
    const void *object_mt; /* lua_topointer of the object marker metatable */
    char why[160];         /* why a JSON argument could not become Lua */
} run;

static run *run_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* ------------------------------------------------------------------ limits --- */

static void *luas_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    run *r = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        r->mem_used -= old;
        return NULL;
    }
    if (nsize > old && (nsize - old > r->mem_limit || r->mem_used + (nsize - old) > r->mem_limit))
        return NULL; /* Lua collects garbage and retries once, then raises a memory error */
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    r->mem_used = r->mem_used - old + nsize;
    return p;
}

static uint64_t luas_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void luas_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    run *r = run_of(L);
    r->steps += LUAS_HOOK_EVERY;
    if (!r->over_budget && luas_mono_ns() > r->deadline_ns)
        r->over_time = true;
    if (r->steps > r->step_limit || r->over_time) {
        r->over_budget = true;
        lua_pushliteral(L, "instruction budget exceeded");
        lua_error(L);
    }
}

/* A script must not be able to swallow the end of its own budget or a memory error. */
static bool luas_fatal(lua_State *L, int status)
{
    return status == LUA_ERRMEM || run_of(L)->over_budget;
}

static int sb_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
    if (status != LUA_OK) {
        if (luas_fatal(L, status))
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L);
}

/* xpcall's message handler, wrapped: Lua calls a handler at the point of the error, and when
 * the error came from the count hook, hooks are still switched off there, so a looping handler
 * would never be stopped. Past the budget the handler is skipped and the error kept. */
static int sb_msgh(lua_State *L)
{
    if (run_of(L)->over_budget)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sb_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, sb_msgh, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f, handler, true, f, args... */
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 2);
    if (status != LUA_OK) {
        if (luas_fatal(L, status))
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - 2;
}

/* ----------------------------------------------------------------- sandbox --- */

/* load(chunk [, chunkname [, mode [, env]]]): text only, whatever mode says; a reader
 * function is not accepted (text chunks are enough for rules and easier to reason about). */
static int sb_load(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *chunkname = luaL_optstring(L, 2, "=(load)");
    bool has_env = !lua_isnone(L, 4);
    int status = luaL_loadbufferx(L, s, len, chunkname, "t");
    if (status != LUA_OK) {
        if (status == LUA_ERRMEM)
            return lua_error(L);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) { /* as the stock load: the env becomes the chunk's first upvalue (_ENV) */
        lua_pushvalue(L, 4);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return 1;
}

/* print(...) goes to the kernel log, one line, prefixed by the script's name. */
static int sb_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg(LOG_INFO, "lua", "%s: %s", run_of(L)->name, lua_tostring(L, -1));
    return 0;
}

/* collectgarbage: only the harmless options (the generational/incremental tuning and "stop"
 * could change how the memory budget behaves). */
static int sb_collectgarbage(lua_State *L)
{
    static const char *const opts[] = {"collect", "count", "step", NULL};
    int o = luaL_checkoption(L, 1, "collect", opts);
    switch (o) {
    case 0:
        lua_gc(L, LUA_GCCOLLECT);
        lua_pushinteger(L, 0);
        return 1;
    case 1: {
        int k = lua_gc(L, LUA_GCCOUNT), b = lua_gc(L, LUA_GCCOUNTB);
        lua_pushnumber(L, (lua_Number)k + ((lua_Number)b / 1024));
        return 1;
    }
    default:
        lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, 0));
        return 1;
    }
}

/* setmetatable without __gc: finalizers would run script code from the collector, and from
 * lua_close after the protected call has ended. */
static int sb_setmetatable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL) /* raw: the collector looks the field up raw too */
            return luaL_error(L, "__gc metamethods are not allowed in scripts");
        lua_pop(L, 1);
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* json.object([t]): mark t (or a new table) so it becomes a JSON object even when empty. */
static int sb_json_object(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &json_object_key);
    lua_setmetatable(L, 1);
    return 1;
}

/* Library functions do their loops in C, where the count hook never runs. The two whose work is
 * not bounded by the memory they allocate are wrapped: string.rep of an empty string (the result
 * is "" whatever n is) and table.move (charged one instruction per element moved). */
static int sb_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n > 0 && l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sb_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f) {
        run *r = run_of(L);
        uint64_t count = (uint64_t)e - (uint64_t)f + 1;
        if (count > r->step_limit - (r->steps < r->step_limit ? r->steps : r->step_limit)) {
            r->over_budget = true;
            return luaL_error(L, "instruction budget exceeded");
        }
        r->steps += count;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Replace table[name] with `fn`, which gets the original as its upvalue. */
static void sb_wrap(lua_State *L, int table, const char *name, lua_CFunction fn)
{
    lua_getfield(L, table, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, table, name);
}

static void sb_remove(lua_State *L, int table, const char *const *names)
{
    for (; *names; names++) {
        lua_pushnil(L);
        lua_setfield(L, table, *names);
    }
}

/* Build the sandbox in the fresh state's own globals: the state lives for one call. */
static void sb_open(lua_State *L)
{
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},        {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table},  {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->func; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    static const char *const base_out[] = {"dofile", "loadfile", "require", "warn", NULL};
    sb_remove(L, g, base_out);
    static const luaL_Reg base_in[] = {{"load", sb_load},
                                       {"print", sb_print},
                                       {"collectgarbage", sb_collectgarbage},
                                       {"setmetatable", sb_setmetatable},
                                       {"pcall", sb_pcall},
                                       {"xpcall", sb_xpcall},
                                       {NULL, NULL}};
    luaL_setfuncs(L, base_in, 0);

    /* string.dump would hand out bytecode; the string metatable's __index is this same table. */
    lua_getfield(L, g, LUA_STRLIBNAME);
    static const char *const string_out[] = {"dump", NULL};
    sb_remove(L, lua_gettop(L), string_out);
    sb_wrap(L, lua_gettop(L), "rep", sb_rep);
    lua_pop(L, 1);
    lua_getfield(L, g, LUA_TABLIBNAME);
    sb_wrap(L, lua_gettop(L), "move", sb_move);
    lua_pop(L, 1);

    /* os: only the clock, opened into a private table and copied field by field. */
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_createtable(L, 0, 3);
    static const char *const os_in[] = {"time", "clock", "date", NULL};
    for (const char *const *n = os_in; *n; n++) {
        lua_getfield(L, -2, *n);
        lua_setfield(L, -2, *n);
    }
    lua_setfield(L, g, LUA_OSLIBNAME);
    lua_pop(L, 1);
    /* luaL_requiref recorded the whole os in package.loaded; that table is unreachable
     * (no package, no require) but drop it anyway. */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    lua_setfield(L, -2, LUA_OSLIBNAME);
    lua_pop(L, 1);

    /* json: null sentinel and the object marker. */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "json.object");
    lua_setfield(L, -2, "__name");
    run_of(L)->object_mt = lua_topointer(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &json_object_key);
    lua_createtable(L, 0, 2);
    lua_pushlightuserdata(L, (void *)&json_null_tag);
    lua_setfield(L, -2, "null");
    lua_pushcfunction(L, sb_json_object);
    lua_setfield(L, -2, "object");
    lua_setfield(L, g, "json");
    lua_pop(L, 1);
}

/* ------------------------------------------------------------ JSON -> Lua --- */

/* A function's argument is read-only (a tagging rule must not change the `file` it is shown):
 * each table is pushed as an empty proxy whose metatable reads through to the real table
 * (__index, __len, __pairs) and refuses writes (__newindex); __metatable hides it from
 * getmetatable/setmetatable. The metatable keeps the real table at [1] and ro_tag at [2], so
 * luas_to_json (which must not raise) can see through a proxy with raw integer reads. */
static const char ro_tag = 0;

static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "the argument is read-only: copy what you change into a table of your own");
}

static int ro_len(lua_State *L)
{
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

static int ro_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

/* Replace the table at the top with its read-only proxy. */
static void ro_wrap(lua_State *L)
{
    lua_createtable(L, 0, 0);     /* data proxy */
    lua_createtable(L, 2, 6);     /* data proxy mt */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -3);
    lua_rawseti(L, -2, 1);
    lua_pushlightuserdata(L, (void *)&ro_tag);
    lua_rawseti(L, -2, 2);
    lua_pushcfunction(L, ro_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, ro_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, ro_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);      /* data proxy */
    lua_remove(L, -2);            /* proxy */
}

/* Runs inside the protected call, so Lua errors (memory) unwind safely: nothing here owns
 * C memory, the JSON is borrowed. Returns false with r->why on a value that cannot convert. */
static bool luas_push_json(lua_State *L, const json_t *j, int depth, bool ro)
{
    run *r = run_of(L);
    if (depth > LUAS_MAX_DEPTH) {
        snprintf(r->why, sizeof r->why, "the argument is nested deeper than %d levels", LUAS_MAX_DEPTH);
        return false;
    }
    luaL_checkstack(L, 6, "JSON argument too deep");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(j));
        lua_rawgetp(L, LUA_REGISTRYINDEX, &json_object_key);
        lua_setmetatable(L, -2);
        const char *k;
        size_t klen;
        json_t *v;
        void *tmp;
        json_object_keylen_foreach_safe((json_t *)j, tmp, k, klen, v)
        {
            lua_pushlstring(L, k, klen);
            if (!luas_push_json(L, v, depth + 1, ro))
                return false;
            lua_rawset(L, -3);
        }
        if (ro)
            ro_wrap(L);
        return true;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            if (!luas_push_json(L, json_array_get(j, i), depth + 1, ro))
                return false;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        if (ro)
            ro_wrap(L);
        return true;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        return true;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        return true;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(j));
        return true;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, json_is_true(j));
        return true;
    case JSON_NULL:
        lua_pushlightuserdata(L, (void *)&json_null_tag);
        return true;
    }
    snprintf(r->why, sizeof r->why, "the argument holds a value of unknown type");
    return false;
}

/* ------------------------------------------------------------ Lua -> JSON --- */

/* Runs after the protected call, so it uses only API calls that never raise: raw access,
 * lua_next (keys are never changed during the walk) and lua_tolstring on real strings only
 * (a number would be converted in place, which allocates). `seen` holds the tables on the
 * path from the root, to tell a cycle from plain depth. */
static json_t *luas_to_json(lua_State *L, int idx, const void **seen, int depth, char *why, size_t whylen)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            snprintf(why, whylen, "a number that is not finite (inf or nan) has no JSON form");
            return NULL;
        }
        return json_real((double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *j = json_stringn(s, len);
        if (!j)
            snprintf(why, whylen, "a string is not valid UTF-8");
        return j;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == &json_null_tag)
            return json_null();
        break;
    case LUA_TTABLE:
        break;
    default:
        break;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(why, whylen, "a %s value has no JSON form", lua_typename(L, lua_type(L, idx)));
        return NULL;
    }
    if (lua_checkstack(L, 3) && lua_getmetatable(L, idx)) { /* a read-only proxy (ro_wrap): its real table */
        bool proxy = lua_rawgeti(L, -1, 2) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == &ro_tag;
        lua_pop(L, 1);
        if (proxy) {
            lua_rawgeti(L, -1, 1);
            json_t *j = luas_to_json(L, -1, seen, depth, why, whylen);
            lua_pop(L, 2);
            return j;
        }
        lua_pop(L, 1);
    }
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < depth; i++)
        if (seen[i] == self) {
            snprintf(why, whylen, "a table contains itself (a cycle)");
            return NULL;
        }
    if (depth >= LUAS_MAX_DEPTH) {
        snprintf(why, whylen, "tables are nested deeper than %d levels", LUAS_MAX_DEPTH);
        return NULL;
    }
    if (!lua_checkstack(L, 4)) {
        snprintf(why, whylen, "out of stack space");
        return NULL;
    }
    seen[depth] = self;

    /* Decide the shape: marked object, else a sequence 1..n, else string keys only. */
    bool object = false;
    if (lua_getmetatable(L, idx)) {
        object = lua_topointer(L, -1) == run_of(L)->object_mt;
        lua_pop(L, 1);
    }
    size_t count = 0;
    bool all_strings = true, all_indexes = true;
    lua_Integer max_int = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (lua_type(L, -2) != LUA_TSTRING)
            all_strings = false;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1)
            all_indexes = false;
        else if (lua_tointeger(L, -2) > max_int)
            max_int = lua_tointeger(L, -2);
        lua_pop(L, 1);
    }
    /* count distinct keys, all in 1..max_int, count == max_int: exactly 1..n (or empty). */
    bool array = !object && all_indexes && (lua_Integer)count == max_int;
    if (!array && !all_strings) {
        snprintf(why, whylen, "a table mixes keys that are not strings with others, or is a sparse array");
        return NULL;
    }
    json_t *out;
    if (array) {
        out = json_array();
        for (lua_Integer i = 1; i <= max_int; i++) {
            lua_rawgeti(L, idx, i);
            json_t *v = luas_to_json(L, -1, seen, depth + 1, why, whylen);
            lua_pop(L, 1);
            if (!v || json_array_append_new(out, v)) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    out = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen); /* a string: checked above */
        json_t *v = luas_to_json(L, -1, seen, depth + 1, why, whylen);
        lua_pop(L, 1);
        if (v && json_object_setn_new(out, k, klen, v)) {
            snprintf(why, whylen, "an object key is not valid UTF-8");
            v = NULL;
        }
        if (!v) {
            lua_pop(L, 1);
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ------------------------------------------------------------------ calls --- */

/* The body of a call, under lua_pcall: sandbox, load, top level, function, argument. */
static int luas_body(lua_State *L)
{
    run *r = lua_touserdata(L, 1);
    lua_settop(L, 0);
    sb_open(L);
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "@%s", r->name);
    if (luaL_loadbufferx(L, r->src, r->srclen, chunkname, "t") != LUA_OK)
        return lua_error(L); /* the message is already "name:line: reason" */
    if (!r->fn) {
        /* No function: the chunk itself is the entry point, with the argument as `...`. */
        if (r->arg && !luas_push_json(L, r->arg, 1, false))
            return luaL_error(L, "%s", r->why);
        lua_call(L, r->arg ? 1 : 0, 1);
        return 1;
    }
    lua_call(L, 0, 0);
    if (lua_getglobal(L, r->fn) != LUA_TFUNCTION) {
        r->no_function = true;
        return luaL_error(L, "script %s has no function %s", r->name, r->fn);
    }
    if (r->arg) {
        if (!luas_push_json(L, r->arg, 1, true))
            return luaL_error(L, "%s", r->why);
    } else
        lua_pushlightuserdata(L, (void *)&json_null_tag);
    lua_call(L, 1, 1);
    return 1;
}

static void luas_error_text(lua_State *L, char *buf, size_t n)
{
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
        snprintf(buf, n, "%s", lua_tostring(L, -1));
        break;
    case LUA_TNUMBER: /* no lua_tostring: it would allocate outside a protected call */
        if (lua_isinteger(L, -1))
            snprintf(buf, n, "%lld", (long long)lua_tointeger(L, -1));
        else
            snprintf(buf, n, "%.14g", (double)lua_tonumber(L, -1));
        break;
    default:
        snprintf(buf, n, "(error object is a %s value)", lua_typename(L, lua_type(L, -1)));
    }
}

static int luas_panic(lua_State *L)
{
    log_error("lua: unprotected error: %s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    abort(); /* a bug in this file: every script runs under lua_pcall */
}

static int luas_exec(const char *name, const char *src, size_t srclen, const char *fn, const json_t *arg,
                     json_t **result, mb_err *err)
{
    run r = {.mem_limit = atomic_load(&max_memory),
             .step_limit = atomic_load(&max_instructions),
             .name = name,
             .fn = fn,
             .src = src,
             .srclen = srclen,
             .arg = arg,
             .deadline_ns = luas_mono_ns() + atomic_load(&max_ms) * 1000000u};
    lua_State *L = lua_newstate(luas_alloc, &r);
    if (!L)
        return err_set(err, MB_ENOMEM, "script %s ran out of memory (limit %zu bytes)", name, r.mem_limit);
    lua_atpanic(L, luas_panic);
    lua_sethook(L, luas_hook, LUA_MASKCOUNT, LUAS_HOOK_EVERY);
    lua_pushcfunction(L, luas_body);
    lua_pushlightuserdata(L, &r);
    int status = lua_pcall(L, 1, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    int rc = 0;
    if (status == LUA_ERRMEM) {
        rc = err_set(err, MB_ENOMEM, "script %s ran out of memory (limit %zu bytes)", name, r.mem_limit);
    } else if (r.over_time) {
        rc = err_set(err, MB_ECANCELED, "script %s exceeded its time limit (%llu ms)", name,
                     (unsigned long long)atomic_load(&max_ms));
    } else if (r.over_budget) {
        rc = err_set(err, MB_ECANCELED, "script %s exceeded its instruction budget (%llu instructions)", name,
                     (unsigned long long)r.step_limit);
    } else if (status != LUA_OK) {
        char text[256];
        luas_error_text(L, text, sizeof text);
        rc = err_set(err, r.no_function ? MB_ENOENT : MB_EINVAL, "%s", text);
    } else if (result) {
        const void *seen[LUAS_MAX_DEPTH];
        char why[160] = "";
        *result = NULL;
        if (!lua_isnil(L, -1)) {
            *result = luas_to_json(L, -1, seen, 0, why, sizeof why);
            if (!*result)
                rc = err_set(err, MB_EINVAL, "script %s: %s returned a value JSON cannot hold: %s", name,
                             fn ? fn : "the chunk", why);
        }
    }
    lua_close(L);
    return rc;
}

/* Plain file names only: [A-Za-z0-9_.-], no leading '.', ending in ".lua". */
static bool luas_valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 5 || n > 128 || s[0] == '.' || strcmp(s + n - 4, ".lua"))
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static bool luas_valid_fn(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 64 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n &&
           !(s[0] >= '0' && s[0] <= '9');
}

static int luas_check_args(const char *name, const char *fn, const json_t *arg, json_t **result, mb_err *err)
{
    if (result)
        *result = NULL;
    if (!luas_valid_name(name))
        return err_set(err, MB_EINVAL,
                       "'%.64s' is not a script name: use a plain file name ending in .lua "
                       "(letters, digits, '_', '.', '-', not starting with '.')",
                       name ? name : "");
    if (fn && !luas_valid_fn(fn))
        return err_set(err, MB_EINVAL, "'%.64s' is not a Lua function name", fn);
    (void)arg;
    return 0;
}

void luas_set_limits(uint64_t instructions, size_t memory)
{
    atomic_store(&max_instructions, instructions ? instructions : LUAS_DEFAULT_INSTRUCTIONS);
    atomic_store(&max_memory, memory ? memory : LUAS_DEFAULT_MEMORY);
}

void luas_set_time_limit(uint64_t ms)
{
    atomic_store(&max_ms, ms ? ms : LUAS_DEFAULT_MS);
}

int luas_init(const char *dir, mb_err *err)
{
    if (!dir || !*dir)
        return err_set(err, MB_EINVAL, "lua_dir is empty: set it to the directory of the rule scripts");
    free(script_dir);
    script_dir = xstrdup(dir);
    /* Operators may tune the budgets without a config key (MBYTE_LUA_INSTRUCTIONS, MBYTE_LUA_MEMORY). */
    uint64_t ins = 0, mem = 0;
    const char *e;
    if ((e = getenv("MBYTE_LUA_INSTRUCTIONS")) && *e && !parse_u64(e, &ins))
        return err_set(err, MB_EINVAL, "MBYTE_LUA_INSTRUCTIONS must be a whole number of instructions");
    if ((e = getenv("MBYTE_LUA_MEMORY")) && *e && (!parse_u64(e, &mem) || (mem && mem < 65536)))
        return err_set(err, MB_EINVAL, "MBYTE_LUA_MEMORY must be a number of bytes of at least 65536");
    luas_set_limits(ins, (size_t)mem);
    uint64_t secs = 0;
    if ((e = getenv("MBYTE_LUA_SECONDS")) && *e && (!parse_u64(e, &secs) || secs > 3600))
        return err_set(err, MB_EINVAL, "MBYTE_LUA_SECONDS must be a whole number of seconds up to 3600");
    luas_set_time_limit(secs * 1000);
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        log_warn("lua: script directory %s does not exist; scripts cannot run until it does", dir);
    return 0;
}

void luas_fini(void)
{
    free(script_dir);
    script_dir = NULL;
}

int luas_call(const char *script, const char *fn, const json_t *arg, json_t **result, mb_err *err)
{
    int rc = luas_check_args(script, fn, arg, result, err);
    if (rc)
        return rc;
    if (!fn)
        return err_set(err, MB_EINVAL, "no function named to call in %s", script);
    if (!script_dir)
        return err_set(err, MB_EBUSY, "the Lua service is not running");
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", script_dir, script) >= sizeof path)
        return err_set(err, MB_EINVAL, "the script path for %s is too long", script);
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, errno == ENOENT ? MB_ENOENT : MB_EIO, "script %s: %s", script,
                       errno == ENOENT ? "no such script" : strerror(errno));
    char *src = xmalloc(LUAS_MAX_SCRIPT + 1);
    size_t n = fread(src, 1, LUAS_MAX_SCRIPT + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad)
        rc = err_set(err, MB_EIO, "script %s could not be read", script);
    else if (n > LUAS_MAX_SCRIPT)
        rc = err_set(err, MB_ETOOBIG, "script %s is larger than %u bytes", script, LUAS_MAX_SCRIPT);
    else
        rc = luas_exec(script, src, n, fn, arg, result, err);
    free(src);
    return rc;
}

int luas_run_string(const char *name, const char *src, const char *fn, const json_t *arg, json_t **result,
                    mb_err *err)
{
    int rc = luas_check_args(name, fn, arg, result, err);
    if (rc)
        return rc;
    if (!src)
        return err_set(err, MB_EINVAL, "no source text for %s", name);
    return luas_exec(name, src, strlen(src), fn, arg, result, err);
}

/* Compile only: a rule's syntax is checked when it is stored (a 422 with its line). */
int luas_check(const char *name, const char *src, mb_err *err)
{
    int rc = luas_check_args(name, NULL, NULL, NULL, err);
    if (rc)
        return rc;
    if (!src)
        return err_set(err, MB_EINVAL, "no source text for %s", name);
    run r = {.mem_limit = atomic_load(&max_memory), .name = name};
    lua_State *L = lua_newstate(luas_alloc, &r);
    if (!L)
        return err_set(err, MB_ENOMEM, "script %s ran out of memory (limit %zu bytes)", name, r.mem_limit);
    lua_atpanic(L, luas_panic);
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "@%s", name);
    int status = luaL_loadbufferx(L, src, strlen(src), chunkname, "t");
    if (status == LUA_ERRMEM)
        rc = err_set(err, MB_ENOMEM, "script %s ran out of memory (limit %zu bytes)", name, r.mem_limit);
    else if (status != LUA_OK) {
        char text[256];
        luas_error_text(L, text, sizeof text);
        rc = err_set(err, MB_EINVAL, "%s", text);
    }
    lua_close(L);
    return rc;
}
