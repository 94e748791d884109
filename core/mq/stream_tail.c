/*
 * The tail probe (ess_stream_tail): the offset of the last message
 * committed in a stream, on any RabbitMQ version. StreamStats (3.11+) only
 * names the last committed chunk's first offset, and 3.10 has no such
 * command, so the probe asks the broker itself: a short subscription at
 * OFFSET_LAST, whose first delivered chunk is the stream's last committed
 * chunk. Every message delivered before the next loop turn is counted
 * (they are all committed), so the answer is the tail at the time the
 * broker served the Subscribe, or later. An empty stream delivers nothing:
 * after ESS_STREAM_TAIL_EMPTY_MS the probe answers -1.
 *
 * A probe owns its subscription and one timer. It is listed on its client
 * so that closing the client closes the probe (no callback then, as for
 * every other request of a closing client).
 */
#include <stdlib.h>

#include "ess.h"
#include "mq/stream_internal.h"

struct ess__stream_tail_s {
    ess_stream_client_t *c;
    ess__stream_tail_t *next;
    ess_stream_sub_t *sub;
    ess_stream_tail_cb cb;
    void *ud;
    uv_timer_t timer;
    int64_t last; /* the highest offset delivered, -1 before any */
    int settling; /* a message arrived; the answer goes out on the next turn */
};

static void tail_unlink(ess__stream_tail_t *t)
{
    for (ess__stream_tail_t **pp = &t->c->tails; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            return;
        }
    }
}

static void on_tail_closed(uv_handle_t *h)
{
    ess__stream_tail_t *t = h->data;
    ess_stream_client_t *c = t->c;
    free(t);
    c->handles--;
    ess__stream_client_maybe_finish(c);
}

/* Answer once and go away. sub_alive: 0 when the client frees the sub itself
 * (a failed subscribe, or on_ended). */
static void tail_finish(ess__stream_tail_t *t, int status, int sub_alive)
{
    ess_stream_tail_cb cb = t->cb;
    void *ud = t->ud;
    int64_t last = t->last;
    tail_unlink(t);
    if (sub_alive && t->sub)
        ess_stream_unsubscribe(t->sub);
    t->sub = NULL;
    uv_timer_stop(&t->timer);
    t->c->handles++;
    uv_close((uv_handle_t *)&t->timer, on_tail_closed);
    cb(status, status == ESS_OK ? last : -1, ud);
}

static void on_tail_timer(uv_timer_t *h)
{
    tail_finish(h->data, ESS_OK, 1);
}

static void on_tail_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    ess__stream_tail_t *t = ud;
    (void)sub;
    if (status != ESS_OK) {
        tail_finish(t, status, 0);
        return;
    }
    if (!t->settling)
        uv_timer_start(&t->timer, on_tail_timer, ESS_STREAM_TAIL_EMPTY_MS, 0);
}

static void on_tail_message(ess_stream_sub_t *sub, const ess_stream_msg_t *msg, void *ud)
{
    ess__stream_tail_t *t = ud;
    (void)sub;
    if ((int64_t)msg->offset > t->last)
        t->last = (int64_t)msg->offset;
    if (!t->settling) {
        /* The rest of this chunk is delivered in this same read; answer on
         * the next turn. */
        t->settling = 1;
        uv_timer_start(&t->timer, on_tail_timer, 0, 0);
    }
}

static void on_tail_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    (void)sub;
    tail_finish(ud, reason == ESS_OK ? ESS_ECONN : reason, 0);
}

int ess_stream_tail(ess_stream_client_t *c, const char *stream, ess_stream_tail_cb cb, void *ud)
{
    if (c == NULL || !ess__stream_name_ok(stream) || cb == NULL)
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess__stream_tail_t *t = ess_xcalloc(1, sizeof *t);
    t->c = c;
    t->cb = cb;
    t->ud = ud;
    t->last = -1;
    uv_timer_init(c->loop, &t->timer);
    t->timer.data = t;
    static const ess_stream_sub_cbs_t cbs = {
        .on_subscribed = on_tail_subscribed,
        .on_message = on_tail_message,
        .on_ended = on_tail_ended,
    };
    ess_offset_spec_t from = {.kind = ESS_OFFSET_LAST};
    int rc = ess_stream_subscribe(c, stream, from, &cbs, t, &t->sub);
    if (rc != ESS_OK) {
        t->c->handles++;
        uv_close((uv_handle_t *)&t->timer, on_tail_closed);
        return rc;
    }
    t->next = c->tails;
    c->tails = t;
    return ESS_OK;
}

void ess__stream_tail_close_all(ess_stream_client_t *c)
{
    while (c->tails) {
        ess__stream_tail_t *t = c->tails;
        c->tails = t->next;
        t->sub = NULL; /* the closing client frees its subscriptions */
        c->handles++;
        uv_close((uv_handle_t *)&t->timer, on_tail_closed);
    }
}
