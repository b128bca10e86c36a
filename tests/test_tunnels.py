"""VPN handshakes (detector/extract/tunnels.py): each first packet recognised, nothing else.

A false positive here calls a civil servant's device a VPN user, a miss hides a blind spot:
both are checked against Wireshark's dissectors (WireGuard, ISAKMP, OpenVPN) on the
repository's fixture and on the VPN captures of nDPI's test suite, whose file names are
nDPI's own labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from detector.extract.tunnels import DOQ, IKE, OPENVPN, PPTP, WIREGUARD, recognise_tcp, recognise_udp
from detector.pipeline import Extractor, Settings
from detector.records import TUNNEL_PROTOS
from detector.replay import read_captures

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "pcaps" / "tunnels.pcap"
CORPUS = ROOT.parent / "shared" / "corpus" / "ndpi"
TSHARK = shutil.which("tshark")
#: nDPI's VPN captures and what each holds of a client's first packet (its file name is
#: nDPI's label); mullvad_wireguard.pcap starts after the handshake.
CORPUS_TUNNELS = {
    "wireguard.pcap": {WIREGUARD}, "protonvpn.pcap": {WIREGUARD}, "mullvad_wireguard.pcap": set(),
    "ipsec_isakmp_esp.pcap": {IKE}, "esp.pcapng": {IKE}, "ah.pcapng": {IKE},
    "openvpn.pcap": {OPENVPN}, "openvpn_nohmac.pcapng": {OPENVPN}, "openvpn_nohmac_tcp.pcapng": {OPENVPN},
    "openvpn-tlscrypt.pcap": {OPENVPN}, "443-opvn.pcap": {OPENVPN}, "openvpn_obfuscated.pcapng": set(),
    "pptp.pcap": {PPTP}, "stun.pcap": set(), "dns_doh.pcap": set(), "tor.pcap": set(),
}

WG_INIT = b"\x01\x00\x00\x00" + bytes(range(144))
IKE_V2 = bytes(range(1, 9)) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + bytes(4) + (68).to_bytes(4, "big") + bytes(40)
IKE_V1 = bytes(range(1, 9)) + bytes(8) + bytes([1, 0x10, 2, 0]) + bytes(4) + (60).to_bytes(4, "big") + bytes(32)
RESET = bytes([7 << 3]) + bytes(range(8)) + bytes(5)


@pytest.mark.parametrize(("payload", "sport", "dport", "expected"), [
    (WG_INIT, 41641, 51820, WIREGUARD),
    (WG_INIT, 5000, 443, WIREGUARD),  # any port
    (WG_INIT[:-1], 41641, 51820, None),  # a byte short
    (b"\x02" + WG_INIT[1:], 41641, 51820, None),  # another message type
    (IKE_V2, 500, 500, IKE),
    (IKE_V1, 500, 500, IKE),
    (b"\x00" * 4 + IKE_V2, 4500, 4500, IKE),  # behind the non-ESP marker
    (IKE_V2[:8] + b"\x01" * 8 + IKE_V2[16:], 500, 500, None),  # a responder's SPI: not the first message
    (IKE_V2[:24] + (69).to_bytes(4, "big") + IKE_V2[28:], 500, 500, None),  # length not the datagram's
    (IKE_V2, 500, 4500, None),  # on 4500 without the marker: ESP
    (bytes(IKE_V2[:17]) + bytes([0x30]) + IKE_V2[18:], 500, 500, None),  # version 3
    (IKE_V2[:19] + b"\x20" + IKE_V2[20:], 500, 500, None),  # a responder's refusal (INVALID_KE, COOKIE)
    (IKE_V2[:19] + b"\x00" + IKE_V2[20:], 500, 500, None),  # not from the original initiator
    (IKE_V2[:19] + b"\xff" + IKE_V2[20:], 500, 500, IKE),  # every flag: a gateway took it as a request
    (IKE_V1[:19] + b"\x01" + IKE_V1[20:], 500, 500, IKE),  # IKEv1 flags (encryption) are no matter
    (RESET, 50111, 1194, OPENVPN),
    (bytes([10 << 3]) + RESET[1:], 50111, 1194, OPENVPN),  # v3
    (bytes([9 << 3]) + RESET[1:], 50111, 1194, None),  # data, not a reset
    (bytes([7 << 3 | 1]) + RESET[1:], 50111, 1194, None),  # key id 1: not a first packet
    (RESET, 50111, 443, None),  # OpenVPN elsewhere cannot be told statelessly
    (RESET[:9], 50111, 1194, None),
    (b"\xc3" + bytes(1199), 51515, 853, DOQ),  # a padded QUIC client Initial
    (b"\xc3" + bytes(1000), 51515, 853, None),  # too short for a client's Initial
    (b"\x43" + bytes(1199), 51515, 853, None),  # a short header
    (b"\xc3" + bytes(1199), 51515, 443, None),  # QUIC elsewhere is QUIC
])
def test_udp_first_packets(payload, sport, dport, expected):
    assert recognise_udp(payload, sport, dport) == expected


def test_tcp_first_packets():
    framed = len(RESET).to_bytes(2, "big") + RESET
    assert recognise_tcp(framed, 1194) == OPENVPN
    assert recognise_tcp(framed + b"more", 1194) is None  # the length must be this packet's
    assert recognise_tcp(framed, 443) is None
    assert recognise_tcp(b"\x16\x03\x01\x00\x10" + bytes(16), 1194) is None
    start = (156).to_bytes(2, "big") + bytes.fromhex("00011a2b3c4d0001") + bytes(146)
    assert recognise_tcp(start, 1723) == PPTP
    assert recognise_tcp(start, 443) is None
    assert recognise_tcp(start[:8] + b"\x00\x02" + start[10:], 1723) is None  # a reply, not the client's request
    assert recognise_tcp(start[:4] + b"\x1a\x2b\x3c\x4e" + start[8:], 1723) is None  # not the magic cookie


def ours(path: Path) -> dict[int, str]:
    """Frame -> tunnel protocol, as a replay finds them."""
    found: dict[int, str] = {}
    extractor = Extractor(Settings(), lambda o: found.__setitem__(o.frame, o.proto) if o.proto in TUNNEL_PROTOS else None,
                          lambda binding: None)
    read_captures([str(path)], extractor, lambda now: None, progress=False)
    return found


def theirs(path: Path) -> dict[int, str]:
    """Frame -> tunnel protocol by Wireshark's dissectors: a WireGuard handshake initiation,
    an ISAKMP initiator's first message (zero responder SPI, main, aggressive or IKE_SA_INIT,
    the latter with the Initiator flag) to port 500 or 4500, an OpenVPN hard reset (v2, v3)
    from a client, key id 0."""
    fields = ["frame.number", "wg.type", "isakmp.rspi", "isakmp.exchangetype", "isakmp.flag_i",
              "openvpn.opcode", "openvpn.keyid", "pptp.control_message_type", "udp.dstport", "tcp.dstport"]
    result = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-Y", "wg || isakmp || openvpn || pptp", "-T", "json", "--no-duplicate-keys",
         *[arg for f in fields for arg in ("-e", f)]],
        capture_output=True, timeout=120, check=False,
    )
    found: dict[int, str] = {}
    for packet in json.loads(result.stdout or b"[]"):
        layer = {k: v[0] for k, v in packet["_source"]["layers"].items()}
        frame, dport = int(layer["frame.number"]), int(layer.get("udp.dstport") or layer.get("tcp.dstport") or 0)
        if layer.get("wg.type") == "1":
            found[frame] = WIREGUARD
        elif (layer.get("isakmp.rspi", "").replace(":", "").strip("0") == "" and "isakmp.rspi" in layer
              and (layer.get("isakmp.exchangetype") in ("2", "4")
                   or (layer.get("isakmp.exchangetype") == "34" and layer.get("isakmp.flag_i") == "1"))
              and dport in (500, 4500)):
            found[frame] = IKE
        elif layer.get("openvpn.opcode") in ("0x07", "0x0a", "7", "10") and layer.get("openvpn.keyid") in ("0", "0x00") \
                and dport == 1194:
            found[frame] = OPENVPN
        elif layer.get("pptp.control_message_type") == "1":
            found[frame] = PPTP
    return found


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (Debian package tshark)")


@needs_tshark
def test_fixture_equals_wireshark():
    assert ours(FIXTURE) == theirs(FIXTURE) == {1: WIREGUARD, 3: IKE, 5: OPENVPN, 10: OPENVPN, 14: PPTP}


@needs_tshark
@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(CORPUS_TUNNELS))
def test_corpus_vpn_captures_equal_wireshark_and_ndpi_labels(name):
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{CORPUS} is absent: the shared corpus is not part of a user's clone")
    found = ours(path)
    assert set(found.values()) == CORPUS_TUNNELS[name]
    assert found == theirs(path)
