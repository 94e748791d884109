-- ess.config: the configuration schema, its validation, defaults and the
-- environment overrides.
--
-- It owns the single description of every configuration key (type, default,
-- range, meaning, environment variable) and derives everything else from it:
-- validation of the YAML file, the defaults, the env overrides and the
-- Markdown reference in docs/configuration.md (`config.schema_doc()`). It
-- does not read the process environment itself (the C side passes a plain
-- table of strings) and it does not act on the values.
--
-- Errors are returned as `nil, message`, never raised; a message is one line
-- that names the key path (or the environment variable) and the problem.

local lyaml = require "lyaml"
local yaml = require "yaml"

local byte, find, format, gsub, lower, sub = string.byte, string.find, string.format,
    string.gsub, string.lower, string.sub
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge

local M = {}

local NULL = lyaml.null
local MAX_EXACT = 2 ^ 53

-- Value checks -------------------------------------------------------------

local function is_integer(v)
    return type(v) == "number" and v == v and v > -MAX_EXACT and v < MAX_EXACT
        and floor(v) == v
end

local function fmt_number(n)
    if is_integer(n) then
        if n == 0 then
            return "0" -- also turns -0 into 0
        end
        return format("%.0f", n)
    end
    if n ~= n then
        return ".nan"
    elseif n == huge then
        return ".inf"
    elseif n == -huge then
        return "-.inf"
    end
    return format("%.17g", n)
end
M.fmt_number = fmt_number

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
    ["\t"] = "\\t" }

-- Quotes a string for an error message: escaped, on one line, and cut short
-- so that a huge value cannot flood the log.
local function quote(s)
    local cut = #s > 80
    if cut then
        s = sub(s, 1, 80)
    end
    s = gsub(s, '[%c"\\]', function(c)
        return ESCAPES[c] or format("\\x%02x", byte(c))
    end)
    return '"' .. s .. (cut and '..."' or '"')
end
M.quote = quote

-- Hides the password of a URL's user info before it is echoed in an error.
local function redact(s)
    return (gsub(s, "^([%a][%w+.-]*://[^:/@]*:)[^@/]*@", "%1***@"))
end

local function describe(v)
    local t = type(v)
    if v == NULL or v == nil then
        return "null"
    elseif t == "string" then
        return quote(v)
    elseif t == "number" then
        return fmt_number(v)
    elseif t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        return v[1] ~= nil and "a list" or "a mapping"
    end
    return t
end

