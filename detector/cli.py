"""The command line: ``tiktok-detector replay | names | report | live | signatures ACTION``.

Bad input (a missing or damaged capture, a broken policy or signature file) is one line on
stderr and exit status 2, never a traceback; detections are not errors (exit 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from detector import __version__
from detector.coverage import CoverageTable
from detector.decode import UDP_TUNNEL_NAMES, UDP_TUNNEL_PORTS, udp_tunnels
from detector.errors import UserError
from detector.inventory import load_inventory
from detector.leases import load_leases
from detector.match import SignatureSet, check_signatures, load_signatures
from detector.pipeline import Extractor, Settings
from detector.policy import Policy, default_policy, load_policy
from detector.replay import Job, read_captures, replay_parallel
from detector.report.command import ReplayReport, add_replay_arguments, add_report_command
from detector.session import Session
from detector.sigformats.command import add_interop_commands
from detector.sinks.alertmanager import alertmanager_url
from detector.sinks.events import JsonLines
from detector.sinks.outputs import EVENT_FORMATS, check_outputs, default_sensor, sensor_name
from detector.sinks.syslog import FACILITIES, SyslogSender, syslog_target

if TYPE_CHECKING:
    from detector.report.meta import CaptureInfo
    from detector.workers import WorkerCounts


def shipped(name: str) -> Path:
    """A data directory the project ships (``signatures``, ``examples``): inside the package
    when installed from a wheel (setup.py maps it there), else the checkout's own, which an
    editable install leaves where it is."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name


DEFAULT_SIGNATURES = shipped("signatures")
EXIT_INPUT_ERROR = 2


