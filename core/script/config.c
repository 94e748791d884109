/*
 * Hand-off of the validated configuration table (lua/ess/config.lua) to
 * the C struct. Validation is Lua's job; this file only refuses a table
 * that lacks a field C needs, so a schema change cannot silently leave a
 * C setting at zero.
 */
#include "config.h"
#include "ess.h"
#include "mq/stream_client.h"
#include "mq/url.h"
#include "util/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

typedef struct {
    lua_State *L;
    int idx;
    char *err;
    size_t errlen;
    int failed;
} reader_t;

/* Push the value at a dotted path below the config table, or nil. */
static void push_path(reader_t *r, const char *path)
{
    lua_State *L = r->L;
    lua_pushvalue(L, r->idx);
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        p += n + (dot ? 1 : 0);
    }
}

static void missing(reader_t *r, const char *path, const char *want)
{
    if (!r->failed)
        snprintf(r->err, r->errlen, "config: %s: expected %s from ess.config", path, want);
    r->failed = 1;
}

static char *str(reader_t *r, const char *path)
{
    push_path(r, path);
    char *s = NULL;
    if (lua_type(r->L, -1) == LUA_TSTRING)
        s = ess_xstrdup(lua_tostring(r->L, -1));
    else
        missing(r, path, "a string");
    lua_pop(r->L, 1);
    return s;
}

static int64_t num(reader_t *r, const char *path)
{
    push_path(r, path);
    int64_t v = 0;
    if (lua_type(r->L, -1) == LUA_TNUMBER)
        v = (int64_t)lua_tonumber(r->L, -1);
    else
        missing(r, path, "a number");
    lua_pop(r->L, 1);
    return v;
}

static int flag(reader_t *r, const char *path)
{
    push_path(r, path);
    int v = 0;
    if (lua_type(r->L, -1) == LUA_TBOOLEAN)
        v = lua_toboolean(r->L, -1);
    else
        missing(r, path, "a boolean");
    lua_pop(r->L, 1);
    return v;
}

/* A list of strings, joined with commas (the stream client's format). */
static char *str_list(reader_t *r, const char *path)
{
    push_path(r, path);
    if (!lua_istable(r->L, -1)) {
        lua_pop(r->L, 1);
        missing(r, path, "a list");
        return NULL;
    }
    size_t len = 0, n = lua_objlen(r->L, -1);
    char *out = ess_xstrdup("");
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(r->L, -1, (int)i);
        size_t l;
        const char *v = lua_tolstring(r->L, -1, &l);
        if (v != NULL) {
            out = ess_xrealloc(out, len + l + 2);
            if (len)
                out[len++] = ',';
            memcpy(out + len, v, l);
            len += l;
            out[len] = '\0';
        }
        lua_pop(r->L, 1);
    }
    lua_pop(r->L, 1);
    return out;
}

static void listen_at(reader_t *r, const char *path, ess_listen_t *out)
{
    char *s = str(r, path);
    if (s && ess_listen_parse(s, out) != ESS_OK && !r->failed) {
        snprintf(r->err, r->errlen, "config: %s: expected host:port, got \"%s\"", path, s);
        r->failed = 1;
    }
    free(s);
}

