"""The service never answers 200 for a judgment of its own that lacks its journal line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cynic_node import service as service_module
from cynic_node.config import Settings
from cynic_node.events import EventHub
from cynic_node.journal import Journal
from cynic_node.metrics import Metrics
from cynic_node.models import parse_judge_request
from cynic_node.service import JudgmentService
from cynic_node.store import JudgmentStore, StoreOutcomeUnknown, StoreUnavailable


def _lines(path: Path) -> list[str]:
    return [json.loads(line)["judgment_id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("found_by", ["retry", "background"])
def test_a_stored_judgment_whose_write_answer_was_lost_gets_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found_by: str
) -> None:
    # The write committed but its answer was lost with the connection (StoreOutcomeUnknown):
    # the caller got 503. The judgment is this process's: when it is found stored, by a retry
    # (answered reused) or by the background look-up, it gets its journal line, once.
    monkeypatch.setattr(service_module, "_SETTLE_S", 0.01, raising=False)
    path = tmp_path / "judgments.jsonl"

    async def scenario() -> tuple[list[Any], int]:
        store = JudgmentStore(Settings(instance_id="i", cynic_home=tmp_path, surreal_url="mem://"))
        await store.start()
        journal = Journal(path)
        journal.open()
        svc = JudgmentService("i", store, journal, EventHub(), Metrics("i"), None)
        real = store.create_or_get
        lose = {"once": True}

        async def answer_lost(cid: str, record: dict[str, Any]) -> Any:
            result = await real(cid, record)
            if lose.pop("once", False):
                raise StoreOutcomeUnknown("connection lost with the write in flight")
            return result

        monkeypatch.setattr(store, "create_or_get", answer_lost)
        req = parse_judge_request(b'{"content": "lost answer"}')
        outcomes: list[Any] = []
        try:
            with pytest.raises(StoreUnavailable):
                await svc.judge(req)
            if found_by == "background":
                for _ in range(500):
                    if getattr(svc, "owed_count", lambda: 0)() == 0:
                        break
                    await asyncio.sleep(0.01)
            outcomes.append(await svc.judge(req))
            outcomes.append(await svc.judge(req))
            return outcomes, getattr(svc, "owed_count", lambda: -1)()
        finally:
            await store.close()
            journal.close()

    (first, second), owed = asyncio.run(scenario())
    assert first["reused"]
    assert second["reused"]
    assert first["judgment_id"] == second["judgment_id"]
    assert _lines(path) == [first["judgment_id"]]
    assert owed == 0


def test_a_judgment_stored_but_not_journaled_is_journaled_by_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "judgments.jsonl"

    async def scenario() -> list[Any]:
        store = JudgmentStore(Settings(instance_id="i", cynic_home=tmp_path, surreal_url="mem://"))
        await store.start()
        journal = Journal(path)
        journal.open()
        svc = JudgmentService("i", store, journal, EventHub(), Metrics("i"), None)
        req = parse_judge_request(b'{"content": "journal down"}')
        real_write = Journal._write

        def eacces(self: Journal, fd: int, line: bytes) -> None:
            raise PermissionError(13, "Permission denied")

        try:
            monkeypatch.setattr(Journal, "_write", eacces)
            out: list[Any] = []
            for _ in range(2):  # created (503), then reused but still unjournaled (503)
                with pytest.raises(Exception, match="Permission denied"):
                    await svc.judge(req)
            monkeypatch.setattr(Journal, "_write", real_write)
            out.append(await svc.judge(req))
            out.append(await svc.judge(req))
            return out
        finally:
            await store.close()
            journal.close()

    first, second = asyncio.run(scenario())
    assert first["reused"]
    assert second["reused"]
    assert _lines(path) == [first["judgment_id"]]
