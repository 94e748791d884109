-- ess.api.console: the operator console's routes (docs/console.md): the page
-- (GET /ui/), the state (GET /admin/state), the time series (GET
-- /admin/series), the live feed (GET /admin/feed; C streams it once this
-- answers 200) and the Tail of one event stream (GET and DELETE
-- /admin/tail/{id}).
--
-- It checks the query parameters and shapes what C reports
-- (core.console_state, console_series, console_tail, console_lua) into
-- responses; the state of sessions is built in C (gateway/console.c), so a
-- request costs the same with 5,000 connections whatever this module does.
-- It adds the Lua part itself: the generation, the modules and their files,
-- the last reload. It caches the page's files and the module list per VM.

local json = require "ess.api.json"
local response = require "ess.api.response"

local byte, char, find, format, gmatch, gsub, match, sub = string.byte, string.char,
    string.find, string.format, string.gmatch, string.gsub, string.match, string.sub
local sort = table.sort

local M = {}

local SORTS = { id = true, lag = true, rate = true, connected = true, routing_key = true,
    stalls = true, created = true }
local MAX_LIMIT = 500

--- The query string as a table (the last of a repeated name wins).
local function params_of(query)
    local out = {}
    if type(query) ~= "string" then
        return out
    end
    for pair in gmatch(query, "[^&]+") do
        local k, v = match(pair, "^([^=]*)=?(.*)$")
        v = gsub(gsub(v, "+", " "), "%%(%x%x)", function(h)
            return char(tonumber(h, 16))
        end)
        out[k] = v
    end
    return out
end
M.params_of = params_of

local function bad(name, msg, kind)
    return response.invalid(response.error_item({ "query", name }, msg, kind))
end

-- A non-negative integer parameter within [lo, hi], or nil and a 422.
local function int_param(p, name, default, lo, hi)
    local v = p[name]
    if v == nil or v == "" then
        return default
    end
    if not match(v, "^%d+$") or #v > 15 then
        return nil, bad(name, "value is not a valid integer", "type_error.integer")
    end
    local n = tonumber(v)
    if n < lo or n > hi then
        return nil, bad(name, format("ensure this value is between %d and %d", lo, hi),
            "value_error.number.not_in_range")
    end
    return n
end

local modules_cache

