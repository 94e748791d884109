/*
 * The front door of both listeners (see edge.h). It owns the listen
 * sockets, the connections accepted but not yet handed to libwebsockets,
 * their deadlines and buffers, the JSON error replies written here and the
 * lingering close after them. libwebsockets 4.1 shares one pool of header
 * tables between the two listeners, keeps a slow client's table until its
 * idle timer fires, answers odd requests with an HTML 403 or a bare close,
 * turns CONNECT into a raw socket with no timeout and closes with unread
 * input (a reset instead of the 413): reading the head here first avoids
 * all of it. lws only ever receives a complete, checked request.
 */
#include "http/edge.h"
#include "ess.h"
#include "http/http.h"
#include "http/reqcheck.h"
#include "metrics/metrics.h"
#include "util/log.h"

#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READING, WRITING, LINGERING };

typedef struct edge_conn edge_conn_t;

typedef struct {
    ess_app_t *app;
    ess_edge_listen_t how;
    int fd;
    int active;
    uv_poll_t poll;
    uint64_t paused_until;    /* accept() hit the descriptor limit */
    edge_conn_t *head, *tail; /* oldest first */
    int npending;
} edge_listener_t;

struct edge_conn {
    uv_poll_t poll; /* initialised only when the connection must wait (polling) */
    int fd;
    int state;
    int polling;
    edge_listener_t *l;
    edge_conn_t *prev, *next;
    uint64_t deadline; /* uv_now() ms */
    char *buf;
    size_t len, cap, scanned;
    size_t head_len; /* 0 until the head is complete */
    char *body;      /* the declared body, read here too */
    size_t body_len, body_want;
    char out[1024];
    size_t out_len, out_sent, drained;
};

/* Bodies read here, waiting for api.c to take them (by descriptor). */
typedef struct edge_body {
    struct edge_body *next;
    int fd;
    char *data;
    size_t len;
} edge_body_t;

static edge_body_t *bodies;
static edge_listener_t listeners[2];
static int nlisteners;
static uv_timer_t sweep_timer;
static int sweep_running;
static int stopped; /* ess__edge_stop ran: nothing more goes to lws */

static void conn_on_io(uv_poll_t *p, int status, int events);

static void unlink_conn(edge_conn_t *c)
{
    edge_listener_t *l = c->l;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->npending--;
}

static void forget_body(int fd)
{
    for (edge_body_t **p = &bodies; *p; p = &(*p)->next)
        if ((*p)->fd == fd) {
            edge_body_t *b = *p;
            *p = b->next;
            free(b->data);
            free(b);
            return;
        }
}

int ess__edge_take_body(int fd, char **data, size_t *len)
{
    for (edge_body_t **p = &bodies; *p; p = &(*p)->next)
        if ((*p)->fd == fd) {
            edge_body_t *b = *p;
            *p = b->next;
            *data = b->data;
            *len = b->len;
            free(b);
            return 1;
        }
    return 0;
}

static void free_conn_now(edge_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c->body);
    free(c);
}

static void free_conn(uv_handle_t *h)
{
    free_conn_now(h->data);
}

/* Watch c for events: its poll handle exists only from the first wait on
 * (a head that arrived with the connection is read and handed on without
 * one: no epoll registration, no extra loop turn). */
static void watch(edge_conn_t *c, int events)
{
    if (!c->polling) {
        if (uv_poll_init(c->l->app->loop, &c->poll, c->fd) != 0) {
            ess_log_warn("%s listener: cannot watch a connection", c->l->how.name);
            return; /* its deadline closes it */
        }
        c->poll.data = c;
        c->polling = 1;
    }
    uv_poll_start(&c->poll, events, conn_on_io);
}

static void drop(edge_conn_t *c)
{
    unlink_conn(c);
    if (!c->polling) {
        free_conn_now(c);
        return;
    }
    /* uv_close stops the poll at once, so the descriptor can go now: an
     * accept() out of descriptors gets this one back immediately. */
    uv_close((uv_handle_t *)&c->poll, free_conn);
    close(c->fd);
    c->fd = -1;
}

/* The descriptor goes to lws. When the edge had to watch it, only once
 * the poll handle is closed (adopt, from uv_close): libuv removes a
 * closing handle's descriptor from epoll, so lws may only register it
 * after that. A connection whose head came with it was never watched and
 * is handed over at once. */
