"""ClientHello parsing: real hellos (OpenSSL, aioquic), hand-built edge cases, properties."""

from __future__ import annotations

import ssl

import pytest
from aioquic.buffer import Buffer
from aioquic.tls import ClientHello as AioClientHello
from aioquic.tls import Context, Epoch, ExtensionType, push_client_hello
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.extract.clienthello import (
    DONE,
    EXT_ECH,
    MAX_ALPN,
    NEED_MORE,
    NOT_TLS,
    ClientHello,
    client_hello_from_records,
    is_grease,
    normalize_name,
    parse_client_hello,
)
from detector.extract.tcpflight import FlightTable

# -- builders ----------------------------------------------------------------


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def ext(ext_type: int, body: bytes = b"") -> bytes:
    return u16(ext_type) + vec16(body)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec16(b"".join(bytes([name_type]) + vec16(n) for n in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec16(b"".join(vec8(p) for p in protocols)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec8(b"".join(u16(v) for v in versions)))


def key_share_ext(*shares: tuple[int, bytes]) -> bytes:
    return ext(51, vec16(b"".join(u16(group) + vec16(key) for group, key in shares)))


def hello(
    *exts: bytes,
    legacy: int = 0x0303,
    session_id: bytes = bytes(32),
    suites: bytes = u16(0x1301) + u16(0x1302),
    compression: bytes = b"\x00",
    extensions: bytes | None = None,
    tail: bytes = b"",
) -> bytes:
    """A Handshake-framed ClientHello; ``extensions`` overrides the framed block."""
    block = vec16(b"".join(exts)) if extensions is None else extensions
    body = u16(legacy) + bytes(range(32)) + vec8(session_id) + vec16(suites) + vec8(compression)
    body += block + tail
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(handshake: bytes, cuts: list[int] = (), version: int = 0x0301) -> bytes:
    """The handshake bytes in TLS records, cut at the given offsets."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(handshake))), len(handshake)]
    return b"".join(
        b"\x16" + u16(version) + vec16(handshake[a:b]) for a, b in zip(bounds, bounds[1:])
    )


def openssl_hello(server_hostname: str | None, alpn: list[str] = (), tls12: bool = False) -> bytes:
    """The first flight of a real OpenSSL client, read from a memory BIO (no network)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    outgoing = ssl.MemoryBIO()
    conn = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def aioquic_hello(server_name: str, alpn: list[str]) -> bytes:
    """A bare ClientHello handshake message as aioquic puts it in a QUIC CRYPTO stream."""
    ctx = Context(is_client=True, alpn_protocols=alpn, server_name=server_name)
    ctx.handshake_extensions = [(ExtensionType.QUIC_TRANSPORT_PARAMETERS, b"\x01\x02\x40\x00")]
    buffers = {epoch: Buffer(capacity=8192) for epoch in Epoch}
    ctx.handle_message(b"", buffers)
    return buffers[Epoch.INITIAL].data


def chrome_like_pq_hello() -> bytes:
    """~1.9 kB: GREASE everywhere, X25519MLKEM768 key share, GREASE-style ECH, ALPS."""
    return hello(
        ext(0x2A2A),
        sni_ext(b"www.tiktok.com"),
        ext(23),
        ext(0xFF01, b"\x00"),
        ext(10, vec16(u16(0x4A4A) + u16(0x11EC) + u16(0x001D) + u16(0x0017))),
        alpn_ext(b"h2", b"http/1.1"),
        ext(5, b"\x01\x00\x00\x00\x00"),
        ext(13, vec16(u16(0x0403) + u16(0x0804) + u16(0x0401))),
        ext(18),
        key_share_ext((0x4A4A, b"\x00"), (0x11EC, bytes(1216)), (0x001D, bytes(32))),
        ext(45, vec8(b"\x01")),
        versions_ext(0x7A7A, 0x0304, 0x0303),
        ext(27, vec8(u16(2))),
        ext(17513, vec16(vec8(b"h2"))),
        ext(EXT_ECH, b"\x00\x00\x01\x00\x01\x7d" + vec16(bytes(32)) + vec16(bytes(208))),
        ext(35),
        ext(21, bytes(150)),  # padding
        ext(0xBABA, b"\x00"),
        session_id=bytes(range(32)),
        suites=b"".join(u16(s) for s in (0x0A0A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)),
    )


# -- real clients --------------------------------------------------------------


def test_openssl_client_hello_over_records() -> None:
    stream = openssl_hello("WWW.TikTok.com.", ["h2", "http/1.1"])
    status, ch = client_hello_from_records(stream)
    assert status == DONE
    assert ch == ClientHello("www.tiktok.com", ("h2", "http/1.1"), ch.versions, False)
    assert 0x0304 in ch.versions and 0x0303 in ch.versions


def test_every_proper_prefix_of_a_real_hello_needs_more() -> None:
    stream = openssl_hello("tiktok.com")
    for cut in range(len(stream)):
        assert client_hello_from_records(stream[:cut]) == (NEED_MORE, None), cut
    assert client_hello_from_records(stream)[1].sni == "tiktok.com"


def test_openssl_tls12_only_has_legacy_version() -> None:
    status, ch = client_hello_from_records(openssl_hello("example.org", tls12=True))
    assert status == DONE and ch.versions == (0x0303,) and ch.alpn == ()


def test_openssl_without_server_name() -> None:
    status, ch = client_hello_from_records(openssl_hello(None))
    assert status == DONE and ch.sni is None


def test_aioquic_bare_handshake_message() -> None:
    message = aioquic_hello("v16-webapp.tiktok.com", ["h3"])
    assert parse_client_hello(message) == ClientHello("v16-webapp.tiktok.com", ("h3",), (0x0304,), False)
    assert parse_client_hello(memoryview(message)).sni == "v16-webapp.tiktok.com"
    # Without the record layer it is not a TCP TLS stream.
    assert client_hello_from_records(message) == (NOT_TLS, None)


# -- hand-built features ---------------------------------------------------------


def test_grease_removed_everywhere() -> None:
    ch = parse_client_hello(
        hello(
            ext(0x0A0A),
            sni_ext(b"a.example"),
            alpn_ext(b"\x1a\x1a", b"h2", b"\xfa\xfa"),
            versions_ext(0x2A2A, 0x0304, 0x0303, 0xFAFA),
            ext(0xDADA, b"\x00"),
        )
    )
    assert ch == ClientHello("a.example", ("h2",), (0x0304, 0x0303), False)


def test_is_grease() -> None:
    assert all(is_grease(0x0A0A + 0x1010 * i) for i in range(16))
    assert not any(is_grease(v) for v in (0x0A1A, 0x0304, 0x1A0A, 0x0A0B, 0xFE0D))


def test_ech_with_outer_sni() -> None:
    ch = parse_client_hello(
        hello(sni_ext(b"cloudflare-ech.com"), ext(EXT_ECH, b"\x00" + bytes(60)), versions_ext(0x0304))
    )
    assert ch.ech and ch.sni == "cloudflare-ech.com"


def test_draft_ech_code_points_are_not_ech() -> None:
    for code in (0xFF02, 0xFF03, 0xFE08):
        assert not parse_client_hello(hello(sni_ext(b"x.example"), ext(code, b"\x00"))).ech


def test_post_quantum_hello_split_over_two_records() -> None:
    message = chrome_like_pq_hello()
    assert 1800 < len(message) < 2100
    stream = records(message, [1000])
    for cut in range(0, len(stream), 7):
        assert client_hello_from_records(stream[:cut])[0] == NEED_MORE
    status, ch = client_hello_from_records(stream)
    assert status == DONE
    assert ch == ClientHello("www.tiktok.com", ("h2", "http/1.1"), (0x0304, 0x0303), True)


def test_hello_in_one_byte_records_and_trailing_records() -> None:
    message = hello(sni_ext(b"tiny.example"))
    stream = records(message, list(range(len(message))), version=0x0303)
    assert client_hello_from_records(stream)[1].sni == "tiny.example"
    # What follows the hello (more records, early data) does not matter.
    assert client_hello_from_records(stream + b"\x17\x03\x03\x00\x05hello")[1].sni == "tiny.example"


def test_first_host_name_wins() -> None:
    assert parse_client_hello(hello(sni_ext(b"one.example", b"two.example"))).sni == "one.example"
    dup = hello(sni_ext(b"first.example"), sni_ext(b"second.example"))
    assert parse_client_hello(dup).sni == "first.example"
    assert parse_client_hello(hello(sni_ext(b"x.example", name_type=1))).sni is None


def test_hello_without_extensions() -> None:
    assert parse_client_hello(hello(extensions=b"", legacy=0x0301)) == ClientHello(None, (), (0x0301,), False)


def test_trailing_bytes_after_extensions_are_tolerated() -> None:
    assert parse_client_hello(hello(sni_ext(b"t.example"), tail=b"junk")).sni == "t.example"


def test_trailing_bytes_after_message_are_ignored() -> None:
    assert parse_client_hello(hello(sni_ext(b"t.example")) + b"\x02\x00\x00\x00").sni == "t.example"


def test_alpn_capped() -> None:
    names = [b"p%d" % i for i in range(40)]
    assert len(parse_client_hello(hello(alpn_ext(*names))).alpn) == MAX_ALPN


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"WWW.TikTok.COM", "www.tiktok.com"),
        (b"tiktok.com.", "tiktok.com"),
        (b"\xff.tiktok.com", "\ufffd.tiktok.com"),
        (b"a\x00b.tiktok.com", "a\ufffdb.tiktok.com"),
        (b"", None),
        (b".", None),
        (b"a" * 254, None),
        (b"a" * 253, "a" * 253),
    ],
)
def test_normalize_name(raw: bytes, name: str | None) -> None:
    assert normalize_name(raw) == name


