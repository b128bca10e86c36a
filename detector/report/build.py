"""From events to a finished report: aggregate, locate and hash captures, verify, render.

``ReportBuilder`` is fed events (read from files by ``report``, or handed over one by one
by ``replay --report``), then ``finish`` works out the inputs the report must name, runs
the Wireshark cross-check when asked, and writes the HTML, CSV and JSON files.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from detector import __version__
from detector.coverage import DeviceCoverage
from detector.report import ReportError
from detector.report.captures import describe_capture, locate
from detector.report.inputs import InputError, InputFile, read_events
from detector.report.meta import (
    CaptureInfo,
    PolicyInfo,
    RunInfo,
    SidecarError,
    SignatureInfo,
    read_sidecar,
)
from detector.report.model import EVIDENCE_PER_DEVICE, OTHER, Event, ReportModel, parse_event
from detector.report.pseudonym import Pseudonymizer

if TYPE_CHECKING:
    # --verify only: pyshark and asyncio are imported when a report is verified.
    from detector.report.verify import EvidenceStore, Verification


@dataclass(frozen=True, slots=True)
class ReportOptions:
    html: str | None = None
    csv: str | None = None
    json: str | None = None
    key: bytes | None = None  # pseudonymize with this HMAC key
    verify: bool = False
    pcap_dirs: tuple[Path, ...] = ()  # explicit capture directories (else the defaults)
    evidence_per_device: int = EVIDENCE_PER_DEVICE
    progress: bool = False  # progress bars on stderr


@dataclass(slots=True)
class CaptureRow:
    """One capture as the report lists it: what the file says and what the events say."""

    name: str
    info: CaptureInfo | None  # the file as read now (None: not found / not readable here)
    recorded: CaptureInfo | None  # as the replay recorded it (sidecar)
    events: int
    events_first: float | None
    events_last: float | None
    status: str  # "ok", "damaged" (read, with skipped records), "not found", "unavailable",
    #              "differs" (not the file replayed), "ambiguous" (name reused), "live"
    note: str = ""

    @property
    def known(self) -> CaptureInfo | None:
        """The best description available: the file read now, else the replay's record."""
        return self.info if self.info is not None and self.info.sha256 else self.recorded


@dataclass(slots=True)
class Report:
    """Everything the renderers need; nothing in here holds more than the model bounds."""

    generated: float
    tool: str
    model: ReportModel
    inputs: list[InputFile]
    captures: list[CaptureRow]
    signatures: list[SignatureInfo]
    policies: list[PolicyInfo]
    dns_ports: tuple[int, ...]
    quic_ports: tuple[int, ...]
    unknown: list[str] = field(default_factory=list)  # what could not be stated, and why
    verification: Verification | None = None
    pseudonymized: bool = False
    #: Each device's connections by outcome, summed over the runs that recorded it, most
    #: connections first; ``None`` when no run record holds coverage.
    coverage: list[DeviceCoverage] | None = None
    sensors: list[str] = field(default_factory=list)  # from the run records (--sensor)


def _progress_bar(enabled: bool, total: int | None, desc: str, unit: str = "B"):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=False, file=sys.stderr)


