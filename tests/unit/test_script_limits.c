/*
 * Tests for the limits on Lua calls (issue 12 cases 4 and 5): the memory
 * ceiling of a VM (lua.max_memory_mb) turns an oversized allocation into
 * an error of the call, never of the process, and the memory comes back;
 * the watchdog interrupts a call that the interpreter runs past
 * lua.hook_timeout_ms, and the VM is usable afterwards. A loop the JIT
 * compiles cannot be interrupted; that exit path is tested end to end in
 * tests/integration/test_script_limits.py.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "ess_test.h"
#include "loop/watchdog.h"
#include "script/vm.h"

static ess_vm_t *new_vm(void)
{
    char err[512];
    ess_vm_t *vm = NULL;
    const char *root = getenv("ESS_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/lua", root ? root : ESS_SOURCE_DIR);
    CHECK(ess_vm_create(path, &vm, err, sizeof err) == ESS_OK);
    return vm;
}

/* Run src as a chunk under ess_vm_pcall; returns its status, err filled. */
static int run(ess_vm_t *vm, const char *src, char *err, size_t errlen)
{
    err[0] = '\0';
    if (luaL_loadstring(vm->L, src) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(vm->L, -1));
        lua_pop(vm->L, 1);
        return ESS_EINVAL;
    }
    return ess_vm_pcall(vm->L, 0, 0, err, errlen);
}

static void test_memory_ceiling(void)
{
    ess_vm_t *vm = new_vm();
    char err[4096];
    ess_vm_set_memory_limit(vm, 32);
    CHECK(run(vm, "big = ('x'):rep(1e9)", err, sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "not enough memory") != NULL);
    CHECK(strstr(err, "lua.max_memory_mb, 32 MiB") != NULL);
    CHECK(vm->mem_used < (int64_t)32 << 20);

    /* Growth in small steps stops at the ceiling too, and is given back. */
    CHECK(run(vm, "local t = {} for i = 1, 1e8 do t[i] = ('y'):rep(100) .. i end", err,
              sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "max_memory_mb") != NULL);
    CHECK(vm->mem_used < (int64_t)8 << 20);

    /* Under the ceiling all is normal, and C may push outside a call. */
    CHECK(run(vm, "small = ('x'):rep(1e6)", err, sizeof err) == ESS_OK);
    lua_pushlstring(vm->L, "outside a call", 14);
    lua_pop(vm->L, 1);

    /* A script that catches the error sees the usual message. */
    CHECK(run(vm,
              "local ok, e = pcall(string.rep, 'x', 1e9) assert(not ok)"
              " assert(e:find('not enough memory'))",
              err, sizeof err) == ESS_OK);
    ess_vm_free(vm);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

/* Freeing a VM gives back its whole arena: the counting allocator must not
 * stop LuaJIT from destroying its own (each VM maps a few hundred KiB). */
static void test_vm_free_returns_memory(void)
{
    char err[256];
    for (int i = 0; i < 5; i++)
        ess_vm_free(new_vm());
    long before = rss_kib();
    for (int i = 0; i < 200; i++) {
        ess_vm_t *vm = new_vm();
        ess_vm_set_memory_limit(vm, 16);
        CHECK(run(vm, "local t = {} for i = 1, 1000 do t[i] = ('z'):rep(100) .. i end", err,
                  sizeof err) == ESS_OK);
        ess_vm_free(vm);
    }
    long grown = rss_kib() - before;
    fprintf(stderr, "RSS growth over 200 VMs: %ld KiB\n", grown);
    CHECK(grown < 16 * 1024);
}

static int spin_calls;
static int spin_c(lua_State *L)
{
    (void)L;
    spin_calls++;
    return 0;
}

static void test_watchdog_interrupts(void)
{
    ess_vm_t *vm = new_vm();
    char err[4096];
    CHECK(ess_watchdog_start(200) == ESS_OK);
    lua_pushcfunction(vm->L, spin_c);
    lua_setglobal(vm->L, "spin");
    unsigned long before = ess_watchdog_interrupts();
    /* A raised error aborts every trace, so this loop stays in the interpreter. */
    CHECK(run(vm, "while true do spin() pcall(error) end", err, sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "interrupted by the watchdog") != NULL);
    CHECK(ess_watchdog_interrupts() == before + 1);
    CHECK(spin_calls > 0);

    /* A script's own pcall cannot swallow the interrupt for good. */
    CHECK(run(vm, "while true do pcall(function() while true do pcall(error) end end) end", err,
              sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "interrupted by the watchdog") != NULL);

    /* With the JIT off, any loop is interrupted (here: C calls that the JIT
     * would otherwise stitch into a trace). */
    CHECK(run(vm, "jit.off() while true do spin() end", err, sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "interrupted by the watchdog") != NULL);
    CHECK(run(vm, "jit.on()", err, sizeof err) == ESS_OK);

    /* The VM works normally afterwards: no hook is left behind. */
    CHECK(run(vm, "local s = 0 for i = 1, 1e6 do s = s + i end x = s", err, sizeof err) == ESS_OK);
    lua_getglobal(vm->L, "x");
    CHECK(lua_tonumber(vm->L, -1) == 500000500000.0);
    lua_pop(vm->L, 1);
    ess_watchdog_stop();
    ess_vm_free(vm);
}

/* A failed call sets the sandbox's count of nested C callbacks back to 0. */
static void test_nesting_reset(void)
{
    ess_vm_t *vm = new_vm();
    char err[1024];
    CHECK(run(vm, "require 'ess.sandbox'", err, sizeof err) == ESS_OK);
    CHECK(run(vm, "debug.getregistry()['ess.sandbox.nesting'].n = 100", err, sizeof err) == ESS_OK);
    CHECK(run(vm, "('ab'):gsub('.', function(c) return c end)", err, sizeof err) == ESS_ESCRIPT);
    CHECK(strstr(err, "nested more than") != NULL);
    CHECK(run(vm, "assert(('ab'):gsub('.', function(c) return c:upper() end) == 'AB')", err,
              sizeof err) == ESS_OK);
    ess_vm_free(vm);
}

ESS_TEST_MAIN(ESS_TEST(test_memory_ceiling), ESS_TEST(test_nesting_reset),
              ESS_TEST(test_vm_free_returns_memory), ESS_TEST(test_watchdog_interrupts))
