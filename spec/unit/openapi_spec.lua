-- Specs for lua/ess/api/openapi.json: valid JSON, OpenAPI 3.x, and the same
-- routes and methods as the router's table (ess.api.routes), both ways.

local api = require "ess.api"
local cjson = require("cjson").new()
local helpers = require "helpers"

local function load_doc()
    return cjson.decode(helpers.read("lua/ess/api/openapi.json"))
end

-- Calls fn(node) for every table in the document.
local function walk(node, fn)
    if type(node) == "table" then
        fn(node)
        for _, v in pairs(node) do
            walk(v, fn)
        end
    end
end

describe("openapi.json", function()
    local doc

    before_each(function()
        doc = load_doc()
    end)

    it("is an OpenAPI 3.x document with info and paths", function()
        assert.matches("^3%.%d+%.%d+$", doc.openapi)
        assert.is_string(doc.info.title)
        assert.is_string(doc.info.version)
        assert.is_table(doc.paths)
    end)

    it("documents every route and method that ess.api handles", function()
        assert.is_true(#api.routes >= 8)
        for _, r in ipairs(api.routes) do
            local item = doc.paths[r.path]
            assert.is_table(item, "missing path " .. r.path)
            for method in pairs(r.methods) do
                assert.is_table(item[method:lower()], "missing " .. method .. " " .. r.path)
            end
        end
    end)

    it("documents nothing that ess.api does not handle", function()
        local handled = {}
        for _, r in ipairs(api.routes) do
            handled[r.path] = r.methods
        end
        local ops = { get = true, put = true, post = true, delete = true, options = true,
            head = true, patch = true, trace = true }
        for path, item in pairs(doc.paths) do
            assert.is_table(handled[path], "documented but not routed: " .. path)
            for key in pairs(item) do
                if ops[key] then
                    assert.is_function(handled[path][key:upper()],
                        "documented but not routed: " .. key .. " " .. path)
                end
            end
        end
    end)

    it("gives every operation an id and responses", function()
        local ids = {}
        for path, item in pairs(doc.paths) do
            for method, op in pairs(item) do
                assert.is_string(op.operationId, method .. " " .. path)
                assert.is_nil(ids[op.operationId], "duplicate operationId " .. op.operationId)
                ids[op.operationId] = true
                assert.is_table(op.responses)
            end
        end
    end)

    it("declares the bearer scheme and leaves /health/* open like the router", function()
        local scheme = doc.components.securitySchemes.bearerAuth
        assert.equal("http", scheme.type)
        assert.equal("bearer", scheme.scheme)
        assert.same({ { bearerAuth = {} } }, doc.security)
        for _, r in ipairs(api.routes) do
            for method in pairs(r.methods) do
                local op = doc.paths[r.path][method:lower()]
                local open = op.security ~= nil and next(op.security) == nil
                assert.equal(r.public == true, open, method .. " " .. r.path)
            end
        end
    end)

    it("resolves every $ref", function()
        local n = 0
        walk(doc, function(node)
            local ref = node["$ref"]
            if ref then
                local target = doc
                for part in ref:gsub("^#/", ""):gmatch("[^/]+") do
                    target = target[part]
                    assert.is_not_nil(target, "unresolved " .. ref)
                end
                n = n + 1
            end
        end)
        assert.is_true(n > 10)
    end)
end)
