/*
 * ess-cat: read a RabbitMQ stream from a given position and print its
 * messages (raw, JSON lines, or only a summary), or publish stdin lines to
 * a stream with confirms, or print a stream's StreamStats (--stats) or the
 * offset of its last committed message (--tail). A thin
 * command-line shell over the stream client (mq/stream_client.h); it owns
 * argument parsing and output formatting, nothing of the protocol.
 *
 * Exit status: 0 success, 1 connection or runtime error, 2 bad argument,
 * missing stream or refused login, 3 --stats on a broker older than 3.11.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "ess.h"
#include "util/utf8.h"
#include "mq/stream_client.h"
#include "util/log.h"

#if defined(__has_include)
#if __has_include("util/datetime.h")
#include "util/datetime.h"
#define HAVE_DATETIME 1
#endif
#endif

typedef struct {
    const char *url, *stream, *from, *format;
    const char *pub_name; /* --publisher-name: reference for broker deduplication */
    int port, quiet, publish, create, delete_, exists, lb, fanout, credit, heartbeat, latency;
    int stats, read_after; /* --stats; with --from or --count: read afterwards */
    int tail;              /* --tail */
    long long credit_window;
    long long generate; /* --publish --generate N: N stamped bodies instead of stdin, at --rate */
    int size;
    double rate;     /* messages per second, 0 = unlimited */
    long long count; /* -1 = unlimited */
} args_t;

static args_t A;
static uv_loop_t *L;
static ess_stream_client_t *C;
static ess_stream_pub_t *P;
static uv_signal_t sigint, sigterm;
static int exit_code;
static int finishing;
static uint64_t t0, n_msgs, first_off, last_off;
static uint64_t n_published, n_confirmed, n_failed;
static int stdin_eof;

/* One subscription of the reader; --fanout opens several on one stream. */
typedef struct {
    ess_stream_sub_t *sub;
    uint64_t n, last;
    int live;
} reader_t;

static reader_t *R;
static int n_readers, readers_left, readers_subscribed;
static uint64_t order_errors;
/* --latency: now minus the "t":<ns since the epoch> a publisher put in each body. */
static int64_t *lat_us;
static size_t lat_n, lat_cap;
static uv_timer_t rate_timer, gen_timer;
static int rate_paused;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: ess-cat [--url URL] [--stream-port P] [--lb] STREAM\n"
        "               [--from first|last|next|OFFSET|timestamp:MS|datetime:STRING]\n"
        "               [--count N] [--format raw|json] [--quiet]\n"
        "               [--fanout SUBS] [--rate MSGS_PER_S] [--credit CHUNKS] [--heartbeat S]\n"
        "               [--credit-window BYTES] [--latency]\n"
        "       ess-cat [--url URL] [--stream-port P] --publish [--create] STREAM < lines\n"
        "       ess-cat [--url URL] [--stream-port P] --publish [--create] STREAM --generate N\n"
        "               [--rate MSGS_PER_S] [--size BYTES]\n"
        "       (--publish also takes --publisher-name NAME)\n"
        "       ess-cat [--url URL] [--stream-port P] --delete|--exists STREAM\n"
        "       ess-cat [--url URL] [--stream-port P] --stats STREAM [--from ... --count N ...]\n"
        "       ess-cat [--url URL] [--stream-port P] --tail STREAM\n"
        "--count is per subscription; --fanout opens SUBS subscriptions (only the summary\n"
        "is printed); --rate reads slowly by pausing credit; --credit-window keeps about\n"
        "BYTES of chunks outstanding instead of --credit chunks (as essd does). --format json "
        "prints\n"
        "{\"offset\":N,\"timestamp\":MS,\"body\":\"...\"} per message, or \"body_base64\" for a\n"
        "body that is not UTF-8. --latency prints only the summary, with p50/p99/max of\n"
        "now minus the \"t\":<ns since the epoch> member of each body (same host).\n"
        "--generate publishes N JSON bodies of about --size bytes (default 250), each\n"
        "stamped with \"t\" when it is sent, at --rate (default: as fast as confirmed).\n"
        "--stats prints the stream's StreamStats as one JSON line, or \"unsupported by this\n"
        "broker (version X)\" (exit 3) when the broker is older than 3.11 (nothing is sent);\n"
        "with --from or --count it then reads as usual on the same connection.\n"
        "--tail prints {\"stream\":...,\"last_offset\":N} (-1: empty), the offset of the last\n"
        "committed message, learned from a short subscription at \"last\" (any version).\n"
        "The publisher follows the stream's leader across a lost connection and resends\n"
        "what is unconfirmed; with --publisher-name the broker stores each message once\n"
        "(deduplication by publishing id), without it a resent message may be stored twice.\n"
        "URL defaults to $ESS_AMQP_URL, "
        "$ESS_AMPQ_URL or amqp://guest:guest@127.0.0.1:5672/;\n"
        "P defaults to $ESS_STREAM_PORT or 5552\n");
}

