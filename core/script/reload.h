/*
 * Building the scripting side as a whole (configuration, API handlers,
 * hooks, self-test) and swapping it in on a reload. A reload never mutates
 * the live VM: it builds a new one, and on any failure the old one stays.
 */
#ifndef ESS_RELOAD_H
#define ESS_RELOAD_H

#include <stdint.h>

#include "app.h"

typedef struct ess_vm_s ess_vm_t; /* script/vm.h; opaque to the callers */

typedef struct {
    uint64_t generation;              /* the live VM's generation afterwards */
    char error[2048];                 /* why a reload was rejected (file:line when known) */
    const char *restart_required[24]; /* changed settings that apply only at start */
    int nrestart;
} ess_reload_result_t;

/**
 * Build a complete VM and configuration from config_path (NULL for
 * defaults) and the Lua root: config, API, hooks, self-test. The caller
 * owns *vm_out and *cfg_out. ESS_EINVAL (config) or ESS_ESCRIPT with err.
 */
int ess_script_build(ess_app_t *app, const char *config_path, ess_vm_t **vm_out,
                     ess_config_t **cfg_out, char *err, size_t errlen);

/**
 * Reload from app->cfg->path: build, then swap app->vm and app->cfg. The
 * old VM is freed on a later loop turn (the caller may be running inside
 * it). Settings that cannot change live keep their running values and are
 * listed in the result. trigger names the cause for the log.
 */
int ess_script_reload(ess_app_t *app, const char *trigger, ess_reload_result_t *result);

/** The last reload attempt, for the operator console (zero before the first). */
typedef struct {
    int64_t at_ms;       /* wall clock; 0: none yet */
    char trigger[32];    /* "api", "SIGHUP", "file change" */
    int ok;              /* 1 reloaded, 0 rejected */
    uint64_t generation; /* the live generation afterwards */
    char error[2048];    /* when rejected: the first error, with file:line for Lua */
} ess_reload_last_t;

extern ess_reload_last_t ess_reload_last;

/** Watch the Lua root and the configuration file; reload when they change (lua.watch). */
int ess_script_watch_start(ess_app_t *app);
void ess_script_watch_stop(ess_app_t *app);

#endif
