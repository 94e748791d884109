-- ess.examples.filter: an enrichment hook (lua.enrich) that forwards only
-- the message types listed in KEEP and skips the rest (returns nil, so the
-- client never sees them; offsets it sees then have gaps). Kept messages
-- are enriched by the default hook (ess.enrich), unchanged.
--
-- A message's type is, in this order: the top-level "message_type" member
-- of a JSON object body; the type named by the text form
-- "accountserver.<Type>|..."; the AMQP application property message_type
-- (msg.properties, which the host builds only when asked, so it is read
-- last). A message with no type is kept when KEEP_UNTYPED is true.
--
-- Cost: a JSON body that contains "message_type" is validated (by the
-- host's C validator when there is one) and its top-level members are
-- scanned without building a table (ess.examples.jsonscan); the default
-- hook then validates it once more. A key written with escapes
-- ("message\u005ftype") is not looked for.
--
-- Enable: `lua.enrich: ess.examples.filter` (config/examples/filter.yaml).

-- luacheck: read globals ess

local default = require("ess.enrich").enrich
local scan = require "ess.examples.jsonscan"

local byte, find, match, pcall, type = string.byte, string.find, string.match, pcall, type

-- Edit these: the message types to forward, and what to do without a type.
local KEEP = {
    MerchantProcessingCharge = true,
    MerchantStorageCharge = true,
}
local KEEP_UNTYPED = true

local LBRACE = 123

-- The message's type, or nil.
local function message_type(msg)
    local body = msg.body
    if msg.is_text and type(body) == "string" then
        local first = find(body, "[^ \t\n\r]")
        if first and byte(body, first) == LBRACE then
            if find(body, "message_type", first, true) and scan.is_object(body) then
                local ok, t = pcall(scan.string_member, body, "message_type")
                if ok and t then
                    return t
                end
            end
        else
            local t = match(body, "^accountserver%.([%w_]+)|")
            if t then
                return t
            end
        end
    end
    local props = msg.properties
    local t = props and props.message_type
    if type(t) == "string" then
        return t
    end
    return nil
end

local function enrich(msg, es)
    local t = message_type(msg)
    if (t == nil and not KEEP_UNTYPED) or (t ~= nil and not KEEP[t]) then
        if ess then
            ess.count("filter_skipped")
        end
        return nil
    end
    return default(msg, es)
end

return { enrich = enrich, message_type = message_type, KEEP = KEEP }
