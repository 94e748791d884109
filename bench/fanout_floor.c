/* fanout_floor: the kernel's floor for essd's fan-out work (issue 15). It
 * does over loopback TCP exactly what essd does per client and nothing else:
 * the same pre-built block of K frames (one buffer, shared by all clients)
 * written to each of N connected sockets with one send() per socket per
 * batch, non-blocking, waiting for EPOLLOUT only when a socket's buffer is
 * full. No WebSocket, no broker, no event loop library: what is left is the
 * system calls, the copy into the socket buffers and the TCP/loopback path.
 *
 * One process makes a listener on 127.0.0.1 and N connections to it, then
 * forks: the child is the reader (all N client ends, epoll, draining as fast
 * as it can, like a load client) and the parent is the sender (all N server
 * ends, TCP_NODELAY as essd sets). The sender's CPU (getrusage RUSAGE_SELF of
 * its own process, so the reader's is not in it) is taken around the send
 * phase only. When all is sent the sender closes its ends; the reader counts
 * bytes per connection until EOF and reports through a pipe. Bounded: the
 * reader and the sender give up after --timeout seconds.
 *
 * Build: cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -o fanout_floor bench/fanout_floor.c
 * (bench/run builds it into build-bench/bench/). Usage:
 *   fanout_floor [--clients N] [--batch K] [--frames F] [--size B] [--timeout S]
 * Output: one JSON line on stdout. It owns nothing of essd. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    long clients, batch, frames, size, timeout_s;
} opts_t;

typedef struct { /* what the reader sends back through the pipe */
    int ok;
    uint64_t bytes, short_conns, reads, waits, nvcsw;
    double cpu_user_s, cpu_sys_s, wall_s;
} reader_report_t;

static void die(const char *m)
{
    fprintf(stderr, "fanout_floor: %s: %s\n", m, strerror(errno));
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* CPU seconds so far, and voluntary and involuntary context switches. */
static void cpu_now(double *user, double *sys, uint64_t csw[2])
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage");
    *user = tv_s(ru.ru_utime);
    *sys = tv_s(ru.ru_stime);
    csw[0] = (uint64_t)ru.ru_nvcsw;
    csw[1] = (uint64_t)ru.ru_nivcsw;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl");
}

static long parse_long(const char *name, const char *s, long lo, long hi)
{
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "fanout_floor: %s wants an integer in [%ld, %ld]\n", name, lo, hi);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: fanout_floor [--clients N] [--batch K] [--frames F per client] "
                    "[--size B] [--timeout S]\n");
    exit(2);
}

/* The reader: drain every client end until EOF, count bytes per connection. */
static void reader(const opts_t *o, int *fds, int report_fd)
{
    reader_report_t rep = {0};
    uint64_t expect = (uint64_t)o->frames * (uint64_t)o->size;
    uint64_t *got = calloc((size_t)o->clients, sizeof *got);
    size_t bufsz = 256 * 1024;
    char *buf = malloc(bufsz);
    int ep = epoll_create1(0);
    if (!got || !buf || ep < 0)
        die("reader setup");
    for (long i = 0; i < o->clients; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            die("reader epoll_ctl");
    }
    double u0, s0;
    uint64_t c0[2], c1[2];
    cpu_now(&u0, &s0, c0);
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)o->timeout_s * 1000000000;
    long open = o->clients;
    struct epoll_event evs[256];
    while (open > 0 && now_ns() < deadline) {
        int n = epoll_wait(ep, evs, 256, 1000);
        rep.waits++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("reader epoll_wait");
        }
        for (int j = 0; j < n; j++) {
            long i = (long)evs[j].data.u64;
            if (fds[i] < 0)
                continue;
            ssize_t r = recv(fds[i], buf, bufsz, 0);
            rep.reads++;
            if (r > 0) {
                got[i] += (uint64_t)r;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(fds[i]); /* also removes it from the epoll set */
                fds[i] = -1;
                open--;
            }
        }
    }
    rep.wall_s = (double)(now_ns() - t0) / 1e9;
    double u1, s1;
    cpu_now(&u1, &s1, c1);
    rep.nvcsw = c1[0] - c0[0];
    rep.cpu_user_s = u1 - u0;
    rep.cpu_sys_s = s1 - s0;
    for (long i = 0; i < o->clients; i++) {
        rep.bytes += got[i];
        if (got[i] != expect)
            rep.short_conns++;
        if (fds[i] >= 0)
            close(fds[i]);
    }
    rep.ok = open == 0 && rep.short_conns == 0;
    ssize_t w = write(report_fd, &rep, sizeof rep);
    (void)w;
    close(report_fd);
    close(ep);
    free(buf);
    free(got);
    exit(rep.ok ? 0 : 1);
}

