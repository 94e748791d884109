/*
 * The Lua face of protobuf payloads: a decoded message as a Lua table, and
 * the ess.protobuf host functions (decode, text) that hooks call. The codec
 * itself (types, unpacking, the text form) is core/proto/protobuf.h's; this
 * module only builds Lua values from it. Owns no state.
 */
#ifndef ESS_SCRIPT_PROTOBUF_LUA_H
#define ESS_SCRIPT_PROTOBUF_LUA_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <protobuf-c/protobuf-c.h>

/**
 * Push a Lua table for the decoded message (field name -> value, nested
 * tables for messages, 1-based arrays for repeated fields; see
 * docs/protobuf.md), or return an error without pushing: ESS_ENOTFOUND
 * (unknown type), ESS_EINVAL (bytes do not decode), ESS_ENOMEM (Lua ran
 * out of memory). Never raises a Lua error.
 */
int ess_protobuf_push_lua(lua_State *L, const char *type, size_t type_len, const uint8_t *p,
                          size_t len);

/** As ess_protobuf_push_lua for any descriptor. */
int ess_protobuf_push_lua_desc(lua_State *L, const ProtobufCMessageDescriptor *d, const uint8_t *p,
                               size_t len);

/**
 * Lua C functions for the host table, ready to register:
 * ess.protobuf.decode(type, bytes) -> table | nil, err
 * ess.protobuf.text(type, bytes)   -> "name|fields..." | nil, err
 * Both raise only for arguments that are not strings.
 */
int ess_protobuf_lua_decode(lua_State *L);
int ess_protobuf_lua_text(lua_State *L);

/** Push a new table {decode = ..., text = ...} (for ess.protobuf). */
void ess_protobuf_lua_open(lua_State *L);

#endif
