"""Captures made by real clients, checked against the detector.

Real clients (OpenSSL's s_client, curl, Chromium, aioquic) talk to real servers across a
veth link between two network namespaces while tcpdump captures the client's end; then
``python -m detector names`` must find exactly the names the clients sent, each with the
right protocol and client address. Crafted fixtures test what we think clients send; these
test what they do send: GREASE, padding, ECH GREASE, shuffled QUIC CRYPTO frames, and
ClientHellos split over several TCP segments or QUIC Initials. Each multi-segment case also
checks the capture itself (with dpkt, not with our own parsers) so it proves what it claims.
Real VPN daemons (wireguard-go, strongSwan's charon) shake hands across the same link: each
handshake a client starts, as Wireshark counts them, must be one blind-spot event.

Nothing leaves the namespaces: they have no route but their own link (see ``netns``).

This file is also its own helper program: ``python test_real_clients.py ROLE ...`` runs the
servers and the aioquic client inside the namespaces (see ``ROLES`` at the bottom).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dpkt
import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

import netns
from netns import Capture, Side, VethPair

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).resolve()
HTTPS_PORT, OTHER_HTTPS_PORT, HTTP_PORT, QUIC_PORT, DOT_PORT = 443, 8443, 8080, 443, 853
#: What the DoH and DoT servers answer every A question with: the server's own address.
DOH_ANSWER = netns.SERVER_IP4
#: Bounds: one client run, a server's start, a Chromium page load, the detector's run.
CLIENT_TIMEOUT = 15.0
SERVER_START_TIMEOUT = 10.0
CHROMIUM_TIMEOUT = 30.0
DETECTOR_TIMEOUT = 60.0
#: The classic SLIP MTU (RFC 1144): a real link MTU below which every ClientHello and HTTP
#: request sent here (OpenSSL's is ~320 bytes, curl's 517) needs more than one segment.
#: The often-quoted 576 would not do: curl's padded 517-byte ClientHello fits its 536-byte MSS.
SMALL_MTU = 296
#: TLS 1.3 key_share group code points (IANA TLS Supported Groups registry).
X25519MLKEM768 = 0x11EC
EXT_KEY_SHARE = 51
#: Chromium without the traffic it makes on its own (updates, sign-in, field trials, hints):
#: the test knows every name it should see. Only the names a test maps reach the server
#: namespace; every other name fails to resolve inside Chromium, so nothing is sent for it.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--disable-field-trial-config", "--no-pings",
    "--disable-features=OptimizationHints,MediaRouter,Translate", "--metrics-recording-only",
    "--password-store=basic", "--use-mock-keychain", "--ignore-certificate-errors", "--dump-dom",
)

pytestmark = pytest.mark.network

Name = tuple[str, str, str]  # (proto, name, client_ip)


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaces() -> None:
    """Skip (with the reason) where network namespaces cannot be made."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory, namespaces) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key, made by openssl."""
    require("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=www.tiktok.com",
         "-addext", "subjectAltName=DNS:*.tiktok.com,DNS:*.tiktokv.com,DNS:*.tiktokcdn.com"],
        check=True, capture_output=True, timeout=CLIENT_TIMEOUT,
    )
    return cert, key


def require(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed")


# -- helpers run by the tests ----------------------------------------------------------


def start_tcp_servers(pair: VethPair, cert: Path, key: Path) -> None:
    """HTTPS on 443 and 8443 and plain HTTP on 8080 in the server namespace, threaded so a
    browser's parallel connections are all answered."""
    pair.spawn(pair.server, [sys.executable, HELPER, "tcp-server", cert, key])
    for port in (HTTPS_PORT, OTHER_HTTPS_PORT, HTTP_PORT):
        pair.wait_listening(pair.server, port, timeout=SERVER_START_TIMEOUT)


def start_quic_server(pair: VethPair, cert: Path, key: Path) -> None:
    pair.spawn(pair.server, [sys.executable, HELPER, "quic-server", cert, key])
    pair.wait_listening(pair.server, QUIC_PORT, udp=True, timeout=SERVER_START_TIMEOUT)


def s_client(pair: VethPair, host: str, port: int, sni: str, *extra: str) -> None:
    # stdin at EOF: s_client completes the handshake, then quits.
    pair.run(pair.client, ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", sni, *extra],
             timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)


def curl(pair: VethPair, scheme: str, name: str, port: int, address: str, path: str = "/") -> None:
    literal = f"[{address}]" if ":" in address else address
    pair.run(pair.client, ["curl", "--silent", "--show-error", "--fail", "--insecure", "--max-time", "10",
                           "--output", "/dev/null", "--resolve", f"{name}:{port}:{literal}",
                           f"{scheme}://{name}:{port}{path}"],
             timeout=CLIENT_TIMEOUT)


def chromium(pair: VethPair, tmp_path: Path, url: str, name: str, *extra: str) -> None:
    pair.run(pair.client, ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                           f"--host-resolver-rules=MAP {name} {pair.server.ip4}, MAP * ~NOTFOUND",
                           *extra, url],
             timeout=CHROMIUM_TIMEOUT)


