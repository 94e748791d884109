-- ess.enrich: the default enrichment hook (lua.enrich), run for every
-- message before it is sent to the WebSocket client.
--
-- A JSON object body gains "ess_offset" and "ess_timestamp" as its last
-- members, spliced into the original bytes (never re-encoded, so key order,
-- number formatting and escapes stay as published); any other text body
-- gains "|offset: <n>|timestamp: <ms>"; a body that looks like an object but
-- is not valid JSON, and every binary body, is forwarded unchanged. It does
-- not look at msg.properties (which the host may build lazily) and keeps no
-- per-stream state. Operators copy this file to write their own hook.

local cjson = require "cjson"

local byte, find, format, sub, tostring, type = string.byte, string.find, string.format,
    string.sub, tostring, type
local floor, pcall = math.floor, pcall

-- A private instance, so that settings never leak to or from other scripts;
-- strict JSON (no NaN, Infinity or hex numbers).
local decoder = cjson.new()
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local LBRACE, SP, TAB, LF, CR = 123, 32, 9, 10, 13
local LOG_FIRST, LOG_EVERY = 10, 1000

-- Prints an integer exactly (offsets up to 2^53, ms timestamps): never
-- "1e+15". A 64-bit cdata from FFI prints without its "ULL" suffix.
local function int(n)
    if type(n) == "number" then
        if floor(n) == n and n > -1e14 and n < 1e14 then
            -- At most 14 digits: tostring ("%.14g") prints them exactly,
            -- cheaper than string.format.
            return n == 0 and "0" or tostring(n)
        elseif floor(n) == n and n > -2 ^ 63 and n < 2 ^ 63 then
            return format("%.0f", n)
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

local invalid_count = 0

local function report_invalid(msg, es, why)
    invalid_count = invalid_count + 1
    if not ess then
        return
    end
    ess.count("enrich_invalid_json")
    if invalid_count <= LOG_FIRST or invalid_count % LOG_EVERY == 0 then
        ess.log("warn", format("enrich: event stream %s offset %s: body starts with '{' but is"
            .. " not a valid JSON object (%s); forwarded unchanged (%d so far)",
            tostring(es and es.id), int(msg.offset), tostring(why), invalid_count))
    end
end

-- essd's host table offers a C validator that builds no Lua table per
-- message; specs and other hosts fall back to a cjson decode.
local json_object = type(ess) == "table" and ess.json_object or nil
-- ... and one that validates and splices in one pass, into one string.
local json_splice = type(ess) == "table" and ess.json_splice or nil

-- Builds an enrich function that writes the given names; the default hook
-- is new() with "ess_offset"/"ess_timestamp" and "|offset: "/"|timestamp: ".
-- Hooks that only rename them (ess.examples.legacy) reuse this code.
local function new(names)
    names = names or {}
    local okey = names.offset_key or "ess_offset"
    local tkey = names.timestamp_key or "ess_timestamp"
    local text_offset = names.text_offset or "|offset: "
    local text_timestamp = names.text_timestamp or "|timestamp: "
    local json_first = '"' .. okey .. '":'
    local json_more = ',"' .. okey .. '":'
    local json_ts = ',"' .. tkey .. '":'

    return function(msg, es)
        local body = msg.body
        if not msg.is_text or type(body) ~= "string" then
            return body
        end
        -- Most bodies start with their first character: skip the pattern scan.
        local first = byte(body, 1) == LBRACE and 1 or find(body, "[^ \t\n\r]")
        if not first or byte(body, first) ~= LBRACE then
            return body .. text_offset .. int(msg.offset) .. text_timestamp .. int(msg.timestamp)
        end
        local offset, timestamp = msg.offset, msg.timestamp
        if json_splice and type(offset) == "number" and type(timestamp) == "number" then
            local out, why = json_splice(body, offset, timestamp, json_first, json_more, json_ts)
            if not out then
                report_invalid(msg, es, why)
                return body
            end
            return out
        end
        local last, empty
        if json_object then
            last, empty = json_object(body)
            if not last then
                report_invalid(msg, es, empty)
                return body
            end
        else
            -- A JSON text that starts with "{" and decodes is an object.
            local ok, err = pcall(decode, body)
            if not ok then
                report_invalid(msg, es, err)
                return body
            end
            last = #body
            while is_ws(byte(body, last)) do
                last = last - 1
            end
            local prev = last - 1
            while prev > first and is_ws(byte(body, prev)) do
                prev = prev - 1
            end
            empty = prev == first
        end
        return sub(body, 1, last - 1) .. (empty and json_first or json_more)
            .. int(msg.offset) .. json_ts .. int(msg.timestamp) .. sub(body, last)
    end
end

-- per_stream = false: the result does not depend on `es`, so sessions that
-- read the same stream live share one subscription and one call per message.
return { enrich = new(), new = new, per_stream = false }
