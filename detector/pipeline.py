"""Wires the stages: frames -> decode -> extract -> Observation -> match -> policy -> sinks.

``Extractor`` owns the per-packet work and the two bounded reassembly tables (TCP first
flights, QUIC Initials); it hands on ``Observation`` records and address ``Binding``s and
knows nothing of signatures or segments. ``Detector`` takes observations through the
signature match and the policy to the sinks and knows nothing of packets.

Everything that is dropped is counted in one ``Counter`` under a dotted key, which the
summary prints and the metrics exporter reads at scrape time. The keys:

- ``packets``, ``bytes``: every frame read;
- ``skim.udp``, ``skim.tcp``: bulk dropped after a few byte checks (most of it by the C
  skim before Python sees it, counted there under the same keys);
- ``skip.<reason>``: frames the decoder could not use; ``file.<reason>``: records a
  capture file could not give;
- ``parse_error.<proto>``: messages a parser rejected;
- ``observations.<proto>``: names extracted;
- ``matches.<segment>.<proto>.<category>``: names that matched a signature;
- ``verdicts.<segment>.<decision>`` and ``verdicts.<decision>``: what policy decided.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from detector.counters import (
    BYTES, PACKETS, PARSE_ERROR_DNS, PARSE_ERROR_DNS_PARTIAL, PARSE_ERROR_TLS, QUIC_NO_SNI, SKIM_TCP,
    SKIM_UDP, SKIP_QUIC_SERVER_LONG_HEADER, SKIP_TCP_NOT_TLS_OR_HTTP, TCP_MIDSTREAM, TLS_NO_SNI, match_key,
    blind_spot_key, device_class_key, observation_key, verdict_key,
)
from detector.coverage import ECH, NAMED, NO_NAME, OTHER, TUNNEL, CoverageTable
from detector.decode import ARP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, decode, udp_tunnels
from detector.devices import DeviceTable
from detector.extract import clienthello, http, proxy, tunnels
from detector.extract.answers import AnswerTable
from detector.extract.binding import (
    DHCP6_PORTS, Binding, format_mac, parse_arp, parse_dhcp, parse_dhcpv6, parse_ndp,
)
from detector.extract.dns import parse_dns, split_tcp_messages
from detector.extract.oneway import ENTRIES as DNS_QUERY_ENTRIES, QueryTable, Transaction
from detector.extract.quic import InitialTable
from detector.extract.tcpflight import FlightTable
from detector.match import SignatureSet
from detector.policy import Policy
from detector.records import (
    DNS_ANSWER_ADDRESS, ENCRYPTED_DNS_PROTOS, RESPONSE_ONLY, SERVER_ADDRESS, TIKTOK_CATEGORIES, TUNNEL_PROTOS, UNNAMED,
    Observation,
    Signature, Verdict,
)
from detector.skim import HINT_UNWANTED_HELLO, Skimmer, new_skimmer, set_names
from detector.timing import BatchTimer

DHCP_PORTS = frozenset({67, 68})
TCP_SYN = 0x02
TCP_ACK = 0x10
TCP_RST = 0x04
HTTP_REQUEST_STARTS = tuple(m + b" " for m in http.METHODS)
HTTP_REQUEST_FIRST_BYTES = frozenset(m[0] for m in http.METHODS)
TLS_HANDSHAKE = 0x16
#: RFC 8446 D.4: a TLS 1.3 client may send this record before its second ClientHello.
TLS_CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"
#: How often (in capture seconds) idle reassembly state is expired and alert windows closed.
HOUSEKEEPING_INTERVAL = 1.0
TLS_SNI_OBSERVED = observation_key("tls-sni")


@dataclass(frozen=True, slots=True)
class Settings:
    dns_ports: frozenset[int] = frozenset({53})
    quic_ports: frozenset[int] = frozenset({443})
    max_tcp_flows: int = 65536
    max_flight_bytes: int = 65536
    max_quic_flows: int = 16384
    flow_timeout: float = 30.0
    skim: bool = True  # False: every frame is decoded in Python (the skim's reference)
    worker: int = 0  # with workers > 1, this process reads only its share of the flows
    workers: int = 1
    #: UDP tunnel ports added to the defaults: (tunnel name, port) pairs (decode.udp_tunnels).
    tunnel_ports: tuple[tuple[str, int], ...] = ()


class Wanted(Protocol):
    """Which names become an ``Observation`` (a ``SignatureSet``): ``match`` says it of one
    name, ``prefilter_keys`` gives the keys the C skim drops DNS messages by when none of
    their names can match (None: it cannot, and every name goes to Python)."""

    def match(self, name: str) -> object: ...

    def prefilter_keys(self) -> tuple[str, ...] | None: ...


def preload() -> None:
    """Import the libraries the extractors load at their first use (cryptography for QUIC,
    dpkt for DHCP): a live worker does so before it drops privileges, after which the
    files may no longer be readable to it."""
    from detector.extract import binding, quic

    quic.preload()
    binding.preload()


def ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class Extractor:
    """Decode each frame, run the extractor its transport and ports call for, emit records.

    Frames read from files come through ``skimmer``, which drops the bulk in C; after
    every TCP frame, and for every flow the flight table forgets, the extractor tells
    the skimmer whether it still tracks that flow, so the skimmer keeps exactly the later
    segments a tracked flow needs. Live capture feeds frames directly (the kernel's BPF
    is its skim) and pays for none of this.
    """

    def __init__(
        self,
        settings: Settings,
        on_observation: Callable[[Observation], None],
        on_binding: Callable[[Binding], None],
        stats: Counter[str] | None = None,
        wanted: Wanted | None = None,
    ) -> None:
        """``wanted``, when given, says which names become an ``Observation`` (the others
        are only counted): building the record costs more than matching the name, and
        the skim drops most DNS before Python by the same test. None: every name."""
        self.settings = settings
        self.on_observation = on_observation
        self._wanted = wanted
        self.wanted = wanted.match if wanted is not None else None
        self.on_binding = on_binding
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.tunnels = udp_tunnels(settings.tunnel_ports)
        self._skimmer: Skimmer | None = None
        self._skim_flows: Skimmer | None = None  # the skimmer told of flows: only one that skims
        self.flights = FlightTable(
            settings.max_tcp_flows, settings.max_flight_bytes, settings.flow_timeout, self._forgotten)
        self.initials = InitialTable(settings.max_quic_flows, settings.flow_timeout)
        self.coverage = CoverageTable(self.stats)
        self.queries = QueryTable(self.stats, timeout=settings.flow_timeout)
        self.next_housekeeping = 0.0
        self.timer = BatchTimer()
        self._pcap = ""
        self._frame = 0
        self._hint = 0

    def feed(self, ts: float, linktype: int, frame: bytes, pcap: str, frame_no: int | None, hint: int = 0) -> None:
        """One frame; ``hint`` is the skim's (``skim.HINT_UNWANTED_HELLO``) for a frame it read."""
        stats = self.stats
        stats[PACKETS] += 1
        stats[BYTES] += len(frame)
        if ts >= self.next_housekeeping:
            self.housekeeping(ts)
        packet = decode(linktype, frame, stats, self.tunnels)
        if packet is None:
            return
        self._pcap, self._frame, self._hint = pcap, frame_no, hint
        l4 = packet.l4
        if l4 == IPPROTO_UDP:
            sport, dport = packet.sport, packet.dport
            if sport in self.settings.dns_ports or dport in self.settings.dns_ports:
                self._dns_message(ts, packet, packet.payload)
            elif dport in self.settings.quic_ports and packet.payload[:1] >= b"\x80":
                self._quic(ts, packet)
            elif sport in self.settings.quic_ports and packet.payload[:1] >= b"\x80":
                stats[SKIP_QUIC_SERVER_LONG_HEADER] += 1
            elif sport in DHCP_PORTS and dport in DHCP_PORTS:
                binding = parse_dhcp(packet.payload)
                if binding is not None:
                    self.on_binding(binding)
            elif sport in DHCP6_PORTS and dport in DHCP6_PORTS:
                for binding in parse_dhcpv6(packet.payload, packet.src_mac, packet.dst_mac):
                    self.on_binding(binding)
            else:
                tunnel = tunnels.recognise_udp(packet.payload, sport, dport)
                if tunnel is None:
                    stats[SKIM_UDP] += 1
                else:
                    if tunnel in TUNNEL_PROTOS:  # DNS over QUIC is a lookup, not a connection
                        self._covered(packet, TUNNEL)
                    self._emit_handshake(ts, packet, tunnel)
        elif l4 == IPPROTO_TCP:
            self._tcp(ts, packet)
        elif l4 == ARP:
            binding = parse_arp(packet.payload)
            if binding is not None:
                self.on_binding(binding)
        elif l4 == IPPROTO_ICMPV6:
            binding = parse_ndp(packet.payload, packet.src_ip, packet.src_mac)
            if binding is not None:
                self.on_binding(binding)

    def snapshot(self) -> dict[str, float]:
        """Every counter of the extraction stages, flat, for the metrics exporter to read
        at scrape time (and for live workers to send to the process that serves them)."""
        snap: dict[str, float] = dict(self.stats)
        for name, value in asdict(self.flights.counters).items():
            snap[f"tcp_flight.{name}"] = value
        snap["tcp_flight.flows"] = len(self.flights)
        for name in self.initials.COUNTERS:
            snap[f"quic_initial.{name}"] = getattr(self.initials, name)
        snap["quic_initial.connections"] = len(self.initials)
        snap.update(self.coverage.snapshot())
        snap[DNS_QUERY_ENTRIES] = len(self.queries)
        self.timer.batch(self.stats[PACKETS])
        snap.update(self.timer.snapshot())
        return snap

    @property
    def frame(self) -> int | None:
        """The frame number of the frame being read (what a binding emitted now came from)."""
        return self._frame

    def clock(self, now: float) -> None:
        """Capture time has reached ``now`` (a frame the skim dropped)."""
        if now >= self.next_housekeeping:
            self.housekeeping(now)

    def housekeeping(self, now: float) -> None:
        self.timer.batch(self.stats[PACKETS])
        self.flights.expire(now)
        self.initials.expire(now)
        self.queries.expire(now)
        self.next_housekeeping = now + HOUSEKEEPING_INTERVAL

    @property
    def skimmer(self) -> Skimmer:
        """The skim for frames read from files, made on first use."""
        if self._skimmer is None:
            settings = self.settings
            keys = self._wanted.prefilter_keys() if self._wanted is not None else None
            self._skimmer = new_skimmer(settings.dns_ports, settings.quic_ports, settings.max_tcp_flows,
                                        not settings.skim, settings.worker, settings.workers, keys, self.tunnels)
            if settings.skim:
                self._skim_flows = self._skimmer
        return self._skimmer

    def want(self, wanted: Wanted) -> None:
        """From now on observe the names ``wanted`` matches (signatures reloaded)."""
        self._wanted = wanted
        self.wanted = wanted.match
        skimmer = self._skim_flows
        if skimmer is not None:
            keys = wanted.prefilter_keys()
            if keys is None:
                skimmer.clear_names()
            else:
                set_names(skimmer, keys)

    def _forgotten(self, key: tuple[bytes, int, bytes, int]) -> None:
        """The flight table dropped a flow (evicted, expired): the skim may drop it too."""
        if self._skim_flows is not None:
            self._skim_flows.track(self._skim_flows.flow_hash(*key), False)

    # -- DNS ---------------------------------------------------------------------------

    def _dns_message(self, ts: float, packet: Packet, message: bytes) -> None:
        parsed = parse_dns(message)
        if parsed is None:
            self.stats[PARSE_ERROR_DNS] += 1
            return
        if parsed.malformed:
            self.stats[PARSE_ERROR_DNS_PARTIAL] += 1
        if parsed.is_response:
            # The client of a response is its destination.
            for name in parsed.answers:
                self._emit(ts, packet, "dns-answer", name, False, addresses=parsed.addresses)
            # Its questions are what the client looked up, if the sensor missed the query
            # (NXDOMAIN answers carry nothing else): reported once per transaction.
            wanted = self._wanted_names(parsed.questions)
            if wanted and self.queries.answer_alone(_transaction(packet, message, False), ts):
                for name in wanted:
                    self._emit(ts, packet, "dns-query", name, False, seen=RESPONSE_ONLY)
        else:
            if self._wanted_names(parsed.questions):
                self.queries.query(_transaction(packet, message, True), ts)
            self._emit_all(ts, packet, "dns-query", parsed.questions, client_is_source=True)

    def _wanted_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The names that become observations (all of them when every name is wanted)."""
        wanted = self.wanted
        return names if wanted is None else tuple(name for name in names if wanted(name))

    # -- TCP: DNS, TLS and HTTP from the reassembled first flight -----------------------

    def _tcp(self, ts: float, packet: Packet) -> None:
        key = (packet.src_ip, packet.sport, packet.dst_ip, packet.dport)
        self._segment(ts, packet, key)
        skim = self._skim_flows
        if skim is not None:
            skim.track(skim.flow_hash(*key), self.flights.tracking(key))

    def _segment(self, ts: float, packet: Packet, key: tuple[bytes, int, bytes, int]) -> None:
        flags = packet.flags
        flights = self.flights
        if flags & TCP_SYN:
            # A SYN fixes the client's stream start; a SYN-ACK only matters for DNS, the
            # one protocol here whose server side we read, and says the tap sees the server.
            if not flags & TCP_ACK or packet.sport in self.settings.dns_ports:
                flights.feed(key, ts, packet.seq, True, b"")
            else:
                flights.answer((packet.dst_ip, packet.dport, packet.src_ip, packet.sport))
            return
        payload = packet.payload
        if not payload:
            return
        if not flights.tracking(key):
            dns = packet.sport in self.settings.dns_ports or packet.dport in self.settings.dns_ports
            if not (dns or _starts_message(payload)):
                self.stats[SKIM_TCP] += 1
                return
            if flights.finished(key):
                # A new message on a flow already read: the next request of a keep-alive
                # connection, a ClientHello after STARTTLS, a proxy's CONNECT or a
                # HelloRetryRequest (then behind a compatibility ChangeCipherSpec record).
                skip = len(TLS_CHANGE_CIPHER_SPEC) if payload.startswith(TLS_CHANGE_CIPHER_SPEC) else 0
                if dns or not flights.restart(key, ts, packet.seq + skip):
                    self.stats[SKIM_TCP] += 1
                    return
            else:
                self.stats[TCP_MIDSTREAM] += 1
        stream = flights.feed(key, ts, packet.seq, False, payload)
        if stream is None:
            return
        if packet.sport in self.settings.dns_ports or packet.dport in self.settings.dns_ports:
            messages, used = split_tcp_messages(stream)
            for message in messages:
                self._dns_message(ts, packet, message)
            if used:
                flights.consume(key, used)
            return
        if proxy.may_start(stream):  # a load balancer's PROXY header: the message follows it
            status, length = proxy.header_length(stream)
            if status == proxy.NEED_MORE or (status == proxy.DONE and len(stream) == length):
                return
            if status == proxy.DONE:
                stream = stream[length:]
        # A later message of a connection already counted (keep-alive, STARTTLS) is not
        # another connection: only a first message counts for coverage.
        covered = self._covered if not flights.restarted(key) else _not_covered
        one_way = flights.one_way(key)
        if packet.dport in tunnels.TCP_PORTS:
            tunnel = tunnels.recognise_tcp(stream, packet.dport)
            if tunnel is not None:
                flights.finish(key)
                covered(packet, TUNNEL, one_way)
                self._emit_handshake(ts, packet, tunnel)
                return
        if stream[0] == TLS_HANDSHAKE:
            if self._hint == HINT_UNWANTED_HELLO and stream == payload:
                # The skim read this whole ClientHello, well formed, without ECH, and its
                # server name can match no signature: what parsing it would do, without the parse.
                flights.finish(key)
                self.stats[TLS_SNI_OBSERVED] += 1
                covered(packet, NAMED, one_way)
                return
            status, hello = clienthello.client_hello_from_records(stream)
            if status == clienthello.NEED_MORE:
                return
            flights.finish(key)
            if status == clienthello.NOT_TLS or hello is None:
                self.stats[PARSE_ERROR_TLS] += 1
                covered(packet, NO_NAME, one_way)
                self._infer(ts, packet, "tls-sni")
                return
            covered(packet, _outcome(hello), one_way)
            if hello.sni:
                self._emit(ts, packet, "tls-sni", hello.sni, True, hello.ech, hello.alpn)
            else:
                self.stats[TLS_NO_SNI] += 1
            if not hello.sni or hello.ech:
                self._infer(ts, packet, "tls-sni", hello.sni, hello.ech)
            if packet.dport == tunnels.DOT_PORT and not (hello.sni and self.wanted is not None and self.wanted(hello.sni)):
                # DNS over TLS to a resolver no signature names (by its SNI): a blind spot by its
                # port. (`names`, which wants every name, lists it beside the SNI.)
                self._emit_handshake(ts, packet, tunnels.DOT)
            return
        status, host = http.parse_http_host(stream)
        if status == http.NEED_MORE:
            return
        flights.finish(key)
        if status == http.DONE and host:
            covered(packet, NAMED, one_way)
            self._emit(ts, packet, "http-host", host, True)
        else:
            covered(packet, OTHER, one_way)
            self.stats[SKIP_TCP_NOT_TLS_OR_HTTP] += 1

    # -- QUIC --------------------------------------------------------------------------

    def _quic(self, ts: float, packet: Packet) -> None:
        client = (packet.src_ip, packet.sport)
        for found in self.initials.feed(client, ts, packet.payload):
            hello = found.hello
            self._covered(packet, _outcome(hello))
            if hello.sni:
                self._emit(ts, packet, "quic-sni", hello.sni, True, hello.ech, hello.alpn)
            else:
                self.stats[QUIC_NO_SNI] += 1
            if not hello.sni or hello.ech:
                self._infer(ts, packet, "quic-sni", hello.sni, hello.ech)

    # -- emission ----------------------------------------------------------------------

    def _covered(self, packet: Packet, outcome: str, one_way: bool = False) -> None:
        """A connection of the packet's client ended its first message with ``outcome``;
        ``one_way``: a TCP connection whose SYN no SYN-ACK answered."""
        self.coverage.count(packet.src_mac, packet.src_ip, packet.vlan, outcome, one_way)

    def _emit_all(self, ts: float, packet: Packet, proto: str, names: tuple[str, ...], client_is_source: bool) -> None:
        for name in names:
            self._emit(ts, packet, proto, name, client_is_source)

    # -- names inferred from DNS answers ------------------------------------------------

    def _is_tiktok(self, name: str) -> bool:
        """Whether a TikTok entry matches ``name`` (not a visibility one)."""
        signature = self._wanted.match(name) if self._wanted is not None else None
        return signature is not None and signature.category in TIKTOK_CATEGORIES

    def _infer(self, ts: float, packet: Packet, proto: str, shown: str | None = None,
               ech: bool | None = None) -> None:
        """A TLS or QUIC connection that showed no TikTok name (none, an ECH outer one
        ``shown``, or a ClientHello that could not be read) goes to the writer, which infers
        its name if a DNS answer sent this client to this address for a TikTok name."""
        if self._wanted is None or (shown is not None and self._is_tiktok(shown)):
            return  # every name is printed (`names`), or the name is seen: nothing to infer
        self.on_observation(Observation(
            ts=ts, proto=proto, name=shown or "", client_ip=ip_text(packet.src_ip),
            client_mac=format_mac(packet.src_mac) if packet.src_mac is not None else None, vlan=packet.vlan,
            server_ip=ip_text(packet.dst_ip), server_port=packet.dport, pcap=self._pcap, frame=self._frame,
            ech=ech, evidence=UNNAMED,
        ))

    def _emit_handshake(self, ts: float, packet: Packet, proto: str) -> None:
        """A VPN handshake or encrypted DNS on its port: always wanted (a blind spot by
        what it is); its name is the server's address and port, which an auditor can look up."""
        self._emit(ts, packet, proto, endpoint(ip_text(packet.dst_ip), packet.dport), True, wanted=True)

    def _emit(
        self, ts: float, packet: Packet, proto: str, name: str, client_is_source: bool,
        ech: bool | None = None, alpn: tuple[str, ...] = (), wanted: bool = False,
        addresses: tuple[tuple[bytes, int], ...] = (), seen: str | None = None,
    ) -> None:
        self.stats[observation_key(proto)] += 1
        if not wanted and self.wanted is not None and not self.wanted(name):
            return
        if client_is_source:
            client_ip, client_mac, server_ip, server_port = packet.src_ip, packet.src_mac, packet.dst_ip, packet.dport
        else:
            client_ip, client_mac, server_ip, server_port = packet.dst_ip, packet.dst_mac, packet.src_ip, packet.sport
        self.on_observation(
            Observation(
                ts=ts,
                proto=proto,
                name=name,
                client_ip=ip_text(client_ip),
                client_mac=format_mac(client_mac) if client_mac is not None else None,
                vlan=packet.vlan,
                server_ip=ip_text(server_ip),
                server_port=server_port,
                pcap=self._pcap,
                frame=self._frame,
                ech=ech,
                alpn=alpn,
                addresses=addresses,
                seen=seen,
            )
        )


