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

/* A request waiting for the registry: the continuation the handler gave
 * (a reference in its VM), the route label of the deferred response, the
 * deadline, and who to tell. Freed when its timer has closed. */
struct ess_api_pending_s {
    ess_app_t *app;
    ess_vm_t *vm; /* the VM the continuation lives in */
    uint64_t gen; /* its generation: a freed VM's address may be reused */
    int kref;     /* LUA_NOREF until a registry call started */
    int is_delete;
    int finished; /* done called, or abandoned */
    uv_timer_t timer;
    int timer_on;
    ess_api_done_fn done;
    void *ud;
    char route[128];
    char method[16];
    char path[256];
};

/* The request whose handler is running (the loop runs one at a time). */
static ess_api_pending_t *current;

static void pending_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void pending_free(ess_api_pending_t *p)
{
    if (p->kref != LUA_NOREF && p->vm == p->app->vm && p->gen == p->app->vm->gen)
        luaL_unref(p->vm->L, LUA_REGISTRYINDEX, p->kref);
    p->kref = LUA_NOREF;
    if (p->timer_on) {
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, pending_free_cb);
    } else {
        free(p);
    }
}

/* The status a pending request is finished with when its deadline passes. */
#define ESS_ETIMEDOUT_API (-1000)

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

static void on_registry_done(void *ud, int status, const ess_es_row_t *row);

/* With an asynchronous registry: keep the continuation at index k, start
 * the call through start(), and return the deferred marker { deferred =
 * true } for the handler to return. Without a request to defer (or a
 * second call in one request): nil, err. */
static int defer(lua_State *L, int k, int is_delete, int (*start)(ess_app_t *, void *, void *),
                 void *arg)
{
    ess_app_t *app = app_of(L);
    if (!lua_isfunction(L, k)) {
        lua_pushnil(L);
        lua_pushstring(L, "the stream registry answers later: pass a continuation function");
        return 2;
    }
    if (current == NULL || current->kref != LUA_NOREF) {
        lua_pushnil(L);
        lua_pushstring(L, "one registry write per request, from an API handler");
        return 2;
    }
    int rc = start(app, arg, current);
    if (rc == ESS_ENOTFOUND && is_delete) {
        lua_pushboolean(L, 0); /* known not to exist without asking the broker */
        return 1;
    }
    if (rc != ESS_OK) {
        lua_pushnil(L);
        lua_pushstring(L,
                       rc == ESS_ECONN ? "the registry stream is unavailable" : ess_strerror(rc));
        return 2;
    }
    lua_pushvalue(L, k);
    current->kref = luaL_ref(L, LUA_REGISTRYINDEX);
    current->is_delete = is_delete;
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "deferred");
    return 1;
}

typedef struct {
    const char *rk;
    size_t len;
} create_arg_t;

static int start_create(ess_app_t *app, void *arg, void *ud)
{
    create_arg_t *a = arg;
    return ess_registry_create_async(app->registry, a->rk, a->len, on_registry_done, ud);
}

static int start_delete(ess_app_t *app, void *arg, void *ud)
{
    return ess_registry_delete_async(app->registry, *(int64_t *)arg, on_registry_done, ud);
}

/* core.registry_create(routing_key [, k]) -> row | nil, err; with the
 * stream backend -> the deferred marker, and k(row | nil, err) later. */
