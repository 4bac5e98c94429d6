"""Prometheus metrics, written by hand (text format 0.0.4): a dozen series need no library.

Per process: with several uvicorn workers each worker reports its own figures, and the
`instance` label (INSTANCE_ID) tells instances apart.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cynic_node.llm import OllamaPool

# judge.DEGRADED_REASONS, spelled here so that metrics imports nothing at run time.
DEGRADED_REASONS = ("deadline", "unavailable", "unusable")

# Seconds. Dense below 50 ms, where the node's latency target lives.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = frozenset({"/judge", "/health", "/metrics", "/ws/stream", "/_bench/empty"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def route_label(path: str) -> str:
    # Unknown paths share one label: a scanner must not create a series per URL.
    return path if path in ROUTES else "other"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self, instance_id: str) -> None:
        self.instance = _esc(instance_id)
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_counts: defaultdict[str, list[int]] = defaultdict(
            lambda: [0] * (len(BUCKETS) + 1)
        )
        self.latency_sum: defaultdict[str, float] = defaultdict(float)
        self.judgments_created = 0
        self.judgments_reused = 0
        self.llm_fallbacks = 0
        # MICRO/MACRO judgments computed here that came out at REFLEX, by reason.
        self.llm_degraded = dict.fromkeys(DEGRADED_REASONS, 0)
        # Set by the service: judgments that may lack their journal line yet, and the writes
        # lost with a SurrealDB connection (all, and those whose outcome was then found out).
        self.journal_owed: Callable[[], int] = lambda: 0
        self.storage_outcomes: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, status)] += 1
        self.latency_counts[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[route] += seconds

    def render(
        self,
        storage_errors: int,
        journal_errors: int,
        storage_up: bool,
        ws_clients: int,
        write_counts: tuple[int, int],
        ws_dropped: int = 0,
        ws_refused: int = 0,
        llm_in_flight: int = 0,
        llm_timeouts: int = 0,
        llm: OllamaPool | None = None,
    ) -> str:
        i = f'instance="{self.instance}"'
        lost, recovered = self.storage_outcomes()
        out: list[str] = [
            "# HELP cynic_http_requests_total HTTP requests by route, method and status.",
            "# TYPE cynic_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(
                f'cynic_http_requests_total{{{i},route="{route}",method="{method}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP cynic_http_request_duration_seconds Time to answer an HTTP request.",
            "# TYPE cynic_http_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self.latency_counts.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(
                    f'cynic_http_request_duration_seconds_bucket{{{i},route="{route}",'
                    f'le="{le}"}} {cumulative}'
                )
            out.append(
                f'cynic_http_request_duration_seconds_sum{{{i},route="{route}"}} '
                f"{self.latency_sum[route]:.6f}"
            )
            out.append(
                f'cynic_http_request_duration_seconds_count{{{i},route="{route}"}} {cumulative}'
            )
        out += [
            "# HELP cynic_judgments_total Judgments answered, by outcome.",
            "# TYPE cynic_judgments_total counter",
            f'cynic_judgments_total{{{i},outcome="created"}} {self.judgments_created}',
            f'cynic_judgments_total{{{i},outcome="reused"}} {self.judgments_reused}',
            "# HELP cynic_llm_fallbacks_total MICRO/MACRO requests judged at REFLEX instead.",
            "# TYPE cynic_llm_fallbacks_total counter",
            f"cynic_llm_fallbacks_total{{{i}}} {self.llm_fallbacks}",
            "# HELP cynic_storage_errors_total Failed SurrealDB calls.",
            "# TYPE cynic_storage_errors_total counter",
            f"cynic_storage_errors_total{{{i}}} {storage_errors}",
            "# HELP cynic_journal_errors_total Lines that could not be written to judgments.jsonl.",
            "# TYPE cynic_journal_errors_total counter",
            f"cynic_journal_errors_total{{{i}}} {journal_errors}",
            "# HELP cynic_storage_write_queries_total Queries that stored judgments in SurrealDB.",
            "# TYPE cynic_storage_write_queries_total counter",
            f"cynic_storage_write_queries_total{{{i}}} {write_counts[0]}",
            "# HELP cynic_storage_write_records_total Judgment records those queries carried.",
            "# TYPE cynic_storage_write_records_total counter",
            f"cynic_storage_write_records_total{{{i}}} {write_counts[1]}",
            "# HELP cynic_journal_owed Judgments created here whose journal line is not written"
            " yet (owed, or stored with an outcome not yet confirmed).",
            "# TYPE cynic_journal_owed gauge",
            f"cynic_journal_owed{{{i}}} {self.journal_owed()}",
            "# HELP cynic_storage_lost_writes_total Judgment writes in flight when their"
            " SurrealDB connection broke.",
            "# TYPE cynic_storage_lost_writes_total counter",
            f"cynic_storage_lost_writes_total{{{i}}} {lost}",
            "# HELP cynic_storage_lost_writes_recovered_total Lost writes whose outcome was then"
            " found out (written again, or found stored).",
            "# TYPE cynic_storage_lost_writes_recovered_total counter",
            f"cynic_storage_lost_writes_recovered_total{{{i}}} {recovered}",
            "# HELP cynic_storage_up 1 when SurrealDB is connected.",
            "# TYPE cynic_storage_up gauge",
            f"cynic_storage_up{{{i}}} {int(storage_up)}",
            "# HELP cynic_ws_clients Clients connected to /ws/stream.",
            "# TYPE cynic_ws_clients gauge",
            f"cynic_ws_clients{{{i}}} {ws_clients}",
            "# HELP cynic_ws_events_dropped_total Events a slow /ws/stream client lost (its queue"
            " was full).",
            "# TYPE cynic_ws_events_dropped_total counter",
            f"cynic_ws_events_dropped_total{{{i}}} {ws_dropped}",
            "# HELP cynic_ws_refused_total /ws/stream clients refused at the per-instance cap.",
            "# TYPE cynic_ws_refused_total counter",
            f"cynic_ws_refused_total{{{i}}} {ws_refused}",
            "# HELP cynic_llm_calls_in_flight LLM calls of this instance under way now.",
            "# TYPE cynic_llm_calls_in_flight gauge",
            f"cynic_llm_calls_in_flight{{{i}}} {llm_in_flight}",
            "# HELP cynic_llm_timeouts_total LLM calls abandoned at the LLM timeout (waiting for a"
            " slot or for Ollama).",
            "# TYPE cynic_llm_timeouts_total counter",
            f"cynic_llm_timeouts_total{{{i}}} {llm_timeouts}",
            "# HELP cynic_llm_degraded_total MICRO/MACRO judgments answered at REFLEX, by reason.",
            "# TYPE cynic_llm_degraded_total counter",
            *(
                f'cynic_llm_degraded_total{{{i},reason="{reason}"}} {n}'
                for reason, n in self.llm_degraded.items()
            ),
        ]
        if llm is not None:
            out += self._render_llm(i, llm)
        return "\n".join(out) + "\n"

    @staticmethod
    def _render_llm(i: str, llm: OllamaPool) -> list[str]:
        out = [
            "# HELP cynic_llm_calls_waiting LLM calls of this instance waiting for a slot now.",
            "# TYPE cynic_llm_calls_waiting gauge",
            f"cynic_llm_calls_waiting{{{i}}} {llm.waiting}",
            "# HELP cynic_llm_slot_wait_seconds_total Time LLM calls spent waiting for a slot.",
            "# TYPE cynic_llm_slot_wait_seconds_total counter",
            f"cynic_llm_slot_wait_seconds_total{{{i}}} {llm.slot_wait_seconds_total:.6f}",
            "# HELP cynic_llm_slot_waits_total LLM calls that waited for a slot (or got one).",
            "# TYPE cynic_llm_slot_waits_total counter",
            f"cynic_llm_slot_waits_total{{{i}}} {llm.slot_waits_total}",
            "# HELP cynic_llm_server_up 1 when the Ollama server answered last and its breaker"
            " is closed.",
            "# TYPE cynic_llm_server_up gauge",
        ]
        servers = [(f'{i},server="{_esc(s.url)}"', s) for s in llm.servers]
        out += [f"cynic_llm_server_up{{{labels}}} {int(s.up)}" for labels, s in servers]
        out += [
            "# HELP cynic_llm_server_in_flight LLM calls of this instance at that server now.",
            "# TYPE cynic_llm_server_in_flight gauge",
        ]
        out += [f"cynic_llm_server_in_flight{{{labels}}} {s.in_flight}" for labels, s in servers]
        out += [
            "# HELP cynic_llm_calls_total LLM calls by server and how they ended.",
            "# TYPE cynic_llm_calls_total counter",
        ]
        out += [
            f'cynic_llm_calls_total{{{labels},outcome="{outcome}"}} {n}'
            for labels, s in servers
            for outcome, n in s.calls.items()
        ]
        return out
