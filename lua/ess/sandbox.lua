-- ess.sandbox: loads operator hook modules (lua.enrich, lua.route) into an
-- allow-listed environment. Text only (no bytecode); no os.execute/exit,
-- io.*, load*/dofile, debug, package, jit, setfenv/getfenv, collectgarbage
-- or require of C modules. The shared library tables (string, table, math,
-- bit, coroutine, a small os) are read-only views, so no script can change
-- them for another; string.dump is not in the view. `require` inside a hook
-- finds only other modules under the Lua root, loaded the same way, plus
-- "cjson"/"cjson.safe" (private instances per hook tree). Each module gets
-- its own global table. The library functions that call back into Lua from
-- C (string.gsub with a function or table, table.sort with a comparator,
-- coroutine.resume/wrap) are bounded in nesting, so no script can overflow
-- the C stack; CPU and memory are bounded by the C side (lua.hook_timeout_ms,
-- lua.max_memory_mb; see docs/lua.md).

local cjson = require "cjson"
local has_safe, cjson_safe = pcall(require, "cjson.safe")

local error, format, gmatch, open, pairs, pcall, rawset, select, setmetatable, tostring,
    type = error, string.format, string.gmatch, io.open, pairs, pcall, rawset, select,
    setmetatable, tostring, type
local concat = table.concat
local getmetatable = getmetatable
local searchpath = package.searchpath

local M = {}

-- C-stack guard --------------------------------------------------------------
--
-- LuaJIT has no C-call limit: string.gsub calling a Lua function that calls
-- string.gsub again, or coroutines resumed inside coroutines, nest C frames
-- (8 KiB and more each for gsub's buffer) until the process dies of SIGSEGV.
-- Each such C function is replaced by a wrapper that counts how many are
-- active and raises an error past MAX_NESTING. The wrappers use pcall so the
-- count stays right when the callback raises, and allocate nothing. The count
-- lives in a table in the registry (NESTING_KEY) so that the C side can set
-- it back to 0 after a call that failed (script/vm.c): an error raised between
-- the increment and the pcall (a watchdog interrupt) would otherwise leave it
-- high for good. string.gsub is also replaced in the real string table,
-- because ("x"):gsub(...) reaches it through the string metatable.

local MAX_NESTING = 100
M.MAX_NESTING = MAX_NESTING
local NESTING_KEY = "ess.sandbox.nesting"
local registry = debug.getregistry()
local state = registry[NESTING_KEY] or { n = 0 }
registry[NESTING_KEY] = state
-- Loaded again (busted isolates modules), string.gsub is already a wrapper.
local raw_gsub = registry["ess.sandbox.raw_gsub"] or string.gsub
registry["ess.sandbox.raw_gsub"] = raw_gsub
local raw_sort = table.sort
local raw_create, raw_resume = coroutine.create, coroutine.resume

local function too_deep(what)
    return format("%s: nested more than %d deep in callbacks (refused: it would overflow"
        .. " the C stack)", what, MAX_NESTING)
end

-- The end of one level: the count goes down first, then results or the error.
local function leave_raise(ok, ...)
    state.n = state.n - 1
    if not ok then
        error((...), 0)
    end
    return ...
end

local function leave_return(ok, ...)
    state.n = state.n - 1
    if not ok then
        return false, (...)
    end
    return ...
end

local function guarded_gsub(s, pattern, repl, n)
    if type(repl) == "string" or type(repl) == "number" then
        return raw_gsub(s, pattern, repl, n)
    end
    if state.n >= MAX_NESTING then
        error(too_deep("string.gsub"), 2)
    end
    state.n = state.n + 1
    return leave_raise(pcall(raw_gsub, s, pattern, repl, n))
end
string.gsub = guarded_gsub -- luacheck: ignore 122

local function guarded_sort(t, comp)
    if comp == nil then
        return raw_sort(t)
    end
    if state.n >= MAX_NESTING then
        error(too_deep("table.sort"), 2)
    end
    state.n = state.n + 1
    return leave_raise(pcall(raw_sort, t, comp))
end

-- resume returns false, message instead of raising, like coroutine.resume.
local function guarded_resume(co, ...)
    if type(co) ~= "thread" then
        return raw_resume(co, ...) -- the library's own argument error
    end
    if state.n >= MAX_NESTING then
        return false, too_deep("coroutine.resume")
    end
    state.n = state.n + 1
    return leave_return(pcall(raw_resume, co, ...))
end

local function unwrap(ok, ...)
    if not ok then
        error((...), 0) -- unchanged: nested wraps would stack a position per level
    end
    return ...
end

local function guarded_wrap(f)
    local co = raw_create(f)
    return function(...)
        return unwrap(guarded_resume(co, ...))
    end
end

-- Every read-only view handed to a script, so rawset can refuse them too.
local VIEWS = setmetatable({}, { __mode = "k" })

local function readonly(t, name)
    local view = setmetatable({}, {
        __index = t,
        __newindex = function(_, k)
            error(format("%s.%s: the %s table is read-only in hooks", name, tostring(k), name), 2)
        end,
        __metatable = false,
    })
    VIEWS[view] = name
    return view
end

-- A copy of library table t without the names in omit, as a read-only view.
local function lib_view(t, name, omit)
    local c = {}
    for k, v in pairs(t) do
        if not (omit and omit[k]) then
            c[k] = v
        end
    end
    return readonly(c, name)
end

local SAFE_GLOBALS = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
    "tostring", "type", "unpack", "rawequal", "rawget", "setmetatable", "_VERSION",
}

