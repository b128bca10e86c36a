"""Audit reports: `replay --report`, `report`, `--pseudonymize` and `--verify`, run as a user
runs them on the fixture captures, plus the pieces (aggregation, pseudonyms, chart geometry,
Wireshark's view of a frame) checked one by one."""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.match import load_signatures
from detector.records import PROTOS, rfc3339
from detector.report import charts
from detector.report.html import CSP, CSS, JS
from detector.report.inputs import InputFile, read_events
from detector.report.model import Event, Histogram, ReportModel, parse_event
from detector.report.pseudonym import Pseudonymizer, canonical
from detector.report.verify import NOT_REACHED, NOT_SEEN, _tshark_message, frame_filter, wireshark_names

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
SAMPLE = PCAPS / "sample-office.pcapng"
POLICY = ROOT / "examples" / "policy.toml"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (make test installs it as root)")
#: The captures a replay can read (garbage.pcap is not one).
FIXTURES = sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz") and p.name != "garbage.pcap")
KEY_A = "correct horse battery staple 1"
KEY_B = "correct horse battery staple 2"


def detector(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, **kwargs)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """One replay of the sample office capture with --events and --report, and one
    standalone `report` of its events with every output."""
    out = tmp_path_factory.mktemp("report")
    replay = detector("replay", "--policy", str(POLICY), "--events", str(out / "events.jsonl"),
                      "--report", str(out / "replay.html"), str(SAMPLE))
    assert replay.returncode == 0, replay.stderr
    report = detector("report", str(out / "events.jsonl"), "-o", str(out / "report.html"),
                      "--csv", str(out / "report.csv"), "--json", str(out / "report.json"))
    assert report.returncode == 0, report.stderr
    return out, lines(out / "events.jsonl"), json.loads((out / "report.json").read_text())


# ── inputs named ───────────────────────────────────────────────────────────────────────


