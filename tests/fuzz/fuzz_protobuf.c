/*
 * Fuzz target for the protobuf payload renderer: the first input byte
 * picks a message type (each known type, or the test-only
 * esstest.Everything that has every field kind), the rest are the payload
 * bytes. Renders the text form, checks it is NUL-terminated printable
 * ASCII and that a failure leaves the buffer as it was, then builds the Lua
 * table on one long-lived lua_State and checks the stack is balanced.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ess.h"
#include "esstest.pb-c.h"
#include "proto/protobuf.h"
#include "script/protobuf_lua.h"

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (L == NULL)
        L = luaL_newstate();
    size_t n_types = ess_protobuf_type_count();
    size_t pick = data[0] % (n_types + 1);
    const ProtobufCMessageDescriptor *d =
        pick < n_types ? ess_protobuf_type_at(pick) : &esstest__everything__descriptor;
    const uint8_t *p = data + 1;
    size_t len = size - 1;

    ess_buf_t out = {0};
    ess_buf_append(&out, "<", 1);
    int rc;
    if (pick < n_types) {
        const char *name = ess_protobuf_name(d);
        rc = ess_protobuf_to_text(name, strlen(name), p, len, &out);
    } else {
        rc = ess_protobuf_render(d, p, len, &out);
    }
    if (rc != ESS_OK && rc != ESS_EINVAL)
        abort();
    if (rc != ESS_OK && (out.len != 1 || strcmp(out.data, "<") != 0))
        abort();
    if (strlen(out.data) != out.len)
        abort();
    for (size_t i = 0; i < out.len; i++) {
        if (out.data[i] < 32 || out.data[i] > 126)
            abort();
    }
    ess_buf_free(&out);

    int top = lua_gettop(L);
    int lrc = ess_protobuf_push_lua_desc(L, d, p, len);
    if ((lrc == ESS_OK) != (rc == ESS_OK))
        abort();
    if (lua_gettop(L) != top + (lrc == ESS_OK ? 1 : 0))
        abort();
    lua_settop(L, top);
    if (size % 64 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
