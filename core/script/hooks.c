/*
 * C side of the enrich and route hooks. The hot path (enrich) reuses one
 * msg table per VM and one es table per session, so a message costs no
 * Lua table allocation unless the script reads msg.properties, which is
 * built lazily from the raw AMQP application-properties. Owns nothing
 * beyond the Lua references it keeps in the VM's registry.
 */
#include "script/hooks.h"
#include "script/vm.h"
#include "ess.h"
#include "metrics/metrics.h"
#include "mq/amqp10.h"
#include "script/protobuf_lua.h"
#include "util/json.h"
#include "util/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#define ENRICH_KEY "ess.hook.enrich"
#define ROUTE_KEY "ess.hook.route"
#define MSG_KEY "ess.hook.msg"

/* Registry keys (their addresses) of each hook's validated conf table, the
 * third argument of every call: a light userdata lookup, no key hashing. */
static char enrich_conf_key, route_conf_key;

/* Enrich calls in a row that raised: /health/ready reports a hook that
 * fails on every message. Reset by any success and by a reload. */
uint64_t ess_hooks_failing_streak;

/* The message whose properties may be asked for, during one enrich call. */
static const ess_hook_msg_t *current_msg;

/* Fields of the reused msg table of VM extras_L that may hold a value from
 * an earlier message and must be cleared (set to nil) before the next one.
 * Skipping the clearing when nothing was set saves three lua_setfield calls
 * a message; another VM (a reload) starts with everything marked dirty. */
#define EXTRA_PROPS 1u
#define EXTRA_PROTOBUF 2u
static const lua_State *extras_L;
static unsigned extras_set = EXTRA_PROPS | EXTRA_PROTOBUF;

static int push_value(void *ud, const char *key, size_t klen, const ess_amqp10_value_t *v)
{
    lua_State *L = ud;
    lua_pushlstring(L, key, klen);
    switch (v->type) {
    case ESS_AMQP10_BOOL: lua_pushboolean(L, v->b); break;
    case ESS_AMQP10_INT:
    case ESS_AMQP10_TIMESTAMP: lua_pushnumber(L, (lua_Number)v->i); break;
    case ESS_AMQP10_UINT: lua_pushnumber(L, (lua_Number)v->u); break;
    case ESS_AMQP10_DOUBLE: lua_pushnumber(L, v->d); break;
    case ESS_AMQP10_NULL: lua_pushboolean(L, 0); break;
    default: lua_pushlstring(L, (const char *)v->s, v->len); break;
    }
    lua_rawset(L, -3);
    return 0;
}

/* msg.__index: builds msg.properties on first use within a call. */
static int msg_index(lua_State *L)
{
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    if (k == NULL || n != 10 || memcmp(k, "properties", 10) != 0 || current_msg == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    if (current_msg->app_props)
        ess_amqp10_props_each(current_msg->app_props, current_msg->app_props_len, push_value, L);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "properties");
    extras_set |= EXTRA_PROPS;
    return 1;
}

/* msg.__newindex: a script that stores a new field (properties, raw, ...)
 * in the reused msg table makes every optional field dirty again. */
static int msg_newindex(lua_State *L)
{
    lua_settop(L, 3);
    if (!lua_isnil(L, 3))
        extras_set = EXTRA_PROPS | EXTRA_PROTOBUF; /* dirty is always safe */
    lua_rawset(L, 1);
    return 0;
}

/***
 * Add to a counter of the script's own, exported on `/metrics` as
 * `ess_script_<name>_total`. Cheap: fine on the per-message path.
 * @function ess.count
 * @tparam string name the counter's name (letters, digits, `_`)
 * @tparam[opt=1] number by how much to add; 0 or less is ignored
 * @when any time: at module load, in enrich and in route.
 * @usage ess.count("filter_skipped")
 */
static int host_count(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_Number by = luaL_optnumber(L, 2, 1);
    char metric[160];
    snprintf(metric, sizeof metric, "ess_script_%s_total", name);
    if (by > 0)
        ess_metrics_add(metric, "", (uint64_t)by);
    return 0;
}

