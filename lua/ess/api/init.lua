-- ess.api: the internal REST API entry point, `handle(req, core) -> resp`.
--
-- It owns routing (the route table below is the single list of routes: the
-- OpenAPI spec is checked against it), the bearer-token check and the 404 /
-- 405 / 500 answers. Handlers live in ess.api.streams and ess.api.ops. The C
-- side owns the sockets, the body size cap (413) and request metrics, which
-- it counts from resp.route and resp.status.

local bit = require "bit"
local console = require "ess.api.console"
local ops = require "ess.api.ops"
local response = require "ess.api.response"
local streams = require "ess.api.streams"

local bor, bxor = bit.bor, bit.bxor
local byte, find, format, gmatch, match, sub = string.byte, string.find, string.format,
    string.gmatch, string.match, string.sub
local concat, sort = table.concat, table.sort

local M = {}

--- Every route: path template, handler per method, and whether it is open
-- without a token. Templates are the metric labels and the OpenAPI paths.
M.routes = {
    { path = "/event-stream/version/", methods = { GET = ops.version } },
    { path = "/event-stream/", methods = { GET = streams.list, POST = streams.create } },
    { path = "/event-stream/{id}", methods = { DELETE = streams.delete } },
    { path = "/health/live", methods = { GET = ops.live }, public = true },
    { path = "/health/ready", methods = { GET = ops.ready }, public = true },
    { path = "/metrics", methods = { GET = ops.metrics } },
    { path = "/admin/reload", methods = { POST = ops.reload } },
    { path = "/openapi.json", methods = { GET = ops.openapi } },
    -- The operator console (docs/console.md). Its page is open like /health:
    -- static files with no data; the page asks for the token.
    { path = "/admin/state", methods = { GET = console.state } },
    { path = "/admin/series", methods = { GET = console.series } },
    { path = "/admin/feed", methods = { GET = console.feed } },
    { path = "/admin/tail/{id}", methods = { GET = console.tail, DELETE = console.tail_stop } },
    { path = "/ui/", methods = { GET = console.ui }, public = true },
    { path = "/ui/{file}", methods = { GET = console.ui }, public = true },
}

local function segments(path)
    local out = {}
    for seg in gmatch(path, "[^/]+") do
        out[#out + 1] = seg
    end
    return out
end

for _, r in ipairs(M.routes) do
    r.segments = segments(r.path)
    r.params = {}
    for i, seg in ipairs(r.segments) do
        r.params[i] = match(seg, "^{(%w+)}$")
    end
end

-- Returns the params table when the path's segments fit the route.
local function match_route(r, segs)
    if #segs ~= #r.segments then
        return nil
    end
    local params = {}
    for i, seg in ipairs(r.segments) do
        local name = r.params[i]
        if name then
            params[name] = segs[i]
        elseif seg ~= segs[i] then
            return nil
        end
    end
    return params
end

-- Compares two strings in time that depends only on the longer length.
local function same_secret(a, b)
    local diff = bxor(#a, #b)
    for i = 1, math.max(#a, #b) do
        diff = bor(diff, bxor(byte(a, i) or 0, byte(b, i) or 0))
    end
    return diff == 0
end
M.same_secret = same_secret

local function authorized(req, token)
    local header = type(req.headers) == "table" and req.headers["authorization"]
    if type(header) ~= "string" then
        return false
    end
    local scheme, given = match(header, "^%s*(%a+)%s+(.-)%s*$")
    return scheme ~= nil and scheme:lower() == "bearer" and same_secret(given, token)
end

local function internal_error(core, route, err)
    if type(core) == "table" and type(core.log) == "function" then
        pcall(core.log, "error", format("%s failed: %s", route, tostring(err)))
    end
    local resp = response.detail(500, "Internal Server Error")
    resp.route = route
    return resp
end

local function dispatch(req, core)
    local path = type(req.path) == "string" and req.path or ""
    local q = find(path, "?", 1, true)
    if q then
        path = sub(path, 1, q - 1)
    end
    local method = type(req.method) == "string" and req.method or ""
    local segs = segments(path)

    local found, allowed, params
    for _, r in ipairs(M.routes) do
        local p = match_route(r, segs)
        if p then
            allowed = allowed or {}
            found = found or r
            if r.methods[method] then
                found, params = r, p
                break
            end
            for m in pairs(r.methods) do
                allowed[#allowed + 1] = m
            end
        end
    end
    local label = found and found.path or "unmatched"

    local cfg = type(core.config) == "table" and core.config.internal or nil
    local token = cfg and cfg.api_token or ""
    local open = segs[1] == "health" or (found ~= nil and found.public and params ~= nil)
    if token ~= "" and not open and not authorized(req, token) then
        return response.detail(401, "Not authenticated", { ["WWW-Authenticate"] = "Bearer" }),
            label
    end
    if not found then
        return response.detail(404, "Not Found"), label
    end
    if not params then
        sort(allowed)
        return response.detail(405, "Method Not Allowed", { Allow = concat(allowed, ", ") }),
            label
    end
    local handler = found.methods[method]
    local ok, resp = xpcall(function()
        return handler(req, core, params)
    end, debug.traceback)
    if not ok or type(resp) ~= "table" then
        return internal_error(core, label, resp), label
    end
    return resp, label
end

--- Answers one internal-API request; never raises for any request.
-- @param req {method, path, query, body, headers (lowercased names)}
-- @param core the C side's functions and config (see docs/api.md); core.log adds "api: "
-- @return {status, body, content_type, headers, route}
function M.handle(req, core)
    if type(req) ~= "table" or type(core) ~= "table" then
        return internal_error(core, "unmatched", "handle() needs a request and a core table")
    end
    local ok, resp, label = pcall(dispatch, req, core)
    if not ok then
        return internal_error(core, "unmatched", resp)
    end
    resp.route = label
    resp.content_type = resp.content_type or "application/json"
    return resp
end

return M
