/*
 * Classic-queue (Version 1) consumer: a worker thread that owns one
 * librabbitmq-c connection, bridged to the libuv loop. The loop side owns
 * the ess_classic_sub_t objects (an id-keyed table, touched only on the
 * loop thread); the worker owns its own per-subscription records (channel,
 * queue, consumer tag), keyed by the same id. The two share nothing but
 * the command and event queues under one mutex, so neither side ever sees
 * the other's memory, and an event for a subscription the loop already
 * dropped is simply discarded.
 *
 * Not here: the stream protocol (stream_client.c), publishing and
 * declaring streams (amqp091.c), URL parsing (url.c).
 */
#include "mq/classic.h"
#include "mq/rabbitmq_c.h"

#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/url.h"
#include "util/log.h"

#define SUB_BUCKETS 1024
#define DEFAULT_PREFETCH 500
#define POLL_US 20000  /* consume wait: commands are never starved longer */
#define IO_TIMEOUT_S 5 /* TCP connect, handshake and each RPC */
#define STABLE_MS 5000 /* a connection that lived this long resets the backoff */

enum { CMD_SUB, CMD_UNSUB, CMD_ACK, CMD_CLOSE };
enum { EV_SUBSCRIBED, EV_MESSAGE, EV_ENDED, EV_EXIT };

typedef struct cmd_s {
    struct cmd_s *next;
    int kind;
    uint64_t id;
    uint32_t gen;
    uint64_t tag;
    char *exchange, *routing_key; /* CMD_SUB; owned by the command, then the worker */
} cmd_t;

typedef struct event_s {
    struct event_s *next;
    int kind;
    uint64_t id;
    int status;
    uint32_t gen;
    uint64_t tag;
    int redelivered;
    int has_ctype;
    size_t len;
    char *ctype;    /* points into data, after the body */
    uint8_t data[]; /* body, then the NUL-terminated content type */
} event_t;

/* The worker's view of one subscription. */
typedef struct wsub_s {
    struct wsub_s *next; /* id hash chain */
    uint64_t id;
    char *exchange, *routing_key;
    amqp_channel_t chan; /* 0: no channel (not set up on this connection) */
    uint32_t gen;        /* bumped at each set-up; acks of older gens are stale */
    char ctag[64];
} wsub_t;

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

struct ess_classic_s {
    uv_loop_t *loop;
    uv_async_t async;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;

    /* Under mu. */
    cmd_t *cmd_head, *cmd_tail;
    event_t *ev_head, *ev_tail;
    int connected;

    /* Options (read-only after create). */
    char *url, *name;
    int heartbeat_s, prefetch, min_ms, max_ms;

    /* Loop thread only. */
    ess_classic_sub_t *subs[SUB_BUCKETS];
    uint64_t next_id;
    int closing;
    void (*done)(void *ud);
    void *done_ud;
    uint64_t *dirty;
    size_t ndirty, dirty_cap;

    /* Worker thread only. */
    amqp_connection_state_t conn; /* NULL while disconnected */
    int dead;                     /* conn failed: drop it at the next check */
    int quit;
    wsub_t *wsubs[SUB_BUCKETS];
    wsub_t **by_chan; /* indexed by channel number, chan_max + 1 slots */
    int chan_max;
    amqp_channel_t next_chan;
    uint64_t connected_at_ms;
    int attempt;
    unsigned rng;
};

/* ------------------------------------------------------------------ */
/* Queues (either thread, under mu)                                    */

static void push_cmd(ess_classic_t *c, cmd_t *cmd)
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

static void push_event(ess_classic_t *c, event_t *ev)
{
    ev->next = NULL;
    uv_mutex_lock(&c->mu);
    if (c->ev_tail)
        c->ev_tail->next = ev;
    else
        c->ev_head = ev;
    c->ev_tail = ev;
    uv_mutex_unlock(&c->mu);
    uv_async_send(&c->async);
}

static void emit(ess_classic_t *c, int kind, uint64_t id, int status)
{
    event_t *ev = ess_xcalloc(1, sizeof *ev);
    ev->kind = kind;
    ev->id = id;
    ev->status = status;
    push_event(c, ev);
}

static void free_cmd(cmd_t *cmd)
{
    free(cmd->exchange);
    free(cmd->routing_key);
    free(cmd);
}

/* ------------------------------------------------------------------ */
/* Worker: connection                                                  */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static wsub_t **wslot(ess_classic_t *c, uint64_t id)
{
    wsub_t **p = &c->wsubs[id % SUB_BUCKETS];
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    return p;
}