int ess__config_from_table(lua_State *L, int idx, ess_config_t *c, char *err, size_t errlen)
{
    reader_t r = {L, idx, err, errlen, 0};
    listen_at(&r, "public.listen", &c->public_listen);
    c->max_connections = (int)num(&r, "public.max_connections");
    c->max_header_bytes = (int)num(&r, "public.max_header_bytes");
    c->max_frame_bytes = (int)num(&r, "public.max_frame_bytes");
    c->ping_interval_s = (int)num(&r, "public.ping_interval_s");
    c->outbound_budget_bytes = num(&r, "public.outbound_budget_bytes");
    c->stall_timeout_s = (int)num(&r, "public.stall_timeout_s");
    c->compression = flag(&r, "public.compression");
    listen_at(&r, "internal.listen", &c->internal_listen);
    c->max_body_bytes = num(&r, "internal.max_body_bytes");
    c->api_token = str(&r, "internal.api_token");
    c->ingress_location = str(&r, "ingress.location");
    c->ingress_secure = flag(&r, "ingress.secure");
    c->broker_url = str(&r, "broker.url");
    if (c->broker_url && !r.failed) {
        /* The same parser the broker clients use, so --check-config
         * refuses exactly what a start would. */
        ess_url_t u;
        if (ess_url_parse(c->broker_url, &u) != ESS_OK) {
            snprintf(err, errlen,
                     "config: broker.url: not a valid amqp://user:pass@host:port/vhost URL");
            r.failed = 1;
        } else {
            ess_url_free(&u);
        }
    }
    c->stream_port = (int)num(&r, "broker.stream_port");
    c->broker_version = (int)num(&r, "broker.version");
    c->stream_hosts = str_list(&r, "broker.stream_hosts");
    char *rf = str(&r, "broker.read_from");
    c->read_from = rf == NULL                  ? ESS_READ_REPLICA
                   : strcmp(rf, "leader") == 0 ? ESS_READ_LEADER
                   : strcmp(rf, "any") == 0    ? ESS_READ_ANY
                                               : ESS_READ_REPLICA;
    free(rf);
    c->load_balancer_mode = flag(&r, "broker.load_balancer_mode");
    c->heartbeat_s = (int)num(&r, "broker.heartbeat_s");
    c->reconnect_min_ms = (int)num(&r, "broker.reconnect_min_ms");
    c->reconnect_max_ms = (int)num(&r, "broker.reconnect_max_ms");
    c->manage_streams = flag(&r, "manage_streams");
    c->database_path = str(&r, "database.path");
    char *backend = str(&r, "registry.backend");
    c->registry_stream_backend = backend != NULL && strcmp(backend, "stream") == 0;
    free(backend);
    c->registry_stream = str(&r, "registry.stream");
    c->registry_initial_cluster_size = (int)num(&r, "registry.initial_cluster_size");
    c->registry_max_length_bytes = num(&r, "registry.max_length_bytes");
    c->registry_max_segment_size_bytes = num(&r, "registry.max_segment_size_bytes");
    c->registry_snapshot_every = num(&r, "registry.snapshot_every");
    c->registry_timeout_ms = (int)num(&r, "registry.timeout_ms");
    char *level = str(&r, "log.level");
    c->log_level = level ? ess_log_level_parse(level) : ESS_LOG_INFO;
    if (c->log_level < 0)
        missing(&r, "log.level", "debug|info|warn|error");
    free(level);
    c->log_dir = str(&r, "log.dir");
    c->log_max_bytes = num(&r, "log.max_bytes");
    c->log_keep = (int)num(&r, "log.keep");
    c->message_stats_interval = num(&r, "log.message_stats_interval");
    c->lua_path = str(&r, "lua.path");
    c->lua_enrich = str(&r, "lua.enrich");
    c->lua_route = str(&r, "lua.route");
    c->lua_api = str(&r, "lua.api");
    c->lua_watch = flag(&r, "lua.watch");
    c->lua_hook_timeout_ms = (int)num(&r, "lua.hook_timeout_ms");
    c->lua_max_memory_mb = (int)num(&r, "lua.max_memory_mb");
    c->grace_s = (int)num(&r, "shutdown.grace_s");
    return r.failed ? ESS_EINVAL : ESS_OK;
}

void ess_config_free(ess_config_t *c)
{
    if (c == NULL)
        return;
    free(c->stream_hosts);
    char **strings[] = {&c->path,       &c->api_token,     &c->ingress_location,
                        &c->broker_url, &c->database_path, &c->registry_stream,
                        &c->log_dir,    &c->lua_path,      &c->lua_enrich,
                        &c->lua_route,  &c->lua_api};
    for (size_t i = 0; i < ESS_ARRAY_SIZE(strings); i++)
        free(*strings[i]);
    free(c);
}

int ess_listen_parse(const char *s, ess_listen_t *out)
{
    const char *colon;
    const char *host = s;
    size_t hostlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return ESS_EINVAL;
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return ESS_EINVAL;
        hostlen = (size_t)(colon - s);
        if (memchr(s, ':', hostlen) != NULL)
            return ESS_EINVAL; /* a bare IPv6 address needs brackets */
    }
    if (hostlen >= sizeof out->host)
        return ESS_EINVAL;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5)
        return ESS_EINVAL;
    long port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return ESS_EINVAL;
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
        return ESS_EINVAL;
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    if (strcmp(out->host, "0.0.0.0") == 0 || strcmp(out->host, "*") == 0)
        out->host[0] = '\0';
    out->port = (int)port;
    return ESS_OK;
}
