-- ess.route: the default routing hook (lua.route), mapping an event stream
-- to its broker source. Version 2 reads the RabbitMQ stream named after the
-- routing key; version 1 binds a server-named classic queue to the direct
-- exchange "event-streams". It does no I/O; the C side subscribes.

local EXCHANGE = "event-streams"

local function route(es, cfg)
    local broker = type(cfg) == "table" and cfg.broker or nil
    local version = type(broker) == "table" and broker.version or 2
    if version == 2 then
        return { mode = "stream", stream = es.routing_key }
    end
    return { mode = "classic", exchange = EXCHANGE, routing_key = es.routing_key }
end

return { route = route }
