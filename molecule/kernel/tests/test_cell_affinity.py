"""Duplicate work of the kernel under least_conn and under cell affinity (nginx_lb_strategy cell_affinity):
the same workload of repeated cells, some concurrent, through nginx to the three instances.

The kernel has no consensus and no memory of cells: every request is a judgment, whatever the balancing.
What balancing changes is where a cell's repeats are judged: under least_conn on several instances, under
cell affinity on one. Figures: reports/bench-kernel.md (make bench-kernel)."""
from __future__ import annotations

import json
import time

import pytest
from conftest import UPSTREAMS, record, run_playbook


def duplicates(tmp_path, strategy: str, run_id: str) -> dict:
    out = tmp_path / f"{strategy}.json"
    result = run_playbook("duplicates.yml", "-e", f"strategy={strategy}", "-e", f"run_id={run_id}",
                          "-e", f"result_file={out}")
    assert result.returncode == 0, result.stdout[-4000:]
    facts = json.loads(out.read_text())
    record(f"duplicates_{strategy}", {key: facts[key] for key in ("ok", "errors", "dropped", "duplicates", "instances")})
    return facts


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("duplicates")
    run_id = "aff%d" % int(time.time())
    # cell_affinity first: the second run, least_conn, puts the scenario's own strategy back.
    affinity = duplicates(tmp, "cell_affinity", run_id)
    least_conn = duplicates(tmp, "least_conn", run_id)
    return least_conn, affinity


def test_both_runs_answered_everything(runs):
    for facts in runs:
        assert facts["errors"] == 0 and facts["dropped"] == 0, facts["errors_by_class"]
        assert facts["workload"]["repeat_requests"] > 0.15 * facts["workload"]["requests"], facts["workload"]


def test_the_kernel_judges_every_repeat_whatever_the_balancing(runs):
    # No consensus across instances, no memory of a cell: one judgment per answer, under both strategies.
    for facts in runs:
        dup = facts["duplicates"]
        assert dup["judgments"] == facts["ok"], dup
        assert dup["duplicate_judgments"] > 0 and dup["judgments_per_cell"] > 1, dup


def test_cell_affinity_keeps_each_cell_on_one_instance(runs):
    least_conn, affinity = runs
    assert least_conn["duplicates"]["cells_on_several_instances"] > 0, least_conn["duplicates"]
    assert affinity["duplicates"]["cells_on_several_instances"] == 0, affinity["duplicates"]
    # and the hash still spreads the cells over the instances
    assert len(affinity["instances"]) >= 2 and set(affinity["instances"]) <= set(UPSTREAMS), affinity["instances"]


def test_least_conn_is_back(host):
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert "hash $request_body" not in conf and "least_conn;" in conf
