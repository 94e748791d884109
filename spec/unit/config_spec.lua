-- Specs for ess.config: defaults, strict types and ranges, unknown keys,
-- environment overrides, YAML errors and the shipped config files.

local config = require "ess.config"
local helpers = require "helpers"
local lyaml = require "lyaml"

local tmpfile = helpers.tmpfile

local function fails(tbl, env)
    local cfg, err = config.validate(tbl, env)
    assert.is_nil(cfg)
    assert.is_string(err)
    assert.is_nil(err:find("\n"), "error must be one line: " .. err)
    return err
end

describe("ess.config", function()
    describe("defaults", function()
        it("fills every key when there is no file and no env", function()
            local cfg = assert(config.load(nil, {}))
            assert.same({
                public = {
                    listen = "0.0.0.0:8080", max_connections = 10000, max_header_bytes = 8192,
                    max_frame_bytes = 65536, ping_interval_s = 30,
                    outbound_budget_bytes = 1048576, stall_timeout_s = 30, compression = false,
                },
                internal = { listen = "0.0.0.0:8081", max_body_bytes = 65536, api_token = "" },
                ingress = { location = "localhost:8080", secure = false },
                broker = {
                    url = "amqp://guest:guest@localhost:5672/", stream_port = 5552, version = 2,
                    stream_hosts = {}, read_from = "replica", load_balancer_mode = false,
                    heartbeat_s = 60, reconnect_min_ms = 100,
                    reconnect_max_ms = 10000,
                },
                manage_streams = false,
                database = { path = "ess.db" },
                registry = { backend = "sqlite", stream = "ess-registry",
                    initial_cluster_size = 0, max_length_bytes = 0, max_segment_size_bytes = 0,
                    snapshot_every = 1000, timeout_ms = 5000 },
                log = { level = "info", dir = "", max_bytes = 10485760, keep = 5,
                    message_stats_interval = 800 },
                lua = { path = "lua", enrich = "ess.enrich", enrich_options = {},
                    route = "ess.route", route_options = {}, api = "ess.api", watch = false,
                    hook_timeout_ms = 1000, max_memory_mb = 256 },
                shutdown = { grace_s = 10 },
            }, cfg)
        end)

        it("returns a fresh table each time", function()
            local a = assert(config.validate({}))
            a.public.listen = "changed:1"
            local b = assert(config.validate({}))
            assert.equal("0.0.0.0:8080", b.public.listen)
        end)

        it("keeps given values and defaults the rest of a section", function()
            local cfg = assert(config.validate({ public = { max_connections = 5 } }))
            assert.equal(5, cfg.public.max_connections)
            assert.equal("0.0.0.0:8080", cfg.public.listen)
        end)

        it("accepts an empty section (everything under it commented out)", function()
            local cfg = assert(config.parse("public:\nlog:\n", "t.yaml", {}))
            assert.equal(10000, cfg.public.max_connections)
        end)

        it("accepts an empty file", function()
            local cfg = assert(config.parse("# nothing\n", "t.yaml", {}))
            assert.equal("info", cfg.log.level)
        end)
    end)

    describe("errors name the key", function()
        it("reports a listen address that is not host:port", function()
            assert.equal('config: public.listen: expected "host:port", got "abc"',
                fails({ public = { listen = "abc" } }))
        end)

        it("reports an unknown top-level key with a suggestion", function()
            assert.equal('config: unknown key "brokr" (did you mean "broker"?)',
                fails({ brokr = {} }))
        end)

        it("reports an unknown nested key with its path", function()
            assert.equal('config: unknown key "public.lisen" (did you mean "public.listen"?)',
                fails({ public = { lisen = "x:1" } }))
            assert.equal('config: unknown key "log.colour"', fails({ log = { colour = true } }))
        end)

        it("reports a non-string key", function()
            assert.matches("unknown key", fails({ public = { [7] = 1, listen = "a:1" } }))
        end)

        it("reports an out-of-range port", function()
            assert.equal("config: broker.stream_port: expected an integer 1..65535, got 70000",
                fails({ broker = { stream_port = 70000 } }))
        end)

        it("is strict about types", function()
            assert.equal('config: public.max_connections: expected an integer 1..1000000,'
                .. ' got "8080"', fails({ public = { max_connections = "8080" } }))
            assert.equal('config: ingress.secure: expected true or false, got "yes"',
                fails({ ingress = { secure = "yes" } }))
            assert.equal("config: public.listen: expected \"host:port\", got 8080",
                fails({ public = { listen = 8080 } }))
            assert.equal("config: public: expected a mapping, got 8", fails({ public = 8 }))
            assert.equal("config: public: expected a mapping, got a list",
                fails({ public = { 1, 2 } }))
            assert.equal("config: log.keep: expected an integer 1..100, got 2.5",
                fails({ log = { keep = 2.5 } }))
            assert.equal("config: log.keep: expected an integer 1..100, got null",
                fails({ log = { keep = lyaml.null } }))
            assert.equal("config: manage_streams: expected true or false, got 1",
                fails({ manage_streams = 1 }))
        end)

        it("checks every integer range at both ends", function()
            local n = 0
            config.each_leaf(function(path, leaf)
                if not leaf.kind:find("^integer") then
                    return
                end
                local section, key = path:match("^(%w+)%.([%w_]+)$")
                local lo, hi = leaf.kind:match("(%d+)%.%.(%d+)")
                lo = lo or leaf.kind:match(">= (%d+)")
                local cases = { tonumber(lo) - 1 }
                if hi then
                    cases[2] = tonumber(hi) + 1
                end
                for _, bad in ipairs(cases) do
                    local err = fails({ [section] = { [key] = bad } })
                    assert.equal(("config: %s: expected an %s, got %d"):format(path, leaf.kind,
                        bad), err)
                    n = n + 1
                end
                local ok = { [key] = tonumber(lo) }
                if section == "broker" then
                    ok.reconnect_min_ms = 1 -- reconnect_max_ms may not go below it
                end
                assert.truthy(config.validate({ [section] = ok }))
            end)
            assert.is_true(n >= 20)
        end)

        it("rejects bad values of the string keys", function()
            local bad = {
                { { public = { listen = "0.0.0.0:0" } }, "public.listen" },
                { { public = { listen = "0.0.0.0:65536" } }, "public.listen" },
                { { public = { listen = "256.1.1.1:80" } }, "public.listen" },
                { { public = { listen = "::1:80" } }, "public.listen" },
                { { public = { listen = "[::1::2]:80" } }, "public.listen" },
                { { public = { listen = ":80" } }, "public.listen" },
                { { public = { listen = "host name:80" } }, "public.listen" },
                { { internal = { listen = "-bad-.example:80" } }, "internal.listen" },
                { { ingress = { location = "" } }, "ingress.location" },
                { { ingress = { location = "ws://host" } }, "ingress.location" },
                { { ingress = { location = "a host" } }, "ingress.location" },
                { { ingress = { location = "host/" } }, "ingress.location" },
                { { broker = { url = "http://x/" } }, "broker.url" },
                { { broker = { url = "amqp://" } }, "broker.url" },
                { { broker = { version = 3 } }, "broker.version" },
                { { database = { path = "" } }, "database.path" },
                { { log = { level = "verbose" } }, "log.level" },
                { { log = { level = "INFO" } }, "log.level" },
                { { log = { dir = "a\nb" } }, "log.dir" },
                { { lua = { path = "" } }, "lua.path" },
                { { lua = { enrich = "a..b" } }, "lua.enrich" },
                { { lua = { route = "ess/route" } }, "lua.route" },
                { { lua = { api = "" } }, "lua.api" },
                { { internal = { api_token = "has space" } }, "internal.api_token" },
            }
            for _, case in ipairs(bad) do
                local err = fails(case[1])
                assert.equal("config: " .. case[2] .. ": ", err:sub(1, #case[2] + 10))
            end
        end)

        it("accepts the listen forms", function()
            for _, v in ipairs({ "127.0.0.1:1", "[::1]:8080", "[::]:80", "localhost:65535",
                "[fe80::1:2]:9", "[::ffff:10.0.0.1]:80", "[1:2:3:4:5:6:7:8]:80",
                "essd-0.essd.svc.cluster.local:8081" }) do
                local cfg, err = config.validate({ public = { listen = v } })
                assert.truthy(cfg, err)
                assert.equal(v, cfg.public.listen)
            end
        end)

        it("requires reconnect_max_ms >= reconnect_min_ms", function()
            assert.equal("config: broker.reconnect_max_ms: expected an integer >="
                .. " broker.reconnect_min_ms (500), got 100",
                fails({ broker = { reconnect_min_ms = 500, reconnect_max_ms = 100 } }))
            assert.truthy(config.validate({ broker = { reconnect_min_ms = 500,
                reconnect_max_ms = 500 } }))
        end)

        it("does not echo a password from a bad broker URL", function()
            local err = fails({ broker = { url = "http://user:hunter2@host/" } })
            assert.is_nil(err:find("hunter2", 1, true))
        end)

        it("rejects a top level that is not a mapping", function()
            assert.matches("top level", fails({ "a", "b" }))
            assert.matches("top level", select(2, config.parse("- a\n- b\n", "t.yaml")))
            assert.matches("top level", select(2, config.parse("just text\n", "t.yaml")))
        end)
    end)

    describe("environment overrides", function()
        local cases = {
            { "ESS_AMPQ_URL", "amqp://u:p@mq:5672/v", "broker", "url", "amqp://u:p@mq:5672/v" },
            { "ESS_AMQP_URL", "amqps://u:p@mq/", "broker", "url", "amqps://u:p@mq/" },
            { "ESS_INGRESS_LOCATION", "events.example.com", "ingress", "location",
                "events.example.com" },
            { "ESS_INGRESS_SECURE", "yes", "ingress", "secure", true },
            { "ESS_MESSAGE_STATS_INTERVAL", "5", "log", "message_stats_interval", 5 },
            { "ESS_STREAM_PORT", "5572", "broker", "stream_port", 5572 },
            { "ESS_PUBLIC_LISTEN", "127.0.0.1:18080", "public", "listen", "127.0.0.1:18080" },
            { "ESS_INTERNAL_LISTEN", "[::1]:18081", "internal", "listen", "[::1]:18081" },
            { "ESS_DATABASE_PATH", "/tmp/x.db", "database", "path", "/tmp/x.db" },
            { "ESS_REGISTRY_BACKEND", "stream", "registry", "backend", "stream" },
            { "ESS_REGISTRY_STREAM", "my-registry", "registry", "stream", "my-registry" },
            { "ESS_LOG_DIR", "/var/log/essd", "log", "dir", "/var/log/essd" },
            { "ESS_LOG_LEVEL", "debug", "log", "level", "debug" },
            { "ESS_API_TOKEN", "t0ken", "internal", "api_token", "t0ken" },
            { "ESS_LUA_PATH", "/opt/lua", "lua", "path", "/opt/lua" },
            { "ESS_BROKER_READ_FROM", "leader", "broker", "read_from", "leader" },
        }
        for _, c in ipairs(cases) do
            it(c[1] .. " sets " .. c[3] .. "." .. c[4], function()
                local cfg = assert(config.load(nil, { [c[1]] = c[2] }))
                assert.equal(c[5], cfg[c[3]][c[4]])
            end)
        end

        it("ESS_STREAM_HOSTS sets broker.stream_hosts from a comma-separated list", function()
            local cfg = assert(config.load(nil,
                { ESS_STREAM_HOSTS = "10.0.0.2:5552, rmq3:5553,[::1]:5554" }))
            assert.same({ "10.0.0.2:5552", "rmq3:5553", "[::1]:5554" }, cfg.broker.stream_hosts)
            assert.equal('ESS_STREAM_HOSTS: expected a list of "host:port" (at most 31), got'
                .. ' "a:1,b"', select(2, config.load(nil, { ESS_STREAM_HOSTS = "a:1,b" })))
        end)

        it("refuses a bad broker.stream_hosts or broker.read_from", function()
            assert.same({ "h:1" }, assert(config.validate({ broker = { stream_hosts = { "h:1" } } },
                {})).broker.stream_hosts)
            assert.equal('config: broker.stream_hosts: expected a list of "host:port" (at most 31),'
                .. ' got "h:1"', select(2, config.validate({ broker = { stream_hosts = "h:1" } })))
            assert.equal('config: broker.stream_hosts: expected a list of "host:port" (at most 31),'
                .. ' got a list', select(2, config.validate({ broker = { stream_hosts =
                    { "h:1", "h:70000" } } })))
            assert.equal('config: broker.read_from: expected one of replica, leader, any, got'
                .. ' "follower"',
                select(2, config.validate({ broker = { read_from = "follower" } })))
        end)

        it("refuses an unknown registry backend", function()
            local cfg, err = config.load(nil, { ESS_REGISTRY_BACKEND = "etcd" })
            assert.is_nil(cfg)
            assert.truthy(err:find("ESS_REGISTRY_BACKEND: expected one of sqlite, stream", 1, true),
                err)
        end)

        it("overrides the YAML file", function()
            local path = tmpfile("ingress:\n  location: from-file:1\n")
            local cfg = assert(config.load(path, { ESS_INGRESS_LOCATION = "from-env:2" }))
            os.remove(path)
            assert.equal("from-env:2", cfg.ingress.location)
        end)

        it("prefers ESS_AMQP_URL when both spellings are set", function()
            local cfg = assert(config.load(nil, { ESS_AMPQ_URL = "amqp://old/",
                ESS_AMQP_URL = "amqp://new/" }))
            assert.equal("amqp://new/", cfg.broker.url)
        end)

        it("treats an empty value as not set", function()
            local cfg = assert(config.load(nil, { ESS_AMPQ_URL = "", ESS_INGRESS_SECURE = "",
                ESS_LOG_LEVEL = "", ESS_PUBLIC_LISTEN = "" }))
            assert.equal("amqp://guest:guest@localhost:5672/", cfg.broker.url)
            assert.equal("0.0.0.0:8080", cfg.public.listen)
            assert.is_false(cfg.ingress.secure)
        end)

        it("treats an empty ESS_API_TOKEN as no token, even over the file", function()
            local cfg = assert(config.validate({ internal = { api_token = "file" } },
                { ESS_API_TOKEN = "" }))
            assert.equal("", cfg.internal.api_token)
        end)

        it("reads ESS_INGRESS_SECURE words case-insensitively", function()
            for word, want in pairs({ yes = true, YES = true, ["true"] = true, ["1"] = true,
                no = false, No = false, FALSE = false, ["0"] = false }) do
                local cfg = assert(config.load(nil, { ESS_INGRESS_SECURE = word }))
                assert.equal(want, cfg.ingress.secure, word)
            end
        end)

        it("names the variable in its errors", function()
            assert.equal('ESS_INGRESS_SECURE: expected yes or no, got "maybe"',
                select(2, config.load(nil, { ESS_INGRESS_SECURE = "maybe" })))
            assert.equal('ESS_MESSAGE_STATS_INTERVAL: expected an integer >= 1, got "abc"',
                select(2, config.load(nil, { ESS_MESSAGE_STATS_INTERVAL = "abc" })))
            assert.equal('ESS_MESSAGE_STATS_INTERVAL: expected an integer >= 1, got "0"',
                select(2, config.load(nil, { ESS_MESSAGE_STATS_INTERVAL = "0" })))
            assert.equal('ESS_MESSAGE_STATS_INTERVAL: expected an integer >= 1, got "-5"',
                select(2, config.load(nil, { ESS_MESSAGE_STATS_INTERVAL = "-5" })))
            assert.equal('ESS_PUBLIC_LISTEN: expected "host:port", got "abc"',
                select(2, config.load(nil, { ESS_PUBLIC_LISTEN = "abc" })))
            assert.matches("^ESS_AMPQ_URL: ",
                select(2, config.load(nil, { ESS_AMPQ_URL = "http://x/" })))
            assert.matches("^ESS_LOG_LEVEL: ",
                select(2, config.load(nil, { ESS_LOG_LEVEL = "loud" })))
            assert.matches("^ESS_INGRESS_LOCATION: ",
                select(2, config.load(nil, { ESS_INGRESS_LOCATION = "https://x" })))
            assert.matches("^ESS_API_TOKEN: ",
                select(2, config.load(nil, { ESS_API_TOKEN = "tok\n" })))
        end)

        it("accepts ESS_LOG_LEVEL in any case", function()
            assert.equal("warn", assert(config.load(nil, { ESS_LOG_LEVEL = "WARN" })).log.level)
        end)

        it("ignores variables it does not know", function()
            assert.truthy(config.load(nil, { PATH = "/bin", ESS_CONFIG = "x.yaml" }))
        end)
    end)

    describe("YAML files", function()
        it("names the file and line of a syntax error", function()
            local path = tmpfile("public:\n  listen: \"0.0.0.0:1\"\n  max_connections: [1, 2\n")
            local cfg, err = config.load(path, {})
            os.remove(path)
            assert.is_nil(cfg)
            assert.matches("^config: " .. path:gsub("%p", "%%%0") .. ":4:%d+: ", err)
        end)

        it("names the line of a tab indentation error", function()
            local _, err = config.parse("public:\n  listen: \"a:1\"\n\tmax: 1\n", "t.yaml")
            assert.matches("^config: t%.yaml:3:%d+: ", err)
        end)

        it("names the exact line and column of the bad character", function()
            local _, err = config.parse("a: 1\nb: 2\nc: @x\n", "t.yaml")
            assert.matches("^config: t%.yaml:3:4: found character that cannot start any token",
                err)
            assert.is_nil(err:find("\n"))
        end)

        it("reports an unknown alias", function()
            local _, err = config.parse("log:\n  level: *lvl\n", "t.yaml")
            assert.matches("^config: t%.yaml:%d+:%d+: invalid reference: lvl$", err)
        end)

        it("reports a duplicate key with its line", function()
            local _, err = config.parse("log:\n  level: info\n  keep: 2\n  level: warn\n",
                "t.yaml")
            assert.equal('config: t.yaml:4: duplicate key "level"', err)
        end)

        it("rejects more than one document", function()
            local _, err = config.parse("log: {}\n---\nlog: {}\n", "t.yaml")
            assert.matches("one YAML document", err)
        end)

        it("reports a missing file", function()
            local cfg, err = config.load("/nonexistent/essd.yaml", {})
            assert.is_nil(cfg)
            assert.matches("^config: cannot read /nonexistent/essd.yaml", err)
        end)

        it("takes hook options as a mapping, without YAML nulls", function()
            local cfg = assert(config.parse("lua:\n  enrich_options:\n    keep: [a, b]\n"
                .. "    keep_untyped:\n    nested: { x: ~, y: 1 }\n", "t.yaml", {}))
            assert.same({ keep = { "a", "b" }, nested = { y = 1 } }, cfg.lua.enrich_options)
            assert.same({}, cfg.lua.route_options)
            cfg = assert(config.parse("lua:\n  route_options:\n", "t.yaml", {}))
            assert.same({}, cfg.lua.route_options)
        end)

        it("refuses hook options that are not a mapping, or a null in a list", function()
            local _, err = config.parse("lua:\n  enrich_options: [a]\n", "t.yaml", {})
            assert.equal("config: lua.enrich_options: expected a mapping of hook options,"
                .. " got a list", err)
            _, err = config.parse("lua:\n  route_options: 3\n", "t.yaml", {})
            assert.equal("config: lua.route_options: expected a mapping of hook options,"
                .. " got 3", err)
            _, err = config.parse("lua:\n  enrich_options:\n    keep: [a, ~]\n", "t.yaml", {})
            assert.equal("config: lua.enrich_options.keep[2]: expected a value, got null", err)
        end)

        it("gives each configuration its own options table", function()
            local a = assert(config.validate({}))
            a.lua.enrich_options.x = 1
            assert.same({}, assert(config.validate({})).lua.enrich_options)
        end)

        it("keeps a quoted number a string (and so rejects it)", function()
            local _, err = config.parse("public:\n  max_connections: \"8080\"\n", "t.yaml")
            assert.equal('config: public.max_connections: expected an integer 1..1000000,'
                .. ' got "8080"', err)
        end)

        it("ships config/essd.yaml with every key at its default", function()
            local cfg, err = config.load("config/essd.yaml", {})
            assert.truthy(cfg, err)
            assert.same(config.defaults(), cfg)
            local raw = lyaml.load(helpers.read("config/essd.yaml"))
            config.each_leaf(function(path)
                local section, key = path:match("^([%w_]+)%.([%w_]+)$")
                local v
                if section then
                    v = raw[section] and raw[section][key]
                else
                    v = raw[path]
                end
                assert.is_not_nil(v, path .. " missing from config/essd.yaml")
            end)
        end)

        it("ships a valid config/examples/minimal.yaml", function()
            local cfg, err = config.load("config/examples/minimal.yaml", {})
            assert.truthy(cfg, err)
            assert.is_true(cfg.ingress.secure)
        end)
    end)

    describe("schema_doc", function()
        it("lists every key once with its env var", function()
            local doc = config.schema_doc()
            assert.matches("^| key | type | default | meaning | env var |\n", doc)
            local count = 0
            config.each_leaf(function(path)
                local _, n = doc:gsub("\n| `" .. path:gsub("%p", "%%%0") .. "` |", "")
                assert.equal(1, n, path)
                count = count + 1
            end)
            local _, rows = doc:gsub("\n", "")
            assert.equal(count + 2, rows)
            assert.truthy(doc:find("`ESS_AMPQ_URL`, `ESS_AMQP_URL`", 1, true))
        end)

        it("matches docs/configuration.md", function()
            local text = helpers.read("docs/configuration.md")
            assert.truthy(text:find(config.schema_doc(), 1, true),
                "paste config.schema_doc() into docs/configuration.md")
        end)
    end)
end)
