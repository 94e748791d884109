"""public.outbound_budget_bytes is bound at start: it sizes the stream
client's credit window as well as each session's queue, so a reload cannot
apply it whole. A reload that changes it keeps the running value and lists
it in restart_required (before, the session read the new value live while
the credit window kept the old one, and the reload reported nothing)."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from esslib import Checker, Essd  # noqa: E402

t = Checker()
work = tempfile.mkdtemp(prefix="ess-budget-")
cfg = os.path.join(work, "essd.yaml")


def write(budget, stall):
    with open(cfg, "w") as f:
        f.write("public:\n  outbound_budget_bytes: %d\n  stall_timeout_s: %d\n" % (budget, stall))


write(65536, 30)
e = Essd(config=cfg, workdir=work).start()
try:
    write(1048576, 31)
    st, res = e.json("POST", "/admin/reload")
    t.eq(st, 200, "reload accepted")
    t.eq(res.get("status"), "reloaded", "reloaded")
    t.check("public.outbound_budget_bytes" in res.get("restart_required", []),
            "a changed outbound budget is reported as restart-only (%r)" % res.get("restart_required"))
    t.check("public.stall_timeout_s" not in res.get("restart_required", []),
            "a live setting is not reported (%r)" % res.get("restart_required"))
    out = e.output()
    t.check("public.outbound_budget_bytes changed; it applies at the next start" in out,
            "the reload log names the restart-only setting")
    # Reloading again with the same file: still differs from the running value.
    st, res = e.json("POST", "/admin/reload")
    t.check("public.outbound_budget_bytes" in res.get("restart_required", []),
            "the running budget stays the start value (%r)" % res.get("restart_required"))
    write(65536, 30)
    st, res = e.json("POST", "/admin/reload")
    t.eq(res.get("restart_required"), [], "back to the start value: nothing to report")
finally:
    t.eq(e.stop(), 0, "stops cleanly")
t.done()
