"""Live capture end to end: `tiktok-detector live` on one end of a veth link, tcpreplay on the other.

Each test makes its own pair of network namespaces (``netns.VethPair``: 198.18.100.0/24 and
a unique-local IPv6 prefix, no route but the link) and runs the sensor in the server
namespace while tcpreplay sends captures from the client namespace; nothing leaves the
pair, and the pair (with every process started in it) is removed when the test ends,
failed or not. The captures' own addresses (198.18.10.0/24, 198.19.0.0/16 ...) never meet
an IP stack that would answer them: they are addressed to other MACs, so the server end
takes them for other hosts' frames, which is what a tap or SPAN port delivers.

Every stop goes through ``VethPair.stop``: SIGTERM to the sensor's whole process group
(what a shell's kill of the job or systemd's default KillMode sends), so each test also
shows that the workers drain their sockets and the writer flushes before the exit.

What each test proves is in its docstring; the limits (timeouts) are at the top.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import dpkt
import pytest

import netns
from netns import VethPair

from detector.sources.pcapfile import CaptureError, CaptureFile

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
POLICY = ROOT / "examples" / "policy.toml"
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
#: Bounds: the sensor's start (its "capturing on" line), its stop after SIGTERM (drain,
#: reorder delay, writer), a log line after a signal, one tcpreplay run, one replay run.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
LOG_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0
REPLAY_TIMEOUT = 60.0
POLL = 0.02
#: Fields of an event that differ between a file and a live capture by nature.
CAPTURE_FIELDS = ("ts", "pcap", "frame")
#: An untagged client (segment "default" of examples/policy.toml, where the api, web and cdn
#: names used here are violations, so each is written) and a resolver, as in the fixtures.
CLIENT_IP, CLIENT_MAC = "198.18.10.21", "02:00:c6:12:0a:15"
RESOLVER_IP, ROUTER_MAC = "198.19.0.53", "02:00:00:00:00:01"
#: The rate of the reload test's DNS flows (two packets each).
FLOWS_PER_SECOND = 1000
#: The summary line that reports the capture's counters.
CAPTURE_LINE = re.compile(r"capture: (\d+) packets passed the kernel filter, (\d+) dropped by the kernel, "
                          r"(\d+) by the interface")

pytestmark = pytest.mark.network


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network() -> None:
    """Skip (with the reason) where namespaces cannot be made or tcpreplay is missing."""
    reason = netns.unavailable("tcpreplay")
    if reason:
        pytest.skip(reason)


@pytest.fixture
def pair(network) -> Iterator[VethPair]:
    with VethPair() as made:
        yield made


# -- the sensor, the sender and the reference ---------------------------------------------


class Live:
    """`tiktok-detector live` on the server end of ``pair``; started when constructed.

    ``prefix`` runs the sensor under another program (setpriv); ``stdout_events`` has it
    write events to stdout, for a user who cannot open a file in the test's tmp_path;
    ``command`` and ``cwd`` run another copy than the checkout's (an installed one, a clone).
    """

    def __init__(self, pair: VethPair, tmp_path: Path, *args: str, prefix: Iterable[str] = (),
                 stdout_events: bool = False, command: Iterable[str] = (sys.executable, "-m", "detector"),
                 cwd: Path = ROOT) -> None:
        self.pair = pair
        serial = len(list(tmp_path.glob("live-*.err")))
        self.err = tmp_path / f"live-{serial}.err"
        out = tmp_path / f"live-{serial}.out"
        self.events_path = out if stdout_events else tmp_path / f"live-{serial}.jsonl"
        events = "-" if stdout_events else str(self.events_path)
        argv = [*prefix, *command, "live", "-i", pair.server.ifname, "--events", events, *args]
        with open(self.err, "wb") as err_file, open(out, "wb") as out_file:
            self.proc = pair.spawn(pair.server, argv, stderr=err_file, stdout=out_file, cwd=cwd)
        self.wait_log("capturing on", timeout=START_TIMEOUT)

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = LOG_TIMEOUT) -> None:
        """Return once ``text`` is in the log; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                pytest.fail(f"live exited ({self.proc.returncode}) before logging {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"live did not log {text!r} within {timeout} s:\n{self.log()}")
            time.sleep(POLL)

    def wait_names(self, wanted: set[str], timeout: float = LOG_TIMEOUT) -> None:
        """Return once events for every name in ``wanted`` are written; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.events_path.read_text()
            written = {json.loads(line)["name"] for line in text[: text.rfind("\n") + 1].splitlines()}
            if wanted <= written:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{len(wanted - written)} of {len(wanted)} names not written within {timeout} s")
            time.sleep(POLL)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def children(self) -> list[int]:
        """The sensor's child processes (its capture workers)."""
        found = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:  # gone meanwhile
                continue
            if re.search(rf"^PPid:\s+{self.proc.pid}$", text, re.M):
                found.append(int(status.parent.name))
        return found

    def stop(self) -> str:
        """SIGTERM to the process group; the exit must be clean. Returns the log."""
        status = self.pair.stop(self.proc, timeout=STOP_TIMEOUT)
        log = self.log()
        assert status == 0, log
        return log

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]


