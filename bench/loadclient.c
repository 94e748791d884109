/* loadclient: the benchmark's load generator (issue 6). One process, one
 * thread, epoll, raw non-blocking sockets and its own minimal WebSocket
 * framing, so that it is cheaper per message than the server it measures.
 *
 * Modes:
 *   ess      N WebSocket clients to essd paths; count frames and bytes,
 *            time the opening handshake and the first message, and the
 *            publish-to-receive latency from a "t":<ns since epoch> member.
 *   stomp    the same over STOMP 1.2 to RabbitMQ Web-STOMP, subscribed to
 *            /amq/queue/<stream> with x-stream-offset, client acks in batches.
 *   trivial  a WebSocket server that sends pre-built frames as fast as it
 *            can: the client's own ceiling.
 *   pub      an AMQP 0-9-1 publisher (librabbitmq-c) at a fixed rate whose
 *            JSON bodies carry "t":<ns> and "seq".
 *
 * It owns nothing of essd; it does not verify Sec-WebSocket-Accept, handles
 * no extensions (none are offered, so no permessage-deflate) and answers
 * pings. Results are one JSON object on stdout. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#if defined(__has_include) && __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h> /* rabbitmq-c >= 0.12 (0.15 warns on the old names) */
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_HANDSHAKE, ST_STOMP_CONN, ST_STOMP_SUB, ST_OPEN, ST_DONE, ST_FAILED };

typedef struct conn_s {
    int fd, state, idx;
    char *path, *stream; /* stream: stomp mode */
    unsigned char *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, wcap;
    int64_t t_start, t_open, t_ready, t_first, t_last;
    uint64_t frames, bytes, unacked;
    char ack_id[128];
    int close_code;
} conn_t;

static struct {
    const char *mode, *host, *stream, *offset, *paths_file, *login, *path;
    int port, clients, timeout_s, hold, latency, prefetch, rcvbuf, quiet;
    uint64_t count; /* per client */
    double rate, seconds;
    int size;
} O = {.host = "127.0.0.1",
       .offset = "first",
       .login = "guest",
       .clients = 1,
       .timeout_s = 60,
       .prefetch = 2000,
       .size = 250,
       .path = "/ws"};

static conn_t *C;
static int ep;
static int64_t *lat;
static size_t nlat, caplat;
static uint64_t total_frames, total_bytes;
static int n_done, n_failed, n_ready;

static int64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
#define MONO() now_ns(CLOCK_MONOTONIC)

