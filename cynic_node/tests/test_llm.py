"""MICRO and MACRO: Ollama's /api/chat at temperature 0, and the fall back to REFLEX."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cynic_node.api import create_app
from cynic_node.config import Settings
from cynic_node.llm import OllamaClient, parse_scores

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
    llm = OllamaClient(
        settings.ollama_url, settings.model, 5.0, transport=httpx.MockTransport(handler)
    )
    return TestClient(create_app(settings, llm=llm))


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
    assert body["llm"] == {"ollama": "reachable", "models": ["gemma2:2b"]}


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
