"""Lease files as binding sources: dnsmasq, ISC dhcpd and Kea, each written as its
manual describes it; bindings learnt when the capture reaches each lease's start; and the
sample capture, stripped of its DHCP frames, attributed from each format as from the frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.devices import DeviceTable
from detector.extract.binding import Binding
from detector.leases import LeaseError, load_leases

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
#: 2026-03-02 08:59:00 UTC, a minute before the sample capture starts.
START = 1772441940
#: The three DHCP clients of the sample capture: MAC, address, hostname, client id.
CLIENTS = (("02:00:c6:12:0a:22", "198.18.10.34", "bob-iphone"),
           ("02:00:c6:12:0a:32", "198.18.10.50", "comms-office-mac"),
           ("02:00:c6:12:14:65", "198.18.20.101", "galaxy-s23"))

DNSMASQ = "".join(f"{START + 7200} {mac} {ip} {name} 01:{mac}\n" for mac, ip, name in CLIENTS) + (
    "duid 00:01:00:01:2c:e6:37:9d:08:00:27:ba:a1:a7\n"
    f"{START + 7200} 1 fd00:198:18:10::34 bob-iphone 00:03:00:01:02:00:c6:12:0a:22\n")


def isc_uid(mac: str) -> str:
    """dhcpd.leases writes a uid as a string, non-printable bytes in octal."""
    return "".join(chr(b) if 32 < b < 127 and chr(b) not in '"\\' else f"\\{b:03o}"
                   for b in bytes.fromhex("01" + mac.replace(":", "")))


ISC = ("# The format of this file is documented in the dhcpd.leases(5) manual page.\n"
       "# This lease file was written by isc-dhcp-4.4.3-P1\n\n"
       "# authoring-byte-order entry is generated, DO NOT DELETE\nauthoring-byte-order little-endian;\n\n"
       'server-duid "\\000\\001\\000\\001,\\3467\\235\\010\\000\'\\272\\241\\247";\n\n') + "".join(
    f"lease {ip} {{\n  starts 1 2026/03/02 08:59:00;\n  ends 1 2026/03/02 10:59:00;\n"
    f"  cltt 1 2026/03/02 08:59:00;\n  binding state active;\n  next binding state free;\n"
    f"  rewind binding state free;\n  hardware ethernet {mac};\n  uid \"{isc_uid(mac)}\";\n"
    f"  set vendor-class-identifier = \"android-dhcp-14\";\n  client-hostname \"{name}\";\n}}\n"
    for mac, ip, name in CLIENTS) + (
    'ia-na "\\001\\000\\000\\000\\000\\003\\000\\001\\002\\000\\306\\022\\012\\"" {\n'
    "  cltt 1 2026/03/02 08:59:00;\n  iaaddr fd00:198:18:10::34 {\n    binding state active;\n"
    "    preferred-life 375;\n    max-life 600;\n    ends 1 2026/03/02 09:09:00;\n  }\n}\n")

KEA4 = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context," \
    "pool_id\n" \
    + "".join(f"{ip},{mac},01:{mac},7200,{START + 7200},1,0,0,{name},0,,0\n" for mac, ip, name in CLIENTS) \
    + f"198.18.10.99,02:00:c6:12:0a:99,,7200,{START + 7200},1,0,0,declined,1,,0\n"
KEA6 = ("address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,"
        "hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id\n"
        f"fd00:198:18:10::34,00:03:00:01:02:00:c6:12:0a:22,4000,{START + 4000},1,3000,0,1,128,0,0,"
        "bob-iphone,02:00:c6:12:0a:22,0,,1,2,0\n"
        f"fd00:198:18:ff00::,00:03:00:01:02:00:c6:12:0a:22,4000,{START + 4000},1,3000,2,1,56,0,0,,,0,,1,2,0\n")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_dnsmasq_leases(tmp_path):
    leases = load_leases(write(tmp_path, "dnsmasq.leases", DNSMASQ))
    assert leases[0] == Binding("02:00:c6:12:0a:22", "198.18.10.34", "bob-iphone", client_id="01:02:00:c6:12:0a:22")
    assert leases[-1] == Binding(None, "fd00:198:18:10::34", "bob-iphone", duid="00:03:00:01:02:00:c6:12:0a:22")
    assert len(leases) == 4 and all(b.ts is None for b in leases)  # in force from the replay's start


def test_isc_dhcpd_leases(tmp_path):
    leases = load_leases(write(tmp_path, "dhcpd.leases", ISC))
    assert leases[0] == Binding("02:00:c6:12:0a:22", "198.18.10.34", "bob-iphone",
                                client_id="01:02:00:c6:12:0a:22", ts=START)
    assert leases[-1] == Binding(None, "fd00:198:18:10::34", None, duid="00:03:00:01:02:00:c6:12:0a:22", ts=START)
    assert len(leases) == 4


def test_kea_leases(tmp_path):
    four = load_leases(write(tmp_path, "kea-leases4.csv", KEA4))
    assert four[0] == Binding("02:00:c6:12:0a:22", "198.18.10.34", "bob-iphone", client_id="01:02:00:c6:12:0a:22",
                              ts=START)
    assert len(four) == 3  # the declined address binds no device
    six = load_leases(write(tmp_path, "kea-leases6.csv", KEA6))
    assert six == [Binding("02:00:c6:12:0a:22", "fd00:198:18:10::34", "bob-iphone",
                           duid="00:03:00:01:02:00:c6:12:0a:22", ts=START)]  # the delegated prefix is no address


def test_a_lease_takes_effect_at_its_start():
    """One address leased to one device, then to another: each is found in its own time."""
    table = DeviceTable()
    table.schedule([Binding("02:00:00:00:00:01", "198.18.1.1", "first", ts=100.0),
                    Binding("02:00:00:00:00:02", "198.18.1.1", "second", ts=200.0)])
    assert table.identify(None, "198.18.1.1", 50.0).id == "198.18.1.1"
    assert table.hostname(None, "198.18.1.1") is None
    table.advance(150.0)
    assert table.hostname(None, "198.18.1.1") == "first"
    assert table.identify(None, "198.18.1.1", 250.0).id == "02:00:00:00:00:02"
    assert table.hostname(None, "198.18.1.1") == "second"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("dnsmasq.leases", f"{START} 02:00:00:00:00:01 198.18.1.1 a *\n{START} 02:00:00:00:00:02 198.18.1.300 b *\n",
     ":2: '198.18.1.300' is not an IP address"),
    ("dnsmasq.leases", f"{START} 02:00:00:00:00:01 198.18.1.1 a\n", ":1: expected EXPIRY MAC-or-IAID ADDRESS"),
    ("dhcpd.leases", "lease 198.18.1.1 {\n  starts 1 2026/13/02 08:59:00;\n}\n", ":2: '1 2026/13/02 08:59:00' is not"),
    ("dhcpd.leases", "lease 198.18.1.1 {\n  hardware ethernet 02:00:00:00:00:01;\n", ":1: block not closed"),
    ("dhcpd.leases", "lease 198.18.1.1 {\n  hardware ethernet 02:00:00:00:00;\n}\n",
     ":2: '02:00:00:00:00' is not an Ethernet MAC"),
    ("kea-leases4.csv", "address,hwaddr,client_id,valid_lifetime,expire\n198.18.1.1,02:00:00:00:00:01,,x,1\n",
     ":2: valid_lifetime and expire must be whole seconds"),
    ("kea-leases4.csv", "address,client_id,valid_lifetime,expire\n", ":1: Kea heading lacks hwaddr"),
])
def test_a_bad_lease_line_is_one_error_with_its_line(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(LeaseError) as error:
        load_leases(path)
    line, message = expected[1:].split(": ", 1)
    assert str(error.value).startswith(f"{path}:{line}: {message}"), str(error.value)


def test_a_file_of_no_known_format_is_refused(tmp_path):
    with pytest.raises(LeaseError, match="not a dnsmasq, ISC dhcpd or Kea lease file"):
        load_leases(write(tmp_path, "x.leases", "<xml/>\n"))


def events(tmp_path: Path, capture: Path, *args: str) -> list[dict]:
    out = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(out), *args,
                           str(capture)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


IDENTITY = ("client_ip", "name", "proto", "hostname", "client_id", "device_id")


@pytest.mark.parametrize(("name", "text"), [("dnsmasq.leases", DNSMASQ), ("dhcpd.leases", ISC),
                                            ("kea-leases4.csv", KEA4)])
def test_without_its_dhcp_frames_the_sample_is_attributed_from_each_lease_file(tmp_path, name, text):
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap, wrpcap

    stripped = tmp_path / "no-dhcp.pcap"
    frames = rdpcap(str(SAMPLE))
    kept = [f for f in frames if not (UDP in f and {f[UDP].sport, f[UDP].dport} & {67, 68})]
    assert len(kept) < len(frames)  # the sample has DHCP frames to take away
    wrpcap(str(stripped), kept)
    reference = events(tmp_path, SAMPLE)
    without = events(tmp_path, stripped)
    assert {e["hostname"] for e in without} == {None}  # nothing else tells the names
    leased = events(tmp_path, stripped, "--leases", str(write(tmp_path, name, text)))
    assert [tuple(e[k] for k in IDENTITY) for e in leased] == [tuple(e[k] for k in IDENTITY) for e in reference]


#: GNU Radius's documented sample (a dial-up caller: no MAC, nothing bound) and 802.1X
#: Wi-Fi records as FreeRADIUS writes them: Start binds, Stop does not.
RADIUS = f"""Fri Dec 15 18:00:24 2000
	Acct-Session-Id = "2193976896017"
	User-Name = "e2"
	Acct-Status-Type = Start
	Framed-IP-Address = 11.10.10.125
	Calling-Station-Id = "+15678023561"
	Timestamp = 976896024

Mon Mar  2 08:59:00 2026
	Acct-Status-Type = Start
	User-Name = "b.devries@ministry.example"
	Calling-Station-Id = "02-00-C6-12-0A-22"
	Called-Station-Id = "00-16-3E-00-00-01:ministry-staff"
	Framed-IP-Address = 198.18.10.34
	Framed-IPv6-Address = fd00:198:18:10::34
	Timestamp = {START}

Mon Mar  2 10:00:00 2026
	Acct-Status-Type = Stop
	Calling-Station-Id = "02-00-C6-12-0A-22"
	Framed-IP-Address = 198.18.10.34
	Timestamp = {START + 3660}
"""


def test_radius_accounting_detail_file(tmp_path):
    leases = load_leases(write(tmp_path, "detail-202603", RADIUS))
    assert leases == [Binding("02:00:c6:12:0a:22", "198.18.10.34", None, ts=START),
                      Binding("02:00:c6:12:0a:22", "fd00:198:18:10::34", None, ts=START)]
    broken = write(tmp_path, "detail-bad", "Mon Mar  2 08:59:00 2026\nAcct-Status-Type = Start\n")
    with pytest.raises(LeaseError, match=r"detail-bad:2: expected an indented 'Attribute = value' line"):
        load_leases(broken)
