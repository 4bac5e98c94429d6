"""SurrealDB, through the official SDK: one record per cell, decided by the store.

`judgment:<cell_id>` is the record id. Writing it either makes it or finds it taken because
another instance (or request) made it first; the loser then reads the winner's record. No
check-then-insert: the database's own uniqueness of record ids is the lock.

Connections: a small pool of long-lived AsyncSurreal WebSocket connections (ws://…/rpc), made
once and reused; each call is multiplexed on its socket by request id, so requests never wait
for each other in this process. When a connection breaks (SurrealDB restarted, network gone)
it is dropped and made again on the next call, and a watchdog keeps retrying in the
background, so the node recovers by itself without a restart. While no connection can be
made, calls fail at once with StoreUnavailable (the API's 503).

Two quirks of the SDK 2.0 shape the error handling:
- when its socket closes, it cancels the futures of the calls in flight, so a call can end in
  CancelledError although nobody cancelled the caller; that is a broken connection, not a
  cancellation (told apart with Task.cancelling()).
- after a close it keeps the dead socket and never reconnects by itself; the connection has to
  be replaced. Its receive task ends when the socket closes: that is how a slot knows its
  connection is dead (`_dead`), before any call fails on it, and how a call that fails with
  anything else (the SDK's own calls end in KeyError there: they delete their request id from
  the table the receive task has just cleared) is recognised as a lost connection.

A write whose connection broke while it was in flight may or may not have committed. The store
then waits (up to store_timeout_s) for a connection and sends the same record again: INSERT
IGNORE either makes it now or finds it, and the judgment_id in the stored record tells whether
it is ours (created) or another's (reused). When no connection comes back in time the caller
gets StoreOutcomeUnknown (a StoreUnavailable): the record may exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import cbor2
import websockets
from surrealdb import (
    AsyncSurreal,
    AsyncWsSurrealConnection,
    ConnectionUnavailableError,
    NotAllowedError,
    RecordID,
    ServerError,
)
from surrealdb.data.cbor import encode as sdk_encode
from surrealdb.errors import parse_query_error, parse_rpc_error
from websockets.exceptions import WebSocketException

from cynic_node.config import Settings, surreal_ssl_context

log = logging.getLogger(__name__)

TABLE = "judgment"
# Group commit shape: a batch is one INSERT (one transaction), and SurrealDB runs different
# queries in parallel, so a few queries in flight with several records each beat both extremes.
# Measured on the stand-in's engine (tests/standins/surreal, surrealkv): 410 us of CPU for a
# record written alone, 148 us each at 4 per INSERT, 105 us at 8, 82 us at 16; the node saves
# its WebSocket and future overhead likewise. 16 keeps the round trip near 4 ms.
_MAX_BATCH = 16
_IN_FLIGHT_PER_CONNECTION = 4
# Busy (writes arriving closer than _BUSY_GAP_S apart on average, about 670/s and up), a write
# waits up to _LINGER_S for others to share its query; idle, it leaves at once.
_BUSY_GAP_S = 0.0015
_LINGER_S = 0.002
_IDLE_GAP_S = 0.1
_T = TypeVar("_T")
# After a failed connect, calls fail fast for this long instead of each trying to connect.
_RETRY_GAP_S = 0.25
_WATCHDOG_S = 1.0
# A write lost with its connection: how often to look for a connection again while waiting,
# and how many times the same record is sent in all.
_RECONNECT_POLL_S = 0.1
_WRITE_ATTEMPTS = 3
# What a broken connection raises (ConnectionClosed is a WebSocketException).
_CONNECTION_ERRORS = (OSError, WebSocketException, ConnectionUnavailableError)


class StoreUnavailable(Exception):
    """SurrealDB cannot be reached or does not answer in time."""


class StoreOutcomeUnknown(StoreUnavailable):
    """A call was sent on a connection that broke (or never answered): it may have committed."""


def _dead(db: Any) -> bool:
    """True when db is a WebSocket connection whose socket has closed (its receive task ended)."""
    if not isinstance(db, AsyncWsSurrealConnection):
        return False  # embedded engines and HTTP have no socket to lose
    task = db.recv_task
    return task is None or task.done()


def _lost_connection(exc: BaseException) -> bool:
    """The SDK's calls (`_send`) end in KeyError when the socket closes under them: the receive
    task cancels their future and clears the request table, then their `del qry[id]` fails."""
    return isinstance(exc, KeyError) and isinstance(exc.__context__, asyncio.CancelledError)


def _is_network_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in {"ws", "wss", "http", "https"}


# SurrealDB's CBOR tag for a record id (the SDK's constants.TAG_RECORD_ID).
_TAG_RECORD_ID = 8


def _encode_other(encoder: Any, value: Any) -> None:
    """cbor2's hook for what it has no native encoding for: SurrealDB types."""
    if isinstance(value, RecordID):
        encoder.encode(cbor2.CBORTag(_TAG_RECORD_ID, [value.table_name, value.id]))
    else:  # any other SDK type (Datetime, Duration...): exactly the SDK's bytes
        encoder.write(sdk_encode(value))


