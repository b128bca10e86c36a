"""Coverage: per device, how many of its connections showed the sensor a name.

An audit that finds no TikTok name on a device must also say how much of that device's
traffic could have shown one. Every TCP connection whose first message the sensor read
and every QUIC connection whose Initial it decrypted ends in one outcome:

- ``named``: a server name was seen (TLS or QUIC SNI, HTTP Host);
- ``ech``: the ClientHello carried Encrypted ClientHello: only its public (outer) name
  was seen, the real one may differ;
- ``no-name``: a ClientHello without a server name, or one that could not be read;
- ``other``: the first message was neither TLS nor HTTP (SSH, a proprietary protocol);
- ``tunnel``: a VPN handshake (WireGuard, IKE, OpenVPN): what follows shows no name.

Beside its outcome a TCP connection whose SYN was read but never answered by a SYN-ACK
counts as ``one-way``: the tap saw the client's side only (asymmetric routing, a one-way
SPAN), so whatever the server said is missing from the audit.

A device's share of ``named`` connections is its coverage. The extractor counts outcomes
per client in a ``CoverageTable`` (bounded: clients beyond it are counted in the totals,
not per device); at the end of a replay the writer, which knows the policy and the
address bindings, turns the clients into ``DeviceCoverage`` records for the run record
and the report. Only devices the outputs already name (those with an event: a violation,
an exemption, an inference or a blind spot) get a record of their own; the others of a
segment are summed into one record that names none of them, since the sensor writes
nothing about a device the policy has nothing to say about. A connection is counted once, at its first message: a keep-alive
connection's later requests, and retransmissions, are not connections of their own.
DNS lookups are not connections here: their names are the observations themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass

NAMED, ECH, NO_NAME, OTHER, TUNNEL = "named", "ech", "no-name", "other", "tunnel"
OUTCOMES = (NAMED, ECH, NO_NAME, OTHER, TUNNEL)
#: Not an outcome: how many of the connections were seen from the client's side only.
ONE_WAY = "one-way"
ONE_WAY_KEY = "connections.one_way"
#: The counter of each outcome over all clients (exported as ``connections_total{outcome}``).
OUTCOME_KEYS = {outcome: f"connections.{outcome.replace('-', '_')}" for outcome in OUTCOMES}
#: Connections of clients the full table could not hold: in the totals, not per device.
UNTRACKED = "coverage.untracked"
ENTRIES = "coverage.clients"
#: Clients whose connections are counted one by one (as many as the device table holds).
MAX_CLIENTS = 65536

_INDEX = {outcome: i for i, outcome in enumerate(OUTCOMES)}


Client = tuple[bytes | None, bytes, int | None]


class CoverageTable:
    """Outcome counts per client address: (MAC, IP, VLAN) as the frames gave them, raw,
    formatted only at the end. The writer sums them per device (the MAC, as events name
    a device, else the IP) and segment (which the IP and VLAN decide): a phone that moves
    from one segment to another is counted in each, its IPv6 addresses all in one device."""

    def __init__(self, stats: Counter[str], max_clients: int = MAX_CLIENTS) -> None:
        self.stats = stats
        self.max_clients = max_clients
        self.clients: dict[Client, list[int]] = {}  # counts in OUTCOMES order, then one-way

    def count(self, mac: bytes | None, ip: bytes, vlan: int | None, outcome: str, one_way: bool = False) -> None:
        self.stats[OUTCOME_KEYS[outcome]] += 1
        if one_way:
            self.stats[ONE_WAY_KEY] += 1
        key = (mac, ip, vlan)
        counts = self.clients.get(key)
        if counts is None:
            if len(self.clients) >= self.max_clients:
                self.stats[UNTRACKED] += 1
                return
            counts = self.clients[key] = [0] * (len(OUTCOMES) + 1)
        counts[_INDEX[outcome]] += 1
        counts[-1] += one_way

    def export(self) -> dict[Client, list[int]]:
        """The table as plain data, for a worker to send to the process that merges."""
        return self.clients

    def merge(self, clients: Mapping[Client, list[int]]) -> None:
        """Add another table's clients (a worker's share of the same captures)."""
        for key, other in clients.items():
            counts = self.clients.get(key)
            if counts is None:
                if len(self.clients) >= self.max_clients:
                    self.stats[UNTRACKED] += sum(other[:-1])
                    continue
                self.clients[key] = list(other)
            else:
                for i, n in enumerate(other):
                    counts[i] += n

    def snapshot(self) -> dict[str, float]:
        return {ENTRIES: len(self.clients)}


@dataclass(frozen=True, slots=True)
class DeviceCoverage:
    """One device's connections by outcome in one segment (``connections`` may also hold
    ``one-way``: how many of them were seen from the client's side only); with ``device``
    None, those of ``devices`` devices of the segment summed, unnamed (the devices without
    an event, or a whole segment's)."""

    device: str | None
    segment: str
    hostname: str | None
    connections: Mapping[str, int]
    devices: int = 1

    @property
    def total(self) -> int:
        return sum(n for outcome, n in self.connections.items() if outcome != ONE_WAY)

    @property
    def named(self) -> int:
        return self.connections.get(NAMED, 0)

    @property
    def one_way(self) -> int:
        return self.connections.get(ONE_WAY, 0)


def by_device(
    table: CoverageTable, describe: Callable[[bytes | None, bytes, int | None], tuple[str, str, str | None]],
    named: Container[str] | None = None,
) -> list[DeviceCoverage]:
    """The table's clients summed per device and segment: ``describe(mac, ip, vlan)`` gives
    a client's device name (as events name it), segment and hostname, from the writer's
    policy and bindings. Devices not in ``named`` (None: every device is) are summed per
    segment into one unnamed record, listed after the named ones."""
    sums: dict[tuple[str, str], tuple[str | None, Counter[str]]] = {}
    for (mac, ip, vlan), counts in table.clients.items():
        device, segment, hostname = describe(mac, ip, vlan)
        known, total = sums.get((device, segment), (None, Counter()))
        total.update({o: n for o, n in zip((*OUTCOMES, ONE_WAY), counts) if n})
        sums[device, segment] = (hostname or known, total)
    rows, others = [], {}
    for (device, segment), (hostname, counts) in sorted(sums.items()):
        if named is None or device in named:
            rows.append(DeviceCoverage(device, segment, hostname, dict(counts)))
        else:
            devices, total = others.get(segment, (0, Counter()))
            others[segment] = (devices + 1, total + counts)
    rows.extend(DeviceCoverage(None, segment, None, dict(counts), devices)
                for segment, (devices, counts) in sorted(others.items()))
    return rows


def by_segment(devices: Iterable[DeviceCoverage]) -> list[DeviceCoverage]:
    """The devices' counts summed per segment, in segment name order."""
    sums: dict[str, Counter[str]] = {}
    counts: Counter[str] = Counter()
    for device in devices:
        sums.setdefault(device.segment, Counter()).update(device.connections)
        counts[device.segment] += device.devices
    return [DeviceCoverage(None, segment, None, dict(sums[segment]), counts[segment]) for segment in sorted(sums)]


def share(named: int, total: int) -> str:
    """``87 %``, or ``-`` for no connection: a rounded share that never shows 100 % (or
    0 %) unless every (or no) connection was named."""
    if not total:
        return "-"
    percent = 100 * named / total
    shown = round(percent)
    if shown == 100 and named < total:
        shown = 99
    elif shown == 0 and named:
        shown = 1
    return f"{shown} %"
