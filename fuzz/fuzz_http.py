"""Fuzz the plain-HTTP Host parser over the first bytes of a TCP stream.

Run alone: ``.venv/bin/python fuzz/fuzz_http.py fuzz/corpus/http -dict=fuzz/dicts/http.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only http``).

What counts as a finding: any exception; a status other than the three documented ones,
or a host without DONE; a host that is not one printable line of at most MAX_NAME
characters; and a final answer (DONE or NOT_HTTP) for the first half of a stream that
the whole stream contradicts (the caller stops feeding a flow once it is final).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.clienthello import MAX_NAME
    from detector.extract.http import DONE, METHODS, NEED_MORE, NOT_HTTP, parse_http_host

#: A request header block is at most MAX_HEADER bytes; the rest of a flow only slows the fuzzer.
MAX_SEED = 8192


def TestOneInput(data: bytes) -> None:
    status, host = parse_http_host(data)
    assert status in (NEED_MORE, DONE, NOT_HTTP), status
    assert host is None or status == DONE
    if host is not None:
        assert 0 < len(host) <= MAX_NAME and host.isprintable() and not host.endswith("."), host
        assert host == host.lower(), host
    head = parse_http_host(data[: len(data) // 2])
    if head[0] != NEED_MORE:
        assert head == (status, host), (head, status, host)


def seeds() -> Iterator[bytes]:
    """TCP payloads of the seed captures that start with an HTTP method and a space."""
    from seeds import packets

    from detector.decode import IPPROTO_TCP

    starts = tuple(method + b" " for method in METHODS)
    for packet in packets():
        if packet.l4 == IPPROTO_TCP and packet.payload.startswith(starts):
            yield packet.payload[:MAX_SEED]


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