def encode_query(request_id: str, query: str, params: dict[str, Any]) -> bytes:
    """The SDK's `query` RPC message, encoded by cbor2's compiled encoder.

    The same bytes as the SDK's own pure-Python encoder (a test compares them), for an eighth
    of the CPU: encoding the judgment was the node's largest single cost per write. One
    difference, kept out by the callers: a None becomes CBOR null here, NONE in the SDK.
    """
    message = {"id": request_id, "method": "query", "params": [query, params]}
    return cbor2.dumps(message, default=_encode_other)


class _LeanWsConnection(AsyncWsSurrealConnection):
    """The SDK's WebSocket connection, opened without permessage-deflate and without a proxy,
    with one fast call for the judgments' writes.

    The SDK 2.0 opens its socket with the websockets defaults: every frame is deflated on both
    ends (a quarter of a millisecond of zlib per call here, for frames of a few hundred bytes
    on a local network), and the connection honours HTTP(S)_PROXY. Apart from the opening and
    query_fast(), every call, and the protocol, are the SDK's.
    """

    # wss:// only (websockets refuses a context for ws://): SURREAL_CA_FILE's CA; None, the
    # websockets default, verifies against the system's trust store.
    ssl_context: ssl.SSLContext | None = None

    async def connect(self, url: str | None = None) -> None:
        if self.socket:
            return
        tls: dict[str, Any] = {} if self.ssl_context is None else {"ssl": self.ssl_context}
        self.socket = await websockets.connect(
            self.raw_url,
            max_size=None,
            subprotocols=[websockets.Subprotocol("cbor")],
            compression=None,
            proxy=None,
            **tls,
        )
        self.loop = asyncio.get_running_loop()
        self.recv_task = asyncio.create_task(self._recv_task())

    async def query_fast(self, query: str, params: dict[str, Any]) -> dict[str, Any]:
        """query_raw(query, params) with the message encoded by encode_query().

        The rest is the SDK's own path: its receive task decodes the answer and resolves the
        future registered under the request id (and cancels it if the socket closes).
        """
        await self.connect()
        request_id = uuid.uuid4().hex
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.qry[request_id] = answer
        try:
            await self.socket.send(encode_query(request_id, query, params))
            return await answer
        finally:
            # pop, not del: when the socket closes, the receive task has cleared the table
            # already, and the CancelledError (a lost connection) must surface, not a KeyError.
            self.qry.pop(request_id, None)


def _open(url: str, ssl_context: ssl.SSLContext | None) -> Any:
    scheme = url.split(":", 1)[0].lower()
    if scheme in {"ws", "wss"}:
        db = _LeanWsConnection(url)
        if scheme == "wss":
            db.ssl_context = ssl_context
        return db
    return AsyncSurreal(url)  # embedded engines (tests) and HTTP


def _credentials(s: Settings) -> dict[str, Any]:
    creds: dict[str, Any] = {"username": s.surreal_user, "password": s.surreal_pass}
    if s.surreal_auth_level in ("namespace", "database"):
        creds["namespace"] = s.surreal_ns
    if s.surreal_auth_level == "database":
        creds["database"] = s.surreal_db
    return creds


