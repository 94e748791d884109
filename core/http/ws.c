/*
 * The public listener's transport: the lws callback of the public vhost.
 * Plain HTTP requests get a JSON 404; each WebSocket upgrade is parsed
 * (path, selector headers and query arguments) into a gateway session, and
 * the session's output blocks are written here: whole blocks of ready
 * frames as raw bytes, several per WRITEABLE while the socket takes them,
 * then the close frame, written by hand (see write_close). Owns the
 * per-connection data (ess_ws_pss_t); the session owns everything else.
 */
#include "ess.h"
#include "app.h"
#include "gateway/session.h"
#include "http/http.h"
#include "http/deflate.h"
#include "http/wsguard.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(LWS_PRE <= ESS_OUT_HEADROOM, "output blocks need LWS_PRE bytes of headroom");

static const char not_found[] = "{\"detail\":\"Not Found\"}";

/* Blocks written per WRITEABLE at most (1 MiB), so one fast session cannot
 * starve the others on the loop. */
#define BLOCKS_PER_WRITEABLE 16

static void want_write(void *conn)
{
    lws_callback_on_writable(conn);
}

static const ess_session_transport_t transport = {want_write};

/* The query's selector parameters, read from every fragment lws parsed:
 * lws splits the query at each literal '&' or ';' and percent-decodes each
 * "name=value" in place ("2025-04-30T13%3A33" arrives as "2025-04-30T13:33",
 * '+' as a space). All fragments are read, whatever their number or length
 * (the edge bounds both: at most 88 with the headers, and the head's size),
 * into one buffer as large as all of them. A name given more than once is
 * counted, and counts as several selectors. */
static char *query_args(struct lws *wsi, ess_session_request_t *req)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return NULL;
    char *buf = ess_xmalloc((size_t)total + 1);
    char *p = buf;
    size_t left = (size_t)total + 1;
    for (int i = 0; left > 0; i++) {
        int n = lws_hdr_copy_fragment(wsi, p, (int)left, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        for (int k = 3; k < ESS_SEL_SOURCES; k++) {
            size_t nl = strlen(ess_selector_names[k]);
            if ((size_t)n >= nl + 1 && memcmp(p, ess_selector_names[k], nl) == 0 && p[nl] == '=') {
                if (req->selector[k] == NULL)
                    req->selector[k] = p + nl + 1;
                req->count[k]++;
            }
        }
        p += n + 1;
        left -= (size_t)n + 1;
    }
    return buf;
}

