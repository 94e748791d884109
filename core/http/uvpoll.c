/*
 * uv_poll_start and uv_close, defined over libuv's own for this process
 * (lws 4.1's libuv glue and the edge call them). libuv 1.44's
 * uv_poll_start first stops the handle, which removes the descriptor from
 * epoll (EPOLL_CTL_DEL), and then registers it again on the next loop turn
 * (EPOLL_CTL_ADD): two system calls each time lws asks for or gives up
 * POLLOUT around a write, four per message on a live connection and ~10
 * per connection in a burst. For a handle already started, with no other
 * bits than readable and writable, this version does what libuv's
 * internal uv__io_start does when the mask changes: it sets the pending
 * mask and queues the watcher, so the loop issues one EPOLL_CTL_MOD before
 * it next waits, or nothing when the mask is back to what epoll has.
 *
 * Writable at once: a handle that starts asking for POLLOUT is also
 * offered UV_WRITABLE from a check handle at the end of the same loop
 * turn, without waiting for epoll: a socket whose peer keeps up takes the
 * write (lws buffers what it does not, and asks for POLLOUT again, which
 * then goes through epoll). A message read from the broker is so written
 * to its WebSocket in the turn that read it, with no epoll_ctl and no
 * extra epoll_wait. Each handle is offered once per request; uv_close
 * takes a handle off the list before it can be freed.
 *
 * It relies on libuv's unix loop layout (the public uv__io_t and the
 * loop's watcher queue, as in 1.44 and the 1.x releases before 1.46); when
 * the libuv loaded at run time is another minor version, or for any other
 * call (first start, stop, other bits), libuv's own function runs and
 * nothing is offered early. Owns the check handle and the list; loop
 * thread only, as libuv.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "http/uvpoll.h"

#include <dlfcn.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <uv.h>

#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR >= 30 && UV_VERSION_MINOR < 46 &&                    \
    defined(__linux__) && !defined(ESS_UVPOLL_FORCE_FALLBACK)
#define ESS_UVPOLL_FAST 1
#else
#define ESS_UVPOLL_FAST 0
#endif

typedef int (*poll_start_fn)(uv_poll_t *, int, uv_poll_cb);
typedef void (*close_fn)(uv_handle_t *, uv_close_cb);

static poll_start_fn real_start;
static close_fn real_close;
static int fast_ok = -1; /* -1: not checked yet */
static unsigned long fast_calls, early_calls;

/* Handles that started asking for POLLOUT in this loop turn. */
static uv_poll_t **early;
static size_t nearly;
static uv_check_t check;
static uv_loop_t *check_loop;
static int check_state; /* 0 none, 1 running, 2 closing or stopped */
static int check_reuse; /* back to 0 once closed */

static void init(void)
{
    if (real_start == NULL)
        real_start = (poll_start_fn)dlsym(RTLD_NEXT, "uv_poll_start");
    if (real_close == NULL)
        real_close = (close_fn)dlsym(RTLD_NEXT, "uv_close");
    if (fast_ok < 0)
        fast_ok = ESS_UVPOLL_FAST && real_start != NULL && real_close != NULL &&
                  (uv_version() >> 8) == ((unsigned)UV_VERSION_HEX >> 8);
}

int ess__uvpoll_active(unsigned long *fast)
{
    init();
    if (fast)
        *fast = fast_calls;
    return fast_ok;
}

unsigned long ess__uvpoll_early(void)
{
    return early_calls;
}

#if ESS_UVPOLL_FAST /* the early offer needs libuv's watcher layout */
static size_t capearly;

static void on_check(uv_check_t *c)
{
    (void)c;
    /* Callbacks may add handles (appended, handled in this pass too) or
     * close some (removed by uv_close, which clears their slot). */
    for (size_t i = 0; i < nearly; i++) {
        uv_poll_t *h = early[i];
        early[i] = NULL;
        if (h == NULL || !uv_is_active((uv_handle_t *)h) || uv_is_closing((uv_handle_t *)h))
            continue;
        const uv__io_t *w = &h->io_watcher;
        if (!(w->pevents & POLLOUT) || (w->events & POLLOUT) || h->poll_cb == NULL)
            continue; /* no longer asked for, or epoll already reports it */
        early_calls++;
        h->poll_cb(h, 0, UV_WRITABLE);
    }
    nearly = 0;
}

static void offer_early(uv_poll_t *h)
{
    if (check_state == 2 || (check_state == 1 && check_loop != h->loop))
        return;
    if (check_state == 0) {
        if (uv_check_init(h->loop, &check) != 0)
            return;
        uv_check_start(&check, on_check);
        uv_unref((uv_handle_t *)&check);
        check_loop = h->loop;
        check_state = 1;
    }
    if (nearly == capearly) {
        size_t cap = capearly ? capearly * 2 : 64;
        uv_poll_t **v = realloc(early, cap * sizeof *v);
        if (v == NULL)
            return; /* epoll reports it a turn later */
        early = v;
        capearly = cap;
    }
    early[nearly++] = h;
}
#endif

static void on_check_closed(uv_handle_t *h)
{
    (void)h;
    check_loop = NULL;
    if (check_reuse)
        check_state = 0;
}

void ess__uvpoll_stop(int reuse)
{
    check_reuse = reuse;
    if (check_state != 1)
        return;
    check_state = 2;
    nearly = 0;
    uv_close((uv_handle_t *)&check, on_check_closed);
}

void uv_close(uv_handle_t *h, uv_close_cb cb)
{
    init();
    if (h->type == UV_POLL)
        for (size_t i = 0; i < nearly; i++)
            if (early[i] == (uv_poll_t *)h)
                early[i] = NULL;
    real_close(h, cb);
}

int uv_poll_start(uv_poll_t *h, int events, uv_poll_cb cb)
{
    init();
#if ESS_UVPOLL_FAST
    if (fast_ok && events != 0 && (events & ~(UV_READABLE | UV_WRITABLE)) == 0 &&
        uv_is_active((uv_handle_t *)h) && !uv_is_closing((uv_handle_t *)h)) {
        uv__io_t *w = &h->io_watcher;
        unsigned pe = (events & UV_READABLE ? POLLIN : 0u) | (events & UV_WRITABLE ? POLLOUT : 0u);
        uv_loop_t *loop = h->loop;
        if (w->fd >= 0 && (unsigned)w->fd < loop->nwatchers && loop->watchers[w->fd] == w) {
            fast_calls++;
            int starts_writing = (pe & POLLOUT) && !(w->pevents & POLLOUT);
            h->poll_cb = cb;
            w->pevents = pe;
            /* Queued for the loop's next epoll_ctl pass (a MOD), as
             * uv__io_start does; a mask back to what epoll has needs
             * nothing, so a queued change is taken back. */
            void **q = w->watcher_queue;
            void **head = loop->watcher_queue;
            int queued = q[0] != (void *)q;
            if (w->events != pe && !queued) {
                q[0] = head;
                q[1] = head[1];
                ((void **)q[1])[0] = q;
                head[1] = q;
            } else if (w->events == pe && queued) {
                ((void **)q[1])[0] = q[0];
                ((void **)q[0])[1] = q[1];
                q[0] = q[1] = q;
            }
            if (starts_writing)
                offer_early(h);
            return 0;
        }
    }
#endif
    if (real_start == NULL)
        return UV_ENOSYS;
    return real_start(h, events, cb);
}
