"""`replay --workers N`: several processes share one replay by flow, and the parent merges
what they find in frame order, so the events, alerts, run record and counts are the same
as one process gives (and as decoding every frame in Python gives)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.coverage import CoverageTable
from detector.match import load_signatures
from detector.skim import new_skimmer
from detector.sources.pcapfile import CaptureFile

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.toml"
FIXTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcap.gz")))
#: Files the replay refuses or reads in part; a run over them still goes on (exit status 2).
DAMAGED = {"garbage.pcap", "truncated.pcap"}


def replay(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "detector", "replay", "--no-progress", "--policy", str(POLICY),
         "--events", str(out / "events.jsonl"), "--alerts", str(out / "alerts.jsonl"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    meta = json.loads((out / "events.jsonl.meta.json").read_text())
    meta.pop("created")  # the times of this run: when it wrote the record and read the policy
    meta["policy"].pop("loaded_at")
    files = {
        "events": (out / "events.jsonl").read_text(),
        "alerts": (out / "alerts.jsonl").read_text(),
        "meta": json.dumps(meta, sort_keys=True),
        "stderr": result.stderr,
    }
    return result, files


@pytest.fixture(scope="module")
def tap(tmp_path_factory) -> Path:
    """A small seeded tap capture from the benchmark generator: thousands of flows."""
    path = tmp_path_factory.mktemp("tap") / "tap.pcap"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--packets", "20000", "--out", str(path)],
                   check=True, capture_output=True, timeout=300, cwd=ROOT)
    return path


def test_every_fixture_at_once_gives_the_same_results_with_three_workers(tmp_path):
    one, expected = replay(tmp_path / "one", *map(str, FIXTURES))
    three, got = replay(tmp_path / "three", "--workers", "3", *map(str, FIXTURES))
    assert one.returncode == three.returncode == 2  # the damaged fixtures
    assert expected["events"].count("\n") > 50
    assert got == expected
    for name in DAMAGED:  # warned once, by one worker, not by each
        assert got["stderr"].count(f"{name}:") == expected["stderr"].count(f"{name}:") >= 1


def test_a_tap_capture_gives_the_same_results_with_two_workers_and_without_the_skim(tmp_path, tap):
    one, expected = replay(tmp_path / "one", str(tap))
    two, got = replay(tmp_path / "two", "--workers", "2", str(tap))
    slow, reference = replay(tmp_path / "slow", "--no-skim", str(tap))
    assert one.returncode == two.returncode == slow.returncode == 0, two.stderr
    truth = json.loads(tap.with_suffix(".truth.json").read_text())
    found = {(e["client_ip"], e["name"]) for e in map(json.loads, got["events"].splitlines())}
    assert {tuple(pair) for pair in truth["tiktok_pairs"]} <= found
    assert got == expected == reference


def test_worker_shares_split_the_flows_and_keep_both_directions_together(tap):
    """Two workers' skims keep disjoint frames; every TCP connection's frames (either
    direction) land with one worker; frames nobody can place go to worker 0."""
    kept: list[dict[int, bytes]] = []
    for worker in (0, 1):
        skimmer = new_skimmer(frozenset({53}), frozenset({443}), 65536, worker=worker, workers=2)
        frames = {}
        for batch, _, _ in CaptureFile(str(tap)).batches(skimmer):
            frames.update((frame, data) for _, _, data, frame, _ in batch)
        kept.append(frames)
    assert kept[0] and kept[1] and not kept[0].keys() & kept[1].keys()
    owner: dict[frozenset, int] = {}
    for worker, frames in enumerate(kept):
        for data in frames.values():
            if data[12:14] == b"\x08\x00" and data[23] == 6:  # untagged IPv4 TCP
                ihl = (data[14] & 0x0F) * 4
                ends = frozenset({(data[26:30], data[14 + ihl:16 + ihl]), (data[30:34], data[16 + ihl:18 + ihl])})
                assert owner.setdefault(ends, worker) == worker
            elif data[12:14] == b"\x08\x06":  # ARP: no flow, the first worker's
                assert worker == 0
    assert set(owner.values()) == {0, 1}


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "2", "-"], "standard input can be read only once"),
    (["--workers", "2", "--no-skim"], "--no-skim decodes every frame in one process"),
])
def test_impossible_worker_requests_are_one_line_and_exit_2(args, message):
    files = [] if "-" in args else [str(FIXTURES[0])]
    result = subprocess.run([sys.executable, "-m", "detector", "replay", *args, *files], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, input="")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


class _DieInWorker0:
    """Wants every name (nothing triaged in C), and kills worker 0 at its first."""

    def match(self, name: str) -> None:
        import multiprocessing
        import os
        import signal

        if multiprocessing.current_process().name == "replay-0":
            os.kill(os.getpid(), signal.SIGKILL)

    def prefilter_keys(self) -> None:
        return None


def test_a_worker_that_dies_ends_the_replay_with_an_error_not_a_hang(tap):
    """Worker 0 is killed at its first name while worker 1 goes on sending: the parent
    notices the death (it waits on the process too, not only its pipe) and stops."""
    from collections import Counter

    from detector.pipeline import Settings
    from detector.replay import Job, replay_parallel
    from detector.workers import WorkerError
    from detector.workers import WorkerCounts

    job = Job([str(tap)], Settings(), _DieInWorker0(), describe=False, progress=False)
    with pytest.raises(WorkerError, match="worker 0 ended without its results"):
        replay_parallel(job, 2, lambda o: None, lambda b: None, lambda t: None, WorkerCounts(Counter()), None,
                        CoverageTable(Counter()))


def test_the_counts_a_parallel_replay_leaves_for_metrics_are_not_doubled(tap):
    from collections import Counter

    from detector.pipeline import Settings
    from detector.replay import Job, replay_parallel
    from detector.workers import WorkerCounts

    counts = WorkerCounts(Counter())
    job = Job([str(tap)], Settings(), load_signatures(ROOT / "signatures"), describe=False, progress=False)
    replay_parallel(job, 2, lambda o: None, lambda b: None, lambda t: None, counts, None, CoverageTable(Counter()))
    snapshot = counts.snapshot()
    assert snapshot["packets"] == 20000
    assert snapshot["tcp_flight.flows_created"] > 0  # the tables' own counts stay


def test_workers_fork_before_any_thread_starts(monkeypatch, tmp_path):
    """The metrics server's thread used to start before the workers forked: a thread
    running at a fork is copied half-way into the child (a lock it held stays held)."""
    import multiprocessing.process
    import socket
    import threading

    from detector import cli

    at_fork: list[set[str]] = []
    start = multiprocessing.process.BaseProcess.start

    def recording_start(self):
        at_fork.append({t.name for t in threading.enumerate()})
        return start(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", recording_start)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status = cli.main(["replay", "--no-progress", "--workers", "2", "--metrics-addr", f"127.0.0.1:{port}",
                       "--alertmanager", "http://127.0.0.1:9", "--events", str(tmp_path / "e.jsonl"),
                       str(ROOT / "pcaps" / "sample-office.pcapng")])
    assert status == 0
    assert len(at_fork) == 2 and all(names == {"MainThread"} for names in at_fork), at_fork
