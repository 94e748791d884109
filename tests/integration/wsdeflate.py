"""A raw WebSocket client that offers permessage-deflate and keeps the 101
headers and each frame's RSV1 bit (test_ws_deflate.py, bench/deflate_wire.py)."""
import base64
import os
import socket
import struct

from esslib import WebSocket


class Client(WebSocket):
    """WebSocket that keeps the 101 headers and reports RSV1 per frame."""

    def __init__(self, port, path, offer=None):
        self.timeout = 60
        self.pos = 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if offer:
            lines.append("Sec-WebSocket-Extensions: " + offer)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake: %r" % buf)
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        self.buf = bytearray(rest)
        self.status = int(head.split(b" ")[1])
        self.headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.close_code = None

    def frames(self, n):
        """n data messages as (opcode, rsv1, payload as sent)."""
        out = []
        while len(out) < n:
            b0, b1 = self._read(2)
            ln = b1 & 0x7F
            if ln == 126:
                ln = struct.unpack("!H", self._read(2))[0]
            elif ln == 127:
                ln = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(ln)
            op = b0 & 0x0F
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op & 8:
                out.append(("control", op, payload))
                break
            if not b0 & 0x80:
                raise ValueError("a fragmented message: essd sends whole frames")
            out.append((op, bool(b0 & 0x40), payload))
        return out
