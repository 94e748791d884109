"""Helpers for the integration tests: start a real essd on free loopback
ports with its own database, talk HTTP and WebSocket to it, and stop it.

Python standard library only. Every wait is bounded.
"""
import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BUILD = os.environ.get("ESS_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SOURCE = os.environ.get("ESS_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
ESSD = os.path.join(BUILD, "essd")  # tests may point this elsewhere
# The broker under test. scripts/test uses the project's own (the defaults);
# scripts/test-matrix points the same tests at another one:
#   ESS_TEST_AMQP_URL     AMQP 0-9-1 URL
#   ESS_TEST_STREAM_PORT  stream protocol port on the same host
#   ESS_TEST_BROKER_CTL   command (split on spaces) that takes rabbitmqctl's
#                         arguments, e.g. "podman exec NAME rabbitmqctl";
#                         default: scripts/broker ctl
AMQP_URL = os.environ.get("ESS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
AMQP_PORT = urllib.parse.urlsplit(AMQP_URL).port or 5672
STREAM_PORT = int(os.environ.get("ESS_TEST_STREAM_PORT") or 5552)
BROKER_CTL = (os.environ.get("ESS_TEST_BROKER_CTL", "").split()
              or [os.path.join(SOURCE, "scripts", "broker"), "ctl"])
# For the built tools (ess-cat, ess-publish) and essd: the same broker.
BROKER_ENV = {"ESS_AMQP_URL": AMQP_URL, "ESS_STREAM_PORT": str(STREAM_PORT)}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Essd:
    """One essd process. Use as a context manager or call start()/stop()."""

    def __init__(self, env=None, config=None, db=None, workdir=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="ess-it-")
        self.db = db or os.path.join(self.workdir, "ess.db")
        self.public_port = free_port()
        self.internal_port = free_port()
        self.config = config
        self.extra_env = env or {}
        self.proc = None
        self.log_path = os.path.join(self.workdir, "essd.out")

    def env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("ESS_")}
        e.update({
            "ESS_PUBLIC_LISTEN": "127.0.0.1:%d" % self.public_port,
            "ESS_INTERNAL_LISTEN": "127.0.0.1:%d" % self.internal_port,
            "ESS_DATABASE_PATH": self.db,
            "ESS_AMQP_URL": AMQP_URL,
            "ESS_STREAM_PORT": str(STREAM_PORT),
            "ESS_LUA_PATH": os.path.join(SOURCE, "lua"),
        })
        e.update(self.extra_env)
        return e

    def start(self, wait=True, ready=True):
        """Start essd; with wait, return once it answers /health/live and,
        with ready, once /health/ready says the broker is connected too
        (as an ingress would before routing clients to it)."""
        args = [ESSD]
        if self.config:
            args += ["--config", self.config]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=self.env(), stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
        if wait:
            deadline = time.time() + 20
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("essd exited with %d:\n%s" % (self.proc.returncode, self.output()))
                try:
                    status, _, _ = self.request("GET", "/health/ready" if ready else "/health/live")
                    if status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError("essd was not %s within 20 s:\n%s" % ("ready" if ready else "live",
                                                                        self.output()))
        return self

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop essd and return its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError("essd did not stop within %d s" % timeout)
        finally:
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def request(self, method, path, body=None, headers=None, port=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.internal_port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode("utf-8")
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else None)


class WebSocket:
    """A minimal RFC 6455 client for tests: text/binary frames, close codes."""

    def __init__(self, host, port, path, headers=None, timeout=10, rcvbuf=None):
        self.timeout = timeout
        self.pos = 0
        if rcvbuf:
            # A small receive buffer, set before connecting, so a client that
            # stops reading fills up quickly (flow-control tests).
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake: %r" % self.buf)
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        self.buf = bytearray(rest)
        self.status = int(head.split(b" ")[1])
        if self.status != 101:
            raise ConnectionError("handshake refused: %r" % head)
        self.close_code = None
        self.close_reason = None

    def _read(self, n):
        # A bytearray with a read position: slicing the whole buffer per
        # frame would make a 40,000-frame replay quadratic.
        while len(self.buf) - self.pos < n:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def send_frame(self, opcode, payload=b""):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self, timeout=None):
        """Return (opcode, payload) of the next data frame, or ("close", code, reason).

        With timeout (seconds), raise socket.timeout when no whole frame
        arrives in time; a partial frame stays buffered for the next call.
        """
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]  # at a frame boundary: drop what was read
            self.pos = 0
        if timeout is not None:
            self.sock.settimeout(timeout)
            mark = self.pos
            try:
                return self._recv()
            except socket.timeout:
                self.pos = mark  # nothing consumed: retry the frame later
                raise
            finally:
                self.sock.settimeout(self.timeout)
        return self._recv()

    def _recv(self):
        while True:
            b0, b1 = self._read(2)
            opcode = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_code, self.close_reason = code, payload[2:].decode("utf-8", "replace")
                try:
                    self.send_frame(0x8, payload[:2])
                except OSError:
                    pass
                return ("close", code, self.close_reason)
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            return (opcode, payload)

    def close(self, code=1000):
        try:
            self.send_frame(0x8, struct.pack("!H", code))
        except OSError:
            pass
        self.sock.close()


