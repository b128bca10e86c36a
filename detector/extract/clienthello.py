"""TLS ClientHello: the server name, ALPN, versions and ECH flag a client sends first.

One parser serves two transports. TLS over TCP wraps the ClientHello in handshake
records that may split it anywhere (``client_hello_from_records`` walks them); QUIC
carries the bare handshake message in CRYPTO frames (``parse_client_hello`` takes it
directly once the QUIC reassembly has it whole).

Both functions are sans-IO and never raise on any input: every length is checked
against the bytes that hold it before it is used, and every loop advances by at least
one header per step, so the work is bounded by the input length.

Strictness is chosen to match what servers accept, not a linter's view of the RFCs: a
length that points past its container makes the message malformed (a server would
abort the handshake, so the connection never carried the name), while bytes left over
after the extensions block are tolerated so that trailing junk cannot hide a name that
a lenient server would still act on.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Status of an incremental parse over the first bytes of a stream (shared by http.py).
NEED_MORE = "need-more"  # the bytes so far are a valid prefix; feed more
DONE = "done"  # complete; the result is final (it may still be None if malformed)
NOT_TLS = "not-tls"  # these bytes cannot start a TLS handshake; stop looking

#: TLSPlaintext limit (2**14) plus the TLS 1.2 ciphertext expansion allowance: the
#: largest record length any stack sends, so anything longer is not TLS.
MAX_RECORD = 2**14 + 2048
#: ClientHellos with post-quantum key shares are ~1.9 kB, padded ones ~0.5 kB; 64 KiB
#: leaves room for any real one while bounding what a stream can make us buffer.
MAX_HELLO = 64 * 1024
#: Longest DNS name in presentation form; longer "names" cannot be hosts anyone resolves.
MAX_NAME = 253
#: Real clients offer at most a handful of protocols; keep a bounded record.
MAX_ALPN = 16

_RECORD_HANDSHAKE = 22
_MSG_CLIENT_HELLO = 1

EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
#: RFC 9849 (final) code point. The draft code points (0xff02 in draft-07, later
#: 0xfe08-0xfe0c) were only ever used in interop experiments and never enabled by
#: default in a shipping client; 0xff03 was ech_nonce/outer_extensions, not ECH at all.
#: Counting them would only add false "ECH" flags, so only 0xfe0d is recognised.
EXT_ECH = 0xFE0D


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello tells a passive observer about where a client is going.

    ``ech`` means the encrypted_client_hello extension is present: the real server name
    is encrypted and ``sni`` is only the outer (public) name. Browsers also send a GREASE
    ECH extension when they have no ECH config, and by design it cannot be told apart
    from a real one on the wire, so ``ech`` is "the name may be hidden", not "it is".
    """

    sni: str | None  # host_name of server_name, lowercased, no trailing dot
    alpn: tuple[str, ...]  # offered protocols, GREASE removed, at most MAX_ALPN
    versions: tuple[int, ...]  # supported_versions (GREASE removed), else legacy_version
    ech: bool


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa) are noise clients add on purpose."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def normalize_name(raw: bytes) -> str | None:
    """A host name as signatures see it: ASCII, lowercased, without the trailing root dot.

    Non-ASCII and control bytes are not dropped but replaced with U+FFFD, so a name like
    ``b"\\xff.tiktok.com"`` (which no DNS would resolve, but which still reaches a
    wildcard server) keeps its matchable suffix instead of vanishing. Empty or
    over-long names (> MAX_NAME) are None.
    """
    name = raw.decode("ascii", "replace").lower().rstrip(".")
    if not name or len(name) > MAX_NAME:
        return None
    if not name.isprintable():
        name = "".join(c if c.isprintable() else "\ufffd" for c in name)
    return name


def parse_client_hello(handshake: bytes | memoryview) -> ClientHello | None:
    """Parse one Handshake message: msg_type 1, a 3-byte length, then the ClientHello body.

    This is the form a QUIC CRYPTO stream carries. Bytes after the declared message are
    ignored (they belong to whatever follows). None when the message is incomplete or
    not a well-formed ClientHello.
    """
    view = memoryview(handshake)
    if len(view) < 4 or view[0] != _MSG_CLIENT_HELLO:
        return None
    length = int.from_bytes(view[1:4], "big")
    if len(view) < 4 + length:
        return None
    return _parse_body(bytes(view[4 : 4 + length]))


