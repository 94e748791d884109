/*
 * ess-listen: connect to an event stream's WebSocket location and print
 * each message (offset, timestamp, frame type, size, body) on one line,
 * then the close code and reason and byte statistics. It owns argument
 * parsing, the start selector (query parameter by default, header with
 * --header), message reassembly and printing; the WebSocket protocol is
 * libwebsockets' (client API, its own poll loop). It does not validate the
 * enrichment: offset and timestamp are read from the enriched JSON members
 * or the text suffix when present, "-" otherwise.
 *
 * With --reconnect it survives a replica or network loss: after any close
 * other than a final one (1000, 1002, 1009) or a lost or refused
 * connection it connects again with stream_from_ordinal = the last offset
 * received + 1 (or the offset a 1001/1008 reason names), with bounded
 * retries and exponential backoff. It checks that offsets increase; a
 * jump is reported as information on stderr, not as a loss, because
 * stream offsets are not contiguous across segments (docs/brokers.md).
 *
 * Exit status: 0 on a close with 1000 or when --count is reached, 1 on any
 * other close, a lost connection (after the retries with --reconnect) or
 * an offset that did not increase, 2 on a bad argument or a connection
 * that could not be made (refused, bad handshake).
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "ess.h"

#define MAX_MESSAGE (64u * 1024u * 1024u)
#define SHOWN_BYTES 4096 /* a longer body is cut on its line (with "...") */

typedef struct {
    const char *location;
    const char *sel_name;  /* query parameter name, NULL without a selector */
    const char *sel_hdr;   /* header name, lower case with ':' for lws */
    const char *sel_value; /* as given */
    unsigned long long count;
    int header;
    int reconnect;   /* --reconnect */
    int max_retries; /* consecutive failed attempts before giving up */
} opts_t;

typedef struct {
    opts_t o;
    struct lws_context *ctx;
    int done;
    int exit_status;
    int established;
    int close_code; /* -1: none received */
    char close_reason[128];
    char error[256];
    uint8_t *msg; /* the message being reassembled */
    size_t len, cap;
    unsigned long long messages, bytes;
    struct timespec t0;
    long long last_offset;      /* last offset received, -1 before any */
    long long reason_resume;    /* N from a reason's "stream_from_ordinal=N", or -1 */
    unsigned long long gaps;    /* offset jumps (information) */
    unsigned long long regress; /* offsets that did not increase (errors) */
    unsigned long long attempt_messages;
    int count_reached;
} listen_t;

static volatile sig_atomic_t interrupted;

static void usage(FILE *f)
{
    fprintf(f, "usage: ess-listen LOCATION [-o ORDINAL | -t TIMESTAMP_MS | -d DATETIME]\n"
               "                  [--count N] [--header] [--reconnect [--max-retries N]]\n"
               "  LOCATION       ws://host[:port]/event-stream/UUID (wss:// with TLS)\n"
               "  -o, --ordinal  start at that stream offset (integer >= 0)\n"
               "  -t, --timestamp start at the first message at or after ms since the epoch\n"
               "  -d, --datetime start at the first message at or after a date/time string\n"
               "  --count N      stop after N messages (default: until the server closes)\n"
               "  --header       send the selector as an X-StreamOffsetFrom* header instead of\n"
               "                 a stream_from_* query parameter\n"
               "  --reconnect    after a close other than 1000/1002/1009 or a lost or refused\n"
               "                 connection, connect again from the last offset received + 1\n"
               "  --max-retries N  consecutive failed attempts before giving up (default 10)\n"
               "Prints one line per message: offset, timestamp, type, bytes and body; then the\n"
               "close code and reason and the statistics. Exit 0 on a 1000 close or --count,\n"
               "1 on another close, 2 on a bad argument or a failed connection.\n");
}