def send(pair: VethPair, files: Iterable[Path], *options: str, background: bool = False):
    """tcpreplay ``files`` (in order) into the client end; returns how many packets went out
    (or the running process when ``background``)."""
    argv = ["tcpreplay", "-q", "-i", pair.client.ifname, *options, *map(str, files)]
    if background:
        return pair.spawn(pair.client, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = pair.run(pair.client, argv, timeout=SEND_TIMEOUT, text=True)
    return sent_count(done.stdout)


def sent_count(report: str) -> int:
    assert re.search(r"Failed packets:\s+0\b", report), report
    return int(re.search(r"Successful packets:\s+(\d+)", report).group(1))


def replay_events(tmp_path: Path, files: Iterable[Path], *args: str) -> list[dict]:
    """What `tiktok-detector replay` writes for ``files`` read in one run, in order."""
    out = tmp_path / "replay.jsonl"
    subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(out), *args,
                    *map(str, files)], cwd=ROOT, capture_output=True, timeout=REPLAY_TIMEOUT, check=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def coverage_lines(summary: str) -> list[str]:
    return [line for line in summary.splitlines() if line.startswith("coverage of segment")]


def comparable(events: list[dict]) -> list[dict]:
    """Events without where the capture put them (an inferred name's evidence too)."""
    out = []
    for event in events:
        event = {k: v for k, v in event.items() if k not in CAPTURE_FIELDS}
        if "evidence" in event:
            event["evidence"] = {k: v for k, v in event["evidence"].items() if k not in CAPTURE_FIELDS}
        out.append(event)
    return out


def capture_counts(log: str) -> tuple[int, int, int]:
    """(passed the kernel filter, dropped by the kernel, dropped by the interface)."""
    found = CAPTURE_LINE.search(log)
    assert found, log
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def packets_processed(log: str) -> int:
    found = re.search(r"source\(s\), (\d+) packets", log)
    assert found, log
    return int(found.group(1))


def ethernet_fixtures() -> list[Path]:
    """Every fixture capture that is Ethernet throughout and read without a fault: what
    tcpreplay can put on a veth as it is (gzip it cannot read; other link types are no
    Ethernet frames; a damaged file's cut record is no wire frame)."""
    found = []
    for path in sorted([*PCAPS.glob("*.pcap"), *PCAPS.glob("*.pcapng")], key=lambda p: p.name):
        try:
            capture = CaptureFile(str(path))
        except CaptureError:
            continue
        try:
            for _ in capture:
                pass
        except CaptureError:
            continue
        finally:
            capture.close()
        if capture.linktypes == {dpkt.pcap.DLT_EN10MB} and not capture.skipped:
            found.append(path)
    return found


# -- crafted captures --------------------------------------------------------------------


def write_pcap(path: Path, frames: Iterable[bytes], step: float = 1e-4) -> int:
    """A pcap (Ethernet, microseconds) of ``frames``; returns how many were written."""
    count = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, dpkt.pcap.DLT_EN10MB))
        for count, frame in enumerate(frames, 1):
            usec = count * int(step * 1e6)
            out.write(struct.pack("<IIII", 1_772_442_000 + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)))
            out.write(frame)
    return count


