#!/usr/bin/env python3
"""Live capture at tcpreplay's top speed: kernel drops, and the TikTok names still found.

    .venv/bin/python benchmarks/live.py                   # the upload mix, then tap-1m (root)
    .venv/bin/python benchmarks/live.py --corpus upload   # one of them
    .venv/bin/python benchmarks/live.py --workers 2

A sensor on a tap sees whatever the segment carries at the rate it carries it. Here
``tiktok-detector live`` (one worker unless --workers) captures on one end of a veth pair
in a network namespace of its own while tcpreplay sends a corpus from the other end as
fast as it can (``--topspeed``, the capture preloaded in memory). Two corpora:

- ``upload``: upload-heavy traffic, what a user backing up photos or a video call looks
  like: 300,000 client-to-server TCP segments of 1.2 kB from 500 flows already open (no
  handshakes), interleaved with DNS queries for TikTok names from other clients and plain
  HTTP requests (SYN, then the request) to TikTok hosts. Every such segment passes the
  kernel filter (a client's payload segment, the one a ClientHello's second segment looks
  like); the skim must drop them in C. Written here on first use as
  ``corpus/upload-300k.pcap`` with its ground truth.
- ``tap``: the mixed corpus ``corpus/tap-1m.pcap`` of generate.py.

Reported per corpus: the packets tcpreplay sent and its rate, the packets that passed the
kernel filter, the kernel's and the interface's drops (the sensor's summary line), and
how many of the ground truth's TikTok (client_ip, name) pairs are in the events. Exit
status 0 when nothing was dropped and every pair found, 1 otherwise, 2 on an error. A
benchmark, not a test: it needs root (namespaces), tcpreplay and ethtool, and minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests")]

from generate import Way, truth_path  # noqa: E402
from netns import VethPair, unavailable  # noqa: E402  (the namespaces the live tests use)

from detector.match import load_signatures  # noqa: E402
from detector.policy import DEFAULT_VIOLATIONS  # noqa: E402

CORPORA = {"upload": HERE / "corpus" / "upload-300k.pcap", "tap": HERE / "corpus" / "tap-1m.pcap"}
UPLOAD_SEGMENTS = 300_000
UPLOAD_FLOWS = 500
SEGMENT = 1200
#: One TikTok lookup or request every this many upload segments.
EVENT_EVERY = 2_000
TIKTOK_NAMES = ("www.tiktok.com", "m.tiktok.com", "api16-normal-c-useast1a.tiktokv.com", "v16m.tiktokcdn.com",
                "tiktok-sg.byteoversea.com", "p16-sign-va.tiktokcdn.com", "vm.tiktok.com", "webcast.tiktok.com")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
SEND_TIMEOUT = 600.0
SUMMARY = re.compile(r"capture: (\d+) packets passed the kernel filter, (\d+) dropped by the kernel, "
                     r"(\d+) by the interface")
_RECORD = struct.Struct("<IIII")


def write_upload(path: Path) -> None:
    """The upload mix (module docstring) and its ground truth; seeded, so the same bytes."""
    rng = random.Random(14)
    signatures = load_signatures(REPO / "signatures")
    if not all((m := signatures.match(name)) and m.category in DEFAULT_VIOLATIONS for name in TIKTOK_NAMES):
        raise SystemExit("live.py: a TikTok name of the upload mix is no longer one the default policy reports")
    gateway, server = bytes.fromhex("020000000001"), bytes([198, 19, 7, 1])
    uploads = []
    for i in range(UPLOAD_FLOWS):
        client = bytes([198, 18, 40 + i // 250, 1 + i % 250])
        way = Way(bytes.fromhex(f"0200c612{i >> 8:02x}{i & 0xFF:02x}"), gateway, None, client, server, 64, rng)
        uploads.append([way, 32768 + rng.randrange(28000), rng.randrange(1 << 32)])
    payload = bytes(rng.randrange(256) for _ in range(SEGMENT))
    pairs: set[tuple[str, str]] = set()
    names = []
    t = 1_772_442_000.0
    written = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

        def put(frame: bytes) -> None:
            nonlocal written
            usec = round(t * 1e6)
            out.write(_RECORD.pack(usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
            written += 1

        for n in range(UPLOAD_SEGMENTS):
            flow = uploads[n % UPLOAD_FLOWS]
            way, sport, seq = flow
            put(way.tcp(sport, 443, seq, 1, 0x18, 502, b"", payload))
            flow[2] = (seq + SEGMENT) & 0xFFFFFFFF
            t += 2e-6
            if n % EVENT_EVERY == EVENT_EVERY // 2:
                k = n // EVENT_EVERY
                name = TIKTOK_NAMES[k % len(TIKTOK_NAMES)]
                client = bytes([198, 18, 60 + k // 250, 1 + k % 250])
                way = Way(bytes.fromhex(f"0200c613{k >> 8:02x}{k & 0xFF:02x}"), gateway, None, client,
                          bytes([198, 19, 53, 53]) if k % 2 == 0 else bytes([198, 19, 8, 8]), 64, rng)
                if k % 2 == 0:
                    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
                    put(way.udp(40000 + k, 53, struct.pack("!HHHHHH", k, 0x0100, 1, 0, 0, 0) + qname + b"\0\1\0\1"))
                else:
                    put(way.tcp(50000 + k, 80, 1000, 0, 0x02, 64240, b"", b""))
                    put(way.tcp(50000 + k, 80, 1001, 1, 0x18, 502, b"",
                                f"GET / HTTP/1.1\r\nHost: {name}\r\nUser-Agent: bench\r\n\r\n".encode()))
                ip = ".".join(map(str, client))
                pairs.add((ip, name))
                names.append({"client_ip": ip, "name": name})
    summary = {"packets": written,
               "bytes": path.stat().st_size, "names": len(names), "tiktok_pairs": len(pairs)}
    truth_path(path).write_text(json.dumps({"summary": summary, "names": names,
                                            "tiktok_pairs": sorted(map(list, pairs))}) + "\n", encoding="utf-8")


def run_one(pair: VethPair, corpus: Path, workers: int, work: Path) -> dict:
    """The sensor on the server end, tcpreplay --topspeed on the client end, then the counts."""
    truth = json.loads(truth_path(corpus).read_text(encoding="utf-8"))
    events, log = work / f"{corpus.stem}.jsonl", work / f"{corpus.stem}.err"
    sensor = [sys.executable, "-m", "detector", "live", "-i", pair.server.ifname, "--events", str(events),
              "--workers", str(workers)]
    with open(log, "wb") as err:
        proc = pair.spawn(pair.server, sensor, stderr=err, stdout=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + START_TIMEOUT
    while "capturing on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pair.stop(proc)
            raise SystemExit(f"live.py: the sensor did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    sent = pair.run(pair.client, ["tcpreplay", "--topspeed", "-K", "-q", "-i", pair.client.ifname, str(corpus)],
                    timeout=SEND_TIMEOUT, text=True)
    time.sleep(1.0)  # the kernel hands over its last block of packets
    pair.stop(proc, timeout=STOP_TIMEOUT)
    text = log.read_text(errors="replace")
    counts = SUMMARY.search(text)
    if counts is None:
        raise SystemExit(f"live.py: no capture summary in the sensor's log:\n{text}")
    rate = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", sent.stdout)
    packets = re.search(r"Successful packets:\s+(\d+)", sent.stdout)
    want = {tuple(p) for p in truth["tiktok_pairs"]}
    found = set()
    for line in events.read_text().splitlines():
        record = json.loads(line)
        found.add((record["client_ip"], record["name"]))
    return {
        "corpus": corpus.name, "workers": workers,
        "sent": int(packets.group(1)) if packets else None, "sent_pps": float(rate.group(1)) if rate else None,
        "passed_filter": int(counts.group(1)), "kernel_drops": int(counts.group(2)),
        "interface_drops": int(counts.group(3)),
        "tiktok_pairs": len(want), "found": len(want & found), "missing": sorted(map(list, want - found))[:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "live-latest.json")
    args = parser.parse_args(argv)
    why = unavailable()
    if why:
        print(f"live.py: {why}", file=sys.stderr)
        return 2
    chosen = list(CORPORA) if args.corpus == "all" else [args.corpus]
    if "upload" in chosen and not CORPORA["upload"].exists():
        CORPORA["upload"].parent.mkdir(parents=True, exist_ok=True)
        write_upload(CORPORA["upload"])
    missing = [CORPORA[c] for c in chosen if not CORPORA[c].exists()]
    if missing:
        print(f"live.py: {missing[0]} not found; make it with: .venv/bin/python benchmarks/generate.py",
              file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="tiktok-live-bench-") as tmp, VethPair(ipv6=False) as pair:
        work = Path(tmp)
        for key in chosen:
            result = run_one(pair, CORPORA[key], args.workers, work)
            results.append(result)
            print(f"{key:<7} sent {result['sent']:,} at {result['sent_pps'] or 0:,.0f} packets/s; "
                  f"{result['passed_filter']:,} passed the kernel filter, {result['kernel_drops']:,} dropped by "
                  f"the kernel, {result['interface_drops']:,} by the interface; TikTok pairs "
                  f"{result['found']}/{result['tiktok_pairs']}")
    args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"results written to {args.json}")
    ok = all(r["kernel_drops"] == 0 and r["interface_drops"] == 0 and r["found"] == r["tiktok_pairs"]
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