def quic_client(pair: VethPair, address: str, sni: str, *, quantum: bool = False) -> None:
    pair.run(pair.client, [sys.executable, HELPER, "quic-client", address, sni, *(["quantum"] if quantum else [])],
             timeout=CLIENT_TIMEOUT)


def test_connections_without_a_name_are_judged_by_their_servers_address(tmp_path, tls_files):
    """curl resolves over DNS over HTTPS to an IP-literal URL (``https://ADDRESS/dns-query``:
    no SNI, so no name to match) and OpenSSL connects without a server name to an address of
    a user's TikTok prefix file. An ``address`` entry names each: the resolver's connection
    is an encrypted-DNS blind spot, the other an inferred TikTok connection whose evidence is
    the server's address; the named connection curl makes after its lookup is a violation."""
    require("curl", "openssl", "tcpdump", "ss")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_tcp_servers(pair, *tls_files)
        with Capture(pair, tmp_path / "by-address.pcap") as capture:
            pair.run(c, ["curl", "--silent", "--show-error", "--fail", "--insecure", "--doh-insecure", "--ipv4",
                         "--max-time", "10", "--output", "/dev/null", "--doh-url", f"https://{s.ip4}/dns-query",
                         "https://www.tiktok.com/"], timeout=CLIENT_TIMEOUT)
            pair.run(c, ["openssl", "s_client", "-connect", f"[{s.ip6}]:{HTTPS_PORT}", "-noservername"],
                     timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert capture.dropped == 0
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    for shipped in ("tiktok.toml", "visibility.toml"):
        shutil.copy(ROOT / "signatures" / shipped, signatures / shipped)
    (signatures / "local.toml").write_text(f"""version = "test"
description = "this network's resolver and a TikTok address"
[sources]
local = "this network's own lists"
[[entry]]
pattern = "{s.ip4}"
match = "address"
category = "encrypted-dns"
source = ["local"]
[[entry]]
pattern = "{s.ip6}"
match = "address"
category = "app"
source = ["local"]
""")
    events = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--signatures", str(signatures),
                           "--events", str(events), str(capture.path)],
                          capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert {(r["proto"], r["name"], r["category"], r["decision"], (r.get("evidence") or {}).get("kind"))
            for r in records} == {
        ("tls", f"{s.ip4}:{HTTPS_PORT}", "encrypted-dns", "blind-spot", None),
        ("tls-sni", "www.tiktok.com", "web", "violation", None),
        ("tls", f"[{s.ip6}]:{HTTPS_PORT}", "app", "inferred", "server-address"),
    }


def detector_names(capture: Capture) -> set[Name]:
    """What ``python -m detector names`` finds in the capture, repeats folded."""
    assert capture.dropped == 0, f"tcpdump reported {capture.dropped!r} packets dropped: the capture may be incomplete"
    done = subprocess.run([sys.executable, "-m", "detector", "names", "--no-progress", str(capture.path)],
                          capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return {(r["proto"], r["name"], r["client_ip"]) for r in map(json.loads, done.stdout.splitlines())}


# -- reading the capture independently (dpkt, not our parsers) -------------------------


@dataclass(frozen=True, slots=True)
class FirstMessage:
    """The first message a client sent on one TCP connection, and the segments that carried it."""

    client: tuple[str, int]
    sizes: tuple[int, ...]  # payload bytes of each segment, in order
    data: bytes


def tcp_segments(pcap: Path, clients: set[str]) -> Iterator[tuple[str, dpkt.tcp.TCP]]:
    """(source, segment) of every TCP segment ``clients`` sent, from an Ethernet pcap."""
    with open(pcap, "rb") as stream:
        for _, frame in dpkt.pcap.Reader(stream):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP):
                src = socket.inet_ntop(socket.AF_INET, ip.src)
            elif isinstance(ip, dpkt.ip6.IP6):
                src = socket.inet_ntop(socket.AF_INET6, ip.src)
            else:
                continue
            if src in clients and isinstance(ip.data, dpkt.tcp.TCP):
                yield src, ip.data


def first_messages(pcap: Path, clients: set[str]) -> list[FirstMessage]:
    """The first TLS record or HTTP request header of every TCP connection from ``clients``,
    put together from its segments in sequence order (retransmissions skipped)."""
    next_seq: dict[tuple[str, int], int] = {}
    flows: dict[tuple[str, int], list[bytes]] = {}
    for src, tcp in tcp_segments(pcap, clients):
        key = (src, tcp.sport)
        if tcp.data and next_seq.setdefault(key, tcp.seq) == tcp.seq:
            flows.setdefault(key, []).append(bytes(tcp.data))
            next_seq[key] = (tcp.seq + len(tcp.data)) % 2**32
    found = []
    for key, segments in flows.items():
        stream = b"".join(segments)
        if stream[:1] == b"\x16":
            end = 5 + struct.unpack_from("!H", stream, 3)[0]
        else:
            end = stream.find(b"\r\n\r\n") + 4
        assert 4 <= end <= len(stream), f"the capture lacks the end of the first message of {key}"
        sizes, covered = [], 0
        while covered < end:
            sizes.append(len(segments[len(sizes)]))
            covered += sizes[-1]
        found.append(FirstMessage(key, tuple(sizes), stream[:end]))
    return found