static void on_closed(void *ud)
{
    uv_stop(L);
}

static void finish(int code)
{
    if (finishing)
        return;
    finishing = 1;
    if (exit_code == 0)
        exit_code = code;
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    if (R != NULL)
        uv_close((uv_handle_t *)&rate_timer, NULL);
    if (A.generate)
        uv_close((uv_handle_t *)&gen_timer, NULL);
    ess_stream_client_close(C, on_closed, NULL);
}

static int status_exit(int status)
{
    return status == ESS_ENOTFOUND || status == ESS_EAUTH || status == ESS_EINVAL ? 2 : 1;
}

static const char *status_text(int status)
{
    switch (status) {
    case ESS_ENOTFOUND: return "stream does not exist";
    case ESS_EAUTH: return "login refused (user, password or vhost)";
    case ESS_ECONN: return "cannot connect to the broker";
    case ESS_ESTATE: return "stream already exists";
    default: return ess_strerror(status);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void latency_summary(void)
{
    printf(" latency_n=%zu", lat_n);
    if (lat_n == 0)
        return;
    qsort(lat_us, lat_n, sizeof *lat_us, cmp_i64);
    printf(" p50_us=%" PRId64 " p99_us=%" PRId64 " p999_us=%" PRId64 " max_us=%" PRId64,
           lat_us[lat_n / 2], lat_us[(size_t)((double)lat_n * 0.99)],
           lat_us[(size_t)((double)lat_n * 0.999)], lat_us[lat_n - 1]);
}

/* The body's "t":<digits>, or -1. */
static int64_t body_stamp(const uint8_t *p, size_t n)
{
    const uint8_t *t = memmem(p, n, "\"t\":", 4);
    if (t == NULL)
        return -1;
    int64_t v = 0;
    int digits = 0;
    for (t += 4; t < p + n && *t >= '0' && *t <= '9' && digits < 19; t++, digits++)
        v = v * 10 + (*t - '0');
    return digits ? v : -1;
}

static void record_latency(const uint8_t *p, size_t n)
{
    int64_t stamp = body_stamp(p, n);
    if (stamp < 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 4096;
        lat_us = ess_xrealloc(lat_us, lat_cap * sizeof *lat_us);
    }
    lat_us[lat_n++] = (now - stamp) / 1000;
}

static void summary(void)
{
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    if (n_msgs)
        printf("count=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64 " seconds=%.3f rate=%.0f msgs/s",
               n_msgs, first_off, last_off, secs, (double)n_msgs / secs);
    else
        printf("count=0 first=- last=- seconds=%.3f rate=0 msgs/s", secs);
    if (n_readers > 1)
        printf(" subscriptions=%d order_errors=%" PRIu64, n_readers, order_errors);
    if (A.latency)
        latency_summary();
    putchar('\n');
    fflush(stdout);
}

static void base64_out(const uint8_t *p, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        putchar(b64[(v >> 18) & 63]);
        putchar(b64[(v >> 12) & 63]);
        putchar(i + 1 < n ? b64[(v >> 6) & 63] : '=');
        putchar(i + 2 < n ? b64[v & 63] : '=');
    }
}

static void json_body(const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f)
            continue;
        fwrite(p + run, 1, i - run, stdout);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            putchar('\\');
            putchar(ch);
        } else if (ch == '\n') {
            fputs("\\n", stdout);
        } else if (ch == '\r') {
            fputs("\\r", stdout);
        } else if (ch == '\t') {
            fputs("\\t", stdout);
        } else {
            printf("\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
        }
    }
    fwrite(p + run, 1, n - run, stdout);
}