static int l_registry_create(lua_State *L)
{
    ess_app_t *app = app_of(L);
    size_t len;
    const char *rk = luaL_checklstring(L, 1, &len);
    if (ess_registry_is_async(app->registry)) {
        create_arg_t a = {rk, len};
        if (!ess_routing_key_valid(rk, len)) {
            lua_pushnil(L);
            lua_pushstring(L, ess_strerror(ESS_EINVAL));
            return 2;
        }
        return defer(L, 2, 0, start_create, &a);
    }
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

/* core.registry_delete(id [, k]) -> true | false | nil, err; closes live
 * sockets. With the stream backend -> the deferred marker, and k(true |
 * false | nil, err) later. */
static int l_registry_delete(lua_State *L)
{
    ess_app_t *app = app_of(L);
    lua_Number n = luaL_checknumber(L, 1);
    if (ess_registry_is_async(app->registry)) {
        int64_t id = (int64_t)n;
        return defer(L, 2, 1, start_delete, &id);
    }
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
    /* With broker.stream_hosts (a cluster) the stream client moves to
     * another node when the URL's node is lost; its AMQP port (classic
     * routes only) is then reported, not required. */
    int amqp_needed = app->cfg->stream_hosts == NULL || app->cfg->stream_hosts[0] == '\0';
    lua_pushboolean(L, registry && broker && (amqp || !amqp_needed) && !app->draining);
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

/* Build the request table and call the API handler; the response table
 * (or the handler's error) is read into resp. Returns 1 when the handler
 * returned the deferred marker of a started registry call. */
static int run_handler(ess_app_t *app, const ess_api_request_t *req, ess_api_response_t *resp,
                       ess_api_pending_t *p)
{
    lua_State *L = app->vm->L;
    int top = lua_gettop(L);
    char err[4096];
    int deferred = 0;

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

    ess_api_pending_t *outer = current;
    current = p;
    int rc = ess_vm_pcall(L, 2, 1, err, sizeof err);
    current = outer;
    if (rc != ESS_OK) {
        ess_log_error("api: %s %s: handler error: %s", req->method, req->path, err);
        internal_error(resp, "error");
    } else {
        if (p != NULL && p->kref != LUA_NOREF && lua_istable(L, -1)) {
            lua_getfield(L, -1, "deferred");
            deferred = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, -1, "route");
            snprintf(p->route, sizeof p->route, "%s",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unmatched");
            lua_pop(L, 1);
        }
        if (!deferred && read_response(L, resp) != ESS_OK) {
            ess_log_error("api: %s %s: handler returned an invalid response", req->method,
                          req->path);
            internal_error(resp, "error");
        }
    }
    lua_settop(L, top);
    return deferred;
}

void ess_script_api_handle(ess_app_t *app, const ess_api_request_t *req, ess_api_response_t *resp)
{
    run_handler(app, req, resp, NULL);
}

static void finish_pending(ess_api_pending_t *p, int status, const ess_es_row_t *row)
{
    ess_app_t *app = p->app;
    ess_api_response_t resp = {0};
    p->finished = 1;
    ess_registry_forget(app->registry, p);
    if (p->vm != app->vm || p->gen != app->vm->gen) {
        /* The scripts were reloaded meanwhile: the continuation is gone. */
        resp.status = 503;
        ess_buf_appendf(&resp.body, "{\"detail\":\"The scripts were reloaded while the request "
                                    "waited for the registry; retry\"}");
        snprintf(resp.content_type, sizeof resp.content_type, "application/json");
        snprintf(resp.route, sizeof resp.route, "%s", p->route);
    } else {
        lua_State *L = p->vm->L;
        int top = lua_gettop(L);
        char err[4096];
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->kref);
        int nargs = 1;
        if (status == ESS_OK && !p->is_delete) {
            push_row(L, row);
        } else if (status == ESS_OK || (status == ESS_ENOTFOUND && p->is_delete)) {
            lua_pushboolean(L, status == ESS_OK);
        } else {
            lua_pushnil(L);
            lua_pushstring(L, status == ESS_ETIMEDOUT_API
                                  ? "no answer from the registry stream in registry.timeout_ms"
                              : status == ESS_ECONN ? "the registry stream is unavailable"
                                                    : ess_strerror(status));
            nargs = 2;
        }
        if (ess_vm_pcall(L, nargs, 1, err, sizeof err) != ESS_OK) {
            ess_log_error("api: %s %s: handler error: %s", p->method, p->path, err);
            internal_error(&resp, "error");
        } else if (read_response(L, &resp) != ESS_OK) {
            ess_log_error("api: %s %s: handler returned an invalid response", p->method, p->path);
            internal_error(&resp, "error");
        }
        if (strcmp(resp.route, "unmatched") == 0)
            snprintf(resp.route, sizeof resp.route, "%s", p->route);
        lua_settop(L, top);
    }
    p->done(p->ud, &resp);
    ess_buf_free(&resp.body);
    ess_buf_free(&resp.headers);
    pending_free(p);
}

static void on_registry_done(void *ud, int status, const ess_es_row_t *row)
{
    ess_api_pending_t *p = ud;
    if (!p->finished)
        finish_pending(p, status, row);
}

static void on_deadline(uv_timer_t *t)
{
    ess_api_pending_t *p = t->data;
    if (!p->finished)
        finish_pending(p, ESS_ETIMEDOUT_API, NULL);
}

ess_api_pending_t *ess_script_api_start(ess_app_t *app, const ess_api_request_t *req,
                                        ess_api_response_t *resp, ess_api_done_fn done, void *ud)
{
    if (app->registry == NULL || !ess_registry_is_async(app->registry)) {
        run_handler(app, req, resp, NULL);
        return NULL;
    }
    ess_api_pending_t *p = ess_xcalloc(1, sizeof *p);
    p->app = app;
    p->vm = app->vm;
    p->gen = app->vm->gen;
    p->kref = LUA_NOREF;
    p->done = done;
    p->ud = ud;
    snprintf(p->method, sizeof p->method, "%s", req->method);
    snprintf(p->path, sizeof p->path, "%s", req->path);
    if (run_handler(app, req, resp, p)) {
        uv_timer_init(app->loop, &p->timer);
        p->timer.data = p;
        p->timer_on = 1;
        uv_timer_start(&p->timer, on_deadline, (uint64_t)app->cfg->registry_timeout_ms, 0);
        return p;
    }
    /* A registry call started but the handler did not wait for it. */
    ess_registry_forget(app->registry, p);
    pending_free(p);
    return NULL;
}

void ess_script_api_abandon(ess_api_pending_t *p)
{
    if (p == NULL || p->finished)
        return;
    p->finished = 1;
    ess_registry_forget(p->app->registry, p);
    pending_free(p);
}