/***
 * Strict JSON check in C that builds no table: whether `s` is exactly one
 * JSON object (white space around it allowed).
 * @function ess.json_object
 * @tparam string s the text to check (for example `msg.body`)
 * @treturn number the index of the object's closing `}` (1-based)
 * @treturn boolean whether the object is empty
 * @return `nil` and a reason (`"... at byte N"`) when `s` is not one JSON object
 * @when any time: at module load, in enrich and in route.
 * @usage
 * local close, empty = ess.json_object(msg.body)
 * if not close then return msg.body end -- not JSON: forward unchanged
 */
static int host_json_object(lua_State *L)
{
    size_t len, close, at;
    int empty;
    const char *why;
    const char *s = luaL_checklstring(L, 1, &len);
    if (ess_json_object(s, len, &close, &empty, &why, &at) != ESS_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s at byte %d", why, (int)at);
        return 2;
    }
    lua_pushnumber(L, (lua_Number)close + 1);
    lua_pushboolean(L, empty);
    return 2;
}

/***
 * The default enrichment in one C pass and one result string: when `s` is
 * exactly one JSON object, `s` with `first` (if the object is empty) or
 * `more`, then `a`, `mid`, `b` inserted before its closing `}`; numbers are
 * printed exactly (as integers when integral).
 * @function ess.json_splice
 * @tparam string s a JSON object
 * @tparam number a the first number (the default hook: `msg.offset`)
 * @tparam number b the second number (the default hook: `msg.timestamp`)
 * @tparam string first the text before `a` in an empty object
 * @tparam string more the text before `a` otherwise
 * @tparam string mid the text between `a` and `b`
 * @treturn string the spliced object
 * @return `nil` and a reason, as `ess.json_object`
 * @when any time: at module load, in enrich and in route.
 * @usage
 * local out = ess.json_splice(msg.body, msg.offset, msg.timestamp,
 *     '"ess_offset":', ',"ess_offset":', ',"ess_timestamp":')
 */
static int host_json_splice(lua_State *L)
{
    static ess_buf_t scratch; /* the loop thread's; reused across calls */
    size_t len, at;
    const char *why;
    const char *s = luaL_checklstring(L, 1, &len);
    double a = luaL_checknumber(L, 2), b = luaL_checknumber(L, 3);
    const char *first = luaL_checkstring(L, 4), *more = luaL_checkstring(L, 5);
    const char *mid = luaL_checkstring(L, 6);
    scratch.len = 0;
    if (ess_json_splice(s, len, first, more, mid, a, b, &scratch, &why, &at) != ESS_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s at byte %d", why, (int)at);
        return 2;
    }
    lua_pushlstring(L, scratch.data, scratch.len);
    if (scratch.cap > 1u << 20)
        ess_buf_free(&scratch); /* keep no huge buffer after a huge message */
    return 1;
}

/* Check the options cfg.lua.<opt> against the schema the hook module at
 * index mod declares (ess.options) and keep the conf under key. */
static int load_conf(ess_vm_t *vm, const char *module, int mod, const char *opt, void *key,
                     char *err, size_t errlen)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "ess.options");
    if (ess_vm_pcall(L, 1, 1, err, errlen) != ESS_OK)
        return ESS_ESCRIPT;
    lua_getfield(L, -1, "validate");
    lua_pushstring(L, module);
    lua_pushliteral(L, "schema");
    lua_rawget(L, mod); /* unprotected here: no metamethod may run */
    lua_pushnil(L);
    if (vm->cfg_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->cfg_ref);
        lua_getfield(L, -1, "lua");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, opt);
            lua_replace(L, -4);
        }
        lua_pop(L, 2);
    }
    lua_pushfstring(L, "lua.%s", opt);
    if (ess_vm_pcall(L, 4, 2, err, errlen) != ESS_OK) {
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    if (!lua_istable(L, -2)) {
        snprintf(err, errlen, "%s",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "ess.options: no conf returned");
        lua_settop(L, top);
        return ESS_EINVAL;
    }
    lua_pushlightuserdata(L, key);
    lua_pushvalue(L, -3);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return ESS_OK;
}

