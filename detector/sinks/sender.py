"""A bounded queue drained by a thread of its own: how the sensor talks to other servers.

The Alertmanager push and the syslog sender both take records on the packet loop's thread
and send them over the network, which can be slow or down. The loop must never wait on
it: it only queues, a full queue drops the record (counted), and a daemon thread sends.
The thread starts with the first record, not before: a sensor forks its workers first, and
a thread running at a fork is copied half-way into the child.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Generic, TypeVar

Item = TypeVar("Item")


class QueuedSender(Generic[Item]):
    """Counts ``sent``, ``failed`` (the subclass's ``_run`` says) and ``dropped``; ``_run``
    takes items from ``_queue`` until it gets ``None``, the end."""

    def __init__(self, name: str, capacity: int) -> None:
        self._name = name
        self._queue: queue.Queue[Item | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        #: Set when closing: a sender waiting to retry gives up instead.
        self._closing = threading.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error = ""

    def _enqueue(self, item: Item) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued and stop; after about ``timeout`` seconds what is still
        queued counts as dropped."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._closing.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.dropped += 1
