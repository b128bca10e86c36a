#!/usr/bin/env python3
"""Measure ``tiktok-detector replay`` against C readers and DPI tools on one corpus.

    .venv/bin/python benchmarks/run.py                     # tap-1m, median of 3 runs, every tool
    .venv/bin/python benchmarks/run.py --corpus benchmarks/corpus/tap-10m.pcap --tools detector --runs 1
    .venv/bin/python benchmarks/run.py --profile           # where the detector's time goes

Every tool reads the same file from the page cache (it is read once first), in rounds:
each round runs each tool once, so a noisy minute slows every tool alike; the figure
reported is the median over rounds. Wall time includes process start-up, as a user sees
it. Peak RSS is GNU time's ``%M`` (the largest single process of a tree); ``tree MB`` is
the peak of the RSS summed over the process tree, sampled every 50 ms (it counts pages
that forked workers share once per process).

The tools:
  detector    tiktok-detector replay --events FILE (the venv's console script)
  workers     the same with --workers 2, when replay has that option
  vxlan       the same (one process) on a VXLAN-wrapped copy of the corpus, as a cloud
              traffic mirror delivers it (benchmarks/tunnel.py writes it on first use)
  tcpdump     tcpdump -r with a BPF filter keeping what a skim keeps (DNS, SYN/FIN/RST,
              TLS handshake records, HTTP requests, QUIC long headers; VLAN and IPv6 too)
              and writing the kept packets to /dev/null: libpcap + BPF, the C-reader peer
  tshark      tshark extracting the same names (DNS question/answer/CNAME/SVCB target,
              TLS and QUIC SNI, HTTP Host)
  ndpi        ndpiReader -q (nDPI's flow classification), when installed

Checks: every TikTok (client_ip, name) pair of the ground truth must be in the events
of every detector run. Exit status: 0 when they are (a missed speed target is reported,
not an error), 1 when one is missing, 2 on an error (no corpus, a tool failing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CORPUS = HERE / "corpus" / "tap-1m.pcap"
RESULTS = HERE / "results"
EXIT_MISSING, EXIT_ERROR = 1, 2
SAMPLE_EVERY = 0.05
TIME = Path("/usr/bin/time")  # GNU time (Debian package time)

#: The issue's targets (issue 7), shown beside the measured figures.
TARGET_PPS = 3_000_000
TARGET_RSS_MB = 150
TARGET_VS = {"tcpdump": 0.5, "tshark": 60.0, "ndpi": 5.0}
TARGET_WORKERS_SPEEDUP = 1.8
#: The VXLAN-wrapped corpus takes at most this many times the plain one's time.
TARGET_VXLAN_SLOWDOWN = 1.2

_BPF_SKIM_IP4 = (
    "udp port 53 or tcp port 53"
    " or (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0)"
    " or (udp dst port 443 and udp[8] & 0x80 != 0)"
    " or (tcp dst port 80 and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)"
    " or tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16"
)
_BPF_SKIM_IP6 = (
    "ip6 and (udp port 53"
    " or (ip6[6] = 17 and ip6[42:2] = 443 and ip6[48] & 0x80 != 0)"
    " or (ip6[6] = 6 and (ip6[53] & 0x07 != 0"
    " or (ip6[42:2] = 80 and ip6[40 + ((ip6[52] & 0xf0) >> 2):4] = 0x47455420)"
    " or ip6[40 + ((ip6[52] & 0xf0) >> 2)] = 0x16)))"
)
#: What a C skim would keep, as BPF: DNS, SYN/FIN/RST, segments that start a TLS handshake
#: record or an HTTP GET, QUIC long headers from clients, ARP; over IPv4, IPv6 and 802.1Q.
#: Four traps of pcap-filter shape it: ``and`` and ``or`` bind equally, left to right, so
#: every part is parenthesised; a load past the end of the packet rejects the packet
#: outright, so the terms that read the payload come last; ``vlan`` shifts the offsets of
#: everything after it in the expression, so the tagged copy comes last; and tcp[]/udp[]
#: only work over IPv4, so IPv6 is read at computed offsets (no extension headers here).
BPF_SKIM = f"arp or ({_BPF_SKIM_IP4}) or ({_BPF_SKIM_IP6})"
BPF_SKIM = f"({BPF_SKIM}) or (vlan and ({BPF_SKIM}))"
TSHARK_FIELDS = ("dns.qry.name", "dns.resp.name", "dns.cname", "dns.svcb.targetname",
                 "tls.handshake.extensions_server_name", "http.host")
TSHARK_FILTER = "dns or tls.handshake.type == 1 or http.request"


@dataclass
class Tool:
    key: str
    label: str
    argv: list[str] | None  # None: not available on this machine
    why_not: str = ""
    stdout: Path | None = None  # where its output goes (checked afterwards), else /dev/null
    runs: list[dict] = field(default_factory=list)


# -- measuring one process --------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (0 once it has exited)."""
    total, stack, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", "rb") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(argv: list[str], stdout: Path | None) -> dict:
    """Run ``argv`` once; wall time, CPU time, peak RSS, sampled tree RSS, exit status.

    Peak RSS comes from GNU time when installed: a child forked from this Python process
    would report this process's RSS as its own peak (Linux carries the parent's high-water
    mark across fork and exec), while GNU time's child starts from a few hundred kB.
    """
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    err = tempfile.TemporaryFile()  # noqa: SIM115
    usage_file = tempfile.NamedTemporaryFile(prefix="time-", delete=False)  # noqa: SIM115
    usage_file.close()
    timed = [str(TIME), "-q", "-f", "%M %U %S", "-o", usage_file.name, *argv] if TIME.exists() else argv
    peak = [0]
    done = threading.Event()
    start = time.perf_counter()
    # A session of its own, so that an interrupted run can end the tool and its workers too.
    proc = subprocess.Popen(timed, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)

    def sample() -> None:
        while not done.wait(SAMPLE_EVERY):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    except BaseException:  # Ctrl-C: leave no tool running behind us
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.unlink(usage_file.name)
        raise
    finally:
        done.set()
        sampler.join()
        if stdout:
            out.close()
    maxrss_kb, user, system = usage.ru_maxrss, usage.ru_utime, usage.ru_stime
    try:
        fields = Path(usage_file.name).read_text().split()
        if TIME.exists() and len(fields) >= 3:
            maxrss_kb, user, system = int(fields[-3]), float(fields[-2]), float(fields[-1])
    except (OSError, ValueError):
        pass
    finally:
        os.unlink(usage_file.name)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    err.close()
    return {
        "wall_s": round(wall, 4),
        "user_s": round(user, 3),
        "sys_s": round(system, 3),
        "maxrss_mb": round(maxrss_kb / 1024, 1),
        "tree_rss_mb": round(peak[0] / 2**20, 1),
        "exit": proc.returncode,
        "stderr_tail": stderr.strip().splitlines()[-3:],
    }


