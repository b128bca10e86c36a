"""Write the QUIC fixture captures (pcaps/quic-*.pcap) and their expected names.

Run ``.venv/bin/python pcaps/make_quic_fixtures.py`` from the repository root.  Each
capture gets pcaps/expected/<stem>.json: the names a correct extractor reports, with
the 1-based frame number of the packet that completed each ClientHello.

Every client Initial here comes from aioquic acting as a real client, or is
re-protected with aioquic's own packet protection (for draft-29, which aioquic no
longer speaks, and for the reshaped first flights).  None of it uses
detector/extract/quic.py, so the captures test that module instead of mirroring it.
Connection IDs, TLS randoms and key shares are drawn from a seeded generator, so the
files are byte-for-byte reproducible.

tests/test_quic.py imports the crafting helpers from this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import INITIAL_CIPHER_SUITE, CryptoContext
from aioquic.quic.packet import pull_quic_header
from aioquic.tls import cipher_suite_hash, hkdf_expand_label, hkdf_extract
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

V1 = 0x00000001
V2 = 0x6B3343CF
DRAFT_29 = 0xFF00001D
SALTS = {
    V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
    DRAFT_29: bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899"),
}
#: Long-header type bits (RFC 9000 17.2 and RFC 9369 3.2).
TYPE_BITS = {
    V1: {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3},
    DRAFT_29: {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3},
    V2: {"initial": 1, "0rtt": 2, "handshake": 3, "retry": 0},
}

HERE = Path(__file__).resolve().parent
EPOCH = 1_700_000_000.0  # capture timestamps start here, 10 ms apart


# ------------------------------------------------------------------ crafting helpers


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Make aioquic's client draw every random byte and private key from ``seed``."""
    rng = random.Random(seed)
    with ExitStack() as stack:
        stack.enter_context(patch("os.urandom", rng.randbytes))
        stack.enter_context(
            patch.object(
                x25519.X25519PrivateKey,
                "generate",
                lambda: x25519.X25519PrivateKey.from_private_bytes(rng.randbytes(32)),
            )
        )
        stack.enter_context(
            patch.object(
                x448.X448PrivateKey,
                "generate",
                lambda: x448.X448PrivateKey.from_private_bytes(rng.randbytes(56)),
            )
        )
        stack.enter_context(
            patch.object(
                ec,
                "generate_private_key",
                lambda curve, backend=None: ec.derive_private_key(rng.randrange(1, 2**128), curve),
            )
        )
        yield


def client_datagrams(
    server_name: str, version: int = V1, *, seed: int = 0, large: bool = False
) -> list[bytes]:
    """The first flight of an aioquic client: its Initial datagrams, 1200 bytes each.

    ``large`` adds aioquic's 1200-byte quantum-readiness transport parameter, which makes
    the ClientHello span two Initial packets (two datagrams), as post-quantum key shares
    do in browsers.
    """
    with deterministic(seed):
        config = QuicConfiguration(
            is_client=True,
            server_name=server_name,
            alpn_protocols=["h3"],
            supported_versions=[version],
            quantum_readiness_test=large,
        )
        conn = QuicConnection(configuration=config)
        conn.connect(("198.19.0.1", 443), now=0.0)
        return [data for data, _ in conn.datagrams_to_send(now=0.0)]


def client_initial_context(version: int, dcid: bytes) -> CryptoContext:
    """aioquic's protection of client Initials for ``version`` (any of SALTS)."""
    algorithm = cipher_suite_hash(INITIAL_CIPHER_SUITE)
    initial_secret = hkdf_extract(algorithm, SALTS[version], dcid)
    secret = hkdf_expand_label(algorithm, initial_secret, b"client in", b"", 32)
    context = CryptoContext()
    # aioquic picks the "quicv2" labels for v2 and the "quic" labels for anything else.
    context.setup(cipher_suite=INITIAL_CIPHER_SUITE, secret=secret, version=version)
    return context


@dataclass(frozen=True)
class OpenedInitial:
    version: int
    dcid: bytes
    scid: bytes
    token: bytes
    pn: int
    payload: bytes
    end: int  # length of the packet; aioquic pads the datagram with zeros after it


def open_initial(packet: bytes) -> OpenedInitial:
    """Decrypt the client Initial at the start of ``packet`` with aioquic."""
    buf = Buffer(data=packet)
    header = pull_quic_header(buf)
    context = client_initial_context(header.version, header.destination_cid)
    _, payload, pn, _ = context.decrypt_packet(packet[: header.packet_length], buf.tell(), 0)
    return OpenedInitial(
        header.version,
        header.destination_cid,
        header.source_cid,
        header.token,
        pn,
        payload,
        header.packet_length,
    )


