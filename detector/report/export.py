"""The report as data: CSV (one row per device, for a spreadsheet) and JSON (everything).

Both carry exactly what the HTML shows — pseudonymized the same way, evidence capped the
same way — so no export says more about anyone than the page does.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from typing import TextIO

from detector.coverage import NAMED, ONE_WAY, OUTCOMES, by_segment
from detector.records import PROTOS, rfc3339
from detector.report.build import Report
from detector.report.model import BoundedSet, Device, Evidence

FORMAT = "tiktok-detector-report/1"
#: A spreadsheet runs a cell that starts with one of these as a formula; a DHCP hostname
#: is chosen by the device's owner, so such cells are quoted (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = ["device", "macs", "ips", "hostnames", "segments", "first_seen", "last_seen", "violations",
               "exempt", *PROTOS, "categories", "names", "evidence_listed", "evidence_omitted", "blind_spots", "ech", "inferred",
               "device_class", "owner", "department", "notices",
               *(f"connections_{o.replace('-', '_')}" for o in OUTCOMES), "named_share", "connections_one_way"]


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _listed(values: BoundedSet) -> str:
    return " ".join(values) + (" …" if values.more else "")


def write_csv(report: Report, stream: TextIO) -> None:
    """One row per device (devices in violation first, those with blind spots only last),
    the columns of ``CSV_COLUMNS``; a device's coverage columns are empty when no run
    recorded any."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    coverage: dict[str | None, Counter[str]] = {}
    for c in report.coverage or ():
        coverage.setdefault(c.device, Counter()).update(c.connections)
    for d in _devices(report):
        row = [d.device, _listed(d.macs), _listed(d.ips), _listed(d.hostnames), _listed(d.segments),
               rfc3339(d.first), rfc3339(d.last), d.violations, d.exempt, *(d.protos.get(p, 0) for p in PROTOS),
               " ".join(f"{c}={n}" for c, n in d.categories.most_common()),
               " ".join(f"{name}={n}" for name, n in d.names.most_common()),
               d.events - d.evidence_omitted, d.evidence_omitted,
               " ".join(f"{c}={n}" for c, n in d.blind.most_common()), d.ech, d.inferred,
               d.device_class or "", d.owner or "", d.department or "", d.notices,
               *_coverage_cells(coverage.pop(d.device, None), report.coverage is not None)]
        writer.writerow([_cell(v) for v in row])


def _coverage_cells(counts: Counter[str] | None, recorded: bool) -> list[object]:
    if not recorded:
        return ["" for _ in range(len(OUTCOMES) + 2)]
    counts = counts or Counter()
    total = sum(counts[o] for o in OUTCOMES)
    return [*(counts[o] for o in OUTCOMES), _ratio(counts[NAMED], total) if total else "", counts[ONE_WAY]]


def _devices(report: Report) -> list[Device]:
    m = report.model
    return m.violators() + m.exempt_only() + m.blind_only()


def _evidence(report: Report, e: Evidence) -> dict:
    v = report.verification
    return {"ts": rfc3339(e.ts), "proto": e.proto, "name": e.name, "category": e.category, "decision": e.decision,
            "pcap": e.pcap, "frame": e.frame,
            "inferred_from": None if e.answer_frame is None else {"pcap": e.answer_pcap, "frame": e.answer_frame},
            "confirmed": None if v is None else v.is_confirmed(*e.checked_as())}


def _device(report: Report, d: Device) -> dict:
    return {
        "device": d.device, "macs": list(d.macs), "ips": list(d.ips), "ips_more": d.ips.more,
        "hostnames": list(d.hostnames), "segments": list(d.segments),
        "first_seen": rfc3339(d.first), "last_seen": rfc3339(d.last),
        "violations": d.violations, "exempt": d.exempt, "inferred": d.inferred, "protos": dict(d.protos), "categories": dict(d.categories),
        "names": dict(d.names.most_common()), "other_names": d.other_names,
        "timeline": {"bucket_seconds": d.timeline.width, "buckets": [[rfc3339(t), c] for t, c in d.timeline.buckets()]},
        "evidence": [_evidence(report, e) for e in d.evidence()], "evidence_omitted": d.evidence_omitted,
        "blind_spots": dict(d.blind.most_common()), "ech": d.ech,
        "blind_spot_evidence": [_evidence(report, e) for e in d.blind_evidence],
        "device_class": d.device_class, "owner": d.owner, "department": d.department, "notices": d.notices,
    }


