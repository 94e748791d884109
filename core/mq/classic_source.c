/*
 * The message source over a classic-queue subscription (mq/source.h):
 * translates the classic client's callbacks (classic.h, its public API
 * only). Classic messages have no offsets or timestamps. Owns the adapter,
 * freed once the subscription is over.
 */
#include "ess.h"
#include "mq/classic.h"
#include "mq/source.h"

#include <stdlib.h>

typedef struct {
    ess_source_t base;
    ess_classic_sub_t *sub;
} classic_source_t;

static void src_pause(ess_source_t *src)
{
    ess_classic_sub_pause(((classic_source_t *)src)->sub);
}

static void src_resume(ess_source_t *src)
{
    ess_classic_sub_resume(((classic_source_t *)src)->sub);
}

static void src_unsubscribe(ess_source_t *src)
{
    classic_source_t *cs = (classic_source_t *)src;
    ess_classic_unsubscribe(cs->sub);
    free(cs);
}

static const ess_source_ops_t ops = {src_pause, src_resume, src_unsubscribe};

static void on_subscribed(ess_classic_sub_t *sub, int status, void *ud)
{
    classic_source_t *cs = ud;
    (void)sub;
    if (status == ESS_OK)
        return;
    /* The client frees sub after this callback. */
    cs->base.cbs.on_ended(cs->base.ud, status, 0);
    free(cs);
}

static void on_message(ess_classic_sub_t *sub, const ess_classic_msg_t *m, void *ud)
{
    classic_source_t *cs = ud;
    (void)sub;
    ess_source_msg_t msg = {.body = m->body, .len = m->len};
    cs->base.cbs.on_message(cs->base.ud, &msg);
}

static void on_ended(ess_classic_sub_t *sub, int status, void *ud)
{
    classic_source_t *cs = ud;
    (void)sub;
    cs->base.cbs.on_ended(cs->base.ud, status, 1);
    free(cs);
}

int ess_classic_source_subscribe(struct ess_classic_s *client, const char *exchange,
                                 const char *routing_key, const ess_source_cbs_t *cbs, void *ud,
                                 ess_source_t **out)
{
    static const ess_classic_sub_cbs_t ccbs = {on_subscribed, on_message, on_ended};
    classic_source_t *cs = ess_xcalloc(1, sizeof *cs);
    cs->base.ops = &ops;
    cs->base.cbs = *cbs;
    cs->base.ud = ud;
    cs->base.has_offsets = 0;
    int rc = ess_classic_subscribe(client, exchange, routing_key, &ccbs, cs, &cs->sub);
    if (rc != ESS_OK) {
        free(cs);
        return rc;
    }
    *out = &cs->base;
    return ESS_OK;
}
