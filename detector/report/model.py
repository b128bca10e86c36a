"""Streaming aggregation of events into what a report shows, in bounded memory.

A month of a busy segment is millions of events; none is kept beyond what the report
prints. Per device the model keeps counters, a time histogram and the ``evidence_per_device``
*earliest* events (a heap, so the input need not be sorted) plus the count of the rest;
the full list stays in the events files the report names. Sets that a hostile or broken
input could grow (a device's IPs, hostnames, names) keep their first few members and say
that there were more. Beyond ``max_devices`` devices, further devices are counted in the
totals and charts but not itemised, and the report says how many events that concerns.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from detector.records import BYTEDANCE_APP_CATEGORIES, DNS_ANSWER_ADDRESS, PROTOS

#: What a report lists per device by default: the earliest events, the rest counted.
EVIDENCE_PER_DEVICE = 100
MAX_DEVICES = 50_000
MAX_IPS = 16
MAX_HOSTNAMES = 8
MAX_SEGMENTS_PER_DEVICE = 8
MAX_NAMES_PER_DEVICE = 64
#: Distinct segments and captures the model tracks; beyond, they are folded into OTHER.
MAX_SEGMENTS = 256
MAX_CAPTURES = 100_000
OTHER = "(other)"
#: Buckets a device's time histogram may hold before its resolution halves.
HISTOGRAM_BUCKETS = 4096
DECISIONS = ("violation", "exempt", "inferred", "blind-spot", "notice")
#: Blind-spot events listed per device (the earliest in the events' order).
BLIND_EVIDENCE_PER_DEVICE = 8
SECONDS_PER_DAY = 86400


class Evidence(NamedTuple):
    """One event as the evidence list shows it; a tuple to stay small in memory."""

    ts: float
    proto: str
    name: str
    category: str
    decision: str
    pcap: str
    frame: int | None
    answer_pcap: str | None = None  # an inferred name: the DNS answer that gave the address
    answer_frame: int | None = None

    def checked_as(self) -> tuple[str, int | None, str, str]:
        """What Wireshark must show to confirm the event: the name in its frame, or for an
        inferred one, the name in the DNS answer it was inferred from."""
        if self.answer_frame is not None and self.answer_pcap is not None:
            return self.answer_pcap, self.answer_frame, "dns-answer", self.name
        return self.pcap, self.frame, self.proto, self.name


class Event(NamedTuple):
    """A validated event record: the fields the report reads."""

    ts: float
    proto: str
    name: str
    category: str
    decision: str
    device: str
    client_mac: str | None
    client_ip: str | None
    hostname: str | None
    segment: str
    pcap: str
    frame: int | None
    ech: bool = False  # an Encrypted ClientHello: the name is the public (outer) one
    answer_pcap: str | None = None  # an inferred name: where the DNS answer that gave the address is
    answer_frame: int | None = None
    #: What the device inventory says of the device (events of runs with ``--inventory``).
    device_class: str | None = None
    owner: str | None = None
    department: str | None = None
    response_only: bool = False  # a DNS question read from an answer whose query was not captured


_REQUIRED = ("ts", "proto", "name", "device", "segment", "decision", "pcap")
_PROTOS = frozenset(PROTOS)


def parse_event(record: object) -> Event | str:
    """An ``Event``, or why the record is not one (a short reason, never an exception).

    This runs once per line of a month of events: plain look-ups, no comprehension."""
    if type(record) is not dict:
        return "not a JSON object"
    get = record.get
    for key in _REQUIRED:
        value = get(key)
        if type(value) is not str or not value:
            return f"missing or invalid {key!r}"
    decision = record["decision"]
    if decision not in DECISIONS:
        return f"decision {decision[:32]!r} is not a violation, exemption, inference or blind spot"
    proto = record["proto"]
    if proto not in _PROTOS:
        return f"unknown proto {proto[:32]!r}"
    try:
        ts = datetime.fromisoformat(record["ts"]).timestamp()
    except ValueError:
        return "invalid 'ts'"
    frame = get("frame")
    if frame is not None and (type(frame) is not int or frame < 1):
        return "invalid 'frame'"
    mac, ip, hostname, category = get("client_mac"), get("client_ip"), get("hostname"), get("category")
    for value in (mac, ip, hostname, category):
        if value is not None and type(value) is not str:
            return "invalid address, hostname or category"
    answer_pcap = answer_frame = None
    evidence = get("evidence")
    if type(evidence) is dict and evidence.get("kind") == DNS_ANSWER_ADDRESS:
        answer_pcap, answer_frame = evidence.get("pcap"), evidence.get("frame")
        if type(answer_pcap) is not str or type(answer_frame) is not int or answer_frame < 1:
            return "invalid 'evidence'"
    device_class, owner, department = get("device_class"), get("owner"), get("department")
    for value in (device_class, owner, department):
        if value is not None and type(value) is not str:
            return "invalid device_class, owner or department"
    return Event(ts, proto, record["name"], category or "unknown", decision, record["device"], mac, ip, hostname,
                 record["segment"], record["pcap"], frame, get("ech") is True, answer_pcap, answer_frame,
                 device_class, owner, department, get("seen") == "response-only")


def _evidence(event: Event) -> Evidence:
    return Evidence(event.ts, event.proto, event.name, event.category, event.decision, event.pcap, event.frame,
                    event.answer_pcap, event.answer_frame)


@dataclass(slots=True)
class BoundedSet:
    """The first ``cap`` distinct values in order of appearance; ``more`` once one was dropped."""

    cap: int
    values: dict[str, None] = field(default_factory=dict)
    more: bool = False

    def add(self, value: str | None) -> None:
        if value is None or value in self.values:
            return
        if len(self.values) < self.cap:
            self.values[value] = None
        else:
            self.more = True

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class Histogram:
    """Event counts over time at the finest resolution that fits ``cap`` buckets.

    Buckets are ``width`` seconds long and aligned to the epoch; ``width`` starts at one
    second and doubles (merging neighbours) whenever a new bucket would exceed the cap, so
    memory is bounded whatever the span, and resolution only drops for long, busy spans.
    """

    cap: int = HISTOGRAM_BUCKETS
    width: int = 1
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ts: float, n: int = 1) -> None:
        index = int(ts // self.width)
        counts = self.counts
        # Ends: each round doubles the width, so the buckets eventually merge into one.
        while index not in counts and len(counts) >= self.cap:
            self.width *= 2
            merged: dict[int, int] = {}
            for i, c in counts.items():
                merged[i // 2] = merged.get(i // 2, 0) + c
            counts = self.counts = merged
            index = int(ts // self.width)
        counts[index] = counts.get(index, 0) + n

    def buckets(self) -> list[tuple[float, int]]:
        """``(start time, count)`` in time order."""
        return [(i * self.width, c) for i, c in sorted(self.counts.items())]


@dataclass(slots=True)
class Device:
    """Everything the report says about one device."""

    device: str
    first: float
    last: float
    macs: BoundedSet = field(default_factory=lambda: BoundedSet(4))
    ips: BoundedSet = field(default_factory=lambda: BoundedSet(MAX_IPS))
    hostnames: BoundedSet = field(default_factory=lambda: BoundedSet(MAX_HOSTNAMES))
    segments: BoundedSet = field(default_factory=lambda: BoundedSet(MAX_SEGMENTS_PER_DEVICE))
    violations: int = 0
    exempt: int = 0
    inferred: int = 0  # TikTok names inferred from a DNS answer's address, not seen
    notices: int = 0  # matches the policy makes notices for the device's class (a personal phone)
    device_class: str | None = None  # from the inventory: the last event's
    owner: str | None = None
    department: str | None = None
    protos: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    names: Counter[str] = field(default_factory=Counter)
    other_names: int = 0
    blind: Counter[str] = field(default_factory=Counter)  # blind-spot events by category
    ech: int = 0  # events whose ClientHello was encrypted (ECH): the real name may be another
    blind_evidence: list[Evidence] = field(default_factory=list)
    timeline: Histogram = field(default_factory=Histogram)
    # Max-heap of the earliest events by (time, input order), as negated keys.
    _heap: list[tuple[float, int, Evidence]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return self.violations + self.exempt + self.inferred + self.notices

    def evidence(self) -> list[Evidence]:
        """The kept events, earliest first (ties in input order)."""
        return [item[2] for item in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]

    @property
    def evidence_omitted(self) -> int:
        return self.events - len(self._heap)


@dataclass(slots=True)
class CaptureEvents:
    """What the events say about one capture (its file may be elsewhere or gone)."""

    events: int = 0
    first: float | None = None
    last: float | None = None


class ReportModel:
    """Feed it events with ``add``; it keeps only what the report shows."""

    def __init__(self, evidence_per_device: int = EVIDENCE_PER_DEVICE, max_devices: int = MAX_DEVICES) -> None:
        if evidence_per_device < 0:
            raise ValueError("evidence_per_device must not be negative")
        self.evidence_per_device = evidence_per_device
        self.max_devices = max_devices
        self.devices: dict[str, Device] = {}
        self.untracked_events = 0  # events of devices beyond max_devices
        self.events = 0  # violations, exempt and inferred matches
        self.violations = 0
        self.exempt = 0
        self.inferred = 0
        self.notices = 0
        self.blind_spots = 0
        self.response_only = 0  # events whose name came from a DNS answer alone (a one-way tap)
        self.blind_categories: Counter[str] = Counter()
        self.protos: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.segment_days: Counter[tuple[str, int]] = Counter()  # violations per (segment, UTC day)
        self.segments: dict[str, None] = {}
        self.captures: dict[str, CaptureEvents] = {}
        self._seq = 0

    @property
    def apps(self) -> list[str]:
        """Categories of other ByteDance apps among the events (the report says they are not TikTok)."""
        return [c for c in BYTEDANCE_APP_CATEGORIES if self.categories[c]]

    def add(self, event: Event) -> None:
        if event.decision == "blind-spot":
            self._add_blind_spot(event)
            return
        self.events += 1
        self.response_only += event.response_only
        ts = event.ts
        self.first = ts if self.first is None or ts < self.first else self.first
        self.last = ts if self.last is None or ts > self.last else self.last
        self.protos[event.proto] += 1
        self.categories[event.category] += 1
        segment = event.segment if event.segment in self.segments or len(self.segments) < MAX_SEGMENTS else OTHER
        self.segments.setdefault(segment, None)
        if event.decision == "violation":
            self.violations += 1
            self.segment_days[(segment, int(ts // SECONDS_PER_DAY))] += 1
        elif event.decision == "inferred":
            self.inferred += 1
        elif event.decision == "notice":
            self.notices += 1
        else:
            self.exempt += 1
        self._add_capture(event)
        device = self._device(event)
        if device is not None:
            self._add_to_device(device, event, segment)

    def _add_blind_spot(self, event: Event) -> None:
        """A place the sensor was blind: counted per device and category, its first events
        kept as evidence; not a TikTok event (no timeline, totals or segment days)."""
        self.blind_spots += 1
        self.blind_categories[event.category] += 1
        device = self._device(event)
        if device is None:
            return
        in_bounds = event.segment in self.segments or len(self.segments) < MAX_SEGMENTS
        self._note_device(device, event, event.segment if in_bounds else OTHER)
        device.blind[event.category] += 1
        device.ech += event.ech
        if len(device.blind_evidence) < BLIND_EVIDENCE_PER_DEVICE:
            device.blind_evidence.append(_evidence(event))

    def _device(self, event: Event) -> Device | None:
        """The event's device, made at its first event; None beyond ``max_devices``."""
        device = self.devices.get(event.device)
        if device is None:
            if len(self.devices) >= self.max_devices:
                self.untracked_events += 1
                return None
            device = self.devices[event.device] = Device(event.device, event.ts, event.ts)
        return device

    def _note_device(self, device: Device, event: Event, segment: str) -> None:
        """Times, addresses, hostnames and segments: what every event tells of its device."""
        ts = event.ts
        if ts < device.first:
            device.first = ts
        if ts > device.last:
            device.last = ts
        for bounded, value in ((device.macs, event.client_mac), (device.ips, event.client_ip),
                               (device.hostnames, event.hostname), (device.segments, segment)):
            if value is not None and value not in bounded.values:
                bounded.add(value)
        if event.device_class is not None:
            device.device_class, device.owner, device.department = event.device_class, event.owner, event.department

    def _add_capture(self, event: Event) -> None:
        name = event.pcap if event.pcap in self.captures or len(self.captures) < MAX_CAPTURES else OTHER
        capture = self.captures.get(name)
        if capture is None:
            capture = self.captures[name] = CaptureEvents()
        capture.events += 1
        capture.first = event.ts if capture.first is None else min(capture.first, event.ts)
        capture.last = event.ts if capture.last is None else max(capture.last, event.ts)

    def _add_to_device(self, device: Device, event: Event, segment: str) -> None:
        ts = event.ts
        self._note_device(device, event, segment)
        device.ech += event.ech
        if event.decision == "violation":
            device.violations += 1
        elif event.decision == "inferred":
            device.inferred += 1
        elif event.decision == "notice":
            device.notices += 1
        else:
            device.exempt += 1
        device.protos[event.proto] += 1
        device.categories[event.category] += 1
        names = device.names
        if event.name in names or len(names) < MAX_NAMES_PER_DEVICE:
            names[event.name] += 1
        else:
            device.other_names += 1
        device.timeline.add(ts)
        keep = self.evidence_per_device
        if not keep:
            return
        self._seq += 1
        heap = device._heap
        if len(heap) >= keep and -ts <= heap[0][0]:
            return  # not earlier than the latest event kept (ties keep input order)
        item = (-ts, -self._seq, _evidence(event))
        if len(heap) < keep:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)

    def violators(self) -> list[Device]:
        """Devices with at least one violation, most violations first."""
        return sorted((d for d in self.devices.values() if d.violations),
                      key=lambda d: (-d.violations, d.first, d.device))

    def exempt_only(self) -> list[Device]:
        """Devices with no violation whose matches were exempt, inferred or notices."""
        return sorted((d for d in self.devices.values() if not d.violations and (d.exempt or d.inferred or d.notices)),
                      key=lambda d: (-d.exempt - d.inferred - d.notices, d.device))

    def blind_only(self) -> list[Device]:
        """Devices with blind spots and no TikTok match: clean only as far as the sensor saw."""
        return sorted((d for d in self.devices.values() if d.blind and not d.events),
                      key=lambda d: (-sum(d.blind.values()), d.device))

    def with_blind_spots(self) -> list[Device]:
        """Every device with a blind spot (ECH counts), the most first."""
        return sorted((d for d in self.devices.values() if d.blind or d.ech),
                      key=lambda d: (-sum(d.blind.values()) - d.ech, d.device))
