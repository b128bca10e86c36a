"""Tests for detector.extract.quic: Initial decryption and CRYPTO reassembly.

Three independent oracles: the published test vectors of RFC 9001 and RFC 9369
(appendix A of each), aioquic acting as a real client (and aioquic's packet protection
to craft reshaped flights), and tshark on the committed fixture captures.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import dpkt
import pytest
from aioquic.quic.packet import encode_quic_retry, encode_quic_version_negotiation
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.extract import quic
from detector.extract.quic import (
    INITIAL,
    QUIC_DRAFT_29,
    QUIC_V1,
    QUIC_V2,
    InitialKeys,
    InitialTable,
    decode_packet_number,
    derive_client_initial_keys,
    parse_initial_frames,
    parse_long_header,
)

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "make_quic_fixtures", ROOT / "pcaps" / "make_quic_fixtures.py"
)
fx = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fx  # dataclasses look their module up there
_spec.loader.exec_module(fx)

CLIENT = ("198.18.10.1", 50000)
OTHER_CLIENT = ("198.18.10.2", 50000)


def h(text: str) -> bytes:
    """Hex as the RFCs print it: in groups, across lines."""
    return bytes.fromhex("".join(text.split()))


# ---------------------------------------------------------------- RFC 9001 appendix A

RFC_DCID = h("8394c8f03e515708")

# A.2: the CRYPTO frame of the client Initial (then PADDING to a 1162-byte payload).
RFC_CRYPTO_FRAME = h("""
   060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
   04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
   616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
   04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
   baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
   0d0010000e0403050306030203080408 050806002d00020101001c0002400100
   3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
   75300901100f088394c8f03e51570806 048000ffff
""")

RFC9001_UNPROTECTED_HEADER = h("c300000001088394c8f03e5157080000449e00000002")

RFC9001_PROTECTED_PACKET = h("""
   c000000001088394c8f03e5157080000 449e7b9aec34d1b1c98dd7689fb8ec11
   d242b123dc9bd8bab936b47d92ec356c 0bab7df5976d27cd449f63300099f399
   1c260ec4c60d17b31f8429157bb35a12 82a643a8d2262cad67500cadb8e7378c
   8eb7539ec4d4905fed1bee1fc8aafba1 7c750e2c7ace01e6005f80fcb7df6212
   30c83711b39343fa028cea7f7fb5ff89 eac2308249a02252155e2347b63d58c5
   457afd84d05dfffdb20392844ae81215 4682e9cf012f9021a6f0be17ddd0c208
   4dce25ff9b06cde535d0f920a2db1bf3 62c23e596d11a4f5a6cf3948838a3aec
   4e15daf8500a6ef69ec4e3feb6b1d98e 610ac8b7ec3faf6ad760b7bad1db4ba3
   485e8a94dc250ae3fdb41ed15fb6a8e5 eba0fc3dd60bc8e30c5c4287e53805db
   059ae0648db2f64264ed5e39be2e20d8 2df566da8dd5998ccabdae053060ae6c
   7b4378e846d29f37ed7b4ea9ec5d82e7 961b7f25a9323851f681d582363aa5f8
   9937f5a67258bf63ad6f1a0b1d96dbd4 faddfcefc5266ba6611722395c906556
   be52afe3f565636ad1b17d508b73d874 3eeb524be22b3dcbc2c7468d54119c74
   68449a13d8e3b95811a198f3491de3e7 fe942b330407abf82a4ed7c1b311663a
   c69890f4157015853d91e923037c227a 33cdd5ec281ca3f79c44546b9d90ca00
   f064c99e3dd97911d39fe9c5d0b23a22 9a234cb36186c4819e8b9c5927726632
   291d6a418211cc2962e20fe47feb3edf 330f2c603a9d48c0fcb5699dbfe58964
   25c5bac4aee82e57a85aaf4e2513e4f0 5796b07ba2ee47d80506f8d2c25e50fd
   14de71e6c418559302f939b0e1abd576 f279c4b2e0feb85c1f28ff18f58891ff
   ef132eef2fa09346aee33c28eb130ff2 8f5b766953334113211996d20011a198
   e3fc433f9f2541010ae17c1bf202580f 6047472fb36857fe843b19f5984009dd
   c324044e847a4f4a0ab34f719595de37 252d6235365e9b84392b061085349d73
   203a4a13e96f5432ec0fd4a1ee65accd d5e3904df54c1da510b0ff20dcc0c77f
   cb2c0e0eb605cb0504db87632cf3d8b4 dae6e705769d1de354270123cb11450e
   fc60ac47683d7b8d0f811365565fd98c 4c8eb936bcab8d069fc33bd801b03ade
   a2e1fbc5aa463d08ca19896d2bf59a07 1b851e6c239052172f296bfb5e724047
   90a2181014f3b94a4e97d117b4381303 68cc39dbb2d198065ae3986547926cd2
   162f40a29f0c3c8745c0f50fba3852e5 66d44575c29d39a03f0cda721984b6f4
   40591f355e12d439ff150aab7613499d bd49adabc8676eef023b15b65bfc5ca0
   6948109f23f350db82123535eb8a7433 bdabcb909271a6ecbcb58b936a88cd4e
   8f2e6ff5800175f113253d8fa9ca8885 c2f552e657dc603f252e1a8e308f76f0
   be79e2fb8f5d5fbbe2e30ecadd220723 c8c0aea8078cdfcb3868263ff8f09400
   54da48781893a7e49ad5aff4af300cd8 04a6b6279ab3ff3afb64491c85194aab
   760d58a606654f9f4400e8b38591356f bf6425aca26dc85244259ff2b19c41b9
   f96f3ca9ec1dde434da7d2d392b905dd f3d1f9af93d1af5950bd493f5aa731b4
   056df31bd267b6b90a079831aaf579be 0a39013137aac6d404f518cfd4684064
   7e78bfe706ca4cf5e9c5453e9f7cfd2b 8b4c8d169a44e55c88d4a9a7f9474241
   e221af44860018ab0856972e194cd934