# -- the tools --------------------------------------------------------------------------------


def detector_command() -> list[str]:
    """The venv's console script next to this interpreter, else the one on PATH."""
    script = Path(sys.executable).with_name("tiktok-detector")
    if script.exists():
        return [str(script)]
    found = shutil.which("tiktok-detector")
    if found is None:
        raise SystemExit("run.py: tiktok-detector not found; run it with the venv's python (.venv/bin/python)")
    return [found]


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and "Running as user" not in line]
    return lines[0].strip() if lines else "?"


def tools(corpus: Path, wanted: set[str], work: Path, workers: int) -> list[Tool]:
    detector = detector_command()
    helptext = subprocess.run([*detector, "replay", "--help"], capture_output=True, text=True).stdout
    replay = [*detector, "replay", "--no-progress", "--events"]
    found: list[Tool] = []
    if "detector" in wanted:
        found.append(Tool("detector", "tiktok-detector replay", [*replay, str(work / "events-1.jsonl"), str(corpus)]))
    if "workers" in wanted:
        label = f"  --workers {workers}"
        if "--workers" in helptext:
            found.append(Tool("workers", label, [*replay, str(work / f"events-{workers}.jsonl"),
                                                 "--workers", str(workers), str(corpus)]))
        else:
            found.append(Tool("workers", label, None, "replay has no --workers option"))
    if "vxlan" in wanted:
        from tunnel import ensure

        found.append(Tool("vxlan", "  the same in VXLAN", [*replay, str(work / "events-vxlan.jsonl"),
                                                           str(ensure(corpus))]))
    peers = {
        "tcpdump": ("tcpdump + BPF skim", ["-n", "-r", str(corpus), "-w", "/dev/null", BPF_SKIM], None),
        "tshark": ("tshark names", ["-n", "-r", str(corpus), "-Y", TSHARK_FILTER, "-T", "fields", "-E", "aggregator=,",
                                    *[arg for f in TSHARK_FIELDS for arg in ("-e", f)]], work / "tshark.tsv"),
        "ndpi": ("ndpiReader", ["-i", str(corpus), "-q"], None),
    }
    binaries = {"tcpdump": "tcpdump", "tshark": "tshark", "ndpi": "ndpiReader"}
    for key, (label, args, stdout) in peers.items():
        if key not in wanted:
            continue
        path = shutil.which(binaries[key])
        if path is None:
            found.append(Tool(key, label, None, f"{binaries[key]} not installed"))
        else:
            found.append(Tool(key, label, [path, *args], stdout=stdout))
    return found


