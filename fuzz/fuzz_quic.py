"""Fuzz the QUIC Initial path: header protection, decryption and CRYPTO reassembly.

Run alone: ``.venv/bin/python fuzz/fuzz_quic.py fuzz/corpus/quic -dict=fuzz/dicts/quic.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only quic``).

Random datagrams never authenticate, so most inputs are programs (read with
``atheris.FuzzedDataProvider``) that build real client Initials: a version (v1, v2,
draft-29), connection IDs, a token, a TLS handshake message (a well-formed ClientHello
with a server_name, or fuzzed bytes), cut into CRYPTO frames that may overlap, repeat
and come out of order, mixed with PING, PADDING and ACK frames, packed into packets with
their own packet numbers, coalesced or not into a few datagrams, then encrypted and
header-protected per RFC 9001 (RFC 9369 for v2) with the keys of the module's own
``derive_client_initial_keys``. Some programs add a junk datagram or flip a byte of a
built one; the rest of the inputs are fed as raw datagrams.

What counts as a finding: any exception; more connections than ``max_flows``; CRYPTO
bytes held that the table's count does not match; and the differential check: a
well-formed ClientHello sent whole in valid Initials, nothing else fed and no more
packets than the per-connection budget, must come back exactly once, with its name.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import atheris
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

with atheris.instrument_imports():
    from detector.extract.quic import (
        INITIAL, QUIC_DRAFT_29, QUIC_V1, QUIC_V2, VERSIONS, InitialTable, derive_client_initial_keys,
    )

CLIENT = (b"\xc0\x00\x02\x0a", 50000)
VERSION_CHOICES = (QUIC_V1, QUIC_V2, QUIC_DRAFT_29)
MAX_DATAGRAMS = 4
MAX_PACKETS = 5
MAX_PIECES = 6
#: Letters of the server names built: a name of them is kept as it is by the parser.
NAME_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789-."
EXT_SERVER_NAME, EXT_PADDING = 0x0000, 0x0015
FRAME_PADDING, FRAME_PING, FRAME_ACK, FRAME_CRYPTO = 0x00, 0x01, 0x02, 0x06
#: Keys per (version, DCID): derivation is the slow part of building, and DCIDs repeat.
_KEYS: dict[tuple[int, bytes], tuple[AESGCM, bytes, object]] = {}


def _varint(value: int) -> bytes:
    """A QUIC variable-length integer in its shortest form."""
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(value)


def _keys(version: int, dcid: bytes) -> tuple[AESGCM, bytes, object]:
    """The client's AEAD, IV and header-protection encryptor for (version, DCID)."""
    keys = _KEYS.get((version, dcid))
    if keys is None:
        derived = derive_client_initial_keys(version, dcid)
        assert derived is not None
        key, iv, hp = derived
        if len(_KEYS) > 256:
            _KEYS.clear()
        keys = _KEYS[version, dcid] = (AESGCM(key), iv, Cipher(algorithms.AES(hp), modes.ECB()).encryptor())
    return keys


