"""The judge: picks the level, runs the REFLEX dogs and, for MICRO and MACRO, the LLM dogs.

REFLEX is pure and synchronous (well under a millisecond for a kilobyte). MICRO adds one LLM
dog, MACRO three, asked concurrently. What the answer says is what happened: `llm_calls`
counts the calls Ollama answered, and `level_used` is the level the opinions actually reached
(MACRO with a single usable opinion is a MICRO judgment; none is REFLEX).

The level picks a deadline (the pool's, CYNIC_LLM_DEADLINE_MICRO_S / _MACRO_S), counted from
the start of the judgment: the wait for a slot is part of it. At the deadline the calls still
under way are cancelled. A MICRO or MACRO judgment that got no usable opinion is answered at
REFLEX and marked `degraded`, with the reason: "deadline" (time ran out), "unavailable" (no
server took the call: unreachable, busy, breakers open) or "unusable" (Ollama answered, with no
usable scores).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from cynic_node.llm import MACRO_DOGS, MICRO_DOGS, OllamaPool, Opinion
from cynic_node.models import JudgeRequest
from cynic_node.scoring import (
    AXIOMS,
    MAX_CONFIDENCE,
    PHI_INV,
    PHI_INV2,
    Scores,
    finish,
    merge_views,
    reflex_views,
    score_reflex,
)

# Automatic level (no `level` in the request): the budget decides. The load test's request
# (budget 0.01) stays at REFLEX, which needs no LLM and answers in microseconds.
MICRO_MIN_BUDGET_USD = 0.05
MACRO_MIN_BUDGET_USD = 0.5
BIG_CONTENT_CHARS = 64 * 1024
REFLEX_CONFIDENCE = 0.382  # φ⁻², as the contract writes it


@dataclass(frozen=True, slots=True)
class Verdict:
    scores: Scores
    confidence: float
    level_used: str
    llm_calls: int
    cost_usd: float
    duration_ms: float
    degraded: bool = False  # a MICRO/MACRO judgment answered at REFLEX
    degraded_reason: str | None = None  # one of DEGRADED_REASONS when degraded


DEGRADED_REASONS = ("deadline", "unavailable", "unusable")


def degraded_reason(opinions: list[Opinion]) -> str:
    """Why no opinion was usable: time ran out, else Ollama answered uselessly, else nobody."""
    outcomes = {o.outcome for o in opinions}
    if "timeout" in outcomes:
        return "deadline"
    if any(o.answered for o in opinions):
        return "unusable"
    return "unavailable"


def choose_level(req: JudgeRequest) -> str:
    if req.level is not None:
        return req.level
    if req.lod == 0 or req.budget_usd < MICRO_MIN_BUDGET_USD:
        return "REFLEX"
    return "MICRO" if req.budget_usd < MACRO_MIN_BUDGET_USD else "MACRO"


async def _reflex(req: JudgeRequest, started: float) -> Verdict:
    if len(req.content_text) > BIG_CONTENT_CHARS:
        # A near-megabyte body takes a good fraction of a second to scan: off the event loop,
        # so the other requests keep moving meanwhile.
        scores = await asyncio.to_thread(score_reflex, req.content_text, req.reality)
    else:
        scores = score_reflex(req.content_text, req.reality)
    return Verdict(
        scores=scores,
        confidence=REFLEX_CONFIDENCE,
        level_used="REFLEX",
        llm_calls=0,
        cost_usd=0.0,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )


async def judge(req: JudgeRequest, llm: OllamaPool | None) -> Verdict:
    started = time.perf_counter()
    level = choose_level(req)
    # Blank content gives an LLM nothing to read: REFLEX by design, not degraded.
    if level == "REFLEX" or not req.content_text.strip():
        return await _reflex(req, started)
    if llm is None:
        fallback = await _reflex(req, started)
        return replace(fallback, degraded=True, degraded_reason="unavailable")

    dogs = MICRO_DOGS if level == "MICRO" else MACRO_DOGS
    deadline = asyncio.get_running_loop().time() + llm.deadline_s(level)
    opinions = await asyncio.gather(
        *(
            llm.opinion(dog, req.content_text, req.reality, req.analysis, req.context, deadline)
            for dog in dogs
        )
    )
    llm_calls = sum(1 for o in opinions if o.answered)
    llm_views = {dog: o.view for dog, o in zip(dogs, opinions, strict=True) if o.view}
    if not llm_views:
        # Ollama late, unreachable or unusable: the judgment degrades to REFLEX and says so.
        fallback = await _reflex(req, started)
        return replace(
            fallback,
            llm_calls=llm_calls,
            degraded=True,
            degraded_reason=degraded_reason(opinions),
        )

    views = reflex_views(req.content_text, req.reality)
    reflex_axioms = merge_views(views)
    llm_axioms = merge_views(llm_views)
    # The LLM dogs read meaning the patterns cannot: they carry φ⁻¹ of each axiom, the
    # REFLEX dogs φ⁻² (the two sum to 1).
    axioms = {a: PHI_INV2 * reflex_axioms[a] + PHI_INV * llm_axioms[a] for a in AXIOMS}
    scores = finish(axioms, {**views, **llm_views}, req.reality)
    # More agreement among the dogs, more confidence; never above φ⁻¹, never below REFLEX's.
    confidence = max(REFLEX_CONFIDENCE, MAX_CONFIDENCE * (1.0 - scores.residual_variance))
    return Verdict(
        scores=scores,
        confidence=min(MAX_CONFIDENCE, round(confidence, 3)),
        level_used="MACRO" if len(llm_views) >= 2 else "MICRO",
        llm_calls=llm_calls,
        cost_usd=0.0,  # a local Ollama costs nothing per call
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
