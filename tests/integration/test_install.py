"""The install layout the Docker image uses (cmake --install, then essd
run from the prefix with its shipped Lua scripts and configuration):
installs, validates its configuration, and serves the API."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from esslib import BUILD, Checker, Essd  # noqa: E402
import esslib  # noqa: E402

t = Checker()
prefix = tempfile.mkdtemp(prefix="ess-install-")
r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True, text=True, timeout=120)
t.eq(r.returncode, 0, "cmake --install: " + r.stderr)
essd = os.path.join(prefix, "bin", "essd")
lua = os.path.join(prefix, "share", "essd", "lua")
cfg = os.path.join(prefix, "share", "essd", "config", "essd.yaml")
t.check(os.access(essd, os.X_OK), "essd installed")
t.check(os.path.exists(os.path.join(lua, "ess", "config.lua")), "Lua scripts installed")
env = {k: v for k, v in os.environ.items() if not k.startswith("ESS_")}
env["ESS_LUA_PATH"] = lua
r = subprocess.run([essd, "--check-config", "--config", cfg], capture_output=True, text=True, env=env, timeout=30)
t.eq(r.returncode, 0, "installed essd accepts the installed config: " + r.stderr)

# The installed binary serves the API with the installed scripts (as the image's entrypoint does).
esslib.ESSD = essd
e = Essd(env={"ESS_LUA_PATH": lua}, config=cfg).start()
try:
    st, body = e.json("GET", "/event-stream/version/")
    t.eq(st, 200, "installed essd answers")
    # The operator console's page comes from share/essd/ui, beside the Lua root.
    st, hdrs, page = e.request("GET", "/ui/")
    t.check(st == 200 and b"console.js" in page, "installed essd serves the console page (%d)" % st)
    st, hdrs, js = e.request("GET", "/ui/console.js")
    t.check(st == 200 and hdrs.get("content-type", "").startswith("text/javascript"),
            "installed essd serves the console's script (%d)" % st)
finally:
    t.eq(e.stop(), 0, "installed essd stops cleanly")
t.done()