class _Slot:
    """One pooled connection, made on demand and replaced when it breaks."""

    def __init__(
        self, settings: Settings, index: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self.index = index
        self.embedded = not _is_network_url(settings.surreal_url)
        self.db: Any = None
        self._lock = asyncio.Lock()
        self._failed_at = -_RETRY_GAP_S

    @property
    def ready(self) -> bool:
        """A connection is held and its socket is open (a closed one is known at once, from the
        SDK's receive task, without waiting for a call to fail on it)."""
        return self.db is not None and not _dead(self.db)

    async def get(self) -> Any:
        if self.db is not None and _dead(self.db):
            self.drop(self.db)
        if self.db is not None:
            return self.db
        async with self._lock:
            if self.db is not None and _dead(self.db):
                self.drop(self.db)
            if self.db is not None:
                return self.db
            if time.monotonic() - self._failed_at < _RETRY_GAP_S:
                raise StoreUnavailable("SurrealDB unreachable (retrying)")
            try:
                self.db = await self._connect()
            except StoreUnavailable:
                self._failed_at = time.monotonic()
                raise
            return self.db

    async def _connect(self) -> Any:
        s = self._settings
        db = _open(s.surreal_url, self._ssl_context)
        try:
            async with asyncio.timeout(s.store_timeout_s):
                await db.connect(s.surreal_url)  # the URL again: the SDK types require it
                if s.surreal_user:
                    await db.signin(_credentials(s))
                await db.use(s.surreal_ns, s.surreal_db)
        except asyncio.CancelledError:
            await _close_quietly(db)
            _reraise_if_cancelled()
            raise StoreUnavailable("connection to SurrealDB dropped while connecting") from None
        except NotAllowedError as exc:
            # Wrong credentials: unavailable for this node, and worth a clear log line.
            await _close_quietly(db)
            log.error("SurrealDB refused the sign-in as %r: %s", s.surreal_user, exc)
            raise StoreUnavailable(f"SurrealDB sign-in refused: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            # A wrong CA, an expired certificate, or one for another name or IP address: not
            # a network failure, and the log line has to say so.
            await _close_quietly(db)
            reason = exc.verify_message or str(exc)
            log.error(
                "SurrealDB TLS certificate verification failed (%s): %s", s.surreal_url, reason
            )
            raise StoreUnavailable(f"SurrealDB certificate verification failed: {reason}") from exc
        except (OSError, TimeoutError, ServerError, RuntimeError, ValueError) as exc:
            # OSError covers refused connections and websockets' handshake errors
            # (InvalidHandshake is not one, but it arrives as ValueError/RuntimeError
            # subclasses in websockets 15+), RuntimeError is the embedded engine's errors.
            await _close_quietly(db)
            raise StoreUnavailable(f"cannot connect to SurrealDB: {exc}") from exc
        except Exception as exc:  # any other handshake failure of the websockets library
            await _close_quietly(db)
            raise StoreUnavailable(f"cannot connect to SurrealDB: {exc!r}") from exc
        log.info("connected to SurrealDB %s (slot %d)", s.surreal_url, self.index)
        return db

    def drop(self, db: Any) -> None:
        """Forget a broken connection (only if it is still the current one).

        An embedded engine has no connection to lose, and reopening mem:// would start an
        empty database: it is kept.
        """
        if self.embedded:
            return
        if self.db is db and db is not None:
            self.db = None
            log.warning("SurrealDB connection lost (slot %d); will reconnect", self.index)
            _background(_close_quietly(db))

    async def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            await _close_quietly(db)


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Awaitable[Any]) -> None:
    # Keep a reference: the loop only holds weak references to tasks.
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _close_quietly(db: Any) -> None:
    with contextlib.suppress(Exception):
        await db.close()


def _reraise_if_cancelled() -> None:
    """Re-raise CancelledError when the current task really is being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# One statement per batch: its records are written in one transaction, which costs SurrealDB
# a third to a half of what one CREATE per record does (measured on the stand-in's engine,
# surrealkv: 110 us of CPU per record at 8 per INSERT, 260 us as 8 CREATEs). IGNORE skips the
# cells that already have a judgment instead of failing the statement, and RETURN names the
# records written, by their judgment_id: only those are ours (a server that returned the
# existing records too could not make two winners).
_INSERT_QUERY = f"INSERT IGNORE INTO {TABLE} $rows RETURN judgment_id"


# The upgrade of a degraded judgment: only while the stored record is still that judgment.
_REPLACE_DEGRADED_QUERY = (
    "UPDATE $rid CONTENT $record WHERE judgment_id = $old AND degraded = true RETURN judgment_id"
)


def _create_query(n: int) -> str:
    # The fallback, one CREATE per record, each its own transaction. RETURN NONE: the caller
    # has the record; not sending it back saves encoding and decoding it.
    return "; ".join(f"CREATE $r{i} CONTENT $c{i} RETURN NONE" for i in range(n))


async def _query_raw(db: Any, query: str, params: dict[str, Any]) -> dict[str, Any]:
    if isinstance(db, _LeanWsConnection):
        return await db.query_fast(query, params)
    answer: dict[str, Any] = await db.query_raw(query, params)  # embedded engines, HTTP
    return answer


_Pending = tuple[RecordID, dict[str, Any], "asyncio.Future[bool]"]


class _WriteBatcher:
    """Group commit: judgments waiting to be written at the same moment travel in one query.

    SurrealDB pays per query and per transaction about as much as per record in it, and so
    does the node's WebSocket code, so under load several records share one query. One
    dispatcher takes what is pending and hands it to a sender, with at most `in_flight` queries
    out at once. Idle (writes arriving on average more than _BUSY_GAP_S apart), a write leaves
    at once; busy, the dispatcher first waits up to _LINGER_S for company. A batch is one
    INSERT IGNORE: a cell that already has a judgment is skipped, never failing its neighbours.
    When the statement is refused as a whole, the batch is sent again as one CREATE per record,
    so that each record id is still decided by the store on its own.
    """

    def __init__(self, store: JudgmentStore, in_flight: int) -> None:
        self._store = store
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._senders = asyncio.Semaphore(in_flight)
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # Record ids with a write in flight. A second write of one of them waits for it: two
        # statements racing on one id are decided by the engine's conflict detection, which
        # let both win once in ~200 runs on the embedded engine (test_store); one after the
        # other, the second is ignored and reads the first.
        self._writing: set[tuple[str, Any]] = set()
        self._last_arrival = 0.0
        self._gap = _IDLE_GAP_S  # moving average of the time between writes, seconds
        self.queries_total = 0  # queries sent to write judgments, and the records they carried
        self.records_total = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="surreal-create")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail(self._pending, StoreUnavailable("node shutting down"))
        self._pending = []

    async def write(self, rid: RecordID, record: dict[str, Any]) -> bool:
        """Store record as rid: True if written, False if rid was taken; raises ServerError
        (the store refused this record) or StoreUnavailable."""
        now = time.monotonic()
        # Capped, so that a long idle spell is forgotten within a few dozen busy arrivals.
        self._gap += (min(now - self._last_arrival, _IDLE_GAP_S) - self._gap) / 8
        self._last_arrival = now
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((rid, record, future))
        self._wake.set()
        return await future

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            if self._gap < _BUSY_GAP_S and len(self._pending) < _MAX_BATCH:
                await asyncio.sleep(_LINGER_S)
            # Only this loop takes from _pending, and _wake is set only after an append: there
            # is always something to take here.
            await self._senders.acquire()
            batch: list[_Pending] = []
            held: list[_Pending] = []
            keys: set[tuple[str, Any]] = set()
            for item in self._pending:
                key = (item[0].table_name, item[0].id)
                if len(batch) < _MAX_BATCH and key not in self._writing:
                    batch.append(item)  # duplicates within one statement are fine: in order
                    keys.add(key)
                else:
                    held.append(item)
            self._pending = held
            if not batch:  # all that is pending waits for writes in flight; they wake us
                self._senders.release()
                self._wake.clear()
                continue
            if not self._pending:
                self._wake.clear()
            self._writing |= keys
            task = asyncio.create_task(self._send_released(batch, keys))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_released(self, batch: list[_Pending], keys: set[tuple[str, Any]]) -> None:
        try:
            await self._send(batch)
        except asyncio.CancelledError:  # close(): nobody may wait forever for this batch
            self._fail(batch, StoreUnavailable("node shutting down"))
            raise
        except Exception as exc:  # StoreUnavailable, or a bug: fail the batch, not the node
            self._fail(batch, exc)
        finally:
            self._writing -= keys
            self._senders.release()
            if self._pending:
                self._wake.set()  # writes held for these ids may go now

    async def _send(self, batch: list[_Pending]) -> None:
        self.records_total += len(batch)
        rows = [{**record, "id": rid} for rid, record, _ in batch]
        statements = await self._statements(_INSERT_QUERY, {"rows": rows}, batch, count=1)
        if statements is None:
            return
        (insert,) = statements
        if insert.get("status") != "OK":
            # Refused as a whole: a write conflict with another instance's transaction (the
            # server does not ignore those), a record the table's schema rejects, or a 2.0.x
            # server, whose INSERT IGNORE still fails on duplicates. Each record on its own:
            await self._send_each(batch)
            return
        written = insert.get("result")
        mine = {
            row.get("judgment_id")
            for row in (written if isinstance(written, list) else ())
            if isinstance(row, dict)
        }
        for _, record, future in batch:
            if not future.done():
                future.set_result(record.get("judgment_id") in mine)

    async def _send_each(self, batch: list[_Pending]) -> None:
        params: dict[str, Any] = {}
        for i, (rid, record, _) in enumerate(batch):
            params[f"r{i}"] = rid
            params[f"c{i}"] = record
        query = _create_query(len(batch))
        statements = await self._statements(query, params, batch, count=len(batch))
        if statements is None:
            return
        for (_, _, future), statement in zip(batch, statements, strict=True):
            if future.done():
                continue
            if statement.get("status") == "OK":
                future.set_result(True)
            else:  # AlreadyExists, or this record refused: the caller reads what is stored
                future.set_exception(parse_query_error(statement))

    async def _statements(
        self, query: str, params: dict[str, Any], batch: list[_Pending], count: int
    ) -> list[dict[str, Any]] | None:
        """The results of the count statements of query; None when the batch failed (its
        futures are then failed)."""
        self.queries_total += 1
        response = await self._store.call(lambda db: _query_raw(db, query, params))
        if response.get("error") is not None:
            # The whole query was refused (not one statement): every record in it failed.
            self._fail(batch, parse_rpc_error(response["error"]))
            return None
        results = response.get("result")
        if (
            not isinstance(results, list)
            or len(results) != count
            or not all(isinstance(statement, dict) for statement in results)
        ):
            unexpected = f"unexpected answer to {query[:30]!r}: {response!r:.200}"
            self._fail(batch, StoreUnavailable(unexpected))
            return None
        return results


class JudgmentStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # An embedded engine (mem://, surrealkv://) opened twice is two separate databases:
        # one connection there. Over the network, a few.
        size = settings.surreal_pool_size if _is_network_url(settings.surreal_url) else 1
        # Loaded once for all the connections (from_env has already checked it loads).
        ssl_context = surreal_ssl_context(settings.surreal_ca_file)
        self._slots = [_Slot(settings, i, ssl_context) for i in range(size)]
        self._next = itertools.cycle(self._slots)
        self._watchdog: asyncio.Task[None] | None = None
        self._table_ready = False
        self._batcher = _WriteBatcher(self, in_flight=_IN_FLIGHT_PER_CONNECTION * size)
        self.errors_total = 0
        # Writes that went out on a connection that broke, and those whose outcome the store
        # then found out (created or found, by the judgment_id of the stored record).
        self.outcomes_unknown_total = 0
        self.outcomes_recovered_total = 0

    @property
    def write_counts(self) -> tuple[int, int]:
        """(queries sent to write judgments, records they carried): their ratio is the
        group-commit size (a batch sent again as CREATEs counts two queries, its records once)."""
        return self._batcher.queries_total, self._batcher.records_total

    @property
    def connected(self) -> bool:
        return any(slot.ready for slot in self._slots)

    async def start(self) -> None:
        """Connect if possible; never fails, the watchdog keeps trying."""
        await self._ensure_all()
        self._batcher.start()
        self._watchdog = asyncio.create_task(self._watch(), name="surreal-watchdog")

    async def close(self) -> None:
        await self._batcher.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for slot in self._slots:
            await slot.close()

    async def _ensure_all(self) -> None:
        """Connect every slot that can be connected (each on its own: one failure skips none)."""
        for slot in self._slots:
            try:
                db = await slot.get()
            except StoreUnavailable:
                continue
            if not self._table_ready:
                await self._define_table(slot, db)

    async def _define_table(self, slot: _Slot, db: Any) -> None:
        # The deployment bootstraps the table; defining it here too makes a fresh database
        # work. A user without DEFINE rights gets an error we can ignore: the table exists.
        try:
            async with asyncio.timeout(self._settings.store_timeout_s):
                await db.query(f"DEFINE TABLE IF NOT EXISTS {TABLE} SCHEMALESS")
            self._table_ready = True
        except ServerError as exc:
            log.info("DEFINE TABLE %s not applied (%s); assuming it exists", TABLE, exc)
            self._table_ready = True
        except (*_CONNECTION_ERRORS, TimeoutError, asyncio.CancelledError):
            _reraise_if_cancelled()
            slot.drop(db)

    async def _watch(self) -> None:
        """Reconnect broken slots in the background, so /health recovers without traffic."""
        while True:
            await asyncio.sleep(_WATCHDOG_S)
            if not (all(slot.ready for slot in self._slots) and self._table_ready):
                try:
                    await self._ensure_all()
                except Exception:  # the watchdog must outlive any surprise
                    log.exception("SurrealDB reconnection attempt failed")

    async def call(
        self,
        op: Callable[[Any], Awaitable[_T]],
        retry: bool = True,
        timeout_s: float | None = None,
        _sent: bool = False,
    ) -> _T:
        """Run op on a pooled connection; connection failures become StoreUnavailable.

        ServerError (the database answered with an error) passes through to the caller.
        A call on a connection that turns out to be dead is retried once on a fresh one.
        When op was sent on a connection that broke or did not answer in time (the first time
        or the retry), the failure is StoreOutcomeUnknown: op may have taken effect.
        """
        slot = next(self._next)
        if not slot.ready:
            # Prefer a live connection over reconnecting this one in the request path.
            slot = next((s for s in self._slots if s.ready), slot)
        try:
            db = await slot.get()
        except StoreUnavailable as exc:
            if _sent:
                raise StoreOutcomeUnknown(f"{exc} (after a lost connection)") from exc
            raise
        try:
            async with asyncio.timeout(timeout_s or self._settings.store_timeout_s):
                return await op(db)
        except NotAllowedError:
            # An expired session: start a fresh one.
            slot.drop(db)
            self.errors_total += 1
            raise StoreUnavailable("SurrealDB session no longer valid") from None
        except ServerError:
            raise
        except TimeoutError as exc:
            self.errors_total += 1
            slot.drop(db)
            raise StoreOutcomeUnknown("SurrealDB did not answer in time") from exc
        except asyncio.CancelledError:
            _reraise_if_cancelled()
            failure: BaseException = ConnectionError("call cancelled by the SDK: socket closed")
        except _CONNECTION_ERRORS as exc:
            failure = exc
        except Exception as exc:
            if not (_lost_connection(exc) or _dead(db)):
                # The SDK or the engine refused this call (a value it cannot encode, say): the
                # connection is fine, this judgment cannot be stored.
                self.errors_total += 1
                log.error("SurrealDB call failed: %r", exc)
                raise StoreUnavailable(f"SurrealDB call failed: {exc!r}") from exc
            failure = exc  # whatever the SDK raised, its socket is gone: a lost connection
        self.errors_total += 1
        slot.drop(db)
        if retry:
            return await self.call(op, retry=False, timeout_s=timeout_s, _sent=True)
        raise StoreOutcomeUnknown(f"SurrealDB connection failed: {failure!r}")

    async def wait_connected(self, deadline: float) -> bool:
        """Connect a slot if none is live, retrying until deadline (loop time); True if one is."""
        loop = asyncio.get_running_loop()
        while True:
            if any(slot.ready for slot in self._slots):
                return True
            try:
                await self._slots[0].get()
                return True
            except StoreUnavailable:
                pass
            if loop.time() + _RECONNECT_POLL_S > deadline:
                return False
            await asyncio.sleep(_RECONNECT_POLL_S)

    async def ping(self) -> bool:
        # Short: a load balancer's health check gives up after a few seconds.
        timeout = min(self._settings.store_timeout_s, 2.0)
        try:
            await self.call(lambda db: db.query("RETURN 1"), timeout_s=timeout)
        except (StoreUnavailable, ServerError):
            return False
        return True

    async def get(self, cell_id: str) -> dict[str, Any] | None:
        result = await self.call(lambda db: db.select(RecordID(TABLE, cell_id)))
        return _one(result)

    async def create_or_get(
        self, cell_id: str, record: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Store record as judgment:<cell_id> unless one exists; (stored record, created?).

        created is True only for the call whose write made the record. A write lost with its
        connection is sent again, the same record, once a connection is back (within
        store_timeout_s): it then makes the record or finds it, ours (created) or another's.
        Raises StoreOutcomeUnknown when that could not be found out: the record may exist.
        """
        rid = RecordID(TABLE, cell_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.store_timeout_s
        refusal: ServerError | None = None
        unknown: StoreOutcomeUnknown | None = None
        for _ in range(_WRITE_ATTEMPTS):
            try:
                if await self._batcher.write(rid, record):
                    if unknown is not None:
                        self.outcomes_recovered_total += 1
                        log.info("lost write of %s recovered: written again", rid)
                    return dict(record), True
                break
            except ServerError as exc:
                # From the one-CREATE-per-record fallback: normally "already exists"
                # (AlreadyExistsError from a server, InternalError from the embedded engine: the
                # kinds differ, so the record itself is the judge).
                refusal = exc
                break
            except StoreOutcomeUnknown as exc:
                unknown = exc
                self.outcomes_unknown_total += 1
                if loop.time() >= deadline or not await self.wait_connected(deadline):
                    raise
                log.warning("write of %s lost with its connection; sending it again", rid)
        else:
            assert unknown is not None
            raise unknown
        try:
            existing = await self.get(cell_id)
        except StoreUnavailable as exc:
            if unknown is not None and not isinstance(exc, StoreOutcomeUnknown):
                raise StoreOutcomeUnknown(str(exc)) from exc
            raise
        if existing is None:
            self.errors_total += 1
            raise StoreUnavailable(
                f"SurrealDB refused the judgment: {refusal or 'not written, and none stored'}"
            ) from refusal
        # A retried write whose first attempt had landed finds its own record.
        mine = existing.get("judgment_id") == record.get("judgment_id")
        if unknown is not None:
            self.outcomes_recovered_total += 1
            log.info("lost write of %s recovered: %s", rid, "ours" if mine else "another's")
        return existing, mine

    async def replace_degraded(
        self, cell_id: str, old_judgment_id: str, record: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Put record in place of judgment:<cell_id> if that is still the degraded judgment
        old_judgment_id (compare-and-set); (stored record, replaced?). When another instance
        upgraded it first, its record comes back with False.

        One statement, so the condition and the write are one transaction: of two instances
        upgrading the same cell, the engine lets one change the record; the other's WHERE no
        longer matches (or its transaction conflicts) and it reads the winner's record.
        Raises StoreOutcomeUnknown when the connection broke with the statement in flight.
        """
        rid = RecordID(TABLE, cell_id)
        params = {"rid": rid, "record": record, "old": old_judgment_id}
        self._batcher.queries_total += 1
        self._batcher.records_total += 1
        response = await self.call(lambda db: _query_raw(db, _REPLACE_DEGRADED_QUERY, params))
        results = response.get("result") if response.get("error") is None else None
        statement = results[0] if isinstance(results, list) and results else None
        if isinstance(statement, dict) and statement.get("status") == "OK":
            rows = statement.get("result")
            row = rows[0] if isinstance(rows, list) and rows else None
            if isinstance(row, dict) and row.get("judgment_id") == record["judgment_id"]:
                return dict(record), True
        else:  # a conflict with the winner's transaction: the stored record says who won
            log.info("upgrade of %s refused (%r): reading the stored judgment", rid, response)
        existing = await self.get(cell_id)
        if existing is None:  # removed meanwhile: the cell has no judgment, make this one
            return await self.create_or_get(cell_id, record)
        return existing, existing.get("judgment_id") == record["judgment_id"]

    async def judgment_ids(self, cell_ids: list[str]) -> dict[str, str]:
        """{cell_id: judgment_id} of the stored records among cell_ids (one query)."""
        ids = [RecordID(TABLE, cid) for cid in cell_ids]
        query = "SELECT id, judgment_id FROM $ids"
        rows = await self.call(lambda db: db.query(query, {"ids": ids}))
        out: dict[str, str] = {}
        for row in rows if isinstance(rows, list) else ():
            rid = row.get("id") if isinstance(row, dict) else None
            if isinstance(rid, RecordID):
                out[str(rid.id)] = str(row.get("judgment_id", ""))
        return out


def _one(result: Any) -> dict[str, Any] | None:
    if isinstance(result, list):
        result = result[0] if result else None
    if not isinstance(result, dict):
        return None
    out = dict(result)
    out.pop("id", None)  # the RecordID; the cell id is in the record already
    return out