class Checker:
    """Counts checks; prints a closing line 'N passed, N failed'."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL:", what, file=sys.stderr)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)


# ---------------------------------------------------------------------------
# Helpers for the WebSocket tests (issue 4): tools, event streams, metrics,
# and a tiny RabbitMQ stream-protocol client for creating, filling and
# deleting many streams without one process per stream.

PUBLISH = os.path.join(BUILD, "ess-publish")
CAT = os.path.join(BUILD, "ess-cat")
LISTEN = os.path.join(BUILD, "ess-listen")
BROKER = os.path.join(SOURCE, "scripts", "broker")


def unique(prefix="it4"):
    """A stream name no other test or engineer uses."""
    return "%s-%s" % (prefix, base64.b32encode(os.urandom(10)).decode().lower().rstrip("="))


def tool(path, *args, stdin=None, timeout=300, check=True):
    """Run a built tool; return CompletedProcess (bytes). Raises on failure when check."""
    r = subprocess.run([path, *map(str, args)], input=stdin, capture_output=True, timeout=timeout,
                       env=dict(os.environ, **BROKER_ENV))
    if check and r.returncode != 0:
        raise RuntimeError("%s %s exited %d: %s" % (os.path.basename(path), " ".join(map(str, args)),
                                                    r.returncode, r.stderr.decode(errors="replace")))
    return r


def publish(key, count, fmt="json", declare=False, poison=False, rate=0, size=None):
    """ess-publish through the event-streams exchange."""
    args = ["--routing-key", key, "--count", count, "--format", fmt, "--rate", rate]
    if declare:
        args.append("--declare")
    if poison:
        args.append("--poison")
    if size:
        args += ["--size", size]
    return tool(PUBLISH, *args)


def cat_publish(stream, lines, create=False):
    """ess-cat --publish: one message per line (bytes or str, no newlines inside)."""
    data = b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines)
    args = ["--publish"] + (["--create"] if create else []) + [stream]
    return tool(CAT, *args, stdin=data)


def cat_read(stream, count, start="first"):
    """The stream's messages as ess-cat --format json reads them: [{offset, timestamp, body}].

    Bodies that are not UTF-8 are not representable here; use cat_read_raw.
    """
    r = tool(CAT, stream, "--from", start, "--count", count, "--format", "json")
    return [json.loads(line) for line in r.stdout.decode("utf-8", "replace").splitlines() if line]


def delete_stream(name):
    tool(CAT, "--delete", name, check=False, timeout=60)


def broker_ctl(*args, timeout=120):
    return subprocess.run([*BROKER_CTL, *args], capture_output=True, text=True, timeout=timeout)


def broker_connections():
    """Lines of `rabbitmqctl list_connections name` (one per connection), or None on error."""
    r = broker_ctl("list_connections", "-q", "name")
    if r.returncode != 0:
        return None
    return [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("name")]


def metrics(essd):
    """GET /metrics parsed into {"name{labels}": float}."""
    st, _, data = essd.request("GET", "/metrics")
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def wait_broker(tries=120):
    """Wait (bounded, ~60 s) until the shared broker accepts AMQP and stream
    connections: other tests may be restarting it. True when it does."""
    for _ in range(tries):
        try:
            a = StreamAdmin()
            a.close()
            socket.create_connection(("127.0.0.1", AMQP_PORT), timeout=2).close()
            return True
        except (OSError, ConnectionError, RuntimeError, struct.error):
            time.sleep(0.5)
    return False


def wait_ready(essd, tries=100):
    """Wait (bounded) for GET /health/ready = 200: registry open, broker
    reachable. essd answers /health/live before its stream client has
    connected, and a WebSocket opened in between is closed 1013."""
    for _ in range(tries):
        try:
            if essd.request("GET", "/health/ready")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def sanitizer_report(essd):
    """The first sanitizer report in essd's output ("" when there is none)."""
    out = essd.output()
    for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        i = out.find(mark)
        if i >= 0:
            return out[max(0, i - 200):i + 1500]
    return ""


def create_es(essd, key):
    """POST an event stream; return (id, path) where path is /event-stream/{uuid}."""
    st, body = essd.json("POST", "/event-stream/", {"routing_key": key})
    if st != 201:
        raise RuntimeError("POST /event-stream/ gave %s %r" % (st, body))
    return body["id"], "/event-stream/" + body["location"].rsplit("/", 1)[1]


def ws_open(essd, path, headers=None, **kw):
    return WebSocket("127.0.0.1", essd.public_port, path, headers=headers, **kw)


