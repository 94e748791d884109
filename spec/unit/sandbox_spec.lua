-- Specs for ess.sandbox: every forbidden thing is refused from inside a hook
-- module, errors name the file and line, and the shipped hooks behave the
-- same through the sandbox as when required directly.

local helpers = require "helpers"
local sandbox = require "ess.sandbox"

local ROOT = os.tmpname()
os.remove(ROOT)
assert(os.execute("mkdir -p '" .. ROOT .. "/t/sub'"))

local seq = 0

local function write(rel, src)
    local f = assert(io.open(ROOT .. "/" .. rel, "wb"))
    f:write(src)
    f:close()
end

-- Writes src as a fresh module under ROOT/t and loads it through the sandbox.
local function load_src(src, host)
    seq = seq + 1
    local name = "m" .. seq
    write("t/" .. name .. ".lua", src)
    local mod, err = sandbox.load("t." .. name, ROOT, host)
    return mod, err, ROOT .. "/t/" .. name .. ".lua"
end

-- A module that runs `stmt` at load time; refused means the load failed.
local function refused(stmt)
    local mod, err, file = load_src("local x = " .. stmt .. "\nreturn { x = x }\n")
    return mod == nil, err, file
end

local host_recorder = helpers.host_recorder

teardown(function()
    os.execute("rm -rf '" .. ROOT .. "'")
end)

describe("ess.sandbox refuses", function()
    local forbidden = {
        'os.execute("true")', "os.exit(3)", 'os.getenv("HOME")', 'os.remove("/tmp/x")',
        'os.rename("/tmp/a", "/tmp/b")', 'io.open("/etc/passwd")', 'io.popen("id")',
        "io.write('x')", 'load("return 1")', 'loadstring("return 1")', 'dofile("/etc/passwd")',
        'loadfile("/etc/passwd")', "debug.traceback()", "debug.getinfo(1)",
        "debug.getregistry()", "package.loaded", "package.cpath", "setfenv(1, {})",
        "getfenv(1)", "string.dump(function() end)", 'collectgarbage("count")',
        "jit.off()", "newproxy(true)", 'module("x")', "gcinfo()",
        'require("lfs")', 'require("socket")', 'require("lyaml")', 'require("pl.utils")',
        'require("../x")', 'require("/etc/passwd")', 'require("ess/enrich")',
        'require(".ess.enrich")', 'require("ess..enrich")', "require(42)",
        'require("ffi")', 'require("jit.util")', 'require("debug")', 'require("io")',
        '_G.os.execute("true")', 'getmetatable("").__index',
    }
    for _, stmt in ipairs(forbidden) do
        it(stmt, function()
            local no, err, file = refused(stmt)
            assert.is_true(no)
            -- The message names the hook file and the line.
            assert.is_truthy(err:find(file .. ":1:", 1, true), err)
        end)
    end

    it("does not run os.execute", function()
        local marker = ROOT .. "/marker"
        refused('os.execute("touch ' .. marker .. '")')
        assert.is_nil(io.open(marker))
    end)

    local writes = {
        "string.foo = 1", "string.format = nil", "table.insert = nil", "math.pi = 3",
        "bit.band = nil", "os.time = nil", "coroutine.wrap = nil",
        'rawset(string, "format", nil)', 'rawset(math, "floor", print)',
        "setmetatable(string, {})", "ess.log = nil", 'rawset(ess, "count", nil)',
    }
    for _, stmt in ipairs(writes) do
        it("writing: " .. stmt, function()
            local host = host_recorder()
            local mod, err, file = load_src(stmt .. "\nreturn {}\n", host)
            assert.is_nil(mod)
            assert.is_truthy(err:find(file .. ":1:", 1, true), err)
            assert.is_function(host.log)
            assert.is_function(host.count)
        end)
    end

    it("leaves the real libraries untouched after every attempt", function()
        assert.is_nil(rawget(string, "foo"))
        assert.is_function(string.format)
        assert.is_function(table.insert)
        assert.is_function(string.dump)
        assert.equal(math.floor, rawget(math, "floor"))
        assert.is_true(math.pi > 3.14)
    end)

    it("rejects a bytecode file", function()
        write("t/bc.lua", string.dump(function() return { enrich = function() end } end))
        local mod, err = sandbox.load("t.bc", ROOT)
        assert.is_nil(mod)
        assert.matches("bc%.lua: bytecode is not accepted", err)
    end)

    it("rejects a bad module name and a missing module", function()
        for _, name in ipairs({ "../t.m1", "t/m1", "", ".t", "t.", "t..m1", 7 }) do
            local mod, err = sandbox.load(name, ROOT)
            assert.is_nil(mod)
            assert.matches("is not allowed", err)
        end
        local mod, err = sandbox.load("t.nope", ROOT)
        assert.is_nil(mod)
        assert.matches("module t.nope not found under", err)
    end)
end)

