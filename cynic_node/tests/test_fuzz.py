"""Property-based: no request body, however malformed, gets anything but 200, 413 or 422.

Bodies are drawn three ways: raw bytes; JSON values of any shape; and objects built from the
contract's own fields with values of every JSON type, valid ones included (mixed-case
enumerations, boundary numbers), so the fuzzer reaches the judge and the store as well as the
validator. Texts include lone surrogates (JSON "\\ud800", which Python decodes to a str that
UTF-8 cannot encode) and control characters, at every level: MICRO and MACRO run against an
Ollama stand-in that answers, so the texts reach the LLM request too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cynic_node.api import create_app
from cynic_node.config import Settings
from cynic_node.llm import OllamaPool
from cynic_node.models import ANALYSES, LEVELS, REALITIES, TIME_DIMS
from cynic_node.scoring import verdict_for

FIELDS = ("content", "reality", "analysis", "context", "time_dim", "level", "budget_usd", "lod")
LIMIT = 16 * 1024

# Any code point, lone surrogates and controls often (st.text() alone never draws surrogates).
any_char = (
    st.characters(exclude_categories=())
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
    | st.characters(max_codepoint=0x1F, exclude_categories=())
)
texts = st.text(any_char, max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mixed_case(words: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).flatmap(
        lambda w: st.lists(st.booleans(), min_size=len(w), max_size=len(w)).map(
            lambda flips: "".join(c.lower() if f else c for c, f in zip(w, flips, strict=True))
        )
    )


field_values: dict[str, st.SearchStrategy[Any]] = {
    "content": json_values,
    "reality": mixed_case(REALITIES) | json_values,
    "analysis": mixed_case(ANALYSES) | json_values,
    "context": st.text(any_char, max_size=30) | json_values,
    "time_dim": mixed_case(TIME_DIMS) | json_values,
    "level": mixed_case((*LEVELS, "META")) | json_values,
    "budget_usd": st.floats(min_value=-1, max_value=2) | st.integers(-3, 3) | json_values,
    "lod": st.integers(-2, 5) | json_values,
}
contract_objects = st.fixed_dictionaries({}, optional=dict(field_values)).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=2).map(
        lambda extra: {**extra, **d}
    )
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    cfg = Settings(
        instance_id="fuzz",
        cynic_home=home,
        surreal_url="mem://",
        ollama_url="http://127.0.0.1:1",
        max_body_bytes=LIMIT,
    )
    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        yield client


def check(client: TestClient, body: bytes) -> dict[str, Any]:
    r = client.post("/judge", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 413, 422), (r.status_code, r.text[:300], body[:200])
    assert r.headers["x-instance-id"] == "fuzz"
    payload = r.json()
    if r.status_code == 422:
        assert payload["fields"], payload
        assert set(payload["fields"]) <= {*FIELDS, "body"}
    elif r.status_code == 413:
        assert len(body) > LIMIT
    else:
        assert 0 <= payload["q_score"] <= 100
        assert payload["confidence"] <= 0.618
        assert payload["verdict"] == verdict_for(payload["q_score"])
    return payload  # type: ignore[no-any-return]


fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@fuzz
@given(body=st.binary(max_size=300))
def test_random_bytes(fuzz_client: TestClient, body: bytes) -> None:
    check(fuzz_client, body)


@fuzz
@given(value=json_values)
def test_any_json_value(fuzz_client: TestClient, value: Any) -> None:
    check(fuzz_client, json.dumps(value).encode())


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(obj=contract_objects)
def test_contract_shaped_objects(fuzz_client: TestClient, obj: dict[str, Any]) -> None:
    check(fuzz_client, json.dumps(obj).encode())


@fuzz
@given(text=st.text(max_size=200), pad=st.integers(0, LIMIT))
def test_any_content_text_and_size(fuzz_client: TestClient, text: str, pad: int) -> None:
    # Lone surrogates, control characters, huge bodies at and around the limit.
    check(fuzz_client, json.dumps({"content": text + " " * pad}).encode())


# MICRO and MACRO, with an Ollama that answers: every text reaches the LLM call path.
LLM_ANSWER = {"FIDELITY": 70, "PHI": 72, "VERIFY": 64, "CULTURE": 80, "BURN": 75}


def ollama_standin(request: httpx.Request) -> httpx.Response:
    """Ollama's /api/chat, strict about what it is sent: UTF-8 JSON with the prompt in it."""
    if request.url.path == "/api/tags":
        return httpx.Response(200, json={"models": [{"name": "gemma2:2b"}]})
    chat = json.loads(request.content.decode("utf-8"))  # strict: what Ollama would accept
    assert chat["messages"][-1]["content"]
    return httpx.Response(200, json={"message": {"content": json.dumps(LLM_ANSWER)}})


@pytest.fixture(scope="module")
def llm_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home: Path = tmp_path_factory.mktemp("fuzz-llm")
    cfg = Settings(
        instance_id="fuzz",
        cynic_home=home,
        surreal_url="mem://",
        ollama_url="http://ollama.test",
        max_body_bytes=LIMIT,
    )
    llm = OllamaPool(
        cfg.ollama_url, cfg.model, 5.0, transport=httpx.MockTransport(ollama_standin)
    )
    with TestClient(create_app(cfg, llm=llm), raise_server_exceptions=False) as client:
        yield client


def check_llm_level(client: TestClient, body: bytes, text: str) -> None:
    payload = check(client, body)
    if text.strip():  # an empty content is judged at REFLEX, whatever the level
        # the stand-in answered: the judgment went through the LLM, not around it
        assert payload["level_used"] in ("MICRO", "MACRO"), payload
        assert payload["llm_calls"] >= 1


@fuzz
@given(
    text=texts | st.text(max_size=200),
    context=st.none() | texts,
    level=mixed_case(("MICRO", "MACRO")),
)
def test_any_text_at_the_llm_levels(
    llm_client: TestClient, text: str, context: str | None, level: str
) -> None:
    req: dict[str, Any] = {"content": text, "level": level}
    if context is not None:
        req["context"] = context
    check_llm_level(llm_client, json.dumps(req).encode(), text)


@pytest.mark.parametrize("level", ["REFLEX", "MICRO", "MACRO"])
@pytest.mark.parametrize(
    "escaped",
    [r"\ud800", r"lone \udfff low", r"\udbff\udbff", "nul \\u0000 and \\u001b esc"],
)
def test_text_utf8_cannot_encode_at_every_level(
    llm_client: TestClient, level: str, escaped: str
) -> None:
    # Written as JSON escapes, as a client sends them: Python's json makes a lone surrogate.
    body = f'{{"content": "{level} {escaped}", "context": "{escaped}", "level": "{level}"}}'
    r = llm_client.post("/judge", content=body.encode())
    assert r.status_code == 200, r.text
    if level != "REFLEX":
        assert r.json()["level_used"] in ("MICRO", "MACRO")