/* A request header by name, NULL when absent; the value is allocated. */
static char *header(struct lws *wsi, const char *name)
{
    char lname[64];
    size_t n = strlen(name);
    for (size_t i = 0; i < n; i++)
        lname[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    lname[n] = ':';
    lname[n + 1] = '\0';
    int hl = lws_hdr_custom_length(wsi, lname, (int)n + 1);
    if (hl < 0)
        return NULL;
    char *buf = ess_xmalloc((size_t)hl + 1);
    if (lws_hdr_custom_copy(wsi, buf, hl + 1, lname, (int)n + 1) < 0)
        buf[0] = '\0';
    return buf;
}

static ess_session_t *open_session(ess_app_t *app, struct lws *wsi, int deflate)
{
    int plen = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    char *path = ess_xmalloc(plen > 0 ? (size_t)plen + 1 : 1);
    if (plen <= 0 || lws_hdr_copy(wsi, path, plen + 1, WSI_TOKEN_GET_URI) < 0)
        path[0] = '\0';
    ess_session_request_t req = {.path = path};
    char *hdrs[3];
    /* The first three selector sources are headers, the last three query arguments. */
    for (int i = 0; i < 3; i++) {
        req.selector[i] = hdrs[i] = header(wsi, ess_selector_names[i]);
        req.count[i] = hdrs[i] != NULL;
    }
    char *args = query_args(wsi, &req);
    /* Who the client is, for the operator console. */
    char peer[64] = "", ua[128] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    if (lws_hdr_copy(wsi, ua, sizeof ua, WSI_TOKEN_HTTP_USER_AGENT) < 0)
        ua[0] = '\0';
    req.peer = peer;
    req.user_agent = ua;
    req.deflate = deflate;
    ess_session_t *s = ess_session_open(app, &req, &transport, wsi);
    for (int i = 0; i < 3; i++)
        free(hdrs[i]);
    free(args);
    free(path);
    return s;
}

/* ---- The client frame check ------------------------------------------------
 * lws 4.1 accepts unmasked client frames, and answers a control frame over
 * 125 bytes, bad UTF-8 and other protocol errors by dropping the socket
 * (its close frame is lost on the libuv back end, see write_close). It has
 * no hook before its own parsing, so essd sees the bytes where lws reads
 * them: recv() is defined here, over the system call, and every byte read
 * from a public connection's socket on the loop thread goes through
 * wsguard.c first. The edge registers each public socket as it hands it to
 * lws (its head never passes through recv), so the parser starts at the
 * first frame byte, and clears the number at each accept (a socket lws
 * closed without an established WebSocket leaves its entry until then). On a violation lws gets
 * only the bytes before the offending frame, the session closes with the guard's code (1002 or
 * 1007) and reason through the hand-written close frame, and what the client sends afterwards is
 * read and dropped (end of input once the close frame is out). Other threads (the classic client)
 * and other sockets pass straight through. */
typedef struct {
    ess_wsguard_t g;
    struct lws *wsi; /* set while the WebSocket is established */
    ess_ws_pss_t *pss;
} guard_t;

static guard_t **guards; /* by descriptor; loop thread only */
static int nguards;
static pthread_t guard_thread;
static atomic_int guard_on;

void ess__ws_guard_fd(int fd, int public)
{
    if (fd < 0)
        return;
    if (!atomic_load(&guard_on)) {
        guard_thread = pthread_self();
        atomic_store(&guard_on, 1);
    }
    if (fd >= nguards) {
        if (!public)
            return;
        int n = nguards ? nguards : 256;
        while (n <= fd)
            n *= 2;
        guards = ess_xrealloc(guards, (size_t)n * sizeof *guards);
        memset(guards + nguards, 0, (size_t)(n - nguards) * sizeof *guards);
        nguards = n;
    }
    free(guards[fd]);
    guards[fd] = NULL;
    if (public) {
        guards[fd] = ess_xcalloc(1, sizeof **guards);
        ess_wsguard_init(&guards[fd]->g);
    }
}

static guard_t *guard_of(int fd)
{
    if (!atomic_load_explicit(&guard_on, memory_order_relaxed) ||
        !pthread_equal(pthread_self(), guard_thread) || fd < 0 || fd >= nguards)
        return NULL;
    return guards[fd];
}

static void guard_violation(guard_t *gd)
{
    if (gd->pss && gd->pss->session)
        ess_session_close(gd->pss->session, gd->g.code, gd->g.reason, 0);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    ssize_t n = syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
    if (n <= 0 || (flags & MSG_PEEK))
        return n;
    guard_t *gd = guard_of(fd);
    if (gd == NULL)
        return n;
    if (gd->g.code) {
        /* After a violation: dropped; end of input once the close is out. */
        if (gd->pss && gd->pss->close_sent && gd->wsi && !lws_send_pipe_choked(gd->wsi))
            return 0;
        errno = EAGAIN;
        return -1;
    }
    size_t ok = ess_wsguard_feed(&gd->g, buf, (size_t)n);
    if (gd->g.code) {
        ess_log_info("public WebSocket: %s (closing %d)", gd->g.reason, gd->g.code);
        guard_violation(gd);
    }
    if (ok == 0) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)ok;
}

static void guard_attach(struct lws *wsi, ess_ws_pss_t *pss)
{
    guard_t *gd = guard_of(lws_get_socket_fd(wsi));
    if (gd == NULL)
        return;
    gd->wsi = wsi;
    gd->pss = pss;
    gd->g.deflate = (uint8_t)pss->deflate;
    if (gd->g.code)
        guard_violation(gd);
}

static void guard_detach(struct lws *wsi)
{
    int fd = lws_get_socket_fd(wsi);
    guard_t *gd = guard_of(fd);
    if (gd && gd->wsi == wsi) {
        free(gd);
        guards[fd] = NULL;
    }
}

/* lws 4.1's libuv back end kills the socket before a close frame queued by
 * lws_close_reason() + return -1 is written, so the client would see 1006.
 * Send the close frame ourselves and give the peer a few seconds to answer. */
static int write_close(struct lws *wsi, int code, const char *reason)
{
    uint8_t buf[LWS_PRE + 2 + 123];
    size_t n = strlen(reason);
    if (n > 123)
        n = 123;
    buf[LWS_PRE] = (uint8_t)(code >> 8);
    buf[LWS_PRE + 1] = (uint8_t)(code & 0xff);
    memcpy(buf + LWS_PRE + 2, reason, n);
    /* 4 is lws's internal LWS_WRITE_CLOSE: a close frame with this payload. */
    if (lws_write(wsi, buf + LWS_PRE, n + 2, (enum lws_write_protocol)4) < 0)
        return -1;
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    return 0;
}

