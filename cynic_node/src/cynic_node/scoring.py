"""Scoring: dogs, axioms, Q-Score, verdict, consensus. Pure, deterministic, no I/O.

Each REFLEX dog looks at the features it is expert in and gives dimension scores (0-100), each
belonging to one axiom. A dog's view of an axiom is the weighted mean of its dimensions there;
the axiom's score is the mean of the views of the dogs that speak to it. Q is the weighted
geometric mean of the five axiom scores with the reality's weights (CODE, from the original
kernel: VERIFY φ², PHI φ, BURN φ, CULTURE 1, FIDELITY φ⁻¹), and is 0 as soon as one axiom is 0:
a geometric mean lets no strength buy back a missing axiom. A dog's vote is the same Q over its
own dimensions only; CYNIC, the coordinator, votes the unweighted geometric mean of the axioms
(it trusts no weighting, not even φ's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cynic_node.features import CodeFeatures, ProseFeatures, code_features, prose_features

PHI = (1 + 5**0.5) / 2
PHI_INV = 1 / PHI  # 0.618: the confidence ceiling, the WAG threshold
PHI_INV2 = PHI_INV**2  # 0.382: REFLEX confidence, the GROWL threshold
PHI_INV3 = PHI_INV**3  # 0.236
PHI_INV4 = PHI_INV**4  # 0.146
# The contract states the ceiling as 0.618; φ⁻¹ itself is 0.61803..., a hair above it.
MAX_CONFIDENCE = 0.618

AXIOMS = ("FIDELITY", "PHI", "VERIFY", "CULTURE", "BURN")

# Axiom weights per reality. CODE is the original kernel's; every other reality leans on the
# axiom that matters most for it (a market claim must be verified, a human statement must be
# faithful, a social post must fit its culture).
REALITY_WEIGHTS: Mapping[str, Mapping[str, float]] = {
    "CODE": {"VERIFY": PHI**2, "PHI": PHI, "BURN": PHI, "CULTURE": 1.0, "FIDELITY": PHI_INV},
    "SOLANA": {"VERIFY": PHI**2, "BURN": PHI, "FIDELITY": PHI, "PHI": 1.0, "CULTURE": PHI_INV},
    "MARKET": {"VERIFY": PHI**2, "FIDELITY": PHI, "BURN": PHI, "PHI": 1.0, "CULTURE": PHI_INV},
    "SOCIAL": {"CULTURE": PHI**2, "FIDELITY": PHI, "BURN": PHI, "VERIFY": 1.0, "PHI": PHI_INV},
    "HUMAN": {"FIDELITY": PHI**2, "CULTURE": PHI, "VERIFY": PHI, "BURN": 1.0, "PHI": PHI_INV},
    "CYNIC": {"FIDELITY": PHI**2, "VERIFY": PHI, "PHI": PHI, "BURN": 1.0, "CULTURE": PHI_INV},
    "COSMOS": {"PHI": PHI**2, "VERIFY": PHI, "CULTURE": PHI, "FIDELITY": 1.0, "BURN": PHI_INV},
}

REFLEX_DOGS = ("CYNIC", "GUARDIAN", "ANALYST", "JANITOR")

# The contract's thresholds, as written (100·φ⁻¹ and 100·φ⁻² rounded to one decimal): Q has
# three decimals, so 61.801 must be WAG and 38.199 BARK, exactly as the contract says.
VERDICTS = ((82.0, "HOWL"), (61.8, "WAG"), (38.2, "GROWL"))


class Dim(NamedTuple):
    """One dimension score given by one dog (a tuple: a judgment makes a score of them, and a
    frozen dataclass costs four times as much to build)."""

    axiom: str
    score: float  # 0-100
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Scores:
    axiom_scores: dict[str, float]
    dog_votes: dict[str, float]
    q_score: float
    verdict: str
    consensus_votes: int
    consensus_reached: bool
    residual_variance: float
    unnameable_detected: bool


def _clamp(x: float, lo: float = 0.0, hi: float = 100.0) -> float:
    return lo if x < lo else hi if x > hi else x


def _decay(x: float, rate: float, floor: float = 5.0, top: float = 100.0) -> float:
    """top at x == 0, falling smoothly towards floor as x (a count or density) grows."""
    return floor + (top - floor) * math.exp(-rate * x)


def _gain(x: float, rate: float, base: float, top: float = 100.0) -> float:
    """base at x == 0, rising smoothly towards top as x grows."""
    return base + (top - base) * (1 - math.exp(-rate * x))


def weighted_geometric_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """exp(Σ w·ln v / Σ w) over the keys present in values; 0 if any value is 0."""
    total_w = 0.0
    acc = 0.0
    for key, value in values.items():
        w = weights.get(key, 1.0)
        if value <= 0.0:
            return 0.0
        acc += w * math.log(value)
        total_w += w
    return _clamp(math.exp(acc / total_w)) if total_w else 0.0


def verdict_for(q: float) -> str:
    for threshold, name in VERDICTS:
        if q >= threshold:
            return name
    return "BARK"


# --- the REFLEX dogs, code profile -----------------------------------------------------------


def _guardian_code(f: CodeFeatures) -> list[Dim]:
    # Security: code run from strings, swallowed errors, secrets in the source.
    return [
        Dim("VERIFY", _decay(f.dynamic, 0.9, floor=3.0), PHI),
        # A swallowed error is a lie about what happened, and hides it from any check.
        Dim("FIDELITY", _decay(f.swallowed, 1.0), PHI),
        Dim("VERIFY", _decay(f.swallowed, 0.7)),
        Dim("FIDELITY", 100.0 if f.secrets == 0 else _decay(f.secrets, 1.5, floor=5.0, top=40.0)),
    ]


def _analyst_code(f: CodeFeatures) -> list[Dim]:
    # Verification and structure: tests, types, documentation, balanced brackets.
    n = max(1, f.lines)
    doc_ratio = (f.comment_lines + 3 * f.docstrings) / n
    typing = 50.0 if f.functions == 0 else 30.0 + 70.0 * min(1.0, f.annotated / f.functions)
    return [
        Dim("VERIFY", _gain(f.tests, 0.7, base=25.0), PHI),
        Dim("VERIFY", typing),
        Dim("FIDELITY", _gain(doc_ratio, 6.0, base=30.0), PHI),
        Dim("PHI", 100.0 if f.bracket_imbalance == 0 else _decay(f.bracket_imbalance, 0.5, 20, 70)),
    ]


def _janitor_code(f: CodeFeatures) -> list[Dim]:
    # Hygiene: unfinished work, duplication, leftovers, proportions, naming.
    n = max(1, f.lines)
    per_function = n / f.functions if f.functions else float(n)
    proportion = 100.0 if per_function <= 20 else _decay(per_function - 20, 1 / 40, floor=10.0)
    size = 100.0 if n <= 300 else _decay(n - 300, 1 / 1000, floor=20.0)
    return [
        Dim("FIDELITY", _decay(f.markers / n, 8.0)),
        Dim("BURN", _decay(f.duplicate_ratio, 4.0), PHI),
        Dim("BURN", _decay(f.debug / n, 6.0, floor=20.0), PHI_INV),
        Dim("BURN", _decay(f.commented_code / n, 10.0)),
        Dim("BURN", size, PHI_INV),
        Dim("PHI", _decay(f.long_lines / n, 5.0)),
        Dim("PHI", 100.0 * 0.75 ** max(0, f.max_depth - 3), PHI),
        Dim("PHI", proportion),
        Dim("CULTURE", _decay(f.short_ident_ratio, 4.0, floor=10.0), PHI),
        Dim("CULTURE", 100.0 * 0.6**f.wildcard_imports),
        Dim("CULTURE", 50.0 if f.mixed_indent else 100.0),
    ]


# --- the REFLEX dogs, prose profile ----------------------------------------------------------


def _guardian_prose(f: ProseFeatures) -> list[Dim]:
    # Extraction and overclaiming: hype, absolutes with nothing to back them.
    w = max(1, f.words)
    return [
        Dim("BURN", _decay(f.hype * 20 / w, 3.0), PHI),
        Dim("FIDELITY", _decay(f.absolute * 20 / w, 2.0), PHI),
    ]


def _analyst_prose(f: ProseFeatures) -> list[Dim]:
    # Evidence and shape: sources and figures, sentences of a readable length.
    words_per_sentence = f.words / f.sentences if f.sentences else 0.0
    shape = (
        100.0
        if 8 <= words_per_sentence <= 25
        else _decay(
            min(abs(words_per_sentence - 8), abs(words_per_sentence - 25)), 0.08, floor=20.0
        )
    )
    return [
        Dim("VERIFY", _gain(f.evidence, 0.6, base=25.0), PHI),
        Dim("PHI", shape, PHI),
        Dim("PHI", _gain(f.paragraphs, 0.5, base=60.0)),
        Dim("FIDELITY", _gain(f.hedges, 0.8, base=50.0), PHI_INV),
    ]


def _janitor_prose(f: ProseFeatures) -> list[Dim]:
    # Tone and economy: shouting, exclamation, repetition.
    w = max(1, f.words)
    return [
        Dim("CULTURE", _decay(f.caps_words / w, 8.0), PHI),
        Dim("CULTURE", _decay(f.exclamations / w, 10.0)),
        Dim("BURN", _gain(f.unique_ratio, 3.0, base=5.0) if f.words >= 5 else 60.0),
    ]


def _axioms_of(dims: Sequence[Dim], evidence: float) -> dict[str, float]:
    """A dog's view: per axiom, the weighted mean of its dimensions.

    evidence (0-1) is how much there was to look at. With little content a dog's findings,
    good or bad, say little ("no eval in three words" proves nothing), so each score is pulled
    towards the neutral 50 in proportion.
    """
    sums: dict[str, list[float]] = {}
    for d in dims:
        acc = sums.setdefault(d.axiom, [0.0, 0.0])
        acc[0] += (50.0 + (d.score - 50.0) * evidence) * d.weight
        acc[1] += d.weight
    return {a: _clamp(s / w) for a, (s, w) in sums.items() if w > 0}


def consensus(q: float, votes: Mapping[str, float]) -> tuple[int, bool, float, bool]:
    """Agreement of the dogs with Q.

    A dog agrees when its vote is within 100·φ⁻³ (23.6 points) of Q; consensus needs at least
    φ⁻¹ of the dogs. The residual variance is the variance of the votes over its maximum
    (2500 for values in 0-100): what the axioms leave unexplained. Above φ⁻⁴ it is called
    THE_UNNAMEABLE.
    """
    values = list(votes.values())
    if not values:
        return 0, False, 0.0, False
    agreeing = sum(1 for v in values if abs(v - q) <= 100 * PHI_INV3)
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    residual = min(1.0, variance / 2500.0)
    return agreeing, agreeing / len(values) >= PHI_INV, residual, residual > PHI_INV4


def finish(
    axiom_scores: Mapping[str, float],
    dog_axioms: Mapping[str, Mapping[str, float]],
    reality: str,
) -> Scores:
    """From axiom scores (all five) and each dog's own axiom view, the whole score block."""
    weights = REALITY_WEIGHTS[reality]
    axioms = {a: round(_clamp(axiom_scores[a]), 3) for a in AXIOMS}
    q = round(weighted_geometric_mean(axioms, weights), 3)
    votes = {"CYNIC": round(weighted_geometric_mean(axioms, {}), 3)}
    for dog, view in dog_axioms.items():
        votes[dog] = round(weighted_geometric_mean(view, weights), 3)
    agreeing, reached, residual, unnameable = consensus(q, votes)
    return Scores(
        axiom_scores=axioms,
        dog_votes=votes,
        q_score=q,
        verdict=verdict_for(q),
        consensus_votes=agreeing,
        consensus_reached=reached,
        residual_variance=round(residual, 4),
        unnameable_detected=unnameable,
    )