def versions(detector: list[str]) -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "tshark": _version(["tshark", "--version"]),
        "tcpdump": _version(["tcpdump", "--version"]),
        "ndpiReader": _version(["ndpiReader", "-h"]).replace("Welcome to ", ""),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", "detector"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        info["detector"] = f"{commit}{' + uncommitted changes in detector/' if dirty else ''}"
    except OSError:
        info["detector"] = "?"
    info["detector_command"] = " ".join(_portable(arg) for arg in detector)
    return info


def machine() -> dict[str, object]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


# -- checking names ---------------------------------------------------------------------------


def load_truth(corpus: Path) -> dict:
    path = corpus.with_name(corpus.name.removesuffix(".pcap") + ".truth.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"run.py: cannot read the ground truth {path}: {exc}") from None


def check_events(events: Path, truth: dict) -> dict:
    """Which TikTok (client_ip, name) pairs of the ground truth the events lack, and which
    event pairs the ground truth does not flag (false positives, or a stale truth)."""
    want = {tuple(pair) for pair in truth["tiktok_pairs"]}
    found: set[tuple[str, str]] = set()
    bad_lines = 0
    try:
        with open(events, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    found.add((record["client_ip"], record["name"]))
                except (ValueError, KeyError, TypeError):
                    bad_lines += 1
    except OSError:
        pass
    missing = sorted(want - found)
    where: dict[tuple[str, str], dict] = {}
    for entry in truth["names"]:
        key = (entry["client_ip"], entry["name"])
        if key in want and key not in where:
            where[key] = entry
    return {
        "expected": len(want),
        "found": len(want & found),
        "missing": [{"client_ip": ip, "name": name, "first_frame": where[(ip, name)]["frame"],
                     "proto": where[(ip, name)]["proto"]} for ip, name in missing],
        "unexpected": [list(pair) for pair in sorted(found - want)],
        "bad_lines": bad_lines,
    }


def tshark_coverage(tsv: Path, truth: dict) -> dict:
    """How many TikTok names of the ground truth tshark's output holds: shows the peer did
    the same work (tshark prints names, not which end is the client)."""
    want = {name for _, name in truth["tiktok_pairs"]}
    seen: set[str] = set()
    try:
        with open(tsv, encoding="utf-8", errors="replace") as f:
            for line in f:
                for column in line.rstrip("\n").split("\t"):
                    seen.update(n.lower().rstrip(".") for n in column.split(",") if n)
    except OSError:
        return {"expected": len(want), "found": 0}
    return {"expected": len(want), "found": len(want & seen)}


# -- the report -------------------------------------------------------------------------------


def _rate(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    for size, suffix in ((1e6, " M"), (1e3, " k")):
        if value >= size:
            return f"{value / size:.2f}{suffix}{unit}"
    return f"{value:.1f}{unit}"


def _portable(arg: str) -> str:
    """A path inside the repository as the README's commands write it (relative)."""
    prefix = f"{REPO}/"
    return arg.removeprefix(prefix) if arg.startswith(prefix) else arg


def summarise(tool: Tool, packets: int, size: int) -> dict:
    if tool.argv is None:
        return {"available": False, "why": tool.why_not}
    walls = [run["wall_s"] for run in tool.runs]
    wall = statistics.median(walls)
    return {
        "available": True,
        "command": [_portable(arg) for arg in tool.argv],
        "runs": tool.runs,
        "wall_s": wall,
        "cpu_s": statistics.median(run["user_s"] + run["sys_s"] for run in tool.runs),
        "packets_per_s": round(packets / wall),
        "mb_per_s": round(size / 1e6 / wall, 1),
        "maxrss_mb": max(run["maxrss_mb"] for run in tool.runs),
        "tree_rss_mb": max(run["tree_rss_mb"] for run in tool.runs),
    }


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """detector ÷ each peer (packets/s), and workers ÷ one process, beside the targets."""
    out: dict[str, dict] = {}
    det = results.get("detector", {})
    if not det.get("available"):
        return out
    pps = det["packets_per_s"]
    out["detector_pps"] = {"value": pps, "target": TARGET_PPS, "met": pps >= TARGET_PPS}
    out["detector_rss_mb"] = {"value": det["maxrss_mb"], "target": TARGET_RSS_MB, "met": det["maxrss_mb"] <= TARGET_RSS_MB}
    for key, target in TARGET_VS.items():
        peer = results.get(key, {})
        if peer.get("available"):
            value = pps / peer["packets_per_s"]
            out[f"detector_vs_{key}"] = {"value": round(value, 4), "target": target, "met": value >= target}
    workers = results.get("workers", {})
    if workers.get("available"):
        value = workers["packets_per_s"] / pps
        out["workers_speedup"] = {"value": round(value, 3), "target": TARGET_WORKERS_SPEEDUP,
                                  "met": value >= TARGET_WORKERS_SPEEDUP}
    vxlan = results.get("vxlan", {})
    if vxlan.get("available"):
        value = vxlan["wall_s"] / det["wall_s"]
        out["vxlan_slowdown"] = {"value": round(value, 3), "target": TARGET_VXLAN_SLOWDOWN,
                                 "met": value <= TARGET_VXLAN_SLOWDOWN}
    return out


def print_table(corpus: Path, truth: dict, results: dict[str, dict], found: list[Tool], rat: dict,
                runs: int, baseline: dict | None) -> None:
    summary = truth["summary"]
    print(f"\n{corpus}: {summary['packets']:,} packets, {summary['bytes'] / 1e6:,.0f} MB, "
          f"{summary['names']:,} names, {summary['tiktok_pairs']:,} TikTok client/name pairs; median of {runs} run(s)\n")
    vs_key = {"tcpdump": "detector_vs_tcpdump", "tshark": "detector_vs_tshark", "ndpi": "detector_vs_ndpi",
              "workers": "workers_speedup"}
    print(f"{'tool':<24}{'wall s':>8}{'cpu s':>8}{'packets/s':>12}{'MB/s':>9}{'RSS MB':>8}{'tree MB':>9}"
          f"   {'ratio':>12}  target")
    for tool in found:
        r = results[tool.key]
        if not r["available"]:
            print(f"{tool.label:<24}{'n/a':>8}   ({r['why']})")
            continue
        ratio, target = "", ""
        if tool.key == "vxlan" and "vxlan_slowdown" in rat:
            item = rat["vxlan_slowdown"]
            ratio = f"{item['value']:.3g}× plain"
            target = f"≤ {item['target']:g}×  {'met' if item['met'] else 'MISSED'}"
        elif tool.key in vs_key and vs_key[tool.key] in rat:
            item = rat[vs_key[tool.key]]
            name = "speed-up" if tool.key == "workers" else "det ÷ this"
            ratio = f"{item['value']:.3g}× {name}"
            target = f"≥ {item['target']:g}×  {'met' if item['met'] else 'MISSED'}"
        elif tool.key == "detector" and "detector_pps" in rat:
            pps, rss = rat["detector_pps"], rat["detector_rss_mb"]
            target = (f"≥ {_rate(pps['target'])} packets/s {'met' if pps['met'] else 'MISSED'}; "
                      f"RSS ≤ {rss['target']} MB {'met' if rss['met'] else 'MISSED'}")
        print(f"{tool.label:<24}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{_rate(r['packets_per_s']):>12}{r['mb_per_s']:>9.1f}"
              f"{r['maxrss_mb']:>8.0f}{r['tree_rss_mb']:>9.0f}   {ratio:>12}  {target}")
    if baseline and "detector" in results and results["detector"]["available"]:
        base = baseline.get("results", {}).get("detector", {})
        same = baseline.get("corpus", {}).get("summary", {}).get("bytes") == summary["bytes"]
        if base.get("available") and same:
            print(f"\ndetector vs baseline.json ({baseline.get('versions', {}).get('detector', '?')}): "
                  f"{results['detector']['packets_per_s'] / base['packets_per_s']:.2f}× the packets/s")


def print_checks(checks: dict[str, dict], coverage: dict | None) -> None:
    for key, check in checks.items():
        verdict = "all found" if not check["missing"] else f"{len(check['missing'])} MISSING"
        print(f"\n{key}: {check['found']}/{check['expected']} TikTok client/name pairs of the ground truth: {verdict}")
        for item in check["missing"][:25]:
            print(f"  missing {item['client_ip']} {item['name']} (first in frame {item['first_frame']}, {item['proto']})")
        if len(check["missing"]) > 25:
            print(f"  ... and {len(check['missing']) - 25} more (see the JSON)")
        if check["unexpected"]:
            shown = ", ".join(f"{ip} {name}" for ip, name in check["unexpected"][:5])
            print(f"  note: {len(check['unexpected'])} event pair(s) the ground truth does not flag: {shown}")
    if coverage is not None:
        print(f"tshark: its output holds {coverage['found']}/{coverage['expected']} TikTok names of the ground truth")


# -- profile ----------------------------------------------------------------------------------


#: Frames of the interpreter starting the program, not the program: left out of the listing.
_WRAPPERS = ("<frozen runpy>", "<string>", "__main__.py", "{built-in method builtins.exec}")


def profile_table(stats: pstats.Stats, order: str, top: int) -> list[str]:
    """The ``top`` functions by ``order`` ("cumulative" or "tottime"), one line each, with
    their share of the run; interpreter start-up frames are skipped."""
    rows = []
    total = max(stats.total_tt, 1e-9)
    for (path, line, func), (_, calls, self_time, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}({func})" if line else func
        if any(w in path or w in func or w == where for w in _WRAPPERS) or path == "~" and "exec" in func:
            continue
        rows.append((cumulative if order == "cumulative" else self_time, calls, self_time, cumulative, where))
    rows.sort(reverse=True)
    lines = [f"{'calls':>10} {'self s':>8} {'cum s':>8} {'cum %':>6}  function"]
    for _, calls, self_time, cumulative, where in rows[:top]:
        lines.append(f"{calls:>10} {self_time:>8.2f} {cumulative:>8.2f} {100 * cumulative / total:>5.0f}%  {where}")
    return lines


def profile(corpus: Path, top: int, out: Path) -> int:
    """Run replay once under cProfile; print the top functions by cumulative and self time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "detector", "replay", "--no-progress",
            "--events", os.devnull, str(corpus)]
    print(" ".join(argv), file=sys.stderr)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return EXIT_ERROR
    stats = pstats.Stats(str(out))
    print(f"profiled replay of {corpus.name}: {time.perf_counter() - started:.1f} s wall, {stats.total_tt:.1f} s "
          f"profiled (cProfile roughly doubles the time of pure-Python code); saved {out}")
    for order, title in (("cumulative", "cumulative time"), ("tottime", "self time")):
        print(f"\ntop {top} by {title}:")
        print("\n".join(profile_table(stats, order, top)))
    return 0


# -- main -------------------------------------------------------------------------------------


def warm(corpus: Path) -> float:
    """Read the corpus once so that every tool finds it in the page cache; returns MB/s."""
    started = time.perf_counter()
    with open(corpus, "rb", buffering=0) as f:
        while f.read(1 << 24):
            pass
    return corpus.stat().st_size / 1e6 / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="pcap with its .truth.json beside it (default benchmarks/corpus/tap-1m.pcap)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; the median is reported (default %(default)s)")
    parser.add_argument("--tools", default="detector,workers,vxlan,tcpdump,tshark,ndpi",
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--workers", type=int, default=2, help="the --workers count to measure (default %(default)s)")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results")
    parser.add_argument("--baseline", action="store_true", help="also write results/baseline.json")
    parser.add_argument("--profile", action="store_true", help="profile one replay under cProfile instead of measuring (saves results/<corpus>.prof)")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    args = parser.parse_args(argv)
    corpus = args.corpus
    if not corpus.is_file():
        print(f"run.py: {corpus} not found; make it with: .venv/bin/python benchmarks/generate.py", file=sys.stderr)
        return EXIT_ERROR
    if args.profile:
        return profile(corpus, args.top, RESULTS / f"{corpus.name.removesuffix('.pcap')}.prof")
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    unknown = wanted - {"detector", "workers", "vxlan", "tcpdump", "tshark", "ndpi"}
    if unknown or args.runs < 1:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}" if unknown else "--runs must be positive")
    truth = load_truth(corpus)
    packets, size = truth["summary"]["packets"], corpus.stat().st_size
    if size != truth["summary"]["bytes"]:
        print(f"run.py: {corpus} is {size:,} bytes but its ground truth describes {truth['summary']['bytes']:,}; "
              "regenerate both with benchmarks/generate.py", file=sys.stderr)
        return EXIT_ERROR
    errors = 0
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-") as tmp:
        work = Path(tmp)
        found = tools(corpus, wanted, work, args.workers)
        if not TIME.exists():
            print(f"run.py: note: {TIME} (Debian package time) is missing; peak RSS then includes this "
                  "script's own RSS at fork (Linux carries it across exec)", file=sys.stderr)
        cache_mbps = warm(corpus)
        load_before = os.getloadavg()
        if load_before[0] > 0.5:
            print(f"run.py: note: load average {load_before[0]:.1f} before the first run; other work on this "
                  "machine slows every tool (the median of more --runs helps)", file=sys.stderr)
        checks: dict[str, dict] = {}
        coverage = None
        for round_no in range(1, args.runs + 1):
            for tool in found:
                if tool.argv is None:
                    continue
                run = measure(tool.argv, tool.stdout)
                tool.runs.append(run)
                print(f"round {round_no}/{args.runs}  {tool.key:<9} {run['wall_s']:8.2f} s  "
                      f"{packets / run['wall_s']:>12,.0f} packets/s  {run['maxrss_mb']:7.1f} MB", file=sys.stderr)
                if run["exit"] != 0:
                    errors += 1
                    print(f"run.py: {tool.key} exited {run['exit']}: {' | '.join(run['stderr_tail'])}", file=sys.stderr)
                if tool.key in ("detector", "workers", "vxlan"):
                    check = check_events(Path(tool.argv[tool.argv.index("--events") + 1]), truth)
                    # Keep the worst round: a name missed once is missed.
                    if tool.key not in checks or len(check["missing"]) > len(checks[tool.key]["missing"]):
                        checks[tool.key] = check
                elif tool.key == "tshark" and tool.stdout is not None:
                    coverage = tshark_coverage(tool.stdout, truth)
        results = {tool.key: summarise(tool, packets, size) for tool in found}
    rat = ratios(results)
    baseline_path = RESULTS / "baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() and not args.baseline else None
    print_table(corpus, truth, results, found, rat, args.runs, baseline)
    print_checks(checks, coverage)
    report = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(detector_command()),
        "corpus": {"path": _portable(str(corpus.resolve())), "page_cache_read_mb_per_s": round(cache_mbps),
                   "summary": truth["summary"]},
        "runs": args.runs,
        "rss_from": "GNU time %M" if TIME.exists() else "wait4 ru_maxrss (includes the parent's RSS at fork)",
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "bpf_filter": BPF_SKIM,
        "results": results,
        "ratios": rat,
        "checks": checks,
        "tshark_coverage": coverage,
    }
    targets = [args.json] + ([baseline_path] if args.baseline else [])
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"\nresults written to {', '.join(map(str, targets))}")
    if errors:
        return EXIT_ERROR
    return EXIT_MISSING if any(check["missing"] for check in checks.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        sys.exit(130)
