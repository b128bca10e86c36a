"""Reading capture files through the pipeline, in one process or in several.

``read_captures`` is the loop of ``replay`` and ``names``: each file is walked through
the skim in large buffers, the kept frames are fed to the extractor, and the clocks
(reassembly housekeeping, and the caller's ``tick`` for alert windows and metrics) run
at the first frame of each capture second, whether the skim kept that frame or not.

``replay --workers N`` runs that loop in N processes over the same files. Each worker's
skim keeps only its share of the flows (both directions of a flow hash to one worker;
frames the skim cannot place go to worker 0), so the Python work divides while every
worker walks every record in C. Workers (a ``detector.workers.WorkerPool``, as live's are)
send what they produce (observations of wanted names, address bindings, and worker 0's
clock ticks) keyed by (file, frame); the parent
merges the N ordered streams on that key and runs match -> policy -> sinks as one process
would. Every worker sees every frame's time and stops at the same clock frames, so its
reassembly tables expire at the same moments: events, alerts and counts are the same as
with one process, with two exceptions. A flow seen both inside a tunnel the skim cannot
open (IP-in-IP, GRE: read by worker 0) and outside it (read by its own worker) is split between two
workers; and each worker has reassembly tables of the full size, so when they overflow,
fewer flows are evicted than in one process.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.counters import file_key
from detector.coverage import CoverageTable
from detector.decode import SUPPORTED_LINKTYPES
from detector.extract.binding import Binding
from detector.pipeline import Extractor, Settings, Wanted
from detector.records import Observation
from detector.skim import count_drops
from detector.sources.pcapfile import CaptureError, CaptureFile

if TYPE_CHECKING:  # imported where used: a replay of one process without --report needs neither
    from detector.report.meta import CaptureInfo
    from detector.workers import WorkerCounts

#: Wall seconds between the counter snapshots a worker sends (for --metrics-addr).
SNAPSHOT_INTERVAL = 0.5
#: Ordered records: observations and bindings of a frame come before that frame's tick,
#: and a worker's mark of how far it has read after both.
_DURING, _AFTER, _MARK = 0, 1, 2


def warn(message: object) -> None:
    print(f"tiktok-detector: {message}", file=sys.stderr)


def read_captures(
    paths: list[str], extractor: Extractor, tick: Callable[[float], None],
    described: list[CaptureInfo] | None = None, progress: bool = True,
    on_file: Callable[[int], None] | None = None, on_batch: Callable[[CaptureFile], None] | None = None,
    speaks: bool = True,
) -> int:
    """Feed every capture through the extractor; returns how many files had errors.

    With ``described``, each file is also hashed and spanned as it is read, for the run
    record and the report (one read of each capture, stdin included). ``on_file`` is
    called with each file's index before it is read, ``on_batch`` after each walk.
    ``speaks``: this reader warns of damaged files and counts their skipped records
    (of several workers reading the same files, one does)."""
    if described is not None:
        from detector.report.captures import capture_info
        from detector.report.meta import CaptureInfo
    say = warn if speaks else _ignore
    errors = 0
    stats = extractor.stats
    feed = extractor.feed
    skimmer = extractor.skimmer
    for index, path in enumerate(paths):
        if on_file is not None:
            on_file(index)
        try:
            capture = CaptureFile(path, digest=described is not None)
        except CaptureError as exc:
            say(exc)
            errors += 1
            if described is not None:
                described.append(CaptureInfo(Path(path).name, path=path, error=str(exc)))
            continue
        error = None
        bar = _progress_bar(path) if progress else None
        next_tick = 0.0
        skimmer.until = min(extractor.next_housekeeping, next_tick)
        try:
            for frames, last_ts, drops in capture.batches(skimmer):
                for ts, linktype, data, frame, hint in frames:
                    feed(ts, linktype, data, capture.name, frame, hint)
                count_drops(stats, drops)
                if last_ts is not None:
                    # The walk stopped at the first frame at or past a clock (or ended):
                    # run the clocks as if every frame had been read here.
                    extractor.clock(last_ts)
                    if last_ts >= next_tick:
                        tick(last_ts)
                        next_tick = last_ts + 1.0
                    skimmer.until = min(extractor.next_housekeeping, next_tick)
                if bar is not None:
                    bar.update(capture.bytes_read - bar.n)
                if on_batch is not None:
                    on_batch(capture)
        except CaptureError as exc:
            say(exc)
            errors += 1
            error = str(exc)
        finally:
            if bar is not None:
                bar.close()
        if described is not None:
            described.append(capture_info(capture, error))
        else:
            capture.close()
        for reason, count in capture.skipped.items() if speaks else ():
            stats[file_key(reason)] += count
            say(f"{path}: {count} record(s) skipped: {reason.replace('_', ' ')}")
        unsupported = capture.linktypes - SUPPORTED_LINKTYPES
        if unsupported:
            say(f"{path}: frames of unsupported link type(s) {', '.join(map(str, sorted(unsupported)))} skipped")
    return errors


def _progress_bar(path: str):
    """A byte-based progress bar, only on a terminal and only for files of known size."""
    if path == "-" or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=Path(path).name,
                file=sys.stderr, leave=False)


# -- several processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What every worker is given (inherited across fork, never pickled)."""

    paths: list[str]
    settings: Settings
    wanted: Wanted
    describe: bool
    progress: bool


