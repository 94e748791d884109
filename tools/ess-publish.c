/*
 * ess-publish: publish N test messages (JSON or the account server's text
 * form) to the event-streams exchange with a routing key, optionally
 * declaring the exchange, the stream queue and its binding first, at a
 * given rate, with publisher confirms. It owns argument parsing, message
 * formatting and pacing; the AMQP work is mq/amqp091.c's. With --protobuf
 * it sends binary protobuf messages of a known type (proto/protobuf.h)
 * with content type application/x-protobuf and the type in the
 * message_type header, where essd looks for it.
 *
 * Exit status: 0 all confirmed, 1 a failure after connecting (nack, lost
 * connection, missing exchange), 2 bad arguments or a refused connection
 * or login.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ess.h"
#include "mq/amqp091.h"
#include "proto/protobuf.h"

#define DEFAULT_URL "amqp://guest:guest@127.0.0.1:5672/"
#define CONFIRM_WINDOW 1024
#define MAX_SIZE (16u * 1024u * 1024u)

typedef struct {
    const char *url;
    const char *exchange;
    const char *routing_key;
    unsigned long count;
    double rate;
    int json;
    size_t size;
    int declare;
    int poison;
    const ProtobufCMessageDescriptor *pb; /* --protobuf: the message type */
} opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: ess-publish --routing-key KEY [--url URL] [--exchange NAME] [--count N]\n"
               "                   [--rate MSGS_PER_S] [--format json|text] [--size BYTES]\n"
               "                   [--declare] [--poison] [--protobuf [--protobuf-type NAME]]\n"
               "  --url          amqp://user:pass@host:port/vhost (default $ESS_AMQP_URL,\n"
               "                 $ESS_AMPQ_URL, or " DEFAULT_URL ")\n"
               "  --exchange     exchange to publish to (default event-streams)\n"
               "  --routing-key  routing key, also the stream name for --declare\n"
               "  --count        messages to publish (default 10)\n"
               "  --rate         messages per second, 0 = as fast as possible (default 0)\n"
               "  --format       json (default) or text\n"
               "  --size         approximate body size in bytes (padding is added)\n"
               "  --declare      declare the exchange, the stream queue and the binding\n"
               "  --poison       publish one POISON message after the others\n"
               "  --protobuf     publish binary protobuf (application/x-protobuf) messages,\n"
               "                 the type in the message_type header\n"
               "  --protobuf-type  the message type (implies --protobuf; default\n"
               "                 MerchantProcessingCharge):");
    for (size_t i = 0; i < ess_protobuf_type_count(); i++)
        fprintf(f, "%s %s", i % 3 == 0 ? "\n                   " : "",
                strchr(ess_protobuf_name(ess_protobuf_type_at(i)), '.') + 1);
    fprintf(f, "\n");
}

