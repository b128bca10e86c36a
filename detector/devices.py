"""The device table: who a device is, learnt from DHCP, DHCPv6, ARP, neighbour discovery
and lease files as the capture goes, and named by the inventory.

Bindings change over time (leases expire, addresses move, phones change their MAC per
network); the table keeps the latest one, which in a capture read in order is the one in
force at the packet being looked at. A device's identity outlives its addresses: the
IPv4 and IPv6 addresses it uses lead to its MAC (DHCP, ARP, neighbour discovery) or its
DHCPv6 DUID, and those to the identifiers it gives (hostname, client identifier, FQDN,
vendor class), by which the inventory (detector/inventory.py) can name it even when its
MAC is randomised. Lease records (detector/leases.py) are scheduled and learnt when the
capture's clock reaches their start. Every map is bounded: the oldest binding is evicted
first, and evictions counted.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from detector.extract.binding import Binding, is_randomised
from detector.inventory import Inventory
from detector.records import DeviceInfo


@dataclass(frozen=True, slots=True)
class Facts:
    """What a device said of itself, by MAC (or by DUID, for DHCPv6 seen without one)."""

    hostname: str | None = None
    client_id: str | None = None
    fqdn: str | None = None
    vendor_class: str | None = None
    duid: str | None = None


_EMPTY = Facts()


class DeviceTable:
    def __init__(self, max_entries: int = 65536, inventory: Inventory | None = None) -> None:
        self.max_entries = max_entries
        self.inventory = inventory
        self._mac_by_ip: OrderedDict[str, str] = OrderedDict()
        self._duid_by_ip: OrderedDict[str, str] = OrderedDict()
        self._by_mac: OrderedDict[str, Facts] = OrderedDict()
        self._by_duid: OrderedDict[str, Facts] = OrderedDict()
        #: Lease records not yet in force: (start, order, binding), earliest first.
        self._scheduled: list[tuple[float, int, Binding]] = []
        self._order = itertools.count()
        self.evicted = 0
        self.learnt = 0

    def learn(self, binding: Binding) -> None:
        self.learnt += 1
        mac, ip, duid = binding.mac, binding.ip, binding.duid
        says = (binding.hostname or binding.client_id or binding.fqdn or binding.vendor_class or duid) is not None
        if mac is not None:
            if ip is not None:
                self._put(self._mac_by_ip, ip, mac)
            if says:
                self._put(self._by_mac, mac, _merged(self._by_mac.get(mac), binding))
        if duid is not None:
            if ip is not None:
                self._put(self._duid_by_ip, ip, duid)
            self._put(self._by_duid, duid, _merged(self._by_duid.get(duid), binding))

    def schedule(self, bindings: Iterable[Binding]) -> None:
        """Lease records, each learnt when the capture reaches its ``ts`` (None: at once)."""
        for binding in bindings:
            if binding.ts is None:
                self.learn(binding)
            else:
                heapq.heappush(self._scheduled, (binding.ts, next(self._order), binding))

    def advance(self, now: float) -> None:
        """The capture's clock reached ``now``: learn the lease records begun by then."""
        scheduled = self._scheduled
        while scheduled and scheduled[0][0] <= now:
            self.learn(heapq.heappop(scheduled)[2])

    def hostname(self, mac: str | None, ip: str) -> str | None:
        """The name a device gave itself in DHCP, found by its MAC or else by its IP's MAC."""
        return self._facts(mac, ip)[1].hostname

    def identify(self, mac: str | None, ip: str, now: float | None = None) -> DeviceInfo:
        """Who the device at ``mac`` / ``ip`` is: its identifiers, its inventory entry and
        the identity that stays while its addresses change."""
        if now is not None:
            self.advance(now)
        mac, facts = self._facts(mac, ip)
        names = (facts.hostname, facts.fqdn, facts.fqdn.split(".", 1)[0] if facts.fqdn else None)
        found = self.inventory.match(mac, facts.client_id, facts.duid, names) if self.inventory else None
        if found is not None:
            entry, how = found
            identity = entry.id
            info = DeviceInfo(identity, entry.device_class, entry.owner, entry.department, entry.id, how)
        else:
            identity = (f"client-id:{facts.client_id}" if facts.client_id else f"duid:{facts.duid}" if facts.duid
                        else mac or ip)
            info = DeviceInfo(identity)
        return replace(info, randomised_mac=mac is not None and is_randomised(mac), client_id=facts.client_id,
                       duid=facts.duid, fqdn=facts.fqdn, vendor_class=facts.vendor_class)

    def _facts(self, mac: str | None, ip: str) -> tuple[str | None, Facts]:
        """The device's MAC (given, or its IP's) and all it said of itself, by MAC and by
        the DUID its MAC or IP is bound to."""
        if mac is None:
            mac = self._mac_by_ip.get(ip)
        facts = self._by_mac.get(mac, _EMPTY) if mac is not None else _EMPTY
        duid = facts.duid or self._duid_by_ip.get(ip)
        if duid is not None:
            by_duid = self._by_duid.get(duid, _EMPTY)
            facts = Facts(facts.hostname or by_duid.hostname, facts.client_id, facts.fqdn or by_duid.fqdn,
                          facts.vendor_class, duid)
        return mac, facts

    def __len__(self) -> int:
        return len(self._mac_by_ip) + len(self._duid_by_ip) + len(self._by_mac) + len(self._by_duid)

    def _put(self, table: OrderedDict, key: str, value: object) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.max_entries:
            table.popitem(last=False)
            self.evicted += 1


def _merged(known: Facts | None, binding: Binding) -> Facts:
    """What is known, updated by what a binding says (a newer value replaces an older)."""
    known = known or _EMPTY
    return Facts(binding.hostname or known.hostname, binding.client_id or known.client_id,
                 binding.fqdn or known.fqdn, binding.vendor_class or known.vendor_class,
                 binding.duid or known.duid)
