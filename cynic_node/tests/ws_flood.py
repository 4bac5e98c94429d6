"""A WebSocket flood for test_ws_flood.py: `python ws_flood.py PORT SECONDS CONNECTIONS [MIB]`.

Each connection offers permessage-deflate, then sends what costs a server most for what it costs
the sender: half of them a compression bomb (MIB, default 8, MiB of JSON text deflated to about
a thousandth of that, RSV1 set whether or not compression was agreed), the other half a text
frame announcing 1 MiB.
The frames are built once; the mask key is zero (valid, and the payload stays as it is), so the
sender spends nothing per frame but the write. When the server closes a connection, the next
starts 20 ms later: this is a flood of frames, not of handshakes. Prints "flooding" on stdout once
the first connection is up, and one JSON line of counts when done (SECONDS passed, or SIGTERM).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from typing import Any

BOMB_TEXT_MIB = 8
BIG_TEXT_BYTES = 1024 * 1024
RECONNECT_PAUSE_S = 0.02


def frame(payload: bytes, rsv1: bool) -> bytes:
    head = bytes([0x80 | (0x40 if rsv1 else 0) | 0x1])  # FIN, text
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload  # zero mask key


def bomb(mib: int = BOMB_TEXT_MIB) -> bytes:
    text = b'{"type": "ping", "pad": "' + b"a" * (mib * 1024 * 1024) + b'"}'
    # window of 2^12: what uvicorn's permessage-deflate agrees to (client_max_window_bits=12)
    z = zlib.compressobj(9, zlib.DEFLATED, -12)
    data = z.compress(text) + z.flush(zlib.Z_SYNC_FLUSH)
    return frame(data[:-4], rsv1=True)  # without the 00 00 ff ff tail (RFC 7692)


def big() -> bytes:
    return frame(b'{"type": "ping", "pad": "' + b"b" * BIG_TEXT_BYTES + b'"}', rsv1=False)


class Flood:
    def __init__(self, port: int, seconds: float, mib: int = BOMB_TEXT_MIB) -> None:
        self.port = port
        self.deadline = time.monotonic() + seconds
        self.frames = {"bomb": bomb(mib), "big": big()}
        self.lock = threading.Lock()
        self.counts: dict[str, Any] = {
            "connections": 0,
            "accepted": 0,
            "refused": 0,
            "deflate_agreed": 0,
            "frames_sent": 0,
            "closed_by_server": 0,
            "close_codes": {},
            "bomb_frame_bytes": len(self.frames["bomb"]),
        }
        self.up = threading.Event()

    def stop(self, *_: object) -> None:
        self.deadline = 0.0

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def worker(self, kind: str) -> None:
        while time.monotonic() < self.deadline:
            self.one_connection(kind)
            time.sleep(RECONNECT_PAUSE_S)

    def one_connection(self, kind: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/stream HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
        self.count("connections")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(request)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                status = head.split(b" ", 2)[1]
                if status != b"101":
                    self.count("refused")
                    return
                self.count("accepted")
                self.up.set()
                if b"permessage-deflate" in head.split(b"\r\n\r\n", 1)[0].lower():
                    self.count("deflate_agreed")
                data = self.frames[kind]
                buf = bytearray(head.split(b"\r\n\r\n", 1)[1])
                sock.settimeout(2)
                while time.monotonic() < self.deadline:
                    sock.sendall(data)
                    self.count("frames_sent")
                    if self.server_closed(sock, buf):
                        return
        except OSError:
            with self.lock:
                self.counts["closed_by_server"] += 1

    def server_closed(self, sock: socket.socket, buf: bytearray) -> bool:
        """Read what the server sent (its frames into buf); True once it closed or hung up."""
        sock.setblocking(False)
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return False
                if not data:
                    self.count("closed_by_server")
                    return True
                buf += data
                code = close_code(buf)
                if code is not None:
                    with self.lock:
                        codes = self.counts["close_codes"]
                        codes[code] = codes.get(code, 0) + 1
                        self.counts["closed_by_server"] += 1
                    return True
        finally:
            sock.setblocking(True)
            sock.settimeout(2)


def close_code(buf: bytearray) -> str | None:
    """Consume the complete server frames in buf; the close code once a close frame is seen."""
    while len(buf) >= 2:
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2  # server frames are not masked
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at : at + n])
        del buf[: at + n]
        if opcode == 0x8:
            return str(struct.unpack("!H", payload[:2])[0]) if n >= 2 else "none"
    return None


def main() -> None:
    port, seconds, connections = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    mib = int(sys.argv[4]) if len(sys.argv) > 4 else BOMB_TEXT_MIB
    flood = Flood(port, seconds, mib)
    signal.signal(signal.SIGTERM, flood.stop)  # stop early, and still report
    threads = [
        threading.Thread(target=flood.worker, args=("bomb" if n % 2 == 0 else "big",))
        for n in range(connections)
    ]
    for t in threads:
        t.start()
    if flood.up.wait(seconds):
        print("flooding", flush=True)
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    print(json.dumps(flood.counts), flush=True)


if __name__ == "__main__":
    main()
