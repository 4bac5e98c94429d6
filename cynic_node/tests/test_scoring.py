"""The REFLEX judge: scores follow content, in both directions; φ rules hold."""

from __future__ import annotations

import statistics
import time

import pytest

from cynic_node.scoring import (
    AXIOMS,
    PHI,
    REALITY_WEIGHTS,
    score_reflex,
    verdict_for,
    weighted_geometric_mean,
)

GOOD_CODE = '''"""Parse KEY=VALUE configuration files."""

from pathlib import Path


def read_config(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from path into a dictionary."""
    result: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def test_read_config(tmp_path: Path) -> None:
    """Two lines give two entries."""
    config = tmp_path / "app.conf"
    config.write_text("a=1\\nb=2\\n")
    assert read_config(config) == {"a": "1", "b": "2"}
'''

BAD_CODE = """def f(x):
    # TODO fix this
    try:
        r = eval(x)
    except:
        pass
    # FIXME later
    try:
        exec(x)
    except:
        r = None
    # TODO: XXX hack
    print(r)
    return r
"""


def q(text: str, reality: str = "CODE") -> float:
    return score_reflex(text, reality).q_score


def test_documented_tested_code_beats_dangerous_code() -> None:
    good, bad = score_reflex(GOOD_CODE, "CODE"), score_reflex(BAD_CODE, "CODE")
    assert good.q_score > bad.q_score + 25
    assert good.verdict == "HOWL"
    assert bad.verdict in ("GROWL", "BARK")
    assert good.axiom_scores["VERIFY"] > bad.axiom_scores["VERIFY"]
    assert good.axiom_scores["FIDELITY"] > bad.axiom_scores["FIDELITY"]


@pytest.mark.parametrize(
    "defect",
    [
        "\nresult = eval(user_input)\n",
        "\ntry:\n    risky()\nexcept:\n    pass\n",
        "\n# TODO: handle errors\n# FIXME: this is wrong\n# TODO: HACK\n",
        '\nAPI_KEY = "sk-live-1234567890abcdef"\n',
        "\nos.system('rm -rf ' + path)\n",
    ],
)
def test_adding_a_defect_lowers_the_score(defect: str) -> None:
    assert q(GOOD_CODE + defect) < q(GOOD_CODE)


@pytest.mark.parametrize(
    ("plain", "better"),
    [
        # documentation raises it
        (
            "def add(a, b):\n    return a + b\n" * 1,
            'def add(a, b):\n    """Sum of a and b."""\n    return a + b\n',
        ),
        # tests raise it
        (
            "def add(a, b):\n    return a + b\n",
            "def add(a, b):\n    return a + b\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        ),
        # removing eval raises it
        ("def load(s):\n    return eval(s)\n", "def load(s):\n    return json.loads(s)\n"),
    ],
)
def test_improving_code_raises_the_score(plain: str, better: str) -> None:
    assert q(better) > q(plain)


def test_prose_responds_to_evidence_and_hype() -> None:
    sober = (
        "According to the 2023 annual report (https://example.org/report), revenue grew "
        "12% year on year. Growth might slow next quarter as costs rose too."
    )
    hype = "BUY NOW!!! This token will 100x, guaranteed moon, free money, WAGMI!!! Never sell!!!"
    for reality in ("MARKET", "SOCIAL", "SOLANA"):
        assert q(sober, reality) > q(hype, reality) + 15


def test_deterministic() -> None:
    assert score_reflex(BAD_CODE, "CODE") == score_reflex(BAD_CODE, "CODE")


def test_empty_content_scores_zero() -> None:
    s = score_reflex("   \n", "CODE")
    assert s.q_score == 0.0
    assert s.verdict == "BARK"


@pytest.mark.parametrize(
    ("score", "verdict"),
    [
        (100, "HOWL"),
        (82, "HOWL"),
        (81.999, "WAG"),
        (61.8, "WAG"),
        (61.799, "GROWL"),
        (38.2, "GROWL"),
        (38.199, "BARK"),
        (0, "BARK"),
    ],
)
def test_verdict_thresholds(score: float, verdict: str) -> None:
    # HOWL >= 82, WAG >= 61.8, GROWL >= 38.2, BARK below (the contract's figures).
    assert verdict_for(score) == verdict


def test_q_is_weighted_geometric_mean_and_zero_if_any_axiom_is_zero() -> None:
    w = REALITY_WEIGHTS["CODE"]
    assert w["VERIFY"] == pytest.approx(PHI**2)
    assert w["FIDELITY"] == pytest.approx(1 / PHI)
    scores = {"FIDELITY": 90.0, "PHI": 80.0, "VERIFY": 40.0, "CULTURE": 70.0, "BURN": 60.0}
    expected = 1.0
    total = sum(w.values())
    for axiom, value in scores.items():
        expected *= value ** (w[axiom] / total)
    assert weighted_geometric_mean(scores, w) == pytest.approx(expected)
    assert weighted_geometric_mean({**scores, "BURN": 0.0}, w) == 0.0


@pytest.mark.parametrize("reality", list(REALITY_WEIGHTS))
def test_scores_are_in_range(reality: str) -> None:
    for text in (GOOD_CODE, BAD_CODE, "x", "hello world " * 500):
        s = score_reflex(text, reality)
        assert 0 <= s.q_score <= 100
        assert set(s.axiom_scores) == set(AXIOMS)
        assert all(0 <= v <= 100 for v in s.axiom_scores.values())
        assert all(0 <= v <= 100 for v in s.dog_votes.values())
        assert set(s.dog_votes) == {"CYNIC", "GUARDIAN", "ANALYST", "JANITOR"}
        assert 0 <= s.residual_variance <= 1
        assert 0 <= s.consensus_votes <= len(s.dog_votes)


def test_reflex_is_well_under_a_millisecond_for_a_kilobyte() -> None:
    text = (GOOD_CODE + BAD_CODE) * 2
    text = text[:1024]
    runs = []
    for i in range(300):
        started = time.perf_counter()
        score_reflex(text + str(i), "CODE")
        runs.append(time.perf_counter() - started)
    # Typically 0.1-0.2 ms; the bound leaves room for a loaded CI machine.
    assert statistics.median(runs) < 0.001
