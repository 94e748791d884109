/*
 * AMQP URL parsing: amqp://user:pass@host:port/vhost into its parts, with
 * percent-decoding and the usual defaults. Pure; no I/O.
 */
#ifndef ESS_MQ_URL_H
#define ESS_MQ_URL_H

typedef struct {
    char *user;  /* default "guest" */
    char *pass;  /* default "guest" */
    char *host;  /* required; brackets of an IPv6 literal removed */
    int port;    /* default 5672 (5671 for amqps) */
    char *vhost; /* path without its leading '/', "/" when empty */
    int tls;     /* 1 for amqps:// */
} ess_url_t;

/**
 * Parse s into out (zeroed first). Returns ESS_OK, or ESS_EINVAL for a
 * missing or unknown scheme, an empty host, a bad port, a bad percent
 * escape or a decoded NUL byte; out is then left empty. On success the
 * strings are owned by out: release with ess_url_free.
 */
int ess_url_parse(const char *s, ess_url_t *out);

void ess_url_free(ess_url_t *u);

#endif
