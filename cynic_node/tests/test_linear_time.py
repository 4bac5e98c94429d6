"""Judging costs time linear in the input, for every reality, whatever the text.

A pattern that backtracks turns a crafted body into seconds or hours of one instance's CPU
(".", "1", ")->" or "catch(" repeated: 30 KiB took 1.5-10.7 s before the rewrite, 2 ms after).
Each family below comes from one of features.py's patterns: its literal pieces repeated, or a
long run of one character followed by what makes the match fail. Cost is compared within one
run at two sizes, four times apart: linear work costs about 4 times more, quadratic 16 times.
No absolute time is asserted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cynic_node.models import REALITIES, parse_judge_request
from cynic_node.scoring import score_reflex

SIZE = 16 * 1024  # characters at the small size; the large one is 4x
SIZE_RATIO = 4
# Linear is 4; the slack absorbs noise from other processes on a 2-core machine. A quadratic
# family measures 15-16 here, so it cannot hide under this bound.
MAX_COST_RATIO = 8.0


def _repeat(unit: str) -> Callable[[int], str]:
    return lambda n: unit * (n // len(unit) + 1)


def _run_then(run: str, tail: str) -> Callable[[int], str]:
    return lambda n: run * n + tail


# family name -> text of about n characters; the comment names the pattern it attacks.
FAMILIES: dict[str, Callable[[int], str]] = {
    "sentence-end dots": _run_then(".", "a"),  # _SENTENCE_END
    "sentence-end bangs": _run_then("!", "x"),  # _SENTENCE_END
    "multiplier digits": _run_then("1", "y"),  # _MULTIPLIER
    "multiplier arabic-indic digits": _run_then("\u0661", " "),  # _MULTIPLIER (\d is Unicode)
    "return arrow": _repeat(")->"),  # _ANNOTATED, first branch
    "return arrow with spaces": _run_then(") ->", " " * 4),  # _ANNOTATED
    "typed close": _repeat("): a"),  # _ANNOTATED, second branch
    "empty catch": _repeat("catch("),  # _EMPTY_CATCH
    "catch then spaces": _run_then("catch ", "("),  # _EMPTY_CATCH
    "except colons": lambda n: "except" + ":" * n,  # _EXCEPT_PASS
    "except then blank lines": lambda n: "except:" + " \n" * (n // 2),  # _EXCEPT_PASS
    "bare except lines": _repeat("  except :\n"),  # _BARE_EXCEPT
    "assert names": _repeat(" assertA"),  # _TEST
    "assert long name": lambda n: " assertA" + "a" * n,  # _TEST
    "eval spaces": lambda n: "eval" + " " * n,  # _DYNAMIC
    "shell equals": _repeat("shell ="),  # _DYNAMIC
    "markers": _repeat("TODO"),  # _MARKER
    "secret spaces": lambda n: "password" + " " * n + "=",  # _SECRET
    "secret quotes": _repeat("api_key='"),  # _SECRET
    "debug prints": _repeat("print "),  # _DEBUG
    "commented if": lambda n: "# if " + "x" * n,  # _COMMENTED_CODE
    "commented lines": _repeat("# for x\n"),  # _COMMENTED_CODE
    "function keyword spaces": lambda n: "def" + " " * n,  # _FUNC
    "wildcard from": lambda n: "from " + "a " * (n // 2),  # _WILDCARD
    "identifiers": _repeat("a_"),  # _IDENT
    "open brackets": _run_then("([{", ""),  # bracket balance
    "deep indent": _repeat("\t " * 40 + "x\n"),  # the line scan
    "one long line": _run_then("x", "\n"),  # the line scan, duplicates
    "repeated lines": _repeat("value = compute(1)\n"),  # duplicates
    "line separators": _run_then("\u2028", "assert"),  # splitlines' other line breaks
    "absolutes": _repeat("always "),  # _ABSOLUTE
    "hedges": _repeat("i think "),  # _HEDGE
    "evidence digit spaces": lambda n: "1" + " " * n + "x",  # _EVIDENCE
    "evidence brackets": lambda n: "[" + "1" * n,  # _EVIDENCE
    "hype": _repeat("to the moon "),  # _HYPE
    "capitals": _repeat("ABC "),  # caps words
    "paragraphs": _repeat("\n\n"),  # paragraphs
    "words": _repeat("\u00e9t\u00e9 "),  # _WORD
}


def _judge_cost(body: bytes, repeats: int = 3) -> float:
    """Best of `repeats` timings of parsing and REFLEX-judging one request body."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        req = parse_judge_request(body)
        score_reflex(req.content_text, req.reality)
        best = min(best, time.perf_counter() - started)
    return best


