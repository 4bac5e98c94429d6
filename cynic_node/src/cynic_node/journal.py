"""$CYNIC_HOME/judgments.jsonl: one line per judgment, written by the instance that created it.

Several node processes (instances, uvicorn workers) append to the same file. Each line goes
out in a single write(2) on a descriptor opened with O_APPEND, so the kernel places it at the
end of the file in one piece: lines never interleave. Lines are kept short (no content, only
the judgment's figures, well under PIPE_BUF); a line that would still be longer is written
under flock(2), which every writer of this module honours.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.errors_total = 0

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            # The node still judges; the write path retries the open and counts the error.
            log.error("cannot open %s: %s", self.path, exc)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def append(self, entry: dict[str, Any]) -> bool:
        """Append one JSON line; False (logged, counted) if it could not be written."""
        line = (
            json.dumps(entry, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n"
        ).encode("ascii")
        with self._lock:
            if self._fd is None:
                self.open()
            if self._fd is None:
                self.errors_total += 1
                return False
            try:
                if len(line) < PIPE_BUF:
                    written = os.write(self._fd, line)
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                    try:
                        written = os.write(self._fd, line)
                    finally:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError as exc:
                log.error("cannot append to %s: %s", self.path, exc)
                self.errors_total += 1
                return False
        if written != len(line):  # only on a full disk: the line is torn, say so
            log.error("short write to %s (%d of %d bytes)", self.path, written, len(line))
            self.errors_total += 1
            return False
        return True
