"""DHCP and ARP bindings: what one packet says about a device's MAC, IP and name."""

from __future__ import annotations

import dpkt

from detector.extract.binding import Binding, parse_arp, parse_dhcp

MAC = b"\x02\x00\x00\x00\x10\x05"


def dhcp_request(hostname: bytes) -> bytes:
    msg = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REQUEST,
        chaddr=MAC,
        opts=[(dpkt.dhcp.DHCP_OPT_MSGTYPE, b"\x03"), (12, hostname), (50, bytes([198, 18, 10, 5]))],
    )
    return bytes(msg)


def test_dhcp_request_binds_mac_ip_and_name():
    assert parse_dhcp(dhcp_request(b"Alice-Phone")) == Binding("02:00:00:00:10:05", "198.18.10.5", "alice-phone")


def test_dhcp_hostname_bytes_that_are_not_printable_ascii_are_escaped():
    # A control byte would break a line of the summary table; ESC could drive a terminal.
    binding = parse_dhcp(dhcp_request(b"hip\x0eeo\x1b[2J\x7f\xff\x00"))
    assert binding is not None and binding.hostname == "hip\\x0eeo\\x1b[2j\\x7f\\xff"
    assert binding.hostname.isprintable()


def test_arp_sender_binds_but_a_probe_does_not():
    body = b"\x00\x01\x08\x00\x06\x04\x00\x01" + MAC + bytes([198, 18, 10, 5]) + b"\x00" * 10
    assert parse_arp(body) == Binding("02:00:00:00:10:05", "198.18.10.5", None)
    probe = body[:14] + b"\x00\x00\x00\x00" + body[18:]
    assert parse_arp(probe) is None
