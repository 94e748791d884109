/*
 * uv_poll_start, defined over libuv's own for this process (lws 4.1's
 * libuv glue and the edge call it). libuv 1.44's uv_poll_start first stops
 * the handle, which removes the descriptor from epoll (EPOLL_CTL_DEL), and
 * then registers it again on the next loop turn (EPOLL_CTL_ADD): two
 * system calls each time lws asks for or gives up POLLOUT around a write,
 * four per message on a live connection and ~10 per connection in a burst.
 * For a handle already started, with no other bits than readable and
 * writable, this version does what libuv's internal uv__io_start does
 * when the mask changes: it sets the pending mask and queues the watcher,
 * so the loop issues one EPOLL_CTL_MOD before it next waits, or nothing
 * when the mask is unchanged. It relies on libuv's unix loop layout (the
 * public uv__io_t and the loop's watcher queue, as in 1.44 and the 1.x
 * releases before 1.46); when the libuv loaded at run time is another
 * minor version, or for any other call (first start, stop, other bits),
 * libuv's own function runs. Owns nothing; loop thread only, as libuv.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "http/uvpoll.h"

#include <dlfcn.h>
#include <poll.h>
#include <stddef.h>
#include <uv.h>

#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR >= 30 && UV_VERSION_MINOR < 46 && defined(__linux__)
#define ESS_UVPOLL_FAST 1
#else
#define ESS_UVPOLL_FAST 0
#endif

typedef int (*poll_start_fn)(uv_poll_t *, int, uv_poll_cb);

static poll_start_fn real_start;
static int fast_ok = -1; /* -1: not checked yet */
static unsigned long fast_calls;

static void init(void)
{
    if (real_start == NULL)
        real_start = (poll_start_fn)dlsym(RTLD_NEXT, "uv_poll_start");
    if (fast_ok < 0)
        fast_ok = ESS_UVPOLL_FAST && real_start != NULL &&
                  (uv_version() >> 8) == ((unsigned)UV_VERSION_HEX >> 8);
}

int ess__uvpoll_active(unsigned long *fast)
{
    init();
    if (fast)
        *fast = fast_calls;
    return fast_ok;
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
            h->poll_cb = cb;
            w->pevents = pe;
            /* Queued for the loop's next epoll_ctl pass (a MOD), as
             * uv__io_start does; an unchanged mask needs nothing. */
            void **q = w->watcher_queue;
            void **head = loop->watcher_queue;
            if (w->events != pe && q[0] == (void *)q) {
                q[0] = head;
                q[1] = head[1];
                ((void **)q[1])[0] = q;
                head[1] = q;
            }
            return 0;
        }
    }
#endif
    if (real_start == NULL)
        return UV_ENOSYS;
    return real_start(h, events, cb);
}
