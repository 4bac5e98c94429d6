"""judgments.jsonl: concurrent writers never interleave lines; a failed append recovers."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cynic_node.config import ConfigError, Settings
from cynic_node.journal import PIPE_BUF, Journal

WRITERS, LINES = 4, 1500


def _write(path: str, writer: int) -> None:
    journal = Journal(Path(path))
    journal.open()
    for i in range(LINES):
        # Sizes from tiny to above PIPE_BUF (the flock path).
        pad = "x" * ((i * 37) % (PIPE_BUF + 600))
        assert journal.append({"writer": writer, "i": i, "pad": pad})
    journal.close()


def test_lines_from_several_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "home" / "judgments.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seen = set()
    for line in path.read_text().splitlines():
        entry = json.loads(line)  # a torn or interleaved line would not parse
        assert entry["pad"] == "x" * len(entry["pad"])
        seen.add((entry["writer"], entry["i"]))
    assert len(seen) == WRITERS * LINES


def test_unwritable_home_does_not_break_the_node(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    journal = Journal(blocker / "judgments.jsonl")
    journal.open()
    assert journal.append({"a": 1}) is False
    assert journal.errors_total == 1


def test_failed_append_reopens_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "judgments.jsonl"
    journal = Journal(path)
    journal.open()
    assert journal.append({"n": 1})
    real_write = os.write
    opens: list[str] = []
    real_open = os.open

    def efbig(fd: int, data: bytes) -> int:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    def counting_open(p: Any, *args: Any) -> int:
        opens.append(str(p))
        return real_open(p, *args)

    monkeypatch.setattr(os, "write", efbig)
    monkeypatch.setattr(os, "open", counting_open)
    assert journal.append({"n": 2}) is False
    assert len(opens) == 1  # the failing descriptor was replaced by a new one, retried once
    assert journal.last_error == os.strerror(errno.EFBIG)
    assert journal.append({"n": 3}) is False
    assert journal.errors_total == 2

    monkeypatch.setattr(os, "write", real_write)  # the fault is fixed
    assert journal.append({"n": 4})
    assert journal.last_error is None
    assert journal.check() is None
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 4]
    journal.close()


def test_check_reports_a_file_size_limit(tmp_path: Path) -> None:
    # In a child process: RLIMIT_FSIZE is per process, and root's chmod would not block writes.
    code = textwrap.dedent(
        """
        import resource, sys
        from pathlib import Path
        from cynic_node.journal import Journal
        j = Journal(Path(sys.argv[1]))
        j.open()
        assert j.append({"n": 1}) and j.check() is None
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        assert j.append({"n": 2}) is False, "append beyond the size limit"
        assert "too large" in j.check(), j.check()
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        assert j.check() is None
        assert j.append({"n": 3})
        """
    )
    path = tmp_path / "judgments.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 3]


def _child(code: str, path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_a_short_write_never_glues_onto_the_next_line(tmp_path: Path) -> None:
    # A file-size limit that lets half of a line through: write(2) takes part of it. The part
    # must not stay at the end of the file, where the next line would glue onto it.
    path = tmp_path / "judgments.jsonl"
    _child(
        """
        import os, resource, sys
        from pathlib import Path
        from cynic_node.journal import Journal
        j = Journal(Path(sys.argv[1]))
        j.open()
        assert j.append({"n": 1})
        size = os.path.getsize(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
        assert j.append({"n": 2, "pad": "x" * 100}) is False, "a short write is a failure"
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        assert j.append({"n": 3})
        """,
        path,
    )
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 3]


def test_a_torn_tail_left_by_another_writer_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "judgments.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "torn')  # a writer killed mid-line, say
    journal = Journal(path)
    journal.open()
    assert journal.append({"n": 3})
    journal.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 3]
    assert journal.torn_tails_cut_total == 1


def _rotating_writer(path: str, writer: int, go: Any, done: Any) -> None:
    journal = Journal(Path(path))
    journal.open()
    for phase in range(3):
        go[phase].wait(30)
        for i in range(300):
            assert journal.append({"writer": writer, "phase": phase, "i": i})
        done[phase].release()
    journal.close()


def test_rotation_by_rename_loses_and_splits_no_line(tmp_path: Path) -> None:
    # logrotate's way (rename, nocopytruncate, delaycompress): writers that keep their
    # descriptor open must move to the new file by themselves, and a rename in the middle of
    # concurrent appends must neither lose nor split a line.
    path = tmp_path / "judgments.jsonl"
    ctx = multiprocessing.get_context("fork")
    go = [ctx.Event() for _ in range(3)]
    done = [ctx.Semaphore(0) for _ in range(3)]
    procs = [
        ctx.Process(target=_rotating_writer, args=(str(path), w, go, done)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    try:
        go[0].set()
        for _ in procs:
            assert done[0].acquire(timeout=30)
        path.rename(tmp_path / "judgments.jsonl.1")  # between phases
        go[1].set()
        for _ in procs:
            assert done[1].acquire(timeout=30)
        go[2].set()
        path.rename(tmp_path / "judgments.jsonl.2")  # during phase 2's appends
        for _ in procs:
            assert done[2].acquire(timeout=30)
    finally:
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)

    def entries(name: str) -> list[dict[str, Any]]:
        file = tmp_path / name
        return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []

    first, second = entries("judgments.jsonl.1"), entries("judgments.jsonl.2")
    current = entries("judgments.jsonl")
    assert {e["phase"] for e in first} == {0}
    assert {e["phase"] for e in second} >= {1}  # phase 1 went to the file renamed after it
    assert {e["phase"] for e in current} == {2}  # after the rename, writers moved on
    keys = [(e["writer"], e["phase"], e["i"]) for e in first + second + current]
    assert len(keys) == len(set(keys)) == WRITERS * 3 * 300


def test_an_owed_line_is_written_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "judgments.jsonl"
    journal = Journal(path)
    journal.open()
    real_write = Journal._write

    def enospc(self: Journal, fd: int, line: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Journal, "_write", enospc)
    assert journal.append_judgment({"judgment_id": "j1", "n": 1}) is False
    assert journal.owes("j1")
    assert journal.settle("j1") is False  # still failing: still owed
    assert journal.append_judgment({"judgment_id": "j1", "n": 1}) is False
    assert journal.owed_count == 1

    monkeypatch.setattr(Journal, "_write", real_write)
    assert journal.append_judgment({"judgment_id": "j2", "n": 2})  # owed lines go first
    assert not journal.owes("j1")
    assert journal.settle("j1")  # nothing owed any more: writes nothing
    assert journal.append_judgment({"judgment_id": "j1", "n": 1})  # a second try: no 2nd line
    assert journal.flush_owed() == 0
    journal.close()
    assert [json.loads(line)["judgment_id"] for line in path.read_text().splitlines()] == [
        "j1",
        "j2",
    ]


class FsyncCounter:
    """os.fsync replaced: counts the calls on the journal file and on directories (then syncs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file = 0
        self.dir = 0
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.dir += 1
        else:
            self.file += 1
        self._real(fd)

    def counts(self) -> tuple[int, int]:
        return self.file, self.dir


@pytest.mark.parametrize(
    # (file fsyncs, directory fsyncs) after open + 5 lines, after sync(), after 1 line + close()
    ("policy", "after_lines", "after_sync", "after_close"),
    [
        ("none", (0, 0), (0, 0), (0, 0)),  # today's behaviour: never
        ("line", (5, 1), (5, 1), (6, 1)),  # one per line, before append() returns
        ("batch", (0, 1), (1, 1), (2, 1)),  # none in append(); one per sync() and at close()
    ],
)
def test_fsync_policy_calls_fsync_as_documented(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    after_lines: tuple[int, int],
    after_sync: tuple[int, int],
    after_close: tuple[int, int],
) -> None:
    fsync = FsyncCounter(monkeypatch)
    path = tmp_path / "judgments.jsonl"
    # An interval longer than the test: batch's thread stays out of these counts.
    journal = Journal(path, fsync=policy, fsync_interval_s=3600)
    journal.open()
    for i in range(5):
        assert journal.append({"n": i})
    assert fsync.counts() == after_lines
    assert journal.sync() is (policy == "batch")
    assert journal.sync() is False  # nothing written since: nothing to sync
    assert fsync.counts() == after_sync
    assert journal.append_judgment({"judgment_id": "j", "n": 5})
    journal.close()
    assert fsync.counts() == after_close
    assert journal.fsyncs_total == after_close[0]
    assert journal.fsync_errors_total == 0
    assert len(path.read_text().splitlines()) == 6


def test_batch_fsyncs_in_the_background_only_after_new_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = FsyncCounter(monkeypatch)
    journal = Journal(tmp_path / "judgments.jsonl", fsync="batch", fsync_interval_s=0.02)
    journal.open()
    assert journal.append({"n": 1})
    assert journal.append({"n": 2})
    deadline = time.monotonic() + 5
    while fsync.file == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fsync.file == 1  # both lines in one fsync
    time.sleep(0.2)  # ten intervals without a line: no fsync
    assert fsync.file == 1
    assert journal.append({"n": 3})
    deadline = time.monotonic() + 5
    while fsync.file == 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fsync.file == 2
    journal.close()
    assert fsync.file == 2  # nothing left to sync at close


def test_batch_syncs_a_rotated_file_before_leaving_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = FsyncCounter(monkeypatch)
    path = tmp_path / "judgments.jsonl"
    journal = Journal(path, fsync="batch", fsync_interval_s=3600)
    journal.open()
    assert journal.append({"n": 1})
    path.rename(tmp_path / "judgments.jsonl.1")  # logrotate
    assert journal.append({"n": 2})
    # The old file's line was synced before its descriptor closed; the new file's directory too.
    assert fsync.counts() == (1, 2)
    journal.close()
    assert fsync.counts() == (2, 2)


def test_a_failed_fsync_is_counted_and_the_line_stays_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "judgments.jsonl"
    journal = Journal(path, fsync="line")
    journal.open()

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    assert journal.append_judgment({"judgment_id": "j1"})  # written: no owed line, no duplicate
    assert journal.fsync_errors_total == 1
    assert not journal.owes("j1")
    journal.close()
    assert len(path.read_text().splitlines()) == 1


def test_the_policy_comes_from_cynic_journal_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CYNIC_JOURNAL_FSYNC", raising=False)
    assert Journal(tmp_path / "a").fsync == "none"  # the default: what the node always did
    assert Settings.from_env({}).journal_fsync == "none"
    for raw, policy in (("line", "line"), (" Batch ", "batch"), ("NONE", "none")):
        monkeypatch.setenv("CYNIC_JOURNAL_FSYNC", raw)
        assert Journal(tmp_path / "a").fsync == policy  # what the node's api.py builds
        assert Settings.from_env({"CYNIC_JOURNAL_FSYNC": raw}).journal_fsync == policy
    monkeypatch.setenv("CYNIC_JOURNAL_FSYNC", "always")
    with pytest.raises(ConfigError, match="CYNIC_JOURNAL_FSYNC"):
        Journal(tmp_path / "a")
    with pytest.raises(ConfigError, match="CYNIC_JOURNAL_FSYNC"):
        Settings.from_env({"CYNIC_JOURNAL_FSYNC": "always"})
    with pytest.raises(ValueError, match="fsync must be one of"):
        Journal(tmp_path / "a", fsync="sometimes")