def test_replay_records_its_run_next_to_the_events(sample):
    out, events, _ = sample
    run = json.loads((out / "events.jsonl.meta.json").read_text())
    assert run["format"] == "tiktok-detector-run/1"
    (capture,) = run["captures"]
    assert capture["name"] == SAMPLE.name and capture["path"] == str(SAMPLE)
    assert capture["sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert capture["size"] == SAMPLE.stat().st_size and capture["frames"] == 125
    assert capture["first_ts"] <= min(e["ts"] for e in events) <= max(e["ts"] for e in events) <= capture["last_ts"]
    signatures = load_signatures(ROOT / "signatures")
    assert run["signatures"] == {"path": signatures.path, "version": signatures.version, "sha256": signatures.sha256}
    assert run["policy"]["path"] == str(POLICY)
    assert run["policy"]["sha256"] == hashlib.sha256(POLICY.read_bytes()).hexdigest()
    assert [s["name"] for s in run["policy"]["segments"]] == ["staff", "guest", "default"]
    assert run["policy"]["exemptions"] == 1 and run["settings"] == {"dns_ports": [53], "quic_ports": [443]}


def test_report_names_captures_signatures_and_policy(sample):
    out, _, doc = sample
    run = json.loads((out / "events.jsonl.meta.json").read_text())
    (capture,) = doc["captures"]
    assert capture["status"] == "ok" and capture["sha256"] == run["captures"][0]["sha256"]
    assert capture["first_ts"] == run["captures"][0]["first_ts"] and capture["frames"] == 125
    assert doc["signatures"] == [run["signatures"]] and doc["policies"][0]["sha256"] == run["policy"]["sha256"]
    assert doc["unknown"] == []
    for page in ("report.html", "replay.html"):
        html = (out / page).read_text()
        for fact in (run["captures"][0]["sha256"], SAMPLE.name, run["signatures"]["version"],
                     run["signatures"]["sha256"], str(POLICY), run["policy"]["sha256"], "2026-03-02 09:00:01 UTC"):
            assert fact in html, (page, fact)


def test_report_without_a_run_record_says_what_is_unknown(sample, tmp_path):
    _, events, _ = sample
    lone = tmp_path / "events.jsonl"
    lone.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = detector("report", str(lone), "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["signatures"] == [] and doc["policies"] == []
    assert any("no run record" in note for note in doc["unknown"])
    (capture,) = doc["captures"]
    assert capture["status"] == "not found" and capture["sha256"] is None and capture["events"] == len(events)
    html = (tmp_path / "r.html").read_text()
    assert "Signature set: unknown" in html and "Policy: unknown" in html and "not found" in html
    assert "its events span 2026-03-02 09:00:18 UTC" in html  # the events' own span, labelled as such
    # With the capture next to the events (the default place to look), it is hashed and spanned.
    shutil.copy(SAMPLE, tmp_path / SAMPLE.name)
    detector("report", str(lone), "--json", str(tmp_path / "r2.json"))
    (found,) = json.loads((tmp_path / "r2.json").read_text())["captures"]
    assert found["status"] == "ok" and found["sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()


# ── content ────────────────────────────────────────────────────────────────────────────


def test_device_rows_counts_and_evidence(sample):
    out, events, doc = sample
    devices = {d["device"]: d for d in doc["devices"]}
    assert set(devices) == {e["device"] for e in events}
    hostnames = {d["hostnames"][0]: d for d in devices.values()}
    assert hostnames["bob-iphone"]["violations"] == 16 and hostnames["galaxy-s23"]["violations"] == 3
    assert hostnames["comms-office-mac"]["violations"] == 0 and hostnames["comms-office-mac"]["exempt"] == 4
    assert [d["device"] for d in doc["devices"]][:2] == [hostnames["bob-iphone"]["device"], hostnames["galaxy-s23"]["device"]]
    for device, row in devices.items():
        mine = [e for e in events if e["device"] == device]
        assert row["macs"] == [mine[0]["client_mac"]] and row["ips"] == sorted({e["client_ip"] for e in mine})
        assert row["segments"] == [mine[0]["segment"]]
        assert row["first_seen"] == min(e["ts"] for e in mine) and row["last_seen"] == max(e["ts"] for e in mine)
        assert row["protos"] == dict(Counter(e["proto"] for e in mine))
        assert row["categories"] == dict(Counter(e["category"] for e in mine))
        assert row["evidence"] == [
            {"ts": e["ts"], "proto": e["proto"], "name": e["name"], "category": e["category"],
             "decision": e["decision"], "pcap": e["pcap"], "frame": e["frame"], "inferred_from": None,
             "confirmed": None}
            for e in sorted(mine, key=lambda e: e["ts"])]
        assert row["evidence_omitted"] == 0
    assert doc["totals"]["violations"] == 19 and doc["totals"]["exempt"] == 4
    assert doc["violations_per_segment_day"] == [{"segment": "guest", "day": "2026-03-02", "violations": 3},
                                                 {"segment": "staff", "day": "2026-03-02", "violations": 16}]
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["device"] for r in rows] == [d["device"] for d in doc["devices"]]
    for row in rows:
        assert int(row["violations"]) == devices[row["device"]]["violations"]
        assert {p: int(row[p]) for p in PROTOS if int(row[p])} == devices[row["device"]]["protos"]


def test_html_lists_every_event_in_its_device_section(sample):
    out, events, doc = sample
    html = (out / "report.html").read_text()
    ids = {d["device"]: i for i, d in enumerate(doc["devices"], 1)}
    sections = {m.group(1): m.group(0) for m in re.finditer(r'<article class="device" id="dev-(\d+)".*?</article>', html, re.S)}
    assert len(sections) == 3
    for e in events:
        section = sections[str(ids[e["device"]])].replace("\n", "")
        row = (f'<td class="mono" data-v="{_ts(e["ts"])}">{e["ts"]}</td><td>{e["proto"]}</td>'
               f'<td class="mono">{e["name"]}</td><td>{e["category"]}</td><td>{e["decision"]}</td>'
               f'<td class="mono">{e["pcap"]}</td><td class="num">{e["frame"]}</td>')
        assert row in section, e
    assert html.count("<svg viewBox") == 4  # a timeline per device and the segment chart
    assert 'id="devices-table"' in html and "bob-iphone" in html and "galaxy-s23" in html


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_html_is_one_self_contained_file(sample):
    out, _, _ = sample
    html = (out / "report.html").read_text()
    references = re.findall(r"\b(?:src|href|action|data|poster)\s*=\s*(\S+)", html)
    assert references and all(r.startswith('"#') for r in references), "a reference to another file or URL"
    assert "url(" not in html and "@import" not in html and "<link" not in html and "<iframe" not in html
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html).group(1)
    assert csp.replace("&#39;", "'") == CSP and "default-src 'none'" in CSP
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    assert style == CSS and script == JS  # the CSP hashes are of exactly these texts
    assert html.count("<script") == 1 and html.count("<style") == 1


def test_no_other_name_anywhere_in_the_outputs(sample):
    """Privacy: the sample holds many innocent names (and devices that never reached
    TikTok); none appears in the HTML, CSV, JSON or run record."""
    out, events, _ = sample
    names = detector("names", str(SAMPLE))
    innocent = {json.loads(line)["name"] for line in names.stdout.splitlines()} - {e["name"] for e in events}
    assert len(innocent) >= 10
    written = "".join((out / f).read_text() for f in ("report.html", "replay.html", "report.csv", "report.json",
                                                      "events.jsonl.meta.json")).lower()
    assert [n for n in innocent if n in written] == []
    assert "alice-laptop" not in written and "visitor-ipad" not in written  # DHCP names of innocent devices


# ── pseudonyms ─────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def pseudonymized(sample, tmp_path_factory):
    out, _, _ = sample
    docs = {}
    for label, key in (("a1", KEY_A), ("a2", KEY_A), ("b", KEY_B)):
        result = detector("report", str(out / "events.jsonl"), "--pseudonymize", key, "-o", str(out / f"{label}.html"),
                          "--csv", str(out / f"{label}.csv"), "--json", str(out / f"{label}.json"))
        assert result.returncode == 0, result.stderr
        docs[label] = json.loads((out / f"{label}.json").read_text())
    return out, docs


def _identities(doc: dict) -> set[str]:
    return {v for d in doc["devices"] for v in (d["device"], *d["macs"], *d["ips"], *d["hostnames"])}


def test_pseudonyms_replace_every_address_and_hostname(sample, pseudonymized):
    out, events, _ = sample
    _, docs = pseudonymized
    real = {v for e in events for v in (e["device"], e["client_mac"], e["client_ip"], e["hostname"]) if v}
    for label in ("a1", "b"):
        written = "".join((out / f"{label}.{ext}").read_text() for ext in ("html", "csv", "json")).lower()
        assert [v for v in real if v.lower() in written] == []
        assert all(re.fullmatch(r"(mac|ip|host)-[0-9a-f]{16}", t) for t in _identities(docs[label]))
        assert docs[label]["pseudonymized"] is True
    assert "are pseudonymized" in (out / "a1.html").read_text()


def test_pseudonyms_are_stable_per_key_and_unlinkable_without_it(sample, pseudonymized):
    _, events, _ = sample
    _, docs = pseudonymized
    assert _identities(docs["a1"]) == _identities(docs["a2"])  # same key, another run: same tokens
    assert not _identities(docs["a1"]) & _identities(docs["b"])  # another key: nothing in common
    mac = events[0]["client_mac"]
    token = next(d["macs"][0] for d in docs["a1"]["devices"] if d["hostnames"])
    by_hostname = {d["hostnames"][0]: d for d in docs["a1"]["devices"]}
    bob = next(e for e in events if e["hostname"] == "bob-iphone")
    pseudonym = Pseudonymizer(KEY_A.encode())
    assert by_hostname[pseudonym.token("host", "bob-iphone")]["macs"] == [pseudonym.token("mac", bob["client_mac"])]
    assert token.startswith("mac-")
    # Without the key the value's own hashes lead nowhere: not a plain or an unkeyed hash.
    digest = token.removeprefix("mac-")
    for guess in (hashlib.sha256(mac.encode()).hexdigest(), hashlib.sha256(f"mac\x00{mac}".encode()).hexdigest(),
                  hmac.new(b"", f"mac\x00{mac}".encode(), hashlib.sha256).hexdigest(), hashlib.md5(mac.encode()).hexdigest()):
        assert not guess.startswith(digest)


def test_pseudonym_canonical_forms():
    p = Pseudonymizer(b"k" * 32)
    assert p.token("mac", "02:00:C6:12:0A:22") == p.token("mac", "02-00-c6-12-0a-22") == p.token("mac", "0200.c612.0a22")
    assert p.token("ip", "fd00:10::0001") == p.token("ip", "FD00:10:0:0::1")
    assert p.token("host", "Bob-iPhone.") == p.token("host", "bob-iphone")
    assert p.token("host", "198.18.10.34") != p.token("ip", "198.18.10.34")  # the kind is hashed too
    assert p.device("02:00:c6:12:0a:22") == p.token("mac", "02:00:c6:12:0a:22")
    assert p.device("198.18.10.34") == p.token("ip", "198.18.10.34")
    assert canonical("mac", "not-a-mac") == "not-a-mac" and canonical("ip", "x") == "x"
    with pytest.raises(ValueError):
        Pseudonymizer(b"")


def test_short_key_warns_and_key_file_works(sample, tmp_path):
    out, _, _ = sample
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A + "\n")
    from_file = detector("report", str(out / "events.jsonl"), "--pseudonymize", f"@{key_file}",
                         "--json", str(tmp_path / "f.json"))
    assert from_file.returncode == 0 and "warning" not in from_file.stderr
    hostnames = {h for d in json.loads((tmp_path / "f.json").read_text())["devices"] for h in d["hostnames"]}
    assert Pseudonymizer(KEY_A.encode()).token("host", "bob-iphone") in hostnames
    short = detector("report", str(out / "events.jsonl"), "--pseudonymize", "abc", "--json", str(tmp_path / "s.json"))
    assert short.returncode == 0 and "can be guessed" in short.stderr


