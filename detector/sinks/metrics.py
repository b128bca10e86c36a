"""Prometheus metrics: a collector that reads a counter snapshot at scrape time, and its server.

The pipeline keeps every count in plain integers (a ``Counter`` under dotted keys, the
reassembly tables' own fields); nothing calls into prometheus-client per packet. At scrape
time ``DetectorCollector`` calls a *snapshot callable* that returns those counts as one flat
``{dotted.key: number}`` mapping and turns it into metric families. That interface is what
lets several capture workers feed one exporter: each sends its snapshot, the serving process
adds them key by key (every key is a counter or an additive gauge) and hands the sum to the
collector. (The alert table's keys, ``alerts.*`` and ``devices_in_violation.*``, come from the
one process where all verdicts meet, so they are not summed.)

Snapshot keys the collector reads (``DetectorCollector.families`` returns any other as unused):

- the pipeline's (see ``detector.pipeline``): ``packets``, ``bytes``, ``skim.<transport>``,
  ``skip.<reason>``, ``file.<reason>``, ``parse_error.<parser>``, ``observations.<proto>``,
  ``matches.<segment>.<proto>.<category>``, ``verdicts.<segment>.<decision>`` (and the
  ``verdicts.<decision>`` totals, which are sums of those), ``tcp.midstream``,
  ``tls.no_sni``, ``quic.no_sni``, ``tcp_flight.<counter>``, ``quic_initial.<counter>``;
- ``devices.entries``, ``devices.evicted``, ``devices.learnt``: the device table;
- ``alerts.emitted``, ``alerts.suppressed``, ``alerts.closed_early``: the alert table;
- ``devices_in_violation.<segment>``: devices with an open alert window (a gauge);
- ``capture.<stage>_drops``: packets the capture lost before we saw them (``kernel``, and
  ``interface`` where the capture reports it); filled by live capture, 0 for a replay;
  ``capture.received``: what the live capture received;
- ``signatures.reload_failures``: failed reloads of the signature set;
- ``alertmanager.<result>``: alerts pushed to Alertmanager (``sent``, ``failed``, ``dropped``);
- ``processing.bucket.<i>``, ``processing.seconds``, ``processing.packets``: the processing
  time histogram (``BatchTimer.snapshot``), bucket ``i`` being ``PROCESSING_BUCKETS[i]``
  (non-cumulative; the last index is +Inf).

Cardinality is bounded by configuration, never by traffic: segment labels take only the
policy's segment names (and ``default``), category labels the signature set's categories,
proto labels ``records.PROTOS``, reason labels the fixed code paths. A key whose label value
is outside those sets is not exported. No label ever holds a device or a name.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from detector import __version__
from detector.records import PROTOS
from detector.sinks.metrics_server import MetricsServer, load_web_config
from detector.timing import PROCESSING_BUCKETS

PREFIX = "tiktok_detector_"


# Label values known before any traffic, exported as 0 from the first scrape so that rate()
# and increase() see a series start at 0 (and dashboards show 0, not "no data"). Each list
# is the set of literal keys in the code that counts them; tests/test_metrics.py checks that.
SKIM_TRANSPORTS = ("tcp", "udp")
SKIP_REASONS = (
    "bad_ip", "bad_tcp", "non_first_fragment", "non_ip", "other_transport",
    "quic_server_long_header", "short_frame", "tcp_not_tls_or_http", "unknown_linktype",
)
FILE_REASONS = ("bad_block", "truncated_record", "unknown_interface")
PARSERS = ("dns", "dns_partial", "tls")
CAPTURE_STAGES = ("kernel",)
ALERTMANAGER_RESULTS = ("sent", "failed", "dropped")

#: (table, reason) -> snapshot key: state dropped from a bounded table. ``capacity``: the
#: table was full and its oldest entry went; ``timeout``: the entry was idle too long.
EVICTIONS = {
    ("tcp_flight", "capacity"): "tcp_flight.evicted_full",
    ("tcp_flight", "timeout"): "tcp_flight.expired",
    ("quic_initial", "capacity"): "quic_initial.evicted",
    ("quic_initial", "timeout"): "quic_initial.expired",
    ("devices", "capacity"): "devices.evicted",
    ("alert_windows", "capacity"): "alerts.closed_early",
}
TABLE_ENTRIES = {
    "tcp_flight": "tcp_flight.flows",
    "quic_initial": "quic_initial.connections",
    "devices": "devices.entries",
}
TCP_SEGMENT_KINDS = ("out_of_order", "retransmitted", "beyond_window", "ignored_finished")
#: quic_initial counters of packets (result label) and of given-up connections (reason label).
QUIC_PACKET_RESULTS = {
    "initials_decrypted": "decrypted", "decrypt_failed": "decrypt_failed",
    "unknown_version": "unknown_version", "version_negotiation": "version_negotiation",
    "retry": "retry", "zero_rtt": "zero_rtt", "handshake": "handshake",
    "short_header": "short_header", "after_done": "after_done", "malformed": "malformed",
}
QUIC_ABANDONED = {"over_budget": "over_budget", "crypto_overflow": "crypto_overflow",
                  "hello_invalid": "hello_invalid"}
#: decision -> (metric name, help) of the per-segment verdict counters.
DECISIONS = {
    "violation": ("violations", "Matches that are a violation on the client's segment, by segment."),
    "exempt": ("exempt_matches", "Violations by exempt devices (written, never alerted), by segment."),
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
            *_traffic(snap),
            *_detections(snap, tuple(dict.fromkeys(self.segments())), info.categories),
            *_health(snap),
            *_signature_families(snap, info),
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

    def labelled(self, prefix: str, known: Iterable[str], open_ended: bool = False) -> dict[str, float]:
        """``{value: snap[prefix + value]}`` for every known value, 0 when absent, and with
        ``open_ended`` also for each other dot-free value found: those come from literal keys
        in the code, so they stay bounded even if a list here lags behind the code."""
        values = {value: self(prefix + value) for value in known}
        if open_ended:
            for key, rest in self.under(prefix):
                if "." not in rest and rest not in values:
                    values[rest] = self(key)
        return values


def _traffic(snap: _Reader) -> Iterator[Metric]:
    yield _counter("packets", "Frames read from the capture.", snap("packets"))
    yield _counter("bytes", "Bytes of the frames read from the capture.", snap("bytes"))
    yield _labelled(CounterMetricFamily, "skimmed_packets",
                    "Packets dropped as bulk after a few byte checks, by transport.",
                    "transport", snap.labelled("skim.", SKIM_TRANSPORTS))
    yield _labelled(CounterMetricFamily, "skipped_packets",
                    "Frames or segments the decoder could not use, by reason.",
                    "reason", snap.labelled("skip.", SKIP_REASONS, open_ended=True))
    yield _labelled(CounterMetricFamily, "capture_file_skipped_records",
                    "Records a capture file could not give (truncated, damaged), by reason.",
                    "reason", snap.labelled("file.", FILE_REASONS, open_ended=True))
    yield _labelled(CounterMetricFamily, "parse_errors",
                    "Messages a parser rejected, by parser (dns_partial: DNS messages read "
                    "up to a malformed part).",
                    "parser", snap.labelled("parse_error.", PARSERS, open_ended=True))
    yield _labelled(CounterMetricFamily, "observations", "Names extracted, by protocol.",
                    "proto", snap.labelled("observations.", PROTOS))
    yield _labelled(CounterMetricFamily, "client_hellos_without_sni",
                    "TLS and QUIC ClientHellos that carried no server name, by protocol.",
                    "proto", {"tls": snap("tls.no_sni"), "quic": snap("quic.no_sni")})


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
    yield _labelled(GaugeMetricFamily, "devices_in_violation",
                    "Devices with an open alert window (a violation within the dedup "
                    "window), by segment.",
                    "segment", snap.labelled("devices_in_violation.", segments))
    yield _counter("alerts_emitted", "Deduplicated alerts written (one per device, category "
                   "and window).", snap("alerts.emitted"))
    yield _counter("alerts_suppressed", "Violations folded into an alert already open.",
                   snap("alerts.suppressed"))
    if any(True for _ in snap.under("alertmanager.")):
        yield _labelled(CounterMetricFamily, "alertmanager_alerts",
                        "Alerts pushed to Alertmanager, by result (dropped: the send queue "
                        "was full).", "result", snap.labelled("alertmanager.", ALERTMANAGER_RESULTS))


def _health(snap: _Reader) -> Iterator[Metric]:
    stages = dict.fromkeys(CAPTURE_STAGES)
    stages.update((rest[: -len("_drops")], None) for _, rest in snap.under("capture.") if rest.endswith("_drops"))
    yield _labelled(CounterMetricFamily, "capture_dropped_packets",
                    "Packets the capture lost before the sensor read them, by where they "
                    "were lost (0 for a replay).", "stage",
                    {stage: snap(f"capture.{stage}_drops") for stage in stages})
    if "capture.received" in snap.snap:
        yield _counter("capture_received_packets", "Packets the live capture received, as its "
                       "capture library counts them.", snap("capture.received"))
    evictions = CounterMetricFamily(PREFIX + "table_evictions", "State dropped from a bounded "
                                    "table before it was done with, by table and reason.",
                                    labels=("table", "reason"))
    for (table, reason), key in EVICTIONS.items():
        evictions.add_metric((table, reason), snap(key))
    yield evictions
    yield _labelled(GaugeMetricFamily, "table_entries", "Entries held in each bounded table.",
                    "table", {table: snap(key) for table, key in TABLE_ENTRIES.items()})
    yield _counter("address_bindings", "MAC-IP-hostname bindings learnt from DHCP and ARP.",
                   snap("devices.learnt"))
    yield _counter("skim_flow_set_full_segments", "TCP segments the skim kept for Python because its "
                   "flow set was full (Python judged them; nothing is lost, only speed).", snap("skim.table_full"))
    yield _counter("tcp_midstream_flows", "TCP flows picked up without their start (the "
                   "capture began mid-connection).", snap("tcp.midstream"))
    yield _counter("tcp_reassembly_flows", "TCP client first flights tracked for reassembly.",
                   snap("tcp_flight.flows_created"))
    yield _labelled(CounterMetricFamily, "tcp_reassembly_flows_ended",
                    "TCP first flights ended, by reason (completed: the message was read; "
                    "overflow: past the byte budget; evictions are in table_evictions).",
                    "reason", {"completed": snap("tcp_flight.finished"), "overflow": snap("tcp_flight.overflow")})
    yield _counter("tcp_reassembly_restarts", "Finished TCP flows tracked again for a later "
                   "message (keep-alive, STARTTLS).", snap("tcp_flight.restarted"))
    yield _labelled(CounterMetricFamily, "tcp_reassembly_segments",
                    "TCP segments reassembly handled specially, by kind.", "kind",
                    {kind: snap(f"tcp_flight.{kind}") for kind in TCP_SEGMENT_KINDS})
    yield _labelled(CounterMetricFamily, "quic_packets", "QUIC long-header packets to servers' "
                    "QUIC ports, by what came of them.", "result",
                    {label: snap(f"quic_initial.{name}") for name, label in QUIC_PACKET_RESULTS.items()})
    yield _counter("quic_client_hellos", "ClientHellos reassembled from QUIC Initials.",
                   snap("quic_initial.hellos"))
    yield _labelled(CounterMetricFamily, "quic_connections_abandoned",
                    "QUIC connections given up before a ClientHello, by reason.", "reason",
                    {label: snap(f"quic_initial.{name}") for name, label in QUIC_ABANDONED.items()})


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
    yield _counter("signature_reload_failures", "Reloads of the signature set that failed (the "
                   "previous set stays in use).", snap("signatures.reload_failures"))


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


def _counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


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


# -- processing time ---------------------------------------------------------------------


# -- the replay's exporter ---------------------------------------------------------------


class _Extractor(Protocol):
    stats: Mapping[str, int]

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
                 policy: _Policy, signatures: SignatureInfo, pusher: _Pusher | None = None) -> None:
        self.extractor = extractor
        self.alerts = alerts
        self.devices = devices
        self.pusher = pusher
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
              pusher: _Pusher | None = None) -> ReplayExporter:
        """Serve the metrics of a replay about to start (the signature set was just loaded)."""
        exporter = cls(extractor, alerts, devices, policy, SignatureInfo.of(signatures, time.time()), pusher)
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
        snap["alerts.emitted"] = alerts.emitted
        snap["alerts.suppressed"] = alerts.suppressed
        snap["alerts.closed_early"] = alerts.closed_early
        snap["devices.entries"] = len(devices)
        snap["devices.evicted"] = devices.evicted
        snap["devices.learnt"] = devices.learnt
        for segment, count in (self._open if self._open is not None else self._open_devices()).items():
            snap[f"devices_in_violation.{segment}"] = count
        if self.pusher is not None:
            for result, count in self.pusher.counts().items():
                snap[f"alertmanager.{result}"] = count
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
