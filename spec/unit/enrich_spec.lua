-- Specs for the default enrichment hook (ess.enrich): byte-exact splicing of
-- ess_offset/ess_timestamp into JSON objects, the text suffix, and bodies
-- that are forwarded unchanged.

local cjson = require("cjson").new()

describe("ess.enrich", function()
    local enrich, counted, logged
    local es = { id = 3, uuid = "uuid-3", routing_key = "orders" }

    before_each(function()
        counted, logged = {}, {}
        _G.ess = {
            count = function(name)
                counted[#counted + 1] = name
            end,
            log = function(level, msg)
                logged[#logged + 1] = { level, msg }
            end,
        }
        package.loaded["ess.enrich"] = nil
        enrich = require("ess.enrich").enrich
    end)

    after_each(function()
        _G.ess = nil
    end)

    local function run(body, offset, ts, is_text)
        return enrich({ body = body, offset = offset or 42, timestamp = ts or 1714483980000,
            is_text = is_text ~= false }, es)
    end

    describe("JSON objects", function()
        it("gains ess_offset and ess_timestamp as its last members", function()
            assert.equal('{"a":1,"ess_offset":42,"ess_timestamp":1714483980000}',
                run('{"a":1}'))
        end)

        it("adds no comma to an empty object", function()
            assert.equal('{"ess_offset":42,"ess_timestamp":1714483980000}', run("{}"))
            assert.equal('{ \n "ess_offset":42,"ess_timestamp":1714483980000}', run("{ \n }"))
        end)

        it("keeps nested objects, arrays and everything else byte for byte", function()
            local body = '{"z":{"y":[1,{"x":{}}],"w":{}},"a":[]}'
            assert.equal(body:sub(1, -2) .. ',"ess_offset":42,"ess_timestamp":1714483980000}',
                run(body))
        end)

        it("keeps leading and trailing whitespace and inserts before the final brace", function()
            assert.equal(' \t\r\n{"a" : 1 ,\n "b":2\n,"ess_offset":42,"ess_timestamp":'
                .. '1714483980000}\n\n', run(' \t\r\n{"a" : 1 ,\n "b":2\n}\n\n'))
        end)

        it("preserves escapes, number formats and key order exactly", function()
            local body = '{"s":"\\u00e9\\/\\"\\\\\\n","n":1.50,"e":1E+2,"neg":-0,'
                .. '"big":123456789012345678901234567890,"k":"é","b":true,"z":null,"a":0}'
            local out = run(body)
            assert.equal(body:sub(1, -2), out:sub(1, #body - 1))
            assert.equal(',"ess_offset":42,"ess_timestamp":1714483980000}', out:sub(#body))
            local decoded = cjson.decode(out)
            assert.equal(42, decoded.ess_offset)
            assert.equal(1714483980000, decoded.ess_timestamp)
        end)

        it("keeps a duplicate ess_offset published by the producer", function()
            assert.equal('{"ess_offset":1,"ess_offset":42,"ess_timestamp":5}',
                run('{"ess_offset":1}', 42, 5))
        end)

        it("prints big offsets and timestamps exactly", function()
            local cases = {
                { 0, "0" }, { 1e15, "1000000000000000" }, { 2 ^ 53, "9007199254740992" },
                { 2 ^ 53 - 1, "9007199254740991" }, { 123456789012, "123456789012" },
            }
            for _, c in ipairs(cases) do
                assert.equal('{"ess_offset":' .. c[2] .. ',"ess_timestamp":1700000000000}',
                    run("{}", c[1], 1.7e12))
                assert.equal("x|offset: " .. c[2] .. "|timestamp: 1700000000000",
                    run("x", c[1], 1.7e12))
            end
        end)

        it("is valid JSON after enrichment", function()
            for _, body in ipairs({ "{}", '{"a":{"b":{}}}', ' {"a":[{}]} ', '{"\\u007b":"}"}' }) do
                local out = run(body)
                local ok, v = pcall(cjson.decode, out)
                assert.is_true(ok, out)
                assert.equal(42, v.ess_offset)
            end
        end)
    end)

    describe("other text", function()
        it("gains |offset: <n>|timestamp: <ms> at its end", function()
            assert.equal('accountserver.MerchantProcessingCharge|timestamp: "2025" x: 1'
                .. "|offset: 42|timestamp: 1714483980000",
                run('accountserver.MerchantProcessingCharge|timestamp: "2025" x: 1'))
        end)

        it("treats JSON that is not an object as text", function()
            assert.equal("[1,2]|offset: 42|timestamp: 1714483980000", run("[1,2]"))
            assert.equal('"str"|offset: 42|timestamp: 1714483980000', run('"str"'))
            assert.equal("17|offset: 42|timestamp: 1714483980000", run("17"))
        end)

        it("enriches an empty text body", function()
            assert.equal("|offset: 42|timestamp: 1714483980000", run(""))
        end)

        it("does not count or log plain text", function()
            run("hello")
            assert.same({}, counted)
            assert.same({}, logged)
        end)
    end)

    describe("bodies forwarded unchanged", function()
        it("forwards binary bodies untouched", function()
            for _, body in ipairs({ "\0\1\2\255", "{\255}", "" }) do
                assert.equal(body, run(body, 1, 2, false))
            end
            assert.same({}, counted)
        end)

        it("forwards a body that starts with { but is not valid JSON, counted and logged",
            function()
                local bad = { "{", "{bad", '{"a":1', '{"a":1}}', '{"a":1} trailing',
                    "{'a':1}", '{"a":NaN}', '{"a":0x10}', '{"a":1,}', "  {oops" }
                for i, body in ipairs(bad) do
                    assert.equal(body, run(body))
                    assert.equal(i, #counted)
                    assert.equal("enrich_invalid_json", counted[i])
                end
                assert.equal("warn", logged[1][1])
                assert.matches("event stream 3 offset 42", logged[1][2])
            end)

        it("logs the first invalid bodies and then every thousandth", function()
            for _ = 1, 2000 do
                run("{x")
            end
            assert.equal(2000, #counted)
            assert.equal(12, #logged)
            assert.matches("%(2000 so far%)", logged[12][2])
        end)

        it("does not raise when the host provides no ess table", function()
            _G.ess = nil
            assert.equal("{x", run("{x"))
        end)
    end)

    it("never touches msg.properties", function()
        local msg = setmetatable({ body = '{"a":1}', offset = 1, timestamp = 2, is_text = true },
            { __index = function(_, k)
                error("unexpected field " .. tostring(k))
            end })
        assert.equal('{"a":1,"ess_offset":1,"ess_timestamp":2}', enrich(msg, es))
    end)
end)