# ── the second opinion ─────────────────────────────────────────────────────────────────


@needs_tshark
def test_replay_verify_confirms_the_sample(sample, tmp_path):
    result = detector("replay", "--policy", str(POLICY), "--report", str(tmp_path / "r.html"), "--verify", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "confirmed 23 of 23" in result.stderr
    html = (tmp_path / "r.html").read_text()
    assert "23 of 23 events confirmed." in html and html.count(">confirmed</span>") == 23


CHUNKS = 4


@needs_tshark
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_verify_confirms_every_event_of_the_fixture_captures(chunk, tmp_path):
    """Every event of every fixture capture is confirmed by Wireshark (the captures are split
    in chunks only so parallel test workers share the tshark runs)."""
    captures = FIXTURES[chunk::CHUNKS]
    events = tmp_path / "events.jsonl"
    replay = detector("replay", "--events", str(events), "--no-progress", *map(str, captures))
    assert replay.returncode in (0, 2), replay.stderr  # 2: unknown-linktype.pcap and the like, reported
    result = detector("report", str(events), "--verify", "--json", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    verification = doc["verification"]
    assert verification["total"] == len(events.read_text().splitlines()) > 0
    assert verification["unconfirmed"] == [] and verification["confirmed"] == verification["total"], result.stderr
    assert result.returncode == 0


@needs_tshark
def test_a_tampered_event_is_reported_unconfirmed(sample, tmp_path):
    out, events, _ = sample
    tampered = [dict(e) for e in events]
    moved = tampered[3]
    moved["frame"] = 1  # a frame of the capture that holds no such name
    beyond = tampered[7]
    beyond["frame"] = 99999  # a frame the capture does not have
    renamed = tampered[10]
    renamed["name"] = "vm.tiktok.com"  # the right frame, another name
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in tampered))
    shutil.copy(out / "events.jsonl.meta.json", tmp_path / "events.jsonl.meta.json")
    result = detector("report", str(path), "--verify", "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stderr  # the report is written; the status says not all confirmed
    verification = json.loads((tmp_path / "r.json").read_text())["verification"]
    assert verification["total"] == 23 and verification["confirmed"] == 20
    unconfirmed = {(u["proto"], u["name"], u["frame"]): u["reason"] for u in verification["unconfirmed"]}
    assert unconfirmed == {(moved["proto"], moved["name"], 1): NOT_SEEN,
                           (beyond["proto"], beyond["name"], 99999): NOT_REACHED,
                           (renamed["proto"], "vm.tiktok.com", renamed["frame"]): NOT_SEEN}
    html = (tmp_path / "r.html").read_text()
    assert "20 of 23 events confirmed." in html and html.count(">not confirmed</span>") == 3
    assert "3 not confirmed" in html and "confirmed 20 of 23" in result.stderr


@needs_tshark
def test_verify_refuses_a_capture_that_is_not_the_one_replayed(sample, tmp_path):
    out, events, _ = sample
    other = tmp_path / "captures"
    other.mkdir()
    (other / SAMPLE.name).write_bytes(SAMPLE.read_bytes() + b"\0" * 16)  # same name, other bytes
    result = detector("report", str(out / "events.jsonl"), "--verify", "--pcap-dir", str(other),
                      "--json", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert result.returncode == 1 and doc["captures"][0]["status"] == "differs"
    assert doc["verification"]["confirmed"] == 0
    assert {u["reason"] for u in doc["verification"]["unconfirmed"]} == {
        "the file found differs (SHA-256) from the capture replayed"}


@needs_tshark
def test_verify_reports_what_tshark_says_of_a_capture_it_cannot_read(sample, tmp_path):
    """A capture the report can hash but tshark cannot read: its events are unconfirmed,
    with tshark's own words as the reason."""
    _, events, _ = sample
    shutil.copy(PCAPS / "garbage.pcap", tmp_path / SAMPLE.name)  # no run record: nothing to compare with
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events[:2]))
    result = detector("report", str(path), "--verify", "--json", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert result.returncode == 1 and doc["captures"][0]["status"] == "damaged"
    (check,) = doc["verification"]["captures"]
    assert check["checked"] == 0 and "isn't a capture file" in check["error"]
    assert {u["reason"] for u in doc["verification"]["unconfirmed"]} == {check["error"]}


def test_tshark_messages_are_one_readable_line():
    crash = "TShark (pid 7) seems to have crashed (retcode: 2).\nLast error line: {}\nTry rerunning in debug mode"
    assert _tshark_message(RuntimeError(crash.format("tshark: The file is cut short."))) == "tshark: The file is cut short."
    assert _tshark_message(RuntimeError(crash.format("  ^~~"))) == "tshark exited with status 2"
    assert _tshark_message(OSError("broken pipe")) == "tshark failed: broken pipe"
    assert _tshark_message(RuntimeError()) == "tshark failed: RuntimeError"


def test_live_events_are_listed_and_never_confirmed(tmp_path):
    record = {"ts": "2026-03-02T09:00:00.000000Z", "proto": "tls-sni", "name": "www.tiktok.com", "signature": "tiktok.com",
              "category": "web", "client_ip": "198.18.10.5", "client_mac": None, "vlan": None, "server_ip": "198.19.3.1",
              "server_port": 443, "segment": "default", "device": "198.18.10.5", "hostname": None,
              "decision": "violation", "pcap": "live:eth0", "frame": None}
    path = tmp_path / "live.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = detector("report", str(path), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["captures"][0]["status"] == "live" and doc["devices"][0]["evidence"][0]["frame"] is None


# ── robustness and command line ────────────────────────────────────────────────────────


def test_bad_lines_are_skipped_and_counted(sample, tmp_path):
    _, events, _ = sample
    path = tmp_path / "events.jsonl.gz"
    good = json.dumps(events[0])
    body = "\n".join([good, "not json", json.dumps({**events[0], "decision": "allowed"}), "", "[1, 2]",
                      json.dumps({**events[0], "ts": "yesterday"}), "x" * 100_000, good]) + "\n"
    path.write_bytes(gzip.compress(body.encode()))
    result = detector("report", str(path), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    (stats,) = json.loads((tmp_path / "r.json").read_text())["inputs"]
    assert stats["events"] == 2 and stats["skipped"] == 5 and stats["lines"] == 8  # the blank line counts, unused
    assert stats["skipped_examples"][0] == "line 2: not JSON" and "line 7: line longer than 64 KiB" in stats["skipped_examples"]
    assert "5 line(s) skipped" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["TMP/missing.jsonl", "-o", "TMP/r.html"], "no such events file"),
    (["EVENTS"], "no output"),
    (["EVENTS", "-o", "EVENTS"], "refusing to overwrite"),
    (["EVENTS", "-o", "TMP/r.html", "--pcap-dir", "TMP/nowhere"], "not a directory"),
    (["EVENTS", "-o", "TMP/r.html", "--pseudonymize", "@TMP/no-such-key"], "no-such-key"),
    (["EVENTS", "-o", "TMP/no-such-dir/r.html"], "no-such-dir/r.html"),
])
def test_bad_report_input_is_one_line_and_exit_2(sample, tmp_path, args, message):
    out, _, _ = sample
    argv = [a.replace("EVENTS", str(out / "events.jsonl")).replace("TMP", str(tmp_path)) for a in args]
    result = detector("report", *argv)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_replay_verify_needs_report():
    result = detector("replay", "--verify", str(SAMPLE))
    assert result.returncode == 2 and "--verify needs --report" in result.stderr


