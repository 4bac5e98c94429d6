"""Tests of the Ollama TEST STAND-IN's structured outputs and serving model.

Real `ollama serve` processes on free ports, with small knob values so the suite stays
fast. Timings are asserted as ratios measured within one run, never as fixed limits.
"""

import http.client
import json
import re
import socket
import threading
import time
from datetime import datetime

import pytest
from test_ollama_standin import Server, load_module, pull

jsonschema = pytest.importorskip("jsonschema")

MODEL = "gemma2:2b"
AXIOMS = ("FIDELITY", "PHI", "VERIFY", "CULTURE", "BURN")
AXIOM_SCHEMA = {
    "type": "object",
    "properties": {a: {"type": "number", "minimum": 0, "maximum": 100} for a in AXIOMS},
    "required": list(AXIOMS),
}
PROMPT = "judge this small text about the cluster and its nodes " * 4   # ~40 prompt tokens


def body(content=PROMPT, stream=False, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream, **extra}


def started(models, **env):
    srv = Server(models, **env)
    pull(srv, MODEL)
    return srv


def wait_ns(reply):
    """Time a reply spent neither loading nor computing: its wait for a slot."""
    return reply["total_duration"] - reply["load_duration"] - reply["prompt_eval_duration"] - reply["eval_duration"]


def parse_rfc3339(stamp):
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------ format


def test_fill_schema_is_valid_for_many_schemas():
    fill, h = load_module().fill_schema, load_module()._hash
    schemas = [
        AXIOM_SCHEMA,
        {"type": "object", "required": ["n"], "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 5},
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "tag": {"type": "string", "enum": ["a", "b", "c"]},
            "ok": {"type": "boolean"},
            "list": {"type": "array", "items": {"type": "integer", "minimum": -2, "maximum": 2},
                     "minItems": 2, "maxItems": 4},
            "name": {"type": "string", "minLength": 40, "maxLength": 60},
            "maybe": {"type": ["null", "number"], "maximum": -10},
            "nested": {"type": "object", "properties": {"deep": {"type": "array", "items": {"type": "boolean"}}}}}},
        {"$defs": {"Axis": {"type": "number", "minimum": 0, "maximum": 100}}, "type": "object",
         "properties": {"a": {"$ref": "#/$defs/Axis"}, "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Axis"}]}},
         "required": ["a", "b"]},
        {"type": "array", "items": {"type": "object", "properties": {"k": {"const": 7}}, "required": ["k"]}},
    ]
    for schema in schemas:
        values = [fill(schema, h("seed", i)) for i in range(60)]
        for value in values:
            jsonschema.validate(value, schema)
        assert len({json.dumps(v, sort_keys=True) for v in values}) > 1 or schema["type"] == "array"


def test_axiom_schema_reply_parses_with_exactly_those_keys(tmp_path):
    srv = started(tmp_path)
    try:
        replies = []
        for text in ("one cell", "another cell", "a third cell"):
            status, reply = srv.json("POST", "/api/chat", body(text, format=AXIOM_SCHEMA))
            assert status == 200
            scores = json.loads(reply["message"]["content"])
            assert sorted(scores) == sorted(AXIOMS)
            assert all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in scores.values())
            jsonschema.validate(scores, AXIOM_SCHEMA)
            replies.append(reply["message"]["content"])
        assert len(set(replies)) == 3   # the prompt takes part
        again = srv.json("POST", "/api/chat", body("one cell", format=AXIOM_SCHEMA))[1]
        assert again["message"]["content"] == replies[0]
        generated = srv.json("POST", "/api/generate", {"model": MODEL, "prompt": "x", "stream": False,
                                                       "format": AXIOM_SCHEMA})[1]
        jsonschema.validate(json.loads(generated["response"]), AXIOM_SCHEMA)
    finally:
        srv.stop()


def test_unusable_format_gets_ollamas_error(tmp_path):
    srv = started(tmp_path)
    try:
        suffix = '; expected "json" or a valid JSON Schema object'
        assert srv.json("POST", "/api/chat", body(format="yaml")) == (
            500, {"error": 'invalid format: "\\"yaml\\""' + suffix})
        assert srv.json("POST", "/api/chat", body(format=5)) == (500, {"error": 'invalid format: "5"' + suffix})
        status, ctype, raw = srv.request("POST", "/api/chat", body(stream=True, format=["json"]))
        assert (status, ctype.split(";")[0]) == (500, "application/json")   # nothing streamed yet
        assert json.loads(raw) == {"error": 'invalid format: "[\\"json\\"]"' + suffix}
        assert srv.json("POST", "/api/generate", {"model": MODEL, "prompt": "x", "stream": False,
                                                  "format": True})[0] == 500
        for unset in ("", None):   # "" and null mean no format
            assert srv.json("POST", "/api/chat", body(format=unset))[0] == 200
    finally:
        srv.stop()