def key_share_groups(record: bytes) -> list[int]:
    """The groups of the key_share extension of a ClientHello record (dpkt parses the rest)."""
    hello = dpkt.ssl.TLSHandshake(record[5:]).data
    for ext_type, data in hello.extensions:
        if ext_type == EXT_KEY_SHARE:
            groups, offset = [], 2
            while offset + 4 <= len(data):
                group, length = struct.unpack_from("!HH", data, offset)
                groups.append(group)
                offset += 4 + length
            return groups
    return []


def quic_hello_packets(pcap: Path, port: int = QUIC_PORT) -> dict[tuple[str, int], int]:
    """For each QUIC client (address, port): how many Initial packets carried new bytes of
    its ClientHello (retransmissions add none).

    Read by tshark, which derives the Initial keys and parses CRYPTO frames by itself. Only
    datagrams that hold Initial packets alone are read: a client's ClientHello is never
    coalesced with a Handshake packet, whose CRYPTO offsets start at 0 again.
    """
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", f"udp.dstport == {port} && quic.crypto.length",
         "-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport",
         "-e", "quic.long.packet_type", "-e", "quic.crypto.offset", "-e", "quic.crypto.length"],
        capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, check=True,
    )
    covered: dict[tuple[str, int], set[int]] = {}
    packets: dict[tuple[str, int], int] = {}
    for line in done.stdout.splitlines():
        ip4, ip6, sport, types, offsets, lengths = line.split("|")
        if set(types.split(",")) != {"0"}:
            continue
        key = (ip4 or ip6, int(sport))
        seen = covered.setdefault(key, set())
        new = set()
        for offset, length in zip(map(int, offsets.split(",")), map(int, lengths.split(","))):
            new |= set(range(offset, offset + length)) - seen
        if new:
            seen |= new
            packets[key] = packets.get(key, 0) + 1
    return packets


# -- the tests -------------------------------------------------------------------------


def test_openssl_and_curl_over_ipv4_and_ipv6(tmp_path, tls_files):
    """s_client on the standard and a non-standard port, curl over HTTPS and plain HTTP,
    each over IPv4 and IPv6: every name, with its protocol and client, and nothing else."""
    require("openssl", "curl", "tcpdump", "ss")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_tcp_servers(pair, *tls_files)
        with Capture(pair, tmp_path / "tcp.pcap") as capture:
            s_client(pair, s.ip4, HTTPS_PORT, "www.tiktok.com")
            s_client(pair, s.ip4, OTHER_HTTPS_PORT, "log16-normal-c-useast1a.tiktokv.com")
            curl(pair, "https", "vm.tiktok.com", HTTPS_PORT, s.ip4)
            curl(pair, "https", "m.tiktok.com", HTTPS_PORT, s.ip6)
            curl(pair, "http", "v16m.tiktokcdn.com", HTTP_PORT, s.ip4)
            curl(pair, "http", "v19.tiktokcdn-us.com", HTTP_PORT, s.ip6)
    assert detector_names(capture) == {
        ("tls-sni", "www.tiktok.com", c.ip4),
        ("tls-sni", "log16-normal-c-useast1a.tiktokv.com", c.ip4),
        ("tls-sni", "vm.tiktok.com", c.ip4),
        ("tls-sni", "m.tiktok.com", c.ip6),
        ("http-host", "v16m.tiktokcdn.com", c.ip4),
        ("http-host", "v19.tiktokcdn-us.com", c.ip6),
    }


def test_encrypted_dns_from_curl_and_kdig_is_a_blind_spot(tmp_path, tls_files):
    """curl resolving over DNS over HTTPS (``--doh-url`` to dns.google, served here) and kdig
    over DNS over TLS (to dns.quad9.net and to a resolver no signature names): the sensor
    never sees the TikTok lookup itself, so each resolver is a blind-spot event, the TikTok
    connection that follows is the one violation, and no DNS name is written."""
    require("curl", "kdig", "tcpdump", "ss")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_tcp_servers(pair, *tls_files)
        pair.spawn(pair.server, [sys.executable, HELPER, "dot-server", *tls_files])
        pair.wait_listening(pair.server, DOT_PORT, timeout=SERVER_START_TIMEOUT)
        with Capture(pair, tmp_path / "encrypted-dns.pcap") as capture:
            pair.run(c, ["curl", "--silent", "--show-error", "--fail", "--insecure", "--doh-insecure",
                         "--max-time", "10", "--output", "/dev/null", "--resolve", f"dns.google:443:{s.ip4}",
                         "--doh-url", "https://dns.google/dns-query", "https://www.tiktok.com/"],
                     timeout=CLIENT_TIMEOUT)
            for hostname in ("dns.quad9.net", "resolver.corp.example"):
                pair.run(c, ["kdig", f"@{s.ip4}", "-p", str(DOT_PORT), "+tls", f"+tls-sni={hostname}",
                             "+time=5", "+retry=0", "vm.tiktok.com", "A"], timeout=CLIENT_TIMEOUT)
    assert capture.dropped == 0
    events = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           str(capture.path)], capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = {(e["proto"], e["name"], e["category"], e["decision"]) for e in map(json.loads, events.read_text().splitlines())}
    assert found == {
        ("tls-sni", "dns.google", "encrypted-dns", "blind-spot"),
        ("tls-sni", "www.tiktok.com", "web", "violation"),
        ("tls-sni", "dns.quad9.net", "encrypted-dns", "blind-spot"),
        ("dot", f"{s.ip4}:{DOT_PORT}", "encrypted-dns", "blind-spot"),
    }


