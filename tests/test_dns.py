"""DNS message parsing and DNS-over-TCP framing.

Well-formed messages are built with scapy where it can (an independent encoder, with and
without name compression); records scapy cannot express, and every malformed case, are
built by hand so each test shows the exact bytes it is about.
"""

from __future__ import annotations

import string
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRHTTPS, DNSRRSVCB, SvcParam

from detector.extract.dns import DnsMessage, parse_dns, split_tcp_messages

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


# --- hand-built wire format -------------------------------------------------------------


def wire(name: str) -> bytes:
    """Uncompressed wire form of a dotted name ("" is the root)."""
    labels = [label.encode("latin-1") for label in name.split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def header(qd: int, an: int, response: bool = True) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, 0x8180 if response else 0x0100, qd, an, 0, 0)


def question(name: bytes, qtype: int = 1) -> bytes:
    return name + struct.pack("!HH", qtype, 1)


def rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def svcb_rdata(priority: int, target: bytes, params: bytes = b"") -> bytes:
    return struct.pack("!H", priority) + target + params


# alpn=h2,h3 and ipv4hint=1.2.3.4, as in RFC 9460 appendix D.
HTTPS_PARAMS = b"\x00\x01\x00\x06\x02h2\x02h3" + b"\x00\x04\x00\x04\x01\x02\x03\x04"


def names(message: DnsMessage | None) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    assert message is not None
    return message.questions, message.answers, message.malformed


# --- queries ----------------------------------------------------------------------------


def test_query_from_scapy():
    message = parse_dns(bytes(DNS(id=7, rd=1, qd=[DNSQR(qname="www.tiktok.com", qtype="A")])))
    assert message == DnsMessage(False, ("www.tiktok.com",), (), False)


def test_0x20_mixed_case_is_lowercased():
    message = parse_dns(bytes(DNS(qd=[DNSQR(qname="wWw.TiKtOk.CoM.")])))
    assert names(message) == (("www.tiktok.com",), (), False)


def test_several_questions_keep_their_order_and_duplicates():
    query = DNS(qd=[DNSQR(qname=n) for n in ("b.example", "a.example", "b.example")])
    assert names(parse_dns(bytes(query))) == (("b.example", "a.example", "b.example"), (), False)


def test_root_question_is_not_reported():
    message = parse_dns(header(1, 0, response=False) + question(b"\x00", qtype=2))
    assert names(message) == ((), (), False)


def test_memoryview_and_bytearray_inputs():
    raw = bytes(DNS(qd=[DNSQR(qname="tiktok.com")]))
    assert parse_dns(memoryview(raw)) == parse_dns(bytearray(raw)) == parse_dns(raw)
    assert parse_dns(memoryview(b"xx" + raw)[2:]) == parse_dns(raw)


# --- answers ----------------------------------------------------------------------------

CHAIN = ("www.tiktok.com", "www.tiktok.com.edgesuite.net", "a1.w10.akamai.net")


def tiktok_chain_response() -> DNS:
    return DNS(
        id=9,
        qr=1,
        qd=[DNSQR(qname="www.tiktok.com")],
        an=[
            DNSRR(rrname=CHAIN[0], type="CNAME", rdata=CHAIN[1]),
            DNSRR(rrname=CHAIN[1], type="CNAME", rdata=CHAIN[2]),
            DNSRR(rrname=CHAIN[2], type="A", rdata="23.1.2.3"),
            DNSRR(rrname=CHAIN[2], type="A", rdata="23.1.2.4"),
        ],
    )


@pytest.mark.parametrize("compress", [False, True])
def test_cname_chain_in_order_without_duplicates(compress):
    response = tiktok_chain_response()
    raw = bytes(response.compress() if compress else response)
    message = parse_dns(raw)
    assert message == DnsMessage(True, (CHAIN[0],), CHAIN, False)


def test_only_the_answer_section_is_read():
    response = tiktok_chain_response()
    response.ns = [DNSRR(rrname="akamai.net", type="NS", rdata="n0.akamai.net")]
    response.ar = [DNSRR(rrname="n0.akamai.net", type="A", rdata="1.1.1.1")]
    assert names(parse_dns(bytes(response.compress()))) == ((CHAIN[0],), CHAIN, False)


