-- Specs for ess.api.console: the console's routes against a fake core (the
-- C functions' contract: console_state/series/tail return JSON text).

local api = require "ess.api"
local console = require "ess.api.console"
local config = require "ess.config"
local cjson = require("cjson").new()

local function fake_core(token)
    local cfg = assert(config.validate(nil, {}))
    cfg.internal.api_token = token or ""
    local core = { config = cfg, name = "essd", version = "0.1.0", logs = {}, calls = {},
        ui_path = "ui" }
    function core.console_state(q)
        core.calls[#core.calls + 1] = q
        return '{"now":1,"event_streams":{"rows":[]}}'
    end
    function core.console_series(seconds)
        core.calls[#core.calls + 1] = seconds
        return '{"step":1,"points":0}'
    end
    function core.console_tail(id, after, stop)
        core.calls[#core.calls + 1] = { id, after, stop }
        if id == 404 then
            return nil, "not_found"
        elseif id == 503 then
            return nil, "too_many"
        end
        return '{"event_stream":' .. id .. ',"watching":' .. tostring(not stop) .. "}"
    end
    function core.console_lua()
        return { generation = 3, enrich_errors = 2, route_errors = 1, failing_streak = 0,
            enrich_module = "ess.enrich", route_module = "ess.route", lua_path = "lua",
            last_reload = { at = 5, trigger = "api", status = "rejected", generation = 3,
                error = "ess.enrich: lua/ess/enrich.lua:2: unexpected symbol near '='" } }
    end
    function core.log(level, msg)
        core.logs[#core.logs + 1] = level .. ": " .. msg
    end
    return core
end

local function request(core, method, path, query, headers)
    return api.handle({ method = method, path = path, query = query or "", body = "",
        headers = headers or {} }, core)
end

describe("ess.api.console", function()
    it("decodes query parameters", function()
        local p = console.params_of("filter=a%20b+c&limit=5&x")
        assert.equal("a b c", p.filter)
        assert.equal("5", p.limit)
        assert.equal("", p.x)
    end)

    it("answers the state with C's JSON and the Lua part", function()
        local core = fake_core()
        local resp = request(core, "GET", "/admin/state", "sort=lag&limit=10&filter=abc&live=1")
        assert.equal(200, resp.status)
        assert.equal("/admin/state", resp.route)
        local body = cjson.decode(resp.body)
        assert.equal(1, body.now)
        assert.equal(3, body.lua.generation)
        assert.equal(2, body.lua.hook_errors.enrich)
        assert.equal(1, body.lua.hook_errors.route)
        assert.matches("enrich%.lua:2:", body.lua.last_reload.error)
        assert.equal("ess.enrich", body.lua.modules[1].name)
        assert.same({ offset = 0, limit = 10, sort = "lag", desc = 1, filter = "abc", live = 1 },
            core.calls[1])
    end)

    it("refuses bad state parameters with 422", function()
        local core = fake_core()
        for _, q in ipairs({ "limit=501", "limit=-1", "limit=x", "offset=1.5", "sort=nope",
            "order=up", "filter=" .. string.rep("a", 201) }) do
            local resp = request(core, "GET", "/admin/state", q)
            assert.equal(422, resp.status, q)
            assert.is_table(cjson.decode(resp.body).detail, q)
        end
        assert.equal(0, #core.calls)
    end)

    it("answers 503 when C cannot build the state", function()
        local core = fake_core()
        core.console_state = function()
            return nil, "registry unavailable"
        end
        assert.equal(503, request(core, "GET", "/admin/state").status)
    end)

    it("serves the series with a bounded window", function()
        local core = fake_core()
        assert.equal(200, request(core, "GET", "/admin/series", "seconds=60").status)
        assert.equal(60, core.calls[1])
        assert.equal(422, request(core, "GET", "/admin/series", "seconds=901").status)
    end)

    it("watches, reads and stops a Tail", function()
        local core = fake_core()
        local resp = request(core, "GET", "/admin/tail/7", "after=12")
        assert.equal(200, resp.status)
        assert.same({ 7, 12, false }, core.calls[1])
        resp = request(core, "DELETE", "/admin/tail/7")
        assert.equal(200, resp.status)
        assert.is_false(cjson.decode(resp.body).watching)
        assert.equal(404, request(core, "GET", "/admin/tail/404").status)
        assert.equal(503, request(core, "GET", "/admin/tail/503").status)
        assert.equal(422, request(core, "GET", "/admin/tail/abc").status)
    end)

    it("hands the feed to C with a 200 on its route", function()
        local resp = request(fake_core(), "GET", "/admin/feed")
        assert.equal(200, resp.status)
        assert.equal("/admin/feed", resp.route)
        assert.equal("text/event-stream", resp.content_type)
    end)

    it("serves the page without the token, and nothing else without it", function()
        local core = fake_core("s3cret")
        local page = request(core, "GET", "/ui/")
        assert.equal(200, page.status)
        assert.matches("console%.js", page.body)
        assert.matches("^text/html", page.content_type)
        local js = request(core, "GET", "/ui/console.js")
        assert.equal(200, js.status)
        assert.matches("^text/javascript", js.content_type)
        assert.equal(301, request(core, "GET", "/ui").status)
        assert.equal(401, request(core, "GET", "/admin/state").status)
        assert.equal(401, request(core, "GET", "/admin/feed").status)
        assert.equal(401, request(core, "POST", "/ui/").status)
        assert.equal(200, request(core, "GET", "/admin/state", "",
            { authorization = "Bearer s3cret" }).status)
    end)

    it("serves only the page's own files", function()
        local core = fake_core()
        for _, name in ipairs({ "..%2Fessd.yaml", "nope.js", ".hidden.js", "console.lua",
            "a..js" }) do
            assert.equal(404, request(core, "GET", "/ui/" .. name).status, name)
        end
    end)
end)
