"""The end-of-run summary an operator reads on stderr: devices, names, counts, drops."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from detector import counters
from detector.coverage import ECH, NO_NAME, OTHER, TUNNEL, DeviceCoverage, by_segment, share
from detector.records import BYTEDANCE_APP_CATEGORIES, Verdict, rfc3339

#: The summary names at most this many devices (the busiest) and names per device.
MAX_DEVICES_SHOWN = 50
MAX_NAMES_SHOWN = 4
#: Devices remembered for the summary; beyond it the rest are counted, not listed.
MAX_DEVICES = 100_000


@dataclass(slots=True)
class _Device:
    hostname: str | None
    segment: str
    first: float
    last: float
    violations: int = 0
    exempt: int = 0
    inferred: int = 0
    notices: int = 0
    names: Counter[str] = field(default_factory=Counter)  # TikTok names
    blind: Counter[str] = field(default_factory=Counter)  # blind-spot categories
    apps: Counter[str] = field(default_factory=Counter)  # other ByteDance apps' matches, never TikTok


class Summary:
    def __init__(self) -> None:
        self.devices: dict[str, _Device] = {}
        self.untracked = 0

    def add(self, verdict: Verdict) -> None:
        ts = verdict.observation.ts
        device = self.devices.get(verdict.device)
        if device is None:
            if len(self.devices) >= MAX_DEVICES:
                self.untracked += 1
                return
            device = self.devices[verdict.device] = _Device(verdict.hostname, verdict.segment, ts, ts)
        device.first, device.last = min(device.first, ts), max(device.last, ts)
        device.hostname = verdict.hostname or device.hostname
        if verdict.decision == "blind-spot":
            device.blind[verdict.signature.category] += 1
            return
        if verdict.signature.category in BYTEDANCE_APP_CATEGORIES:
            device.apps[verdict.signature.category] += 1
            return
        if verdict.decision == "violation":
            device.violations += 1
        elif verdict.decision == "inferred":
            device.inferred += 1
        elif verdict.decision == "notice":
            device.notices += 1
        else:
            device.exempt += 1
        if len(device.names) < 256 or verdict.observation.name in device.names:
            device.names[verdict.observation.name] += 1

    def write(self, out: TextIO, stats: Mapping[str, float], files: list[str], errors: int,
              coverage: list[DeviceCoverage] = ()) -> None:
        """``stats``: every counter of the run, the tables' own included (an extractor's
        ``snapshot()``), so that what was lost is stated whenever it is not zero;
        ``coverage``: each device's connections by outcome (a replay's)."""
        stats = Counter(stats)
        packets = stats["packets"]
        observations = sum(v for k, v in stats.items() if k.startswith("observations."))
        tiktok = sum(1 for dev in self.devices.values() if dev.violations or dev.exempt or dev.inferred or dev.notices)
        blind = sum(1 for dev in self.devices.values() if dev.blind)
        apps = sum(1 for dev in self.devices.values() if dev.apps)
        out.write(
            f"\n{len(files)} source(s), {packets} packets, {observations} names seen, "
            f"{stats['verdicts.violation']} violations, {stats['verdicts.exempt']} exempt matches, "
            + (f"{stats['verdicts.inferred']} inferred from DNS answers, " if stats["verdicts.inferred"] else "")
            + (f"{stats['verdicts.notice']} notices, " if stats["verdicts.notice"] else "")
            + f"{tiktok} device(s) with TikTok traffic"
            + (f", {apps} device(s) with other ByteDance apps" if apps else "")
            + (f", {stats['verdicts.blind-spot']} blind spot(s) on {blind} device(s)"
               if stats["verdicts.blind-spot"] else "")
            + (f", {errors} file error(s)" if errors else "")
            + "\n"
        )
        if self.devices:
            rows = sorted(self.devices.items(),
                          key=lambda kv: (-kv[1].violations, -kv[1].exempt - kv[1].inferred - kv[1].notices,
                                          -sum(kv[1].blind.values()), kv[0]))
            # The inferred, notice and blind-spot columns only when some device has one.
            inferred = any(dev.inferred for dev in self.devices.values())
            notices = any(dev.notices for dev in self.devices.values())
            blind = any(dev.blind for dev in self.devices.values())
            apps_shown = any(dev.apps for dev in self.devices.values())
            covered: dict[str, list[int]] = {}  # device -> [named, connections], over its segments
            for row in coverage:
                if row.device is None:
                    continue
                seen = covered.setdefault(row.device, [0, 0])
                seen[0] += row.named
                seen[1] += row.total
            header = ("device", "hostname", "segment", "violations", "exempt", *(("inferred",) if inferred else ()),
                      *(("notices",) if notices else ()), *(("blind spots",) if blind else ()),
                      *(("ByteDance apps",) if apps_shown else ()), *(("names seen",) if covered else ()),
                      "first seen", "last seen", "top names")
            table = [header]
            for name, dev in rows[:MAX_DEVICES_SHOWN]:
                top = ", ".join(n for n, _ in dev.names.most_common(MAX_NAMES_SHOWN))
                seen = covered.get(name)
                table.append((name, dev.hostname or "-", dev.segment, str(dev.violations), str(dev.exempt),
                              *((str(dev.inferred),) if inferred else ()), *((str(dev.notices),) if notices else ()),
                              *((_blind(dev.blind),) if blind else ()), *((_blind(dev.apps),) if apps_shown else ()),
                              *((share(*seen) if seen else "-",) if covered else ()),
                              rfc3339(dev.first)[:19] + "Z", rfc3339(dev.last)[:19] + "Z", top or "-"))
            widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
            for row in table:
                out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] + "\n")
            if len(rows) > MAX_DEVICES_SHOWN:
                out.write(f"... and {len(rows) - MAX_DEVICES_SHOWN} more device(s); see the events file\n")
        for segment in by_segment(coverage):
            counts, total = segment.connections, segment.total
            out.write(
                f"coverage of segment {segment.segment}: {total} connection(s) of {segment.devices} device(s), "
                f"server name seen in {share(segment.named, total)}"
                + "".join(f", {what} {share(counts.get(outcome, 0), total)}"
                          for outcome, what in ((ECH, "ECH"), (NO_NAME, "no name"), (OTHER, "not TLS/HTTP"),
                                                (TUNNEL, "VPN handshakes")) if counts.get(outcome))
                + (f"; {segment.one_way} seen from the client's side only (no SYN-ACK)" if segment.one_way else "")
                + "\n"
            )
        if "capture.received" in stats:
            out.write(
                f"capture: {stats['capture.received']} packets passed the kernel filter, "
                f"{stats['capture.kernel_drops']} dropped by the kernel, "
                f"{stats['capture.interface_drops']} by the interface"
                + (" - THE SENSOR LOST PACKETS: raise --buffer-mb or --workers" if stats["capture.kernel_drops"] else "")
                + "\n"
            )
        if stats[counters.DNS_RESPONSE_ONLY]:
            out.write(f"one-way: {stats[counters.DNS_RESPONSE_ONLY]} DNS transaction(s) seen as the answer alone "
                      "(the query was not captured: the tap sees one direction); their questions are reported "
                      "with \"seen\": \"response-only\"\n")
        drops = {key: stats[key] for key in counters.not_decoded() if stats[key]}
        if drops:
            out.write("not decoded: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())) + "\n")
        for key, meaning in counters.losses():
            if stats[key]:
                out.write(f"LOST STATE: {int(stats[key])} {meaning} ({key})\n")


def _blind(categories: Counter[str]) -> str:
    """``3 (encrypted-dns, relay)``, or ``0``."""
    total = sum(categories.values())
    return f"{total} ({', '.join(sorted(categories))})" if total else "0"
