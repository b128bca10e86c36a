"""Fuzz the VPN handshake recognisers, and hold the skim to keeping what they recognise.

Run alone: ``.venv/bin/python fuzz/fuzz_tunnels.py fuzz/corpus/tunnels -dict=fuzz/dicts/tunnels.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only tunnels``).

Input: two bytes choosing the destination port (500, 4500, 1194, 853, 1723 or the bytes
themselves), then a UDP payload, also read as the start of a TCP stream. What counts as a
finding: any exception; a result that is not None or one of the protocols; and a datagram
Python recognises that the C skim drops (the skim keeps every frame the recognisers may
name, and drops the rest of UDP as bulk).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.tunnels import recognise_tcp, recognise_udp
    from detector.records import HANDSHAKE_PROTOS
    from detector.skim import KEPT, new_skimmer

PORTS = (500, 4500, 1194, 853, 1723)
_SRC, _DST = bytes([198, 18, 10, 21]), bytes([198, 19, 7, 1])
_SKIMMER = new_skimmer(frozenset({53}), frozenset({443}), 16)


def _frame(payload: bytes, dport: int) -> bytes:
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, _SRC, _DST)
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + udp


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    dport = PORTS[data[0] % len(PORTS)] if data[1] & 0x80 else data[0] << 8 | data[1]
    payload = data[2:2048]
    found = recognise_udp(payload, 40000, dport)
    assert found is None or found in HANDSHAKE_PROTOS, found
    assert recognise_tcp(payload, dport) in (None, "openvpn", "pptp")
    frame = _frame(payload, dport)
    record = struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame
    kept = _SKIMMER.walk_pcap(record, 0, len(record), False, False, 1)[3]
    if found is not None and dport not in (53, 67, 68, 443):
        assert len(kept) == KEPT.size, (found, dport)


def seeds() -> Iterator[bytes]:
    """UDP payloads of the seed captures to the recognisers' ports or of WireGuard's length."""
    from seeds import packets

    from detector.decode import IPPROTO_UDP

    for packet in packets():
        if packet.l4 == IPPROTO_UDP and (packet.dport in PORTS or len(packet.payload) == 148):
            yield bytes([PORTS.index(packet.dport) if packet.dport in PORTS else 3, 0x80]) + packet.payload[:2046]
    start = (156).to_bytes(2, "big") + bytes.fromhex("00011a2b3c4d0001") + bytes(146)
    yield bytes([PORTS.index(1723), 0x80]) + start  # a PPTP Start-Control-Connection-Request


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