def test_a_connection_without_sni_to_an_address_a_tiktok_name_resolved_to_is_inferred(tmp_path, tls_files):
    """kdig resolves vm.tiktok.com over plain DNS; then OpenSSL connects to the answer's
    address without any server name (-noservername). The sensor sees no name in that
    connection, and infers it from the answer, which it names as evidence."""
    require("openssl", "kdig", "tcpdump", "ss")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_tcp_servers(pair, *tls_files)
        pair.spawn(pair.server, [sys.executable, HELPER, "dns-server"])
        pair.wait_listening(pair.server, 53, udp=True, timeout=SERVER_START_TIMEOUT)
        with Capture(pair, tmp_path / "no-sni.pcap") as capture:
            pair.run(c, ["kdig", f"@{s.ip4}", "+time=5", "+retry=0", "vm.tiktok.com", "A"], timeout=CLIENT_TIMEOUT)
            pair.run(c, ["openssl", "s_client", "-connect", f"{s.ip4}:{HTTPS_PORT}", "-noservername"],
                     timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert capture.dropped == 0
    events = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           str(capture.path)], capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    answer = next(r for r in records if r["proto"] == "dns-answer")
    assert [(r["proto"], r["name"], r["decision"], r.get("evidence")) for r in records] == [
        ("dns-query", "vm.tiktok.com", "violation", None),
        ("dns-answer", "vm.tiktok.com", "violation", None),
        ("tls-sni", "vm.tiktok.com", "inferred", {"kind": "dns-answer-address", "ts": answer["ts"],
                                                   "pcap": capture.path.name, "frame": answer["frame"]}),
    ]


def test_small_mtu_splits_every_first_message(tmp_path, tls_files):
    """On a 296-byte-MTU link the kernel splits ordinary ClientHellos and a long-URL HTTP
    request (the Host header then sits in a later segment) over several segments."""
    require("openssl", "curl", "tcpdump", "ss")
    with VethPair(mtu=SMALL_MTU, ipv6=False) as pair:
        c, s = pair.client, pair.server
        start_tcp_servers(pair, *tls_files)
        with Capture(pair, tmp_path / "small-mtu.pcap") as capture:
            s_client(pair, s.ip4, HTTPS_PORT, "www.tiktok.com")
            curl(pair, "https", "vm.tiktok.com", HTTPS_PORT, s.ip4)
            # The shape of a CDN video URL: a long signed path before the Host header.
            curl(pair, "http", "v16m.tiktokcdn.com", HTTP_PORT, s.ip4,
                 "/video/tos/useast2a/tos-useast2a-ve-0068c001/" + "a1b2c3d4" * 40 + "/?a=1233&br=2048")
    messages = first_messages(capture.path, {c.ip4})
    assert len(messages) == 3 and all(len(m.sizes) >= 2 for m in messages), messages
    [request] = [m for m in messages if m.data.startswith(b"GET ")]
    assert request.data.index(b"\r\nHost: ") > request.sizes[0], "the Host header is in the first segment"
    assert detector_names(capture) == {
        ("tls-sni", "www.tiktok.com", c.ip4),
        ("tls-sni", "vm.tiktok.com", c.ip4),
        ("http-host", "v16m.tiktokcdn.com", c.ip4),
    }


def test_chromium_post_quantum_clienthello_over_tcp(tmp_path, tls_files):
    """Chromium's ClientHello carries an X25519MLKEM768 key share (~1.9 kB with GREASE and
    ECH GREASE) and spans two TCP segments; its SNI is found all the same."""
    require("chromium", "tcpdump", "ss")
    with VethPair() as pair:
        c = pair.client
        start_tcp_servers(pair, *tls_files)
        with Capture(pair, tmp_path / "chromium-tcp.pcap") as capture:
            chromium(pair, tmp_path, "https://www.tiktok.com/", "www.tiktok.com", "--disable-quic")
    hellos = first_messages(capture.path, {c.ip4})
    assert hellos, "Chromium sent no ClientHello"
    for hello in hellos:
        assert X25519MLKEM768 in key_share_groups(hello.data)
        assert len(hello.sizes) >= 2, hello
    assert detector_names(capture) == {("tls-sni", "www.tiktok.com", c.ip4)}


def test_aioquic_clients(tmp_path, tls_files):
    """aioquic clients over IPv4 and IPv6, one with a ClientHello padded past one Initial
    (quantum_readiness_test): every SNI found, and the padded one really took two Initials."""
    require("tcpdump", "ss", "tshark")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_quic_server(pair, *tls_files)
        with Capture(pair, tmp_path / "aioquic.pcap") as capture:
            quic_client(pair, s.ip4, "api16-normal-c-useast1a.tiktokv.com")
            quic_client(pair, s.ip6, "api22-normal-c-useast2a.tiktokv.com")
            quic_client(pair, s.ip4, "v16-webapp-prime.tiktok.com", quantum=True)
    assert sorted(quic_hello_packets(capture.path).values()) == [1, 1, 2]
    assert detector_names(capture) == {
        ("quic-sni", "api16-normal-c-useast1a.tiktokv.com", c.ip4),
        ("quic-sni", "api22-normal-c-useast2a.tiktokv.com", c.ip6),
        ("quic-sni", "v16-webapp-prime.tiktok.com", c.ip4),
    }


