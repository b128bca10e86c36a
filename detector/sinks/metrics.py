"""Prometheus metrics: a collector that reads a counter snapshot at scrape time, and its server.

The pipeline keeps every count in plain integers (a ``Counter`` under dotted keys, the
reassembly tables' own fields); nothing calls into prometheus-client per packet. At scrape
time ``DetectorCollector`` calls a *snapshot callable* that returns those counts as one flat
``{dotted.key: number}`` mapping and turns it into metric families. That interface is what
lets several capture workers feed one exporter: each sends its snapshot, the serving process
adds them key by key (every key is a counter or an additive gauge) and hands the sum to the
collector. (The alert table's keys, ``alerts.*`` and ``devices_in_violation.*``, come from the
one process where all verdicts meet, so they are not summed.)

Which snapshot keys there are, and the family each feeds, is declared once in
``detector.counters``; the collector makes those families from it, and itself only the
families whose label values come from the configuration: matches, verdicts and devices in
violation by segment (``matches.<segment>.<proto>.<category>``, ``verdicts.<segment>.<decision>``,
``devices_in_violation.<segment>``), the signature set in use, and the processing-time
histogram (``processing.bucket.<i>``, ``processing.seconds``, ``processing.packets`` from
``detector.timing``; bucket ``i`` is ``PROCESSING_BUCKETS[i]``, non-cumulative, the last
+Inf). ``DetectorCollector.families`` returns any key it did not export as unused.

Cardinality is bounded by configuration, never by traffic: segment labels take only the
policy's segment names (and ``default``), category labels the signature set's categories,
proto labels ``records.PROTOS``, every other label the values ``detector.counters``
declares. A key whose label value is outside those sets is not exported. No label ever holds a device or a name.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from detector import __version__, counters
from detector.counters import blind_spot_key, device_class_key
from detector.records import BLIND_SPOT_CATEGORIES, DECISIONS as DECISION_NAMES, DEVICE_CLASSES, PROTOS
from detector.sinks.metrics_server import MetricsServer, load_web_config
from detector.timing import PROCESSING_BUCKETS

PREFIX = "tiktok_detector_"


#: decision -> (metric name, help) of the per-segment verdict counters.
DECISIONS = {
    "violation": ("violations", "Matches that are a violation on the client's segment, by segment."),
    "exempt": ("exempt_matches", "Violations by exempt devices (written, never alerted), by segment."),
    "inferred": ("inferred_matches", "TikTok names inferred from a DNS answer's address (no name shown), "
                 "written, never alerted unless the policy says inferred = \"violation\", by segment."),
    "notice": ("notice_matches", "Matches on devices whose class the policy makes a notice (written, never "
               "alerted), by segment."),
    "allowed": ("allowed_matches", "Matches of a category that is no violation on the client's "
                "segment (counted, not written), by segment."),
}


class SignatureInfo(NamedTuple):
    """What the signature-set metrics show about the set in use."""

    version: str
    sha256: str
    entries: int
    categories: tuple[str, ...]
    loaded_at: float  # Unix time

    @classmethod
    def of(cls, signatures: _SignatureSet, loaded_at: float) -> SignatureInfo:
        return cls(signatures.version, signatures.sha256, len(signatures.entries),
                   tuple(signatures.categories), loaded_at)


class _SignatureSet(Protocol):
    version: str
    sha256: str
    entries: Sequence[object]
    categories: Sequence[str]


class DetectorCollector:
    """A prometheus-client custom collector over a snapshot callable (see the module doc).

    ``snapshot`` is called once per scrape, from the HTTP server's thread: it must return a
    mapping that nobody mutates afterwards (``ReplayExporter`` publishes a fresh dict).
    ``segments`` returns the policy's segment names, ``default`` included, and ``signatures``
    the set in use: callables, so that a reload can swap them.
    """

    def __init__(
        self,
        snapshot: Callable[[], Mapping[str, float]],
        segments: Callable[[], Iterable[str]],
        signatures: Callable[[], SignatureInfo],
    ) -> None:
        self.snapshot = snapshot
        self.segments = segments
        self.signatures = signatures

    def collect(self) -> list[Metric]:
        return self.families(self.snapshot())[0]

    def families(self, snapshot: Mapping[str, float]) -> tuple[list[Metric], set[str]]:
        """The metric families for one snapshot, and the snapshot keys none of them used."""
        snap = _Reader(snapshot)
        info = self.signatures()
        metrics = [
            _build_info(),
            *_declared(snap, counters.TRAFFIC),
            *_detections(snap, tuple(dict.fromkeys(self.segments())), info.categories),
            *_declared(snap, counters.ALERTS),
            *_declared(snap, counters.HEALTH),
            *_signature_families(snap, info),
            *_declared(snap, counters.RELOADS),
            _processing(snap),
        ]
        return metrics, set(snapshot) - snap.used


class _Reader:
    """Read access to a snapshot that remembers which keys were exported."""

    def __init__(self, snap: Mapping[str, float]) -> None:
        self.snap = snap
        self.used: set[str] = set()

    def __call__(self, key: str) -> float:
        self.used.add(key)
        return self.snap.get(key, 0)

    def under(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, rest) for each key that starts with ``prefix``."""
        for key in self.snap:
            if key.startswith(prefix):
                yield key, key[len(prefix):]

    def labelled(self, prefix: str, known: Iterable[str]) -> dict[str, float]:
        """``{value: snap[prefix + value]}`` for every known value, 0 when absent."""
        return {value: self(prefix + value) for value in known}