def replay_parallel(
    job: Job, workers: int, on_observation: Callable[[Observation], None],
    on_binding: Callable[[Binding], None], tick: Callable[[float], None], counts: WorkerCounts,
    described: list[CaptureInfo] | None, coverage: CoverageTable, started: Callable[[], None] = lambda: None,
) -> int:
    """Replay ``job`` on ``workers`` processes; returns how many files had errors.

    Records reach the callbacks in the order one process would give them; the workers'
    snapshots go to ``counts`` as they come, their final ones at the end, and their
    coverage tables are added to ``coverage``. ``started`` runs once every worker is
    forked: threads (a metrics server) start there."""
    from detector.workers import WorkerPool, ordered

    pool = WorkerPool(workers, _worker, (job, workers), "replay")
    finals: list[dict[str, Any]] = [{} for _ in range(workers)]
    try:
        started()
        for key, record in ordered(pool, counts, finals):
            kind = key[2]
            if kind == _AFTER:
                tick(record)
            elif kind == _DURING:
                if isinstance(record, Observation):
                    on_observation(record)
                else:
                    on_binding(record)
    finally:
        pool.stop()
    for index, final in enumerate(finals):
        counts.update(index, final["snapshot"])
        coverage.merge(final["coverage"])
    if described is not None:
        described.extend(finals[0]["described"])
    return finals[0]["errors"]


def _worker(index: int, sender: Any, job: Job, workers: int) -> None:
    """Replay this worker's share of the flows and send its records, in (file, frame) order."""
    try:
        _replay_share(job, index, workers, sender)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which exits with it
        from detector.workers import ERROR

        lines = traceback.format_exception_only(type(exc), exc)
        sender.send((ERROR, f"replay worker {index}: {lines[-1].strip()}"))


def _replay_share(job: Job, index: int, workers: int, sender: Any) -> None:
    from detector.workers import DONE, RECORDS

    out: list[tuple] = []
    sequence = itertools.count()
    where = [0]  # index of the file being read
    pending_tick: list[float] = []
    settings = replace(job.settings, worker=index, workers=workers)

    def observed(obs: Observation) -> None:
        out.append(((where[0], obs.frame, _DURING, next(sequence)), obs))

    def bound(binding: Binding) -> None:
        out.append(((where[0], extractor.frame, _DURING, next(sequence)), binding))

    extractor = Extractor(settings, observed, bound, Counter(), wanted=job.wanted)
    next_snapshot = [0.0]

    def after_batch(capture: CaptureFile) -> None:
        if pending_tick:
            out.append(((where[0], capture.frames, _AFTER, next(sequence)), pending_tick.pop()))
        # How far this worker has read: lets the merge pass it even when it found nothing.
        out.append(((where[0], capture.frames, _MARK, next(sequence)), None))
        snapshot = None
        if time.monotonic() >= next_snapshot[0]:
            snapshot = extractor.snapshot()
            next_snapshot[0] = time.monotonic() + SNAPSHOT_INTERVAL
        sender.send((RECORDS, out[:], snapshot))
        out.clear()

    def file_started(file_index: int) -> None:
        where[0] = file_index

    first = index == 0
    described: list[CaptureInfo] | None = [] if first and job.describe else None
    errors = read_captures(
        job.paths, extractor, pending_tick.append if first else _ignore, described, progress=first and job.progress,
        on_file=file_started, on_batch=after_batch, speaks=first,
    )
    if out:
        sender.send((RECORDS, out[:], None))
    sender.send((DONE, {"snapshot": extractor.snapshot(), "errors": errors, "described": described or [],
                        "coverage": extractor.coverage.export()}))


def _ignore(*_: object) -> None:
    pass
