"""Device identity: DHCP options 61/81/60, DHCPv6, neighbour discovery, the device table
that follows a device across addresses and MACs, and the inventory that names it.

DHCPv6 and neighbour-discovery packets are built with scapy, whose dissectors are written
independently of ours, so a field read at the wrong offset shows."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import dpkt
import pytest
from scapy.layers.dhcp6 import (
    DHCP6_RelayReply, DHCP6_Reply, DHCP6_Request, DHCP6_Solicit, DHCP6OptClientFQDN, DHCP6OptClientId,
    DHCP6OptClientLinkLayerAddr, DHCP6OptIA_NA, DHCP6OptIAAddress, DHCP6OptRelayMsg, DUID_LL,
)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from detector.devices import DeviceTable
from detector.extract.binding import Binding, is_randomised, parse_dhcp, parse_dhcpv6, parse_ndp
from detector.inventory import InventoryError, load_inventory
from detector.pipeline import Extractor, Settings
from detector.replay import read_captures

ROOT = Path(__file__).resolve().parent.parent
MAC = "02:16:00:00:00:01"
MAC_BYTES = bytes.fromhex(MAC.replace(":", ""))
SERVER_MAC = b"\x00\x16\x3e\x00\x00\x02"
DUID_BYTES = bytes(DUID_LL(lladdr=MAC))
DUID = DUID_BYTES.hex(":")
ADDRESS6 = "fd00:198:18:100::123"


# -- DHCP --------------------------------------------------------------------------------


def dhcp(*options: tuple[int, bytes], op: int = dpkt.dhcp.DHCP_OP_REQUEST) -> bytes:
    return bytes(dpkt.dhcp.DHCP(op=op, chaddr=MAC_BYTES, opts=[(53, b"\x01"), *options]))


def test_dhcp_client_id_fqdn_and_vendor_class():
    client_id = b"\xff\x00\x00\x00\x01" + DUID_BYTES
    wire = b"\x03fin\x05phone\x00"
    binding = parse_dhcp(dhcp((61, client_id), (81, b"\x05\x00\x00" + wire), (60, b"android-dhcp-14")))
    assert binding == Binding(MAC, None, None, client_id=client_id.hex(":"), fqdn="fin.phone",
                              vendor_class="android-dhcp-14")
    # Without the E flag the name is text (RFC 4702 2.1); a control byte is escaped.
    text = parse_dhcp(dhcp((81, b"\x01\x00\x00Fin-Phone\x1b")))
    assert text is not None and text.fqdn == "fin-phone\\x1b"
    # A wire name whose label runs past the option is no name.
    assert parse_dhcp(dhcp((81, b"\x05\x00\x00\x09fin"))) is None


def test_locally_administered_mac_is_randomised():
    assert is_randomised("02:16:00:00:00:01") and is_randomised("da:a1:19:00:00:01")
    assert not is_randomised("00:16:3e:00:00:01") and not is_randomised("a4:83:e7:00:00:01")


# -- DHCPv6 ------------------------------------------------------------------------------


def test_dhcpv6_solicit_gives_duid_and_fqdn_of_the_sender():
    solicit = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC))
                    / DHCP6OptClientFQDN(flags=1, fqdn=b"\x07fin-pc7\x07example\x00") / DHCP6OptIA_NA(iaid=1))
    assert parse_dhcpv6(solicit, MAC_BYTES, b"\x33\x33\x00\x01\x00\x02") == (
        Binding(MAC, None, None, fqdn="fin-pc7.example", duid=DUID),)


def test_dhcpv6_reply_binds_each_address_with_a_lifetime_to_the_destination():
    reply = bytes(DHCP6_Reply(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC)) / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr=ADDRESS6, preflft=300, validlft=600),
                          DHCP6OptIAAddress(addr="fd00:198:18:100::124", preflft=0, validlft=0)]))
    assert parse_dhcpv6(reply, SERVER_MAC, MAC_BYTES) == (Binding(MAC, ADDRESS6, None, duid=DUID),)
    # A REQUEST only asks for its addresses: they bind nothing yet.
    request = bytes(DHCP6_Request(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC)) / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr=ADDRESS6, preflft=300, validlft=600)]))
    assert parse_dhcpv6(request, MAC_BYTES, SERVER_MAC) == (Binding(MAC, None, None, duid=DUID),)


def test_relayed_reply_takes_the_mac_from_the_relay_option_or_names_the_duid_alone():
    inner = DHCP6_Reply(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC)) / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr=ADDRESS6, preflft=300, validlft=600)])
    with_mac = bytes(DHCP6_RelayReply(linkaddr="fd00::1", peeraddr="fe80::1") / DHCP6OptRelayMsg(message=inner)
                     / DHCP6OptClientLinkLayerAddr(clladdr=MAC))
    # The relay's frame goes to the relay, not the client: its MAC must not be taken.
    assert parse_dhcpv6(with_mac, SERVER_MAC, SERVER_MAC) == (Binding(MAC, ADDRESS6, None, duid=DUID),)
    bare = bytes(DHCP6_RelayReply(linkaddr="fd00::1", peeraddr="fe80::1") / DHCP6OptRelayMsg(message=inner))
    assert parse_dhcpv6(bare, SERVER_MAC, SERVER_MAC) == (Binding(None, ADDRESS6, None, duid=DUID),)


def test_dhcpv6_truncated_or_nested_without_end_binds_nothing():
    reply = bytes(DHCP6_Reply(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC)))
    for cut in range(len(reply)):
        for binding in parse_dhcpv6(reply[:cut], SERVER_MAC, MAC_BYTES):
            assert binding.duid in (None, DUID)
    nested = bytes([13]) + bytes(33)
    for _ in range(20):  # relays in relays, past the depth bound
        nested = bytes([13]) + bytes(33) + b"\x00\x09" + len(nested).to_bytes(2, "big") + nested
    assert parse_dhcpv6(nested, None, None) == ()


# -- neighbour discovery -------------------------------------------------------------------


def test_neighbour_advertisement_solicitation_and_dad_bind_mac_and_address():
    na = bytes(ICMPv6ND_NA(tgt=ADDRESS6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=MAC))
    assert parse_ndp(na, bytes(16), SERVER_MAC) == Binding(MAC, ADDRESS6, None)
    ns = bytes(ICMPv6ND_NS(tgt="fd00:198:18:100::2") / ICMPv6NDOptSrcLLAddr(lladdr=MAC))
    source = bytes.fromhex("fd00019800180100" + "0000000000000123")
    assert parse_ndp(ns, source, SERVER_MAC) == Binding(MAC, ADDRESS6, None)
    dad = bytes(ICMPv6ND_NS(tgt=ADDRESS6))  # from ::, no option: the frame's source claims it
    assert parse_ndp(dad, bytes(16), MAC_BYTES) == Binding(MAC, ADDRESS6, None)
    link_local = bytes(ICMPv6ND_NA(tgt="fe80::16:ff:fe00:1") / ICMPv6NDOptDstLLAddr(lladdr=MAC))
    assert parse_ndp(link_local, bytes(16), MAC_BYTES) is None
    zero_length_option = na[:24] + b"\x02\x00" + na[26:]
    assert parse_ndp(zero_length_option, bytes(16), MAC_BYTES) is None


def test_frames_reach_the_device_table_through_the_skim_as_without_it(tmp_path):
    """The C skim keeps DHCPv6 and neighbour discovery as the Python reference reads them."""
    frames = [
        Ether(src=MAC, dst="33:33:00:01:00:02") / IPv6(src="fe80::16:ff:fe00:1", dst="ff02::1:2")
        / UDP(sport=546, dport=547) / DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC)),
        Ether(src=SERVER_MAC, dst=MAC) / IPv6(src="fe80::2", dst="fe80::16:ff:fe00:1")
        / UDP(sport=547, dport=546) / DHCP6_Reply(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr=MAC))
        / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr=ADDRESS6, preflft=300, validlft=600)]),
        Ether(src=MAC, dst="33:33:ff:00:01:24") / IPv6(src="::", dst="ff02::1:ff00:124")
        / ICMPv6ND_NS(tgt="fd00:198:18:100::124"),
        Ether(src=MAC, dst=SERVER_MAC) / IPv6(src="fd00:198:18:100::125", dst="fd00:198:18:100::2")
        / ICMPv6ND_NA(tgt="fd00:198:18:100::125") / ICMPv6NDOptDstLLAddr(lladdr=MAC),
    ]
    pcap = tmp_path / "bindings.pcap"
    wrpcap(str(pcap), frames)
    seen = {}
    for skim in (True, False):
        bindings: list[Binding] = []
        stats: Counter[str] = Counter()
        extractor = Extractor(Settings(skim=skim), lambda obs: None, bindings.append, stats)
        read_captures([str(pcap)], extractor, lambda now: None, progress=False)
        seen[skim] = (bindings, stats)
    assert seen[True] == seen[False]
    assert {(b.mac, b.ip, b.duid) for b in seen[True][0]} == {
        (MAC, None, DUID), (MAC, ADDRESS6, DUID), (MAC, "fd00:198:18:100::124", None),
        (MAC, "fd00:198:18:100::125", None)}


# -- the device table ----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_identity_survives_address_and_mac_changes(tmp_path):
    client_id = "ff:00:00:00:01:" + DUID
    table = DeviceTable()
    table.learn(Binding(MAC, "198.18.100.50", "fin-phone-7", client_id=client_id))
    table.learn(Binding(MAC, ADDRESS6, None))  # neighbour discovery: a SLAAC address
    first = table.identify(None, ADDRESS6)
    assert first.id == f"client-id:{client_id}" and first.randomised_mac
    # A new MAC, the same client id: the same device; its old addresses may go to others.
    table.learn(Binding("02:16:00:00:00:02", "198.18.100.51", None, client_id=client_id))
    assert table.identify("02:16:00:00:00:02", "198.18.100.51").id == first.id
    # Without DHCP: its MAC.
    assert table.identify("00:16:3e:00:00:09", "198.18.100.9").id == "00:16:3e:00:00:09"
    assert not table.identify("00:16:3e:00:00:09", "198.18.100.9").randomised_mac
    # A DHCPv6 lease seen without any MAC (a relayed reply): its DUID, by the address alone.
    table.learn(Binding(None, "fd00:198:18:100::777", None, fqdn="lab-pc", duid="00:03:00:01:aa:bb:cc:dd:ee:ff"))
    known = table.identify(None, "fd00:198:18:100::777")
    assert known.id == "duid:00:03:00:01:aa:bb:cc:dd:ee:ff" and known.fqdn == "lab-pc"


def test_inventory_names_a_randomised_mac_by_client_id_duid_or_hostname(tmp_path):
    inventory = load_inventory(write(tmp_path / "inv.csv", (
        "id,mac,client id,duid,hostname,owner,department,class\n"
        "A1,00:16:3e:00:00:01,,,,alice,Finance,official\n"
        "A2,,ff:00:00:00:01:00:03:00:01:02:16:00:00:00:01,,,bob,Finance,official\n"
        "A3,,,00:03:00:01:aa:bb:cc:dd:ee:ff,,carol,HR,personal\n"
        "A4,,,,Dave-Laptop,dave,IT,unknown\n")))
    table = DeviceTable(inventory=inventory)
    table.learn(Binding("02:00:00:00:00:02", "198.18.1.2", None,
                        client_id="ff:00:00:00:01:00:03:00:01:02:16:00:00:00:01"))
    table.learn(Binding(None, "fd00::3", None, duid="00:03:00:01:aa:bb:cc:dd:ee:ff"))
    table.learn(Binding("02:00:00:00:00:04", "198.18.1.4", None, fqdn="dave-laptop.corp.example"))
    got = {ip: table.identify(mac, ip) for mac, ip in (("00:16:3e:00:00:01", "198.18.1.1"),
                                                       ("02:00:00:00:00:02", "198.18.1.2"), (None, "fd00::3"),
                                                       ("02:00:00:00:00:04", "198.18.1.4"))}
    assert [(i.id, i.device_class, i.owner, i.identified_by) for i in got.values()] == [
        ("A1", "official", "alice", "mac"), ("A2", "official", "bob", "client-id"),
        ("A3", "personal", "carol", "duid"), ("A4", "unknown", "dave", "hostname")]


# -- the inventory file ---------------------------------------------------------------------


def test_inventory_csv_with_an_mdm_export_heading_and_semicolons(tmp_path):
    inventory = load_inventory(write(tmp_path / "intune.csv", (
        "\ufeffDevice name;Serial number;Wi-Fi MAC;Ethernet MAC;Primary user UPN;Ownership;OS version\n"
        "FIN-LT-07;5CG1234;A4-83-E7-00-00-01;a483.e700.0002;a.jansen@example.org;Corporate;14.2\n"
        "# a comment line\n"
        "\n"
        "pers-phone;;02:00:00:00:00:09;;b.smit@example.org;Personal;17\n")))
    first, second = inventory.entries
    assert (first.id, first.hostname, first.macs, first.device_class, first.owner, first.line) == (
        "5CG1234", "fin-lt-07", ("a4:83:e7:00:00:01", "a4:83:e7:00:00:02"), "official", "a.jansen@example.org", 2)
    assert (second.id, second.device_class, second.line) == ("pers-phone", "personal", 5)


def test_inventory_json_list_or_devices_object(tmp_path):
    text = ('{"devices": [\n  {"id": "A1", "macs": ["00:16:3e:00:00:01", "00:16:3e:00:00:02"], "class": "official",\n'
            '   "owner": "alice", "department": "Finance"},\n  {"hostname": "lab-pc", "class": "unknown"}\n]}\n')
    inventory = load_inventory(write(tmp_path / "inv.json", text))
    assert [(e.id, e.macs, e.line) for e in inventory.entries] == [
        ("A1", ("00:16:3e:00:00:01", "00:16:3e:00:00:02"), 2), ("lab-pc", (), 4)]
    listed = load_inventory(write(tmp_path / "list.json", '[{"mac": "00:16:3e:00:00:01", "class": "personal"}]'))
    assert listed.entries[0].device_class == "personal"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad-mac.csv", "mac,class\n00:16:3e:00:00:01,official\n00:16:3e:00:00,official\n",
     ":3: '00:16:3e:00:00' is not a MAC address"),
    ("bad-class.csv", "mac,class\n00:16:3e:00:00:01,offical\n", ":2: class is 'offical'; write one of official"),
    ("no-class.csv", "mac,owner\n00:16:3e:00:00:01,alice\n", ":1: no class column"),
    ("dup.csv", "mac,class\n00:16:3e:00:00:01,official\n\n00-16-3E-00-00-01,personal\n",
     ":4: mac 00:16:3e:00:00:01 is already on line 2"),
    ("nothing.csv", "mac,hostname,owner,class\n,,alice,official\n", ":2: names no MAC, client id, DUID or hostname"),
    ("cells.csv", "mac,class\n00:16:3e:00:00:01,official,extra\n", ":2: 3 cells, but the heading names 2"),
    ("quote.csv", 'mac,class\n00:16:3e:00:00:01,official\n"00:16:3e:00:00:02,official\n',
     ":3: unexpected end of data"),
    ("bad-id.csv", "mac,client id,class\n00:16:3e:00:00:01,xyz,official\n", ":2: client id 'xyz' is not hex"),
    ("syntax.json", '[\n {"mac": "00:16:3e:00:00:01", "class": "official"},\n {"mac": }\n]\n',
     ":3: Expecting value"),
    ("key-line.json", '[\n {"mac": "00:16:3e:00:00:01",\n  "class": "guest"}\n]\n',
     ":3: class is 'guest'"),
    ("type.json", '[\n {"mac": "00:16:3e:00:00:01",\n  "class": "official",\n  "owner": 7}\n]\n',
     ":4: owner: give a string"),
])
def test_a_bad_inventory_line_is_one_error_with_its_line(tmp_path, name, text, expected):
    path = write(tmp_path / name, text)
    with pytest.raises(InventoryError) as error:
        load_inventory(path)
    message = str(error.value)
    assert message.startswith(f"{path}{expected.split(':', 2)[0]}:{expected.split(':', 2)[1]}:"), message
    assert expected.split(": ", 1)[1] in message and "\n" not in message


def test_replay_with_a_bad_inventory_says_one_line_and_exits_2(tmp_path):
    bad = write(tmp_path / "inv.csv", "mac,class\n00:16:3e:00:00:01,official\nnot-a-mac,official\n")
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--inventory", str(bad),
                           str(ROOT / "pcaps" / "sample-office.pcapng")], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr == f"tiktok-detector: {bad}:3: 'not-a-mac' is not a MAC address " \
                                                   "(write it like 02:00:5e:10:00:01)\n"


def test_decode_passes_neighbour_discovery_only_and_counts_other_icmpv6():
    from scapy.layers.inet6 import ICMPv6EchoRequest

    from detector.decode import IPPROTO_ICMPV6, decode

    stats: Counter[str] = Counter()
    ns = bytes(Ether(src=MAC) / IPv6(src="::", dst="ff02::1:ff00:124") / ICMPv6ND_NS(tgt=ADDRESS6))
    packet = decode(1, ns, stats)
    assert packet is not None and packet.l4 == IPPROTO_ICMPV6 and packet.payload[0] == 135 and not stats
    echo = bytes(Ether(src=MAC) / IPv6(src=ADDRESS6, dst="fd00::2") / ICMPv6EchoRequest())
    assert decode(1, echo, stats) is None and stats == Counter({"skip.other_transport": 1})
