"""A real DHCP client against a real DHCP server, and the device identity the sensor keeps.

dnsmasq (DHCPv4, DHCPv6 and router advertisements, and the DNS server) runs in one network
namespace, dhcpcd in the other; dhcpcd sends a hostname, a client identifier (RFC 4361:
IAID and DUID), an FQDN and a vendor class, takes a DHCPv4 address, a DHCPv6 address and
SLAAC addresses (stable private and temporary), and then asks for TikTok names over IPv4
and IPv6. Then the client's MAC changes (a phone's randomised MAC, per network) and it
asks again with the same client identifier. tcpdump captures the server's end.

Replayed with an inventory that names the device by its client identifier, every event,
over both address families and both MACs, is one device with the inventory's owner and
class. The same capture without its DHCP frames, replayed with dnsmasq's own lease files
instead, gives the same attribution.

dhcpcd runs in a mount namespace of its own, with its state directories and
/etc/resolv.conf bound to the test's files and no hook script, so nothing of the host
changes. Nothing leaves the namespaces (see ``netns``).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from netns import Capture, VethPair

ROOT = Path(__file__).resolve().parent.parent
#: Bounds: an address to come, one client's query, the detector's run.
ADDRESS_TIMEOUT = 30.0
CLIENT_TIMEOUT = 10.0
DETECTOR_TIMEOUT = 60.0
POLL = 0.1
FIRST_MAC, SECOND_MAC = "02:16:00:00:00:01", "02:16:00:00:00:02"
#: dhcpcd's DUID (a DUID-LL of the first MAC, written before it starts) and IAID: its
#: client identifier (RFC 4361) is ff, the IAID, then the DUID, whatever MAC it has.
DUID = "00:03:00:01:02:16:00:00:00:01"
IAID = "00:00:00:01"
CLIENT_ID = f"ff:{IAID}:{DUID}"
HOSTNAME = "fin-phone-7"
DHCP4_RANGE = ("198.18.100.50", "198.18.100.99")
DHCP6_RANGE = ("fd00:198:18:100::100", "fd00:198:18:100::1ff")
NAMES = ("www.tiktok.com", "api16-normal-c-useast1a.tiktokv.com")
INVENTORY = (
    "Device name,Serial number,Wi-Fi MAC,Client ID,DUID,Primary user UPN,Department,Ownership\n"
    f"{HOSTNAME},SN-7,,{CLIENT_ID},{DUID},a.jansen@finance.example,Finance,Corporate\n"
    "other-laptop,SN-8,02:16:00:00:00:99,,,b.smit@finance.example,Finance,Personal\n"
)

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = netns.unavailable("dnsmasq", "dhcpcd", "tcpdump")
    if reason:
        pytest.skip(reason)


def start_dnsmasq(pair: VethPair, tmp: Path) -> None:
    """DHCPv4, DHCPv6 (with SLAAC beside it: the A flag set in its router advertisements)
    and DNS answering every TikTok name with the server's own addresses."""
    s = pair.server
    pair.spawn(s, [
        "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--user=root", f"--interface={s.ifname}",
        "--bind-interfaces", "--no-resolv", "--no-hosts", "--dhcp-authoritative", "--log-dhcp",
        f"--dhcp-range={DHCP4_RANGE[0]},{DHCP4_RANGE[1]},255.255.255.0,1h",
        f"--dhcp-range={DHCP6_RANGE[0]},{DHCP6_RANGE[1]},slaac,64,1h",
        "--enable-ra", f"--ra-param={s.ifname},5",
        f"--address=/tiktok.com/tiktokv.com/{s.ip4}", f"--address=/tiktok.com/tiktokv.com/{s.ip6}",
        f"--dhcp-leasefile={tmp / 'dnsmasq.leases'}", f"--pid-file={tmp / 'dnsmasq.pid'}",
        f"--log-facility={tmp / 'dnsmasq.log'}",
    ])
    pair.wait_listening(s, 67, udp=True)


