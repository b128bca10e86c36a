"""One run's stages after extraction, built once for replay and live alike.

A session owns what the observations of a run flow into and what serves its state: the
detector (match and policy), the device table, the outputs (events, alerts, summary), the
Alertmanager push and the metrics exporter. Replay and live differ only in where the
observations come from; so that a reload or a new output cannot reach one and miss the
other, both build their stages here, and ``reload`` updates every one of them.

Order matters for a run with worker processes: ``serve`` starts the exporter's thread and
must be called after the workers are forked (the Alertmanager push starts its own thread
with the first alert), since a thread running at a fork is copied half-way into the child.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from detector.counters import ALERTS_CLOSED_EARLY, ALERTS_EMITTED, ALERTS_SUPPRESSED, DEVICES_EVICTED
from detector.coverage import CoverageTable, DeviceCoverage, by_device
from detector.devices import DeviceTable
from detector.extract.binding import format_mac
from detector.match import SignatureSet
from detector.pipeline import Detector, ip_text
from detector.policy import Policy
from detector.records import Verdict
from detector.sinks.outputs import Outputs

if TYPE_CHECKING:  # imported where used: only a run that pushes or serves metrics loads them
    from detector.sinks.alertmanager import AlertmanagerPeers
    from detector.sinks.metrics import ReplayExporter
    from detector.sinks.syslog import SyslogSender


class Session:
    def __init__(self, signatures: SignatureSet, policy: Policy, events: str | None, alerts: str | None,
                 alertmanager: str | list[str] | None, live: bool = False,
                 on_verdict: Callable[[Verdict], None] | None = None, *, sensor: str | None = None,
                 events_format: str = "native", syslog: SyslogSender | None = None) -> None:
        """``live``: append to the outputs and flush each line (a restarted sensor must not
        erase what it wrote; a log shipper must see each record as it happens).
        ``on_verdict`` also receives every written verdict (replay's report).
        ``alertmanager``: the URLs of one Alertmanager or of every peer of a cluster.
        ``sensor`` names the sensor in every event and alert (default: the host name)."""
        self.signatures = signatures
        self.policy = policy
        self.stats: Counter[str] = Counter()
        self.devices = DeviceTable(inventory=policy.inventory)
        self.outputs = Outputs(events, alerts, policy.dedup_window, line_buffered=live, append=live,
                               sensor=sensor, events_format=events_format, syslog=syslog)
        self.sensor = self.outputs.sensor
        self.pusher: AlertmanagerPeers | None = None
        if alertmanager:
            from detector.sinks.alertmanager import AlertmanagerPeers

            urls = [alertmanager] if isinstance(alertmanager, str) else list(alertmanager)
            self.pusher = AlertmanagerPeers(urls, policy.dedup_window, self.sensor)
        if self.pusher is not None:
            self.outputs.alerts.on_open = self.pusher.opened
        self._also = on_verdict
        self.detector = Detector(signatures, policy, self.devices, self._verdict, self.stats)
        self.exporter: ReplayExporter | None = None

    def _verdict(self, verdict: Verdict) -> None:
        self.outputs.verdict(verdict)
        if self._also is not None:
            self._also(verdict)

    def serve(self, address: tuple[str, int] | None, web_config: str | None, counters: object) -> None:
        """Serve /metrics over ``counters`` (an object with ``snapshot()``: an extractor, or
        the sums of the workers'). After the workers are forked; nothing without an address."""
        if address is not None:
            from detector.sinks.metrics import ReplayExporter

            self.exporter = ReplayExporter.start(address, web_config, counters, self.outputs.alerts, self.devices,
                                                 self.policy, self.signatures, self.pusher, self.outputs.syslog)

    def tick(self, now: float) -> None:
        """The run's clock reached ``now``: close due alert windows, publish metrics when due."""
        self.outputs.tick(now)
        if self.exporter is not None:
            self.exporter.tick()

    def reload(self, signatures: SignatureSet, policy: Policy) -> None:
        """A reloaded signature set and policy (with its inventory), for every stage that
        holds either."""
        self.signatures, self.policy = signatures, policy
        self.detector.signatures, self.detector.policy = signatures, policy
        self.devices.inventory = policy.inventory
        self.outputs.alerts.window = policy.dedup_window
        if self.pusher is not None:
            self.pusher.window = policy.dedup_window
        if self.exporter is not None:
            from detector.sinks.metrics import SignatureInfo

            self.exporter.reload(policy, SignatureInfo.of(signatures, time.time()))

    def coverage(self, table: CoverageTable) -> list[DeviceCoverage]:
        """The clients of ``table`` as the devices the events name, in the segments the
        policy places them and with the hostnames their bindings gave; devices without an
        event are summed per segment, unnamed."""

        def describe(mac: bytes | None, ip: bytes, vlan: int | None) -> tuple[str, str, str | None]:
            mac_text, ip_address = (format_mac(mac) if mac is not None else None), ip_text(ip)
            return (mac_text or ip_address, self.policy.segment_of(ip_address, vlan).name,
                    self.devices.hostname(mac_text, ip_address))

        return by_device(table, describe, self.outputs.summary.devices)

    def close(self, counters: Mapping[str, float], sources: list[str], errors: int,
              coverage: list[DeviceCoverage] | None = None) -> None:
        """The capture is over: write what is pending, stop pushing, and write the summary
        from ``counters`` (every counter of the run, the workers' and the tables' too) and
        the devices' ``coverage``."""
        if self.exporter is not None:
            self.exporter.capture_ended()
        self.outputs.close()
        if self.pusher is not None:
            self.pusher.close()
        alerts = self.outputs.alerts
        counts = Counter(counters)
        counts[ALERTS_EMITTED], counts[ALERTS_SUPPRESSED] = alerts.emitted, alerts.suppressed
        counts[ALERTS_CLOSED_EARLY], counts[DEVICES_EVICTED] = alerts.closed_early, self.devices.evicted
        self.outputs.summary.write(sys.stderr, counts, sources, errors, coverage or [])

    def finish(self, linger: float) -> None:
        """Serve the final counts ``linger`` seconds more, then stop serving."""
        if self.exporter is not None:
            self.exporter.finish(linger)
