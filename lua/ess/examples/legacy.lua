-- ess.examples.legacy: an enrichment hook (lua.enrich) for clients written
-- against the original gateway's later versions, which called the offset
-- an "ordinal". A JSON object body gains "ess_ordinal" and "ess_timestamp"
-- as its last members, spliced into the original bytes (never re-encoded);
-- any other text body gains "|ordinal: <n>|timestamp: <ms>"; a body that
-- starts with "{" but is not valid JSON, and every binary body, is
-- forwarded unchanged (and counted as enrich_invalid_json, like the
-- default). It is ess.enrich's code with other names (ess.enrich.new), so
-- both stay byte-for-byte alike; it keeps no state and never reads
-- msg.properties.
--
-- Enable: `lua.enrich: ess.examples.legacy` (config/examples/legacy.yaml).

local enrich = require("ess.enrich").new({
    offset_key = "ess_ordinal",
    timestamp_key = "ess_timestamp",
    text_offset = "|ordinal: ",
    text_timestamp = "|timestamp: ",
})

return { enrich = enrich, per_stream = false }