def _body(text: str, reality: str) -> bytes:
    return json.dumps({"content": text, "reality": reality}).encode()


def _cost_ratio(make: Callable[[int], str], reality: str, size: int) -> float:
    small = _body(make(size), reality)
    large = _body(make(size * SIZE_RATIO), reality)
    ratio = _judge_cost(large) / _judge_cost(small)
    if ratio > MAX_COST_RATIO:
        # Measure once more, longer, before calling it superlinear: a burst of another
        # process's work can land on one timing.
        ratio = _judge_cost(large, repeats=7) / _judge_cost(small, repeats=7)
    return ratio


@pytest.mark.parametrize("reality", sorted(REALITIES))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_adversarial_family_costs_linear_time(family: str, reality: str) -> None:
    ratio = _cost_ratio(FAMILIES[family], reality, SIZE)
    assert ratio <= MAX_COST_RATIO, (
        f"{family!r} ({reality}): 4x the text cost {ratio:.1f}x the time (linear is 4)"
    )


# Pieces of every pattern in features.py, and the characters that end (or fail) their runs.
_PIECES = [
    "def test_", "assert", "assertA", "unittest", "describe(", "it(", "expect(", "t.Run(",
    "#[test]", "@Test", "eval", "exec", "os.system", "shell", "=", "True", "pickle.load",
    "__import__", "new Function", "except", "catch", "pass", "TODO", "password", "api_key",
    "print", "console.log", "debugger", "#", "//", "def ", "class ", "import ", "from ",
    "return", "if ", "for ", "const ", "function", "fn ", "->", "always", "risk-free", "100%",
    "maybe", "i think", "according to", "sources:", "study", "http://", "[1]", "moon",
    "to the moon", "don't miss", "x", "1", ".", "!", "?", ":", "(", ")", "{", "}", "[", "]",
    "<", ">", "*", "'", '"', " ", "\t", "\n", "\r", "\u2028", "\u0661", "\u00e9", "A", "_",
]
_piece = st.sampled_from(_PIECES)
# A unit repeated, or a long run of one piece followed by a short tail: the two shapes that
# make a backtracking pattern rescan.
_adversarial_unit = st.one_of(
    st.lists(_piece, min_size=1, max_size=4).map("".join).map(lambda u: ("repeat", u, "")),
    st.tuples(_piece, st.lists(_piece, max_size=2).map("".join)).map(
        lambda rt: ("run", rt[0], rt[1])
    ),
)


def _text(kind: str, unit: str, tail: str, n: int) -> str:
    if kind == "repeat":
        return unit * (n // len(unit) + 1)
    return unit * (n // len(unit) + 1) + tail


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(shape=_adversarial_unit, reality=st.sampled_from(sorted(REALITIES)))
def test_generated_adversarial_text_costs_linear_time(
    shape: tuple[str, str, str], reality: str
) -> None:
    kind, unit, tail = shape
    ratio = _cost_ratio(lambda n: _text(kind, unit, tail, n), reality, SIZE // 2)
    assert ratio <= MAX_COST_RATIO, (
        f"{kind} {unit!r}+{tail!r} ({reality}): 4x the text cost {ratio:.1f}x the time"
    )
