"""The pure parts of `make bench`'s LLM tier (scripts/bench.py): the mix option, the arithmetic, /metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import bench  # noqa: E402  (after the path it needs)

METRICS = """# HELP cynic_llm_calls_in_flight LLM calls of this instance under way now.
cynic_llm_calls_in_flight{instance="lab-1"} 3
cynic_llm_calls_waiting{instance="lab-1"} 1
cynic_llm_server_in_flight{instance="lab-1",server="http://127.0.0.1:11434"} 2
cynic_llm_calls_total{instance="lab-1",server="http://127.0.0.1:11434",outcome="ok"} 7
cynic_http_requests_total{instance="lab-1",route="/judge",method="POST",status="200"} 99
cynic_llm_broken_line{instance="lab-1"} not-a-number
"""


def test_default_mix_is_ninety_ten():
    kinds = bench.parse_llm_mix(bench.DEFAULT_LLM_MIX)
    assert kinds == [("reflex", 90.0, "REFLEX"), ("micro", 10.0, "MICRO")]
    assert bench.llm_calls_per_request(kinds) == pytest.approx(0.1)
    assert bench.mix_label(kinds) == "90 % REFLEX / 10 % MICRO"


def test_macro_counts_three_calls():
    kinds = bench.parse_llm_mix("r=1:reflex,m=1:MACRO")
    assert kinds[1][2] == "MACRO"
    assert bench.llm_calls_per_request(kinds) == pytest.approx(1.5)


@pytest.mark.parametrize("text", ["micro=10", "=1:MICRO", "m=x:MICRO", "m=-1:MICRO", "m=1:META",
                                  "m=1:MICRO,m=2:MICRO", "r=1:REFLEX", "m=inf:MICRO"])
def test_bad_mix_is_refused_clearly(text):
    with pytest.raises(ValueError):
        bench.parse_llm_mix(text)


def test_expected_capacity_grows_with_servers():
    one = bench.expected_capacity(1, 4, 8.0, 0.1)
    two = bench.expected_capacity(2, 4, 8.0, 0.1)
    assert two["llm_calls_per_s"] == pytest.approx(2 * one["llm_calls_per_s"])
    assert one["requests_per_s"] == pytest.approx(one["llm_calls_per_s"] / 0.1, rel=0.01)


def test_parse_metrics_sums_over_instances_and_keeps_other_labels():
    two = METRICS + METRICS.replace("lab-1", "lab-2")
    series = bench.parse_metrics(two)
    assert series["cynic_llm_calls_in_flight"] == 6
    assert series['cynic_llm_calls_total{outcome="ok",server="http://127.0.0.1:11434"}'] == 14
    assert not any(k.startswith("cynic_http") for k in series)
    assert not any("broken" in k for k in series)
    only = bench.parse_metrics(two, ("cynic_llm_calls_waiting",))
    assert list(only) == ["cynic_llm_calls_waiting"]


def test_counter_deltas_and_gauges():
    before = {"cynic_llm_calls_total": 5.0, "cynic_llm_calls_in_flight": 3.0}
    after = {"cynic_llm_calls_total": 9.0, "cynic_llm_calls_in_flight": 0.0, "cynic_llm_timeouts_total": 0.0}
    assert bench.counter_deltas(before, after) == {"cynic_llm_calls_total": 4.0}
    summary = bench.gauge_summary([{"g": 1.0}, {"g": 3.0}, {}])
    assert summary["samples"] == 3
    assert summary["g"] == {"mean": pytest.approx(1.33), "max": 3.0}
    assert bench.gauge_summary([]) == {"samples": 0}
