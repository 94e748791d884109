/*
 * Lua tables from protobuf payloads and the ess.protobuf host functions
 * (moved here from core/proto/ so that the codec knows nothing of Lua).
 * Every table is built under lua_pcall, so a Lua memory error cannot leak
 * the unpacked message. Owns no state.
 */
#include "script/protobuf_lua.h"
#include "ess.h"
#include "proto/protobuf.h"

#include <inttypes.h>
#include <stdio.h>

#include <lauxlib.h>

/* The generated types nest at most two deep; this guards a future schema. */
#define MAX_DEPTH 32

/* LuaJIT numbers are doubles: a 64-bit integer beyond 2^53 would silently
 * change, so it is pushed as its decimal string instead. */
#define EXACT_LIMIT (INT64_C(1) << 53)

static void push_i64(lua_State *L, int64_t v)
{
    if (v <= EXACT_LIMIT && v >= -EXACT_LIMIT) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%" PRId64, v);
        lua_pushstring(L, tmp);
    }
}

static void push_u64(lua_State *L, uint64_t v)
{
    if (v <= (uint64_t)EXACT_LIMIT) {
        lua_pushnumber(L, (lua_Number)v);
    } else {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%" PRIu64, v);
        lua_pushstring(L, tmp);
    }
}

static void push_message(lua_State *L, const ProtobufCMessageDescriptor *d, const void *m,
                         int depth);

static void push_value(lua_State *L, const ProtobufCFieldDescriptor *fd, const void *v, int depth)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: lua_pushnumber(L, *(const int32_t *)v); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: lua_pushnumber(L, *(const uint32_t *)v); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: push_i64(L, *(const int64_t *)v); break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: push_u64(L, *(const uint64_t *)v); break;
    case PROTOBUF_C_TYPE_FLOAT: lua_pushnumber(L, *(const float *)v); break;
    case PROTOBUF_C_TYPE_DOUBLE: lua_pushnumber(L, *(const double *)v); break;
    case PROTOBUF_C_TYPE_BOOL: lua_pushboolean(L, *(const protobuf_c_boolean *)v != 0); break;
    case PROTOBUF_C_TYPE_ENUM: {
        int e = *(const int *)v;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, e);
        if (ev != NULL)
            lua_pushstring(L, ev->name);
        else
            lua_pushnumber(L, e);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        lua_pushstring(L, s ? s : "");
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = v;
        lua_pushlstring(L, b->len ? (const char *)b->data : "", b->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
        if (sub != NULL && depth < MAX_DEPTH)
            push_message(L, sub->descriptor, sub, depth + 1);
        else
            lua_newtable(L);
        break;
    }
    }
}

/* Every singular scalar field is set, defaults included (proto3 cannot
 * tell a default from an absent value, and scripts should not need nil
 * checks); an absent message field or an unset oneof member is nil;
 * repeated fields are arrays, possibly empty. */
static void push_message(lua_State *L, const ProtobufCMessageDescriptor *d, const void *m,
                         int depth)
{
    const char *base = m;
    luaL_checkstack(L, 4, "protobuf message nests too deeply");
    lua_createtable(L, 0, (int)d->n_fields);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(const void *)(base + fd->quantifier_offset);
            const char *arr = *(char *const *)(const void *)(base + fd->offset);
            size_t es = ess_protobuf_elem_size(fd->type);
            lua_createtable(L, n < 1000000 ? (int)n : 0, 0);
            for (size_t k = 0; k < n && arr != NULL; k++) {
                push_value(L, fd, arr + k * es, depth);
                lua_rawseti(L, -2, (int)(k + 1));
            }
        } else if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                   fd->type == PROTOBUF_C_TYPE_MESSAGE || fd->label == PROTOBUF_C_LABEL_OPTIONAL) {
            if (!ess_protobuf_is_present(fd, m))
                continue;
            push_value(L, fd, base + fd->offset, depth);
        } else {
            push_value(L, fd, base + fd->offset, depth);
        }
        lua_setfield(L, -2, fd->name);
    }
}

typedef struct {
    const ProtobufCMessageDescriptor *d;
    const ProtobufCMessage *m;
} build_t;

static int build_table(lua_State *L)
{
    const build_t *b = lua_touserdata(L, 1);
    push_message(L, b->d, b->m, 0);
    return 1;
}

