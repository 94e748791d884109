-- site.enrich: the operator's enrichment hook (lua.enrich: site.enrich),
-- shipped in the essd-site ConfigMap. It runs the default hook (ess.enrich
-- adds ess_offset and ess_timestamp) and then adds "site": SITE as the
-- last member of JSON object bodies. Edit SITE, apply the ConfigMap, and
-- the next message shows the new value: lua.watch reloads without
-- dropping a client (docs/deploy.md).

local default = require("ess.enrich").enrich

local SITE = "v1"

local find, sub = string.find, string.sub
local tail = ',"site":"' .. SITE .. '"}'

return {
    enrich = function(msg, es)
        local body = default(msg, es)
        if type(body) ~= "string" or sub(body, 1, 1) ~= "{" then
            return body
        end
        local last = find(body, "}%s*$")
        if not last then
            return body
        end
        return sub(body, 1, last - 1) .. tail
    end,
}
