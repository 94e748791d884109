/*
 * The console's Tail ring (gateway/tail.h): owns the ring and its copies
 * of frames and raw bodies, and the JSON string encoder the console uses.
 * Only called for a watched session; an unwatched one never reaches here.
 */
#include "gateway/tail.h"
#include "ess.h"
#include "util/utf8.h"

#include <string.h>
#include <sys/time.h>

typedef struct {
    uint64_t seq;
    int has_offset, skipped, error;
    uint64_t offset;
    int64_t timestamp_ms;
    int64_t seen_ms;
    size_t raw_len, frame_len; /* full lengths; the copies are cut at ESS_TAIL_TEXT */
    char raw[ESS_TAIL_TEXT];
    char frame[ESS_TAIL_TEXT];
} entry_t;

struct ess_tail_s {
    uint64_t seq; /* messages recorded */
    entry_t e[ESS_TAIL_ENTRIES];
};

typedef struct {
    entry_t *entry;
    ess_hook_emit_fn emit;
    void *emit_ud;
} wrap_t;

ess_tail_t *ess_tail_new(void)
{
    return ess_xcalloc(1, sizeof(ess_tail_t));
}

void ess_tail_free(ess_tail_t *t)
{
    free(t);
}

uint64_t ess_tail_seq(const ess_tail_t *t)
{
    return t->seq;
}

static size_t cut(char *dst, const uint8_t *src, size_t len)
{
    size_t n = len < ESS_TAIL_TEXT ? len : ESS_TAIL_TEXT;
    memcpy(dst, src, n);
    return n;
}

static void emitted(void *ud, const ess_hook_msg_t *msg, const uint8_t *data, size_t len)
{
    wrap_t *w = ud;
    w->entry->skipped = 0;
    w->entry->frame_len = len;
    cut(w->entry->frame, data, len);
    w->emit(w->emit_ud, msg, data, len);
}

int ess_tail_enrich(ess_tail_t *t, ess_vm_t *vm, ess_hook_es_t *es, const ess_hook_msg_t *msg,
                    ess_hook_emit_fn emit, void *emit_ud)
{
    entry_t *e = &t->e[t->seq % ESS_TAIL_ENTRIES];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    e->seq = ++t->seq;
    e->has_offset = 1;
    e->offset = msg->offset;
    e->timestamp_ms = msg->timestamp_ms;
    e->seen_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    /* The raw body: for protobuf the original bytes, otherwise the body. */
    const uint8_t *raw = msg->raw ? msg->raw : msg->body;
    e->raw_len = msg->raw ? msg->raw_len : msg->len;
    cut(e->raw, raw, e->raw_len);
    e->skipped = 1; /* until the hook emits */
    e->frame_len = 0;
    wrap_t w = {e, emit, emit_ud};
    int rc = ess_hooks_enrich(vm, es, msg, emitted, &w);
    e->error = rc != ESS_OK;
    return rc;
}

void ess_tail_json_str(ess_buf_t *out, const char *s, size_t len)
{
    int valid = ess_utf8_valid((const uint8_t *)s, len);
    ess_buf_append(out, "\"", sizeof "\"" - 1);
    size_t run = 0; /* bytes copied as they are */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !valid)) {
            /* A byte of invalid UTF-8 is shown as U+FFFD. */
            snprintf(u, sizeof u, c >= 0x80 ? "\\ufffd" : "\\u%04x", c);
            esc = u;
        }
        if (esc) {
            ess_buf_append(out, s + i - run, run);
            run = 0;
            ess_buf_append(out, esc, strlen(esc));
        } else
            run++;
    }
    ess_buf_append(out, s + len - run, run);
    ess_buf_append(out, "\"", sizeof "\"" - 1);
}

/* Cut text back to a whole UTF-8 character when the copy stopped inside one. */
static size_t whole(const char *s, size_t n, size_t full)
{
    if (n == full)
        return n;
    size_t k = n;
    while (k > 0 && k > n - 4 && ((unsigned char)s[k - 1] & 0xC0) == 0x80)
        k--;
    if (k > 0 && ((unsigned char)s[k - 1] & 0x80))
        k--; /* the lead byte of the cut character */
    return ess_utf8_valid((const uint8_t *)s, k) ? k : n;
}

void ess_tail_json(const ess_tail_t *t, uint64_t after, ess_buf_t *out)
{
    ess_buf_append(out, "[", sizeof "[" - 1);
    uint64_t first = t->seq > ESS_TAIL_ENTRIES ? t->seq - ESS_TAIL_ENTRIES + 1 : 1;
    if (first <= after)
        first = after + 1;
    for (uint64_t q = first; q <= t->seq; q++) {
        const entry_t *e = &t->e[(q - 1) % ESS_TAIL_ENTRIES];
        size_t rn = e->raw_len < ESS_TAIL_TEXT ? e->raw_len : ESS_TAIL_TEXT;
        size_t fn = e->frame_len < ESS_TAIL_TEXT ? e->frame_len : ESS_TAIL_TEXT;
        ess_buf_appendf(out,
                        "%s{\"seq\":%llu,\"offset\":%llu,\"timestamp\":%lld,\"seen\":%lld,"
                        "\"skipped\":%s,\"error\":%s,\"raw_bytes\":%zu,\"frame_bytes\":%zu,"
                        "\"raw\":",
                        q == first ? "" : ",", (unsigned long long)e->seq,
                        (unsigned long long)e->offset, (long long)e->timestamp_ms,
                        (long long)e->seen_ms, e->skipped ? "true" : "false",
                        e->error ? "true" : "false", e->raw_len, e->frame_len);
        ess_tail_json_str(out, e->raw, whole(e->raw, rn, e->raw_len));
        ess_buf_append(out, ",\"frame\":", sizeof ",\"frame\":" - 1);
        if (e->skipped)
            ess_buf_append(out, "null", sizeof "null" - 1);
        else
            ess_tail_json_str(out, e->frame, whole(e->frame, fn, e->frame_len));
        ess_buf_append(out, "}", sizeof "}" - 1);
    }
    ess_buf_append(out, "]", sizeof "]" - 1);
}
