/*
 * The process-wide state that the subsystems share: one per essd process,
 * created by main.c, reached from lws callbacks through lws_context_user().
 * Each field is owned by the subsystem named beside it; the pointers are
 * opaque here, so http/ and gateway/ do not compile against Lua or lws.
 */
#ifndef ESS_APP_H
#define ESS_APP_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "store/registry.h"

struct lws_context;
struct ess_gateway_s;
struct ess_vm_s;

typedef struct ess_app_s {
    uv_loop_t *loop;               /* main.c */
    ess_config_t *cfg;             /* main.c; replaced on reload (script/reload.c) */
    ess_registry_t *registry;      /* store/ */
    struct ess_vm_s *vm;           /* script/; swapped whole on reload */
    struct lws_context *lws;       /* http/server.c */
    struct ess_gateway_s *gateway; /* gateway/gateway.c: sessions and broker clients */
    /* gateway/gateway.c registers it at start: 1 when the broker side is up
     * (asked by readiness in script/api.c); NULL before. */
    int (*broker_ready)(struct ess_app_s *app);
    int draining;        /* main.c, set on SIGTERM: refuse new work */
    int api_inflight;    /* http/api.c: internal API requests being served */
    int64_t ws_open;     /* http/ws.c: public WebSocket connections open */
    char lua_root[1024]; /* where shipped modules were loaded from */
} ess_app_t;

#endif
