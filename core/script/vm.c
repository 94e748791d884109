/*
 * Lua VM lifecycle and the single pcall wrapper. Owns the lua_State and
 * the references it keeps; knows nothing of HTTP or the broker. Operator
 * hooks get their own sandboxed environments (script/sandbox.c); the
 * shipped modules loaded here (config, API) are trusted code. Also owns
 * the VM's memory ceiling (a counting allocator) and reports every Lua
 * call to the watchdog (loop/watchdog.c).
 */
#include "script/vm.h"
#include "ess.h"
#include "loop/watchdog.h"
#include "util/log.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef ESS_LUA_DIR
#define ESS_LUA_DIR ESS_SOURCE_DIR "/lua"
#endif

extern char **environ;

const char *ess_vm_default_lua_path(void)
{
    const char *p = getenv("ESS_LUA_PATH");
    return p && p[0] ? p : ESS_LUA_DIR;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* The message handler, created once per state: lua_pushcfunction
 * allocates a new closure each time, and hooks run once per message. */
static char traceback_key;

/* The allocator of every VM: LuaJIT's own, counted. Growth is refused past
 * the ceiling only inside ess_vm_pcall, where LuaJIT turns the NULL into a
 * "not enough memory" error that the call returns. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    ess_vm_t *vm = ud;
    int64_t old = ptr ? (int64_t)osize : 0;
    if (nsize > (size_t)old && vm->mem_limit > 0 && vm->depth > 0 &&
        vm->mem_used - old + (int64_t)nsize > vm->mem_limit) {
        vm->mem_refused = 1;
        return NULL;
    }
    void *p = vm->raw_alloc(vm->raw_ud, ptr, osize, nsize);
    if (p != NULL || nsize == 0)
        vm->mem_used += (int64_t)nsize - old;
    return p;
}

static ess_vm_t *vm_of(lua_State *L)
{
    void *ud;
    return lua_getallocf(L, &ud) == limited_alloc ? ud : NULL;
}

void ess_vm_set_memory_limit(ess_vm_t *vm, int mb)
{
    vm->mem_limit = mb > 0 ? (int64_t)mb << 20 : 0;
}

/* After a failed outermost call no Lua code runs on the VM, so the sandbox's
 * count of nested C callbacks (lua/ess/sandbox.lua) must be 0; an error
 * raised between its increment and its pcall (a watchdog interrupt, a
 * memory error) would otherwise leave it high for good. */
static void reset_nesting(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "ess.sandbox.nesting");
    if (lua_istable(L, -1)) {
        lua_pushnumber(L, 0);
        lua_setfield(L, -2, "n");
    }
    lua_pop(L, 1);
}

/* Lua calls running on the loop thread, across VMs (watchdog nesting). */
static int call_depth;

