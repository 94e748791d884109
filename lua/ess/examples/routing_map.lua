-- ess.examples.routing_map: a routing hook (lua.route) that reads some
-- event streams from classic queues bound to the direct exchange and the
-- rest from RabbitMQ streams. A routing key listed in CLASSIC, or starting
-- with one of CLASSIC_PREFIXES, goes to classic mode; any other goes to
-- the stream named STREAMS[key], or else the key itself. A broker of
-- version 1 (broker.version: 1) has no streams, so everything is classic
-- there, as with the default hook. Pure: no I/O, no state.
--
-- Note: at the time of writing the gateway closes a session whose route is
-- classic (1011, "classic (version 1) mode is not available in this
-- build"); see docs/lua.md.
--
-- Enable: `lua.route: ess.examples.routing_map`
-- (config/examples/routing_map.yaml).

local sub, type = string.sub, type

-- Edit these.
local EXCHANGE = "event-streams"
local CLASSIC = {
    ["billing.legacy"] = true,
}
local CLASSIC_PREFIXES = { "legacy.", "v1." }
local STREAMS = {
    -- ["orders"] = "orders-2025",
}

local function is_classic(key)
    if CLASSIC[key] then
        return true
    end
    for i = 1, #CLASSIC_PREFIXES do
        local p = CLASSIC_PREFIXES[i]
        if sub(key, 1, #p) == p then
            return true
        end
    end
    return false
end

local function route(es, cfg)
    local key = es.routing_key
    local broker = type(cfg) == "table" and cfg.broker or nil
    local version = type(broker) == "table" and broker.version or 2
    if version ~= 2 or is_classic(key) then
        return { mode = "classic", exchange = EXCHANGE, routing_key = key }
    end
    return { mode = "stream", stream = STREAMS[key] or key }
end

return { route = route, CLASSIC = CLASSIC, CLASSIC_PREFIXES = CLASSIC_PREFIXES, STREAMS = STREAMS }
