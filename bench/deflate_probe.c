/* deflate_probe: what permessage-deflate (RFC 7692) would cost and save on
 * essd's frames (issue 15 item 4), measured with zlib alone: no essd, no
 * sockets. For N enriched JSON bodies of ~SIZE bytes (the bench's S1 shape
 * after the default hook), it compresses each message
 *   - alone (no_context_takeover: a fresh raw deflate per message, which is
 *     what lets one compressed frame serve every client of a shared
 *     subscription), and
 *   - in one running stream (context takeover: per connection, each client
 *     its own zlib state),
 * at zlib levels 1 and 6, and prints bytes out / bytes in and CPU ns per
 * message, plus the size of one deflate state. Results are one JSON
 * object per line.
 *
 *   cc -O2 -o deflate_probe bench/deflate_probe.c -lz && ./deflate_probe [N] [SIZE]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* One body as the default hook sends it: the S1 JSON plus ess_offset and
 * ess_timestamp spliced in. */
static size_t body(char *out, size_t cap, int i, int size)
{
    int n = snprintf(out, cap,
                     "{\"type\":\"MerchantProcessingCharge\",\"seq\":%d,\"t\":%lld,"
                     "\"merchant_kind\":\"DATA_MANAGER\",\"pad\":\"",
                     i, 1764380000000000000LL + (long long)i * 1000003);
    /* pad: 'x' as in bench/run's S1 bodies, or (PAD=mixed) less regular text */
    static int mixed = -1;
    if (mixed < 0)
        mixed = getenv("PAD") && strcmp(getenv("PAD"), "mixed") == 0;
    for (; n < size - 60; n++)
        out[n] = mixed ? "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + n * 13) % 36] : 'x';
    n += snprintf(out + n, cap - n, "\",\"ess_offset\":%d,\"ess_timestamp\":%lld}", 1000 + i,
                  1764380000000LL + i);
    return (size_t)n;
}

static size_t run(z_stream *z, const char *in, size_t len, uint8_t *out, size_t cap)
{
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    deflate(z, Z_SYNC_FLUSH);
    return cap - z->avail_out - 4; /* RFC 7692: the 00 00 ff ff tail is not sent */
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000, size = argc > 2 ? atoi(argv[2]) : 250;
    char in[4096];
    uint8_t out[8192];
    /* level, context takeover, window bits, memLevel */
    static const int variants[][4] = {
        {1, 0, 15, 8}, {1, 0, 9, 1}, {6, 0, 9, 1}, {1, 1, 15, 8}, {6, 1, 15, 8}};
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
        int level = variants[vi][0], takeover = variants[vi][1], wbits = variants[vi][2],
            mem = variants[vi][3];
        {
            z_stream z;
            memset(&z, 0, sizeof z);
            deflateInit2(&z, level, Z_DEFLATED, -wbits, mem, Z_DEFAULT_STRATEGY);
            uint64_t raw = 0, comp = 0;
            double t0 = cpu_ns();
            for (int i = 0; i < n; i++) {
                size_t len = body(in, sizeof in, i, size);
                if (!takeover)
                    deflateReset(&z); /* a fresh context per message */
                raw += len;
                comp += run(&z, in, len, out, sizeof out);
            }
            double t1 = cpu_ns();
            /* the body generation alone, to subtract */
            double g0 = cpu_ns();
            volatile size_t sink = 0;
            for (int i = 0; i < n; i++)
                sink += body(in, sizeof in, i, size);
            double g1 = cpu_ns();
            deflateEnd(&z);
            printf("{\"level\":%d,\"context_takeover\":%s,\"window_bits\":%d,\"mem_level\":%d,"
                   "\"messages\":%d,\"raw_bytes_per_msg\":%.1f,"
                   "\"deflated_bytes_per_msg\":%.1f,\"ratio\":%.3f,\"cpu_ns_per_msg\":%.0f}\n",
                   level, takeover ? "true" : "false", wbits, mem, n, (double)raw / n,
                   (double)comp / n, (double)comp / raw, ((t1 - t0) - (g1 - g0)) / n);
        }
    }
    /* zlib's documented memory for deflate: (1 << (windowBits + 2)) + (1 << (memLevel + 9)). */
    printf("{\"deflate_state_bytes_w15_m8\":%d,\"deflate_state_bytes_w9_m1\":%d}\n",
           (1 << 17) + (1 << 17), (1 << 11) + (1 << 10));
    return 0;
}
