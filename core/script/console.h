/*
 * The operator console's C functions for the Lua handlers (core.console_*;
 * lua/ess/api/console.lua shapes them into responses). The state of live
 * sessions is the gateway's: gateway/console.c provides it through
 * ess_script_console_provide, so script/ never includes gateway/. What
 * script/ owns itself (the VM's generation, the last reload) it reports
 * directly.
 */
#ifndef ESS_SCRIPT_CONSOLE_H
#define ESS_SCRIPT_CONSOLE_H

#include <stdint.h>

#include "app.h"
#include "util/buf.h"

/** GET /admin/state's options, checked by the Lua handler. */
typedef struct {
    int64_t offset, limit; /* the page of event streams */
    const char *sort;      /* "id", "lag", "rate", "connected", "routing_key", "stalls" */
    int desc;              /* descending */
    const char *filter;    /* substring of id, routing key, uuid, address, User-Agent; "" = all */
    int live;              /* only event streams with a live client */
} ess_console_query_t;

typedef struct {
    /** Append the state JSON object (without the "lua" part) to out. ESS_OK or an error. */
    int (*state)(ess_app_t *app, const ess_console_query_t *q, ess_buf_t *out);
    /**
     * Start or refresh the watch of event stream id's live session and
     * append {"watching":true,"seq":N,"entries":[...]} with the entries
     * after `after`; with stop, end the watch instead. ESS_OK,
     * ESS_ENOTFOUND (no live session) or ESS_ETOOBIG (too many watches).
     */
    int (*tail)(ess_app_t *app, int64_t id, uint64_t after, int stop, ess_buf_t *out);
} ess_console_provider_t;

/** Set (or clear with NULL) the provider; p must outlive its use. */
void ess_script_console_provide(const ess_console_provider_t *p);

/** Add the core.console_* functions to the core table at the top of L's stack. */
void ess__script_console_core(void *L, ess_app_t *app);

#endif
