"""The store on the embedded engine: one record per cell, decided by SurrealDB."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID
from surrealdb.data.cbor import encode as sdk_encode
from surrealdb.data.types.datetime import Datetime

from cynic_node import store as store_module
from cynic_node.config import Settings
from cynic_node.judge import judge
from cynic_node.models import parse_judge_request
from cynic_node.service import JudgmentService
from cynic_node.store import _INSERT_QUERY, JudgmentStore, StoreUnavailable, encode_query

NOW = datetime(2026, 11, 28, 1, 2, 3, 456000, tzinfo=UTC).isoformat()


def settings(tmp_path: Path, url: str = "mem://") -> Settings:
    return Settings(instance_id="s", cynic_home=tmp_path, surreal_url=url, store_timeout_s=2.0)


@contextlib.asynccontextmanager
async def opened(tmp_path: Path, url: str = "mem://") -> AsyncIterator[JudgmentStore]:
    store = JudgmentStore(settings(tmp_path, url))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def record(n: int, owner: str) -> dict[str, Any]:
    return {"judgment_id": f"{owner}-{n}", "cell_id": f"c{n}", "q_score": 50.0 + n}


def test_concurrent_creates_of_one_cell_have_one_winner(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        async with opened(tmp_path) as store:
            # Same cell, different would-be judgments, all in flight at once (same batches).
            return await asyncio.gather(
                *(store.create_or_get("samecell", record(0, f"writer{i}")) for i in range(40))
            )

    results = asyncio.run(scenario())
    winners = [rec for rec, created in results if created]
    assert len(winners) == 1
    assert {rec["judgment_id"] for rec, _ in results} == {winners[0]["judgment_id"]}


def test_writes_of_one_record_id_never_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two statements racing on one id leave it to the engine's conflict detection, which let
    # both win about once in 200 runs of the test above: a second write of an id waits.
    original = store_module._query_raw
    in_flight: list[set[str]] = []
    overlaps: list[set[str]] = []

    async def watched(db: Any, query: str, params: dict[str, Any]) -> dict[str, Any]:
        rows = params.get("rows") or [v for k, v in params.items() if k.startswith("r")]
        ids = {str(row["id"] if isinstance(row, dict) else row) for row in rows}
        overlaps.extend(ids & other for other in in_flight if ids & other)
        in_flight.append(ids)
        try:
            await asyncio.sleep(0.01)  # widen the window a race would need
            return await original(db, query, params)
        finally:
            in_flight.remove(ids)

    monkeypatch.setattr(store_module, "_query_raw", watched)

    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        async with opened(tmp_path) as store:
            writes = [store.create_or_get("samecell", record(0, f"w{i}")) for i in range(40)]
            others = [store.create_or_get(f"cell{i}", record(i, "o")) for i in range(40)]
            return await asyncio.gather(*writes, *others)

    results = asyncio.run(scenario())
    assert overlaps == []
    assert sum(created for _, created in results[:40]) == 1
    assert all(created for _, created in results[40:])


def test_duplicates_fail_alone_in_a_batch(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        async with opened(tmp_path) as store:
            await store.create_or_get("c1", record(1, "first"))
            # c1 exists; c2..c9 are new; all go out together.
            return await asyncio.gather(
                *(store.create_or_get(f"c{n}", record(n, "second")) for n in range(1, 10))
            )

    results = asyncio.run(scenario())
    assert results[0] == ({"judgment_id": "first-1", "cell_id": "c1", "q_score": 51.0}, False)
    assert all(created for _, created in results[1:])


def test_get_missing_is_none(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        async with opened(tmp_path) as store:
            assert await store.ping()
            return await store.get("nothing-here")

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


@pytest.mark.parametrize(
    "body",
    [
        {"content": "def f(x: int) -> int:\n    return x\n", "reality": "CODE"},
        # time_dim set, non-ASCII and a NUL in the preview, JSON content, big lod
        {"content": {"k": ["é☃\x00", 1, 2.5]}, "reality": "HUMAN", "time_dim": "PAST", "lod": 3},
    ],
)
def test_fast_write_message_is_the_sdks_bytes(body: dict[str, Any]) -> None:
    # The write path encodes with cbor2 instead of the SDK's encoder: same bytes, or the
    # server would store something else than the SDK would have sent.
    req = parse_judge_request(json.dumps({"budget_usd": 0.0, **body}).encode())
    verdict = asyncio.run(judge(req, None))
    service = JudgmentService("node-é", None, None, None, None, None)  # type: ignore[arg-type]
    rec = service._record(req, req.cell_id, verdict)
    assert None not in rec.values()  # cbor2 would send null where the SDK sends NONE
    rows = [{**rec, "id": RecordID("judgment", req.cell_id)}]
    params = {"rows": rows, "n": 2**40, "d": Datetime(NOW)}
    expected = sdk_encode({"id": "x1", "method": "query", "params": [_INSERT_QUERY, params]})
    assert encode_query("x1", _INSERT_QUERY, params) == expected


@pytest.mark.parametrize(("busy_gap_s", "shared"), [(0.0, False), (10.0, True)])
def test_busy_writes_share_queries_idle_ones_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_gap_s: float, shared: bool
) -> None:
    # Group commit: busy, a write waits (up to the linger) for others to share its query;
    # idle, it leaves alone at once. "Busy" is forced here, so that timing cannot decide.
    monkeypatch.setattr("cynic_node.store._BUSY_GAP_S", busy_gap_s)
    monkeypatch.setattr("cynic_node.store._LINGER_S", 0.2)

    async def scenario() -> tuple[list[bool], tuple[int, int]]:
        async with opened(tmp_path) as store:
            tasks = []
            for n in range(12):  # arriving one by one, 5 ms apart
                tasks.append(asyncio.create_task(store.create_or_get(f"c{n}", record(n, "w"))))
                await asyncio.sleep(0.005)
            created = [c for _, c in await asyncio.gather(*tasks)]
            return created, store.write_counts

    created, (queries, creates) = asyncio.run(scenario())
    assert created == [True] * 12
    assert creates == 12
    if shared:
        assert queries < 12
    else:
        assert queries == 12


def test_a_batch_refused_as_a_whole_is_decided_record_by_record(tmp_path: Path) -> None:
    # One record the table refuses must not take its batch down with it: the INSERT fails as a
    # whole, and the batch goes again as one CREATE per record.
    async def scenario() -> tuple[list[Any], tuple[int, int]]:
        async with opened(tmp_path) as store:
            await store.call(
                lambda db: db.query(
                    "DEFINE FIELD q_score ON judgment TYPE number ASSERT $value < 100"
                )
            )
            await store.create_or_get("c1", record(1, "first"))
            before = store.write_counts
            bad = {**record(9, "second"), "q_score": 150.0}
            outcomes = await asyncio.gather(
                *(store.create_or_get(f"c{n}", record(n, "second")) for n in range(1, 5)),
                store.create_or_get("c9", bad),
                return_exceptions=True,
            )
            after = store.write_counts
            return outcomes, (after[0] - before[0], after[1] - before[1])

    outcomes, (queries, records) = asyncio.run(scenario())
    assert outcomes[0] == ({"judgment_id": "first-1", "cell_id": "c1", "q_score": 51.0}, False)
    assert [o[1] for o in outcomes[1:4]] == [True, True, True]
    assert isinstance(outcomes[4], StoreUnavailable)
    assert (queries, records) == (2, 5)  # the INSERT, then the CREATEs


def test_only_our_judgment_id_makes_a_record_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server whose INSERT IGNORE also listed the records it skipped must not make two
    # winners: a listed record is ours only if it carries our judgment_id.
    real = store_module._query_raw

    async def listing_skipped_too(db: Any, query: str, params: dict[str, Any]) -> Any:
        answer = await real(db, query, params)
        if query == _INSERT_QUERY:
            ids = [row["id"] for row in params["rows"]]
            listed = await db.query_raw("SELECT id, judgment_id FROM $ids", {"ids": ids})
            answer["result"][0]["result"] = listed["result"][0]["result"]
        return answer

    monkeypatch.setattr(store_module, "_query_raw", listing_skipped_too)

    async def scenario() -> list[tuple[dict[str, Any], bool]]:
        async with opened(tmp_path) as store:
            await store.create_or_get("c1", record(1, "first"))
            return await asyncio.gather(
                *(store.create_or_get(f"c{n}", record(n, "second")) for n in (1, 2))
            )

    (first, created_first), (second, created_second) = asyncio.run(scenario())
    assert (first["judgment_id"], created_first) == ("first-1", False)
    assert (second["judgment_id"], created_second) == ("second-2", True)


def test_a_lost_connection_is_known_lost_and_its_writes_recovered(
    tmp_path: Path, surreal: Any
) -> None:
    # SurrealDB killed (SIGKILL) with writes in flight (few: each may be a query of its own, and
    # a held query holds one of the batcher's eight senders), through a relay that decides what they
    # lost: group A reached the server and committed but their answers never came back; group
    # B never reached it. The store must see the loss at once (cynic_storage_up is
    # store.connected), then, once SurrealDB is back on the same data, answer A as created
    # (their records carry our judgment ids) and write B: no write answered as a failure.
    from nodetest_helpers import HoldingProxy, root_query, wait_until

    async def scenario() -> dict[str, Any]:
        proxy = HoldingProxy(surreal.port)
        await proxy.start()
        s = Settings(
            instance_id="s",
            cynic_home=tmp_path,
            surreal_url=f"ws://127.0.0.1:{proxy.port}/rpc",
            surreal_user="root",
            surreal_pass="cynic-test-pass",
            store_timeout_s=30.0,  # time enough for the stand-in to start again
        )
        store = JudgmentStore(s)
        await store.start()
        try:
            assert (await store.create_or_get("warm", record(0, "w")))[1]
            assert store.connected
            loop = asyncio.get_running_loop()

            async def until(check: Any, what: str) -> None:
                await loop.run_in_executor(None, wait_until, check, 20, what)

            proxy.hold_answers = True
            group_a = [
                asyncio.create_task(store.create_or_get(f"a{n}", record(n, "a"))) for n in range(4)
            ]

            def committed() -> bool:
                rows = asyncio.run(root_query(surreal, "SELECT VALUE judgment_id FROM judgment"))
                return len([j for j in rows if j.startswith("a-")]) == 4

            await until(committed, "group A committed")
            proxy.hold_requests = True
            group_b = [
                asyncio.create_task(store.create_or_get(f"b{n}", record(n, "b"))) for n in range(3)
            ]
            await until(lambda: store.write_counts[1] == 8 and proxy.dropped_requests > 0, "B sent")
            await asyncio.sleep(0.05)  # let every B query leave the node
            surreal.kill()
            await until(lambda: not store.connected, "the node to see the connection lost")
            seen_down = not store.connected
            assert not any(t.done() for t in group_a + group_b)  # waiting, not failed
            proxy.hold_answers = proxy.hold_requests = False
            await loop.run_in_executor(None, surreal.start)
            results = await asyncio.gather(*group_a, *group_b, return_exceptions=True)
            after = await store.create_or_get("after", record(99, "z"))
            stored = await root_query(surreal, "SELECT id, judgment_id FROM judgment")
            return {
                "seen_down": seen_down,
                "results": results,
                "after": after,
                "stored": {r["id"].id: r["judgment_id"] for r in stored},
                "recovered": store.outcomes_recovered_total,
            }
        finally:
            await store.close()
            await proxy.close()

    out = asyncio.run(scenario())
    assert out["seen_down"]
    failures = [r for r in out["results"] if isinstance(r, BaseException)]
    assert failures == []
    cells = [f"a{n}" for n in range(4)] + [f"b{n}" for n in range(3)]
    for (rec, created), cell in zip(out["results"], cells, strict=True):
        assert created, rec
        assert rec["judgment_id"] == f"{cell[0]}-{cell[1:]}"
        assert out["stored"][cell] == rec["judgment_id"]  # answered = stored
    assert out["after"][1]
    assert out["recovered"] == 7
