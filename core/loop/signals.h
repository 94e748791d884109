/*
 * Process signals on the loop: SIGTERM and SIGINT start the graceful
 * drain, SIGHUP asks for a reload. SIGPIPE is ignored process-wide.
 * SIGTERM and SIGINT also tell the Lua watchdog (loop/watchdog.h), so a
 * hook that blocks the loop cannot keep the process from stopping.
 */
#ifndef ESS_SIGNALS_H
#define ESS_SIGNALS_H

#include "app.h"

typedef struct {
    void (*on_terminate)(ess_app_t *app, int signum);
    void (*on_reload)(ess_app_t *app);
} ess_signal_handlers_t;

/** Install the handlers on app->loop. */
void ess_signals_start(ess_app_t *app, const ess_signal_handlers_t *h);

/** Close the signal handles (they stop keeping the loop alive). */
void ess_signals_stop(void);

#endif
