/*
 * Blocking AMQP 0-9-1 wrapper on librabbitmq-c: connection, login, one
 * channel (reopened after a channel-level error), exchange/stream-queue
 * declaration, publishing with a bounded window of publisher confirms, and
 * queue deletion. It owns the librabbitmq connection and the confirm
 * window; it does not consume messages, reconnect, or run on the event
 * loop (all calls block). URL parsing is mq/url.c's.
 */
#include "mq/amqp091.h"
#include "mq/rabbitmq_c.h"

#include <stdarg.h>
#include <string.h>
#include <sys/time.h>

#include "ess.h"
#include "mq/url.h"

struct ess_amqp091_s {
    amqp_connection_state_t conn;
    amqp_channel_t chan;
    int chan_open;
    int dead; /* the connection is closed or unusable */
    struct timeval timeout;
    int has_timeout;
    char err[256];

    /* Confirm window: tags in [base, next_tag) are unconfirmed; acked is a
     * ring indexed by tag % window. */
    int confirms;
    unsigned window;
    uint8_t *acked;
    uint64_t base, next_tag;
    uint64_t confirmed; /* acked, summed over channels */
    int nacked;         /* a nack, or unconfirmed messages lost with a channel */
};

static int fail(ess_amqp091_t *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(ess_amqp091_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return rc;
}

static amqp_bytes_t bytes(const char *s)
{
    return amqp_cstring_bytes(s ? s : "");
}

static int code_to_rc(int code)
{
    switch (code) {
    case 403: /* ACCESS_REFUSED */
    case 530: /* NOT_ALLOWED: vhost access */ return ESS_EAUTH;
    case 404: return ESS_ENOTFOUND;
    case 406: /* PRECONDITION_FAILED: redeclared with other attributes */ return ESS_ESTATE;
    case 320: /* CONNECTION_FORCED */ return ESS_ECONN;
    default: return ESS_EPROTO;
    }
}

/* Record the confirms lost with a closed channel: they can never arrive. */
static void drop_channel(ess_amqp091_t *c)
{
    c->chan_open = 0;
    if (c->next_tag > c->base)
        c->nacked = 1;
    if (c->acked)
        memset(c->acked, 0, c->window);
    c->base = c->next_tag = 1;
}

/* The broker closed the channel or the connection with method m. */
static int server_close(ess_amqp091_t *c, const amqp_method_t *m, const char *what)
{
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cl = m->decoded;
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(c->conn, c->chan, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        drop_channel(c);
        return fail(c, code_to_rc(cl->reply_code), "%s: %u %.*s", what, cl->reply_code,
                    (int)cl->reply_text.len, (const char *)cl->reply_text.bytes);
    }
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cl = m->decoded;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        drop_channel(c);
        c->dead = 1;
        return fail(c, code_to_rc(cl->reply_code), "%s: connection closed by broker: %u %.*s", what,
                    cl->reply_code, (int)cl->reply_text.len, (const char *)cl->reply_text.bytes);
    }
    return fail(c, ESS_EPROTO, "%s: unexpected method 0x%08x", what, (unsigned)m->id);
}

static int check_reply(ess_amqp091_t *c, amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return ESS_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION: return server_close(c, &r.reply, what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        c->dead = 1;
        drop_channel(c);
        return fail(c, ESS_ECONN, "%s: %s", what, amqp_error_string2(r.library_error));
    default: c->dead = 1; return fail(c, ESS_EPROTO, "%s: no reply", what);
    }
}

static int ensure_channel(ess_amqp091_t *c)
{
    if (c->dead)
        return fail(c, ESS_ECONN, "connection is closed");
    if (c->chan_open)
        return ESS_OK;
    c->chan++;
    amqp_channel_open(c->conn, c->chan);
    int rc = check_reply(c, amqp_get_rpc_reply(c->conn), "channel.open");
    if (rc != ESS_OK)
        return rc;
    c->chan_open = 1;
    if (c->confirms) {
        amqp_confirm_select(c->conn, c->chan);
        rc = check_reply(c, amqp_get_rpc_reply(c->conn), "confirm.select");
        if (rc != ESS_OK)
            return rc;
    }
    c->base = c->next_tag = 1;
    return ESS_OK;
}