def test_other_rdata_is_skipped_not_read_as_names():
    response = DNS(
        qr=1,
        qd=[DNSQR(qname="tiktok.com", qtype="MX")],
        an=[
            DNSRR(rrname="tiktok.com", type="MX", rdata=b"\x00\x0a" + wire("mx.evil.example")),
            DNSRR(rrname="tiktok.com", type="TXT", rdata=[b"\x03www\x06tiktok\x03com\x00"]),
            DNSRR(rrname="tiktok.com", type="AAAA", rdata="2001:db8::1"),
        ],
    )
    assert names(parse_dns(bytes(response))) == (("tiktok.com",), ("tiktok.com",), False)


def test_https_record_from_scapy_gives_target_name():
    response = DNS(
        qr=1,
        qd=[DNSQR(qname="tiktok.com", qtype="HTTPS")],
        an=[
            DNSRRHTTPS(rrname="tiktok.com", svc_priority=1, target_name="svc.tiktokv.com",
                       svc_params=[SvcParam(key="alpn", value=[b"h2", b"h3"])]),
            DNSRRHTTPS(rrname="tiktok.com", svc_priority=2, target_name="."),
        ],
    )
    expected = (("tiktok.com",), ("tiktok.com", "svc.tiktokv.com"), False)
    assert names(parse_dns(bytes(response))) == expected
    # scapy compresses the TargetName too (RFC 9460 forbids it); read it anyway.
    assert names(parse_dns(bytes(response.compress()))) == expected


def test_https_and_svcb_by_hand():
    q = header(1, 3) + question(wire("_dns.resolver.arpa"), qtype=64)
    owner = ptr(12)
    message = (
        q
        + rr(owner, 64, svcb_rdata(1, wire("DoH.Example.net"), HTTPS_PARAMS))
        + rr(owner, 65, svcb_rdata(0, wire("alias.tiktokcdn.com")))  # AliasMode
        + rr(owner, 65, svcb_rdata(1, b"\x00", HTTPS_PARAMS))  # "." = the owner itself
    )
    assert names(parse_dns(message)) == (
        ("_dns.resolver.arpa",),
        ("_dns.resolver.arpa", "doh.example.net", "alias.tiktokcdn.com"),
        False,
    )


def test_scapy_svcb_record():
    record = DNSRRSVCB(rrname="_dns.x.net", svc_priority=1, target_name="dot.x.net")
    response = DNS(qr=1, qd=[], an=[record])
    assert names(parse_dns(bytes(response))) == ((), ("_dns.x.net", "dot.x.net"), False)


def test_dname_target():
    message = header(1, 2) + question(wire("www.tiktok.example"))
    message += rr(wire("tiktok.example"), 39, wire("tiktok.com"))
    message += rr(ptr(12), 5, wire("www.tiktok.com"))
    assert names(parse_dns(message)) == (
        ("www.tiktok.example",),
        ("tiktok.example", "tiktok.com", "www.tiktok.example", "www.tiktok.com"),
        False,
    )


def test_compressed_target_pointing_into_a_previous_name():
    # www.tiktok.com at 12; the CNAME target "cdn" + pointer to "tiktok.com" (offset 16).
    message = header(1, 1) + question(wire("www.tiktok.com"))
    message += rr(ptr(12), 5, b"\x03cdn" + ptr(16))
    assert names(parse_dns(message)) == (
        ("www.tiktok.com",), ("www.tiktok.com", "cdn.tiktok.com"), False)


def test_pointer_to_a_pointer_is_followed():
    # Second question is only a pointer to the first; the answer owner points at it.
    message = header(2, 1) + question(wire("a.example")) + question(ptr(12))
    second = 12 + len(question(wire("a.example")))
    message += rr(ptr(second), 1, b"\x01\x02\x03\x04")
    assert names(parse_dns(message)) == (("a.example", "a.example"), ("a.example",), False)


