"""A second opinion: Wireshark's dissectors re-read every evidence frame.

For each capture, tshark runs once (through pyshark) with a display filter that selects
only the evidence frames (``frame.number in {35..36, 41}``) and with the reassembly
settings that define our frame attribution (tests/test_differential.py): TCP reassembly
on, out-of-order segments reassembled, TLS records reassembled, HTTP bodies not awaited,
IP fragments not reassembled (we read a first fragment with the bytes it carries).
tshark still dissects every frame (reassembly needs them) but hands over only those few.
An event is *confirmed* when Wireshark shows the same name, in the same role, in that frame:

- ``dns-query``: a question name (``dns.qry.name``) of a DNS query, or of an answer (the
  event of a question seen in the answer only);
- ``dns-answer``: an owner name, CNAME/DNAME target or SVCB/HTTPS TargetName of the answer
  section of a response (``dns.resp.name``, ``dns.cname``, ``dns.dname``, ``dns.svcb.targetname``);
- ``tls-sni`` / ``quic-sni``: ``tls.handshake.extensions_server_name`` under TLS / QUIC;
- ``http-host``: ``http.host`` without its port.

Names compare lowercased, without a trailing dot, as our events carry them.

Memory stays flat however many events there are: the evidence keys wait in a temporary
SQLite file, not in a dict. Privacy holds here too: of what Wireshark shows in a frame,
only names equal to an event's are kept (and only in that temporary file); the report
never lists what else a frame held.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from detector.report.model import Event

#: tshark preferences that make its frame attribution ours (see the module docstring).
TSHARK_PREFS = {
    # IP fragments are read as we read them: a first fragment with the bytes it carries.
    "ip.defragment": "FALSE",
    "ipv6.defragment": "FALSE",
    "tcp.desegment_tcp_streams": "TRUE",
    "tcp.reassemble_out_of_order": "TRUE",
    "tls.desegment_ssl_records": "TRUE",
    "http.desegment_body": "FALSE",
}
#: Only these protocols' trees are printed by tshark (``-J``): far less JSON to parse.
TSHARK_PROTOCOLS = "frame ip ipv6 udp tcp dns tls quic http wg isakmp openvpn pptp"
#: The layers whose trees ``wireshark_names`` reads.
TREE_LAYERS = ("ip", "ipv6", "udp", "tcp", "dns", "tls", "quic", "http", "wg", "isakmp", "openvpn", "pptp")
#: A display filter longer than this is not passed on the command line (Linux caps one
#: argument at 128 KiB); the protocol filter below is used and frames picked in Python.
MAX_FILTER_CHARS = 32 * 1024
PROTOCOL_FILTER = ("dns || tls.handshake.type == 1 || http.request || wg.type == 1 || isakmp || openvpn || quic"
                   " || pptp.control_message_type == 1")
#: Unconfirmed events the report lists; the rest are counted.
MAX_UNCONFIRMED_LISTED = 1000
#: Rows inserted per SQLite transaction.
BATCH = 10_000
#: tshark processes at a time: each dissects one capture on one core.
WORKERS = min(4, os.cpu_count() or 1)
#: Seconds tshark may take to exit once its output has ended.
EXIT_TIMEOUT = 30

NOT_SEEN = "Wireshark shows no such name in this frame"
LIVE = "live capture: no file to re-read"
NOT_FOUND = "capture file not found"
NOT_REACHED = "tshark did not show this frame (no such frame in the capture?)"

NameKey = tuple[str, str]  # (proto, name)


class VerifyError(Exception):
    """Verification cannot run at all (no tshark, no pyshark); one line."""


# ── what Wireshark shows in one frame ──────────────────────────────────────────────────


def _values(node: object, key: str) -> Iterator[str]:
    """Every value of ``key`` anywhere under a tshark JSON node, in document order."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in reversed(item.items()):
                if k == key:
                    if isinstance(v, list):
                        yield from (x for x in v if isinstance(x, str))
                    elif isinstance(v, str):
                        yield v
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _name(value: str) -> str:
    return value.strip().lower().rstrip(".")


def _host_without_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0].lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return _name(host)


