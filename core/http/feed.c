/*
 * The operator console's live feed: GET /admin/feed as Server-Sent Events
 * on the internal port. The Lua router authorizes and answers 200 for the
 * route; http/api.c then hands the connection here instead of writing a
 * body. Owns the list of feed connections (at most ESS_FEED_MAX) and its
 * one-second timer, which exists only while someone listens: each second
 * one event (metrics/series.c's latest sample and the totals) is rendered
 * once and offered to every feed connection. Nothing here runs per
 * message. A feed connection does not count as in flight for the drain,
 * and is closed when the drain starts.
 */
#include "ess.h"
#include "app.h"
#include "http/http.h"
#include "metrics/metrics.h"
#include "metrics/series.h"
#include "util/log.h"

#include <string.h>

#define ESS_FEED_MAX 16

typedef struct {
    struct lws *wsi;
    uint64_t sent; /* last event number written */
} feed_t;

static struct {
    ess_app_t *app;
    feed_t f[ESS_FEED_MAX];
    int n;
    uv_timer_t timer;
    int timer_init, timer_on;
    uint64_t seq;
    ess_buf_t event; /* event number seq, ready to write (with LWS_PRE in front) */
} F;

static void render(void)
{
    ess_buf_reset(&F.event);
    ess_buf_reserve(&F.event, LWS_PRE + 1024);
    F.event.len = LWS_PRE;
    F.seq++;
    ess_buf_appendf(&F.event, "id: %llu\nevent: tick\ndata: ", (unsigned long long)F.seq);
    ess_series_latest_json(&F.event);
    ess_buf_append(&F.event, "\n\n", 2);
}

static void tick(uv_timer_t *t)
{
    (void)t;
    if (F.n == 0) {
        uv_timer_stop(&F.timer);
        F.timer_on = 0;
        return;
    }
    render();
    for (int i = 0; i < F.n; i++) {
        if (F.app->draining) /* the drain: close the feeds */
            lws_set_timeout(F.f[i].wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        else
            lws_callback_on_writable(F.f[i].wsi);
    }
}

int ess__feed_adopt(struct lws *wsi, ess_app_t *app)
{
    if (F.n == ESS_FEED_MAX || app->draining)
        return -1;
    uint8_t buf[LWS_PRE + 512];
    uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    /* No Content-Length: lws adds "Connection: close" itself. */
    if (lws_add_http_common_headers(wsi, 200, "text/event-stream", LWS_ILLEGAL_HTTP_CONTENT_LEN, &p,
                                    end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    F.app = app;
    F.f[F.n].wsi = wsi;
    F.f[F.n].sent = 0;
    F.n++;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    if (!F.timer_init) {
        uv_timer_init(app->loop, &F.timer);
        uv_unref((uv_handle_t *)&F.timer);
        F.timer_init = 1;
    }
    if (!F.timer_on) {
        uv_timer_start(&F.timer, tick, 1000, 1000);
        F.timer_on = 1;
    }
    if (F.seq == 0)
        render();
    lws_callback_on_writable(wsi); /* the latest event at once */
    return 0;
}

int ess__feed_writeable(struct lws *wsi)
{
    for (int i = 0; i < F.n; i++) {
        if (F.f[i].wsi != wsi)
            continue;
        if (F.f[i].sent == F.seq || F.event.len <= LWS_PRE)
            return 0;
        size_t n = F.event.len - LWS_PRE;
        /* lws_write may use the LWS_PRE bytes in front: write from a copy. */
        uint8_t *b = ess_xmalloc(LWS_PRE + n);
        memcpy(b + LWS_PRE, F.event.data + LWS_PRE, n);
        int w = lws_write(wsi, b + LWS_PRE, n, LWS_WRITE_HTTP);
        free(b);
        if (w < 0)
            return -1;
        F.f[i].sent = F.seq;
        return 0;
    }
    return -1;
}

void ess__feed_drop(struct lws *wsi)
{
    for (int i = 0; i < F.n; i++)
        if (F.f[i].wsi == wsi) {
            F.f[i] = F.f[--F.n];
            return;
        }
}

void ess__feed_stop(void)
{
    if (F.timer_init) {
        uv_close((uv_handle_t *)&F.timer, NULL);
        F.timer_init = F.timer_on = 0;
    }
    ess_buf_free(&F.event);
    F.n = 0;
}