def dns_query(name: str, sport: int) -> bytes:
    """An Ethernet frame: CLIENT_IP asks RESOLVER_IP for the A record of ``name``."""
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    dns = struct.pack("!6H", sport, 0x0100, 1, 0, 0, 0) + question + struct.pack("!2H", 1, 1)
    udp = struct.pack("!4H", sport, 53, 8 + len(dns), 0) + dns  # checksum 0: none (IPv4)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         socket.inet_aton(CLIENT_IP), socket.inet_aton(RESOLVER_IP))
    header = header[:10] + struct.pack("!H", dpkt.in_cksum(header)) + header[12:]
    return _mac(ROUTER_MAC) + _mac(CLIENT_MAC) + b"\x08\x00" + header + udp


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def flood(count: int) -> Iterator[bytes]:
    """``count`` DNS queries for distinct TikTok names (q000000.tiktokv.com ...), each a
    name the sensor writes as an event: built from one frame by changing only the digits
    of the name and the source port (the IPv4 header, and so its checksum, stay the same)."""
    template = dns_query("q000000.tiktokv.com", 1024)
    digits = template.index(b"q000000") + 1
    for i in range(count):
        yield (template[:34] + struct.pack("!H", 1024 + i % 64000) + template[36:digits]
               + b"%06d" % i + template[digits + 6:])


def split_hello_flows(fixture: Path, first_host: int, flows: int) -> list[list[bytes]]:
    """``flows`` copies of the one TCP connection in ``fixture``, each from its own client
    address (198.18.10.first_host ...) and port: the frames of each copy, in order."""
    with open(fixture, "rb") as stream:
        records = [bytes(buf) for _, buf in dpkt.pcap.Reader(stream)]
    copies = []
    for k in range(flows):
        client = socket.inet_aton(f"198.18.10.{first_host + k}")
        port = 40000 + first_host + k
        frames = []
        for record in records:
            eth = dpkt.ethernet.Ethernet(record)
            ip, tcp = eth.data, eth.data.data
            if tcp.dport in (443, 8443):
                ip.src, tcp.sport = client, port
            else:
                ip.dst, tcp.dport = client, port
            ip.sum = tcp.sum = 0  # dpkt computes both again
            frames.append(bytes(eth))
        copies.append(frames)
    return copies


def signature_file(path: Path, *zones: tuple[str, str], broken: bool = False) -> None:
    """A small signature file of suffix entries (zone, category), replaced atomically as an
    operator's deployment tool would (rename), so a reload never reads half a file."""
    lines = ['version = "test-%d"' % len(zones), 'description = "tests/test_live.py"', "",
             "[sources]", 'test = "tests/test_live.py"', ""]
    for zone, category in zones:
        lines += ["[[entry]]", f'pattern = "{zone}"', 'match = "suffix"', f'category = "{category}"',
                  'source = ["test"]', ""]
    if broken:
        lines += ["[[entry]]", 'pattern = "Not A Domain!"', 'match = "sometimes"', ""]
    staging = path.with_suffix(".new")
    staging.write_text("\n".join(lines))
    staging.replace(path)


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_live_writes_the_events_replay_writes(pair, tmp_path, workers):
    """Every Ethernet fixture, sent in one tcpreplay run through the veth, gives exactly
    the events `replay` writes for the same files in the same order: every field but the
    capture's (ts, pcap, frame), in the same order (the writer puts the workers' records
    back in packet order). So the kernel prefilter keeps every packet an event needs
    (split ClientHellos, DNS over TCP, QUIC, HTTP, DHCP hostnames, VLAN and QinQ frames),
    and with two workers the flows stay whole. The stop right after tcpreplay returns
    shows the drain: packets still in the kernel at SIGTERM are read and written."""
    files = ethernet_fixtures()
    assert len(files) >= 30 and {"sample-office.pcapng", "tls-two-segments.pcap", "quic-v1.pcap",
                                 "dns-tcp.pcap", "qinq.pcap"} <= {f.name for f in files}
    live = Live(pair, tmp_path, "--workers", str(workers), "--policy", str(POLICY))
    sent = send(pair, files, "--pps", "5000")
    log = live.stop()
    expected = comparable(replay_events(tmp_path, files, "--policy", str(POLICY)))
    assert len(expected) > 90
    assert comparable(live.events()) == expected
    assert all(e["pcap"] == f"live:{pair.server.ifname}" and e["frame"] is None for e in live.events())
    received, kernel_drops, _ = capture_counts(log)
    assert kernel_drops == 0
    assert received < sent  # the prefilter left bulk in the kernel (tls-one-segment's server flight ...)
    # ... and every connection's first message: the coverage is replay's too.
    replayed = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--policy", str(POLICY),
                               *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=REPLAY_TIMEOUT)
    assert coverage_lines(log) == coverage_lines(replayed.stderr) and coverage_lines(log)