def wireshark_names(trees: dict[str, list[dict]]) -> set[NameKey]:
    """``(proto, name)`` pairs Wireshark shows in one frame, from tshark's JSON trees per
    protocol (``{"dns": [tree, …], "tls": […], "quic": […], "http": […]}``)."""
    found: set[NameKey] = set()
    for dns in trees.get("dns", ()):
        response = list(_values(dns.get("dns.flags_tree", {}), "dns.flags.response"))
        if response == ["0"]:
            found |= {("dns-query", _name(n)) for n in _values(dns.get("Queries", {}), "dns.qry.name")}
        elif response == ["1"]:
            # A question read from an answer whose query was not captured is an event at the answer.
            found |= {("dns-query", _name(n)) for n in _values(dns.get("Queries", {}), "dns.qry.name")}
            answers = dns.get("Answers", {})
            for key in ("dns.resp.name", "dns.cname", "dns.dname", "dns.svcb.targetname"):
                found |= {("dns-answer", _name(n)) for n in _values(answers, key) if n not in ("<Root>", "")}
    for proto, layer in (("tls-sni", "tls"), ("quic-sni", "quic")):
        for tree in trees.get(layer, ()):
            found |= {(proto, _name(n)) for n in _values(tree, "tls.handshake.extensions_server_name")}
    for http in trees.get("http", ()):
        found |= {("http-host", _host_without_port(h)) for h in _values(http, "http.host")}
    return found | _handshakes(trees)


def _first(node: object, key: str) -> str:
    return next(_values(node, key), "")


def _number(text: str) -> int | None:
    """A field tshark prints in decimal or ``0x`` hex; None when it is neither."""
    try:
        return int(text, 0)
    except ValueError:
        return None


def _handshakes(trees: dict[str, list[dict]]) -> set[NameKey]:
    """A client's first VPN or encrypted-DNS packet as Wireshark dissects it (what
    extract/tunnels.py and the pipeline name), keyed by the server's ``address:port`` as the
    event's name is: a WireGuard handshake initiation, an ISAKMP initiator's first message
    (for IKEv2 one with the Initiator flag: not a responder's refusal), an OpenVPN hard reset with key id 0, a PPTP Start-Control-Connection-Request, a ClientHello or QUIC Initial to port 853, and
    any ClientHello (``tls``) or QUIC client Initial (``quic``): the connections an
    ``address`` entry judges by their server's address."""
    kinds = set()
    if any(_first(tree, "wg.type") == "1" for tree in trees.get("wg", ())):
        kinds.add("wireguard")
    for tree in trees.get("isakmp", ()):
        exchange = _first(tree, "isakmp.exchangetype")
        if (_first(tree, "isakmp.rspi").replace(":", "").strip("0") == ""
                and (exchange in ("2", "4") or (exchange == "34" and _first(tree, "isakmp.flag_i") == "1"))):
            kinds.add("ike")
    for tree in trees.get("openvpn", ()):
        if _number(_first(tree, "openvpn.opcode")) in (7, 10) and _number(_first(tree, "openvpn.keyid")) == 0:
            kinds.add("openvpn")
    if any(_first(tree, "pptp.control_message_type") == "1" for tree in trees.get("pptp", ())):
        kinds.add("pptp")
    ips = trees.get("ip", ()) or trees.get("ipv6", ())
    transport = trees.get("udp", ()) or trees.get("tcp", ())
    if not ips or not transport:
        return set()
    port = _first(transport[-1], "udp.dstport") or _first(transport[-1], "tcp.dstport")
    if any("1" in _values(tree, "tls.handshake.type") for tree in trees.get("tls", ())):
        kinds.add("tls")
    if any(_first(tree, "quic.long.packet_type") == "0" for tree in trees.get("quic", ())):
        kinds.add("quic")
    if port == "853":  # DNS over TLS and over QUIC: a client's first message to the port
        kinds |= {{"tls": "dot", "quic": "doq"}[kind] for kind in kinds & {"tls", "quic"}}
    if not kinds:
        return set()
    address = _first(ips[-1], "ip.dst") or _first(ips[-1], "ipv6.dst")
    endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return {(kind, endpoint) for kind in kinds}


def frame_filter(frames: Iterable[int], separator: str = ", ", max_chars: int = MAX_FILTER_CHARS) -> str | None:
    """``frame.number in {1..3, 7}`` for sorted frame numbers, runs written as ranges;
    ``None`` when it would be longer than ``max_chars``."""
    parts: list[str] = []
    length = 0
    start = end = None
    for frame in chain(frames, (None,)):
        if frame is not None and end is not None and frame == end + 1:
            end = frame
            continue
        if start is not None:
            part = f"{start}..{end}" if end != start else str(start)
            parts.append(part)
            length += len(part) + len(separator)
            if length > max_chars:
                return None
        start = end = frame
    if not parts:
        return None
    return "frame.number in {" + separator.join(parts) + "}"


