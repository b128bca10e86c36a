"""Fuzz the DNS parser: one message as a UDP payload, and the same bytes as a TCP stream.

Run alone: ``.venv/bin/python fuzz/fuzz_dns.py fuzz/corpus/dns -dict=fuzz/dicts/dns.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only dns``).

What counts as a finding: any exception (the parser must answer None or a message flagged
malformed), a name that is not one safe line of text, and an answer address that is not 4
or 16 bytes, or more addresses than the message has bytes for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.dns import parse_dns, split_tcp_messages


def TestOneInput(data: bytes) -> None:
    message = parse_dns(data)
    if message is not None:
        for name in message.questions + message.answers:
            assert name.isprintable() and len(name) <= 4 * 255, name
        # Each A or AAAA record takes at least 15 bytes (a pointer, the fixed fields, the address).
        assert len(message.addresses) * 15 <= len(data), len(message.addresses)
        for address, ttl in message.addresses:
            assert len(address) in (4, 16) and 0 <= ttl < 1 << 32, (address, ttl)
    messages, used = split_tcp_messages(data)
    assert 0 <= used <= len(data)
    for one in messages:
        parse_dns(one)


def seeds() -> Iterator[bytes]:
    """DNS payloads of the seed captures (UDP and TCP port 53, 5353, 5355)."""
    from seeds import packets

    for packet in packets():
        if {packet.sport, packet.dport} & {53, 5353, 5355} and packet.payload:
            yield packet.payload


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
