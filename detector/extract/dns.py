"""Sans-IO DNS message parser: the names a DNS message asks for and answers with.

Only what the detector matches on is decoded: the QNAMEs of the question section and,
from the answer section, every owner name plus the names an answer points a client at
(CNAME and DNAME targets, the TargetName of SVCB/HTTPS records), and the addresses of A
and AAAA records with their TTLs (a client connecting to one without showing a name is
still going where the name pointed it).  The authority and additional sections, and the
RDATA of every other type, are skipped by length.

Why hand-written rather than ``dpkt.dns.DNS``: dpkt decodes every section eagerly (slow
on a path every DNS packet takes) and rejects a whole message that holds an HTTPS record,
which is exactly the record modern clients ask for first.  This parser reads the bytes in
place and keeps every name it reached when it meets a fault, so a truncated or hostile
message still yields its leading names, flagged ``malformed``.

Nothing in a message is trusted: header counts only bound loops that also stop when the
bytes run out, every compression pointer must point strictly backwards (before the start
of the label run that holds it) and a name may follow at most ``_MAX_POINTERS`` of them,
and a name is capped at the 255 octets of RFC 1035 section 3.1.

Name text: labels are joined with ".", lowercased (ASCII only, which undoes the 0x20
case randomisation of resolvers), with no trailing dot; the root name is "" and is never
reported.  Printable ASCII (0x20-0x7e) is kept as is and every other byte is written as
``\\xNN``, so a name is always one safe line of text and the common all-ASCII name costs
a single decode.  A "." or "\\" inside a label is kept unescaped, like tshark shows it:
such names cannot be resolved as written, so reading them as dotted names can only
over-report, never hide a name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

#: RR types whose RDATA starts with a domain name a client is sent to.
_TYPE_A = 1
_TYPE_AAAA = 28
_TYPE_CNAME = 5
_TYPE_DNAME = 39
#: SVCB (RFC 9460) and HTTPS: a 2-byte SvcPriority, then the uncompressed TargetName.
_TYPE_SVCB = 64
_TYPE_HTTPS = 65

_HEADER_LEN = 12
#: A question is at least a 1-byte root name plus QTYPE and QCLASS.
_QUESTION_FIXED = 4
#: TYPE, CLASS, TTL, RDLENGTH after an RR's owner name; CLASS is not needed.
_RR_FIXED = struct.Struct("!H2xIH")
_RR_FIXED_LEN = _RR_FIXED.size
#: RFC 1035 3.1: a name is at most 255 octets on the wire, length octets and root included.
_MAX_NAME_WIRE = 255
#: A 255-octet name has at most 127 labels, so an honest pointer chain needs no more
#: hops than that; the cap bounds the work a hostile chain of backward pointers can cause.
_MAX_POINTERS = 127


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """The names one DNS message carries, as the detector needs them.

    ``answers`` holds names from the ANSWER section only (owner names, CNAME/DNAME
    targets, SVCB/HTTPS TargetNames), in message order with duplicates removed, because
    each is a name the client will next connect to or ask for.  ``malformed`` says
    parsing stopped at a fault; every name read before it is still here.
    """

    is_response: bool
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    malformed: bool
    #: (A or AAAA address, TTL) of the answer section; not part of equality, which is about
    #: the names (what every caller compares).
    addresses: tuple[tuple[bytes, int], ...] = field(default=(), compare=False)


def parse_dns(message: bytes | memoryview) -> DnsMessage | None:
    """Parse one DNS message (a UDP payload, or one message of a TCP stream).

    Returns None when there is nothing usable: fewer than 12 bytes (no header), or a
    header that announces neither questions nor answers.  Otherwise returns the names
    reached, with ``malformed`` set if the message ended early or broke a rule.
    Never raises.
    """
    data = message if type(message) is bytes else bytes(message)
    size = len(data)
    if size < _HEADER_LEN:
        return None
    qdcount = (data[4] << 8) | data[5]
    ancount = (data[6] << 8) | data[7]
    if not qdcount and not ancount:
        return None

    questions: list[str] = []
    answers: list[str] = []
    addresses: list[tuple[bytes, int]] = []
    seen: dict[int, tuple[str, int, int]] = {}
    malformed = False
    pos = _HEADER_LEN
    # Each pass either consumes at least 5 (question) or 11 (RR) bytes or stops, so the
    # untrusted counts can never make these loops outrun the bytes of the message.
    for _ in range(qdcount):
        read = _read_name(data, pos, seen)
        if read is None:
            malformed = True
            break
        name, pos = read
        if name:
            questions.append(name)
        pos += _QUESTION_FIXED
        if pos > size:
            malformed = True
            break
    else:
        for _ in range(ancount):
            read = _read_name(data, pos, seen)
            if read is None:
                malformed = True
                break
            owner, pos = read
            if owner:
                answers.append(owner)
            if pos + _RR_FIXED_LEN > size:
                malformed = True
                break
            rtype, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
            rdata = pos + _RR_FIXED_LEN
            pos = rdata + rdlength
            if pos > size:
                malformed = True
                break
            if (rtype == _TYPE_A and rdlength == 4) or (rtype == _TYPE_AAAA and rdlength == 16):
                addresses.append((data[rdata:pos], ttl))
                continue
            if rtype == _TYPE_CNAME or rtype == _TYPE_DNAME:
                target_at = rdata
            elif rtype == _TYPE_HTTPS or rtype == _TYPE_SVCB:
                target_at = rdata + 2
            else:
                continue
            read = _read_name(data, target_at, seen)
            # The target's own bytes must lie inside RDATA (pointers may leave it).
            if read is None or read[1] > pos:
                malformed = True
                break
            if read[0]:
                answers.append(read[0])

    return DnsMessage(
        is_response=bool(data[2] & 0x80),
        questions=tuple(questions),
        answers=tuple(dict.fromkeys(answers)),
        malformed=malformed,
        addresses=tuple(addresses),
    )


def split_tcp_messages(stream: bytes | memoryview) -> tuple[list[bytes], int]:
    """Cut the complete messages off the front of a DNS-over-TCP byte stream.

    RFC 1035 4.2.2 / RFC 7766 8: each message is preceded by a 2-byte big-endian length;
    one segment may hold several messages and one message may span several segments.
    Returns the complete messages at the start of ``stream`` and how many bytes they used,
    so the caller drops that many and keeps the rest until more data arrives.  A
    zero-length prefix carries no message: its two bytes are consumed, nothing is emitted.
    """
    size = len(stream)
    messages: list[bytes] = []
    pos = 0
    while pos + 2 <= size:
        end = pos + 2 + ((stream[pos] << 8) | stream[pos + 1])
        if end > size:
            break
        if end > pos + 2:
            messages.append(bytes(stream[pos + 2 : end]))
        pos = end
    return messages, pos


def _read_name(
    data: bytes, pos: int, seen: dict[int, tuple[str, int, int]]
) -> tuple[str, int] | None:
    """Read the possibly compressed name at ``pos``.

    Returns the name text and the offset just past the name's bytes at ``pos`` (after
    its terminating zero or its first pointer), or None if the name is malformed:
    it runs off the end, uses a reserved label type (0x40/0x80, RFC 6891 5), breaks
    the backward-pointer rule, follows too many pointers or exceeds 255 octets.

    ``seen`` memoises, per message, the names already read from their start offset as
    (text, label octets, pointers followed).  Most answers name their owner with a
    single pointer to the question or to the previous CNAME target, so this turns the
    commonest names into one dict lookup; the limits are checked on the sums, so the
    result is exactly what walking the labels again would give.
    """
    start = pos
    labels: list[bytes] = []
    octets = 0  # label and length octets so far; the root octet makes it 255 at most
    pointers = 0
    after = -1
    run_start = pos  # start of the current run of labels; pointers must land before it
    suffix = ""
    # Reading past the end raises IndexError (a slice past the end comes back short,
    # and the next length read then fails): one handler instead of a check per label.
    try:
        length = data[pos]
        while length:
            if length < 0x40:
                octets += length + 1
                if octets >= _MAX_NAME_WIRE:
                    return None
                end = pos + 1 + length
                labels.append(data[pos + 1 : end])
                pos = end
                length = data[pos]
                continue
            if length < 0xC0:
                return None
            target = ((length & 0x3F) << 8) | data[pos + 1]
            pointers += 1
            if target >= run_start or pointers > _MAX_POINTERS:
                return None
            if after < 0:
                after = pos + 2
            known = seen.get(target)
            if known is not None:
                suffix, known_octets, known_pointers = known
                octets += known_octets
                pointers += known_pointers
                if octets >= _MAX_NAME_WIRE or pointers > _MAX_POINTERS:
                    return None
                break
            pos = run_start = target
            length = data[pos]
    except IndexError:
        return None
    if after < 0:
        after = pos + 1
    if labels:
        text = b".".join(labels).lower().decode("ascii", "backslashreplace")
        if not text.isprintable():
            text = _escape_controls(text)
        if suffix:
            text = f"{text}.{suffix}"
    else:
        text = suffix
    seen[start] = (text, octets, pointers)
    return text, after


def _escape_controls(text: str) -> str:
    """Write the ASCII control characters left by the decode as ``\\xNN``.

    Rare (mDNS host names, junk on port 53), so kept off the common path.
    """
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