class VersionAction(argparse.Action):
    """``--version``: the release, the Python that runs it and where its shipped data is,
    one fact a line (argparse's own version action would rewrap them)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version, the Python and the shipped signatures' path, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"tiktok-detector {__version__}\n"
              f"python {platform.python_version()} ({sys.executable})\n"
              f"signatures {DEFAULT_SIGNATURES}\n"
              f"examples {shipped('examples')}")
        parser.exit()


class UsageError(UserError):
    """Bad input named on the command line; printed as one line."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"tiktok-detector: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except BrokenPipeError:
        # The reader of our output went away (| head); that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("tiktok-detector: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiktok-detector",
        description="Passive sensor that finds TikTok use in network traffic.",
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    replay = sub.add_parser("replay", help="read captures and report devices that reached TikTok")
    _capture_args(replay)
    replay.add_argument("--policy", metavar="FILE", help="policy TOML (segments, exemptions, dedup window)")
    replay.add_argument("--signatures", metavar="PATH", default=str(DEFAULT_SIGNATURES),
                        help="signature file or directory (default: %(default)s)")
    replay.add_argument("--events", metavar="FILE", help="write one JSON line per policy-relevant observation ('-' = stdout)")
    replay.add_argument("--alerts", metavar="FILE", help="write one JSON line per deduplicated alert ('-' = stdout)")
    replay.add_argument("--metrics-addr", type=listen_address, metavar="HOST:PORT",
                        help="serve Prometheus metrics on /metrics while the replay runs")
    replay.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                        help="with --metrics-addr: keep serving this long after the replay ends")
    replay.add_argument("--web-config", metavar="FILE",
                        help="with --metrics-addr: TLS and basic auth, in Prometheus's web-config format")
    replay.add_argument("--alertmanager", type=alertmanager_url, action="append", metavar="URL",
                        help="also push each alert to this Alertmanager (API v2) when its window opens "
                             "(repeat for every peer of a cluster)")
    _siem_args(replay)
    replay.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes sharing the work by flow (files only, not stdin; default 1)")
    _inventory_arg(replay)
    replay.add_argument("--leases", action="append", default=[], metavar="FILE",
                        help="a DHCP server's lease file (dnsmasq, ISC dhcpd, Kea CSV) or a RADIUS accounting "
                             "detail file, as a source of address bindings over time (repeatable)")
    add_replay_arguments(replay)
    replay.set_defaults(func=_replay)

    names = sub.add_parser("names", help="print every name extracted (all names, for debugging and cross-checks)")
    _capture_args(names)
    names.set_defaults(func=_names)

    add_report_command(sub)

    live = sub.add_parser("live", help="capture on network interfaces (a tap or SPAN port) until stopped")
    live.add_argument("-i", "--interface", dest="interfaces", action="append", required=True, metavar="IFACE",
                      help="interface to capture on, promiscuous (repeatable)")
    live.add_argument("--workers", type=int, default=1, metavar="N",
                      help="capture processes in one PACKET_FANOUT group, flows hashed to one each (default 1)")
    live.add_argument("--policy", metavar="FILE", help="policy TOML (segments, exemptions, dedup window)")
    live.add_argument("--signatures", metavar="PATH", default=str(DEFAULT_SIGNATURES))
    live.add_argument("--events", metavar="FILE", help="events as JSON lines ('-' = stdout)")
    live.add_argument("--alerts", metavar="FILE", help="deduplicated alerts as JSON lines ('-' = stdout)")
    live.add_argument("--dns-port", type=_port, action="append", metavar="PORT")
    live.add_argument("--quic-port", type=_port, action="append", metavar="PORT")
    live.add_argument("--tunnel-port", type=_tunnel_port, action="append", metavar="TUNNEL=PORT", help=TUNNEL_HELP)
    live.add_argument("--snaplen", type=int, default=65535, metavar="BYTES")
    live.add_argument("--buffer-mb", type=int, default=32, metavar="MB", help="kernel capture buffer per worker")
    live.add_argument("--user", metavar="USER", help="drop root for this user once the sockets are open")
    live.add_argument("--metrics-addr", type=listen_address, metavar="HOST:PORT",
                      help="serve Prometheus metrics on /metrics (counters summed over the workers)")
    live.add_argument("--web-config", metavar="FILE",
                      help="with --metrics-addr: TLS and basic auth, in Prometheus's web-config format")
    live.add_argument("--alertmanager", type=alertmanager_url, action="append", metavar="URL",
                      help="also push each alert to this Alertmanager (API v2) when its window opens "
                           "(repeat for every peer of a cluster)")
    _siem_args(live)
    _inventory_arg(live)
    live.set_defaults(func=_live)

    sigs = sub.add_parser("signatures", help="validate or query the signature set")
    sigs_sub = sigs.add_subparsers(required=True, metavar="ACTION")
    check = sigs_sub.add_parser("check", help="validate a signature file with line-precise errors")
    check.add_argument("path", metavar="FILE")
    check.set_defaults(func=_signatures_check)
    match = sigs_sub.add_parser("match", help="explain which signature matches a name and why")
    match.add_argument("name", metavar="NAME")
    match.add_argument("--signatures", metavar="PATH", default=str(DEFAULT_SIGNATURES))
    match.set_defaults(func=_signatures_match)
    add_interop_commands(sigs_sub, str(DEFAULT_SIGNATURES))
    return parser


