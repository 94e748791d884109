/*
 * The bridge from the internal HTTP API to the Lua handlers (ess.api):
 * plain C structs in, plain C structs out, so core/http never touches Lua.
 */
#ifndef ESS_SCRIPT_API_H
#define ESS_SCRIPT_API_H

#include <stddef.h>

#include "app.h"

typedef struct ess_vm_s ess_vm_t; /* script/vm.h; opaque to the callers */
#include "util/buf.h"

typedef struct {
    const char *name; /* lower case, without the colon */
    const char *value;
} ess_kv_t;

typedef struct {
    const char *method;
    const char *path;
    const char *query;
    const char *body;
    size_t body_len;
    const ess_kv_t *headers;
    size_t nheaders;
} ess_api_request_t;

typedef struct {
    int status;
    ess_buf_t body;
    char content_type[128];
    ess_buf_t headers; /* extra headers as "name\0value\0" pairs */
    char route[128];   /* route label for metrics */
} ess_api_response_t;

/**
 * Run the request through the live VM's API handler. Never fails: a Lua
 * error becomes a logged 500 with a JSON body and no trace. The caller
 * frees resp->body and resp->headers with ess_buf_free.
 */
void ess_script_api_handle(ess_app_t *app, const ess_api_request_t *req, ess_api_response_t *resp);

/** A request whose handler waits for the registry (registry.backend: stream). */
typedef struct ess_api_pending_s ess_api_pending_t;

/** Called once with the final response (the callee frees nothing; copy or take the buffers). */
typedef void (*ess_api_done_fn)(void *ud, ess_api_response_t *resp);

/**
 * Like ess_script_api_handle, but a handler may wait for an asynchronous
 * registry call (core.registry_create / registry_delete with the stream
 * backend): then resp is left empty, a pending request is returned, and
 * done(ud, resp) runs later on the loop exactly once (the handler's
 * continuation's response, or its answer to a timeout after
 * registry.timeout_ms) unless ess_script_api_abandon is called first.
 * Returns NULL when resp is filled now.
 */
ess_api_pending_t *ess_script_api_start(ess_app_t *app, const ess_api_request_t *req,
                                        ess_api_response_t *resp, ess_api_done_fn done, void *ud);

/** The client went away: no done call, everything the request held is freed. */
void ess_script_api_abandon(ess_api_pending_t *p);

/**
 * Build the `core` table the API handlers receive and keep it in the VM.
 * Called once per VM, after the config is loaded. ESS_OK or ESS_ESCRIPT.
 */
int ess_script_api_init(ess_app_t *app, ess_vm_t *vm, const ess_config_t *cfg, char *err,
                        size_t errlen);

/**
 * With broker.version 2: log which ports the broker connections use (the
 * stream protocol: broker.stream_port; AMQP 0-9-1: the port of broker.url)
 * and start the check of the AMQP port that /health/ready reports as
 * "amqp". Called once, after the loop runs the gateway.
 */
void ess_script_api_broker_start(ess_app_t *app);

#endif
