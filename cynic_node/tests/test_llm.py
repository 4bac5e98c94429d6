"""MICRO and MACRO: Ollama's /api/chat at temperature 0, and the fall back to REFLEX."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from cynic_node.api import create_app
from cynic_node.config import Settings
from cynic_node.judge import Verdict, judge
from cynic_node.llm import AXIOM_SCHEMA, OllamaPool, parse_scores
from cynic_node.models import JudgeRequest, parse_judge_request

T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]
Calls = list[dict[str, Any]]


def ollama(answer: str | None = None, status: int = 200) -> tuple[Handler, Calls]:
    """A fake Ollama: records the chat requests, answers `answer` as the message content."""
    calls: Calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            return httpx.Response(200, json={"models": [{"name": "gemma2:2b"}]})
        assert request.url.path == "/api/chat"
        calls.append(json.loads(request.content))
        content = (
            answer
            if answer is not None
            else json.dumps({"FIDELITY": 70, "PHI": 72, "VERIFY": 64, "CULTURE": 80, "BURN": 75})
        )
        return httpx.Response(status, json={"message": {"role": "assistant", "content": content}})

    return handle, calls


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def make_client(tmp_path: Path, handler: Handler) -> TestClient:
    settings = Settings(
        instance_id="llm",
        cynic_home=tmp_path,
        surreal_url="mem://",
        ollama_url="http://ollama.test",
        model="gemma2:2b",
    )
    llm = OllamaPool(
        settings.ollama_url, settings.model, 5.0, transport=httpx.MockTransport(handler)
    )
    return TestClient(create_app(settings, llm=llm), client=("127.0.0.1", 50000))  # may scrape


@pytest.fixture
def answering(tmp_path: Path) -> Iterator[tuple[TestClient, Calls]]:
    handler, calls = ollama()
    with make_client(tmp_path, handler) as c:
        yield c, calls


def test_micro_asks_one_llm_dog_at_temperature_zero(answering: tuple[TestClient, Calls]) -> None:
    client, calls = answering
    body = client.post("/judge", json={"content": "def f(): return 1", "level": "MICRO"}).json()
    assert body["level_used"] == "MICRO"
    assert body["llm_calls"] == 1
    assert "SAGE" in body["dog_votes"]
    assert 0.382 <= body["confidence"] <= 0.618
    assert len(calls) == 1
    assert calls[0]["options"]["temperature"] == 0
    assert calls[0]["model"] == "gemma2:2b"
    assert calls[0]["stream"] is False
    assert calls[0]["format"] == AXIOM_SCHEMA  # structured output: the five axioms, 0-100


def test_macro_asks_several(answering: tuple[TestClient, Calls]) -> None:
    client, calls = answering
    body = client.post("/judge", json={"content": "x = 1", "level": "macro"}).json()
    assert body["level_used"] == "MACRO"
    assert body["llm_calls"] == 3
    assert {"SAGE", "SCHOLAR", "ORACLE"} <= set(body["dog_votes"])
    assert body["confidence"] <= 0.618
    assert len(calls) == 3


def test_budget_picks_the_level(answering: tuple[TestClient, Calls]) -> None:
    client, _ = answering
    assert (
        client.post("/judge", json={"content": "a", "budget_usd": 0.01}).json()["level_used"]
        == "REFLEX"
    )
    assert (
        client.post("/judge", json={"content": "b", "budget_usd": 0.1}).json()["level_used"]
        == "MICRO"
    )
    assert (
        client.post("/judge", json={"content": "c", "budget_usd": 1}).json()["level_used"]
        == "MACRO"
    )


def test_llm_opinion_moves_the_score(tmp_path: Path) -> None:
    low, _ = ollama(json.dumps(dict.fromkeys(["FIDELITY", "PHI", "VERIFY", "CULTURE", "BURN"], 5)))
    high, _ = ollama(
        json.dumps(dict.fromkeys(["FIDELITY", "PHI", "VERIFY", "CULTURE", "BURN"], 95))
    )
    req = {"content": "some code", "level": "MICRO"}
    with make_client(tmp_path / "a", low) as a, make_client(tmp_path / "b", high) as b:
        assert (
            a.post("/judge", json=req).json()["q_score"]
            < b.post("/judge", json=req).json()["q_score"]
        )


def test_unreachable_ollama_falls_back_to_reflex(tmp_path: Path) -> None:
    with make_client(tmp_path, refused) as client:
        body = client.post("/judge", json={"content": "y = 2", "level": "MACRO"}).json()
        assert body["level_used"] == "REFLEX"
        assert body["llm_calls"] == 0
        assert body["confidence"] == 0.382
        assert client.get("/health").json()["status"] == "degraded"
        assert 'cynic_llm_fallbacks_total{instance="llm"} 1' in client.get("/metrics").text


def test_unusable_answer_counts_the_call_but_stays_reflex(tmp_path: Path) -> None:
    handler, calls = ollama("I would rather not say.")
    with make_client(tmp_path, handler) as client:
        body = client.post("/judge", json={"content": "z = 3", "level": "MICRO"}).json()
    assert body["level_used"] == "REFLEX"
    assert body["llm_calls"] == 1
    assert len(calls) == 1


def test_health_alive_with_ollama(answering: tuple[TestClient, Calls]) -> None:
    client, _ = answering
    body = client.get("/health").json()
    assert body["status"] == "alive"
    assert body["llm"] == {
        "ollama": "reachable",
        "models": ["gemma2:2b"],
        "servers": [{"url": "http://ollama.test", "up": True, "in_flight": 0}],
    }


def test_an_existing_cell_is_not_judged_again_by_the_llm(
    answering: tuple[TestClient, Calls],
) -> None:
    client, calls = answering
    first = client.post("/judge", json={"content": "w", "level": "MICRO"}).json()
    second = client.post("/judge", json={"content": "w", "level": "MACRO"}).json()
    assert second["judgment_id"] == first["judgment_id"]
    assert second["reused"] is True
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"FIDELITY": 50, "PHI": 60, "VERIFY": 70, "CULTURE": 80, "BURN": 90}',
            {"FIDELITY": 50, "PHI": 60, "VERIFY": 70, "CULTURE": 80, "BURN": 90},
        ),
        ('Sure! {"verify": 150, "burn": -3} hope it helps', {"VERIFY": 100, "BURN": 0}),
        ('{"PHI": "high", "BURN": true, "VERIFY": NaN}', None),
        ("no json at all", None),
        ("[1, 2, 3]", None),
    ],
)
def test_parse_scores(text: str, expected: dict[str, float] | None) -> None:
    assert parse_scores(text) == expected


# Load bounds: concurrent calls per instance, and one deadline for the whole call.


class SlowOllama:
    """An Ollama whose /api/chat holds each call until released; counts calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        content = json.dumps({"FIDELITY": 70, "PHI": 72, "VERIFY": 64, "CULTURE": 80, "BURN": 75})
        return httpx.Response(200, json={"message": {"content": content}})


