"""Where verdicts go: the events file, the alert deduplication table, syslog and the summary.

One object for the replay and the live writer alike, so both write the same records in
the same way. Every event and alert names its sensor (``sensor``); in the ECS format
(``detector.sinks.ecs``) the same record is renamed once and then written to the file and
syslog alike.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from detector.errors import UserError
from detector.records import Verdict
from detector.sinks.alerts import AlertTable
from detector.sinks.ecs import ecs_alert, ecs_event
from detector.sinks.events import JsonLines, event_record
from detector.sinks.summary import Summary
from detector.sinks.syslog import SEVERITY_NOTICE, SEVERITY_WARNING

if TYPE_CHECKING:
    from detector.sinks.syslog import SyslogSender

#: ``--events-format``: the native schema (README) or Elastic Common Schema field names.
EVENT_FORMATS = ("native", "ecs")
#: The longest ``--sensor`` name; it is a field of every record and syslog message.
MAX_SENSOR_NAME = 128


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


def default_sensor() -> str:
    """The sensor's name when ``--sensor`` is not given: the host's name."""
    return socket.gethostname()


def sensor_name(text: str) -> str:
    """``--sensor``: printable, without surrounding spaces, at most MAX_SENSOR_NAME long."""
    if not text or text != text.strip() or len(text) > MAX_SENSOR_NAME or not text.isprintable():
        raise ValueError(f"{text!r}: a sensor name is 1 to {MAX_SENSOR_NAME} printable characters, "
                         "without leading or trailing spaces")
    return text


class Outputs:
    def __init__(self, events_path: str | None, alerts_path: str | None, dedup_window: float,
                 line_buffered: bool = False, append: bool = False, *, sensor: str | None = None,
                 events_format: str = "native", syslog: SyslogSender | None = None) -> None:
        self.events = open_output(events_path, append)
        self.alerts_out = open_output(alerts_path, append)
        for out in (self.events, self.alerts_out):
            if out is not None and line_buffered:
                out.line_buffered = True  # live: a log shipper sees each record as it happens
        self.sensor = sensor or default_sensor()
        ecs = events_format == "ecs"
        self._event_doc: Callable[[dict], dict] = ecs_event if ecs else _same
        self._alert_doc: Callable[[dict], dict] = ecs_alert if ecs else _same
        self.syslog = syslog
        self.alerts = AlertTable(dedup_window, self._alert)
        self.summary = Summary()

    def verdict(self, verdict: Verdict) -> None:
        if self.events is not None or self.syslog is not None:
            record = event_record(verdict)
            record["sensor"] = self.sensor
            doc = self._event_doc(record)
            if self.events is not None:
                self.events.write(doc)
            if self.syslog is not None:
                self.syslog.send(doc, "event", SEVERITY_WARNING if verdict.decision == "violation" else SEVERITY_NOTICE)
        self.alerts.add(verdict)
        self.summary.add(verdict)

    def _alert(self, record: dict) -> None:
        """A closed alert window: written and sent like an event (an alert is a violation)."""
        record["sensor"] = self.sensor
        doc = self._alert_doc(record)
        if self.alerts_out is not None:
            self.alerts_out.write(doc)
        if self.syslog is not None:
            self.syslog.send(doc, "alert", SEVERITY_WARNING)

    def tick(self, now: float) -> None:
        self.alerts.tick(now)

    def close(self) -> None:
        """Write the alerts of windows still open and close the files."""
        self.alerts.flush()
        if self.syslog is not None:
            self.syslog.close()
        for out in (self.events, self.alerts_out):
            if out is not None:
                out.stream.flush()
                if out.stream is not sys.stdout:
                    out.stream.close()


def _same(record: dict) -> dict:
    """The native format: the record as it is."""
    return record