def _capture_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pcaps", nargs="+", metavar="PCAP", help="pcap/pcapng files, gzip too; '-' reads stdin")
    parser.add_argument("--dns-port", type=_port, action="append", metavar="PORT",
                        help="DNS port (repeatable; default 53)")
    parser.add_argument("--quic-port", type=_port, action="append", metavar="PORT",
                        help="UDP port of QUIC servers (repeatable; default 443)")
    parser.add_argument("--tunnel-port", type=_tunnel_port, action="append", metavar="TUNNEL=PORT",
                        help=TUNNEL_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    parser.add_argument("--no-skim", action="store_true",
                        help="decode every frame in Python instead of dropping bulk in C first (slow; "
                             "the same results, for cross-checking the skim)")


def _siem_args(parser: argparse.ArgumentParser) -> None:
    """The sensor's name, the record format and syslog: what a SIEM and a fleet need."""
    parser.add_argument("--sensor", type=_sensor, default=None, metavar="NAME",
                        help="this sensor's name in every event, alert and report (default: the host name)")
    parser.add_argument("--events-format", choices=EVENT_FORMATS, default="native",
                        help="field names of events and alerts: the native schema or Elastic Common Schema "
                             "(default: %(default)s)")
    parser.add_argument("--syslog", type=syslog_target, metavar="URL",
                        help="also send events and alerts as RFC 5424 syslog: udp://HOST[:514], tcp://HOST[:601] "
                             "(octet counting) or tls://HOST[:6514]")
    parser.add_argument("--syslog-facility", choices=FACILITIES, default="local0",
                        help="syslog facility (default: %(default)s)")
    parser.add_argument("--syslog-ca", metavar="FILE", help="with tls://: CA certificates that sign the collector's")
    parser.add_argument("--syslog-cert", metavar="FILE", help="with tls://: a client certificate (with --syslog-key)")
    parser.add_argument("--syslog-key", metavar="FILE", help="with tls://: the client certificate's key")


def _sensor(text: str) -> str:
    try:
        return sensor_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _siem_options(args: argparse.Namespace) -> dict:
    """The Session's sensor, format and syslog sender from the options of ``_siem_args``."""
    tls_options = (args.syslog_ca, args.syslog_cert, args.syslog_key)
    if any(tls_options) and (args.syslog is None or args.syslog.transport != "tls"):
        raise UsageError("--syslog-ca, --syslog-cert and --syslog-key need --syslog tls://HOST")
    if bool(args.syslog_cert) != bool(args.syslog_key):
        raise UsageError("--syslog-cert and --syslog-key go together")
    sensor = args.sensor or default_sensor()
    syslog = None
    if args.syslog is not None:
        syslog = SyslogSender(args.syslog, sensor=sensor, format_name=args.events_format,
                              facility=FACILITIES[args.syslog_facility], ca_file=args.syslog_ca,
                              cert_file=args.syslog_cert, key_file=args.syslog_key)
    return {"sensor": sensor, "events_format": args.events_format, "syslog": syslog}
def _inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", metavar="FILE",
                        help="device inventory, CSV or JSON (class, owner, department by MAC, client id, "
                             "DUID or hostname); reloaded with the policy on SIGHUP")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


TUNNEL_HELP = ("also open this UDP tunnel on this port (repeatable), e.g. vxlan=8472; tunnels and their default "
               "ports: " + ", ".join(f"{name} {UDP_TUNNEL_PORTS[code]}" for name, code in UDP_TUNNEL_NAMES.items()))


def _tunnel_port(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or name not in UDP_TUNNEL_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r}: write TUNNEL=PORT, TUNNEL one of {', '.join(UDP_TUNNEL_NAMES)}")
    return name, _port(port)


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (every IPv4 address) for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{text!r}: write an IPv6 address in brackets, [::1]:9100")
    return host or "0.0.0.0", int(port)


def _settings(args: argparse.Namespace) -> Settings:
    defaults = Settings()
    tunnel_ports = tuple(args.tunnel_port or ())
    try:
        udp_tunnels(tunnel_ports)
    except ValueError as exc:
        raise UsageError(f"--tunnel-port: {exc}") from None
    return Settings(
        dns_ports=frozenset(args.dns_port or defaults.dns_ports),
        quic_ports=frozenset(args.quic_port or defaults.quic_ports),
        skim=not getattr(args, "no_skim", False),
        tunnel_ports=tunnel_ports,
    )