/* ---- Keepalive -------------------------------------------------------------
 * public.ping_interval_s: a connection from which nothing (no frame, no
 * pong) was heard for the interval is pinged once; one silent for twice
 * the interval + 5 s is dropped (a dead peer: no close frame can reach
 * it). lws 4.1 offers the same through its retry policy, but keeps one
 * timer per connection in a sorted list that each insertion walks from the
 * head: every upgrade, ping and pong cost a walk over all connections
 * (lws_dll2_add_sorted, 6.4% of essd's CPU in a 1,000 burst; quadratic in
 * the number held). Here established connections sit on one list, swept
 * by one timer once a second. Loop thread only. */
static ess_ws_pss_t *ka_head;
static uv_timer_t ka_timer;
static int ka_state; /* 0 none, 1 running, 2 closing at shutdown */
static ess_app_t *ka_app;

static void ka_sweep(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_now(ka_app->loop);
    uint64_t ping_ms = (uint64_t)ka_app->cfg->ping_interval_s * 1000;
    uint64_t hangup_ms = 2 * ping_ms + 5000;
    ess_ws_pss_t *next;
    for (ess_ws_pss_t *p = ka_head; p != NULL; p = next) {
        next = p->ka_next; /* a drop takes p off the list */
        uint64_t quiet = now - p->heard_ms;
        if (quiet >= hangup_ms) {
            /* Closed here and now (its CLOSED runs before this returns):
             * lws services an asynchronous kill only when something else
             * wakes it, and a dead peer's full socket never does. */
            ess_log_info("public WebSocket: no answer to a ping for %llu s: dropped",
                         (unsigned long long)(quiet / 1000));
            lws_set_timeout(p->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
        } else if (quiet >= ping_ms && !p->pinged && !p->close_sent) {
            p->pinged = 1;
            p->ping_due = 1;
            lws_callback_on_writable(p->wsi);
        }
    }
}

static void ka_link(ess_app_t *app, struct lws *wsi, ess_ws_pss_t *p)
{
    p->wsi = wsi;
    p->heard_ms = uv_now(app->loop);
    if (app->cfg->ping_interval_s <= 0 || ka_state == 2)
        return;
    if (ka_state == 0) {
        ka_app = app;
        uv_timer_init(app->loop, &ka_timer);
        uv_timer_start(&ka_timer, ka_sweep, 1000, 1000);
        uv_unref((uv_handle_t *)&ka_timer);
        ka_state = 1;
    }
    p->ka_prev = NULL;
    p->ka_next = ka_head;
    if (ka_head)
        ka_head->ka_prev = p;
    ka_head = p;
}

static void ka_unlink(ess_ws_pss_t *p)
{
    if (p->ka_prev)
        p->ka_prev->ka_next = p->ka_next;
    else if (ka_head == p)
        ka_head = p->ka_next;
    else
        return; /* not on the list */
    if (p->ka_next)
        p->ka_next->ka_prev = p->ka_prev;
    p->ka_prev = p->ka_next = NULL;
}

static void ka_heard(ess_app_t *app, ess_ws_pss_t *p)
{
    p->heard_ms = uv_now(app->loop);
    p->pinged = 0;
}

static void ka_closed(uv_handle_t *h)
{
    (void)h;
    ka_state = 0;
}

/* The list stays: each connection still leaves it at its CLOSED. */
void ess__ws_keepalive_stop(void)
{
    if (ka_state != 1)
        return;
    ka_state = 2;
    uv_close((uv_handle_t *)&ka_timer, ka_closed);
}

/* The ping the sweep asked for, before any data; not while lws holds part
 * of an earlier write (the ping would land inside it): then at the next
 * WRITEABLE. */
static int write_ping(struct lws *wsi, ess_ws_pss_t *pss)
{
    if (!pss->ping_due)
        return 0;
    if (lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    pss->ping_due = 0;
    /* Not empty: lws 4.1 reports no empty pong (RECEIVE_PONG needs a payload). */
    uint8_t buf[LWS_PRE + 3];
    memcpy(buf + LWS_PRE, "ess", 3);
    return lws_write(wsi, buf + LWS_PRE, 3, LWS_WRITE_PING) < 0 ? -1 : 0;
}

/* Hands whole output blocks to lws as raw bytes (the frames are already
 * framed, and compressed by essd itself when permessage-deflate was
 * negotiated: lws has no extension active, so they need no lws state): one send() per block, or per
 * run of a shared log's block (fan-out). lws buffers what the socket does not take and reports the
 * pipe choked until it is out; the first block is always written, further
 * ones only while the pipe is clear. LWS_WRITE_RAW (LWS_WRITE_HTTP) goes
 * straight to lws_issue_raw: lws writes nothing before or into the bytes,
 * which shared blocks need (other sessions read them). */
static int writeable(struct lws *wsi, ess_ws_pss_t *pss)
{
    ess_session_t *s = pss->session;
    int n = 0;
    if (!pss->close_sent && write_ping(wsi, pss) < 0)
        return -1;
    const uint8_t *data;
    size_t len;
    while (n < BLOCKS_PER_WRITEABLE && ess_session_next_bytes(s, &data, &len)) {
        if (n > 0 && lws_send_pipe_choked(wsi))
            break;
        if (lws_write(wsi, (unsigned char *)data, len, LWS_WRITE_RAW) < 0)
            return -1;
        ess_session_sent(s);
        n++;
    }
    if (ess_session_after_write(s, n) && n > 0) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    int code;
    const char *reason;
    if (n == 0 && !pss->close_sent && ess_session_close_due(s, &code, &reason)) {
        pss->close_sent = 1;
        return write_close(wsi, code, reason);
    }
    return 0;
}

/* Answer a permessage-deflate offer (RFC 7692) in the 101 response: only
 * the no-context-takeover form, and only when the client's offer allows it.
 * A header essd cannot read whole is no offer. */
static int add_deflate_header(struct lws *wsi, ess_ws_pss_t *pss, void *in)
{
    static const char line[] = "Sec-WebSocket-Extensions: " ESS_DEFLATE_RESPONSE "\r\n";
    struct lws_process_html_args *a = in;
    char offer[1024];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS);
    if (a == NULL || n <= 0 || (size_t)n >= sizeof offer ||
        lws_hdr_copy(wsi, offer, sizeof offer, WSI_TOKEN_EXTENSIONS) < 0 ||
        !ess_deflate_offer_ok(offer) || a->max_len < (int)sizeof line)
        return 0;
    memcpy(a->p, line, sizeof line - 1);
    a->p += sizeof line - 1;
    a->max_len -= (int)sizeof line - 1;
    pss->deflate = 1;
    return 0;
}

int ess__ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    ess_ws_pss_t *pss = user;
    ess_app_t *app = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        uint8_t buf[LWS_PRE + 512];
        uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, 404, "application/json", sizeof not_found - 1, &p,
                                        end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* A body is read and dropped. Left to lws's dummy handler, its
         * completion started the next request on the connection before our
         * 404 body was written, so a request hidden in the body was answered
         * in the middle of the first response (an HTTP desync behind an
         * ingress). */
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        uint8_t buf[LWS_PRE + sizeof not_found];
        memcpy(buf + LWS_PRE, not_found, sizeof not_found - 1);
        lws_write(wsi, buf + LWS_PRE, sizeof not_found - 1, LWS_WRITE_HTTP_FINAL);
        /* No keep-alive on the public port: nothing but upgrades belong here,
         * and closing leaves no unread body to be parsed as a request. */
        return -1;
    }
    case LWS_CALLBACK_ADD_HEADERS:
        /* lws writes the 101 answer: permessage-deflate when it is on and
         * the client offers a form essd can honour (http/deflate.h). */
        if (pss)
            pss->deflate = 0;
        if (pss && app->cfg->compression && lws_hdr_total_length(wsi, WSI_TOKEN_UPGRADE) > 0)
            return add_deflate_header(wsi, pss, in);
        return 0;
    case LWS_CALLBACK_ESTABLISHED: {
        int deflate = pss->deflate;
        memset(pss, 0, sizeof *pss);
        pss->deflate = deflate;
        app->ws_open++;
        pss->counted = 1;
        ka_link(app, wsi, pss);
        pss->session = open_session(app, wsi, deflate);
        guard_attach(wsi, pss);
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: return pss->session ? writeable(wsi, pss) : -1;
    case LWS_CALLBACK_RECEIVE_PONG: ka_heard(app, pss); return 0;
    case LWS_CALLBACK_RECEIVE:
        /* Clients have nothing to say: their frames are read and dropped,
         * but one larger than public.max_frame_bytes closes the connection. */
        ka_heard(app, pss);
        if (pss->session &&
            len + lws_remaining_packet_payload(wsi) > (size_t)app->cfg->max_frame_bytes)
            ess_session_close(pss->session, 1009, "frame too large", 0);
        return 0;
    case LWS_CALLBACK_CLOSED:
        ka_unlink(pss);
        guard_detach(wsi);
        ess_session_closed(pss->session);
        pss->session = NULL;
        if (pss->counted) {
            app->ws_open--;
            pss->counted = 0;
        }
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
