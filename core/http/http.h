/*
 * Internals shared by the files of core/http: the per-request state of the
 * internal API and the lws protocol callbacks that server.c registers.
 */
#ifndef ESS_HTTP_H
#define ESS_HTTP_H

#include <libwebsockets.h>
#include <stdint.h>

#include "util/buf.h"

typedef struct {
    int method;          /* LWSHUMETH_*, or -1 */
    char *path;          /* owned */
    char *query;         /* owned, "" when none */
    ess_buf_t body;      /* request body */
    int64_t expect_body; /* Content-Length, or 0 */
    int too_large;
    int refuse; /* 400 (NUL in the path) or 411 (chunked body); closes after */
    int status;
    ess_buf_t resp; /* response body */
    size_t resp_sent;
    int phase;       /* 0 reading, 1 headers sent and body being written,
                      * 2 could not answer (close), 3 done (closing),
                      * 4 waiting for the registry (registry.backend: stream),
                      * 5 a live feed (feed.c), not in flight */
    void *pending;   /* script/api.h ess_api_pending_t while phase 4 */
    void *ready;     /* its ess_api_response_t once answered, until written */
    struct lws *wsi; /* the connection, for the deferred answer */
    uint64_t start_ns;
    char *route; /* owned: route label for metrics */
} ess_api_req_t;

/* The console's live feed (feed.c): take over a GET /admin/feed connection
 * the router answered 200 (0, or -1 when full: answer normally); its write
 * callback; forget it when it closes; free the feed at exit. */
int ess__feed_adopt(struct lws *wsi, struct ess_app_s *app);
int ess__feed_writeable(struct lws *wsi);
void ess__feed_drop(struct lws *wsi);
void ess__feed_stop(void);

int ess__api_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len);
int ess__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);

/* The edge hands a socket to lws: check the frames read from it when it is
 * on the public listener (ws.c, the client frame check); forget it else. */
void ess__ws_guard_fd(int fd, int public);

/* Stop the public keepalive's timer (ws.c); at shutdown. */
void ess__ws_keepalive_stop(void);

struct ess_session_s;

/* The public WebSocket per-connection data (lws allocates it, ws.c fills it). */
typedef struct ess_ws_pss_s {
    struct ess_session_s *session; /* gateway/session.c; freed at LWS_CALLBACK_CLOSED */
    int close_sent;                /* the close frame is handed to lws */
    int counted;                   /* counted in app->ws_open */
    int deflate;                   /* permessage-deflate answered (set at ADD_HEADERS) */
    /* Keepalive (ws.c): on its list while established. */
    struct lws *wsi;
    struct ess_ws_pss_s *ka_prev, *ka_next;
    uint64_t heard_ms; /* loop time of the last frame from the peer, or the upgrade */
    int ping_due;      /* a ping waits for the next WRITEABLE */
    int pinged;        /* a ping went out since heard_ms */
} ess_ws_pss_t;
#define ESS_WS_PSS_SIZE sizeof(ess_ws_pss_t)
/* Largest single send() lws makes on a public WebSocket: one output block
 * (gateway/delivery.h ESS_OUT_BLOCK) goes out in one call. */
#define ESS_WS_TX_PACKET (64 * 1024)

#endif
