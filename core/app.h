/*
 * The process-wide state that the subsystems share: one per essd process,
 * created by main.c, reached from lws callbacks through lws_context_user().
 * Each field is owned by the subsystem named beside it.
 */
#ifndef ESS_APP_H
#define ESS_APP_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "script/vm.h"
#include "store/registry.h"

struct lws_context;
struct ess_gateway_s;

typedef struct ess_app_s {
    uv_loop_t *loop;               /* main.c */
    ess_config_t *cfg;             /* main.c; replaced on reload */
    ess_registry_t *registry;      /* store/ */
    ess_vm_t *vm;                  /* script/; swapped whole on reload */
    struct lws_context *lws;       /* http/server.c */
    struct ess_gateway_s *gateway; /* http/ws.c: live WebSocket connections */
    int draining;                  /* set on SIGTERM: refuse new work */
    int api_inflight;              /* internal API requests being served */
    char lua_root[1024];           /* where shipped modules were loaded from */
} ess_app_t;

#endif
