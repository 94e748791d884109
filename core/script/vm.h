/*
 * The Lua VM: creation with the project's package path, the one pcall
 * wrapper every C-to-Lua call goes through, and loading the configuration.
 * A VM holds code and caches only; persistent state lives in C.
 */
#ifndef ESS_VM_H
#define ESS_VM_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct ess_vm_s {
    lua_State *L;
    int cfg_ref;             /* the validated config table (LUA_NOREF until loaded) */
    int api_ref;             /* the API module's handle function */
    int enrich_ref, msg_ref; /* the enrich hook and its reused msg table (script/hooks.c) */
    int enrich_shared;       /* the enrich module declared per_stream = false (script/hooks.c) */
    uint64_t gen;            /* unique per VM built in this process; never reused */
    char *lua_path;
    /* Memory ceiling (lua.max_memory_mb): every allocation of the state goes
     * through vm.c's allocator, which counts bytes and refuses growth past
     * mem_limit while a protected call runs (depth > 0), so the failure is
     * an ordinary Lua error; C pushing outside a call never fails. */
    lua_Alloc raw_alloc;
    void *raw_ud;
    int64_t mem_used, mem_limit; /* bytes; mem_limit 0 = none */
    int depth;                   /* ess_vm_pcall calls running on this state */
    int mem_refused;             /* an allocation was refused in the current call */
} ess_vm_t;

/** The bootstrap Lua root: ESS_LUA_PATH, else the compiled-in default. Borrowed. */
const char *ess_vm_default_lua_path(void);

/**
 * Create a VM whose `require` finds lua_path/?.lua and lua_path/?/init.lua
 * before the system paths. ESS_OK, or ESS_ESCRIPT with a message in err.
 * The caller frees with ess_vm_free.
 */
int ess_vm_create(const char *lua_path, ess_vm_t **out, char *err, size_t errlen);

void ess_vm_free(ess_vm_t *vm);

/** Set the VM's memory ceiling in MiB (lua.max_memory_mb); 0 removes it. */
void ess_vm_set_memory_limit(ess_vm_t *vm, int mb);

/**
 * Call the function under nargs arguments on the stack, with a traceback
 * handler. On error the stack is left with nothing of the call, the
 * message (with traceback) is copied into err, and ESS_ESCRIPT returned.
 * Every call is watched by loop/watchdog.c (lua.hook_timeout_ms) and, on
 * a VM from ess_vm_create, bounded in memory (ess_vm_set_memory_limit).
 */
int ess_vm_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen);

/**
 * Load and validate the configuration (path may be NULL for defaults) with
 * lua/ess/config.lua and the process environment; keep the table in the VM
 * and fill *out (caller frees with ess_config_free). ESS_EINVAL with the
 * message naming the key in err.
 */
int ess_vm_load_config(ess_vm_t *vm, const char *path, ess_config_t **out, char *err,
                       size_t errlen);

/** Require module and keep its field fn in *ref. ESS_ESCRIPT with err on failure. */
int ess_vm_require_fn(ess_vm_t *vm, const char *module, const char *fn, int *ref, char *err,
                      size_t errlen);

/** log(level, message) for scripts: an unknown level logs at INFO. A lua_CFunction. */
int ess_vm_lua_log(lua_State *L);

#endif
