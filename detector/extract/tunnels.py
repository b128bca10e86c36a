"""VPN and tunnel handshakes, recognised by the first packet a client sends.

A device inside a VPN shows the sensor no name at all, however much TikTok it uses, so the
audit must say it was there. These recognisers are sans-IO byte tests on one UDP payload
or the start of one TCP stream, strict enough that ordinary traffic does not pass them:

- WireGuard: the handshake initiation (message type 1) is exactly 148 bytes: type, three
  zero bytes, sender index, ephemeral key, encrypted static key and timestamp, two MACs.
  Any UDP port (51820 is only the default).
- IKE (IPsec's key exchange): an initiator's first message on UDP 500, or on 4500 behind
  the four zero bytes of the non-ESP marker (NAT traversal): an ISAKMP header with a zero
  responder SPI, major version 1 (main or aggressive mode) or 2 (IKE_SA_INIT), and a
  length equal to the datagram's. An IKEv2 message must also come from the original
  initiator (RFC 7296 3.1: the Initiator flag set): a responder that refuses the
  initiator's key exchange group (INVALID_KE_PAYLOAD) or asks for a COOKIE answers with an
  IKE_SA_INIT whose responder SPI is zero too, to the initiator's port (500 when the
  initiator is a gateway or strongSwan), and would otherwise make the VPN gateway look like
  a device starting a VPN. The Response flag is not read: nDPI's ipsec_isakmp_esp.pcap
  holds a client's IKE_SA_INIT with every flag set, which its gateway took as a request.
- OpenVPN: a client's P_CONTROL_HARD_RESET_CLIENT (v2 or v3, key id 0) on its IANA port
  1194, over UDP, or over TCP behind the two-byte packet length. OpenVPN on other ports
  (443 to pass firewalls) has no stateless signature this test could trust; nDPI follows
  the server's answer for it.
- PPTP (RFC 2637): a Start-Control-Connection-Request on TCP 1723: a control message
  (type 1) with the magic cookie 0x1A2B3C4D and control message type 1, 156 bytes long.
  (L2TP, its successor, runs inside IPsec in practice, whose IKE is recognised above.)
- DNS over QUIC (RFC 9250): a QUIC client Initial (long header, padded to at least 1200
  bytes as RFC 9000 section 14.1 requires of a client) to UDP 853, unless 853 is one of the
  QUIC ports, where the Initial is decrypted and its server name read. (DNS over TLS, a
  ClientHello to TCP 853, is told by the pipeline from the hello it parses.)

Each returns the protocol's name (``WIREGUARD``, ``IKE``, ``OPENVPN``, ``PPTP``, ``DOQ``) or None.
The skim (``skim_c/triage.c``) keeps exactly the UDP datagrams that may pass them.
"""

from __future__ import annotations

from detector.records import ENCRYPTED_DNS_PROTOS, TUNNEL_PROTOS

#: The protocols these recognisers name; each is an observation's ``proto``.
WIREGUARD, IKE, OPENVPN, PPTP = TUNNEL_PROTOS
DOT, DOQ = ENCRYPTED_DNS_PROTOS
DOT_PORT = DOQ_PORT = 853
#: RFC 9000 14.1: a client pads every datagram holding an Initial to 1200 bytes.
QUIC_CLIENT_INITIAL_MIN = 1200

WIREGUARD_INITIATION_LEN = 148
IKE_PORT = 500
IKE_NAT_T_PORT = 4500
OPENVPN_PORT = 1194
PPTP_PORT = 1723
#: The TCP ports whose first client message ``recognise_tcp`` reads.
TCP_PORTS = frozenset({OPENVPN_PORT, PPTP_PORT})
#: RFC 2637 2.1: length, message type 1 (control), magic cookie, Start-Control-Connection-Request.
_PPTP_START_REQUEST = (156).to_bytes(2, "big") + b"\x00\x01\x1a\x2b\x3c\x4d\x00\x01"
_IKE_HEADER = 28
#: ISAKMP exchange types of an initiator's first message: IKEv1 main and aggressive mode,
#: IKEv2 IKE_SA_INIT.
_IKE_V1_EXCHANGES = frozenset({2, 4})
_IKE_V2_SA_INIT = 34
#: IKEv2 header flag (RFC 7296 3.1) set in every message the original initiator sends.
_IKE_V2_INITIATOR = 0x08
#: OpenVPN opcodes (high five bits) of a client's first packet, key id 0.
_OPENVPN_HARD_RESETS = frozenset({7 << 3, 10 << 3})
#: Opcode, session id (8), then at least the packet-id array's length byte.
_OPENVPN_MIN = 10


def recognise_udp(payload: bytes, sport: int, dport: int) -> str | None:
    """The tunnel protocol whose first client packet ``payload`` is, or None."""
    if len(payload) == WIREGUARD_INITIATION_LEN and payload[:4] == b"\x01\x00\x00\x00":
        return WIREGUARD
    if dport == IKE_PORT and _ike_initiation(payload):
        return IKE
    if dport == IKE_NAT_T_PORT and payload[:4] == b"\x00\x00\x00\x00" and _ike_initiation(payload[4:]):
        return IKE
    if dport == OPENVPN_PORT and len(payload) >= _OPENVPN_MIN and payload[0] in _OPENVPN_HARD_RESETS:
        return OPENVPN
    if dport == DOQ_PORT and len(payload) >= QUIC_CLIENT_INITIAL_MIN and payload[0] & 0xC0 == 0xC0:
        return DOQ
    return None


def recognise_tcp(stream: bytes, dport: int) -> str | None:
    """The tunnel protocol whose client stream starts with ``stream``, or None."""
    if (dport == OPENVPN_PORT and len(stream) >= 2 + _OPENVPN_MIN
            and stream[0] << 8 | stream[1] == len(stream) - 2 and stream[2] in _OPENVPN_HARD_RESETS):
        return OPENVPN
    if dport == PPTP_PORT and stream.startswith(_PPTP_START_REQUEST):
        return PPTP
    return None


def _ike_initiation(message: bytes) -> bool:
    if len(message) < _IKE_HEADER or message[8:16] != bytes(8):
        return False
    if int.from_bytes(message[24:28], "big") != len(message):
        return False
    major, exchange, flags = message[17] >> 4, message[18], message[19]
    if major == 1:
        return exchange in _IKE_V1_EXCHANGES
    return major == 2 and exchange == _IKE_V2_SA_INIT and bool(flags & _IKE_V2_INITIATOR)
