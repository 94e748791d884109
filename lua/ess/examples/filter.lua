-- ess.examples.filter: an enrichment hook (lua.enrich) that forwards only
-- the message types listed in the option `keep` and skips the rest (returns nil, so the
-- client never sees them; offsets it sees then have gaps). Kept messages
-- are enriched by the default hook (ess.enrich), unchanged.
--
-- A message's type is, in this order: the top-level "message_type" member
-- of a JSON object body; the type named by the text form
-- "accountserver.<Type>|..."; the AMQP application property message_type
-- (msg.properties, which the host builds only when asked, so it is read
-- last). A message with no type is kept when the option `keep_untyped` is
-- true. Options come from lua.enrich_options, checked against `schema`:
--
--     lua:
--       enrich: "ess.examples.filter"
--       enrich_options:
--         keep: [MerchantProcessingCharge, MerchantStorageCharge]
--         keep_untyped: true
--
-- Cost: a JSON body that contains "message_type" is validated (by the
-- host's C validator when there is one) and its top-level members are
-- scanned without building a table (ess.jsonscan); the default
-- hook then validates it once more. A key written with escapes
-- ("message\u005ftype") is not looked for.
--
-- Enable: `lua.enrich: ess.examples.filter` (config/examples/filter.yaml).

-- luacheck: read globals ess

local default = require("ess.enrich").enrich
local options = require "ess.options"
local scan = require "ess.jsonscan"

local byte, find, ipairs, match, pcall, type = string.byte, string.find, ipairs, string.match,
    pcall, type

local schema = {
    { name = "keep", type = "array", elements = "string",
        default = { "MerchantProcessingCharge", "MerchantStorageCharge" },
        doc = "The message types to forward." },
    { name = "keep_untyped", type = "boolean", default = true,
        doc = "Forward a message whose type cannot be found." },
}
local DEFAULTS = options.defaults(schema)

-- conf.keep as a set, rebuilt only when the host hands over another conf
-- table (once per VM, so once per reload), not per message.
local last_conf, keep_set

local function keep_of(conf)
    if conf ~= last_conf then
        keep_set = {}
        for _, t in ipairs(conf.keep) do
            keep_set[t] = true
        end
        last_conf = conf
    end
    return keep_set
end

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

local function enrich(msg, es, conf)
    conf = conf or DEFAULTS
    local t = message_type(msg)
    if (t == nil and not conf.keep_untyped) or (t ~= nil and not keep_of(conf)[t]) then
        if ess then
            ess.count("filter_skipped")
        end
        return nil
    end
    return default(msg, es)
end

return { enrich = enrich, schema = schema, message_type = message_type, per_stream = false }