def test_hostile_values_are_escaped(tmp_path):
    """Hostnames come from DHCP, chosen by whoever owns the device: never markup, never a formula."""
    record = {"ts": "2026-03-02T09:00:00.000000Z", "proto": "dns-query", "name": "<b>x</b>.tiktok.com",
              "category": "web", "client_ip": "198.18.10.5", "client_mac": "02:00:c6:12:0a:05",
              "segment": "staff\"><script>alert(1)</script>", "device": "02:00:c6:12:0a:05",
              "hostname": "=HYPERLINK(\"http://evil\")<script>alert(2)</script>", "decision": "violation",
              "pcap": "a'\"<x>.pcap", "frame": 3}
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = detector("report", str(path), "-o", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<script>alert" not in html and "<b>x</b>" not in html and "<x>" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;.tiktok.com" in html
    (row,) = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert row["hostnames"].startswith("'=HYPERLINK")


# ── the pieces ─────────────────────────────────────────────────────────────────────────


def _event(ts: float, device: str = "d1", decision: str = "violation", segment: str = "staff", frame: int = 1) -> Event:
    return Event(ts, "tls-sni", "www.tiktok.com", "web", decision, device, None, "198.18.10.1", None, segment,
                 "a.pcap", frame)


def test_model_keeps_the_earliest_evidence_whatever_the_order():
    import random

    rng = random.Random(7)
    times = [1_772_442_000 + i * 0.5 for i in range(2000)]
    rng.shuffle(times)
    model = ReportModel(evidence_per_device=5)
    for i, ts in enumerate(times):
        model.add(_event(ts, device=f"d{i % 3}", frame=i + 1))
    for name in ("d0", "d1", "d2"):
        device = model.devices[name]
        mine = sorted(t for i, t in enumerate(times) if i % 3 == int(name[1]))
        assert [e.ts for e in device.evidence()] == mine[:5]
        assert device.evidence_omitted == len(mine) - 5 and device.violations == len(mine)
        assert sum(c for _, c in device.timeline.buckets()) == len(mine)
    assert model.events == 2000 and model.first == min(times) and model.last == max(times)


def test_model_memory_is_bounded_by_devices_not_events(tmp_path):
    """Events of a busy segment, read from a gzip file: the model holds what the report shows
    (100 evidence rows per device), not the events (holding these 12,000 takes 9 MiB)."""
    path = tmp_path / "events.jsonl.gz"
    base = {"proto": "quic-sni", "name": "v16m.tiktokcdn.com", "category": "cdn", "client_mac": None, "hostname": None,
            "segment": "staff", "decision": "violation", "pcap": "big.pcap"}
    with gzip.open(path, "wt") as stream:
        for i in range(12_000):
            ip = f"198.18.10.{i % 4}"
            stream.write(json.dumps({**base, "ts": rfc3339(1_772_442_000 + i * 0.1), "client_ip": ip, "device": ip,
                                     "frame": i + 1}) + "\n")
    model = ReportModel()
    stats = InputFile(str(path))
    tracemalloc.start()
    try:
        for event in read_events(str(path), stats):
            model.add(event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.events == 12_000 and model.events == 12_000 and len(model.devices) == 4
    assert all(len(d.evidence()) == 100 and d.evidence_omitted == 2_900 for d in model.devices.values())
    assert peak < 3 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_model_caps_devices_and_counts_the_rest():
    model = ReportModel(evidence_per_device=1, max_devices=3)
    for i in range(10):
        model.add(_event(1_772_442_000 + i, device=f"d{i}"))
    assert len(model.devices) == 3 and model.untracked_events == 7 and model.violations == 10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=4e9, allow_nan=False), max_size=300),
       st.integers(min_value=1, max_value=16))
