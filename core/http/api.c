/*
 * The internal REST API on lws: collects the method, path, query, headers
 * and a size-capped body, hands them to the Lua handlers (script/api.c),
 * writes the response from the WRITEABLE callback, counts it by route and
 * status, and writes the access log. It owns the per-request memory; it
 * knows nothing of routes or JSON.
 */
#include "ess.h"
#include "app.h"
#include "http/edge.h"
#include "http/http.h"
#include "metrics/metrics.h"
#include "script/api.h"
#include "util/log.h"

#include <string.h>
#include <time.h>

static const char *method_names[] = {"GET",    "POST",    "OPTIONS", "PUT",  "PATCH",
                                     "DELETE", "CONNECT", "HEAD",    ":path"};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void ready_free(ess_api_req_t *r)
{
    ess_api_response_t *resp = r->ready;
    if (resp) {
        ess_buf_free(&resp->body);
        ess_buf_free(&resp->headers);
        free(resp);
    }
    r->ready = NULL;
}

static void req_free(ess_api_req_t *r)
{
    if (r->pending)
        ess_script_api_abandon(r->pending);
    r->pending = NULL;
    ready_free(r);
    free(r->path);
    free(r->query);
    free(r->route);
    ess_buf_free(&r->body);
    ess_buf_free(&r->resp);
    memset(r, 0, sizeof *r);
}

/* Collect the query string: lws splits it into '&'-separated fragments. */
static char *query_of(struct lws *wsi)
{
    ess_buf_t q = {0};
    char frag[1024];
    for (int i = 0; i < 64; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (q.len)
            ess_buf_append(&q, "&", 1);
        ess_buf_append(&q, frag, (size_t)n);
    }
    char *s = ess_xstrdup(q.data ? q.data : "");
    ess_buf_free(&q);
    return s;
}

static const enum lws_token_indexes header_tokens[] = {
    WSI_TOKEN_HTTP_AUTHORIZATION,
    WSI_TOKEN_HTTP_CONTENT_TYPE,
    WSI_TOKEN_HTTP_ACCEPT,
    WSI_TOKEN_HTTP_USER_AGENT,
    WSI_TOKEN_HOST,
    WSI_TOKEN_HTTP_CONTENT_LENGTH,
};

static void write_response(struct lws *wsi, ess_api_req_t *r, ess_api_response_t *resp)
{
    uint8_t buf[LWS_PRE + 4096];
    uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    r->status = resp->status;
    if (lws_add_http_common_headers(wsi, (unsigned)resp->status, resp->content_type,
                                    resp->status == 204 ? 0 : resp->body.len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end))
        goto fail;
    for (size_t off = 0; off < resp->headers.len;) {
        const char *name = resp->headers.data + off;
        const char *value = name + strlen(name) + 1;
        off += strlen(name) + 1 + strlen(value) + 1;
        char hn[128];
        snprintf(hn, sizeof hn, "%s:", name);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)hn,
                                        (const unsigned char *)value, (int)strlen(value), &p, end))
            goto fail;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        goto fail;
    r->resp = resp->body;
    resp->body = (ess_buf_t){0};
    r->route = ess_xstrdup(resp->route);
    r->phase = 1;
    ess_buf_free(&resp->headers);
    /* A client that stops reading cannot hold the connection: the whole
     * response must be taken within 30 s. */
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 30);
    lws_callback_on_writable(wsi);
    return;
fail:
    ess_buf_free(&resp->body);
    ess_buf_free(&resp->headers);
    if (resp->status != 500 || strcmp(resp->route, "error") != 0) {
        /* Headers that do not fit (a handler's huge header): a plain 500. */
        ess_log_error("api: the response headers do not fit in %zu bytes", sizeof buf - LWS_PRE);
        resp->status = 500;
        ess_buf_append(&resp->body, "{\"detail\":\"Internal Server Error\"}", 34);
        snprintf(resp->content_type, sizeof resp->content_type, "application/json");
        snprintf(resp->route, sizeof resp->route, "error");
        write_response(wsi, r, resp);
        return;
    }
    r->phase = 2; /* the caller closes the connection */
}

static void access_log(struct lws *wsi, ess_api_req_t *r);
/* The registry answered a waiting request: keep the response and write it
 * from the next WRITEABLE callback (lws's own context). */
static void deferred_done(void *ud, ess_api_response_t *resp)
{
    ess_api_req_t *r = ud;
    r->pending = NULL;
    ess_api_response_t *copy = ess_xmalloc(sizeof *copy);
    *copy = *resp;
    resp->body = (ess_buf_t){0};
    resp->headers = (ess_buf_t){0};
    r->ready = copy;
    lws_callback_on_writable(r->wsi);
}