def run(coro: Coroutine[Any, Any, T]) -> T:
    # A bound for the test itself: a hang (a deadline that is not applied) fails it.
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def macro(text: str) -> JudgeRequest:
    return parse_judge_request(json.dumps({"content": text, "level": "MACRO"}).encode())


def test_llm_calls_in_flight_are_capped_per_instance() -> None:
    slow = SlowOllama()

    async def scenario() -> list[Verdict]:
        llm = OllamaPool(
            "http://ollama.test", "m", 30.0, transport=httpx.MockTransport(slow), max_concurrency=2
        )
        try:
            pending = [asyncio.ensure_future(judge(macro(f"cell {n}"), llm)) for n in range(4)]
            while slow.calls < 2:  # the first two calls have reached Ollama
                await asyncio.sleep(0.01)
            for _ in range(20):  # give the ten others every chance to start as well
                await asyncio.sleep(0)
            assert slow.in_flight == 2
            slow.release.set()
            return await asyncio.gather(*pending)
        finally:
            await llm.aclose()

    verdicts = run(scenario())
    assert slow.peak == 2  # twelve calls (4 MACRO judgments x 3 dogs), two at a time
    assert slow.calls == 12
    assert [v.level_used for v in verdicts] == ["MACRO"] * 4  # all answered, in turn


def test_llm_timeout_bounds_the_whole_call_and_degrades_to_reflex() -> None:
    slow = SlowOllama()  # never released: Ollama never answers

    async def scenario() -> tuple[Verdict, int]:
        llm = OllamaPool(
            "http://ollama.test", "m", 0.2, transport=httpx.MockTransport(slow), max_concurrency=1
        )
        try:
            # One slot, three dogs: one call waits on Ollama, two wait for the slot; the same
            # deadline ends all three.
            verdict = await judge(macro("slow"), llm)
            return verdict, llm.timeouts_total
        finally:
            await llm.aclose()

    verdict, timeouts = run(scenario())
    assert (verdict.level_used, verdict.llm_calls, verdict.confidence) == ("REFLEX", 0, 0.382)
    assert timeouts == 3
    assert slow.calls == 1  # the two others never reached Ollama


def test_text_utf8_cannot_encode_reaches_ollama_replaced(tmp_path: Path) -> None:
    handler, calls = ollama()
    with make_client(tmp_path, handler) as client:
        r = client.post(
            "/judge",
            content=b'{"content": "a \\ud800 b", "context": "\\udfff", "level": "MICRO"}',
        )
    assert r.status_code == 200, r.text
    assert r.json()["level_used"] == "MICRO"
    prompt = calls[0]["messages"][1]["content"]
    assert "a ? b" in prompt
    assert "Context: ?" in prompt


def test_settings_reach_the_client(tmp_path: Path) -> None:
    settings = Settings(
        instance_id="s",
        cynic_home=tmp_path,
        surreal_url="mem://",
        llm_timeout_s=3.5,
        llm_max_concurrency=7,
    )
    app = create_app(settings)
    llm = app.state.service.llm
    assert (llm.timeout_s, llm.max_concurrency) == (3.5, 7)
