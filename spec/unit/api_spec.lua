-- Specs for ess.api: every route of the internal API against a fake core
-- with the same shape as the C side's, including the error answers.

local api = require "ess.api"
local config = require "ess.config"
local cjson = require("cjson").new()
local helpers = require "helpers"

local OPENAPI = "lua/ess/api/openapi.json"

-- A fake core: an in-memory registry with the C side's contract.
local function fake_core(overrides)
    local rows, next_id = {}, 1
    local core = {
        config = assert(config.validate(nil, {})),
        name = "essd",
        version = "0.1.0",
        openapi_path = OPENAPI,
        logs = {},
        created = {},
        deleted = {},
    }
    function core.registry_create(key)
        core.created[#core.created + 1] = key
        local row = { id = next_id, uuid = "uuid-" .. next_id, routing_key = key,
            created = 1700000000000 }
        next_id = next_id + 1
        rows[#rows + 1] = row
        return row
    end
    function core.registry_list()
        return rows
    end
    function core.registry_delete(id)
        core.deleted[#core.deleted + 1] = id
        for i, row in ipairs(rows) do
            if row.id == id then
                table.remove(rows, i)
                return true
            end
        end
        return false
    end
    function core.metrics_text()
        return "# TYPE essd_up gauge\nessd_up 1\n"
    end
    function core.ready()
        return true, { registry = true, broker = true }
    end
    function core.log(level, msg)
        core.logs[#core.logs + 1] = level .. ": " .. msg
    end
    for k, v in pairs(overrides or {}) do
        core[k] = v
    end
    return core
end

local function request(core, method, path, body, headers)
    local resp = api.handle({ method = method, path = path, query = "", body = body or "",
        headers = headers or {} }, core)
    assert.is_table(resp)
    assert.is_number(resp.status)
    assert.is_string(resp.body)
    assert.is_string(resp.content_type)
    assert.is_string(resp.route)
    return resp
end

local function decoded(resp)
    return cjson.decode(resp.body)
end

local function post_key(core, key)
    return request(core, "POST", "/event-stream/", cjson.encode({ routing_key = key }))
end

describe("ess.api", function()
    local core
    before_each(function()
        core = fake_core()
    end)

    describe("GET /event-stream/version/", function()
        it("answers with and without the trailing slash", function()
            for _, path in ipairs({ "/event-stream/version/", "/event-stream/version" }) do
                local resp = request(core, "GET", path)
                assert.equal(200, resp.status)
                assert.equal("application/json", resp.content_type)
                assert.equal('{"protocol":"WEBSOCKET","name":"essd","version":"0.1.0"}',
                    resp.body)
                assert.equal("/event-stream/version/", resp.route)
            end
        end)
    end)

    describe("POST /event-stream/", function()
        it("creates an event stream and answers 201 with its location", function()
            local resp = request(core, "POST", "/event-stream/", '{"routing_key":"abc"}')
            assert.equal(201, resp.status)
            assert.equal('{"id":1,"location":"ws://localhost:8080/event-stream/uuid-1"}',
                resp.body)
            assert.equal("/event-stream/", resp.route)
            assert.same({ "abc" }, core.created)
        end)

        it("works without the trailing slash", function()
            local resp = request(core, "POST", "/event-stream", '{"routing_key":"abc"}')
            assert.equal(201, resp.status)
        end)

        it("gives wss:// locations and the configured ingress", function()
            core.config.ingress.secure = true
            core.config.ingress.location = "events.example.com"
            local resp = post_key(core, "abc")
            assert.equal("wss://events.example.com/event-stream/uuid-1", decoded(resp).location)
        end)

        it("ignores unknown keys in the body", function()
            local resp = request(core, "POST", "/event-stream/",
                '{"routing_key":"abc","extra":[1,2,{"x":null}],"n":1e400}')
            assert.equal(201, resp.status)
        end)

        it("prints big ids exactly", function()
            core.registry_create = function(key)
                return { id = 2 ^ 53 - 1, uuid = "u", routing_key = key, created = 0 }
            end
            local resp = post_key(core, "abc")
            assert.equal('{"id":9007199254740991,"location":"ws://localhost:8080/event-stream/u"}',
                resp.body)
        end)

        local function detail_of(body)
            local resp = request(core, "POST", "/event-stream/", body)
            assert.equal(422, resp.status, body)
            local d = decoded(resp).detail
            assert.is_table(d)
            assert.equal(1, #d)
            return d[1]
        end

        it("answers 422 for a body that is not JSON", function()
            local d = detail_of('{"routing_key": ')
            assert.equal("value_error.jsondecode", d.type)
            assert.equal("body", d.loc[1])
            assert.is_number(d.loc[2])
            assert.matches("^Expecting value: line 1 column 17 %(char 16%)$", d.msg)
            d = detail_of("not json")
            assert.same({ "body", 0 }, d.loc)
            assert.equal("Expecting value: line 1 column 1 (char 0)", d.msg)
        end)

        it("reports the line and column of a JSON error", function()
            local d = detail_of('{\n  "routing_key": "a",\n  oops\n}')
            assert.equal("value_error.jsondecode", d.type)
            assert.equal(3, d.ctx.lineno)
            assert.equal(3, d.ctx.colno)
        end)

        it("answers 422 for an empty body", function()
            local d = detail_of("")
            assert.same({ "body" }, d.loc)
            assert.equal("field required", d.msg)
            assert.equal("value_error.missing", d.type)
        end)

        it("answers 422 for a body that is not an object", function()
            for _, body in ipairs({ "[]", '["routing_key"]', "5", '"abc"', "null", "true",
                "[{}]" }) do
                local d = detail_of(body)
                assert.same({ "body" }, d.loc)
                assert.equal("type_error.dict", d.type)
            end
        end)

        it("answers 422 when routing_key is missing", function()
            for _, body in ipairs({ "{}", '{"routingkey":"a"}', '{"Routing_Key":"a"}' }) do
                local d = detail_of(body)
                assert.same({ "body", "routing_key" }, d.loc)
                assert.equal("field required", d.msg)
                assert.equal("value_error.missing", d.type)
            end
        end)

        it("answers 422 for a null routing_key", function()
            local d = detail_of('{"routing_key":null}')
            assert.same({ "body", "routing_key" }, d.loc)
            assert.equal("type_error.none.not_allowed", d.type)
        end)

        it("answers 422 for a routing_key of the wrong type", function()
            for _, v in ipairs({ "1", "1.5", "true", "false", "[]", '["a"]', "{}",
                '{"a":"b"}' }) do
                local d = detail_of('{"routing_key":' .. v .. "}")
                assert.same({ "body", "routing_key" }, d.loc)
                assert.equal("str type expected", d.msg)
                assert.equal("type_error.str", d.type)
            end
        end)

        it("answers 422 for an empty routing_key", function()
            local d = detail_of('{"routing_key":""}')
            assert.equal("value_error.any_str.min_length", d.type)
            assert.equal(1, d.ctx.limit_value)
        end)

        it("accepts 255 bytes and answers 422 for 256", function()
            local ok = post_key(core, ("k"):rep(255))
            assert.equal(201, ok.status)
            local d = detail_of(cjson.encode({ routing_key = ("k"):rep(256) }))
            assert.equal("value_error.any_str.max_length", d.type)
            assert.equal(255, d.ctx.limit_value)
            -- 255 bytes of multi-byte characters: 85 x "€" (3 bytes each).
            assert.equal(201, post_key(core, ("\226\130\172"):rep(85)).status)
            d = detail_of(cjson.encode({ routing_key = ("\226\130\172"):rep(86) }))
            assert.equal("value_error.any_str.max_length", d.type)
        end)

        it("answers 422 for control characters", function()
            for _, esc in ipairs({ "\\u0000", "\\u0001", "\\n", "\\t", "\\r", "\\u001f",
                "\\u007f", "\t" }) do
                local d = detail_of('{"routing_key":"a' .. esc .. 'b"}')
                assert.same({ "body", "routing_key" }, d.loc)
                assert.equal("value_error.str.control_characters", d.type)
            end
        end)

        it("answers 422 for invalid UTF-8", function()
            for _, bad in ipairs({ "\255", "\192\175", "\237\160\128", "\244\144\128\128",
                "\226\130", "a\128b", "\248\136\128\128\128" }) do
                local d = detail_of('{"routing_key":"' .. bad .. '"}')
                assert.same({ "body", "routing_key" }, d.loc)
                assert.equal("value_error.str.unicode", d.type)
            end
            -- A lone surrogate escape is not even valid JSON for the decoder.
            assert.equal(422, request(core, "POST", "/event-stream/",
                '{"routing_key":"\\ud800"}').status)
        end)

        it("does not call the registry for an invalid body", function()
            detail_of('{"routing_key":""}')
            detail_of("nope")
            assert.same({}, core.created)
        end)

        it("answers 503 when the registry fails, and logs why", function()
            core.registry_create = function()
                return nil, "database is locked"
            end
            local resp = post_key(core, "abc")
            assert.equal(503, resp.status)
            assert.equal('{"detail":"Event stream registry unavailable"}', resp.body)
            assert.matches("database is locked", core.logs[1])
        end)
    end)

    describe("with an asynchronous registry (registry.backend: stream)", function()
        -- The C side returns a deferred marker and later calls the
        -- continuation the handler passed; what that returns is the response.
        local kept
        before_each(function()
            kept = nil
            core.registry_create = function(_, k)
                kept = k
                return { deferred = true }
            end
            core.registry_delete = function(_, k)
                kept = k
                return { deferred = true }
            end
        end)

        local function handle(method, path, body)
            return api.handle({ method = method, path = path, query = "", body = body or "",
                headers = {} }, core)
        end

        it("POST returns the marker, then the continuation answers 201", function()
            local marker = handle("POST", "/event-stream/", '{"routing_key":"abc"}')
            assert.is_true(marker.deferred)
            assert.equal("/event-stream/", marker.route)
            assert.is_function(kept)
            local resp = kept({ id = 7, uuid = "u7", routing_key = "abc", created = 0 })
            assert.equal(201, resp.status)
            assert.equal('{"id":7,"location":"ws://localhost:8080/event-stream/u7"}', resp.body)
        end)

        it("POST answers 503 when the registry says it is unavailable or timed out", function()
            handle("POST", "/event-stream/", '{"routing_key":"abc"}')
            local resp = kept(nil, "no answer from the registry stream in registry.timeout_ms")
            assert.equal(503, resp.status)
            assert.equal('{"detail":"Event stream registry unavailable"}', resp.body)
        end)

        it("a body error is answered at once, without the registry", function()
            local resp = handle("POST", "/event-stream/", '{"routing_key":""}')
            assert.equal(422, resp.status)
            assert.is_nil(kept)
        end)

        it("DELETE answers 204, 404 or 503 from the continuation", function()
            local marker = handle("DELETE", "/event-stream/3")
            assert.is_true(marker.deferred)
            assert.equal(204, kept(true).status)
            local resp = kept(false)
            assert.equal(404, resp.status)
            assert.equal('{"detail":"EventStream 3 is not known"}', resp.body)
            assert.equal(503, kept(nil, "the registry stream is unavailable").status)
        end)
    end)

    describe("GET /event-stream/", function()
        it("lists an empty registry as []", function()
            for _, path in ipairs({ "/event-stream/", "/event-stream" }) do
                local resp = request(core, "GET", path)
                assert.equal(200, resp.status)
                assert.equal('{"event_streams":[]}', resp.body)
            end
        end)

        it("lists event streams in id order with their locations", function()
            post_key(core, "a")
            post_key(core, "b")
            local resp = request(core, "GET", "/event-stream/")
            assert.equal('{"event_streams":[{"id":1,"location":"ws://localhost:8080/event-stream/'
                .. 'uuid-1","routing_key":"a"},{"id":2,"location":"ws://localhost:8080/'
                .. 'event-stream/uuid-2","routing_key":"b"}]}', resp.body)
        end)

        it("round-trips weird routing keys verbatim", function()
            local keys = {
                'with "quotes"', "'; DROP TABLE event_streams; --", "a/b\\c",
                "日本語のキー", "emoji \240\159\152\128", "<script>alert(1)</script>",
                ("x"):rep(255), " spaces  ", "tab-less.dots:and:colons", "%s%d%%",
                "\226\128\168 line separator",
            }
            for _, k in ipairs(keys) do
                assert.equal(201, post_key(core, k).status, k)
            end
            assert.same(keys, core.created)
            local list = decoded(request(core, "GET", "/event-stream/")).event_streams
            assert.equal(#keys, #list)
            for i, k in ipairs(keys) do
                assert.equal(k, list[i].routing_key)
                assert.equal(i, list[i].id)
            end
        end)

        it("answers 503 when the registry cannot be read", function()
            core.registry_list = function()
                return nil, "disk I/O error"
            end
            assert.equal(503, request(core, "GET", "/event-stream/").status)
        end)
    end)

    describe("DELETE /event-stream/{id}", function()
        it("deletes and answers 204 with an empty body", function()
            post_key(core, "a")
            local resp = request(core, "DELETE", "/event-stream/1")
            assert.equal(204, resp.status)
            assert.equal("", resp.body)
            assert.equal("/event-stream/{id}", resp.route)
            assert.equal('{"event_streams":[]}', request(core, "GET", "/event-stream/").body)
        end)

        it("works with a trailing slash", function()
            post_key(core, "a")
            assert.equal(204, request(core, "DELETE", "/event-stream/1/").status)
        end)

        it("answers 404 for an unknown id", function()
            local resp = request(core, "DELETE", "/event-stream/7")
            assert.equal(404, resp.status)
            assert.equal('{"detail":"EventStream 7 is not known"}', resp.body)
            post_key(core, "a")
            assert.equal(204, request(core, "DELETE", "/event-stream/1").status)
            assert.equal('{"detail":"EventStream 1 is not known"}',
                request(core, "DELETE", "/event-stream/1").body)
        end)

        it("reads leading zeros and a plus sign as the same id", function()
            post_key(core, "a")
            assert.equal(204, request(core, "DELETE", "/event-stream/+001").status)
            assert.same({ 1 }, core.deleted)
        end)

        it("answers 422 for a non-integer id", function()
            for _, id in ipairs({ "abc", "1.5", "1e3", "0x10", "1a", "--1", "%31", "version",
                " 1" }) do
                local resp = request(core, "DELETE", "/event-stream/" .. id)
                assert.equal(422, resp.status, id)
                assert.same({ { loc = { "path", "id" }, msg = "value is not a valid integer",
                    type = "type_error.integer" } }, decoded(resp).detail)
            end
            assert.same({}, core.deleted)
        end)

        it("answers 404 for negative ids and ids of 2^53 or more without asking the registry",
            function()
                for id, shown in pairs({ ["-1"] = "-1", ["-0"] = "0",
                    ["9007199254740992"] = "9007199254740992",
                    ["99999999999999999999999"] = "99999999999999999999999" }) do
                    local resp = request(core, "DELETE", "/event-stream/" .. id)
                    assert.equal(404, resp.status, id)
                    assert.equal('{"detail":"EventStream ' .. shown .. ' is not known"}',
                        resp.body)
                end
                assert.same({ 0 }, core.deleted) -- only "-0", which is id 0
            end)

        it("passes the largest exact id to the registry", function()
            assert.equal(404, request(core, "DELETE", "/event-stream/9007199254740991").status)
            assert.same({ 2 ^ 53 - 1 }, core.deleted)
        end)

        it("answers 503 when the registry fails", function()
            core.registry_delete = function()
                return nil, "database is locked"
            end
            assert.equal(503, request(core, "DELETE", "/event-stream/1").status)
        end)
    end)

    describe("health", function()
        it("GET /health/live answers ok", function()
            local resp = request(core, "GET", "/health/live")
            assert.equal(200, resp.status)
            assert.equal('{"status":"ok"}', resp.body)
            assert.equal("/health/live", resp.route)
            assert.equal(200, request(core, "GET", "/health/live/").status)
        end)

        it("GET /health/ready answers 200 with the checks", function()
            local resp = request(core, "GET", "/health/ready")
            assert.equal(200, resp.status)
            assert.equal('{"status":"ready","checks":{"broker":true,"registry":true}}',
                resp.body)
        end)

        it("GET /health/ready answers 503 when not ready", function()
            core.ready = function()
                return false, { registry = true, broker = "connection refused" }
            end
            local resp = request(core, "GET", "/health/ready")
            assert.equal(503, resp.status)
            assert.same({ status = "not ready", checks = { registry = true,
                broker = "connection refused" } }, decoded(resp))
        end)

        it("encodes empty checks as an object", function()
            core.ready = function()
                return true, {}
            end
            assert.equal('{"status":"ready","checks":{}}',
                request(core, "GET", "/health/ready").body)
        end)
    end)

    describe("GET /metrics", function()
        it("returns the C side's text with the Prometheus content type", function()
            local resp = request(core, "GET", "/metrics")
            assert.equal(200, resp.status)
            assert.equal("text/plain; version=0.0.4; charset=utf-8", resp.content_type)
            assert.equal("# TYPE essd_up gauge\nessd_up 1\n", resp.body)
            assert.equal("/metrics", resp.route)
        end)
    end)

    describe("POST /admin/reload", function()
        it("answers 501 when the core cannot reload", function()
            local resp = request(core, "POST", "/admin/reload")
            assert.equal(501, resp.status)
            assert.equal('{"detail":"reload not available"}', resp.body)
        end)

        it("answers 200 with the result", function()
            core.reload = function()
                return true, { status = "reloaded", generation = 2 }
            end
            local resp = request(core, "POST", "/admin/reload")
            assert.equal(200, resp.status)
            assert.same({ status = "reloaded", generation = 2 }, decoded(resp))
        end)

        it("answers 422 with the error", function()
            core.reload = function()
                return false, { detail = "config: essd.yaml:3:1: did not find expected key",
                    file = "essd.yaml", line = 3 }
            end
            local resp = request(core, "POST", "/admin/reload")
            assert.equal(422, resp.status)
            assert.equal(3, decoded(resp).line)
        end)

        it("wraps a plain error string", function()
            core.reload = function()
                return false, "ess.enrich: syntax error"
            end
            local resp = request(core, "POST", "/admin/reload")
            assert.equal(422, resp.status)
            assert.equal('{"detail":"ess.enrich: syntax error"}', resp.body)
        end)

        it("is POST only", function()
            local resp = request(core, "GET", "/admin/reload")
            assert.equal(405, resp.status)
            assert.equal("POST", resp.headers.Allow)
        end)
    end)

    describe("GET /openapi.json", function()
        it("returns the document from core.openapi_path", function()
            local text = helpers.read(OPENAPI)
            local resp = request(core, "GET", "/openapi.json")
            assert.equal(200, resp.status)
            assert.equal("application/json", resp.content_type)
            assert.equal(text, resp.body)
        end)

        it("answers 500 without a stack trace when the file is missing", function()
            core.openapi_path = "/nonexistent/openapi.json"
            local resp = request(core, "GET", "/openapi.json")
            assert.equal(500, resp.status)
            assert.equal('{"detail":"OpenAPI document unavailable"}', resp.body)
            assert.equal(1, #core.logs)
        end)
    end)

    describe("unknown paths and methods", function()
        it("answers 404 JSON for an unknown path", function()
            for _, path in ipairs({ "/", "", "/nope", "/event-stream/1/2", "/event-streams/",
                "/health", "/health/other", "/metrics/x", "//", "/EVENT-STREAM/" }) do
                local resp = request(core, "GET", path)
                assert.equal(404, resp.status, path)
                assert.equal('{"detail":"Not Found"}', resp.body)
                assert.equal("unmatched", resp.route)
            end
        end)

        it("answers 405 with an Allow header for a wrong method", function()
            local cases = {
                { "PUT", "/event-stream/", "GET, POST" },
                { "DELETE", "/event-stream/", "GET, POST" },
                { "GET", "/event-stream/5", "DELETE" },
                { "POST", "/event-stream/5", "DELETE" },
                { "POST", "/health/live", "GET" },
                { "DELETE", "/metrics", "GET" },
                { "HEAD", "/openapi.json", "GET" },
                { "get", "/event-stream/version/", "DELETE, GET" }, -- also matches {id}
            }
            for _, c in ipairs(cases) do
                local resp = request(core, c[1], c[2])
                assert.equal(405, resp.status, c[1] .. " " .. c[2])
                assert.equal('{"detail":"Method Not Allowed"}', resp.body)
                assert.equal(c[3], resp.headers.Allow)
            end
        end)

        it("reads DELETE /event-stream/version/ as an id, like the original service", function()
            assert.equal(422, request(core, "DELETE", "/event-stream/version/").status)
        end)

        it("ignores a query string left in the path", function()
            assert.equal(200, request(core, "GET", "/event-stream/?x=1").status)
        end)
    end)

    describe("bearer token", function()
        before_each(function()
            core.config.internal.api_token = "s3cret-token"
        end)

        it("answers 401 without the token, before routing details leak", function()
            for _, c in ipairs({ { "GET", "/event-stream/" }, { "POST", "/event-stream/" },
                { "DELETE", "/event-stream/1" }, { "GET", "/metrics" },
                { "GET", "/openapi.json" }, { "POST", "/admin/reload" },
                { "GET", "/event-stream/version/" }, { "GET", "/nope" },
                { "PUT", "/event-stream/" } }) do
                local resp = request(core, c[1], c[2], '{"routing_key":"a"}')
                assert.equal(401, resp.status, c[1] .. " " .. c[2])
                assert.equal('{"detail":"Not authenticated"}', resp.body)
                assert.equal("Bearer", resp.headers["WWW-Authenticate"])
            end
            assert.same({}, core.created)
        end)

        it("answers 401 for a wrong token or scheme", function()
            for _, h in ipairs({ "Bearer s3cret-toke", "Bearer s3cret-token2", "Bearer ",
                "Basic s3cret-token", "s3cret-token", "Bearer S3CRET-TOKEN", "" }) do
                local resp = request(core, "GET", "/event-stream/", nil, { authorization = h })
                assert.equal(401, resp.status, h)
            end
        end)

        it("accepts the right token", function()
            for _, h in ipairs({ "Bearer s3cret-token", "bearer s3cret-token",
                "BEARER   s3cret-token  " }) do
                local resp = request(core, "GET", "/event-stream/", nil, { authorization = h })
                assert.equal(200, resp.status, h)
            end
        end)

        it("leaves /health/* open", function()
            assert.equal(200, request(core, "GET", "/health/live").status)
            assert.equal(200, request(core, "GET", "/health/ready").status)
        end)

        it("is off when the token is empty", function()
            core.config.internal.api_token = ""
            assert.equal(200, request(core, "GET", "/event-stream/").status)
        end)

        it("compares secrets by content and length", function()
            assert.is_true(api.same_secret("abc", "abc"))
            assert.is_false(api.same_secret("abc", "abd"))
            assert.is_false(api.same_secret("abc", "abcd"))
            assert.is_false(api.same_secret("", "a"))
            assert.is_false(api.same_secret("a\0", "a"))
        end)
    end)

    describe("robustness", function()
        it("turns a failing handler into a clean 500 and logs it", function()
            core.registry_list = function()
                error("boom in C binding")
            end
            local resp = request(core, "GET", "/event-stream/")
            assert.equal(500, resp.status)
            assert.equal('{"detail":"Internal Server Error"}', resp.body)
            assert.equal("/event-stream/", resp.route)
            assert.matches("boom in C binding", core.logs[1])
        end)

        it("survives a malformed request table", function()
            for _, req in ipairs({ {}, { method = 5, path = {} }, { method = "GET" },
                { path = "/event-stream/", method = "POST", body = 42 },
                { path = "/event-stream/", method = "GET", headers = "x" } }) do
                local resp = api.handle(req, core)
                assert.is_number(resp.status)
                assert.is_string(resp.body)
            end
            assert.equal(500, api.handle(nil, core).status)
        end)

        it("never raises for hostile bodies", function()
            local bodies = {
                "", " ", "{", "}", "[", "]", "{}", "[]", "null", "true", "0", "-0", "1e999",
                "NaN", "Infinity", "-Infinity", "0x10", '"', '"\\', '{"routing_key"',
                '{"routing_key":}', '{"routing_key":"a",}', '{"routing_key":"a"}x',
                '{"routing_key":"a"} {"routing_key":"b"}', '{routing_key:"a"}',
                "{'routing_key':'a'}", '{"routing_key":"\\x41"}', '{"routing_key":"\\u12"}',
                '{"routing_key":"\\ud800\\udc00"}', '{"routing_key":"\\udc00"}',
                ("["):rep(10000), ("{\"a\":"):rep(5000), ('{"a":[' .. ("1,"):rep(20000) .. "1]}"),
                '{"routing_key":' .. ("9"):rep(400) .. "}", "\0", "\0{}",
                '{"routing_key":"a"}\0', "\255\254{}", "\239\187\191{}",
                '{"routing_key":{"routing_key":"a"}}', '{"routing_key":["a"]}',
                '{"routing_key":"' .. ("\\u0041"):rep(300) .. '"}',
                '{"routing_key":"a","routing_key":"b"}', '{"":""}', '{"__index":"x"}',
                '{"routing_key":"\\/"}', "\r\n\t {\"routing_key\" : \"ok\" } \r\n",
                ("a"):rep(70000), '{"routing_key":"' .. ("\255"):rep(100) .. '"}',
                '{"routing_key":-0.0}', '{"routing_key":1e-400}',
            }
            assert.is_true(#bodies >= 50)
            for _, body in ipairs(bodies) do
                local ok, resp = pcall(api.handle, { method = "POST", path = "/event-stream/",
                    query = "", body = body, headers = {} }, core)
                assert.is_true(ok, body:sub(1, 40))
                assert.is_true(resp.status == 201 or resp.status == 422,
                    body:sub(1, 40) .. " -> " .. tostring(resp.status))
                assert.is_true(pcall(cjson.decode, resp.body))
            end
        end)

        it("never raises for random bytes in paths, methods, bodies and headers", function()
            math.randomseed(12345)
            local function junk(n)
                local t = {}
                for i = 1, math.random(0, n) do
                    t[i] = string.char(math.random(0, 255))
                end
                return table.concat(t)
            end
            local methods = { "GET", "POST", "DELETE", "PUT", "", "\0" }
            local prefixes = { "/event-stream/", "/health/", "/", "/admin/", "" }
            core.config.internal.api_token = "t"
            for _ = 1, 2000 do
                local req = {
                    method = methods[math.random(#methods)],
                    path = prefixes[math.random(#prefixes)] .. junk(20),
                    query = junk(5),
                    body = math.random() < 0.5 and junk(60)
                        or '{"routing_key":"' .. junk(20) .. '"}',
                    headers = { authorization = math.random() < 0.5 and "Bearer t" or junk(10) },
                }
                local ok, resp = pcall(api.handle, req, core)
                assert.is_true(ok)
                assert.is_number(resp.status)
                assert.is_true(resp.status < 500, tostring(resp.status) .. " " .. resp.body)
                assert.is_true(pcall(cjson.decode, resp.body) or resp.body == ""
                    or resp.route == "/metrics" or resp.route == "/openapi.json")
            end
        end)
    end)
end)