static void dispatch(struct lws *wsi, ess_app_t *app, ess_api_req_t *r)
{
    ess_kv_t headers[ESS_ARRAY_SIZE(header_tokens)];
    char values[ESS_ARRAY_SIZE(header_tokens)][1024];
    size_t nh = 0;
    for (size_t i = 0; i < ESS_ARRAY_SIZE(header_tokens); i++) {
        int n = lws_hdr_total_length(wsi, header_tokens[i]);
        if (n <= 0 || n >= (int)sizeof values[0])
            continue;
        /* A value with a NUL in it would reach Lua cut short ("Bearer
         * TOKEN\0junk" passed the token check): treat it as absent. */
        int got = lws_hdr_copy(wsi, values[nh], sizeof values[nh], header_tokens[i]);
        if (got < 0 || strlen(values[nh]) != (size_t)got)
            continue;
        const char *name = (const char *)lws_token_to_string(header_tokens[i]);
        static char names[ESS_ARRAY_SIZE(header_tokens)][64];
        size_t k = 0;
        for (; name && name[k] && name[k] != ':' && k < 63; k++)
            names[nh][k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
        names[nh][k] = '\0';
        headers[nh].name = names[nh];
        headers[nh].value = values[nh];
        nh++;
    }
    ess_api_request_t req = {
        .method = r->method >= 0 && r->method < (int)ESS_ARRAY_SIZE(method_names)
                      ? method_names[r->method]
                      : "UNKNOWN",
        .path = r->path,
        .query = r->query,
        .body = r->body.data,
        .body_len = r->body.len,
        .headers = headers,
        .nheaders = nh,
    };
    ess_api_response_t resp = {0};
    if (r->refuse) {
        /* Answered here, not by Lua: a path cut at a NUL would match
         * another route, and a chunked body would be read as the next
         * request on the connection. */
        resp.status = r->refuse;
        ess_buf_appendf(&resp.body, "{\"detail\":\"%s\"}",
                        r->refuse == 411 ? "Length Required: chunked request bodies are not "
                                           "supported; send Content-Length"
                                         : "Invalid request path");
        snprintf(resp.content_type, sizeof resp.content_type, "application/json");
        snprintf(resp.route, sizeof resp.route, "invalid");
    } else if (r->too_large) {
        resp.status = 413;
        ess_buf_appendf(&resp.body, "{\"detail\":\"Request body larger than %lld bytes\"}",
                        (long long)app->cfg->max_body_bytes);
        snprintf(resp.content_type, sizeof resp.content_type, "application/json");
        snprintf(resp.route, sizeof resp.route, "too_large");
    } else if (app->draining) {
        resp.status = 503;
        ess_buf_appendf(&resp.body, "{\"detail\":\"Shutting down\"}");
        snprintf(resp.content_type, sizeof resp.content_type, "application/json");
        snprintf(resp.route, sizeof resp.route, "draining");
    } else {
        ess_api_pending_t *p = ess_script_api_start(app, &req, &resp, deferred_done, r);
        if (p != NULL) {
            /* The handler waits for the registry (its own deadline answers
             * 503); lws must not time the connection out first. */
            r->pending = p;
            r->wsi = wsi;
            r->phase = 4;
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK,
                            app->cfg->registry_timeout_ms / 1000 + 10);
            return;
        }
        /* The console's feed: the router has authorized it; feed.c streams. */
        if (resp.status == 200 && strcmp(resp.route, "/admin/feed") == 0) {
            if (ess__feed_adopt(wsi, app) == 0) {
                ess_buf_free(&resp.body);
                ess_buf_free(&resp.headers);
                r->phase = 5;
                r->status = 200;
                r->route = ess_xstrdup(resp.route);
                app->api_inflight--;
                access_log(wsi, r);
                return;
            }
            resp.status = 503;
            ess_buf_reset(&resp.body);
            ess_buf_reset(&resp.headers);
            ess_buf_appendf(&resp.body, "{\"detail\":\"Too many feed connections\"}");
            snprintf(resp.content_type, sizeof resp.content_type, "application/json");
        }
    }
    write_response(wsi, r, &resp);
}