describe("ess.sandbox allows", function()
    it("the safe globals and library reads", function()
        local mod, err = load_src([[
local t = {}
table.insert(t, string.format("%d", math.floor(2.5)))
t[#t + 1] = ("abc"):upper()
t[#t + 1] = tostring(bit.band(6, 3))
t[#t + 1] = type(os.time())
t[#t + 1] = select("#", unpack({ 1, 2, 3 }))
local ok = pcall(error, "x")
t[#t + 1] = tostring(ok)
local mt = setmetatable({}, { __index = function() return "mt" end })
t[#t + 1] = mt.anything
t[#t + 1] = tostring(getmetatable("") == nil)
local co = coroutine.wrap(function() coroutine.yield("co") end)
t[#t + 1] = co()
rawset(t, #t + 1, "raw")
return { out = table.concat(t, ",") }
]])
        assert.is_nil(err)
        assert.equal("2,ABC,2,number,3,false,mt,true,co,raw", mod.out)
    end)

    it("a private cjson instance and cjson.safe", function()
        local cjson = require "cjson"
        local mod, err = load_src([[
local cjson = require "cjson"
local safe = require "cjson.safe"
cjson.encode_sparse_array(true)
local v, e = safe.decode("{not json")
return { c = cjson, same = (cjson == require "cjson"), v = v, e = e,
    enc = cjson.encode({ a = 1 }) }
]])
        assert.is_nil(err)
        assert.are_not.equal(cjson, mod.c)
        assert.is_true(mod.same)
        assert.is_nil(mod.v)
        assert.is_string(mod.e)
        assert.equal('{"a":1}', mod.enc)
    end)

    it("print, as ess.log at info", function()
        local host, calls = host_recorder()
        local mod, err = load_src('print("hello", 1, nil)\nreturn {}\n', host)
        assert.is_nil(err)
        assert.is_table(mod)
        assert.same({ { "log", "info", "hello\t1\tnil" } }, calls)
    end)
end)

describe("ess.sandbox errors", function()
    it("reports a syntax error with file and line", function()
        local mod, err, file = load_src("return {\n  enrich = function(msg)\n"
            .. "    return msg.body +\n  end,\n}\n")
        assert.is_nil(mod)
        assert.is_truthy(err:find(file .. ":4:", 1, true), err)
    end)

    it("reports a runtime error at load with file and line", function()
        local mod, err, file = load_src("local cfg = nil\n\nlocal x = cfg.field\nreturn {}\n")
        assert.is_nil(mod)
        assert.is_truthy(err:find(file .. ":3:", 1, true), err)
        assert.matches("attempt to index", err)
    end)

    it("reports a non-string error object with the file", function()
        local mod, err, file = load_src("error({ code = 1 })\n")
        assert.is_nil(mod)
        assert.is_truthy(err:find(file, 1, true), err)
    end)

    it("reports a hook error at call time with file and line", function()
        local mod, err, file = load_src("return { enrich = function(msg)\n"
            .. "  return msg.nothing.deeper\nend }\n")
        assert.is_nil(err)
        local ok, cerr = pcall(mod.enrich, { body = "x" })
        assert.is_false(ok)
        assert.is_truthy(cerr:find(file .. ":2:", 1, true), cerr)
    end)

    it("rejects a module that returns nothing", function()
        local mod, err = load_src("local x = 1\n")
        assert.is_nil(mod)
        assert.matches("returned nothing", err)
    end)
end)

describe("ess.sandbox modules", function()
    it("require between two hook modules, loaded once per hook", function()
        write("t/sub/helper.lua", [[
ess.count("helper_loaded")
return { twice = function(s) return s .. s end }
]])
        local host, calls = host_recorder()
        local mod, err = load_src([[
local h = require "t.sub.helper"
local h2 = require "t.sub.helper"
return { enrich = function(msg) return h.twice(msg.body) end, same = (h == h2) }
]], host)
        assert.is_nil(err)
        assert.equal("abab", mod.enrich({ body = "ab" }))
        assert.is_true(mod.same)
        assert.same({ { "count", "helper_loaded", 1 } }, calls)
    end)

    it("a required module that fails reports its own file and line", function()
        write("t/sub/broken.lua", "local a = 1\nlocal b = a.x\nreturn {}\n")
        local mod, err = load_src('local b = require "t.sub.broken"\nreturn {}\n')
        assert.is_nil(mod)
        assert.is_truthy(err:find(ROOT .. "/t/sub/broken.lua:2:", 1, true), err)
    end)

    it("reports a circular require", function()
        write("t/sub/ca.lua", 'return { b = require "t.sub.cb" }\n')
        write("t/sub/cb.lua", 'return { a = require "t.sub.ca" }\n')
        local mod, err = sandbox.load("t.sub.ca", ROOT)
        assert.is_nil(mod)
        assert.matches("circular require", err)
    end)

    it("two hook modules do not see each other's globals", function()
        write("t/sub/ga.lua", "SHARED = 'from a'\nstring_x = 1\n"
            .. "return { get = function() return SHARED end }\n")
        write("t/sub/gb.lua", "return { get = function() return SHARED end, g = _G }\n")
        local a = assert(sandbox.load("t.sub.ga", ROOT))
        local b = assert(sandbox.load("t.sub.gb", ROOT))
        assert.equal("from a", a.get())
        assert.is_nil(b.get())
        assert.is_nil(rawget(_G, "SHARED"))
        assert.are_not.equal(_G, b.g)
        -- Even when one requires the other, their globals stay apart.
        local mod, err = load_src('local a = require "t.sub.ga"\n'
            .. "return { mine = SHARED, theirs = a.get() }\n")
        assert.is_nil(err)
        assert.is_nil(mod.mine)
        assert.equal("from a", mod.theirs)
    end)
end)

describe("the shipped hooks through the sandbox", function()
    local direct_enrich = require("ess.enrich").enrich
    local direct_route = require("ess.route").route

    local bodies = {
        '{"message_type":"MerchantProcessingCharge","amount":12.5}', '  { "a" : [1, {}] }  \n',
        "{}", "{not json", "accountserver.Pod|timestamp: \"2025-04-30T13:33:00Z\"", "",
        "plain text", "[1,2]",
    }

    it("ess.enrich behaves as the original", function()
        local host, calls = host_recorder()
        local sandboxed = assert(sandbox.load("ess.enrich", "lua", host))
        local es = { id = 7, uuid = "u", routing_key = "rk" }
        for i, body in ipairs(bodies) do
            for _, is_text in ipairs({ true, false }) do
                local msg = { body = body, offset = 1000 + i, timestamp = 1746019980000,
                    is_text = is_text }
                assert.equal(direct_enrich(msg, es), sandboxed.enrich(msg, es))
            end
        end
        -- The invalid JSON body was counted through the host table.
        assert.same({ "count", "enrich_invalid_json", 1 }, calls[1])
        assert.equal("log", calls[2][1])
    end)

    it("ess.route behaves as the original", function()
        local sandboxed = assert(sandbox.load("ess.route", "lua"))
        local es = { id = 1, uuid = "u", routing_key = "orders.eu" }
        local cfgs = { {}, { broker = { version = 1 } }, { broker = { version = 2 } }, 5 }
        for _, cfg in ipairs(cfgs) do
            assert.same(direct_route(es, cfg), sandboxed.route(es, cfg))
        end
        assert.same({ mode = "classic", exchange = "event-streams", routing_key = "orders.eu" },
            sandboxed.route(es, { broker = { version = 1 } }))
    end)
end)
