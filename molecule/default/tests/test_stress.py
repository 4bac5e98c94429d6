"""playbooks/stress.yml (the role cynic.cluster.stress) against the converged default scenario: 150 req/s
for 60 s through nginx.

The playbook writes the report, the plot and the raw facts on the controller; these tests assert
from the facts (stress-facts.json), not from the playbook's output.
"""
from __future__ import annotations

import json

import pytest
from conftest import REPO, run_playbook

RATE = 150
DURATION = 60
INSTANCES = 3
MIN_RATE = RATE * 0.99  # 148.5 req/s
MAX_ERROR_RATE = 0.01
MIN_SHARE = 0.25
REPORT_DIR = REPO / "reports" / "molecule-default"
REPORT_FILES = ("stress-facts.json", "stress-report.md", "stress-latency.png")
JOURNAL = "/var/lib/cynic/judgments.jsonl"
# The LLM tier's run after the others: 10 % MICRO at 10 req/s for 10 s.
MIX = {"stress_mix": [{"name": "reflex", "weight": 9, "level": "REFLEX"}, {"name": "micro", "weight": 1, "level": "MICRO"}],
       "stress_mix_rate": 10, "stress_mix_duration": 10, "stress_max_degraded_share": 0.5}


def journal_lines(host) -> int:
    return int(host.check_output(f"if [ -f {JOURNAL} ]; then awk 'END {{ print NR }}' {JOURNAL}; else echo 0; fi"))