def _declared(snap: _Reader, declared: Iterable[counters.Family]) -> Iterator[Metric]:
    """The families of ``detector.counters``: every series exported from the first scrape
    (0 until counted), so that rate() sees each start at 0."""
    for family in declared:
        if family.optional and not any(key in snap.snap for key in family.keys):
            continue
        kind = GaugeMetricFamily if family.gauge else CounterMetricFamily
        if not family.labels:
            yield kind(PREFIX + family.metric, family.help, value=snap(family.keys[0]))
            continue
        metric = kind(PREFIX + family.metric, family.help, labels=family.labels)
        for values, key in family.series.items():
            metric.add_metric(values, snap(key))
        yield metric


def _detections(snap: _Reader, segments: Sequence[str], categories: Iterable[str]) -> Iterator[Metric]:
    matches = CounterMetricFamily(PREFIX + "matches", "Names that matched a signature, by the "
                                  "client's segment, protocol and category.",
                                  labels=("segment", "proto", "category"))
    categories = set(categories)
    for key, rest in snap.under("matches."):
        segment, proto, category = _split_right(rest, 3)
        if segment in segments and proto in PROTOS and category in categories:
            matches.add_metric((segment, proto, category), snap(key))
    yield matches
    for decision, (name, documentation) in DECISIONS.items():
        snap(f"verdicts.{decision}")  # the sum over segments: PromQL's sum() gives it
        yield _labelled(CounterMetricFamily, name, documentation, "segment",
                        {segment: snap(f"verdicts.{segment}.{decision}") for segment in segments})
    blind = CounterMetricFamily(PREFIX + "blind_spots", "Observations of where the sensor is blind that are no "
                                "violation on the client's segment (written, never alerted), by segment and kind "
                                "(encrypted-dns, relay, vpn).", labels=("segment", "kind"))
    snap("verdicts.blind-spot")  # the sum over segments and kinds: PromQL's sum() gives it
    for segment in segments:
        for kind in BLIND_SPOT_CATEGORIES:
            blind.add_metric((segment, kind), snap(blind_spot_key(segment, kind)))
    yield blind
    by_class = CounterMetricFamily(PREFIX + "device_class_verdicts", "What policy decided of matches, by the "
                                   "inventory class of the device (unknown: not in the inventory) and decision.",
                                   labels=("device_class", "decision"))
    for device_class in DEVICE_CLASSES:
        for decision in DECISION_NAMES:
            by_class.add_metric((device_class, decision), snap(device_class_key(device_class, decision)))
    yield by_class
    yield _labelled(GaugeMetricFamily, "devices_in_violation",
                    "Devices with an open alert window (a violation within the dedup "
                    "window), by segment.",
                    "segment", snap.labelled("devices_in_violation.", segments))


