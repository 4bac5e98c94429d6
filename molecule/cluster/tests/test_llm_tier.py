"""The LLM tier: MICRO and MACRO through nginx with the stand-in's serving model on (cpu-2b), two Ollama servers.

molecule.yml puts data and lb in cynic_llm; every instance's OLLAMA_URL lists both and sends each call to the
least busy. The timings here are ratios within one run (a MICRO answer against a REFLEX one), never thresholds.
"""
from __future__ import annotations

import json
import re

from conftest import ADDRESS, APP1, DATA, INSTANCE_IDS, INSTANCES, LB, record, run_py

testinfra_hosts = [f"ansible://{LB}"]

OLLAMAS = [f"http://{ADDRESS[DATA]}:11434", f"http://{ADDRESS[LB]}:11434"]
INSTANCE_URLS = [f"http://{ADDRESS[h]}:{p}" for h, ports in INSTANCES.items() for p in ports.values()]

JUDGE = """
import json, time, urllib.request, uuid
from concurrent.futures import ThreadPoolExecutor

def judge(level):
    body = {"content": "def add(a, b): return a + b  # %s %s" % (level, uuid.uuid4().hex), "reality": "CODE",
            "level": level}
    req = urllib.request.Request("http://127.0.0.1/judge", method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.loads(r.read())
    answer["seconds"] = time.monotonic() - start
    return answer
"""


def calls_by_server(host) -> dict[str, int]:
    """cynic_llm_calls_total{outcome="ok"} of every instance, summed by server (read from the lb host)."""
    totals = dict.fromkeys(OLLAMAS, 0)
    for url in INSTANCE_URLS:
        text = host.check_output(f"curl -sf {url}/metrics")
        for server, value in re.findall(r'^cynic_llm_calls_total\{[^}]*server="([^"]+)"[^}]*outcome="ok"[^}]*\} (\d+)',
                                        text, re.MULTILINE):
            totals[server] = totals.get(server, 0) + int(value)
    return totals


def test_micro_and_macro_are_judged_by_the_llm_through_nginx(host):
    answers = run_py(host, JUDGE + """
print(json.dumps([judge("REFLEX"), judge("MICRO"), judge("MACRO")]))
""")
    reflex, micro, macro = answers
    record("llm levels", {a["level_used"]: {k: a.get(k) for k in ("llm_calls", "degraded", "seconds")} for a in answers})
    assert (reflex["level_used"], reflex["llm_calls"], reflex["degraded"]) == ("REFLEX", 0, False)
    assert (micro["level_used"], micro["llm_calls"], micro["degraded"]) == ("MICRO", 1, False), micro
    assert micro["degraded_reason"] is None and micro["supersedes"] == []
    assert (macro["level_used"], macro["llm_calls"], macro["degraded"]) == ("MACRO", 3, False), macro
    assert set(micro["dog_votes"]) > set(reflex["dog_votes"])  # the LLM dog voted
    # The serving model is on: a model's answer costs what a CPU takes (seconds), REFLEX microseconds.
    assert micro["seconds"] > 20 * reflex["seconds"], answers


def test_calls_spread_over_both_ollama_servers(host):
    before = calls_by_server(host)
    answers = run_py(host, JUDGE + """
with ThreadPoolExecutor(2) as pool:
    print(json.dumps(list(pool.map(judge, ["MACRO"] * 2))))
""")
    after = calls_by_server(host)
    spread = {server: after[server] - before[server] for server in OLLAMAS}
    record("llm calls by server", spread)
    # Two MACRO at once are six calls: three on each CPU server finish within the MACRO deadline.
    assert [(a["level_used"], a["degraded"]) for a in answers] == [("MACRO", False)] * 2, answers
    assert sum(spread.values()) == 6, spread
    assert all(n > 0 for n in spread.values()), spread  # least busy first: both took calls


def test_health_lists_both_servers_and_each_has_the_model_loaded(host, cluster):
    for url in INSTANCE_URLS:
        health = json.loads(host.check_output(f"curl -sf {url}/health"))
        servers = {s["url"]: s["up"] for s in health["llm"]["servers"]}
        assert servers == dict.fromkeys(OLLAMAS, True), (url, health["llm"])
    for server in OLLAMAS:
        ps = json.loads(cluster[APP1].check_output(f"curl -sf {server}/api/ps"))  # only the app hosts may reach both
        loaded = {m["name"]: m for m in ps["models"]}
        assert "gemma2:2b" in loaded and loaded["gemma2:2b"]["expires_at"], (server, ps)
    assert len(INSTANCE_URLS) == len(INSTANCE_IDS)
