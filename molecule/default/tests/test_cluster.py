"""The whole stack behind nginx on one host: spread, consensus in SurrealDB, WebSocket events, stickiness.

The rolling update under load on one host is the kernel scenario's drill (the same playbook), on several
hosts the cluster scenario's."""
from __future__ import annotations

import json

from conftest import run_playbook, run_py

INSTANCES = 3
LB = "http://127.0.0.1:80"
VENV_PY = "/opt/cynic/venv/bin/python"  # has websockets (uvicorn[standard])


def test_every_unit_active(host):
    for unit in ["surrealdb", "ollama", "nginx", *(f"cynic@{i}" for i in range(1, INSTANCES + 1))]:
        svc = host.service(unit)
        assert svc.is_running, unit
        assert svc.is_enabled, unit


def test_instances_healthy_with_distinct_ids(host):
    ids = []
    for port in range(8001, 8001 + INSTANCES):
        health = json.loads(host.check_output(f"curl -sf http://127.0.0.1:{port}/health"))
        assert health["status"] in ("alive", "degraded"), health
        assert health["storage"]["surreal"] == "connected", health
        ids.append(health["instance_id"])
    assert len(set(ids)) == INSTANCES, ids


def test_requests_through_nginx_reach_every_instance(host):
    seen = run_py(host, f"""
        import json, urllib.request
        seen = {{}}
        for i in range(30):
            req = urllib.request.Request("{LB}/judge", method="POST",
                data=json.dumps({{"content": f"spread probe {{i}}"}}).encode(),
                headers={{"Content-Type": "application/json"}})
            with urllib.request.urlopen(req, timeout=10) as r:
                iid = r.headers["X-Instance-ID"]
                seen[iid] = seen.get(iid, 0) + 1
        print(json.dumps(seen))
    """)
    assert len(seen) == INSTANCES, seen


def test_judgment_through_nginx_is_stored_in_surrealdb(host, hostvars):
    answer = run_py(host, f"""
        import json, urllib.request, uuid
        req = urllib.request.Request("{LB}/judge", method="POST",
            data=json.dumps({{"content": "def f(): return " + uuid.uuid4().hex, "reality": "CODE"}}).encode(),
            headers={{"Content-Type": "application/json"}})
        with urllib.request.urlopen(req, timeout=10) as r:
            print(r.read().decode())
    """)
    assert answer["verdict"] in ("HOWL", "WAG", "GROWL", "BARK")
    assert answer["confidence"] <= 0.618
    password = hostvars["surrealdb_root_password"]
    stored = json.loads(host.check_output(
        "curl -sf -u root:%s -H 'Accept: application/json' -H 'Surreal-NS: cynic' -H 'Surreal-DB: cynic' "
        "--data-binary %s http://127.0.0.1:8000/sql",
        password, f"SELECT * FROM judgment WHERE cell_id = '{answer['cell_id']}';",
    ))
    rows = stored[-1]["result"]
    assert len(rows) == 1, stored
    assert answer["judgment_id"] in json.dumps(rows[0]), rows


def test_websocket_through_nginx_receives_judgment_created(host):
    # The event comes from the instance that created the judgment, so hold a socket on every
    # instance (least_conn spreads long-lived sockets), then judge a new cell.
    result = run_py(host, f"""
        import asyncio, json, urllib.request, uuid
        import websockets

        async def main():
            sockets, ids = [], set()
            for _ in range(12):
                ws = await websockets.connect("ws://127.0.0.1/ws/stream", open_timeout=5)
                hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                sockets.append(ws)
                ids.add(hello["instance_id"])
                if len(ids) == {INSTANCES}:
                    break
            body = json.dumps({{"content": "ws probe " + uuid.uuid4().hex}}).encode()
            req = urllib.request.Request("{LB}/judge", data=body, method="POST",
                                         headers={{"Content-Type": "application/json"}})
            answer = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=10).read()))

            async def wait_event(ws):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("type") == "JUDGMENT_CREATED" and msg["payload"].get("judgment_id") == answer["judgment_id"]:
                        return msg

            done, pending = await asyncio.wait([asyncio.create_task(wait_event(ws)) for ws in sockets], timeout=10)
            for task in pending:
                task.cancel()
            events = [t.result() for t in done if not t.exception()]
            print(json.dumps({{"instances": sorted(ids), "events": len(events), "judgment_id": answer["judgment_id"]}}))

        asyncio.run(main())
    """, python=VENV_PY)
    assert len(result["instances"]) == INSTANCES, result
    assert result["events"] == 1, result


# Four threads POST /judge back to back for SECONDS and count answers by status (or error class).
def test_stickiness(host):
    result = run_playbook("nginx_sticky.yml", "-e", "nginx_lb_sticky=true")
    assert result.returncode == 0, result.stdout[-3000:]
    try:
        spread = run_py(host, f"""
            import json, urllib.request
            def hit(cookie=None):
                req = urllib.request.Request("{LB}/health")
                if cookie:
                    req.add_header("Cookie", cookie)
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.headers["X-Instance-ID"], r.headers.get("Set-Cookie")
            first, set_cookie = hit()
            cookie = set_cookie.split(";")[0]
            sticky = [hit(cookie)[0] for _ in range(20)]
            cookieless = sorted({{hit()[0] for _ in range(40)}})
            print(json.dumps({{"cookie": cookie, "sticky": sticky, "cookieless": cookieless}}))
        """)
    finally:
        restore = run_playbook("nginx_sticky.yml", "-e", "nginx_lb_sticky=false")
    assert spread["cookie"].startswith("cynic_affinity="), spread
    assert len(set(spread["sticky"])) == 1, spread
    assert len(spread["cookieless"]) == INSTANCES, spread
    assert restore.returncode == 0, restore.stdout[-3000:]