int main(int argc, char **argv)
{
    opts_t o = {.clients = 1000, .batch = 26, .frames = 5000, .size = 288, .timeout_s = 120};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--clients"))
            o.clients = parse_long(a, v, 1, 100000);
        else if (!strcmp(a, "--batch"))
            o.batch = parse_long(a, v, 1, 100000);
        else if (!strcmp(a, "--frames"))
            o.frames = parse_long(a, v, 1, 100000000);
        else if (!strcmp(a, "--size"))
            o.size = parse_long(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--timeout"))
            o.timeout_s = parse_long(a, v, 1, 3600);
        else
            usage();
        i++;
    }
    if ((uint64_t)o.batch * (uint64_t)o.size > (64u << 20)) {
        fprintf(stderr, "fanout_floor: --batch x --size above 64 MiB\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* 2N + a few descriptors before the fork. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(2 * o.clients + 16)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)(2 * o.clients + 16)) {
            fprintf(stderr, "fanout_floor: %ld clients need %ld descriptors (ulimit -n)\n",
                    o.clients, 2 * o.clients + 16);
            return 2;
        }
    }

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 128) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) != 0)
        die("listener");
    int *srv = malloc((size_t)o.clients * sizeof *srv);
    int *cli = malloc((size_t)o.clients * sizeof *cli);
    if (!srv || !cli)
        die("malloc");
    for (long i = 0; i < o.clients; i++) { /* connect one, accept it: the queue never fills */
        cli[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cli[i] < 0 || connect(cli[i], (struct sockaddr *)&sa, sizeof sa) != 0)
            die("connect");
        srv[i] = accept(ls, NULL, NULL);
        if (srv[i] < 0)
            die("accept");
        int one = 1;
        setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_nonblock(srv[i]);
        set_nonblock(cli[i]);
    }
    close(ls);

    int pp[2];
    if (pipe(pp) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(pp[0]);
        for (long i = 0; i < o.clients; i++)
            close(srv[i]);
        reader(&o, cli, pp[1]); /* exits */
    }
    close(pp[1]);
    for (long i = 0; i < o.clients; i++)
        close(cli[i]);

    /* The sender. One buffer of K frames serves every client, as essd's one
     * framed copy does. Each socket is registered once, edge-triggered for
     * EPOLLOUT, so no epoll_ctl happens while sending: the floor. */
    size_t blk = (size_t)o.batch * (size_t)o.size;
    char *block = malloc(blk);
    size_t *left = calloc((size_t)o.clients, sizeof *left); /* bytes of this round still to send */
    int ep = epoll_create1(0);
    if (!block || !left || ep < 0)
        die("sender setup");
    for (long f = 0; f < o.batch; f++) { /* a text frame of --size bytes: 0x81, then payload */
        char *p = block + (size_t)f * (size_t)o.size;
        memset(p, 'x', (size_t)o.size);
        p[0] = (char)0x81;
    }
    for (long i = 0; i < o.clients; i++) {
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, srv[i], &ev) != 0)
            die("sender epoll_ctl");
    }
    uint64_t sends = 0, eagain = 0, waits = 0, partial = 0;
    long rounds = (o.frames + o.batch - 1) / o.batch;
    struct epoll_event evs[256];
    double u0, s0;
    uint64_t c0[2], c1[2];
    cpu_now(&u0, &s0, c0);
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)o.timeout_s * 1000000000;
    int failed = 0;
    for (long r = 0; r < rounds && !failed; r++) {
        long k = r == rounds - 1 ? o.frames - r * o.batch : o.batch;
        size_t len = (size_t)k * (size_t)o.size;
        long pending = 0;
        for (long i = 0; i < o.clients; i++) {
            ssize_t w = send(srv[i], block, len, MSG_NOSIGNAL);
            sends++;
            if (w == (ssize_t)len) {
                left[i] = 0;
                continue;
            }
            if (w < 0 && errno != EAGAIN) {
                fprintf(stderr, "fanout_floor: send: %s\n", strerror(errno));
                failed = 1;
                break;
            }
            if (w < 0)
                eagain++, w = 0;
            else
                partial++;
            left[i] = len - (size_t)w;
            pending++;
        }
        /* Wait for room on the sockets that were full, as a server would. */
        while (pending > 0 && !failed) {
            if (now_ns() > deadline) {
                fprintf(stderr, "fanout_floor: sender timed out\n");
                failed = 1;
                break;
            }
            int n = epoll_wait(ep, evs, 256, 1000);
            waits++;
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                die("sender epoll_wait");
            }
            for (int j = 0; j < n && !failed; j++) {
                long i = (long)evs[j].data.u64;
                while (left[i] > 0) { /* edge-triggered: until EAGAIN or done */
                    ssize_t w = send(srv[i], block + (len - left[i]), left[i], MSG_NOSIGNAL);
                    sends++;
                    if (w > 0) {
                        left[i] -= (size_t)w;
                        if (left[i] == 0)
                            pending--;
                        else
                            partial++;
                        continue;
                    }
                    if (errno == EAGAIN) {
                        eagain++;
                        break;
                    }
                    if (errno == EINTR)
                        continue;
                    fprintf(stderr, "fanout_floor: send: %s\n", strerror(errno));
                    failed = 1;
                    break;
                }
            }
        }
    }
    double u1, s1;
    cpu_now(&u1, &s1, c1);
    int64_t t1 = now_ns();
    for (long i = 0; i < o.clients; i++)
        close(srv[i]);
    close(ep);

    reader_report_t rep = {0};
    ssize_t got = read(pp[0], &rep, sizeof rep);
    close(pp[0]);
    int st = 0;
    if (failed)
        kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    int64_t t2 = now_ns();
    int ok =
        !failed && got == (ssize_t)sizeof rep && rep.ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;

    double frames = (double)o.clients * (double)o.frames;
    double cpu = (u1 - u0) + (s1 - s0);
    double ld[3] = {0, 0, 0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &ld[0], &ld[1], &ld[2]) != 3)
            ld[0] = ld[1] = ld[2] = -1;
        fclose(la);
    }
    printf("{\"ok\":%s,\"clients\":%ld,\"batch\":%ld,\"frames_per_client\":%ld,\"size\":%ld,"
           "\"frames\":%.0f,\"sends\":%" PRIu64 ",\"frames_per_send\":%.2f,\"eagain\":%" PRIu64
           ",\"partial\":%" PRIu64 ",\"epoll_waits\":%" PRIu64 ","
           "\"sender_nvcsw\":%" PRIu64 ",\"sender_nivcsw\":%" PRIu64 ","
           "\"sender_cpu_user_s\":%.3f,\"sender_cpu_sys_s\":%.3f,\"sender_cpu_us_per_frame\":%.4f,"
           "\"send_wall_s\":%.3f,\"total_wall_s\":%.3f,\"frames_per_s\":%.0f,"
           "\"reader_cpu_s\":%.3f,\"reader_bytes\":%" PRIu64 ",\"reader_short_conns\":%" PRIu64
           ",\"reader_reads\":%" PRIu64 ",\"reader_epoll_waits\":%" PRIu64
           ",\"reader_nvcsw\":%" PRIu64 ",\"loadavg\":[%.2f,%.2f,%.2f]}\n",
           ok ? "true" : "false", o.clients, o.batch, o.frames, o.size, frames, sends,
           sends ? frames / (double)sends : 0.0, eagain, partial, waits, c1[0] - c0[0],
           c1[1] - c0[1], u1 - u0, s1 - s0, cpu / frames * 1e6, (double)(t1 - t0) / 1e9,
           (double)(t2 - t0) / 1e9, frames / ((double)(t2 - t0) / 1e9),
           rep.cpu_user_s + rep.cpu_sys_s, rep.bytes, rep.short_conns, rep.reads, rep.waits,
           rep.nvcsw, ld[0], ld[1], ld[2]);
    free(block);
    free(left);
    free(srv);
    free(cli);
    return ok ? 0 : 1;
}
