"""Live capture from a network interface: libpcap (through pcapy-ng) on AF_PACKET, with a
kernel BPF prefilter, batched reads and the kernel's drop counters.

The prefilter is what lets one Python process keep up with a busy segment: the kernel
passes only the packets an extractor can use, and everything else (above all the bulk
of downloads) never reaches user space. Kept:

- ARP, DHCP, DHCPv6, ICMPv6 neighbour solicitations and advertisements, DNS on the DNS
  ports (both directions, UDP and TCP);
- UDP long-header packets (first byte's top bit set) to a QUIC port;
- a client's first VPN packet: UDP to 500, 4500 (IKE) or 1194 (OpenVPN), and a WireGuard
  handshake initiation (a 148-byte datagram starting 01 00 00 00) on any port; UDP to 853
  (DNS over QUIC);
- TCP with SYN, FIN or RST;
- TCP segments with payload that a client sends to a server, recognised by the source
  port being above the destination port (clients use ephemeral ports: 32768-60999 on
  Linux, 49152-65535 on Windows, macOS and iOS, against 443, 80, 8080, 8443 ...). This
  is what keeps a ClientHello's second segment, which no stateless byte test could
  recognise, while downloads — most of a segment's bytes — stay in the kernel.

802.1Q-tagged frames are filtered alike (the kernel has moved their tag aside by the time
the filter runs; QinQ frames are kept whole). For IPv6 the byte tests read
the fixed header positions, so packets with extension headers are kept whole; so are
tunnels (IP-in-IP, GRE and ERSPAN, VXLAN, Geneve, GTP-U, TZSP, CAPWAP) and PPPoE or MPLS
frames, whose inner packets the kernel filter cannot see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from detector.decode import DEFAULT_TUNNELS

#: libpcap's read timeout, which on Linux (TPACKET_V3) is the kernel's block timeout: a
#: block of packets becomes readable when it is full or this long after it was opened.
READ_TIMEOUT_MS = 100
BATCH = 512
#: pcap_activate() statuses (pcap/pcap.h) in libpcap's words (pcap_statustostr). pcapy-ng
#: returns the status instead of raising and has no pcap_geterr, so the words are ours.
ACTIVATE_ERRORS = {
    -1: "generic error",
    -5: "no such device exists",
    -8: "you don't have permission to capture on that device (run as root or with CAP_NET_RAW)",
    -9: "that device is not up",
    -11: "you don't have permission to capture in promiscuous mode",
}
ACTIVATE_WARNINGS = {
    2: "that device doesn't support promiscuous mode: only its own traffic is seen",
    3: "that type of time stamp is not supported by that device",
}


class LiveCaptureError(Exception):
    """An interface that cannot be captured on; the message is one line for the operator."""


def _any(*terms: str) -> str:
    return "(" + " or ".join(f"({t})" for t in terms) + ")"


def _all(*terms: str) -> str:
    # pcap-filter gives 'and' and 'or' the same precedence: every group is bracketed.
    return "(" + " and ".join(f"({t})" for t in terms) + ")"


def capture_filter(dns_ports: frozenset[int], quic_ports: frozenset[int], linktype: int = 1,
                   tunnel_ports: Iterable[int] = DEFAULT_TUNNELS) -> str:
    """The BPF prefilter (tcpdump syntax) for the ports in use and the interface's link type;
    ``tunnel_ports``: the UDP ports that open a tunnel (decode.udp_tunnels)."""
    dns = _any(*(f"port {p}" for p in sorted(dns_ports)))
    tunnels = _any("ip proto 4 or ip proto 41 or ip proto 47", *(f"udp port {p}" for p in sorted(tunnel_ports)))
    quic = _any(*(f"dst port {p}" for p in sorted(quic_ports)))
    ip4 = _all("ip", _any(
        _all("udp or tcp", dns),
        "udp port 67 or udp port 68",
        _all("udp", quic, "udp[8] & 0x80 != 0"),
        _all("tcp", _any(
            "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0",
            _all("tcp[0:2] > tcp[2:2]", "ip[2:2] > ((ip[0]&0xf)<<2) + ((tcp[12]&0xf0)>>2)"),
        )),
        # Tunnels (IP-in-IP, GRE and ERSPAN, the UDP tunnels) are kept whole: their inner packets
        # are what counts.
        tunnels,
        # VPN handshakes (extract/tunnels.py): IKE, OpenVPN, DoQ, a WireGuard initiation (148 bytes).
        "udp dst port 500 or udp dst port 4500 or udp dst port 1194 or udp dst port 853",
        "udp[4:2] == 156 and udp[8:4] == 0x01000000",
    ))
    # libpcap reads IPv6 transport fields only right after the fixed header, so the byte
    # tests use fixed offsets, and packets with extension headers are kept whole.
    ip6 = _all("ip6", _any(
        "ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 47",
        _all("udp", _any(*(f"port {p}" for p in sorted(tunnel_ports)))),
        _all("udp or tcp", dns),
        _all("udp", quic, "ip6[48] & 0x80 != 0"),
        _all("udp", "dst port 500 or dst port 4500 or dst port 1194 or dst port 853"),
        "ip6[6] == 17 and ip6[44:2] == 156 and ip6[48:4] == 0x01000000",
        # DHCPv6 and neighbour solicitations and advertisements: MAC <-> IPv6 <-> DUID bindings.
        "udp port 546 or udp port 547",
        "ip6[6] == 58 and (ip6[40] == 135 or ip6[40] == 136)",
        _all("tcp", _any(
            "ip6[53] & 0x07 != 0",
            _all("ip6[40:2] > ip6[42:2]", "ip6[4:2] > ((ip6[52]&0xf0)>>2)"),
        )),
    ))
    inner = _any("arp", ip4, ip6)
    if linktype != 1:
        return inner
    # Linux moves a received frame's outer 802.1Q tag out of the packet data before any
    # capture socket sees it (skb_vlan_untag), so the filter above already applies to
    # tagged frames. A tag still in the data (the inner one of QinQ) keeps the frame whole:
    # a copy of the filter behind the 'vlan' keyword would pass the 255-instruction reach
    # of classic BPF's jumps, and the kernel would refuse the program.
    return _any(inner, "ether[12:2] == 0x8100 or ether[12:2] == 0x88a8 or ether[12:2] == 0x9100",
                "pppoes", "mpls")


@dataclass(slots=True)
class CaptureStats:
    received: int = 0
    kernel_drops: int = 0
    interface_drops: int = 0


class LiveCapture:
    """One interface opened for capture (optionally in a PACKET_FANOUT group).

    ``warning`` holds libpcap's activation warning (one line, for the operator) or None.
    """

    def __init__(self, interface: str, dns_ports: frozenset[int], quic_ports: frozenset[int],
                 snaplen: int = 65535, buffer_bytes: int = 32 << 20, fanout_group: int | None = None,
                 tunnel_ports: Iterable[int] = DEFAULT_TUNNELS) -> None:
        import pcapy  # the C extension: imported only where live capture is used

        self.interface = interface
        try:
            handle = pcapy.create(interface)
            handle.set_snaplen(snaplen)
            handle.set_promisc(1)
            handle.set_timeout(READ_TIMEOUT_MS)
            handle.set_buffer_size(buffer_bytes)
            status = handle.activate()
            if status < 0:
                reason = ACTIVATE_ERRORS.get(status, f"cannot capture (status {status})")
                raise LiveCaptureError(f"{interface}: {reason}")
            handle.setfilter(capture_filter(dns_ports, quic_ports, handle.datalink(), tunnel_ports))
            # libpcap's read timeout may never fire on an idle TPACKET_V3 socket: the
            # caller waits on fileno() with select and reads without blocking.
            handle.setnonblock(1)
            if fanout_group is not None:
                handle.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
        except pcapy.PcapError as exc:
            raise LiveCaptureError(f"{interface}: {str(exc).strip()}") from None
        except OSError as exc:
            raise LiveCaptureError(f"{interface}: cannot join fanout group: {exc.strerror or exc}") from None
        self._handle = handle
        self.linktype = handle.datalink()
        self.warning = None if status == 0 else f"{interface}: {ACTIVATE_WARNINGS.get(status, f'warning {status}')}"

    def fileno(self) -> int:
        return self._handle.getfd()

    def read(self) -> tuple[bytes, bytes]:
        """The packets waiting now (up to BATCH; none when none are) as libpcap's buffer
        and, per packet, (seconds, microseconds, offset, caplen) as 4 native unsigned ints
        (``skim.FRAME``): the skim walks them without a Python object per packet."""
        data, meta = self._handle.next_batch(BATCH)
        return data, meta or b""

    def stats(self) -> CaptureStats:
        received, dropped, if_dropped = self._handle.stats()
        return CaptureStats(received, dropped, if_dropped)

    def close(self) -> None:
        self._handle.close()
