"""Request parsing: strict types, case-insensitive enumerations, a named field per error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cynic_node.models import RequestError, canonical_json, cell_id, parse_judge_request


def parse(body: Any) -> Any:
    return parse_judge_request(json.dumps(body).encode())


def fields_of(body: bytes) -> list[str]:
    with pytest.raises(RequestError) as info:
        parse_judge_request(body)
    return [f for f, _, _ in info.value.errors]


def test_defaults() -> None:
    req = parse({"content": "x = 1"})
    assert (req.reality, req.analysis, req.context, req.time_dim) == ("CODE", "JUDGE", "", None)
    assert (req.level, req.budget_usd, req.lod) == (None, 0.01, 1)


def test_enumerations_are_case_insensitive() -> None:
    req = parse(
        {
            "content": "x",
            "reality": "market",
            "analysis": "Decide",
            "level": "micro",
            "time_dim": "future",
        }
    )
    assert (req.reality, req.analysis, req.level, req.time_dim) == (
        "MARKET",
        "DECIDE",
        "MICRO",
        "FUTURE",
    )


def test_non_string_content_is_judged_as_canonical_json() -> None:
    req = parse({"content": {"b": [1, 2], "a": "é"}})
    assert req.content_text == '{"a":"\\u00e9","b":[1,2]}'


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"", "body"),
        (b"\xff\xfe", "body"),
        (b"[1, 2]", "body"),
        (b'"just a string"', "body"),
        (b'{"content": NaN}', "body"),
        (b'{"content": Infinity}', "body"),
        (b"[" * 100_000, "body"),
        (b"{}", "content"),
        (b'{"content": null}', "content"),
        (b'{"content": "x", "reality": "MOON"}', "reality"),
        (b'{"content": "x", "reality": 3}', "reality"),
        (b'{"content": "x", "analysis": "GUESS"}', "analysis"),
        (b'{"content": "x", "analysis": ["JUDGE"]}', "analysis"),
        (b'{"content": "x", "level": "META"}', "level"),
        (b'{"content": "x", "level": "meta"}', "level"),
        (b'{"content": "x", "level": "TURBO"}', "level"),
        (b'{"content": "x", "time_dim": "YESTERDAY"}', "time_dim"),
        (b'{"content": "x", "context": 12}', "context"),
        (b'{"content": "x", "budget_usd": -0.01}', "budget_usd"),
        (b'{"content": "x", "budget_usd": "0.01"}', "budget_usd"),
        (b'{"content": "x", "budget_usd": true}', "budget_usd"),
        (b'{"content": "x", "budget_usd": 1e999}', "budget_usd"),
        (b'{"content": "x", "lod": 4}', "lod"),
        (b'{"content": "x", "lod": -1}', "lod"),
        (b'{"content": "x", "lod": 1.5}', "lod"),
        (b'{"content": "x", "lod": "1"}', "lod"),
        (b'{"content": "x", "lod": false}', "lod"),
    ],
)
def test_every_bad_input_names_its_field(body: bytes, field: str) -> None:
    assert field in fields_of(body)


def test_all_bad_fields_are_reported_together() -> None:
    got = fields_of(b'{"reality": "X", "analysis": "Y", "lod": 9}')
    assert got == ["content", "reality", "analysis", "lod"]


def test_error_body_has_fastapi_shape() -> None:
    with pytest.raises(RequestError) as info:
        parse_judge_request(b'{"content": "x", "analysis": "NOPE"}')
    body = info.value.body()
    assert body["fields"] == ["analysis"]
    assert body["detail"][0]["loc"] == ["body", "analysis"]


def test_cell_id_is_canonical() -> None:
    a = parse({"content": {"x": 1, "y": 2}, "reality": "code"})
    b = parse({"reality": "CODE", "content": {"y": 2, "x": 1}, "lod": 3, "level": "REFLEX"})
    assert a.cell_id == b.cell_id  # key order, case, level and lod are not part of the cell


@pytest.mark.parametrize(
    "change",
    [
        {"content": "other"},
        {"reality": "MARKET"},
        {"analysis": "DECIDE"},
        {"context": "c"},
        {"time_dim": "PAST"},
        {"content": 1},
        {"content": "1"},
    ],
)
def test_cell_id_separates_cells(change: dict[str, Any]) -> None:
    base = {"content": "x"}
    assert parse(base).cell_id != parse({**base, **change}).cell_id


def test_cell_id_survives_lone_surrogates() -> None:
    req = parse_judge_request(b'{"content": "\\ud800 broken"}')
    assert len(req.cell_id) == 32
    assert canonical_json("\ud800") == '"\\ud800"'
    assert cell_id("\ud800 broken", "CODE", "JUDGE", "", None) == req.cell_id
