"""The device table: MAC <-> IP <-> hostname, learnt from DHCP and ARP as the capture goes.

Bindings change over time (leases expire, addresses move); the table keeps the latest
one, which in a capture read in order is the one in force at the packet being looked
at. Both maps are bounded: the oldest binding is evicted first, and evictions counted.
"""

from __future__ import annotations

from collections import OrderedDict

from detector.extract.binding import Binding


class DeviceTable:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._mac_by_ip: OrderedDict[str, str] = OrderedDict()
        self._name_by_mac: OrderedDict[str, str] = OrderedDict()
        self.evicted = 0
        self.learnt = 0

    def learn(self, binding: Binding) -> None:
        self.learnt += 1
        if binding.ip is not None:
            self._put(self._mac_by_ip, binding.ip, binding.mac)
        if binding.hostname is not None:
            self._put(self._name_by_mac, binding.mac, binding.hostname)

    def hostname(self, mac: str | None, ip: str) -> str | None:
        """The name a device gave itself in DHCP, found by its MAC or else by its IP's MAC."""
        if mac is None:
            mac = self._mac_by_ip.get(ip)
            if mac is None:
                return None
        return self._name_by_mac.get(mac)

    def __len__(self) -> int:
        return len(self._mac_by_ip) + len(self._name_by_mac)

    def _put(self, table: OrderedDict[str, str], key: str, value: str) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.max_entries:
            table.popitem(last=False)
            self.evicted += 1