def test_chromium_post_quantum_clienthello_over_quic(tmp_path, tls_files):
    """Chromium's QUIC ClientHello (X25519MLKEM768, CRYPTO frames shuffled among PING and
    PADDING frames) needs two Initial packets; the detector reassembles them."""
    require("chromium", "tcpdump", "ss", "tshark")
    with VethPair() as pair:
        c = pair.client
        start_quic_server(pair, *tls_files)
        with Capture(pair, tmp_path / "chromium-quic.pcap") as capture:
            chromium(pair, tmp_path, "https://www.tiktok.com/", "www.tiktok.com",
                     "--enable-quic", "--origin-to-force-quic-on=www.tiktok.com:443")
    initials = quic_hello_packets(capture.path)
    assert initials and all(count >= 2 for count in initials.values()), initials
    assert detector_names(capture) == {("quic-sni", "www.tiktok.com", c.ip4)}


# -- VPNs between the namespaces: each handshake a blind spot -------------------------


#: wireguard-go's control sockets are named after the interface and live outside the
#: namespaces, so each interface on the machine needs a name of its own.
WIREGUARD_RUN = Path("/var/run/wireguard")
WIREGUARD_PORT = 51820
#: A WireGuard responder drops a peer's handshake initiation that comes within 20 ms of the
#: last one it took (flood protection: 50 initiations a second, in wireguard-go and the
#: kernel alike); the client waits this long before it starts another.
HANDSHAKE_SPACING = 0.05
IKE_PORT, IKE_NAT_T_PORT = 500, 4500
#: The addresses inside a tunnel: another RFC 2544 subnet beside the link's.
TUNNEL_CLIENT_IP4, TUNNEL_SERVER_IP4 = "198.18.101.1", "198.18.101.2"
#: strongSwan's IKE daemon; Debian keeps it off PATH.
CHARON = Path("/usr/lib/ipsec/charon")
#: charon's plugins for PSK-authenticated IKEv2 (no certificates), the kernel's sockets and
#: swanctl's control interface (vici).
CHARON_PLUGINS = "random nonce openssl kdf kernel-netlink socket-default vici"
#: How the responder's configuration proposes IKE: the initiator's may differ in its group.
IKE_CIPHERS = "aes128-sha256"
#: ISAKMP exchange types (RFC 7296 3.1) and the notify type of a refused key exchange group.
IKE_SA_INIT, IKE_AUTH, INVALID_KE_PAYLOAD = 34, 35, 17
#: Bound on a daemon's start: its control socket appears within milliseconds.
DAEMON_START_TIMEOUT = 10.0


def detector_events(capture: Capture) -> list[dict]:
    """The events ``python -m detector replay --events`` writes for the capture."""
    assert capture.dropped == 0, f"tcpdump reported {capture.dropped!r} packets dropped: the capture may be incomplete"
    events = capture.path.with_suffix(".events.jsonl")
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--events", str(events),
                           str(capture.path)], capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in events.read_text().splitlines()]


def tshark_fields(pcap: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """The ``fields`` of every frame Wireshark's dissectors select with ``display_filter``."""
    done = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-E", "separator=|",
                           *[arg for field in fields for arg in ("-e", field)]],
                          capture_output=True, text=True, timeout=DETECTOR_TIMEOUT, check=True)
    return [line.split("|") for line in done.stdout.splitlines()]


@dataclass(frozen=True, slots=True)
class IsakmpMessage:
    """One ISAKMP message as Wireshark's dissector reads it."""

    frame: int
    source: str
    dport: int
    exchange: int
    initiator: bool  # the Initiator flag: sent by the original initiator
    response: bool  # the Response flag
    new_sa: bool  # a zero responder SPI: no IKE SA yet
    notify: frozenset[int]


def isakmp_messages(pcap: Path) -> list[IsakmpMessage]:
    """Every ISAKMP message (IKEv1 and v2, on 500 and behind 4500's marker) in the capture."""
    rows = tshark_fields(pcap, "isakmp", "frame.number", "ip.src", "udp.dstport", "isakmp.exchangetype",
                         "isakmp.flag_i", "isakmp.flag_r", "isakmp.rspi", "isakmp.notify.msgtype")
    return [IsakmpMessage(int(frame), src, int(port), int(exchange), flag_i == "1", flag_r == "1",
                          rspi.strip("0:") == "", frozenset(int(n) for n in notify.split(",") if n))
            for frame, src, port, exchange, flag_i, flag_r, rspi, notify in rows]


