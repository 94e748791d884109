-- ess.examples.legacy: an enrichment hook (lua.enrich) for clients written
-- against the original gateway's later versions, which called the offset
-- an "ordinal". A JSON object body gains "ess_ordinal" and "ess_timestamp"
-- as its last members, spliced into the original bytes (never re-encoded);
-- any other text body gains "|ordinal: <n>|timestamp: <ms>"; a body that
-- starts with "{" but is not valid JSON, and every binary body, is
-- forwarded unchanged (and counted as enrich_invalid_json, like the
-- default). The same code as ess.enrich with other names: it keeps no
-- state and never reads msg.properties.
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

local function enrich(msg, es)
    local body = msg.body
    if not msg.is_text or type(body) ~= "string" then
        return body
    end
    local first = find(body, "[^ \t\n\r]")
    if not first or byte(body, first) ~= LBRACE then
        return body .. TEXT_OFFSET .. int(msg.offset) .. TEXT_TIMESTAMP .. int(msg.timestamp)
    end
    local ok, err = pcall(decode, body)
    if not ok then
        invalid = invalid + 1
        if ess then
            ess.count("enrich_invalid_json")
            if invalid <= 10 then
                ess.log("warn", format("legacy enrich: event stream %s offset %s: not a JSON"
                    .. " object (%s); forwarded unchanged", tostring(es and es.id),
                    int(msg.offset), tostring(err)))
            end
        end
        return body
    end
    local last = #body
    while is_ws(byte(body, last)) do
        last = last - 1
    end
    local prev = last - 1
    while prev > first and is_ws(byte(body, prev)) do
        prev = prev - 1
    end
    return sub(body, 1, last - 1) .. (prev == first and '"' or ',"') .. OFFSET_KEY .. '":'
        .. int(msg.offset) .. ',"' .. TIMESTAMP_KEY .. '":' .. int(msg.timestamp)
        .. sub(body, last)
end

return { enrich = enrich }