def _build_info() -> Metric:
    info = GaugeMetricFamily(PREFIX + "build_info", "The sensor's version (always 1).",
                             labels=("version", "python"))
    info.add_metric((__version__, platform.python_version()), 1)
    return info


def _signature_families(snap: _Reader, info: SignatureInfo) -> Iterator[Metric]:
    loaded = GaugeMetricFamily(PREFIX + "signature_set_info", "The signature set in use (always 1).",
                               labels=("version", "sha256"))
    loaded.add_metric((info.version, info.sha256), 1)
    yield loaded
    yield GaugeMetricFamily(PREFIX + "signature_set_entries", "Entries in the signature set in use.",
                            value=info.entries)
    yield GaugeMetricFamily(PREFIX + "signature_set_loaded_timestamp_seconds",
                            "When the signature set in use was loaded (Unix time).", value=info.loaded_at)


def _processing(snap: _Reader) -> Metric:
    cumulative = 0.0
    buckets = []
    for i, bound in enumerate((*PROCESSING_BUCKETS, float("inf"))):
        cumulative += snap(f"processing.bucket.{i}")
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    snap("processing.packets")  # equal to the +Inf bucket, which is the histogram's _count
    return HistogramMetricFamily(
        PREFIX + "packet_processing_seconds",
        "CPU time spent per packet, each packet counted at the mean of its batch (the "
        "packets between two housekeeping ticks).",
        buckets=buckets, sum_value=snap("processing.seconds"),
    )


def _labelled(family: type, name: str, documentation: str, label: str, values: Mapping[str, float]) -> Metric:
    metric = family(PREFIX + name, documentation, labels=(label,))
    for label_value, value in values.items():
        metric.add_metric((label_value,), value)
    return metric


def _split_right(rest: str, parts: int) -> list[str]:
    """Split ``segment.a.b`` into its fields from the right: a segment name may hold dots,
    protocols, decisions and categories never do. Missing fields are empty strings, which
    match no label set."""
    fields = rest.rsplit(".", parts - 1)
    return [""] * (parts - len(fields)) + fields


# -- the replay's exporter ---------------------------------------------------------------


class _Extractor(Protocol):
    def snapshot(self) -> dict[str, float]: ...


class _Alerts(Protocol):
    emitted: int
    suppressed: int
    closed_early: int

    def open_devices(self) -> dict[str, set[str]]: ...


class _Devices(Protocol):
    evicted: int
    learnt: int

    def __len__(self) -> int: ...


class _Pusher(Protocol):
    def counts(self) -> dict[str, int]: ...


class _Policy(Protocol):
    @property
    def segments(self) -> Sequence[_Named]: ...

    @property
    def default(self) -> _Named: ...


class _Named(Protocol):
    @property
    def name(self) -> str: ...


#: The replay publishes a new snapshot for scrapes at most this often (wall seconds).
PUBLISH_INTERVAL = 1.0