def test_response_flag():
    assert parse_dns(header(1, 0, response=False) + question(wire("x.y"))).is_response is False
    assert parse_dns(header(1, 0, response=True) + question(wire("x.y"))).is_response is True


def test_odd_bytes_are_escaped_and_printable_ascii_kept():
    label = b"A b\x00\x1f\x7f\xe9\\"
    message = header(1, 0) + question(bytes([len(label)]) + label + b"\x03CoM\x00")
    (name,), _, malformed = names(parse_dns(message))
    assert name == "a b\\x00\\x1f\\x7f\\xe9\\.com" and not malformed
    assert name.isprintable()


def test_dot_inside_a_label_is_kept_as_is():
    message = header(1, 0) + question(b"\x0atiktok.com\x00")
    assert names(parse_dns(message)) == (("tiktok.com",), (), False)


# --- nothing usable ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\x00" * 11, header(0, 0), header(0, 0) + b"\x00" * 40])
def test_none_when_nothing_usable(raw):
    assert parse_dns(raw) is None


# --- malformed messages -----------------------------------------------------------------


def test_pointer_to_itself():
    assert names(parse_dns(header(1, 0) + ptr(12) + b"\x00\x01\x00\x01")) == ((), (), True)


def test_forward_pointer():
    message = header(1, 0) + ptr(20) + b"\x00\x01\x00\x01" + wire("a.example")
    assert names(parse_dns(message)) == ((), (), True)


def test_pointer_back_into_its_own_run_is_a_loop():
    # "a" "b" then a pointer to "b": backwards, but inside the run it belongs to.
    message = header(1, 0) + b"\x01a\x01b" + ptr(14) + b"\x00\x01\x00\x01"
    assert names(parse_dns(message)) == ((), (), True)


def test_two_pointer_loop():
    # RR 1 carries "b" + pointer to RR 2's owner in opaque RDATA; RR 2's owner is
    # "a" + pointer back to that RDATA.  Read from RR 2: a -> b -> a -> ...
    rdata_at = 12 + len(wire("x.example")) + 10
    owner2_at = rdata_at + 4
    message = header(0, 2) + rr(wire("x.example"), 65280, b"\x01b" + ptr(owner2_at))
    assert len(message) == owner2_at
    message += rr(b"\x01a" + ptr(rdata_at), 1, b"\x00" * 4)
    assert names(parse_dns(message)) == ((), ("x.example",), True)


def chain_of_pointers(hops: int, extra_cnames: int = 0) -> bytes:
    """A CNAME whose target reaches the name "a" through exactly ``hops`` pointers.

    The chain lives in the RDATA of a private-type record (skipped by the parser);
    each extra CNAME points at the previous CNAME's target, adding one hop.
    """
    rdata_at = 12 + 1 + 10
    chain = b"\x01a\x00" + ptr(rdata_at)
    for i in range(1, hops - 1):
        chain += ptr(rdata_at + 3 + 2 * (i - 1))
    last = rdata_at + len(chain) - 2
    message = header(0, 2 + extra_cnames) + rr(b"\x00", 65280, chain)
    target_at = len(message) + 1 + 10
    message += rr(b"\x00", 5, ptr(last))
    for _ in range(extra_cnames):
        message += rr(b"\x00", 5, ptr(target_at))
        target_at += 1 + 10 + 2
    return message


def test_pointer_hops_are_capped_at_127():
    assert names(parse_dns(chain_of_pointers(127))) == ((), ("a",), False)
    assert names(parse_dns(chain_of_pointers(128))) == ((), (), True)


def test_pointer_cap_holds_through_memoised_names():
    assert names(parse_dns(chain_of_pointers(125, extra_cnames=2))) == ((), ("a",), False)
    assert names(parse_dns(chain_of_pointers(126, extra_cnames=2))) == ((), ("a",), True)


def test_name_length_is_capped_at_255_octets():
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61  # 255 octets
    assert len(wire(longest)) == 255
    assert names(parse_dns(header(1, 0) + question(wire(longest)))) == ((longest,), (), False)
    too_long = longest + "d"
    assert names(parse_dns(header(1, 0) + question(wire(too_long)))) == ((), (), True)