def recv_close(ws, limit=100000, timeout=20):
    """Read frames until the close; return (frames, close) with close = (code, reason) or None."""
    frames = []
    try:
        for _ in range(limit):
            f = ws.recv(timeout=timeout)
            if f[0] == "close":
                return frames, (f[1], f[2])
            frames.append(f)
    except (OSError, ConnectionError):
        return frames, None
    return frames, None


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class StreamAdmin:
    """A minimal RabbitMQ stream-protocol client (port 5552): create, delete,
    publish. Enough for tests that need a thousand streams in seconds."""

    def __init__(self, host="127.0.0.1", port=None, user="guest", password="guest", vhost="/"):
        port = port or STREAM_PORT
        self.params = (host, port, user, password, vhost)
        self.sock = socket.create_connection((host, port), timeout=30)
        self.corr = 0
        self.buf = b""
        self._call(0x11, self._map({"product": "esslib"}))
        self._call(0x12, b"")
        self._call(0x13, self._str("PLAIN") + self._bytes(b"\0" + user.encode() + b"\0" + password.encode()))
        key, body = self._frame()
        while key != 0x14:  # Tune
            key, body = self._frame()
        # Accept the frame size, turn heartbeats off: the tests keep this
        # connection idle for minutes while essd works.
        self._send(struct.pack(">HH", 0x14, 1) + body[:4] + struct.pack(">I", 0))
        self._call(0x15, self._str(vhost))
        self.confirms = 0

    @staticmethod
    def _str(x):
        b = x.encode()
        return struct.pack(">h", len(b)) + b

    @staticmethod
    def _bytes(b):
        return struct.pack(">i", len(b)) + b

    def _map(self, d):
        return struct.pack(">i", len(d)) + b"".join(self._str(k) + self._str(v) for k, v in d.items())

    def _send(self, payload):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _frame(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    f, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    key = struct.unpack(">H", f[:2])[0]
                    if key == 0x0003:  # publish confirm
                        self.confirms += struct.unpack(">i", f[5:9])[0]
                        continue
                    if key == 0x0017:  # heartbeat
                        continue
                    return key, f[4:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream connection closed")
            self.buf += chunk

    def _call(self, key, args):
        """Send a request; return its response code (1 = OK)."""
        self.corr += 1
        self._send(struct.pack(">HHI", key, 1, self.corr) + args)
        for _ in range(1000):
            rkey, body = self._frame()
            if rkey == (key | 0x8000) and struct.unpack(">I", body[:4])[0] == self.corr:
                return struct.unpack(">H", body[4:6])[0]
        raise RuntimeError("no response to command 0x%x" % key)

    def _again(self, key, args):
        """_call, reconnecting if the broker dropped this connection (the
        broker is shared: another test may be restarting it). Bounded:
        about 60 s of retries, then the error is raised."""
        for attempt in range(60):
            try:
                return self._call(key, args)
            except (OSError, ConnectionError):
                if attempt == 59:
                    raise
                self.sock.close()
                time.sleep(1)
                try:
                    self.__init__(*self.params)
                except (OSError, ConnectionError):
                    self.sock = socket.socket()  # closed next round

    def create(self, stream):
        """1 = created, 5 = already exists."""
        return self._again(0x0D, self._str(stream) + struct.pack(">i", 0))

    def delete(self, stream):
        """1 = deleted, 2 = no such stream."""
        return self._again(0x0E, self._str(stream))

    def publish(self, stream, bodies, pub_id=1):
        """Publish bodies (bytes) as AMQP 1.0 data sections; wait for every confirm."""
        rc = self._call(0x01, struct.pack(">B", pub_id) + self._str("") + self._str(stream))
        if rc != 1:
            return rc
        self.confirms = 0
        msgs = b"".join(struct.pack(">Q", i) + self._bytes(b"\x00\x53\x75\xb0" + struct.pack(">I", len(b)) + b)
                        for i, b in enumerate(bodies))
        self._send(struct.pack(">HHBi", 0x02, 1, pub_id, len(bodies)) + msgs)
        for _ in range(100000):
            if self.confirms >= len(bodies):
                break
            self.sock.settimeout(30)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream connection closed")
            self.buf += chunk
            while len(self.buf) >= 4 and len(self.buf) >= 4 + struct.unpack(">I", self.buf[:4])[0]:
                n = struct.unpack(">I", self.buf[:4])[0]
                f, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                if struct.unpack(">H", f[:2])[0] == 0x0003:
                    self.confirms += struct.unpack(">i", f[5:9])[0]
        return self._call(0x06, struct.pack(">B", pub_id))  # DeletePublisher

    def close(self):
        try:
            self._call(0x16, struct.pack(">H", 0) + self._str("done"))
        except (OSError, RuntimeError, ConnectionError):
            pass
        self.sock.close()


def sanitized(pid):
    """True when the process has AddressSanitizer's runtime mapped."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


class StreamProxy:
    """127.0.0.1:port -> the broker's stream port; cut() drops every connection."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", STREAM_PORT), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
                self.accepted += 1
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.lsock.close()
        self.cut()