def start_dhcpcd(pair: VethPair, tmp: Path, run: int) -> subprocess.Popen:
    """dhcpcd in a mount namespace whose state directories and resolv.conf are the test's."""
    state, runtime = tmp / "dhcpcd-lib", tmp / f"dhcpcd-run-{run}"
    state.mkdir(exist_ok=True)
    runtime.mkdir()
    (state / "duid").write_text(DUID + "\n")
    resolv = tmp / "resolv.conf"
    resolv.touch()
    config = tmp / "dhcpcd.conf"
    config.write_text(
        f"hostname {HOSTNAME}\nfqdn both\nvendorclassid android-dhcp-14\nduid\niaid {IAID}\n"
        "slaac private temporary\nipv6rs\nia_na 1\nnoipv4ll\nnohook resolv.conf\n")
    script = (
        'mount --bind "$1" /var/lib/dhcpcd && mount --bind "$2" /run/dhcpcd && mount --bind "$3" /etc/resolv.conf '
        '&& exec dhcpcd --nobackground --config "$4" --script /bin/true "$5"')
    return pair.spawn(pair.client, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", state,
                             runtime, resolv, config, pair.client.ifname],
               stderr=open(tmp / f"dhcpcd-{run}.log", "wb"))  # noqa: SIM115 - the child holds it


def addresses(pair: VethPair) -> tuple[str | None, list[str]]:
    """The client's DHCPv4 address and its global IPv6 addresses."""
    out = pair.run(pair.client, ["ip", "-j", "addr", "show", "dev", pair.client.ifname], timeout=CLIENT_TIMEOUT,
                   text=True).stdout
    v4, v6 = None, []
    for entry in json.loads(out)[0].get("addr_info", []):
        if entry["family"] == "inet":
            v4 = entry["local"]
        elif entry["family"] == "inet6" and entry.get("scope") == "global" and not entry.get("tentative"):
            v6.append(entry["local"])
    return v4, v6


def wait_for_addresses(pair: VethPair, tmp: Path, run: int) -> tuple[str, list[str]]:
    """A DHCPv4 address, a DHCPv6 one and at least two SLAAC ones (stable and temporary)."""
    deadline = time.monotonic() + ADDRESS_TIMEOUT
    while True:
        v4, v6 = addresses(pair)
        low, high = (ipaddress.ip_address(a) for a in DHCP6_RANGE)
        dhcp6 = [a for a in v6 if low <= ipaddress.ip_address(a) <= high]
        if v4 and dhcp6 and len(v6) - len(dhcp6) >= 2:
            return v4, v6
        if time.monotonic() > deadline:
            log = (tmp / f"dhcpcd-{run}.log").read_text(errors="replace")[-2000:]
            raise TimeoutError(f"no full set of addresses (have {v4}, {v6}); dhcpcd said: {log}")
        time.sleep(POLL)


def ask(pair: VethPair, source: str, name: str) -> None:
    """One DNS question for ``name`` from ``source`` to dnsmasq, answered."""
    server = pair.server.ip6 if ":" in source else pair.server.ip4
    pair.run(pair.client, [sys.executable, __file__, "ask", source, server, name], timeout=CLIENT_TIMEOUT)


def change_mac(pair: VethPair, mac: str) -> None:
    c = pair.client
    for argv in (["link", "set", c.ifname, "down"], ["link", "set", c.ifname, "address", mac],
                 ["link", "set", c.ifname, "up"]):
        pair.run(c, ["ip", *argv], timeout=CLIENT_TIMEOUT)