-- The API modules this VM loaded and the configured hook modules, with
-- their files under the Lua root.
local function modules(info)
    if modules_cache then
        return modules_cache
    end
    local root = tostring(info.lua_path or "")
    local path = root .. "/?.lua;" .. root .. "/?/init.lua"
    local names = {}
    for name in pairs(package.loaded) do
        if type(name) == "string" and find(name, "^ess%.") then
            names[#names + 1] = name
        end
    end
    sort(names)
    local out = {}
    for _, hook in ipairs({ "enrich", "route" }) do
        local name = info[hook .. "_module"]
        if type(name) == "string" then
            out[#out + 1] = json.object("name", name, "role", hook, "file",
                package.searchpath(name, path) or json.null)
        end
    end
    for _, name in ipairs(names) do
        local file = package.searchpath(name, path)
        if file then
            out[#out + 1] = json.object("name", name, "role", "api", "file", file)
        end
    end
    modules_cache = json.array(out)
    return modules_cache
end

--- The Lua part of the state: generation, modules, last reload, hook errors.
function M.lua_state(core)
    local info = core.console_lua()
    local last = info.last_reload
    if type(last) == "table" then
        last = json.object("at", last.at, "trigger", last.trigger, "status", last.status,
            "generation", last.generation, "error", last.error)
    end
    return json.object("generation", info.generation, "lua_path", info.lua_path,
        "modules", modules(info),
        "hook_errors", json.object("enrich", info.enrich_errors, "route", info.route_errors),
        "enrich_failing_streak", info.failing_streak,
        "last_reload", last or json.null)
end

--- GET /admin/state?offset=&limit=&sort=&order=&filter=&live=
function M.state(req, core)
    local p = params_of(req.query)
    local offset, err = int_param(p, "offset", 0, 0, 1e15)
    if not offset then
        return err
    end
    local limit
    limit, err = int_param(p, "limit", 50, 0, MAX_LIMIT)
    if not limit then
        return err
    end
    local sort_by = p.sort or "id"
    if not SORTS[sort_by] then
        return bad("sort", "unknown sort key", "value_error.enum")
    end
    local order = p.order or (sort_by == "id" and "asc" or "desc")
    if order ~= "asc" and order ~= "desc" then
        return bad("order", "must be asc or desc", "value_error.enum")
    end
    local filter = p.filter or ""
    if #filter > 200 then
        return bad("filter", "ensure this value has at most 200 characters",
            "value_error.any_str.max_length")
    end
    local live = p.live == "1" or p.live == "true"
    local body, cerr = core.console_state({ offset = offset, limit = limit, sort = sort_by,
        desc = order == "desc" and 1 or 0, filter = filter, live = live and 1 or 0 })
    if not body then
        core.log("error", "console state: " .. tostring(cerr))
        return response.detail(503, "State unavailable: " .. tostring(cerr))
    end
    -- C's object, with the Lua part added as its last key.
    body = sub(body, 1, -2) .. ',"lua":' .. json.encode(M.lua_state(core)) .. "}"
    return { status = 200, body = body, content_type = "application/json",
        headers = { ["Cache-Control"] = "no-store" } }
end

--- GET /admin/series?seconds=: the last 15 minutes (or fewer) of the totals.
function M.series(req, core)
    local p = params_of(req.query)
    local seconds, err = int_param(p, "seconds", 900, 1, 900)
    if not seconds then
        return err
    end
    return { status = 200, body = core.console_series(seconds), content_type = "application/json",
        headers = { ["Cache-Control"] = "no-store" } }
end

--- GET /admin/feed: Server-Sent Events; C takes the connection over after this 200.
function M.feed()
    return { status = 200, body = "", content_type = "text/event-stream" }
end

local function event_stream_id(params)
    local raw = params.id or ""
    if not match(raw, "^%+?%d+$") or #raw > 16 then
        return nil, response.invalid(response.error_item({ "path", "id" },
            "value is not a valid integer", "type_error.integer"))
    end
    return tonumber(raw)
end

local function tail_answer(core, id, after, stop)
    local body, err = core.console_tail(id, after, stop)
    if body then
        return { status = 200, body = body, content_type = "application/json",
            headers = { ["Cache-Control"] = "no-store" } }
    end
    if err == "not_found" then
        return response.detail(404, format("EventStream %d has no live client", id))
    end
    if err == "too_many" then
        return response.detail(503, "Too many Tail watches at once; stop one first")
    end
    return response.detail(503, "Tail unavailable: " .. tostring(err))
end

--- GET /admin/tail/{id}?after=N: start or keep watching; the frames after N.
function M.tail(req, core, params)
    local id, err = event_stream_id(params)
    if not id then
        return err
    end
    local after
    after, err = int_param(params_of(req.query), "after", 0, 0, 1e15)
    if not after then
        return err
    end
    return tail_answer(core, id, after, false)
end

--- DELETE /admin/tail/{id}: stop watching (the ring is freed).
function M.tail_stop(_, core, params)
    local id, err = event_stream_id(params)
    if not id then
        return err
    end
    return tail_answer(core, id, 0, true)
end

local TYPES = {
    html = "text/html; charset=utf-8",
    js = "text/javascript; charset=utf-8",
    css = "text/css; charset=utf-8",
    svg = "image/svg+xml",
    png = "image/png",
    ico = "image/x-icon",
}
local files = {}

--- GET /ui/ and /ui/{file}: the page's static files from core.ui_path.
function M.ui(req, core, params)
    local name = params.file
    if name == nil then
        -- "/ui" without the slash: relative links need the folder form.
        if byte(req.path or "", -1) ~= 47 then
            return { status = 301, body = "", content_type = "text/plain",
                headers = { Location = "/ui/" } }
        end
        name = "index.html"
    end
    local ext = match(name, "^[%w][%w_%-%.]*%.(%w+)$")
    if not ext or not TYPES[ext] or find(name, "..", 1, true) then
        return response.detail(404, "Not Found")
    end
    local text = files[name]
    if text == nil then
        local f = io.open(tostring(core.ui_path) .. "/" .. name, "rb")
        if not f then
            return response.detail(404, "Not Found")
        end
        text = f:read("*a") or ""
        f:close()
        files[name] = text
    end
    return { status = 200, body = text, content_type = TYPES[ext],
        headers = { ["Cache-Control"] = "no-cache", ["X-Content-Type-Options"] = "nosniff",
            ["Content-Security-Policy"] = "default-src 'self'; style-src 'self'; "
                .. "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'" } }
end

return M
