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
import time

BUILD = os.environ.get("ESS_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SOURCE = os.environ.get("ESS_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
ESSD = os.path.join(BUILD, "essd")  # tests may point this elsewhere
AMQP_URL = os.environ.get("ESS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


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
            "ESS_LUA_PATH": os.path.join(SOURCE, "lua"),
        })
        e.update(self.extra_env)
        return e

    def start(self, wait=True):
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
                    status, _, _ = self.request("GET", "/health/live")
                    if status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError("essd did not answer within 20 s:\n" + self.output())
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

    def __init__(self, host, port, path, headers=None, timeout=10):
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
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])
        if self.status != 101:
            raise ConnectionError("handshake refused: %r" % head)
        self.close_code = None
        self.close_reason = None

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
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

    def recv(self):
        """Return (opcode, payload) of the next data frame, or ("close", code, reason)."""
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