static void adopt_conn(edge_conn_t *c)
{
    edge_listener_t *l = c->l;
    if (stopped || l->app->lws == NULL || l->app->draining) {
        free_conn_now(c);
        return;
    }
    if (c->body != NULL && l->how.internal) {
        edge_body_t *b = ess_xcalloc(1, sizeof *b);
        b->fd = c->fd;
        b->data = c->body;
        b->len = c->body_len;
        b->next = bodies;
        bodies = b;
        c->body = NULL;
    }
    /* lws copies the bytes; on failure it closes the descriptor itself
     * (a stashed body is dropped when the descriptor number is reused). */
    ess__ws_guard_fd(c->fd, !l->how.internal);
    lws_adopt_socket_vhost_readbuf(l->how.vhost, c->fd, c->buf, c->len);
    c->fd = -1;
    free_conn_now(c);
}

static void adopt(uv_handle_t *h)
{
    adopt_conn(h->data);
}

/* lws 4.1 cannot take a body along with an adopted head: it reads the
 * head's own bytes again as the body (and then spins). So a body is read
 * here and its Content-Length removed from the head lws parses; api.c
 * takes the body with ess__edge_take_body(). */
static void strip_content_length(edge_conn_t *c)
{
    size_t w = 0;
    for (size_t r = 0; r < c->len;) {
        const char *nl = memchr(c->buf + r, '\n', c->len - r);
        size_t n = nl ? (size_t)(nl - (c->buf + r)) + 1 : c->len - r;
        if (!(n >= 15 && strncasecmp(c->buf + r, "content-length:", 15) == 0)) {
            memmove(c->buf + w, c->buf + r, n);
            w += n;
        }
        r += n;
    }
    c->len = w;
}

static void reply(edge_conn_t *c, const ess_req_head_t *h, int status, const char *detail);

static void hand_to_lws(edge_conn_t *c)
{
    if (c->l->app->draining) {
        /* A request completed after SIGTERM: answered, never dropped. */
        reply(c, NULL, 503, "the server is shutting down");
        return;
    }
    strip_content_length(c);
    unlink_conn(c);
    if (!c->polling) {
        adopt_conn(c);
        return;
    }
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, adopt);
}

static void access_log(edge_conn_t *c, const ess_req_head_t *h, int status)
{
    edge_listener_t *l = c->l;
    char peer[64] = "-";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0)
        getnameinfo((struct sockaddr *)&ss, sl, peer, sizeof peer, NULL, 0, NI_NUMERICHOST);
    size_t tl = h && h->target_len < 200 ? h->target_len : (h ? 200 : 0);
    const char *m = h && h->method[0] ? h->method : "-";
    if (l->how.internal) {
        ess_log_info("access: %s \"%s %.*s\" %d (refused before routing)", peer, m, (int)tl,
                     h ? c->buf + h->target_off : "", status);
        char labels[64];
        snprintf(labels, sizeof labels, "route=\"invalid\",code=\"%d\"", status);
        ess_metrics_add("ess_http_requests_total", labels, 1);
    } else {
        ess_log_debug("public: %s \"%s %.*s\" %d (refused before the upgrade)", peer, m, (int)tl,
                      h ? c->buf + h->target_off : "", status);
    }
}

static void finish_reply(edge_conn_t *c);

/* Write what is left of the reply; 1 when it is all out. */
static int flush_reply(edge_conn_t *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        c->out_sent += (size_t)n;
    }
    return 1;
}

static void reply(edge_conn_t *c, const ess_req_head_t *h, int status, const char *detail)
{
    char body[256];
    char lim[96];
    if (status == 413) {
        snprintf(lim, sizeof lim, "Request body larger than %lld bytes", c->l->how.max_body);
        detail = lim;
    }
    int bl = snprintf(body, sizeof body, "{\"detail\":\"%s\"}", detail ? detail : "Bad Request");
    const char *allow = h && h->allow ? h->allow : NULL;
    int n = snprintf(c->out, sizeof c->out,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     "connection: close\r\n%s%s%s\r\n%s",
                     status, ess_req_reason(status), bl, allow ? "allow: " : "", allow ? allow : "",
                     allow ? "\r\n" : "", body);
    c->out_len = n > 0 && (size_t)n < sizeof c->out ? (size_t)n : 0;
    c->out_sent = 0;
    access_log(c, h, status);
    c->state = WRITING;
    c->deadline = uv_now(c->l->app->loop) + ESS_EDGE_LINGER_MS;
    int r = flush_reply(c);
    if (r < 0) {
        drop(c);
        return;
    }
    if (r == 0) {
        watch(c, UV_WRITABLE);
        return;
    }
    finish_reply(c);
}

/* The reply is out: shut our side and read what the client still sends,
 * so that the close does not reset the connection (and lose the reply)
 * while the client is still writing its body. */
static void finish_reply(edge_conn_t *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = LINGERING;
    c->deadline = uv_now(c->l->app->loop) + ESS_EDGE_LINGER_MS;
    watch(c, UV_READABLE);
}