static void readers_pause(int pause)
{
    rate_paused = pause;
    for (int i = 0; i < n_readers; i++) {
        if (R[i].sub == NULL)
            continue;
        if (pause)
            ess_stream_sub_pause(R[i].sub);
        else
            ess_stream_sub_resume(R[i].sub);
    }
}

static void on_rate_timer(uv_timer_t *t)
{
    readers_pause(0);
}

/* --rate: when ahead of schedule, stop granting credit until caught up. */
static void throttle(void)
{
    if (A.rate <= 0 || rate_paused || finishing)
        return;
    double due_s = (double)n_msgs / A.rate, secs = (double)(uv_hrtime() - t0) / 1e9;
    if (due_s > secs + 0.01) {
        readers_pause(1);
        uv_timer_start(&rate_timer, on_rate_timer, (uint64_t)((due_s - secs) * 1000) + 1, 0);
    }
}

static void reader_stop(reader_t *r)
{
    if (r->sub != NULL) {
        ess_stream_unsubscribe(r->sub);
        r->sub = NULL;
    }
    if (r->live) {
        r->live = 0;
        readers_left--;
    }
}

static void readers_done(int code)
{
    for (int i = 0; i < n_readers; i++)
        reader_stop(&R[i]);
    if (A.quiet || n_readers > 1)
        summary();
    fflush(stdout);
    finish(code);
}

static void on_message(ess_stream_sub_t *sub, const ess_stream_msg_t *m, void *ud)
{
    reader_t *r = ud;
    if (r->n > 0 && m->offset <= r->last)
        order_errors++;
    r->last = m->offset;
    r->n++;
    if (n_msgs == 0 || m->offset < first_off)
        first_off = m->offset;
    if (m->offset > last_off)
        last_off = m->offset;
    n_msgs++;
    if (A.latency)
        record_latency(m->body, m->len);
    if (!A.quiet && n_readers == 1) {
        if (strcmp(A.format, "json") == 0) {
            /* JSON strings are Unicode: a body that is not UTF-8 is given
             * as "body_base64" instead, so every line stays valid JSON. */
            int text = ess_utf8_valid(m->body, m->len);
            printf("{\"offset\":%" PRIu64 ",\"timestamp\":%" PRId64 ",\"%s\":\"", m->offset,
                   m->timestamp_ms, text ? "body" : "body_base64");
            if (text)
                json_body(m->body, m->len);
            else
                base64_out(m->body, m->len);
            fputs("\"}\n", stdout);
        } else {
            fwrite(m->body, 1, m->len, stdout);
            putchar('\n');
        }
    }
    if (A.count >= 0 && (long long)r->n >= A.count) {
        reader_stop(r); /* unsubscribing from inside on_message is allowed */
        if (readers_left == 0)
            readers_done(0);
        return;
    }
    throttle();
}

static void on_subscribed(ess_stream_sub_t *sub, int status, void *ud)
{
    reader_t *r = ud;
    if (status == ESS_OK) {
        if (++readers_subscribed == n_readers) {
            t0 = uv_hrtime();
            if (!A.quiet)
                fprintf(stderr, "ess-cat: subscribed to %s\n", A.stream);
        }
        if (A.count == 0) {
            reader_stop(r);
            if (readers_left == 0)
                readers_done(0);
        }
        return;
    }
    r->sub = NULL; /* freed by the client after this callback */
    fprintf(stderr, "ess-cat: %s: %s\n", A.stream, status_text(status));
    readers_done(status_exit(status));
}

static void on_ended(ess_stream_sub_t *sub, int reason, void *ud)
{
    reader_t *r = ud;
    r->sub = NULL;
    fprintf(stderr, "ess-cat: %s ended: %s\n", A.stream, status_text(reason));
    readers_done(status_exit(reason));
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (!A.publish) {
        readers_done(0);
        return;
    }
    fflush(stdout);
    finish(0);
}

