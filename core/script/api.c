/*
 * The internal API's C/Lua boundary: builds the request table, calls
 * ess.api.handle through the pcall wrapper, reads the response table, and
 * provides the `core` table of C functions (registry, metrics, health)
 * that the handlers call. Validation of bodies and paths is Lua's; the
 * registry still refuses an invalid routing key on its own.
 */
#include "script/api.h"
#include "script/console.h"
#include "ess.h"
#include "script/vm.h"
#include "script/hooks.h"
#include "script/reload.h"
#include "metrics/metrics.h"
#include "mq/port_check.h"
#include "mq/url.h"
#include "util/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#define CORE_KEY "ess.core"

static ess_app_t *app_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static void push_row(lua_State *L, const ess_es_row_t *row)
{
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)row->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, row->uuid);
    lua_setfield(L, -2, "uuid");
    lua_pushlstring(L, row->routing_key, row->routing_key_len);
    lua_setfield(L, -2, "routing_key");
    lua_pushnumber(L, (lua_Number)row->created_ms);
    lua_setfield(L, -2, "created");
}

/* core.registry_create(routing_key) -> row | nil, err */
static int l_registry_create(lua_State *L)
{
    ess_app_t *app = app_of(L);
    size_t len;
    const char *rk = luaL_checklstring(L, 1, &len);
    ess_es_row_t row;
    int rc = ess_registry_create(app->registry, rk, len, &row);
    if (rc != ESS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ess_strerror(rc));
        return 2;
    }
    push_row(L, &row);
    return 1;
}

static int list_row(void *ud, const ess_es_row_t *row)
{
    lua_State *L = ud;
    push_row(L, row);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* core.registry_list() -> array | nil, err */
static int l_registry_list(lua_State *L)
{
    ess_app_t *app = app_of(L);
    lua_newtable(L);
    int rc = ess_registry_list(app->registry, list_row, L);
    if (rc != ESS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ess_strerror(rc));
        return 2;
    }
    return 1;
}

/* core.registry_delete(id) -> true | false | nil, err; closes live sockets. */
static int l_registry_delete(lua_State *L)
{
    ess_app_t *app = app_of(L);
    lua_Number n = luaL_checknumber(L, 1);
    ess_es_row_t row;
    int rc = ess_registry_delete(app->registry, (int64_t)n, &row);
    if (rc == ESS_ENOTFOUND) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (rc != ESS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ess_strerror(rc));
        return 2;
    }
    /* The registry tells its listener (the gateway closes the live session). */
    lua_pushboolean(L, 1);
    return 1;
}

static int l_metrics_text(lua_State *L)
{
    ess_app_t *app = app_of(L);
    ess_buf_t b = {0};
    ess_metrics_render(&b, ess_registry_count(app->registry));
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    ess_buf_free(&b);
    return 1;
}

/* With broker.version 2 the stream connection uses broker.stream_port and
 * the port of broker.url serves only AMQP 0-9-1 (classic routes). That
 * port is checked at start and then by readiness, at most every
 * AMQP_CHECK_EVERY_MS, so that a URL whose port answers nothing is not
 * "ready". One check per process: the loop and the URL do not change. */
#define AMQP_CHECK_EVERY_MS 5000
#define AMQP_CHECK_TIMEOUT_MS 2000

static ess_port_check_t amqp_check = {.what = "the AMQP port of broker.url", .state = -1};
static char amqp_host[256];
static int amqp_port;

void ess_script_api_broker_start(ess_app_t *app)
{
    const ess_config_t *cfg = app->cfg;
    if (cfg->broker_version != 2)
        return;
    ess_url_t u;
    if (ess_url_parse(cfg->broker_url, &u) != ESS_OK)
        return; /* the gateway refused it already */
    snprintf(amqp_host, sizeof amqp_host, "%s", u.host);
    amqp_port = u.port;
    int v6 = strchr(u.host, ':') != NULL;
    ess_log_info("broker: version 2: streams connect to %s%s%s:%d (broker.stream_port); the port "
                 "of broker.url, %s%s%s:%d, serves AMQP 0-9-1 only (classic routes) and is "
                 "checked by /health/ready",
                 v6 ? "[" : "", u.host, v6 ? "]" : "", cfg->stream_port, v6 ? "[" : "", u.host,
                 v6 ? "]" : "", u.port);
    ess_url_free(&u);
    ess_port_check_start(app->loop, amqp_host, amqp_port, AMQP_CHECK_TIMEOUT_MS, &amqp_check);
}

