"""What a replay ran on: captures, signature set, policy, decoder settings.

Events name their capture by file name and frame only (the event schema stays as it is),
so the facts a report states about its inputs — each capture's SHA-256 and time span, the
signature version, the policy — are recorded by ``replay`` next to the events file, in a
sidecar ``EVENTS.jsonl.meta.json`` (format below). ``report`` reads it when present and
says what is unknown when it is not, instead of guessing.

```json
{"format": "tiktok-detector-run/1", "tool": "tiktok-detector 0.1.0",
 "created": "2026-03-02T10:00:00.000000Z",
 "captures": [{"name": "a.pcapng", "path": "/abs/a.pcapng", "size": 1234, "sha256": "…",
               "first_ts": "…Z", "last_ts": "…Z", "frames": 125, "error": null}],
 "signatures": {"path": "…", "version": "…", "sha256": "…"},
 "policy": {"path": "examples/policy.toml", "sha256": "…", "dedup_window": 900,
            "segments": [{"name": "staff", "violations": ["app", …]}, …],
            "exemptions": 1, "loaded_at": "…Z", "trusted_hostnames": 1, "class_rules": 2,
            "inventory": "/abs/devices.csv", "inventory_sha256": "…", "inventory_devices": 412},
 "settings": {"dns_ports": [53], "quic_ports": [443]}, "sensor": "hq-floor2",
 "coverage": [{"device": "aa:bb:cc:dd:ee:01", "segment": "staff", "hostname": "pc-1",
               "connections": {"named": 120, "ech": 14, "no-name": 2}, "devices": 1}, …,
              {"device": null, "segment": "staff", "hostname": null,
               "connections": {"named": 5120, "ech": 310, "other": 42}, "devices": 37}]}
```

``sensor`` (the replay's ``--sensor``, default the host name) is absent from older records.
``coverage`` holds one entry per device with an event and segment, and per segment one
entry (``device`` null) summing the connections of its ``devices`` devices without an
event (see ``detector.coverage``). It is absent from the records of older versions: the
report then says coverage is unknown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from detector import __version__
from detector.coverage import ONE_WAY, OUTCOMES, DeviceCoverage
from detector.records import rfc3339

if TYPE_CHECKING:  # only for annotations: the report sits below policy and match
    from detector.match import SignatureSet
    from detector.policy import Policy

FORMAT = "tiktok-detector-run/1"
SIDECAR_SUFFIX = ".meta.json"
#: A sidecar is a few lines per capture; anything far larger is not ours.
MAX_SIDECAR_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    """One capture file as read by the report or recorded by the replay.

    Every field but ``name`` is ``None`` when unknown: a capture named by events only, not
    found on disk and not recorded in a sidecar. ``error`` says why a file could not be
    read to its end (its hash still covers every byte).
    """

    name: str
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    frames: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    path: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    name: str
    violations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """The policy a replay applied; ``path`` is ``None`` for the built-in default."""

    path: str | None
    sha256: str | None
    dedup_window: float
    segments: tuple[SegmentInfo, ...]
    exemptions: int
    loaded_at: str | None = None  # when the file was read and hashed
    trusted_hostnames: int = 0  # exemptions by a hostname alone (trust_hostname = true)
    class_rules: int = 0  # [[class_rule]] tables
    #: The device inventory applied with it (``--inventory``): its file, SHA-256 and size.
    inventory: str | None = None
    inventory_sha256: str | None = None
    inventory_devices: int = 0


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One replay's provenance; ``None`` fields are unknown (no sidecar)."""

    captures: tuple[CaptureInfo, ...] = ()
    signatures: SignatureInfo | None = None
    policy: PolicyInfo | None = None
    dns_ports: tuple[int, ...] = (53,)
    quic_ports: tuple[int, ...] = (443,)
    tool: str = f"tiktok-detector {__version__}"
    created: float | None = None
    source: str | None = None  # the sidecar it was read from
    #: Each device's connections by outcome; ``None``: not recorded (an older run record).
    coverage: tuple[DeviceCoverage, ...] | None = None
    sensor: str | None = None  # the sensor that made the events (--sensor)


def sidecar_path(events_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(events_path)}{SIDECAR_SUFFIX}")


def policy_info(policy: Policy) -> PolicyInfo:
    """Describe the policy a replay applied (``source`` is its file, or a description)."""
    path = os.path.abspath(policy.source) if policy.source and os.path.isfile(policy.source) else None
    segments = tuple(SegmentInfo(s.name, tuple(sorted(s.violations))) for s in (*policy.segments, policy.default))
    inventory = policy.inventory
    return PolicyInfo(path, policy.sha256, float(policy.dedup_window), segments, len(policy.exemptions),
                      _ts(policy.loaded_at), sum(e.trust_hostname for e in policy.exemptions), len(policy.class_rules),
                      os.path.abspath(inventory.source) if inventory is not None else None,
                      inventory.sha256 if inventory is not None else None,
                      len(inventory.entries) if inventory is not None else 0)


