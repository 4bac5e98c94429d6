"""From a valid request to a stored judgment: judge, store (store decides), log, announce.

Consensus across instances is the store's job (see store.py). Within one process, concurrent
requests for the same cell share one computation: the first starts it, the others wait for its
result, so fifty identical requests cost one judgment and one write.

The journal never lies: a judgment this process created has exactly one journal line, written
by this process, before any 200 from it names that judgment.
- Stored but not journaled (the append failed): the caller gets 503 and the line is owed
  (journal.py). A retry that finds the record (reused) writes the owed line first, and 503s
  again if it still cannot; a background task also writes owed lines as soon as it can.
- Not known whether stored (StoreOutcomeUnknown: the connection broke with the write in
  flight and did not come back in time): the caller gets 503 and the judgment is kept as
  unconfirmed. When a later answer finds a record carrying its judgment_id (a retry, reused),
  or the background task reads one, it was ours: it is journaled then (and announced), once.
  A record with another judgment_id, or none for _UNCONFIRMED_TTL_S, ends the wait.
Owed and unconfirmed judgments live in this process's memory: a restart forgets them (owed
lines are logged in full at shutdown), so across a restart a judgment has at most one line.

A degraded judgment (a MICRO/MACRO request answered at REFLEX: Ollama late, unreachable or
unusable) is REFLEX quality, so it is not the cell's judgment for good: a later MICRO/MACRO
request judges again, and a judgment that is not degraded replaces it with a compare-and-set
(store.replace_degraded), under a new judgment_id whose `supersedes` lists the ids it
replaced. It is a created judgment like any other: journaled and announced. The cell keeps one
record; the journal keeps every judgment, and `supersedes` links them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from surrealdb import ServerError

from cynic_node.events import EventHub
from cynic_node.journal import Journal, JournalUnavailable
from cynic_node.judge import Verdict, choose_level, judge
from cynic_node.llm import OllamaPool
from cynic_node.metrics import Metrics
from cynic_node.models import JudgeRequest
from cynic_node.scoring import AXIOMS
from cynic_node.store import JudgmentStore, StoreOutcomeUnknown, StoreUnavailable

log = logging.getLogger(__name__)

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
    # Records stored before issue 17 have none of these: not degraded, nothing superseded.
    "degraded": False,
    "degraded_reason": None,
    "supersedes": [],
}
_PREVIEW_CHARS = 120
# The background task that writes owed lines and looks up unconfirmed judgments: its period,
# how many it looks up per query, how long a judgment with no record stays unconfirmed (a
# write lost in a network partition could still land), and how many are kept at most.
_SETTLE_S = 1.0
_LOOKUP_CHUNK = 500
_UNCONFIRMED_TTL_S = 300.0
_MAX_UNCONFIRMED = 100_000


def to_response(record: dict[str, Any], reused: bool) -> dict[str, Any]:
    out = {name: record.get(name, default) for name, default in RESPONSE_DEFAULTS.items()}
    out["supersedes"] = list(out["supersedes"] or ())  # never the shared default itself
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
        llm: OllamaPool | None,
    ) -> None:
        self.instance_id = instance_id
        self.store = store
        self.journal = journal
        self.hub = hub
        self.metrics = metrics
        self.llm = llm
        self.judgments_total = 0
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # judgment_id -> (cell_id, its journal entry, since): writes of unknown outcome.
        self._unconfirmed: dict[str, tuple[str, dict[str, Any], float]] = {}
        self._settler: asyncio.Task[None] | None = None
        if metrics is not None:
            metrics.journal_owed = self.owed_count
            metrics.storage_outcomes = lambda: (
                store.outcomes_unknown_total,
                store.outcomes_recovered_total,
            )

    def owed_count(self) -> int:
        """Judgments of this process that may lack their journal line (owed or unconfirmed)."""
        return self.journal.owed_count + len(self._unconfirmed)

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
        degraded: dict[str, Any] | None = None  # the stored judgment this one may replace
        if choose_level(req) != "REFLEX":
            # LLM levels cost seconds: look before computing. (REFLEX costs less than the
            # look-up, so it computes and lets the write find out.) Not a race: the write decides.
            existing = await self.store.get(cid)
            if existing is not None:
                if not existing.get("degraded"):
                    return self._journaled(to_response(existing, reused=True))
                degraded = existing  # REFLEX quality: worth judging again
        verdict = await judge(req, self.llm)
        if req.level in ("MICRO", "MACRO") and verdict.level_used == "REFLEX":
            self.metrics.llm_fallbacks += 1
        if verdict.degraded_reason is not None:
            self.metrics.llm_degraded[verdict.degraded_reason] += 1
        if degraded is not None and verdict.degraded:
            # No better than what is stored: that one stands.
            return self._journaled(to_response(degraded, reused=True))
        record = self._record(req, cid, verdict)
        try:
            if degraded is None:
                stored, created = await self.store.create_or_get(cid, record)
            else:
                old_id = str(degraded.get("judgment_id", ""))
                record["supersedes"] = [*(degraded.get("supersedes") or ()), old_id]
                stored, created = await self.store.replace_degraded(cid, old_id, record)
        except StoreOutcomeUnknown:
            # Perhaps stored: remembered, so that finding it later journals it (once).
            entry = {**to_response(record, reused=False), "created_at": record["created_at"]}
            self._unconfirmed[record["judgment_id"]] = (cid, entry, time.monotonic())
            while len(self._unconfirmed) > _MAX_UNCONFIRMED:
                del self._unconfirmed[next(iter(self._unconfirmed))]
            self._start_settler()
            raise
        answer = to_response(stored, reused=not created)
        if created:
            entry = {**answer, "created_at": record["created_at"]}
            journaled = self.journal.append_judgment(entry)
            self.hub.publish("JUDGMENT_CREATED", answer)  # stored, journaled or not
            if not journaled:
                # No 200 without the journal line (CYNIC-API.md): the caller answers 503.
                self._start_settler()
                raise JournalUnavailable(self.journal.last_error or "cannot append")
            return answer
        return self._journaled(answer)

    def _journaled(self, answer: dict[str, Any]) -> dict[str, Any]:
        """answer (a stored judgment, reused), once any line this process owes for it is written;
        raises JournalUnavailable when that line cannot be written yet."""
        jid = answer["judgment_id"]
        if jid in self._unconfirmed:
            # Our lost write had landed: the judgment is ours, its line not yet written.
            if not self._confirm(jid):
                raise JournalUnavailable(self.journal.last_error or "cannot append")
        elif self.journal.owes(jid) and not self.journal.settle(jid):
            raise JournalUnavailable(self.journal.last_error or "cannot append")
        return answer

    def _confirm(self, jid: str) -> bool:
        """An unconfirmed judgment found stored: journal (or owe) and announce it."""
        _, entry, _ = self._unconfirmed.pop(jid)
        log.info("judgment %s of a lost write found stored: journaling it", jid)
        journaled = self.journal.append_judgment(entry)
        self.hub.publish("JUDGMENT_CREATED", {k: v for k, v in entry.items() if k != "created_at"})
        if not journaled:
            self._start_settler()
        return journaled

    def _start_settler(self) -> None:
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(
                self._settle(), name="journal-settler"
            )

    async def _settle(self) -> None:
        """Until nothing is owed or unconfirmed: write owed lines, look up unconfirmed ones."""
        while self.journal.owed_count or self._unconfirmed:
            await asyncio.sleep(_SETTLE_S)
            self.journal.flush_owed()
            if self._unconfirmed:
                try:
                    await self._look_up_unconfirmed()
                except (StoreUnavailable, ServerError) as exc:
                    log.info("unconfirmed judgments not looked up yet: %s", exc)
                except Exception:  # the task must outlive any surprise
                    log.exception("looking up unconfirmed judgments failed")

    async def _look_up_unconfirmed(self) -> None:
        batch = list(self._unconfirmed.items())[:_LOOKUP_CHUNK]
        found = await self.store.judgment_ids([cell for _, (cell, _, _) in batch])
        now = time.monotonic()
        for jid, (cell, _, since) in batch:
            if jid not in self._unconfirmed:
                continue  # a request confirmed it meanwhile
            stored_jid = found.get(cell)
            if stored_jid == jid:
                self._confirm(jid)
            elif stored_jid is not None or now - since > _UNCONFIRMED_TTL_S:
                del self._unconfirmed[jid]  # another's judgment, or ours never landed
            else:  # not there (yet): to the back of the queue
                self._unconfirmed[jid] = self._unconfirmed.pop(jid)

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
            "degraded": v.degraded,
            "supersedes": [],
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
        if v.degraded_reason is not None:
            record["degraded_reason"] = v.degraded_reason
        return record
