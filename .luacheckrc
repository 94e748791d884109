-- luacheck configuration: `luacheck lua spec` from the repository root.
std = "luajit"
max_line_length = 100
codes = true

-- The enrichment hook runs in the host's sandbox, which provides a read-only
-- global table `ess` (ess.log, ess.count, ...).
files["lua/ess/enrich.lua"] = {
    read_globals = { "ess" },
}

files["spec"] = {
    std = "+busted",
}