static int start_readers(const ess_offset_spec_t *from)
{
    ess_stream_sub_cbs_t cbs = {on_subscribed, on_message, on_ended};
    n_readers = A.fanout;
    R = ess_xcalloc((size_t)n_readers, sizeof *R);
    uv_timer_init(L, &rate_timer);
    for (int i = 0; i < n_readers; i++) {
        if (ess_stream_subscribe(C, A.stream, *from, &cbs, &R[i], &R[i].sub) != ESS_OK)
            return -1;
        R[i].live = 1;
        readers_left++;
    }
    return 0;
}

/* ---- publishing ---- */

#define BATCH 1000
#define HIGH_WATER 20000

/* A stdin line as an AMQP 1.0 message with one data section, so readers
 * (and the broker's AMQP 0-9-1 conversion) see the same format as for
 * messages that arrived through the exchange. */
static uint8_t *wrap_amqp(const char *line, size_t n, size_t *out_len)
{
    uint8_t *p = ess_xmalloc(n + 8), *q = p;
    *q++ = 0x00;
    *q++ = 0x53;
    *q++ = 0x75;
    if (n < 256) {
        *q++ = 0xa0;
        *q++ = (uint8_t)n;
    } else {
        *q++ = 0xb0;
        *q++ = (uint8_t)(n >> 24);
        *q++ = (uint8_t)(n >> 16);
        *q++ = (uint8_t)(n >> 8);
        *q++ = (uint8_t)n;
    }
    memcpy(q, line, n);
    *out_len = (size_t)(q - p) + n;
    return p;
}

static uint64_t n_generated;