local function valid_ipv4(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return false
    end
    for _, part in ipairs({ a, b, c, d }) do
        if #part > 3 or tonumber(part) > 255 then
            return false
        end
    end
    return true
end

local function count_groups(s)
    if s == "" then
        return 0
    end
    local n = 0
    for group in (s .. ":"):gmatch("([^:]*):") do
        if not group:match("^%x%x?%x?%x?$") then
            return nil
        end
        n = n + 1
    end
    return n
end

local function valid_ipv6(s)
    if not s:match("^[%x:.]+$") or not find(s, ":", 1, true) then
        return false
    end
    local groups = 0
    local head, v4 = s:match("^(.*):(%d+%.%d+%.%d+%.%d+)$")
    if head then
        if not valid_ipv4(v4) then
            return false
        end
        groups, s = 2, head
        if sub(s, -1) == ":" then
            s = s .. ":" -- "::1.2.3.4" was split inside the "::"
        end
    end
    local dc = find(s, "::", 1, true)
    if dc then
        if find(s, "::", dc + 1, true) then
            return false
        end
        local l, r = count_groups(sub(s, 1, dc - 1)), count_groups(sub(s, dc + 2))
        return l ~= nil and r ~= nil and groups + l + r <= 7
    end
    local n = count_groups(s)
    return n ~= nil and groups + n == 8
end

local function valid_hostname(s)
    if #s == 0 or #s > 253 then
        return false
    end
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if #label == 0 or #label > 63 or not label:match("^[%w-]+$")
            or sub(label, 1, 1) == "-" or sub(label, -1) == "-" then
            return false
        end
    end
    return true
end

local function valid_listen(s)
    local host, port = s:match("^%[([^%]]*)%]:(%d+)$")
    if host then
        if not valid_ipv6(host) then
            return false
        end
    else
        host, port = s:match("^([^:]+):(%d+)$")
        if not host then
            return false
        end
        if host:match("^[%d.]+$") then
            if not valid_ipv4(host) then
                return false
            end
        elseif not valid_hostname(host) then
            return false
        end
    end
    local p = #port <= 5 and tonumber(port)
    return p and p >= 1 and p <= 65535 or false
end
M.valid_listen = valid_listen

local function valid_module(s)
    if s == "" then
        return false
    end
    for part in (s .. "."):gmatch("([^.]*)%.") do
        if not part:match("^[%w_]+$") then
            return false
        end
    end
    return true
end

-- Checkers take the value and return true, or false and what was expected.
local function int_checker(min, max)
    local expected = max and format("an integer %s..%s", fmt_number(min), fmt_number(max))
        or format("an integer >= %s", fmt_number(min))
    return function(v)
        return is_integer(v) and v >= min and (max == nil or v <= max), expected
    end, expected
end

local function string_checker(expected, pred)
    return function(v)
        return type(v) == "string" and (pred == nil or pred(v)), expected
    end
end

local function check_bool(v)
    return type(v) == "boolean", "true or false"
end

-- Hook options (lua.enrich_options, lua.route_options): any mapping here;
-- the hook module's own schema checks the contents when the hook is loaded
-- (ess.options, called from core/script/hooks.c).
local function check_options(v)
    return v == NULL or (type(v) == "table" and v[1] == nil), "a mapping of hook options"
end

-- A copy of a YAML value without its nulls, so hook code never meets
-- lyaml's null: a mapping drops a key whose value is null (the option keeps
-- its default); a null in a list would leave a hole, so it is refused here
-- with its path.
local function strip_null(v, path)
    if v == NULL then
        return nil
    elseif type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, x in pairs(v) do
        if x == NULL and type(k) == "number" then
            return nil, format("config: %s[%d]: expected a value, got null", path, k)
        end
        local c, err = strip_null(x, type(k) == "number" and format("%s[%d]", path, k)
            or path .. "." .. tostring(k))
        if err then
            return nil, err
        end
        out[k] = c
    end
    return out
end

local check_listen = string_checker('"host:port"', valid_listen)

-- broker.stream_hosts: a list of "host:port" (at most 31: the URL's node
-- and these share a list of 32 in the stream client).
local function check_hosts(v)
    local expected = 'a list of "host:port" (at most 31)'
    if type(v) ~= "table" or (next(v) ~= nil and v[1] == nil) or #v > 31 then
        return false, expected
    end
    for k, h in pairs(v) do
        if type(k) ~= "number" or type(h) ~= "string" or not valid_listen(h) then
            return false, expected
        end
    end
    return true
end

local READ_FROM = { replica = true, leader = true, any = true }
local check_module = string_checker("a Lua module name like ess.enrich", valid_module)
local check_nonempty = string_checker("a non-empty string", function(s)
    return s ~= "" and not find(s, "%c")
end)

-- The schema ---------------------------------------------------------------
--
-- A section is { name, doc, keys = {...} }; a leaf is
-- { name, kind, default, doc, check = fn, env = "VAR" | {"VAR", ...} }.
-- The order here is the order of the docs and of config/essd.yaml.

local function int(name, default, min, max, doc, env)
    local check = int_checker(min, max)
    local kind = max and format("integer %s..%s", fmt_number(min), fmt_number(max))
        or format("integer >= %s", fmt_number(min))
    return { name = name, kind = kind, default = default, doc = doc, check = check,
        env = env, parse = "int" }
end

local function leaf(name, kind, default, doc, check, env, parse)
    return { name = name, kind = kind, default = default, doc = doc, check = check,
        env = env, parse = parse or "string" }
end

local LEVELS = { debug = true, info = true, warn = true, error = true }

