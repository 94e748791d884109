-- ess.options: the per-hook options of lua.enrich_options and
-- lua.route_options, checked against the schema the hook module declares
-- (the `schema` field of the table it returns), in the manner of Kong's
-- plugin schema.lua.
--
-- A schema is a list of fields, in the order they are documented:
--
--     { name = "keep", type = "array", elements = "string",
--       default = { "MerchantProcessingCharge" }, doc = "types to forward" }
--
-- type is one of "string", "boolean", "integer", "number", "array" (a YAML
-- list; `elements` is a type name or a field spec without a name) and
-- "map" (a YAML mapping with string keys; `values` likewise). A field may
-- also give `default`, `required = true`, `one_of = { ... }` (allowed
-- values) and `min` / `max` (numbers; lengths of strings, arrays, maps).
--
-- validate() is called by the host (core/script/hooks.c) when it loads a
-- hook, so a bad value is refused at start and by a reload with the key
-- named; hooks may call defaults() for the conf to use when they are
-- called with two arguments. Pure: no I/O, no state; it runs in the host
-- and, through `require`, in the sandbox, so it uses only the sandbox's
-- globals. Errors are returned as nil, message, never raised.

local error, format, ipairs, pairs, tostring, type = error, string.format, ipairs, pairs,
    tostring, type
local concat, sort = table.concat, table.sort
local floor = math.floor

local M = {}

local SCALARS = { string = true, boolean = true, integer = true, number = true }
local TYPES = { string = true, boolean = true, integer = true, number = true, array = true,
    map = true }

-- ess.config drops YAML nulls ("keep:" without a value) from the options,
-- so an absent value and a null one both mean "the default".
local function is_null(v)
    return v == nil
end

local function describe(v)
    local t = type(v)
    if is_null(v) then
        return "null"
    elseif t == "string" then
        local s = #v > 60 and v:sub(1, 60) .. "..." or v
        return '"' .. s:gsub('[%c"\\]', "?") .. '"'
    elseif t == "number" or t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        return next(v) == nil and "an empty mapping or list"
            or (v[1] ~= nil and "a list" or "a mapping")
    end
    return t
end

local function is_list(v)
    if type(v) ~= "table" then
        return false
    end
    local n = 0
    for _ in pairs(v) do
        n = n + 1
    end
    for i = 1, n do
        if v[i] == nil then
            return false
        end
    end
    return true
end

local function expected(spec)
    local t = spec.type
    local what
    if t == "array" then
        local e = type(spec.elements) == "table" and spec.elements.type or spec.elements
        what = format("a list of %ss", e)
    elseif t == "map" then
        local e = type(spec.values) == "table" and spec.values.type or spec.values
        what = format("a mapping of names to %ss", e)
    elseif t == "integer" then
        what = "an integer"
    else
        what = "a " .. t
    end
    if spec.one_of then
        local parts = {}
        for i, v in ipairs(spec.one_of) do
            parts[i] = tostring(v)
        end
        what = what .. " (one of " .. concat(parts, ", ") .. ")"
    end
    if spec.min or spec.max then
        local unit = (t == "string" or t == "array" or t == "map") and " in length" or ""
        if spec.min and spec.max then
            what = format("%s %s..%s%s", what, tostring(spec.min), tostring(spec.max), unit)
        elseif spec.min then
            what = format("%s >= %s%s", what, tostring(spec.min), unit)
        else
            what = format("%s <= %s%s", what, tostring(spec.max), unit)
        end
    end
    return what
end

local function as_spec(s)
    if type(s) == "string" then
        return { type = s }
    end
    return s
end

local function size(v)
    if type(v) == "string" then
        return #v
    end
    local n = 0
    for _ in pairs(v) do
        n = n + 1
    end
    return n
end

-- Checks value v against spec; returns the copy to keep, or nil, message.
local check

local function fail(path, spec, v)
    return nil, format("config: %s: expected %s, got %s", path, expected(spec), describe(v))
end

check = function(spec, v, path)
    local t = spec.type
    local out
    if t == "string" then
        if type(v) ~= "string" then
            return fail(path, spec, v)
        end
        out = v
    elseif t == "boolean" then
        if type(v) ~= "boolean" then
            return fail(path, spec, v)
        end
        out = v
    elseif t == "integer" or t == "number" then
        if type(v) ~= "number" or v ~= v or (t == "integer" and floor(v) ~= v) then
            return fail(path, spec, v)
        end
        out = v
    elseif t == "array" then
        if type(v) ~= "table" or not is_list(v) then
            return fail(path, spec, v)
        end
        local elem = as_spec(spec.elements)
        out = {}
        for i = 1, #v do
            local e, err = check(elem, v[i], format("%s[%d]", path, i))
            if e == nil then
                return nil, err
            end
            out[i] = e
        end
    elseif t == "map" then
        if type(v) ~= "table" or (v[1] ~= nil) then
            return fail(path, spec, v)
        end
        local vals = as_spec(spec.values)
        out = {}
        for k, x in pairs(v) do
            if type(k) ~= "string" then
                return nil, format("config: %s: expected %s, got the key %s", path,
                    expected(spec), describe(k))
            end
            local e, err = check(vals, x, path .. "." .. k)
            if e == nil then
                return nil, err
            end
            out[k] = e
        end
    end
    if spec.one_of and SCALARS[t] then
        local found = false
        for _, allowed in ipairs(spec.one_of) do
            if allowed == out then
                found = true
                break
            end
        end
        if not found then
            return fail(path, spec, v)
        end
    end
    if (spec.min or spec.max) and t ~= "boolean" then
        local n = (t == "integer" or t == "number") and out or size(out)
        if (spec.min and n < spec.min) or (spec.max and n > spec.max) then
            return fail(path, spec, v)
        end
    end
    return out
