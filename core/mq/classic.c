/*
 * Classic-queue (Version 1) consumer: a worker thread that owns one
 * librabbitmq-c connection, bridged to the libuv loop. This file is the
 * loop side: the public calls, the ess_classic_sub_t objects (an id-keyed
 * table, touched only on the loop thread), dispatching the worker's events
 * to callbacks, and acks. The worker (classic_worker.c) owns its own
 * per-subscription records (channel, queue, consumer tag), keyed by the
 * same id. The two share nothing but the command and event queues under
 * one mutex (mq/classic_internal.h), so neither side ever sees the other's
 * memory, and an event for a subscription the loop already dropped is
 * simply discarded.
 *
 * Not here: the stream protocol (stream_client.c), publishing and
 * declaring streams (amqp091.c), URL parsing (url.c).
 */
#include "mq/classic.h"
#include "mq/rabbitmq_c.h"

#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/classic_internal.h"
#include "mq/url.h"

#define DEFAULT_PREFETCH 500

struct ess_classic_sub_s {
    ess_classic_t *c;
    ess_classic_sub_t *hnext;
    uint64_t id;
    ess_classic_sub_cbs_t cbs;
    void *ud;
    int paused;
    int dying; /* in its final callback: the dispatcher frees it */
    int dirty; /* listed for the ack at the end of this wake-up */
    uint32_t gen;
    uint64_t tag, acked;
    uint64_t delivered;
};

static void push_cmd(ess_classic_t *c, ess__classic_cmd_t *cmd)
{
    cmd->next = NULL;
    uv_mutex_lock(&c->mu);
    if (c->cmd_tail)
        c->cmd_tail->next = cmd;
    else
        c->cmd_head = cmd;
    c->cmd_tail = cmd;
    uv_cond_signal(&c->cond);
    uv_mutex_unlock(&c->mu);
}

void ess__classic_cmd_free(ess__classic_cmd_t *cmd)
{
    free(cmd->exchange);
    free(cmd->routing_key);
    free(cmd);
}

static ess_classic_sub_t **slot(ess_classic_t *c, uint64_t id)
{
    ess_classic_sub_t **p = &c->subs[id % SUB_BUCKETS];
    while (*p && (*p)->id != id)
        p = &(*p)->hnext;
    return p;
}

static void unlink_sub(ess_classic_sub_t *sub)
{
    ess_classic_sub_t **p = slot(sub->c, sub->id);
    if (*p == sub)
        *p = sub->hnext;
}

static void send_ack(ess_classic_sub_t *sub)
{
    if (sub->tag <= sub->acked)
        return;
    ess__classic_cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
    cmd->kind = CMD_ACK;
    cmd->id = sub->id;
    cmd->gen = sub->gen;
    cmd->tag = sub->tag;
    sub->acked = sub->tag;
    push_cmd(sub->c, cmd);
}

static void mark_dirty(ess_classic_t *c, ess_classic_sub_t *sub)
{
    if (sub->dirty)
        return;
    if (c->ndirty == c->dirty_cap) {
        c->dirty_cap = c->dirty_cap ? c->dirty_cap * 2 : 64;
        c->dirty = ess_xrealloc(c->dirty, c->dirty_cap * sizeof *c->dirty);
    }
    c->dirty[c->ndirty++] = sub->id;
    sub->dirty = 1;
}

static void dispatch(ess_classic_t *c, ess__classic_event_t *ev)
{
    ess_classic_sub_t *sub = *slot(c, ev->id);
    if (sub == NULL)
        return; /* unsubscribed meanwhile */
    switch (ev->kind) {
    case EV_SUBSCRIBED:
        if (ev->status == ESS_OK) {
            sub->cbs.on_subscribed(sub, ESS_OK, sub->ud);
            return;
        }
        unlink_sub(sub);
        sub->dying = 1;
        sub->cbs.on_subscribed(sub, ev->status, sub->ud);
        free(sub);
        return;
    case EV_ENDED:
        unlink_sub(sub);
        sub->dying = 1;
        if (sub->cbs.on_ended)
            sub->cbs.on_ended(sub, ev->status, sub->ud);
        free(sub);
        return;
    case EV_MESSAGE: {
        if (ev->gen != sub->gen) {
            sub->gen = ev->gen;
            sub->tag = sub->acked = 0;
        }
        sub->tag = ev->tag;
        sub->delivered++;
        ess_classic_msg_t m = {
            .body = ev->data,
            .len = ev->len,
            .content_type = ev->has_ctype ? ev->ctype : NULL,
            .redelivered = ev->redelivered,
        };
        uint64_t id = sub->id;
        sub->cbs.on_message(sub, &m, sub->ud);
        sub = *slot(c, id); /* on_message may have unsubscribed */
        if (sub && !sub->paused)
            mark_dirty(c, sub);
        return;
    }
    default: return;
    }
}

static void finish(uv_handle_t *h)
{
    ess_classic_t *c = h->data;
    void (*done)(void *) = c->done;
    void *ud = c->done_ud;
    for (ess__classic_cmd_t *cmd = c->cmd_head; cmd;) {
        ess__classic_cmd_t *next = cmd->next;
        ess__classic_cmd_free(cmd);
        cmd = next;
    }
    for (ess__classic_event_t *ev = c->ev_head; ev;) {
        ess__classic_event_t *next = ev->next;
        free(ev);
        ev = next;
    }
    uv_cond_destroy(&c->cond);
    uv_mutex_destroy(&c->mu);
    free(c->dirty);
    free(c->url);
    free(c->name);
    free(c);
    if (done)
        done(ud);
}