@pytest.mark.parametrize(
    "message",
    [
        hello(sni_ext(b"x"), session_id=bytes(33)),  # session id too long
        hello(sni_ext(b"x"), suites=b"\x13"),  # odd cipher suites length
        hello(sni_ext(b"x"), suites=b""),  # no cipher suites
        hello(sni_ext(b"x"), compression=b""),  # no compression methods
        hello(extensions=u16(10) + ext(0, b"")),  # extension block past the body
        hello(extensions=u16(3) + b"\x00\x00\x00"),  # partial extension header
        hello(extensions=b"\x00"),  # half an extensions length
        hello(ext(0, b"\x00\x06\x00\x00\x09abc")),  # server_name entry past its list
        hello(ext(0, b"\x00\x01\x00")),  # server_name list length past the extension
        hello(ext(16, b"\x00")),  # ALPN too short for its list length
        hello(ext(16, b"\x00\x03\x00ab")),  # empty ALPN protocol name
        hello(ext(16, b"\x00\x03\x05ab")),  # ALPN name past its list
        hello(ext(43, b"\x03\x03\x04\x03")),  # odd supported_versions length
        hello(ext(43, b"")),  # empty supported_versions
        b"\x01\x00\x00\x10" + bytes(8),  # shorter than declared
        b"\x01\x00\x00\x05" + bytes(5),  # too short for version and random
        b"\x02\x00\x00\x04abcd",  # ServerHello
        b"",
    ],
)
def test_malformed_hellos_are_none(message: bytes) -> None:
    assert parse_client_hello(message) is None
    if message[:1] == b"\x01" and len(message) >= 4:
        declared = int.from_bytes(message[1:4], "big") + 4
        if len(message) >= declared:  # complete but malformed: DONE with None
            assert client_hello_from_records(records(message)) == (DONE, None)


