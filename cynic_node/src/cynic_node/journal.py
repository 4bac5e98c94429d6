"""$CYNIC_HOME/judgments.jsonl: one line per judgment, written by the instance that created it.

Several node processes (instances, uvicorn workers) append to the same file. Each line goes
out in a single write(2) on a descriptor opened with O_APPEND, under flock(2), which every
writer of this module takes: lines never interleave, and whoever holds the lock sees the end of
the file as the last writer left it.

No torn line ever glues onto the next. A short write (full disk, file-size limit) is cut off
again at once (ftruncate to where the line began, still under the lock); and before each line
the writer looks at the file's last byte: a tail without its "\n" (a writer killed between its
write and its cut, a crash, another program) is truncated back to the last complete line, and
logged. A line is a line only with its "\n": the fragment was never a written line.

Rotation (logrotate: rename, then `delaycompress`): before each line the writer compares the
path's inode with its descriptor's, and opens the path again (O_CREAT) when it was renamed or
removed. A line written between the rename and that check lands whole at the end of the renamed
file, which `delaycompress` leaves alone until the next rotation: no line is lost or split, and
no signal is needed (one stat(2) per line).

A failed append (EFBIG, ENOSPC, EACCES, EROFS, EPERM, a short write) closes the descriptor, so
the file is opened again on the next append: a permission change or a fixed directory takes
effect without a restart. The failure is kept in `last_error` until a line is written again
(or `check()` finds the fault gone); /health reports the journal unwritable.

Judgments whose line could not be written are owed (`append_judgment`): their line is kept in
memory, by judgment_id, and written exactly once, when `settle()` (a retry of that judgment,
answered reused) or `flush_owed()` (the service's background retry, or `close()`) can write it.
A line is removed from what is owed in the same locked step that wrote it, so it is never
written twice by this process; only the process that created a judgment owes its line.

Disk sync (`fsync`, CYNIC_JOURNAL_FSYNC, the cynic role's `cynic_journal_fsync`): a line
that write(2) took is in the kernel's page cache, so a killed node loses nothing, but a host
crash or power loss can lose the lines the kernel had not written back yet (about 30 s worth
with Linux's default dirty_expire_centisecs). The policy says when the journal calls os.fsync:

- `none` (the default, what the node always did): never. Durable against a killed process only.
- `batch`: a background thread fsyncs the file at most once per `fsync_interval_s` (1 s), and
  only when lines were written since the last fsync; close() and a rotation (before the old
  descriptor is closed) fsync what is left. An acknowledged line can be lost to a host crash
  for at most about that interval; appends never wait for the disk.
- `line`: one fsync per line written, before append() returns, so before the node answers
  200: no acknowledged line is lost to a crash. Each append waits for the disk, and appends of
  this process wait for each other's fsync (other processes do not: the fsync runs after the
  flock is released).

`batch` and `line` also fsync the directory each time the file is opened, so that a file
created (first start, after a rotation) is not lost with its directory entry. A failed fsync
is logged and counted (`fsync_errors_total`); the line stays written (appending it again would
duplicate it), and the append still counts as done.
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

from cynic_node.config import JOURNAL_FSYNC_POLICIES, journal_fsync_policy

log = logging.getLogger(__name__)

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class JournalUnavailable(Exception):
    """A judgment's line could not be appended to judgments.jsonl."""


class _ShortWrite(Exception):
    """write(2) took part of a line (the part was cut off again)."""


# Owed lines kept at most (about 600 bytes each); beyond, the oldest are given up (logged).
MAX_OWED = 100_000
_TAIL_CHUNK = 64 * 1024
# `batch`: seconds between two fsyncs at most (when lines were written in between).
FSYNC_BATCH_INTERVAL_S = 1.0


