"""Fuzz the address-binding parsers (DHCP, DHCPv6, ARP, neighbour discovery) and the device
table they feed.

The first input byte picks the parser (by its value modulo 4: 0 ``parse_dhcp`` over a UDP
67/68 payload, 1 ``parse_arp`` over an ARP body, 2 ``parse_dhcpv6`` over a UDP 546/547
payload, 3 ``parse_ndp`` over an ICMPv6 message); the rest is the packet. The bindings
that come out are learnt by a small ``DeviceTable`` that already holds other devices and an
inventory, so eviction and identification run too.

Run alone: ``.venv/bin/python fuzz/fuzz_binding.py fuzz/corpus/binding -dict=fuzz/dicts/binding.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only binding``).

What counts as a finding: any exception; a MAC that is not six colon-separated octets
(or a binding with neither MAC nor DUID); an IP that is not an address of the parser's
family; a hostname, FQDN or vendor class that is not one printable line (they are shown
in the summary table and reports) or is longer than the bound; a client id or DUID that
is not colon-separated hex; and a device table that, right after learning a binding, does
not answer with it, grows past its bound, or names a device outside the inventory.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.devices import DeviceTable
    from detector.extract.binding import (
        MAX_DUID, MAX_HOSTNAME, Binding, parse_arp, parse_dhcp, parse_dhcpv6, parse_ndp,
    )
    from detector.inventory import Entry, _indexed

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
_HEX = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2})*\Z")
_SRC_MAC, _DST_MAC = b"\x02\x16\x00\x00\x00\x01", b"\x00\x16\x3e\x00\x00\x02"
_SRC_IP6 = bytes.fromhex("fd000198001801000000000000000123")
#: Devices already in the table, one of them on the address a fuzzed binding may take.
_KNOWN = (
    Binding("02:00:00:00:00:01", "198.18.10.1", "alice-phone", client_id="01:02:00:00:00:00:01"),
    Binding("02:00:00:00:00:02", "198.18.10.2", None),
    Binding(None, "fd00:198:18:100::123", None, duid="00:03:00:01:02:16:00:00:00:01"),
)
_INVENTORY = _indexed([
    Entry("A1", "official", "alice", "IT", macs=("02:00:00:00:00:01",)),
    Entry("A2", "personal", "bob", "HR", duids=("00:03:00:01:02:16:00:00:00:01",)),
    Entry("A3", "unknown", None, None, hostname="lab-pc"),
], "fuzz", None)
_IDS = {entry.id for entry in _INVENTORY.entries}


def _parse(data: bytes) -> tuple[tuple[Binding, ...], int]:
    kind, body = data[0] % 4, data[1:]
    if kind == 0:
        found = parse_dhcp(body)
    elif kind == 1:
        found = parse_arp(body)
    elif kind == 2:
        return parse_dhcpv6(body, _SRC_MAC, _DST_MAC), 6
    else:
        found = parse_ndp(body, _SRC_IP6, _SRC_MAC)
        return ((found,) if found is not None else ()), 6
    return ((found,) if found is not None else ()), 4


def _check_text(value: str | None, bound: int) -> None:
    if value is not None:
        # Escaped bytes take four characters each.
        assert 0 < len(value) <= 4 * bound, value
        assert value.isprintable(), value


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    bindings, version = _parse(data)
    for binding in bindings:
        assert binding.mac is not None or binding.duid is not None, binding
        assert binding.mac is None or _MAC.match(binding.mac), binding.mac
        if binding.ip is not None:
            assert ipaddress.ip_address(binding.ip).version == version, binding.ip
        for text in (binding.hostname, binding.fqdn, binding.vendor_class):
            _check_text(text, MAX_HOSTNAME)
        for ident in (binding.client_id, binding.duid):
            assert ident is None or (_HEX.match(ident) and len(ident) <= 3 * 255), ident
        assert binding.duid is None or len(binding.duid) <= 3 * MAX_DUID, binding.duid

        table = DeviceTable(max_entries=2, inventory=_INVENTORY)
        for known in _KNOWN:
            table.learn(known)
        table.learn(binding)
        assert len(table) <= 4 * table.max_entries
        if binding.mac is not None and binding.hostname is not None:
            assert table.hostname(binding.mac, "0.0.0.0") == binding.hostname
            if binding.ip is not None:
                assert table.hostname(None, binding.ip) == binding.hostname
        elif binding.mac is not None and binding.ip is not None:
            assert table.hostname(None, binding.ip) == table.hostname(binding.mac, binding.ip)
        if binding.ip is not None:
            info = table.identify(None, binding.ip)
            assert info.inventory_id is None or info.inventory_id in _IDS, info
            if binding.client_id is not None and binding.mac is not None and info.inventory_id is None:
                assert info.id == f"client-id:{binding.client_id}", info


def _crafted() -> Iterator[bytes]:
    """DHCPv6 and neighbour-discovery messages built with scapy (captures hold few)."""
    from scapy.layers.dhcp6 import (
        DHCP6_RelayReply, DHCP6_Reply, DHCP6_Solicit, DHCP6OptClientFQDN, DHCP6OptClientId,
        DHCP6OptClientLinkLayerAddr, DHCP6OptIA_NA, DHCP6OptIA_TA, DHCP6OptIAAddress, DHCP6OptRelayMsg, DUID_LL,
    )
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr

    duid = DHCP6OptClientId(duid=DUID_LL(lladdr="02:16:00:00:00:01"))
    address = DHCP6OptIAAddress(addr="fd00::123", preflft=300, validlft=600)
    reply = DHCP6_Reply(trid=1) / duid / DHCP6OptIA_NA(iaid=1, ianaopts=[address]) / DHCP6OptIA_TA(
        iaid=2, iataopts=[address])
    yield b"\x02" + bytes(DHCP6_Solicit(trid=1) / duid / DHCP6OptClientFQDN(flags=1, fqdn=b"\x03fin\x02pc\x00"))
    yield b"\x02" + bytes(reply)
    yield b"\x02" + bytes(DHCP6_RelayReply(linkaddr="fd00::1", peeraddr="fe80::1") / DHCP6OptRelayMsg(
        message=reply) / DHCP6OptClientLinkLayerAddr(clladdr="02:16:00:00:00:01"))
    yield b"\x03" + bytes(ICMPv6ND_NA(tgt="fd00::5") / ICMPv6NDOptDstLLAddr(lladdr="02:16:00:00:00:01"))
    yield b"\x03" + bytes(ICMPv6ND_NS(tgt="fd00::6") / ICMPv6NDOptSrcLLAddr(lladdr="02:16:00:00:00:01"))
    yield b"\x03" + bytes(ICMPv6ND_NS(tgt="fd00::7"))


def seeds() -> Iterator[bytes]:
    """DHCP payloads (UDP between ports 67 and 68) behind a 0, ARP bodies behind a 1,
    DHCPv6 payloads behind a 2, neighbour discovery behind a 3."""
    from seeds import packets

    from detector.decode import ARP, IPPROTO_ICMPV6, IPPROTO_UDP

    for packet in packets():
        if packet.l4 == ARP:
            yield b"\x01" + packet.payload
        elif packet.l4 == IPPROTO_UDP and {packet.sport, packet.dport} <= {67, 68}:
            yield b"\x00" + packet.payload
        elif packet.l4 == IPPROTO_UDP and {packet.sport, packet.dport} <= {546, 547}:
            yield b"\x02" + packet.payload
        elif packet.l4 == IPPROTO_ICMPV6:
            yield b"\x03" + packet.payload
    yield from _crafted()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
