-- Specs for docs/lua-reference.md: it is exactly what scripts/lua-reference
-- generates from the comments in the C source, and those comments cover
-- everything the C code hands to scripts (every ess.* function it
-- registers, every msg and es field it sets), each with a syntax, when it
-- may be used and an example. Adding a host function or a msg field
-- without documenting it fails here.

local helpers = require "helpers"

local gen = dofile("scripts/lua-reference")

-- The body of C function `name` in text (from its definition to the first
-- line that is a lone "}").
local function c_function(text, name)
    local start = assert(text:find("\n[%w_ %*]-" .. name .. "%(.-%)\n{"), name .. " not found")
    local stop = assert(text:find("\n}\n", start, true), name .. " has no end")
    return text:sub(start, stop)
end

local function setfields(body)
    local names = {}
    for name in body:gmatch('lua_setfield%(L, %-2, "([%w_]+)"%)') do
        names[#names + 1] = name
    end
    return names
end

describe("docs/lua-reference.md", function()
    local items = gen.items()
    local by_name = {}
    for _, item in ipairs(items) do
        by_name[item.name] = item
    end
    local hooks_c = helpers.read("core/script/hooks.c")

    it("is what scripts/lua-reference generates", function()
        assert.equal(gen.generate(), helpers.read("docs/lua-reference.md"),
            "run: scripts/lua-reference > docs/lua-reference.md")
    end)

    it("documents every ess.* host function the host registers", function()
        local init = c_function(hooks_c, "ess_hooks_init")
        local host = init:match("^(.-)lua_setglobal%(L, \"ess\"%)")
        local names = setfields(host)
        assert.is_true(#names >= 5, "no ess.* registration found in ess_hooks_init")
        for _, name in ipairs(names) do
            assert.is_not_nil(by_name["ess." .. name], "ess." .. name .. " is not documented")
        end
        local open = c_function(helpers.read("core/script/protobuf_lua.c"),
            "ess_protobuf_lua_open")
        local pb = setfields(open)
        assert.same({ "decode", "text" }, pb)
        for _, name in ipairs(pb) do
            assert.is_not_nil(by_name["ess.protobuf." .. name], "ess.protobuf." .. name)
            assert.equal("function", by_name["ess.protobuf." .. name].kind)
        end
    end)

    local function fields_of(name)
        local set = {}
        for _, f in ipairs(assert(by_name[name], name .. " is not documented").fields) do
            set[f.name] = true
        end
        return set
    end

    it("documents every msg field the host sets, raw and protobuf_type included", function()
        local documented = fields_of("msg")
        local set = setfields(c_function(hooks_c, "ess_hooks_enrich"))
        -- msg.properties is built on first read, by the msg table's __index.
        assert.truthy(hooks_c:find('"properties", 10', 1, true))
        set[#set + 1] = "properties"
        for _, f in ipairs({ "body", "offset", "timestamp", "is_text", "raw", "protobuf_type" }) do
            assert.truthy(table.concat(set, " "):find(f, 1, true), f .. " no longer set?")
        end
        for _, f in ipairs(set) do
            assert.is_true(documented[f] == true, "msg." .. f .. " is not documented")
        end
    end)

    it("documents every es field the host sets", function()
        local documented = fields_of("es")
        local set = setfields(c_function(hooks_c, "push_es"))
        assert.same({ "id", "uuid", "routing_key" }, set)
        for _, f in ipairs(set) do
            assert.is_true(documented[f] == true, "es." .. f .. " is not documented")
        end
    end)

    it("gives every item a description, when it may be used, and an example", function()
        assert.is_not_nil(by_name.enrich)
        assert.is_not_nil(by_name.route)
        assert.is_not_nil(by_name.conf)
        for _, item in ipairs(items) do
            assert.is_true(#item.desc > 0, item.name .. ": no description")
            assert.is_table(item.when, item.name .. ": no @when")
            assert.is_true(#item.usage > 0, item.name .. ": no @usage")
        end
    end)

    it("parses Lua --- blocks too", function()
        local tmp = helpers.tmpfile(table.concat({
            "--- Say hello.",
            "-- @function ess.hello",
            "-- @tparam[opt=\"x\"] string who the name",
            "-- @when any time.",
            "-- @usage ess.hello()",
            "local x = 1",
        }, "\n") .. "\n")
        local path = tmp .. ".lua"
        assert(os.rename(tmp, path))
        local list = gen.items({ path })
        os.remove(path)
        assert.equal(1, #list)
        assert.equal("ess.hello", list[1].name)
        assert.same({ "Say hello." }, list[1].desc)
        assert.equal('"x"', list[1].params[1].default)
        assert.same({ "ess.hello()" }, list[1].usage)
    end)
end)
