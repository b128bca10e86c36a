"""PROXY protocol headers (HAProxy's v1 and v2) in front of the name a client sends."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from detector.extract.proxy import DONE, NEED_MORE, NOT_PROXY, V1_MAX, header_length
from detector.pipeline import Extractor, Settings
from test_pipeline import client_hello

V1 = b"PROXY TCP4 198.18.10.21 198.19.1.20 52176 443\r\n"
V2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([198, 18, 10, 21, 198, 19, 1, 20]) + struct.pack("!HH", 52176, 80)
REQUEST = b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n"


@pytest.mark.parametrize("stream, expected", [
    (V1 + REQUEST, (DONE, len(V1))),
    (b"PROXY TCP6 fd00:10::21 fd00:19::1:10 52176 443\r\nGET", (DONE, 48)),
    (b"PROXY UNKNOWN\r\n", (DONE, 15)),
    (V2 + REQUEST, (DONE, len(V2))),
    (b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", (DONE, 16)),  # LOCAL: no addresses
    (V1[:20], (NEED_MORE, 0)),
    (V2[:14], (NEED_MORE, 0)),
    (V2[:20], (NEED_MORE, 0)),  # the address block is not all there
    (b"PRO", (NEED_MORE, 0)),
    (b"PROXY TCP9 a b c d\r\n", (NOT_PROXY, 0)),
    (b"PROXY TCP4 a b 1 x\r\n", (NOT_PROXY, 0)),  # ports are numbers
    (b"PROXY TCP4 a\nb 1 2\r\n", (NOT_PROXY, 0)),  # one line
    (b"PROXY " + b"x" * V1_MAX, (NOT_PROXY, 0)),  # longer than a v1 line may be
    (b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00", (NOT_PROXY, 0)),  # version 3
    (REQUEST, (NOT_PROXY, 0)),
])
def test_header_length(stream, expected):
    assert header_length(stream) == expected


def frame(seq: int, payload: bytes, flags: str = "PA", dport: int = 80) -> bytes:
    return bytes(Ether(src="02:00:00:00:0a:01", dst="02:00:00:00:00:01") / IP(src="198.19.1.2", dst="198.19.1.20")
                 / TCP(sport=40000, dport=dport, seq=seq, flags=flags) / payload)


@pytest.mark.parametrize("header, message, dport, proto, name", [
    (V1, client_hello(b"www.tiktok.com"), 443, "tls-sni", "www.tiktok.com"),
    (V2, REQUEST, 80, "http-host", "www.tiktok.com"),
    (V2, b"GET /x\r\nHost: m.tiktok.com\r\n\r\n", 80, "http-host", "m.tiktok.com"),  # no version either
])
@pytest.mark.parametrize("skim", [True, False])
def test_the_name_behind_the_header_is_read_in_any_segmentation(header, message, dport, proto, name, skim):
    """The header in its own segment, split inside itself, or with the message: one name."""
    stream = header + message
    for cuts in ([], [len(header)], [5, len(header) + 3]):
        found: list = []
        extractor = Extractor(Settings(skim=skim), found.append, lambda binding: None)
        extractor.feed(0.0, 1, frame(999, b"", "S", dport), "crafted", 1)
        start = 0
        for i, cut in enumerate([*cuts, len(stream)], 2):
            extractor.feed(0.001 * i, 1, frame(1000 + start, stream[start:cut], dport=dport), "crafted", i)
            start = cut
        assert [(o.proto, o.name, o.client_ip, o.frame) for o in found] == [
            (proto, name, "198.19.1.2", len(cuts) + 2)], cuts
