/*
 * Whole-VM builds and hot reload (SIGHUP, POST /admin/reload, file watch).
 * Owns the swap and the deferred free of the replaced VM and config; the
 * pieces it assembles belong to vm.c, api.c and hooks.c.
 */
#include "script/reload.h"
#include "ess.h"
#include "script/vm.h"
#include "loop/watchdog.h"
#include "metrics/metrics.h"
#include "script/api.h"
#include "script/hooks.h"
#include "util/log.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

static int same_dir(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
        return 0;
    return strcmp(ra, rb) == 0;
}

int ess_script_build(ess_app_t *app, const char *config_path, ess_vm_t **vm_out,
                     ess_config_t **cfg_out, char *err, size_t errlen)
{
    ess_vm_t *vm = NULL;
    ess_config_t *cfg = NULL;
    const char *boot = ess_vm_default_lua_path();
    int rc = ess_vm_create(boot, &vm, err, errlen);
    if (rc != ESS_OK)
        return rc;
    if ((rc = ess_vm_load_config(vm, config_path, &cfg, err, errlen)) != ESS_OK)
        goto fail;
    ess_vm_set_memory_limit(vm, cfg->lua_max_memory_mb);
    /* lua.path names the scripts' root; when it is another existing folder,
     * build the VM again from there so config and hooks come from one place. */
    struct stat st;
    if (strcmp(cfg->lua_path, boot) != 0 && stat(cfg->lua_path, &st) == 0 && S_ISDIR(st.st_mode) &&
        !same_dir(cfg->lua_path, boot)) {
        char *root = ess_xstrdup(cfg->lua_path);
        ess_vm_free(vm);
        ess_config_free(cfg);
        vm = NULL;
        cfg = NULL;
        rc = ess_vm_create(root, &vm, err, errlen);
        free(root);
        if (rc != ESS_OK)
            return rc;
        if ((rc = ess_vm_load_config(vm, config_path, &cfg, err, errlen)) != ESS_OK)
            goto fail;
        ess_vm_set_memory_limit(vm, cfg->lua_max_memory_mb);
    }
    if ((rc = ess_script_api_init(app, vm, cfg, err, errlen)) != ESS_OK ||
        (rc = ess_hooks_init(vm, cfg->lua_enrich, cfg->lua_route, err, errlen)) != ESS_OK ||
        (rc = ess_hooks_selftest(vm, err, errlen)) != ESS_OK)
        goto fail;
    *vm_out = vm;
    *cfg_out = cfg;
    return ESS_OK;
fail:
    /* A script that caught the memory error (the sandbox's require does)
     * reports only "not enough memory": say which limit it met. */
    if (vm && vm->mem_refused && strstr(err, "max_memory_mb") == NULL) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (the Lua VM reached lua.max_memory_mb, %lld MiB)",
                 (long long)(vm->mem_limit >> 20));
    }
    ess_config_free(cfg);
    ess_vm_free(vm);
    return rc;
}

typedef struct {
    uv_timer_t timer;
    ess_vm_t *vm;
    ess_config_t *cfg;
} grave_t;

static void grave_closed(uv_handle_t *h)
{
    free(h->data);
}

static void bury(uv_timer_t *t)
{
    grave_t *g = t->data;
    ess_vm_free(g->vm);
    ess_config_free(g->cfg);
    uv_close((uv_handle_t *)&g->timer, grave_closed);
}

/* Free the replaced VM and config on a later loop turn. */
static void defer_free(ess_app_t *app, ess_vm_t *vm, ess_config_t *cfg)
{
    grave_t *g = ess_xcalloc(1, sizeof *g);
    g->vm = vm;
    g->cfg = cfg;
    uv_timer_init(app->loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, bury, 0, 0);
}

#define KEEP_STR(field, name)                                                                      \
    do {                                                                                           \
        if (strcmp(neu->field, old->field) != 0) {                                                 \
            char *t = neu->field;                                                                  \
            neu->field = old->field;                                                               \
            old->field = t;                                                                        \
            r->restart_required[r->nrestart++] = name;                                             \
        }                                                                                          \
    } while (0)
#define KEEP_NUM(field, name)                                                                      \
    do {                                                                                           \
        if (neu->field != old->field) {                                                            \
            neu->field = old->field;                                                               \
            r->restart_required[r->nrestart++] = name;                                             \
        }                                                                                          \
    } while (0)

