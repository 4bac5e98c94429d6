"""Tests of the Ollama TEST STAND-IN (bin/ollama and package.sh).

They check that the stand-in behaves like the real Ollama where the collection's
roles and the CYNIC node can see it: endpoints, status codes, error texts, files on
disk, CLI output and the release archive. Run with:

    .venv/bin/python -m pytest tests/standins/ollama
"""

import hashlib
import http.client
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin" / "ollama"
PACKAGE = HERE / "package.sh"


def load_module():
    """bin/ollama as a module, for the pure functions (no .pyc left beside it)."""
    loader = SourceFileLoader("ollama_standin", str(BIN))
    spec = importlib.util.spec_from_loader("ollama_standin", loader)
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ollama serve` in a subprocess, on a free loopback port."""

    def __init__(self, models, host="127.0.0.1:{port}", **env):
        self.port = free_port()
        self.host_value = host.format(port=self.port)
        self.env = dict(os.environ, OLLAMA_HOST=self.host_value, OLLAMA_MODELS=str(models), **env)
        self.proc = subprocess.Popen([sys.executable, str(BIN), "serve"], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.request("GET", "/")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not start:\n{self.log}")
            time.sleep(0.05)

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def json(self, method, path, body=None):
        status, _, raw = self.request(method, path, body)
        return status, json.loads(raw) if raw else None

    def lines(self, path, body):
        status, ctype, raw = self.request("POST", path, body)
        return status, ctype, [json.loads(line) for line in raw.decode().splitlines() if line]

    def cli(self, *args, stdin=None, **env):
        return subprocess.run([sys.executable, str(BIN), *args], env=dict(self.env, **env),
                              input=stdin, capture_output=True, text=True, timeout=20)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.log = out
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("models"))
    yield srv
    assert srv.stop() == 0, srv.log   # SIGTERM is a clean stop


def pull(srv, name):
    status, body = srv.json("POST", "/api/pull", {"model": name, "stream": False})
    assert (status, body) == (200, {"status": "success"})


def chat(srv, model, messages, **extra):
    return srv.json("POST", "/api/chat", {"model": model, "messages": messages, "stream": False, **extra})


# ------------------------------------------------------------------ API


def test_root_version_and_head(server):
    assert server.request("GET", "/")[::2] == (200, b"Ollama is running")
    status, _, body = server.request("HEAD", "/")
    assert (status, body) == (200, b"")
    assert server.json("GET", "/api/version") == (200, {"version": "0.14.2"})
    assert server.request("GET", "/nope")[::2] == (404, b"404 page not found")
    assert server.request("GET", "/api/chat")[0] == 405


def test_pull_streams_ndjson_progress(server):
    status, ctype, events = server.lines("/api/pull", {"model": "gemma2:2b"})
    assert status == 200 and ctype == "application/x-ndjson"
    assert events[0] == {"status": "pulling manifest"}
    assert [e["status"] for e in events[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [e for e in events if "digest" in e]
    assert progress and all(e["status"] == f"pulling {e['digest'][7:19]}" for e in progress)
    assert any(e.get("completed") == e["total"] for e in progress)


def test_pull_stream_false_writes_the_real_layout(server):
    pull(server, "qwen2.5:0.5b")
    models = Path(server.env["OLLAMA_MODELS"])
    manifest_file = models / "manifests/registry.ollama.ai/library/qwen2.5/0.5b"
    manifest = json.loads(manifest_file.read_bytes())
    for layer in manifest["layers"] + [manifest["config"]]:
        blob = models / "blobs" / layer["digest"].replace(":", "-")
        assert blob.stat().st_size == layer["size"]
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
    # A name without a tag means :latest, and `name` is accepted for `model`.
    assert server.json("POST", "/api/pull", {"name": "tinyllama", "stream": False})[0] == 200
    assert (models / "manifests/registry.ollama.ai/library/tinyllama/latest").is_file()


def test_pull_unknown_model_fails_like_ollama(server):
    message = "pull model manifest: file does not exist"
    assert server.json("POST", "/api/pull", {"model": "no-such-model:7b", "stream": False}) == (
        500, {"error": message})
    status, _, events = server.lines("/api/pull", {"model": "no-such-model:7b"})
    assert (status, events) == (200, [{"status": "pulling manifest"}, {"error": message}])
    assert server.json("POST", "/api/pull", {"model": "bad name!", "stream": False}) == (
        400, {"error": "invalid model name"})
    assert server.json("POST", "/api/pull", None)[0] == 400


def test_tags_lists_pulled_models(server):
    pull(server, "gemma2:2b")
    status, body = server.json("GET", "/api/tags")
    assert status == 200
    tags = {m["name"]: m for m in body["models"]}
    gemma = tags["gemma2:2b"]
    assert gemma["model"] == "gemma2:2b" and gemma["details"]["family"] == "gemma2"
    manifest = Path(server.env["OLLAMA_MODELS"]) / "manifests/registry.ollama.ai/library/gemma2/2b"
    assert gemma["digest"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", gemma["modified_at"])


def test_chat_is_deterministic_and_streams(server):
    pull(server, "gemma2:2b")
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    status, first = chat(server, "gemma2:2b", messages)
    assert status == 200
    assert first["model"] == "gemma2:2b" and first["done"] is True and first["done_reason"] == "stop"
    assert first["message"]["role"] == "assistant" and first["message"]["content"]
    for key in ("created_at", "total_duration", "load_duration", "prompt_eval_count",
                "prompt_eval_duration", "eval_count", "eval_duration"):
        assert key in first
    assert chat(server, "gemma2:2b", messages)[1]["message"] == first["message"]
    assert chat(server, "gemma2:2b", [{"role": "user", "content": "Other"}])[1]["message"] != first["message"]
    status, ctype, chunks = server.lines("/api/chat", {"model": "gemma2:2b", "messages": messages})
    assert status == 200 and ctype == "application/x-ndjson"
    assert all(not c["done"] for c in chunks[:-1]) and chunks[-1]["done"] is True
    assert "".join(c["message"]["content"] for c in chunks) == first["message"]["content"]


def test_format_json_and_schema(server):
    pull(server, "gemma2:2b")
    system = 'Score the text. Answer with one JSON object, for example {"FIDELITY": 50, "note": "x"}.'
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "The cat sat."}]
    reply = chat(server, "gemma2:2b", messages, format="json")[1]["message"]["content"]
    parsed = json.loads(reply)   # "json": an object, shaped like the prompt's example
    assert set(parsed) == {"FIDELITY", "note"} and 0 <= parsed["FIDELITY"] <= 100
    assert chat(server, "gemma2:2b", messages, format="json")[1]["message"]["content"] == reply
    plain = json.loads(chat(server, "gemma2:2b", [{"role": "user", "content": "hi"}], format="json")
                       [1]["message"]["content"])
    assert isinstance(plain, dict)
    # Without `format` the word "score" asks for nothing special: plain text.
    assert not chat(server, "gemma2:2b", messages)[1]["message"]["content"].startswith("{")
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "ok": {"type": "boolean"}}}
    shaped = json.loads(chat(server, "gemma2:2b", [{"role": "user", "content": "x"}], format=schema)[1]
                        ["message"]["content"])
    assert isinstance(shaped["age"], int) and isinstance(shaped["ok"], bool)


def test_temperature_seed_and_num_predict(server):
    pull(server, "gemma2:2b")
    messages = [{"role": "user", "content": "Tell me something."}]

    def text(**options):
        return chat(server, "gemma2:2b", messages, options=options)[1]["message"]["content"]
    assert text(temperature=0) == text(temperature=0, seed=1) == text(temperature=0, seed=2)
    assert text(temperature=0.7, seed=1) == text(temperature=0.7, seed=1) != text(temperature=0.7, seed=2)
    assert text(temperature=0) != text(temperature=0.7, seed=1)
    _, short = chat(server, "gemma2:2b", messages, options={"num_predict": 3})
    assert short["eval_count"] == 3 and short["done_reason"] == "length"
    assert chat(server, "gemma2:2b", messages, options={"temperature": "hot"}) == (
        500, {"error": 'option "temperature" must be of type float32'})


def test_generate(server):
    pull(server, "gemma2:2b")
    body = {"model": "gemma2:2b", "prompt": "Why is the sky blue?", "stream": False}
    status, first = server.json("POST", "/api/generate", body)
    assert status == 200 and first["response"] and first["done"] and first["context"]
    assert server.json("POST", "/api/generate", body)[1]["response"] == first["response"]
    _, _, chunks = server.lines("/api/generate", dict(body, stream=True))
    assert "".join(c["response"] for c in chunks) == first["response"]
    status, loaded = server.json("POST", "/api/generate", {"model": "gemma2:2b"})
    assert (status, loaded["done_reason"], loaded["response"]) == (200, "load", "")


def test_model_not_pulled_is_404(server):
    messages = [{"role": "user", "content": "hi"}]
    assert chat(server, "llama3.2:1b", messages) == (404, {"error": "model 'llama3.2:1b' not found"})
    assert server.json("POST", "/api/generate", {"model": "llama3.2:1b", "prompt": "hi"}) == (
        404, {"error": "model 'llama3.2:1b' not found"})
    assert server.json("POST", "/api/embed", {"model": "llama3.2:1b", "input": "hi"}) == (
        404, {"error": 'model "llama3.2:1b" not found, try pulling it first'})
    assert chat(server, "", messages) == (400, {"error": "model is required"})


def test_embed(server):
    pull(server, "nomic-embed-text")
    status, body = server.json("POST", "/api/embed", {"model": "nomic-embed-text", "input": ["a", "b", "a"]})
    assert status == 200 and body["model"] == "nomic-embed-text"
    a, b, a2 = body["embeddings"]
    assert len(a) == 768 and a == a2 and a != b
    assert abs(sum(x * x for x in a) - 1) < 1e-6
    one = server.json("POST", "/api/embed", {"model": "nomic-embed-text:latest", "input": "a"})[1]
    assert one["embeddings"] == [a]
    assert server.json("POST", "/api/embed", {"model": "nomic-embed-text", "input": 3})[0] == 400
    assert chat(server, "nomic-embed-text", [{"role": "user", "content": "x"}]) == (
        400, {"error": '"nomic-embed-text" does not support chat'})


def test_show_delete_and_ps(server):
    pull(server, "llama3.2")
    status, info = server.json("POST", "/api/show", {"model": "llama3.2"})
    assert status == 200 and info["details"]["family"] == "llama" and "completion" in info["capabilities"]
    assert info["model_info"]["llama.embedding_length"] == 3072
    chat(server, "llama3.2", [{"role": "user", "content": "hi"}], keep_alive="10m")
    assert "llama3.2:latest" in [m["name"] for m in server.json("GET", "/api/ps")[1]["models"]]
    assert server.request("DELETE", "/api/delete", {"model": "llama3.2"})[0] == 200
    assert "llama3.2:latest" not in [m["name"] for m in server.json("GET", "/api/tags")[1]["models"]]
    assert server.json("DELETE", "/api/delete", {"model": "llama3.2"}) == (
        404, {"error": "model 'llama3.2' not found"})
    assert server.json("POST", "/api/show", {"model": "llama3.2"})[0] == 404


# ------------------------------------------------------------------ disk and environment


def test_restart_and_unpacked_archive_are_listed(tmp_path):
    models = tmp_path / "models"
    first = Server(models)
    pull(first, "gemma2:2b")
    assert first.stop() == 0
    again = Server(models)
    try:
        assert "gemma2:2b" in [m["name"] for m in again.json("GET", "/api/tags")[1]["models"]]
    finally:
        again.stop()
    # The air-gapped path: a models directory packed on one host, unpacked on another.
    archive = tmp_path / "models.tar"
    subprocess.run(["tar", "-C", str(models), "-cf", str(archive), "."], check=True)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xf", str(archive)], check=True)
    offline = Server(unpacked, OLLAMA_STANDIN_OFFLINE="1")
    try:
        assert [m["name"] for m in offline.json("GET", "/api/tags")[1]["models"]] == ["gemma2:2b"]
        assert chat(offline, "gemma2:2b", [{"role": "user", "content": "hi"}])[0] == 200
        status, body = offline.json("POST", "/api/pull", {"model": "gemma2:2b", "stream": False})
        assert status == 500 and "no such host" in body["error"]
    finally:
        offline.stop()


def test_environment_is_read_without_failing(tmp_path):
    srv = Server(tmp_path / "m", OLLAMA_KEEP_ALIVE="not-a-duration", OLLAMA_NUM_PARALLEL="many")
    try:
        pull(srv, "qwen2.5:0.5b")
        assert chat(srv, "qwen2.5:0.5b", [{"role": "user", "content": "hi"}])[0] == 200
    finally:
        srv.stop()
    assert "OLLAMA_NUM_PARALLEL" in srv.log and "Listening on 127.0.0.1" in srv.log


def test_ollama_host_forms():
    parse = load_module().parse_host
    assert parse("") == ("http", "127.0.0.1", 11434, "")
    assert parse("0.0.0.0") == ("http", "0.0.0.0", 11434, "")
    assert parse("0.0.0.0:8080") == ("http", "0.0.0.0", 8080, "")
    assert parse(":8080") == ("http", "", 8080, "")
    assert parse("http://10.0.0.5:11434") == ("http", "10.0.0.5", 11434, "")
    assert parse("http://example.com") == ("http", "example.com", 80, "")  # 80, like Ollama
    assert parse("https://example.com/ollama") == ("https", "example.com", 443, "ollama")
    assert parse("[::1]:9000") == ("http", "::1", 9000, "")
    assert parse('"127.0.0.1:70000"') == ("http", "127.0.0.1", 11434, "")  # bad port: default


def test_serve_honours_a_url_in_ollama_host_and_fails_cleanly(tmp_path):
    srv = Server(tmp_path / "m", host="http://127.0.0.1:{port}")   # started means it listens there
    assert srv.cli("--version").stdout == "ollama version is 0.14.2\n"
    srv.stop()
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{free_port()}", OLLAMA_MODELS=str(blocker / "m"))
    run = subprocess.run([sys.executable, str(BIN), "serve"], env=env, capture_output=True, text=True, timeout=10)
    assert run.returncode == 1 and run.stderr.startswith("Error: mkdir ")


def test_serve_refuses_a_busy_port(server, tmp_path):
    env = dict(os.environ, OLLAMA_HOST=server.host_value, OLLAMA_MODELS=str(tmp_path))
    run = subprocess.run([sys.executable, str(BIN), "serve"], env=env, capture_output=True, text=True, timeout=10)
    assert run.returncode == 1
    assert f"Error: listen tcp {server.host_value}: bind: address already in use" in run.stderr


# ------------------------------------------------------------------ CLI


def test_cli_version_pull_list_run(server):
    assert server.cli("--version").stdout == "ollama version is 0.14.2\n"
    assert server.cli("-v").returncode == 0
    down = server.cli("--version", OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    assert down.returncode == 0 and down.stdout == (
        "Warning: could not connect to a running Ollama instance\nWarning: client version is 0.14.2\n")
    pulled = server.cli("pull", "llama3.2:1b")
    assert pulled.returncode == 0 and pulled.stderr.rstrip().endswith("success")
    listing = server.cli("list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(line.split()[0] == "llama3.2:1b" for line in listing[1:])
    bad = server.cli("pull", "no-such-model")
    assert bad.returncode == 1 and bad.stderr.endswith("Error: pull model manifest: file does not exist\n")
    ran = server.cli("run", "llama3.2:1b", "Say", "hi")
    api = server.json("POST", "/api/generate", {"model": "llama3.2:1b", "prompt": "Say hi", "stream": False})
    assert ran.returncode == 0 and ran.stdout == api[1]["response"] + "\n"
    gone = server.cli("list", OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    assert gone.returncode == 1 and "could not connect to ollama server" in gone.stderr
    assert "TEST STAND-IN" in server.cli("--help").stdout
    assert server.cli("frobnicate").returncode == 1


# ------------------------------------------------------------------ packaging


def test_package_is_reproducible_and_unpacks(tmp_path):
    out, again = tmp_path / "dist", tmp_path / "again"
    subprocess.run(["bash", str(PACKAGE), str(out), "0.14.3"], check=True, capture_output=True)
    subprocess.run(["bash", str(PACKAGE), str(again), "0.14.3"], check=True, capture_output=True)
    archive = out / "ollama-linux-amd64.tar.zst"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (out / "sha256sum.txt").read_text() == f"{digest}  ./ollama-linux-amd64.tar.zst\n"
    assert (again / "sha256sum.txt").read_text() == (out / "sha256sum.txt").read_text()
    root = tmp_path / "usr"
    root.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(root)], check=True)
    binary = root / "bin" / "ollama"
    assert binary.stat().st_mode & 0o777 == 0o755
    assert "stand-in" in (root / "lib" / "ollama" / "README").read_text().lower()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10,
                             env=dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{free_port()}"))
    assert version.stdout.endswith("Warning: client version is 0.14.3\n")
