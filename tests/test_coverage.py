"""Coverage: each connection counted once, by what it showed of its server's name; per
device and segment in the run record, the summary and the report."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.packet import Raw

from detector.coverage import (
    ECH, NAMED, NO_NAME, ONE_WAY, OTHER, OUTCOMES, TUNNEL, CoverageTable, DeviceCoverage, by_device, by_segment,
    share,
)
from detector.match import load_signatures
from detector.pipeline import Extractor, Settings
from detector.replay import read_captures
from detector.report.meta import SidecarError, read_sidecar

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.toml"
_spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "pcaps" / "make_fixtures.py")
fx = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fx
_spec.loader.exec_module(fx)

SERVER = "198.19.2.10"


def mixed_capture(path: Path) -> dict[str, Counter[str]]:
    """Connections of known outcome from two clients; returns what each must count."""
    cap = fx.Capture("coverage.pcap", "coverage")
    staff, guest = fx.STAFF, fx.GUEST
    fx.tls_connect(cap, staff, SERVER, "intranet.example", fx.client_hello("intranet.example", "a"))
    fx.tls_connect(cap, staff, SERVER, "public.example", fx.client_hello("public.example", "b", ech=True))
    flow = fx.TcpFlow(cap, staff, SERVER, 443)  # a ClientHello without a server name
    flow.handshake()
    flow.data(fx.UP, fx.client_hello(None, "c", pq=False))
    flow = fx.TcpFlow(cap, staff, SERVER, 22)  # SSH: neither TLS nor HTTP
    flow.handshake()
    flow.data(fx.UP, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    flow = fx.TcpFlow(cap, staff, SERVER, 80)  # keep-alive: two requests, one connection
    flow.handshake()
    flow.data(fx.UP, fx.http_request("Host: a.example"))
    flow.data(fx.DOWN, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    flow.data(fx.UP, fx.http_request("Host: b.example"))
    hello = fx.client_hello("again.example", "d", pq=False)
    flow = fx.TcpFlow(cap, guest, SERVER, 443)  # a retransmitted ClientHello
    flow.handshake()
    flow.data(fx.UP, hello)
    flow.data(fx.UP, hello, offset=0)
    flow = fx.TcpFlow(cap, guest, SERVER, 5222)  # a SYN and nothing after: no first message
    flow.handshake()
    flow = fx.TcpFlow(cap, guest, SERVER, 443)  # the client's side only: its SYN is never answered
    flow._segment(fx.UP, "S", flow.sides[fx.UP].isn, gap=0.5)
    flow.data(fx.UP, fx.client_hello("oneway.example", "e", pq=False))
    cap.send(cap.l3(guest.ip, "198.19.7.1") / UDP(sport=41641, dport=51820) / Raw(wireguard_initiation()),
             guest, fx.UP)
    cap.send(cap.l3(guest.ip, SERVER) / TCP(sport=40000, dport=443, flags="PA", seq=1) / Raw(b"\x17\x03\x03\x00\x10"),
             guest, fx.UP)  # mid-stream application data: no first message either
    path.write_bytes(fx.pcap_bytes(cap))
    return {staff.mac: Counter({NAMED: 2, ECH: 1, NO_NAME: 1, OTHER: 1}),
            guest.mac: Counter({NAMED: 2, TUNNEL: 1, ONE_WAY: 1})}


def wireguard_initiation() -> bytes:
    """A WireGuard handshake initiation (type 1, 148 bytes)."""
    return b"\x01\x00\x00\x00" + bytes(range(144))


def counted(path: Path, skim: bool) -> dict[str, Counter[str]]:
    extractor = Extractor(Settings(skim=skim), lambda obs: None, lambda binding: None,
                          wanted=load_signatures(ROOT / "signatures" / "tiktok.toml"))
    assert read_captures([str(path)], extractor, lambda now: None, progress=False) == 0
    rows = by_device(extractor.coverage, lambda mac, ip, vlan: (fx_mac(mac), "any", None))
    return {row.device: Counter(row.connections) for row in rows}


def fx_mac(mac: bytes | None) -> str:
    assert mac is not None
    return ":".join(f"{b:02x}" for b in mac)


@pytest.mark.parametrize("skim", [True, False], ids=["skim", "no-skim"])
def test_each_connection_counts_once_by_what_it_showed(tmp_path, skim):
    path = tmp_path / "coverage.pcap"
    expected = mixed_capture(path)
    assert counted(path, skim) == expected


def test_the_table_is_bounded_and_merges_what_workers_counted():
    stats: Counter[str] = Counter()
    table = CoverageTable(stats, max_clients=2)
    for i in range(3):
        table.count(None, bytes([198, 18, 0, i]), None, NAMED)
    table.count(None, bytes([198, 18, 0, 0]), None, ECH)
    assert stats["connections.named"] == 3 and stats["connections.ech"] == 1
    assert stats["coverage.untracked"] == 1 and len(table.clients) == 2
    other = CoverageTable(Counter())
    other.count(None, bytes([198, 18, 0, 0]), None, TUNNEL)
    other.count(None, bytes([198, 18, 0, 9]), None, OTHER)
    table.merge(other.export())
    assert table.clients[(None, bytes([198, 18, 0, 0]), None)] == [1, 1, 0, 0, 1, 0]
    assert stats["coverage.untracked"] == 2  # the merged client beyond the bound


def test_a_device_is_summed_per_segment_and_shares_never_round_to_all_or_nothing():
    table = CoverageTable(Counter())
    mac = bytes.fromhex("0200c6120a15")
    table.count(mac, bytes([198, 18, 10, 21]), 10, NAMED)
    table.count(mac, bytes([198, 18, 10, 22]), 10, ECH)  # a new address in the same segment
    table.count(mac, bytes([198, 18, 20, 21]), 20, NAMED)  # the same phone on the guest Wi-Fi
    rows = by_device(table, lambda m, ip, vlan: ("phone", "staff" if vlan == 10 else "guest", None))
    assert [(r.segment, r.connections) for r in rows] == [("guest", {NAMED: 1}), ("staff", {NAMED: 1, ECH: 1})]
    assert [(g.segment, g.devices, g.total, g.named) for g in by_segment(rows)] == [("guest", 1, 1, 1),
                                                                                     ("staff", 1, 2, 1)]
    assert (share(199, 200), share(1, 200), share(0, 5), share(5, 5), share(0, 0)) == ("99 %", "1 %", "0 %", "100 %",
                                                                                       "-")


def detector(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("coverage")
    expected = mixed_capture(out / "coverage.pcap")
    result = detector("replay", "--no-progress", "--policy", str(POLICY), "--events", str(out / "events.jsonl"),
                      str(out / "coverage.pcap"), str(ROOT / "pcaps" / "sample-office.pcapng"))
    assert result.returncode == 0, result.stderr
    return out, expected, result.stderr


def test_the_run_record_and_the_summary_hold_each_devices_coverage(replayed):
    out, expected, stderr = replayed
    run = read_sidecar(out / "events.jsonl")
    assert run is not None and run.coverage is not None
    rows = {(c.device, c.segment): c for c in run.coverage}
    # The built capture's frames carry no VLAN tag: the policy's segments need one, so its
    # devices are in the default segment; the sample's (tagged) are in theirs.
    galaxy = rows[fx.GUEST.mac, "default"]
    assert Counter(galaxy.connections) == expected[fx.GUEST.mac]
    assert galaxy.hostname == "galaxy-s23"  # from the sample's DHCP
    assert rows[fx.GUEST.mac, "guest"].connections == {NAMED: 3}
    # alice-laptop reached no TikTok name: counted in its segments, named in neither.
    unnamed = rows[None, "default"]
    assert Counter(unnamed.connections) == expected[fx.STAFF.mac] and unnamed.devices == 1
    assert fx.STAFF.mac not in (out / "events.jsonl.meta.json").read_text()
    assert ("coverage of segment default: 8 connection(s) of 2 device(s), server name seen in 50 %, ECH 12 %, "
            "no name 12 %, not TLS/HTTP 12 %, VPN handshakes 12 %; 1 seen from the client's side only (no SYN-ACK)\n"
            ) in stderr


def test_workers_record_the_same_coverage(replayed, tmp_path):
    out, _, _ = replayed
    result = detector("replay", "--no-progress", "--workers", "2", "--policy", str(POLICY),
                      "--events", str(tmp_path / "events.jsonl"), str(out / "coverage.pcap"),
                      str(ROOT / "pcaps" / "sample-office.pcapng"))
    assert result.returncode == 0, result.stderr
    assert read_sidecar(tmp_path / "events.jsonl").coverage == read_sidecar(out / "events.jsonl").coverage


def test_the_report_has_a_coverage_section_by_segment_and_device(replayed, tmp_path):
    out, expected, _ = replayed
    result = detector("report", str(out / "events.jsonl"), "-o", str(tmp_path / "r.html"),
                      "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    devices = {(d["device"], d["segment"]): d for d in doc["coverage"]["devices"]}
    guest = devices[fx.GUEST.mac, "default"]
    assert guest["connections"] == {NAMED: 2, TUNNEL: 1, ONE_WAY: 1} and guest["named_share"] == 0.6667
    segments = {g["segment"]: g for g in doc["coverage"]["segments"]}
    assert sum(segments["staff"]["connections"].values()) == sum(
        sum(d["connections"].values()) for (_, segment), d in devices.items() if segment == "staff")
    html = (tmp_path / "r.html").read_text()
    assert 'id="coverage"' in html and "Name seen" in html and fx.GUEST.mac in html
    rows = {row["device"]: row for row in csv.DictReader((tmp_path / "r.csv").open())}
    guest_row = rows[fx.GUEST.mac]  # over both segments
    assert (guest_row["connections_tunnel"], guest_row["named_share"], guest_row["connections_one_way"]) == (
        "1", "0.8333", "1")
    assert {f"connections_{o.replace('-', '_')}" for o in OUTCOMES} <= set(rows[fx.GUEST.mac])
    # The sample's visitor-ipad had no event: counted in its segment, named nowhere.
    unnamed = devices[None, "guest"]
    assert unnamed["devices"] == 1 and unnamed["connections"] == {NAMED: 2} and unnamed["hostname"] is None
    written = "".join((tmp_path / f).read_text() for f in ("r.html", "r.json", "r.csv"))
    assert "02:00:c6:12:14:66" not in written and "visitor-ipad" not in written
    assert "(1 device without an event)" in html


def test_pseudonymized_coverage_names_no_device(replayed, tmp_path):
    out, _, _ = replayed
    key = tmp_path / "key"
    key.write_text("correct horse battery staple 1")
    result = detector("report", str(out / "events.jsonl"), "--json", str(tmp_path / "r.json"),
                      "--pseudonymize", f"@{key}")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "r.json").read_text()
    assert fx.GUEST.mac not in text and "alice-laptop" not in text
    devices = json.loads(text)["coverage"]["devices"]
    assert all(d["device"] is None or d["device"].startswith(("mac-", "ip-")) for d in devices)
    assert any(d["device"] is None for d in devices)


def test_a_run_record_without_coverage_says_so_and_a_bad_one_is_refused(replayed, tmp_path):
    out, _, _ = replayed
    meta = json.loads((out / "events.jsonl.meta.json").read_text())
    (tmp_path / "events.jsonl").write_text((out / "events.jsonl").read_text())
    del meta["coverage"]
    (tmp_path / "events.jsonl.meta.json").write_text(json.dumps(meta))
    result = detector("report", str(tmp_path / "events.jsonl"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["coverage"] is None and any(note.startswith("coverage") for note in doc["unknown"])
    meta["coverage"] = [{"device": "x", "segment": "s", "connections": {"sideways": 1}}]
    (tmp_path / "events.jsonl.meta.json").write_text(json.dumps(meta))
    with pytest.raises(SidecarError, match="unknown outcome"):
        read_sidecar(tmp_path / "events.jsonl")


def test_devices_without_an_event_are_summed_per_segment_unnamed():
    table = CoverageTable(Counter())
    for last, outcome in ((1, NAMED), (2, NAMED), (2, ECH), (3, OTHER)):
        table.count(None, bytes([198, 18, 10, last]), None, outcome)
    rows = by_device(table, lambda mac, ip, vlan: (f"198.18.10.{ip[3]}", "staff", None), named={"198.18.10.1"})
    assert rows == [DeviceCoverage("198.18.10.1", "staff", None, {NAMED: 1}),
                    DeviceCoverage(None, "staff", None, {NAMED: 1, ECH: 1, OTHER: 1}, devices=2)]
    assert [(g.devices, g.total) for g in by_segment(rows)] == [(3, 4)]