static int bad_args(const char *what, const char *arg)
{
    fprintf(stderr, "ess-listen: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    usage(stderr);
    return 2;
}

static int all_digits(const char *s)
{
    if (*s == '\0' || strlen(s) > 19)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {
        {"ordinal", required_argument, NULL, 'o'},
        {"timestamp", required_argument, NULL, 't'},
        {"datetime", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'c'},
        {"header", no_argument, NULL, 'H'},
        {"reconnect", no_argument, NULL, 'R'},
        {"max-retries", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, selectors = 0;
    memset(o, 0, sizeof *o);
    o->max_retries = 10;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:t:d:h", longs, NULL)) != -1) {
        switch (c) {
        case 'o':
        case 't':
            if (!all_digits(optarg))
                return bad_args(
                    c == 'o' ? "-o needs an integer >= 0" : "-t needs ms since the epoch", optarg);
            /* fall through */
        case 'd':
            if (c == 'd' && optarg[0] == '\0')
                return bad_args("-d needs a date/time", NULL);
            selectors++;
            o->sel_value = optarg;
            o->sel_name = c == 'o'   ? "stream_from_ordinal"
                          : c == 't' ? "stream_from_timestamp"
                                     : "stream_from_datetime";
            o->sel_hdr = c == 'o'   ? "x-streamoffsetfromordinal:"
                         : c == 't' ? "x-streamoffsetfromtimestamp:"
                                    : "x-streamoffsetfromdatetime:";
            break;
        case 'c':
            if (!all_digits(optarg) || strtoull(optarg, NULL, 10) == 0)
                return bad_args("--count needs an integer > 0", optarg);
            o->count = strtoull(optarg, NULL, 10);
            break;
        case 'H': o->header = 1; break;
        case 'R': o->reconnect = 1; break;
        case 'M':
            if (!all_digits(optarg) || strlen(optarg) > 6)
                return bad_args("--max-retries needs an integer 0..999999", optarg);
            o->max_retries = atoi(optarg);
            break;
        case 'h': usage(stdout); exit(0);
        case ':': return bad_args("missing value for", argv[optind - 1]);
        default: return bad_args("unknown option", argv[optind - 1]);
        }
    }
    if (selectors > 1)
        return bad_args("only one of -o, -t, -d may be given", NULL);
    if (optind != argc - 1)
        return bad_args(optind >= argc ? "LOCATION is required" : "one LOCATION only", NULL);
    o->location = argv[optind];
    return 0;
}

/* Percent-encode s for a query value into out (cap bytes). */
static int query_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (n + 4 >= cap)
            return ESS_ETOOBIG;
        if (plain) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return ESS_OK;
}

/* The last "key": integer in a JSON text, or -1. Good enough for the two
 * members the enrichment appends; it does not parse the JSON. */
static long long json_member(const uint8_t *b, size_t len, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = len; i-- > 0;) {
        if (b[i] != '"' || i + kl + 2 > len || memcmp(b + i + 1, key, kl) != 0 ||
            b[i + kl + 1] != '"')
            continue;
        size_t j = i + kl + 2;
        while (j < len && (b[j] == ' ' || b[j] == ':' || b[j] == '\t'))
            j++;
        long long v = 0;
        size_t d = 0;
        while (j < len && b[j] >= '0' && b[j] <= '9' && d < 19)
            v = v * 10 + (b[j++] - '0'), d++;
        return d ? v : -1;
    }
    return -1;
}

/* N after the last "|<tag>: " in a text, or -1. */
static long long text_suffix(const uint8_t *b, size_t len, const char *tag)
{
    size_t tl = strlen(tag);
    for (size_t i = len; i-- > 0;) {
        if (b[i] != '|' || i + tl + 1 > len || memcmp(b + i + 1, tag, tl) != 0)
            continue;
        size_t j = i + 1 + tl, d = 0;
        long long v = 0;
        while (j < len && b[j] >= '0' && b[j] <= '9' && d < 19)
            v = v * 10 + (b[j++] - '0'), d++;
        return d ? v : -1;
    }
    return -1;
}

