"""From a valid request to a stored judgment: judge, store (store decides), log, announce.

Consensus across instances is the store's job (see store.py). Within one process, concurrent
requests for the same cell share one computation: the first starts it, the others wait for its
result, so fifty identical requests cost one judgment and one write.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from cynic_node.events import EventHub
from cynic_node.journal import Journal, JournalUnavailable
from cynic_node.judge import Verdict, choose_level, judge
from cynic_node.llm import OllamaClient
from cynic_node.metrics import Metrics
from cynic_node.models import JudgeRequest
from cynic_node.scoring import AXIOMS
from cynic_node.store import JudgmentStore, StoreUnavailable

# The fields of a /judge answer, with what to say when a stored record lacks one (a record
# written by another build of CYNIC, say).
RESPONSE_DEFAULTS: dict[str, Any] = {
    "judgment_id": "",
    "cell_id": "",
    "q_score": 0.0,
    "verdict": "BARK",
    "confidence": 0.0,
    "axiom_scores": {},
    "dog_votes": {},
    "consensus_reached": False,
    "consensus_votes": 0,
    "residual_variance": 0.0,
    "unnameable_detected": False,
    "cost_usd": 0.0,
    "llm_calls": 0,
    "duration_ms": 0.0,
    "level_used": "REFLEX",
    "instance_id": "",
}
_PREVIEW_CHARS = 120


def to_response(record: dict[str, Any], reused: bool) -> dict[str, Any]:
    out = {name: record.get(name, default) for name, default in RESPONSE_DEFAULTS.items()}
    axioms = out["axiom_scores"]
    if isinstance(axioms, dict):
        # The store hands maps back with sorted keys; answer in the axioms' canonical order.
        out["axiom_scores"] = {a: axioms[a] for a in AXIOMS if a in axioms}
    votes = out["dog_votes"]
    if isinstance(votes, dict):
        out["dog_votes"] = dict(sorted(votes.items()))  # the store's order, for every answer
    out["reused"] = reused
    return out


def _storable(text: str) -> str:
    """text as SurrealDB can hold it: no NUL (its strings forbid it), no lone surrogates."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


class JudgmentService:
    def __init__(
        self,
        instance_id: str,
        store: JudgmentStore,
        journal: Journal,
        hub: EventHub,
        metrics: Metrics,
        llm: OllamaClient | None,
    ) -> None:
        self.instance_id = instance_id
        self.store = store
        self.journal = journal
        self.hub = hub
        self.metrics = metrics
        self.llm = llm
        self.judgments_total = 0
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def judge(self, req: JudgeRequest) -> dict[str, Any]:
        """The answer for req; raises StoreUnavailable when SurrealDB cannot decide, and
        JournalUnavailable when this instance created the judgment but could not journal it
        (the record is stored: a retry gets it, reused, with 200)."""
        cid = req.cell_id
        pending = self._inflight.get(cid)
        if pending is not None:
            # Another request of this process is deciding this cell: its result is ours.
            # shield: if this request is cancelled, the shared future must not be.
            answer = await asyncio.shield(pending)
            return self._count({**answer, "reused": True})
        # Lead: decide inline (no extra task on the hot path) and share the outcome.
        shared: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[cid] = shared
        try:
            answer = await self._decide(req, cid)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else StoreUnavailable("cancelled")
            shared.set_exception(failure)
            shared.exception()  # marked as retrieved: followers, if any, get it
            raise
        else:
            shared.set_result(answer)
        finally:
            del self._inflight[cid]
        return self._count(answer)

    def _count(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.judgments_total += 1
        if answer["reused"]:
            self.metrics.judgments_reused += 1
        else:
            self.metrics.judgments_created += 1
        return answer

    async def _decide(self, req: JudgeRequest, cid: str) -> dict[str, Any]:
        if choose_level(req) != "REFLEX":
            # LLM levels cost seconds: look before computing. (REFLEX costs less than the
            # look-up, so it computes and lets the write find out.) Not a race: the write decides.
            existing = await self.store.get(cid)
            if existing is not None:
                return to_response(existing, reused=True)
        verdict = await judge(req, self.llm)
        if req.level in ("MICRO", "MACRO") and verdict.level_used == "REFLEX":
            self.metrics.llm_fallbacks += 1
        record = self._record(req, cid, verdict)
        stored, created = await self.store.create_or_get(cid, record)
        answer = to_response(stored, reused=not created)
        if created:
            journaled = self.journal.append({**answer, "created_at": record["created_at"]})
            self.hub.publish("JUDGMENT_CREATED", answer)  # stored, journaled or not
            if not journaled:
                # No 200 without the journal line (CYNIC-API.md): the caller answers 503.
                raise JournalUnavailable(self.journal.last_error or "cannot append")
        return answer

    def _record(self, req: JudgeRequest, cid: str, v: Verdict) -> dict[str, Any]:
        s = v.scores
        record: dict[str, Any] = {
            "judgment_id": str(uuid.uuid4()),
            "cell_id": cid,
            "q_score": s.q_score,
            "verdict": s.verdict,
            "confidence": v.confidence,
            "axiom_scores": s.axiom_scores,
            "dog_votes": s.dog_votes,
            "consensus_reached": s.consensus_reached,
            "consensus_votes": s.consensus_votes,
            "residual_variance": s.residual_variance,
            "unnameable_detected": s.unnameable_detected,
            "cost_usd": v.cost_usd,
            "llm_calls": v.llm_calls,
            "duration_ms": v.duration_ms,
            "level_used": v.level_used,
            "instance_id": self.instance_id,
            "reality": req.reality,
            "analysis": req.analysis,
            "lod": req.lod,
            "content_chars": len(req.content_text),
            "content_preview": _storable(req.content_text[:_PREVIEW_CHARS]),
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        # SurrealDB drops NONE-valued fields; store only what is set.
        if req.time_dim is not None:
            record["time_dim"] = req.time_dim
        return record