def test_kernel_drops_are_counted_not_hidden(network, tmp_path):
    """100 000 DNS queries sent as fast as tcpreplay can into a 1 MB capture buffer with one
    worker: the kernel drops most, and the summary says so — the count, and the warning.
    Nothing goes missing silently: every query passed the filter, and each was either
    processed (and written: every name is a TikTok name, one event each) or counted as a
    kernel drop. (The pair has no IPv6, so no packet but the queries is on the link.)"""
    count = 100_000
    flood_pcap = tmp_path / "flood.pcap"
    assert write_pcap(flood_pcap, flood(count)) == count
    with VethPair(ipv6=False) as quiet:
        metrics = f"{quiet.server.ip4}:9464"
        live = Live(quiet, tmp_path, "--workers", "1", "--buffer-mb", "1", "--policy", str(POLICY),
                    "--metrics-addr", metrics)
        assert send(quiet, [flood_pcap], "--topspeed") == count
        time.sleep(2.5)  # a worker snapshot (1 s) and a publication (1 s) after the flood
        scrape = quiet.run(quiet.server, ["curl", "-sf", f"http://{metrics}/metrics"], timeout=10).stdout.decode()
        log = live.stop()
    received, kernel_drops, interface_drops = capture_counts(log)
    assert kernel_drops > 0 and "THE SENSOR LOST PACKETS" in log, log
    # On-call sees the same loss in Prometheus (the final snapshot can only have grown).
    scraped = re.search(r'^tiktok_detector_capture_dropped_packets_total\{stage="kernel"\} (\S+)$', scrape, re.M)
    assert scraped is not None, scrape[:2000]
    assert 0 < float(scraped.group(1)) <= kernel_drops
    names = [e["name"] for e in live.events()]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"q\d{6}\.tiktokv\.com", n) for n in names)
    assert received + interface_drops == count
    assert packets_processed(log) + kernel_drops == received
    assert len(names) + kernel_drops + interface_drops == count


@pytest.mark.parametrize("workers", [1, 2])
def test_processing_time_is_measured_in_the_workers(pair, tmp_path, workers):
    """The packet_processing_seconds histogram counts the packets the capture workers
    processed, timed where they were processed: it used to stay empty live (the exporter
    read a copy of the counters) and, with workers, timed the parent that only merges."""
    metrics = f"{pair.server.ip4}:9465"
    live = Live(pair, tmp_path, "--workers", str(workers), "--metrics-addr", metrics)
    sent = send(pair, [SAMPLE], "--pps", "5000")
    time.sleep(2.5)  # a worker snapshot (1 s) and a publication (1 s) after the traffic
    scrape = pair.run(pair.server, ["curl", "-sf", f"http://{metrics}/metrics"], timeout=10).stdout.decode()
    log = live.stop()
    count = re.search(r"^tiktok_detector_packet_processing_seconds_count (\S+)$", scrape, re.M)
    assert count is not None, scrape[:2000]
    received, _, _ = capture_counts(log)
    assert 0 < float(count.group(1)) <= received <= sent
    seconds = re.search(r"^tiktok_detector_packet_processing_seconds_sum (\S+)$", scrape, re.M)
    assert float(seconds.group(1)) > 0