int ess_amqp091_connect(const char *url, int timeout_ms, ess_amqp091_t **out, char *err,
                        size_t errlen)
{
    ess_url_t u;
    ess_amqp091_t *c = ess_xcalloc(1, sizeof *c);
    amqp_socket_t *sock;
    int rc, st;

    *out = NULL;
    c->confirmed = 0;
    c->base = c->next_tag = 1;
    if (timeout_ms > 0) {
        c->has_timeout = 1;
        c->timeout.tv_sec = timeout_ms / 1000;
        c->timeout.tv_usec = (timeout_ms % 1000) * 1000;
    }
    if (url == NULL || ess_url_parse(url, &u) != ESS_OK) {
        rc = fail(c, ESS_EINVAL, "bad AMQP URL (expected amqp://user:pass@host:port/vhost)");
        goto fail_url;
    }
    if (u.tls) {
        rc = fail(c, ESS_EINVAL, "amqps:// is not supported by this client");
        goto fail_conn;
    }
    c->conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(c->conn);
    if (sock == NULL) {
        rc = fail(c, ESS_ECONN, "cannot create a socket");
        goto fail_socket;
    }
    st = amqp_socket_open_noblock(sock, u.host, u.port, c->has_timeout ? &c->timeout : NULL);
    if (st != AMQP_STATUS_OK) {
        /* librabbitmq does not keep the errno; refused and unreachable look alike. */
        rc = fail(c, ESS_ECONN, "cannot connect to %s:%d (refused, unreachable or timed out): %s",
                  u.host, u.port, amqp_error_string2(st));
        goto fail_socket;
    }
    if (c->has_timeout) {
        amqp_set_handshake_timeout(c->conn, &c->timeout);
        amqp_set_rpc_timeout(c->conn, &c->timeout);
    }
    amqp_rpc_reply_t r =
        amqp_login(c->conn, u.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, u.user, u.pass);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        (r.library_error == AMQP_STATUS_CONNECTION_CLOSED ||
         r.library_error == AMQP_STATUS_SOCKET_CLOSED ||
         r.library_error == AMQP_STATUS_SOCKET_ERROR)) {
        /* RabbitMQ answers bad credentials by closing the socket. */
        rc = fail(c, ESS_EAUTH, "login refused for user '%s' on vhost '%s' at %s:%d", u.user,
                  u.vhost, u.host, u.port);
        goto fail_socket;
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char what[160];
        snprintf(what, sizeof what, "login to %s:%d vhost '%s'", u.host, u.port, u.vhost);
        rc = check_reply(c, r, what);
        goto fail_socket;
    }
    rc = ensure_channel(c);
    if (rc != ESS_OK)
        goto fail_socket;
    ess_url_free(&u);
    *out = c;
    return ESS_OK;

fail_socket:
    amqp_destroy_connection(c->conn);
fail_conn:
    ess_url_free(&u);
fail_url:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", c->err);
    free(c);
    return rc;
}

void ess_amqp091_close(ess_amqp091_t *c)
{
    if (c == NULL)
        return;
    if (!c->dead) {
        if (c->chan_open)
            amqp_channel_close(c->conn, c->chan, AMQP_REPLY_SUCCESS);
        amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(c->conn);
    free(c->acked);
    free(c);
}

const char *ess_amqp091_error(const ess_amqp091_t *c)
{
    return c->err;
}

int ess_amqp091_declare_exchange(ess_amqp091_t *c, const char *exchange)
{
    int rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    amqp_exchange_declare(c->conn, c->chan, bytes(exchange), amqp_cstring_bytes("direct"), 0, 1, 0,
                          0, amqp_empty_table);
    char what[300];
    snprintf(what, sizeof what, "declare exchange '%s'", exchange);
    return check_reply(c, amqp_get_rpc_reply(c->conn), what);
}

int ess_amqp091_declare_stream(ess_amqp091_t *c, const char *queue, const char *exchange,
                               const char *routing_key)
{
    char what[300];
    int rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    amqp_table_entry_t arg = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("stream")},
    };
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    amqp_queue_declare(c->conn, c->chan, bytes(queue), 0, 1, 0, 0, args);
    snprintf(what, sizeof what, "declare stream '%s'", queue);
    rc = check_reply(c, amqp_get_rpc_reply(c->conn), what);
    if (rc != ESS_OK || exchange == NULL)
        return rc;
    rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    amqp_queue_bind(c->conn, c->chan, bytes(queue), bytes(exchange), bytes(routing_key),
                    amqp_empty_table);
    snprintf(what, sizeof what, "bind '%s' to '%s'", queue, exchange);
    return check_reply(c, amqp_get_rpc_reply(c->conn), what);
}

int ess_amqp091_delete_queue(ess_amqp091_t *c, const char *queue)
{
    int rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    amqp_queue_delete(c->conn, c->chan, bytes(queue), 0, 0);
    char what[300];
    snprintf(what, sizeof what, "delete queue '%s'", queue);
    rc = check_reply(c, amqp_get_rpc_reply(c->conn), what);
    return rc == ESS_ENOTFOUND ? ESS_OK : rc;
}