def _parse_body(b: bytes) -> ClientHello | None:
    """The ClientHello body (RFC 8446 section 4.1.2, also valid for TLS 1.0-1.2)."""
    n = len(b)
    if n < 35:  # legacy_version(2) + random(32) + session_id length(1)
        return None
    legacy_version = b[0] << 8 | b[1]
    sid_len = b[34]
    p = 35 + sid_len
    if sid_len > 32 or p + 2 > n:
        return None
    cs_len = b[p] << 8 | b[p + 1]
    p += 2 + cs_len
    if cs_len < 2 or cs_len & 1 or p + 1 > n:
        return None
    cm_len = b[p]
    p += 1 + cm_len
    if cm_len < 1 or p > n:
        return None
    if p == n:  # extensions are optional before TLS 1.3 (SSL 3.0-style hello)
        return ClientHello(None, (), (legacy_version,), False)
    if p + 2 > n:
        return None
    end = p + 2 + (b[p] << 8 | b[p + 1])
    p += 2
    if end > n:
        return None

    sni: str | None = None
    alpn: tuple[str, ...] | None = None
    versions: tuple[int, ...] | None = None
    ech = False
    seen_sni = False
    faulted = False
    # Extension types may not repeat (RFC 8446 4.2); servers reject duplicates, so the
    # first occurrence is the one that counts and later ones are skipped. A fault after
    # the server_name was read ends the walk but keeps the name: the client did send it,
    # and Wireshark shows it too (names before a DNS fault are kept the same way).
    while p + 4 <= end:
        ext_type = b[p] << 8 | b[p + 1]
        ext_len = b[p + 2] << 8 | b[p + 3]
        p += 4
        q = p + ext_len
        if q > end:
            faulted = True
            break
        if ext_type == EXT_SERVER_NAME and not seen_sni:
            seen_sni = True
            ok, sni = _server_name(b, p, q)
            if not ok:
                return None
        elif ext_type == EXT_ALPN and alpn is None:
            alpn = _alpn(b, p, q)
            if alpn is None:
                faulted = True
                break
        elif ext_type == EXT_SUPPORTED_VERSIONS and versions is None:
            versions = _supported_versions(b, p, q)
            if versions is None:
                faulted = True
                break
        elif ext_type == EXT_ECH:
            ech = True
        p = q
    if (faulted or p != end) and sni is None:  # a fault, and no name before it
        return None
    return ClientHello(
        sni, alpn or (), versions if versions is not None else (legacy_version,), ech
    )


def _server_name(b: bytes, p: int, end: int) -> tuple[bool, str | None]:
    """server_name (RFC 6066 section 3): (well-formed?, first host_name entry)."""
    if end - p < 2 or (b[p] << 8 | b[p + 1]) != end - p - 2:
        return False, None
    p += 2
    raw: bytes | None = None
    while p + 3 <= end:
        name_type = b[p]
        name_len = b[p + 1] << 8 | b[p + 2]
        p += 3
        if p + name_len > end:
            return False, None
        if name_type == 0 and raw is None:
            raw = b[p : p + name_len]
        p += name_len
    if p != end:
        return False, None
    return True, (normalize_name(raw) if raw is not None else None)


def _alpn(b: bytes, p: int, end: int) -> tuple[str, ...] | None:
    """application_layer_protocol_negotiation (RFC 7301); None when malformed."""
    if end - p < 2 or (b[p] << 8 | b[p + 1]) != end - p - 2:
        return None
    p += 2
    names: list[str] = []
    while p < end:
        name_len = b[p]
        p += 1
        if name_len == 0 or p + name_len > end:
            return None
        if len(names) < MAX_ALPN and not (
            name_len == 2 and is_grease(b[p] << 8 | b[p + 1])
        ):
            names.append(b[p : p + name_len].decode("ascii", "replace"))
        p += name_len
    return tuple(names)


def _supported_versions(b: bytes, p: int, end: int) -> tuple[int, ...] | None:
    """supported_versions as a client sends it (RFC 8446 4.2.1); None when malformed."""
    if end - p < 1 or b[p] != end - p - 1 or b[p] & 1:
        return None
    return tuple(
        v
        for v in (b[i] << 8 | b[i + 1] for i in range(p + 1, end, 2))
        if not is_grease(v)
    )


def client_hello_from_records(stream: bytes | memoryview) -> tuple[str, ClientHello | None]:
    """Find the ClientHello in the first client-to-server bytes of a TCP stream.

    Walks TLS records (type 22, version 0x03xx, 1 <= length <= MAX_RECORD), joining the
    handshake fragments they carry until the ClientHello's declared length is complete:
    a hello may span several records and several TCP segments, and records may be cut
    anywhere by the segmentation. Returns:

    - ``(NEED_MORE, None)`` while the bytes so far are a valid prefix;
    - ``(DONE, hello)`` once complete, with hello None if it is malformed;
    - ``(NOT_TLS, None)`` as soon as the bytes cannot start a TLS handshake (wrong
      record header, a non-handshake record or another message before the hello, an
      SSLv2-style hello, or a declared hello longer than MAX_HELLO), so the caller can
      stop buffering the flow.
    """
    view = memoryview(stream)
    n = len(view)
    fragments = bytearray()
    need = 0  # total handshake message length (4 + body) once its header is known
    p = 0
    while True:  # each pass consumes one record header (5 bytes) or returns
        if p + 5 > n:
            return _record_header_prefix(view[p:]), None
        length = view[p + 3] << 8 | view[p + 4]
        if (
            view[p] != _RECORD_HANDSHAKE
            or view[p + 1] != 3
            or length == 0  # RFC 8446 5.1 forbids empty handshake fragments
            or length > MAX_RECORD
        ):
            return NOT_TLS, None
        fragments += view[p + 5 : p + 5 + length]
        if fragments and fragments[0] != _MSG_CLIENT_HELLO:
            return NOT_TLS, None
        if not need and len(fragments) >= 4:
            need = 4 + int.from_bytes(fragments[1:4], "big")
            if need - 4 > MAX_HELLO:
                return NOT_TLS, None
        if need and len(fragments) >= need:
            return DONE, parse_client_hello(fragments)
        p += 5 + length
        if p > n:  # this record is still arriving
            return NEED_MORE, None


def _record_header_prefix(head: memoryview) -> str:
    """Status for the first < 5 bytes of a record header: a plausible start or not."""
    k = len(head)
    if (
        (k >= 1 and head[0] != _RECORD_HANDSHAKE)
        or (k >= 2 and head[1] != 3)
        or (k >= 4 and head[3] << 8 > MAX_RECORD)
    ):
        return NOT_TLS
    return NEED_MORE
