"""Fuzz the TLS ClientHello parser: the bytes as a TCP stream of TLS records, and as one
bare handshake message (the form QUIC CRYPTO frames carry).

Run alone: ``.venv/bin/python fuzz/fuzz_clienthello.py fuzz/corpus/clienthello
-dict=fuzz/dicts/clienthello.dict`` (seed it first with
``.venv/bin/python fuzz/run.py --seeds-only clienthello``).

What counts as a finding: any exception; a status other than the three documented ones,
or a hello without DONE; a server name that is not one printable line of at most
MAX_NAME characters, or more than MAX_ALPN protocols; a final answer (DONE or NOT_TLS)
for the first half of a stream that the whole stream contradicts; and a handshake
message that reads differently once cut into records (the record layer may split a
hello anywhere).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.clienthello import (
        DONE,
        MAX_ALPN,
        MAX_HELLO,
        MAX_NAME,
        NEED_MORE,
        NOT_TLS,
        ClientHello,
        client_hello_from_records,
        parse_client_hello,
    )


def check_hello(hello: ClientHello | None) -> None:
    if hello is None:
        return
    if hello.sni is not None:
        sni = hello.sni
        assert 0 < len(sni) <= MAX_NAME and sni.isprintable() and not sni.endswith("."), sni
        assert sni == sni.lower(), sni
    assert len(hello.alpn) <= MAX_ALPN and all(hello.alpn), hello.alpn
    assert all(0 <= v <= 0xFFFF for v in hello.versions), hello.versions


def as_records(message: bytes, size: int) -> bytes:
    """``message`` cut into handshake records of at most ``size`` bytes each."""
    return b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (message[i : i + size] for i in range(0, len(message), size))
    )


def TestOneInput(data: bytes) -> None:
    status, hello = client_hello_from_records(data)
    assert status in (NEED_MORE, DONE, NOT_TLS), status
    assert hello is None or status == DONE
    check_hello(hello)
    # DONE and NOT_TLS are final: the caller stops feeding the flow, so more bytes must
    # not have changed the answer.
    head_status, head_hello = client_hello_from_records(data[: len(data) // 2])
    if head_status != NEED_MORE:
        assert (head_status, head_hello) == (status, hello), (head_status, status)

    direct = parse_client_hello(data)
    check_hello(direct)
    if data and data[0] == 1 and len(data) >= 4:
        declared = int.from_bytes(data[1:4], "big")
        size = 1 + data[-1] % 64
        framed = client_hello_from_records(as_records(data, size))
        if declared > MAX_HELLO:
            assert framed == (NOT_TLS, None), framed
        elif len(data) >= 4 + declared:
            assert framed == (DONE, direct), (framed, direct)
        else:
            assert framed == (NEED_MORE, None), framed


#: A hello is at most a few kB; the rest of a flow only slows the fuzzer down.
MAX_SEED = 8192


def seeds() -> Iterator[bytes]:
    """TLS streams of the seed captures: each TCP flow's first client bytes that start
    a handshake record (segments joined in sequence order), and the handshake message
    inside a one-record hello for the bare-message parser."""
    from seeds import packets

    from detector.decode import IPPROTO_TCP

    flows: dict[tuple[bytes, bytes, int, int], dict[int, bytes]] = {}
    for packet in packets():
        if packet.l4 != IPPROTO_TCP or not packet.payload:
            continue
        key = (packet.src_ip, packet.dst_ip, packet.sport, packet.dport)
        flows.setdefault(key, {}).setdefault(packet.seq, packet.payload)
    for segments in flows.values():
        stream = b"".join(segments[seq] for seq in sorted(segments))[:MAX_SEED]
        if not stream.startswith(b"\x16\x03"):
            continue
        yield stream
        length = int.from_bytes(stream[3:5], "big")
        yield stream[5 : 5 + length]


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
