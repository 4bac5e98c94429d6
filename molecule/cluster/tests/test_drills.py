"""The fault drills of playbooks/drills/, each under 150 req/s from the lb host, as operators run them."""
from __future__ import annotations

import pytest
from conftest import DATA, INSTANCE_IDS, LB, drill_result, record, run_playbook

testinfra_hosts = [f"ansible://{LB}"]


@pytest.fixture
def run_drill(tmp_path):
    def run(name: str, *extra: str):
        out = tmp_path / f"{name}.json"
        result = run_playbook(f"playbooks/drills/{name}.yml", "-e", f"drill_result_file={out}", *extra)
        return result, drill_result(out, result.stdout)
    return run


def test_kill_one_instance(run_drill, secret):
    result, summary = run_drill("kill_instance")
    record("kill_instance", summary)
    assert result.returncode == 0, result.stdout[-4000:]
    assert summary["rate"] == 150 and summary["planned"] == 150 * 30
    assert summary["error_rate"] <= 0.005
    assert summary["nrestarts_after"] == summary["nrestarts_before"] + 1
    assert sorted(summary["instances"]) == INSTANCE_IDS  # the killed one came back and served again
    assert secret not in result.stdout


def test_restart_surrealdb(run_drill, secret):
    # -v: the run hands SurrealDB's password to cynic_cluster_facts; it must not show.
    result, summary = run_drill("restart_surrealdb", "-v")
    record("restart_surrealdb", summary)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "500" not in summary["status_codes"]
    assert summary["judgments_missing"] == 0 and summary["duplicate_cells"] == 0
    assert summary["judgments_answered_200"] >= 0.9 * summary["planned"]
    assert secret not in result.stdout


def test_rolling_update_under_load(run_drill, secret):
    result, summary = run_drill("rolling_update")
    record("rolling_update", summary)
    assert result.returncode == 0, result.stdout[-4000:]
    assert summary["status_codes"] == {"200": summary["planned"]}
    assert summary["instances_restarted"] == len(INSTANCE_IDS)
    assert secret not in result.stdout


def test_cynic_home_unwritable(run_drill, secret):
    # 35 s of load, not 30: breaking and fixing CYNIC_HOME are Ansible tasks that took up to 5 s
    # on this shared 2-core machine, and the last 5 s of load must come after the fix.
    result, summary = run_drill("cynic_home_unwritable", "-e", "drill_duration=35")
    record("cynic_home_unwritable", summary)
    assert secret not in result.stdout
    # No 500, no crash or restart, recovery: these must hold whatever the node does.
    assert "robustness checks passed" in result.stdout, result.stdout[-4000:]
    assert "500" not in summary["status_codes"]
    assert summary["instance_restarts"] == 0 and summary["main_pids_unchanged"]
    assert summary["recovered_and_journaling"]
    # The contract too: a judgment that cannot be journaled is a 503 with Retry-After.
    assert result.returncode == 0, result.stdout[-4000:]


def test_kill_surrealdb(run_drill, secret, cluster):
    # -v: the run hands SurrealDB's password to cynic_cluster_facts and reads the process's
    # environment (which holds it too); it must not show.
    result, summary = run_drill("kill_surrealdb", "-v")
    record("kill_surrealdb", summary)
    assert result.returncode == 0, result.stdout[-4000:]
    # Durable acknowledgements by default (surrealdb_sync_data): the killed process and the new one
    # ran with SURREAL_SYNC_DATA=true, and the stand-in's engine got it (sync=every; the real 2.x
    # server logs "Wait for disk sync acknowledgement: true").
    assert str(summary["surrealdb_sync_data"]).lower() == "true"
    assert str(summary["surrealdb_sync_data_after"]).lower() == "true"
    started = cluster[DATA].check_output(
        "journalctl -u surrealdb.service -o cat --no-pager | grep -E 'Starting kvs store|Wait for disk sync' | tail -n 1")
    assert "sync=every" in started or "acknowledgement: true" in started, started
    # systemd, not the drill, brought it back; nothing answered 200 is lost.
    assert summary["nrestarts_after"] >= summary["nrestarts_before"] + 1
    assert summary["main_pid_after"] != summary["main_pid_before"]
    assert summary["judgments_lost"] == 0 and summary["duplicate_cells"] == 0
    assert summary["judgments_answered_200"] >= summary["planned"] - summary["max_503"]
    assert "500" not in summary["status_codes"]
    assert secret not in result.stdout


def test_stop_one_ollama_under_mixed_load(run_drill, secret):
    # 1 in 300 MICRO at 150 req/s; the lb host's Ollama (the last of cynic_llm) stopped for 20 s.
    result, summary = run_drill("stop_ollama")
    record("stop_ollama", summary)
    assert result.returncode == 0, result.stdout[-4000:]
    assert summary["status_codes"] == {"200": summary["planned"]}  # no 500, nothing lost on the way
    assert summary["kinds"]["micro"]["planned"] == summary["planned"] // 300
    assert summary["llm_asked"] >= summary["kinds"]["micro"]["ok"] > 0
    assert summary["judgments_lost"] == 0 and summary["duplicate_cells"] == 0
    assert summary["degraded_share_before"] < summary["degraded_share_stopped"]
    assert summary["degraded_share_tail"] < summary["degraded_share_stopped"]
    assert summary["calls_to_it_after_restart"] > 0  # the instances came back to it
    assert secret not in result.stdout