static int bad_args(const char *fmt, const char *arg)
{
    fprintf(stderr, "ess-publish: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'},
        {"exchange", required_argument, NULL, 'e'},
        {"routing-key", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},
        {"format", required_argument, NULL, 'f'},
        {"size", required_argument, NULL, 's'},
        {"declare", no_argument, NULL, 'D'},
        {"poison", no_argument, NULL, 'P'},
        {"protobuf", no_argument, NULL, 'B'},
        {"protobuf-type", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int ch;
    memset(o, 0, sizeof *o);
    o->url = getenv("ESS_AMQP_URL");
    if (o->url == NULL || o->url[0] == '\0')
        o->url = getenv("ESS_AMPQ_URL");
    if (o->url == NULL || o->url[0] == '\0')
        o->url = DEFAULT_URL;
    o->exchange = "event-streams";
    o->count = 10;
    o->json = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'u': o->url = optarg; break;
        case 'e': o->exchange = optarg; break;
        case 'k': o->routing_key = optarg; break;
        case 'n':
            if (parse_ulong(optarg, 1000000000ul, &o->count) != 0)
                return bad_args("--count needs an integer from 0 to 1000000000, not '%s'", optarg);
            break;
        case 'r': {
            char *end;
            errno = 0;
            o->rate = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || end == optarg || !(o->rate >= 0) || o->rate > 1e9)
                return bad_args("--rate needs a number >= 0, not '%s'", optarg);
            break;
        }
        case 'f':
            if (strcmp(optarg, "json") == 0)
                o->json = 1;
            else if (strcmp(optarg, "text") == 0)
                o->json = 0;
            else
                return bad_args("--format must be json or text, not '%s'", optarg);
            break;
        case 's':
            if (parse_ulong(optarg, MAX_SIZE, &v) != 0)
                return bad_args("--size needs an integer from 0 to 16777216, not '%s'", optarg);
            o->size = v;
            break;
        case 'D': o->declare = 1; break;
        case 'P': o->poison = 1; break;
        case 'B':
            if (o->pb == NULL)
                o->pb = ess_protobuf_find("MerchantProcessingCharge", 24);
            break;
        case 'T':
            o->pb = ess_protobuf_find(optarg, strlen(optarg));
            if (o->pb == NULL)
                return bad_args("--protobuf-type: unknown message type '%s'", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        default: return bad_args("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_args("unexpected argument '%s'", argv[optind]);
    if (o->routing_key == NULL || o->routing_key[0] == '\0')
        return bad_args("%s", "--routing-key is required");
    if (strlen(o->routing_key) > 255 || strlen(o->exchange) > 255)
        return bad_args("%s", "--routing-key and --exchange are at most 255 bytes");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void iso_now(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Format message seq into buf (cap bytes, grown by the caller); returns its length. */
static size_t format_msg(const opts_t *o, unsigned long seq, char *buf, size_t cap)
{
    char ts[40];
    int n;
    iso_now(ts, sizeof ts);
    if (o->json)
        n = snprintf(buf, cap,
                     "{\"message_type\":\"MerchantProcessingCharge\",\"seq\":%lu,"
                     "\"timestamp\":\"%s\",\"merchant_kind\":\"DATA_MANAGER\"",
                     seq, ts);
    else
        n = snprintf(buf, cap,
                     "accountserver.MerchantProcessingCharge|timestamp: \"%s\" "
                     "merchant_kind: \"DATA_MANAGER\" seq: %lu",
                     ts, seq);
    size_t len = (size_t)n;
    const char *pad_open = o->json ? ",\"padding\":\"" : " padding: \"";
    const char *close = o->json ? "\"}" : "\"";
    size_t fixed = len + strlen(pad_open) + strlen(close);
    if (o->size > fixed) {
        memcpy(buf + len, pad_open, strlen(pad_open));
        len += strlen(pad_open);
        memset(buf + len, 'x', o->size - fixed);
        len += o->size - fixed;
        memcpy(buf + len, close, strlen(close));
        len += strlen(close);
    } else if (o->json) {
        buf[len++] = '}';
    }
    ESS_ASSERT(len <= cap);
    return len;
}

/* Field names that take the --size padding, first match wins. */
static const char *const pad_fields[] = {"additional_data", "content", "params", "message"};

/*
 * A protobuf message of type o->pb for message seq, packed into a new
 * buffer (the caller frees it). Fields are filled by kind so that every
 * known type works: strings named *timestamp* get the time, merchant_kind
 * DATA_MANAGER, the padding field (see pad_fields) --size bytes of 'x',
 * other strings "<field>-<n>"; integers n (the 1-based message number),
 * enums their first non-zero value, bools true on the last message only
 * (eoc: end of charges). Repeated fields stay empty.
 */
static uint8_t *format_protobuf(const opts_t *o, unsigned long seq, size_t *len)
{
    const ProtobufCMessageDescriptor *d = o->pb;
    ProtobufCMessage *m = ess_xcalloc(1, d->sizeof_message);
    protobuf_c_message_init(d, m);
    char *strs[64];
    size_t ns = 0;
    char ts[40];
    iso_now(ts, sizeof ts);
    uint64_t n = (uint64_t)seq + 1;
    const char *pad = NULL;
    for (size_t k = 0; k < ESS_ARRAY_SIZE(pad_fields) && pad == NULL && o->size > 0; k++) {
        if (protobuf_c_message_descriptor_get_field_by_name(d, pad_fields[k]) != NULL)
            pad = pad_fields[k];
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *v = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING: {
            char *str;
            ESS_ASSERT(ns < ESS_ARRAY_SIZE(strs));
            if (strstr(f->name, "timestamp") != NULL) {
                str = ess_xstrdup(ts);
            } else if (strcmp(f->name, "merchant_kind") == 0) {
                str = ess_xstrdup("DATA_MANAGER");
            } else if (pad != NULL && strcmp(f->name, pad) == 0) {
                str = ess_xmalloc(o->size + 1);
                memset(str, 'x', o->size);
                str[o->size] = '\0';
            } else {
                size_t cap = strlen(f->name) + 24;
                str = ess_xmalloc(cap);
                snprintf(str, cap, "%s-%llu", f->name, (unsigned long long)n);
            }
            strs[ns++] = str;
            *(char **)v = str;
            break;
        }
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32: *(uint32_t *)v = (uint32_t)n; break;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64: *(uint64_t *)v = n; break;
        case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)v = n == o->count; break;
        case PROTOBUF_C_TYPE_ENUM: {
            const ProtobufCEnumDescriptor *e = f->descriptor;
            for (unsigned k = 0; k < e->n_values; k++) {
                if (e->values[k].value != 0) {
                    *(int *)v = e->values[k].value;
                    break;
                }
            }
            break;
        }
        default: break; /* floats, bytes and messages: none in the known types */
        }
    }
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *out = ess_xmalloc(*len ? *len : 1);
    protobuf_c_message_pack(m, out);
    for (size_t i = 0; i < ns; i++)
        free(strs[i]);
    free(m);
    return out;
}

static void pace(double start, double rate, unsigned long i)
{
    if (rate <= 0)
        return;
    double wait = start + (double)i / rate - now_s();
    if (wait <= 0)
        return;
    struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv)
{
    opts_t o;
    char err[300];
    ess_amqp091_t *c = NULL;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;

    rc = ess_amqp091_connect(o.url, 10000, &c, err, sizeof err);
    if (rc != ESS_OK) {
        fprintf(stderr, "ess-publish: %s\n", err);
        return 2;
    }
    if (o.declare) {
        rc = ess_amqp091_declare_exchange(c, o.exchange);
        if (rc == ESS_OK)
            rc = ess_amqp091_declare_stream(c, o.routing_key, o.exchange, o.routing_key);
        if (rc != ESS_OK) {
            fprintf(stderr, "ess-publish: %s\n", ess_amqp091_error(c));
            ess_amqp091_close(c);
            return rc == ESS_EAUTH ? 2 : 1;
        }
    }
    rc = ess_amqp091_enable_confirms(c, CONFIRM_WINDOW);
    if (rc != ESS_OK) {
        fprintf(stderr, "ess-publish: %s\n", ess_amqp091_error(c));
        ess_amqp091_close(c);
        return 1;
    }

    size_t cap = o.size + 512;
    char *buf = ess_xmalloc(cap);
    const char *ctype = o.pb != NULL ? "application/x-protobuf"
                        : o.json     ? "application/json"
                                     : "text/plain";
    int tty = isatty(STDERR_FILENO);
    double start = now_s(), last_progress = start;
    unsigned long i;
    for (i = 0; i < o.count; i++) {
        pace(start, o.rate, i);
        size_t len;
        uint8_t *pb = NULL;
        if (o.pb != NULL)
            pb = format_protobuf(&o, i, &len);
        else
            len = format_msg(&o, i, buf, cap);
        ess_amqp091_header_t hdrs[] = {
            {.key = "message_type",
             .kind = ESS_AMQP091_HDR_STRING,
             .s = o.pb != NULL ? ess_protobuf_name(o.pb) : "MerchantProcessingCharge"},
            {.key = "seq", .kind = ESS_AMQP091_HDR_INT, .i = (int64_t)i},
        };
        rc = ess_amqp091_publish(c, o.exchange, o.routing_key, pb != NULL ? (void *)pb : buf, len,
                                 ctype, hdrs, ESS_ARRAY_SIZE(hdrs));
        free(pb);
        if (rc != ESS_OK)
            break;
        if (tty && now_s() - last_progress >= 0.5) {
            last_progress = now_s();
            fprintf(stderr, "\rpublished %lu/%lu", i + 1, o.count);
        }
    }
    if (rc == ESS_OK && o.poison)
        rc = ess_amqp091_publish(c, o.exchange, o.routing_key, "POISON", 6, "text/plain", NULL, 0);
    if (rc == ESS_OK)
        rc = ess_amqp091_wait_confirms(c);
    double elapsed = now_s() - start;
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (rc != ESS_OK) {
        fprintf(stderr, "ess-publish: %s (after %lu published, %llu confirmed)\n",
                ess_amqp091_error(c), i, (unsigned long long)ess_amqp091_confirmed(c));
    } else {
        printf("published %lu messages%s to %s/%s, all confirmed, in %.3f s (%.0f msgs/s)\n",
               o.count, o.poison ? " + POISON" : "", o.exchange, o.routing_key, elapsed,
               elapsed > 0 ? (double)o.count / elapsed : 0.0);
    }
    free(buf);
    ess_amqp091_close(c);
    return rc == ESS_OK ? 0 : 1;
}