static void print_num(long long v)
{
    if (v < 0)
        fputs("-", stdout);
    else
        printf("%lld", v);
}

/* The body on one line: printable bytes as they are (UTF-8 text stays
 * readable), control bytes and, in binary frames, every non-ASCII byte
 * escaped. */
static void print_body(const uint8_t *b, size_t len, int binary)
{
    size_t n = len > SHOWN_BYTES ? SHOWN_BYTES : len;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = b[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f || (binary && c >= 0x80))
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    if (n < len)
        fputs("...", stdout);
}

static void print_message(listen_t *L, int binary)
{
    long long off = -1, ts = -1;
    if (!binary) {
        off = json_member(L->msg, L->len, "ess_offset");
        ts = json_member(L->msg, L->len, "ess_timestamp");
        if (off < 0 || ts < 0) {
            off = text_suffix(L->msg, L->len, "offset: ");
            ts = text_suffix(L->msg, L->len, "timestamp: ");
        }
    }
    if (off >= 0) {
        if (L->last_offset >= 0 && off <= L->last_offset) {
            L->regress++;
            fprintf(stderr,
                    "ess-listen: error: offset %lld after %lld (repeated or out of order)\n", off,
                    L->last_offset);
        } else if (L->last_offset >= 0 && off > L->last_offset + 1) {
            L->gaps++;
            fprintf(stderr,
                    "ess-listen: info: offsets %lld..%lld absent (a stream segment boundary, "
                    "not a lost message)\n",
                    L->last_offset + 1, off - 1);
        }
        if (off > L->last_offset)
            L->last_offset = off;
    }
    fputs("offset=", stdout);
    print_num(off);
    fputs(" timestamp=", stdout);
    print_num(ts);
    printf(" type=%s bytes=%zu body=", binary ? "binary" : "text", L->len);
    print_body(L->msg, L->len, binary);
    putchar('\n');
    fflush(stdout);
}

static int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    listen_t *L = lws_context_user(lws_get_context(wsi));
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (L->o.header && L->o.sel_hdr) {
            unsigned char **p = in, *end = *p + len;
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)L->o.sel_hdr,
                                            (const unsigned char *)L->o.sel_value,
                                            (int)strlen(L->o.sel_value), p, end))
                return -1;
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        snprintf(L->error, sizeof L->error, "%s", in ? (const char *)in : "connection failed");
        L->exit_status = 2;
        L->done = 1;
        break;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        L->established = 1;
        clock_gettime(CLOCK_MONOTONIC, &L->t0);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (lws_is_first_fragment(wsi))
            L->len = 0;
        if (L->len + len > MAX_MESSAGE) {
            snprintf(L->error, sizeof L->error, "a message is larger than %u bytes", MAX_MESSAGE);
            L->exit_status = 1;
            lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
            return -1;
        }
        if (L->len + len > L->cap) {
            L->cap = (L->len + len) * 2;
            L->msg = ess_xrealloc(L->msg, L->cap + 1);
        }
        memcpy(L->msg + L->len, in, len);
        L->len += len;
        if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
            break;
        L->messages++;
        L->attempt_messages++;
        L->bytes += L->len;
        print_message(L, lws_frame_is_binary(wsi));
        if (L->o.count && L->messages >= L->o.count) {
            static const char done[] = "count reached";
            L->exit_status = 0;
            L->count_reached = 1;
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)done, sizeof done - 1);
            return -1;
        }
        break;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
        const uint8_t *p = in;
        L->close_code = len >= 2 ? (p[0] << 8) | p[1] : 1005;
        size_t rl = len > 2 ? len - 2 : 0;
        if (rl >= sizeof L->close_reason)
            rl = sizeof L->close_reason - 1;
        if (rl)
            memcpy(L->close_reason, p + 2, rl);
        L->close_reason[rl] = '\0';
        L->exit_status = L->close_code == 1000 ? 0 : 1;
        const char *r = strstr(L->close_reason, "stream_from_ordinal=");
        L->reason_resume = r ? strtoll(r + 20, NULL, 10) : -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED: L->done = 1; break;
    default: break;
    }
    return 0;
}