def test_histogram_is_bounded_and_loses_no_count(times, cap):
    histogram = Histogram(cap=cap)
    for ts in times:
        histogram.add(ts)
    assert len(histogram.counts) <= cap
    assert sum(histogram.counts.values()) == len(times)
    for ts in times:
        assert int(ts // histogram.width) in histogram.counts


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.dictionaries(st.sampled_from(["ts", "proto", "name", "device", "segment", "decision", "pcap",
                                                  "frame", "client_ip", "hostname", "category"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=30), st.booleans())),
                 st.lists(st.integers()), st.text(), st.none()))
def test_parse_event_never_raises(record):
    result = parse_event(record)
    assert isinstance(result, (Event, str))


def test_frame_filter_writes_runs_as_ranges():
    assert frame_filter([1, 2, 3, 7, 9, 10]) == "frame.number in {1..3, 7, 9..10}"
    assert frame_filter([5], " ") == "frame.number in {5}"
    assert frame_filter([]) is None
    assert frame_filter(range(1, 100_000, 2), max_chars=1000) is None  # too long for one argument


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=5000), max_size=200))
def test_frame_filter_selects_exactly_the_frames(frames):
    text = frame_filter(sorted(frames))
    if not frames:
        assert text is None
        return
    selected: set[int] = set()
    for part in text.removeprefix("frame.number in {").removesuffix("}").split(", "):
        low, _, high = part.partition("..")
        selected |= set(range(int(low), int(high or low) + 1))
    assert selected == frames


