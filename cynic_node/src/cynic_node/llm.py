"""Ollama, for the MICRO and MACRO levels: one opinion per LLM dog through /api/chat.

The pool never fails a judgment: a dog whose call does not come back usable is simply absent,
and the judge falls back to REFLEX when no LLM dog answered. OLLAMA_URL may name several
servers: each call goes to the least busy one (fewest calls of this process in flight there,
ties in turn). After a connection failure or a 503 (Ollama's queue is full) a server is
skipped for a few seconds (a small circuit breaker per server), and the call moves on to the
next one, so that a dead or saturated Ollama costs requests nothing.

Load cannot run away through it: at most `max_concurrency` calls of this process are in flight,
on all servers together, and a call ends at its deadline (the judgment's, at most `timeout_s`
after it starts), the wait for a slot included; httpx's own timeouts bound each network
operation, not the call. A call cut off at its deadline is cancelled: its HTTP connection is
closed, which frees its place at Ollama. The answer is asked in the shape of AXIOM_SCHEMA
(Ollama's structured outputs); parse_scores still reads prose around JSON, for older servers.
Any text can be sent: what UTF-8 cannot encode (lone surrogates) is replaced first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cynic_node.config import ollama_server_urls
from cynic_node.scoring import AXIOMS

log = logging.getLogger(__name__)

# The LLM dogs and the angle each one is asked to take.
PERSONAS: dict[str, str] = {
    "SAGE": "You weigh wisdom and long-term consequences.",
    "SCHOLAR": "You check facts, references and internal consistency.",
    "ORACLE": "You judge the risks and what is likely to happen next.",
}
MICRO_DOGS = ("SAGE",)
MACRO_DOGS = ("SAGE", "SCHOLAR", "ORACLE")

_SYSTEM = (
    "You are {dog}, one of the dogs of CYNIC, a skeptical judge. {persona} "
    "Score the content from 0 to 100 on five axioms: FIDELITY (loyal to truth), PHI (harmony "
    "and proportion), VERIFY (can it be verified), CULTURE (fits its ecosystem), BURN "
    "(simplicity, no waste or extraction). Answer with one JSON object and nothing else, "
    'for example {{"FIDELITY": 50, "PHI": 50, "VERIFY": 50, "CULTURE": 50, "BURN": 50}}.'
)
_MAX_PROMPT_CHARS = 8000  # a small local model reads a few thousand tokens at most
BREAKER_S = 5.0
_PROBE_CACHE_S = 5.0

# The JSON schema given as `format`: Ollama (>= 0.5) constrains the reply to it.
AXIOM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {a: {"type": "number", "minimum": 0, "maximum": 100} for a in AXIOMS},
    "required": list(AXIOMS),
}

# How a call to one server ended (cynic_llm_calls_total{outcome}): usable scores, an answer
# without them, 503 (queue full), another failure or status, cut off at the deadline, no
# connection.
OUTCOMES = ("ok", "unusable", "busy", "error", "timeout", "unreachable")
# No server could take the call (every breaker open): it never left this process.
UNAVAILABLE = "unavailable"
_FAIL_OVER = frozenset({"busy", "unreachable"})  # the next server may take it


def _utf8(text: str) -> str:
    """text with what UTF-8 cannot encode (lone surrogates) replaced: a request can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class Opinion:
    answered: bool  # Ollama answered the call (it happened, it may still be unusable)
    view: dict[str, float] | None  # the axiom scores it gave, when usable
    outcome: str = "ok"  # one of OUTCOMES, or UNAVAILABLE


def parse_scores(text: str) -> dict[str, float] | None:
    """Axiom scores out of the model's answer; None when it holds none."""
    try:
        data = json.loads(text)
    except ValueError:
        # Small models wrap JSON in prose; take the outermost braces.
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    scores: dict[str, float] = {}
    upper = {str(k).upper(): v for k, v in data.items()}
    for axiom in AXIOMS:
        value = upper.get(axiom)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            scores[axiom] = min(100.0, max(0.0, float(value)))
    return scores or None