/* Settings bound at start (sockets, files, the broker client) keep their
 * running values; the result lists the ones the new configuration changed. */
static void keep_start_only(ess_config_t *neu, ess_config_t *old, ess_reload_result_t *r)
{
    if (memcmp(&neu->public_listen, &old->public_listen, sizeof old->public_listen) != 0) {
        neu->public_listen = old->public_listen;
        r->restart_required[r->nrestart++] = "public.listen";
    }
    if (memcmp(&neu->internal_listen, &old->internal_listen, sizeof old->internal_listen) != 0) {
        neu->internal_listen = old->internal_listen;
        r->restart_required[r->nrestart++] = "internal.listen";
    }
    KEEP_NUM(max_connections, "public.max_connections");
    KEEP_NUM(max_header_bytes, "public.max_header_bytes");
    KEEP_NUM(ping_interval_s, "public.ping_interval_s");
    /* Sizes the stream client's credit window as well as each queue. */
    KEEP_NUM(outbound_budget_bytes, "public.outbound_budget_bytes");
    KEEP_STR(broker_url, "broker.url");
    KEEP_NUM(stream_port, "broker.stream_port");
    KEEP_STR(stream_hosts, "broker.stream_hosts");
    KEEP_NUM(read_from, "broker.read_from");
    KEEP_NUM(load_balancer_mode, "broker.load_balancer_mode");
    KEEP_NUM(heartbeat_s, "broker.heartbeat_s");
    KEEP_STR(database_path, "database.path");
    KEEP_STR(log_dir, "log.dir");
}

ess_reload_last_t ess_reload_last;

static void remember(const char *trigger, int ok, const ess_reload_result_t *r)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    ess_reload_last.at_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    snprintf(ess_reload_last.trigger, sizeof ess_reload_last.trigger, "%s", trigger);
    ess_reload_last.ok = ok;
    ess_reload_last.generation = r->generation;
    snprintf(ess_reload_last.error, sizeof ess_reload_last.error, "%s", ok ? "" : r->error);
}

int ess_script_reload(ess_app_t *app, const char *trigger, ess_reload_result_t *r)
{
    memset(r, 0, sizeof *r);
    ess_vm_t *vm;
    ess_config_t *cfg;
    int rc = ess_script_build(app, app->cfg->path, &vm, &cfg, r->error, sizeof r->error);
    if (rc != ESS_OK) {
        ess_metrics.reloads_failed++;
        r->generation = app->vm->gen;
        ess_log_error("reload (%s) rejected; the running scripts stay: %s", trigger, r->error);
        remember(trigger, 0, r);
        return rc;
    }
    keep_start_only(cfg, app->cfg, r);
    ess_vm_t *old_vm = app->vm;
    ess_config_t *old_cfg = app->cfg;
    app->vm = vm;
    app->cfg = cfg;
    if (cfg->log_level != old_cfg->log_level)
        ess_log_init((ess_log_level_t)cfg->log_level, cfg->log_dir, (size_t)cfg->log_max_bytes,
                     cfg->log_keep);
    defer_free(app, old_vm, old_cfg);
    ess_watchdog_set_timeout(cfg->lua_hook_timeout_ms);
    ess_hooks_failing_streak = 0;
    ess_metrics.reloads_ok++;
    r->generation = vm->gen;
    remember(trigger, 1, r);
    ess_log_info("reload (%s): generation %llu live%s", trigger, (unsigned long long)vm->gen,
                 r->nrestart ? "; some settings need a restart" : "");
    for (int i = 0; i < r->nrestart; i++)
        ess_log_warn("reload: %s changed; it applies at the next start", r->restart_required[i]);
    return ESS_OK;
}

/* File watch: inotify through uv_fs_event on the Lua root, its ess/ and
 * ess/examples/ folders, the folders of the configured hook modules and the
 * configuration file's folder (for that file only, so a log written next
 * to it does not reload); changes are debounced by 200 ms so an editor's
 * save (write, rename) triggers one reload.
 *
 * A Kubernetes ConfigMap volume is updated by writing a new ..<timestamp>
 * folder and renaming a ..data symlink over the old one; the files are
 * symlinks through ..data. So names starting with ".." count as changes
 * (only editors' ".name.swp" files are ignored), and before every reload
 * attempt the watches are set up again: a watch follows the symlinks when
 * it is made, so it sits on the old generation's folder, which kubelet then
 * deletes. */
