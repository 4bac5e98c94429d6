"""The POST /judge request: parsing, validation, canonical form and cell id.

Validation is written out by hand rather than with a pydantic model because the contract wants
strict JSON types (no "0.5" for a number, no true for an integer, no NaN), case-insensitive
enumerations, and every failure reported as a 422 that names its field; doing it directly keeps
those rules visible in one place and costs a few microseconds per request.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

REALITIES = ("CODE", "SOLANA", "MARKET", "SOCIAL", "HUMAN", "CYNIC", "COSMOS")
ANALYSES = ("PERCEIVE", "JUDGE", "DECIDE", "ACT", "LEARN", "ACCOUNT", "EMERGE")
TIME_DIMS = ("PAST", "PRESENT", "FUTURE", "CYCLE", "TREND", "EMERGENCE", "TRANSCENDENCE")
LEVELS = ("REFLEX", "MICRO", "MACRO")
LOD_MIN, LOD_MAX = 0, 3
DEFAULT_BUDGET_USD = 0.01


class RequestError(Exception):
    """The request is invalid; `errors` lists (field, message, type) for a 422 body."""

    def __init__(self, errors: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m, _ in errors))
        self.errors = errors

    def body(self) -> dict[str, Any]:
        # FastAPI's own 422 shape (detail[].loc) so that existing clients read it, plus a flat
        # list of the offending fields.
        return {
            "detail": [
                {"loc": ["body", f] if f != "body" else ["body"], "msg": m, "type": t}
                for f, m, t in self.errors
            ],
            "fields": [f for f, _, _ in self.errors],
        }


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    content: Any
    content_text: str  # the content as judged: the string itself, or its canonical JSON
    reality: str = "CODE"
    analysis: str = "JUDGE"
    context: str = ""
    time_dim: str | None = None
    level: str | None = None
    budget_usd: float = DEFAULT_BUDGET_USD
    lod: int = 1

    @property
    def cell_id(self) -> str:
        return cell_id(self.content, self.reality, self.analysis, self.context, self.time_dim)


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def canonical_json(value: Any) -> str:
    """One text per JSON value: sorted keys, no spaces, ASCII escapes.

    ensure_ascii keeps lone surrogates (legal in a JSON string escape, illegal in UTF-8) from
    breaking the hash, the log line or the store.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _nfc(text: str) -> str:
    # The quick check answers at memory speed for ASCII and already-composed text.
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def canonical_content(value: Any) -> Any:
    """The one spelling of a logical cell's content (docs/CYNIC-API.md, "One cell, one id").

    Strings (object keys too) in Unicode NFC, so composed and decomposed accents are one cell;
    a number with an integral value as that integer, so 1, 1.0, 1e0 and -0.0 are one cell
    (other numbers are IEEE doubles, as JSON parsers read them). ASCII text, integers and
    non-integral numbers are unchanged, and so are the ids of cells made only of them.
    Raises ValueError when two keys of one object become the same key.
    """
    if isinstance(value, str):
        return _nfc(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [canonical_content(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _nfc(key)
            if name in out:
                raise ValueError(f"two keys are the same key {name[:40]!r} once normalized")
            out[name] = canonical_content(item)
        return out
    return value  # int, bool


def cell_id(content: Any, reality: str, analysis: str, context: str, time_dim: str | None) -> str:
    """Hash of the canonical form of the cell: the same cell gives the same id on every node."""
    canonical = canonical_json([content, reality, analysis, context, time_dim])
    # 128 bits: collisions are out of reach, and the record id stays short.
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def _enum(
    data: dict[str, Any],
    name: str,
    allowed: tuple[str, ...],
    default: str | None,
    errors: list[tuple[str, str, str]],
) -> str | None:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        errors.append((name, f"must be a string, one of {', '.join(allowed)}", "type_error"))
        return default
    upper = value.strip().upper()
    if upper not in allowed:
        errors.append((name, f"{value[:40]!r} is not one of {', '.join(allowed)}", "enum"))
        return default
    return upper


def parse_judge_request(body: bytes) -> JudgeRequest:
    """Parse and validate a POST /judge body; raise RequestError naming every bad field."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; very deep nesting recurses.
        raise RequestError(
            [("body", f"body is not valid JSON: {str(exc)[:120]}", "json_invalid")]
        ) from None
    if not isinstance(data, dict):
        raise RequestError([("body", "body must be a JSON object", "type_error")])

    errors: list[tuple[str, str, str]] = []

    # What is judged and hashed is the cell's canonical form, so one logical cell has one id
    # and one judgment, whichever spelling arrives first.
    content = data.get("content")
    content_text = ""
    if content is None:
        errors.append(("content", "field required (any JSON value but null)", "missing"))
    elif isinstance(content, str):
        content = content_text = _nfc(content)
    else:
        try:
            content = canonical_content(content)
            content_text = canonical_json(content)
        except ValueError as exc:
            errors.append(("content", f"content cannot be judged: {exc}", "value_error"))
        except RecursionError:
            errors.append(("content", "content is nested too deeply", "value_error"))

    reality = _enum(data, "reality", REALITIES, "CODE", errors)
    analysis = _enum(data, "analysis", ANALYSES, "JUDGE", errors)
    time_dim = _enum(data, "time_dim", TIME_DIMS, None, errors)

    level: str | None = None
    raw_level = data.get("level")
    if isinstance(raw_level, str) and raw_level.strip().upper() == "META":
        errors.append(("level", "META is not served by this node", "enum"))
    else:
        level = _enum(data, "level", LEVELS, None, errors)

    context = data.get("context")
    if context is None:
        context = ""
    elif not isinstance(context, str):
        errors.append(("context", "must be a string", "type_error"))
        context = ""
    else:
        context = _nfc(context)

    budget = data.get("budget_usd")
    if budget is None:
        budget = DEFAULT_BUDGET_USD
    elif isinstance(budget, bool) or not isinstance(budget, int | float):
        errors.append(("budget_usd", "must be a number", "type_error"))
        budget = DEFAULT_BUDGET_USD
    elif not (math.isfinite(budget) and budget >= 0):
        errors.append(("budget_usd", "must be a finite number >= 0", "value_error"))
        budget = DEFAULT_BUDGET_USD

    lod = data.get("lod")
    if lod is None:
        lod = 1
    elif isinstance(lod, bool) or not isinstance(lod, int):
        errors.append(("lod", "must be an integer", "type_error"))
        lod = 1
    elif not LOD_MIN <= lod <= LOD_MAX:
        errors.append(("lod", f"must be between {LOD_MIN} and {LOD_MAX}", "value_error"))
        lod = 1

    if errors:
        raise RequestError(errors)
    # Both have non-None defaults; the asserts tell the type checker.
    assert reality is not None
    assert analysis is not None
    return JudgeRequest(
        content=content,
        content_text=content_text,
        reality=reality,
        analysis=analysis,
        context=context,
        time_dim=time_dim,
        level=level,
        budget_usd=float(budget),
        lod=lod,
    )
