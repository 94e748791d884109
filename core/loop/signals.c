/* Signal handles on the libuv loop; see signals.h. */
#include "loop/signals.h"
#include "ess.h"
#include "loop/watchdog.h"

#include <signal.h>
#include <string.h>

static uv_signal_t sigs[4];
static int nsigs;
static ess_signal_handlers_t handlers;

static void on_signal(uv_signal_t *h, int signum)
{
    ess_app_t *app = h->data;
    if (signum == SIGHUP) {
        if (handlers.on_reload)
            handlers.on_reload(app);
    } else if (handlers.on_terminate) {
        handlers.on_terminate(app, signum);
    }
}

/* libuv's handlers for SIGTERM and SIGINT, which ours call after telling
 * the watchdog: while a Lua call blocks the loop, libuv's pipe is not
 * read, so the watchdog interrupts that call at once instead. */
static struct sigaction uv_term, uv_int;

static void chained(int signum)
{
    ess_watchdog_note_terminate();
    struct sigaction *next = signum == SIGTERM ? &uv_term : &uv_int;
    if (next->sa_flags & SA_SIGINFO) {
        if (next->sa_sigaction)
            next->sa_sigaction(signum, NULL, NULL);
    } else if (next->sa_handler != SIG_DFL && next->sa_handler != SIG_IGN) {
        next->sa_handler(signum);
    }
}

static void chain(int signum, struct sigaction *save)
{
    struct sigaction sa;
    if (sigaction(signum, NULL, save) != 0)
        return;
    sa = *save;
    sa.sa_flags &= ~SA_SIGINFO;
    sa.sa_handler = chained;
    sigaction(signum, &sa, NULL);
}

void ess_signals_start(ess_app_t *app, const ess_signal_handlers_t *h)
{
    static const int which[] = {SIGTERM, SIGINT, SIGHUP};
    handlers = *h;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < ESS_ARRAY_SIZE(which); i++) {
        uv_signal_init(app->loop, &sigs[i]);
        sigs[i].data = app;
        uv_signal_start(&sigs[i], on_signal, which[i]);
        /* Signals must not keep the loop alive once everything else is gone. */
        uv_unref((uv_handle_t *)&sigs[i]);
    }
    nsigs = (int)ESS_ARRAY_SIZE(which);
    chain(SIGTERM, &uv_term);
    chain(SIGINT, &uv_int);
}

void ess_signals_stop(void)
{
    for (int i = 0; i < nsigs; i++)
        if (!uv_is_closing((uv_handle_t *)&sigs[i]))
            uv_close((uv_handle_t *)&sigs[i], NULL);
    nsigs = 0;
}
