/*
 * The lws context on our libuv loop and its two vhosts. Owns the context's
 * lifetime and the drain sequence. The listen sockets are essd's own
 * (edge.c): lws gets each connection once its request head is complete
 * and checked, so the vhosts do not listen. The request and connection
 * handling live in api.c (internal) and ws.c (public).
 */
#include "http/server.h"
#include "ess.h"
#include "http/edge.h"
#include "http/http.h"
#include "http/uvpoll.h"
#include "util/log.h"

#include <libwebsockets.h>
#include <string.h>
#include <unistd.h>

static const struct lws_protocols internal_protocols[] = {
    {"ess-http", ess__api_callback, sizeof(ess_api_req_t), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const struct lws_protocols public_protocols[] = {
    /* tx_packet_size 0 would cap every send() at rx_buffer_size (4 KiB)
     * and buffer the rest of each 64 KiB batch inside lws. */
    {"ess-ws", ess__ws_callback, ESS_WS_PSS_SIZE, 4096, 0, NULL, ESS_WS_TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_logger(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    /* lws 4.1 logs every adoption with a read buffer at error level. */
    if (strstr(line, "adopt_socket_readbuf:") != NULL)
        level = LLL_DEBUG;
    if (level & LLL_ERR)
        ess_log_warn("lws: %.*s", (int)n, line);
    else
        ess_log_debug("lws: %.*s", (int)n, line);
}

/* lws 4.1 indexes its connections by descriptor when its table is as
 * large as the open-file limit; given a smaller fd_limit_per_thread it
 * switches to a packed table searched linearly on every poll event,
 * insertion and removal (wsi_from_fd: 5% of essd's CPU in a 1,000-client
 * fan-out) and drops any socket beyond it without a close frame. So the
 * table covers the whole limit (main.c keeps that limit at most
 * ESS_FD_LIMIT_MAX, beyond which lws would assume 2,560); admission is
 * essd's (public.max_connections, session.c). Its two arrays are calloc'd
 * and only touched where descriptors are used. */
static unsigned int fd_table_size(const ess_app_t *app)
{
    long open_max = sysconf(_SC_OPEN_MAX); /* -1: no limit */
    long want = (long)app->cfg->max_connections + 64;
    if (open_max < 0 || open_max > ESS_FD_LIMIT_MAX)
        open_max = ESS_FD_LIMIT_MAX;
    return (unsigned int)(open_max > want ? open_max : want);
}

/* lws stores a head in a table with some overhead per header: room for
 * twice what edge.c lets through. */
static unsigned short header_table_bytes(const ess_app_t *app)
{
    long n = (long)app->cfg->max_header_bytes * 2 + 1024;
    return (unsigned short)(n > 65535 ? 65535 : n);
}

static struct lws_vhost *vhost(ess_app_t *app, const char *name, int fake_port,
                               const struct lws_protocols *protocols)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = name;
    /* edge.c listens and adopts. lws picks a connection's vhost again from
     * its Host header among the vhosts with the same port number: the two
     * "no listen" values keep each connection on the vhost it was given
     * (with one value, "Host: internal" on the public port reached the
     * internal API). */
    info.port = fake_port;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.keepalive_timeout = 30;
    info.timeout_secs = 30;
    info.timeout_secs_ah_idle = 10;
    info.max_http_header_data = header_table_bytes(app);
    /* Pings on the public vhost are essd's (ws.c keepalive): lws 4.1's
     * retry_and_idle_policy keeps a timer per connection in one sorted
     * list, inserted by a walk from its head, which made every upgrade,
     * ping and pong cost O(connections). */
    return lws_create_vhost(app->lws, &info);
}

int ess_server_start(ess_app_t *app, char *err, size_t errlen)
{
    lws_set_log_level(getenv("ESS_LWS_LOG") ? atoi(getenv("ESS_LWS_LOG")) : (LLL_ERR | LLL_WARN),
                      lws_logger);

    /* lws's poll changes go through uvpoll.c's uv_poll_start. */
    ess_log_debug("server: poll changes in place: %s",
                  ess__uvpoll_active(NULL) ? "yes" : "no (another libuv version)");
    void *loops[1] = {app->loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = loops;
    info.user = app;
    /* lws clears app->lws itself once the context is wholly destroyed. */
    info.pcontext = &app->lws;
    info.max_http_header_data = header_table_bytes(app);
    /* A table is held only while a complete request is served (edge.c
     * reads the head), and tables are allocated as needed. */
    info.max_http_header_pool = 256;
    info.fd_limit_per_thread = fd_table_size(app);
    info.pt_serv_buf_size = 32 * 1024;
    info.timeout_secs = 30;
    app->lws = lws_create_context(&info);
    if (app->lws == NULL) {
        snprintf(err, errlen, "cannot create the libwebsockets context (libuv event lib)");
        return ESS_EIO;
    }
    struct lws_vhost *internal = vhost(app, "internal", CONTEXT_PORT_NO_LISTEN, internal_protocols);
    struct lws_vhost *public =
        vhost(app, "public", CONTEXT_PORT_NO_LISTEN_SERVER, public_protocols);
    if (internal == NULL || public == NULL) {
        snprintf(err, errlen, "cannot create the libwebsockets vhosts");
        return ESS_EIO;
    }
    /* The internal listener first: a probe must reach it even when the
     * public port is misconfigured. Bodies on the public port are read
     * only to be dropped (its plain-HTTP answer is a 404). */
    ess_edge_listen_t in = {"internal",
                            app->cfg->internal_listen.host,
                            app->cfg->internal_listen.port,
                            1,
                            (size_t)app->cfg->max_header_bytes,
                            (long long)app->cfg->max_body_bytes,
                            256,
                            internal};
    /* Connections still being read on the public port: 4096, or as many
     * as public.max_connections when that is more, so that a burst of
     * reconnects whose heads arrive after the accept is not cut down (a
     * slow one still goes at its deadline, or first when descriptors run
     * out). */
    int pub_pending = app->cfg->max_connections > 4096 ? app->cfg->max_connections : 4096;
    ess_edge_listen_t pub = {"public",
                             app->cfg->public_listen.host,
                             app->cfg->public_listen.port,
                             0,
                             (size_t)app->cfg->max_header_bytes,
                             4096,
                             pub_pending,
                             public};
    if (ess__edge_listen(app, &in, err, errlen) != ESS_OK ||
        ess__edge_listen(app, &pub, err, errlen) != ESS_OK)
        return ESS_EIO;
    ess_log_info("listening: public %s:%d, internal %s:%d",
                 app->cfg->public_listen.host[0] ? app->cfg->public_listen.host : "0.0.0.0",
                 app->cfg->public_listen.port,
                 app->cfg->internal_listen.host[0] ? app->cfg->internal_listen.host : "0.0.0.0",
                 app->cfg->internal_listen.port);
    return ESS_OK;
}

/* lws's deprecation callback takes no argument: one server per process. */
static ess_app_t *draining_app;
static void (*drain_done)(ess_app_t *app);

static int deprecated_cb(void)
{
    ess_log_info("server: all connections closed");
    if (drain_done)
        drain_done(draining_app);
    return 0;
}

void ess_server_drain(ess_app_t *app, void (*done)(ess_app_t *app))
{
    if (app->lws == NULL || draining_app != NULL)
        return;
    draining_app = app;
    drain_done = done;
    ess__edge_drain();
    lws_context_deprecate(app->lws, deprecated_cb);
}

void ess_server_destroy(ess_app_t *app)
{
    /* On a foreign loop the first call starts closing lws's handles; the
     * loop must run for them to close, and a call after that (when lws has
     * not already cleared app->lws through pcontext) frees what remains. */
    ess__edge_stop();
    ess__uvpoll_stop(0);
    ess__feed_stop();
    ess__ws_keepalive_stop();
    if (app->lws != NULL)
        lws_context_destroy(app->lws);
}
