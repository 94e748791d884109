-- Specs for the example hooks under lua/ess/examples/, each loaded through
-- ess.sandbox from the real Lua root as the gateway loads it, and for the
-- configurations under config/examples/ that select them.

local config = require "ess.config"
local options = require "ess.options"
local sandbox = require "ess.sandbox"
local cjson = require "cjson"
local helpers = require "helpers"

local host_recorder, load_hook, load_with_conf, msg_of = helpers.host_recorder,
    helpers.load_hook, helpers.load_with_conf, helpers.msg_of
local ES = helpers.ES

local default = load_hook("ess.enrich").enrich

describe("config/examples", function()
    local cases = {
        { "legacy", "enrich", "ess.examples.legacy" },
        { "filter", "enrich", "ess.examples.filter" },
        { "redact", "enrich", "ess.examples.redact" },
        { "routing_map", "route", "ess.examples.routing_map" },
    }
    for _, c in ipairs(cases) do
        it(c[1] .. ".yaml is valid and selects a hook that loads", function()
            local cfg, err = config.load("config/examples/" .. c[1] .. ".yaml", {})
            assert.is_nil(err)
            assert.equal(c[3], cfg.lua[c[2]])
            local mod = assert(sandbox.load(cfg.lua[c[2]], cfg.lua.path, host_recorder()))
            assert.is_function(mod[c[2]])
            local opt = c[2] .. "_options"
            local conf, cerr = options.validate(c[3], mod.schema, cfg.lua[opt], "lua." .. opt)
            assert.is_nil(cerr)
            assert.is_table(conf)
            if mod.schema then
                -- The example configuration shows the options, not an empty mapping.
                assert.is_not_nil(next(cfg.lua[opt]), c[1] .. ".yaml: no " .. opt)
            end
        end)
    end

    it("every example declares a schema whose defaults validate", function()
        for _, name in ipairs({ "filter", "redact", "routing_map" }) do
            local mod = load_hook("ess.examples." .. name)
            assert.is_table(mod.schema, name)
            assert.same(options.defaults(mod.schema),
                assert(options.validate(name, mod.schema, {}, "lua.x")))
        end
    end)

    it("docs/lua.md lists every option of every example", function()
        local doc = helpers.read("docs/lua.md")
        for _, name in ipairs({ "filter", "redact", "routing_map" }) do
            local mod = load_hook("ess.examples." .. name)
            assert.truthy(doc:find("| `ess.examples." .. name .. "` | `", 1, true), name)
            for _, f in ipairs(mod.schema) do
                assert.truthy(doc:find("| `" .. f.name .. "` |", 1, true),
                    name .. ": option " .. f.name .. " missing from docs/lua.md")
            end
        end
    end)

    it("every example enrich passes the host's self-test samples", function()
        local samples = {
            '{"message_type":"MerchantProcessingCharge","ess_selftest":true}',
            'accountserver.MerchantProcessingCharge|timestamp: "2025-04-30T13:33:00Z"',
            "{not json",
        }
        for _, name in ipairs({ "legacy", "filter", "redact" }) do
            local mod, conf = load_with_conf("ess.examples." .. name)
            for _, body in ipairs(samples) do
                for _, out in ipairs({ mod.enrich(msg_of(body), ES, conf),
                    mod.enrich(msg_of(body), ES) }) do
                    assert.is_true(out == nil or type(out) == "string")
                end
            end
        end
    end)
end)

