"""judgments.jsonl: concurrent writers never interleave lines; a failed append recovers."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

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