@pytest.mark.parametrize(
    "stream",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x80\x2e\x01\x03\x01",  # SSLv2-compatible hello
        b"\x15\x03\x03\x00\x02\x02\x28",  # alert record
        b"\x16\x02\x00\x00\x05",  # record version 2.0
        b"\x16\x03\x01\x48\x01",  # record longer than 2**14 + 2048
        b"\x16\x03\x01\x00\x00",  # empty handshake record
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x46",  # ServerHello
        b"\x16\x03\x01\x00\x04\x01\x01\x00\x01",  # declared hello longer than 64 KiB
        b"\x16\x03\x01\x00\x04\x01\x00\x01\x00\x17\x03\x03\x00\x01x",  # app data mid-hello
        b"\x17",  # first byte already wrong
        b"\x16\x04",  # second byte already wrong
    ],
)
def test_not_tls(stream: bytes) -> None:
    assert client_hello_from_records(stream) == (NOT_TLS, None)


@pytest.mark.parametrize(
    "stream",
    [b"", b"\x16", b"\x16\x03", b"\x16\x03\x01\x02", b"\x16\x03\x01\x02\x00", b"\x16\x03\x01\x02\x00\x01\x00"],
)
def test_valid_prefixes_need_more(stream: bytes) -> None:
    assert client_hello_from_records(stream) == (NEED_MORE, None)


