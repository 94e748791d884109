-- ess.api.json: JSON for the internal API responses, and safe decoding of
-- request bodies.
--
-- It owns the response encoding: object keys in the order the handler gives
-- them (so `{"id":1,"location":...}` reads like the original service),
-- integers printed exactly up to 2^53 (lua-cjson 2.1 prints 14 significant
-- digits), `[]` for empty lists, and strings as UTF-8 with only the escapes
-- JSON requires ("/" is not escaped). Decoding goes through a private
-- lua-cjson instance so that settings never leak into other scripts. It does
-- not know any route or response shape.

local cjson = require "cjson"

local byte, find, format, gsub = string.byte, string.find, string.format, string.gsub
local concat, sort = table.concat, table.sort
local floor = math.floor

local M = {}

local decoder = cjson.new()
decoder.decode_invalid_numbers(false) -- strict JSON: no NaN, Infinity or hex
decoder.decode_max_depth(200)

local OBJECT, ARRAY = {}, {}

--- An object whose keys keep their order: json.object("a", 1, "b", "x").
-- A nil value leaves its key out.
function M.object(...)
    return setmetatable({ n = select("#", ...), ... }, OBJECT)
end

--- Marks a Lua sequence as a JSON array, so that an empty one is `[]`.
function M.array(t)
    return setmetatable(t or {}, ARRAY)
end

--- True when s is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF).
function M.valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        -- Skip ASCII runs quickly.
        local j = find(s, "[\128-\255]", i)
        if not j then
            return true
        end
        i = j
        local c = byte(s, i)
        local lo, hi = 0x80, 0xBF
        local len
        if c >= 0xC2 and c <= 0xDF then
            len = 1
        elseif c >= 0xE0 and c <= 0xEF then
            len = 2
            if c == 0xE0 then
                lo = 0xA0
            elseif c == 0xED then
                hi = 0x9F
            end
        elseif c >= 0xF0 and c <= 0xF4 then
            len = 3
            if c == 0xF0 then
                lo = 0x90
            elseif c == 0xF4 then
                hi = 0x8F
            end
        else
            return false
        end
        for k = 1, len do
            local cc = byte(s, i + k)
            if not cc or cc < lo or cc > hi then
                return false
            end
            lo, hi = 0x80, 0xBF
        end
        i = i + len + 1
    end
    return true
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
    ["\r"] = "\\r", ["\t"] = "\\t" }
local function esc(c)
    return ESC[c] or format("\\u%04x", byte(c))
end

local function encode_string(s)
    if not M.valid_utf8(s) then
        -- Never emit invalid JSON: replace every byte that is not ASCII.
        s = gsub(s, "[\128-\255]", "\239\191\189")
    end
    return '"' .. gsub(s, '[%c"\\]', esc) .. '"'
end

--- Formats a number for JSON: integers exactly, others with 17 digits.
local function encode_number(n)
    if n ~= n or n == math.huge or n == -math.huge then
        return "null"
    end
    if floor(n) == n and n > -2 ^ 63 and n < 2 ^ 63 then
        return n == 0 and "0" or format("%.0f", n)
    end
    return format("%.17g", n)
end
M.encode_number = encode_number

local encode_value

local function encode_plain_table(t, depth, out)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    if n > 0 and n == #t then
        out[#out + 1] = "["
        for i = 1, n do
            if i > 1 then
                out[#out + 1] = ","
            end
            encode_value(t[i], depth, out)
        end
        out[#out + 1] = "]"
        return
    end
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = tostring(k)
    end
    sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
        local v = t[k]
        if v == nil then
            v = t[tonumber(k)]
        end
        out[#out + 1] = (i > 1 and "," or "") .. encode_string(k) .. ":"
        encode_value(v, depth, out)
    end
    out[#out + 1] = "}"
end

function encode_value(v, depth, out)
    if depth > 32 then
        error("json: nesting deeper than 32", 0)
    end
    local t = type(v)
    if t == "string" then
        out[#out + 1] = encode_string(v)
    elseif t == "number" then
        out[#out + 1] = encode_number(v)
    elseif t == "boolean" then
        out[#out + 1] = v and "true" or "false"
    elseif v == nil or v == cjson.null then
        out[#out + 1] = "null"
    elseif t == "table" then
        local mt = getmetatable(v)
        if mt == OBJECT then
            out[#out + 1] = "{"
            local first = true
            for i = 1, v.n, 2 do
                local val = v[i + 1]
                if val ~= nil then
                    out[#out + 1] = (first and "" or ",") .. encode_string(tostring(v[i])) .. ":"
                    encode_value(val, depth + 1, out)
                    first = false
                end
            end
            out[#out + 1] = "}"
        elseif mt == ARRAY then
            out[#out + 1] = "["
            for i = 1, #v do
                if i > 1 then
                    out[#out + 1] = ","
                end
                encode_value(v[i], depth + 1, out)
            end
            out[#out + 1] = "]"
        else
            encode_plain_table(v, depth + 1, out)
        end
    else
        out[#out + 1] = encode_string(tostring(v))
    end
end

--- Encodes a value; raises only for data nested deeper than 32 levels.
function M.encode(v)
    local out = {}
    encode_value(v, 0, out)
    return concat(out)
end

M.null = cjson.null

--- Decodes a JSON text; returns value, or nil, message, position (1-based).
function M.decode(s)
    local ok, v = pcall(decoder.decode, s)
    if ok then
        return v
    end
    local msg = tostring(v)
    local pos = tonumber(msg:match("at character (%d+)")) or 1
    return nil, msg, pos
end

--- Line and column (1-based) of a byte position in s.
function M.line_col(s, pos)
    local line, last_nl = 1, 0
    local i = 1
    while true do
        local j = find(s, "\n", i, true)
        if not j or j >= pos then
            break
        end
        line, last_nl, i = line + 1, j, j + 1
    end
    return line, pos - last_nl
end

return M