local SCHEMA = {
    { name = "public", doc = "the public WebSocket listener", keys = {
        leaf("listen", "host:port", "0.0.0.0:8080",
            "Address of the public WebSocket listener (IPv4, [IPv6] or name, port 1..65535).",
            check_listen, "ESS_PUBLIC_LISTEN"),
        int("max_connections", 10000, 1, 1000000,
            "Most WebSocket connections open at once; more close 1013. essd raises its soft "
                .. "open-file limit toward the hard one to reach it, and lowers one above "
                .. "1,048,576 to that."),
        int("max_header_bytes", 8192, 1024, 1048576,
            "Largest HTTP request header block accepted (public upgrades and the internal API)."),
        int("max_frame_bytes", 65536, 125, 16777216,
            "Largest inbound WebSocket frame; a bigger one closes the connection."),
        int("ping_interval_s", 30, 0, 3600,
            "Seconds between server pings that detect dead peers (0 = off)."),
        int("outbound_budget_bytes", 1048576, 4096, 1073741824,
            "Bytes queued per connection before stream credit is withheld."),
        int("stall_timeout_s", 30, 1, 86400,
            "Seconds queued frames may wait for a client that reads none before it is "
                .. "closed (1008)."),
        leaf("compression", "boolean (off | on)", false,
            "permessage-deflate (RFC 7692) for clients that offer it: each message compressed"
                .. " alone (no context takeover). Off by default: costs CPU, see"
                .. " docs/benchmarks.md.",
            check_bool, "ESS_PUBLIC_COMPRESSION", "bool"),
    } },
    { name = "internal", doc = "the internal REST API", keys = {
        leaf("listen", "host:port", "0.0.0.0:8081", "Address of the internal REST API listener.",
            check_listen, "ESS_INTERNAL_LISTEN"),
        int("max_body_bytes", 65536, 1024, 16777216,
            "Largest request body accepted by the internal API (413 above it)."),
        leaf("api_token", "string", "",
            'Bearer token required on every route but /health/* ("" = no auth).',
            string_checker("a string of printable ASCII without spaces", function(s)
                return not find(s, "[^\33-\126]")
            end), "ESS_API_TOKEN", "token"),
    } },
    { name = "ingress", doc = "how end users reach the public listener", keys = {
        leaf("location", "string", "localhost:8080",
            "Host[:port][/prefix] put into event-stream locations (no scheme, no spaces).",
            string_checker('a location like "host:port" without scheme or spaces', function(s)
                return s ~= "" and not find(s, "://", 1, true) and not find(s, "[%s%c]")
                    and sub(s, -1) ~= "/"
            end), "ESS_INGRESS_LOCATION"),
        leaf("secure", "boolean", false, "Give wss:// locations instead of ws://.", check_bool,
            "ESS_INGRESS_SECURE", "bool"),
    } },
    { name = "broker", doc = "RabbitMQ", keys = {
        leaf("url", "string", "amqp://guest:guest@localhost:5672/",
            "AMQP URL of the broker: host, user, password, vhost (the path without its"
                .. " leading /) for both protocols; its port is the AMQP 0-9-1 one"
                .. " (version 1, classic routes).",
            string_checker("an amqp:// or amqps:// URL", function(s)
                return (find(s, "^amqps?://[^%s%c]+$")) ~= nil
            end), { "ESS_AMPQ_URL", "ESS_AMQP_URL" }, "url"),
        int("stream_port", 5552, 1, 65535,
            "Port of the RabbitMQ stream protocol on the host of broker.url (version 2).",
            "ESS_STREAM_PORT"),
        int("version", 2, 1, 2, "1 = classic queues (no history), 2 = RabbitMQ streams."),
        leaf("stream_hosts", "list of host:port", {},
            "More stream-protocol nodes of the cluster. The stream client's locator connection"
                .. " (Metadata, readiness) starts at the host of broker.url and stream_port;"
                .. " when that node fails it tries these in order, then the nodes Metadata"
                .. " answers named, round robin (env: comma-separated).",
            check_hosts, "ESS_STREAM_HOSTS", "list"),
        leaf("read_from", "replica | leader | any", "replica",
            "Member of a stream a subscription reads from: a replica (the leader when there"
                .. " is none), the leader, or any member the client is already connected to."
                .. " After a lost node it prefers another member than that one.",
            function(v)
                return type(v) == "string" and READ_FROM[v] ~= nil, "one of replica, leader, any"
            end, "ESS_BROKER_READ_FROM"),
        leaf("load_balancer_mode", "boolean", false,
            "The broker is behind a load balancer: ignore advertised stream hosts.", check_bool),
        int("heartbeat_s", 60, 0, 3600, "Broker heartbeat in seconds (0 = off)."),
        int("reconnect_min_ms", 100, 1, 60000, "First reconnect delay after a lost broker."),
        int("reconnect_max_ms", 10000, 1, 600000,
            "Largest reconnect delay (>= reconnect_min_ms); delays double with jitter."),
    } },
    leaf("manage_streams", "boolean", false,
        "POST declares the stream and binds it to event-streams; DELETE deletes it.",
        check_bool),
    { name = "database", doc = "the SQLite registry", keys = {
        leaf("path", "string", "ess.db",
            "SQLite file of the event-stream registry (relative to the working directory);"
                .. " its directory must exist and be writable.",
            check_nonempty, "ESS_DATABASE_PATH"),
    } },
    { name = "registry", doc = "where the event-stream registry lives (docs/scaling.md)", keys = {
        leaf("backend", "sqlite | stream", "sqlite",
            "sqlite: one process owns the registry in database.path; stream: the registry is"
                .. " a log in a replicated RabbitMQ stream shared by every replica, and"
                .. " database.path holds this replica's materialised view of it.",
            function(v)
                return v == "sqlite" or v == "stream", "one of sqlite, stream"
            end, "ESS_REGISTRY_BACKEND"),
        leaf("stream", "string", "ess-registry",
            "Name of the registry stream (backend stream); connection claims go to"
                .. " <stream>-claims.",
            string_checker("a stream name of 1..200 printable ASCII characters", function(s)
                return #s >= 1 and #s <= 200 and not find(s, "[^\33-\126]")
            end), "ESS_REGISTRY_STREAM"),
        int("initial_cluster_size", 0, 0, 255,
            "x-initial-cluster-size of the registry streams when essd creates them (0 = the"
                .. " broker's default: every node)."),
        int("max_length_bytes", 0, 0, nil,
            "x-max-length-bytes of the registry stream when essd creates it (0 = no limit;"
                .. " snapshots let a new replica rebuild after retention)."),
        int("max_segment_size_bytes", 0, 0, nil,
            "x-stream-max-segment-size-bytes of the registry stream when essd creates it"
                .. " (0 = the broker's default)."),
        int("snapshot_every", 1000, 1, 1000000,
            "Records between snapshots of the live rows written to the registry stream."),
        int("timeout_ms", 5000, 100, 600000,
            "How long POST/DELETE wait for the broker's confirm and the local apply before"
                .. " answering 503; also how long a WebSocket for an unknown uuid waits for"
                .. " the registry to catch up."),
    } },
    { name = "log", doc = "logging", keys = {
        leaf("level", "debug | info | warn | error", "info", "Lowest level that is logged.",
            function(v)
                return type(v) == "string" and LEVELS[v] ~= nil, "one of debug, info, warn, error"
            end, "ESS_LOG_LEVEL", "level"),
        leaf("dir", "string", "", 'Directory of rotated log files ("" = console only).',
            string_checker("a string without control characters", function(s)
                return not find(s, "%c")
            end), "ESS_LOG_DIR"),
        int("max_bytes", 10485760, 4096, nil, "Size at which a log file is rotated."),
        int("keep", 5, 1, 100, "Rotated log files kept."),
        int("message_stats_interval", 800, 1, nil,
            "Log a connection's received/sent counts every N messages.",
            "ESS_MESSAGE_STATS_INTERVAL"),
    } },
    { name = "lua", doc = "the Lua scripts", keys = {
        leaf("path", "string", "lua",
            "Root directory of the Lua scripts (relative to the working directory); when it "
                .. "does not exist, the lua/ folder of the source tree essd was built from.",
            check_nonempty, "ESS_LUA_PATH"),
        leaf("enrich", "module name", "ess.enrich", "Module with the enrichment hook.",
            check_module),
        leaf("enrich_options", "mapping", {},
            "Options of the enrichment hook, checked by the schema its module declares "
                .. "(docs/lua.md).", check_options, nil, "options"),
        leaf("route", "module name", "ess.route", "Module with the routing hook.", check_module),
        leaf("route_options", "mapping", {},
            "Options of the routing hook, checked by the schema its module declares.",
            check_options, nil, "options"),
        leaf("api", "module name", "ess.api", "Module with the internal API handlers.",
            check_module),
        leaf("watch", "boolean", false, "Reload the scripts when a file under lua.path changes.",
            check_bool),
        int("hook_timeout_ms", 1000, 10, 600000,
            "CPU time a Lua call (hook, API handler, reload) may use before the watchdog "
                .. "interrupts it, or exits with status 70 when it cannot (docs/lua.md)."),
        int("max_memory_mb", 256, 8, 65536,
            "Memory ceiling of each Lua VM; an allocation past it fails the call with an "
                .. "error (a rejected reload, an unenriched message)."),
    } },
    { name = "shutdown", doc = "graceful shutdown", keys = {
        int("grace_s", 10, 0, 3600, "Seconds SIGTERM waits for connections to close."),
    } },
}
M.schema = SCHEMA

