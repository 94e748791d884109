-- ess.examples.legacy: an enrichment hook (lua.enrich) for clients written
-- against the original gateway's later versions, which called the offset
-- an "ordinal". A JSON object body gains "ess_ordinal" and "ess_timestamp"
-- as its last members, spliced into the original bytes (never re-encoded);
-- any other text body gains "|ordinal: <n>|timestamp: <ms>"; a body that
-- starts with "{" but is not valid JSON, and every binary body, is
-- forwarded unchanged (and counted as enrich_invalid_json, like the
-- default). The same code as ess.enrich with other names (including the
-- C validator ess.json_object when the host has it): it keeps no state and
-- never reads msg.properties.
--
-- Enable: `lua.enrich: ess.examples.legacy` (config/examples/legacy.yaml).

-- luacheck: read globals ess

local cjson = require "cjson"

local byte, find, format, sub, tostring, type = string.byte, string.find, string.format,
    string.sub, tostring, type
local floor, pcall = math.floor, pcall

local decoder = cjson.new()
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local OFFSET_KEY, TIMESTAMP_KEY = "ess_ordinal", "ess_timestamp"
local TEXT_OFFSET, TEXT_TIMESTAMP = "|ordinal: ", "|timestamp: "

local LBRACE, SP, TAB, LF, CR = 123, 32, 9, 10, 13

-- An integer printed exactly (never "1e+15").
local function int(n)
    if type(n) == "number" then
        if floor(n) == n and n > -2 ^ 63 and n < 2 ^ 63 then
            return n == 0 and "0" or format("%.0f", n)
        end
        return n == n and format("%.17g", n) or "null"
    elseif n == nil then
        return "null"
    end
    return (tostring(n):gsub("[UuLl]+$", ""))
end

local function is_ws(c)
    return c == SP or c == LF or c == CR or c == TAB
end

local invalid = 0

-- essd's host table offers a C validator (no Lua table per message):
-- ess.json_object(s) -> index of the closing "}", empty | nil, reason.
-- Specs and other hosts fall back to a cjson decode.
local json_object = type(ess) == "table" and ess.json_object or nil

local function enrich(msg, es)
    local body = msg.body
    if not msg.is_text or type(body) ~= "string" then
        return body
    end
    local first = find(body, "[^ \t\n\r]")
    if not first or byte(body, first) ~= LBRACE then
        return body .. TEXT_OFFSET .. int(msg.offset) .. TEXT_TIMESTAMP .. int(msg.timestamp)
    end
    local last, empty
    if json_object then
        last, empty = json_object(body)
    else
        local ok, err = pcall(decode, body)
        if ok then
            last = #body
            while is_ws(byte(body, last)) do
                last = last - 1
            end
            local prev = last - 1
            while prev > first and is_ws(byte(body, prev)) do
                prev = prev - 1
            end
            empty = prev == first
        else
            empty = err
        end
    end
    if not last then
        invalid = invalid + 1
        if ess then
            ess.count("enrich_invalid_json")
            if invalid <= 10 or invalid % 1000 == 0 then
                ess.log("warn", format("legacy enrich: event stream %s offset %s: not a JSON"
                    .. " object (%s); forwarded unchanged (%d so far)", tostring(es and es.id),
                    int(msg.offset), tostring(empty), invalid))
            end
        end
        return body
    end
    return sub(body, 1, last - 1) .. (empty and '"' or ',"') .. OFFSET_KEY .. '":'
        .. int(msg.offset) .. ',"' .. TIMESTAMP_KEY .. '":' .. int(msg.timestamp)
        .. sub(body, last)
end

return { enrich = enrich }
