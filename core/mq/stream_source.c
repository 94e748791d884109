/*
 * The message source over a stream subscription (mq/source.h): translates
 * the stream client's callbacks (stream_client.h, its public API only) and
 * owns the adapter, freed once the subscription is over.
 */
#include "ess.h"
#include "mq/source.h"

#include <stdlib.h>

typedef struct {
    ess_source_t base;
    ess_stream_sub_t *sub;
} stream_source_t;

static void src_pause(ess_source_t *src)
{
    ess_stream_sub_pause(((stream_source_t *)src)->sub);
}

static void src_resume(ess_source_t *src)
{
    ess_stream_sub_resume(((stream_source_t *)src)->sub);
}

static void src_unsubscribe(ess_source_t *src)
{
    stream_source_t *ss = (stream_source_t *)src;
    ess_stream_unsubscribe(ss->sub);
    free(ss);
}

static const ess_source_ops_t ops = {src_pause, src_resume, src_unsubscribe};

static void on_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    stream_source_t *ss = ud;
    (void)sub;
    if (status == ESS_OK)
        return;
    /* The client frees sub after this callback. */
    ss->base.cbs.on_ended(ss->base.ud, status, 0);
    free(ss);
}

static void on_message(ess_stream_sub_t *sub, const ess_stream_msg_t *m, void *ud)
{
    stream_source_t *ss = ud;
    (void)sub;
    ess_source_msg_t msg = {
        .body = m->body,
        .len = m->len,
        .has_offset = 1,
        .offset = m->offset,
        .timestamp_ms = m->timestamp_ms,
        .amqp = m->amqp,
        .record = m->record,
        .record_len = m->record_len,
    };
    ss->base.cbs.on_message(ss->base.ud, &msg);
}

static void on_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    stream_source_t *ss = ud;
    (void)sub;
    ss->base.cbs.on_ended(ss->base.ud, reason, 1);
    free(ss);
}

int ess_stream_source_subscribe(ess_stream_client_t *client, const char *stream,
                                ess_offset_spec_t from, const ess_source_cbs_t *cbs, void *ud,
                                ess_source_t **out)
{
    static const ess_stream_sub_cbs_t scbs = {on_subscribed, on_message, on_ended};
    stream_source_t *ss = ess_xcalloc(1, sizeof *ss);
    ss->base.ops = &ops;
    ss->base.cbs = *cbs;
    ss->base.ud = ud;
    ss->base.has_offsets = 1;
    int rc = ess_stream_subscribe(client, stream, from, &scbs, ss, &ss->sub);
    if (rc != ESS_OK) {
        free(ss);
        return rc;
    }
    *out = &ss->base;
    return ESS_OK;
}
