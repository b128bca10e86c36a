"""HTTP/1.x Host extraction: crafted requests, cut points, random bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.extract.clienthello import DONE, NEED_MORE
from detector.extract.http import MAX_HEADER, METHODS, NOT_HTTP, parse_http_host
from detector.extract.tcpflight import FlightTable


@pytest.mark.parametrize(
    ("request_head", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: www.TikTok.com\r\n\r\n", "www.tiktok.com"),
        (b"GET / HTTP/1.1\r\nhost:tiktok.com:8080\r\n\r\n", "tiktok.com"),
        (b"GET / HTTP/1.1\r\nHOST: \t tiktok.com. \r\n\r\n", "tiktok.com"),
        (b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n", "2001:db8::1"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n", "2001:db8::1"),
        (b"GET / HTTP/1.1\r\nHost: 2001:db8::1\r\n\r\n", "2001:db8::1"),
        (b"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", "192.0.2.1"),
        (b"POST /api HTTP/1.0\r\nUser-Agent: x\r\nHost: a.example\r\nHost: b.example\r\n\r\n", "a.example"),
        (b"HEAD / HTTP/1.1\nHost: lf.example\n\n", "lf.example"),  # bare LF, as servers accept
        (b"\r\n\r\nPUT /x HTTP/1.1\r\nHost: lead.example\r\n\r\n", "lead.example"),
        (b"GET   /   HTTP/1.1\r\nHost: ws.example\r\n\r\n", "ws.example"),
        (b"OPTIONS * HTTP/1.1\r\nHost: star.example\r\n\r\n", "star.example"),
        # Absolute form wins over Host (RFC 9112 3.2.2), userinfo and port dropped.
        (b"GET http://user:pw@TikTok.com:80/p?q HTTP/1.1\r\nHost: decoy.example\r\n\r\n", "tiktok.com"),
        (b"GET HTTP://tiktok.com HTTP/1.1\r\n\r\n", "tiktok.com"),
        (b"GET http://[::1]:8080/ HTTP/1.1\r\n\r\n", "::1"),
        (b"CONNECT tiktok.com:443 HTTP/1.1\r\nHost: decoy.example\r\n\r\n", "tiktok.com"),
        (b"GET / HTTP/1.0\r\n\r\n", None),  # HTTP/1.0 without Host
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost : spaced.example\r\n\r\n", None),  # not a Host header
        (b"GET / HTTP/1.1\r\nHost: \xe9t\xe9.example\r\n\r\n", "\ufffdt\ufffd.example"),
    ],
)
def test_host(request_head: bytes, host: str | None) -> None:
    assert parse_http_host(request_head) == (DONE, host)
    assert parse_http_host(memoryview(request_head)) == (DONE, host)


def test_done_when_the_header_block_is_complete() -> None:
    """Wireshark attributes a request to the frame that completes its header block; so do we."""
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: early.example\r\nAccept: */*") == (NEED_MORE, None)
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: early.example\r\nAccept: */*\r\n\r\n") == (DONE, "early.example")
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: early.exa") == (NEED_MORE, None)


def test_a_header_block_past_the_cap_still_gives_its_host() -> None:
    head = b"GET / HTTP/1.1\r\nHost: big.example\r\nCookie: " + b"x" * MAX_HEADER
    assert parse_http_host(head) == (DONE, "big.example")
    assert parse_http_host(b"GET / HTTP/1.1\r\nCookie: " + b"x" * MAX_HEADER) == (NOT_HTTP, None)


@pytest.mark.parametrize(
    "stream",
    [b"", b"G", b"GE", b"GET", b"GET ", b"OPTIONS", b"\r\n", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nAccept: x\r\n"],
)
def test_need_more(stream: bytes) -> None:
    assert parse_http_host(stream) == (NEED_MORE, None)


@pytest.mark.parametrize(
    "stream",
    [
        b"\x16\x03\x01\x02\x00\x01",  # TLS
        b"get / HTTP/1.1\r\n",  # methods are case-sensitive
        b"BREW /pot HTTP/1.1\r\n",
        b"GETX / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 preface
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.1 extra\r\n",
        b"GET  HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
)
def test_not_http(stream: bytes) -> None:
    assert parse_http_host(stream) == (NOT_HTTP, None)


@pytest.mark.parametrize("stream, expected", [
    (b"GET /path\r\nHost: www.TikTok.com\r\n\r\n", (DONE, "www.tiktok.com")),
    (b"GET /path\nHost: www.tiktok.com:8080\n\n", (DONE, "www.tiktok.com")),
    (b"POST http://v16m.tiktokcdn.com/x\r\nHost: other.example\r\n\r\n", (DONE, "v16m.tiktokcdn.com")),
    (b"GET /\r\n\r\n", (DONE, None)),  # HTTP/0.9: no headers at all
    (b"GET /\r\n", (NEED_MORE, None)),
])
def test_request_line_without_a_version_still_gives_its_host(stream: bytes, expected) -> None:
    """``GET /path`` with headers after it (scripts, old clients, some malware): servers
    answer it, so its Host is a name the device asked for."""
    assert parse_http_host(stream) == expected


def test_header_cap() -> None:
    head = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEADER + 100)
    assert parse_http_host(head[: MAX_HEADER - 1]) == (NEED_MORE, None)
    assert parse_http_host(head) == (NOT_HTTP, None)
    assert parse_http_host(b"GET /" + b"a" * MAX_HEADER) == (NOT_HTTP, None)
    assert parse_http_host(b"\r\n" * MAX_HEADER) == (NOT_HTTP, None)
    # A Host line inside the cap counts even when the block would pass it.
    big = b"GET / HTTP/1.1\r\nHost: in.example\r\nX-Pad: " + b"a" * MAX_HEADER + b"\r\n\r\n"
    assert parse_http_host(big) == (DONE, "in.example")


def test_every_method() -> None:
    for method in METHODS:
        assert parse_http_host(method + b" / HTTP/1.1\r\nHost: m.example\r\n\r\n") == (DONE, "m.example")


# -- properties ------------------------------------------------------------------

HOSTS = st.from_regex(r"[a-zA-Z0-9-]{1,15}(\.[a-zA-Z0-9-]{1,15}){0,3}", fullmatch=True)
HEADERS = st.lists(
    st.tuples(
        st.from_regex(r"[A-Za-z-]{1,15}", fullmatch=True).filter(lambda n: n.lower() != "host"),
        st.from_regex(r"[ -~]{0,40}", fullmatch=True),
    ),
    max_size=6,
)


def build_request(method: bytes, host: str, port: int | None, before: list, after: list) -> bytes:
    lines = [method + b" /index.html?a=b HTTP/1.1"]
    lines += [f"{n}: {v}".encode() for n, v in before]
    lines.append(f"Host: {host}{'' if port is None else f':{port}'}".encode())
    lines += [f"{n}: {v}".encode() for n, v in after]
    return b"\r\n".join(lines) + b"\r\n\r\nbody"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"GET ", b"GET / HTTP/1.1\r\n"]))
def test_random_bytes_never_raise(data: bytes, prefix: bytes) -> None:
    status, host = parse_http_host(prefix + data)
    assert status in (NEED_MORE, DONE, NOT_HTTP)
    assert host is None or isinstance(host, str)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(METHODS[:-2]),
    host=HOSTS,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    before=HEADERS,
    after=HEADERS,
)
def test_every_cut_gives_need_more_then_the_same_host(method, host, port, before, after) -> None:
    request = build_request(method, host, port, before, after)
    expected = host.lower()
    done_at = None
    for cut in range(len(request) + 1):
        status, found = parse_http_host(request[:cut])
        if status == DONE:
            assert found == expected
            done_at = done_at if done_at is not None else cut
        else:
            assert status == NEED_MORE and done_at is None, (cut, status)
    assert done_at is not None


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_segmented_request_through_flight_table(data: st.DataObject) -> None:
    host = data.draw(HOSTS)
    request = build_request(b"GET", host, None, data.draw(HEADERS), [])
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(request) - 1), max_size=10))))
    bounds = [0, *cuts, len(request)]
    segments = [(a, request[a:b]) for a, b in zip(bounds, bounds[1:])]
    segments += data.draw(st.lists(st.sampled_from(segments), max_size=3))
    isn = data.draw(st.integers(0, 2**32 - 1))
    table = FlightTable()
    table.feed("flow", 0.0, isn, True, b"")
    result = None
    for offset, chunk in data.draw(st.permutations(segments)):
        contiguous = table.feed("flow", 0.1, (isn + 1 + offset) % 2**32, False, chunk)
        if contiguous is not None:
            status, found = parse_http_host(contiguous)
            assert status != NOT_HTTP
            if status == DONE:
                result = found
                break
    assert result == host.lower()