static void on_async(uv_async_t *a)
{
    ess_classic_t *c = a->data;
    uv_mutex_lock(&c->mu);
    ess__classic_event_t *ev = c->ev_head;
    c->ev_head = c->ev_tail = NULL;
    uv_mutex_unlock(&c->mu);
    int exited = 0;
    while (ev) {
        ess__classic_event_t *next = ev->next;
        if (ev->kind == EV_EXIT)
            exited = 1;
        else if (!c->closing)
            dispatch(c, ev);
        free(ev);
        ev = next;
    }
    for (size_t i = 0; i < c->ndirty; i++) {
        ess_classic_sub_t *sub = *slot(c, c->dirty[i]);
        if (sub == NULL)
            continue;
        sub->dirty = 0;
        if (!sub->paused && !c->closing)
            send_ack(sub);
    }
    c->ndirty = 0;
    if (exited) {
        uv_thread_join(&c->thread);
        uv_close((uv_handle_t *)&c->async, finish);
    }
}

int ess_classic_create(uv_loop_t *loop, const ess_classic_opts_t *opts, ess_classic_t **out)
{
    ess_url_t u;
    *out = NULL;
    if (opts == NULL || opts->url == NULL || ess_url_parse(opts->url, &u) != ESS_OK)
        return ESS_EINVAL;
    int tls = u.tls;
    ess_url_free(&u);
    if (tls)
        return ESS_EINVAL;
    ess_classic_t *c = ess_xcalloc(1, sizeof *c);
    c->loop = loop;
    c->url = ess_xstrdup(opts->url);
    c->name = ess_xstrdup(opts->connection_name ? opts->connection_name : "essd-classic");
    c->heartbeat_s = opts->heartbeat_s > 0 ? opts->heartbeat_s : 60;
    c->prefetch = opts->prefetch > 0 && opts->prefetch <= 65535 ? opts->prefetch : DEFAULT_PREFETCH;
    c->min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : 100;
    c->max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : 5000;
    if (c->max_ms < c->min_ms)
        c->max_ms = c->min_ms;
    c->rng = (unsigned)uv_hrtime() ^ (unsigned)(uintptr_t)c;
    c->next_id = 1;
    if (uv_mutex_init(&c->mu) != 0)
        goto fail_mutex;
    if (uv_cond_init(&c->cond) != 0)
        goto fail_cond;
    if (uv_async_init(loop, &c->async, on_async) != 0)
        goto fail_async;
    c->async.data = c;
    if (uv_thread_create(&c->thread, ess__classic_worker, c) != 0) {
        /* The async handle must be closed through the loop; free then. */
        c->done = NULL;
        uv_close((uv_handle_t *)&c->async, finish);
        return ESS_EIO;
    }
    *out = c;
    return ESS_OK;

fail_async:
    uv_cond_destroy(&c->cond);
fail_cond:
    uv_mutex_destroy(&c->mu);
fail_mutex:
    free(c->url);
    free(c->name);
    free(c);
    return ESS_EIO;
}

void ess_classic_close(ess_classic_t *c, void (*done)(void *ud), void *ud)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    c->done = done;
    c->done_ud = ud;
    for (size_t b = 0; b < SUB_BUCKETS; b++) {
        while (c->subs[b]) {
            ess_classic_sub_t *sub = c->subs[b];
            c->subs[b] = sub->hnext;
            free(sub); /* a sub in its final callback is unlinked: the dispatcher frees it */
        }
    }
    ess__classic_cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
    cmd->kind = CMD_CLOSE;
    push_cmd(c, cmd);
}

int ess_classic_connected(ess_classic_t *c)
{
    uv_mutex_lock(&c->mu);
    int up = c->connected;
    uv_mutex_unlock(&c->mu);
    return up;
}

int ess_classic_subscribe(ess_classic_t *c, const char *exchange, const char *routing_key,
                          const ess_classic_sub_cbs_t *cbs, void *ud, ess_classic_sub_t **out)
{
    *out = NULL;
    if (c->closing)
        return ESS_ESTATE;
    if (exchange == NULL || routing_key == NULL || cbs == NULL || cbs->on_subscribed == NULL ||
        cbs->on_message == NULL || strlen(exchange) > 255 || strlen(routing_key) > 255)
        return ESS_EINVAL;
    ess_classic_sub_t *sub = ess_xcalloc(1, sizeof *sub);
    sub->c = c;
    sub->id = c->next_id++;
    sub->cbs = *cbs;
    sub->ud = ud;
    ess_classic_sub_t **head = &c->subs[sub->id % SUB_BUCKETS];
    sub->hnext = *head;
    *head = sub;
    ess__classic_cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
    cmd->kind = CMD_SUB;
    cmd->id = sub->id;
    cmd->exchange = ess_xstrdup(exchange);
    cmd->routing_key = ess_xstrdup(routing_key);
    push_cmd(c, cmd);
    *out = sub;
    return ESS_OK;
}

void ess_classic_unsubscribe(ess_classic_sub_t *sub)
{
    if (sub == NULL || sub->dying)
        return; /* in its final callback: freed when that returns */
    ess_classic_t *c = sub->c;
    unlink_sub(sub);
    ess__classic_cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
    cmd->kind = CMD_UNSUB;
    cmd->id = sub->id;
    push_cmd(c, cmd);
    free(sub);
}

void ess_classic_sub_pause(ess_classic_sub_t *sub)
{
    sub->paused = 1;
}

void ess_classic_sub_resume(ess_classic_sub_t *sub)
{
    if (!sub->paused)
        return;
    sub->paused = 0;
    if (!sub->c->closing)
        send_ack(sub);
}

uint64_t ess_classic_sub_delivered(const ess_classic_sub_t *sub)
{
    return sub->delivered;
}
