-- ess.api.ops: the operational routes (version, health, metrics, reload,
-- OpenAPI document).
--
-- It only shapes what the C core reports (core.ready, core.metrics_text,
-- core.reload) into HTTP responses; it keeps no state except the cached
-- OpenAPI text, which a reload throws away with the VM.

local json = require "ess.api.json"
local response = require "ess.api.response"

local M = {}

--- GET /event-stream/version/
function M.version(_, core)
    return response.json(200, json.object("protocol", "WEBSOCKET", "name", core.name,
        "version", core.version))
end

--- GET /health/live: the process answers, nothing else is checked.
function M.live()
    return response.json(200, json.object("status", "ok"))
end

--- GET /health/ready: 503 until the registry is open and the broker reachable.
function M.ready(_, core)
    local ok, checks = core.ready()
    if type(checks) ~= "table" then
        checks = {}
    end
    return response.json(ok and 200 or 503,
        json.object("status", ok and "ready" or "not ready", "checks", checks))
end

--- GET /metrics: Prometheus text exposition, produced by C.
function M.metrics(_, core)
    return { status = 200, body = tostring(core.metrics_text() or ""),
        content_type = "text/plain; version=0.0.4; charset=utf-8" }
end

--- POST /admin/reload: the C core builds and swaps a new VM.
function M.reload(_, core)
    if type(core.reload) ~= "function" then
        return response.detail(501, "reload not available")
    end
    local ok, result = core.reload()
    if type(result) ~= "table" then
        result = json.object(ok and "status" or "detail", tostring(result or (ok and "reloaded"
            or "reload failed")))
    elseif type(result.restart_required) == "table" then
        result.restart_required = json.array(result.restart_required)
    end
    return response.json(ok and 200 or 422, result)
end

local cached_path, cached_text

--- GET /openapi.json: the document is read once per VM and cached.
function M.openapi(_, core)
    local path = core.openapi_path
    if cached_text == nil or cached_path ~= path then
        local f, err = io.open(tostring(path), "rb")
        local text = f and f:read("*a")
        if f then
            f:close()
        end
        if not text then
            core.log("error", "cannot read the OpenAPI document: " .. tostring(err))
            return response.detail(500, "OpenAPI document unavailable")
        end
        cached_path, cached_text = path, text
    end
    return { status = 200, body = cached_text, content_type = "application/json" }
end

return M