static void on_head(edge_conn_t *c)
{
    edge_listener_t *l = c->l;
    ess_req_limits_t lim = {l->how.max_head, l->how.max_body};
    ess_req_head_t h;
    ess_req_check(c->buf, c->head_len, &lim, &h);
    if (h.status) {
        reply(c, &h, h.status, h.detail);
        return;
    }
    if (h.content_length > 0) {
        c->body_want = (size_t)h.content_length;
        c->body = ess_xmalloc(c->body_want);
    }
    if (h.expect_continue && h.content_length > 0) {
        /* lws 4.1 does not answer "Expect: 100-continue": do it here, so
         * the client sends its body now rather than after a pause. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL) != (ssize_t)sizeof cont - 1) {
            drop(c);
            return;
        }
    }
    if (c->body_want == 0)
        hand_to_lws(c);
    else
        watch(c, UV_READABLE | UV_DISCONNECT);
}

static void on_readable(edge_conn_t *c)
{
    edge_listener_t *l = c->l;
    if (c->state == LINGERING) {
        char sink[16384];
        for (;;) {
            ssize_t n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0) {
                c->drained += (size_t)n;
                if (c->drained > ESS_EDGE_LINGER_BYTES) {
                    drop(c);
                    return;
                }
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            drop(c); /* end of input or an error: the client has what we sent */
            return;
        }
    }
    if (c->head_len) {
        ssize_t n = recv(c->fd, c->body + c->body_len, c->body_want - c->body_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->polling)
                watch(c, UV_READABLE | UV_DISCONNECT);
            return;
        }
        if (n <= 0) {
            drop(c);
            return;
        }
        c->body_len += (size_t)n;
        if (c->body_len == c->body_want)
            hand_to_lws(c);
        return;
    }
    /* Read no further than the blank line that ends the head: what follows
     * (a body, WebSocket frames) stays in the socket for lws to read as
     * usual. lws 4.1 spins when a body arrives with the head in the
     * adoption buffer. So peek, then take only the head's bytes. */
    size_t limit = l->how.max_head + 3;
    for (;;) {
        if (c->len == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 1024;
            if (c->cap > limit)
                c->cap = limit;
            c->buf = ess_xrealloc(c->buf, c->cap);
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->polling) /* the head has not (all) arrived yet: wait for it */
                watch(c, UV_READABLE | UV_DISCONNECT);
            return;
        }
        if (n <= 0) {
            drop(c); /* closed before a whole request: nothing to answer */
            return;
        }
        ess_req_limits_t lim = {l->how.max_head, l->how.max_body};
        int status = 0;
        size_t end = ess_req_head_end(c->buf, c->len + (size_t)n, &lim, &c->scanned, &status);
        size_t take = end ? end - c->len : (size_t)n;
        if (recv(c->fd, c->buf + c->len, take, 0) != (ssize_t)take) {
            drop(c);
            return;
        }
        c->len += take;
        if (status) {
            reply(c, NULL, status,
                  status == 414 ? "URI Too Long" : "Request Header Fields Too Large");
            return;
        }
        if (end) {
            c->head_len = end;
            on_head(c);
            return;
        }
        if (c->len >= limit) /* cannot happen: ess_req_head_end refuses first */
            return;
    }
}

static void conn_on_io(uv_poll_t *p, int status, int events)
{
    edge_conn_t *c = p->data;
    if (status < 0) {
        drop(c);
        return;
    }
    if (c->state == WRITING) {
        if (!(events & UV_WRITABLE))
            return;
        int r = flush_reply(c);
        if (r < 0)
            drop(c);
        else if (r > 0)
            finish_reply(c);
        return;
    }
    if (events & (UV_READABLE | UV_DISCONNECT))
        on_readable(c);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
    edge_listener_t *l = p->data;
    (void)events;
    if (status < 0 || !l->active)
        return;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                if (l->head) {
                    drop(l->head); /* the oldest slow client gives way */
                    continue;
                }
                static uint64_t warned;
                uint64_t now = uv_now(l->app->loop);
                if (now - warned > 10000) {
                    ess_log_warn("%s listener: out of file descriptors, pausing accept()",
                                 l->how.name);
                    warned = now;
                }
                uv_poll_stop(&l->poll);
                l->paused_until = now + 100;
            }
            return;
        }
        if (l->app->draining) {
            close(fd);
            continue;
        }
        if (l->npending >= l->how.max_pending && l->head)
            drop(l->head);
        forget_body(fd);         /* left by an earlier connection on this number */
        ess__ws_guard_fd(fd, 0); /* likewise a frame check (ws.c) */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        edge_conn_t *c = ess_xcalloc(1, sizeof *c);
        c->fd = fd;
        c->l = l;
        c->state = READING;
        c->deadline = uv_now(l->app->loop) + ESS_EDGE_HEAD_TIMEOUT_MS;
        c->prev = l->tail;
        if (l->tail)
            l->tail->next = c;
        else
            l->head = c;
        l->tail = c;
        l->npending++;
        /* In a burst the request head is usually there already: read it
         * now; on_readable starts watching the socket when it is not. */
        on_readable(c);
    }
}

