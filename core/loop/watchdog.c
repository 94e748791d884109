/*
 * Lua watchdog (see watchdog.h). The loop thread publishes "a Lua call
 * started at T, sequence S" in atomics; the watchdog thread polls them a
 * few times per timeout (at most every 50 ms). Time is the loop thread's
 * CPU time, counted from the first poll that sees the call (so up to one
 * poll late): a node that is overloaded or CPU-throttled (a container's
 * CPU limit) slows a hook down without making it look stuck. To interrupt, it sends SIGUSR2 to the
 * loop thread, whose handler sets a count hook on the running state (the one LuaJIT function
 * documented as safe in a signal handler, as lua.c does for Ctrl-C). The hook raises an error at
 * every interpreted instruction until the outermost call returns, so a script's own pcall cannot
 * swallow it for long. LuaJIT does not run hooks inside compiled traces, so when the call is still
 * running a timeout later, the thread logs and calls _exit(ESS_WATCHDOG_EXIT): the registry is
 * SQLite (crash-safe) and the log is written unbuffered, so nothing is lost that a restart needs.
 */
#include "loop/watchdog.h"
#include "ess.h"
#include "util/log.h"

#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TERM_GRACE_MS 100 /* a call running at SIGTERM gets this long first */

static _Atomic int64_t busy_since; /* ms on CLOCK_MONOTONIC_COARSE + 1; 0 = idle */
static _Atomic uint64_t busy_seq;
static _Atomic int timeout_ms = 1000;
static _Atomic int term_pending;
static _Atomic unsigned long interrupts;
static _Atomic int running;

/* Touched by the loop thread and its own signal handler only. */
static lua_State *volatile current_L;
static volatile sig_atomic_t hooked;

static pthread_t loop_thread, dog_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static int64_t mono_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L,
               "interrupted by the watchdog: the call ran longer than lua.hook_timeout_ms "
               "(%d ms)",
               atomic_load(&timeout_ms));
}

static void on_sigusr2(int signum)
{
    (void)signum;
    lua_State *L = current_L;
    if (L != NULL && !hooked) {
        hooked = 1;
        lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
    }
}

void ess_watchdog_enter(lua_State *L)
{
    current_L = L;
    atomic_fetch_add_explicit(&busy_seq, 1, memory_order_relaxed);
    atomic_store_explicit(&busy_since, mono_ms(CLOCK_MONOTONIC_COARSE) + 1, memory_order_release);
}

int ess_watchdog_leave(lua_State *L)
{
    atomic_store_explicit(&busy_since, 0, memory_order_release);
    current_L = NULL;
    if (!hooked)
        return 0;
    lua_sethook(L, NULL, 0, 0);
    hooked = 0;
    atomic_fetch_add(&interrupts, 1);
    return 1;
}

/* The handler reads current_L and hooked: change them with SIGUSR2 blocked. */
static void block_usr2(sigset_t *old)
{
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, old);
}

lua_State *ess_watchdog_enter_nested(lua_State *L)
{
    sigset_t old;
    block_usr2(&old);
    lua_State *prev = current_L;
    if (hooked && prev != L) { /* the outer call is being stopped: stop this one too */
        if (prev != NULL)
            lua_sethook(prev, NULL, 0, 0);
        lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
    }
    current_L = L;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return prev;
}

int ess_watchdog_leave_nested(lua_State *L, lua_State *prev)
{
    sigset_t old;
    block_usr2(&old);
    int was = hooked;
    if (was) {
        lua_sethook(L, NULL, 0, 0);
        if (prev != NULL && prev != L)
            lua_sethook(prev, NULL, 0, 0);
        hooked = 0;
        atomic_fetch_add(&interrupts, 1);
        /* A fresh timeout for what the outer call still has to do. */
        atomic_fetch_add_explicit(&busy_seq, 1, memory_order_relaxed);
        atomic_store_explicit(&busy_since, mono_ms(CLOCK_MONOTONIC_COARSE) + 1,
                              memory_order_release);
    }
    current_L = prev;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return was;
}

void ess_watchdog_note_terminate(void)
{
    atomic_store(&term_pending, 1);
}

unsigned long ess_watchdog_interrupts(void)
{
    return atomic_load(&interrupts);
}

void ess_watchdog_set_timeout(int ms)
{
    atomic_store(&timeout_ms, ms > 0 ? ms : 1000);
}

/* CPU time the loop thread has used, in ms. */
static int64_t loop_cpu_ms(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0)
        return mono_ms(CLOCK_MONOTONIC);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *dog(void *arg)
{
    (void)arg;
    clockid_t cpu_clock;
    if (pthread_getcpuclockid(loop_thread, &cpu_clock) != 0)
        cpu_clock = CLOCK_MONOTONIC;
    uint64_t seen_seq = 0, sent_seq = 0;
    int64_t seen_cpu = 0, sent_cpu = 0;
    pthread_mutex_lock(&mu);
    while (atomic_load(&running)) {
        int tmo = atomic_load(&timeout_ms);
        int tick = tmo / 4 < 10 ? 10 : tmo / 4 > 50 ? 50 : tmo / 4;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)tick * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cv, &mu, &until);
        int64_t since = atomic_load_explicit(&busy_since, memory_order_acquire);
        if (since == 0 || !atomic_load(&running))
            continue;
        uint64_t seq = atomic_load(&busy_seq);
        int64_t cpu = loop_cpu_ms(cpu_clock);
        if (seq != seen_seq) { /* a call we have not seen yet: its CPU time counts from here */
            seen_seq = seq;
            seen_cpu = cpu;
        }
        int64_t ran = cpu - seen_cpu;
        int64_t wall = mono_ms(CLOCK_MONOTONIC_COARSE) + 1 - since;
        if (seq != sent_seq) {
            int term = atomic_load(&term_pending);
            if (ran >= tmo || (term && wall >= TERM_GRACE_MS)) {
                ess_log_error("watchdog: a Lua call has used %lld ms of CPU (lua.hook_timeout_ms "
                              "%d%s); interrupting it",
                              (long long)ran, tmo, term ? ", SIGTERM pending" : "");
                sent_seq = seq;
                sent_cpu = cpu;
                pthread_kill(loop_thread, SIGUSR2);
            }
        } else if (cpu - sent_cpu >= tmo) {
            ess_log_error("watchdog: the Lua call did not stop %d ms (CPU) after its interrupt (a "
                          "loop compiled by the JIT, or a long C function); exiting with status "
                          "%d so that the supervisor restarts essd",
                          tmo, ESS_WATCHDOG_EXIT);
            _exit(ESS_WATCHDOG_EXIT);
        } else {
            pthread_kill(loop_thread, SIGUSR2); /* a no-op when already hooked */
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

int ess_watchdog_start(int ms)
{
    if (atomic_load(&running))
        return ESS_OK;
    ess_watchdog_set_timeout(ms);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL) != 0)
        return ESS_EIO;
    loop_thread = pthread_self();
    atomic_store(&running, 1);
    /* The watchdog thread must never take SIGUSR2 (or the loop's signals). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&dog_thread, NULL, dog, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        atomic_store(&running, 0);
        return ESS_EIO;
    }
    return ESS_OK;
}

void ess_watchdog_stop(void)
{
    if (!atomic_load(&running))
        return;
    pthread_mutex_lock(&mu);
    atomic_store(&running, 0);
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(dog_thread, NULL);
}
