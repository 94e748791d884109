-- ess.api.streams: the compat event-stream routes (create, list, delete).
--
-- It owns the validation of request bodies and path ids and the wording of
-- their errors, which follows the FastAPI/pydantic service this replaces.
-- It does not store anything: the registry lives in C (core.registry_*),
-- which also closes live WebSockets on delete. With the shared registry
-- (registry.backend: stream) a create or delete waits for the broker: the
-- core function then returns a deferred marker ({ deferred = true }) that
-- the handler returns as is, and C calls the continuation given as the
-- last argument with the outcome, whose return value is the response.

local json = require "ess.api.json"
local response = require "ess.api.response"

local find, format, match, sub = string.find, string.format, string.match, string.sub

local M = {}

local MAX_ROUTING_KEY = 255 -- bytes; RabbitMQ's limit for a stream name
local MAX_ID = 2 ^ 53       -- ids are doubles in Lua and int64 in SQLite

local function location(core, uuid)
    local ingress = core.config and core.config.ingress or {}
    return (ingress.secure and "wss://" or "ws://") .. tostring(ingress.location)
        .. "/event-stream/" .. tostring(uuid)
end
M.location = location

local function deferred(v)
    return type(v) == "table" and v.deferred == true
end

local function unavailable(core, what, err)
    core.log("error", format("%s failed: %s", what, tostring(err)))
    return response.detail(503, "Event stream registry unavailable")
end

-- Checks a decoded body; returns the routing key or a 422 response.
local function routing_key_of(body)
    if body == "" then
        return nil, response.invalid(response.error_item({ "body" }, "field required",
            "value_error.missing"))
    end
    local v, err, pos = json.decode(body)
    if v == nil then
        local line, col = json.line_col(body, pos)
        local what = err:gsub(" at character %d+$", "")
        if find(what, "^Expected value") then
            what = "Expecting value" -- Python's wording for the common case
        end
        return nil, response.invalid(response.error_item({ "body", pos - 1 },
            format("%s: line %d column %d (char %d)", what, line, col, pos - 1),
            "value_error.jsondecode",
            json.object("msg", err, "pos", pos - 1, "lineno", line, "colno", col)))
    end
    -- lua-cjson decodes {} and [] alike, so look at the text for an object.
    if type(v) ~= "table" or not find(body, "^%s*{") then
        return nil, response.invalid(response.error_item({ "body" }, "value is not a valid dict",
            "type_error.dict"))
    end
    local key = v.routing_key
    local loc = { "body", "routing_key" }
    local item = response.error_item
    if key == nil then
        return nil, response.invalid(item(loc, "field required", "value_error.missing"))
    elseif key == json.null then
        return nil, response.invalid(item(loc, "none is not an allowed value",
            "type_error.none.not_allowed"))
    elseif type(key) ~= "string" then
        return nil, response.invalid(item(loc, "str type expected", "type_error.str"))
    elseif #key == 0 then
        return nil, response.invalid(item(loc, "ensure this value has at least 1 characters",
            "value_error.any_str.min_length", json.object("limit_value", 1)))
    elseif #key > MAX_ROUTING_KEY then
        return nil, response.invalid(item(loc,
            format("ensure this value has at most %d bytes", MAX_ROUTING_KEY),
            "value_error.any_str.max_length", json.object("limit_value", MAX_ROUTING_KEY)))
    elseif not json.valid_utf8(key) then
        return nil, response.invalid(item(loc, "value is not valid UTF-8",
            "value_error.str.unicode"))
    elseif find(key, "%c") then
        return nil, response.invalid(item(loc,
            "control characters (U+0000..U+001F, U+007F) are not allowed",
            "value_error.str.control_characters"))
    end
    return key
end

--- POST /event-stream/
function M.create(req, core)
    local body = type(req.body) == "string" and req.body or ""
    local key, bad = routing_key_of(body)
    if not key then
        return bad
    end
    local function created(row, err)
        if type(row) ~= "table" then
            return unavailable(core, "registry_create", err)
        end
        return response.json(201, json.object("id", row.id, "location", location(core, row.uuid)))
    end
    local row, err = core.registry_create(key, created)
    if deferred(row) then
        return row
    end
    return created(row, err)
end

--- GET /event-stream/
function M.list(_, core)
    local rows, err = core.registry_list()
    if type(rows) ~= "table" then
        return unavailable(core, "registry_list", err)
    end
    local out = json.array()
    for i, row in ipairs(rows) do
        out[i] = json.object("id", row.id, "location", location(core, row.uuid),
            "routing_key", row.routing_key)
    end
    return response.json(200, json.object("event_streams", out))
end

--- DELETE /event-stream/{id}
-- Any decimal integer is an id (as for the original service); negative ids
-- and ids of 2^53 or more cannot exist, so they get the 404 at once.
function M.delete(_, core, params)
    local sign, digits = match(params.id or "", "^([+-]?)(%d+)$")
    if not digits then
        return response.invalid(response.error_item({ "path", "id" },
            "value is not a valid integer", "type_error.integer"))
    end
    digits = match(digits, "^0*(%d-)$")
    if digits == "" then
        digits = "0"
    end
    local shown = (sign == "-" and digits ~= "0") and ("-" .. digits) or digits
    local not_known = response.detail(404, format("EventStream %s is not known", shown))
    if sub(shown, 1, 1) == "-" or #digits > 16 or tonumber(digits) >= MAX_ID then
        return not_known
    end
    local function deleted(ok, err)
        if ok == true then
            return response.empty(204)
        elseif ok == false then
            return not_known
        end
        return unavailable(core, "registry_delete", err)
    end
    local ok, err = core.registry_delete(tonumber(digits), deleted)
    if deferred(ok) then
        return ok
    end
    return deleted(ok, err)
end

return M
