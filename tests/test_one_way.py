"""One-way views: a tap that sees the resolver's answers but not the devices' queries.

A DNS answer repeats its question, so the device that looked a name up is still named: the
question is reported (``"seen": "response-only"``) once per transaction, NXDOMAIN answers
included, and the summary says how many transactions were seen from one side only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from detector.extract.oneway import EVICTED, EXPIRED, RESPONSE_ONLY, QueryTable
from detector.match import load_signatures

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
SIGNATURES = load_signatures(ROOT / "signatures")
TIMEOUT = 120


def replay(tmp_path: Path, capture: Path, name: str) -> tuple[list[dict], str]:
    events = tmp_path / f"{name}.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           str(capture)], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in events.read_text().splitlines()], done.stderr


def test_answers_alone_name_every_device_nxdomain_included(tmp_path):
    events, summary = replay(tmp_path, PCAPS / "dns-one-way.pcap", "one-way")
    questions = {(e["client_ip"], e["client_mac"], e["name"], e["decision"]) for e in events
                 if e.get("seen") == "response-only"}
    assert questions == {
        ("198.18.10.21", "02:00:c6:12:0a:15", "www.tiktok.com", "violation"),  # NXDOMAIN
        ("198.18.20.101", "02:00:c6:12:14:65", "m.tiktok.com", "violation"),
        ("198.18.10.34", "02:00:c6:12:0a:22", "api16-normal-c-useast1a.tiktokv.com", "violation"),  # NXDOMAIN, twice
        ("fd00:10::21", "02:00:c6:12:0a:15", "v16m.tiktokcdn.com", "violation"),  # NXDOMAIN over IPv6
    }
    # The repeated answer is one transaction: one event.
    assert sum(e["name"] == "api16-normal-c-useast1a.tiktokv.com" for e in events) == 1
    assert "one-way: 4 DNS transaction(s) seen as the answer alone" in summary


def test_two_way_capture_filtered_to_the_answers_names_the_same_devices(tmp_path):
    """The office sample, cut by tcpdump to what a tap on the resolver's side sees (source
    port 53, tagged or not): every TikTok lookup tshark finds answered in the whole capture is still named,
    for the same device."""
    for tool in ("tcpdump", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed (make test installs it)")
    sample = PCAPS / "sample-office.pcapng"
    answers_only = tmp_path / "answers-only.pcap"
    subprocess.run(["tcpdump", "-r", str(sample), "-w", str(answers_only), "udp src port 53 or (vlan and udp src port 53)"],
                   check=True,
                   capture_output=True, timeout=TIMEOUT)
    fields = subprocess.run(["tshark", "-n", "-r", str(sample), "-Y", "dns.flags.response == 1 && dns.response_to",
                             "-T", "fields", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "dns.qry.name"],
                            check=True, capture_output=True, text=True, timeout=TIMEOUT).stdout
    answered = set()
    for line in fields.splitlines():
        v4, v6, names = line.split("\t")
        for name in names.split(","):
            if SIGNATURES.match(name.lower()) is not None:
                answered.add((v4 or v6, name.lower()))
    assert len(answered) >= 3  # the sample's TikTok lookups, from several devices
    events, summary = replay(tmp_path, answers_only, "answers-only")
    named = {(e["client_ip"], e["name"]) for e in events if e.get("seen") == "response-only"}
    assert answered <= named
    full, _ = replay(tmp_path, sample, "full")
    looked_up = {(e["client_ip"], e["name"]) for e in full if e["proto"] == "dns-query"}
    assert answered <= looked_up  # the same devices asked, in the whole capture
    assert not any(e.get("seen") for e in full if (e["client_ip"], e["name"]) in answered)
    assert "one-way:" in summary


def test_query_table_reports_each_transaction_once_and_stays_bounded():
    stats: Counter = Counter()
    table = QueryTable(stats, max_entries=2, timeout=10.0)
    a, b, c = (b"\x01", 1, b"\x02", 53, 7), (b"\x01", 2, b"\x02", 53, 7), (b"\x01", 3, b"\x02", 53, 7)
    table.query(a, 0.0)
    assert not table.answer_alone(a, 0.1)  # its query was seen
    assert not table.answer_alone(a, 0.2)  # a repeat
    assert table.answer_alone(b, 0.3)  # no query: once
    assert not table.answer_alone(b, 0.4)
    table.query(b, 0.5)  # the query after its answer (out of order): still one transaction
    assert not table.answer_alone(b, 0.6)
    assert stats[RESPONSE_ONLY] == 1
    table.query(c, 1.0)  # a third transaction: the table holds two
    assert len(table) == 2 and stats[EVICTED] == 1
    assert table.answer_alone(a, 1.1)  # a was evicted: its repeat now looks alone (counted as lost state)
    table.expire(20.0)
    assert len(table) == 0 and stats[EXPIRED] == 2


def test_the_report_says_how_many_names_came_from_answers_alone(tmp_path):
    report = tmp_path / "one-way.html"
    events = tmp_path / "one-way.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           "--report", str(report), str(PCAPS / "dns-one-way.pcap")],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "One-way view: 4 events named a DNS question read from an answer" in report.read_text()
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--report", str(report),
                           str(PCAPS / "dns-cname-chain.pcap")], capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "One-way view" not in report.read_text()  # every query seen: nothing to say
