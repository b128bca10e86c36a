"""PROXY protocol headers: what a load balancer puts before a client's first bytes.

HAProxy's PROXY protocol (versions 1 and 2) tells a backend who the client was: a line of
text (``PROXY TCP4 198.18.10.21 198.19.1.10 52176 443\r\n``) or a binary header behind a
12-byte signature. A sensor on the backend's segment sees it in front of the ClientHello
or HTTP request that holds the name, so the header is stepped over before those are read.

``header_length`` is sans-IO over the first bytes of a TCP stream, like the other
first-flight parsers: NEED_MORE while the bytes may still become a header, DONE with the
header's length, NOT_PROXY when they cannot. It reads at most V2_MAX bytes.
"""

from __future__ import annotations

from .clienthello import DONE, NEED_MORE

NOT_PROXY = "not-proxy"

V1 = b"PROXY "
#: Version 1: the line is at most 107 bytes, CRLF included.
V1_MAX = 107
V1_PROTOCOLS = frozenset({b"TCP4", b"TCP6", b"UNKNOWN"})
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family and protocol, address length
#: What the address block's 16-bit length allows.
V2_MAX = V2_FIXED + 0xFFFF
#: What a segment must start with to be the start of a header (the skim keeps those).
STARTS = (V1, V2_SIGNATURE)


def may_start(stream: bytes) -> bool:
    """Whether ``stream`` starts with a header's start or is the beginning of one."""
    return stream.startswith(STARTS) or (len(stream) < len(V2_SIGNATURE) and (
        V1.startswith(stream) or V2_SIGNATURE.startswith(stream)))


def header_length(stream: bytes | memoryview) -> tuple[str, int]:
    """(DONE, length of the PROXY header that starts ``stream``), (NEED_MORE, 0) or (NOT_PROXY, 0)."""
    head = bytes(stream[:V2_FIXED])
    if head.startswith(V2_SIGNATURE):
        if len(head) < V2_FIXED:
            return NEED_MORE, 0
        if head[12] >> 4 != 2 or head[12] & 0x0F > 1:  # version 2; command LOCAL or PROXY
            return NOT_PROXY, 0
        length = V2_FIXED + (head[14] << 8 | head[15])
        return (DONE, length) if len(stream) >= length else (NEED_MORE, 0)
    if not head.startswith(V1):
        return (NEED_MORE, 0) if V1.startswith(head) or V2_SIGNATURE.startswith(head) else (NOT_PROXY, 0)
    line = bytes(stream[:V1_MAX])
    end = line.find(b"\r\n")
    if end < 0:
        return (NOT_PROXY, 0) if len(line) == V1_MAX or b"\n" in line else (NEED_MORE, 0)
    words = line[len(V1) : end].split(b" ")
    if b"\n" in line[:end] or words[0] not in V1_PROTOCOLS or (words[0] != b"UNKNOWN" and (
            len(words) != 5 or not (words[3].isdigit() and words[4].isdigit()))):
        return NOT_PROXY, 0
    return DONE, end + 2
