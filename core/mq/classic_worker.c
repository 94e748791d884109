/*
 * The worker side of the classic-queue client: the thread that owns the
 * librabbitmq-c connection and makes every librabbitmq call, since they
 * block. It connects (and reconnects with backoff and jitter), gives each
 * subscription a channel and an exclusive server-named queue bound to its
 * exchange, consumes with a short poll so commands from the loop are never
 * starved, and posts subscribed, message and ended events back to the loop.
 *
 * The worker owns its own per-subscription records (wsub_t: channel,
 * queue, consumer tag) keyed by the loop's subscription id; it never sees
 * the loop's ess_classic_sub_t. Not here: callbacks, acks policy and the
 * public API (classic.c).
 */
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "mq/classic_internal.h"
#include "mq/rabbitmq_c.h"
#include "mq/url.h"
#include "util/log.h"

#define POLL_US 20000  /* consume wait: commands are never starved longer */
#define IO_TIMEOUT_S 5 /* TCP connect, handshake and each RPC */
#define STABLE_MS 5000 /* a connection that lived this long resets the backoff */

/* The worker's view of one subscription. */
typedef struct ess__classic_wsub_s {
    struct ess__classic_wsub_s *next; /* id hash chain */
    uint64_t id;
    char *exchange, *routing_key;
    amqp_channel_t chan; /* 0: no channel (not set up on this connection) */
    uint32_t gen;        /* bumped at each set-up; acks of older gens are stale */
    char ctag[64];
} wsub_t;

static void push_event(ess_classic_t *c, ess__classic_event_t *ev)
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
    ess__classic_event_t *ev = ess_xcalloc(1, sizeof *ev);
    ev->kind = kind;
    ev->id = id;
    ev->status = status;
    push_event(c, ev);
}

/* ---- connection ---- */

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

/* ---- commands and deliveries ---- */

static void run_commands(ess_classic_t *c)
{
    uv_mutex_lock(&c->mu);
    ess__classic_cmd_t *cmd = c->cmd_head;
    c->cmd_head = c->cmd_tail = NULL;
    uv_mutex_unlock(&c->mu);
    while (cmd) {
        ess__classic_cmd_t *next = cmd->next;
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
        ess__classic_cmd_free(cmd);
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
    ess__classic_event_t *ev = ess_xmalloc(sizeof *ev + len + ctl + 1);
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

void ess__classic_worker(void *arg)
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