class ReplayExporter:
    """``replay --metrics-addr``: serves the run's counts while it runs and, with ``--linger``,
    after it ends.

    All reading of the pipeline's state happens on the replay's own thread, at its
    housekeeping ticks (``timed``): it builds a snapshot dict and publishes it by swapping one
    reference, which the HTTP thread reads. So a scrape never iterates a table the replay is
    changing, and the published dict is never mutated after publication.
    """

    def __init__(self, extractor: _Extractor, alerts: _Alerts, devices: _Devices,
                 policy: _Policy, signatures: SignatureInfo, pusher: _Pusher | None = None,
                 syslog: _Pusher | None = None) -> None:
        self.extractor = extractor
        self.alerts = alerts
        self.devices = devices
        self.pusher = pusher
        self.syslog = syslog
        self.segments: tuple[str, ...] = ()
        self.signatures = signatures
        self.reload(policy, signatures)
        self._open: dict[str, float] | None = None
        self._published: Mapping[str, float] = {}
        self._next_publish = 0.0
        self.server: MetricsServer | None = None
        self.publish()

    @classmethod
    def start(cls, address: tuple[str, int], web_config: str | None, extractor: _Extractor,
              alerts: _Alerts, devices: _Devices, policy: _Policy, signatures: _SignatureSet,
              pusher: _Pusher | None = None, syslog: _Pusher | None = None) -> ReplayExporter:
        """Serve the metrics of a replay about to start (the signature set was just loaded)."""
        exporter = cls(extractor, alerts, devices, policy, SignatureInfo.of(signatures, time.time()), pusher, syslog)
        exporter.server = serve_metrics(address, web_config, lambda: exporter._published, lambda: exporter.segments,
                                        lambda: exporter.signatures)
        return exporter

    def reload(self, policy: _Policy, signatures: SignatureInfo) -> None:
        """Count by the segments of a reloaded policy and show the reloaded signature set."""
        self.segments = (*(segment.name for segment in policy.segments), policy.default.name)
        self.signatures = signatures

    def tick(self) -> None:
        """At the run's housekeeping ticks: publish a snapshot when one is due."""
        if time.monotonic() >= self._next_publish:
            self.publish()

    def capture_ended(self) -> None:
        """Call after the last packet and before the alert table is flushed.

        A replay ends with the capture's clock stopped at its last packet, where the alert
        windows still open are open: the devices-in-violation gauge keeps that value while
        the run lingers, though the flush writes those alerts out.
        """
        self._open = self._open_devices()

    def finish(self, linger: float) -> None:
        """Publish the final counts, serve them ``linger`` seconds more, and stop serving."""
        self.publish()
        try:
            if linger > 0:
                time.sleep(linger)
        finally:
            if self.server is not None:
                self.server.close()

    def publish(self) -> None:
        snap = self.extractor.snapshot()
        alerts, devices = self.alerts, self.devices
        snap[counters.ALERTS_EMITTED] = alerts.emitted
        snap[counters.ALERTS_SUPPRESSED] = alerts.suppressed
        snap[counters.ALERTS_CLOSED_EARLY] = alerts.closed_early
        snap[counters.DEVICES_ENTRIES] = len(devices)
        snap[counters.DEVICES_EVICTED] = devices.evicted
        snap[counters.DEVICES_LEARNT] = devices.learnt
        for segment, count in (self._open if self._open is not None else self._open_devices()).items():
            snap[f"devices_in_violation.{segment}"] = count
        for prefix, sender in (("alertmanager", self.pusher), ("syslog", self.syslog)):
            if sender is not None:
                for result, count in sender.counts().items():
                    snap[f"{prefix}.{result}"] = count
        self._published = snap
        self._next_publish = time.monotonic() + PUBLISH_INTERVAL

    def _open_devices(self) -> dict[str, float]:
        return {segment: len(devices) for segment, devices in self.alerts.open_devices().items()}


# -- serving (the HTTP side is in detector.sinks.metrics_server) -----------------------------


def serve_metrics(address: tuple[str, int], web_config: str | None, snapshot: Callable[[], Mapping[str, float]],
                  segments: Callable[[], Iterable[str]], signatures: Callable[[], SignatureInfo]) -> MetricsServer:
    """Serve ``DetectorCollector`` over ``snapshot`` and the process's own metrics (CPU,
    memory) on a registry of their own: what a replay and a live sensor both start."""
    config = load_web_config(web_config) if web_config else None
    registry = CollectorRegistry()
    registry.register(DetectorCollector(snapshot, segments, signatures))
    ProcessCollector(namespace="", registry=registry)
    return MetricsServer(registry, address, config)
