"""Alert deduplication: one alert per (device, category) and dedup window.

The device is its lasting identity (``DeviceInfo.id``: its inventory entry, DHCP client
id or DUID, else its MAC or IP), so a phone that changes its MAC or its addresses within
a window stays one alert.

A window opens at a device's first violation in a category and closes ``window`` seconds
later (capture time, so a replay of last month alerts exactly as the live sensor would
have). Everything seen inside the window is folded into that one alert: counts by
protocol, the distinct names (capped), first and last seen. The alert is written when the
window closes, or when the run ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from detector.records import Verdict, rfc3339
from detector.sinks.events import device_record

#: An alert lists at most this many distinct names; the count still covers them all.
MAX_NAMES_PER_ALERT = 32
#: What an alert tells of the device's identity (events.device_record keys).
ALERT_DEVICE_KEYS = ("device_id", "device_class", "owner", "department", "inventory_id", "identified_by")
#: Open windows are bounded; past this many the oldest is closed early (and counted).
MAX_OPEN_WINDOWS = 65536


@dataclass(slots=True)
class _Window:
    first: Verdict
    opened: float
    last_seen: float
    count: int = 0
    names: dict[str, None] = field(default_factory=dict)
    protos: dict[str, int] = field(default_factory=dict)
    client_ips: dict[str, None] = field(default_factory=dict)
    client_macs: dict[str, None] = field(default_factory=dict)
    hostname: str | None = None


class AlertTable:
    def __init__(self, window: float, emit: Callable[[dict], None]) -> None:
        self.window = window
        self.emit = emit
        #: Called with the first verdict of each new window (an Alertmanager push pages at once).
        self.on_open: Callable[[Verdict], None] | None = None
        self._open: dict[tuple[str, str], _Window] = {}
        self.emitted = 0
        self.suppressed = 0
        self.closed_early = 0

    def add(self, verdict: Verdict) -> None:
        if verdict.decision != "violation":
            return
        ts = verdict.observation.ts
        key = (verdict.info.id if verdict.info is not None else verdict.device, verdict.signature.category)
        win = self._open.get(key)
        if win is not None and ts >= win.opened + self.window:
            self._close(key)
            win = None
        if win is None:
            if len(self._open) >= MAX_OPEN_WINDOWS:
                self._close(next(iter(self._open)))
                self.closed_early += 1
            win = self._open[key] = _Window(verdict, ts, ts)
            if self.on_open is not None:
                self.on_open(verdict)
        else:
            self.suppressed += 1
        win.count += 1
        win.last_seen = max(win.last_seen, ts)
        if len(win.names) < MAX_NAMES_PER_ALERT:
            win.names[verdict.observation.name] = None
        win.protos[verdict.observation.proto] = win.protos.get(verdict.observation.proto, 0) + 1
        if len(win.client_ips) < MAX_NAMES_PER_ALERT:
            win.client_ips[verdict.observation.client_ip] = None
        if verdict.observation.client_mac is not None and len(win.client_macs) < MAX_NAMES_PER_ALERT:
            win.client_macs[verdict.observation.client_mac] = None
        win.hostname = verdict.hostname or win.hostname

    def tick(self, now: float) -> None:
        """Close every window that ended before ``now``."""
        for key in [k for k, w in self._open.items() if now >= w.opened + self.window]:
            self._close(key)

    def flush(self) -> None:
        for key in list(self._open):
            self._close(key)

    def open_devices(self) -> dict[str, set[str]]:
        """Devices with an open window, by segment: the 'devices in violation now' gauge."""
        by_segment: dict[str, set[str]] = {}
        for (device, _), win in self._open.items():
            by_segment.setdefault(win.first.segment, set()).add(device)
        return by_segment

    def _close(self, key: tuple[str, str]) -> None:
        win = self._open.pop(key)
        first = win.first
        obs = first.observation
        self.emitted += 1
        identity = device_record(first)
        self.emit(
            {
                "ts": rfc3339(win.opened),
                "alert": "tiktok-use",
                "device": first.device,
                "client_mac": obs.client_mac,
                "client_ips": list(win.client_ips),
                "hostname": win.hostname,
                "segment": first.segment,
                "category": first.signature.category,
                "first_seen": rfc3339(win.opened),
                "last_seen": rfc3339(win.last_seen),
                "window_seconds": self.window,
                "count": win.count,
                "protos": win.protos,
                "names": sorted(win.names),
                "evidence": {"pcap": obs.pcap, "frame": obs.frame},
                **({"client_macs": list(win.client_macs), **{key: identity[key] for key in ALERT_DEVICE_KEYS}}
                   if identity else {}),
            }
        )
