"""Broker CPU per Metadata and per Subscribe (bare stream protocol), on the streams bench/ab/burst.py made."""
import os
import sys, struct, time, os, subprocess
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import esslib  # noqa: E402
WORK = os.environ.get("ESS_AB_WORK", "/tmp/ess-ab")
os.makedirs(WORK, exist_ok=True)
names = open(WORK + "/streams-1000").read().split()
bp = int(subprocess.run("ss -ltnpH 'sport = :5552' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2", shell=True, capture_output=True, text=True).stdout.strip())
def cpu(pid):
    v = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
def bench(label, fn):
    c0 = cpu(bp); t0 = time.time(); fn(); print(label, "wall %.2f s broker cpu %.2f s" % (time.time() - t0, cpu(bp) - c0))
a = esslib.StreamAdmin()
def md_each():
    for n in names: a._call(0x0F, struct.pack(">i", 1) + a._str(n)) if False else a._send(struct.pack(">HHI", 0x0F, 1, 7) + struct.pack(">i", 1) + a._str(n))
    for n in names: a._frame()
def md_batch():
    for i in range(0, 1000, 100):
        a._send(struct.pack(">HHI", 0x0F, 1, 7) + struct.pack(">i", 100) + b"".join(a._str(n) for n in names[i:i+100]))
    for i in range(10): a._frame()
def sub_each():
    for i, n in enumerate(names[:250]):
        a._send(struct.pack(">HHIB", 0x07, 1, 1000 + i, i) + a._str(n) + struct.pack(">H", 1) + struct.pack(">Hi", 0, 0))
    got = 0
    while got < 250:
        f = a._frame()
        got += 1
#bench("1000 metadata, one per command", md_each)
#bench("1000 metadata, 100 per command", md_batch)
bench("250 subscribe from first, credit 0", sub_each)
def sub_credit():
    b = esslib.StreamAdmin()
    for i, n in enumerate(names[250:500]):
        b._send(struct.pack(">HHIB", 0x07, 1, 1000 + i, i) + b._str(n) + struct.pack(">H", 1) + struct.pack(">Hi", 10, 0))
    got = 0; dl = 0
    while got < 250 or dl < 250:
        f = b._frame()
        k = f[0]
        if k == 0x08: dl += 1
        else: got += 1
bench("250 subscribe from first, credit 10, wait deliveries", sub_credit)