def replay(*args: str) -> list[dict]:
    out = Path(args[0])
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(out),
                           *args[1:]], capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_one_device_across_address_families_mac_change_and_lease_file(tmp_path, namespaces):
    used: dict[str, set[str]] = {FIRST_MAC: set(), SECOND_MAC: set()}
    with VethPair() as pair:
        c = pair.client
        pair.run(c, ["ip", "addr", "flush", "dev", c.ifname, "scope", "global"], timeout=CLIENT_TIMEOUT)
        pair.run(c, ["sh", "-c", f"echo 2 > /proc/sys/net/ipv6/conf/{c.ifname}/use_tempaddr"], timeout=CLIENT_TIMEOUT)
        change_mac(pair, FIRST_MAC)
        with Capture(pair, tmp_path / "dhcp.pcap", side=pair.server, timeout=ADDRESS_TIMEOUT) as capture:
            start_dnsmasq(pair, tmp_path)
            client = None
            for run, mac in enumerate((FIRST_MAC, SECOND_MAC)):
                if client is not None:
                    shutil.copy(tmp_path / "dnsmasq.leases", tmp_path / "dnsmasq.leases.1")
                    pair.stop(client)
                    pair.run(c, ["ip", "addr", "flush", "dev", c.ifname, "scope", "global"], timeout=CLIENT_TIMEOUT)
                    change_mac(pair, mac)
                client = start_dhcpcd(pair, tmp_path, run)
                v4, v6 = wait_for_addresses(pair, tmp_path, run)
                for source in (v4, *v6):
                    for name in NAMES:
                        ask(pair, source, name)
                    used[mac].add(source)
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(INVENTORY)
    events = replay(str(tmp_path / "events.jsonl"), "--inventory", str(inventory), str(capture.path))
    queries = [e for e in events if e["proto"] == "dns-query"]
    # Every question asked, from every address of both MACs, is there, and is one device.
    assert {(e["client_mac"], e["client_ip"], e["name"]) for e in queries} == {
        (mac, source, name) for mac, sources in used.items() for source in sources for name in NAMES}
    assert {e["client_ip"] for e in queries} >= {a for s in used.values() for a in s if ":" in a}
    identities = {(e["device_id"], e["device_class"], e["owner"], e["department"]) for e in events}
    assert identities == {("SN-7", "official", "a.jansen@finance.example", "Finance")}
    assert {e["client_id"] for e in events} == {CLIENT_ID} and {e["randomised_mac"] for e in events} == {True}
    assert {e["fqdn"] for e in events} == {HOSTNAME} and {e["vendor_class"] for e in events} == {"android-dhcp-14"}
    # Without the DHCP frames, dnsmasq's lease files (before and after the MAC change) say the same.
    stripped = tmp_path / "no-dhcp.pcap"
    subprocess.run(["tcpdump", "-r", capture.path, "-w", stripped, "not (udp port 67 or udp port 68 or udp port 546 "
                    "or udp port 547)"], check=True, capture_output=True, timeout=DETECTOR_TIMEOUT)
    without = replay(str(tmp_path / "leases.jsonl"), "--inventory", str(inventory), "--leases",
                     str(tmp_path / "dnsmasq.leases.1"), "--leases", str(tmp_path / "dnsmasq.leases"), str(stripped))
    assert without and len(without) == len(events)
    assert {(e["client_ip"], e["name"], e["device_id"], e["device_class"], e["owner"]) for e in without} == {
        (e["client_ip"], e["name"], e["device_id"], e["device_class"], e["owner"]) for e in events}
    # And without the inventory the device is still one: its client identifier.
    plain = replay(str(tmp_path / "plain.jsonl"), str(capture.path))
    assert {e["device_id"] for e in plain} == {f"client-id:{CLIENT_ID}"}


def _ask(source: str, server: str, name: str) -> None:
    """Helper run in the client namespace: one A (or AAAA) question, waiting for its answer."""
    import socket

    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    question = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00" + (
        b"\x00\x1c" if family == socket.AF_INET6 else b"\x00\x01") + b"\x00\x01"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(CLIENT_TIMEOUT / 2)
        sock.sendto(question, (server, 53))
        sock.recv(512)


if __name__ == "__main__" and sys.argv[1] == "ask":
    _ask(*sys.argv[2:5])
