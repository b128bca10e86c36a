"""The counts of a run whose packets are read by worker processes, replay and live alike.

Each worker sends its whole snapshot (its extractor's counters and its tables' own, see
``Extractor.snapshot``) from time to time and once more when it ends; the latest replaces
the one before. The process that merges the workers' records counts what happens there
(match, policy, reloads) in a ``Counter`` of its own. ``snapshot()`` adds the two key by key:
the one sum that the metrics exporter, the summary and the end of a run read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class WorkerCounts:
    def __init__(self, own: Counter[str]) -> None:
        """``own``: the merging process's counts, updated in place as it goes."""
        self.own = own
        self._latest: dict[int, Mapping[str, float]] = {}

    def update(self, worker: int, snapshot: Mapping[str, float]) -> None:
        self._latest[worker] = snapshot

    def snapshot(self) -> dict[str, float]:
        total = Counter(self.own)
        for snap in self._latest.values():
            total.update(snap)
        return dict(total)
