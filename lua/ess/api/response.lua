-- ess.api.response: builders for the response tables the C side expects
-- ({status, body, content_type, headers}). It owns the shapes of the error
-- bodies (FastAPI-style `{"detail": ...}`) so every handler words them the
-- same way; it knows no routes.

local json = require "ess.api.json"

local M = {}

local JSON_TYPE = "application/json"

--- A JSON response; `value` is encoded with ess.api.json.
function M.json(status, value, headers)
    return { status = status, body = json.encode(value), content_type = JSON_TYPE,
        headers = headers }
end

--- `{"detail": message}` with the given status.
function M.detail(status, message, headers)
    return M.json(status, json.object("detail", message), headers)
end

--- A response without a body (204).
function M.empty(status)
    return { status = status, body = "", content_type = JSON_TYPE }
end

--- One pydantic-style validation error: loc is a list, ctx an optional object.
function M.error_item(loc, msg, kind, ctx)
    return json.object("loc", json.array(loc), "msg", msg, "type", kind, "ctx", ctx)
end

--- 422 with a list of validation errors made by error_item.
function M.invalid(...)
    return M.json(422, json.object("detail", json.array({ ... })))
end

return M
