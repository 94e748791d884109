/*
 * The listeners' front door (edge.c): essd's own listen sockets on the
 * libuv loop. Each accepted connection is read by essd until its request
 * head (and a declared body) is complete, checked (reqcheck.c), then
 * either answered here with a JSON error or handed with its bytes to an
 * lws vhost (lws_adopt_socket_vhost_readbuf). Slow and hostile clients so
 * never hold lws's header pool or file-descriptor table.
 */
#ifndef ESS_EDGE_H
#define ESS_EDGE_H

#include <stddef.h>

#include "app.h"

struct lws_vhost;

/* A request head (and body) must arrive whole within this time from
 * accept; slower connections are closed without an answer. */
#define ESS_EDGE_HEAD_TIMEOUT_MS 10000
/* listen() backlog; the kernel caps it at net.core.somaxconn (4096 by
 * default since Linux 5.4). With 1024, a burst that outran accept() by
 * more than that would have its handshakes dropped and retried by the
 * clients after 1 s and more. */
#define ESS_EDGE_BACKLOG 65535
/* After an error reply the write side is shut and input is read and
 * discarded for at most this long (or 16 MiB) before the close. */
#define ESS_EDGE_LINGER_MS 5000
#define ESS_EDGE_LINGER_BYTES (16 << 20)

typedef struct {
    const char *name; /* "public" or "internal", for messages */
    const char *host; /* "" = every interface */
    int port;
    int internal;            /* answers count in the internal API's metrics */
    size_t max_head;         /* request line + headers */
    long long max_body;      /* largest body read and passed on */
    int max_pending;         /* connections still being read; the oldest is dropped beyond */
    struct lws_vhost *vhost; /* where complete requests go */
} ess_edge_listen_t;

/** Bind and listen. ESS_OK, or ESS_EIO with a message naming the listener. */
int ess__edge_listen(ess_app_t *app, const ess_edge_listen_t *how, char *err, size_t errlen);

/**
 * The body edge.c read for the request on descriptor fd, if any: *data
 * (malloc'd, the caller frees) and *len. 1 when there was one.
 */
int ess__edge_take_body(int fd, char **data, size_t *len);

/**
 * SIGTERM: close the listen sockets; a request whose head is complete but
 * not yet handed to lws (its body still arriving) is answered 503, and a
 * connection without a whole head is dropped.
 */
void ess__edge_drain(void);

/** Close the listen sockets and drop connections not yet handed to lws. */
void ess__edge_stop(void);

#endif
