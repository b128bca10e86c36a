"""Events files read as a stream of records, line by line, whatever their size.

An events file is JSON lines as ``replay --events`` writes them, plain or gzip-compressed
(a month of events is usually archived that way), or ``-`` for stdin. A line that is not an
event (cut short by a full disk, edited by hand, from another tool) is skipped and counted
with its line number, so the report can state exactly what it did not use.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from detector.report.model import Event, parse_event

#: A longer line is not an event (events are a few hundred bytes); read past it in chunks.
MAX_LINE = 64 * 1024
#: Skipped lines whose number and reason the report lists; the rest are only counted.
MAX_EXAMPLES = 10
#: Lines between progress updates.
PROGRESS_EVERY = 4096


class InputError(Exception):
    """An events file that cannot be opened; one line naming it."""


@dataclass(slots=True)
class InputFile:
    """What was read from one events file."""

    path: str
    lines: int = 0
    events: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error: str | None = None  # a read error that ended the file early

    @property
    def skipped(self) -> int:
        return sum(self.problems.values())

    def skip(self, line: int, reason: str) -> None:
        self.problems[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line}: {reason}")


def open_events(path: str) -> tuple[io.BufferedReader, io.BufferedIOBase]:
    """``(raw, text source)``: the raw file (for progress by position) and the stream of
    decompressed bytes to read lines from."""
    if path == "-":
        raw = sys.stdin.buffer
        raw = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    else:
        try:
            raw = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by read_events
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return raw, gzip.GzipFile(fileobj=raw)
    return raw, raw


def read_events(path: str, stats: InputFile, progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Every event of one file, in file order; skipped lines are recorded in ``stats``.

    ``progress`` is called with the number of (compressed) bytes consumed since its last call.
    """
    raw, source = open_events(path)
    position = 0
    try:
        while True:
            try:
                line = source.readline(MAX_LINE + 1)
            except (OSError, EOFError) as exc:
                stats.error = f"read error after line {stats.lines}: {exc}"
                return
            if not line:
                return
            stats.lines += 1
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                _skip_rest_of_line(source)
                stats.skip(stats.lines, "line longer than 64 KiB")
                continue
            if not line.strip():
                continue  # a blank line is no record, and no error either
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                stats.skip(stats.lines, "not JSON")
                continue
            event = parse_event(record)
            if isinstance(event, str):
                stats.skip(stats.lines, event)
                continue
            stats.events += 1
            yield event
            if progress is not None and not stats.lines % PROGRESS_EVERY:
                position = _report_progress(raw, position, progress)
    finally:
        if progress is not None:
            _report_progress(raw, position, progress)
        if raw is not sys.stdin.buffer:
            raw.close()


def _skip_rest_of_line(source: io.BufferedIOBase) -> None:
    while True:
        chunk = source.readline(MAX_LINE)
        if not chunk or chunk.endswith(b"\n"):
            return


def _report_progress(raw: io.BufferedReader, position: int, progress: Callable[[int], None]) -> int:
    try:
        now = raw.tell()
    except (OSError, ValueError):
        return position
    if now > position:
        progress(now - position)
    return now
