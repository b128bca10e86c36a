"""Worker processes, replay and live alike: one pool, one message protocol, one sum of counts.

A run that reads packets in several processes forks them together with ``WorkerPool``
before it starts any thread (a thread running at a fork is copied half-way into the
child). Each worker is joined to the merging process by one duplex pipe: messages up,
control (a reload, a stop) down. Every message up is a tuple led by its kind:

- ``(RECORDS, [(key, record), ...], snapshot or None)``: what the worker produced, each
  record under the key the merge orders by ((file, frame, ...) for files, packet time
  live), and from time to time the worker's counters;
- ``(READY,)``: the worker reads; ``(LOG, line)``: a line for the operator;
- ``(ERROR, line)``: the worker cannot go on, and says why in one line;
- ``(DONE, final)``: the worker ended; ``final["snapshot"]`` holds its last counters.

The records are merged here, in one of two orders: ``ordered`` for files, where each
worker sends its records in (file, frame) order and the merge is exact; ``TimedMerge``
live, where records are keyed by packet time and held a bounded delay to interleave the
workers'. ``WorkerCounts`` sums the workers' latest snapshots with the merging process's
own counts, the one sum that metrics, summary and run's end read.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

from detector.errors import UserError

RECORDS, READY, LOG, ERROR, DONE = "records", "ready", "log", "error", "done"


class WorkerError(UserError):
    """A worker process failed; the message is its last line of trouble."""


class WorkerPool:
    """``count`` processes running ``target(index, pipe, *args)``, forked at once."""

    def __init__(self, count: int, target: Callable[..., None], args: tuple, name: str) -> None:
        self.name = name
        context = multiprocessing.get_context("fork")
        pipes = [context.Pipe() for _ in range(count)]
        self.processes = [
            context.Process(target=_child, args=(target, index, pipes, args), name=f"{name}-{index}", daemon=True)
            for index in range(count)
        ]
        for process in self.processes:
            process.start()
        for _, child in pipes:
            child.close()
        self.pipes: list[Connection] = [parent for parent, _ in pipes]
        self._eof = [False] * count

    def __len__(self) -> int:
        return len(self.processes)

    def send(self, index: int, message: tuple) -> None:
        """Control for one worker; a worker that has ended is not an error."""
        try:
            self.pipes[index].send(message)
        except OSError:  # BrokenPipeError: it ended
            pass

    def receive(self, index: int) -> tuple | None:
        """The worker's next message, waiting for it; None once the worker has ended
        (killed, out of memory, or done) and left nothing more to read."""
        pipe = self.pipes[index]
        if not pipe.poll():
            wait([pipe, self.processes[index].sentinel])
        return next(self.pending(index), None)

    def waiting(self, among: set[int], timeout: float) -> set[int]:
        """Which of the workers ``among`` have a message to read or have ended."""
        handles: dict[Any, int] = {}
        for index in among:
            if not self._eof[index]:
                handles[self.pipes[index]] = index
            handles[self.processes[index].sentinel] = index
        return {handles[ready] for ready in wait(list(handles), timeout)} if handles else set()

    def pending(self, index: int) -> Iterator[tuple]:
        """The worker's messages that are here now, without waiting."""
        pipe = self.pipes[index]
        while not self._eof[index] and pipe.poll():
            try:
                yield pipe.recv()
            except (EOFError, ConnectionResetError):
                # A worker that exits with a control message still unread in its socket
                # (a "stop" sent as it failed) resets the pipe instead of closing it:
                # what it sent before is read first, so this too is the end of its messages.
                self._eof[index] = True

    def ended(self, index: int) -> bool:
        """The worker's process is gone and its pipe read to the end."""
        return not self.processes[index].is_alive() and (self._eof[index] or not self.pipes[index].poll())

    def stop(self) -> None:
        """End what still runs (a failed worker's siblings are not waited for) and reap all."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _child(target: Callable[..., None], index: int, pipes: list[tuple[Connection, Connection]], args: tuple) -> None:
    # Only this worker writes to its pipe and only the parent reads it: with no other copy
    # of the ends open, a write to a parent that died fails instead of blocking for ever.
    for other, (parent, child) in enumerate(pipes):
        parent.close()
        if other != index:
            child.close()
    pipe = pipes[index][1]
    try:
        target(index, pipe, *args)
    finally:
        pipe.close()


def ordered(pool: WorkerPool, counts: WorkerCounts, finals: list[dict[str, Any]]) -> Iterator[tuple[Any, Any]]:
    """Every worker's (key, record) pairs in key order, as one process would have made them:
    each worker sends its own in order, so the merge reads from a worker only when its next
    key is due. Snapshots go to ``counts``; each worker's DONE payload to ``finals``. A worker
    that fails or ends without its DONE ends the merge with a ``WorkerError``."""
    return heapq.merge(*(_stream(pool, i, counts, finals[i]) for i in range(len(pool))), key=lambda item: item[0])


def _stream(pool: WorkerPool, index: int, counts: WorkerCounts, final: dict[str, Any]) -> Iterator[tuple]:
    while True:
        message = pool.receive(index)
        if message is None:
            raise WorkerError(f"{pool.name} worker {index} ended without its results")
        kind, *body = message
        if kind == RECORDS:
            records, snapshot = body
            if snapshot is not None:
                counts.update(index, snapshot)
            yield from records
        elif kind == ERROR:
            raise WorkerError(body[0])
        elif kind == DONE:
            final.update(body[0])
            return


class TimedMerge:
    """Records keyed by packet time from several workers, handed on in time order once they
    have waited ``delay`` seconds: the workers' records interleave, and a device's DHCP
    binding seen by one must reach the device table before the names that device asked
    for, whichever worker saw each."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._held: list[tuple[float, int, float, Any]] = []  # (key, arrival order, arrival time, record)
        self._order = itertools.count()

    def add(self, records: Iterable[tuple[float, Any]], arrived: float) -> None:
        for key, record in records:
            heapq.heappush(self._held, (key, next(self._order), arrived, record))

    def due(self, now: float) -> Iterator[Any]:
        """The records that have waited long enough, in key order (all of them at ``inf``)."""
        held = self._held
        while held and held[0][2] <= now - self.delay:
            yield heapq.heappop(held)[3]


class WorkerCounts:
    """The workers' latest snapshots (each replaces the one before) plus ``own``, the
    merging process's counts, updated in place as it goes."""

    def __init__(self, own: Counter[str]) -> None:
        self.own = own
        self._latest: dict[int, Mapping[str, float]] = {}

    def update(self, worker: int, snapshot: Mapping[str, float]) -> None:
        self._latest[worker] = snapshot

    def snapshot(self) -> dict[str, float]:
        total = Counter(self.own)
        for snap in self._latest.values():
            total.update(snap)
        return dict(total)
