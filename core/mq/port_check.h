/*
 * A reachability check of one TCP port: resolve the host, connect, close.
 * Used by readiness for the AMQP port of broker.url when the stream
 * protocol connects to broker.stream_port instead (broker.version 2), so
 * that a URL whose port answers nothing is noticed. No protocol is
 * spoken: the broker sees a connection that closes before its handshake,
 * as from a load balancer's health check.
 */
#ifndef ESS_MQ_PORT_CHECK_H
#define ESS_MQ_PORT_CHECK_H

#include <stdint.h>
#include <uv.h>

typedef struct {
    const char *what; /* borrowed label for the log lines, e.g. "the AMQP port of broker.url" */
    int state;        /* -1 not checked yet, 0 nothing accepts connections, 1 accepts */
    int inflight;     /* a check is running */
    uint64_t done_ms; /* uv_now() when the last check finished */
    char where[280];  /* host:port of the last check */
    char error[160];  /* why the last check failed */
} ess_port_check_t;

/**
 * Start one check of host:port unless one is already running. The result
 * is written to st when the check ends (within timeout_ms, name resolution
 * included); a change of state is logged (warn when it fails). st must
 * outlive the check: keep it static. The check holds the loop alive until
 * it ends. ESS_OK, or ESS_ESTATE when a check is already running.
 */
int ess_port_check_start(uv_loop_t *loop, const char *host, int port, int timeout_ms,
                         ess_port_check_t *st);

#endif
