/*
 * The Lua watchdog: a thread that notices a Lua call on the loop thread
 * using more than lua.hook_timeout_ms of CPU time and ends it. First it interrupts
 * the call (a debug hook set from a signal handler on the loop thread
 * raises an error at the next interpreted instruction); when the call has
 * not returned one more timeout later (a loop compiled by the JIT, a long
 * C function), it logs and exits the process with ESS_WATCHDOG_EXIT so
 * the supervisor restarts it. A SIGTERM that arrives while a call runs
 * interrupts it at once. The module owns the thread and the signal it
 * uses (SIGUSR2); script/vm.c reports every outermost Lua call to it.
 */
#ifndef ESS_WATCHDOG_H
#define ESS_WATCHDOG_H

#include <lua.h>

/** The exit status when a stuck Lua call cannot be interrupted. */
#define ESS_WATCHDOG_EXIT 70

/** Start the thread (once) with this timeout; ESS_OK or ESS_EIO. */
int ess_watchdog_start(int timeout_ms);

/** Change the timeout (a reload); any thread. */
void ess_watchdog_set_timeout(int timeout_ms);

/** Stop and join the thread. */
void ess_watchdog_stop(void);

/**
 * The loop thread begins an outermost Lua call on L. Cheap: two stores and
 * a coarse clock read. Nested calls are the caller's to filter out.
 */
void ess_watchdog_enter(lua_State *L);

/**
 * The outermost call on L returned. Returns 1 when the watchdog had
 * interrupted it (its error is the watchdog's), else 0.
 */
int ess_watchdog_leave(lua_State *L);

/**
 * The loop thread starts a nested Lua call on another state L (a reload
 * building a new VM inside an API handler): make L the one an interrupt
 * targets. Returns the previous state for ess_watchdog_leave_nested.
 */
lua_State *ess_watchdog_enter_nested(lua_State *L);

/**
 * The nested call on L returned; prev becomes the target again. Returns 1
 * when the nested call was interrupted; the outer call then gets a fresh
 * timeout for the rest of its work (it is not interrupted itself).
 */
int ess_watchdog_leave_nested(lua_State *L, lua_State *prev);

/** Set by the SIGTERM/SIGINT handler (loop/signals.c): interrupt at once. */
void ess_watchdog_note_terminate(void);

/** Interrupted calls since start (for tests and metrics). */
unsigned long ess_watchdog_interrupts(void);

#endif