def test_wireshark_names_reads_roles_not_just_strings():
    query = {"dns.flags_tree": {"dns.flags.response": "0"},
             "Queries": {"q": {"dns.qry.name": "WWW.TikTok.com"}}}
    response = {"dns.flags_tree": {"dns.flags.response": "1"},
                "Queries": {"q": {"dns.qry.name": "www.tiktok.com"}},
                "Answers": {"a": {"dns.resp.name": "www.tiktok.com", "dns.cname": "www.tiktok.com.edgesuite.net"},
                            "b": [{"dns.resp.name": "x.tiktokv.com"}, {"dns.svcb.targetname": "<Root>"}]},
                "Authoritative nameservers": {"ns": {"dns.resp.name": "tiktok.com", "dns.ns": "ns1.tiktok.com"}}}
    tls = {"tls.record": {"tls.handshake": {"x": {"tls.handshake.extensions_server_name": "m.tiktok.com"}}}}
    quic = {"quic.frame": {"tls": {"tls.handshake": {"tls.handshake.extensions_server_name": "api.tiktokv.com"}}}}
    http = {"http.host": "P16.TikTokCDN.com.:8080"}
    found = wireshark_names({"dns": [query, response], "tls": [tls], "quic": [quic], "http": [http]})
    assert found == {("dns-query", "www.tiktok.com"), ("dns-answer", "www.tiktok.com"),
                     ("dns-answer", "www.tiktok.com.edgesuite.net"), ("dns-answer", "x.tiktokv.com"),
                     ("tls-sni", "m.tiktok.com"), ("quic-sni", "api.tiktokv.com"), ("http-host", "p16.tiktokcdn.com")}
    assert wireshark_names({"http": [{"http.host": "[fd00::1]:80"}]}) == {("http-host", "fd00::1")}
    assert wireshark_names({}) == set()


