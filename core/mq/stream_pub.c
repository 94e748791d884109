/*
 * Publishers of the stream client: the public create, publish and close
 * calls, the slot a publisher holds on a connection, declaring it to the
 * broker and reporting publish confirms and errors to the user.
 *
 * A publisher is owned by the client (its list) and freed by
 * ess__stream_pub_put once its user closed it, nothing refers to it, it
 * holds no slot and none of its callbacks is on the stack. A publisher does
 * not survive a connection reset: it fails and its user makes a new one.
 */
#include <string.h>

#include "ess.h"
#include "mq/stream_internal.h"

static void pub_slot_release(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    if (k == NULL)
        return;
    k->pubs[p->id] = NULL;
    k->npubs--;
    p->conn = NULL;
    p->on_wire = p->ready = 0;
}

static void pub_free(ess_stream_pub_t *p)
{
    ESS__LIST_REMOVE(p->c->pubs, p);
    free(p->stream);
    free(p);
}

void ess__stream_pub_put(ess_stream_pub_t *p)
{
    if (p->dead && p->user_gone && p->refs == 0 && p->depth == 0 && p->conn == NULL &&
        !p->c->closing)
        pub_free(p);
}

void ess__stream_pub_fail(ess_stream_pub_t *p, int status, int declared)
{
    if (p->dead)
        return;
    p->dead = 1;
    pub_slot_release(p);
    if (!p->user_gone && !p->c->closing) {
        p->depth++;
        if (!declared && p->cbs.on_ready)
            p->cbs.on_ready(p, status, p->ud);
        else if (declared && p->cbs.on_confirm)
            p->cbs.on_confirm(p, UINT64_MAX, status, p->ud);
        p->depth--;
    }
    if (!declared)
        p->user_gone = 1;
    ess__stream_pub_put(p);
}

void ess__stream_send_declare(ess_stream_pub_t *p)
{
    ess__stream_conn_t *k = p->conn;
    ess__stream_req_t *r = ess__stream_req_new(R_DECLARE_PUB, NULL);
    r->pub = p;
    p->refs++;
    ess__stream_conn_send_req(k, r);
    ess_proto_buf_t b = {0};
    ess_proto_enc_declare_publisher(&b, r->corr, (uint8_t)p->id, NULL, p->stream);
    p->on_wire = 1;
    ess__stream_conn_write(k, &b);
}

/* Gives p a free slot on k (which has one) and declares it once k is ready. */
static void take_slot(ess_stream_pub_t *p, ess__stream_conn_t *k)
{
    int id = 0;
    while (k->pubs[id] != NULL)
        id++;
    k->pubs[id] = p;
    k->npubs++;
    p->conn = k;
    p->id = id;
    if (k->state == C_READY)
        ess__stream_send_declare(p);
}

void ess__stream_pub_attach(ess_stream_pub_t *p, const char *host, int port)
{
    ess__stream_conn_t *k = ess__stream_conn_for(p->c, host, port, 1);
    if (!ess__stream_conn_usable(k)) {
        ess__stream_pub_fail(p, ESS_ECONN, 0);
        ess__stream_conn_maybe_idle(k);
        return;
    }
    take_slot(p, k);
}

void ess__stream_on_confirm(ess__stream_conn_t *k, const ess_proto_frame_t *f, int is_error)
{
    ess_stream_pub_t *p = f->u.pub.pub_id < MAX_PUBS ? k->pubs[f->u.pub.pub_id] : NULL;
    if (p == NULL || p->dead || p->user_gone || !p->cbs.on_confirm)
        return;
    p->depth++;
    for (uint32_t i = 0; i < f->u.pub.count && !p->user_gone && !k->c->closing; i++) {
        uint16_t code = ESS_PROTO_OK;
        uint64_t id = is_error ? ess_proto_error_id(f, i, &code) : ess_proto_confirm_id(f, i);
        p->cbs.on_confirm(p, id, ess_proto_code_to_ess(code), p->ud);
    }
    p->depth--;
    ess__stream_pub_put(p);
}

int ess_stream_publisher_create(ess_stream_client_t *c, const char *stream,
                                const ess_stream_pub_cbs_t *cbs, void *ud, ess_stream_pub_t **out)
{
    if (c == NULL || cbs == NULL || !ess__stream_name_ok(stream))
        return ESS_EINVAL;
    if (c->closing)
        return ESS_ESTATE;
    ess_stream_pub_t *p = ess_xcalloc(1, sizeof *p);
    p->c = c;
    p->stream = ess_xstrdup(stream);
    p->cbs = *cbs;
    p->ud = ud;
    p->next_id = 1;
    ESS__LIST_PUSH(c->pubs, p);
    *out = p;
    if (c->locator == NULL || !ess__stream_conn_usable(c->locator) ||
        (c->lb_mode && c->locator->npubs >= MAX_PUBS)) {
        ess__stream_req_t *r = ess__stream_req_new(R_PUB_FAIL, NULL);
        r->pub = p;
        p->refs++;
        ess__stream_defer(c, r, ESS_ECONN);
    } else if (c->lb_mode) {
        take_slot(p, ess__stream_conn_for(c, c->url.host, c->port, 1));
    } else {
        ess__stream_req_t *r = ess__stream_req_new(R_LOCATE_PUB, stream);
        r->pub = p;
        p->refs++;
        ess__stream_conn_queue_req(c->locator, r);
    }
    return ESS_OK;
}

int ess_stream_publish(ess_stream_pub_t *p, const uint8_t *const *msgs, const size_t *lens,
                       size_t n, uint64_t *first_id)
{
    if (p == NULL || (n && (msgs == NULL || lens == NULL)))
        return ESS_EINVAL;
    ess__stream_conn_t *k = p->conn;
    if (p->dead || !p->ready || k == NULL || k->state != C_READY)
        return ESS_ESTATE;
    size_t limit = k->frame_max ? k->frame_max : RECV_LIMIT;
    for (size_t i = 0; i < n; i++)
        if (ess_proto_publish_size(1, lens[i]) > limit)
            return ESS_ETOOBIG;
    if (first_id)
        *first_id = p->next_id;
    ess_proto_buf_t b = {0};
    size_t i = 0;
    while (i < n) {
        size_t j = i, total = 0;
        while (j < n && ess_proto_publish_size(j - i + 1, total + lens[j]) <= limit) {
            total += lens[j];
            j++;
        }
        ess_proto_enc_publish(&b, (uint8_t)p->id, p->next_id, msgs + i, lens + i, j - i);
        p->next_id += j - i;
        i = j;
    }
    ess__stream_conn_write(k, &b);
    return ESS_OK;
}

void ess_stream_publisher_close(ess_stream_pub_t *p)
{
    if (p == NULL || p->user_gone)
        return;
    p->user_gone = 1;
    ess__stream_conn_t *k = p->conn;
    if (k && p->on_wire && k->state == C_READY) {
        ess_proto_buf_t b = {0};
        ess_proto_enc_delete_publisher(&b, ++k->next_corr, (uint8_t)p->id);
        ess__stream_conn_write(k, &b);
    }
    p->dead = 1;
    pub_slot_release(p);
    if (k)
        ess__stream_conn_maybe_idle(k);
    ess__stream_pub_put(p);
}