class Journal:
    def __init__(
        self,
        path: Path,
        max_owed: int = MAX_OWED,
        fsync: str | None = None,
        fsync_interval_s: float = FSYNC_BATCH_INTERVAL_S,
    ) -> None:
        """fsync: `none`, `batch` or `line` (module docstring); None reads CYNIC_JOURNAL_FSYNC
        the way Settings does (config.journal_fsync_policy), default `none`."""
        self.path = path
        self.fsync = journal_fsync_policy() if fsync is None else fsync
        if self.fsync not in JOURNAL_FSYNC_POLICIES:
            allowed = ", ".join(JOURNAL_FSYNC_POLICIES)
            raise ValueError(f"fsync must be one of {allowed}, got {self.fsync!r}")
        self.fsync_interval_s = fsync_interval_s
        self.fsyncs_total = 0  # of the file (not counting the directory's)
        self.fsync_errors_total = 0
        # batch: lines written since the last fsync; the thread that fsyncs them.
        self._dirty = False
        self._syncer: threading.Thread | None = None
        self._stop_syncer = threading.Event()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of _fd's file
        self._lock = threading.Lock()
        self.errors_total = 0
        # Why the last append failed (strerror), None while appends succeed.
        self.last_error: str | None = None
        # judgment_id -> its line, for judgments created here whose line is not written yet.
        self._owed: dict[str, bytes] = {}
        # judgment_ids once owed and written since (insertion-ordered, bounded like _owed): a
        # second append_judgment of one of them writes nothing.
        self._settled: dict[str, None] = {}
        self._max_owed = max_owed
        self.owed_given_up_total = 0
        self.torn_tails_cut_total = 0

    def open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_RDWR: the tail check reads the last byte back.
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            st = os.fstat(self._fd)
            self._inode = (st.st_dev, st.st_ino)
            if self.fsync != "none":
                self._fsync_directory()
        except OSError as exc:
            # The node still runs; the write path retries the open and counts the error.
            log.error("cannot open %s: %s", self.path, exc)
            self._drop()
            self.last_error = exc.strerror or str(exc)

    def _drop(self) -> None:
        if self._fd is not None:
            if self._dirty:  # batch: lines not synced yet (a rotated file, an error, close)
                self._dirty = False
                self._fsync_fd(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._inode = None

    def _rotated(self) -> bool:
        """The path no longer names our descriptor's file (renamed or removed by logrotate)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    def _fsync_fd(self, fd: int) -> bool:
        try:
            os.fsync(fd)
        except OSError as exc:
            self.fsync_errors_total += 1
            log.error("cannot fsync %s: %s", self.path, exc)
            return False
        self.fsyncs_total += 1
        return True

    def _fsync_directory(self) -> None:
        try:
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.error("cannot open %s to fsync it: %s", self.path.parent, exc)
            return
        try:
            os.fsync(dfd)
        except OSError as exc:
            self.fsync_errors_total += 1
            log.error("cannot fsync %s: %s", self.path.parent, exc)
        finally:
            os.close(dfd)

    def _written(self) -> None:
        """After a line went out whole: what the fsync policy asks for."""
        if self.fsync == "line":
            assert self._fd is not None
            self._fsync_fd(self._fd)
        elif self.fsync == "batch":
            self._dirty = True
            if not self._stop_syncer.is_set() and (
                self._syncer is None or not self._syncer.is_alive()
            ):
                self._syncer = threading.Thread(
                    target=self._sync_loop, name="journal-fsync", daemon=True
                )
                self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._stop_syncer.wait(self.fsync_interval_s):
            self.sync()

    def sync(self) -> bool:
        """fsync the lines written since the last fsync (what `batch` does each interval);
        True when there were any. The fsync runs on a duplicate of the descriptor, outside the
        lock, so that appends do not wait for the disk."""
        with self._lock:
            if not self._dirty or self._fd is None:
                return False
            try:
                fd = os.dup(self._fd)
            except OSError as exc:
                log.error("cannot fsync %s: %s", self.path, exc)
                return False
            self._dirty = False
        try:
            self._fsync_fd(fd)
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        """Write what is owed if the file takes it, then close; what is still owed is logged
        in full (one ERROR line each): an operator can append those lines by hand. `batch`:
        the lines not synced yet are fsynced first."""
        self._stop_syncer.set()
        if self._syncer is not None:  # outside the lock: its last sync() takes it
            self._syncer.join(timeout=30)
            self._syncer = None
        with self._lock:
            self._flush_locked()
            for line in self._owed.values():
                log.error("judgment never journaled: %s", line.decode().rstrip("\n"))
            self._drop()
            self._stop_syncer.clear()  # an append after close() starts a new one

    def append(self, entry: dict[str, Any]) -> bool:
        """Append one JSON line; False (logged, counted, `last_error` set) if it was not written.

        A descriptor that fails is closed and the file opened again at once (one retry), so a
        descriptor made stale by a fix does not keep failing; a fresh one that fails is dropped
        and the next append opens the file again.
        """
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)  # compact, UTF-8
        with self._lock:
            return self._append_locked(line)

    def append_judgment(self, entry: dict[str, Any]) -> bool:
        """append(entry) for a judgment this process created; a line that could not be written
        is owed (kept by entry["judgment_id"]) and written by settle() or flush_owed()."""
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        jid = str(entry["judgment_id"])
        with self._lock:
            if jid in self._owed or jid in self._settled:  # never two lines for one judgment
                return self._settle_locked(jid)
            if self._owed:
                self._flush_locked()  # older lines first, while the file takes them
            if self._append_locked(line):
                return True
            self._owed[jid] = line
            while len(self._owed) > self._max_owed:
                lost = next(iter(self._owed))
                log.error("judgment never journaled (too many owed): %s", self._owed.pop(lost))
                self.owed_given_up_total += 1
            return False

    def owes(self, judgment_id: str) -> bool:
        return judgment_id in self._owed

    @property
    def owed_count(self) -> int:
        return len(self._owed)

    def settle(self, judgment_id: str) -> bool:
        """True when judgment_id owes no line (any more): nothing owed, or written now."""
        with self._lock:
            return self._settle_locked(judgment_id)

    def _settle_locked(self, judgment_id: str) -> bool:
        line = self._owed.get(judgment_id)
        if line is None:
            return True
        if not self._append_locked(line):
            return False
        del self._owed[judgment_id]
        self._settled[judgment_id] = None
        while len(self._settled) > self._max_owed:
            del self._settled[next(iter(self._settled))]
        return True

    def flush_owed(self) -> int:
        """Write owed lines, oldest first, until one fails; how many are still owed."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        for jid in list(self._owed):
            if not self._settle_locked(jid):
                break
        return len(self._owed)

    def _append_locked(self, line: bytes) -> bool:
        for _ in range(2):
            fresh = self._fd is None or self._rotated()
            if fresh:
                self._drop()
                self._open()
            if self._fd is None:
                break
            try:
                self._write(self._fd, line)
            except _ShortWrite as exc:  # only on a full disk or a size limit; cut off again
                log.error("short write to %s (%s)", self.path, exc)
                self.last_error = f"short write ({exc})"
                self._drop()
                break
            except OSError as exc:
                log.error("cannot append to %s: %s", self.path, exc)
                self.last_error = exc.strerror or str(exc)
                self._drop()
                if fresh:
                    break
                continue  # nothing was written: retry once on a new descriptor
            self.last_error = None
            self._written()
            return True
        self.errors_total += 1
        return False

    def _write(self, fd: int, line: bytes) -> None:
        """line at the end of the file, whole or not at all (raises OSError or _ShortWrite)."""
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                end = self._cut_torn_tail(fd, end)
            written = os.write(fd, line)
            if written != len(line):
                # Under the lock nobody wrote after us: the fragment is ours, at the end.
                try:
                    os.ftruncate(fd, end)
                except OSError as exc:  # the next writer's tail check cuts it
                    log.error("cannot cut a torn line off %s: %s", self.path, exc)
                raise _ShortWrite(f"{written} of {len(line)} bytes")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _cut_torn_tail(self, fd: int, end: int) -> int:
        """Truncate the file back to its last complete line; the new end."""
        pos = end
        keep = 0
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            chunk = os.pread(fd, pos - start, start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        fragment = os.pread(fd, min(end - keep, 200), keep)
        os.ftruncate(fd, keep)
        self.torn_tails_cut_total += 1
        log.error(
            "%s ended in a torn line (%d bytes, no newline), cut off: %r...",
            self.path,
            end - keep,
            fragment,
        )
        return keep

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