-- Shared by every environment: they cannot be written.
local function with(t, over)
    local c = {}
    for k, v in pairs(t) do
        c[k] = v
    end
    for k, v in pairs(over) do
        c[k] = v
    end
    return c
end

local LIBS = {
    string = lib_view(string, "string", { dump = true }),
    table = lib_view(with(table, { sort = guarded_sort }), "table"),
    math = lib_view(math, "math"),
    coroutine = lib_view(with(coroutine, { resume = guarded_resume, wrap = guarded_wrap }),
        "coroutine"),
    os = lib_view({ time = os.time, clock = os.clock, date = os.date, difftime = os.difftime },
        "os"),
}
if bit then
    LIBS.bit = lib_view(bit, "bit")
end

-- getmetatable for tables only: the string metatable would hand out the
-- real, writable string library.
local function safe_getmetatable(v)
    if type(v) ~= "table" then
        return nil
    end
    return getmetatable(v)
end

local function safe_rawset(t, k, v)
    if VIEWS[t] then
        error(format("%s.%s: the %s table is read-only in hooks", VIEWS[t], tostring(k), VIEWS[t]),
            2)
    end
    return rawset(t, k, v)
end

-- "a.b_c.d": dot-separated identifiers only (no "/", "..", leading ".").
local function valid_name(name)
    if type(name) ~= "string" or name == "" or #name > 200 or name:find("%.%.")
        or name:sub(1, 1) == "." or name:sub(-1) == "." then
        return false
    end
    for part in gmatch(name, "[^.]+") do
        if not part:find("^[%a_][%w_]*$") then
            return false
        end
    end
    return true
end

local LOADING = {}
local load_module

-- Builds a fresh environment; host is the table exposed as `ess`.
local function new_env(root, host, cache)
    local env = {}
    for _, k in pairs(SAFE_GLOBALS) do
        env[k] = _G[k]
    end
    for k, v in pairs(LIBS) do
        env[k] = v
    end
    env.getmetatable = safe_getmetatable
    env.rawset = safe_rawset
    env.ess = host and readonly(host, "ess") or nil
    env.print = function(...)
        if host and type(host.log) == "function" then
            local parts = {}
            for i = 1, select("#", ...) do
                parts[i] = tostring((select(i, ...)))
            end
            host.log("info", concat(parts, "\t"))
        end
    end
    env._G = env
    env.require = function(name)
        if name == "cjson" or name == "cjson.safe" then
            if cache[name] == nil then
                local lib = (name == "cjson.safe" and has_safe) and cjson_safe or cjson
                cache[name] = lib.new()
            end
            return cache[name]
        end
        if not valid_name(name) then
            error(format("require %q: only modules under the Lua root (names like"
                .. " \"ess.examples.x\") can be required in hooks", tostring(name)), 2)
        end
        local v = cache[name]
        if v == LOADING then
            error(format("require %q: circular require", name), 2)
        end
        if v == nil then
            cache[name] = LOADING
            local ok, mod = load_module(name, root, host, cache)
            if not ok then
                cache[name] = nil
                error(mod, 2)
            end
            v = mod == nil and true or mod
            cache[name] = v
        end
        return v
    end
    return env
end

-- true, value or false, message (with file and line when there is one).
function load_module(name, root, host, cache)
    if not valid_name(name) then
        return false, format("module name %q is not allowed (dot-separated identifiers only)",
            tostring(name))
    end
    if type(root) ~= "string" or root == "" or root:find("[;?]") then
        return false, format("Lua root %q is not a usable directory name", tostring(root))
    end
    local file = searchpath(name, root .. "/?.lua;" .. root .. "/?/init.lua")
    if not file then
        return false, format("module %s not found under %s (hooks can require only Lua"
            .. " modules under the Lua root, and cjson)", name, root)
    end
    local f, err = open(file, "rb")
    if not f then
        return false, err
    end
    local src = f:read("*a")
    f:close()
    if not src then
        return false, file .. ": cannot be read"
    end
    if src:byte(1) == 27 then
        return false, file .. ": bytecode is not accepted; load scripts as text"
    end
    local chunk, lerr = load(src, "@" .. file, "t", new_env(root, host, cache))
    if not chunk then
        return false, lerr
    end
    local ok, mod = pcall(chunk, name)
    if not ok then
        if type(mod) ~= "string" then
            mod = format("%s: raised a non-string error (%s)", file, tostring(mod))
        end
        return false, mod
    end
    return true, mod
end

-- Loads module `name` (e.g. "ess.enrich") from under root, with host as the
-- read-only global `ess`; returns the module's value, or nil and a message
-- naming the file and line. cache (optional) is shared by the modules one
-- hook requires; by default each call starts a new one.
function M.load(name, root, host, cache)
    local ok, mod = load_module(name, root, host, cache or {})
    if not ok then
        return nil, mod
    end
    if mod == nil then
        return nil, format("module %s returned nothing (a hook module returns a table)", name)
    end
    return mod
end

return M
