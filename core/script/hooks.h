/*
 * The per-message hooks operators write in Lua (SPEC.md "Lua"): enrich
 * and route. C calls them through here; a hook error never loses a
 * message or a connection.
 */
#ifndef ESS_HOOKS_H
#define ESS_HOOKS_H

#include <stddef.h>
#include <stdint.h>

/* The VM stays opaque here: callers of the hooks need not compile against Lua. */
typedef struct ess_vm_s ess_vm_t;

typedef struct {
    const uint8_t *body;
    size_t len;
    uint64_t offset;
    int64_t timestamp_ms;
    int is_text;              /* body is valid UTF-8 */
    const uint8_t *app_props; /* raw AMQP application-properties, or NULL */
    size_t app_props_len;
    const uint8_t *raw; /* protobuf: the original bytes (body is their text form) */
    size_t raw_len;
    const char *protobuf_type; /* protobuf: the message type, or NULL */
    size_t protobuf_type_len;
} ess_hook_msg_t;

/* A session's cached view of its event stream in one VM. */
typedef struct {
    int64_t id;
    const char *uuid;
    const char *routing_key;
    int ref; /* the es table in the VM of generation gen, or LUA_NOREF */
    uint64_t gen;
} ess_hook_es_t;

/* Receives the frame to send for msg (which carries its offset); data is
 * borrowed for the call only. */
typedef void (*ess_hook_emit_fn)(void *ud, const ess_hook_msg_t *msg, const uint8_t *data,
                                 size_t len);

/**
 * Load the configured enrich and route hooks and the `ess` host table into
 * vm. ESS_OK, or ESS_ESCRIPT with the module, file and line in err.
 */
int ess_hooks_init(ess_vm_t *vm, const char *enrich_module, const char *route_module, char *err,
                   size_t errlen);

/**
 * Run the enrich hook: emit() is called once with the frame, or not at all
 * when the hook returns nil (skip). On a Lua error the original body is
 * emitted, the error logged and counted, and ESS_ESCRIPT returned.
 */
int ess_hooks_enrich(ess_vm_t *vm, ess_hook_es_t *es, const ess_hook_msg_t *msg,
                     ess_hook_emit_fn emit, void *ud);

typedef struct {
    int classic;           /* 0: stream mode, 1: classic queue */
    char stream[256];      /* stream mode: the stream name */
    char exchange[256];    /* classic mode */
    char routing_key[256]; /* classic mode */
} ess_route_t;

/** Run the route hook for an event stream. ESS_OK or ESS_ESCRIPT (logged). */
int ess_hooks_route(ess_vm_t *vm, ess_hook_es_t *es, ess_route_t *out);

/** Enrich calls in a row that raised (0 after any success). */
extern uint64_t ess_hooks_failing_streak;

/** Drop a session's cached es table (call when the session ends); vm is the live VM. */
void ess_hooks_es_release(ess_vm_t *vm, ess_hook_es_t *es);

/**
 * Run each hook once on sample messages and a sample event stream, so a
 * reload rejects a script that fails at run time. ESS_OK or ESS_ESCRIPT with err.
 */
int ess_hooks_selftest(ess_vm_t *vm, char *err, size_t errlen);

#endif