def _seal(version: int, dcid: bytes, scid: bytes, token: bytes, pn: int, pn_len: int, payload: bytes) -> bytes:
    """One client Initial, encrypted and header-protected (RFC 9001 sections 5.3, 5.4)."""
    aead, iv, hp = _keys(version, dcid)
    type_bits = VERSIONS[version].kinds.index(INITIAL)
    first = 0xC0 | type_bits << 4 | (pn_len - 1)
    length = pn_len + len(payload) + 16
    header = (
        bytes((first,)) + version.to_bytes(4, "big") + bytes((len(dcid),)) + dcid + bytes((len(scid),)) + scid
        + _varint(len(token)) + token + (0x4000 | length).to_bytes(2, "big")
    )
    pn_bytes = (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    sealed = aead.encrypt(nonce, payload, header + pn_bytes)
    mask = hp.update(sealed[4 - pn_len : 20 - pn_len])  # the sample starts 4 bytes after the pn
    protected_pn = bytes(b ^ m for b, m in zip(pn_bytes, mask[1:]))
    return bytes((first ^ (mask[0] & 0x0F),)) + header[1:] + protected_pn + sealed


def _client_hello(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, str]:
    """A well-formed ClientHello handshake message with a server_name, and that name."""
    name = b"x" + bytes(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 60)))
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack("!HH", EXT_SERVER_NAME, len(sni)) + sni
    padding = fdp.ConsumeIntInRange(0, 2500)  # a large hello spans several packets
    if padding:
        extensions += struct.pack("!HH", EXT_PADDING, padding) + bytes(padding)
    random = fdp.ConsumeBytes(32).ljust(32, b"\x00")
    body = (
        b"\x03\x03" + random + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
        + len(extensions).to_bytes(2, "big") + extensions
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body, name.decode().rstrip(".")


def _pieces(fdp: atheris.FuzzedDataProvider, message: bytes) -> list[tuple[int, bytes]]:
    """The message cut into CRYPTO pieces that cover it: some overlap, one may repeat,
    in a fuzzed order."""
    n = len(message)
    cuts = sorted({0, n, *(fdp.ConsumeIntInRange(0, n) for _ in range(fdp.ConsumeIntInRange(0, MAX_PIECES - 1)))})
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        a = max(0, a - fdp.ConsumeIntInRange(0, 3) ** 2)  # overlap the piece before
        pieces.append((a, message[a:b]))
    if pieces and fdp.ConsumeBool():
        pieces.append(pieces[fdp.ConsumeIntInRange(0, len(pieces) - 1)])
    for i in range(len(pieces) - 1):
        j = fdp.ConsumeIntInRange(i, len(pieces) - 1)
        pieces[i], pieces[j] = pieces[j], pieces[i]
    return pieces or [(0, b"")]


def _extra_frame(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A frame an Initial may carry besides CRYPTO: nothing, PING, PADDING or an ACK."""
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 1:
        return bytes((FRAME_PING,))
    if kind == 2:
        return bytes(fdp.ConsumeIntInRange(1, 40))  # PADDING
    if kind == 3:
        largest = fdp.ConsumeIntInRange(0, 1000)
        return bytes((FRAME_ACK,)) + _varint(largest) + _varint(fdp.ConsumeIntInRange(0, 100)) + b"\x00" + _varint(
            fdp.ConsumeIntInRange(0, largest))
    return b""


def _flight(fdp: atheris.FuzzedDataProvider) -> tuple[list[bytes], int, str | None, int]:
    """Datagrams of one client's Initials: (datagrams, version, SNI of a well-formed
    hello or None, packets sent)."""
    version = VERSION_CHOICES[fdp.ConsumeIntInRange(0, len(VERSION_CHOICES) - 1)]
    dcid = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20))
    scid = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20))
    token = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)) if fdp.ConsumeBool() else b""
    sni = None
    if fdp.ConsumeBool():
        message, sni = _client_hello(fdp)
    else:  # fuzzed bytes, sometimes behind a ClientHello message header
        message = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
        if fdp.ConsumeBool():
            message = b"\x01" + len(message).to_bytes(3, "big") + message
    pieces = _pieces(fdp, message)
    packets: list[bytearray] = [bytearray() for _ in range(fdp.ConsumeIntInRange(1, min(MAX_PACKETS, len(pieces))))]
    for offset, chunk in pieces:
        payload = packets[fdp.ConsumeIntInRange(0, len(packets) - 1)]
        payload += _extra_frame(fdp) + bytes((FRAME_CRYPTO,)) + _varint(offset) + _varint(len(chunk)) + chunk
    datagrams: list[bytearray] = []
    expected = 0  # what the receiver expects next: the largest packet number seen + 1
    for payload in packets:
        payload += _extra_frame(fdp)
        payload += bytes(max(0, 4 - len(payload)))  # PADDING, so the header sample fits
        pn = fdp.ConsumeIntInRange(0, 300)
        # The shortest length the receiver decodes right (RFC 9000 A.3), or a longer one.
        pn_len = max(fdp.ConsumeIntInRange(1, 4), 1 if 2 * abs(pn - expected) < 255 else 2)
        expected = max(expected, pn + 1)
        packet = _seal(version, dcid, scid, token, pn, pn_len, bytes(payload))
        if datagrams and len(datagrams) >= MAX_DATAGRAMS or (datagrams and fdp.ConsumeBool()):
            datagrams[-1] += packet  # coalesced with the packet before
        else:
            datagrams.append(bytearray(packet))
    for datagram in datagrams:
        datagram += bytes(fdp.ConsumeIntInRange(0, 3) * 100)  # zeros padding the datagram
    return [bytes(d) for d in datagrams], version, sni, len(packets)


def _check(table: InitialTable) -> None:
    assert len(table) <= table.max_flows, (len(table), table.max_flows)
    held = sum(len(conn.buf) + len(conn.have) for conn in table._conns.values())
    assert held == table._buffered, (held, table._buffered)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    table = InitialTable(fdp.ConsumeIntInRange(1, 4), 30.0, fdp.ConsumeIntInRange(1, 8))
    if not fdp.ConsumeIntInRange(0, 3):  # raw datagrams
        for i in range(fdp.ConsumeIntInRange(1, MAX_DATAGRAMS)):
            table.feed(CLIENT, float(i), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1500)))
            _check(table)
        return
    datagrams, version, sni, packets = _flight(fdp)
    clean = True
    if fdp.ConsumeBool():  # junk from the same client, somewhere in the flight
        datagrams.insert(fdp.ConsumeIntInRange(0, len(datagrams)), fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300)))
        clean = False
    if fdp.ConsumeBool():  # a byte flipped on the way
        i = fdp.ConsumeIntInRange(0, len(datagrams) - 1)
        if datagrams[i]:
            at = fdp.ConsumeIntInRange(0, len(datagrams[i]) - 1)
            datagrams[i] = datagrams[i][:at] + bytes((datagrams[i][at] ^ fdp.ConsumeIntInRange(1, 255),)) + datagrams[i][at + 1 :]
            clean = False
    hellos = []
    for i, datagram in enumerate(datagrams):
        hellos += table.feed(CLIENT, float(i), datagram)
        _check(table)
    for found in hellos:
        assert found.version in VERSIONS
    if clean and sni is not None and packets <= table.max_initials_per_conn:
        assert [(h.version, h.hello.sni) for h in hellos] == [(version, sni)], (hellos, sni, table.__dict__)


def seeds() -> Iterator[bytes]:
    """Programs feeding the QUIC datagrams of the seed captures as they are, and
    programs of fixed pseudo-random bytes, which build flights."""
    import random

    from seeds import packets, unique

    def inputs() -> Iterator[bytes]:
        for packet in packets():
            if packet.l4 == 17 and packet.dport == 443 and packet.payload[:1] >= b"\x80":
                # FuzzedDataProvider takes integers from the end and bytes from the front:
                # max_flows 4, budget 8, raw mode, one datagram of this length.
                length = min(len(packet.payload), 1500)
                yield packet.payload[:length] + struct.pack("<H", length) + bytes((0, 0, 7, 3))
        rng = random.Random(9001)
        for size in range(64, 1600, 6):
            yield rng.randbytes(size)

    return iter(unique(inputs()))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
