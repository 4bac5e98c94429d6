"""The store on the embedded engine: one record per cell, decided by SurrealDB."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cynic_node.config import Settings
from cynic_node.store import JudgmentStore, StoreUnavailable


def settings(tmp_path: Path, url: str = "mem://") -> Settings:
    return Settings(instance_id="s", cynic_home=tmp_path, surreal_url=url, store_timeout_s=2.0)


def record(n: int, owner: str) -> dict[str, Any]:
    return {"judgment_id": f"{owner}-{n}", "cell_id": f"c{n}", "q_score": 50.0 + n}


def test_concurrent_creates_of_one_cell_have_one_winner(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        store = JudgmentStore(settings(tmp_path))
        await store.start()
        try:
            # Same cell, different would-be judgments, all in flight at once (same batches).
            return await asyncio.gather(
                *(store.create_or_get("samecell", record(0, f"writer{i}")) for i in range(40))
            )
        finally:
            await store.close()

    results = asyncio.run(scenario())
    winners = [rec for rec, created in results if created]
    assert len(winners) == 1
    assert {rec["judgment_id"] for rec, _ in results} == {winners[0]["judgment_id"]}


def test_duplicates_fail_alone_in_a_batch(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        store = JudgmentStore(settings(tmp_path))
        await store.start()
        try:
            await store.create_or_get("c1", record(1, "first"))
            # c1 exists; c2..c9 are new; all go out together.
            return await asyncio.gather(
                *(store.create_or_get(f"c{n}", record(n, "second")) for n in range(1, 10))
            )
        finally:
            await store.close()

    results = asyncio.run(scenario())
    assert results[0] == ({"judgment_id": "first-1", "cell_id": "c1", "q_score": 51.0}, False)
    assert all(created for _, created in results[1:])


def test_get_missing_is_none(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        store = JudgmentStore(settings(tmp_path))
        await store.start()
        try:
            assert await store.ping()
            return await store.get("nothing-here")
        finally:
            await store.close()

    assert asyncio.run(scenario()) is None


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    from nodetest_helpers import free_port

    async def scenario() -> None:
        store = JudgmentStore(settings(tmp_path, f"ws://127.0.0.1:{free_port()}/rpc"))
        await store.start()
        try:
            assert not store.connected
            assert not await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.create_or_get("x", record(0, "a"))
        finally:
            await store.close()

    asyncio.run(scenario())
