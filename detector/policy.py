"""The policy: which segment a client sits on, which categories are violations there,
who is exempt, and how long alerts are deduplicated.

It knows nothing of packets: it decides about an ``Observation`` that already matched a
``Signature`` (the Zeek Intel split: matching where names are seen, policy elsewhere).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import ipaddress
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from detector.errors import UserError
from detector.inventory import Inventory
from detector.records import (
    BLIND_SPOT_CATEGORIES, CATEGORIES, DEVICE_CLASSES, DeviceInfo, Observation, Signature, Verdict,
)

#: Shared ByteDance infrastructure also serves CapCut, Lemon8 and others: not a violation by default.
DEFAULT_VIOLATIONS = ("app", "api", "cdn", "telemetry", "web")
DEFAULT_SEGMENT = "default"
DEFAULT_DEDUP_WINDOW = 900.0
#: A window longer than a year folds a year of use into one alert: surely a typo.
MAX_DEDUP_WINDOW = 366 * 86400

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Six octets with colons or hyphens, three groups of four with dots (Cisco), or bare hex.
_MAC_FORMS = re.compile(
    r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}|[0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5}"
    r"|[0-9a-fA-F]{4}(?:\.[0-9a-fA-F]{4}){2}|[0-9a-fA-F]{12}"
)


class PolicyError(UserError, ValueError):
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
    #: Set for an exemption by hostname alone: a device names itself in DHCP, so any device
    #: can claim such a name; the policy must say it accepts that, and reports flag it.
    trust_hostname: bool = False

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
class ClassRule:
    """What a match is on devices of one inventory class (on some segments, or on all):
    which categories count, and whether they are a ``violation`` (alerted) or a
    ``notice`` (written and counted, never alerted: a personal phone on the staff Wi-Fi)."""

    device_class: str
    segments: frozenset[str]  # empty: every segment
    violations: frozenset[str] | None  # None: the segment's
    decision: str = "violation"


@dataclass(frozen=True, slots=True)
class Policy:
    segments: tuple[Segment, ...]
    default: Segment
    exemptions: tuple[Exemption, ...]
    dedup_window: float
    source: str
    #: What an inferred match (a connection to an address a TikTok name resolved to, showing
    #: no TikTok name) is on a segment where its category is a violation: "report" writes it
    #: as ``inferred`` (never alerted), "violation" treats it as any violation.
    inferred: str = "report"
    #: The file's SHA-256 and the time it was read: hashed when loaded, so a run record
    #: names the policy that was applied even if the file changed since.
    sha256: str | None = None
    loaded_at: float | None = None
    class_rules: tuple[ClassRule, ...] = ()
    #: The device inventory in force with this policy (``--inventory``): loaded, and
    #: reloaded on SIGHUP, with it, so a run never holds one without the other.
    inventory: Inventory | None = None

    def rule_for(self, device_class: str, segment: str) -> ClassRule | None:
        """The class rule for a device class on a segment: one naming the segment before
        one for every segment."""
        general = None
        for rule in self.class_rules:
            if rule.device_class == device_class:
                if segment in rule.segments:
                    return rule
                if not rule.segments:
                    general = rule
        return general

    def segment_of(self, client_ip: str, vlan: int | None) -> Segment:
        ip = ipaddress.ip_address(client_ip)
        for segment in self.segments:
            if segment.contains(ip, vlan):
                return segment
        return self.default

    def decide(self, obs: Observation, signature: Signature, hostname: str | None,
               info: DeviceInfo | None = None) -> Verdict:
        """``violation``, ``exempt`` (a violation by an exempt device), ``inferred`` (a
        violation known only from a DNS answer's address, unless ``inferred = "violation"``),
        ``notice`` (a violation by a device whose class rule makes it a notice), ``blind-spot``
        (a visibility category the segment does not make a violation: written, never
        alerted) or ``allowed`` (counted, never written out). A class rule for the device's
        class (``info``) on this segment replaces the segment's categories."""
        segment = self.segment_of(obs.client_ip, obs.vlan)
        rule = self.rule_for(info.device_class if info is not None else "unknown", segment.name) \
            if self.class_rules else None
        violations = rule.violations if rule is not None and rule.violations is not None else segment.violations
        if signature.category not in violations:
            decision = "blind-spot" if signature.category in BLIND_SPOT_CATEGORIES else "allowed"
        else:
            ip = ipaddress.ip_address(obs.client_ip)
            exempt = any(e.covers(obs, ip, hostname, segment.name) for e in self.exemptions)
            if exempt:
                decision = "exempt"
            elif rule is not None and rule.decision == "notice":
                decision = "notice"
            elif obs.evidence is not None and self.inferred != "violation":
                decision = "inferred"
            else:
                decision = "violation"
        return Verdict(
            observation=obs,
            signature=signature,
            segment=segment.name,
            device=obs.client_mac or obs.client_ip,
            hostname=hostname,
            decision=decision,
            info=info,
        )


def default_policy() -> Policy:
    """Without a policy file every address is in one monitored segment, ``default``."""
    default = Segment(DEFAULT_SEGMENT, (), frozenset(), frozenset(DEFAULT_VIOLATIONS))
    return Policy((), default, (), DEFAULT_DEDUP_WINDOW, "built-in default")


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; every problem is a PolicyError of one line that
    names the file, the table (``segment #2``) and the key."""
    path = Path(path)
    try:
        data = path.read_bytes()
        loaded_at = time.time()
        doc = tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise PolicyError(f"{path}: arrays or inline tables nested too deeply") from None
    try:
        policy = _build(doc, str(path))
    except ValueError as exc:
        line = _line_of(data.decode("utf-8"), str(exc))
        raise PolicyError(f"{path}:{line}: {exc}" if line else f"{path}: {exc}") from None
    return dataclasses.replace(policy, sha256=hashlib.sha256(data).hexdigest(), loaded_at=loaded_at)


def _build(doc: dict[str, Any], source: str) -> Policy:
    """The policy a parsed file describes. Every value is checked for type and range
    here, so a mistyped value is refused with its table and key named instead of
    failing later (or, worse, matching nothing in silence)."""
    _only(doc, {"dedup_window", "violations", "segment", "exemption", "inferred", "class_rule"}, "top level")
    inferred = doc.get("inferred", "report")
    if inferred not in ("report", "violation"):
        raise ValueError('top level: inferred must be "report" (written, never alerted) or "violation"')
    violations = _categories(doc.get("violations", list(DEFAULT_VIOLATIONS)), "top level")
    window = doc.get("dedup_window", DEFAULT_DEDUP_WINDOW)
    # Compared, not converted: a TOML integer of 400 digits overflows a float.
    if not _is_number(window) or not 0 < window <= MAX_DEDUP_WINDOW:
        raise ValueError(f"top level: dedup_window must be a number of seconds above 0 and at most "
                         f"{MAX_DEDUP_WINDOW} (a year)")
    segments: list[Segment] = []
    for i, raw in enumerate(_tables(doc, "segment"), 1):
        where = f"segment #{i}"
        _only(raw, {"name", "cidrs", "vlans", "violations"}, where)
        name = raw.get("name")
        if not isinstance(name, str) or not name or not name.isprintable():
            raise ValueError(f"{where}: name must be a non-empty string of printable characters")
        if name in {s.name for s in segments} or name == DEFAULT_SEGMENT:
            raise ValueError(f"{where}: segment name {name!r} is used twice or reserved")
        networks = tuple(_network(c, where, "cidrs") for c in _strings(raw.get("cidrs", []), where, "cidrs"))
        vlans = raw.get("vlans", [])
        # bool is an int in Python, and TOML's true would otherwise read as VLAN 1.
        if not isinstance(vlans, list) or not all(type(v) is int and 0 <= v < 4096 for v in vlans):
            raise ValueError(f"{where}: vlans must be a list of VLAN ids 0-4095")
        if not networks and not vlans:
            raise ValueError(f"{where}: give cidrs, vlans or both")
        segment_violations = _categories(raw.get("violations", sorted(violations)), where)
        segments.append(Segment(name, networks, frozenset(vlans), segment_violations))
    segment_names = {s.name for s in segments} | {DEFAULT_SEGMENT}
    exemptions = []
    for i, raw in enumerate(_tables(doc, "exemption"), 1):
        where = f"exemption #{i}"
        _only(raw, {"mac", "ip", "cidr", "hostname", "segment", "reason", "trust_hostname"}, where)
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"{where}: needs a reason (auditors ask why)")
        if "ip" in raw and "cidr" in raw:
            raise ValueError(f"{where}: give ip or cidr, not both")
        network = None
        for key in ("ip", "cidr"):
            if key in raw:
                if not isinstance(raw[key], str):
                    raise ValueError(f"{where}: {key} must be a string")
                network = _network(raw[key], where, key)
        mac = _mac(raw["mac"], where) if "mac" in raw else None
        hostname = raw.get("hostname")
        if hostname is not None and (not isinstance(hostname, str) or not hostname):
            raise ValueError(f"{where}: hostname must be a non-empty string (a shell-style pattern)")
        segment = raw.get("segment")
        if segment is not None and (not isinstance(segment, str) or segment not in segment_names):
            raise ValueError(f"{where}: segment {segment!r} is not a segment name")
        if mac is None and network is None and hostname is None:
            raise ValueError(f"{where}: give mac, ip, cidr or hostname")
        trust = raw.get("trust_hostname", False)
        if not isinstance(trust, bool):
            raise ValueError(f"{where}: trust_hostname must be true or false")
        if mac is None and network is None and not trust:
            raise ValueError(f"{where}: a hostname alone is the name a device gives itself in DHCP, so any "
                             "device can claim it; add mac, ip or cidr, or set trust_hostname = true")
        exemptions.append(Exemption(reason, mac, network, hostname.lower() if hostname else None, segment,
                                    trust and mac is None and network is None))
    default = Segment(DEFAULT_SEGMENT, (), frozenset(), violations)
    rules = _class_rules(doc, segment_names)
    return Policy(tuple(segments), default, tuple(exemptions), float(window), source, inferred, class_rules=rules)


def _class_rules(doc: dict[str, Any], segment_names: set[str]) -> tuple[ClassRule, ...]:
    """The ``[[class_rule]]`` tables: one rule per class and segment at most."""
    rules: list[ClassRule] = []
    seen: dict[tuple[str, str | None], int] = {}
    for i, raw in enumerate(_tables(doc, "class_rule"), 1):
        where = f"class_rule #{i}"
        _only(raw, {"class", "segments", "violations", "decision"}, where)
        device_class = raw.get("class")
        if device_class not in DEVICE_CLASSES:
            raise ValueError(f"{where}: class must be one of {', '.join(DEVICE_CLASSES)}")
        names = _strings(raw.get("segments", []), where, "segments")
        unknown = [name for name in names if name not in segment_names]
        if unknown:
            raise ValueError(f"{where}: segments has {unknown[0]!r}, which is not a segment name")
        decision = raw.get("decision", "violation")
        if decision not in ("violation", "notice"):
            raise ValueError(f'{where}: decision must be "violation" (alerted) or "notice" (written, never alerted)')
        violations = _categories(raw["violations"], where) if "violations" in raw else None
        for name in names or [None]:
            if (device_class, name) in seen:
                other = seen[(device_class, name)]
                scope = f"segment {name!r}" if name else "every segment"
                raise ValueError(f"{where}: class {device_class!r} on {scope} already has class_rule #{other}")
            seen[(device_class, name)] = i
        rules.append(ClassRule(device_class, frozenset(names), violations, decision))
    return tuple(rules)


def _line_of(text: str, problem: str) -> int | None:
    """The line a problem of ``_build`` is about: its key's line inside the ``[[segment]]``
    or ``[[exemption]]`` table it names (``segment #2: vlans ...``), else the table's
    header; None for a table written inline, which TOML gives no line for."""
    where, _, rest = problem.partition(": ")
    key = rest.split(" ", 1)[0]
    lines = text.splitlines()
    start, end = 0, len(lines)
    if where != "top level":
        kind, _, number = where.partition(" #")  # segment, exemption or class_rule
        headers = [i for i, line in enumerate(lines) if re.match(rf"\s*\[\[\s*{kind}\s*\]\]", line)]
        if not number.isdigit() or int(number) > len(headers):
            return None
        start = headers[int(number) - 1]
    for i in range(start + (where != "top level"), end):
        if re.match(r"\s*\[", lines[i]):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if where != "top level" else None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _only(table: object, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}")


def _tables(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The ``[[key]]`` tables of the file (also written ``key = [{...}, ...]``)."""
    tables = doc.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"top level: {key} must be [[{key}]] tables")
    return tables


def _strings(value: object, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key} must be a list of strings")
    return value


def _network(text: str, where: str, key: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{where}: {key} {text!r} is not an IP address or network") from None


def _mac(value: object, where: str) -> str:
    """A MAC written with colons, hyphens, Cisco dots or nothing, in the colon form
    observations carry (a MAC written any other way would never match one)."""
    if not isinstance(value, str) or not _MAC_FORMS.fullmatch(value):
        raise ValueError(
            f"{where}: mac {value!r} is not a MAC address (write it like 02:00:5e:10:00:01)"
        )
    return bytes.fromhex(re.sub(r"[:.-]", "", value)).hex(":")


def _categories(value: object, where: str) -> frozenset[str]:
    names = _strings(value, where, "violations")
    unknown = set(names) - set(CATEGORIES)
    if unknown:
        raise ValueError(
            f"{where}: violations has unknown categor(ies) {', '.join(map(repr, sorted(unknown)))}; "
            f"known: {', '.join(CATEGORIES)}"
        )
    return frozenset(names)
