/*
 * essd: start-up and shutdown order, nothing else. Configuration first
 * (it can stop us with a clear message before anything is opened), then
 * logging, the registry, the Lua API handlers, the broker side and the
 * listeners; shutdown runs the same steps backwards after the drain.
 */
#include "app.h"
#include "ess.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "loop/signals.h"
#include "loop/watchdog.h"
#include "metrics/metrics.h"
#include "script/api.h"
#include "script/hooks.h"
#include "script/reload.h"
#include "script/vm.h"
#include "util/datetime.h"
#include "util/log.h"

#include <inttypes.h>
#include <malloc.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#define DEFAULT_CONFIG "config/essd.yaml"

static const char usage[] =
    "usage: essd [--config PATH] [--check-config]\n"
    "       essd --parse-datetime STRING\n"
    "       essd --version | --help\n"
    "\n"
    "  --config PATH          YAML configuration (default $ESS_CONFIG, else " DEFAULT_CONFIG
    " when present, else built-in defaults)\n"
    "  --check-config         validate the configuration and exit (0 valid, 2 invalid)\n"
    "  --parse-datetime STR   print the epoch milliseconds (UTC) a date/time selector means\n"
    "  --version              print the version\n"
    "\n"
    "Environment overrides: ESS_AMPQ_URL (or ESS_AMQP_URL), ESS_INGRESS_LOCATION,\n"
    "ESS_INGRESS_SECURE, ESS_MESSAGE_STATS_INTERVAL, ESS_PUBLIC_LISTEN, ESS_INTERNAL_LISTEN,\n"
    "ESS_DATABASE_PATH, ESS_REGISTRY_BACKEND, ESS_REGISTRY_STREAM, ESS_LOG_DIR, ESS_LOG_LEVEL,\n"
    "ESS_API_TOKEN, ESS_LUA_PATH.\n";

static uv_timer_t drain_timer;
static uint64_t drain_deadline;

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int parse_datetime(const char *s)
{
    int64_t ms;
    const char *err = NULL;
    if (ess_datetime_parse(s, strlen(s), now_ms(), &ms, &err) != ESS_OK) {
        fprintf(stderr, "essd: cannot parse date/time \"%s\": %s\n", s, err ? err : "invalid");
        return 2;
    }
    printf("%" PRId64 "\n", ms);
    return 0;
}

static void finish(ess_app_t *app)
{
    static int finished;
    if (finished || app->lws == NULL)
        return;
    finished = 1;
    ess_log_info("shutdown: closing listeners");
    uv_timer_stop(&drain_timer);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    ess_server_destroy(app);
    ess_registry_stream_stop(app->registry);
    ess_script_watch_stop(app);
    ess_signals_stop();
}

/* Polls the drain: done when no request is in flight, or the grace is over. */
static void drain_tick(uv_timer_t *t)
{
    ess_app_t *app = t->data;
    if (app->api_inflight == 0 && app->ws_open == 0) {
        finish(app);
    } else if (uv_now(app->loop) >= drain_deadline) {
        ess_log_warn("shutdown: grace period over with %d requests and %lld sockets open",
                     app->api_inflight, (long long)app->ws_open);
        finish(app);
    }
}

static void gateway_stopped(ess_app_t *app)
{
    (void)app;
}

static void on_terminate(ess_app_t *app, int signum)
{
    if (app->draining) {
        ess_log_warn("shutdown: second signal, stopping now");
        finish(app);
        return;
    }
    ess_log_info("shutdown: signal %d, draining (grace %ds)", signum, app->cfg->grace_s);
    app->draining = 1;
    ess_server_drain(app, NULL);
    ess_gateway_stop(app, gateway_stopped);
    drain_deadline = uv_now(app->loop) + (uint64_t)app->cfg->grace_s * 1000;
    uv_timer_init(app->loop, &drain_timer);
    drain_timer.data = app;
    uv_timer_start(&drain_timer, drain_tick, 0, 20);
}

static void on_reload(ess_app_t *app)
{
    ess_reload_result_t r;
    ess_script_reload(app, "SIGHUP", &r);
}

/* Every connection is a descriptor: raise the soft open-file limit (often
 * 1024) toward the hard one so that public.max_connections can be reached;
 * without it accept() fails with EMFILE long before. A soft limit above
 * ESS_FD_LIMIT_MAX (or none) is lowered to it (http/server.h). */
