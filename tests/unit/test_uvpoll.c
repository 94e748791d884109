/*
 * http/uvpoll.c: uv_poll_start changing a started handle's events in place
 * must behave as libuv's own (events asked for are reported, events given
 * up are not, the callback is replaced), and must take the in-place path;
 * a handle that starts asking for POLLOUT in a callback is offered
 * UV_WRITABLE in the same loop turn, unless it was closed.
 */
#include "ess_test.h"
#include "http/uvpoll.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

/* The in-place path exists for the libuv versions whose layout uvpoll.c
 * knows (as its own check); with another libuv every call must still
 * behave, through libuv's own function. */
#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR >= 30 && UV_VERSION_MINOR < 46 && defined(__linux__)
#define FAST_EXPECTED 1
#else
#define FAST_EXPECTED 0
#endif

static int seen_events, calls, calls2;

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)p;
    if (status == 0)
        seen_events |= events;
    calls++;
}

static void on_poll2(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)status;
    (void)events;
    calls2++;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
}

/* One loop turn that waits at most 50 ms for the poll. */
static void turn(uv_loop_t *loop)
{
    seen_events = 0;
    calls = calls2 = 0;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_timer, 50, 0);
    uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_in_place_changes(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    unsigned long f0 = 0, f1 = 0;
    CHECK_EQ_INT(ess__uvpoll_active(&f0), FAST_EXPECTED);

    uv_poll_t p;
    CHECK(uv_poll_init(&loop, &p, sv[0]) == 0);
    CHECK(uv_poll_start(&p, UV_READABLE, on_poll) == 0); /* first start: libuv's own */
    turn(&loop);
    CHECK_EQ_INT(calls, 0); /* nothing to read */

    CHECK(uv_poll_start(&p, UV_READABLE | UV_WRITABLE, on_poll) == 0);
    turn(&loop);
    CHECK(seen_events & UV_WRITABLE);
    CHECK(!(seen_events & UV_READABLE));

    CHECK(uv_poll_start(&p, UV_READABLE, on_poll) == 0); /* writable given up */
    turn(&loop);
    CHECK_EQ_INT(calls, 0);

    CHECK(write(sv[1], "x", 1) == 1);
    turn(&loop);
    CHECK_EQ_INT(seen_events, UV_READABLE);

    CHECK(uv_poll_start(&p, UV_READABLE, on_poll) == 0);  /* unchanged */
    CHECK(uv_poll_start(&p, UV_WRITABLE, on_poll2) == 0); /* new callback, new events */
    turn(&loop);
    CHECK_EQ_INT(calls, 0);
    CHECK(calls2 >= 1);

    CHECK_EQ_INT(ess__uvpoll_active(&f1), FAST_EXPECTED);
    /* the four starts after the first took the in-place path */
    CHECK_EQ_INT(f1 - f0, FAST_EXPECTED ? 4 : 0);

    /* Stop and start again: libuv's own path, still correct. */
    CHECK(uv_poll_stop(&p) == 0);
    CHECK(uv_poll_start(&p, UV_READABLE, on_poll) == 0);
    turn(&loop);
    CHECK_EQ_INT(seen_events, UV_READABLE); /* the byte is still unread */
    CHECK_EQ_INT(ess__uvpoll_active(&f1), FAST_EXPECTED);
    CHECK_EQ_INT(f1 - f0, FAST_EXPECTED ? 4 : 0);

    ess__uvpoll_stop(1);
    uv_close((uv_handle_t *)&p, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    close(sv[0]);
    close(sv[1]);
    CHECK(uv_loop_close(&loop) == 0);
}

/* A handle that starts asking for POLLOUT inside a callback is offered
 * UV_WRITABLE at the end of the same loop turn; once it gives POLLOUT up
 * again, epoll never reports it. */
static int order[8], norder;

static void on_poll_rw(uv_poll_t *p, int status, int events)
{
    (void)status;
    if (norder < 8)
        order[norder++] = events;
    if (events & UV_READABLE) {
        char b[16];
        while (read(p->io_watcher.fd, b, sizeof b) > 0) {
        }
        uv_poll_start(p, UV_READABLE | UV_WRITABLE, on_poll_rw); /* wants to write */
    } else if (events & UV_WRITABLE) {
        uv_poll_start(p, UV_READABLE, on_poll_rw); /* wrote all it had */
    }
}

static uv_poll_t q_handle;

static void on_poll_closeq(uv_poll_t *p, int status, int events)
{
    (void)status;
    if (events & UV_READABLE) {
        char b[16];
        while (read(p->io_watcher.fd, b, sizeof b) > 0) {
        }
        uv_poll_start(&q_handle, UV_READABLE | UV_WRITABLE, on_poll2);
        uv_close((uv_handle_t *)&q_handle, NULL);
    }
}

static void test_writable_at_once(void)
{
    if (!FAST_EXPECTED) {
        printf("test_writable_at_once: skipped (this libuv has no early offer)\n");
        return;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    uv_poll_t p;
    CHECK(uv_poll_init(&loop, &p, sv[0]) == 0);
    CHECK(uv_poll_start(&p, UV_READABLE, on_poll_rw) == 0);
    turn(&loop);
    unsigned long e0 = ess__uvpoll_early();
    CHECK(write(sv[1], "x", 1) == 1);
    norder = 0;
    turn(&loop); /* one turn: readable, then writable without epoll */
    CHECK_EQ_INT(norder, 2);
    CHECK_EQ_INT(order[0], UV_READABLE);
    CHECK_EQ_INT(order[1], UV_WRITABLE);
    CHECK_EQ_INT(ess__uvpoll_early() - e0, 1);
    norder = 0;
    turn(&loop); /* POLLOUT was given up: nothing more */
    CHECK_EQ_INT(norder, 0);

    /* Asked for POLLOUT and closed in the same turn: not offered. */
    int sv2[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv2) == 0);
    CHECK(uv_poll_init(&loop, &q_handle, sv2[0]) == 0);
    CHECK(uv_poll_start(&q_handle, UV_READABLE, on_poll2) == 0);
    CHECK(uv_poll_start(&p, UV_READABLE, on_poll_closeq) == 0);
    turn(&loop);
    CHECK(write(sv[1], "y", 1) == 1);
    unsigned long e1 = ess__uvpoll_early();
    turn(&loop);
    CHECK_EQ_INT(ess__uvpoll_early() - e1, 0);
    CHECK_EQ_INT(calls2, 0);
    CHECK(uv_is_closing((uv_handle_t *)&q_handle));

    ess__uvpoll_stop(1);
    uv_close((uv_handle_t *)&p, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    close(sv[0]);
    close(sv[1]);
    close(sv2[0]);
    close(sv2[1]);
    CHECK(uv_loop_close(&loop) == 0);
}

ESS_TEST_MAIN(ESS_TEST(test_in_place_changes), ESS_TEST(test_writable_at_once))
