"""Cheap, deterministic observations of a piece of content, for the REFLEX dogs.

Two profiles: code (for reality CODE) and prose (every other reality: posts, market notes,
human statements). Each is a handful of compiled regular expressions and one pass over the
lines, so a 1 KB input costs tens of microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Performance note: sre can skip ahead with a literal prefix or a leading word boundary
# followed by one group; an alternation whose branches each start with \b is scanned branch by
# branch at every position (8x slower). Hence the factored forms below, and case-insensitive
# patterns that run on a lowered copy instead of using (?i).
#
# Linear time (hostile input): a pattern that starts a match at X and then scans a class that
# also holds X rescans the same tail from every X when the match fails, so "catch(" or ")->"
# repeated 100,000 times costs 10^10 steps. Every scan below stops at the next possible start
# (the class excludes it, or a lookbehind starts only at the beginning of a run), and
# possessive quantifiers (Python 3.11+) keep a failed scan from being retried shorter.
# tests/test_linear_time.py holds every pattern to that, family by family.

# --- code -----------------------------------------------------------------------------------

_TEST = re.compile(
    r"\b(?:def test_|assert\b|assert[A-Z]\w*\(|unittest\b|pytest\b|describe\(|it\(|"
    r"expect\(|t\.Run\()|#\[test\]|@Test\b"
)
# Code built or run from strings, a shell, unpickling: the content cannot be verified by reading.
_DYNAMIC = re.compile(
    r"\b(?:eval\s*\(|exec\s*\(|os\.system\s*\(|shell\s*=\s*True|pickle\.loads?\s*\(|"
    r"__import__\s*\(|new Function\s*\()"
)
_BARE_EXCEPT = re.compile(r"^[ \t]*except\s*:", re.MULTILINE)
_EMPTY_CATCH = re.compile(r"catch\s*\([^()]*+\)\s*\{\s*\}")  # a catch's parameter holds no "("
_EXCEPT_PASS = re.compile(r"^[ \t]*except\b[^\n]*:\s*\n[ \t]*pass\b", re.MULTILINE)
_MARKER = re.compile(r"\b(?:TODO|FIXME|XXX|HACK)\b")
_SECRET = re.compile(  # runs on the lowered text
    r"\b(?:password|passwd|secret|api_?key|access_?token|private_?key)\b\s*[:=]\s*[\"'][^\"'\s]{4,}"
)
_DEBUG = re.compile(r"\b(?:print\s*\(|console\.log\s*\(|debugger\b|pdb\.set_trace\s*\()")
_COMMENTED_CODE = re.compile(
    r"^[ \t]*(?:#|//)[ \t]*(?:def |class |import |from \S+ import |return\b|if .*:|for .*:|"
    r"print\(|var |let |const )",
    re.MULTILINE,
)
_FUNC = re.compile(r"\b(?:def|function|fn|func)[ \t]+\w")
# A return type annotation: Python "def f(...) -> T:", Rust "fn f(...) -> T {", TS "): T {".
# The type stops at ")": a type with parentheses, "impl Fn(i32) -> i32 {", counts from its last ")".
_ANNOTATED = re.compile(r"\)\s*(?:->\s*+[^\n:{)]++[:{]|:\s*[A-Za-z][\w<>\[\]]*\s*\{)")
_WILDCARD = re.compile(
    r"^[ \t]*from[ \t]+\S+[ \t]+import[ \t]+\*|^[ \t]*import[ \t]+\*", re.MULTILINE
)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_COMMENT_PREFIXES = ("#", "//", "/*", "*", "--")

# --- prose (all run on the lowered text) -------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++(?:\s|$)")
_ABSOLUTE = re.compile(
    r"\b(?:always|never|guaranteed?|certainly|definitely|100%|risk[- ]free|no risk|everyone|"
    r"nobody|proven|undeniabl[ey])"
)
_HEDGE = re.compile(r"\b(?:maybe|perhaps|might|could|likely|unlikely|probably|i think|seems?)\b")
_EVIDENCE = re.compile(
    r"\b(?:according to|sources?:|cit(?:ed?|ation)|stud(?:y|ies)|data)\b|https?://|\d\s*%|\[\d+\]"
)
_HYPE = re.compile(
    r"\b(?:moon(?:ing)?|pump|lambo|to the moon|free money|get rich|act now|don'?t miss|"
    r"last chance|huge gains|wagmi|gem)\b"
)
_ABSOLUTE_NEEDLES = (
    "always",
    "never",
    "guarantee",
    "certain",
    "definite",
    "100%",
    "risk",
    "everyone",
    "nobody",
    "proven",
    "undeniab",
)
_HEDGE_NEEDLES = ("maybe", "perhaps", "might", "could", "likely", "probabl", "think", "seem")
_EVIDENCE_NEEDLES = ("according", "source", "cit", "stud", "data", "http", "%", "[")
_HYPE_NEEDLES = (
    "moon",
    "pump",
    "lambo",
    "free money",
    "get rich",
    "act now",
    "miss",
    "last chance",
    "huge gains",
    "wagmi",
    "gem",
)
_MULTIPLIER = re.compile(r"(?<!\d)\d++x\b")  # "100x"


def _count(pattern: re.Pattern[str], text: str, needles: tuple[str, ...]) -> int:
    """Matches of pattern, skipping the regex when none of its literal needles occurs.

    `needle in text` runs at memory speed; most patterns look for things clean content does
    not contain, so this skips most of the regex work.
    """
    for needle in needles:
        if needle in text:
            return len(pattern.findall(text))
    return 0


@dataclass(frozen=True, slots=True)
class CodeFeatures:
    lines: int  # non-empty lines
    comment_lines: int
    docstrings: int
    tests: int
    dynamic: int
    swallowed: int  # bare except / except: pass / empty catch
    markers: int  # TODO, FIXME, XXX, HACK
    secrets: int
    debug: int
    commented_code: int
    long_lines: int
    max_depth: int
    mixed_indent: bool
    duplicate_ratio: float
    functions: int
    annotated: int
    wildcard_imports: int
    short_ident_ratio: float
    bracket_imbalance: int


@dataclass(frozen=True, slots=True)
class ProseFeatures:
    words: int
    sentences: int
    unique_ratio: float
    absolute: int
    hedges: int
    evidence: int
    hype: int
    exclamations: int
    caps_words: int
    paragraphs: int


def code_features(text: str) -> CodeFeatures:
    comment_lines = long_lines = max_indent = 0
    tab_lines = space_lines = 0
    seen: set[str] = set()
    repeated = candidates = 0
    non_empty = 0
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        non_empty += 1
        if stripped.startswith(_COMMENT_PREFIXES):
            comment_lines += 1
        if len(raw) > 100:
            long_lines += 1
        lead = raw[: len(raw) - len(raw.lstrip())]
        if lead:
            if "\t" in lead:
                tab_lines += 1
            if " " in lead:
                space_lines += 1
            indent = len(lead.expandtabs(4))
            if indent > max_indent:
                max_indent = indent
        # Only substantial lines count as duplicates: "}" or "return" repeat legitimately.
        if len(stripped) > 12:
            candidates += 1
            if stripped in seen:
                repeated += 1
            else:
                seen.add(stripped)

    idents = _IDENT.findall(text)
    short = sum(1 for i in idents if len(i) == 1)
    imbalance = (
        abs(text.count("(") - text.count(")"))
        + abs(text.count("[") - text.count("]"))
        + abs(text.count("{") - text.count("}"))
    )
    return CodeFeatures(
        lines=non_empty,
        comment_lines=comment_lines,
        docstrings=(text.count('"""') + text.count("'''")) // 2 + text.count("/**"),
        tests=_count(
            _TEST,
            text,
            ("test", "assert", "describe(", "it(", "expect(", "t.Run(", "#[test]", "@Test"),
        ),
        dynamic=_count(
            _DYNAMIC, text, ("eval", "exec", "system", "shell", "pickle", "__import__", "Function")
        ),
        swallowed=(
            _count(_BARE_EXCEPT, text, ("except",))
            + _count(_EXCEPT_PASS, text, ("except",))
            + _count(_EMPTY_CATCH, text, ("catch",))
        ),
        markers=_count(_MARKER, text, ("TODO", "FIXME", "XXX", "HACK")),
        secrets=_count(_SECRET, text.lower(), ("pass", "secret", "key", "token")),
        debug=_count(_DEBUG, text, ("print", "console", "debugger", "pdb")),
        commented_code=_count(_COMMENTED_CODE, text, ("#", "//")),
        long_lines=long_lines,
        max_depth=max_indent // 4,
        mixed_indent=tab_lines > 0 and space_lines > 0,
        duplicate_ratio=repeated / candidates if candidates else 0.0,
        functions=_count(_FUNC, text, ("def", "fn", "func")),
        annotated=_count(_ANNOTATED, text, (")",)),
        wildcard_imports=_count(_WILDCARD, text, ("import",)) if "*" in text else 0,
        short_ident_ratio=short / len(idents) if idents else 0.0,
        bracket_imbalance=imbalance,
    )


def prose_features(text: str) -> ProseFeatures:
    words = _WORD.findall(text)
    caps = sum(1 for w in words if len(w) > 2 and w.isupper())
    low = text.lower()
    distinct = len({w.lower() for w in words})
    return ProseFeatures(
        words=len(words),
        sentences=max(1, len(_SENTENCE_END.findall(text))) if words else 0,
        unique_ratio=distinct / len(words) if words else 0.0,
        absolute=_count(_ABSOLUTE, low, _ABSOLUTE_NEEDLES),
        hedges=_count(_HEDGE, low, _HEDGE_NEEDLES),
        evidence=_count(_EVIDENCE, low, _EVIDENCE_NEEDLES),
        hype=_count(_HYPE, low, _HYPE_NEEDLES) + len(_MULTIPLIER.findall(low)),
        exclamations=text.count("!"),
        caps_words=caps,
        paragraphs=text.count("\n\n") + 1 if words else 0,
    )
