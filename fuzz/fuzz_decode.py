"""Fuzz the link and IP decoder: one frame of any link type it knows, or of one it does not.

Run alone: ``.venv/bin/python fuzz/fuzz_decode.py fuzz/corpus/decode -dict=fuzz/dicts/decode.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only decode``).

The first input byte picks the link type (modulo the known ones and one unknown), the
rest is the frame.

What counts as a finding: any exception; a dropped frame not counted exactly once under
a ``skip.`` key, or a decoded one counted at all; an ICMPv6 packet other than a neighbour
solicitation or advertisement over IPv6; a packet whose fields do not fit their
wire sizes, or whose payload is not bytes of the frame.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.decode import (
        ARP, ICMPV6_NEIGHBOR_TYPES, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SUPPORTED_LINKTYPES, decode,
    )

#: DLT_USER0: a link type nobody decodes.
UNKNOWN_LINKTYPE = 147
LINKTYPES = (*sorted(SUPPORTED_LINKTYPES), UNKNOWN_LINKTYPE)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    linktype, frame = LINKTYPES[data[0] % len(LINKTYPES)], data[1:]
    stats: Counter[str] = Counter()
    packet = decode(linktype, frame, stats)
    if packet is None:
        assert sum(stats.values()) == 1 and next(iter(stats)).startswith("skip."), stats
        return
    assert not stats, stats
    assert packet.l4 in (IPPROTO_TCP, IPPROTO_UDP, ARP, IPPROTO_ICMPV6), packet.l4
    assert type(packet.payload) is bytes and packet.payload in frame
    for mac in (packet.src_mac, packet.dst_mac):
        assert mac is None or len(mac) == 6, mac
    assert packet.vlan is None or 0 <= packet.vlan < 4096, packet.vlan
    if packet.l4 == ARP:
        return
    assert len(packet.src_ip) in (4, 16) and len(packet.dst_ip) == len(packet.src_ip), packet
    if packet.l4 == IPPROTO_ICMPV6:  # only neighbour discovery, and only over IPv6
        assert len(packet.src_ip) == 16 and packet.payload[:1] and packet.payload[0] in ICMPV6_NEIGHBOR_TYPES, packet
    assert 0 <= packet.sport < 65536 and 0 <= packet.dport < 65536
    assert 0 <= packet.seq < 1 << 32 and 0 <= packet.flags < 256


def seeds() -> Iterator[bytes]:
    """Every frame of the seed captures, its link type's index in front."""
    from seeds import frames, unique

    return iter(unique(
        bytes((LINKTYPES.index(linktype if linktype in SUPPORTED_LINKTYPES else UNKNOWN_LINKTYPE),)) + frame
        for linktype, frame in frames()
    ))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