int ess_protobuf_push_lua_desc(lua_State *L, const ProtobufCMessageDescriptor *d, const uint8_t *p,
                               size_t len)
{
    if (L == NULL || d == NULL || (p == NULL && len > 0))
        return ESS_EINVAL;
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, p ? p : empty);
    if (m == NULL)
        return ESS_EINVAL;
    /* Build the table under lua_pcall so that a Lua memory error cannot
     * jump past the free below. */
    build_t b = {d, m};
    int rc = ESS_OK;
    if (!lua_checkstack(L, 3)) {
        rc = ESS_ENOMEM;
        goto fail_stack;
    }
    lua_pushcfunction(L, build_table);
    lua_pushlightuserdata(L, &b);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        rc = ESS_ENOMEM;
    }
fail_stack:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int ess_protobuf_push_lua(lua_State *L, const char *type, size_t type_len, const uint8_t *p,
                          size_t len)
{
    const ProtobufCMessageDescriptor *d = ess_protobuf_find(type, type_len);
    if (d == NULL)
        return ESS_ENOTFOUND;
    return ess_protobuf_push_lua_desc(L, d, p, len);
}

static int lua_fail(lua_State *L, int rc, const char *type, size_t type_len)
{
    lua_pushnil(L);
    if (rc == ESS_ENOTFOUND)
        lua_pushfstring(L, "unknown protobuf message type '%s'", type);
    else if (rc == ESS_EINVAL)
        lua_pushfstring(L, "bytes do not decode as %s",
                        ess_protobuf_name(ess_protobuf_find(type, type_len)));
    else
        lua_pushstring(L, ess_strerror(rc));
    return 2;
}

/***
 * Decode protobuf bytes into a Lua table: field name -> value, nested
 * tables for messages, 1-based arrays for repeated fields, enums as their
 * names, 64-bit integers beyond 2^53 as decimal strings; every singular
 * scalar field is present (defaults included); an unset message field or
 * oneof member is nil. See [protobuf.md](protobuf.md).
 * @function ess.protobuf.decode
 * @tparam string type a known message type, any spelling ess accepts
 * (`"MerchantProcessingCharge"`, `"accountserver.MerchantProcessingCharge"`,
 * the full protobuf name), any case
 * @tparam string bytes the encoded message (for example `msg.raw`)
 * @treturn table the decoded message
 * @return `nil` and a reason (`unknown protobuf message type 'X'`,
 * `bytes do not decode as accountserver.X`)
 * @when any time: at module load, in enrich and in route. Raises only when
 * an argument is not a string.
 * @usage
 * if msg.protobuf_type then
 *     local m = ess.protobuf.decode(msg.protobuf_type, msg.raw)
 *     if m and m.merchant_kind == "TEST" then return nil end
 * end
 */
int ess_protobuf_lua_decode(lua_State *L)
{
    size_t tl, bl;
    const char *type = luaL_checklstring(L, 1, &tl);
    const char *bytes = luaL_checklstring(L, 2, &bl);
    int rc = ess_protobuf_push_lua(L, type, tl, (const uint8_t *)bytes, bl);
    if (rc != ESS_OK)
        return lua_fail(L, rc, type, tl);
    return 1;
}

static int push_buf(lua_State *L)
{
    const ess_buf_t *b = lua_touserdata(L, 1);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/***
 * Render protobuf bytes as the one-line text form the gateway sends for a
 * protobuf message (`msg.body`): the type's name, `|`, then the fields in
 * protobuf text format on one line.
 * @function ess.protobuf.text
 * @tparam string type a known message type (as for `ess.protobuf.decode`)
 * @tparam string bytes the encoded message
 * @treturn string `"accountserver.MerchantProcessingCharge|timestamp: ..."`
 * @return `nil` and a reason, as `ess.protobuf.decode`
 * @when any time: at module load, in enrich and in route. Raises only when
 * an argument is not a string.
 * @usage local line = ess.protobuf.text("datamanager.Pod", bytes)
 */
int ess_protobuf_lua_text(lua_State *L)
{
    size_t tl, bl;
    const char *type = luaL_checklstring(L, 1, &tl);
    const char *bytes = luaL_checklstring(L, 2, &bl);
    ess_buf_t out = {0};
    int rc = ess_protobuf_to_text(type, tl, (const uint8_t *)bytes, bl, &out);
    if (rc != ESS_OK)
        goto fail_render;
    /* Copy under lua_pcall, so a Lua memory error cannot leak out.data. */
    lua_pushcfunction(L, push_buf);
    lua_pushlightuserdata(L, &out);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        rc = ESS_ENOMEM;
        goto fail_render;
    }
    ess_buf_free(&out);
    return 1;

fail_render:
    ess_buf_free(&out);
    return lua_fail(L, rc, type, tl);
}

void ess_protobuf_lua_open(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, ess_protobuf_lua_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, ess_protobuf_lua_text);
    lua_setfield(L, -2, "text");
}