def test_check_mode_plans_and_sends_nothing(host, tmp_path):
    before = journal_lines(host)
    result = run_playbook(
        "playbooks/stress.yml", "--check",
        "-e", f"stress_rate={RATE}", "-e", "stress_duration=5",
        "-e", f"stress_report_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stdout[-5000:]
    # The result callback may wrap the message over lines: compare with whitespace folded.
    assert "nothing was sent" in " ".join(result.stdout.split()), result.stdout[-5000:]
    assert journal_lines(host) == before
    assert not list(tmp_path.iterdir())  # check mode writes no report


@pytest.fixture(scope="module")
def stress():
    """One real run; its facts, and the playbook's output for the failure messages."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (REPORT_DIR / name).unlink(missing_ok=True)
    result = run_playbook(
        "playbooks/stress.yml",
        "-e", f"stress_rate={RATE}", "-e", f"stress_duration={DURATION}",
        "-e", f"stress_report_dir={REPORT_DIR}",
        "-e", json.dumps(MIX),
    )
    facts_file = REPORT_DIR / "stress-facts.json"
    assert facts_file.exists(), result.stdout[-5000:]
    return json.loads(facts_file.read_text()), result.stdout


def test_the_playbook_passed(stress):
    facts, output = stress
    failed = [item["line"] for item in facts["checklist"] if not item["passed"]]
    assert not failed, failed
    assert facts["passed"] is True
    assert "every item of the checklist passed" in output, output[-5000:]
    # the checklist read the load generator's own verdicts: one per threshold of the cluster run
    checks = {check["name"]: check for check in facts["cluster_run"]["checks"]}
    assert set(checks) == {"min_rate_ratio", "max_error_rate", "min_instance_share", "q_score_range",
                           "max_duplicate_judgments", "max_q_shift"}, checks
    assert all(check["passed"] for check in checks.values()), checks


def test_a_former_setting_is_refused_with_its_successor(host):
    before = journal_lines(host)
    result = run_playbook("playbooks/stress.yml", "-e", "cynic_stress_rate=300")
    assert result.returncode != 0
    assert "stress_rate (was cynic_stress_rate)" in result.stdout, result.stdout[-5000:]
    assert journal_lines(host) == before


def test_the_target_rate_was_sustained(stress):
    run = stress[0]["cluster_run"]
    assert run["target_rate"] == RATE and run["duration_s"] == DURATION
    assert run["planned"] == RATE * DURATION
    assert run["achieved_rate"] >= MIN_RATE, run


def test_error_rate_under_one_percent(stress):
    run = stress[0]["cluster_run"]
    assert run["error_rate"] < MAX_ERROR_RATE, (run["status_codes"], run["errors_by_class"], run["dropped"])


def test_each_instance_answered_a_quarter_at_least(stress):
    facts = stress[0]
    run = facts["cluster_run"]
    expected = facts["settings"]["expected_instances"]
    assert len(expected) == INSTANCES, expected
    assert sorted(run["instances"]) == sorted(expected), run["instances"]
    for instance in expected:
        assert run["instances"][instance] / run["sent"] >= MIN_SHARE, run["instances"]


def test_no_data_loss(stress):
    facts = stress[0]
    storage = facts["storage"]
    run = facts["cluster_run"]
    answered = run["judgment_ids_count"] + (facts["single_run"] or {}).get("judgment_ids_count", 0)
    # one judgment per distinct cell: a quarter of the requests repeat a cell
    assert run["judgment_ids_count"] == run["duplicates"]["cells_answered"] >= 0.7 * RATE * DURATION, run["duplicates"]
    assert storage["judgments_checked"] >= answered, storage
    assert storage["missing_judgments"] == 0, storage["missing_judgment_ids"]


def test_no_duplicates(stress):
    storage = stress[0]["storage"]
    assert storage["judgment_count"] > 0
    assert storage["duplicate_cells"] == 0, storage["surreal"]["duplicate_examples"]


def test_repeated_cells_some_concurrent_get_one_judgment_each(stress):
    run = stress[0]["cluster_run"]
    work, dup = run["workload"], run["duplicates"]
    assert work["repeat_requests"] >= 0.2 * work["requests"] and work["concurrent_repeats"] > 0, work
    # repeats reached other instances than their cell's first request: consensus, not luck, held them to one
    assert dup["cells_on_several_instances"] > 0, dup
    assert dup["duplicate_judgments"] == 0 and dup["judgments_per_cell"] == 1, dup


def test_the_corpus_scores_the_same_at_rest_and_under_load(stress):
    facts = stress[0]
    run, rest = facts["cluster_run"], facts["rest_run"]
    vs = run["q_vs_rest"]
    assert vs["texts_compared"] == rest["workload"]["corpus_cells"] >= 100, vs
    # a varied corpus, not one sentence: many distinct scores at rest
    assert vs["at_rest"]["p90"] - vs["at_rest"]["p10"] >= 10, vs
    assert vs["mean_abs_difference"] <= facts["settings"].get("max_q_shift", 1.0), vs


def test_every_instance_still_healthy_and_logs_in_cynic_home(stress):
    facts = stress[0]
    for host_facts in facts["health"].values():
        assert host_facts["all_healthy"], host_facts["instances"]
    for journal in facts["journals"].values():
        assert journal["present"] and journal["lines_after"] > journal["lines_before"], journal


def test_the_report_and_the_plot_exist(stress):
    report = (REPORT_DIR / "stress-report.md").read_text()
    for title in ("Instances healthy", "Load spread", f"{RATE} req/s sustained", "Error rate at most 1%",
                  "Q-Scores held", "No data loss", "No duplicates", "Logs in CYNIC_HOME"):
        assert f"{title}: PASS" in report, title
    assert "One instance vs all instances" in report
    assert "stress-latency.png" in report
    png = (REPORT_DIR / "stress-latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_the_llm_tier_run_reports_kinds_degraded_share_and_queue(stress):
    facts, _output = stress
    mix = facts["mix_run"]
    assert mix["kinds"]["micro"]["planned"] == mix["planned"] // 10 > 0
    assert mix["kinds"]["micro"]["level_used"].get("MICRO", 0) + mix["kinds"]["micro"]["degraded"] == mix["kinds"]["micro"]["ok"]
    assert mix["kinds"]["reflex"]["level_used"] == {"REFLEX": mix["kinds"]["reflex"]["ok"]}
    assert mix["llm_asked"] == mix["kinds"]["micro"]["ok"] and 0 <= mix["degraded_share"] <= 0.5
    item = next(i for i in facts["checklist"] if i["key"] == "degraded_share")
    assert item["passed"], item
    # Every instance's LLM queue was read (this host is in cynic_metrics_allow by default: loopback).
    assert len(facts["llm_metrics"]) == INSTANCES
    assert all("cynic_llm_calls_waiting{" in " ".join(i["metrics"]) for i in facts["llm_metrics"]), facts["llm_metrics"]
    report = (REPORT_DIR / "stress-report.md").read_text()
    section = report.split("## The LLM tier", 1)[1].split("\n## ", 1)[0]
    assert "| micro | %d |" % mix["kinds"]["micro"]["planned"] in section, section
    assert "Degraded share: %s" % mix["degraded_share"] in section, section