def reflex_views(text: str, reality: str) -> dict[str, dict[str, float]]:
    """Each REFLEX dog's axiom scores (only the axioms it speaks to)."""
    if reality == "CODE":
        cf = code_features(text)
        seen = 1 - math.exp(-cf.lines / 3)  # 1 line: 0.28, 5 lines: 0.81, 10 lines: 0.96
        return {
            "GUARDIAN": _axioms_of(_guardian_code(cf), seen),
            "ANALYST": _axioms_of(_analyst_code(cf), seen),
            "JANITOR": _axioms_of(_janitor_code(cf), seen),
        }
    pf = prose_features(text)
    seen = 1 - math.exp(-pf.words / 10)  # 3 words: 0.26, 20 words: 0.86, 40: 0.98
    return {
        "GUARDIAN": _axioms_of(_guardian_prose(pf), seen),
        "ANALYST": _axioms_of(_analyst_prose(pf), seen),
        "JANITOR": _axioms_of(_janitor_prose(pf), seen),
    }


def merge_views(views: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Axiom scores from the dogs' views: the mean of every dog that speaks to the axiom.

    An axiom no dog speaks to (never the case with the REFLEX dogs, kept for safety) is
    neutral, 50.
    """
    merged: dict[str, float] = {}
    for axiom in AXIOMS:
        opinions = [v[axiom] for v in views.values() if axiom in v]
        merged[axiom] = sum(opinions) / len(opinions) if opinions else 50.0
    return merged


def score_reflex(text: str, reality: str) -> Scores:
    """The REFLEX judgment of a text. Empty content has nothing to judge and scores 0."""
    if not text.strip():
        zero = dict.fromkeys(AXIOMS, 0.0)
        return finish(zero, dict.fromkeys(REFLEX_DOGS[1:], zero), reality)
    views = reflex_views(text, reality)
    return finish(merge_views(views), views, reality)
