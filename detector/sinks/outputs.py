"""Where verdicts go: the events file, the alert deduplication table and the summary.

One object for the replay and the live writer alike, so both write the same records in
the same way.
"""

from __future__ import annotations

import sys
from typing import TextIO

from detector.records import Verdict
from detector.sinks.alerts import AlertTable
from detector.sinks.events import JsonLines
from detector.sinks.summary import Summary


class OutputError(Exception):
    """An output file that cannot be opened; the message is one line."""


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