def run_info(captures: list[CaptureInfo], signatures: SignatureSet, policy: Policy,
             dns_ports: Iterable[int], quic_ports: Iterable[int], coverage: Iterable[DeviceCoverage] = (),
             sensor: str | None = None) -> RunInfo:
    """The run record of a replay."""
    return RunInfo(
        coverage=tuple(coverage),
        captures=tuple(captures),
        signatures=SignatureInfo(str(signatures.path), signatures.version, signatures.sha256),
        policy=policy_info(policy),
        dns_ports=tuple(sorted(dns_ports)),
        quic_ports=tuple(sorted(quic_ports)),
        created=time.time(),
        sensor=sensor,
    )


def _ts(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def _parse_ts(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def to_json(run: RunInfo) -> dict:
    captures = []
    for capture in run.captures:
        item = asdict(capture)
        item["first_ts"], item["last_ts"] = _ts(capture.first_ts), _ts(capture.last_ts)
        captures.append(item)
    policy = None
    if run.policy is not None:
        policy = asdict(run.policy)
        policy["segments"] = [{"name": s.name, "violations": list(s.violations)} for s in run.policy.segments]
    return {
        "format": FORMAT,
        "tool": run.tool,
        "created": _ts(run.created),
        "captures": captures,
        "signatures": asdict(run.signatures) if run.signatures else None,
        "policy": policy,
        "settings": {"dns_ports": list(run.dns_ports), "quic_ports": list(run.quic_ports)},
        "coverage": None if run.coverage is None else [
            {"device": c.device, "segment": c.segment, "hostname": c.hostname, "connections": dict(c.connections),
             "devices": c.devices}
            for c in run.coverage],
        "sensor": run.sensor,
    }


def write_sidecar(events_path: str | os.PathLike[str], run: RunInfo) -> Path:
    """Write the sidecar next to the events file (atomically: a reader never sees half)."""
    target = sidecar_path(events_path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(to_json(run), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


class SidecarError(ValueError):
    """A sidecar that exists but cannot be used; the report says so and goes on without it."""


def read_sidecar(events_path: str | os.PathLike[str]) -> RunInfo | None:
    """The run recorded next to ``events_path``; ``None`` when there is no sidecar."""
    path = sidecar_path(events_path)
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"{path}: too large for a run record")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SidecarError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return _from_json(doc, str(path))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SidecarError(f"{path}: not a run record ({exc})") from None


def _from_json(doc: dict, source: str) -> RunInfo:
    if doc.get("format") != FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
    captures = tuple(
        CaptureInfo(
            name=str(c["name"]), path=c.get("path"), size=c.get("size"), sha256=c.get("sha256"),
            first_ts=_parse_ts(c.get("first_ts")), last_ts=_parse_ts(c.get("last_ts")),
            frames=c.get("frames"), error=c.get("error"),
        )
        for c in doc.get("captures") or ()
    )
    sig = doc.get("signatures")
    signatures = SignatureInfo(str(sig["path"]), str(sig["version"]), str(sig["sha256"])) if sig else None
    pol = doc.get("policy")
    policy = None
    if pol:
        policy = PolicyInfo(
            path=pol.get("path"), sha256=pol.get("sha256"), dedup_window=float(pol["dedup_window"]),
            segments=tuple(SegmentInfo(str(s["name"]), tuple(map(str, s["violations"]))) for s in pol["segments"]),
            exemptions=int(pol.get("exemptions", 0)), loaded_at=pol.get("loaded_at"),
            trusted_hostnames=int(pol.get("trusted_hostnames", 0)), class_rules=int(pol.get("class_rules", 0)),
            inventory=pol.get("inventory"), inventory_sha256=pol.get("inventory_sha256"),
            inventory_devices=int(pol.get("inventory_devices", 0)),
        )
    settings = doc.get("settings") or {}
    return RunInfo(
        captures=captures, signatures=signatures, policy=policy,
        dns_ports=tuple(int(p) for p in settings.get("dns_ports", (53,))),
        quic_ports=tuple(int(p) for p in settings.get("quic_ports", (443,))),
        tool=str(doc.get("tool", "unknown")), created=_parse_ts(doc.get("created")), source=source,
        coverage=_coverage(doc.get("coverage")),
        sensor=str(doc["sensor"]) if doc.get("sensor") else None,
    )


def _coverage(items: object) -> tuple[DeviceCoverage, ...] | None:
    if items is None:
        return None
    rows = []
    for item in items:  # a wrong shape raises TypeError, KeyError or ValueError: not a run record
        connections = {str(outcome): int(n) for outcome, n in item["connections"].items()}
        unknown = set(connections) - {*OUTCOMES, ONE_WAY}
        if unknown or any(n < 0 for n in connections.values()):
            raise ValueError(f"coverage of {item['device']!r}: unknown outcome or negative count")
        device, hostname, devices = item["device"], item.get("hostname"), int(item.get("devices", 1))
        if devices < 1:
            raise ValueError(f"coverage of {device!r}: devices must be at least 1")
        rows.append(DeviceCoverage(None if device is None else str(device), str(item["segment"]),
                                   None if hostname is None else str(hostname), connections, devices))
    return tuple(rows)
