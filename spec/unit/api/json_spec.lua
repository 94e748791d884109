-- Specs for ess.api.json: ordered objects, [] for empty lists, exact
-- integers, minimal escapes, UTF-8 checks and decoding errors.

local json = require "ess.api.json"
local cjson = require("cjson").new()

describe("ess.api.json", function()
    describe("encode", function()
        it("keeps object keys in the given order and drops nil values", function()
            assert.equal('{"b":1,"a":"x","c":true}',
                json.encode(json.object("b", 1, "a", "x", "skip", nil, "c", true)))
        end)

        it("encodes an empty array as [] and a plain empty table as {}", function()
            assert.equal("[]", json.encode(json.array()))
            assert.equal("{}", json.encode({}))
            assert.equal('{"l":[]}', json.encode(json.object("l", json.array({}))))
        end)

        it("encodes plain tables: sequences as arrays, others with sorted keys", function()
            assert.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
            assert.equal('{"a":1,"b":[true,false],"c":null}',
                json.encode({ c = json.null, b = { true, false }, a = 1 }))
        end)

        it("prints integers exactly and other numbers with 17 digits", function()
            assert.equal("9007199254740991", json.encode(2 ^ 53 - 1))
            assert.equal("1700000000000", json.encode(1.7e12))
            assert.equal("0", json.encode(-0))
            assert.equal("-5", json.encode(-5))
            assert.equal("0.5", json.encode(0.5))
            assert.equal(0.1, cjson.decode(json.encode(0.1)))
            assert.equal("null", json.encode(0 / 0))
            assert.equal("null", json.encode(math.huge))
        end)

        it("escapes only what JSON requires", function()
            assert.equal('"a/b \\"q\\" \\\\ \\n\\t\\u0000\\u007f é"',
                json.encode('a/b "q" \\ \n\t\0\127 é'))
        end)

        it("round-trips strings through a decoder", function()
            for _, s in ipairs({ "", "x", "'; DROP TABLE t", "日本語", "\240\159\152\128",
                ("z"):rep(300), "\1\2\31" }) do
                assert.equal(s, cjson.decode(json.encode(s)))
            end
        end)

        it("never emits invalid UTF-8", function()
            local out = json.encode("ok \255 bad")
            assert.is_true(json.valid_utf8(out))
            assert.equal("ok \239\191\189 bad", cjson.decode(out))
        end)

        it("refuses data nested deeper than 32 levels", function()
            local t = {}
            local cur = t
            for _ = 1, 40 do
                cur.x = {}
                cur = cur.x
            end
            assert.has_error(function()
                json.encode(t)
            end)
        end)
    end)

    describe("valid_utf8", function()
        it("accepts well-formed UTF-8", function()
            for _, s in ipairs({ "", "ascii", "é", "€", "\240\159\152\128", "\244\143\191\191",
                "\239\191\191" }) do
                assert.is_true(json.valid_utf8(s), s)
            end
        end)

        it("rejects overlongs, surrogates, out-of-range and truncated sequences", function()
            for _, s in ipairs({ "\128", "\191", "\192\128", "\193\191", "\224\128\128",
                "\237\160\128", "\237\191\191", "\240\128\128\128", "\244\144\128\128",
                "\245\128\128\128", "\255", "\226\130", "a\226", "\240\159\152" }) do
                assert.is_false(json.valid_utf8(s), ("%q"):format(s))
            end
        end)
    end)

    describe("decode", function()
        it("decodes strict JSON", function()
            assert.same({ a = { 1, 2 } }, json.decode('{"a":[1,2]}'))
        end)

        it("returns nil, the message and a 1-based position", function()
            local v, msg, pos = json.decode('{"a":}')
            assert.is_nil(v)
            assert.is_string(msg)
            assert.equal(6, pos)
        end)

        it("rejects NaN, Infinity and hex numbers", function()
            for _, s in ipairs({ "NaN", "Infinity", "-Infinity", "0x10" }) do
                assert.is_nil(json.decode(s), s)
            end
        end)

        it("finds the line and column of a position", function()
            assert.same({ 1, 1 }, { json.line_col("abc", 1) })
            assert.same({ 2, 3 }, { json.line_col("ab\ncd", 6) })
            assert.same({ 3, 1 }, { json.line_col("a\n\nc", 4) })
        end)
    end)
end)