/* Push the conf table kept under key (an empty table before any load). */
static void push_conf(lua_State *L, void *key)
{
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
}

/* Load module through ess.sandbox (text only, allow-listed globals, `ess`
 * as the host table at the top of the stack), keep its field fn under key
 * and its validated options (cfg.lua.<opt>) under conf_key. */
static int load_hook(ess_vm_t *vm, const char *module, const char *field, const char *key,
                     const char *opt, void *conf_key, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "ess.sandbox");
    if (ess_vm_pcall(L, 1, 1, err, errlen) != ESS_OK)
        return ESS_ESCRIPT;
    lua_getfield(L, -1, "load");
    lua_pushstring(L, module);
    lua_pushstring(L, vm->lua_path);
    lua_getglobal(L, "ess");
    if (ess_vm_pcall(L, 3, 2, err, errlen) != ESS_OK) {
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    if (!lua_istable(L, -2)) {
        snprintf(err, errlen, "%s: %s", module,
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "did not return a table");
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    lua_getfield(L, -2, field);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "%s: field %s is not a function", module, field);
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, key);
    if (strcmp(field, "enrich") == 0) {
        /* per_stream = false: the result does not depend on es, so one
         * call serves every session of a shared subscription. */
        lua_pushliteral(L, "per_stream");
        lua_rawget(L, -3);
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
            snprintf(err, errlen, "%s: field per_stream is a %s, not a boolean", module,
                     luaL_typename(L, -1));
            lua_settop(L, top);
            return ESS_ESCRIPT;
        }
        vm->enrich_shared = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    int rc = load_conf(vm, module, lua_gettop(L) - 1, opt, conf_key, err, errlen);
    lua_settop(L, top);
    return rc;
}

/***
 * The enrichment hook (`lua.enrich`): runs for every message read from a
 * stream, just before it is sent to the WebSocket client (classic mode has
 * no offsets or timestamps and sends bodies unchanged, without the hook). A
 * hook error never loses a message: the original body is sent, the error
 * logged and counted. A module that sets `per_stream = false` declares that
 * the result does not depend on `es`: live connections of one broker stream
 * then share one call (and one frame) per message.
 * @hook enrich
 * @tparam table msg the message (see `msg`); reused for every message
 * @tparam table es the event stream (see `es`)
 * @tparam table conf the hook's options (see `conf`)
 * @treturn string the frame to send (text stays text)
 * @return `nil` to skip the message; anything else, or an error, sends the
 * original body unchanged
 * @when by the gateway, once per stream message, after the reload
 * self-test has called it on two sample messages.
 * @usage
 * return {
 *     enrich = function(msg, es, conf)
 *         return msg.body
 *     end,
 * }
 */

/***
 * The routing hook (`lua.route`): chooses the broker source of an event
 * stream when a client connects. An error or an invalid route closes the
 * client's WebSocket with 1011.
 * @hook route
 * @tparam table es the event stream (see `es`)
 * @tparam table cfg the validated configuration (`cfg.broker.version`, ...;
 * see [configuration.md](configuration.md)); read-only
 * @tparam table conf the hook's options (see `conf`)
 * @treturn table `{ mode = "stream", stream = name }` or
 * `{ mode = "classic", exchange = x, routing_key = k }` (non-empty strings
 * shorter than 256 bytes)
 * @when by the gateway, once per connection, and by the reload self-test.
 * @usage
 * return {
 *     route = function(es, cfg, conf)
 *         return { mode = "stream", stream = es.routing_key }
 *     end,
 * }
 */