# -- properties ------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,4}", fullmatch=True)
ALPN = st.lists(st.from_regex(r"[a-z0-9/.-]{1,12}", fullmatch=True), max_size=5)
VERSIONS = st.lists(st.integers(0, 0xFFFF).filter(lambda v: not is_grease(v)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    for blob in (data, b"\x01" + data, b"\x16\x03\x01" + data):
        ch = parse_client_hello(blob)
        assert ch is None or isinstance(ch, ClientHello)
        status, ch = client_hello_from_records(blob)
        assert status in (NEED_MORE, DONE, NOT_TLS)


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 2100), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_real_hellos_never_raise(flips: list[tuple[int, int]]) -> None:
    stream = bytearray(records(chrome_like_pq_hello(), [700]))
    for pos, value in flips:
        stream[pos % len(stream)] = value
    status, _ = client_hello_from_records(bytes(stream))
    assert status in (NEED_MORE, DONE, NOT_TLS)
    parse_client_hello(bytes(stream[5:]))


@settings(max_examples=150, deadline=None)
@given(
    name=st.one_of(st.none(), NAMES),
    alpn=st.one_of(st.none(), ALPN.filter(bool)),
    versions=st.one_of(st.none(), VERSIONS),
    key_size=st.integers(0, 1300),
    ech=st.booleans(),
    other=st.lists(st.tuples(st.integers(0x0100, 0xFDFF), st.binary(max_size=40)), max_size=4),
)
def test_aioquic_built_hellos_round_trip(name, alpn, versions, key_size, ech, other) -> None:
    """aioquic's independent encoder as the oracle for what the fields should be."""
    extensions = [(t, v) for t, v in other if t not in (16, 43, 0x002B)]
    if ech:
        extensions.append((EXT_ECH, b"\x00" + bytes(40)))
    aio = AioClientHello(
        random=bytes(32),
        legacy_session_id=bytes(32),
        cipher_suites=[0x1301],
        legacy_compression_methods=[0],
        alpn_protocols=alpn,
        key_share=[(0x11EC, bytes(key_size))],
        server_name=name,
        signature_algorithms=[0x0403],
        supported_groups=[0x11EC],
        supported_versions=versions or [],
        other_extensions=extensions,
    )
    buf = Buffer(capacity=8192)
    push_client_hello(buf, aio)
    ch = parse_client_hello(buf.data)
    assert ch == ClientHello(name, tuple(alpn or ()), tuple(versions or ()), ech)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_segmentation_gives_the_same_hello(data: st.DataObject) -> None:
    """Records cut anywhere, segments cut anywhere, reordered and duplicated, seq wrapping."""
    message = data.draw(
        st.sampled_from([chrome_like_pq_hello(), hello(sni_ext(b"m.tiktok.com"), alpn_ext(b"h2"))])
    )
    record_cuts = data.draw(st.lists(st.integers(1, len(message) - 1), max_size=4))
    stream = records(message, record_cuts)
    expected = client_hello_from_records(stream)
    assert expected[0] == DONE and expected[1].sni in ("www.tiktok.com", "m.tiktok.com")

    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    bounds = [0, *cuts, len(stream)]
    segments = [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:])]
    segments += data.draw(st.lists(st.sampled_from(segments), max_size=4))  # retransmissions
    order = data.draw(st.permutations(segments))
    isn = data.draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 3000, 2**32 - 1)))

    table = FlightTable(max_bytes=4096)
    key = ("10.0.0.2", 50000, "203.0.113.7", 443)
    assert table.feed(key, 0.0, isn, True, b"") is None
    result = None
    for offset, chunk in order:
        contiguous = table.feed(key, 1.0, (isn + 1 + offset) & 0xFFFFFFFF, False, chunk)
        if contiguous is not None:
            status, ch = client_hello_from_records(contiguous)
            assert status != NOT_TLS
            if status == DONE:
                result = ch
                table.finish(key)
                break
    assert result == expected[1]


def test_a_fault_after_the_server_name_keeps_the_name() -> None:
    """As in ndpi/tls_invalid_reads.pcap: a broken ALPN vector after the SNI. The client
    sent the name; Wireshark shows it; so do we. Without a name first, the hello is None."""
    broken_alpn = ext(0x0010, u16(47241) + b"h2")
    got = parse_client_hello(hello(sni_ext(b"e.crashlytics.com"), broken_alpn))
    assert got is not None and got.sni == "e.crashlytics.com"
    assert parse_client_hello(hello(broken_alpn, sni_ext(b"e.crashlytics.com"))) is None
    overrun = sni_ext(b"a.example") + u16(0x0010) + u16(500) + b"h2"
    assert parse_client_hello(hello(overrun)).sni == "a.example"
