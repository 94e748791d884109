-- ess.jsonscan: small helpers for hooks that look inside JSON bodies
-- without decoding them into tables (a library, not a hook). Every function
-- expects text that is already known to be valid JSON (checked with
-- M.is_object first); on other input it may raise an error, so callers
-- wrap it in pcall. No state; loaded through the sandbox by `require`.

-- luacheck: read globals ess

local cjson = require "cjson"

local byte, find, pcall, sub, type = string.byte, string.find, pcall, string.sub, type

local M = {}

local decoder = cjson.new()
decoder.decode_invalid_numbers(false)
local decode = decoder.decode

local QUOTE, BACKSLASH, COMMA, LBRACE, RBRACE, LBRACKET, RBRACKET = 34, 92, 44, 123, 125,
    91, 93

-- essd's C validator when the host has it, else a cjson decode.
local json_object = type(ess) == "table" and ess.json_object or nil

-- true when s is exactly one valid JSON object (white space around allowed).
function M.is_object(s)
    if json_object then
        return json_object(s) ~= nil
    end
    local first = find(s, "[^ \t\r\n]")
    return first ~= nil and byte(s, first) == LBRACE and (pcall(decode, s))
end

-- Index of the first non-white-space byte at or after i (byte loops, not
-- patterns: LuaJIT compiles these, but not string.find with a pattern).
function M.skip_ws(s, i)
    local c = byte(s, i)
    while c == 32 or c == 10 or c == 13 or c == 9 do
        i = i + 1
        c = byte(s, i)
    end
    return i
end
local skip_ws = M.skip_ws

-- s[i] is the opening quote of a string: the index after its closing quote.
function M.string_end(s, i)
    local j = i + 1
    local c = byte(s, j)
    while c ~= QUOTE do
        if c == BACKSLASH then
            j = j + 1
        elseif c == nil then
            error("unterminated string")
        end
        j = j + 1
        c = byte(s, j)
    end
    return j + 1
end
local string_end = M.string_end

-- The decoded text of the string that spans s[i, stop).
function M.string_at(s, i, stop)
    local raw = sub(s, i + 1, stop - 2)
    if find(raw, "\\", 1, true) then
        return decode('"' .. raw .. '"')
    end
    return raw
end
local string_at = M.string_at

-- The index after the value that starts at s[i].
function M.value_end(s, i)
    local c = byte(s, i)
    if c == QUOTE then
        return string_end(s, i)
    elseif c == nil then
        error("unexpected end of text")
    elseif c ~= LBRACE and c ~= LBRACKET then
        while c and c ~= COMMA and c ~= RBRACE and c ~= RBRACKET and c ~= 32 and c ~= 10
            and c ~= 13 and c ~= 9 do
            i = i + 1
            c = byte(s, i)
        end
        return i
    end
    local depth = 0
    while true do
        if c == QUOTE then
            i = string_end(s, i)
        else
            if c == LBRACE or c == LBRACKET then
                depth = depth + 1
            elseif c == RBRACE or c == RBRACKET then
                depth = depth - 1
                if depth == 0 then
                    return i + 1
                end
            elseif c == nil then
                error("unterminated value")
            end
            i = i + 1
        end
        c = byte(s, i)
    end
end
local value_end = M.value_end

-- The value of the top-level member `name` of the JSON object s (the last
-- one when the name repeats, as a decoder would keep): start and end
-- (exclusive) indexes, or nil.
function M.member(s, name)
    local i = skip_ws(s, skip_ws(s, 1) + 1)
    if byte(s, i) == RBRACE then
        return nil
    end
    local vs, ve
    while true do
        local kend = string_end(s, i)
        local v = skip_ws(s, skip_ws(s, kend) + 1)
        local e = value_end(s, v)
        if string_at(s, i, kend) == name then
            vs, ve = v, e
        end
        local n = skip_ws(s, e)
        if byte(s, n) ~= COMMA then
            return vs, ve
        end
        i = skip_ws(s, n + 1)
    end
end

-- The top-level member `name` of s when it is a string, else nil.
function M.string_member(s, name)
    local vs, ve = M.member(s, name)
    if vs and byte(s, vs) == QUOTE then
        return string_at(s, vs, ve)
    end
    return nil
end

return M
