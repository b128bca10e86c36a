"""The small immutable records passed forward between stages.

An ``Observation`` is what an extractor saw (a name a client asked for, and where);
a ``Verdict`` is what policy decided about an observation that matched a signature.
Nothing in here knows about packets or files beyond the two fields that locate the
evidence (``pcap`` and ``frame``) so an auditor can open it in Wireshark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

#: The protocols whose observations carry a name a device asked for.
NAME_PROTOS = ("dns-query", "dns-answer", "tls-sni", "quic-sni", "http-host")
#: VPN handshakes (detector/extract/tunnels.py): their observation's name is the server's
#: address and port, and they are blind spots by what they are, not by a name.
TUNNEL_PROTOS = ("wireguard", "ike", "openvpn", "pptp")
#: Encrypted DNS recognised by its port (RFC 7858 DoT, RFC 9250 DoQ: 853) when no name
#: told the resolver: the same kind of observation, an encrypted-dns blind spot.
ENCRYPTED_DNS_PROTOS = ("dot", "doq")
#: Observations whose name is a server's address and port, matched by their protocol.
HANDSHAKE_PROTOS = TUNNEL_PROTOS + ENCRYPTED_DNS_PROTOS
#: A TLS or QUIC connection that showed no name (no SNI, ECH, unreadable) matched by its
#: server's address (an ``address`` entry): its name is that address and port too.
ADDRESS_PROTOS = ("tls", "quic")
#: The protocols an observation can come from; part of the event schema.
PROTOS = NAME_PROTOS + HANDSHAKE_PROTOS + ADDRESS_PROTOS
#: What a TikTok entry (signatures/tiktok.toml) says a name is.
TIKTOK_CATEGORIES = ("app", "api", "cdn", "telemetry", "web", "bytedance-shared")
#: Other ByteDance products (signatures/bytedance-apps.toml), each a category of its own:
#: some bans cover every ByteDance app. Never TikTok, never a violation unless a segment's
#: ``violations`` lists them; ``bytedance-other`` holds Douyin, Toutiao, Pico, Volcengine …
BYTEDANCE_APP_CATEGORIES = ("capcut", "lemon8", "lark", "bytedance-other")
#: How outputs name the product a category belongs to (alerts, summaries).
_PRODUCTS = {"capcut": "CapCut", "lemon8": "Lemon8", "lark": "Lark", "bytedance-other": "another ByteDance app"}
#: What a visibility entry (signatures/visibility.toml) says a name is: a place the sensor
#: is blind to what follows (encrypted DNS, a relay or proxy, a VPN service).
BLIND_SPOT_CATEGORIES = ("encrypted-dns", "relay", "vpn")
#: Every category an entry may carry; also the bounded label set for metrics.
CATEGORIES = TIKTOK_CATEGORIES + BYTEDANCE_APP_CATEGORIES + BLIND_SPOT_CATEGORIES
#: What policy decides of a matched observation. ``blind-spot``: a visibility category the
#: segment does not make a violation, written and counted per device, never alerted.
#: ``inferred``: a TikTok violation known only from a DNS answer's address (the policy's
#: ``inferred = "violation"`` makes it a violation), written, never alerted.
#: ``notice``: a TikTok match on a device whose class the policy makes a notice (a personal
#: phone, say): written and counted, never alerted.
DECISIONS = ("violation", "exempt", "blind-spot", "inferred", "allowed", "notice")
#: What a device inventory (detector/inventory.py) says a device is; a device no inventory
#: names is ``unknown``. Also the bounded label set of the per-class metric.
DEVICE_CLASSES = ("official", "personal", "unknown")


@dataclass(frozen=True, slots=True)
class Observation:
    """One name a client asked for, with the addresses that locate it."""

    ts: float
    proto: str
    name: str
    client_ip: str
    client_mac: str | None
    vlan: int | None
    server_ip: str
    server_port: int
    pcap: str  # capture file name, or "live:IFACE"
    frame: int | None  # 1-based frame number in that file; None when live
    ech: bool | None = None
    alpn: tuple[str, ...] = ()
    #: Set when the name was not seen but inferred: the connection went to an address a DNS
    #: answer (at ``evidence_ts``, in ``evidence_pcap`` at ``evidence_frame``; live captures
    #: have no frame numbers) gave this client for the name.
    evidence: str | None = None
    evidence_pcap: str | None = None
    evidence_frame: int | None = None
    evidence_ts: float | None = None
    #: A dns-answer's A and AAAA addresses (raw) with their TTLs: the writer remembers them
    #: when the name is TikTok's, to infer the name of a connection that hides it.
    addresses: tuple[tuple[bytes, int], ...] = ()
    #: ``RESPONSE_ONLY`` for a DNS question read from an answer whose query the sensor did
    #: not see (a tap that sees one direction); None when the name was seen as sent.
    seen: str | None = None


#: ``Observation.seen`` of a question read from an answer alone.
RESPONSE_ONLY = "response-only"
#: ``Observation.evidence`` of a connection to an address a TikTok name resolved to.
DNS_ANSWER_ADDRESS = "dns-answer-address"
#: ``Observation.evidence`` of a connection that showed no name to an address a TikTok
#: ``address`` entry holds (a user's prefix file): inferred from the address alone.
SERVER_ADDRESS = "server-address"
#: ``Observation.evidence`` of a TLS or QUIC connection that showed no TikTok name (``name``
#: is the ECH outer name, or empty): the writer infers its name if a DNS answer allows.
UNNAMED = "unnamed"


@dataclass(frozen=True, slots=True)
class Signature:
    """One entry of the signature set: what it matches, its category and its source."""

    pattern: str
    kind: str  # "suffix", "exact" or "regex"
    category: str
    source: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Who a device is beyond the address it used (detector/devices.py): ``id`` stays the
    same while its addresses change (an inventory entry's id, else its DHCP client id or
    DHCPv6 DUID, else its MAC, else its IP), and ``identified_by`` says which identifier
    tied it to its inventory entry (``mac``, ``client-id``, ``duid``, ``hostname``)."""

    id: str
    device_class: str = "unknown"
    owner: str | None = None
    department: str | None = None
    inventory_id: str | None = None
    identified_by: str | None = None
    #: The MAC it used is locally administered (randomised per network, as phones do).
    randomised_mac: bool = False
    client_id: str | None = None
    duid: str | None = None
    fqdn: str | None = None
    vendor_class: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A matched observation placed in its segment and attributed to a device."""

    observation: Observation
    signature: Signature
    segment: str
    device: str
    hostname: str | None
    decision: str  # one of DECISIONS; "allowed" is never written out
    info: DeviceInfo | None = None


def product(category: str) -> str:
    """The product a matched category stands for, as outputs name it: ``TikTok`` for the
    TikTok categories, the app's own name for the other ByteDance apps, never TikTok for
    them."""
    if category in TIKTOK_CATEGORIES:
        return "TikTok"
    return _PRODUCTS.get(category, category)


def rfc3339(ts: float) -> str:
    """RFC 3339 UTC with microseconds, the timestamp format of every output."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