-- Cross-key rules, run after every key has a valid value.
local function cross_check(cfg)
    local b = cfg.broker
    if b.reconnect_max_ms < b.reconnect_min_ms then
        return format("broker.reconnect_max_ms: expected an integer >= broker.reconnect_min_ms"
            .. " (%s), got %s", fmt_number(b.reconnect_min_ms), fmt_number(b.reconnect_max_ms))
    end
end

-- Calls fn(path, leaf) for every leaf in schema order.
local function each_leaf(fn)
    for _, node in ipairs(SCHEMA) do
        if node.keys then
            for _, l in ipairs(node.keys) do
                fn(node.name .. "." .. l.name, l, node.name)
            end
        else
            fn(node.name, node, nil)
        end
    end
end
M.each_leaf = each_leaf

function M.defaults()
    local cfg = {}
    for _, node in ipairs(SCHEMA) do
        if node.keys then
            local sec = {}
            for _, l in ipairs(node.keys) do
                sec[l.name] = type(l.default) == "table" and {} or l.default
            end
            cfg[node.name] = sec
        else
            cfg[node.name] = node.default
        end
    end
    return cfg
end

-- Unknown keys -------------------------------------------------------------

local function distance(a, b)
    if #a > 64 or #b > 64 then
        return huge
    end
    local prev = {}
    for j = 0, #b do
        prev[j] = j
    end
    for i = 1, #a do
        local cur = { [0] = i }
        local ca = byte(a, i)
        for j = 1, #b do
            local cost = ca == byte(b, j) and 0 or 1
            cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        end
        prev = cur
    end
    return prev[#b]
end

local function unknown_key(prefix, key, nodes)
    local name = type(key) == "string" and key or describe(key)
    local best, best_d
    if type(key) == "string" then
        for _, n in ipairs(nodes) do
            local d = distance(lower(key), n.name)
            if d <= math.max(1, floor(#n.name / 3)) and (best_d == nil or d < best_d) then
                best, best_d = n.name, d
            end
        end
    end
    local msg = format('config: unknown key "%s"', gsub(prefix .. name, '["\\%c]', "?"))
    if best then
        msg = msg .. format(' (did you mean "%s%s"?)', prefix, best)
    end
    return msg
end

-- Validation ---------------------------------------------------------------

local function by_name(nodes)
    local t = {}
    for _, n in ipairs(nodes) do
        t[n.name] = n
    end
    return t
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        return tostring(a) < tostring(b)
    end)
    return keys
end

local function apply_mapping(dst, src, nodes, prefix)
    local known = by_name(nodes)
    for _, k in ipairs(sorted_keys(src)) do
        local node = type(k) == "string" and known[k]
        if not node then
            return unknown_key(prefix, k, nodes)
        end
        local v, path = src[k], prefix .. k
        if node.keys then
            if v ~= NULL then -- "section:" with everything commented out
                if type(v) ~= "table" or v[1] ~= nil then
                    return format("config: %s: expected a mapping, got %s", path, describe(v))
                end
                local err = apply_mapping(dst[k], v, node.keys, path .. ".")
                if err then
                    return err
                end
            end
        else
            local ok, expected = node.check(v)
            if not ok then
                local shown = node.parse == "url" and type(v) == "string" and redact(v) or v
                return format("config: %s: expected %s, got %s", path, expected, describe(shown))
            end
            if node.parse == "options" then
                local err
                v, err = strip_null(v, path)
                if err then
                    return err
                end
                v = v or {}
            end
            dst[k] = v
        end
    end
end

local TRUE_WORDS = { yes = true, ["true"] = true, ["1"] = true, on = true }
local FALSE_WORDS = { no = true, ["false"] = true, ["0"] = true, off = true }

-- Turns an environment string into a value of the leaf's type.
local function parse_env(l, s)
    if l.parse == "bool" then
        local w = lower(s)
        if TRUE_WORDS[w] then
            return true
        elseif FALSE_WORDS[w] then
            return false
        end
        return nil, "yes or no"
    elseif l.parse == "int" then
        if not s:match("^%d+$") or #s > 16 then
            return nil, select(2, l.check(nil))
        end
        return tonumber(s)
    elseif l.parse == "level" then
        return lower(s)
    elseif l.parse == "list" then
        local out = {}
        for item in gsub(s, "%s", ""):gmatch("[^,]+") do
            out[#out + 1] = item
        end
        return out
    end
    return s
end

local function apply_env(cfg, env)
    local err
    each_leaf(function(_, l, section)
        if err or not l.env then
            return
        end
        local vars = type(l.env) == "table" and l.env or { l.env }
        local var, s
        for _, name in ipairs(vars) do -- the last one set wins
            local v = env[name]
            if type(v) == "number" then
                v = fmt_number(v)
            end
            if v ~= nil and (v ~= "" or l.parse == "token") then
                var, s = name, v
            end
        end
        if not var then
            return
        end
        if type(s) ~= "string" then
            err = format("%s: expected a string, got %s", var, type(s))
            return
        end
        local v, expected = parse_env(l, s)
        local ok
        if v ~= nil then
            ok, expected = l.check(v)
        end
        if not ok then
            err = format("%s: expected %s, got %s", var, expected,
                quote(l.parse == "url" and redact(s) or s))
            return
        end
        if section then
            cfg[section][l.name] = v
        else
            cfg[l.name] = v
        end
    end)
    return err
end

--- Validates a configuration table (as decoded from YAML), fills defaults
--- and applies the environment overrides.
-- @param tbl a table, or nil for "all defaults"
-- @param env a table of strings (the process environment), or nil
-- @return a new plain nested table, or nil and a one-line error
function M.validate(tbl, env)
    if env ~= nil and type(env) ~= "table" then
        return nil, "config: env must be a table"
    end
    local cfg = M.defaults()
    if tbl ~= nil and tbl ~= NULL then
        if type(tbl) ~= "table" or tbl[1] ~= nil then
            return nil, "config: the top level must be a mapping, got " .. describe(tbl)
        end
        local err = apply_mapping(cfg, tbl, SCHEMA, "")
        if err then
            return nil, err
        end
        err = cross_check(cfg)
        if err then
            return nil, "config: " .. err
        end
    end
    local err = apply_env(cfg, env or {})
    if err then
        return nil, err
    end
    err = cross_check(cfg)
    if err then
        return nil, "config: " .. err
    end
    return cfg
end

-- YAML ---------------------------------------------------------------------

-- Walks libyaml's event stream before lyaml builds tables, for two things
-- lyaml hides: the exact position of a syntax error (lyaml reports the last
-- good event instead), and duplicate keys (lyaml silently keeps the last).
-- Returns nil, or the position ("LINE:COL", "LINE" or nil) and the problem.
local function scan(text)
    local parser = yaml.parser(text)
    local stack = {}
    for _ = 1, 4 * #text + 64 do -- bounded: a node is at most a start and an end event
        local ok, ev = pcall(parser)
        if not ok then
            local msg = tostring(ev)
            local problem, line, col = msg:match(
                "^(.-) at document: %d+, line: (%d+), column: (%d+)")
            if not problem then
                msg = gsub(gsub(msg, " at document: %d+", ""), "%s+", " ")
                return nil, (gsub(msg, " $", ""))
            end
            local context, cline, ccol = msg:match("\n(.-) at line: (%d+), column: (%d+)")
            if context then
                problem = format("%s (%s at line %s, column %s)", problem, context, cline, ccol)
            end
            return line .. ":" .. col, problem
        end
        if not ev or ev.type == "STREAM_END" then
            return nil
        end
        local top = stack[#stack]
        local t = ev.type
        if top and top.map and (t == "SCALAR" or t == "ALIAS" or t == "MAPPING_START"
            or t == "SEQUENCE_START") then
            if top.expect_key and t == "SCALAR" then
                if top.seen[ev.value] and ev.value ~= "<<" then
                    return tostring(ev.start_mark.line + 1),
                        format('duplicate key "%s"', (gsub(ev.value, '["\\%c]', "?")))
                end
                top.seen[ev.value] = true
            end
            top.expect_key = not top.expect_key
        end
        if t == "MAPPING_START" then
            stack[#stack + 1] = { map = true, seen = {}, expect_key = true }
        elseif t == "SEQUENCE_START" then
            stack[#stack + 1] = { map = false }
        elseif t == "MAPPING_END" or t == "SEQUENCE_END" then
            stack[#stack] = nil
        end
    end
    return nil, "the YAML parser did not finish"
end

--- Parses YAML text and validates it; `name` is used in syntax errors.
function M.parse(text, name, env)
    local pos, problem = scan(text)
    if problem then
        return nil, format("config: %s:%s %s", name, pos and (pos .. ":") or "", problem)
    end
    local ok, docs = pcall(lyaml.load, text, { all = true })
    if not ok then
        -- Not expected after scan(); lyaml's own "LINE:COL:" is approximate.
        local msg = gsub(tostring(docs), "%s+", " ")
        return nil, format("config: %s:%s%s", name, msg:match("^%d+:%d+: ") and "" or " ", msg)
    end
    if #docs > 1 then
        return nil, format("config: %s: expected one YAML document, found %d", name, #docs)
    end
    return M.validate(docs[1], env)
end

--- Reads and validates the YAML file at `path` (nil = defaults + env only).
function M.load(path, env)
    if path == nil then
        return M.validate(nil, env)
    end
    local f, err = io.open(path, "rb")
    if not f then
        return nil, "config: cannot read " .. tostring(err)
    end
    local text = f:read("*a")
    f:close()
    if not text then
        return nil, "config: cannot read " .. path
    end
    return M.parse(text, path, env)
end

-- Documentation ------------------------------------------------------------

local function fmt_default(v)
    if type(v) == "table" then
        return "`{}`"
    elseif type(v) == "string" then
        return '`"' .. v .. '"`'
    end
    return "`" .. (type(v) == "number" and fmt_number(v) or tostring(v)) .. "`"
end
M.fmt_default = fmt_default

--- Returns the Markdown reference table of every key.
function M.schema_doc()
    local lines = {
        "| key | type | default | meaning | env var |",
        "| --- | --- | --- | --- | --- |",
    }
    each_leaf(function(path, l)
        local env = ""
        if l.env then
            local vars = type(l.env) == "table" and l.env or { l.env }
            local parts = {}
            for i, v in ipairs(vars) do
                parts[i] = "`" .. v .. "`"
            end
            env = concat(parts, ", ")
        end
        lines[#lines + 1] = format("| `%s` | %s | %s | %s | %s |", path,
            gsub(l.kind, "|", "\\|"), fmt_default(l.default), gsub(l.doc, "|", "\\|"), env)
    end)
    return concat(lines, "\n") .. "\n"
end

return M
