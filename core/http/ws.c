/*
 * The public listener. Plain HTTP requests get a JSON 404; WebSocket
 * connections are handed to the gateway.
 */
#include "ess.h"
#include "app.h"
#include "http/http.h"

#include <string.h>

int ess__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        static const char body[] = "{\"detail\":\"Not Found\"}";
        uint8_t buf[LWS_PRE + 512];
        uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, 404, "application/json", sizeof body - 1, &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        static const char body[] = "{\"detail\":\"Not Found\"}";
        uint8_t buf[LWS_PRE + sizeof body];
        memcpy(buf + LWS_PRE, body, sizeof body - 1);
        if (lws_write(wsi, buf + LWS_PRE, sizeof body - 1, LWS_WRITE_HTTP_FINAL) < 0)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        static const char reason_text[] = "the event stream is unknown";
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)reason_text,
                         sizeof reason_text - 1);
        return -1;
    }
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