describe("ess.examples.legacy", function()
    local host, calls = host_recorder()
    local enrich = load_hook("ess.examples.legacy", host).enrich

    it("adds ess_ordinal and ess_timestamp to a JSON object, spliced", function()
        assert.equal('{"a":1.50,"b":"x","ess_ordinal":42,"ess_timestamp":1746019980000}',
            enrich(msg_of('{"a":1.50,"b":"x"}'), ES))
        assert.equal('  { "ess_ordinal":7,"ess_timestamp":1746019980000}\n',
            enrich(msg_of("  { }\n", nil, 7), ES))
        assert.equal('{"a":[],"ess_ordinal":9007199254740992,"ess_timestamp":1746019980000}',
            enrich(msg_of('{"a":[]}', nil, 2 ^ 53), ES))
    end)

    it("adds |ordinal: and |timestamp: to text", function()
        assert.equal("accountserver.Pod|x: 1|ordinal: 42|timestamp: 1746019980000",
            enrich(msg_of("accountserver.Pod|x: 1"), ES))
        assert.equal("|ordinal: 0|timestamp: 1746019980000", enrich(msg_of("", nil, 0), ES))
    end)

    it("forwards invalid JSON and binary unchanged, counting invalid JSON", function()
        assert.equal("{not json", enrich(msg_of("{not json"), ES))
        local bin = msg_of("\0\1{")
        bin.is_text = false
        assert.equal("\0\1{", enrich(bin, ES))
        assert.same({ "count", "enrich_invalid_json", 1 }, calls[1])
    end)

    it("is the default with the legacy names", function()
        local bodies = { '{"a":1}', "{}", " {\"k\": [1, 2]} ", "text", "[1]", "{bad", "" }
        for _, body in ipairs(bodies) do
            local want = default(msg_of(body), ES):gsub('"ess_offset"', '"ess_ordinal"')
                :gsub("|offset: ", "|ordinal: ")
            assert.equal(want, enrich(msg_of(body), ES))
        end
    end)

    it("uses the host's ess.json_object when there is one, with the same output", function()
        -- A stand-in with the C validator's contract: index of the closing
        -- "}" and whether the object is empty, or nil and a reason.
        local used = 0
        local with = host_recorder()
        with.json_object = function(s)
            used = used + 1
            local ok, v = pcall(cjson.decode, s)
            if not ok or type(v) ~= "table" or not s:find("^%s*{") then
                return nil, "not a JSON object"
            end
            return s:find("}%s*$"), s:find("^%s*{%s*}%s*$") ~= nil
        end
        local fast = load_hook("ess.examples.legacy", with).enrich
        local bodies = { '{"a":1}', "{}", " {\"k\": [1, 2]} \n", "{ }", "{bad", "[1]" }
        for _, body in ipairs(bodies) do
            assert.equal(enrich(msg_of(body), ES), fast(msg_of(body), ES))
        end
        assert.equal(#bodies - 1, used)
    end)

    it("uses the host's ess.json_splice when there is one, with the same output", function()
        -- A stand-in with the C splice's contract (core/util/json.h).
        local splices = {}
        local with = host_recorder()
        with.json_splice = function(s, a, b, first, more, mid)
            splices[#splices + 1] = { first, more, mid }
            local ok, v = pcall(cjson.decode, s)
            if not ok or type(v) ~= "table" or not s:find("^%s*{") then
                return nil, "not a JSON object"
            end
            local close = s:find("}%s*$")
            local empty = s:find("^%s*{%s*}%s*$") ~= nil
            return s:sub(1, close - 1) .. (empty and first or more) .. string.format("%d", a) .. mid
                .. string.format("%d", b) .. s:sub(close)
        end
        local fast = load_hook("ess.examples.legacy", with).enrich
        local bodies = { '{"a":1}', "{}", " {\"k\": [1, 2]} \n", "{ }", "{bad", "[1]", "text" }
        for _, body in ipairs(bodies) do
            assert.equal(enrich(msg_of(body), ES), fast(msg_of(body), ES))
        end
        assert.equal(#bodies - 2, #splices)
        assert.same({ '"ess_ordinal":', ',"ess_ordinal":', ',"ess_timestamp":' }, splices[1])
    end)

    it("never reads msg.properties", function()
        local msg, reads = msg_of('{"a":1}')
        enrich(msg, ES)
        assert.equal(0, reads.n)
    end)
end)

describe("ess.examples.filter", function()
    local host, calls = host_recorder()
    local filter = load_hook("ess.examples.filter", host)
    local enrich = filter.enrich

    it("keeps a listed JSON message_type, enriched by the default", function()
        local body = '{"message_type":"MerchantStorageCharge","n":1}'
        assert.equal(default(msg_of(body), ES), enrich(msg_of(body), ES))
    end)

    it("skips an unlisted JSON message_type and counts it", function()
        assert.is_nil(enrich(msg_of('{"n":1, "message_type" : "Pod"}'), ES))
        assert.same({ "count", "filter_skipped", 1 }, calls[#calls])
    end)

    it("reads the text form's type", function()
        assert.is_nil(enrich(msg_of('accountserver.Pod|timestamp: "x"'), ES))
        local kept = 'accountserver.MerchantProcessingCharge|timestamp: "x"'
        assert.equal(default(msg_of(kept), ES), enrich(msg_of(kept), ES))
    end)

    it("falls back to msg.properties.message_type, read only when needed", function()
        local msg, reads = msg_of("plain", { message_type = "Pod" })
        assert.is_nil(enrich(msg, ES))
        assert.equal(1, reads.n)
        msg = msg_of("plain", { message_type = "MerchantProcessingCharge" })
        assert.is_string(enrich(msg, ES))
        -- The body's type wins and the properties are not built.
        msg, reads = msg_of('{"message_type":"MerchantProcessingCharge"}',
            { message_type = "Pod" })
        assert.is_string(enrich(msg, ES))
        assert.equal(0, reads.n)
    end)

    it("keeps untyped messages: nested, in a string, invalid JSON, binary", function()
        for _, body in ipairs({ '{"x":{"message_type":"Pod"}}', '{"note":"message_type"}',
            '{"message_type":"Pod"', '{"message_type":7}', "no type here" }) do
            assert.equal(default(msg_of(body), ES), enrich(msg_of(body), ES))
        end
        local bin = msg_of("\255\0")
        bin.is_text = false
        assert.equal("\255\0", enrich(bin, ES))
    end)

    it("exposes message_type()", function()
        assert.equal("Pod", filter.message_type(msg_of('{"message_type":"Pod"}')))
        assert.is_nil(filter.message_type(msg_of("{}")))
    end)

    it("takes keep and keep_untyped from its options", function()
        local mod, conf = load_with_conf("ess.examples.filter",
            { keep = { "Pod" }, keep_untyped = false }, host)
        local pod = '{"message_type":"Pod"}'
        assert.equal(default(msg_of(pod), ES), mod.enrich(msg_of(pod), ES, conf))
        assert.is_nil(mod.enrich(msg_of('{"message_type":"MerchantStorageCharge"}'), ES, conf))
        assert.is_nil(mod.enrich(msg_of("no type here"), ES, conf))
        -- Another conf (a reload) takes effect at once.
        local _, conf2 = load_with_conf("ess.examples.filter", { keep = {} })
        assert.is_nil(mod.enrich(msg_of(pod), ES, conf2))
        assert.is_string(mod.enrich(msg_of("no type here"), ES, conf2))
    end)

    it("refuses bad options, naming the key", function()
        local function err_of(given)
            local ok, err = pcall(load_with_conf, "ess.examples.filter", given)
            assert.is_false(ok)
            return err
        end
        assert.equal("config: lua.enrich_options.keep: expected a list of strings, got"
            .. ' "Pod"', err_of({ keep = "Pod" }))
        assert.equal("config: lua.enrich_options.keep[2]: expected a string, got 3",
            err_of({ keep = { "Pod", 3 } }))
        assert.equal("config: lua.enrich_options.keep_untyped: expected a boolean, got"
            .. ' "no"', err_of({ keep_untyped = "no" }))
        assert.equal('config: lua.enrich_options: unknown key "kep" (module'
            .. " ess.examples.filter takes: keep, keep_untyped)", err_of({ kep = { "Pod" } }))
    end)
end)

describe("ess.examples.redact", function()
    local host, calls = host_recorder()
    local mod = load_hook("ess.examples.redact", host)
    local enrich, redact = mod.enrich, mod.redact

    it("masks and removes configured members, keeping the rest byte for byte", function()
        assert.equal('{"a":1.50,"card_number":"***","z":"\\u00e9"}',
            redact('{"a":1.50,"card_number":"4111 1111","password":"pw","z":"\\u00e9"}'))
        assert.equal("{}", redact('{"password":"x"}'))
        assert.equal(' {"n":{"k":[{"card_number":"***"},3]},"z":true} ',
            redact(' {"n":{"password":[1,{"x":2}],"k":[{"card_number":5},3]},"z":true} '))
        assert.equal('{"x":2}', redact('{"password":1, "x":2, "password":3}'))
        assert.equal('{"b":"\\"password\\""}', redact('{"pass\\u0077ord":1,"b":"\\"password\\""}'))
    end)

    it("leaves bodies without the fields alone", function()
        for _, body in ipairs({ '{"a":"password"}', '{"x":{"y":"card_number"}}', "[1]",
            '["password"]', "{bad password", "password: text", '{"a":"\\u0041"}' }) do
            assert.is_nil(redact(body))
        end
    end)

    it("enriches after redacting, and counts", function()
        assert.equal('{"a":1,"ess_offset":42,"ess_timestamp":1746019980000}',
            enrich(msg_of('{"a":1,"password":"x"}'), ES))
        assert.same({ "count", "redacted", 1 }, calls[#calls])
        assert.equal("password: x|offset: 42|timestamp: 1746019980000",
            enrich(msg_of("password: x"), ES))
        assert.equal(default(msg_of('{"a":1}'), ES), enrich(msg_of('{"a":1}'), ES))
    end)

    it("skips a message it could not scan rather than send it unredacted", function()
        -- A host validator that wrongly accepts a truncated body.
        local liar, lcalls = host_recorder()
        liar.json_object = function(b) return #b, false end
        local hook = load_hook("ess.examples.redact", liar)
        assert.is_false(hook.redact('{"password":"x", "a":[1,'))
        assert.is_nil(hook.enrich(msg_of('{"password":"x", "a":[1,'), ES))
        assert.same({ "count", "redact_failed", 1 }, lcalls[#lcalls])
    end)

    -- Random nested documents: the output decodes to the input minus the
    -- removed members, with masked values replaced.
    it("takes fields and mask from its options", function()
        local _, conf = load_with_conf("ess.examples.redact",
            { fields = { secret = "mask", card_number = "remove" }, mask = 'x"y' })
        assert.equal('{"secret":"x\\"y","a":1}',
            redact('{"secret":{"deep":1},"card_number":"4111","a":1}', conf))
        assert.is_nil(redact('{"password":"kept now"}', conf))
        local ok, err = pcall(load_with_conf, "ess.examples.redact",
            { fields = { password = "hide" } })
        assert.is_false(ok)
        assert.equal("config: lua.enrich_options.fields.password: expected a string (one of"
            .. ' mask, remove), got "hide"', err)
    end)

    it("matches a table-level redaction on 300 random documents", function()
        math.randomseed(5)
        local keys = { "a", "b", "password", "card_number", "c" }
        local function gen(depth)
            local r = math.random(depth > 2 and 3 or 5)
            if r == 1 then
                return math.random(-1000, 1000)
            elseif r == 2 then
                return keys[math.random(#keys)]
            elseif r == 3 then
                return math.random(2) == 1
            elseif r == 4 then
                local t = {}
                for i = 1, math.random(0, 3) do
                    t[i] = gen(depth + 1)
                end
                return t
            end
            local t = {}
            for _ = 1, math.random(0, 4) do
                t[keys[math.random(#keys)]] = gen(depth + 1)
            end
            return t
        end
        local function expect(v)
            if type(v) ~= "table" then
                return v
            end
            local out = {}
            for k, x in pairs(v) do
                if k == "card_number" then
                    out[k] = "***"
                elseif k ~= "password" then
                    out[k] = expect(x)
                end
            end
            return out
        end
        local enc = cjson.new()
        for _ = 1, 300 do
            local doc = gen(0)
            doc = type(doc) == "table" and doc or { a = doc }
            doc.password = doc.password or "secret"
            local body = enc.encode(doc)
            local out = redact(body)
            assert.is_string(out)
            assert.is_nil(out:find("secret", 1, true))
            assert.same(expect(cjson.decode(body)), cjson.decode(out))
        end
    end)
end)

describe("ess.jsonscan", function()
    local scan = load_hook("ess.jsonscan")

    it("finds a top-level member, the last of repeated names", function()
        local s = ' { "a":{"message_type":"X"}, "message_type" : "Y\\u0041" , "z":[1,"]}"]} '
        assert.equal("YA", scan.string_member(s, "message_type"))
        assert.equal("B", scan.string_member('{"message_type":"A","message_type":"B"}',
            "message_type"))
        assert.equal("K", scan.string_member('{"m\\u0061rk":"K"}', "mark"))
        assert.is_nil(scan.string_member('{"x":"message_type","message_type":7}',
            "message_type"))
        assert.is_nil(scan.string_member("{}", "message_type"))
        local vs, ve = scan.member('{"a" : [1, {"b": "]"}] , "c":0}', "a")
        assert.equal('[1, {"b": "]"}]', ('{"a" : [1, {"b": "]"}] , "c":0}'):sub(vs, ve - 1))
    end)

    it("finds the end of every kind of value", function()
        local cases = { { '"a\\"b"x', 7 }, { "123,", 4 }, { "true}", 5 }, { "null", 5 },
            { '[[],{"a":"}"}] ', 15 }, { '{"a":{"b":[1]}}', 16 } }
        for _, c in ipairs(cases) do
            assert.equal(c[2], scan.value_end(c[1], 1), c[1])
        end
    end)

    it("is_object accepts only one JSON object", function()
        for _, s in ipairs({ "{}", ' {"a":1}\n' }) do
            assert.is_true(scan.is_object(s))
        end
        for _, s in ipairs({ "[]", "{", '{"a":1} x', "", "1" }) do
            assert.is_falsy(scan.is_object(s))
        end
    end)
end)

describe("ess.examples.routing_map", function()
    local mod = load_hook("ess.examples.routing_map")
    local route = mod.route
    local function es(key)
        return { id = 1, uuid = "u", routing_key = key }
    end

    it("sends listed and prefixed keys to classic mode", function()
        for _, key in ipairs({ "billing.legacy", "legacy.orders", "v1.x" }) do
            assert.same({ mode = "classic", exchange = "event-streams", routing_key = key },
                route(es(key), {}))
        end
    end)

    it("sends the rest to the stream of the same name", function()
        for _, key in ipairs({ "orders", "legacyorders", "billing.legacy2", "v1" }) do
            assert.same({ mode = "stream", stream = key }, route(es(key), {}))
        end
    end)

    it("renames streams and picks classic keys from its options", function()
        local _, conf = load_with_conf("ess.examples.routing_map", {
            streams = { orders = "orders-2025" }, classic = { "billing" },
            classic_prefixes = { "old." }, exchange = "x",
        }, nil, "lua.route_options")
        assert.same({ mode = "stream", stream = "orders-2025" }, route(es("orders"), {}, conf))
        assert.same({ mode = "stream", stream = "legacy.a" }, route(es("legacy.a"), {}, conf))
        for _, key in ipairs({ "billing", "old.y" }) do
            assert.same({ mode = "classic", exchange = "x", routing_key = key },
                route(es(key), {}, conf))
        end
        assert.same({ mode = "stream", stream = "orders" }, route(es("orders"), {}))
        local ok, err = pcall(load_with_conf, "ess.examples.routing_map", { exchange = "" },
            nil, "lua.route_options")
        assert.is_false(ok)
        assert.equal('config: lua.route_options.exchange: expected a string 1..255 in length,'
            .. ' got ""', err)
    end)

    it("uses classic mode for everything on a version 1 broker", function()
        assert.same({ mode = "classic", exchange = "event-streams", routing_key = "orders" },
            route(es("orders"), { broker = { version = 1 } }))
        assert.same({ mode = "stream", stream = "orders" },
            route(es("orders"), { broker = { version = 2 } }))
    end)
end)