static int code_rc(int code)
{
    switch (code) {
    case 403:
    case 530: return ESS_EAUTH;
    case 404: return ESS_ENOTFOUND;
    case 406: return ESS_ESTATE;
    case 320: return ESS_ECONN;
    default: return ESS_EPROTO;
    }
}

/* Answer a broker-side close and map it to a code; marks the connection
 * dead for connection.close. */
static int server_close(ess_classic_t *c, amqp_channel_t ch, const amqp_method_t *m,
                        const char *what)
{
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cl = m->decoded;
        amqp_channel_close_ok_t ok = {0};
        if (amqp_send_method(c->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
            c->dead = 1;
        ess_log_warn("classic: %s: channel closed by the broker: %u %.*s", what, cl->reply_code,
                     (int)cl->reply_text.len, (const char *)cl->reply_text.bytes);
        return code_rc(cl->reply_code);
    }
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cl = m->decoded;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        c->dead = 1;
        ess_log_warn("classic: %s: connection closed by the broker: %u %.*s", what, cl->reply_code,
                     (int)cl->reply_text.len, (const char *)cl->reply_text.bytes);
        return ESS_ECONN;
    }
    c->dead = 1;
    return ESS_EPROTO;
}

static int check(ess_classic_t *c, amqp_channel_t ch, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->conn);
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return ESS_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION: return server_close(c, ch, &r.reply, what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        ess_log_warn("classic: %s: %s", what, amqp_error_string2(r.library_error));
        c->dead = 1;
        return ESS_ECONN;
    default: c->dead = 1; return ESS_EPROTO;
    }
}

static void set_connected(ess_classic_t *c, int up)
{
    uv_mutex_lock(&c->mu);
    c->connected = up;
    uv_mutex_unlock(&c->mu);
}

static int open_connection(ess_classic_t *c)
{
    ess_url_t u;
    struct timeval tv = {IO_TIMEOUT_S, 0};
    int rc = ESS_ECONN;
    if (ess_url_parse(c->url, &u) != ESS_OK)
        return ESS_EINVAL;
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (sock == NULL)
        goto fail_conn;
    int st = amqp_socket_open_noblock(sock, u.host, u.port, &tv);
    if (st != AMQP_STATUS_OK) {
        ess_log_warn("classic: cannot connect to %s:%d: %s", u.host, u.port,
                     amqp_error_string2(st));
        goto fail_conn;
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    amqp_table_entry_t caps[1] = {{
        .key = amqp_cstring_bytes("consumer_cancel_notify"),
        .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1},
    }};
    amqp_table_entry_t props[2] = {
        {.key = amqp_cstring_bytes("connection_name"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(c->name)}},
        {.key = amqp_cstring_bytes("capabilities"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, caps}}},
    };
    amqp_table_t ptable = {2, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        conn, u.vhost, 0, 131072, c->heartbeat_s, &ptable, AMQP_SASL_METHOD_PLAIN, u.user, u.pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? ESS_EAUTH : ESS_EPROTO;
        ess_log_warn("classic: login to %s:%d vhost '%s' refused", u.host, u.port, u.vhost);
        goto fail_conn;
    }
    c->conn = conn;
    c->dead = 0;
    c->chan_max = amqp_get_channel_max(conn);
    if (c->chan_max <= 0 || c->chan_max > 65535)
        c->chan_max = 65535;
    c->by_chan = ess_xcalloc((size_t)c->chan_max + 1, sizeof *c->by_chan);
    c->next_chan = 1;
    c->connected_at_ms = now_ms();
    ess_url_free(&u);
    set_connected(c, 1);
    ess_log_info("classic: connected to the broker (channel_max %d)", c->chan_max);
    return ESS_OK;

fail_conn:
    amqp_destroy_connection(conn);
    ess_url_free(&u);
    return rc;
}

/* Forget the connection; every subscription needs a new channel. */
static void drop_connection(ess_classic_t *c, int polite)
{
    if (c->conn == NULL)
        return;
    if (polite && !c->dead)
        amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->conn);
    c->conn = NULL;
    c->dead = 0;
    free(c->by_chan);
    c->by_chan = NULL;
    for (size_t b = 0; b < SUB_BUCKETS; b++)
        for (wsub_t *w = c->wsubs[b]; w; w = w->next)
            w->chan = 0;
    set_connected(c, 0);
    if (now_ms() - c->connected_at_ms >= STABLE_MS)
        c->attempt = 0;
}

