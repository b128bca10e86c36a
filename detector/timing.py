"""How long the pipeline takes per packet, measured where the packets are processed.

Each process that reads packets (a one-process replay, each replay or live worker) keeps
its own timer inside its ``Extractor``, so the histogram the metrics show is the sum over
the processes that did the work, not the time of a parent that only merged their results.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

#: Upper bounds (seconds) of the processing-time buckets: from a skimmed bulk packet (about
#: a microsecond) to a QUIC Initial decryption (tens of microseconds) and beyond.
PROCESSING_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2)


class BatchTimer:
    """The processing-time histogram, kept in plain integers and read through ``snapshot``.

    Timing each packet would cost more than some packets take to process, so the timer is
    read once per batch (the packets between two housekeeping ticks, about one per capture
    second) and every packet of the batch is counted at the batch's mean. It is the calling
    thread's CPU time, not wall time, so that time spent waiting for input (a slow stdin, a
    quiet network) is not counted as processing.
    """

    def __init__(self, clock: Callable[[], float] = time.thread_time) -> None:
        self.clock = clock
        self.buckets = [0] * (len(PROCESSING_BUCKETS) + 1)
        self.seconds = 0.0
        self.packets = 0
        self._start: tuple[float, int] | None = None

    def batch(self, packets: int) -> None:
        """Close the batch that ends after ``packets`` packets in all (a running total)."""
        now = self.clock()
        if self._start is not None:
            started, before = self._start
            count = packets - before
            if count > 0:
                spent = max(now - started, 0.0)
                self.buckets[bisect.bisect_left(PROCESSING_BUCKETS, spent / count)] += count
                self.seconds += spent
                self.packets += count
        self._start = (now, packets)

    def snapshot(self) -> dict[str, float]:
        snap: dict[str, float] = {f"processing.bucket.{i}": n for i, n in enumerate(self.buckets)}
        snap["processing.seconds"] = self.seconds
        snap["processing.packets"] = self.packets
        return snap