def test_wireshark_names_take_an_ikev2_initiator_not_a_responders_refusal():
    """An IKE_SA_INIT with a zero responder SPI is a handshake only from the initiator: the
    responder's INVALID_KE_PAYLOAD or COOKIE answer has one too (RFC 7296 1.3, 2.6)."""
    def frame(flag_i: str, flag_r: str) -> dict:
        isakmp = {"isakmp.rspi": "00:00:00:00:00:00:00:00", "isakmp.exchangetype": "34",
                  "isakmp.flags_tree": {"isakmp.flag_i": flag_i, "isakmp.flag_r": flag_r}}
        return {"isakmp": [isakmp], "ip": [{"ip.dst": "198.19.7.2"}], "udp": [{"udp.dstport": "500"}]}
    assert wireshark_names(frame("1", "0")) == {("ike", "198.19.7.2:500")}
    assert wireshark_names(frame("0", "1")) == set()


def test_timeline_chart_sums_to_the_counts_and_shares_the_axis():
    start = 1_772_442_000.0
    buckets = [(start + i * 7, 1 + i % 3) for i in range(200)]
    chart = charts.timeline(buckets, start, start + 3600)
    assert sum(b.value for b in chart.bars) == sum(c for _, c in buckets)
    assert chart.y_max == max(b.value for b in chart.bars)
    assert all(charts.LEFT <= b.x and b.x + b.w <= chart.width - charts.RIGHT + 1e-6 for b in chart.bars)
    assert chart.caption == "events per 30 seconds" and 2 <= len(chart.ticks) <= 8
    empty = charts.timeline([], start, start)
    assert empty.bars == () and empty.y_max == 1


def test_segment_day_chart_stacks_segments_per_day():
    day = 20514  # 2026-03-02
    counts = Counter({("staff", day): 12, ("guest", day): 3, ("staff", day + 2): 4})
    chart, colors = charts.segment_days(counts, ["staff", "guest"])
    assert list(colors) == ["staff", "guest"] and chart.y_max == 15
    assert sorted((b.value, b.color) for b in chart.bars) == [(3, colors["guest"]), (4, colors["staff"]),
                                                             (12, colors["staff"])]
    assert [t.label for t in chart.ticks] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    weekly, _ = charts.segment_days(Counter({("s", day): 1, ("s", day + 400): 1}), ["s"])
    assert "per week" in weekly.caption


