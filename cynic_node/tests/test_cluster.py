"""Integration: node processes on the SurrealDB stand-in (the real engine behind /rpc).

- consensus: three instances, the same cell fired at each fifty times at once: one record,
  one judgment id in all 150 answers, one journal line;
- outage: SurrealDB stopped gives 503 + Retry-After and /health 503; started again, the same
  node process recovers by itself;
- a least-privilege database user on a table the deployment defined beforehand;
- journal: a file-size limit on the running process gives 503 + Retry-After and /health 503;
  lifted, the same process journals and answers 200 again, and the judgment it could not
  journal gets its one line;
- SurrealDB killed (SIGKILL) under load and started again on its data: the loss shows at
  once (cynic_storage_up 0), the node answers again, every 200 is stored and journaled once,
  and a judgment answered 503 that was stored is journaled once (by its retry or by itself).
"""

from __future__ import annotations

import asyncio
import json
import resource
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodetest_helpers import (
    NodeProcess,
    SurrealServer,
    http_get,
    read_journal,
    root_query,
    wait_until,
)

pytestmark = pytest.mark.integration

StartNode = Callable[..., NodeProcess]


async def post_all(
    targets: list[tuple[str, dict[str, Any]]],
) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
            async with session.post(f"{url}/judge", json=body) as resp:
                return resp.status, dict(resp.headers), await resp.json()

        return await asyncio.gather(*(one(url, body) for url, body in targets))


