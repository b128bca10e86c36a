"""Fuzz the address-binding parsers (DHCP and ARP) and the device table they feed.

The first input byte picks the parser (even: ``parse_dhcp`` over a UDP 67/68 payload,
odd: ``parse_arp`` over an ARP body); the rest is the packet. A binding that comes out is
learnt by a small ``DeviceTable`` that already holds other devices, so eviction runs too.

Run alone: ``.venv/bin/python fuzz/fuzz_binding.py fuzz/corpus/binding -dict=fuzz/dicts/binding.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only binding``).

What counts as a finding: any exception; a MAC that is not six colon-separated octets;
an IP that is not a dotted IPv4 address; a hostname that is not one printable line (it
is shown in the summary table and reports) or is longer than MAX_HOSTNAME bytes allowed;
and a device table that, right after learning a binding, does not answer with it or
grows past its bound.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.devices import DeviceTable
    from detector.extract.binding import MAX_HOSTNAME, Binding, parse_arp, parse_dhcp

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
#: Devices already in the table, one of them on the address a fuzzed binding may take.
_KNOWN = (
    Binding("02:00:00:00:00:01", "198.18.10.1", "alice-phone"),
    Binding("02:00:00:00:00:02", "198.18.10.2", None),
)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    binding = parse_dhcp(data[1:]) if data[0] & 1 == 0 else parse_arp(data[1:])
    if binding is None:
        return
    assert _MAC.match(binding.mac), binding.mac
    assert binding.ip is not None or binding.hostname is not None, binding
    if binding.ip is not None:
        assert isinstance(ipaddress.ip_address(binding.ip), ipaddress.IPv4Address), binding.ip
    if binding.hostname is not None:
        # Escaped bytes take four characters each.
        assert 0 < len(binding.hostname) <= 4 * MAX_HOSTNAME, binding.hostname
        assert binding.hostname.isprintable(), binding.hostname

    table = DeviceTable(max_entries=2)
    for known in _KNOWN:
        table.learn(known)
    table.learn(binding)
    assert len(table) <= 2 * table.max_entries
    if binding.hostname is not None:
        assert table.hostname(binding.mac, "0.0.0.0") == binding.hostname
        if binding.ip is not None:
            assert table.hostname(None, binding.ip) == binding.hostname
    elif binding.ip is not None:
        assert table.hostname(None, binding.ip) == table.hostname(binding.mac, binding.ip)


def seeds() -> Iterator[bytes]:
    """DHCP payloads (UDP between ports 67 and 68) behind a 0, ARP bodies behind a 1."""
    from seeds import packets

    from detector.decode import ARP, IPPROTO_UDP

    for packet in packets():
        if packet.l4 == ARP:
            yield b"\x01" + packet.payload
        elif packet.l4 == IPPROTO_UDP and {packet.sport, packet.dport} <= {67, 68}:
            yield b"\x00" + packet.payload


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