# ------------------------------------------------------------------ serving model


def test_profile_and_knobs(monkeypatch):
    serving = load_module().serving_model
    for key in ("OLLAMA_STANDIN_SERVING", "OLLAMA_STANDIN_LOAD_MS", "OLLAMA_STANDIN_PROMPT_MS_PER_TOKEN",
                "OLLAMA_STANDIN_TOKEN_DELAY_MS", "OLLAMA_STANDIN_SHARED_CPU"):
        monkeypatch.delenv(key, raising=False)
    assert serving() == (0.0, 0.0, 0.0, False)   # off by default
    monkeypatch.setenv("OLLAMA_STANDIN_SERVING", "cpu-2b")
    assert serving() == (2.5, 0.014, 0.056, True)
    monkeypatch.setenv("OLLAMA_STANDIN_LOAD_MS", "0")   # a knob overrides the profile
    monkeypatch.setenv("OLLAMA_STANDIN_TOKEN_DELAY_MS", "fast")   # unreadable: the profile's
    monkeypatch.setenv("OLLAMA_STANDIN_SHARED_CPU", "0")
    assert serving() == (0.0, 0.014, 0.056, False)
    monkeypatch.setenv("OLLAMA_STANDIN_SHARED_CPU", "maybe")   # unreadable: the profile's
    assert serving() == (0.0, 0.014, 0.056, True)
    monkeypatch.setenv("OLLAMA_STANDIN_SERVING", "gpu-70b")   # unknown: no delays, no failure
    assert serving() == (0.0, 0.0, 0.0, False)
    monkeypatch.setenv("OLLAMA_STANDIN_SHARED_CPU", "1")   # on without a profile
    assert serving() == (0.0, 0.0, 0.0, True)


