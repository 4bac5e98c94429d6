"""Ollama, for the MICRO and MACRO levels: one opinion per LLM dog through /api/chat.

The client never fails a judgment: a dog whose call does not come back usable is simply absent,
and the judge falls back to REFLEX when no LLM dog answered. After a connection failure the
client stops calling for a few seconds (a small circuit breaker), so that a dead Ollama costs
requests nothing instead of a connect timeout each.

Load cannot run away through it: at most `max_concurrency` calls of this process are in flight,
and `timeout_s` bounds the whole of a call, the wait for a slot included (httpx's own timeouts
bound each network operation, not the call). Any text can be sent: what UTF-8 cannot encode
(lone surrogates) is replaced before the request is built.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

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
_BREAKER_S = 5.0
_PROBE_CACHE_S = 5.0


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


class OllamaClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrency: int = 4,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.timeouts_total = 0  # calls abandoned at timeout_s, waiting for a slot or Ollama
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            transport=transport,
            # No more connections than calls allowed at once.
            limits=httpx.Limits(max_connections=max_concurrency + 1),
        )
        self._down_until = 0.0
        self._probe_at = -_PROBE_CACHE_S
        self._probe: tuple[bool, list[str]] = (False, [])

    async def aclose(self) -> None:
        await self._client.aclose()

    def _trip(self) -> None:
        self._down_until = time.monotonic() + _BREAKER_S
        self._probe = (False, [])
        self._probe_at = time.monotonic()

    async def probe(self) -> tuple[bool, list[str]]:
        """(reachable, model names) from GET /api/tags, cached for a few seconds."""
        now = time.monotonic()
        if now - self._probe_at < _PROBE_CACHE_S:
            return self._probe
        self._probe_at = now
        try:
            resp = await self._client.get("/api/tags", timeout=2.0)
            resp.raise_for_status()
            models = [
                _utf8(str(m.get("name", m.get("model", ""))))
                for m in resp.json().get("models", [])
                if isinstance(m, dict)
            ]
            self._probe = (True, models)
        except (httpx.HTTPError, ValueError, AttributeError):
            self._probe = (False, [])
        return self._probe

    async def opinion(
        self, dog: str, text: str, reality: str, analysis: str, context: str
    ) -> Opinion:
        if time.monotonic() < self._down_until:
            return Opinion(answered=False, view=None)
        user = (
            f"Reality: {reality}. Analysis: {analysis}."
            + (f" Context: {context[:500]}" if context else "")
            + f"\n\nContent:\n{text[:_MAX_PROMPT_CHARS]}"
        )
        body: dict[str, Any] = {
            "model": self.model,
            "stream": False,
            "format": "json",
            "options": {"temperature": 0},
            "messages": [
                {"role": "system", "content": _SYSTEM.format(dog=dog, persona=PERSONAS[dog])},
                {"role": "user", "content": _utf8(user)},
            ],
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    if time.monotonic() < self._down_until:  # tripped while this call waited
                        return Opinion(answered=False, view=None)
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                    try:
                        resp = await self._client.post("/api/chat", json=body)
                    finally:
                        self.in_flight -= 1
        except TimeoutError:
            self.timeouts_total += 1
            log.warning("ollama call for %s abandoned after %.1f s", dog, self.timeout_s)
            return Opinion(answered=False, view=None)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning("ollama unreachable (%s); judging at REFLEX", exc)
            self._trip()
            return Opinion(answered=False, view=None)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body httpx cannot encode
            log.warning("ollama call for %s failed: %s", dog, exc)
            return Opinion(answered=False, view=None)
        if resp.status_code != 200:
            log.warning("ollama answered %s for %s", resp.status_code, dog)
            return Opinion(answered=True, view=None)
        try:
            content = resp.json()["message"]["content"]
        except (ValueError, KeyError, TypeError):
            return Opinion(answered=True, view=None)
        return Opinion(answered=True, view=parse_scores(str(content)))
