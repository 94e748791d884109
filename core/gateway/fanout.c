/*
 * Shared subscriptions (gateway/fanout.h). Owns the groups: one per broker
 * stream with live members (and per framing: members that negotiated
 * permessage-deflate read a group whose log holds compressed frames), each with its broker source,
 * its shared log, its member and waiting lists and a copy of the event stream its hook calls see. A
 * group's message is framed once into the log; then one pass over the members wakes those that were
 * idle and marks those that are a budget behind, which leave afterwards (session.c resubscribes
 * them on their own). A group without members is freed, its source unsubscribed. Loop thread only.
 */
#include "gateway/fanout.h"
#include "ess.h"
#include "gateway/gateway.h"
#include "gateway/session.h"
#include "metrics/metrics.h"
#include "script/vm.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>

struct ess_fanout_s {
    struct ess_fanout_s *next;
    ess_app_t *app;
    char stream[256];
    ess_source_t *src;
    ess_outlog_t log;
    ess_session_t **m; /* members */
    size_t n, cap;
    ess_session_t **w; /* solo sessions waiting to rejoin */
    size_t nw, capw;
    int has_last;
    uint64_t last; /* the last offset received */
    int in_cb;     /* inside a source callback: freeing is deferred */
    int paused;    /* its one member is a budget behind: the source is paused */
    uint64_t msgs; /* messages received */
    ess_hook_es_t es;
    char uuid[ESS_UUID_LEN + 1];
    char *routing_key;
};

static ess_fanout_t *groups;
static int64_t ngroups;

int64_t ess_fanout_groups(void)
{
    return ngroups;
}

/* Compressing and plain members read separate groups (and logs): a
 * group's frames are either all compressed or none. */
static ess_fanout_t *find(const char *stream, int deflate)
{
    for (ess_fanout_t *g = groups; g; g = g->next)
        if (g->log.deflate == deflate && strcmp(g->stream, stream) == 0)
            return g;
    return NULL;
}

int ess_fanout_eligible(ess_app_t *app, const char *stream)
{
    return app->vm != NULL && app->vm->enrich_shared && strlen(stream) < sizeof groups->stream;
}

static void unwait(ess_session_t *s)
{
    ess_fan_member_t *f = ess__session_fan(s);
    ess_fanout_t *g = f->waiting;
    if (g == NULL)
        return;
    ess_session_t *last = g->w[--g->nw];
    g->w[f->windex] = last;
    ess__session_fan(last)->windex = f->windex;
    f->waiting = NULL;
}

/* Take g out of the list: no session joins or waits for it any more. */
static void unlink_group(ess_fanout_t *g)
{
    for (ess_fanout_t **p = &groups; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    g->next = NULL;
}

static void destroy(ess_fanout_t *g)
{
    unlink_group(g);
    while (g->nw > 0)
        unwait(g->w[g->nw - 1]);
    if (g->src) {
        ess_source_unsubscribe(g->src);
        ess_metrics.broker_subscriptions--;
    }
    ess_outlog_release(&g->log);
    ess_hooks_es_release(g->app->vm, &g->es);
    ngroups--;
    free(g->routing_key);
    free(g->m);
    free(g->w);
    free(g);
}

static void maybe_destroy(ess_fanout_t *g)
{
    if (g->n == 0 && g->in_cb == 0)
        destroy(g);
}

static void resume(ess_fanout_t *g)
{
    if (g->paused && g->src) {
        g->paused = 0;
        ess_source_resume(g->src);
    }
}

void ess_fanout_drained(ess_session_t *s, size_t queued)
{
    ess_fan_member_t *f = ess__session_fan(s);
    ess_fanout_t *g = f->group;
    if (g != NULL && g->paused &&
        g->log.payload - f->cur.payload_abs + queued <=
            (uint64_t)g->app->cfg->outbound_budget_bytes / 2)
        resume(g);
}

static void add_member(ess_fanout_t *g, ess_session_t *s)
{
    /* A second member: the group no longer waits for the first; if that
     * one stays a budget behind it leaves at the next message. */
    resume(g);
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 8;
        g->m = ess_xrealloc(g->m, g->cap * sizeof *g->m);
    }
    ess_fan_member_t *f = ess__session_fan(s);
    f->group = g;
    f->index = g->n;
    f->slow = 0;
    g->m[g->n++] = s;
    ess_outcur_open(&f->cur, &g->log);
    f->next_known = g->has_last;
    f->next_offset = g->last + 1;
}