int ess_vm_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen)
{
    ess_vm_t *vm = vm_of(L);
    lua_State *outer_L = NULL;
    int outermost = call_depth++ == 0;
    if (outermost)
        ess_watchdog_enter(L);
    else
        outer_L = ess_watchdog_enter_nested(L);
    if (vm && vm->depth++ == 0)
        vm->mem_refused = 0;
    int base = lua_gettop(L) - nargs;
    lua_pushlightuserdata(L, &traceback_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushcfunction(L, traceback);
        lua_pushlightuserdata(L, &traceback_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (vm)
        vm->depth--;
    if (outermost)
        ess_watchdog_leave(L);
    else if (outer_L != L)
        ess_watchdog_leave_nested(L, outer_L);
    call_depth--;
    if (rc == 0)
        return ESS_OK;
    const char *msg = lua_tostring(L, -1);
    if (vm && vm->mem_refused)
        snprintf(err, errlen, "%s (the Lua VM reached lua.max_memory_mb, %lld MiB)",
                 msg ? msg : "not enough memory", (long long)(vm->mem_limit >> 20));
    else
        snprintf(err, errlen, "%s", msg ? msg : "unknown Lua error");
    lua_pop(L, 1);
    if (vm && vm->depth == 0)
        reset_nesting(L);
    if (vm && vm->mem_refused && vm->depth == 0) {
        vm->mem_refused = 0;
        lua_gc(L, LUA_GCCOLLECT, 0); /* give the garbage of the failed call back at once */
    }
    return ESS_ESCRIPT;
}

int ess_vm_create(const char *lua_path, ess_vm_t **out, char *err, size_t errlen)
{
    struct stat st;
    const char *why = NULL;
    if (stat(lua_path, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    if (why != NULL) {
        snprintf(err, errlen,
                 "Lua root %s: %s (set ESS_LUA_PATH or lua.path to the lua/ folder that holds "
                 "ess/config.lua)",
                 lua_path, why);
        return ESS_ESCRIPT;
    }
    ess_vm_t *vm = ess_xcalloc(1, sizeof *vm);
    static uint64_t generation;
    vm->cfg_ref = vm->api_ref = vm->enrich_ref = vm->msg_ref = LUA_NOREF;
    vm->gen = ++generation;
    vm->L = luaL_newstate();
    if (vm->L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state (out of memory)");
        free(vm);
        return ESS_ESCRIPT;
    }
    vm->raw_alloc = lua_getallocf(vm->L, &vm->raw_ud);
    vm->mem_used = (int64_t)lua_gc(vm->L, LUA_GCCOUNT, 0) * 1024 + lua_gc(vm->L, LUA_GCCOUNTB, 0);
    lua_setallocf(vm->L, limited_alloc, vm);
    luaL_openlibs(vm->L);
    vm->lua_path = ess_xstrdup(lua_path);

    lua_State *L = vm->L;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lua_path, lua_path);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    *out = vm;
    return ESS_OK;
}

void ess_vm_free(ess_vm_t *vm)
{
    if (vm == NULL)
        return;
    if (vm->L) {
        /* LuaJIT frees its whole arena at once only when the state's
         * allocator is its own again; through the wrapper it would free
         * just the state and leak the rest of the arena. */
        if (vm->raw_alloc)
            lua_setallocf(vm->L, vm->raw_alloc, vm->raw_ud);
        lua_close(vm->L);
    }
    free(vm->lua_path);
    free(vm);
}

int ess_vm_require_fn(ess_vm_t *vm, const char *module, const char *fn, int *ref, char *err,
                      size_t errlen)
{
    lua_State *L = vm->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (ess_vm_pcall(L, 1, 1, err, errlen) != ESS_OK)
        return ESS_ESCRIPT;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "module %s: expected a table, got %s", module, luaL_typename(L, -1));
        lua_pop(L, 1);
        return ESS_ESCRIPT;
    }
    lua_getfield(L, -1, fn);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "module %s: field %s is not a function", module, fn);
        lua_pop(L, 2);
        return ESS_ESCRIPT;
    }
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return ESS_OK;
}

/* The ESS_* variables of the process environment, as a table. */
static void push_env(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "ESS_", 4) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_settable(L, -3);
    }
}

int ess__config_from_table(lua_State *L, int idx, ess_config_t *cfg, char *err, size_t errlen);

int ess_vm_load_config(ess_vm_t *vm, const char *path, ess_config_t **out, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "ess.config");
    if (ess_vm_pcall(L, 1, 1, err, errlen) != ESS_OK) {
        /* Not Lua's list of every place it looked: one line naming the root. */
        if (strstr(err, "module 'ess.config' not found") != NULL)
            snprintf(err, errlen,
                     "Lua root %s has no ess/config.lua (set ESS_LUA_PATH or lua.path to the "
                     "lua/ folder of essd)",
                     vm->lua_path);
        return ESS_ESCRIPT;
    }
    lua_getfield(L, -1, "load");
    if (path)
        lua_pushstring(L, path);
    else
        lua_pushnil(L);
    push_env(L);
    if (ess_vm_pcall(L, 2, 2, err, errlen) != ESS_OK) {
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    if (!lua_istable(L, -2)) {
        snprintf(err, errlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "config: invalid");
        lua_settop(L, top);
        return ESS_EINVAL;
    }
    lua_pop(L, 1);
    ess_config_t *cfg = ess_xcalloc(1, sizeof *cfg);
    cfg->path = path ? ess_xstrdup(path) : NULL;
    if (ess__config_from_table(L, lua_gettop(L), cfg, err, errlen) != ESS_OK) {
        ess_config_free(cfg);
        lua_settop(L, top);
        return ESS_EINVAL;
    }
    if (vm->cfg_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, vm->cfg_ref);
    vm->cfg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    *out = cfg;
    return ESS_OK;
}

int ess_vm_lua_log(lua_State *L)
{
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    int lv = ess_log_level_parse(level);
    ess_log(lv < 0 ? ESS_LOG_INFO : (ess_log_level_t)lv, "lua: %s", msg);
    return 0;
}
