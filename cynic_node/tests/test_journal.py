"""judgments.jsonl: concurrent writers in several processes never interleave lines."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

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