void ess_fanout_leave(ess_session_t *s)
{
    unwait(s);
    ess_fan_member_t *f = ess__session_fan(s);
    ess_fanout_t *g = f->group;
    if (g == NULL)
        return;
    ess_outcur_close(&f->cur);
    ess_session_t *last = g->m[--g->n];
    g->m[f->index] = last;
    ess__session_fan(last)->index = f->index;
    f->group = NULL;
    maybe_destroy(g);
}

static int enrich(void *ctx, const ess_hook_msg_t *m, ess_hook_emit_fn emit, void *emit_ud)
{
    ess_fanout_t *g = ctx;
    return ess_hooks_enrich(g->app->vm, &g->es, m, emit, emit_ud);
}

/* The members now, copied: each call below may make one leave. */
static ess_session_t **members(ess_fanout_t *g, size_t *n)
{
    *n = g->n;
    ess_session_t **v = ess_xmalloc((g->n ? g->n : 1) * sizeof *v);
    memcpy(v, g->m, g->n * sizeof *v);
    return v;
}

static void on_message(void *ud, const ess_source_msg_t *msg)
{
    ess_fanout_t *g = ud;
    ess_app_t *app = g->app;
    size_t n;
    g->in_cb++;
    if (!app->vm->enrich_shared) {
        /* A reload made the hook depend on the event stream: every member
         * continues on its own subscription, where the hook runs for it. */
        ess_log_info("fan-out: stream %s: the enrich hook is per_stream now; %zu sessions "
                     "continue on their own subscriptions",
                     g->stream, g->n);
        ess_session_t **v = members(g, &n);
        for (size_t i = 0; i < n; i++)
            ess__session_fan_slow(v[i]);
        free(v);
        goto out;
    }
    ess_metrics.msgs_in++;
    /* One progress line per group, not one per member (log.message_stats_interval). */
    if (app->cfg->message_stats_interval > 0 &&
        ++g->msgs % (uint64_t)app->cfg->message_stats_interval == 0)
        ess_log_info("shared subscription of %s: received %llu, %zu members, %zu waiting",
                     g->stream, (unsigned long long)g->msgs, g->n, g->nw);
    uint64_t before = g->log.bytes;
    ess_delivery_result_t r = ess_delivery_run_log(msg, enrich, g, &g->log);
    g->has_last = 1;
    g->last = msg->offset;
    if (r == ESS_DELIVERY_POISON) {
        ess_session_t **v = members(g, &n);
        for (size_t i = 0; i < n; i++)
            ess__session_fan_poison(v[i]);
        free(v);
        goto out;
    }
    uint64_t budget = (uint64_t)app->cfg->outbound_budget_bytes;
    int grew = g->log.bytes != before, any_slow = 0;
    for (size_t i = 0; i < g->n; i++) {
        ess_fan_member_t *f = ess__session_fan(g->m[i]);
        f->msgs++;
        if (!f->next_known) {
            f->next_known = 1;
            f->next_offset = msg->offset;
        }
        if (!grew)
            continue;
        if (f->cur.bytes_abs == before)
            ess__session_fan_wake(g->m[i]);
        else if (g->log.payload - f->cur.payload_abs <= budget)
            continue;
        else if (g->n > 1)
            any_slow = f->slow = 1;
        else if (!g->paused) {
            /* The one member holds nobody back: the group waits for it,
             * as its own subscription would. */
            g->paused = 1;
            ess_metrics.credit_stalls++;
            ess_source_pause(g->src);
        }
    }
    if (any_slow) {
        /* The slow leave, but one member always stays: when all were
         * slow, the group then waits for the last of them. */
        ess_session_t **v = members(g, &n);
        for (size_t i = 0; i < n; i++) {
            ess_fan_member_t *f = ess__session_fan(v[i]);
            if (!f->slow)
                continue;
            f->slow = 0;
            if (g->n > 1) {
                ess__session_fan_slow(v[i]);
            } else if (!g->paused) {
                g->paused = 1;
                ess_metrics.credit_stalls++;
                ess_source_pause(g->src);
            }
        }
        free(v);
    }
    /* Solo sessions whose own subscription is exactly here join now. */
    for (size_t i = 0; i < g->nw;) {
        ess_session_t *s = g->w[i];
        ess_fan_member_t *f = ess__session_fan(s);
        if (f->woffset > msg->offset) {
            i++;
            continue;
        }
        int join = f->woffset == msg->offset;
        unwait(s); /* moves another into slot i */
        if (join) {
            add_member(g, s);
            ess__session_fan_joined(s);
        }
    }
out:
    g->in_cb--;
    maybe_destroy(g);
}