/***
 * The message handed to enrich. One table per VM, reused for every
 * message: the host overwrites its fields before each call, so copy what
 * you need instead of keeping `msg` or `msg.properties`.
 * @table msg
 * @tfield string body the message body as published; for a protobuf message
 * of a known type, its one-line text form (`raw` holds the bytes). A hook may
 * assign it before handing `msg` to another hook
 * @tfield number offset the stream offset (exact up to 2^53)
 * @tfield number timestamp the broker's timestamp, milliseconds since 1970
 * @tfield boolean is_text the body is valid UTF-8 (false: binary)
 * @tfield table properties the AMQP application properties: string keys;
 * numbers, strings or booleans (AMQP null reads as `false`). Decoded when
 * first read in a call: the one per-message allocation the host makes
 * @tfield string|nil raw a protobuf message's original bytes (for
 * `ess.protobuf.decode`); `nil` for other messages
 * @tfield string|nil protobuf_type a protobuf message's type as the record
 * names it (application property `message_type`, `x-basic-type` or the
 * subject); `nil` for other messages
 * @when read it during the enrich call that received it.
 * @usage
 * local t = msg.properties.message_type
 * if msg.protobuf_type then
 *     local m = ess.protobuf.decode(msg.protobuf_type, msg.raw)
 * end
 */

/***
 * The event stream a message belongs to. Cached per connection and VM: the
 * same table for every message of one connection. Read-only. For a hook
 * with `per_stream = false`, the event stream of the connection that opened
 * the shared subscription.
 * @table es
 * @tfield number id the registry id
 * @tfield string uuid the public id in the WebSocket URL
 * @tfield string routing_key the routing key it was created with
 * @when in enrich and route.
 * @usage ess.log("info", "route " .. es.uuid .. " -> " .. es.routing_key)
 */

/***
 * A hook's options: `lua.enrich_options` or `lua.route_options`, checked
 * against the `schema` the hook module declares (see ess.options), with
 * defaults filled in. One table per VM (a reload builds a new one); an
 * empty table when the module declares no schema. Read-only.
 * @table conf
 * @when the third argument of enrich and route; two-argument hooks ignore it.
 * @usage
 * -- lua/acme/tag.lua, with lua.enrich_options: { tag: "eu" }
 * return {
 *     schema = { { name = "tag", type = "string", default = "none" } },
 *     enrich = function(msg, es, conf) return msg.body .. "|" .. conf.tag end,
 * }
 */

/***
 * Write a line to the gateway log as `lua: <message>`. Keep it off the
 * per-message path, or rate-limit it (the default hook logs the first 10
 * errors, then every 1,000th).
 * @function ess.log
 * @tparam string level `"debug"`, `"info"`, `"warn"` or `"error"` (anything
 * else logs at info)
 * @tparam string message the text
 * @when any time: at module load, in enrich and in route. `print(...)` is
 * `ess.log("info", ...)` with the arguments joined by tabs.
 * @usage ess.log("warn", "enrich: no message_type in " .. es.uuid)
 */

/***
 * The protobuf functions: `ess.protobuf.decode` and `ess.protobuf.text`.
 * @table ess.protobuf
 * @tfield function decode see `ess.protobuf.decode`
 * @tfield function text see `ess.protobuf.text`
 * @when any time.
 * @usage local pb = ess.protobuf
 */
int ess_hooks_init(ess_vm_t *vm, const char *enrich_module, const char *route_module, char *err,
                   size_t errlen)
{
    lua_State *L = vm->L;
    lua_newtable(L);
    lua_pushcfunction(L, ess_vm_lua_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, host_count);
    lua_setfield(L, -2, "count");
    lua_pushcfunction(L, host_json_object);
    lua_setfield(L, -2, "json_object");
    lua_pushcfunction(L, host_json_splice);
    lua_setfield(L, -2, "json_splice");
    ess_protobuf_lua_open(L);
    lua_setfield(L, -2, "protobuf");
    lua_setglobal(L, "ess");

    int rc;
    if ((rc = load_hook(vm, enrich_module, "enrich", ENRICH_KEY, "enrich_options", &enrich_conf_key,
                        err, errlen)) != ESS_OK ||
        (rc = load_hook(vm, route_module, "route", ROUTE_KEY, "route_options", &route_conf_key, err,
                        errlen)) != ESS_OK)
        return rc;

    lua_newtable(L);
    lua_newtable(L);
    lua_pushcfunction(L, msg_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, msg_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, MSG_KEY);
    /* Integer references for the per-message path (no key hashing). */
    lua_getfield(L, LUA_REGISTRYINDEX, MSG_KEY);
    vm->msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, LUA_REGISTRYINDEX, ENRICH_KEY);
    vm->enrich_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return ESS_OK;
}