""")

# ---------------------------------------------------------------- RFC 9369 appendix A

RFC9369_UNPROTECTED_HEADER = h("d36b3343cf088394c8f03e5157080000449e00000002")

RFC9369_PROTECTED_PACKET = h("""
   d76b3343cf088394c8f03e5157080000 449ea0c95e82ffe67b6abcdb4298b485
   dd04de806071bf03dceebfa162e75d6c 96058bdbfb127cdfcbf903388e99ad04
   9f9a3dd4425ae4d0992cfff18ecf0fdb 5a842d09747052f17ac2053d21f57c5d
   250f2c4f0e0202b70785b7946e992e58 a59ac52dea6774d4f03b55545243cf1a
   12834e3f249a78d395e0d18f4d766004 f1a2674802a747eaa901c3f10cda5500
   cb9122faa9f1df66c392079a1b40f0de 1c6054196a11cbea40afb6ef5253cd68
   18f6625efce3b6def6ba7e4b37a40f77 32e093daa7d52190935b8da58976ff33
   12ae50b187c1433c0f028edcc4c2838b 6a9bfc226ca4b4530e7a4ccee1bfa2a3
   d396ae5a3fb512384b2fdd851f784a65 e03f2c4fbe11a53c7777c023462239dd
   6f7521a3f6c7d5dd3ec9b3f233773d4b 46d23cc375eb198c63301c21801f6520
   bcfb7966fc49b393f0061d974a2706df 8c4a9449f11d7f3d2dcbb90c6b877045
   636e7c0c0fe4eb0f697545460c806910 d2c355f1d253bc9d2452aaa549e27a1f
   ac7cf4ed77f322e8fa894b6a83810a34 b361901751a6f5eb65a0326e07de7c12
   16ccce2d0193f958bb3850a833f7ae43 2b65bc5a53975c155aa4bcb4f7b2c4e5
   4df16efaf6ddea94e2c50b4cd1dfe060 17e0e9d02900cffe1935e0491d77ffb4
   fdf85290fdd893d577b1131a610ef6a5 c32b2ee0293617a37cbb08b847741c3b
   8017c25ca9052ca1079d8b78aebd4787 6d330a30f6a8c6d61dd1ab5589329de7
   14d19d61370f8149748c72f132f0fc99 f34d766c6938597040d8f9e2bb522ff9
   9c63a344d6a2ae8aa8e51b7b90a4a806 105fcbca31506c446151adfeceb51b91
   abfe43960977c87471cf9ad4074d30e1 0d6a7f03c63bd5d4317f68ff325ba3bd
   80bf4dc8b52a0ba031758022eb025cdd 770b44d6d6cf0670f4e990b22347a7db
   848265e3e5eb72dfe8299ad7481a4083 22cac55786e52f633b2fb6b614eaed18
   d703dd84045a274ae8bfa73379661388 d6991fe39b0d93debb41700b41f90a15
   c4d526250235ddcd6776fc77bc97e7a4 17ebcb31600d01e57f32162a8560cacc
   7e27a096d37a1a86952ec71bd89a3e9a 30a2a26162984d7740f81193e8238e61
   f6b5b984d4d3dfa033c1bb7e4f0037fe bf406d91c0dccf32acf423cfa1e70710
   10d3f270121b493ce85054ef58bada42 310138fe081adb04e2bd901f2f13458b
   3d6758158197107c14ebb193230cd115 7380aa79cae1374a7c1e5bbcb80ee23e
   06ebfde206bfb0fcbc0edc4ebec30966 1bdd908d532eb0c6adc38b7ca7331dce
   8dfce39ab71e7c32d318d136b6100671 a1ae6a6600e3899f31f0eed19e3417d1
   34b90c9058f8632c798d4490da498730 7cba922d61c39805d072b589bd52fdf1
   e86215c2d54e6670e07383a27bbffb5a ddf47d66aa85a0c6f9f32e59d85a44dd
   5d3b22dc2be80919b490437ae4f36a0a e55edf1d0b5cb4e9a3ecabee93dfc6e3
   8d209d0fa6536d27a5d6fbb17641cde2 7525d61093f1b28072d111b2b4ae5f89
   d5974ee12e5cf7d5da4d6a31123041f3 3e61407e76cffcdcfd7e19ba58cf4b53
   6f4c4938ae79324dc402894b44faf8af bab35282ab659d13c93f70412e85cb19
   9a37ddec600545473cfb5a05e08d0b20 9973b2172b4d21fb69745a262ccde96b
   a18b2faa745b6fe189cf772a9f84cbfc
