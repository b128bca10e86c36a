"""Command-line glue: the ``report`` subcommand and the ``--report``/``--verify`` of ``replay``.

Kept here rather than in ``detector/cli.py`` so the CLI module only wires subcommands; the
decisions (what to read, where captures are looked for, what the exit status means) live
with the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from detector.records import Verdict
from detector.report import ReportError
from detector.report.meta import CaptureInfo, run_info, write_sidecar
from detector.report.model import EVIDENCE_PER_DEVICE
from detector.report.pseudonym import RECOMMENDED_KEY_BYTES
from detector.sinks.events import event_record
from detector.sinks.outputs import check_outputs, default_sensor

if TYPE_CHECKING:
    from detector.match import SignatureSet
    from detector.coverage import DeviceCoverage
    from detector.policy import Policy


def add_report_command(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report", help="write an audit report (HTML, CSV, JSON) from events files",
        description="Aggregate events files into an audit report: devices in violation, timelines, evidence. "
                    "Exit status 1 when --verify leaves an event unconfirmed, 2 for bad input.")
    report.add_argument("events", nargs="+", metavar="EVENTS",
                        help="events files written by replay --events (JSON lines, gzip too; '-' reads stdin)")
    report.add_argument("-o", "--output", metavar="REPORT.html", help="the HTML report")
    report.add_argument("--csv", metavar="FILE", help="one row per device")
    report.add_argument("--json", metavar="FILE", help="the whole report as JSON")
    report.add_argument("--pseudonymize", metavar="KEY",
                        help="replace MACs, IPs and hostnames by HMAC-SHA256 tokens under KEY "
                             "('@FILE' reads it from FILE)")
    report.add_argument("--verify", action="store_true",
                        help="have Wireshark's dissectors (tshark via pyshark) confirm every evidence frame")
    report.add_argument("--pcap-dir", action="append", metavar="DIR",
                        help="where the captures are (repeatable; default: where replay read them, "
                             "else the events file's directory)")
    report.add_argument("--evidence-per-device", type=_count, default=EVIDENCE_PER_DEVICE, metavar="N",
                        help="events listed per device, earliest first (default: %(default)s)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    report.set_defaults(func=run_report)


def add_replay_arguments(replay: argparse.ArgumentParser) -> None:
    replay.add_argument("--report", metavar="REPORT.html", help="also write the audit report (HTML)")
    replay.add_argument("--verify", action="store_true",
                        help="with --report: have Wireshark confirm every evidence frame (tshark)")


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count")
    return int(text)


def _key(text: str | None) -> bytes | None:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            key = Path(text[1:]).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ReportError(f"{text[1:]}: {exc.strerror or exc}") from None
    else:
        key = text.encode()
    if not key:
        raise ReportError("the pseudonymization key is empty")
    if len(key) < RECOMMENDED_KEY_BYTES:
        print(f"tiktok-detector: warning: a pseudonymization key of {len(key)} bytes can be guessed; "
              f"use at least {RECOMMENDED_KEY_BYTES} random bytes", file=sys.stderr)
    return key


def run_report(args: argparse.Namespace) -> int:
    from detector.report.build import ReportBuilder, ReportOptions

    dirs = tuple(Path(d) for d in args.pcap_dir or ())
    for directory in dirs:
        if not directory.is_dir():
            raise ReportError(f"{directory}: not a directory")
    check_outputs((args.output, args.csv, args.json), args.events)
    builder = ReportBuilder(ReportOptions(
        html=args.output, csv=args.csv, json=args.json, key=_key(args.pseudonymize), verify=args.verify,
        pcap_dirs=dirs, evidence_per_device=args.evidence_per_device, progress=not args.no_progress,
    ))
    for path in args.events:
        builder.add_file(path)
    if not any(stats.events for stats in builder.inputs) and not builder.runs:
        # A clean replay leaves an empty events file beside its run record; with neither,
        # a report would claim a clean network on the strength of nothing.
        raise ReportError("nothing to report: no events and no run record (.meta.json) in "
                          + ", ".join(args.events))
    return builder.finish()


class ReplayReport:
    """What ``replay`` adds for reports: the run record next to ``--events FILE`` and, with
    ``--report``, the report itself, fed verdict by verdict (no second read of the events)."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.verify and not args.report:
            raise ReportError("--verify needs --report")
        self.builder = None
        if args.report:  # only then is the report's code loaded
            from detector.report.build import ReportBuilder, ReportOptions

            self.builder = ReportBuilder(ReportOptions(html=args.report, verify=args.verify,
                                                       progress=not args.no_progress))
        self.sidecar = args.events if args.events not in (None, "-") else None
        self.sensor = args.sensor or default_sensor()

    def add(self, verdict: Verdict) -> None:
        if self.builder is not None:
            self.builder.add_record(event_record(verdict))

    @property
    def wants_captures(self) -> bool:
        """Whether the replay should hash and span its captures as it reads them."""
        return self.builder is not None or self.sidecar is not None

    def finish(self, described: list[CaptureInfo], signatures: SignatureSet, policy: Policy,
               dns_ports: Iterable[int], quic_ports: Iterable[int], coverage: Iterable[DeviceCoverage] = ()) -> int:
        """Write the run record and the report from the captures the replay described as
        it read them and the devices' coverage; the exit status is 1 when --verify left an
        event unconfirmed, else 0."""
        if not self.wants_captures:
            return 0
        run = run_info(described, signatures, policy, dns_ports, quic_ports, coverage, self.sensor)
        if self.sidecar is not None:
            try:
                write_sidecar(self.sidecar, run)
            except OSError as exc:
                raise ReportError(f"{self.sidecar}.meta.json: {exc.strerror or exc}") from None
        if self.builder is None:
            return 0
        from detector.report.build import default_capture_dirs

        by_name = {capture.name: capture for capture in described}
        return self.builder.finish([run], by_name, default_capture_dirs(c.path for c in described if c.path))
