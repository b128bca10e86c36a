"""The worker pool's pipes: how a worker's end reads to the parent, whatever state it left."""

from __future__ import annotations

from multiprocessing.connection import Connection

from detector.workers import WorkerPool


def _fail_without_reading(index: int, pipe: Connection, parent_sent: object) -> None:
    """Say it failed, wait until the parent's control message is in the socket unread, exit."""
    pipe.send(("error", "cannot open the interface"))
    pipe.poll(10)


def test_worker_that_exits_with_a_control_message_unread_ends_its_messages() -> None:
    """A worker that fails while its parent sends it "stop" exits with the message unread, and
    the kernel resets the pipe instead of closing it: its error still arrives, then the end."""
    pool = WorkerPool(1, _fail_without_reading, (None,), "test-worker")
    try:
        assert pool.receive(0) == ("error", "cannot open the interface")
        pool.send(0, ("stop",))
        pool.processes[0].join(10)
        assert pool.processes[0].exitcode == 0
        assert list(pool.pending(0)) == []
        assert pool.ended(0)
        assert pool.receive(0) is None
    finally:
        pool.stop()