def test_read_events_handles_plain_gzip_and_long_lines(tmp_path):
    record = json.dumps({"ts": "2026-03-02T09:00:00Z", "proto": "dns-query", "name": "a.tiktok.com", "device": "d",
                         "segment": "s", "decision": "exempt", "pcap": "p", "frame": 2})
    for path, data in ((tmp_path / "plain.jsonl", (record + "\n") * 3),
                       (tmp_path / "packed.jsonl.gz", gzip.compress(((record + "\n") * 3).encode()))):
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        stats = InputFile(str(path))
        assert len(list(read_events(str(path), stats))) == 3 and stats.skipped == 0


def test_a_capture_given_as_events_is_bad_input(tmp_path):
    """`report some.pcap -o r.html` used to write an empty report and exit 0."""
    capture = ROOT / "pcaps" / "dns-tcp.pcap"
    result = detector("report", str(capture), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"tiktok-detector: {capture}: not an events file:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_no_events_and_no_run_record_is_bad_input(tmp_path):
    """An empty events file with no run record beside it proves nothing; one with its run
    record is a clean replay and gets its report."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = detector("report", str(empty), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2 and "nothing to report" in result.stderr
    clean = tmp_path / "clean.jsonl"
    run = detector("replay", "--events", str(clean), str(ROOT / "pcaps" / "dns-innocent.pcap"))
    assert run.returncode == 0 and clean.read_text() == ""
    result = detector("report", str(clean), "-o", str(tmp_path / "clean.html"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "clean.html").exists()


def test_a_hostname_only_exemption_is_flagged_in_the_report(tmp_path):
    """The example policy exempts comms-office-* by hostname alone (trust_hostname): the
    report says that any device could have claimed that name."""
    events = tmp_path / "events.jsonl"
    run = detector("replay", "--policy", str(ROOT / "examples" / "policy.toml"), "--events", str(events),
                   "--report", str(tmp_path / "r.html"), str(ROOT / "pcaps" / "sample-office.pcapng"))
    assert run.returncode == 0, run.stderr
    html = (tmp_path / "r.html").read_text()
    assert "1 exemption rests on a hostname alone" in html
    result = detector("report", str(events), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["policies"][0]["trusted_hostnames"] == 1


def test_model_counts_blind_spots_apart_from_tiktok_events():
    """A blind-spot event is no TikTok event: it counts per device and category, shows the
    device among those with blind spots, and leaves violations, timelines and exempt-only
    lists as they were."""
    model = ReportModel()
    model.add(_event(10.0, device="both"))
    doh = Event(11.0, "tls-sni", "dns.google", "encrypted-dns", "blind-spot", "both", None, "198.18.10.1", None,
                "staff", "a.pcap", 7)
    model.add(doh)
    model.add(doh._replace(device="blind", category="relay", name="mask.icloud.com", frame=9))
    assert (model.events, model.violations, model.exempt, model.blind_spots) == (1, 1, 0, 2)
    assert [d.device for d in model.violators()] == ["both"]
    assert model.exempt_only() == [] and [d.device for d in model.blind_only()] == ["blind"]
    assert [(d.device, dict(d.blind)) for d in model.with_blind_spots()] == [("blind", {"relay": 1}),
                                                                              ("both", {"encrypted-dns": 1})]
    assert [e.frame for e in model.devices["both"].blind_evidence] == [7]
    assert model.devices["both"].evidence_omitted == 0 and sum(model.devices["both"].timeline.counts.values()) == 1
    assert parse_event({"ts": "2026-03-02T09:00:00Z", "proto": "tls-sni", "name": "dns.google", "device": "d",
                        "segment": "s", "decision": "blind-spot", "pcap": "a.pcap"}).decision == "blind-spot"


def test_model_counts_encrypted_client_hellos_per_device():
    """An event whose ClientHello carried ECH names the public (outer) name: the real one may
    differ, so the device shows among those with blind spots, counted apart."""
    event = parse_event({"ts": "2026-03-02T09:00:00Z", "proto": "tls-sni", "name": "www.tiktok.com", "device": "d",
                         "segment": "s", "decision": "violation", "pcap": "a.pcap", "ech": True})
    assert event.ech and not parse_event({**event._asdict(), "ts": "2026-03-02T09:00:00Z", "ech": "yes"}).ech
    model = ReportModel()
    model.add(event)
    model.add(_event(12.0, device="d"))
    assert model.devices["d"].ech == 1 and model.devices["d"].violations == 2
    assert [d.device for d in model.with_blind_spots()] == ["d"] and model.blind_only() == []