static void die(const char *m)
{
    fprintf(stderr, "loadclient: %s: %s\n", m, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

/* ---- output queue (handshake, STOMP frames, close, pong) ---- */

static void flush_out(conn_t *c)
{
    while (c->wlen) {
        ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            c->wlen = 0;
            return;
        }
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->wlen ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)c->idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void put(conn_t *c, const void *p, size_t n)
{
    if (c->wlen + n > c->wcap) {
        c->wcap = (c->wlen + n) * 2;
        c->wbuf = xrealloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

/* A masked client frame. */
static void put_frame(conn_t *c, int opcode, const void *payload, size_t n)
{
    unsigned char h[14];
    size_t k = 0;
    h[k++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[k++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[k++] = 0x80 | 126;
        h[k++] = (unsigned char)(n >> 8);
        h[k++] = (unsigned char)n;
    } else {
        h[k++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[k++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    uint32_t r = (uint32_t)rand();
    unsigned char mask[4];
    memcpy(mask, &r, 4);
    memcpy(h + k, mask, 4);
    k += 4;
    put(c, h, k);
    if (c->wlen + n > c->wcap) {
        c->wcap = (c->wlen + n) * 2;
        c->wbuf = xrealloc(c->wbuf, c->wcap);
    }
    const unsigned char *s = payload;
    for (size_t i = 0; i < n; i++)
        c->wbuf[c->wlen + i] = (char)(s[i] ^ mask[i & 3]);
    c->wlen += n;
}

static void put_stomp(conn_t *c, const char *text)
{
    put_frame(c, 0x1, text, strlen(text) + 1); /* with the NUL terminator */
}

/* ---- connection lifecycle ---- */

static void finish(conn_t *c, int state)
{
    if (c->state == ST_DONE || c->state == ST_FAILED)
        return;
    if (state == ST_FAILED && c->t_ready == 0)
        n_failed++;
    else
        n_done++;
    c->state = state;
}

static void start_conn(conn_t *c)
{
    c->t_start = MONO();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.rcvbuf)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &O.rcvbuf, sizeof O.rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, O.host, &a.sin_addr);
    c->state = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        finish(c, ST_FAILED);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)c->idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_connected(conn_t *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        finish(c, ST_FAILED);
        return;
    }
    char req[1024];
    int n = snprintf(
        req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
        c->path, O.host, O.port,
        strcmp(O.mode, "stomp") == 0 ? "Sec-WebSocket-Protocol: v12.stomp\r\n" : "");
    c->state = ST_HANDSHAKE;
    put(c, req, (size_t)n);
    flush_out(c);
}

static void got_message(conn_t *c, const unsigned char *p, size_t n)
{
    int64_t t = MONO();
    if (!c->t_first)
        c->t_first = t;
    c->t_last = t;
    c->frames++;
    c->bytes += n;
    total_frames++;
    total_bytes += n;
    if (O.latency) {
        const unsigned char *q = memmem(p, n, "\"t\":", 4);
        if (q) {
            q += 4;
            int64_t v = 0;
            while (q < p + n && *q >= '0' && *q <= '9')
                v = v * 10 + (*q++ - '0');
            if (nlat == caplat) {
                caplat = caplat ? caplat * 2 : 65536;
                lat = xrealloc(lat, caplat * sizeof *lat);
            }
            lat[nlat++] = now_ns(CLOCK_REALTIME) - v;
        }
    }
    if (O.count && c->frames >= O.count && !O.hold)
        finish(c, ST_DONE);
}

/* One STOMP frame (text, NUL-terminated, possibly with leading EOLs). */
static void on_stomp(conn_t *c, const unsigned char *p, size_t n)
{
    while (n && (*p == '\n' || *p == '\r'))
        p++, n--;
    if (n == 0)
        return;
    const unsigned char *hdr_end = memmem(p, n, "\n\n", 2);
    size_t hlen = hdr_end ? (size_t)(hdr_end - p) : n;
    if (n >= 9 && memcmp(p, "CONNECTED", 9) == 0) {
        char sub[512];
        snprintf(sub, sizeof sub,
                 "SUBSCRIBE\nid:0\ndestination:/amq/queue/%s\nack:client\nprefetch-count:%d\n"
                 "x-stream-offset:%s\nreceipt:sub\n\n",
                 c->stream, O.prefetch, O.offset);
        put_stomp(c, sub);
        flush_out(c);
        c->state = ST_STOMP_SUB;
    } else if (n >= 7 && memcmp(p, "RECEIPT", 7) == 0) {
        c->t_ready = MONO();
        n_ready++;
        c->state = ST_OPEN;
    } else if (n >= 7 && memcmp(p, "MESSAGE", 7) == 0) {
        const unsigned char *a = memmem(p, hlen, "\nack:", 5);
        if (a) {
            a += 5;
            size_t k = 0;
            while (a + k < p + hlen && a[k] != '\n' && k < sizeof c->ack_id - 1)
                k++;
            memcpy(c->ack_id, a, k);
            c->ack_id[k] = 0;
        }
        const unsigned char *body = hdr_end ? hdr_end + 2 : p + n;
        got_message(c, body, (size_t)(p + n - body));
        if (++c->unacked >= (uint64_t)O.prefetch / 2 || (O.count && c->frames >= O.count)) {
            char ack[200];
            snprintf(ack, sizeof ack, "ACK\nid:%s\n\n", c->ack_id);
            put_stomp(c, ack);
            flush_out(c);
            c->unacked = 0;
        }
    } else if (n >= 5 && memcmp(p, "ERROR", 5) == 0) {
        fprintf(stderr, "loadclient: STOMP ERROR: %.*s\n", (int)(n > 300 ? 300 : n),
                (const char *)p);
        finish(c, ST_FAILED);
    }
}

static void on_ws_payload(conn_t *c, int opcode, const unsigned char *p, size_t n)
{
    if (opcode == 0x8) {
        c->close_code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
        finish(c, c->t_ready ? ST_DONE : ST_FAILED);
        return;
    }
    if (opcode == 0x9) {
        put_frame(c, 0xA, p, n);
        flush_out(c);
        return;
    }
    if (opcode != 0x1 && opcode != 0x2 && opcode != 0x0)
        return;
    if (strcmp(O.mode, "stomp") != 0) {
        got_message(c, p, n);
        return;
    }
    /* A WebSocket frame may carry one or more STOMP frames. */
    while (n) {
        const unsigned char *z = memchr(p, 0, n);
        size_t k = z ? (size_t)(z - p) : n;
        on_stomp(c, p, k);
        if (!z)
            break;
        p += k + 1;
        n -= k + 1;
    }
}

/* Parse what is buffered: the HTTP response, then whole frames. */
static void parse(conn_t *c)
{
    size_t pos = 0;
    if (c->state == ST_HANDSHAKE) {
        unsigned char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!e) {
            if (c->rlen > 65536) /* no response head is this long */
                finish(c, ST_FAILED);
            return;
        }
        if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
            finish(c, ST_FAILED);
            return;
        }
        c->t_open = MONO();
        pos = (size_t)(e - c->rbuf) + 4;
        if (strcmp(O.mode, "stomp") == 0) {
            char cn[256];
            snprintf(
                cn, sizeof cn,
                "CONNECT\naccept-version:1.2\nhost:/\nlogin:%s\npasscode:%s\nheart-beat:0,0\n\n",
                O.login, O.login);
            put_stomp(c, cn);
            flush_out(c);
            c->state = ST_STOMP_CONN;
        } else {
            c->t_ready = c->t_open;
            n_ready++;
            c->state = ST_OPEN;
        }
    }
    while (c->state != ST_DONE && c->state != ST_FAILED) {
        size_t avail = c->rlen - pos;
        if (avail < 2)
            break;
        const unsigned char *h = c->rbuf + pos;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80)
            hl += 4; /* servers do not mask; skip a key if one is there */
        if (len > (64u << 20)) {
            finish(c, ST_FAILED);
            break;
        }
        if (avail < hl + len) {
            if (hl + len > c->rcap) {
                c->rcap = hl + len + 65536;
                c->rbuf = xrealloc(c->rbuf, c->rcap);
                h = c->rbuf + pos;
            }
            break;
        }
        on_ws_payload(c, h[0] & 0x0f, h + hl, (size_t)len);
        pos += hl + (size_t)len;
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

static void on_readable(conn_t *c)
{
    for (int round = 0; round < 4; round++) {
        if (c->rlen == c->rcap) {
            c->rcap *= 2;
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
        if (n == 0) {
            finish(c, c->t_ready ? ST_DONE : ST_FAILED);
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                finish(c, c->t_ready ? ST_DONE : ST_FAILED);
            return;
        }
        int full = (size_t)n == c->rcap - c->rlen;
        c->rlen += (size_t)n;
        parse(c);
        if (c->state == ST_DONE || c->state == ST_FAILED)
            return;
        if (full && c->rcap < (1u << 20)) {
            c->rcap *= 2;
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        if (!full)
            return;
    }
}

/* ---- statistics ---- */

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void pct_json(const char *name, int64_t *v, size_t n, double scale, const char *sep)
{
    if (n == 0) {
        printf("\"%s\":null%s", name, sep);
        return;
    }
    qsort(v, n, sizeof *v, cmp64);
    printf("\"%s\":{\"n\":%zu,\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}%s", name, n,
           (double)v[n / 2] / scale, (double)v[(size_t)((double)n * 0.99)] / scale,
           (double)v[(size_t)((double)n * 0.999)] / scale, (double)v[n - 1] / scale, sep);
}

static void report(int64_t t0)
{
    int n = O.clients;
    int64_t *open = calloc((size_t)n, sizeof *open), *first = calloc((size_t)n, sizeof *first);
    size_t no = 0, nf = 0;
    int64_t t_last = 0, t_first = 0;
    uint64_t min_frames = UINT64_MAX;
    int codes[5000 + 1] = {0};
    for (int i = 0; i < n; i++) {
        conn_t *c = &C[i];
        if (c->t_ready)
            open[no++] = c->t_ready - c->t_start;
        if (c->t_first)
            first[nf++] = c->t_first - c->t_start;
        if (c->t_last > t_last)
            t_last = c->t_last;
        if (c->t_first && (!t_first || c->t_first < t_first))
            t_first = c->t_first;
        if (c->frames < min_frames)
            min_frames = c->frames;
        if (c->close_code > 0 && c->close_code <= 5000)
            codes[c->close_code]++;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    double span = t_last > t0 ? (double)(t_last - t0) / 1e9 : 0;
    double span1 = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    printf("{\"mode\":\"%s\",\"clients\":%d,\"opened\":%d,\"failed\":%d,\"frames\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"min_frames_per_client\":%" PRIu64 ",",
           O.mode, n, n_ready, n - n_ready, total_frames, total_bytes,
           min_frames == UINT64_MAX ? 0 : min_frames);
    printf(
        "\"elapsed_s\":%.6f,\"msgs_per_s\":%.1f,\"msgs_per_s_after_first\":%.1f,\"mb_per_s\":%.2f,"
        "\"client_cpu_s\":%.3f,",
        span, span > 0 ? (double)total_frames / span : 0,
        span1 > 0 ? (double)total_frames / span1 : 0,
        span > 0 ? (double)total_bytes / span / 1e6 : 0, cpu);
    pct_json("open_ms", open, no, 1e6, ",");
    pct_json("first_msg_ms", first, nf, 1e6, ",");
    pct_json("latency_us", lat, nlat, 1e3, ",");
    printf("\"close_codes\":{");
    const char *sep = "";
    for (int k = 0; k <= 5000; k++)
        if (codes[k]) {
            printf("%s\"%d\":%d", sep, k, codes[k]);
            sep = ",";
        }
    printf("}}\n");
    fflush(stdout);
    free(open);
    free(first);
}

/* ---- client modes ---- */

/* Handle what epoll reports within timeout_ms. */
static void service(int timeout_ms)
{
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, timeout_ms);
    for (int j = 0; j < k; j++) {
        conn_t *c = &C[evs[j].data.u32];
        if (c->state == ST_DONE || c->state == ST_FAILED)
            continue;
        if (c->state == ST_CONNECTING) {
            if (evs[j].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                on_connected(c);
            continue;
        }
        if (evs[j].events & EPOLLOUT)
            flush_out(c);
        if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(c);
    }
}

static int run_clients(char **paths, int npaths)
{
    C = calloc((size_t)O.clients, sizeof *C);
    ep = epoll_create1(0);
    for (int i = 0; i < O.clients; i++) {
        C[i].idx = i;
        if (strcmp(O.mode, "stomp") == 0) {
            C[i].path = (char *)O.path;
            C[i].stream = O.paths_file ? paths[i % npaths] : (char *)O.stream;
        } else {
            C[i].path = paths[i % npaths];
        }
        C[i].rcap = 16384;
        C[i].rbuf = xrealloc(NULL, C[i].rcap);
        C[i].fd = -1;
    }
    int64_t t0 = MONO(), deadline = t0 + (int64_t)O.timeout_s * 1000000000;
    /* All at once, as fast as one thread can connect; what is ready is
     * served between connects, so a connection's open time does not
     * include the connects issued after it (on this VM each connect()
     * costs ~0.1 ms: 1,000 of them in a row took ~100 ms). */
    for (int i = 0; i < O.clients; i++) {
        start_conn(&C[i]);
        if (i % 8 == 7)
            service(0);
    }
    int held = 0;
    while (MONO() < deadline) {
        if (n_done + n_failed >= O.clients)
            break;
        if (O.hold && !held && n_failed + n_ready >= O.clients) {
            /* All open (or failed): wait for every open one's first message
             * when --count asks for it, then tell the orchestrator. */
            int waiting = 0;
            for (int i = 0; i < O.clients; i++)
                if (C[i].state == ST_OPEN && O.count && C[i].frames < O.count)
                    waiting = 1;
            if (!waiting) {
                printf("HOLDING\n");
                fflush(stdout);
                held = 1;
            }
        }
        if (held) {
            struct pollfd pf = {.fd = 0, .events = POLLIN};
            if (poll(&pf, 1, 0) > 0)
                break; /* a line or EOF on stdin: release */
        }
        service(50);
    }
    report(t0);
    /* Leave politely: a close frame, then the socket. */
    for (int i = 0; i < O.clients; i++) {
        if (C[i].fd < 0)
            continue;
        if (C[i].state == ST_OPEN || C[i].state == ST_DONE) {
            if (strcmp(O.mode, "stomp") == 0)
                put_stomp(&C[i], "DISCONNECT\n\n");
            put_frame(&C[i], 0x8, "\x03\xe8", 2);
            send(C[i].fd, C[i].wbuf, C[i].wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        close(C[i].fd);
    }
    return n_failed ? 1 : 0;
}

/* ---- trivial server: the client's own ceiling ---- */

static int run_trivial(void)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 16) < 0)
        die("trivial: bind/listen");
    printf("LISTENING\n");
    fflush(stdout);
    /* A body like essd's: the publisher's JSON plus the enrichment. */
    char body[1024];
    int bl = snprintf(body, sizeof body,
                      "{\"type\":\"MerchantProcessingCharge\",\"seq\":1,\"t\":0,\"merchant_kind\":"
                      "\"DATA_MANAGER\","
                      "\"pad\":\"%.*s\",\"ess_offset\":123456,\"ess_timestamp\":1764300000000}",
                      O.size > 150 ? O.size - 150 : 1,
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxx");
    size_t fl = (size_t)bl + (bl < 126 ? 2 : 4);
    size_t per = 262144 / fl;
    unsigned char *chunk = malloc(per * fl);
    for (size_t i = 0; i < per; i++) {
        unsigned char *f = chunk + i * fl;
        f[0] = 0x81;
        if (bl < 126) {
            f[1] = (unsigned char)bl;
            memcpy(f + 2, body, (size_t)bl);
        } else {
            f[1] = 126;
            f[2] = (unsigned char)(bl >> 8);
            f[3] = (unsigned char)bl;
            memcpy(f + 4, body, (size_t)bl);
        }
    }
    for (int served = 0; served < (O.clients > 0 ? O.clients : 1); served++) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            die("accept");
        char req[8192];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t n = recv(fd, req + got, sizeof req - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        const char *resp =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        send(fd, resp, strlen(resp), MSG_NOSIGNAL);
        uint64_t left = O.count;
        while (left) {
            size_t k = left < per ? (size_t)left : per;
            size_t off = 0, len = k * fl;
            while (off < len) {
                ssize_t n = send(fd, chunk + off, len - off, MSG_NOSIGNAL);
                if (n <= 0)
                    goto next;
                off += (size_t)n;
            }
            left -= k;
        }
        send(fd, "\x88\x02\x03\xe8", 4, MSG_NOSIGNAL);
    next:
        shutdown(fd, SHUT_WR);
        char sink[4096];
        for (int i = 0; i < 100 && recv(fd, sink, sizeof sink, 0) > 0; i++)
            ;
        close(fd);
    }
    free(chunk);
    close(ls);
    return 0;
}

/* ---- burst server: the floor of an upgrade burst ---- */

/* What any server must do per WebSocket upgrade, and nothing else: accept,
 * read the head, answer 101 and one text frame, in one epoll loop of
 * non-blocking sockets (no parsing, no key check, no broker). Bursts of
 * `loadclient ess` against it give the open and first-message percentiles
 * this machine's kernel allows. Ends when --clients connections have
 * closed, or after --timeout. */
static int run_burst_server(void)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 65535) < 0)
        die("burst-server: bind/listen");
    int e = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(e, EPOLL_CTL_ADD, ls, &ev);
    printf("LISTENING\n");
    fflush(stdout);
    static const char resp[] =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        "\x81\x0d{\"t\":0,\"x\":1}";
    int want = O.clients > 0 ? O.clients : 1, closed = 0;
    int64_t end = MONO() + (int64_t)O.timeout_s * 1000000000;
    struct epoll_event evs[256];
    while (closed < want && MONO() < end) {
        int k = epoll_wait(e, evs, 256, 100);
        for (int j = 0; j < k; j++) {
            int fd = evs[j].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(e, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            char buf[8192];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0 && memmem(buf, (size_t)n, "\r\n\r\n", 4)) {
                send(fd, resp, sizeof resp - 1, MSG_NOSIGNAL);
            } else if (n == 0 || (n < 0 && errno != EAGAIN)) {
                close(fd); /* the client left */
                closed++;
            }
        }
    }
    close(e);
    close(ls);
    return 0;
}

/* Read publisher confirms without blocking longer than wait_ms; return the
 * highest confirmed delivery tag (multiple acks cover everything before). */
static uint64_t drain_acks(amqp_connection_state_t conn, uint64_t acked, int wait_ms)
{
    for (int i = 0; i < 10000; i++) {
        amqp_frame_t f;
        struct timeval tv = {0, (long)wait_ms * 1000};
        if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) {
            struct pollfd pf = {.fd = amqp_get_sockfd(conn), .events = POLLIN};
            if (poll(&pf, 1, i ? 0 : wait_ms) <= 0)
                break;
        }
        if (amqp_simple_wait_frame_noblock(conn, &f, &tv) != AMQP_STATUS_OK)
            break;
        if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->delivery_tag > acked)
                acked = a->delivery_tag;
        }
    }
    return acked;
}

/* ---- paced publisher (AMQP 0-9-1, default exchange, routing key = stream) ---- */

static int run_pub(void)
{
    amqp_connection_state_t conn = NULL;
    for (int attempt = 0; attempt < 60; attempt++) { /* the shared broker may be restarting */
        conn = amqp_new_connection();
        amqp_socket_t *s = amqp_tcp_socket_new(conn);
        if (s && amqp_socket_open(s, O.host, O.port ? O.port : 5672) == AMQP_STATUS_OK)
            break;
        amqp_destroy_connection(conn);
        conn = NULL;
        sleep(1);
    }
    if (!conn) {
        fprintf(stderr, "loadclient: pub: cannot connect\n");
        return 2;
    }
    amqp_rpc_reply_t r =
        amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, O.login, O.login);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "loadclient: pub: login failed\n");
        return 2;
    }
    amqp_channel_open(conn, 1);
    amqp_confirm_select(conn, 1); /* confirms: when the broker has really taken them */
    uint64_t acked = 0;
    uint64_t total = (uint64_t)(O.rate * O.seconds);
    char pad[4096];
    memset(pad, 'x', sizeof pad);
    int padn = O.size > 120 ? O.size - 120 : 1;
    if (padn > (int)sizeof pad)
        padn = (int)sizeof pad;
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
                                     .content_type = amqp_cstring_bytes("application/json")};
    int64_t t0 = MONO(), behind_max = 0;
    uint64_t sent = 0;
    char body[4500];
    while (sent < total) {
        int64_t now = MONO();
        uint64_t due = (uint64_t)((double)(now - t0) / 1e9 * O.rate) + 1;
        if (due > total)
            due = total;
        if (due > sent + 1 && (int64_t)(due - sent) > behind_max)
            behind_max = (int64_t)(due - sent);
        while (sent < due) {
            int n =
                snprintf(body, sizeof body,
                         "{\"type\":\"MerchantProcessingCharge\",\"seq\":%" PRIu64 ",\"t\":%" PRId64
                         ",\"merchant_kind\":\"DATA_MANAGER\",\"pad\":\"%.*s\"}",
                         sent, now_ns(CLOCK_REALTIME), padn, pad);
            amqp_bytes_t b = {.len = (size_t)n, .bytes = body};
            if (amqp_basic_publish(conn, 1, amqp_cstring_bytes(""), amqp_cstring_bytes(O.stream), 0,
                                   0, &props, b) != AMQP_STATUS_OK) {
                fprintf(stderr, "loadclient: pub: publish failed\n");
                return 2;
            }
            sent++;
        }
        acked = drain_acks(conn, acked, 0);
        if (sent < total) {
            int64_t next = t0 + (int64_t)((double)sent / O.rate * 1e9);
            int64_t wait = next - MONO();
            if (wait > 0) {
                struct timespec ts = {0, wait > 999999999 ? 999999999 : (long)wait};
                nanosleep(&ts, NULL);
            }
        }
    }
    double secs = (double)(MONO() - t0) / 1e9;
    for (int i = 0; i < 600 && acked < sent; i++)
        acked = drain_acks(conn, acked, 100);
    double csecs = (double)(MONO() - t0) / 1e9;
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    printf("{\"mode\":\"pub\",\"published\":%" PRIu64
           ",\"seconds\":%.3f,\"rate\":%.1f,\"max_behind\":%" PRId64 ",\"confirmed\":%" PRIu64
           ",\"confirmed_after_s\":%.3f,\"confirmed_rate\":%.1f}\n",
           sent, secs, (double)sent / secs, behind_max, acked, csecs, (double)acked / csecs);
    return 0;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: loadclient ess     --port P (--path P | --paths-file F) [--clients N] [--count N]\n"
        "                          [--timeout S] [--latency] [--hold] [--rcvbuf B]\n"
        "       loadclient stomp   --port P [--path /ws] (--stream S | --paths-file STREAMS) "
        "[--offset first|next|N] [--clients N] [--count N]\n"
        "                          [--prefetch N] [--timeout S] [--latency] [--hold]\n"
        "       loadclient trivial --port P --count N [--clients N] [--size B]\n"
        "       loadclient burst-server --port P --clients N [--timeout S]\n"
        "       loadclient pub     --stream S --rate R --seconds D [--size B] [--port 5672]\n"
        "--count is per client; --hold prints HOLDING when all are open (and have --count\n"
        "messages) and waits for a line or EOF on stdin before closing.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    O.mode = argv[1];
    static char *one_path[1] = {"/"};
    char **paths = one_path;
    int npaths = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--port"))
            O.port = atoi(v);
        else if (ARG("--host"))
            O.host = v;
        else if (ARG("--path"))
            one_path[0] = (char *)(O.path = v);
        else if (ARG("--paths-file"))
            O.paths_file = v;
        else if (ARG("--clients"))
            O.clients = atoi(v);
        else if (ARG("--count"))
            O.count = strtoull(v, NULL, 10);
        else if (ARG("--timeout"))
            O.timeout_s = atoi(v);
        else if (ARG("--stream"))
            O.stream = v;
        else if (ARG("--offset"))
            O.offset = v;
        else if (ARG("--prefetch"))
            O.prefetch = atoi(v);
        else if (ARG("--rate"))
            O.rate = atof(v);
        else if (ARG("--seconds"))
            O.seconds = atof(v);
        else if (ARG("--size"))
            O.size = atoi(v);
        else if (ARG("--rcvbuf"))
            O.rcvbuf = atoi(v);
        else if (strcmp(a, "--latency") == 0)
            O.latency = 1;
        else if (strcmp(a, "--hold") == 0)
            O.hold = 1;
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)now_ns(CLOCK_REALTIME));
    if (strcmp(O.mode, "trivial") == 0)
        return O.port ? run_trivial() : (usage(), 2);
    if (strcmp(O.mode, "burst-server") == 0)
        return O.port ? run_burst_server() : (usage(), 2);
    if (strcmp(O.mode, "pub") == 0)
        return O.stream && O.rate > 0 && O.seconds > 0 ? run_pub() : (usage(), 2);
    if (strcmp(O.mode, "ess") != 0 && strcmp(O.mode, "stomp") != 0)
        usage();
    if (!O.port || O.clients < 1 || (strcmp(O.mode, "stomp") == 0 && !O.stream && !O.paths_file))
        usage();
    if (O.paths_file) {
        FILE *f = fopen(O.paths_file, "r");
        if (!f)
            die(O.paths_file);
        paths = NULL;
        npaths = 0;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) > 0) {
            if (line[n - 1] == '\n')
                line[n - 1] = 0;
            if (!*line)
                continue;
            paths = xrealloc(paths, (size_t)(npaths + 1) * sizeof *paths);
            paths[npaths++] = strdup(line);
        }
        free(line);
        fclose(f);
        if (!npaths)
            usage();
    }
    return run_clients(paths, npaths);
}
