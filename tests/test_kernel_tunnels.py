"""Real traffic through the kernel's own tunnel interfaces, as a remote sensor receives it.

A traffic mirror or remote SPAN hands the sensor a device's frames inside a tunnel made by
someone else's code. Here that code is Linux's: each test joins two network namespaces by
a veth link (``netns.VethPair``, 198.18.100.0/24), makes a tunnel interface of one kind at
each end (VXLAN, Geneve, ERSPAN type II or III, GRE with bridged Ethernet) with addresses
of its own (198.19.200.0/24), and sends through it a DNS query and an HTTP request (curl
to a Python HTTP server) for a TikTok name, while tcpdump captures the underlay link. The
capture must name the device inside the tunnel (its address and its tunnel interface's
MAC) for both, read the same with the C skim as without, and give the names tshark gives.

Where this kernel cannot make an interface of a kind (its driver is not built in and no
module can be loaded), that kind is skipped with the kernel's own words; the scapy fixtures
(pcaps/tunnels-*.pcap) cover every kind whatever the kernel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import netns
from netns import Capture, VethPair
from test_differential import compare

from detector.extract.binding import format_mac
from detector.pipeline import Extractor, Settings
from detector.replay import read_captures

pytestmark = pytest.mark.network

#: The tunnel interfaces' own link: the devices whose traffic is mirrored.
INNER_CLIENT, INNER_SERVER, INNER_PREFIX = "198.19.200.1", "198.19.200.2", 24
INNER_CLIENT_MAC = "02:00:c6:13:c8:01"
#: Room for the outer headers (ERSPAN III with its subheader and GRE: 62 bytes) in the veth's 1500.
INNER_MTU = 1400
NAME = "www.tiktok.com"
CLIENT_TIMEOUT = 15.0
#: `ip link add NAME` + these, with the underlay's local and remote addresses added where the kind takes them.
KINDS = {
    "vxlan": ["type", "vxlan", "id", "42", "dstport", "4789"],
    "geneve": ["type", "geneve", "id", "42"],
    "erspan-ii": ["type", "erspan", "seq", "key", "7", "erspan_ver", "1", "erspan", "123"],
    "erspan-iii": ["type", "erspan", "seq", "key", "7", "erspan_ver", "2", "erspan_dir", "ingress", "erspan_hwid", "5"],
    "gretap": ["type", "gretap"],
}
#: A DNS query for NAME, sent once from the client's tunnel address (no server answers it).
DNS_QUERY = (
    "import socket, struct, sys\n"
    "name = b''.join(bytes([len(p)]) + p for p in sys.argv[2].encode().split(b'.')) + b'\\0'\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.sendto(struct.pack('!HHHHHH', 0x1812, 0x0100, 1, 0, 0, 0) + name + b'\\0\\1\\0\\1', (sys.argv[1], 53))\n"
)


@pytest.fixture(scope="module")
def network() -> None:
    reason = netns.unavailable("tcpdump", "curl", "ss")
    if reason:
        pytest.skip(reason)


def tunnel(pair: VethPair, kind: str) -> None:
    """A ``kind`` tunnel interface at each end of the pair, up, with its inner address."""
    for side, peer, address in ((pair.client, pair.server, INNER_CLIENT), (pair.server, pair.client, INNER_SERVER)):
        ends = ["remote", peer.ip4] if kind == "geneve" else ["local", side.ip4, "remote", peer.ip4]
        made = subprocess.run(["ip", "-n", side.ns, "link", "add", "tkt0", *KINDS[kind], *ends],
                              capture_output=True, text=True, timeout=netns.COMMAND_TIMEOUT)
        if made.returncode != 0:
            pytest.skip(f"this kernel cannot make {kind} interfaces: {made.stderr.strip()}")
        if side is pair.client:
            subprocess.run(["ip", "-n", side.ns, "link", "set", "tkt0", "address", INNER_CLIENT_MAC], check=True,
                           timeout=netns.COMMAND_TIMEOUT)
        for argv in (["link", "set", "tkt0", "mtu", str(INNER_MTU)],
                     ["addr", "add", f"{address}/{INNER_PREFIX}", "dev", "tkt0"],
                     ["link", "set", "tkt0", "up"]):
            subprocess.run(["ip", "-n", side.ns, *argv], check=True, capture_output=True,
                           timeout=netns.COMMAND_TIMEOUT)


def observations(path: Path, skim: bool) -> list:
    found: list = []
    extractor = Extractor(Settings(skim=skim), found.append, lambda binding: None)
    assert read_captures([str(path)], extractor, lambda now: None, progress=False) == 0
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_traffic_through_a_kernel_tunnel_names_the_device_inside(network, tmp_path, kind):
    with VethPair(ipv6=False) as pair:
        tunnel(pair, kind)
        server = pair.spawn(pair.server, [sys.executable, "-m", "http.server", "80", "--bind", INNER_SERVER],
                            cwd=tmp_path)
        pair.wait_listening(pair.server, 80)
        with Capture(pair, tmp_path / f"{kind}.pcap") as capture:
            pair.run(pair.client, [sys.executable, "-c", DNS_QUERY, INNER_SERVER, NAME], timeout=CLIENT_TIMEOUT)
            pair.run(pair.client, ["curl", "-s", "-o", "/dev/null", "--max-time", "10", "--resolve",
                                   f"{NAME}:80:{INNER_SERVER}", f"http://{NAME}/"], timeout=CLIENT_TIMEOUT)
        pair.stop(server)
    assert capture.dropped == 0, f"tcpdump reported {capture.dropped!r} packets dropped"
    found = observations(capture.path, skim=True)
    assert found == observations(capture.path, skim=False)
    seen = {(o.proto, o.name, o.client_ip, o.client_mac) for o in found}
    assert ("dns-query", NAME, INNER_CLIENT, INNER_CLIENT_MAC) in seen
    assert ("http-host", NAME, INNER_CLIENT, INNER_CLIENT_MAC) in seen
    assert all(format_mac(bytes.fromhex(INNER_CLIENT_MAC.replace(":", ""))) == o.client_mac for o in found)
    if shutil.which("tshark") is not None:
        compare(capture.path)
