-- ess.examples.redact: an enrichment hook (lua.enrich) that masks or
-- removes configured members of JSON object bodies, at any depth, before
-- the default hook (ess.enrich) adds ess_offset and ess_timestamp.
--
-- Not re-encoded: the body is validated (by the host's C validator when
-- there is one, else cjson) and then copied piece by piece, so numbers,
-- escapes and key order stay as published. Only an object or array that
-- contained a redacted member is rebuilt, and loses the whitespace between
-- its members. If the scan ever failed, the message is skipped (counted as
-- redact_failed) rather than sent unredacted. Bodies that cannot contain a field
-- (neither a field name nor a "\u" escape appears) take the fast path and
-- cost one plain string search more than the default. Text and binary
-- bodies, and bodies that are not valid JSON, are left to the default
-- (forwarded as the default forwards them).
--
-- Options (lua.enrich_options, checked against `schema`): `fields`, member
-- name -> "mask" (the value becomes the JSON string `mask`) or "remove";
-- `mask`, the text that replaces a masked value.
--
-- Enable: `lua.enrich: ess.examples.redact` (config/examples/redact.yaml).

-- luacheck: read globals ess

local default = require("ess.enrich").enrich
local options = require "ess.options"
local scan = require "ess.jsonscan"
local cjson = require "cjson"

local byte, concat, find, pairs, pcall, sub, type = string.byte, table.concat, string.find,
    pairs, pcall, string.sub, type
local skip_ws, string_end, key_at, value_end = scan.skip_ws, scan.string_end, scan.string_at,
    scan.value_end

local schema = {
    { name = "fields", type = "map", values = { type = "string", one_of = { "mask", "remove" } },
        default = { card_number = "mask", password = "remove" },
        doc = 'Member name -> "mask" or "remove", at any depth.' },
    { name = "mask", type = "string", default = "***",
        doc = "The string that replaces a masked value." },
}
local DEFAULTS = options.defaults(schema)

-- The walk reads these; redact() sets them from the conf of the call.
local FIELDS, MASK
local last_conf
local function use(conf)
    if conf ~= last_conf then
        FIELDS, MASK = conf.fields, cjson.encode(conf.mask)
        last_conf = conf
    end
end

local COMMA, LBRACE, RBRACE, LBRACKET, RBRACKET = 44, 123, 125, 91, 93

-- Scans the valid JSON value at s[i]: returns the index after it and, when
-- something inside was redacted, the value's new text.
local function walk(s, i)
    local c = byte(s, i)
    if c == LBRACE or c == LBRACKET then
        local close = c == LBRACE and RBRACE or RBRACKET
        local j = skip_ws(s, i + 1)
        if byte(s, j) == close then
            return j + 1
        end
        local parts, changed = {}, false
        while true do
            local vstart, action = j, nil
            if c == LBRACE then
                local kend = string_end(s, j)
                action = FIELDS[key_at(s, j, kend)]
                vstart = skip_ws(s, skip_ws(s, kend) + 1)
            end
            local vend, new = walk(s, vstart)
            if action == "remove" then
                changed = true
            elseif action then
                changed = true
                parts[#parts + 1] = sub(s, j, vstart - 1) .. MASK
            elseif new then
                changed = true
                parts[#parts + 1] = sub(s, j, vstart - 1) .. new
            else
                parts[#parts + 1] = sub(s, j, vend - 1)
            end
            local n = skip_ws(s, vend)
            if byte(s, n) ~= COMMA then
                if changed then
                    local open = c == LBRACE and "{" or "["
                    return n + 1, open .. concat(parts, ",") .. (c == LBRACE and "}" or "]")
                end
                return n + 1
            end
            j = skip_ws(s, n + 1)
        end
    end
    return value_end(s, i)
end

-- The body with the configured members masked or removed; nil when it
-- has none (or is not a JSON object); false if the scan failed. conf is
-- the hook's (the defaults when nil).
local function redact(body, conf)
    use(conf or DEFAULTS)
    local maybe = find(body, "\\u", 1, true) ~= nil
    if not maybe then
        for name in pairs(FIELDS) do
            if find(body, name, 1, true) then
                maybe = true
                break
            end
        end
    end
    if not maybe then
        return nil
    end
    local first = skip_ws(body, 1)
    if not first or byte(body, first) ~= LBRACE or not scan.is_object(body) then
        return nil
    end
    local ok, stop, new = pcall(walk, body, first)
    if not ok then
        return false
    end
    if not new then
        return nil
    end
    return sub(body, 1, first - 1) .. new .. sub(body, stop)
end

local function enrich(msg, es, conf)
    local body = msg.body
    if msg.is_text and type(body) == "string" then
        local new = redact(body, conf)
        if new then
            if ess then
                ess.count("redacted")
            end
            msg.body = new
        elseif new == false then
            -- Never send what could not be redacted.
            if ess then
                ess.count("redact_failed")
            end
            return nil
        end
    end
    return default(msg, es)
end

return { enrich = enrich, schema = schema, redact = redact, per_stream = false }