# ── the evidence waiting to be checked ─────────────────────────────────────────────────


class EvidenceStore:
    """Evidence keys of every event, in a temporary SQLite file (deleted on ``close``)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tiktok-detector-verify-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "evidence.sqlite"))
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE evidence (pcap TEXT NOT NULL, frame INTEGER, proto TEXT NOT NULL,
                                   name TEXT NOT NULL, ts REAL NOT NULL, device TEXT NOT NULL);
            CREATE TABLE confirmed (pcap TEXT NOT NULL, frame INTEGER NOT NULL, proto TEXT NOT NULL,
                                    name TEXT NOT NULL, PRIMARY KEY (pcap, frame, proto, name));
            CREATE TABLE checked (pcap TEXT NOT NULL, frame INTEGER NOT NULL, PRIMARY KEY (pcap, frame));
            """
        )
        self._pending: list[tuple] = []
        self.total = 0

    def add(self, event: Event) -> None:
        if event.answer_frame is not None and event.answer_pcap is not None:
            # An inferred name: what Wireshark can confirm is the DNS answer it came from.
            self._pending.append((event.answer_pcap, event.answer_frame, "dns-answer", event.name, event.ts,
                                  event.device))
        else:
            self._pending.append((event.pcap, event.frame, event.proto, event.name, event.ts, event.device))
        self.total += 1
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            with self._db:
                self._db.executemany("INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def seal(self) -> None:
        """All events are in: index them for the look-ups of the verification."""
        self._flush()
        self._db.execute("CREATE INDEX evidence_frame ON evidence (pcap, frame)")

    def captures(self) -> dict[str, int]:
        """Evidence frames (distinct) per capture name, for captures with frame numbers."""
        rows = self._db.execute(
            "SELECT pcap, COUNT(DISTINCT frame) FROM evidence WHERE frame IS NOT NULL GROUP BY pcap ORDER BY pcap")
        return dict(rows)

    def frames(self, pcap: str) -> Iterator[int]:
        rows = self._db.execute(
            "SELECT DISTINCT frame FROM evidence WHERE pcap = ? AND frame IS NOT NULL ORDER BY frame", (pcap,))
        return (frame for (frame,) in rows)

    def expected(self, pcap: str, frame: int) -> set[NameKey]:
        rows = self._db.execute("SELECT DISTINCT proto, name FROM evidence WHERE pcap = ? AND frame = ?", (pcap, frame))
        return set(rows)

    def confirm(self, pcap: str, frame: int, keys: Iterable[NameKey]) -> None:
        """Wireshark dissected ``frame`` and showed ``keys`` (those of its events it confirms)."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO checked VALUES (?, ?)", (pcap, frame))
            self._db.executemany("INSERT OR IGNORE INTO confirmed VALUES (?, ?, ?, ?)",
                                 [(pcap, frame, proto, name) for proto, name in keys])

    def is_confirmed(self, pcap: str, frame: int | None, proto: str, name: str) -> bool:
        if frame is None:
            return False
        row = self._db.execute("SELECT 1 FROM confirmed WHERE pcap = ? AND frame = ? AND proto = ? AND name = ?",
                               (pcap, frame, proto, name)).fetchone()
        return row is not None

    def confirmed_count(self) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM evidence e JOIN confirmed c ON e.pcap = c.pcap AND e.frame = c.frame "
            "AND e.proto = c.proto AND e.name = c.name").fetchone()
        return count

    def unconfirmed(self, limit: int) -> list[tuple[float, str, str, str, str, int | None, bool]]:
        """``(ts, device, proto, name, pcap, frame, checked)`` of unconfirmed events, earliest
        first; ``checked``: Wireshark did dissect the frame (and did not show the name)."""
        rows = self._db.execute(
            "SELECT e.ts, e.device, e.proto, e.name, e.pcap, e.frame, k.pcap IS NOT NULL FROM evidence e "
            "LEFT JOIN confirmed c ON e.pcap = c.pcap AND e.frame = c.frame AND e.proto = c.proto "
            "AND e.name = c.name LEFT JOIN checked k ON e.pcap = k.pcap AND e.frame = k.frame "
            "WHERE c.pcap IS NULL ORDER BY e.ts, e.rowid LIMIT ?", (limit,))
        return [(*row[:6], bool(row[6])) for row in rows]

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


# ── running tshark ─────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class CaptureCheck:
    """How one capture's evidence was checked."""

    name: str
    frames: int  # distinct evidence frames
    path: str | None = None
    checked: int = 0  # evidence frames tshark handed over
    error: str | None = None  # why not all could be checked, or what tshark complained of


@dataclass(slots=True)
class Verification:
    """The outcome: counts, per-capture notes and the first unconfirmed events."""

    tshark: str
    pyshark: str
    total: int = 0
    confirmed: int = 0
    captures: list[CaptureCheck] = field(default_factory=list)
    unconfirmed: list[tuple[float, str, str, str, str, int | None, str]] = field(default_factory=list)
    _store: EvidenceStore | None = None

    @property
    def unconfirmed_count(self) -> int:
        return self.total - self.confirmed

    def is_confirmed(self, pcap: str, frame: int | None, proto: str, name: str) -> bool:
        return self._store is not None and self._store.is_confirmed(pcap, frame, proto, name)


@functools.cache
def tshark_versions() -> tuple[str, str]:
    """``(tshark version, pyshark version)``; raises ``VerifyError`` when either is missing.
    Cached: asking costs a run of ``tshark -v``."""
    try:
        from importlib.metadata import version

        import pyshark  # noqa: F401 - imported here: it is slow to import and only --verify needs it
        from pyshark.tshark.tshark import TSharkNotFoundException, get_tshark_version
    except ImportError:
        raise VerifyError("--verify needs pyshark (pip install pyshark)") from None
    try:
        return str(get_tshark_version()), version("pyshark")
    except (TSharkNotFoundException, OSError) as exc:
        raise VerifyError(f"--verify needs tshark (Debian package tshark): {exc}") from None


def _trees(packet: object, layer_name: str) -> list[dict]:
    """tshark's JSON tree of each ``layer_name`` layer of a pyshark JSON packet.

    pyshark's JSON layers keep the tree tshark printed in ``_all_fields`` and a repeated
    layer (two DNS messages in one TCP segment) in ``duplicate_layers``; its public field
    access flattens the tree, and the tree is what tells an answer from an authority record.
    """
    trees = []
    for layer in packet.get_multiple_layers(layer_name):
        for one in (layer, *getattr(layer, "duplicate_layers", ())):
            tree = getattr(one, "_all_fields", None)
            if isinstance(tree, dict):
                trees.append(tree)
    return trees


def check_captures(jobs: list[tuple[str, Path]], store: EvidenceStore, dns_ports: Iterable[int], tshark_version: str,
                   on_frame: Callable[[], None] | None = None, workers: int = WORKERS) -> dict[str, tuple[int, str | None]]:
    """Run tshark once over each ``(capture name, path)``, ``workers`` at a time, and record
    which evidence Wireshark confirms.

    Returns per capture how many evidence frames tshark handed over, and what tshark
    complained of, if anything (it exits with an error for a file cut short, after
    dissecting what the file holds). The tshark processes run in parallel; their output is
    parsed and checked in this thread, as pyshark's coroutines deliver it.
    """
    separator = ", " if int(tshark_version.split(".", 1)[0]) >= 4 else " "  # 4.0 made sets comma-separated
    decode_as = {"udp.port==853": "quic"}  # DNS over QUIC (tshark's default there is DTLS)
    for port in sorted(set(dns_ports) - {53}):
        decode_as[f"udp.port=={port}"] = "dns"
        decode_as[f"tcp.port=={port}"] = "dns"
    capture_class = _file_capture(tshark_version)
    results: dict[str, tuple[int, str | None]] = {}
    # Built before the event loop runs: pyshark's constructor installs the loop's child watcher.
    captures = []
    for name, path in jobs:
        try:
            captures.append((name, capture_class(
                str(path), display_filter=frame_filter(store.frames(name), separator) or PROTOCOL_FILTER,
                keep_packets=False, use_json=True, override_prefs=TSHARK_PREFS, decode_as=decode_as or None,
                custom_parameters=["-J", TSHARK_PROTOCOLS])))
        except OSError as exc:  # the file went away since it was hashed
            results[name] = (0, f"cannot read the capture: {exc.strerror or exc}")

    async def check(semaphore: asyncio.Semaphore, name: str, capture) -> None:  # noqa: ANN001
        checked = 0

        def on_packet(packet) -> None:  # noqa: ANN001 - a pyshark packet
            nonlocal checked
            frame = int(packet.number)
            expected = store.expected(name, frame)
            if expected:
                seen = wireshark_names({p: _trees(packet, p) for p in TREE_LAYERS})
                store.confirm(name, frame, expected & seen)
                checked += 1
                if on_frame is not None:
                    on_frame()

        error = None
        async with semaphore:
            # pyshark raises its own exception types, asyncio's and OSError from tshark's
            # pipe; any of them means this capture was not (fully) checked, which the report states.
            try:
                await capture.run(on_packet)
            except Exception as exc:  # noqa: BLE001
                error = _tshark_message(exc)
        results[name] = (checked, error)

    async def check_all() -> None:
        semaphore = asyncio.Semaphore(max(1, workers))
        await asyncio.gather(*(check(semaphore, name, capture) for name, capture in captures))

    if captures:
        captures[0][1].eventloop.run_until_complete(check_all())
    return results


def _tshark_message(error: Exception) -> str:
    """tshark's own last error line when pyshark relays a readable one, else its exit status,
    else the exception's first line."""
    text = str(error)
    last = re.search(r"^Last error line: (.*)$", text, re.M)
    if last and re.search(r"[a-z]{3}", last.group(1), re.I):
        return "tshark: " + last.group(1).strip().removeprefix("tshark: ")
    status = re.search(r"retcode: (-?\d+)", text)
    if status:
        return f"tshark exited with status {status.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"tshark failed: {lines[0] if lines else type(error).__name__}"


def _file_capture(tshark_version: str) -> type:
    """pyshark's ``FileCapture`` with what a batch of captures needs:

    - the tshark version given once (by itself pyshark runs ``tshark -v`` per capture);
    - ``run``: every packet to a callback, then tshark's exit status checked, so a tshark
      that failed is reported with its own error line (pyshark's coroutine kills tshark
      at the end instead of asking how it exited);
    - no second close when garbage-collected (``run`` always closes).
    """
    import pyshark
    from packaging.version import Version

    known = Version(tshark_version)

    class FileCapture(pyshark.FileCapture):
        process: asyncio.subprocess.Process | None = None

        def _get_tshark_version(self) -> Version:
            return known

        def _created_new_process(self, parameters, process, process_name="TShark") -> None:  # noqa: ANN001
            super()._created_new_process(parameters, process, process_name)
            self.process = process

        async def run(self, on_packet: Callable[[object], None]) -> None:
            try:
                await self.packets_from_tshark(on_packet, close_tshark=False)
                if self.process is not None:
                    await asyncio.wait_for(self.process.wait(), EXIT_TIMEOUT)
            finally:
                await self.close_async()  # raises, with tshark's last error line, if it failed

        def __del__(self) -> None:
            pass

    return FileCapture


def verify(store: EvidenceStore, locations: dict[str, Path | None], refused: dict[str, str],
           dns_ports: Iterable[int], progress: Callable[[int], None] | None = None,
           on_total: Callable[[int], None] | None = None) -> Verification:
    """Check every capture's evidence; ``locations`` maps capture names to files (``None``:
    not found), ``refused`` names captures not to check and why (a file that differs from
    the one replayed). The store must be sealed."""
    tshark, pyshark_version = tshark_versions()
    result = Verification(tshark=tshark, pyshark=pyshark_version, total=store.total, _store=store)
    per_capture = store.captures()
    if on_total is not None:
        on_total(sum(per_capture.values()))
    checks = {name: CaptureCheck(name, frames, str(locations[name]) if locations.get(name) else None)
              for name, frames in per_capture.items()}
    jobs = []
    for name, check in checks.items():
        if name in refused or check.path is None:
            check.error = refused.get(name, NOT_FOUND)
        else:
            jobs.append((name, Path(check.path)))
    results = check_captures(jobs, store, dns_ports, tshark, (lambda: progress(1)) if progress else None)
    reasons: dict[str, str] = {}
    for name, check in checks.items():
        check.checked, error = results.get(name, (0, check.error))
        check.error = error
        if error:
            reasons[name] = error
        if progress is not None and check.checked < check.frames:
            progress(check.frames - check.checked)
        result.captures.append(check)
    result.confirmed = store.confirmed_count()
    for ts, device, proto, name, pcap, frame, checked in store.unconfirmed(MAX_UNCONFIRMED_LISTED):
        if frame is None:
            reason = LIVE
        elif checked:
            reason = NOT_SEEN
        else:
            reason = reasons.get(pcap, NOT_REACHED)
        result.unconfirmed.append((ts, device, proto, name, pcap, frame, reason))
    return result
