-- Shared setup for the busted specs (`local helpers = require "helpers"`;
-- .busted puts spec/ on package.path): a host table that records what a
-- hook logs and counts, hooks loaded through ess.sandbox from the real Lua
-- root with their options checked as core/script/hooks.c checks them, a
-- msg table that builds msg.properties lazily as the host does, and
-- temporary files and Lua roots. Specs keep their own cases; only setup
-- that more than one spec needs lives here.

local options = require "ess.options"
local sandbox = require "ess.sandbox"

local M = {}

-- The Lua root of the source tree (busted runs from the repository root).
M.ROOT = "lua"

-- The event stream the examples are called with.
M.ES = { id = 3, uuid = "AAAAAAAAAAAAAAAAAAAAAA", routing_key = "orders" }

-- The host's self-test sample bodies (core/script/hooks.c).
M.SELFTEST_BODIES = {
    '{"message_type":"MerchantProcessingCharge","ess_selftest":true}',
    'accountserver.MerchantProcessingCharge|timestamp: "2025-04-30T13:33:00Z"',
}

--- A host table (the `ess` global of hooks) whose log and count calls are
--- recorded as { "log", level, msg } / { "count", name, by } in `calls`.
function M.host_recorder()
    local calls = {}
    return {
        log = function(level, msg) calls[#calls + 1] = { "log", level, msg } end,
        count = function(name, by) calls[#calls + 1] = { "count", name, by or 1 } end,
    }, calls
end

--- Loads hook module `name` through the sandbox from M.ROOT (or `root`), as
--- the gateway does; raises when it does not load.
function M.load_hook(name, host, root)
    return assert(sandbox.load(name, root or M.ROOT, host or M.host_recorder()))
end

--- Loads hook module `name` and checks `given` (the YAML options, or nil)
--- against its schema as the host does for lua.enrich_options /
--- lua.route_options. Returns the module and the conf table, or raises
--- with the host's error message.
function M.load_with_conf(name, given, host, path)
    local mod = M.load_hook(name, host)
    local conf, err = options.validate(name, mod.schema, given, path or "lua.enrich_options")
    if not conf then
        error(err, 2)
    end
    return mod, conf
end

--- A msg table like the host's: `properties` is built on first read and
--- the reads are counted in reads.n.
function M.msg_of(body, props, offset)
    local reads = { n = 0 }
    local msg = setmetatable({ body = body, offset = offset or 42, timestamp = 1746019980000,
        is_text = true }, {
        __index = function(t, k)
            if k == "properties" then
                reads.n = reads.n + 1
                local p = props or {}
                rawset(t, "properties", p)
                return p
            end
        end,
    })
    return msg, reads
end

--- Writes text to a new temporary file and returns its path.
function M.tmpfile(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
end

--- Reads a whole file (raises when it cannot).
function M.read(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("*a")
    f:close()
    return text
end

return M
