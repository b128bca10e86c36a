"""Where verdicts go: the events file, the alert deduplication table and the summary.

One object for the replay and the live writer alike, so both write the same records in
the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from detector.errors import UserError
from detector.records import Verdict
from detector.sinks.alerts import AlertTable
from detector.sinks.events import JsonLines
from detector.sinks.summary import Summary


class OutputError(UserError):
    """An output file that cannot be opened; the message is one line."""


def check_outputs(outputs: Iterable[str | None], inputs: Iterable[str | None]) -> None:
    """Refuse, before anything is read or written, an output that is also an input (an
    events file named like the capture would truncate the evidence), one named for two
    outputs, or one that cannot be written (a missing or read-only directory found only
    after hours of replay)."""
    sources = [p for p in inputs if p and p != "-"]
    seen = {os.path.realpath(p) for p in sources}
    stats = []
    for path in sources:
        try:
            stats.append(os.stat(path))
        except OSError:
            pass
    written: dict[str, str] = {}
    for output in outputs:
        if not output or output == "-":
            continue
        real = os.path.realpath(output)
        if real in seen or any(_same_file(output, st) for st in stats):
            raise OutputError(f"{output}: is also an input; refusing to overwrite it")
        if real in written:
            raise OutputError(f"{output}: named for two outputs (also as {written[real]}); one would overwrite the other")
        written[real] = output
        if os.path.isdir(output):
            raise OutputError(f"{output}: is a directory")
        directory = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(directory):
            raise OutputError(f"{output}: no such directory {directory}")
        if not os.access(output if os.path.exists(output) else directory, os.W_OK):
            raise OutputError(f"{output}: not writable")


def _same_file(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` is the file ``st`` describes (a hard link has another real path)."""
    try:
        mine = os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def open_output(path: str | None, append: bool = False) -> JsonLines | None:
    """A JSON-lines writer on ``path``, on stdout for ``-``, or None when not asked for."""
    if path is None:
        return None
    if path == "-":
        return JsonLines(sys.stdout, line_buffered=True)
    try:
        stream: TextIO = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 - closed by Outputs.close
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror or exc}") from None
    return JsonLines(stream, line_buffered=False)


class Outputs:
    def __init__(self, events_path: str | None, alerts_path: str | None, dedup_window: float,
                 line_buffered: bool = False, append: bool = False) -> None:
        self.events = open_output(events_path, append)
        self.alerts_out = open_output(alerts_path, append)
        for out in (self.events, self.alerts_out):
            if out is not None and line_buffered:
                out.line_buffered = True  # live: a log shipper sees each record as it happens
        self.alerts = AlertTable(dedup_window, self.alerts_out.write if self.alerts_out else _discard)
        self.summary = Summary()

    def verdict(self, verdict: Verdict) -> None:
        if self.events is not None:
            self.events.write_event(verdict)
        self.alerts.add(verdict)
        self.summary.add(verdict)

    def tick(self, now: float) -> None:
        self.alerts.tick(now)

    def close(self) -> None:
        """Write the alerts of windows still open and close the files."""
        self.alerts.flush()
        for out in (self.events, self.alerts_out):
            if out is not None:
                out.stream.flush()
                if out.stream is not sys.stdout:
                    out.stream.close()


def _discard(record: dict) -> None:
    """Alerts are still deduplicated (and counted) when no alerts file was asked for."""