static void push_es(lua_State *L, ess_vm_t *vm, ess_hook_es_t *es)
{
    if (es->gen == vm->gen && es->ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, es->ref);
        return;
    }
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)es->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, es->uuid);
    lua_setfield(L, -2, "uuid");
    lua_pushstring(L, es->routing_key);
    lua_setfield(L, -2, "routing_key");
    lua_pushvalue(L, -1);
    es->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    es->gen = vm->gen;
}

void ess_hooks_es_release(ess_vm_t *vm, ess_hook_es_t *es)
{
    /* A reference into a VM that has since been replaced dies with it. */
    if (vm != NULL && es->gen == vm->gen && es->ref != LUA_NOREF)
        luaL_unref(vm->L, LUA_REGISTRYINDEX, es->ref);
    es->ref = LUA_NOREF;
    es->gen = 0;
}

int ess_hooks_enrich(ess_vm_t *vm, ess_hook_es_t *es, const ess_hook_msg_t *m,
                     ess_hook_emit_fn emit, void *ud)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->enrich_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->msg_ref);
    lua_pushlstring(L, (const char *)m->body, m->len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, (lua_Number)m->offset);
    lua_setfield(L, -2, "offset");
    lua_pushnumber(L, (lua_Number)m->timestamp_ms);
    lua_setfield(L, -2, "timestamp");
    lua_pushboolean(L, m->is_text);
    lua_setfield(L, -2, "is_text");
    if (extras_L != L) {
        extras_L = L;
        extras_set = EXTRA_PROPS | EXTRA_PROTOBUF;
    }
    if (extras_set & EXTRA_PROPS) {
        lua_pushnil(L);
        lua_setfield(L, -2, "properties");
        extras_set &= ~EXTRA_PROPS;
    }
    if (m->protobuf_type) {
        lua_pushlstring(L, (const char *)m->raw, m->raw_len);
        lua_setfield(L, -2, "raw");
        lua_pushlstring(L, m->protobuf_type, m->protobuf_type_len);
        lua_setfield(L, -2, "protobuf_type");
        extras_set |= EXTRA_PROTOBUF;
    } else if (extras_set & EXTRA_PROTOBUF) {
        lua_pushnil(L);
        lua_setfield(L, -2, "raw");
        lua_pushnil(L);
        lua_setfield(L, -2, "protobuf_type");
        extras_set &= ~EXTRA_PROTOBUF;
    }
    push_es(L, vm, es);
    push_conf(L, &enrich_conf_key);

    current_msg = m;
    char err[2048];
    int rc = ess_vm_pcall(L, 3, 1, err, sizeof err);
    current_msg = NULL;
    if (rc != ESS_OK) {
        ess_metrics.enrich_errors++;
        ess_hooks_failing_streak++;
        /* One line per error would flood the log at thousands of messages a second. */
        if (ess_metrics.enrich_errors <= 10 || ess_metrics.enrich_errors % 1000 == 0)
            ess_log_error("enrich: offset %llu of %s: %s (error %llu; forwarded unenriched)",
                          (unsigned long long)m->offset, es->uuid, err,
                          (unsigned long long)ess_metrics.enrich_errors);
        emit(ud, m, m->body, m->len);
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    ess_hooks_failing_streak = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        emit(ud, m, (const uint8_t *)s, n);
    } else if (!lua_isnil(L, -1)) {
        ess_metrics.enrich_errors++;
        if (ess_metrics.enrich_errors <= 10)
            ess_log_error("enrich: returned a %s, not a string or nil; forwarded unenriched",
                          luaL_typename(L, -1));
        emit(ud, m, m->body, m->len);
        rc = ESS_ESCRIPT;
    }
    lua_settop(L, top);
    return rc;
}

static int copy_field(lua_State *L, const char *name, char *dst, size_t cap)
{
    lua_getfield(L, -1, name);
    size_t n = 0;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    int ok = s != NULL && n > 0 && n < cap;
    if (ok) {
        memcpy(dst, s, n);
        dst[n] = '\0';
    }
    lua_pop(L, 1);
    return ok;
}