def test_one_judgment_per_cell_across_three_instances(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    home = tmp_path / "shared-home"
    nodes = [start_node(f"node-{i}", surreal.ws_url, home) for i in (1, 2, 3)]
    cell = {
        "content": "def judged_once():\n    return 42\n",
        "reality": "CODE",
        "analysis": "JUDGE",
        "budget_usd": 0.01,
    }
    # Interleaved, so the three instances race for the same record at the same moment.
    targets = [(nodes[i % 3].url, cell) for i in range(150)]
    answers = asyncio.run(post_all(targets))

    assert [status for status, _, _ in answers] == [200] * 150
    ids = {body["judgment_id"] for _, _, body in answers}
    assert len(ids) == 1
    (judgment_id,) = ids
    # Exactly one answer created it; it names the creator, as do all the others.
    assert sum(1 for _, _, body in answers if not body["reused"]) == 1
    assert len({body["instance_id"] for _, _, body in answers}) == 1
    assert Counter(h["x-instance-id"] for _, h, _ in answers) == {
        "node-1": 50,
        "node-2": 50,
        "node-3": 50,
    }
    bodies = {
        json.dumps({k: v for k, v in b.items() if k != "reused"}, sort_keys=True)
        for _, _, b in answers
    }
    assert len(bodies) == 1  # every instance answers the very same judgment

    cell_id = answers[0][2]["cell_id"]
    rows = asyncio.run(root_query(surreal, "SELECT * FROM judgment"))
    assert len(rows) == 1
    assert rows[0]["judgment_id"] == judgment_id
    assert str(rows[0]["id"]) == f"judgment:{cell_id}" or cell_id in str(rows[0]["id"])
    lines = [line for line in read_journal(home) if line["judgment_id"] == judgment_id]
    assert len(lines) == 1
    assert len(read_journal(home)) == 1


def test_many_cells_racing_on_three_instances(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    home = tmp_path / "shared-home"
    nodes = [start_node(f"race-{i}", surreal.ws_url, home) for i in (1, 2, 3)]
    cells = [{"content": f"cell number {n}", "reality": "SOCIAL"} for n in range(30)]
    targets = [(node.url, cell) for _ in range(4) for cell in cells for node in nodes]
    answers = asyncio.run(post_all(targets))
    assert all(status == 200 for status, _, _ in answers)
    by_cell: dict[str, set[str]] = {}
    for _, _, body in answers:
        by_cell.setdefault(body["cell_id"], set()).add(body["judgment_id"])
    assert len(by_cell) == 30
    assert all(len(ids) == 1 for ids in by_cell.values())
    count = asyncio.run(root_query(surreal, "SELECT count() AS n FROM judgment GROUP ALL"))
    assert count[0]["n"] == 30
    journal = read_journal(home)
    assert len(journal) == 30
    assert {line["judgment_id"] for line in journal} == {
        next(iter(ids)) for ids in by_cell.values()
    }


def test_storage_outage_503_then_recovery_without_restart(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    node = start_node("outage", surreal.ws_url, tmp_path / "home")
    before = asyncio.run(post_all([(node.url, {"content": "stored before the outage"})]))[0]
    assert before[0] == 200

    surreal.stop()
    status, headers, body = asyncio.run(post_all([(node.url, {"content": "during"})]))[0]
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert "detail" in body
    code, health = http_get(f"{node.url}/health")
    assert code == 503
    assert health["status"] == "unavailable"
    assert health["storage"] == {"surreal": "disconnected"}
    # Bad input stays a 422 during the outage.
    assert asyncio.run(post_all([(node.url, {"content": "x", "lod": 9})]))[0][0] == 422

    surreal.start()  # same port, same data
    wait_until(lambda: http_get(f"{node.url}/health")[0] == 200, 20, "node recovery")
    assert node.proc.poll() is None  # the same process, never restarted
    again = asyncio.run(post_all([(node.url, {"content": "stored before the outage"})]))[0]
    assert again[0] == 200
    assert again[2]["judgment_id"] == before[2]["judgment_id"]
    assert again[2]["reused"] is True
    after = asyncio.run(post_all([(node.url, {"content": "after the outage"})]))[0]
    assert after[0] == 200
    assert after[2]["reused"] is False


def test_least_privilege_user_on_a_predefined_table(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    # What the deployment role bootstraps: namespace, database, SCHEMALESS table, a user.
    asyncio.run(
        root_query(
            surreal,
            (
                "DEFINE NAMESPACE IF NOT EXISTS cynic; USE NS cynic; "
                "DEFINE DATABASE IF NOT EXISTS cynic; USE DB cynic; "
                "DEFINE TABLE IF NOT EXISTS judgment SCHEMALESS; "
                "DEFINE USER IF NOT EXISTS node ON DATABASE PASSWORD 'node-pass' ROLES EDITOR;"
            ),
        )
    )
    node = start_node(
        "editor",
        surreal.ws_url,
        tmp_path / "home",
        extra_env={
            "SURREAL_USER": "node",
            "SURREAL_PASS": "node-pass",
            "SURREAL_AUTH_LEVEL": "database",
        },
    )
    status, _, body = asyncio.run(post_all([(node.url, {"content": "least privilege"})]))[0]
    assert status == 200
    rows = asyncio.run(root_query(surreal, "SELECT judgment_id FROM judgment"))
    assert [r["judgment_id"] for r in rows] == [body["judgment_id"]]


def test_wrong_password_is_unavailable_not_a_crash(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    node = start_node(
        "badpass",
        surreal.ws_url,
        tmp_path / "home",
        extra_env={"SURREAL_PASS": "wrong"},
        wait_healthy=False,
    )
    assert http_get(f"{node.url}/health")[0] == 503
    assert asyncio.run(post_all([(node.url, {"content": "x"})]))[0][0] == 503
    assert "refused the sign-in" in node.log_path.read_text()


def test_journal_size_limit_503_then_recovery_without_restart(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    # The drill's fault (playbooks/drills/cynic_home_unwritable.yml): the running process's
    # file-size limit lowered to 0, so its appends fail with EFBIG; then restored.
    home = tmp_path / "home"
    node = start_node("fsize", surreal.ws_url, home)
    before = asyncio.run(post_all([(node.url, {"content": "journaled before"})]))[0]
    assert before[0] == 200
    limits = resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (0, limits[1]))
    try:
        status, headers, body = asyncio.run(post_all([(node.url, {"content": "during"})]))[0]
        assert status == 503
        assert int(headers["Retry-After"]) > 0
        assert body["detail"].startswith("journal unavailable: ")
        code, health = http_get(f"{node.url}/health")
        assert code == 503
        assert health["status"] == "unavailable"
        assert health["journal"]["status"] == "unwritable"
    finally:
        resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, limits)
    wait_until(lambda: http_get(f"{node.url}/health")[0] == 200, 10, "journal recovery")
    after = asyncio.run(post_all([(node.url, {"content": "journaled after"})]))[0]
    assert after[0] == 200
    retry = asyncio.run(post_all([(node.url, {"content": "during"})]))[0]
    assert retry[0] == 200
    assert retry[2]["reused"] is True
    assert node.proc.poll() is None  # the same process, never restarted
    # The judgment answered 503 was stored by this process: it owes its line, written once,
    # before the lines after it (the retry answered 200 reused names it).
    ids = [line["judgment_id"] for line in read_journal(home)]
    assert ids == [before[2]["judgment_id"], retry[2]["judgment_id"], after[2]["judgment_id"]]


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:  # noqa: S310 (loopback)
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise ValueError(f"{name} not in /metrics")


def test_surrealdb_killed_under_load_loses_no_answered_judgment(
    surreal: SurrealServer, start_node: StartNode, tmp_path: Path
) -> None:
    # SIGKILL with writes in flight: the node must see the loss (cynic_storage_up 0), answer
    # again once SurrealDB is back on its data, and keep its word: every 200 stored, every
    # judgment this instance stored journaled exactly once, answered 503 or not.
    home = tmp_path / "home"
    node = start_node("killed", surreal.ws_url, home, {"CYNIC_STORE_TIMEOUT_S": "20"})
    answers: list[tuple[int, str, dict[str, Any]]] = []
    seen_down = False

    async def load() -> None:
        nonlocal seen_down
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()

            async def worker(w: int) -> None:
                for n in range(400):  # bounded; stops earlier once the drill is over
                    if stop.is_set():
                        return
                    body = {"content": f"kill drill {w}-{n}"}
                    try:
                        async with session.post(f"{node.url}/judge", json=body) as resp:
                            answers.append((resp.status, body["content"], await resp.json()))
                    except aiohttp.ClientError:
                        answers.append((0, body["content"], {}))
                    if answers[-1][0] != 200:
                        await asyncio.sleep(0.05)

            workers = [asyncio.create_task(worker(w)) for w in range(16)]
            loop = asyncio.get_running_loop()
            while len(answers) < 100:
                await asyncio.sleep(0.01)
            surreal.kill()
            await loop.run_in_executor(
                None,
                wait_until,
                lambda: _metric(node.url, "cynic_storage_up") == 0,
                10,
                "cynic_storage_up 0",
            )
            seen_down = True
            await loop.run_in_executor(None, surreal.start)  # same port, same data
            ok_before = sum(1 for a in answers if a[0] == 200)
            while sum(1 for a in answers if a[0] == 200) < ok_before + 100:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*workers)

    asyncio.run(load())
    assert seen_down
    assert node.proc.poll() is None
    # Every cell answered otherwise than 200 is asked again: it must now be 200.
    failed = [content for status, content, _ in answers if status != 200]
    retried = asyncio.run(post_all([(node.url, {"content": c}) for c in failed]))
    assert [r[0] for r in retried] == [200] * len(failed)
    wait_until(lambda: _metric(node.url, "cynic_journal_owed") == 0, 10, "owed lines written")

    ok = [a[2]["judgment_id"] for a in answers if a[0] == 200] + [
        r[2]["judgment_id"] for r in retried
    ]
    rows = asyncio.run(root_query(surreal, "SELECT judgment_id, instance_id FROM judgment"))
    stored = {r["judgment_id"] for r in rows}
    assert set(ok) <= stored  # no answered-200 judgment missing
    journal = read_journal(home)  # every line parses
    ids = [line["judgment_id"] for line in journal]
    assert len(ids) == len(set(ids))  # one line per judgment
    assert set(ids) == {r["judgment_id"] for r in rows if r["instance_id"] == "killed"}
    lost = _metric(node.url, "cynic_storage_lost_writes_total")
    recovered = _metric(node.url, "cynic_storage_lost_writes_recovered_total")
    print(
        f"answers {len(answers)}, not 200: {len(failed)}, lost writes {lost}, recovered {recovered}"
    )
    assert recovered == lost  # SurrealDB came back within the store timeout: all found out
