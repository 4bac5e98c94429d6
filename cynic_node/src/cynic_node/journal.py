"""$CYNIC_HOME/judgments.jsonl: one line per judgment, written by the instance that created it.

Several node processes (instances, uvicorn workers) append to the same file. Each line goes
out in a single write(2) on a descriptor opened with O_APPEND, so the kernel places it at the
end of the file in one piece: lines never interleave. Lines are kept short (no content, only
the judgment's figures, well under PIPE_BUF); a line that would still be longer is written
under flock(2), which every writer of this module honours.

A failed append (EFBIG, ENOSPC, EACCES, EROFS, EPERM, a short write) closes the descriptor, so
the file is opened again on the next append: a permission change or a fixed directory takes
effect without a restart. The failure is kept in `last_error` until a line is written again
(or `check()` finds the fault gone); the service answers 503 for a judgment whose line could not
be written, and /health reports the journal unwritable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import resource
import select
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class JournalUnavailable(Exception):
    """A judgment's line could not be appended to judgments.jsonl."""


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.errors_total = 0
        # Why the last append failed (strerror), None while appends succeed.
        self.last_error: str | None = None

    def open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            # The node still runs; the write path retries the open and counts the error.
            log.error("cannot open %s: %s", self.path, exc)
            self._fd = None
            self.last_error = exc.strerror or str(exc)

    def _drop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def append(self, entry: dict[str, Any]) -> bool:
        """Append one JSON line; False (logged, counted, `last_error` set) if it was not written.

        A descriptor that fails is closed and the file opened again at once (one retry), so a
        descriptor made stale by a fix does not keep failing; a fresh one that fails is dropped
        and the next append opens the file again.
        """
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)  # compact, UTF-8
        with self._lock:
            for _ in range(2):
                fresh = self._fd is None
                if fresh:
                    self._open()
                if self._fd is None:
                    break
                try:
                    written = self._write(self._fd, line)
                except OSError as exc:
                    log.error("cannot append to %s: %s", self.path, exc)
                    self.last_error = exc.strerror or str(exc)
                    self._drop()
                    if fresh:
                        break
                    continue  # nothing was written: retry once on a new descriptor
                if written != len(line):  # only on a full disk or a size limit: the line is torn
                    log.error("short write to %s (%d of %d bytes)", self.path, written, len(line))
                    self.last_error = f"short write ({written} of {len(line)} bytes)"
                    self._drop()
                    break
                self.last_error = None
                return True
            self.errors_total += 1
            return False

    @staticmethod
    def _write(fd: int, line: bytes) -> int:
        if len(line) < PIPE_BUF:
            return os.write(fd, line)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            return os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def check(self) -> str | None:
        """None when the journal is writable, else why not (for /health); writes nothing.

        While appends succeed this costs nothing. After a failure it opens the file again and
        looks for the usual causes (file-size limit reached, no space left); if none remains,
        the fault counts as fixed and the next append confirms it.
        """
        with self._lock:
            if self.last_error is None and self._fd is not None:
                return None
            self._drop()
            self._open()
            if self._fd is None:
                return self.last_error
            try:
                size = os.fstat(self._fd).st_size
                soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
                if soft != resource.RLIM_INFINITY and size >= soft:
                    return self.last_error or os.strerror(errno.EFBIG)
                fs = os.statvfs(self.path)
                if (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) == 0:
                    return self.last_error or os.strerror(errno.ENOSPC)
            except OSError as exc:
                self.last_error = exc.strerror or str(exc)
                return self.last_error
            self.last_error = None
            return None
