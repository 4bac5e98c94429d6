"""The HTTP contract, in process (embedded SurrealDB engine, no Ollama)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from cynic_node.api import create_app
from cynic_node.config import Settings
from cynic_node.events import EventHub
from cynic_node.journal import Journal
from nodetest_helpers import read_journal

FIELDS = {
    "judgment_id",
    "cell_id",
    "q_score",
    "verdict",
    "confidence",
    "axiom_scores",
    "dog_votes",
    "consensus_reached",
    "consensus_votes",
    "residual_variance",
    "unnameable_detected",
    "cost_usd",
    "llm_calls",
    "duration_ms",
    "level_used",
    "instance_id",
    "degraded",
    "degraded_reason",
    "supersedes",
    "reused",
}
LOAD_TEST_BODY = {
    "content": "Test code 1",
    "reality": "CODE",
    "analysis": "JUDGE",
    "budget_usd": 0.01,
}


def test_judge_answers_the_contract(client: TestClient, settings: Settings) -> None:
    r = client.post("/judge", json=LOAD_TEST_BODY)
    assert r.status_code == 200
    assert r.headers["x-instance-id"] == "node-test"
    body = r.json()
    assert set(body) == FIELDS
    assert body["level_used"] == "REFLEX"  # no level, budget 0.01: REFLEX
    assert body["llm_calls"] == 0
    assert body["confidence"] == 0.382
    assert body["instance_id"] == "node-test"
    assert body["reused"] is False
    assert (body["degraded"], body["degraded_reason"], body["supersedes"]) == (False, None, [])
    assert list(body["axiom_scores"]) == ["FIDELITY", "PHI", "VERIFY", "CULTURE", "BURN"]
    assert round(body["q_score"], 3) == body["q_score"]
    assert body["verdict"] in ("HOWL", "WAG", "GROWL", "BARK")


def test_same_cell_is_reused_and_logged_once(client: TestClient, settings: Settings) -> None:
    first = client.post("/judge", json=LOAD_TEST_BODY).json()
    again = client.post("/judge", json={**LOAD_TEST_BODY, "reality": "code", "lod": 2}).json()
    assert again["reused"] is True
    assert again["judgment_id"] == first["judgment_id"]
    assert {k: v for k, v in again.items() if k != "reused"} == {
        k: v for k, v in first.items() if k != "reused"
    }
    lines = read_journal(settings.cynic_home)
    assert [line["judgment_id"] for line in lines] == [first["judgment_id"]]


def test_different_cells_get_different_judgments(client: TestClient) -> None:
    a = client.post("/judge", json={"content": "a = 1"}).json()
    b = client.post("/judge", json={"content": "a = 1", "context": "other"}).json()
    assert a["judgment_id"] != b["judgment_id"]
    assert a["cell_id"] != b["cell_id"]


def test_non_string_content(client: TestClient) -> None:
    r = client.post("/judge", json={"content": {"tx": "abc", "amount": 3}, "reality": "SOLANA"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[]", "body"),
        (b"\x00\x01binary", "body"),
        (b'{"reality": "CODE"}', "content"),
        (b'{"content": "x", "reality": "PLUTO"}', "reality"),
        (b'{"content": "x", "analysis": "DIVINE"}', "analysis"),
        (b'{"content": "x", "analysis": 7}', "analysis"),
        (b'{"content": "x", "level": "META"}', "level"),
        (b'{"content": "x", "lod": 5}', "lod"),
        (b'{"content": "x", "lod": "high"}', "lod"),
        (b'{"content": "x", "budget_usd": -1}', "budget_usd"),
        (b'{"content": "x", "time_dim": "NOW"}', "time_dim"),
        (b'{"content": "x", "context": {"a": 1}}', "context"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, body: bytes, field: str) -> None:
    r = client.post("/judge", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert field in r.json()["fields"]
    assert r.headers["x-instance-id"] == "node-test"


def test_oversize_body_is_413(client: TestClient, settings: Settings) -> None:
    big = json.dumps({"content": "x" * settings.max_body_bytes}).encode()
    r = client.post("/judge", content=big)
    assert r.status_code == 413


def test_oversize_body_without_length_is_413(client: TestClient, settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(settings.max_body_bytes // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    r = client.post("/judge", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413


def test_health_without_ollama_is_degraded(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["storage"] == {"surreal": "connected"}
    assert body["llm"]["ollama"] == "unreachable"
    assert body["llm"]["models"] == []
    assert [(s["up"], s["in_flight"]) for s in body["llm"]["servers"]] == [(False, 0)]
    assert body["instance_id"] == "node-test"
    assert {"version", "uptime_s", "judgments_total"} <= set(body)


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.post("/judge", json={"content": "m = 1"})
    client.post("/judge", json={"content": "m = 1"})
    client.post("/judge", content=b"nope")
    text = client.get("/metrics").text
    labels = 'instance="node-test",route="/judge"'
    assert f'cynic_http_requests_total{{{labels},method="POST",status="200"}} 2' in text
    assert 'route="/judge",method="POST",status="422"} 1' in text
    assert 'cynic_judgments_total{instance="node-test",outcome="created"} 1' in text
    assert 'cynic_judgments_total{instance="node-test",outcome="reused"} 1' in text
    assert f'cynic_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} 3' in text
    assert "cynic_storage_errors_total" in text
    # REFLEX writes first and lets the store decide: both judgments went out, one per query
    # (the second was skipped by the store and read back).
    assert 'cynic_storage_write_queries_total{instance="node-test"} 2' in text
    assert 'cynic_storage_write_records_total{instance="node-test"} 2' in text
    for series in (
        "cynic_llm_calls_in_flight",
        "cynic_llm_timeouts_total",
        "cynic_ws_events_dropped_total",
        "cynic_ws_refused_total",
    ):
        assert f'{series}{{instance="node-test"}} 0' in text, series
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_every_response_names_the_instance(client: TestClient) -> None:
    for r in (
        client.get("/nowhere"),
        client.put("/judge"),
        client.get("/metrics"),
        client.get("/health"),
    ):
        assert r.headers["x-instance-id"] == "node-test"


def test_websocket_stream(client: TestClient) -> None:
    with client.websocket_connect("/ws/stream") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "connected"
        assert hello["instance_id"] == "node-test"
        assert hello["phi"] == pytest.approx(1.618, abs=1e-3)
        assert "ts" in hello
        ws.send_json({"type": "ping"})
        assert ws.receive_json()["type"] == "pong"
        created = client.post("/judge", json={"content": "streamed"}).json()
        event = ws.receive_json()
        assert event["type"] == "JUDGMENT_CREATED"
        assert event["payload"]["judgment_id"] == created["judgment_id"]
        assert "ts" in event
        # a reused judgment is not a new event; the next event is the next creation
        client.post("/judge", json={"content": "streamed"})
        client.post("/judge", json={"content": "streamed 2"})
        assert ws.receive_json()["payload"]["reused"] is False


def test_websocket_drops_what_the_protocol_does_not_define(client: TestClient) -> None:
    with client.websocket_connect("/ws/stream") as ws:
        assert ws.receive_json()["type"] == "connected"
        # None of these gets an answer (the server must not write for every frame it is sent):
        # the first message after them is the pong of the ping that follows them.
        ws.send_text("garbage")
        ws.send_text('{"type": "subscribe", "ping": 1}')
        ws.send_text('"ping"')
        ws.send_json({"type": "pong"})
        ws.send_text("[" * 1500 + "]" * 1500 + "ping")
        ws.send_bytes(b"\xff\xfe ping")
        ws.send_bytes(b'{"type": "ping"}')  # a ping in a binary frame is still a ping
        assert ws.receive_json()["type"] == "pong"
        ws.send_json({"type": "ping", "id": 7})
        assert ws.receive_json()["type"] == "pong"


def test_websocket_message_over_the_limit_closes_1009(tmp_path: Path) -> None:
    settings = Settings(
        instance_id="w",
        cynic_home=tmp_path,
        surreal_url="mem://",
        ollama_url="http://127.0.0.1:1",
        ws_max_message_bytes=64,
    )
    with TestClient(create_app(settings)) as c, c.websocket_connect("/ws/stream") as ws:
        assert ws.receive_json()["type"] == "connected"
        ws.send_text('{"type": "ping"}' + " " * 48)  # 64: at the limit, still a ping
        assert ws.receive_json()["type"] == "pong"
        ws.send_text('{"type": "ping"}' + " " * 49)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1009


def test_websocket_clients_are_capped_per_instance(tmp_path: Path) -> None:
    settings = Settings(
        instance_id="cap",
        cynic_home=tmp_path,
        surreal_url="mem://",
        ollama_url="http://127.0.0.1:1",
        ws_max_clients=2,
        retry_after_s=7,
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:  # may scrape
        with c.websocket_connect("/ws/stream") as a, c.websocket_connect("/ws/stream") as b:
            assert a.receive_json()["type"] == b.receive_json()["type"] == "connected"
            with pytest.raises(WebSocketDenialResponse) as refused:
                c.websocket_connect("/ws/stream").__enter__()
            assert refused.value.status_code == 503
            assert refused.value.headers["retry-after"] == "7"
            assert refused.value.headers["x-instance-id"] == "cap"
            text = c.get("/metrics").text
            assert 'status="503"' in text
            assert 'cynic_ws_refused_total{instance="cap"} 1' in text
            assert 'cynic_ws_clients{instance="cap"} 2' in text
        # the slots are free again once they leave
        with c.websocket_connect("/ws/stream") as again:
            assert again.receive_json()["type"] == "connected"


def test_a_slow_websocket_client_loses_the_oldest_events() -> None:
    hub = EventHub(queue_size=3, max_clients=5)
    queue = hub.subscribe()
    assert queue is not None
    for n in range(10):
        hub.publish("JUDGMENT_CREATED", {"n": n})
    assert [queue.get_nowait()["payload"]["n"] for _ in range(queue.qsize())] == [7, 8, 9]
    assert hub.dropped_total == 7
    others = [hub.subscribe() for _ in range(5)]
    assert others.count(None) == 1  # five clients at most, the first included
    assert hub.refused_total == 1


def test_websocket_server_pings(tmp_path: Path) -> None:
    settings = Settings(
        instance_id="p",
        cynic_home=tmp_path,
        surreal_url="mem://",
        ollama_url="http://127.0.0.1:1",
        ws_ping_interval_s=0.05,
    )
    with TestClient(create_app(settings)) as c, c.websocket_connect("/ws/stream") as ws:
        assert ws.receive_json()["type"] == "connected"
        assert ws.receive_json()["type"] == "ping"


def test_bench_route_only_when_enabled(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/_bench/empty").status_code == 404
    settings = Settings(
        instance_id="b",
        cynic_home=tmp_path,
        surreal_url="mem://",
        ollama_url="http://127.0.0.1:1",
        bench_routes=True,
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/_bench/empty", json=LOAD_TEST_BODY)
        assert r.status_code == 200
        assert r.headers["x-instance-id"] == "b"


def test_storage_down_is_503_with_retry_after(tmp_path: Path) -> None:
    from nodetest_helpers import free_port

    settings = Settings(
        instance_id="d",
        cynic_home=tmp_path,
        surreal_url=f"ws://127.0.0.1:{free_port()}/rpc",
        ollama_url="http://127.0.0.1:1",
        store_timeout_s=1.0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post("/judge", json=LOAD_TEST_BODY)
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) > 0
        h = c.get("/health")
        assert h.status_code == 503
        assert h.json()["status"] == "unavailable"
        assert h.json()["storage"] == {"surreal": "disconnected"}
        assert "retry-after" in h.headers
        # bad input is still 422, not 503: validation comes first
        assert c.post("/judge", json={"content": None}).status_code == 422
    assert read_journal(tmp_path) == []


def test_unwritable_journal_is_503_then_recovers(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.post("/judge", json={"content": "journaled before the fault"})
    assert first.status_code == 200
    path = settings.journal_path
    aside = path.with_name("aside.jsonl")

    def efbig(fd: int, line: bytes) -> int:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    # The fault: appends fail (as under a file-size limit), and the file cannot be opened again
    # (a directory in its place: root ignores a read-only mode, not EISDIR).
    monkeypatch.setattr(Journal, "_write", staticmethod(efbig))
    path.rename(aside)
    path.mkdir()
    r = client.post("/judge", json={"content": "during the fault"})
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["detail"].startswith("journal unavailable: ")
    h = client.get("/health")
    assert h.status_code == 503
    assert h.json()["status"] == "unavailable"
    assert h.json()["journal"]["status"] == "unwritable"
    assert "journal_errors_total" in client.get("/metrics").text

    # The fix, without a restart: the next request is journaled and answered 200 again.
    monkeypatch.undo()
    path.rmdir()
    aside.rename(path)
    h = client.get("/health")
    assert h.status_code == 200
    assert h.json()["journal"] == {"status": "writable"}
    after = client.post("/judge", json={"content": "after the fault"})
    assert after.status_code == 200
    assert after.json()["reused"] is False
    # The judgment answered 503 was stored: a retry gets it, reused, with 200.
    retry = client.post("/judge", json={"content": "during the fault"})
    assert retry.status_code == 200
    assert retry.json()["reused"] is True
    ids = [line["judgment_id"] for line in read_journal(settings.cynic_home)]
    # The judgment answered 503 was owed its line: written before the next one (journal.py).
    assert ids == [
        first.json()["judgment_id"],
        retry.json()["judgment_id"],
        after.json()["judgment_id"],
    ]
