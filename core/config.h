/*
 * The validated configuration, as C needs it. The schema, defaults,
 * validation and environment overrides live in lua/ess/config.lua; this
 * struct is filled from the table it returns (script/config.c).
 */
#ifndef ESS_CONFIG_H
#define ESS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char host[256]; /* "" means every interface */
    int port;
} ess_listen_t;

typedef struct ess_config_s {
    char *path; /* the YAML file it came from, or NULL for defaults */

    ess_listen_t public_listen;
    int max_connections;
    int max_header_bytes;
    int max_frame_bytes;
    int ping_interval_s;
    int64_t outbound_budget_bytes;
    int stall_timeout_s;
    int compression; /* public.compression: negotiate permessage-deflate */

    ess_listen_t internal_listen;
    int64_t max_body_bytes;
    char *api_token; /* "" when no token is required */

    char *ingress_location;
    int ingress_secure;

    char *broker_url;
    int stream_port;
    int broker_version; /* 1 classic, 2 stream */
    char *stream_hosts; /* broker.stream_hosts joined with commas ("" = none) */
    int read_from;      /* broker.read_from: ESS_READ_REPLICA, _LEADER, _ANY */
    int load_balancer_mode;
    int heartbeat_s;
    int reconnect_min_ms;
    int reconnect_max_ms;
    int manage_streams;

    char *database_path;

    int registry_stream_backend; /* registry.backend: 0 sqlite, 1 stream */
    char *registry_stream;       /* registry.stream */
    int registry_initial_cluster_size;
    int64_t registry_max_length_bytes;
    int64_t registry_max_segment_size_bytes;
    int64_t registry_snapshot_every;
    int registry_timeout_ms;

    int log_level;
    char *log_dir;
    int64_t log_max_bytes;
    int log_keep;
    int64_t message_stats_interval;

    char *lua_path;
    char *lua_enrich;
    char *lua_route;
    char *lua_api;
    int lua_watch;
    int lua_hook_timeout_ms;
    int lua_max_memory_mb;

    int grace_s;
} ess_config_t;

/** Free every string the config owns, and the struct. NULL is fine. */
void ess_config_free(ess_config_t *cfg);

/** Parse "host:port", "[v6]:port" or ":port" into out. ESS_EINVAL when malformed. */
int ess_listen_parse(const char *s, ess_listen_t *out);

#endif