/* 1 when the AMQP port of broker.url accepted a connection at the last
 * check (started again when older than AMQP_CHECK_EVERY_MS), else 0 with
 * the reason in why. */
static int amqp_port_ready(ess_app_t *app, char *why, size_t whylen)
{
    ess_port_check_t *st = &amqp_check;
    if (amqp_port == 0) {
        snprintf(why, whylen, "not checked");
        return 0;
    }
    if (!st->inflight && (st->state < 0 || uv_now(app->loop) - st->done_ms >= AMQP_CHECK_EVERY_MS))
        ess_port_check_start(app->loop, amqp_host, amqp_port, AMQP_CHECK_TIMEOUT_MS, st);
    if (st->state == 1)
        return 1;
    if (st->state < 0)
        snprintf(why, whylen, "checking %.280s", st->where);
    else
        snprintf(why, whylen, "nothing accepts connections at %.280s: %.160s", st->where,
                 st->error);
    return 0;
}

/* core.ready() -> ok, {registry = true, broker = bool, ...} */
static int l_ready(lua_State *L)
{
    ess_app_t *app = app_of(L);
    /* The registry is ready when it reads and its writes succeed (the last
     * write's outcome, or a probe write when that is older than 5 s). */
    char why[256] = "";
    int registry = app->registry != NULL && ess_registry_count(app->registry) >= 0 &&
                   ess_registry_writable(app->registry, why, sizeof why);
    int broker = app->broker_ready != NULL && app->broker_ready(app);
    char amqp_why[512] = "";
    int amqp = app->cfg->broker_version != 2 || amqp_port_ready(app, amqp_why, sizeof amqp_why);
    lua_pushboolean(L, registry && broker && amqp && !app->draining);
    lua_createtable(L, 0, 4);
    if (app->cfg->broker_version == 2) {
        if (amqp)
            lua_pushboolean(L, 1);
        else
            lua_pushstring(L, amqp_why);
        lua_setfield(L, -2, "amqp");
    }
    lua_pushboolean(L, registry);
    lua_setfield(L, -2, "registry");
    lua_pushboolean(L, broker);
    lua_setfield(L, -2, "broker");
    lua_pushboolean(L, !app->draining);
    lua_setfield(L, -2, "accepting");
    /* Messages still flow (unenriched) when the enrich hook fails, so this
     * is reported, not made a readiness failure. */
    if (ess_hooks_failing_streak >= 100)
        lua_pushfstring(
            L, "failing: the last %d messages raised errors; they are sent unenriched",
            (int)(ess_hooks_failing_streak > 1000000000 ? 1000000000 : ess_hooks_failing_streak));
    else
        lua_pushboolean(L, 1);
    lua_setfield(L, -2, "enrich");
    return 2;
}