def report_json(report: Report) -> dict:
    m = report.model
    v = report.verification
    captures = []
    for c in report.captures:
        k = c.known
        captures.append({
            "name": c.name, "path": c.info.path if c.info else None, "status": c.status, "note": c.note or None,
            "sha256": k.sha256 if k else None, "size": k.size if k else None, "frames": k.frames if k else None,
            "first_ts": rfc3339(k.first_ts) if k and k.first_ts is not None else None,
            "last_ts": rfc3339(k.last_ts) if k and k.last_ts is not None else None,
            "recorded_sha256": c.recorded.sha256 if c.recorded else None, "events": c.events,
        })
    return {
        "format": FORMAT,
        "generated": rfc3339(report.generated),
        "tool": report.tool,
        "pseudonymized": report.pseudonymized,
        "sensors": report.sensors,
        "period": {"first": rfc3339(m.first) if m.first is not None else None,
                   "last": rfc3339(m.last) if m.last is not None else None},
        "totals": {"events": m.events, "violations": m.violations, "exempt": m.exempt, "inferred": m.inferred,
                   "devices_in_violation": len(m.violators()), "protos": dict(m.protos),
                   "categories": dict(m.categories), "untracked_events": m.untracked_events,
                   "blind_spots": m.blind_spots, "blind_spot_categories": dict(m.blind_categories),
                   "devices_with_blind_spots": len(m.with_blind_spots())},
        "inputs": [{"path": f.path, "lines": f.lines, "events": f.events, "skipped": f.skipped,
                    "skipped_examples": f.examples, "error": f.error} for f in report.inputs],
        "captures": captures,
        "signatures": [{"path": s.path, "version": s.version, "sha256": s.sha256} for s in report.signatures],
        "policies": [{"path": p.path, "sha256": p.sha256, "dedup_window": p.dedup_window, "exemptions": p.exemptions,
                      "trusted_hostnames": p.trusted_hostnames, "segments": [{"name": s.name, "violations": list(s.violations)} for s in p.segments]}
                     for p in report.policies],
        "settings": {"dns_ports": list(report.dns_ports), "quic_ports": list(report.quic_ports)},
        "unknown": report.unknown,
        "verification": None if v is None else {
            "tshark": v.tshark, "pyshark": v.pyshark, "total": v.total, "confirmed": v.confirmed,
            "captures": [{"name": c.name, "frames": c.frames, "checked": c.checked, "error": c.error}
                         for c in v.captures],
            "unconfirmed": [{"ts": rfc3339(ts), "device": device, "proto": proto, "name": name, "pcap": pcap,
                             "frame": frame, "reason": reason}
                            for ts, device, proto, name, pcap, frame, reason in v.unconfirmed],
        },
        "violations_per_segment_day": [
            {"segment": segment, "day": rfc3339(day * 86400)[:10], "violations": count}
            for (segment, day), count in sorted(m.segment_days.items(), key=lambda item: (item[0][1], item[0][0]))
        ],
        "devices": [_device(report, d) for d in _devices(report)],
        "coverage": None if report.coverage is None else {
            "segments": [{"segment": g.segment, "devices": g.devices, "connections": dict(g.connections),
                          "named_share": _ratio(g.named, g.total), "one_way": g.one_way}
                         for g in by_segment(report.coverage)],
            "devices": [{"device": c.device, "segment": c.segment, "hostname": c.hostname, "devices": c.devices,
                         "connections": dict(c.connections), "named_share": _ratio(c.named, c.total)}
                        for c in report.coverage],
        },
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def write_json(report: Report, stream: TextIO) -> None:
    json.dump(report_json(report), stream, indent=1, ensure_ascii=False)
    stream.write("\n")
