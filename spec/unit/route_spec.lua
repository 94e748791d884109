-- Specs for the default routing hook (ess.route).

local config = require "ess.config"
local route = require("ess.route").route

describe("ess.route", function()
    local es = { id = 1, uuid = "u", routing_key = "orders.eu" }

    it("reads the stream named after the routing key in version 2", function()
        local cfg = assert(config.validate({ broker = { version = 2 } }))
        assert.same({ mode = "stream", stream = "orders.eu" }, route(es, cfg))
    end)

    it("is version 2 with the default configuration", function()
        assert.same({ mode = "stream", stream = "orders.eu" },
            route(es, assert(config.validate(nil, {}))))
    end)

    it("binds a classic queue to event-streams in version 1", function()
        local cfg = assert(config.validate({ broker = { version = 1 } }))
        assert.same({ mode = "classic", exchange = "event-streams", routing_key = "orders.eu" },
            route(es, cfg))
    end)

    it("keeps unusual routing keys verbatim", function()
        local cfg = assert(config.validate(nil, {}))
        for _, key in ipairs({ "a b", "日本", ("k"):rep(255), "'; DROP TABLE x" }) do
            assert.equal(key, route({ routing_key = key }, cfg).stream)
        end
    end)

    it("returns a new table each call", function()
        local cfg = assert(config.validate(nil, {}))
        assert.are_not.equal(route(es, cfg), route(es, cfg))
    end)
end)
