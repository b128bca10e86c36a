"""The policy: which segment a client sits on, which categories are violations there,
who is exempt, and how long alerts are deduplicated.

It knows nothing of packets: it decides about an ``Observation`` that already matched a
``Signature`` (the Zeek Intel split: matching where names are seen, policy elsewhere).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from detector.records import Observation, Signature, Verdict

CATEGORIES = ("app", "api", "cdn", "telemetry", "web", "bytedance-shared")
#: Shared ByteDance infrastructure also serves CapCut, Lemon8 and others: not a violation by default.
DEFAULT_VIOLATIONS = ("app", "api", "cdn", "telemetry", "web")
DEFAULT_SEGMENT = "default"
DEFAULT_DEDUP_WINDOW = 900.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A policy file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    networks: tuple[Network, ...]
    vlans: frozenset[int]
    violations: frozenset[str]

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, vlan: int | None) -> bool:
        """Both given criteria must hold: a VLAN list and a CIDR list narrow each other."""
        if self.vlans and vlan not in self.vlans:
            return False
        return not self.networks or any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Exemption:
    reason: str
    mac: str | None = None
    network: Network | None = None
    hostname: str | None = None  # shell-style pattern, matched case-insensitively
    segment: str | None = None

    def covers(self, obs: Observation, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
               hostname: str | None, segment: str) -> bool:
        if self.segment is not None and self.segment != segment:
            return False
        if self.mac is not None and obs.client_mac != self.mac:
            return False
        if self.network is not None and ip not in self.network:
            return False
        if self.hostname is not None and (hostname is None or not fnmatch.fnmatchcase(hostname, self.hostname)):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Policy:
    segments: tuple[Segment, ...]
    default: Segment
    exemptions: tuple[Exemption, ...]
    dedup_window: float
    source: str

    def segment_of(self, client_ip: str, vlan: int | None) -> Segment:
        ip = ipaddress.ip_address(client_ip)
        for segment in self.segments:
            if segment.contains(ip, vlan):
                return segment
        return self.default

    def decide(self, obs: Observation, signature: Signature, hostname: str | None) -> Verdict:
        """``violation``, ``exempt`` (a violation by an exempt device) or ``allowed`` (the
        category is no violation on that segment: counted, never written out)."""
        segment = self.segment_of(obs.client_ip, obs.vlan)
        if signature.category not in segment.violations:
            decision = "allowed"
        else:
            ip = ipaddress.ip_address(obs.client_ip)
            exempt = any(e.covers(obs, ip, hostname, segment.name) for e in self.exemptions)
            decision = "exempt" if exempt else "violation"
        return Verdict(
            observation=obs,
            signature=signature,
            segment=segment.name,
            device=obs.client_mac or obs.client_ip,
            hostname=hostname,
            decision=decision,
        )


def default_policy() -> Policy:
    """Without a policy file every address is in one monitored segment, ``default``."""
    default = Segment(DEFAULT_SEGMENT, (), frozenset(), frozenset(DEFAULT_VIOLATIONS))
    return Policy((), default, (), DEFAULT_DEDUP_WINDOW, "built-in default")


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    try:
        return _build(doc, str(path))
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _build(doc: dict, source: str) -> Policy:
    _only(doc, {"dedup_window", "violations", "segment", "exemption"}, "top level")
    violations = _categories(doc.get("violations", list(DEFAULT_VIOLATIONS)), "top level")
    window = doc.get("dedup_window", DEFAULT_DEDUP_WINDOW)
    if not isinstance(window, int | float) or isinstance(window, bool) or window <= 0:
        raise ValueError("dedup_window must be a positive number of seconds")
    segments = []
    for i, raw in enumerate(doc.get("segment", []), 1):
        where = f"segment #{i}"
        _only(raw, {"name", "cidrs", "vlans", "violations"}, where)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: needs a name")
        if name in {s.name for s in segments} or name == DEFAULT_SEGMENT:
            raise ValueError(f"{where}: segment name {name!r} is used twice or reserved")
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in _strings(raw.get("cidrs", []), where))
        vlans = raw.get("vlans", [])
        if not isinstance(vlans, list) or not all(isinstance(v, int) and 0 <= v < 4096 for v in vlans):
            raise ValueError(f"{where}: vlans must be a list of VLAN ids 0-4095")
        if not networks and not vlans:
            raise ValueError(f"{where}: give cidrs, vlans or both")
        segment_violations = _categories(raw.get("violations", sorted(violations)), where)
        segments.append(Segment(name, networks, frozenset(vlans), segment_violations))
    exemptions = []
    for i, raw in enumerate(doc.get("exemption", []), 1):
        where = f"exemption #{i}"
        _only(raw, {"mac", "ip", "cidr", "hostname", "segment", "reason"}, where)
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"{where}: needs a reason (auditors ask why)")
        network = None
        if "ip" in raw or "cidr" in raw:
            network = ipaddress.ip_network(raw.get("ip") or raw.get("cidr"), strict=False)
        mac = raw.get("mac")
        if mac is not None:
            mac = str(mac).lower().replace("-", ":")
            if len(bytes.fromhex(mac.replace(":", ""))) != 6:
                raise ValueError(f"{where}: {raw['mac']!r} is not a MAC address")
        hostname = raw.get("hostname")
        segment = raw.get("segment")
        if segment is not None and segment not in {s.name for s in segments} | {DEFAULT_SEGMENT}:
            raise ValueError(f"{where}: unknown segment {segment!r}")
        if mac is None and network is None and hostname is None:
            raise ValueError(f"{where}: give mac, ip, cidr or hostname")
        exemptions.append(Exemption(reason, mac, network, hostname.lower() if hostname else None, segment))
    default = Segment(DEFAULT_SEGMENT, (), frozenset(), violations)
    return Policy(tuple(segments), default, tuple(exemptions), float(window), source)


def _only(table: object, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return value


def _categories(value: object, where: str) -> frozenset[str]:
    names = _strings(value, where)
    unknown = set(names) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"{where}: unknown categor(ies) {', '.join(sorted(unknown))}; known: {', '.join(CATEGORIES)}")
    return frozenset(names)