static void on_ended(void *ud, int status, int established)
{
    ess_fanout_t *g = ud;
    g->src = NULL; /* freed by the source after this callback */
    ess_metrics.broker_subscriptions--;
    unlink_group(g); /* a session opening now gets a new group */
    while (g->nw > 0)
        unwait(g->w[g->nw - 1]);
    g->in_cb++;
    size_t n;
    ess_session_t **v = members(g, &n);
    for (size_t i = 0; i < n; i++)
        ess__session_fan_ended(v[i], status, established);
    free(v);
    g->in_cb--;
    /* Each member closed, which made it leave; one that stayed would free
     * the group when it leaves (maybe_destroy). */
    maybe_destroy(g);
}

int ess_fanout_join(ess_app_t *app, const char *stream, const ess_hook_es_t *es, ess_session_t *s)
{
    ess_fanout_t *g = find(stream, ess__session_deflate(s));
    if (g == NULL) {
        g = ess_xcalloc(1, sizeof *g);
        g->app = app;
        snprintf(g->stream, sizeof g->stream, "%s", stream);
        memcpy(g->uuid, es->uuid, sizeof g->uuid - 1);
        g->routing_key = ess_xstrndup(es->routing_key, strlen(es->routing_key));
        g->es.id = es->id;
        g->es.uuid = g->uuid;
        g->es.routing_key = g->routing_key;
        g->es.ref = -2; /* LUA_NOREF */
        ess_outlog_init(&g->log);
        g->log.deflate = ess__session_deflate(s);
        ess_route_t route = {0};
        snprintf(route.stream, sizeof route.stream, "%s", stream);
        static const ess_source_cbs_t cbs = {on_message, on_ended};
        ess_offset_spec_t from = {.kind = ESS_OFFSET_NEXT};
        int rc = ess_gateway_subscribe(app, &route, from, &cbs, g, &g->src);
        if (rc != ESS_OK) {
            ess_outlog_release(&g->log);
            free(g->routing_key);
            free(g);
            return rc;
        }
        ess_metrics.broker_subscriptions++;
        ngroups++;
        g->next = groups;
        groups = g;
    }
    add_member(g, s);
    return ESS_OK;
}

int ess_fanout_try_rejoin(ess_app_t *app, const char *stream, ess_session_t *s, uint64_t offset)
{
    if (groups == NULL || !ess_fanout_eligible(app, stream))
        return 0;
    ess_fan_member_t *f = ess__session_fan(s);
    ess_fanout_t *g = f->waiting ? f->waiting : find(stream, ess__session_deflate(s));
    if (g == NULL || g->n == 0 || (g->has_last && g->last > offset)) {
        unwait(s);
        return 0;
    }
    if (g->has_last && g->last == offset) {
        unwait(s);
        add_member(g, s);
        return 1;
    }
    f->woffset = offset;
    if (f->waiting == NULL) {
        if (g->nw == g->capw) {
            g->capw = g->capw ? g->capw * 2 : 8;
            g->w = ess_xrealloc(g->w, g->capw * sizeof *g->w);
        }
        f->waiting = g;
        f->windex = g->nw;
        g->w[g->nw++] = s;
    }
    return 0;
}
