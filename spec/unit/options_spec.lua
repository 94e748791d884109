-- Specs for ess.options: hook options checked against the schema a hook
-- module declares (types, nested lists and mappings, allowed values,
-- ranges, defaults), with one-line errors that name the key.

local options = require "ess.options"

local SCHEMA = {
    { name = "s", type = "string", default = "d", doc = "a | string" },
    { name = "b", type = "boolean", default = false },
    { name = "i", type = "integer", min = 1, max = 10 },
    { name = "n", type = "number", default = 0.5 },
    { name = "l", type = "array", elements = "string", default = { "x" } },
    { name = "m", type = "map", values = { type = "string", one_of = { "mask", "remove" } },
        default = { a = "mask" } },
    { name = "c", type = "string", one_of = { "red", "blue" } },
    { name = "ll", type = "array", elements = { type = "integer", min = 0 }, max = 2 },
}

local function fails(given, schema)
    local conf, err = options.validate("t.mod", schema or SCHEMA, given, "lua.enrich_options")
    assert.is_nil(conf)
    assert.is_string(err)
    assert.is_nil(err:find("\n"), err)
    return err
end

describe("ess.options", function()
    it("fills defaults, leaves fields without one absent", function()
        local conf = assert(options.validate("t.mod", SCHEMA, nil, "lua.x"))
        assert.same({ s = "d", b = false, n = 0.5, l = { "x" }, m = { a = "mask" } }, conf)
        assert.same(conf, options.defaults(SCHEMA))
    end)

    it("copies values and defaults, so no conf shares a table with another", function()
        local given = { l = { "a", "b" } }
        local a = assert(options.validate("t.mod", SCHEMA, given, "lua.x"))
        local b = assert(options.validate("t.mod", SCHEMA, {}, "lua.x"))
        a.l[1] = "changed"
        b.m.a = "changed"
        assert.equal("a", given.l[1])
        assert.same({ a = "mask" }, options.defaults(SCHEMA).m)
        assert.same({ "x" }, assert(options.validate("t.mod", SCHEMA, {}, "lua.x")).l)
    end)

    it("keeps given values of every type", function()
        local conf = assert(options.validate("t.mod", SCHEMA, { s = "", b = true, i = 10, n = -3,
            l = {}, m = { x = "remove" }, c = "blue", ll = { 0, 7 } }, "lua.x"))
        assert.same({ s = "", b = true, i = 10, n = -3, l = {}, m = { x = "remove" },
            c = "blue", ll = { 0, 7 } }, conf)
    end)

    it("names the key and what was expected", function()
        local cases = {
            { { s = 1 }, "config: lua.enrich_options.s: expected a string, got 1" },
            { { b = "yes" }, 'config: lua.enrich_options.b: expected a boolean, got "yes"' },
            { { i = 1.5 }, "config: lua.enrich_options.i: expected an integer 1..10, got 1.5" },
            { { i = 11 }, "config: lua.enrich_options.i: expected an integer 1..10, got 11" },
            { { n = "1" }, 'config: lua.enrich_options.n: expected a number, got "1"' },
            { { l = "x" }, 'config: lua.enrich_options.l: expected a list of strings, got "x"' },
            { { l = { a = "x" } }, "config: lua.enrich_options.l: expected a list of strings,"
                .. " got a mapping" },
            { { l = { "a", true } }, "config: lua.enrich_options.l[2]: expected a string,"
                .. " got true" },
            { { m = { "mask" } }, "config: lua.enrich_options.m: expected a mapping of names to"
                .. " strings, got a list" },
            { { m = { k = "hide" } }, "config: lua.enrich_options.m.k: expected a string (one of"
                .. ' mask, remove), got "hide"' },
            { { c = "green" }, "config: lua.enrich_options.c: expected a string (one of red,"
                .. ' blue), got "green"' },
            { { ll = { 1, 2, 3 } }, "config: lua.enrich_options.ll: expected a list of integers"
                .. " <= 2 in length, got a list" },
            { { ll = { -1 } }, "config: lua.enrich_options.ll[1]: expected an integer >= 0,"
                .. " got -1" },
            { { zz = 1, s = "a" }, 'config: lua.enrich_options: unknown key "zz" (module t.mod'
                .. " takes: s, b, i, n, l, m, c, ll)" },
            { 5, "config: lua.enrich_options: expected a mapping, got 5" },
        }
        for _, c in ipairs(cases) do
            assert.equal(c[2], fails(c[1]))
        end
    end)

    it("requires a required field without a default", function()
        local schema = { { name = "url", type = "string", required = true } }
        assert.equal("config: lua.enrich_options.url: required (a string)", fails({}, schema))
        assert.same({ url = "u" }, options.validate("t", schema, { url = "u" }, "lua.x"))
    end)

    it("refuses options for a module without a schema, accepts none", function()
        assert.same({}, options.validate("t.mod", nil, {}, "lua.route_options"))
        assert.same({}, options.validate("t.mod", nil, nil, "lua.route_options"))
        local _, err = options.validate("t.mod", nil, { x = 1 }, "lua.route_options")
        assert.equal('config: lua.route_options: unknown key "x" (module t.mod declares no'
            .. " options)", err)
    end)

    it("reports a broken schema as the module's fault", function()
        assert.equal("t.mod: schema must be a list of fields, got string",
            fails({}, "nope"))
        assert.matches("^t%.mod: schema field 1 needs a name and a type",
            fails({}, { { name = "x", type = "float" } }))
        assert.equal("t.mod: schema field l: an array needs elements",
            fails({}, { { name = "l", type = "array" } }))
    end)

    it("documents a schema as a Markdown table", function()
        local doc = options.doc(SCHEMA)
        assert.matches("^| option | type | default | meaning |\n", doc)
        assert.truthy(doc:find("| `s` | a string | `d` | a \\| string |", 1, true))
        assert.truthy(doc:find("| `l` | a list of strings | `[x]` |  |", 1, true))
        assert.truthy(doc:find("| `m` | a mapping of names to strings | `{a: mask}` |  |", 1,
            true))
    end)
end)