class ReportBuilder:
    """Aggregates events as they come; ``finish`` writes the report files."""

    def __init__(self, options: ReportOptions) -> None:
        if not (options.html or options.csv or options.json):
            raise ReportError("no output: give -o REPORT.html, --csv FILE or --json FILE")
        self.options = options
        self.model = ReportModel(options.evidence_per_device)
        self.pseudonymizer = Pseudonymizer(options.key) if options.key else None
        self.inputs: list[InputFile] = []
        self.runs: list[RunInfo] = []
        self.unknown: list[str] = []
        self.events_dirs: list[Path] = []
        self._store: EvidenceStore | None = None
        if options.verify:
            from detector.report.verify import EvidenceStore, VerifyError, tshark_versions

            try:
                tshark_versions()  # fail before reading a month of events, not after
            except VerifyError as exc:
                raise ReportError(str(exc)) from None
            self._store = EvidenceStore()
        self.skipped_records = 0

    # ── input ──────────────────────────────────────────────────────────────────────────

    def add(self, event: Event) -> None:
        if self.pseudonymizer is not None:
            event = self.pseudonymizer.event(event)
        self.model.add(event)
        if self._store is not None:
            self._store.add(event)

    def add_record(self, record: dict) -> None:
        """An event record as ``replay`` writes it (an invalid one is counted, not raised)."""
        event = parse_event(record)
        if isinstance(event, str):
            self.skipped_records += 1
        else:
            self.add(event)

    def add_file(self, path: str) -> InputFile:
        """Read one events file (and its run record, when there is one)."""
        stats = InputFile(path)
        if path != "-" and not os.path.isfile(path):
            raise ReportError(f"{path}: no such events file")
        size = os.path.getsize(path) if path != "-" else None
        bar = _progress_bar(self.options.progress, size, Path(path).name)
        try:
            for event in read_events(path, stats, bar.update if bar is not None else None):
                self.add(event)
        except InputError as exc:
            raise ReportError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        if not stats.events and stats.skipped:
            raise ReportError(f"{path}: not an events file: {stats.lines} line(s), none an event "
                              f"({stats.examples[0]})")
        self.inputs.append(stats)
        if path != "-":
            self.events_dirs.append(Path(os.path.abspath(path)).parent)
            try:
                run = read_sidecar(path)
            except SidecarError as exc:
                self.unknown.append(f"run record unusable: {exc}")
                run = None
            if run is None:
                self.unknown.append(
                    f"{path}: no run record ({Path(path).name}.meta.json, written by replay --events): "
                    "signature set, policy, and captures without events are unknown for it")
            else:
                self.runs.append(run)
        else:
            self.unknown.append("events read from stdin carry no run record: "
                                "signature set and policy are unknown for them")
        return stats

    # ── output ─────────────────────────────────────────────────────────────────────────

    def finish(self, runs: Iterable[RunInfo] = (), described: dict[str, CaptureInfo] | None = None,
               default_dirs: Iterable[Path] = (), log: TextIO | None = None) -> int:
        """Locate and hash the captures, verify if asked, write the outputs.

        ``runs`` adds run records the caller knows (``replay`` passes its own);
        ``described`` maps capture names to files already hashed (so replay reads its
        captures once). Returns the exit status: 1 when --verify left an event unconfirmed.
        """
        log = log or sys.stderr
        self.runs.extend(runs)
        try:
            report = self._assemble(described or {}, [*default_dirs, *self.events_dirs])
            self._write(report)
        finally:
            if self._store is not None:
                self._store.close()
        self._summary(report, log)
        if report.verification is not None and report.verification.unconfirmed_count:
            return 1
        return 0

    def _assemble(self, described: dict[str, CaptureInfo], default_dirs: list[Path]) -> Report:
        recorded: dict[str, list[CaptureInfo]] = {}
        for run in self.runs:
            for capture in run.captures:
                recorded.setdefault(capture.name, []).append(capture)
        names = sorted((set(self.model.captures) | set(recorded)) - {OTHER})
        rows: list[CaptureRow] = []
        locations: dict[str, Path | None] = {}
        refused: dict[str, str] = {}
        for name in names:
            row, location = self._capture_row(name, recorded.get(name, []), described, default_dirs)
            rows.append(row)
            locations[name] = location
            if row.status not in ("ok", "damaged"):
                refused[name] = row.note
        if OTHER in self.model.captures:
            self.unknown.append("more captures than a report itemises: the rest are counted under (other)")
        verification = None
        if self._store is not None:
            from detector.report.verify import verify

            self._store.seal()
            bar = _progress_bar(self.options.progress, None, "verify", unit="frame")
            verification = verify(self._store, locations, refused, self._dns_ports(),
                                   bar.update if bar is not None else None,
                                   (lambda total: setattr(bar, "total", total)) if bar is not None else None)
            if bar is not None:
                bar.close()
        if self.skipped_records:
            self.unknown.append(f"{self.skipped_records} event record(s) from the replay were not valid events")
        coverage = self._coverage()
        return Report(
            generated=time.time(),
            tool=f"tiktok-detector {__version__}",
            model=self.model,
            inputs=self.inputs,
            captures=rows,
            signatures=_distinct(run.signatures for run in self.runs),
            policies=_distinct(run.policy for run in self.runs),
            dns_ports=self._dns_ports(),
            quic_ports=tuple(sorted({p for run in self.runs for p in run.quic_ports} or {443})),
            unknown=self.unknown,
            verification=verification,
            pseudonymized=self.pseudonymizer is not None,
            coverage=coverage,
            sensors=sorted({run.sensor for run in self.runs if run.sensor}),
        )

    def _coverage(self) -> list[DeviceCoverage] | None:
        """The runs' coverage merged per device and segment (pseudonymized if asked)."""
        recorded = [run for run in self.runs if run.coverage is not None]
        if not recorded:
            self.unknown.append("coverage (the share of each device's connections whose server name was seen): "
                                "no run record holds it (replay with --events writes one beside the events file)")
            return None
        if len(recorded) < len(self.runs):
            self.unknown.append(f"coverage: {len(self.runs) - len(recorded)} of {len(self.runs)} run record(s) "
                                f"hold none; the coverage below is of the others only")
        # (device, segment) -> hostname, counts, devices (the unnamed rows: summed over runs, so a
        # device without an event in two runs counts twice there)
        merged: dict[tuple[str | None, str], tuple[str | None, Counter[str], int]] = {}
        for run in recorded:
            for row in run.coverage or ():
                hostname, counts, devices = merged.get((row.device, row.segment), (None, Counter(), 0))
                counts.update(row.connections)
                merged[row.device, row.segment] = (row.hostname or hostname, counts, max(devices, row.devices)
                                                   if row.device is not None else devices + row.devices)
        pseudo = self.pseudonymizer
        rows = [DeviceCoverage(pseudo.device(device) if pseudo and device else device, segment,
                               pseudo.token("host", hostname) if pseudo and hostname else hostname, dict(counts),
                               devices)
                for (device, segment), (hostname, counts, devices) in merged.items()]
        rows.sort(key=lambda row: (row.device is None, -row.total, row.device or "", row.segment))
        return rows

    def _dns_ports(self) -> tuple[int, ...]:
        return tuple(sorted({p for run in self.runs for p in run.dns_ports} or {53}))

    def _capture_row(self, name: str, recorded: list[CaptureInfo], described: dict[str, CaptureInfo],
                     default_dirs: list[Path]) -> tuple[CaptureRow, Path | None]:
        seen = self.model.captures.get(name)
        events, first, last = (seen.events, seen.first, seen.last) if seen else (0, None, None)
        record = recorded[0] if recorded else None

        def row(info: CaptureInfo | None, status: str, note: str = "") -> CaptureRow:
            return CaptureRow(name, info, record, events, first, last, status, note)

        if name.startswith("live:"):
            return row(None, "live", "live capture: no file"), None
        hashes = {c.sha256 for c in recorded if c.sha256}
        if len(hashes) > 1:
            return row(None, "ambiguous", "several different captures of this name were replayed; "
                                           "events name captures by file name only"), None
        info = described.get(name)
        if info is None:
            path = self._find(name, record, default_dirs)
            if path is None:
                return row(None, "not found", "not found" + self._where_looked(default_dirs)), None
            info = self._describe(path)
        location = Path(info.path) if info.path else None
        if info.sha256 is None:
            return row(info, "unavailable", info.error or "unreadable"), None
        if hashes and info.sha256 not in hashes:
            return row(info, "differs", "the file found differs (SHA-256) from the capture replayed"), location
        if info.error:
            return row(info, "damaged", info.error), location
        return row(info, "ok"), location

    def _find(self, name: str, record: CaptureInfo | None, default_dirs: list[Path]) -> Path | None:
        if self.options.pcap_dirs:
            return locate(name, self.options.pcap_dirs)
        if record is not None and record.path and Path(record.path).is_file() and Path(record.path).name == name:
            return Path(record.path)
        return locate(name, default_dirs)

    def _where_looked(self, default_dirs: list[Path]) -> str:
        dirs = self.options.pcap_dirs or tuple(dict.fromkeys(default_dirs))
        return f" in {', '.join(map(str, dirs))}" if dirs else ""

    def _describe(self, path: Path) -> CaptureInfo:
        bar = _progress_bar(self.options.progress, path.stat().st_size, f"sha256 {path.name}")
        try:
            return describe_capture(path, bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()

    def _write(self, report: Report) -> None:
        from detector.report.export import write_csv, write_json
        from detector.report.html import render_html

        for target, writer in ((self.options.html, render_html), (self.options.csv, write_csv),
                               (self.options.json, write_json)):
            if not target:
                continue
            try:
                with open(target, "w", encoding="utf-8", newline="") as stream:
                    writer(report, stream)
            except OSError as exc:
                raise ReportError(f"{target}: {exc.strerror or exc}") from None

    def _summary(self, report: Report, log: TextIO) -> None:
        model = report.model
        outputs = ", ".join(p for p in (self.options.html, self.options.csv, self.options.json) if p)
        blind = (f", {model.blind_spots} blind spot(s) on {len(model.with_blind_spots())} device(s)"
                 if model.blind_spots else "")
        print(f"report: {len(model.violators())} device(s) in violation, {model.violations} violation(s), "
              f"{model.exempt} exempt match(es){blind}; written to {outputs}", file=log)
        for stats in report.inputs:
            if stats.skipped:
                print(f"report: {stats.path}: {stats.skipped} line(s) skipped ({stats.examples[0]})", file=log)
        v = report.verification
        if v is not None:
            print(f"report: Wireshark (tshark {v.tshark}) confirmed {v.confirmed} of {v.total} event(s)", file=log)
            for _ts, _device, proto, name, pcap, frame, reason in v.unconfirmed[:5]:
                print(f"report: unconfirmed: {pcap} frame {frame} {proto} {name}: {reason}", file=log)


def _distinct(items: Iterable) -> list:
    return list(dict.fromkeys(item for item in items if item is not None))


def default_capture_dirs(paths: Iterable[str]) -> list[Path]:
    """The directories of the captures a replay read (``-`` has none)."""
    return list(dict.fromkeys(Path(os.path.abspath(p)).parent for p in paths if p != "-"))