def wait_for_files(paths: list[Path], daemons: list[subprocess.Popen], logs: list[Path]) -> None:
    """Return once every path exists (a daemon's control socket); raise, with the daemons'
    logs, when one of them exits first or after ``DAEMON_START_TIMEOUT``."""
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while not all(path.exists() for path in paths):
        if any(daemon.poll() is not None for daemon in daemons) or time.monotonic() > deadline:
            said = " | ".join(log.read_text(errors="replace").strip() for log in logs if log.exists())
            raise RuntimeError(f"missing {[str(p) for p in paths if not p.exists()]}: {said}")
        time.sleep(netns.POLL_INTERVAL)


class WireGuard:
    """wireguard-go at both ends of a ``VethPair``, keys from ``wg genkey``; a context manager.

    Only the client knows where its peer is (``connect``); the server learns the client's
    endpoint from its handshake, so every handshake on the link is the client's. Leaving
    ends both daemons and removes their control sockets, even when the body raised.
    """

    def __init__(self, pair: VethPair, directory: Path) -> None:
        self.pair = pair
        self.directory = directory
        # "wg" instead of the link's "tk": as unique on the machine as the link's names.
        self.names = {side: "wg" + side.ifname[2:] for side in (pair.client, pair.server)}
        self.public: dict[Side, str] = {}
        self._daemons: list[subprocess.Popen] = []
        self._made_run = False

    def __enter__(self) -> WireGuard:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _start(self) -> None:
        pair = self.pair
        logs = []
        self._made_run = not WIREGUARD_RUN.exists()
        for side, name in self.names.items():
            logs.append(self.directory / f"{name}.log")
            with open(logs[-1], "wb") as log:  # -f: in the foreground, in the group spawn made
                self._daemons.append(pair.spawn(side, ["wireguard-go", "-f", name], stdout=log, stderr=log))
        wait_for_files([WIREGUARD_RUN / f"{name}.sock" for name in self.names.values()], self._daemons, logs)
        for (side, name), address in zip(self.names.items(), (TUNNEL_CLIENT_IP4, TUNNEL_SERVER_IP4)):
            private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True,
                                     timeout=netns.COMMAND_TIMEOUT).stdout.strip()
            self.public[side] = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                                               check=True, timeout=netns.COMMAND_TIMEOUT).stdout.strip()
            key_file = self.directory / f"{name}.key"
            key_file.touch(0o600)
            key_file.write_text(private + "\n")
            self._wg(side, "private-key", key_file, "listen-port", str(WIREGUARD_PORT))
            pair.run(side, ["ip", "addr", "add", f"{address}/24", "dev", name], timeout=netns.COMMAND_TIMEOUT)
            pair.run(side, ["ip", "link", "set", name, "up"], timeout=netns.COMMAND_TIMEOUT)
        self._wg(pair.server, "peer", self.public[pair.client], "allowed-ips", f"{TUNNEL_CLIENT_IP4}/32")

    def connect(self, server_address: str) -> None:
        """Make the client's peer anew, the server at ``server_address``: a new peer has no
        session, so the next packet into the tunnel starts a handshake."""
        time.sleep(HANDSHAKE_SPACING)
        literal = f"[{server_address}]" if ":" in server_address else server_address
        server_key = self.public[self.pair.server]
        self._wg(self.pair.client, "peer", server_key, "remove")
        self._wg(self.pair.client, "peer", server_key, "endpoint", f"{literal}:{WIREGUARD_PORT}",
                 "allowed-ips", f"{TUNNEL_SERVER_IP4}/32")

    def _wg(self, side: Side, *settings: str | Path) -> None:
        self.pair.run(side, ["wg", "set", self.names[side], *settings], timeout=netns.COMMAND_TIMEOUT)

    def _stop(self) -> None:
        while self._daemons:
            self.pair.stop(self._daemons.pop())
        for name in self.names.values():  # wireguard-go removes its socket unless it was killed
            (WIREGUARD_RUN / f"{name}.sock").unlink(missing_ok=True)
        if self._made_run:
            try:
                WIREGUARD_RUN.rmdir()
            except OSError:  # another wireguard-go has a socket there now
                pass


@dataclass(frozen=True, slots=True)
class Charon:
    """What swanctl needs to reach one charon: its vici socket and its strongswan.conf."""

    uri: str
    env: dict[str, str]