static amqp_channel_t alloc_chan(ess_classic_t *c)
{
    for (int i = 0; i < c->chan_max; i++) {
        amqp_channel_t ch = c->next_chan;
        c->next_chan = ch >= c->chan_max ? 1 : (amqp_channel_t)(ch + 1);
        if (c->by_chan[ch] == NULL)
            return ch;
    }
    return 0;
}

/* Best effort: remove a queue declared on a channel that then failed. */
static void discard_queue(ess_classic_t *c, amqp_channel_t ch, amqp_bytes_t queue, int chan_open)
{
    if (c->dead)
        return;
    if (!chan_open) {
        amqp_channel_open(c->conn, ch);
        if (check(c, ch, "channel.open (cleanup)") != ESS_OK)
            return;
    }
    amqp_queue_delete(c->conn, ch, queue, 0, 0);
    if (check(c, ch, "queue.delete (cleanup)") != ESS_OK)
        return;
    amqp_channel_close(c->conn, ch, AMQP_REPLY_SUCCESS);
    check(c, ch, "channel.close (cleanup)");
}

/* Open a channel, declare exchange and queue, bind, qos, consume. */
static int setup(ess_classic_t *c, wsub_t *w)
{
    amqp_channel_t ch = alloc_chan(c);
    if (ch == 0) {
        ess_log_warn("classic: no free channel (channel_max %d)", c->chan_max);
        return ESS_ETOOBIG;
    }
    amqp_channel_open(c->conn, ch);
    int rc = check(c, ch, "channel.open");
    if (rc != ESS_OK)
        return rc;
    amqp_exchange_declare(c->conn, ch, amqp_cstring_bytes(w->exchange),
                          amqp_cstring_bytes("direct"), 0, 1, 0, 0, amqp_empty_table);
    if ((rc = check(c, ch, "exchange.declare")) != ESS_OK)
        return rc;
    amqp_queue_declare_ok_t *q =
        amqp_queue_declare(c->conn, ch, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    if ((rc = check(c, ch, "queue.declare")) != ESS_OK)
        return rc;
    char qname[256];
    size_t qlen = q->queue.len < sizeof qname - 1 ? q->queue.len : sizeof qname - 1;
    memcpy(qname, q->queue.bytes, qlen);
    qname[qlen] = '\0';
    amqp_bytes_t queue = {qlen, qname};
    const char *step = "queue.bind";
    amqp_queue_bind(c->conn, ch, queue, amqp_cstring_bytes(w->exchange),
                    amqp_cstring_bytes(w->routing_key), amqp_empty_table);
    if ((rc = check(c, ch, step)) != ESS_OK)
        goto fail_queue;
    step = "basic.qos";
    amqp_basic_qos(c->conn, ch, 0, (uint16_t)c->prefetch, 0);
    if ((rc = check(c, ch, step)) != ESS_OK)
        goto fail_queue;
    w->gen++;
    snprintf(w->ctag, sizeof w->ctag, "essd-%llu-%u", (unsigned long long)w->id, w->gen);
    step = "basic.consume";
    amqp_basic_consume(c->conn, ch, queue, amqp_cstring_bytes(w->ctag), 0, 0, 0, amqp_empty_table);
    if ((rc = check(c, ch, step)) != ESS_OK)
        goto fail_queue;
    w->chan = ch;
    c->by_chan[ch] = w;
    ess_log_debug("classic: sub %llu: queue %s bound to %s/%s on channel %u",
                  (unsigned long long)w->id, qname, w->exchange, w->routing_key, ch);
    return ESS_OK;

fail_queue:
    /* The broker closed the channel on a server error (and answered ok). */
    discard_queue(c, ch, queue, 0);
    return rc;
}

static void close_chan(ess_classic_t *c, wsub_t *w)
{
    if (w->chan == 0 || c->conn == NULL)
        return;
    c->by_chan[w->chan] = NULL;
    if (!c->dead) {
        amqp_channel_close(c->conn, w->chan, AMQP_REPLY_SUCCESS);
        check(c, w->chan, "channel.close");
    }
    w->chan = 0;
}

static void free_wsub(wsub_t *w)
{
    free(w->exchange);
    free(w->routing_key);
    free(w);
}

static void remove_wsub(ess_classic_t *c, wsub_t *w)
{
    wsub_t **p = wslot(c, w->id);
    if (*p == w)
        *p = w->next;
    free_wsub(w);
}

/* After a (re)connect: give every subscription its queue again. */
static void setup_all(ess_classic_t *c)
{
    for (size_t b = 0; b < SUB_BUCKETS && c->conn && !c->dead; b++) {
        wsub_t *w = c->wsubs[b];
        while (w && !c->dead) {
            wsub_t *next = w->next;
            if (w->chan == 0) {
                int rc = setup(c, w);
                if (rc != ESS_OK && !c->dead) {
                    emit(c, EV_ENDED, w->id, rc);
                    remove_wsub(c, w);
                }
            }
            w = next;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Worker: commands and deliveries                                     */

static void run_commands(ess_classic_t *c)
{
    uv_mutex_lock(&c->mu);
    cmd_t *cmd = c->cmd_head;
    c->cmd_head = c->cmd_tail = NULL;
    uv_mutex_unlock(&c->mu);
    while (cmd) {
        cmd_t *next = cmd->next;
        switch (cmd->kind) {
        case CMD_SUB: {
            if (c->conn == NULL || c->dead) {
                emit(c, EV_SUBSCRIBED, cmd->id, ESS_ECONN);
                break;
            }
            wsub_t *w = ess_xcalloc(1, sizeof *w);
            w->id = cmd->id;
            w->exchange = cmd->exchange;
            w->routing_key = cmd->routing_key;
            cmd->exchange = cmd->routing_key = NULL;
            int rc = setup(c, w);
            if (rc != ESS_OK) {
                emit(c, EV_SUBSCRIBED, w->id, c->dead ? ESS_ECONN : rc);
                free_wsub(w);
                break;
            }
            wsub_t **p = wslot(c, w->id);
            w->next = *p;
            *p = w;
            emit(c, EV_SUBSCRIBED, w->id, ESS_OK);
            break;
        }
        case CMD_UNSUB: {
            wsub_t *w = *wslot(c, cmd->id);
            if (w) {
                close_chan(c, w);
                remove_wsub(c, w);
            }
            break;
        }
        case CMD_ACK: {
            wsub_t *w = *wslot(c, cmd->id);
            if (w && w->chan && w->gen == cmd->gen && c->conn && !c->dead &&
                amqp_basic_ack(c->conn, w->chan, cmd->tag, 1) != AMQP_STATUS_OK)
                c->dead = 1;
            break;
        }
        case CMD_CLOSE: c->quit = 1; break;
        }
        free_cmd(cmd);
        cmd = next;
    }
}

static void deliver(ess_classic_t *c, amqp_envelope_t *env)
{
    wsub_t *w = env->channel <= c->chan_max ? c->by_chan[env->channel] : NULL;
    size_t tl = strlen(w ? w->ctag : "");
    /* A delivery queued before its channel closed, or for an older
     * consumer on a reused channel number: not ours any more. */
    if (w == NULL || env->consumer_tag.len != tl || memcmp(env->consumer_tag.bytes, w->ctag, tl))
        return;
    const amqp_basic_properties_t *p = &env->message.properties;
    int has_ct = (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0;
    size_t ctl = has_ct ? p->content_type.len : 0;
    size_t len = env->message.body.len;
    event_t *ev = ess_xmalloc(sizeof *ev + len + ctl + 1);
    memset(ev, 0, sizeof *ev);
    ev->kind = EV_MESSAGE;
    ev->id = w->id;
    ev->gen = w->gen;
    ev->tag = env->delivery_tag;
    ev->redelivered = env->redelivered != 0;
    ev->len = len;
    if (len)
        memcpy(ev->data, env->message.body.bytes, len);
    ev->has_ctype = has_ct;
    ev->ctype = (char *)ev->data + len;
    if (ctl)
        memcpy(ev->ctype, p->content_type.bytes, ctl);
    ev->ctype[ctl] = '\0';
    push_event(c, ev);
}

/* The broker cancelled a consumer or closed a channel: set the
 * subscription up again on a new channel, or end it. */
static void redo(ess_classic_t *c, amqp_channel_t ch, int already_closed)
{
    wsub_t *w = ch <= c->chan_max ? c->by_chan[ch] : NULL;
    if (w == NULL)
        return;
    if (already_closed) {
        c->by_chan[ch] = NULL;
        w->chan = 0;
    } else {
        close_chan(c, w);
    }
    if (c->dead)
        return; /* set up again after the reconnect */
    ess_log_warn(
        "classic: sub %llu lost its queue; declaring a new one (messages in between are lost)",
        (unsigned long long)w->id);
    int rc = setup(c, w);
    if (rc != ESS_OK && !c->dead) {
        emit(c, EV_ENDED, w->id, rc);
        remove_wsub(c, w);
    }
}

static void other_frame(ess_classic_t *c)
{
    amqp_frame_t f;
    struct timeval tv = {0, 0};
    int st = amqp_simple_wait_frame_noblock(c->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
        return;
    if (st != AMQP_STATUS_OK) {
        c->dead = 1;
        return;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return; /* a stray header or body of a dropped delivery */
    switch (f.payload.method.id) {
    case AMQP_BASIC_CANCEL_METHOD: redo(c, f.channel, 0); break;
    case AMQP_CHANNEL_CLOSE_METHOD:
        server_close(c, f.channel, &f.payload.method, "consume");
        redo(c, f.channel, 1);
        break;
    case AMQP_CONNECTION_CLOSE_METHOD: server_close(c, 0, &f.payload.method, "consume"); break;
    default: break;
    }
}

static void consume_once(ess_classic_t *c)
{
    amqp_envelope_t env;
    struct timeval tv = {0, POLL_US};
    amqp_maybe_release_buffers(c->conn);
    amqp_rpc_reply_t r = amqp_consume_message(c->conn, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        deliver(c, &env);
        amqp_destroy_envelope(&env);
        return;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return;
        if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            other_frame(c);
            return;
        }
        ess_log_warn("classic: connection lost: %s", amqp_error_string2(r.library_error));
        c->dead = 1;
        return;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
        /* A close arrived in the middle of a message on env.channel. */
        server_close(c, env.channel, &r.reply, "consume");
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
            redo(c, env.channel, 1);
        return;
    }
    c->dead = 1;
}

/* Wait before reconnecting; commands are still answered meanwhile. */
static void backoff(ess_classic_t *c)
{
    int64_t d = c->min_ms;
    for (int i = 0; i < c->attempt && d < c->max_ms; i++)
        d *= 2;
    if (d > c->max_ms)
        d = c->max_ms;
    c->rng = c->rng * 1103515245u + 12345u;
    d = d / 2 + (int64_t)((c->rng >> 8) % (uint32_t)(d / 2 + 1)); /* jitter: [d/2, d] */
    c->attempt++;
    uint64_t until = now_ms() + (uint64_t)d;
    ess_log_info("classic: reconnecting in %lld ms", (long long)d);
    while (!c->quit) {
        run_commands(c);
        uint64_t now = now_ms();
        if (c->quit || now >= until)
            break;
        uv_mutex_lock(&c->mu);
        if (c->cmd_head == NULL)
            uv_cond_timedwait(&c->cond, &c->mu, (until - now) * 1000000);
        uv_mutex_unlock(&c->mu);
    }
}

static void worker(void *arg)
{
    ess_classic_t *c = arg;
    while (!c->quit) {
        if (c->conn == NULL) {
            if (open_connection(c) != ESS_OK) {
                backoff(c);
                continue;
            }
            setup_all(c);
        }
        run_commands(c);
        if (!c->quit && c->conn && !c->dead)
            consume_once(c);
        if (c->conn && c->dead) {
            drop_connection(c, 0);
            if (!c->quit)
                backoff(c);
        }
    }
    drop_connection(c, 1);
    for (size_t b = 0; b < SUB_BUCKETS; b++) {
        while (c->wsubs[b]) {
            wsub_t *w = c->wsubs[b];
            c->wsubs[b] = w->next;
            free_wsub(w);
        }
    }
    emit(c, EV_EXIT, 0, 0);
}

/* ------------------------------------------------------------------ */
/* Loop side                                                           */

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
    cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
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

static void dispatch(ess_classic_t *c, event_t *ev)
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
    for (cmd_t *cmd = c->cmd_head; cmd;) {
        cmd_t *next = cmd->next;
        free_cmd(cmd);
        cmd = next;
    }
    for (event_t *ev = c->ev_head; ev;) {
        event_t *next = ev->next;
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
    event_t *ev = c->ev_head;
    c->ev_head = c->ev_tail = NULL;
    uv_mutex_unlock(&c->mu);
    int exited = 0;
    while (ev) {
        event_t *next = ev->next;
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
    if (uv_thread_create(&c->thread, worker, c) != 0) {
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
    cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
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
    cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
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
    cmd_t *cmd = ess_xcalloc(1, sizeof *cmd);
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