end

local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local c = {}
    for k, x in pairs(v) do
        c[k] = copy(x)
    end
    return c
end

-- A schema error is the hook author's, not the operator's: raised.
local function check_schema(schema, module)
    if type(schema) ~= "table" then
        error(format("%s: schema must be a list of fields, got %s", module, type(schema)), 0)
    end
    for i, spec in ipairs(schema) do
        if type(spec) ~= "table" or type(spec.name) ~= "string" or not TYPES[spec.type] then
            error(format("%s: schema field %d needs a name and a type (%s)", module, i,
                "string, boolean, integer, number, array or map"), 0)
        end
        if spec.type == "array" and spec.elements == nil then
            error(format("%s: schema field %s: an array needs elements", module, spec.name), 0)
        end
        if spec.type == "map" and spec.values == nil then
            error(format("%s: schema field %s: a map needs values", module, spec.name), 0)
        end
    end
end

--- The conf a hook gets when no option is given: every field's default
--- (a fresh copy each call), absent fields without one.
function M.defaults(schema)
    local conf = {}
    for _, spec in ipairs(schema or {}) do
        conf[spec.name] = copy(spec.default)
    end
    return conf
end

--- Validates the options `given` (a table from the YAML, or nil) for hook
--- `module` against its `schema` (nil when the module declares none); `path`
--- is the configuration key ("lua.enrich_options") errors name. Returns the
--- conf table (defaults filled, values copied), or nil and a one-line error.
function M.validate(module, schema, given, path)
    if is_null(given) then
        given = {}
    end
    if type(given) ~= "table" then
        return nil, format("config: %s: expected a mapping, got %s", path, describe(given))
    end
    if schema == nil then
        local k = next(given)
        if k ~= nil then
            return nil, format('config: %s: unknown key "%s" (module %s declares no options)',
                path, tostring(k), module)
        end
        return {}
    end
    local ok, err = pcall(check_schema, schema, module)
    if not ok then
        return nil, err
    end
    local known, names = {}, {}
    for i, spec in ipairs(schema) do
        known[spec.name] = spec
        names[i] = spec.name
    end
    local keys = {}
    for k in pairs(given) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
        if not known[k] then
            return nil, format('config: %s: unknown key "%s" (module %s takes: %s)', path,
                tostring(k):gsub('[%c"\\]', "?"), module, concat(names, ", "))
        end
    end
    local conf = {}
    for _, spec in ipairs(schema) do
        local v = given[spec.name]
        local key = path .. "." .. spec.name
        if is_null(v) then
            if spec.required and spec.default == nil then
                return nil, format("config: %s: required (%s)", key, expected(spec))
            end
            conf[spec.name] = copy(spec.default)
        else
            local c, cerr = check(spec, v, key)
            if c == nil then
                return nil, cerr
            end
            conf[spec.name] = c
        end
    end
    return conf
end

--- The Markdown table of a schema's fields (for a hook's documentation).
function M.doc(schema)
    local lines = { "| option | type | default | meaning |", "| --- | --- | --- | --- |" }
    for _, spec in ipairs(schema) do
        local d = spec.default
        local shown
        if d == nil then
            shown = spec.required and "(required)" or ""
        elseif type(d) == "table" then
            local parts = {}
            if d[1] ~= nil then
                for i, x in ipairs(d) do
                    parts[i] = tostring(x)
                end
                shown = "`[" .. concat(parts, ", ") .. "]`"
            else
                local ks = {}
                for k in pairs(d) do
                    ks[#ks + 1] = k
                end
                sort(ks)
                for i, k in ipairs(ks) do
                    parts[i] = k .. ": " .. tostring(d[k])
                end
                shown = "`{" .. concat(parts, ", ") .. "}`"
            end
        else
            shown = "`" .. tostring(d) .. "`"
        end
        lines[#lines + 1] = format("| `%s` | %s | %s | %s |", spec.name,
            (expected(spec):gsub("|", "\\|")), shown, ((spec.doc or ""):gsub("|", "\\|")))
    end
    return concat(lines, "\n") .. "\n"
end

return M