class OllamaServer:
    """One Ollama base URL: its HTTP client, breaker, probe and counters."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
        breaker_s: float = BREAKER_S,
    ) -> None:
        self.url = url
        self.breaker_s = breaker_s
        self.in_flight = 0
        self.calls = dict.fromkeys(OUTCOMES, 0)
        self._client = httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )
        self._down_until = 0.0
        self._reachable = False  # what the last probe or call found
        self._probe_at = -_PROBE_CACHE_S
        self._models: list[str] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def breaker_open(self) -> bool:
        return time.monotonic() < self._down_until

    @property
    def up(self) -> bool:
        """Reachable when last seen, and not skipped by its breaker."""
        return self._reachable and not self.breaker_open

    def trip(self, reachable: bool) -> None:
        self._down_until = time.monotonic() + self.breaker_s
        self._reachable = reachable
        if not reachable:  # the probe says so too until the cache expires
            self._models = []
            self._probe_at = time.monotonic()

    async def probe(self) -> tuple[bool, list[str]]:
        """(reachable, model names) from GET /api/tags, cached for a few seconds."""
        now = time.monotonic()
        if now - self._probe_at < _PROBE_CACHE_S:
            return self._reachable, self._models
        self._probe_at = now
        try:
            resp = await self._client.get("/api/tags", timeout=2.0)
            resp.raise_for_status()
            self._models = [
                _utf8(str(m.get("name", m.get("model", ""))))
                for m in resp.json().get("models", [])
                if isinstance(m, dict)
            ]
            self._reachable = True
        except (httpx.HTTPError, ValueError, AttributeError):
            self._reachable, self._models = False, []
        return self._reachable, self._models

    async def chat(self, dog: str, body: dict[str, Any]) -> Opinion:
        """One /api/chat call; cancellation (the deadline) passes through, the caller counts it."""
        self.in_flight += 1
        try:
            resp = await self._client.post("/api/chat", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning(
                "ollama %s unreachable (%s); skipped for %.0f s", self.url, exc, self.breaker_s
            )
            self.trip(reachable=False)
            return self._ended(Opinion(answered=False, view=None, outcome="unreachable"))
        except httpx.TimeoutException:
            return self._ended(Opinion(answered=False, view=None, outcome="timeout"))
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body httpx cannot encode
            log.warning("ollama %s call for %s failed: %s", self.url, dog, exc)
            return self._ended(Opinion(answered=False, view=None, outcome="error"))
        finally:
            self.in_flight -= 1
        self._reachable = True
        if resp.status_code == 503:
            # "server busy": its queue is full. Others may have room; this one gets a rest.
            log.warning("ollama %s busy (503); skipped for %.0f s", self.url, self.breaker_s)
            self.trip(reachable=True)
            return self._ended(Opinion(answered=False, view=None, outcome="busy"))
        if resp.status_code != 200:
            log.warning("ollama %s answered %s for %s", self.url, resp.status_code, dog)
            return self._ended(Opinion(answered=True, view=None, outcome="error"))
        try:
            content = resp.json()["message"]["content"]
        except (ValueError, KeyError, TypeError):
            return self._ended(Opinion(answered=True, view=None, outcome="unusable"))
        view = parse_scores(str(content))
        return self._ended(Opinion(answered=True, view=view, outcome="ok" if view else "unusable"))

    def _ended(self, opinion: Opinion) -> Opinion:
        self.calls[opinion.outcome] += 1
        return opinion


class OllamaPool:
    """The LLM tier of this process: its Ollama servers and the bound on calls in flight."""

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrency: int = 4,
        deadline_micro_s: float | None = None,
        deadline_macro_s: float | None = None,
        breaker_s: float = BREAKER_S,
    ) -> None:
        urls = ollama_server_urls(base_urls) if isinstance(base_urls, str) else tuple(base_urls)
        self.model = model
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        # A deadline never outlives the timeout (from_env refuses one that would).
        self.deadlines = {
            "MICRO": min(timeout_s, deadline_micro_s or timeout_s),
            "MACRO": min(timeout_s, deadline_macro_s or timeout_s),
        }
        # No more connections to a server than calls allowed at once.
        self.servers = [
            OllamaServer(url, timeout_s, max_concurrency + 1, transport, breaker_s) for url in urls
        ]
        self._slots = asyncio.Semaphore(max_concurrency)
        self._next = 0  # where the round of equally busy servers starts
        self.in_flight = 0
        self.peak_in_flight = 0
        self.waiting = 0  # calls waiting for a slot now
        self.slot_waits_total = 0
        self.slot_wait_seconds_total = 0.0
        self.timeouts_total = 0  # calls cut off at their deadline, waiting for a slot or Ollama

    async def aclose(self) -> None:
        for server in self.servers:
            await server.aclose()

    def deadline_s(self, level: str) -> float:
        return self.deadlines.get(level, self.timeout_s)

    async def probe(self) -> tuple[bool, list[str]]:
        """(any server reachable, the model names they list, each once)."""
        found = await asyncio.gather(*(server.probe() for server in self.servers))
        models = list(dict.fromkeys(name for _, names in found for name in names))
        return any(ok for ok, _ in found), models

    def servers_health(self) -> list[dict[str, Any]]:
        return [{"url": s.url, "up": s.up, "in_flight": s.in_flight} for s in self.servers]

    def _least_busy(self, tried: list[OllamaServer]) -> OllamaServer | None:
        # Ties go round the list from the server after the last one picked: instances that each
        # see only their own calls would otherwise all send their first call to the first server.
        n = len(self.servers)
        order = [self.servers[(self._next + k) % n] for k in range(n)]
        candidates = [s for s in order if s not in tried and not s.breaker_open]
        picked = min(candidates, key=lambda s: s.in_flight, default=None)  # the first of equals
        if picked is not None:
            self._next = (self.servers.index(picked) + 1) % n
        return picked

    async def opinion(
        self,
        dog: str,
        text: str,
        reality: str,
        analysis: str,
        context: str,
        deadline: float | None = None,
    ) -> Opinion:
        """dog's opinion; deadline is loop time (the judgment's), else timeout_s from now."""
        if all(s.breaker_open for s in self.servers):
            return Opinion(answered=False, view=None, outcome=UNAVAILABLE)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout_s
        if deadline is not None:
            end = min(end, deadline)
        user = (
            f"Reality: {reality}. Analysis: {analysis}."
            + (f" Context: {context[:500]}" if context else "")
            + f"\n\nContent:\n{text[:_MAX_PROMPT_CHARS]}"
        )
        body: dict[str, Any] = {
            "model": self.model,
            "stream": False,
            "format": AXIOM_SCHEMA,
            "options": {"temperature": 0},
            "messages": [
                {"role": "system", "content": _SYSTEM.format(dog=dog, persona=PERSONAS[dog])},
                {"role": "user", "content": _utf8(user)},
            ],
        }
        try:
            async with asyncio.timeout_at(end):
                await self._take_slot(loop)
                try:
                    return await self._call(dog, body)
                finally:
                    self._slots.release()
        except TimeoutError:
            self.timeouts_total += 1
            log.warning("ollama call for %s cut off at its deadline", dog)
            return Opinion(answered=False, view=None, outcome="timeout")

    async def _take_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        began = loop.time()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self.slot_waits_total += 1
            self.slot_wait_seconds_total += loop.time() - began

    async def _call(self, dog: str, body: dict[str, Any]) -> Opinion:
        """The call on the least busy server, then the next while one is busy or unreachable."""
        tried: list[OllamaServer] = []
        last = Opinion(answered=False, view=None, outcome=UNAVAILABLE)
        while (server := self._least_busy(tried)) is not None:
            tried.append(server)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                last = await server.chat(dog, body)
            except asyncio.CancelledError:
                server.calls["timeout"] += 1  # the deadline (or shutdown) cut it off there
                raise
            finally:
                self.in_flight -= 1
            if last.outcome not in _FAIL_OVER:
                return last
        return last