static void access_log(struct lws *wsi, ess_api_req_t *r)
{
    char peer[64] = "-";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    double ms = (double)(now_ns() - r->start_ns) / 1e6;
    const char *m = r->method >= 0 && r->method < (int)ESS_ARRAY_SIZE(method_names)
                        ? method_names[r->method]
                        : "UNKNOWN";
    ess_log_info("access: %s \"%s %s%s%s\" %d %zu %.2fms", peer, m, r->path ? r->path : "-",
                 r->query && r->query[0] ? "?" : "", r->query ? r->query : "", r->status,
                 r->resp.len, ms);
    char labels[256];
    snprintf(labels, sizeof labels, "route=\"%s\",code=\"%d\"", r->route ? r->route : "unmatched",
             r->status);
    ess_metrics_add("ess_http_requests_total", labels, 1);
}

int ess__api_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    ess_api_req_t *r = user;
    ess_app_t *app = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        req_free(r);
        r->start_ns = now_ns();
        char *uri = NULL;
        int urilen = 0;
        r->method = lws_http_get_uri_and_method(wsi, &uri, &urilen);
        r->path = ess_xstrndup(in ? (const char *)in : "/", in ? len : 1);
        r->query = query_of(wsi);
        char cl[32];
        if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
            r->expect_body = strtoll(cl, NULL, 10);
        /* edge.c read the body and took its Content-Length out of the
         * head (lws 4.1 cannot be given both). */
        char *body = NULL;
        size_t body_len = 0;
        if (ess__edge_take_body(lws_get_socket_fd(wsi), &body, &body_len)) {
            ess_buf_append(&r->body, body, body_len);
            free(body);
        }
        app->api_inflight++;
        /* lws has decoded %00 in the path: the C string would stop there. */
        if (in != NULL && memchr(in, '\0', len) != NULL)
            r->refuse = 400;
        else if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)
            r->refuse = 411;
        if (r->refuse || r->expect_body > app->cfg->max_body_bytes) {
            /* Refuse before reading: the connection closes after the reply. */
            r->too_large = !r->refuse;
            dispatch(wsi, app, r);
            return r->phase == 2 ? -1 : 0;
        }
        if (r->expect_body > 0)
            return 0; /* wait for LWS_CALLBACK_HTTP_BODY_COMPLETION */
        dispatch(wsi, app, r);
        return r->phase == 2 ? -1 : 0;
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (r->too_large || r->refuse)
            return 0;
        if (r->body.len + len > (size_t)app->cfg->max_body_bytes) {
            r->too_large = 1;
            ess_buf_free(&r->body);
            return 0;
        }
        ess_buf_append(&r->body, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (r->phase != 0)
            return 0;
        dispatch(wsi, app, r);
        return r->phase == 2 ? -1 : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (r->phase == 5)
            return ess__feed_writeable(wsi);
        if (r->phase == 3)
            return -1; /* lws has flushed what it had buffered: close */
        if (r->phase == 4) {
            if (r->ready == NULL)
                return 0;
            ess_api_response_t *resp = r->ready;
            r->ready = NULL;
            write_response(wsi, r, resp);
            free(resp);
            return r->phase == 2 ? -1 : 0;
        }
        if (r->phase != 1)
            return 0;
        if (r->resp.len > 0) {
            size_t chunk = r->resp.len - r->resp_sent;
            if (chunk > 16384)
                chunk = 16384;
            uint8_t *buf = ess_xmalloc(LWS_PRE + chunk);
            memcpy(buf + LWS_PRE, r->resp.data + r->resp_sent, chunk);
            int last = r->resp_sent + chunk == r->resp.len;
            int n =
                lws_write(wsi, buf + LWS_PRE, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
            free(buf);
            if (n < 0)
                return -1;
            r->resp_sent += chunk;
            if (!last) {
                lws_callback_on_writable(wsi);
                return 0;
            }
        }
        r->phase = 3;
        access_log(wsi, r);
        app->api_inflight--;
        /* One request per connection ("Connection: close"). libwebsockets
         * 4.1 mishandles a request with a body pipelined behind another on
         * a keep-alive connection: it hands header bytes to HTTP_BODY (a
         * wrong 422) and then spins on the connection, stalling the whole
         * loop. The internal API's few requests do not need keep-alive. */
        if (lws_partial_buffered(wsi)) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        return -1;
    }
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        /* lws frees the per-request data on DROP_PROTOCOL and may report
         * CLOSED_HTTP after that with user NULL. */
        if (r == NULL)
            return 0;
        if (r->phase == 5) {
            ess__feed_drop(wsi);
            req_free(r);
            return 0;
        }
        /* In flight until the response is written: phase 0 (reading),
         * 1 (writing), 2 (could not answer) and 4 (waiting for the
         * registry; req_free abandons the wait). */
        if (r->phase != 3 && r->path != NULL) {
            app->api_inflight--;
            r->phase = 3;
        }
        req_free(r);
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