/* core.reload() -> ok, result table */
static int l_reload(lua_State *L)
{
    ess_app_t *app = app_of(L);
    ess_reload_result_t r;
    int rc = ess_script_reload(app, "api", &r);
    lua_pushboolean(L, rc == ESS_OK);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, rc == ESS_OK ? "reloaded" : "rejected");
    lua_setfield(L, -2, "status");
    lua_pushnumber(L, (lua_Number)r.generation);
    lua_setfield(L, -2, "generation");
    if (rc != ESS_OK) {
        lua_pushstring(L, r.error);
        lua_setfield(L, -2, "error");
    }
    lua_newtable(L);
    for (int i = 0; i < r.nrestart; i++) {
        lua_pushstring(L, r.restart_required[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "restart_required");
    return 2;
}

int ess_script_api_init(ess_app_t *app, ess_vm_t *vm, const ess_config_t *cfg, char *err,
                        size_t errlen)
{
    lua_State *L = vm->L;
    if (ess_vm_require_fn(vm, cfg->lua_api, "handle", &vm->api_ref, err, errlen) != ESS_OK)
        return ESS_ESCRIPT;
    static const luaL_Reg fns[] = {
        {"registry_create", l_registry_create},
        {"registry_list", l_registry_list},
        {"registry_delete", l_registry_delete},
        {"metrics_text", l_metrics_text},
        {"ready", l_ready},
        {"reload", l_reload},
        {"log", ess_vm_lua_log},
        {NULL, NULL},
    };
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, app);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->cfg_ref);
    lua_setfield(L, -2, "config");
    lua_pushnumber(L, (lua_Number)vm->gen);
    lua_setfield(L, -2, "generation");
    lua_pushstring(L, ESS_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, "essd");
    lua_setfield(L, -2, "name");
    lua_pushfstring(L, "%s/ess/api/openapi.json", vm->lua_path);
    lua_setfield(L, -2, "openapi_path");
    /* The operator console's functions and the folder of its page (ui_path). */
    ess__script_console_core(L, app);
    lua_setfield(L, LUA_REGISTRYINDEX, CORE_KEY);
    return ESS_OK;
}

static void internal_error(ess_api_response_t *resp, const char *route)
{
    resp->status = 500;
    ess_buf_reset(&resp->body);
    ess_buf_reset(&resp->headers);
    ess_buf_append(&resp->body, "{\"detail\":\"Internal Server Error\"}", 34);
    snprintf(resp->content_type, sizeof resp->content_type, "application/json");
    snprintf(resp->route, sizeof resp->route, "%s", route);
}

/* Read the response table at the top of the stack. */
static int read_response(lua_State *L, ess_api_response_t *resp)
{
    if (!lua_istable(L, -1))
        return ESS_ESCRIPT;
    lua_getfield(L, -1, "status");
    int status = lua_isnumber(L, -1) ? (int)lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    if (status < 100 || status > 599)
        return ESS_ESCRIPT;
    resp->status = status;

    lua_getfield(L, -1, "body");
    size_t len = 0;
    const char *body = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
    ess_buf_append(&resp->body, body, len);
    lua_pop(L, 1);

    lua_getfield(L, -1, "content_type");
    const char *ct = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "application/json";
    snprintf(resp->content_type, sizeof resp->content_type, "%s", ct);
    lua_pop(L, 1);

    lua_getfield(L, -1, "route");
    const char *route = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unmatched";
    snprintf(resp->route, sizeof resp->route, "%s", route);
    lua_pop(L, 1);

    lua_getfield(L, -1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
                size_t nl, vl;
                const char *n = lua_tolstring(L, -2, &nl);
                const char *v = lua_tolstring(L, -1, &vl);
                /* A header name or value with CR, LF or NUL would split the response. */
                if (strcspn(n, "\r\n:") == nl && strcspn(v, "\r\n") == vl) {
                    ess_buf_append(&resp->headers, n, nl + 1);
                    ess_buf_append(&resp->headers, v, vl + 1);
                }
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return ESS_OK;
}

void ess_script_api_handle(ess_app_t *app, const ess_api_request_t *req, ess_api_response_t *resp)
{
    lua_State *L = app->vm->L;
    int top = lua_gettop(L);
    char err[4096];

    lua_rawgeti(L, LUA_REGISTRYINDEX, app->vm->api_ref);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, req->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, req->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, req->query ? req->query : "");
    lua_setfield(L, -2, "query");
    lua_pushlstring(L, req->body ? req->body : "", req->body_len);
    lua_setfield(L, -2, "body");
    lua_createtable(L, 0, (int)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        lua_pushstring(L, req->headers[i].value);
        lua_setfield(L, -2, req->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
    lua_getfield(L, LUA_REGISTRYINDEX, CORE_KEY);

    if (ess_vm_pcall(L, 2, 1, err, sizeof err) != ESS_OK) {
        ess_log_error("api: %s %s: handler error: %s", req->method, req->path, err);
        internal_error(resp, "error");
    } else if (read_response(L, resp) != ESS_OK) {
        ess_log_error("api: %s %s: handler returned an invalid response", req->method, req->path);
        internal_error(resp, "error");
    }
    lua_settop(L, top);
}