#define MAX_WATCH 8

static struct {
    uv_fs_event_t *ev[MAX_WATCH];
    char *path[MAX_WATCH];
    int n;
    uv_timer_t debounce;
    int active;
} W;

static void arm(ess_app_t *app);
static void disarm(void);

static void debounced(uv_timer_t *t)
{
    ess_app_t *app = t->data;
    ess_reload_result_t r;
    /* Re-arm first: a change made while the reload reads the files then
     * raises an event on the new watches instead of being lost with the old. */
    disarm();
    arm(app);
    ess_script_reload(app, "file change", &r);
}

static void changed(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    (void)status;
    const char *only = h->data; /* the configuration file's folder: that file only */
    if (filename && filename[0] == '.' && filename[1] != '.')
        return; /* editor swap files; "..data" and "..<timestamp>" are a ConfigMap update */
    if (only && filename && filename[0] != '.' && strcmp(filename, only) != 0)
        return; /* e.g. a log file written next to the configuration */
    uv_timer_start(&W.debounce, debounced, 200, 0);
}

static void ev_closed(uv_handle_t *h)
{
    free(h);
}

/* Watch the folder path; with only, just that file name in it (and "..*"). */
static void watch_only(ess_app_t *app, const char *path, const char *only)
{
    struct stat st;
    if (W.n == MAX_WATCH || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    for (int i = 0; i < W.n; i++)
        if (same_dir(W.path[i], path))
            return;
    uv_fs_event_t *ev = ess_xcalloc(1, sizeof *ev);
    uv_fs_event_init(app->loop, ev);
    ev->data = (void *)only;
    if (uv_fs_event_start(ev, changed, path, 0) != 0) {
        ess_log_warn("lua.watch: cannot watch %s", path);
        uv_close((uv_handle_t *)ev, ev_closed);
        return;
    }
    W.ev[W.n] = ev;
    W.path[W.n] = ess_xstrdup(path);
    W.n++;
}

static void watch(ess_app_t *app, const char *path)
{
    watch_only(app, path, NULL);
}

/* The folder of the hook module name (dots to slashes) under the Lua root. */
static void watch_module(ess_app_t *app, const char *module)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", app->vm->lua_path, module);
    if (n < 0 || (size_t)n >= sizeof path)
        return;
    for (char *p = path + strlen(app->vm->lua_path) + 1; *p; p++)
        if (*p == '.')
            *p = '/';
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = '\0';
    watch(app, path);
}

static void arm(ess_app_t *app)
{
    char path[PATH_MAX];
    watch(app, app->vm->lua_path);
    snprintf(path, sizeof path, "%s/ess", app->vm->lua_path);
    watch(app, path);
    snprintf(path, sizeof path, "%s/ess/examples", app->vm->lua_path);
    watch(app, path);
    watch_module(app, app->cfg->lua_enrich);
    watch_module(app, app->cfg->lua_route);
    if (app->cfg->path) {
        static char base[PATH_MAX]; /* the file's name; fixed for the process */
        snprintf(path, sizeof path, "%s", app->cfg->path);
        char *slash = strrchr(path, '/');
        snprintf(base, sizeof base, "%s", slash ? slash + 1 : path);
        if (slash)
            *slash = '\0';
        else
            snprintf(path, sizeof path, ".");
        watch_only(app, path, base);
    }
}

static void disarm(void)
{
    for (int i = 0; i < W.n; i++) {
        uv_close((uv_handle_t *)W.ev[i], ev_closed);
        free(W.path[i]);
    }
    W.n = 0;
}

int ess_script_watch_start(ess_app_t *app)
{
    if (!app->cfg->lua_watch || W.active)
        return ESS_OK;
    uv_timer_init(app->loop, &W.debounce);
    W.debounce.data = app;
    W.active = 1;
    arm(app);
    ess_log_info("lua.watch: watching %d folders for script and config changes", W.n);
    return ESS_OK;
}

void ess_script_watch_stop(ess_app_t *app)
{
    (void)app;
    if (!W.active)
        return;
    disarm();
    uv_close((uv_handle_t *)&W.debounce, NULL);
    W.active = 0;
}
