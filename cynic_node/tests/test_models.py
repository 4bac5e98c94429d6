"""Request parsing: strict types, case-insensitive enumerations, a named field per error."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

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


# --- one logical cell, one cell_id (docs/CYNIC-API.md, "One cell, one id") -------------------


def _id(raw: str) -> str:
    return parse_judge_request(raw.encode()).cell_id


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ('{"content": 1}', '{"content": 1.0}'),
        ('{"content": 1}', '{"content": 1e0}'),
        ('{"content": 1}', '{"content": 10E-1}'),
        ('{"content": 0}', '{"content": -0.0}'),
        ('{"content": 0.5}', '{"content": 5e-1}'),
        ('{"content": 10000000000000000000000}', '{"content": 1e22}'),
        ('{"content": {"n": [1, {"m": 2}]}}', '{"content": {"n": [1.0, {"m": 2.00}]}}'),
        # NFC and NFD spellings of one text: in the content, its keys, and the context.
        ('{"content": "caf\\u00e9"}', '{"content": "cafe\\u0301"}'),
        ('{"content": {"caf\\u00e9": 1}}', '{"content": {"cafe\\u0301": 1}}'),
        ('{"content": ["\\u00c5"]}', '{"content": ["A\\u030a"]}'),
        (
            '{"content": "x", "context": "na\\u00efve"}',
            '{"content": "x", "context": "nai\\u0308ve"}',
        ),
    ],
)
def test_one_logical_cell_has_one_id(one: str, other: str) -> None:
    assert _id(one) == _id(other)
    # The judged text is the canonical one too, so either spelling gets the same scores.
    assert parse_judge_request(one.encode()).content_text == (
        parse_judge_request(other.encode()).content_text
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ('{"content": 1}', '{"content": 1.5}'),
        ('{"content": 1}', '{"content": true}'),
        ('{"content": 1}', '{"content": "1"}'),
        ('{"content": 0}', '{"content": false}'),
        ('{"content": 10000000000000000000001}', '{"content": 1e22}'),  # integers are exact
        ('{"content": "cafe"}', '{"content": "caf\\u00e9"}'),
        ('{"content": "a b"}', '{"content": "a  b"}'),  # byte-different text stays different
    ],
)
def test_different_cells_keep_different_ids(one: str, other: str) -> None:
    assert _id(one) != _id(other)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Computed by the node before canonical numbers and NFC (commit cd0482a): ids of cells
        # whose canonical form did not change must not move, or stored judgments are orphaned.
        ('{"content": "def f(): return 1"}', "d045e9de4aad78160e530650d81a014c"),
        (
            '{"content": {"a": [1, 2.5, "x"], "b": null, "c": true}, "reality": "market",'
            ' "context": "ctx"}',
            "6d0e0297ea4f5007becb73694ebbcb17",
        ),
        ('{"content": "caf\\u00e9", "time_dim": "past"}', "c9fed6289f23527f520a4c25661626c9"),
        ('{"content": 0.1}', "7e37e7b56214a7e3ba32e237955b3c2b"),
    ],
)
def test_ids_of_already_canonical_cells_are_stable(raw: str, expected: str) -> None:
    assert _id(raw) == expected


def test_keys_that_become_one_key_are_refused() -> None:
    with pytest.raises(RequestError) as info:
        parse_judge_request(b'{"content": {"caf\\u00e9": 1, "cafe\\u0301": 2}}')
    assert info.value.body()["fields"] == ["content"]


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from("ae\u00e9\u0301\u00c5A\u030a\u00ef\u0308 x")),
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["k", "\u00e9", "z"]), inner, max_size=3),
    ),
    max_leaves=12,
)


def _respell(value: Any) -> Any:
    """Another spelling of the same logical value: NFD text, integral numbers as floats."""
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and abs(value) < 2**53:
        return float(value)
    if isinstance(value, list):
        return [_respell(v) for v in value]
    if isinstance(value, dict):
        return {unicodedata.normalize("NFD", k): _respell(v) for k, v in value.items()}
    return value


@settings(max_examples=200, deadline=None)
@given(content=_json_value, context=st.sampled_from(["", "\u00e9t\u00e9", "plain"]))
def test_any_respelling_of_a_cell_keeps_its_id(content: Any, context: str) -> None:
    assume(content is not None)  # null content is refused, not a cell
    body = {"content": content, "context": context}
    respelled = {"content": _respell(content), "context": unicodedata.normalize("NFD", context)}
    assert parse(body).cell_id == parse(respelled).cell_id
