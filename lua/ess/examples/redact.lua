-- ess.examples.redact: an enrichment hook (lua.enrich) that masks or
-- removes configured members of JSON object bodies, at any depth, before
-- the default hook (ess.enrich) adds ess_offset and ess_timestamp.
--
-- Not re-encoded: the body is checked with cjson and then copied piece by
-- piece, so numbers, escapes and key order stay as published. Only an
-- object or array that contained a redacted member is rebuilt, and loses
-- the whitespace between its members. Bodies that cannot contain a field
-- (neither a field name nor a "\u" escape appears) take the fast path and
-- cost one plain string search more than the default. Text and binary
-- bodies, and bodies that are not valid JSON, are left to the default
-- (forwarded as the default forwards them).
--
-- Enable: `lua.enrich: ess.examples.redact` (config/examples/redact.yaml).

-- luacheck: read globals ess

local cjson = require "cjson"
local default = require("ess.enrich").enrich

local byte, concat, find, pairs, pcall, sub, type = string.byte, table.concat, string.find,
    pairs, pcall, string.sub, type

-- Edit these: member name -> "mask" (value becomes MASK) or "remove".
local FIELDS = {
    card_number = "mask",
    password = "remove",
}
local MASK = '"***"'

local decoder = cjson.new()
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local QUOTE, COMMA, LBRACE, RBRACE, LBRACKET, RBRACKET = 34, 44, 123, 125, 91, 93

local function skip_ws(s, i)
    return find(s, "[^ \t\r\n]", i)
end

-- s[i] is the opening quote of a string; returns the index after its closing quote.
local function string_end(s, i)
    local j = i + 1
    while true do
        local q = find(s, '["\\]', j)
        if byte(s, q) == QUOTE then
            return q + 1
        end
        j = q + 2
    end
end

local function key_at(s, i, stop)
    local raw = sub(s, i + 1, stop - 2)
    if find(raw, "\\", 1, true) then
        return decode('"' .. raw .. '"')
    end
    return raw
end

-- Scans the valid JSON value at s[i]: returns the index after it and, when
-- something inside was redacted, the value's new text.
local function scan(s, i)
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
            local vend, new = scan(s, vstart)
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
    elseif c == QUOTE then
        return string_end(s, i)
    end
    return (find(s, "[,%]} \t\r\n]", i) or #s + 1)
end

-- The body with the configured members masked or removed, or nil when it
-- has none (or is not a JSON object).
local function redact(body)
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
    if not first or byte(body, first) ~= LBRACE or not pcall(decode, body) then
        return nil
    end
    local stop, new = scan(body, first)
    if not new then
        return nil
    end
    return sub(body, 1, first - 1) .. new .. sub(body, stop)
end

local function enrich(msg, es)
    local body = msg.body
    if msg.is_text and type(body) == "string" then
        local new = redact(body)
        if new then
            if ess then
                ess.count("redacted")
            end
            msg.body = new
        end
    end
    return default(msg, es)
end

return { enrich = enrich, redact = redact, FIELDS = FIELDS }
