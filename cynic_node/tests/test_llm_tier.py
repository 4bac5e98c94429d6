"""The LLM tier under a slow or absent Ollama, on several servers (issue 17).

Real servers: the Ollama stand-in (tests/standins/ollama, `ollama serve` on a free port) and,
where a behaviour must be exact (an answer with no scores, one call answered and the others
held), a small HTTP server in the test. The upgrade of a degraded judgment runs on the
SurrealDB stand-in, with two node apps on one database.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cynic_node.api import create_app
from cynic_node.config import ConfigError, Settings
from cynic_node.judge import Verdict, judge
from cynic_node.llm import AXIOM_SCHEMA, OUTCOMES, OllamaPool
from cynic_node.metrics import Metrics
from cynic_node.models import JudgeRequest, parse_judge_request
from cynic_node.scoring import AXIOMS
from cynic_node.store import JudgmentStore
from nodetest_helpers import (
    OLLAMA_STANDIN,
    ROOT_PASS,
    OllamaStandin,
    SurrealServer,
    free_port,
    read_journal,
    wait_until,
)

T = TypeVar("T")
SCORES = {"FIDELITY": 70, "PHI": 72, "VERIFY": 64, "CULTURE": 80, "BURN": 75}

pytestmark = pytest.mark.skipif(not OLLAMA_STANDIN.exists(), reason="no Ollama stand-in")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:  # a hang fails the test instead of the whole run
        return await asyncio.wait_for(coro, 120)

    return asyncio.run(bounded())


def request(text: str, level: str) -> JudgeRequest:
    return parse_judge_request(json.dumps({"content": text, "level": level}).encode())


@pytest.fixture
def start_ollama(tmp_path: Path) -> Iterator[Callable[..., OllamaStandin]]:
    started: list[OllamaStandin] = []

    def start(**env: str) -> OllamaStandin:
        n = len(started)
        server = OllamaStandin(
            models_dir=tmp_path / f"models-{n}", log_path=tmp_path / f"ollama-{n}.log", env=env
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class ScriptedOllama:
    """An HTTP server speaking /api/chat as the test says: `answers` is the content of each
    call in turn ("hold": no answer, the call is held until its client hangs up)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0
        self.hung_up = 0  # held calls whose client closed the connection
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {"models": [{"name": "gemma2:2b"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with scripted.lock:
                    answer = scripted.answers[min(scripted.calls, len(scripted.answers) - 1)]
                    scripted.calls += 1
                if answer == "hold":
                    self._hold()
                    return
                self._send(200, {"message": {"role": "assistant", "content": answer}})

            def _hold(self) -> None:
                conn: socket.socket = self.connection
                while True:
                    ready, _, _ = select.select([conn], [], [], 0.05)
                    if ready and conn.recv(1, socket.MSG_PEEK) == b"":
                        with scripted.lock:
                            scripted.hung_up += 1
                        return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def app_client(tmp_path: Path, pool: OllamaPool, surreal_url: str = "mem://") -> TestClient:
    settings = Settings(
        instance_id=f"tier-{uuid.uuid4().hex[:6]}",
        cynic_home=tmp_path / f"home-{uuid.uuid4().hex[:6]}",
        surreal_url=surreal_url,
        surreal_user="root" if surreal_url != "mem://" else "",
        surreal_pass=ROOT_PASS if surreal_url != "mem://" else "",
    )
    return TestClient(create_app(settings, llm=pool), client=("127.0.0.1", 50000))


def journal_of(client: TestClient) -> Path:
    app = cast(FastAPI, client.app)
    return Path(app.state.service.journal.path)


# The schema


def test_axiom_schema_requires_the_five_axioms_0_to_100() -> None:
    assert AXIOM_SCHEMA["type"] == "object"
    assert AXIOM_SCHEMA["required"] == list(AXIOMS)
    assert {
        a: (p["type"], p["minimum"], p["maximum"]) for a, p in AXIOM_SCHEMA["properties"].items()
    } == dict.fromkeys(AXIOMS, ("number", 0, 100))


def test_the_stand_in_answers_the_schema_with_usable_scores(
    start_ollama: Callable[..., OllamaStandin],
) -> None:
    server = start_ollama()

    async def scenario() -> Verdict:
        pool = OllamaPool([server.url], "gemma2:2b", 10.0)
        try:
            return await judge(request("def f(): return 1", "MACRO"), pool)
        finally:
            await pool.aclose()

    verdict = run(scenario())
    assert (verdict.level_used, verdict.llm_calls, verdict.degraded) == ("MACRO", 3, False)
    assert verdict.degraded_reason is None


# Several servers


def test_calls_go_to_the_least_busy_server(start_ollama: Callable[..., OllamaStandin]) -> None:
    # Calls that overlap (each takes a few tokens' delay) spread; one at a time, they take turns
    # (ties go round the list), so uncoordinated instances do not all pile onto the first server.
    a = start_ollama(OLLAMA_STANDIN_TOKEN_DELAY_MS="20", OLLAMA_NUM_PARALLEL="4")
    b = start_ollama(OLLAMA_STANDIN_TOKEN_DELAY_MS="20", OLLAMA_NUM_PARALLEL="4")

    async def scenario() -> tuple[list[int], list[int], int]:
        pool = OllamaPool([a.url, b.url], "gemma2:2b", 30.0, max_concurrency=4)
        try:
            for n in range(4):
                assert (await judge(request(f"alone {n}", "MICRO"), pool)).level_used == "MICRO"
            alone = [s.calls["ok"] for s in pool.servers]
            verdicts = await asyncio.gather(
                *(judge(request(f"together {n}", "MACRO"), pool) for n in range(6))
            )
            assert all(v.level_used == "MACRO" for v in verdicts)
            together = [
                s.calls["ok"] - before for s, before in zip(pool.servers, alone, strict=True)
            ]
            return alone, together, pool.peak_in_flight
        finally:
            await pool.aclose()

    alone, together, peak = run(scenario())
    assert alone == [2, 2]
    assert sum(together) == 18
    assert peak == 4
    # Four in flight on two servers: neither ever had more than its share when picked.
    assert min(together) >= sum(together) // 3, together


def test_a_stopped_server_is_skipped_then_used_again(
    start_ollama: Callable[..., OllamaStandin],
) -> None:
    a = start_ollama()
    b = start_ollama()

    async def scenario() -> dict[str, Any]:
        pool = OllamaPool([a.url, b.url], "gemma2:2b", 10.0, breaker_s=1.0)
        first, second = pool.servers
        try:
            a.stop()
            levels = [
                (await judge(request(f"a down {n}", "MICRO"), pool)).level_used for n in range(4)
            ]
            down = (dict(first.calls), dict(second.calls), first.up)
            await asyncio.to_thread(a.start)  # the same port and models
            while first.breaker_open:
                await asyncio.sleep(0.05)
            back = (await judge(request("a back", "MICRO"), pool)).level_used
            return {"levels": levels, "down": down, "back": back, "first": dict(first.calls)}
        finally:
            await pool.aclose()

    out = run(scenario())
    assert out["levels"] == ["MICRO"] * 4  # no request failed or degraded
    first_calls, second_calls, first_up = out["down"]
    assert first_calls["unreachable"] == 1  # tried once, then skipped while its breaker was open
    assert first_calls["ok"] == 0
    assert second_calls["ok"] == 4
    assert first_up is False
    assert out["back"] == "MICRO"
    assert out["first"]["ok"] == 1  # after its breaker, the first server is first again


def test_health_and_metrics_per_server(
    tmp_path: Path, start_ollama: Callable[..., OllamaStandin]
) -> None:
    server = start_ollama()
    dead = f"http://127.0.0.1:{free_port()}"
    pool = OllamaPool([dead, server.url], "gemma2:2b", 10.0, max_concurrency=1)
    with app_client(tmp_path, pool) as client:
        body = client.post("/judge", json={"content": "m", "level": "MACRO"}).json()
        assert (body["level_used"], body["degraded"]) == ("MACRO", False)
        health = client.get("/health").json()
        text = client.get("/metrics").text
    assert health["status"] == "alive"
    assert health["llm"]["ollama"] == "reachable"
    assert health["llm"]["servers"] == [
        {"url": dead, "up": False, "in_flight": 0},
        {"url": server.url, "up": True, "in_flight": 0},
    ]
    i = f'instance="{health["instance_id"]}"'
    lines = set(text.splitlines())
    assert f'cynic_llm_server_up{{{i},server="{dead}"}} 0' in lines
    assert f'cynic_llm_server_up{{{i},server="{server.url}"}} 1' in lines
    assert f'cynic_llm_server_in_flight{{{i},server="{server.url}"}} 0' in lines
    assert f'cynic_llm_calls_total{{{i},server="{server.url}",outcome="ok"}} 3' in lines
    assert f'cynic_llm_calls_total{{{i},server="{dead}",outcome="unreachable"}} 1' in lines
    for url in (dead, server.url):
        for outcome in OUTCOMES:
            assert any(
                line.startswith(f'cynic_llm_calls_total{{{i},server="{url}",outcome="{outcome}"}}')
                for line in lines
            )
    # One slot, three dogs: each call waited for the slot once.
    assert f"cynic_llm_slot_waits_total{{{i}}} 3" in lines
    assert f"cynic_llm_calls_waiting{{{i}}} 0" in lines
    assert any(line.startswith(f"cynic_llm_slot_wait_seconds_total{{{i}}} ") for line in lines)
    for reason in ("deadline", "unavailable", "unusable"):
        assert f'cynic_llm_degraded_total{{{i},reason="{reason}"}} 0' in lines
    assert f"cynic_llm_calls_in_flight{{{i}}} 0" in lines  # the old series stay
    assert any(line.startswith("cynic_llm_timeouts_total{") for line in lines)


def test_server_label_values_are_escaped() -> None:
    pool = OllamaPool(['http://h:1/a"b\\c'], "m", 1.0)
    text = Metrics("x").render(0, 0, True, 0, (0, 0), llm=pool)
    assert 'cynic_llm_server_up{instance="x",server="http://h:1/a\\"b\\\\c"} 0' in text


# Deadlines and degraded answers


def test_past_the_deadline_the_answer_is_reflex_degraded_and_ollama_is_freed(
    tmp_path: Path, start_ollama: Callable[..., OllamaStandin]
) -> None:
    # Each generated token takes 2 s: no reply can come within the half-second deadline. One
    # slot at Ollama: one call generates, two wait there for the slot.
    server = start_ollama(OLLAMA_STANDIN_TOKEN_DELAY_MS="2000", OLLAMA_NUM_PARALLEL="1")
    pool = OllamaPool([server.url], "gemma2:2b", 30.0, deadline_macro_s=0.5)
    with app_client(tmp_path, pool) as client:
        body = client.post("/judge", json={"content": "slow one", "level": "MACRO"}).json()
        text = client.get("/metrics").text
    assert body["level_used"] == "REFLEX"
    assert (body["degraded"], body["degraded_reason"], body["llm_calls"]) == (True, "deadline", 0)
    assert body["confidence"] == 0.382
    assert 'reason="deadline"} 1' in text
    assert f'server="{server.url}",outcome="timeout"}} 3' in text

    # The calls were cancelled: their connections closed, and the stand-in dropped them (a
    # generation whose client hung up ends in 500, as Ollama's "context canceled"); one left
    # to finish would end in 200.
    def chats(status: int) -> int:
        return sum(
            f"| {status} |" in line and '"/api/chat"' in line
            for line in server.log_text().splitlines()
        )

    wait_until(lambda: chats(500) == 3, 20, "the three calls dropped by the stand-in")
    assert chats(200) == 0


def test_a_macro_cut_off_with_one_opinion_in_is_a_micro_judgment(tmp_path: Path) -> None:
    scripted = ScriptedOllama([json.dumps(SCORES), "hold", "hold"])
    try:
        pool = OllamaPool([scripted.url], "gemma2:2b", 30.0, deadline_macro_s=0.5)
        with app_client(tmp_path, pool) as client:
            body = client.post("/judge", json={"content": "one of three", "level": "MACRO"}).json()
        assert (body["level_used"], body["llm_calls"], body["degraded"]) == ("MICRO", 1, False)
        assert body["degraded_reason"] is None
        wait_until(lambda: scripted.hung_up == 2, 10, "held calls closed by the node")
    finally:
        scripted.close()


def test_no_server_reachable_is_unavailable(tmp_path: Path) -> None:
    pool = OllamaPool([f"http://127.0.0.1:{free_port()}"], "gemma2:2b", 5.0)
    with app_client(tmp_path, pool) as client:
        first = client.post("/judge", json={"content": "u1", "level": "MICRO"}).json()
        # The breaker is open now: the next call does not even wait for a slot.
        second = client.post("/judge", json={"content": "u2", "level": "MACRO"}).json()
        text = client.get("/metrics").text
    for body in (first, second):
        assert (body["level_used"], body["degraded"]) == ("REFLEX", True)
        assert (body["degraded_reason"], body["llm_calls"]) == ("unavailable", 0)
    assert 'reason="unavailable"} 2' in text
    assert 'outcome="unreachable"} 1' in text


def test_a_busy_server_is_unavailable(
    tmp_path: Path, start_ollama: Callable[..., OllamaStandin]
) -> None:
    server = start_ollama(OLLAMA_MAX_QUEUE="0")  # every generation: 503 server busy
    pool = OllamaPool([server.url], "gemma2:2b", 5.0)
    with app_client(tmp_path, pool) as client:
        body = client.post("/judge", json={"content": "busy", "level": "MICRO"}).json()
        text = client.get("/metrics").text
    assert (body["degraded"], body["degraded_reason"], body["llm_calls"]) == (
        True,
        "unavailable",
        0,
    )
    assert f'server="{server.url}",outcome="busy"}} 1' in text


def test_an_answer_without_scores_is_unusable(tmp_path: Path) -> None:
    scripted = ScriptedOllama(["I would rather not say."])
    try:
        pool = OllamaPool([scripted.url], "gemma2:2b", 5.0)
        with app_client(tmp_path, pool) as client:
            body = client.post("/judge", json={"content": "g", "level": "MICRO"}).json()
            text = client.get("/metrics").text
    finally:
        scripted.close()
    assert body["level_used"] == "REFLEX"
    assert (body["degraded"], body["degraded_reason"], body["llm_calls"]) == (True, "unusable", 1)
    assert 'reason="unusable"} 1' in text
    assert 'outcome="unusable"} 1' in text


def test_blank_content_and_reflex_requests_are_not_degraded(tmp_path: Path) -> None:
    pool = OllamaPool([f"http://127.0.0.1:{free_port()}"], "gemma2:2b", 5.0)
    with app_client(tmp_path, pool) as client:
        blank = client.post("/judge", json={"content": "   ", "level": "MICRO"}).json()
        reflex = client.post("/judge", json={"content": "r", "level": "REFLEX"}).json()
    assert (blank["degraded"], blank["degraded_reason"]) == (False, None)
    assert (reflex["degraded"], reflex["degraded_reason"]) == (False, None)


# Configuration


def test_ollama_url_lists_several_servers() -> None:
    s = Settings.from_env({"OLLAMA_URL": " http://a:11434/ , http://b:11434,http://a:11434 "})
    assert s.ollama_urls == ("http://a:11434", "http://b:11434")
    assert Settings.from_env({}).ollama_urls == ("http://127.0.0.1:11434",)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OLLAMA_URL": "ftp://a:1"}, ["ftp://a:1"]),
        ({"OLLAMA_URL": "http://a:1,127.0.0.1:11434"}, ["127.0.0.1:11434"]),
        ({"OLLAMA_URL": "http://"}, ["http://"]),
        ({"OLLAMA_URL": "http://a:99999"}, ["http://a:99999"]),
        ({"OLLAMA_URL": " , "}, ["OLLAMA_URL"]),
        (
            {"CYNIC_LLM_TIMEOUT_S": "5", "CYNIC_LLM_DEADLINE_MICRO_S": "6"},
            ["CYNIC_LLM_DEADLINE_MICRO_S", "CYNIC_LLM_TIMEOUT_S"],
        ),
        (
            {"CYNIC_LLM_DEADLINE_MACRO_S": "21"},
            ["CYNIC_LLM_DEADLINE_MACRO_S", "CYNIC_LLM_TIMEOUT_S"],
        ),
        ({"CYNIC_LLM_DEADLINE_MACRO_S": "soon"}, ["CYNIC_LLM_DEADLINE_MACRO_S"]),
        ({"CYNIC_LLM_DEADLINE_MICRO_S": "0"}, ["CYNIC_LLM_DEADLINE_MICRO_S"]),
    ],
)
def test_bad_llm_settings_are_refused(env: dict[str, str], named: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    for name in named:
        assert name in str(err.value)


def test_deadlines_from_env_reach_the_pool(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "CYNIC_HOME": str(tmp_path),
            "SURREAL_URL": "mem://",
            "CYNIC_LLM_TIMEOUT_S": "8",
            "CYNIC_LLM_DEADLINE_MICRO_S": "3",
            "OLLAMA_URL": "http://a:1,http://b:2",
        }
    )
    assert (s.llm_deadline_micro_s, s.llm_deadline_macro_s) == (3.0, 8.0)  # unset: the timeout
    pool = create_app(s).state.service.llm
    assert pool.deadlines == {"MICRO": 3.0, "MACRO": 8.0}
    assert [server.url for server in pool.servers] == ["http://a:1", "http://b:2"]


# Upgrading a degraded judgment


@pytest.fixture
def surreal_store(surreal: SurrealServer) -> str:
    return surreal.ws_url


def test_a_degraded_judgment_is_upgraded_once(
    tmp_path: Path, surreal_store: str, start_ollama: Callable[..., OllamaStandin]
) -> None:
    server = start_ollama()
    cell = {"content": "upgrade me", "level": "MICRO"}
    down = OllamaPool([f"http://127.0.0.1:{free_port()}"], "gemma2:2b", 5.0)
    up = OllamaPool([server.url], "gemma2:2b", 10.0)
    with (
        app_client(tmp_path, down, surreal_store) as a,
        app_client(tmp_path, up, surreal_store) as b,
    ):
        degraded = a.post("/judge", json=cell).json()
        assert (degraded["degraded"], degraded["degraded_reason"]) == (True, "unavailable")
        # REFLEX on a degraded cell: the stored judgment, as it is.
        reflex = b.post("/judge", json={**cell, "level": "REFLEX"}).json()
        assert (reflex["judgment_id"], reflex["reused"]) == (degraded["judgment_id"], True)
        # Still no LLM at a: judging again gives no better, the degraded one stands.
        again = a.post("/judge", json=cell).json()
        assert (again["judgment_id"], again["reused"]) == (degraded["judgment_id"], True)

        upgraded = b.post("/judge", json=cell).json()
        assert upgraded["judgment_id"] != degraded["judgment_id"]
        assert (upgraded["level_used"], upgraded["degraded"], upgraded["reused"]) == (
            "MICRO",
            False,
            False,
        )
        assert upgraded["degraded_reason"] is None
        assert upgraded["supersedes"] == [degraded["judgment_id"]]
        # Not degraded any more: reused by everyone, at every level.
        for client, level in ((a, "MACRO"), (a, "REFLEX"), (b, "MICRO")):
            body = client.post("/judge", json={**cell, "level": level}).json()
            assert (body["judgment_id"], body["reused"]) == (upgraded["judgment_id"], True)
            assert body["supersedes"] == [degraded["judgment_id"]]
        homes = [journal_of(c) for c in (a, b)]
    lines = [line for home in homes for line in read_journal(home.parent)]
    assert sorted(line["judgment_id"] for line in lines) == sorted(
        [degraded["judgment_id"], upgraded["judgment_id"]]
    )
    (new_line,) = [line for line in lines if line["judgment_id"] == upgraded["judgment_id"]]
    assert new_line["supersedes"] == [degraded["judgment_id"]]


def test_two_concurrent_upgraders_one_wins(
    tmp_path: Path, surreal_store: str, start_ollama: Callable[..., OllamaStandin]
) -> None:
    # Calls take a few tokens' delay, so that both instances are judging at the same time.
    server = start_ollama(OLLAMA_STANDIN_TOKEN_DELAY_MS="30", OLLAMA_NUM_PARALLEL="4")
    cells = [{"content": f"race {n}", "level": "MICRO"} for n in range(5)]
    down = OllamaPool([f"http://127.0.0.1:{free_port()}"], "gemma2:2b", 5.0)
    pools = [OllamaPool([server.url], "gemma2:2b", 30.0) for _ in range(2)]
    with (
        app_client(tmp_path, down, surreal_store) as first,
        app_client(tmp_path, pools[0], surreal_store) as a,
        app_client(tmp_path, pools[1], surreal_store) as b,
        ThreadPoolExecutor(2) as threads,
    ):
        for cell in cells:
            old = first.post("/judge", json=cell).json()
            assert old["degraded"] is True
            barrier = threading.Barrier(2)

            def post(
                client: TestClient, body: dict[str, Any] = cell, start: threading.Barrier = barrier
            ) -> dict[str, Any]:
                start.wait()
                answer: dict[str, Any] = client.post("/judge", json=body).json()
                return answer

            answers = list(threads.map(post, (a, b)))
            assert answers[0]["judgment_id"] == answers[1]["judgment_id"], answers
            assert sorted(x["reused"] for x in answers) == [False, True]
            assert all(x["supersedes"] == [old["judgment_id"]] for x in answers)
            assert all(x["degraded"] is False for x in answers)
        homes = [journal_of(c).parent for c in (a, b)]
    created = [line for home in homes for line in read_journal(home)]
    assert len(created) == len(cells)  # one line per upgrade, by its winner
    # Both judged every cell (both found it degraded): the store's compare-and-set decided.
    assert [pool.servers[0].calls["ok"] for pool in pools] == [len(cells)] * 2


def test_replace_degraded_is_a_compare_and_set(surreal_store: str, tmp_path: Path) -> None:
    settings = Settings(
        cynic_home=tmp_path, surreal_url=surreal_store, surreal_user="root", surreal_pass=ROOT_PASS
    )

    async def scenario() -> list[tuple[str, bool, bool]]:
        stores = [JudgmentStore(settings), JudgmentStore(settings)]
        for store in stores:
            await store.start()
        try:
            results = []
            for n in range(10):
                cell = uuid.uuid4().hex
                old = {"judgment_id": f"old-{n}", "cell_id": cell, "degraded": True}
                await stores[0].create_or_get(cell, old)
                news = [
                    {
                        "judgment_id": f"new-{n}-{k}",
                        "cell_id": cell,
                        "degraded": False,
                        "supersedes": [f"old-{n}"],
                    }
                    for k in range(2)
                ]
                outcomes = await asyncio.gather(
                    *(
                        s.replace_degraded(cell, f"old-{n}", r)
                        for s, r in zip(stores, news, strict=True)
                    )
                )
                stored = await stores[0].get(cell)
                assert stored is not None
                winners = [won for _, won in outcomes]
                same = all(rec["judgment_id"] == stored["judgment_id"] for rec, _ in outcomes)
                results.append((str(stored["judgment_id"]), winners.count(True) == 1, same))
            # A judgment that is not degraded is never replaced.
            cell = uuid.uuid4().hex
            await stores[0].create_or_get(cell, {"judgment_id": "good", "degraded": False})
            record, replaced = await stores[1].replace_degraded(
                cell, "good", {"judgment_id": "x", "degraded": False}
            )
            assert (record["judgment_id"], replaced) == ("good", False)
            return results
        finally:
            for store in stores:
                await store.close()

    results = run(scenario())
    assert all(one and same for _, one, same in results), results
    assert all(jid.startswith("new-") for jid, _, _ in results)
