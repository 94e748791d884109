-- Specs for the C-stack guard of ess.sandbox (issue 12, case 3): library
-- functions that call back into Lua from C (string.gsub, table.sort,
-- coroutine.resume/wrap) refuse to nest without bound, so a hook raises a
-- Lua error instead of overflowing the C stack and killing the process.
-- Before the guard, each of the "refused" modules below crashed the Lua
-- process running the specs with SIGSEGV.

local sandbox = require "ess.sandbox"

local ROOT = os.tmpname()
os.remove(ROOT)
assert(os.execute("mkdir -p '" .. ROOT .. "/t'"))

local seq = 0

local function load_src(src)
    seq = seq + 1
    local name = "lim" .. seq
    local f = assert(io.open(ROOT .. "/t/" .. name .. ".lua", "wb"))
    f:write(src)
    f:close()
    return sandbox.load("t." .. name, ROOT, {})
end

local function refused(src, what)
    local mod, err = load_src(src)
    assert.is_nil(mod)
    assert.matches(what .. ": nested more than " .. sandbox.MAX_NESTING .. " deep", err, 1, true)
end

describe("ess.sandbox C-stack guard", function()
    it("refuses gsub whose callback recurses into gsub (method call)", function()
        refused([[local function g(s) return (s:gsub(".", g)) end; g("xx"); return {}]],
            "string.gsub")
    end)

    it("refuses gsub through the string view too", function()
        refused([[local function g(s) return (string.gsub(s, ".", g)) end; g("xx"); return {}]],
            "string.gsub")
    end)

    it("refuses gsub whose replacement table's __index recurses", function()
        refused([[
local g
local t = setmetatable({}, { __index = function(_, k) return g(k) end })
function g(s) return (s:gsub(".", t)) end
g("xx")
return {}]], "string.gsub")
    end)

    it("refuses coroutines resumed inside coroutines without end", function()
        refused([[local function f() coroutine.wrap(f)() end; f(); return {}]],
            "coroutine.resume")
        local mod, err = load_src([[
local function f()
    local ok, e = coroutine.resume(coroutine.create(f))
    if not ok then error(e, 0) end
end
f()
return {}]])
        assert.is_nil(mod)
        assert.matches("coroutine.resume: nested more than", err, 1, true)
    end)

    it("refuses table.sort whose comparator sorts again without end", function()
        refused([[
local function cmp(a, b) table.sort({ 3, 2, 1 }, cmp); return a < b end
table.sort({ 3, 2, 1 }, cmp)
return {}]], "table.sort")
    end)

    it("keeps ordinary and moderately nested uses working", function()
        local mod, err = load_src([[
local function g(s, d) if d == 0 then return s end
    return (s:gsub(".", function(c) return g(c, d - 1) end)) end
local t = { 3, 1, 2 }
table.sort(t, function(a, b) return a > b end)
local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
return { deep = g("ab", 20), sorted = table.concat(t, ","), first = co(1), second = co(5),
    plain = ("a-b"):gsub("-", "+"), n = select(2, ("aaa"):gsub("a", { a = "b" })),
    resumed = { coroutine.resume(coroutine.create(function() return 1, nil, 3 end)) } }]])
        assert.is_nil(err)
        assert.equals("ab", mod.deep)
        assert.equals("3,2,1", mod.sorted)
        assert.equals(2, mod.first)
        assert.equals(10, mod.second)
        assert.equals("a+b", mod.plain)
        assert.equals(3, mod.n)
        assert.same({ true, 1, nil, 3 }, mod.resumed)
    end)

    it("lets a script catch the refusal and go on; the count recovers", function()
        local mod, err = load_src([[
local function g(s) return (s:gsub(".", g)) end
local ok, e = pcall(g, "xx")
local after = ("abc"):gsub("%w", function(c) return c:upper() end)
return { ok = ok, e = e, after = after }]])
        assert.is_nil(err)
        assert.is_false(mod.ok)
        assert.matches("nested more than", mod.e, 1, true)
        assert.equals("ABC", mod.after)
        -- After many refusals, nesting is back at zero: a 90-deep nest still works.
        local m2 = load_src([[
local function g(s, d) if d == 0 then return s end
    return (s:gsub(".", function(c) return g(c, d - 1) end)) end
return { v = g("z", 90) }]])
        assert.equals("z", m2.v)
    end)

    it("keeps errors raised inside callbacks unchanged", function()
        local mod = load_src([[
local ok, e = pcall(string.gsub, "a", "a", function() error({ code = 7 }) end)
local ok2, e2 = pcall(table.sort, { 2, 1 }, function() error("cmp failed", 0) end)
return { ok = ok, code = type(e) == "table" and e.code, ok2 = ok2, e2 = e2 }]])
        assert.is_false(mod.ok)
        assert.equals(7, mod.code)
        assert.is_false(mod.ok2)
        assert.equals("cmp failed", mod.e2)
    end)
end)
