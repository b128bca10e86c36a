"""The registry of counts (detector.counters): each count it declares is exported and
stated where it says, and every count the pipeline makes on real captures is declared."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from detector import counters
from detector.extract.quic import InitialTable
from detector.extract.tcpflight import FlightCounters
from detector.match import load_signatures
from detector.pipeline import Detector, Extractor, Settings
from detector.devices import DeviceTable
from detector.policy import load_policy
from detector.replay import read_captures
from detector.sinks.metrics import PREFIX, DetectorCollector, SignatureInfo
from detector.sinks.summary import Summary
from detector.skim import DROP_KEYS

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = list(counters.families())
KEYS = [key for family in FAMILIES for key in family.keys]
INFO = SignatureInfo("v", "00" * 32, 1, ("app",), 0.0)


def collect(snapshot: dict[str, float]) -> tuple[dict[tuple[str, tuple], float], set[str]]:
    collector = DetectorCollector(lambda: snapshot, lambda: ("default",), lambda: INFO)
    metrics, unused = collector.families(snapshot)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}
    return samples, unused


def test_keys_and_metrics_are_declared_once():
    assert len(KEYS) == len(set(KEYS))
    names = [family.metric for family in FAMILIES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.metric)
def test_each_declared_count_reaches_its_metric_and_the_summary(family):
    """Walk the registry: every key of every family is exported with its own value on its
    own series, and shows in the summary wherever the family says it does."""
    for values, key in family.series.items():
        samples, unused = collect({key: 7})
        assert not unused, unused
        suffix = "" if family.gauge else "_total"
        assert samples[(PREFIX + family.metric + suffix, tuple(sorted(zip(family.labels, values))))] == 7
        out = io.StringIO()
        Summary().write(out, {key: 7}, [], 0)
        text = out.getvalue()
        if family.summary == counters.NOT_DECODED:
            assert f"{key}=7" in text
        if key in family.lost:
            assert f"LOST STATE: 7 {family.lost[key]} ({key})" in text
        assert family.summary in (counters.NOT_DECODED, counters.LOST, counters.HEADLINE, counters.CAPTURE,
                                  counters.METRICS_ONLY)
        assert not family.lost or family.summary == counters.LOST


def test_the_tables_and_the_skim_count_only_declared_keys():
    assert all(counters.declared(key) for key in DROP_KEYS)
    assert all(counters.declared(f"tcp_flight.{f.name}") for f in fields(FlightCounters))
    assert all(counters.declared(f"quic_initial.{name}") for name in InitialTable.COUNTERS)


def _captures() -> list[Path]:
    shared = ROOT.parent / "shared" / "corpus"
    found = sorted((ROOT / "pcaps").glob("*.pcap*"))
    return found + (sorted(shared.rglob("*.pcap*")) if shared.is_dir() else [])


def test_every_count_real_captures_make_is_declared():
    """Every capture of pcaps/ (and ../shared/corpus when present) through extraction,
    match and policy: each key of the final snapshot is one the registry declares, so none
    is counted and then missing from /metrics or the summary."""
    stats: Counter[str] = Counter()
    devices = DeviceTable()
    detector = Detector(load_signatures(ROOT / "signatures"), load_policy(ROOT / "examples" / "policy.toml"),
                        devices, lambda verdict: None, stats)
    extractor = Extractor(Settings(), detector.observe, devices.learn, stats)
    read_captures([str(p) for p in _captures()], extractor, lambda now: None, progress=False)
    snapshot = extractor.snapshot()
    assert snapshot["packets"] > 500  # pcaps/ alone has 508; a clone without ../shared has no more
    assert sorted(key for key in snapshot if not counters.declared(key)) == []