int ess_amqp091_enable_confirms(ess_amqp091_t *c, unsigned window)
{
    if (window < 1)
        return fail(c, ESS_EINVAL, "confirm window must be at least 1");
    int rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    if (!c->confirms) {
        amqp_confirm_select(c->conn, c->chan);
        rc = check_reply(c, amqp_get_rpc_reply(c->conn), "confirm.select");
        if (rc != ESS_OK)
            return rc;
        c->confirms = 1;
    }
    free(c->acked);
    c->window = window;
    c->acked = ess_xcalloc(window, 1);
    c->base = c->next_tag = 1;
    return ESS_OK;
}

static void mark(ess_amqp091_t *c, uint64_t tag, int multiple, int nack)
{
    uint64_t from = multiple ? c->base : tag;
    if (tag >= c->next_tag)
        tag = c->next_tag - 1;
    for (uint64_t t = from < c->base ? c->base : from; t <= tag; t++) {
        if (!c->acked[t % c->window]) {
            c->acked[t % c->window] = 1;
            if (nack)
                c->nacked = 1;
            else
                c->confirmed++;
        }
    }
    while (c->base < c->next_tag && c->acked[c->base % c->window]) {
        c->acked[c->base % c->window] = 0;
        c->base++;
    }
}

/* Wait for one frame and apply it; ESS_OK also when it was not a confirm. */
static int pump(ess_amqp091_t *c)
{
    amqp_frame_t f;
    int st = amqp_simple_wait_frame_noblock(c->conn, &f, c->has_timeout ? &c->timeout : NULL);
    if (st == AMQP_STATUS_TIMEOUT)
        return fail(c, ESS_ECONN, "timed out waiting for publisher confirms");
    if (st != AMQP_STATUS_OK) {
        c->dead = 1;
        drop_channel(c);
        return fail(c, ESS_ECONN, "connection lost: %s", amqp_error_string2(st));
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return ESS_OK; /* content of a basic.return: we never publish mandatory */
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = f.payload.method.decoded;
        mark(c, a->delivery_tag, a->multiple, 0);
        return ESS_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *n = f.payload.method.decoded;
        mark(c, n->delivery_tag, n->multiple, 1);
        return ESS_OK;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: return server_close(c, &f.payload.method, "publish");
    default: return ESS_OK;
    }
}

int ess_amqp091_publish(ess_amqp091_t *c, const char *exchange, const char *routing_key,
                        const void *body, size_t len, const char *content_type,
                        const ess_amqp091_header_t *headers, size_t n_headers)
{
    amqp_table_entry_t stack_entries[16];
    amqp_table_entry_t *entries = stack_entries;
    amqp_basic_properties_t props;
    int rc = ensure_channel(c);
    if (rc != ESS_OK)
        return rc;
    while (c->confirms && c->next_tag - c->base >= c->window) {
        rc = pump(c);
        if (rc != ESS_OK)
            return rc;
    }
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 2;
    if (content_type != NULL) {
        props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        props.content_type = amqp_cstring_bytes(content_type);
    }
    if (n_headers > 0) {
        if (n_headers > ESS_ARRAY_SIZE(stack_entries))
            entries = ess_xcalloc(n_headers, sizeof *entries);
        for (size_t i = 0; i < n_headers; i++) {
            entries[i].key = amqp_cstring_bytes(headers[i].key);
            switch (headers[i].kind) {
            case ESS_AMQP091_HDR_INT:
                entries[i].value.kind = AMQP_FIELD_KIND_I64;
                entries[i].value.value.i64 = headers[i].i;
                break;
            case ESS_AMQP091_HDR_BOOL:
                entries[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
                entries[i].value.value.boolean = headers[i].i != 0;
                break;
            default:
                entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
                entries[i].value.value.bytes = bytes(headers[i].s);
                break;
            }
        }
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = (int)n_headers;
        props.headers.entries = entries;
    }
    amqp_bytes_t b = {.len = len, .bytes = (void *)(uintptr_t)body};
    int st =
        amqp_basic_publish(c->conn, c->chan, bytes(exchange), bytes(routing_key), 0, 0, &props, b);
    if (entries != stack_entries)
        free(entries);
    if (st != AMQP_STATUS_OK) {
        c->dead = 1;
        drop_channel(c);
        return fail(c, ESS_ECONN, "publish: %s", amqp_error_string2(st));
    }
    if (c->confirms)
        c->next_tag++;
    return ESS_OK;
}

int ess_amqp091_wait_confirms(ess_amqp091_t *c)
{
    while (c->confirms && !c->dead && c->chan_open && c->base < c->next_tag) {
        int rc = pump(c);
        if (rc != ESS_OK)
            return rc;
    }
    if (c->nacked)
        return fail(c, ESS_EPROTO, "the broker did not confirm every message");
    if (c->dead)
        return fail(c, ESS_ECONN, "connection is closed");
    return ESS_OK;
}

uint64_t ess_amqp091_confirmed(const ess_amqp091_t *c)
{
    return c->confirmed;
}
