"""QUIC client Initial packets: decrypt them and reassemble the TLS ClientHello inside.

A QUIC client's first flight is encrypted, but not secret: the Initial keys derive from
the Destination Connection ID the client sends in the clear and a salt published for
each version (RFC 9001 section 5.2, RFC 9369 section 3.3.1).  A passive observer can
therefore remove header protection (AES-128-ECB mask), decrypt the payload
(AES-128-GCM, the header as associated data) and read the CRYPTO frames that carry the
TLS ClientHello: that is where a QUIC connection's server name is.

The layout follows aioquic's ``quic/crypto.py`` and ``quic/packet.py``: version constants
first, then small pure functions (key derivation, long-header parsing, packet number
decoding, frame walking), then the one class that must hold state, ``InitialTable``.

Why state at all: a ClientHello with post-quantum key shares (~1.9 kB) does not fit in
one 1200-byte Initial, so its CRYPTO data spans two or more packets, often in separate
datagrams; and Chromium scatters it on purpose ("chaos protection": CRYPTO frames out
of order, split, interleaved with PING and PADDING).  The table reassembles CRYPTO
data per (client, version, original DCID) until the contiguous prefix from offset 0
holds the whole handshake message, reports the ClientHello once, and then keeps only a
"done" marker so that the rest of the connection's Initials cost a dict lookup.

After the server answers, a client addresses its later Initials to the server-chosen
connection ID but keeps the keys of its original DCID (RFC 9001 section 5.2).  Those
packets are recognised by trying the keys of the connection last seen from the same
client before deriving new ones, so a retransmitted piece of a ClientHello still
completes it, and a connection's tail is not miscounted as undecryptable.

Everything is bounded and counted: connections (``max_flows``, oldest evicted), idle
time (``timeout``), decryptions per connection (``max_initials_per_conn``), CRYPTO
bytes per connection (``MAX_CRYPTO``) and in the whole table (``MAX_BUFFERED``), key
derivations per datagram (coalesced packets must share the first packet's DCID, RFC
9000 section 12.2, so there is at most one new key per datagram).  Nothing here raises
on any input: every length is checked against the bytes that hold it, every loop
consumes input on each pass, and the only exception the crypto can raise on bad input
(``InvalidTag``) is caught where it occurs.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from .clienthello import ClientHello, parse_client_hello

VERSION_NEGOTIATION = 0x00000000
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
QUIC_DRAFT_29 = 0xFF00001D

INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
INITIAL_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
INITIAL_SALT_DRAFT_29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")

#: Long-header packet kinds, independent of version (numbered as QUIC v1 encodes them).
INITIAL, ZERO_RTT, HANDSHAKE, RETRY = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class VersionParams:
    """What differs between the QUIC versions whose Initials we can open."""

    salt: bytes
    label_prefix: bytes  # HKDF label prefix: b"quic " or b"quicv2 "
    kinds: tuple[int, int, int, int]  # packet kind for each value of the 2 type bits


_V1_PARAMS = VersionParams(INITIAL_SALT_V1, b"quic ", (INITIAL, ZERO_RTT, HANDSHAKE, RETRY))
#: RFC 9369 section 3.2 rotates the type bits so that middleboxes cannot ossify on v1's.
_V2_PARAMS = VersionParams(INITIAL_SALT_V2, b"quicv2 ", (RETRY, INITIAL, ZERO_RTT, HANDSHAKE))
_DRAFT_29_PARAMS = VersionParams(
    INITIAL_SALT_DRAFT_29, b"quic ", (INITIAL, ZERO_RTT, HANDSHAKE, RETRY)
)

#: Drafts 29-32 share draft-29's salt; drafts 33 and 34 already used the v1 salt.  Older
#: drafts (and Google QUIC) frame Initials differently and are not worth decoding now.
VERSIONS: dict[int, VersionParams] = {
    QUIC_V1: _V1_PARAMS,
    QUIC_V2: _V2_PARAMS,
    **{0xFF000000 + draft: _DRAFT_29_PARAMS for draft in range(29, 33)},
    **{0xFF000000 + draft: _V1_PARAMS for draft in (33, 34)},
}

#: RFC 9000 section 17.2: connection IDs are at most 20 bytes in the versions we open.
MAX_CID = 20
#: Header protection samples 16 bytes starting 4 bytes after the packet number's start
#: (RFC 9001 section 5.4.2), so a protected packet is at least 20 bytes long.
_SAMPLE_OFFSET = 4
_SAMPLE_LEN = 16
_MIN_PROTECTED = _SAMPLE_OFFSET + _SAMPLE_LEN
#: Largest CRYPTO stream we reassemble per connection; a ClientHello is 0.3-8 kB, so a
#: larger one is an attack or a bug, and either way not worth the memory.
MAX_CRYPTO = 64 * 1024
#: All CRYPTO buffers of the table together; oldest connections are evicted past it.
MAX_BUFFERED = 64 * 1024 * 1024

_FRAME_PADDING = 0x00
_FRAME_PING = 0x01
_FRAME_ACK = 0x02
_FRAME_ACK_ECN = 0x03
_FRAME_CRYPTO = 0x06
_FRAME_CONNECTION_CLOSE = 0x1C
_MAX_VARINT = (1 << 62) - 1
_NON_PADDING = re.compile(rb"[^\x00]")
_ONES = b"\x01" * MAX_CRYPTO


# ---------------------------------------------------------------- key derivation

# cryptography is imported where it is first used: its bindings take longer to load than
# a replay of a small capture without QUIC takes to run. A live worker imports it before
# it drops privileges (``preload``), after which it may not be able to read the library.


#: Every module this file imports inside a function. Importing a package does not import
#: its submodules: each must be named (cryptography's hkdf, in Rust since 42, no longer
#: imports hashes, which a live worker then failed to import after dropping privileges).
LAZY_IMPORTS = (
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.ciphers",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.kdf.hkdf",
)


def preload() -> None:
    """Import the cryptography this module uses, now."""
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


def _hkdf_label(label: bytes, length: int) -> bytes:
    """The HkdfLabel structure of RFC 8446 section 7.1 with an empty context."""
    full = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00"


def hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label over SHA-256 with an empty context."""
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return HKDFExpand(SHA256(), length, _hkdf_label(label, length)).derive(secret)