""")

RFC_VECTORS = [
    pytest.param(
        QUIC_V1,
        (
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        ),
        RFC9001_UNPROTECTED_HEADER,
        RFC9001_PROTECTED_PACKET,
        id="rfc9001",
    ),
    pytest.param(
        QUIC_V2,
        (
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        ),
        RFC9369_UNPROTECTED_HEADER,
        RFC9369_PROTECTED_PACKET,
        id="rfc9369",
    ),
]


@pytest.mark.parametrize("version, keys, unprotected, packet", RFC_VECTORS)
def test_rfc_keys(version, keys, unprotected, packet):
    assert derive_client_initial_keys(version, RFC_DCID) == tuple(bytes.fromhex(k) for k in keys)


@pytest.mark.parametrize("version, keys, unprotected, packet", RFC_VECTORS)
def test_rfc_header_protection(version, keys, unprotected, packet):
    assert len(packet) == 1200
    header = parse_long_header(packet)
    assert header is not None
    assert (header.version, header.kind, header.dcid) == (version, INITIAL, RFC_DCID)
    assert (header.pn_offset, header.end) == (18, 1200)
    plain_header, pn_len = InitialKeys.for_client(version, RFC_DCID).unprotect(packet, header)
    assert (plain_header, pn_len) == (unprotected, 4)


@pytest.mark.parametrize("version, keys, unprotected, packet", RFC_VECTORS)
def test_rfc_client_initial_decrypts_to_published_payload(version, keys, unprotected, packet):
    header = parse_long_header(packet)
    payload, pn = InitialKeys.for_client(version, RFC_DCID).open(packet, header, 0)
    assert pn == 2
    assert payload == RFC_CRYPTO_FRAME + bytes(1162 - len(RFC_CRYPTO_FRAME))
    frames, well_formed = parse_initial_frames(payload)
    assert well_formed
    assert frames == [(0, RFC_CRYPTO_FRAME[4:])]


@pytest.mark.parametrize("version, keys, unprotected, packet", RFC_VECTORS)
def test_rfc_client_initial_yields_client_hello(version, keys, unprotected, packet):
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, memoryview(packet))
    assert (found.version, found.dcid) == (version, RFC_DCID)
    assert found.hello.sni == "example.com"
    assert found.hello.alpn == ("alpn",)
    assert found.hello.versions == (0x0304,)
    assert (table.initials_decrypted, table.hellos, table.malformed) == (1, 1, 0)


def test_rfc_packet_with_one_flipped_bit_is_rejected():
    damaged = bytearray(RFC9001_PROTECTED_PACKET)
    damaged[600] ^= 0x01
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, bytes(damaged)) == []
    assert (table.decrypt_failed, len(table)) == (1, 0)


def test_packet_number_decoding_rfc9000_a3():
    assert decode_packet_number(0x9B32, 2, 0xA82F30EA + 1) == 0xA82F9B32
    assert decode_packet_number(0x00, 1, 0xFF + 1) == 0x100  # carries into the next byte
    assert decode_packet_number(0xFF, 1, 0x101) == 0xFF  # a late packet stays behind
    assert decode_packet_number(2, 4, 0) == 2
    assert decode_packet_number(0x01, 1, 0x1FE) == 0x201  # the window moves forward


def test_unknown_version_has_no_keys_and_no_header():
    assert derive_client_initial_keys(0x1A2A3A4A, RFC_DCID) is None
    assert InitialKeys.for_client(0x1A2A3A4A, RFC_DCID) is None
    relabelled = (
        RFC9001_PROTECTED_PACKET[:1] + bytes.fromhex("1a2a3a4a") + RFC9001_PROTECTED_PACKET[5:]
    )
    assert parse_long_header(relabelled) is None


# ---------------------------------------------------------------- real clients (aioquic)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_aioquic_client_initial(version):
    (datagram,) = fx.client_datagrams("www.tiktok.com", version, seed=1)
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, datagram)
    assert found.version == version
    assert found.dcid == parse_long_header(datagram).dcid
    assert found.hello.sni == "www.tiktok.com"
    assert found.hello.alpn == ("h3",)
    # aioquic pads the datagram with zeros after the packet: padding, not a packet.
    assert (table.short_header, table.malformed, table.hellos) == (0, 0, 1)


def test_draft29_initial():
    (datagram,) = fx.client_datagrams("v16m.tiktokcdn.com", QUIC_V1, seed=2)
    opened = fx.open_initial(datagram)
    packet = fx.seal_initial(QUIC_DRAFT_29, opened.dcid, opened.scid, opened.pn, opened.payload)
    (found,) = InitialTable().feed(CLIENT, 0.0, packet)
    assert (found.version, found.hello.sni) == (QUIC_DRAFT_29, "v16m.tiktokcdn.com")


def test_draft29_salt_is_not_v1_salt():
    """A v1-protected packet relabelled as draft-29 must not open (the salt matters)."""
    (datagram,) = fx.client_datagrams("www.tiktok.com", QUIC_V1, seed=3)
    relabelled = datagram[:1] + QUIC_DRAFT_29.to_bytes(4, "big") + datagram[5:]
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, relabelled) == []
    assert table.decrypt_failed == 1


@pytest.fixture(scope="module")
def large_flight():
    """A ClientHello that needs two Initial packets, in two datagrams (v1 and v2)."""
    return {
        version: fx.client_datagrams(
            "api16-normal-c-useast1a.tiktokv.com", version, seed=4, large=True
        )
        for version in (QUIC_V1, QUIC_V2)
    }


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_client_hello_across_two_datagrams(large_flight, version, order):
    datagrams = large_flight[version]
    assert len(datagrams) == 2
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, datagrams[order[0]]) == []
    assert len(table) == 1
    (found,) = table.feed(CLIENT, 0.001, datagrams[order[1]])
    assert found.hello.sni == "api16-normal-c-useast1a.tiktokv.com"
    assert table._buffered == 0  # the reassembly buffer is released once done


def test_two_initials_coalesced_in_one_datagram(large_flight):
    first, second = large_flight[QUIC_V1]
    second_packet = second[: parse_long_header(second).end]
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, first[: parse_long_header(first).end] + second_packet)
    assert found.hello.sni == "api16-normal-c-useast1a.tiktokv.com"
    assert table.initials_decrypted == 2


def test_retransmitted_datagram_costs_no_crypto(monkeypatch):
    (datagram,) = fx.client_datagrams("www.tiktok.com", QUIC_V1, seed=5)
    table = InitialTable()
    assert len(table.feed(CLIENT, 0.0, datagram)) == 1

    def boom(*args):
        raise AssertionError("crypto on a finished connection")

    monkeypatch.setattr(InitialKeys, "open", boom)
    assert table.feed(CLIENT, 0.1, datagram) == []
    assert (table.after_done, table.hellos) == (1, 1)


# ---------------------------------------------------------------- crafted flights


#: The CRYPTO stream (the ClientHello handshake message) of a real aioquic client.
HELLO = fx.crypto_stream(
    [fx.open_initial(fx.client_datagrams("www.tiktok.com", QUIC_V1, seed=6)[0]).payload]
)


@pytest.fixture
def hello_stream():
    return HELLO


DCID = bytes.fromhex("0011223344556677")
SCID = bytes.fromhex("a0a1a2a3")


def seal(payload: bytes, pn: int = 0, *, version: int = QUIC_V1, dcid: bytes = DCID, **kw) -> bytes:
    return fx.seal_initial(version, dcid, SCID, pn, payload, **kw)


def test_scattered_frames_with_ping_padding_overlap_and_duplicates(hello_stream):
    s = hello_stream
    payload = (
        b"\x01"
        + fx.crypto_frame(100, s[100:])
        + bytes(7)
        + fx.crypto_frame(10, s[10:60])
        + b"\x01\x01"
        + fx.crypto_frame(40, s[40:120])  # overlaps both neighbours
        + fx.crypto_frame(100, s[100:])  # exact duplicate
        + bytes(3)
        + fx.crypto_frame(0, s[:20])
        + bytes(200)
    )
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, seal(payload))
    assert found.hello.sni == "www.tiktok.com"
    assert table.malformed == 0


def test_pieces_in_three_datagrams_complete_when_the_gap_fills(hello_stream):
    s = hello_stream
    a, b = len(s) // 3, 2 * len(s) // 3
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(b, s[b:]), pn=2)) == []
    assert table.feed(CLIENT, 0.1, seal(fx.crypto_frame(0, s[:a]), pn=0)) == []
    (found,) = table.feed(CLIENT, 0.2, seal(fx.crypto_frame(a, s[a:b]), pn=1))
    assert found.hello.sni == "www.tiktok.com"
    assert table.initials_decrypted == 3


def test_ack_ack_ecn_and_connection_close_are_skipped(hello_stream):
    ack = b"\x02" + bytes([5, 0, 1, 0]) + bytes([1, 1])  # 1 extra range
    ack_ecn = b"\x03" + bytes([5, 0, 0, 0]) + bytes([0, 0, 0])
    close = b"\x1c" + bytes([0x0A, 0x06, 3]) + b"bye"
    payload = ack + ack_ecn + fx.crypto_frame(0, hello_stream) + close
    table = InitialTable()
    assert len(table.feed(CLIENT, 0.0, seal(payload))) == 1
    assert table.malformed == 0


@pytest.mark.parametrize(
    "frame",
    [
        b"\x08\x00\x04abcd",  # STREAM is not allowed in an Initial
        b"\x1d\x00\x00\x00",  # application CONNECTION_CLOSE neither
        b"\x06\x00\x10abc",  # CRYPTO longer than the packet
        b"\x02\x05\x00\x3f\x00",  # ACK announcing 63 ranges it does not have
        b"\x1c\x00\x00\x10ab",  # CONNECTION_CLOSE reason past the end
        b"\x40\x06\x00\x00",  # CRYPTO type in a non-minimal 2-byte encoding
    ],
)
def test_forbidden_or_truncated_frame_stops_the_packet(hello_stream, frame):
    """CRYPTO frames before the fault still count; what follows it is not read."""
    payload = fx.crypto_frame(0, hello_stream) + frame + fx.crypto_frame(0, b"\x02junk")
    table = InitialTable()
    assert [x.hello.sni for x in table.feed(CLIENT, 0.0, seal(payload))] == ["www.tiktok.com"]
    assert table.malformed == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"\x03\x00\x00\x00\x00\x01",  # ACK_ECN missing two of its three ECN counts
        b"\x02\x00\x00\x01\x00\x05",  # ACK with one range and no bytes for it
        b"\x06\x80",  # CRYPTO offset cut inside its varint
        b"\x1c\x00",  # CONNECTION_CLOSE without its frame type
    ],
)
def test_truncated_frames(payload):
    assert parse_initial_frames(b"\x01" + payload) == ([], False)


def test_bytes_after_the_client_hello_are_ignored(hello_stream):
    payload = fx.crypto_frame(0, hello_stream + b"\x0f\x00\x00\x01X" * 10)
    assert len(InitialTable().feed(CLIENT, 0.0, seal(payload))) == 1


def test_frames_past_the_announced_length_are_clipped(hello_stream):
    s = hello_stream
    payload = (
        fx.crypto_frame(0, s[:50])
        + fx.crypto_frame(len(s) + 10, b"beyond")  # entirely past the message
        + fx.crypto_frame(90, b"")  # empty
        + fx.crypto_frame(50, s[50:] + b"trailing bytes")
    )
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, seal(payload))
    assert found.hello.sni == "www.tiktok.com"


def test_crypto_stream_that_is_not_a_client_hello():
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, b"\x02\x00\x00\x04abcd"))) == []
    assert (table.hello_invalid, table.hellos) == (1, 0)
    assert table.feed(CLIENT, 0.1, seal(fx.crypto_frame(0, b"\x01\x00\x00\x04abcd"), pn=1)) == []
    assert table.after_done == 1  # given up: later packets are skipped


def test_complete_but_malformed_client_hello():
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, b"\x01\x00\x00\x04abcd"))) == []
    assert (table.hello_invalid, len(table)) == (1, 1)


@pytest.mark.parametrize(
    "frame",
    [
        fx.crypto_frame(0, b"\x01\x01\x00\x00"),  # announces a 64 KiB + 4 message
        fx.crypto_frame(quic.MAX_CRYPTO - 2, b"abcd"),  # data past the cap
    ],
)
def test_crypto_overflow(frame):
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(frame)) == []
    assert table.crypto_overflow == 1
    assert table._buffered == 0


def test_later_initial_to_server_cid_is_recognised_by_original_keys(hello_stream):
    """After the server answers, the client writes to the server's CID with the original
    keys (RFC 9001 5.2): such packets belong to the finished connection, not to a new one."""
    table = InitialTable()
    assert len(table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, hello_stream)))) == 1
    ack = b"\x02\x00\x00\x00\x00" + bytes(30)
    late = fx.seal_initial(QUIC_V1, b"\x5e\x5e", SCID, 1, ack, keys_dcid=DCID)
    assert table.feed(CLIENT, 0.5, late) == []
    assert (table.after_done, table.decrypt_failed, len(table)) == (1, 0, 1)


def test_tail_packets_of_a_finished_connection_cost_a_bounded_number_of_decryptions(
    hello_stream,
):
    table = InitialTable(max_initials_per_conn=3)
    assert len(table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, hello_stream)))) == 1
    ack = b"\x02\x00\x00\x00\x00" + bytes(30)
    tail = fx.seal_initial(QUIC_V1, b"\x5e" * 8, SCID, 1, ack, keys_dcid=DCID)
    assert table.feed(CLIENT, 0.5, tail * 10) == []
    # Two more tries fit the budget of 3; then the tail is treated as a new connection,
    # fails to authenticate, and the rest of the datagram is dropped.
    assert (table.after_done, table.decrypt_failed, table.initials_decrypted) == (2, 1, 3)


def test_retransmitted_half_to_server_cid_completes_the_hello(hello_stream):
    s = hello_stream
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, s[:100]))) == []
    late = fx.seal_initial(
        QUIC_V1, b"\x5e" * 8, SCID, 1, fx.crypto_frame(100, s[100:]), keys_dcid=DCID
    )
    (found,) = table.feed(CLIENT, 0.3, late)
    assert (found.dcid, found.hello.sni) == (DCID, "www.tiktok.com")


def test_second_connection_from_same_client(hello_stream):
    table = InitialTable()
    first = table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, hello_stream)))
    second = table.feed(CLIENT, 1.0, seal(fx.crypto_frame(0, hello_stream), dcid=b"\x99" * 8))
    assert len(first) == len(second) == 1
    assert (len(table), table.decrypt_failed) == (2, 0)


def test_same_dcid_from_two_clients_are_two_connections(hello_stream):
    s = hello_stream
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(0, s[:50]))) == []
    assert table.feed(OTHER_CLIENT, 0.0, seal(fx.crypto_frame(50, s[50:]))) == []
    assert len(table) == 2


# ---------------------------------------------------------------- packet kinds


def test_coalesced_initial_0rtt_and_handshake(hello_stream):
    rng = random.Random(7)
    initial = seal(fx.crypto_frame(0, hello_stream))
    zero_rtt = fx.opaque_long_packet(QUIC_V1, "0rtt", DCID, SCID, 300, rng)
    handshake = fx.opaque_long_packet(QUIC_V1, "handshake", DCID, SCID, 200, rng)
    short = b"\x40" + DCID + rng.randbytes(40)
    table = InitialTable()
    assert len(table.feed(CLIENT, 0.0, initial + zero_rtt + handshake + short)) == 1
    assert (table.zero_rtt, table.handshake, table.short_header, table.malformed) == (1, 1, 1, 0)


def test_coalesced_v2_packet_kinds_use_v2_type_bits(hello_stream):
    rng = random.Random(8)
    datagram = (
        seal(fx.crypto_frame(0, hello_stream), version=QUIC_V2)
        + fx.opaque_long_packet(QUIC_V2, "0rtt", DCID, SCID, 100, rng)
        + fx.opaque_long_packet(QUIC_V2, "handshake", DCID, SCID, 100, rng)
    )
    table = InitialTable()
    (found,) = table.feed(CLIENT, 0.0, datagram)
    assert found.version == QUIC_V2
    assert (table.zero_rtt, table.handshake) == (1, 1)


def test_coalesced_packet_with_another_dcid_is_ignored(hello_stream):
    s = hello_stream
    datagram = seal(fx.crypto_frame(0, s[:50])) + seal(
        fx.crypto_frame(50, s[50:]), dcid=b"\x01" * 8
    )
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, datagram) == []
    assert (table.initials_decrypted, table.malformed) == (1, 1)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_retry_is_counted(version):
    retry = encode_quic_retry(version, b"\x01" * 8, b"\x02" * 8, b"\x03" * 8, b"token")
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, retry) == []
    assert (table.retry, table.initials_decrypted) == (1, 0)


def test_version_negotiation_is_counted():
    table = InitialTable()
    assert (
        table.feed(
            CLIENT, 0.0, encode_quic_version_negotiation(b"\x01" * 8, b"\x02" * 8, [QUIC_V1])
        )
        == []
    )
    assert table.version_negotiation == 1


def test_fast_paths_cost_no_crypto(monkeypatch):
    def boom(*args):
        raise AssertionError("crypto on the fast path")

    monkeypatch.setattr(quic, "derive_client_initial_keys", boom)
    monkeypatch.setattr(InitialKeys, "open", boom)
    table = InitialTable()
    unknown = b"\xc0" + bytes.fromhex("1a2a3a4a") + b"\x08" + DCID + b"\x00" + bytes(1200)
    for datagram in (
        b"\x40" + bytes(100),
        unknown,
        b"\xc0\x00\x00\x00\x00\x08" + DCID,
        b"",
        b"\xc0\x00",
    ):
        assert table.feed(CLIENT, 0.0, datagram) == []
    counts = (table.short_header, table.unknown_version, table.version_negotiation, table.malformed)
    assert counts == (1, 1, 1, 2)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p[:5] + b"\x15" + p[6:],  # DCID length 21
        lambda p: p[:400],  # Length field runs past the datagram
        lambda p: p[:7],  # cut inside the DCID
        lambda p: p[:15] + b"\x7f" + p[16:],  # token length past the end
    ],
)
def test_malformed_long_header(mutate):
    table = InitialTable()
    assert table.feed(CLIENT, 0.0, mutate(RFC9001_PROTECTED_PACKET)) == []
    assert (table.malformed, table.decrypt_failed) == (1, 0)


# ---------------------------------------------------------------- bounds


def first_half(hello_stream, dcid):
    return seal(fx.crypto_frame(0, hello_stream[:100]), dcid=dcid)


def test_max_flows_evicts_oldest_incomplete(hello_stream):
    table = InitialTable(max_flows=2)
    for i in range(3):
        table.feed((f"198.18.10.{i}", 1), float(i), first_half(hello_stream, bytes([i]) * 8))
    assert (len(table), table.evicted) == (2, 1)


def test_evicting_finished_connections_is_not_counted(hello_stream):
    table = InitialTable(max_flows=1)
    for i in range(3):
        table.feed(
            (f"198.18.10.{i}", 1),
            float(i),
            seal(fx.crypto_frame(0, hello_stream), dcid=bytes([i]) * 8),
        )
    assert (len(table), table.evicted, table.hellos) == (1, 0, 3)


def test_expire(hello_stream):
    table = InitialTable(timeout=10.0)
    table.feed(CLIENT, 0.0, first_half(hello_stream, b"\x01" * 8))  # incomplete
    table.feed(CLIENT, 5.0, seal(fx.crypto_frame(0, hello_stream), dcid=b"\x02" * 8))  # done
    table.expire(9.0)
    assert len(table) == 2
    table.expire(10.0)
    assert (len(table), table.expired) == (1, 1)
    table.expire(100.0)
    assert (len(table), table.expired, table._buffered) == (0, 1, 0)


def test_per_connection_decrypt_budget(hello_stream):
    s = hello_stream
    table = InitialTable(max_initials_per_conn=2)
    assert table.feed(CLIENT, 0.0, seal(fx.crypto_frame(200, s[200:]), pn=0)) == []
    assert table.feed(CLIENT, 0.1, seal(fx.crypto_frame(100, s[100:200]), pn=1)) == []
    assert table.over_budget == 1
    assert table.feed(CLIENT, 0.2, seal(fx.crypto_frame(0, s[:100]), pn=2)) == []
    assert (table.after_done, table.initials_decrypted, table.hellos) == (1, 2, 0)


def test_failed_decryptions_spend_the_budget(hello_stream):
    table = InitialTable(max_initials_per_conn=3)
    table.feed(CLIENT, 0.0, first_half(hello_stream, DCID))
    forged = bytearray(first_half(hello_stream, DCID))
    forged[-1] ^= 1
    for i in range(5):
        table.feed(CLIENT, 0.1 * i, bytes(forged))
    assert (table.decrypt_failed, table.over_budget, table.after_done) == (2, 1, 3)


def test_total_buffer_cap_evicts_oldest(monkeypatch, hello_stream):
    monkeypatch.setattr(quic, "MAX_BUFFERED", 1000)
    table = InitialTable()
    for i in range(6):  # each keeps 2 x 200 bytes: two fit, older ones are evicted
        table.feed(
            (f"198.18.10.{i}", 1),
            float(i),
            seal(fx.crypto_frame(0, hello_stream[:200]), dcid=bytes([i]) * 8),
        )
    assert (len(table), table.evicted) == (2, 4)
    assert table._buffered <= 1000
    # A connection alone over the cap is not evicted by itself: it still completes.
    monkeypatch.setattr(quic, "MAX_BUFFERED", 10)
    s = hello_stream
    assert table.feed(CLIENT, 9.0, seal(fx.crypto_frame(300, s[300:]), dcid=b"\x77" * 8)) == []
    assert (len(table), table.evicted) == (1, 6)
    (found,) = table.feed(CLIENT, 9.1, seal(fx.crypto_frame(0, s[:300]), pn=1, dcid=b"\x77" * 8))
    assert found.hello.sni == "www.tiktok.com"


def test_constructor_rejects_empty_bounds():
    with pytest.raises(ValueError):
        InitialTable(max_flows=0)


# ---------------------------------------------------------------- committed captures


def _udp_payloads(path: Path):
    """(frame number, time, client IP, client port, payload) of each datagram to port 443."""
    with path.open("rb") as f:
        for number, (ts, frame) in enumerate(dpkt.pcap.Reader(f), start=1):
            ip = dpkt.ethernet.Ethernet(frame).data
            udp = ip.data
            if isinstance(udp, dpkt.udp.UDP) and udp.dport == 443:
                yield number, ts, dpkt.utils.inet_to_str(ip.src), udp.sport, udp.data


CAPTURES = sorted((ROOT / "pcaps").glob("quic-*.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_fixture_capture_matches_expected(path):
    table = InitialTable()
    seen = []
    for number, ts, client_ip, sport, payload in _udp_payloads(path):
        for found in table.feed((client_ip, sport), ts, payload):
            seen.append(
                {
                    "proto": "quic-sni",
                    "name": found.hello.sni,
                    "client_ip": client_ip,
                    "frame": number,
                }
            )
    expected = json.loads((ROOT / "pcaps" / "expected" / f"{path.stem}.json").read_text())
    assert seen == expected
    assert (table.decrypt_failed, table.malformed, table.hello_invalid) == (0, 0, 0)


def test_fixture_captures_exist():
    assert {p.stem for p in CAPTURES} >= {
        "quic-v1",
        "quic-v2",
        "quic-draft29",
        "quic-coalesced",
        "quic-crypto-out-of-order",
        "quic-two-initials",
    }


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_tshark_reads_the_same_names(path):
    names = fx.tshark_names(path)
    if names is None:
        pytest.skip("tshark not installed")
    expected = json.loads((ROOT / "pcaps" / "expected" / f"{path.stem}.json").read_text())
    assert sorted(names) == sorted(e["name"] for e in expected)


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_random_datagrams_never_raise(data):
    table = InitialTable()
    table.feed(CLIENT, 0.0, data)
    # The same bytes behind a plausible long header of every known version.
    for version in (QUIC_V1, QUIC_V2, QUIC_DRAFT_29):
        table.feed(CLIENT, 0.0, b"\xc3" + version.to_bytes(4, "big") + data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1199), st.integers(0, 255)), max_size=8), st.integers(0, 1200)
)
def test_mutated_real_initials_never_raise(mutations, cut):
    packet = bytearray(RFC9001_PROTECTED_PACKET)
    for at, value in mutations:
        packet[at] = value
    table = InitialTable()
    table.feed(CLIENT, 0.0, bytes(packet[:cut]))
    table.feed(CLIENT, 0.0, bytes(packet))
    assert table._buffered >= 0


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_frames_in_authentic_initials_never_raise(payload):
    """Random plaintext sealed with valid keys: the frame walker sees arbitrary bytes."""
    table = InitialTable()
    table.feed(CLIENT, 0.0, seal(payload))
    table.feed(CLIENT, 0.0, seal(b"\x06\x00" + payload, pn=1))
    assert table._buffered >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_frame_parser_never_raises(payload):
    frames, _ = parse_initial_frames(payload)
    assert all(offset >= 0 for offset, _ in frames)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_split_and_order_of_crypto_frames_reassembles(data):
    """Cut the ClientHello anywhere, duplicate some pieces, pack them into packets in
    any order: exactly one ClientHello comes out, when the last missing byte arrives."""
    stream = HELLO
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    bounds = [0, *cuts, len(stream)]
    pieces = [(bounds[i], stream[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
    pieces += data.draw(st.lists(st.sampled_from(pieces), max_size=3))  # retransmissions
    order = data.draw(st.permutations(pieces))
    per_packet = data.draw(st.integers(1, 4))
    table = InitialTable(max_initials_per_conn=64)
    found = []
    for pn, start in enumerate(range(0, len(order), per_packet)):
        payload = b"\x01".join(fx.crypto_frame(o, d) for o, d in order[start : start + per_packet])
        found += table.feed(CLIENT, 0.0, seal(payload, pn=pn))
    assert [f.hello.sni for f in found] == ["www.tiktok.com"]