static void raise_fd_limit(const ess_config_t *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > ESS_FD_LIMIT_MAX) {
        rl.rlim_cur = ESS_FD_LIMIT_MAX;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            ess_log_warn("cannot lower the open-file limit to %d", ESS_FD_LIMIT_MAX);
    }
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
        rl.rlim_cur < want)
        ess_log_warn("open-file limit %llu is below public.max_connections + 256 (%llu): "
                     "connections beyond it are refused",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

static const char *config_path(const char *arg)
{
    if (arg)
        return arg;
    const char *env = getenv("ESS_CONFIG");
    if (env && env[0])
        return env;
    return access(DEFAULT_CONFIG, F_OK) == 0 ? DEFAULT_CONFIG : NULL;
}

int main(int argc, char **argv)
{
    /* Replays free and reallocate megabytes a second (lws keeps the unsent
     * part of a batch, frames, reads): glibc's default trims the heap top
     * at 128 KiB and refaults it at once (4% of a replay in page faults).
     * Keep up to 8 MiB free at the top of the heap. Setting the trim
     * threshold also freezes glibc's sliding mmap threshold at 128 KiB,
     * so fix that too: 64 KiB batches stay on the heap. */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    const char *cfg_arg = NULL;
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            cfg_arg = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = 1;
        } else if (strcmp(argv[i], "--parse-datetime") == 0 && i + 1 < argc) {
            return parse_datetime(argv[i + 1]);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("essd %s\n", ESS_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "essd: unknown or incomplete argument \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }

    ess_app_t app;
    memset(&app, 0, sizeof app);
    char err[4096];
    int status = 1;
    const char *path = config_path(cfg_arg);

    /* The first build only loads the configuration: the API and hooks need
     * the registry and logging, which need the configuration. */
    if (ess_vm_create(ess_vm_default_lua_path(), &app.vm, err, sizeof err) != ESS_OK) {
        fprintf(stderr, "essd: %s\n", err);
        return 1;
    }
    if (ess_vm_load_config(app.vm, path, &app.cfg, err, sizeof err) != ESS_OK) {
        fprintf(stderr, "essd: %s\n", err);
        status = 2;
        goto fail_config;
    }
    /* From here on a Lua call that never returns is ended (docs/lua.md). */
    ess_watchdog_start(app.cfg->lua_hook_timeout_ms);
    if (check_only) {
        /* Also load and self-test the scripts the configuration names. */
        ess_vm_t *vm;
        ess_config_t *cfg;
        if (ess_script_build(&app, path, &vm, &cfg, err, sizeof err) != ESS_OK) {
            fprintf(stderr, "essd: %s\n", err);
            status = 2;
            goto fail_config;
        }
        ess_vm_free(vm);
        ess_config_free(cfg);
        printf("essd: configuration %s and its scripts are valid\n",
               path ? path : "(built-in defaults)");
        status = 0;
        goto fail_config;
    }
    if (ess_log_init((ess_log_level_t)app.cfg->log_level, app.cfg->log_dir,
                     (size_t)app.cfg->log_max_bytes, app.cfg->log_keep) != ESS_OK) {
        fprintf(stderr, "essd: log.dir: cannot write to %s\n", app.cfg->log_dir);
        status = 2;
        goto fail_config;
    }
    ess_log_info("essd %s starting (config %s, lua %s)", ESS_VERSION, path ? path : "defaults",
                 app.vm->lua_path);

    if ((app.cfg->registry_stream_backend
             ? ess_registry_open_stream(app.cfg, &app.registry, err, sizeof err)
             : ess_registry_open_sqlite(app.cfg->database_path, &app.registry, err, sizeof err)) !=
        ESS_OK) {
        ess_log_error("registry: %s", err);
        goto fail_registry;
    }
    {
        ess_vm_t *vm;
        ess_config_t *cfg;
        if (ess_script_build(&app, path, &vm, &cfg, err, sizeof err) != ESS_OK) {
            ess_log_error("lua: %s", err);
            status = 2;
            goto fail_registry;
        }
        ess_vm_free(app.vm);
        ess_config_free(app.cfg);
        app.vm = vm;
        app.cfg = cfg;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    app.loop = &loop;
    if (ess_gateway_start(&app, err, sizeof err) != ESS_OK) {
        ess_log_error("%s", err);
        goto fail_loop;
    }
    if (ess_registry_is_stream(app.registry) &&
        ess_registry_stream_start(app.registry, &loop, err, sizeof err) != ESS_OK) {
        ess_log_error("registry: %s", err);
        ess_gateway_stop(&app, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        status = 2;
        goto fail_loop;
    }
    ess_script_api_broker_start(&app);
    raise_fd_limit(app.cfg);
    if (ess_server_start(&app, err, sizeof err) != ESS_OK) {
        ess_log_error("%s", err);
        ess_server_destroy(&app);
        ess_gateway_stop(&app, NULL);
        ess_registry_stream_stop(app.registry);
        uv_run(&loop, UV_RUN_DEFAULT);
        ess_server_destroy(&app);
        status = 2;
        goto fail_loop;
    }
    ess_signal_handlers_t handlers = {on_terminate, on_reload};
    ess_signals_start(&app, &handlers);
    ess_script_watch_start(&app);

    uv_run(&loop, UV_RUN_DEFAULT);
    if (app.lws != NULL) {
        ess_server_destroy(&app);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    ess_log_info("essd stopped");
    status = 0;

fail_loop:
    if (uv_loop_close(&loop) != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
fail_registry:
    ess_registry_close(app.registry);
    ess_metrics_free();
    ess_log_shutdown();
fail_config:
    ess_watchdog_stop();
    ess_config_free(app.cfg);
    ess_vm_free(app.vm);
    return status;
}