int ess_hooks_route(ess_vm_t *vm, ess_hook_es_t *es, ess_route_t *out)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    memset(out, 0, sizeof *out);
    lua_getfield(L, LUA_REGISTRYINDEX, ROUTE_KEY);
    push_es(L, vm, es);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->cfg_ref);
    push_conf(L, &route_conf_key);
    char err[2048];
    if (ess_vm_pcall(L, 3, 1, err, sizeof err) != ESS_OK) {
        ess_log_error("route: %s: %s", es->uuid, err);
        ess_metrics_add("ess_hook_errors_total", "hook=\"route\"", 1);
        lua_settop(L, top);
        return ESS_ESCRIPT;
    }
    int rc = ESS_ESCRIPT;
    if (lua_istable(L, -1)) {
        char mode[16] = "";
        copy_field(L, "mode", mode, sizeof mode);
        if (strcmp(mode, "stream") == 0 &&
            copy_field(L, "stream", out->stream, sizeof out->stream)) {
            rc = ESS_OK;
        } else if (strcmp(mode, "classic") == 0 &&
                   copy_field(L, "exchange", out->exchange, sizeof out->exchange) &&
                   copy_field(L, "routing_key", out->routing_key, sizeof out->routing_key)) {
            out->classic = 1;
            rc = ESS_OK;
        }
    }
    if (rc != ESS_OK) {
        ess_log_error("route: %s: the hook returned no valid route", es->uuid);
        ess_metrics_add("ess_hook_errors_total", "hook=\"route\"", 1);
    }
    lua_settop(L, top);
    return rc;
}

int ess_hooks_selftest(ess_vm_t *vm, char *err, size_t errlen)
{
    static const char *bodies[] = {
        "{\"message_type\":\"MerchantProcessingCharge\",\"ess_selftest\":true}",
        "accountserver.MerchantProcessingCharge|timestamp: \"2025-04-30T13:33:00Z\"",
    };
    ess_hook_es_t es = {
        .id = 1, .uuid = "selftest00000000000000", .routing_key = "selftest", .ref = LUA_NOREF};
    ess_route_t route;
    int rc = ESS_OK;
    uint64_t errors = ess_metrics.enrich_errors;
    for (size_t i = 0; i < ESS_ARRAY_SIZE(bodies) && rc == ESS_OK; i++) {
        ess_hook_msg_t m = {.body = (const uint8_t *)bodies[i],
                            .len = strlen(bodies[i]),
                            .offset = 42,
                            .timestamp_ms = 1746019980000,
                            .is_text = 1};
        lua_State *L = vm->L;
        /* Call the hook directly so the error text reaches the caller. */
        lua_getfield(L, LUA_REGISTRYINDEX, ENRICH_KEY);
        lua_getfield(L, LUA_REGISTRYINDEX, MSG_KEY);
        lua_pushlstring(L, (const char *)m.body, m.len);
        lua_setfield(L, -2, "body");
        lua_pushnumber(L, 42);
        lua_setfield(L, -2, "offset");
        lua_pushnumber(L, 1746019980000.0);
        lua_setfield(L, -2, "timestamp");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "is_text");
        lua_pushnil(L);
        lua_setfield(L, -2, "properties");
        push_es(L, vm, &es);
        push_conf(L, &enrich_conf_key);
        current_msg = &m;
        if (ess_vm_pcall(L, 3, 1, err, errlen) != ESS_OK) {
            rc = ESS_ESCRIPT;
        } else {
            if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
                snprintf(err, errlen,
                         "enrich returned a %s for a sample message (want a string or nil)",
                         luaL_typename(L, -1));
                rc = ESS_ESCRIPT;
            }
            lua_pop(L, 1);
        }
        current_msg = NULL;
    }
    ess_metrics.enrich_errors = errors;
    if (rc == ESS_OK && ess_hooks_route(vm, &es, &route) != ESS_OK) {
        snprintf(err, errlen, "route returned no valid route for a sample event stream");
        rc = ESS_ESCRIPT;
    }
    ess_hooks_es_release(vm, &es);
    return rc;
}
