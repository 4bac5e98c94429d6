"""Live events for /ws/stream: every judgment this instance creates, fanned out to clients.

Each client has a bounded queue. A client too slow to keep up loses the oldest events rather
than slowing the judge or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

QUEUE_SIZE = 256


class EventHub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def clients(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
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
            queue.put_nowait(event)