/* The next generated body, or -1 when none is due yet (--rate) or left. */
static ssize_t generate_line(char **line, size_t *cap)
{
    if ((long long)n_generated >= A.generate) {
        stdin_eof = 1;
        return -1;
    }
    if (A.rate > 0 && (double)n_generated >= (double)(uv_hrtime() - t0) / 1e9 * A.rate + 1)
        return -1;
    size_t want = (size_t)(A.size > 0 ? A.size : 250);
    if (*cap < want + 128) {
        *cap = want + 128;
        *line = ess_xrealloc(*line, *cap);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(*line, *cap,
                     "{\"type\":\"MerchantProcessingCharge\",\"seq\":%" PRIu64 ",\"t\":%" PRId64
                     ",\"merchant_kind\":\"DATA_MANAGER\",\"pad\":\"",
                     n_generated, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    while ((size_t)n + 2 < want && (size_t)n + 3 < *cap)
        (*line)[n++] = 'x';
    (*line)[n++] = '"';
    (*line)[n++] = '}';
    n_generated++;
    return n;
}

static void pump(void)
{
    static char *line;
    static size_t cap;
    while (!stdin_eof && !finishing && n_published - n_confirmed - n_failed < HIGH_WATER) {
        const uint8_t *msgs[BATCH];
        size_t lens[BATCH];
        size_t n = 0;
        while (n < BATCH) {
            ssize_t got = A.generate ? generate_line(&line, &cap) : getline(&line, &cap, stdin);
            if (got < 0) {
                stdin_eof |= !A.generate;
                break;
            }
            if (got > 0 && line[got - 1] == '\n')
                got--;
            msgs[n] = wrap_amqp(line, (size_t)got, &lens[n]);
            n++;
        }
        int rc = n ? ess_stream_publish(P, msgs, lens, n, NULL) : ESS_OK;
        for (size_t i = 0; i < n; i++)
            free((void *)msgs[i]);
        if (rc != ESS_OK) {
            fprintf(stderr, "ess-cat: publish failed: %s\n", ess_strerror(rc));
            finish(1);
            return;
        }
        n_published += n;
        if (n == 0)
            break; /* --generate: nothing due before the next tick */
    }
    if (stdin_eof && n_confirmed + n_failed == n_published && !finishing) {
        free(line);
        line = NULL;
        double secs = (double)(uv_hrtime() - t0) / 1e9;
        fprintf(stderr, "ess-cat: published %" PRIu64 " messages (%" PRIu64 " failed) in %.3f s\n",
                n_confirmed, n_failed, secs);
        ess_stream_publisher_close(P);
        P = NULL;
        finish(n_failed ? 1 : 0);
    }
}

static void on_gen_tick(uv_timer_t *t)
{
    if (P != NULL)
        pump();
    if (stdin_eof || finishing)
        uv_timer_stop(t);
}

static void on_pub_ready(ess_stream_pub_t *p, int status, void *ud)
{
    if (status != ESS_OK) {
        P = NULL;
        fprintf(stderr, "ess-cat: %s: %s\n", A.stream, status_text(status));
        finish(status_exit(status));
        return;
    }
    t0 = uv_hrtime();
    if (A.generate && A.rate > 0)
        uv_timer_start(&gen_timer, on_gen_tick, 1, 1);
    pump();
}

static void on_pub_confirm(ess_stream_pub_t *p, uint64_t id, int status, void *ud)
{
    if (id == UINT64_MAX) {
        fprintf(stderr, "ess-cat: publisher lost: %s\n", status_text(status));
        ess_stream_publisher_close(p);
        P = NULL;
        finish(1);
        return;
    }
    if (status == ESS_OK)
        n_confirmed++;
    else
        n_failed++;
    if (n_published - n_confirmed - n_failed <= HIGH_WATER / 2)
        pump();
}

static void start_publisher(void)
{
    ess_stream_pub_cbs_t cbs = {on_pub_ready, on_pub_confirm};
    if (ess_stream_publisher_create_ref(C, A.stream, A.pub_name, &cbs, NULL, &P) != ESS_OK) {
        fprintf(stderr, "ess-cat: cannot create publisher\n");
        finish(1);
    }
}

static void on_created(int status, void *ud)
{
    if (status != ESS_OK && status != ESS_ESTATE) {
        fprintf(stderr, "ess-cat: creating %s: %s\n", A.stream, status_text(status));
        finish(status_exit(status));
        return;
    }
    start_publisher();
}

static void on_deleted(int status, void *ud)
{
    if (status != ESS_OK)
        fprintf(stderr, "ess-cat: deleting %s: %s\n", A.stream, status_text(status));
    finish(status == ESS_OK ? 0 : status_exit(status));
}

static void on_exists(int status, void *ud)
{
    if (status == ESS_OK)
        printf("%s exists\n", A.stream);
    else
        fprintf(stderr, "ess-cat: %s: %s\n", A.stream, status_text(status));
    finish(status == ESS_OK ? 0 : status_exit(status));
}

static ess_offset_spec_t from_spec;
static int stats_exit;

static void on_stats(int status, const ess_stream_stats_t *st, void *ud)
{
    const char *ver = ess_stream_client_broker_version(C);
    if (status == ESS_OK) {
        printf("{\"stream\":\"");
        json_body((const uint8_t *)A.stream, strlen(A.stream));
        printf("\",\"broker_version\":\"");
        if (ver)
            json_body((const uint8_t *)ver, strlen(ver));
        printf("\",\"first_chunk_id\":%" PRId64 ",\"committed_chunk_id\":%" PRId64
               ",\"last_chunk_id\":%" PRId64 "}\n",
               st->first_chunk_id, st->committed_chunk_id, st->last_chunk_id);
    } else if (status == ESS_ENOTSUP) {
        printf("unsupported by this broker (version %s)\n", ver ? ver : "unknown");
        stats_exit = 3;
    } else {
        fprintf(stderr, "ess-cat: %s: %s\n", A.stream, status_text(status));
        stats_exit = status_exit(status);
    }
    fflush(stdout);
    if (!A.read_after || (status != ESS_OK && status != ESS_ENOTSUP)) {
        finish(stats_exit);
        return;
    }
    if (start_readers(&from_spec) != 0) {
        fprintf(stderr, "ess-cat: bad stream name\n");
        finish(2);
    }
}

static void on_tail(int status, int64_t last, void *ud)
{
    (void)ud;
    if (status == ESS_OK) {
        printf("{\"stream\":\"");
        json_body((const uint8_t *)A.stream, strlen(A.stream));
        printf("\",\"last_offset\":%" PRId64 "}\n", last);
        fflush(stdout);
    } else {
        fprintf(stderr, "ess-cat: %s: %s\n", A.stream, status_text(status));
    }
    finish(status == ESS_OK ? 0 : status_exit(status));
}

static void start_work(void)
{
    if (A.tail) {
        ess_stream_tail(C, A.stream, on_tail, NULL);
    } else if (A.stats) {
        ess_stream_stats(C, A.stream, on_stats, NULL);
    } else if (A.exists) {
        ess_stream_exists(C, A.stream, on_exists, NULL);
    } else if (A.delete_) {
        ess_stream_delete_stream(C, A.stream, on_deleted, NULL);
    } else if (A.publish) {
        if (A.create)
            ess_stream_create_stream(C, A.stream, NULL, 0, on_created, NULL);
        else
            start_publisher();
    }
}

static int parse_from(const char *s, ess_offset_spec_t *out)
{
    char *end;
    memset(out, 0, sizeof *out);
    if (strcmp(s, "first") == 0) {
        out->kind = ESS_OFFSET_FIRST;
    } else if (strcmp(s, "last") == 0) {
        out->kind = ESS_OFFSET_LAST;
    } else if (strcmp(s, "next") == 0) {
        out->kind = ESS_OFFSET_NEXT;
    } else if (strncmp(s, "timestamp:", 10) == 0) {
        errno = 0;
        long long v = strtoll(s + 10, &end, 10);
        if (errno || end == s + 10 || *end)
            return -1;
        out->kind = ESS_OFFSET_TIMESTAMP;
        out->timestamp_ms = v;
    } else if (strncmp(s, "datetime:", 9) == 0) {
#ifdef HAVE_DATETIME
        const char *err = NULL;
        int64_t ms;
        int64_t now = (int64_t)time(NULL) * 1000;
        if (ess_datetime_parse(s + 9, strlen(s + 9), now, &ms, &err) != 0) {
            fprintf(stderr, "ess-cat: bad datetime: %s\n", err ? err : "not a date");
            return -1;
        }
        out->kind = ESS_OFFSET_TIMESTAMP;
        out->timestamp_ms = ms;
#else
        fprintf(stderr, "ess-cat: --from datetime: is not yet supported in this build\n");
        return -1;
#endif
    } else {
        if (*s < '0' || *s > '9')
            return -1;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end)
            return -1;
        out->kind = ESS_OFFSET_ABS;
        out->offset = v;
    }
    return 0;
}

static int parse_args(int argc, char **argv)
{
    A.format = "raw";
    A.from = "next";
    A.count = -1;
    A.fanout = 1;
    A.url = getenv("ESS_AMQP_URL");
    if (A.url == NULL)
        A.url = getenv("ESS_AMPQ_URL");
    if (A.url == NULL)
        A.url = "amqp://guest:guest@127.0.0.1:5672/";
    /* ESS_STREAM_PORT, as for essd; --stream-port overrides it. */
    const char *sp = getenv("ESS_STREAM_PORT");
    if (sp != NULL && *sp != '\0') {
        char *end;
        long p = strtol(sp, &end, 10);
        if (*end != '\0' || p <= 0 || p > 65535) {
            fprintf(stderr, "ess-cat: ESS_STREAM_PORT: expected a port 1..65535, got \"%s\"\n", sp);
            return -1;
        }
        A.port = (int)p;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--url") == 0 && v) {
            A.url = v;
            i++;
        } else if (strcmp(a, "--stream-port") == 0 && v) {
            A.port = atoi(v);
            if (A.port <= 0 || A.port > 65535)
                return -1;
            i++;
        } else if (strcmp(a, "--from") == 0 && v) {
            A.from = v;
            A.read_after = 1;
            i++;
        } else if (strcmp(a, "--count") == 0 && v) {
            char *end;
            errno = 0;
            A.count = strtoll(v, &end, 10);
            if (errno || *end || end == v || A.count < 0)
                return -1;
            A.read_after = 1;
            i++;
        } else if (strcmp(a, "--format") == 0 && v) {
            if (strcmp(v, "raw") != 0 && strcmp(v, "json") != 0)
                return -1;
            A.format = v;
            i++;
        } else if (strcmp(a, "--fanout") == 0 && v) {
            A.fanout = atoi(v);
            if (A.fanout < 1 || A.fanout > 10000)
                return -1;
            i++;
        } else if (strcmp(a, "--heartbeat") == 0 && v) {
            A.heartbeat = atoi(v);
            if (A.heartbeat < 1 || A.heartbeat > 3600)
                return -1;
            i++;
        } else if (strcmp(a, "--credit") == 0 && v) {
            A.credit = atoi(v);
            if (A.credit < 1 || A.credit > 1000)
                return -1;
            i++;
        } else if (strcmp(a, "--rate") == 0 && v) {
            char *end;
            A.rate = strtod(v, &end);
            if (*end || end == v || !(A.rate > 0))
                return -1;
            i++;
        } else if (strcmp(a, "--quiet") == 0) {
            A.quiet = 1;
        } else if (strcmp(a, "--credit-window") == 0 && v) {
            A.credit_window = atoll(v);
            if (A.credit_window < 1)
                return -1;
            i++;
        } else if (strcmp(a, "--publisher-name") == 0 && v) {
            A.pub_name = v;
            i++;
        } else if (strcmp(a, "--generate") == 0 && v) {
            A.generate = atoll(v);
            if (A.generate < 1)
                return -1;
            i++;
        } else if (strcmp(a, "--size") == 0 && v) {
            A.size = atoi(v);
            if (A.size < 120 || A.size > 1000000)
                return -1;
            i++;
        } else if (strcmp(a, "--latency") == 0) {
            A.latency = A.quiet = 1;
        } else if (strcmp(a, "--publish") == 0) {
            A.publish = 1;
        } else if (strcmp(a, "--create") == 0) {
            A.create = 1;
        } else if (strcmp(a, "--delete") == 0) {
            A.delete_ = 1;
        } else if (strcmp(a, "--exists") == 0) {
            A.exists = 1;
        } else if (strcmp(a, "--stats") == 0) {
            A.stats = 1;
        } else if (strcmp(a, "--tail") == 0) {
            A.tail = 1;
        } else if (strcmp(a, "--lb") == 0) {
            A.lb = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (a[0] == '-' && a[1] != '\0') {
            return -1;
        } else if (A.stream == NULL) {
            A.stream = a;
        } else {
            return -1;
        }
    }
    if (A.stream == NULL || A.stream[0] == '\0' || strlen(A.stream) > 255)
        return -1;
    if (A.publish + A.delete_ + A.exists + A.stats + A.tail > 1 || (A.generate && !A.publish) ||
        (A.pub_name && (!A.publish || A.pub_name[0] == '\0' || strlen(A.pub_name) > 255)))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "ess-cat: bad arguments\n");
        usage(stderr);
        return 2;
    }
    ess_offset_spec_t from = {0};
    if (!A.publish && !A.delete_ && !A.exists && parse_from(A.from, &from) != 0) {
        fprintf(stderr, "ess-cat: bad --from value '%s'\n", A.from);
        return 2;
    }
    ess_log_init(getenv("ESS_CAT_DEBUG") ? ESS_LOG_DEBUG : ESS_LOG_WARN, NULL, 0, 0);
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    signal(SIGPIPE, SIG_IGN);
    L = uv_default_loop();
    ess_stream_client_opts_t o = {0};
    o.url = A.url;
    o.stream_port = A.port;
    o.load_balancer_mode = A.lb;
    o.connection_name = "ess-cat";
    o.reconnect_max_ms = 2000;
    o.initial_credit = A.credit;
    o.credit_window_bytes = (size_t)A.credit_window;
    o.heartbeat_s = A.heartbeat;
    if (ess_stream_client_create(L, &o, &C) != ESS_OK) {
        fprintf(stderr, "ess-cat: bad --url\n");
        return 2;
    }
    if (A.generate)
        uv_timer_init(L, &gen_timer);
    uv_signal_init(L, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_init(L, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    t0 = uv_hrtime();
    /* Requests queue on the connecting client; a refused login or a
     * broker that is down comes back through their callbacks. */
    from_spec = from;
    if (!A.publish && !A.delete_ && !A.exists && !A.stats && !A.tail) {
        if (start_readers(&from) != 0) {
            fprintf(stderr, "ess-cat: bad stream name\n");
            finish(2);
        }
    } else {
        start_work();
    }
    uv_run(L, UV_RUN_DEFAULT);
    fflush(stdout);
    uv_loop_close(L);
    free(R);
    return exit_code ? exit_code : stats_exit;
}