def varint(value: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(value)
    return buf.data


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def crypto_stream(payloads: list[bytes]) -> bytes:
    """The CRYPTO stream carried by decrypted Initial payloads (frames in any order)."""
    pieces: dict[int, bytes] = {}
    for payload in payloads:
        p = 0
        while p < len(payload):
            if payload[p] in (0x00, 0x01):  # PADDING, PING
                p += 1
                continue
            assert payload[p] == 0x06, f"unexpected frame type {payload[p]:#x}"
            buf = Buffer(data=payload[p + 1 :])
            offset, length = buf.pull_uint_var(), buf.pull_uint_var()
            start = p + 1 + buf.tell()
            pieces[offset] = payload[start : start + length]
            p = start + length
    stream = b""
    for offset in sorted(pieces):
        assert offset == len(stream), "gap in the CRYPTO stream"
        stream += pieces[offset]
    return stream


def seal_initial(
    version: int,
    dcid: bytes,
    scid: bytes,
    pn: int,
    payload: bytes,
    *,
    token: bytes = b"",
    pn_len: int = 4,
    keys_dcid: bytes | None = None,
) -> bytes:
    """A protected client Initial carrying ``payload`` (frames, unpadded).

    ``keys_dcid`` derives the keys from another DCID: a client's later Initials to the
    server-chosen ``dcid`` keep the keys of its original one (RFC 9001 section 5.2).
    """
    length = pn_len + len(payload) + 16
    header = (
        bytes([0xC0 | TYPE_BITS[version]["initial"] << 4 | (pn_len - 1)])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + varint(len(token))
        + token
        + (0x4000 | length).to_bytes(2, "big")
        + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    )
    context = client_initial_context(version, keys_dcid if keys_dcid is not None else dcid)
    return context.encrypt_packet(header, payload, pn)


def opaque_long_packet(
    version: int, kind: str, dcid: bytes, scid: bytes, size: int, rng: random.Random
) -> bytes:
    """A 0-RTT or Handshake packet of ``size`` bytes whose protected part is random.

    Its keys come from the TLS handshake, which a passive observer never has, so random
    bytes look exactly like the real thing to it (and to tshark).
    """
    head = (
        bytes([0xC0 | TYPE_BITS[version][kind] << 4 | rng.randrange(16)])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
    )
    length = size - len(head) - 2
    return head + (0x4000 | length).to_bytes(2, "big") + rng.randbytes(length)


def pad_to(payload: bytes, version: int, dcid: bytes, scid: bytes, size: int = 1200) -> bytes:
    """``payload`` followed by PADDING so that its sealed Initial is ``size`` bytes."""
    overhead = len(seal_initial(version, dcid, scid, 0, payload)) - len(payload)
    return payload + bytes(max(0, size - overhead - len(payload)))


# ------------------------------------------------------------------ captures


@dataclass(frozen=True)
class Datagram:
    client: str  # client IP (IPv4 from 198.18.10.0/24, or IPv6 from fd00::/8)
    server: str
    sport: int
    payload: bytes
    completes: str | None = None  # server name whose ClientHello this datagram completes


def fixture_v1() -> list[Datagram]:
    """QUIC v1 to a TikTok name over IPv4, and to an innocent name over IPv6."""
    tiktok = client_datagrams("www.tiktok.com", V1, seed=101)
    example = client_datagrams("www.example.org", V1, seed=102)
    return [
        Datagram("198.18.10.1", "198.19.0.1", 50001, tiktok[0], "www.tiktok.com"),
        Datagram("fd00::a:1", "fd00::b:1", 50002, example[0], "www.example.org"),
    ]


def fixture_v2() -> list[Datagram]:
    """QUIC v2 (RFC 9369): other salt, other HKDF labels, other long-header type bits."""
    name = "api16-normal-c-useast1a.tiktokv.com"
    (datagram,) = client_datagrams(name, V2, seed=201)
    return [Datagram("198.18.10.2", "198.19.0.2", 50003, datagram, name)]


def fixture_draft29() -> list[Datagram]:
    """draft-29 (still sent by old Chromium-based apps): a v1 flight re-protected."""
    name = "v16m.tiktokcdn.com"
    (datagram,) = client_datagrams(name, V1, seed=301)
    opened = open_initial(datagram)
    sealed = seal_initial(DRAFT_29, opened.dcid, opened.scid, opened.pn, opened.payload)
    sealed += datagram[opened.end :]  # keep aioquic's datagram padding
    return [Datagram("198.18.10.3", "198.19.0.3", 50004, sealed, name)]


def fixture_coalesced() -> list[Datagram]:
    """An Initial coalesced with a 0-RTT packet in one 1200-byte datagram."""
    name = "www.tiktok.com"
    (datagram,) = client_datagrams(name, V1, seed=401)
    opened = open_initial(datagram)
    payload = crypto_frame(0, crypto_stream([opened.payload]))
    initial = seal_initial(V1, opened.dcid, opened.scid, opened.pn, payload)
    zero_rtt = opaque_long_packet(
        V1, "0rtt", opened.dcid, opened.scid, 1200 - len(initial), random.Random(402)
    )
    return [Datagram("198.18.10.4", "198.19.0.4", 50005, initial + zero_rtt, name)]


def fixture_crypto_out_of_order() -> list[Datagram]:
    """Chromium-style scattering: the ClientHello cut into CRYPTO frames that arrive out
    of order, across two datagrams (the second half first), with PING and PADDING frames
    between them and one overlapping retransmitted range."""
    name = "www.tiktok.com"
    (datagram,) = client_datagrams(name, V1, seed=501)
    opened = open_initial(datagram)
    stream = crypto_stream([opened.payload])
    cuts = [0, 40, 97, 150, len(stream) // 2, len(stream) - 120, len(stream)]
    pieces = [(cuts[i], stream[cuts[i] : cuts[i + 1]]) for i in range(len(cuts) - 1)]
    first_half, second_half = pieces[:4], pieces[4:]
    # pn 1 carries the second half and travels first; the overlap re-sends bytes 30-60.
    late = b"\x01".join(crypto_frame(o, d) for o, d in reversed(second_half))
    early = (
        crypto_frame(*first_half[2])
        + b"\x00\x00\x01"
        + crypto_frame(*first_half[0])
        + crypto_frame(30, stream[30:60])
        + b"\x01\x00"
        + crypto_frame(*first_half[3])
        + b"\x01"
        + crypto_frame(*first_half[1])
    )
    dcid, scid = opened.dcid, opened.scid
    return [
        Datagram(
            "198.18.10.5",
            "198.19.0.5",
            50006,
            seal_initial(V1, dcid, scid, 1, pad_to(late, V1, dcid, scid)),
        ),
        Datagram(
            "198.18.10.5",
            "198.19.0.5",
            50006,
            seal_initial(V1, dcid, scid, 0, pad_to(early, V1, dcid, scid)),
            name,
        ),
    ]


def fixture_two_initials() -> list[Datagram]:
    """A ClientHello too large for one Initial: two Initial packets in two datagrams."""
    name = "api16-normal-c-useast1a.tiktokv.com"
    first, second = client_datagrams(name, V1, seed=601, large=True)
    return [
        Datagram("198.18.10.6", "198.19.0.6", 50007, first),
        Datagram("198.18.10.6", "198.19.0.6", 50007, second, name),
    ]


FIXTURES = {
    "quic-v1": fixture_v1,
    "quic-v2": fixture_v2,
    "quic-draft29": fixture_draft29,
    "quic-coalesced": fixture_coalesced,
    "quic-crypto-out-of-order": fixture_crypto_out_of_order,
    "quic-two-initials": fixture_two_initials,
}


def _mac(ip: str) -> str:
    """A locally administered unicast MAC derived from an address, stable across runs."""
    return "02:" + hashlib.sha256(ip.encode()).digest()[:5].hex(":")


def write_capture(stem: str, datagrams: list[Datagram]) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    frames = []
    expected = []
    for number, d in enumerate(datagrams, start=1):
        net = (
            IPv6(src=d.client, dst=d.server) if ":" in d.client else IP(src=d.client, dst=d.server)
        )
        frame = (
            Ether(src=_mac(d.client), dst=_mac(d.server))
            / net
            / UDP(sport=d.sport, dport=443)
            / d.payload
        )
        frame.time = EPOCH + (number - 1) * 0.010
        frames.append(frame)
        if d.completes:
            expected.append(
                {"proto": "quic-sni", "name": d.completes, "client_ip": d.client, "frame": number}
            )
    wrpcap(str(HERE / f"{stem}.pcap"), frames)
    (HERE / "expected").mkdir(exist_ok=True)
    (HERE / "expected" / f"{stem}.json").write_text(json.dumps(expected, indent=2) + "\n")


def tshark_names(path: Path) -> list[str] | None:
    """Server names tshark's own QUIC dissector reads from a capture; None without tshark."""
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-Y",
            "quic",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    return [name for line in out.splitlines() for name in line.split(",") if name]


def main() -> int:
    status = 0
    for stem, build in FIXTURES.items():
        datagrams = build()
        write_capture(stem, datagrams)
        names = sorted(d.completes for d in datagrams if d.completes)
        seen = tshark_names(HERE / f"{stem}.pcap")
        verdict = (
            "tshark not found"
            if seen is None
            else ("tshark agrees" if sorted(seen) == names else f"tshark DISAGREES: {seen}")
        )
        if seen is not None and sorted(seen) != names:
            status = 1
        print(f"{stem}.pcap: {len(datagrams)} frames, {names} ({verdict})")
    return status


if __name__ == "__main__":
    sys.exit(main())