/* The request path: base plus the selector as a query parameter (unless
 * it goes as a header). */
static int build_path(const opts_t *o, const char *base, char *full, size_t cap)
{
    int n = snprintf(full, cap, "%s", base);
    if (n < 0 || (size_t)n >= cap)
        return ESS_ETOOBIG;
    if (o->sel_name && !o->header) {
        char esc[700];
        if (query_escape(o->sel_value, esc, sizeof esc) != ESS_OK ||
            (size_t)snprintf(full + n, cap - (size_t)n, "%c%s=%s", strchr(base, '?') ? '&' : '?',
                             o->sel_name, esc) >= cap - (size_t)n)
            return ESS_ETOOBIG;
    }
    return ESS_OK;
}

/* Whether --reconnect tries again after this attempt: not after a close
 * that will not change (1000: deleted, unknown, replaced, POISON; 1002: a
 * bad selector; 1009: a frame too large). */
static int resumable(const listen_t *L)
{
    if (L->close_code < 0)
        return 1; /* lost, refused or timed out */
    return L->close_code != 1000 && L->close_code != 1002 && L->close_code != 1009;
}

/* 100 ms doubling up to 5 s, with +-25 % jitter. */
static unsigned backoff_ms(int failures)
{
    unsigned d = 100;
    for (int i = 1; i < failures && d < 5000; i++)
        d *= 2;
    if (d > 5000)
        d = 5000;
    return d - d / 4 + (unsigned)(rand() % (int)(d / 2 + 1));
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void print_stats(listen_t *L)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = L->established
                   ? (double)(t1.tv_sec - L->t0.tv_sec) + (double)(t1.tv_nsec - L->t0.tv_nsec) / 1e9
                   : 0.0;
    printf("messages=%llu bytes=%llu seconds=%.3f rate=%.0f msgs/s (%.0f bytes/s)\n", L->messages,
           L->bytes, s, s > 0 ? (double)L->messages / s : 0.0, s > 0 ? (double)L->bytes / s : 0.0);
}