def start_charon(pair: VethPair, side: Side, peer: Side, directory: Path, groups: tuple[str, ...]) -> Charon:
    """strongSwan's charon in ``side``'s namespace with a configuration, pid file and vici
    socket of its own under ``directory``, and a PSK connection to ``peer`` (one IKE proposal
    per group, in order) loaded by swanctl.

    charon's pid file is compiled in (/var/run/charon.pid) and a second charon exits at
    once while the first one's pid is there ("charon already running"), so each one runs in
    a mount namespace of its own with its own directory bound over /run.
    """
    run = directory / "run"
    run.mkdir(parents=True)
    uri = f"unix://{directory / 'charon.vici'}"
    config = directory / "strongswan.conf"
    config.write_text(f"""charon {{
  load_modular = no
  load = {CHARON_PLUGINS}
  plugins {{
    vici {{
      socket = {uri}
    }}
  }}
  filelog {{
    charon {{
      path = {directory / 'charon.log'}
      default = 1
      ike = 2
    }}
  }}
}}
swanctl {{
  load = random
}}
""")
    connections = directory / "swanctl.conf"
    connections.write_text(f"""connections {{
  test {{
    version = 2
    local_addrs = {side.ip4}
    remote_addrs = {peer.ip4}
    proposals = {", ".join(f"{IKE_CIPHERS}-{group}" for group in groups)}
    local {{
      auth = psk
      id = {side.ns}
    }}
    remote {{
      auth = psk
      id = {peer.ns}
    }}
  }}
}}
secrets {{
  ike-test {{
    id-client = {pair.client.ns}
    id-server = {pair.server.ns}
    secret = "a key for this test only"
  }}
}}
""")
    env = {**os.environ, "STRONGSWAN_CONF": str(config)}
    log = directory / "charon.stderr"
    with open(log, "wb") as stderr:
        daemon = pair.spawn(side, ["unshare", "--mount", "sh", "-c", 'mount --bind "$1" /run && exec "$2"', "sh",
                                   run, CHARON], env=env, stderr=stderr)
    wait_for_files([directory / "charon.vici", run / "charon.pid"], [daemon], [log, directory / "charon.log"])
    pair.run(side, ["swanctl", "--load-all", "--noprompt", "--file", connections, "--uri", uri], env=env,
             timeout=netns.COMMAND_TIMEOUT)
    return Charon(uri, env)


def test_wireguard_handshakes_between_namespaces_are_vpn_blind_spots(tmp_path, namespaces):
    """wireguard-go, the userspace WireGuard, on both ends (it needs no kernel module, which
    kernels built without CONFIG_WIREGUARD lack; its handshake is the kernel's to the byte)
    and a ping through the tunnel, first with the server's IPv4 address as the
    endpoint, then with a new peer at its IPv6 address: one ``wireguard`` blind-spot event
    per handshake initiation Wireshark finds on the link, at its frame, and nothing for the
    responses, the tunnelled data, ARP or neighbour discovery."""
    require("wireguard-go", "wg", "ping", "tcpdump", "tshark")
    if not Path("/dev/net/tun").exists():
        pytest.skip("/dev/net/tun is absent: wireguard-go needs a TUN device")
    with VethPair() as pair, WireGuard(pair, tmp_path) as wireguard:
        c, s = pair.client, pair.server
        with Capture(pair, tmp_path / "wireguard.pcap") as capture:
            for address in (s.ip4, s.ip6):
                wireguard.connect(address)
                pair.run(c, ["ping", "-c", "1", "-W", "5", TUNNEL_SERVER_IP4], timeout=CLIENT_TIMEOUT)
    initiations = [(int(frame), ip4 or ip6, f"{dst4}:{port}" if dst4 else f"[{dst6}]:{port}")
                   for frame, ip4, ip6, dst4, dst6, port in tshark_fields(
                       capture.path, "wg.type == 1", "frame.number", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
                       "udp.dstport")]
    assert {(client, server) for _, client, server in initiations} == {
        (c.ip4, f"{s.ip4}:{WIREGUARD_PORT}"), (c.ip6, f"[{s.ip6}]:{WIREGUARD_PORT}")}
    assert [(e["proto"], e["name"], e["category"], e["decision"], e["client_ip"], e["frame"])
            for e in detector_events(capture)] == [
        ("wireguard", server, "vpn", "blind-spot", client, frame) for frame, client, server in initiations]


@pytest.mark.parametrize("groups", [
    ("ecp256",),
    # The initiator's first proposal is MODP-2048, which the responder refuses with an
    # IKE_SA_INIT of its own (INVALID_KE_PAYLOAD, zero responder SPI, to port 500): the
    # initiator tries again with ECP-256. Two handshakes of the device, none of the gateway.
    ("modp2048", "ecp256"),
], ids=["agreed", "group-refused"])
def test_ikev2_between_namespaces_is_a_vpn_blind_spot(tmp_path, namespaces, groups):
    """Two strongSwan charon daemons, one per namespace, and an IKEv2 SA with pre-shared keys
    initiated by swanctl: one ``ike`` blind-spot event per IKE_SA_INIT request the initiator
    sent (as Wireshark's ISAKMP dissector reads them), and nothing for the responder's
    answers or IKE_AUTH (over UDP 4500 once MOBIKE floats there). No IPsec SA follows: its
    installation needs ESP in the kernel (CONFIG_INET_ESP), which not every kernel has, and
    ESP would show the sensor nothing the handshake did not."""
    require("swanctl", "unshare", "tcpdump", "tshark")
    if not CHARON.exists():
        pytest.skip(f"{CHARON} is not installed (Debian: strongswan-charon)")
    with VethPair() as pair:
        c, s = pair.client, pair.server
        start_charon(pair, s, c, tmp_path / "responder", ("ecp256",))
        initiator = start_charon(pair, c, s, tmp_path / "initiator", groups)
        with Capture(pair, tmp_path / "ike.pcap") as capture:
            done = pair.run(c, ["swanctl", "--initiate", "--ike", "test", "--timeout", "10", "--uri", initiator.uri],
                            env=initiator.env, timeout=CLIENT_TIMEOUT, text=True)
        assert "initiate completed successfully" in done.stdout, done.stdout
    messages = isakmp_messages(capture.path)
    requests = [m for m in messages if m.exchange == IKE_SA_INIT and m.initiator and not m.response]
    refusals = [m for m in messages if m.exchange == IKE_SA_INIT and INVALID_KE_PAYLOAD in m.notify]
    # One request per group tried (more only if charon retransmitted one after its 4 s).
    assert len(requests) >= len(groups) and all(m.source == c.ip4 and m.new_sa for m in requests), messages
    assert bool(refusals) == (len(groups) > 1), messages
    assert all(m.source == s.ip4 and m.dport == IKE_PORT and m.new_sa for m in refusals), refusals
    assert {(m.source, m.dport) for m in messages if m.exchange == IKE_AUTH} == {
        (c.ip4, IKE_NAT_T_PORT), (s.ip4, IKE_NAT_T_PORT)}, messages
    assert [(e["proto"], e["name"], e["category"], e["decision"], e["client_ip"], e["frame"])
            for e in detector_events(capture)] == [
        ("ike", f"{s.ip4}:{IKE_PORT}", "vpn", "blind-spot", c.ip4, m.frame) for m in requests]