def test_sighup_reloads_during_traffic_without_losing_a_packet(pair, tmp_path):
    """Two workers start with a signature set that knows tiktok.com but not tiktokcdn.com.
    3000 DNS flows stream in for 3 s, each asking for c<i>.tiktokcdn.com, then for the
    marker m<i>.tiktok.com, from a port of its own (both queries reach one worker, in that
    order). Once the first 100 markers are written, the file is rewritten to add
    tiktokcdn.com and SIGHUP sent; 0.5 s after the reload is logged, the file is broken and
    SIGHUP sent again, while traffic still flows. Then: every marker gave its event (no
    packet lost to either reload, no kernel drop); the first 100 flows gave no tiktokcdn.com
    event (the old set); every flow sent from 0.3 s after the reload to the end gave one:
    both workers switched, and the refused file did not take the new set away."""
    signatures = tmp_path / "signatures.toml"
    signature_file(signatures, ("tiktok.com", "web"))
    checked = subprocess.run([sys.executable, "-m", "detector", "signatures", "check", str(signatures)],
                             cwd=ROOT, capture_output=True, text=True, timeout=REPLAY_TIMEOUT)
    assert checked.returncode == 0, checked.stderr
    flows = 3 * FLOWS_PER_SECOND
    stream = tmp_path / "stream.pcap"
    write_pcap(stream, (frame for i in range(flows) for frame in (
        dns_query(f"c{i:05d}.tiktokcdn.com", 20000 + i), dns_query(f"m{i:05d}.tiktok.com", 20000 + i))))
    live = Live(pair, tmp_path, "--workers", "2", "--signatures", str(signatures), "--policy", str(POLICY))
    started = time.monotonic()
    sender = send(pair, [stream], "--pps", str(2 * FLOWS_PER_SECOND), background=True)
    live.wait_names({f"m{i:05d}.tiktok.com" for i in range(100)})
    signature_file(signatures, ("tiktok.com", "web"), ("tiktokcdn.com", "cdn"))
    live.signal(signal.SIGHUP)
    live.wait_log("reloaded 2 signatures")
    # Flows sent from here on must match: tcpreplay started after `started`, so fewer
    # flows than this had been sent by then.
    switched_by = (time.monotonic() + 0.3 - started) * FLOWS_PER_SECOND
    time.sleep(0.5)
    signature_file(signatures, ("tiktok.com", "web"), ("tiktokcdn.com", "cdn"), broken=True)
    live.signal(signal.SIGHUP)
    live.wait_log("reload refused, keeping the loaded set")
    assert sender.poll() is None, "the traffic ended before both reloads: not a test of reloading during traffic"
    report, _ = sender.communicate(timeout=SEND_TIMEOUT)
    assert sent_count(report.decode()) == 2 * flows
    log = live.stop()
    assert capture_counts(log)[1] == 0
    names = [e["name"] for e in live.events()]
    assert len(names) == len(set(names))
    assert sorted(n for n in names if n.startswith("m")) == [f"m{i:05d}.tiktok.com" for i in range(flows)]
    matched = {int(n[1:6]) for n in names if n.startswith("c")}
    unmatched = sorted(set(range(flows)) - matched)
    assert unmatched[:100] == list(range(100))
    assert unmatched[-1] < switched_by < flows


def test_a_segment_added_by_reload_is_counted_in_metrics(pair, tmp_path):
    """The policy starts without the client's segment; SIGHUP brings a policy with a "lab"
    segment that holds CLIENT_IP. The violations that follow are counted under "lab" on
    /metrics (the collector used to keep the segment list it started with, so they were
    silently not exported) and the alert table takes the new dedup window."""
    policy = tmp_path / "policy.toml"
    policy.write_text('dedup_window = 900\nviolations = ["web"]\n')
    metrics = f"{pair.server.ip4}:9466"
    live = Live(pair, tmp_path, "--policy", str(policy), "--metrics-addr", metrics,
                "--alerts", str(tmp_path / "alerts.jsonl"))
    policy.write_text('dedup_window = 60\nviolations = ["web"]\n\n[[segment]]\nname = "lab"\n'
                      f'cidrs = ["{CLIENT_IP}/32"]\nviolations = ["app", "api", "web"]\n')
    live.signal(signal.SIGHUP)
    live.wait_log("reloaded")
    queries = tmp_path / "queries.pcap"
    write_pcap(queries, [dns_query(f"r{i}.tiktokv.com", 30000 + i) for i in range(5)])
    send(pair, [queries])
    live.wait_names({f"r{i}.tiktokv.com" for i in range(5)})
    time.sleep(2.5)  # a worker snapshot (1 s) and a publication (1 s)
    scrape = pair.run(pair.server, ["curl", "-sf", f"http://{metrics}/metrics"], timeout=10).stdout.decode()
    live.stop()
    lab = re.search(r'^tiktok_detector_violations_total\{segment="lab"\} (\S+)$', scrape, re.M)
    assert lab is not None and float(lab.group(1)) == 5, scrape[:3000]
    assert {e["segment"] for e in live.events()} == {"lab"}
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts and all(a["window_seconds"] == 60 for a in alerts), alerts


