"""The HTTP and WebSocket surface: POST /judge, GET /health, GET /metrics, WS /ws/stream.

Error contract: an invalid request is a 422 naming its field, a body over the limit a 413,
SurrealDB unreachable a 503 with Retry-After, and so is a judgment created here whose line could
not be appended to judgments.jsonl; nothing a client sends can produce a 500 or a
stack trace (the outer middleware turns any bug into a bare JSON 500 and logs it, so even
then no trace leaves the process). Every HTTP response carries X-Instance-ID.

/ws/stream is bounded: at most ws_max_clients connections (more get 503 to the handshake), a
bounded queue of events per client, client messages of at most ws_max_message_bytes (the
server refuses larger frames: cli.py passes the limit to uvicorn, and the role's environment
file does the same for the uvicorn command line), and no compression unless configured. A
client message is only looked at when it can be the one the contract defines, {"type": "ping"};
anything else is dropped unanswered, so a client cannot make the server write more than it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from cynic_node import __version__
from cynic_node.config import IPNetwork, Settings, metrics_networks
from cynic_node.events import EventHub
from cynic_node.journal import Journal, JournalUnavailable
from cynic_node.llm import OllamaPool
from cynic_node.metrics import CONTENT_TYPE, Metrics, route_label
from cynic_node.models import RequestError, parse_judge_request
from cynic_node.scoring import PHI
from cynic_node.service import JudgmentService
from cynic_node.store import JudgmentStore, StoreUnavailable

log = logging.getLogger(__name__)

_INTERNAL_ERROR = b'{"detail":"internal error"}'
# A client that takes nothing from its socket for this long is disconnected (its events would
# otherwise wait on it, and its connection count against ws_max_clients, for ever).
_WS_SEND_TIMEOUT_S = 10.0


class EdgeMiddleware:
    """X-Instance-ID on every response, request metrics, and a last-resort error barrier.

    A plain ASGI middleware (not BaseHTTPMiddleware): it adds no task or stream per request.
    """

    def __init__(self, app: ASGIApp, instance_id: str, metrics: Metrics) -> None:
        self.app = app
        self.header = (b"x-instance-id", instance_id.encode("latin-1", "replace"))
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.app(scope, receive, self._ws_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not response_started:
                status = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), self.header],
                    }
                )
                await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            self.metrics.observe(
                route_label(scope["path"]),
                scope.get("method", "GET"),
                status,
                time.perf_counter() - started,
            )

    def _ws_send(self, send: Send) -> Send:
        async def wrapper(message: Message) -> None:
            if message["type"] == "websocket.accept":
                message["headers"] = [*message.get("headers", []), self.header]
                self.metrics.observe("/ws/stream", "GET", 101, 0.0)
            elif message["type"] == "websocket.http.response.start":  # a refused handshake
                message["headers"] = [*message.get("headers", []), self.header]
                self.metrics.observe("/ws/stream", "GET", message["status"], 0.0)
            await send(message)

        return wrapper


def _peer_allowed(networks: tuple[IPNetwork, ...] | None, client: Any) -> bool:
    """Whether the peer in scope["client"] may read /metrics (networks None: everyone).

    The ASGI peer, never an X-Forwarded-For header read here: uvicorn replaces it with the
    forwarded address only when the TCP peer is one of its trusted proxies (--proxy-headers,
    --forwarded-allow-ips), taking the nearest untrusted hop, which a client cannot forge.
    """
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(client[0])
    except (TypeError, IndexError, ValueError):
        return False  # no peer (a Unix socket) or not an address: nothing the list can allow
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's IPv4 client matches its IPv4 entry
    return any(ip in network for network in networks)


def _unavailable(settings: Settings, detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"request body larger than {limit} bytes", "fields": ["body"]},
        status_code=413,
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds limit (the rest is never buffered)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(
    settings: Settings,
    *,
    store: JudgmentStore | None = None,
    llm: OllamaPool | None = None,
) -> FastAPI:
    """Build the app; store and llm can be injected (tests), else they follow settings."""
    metrics = Metrics(settings.instance_id)
    hub = EventHub(settings.ws_queue_size, settings.ws_max_clients)
    journal = Journal(settings.journal_path, fsync=settings.journal_fsync)
    store = store or JudgmentStore(settings)
    llm = llm or OllamaPool(
        settings.ollama_urls,
        settings.model,
        settings.llm_timeout_s,
        max_concurrency=settings.llm_max_concurrency,
        deadline_micro_s=settings.llm_deadline_micro_s,
        deadline_macro_s=settings.llm_deadline_macro_s,
    )
    service = JudgmentService(settings.instance_id, store, journal, hub, metrics, llm)
    metrics_readers = metrics_networks(settings.metrics_allow)
    started_at = time.monotonic()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        journal.open()
        await store.start()
        # What exists now (modules, the app, the connections) lives as long as the process:
        # out of the collector's sight, so that a full collection scans only what requests
        # leave behind. Scanning it all paused the node for 20-40 ms at 800 req/s.
        gc.freeze()
        gc.set_threshold(20_000, 10, 10)
        log.info(
            "CYNIC node %s (instance %s) up; store %s, journal %s",
            __version__,
            settings.instance_id,
            settings.surreal_url,
            settings.journal_path,
        )
        try:
            yield
        finally:
            await store.close()
            await llm.aclose()
            journal.close()

    app = FastAPI(
        title="CYNIC node",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service

    async def judge(request: Request) -> Response:
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        if body is None:
            return _too_large(settings.max_body_bytes)
        try:
            req = parse_judge_request(body)
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=422)
        try:
            answer = await service.judge(req)
        except StoreUnavailable as exc:
            log.warning("judgment %s not stored: %s", req.cell_id, exc)
            return _unavailable(settings, "storage unavailable, retry later")
        except JournalUnavailable as exc:
            log.warning("judgment %s stored but not journaled: %s", req.cell_id, exc)
            return _unavailable(settings, f"journal unavailable: {exc}")
        # orjson: a tenth of the stdlib encoder's time for this answer (floats, mostly).
        return Response(orjson.dumps(answer), media_type="application/json")

    # A plain Starlette route: FastAPI's route machinery (dependency solving, exit stacks) has
    # nothing to do for a handler that reads its own body, and cost 0.03-0.08 ms per request
    # (node CPU at 1800 req/s, A/B against @app.post; 0.03-0.05 ms on the empty route).
    app.add_route("/judge", judge, methods=["POST"])

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        storage_ok, (llm_ok, models) = await asyncio.gather(store.ping(), llm.probe())
        journal_error = journal.check()
        if not storage_ok or journal_error is not None:
            # No judgment can be answered 200 here (not stored, or not journaled): out of service.
            status, code = "unavailable", 503
        elif not llm_ok:
            status, code = "degraded", 200  # REFLEX judgments still work
        else:
            status, code = "alive", 200
        body = {
            "status": status,
            "instance_id": settings.instance_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - started_at, 3),
            "storage": {"surreal": "connected" if storage_ok else "disconnected"},
            "llm": {
                "ollama": "reachable" if llm_ok else "unreachable",
                "models": models,
                "servers": llm.servers_health(),
            },
            "journal": (
                {"status": "writable"}
                if journal_error is None
                else {"status": "unwritable", "error": journal_error}
            ),
            "judgments_total": service.judgments_total,
            "phi": PHI,
        }
        headers = {"Retry-After": str(settings.retry_after_s)} if code == 503 else None
        return JSONResponse(body, status_code=code, headers=headers)

    @app.get("/metrics")
    async def metrics_route(request: Request) -> Response:
        if not _peer_allowed(metrics_readers, request.scope.get("client")):
            return JSONResponse({"detail": "metrics not available to this address"}, 403)
        await llm.probe()  # cached a few seconds: cynic_llm_server_up without /health traffic
        text = metrics.render(
            storage_errors=store.errors_total,
            journal_errors=journal.errors_total,
            storage_up=store.connected,
            ws_clients=hub.clients,
            write_counts=store.write_counts,
            ws_dropped=hub.dropped_total,
            ws_refused=hub.refused_total,
            llm_in_flight=llm.in_flight,
            llm_timeouts=llm.timeouts_total,
            llm=llm,
        )
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    @app.websocket("/ws/stream")
    async def stream(ws: WebSocket) -> None:
        queue = hub.subscribe()
        if queue is None:
            await _refuse(ws, settings.retry_after_s)
            return
        try:
            await ws.accept()
            await _send(
                ws,
                {
                    "type": "connected",
                    "ts": time.time(),
                    "phi": PHI,
                    "instance_id": settings.instance_id,
                },
            )
            await _serve_stream(
                ws, queue, settings.ws_ping_interval_s, settings.ws_max_message_bytes
            )
        except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            # The client left: Starlette raises RuntimeError and uvicorn ClientDisconnected
            # (an OSError) when sending after the close; TimeoutError: it stopped reading.
            pass
        finally:
            hub.unsubscribe(queue)

    if settings.bench_routes:

        async def bench_empty(request: Request) -> Response:
            # The baseline for the benchmark: the same app and server, no work.
            return Response(b"{}", media_type="application/json")

        app.add_route("/_bench/empty", bench_empty, methods=["POST"])  # as /judge is served

    # Added last, so it wraps everything the app answers (404s and 405s included).
    app.add_middleware(EdgeMiddleware, instance_id=settings.instance_id, metrics=metrics)
    return app


async def _refuse(ws: WebSocket, retry_after_s: int) -> None:
    """Turn a handshake away: 503 with Retry-After where the server can say it, else a close."""
    try:
        await ws.send_denial_response(
            JSONResponse(
                {"detail": "too many WebSocket clients on this instance"},
                status_code=503,
                headers={"Retry-After": str(retry_after_s)},
            )
        )
    except RuntimeError:  # no denial-response extension: uvicorn answers a close with 403
        await ws.close(code=1013)


async def _send(ws: WebSocket, data: dict[str, Any]) -> None:
    await asyncio.wait_for(ws.send_json(data), _WS_SEND_TIMEOUT_S)


async def _serve_stream(
    ws: WebSocket, queue: asyncio.Queue[dict[str, Any]], ping_every: float, max_bytes: int
) -> None:
    """Forward events, answer pings, ping the client every ping_every seconds."""
    receiver = asyncio.ensure_future(ws.receive())
    event = asyncio.ensure_future(queue.get())
    next_ping = time.monotonic() + ping_every
    try:
        while True:
            done, _ = await asyncio.wait(
                {receiver, event},
                timeout=max(0.0, next_ping - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if event in done:
                await _send(ws, event.result())
                event = asyncio.ensure_future(queue.get())
            if receiver in done:
                message = receiver.result()
                if message["type"] == "websocket.disconnect":
                    return
                verdict = _classify(message, max_bytes)
                if verdict == "too_big":
                    # The server enforces the limit itself; this is for servers that do not.
                    await ws.close(code=1009)
                    return
                if verdict == "ping":
                    await _send(ws, {"type": "pong", "ts": time.time()})
                receiver = asyncio.ensure_future(ws.receive())
            if time.monotonic() >= next_ping:
                await _send(ws, {"type": "ping", "ts": time.time()})
                next_ping = time.monotonic() + ping_every
    finally:
        for task in (receiver, event):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _classify(message: Message, max_bytes: int) -> str:
    """ "ping", "too_big" or "drop" for a client message, at the least cost that decides it.

    The only message a client may send is {"type": "ping"}. A text that does not even contain
    "ping" is dropped without being parsed; the rest is at most max_bytes of JSON to parse.
    """
    raw: str | bytes | None = message.get("text")
    if raw is None:
        raw = message.get("bytes")
        if raw is None:
            return "drop"
    if len(raw) > max_bytes:  # a text of more characters than max_bytes has more bytes too
        return "too_big"
    if (b"ping" if isinstance(raw, bytes) else "ping") not in raw:
        return "drop"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return "drop"
    if isinstance(data, dict) and data.get("type") == "ping":
        return "ping"
    return "drop"
