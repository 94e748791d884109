/*
 * The public listener's lws callback. Plain HTTP requests get a JSON 404;
 * each WebSocket is a gateway session (gateway/session.c), stored in the
 * per-session data and freed when lws reports the connection closed.
 */
#include "ess.h"
#include "app.h"
#include "gateway/session.h"
#include "http/http.h"

#include <string.h>

static const char not_found[] = "{\"detail\":\"Not Found\"}";

int ess__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    ess_session_t **ps = user;
    ess_app_t *app = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        uint8_t buf[LWS_PRE + 512];
        uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, 404, "application/json", sizeof not_found - 1, &p,
                                        end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* A body is read and dropped. Left to lws's dummy handler, its
         * completion started the next request on the connection before our
         * 404 body was written, so a request hidden in the body was answered
         * in the middle of the first response (an HTTP desync behind an
         * ingress). */
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        uint8_t buf[LWS_PRE + sizeof not_found];
        memcpy(buf + LWS_PRE, not_found, sizeof not_found - 1);
        lws_write(wsi, buf + LWS_PRE, sizeof not_found - 1, LWS_WRITE_HTTP_FINAL);
        /* No keep-alive on the public port: nothing but upgrades belong here,
         * and closing leaves no unread body to be parsed as a request. */
        return -1;
    }
    case LWS_CALLBACK_ESTABLISHED:
        *ps = ess_session_open(app, wsi);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return *ps ? ess_session_writeable(*ps) : -1;
    case LWS_CALLBACK_RECEIVE:
        /* Clients have nothing to say: their frames are read and dropped,
         * but one larger than public.max_frame_bytes closes the connection. */
        if (*ps && len + lws_remaining_packet_payload(wsi) > (size_t)app->cfg->max_frame_bytes)
            ess_session_close(*ps, 1009, "frame too large", 0);
        return 0;
    case LWS_CALLBACK_CLOSED:
        ess_session_closed(*ps);
        *ps = NULL;
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