int main(int argc, char **argv)
{
    static listen_t L;
    if (parse_args(argc, argv, &L.o))
        return 2;
    L.close_code = -1;
    L.exit_status = 1; /* a connection lost without a close frame */

    /* lws_parse_uri cuts its argument in place; keep a copy for it. */
    char *loc = ess_xstrdup(L.o.location);
    const char *scheme, *host, *path;
    int port;
    if (lws_parse_uri(loc, &scheme, &host, &port, &path) || host[0] == '\0') {
        free(loc);
        return bad_args("not a ws:// or wss:// location", L.o.location);
    }
    int tls = strcmp(scheme, "wss") == 0;
    if (!tls && strcmp(scheme, "ws") != 0) {
        free(loc);
        return bad_args("not a ws:// or wss:// location", L.o.location);
    }
    if (port <= 0 || port > 65535) {
        free(loc);
        return bad_args("bad port in", L.o.location);
    }

    /* lws_parse_uri drops the leading '/' of the path. */
    char base[2048], full[2048], resume_value[24];
    int n = snprintf(base, sizeof base, "/%s", path);
    if (n < 0 || (size_t)n >= sizeof base) {
        free(loc);
        return bad_args("location too long", NULL);
    }
    if (build_path(&L.o, base, full, sizeof full) != ESS_OK) {
        free(loc);
        return bad_args("selector value too long", NULL);
    }

    lws_set_log_level(LLL_ERR, NULL);
    static const struct lws_protocols protocols[] = {
        {"ess-listen", on_event, 0, 65536, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = &L;
    info.options = tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    L.ctx = lws_create_context(&info);
    if (L.ctx == NULL) {
        free(loc);
        fprintf(stderr, "ess-listen: cannot create the libwebsockets context\n");
        return 2;
    }

    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%d", host, port);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    L.last_offset = -1;
    int failures = 0, ever_established = 0;
    for (;;) {
        L.done = 0;
        L.established = 0;
        L.close_code = -1;
        L.close_reason[0] = '\0';
        L.error[0] = '\0';
        L.exit_status = 1; /* a connection lost without a close frame */
        L.reason_resume = -1;
        L.attempt_messages = 0;
        struct lws_client_connect_info ci;
        memset(&ci, 0, sizeof ci);
        ci.context = L.ctx;
        ci.address = host;
        ci.port = port;
        ci.path = full;
        ci.host = hostport;
        ci.origin = hostport;
        ci.ssl_connection = tls ? LCCSCF_USE_SSL : 0;
        ci.protocol = NULL;
        if (lws_client_connect_via_info(&ci) == NULL && !L.done) {
            snprintf(L.error, sizeof L.error, "cannot start the connection");
            L.exit_status = 2;
            L.done = 1;
        }
        /* Bounded by the server: it closes, or lws times the connection out. */
        while (!L.done && !interrupted)
            if (lws_service(L.ctx, 0) < 0)
                break;
        if (L.established)
            ever_established = 1;
        if (!L.o.reconnect || interrupted || L.count_reached || !resumable(&L))
            break;
        /* A connection that delivered something resets the retry count. */
        failures = L.attempt_messages ? 1 : failures + 1;
        if (failures > L.o.max_retries) {
            fprintf(stderr, "ess-listen: giving up after %d failed attempts\n", L.o.max_retries);
            if (L.exit_status == 0)
                L.exit_status = 1;
            break;
        }
        long long from = L.reason_resume >= 0 ? L.reason_resume
                         : L.last_offset >= 0 ? L.last_offset + 1
                                              : -1;
        if (from >= 0) {
            snprintf(resume_value, sizeof resume_value, "%lld", from);
            L.o.sel_value = resume_value;
            L.o.sel_name = "stream_from_ordinal";
            L.o.sel_hdr = "x-streamoffsetfromordinal:";
        }
        if (build_path(&L.o, base, full, sizeof full) != ESS_OK)
            break; /* cannot happen: an ordinal is shorter than any accepted value */
        unsigned delay_ms = backoff_ms(failures);
        if (L.close_code >= 0)
            fprintf(stderr, "ess-listen: closed code=%d reason=\"%s\"; ", L.close_code,
                    L.close_reason);
        else
            fprintf(stderr, "ess-listen: %s; ", L.error[0] ? L.error : "connection lost");
        if (from >= 0)
            fprintf(stderr, "reconnecting in %u ms from offset %lld (attempt %d)\n", delay_ms, from,
                    failures);
        else
            fprintf(stderr, "reconnecting in %u ms with the first selector (attempt %d)\n",
                    delay_ms, failures);
        for (unsigned waited = 0; waited < delay_ms && !interrupted; waited += 10)
            usleep(10000);
        if (interrupted)
            break;
    }
    lws_context_destroy(L.ctx);
    if (L.exit_status == 2 && ever_established)
        L.exit_status = 1; /* lost later, not a connection that never worked */

    if (L.error[0])
        fprintf(stderr, "ess-listen: %s\n", L.error);
    if (L.close_code >= 0)
        printf("closed: code=%d reason=\"%s\"\n", L.close_code, L.close_reason);
    else if (L.established && L.exit_status != 0 && !interrupted)
        printf("closed: connection lost without a close frame (1006)\n");
    if (interrupted)
        L.exit_status = 0;
    if (L.gaps)
        fprintf(stderr, "ess-listen: info: %llu offset gaps (not losses)\n", L.gaps);
    if (L.regress) {
        fprintf(stderr, "ess-listen: error: %llu offsets did not increase\n", L.regress);
        L.exit_status = 1;
    }
    print_stats(&L);
    free(L.msg);
    free(loc);
    return L.exit_status;
}