def test_two_workers_keep_each_split_clienthello_whole(pair, tmp_path):
    """32 TLS connections (16 copies each of tls-two-segments and tls-sni-in-second-segment,
    each copy from its own client address and port) with their packets interleaved: all
    SYNs, then all SYN-ACKs, ..., all first ClientHello segments, then all second ones.
    With two workers in one fanout group each connection gives exactly one tls-sni event:
    had its segments gone to different workers, neither would hold the whole ClientHello
    (and in the second capture the name is only in the second segment), so there would be
    none; had every worker seen every packet, two. (That both workers get connections is
    the flow hash at work: all 32 on one worker has a chance of 2 in 2^32.)"""
    copies = (split_hello_flows(PCAPS / "tls-two-segments.pcap", 100, 16)
              + split_hello_flows(PCAPS / "tls-sni-in-second-segment.pcap", 150, 16))
    interleaved = tmp_path / "interleaved.pcap"
    write_pcap(interleaved, (frames[n] for n in range(len(copies[0])) for frames in copies))
    clients = {f"198.18.10.{h}" for h in [*range(100, 116), *range(150, 166)]}
    live = Live(pair, tmp_path, "--workers", "2", "--policy", str(POLICY))
    send(pair, [interleaved], "--pps", "2000")
    live.stop()
    hellos = [(e["client_ip"], e["name"]) for e in live.events() if e["proto"] == "tls-sni"]
    assert sorted(hellos) == sorted((client, "www.tiktok.com") for client in clients)


def proc_status(pid: int) -> dict[str, str]:
    fields = (line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: value.strip() for key, value in fields}


def test_root_drops_to_the_user_after_opening_its_sockets(pair, tmp_path):
    """Started as root with --user nobody and two workers: once capturing, the writer and
    both workers run as nobody:nogroup, with no supplementary group and no capability
    left; capture still works (the sample office gives the events replay gives)."""
    live = Live(pair, tmp_path, "--workers", "2", "--user", "nobody", "--policy", str(POLICY))
    workers = live.children()
    assert len(workers) == 2
    for pid in (live.proc.pid, *workers):
        status = proc_status(pid)
        assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4, status
        assert status["Groups"] == "" and int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    send(pair, [PCAPS / "sample-office.pcapng"], "--pps", "5000")
    live.stop()
    assert comparable(live.events()) == comparable(replay_events(tmp_path, [PCAPS / "sample-office.pcapng"],
                                                                 "--policy", str(POLICY)))


def test_workers_end_with_their_parent(pair, tmp_path):
    """A writer killed outright (SIGKILL: no chance to stop its workers) takes its workers
    with it: the kernel kills them (PR_SET_PDEATHSIG) instead of leaving them capturing
    with nobody to read their results."""
    live = Live(pair, tmp_path, "--workers", "2", "--policy", str(POLICY))
    workers = live.children()
    assert len(workers) == 2
    live.signal(signal.SIGKILL)
    live.proc.wait(LOG_TIMEOUT)
    deadline = time.monotonic() + LOG_TIMEOUT
    while any(map(running, workers)):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(POLL)