def test_name_length_cap_holds_through_memoised_names():
    base = "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 61  # 255 octets
    message = header(2, 0) + question(wire(base)) + question(b"\x01x" + ptr(12))
    assert names(parse_dns(message)) == ((base,), (), True)


@pytest.mark.parametrize("label_type", [0x40, 0x80, 0x41, 0xBF])
def test_reserved_label_types(label_type):
    message = header(1, 0) + bytes([label_type]) + b"abc\x00\x00\x01\x00\x01"
    assert names(parse_dns(message)) == ((), (), True)


def test_rdlength_past_the_end_keeps_earlier_names():
    good = rr(ptr(12), 5, wire("cdn.example"))
    bad = rr(ptr(12), 1, b"\x01\x02\x03\x04")[:-4]  # claims 4 bytes of RDATA, has none
    message = header(1, 3) + question(wire("www.example")) + good + bad
    assert names(parse_dns(message)) == (
        ("www.example",), ("www.example", "cdn.example"), True)


def test_cname_target_running_past_rdlength():
    rdata = wire("cdn.example")
    bad = ptr(12) + struct.pack("!HHIH", 5, 1, 0, len(rdata) - 3) + rdata
    message = header(1, 1) + question(wire("www.example")) + bad
    assert names(parse_dns(message)) == (("www.example",), ("www.example",), True)


@pytest.mark.parametrize("rdata", [b"", b"\x00"])
def test_https_rdata_too_short_for_a_target(rdata):
    message = header(0, 2) + rr(wire("a.example"), 65, rdata) + rr(b"\x00", 1, b"\x00" * 4)
    assert names(parse_dns(message)) == ((), ("a.example",), True)


def test_counts_larger_than_the_message():
    message = header(0xFFFF, 0xFFFF) + question(wire("a.example"))
    assert names(parse_dns(message)) == (("a.example",), (), True)


def test_every_truncation_of_a_response():
    raw = bytes(tiktok_chain_response().compress())
    for cut in range(len(raw)):
        message = parse_dns(raw[:cut])
        if cut < 12:
            assert message is None
            continue
        assert message is not None and message.malformed
        assert set(message.questions) <= {CHAIN[0]} and set(message.answers) <= set(CHAIN)
    assert names(parse_dns(raw[:-8])) == ((CHAIN[0],), CHAIN, True)


# --- DNS over TCP framing ---------------------------------------------------------------


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


QUERY = bytes(DNS(id=1, qd=[DNSQR(qname="www.tiktok.com")]))
RESPONSE = bytes(tiktok_chain_response())


def test_two_messages_in_one_segment():
    stream = framed(QUERY) + framed(RESPONSE) + b"\x01"
    assert split_tcp_messages(stream) == ([QUERY, RESPONSE], len(stream) - 1)


def test_one_message_over_several_segments():
    stream = framed(RESPONSE)
    buffer = b""
    for cut in (1, 2, 30):
        buffer += stream[len(buffer) : cut]
        assert split_tcp_messages(buffer) == ([], 0)
    buffer += stream[30:]
    assert split_tcp_messages(memoryview(buffer)) == ([RESPONSE], len(stream))


def test_zero_length_prefix_is_consumed_without_a_message():
    assert split_tcp_messages(b"\x00\x00" + framed(QUERY)) == ([QUERY], 4 + len(QUERY))
    assert split_tcp_messages(b"\x00\x00") == ([], 2)


@pytest.mark.parametrize("stream", [b"", b"\x00", b"\xff\xff" + b"\x00" * 100])
def test_incomplete_streams(stream):
    assert split_tcp_messages(stream) == ([], 0)


# --- properties -------------------------------------------------------------------------


def check_invariants(message: DnsMessage | None) -> None:
    if message is None:
        return
    assert isinstance(message, DnsMessage)
    for name in message.questions + message.answers:
        assert name and name.isprintable() and name.isascii() and name == name.lower()
    assert len(set(message.answers)) == len(message.answers)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(raw):
    check_invariants(parse_dns(raw))
    check_invariants(parse_dns(header(2, 3) + raw))
    messages, used = split_tcp_messages(raw)
    assert 0 <= used <= len(raw) and sum(len(m) + 2 for m in messages) <= used