/* Every 250 ms: close connections past their deadline, resume a paused
 * accept(). */
static void on_sweep(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < nlisteners; i++) {
        edge_listener_t *l = &listeners[i];
        uint64_t now = uv_now(l->app->loop);
        for (edge_conn_t *c = l->head, *next; c; c = next) {
            next = c->next;
            if (now >= c->deadline)
                drop(c);
        }
        if (l->active && l->paused_until && now >= l->paused_until) {
            l->paused_until = 0;
            uv_poll_start(&l->poll, UV_READABLE, on_accept);
        }
    }
}

static int bind_listen(const char *host, int port, int *out_errno)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = host[0] ? AF_UNSPEC : AF_INET6;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    int rc = getaddrinfo(host[0] ? host : NULL, ports, &hints, &res);
    if (rc != 0 && !host[0]) {
        hints.ai_family = AF_INET;
        rc = getaddrinfo(NULL, ports, &hints, &res);
    }
    if (rc != 0) {
        *out_errno = -rc; /* negative: a getaddrinfo error */
        return -1;
    }
    int fd = -1;
    *out_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            *out_errno = errno;
            continue;
        }
        int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6 && !host[0])
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, ESS_EDGE_BACKLOG) == 0)
            break;
        *out_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0 && !host[0] && *out_errno == EAFNOSUPPORT)
        return bind_listen("0.0.0.0", port, out_errno);
    return fd;
}

int ess__edge_listen(ess_app_t *app, const ess_edge_listen_t *how, char *err, size_t errlen)
{
    if (nlisteners == (int)ESS_ARRAY_SIZE(listeners)) {
        snprintf(err, errlen, "too many listeners");
        return ESS_EIO;
    }
    int e = 0;
    int fd = bind_listen(how->host, how->port, &e);
    if (fd < 0) {
        const char *why = e < 0             ? gai_strerror(-e)
                          : e == EADDRINUSE ? "address already in use"
                                            : strerror(e);
        snprintf(err, errlen, "cannot listen on %s %s:%d: %s", how->name,
                 how->host[0] ? how->host : "0.0.0.0", how->port, why);
        return ESS_EIO;
    }
    edge_listener_t *l = &listeners[nlisteners];
    memset(l, 0, sizeof *l);
    l->app = app;
    l->how = *how;
    l->fd = fd;
    if (uv_poll_init(app->loop, &l->poll, fd) != 0) {
        close(fd);
        snprintf(err, errlen, "cannot watch the %s listen socket", how->name);
        return ESS_EIO;
    }
    nlisteners++;
    l->active = 1;
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_accept);
    if (!sweep_running) {
        uv_timer_init(app->loop, &sweep_timer);
        uv_timer_start(&sweep_timer, on_sweep, 250, 250);
        sweep_running = 1;
    }
    return ESS_OK;
}

static void close_listen(uv_handle_t *h)
{
    edge_listener_t *l = h->data;
    close(l->fd);
    l->fd = -1;
}

static void close_listeners(void)
{
    for (int i = 0; i < nlisteners; i++) {
        edge_listener_t *l = &listeners[i];
        if (l->active) {
            l->active = 0;
            uv_close((uv_handle_t *)&l->poll, close_listen);
        }
    }
}

void ess__edge_drain(void)
{
    close_listeners();
    for (int i = 0; i < nlisteners; i++) {
        edge_conn_t *next;
        for (edge_conn_t *c = listeners[i].head; c != NULL; c = next) {
            next = c->next;
            if (c->state != READING)
                continue; /* already answering */
            if (c->head_len)
                reply(c, NULL, 503, "the server is shutting down");
            else
                drop(c); /* no whole request yet: nothing to answer */
        }
    }
}

void ess__edge_stop(void)
{
    stopped = 1;
    while (bodies) {
        edge_body_t *b = bodies;
        bodies = b->next;
        free(b->data);
        free(b);
    }
    for (int i = 0; i < nlisteners; i++) {
        edge_listener_t *l = &listeners[i];
        while (l->head)
            drop(l->head);
    }
    close_listeners();
    if (sweep_running) {
        sweep_running = 0;
        uv_close((uv_handle_t *)&sweep_timer, NULL);
    }
}