def derive_client_initial_keys(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(key, iv, hp) protecting a client's Initial packets; None for an unknown version.

    client_initial_secret = HKDF-Expand-Label(HKDF-Extract(salt, dcid), "client in", "",
    32), which is exactly what HKDF (extract then expand) computes with that label.
    """
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    params = VERSIONS.get(version)
    if params is None:
        return None
    secret = HKDF(SHA256(), 32, params.salt, _hkdf_label(b"client in", 32)).derive(dcid)
    prefix = params.label_prefix
    return (
        hkdf_expand_label(secret, prefix + b"key", 16),
        hkdf_expand_label(secret, prefix + b"iv", 12),
        hkdf_expand_label(secret, prefix + b"hp", 16),
    )


# ---------------------------------------------------------------- packets


def _varint(data: bytes, p: int) -> tuple[int, int]:
    """A QUIC variable-length integer at data[p:] and the offset after it; -1 if cut short."""
    if p >= len(data):
        return -1, p
    size = 1 << (data[p] >> 6)
    end = p + size
    if end > len(data):
        return -1, p
    return int.from_bytes(data[p:end], "big") & ((1 << (8 * size - 2)) - 1), end


@dataclass(frozen=True, slots=True)
class LongHeader:
    """A long-header packet located inside a datagram (offsets index the datagram)."""

    start: int  # first byte of the packet
    version: int
    kind: int  # INITIAL, ZERO_RTT, HANDSHAKE or RETRY
    dcid: bytes
    pn_offset: int  # first byte of the protected packet number (== end for Retry)
    end: int  # first byte after the packet


def parse_long_header(data: bytes, start: int = 0) -> LongHeader | None:
    """The long-header packet at data[start:], for a version in VERSIONS.

    None when the packet is not a long header of a known version, or when its fields do
    not fit in the datagram: a connection ID over 20 bytes, a token or Length running
    past the end, or a protected packet too short to hold the header protection sample.
    """
    n = len(data)
    if start + 7 > n or not data[start] & 0x80:
        return None
    version = int.from_bytes(data[start + 1 : start + 5], "big")
    params = VERSIONS.get(version)
    if params is None:
        return None
    p = start + 5
    dcid_len = data[p]
    p += 1
    if dcid_len > MAX_CID or p + dcid_len >= n:
        return None
    dcid = data[p : p + dcid_len]
    p += dcid_len
    scid_len = data[p]
    p += 1 + scid_len
    if scid_len > MAX_CID or p > n:
        return None
    kind = params.kinds[(data[start] >> 4) & 0x03]
    if kind == RETRY:  # no Length field: a Retry fills the rest of the datagram
        return LongHeader(start, version, kind, dcid, n, n)
    if kind == INITIAL:
        token_len, p = _varint(data, p)
        if token_len < 0 or p + token_len > n:
            return None
        p += token_len
    length, p = _varint(data, p)
    if length < _MIN_PROTECTED or p + length > n:
        return None
    return LongHeader(start, version, kind, dcid, p, p + length)


def decode_packet_number(truncated: int, pn_len: int, expected: int) -> int:
    """The full packet number closest to ``expected`` (RFC 9000 appendix A.3)."""
    win = 1 << (8 * pn_len)
    half = win >> 1
    candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - half and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + half and candidate >= win:
        return candidate - win
    return candidate


class InitialKeys:
    """The packet protection of one connection's client Initials (AES-128-GCM suite)."""

    __slots__ = ("_aead", "_iv", "_hp")

    def __init__(self, key: bytes, iv: bytes, hp: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        # ECB is stateless per block, so one encryptor serves every mask of the connection.
        self._hp = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()

    @classmethod
    def for_client(cls, version: int, dcid: bytes) -> InitialKeys | None:
        """Keys for the client Initials of a connection; None for an unknown version."""
        keys = derive_client_initial_keys(version, dcid)
        return None if keys is None else cls(*keys)

    def unprotect(self, data: bytes, header: LongHeader) -> tuple[bytes, int]:
        """Remove header protection: (header with the packet number in clear, pn length).

        ``header`` comes from ``parse_long_header``, which guarantees the sample is there.
        """
        at = header.pn_offset + _SAMPLE_OFFSET
        mask = self._hp.update(data[at : at + _SAMPLE_LEN])
        first = data[header.start] ^ (mask[0] & 0x0F)
        pn_len = (first & 0x03) + 1
        pn_end = header.pn_offset + pn_len
        pn = int.from_bytes(data[header.pn_offset : pn_end], "big")
        pn ^= int.from_bytes(mask[1 : 1 + pn_len], "big")
        head = bytes((first,)) + data[header.start + 1 : header.pn_offset]
        return head + pn.to_bytes(pn_len, "big"), pn_len

    def open(self, data: bytes, header: LongHeader, expected_pn: int) -> tuple[bytes, int] | None:
        """Decrypt one Initial: (payload, packet number), or None if it does not authenticate.

        ``expected_pn`` is the largest packet number seen on the connection plus one.
        """
        plain_header, pn_len = self.unprotect(data, header)
        truncated = int.from_bytes(plain_header[-pn_len:], "big")
        pn = decode_packet_number(truncated, pn_len, expected_pn)
        nonce = (self._iv ^ pn).to_bytes(12, "big")
        ciphertext = data[header.pn_offset + pn_len : header.end]
        from cryptography.exceptions import InvalidTag

        try:
            payload = self._aead.decrypt(nonce, ciphertext, plain_header)
        except InvalidTag:
            return None
        return payload, pn


# ---------------------------------------------------------------- frames


def _skip_ack(payload: bytes, p: int, ecn: bool) -> int:
    """Offset after an ACK frame's fields (type already consumed); -1 if malformed."""
    largest, p = _varint(payload, p)
    delay, p = _varint(payload, p)
    count, p = _varint(payload, p)
    first_range, p = _varint(payload, p)
    if min(largest, delay, count, first_range) < 0:
        return -1
    if count > (len(payload) - p) // 2:  # each Gap + ACK Range Length takes >= 2 bytes
        return -1
    for _ in range(2 * count + (3 if ecn else 0)):  # the ranges, then ECT0, ECT1, ECN-CE
        value, p = _varint(payload, p)
        if value < 0:
            return -1
    return p


def _skip_connection_close(payload: bytes, p: int) -> int:
    """Offset after a transport CONNECTION_CLOSE frame's fields; -1 if malformed."""
    for _ in range(2):  # Error Code, Frame Type
        value, p = _varint(payload, p)
        if value < 0:
            return -1
    reason_len, p = _varint(payload, p)
    if reason_len < 0 or p + reason_len > len(payload):
        return -1
    return p + reason_len


def parse_initial_frames(payload: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """The CRYPTO frames of a decrypted Initial payload, and whether all of it parsed.

    Only the frames RFC 9000 section 12.4 allows in an Initial are understood (PADDING,
    PING, ACK, ACK with ECN, CRYPTO, transport CONNECTION_CLOSE); any other frame, or a
    frame cut short, ends the walk with ``False`` and the CRYPTO frames found before it.
    """
    frames: list[tuple[int, bytes]] = []
    n = len(payload)
    p = 0
    while p < n:
        frame_type = payload[p]
        if frame_type == _FRAME_PADDING:  # padding runs are long: skip them at C speed
            match = _NON_PADDING.search(payload, p)
            p = match.start() if match else n
            continue
        p += 1
        if frame_type == _FRAME_CRYPTO:
            offset, p = _varint(payload, p)
            length, p = _varint(payload, p)
            if offset < 0 or length < 0 or p + length > n or offset + length > _MAX_VARINT:
                return frames, False
            frames.append((offset, payload[p : p + length]))
            p += length
        elif frame_type in (_FRAME_ACK, _FRAME_ACK_ECN):
            p = _skip_ack(payload, p, frame_type == _FRAME_ACK_ECN)
        elif frame_type == _FRAME_CONNECTION_CLOSE:
            p = _skip_connection_close(payload, p)
        elif frame_type != _FRAME_PING:
            return frames, False
        if p < 0:
            return frames, False
    return frames, True


# ---------------------------------------------------------------- reassembly


@dataclass(frozen=True, slots=True)
class QuicHello:
    """A ClientHello read from the Initial packets of one QUIC connection."""

    version: int
    dcid: bytes  # the client's original Destination Connection ID
    hello: ClientHello


class _Connection:
    """Reassembly state of one connection's client Initials."""

    __slots__ = (
        "key",
        "client",
        "version",
        "dcid",
        "keys",
        "largest_pn",
        "decrypts",
        "last_seen",
        "done",
        "buf",
        "have",
        "need",
    )

    def __init__(self, client: Hashable, version: int, dcid: bytes, keys: InitialKeys, ts: float):
        self.key = (client, version, dcid)
        self.client = client
        self.version = version
        self.dcid = dcid
        self.keys = keys
        self.largest_pn = -1
        self.decrypts = 0  # decryptions tried with these keys (see _open_unknown_dcid)
        self.last_seen = ts
        self.done = False  # hello reported or given up: later Initials are skipped
        self.buf = bytearray()  # CRYPTO bytes by stream offset
        self.have = bytearray()  # 1 where buf holds received bytes, 0 in the gaps
        self.need = 0  # length of the handshake message once its header is in


class InitialTable:
    """Per (client address, original DCID): CRYPTO-frame reassembly of the client's first flight.

    Bounded: max_flows (oldest evicted, counted), timeout (expired, counted), at most
    max_initials_per_conn client Initials decrypted per connection, CRYPTO data capped at
    64 KiB.  ``evicted`` and ``expired`` count only connections dropped before their
    ClientHello was complete (the ones that may have cost a name); dropping a finished
    connection only means its later packets would be decrypted once more to be skipped.
    """

    #: The counter attribute names, for the metrics layer.
    COUNTERS = (
        "initials_decrypted",
        "decrypt_failed",
        "unknown_version",
        "version_negotiation",
        "retry",
        "zero_rtt",
        "handshake",
        "short_header",
        "after_done",
        "over_budget",
        "evicted",
        "expired",
        "crypto_overflow",
        "hellos",
        "hello_invalid",
        "malformed",
    )

    def __init__(
        self, max_flows: int = 16384, timeout: float = 30.0, max_initials_per_conn: int = 8
    ):
        if max_flows < 1 or max_initials_per_conn < 1:
            raise ValueError("max_flows and max_initials_per_conn must be at least 1")
        self.max_flows = max_flows
        self.timeout = timeout
        self.max_initials_per_conn = max_initials_per_conn
        self._conns: OrderedDict[tuple[Hashable, int, bytes], _Connection] = OrderedDict()
        self._latest: dict[Hashable, _Connection] = {}  # client -> its newest connection
        self._buffered = 0  # bytes held in all buf and have arrays
        self.initials_decrypted = 0  # client Initials that authenticated
        self.decrypt_failed = 0  # Initials no key opened (corrupt, forged, or a server's)
        self.unknown_version = 0  # long-header packets of a version we cannot open
        self.version_negotiation = 0
        self.retry = 0
        self.zero_rtt = 0
        self.handshake = 0
        self.short_header = 0
        self.after_done = 0  # Initials of connections whose hello was already complete
        self.over_budget = 0  # connections given up after max_initials_per_conn Initials
        self.evicted = 0
        self.expired = 0
        self.crypto_overflow = 0  # connections given up: CRYPTO data past MAX_CRYPTO
        self.hellos = 0
        self.hello_invalid = 0  # complete CRYPTO messages that were no valid ClientHello
        self.malformed = 0  # packets or frames that broke the wire format

    def __len__(self) -> int:
        return len(self._conns)

    def feed(self, client: Hashable, ts: float, datagram: bytes | memoryview) -> list[QuicHello]:
        """One UDP datagram sent by a client (to the QUIC port).

        Walks coalesced packets (long header length field), decrypts client Initial
        packets of known versions, skips 0-RTT/Handshake/Retry/short header packets
        (counted by kind), recognises Version Negotiation (version 0) and counts it.
        Returns the ClientHellos that became complete with this datagram (normally 0 or 1).
        """
        n = len(datagram)
        if not n or not datagram[0] & 0x80:  # 1-RTT traffic: the bulk, and no crypto
            if n:
                self.short_header += 1
            else:
                self.malformed += 1
            return []
        data = datagram if type(datagram) is bytes else bytes(datagram)
        hellos: list[QuicHello] = []
        first_dcid: bytes | None = None
        p = 0
        while p < n:  # each pass consumes one whole packet or leaves the loop
            if not data[p] & 0x80:  # a short header packet is always the last one...
                if data[p]:  # ...and zeros after the packets are datagram padding
                    self.short_header += 1
                break
            if p + 5 > n:
                self.malformed += 1
                break
            version = int.from_bytes(data[p + 1 : p + 5], "big")
            if version == VERSION_NEGOTIATION:
                self.version_negotiation += 1
                break
            if version not in VERSIONS:
                self.unknown_version += 1
                break
            header = parse_long_header(data, p)
            # RFC 9000 section 12.2: ignore coalesced packets addressed to another DCID.
            if header is None or (first_dcid is not None and header.dcid != first_dcid):
                self.malformed += 1
                break
            first_dcid = header.dcid
            if header.kind == INITIAL:
                if not self._on_initial(client, ts, data, header, hellos):
                    break
            elif header.kind == RETRY:
                self.retry += 1
                break
            elif header.kind == ZERO_RTT:
                self.zero_rtt += 1
            else:
                self.handshake += 1
            p = header.end
        return hellos

    def expire(self, now: float) -> None:
        """Drop connections idle for ``timeout`` seconds or more."""
        while self._conns:
            conn = next(iter(self._conns.values()))
            if now - conn.last_seen < self.timeout:
                break
            if not conn.done:
                self.expired += 1
            self._remove(conn)

    # -------------------------------------------------------------- internals

    def _on_initial(
        self, client: Hashable, ts: float, data: bytes, header: LongHeader, hellos: list[QuicHello]
    ) -> bool:
        """Decrypt one client Initial and take its CRYPTO frames; False stops the datagram."""
        conn = self._conns.get((client, header.version, header.dcid))
        if conn is None:
            conn, opened = self._open_unknown_dcid(client, ts, data, header)
            if conn is None or opened is None:
                self.decrypt_failed += 1
                return False
        elif conn.done:
            self.after_done += 1
            self._touch(conn, ts)
            return True
        else:
            conn.decrypts += 1
            opened = conn.keys.open(data, header, conn.largest_pn + 1)
            if opened is None:
                self.decrypt_failed += 1
                self._check_budget(conn)
                return False
            self._touch(conn, ts)
        payload, pn = opened
        self.initials_decrypted += 1
        if conn.done:  # a finished connection's tail, recognised by its keys
            self.after_done += 1
            return True
        conn.largest_pn = max(conn.largest_pn, pn)
        frames, well_formed = parse_initial_frames(payload)
        if not well_formed:
            self.malformed += 1
        for offset, chunk in frames:
            hello = self._add_crypto(conn, offset, chunk)
            if hello is not None:
                self.hellos += 1
                hellos.append(QuicHello(conn.version, conn.dcid, hello))
            if conn.done:
                break
        self._check_budget(conn)
        return True

    def _open_unknown_dcid(
        self, client: Hashable, ts: float, data: bytes, header: LongHeader
    ) -> tuple[_Connection | None, tuple[bytes, int] | None]:
        """Open an Initial addressed to a DCID without a connection: (connection, opened).

        First with the keys of the client's newest connection, whose later Initials go to
        the server-chosen CID; failing that, as the first packet of a new connection with
        keys from this DCID (the connection is created only if the packet authenticates).
        Successful tries spend the newest connection's budget even once it is done, so
        a flood of its (forgeable) tail packets costs at most that many decryptions.
        """
        latest = self._latest.get(client)
        if (
            latest is not None
            and latest.version == header.version
            and latest.decrypts < self.max_initials_per_conn
        ):
            opened = latest.keys.open(data, header, latest.largest_pn + 1)
            if opened is not None:
                latest.decrypts += 1
                self._touch(latest, ts)
                return latest, opened
        keys = InitialKeys.for_client(header.version, header.dcid)
        opened = keys.open(data, header, 0) if keys is not None else None
        if keys is None or opened is None:
            return None, None
        conn = self._add(client, header, keys, ts)
        conn.decrypts = 1
        return conn, opened

    def _add_crypto(self, conn: _Connection, offset: int, chunk: bytes) -> ClientHello | None:
        """Store one CRYPTO frame; the ClientHello if it completes the handshake message."""
        end = offset + len(chunk)
        if conn.need:  # bytes past the message are not ours to keep
            if end > conn.need:
                chunk = chunk[: max(0, conn.need - offset)]
                end = offset + len(chunk)
        elif end > MAX_CRYPTO:
            self.crypto_overflow += 1
            self._finish(conn)
            return None
        if not chunk:
            return None
        grow = end - len(conn.buf)
        if grow > 0:
            self._reserve(conn, 2 * grow)
            conn.buf += bytes(grow)
            conn.have += bytes(grow)
            self._buffered += 2 * grow
        conn.buf[offset:end] = chunk
        conn.have[offset:end] = _ONES[: len(chunk)]
        prefix = conn.have.find(0)
        if prefix < 0:
            prefix = len(conn.have)
        if not conn.need:
            if prefix < 4:
                return None
            if conn.buf[0] != 1:  # the first flight must open with a ClientHello
                self.hello_invalid += 1
                self._finish(conn)
                return None
            need = 4 + int.from_bytes(conn.buf[1:4], "big")
            if need > MAX_CRYPTO:
                self.crypto_overflow += 1
                self._finish(conn)
                return None
            conn.need = need
            extra = len(conn.buf) - need
            if extra > 0:
                del conn.buf[need:]
                del conn.have[need:]
                self._buffered -= 2 * extra
        if prefix < conn.need:
            return None
        hello = parse_client_hello(conn.buf)
        if hello is None:
            self.hello_invalid += 1
        self._finish(conn)
        return hello

    def _check_budget(self, conn: _Connection) -> None:
        if not conn.done and conn.decrypts >= self.max_initials_per_conn:
            self.over_budget += 1
            self._finish(conn)

    def _add(
        self, client: Hashable, header: LongHeader, keys: InitialKeys, ts: float
    ) -> _Connection:
        if len(self._conns) >= self.max_flows:
            self._evict_oldest()
        conn = _Connection(client, header.version, header.dcid, keys, ts)
        self._conns[conn.key] = conn
        self._latest[client] = conn
        return conn

    def _touch(self, conn: _Connection, ts: float) -> None:
        conn.last_seen = ts
        self._conns.move_to_end(conn.key)

    def _reserve(self, conn: _Connection, amount: int) -> None:
        """Evict the oldest other connections until ``amount`` more bytes fit MAX_BUFFERED."""
        while self._buffered + amount > MAX_BUFFERED:
            if next(iter(self._conns.values())) is conn:
                break  # only conn (the most recently touched) is left; alone, it fits
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        conn = next(iter(self._conns.values()))
        if not conn.done:
            self.evicted += 1
        self._remove(conn)

    def _remove(self, conn: _Connection) -> None:
        del self._conns[conn.key]
        if self._latest.get(conn.client) is conn:
            del self._latest[conn.client]
        self._finish(conn)

    def _finish(self, conn: _Connection) -> None:
        """Mark a connection done and free its CRYPTO buffer."""
        conn.done = True
        self._buffered -= len(conn.buf) + len(conn.have)
        conn.buf = bytearray()
        conn.have = bytearray()