SEEDS = [
    bytes(tiktok_chain_response()),
    bytes(tiktok_chain_response().compress()),
    chain_of_pointers(10, extra_cnames=2),
    header(1, 3) + question(wire("_dns.resolver.arpa"), qtype=64)
    + rr(ptr(12), 64, svcb_rdata(1, wire("doh.example.net"), HTTPS_PARAMS))
    + rr(ptr(12), 39, wire("tiktok.com"))
    + rr(ptr(12), 65, svcb_rdata(1, b"\x00", HTTPS_PARAMS)),
]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
    st.binary(max_size=8),
)
def test_mutated_messages_never_raise(seed, flips, cut, insert):
    raw = bytearray(seed)
    for where, value in flips:
        raw[where % len(raw)] = value
    mutated = bytes(raw[:cut]) + insert + bytes(raw[cut:])
    check_invariants(parse_dns(mutated))
    check_invariants(parse_dns(bytes(raw)))


LABEL = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=63)
NAME = st.lists(LABEL, min_size=1, max_size=6).map(".".join).filter(lambda n: len(n) <= 253)


@settings(max_examples=150, deadline=None)
@given(st.lists(NAME, min_size=1, max_size=4), st.lists(NAME, max_size=4), st.booleans())
def test_scapy_built_messages_round_trip(qnames, chain, compress):
    """Questions come back lowercased; a CNAME chain comes back as owner, target, ...

    dpkt's DNS class reads the same bytes as a second, independent decoder.
    """
    links = list(zip([qnames[0], *chain], chain))
    answers = [DNSRR(rrname=owner, type="CNAME", rdata=target) for owner, target in links]
    response = DNS(qr=1, qd=[DNSQR(qname=q) for q in qnames], an=answers)
    raw = bytes(response.compress() if compress else response)
    message = parse_dns(raw)
    assert message is not None and not message.malformed
    assert message.questions == tuple(q.lower() for q in qnames)
    expected = tuple(dict.fromkeys(n.lower() for link in links for n in link))
    assert message.answers == expected
    other = dpkt.dns.DNS(raw)
    assert message.questions == tuple(q.name.lower() for q in other.qd)
    assert message.answers == tuple(
        dict.fromkeys(n.lower() for a in other.an for n in (a.name, a.cname)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.lists(st.integers(0, 2000), max_size=8))
def test_tcp_framing_survives_any_segmentation(messages, cuts):
    stream = b"".join(framed(m) for m in messages)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    buffer, seen = b"", []
    for start, end in zip(bounds, bounds[1:]):
        buffer += stream[start:end]
        complete, used = split_tcp_messages(buffer)
        seen += complete
        buffer = buffer[used:]
    assert seen == [m for m in messages if m] and buffer == b""


# --- real captures ----------------------------------------------------------------------


def udp_payloads(path: Path) -> list[bytes]:
    with path.open("rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        link = dpkt.loopback.Loopback if reader.datalink() == 0 else dpkt.ethernet.Ethernet
        frames = [link(buf) for _, buf in reader]
    return [bytes(f.data.data.data) for f in frames if isinstance(f.data.data, dpkt.udp.UDP)]


@pytest.mark.corpus
@pytest.mark.parametrize(
    "pcap, qname, answers",
    [
        ("dns-https.pcap", "cloudflare.com", ("cloudflare.com",)),
        ("dns-svcb.pcap", "example.com", ("example.com", "foo.example.com")),
    ],
)
def test_zeek_https_and_svcb_captures(pcap, qname, answers):
    """The names tshark 4.0 shows for the same two frames (query, response)."""
    path = CORPUS / "zeek" / pcap
    if not path.exists():
        pytest.skip(f"{path} not present")
    query, response = (parse_dns(p) for p in udp_payloads(path))
    assert query == DnsMessage(False, (qname,), (), False)
    assert response == DnsMessage(True, (qname,), answers, False)
