"""Live events for /ws/stream: every judgment this instance creates, fanned out to clients.

Each client has a bounded queue. A client too slow to keep up loses the oldest events rather
than slowing the judge or growing memory without bound. The number of clients is bounded too:
past `max_clients`, subscribe() refuses (the endpoint answers 503 to the handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

QUEUE_SIZE = 256
MAX_CLIENTS = 512


class EventHub:
    def __init__(self, queue_size: int = QUEUE_SIZE, max_clients: int = MAX_CLIENTS) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.dropped_total = 0  # events a slow client lost
        self.refused_total = 0  # clients turned away at max_clients
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def clients(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]] | None:
        """A new client's queue, or None when max_clients are already connected."""
        if len(self._queues) >= self.max_clients:
            self.refused_total += 1
            return None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.queue_size)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, event_type: str, payload: dict[str, Any]) -> None:
        if not self._queues:
            return
        event = {"type": event_type, "payload": payload, "ts": time.time()}
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                    self.dropped_total += 1
            queue.put_nowait(event)
