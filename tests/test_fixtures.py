"""Every committed fixture capture gives exactly its ground-truth names.

``pcaps/expected/<stem>.json`` was computed by the fixture scripts from what they built
(not by running the detector), so this checks the whole extraction path — reader,
decoder, reassembly, parsers — against an independent account of each case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
EXPECTED = sorted((PCAPS / "expected").glob("*.json"))


def capture_for(expected: Path) -> Path:
    matches = [p for p in PCAPS.iterdir() if p.name.split(".", 1)[0] == expected.stem and p.suffix != ".py"
               and p.is_file() and p.name != "README.md"]
    assert len(matches) == 1, f"one capture per expected file: {matches}"
    return matches[0]


def names(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", "names", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: p.stem)
def test_names_equal_ground_truth(expected):
    capture = capture_for(expected)
    result = names(str(capture))
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(g.pop("pcap") == capture.name for g in got)
    want = json.loads(expected.read_text())
    key = lambda r: (r["frame"], r["proto"], r["name"], r["client_ip"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


def test_every_capture_has_ground_truth():
    stems = {p.stem for p in EXPECTED}
    captures = {p.name.split(".", 1)[0] for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz")}
    assert captures - stems == {"garbage"}  # garbage.pcap is the unreadable-file case


def test_garbage_and_missing_files_give_one_line_and_exit_2():
    for path in ("pcaps/garbage.pcap", "pcaps/no-such-file.pcap"):
        result = names(path)
        assert result.returncode == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_truncated_file_keeps_what_was_read_and_says_so():
    result = names("pcaps/truncated.pcap")
    assert result.returncode == 0
    assert result.stdout.strip()
    assert "truncated record" in result.stderr


def test_unknown_linktype_is_reported():
    result = names("pcaps/unknown-linktype.pcap")
    assert result.returncode == 0 and result.stdout == ""
    assert "unsupported link type(s) 147" in result.stderr


def test_stdin_and_several_files_in_one_run():
    data = (PCAPS / "eth-gzip.pcap.gz").read_bytes()
    via_stdin = subprocess.run([sys.executable, "-m", "detector", "names", "-", "pcaps/vlan.pcap"], input=data,
                               capture_output=True, timeout=60, cwd=ROOT)
    assert via_stdin.returncode == 0, via_stdin.stderr
    records = [json.loads(line) for line in via_stdin.stdout.splitlines()]
    assert {r["pcap"] for r in records} == {"stdin", "vlan.pcap"}