def endpoint(address: str, port: int) -> str:
    """``198.18.0.1:443``, ``[fd00::1]:443``: the name of an observation that has none."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _not_covered(packet: Packet, outcome: str, one_way: bool) -> None:
    pass


def _outcome(hello: clienthello.ClientHello) -> str:
    """What a ClientHello showed of its connection's name, for coverage."""
    if not hello.sni:
        return NO_NAME
    return ECH if hello.ech else NAMED
def _transaction(packet: Packet, message: bytes, query: bool) -> Transaction:
    """A DNS message's transaction: client, server and ID, whichever way it went."""
    if query:
        return packet.src_ip, packet.sport, packet.dst_ip, packet.dport, message[0] << 8 | message[1]
    return packet.dst_ip, packet.dport, packet.src_ip, packet.sport, message[0] << 8 | message[1]


def _starts_message(payload: bytes) -> bool:
    """Whether a segment can be the first of a TLS ClientHello or an HTTP request.

    Byte checks only: this runs for every TCP segment of a flow not being reassembled.
    """
    if payload.startswith(proxy.STARTS):
        return True
    if payload.startswith(TLS_CHANGE_CIPHER_SPEC):
        payload = payload[len(TLS_CHANGE_CIPHER_SPEC) :]
        if not payload:
            return False
    first = payload[0]
    if first == TLS_HANDSHAKE:
        return len(payload) < 6 or (payload[1] == 3 and payload[5] == 1)
    return first in HTTP_REQUEST_FIRST_BYTES and payload.startswith(HTTP_REQUEST_STARTS)


