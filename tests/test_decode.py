"""Link, VLAN, IP and transport decoding of crafted frames (built with scapy)."""

from __future__ import annotations

import struct
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, GRE, CookedLinux, Dot1AD, Dot1Q, Ether
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
