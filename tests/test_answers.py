"""The DNS answer table (detector/extract/answers.py): bounded, TTL-aware, per client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from collections import Counter

from detector.extract.answers import ENTRIES, EVICTED, EXPIRED, INFERRED, LEARNT, MAX_TTL, MIN_TTL, AnswerTable

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "pcaps" / "dns-address-inference.pcap"
CLIENT, OTHER, ADDRESS = "198.18.10.21", "198.18.20.101", "198.19.1.10"


def test_an_answer_holds_for_its_client_and_its_ttl_clamped():
    stats: Counter[str] = Counter()
    table = AnswerTable(stats)
    table.learn(CLIENT, ((ADDRESS, 5),), "www.tiktok.com", 100.0, "a.pcap", 7)
    assert table.lookup(OTHER, ADDRESS, 101.0) is None  # another client did not get the answer
    assert table.lookup(CLIENT, ADDRESS, 100.0 + MIN_TTL).name == "www.tiktok.com"  # a 5 s TTL still covers a minute
    assert table.lookup(CLIENT, ADDRESS, 100.0 + MIN_TTL + 1) is None
    table.learn(CLIENT, ((ADDRESS, 10 ** 9),), "www.tiktok.com", 0.0, "a.pcap", 8)
    assert table.lookup(CLIENT, ADDRESS, MAX_TTL + 1) is None
    assert (stats[LEARNT], stats[EXPIRED], stats[INFERRED], stats[ENTRIES]) == (2, 2, 1, 0) and len(table) == 0


def test_the_table_is_bounded_and_counts_evictions():
    stats: Counter[str] = Counter()
    table = AnswerTable(stats, max_entries=2)
    for i in range(5):
        table.learn(CLIENT, ((f"198.19.1.{i}", 300),), "www.tiktok.com", 0.0, "a.pcap", i + 1)
    assert len(table) == 2 and stats[EVICTED] == 3 and stats[ENTRIES] == 2
    assert table.lookup(CLIENT, "198.19.1.4", 1.0).frame == 5
    assert table.lookup(CLIENT, "198.19.1.0", 1.0) is None


def replay(tmp_path: Path, *args: str) -> tuple[list[dict], list[dict], str]:
    events, alerts = tmp_path / "e.jsonl", tmp_path / "a.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           "--alerts", str(alerts), *args, str(FIXTURE)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return ([json.loads(x) for x in events.read_text().splitlines()],
            [json.loads(x) for x in alerts.read_text().splitlines()], done.stderr)


@pytest.mark.parametrize("mode", ["report", "violation"])
def test_names_inferred_from_dns_answers(tmp_path, mode):
    """pcaps/dns-address-inference.pcap: after a DNS answer gave it TikTok's address, a client
    connects there with no SNI and with ECH (inferred, the answer's frame as evidence), and
    with another name (not inferred); a client that got no answer is not inferred either.
    The policy's ``inferred`` decides whether those are violations (alerted) or reported."""
    args = ()
    if mode == "violation":
        policy = tmp_path / "policy.toml"
        policy.write_text('inferred = "violation"\n')
        args = ("--policy", str(policy))
    events, alerts, stderr = replay(tmp_path, *args)
    inferred = [e for e in events if "evidence" in e]
    assert [(e["frame"], e["proto"], e["name"], e["client_ip"]) for e in inferred] == [
        (6, "tls-sni", "www.tiktok.com", "198.18.10.21"), (11, "tls-sni", "www.tiktok.com", "198.18.10.21")]
    assert all({k: e["evidence"][k] for k in ("kind", "pcap", "frame")} == {"kind": "dns-answer-address", "pcap": FIXTURE.name, "frame": 2} for e in inferred)
    assert all(e["evidence"]["ts"] == "2026-03-02T09:00:00.512000Z" for e in inferred)
    decision = "inferred" if mode == "report" else "violation"
    assert {e["decision"] for e in inferred} == {decision}
    assert sum(a["count"] for a in alerts) == sum(e["decision"] == "violation" for e in events)
    if mode == "report":
        assert "2 inferred from DNS answers" in stderr


def test_connections_without_a_name_are_judged_by_their_servers_address(tmp_path):
    """pcaps/address-entries.pcap: no SNI to 1.1.1.1 and ECH to 2606:4700:4700::1111 are
    encrypted-DNS blind spots by the shipped resolver addresses (their name is the server's
    address and port); a connection that names its server, and one to an address no entry
    holds, are judged by their name or not at all."""
    fixture = ROOT / "pcaps" / "address-entries.pcap"
    events = tmp_path / "e.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           str(fixture)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    got = [json.loads(x) for x in events.read_text().splitlines()]
    assert [(e["proto"], e["name"], e["category"], e["decision"], e["signature"], e["ech"], "evidence" in e)
            for e in got] == [
        ("tls", "1.1.1.1:443", "encrypted-dns", "blind-spot", "1.1.1.1", False, False),
        ("tls", "[2606:4700:4700::1111]:443", "encrypted-dns", "blind-spot", "2606:4700:4700::1111", True, False),
        ("tls-sni", "one.one.one.one", "encrypted-dns", "blind-spot", "one.one.one.one", False, False),
    ]


def test_a_users_tiktok_prefix_infers_and_a_dns_answer_is_stronger_evidence(tmp_path):
    """A prefix file of the user's own holding TikTok's (fixture) address: the connections
    with no name or ECH there are inferred from the DNS answer when the client had one, from
    the prefix otherwise (the other client); the named connection is not."""
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    (signatures / "tiktok.toml").write_bytes((ROOT / "signatures" / "tiktok.toml").read_bytes())
    (signatures / "prefixes.toml").write_text(
        'version = "1"\ndescription = "TikTok prefixes"\n[sources]\nown = "our own list"\n'
        '[[entry]]\npattern = "198.19.1.0/24"\nmatch = "address"\ncategory = "app"\nsource = ["own"]\n')
    events, _, _ = replay(tmp_path, "--signatures", str(signatures))
    inferred = [(e["client_ip"], e["proto"], e["name"], e["evidence"]["kind"]) for e in events if "evidence" in e]
    assert inferred == [("198.18.10.21", "tls-sni", "www.tiktok.com", "dns-answer-address"),
                        ("198.18.10.21", "tls-sni", "www.tiktok.com", "dns-answer-address"),
                        ("198.18.20.101", "tls", "198.19.1.10:443", "server-address")]
