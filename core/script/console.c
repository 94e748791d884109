/*
 * The operator console's core.console_* functions (script/console.h).
 * Owns the provider pointer the gateway registers and the Lua side of the
 * calls; the JSON of sessions comes from the provider, the series from
 * metrics/series.c, the reload record from reload.c.
 */
#include "script/console.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "metrics/series.h"
#include "script/hooks.h"
#include "script/reload.h"
#include "script/vm.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

static const ess_console_provider_t *provider;

void ess_script_console_provide(const ess_console_provider_t *p)
{
    provider = p;
}

static ess_app_t *app_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static void push_buf(lua_State *L, ess_buf_t *b)
{
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    ess_buf_free(b);
}

static const char *opt_str(lua_State *L, const char *key, const char *dflt)
{
    lua_getfield(L, 1, key);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : dflt;
    lua_pop(L, 1); /* the string stays referenced by the options table */
    return s;
}

static int64_t opt_int(lua_State *L, const char *key, int64_t dflt)
{
    lua_getfield(L, 1, key);
    int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* core.console_state{offset, limit, sort, desc, filter, live} -> json | nil, err */
static int l_state(lua_State *L)
{
    ess_app_t *app = app_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (provider == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "the gateway is not running");
        return 2;
    }
    ess_console_query_t q = {
        .offset = opt_int(L, "offset", 0),
        .limit = opt_int(L, "limit", 50),
        .sort = opt_str(L, "sort", "id"),
        .desc = opt_int(L, "desc", 0) != 0,
        .filter = opt_str(L, "filter", ""),
        .live = opt_int(L, "live", 0) != 0,
    };
    ess_buf_t b = {0};
    int rc = provider->state(app, &q, &b);
    if (rc != ESS_OK) {
        ess_buf_free(&b);
        lua_pushnil(L);
        lua_pushstring(L, ess_strerror(rc));
        return 2;
    }
    push_buf(L, &b);
    return 1;
}

/* core.console_tail(id, after, stop) -> json | nil, "not_found" | "too_many" | err */
static int l_tail(lua_State *L)
{
    ess_app_t *app = app_of(L);
    int64_t id = (int64_t)luaL_checknumber(L, 1);
    lua_Number after = luaL_optnumber(L, 2, 0);
    int stop = lua_toboolean(L, 3);
    if (provider == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "not_found");
        return 2;
    }
    ess_buf_t b = {0};
    int rc = provider->tail(app, id, after > 0 ? (uint64_t)after : 0, stop, &b);
    if (rc != ESS_OK) {
        ess_buf_free(&b);
        lua_pushnil(L);
        lua_pushstring(L, rc == ESS_ENOTFOUND ? "not_found"
                          : rc == ESS_ETOOBIG ? "too_many"
                                              : ess_strerror(rc));
        return 2;
    }
    push_buf(L, &b);
    return 1;
}

/* core.console_series(seconds) -> json */
static int l_series(lua_State *L)
{
    int seconds = (int)luaL_optnumber(L, 1, ESS_SERIES_SECONDS);
    ess_buf_t b = {0};
    ess_series_json(&b, seconds);
    push_buf(L, &b);
    return 1;
}

/* core.console_lua() -> {generation, enrich_errors, route_errors, failing_streak, last_reload} */
static int l_lua(lua_State *L)
{
    ess_app_t *app = app_of(L);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, (lua_Number)app->vm->gen);
    lua_setfield(L, -2, "generation");
    lua_pushnumber(L, (lua_Number)ess_metrics.enrich_errors);
    lua_setfield(L, -2, "enrich_errors");
    lua_pushnumber(L, (lua_Number)ess_metrics_get("ess_hook_errors_total", "hook=\"route\""));
    lua_setfield(L, -2, "route_errors");
    lua_pushnumber(L, (lua_Number)ess_hooks_failing_streak);
    lua_setfield(L, -2, "failing_streak");
    lua_pushstring(L, app->cfg->lua_enrich);
    lua_setfield(L, -2, "enrich_module");
    lua_pushstring(L, app->cfg->lua_route);
    lua_setfield(L, -2, "route_module");
    lua_pushstring(L, app->vm->lua_path);
    lua_setfield(L, -2, "lua_path");
    const ess_reload_last_t *r = &ess_reload_last;
    if (r->at_ms) {
        lua_createtable(L, 0, 5);
        lua_pushnumber(L, (lua_Number)r->at_ms);
        lua_setfield(L, -2, "at");
        lua_pushstring(L, r->trigger);
        lua_setfield(L, -2, "trigger");
        lua_pushstring(L, r->ok ? "reloaded" : "rejected");
        lua_setfield(L, -2, "status");
        lua_pushnumber(L, (lua_Number)r->generation);
        lua_setfield(L, -2, "generation");
        if (!r->ok) {
            lua_pushstring(L, r->error);
            lua_setfield(L, -2, "error");
        }
        lua_setfield(L, -2, "last_reload");
    }
    return 1;
}

void ess__script_console_core(void *Lv, ess_app_t *app)
{
    lua_State *L = Lv;
    static const luaL_Reg fns[] = {
        {"console_state", l_state},
        {"console_tail", l_tail},
        {"console_series", l_series},
        {"console_lua", l_lua},
        {NULL, NULL},
    };
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, app);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    /* The page's files: ESS_UI_PATH, else ui/ beside the shipped Lua root
     * (lua/ and ui/ in the source tree, share/essd/{lua,ui} installed). */
    const char *ui = getenv("ESS_UI_PATH");
    if (ui && ui[0])
        lua_pushstring(L, ui);
    else
        lua_pushfstring(L, "%s/../ui", ess_vm_default_lua_path());
    lua_setfield(L, -2, "ui_path");
}
