"""Fuzz the PROXY protocol header reader over the first bytes of a TCP stream.

Run alone: ``.venv/bin/python fuzz/fuzz_proxy.py fuzz/corpus/proxy -dict=fuzz/dicts/proxy.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only proxy``).

What counts as a finding: any exception; a status other than the three documented ones, or
one other than NOT_PROXY for bytes ``may_start`` says cannot start a header; a
length without DONE, or one that is not inside the stream and past the header's start; a
final answer (DONE or NOT_PROXY) for a prefix of the stream that the whole stream
contradicts (the caller stops waiting once it is final).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.proxy import (
        DONE, NEED_MORE, NOT_PROXY, STARTS, V1_MAX, V2_FIXED, header_length, may_start,
    )


def TestOneInput(data: bytes) -> None:
    status, length = header_length(data)
    assert status in (NEED_MORE, DONE, NOT_PROXY), status
    assert status == NOT_PROXY or may_start(data), data[:16]  # the pipeline asks may_start first
    if status == DONE:
        assert data.startswith(STARTS), data[:16]
        assert (V2_FIXED if data.startswith(STARTS[1]) else len(STARTS[0]) + 2) <= length <= len(data), length
        assert data.startswith(STARTS[1]) or length <= V1_MAX
    else:
        assert length == 0
    head = header_length(data[: len(data) // 2])
    if head[0] != NEED_MORE:
        assert head == (status, length), (head, status, length)


def seeds() -> Iterator[bytes]:
    """Headers of both versions in front of a request, and their prefixes."""
    v2 = b"\r\n\r\n\x00\r\nQUIT\n"
    headers = [
        b"PROXY TCP4 198.18.10.21 198.19.1.10 52176 443\r\n",
        b"PROXY TCP6 fd00:10::21 fd00:19::1:10 52176 443\r\n",
        b"PROXY UNKNOWN\r\n",
        v2 + b"\x21\x11\x00\x0c" + bytes([198, 18, 10, 21, 198, 19, 1, 10]) + b"\xcb\xd0\x01\xbb",
        v2 + b"\x21\x21\x00\x24" + bytes(32) + b"\xcb\xd0\x01\xbb",
        v2 + b"\x20\x00\x00\x00",
    ]
    for header in headers:
        yield header + b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n"
        yield header[: len(header) // 2]


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
