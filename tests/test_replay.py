"""End to end: `tiktok-detector replay` on the sample office capture with the example policy,
and the `signatures` subcommands, run as a user runs them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
SCHEMA = ["ts", "proto", "name", "signature", "category", "client_ip", "client_mac", "vlan", "server_ip",
          "server_port", "segment", "device", "hostname", "decision"]


def detector(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, **kwargs)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    result = detector("replay", "--policy", str(POLICY), "--events", str(out / "events.jsonl"),
                      "--alerts", str(out / "alerts.jsonl"), str(SAMPLE))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    return result, events, alerts, out


def test_replay_names_the_devices_with_evidence(sample_run):
    result, events, alerts, _ = sample_run
    assert result.returncode == 0, result.stderr
    assert events and all(list(e)[: len(SCHEMA)] == SCHEMA for e in events)
    assert all(e["pcap"] == SAMPLE.name and e["frame"] >= 1 for e in events)
    assert all(e["ts"].endswith("Z") and len(e["ts"]) == len("2026-03-02T09:00:18.028800Z") for e in events)
    by_device = Counter((e["hostname"], e["segment"], e["decision"]) for e in events)
    assert by_device[("bob-iphone", "staff", "violation")] > 0
    assert by_device[("comms-office-mac", "staff", "exempt")] > 0  # the exemption by hostname pattern
    assert by_device[("galaxy-s23", "guest", "violation")] > 0
    # On the guest segment only app/api/telemetry are violations.
    assert {e["category"] for e in events if e["segment"] == "guest"} <= {"app", "api", "telemetry"}
    # TLS events say whether ECH hid the real name.
    assert all(isinstance(e["ech"], bool) for e in events if e["proto"] in ("tls-sni", "quic-sni"))


def test_every_evidence_frame_holds_its_name(sample_run):
    """The frame named in each event is the one Wireshark shows the name in (the same
    reassembly attribution the differential test checks)."""
    _, events, _, _ = sample_run
    names = detector("names", str(SAMPLE))
    seen = {(r["frame"], r["proto"], r["name"]) for r in map(json.loads, names.stdout.splitlines())}
    assert {(e["frame"], e["proto"], e["name"]) for e in events} <= seen


def test_alerts_deduplicate_and_account_for_every_violation(sample_run):
    _, events, alerts, _ = sample_run
    violations = [e for e in events if e["decision"] == "violation"]
    assert sum(a["count"] for a in alerts) == len(violations)
    keys = [(a["device"], a["category"]) for a in alerts]
    assert len(keys) == len(set(keys))  # one alert per (device, category) in one 15-minute window
    assert any(a["count"] > 1 for a in alerts)
    for alert in alerts:
        mine = [e for e in violations if (e["device"], e["category"]) == (alert["device"], alert["category"])]
        assert alert["names"] == sorted({e["name"] for e in mine})
        assert alert["first_seen"] == min(e["ts"] for e in mine) and alert["last_seen"] == max(e["ts"] for e in mine)
        assert (alert["evidence"]["frame"]) == min(e["frame"] for e in mine)


def test_nothing_but_policy_relevant_names_is_written(sample_run):
    """Privacy: the sample has many innocent names; none may appear in any output."""
    result, events, alerts, out = sample_run
    all_names = {json.loads(line)["name"] for line in detector("names", str(SAMPLE)).stdout.splitlines()}
    relevant = {e["name"] for e in events}
    innocent = all_names - relevant
    assert len(innocent) >= 10
    written = (out / "events.jsonl").read_text() + (out / "alerts.jsonl").read_text() + result.stderr
    assert not [n for n in innocent if f'"{n}"' in written or f" {n}" in written]


def test_summary_table_on_stderr(sample_run):
    result, events, _, _ = sample_run
    assert "bob-iphone" in result.stderr and "violations" in result.stderr
    assert f"{sum(e['decision'] == 'violation' for e in events)} violations" in result.stderr


def test_without_policy_everything_is_segment_default():
    result = detector("replay", "--events", "-", str(SAMPLE))
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and events
    assert {e["segment"] for e in events} == {"default"} and {e["decision"] for e in events} == {"violation"}


def test_bad_policy_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "policy.toml"
    bad.write_text("[[segment]]\nname = 'x'\ncidrs = ['not-a-cidr']\n")
    result = detector("replay", "--policy", str(bad), str(SAMPLE))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not-a-cidr" in result.stderr


def test_signatures_check_and_match():
    ok = detector("signatures", "check", "signatures/tiktok.toml")
    assert ok.returncode == 0 and "entries" in ok.stdout
    hit = detector("signatures", "match", "API16-normal-c-useast1a.tiktokv.com.")
    assert hit.returncode == 0 and "tiktokv.com" in hit.stdout and "api" in hit.stdout
    miss = detector("signatures", "match", "www.example.org")
    assert miss.returncode == 1


def test_signatures_check_reports_lines(tmp_path):
    bad = tmp_path / "bad.toml"
    good = (ROOT / "signatures" / "tiktok.toml").read_text()
    bad.write_text(good + '\n[[entry]]\npattern = "tiktok.com"\nmatch = "suffix"\ncategory = "games"\nsource = ["v2t"]\n')
    result = detector("signatures", "check", str(bad))
    assert result.returncode == 2
    entry = len(good.splitlines()) + 2  # the appended [[entry]] header's line
    assert f"{bad}:{entry + 1}: duplicate" in result.stderr  # the pattern line
    assert f"{bad}:{entry + 3}: unknown category 'games'" in result.stderr


def test_sample_events_and_alerts_equal_the_committed_ones(tmp_path):
    """The demo's output is a reviewed contract: pcaps/expected/sample-office.events.jsonl and
    .alerts.jsonl were read line by line when committed; any change to them is deliberate."""
    result = detector("replay", "--policy", str(POLICY), "--sensor", "office-sensor", "--events", str(tmp_path / "e.jsonl"),
                      "--alerts", str(tmp_path / "a.jsonl"), str(SAMPLE))
    assert result.returncode == 0, result.stderr
    expected = ROOT / "pcaps" / "expected"
    assert (tmp_path / "e.jsonl").read_text() == (expected / "sample-office.events.jsonl").read_text()
    assert (tmp_path / "a.jsonl").read_text() == (expected / "sample-office.alerts.jsonl").read_text()


def test_run_record_hashes_each_capture_in_the_same_read_stdin_too(tmp_path):
    """The run record beside the events names each capture by its SHA-256, taken while the
    replay reads it: a capture piped on stdin, which cannot be read twice, is hashed too."""
    import hashlib

    gz = ROOT / "pcaps" / "eth-gzip.pcap.gz"
    events = tmp_path / "events.jsonl"
    result = detector("replay", "--events", str(events), "-", str(SAMPLE), input=gz.read_text("latin-1"),
                      encoding="latin-1")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "events.jsonl.meta.json").read_text())
    captures = {c["name"]: c for c in record["captures"]}
    assert captures["stdin"]["sha256"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    assert captures[SAMPLE.name]["sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert captures[SAMPLE.name]["frames"] == 125 and captures[SAMPLE.name]["first_ts"] < captures[SAMPLE.name]["last_ts"]


def _incomplete_client_hellos(path: Path, flows: int) -> None:
    """A pcap of ``flows`` TCP flows that each send only the first segment of a ClientHello
    (a record header announcing more than arrives), so each holds a first-flight slot."""
    import struct

    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    hello = b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + bytes(32)
    for i in range(flows):
        src = bytes((198, 18, i >> 8 & 0xFF, i & 0xFF))
        tcp = struct.pack("!HHIIBBHHH", 1024 + (i >> 16), 443, 1, 0, 0x50, 0x18, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(hello), 0, 0, 64, 6, 0, src,
                         bytes((198, 19, 0, 1)))
        frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + tcp + hello
        out += struct.pack("<IIII", 1_700_000_000, i % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(out)


def test_summary_states_table_evictions(tmp_path):
    """A replay that overflows the TCP first-flight table (65,536 flows) says so at the end,
    with the count, not only on /metrics."""
    capture = tmp_path / "flood.pcap"
    _incomplete_client_hellos(capture, 65_536 + 300)
    result = detector("replay", "--no-progress", str(capture))
    assert result.returncode == 0, result.stderr
    assert "LOST STATE: 300 TCP flows evicted from the full first-flight table (tcp_flight.evicted_full)" in result.stderr
    quiet = tmp_path / "few.pcap"
    _incomplete_client_hellos(quiet, 100)
    assert "LOST STATE" not in detector("replay", "--no-progress", str(quiet)).stderr


@pytest.mark.parametrize("option", ["--events", "--alerts", "--report"])
def test_an_output_that_is_an_input_is_refused_before_it_is_opened(tmp_path, option):
    """`replay --events X.pcapng X.pcapng` used to truncate the evidence before reading it."""
    capture = tmp_path / "audit.pcapng"
    capture.write_bytes(SAMPLE.read_bytes())
    link = tmp_path / "link.pcapng"
    link.hardlink_to(capture)
    for output in (capture, link):
        result = detector("replay", option, str(output), str(capture))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"tiktok-detector: {output}: is also an input; refusing to overwrite it"]
    assert capture.read_bytes() == SAMPLE.read_bytes()


def test_an_unwritable_output_is_refused_before_a_frame_is_read(tmp_path):
    """A report path in a missing directory fails at once, not after hours of replay."""
    events = tmp_path / "events.jsonl"
    result = detector("replay", "--events", str(events), "--report", str(tmp_path / "missing" / "r.html"), str(SAMPLE))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tiktok-detector: {tmp_path / 'missing' / 'r.html'}: no such directory {tmp_path / 'missing'}"]
    assert not events.exists()


def test_one_file_named_for_two_outputs_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    result = detector("replay", "--events", str(out), "--alerts", str(out), str(SAMPLE))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tiktok-detector: {out}: named for two outputs (also as {out}); one would overwrite the other"]
    assert not out.exists()


#: Libraries a replay loads only when it needs them (a QUIC Initial, a DHCP packet,
#: --metrics-addr, --alertmanager, --report, --workers).
LAZY = ("cryptography", "dpkt", "prometheus_client", "urllib.request", "detector.report.build", "multiprocessing")
_LOADED = """
import sys
from detector.cli import main
status = main(sys.argv[1:])
print(" ".join(m for m in {lazy!r} if m in sys.modules))
sys.exit(status)
"""


def loaded(tmp_path: Path, *args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _LOADED.format(lazy=LAZY), "replay", "--no-progress",
                           "--events", str(tmp_path / "events.jsonl"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_replay_imports_only_what_it_uses(tmp_path):
    """Start-up: a replay of a DNS-only capture loads none of the heavy libraries; QUIC
    loads cryptography, DHCP dpkt, --workers multiprocessing, --report the report code."""
    assert loaded(tmp_path, str(ROOT / "pcaps" / "dns-cname-chain.pcap")) == set()
    assert loaded(tmp_path, str(ROOT / "pcaps" / "quic-v1.pcap")) == {"cryptography"}
    assert loaded(tmp_path, str(ROOT / "pcaps" / "dhcp-arp.pcap")) == {"dpkt"}
    assert loaded(tmp_path, "--workers", "2", str(ROOT / "pcaps" / "dns-cname-chain.pcap")) == {"multiprocessing"}
    assert "detector.report.build" in loaded(tmp_path, "--report", str(tmp_path / "r.html"),
                                             str(ROOT / "pcaps" / "dns-cname-chain.pcap"))


def test_live_workers_load_the_extractors_libraries_before_dropping_privileges():
    """A worker that becomes another user may no longer read the virtualenv (a 0700
    checkout): it imports what the extractors load lazily while it still can. Every module
    an extractor imports inside a function is in sys.modules after ``preload`` (a package
    alone is not enough: its submodules are imported one by one)."""
    lazy = set()
    for path in (ROOT / "detector" / "extract").glob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, ast.FunctionDef) and function.name != "preload":
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        lazy.update(alias.name for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        lazy.add(node.module)
    assert {"dpkt", "cryptography.hazmat.primitives.hashes", "cryptography.exceptions"} <= lazy
    code = "import sys; from detector.pipeline import preload; preload(); print(' '.join(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert lazy - set(proc.stdout.split()) == set(), proc.stderr


def test_blind_spots_are_written_per_device_and_never_alerted(tmp_path):
    """pcaps/blind-spots.pcap: iCloud Private Relay's DNS check, DoH to dns.google, DoT to
    dns.quad9.net (named) and to two resolvers no signature names (one without SNI), DoQ,
    and an innocent connection. Each device's blind spot is an event of its own category, the
    summary and the report count them per device, nothing is alerted, and the innocent name
    and the unnamed resolver's SNI are written nowhere."""
    events_path, alerts_path, report = tmp_path / "e.jsonl", tmp_path / "a.jsonl", tmp_path / "r.json"
    result = detector("replay", "--events", str(events_path), "--alerts", str(alerts_path),
                      str(ROOT / "pcaps" / "blind-spots.pcap"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [(e["proto"], e["name"], e["category"], e["decision"], e["server_port"]) for e in events] == [
        ("dns-query", "mask.icloud.com", "relay", "blind-spot", 53),
        ("dns-answer", "mask.icloud.com", "relay", "blind-spot", 53),
        ("tls-sni", "dns.google", "encrypted-dns", "blind-spot", 443),
        ("tls-sni", "dns.quad9.net", "encrypted-dns", "blind-spot", 853),
        ("dot", "198.19.9.54:853", "encrypted-dns", "blind-spot", 853),
        ("dot", "198.19.9.55:853", "encrypted-dns", "blind-spot", 853),
        ("doq", "198.19.9.56:853", "encrypted-dns", "blind-spot", 853),
    ]
    assert alerts_path.read_text() == ""
    assert "0 device(s) with TikTok traffic, 7 blind spot(s) on 3 device(s)" in result.stderr
    written = events_path.read_text() + result.stderr
    assert "4 (encrypted-dns, relay)" in result.stderr and "en.wikipedia.org" not in written and "resolver.corp" not in written
    made = detector("report", str(events_path), "--json", str(report))
    assert made.returncode == 0, made.stderr
    totals = json.loads(report.read_text())["totals"]
    assert (totals["violations"], totals["blind_spots"], totals["devices_with_blind_spots"]) == (0, 7, 3)
    assert totals["blind_spot_categories"] == {"relay": 2, "encrypted-dns": 5}