#: What a recognised handshake matches, whatever its name (the server's address): a VPN,
#: or encrypted DNS on its own port; a blind spot either way.
HANDSHAKE_SIGNATURES = {
    **{proto: Signature(proto, "handshake", "vpn", "detector.extract.tunnels") for proto in TUNNEL_PROTOS},
    **{proto: Signature(proto, "port", "encrypted-dns", "RFC 7858, RFC 9250: port 853")
       for proto in ENCRYPTED_DNS_PROTOS},
}


def signature_of(signatures: SignatureSet, obs: Observation) -> Signature | None:
    """The entry an observation matches: its handshake's, else its name's."""
    return HANDSHAKE_SIGNATURES.get(obs.proto) or signatures.match(obs.name)


class Detector:
    """Match -> policy -> sinks for each observation; bindings go to the device table."""

    def __init__(
        self,
        signatures: SignatureSet,
        policy: Policy,
        devices: DeviceTable,
        on_verdict: Callable[[Verdict], None],
        stats: Counter[str],
    ) -> None:
        self.signatures = signatures
        self.policy = policy
        self.devices = devices
        self.on_verdict = on_verdict
        self.stats = stats
        self.answers = AnswerTable(stats)

    def observe(self, obs: Observation) -> None:
        if obs.evidence == UNNAMED:
            self.infer(obs)
            return
        signature = signature_of(self.signatures, obs)
        if signature is not None:
            self.judge(obs, signature)

    def infer(self, obs: Observation) -> None:
        """A connection that showed no TikTok name: judged under the TikTok name a DNS answer
        gave this client for this address, if one still holds, with the answer as evidence;
        else under the ``address`` entry holding its server (a DoH resolver reached by its
        address, a user's TikTok prefix) with its address and port as name."""
        answer = self.answers.lookup(obs.client_ip, obs.server_ip, obs.ts)
        signature = self.signatures.match(answer.name) if answer is not None else None
        if signature is not None:
            self.judge(replace(obs, name=answer.name, evidence=DNS_ANSWER_ADDRESS, evidence_pcap=answer.pcap,
                               evidence_frame=answer.frame, evidence_ts=answer.ts), signature)
            return
        signature = self.signatures.match_address(obs.server_ip)
        if signature is not None:
            tiktok = signature.category in TIKTOK_CATEGORIES
            self.judge(replace(obs, proto="tls" if obs.proto == "tls-sni" else "quic",
                               name=endpoint(obs.server_ip, obs.server_port),
                               evidence=SERVER_ADDRESS if tiktok else None), signature)

    def judge(self, obs: Observation, signature: Signature | None) -> None:
        """Policy for a matched observation (live workers match, the writer judges; a worker
        sends a connection that showed no TikTok name without a signature, to be inferred);
        a dns-answer of a TikTok name also teaches the answer table its addresses."""
        if signature is None:
            self.infer(obs)
            return
        if obs.addresses and signature.category in TIKTOK_CATEGORIES:
            addresses = tuple((ip_text(address), ttl) for address, ttl in obs.addresses)
            self.answers.learn(obs.client_ip, addresses, obs.name, obs.ts, obs.pcap, obs.frame)
        info = self.devices.identify(obs.client_mac, obs.client_ip, obs.ts)
        verdict = self.policy.decide(obs, signature, self.devices.hostname(obs.client_mac, obs.client_ip), info)
        stats = self.stats
        stats[device_class_key(info.device_class, verdict.decision)] += 1
        stats[match_key(verdict.segment, obs.proto, signature.category)] += 1
        if verdict.decision == "blind-spot":  # by kind too: the metric's labels
            stats[blind_spot_key(verdict.segment, signature.category)] += 1
        else:
            stats[verdict_key(verdict.decision, verdict.segment)] += 1
        stats[verdict_key(verdict.decision)] += 1
        if verdict.decision != "allowed":
            self.on_verdict(verdict)