def _replay(args: argparse.Namespace) -> int:
    if (args.linger or args.web_config) and args.metrics_addr is None:
        raise UsageError("--linger and --web-config need --metrics-addr")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1 and "-" in args.pcaps:
        raise UsageError("--workers needs capture files: standard input can be read only once")
    if args.workers > 1 and args.no_skim:
        raise UsageError("--no-skim decodes every frame in one process: leave out --workers")
    run_record = f"{args.events}.meta.json" if args.events not in (None, "-") else None
    check_outputs((args.events, args.alerts, args.report, run_record),
                  (*args.pcaps, args.policy, args.signatures, args.inventory, *args.leases))
    signatures = load_signatures(args.signatures)
    policy: Policy = load_policy(args.policy) if args.policy else default_policy()
    if args.inventory:
        policy = dataclasses.replace(policy, inventory=load_inventory(args.inventory))
    leases = [binding for path in args.leases for binding in load_leases(path)]
    report = ReplayReport(args)
    session = Session(signatures, policy, args.events, args.alerts, args.alertmanager, on_verdict=report.add,
                      **_siem_options(args))
    session.devices.schedule(leases)
    settings = _settings(args)
    described: list[CaptureInfo] | None = [] if report.wants_captures else None
    counters: WorkerCounts | Extractor
    if args.workers > 1:
        from detector.workers import WorkerCounts

        counters = WorkerCounts(session.stats)
        job = Job(args.pcaps, settings, signatures, described is not None, not args.no_progress)
        table = CoverageTable(session.stats)
        errors = replay_parallel(job, args.workers, session.detector.observe, session.devices.learn, session.tick,
                                 counters, described, table,
                                 started=lambda: session.serve(args.metrics_addr, args.web_config, counters))
    else:
        counters = Extractor(settings, session.detector.observe, session.devices.learn, session.stats,
                             wanted=signatures)
        session.serve(args.metrics_addr, args.web_config, counters)
        errors = read_captures(args.pcaps, counters, session.tick, described, progress=not args.no_progress)
        table = counters.coverage
    coverage = session.coverage(table)
    session.close(counters.snapshot(), args.pcaps, errors, coverage)
    status = report.finish(described or [], signatures, policy, settings.dns_ports, settings.quic_ports, coverage)
    session.finish(args.linger)
    return EXIT_INPUT_ERROR if errors else status


def _live(args: argparse.Namespace) -> int:
    from detector import live

    if args.workers < 1 or args.snaplen < 64 or args.buffer_mb < 1:
        raise UsageError("--workers must be at least 1, --snaplen at least 64, --buffer-mb at least 1")
    reason = live.interface_error(tuple(args.interfaces)) or live.user_error(args.user)
    if reason:
        raise UsageError(reason)
    options = live.LiveOptions(tuple(args.interfaces), args.workers, _settings(args), args.snaplen,
                               args.buffer_mb << 20, args.user, args.signatures, args.policy, args.inventory)
    if args.web_config and args.metrics_addr is None:
        raise UsageError("--web-config needs --metrics-addr")
    check_outputs((args.events, args.alerts), (args.policy, args.signatures, args.inventory))
    signatures, policy = live.load_config(options)
    session = Session(signatures, policy, args.events, args.alerts, args.alertmanager, live=True,
                      **_siem_options(args))
    from detector.workers import WorkerCounts

    counters = WorkerCounts(session.stats)
    run = live.LiveRun(options, signatures, policy, session.detector.judge, session.devices.learn, session.reload,
                       live.log_line, counters)
    session.serve(args.metrics_addr, args.web_config, counters)
    live.install_signal_handlers(run)
    live.drop_privileges(args.user)
    status = run.run(session.tick, ready=lambda: live.log_line(
        f"capturing on {', '.join(args.interfaces)} with {args.workers} worker(s)"))
    session.close(counters.snapshot(), [f"live:{i}" for i in args.interfaces], 0, session.coverage(run.coverage))
    session.finish(0)
    return status


def _names(args: argparse.Namespace) -> int:
    out = JsonLines(sys.stdout, line_buffered=False)
    extractor = Extractor(_settings(args), out.write_name, lambda binding: None)
    errors = read_captures(args.pcaps, extractor, lambda now: None, progress=not args.no_progress)
    sys.stdout.flush()
    return EXIT_INPUT_ERROR if errors else 0


def _signatures_check(args: argparse.Namespace) -> int:
    problems = check_signatures(args.path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_INPUT_ERROR
    loaded = load_signatures(args.path)
    print(f"{args.path}: {len(loaded.entries)} entries, version {loaded.version}, sha256 {loaded.sha256[:16]}")
    return 0


def _signatures_match(args: argparse.Namespace) -> int:
    loaded: SignatureSet = load_signatures(args.signatures)
    name = args.name.strip().lower().rstrip(".")
    print(loaded.explain(name))
    return 0 if loaded.match(name) or loaded.match_address(name) else 1
