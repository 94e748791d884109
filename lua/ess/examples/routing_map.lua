-- ess.examples.routing_map: a routing hook (lua.route) that reads some
-- event streams from classic queues bound to the direct exchange and the
-- rest from RabbitMQ streams. A routing key listed in the option
-- `classic`, or starting with one of `classic_prefixes`, goes to classic
-- mode (a server-named queue bound to `exchange`); any other goes to the
-- stream named `streams[key]`, or else the key itself. A broker of version
-- 1 (broker.version: 1) has no streams, so everything is classic there, as
-- with the default hook. Options come from lua.route_options, checked
-- against `schema`. Pure: no I/O; it keeps only a set built from the conf.
--
-- Enable: `lua.route: ess.examples.routing_map`
-- (config/examples/routing_map.yaml).

local options = require "ess.options"

local ipairs, sub, type = ipairs, string.sub, type

local schema = {
    { name = "exchange", type = "string", default = "event-streams", min = 1, max = 255,
        doc = "The direct exchange classic queues are bound to." },
    { name = "classic", type = "array", elements = "string", default = { "billing.legacy" },
        doc = "Routing keys read from classic queues." },
    { name = "classic_prefixes", type = "array", elements = "string",
        default = { "legacy.", "v1." },
        doc = "Routing-key prefixes read from classic queues." },
    { name = "streams", type = "map", values = { type = "string", min = 1, max = 255 },
        default = {}, doc = "Routing key -> stream name, for streams not named after the key." },
}
local DEFAULTS = options.defaults(schema)

-- conf.classic as a set, rebuilt only when the conf table changes (a reload).
local last_conf, classic_set

local function is_classic(key, conf)
    if conf ~= last_conf then
        classic_set = {}
        for _, k in ipairs(conf.classic) do
            classic_set[k] = true
        end
        last_conf = conf
    end
    if classic_set[key] then
        return true
    end
    local prefixes = conf.classic_prefixes
    for i = 1, #prefixes do
        local p = prefixes[i]
        if sub(key, 1, #p) == p then
            return true
        end
    end
    return false
end

local function route(es, cfg, conf)
    conf = conf or DEFAULTS
    local key = es.routing_key
    local broker = type(cfg) == "table" and cfg.broker or nil
    local version = type(broker) == "table" and broker.version or 2
    if version ~= 2 or is_classic(key, conf) then
        return { mode = "classic", exchange = conf.exchange, routing_key = key }
    end
    return { mode = "stream", stream = conf.streams[key] or key }
end

return { route = route, schema = schema }