# -- the helper program: servers and the aioquic client, run inside the namespaces -----


PAGE = b"<!doctype html><title>test</title><p>served inside a test namespace</p>\n"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def do_POST(self) -> None:
        """DNS over HTTPS (RFC 8484): every A question answered with this server's address."""
        query = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = dns_answer(query)
        self.send_response(200 if answer else 400)
        self.send_header("Content-Type", "application/dns-message")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


class _DualStackServer(ThreadingHTTPServer):
    """Threaded HTTP(S) on ``::`` taking IPv4 too; TLS handshakes run in the worker thread."""

    address_family = socket.AF_INET6
    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.context = context
        super().__init__(("::", port), _Page)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Not HTTPServer.server_bind: that looks up the host's name, needlessly here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]

    def finish_request(self, request, client_address) -> None:
        request.settimeout(CLIENT_TIMEOUT)
        if self.context is None:
            super().finish_request(request, client_address)
            return
        with self.context.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)


def dns_answer(query: bytes) -> bytes:
    """The answer of a resolver that sends every name to this server (empty if not DNS)."""
    try:
        message = dpkt.dns.DNS(query)
    except (dpkt.UnpackError, IndexError, ValueError):
        return b""
    message.qr, message.rcode, message.ra = dpkt.dns.DNS_R, dpkt.dns.DNS_RCODE_NOERR, 1
    message.an = []
    for question in message.qd:
        if question.type == dpkt.dns.DNS_A:
            message.an.append(dpkt.dns.DNS.RR(name=question.name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=60,
                                              rdata=socket.inet_aton(DOH_ANSWER)))
    return bytes(message)


def serve_dns() -> None:
    """Plain DNS over UDP on 53, every A question answered with this server's address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 53))
        while True:
            query, client = sock.recvfrom(4096)
            answer = dns_answer(query)
            if answer:
                sock.sendto(answer, client)


def serve_dot(cert: str, key: str) -> None:
    """DNS over TLS (RFC 7858) on 853: length-prefixed messages, each answered."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(CLIENT_TIMEOUT)
            with context.wrap_socket(self.request, server_side=True) as tls:
                while (head := tls.recv(2)) and len(head) == 2:
                    query = b""
                    while len(query) < struct.unpack("!H", head)[0] and (chunk := tls.recv(4096)):
                        query += chunk
                    answer = dns_answer(query)
                    tls.sendall(struct.pack("!H", len(answer)) + answer)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    Server(("0.0.0.0", DOT_PORT), Handler).serve_forever()


def serve_tcp(cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    servers = [_DualStackServer(HTTPS_PORT, context), _DualStackServer(OTHER_HTTPS_PORT, context),
               _DualStackServer(HTTP_PORT, None)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


class _H3Page(QuicConnectionProtocol):
    """Answers every HTTP/3 request with ``PAGE`` (Chromium waits for an answer to exit)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self.h3.send_headers(h3_event.stream_id, [(b":status", b"200"), (b"content-type", b"text/html")])
                self.h3.send_data(h3_event.stream_id, PAGE, end_stream=True)
                self.transmit()


def serve_quic(cert: str, key: str) -> None:
    async def main() -> None:
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        configuration.load_cert_chain(cert, key)
        await serve("::", QUIC_PORT, configuration=configuration, create_protocol=_H3Page)
        await asyncio.Event().wait()

    asyncio.run(main())


def connect_quic(address: str, sni: str, *flags: str) -> None:
    """Complete one QUIC handshake and close; ``quantum`` pads the ClientHello past 1200
    bytes with aioquic's quantum-readiness transport parameter, so it needs two Initials."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=sni,
                                      verify_mode=ssl.CERT_NONE, quantum_readiness_test="quantum" in flags)

    async def main() -> None:
        async with connect(address, QUIC_PORT, configuration=configuration) as client:
            await client.ping()

    asyncio.run(asyncio.wait_for(main(), CLIENT_TIMEOUT))


ROLES = {"tcp-server": serve_tcp, "quic-server": serve_quic, "quic-client": connect_quic, "dot-server": serve_dot,
         "dns-server": serve_dns}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
