"""Link, VLAN, IP and transport decoding of crafted frames (built with scapy)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.dot11 import Dot11, Dot11QoS
from scapy.layers.l2 import ARP, GRE, LLC, SNAP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from detector import decode as d

CLIENT, SERVER = "198.18.10.5", "198.19.0.53"
MAC = "02:00:00:00:10:05"
UDP_DNS = IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=53) / b"payload"


def run(linktype: int, frame) -> tuple[d.Packet | None, Counter]:
    stats: Counter = Counter()
    return d.decode(linktype, bytes(frame), stats), stats


def check_udp(packet: d.Packet | None, vlan=None) -> None:
    assert packet is not None
    assert (packet.l4, packet.sport, packet.dport, packet.payload) == (17, 40000, 53, b"payload")
    assert packet.src_ip == bytes([198, 18, 10, 5]) and packet.vlan == vlan


def test_ethernet_keeps_both_macs_and_drops_padding():
    packet, _ = run(1, Ether(src=MAC, dst="02:00:00:00:00:01") / UDP_DNS / (b"\x00" * 0))
    check_udp(packet)
    assert packet.src_mac == bytes.fromhex("020000001005")
    padded, _ = run(1, bytes(Ether(src=MAC) / IP(src=CLIENT, dst=SERVER) / UDP(sport=40000, dport=53) / b"payload") + b"\x00" * 20)
    check_udp(padded)


def test_vlan_and_qinq_give_the_innermost_tag():
    check_udp(run(1, Ether(src=MAC) / Dot1Q(vlan=10) / UDP_DNS)[0], vlan=10)
    check_udp(run(1, Ether(src=MAC) / Dot1AD(vlan=300) / Dot1Q(vlan=20) / UDP_DNS)[0], vlan=20)


def test_linux_cooked_sll_and_sll2():
    sll = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("020000001005") + b"\x00\x00", proto=0x0800)
    packet, _ = run(113, sll / UDP_DNS)
    check_udp(packet)
    assert packet.src_mac == bytes.fromhex("020000001005")
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, bytes.fromhex("020000001005") + b"\x00\x00")
    packet, _ = run(276, sll2 + bytes(UDP_DNS))
    check_udp(packet)
    assert packet.src_mac == bytes.fromhex("020000001005")


@pytest.mark.parametrize("linktype", [101, 228, 14])
def test_raw_ip(linktype):
    check_udp(run(linktype, UDP_DNS)[0])


@pytest.mark.parametrize("linktype, header", [
    (0, struct.pack("<I", 2)), (0, struct.pack(">I", 2)), (108, struct.pack(">I", 2)),
])
def test_null_and_loop_in_either_byte_order(linktype, header):
    check_udp(run(linktype, header + bytes(UDP_DNS))[0])


def test_null_ipv6_families():
    v6 = IPv6(src="fd00:10::5", dst="fd00::53") / UDP(sport=40000, dport=53) / b"payload"
    for family in (24, 28, 30):
        packet, _ = run(0, struct.pack("<I", family) + bytes(v6))
        assert packet is not None and packet.src_ip == bytes.fromhex("fd000010" + "0" * 23 + "5")


def test_ipv4_options_and_ipv6_extension_headers():
    check_udp(run(101, IP(src=CLIENT, dst=SERVER, options=[IPOption_RR()]) / UDP(sport=40000, dport=53) / b"payload")[0])
    v6 = IPv6(src="fd00:10::5", dst="fd00::53") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=40000, dport=53) / b"payload"
    packet, _ = run(101, v6)
    assert packet is not None and (packet.dport, packet.payload) == (53, b"payload")


def test_fragments_first_decoded_others_counted():
    first = IP(src=CLIENT, dst=SERVER, flags="MF", frag=0) / UDP(sport=40000, dport=53) / b"payload"
    assert run(101, first)[0] is not None
    packet, stats = run(101, IP(src=CLIENT, dst=SERVER, frag=10, proto=17) / b"rest")
    assert packet is None and stats["skip.non_first_fragment"] == 1
    packet, stats = run(101, IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=5, nh=17) / b"rest")
    assert packet is None and stats["skip.non_first_fragment"] == 1


def test_tcp_fields():
    frame = Ether(src=MAC) / IP(src=CLIENT, dst=SERVER) / TCP(sport=50000, dport=443, seq=123456, flags="PA") / b"\x16\x03\x01"
    packet, _ = run(1, frame)
    assert (packet.l4, packet.sport, packet.dport, packet.seq, packet.flags, packet.payload) == (
        6, 50000, 443, 123456, 0x18, b"\x16\x03\x01")


def test_tunnels_yield_the_inner_packet():
    check_udp(run(101, IP(src="198.19.1.1", dst="198.19.1.2") / UDP_DNS)[0])  # IP-in-IP
    check_udp(run(101, IP(src="198.19.1.1", dst="198.19.1.2") / GRE() / UDP_DNS)[0])
    vx = IP(src="198.19.1.1", dst="198.19.1.2") / UDP(sport=1234, dport=4789) / VXLAN(vni=7) / Ether(src=MAC) / Dot1Q(vlan=10) / UDP_DNS
    packet, _ = run(101, vx)
    check_udp(packet, vlan=10)
    assert packet.src_mac == bytes.fromhex("020000001005")


def test_arp_and_unknown():
    packet, _ = run(1, Ether(src=MAC) / ARP(hwsrc=MAC, psrc=CLIENT))
    assert packet is not None and packet.l4 == d.ARP and len(packet.payload) >= 28
    packet, stats = run(147, b"\x00" * 40)
    assert packet is None and stats["skip.unknown_linktype"] == 1


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(d.SUPPORTED_LINKTYPES)), st.binary(max_size=200))
def test_random_frames_never_raise(linktype, frame):
    d.decode(linktype, frame, Counter())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 100))
def test_truncated_real_frames_never_raise(tail, cut):
    frame = bytes(Ether() / Dot1Q(vlan=5) / IPv6() / IPv6ExtHdrHopByHop() / TCP() / tail)
    d.decode(1, frame[:cut], Counter())
    d.decode(1, frame[:14] + tail, Counter())


def test_gtp_u_tunnel_yields_the_user_packet():
    from scapy.contrib.gtp import GTP_U_Header

    outer = IP(src="198.19.1.1", dst="198.19.1.2") / UDP(sport=2152, dport=2152)
    check_udp(run(101, outer / GTP_U_Header(teid=7, gtp_type=255) / UDP_DNS)[0])
    check_udp(run(101, outer / GTP_U_Header(teid=7, gtp_type=255, S=1, seq=9) / UDP_DNS)[0])
    # Not a G-PDU (an echo request): the UDP packet itself.
    packet, _ = run(101, outer / GTP_U_Header(teid=7, gtp_type=1) / b"x")
    assert packet is not None and packet.dport == 2152


# -- the tunnels a tap's copy arrives in ---------------------------------------------------

OUTER = IP(src="198.19.1.1", dst="198.19.1.2")
PHONE, AP, ROUTER = "02:00:00:00:10:05", "02:a0:00:00:00:a1", "02:a0:00:00:00:fe"


def check_phone(packet: d.Packet | None, vlan=None) -> None:
    """The inner DNS query, with the phone's MAC as the sender's."""
    check_udp(packet, vlan)
    assert packet.src_mac == bytes.fromhex(PHONE.replace(":", ""))


def test_erspan_types_i_ii_iii_give_the_mirrored_frame_and_its_vlan():
    from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III

    mirrored = Ether(src=PHONE, dst=ROUTER) / UDP_DNS
    check_phone(run(101, OUTER / GRE(proto=0x88BE) / mirrored)[0])  # type I: no header, no sequence number
    check_phone(run(101, OUTER / GRE(seqnum_present=1, sequence_number=1) / ERSPAN_II(vlan=20, session_id=1) / mirrored)[0],
                vlan=20)
    check_phone(run(101, OUTER / GRE(seqnum_present=1) / ERSPAN_III(vlan=30, o=0) / mirrored)[0], vlan=30)
    # A platform-specific subheader (O flag) is skipped; a tag left in the frame wins over the header's VLAN.
    inner = bytes(ERSPAN_III(vlan=30, o=1)) + bytes(8) + bytes(Ether(src=PHONE) / Dot1Q(vlan=40) / UDP_DNS)
    check_phone(run(101, OUTER / GRE(proto=0x22EB) / inner)[0], vlan=40)
    packet, stats = run(101, OUTER / GRE(proto=0x22EB) / ERSPAN_II() / mirrored)  # a type II header as type III
    assert packet is None and stats["skip.non_ip"] == 1


def test_geneve_with_ethernet_or_ip_inside_and_options_skipped():
    from scapy.contrib.geneve import GENEVE

    frame = OUTER / UDP(sport=50000, dport=6081) / GENEVE(vni=5, proto=0x6558) / Ether(src=PHONE) / UDP_DNS
    check_phone(run(101, frame)[0])
    # An IP packet behind 8 bytes of options (the option length counts 4-byte words), as a
    # cloud gateway load balancer sends it.
    header = struct.pack("!BBH", 2, 0, 0x0800) + b"\x00\x00\x05\x00" + bytes(8)
    check_udp(run(101, OUTER / UDP(sport=50000, dport=6081) / (header + bytes(UDP_DNS)))[0])


def test_tzsp_ethernet_and_802_11():
    from scapy.contrib.tzsp import TZSP, TZSPTagEnd

    frame = OUTER / UDP(sport=40000, dport=37008) / TZSP(encapsulated_protocol=1) / TZSPTagEnd() / Ether(src=PHONE) / UDP_DNS
    check_phone(run(101, frame)[0])
    dot11 = Dot11(type=2, subtype=0, FCfield="to_DS", addr1=AP, addr2=PHONE, addr3=ROUTER) / LLC() / SNAP() / UDP_DNS
    frame = OUTER / UDP(sport=40000, dport=37008) / TZSP(encapsulated_protocol=18) / TZSPTagEnd() / dot11
    check_phone(run(101, frame)[0])


def capwap_header(native: bool = True, fragment_offset: int = 0) -> bytes:
    """RFC 5415 CAPWAP: preamble, HLEN 2 words, radio 0, binding 802.11 (1), T, flags."""
    flags = 0x80 if fragment_offset else 0
    return bytes([0, 2 << 3, 1 << 1 | native, flags]) + struct.pack("!HH", 0, fragment_offset << 3)


@pytest.mark.parametrize("fcfield, addresses, swapped", [
    ("to_DS", (AP, PHONE, ROUTER), False),
    ("from_DS", (PHONE, AP, ROUTER), False),
    ("to_DS", (AP, PHONE, ROUTER), True),  # a Cisco access point's byte order
])
def test_capwap_data_gives_the_phone_not_the_access_point(fcfield, addresses, swapped):
    a1, a2, a3 = addresses
    dot11 = bytes(Dot11(type=2, subtype=8, FCfield=fcfield, addr1=a1, addr2=a2, addr3=a3) / Dot11QoS() / LLC() / SNAP()
                  / UDP_DNS)
    if swapped:
        dot11 = dot11[1:2] + dot11[0:1] + dot11[2:]
    up = fcfield == "to_DS"
    outer = OUTER / UDP(sport=12380 if up else 5247, dport=5247 if up else 12380)
    packet, _ = run(101, outer / (capwap_header() + dot11))
    assert packet is not None and packet.payload == b"payload"
    phone = bytes.fromhex(PHONE.replace(":", ""))
    assert (packet.src_mac if up else packet.dst_mac) == phone
    assert AP.replace(":", "") not in (packet.src_mac.hex(), packet.dst_mac.hex())


def test_capwap_8023_control_fragments_and_protected_frames():
    up = OUTER / UDP(sport=12380, dport=5247)
    check_phone(run(101, up / (capwap_header(native=False) + bytes(Ether(src=PHONE) / UDP_DNS)))[0])
    packet, stats = run(101, OUTER / UDP(sport=12380, dport=5246) / b"\x01\x00\x00\x00dtls")
    assert packet is None and stats["skip.capwap_control"] == 1
    packet, stats = run(101, OUTER / UDP(sport=5246, dport=12380) / b"\x01\x00\x00\x00dtls")
    assert packet is None and stats["skip.capwap_control"] == 1
    packet, stats = run(101, up / (capwap_header(fragment_offset=3) + b"rest of a frame"))
    assert packet is None and stats["skip.non_first_fragment"] == 1
    protected = Dot11(type=2, FCfield="to_DS+protected", addr1=AP, addr2=PHONE, addr3=ROUTER) / bytes(40)
    packet, stats = run(101, up / (capwap_header() + bytes(protected)))
    assert packet is None and stats["skip.non_ip"] == 1
    # DTLS-protected data (preamble type 1): no frame to read, the datagram itself.
    packet, _ = run(101, up / b"\x01\x00\x00\x00sealed")
    assert packet is not None and packet.dport == 5247


def test_aruba_gre_gives_the_station_and_gre_in_udp_the_inner_packet():
    dot11 = Dot11(type=2, FCfield="to_DS", addr1=AP, addr2=PHONE, addr3=ROUTER) / LLC() / SNAP() / UDP_DNS
    check_phone(run(101, OUTER / GRE(proto=0x8200) / dot11)[0])
    check_phone(run(101, OUTER / GRE(proto=0x9000) / dot11)[0])
    packet, stats = run(101, OUTER / GRE(proto=0x8201) / dot11)  # not an Aruba type: an unknown protocol
    assert packet is None and stats["skip.non_ip"] == 1
    check_phone(run(101, OUTER / UDP(sport=50000, dport=4754) / GRE(proto=0x6558) / Ether(src=PHONE) / UDP_DNS)[0])
    check_udp(run(101, OUTER / UDP(sport=50000, dport=4754) / GRE(proto=0x0800) / UDP_DNS)[0])
    packet, _ = run(101, OUTER / UDP(sport=50000, dport=4754) / b"\x00")  # no GRE header: the datagram
    assert packet is not None and packet.dport == 4754


def test_a_client_on_a_capwap_port_is_still_itself():
    """A client whose ephemeral port happens to be 5246 or 5247 asks its resolver (port 53) as
    itself; and a datagram to 5246 without a CAPWAP preamble is a plain one."""
    for port in (5246, 5247):
        packet, _ = run(101, IP(src=CLIENT, dst=SERVER) / UDP(sport=port, dport=53) / b"payload")
        assert packet is not None and (packet.sport, packet.dport, packet.payload) == (port, 53, b"payload")
    packet, stats = run(101, OUTER / UDP(sport=12380, dport=5246) / b"\x45not capwap")
    assert packet is not None and packet.dport == 5246 and not stats


def test_tunnel_ports_can_be_added():
    from scapy.contrib.geneve import GENEVE

    frame = OUTER / UDP(sport=50000, dport=8472) / VXLAN(vni=7) / Ether(src=PHONE) / UDP_DNS
    packet, _ = run(101, frame)
    assert packet is not None and packet.dport == 8472  # Linux's old VXLAN port: not by default
    tunnels = d.udp_tunnels([("vxlan", 8472), ("geneve", 6082)])
    check_phone(d.decode(101, bytes(frame), Counter(), tunnels))
    geneve = OUTER / UDP(sport=50000, dport=6082) / GENEVE(proto=0x6558) / Ether(src=PHONE) / UDP_DNS
    check_phone(d.decode(101, bytes(geneve), Counter(), tunnels))
    with pytest.raises(ValueError, match="unknown tunnel"):
        d.udp_tunnels([("l2tp", 1701)])
    with pytest.raises(ValueError, match="already the vxlan port"):
        d.udp_tunnels([("geneve", 4789)])


def test_vn_tag_and_e_tag_are_stepped_over():
    for ethertype, tag in ((0x8926, bytes(4)), (0x893F, bytes(6))):
        frame = bytes(Ether(src=MAC, type=ethertype)) + tag + b"\x08\x00" + bytes(UDP_DNS)
        check_udp(run(1, frame)[0])


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob("pcaps/tunnel-*.pcap")),
                         ids=lambda p: p.name)
def test_tunnel_fixtures_name_the_device_not_the_tunnel_ends(path):
    """Every name in a tunnel fixture belongs to a device inside (its address and MAC, the
    fixtures' 02:00:<IPv4> scheme), never to the access point, switch or controller."""
    from detector.pipeline import Extractor, Settings
    from detector.replay import read_captures

    found: list = []
    assert read_captures([str(path)], Extractor(Settings(), found.append, lambda b: None), lambda now: None,
                         progress=False) == 0
    assert len(found) == 8
    for obs in found:
        assert obs.client_ip.startswith(("198.18.", "fd00:1", "fd00:2")), obs
        v4 = obs.client_ip if "." in obs.client_ip else {"fd00:10::21": "198.18.10.21", "fd00:20::101": "198.18.20.101"}[
            obs.client_ip]
        assert obs.client_mac == "02:00:" + ":".join(f"{int(b):02x}" for b in v4.split(".")), obs