def test_a_dead_worker_stops_the_sensor_with_status_2(pair, tmp_path):
    """A worker killed under the writer is noticed: the writer says which, stops the other
    worker (which drains and reports), writes the summary and exits with status 2, so a
    supervisor (systemd's Restart=on-failure) starts the sensor again."""
    live = Live(pair, tmp_path, "--workers", "2", "--policy", str(POLICY))
    workers = sorted(live.children())
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    try:
        status = live.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the writer did not notice its dead worker:\n{live.log()}")
    log = live.log()
    assert status == 2, log
    assert re.search(r"capture worker \d died \(exit status -9\); stopping", log), log
    assert capture_counts(log)[1] == 0


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (dead, waiting for its reaper)."""
    try:
        return proc_status(pid)["State"][0] != "Z"
    except FileNotFoundError:
        return False


def inventory_file(path: Path, device_class: str, broken: bool = False) -> None:
    """An inventory naming CLIENT_MAC a device of ``device_class`` (and another device),
    replaced atomically; ``broken`` puts a bad MAC on line 3."""
    lines = ["mac,owner,department,class", f"{CLIENT_MAC},a.jansen,Finance,{device_class}",
             f"{'02:00:zz:00:00:01' if broken else '02:00:00:00:00:99'},b.smit,Finance,official"]
    staging = path.with_suffix(".new")
    staging.write_text("\n".join(lines) + "\n")
    staging.replace(path)


def test_sighup_reloads_the_inventory_during_traffic_without_losing_a_packet(pair, tmp_path):
    """3000 DNS flows stream in for 3 s, each asking for m<i>.tiktok.com from a port of its
    own. The inventory names the client a personal device, which the policy makes a notice;
    once the first 100 are written, it is rewritten to say official and SIGHUP sent; 0.5 s
    after the reload is logged, it is broken (a bad MAC on line 3) and SIGHUP sent again,
    while traffic still flows. Then: every flow gave its event (nothing lost to either
    reload, no kernel drop); the first 100 are notices of a personal device; every flow sent
    from 0.3 s after the reload on is a violation of an official one (the refused file did
    not take the class away); and the refusal names the file's line."""
    inventory = tmp_path / "inventory.csv"
    inventory_file(inventory, "personal")
    policy = tmp_path / "policy.toml"
    policy.write_text('violations = ["web"]\n\n[[class_rule]]\nclass = "personal"\ndecision = "notice"\n')
    flows = 3 * FLOWS_PER_SECOND
    stream = tmp_path / "stream.pcap"
    write_pcap(stream, (dns_query(f"m{i:05d}.tiktok.com", 20000 + i) for i in range(flows)))
    live = Live(pair, tmp_path, "--workers", "2", "--policy", str(policy), "--inventory", str(inventory))
    started = time.monotonic()
    sender = send(pair, [stream], "--pps", str(FLOWS_PER_SECOND), background=True)
    live.wait_names({f"m{i:05d}.tiktok.com" for i in range(100)})
    inventory_file(inventory, "official")
    live.signal(signal.SIGHUP)
    live.wait_log("and the inventory (2 devices")
    switched_by = (time.monotonic() + 0.3 - started) * FLOWS_PER_SECOND
    time.sleep(0.5)
    inventory_file(inventory, "official", broken=True)
    live.signal(signal.SIGHUP)
    live.wait_log("reload refused, keeping the loaded set")
    assert sender.poll() is None, "the traffic ended before both reloads: not a test of reloading during traffic"
    report, _ = sender.communicate(timeout=SEND_TIMEOUT)
    assert sent_count(report.decode()) == flows
    log = live.stop()
    assert f"{inventory}:3: '02:00:zz:00:00:01' is not a MAC address" in log
    assert capture_counts(log)[1] == 0
    events = live.events()
    by_flow = {int(e["name"][1:6]): (e["decision"], e["device_class"], e["owner"]) for e in events}
    assert len(events) == len(by_flow) == flows
    assert {by_flow[i] for i in range(100)} == {("notice", "personal", "a.jansen")}
    official = sorted(i for i, seen in by_flow.items() if seen == ("violation", "official", "a.jansen"))
    assert official and official[-1] == flows - 1 and official == list(range(official[0], flows))
    assert official[0] < switched_by