def test_token_counts_follow_characters(tmp_path):
    count = load_module().count_tokens
    assert [count(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [1, 1, 1, 2, 100]
    srv = started(tmp_path)
    try:
        system = "You judge texts."
        turns = [{"role": "system", "content": system}, {"role": "user", "content": PROMPT}]
        status, reply = srv.json("POST", "/api/chat", {"model": MODEL, "messages": turns, "stream": False,
                                                        "format": AXIOM_SCHEMA})
        assert status == 200
        content = reply["message"]["content"]
        # Per message, a token per 4 characters: far more than its words + 1.
        assert reply["prompt_eval_count"] == -(-len(system) // 4) + -(-len(PROMPT) // 4)
        assert reply["prompt_eval_count"] > len(system.split()) + len(PROMPT.split()) + 2
        assert reply["eval_count"] == -(-len(content) // 4) > len(content.split())   # old: one per word
        _, _, chunks = srv.lines("/api/chat", dict(body(stream=True), messages=turns, format=AXIOM_SCHEMA))
        assert "".join(c["message"]["content"] for c in chunks) == content   # words, streamed
        assert chunks[-1]["eval_count"] == reply["eval_count"] and len(chunks) - 1 < reply["eval_count"]
        # num_predict counts the same tokens: the reply is cut to that many.
        plain = srv.json("POST", "/api/chat", body())[1]
        cut = srv.json("POST", "/api/chat", body(options={"num_predict": 5}))[1]
        assert (cut["eval_count"], cut["done_reason"]) == (5, "length") and plain["eval_count"] > 5
        assert plain["message"]["content"].startswith(cut["message"]["content"])
        assert len(cut["message"]["content"]) == 5 * 4
        generated = srv.json("POST", "/api/generate", {"model": MODEL, "prompt": PROMPT, "stream": False})[1]
        assert generated["prompt_eval_count"] == -(-len(" " + PROMPT) // 4)   # system + " " + prompt
        assert len(generated["context"]) == generated["prompt_eval_count"] + generated["eval_count"]
    finally:
        srv.stop()


def test_durations_are_the_time_spent(tmp_path):
    srv = started(tmp_path, OLLAMA_STANDIN_LOAD_MS="300", OLLAMA_STANDIN_PROMPT_MS_PER_TOKEN="5",
                  OLLAMA_STANDIN_TOKEN_DELAY_MS="10")
    try:
        t0 = time.monotonic()
        first = srv.json("POST", "/api/chat", body(options={"num_predict": 4}))[1]
        first_wall = time.monotonic() - t0
        assert 0.9 <= first["load_duration"] / 300e6 <= 2, first   # the first call loads
        assert first["total_duration"] <= first_wall * 1e9
        short, long_ = [], []
        for _ in range(2):
            for n, into in ((4, short), (16, long_)):
                t0 = time.monotonic()
                reply = srv.json("POST", "/api/chat", body("hi there", options={"num_predict": n}))[1]
                into.append((time.monotonic() - t0, reply))
        for _, reply in [(first_wall, first), *short, *long_]:
            assert 0.5 <= reply["eval_duration"] / reply["eval_count"] / 10e6 <= 1.5
            assert 0.5 <= reply["prompt_eval_duration"] / reply["prompt_eval_count"] / 5e6 <= 1.5
            assert reply["total_duration"] >= (reply["load_duration"] + reply["prompt_eval_duration"]
                                               + reply["eval_duration"])
        for _, reply in short + long_:
            assert reply["load_duration"] < first["load_duration"] / 10   # loaded already
        assert [r["eval_count"] for _, r in short + long_] == [4, 4, 16, 16]
        # 4x the tokens: between 2x and 8x the time, seen by the server and by the client.
        assert 2 <= min(r["eval_duration"] for _, r in long_) / min(r["eval_duration"] for _, r in short) <= 8
        assert 2 <= min(w for w, _ in long_) / min(w for w, _ in short) <= 8
    finally:
        srv.stop()


def test_concurrent_first_requests_share_one_load(tmp_path):
    srv = started(tmp_path, OLLAMA_STANDIN_LOAD_MS="300", OLLAMA_NUM_PARALLEL="4")
    replies = []
    try:
        def ask():
            replies.append(srv.json("POST", "/api/chat", body())[1])
        t0 = time.monotonic()
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        assert len(replies) == 4 and all(r["done"] for r in replies)
        assert wall / 0.3 < 2   # four loads one after another would be 4x
        assert max(r["load_duration"] for r in replies) / 300e6 >= 0.9   # they all waited for it
    finally:
        srv.stop()
    assert srv.log.count("llama runner started") == 1, srv.log


def test_keep_alive_expiry_reloads_and_ps_shows_it(tmp_path):
    srv = started(tmp_path, OLLAMA_STANDIN_LOAD_MS="300")
    try:
        assert srv.json("GET", "/api/ps") == (200, {"models": []})
        before = time.time()
        first = srv.json("POST", "/api/chat", body(keep_alive="10m"))[1]
        ps = srv.json("GET", "/api/ps")[1]["models"]
        assert [m["name"] for m in ps] == [MODEL] and ps[0]["size_vram"] == 0 and ps[0]["size"] > 0
        assert 0.9 <= (parse_rfc3339(ps[0]["expires_at"]) - before) / 600 <= 1.1
        warm = srv.json("POST", "/api/chat", body(keep_alive="500ms"))[1]
        assert warm["load_duration"] < first["load_duration"] / 10
        ps = srv.json("GET", "/api/ps")[1]["models"]
        assert (parse_rfc3339(ps[0]["expires_at"]) - before) / 600 < 0.1   # the latest keep_alive counts
        for _ in range(100):   # gone from /api/ps once its keep-alive ran out
            if not srv.json("GET", "/api/ps")[1]["models"]:
                break
            time.sleep(0.05)
        assert srv.json("GET", "/api/ps")[1]["models"] == []
        again = srv.json("POST", "/api/chat", body())[1]
        assert again["load_duration"] / first["load_duration"] >= 0.8   # loaded once more
        # An explicit unload, then the next call loads again; a negative keep_alive is forever.
        assert srv.json("POST", "/api/chat", {"model": MODEL, "messages": [], "keep_alive": 0})[1][
            "done_reason"] == "unload"
        assert srv.json("GET", "/api/ps")[1]["models"] == []
        forever = srv.json("POST", "/api/chat", body(keep_alive=-1))[1]
        assert forever["load_duration"] / first["load_duration"] >= 0.8
        until = parse_rfc3339(srv.json("GET", "/api/ps")[1]["models"][0]["expires_at"])
        assert until - time.time() > 100 * 365 * 86400
    finally:
        srv.stop()
    assert srv.log.count("llama runner started") == 3


# ------------------------------------------------------------------ slots, queue, hang-ups


def open_stream(srv, request):
    """A streamed chat whose first line has arrived: it holds a slot and is generating."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("POST", "/api/chat", body=json.dumps(request), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.readline())["done"] is False
    return conn


def hang_up(conn):
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def in_background(fn, *args):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    return thread, out


def test_queue_bound_gives_exact_503s(tmp_path):
    srv = started(tmp_path, OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="2", OLLAMA_STANDIN_TOKEN_DELAY_MS="60")
    try:
        holder = open_stream(srv, body(stream=True))   # >= 25 tokens: 1.5 s or more
        workers = [in_background(srv.json, "POST", "/api/chat", body(options={"num_predict": 1}))
                   for _ in range(5)]
        for thread, _ in workers:
            thread.join()
        results = [out[0] for _, out in workers]
        busy = [r for r in results if r[0] == 503]
        assert len(busy) == 3 and sum(r[0] == 200 for r in results) == 2, results
        assert busy[0][1] == {"error": "server busy, please try again.  maximum pending requests exceeded"}
        holder.close()
    finally:
        srv.stop()


def wait_until_queued(srv):
    """With OLLAMA_MAX_QUEUE=1 a probe is refused with 503 exactly while another request
    is queued. A bad `format` makes the probe itself fail (500) before it would wait.
    Returns how many 500s the probes caused."""
    for refused in range(200):
        status = srv.json("POST", "/api/chat", body(format="yaml"))[0]
        assert status in (500, 503)
        if status == 503:
            return refused
        time.sleep(0.01)
    raise AssertionError("the request never queued")


def test_client_hang_up_frees_its_slot_and_queue_place(tmp_path):
    srv = started(tmp_path, OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="1", OLLAMA_STANDIN_TOKEN_DELAY_MS="30")
    try:
        full = srv.json("POST", "/api/chat", body())[1]   # the whole work of one long request
        work = full["eval_duration"]
        short = body(options={"num_predict": 2})

        # 1. The generating client leaves: the request queued behind it starts at once.
        generating = open_stream(srv, body(stream=True))
        thread, out = in_background(srv.json, "POST", "/api/chat", short)
        probes = wait_until_queued(srv)
        hang_up(generating)
        thread.join()
        assert out[0][0] == 200
        assert wait_ns(out[0][1]) / work < 0.5   # far less than the abandoned work

        # 2. A queued client leaves: its place is freed and its work never runs.
        generating = open_stream(srv, body(stream=True))
        queued = socket.create_connection(("127.0.0.1", srv.port))
        payload = json.dumps(body()).encode()
        queued.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        probes += wait_until_queued(srv)
        queued.shutdown(socket.SHUT_RDWR)
        queued.close()
        for _ in range(200):   # refused until the server drops the abandoned request
            status, after = srv.json("POST", "/api/chat", short)
            if status != 503:
                break
            time.sleep(0.01)
        assert status == 200
        # It waited for the generating request only, not for the abandoned one as well.
        assert wait_ns(after) / work < 1.5
        generating.close()
        assert srv.json("POST", "/api/chat", short)[0] == 200   # no slot or place leaked
    finally:
        srv.stop()
    assert srv.log.count("aborting completion request due to client closing the connection") == 1, srv.log
    # The dropped queued request is logged 500, as Go answers "context canceled"; the
    # streamed one that left while generating had sent 200 already.
    failed = [line for line in srv.log.splitlines() if "| 500 |" in line and '"/api/chat"' in line]
    assert len(failed) == probes + 1, srv.log


# ------------------------------------------------------------------ shared CPU


def batch_ratio(srv, n=4):
    """Wall clock of n concurrent equal requests over that of one alone, in one run."""
    request = body(options={"num_predict": 40})
    srv.json("POST", "/api/chat", request)   # warm: nothing left to load

    def timed_batch(size):
        threads = [threading.Thread(target=srv.json, args=("POST", "/api/chat", request)) for _ in range(size)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0
    return timed_batch(n) / timed_batch(1)


@pytest.mark.parametrize(("shared", "low", "high"), [("1", 2.5, 6), ("0", 0, 2)])
def test_shared_cpu_splits_throughput_between_concurrent_requests(tmp_path, shared, low, high):
    srv = started(tmp_path, OLLAMA_NUM_PARALLEL="4", OLLAMA_STANDIN_PROMPT_MS_PER_TOKEN="5",
                  OLLAMA_STANDIN_TOKEN_DELAY_MS="5", OLLAMA_STANDIN_SHARED_CPU=shared)
    try:
        ratio = batch_ratio(srv)
        assert low < ratio < high, ratio   # 4 slots, one CPU: ~4x; a CPU per slot: ~1x
    finally:
        srv.stop()


def test_shared_cpu_counts_every_model_and_reports_real_times(tmp_path):
    srv = started(tmp_path, OLLAMA_STANDIN_TOKEN_DELAY_MS="5", OLLAMA_STANDIN_SHARED_CPU="1")
    pull(srv, "llama3.2:1b")
    try:
        request = body(options={"num_predict": 40})
        alone = srv.json("POST", "/api/chat", request)[1]
        results = []

        def ask(model):
            results.append(srv.json("POST", "/api/chat", dict(request, model=model))[1])
        threads = [threading.Thread(target=ask, args=(m,)) for m in (MODEL, "llama3.2:1b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Two models, one slot each, one CPU: each token takes about twice as long,
        # and eval_duration says so.
        for reply in results:
            assert reply["eval_count"] == alone["eval_count"] == 40
            assert 1.5 <= reply["eval_duration"] / alone["eval_duration"] <= 3, (reply, alone)
    finally:
        srv.stop()
