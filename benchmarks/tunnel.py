#!/usr/bin/env python3
"""A VXLAN-wrapped copy of a benchmark corpus: the tap as a cloud traffic mirror sends it.

    .venv/bin/python benchmarks/tunnel.py benchmarks/corpus/tap-1m.pcap   # -> tap-1m.vxlan.pcap

AWS Traffic Mirroring, GCP Packet Mirroring and most virtual taps deliver each mirrored
frame inside VXLAN (UDP 4789) from the mirror source to the sensor. The copy wraps every
frame of the corpus, unchanged, in an outer Ethernet, IPv4 (with its checksum), UDP and
VXLAN header (VNI 5001), the outer UDP source port hashed from the inner frame's first
bytes as VTEPs spread flows; timestamps are kept. Its ground truth is the corpus's own
(the names and client addresses are those of the inner frames), written beside it so
``run.py --corpus`` can read it, with the byte count of the copy.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zlib
from pathlib import Path

from generate import _sum16, truth_path

VXLAN_PORT = 4789
VNI = 5001
OUTER_SRC, OUTER_DST = bytes([198, 18, 250, 1]), bytes([198, 18, 250, 2])  # the mirror source, the sensor
OUTER_ETH = bytes.fromhex("02000000fa02" "02000000fa01" "0800")
_RECORD = struct.Struct("<IIII")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_UDP_VXLAN = struct.Struct("!HHHHII")  # UDP header, then VXLAN flags and VNI
GLOBAL_HEADER = 24
OVERHEAD = 14 + 20 + 8 + 8


def wrapped_path(corpus: Path) -> Path:
    return corpus.with_name(corpus.name.removesuffix(".pcap") + ".vxlan.pcap")


def wrap(corpus: Path, out: Path) -> int:
    """Write the wrapped copy and its ground truth; returns the frames written."""
    frames = 0
    ip_id = 0
    with open(corpus, "rb") as src, open(out, "wb") as dst:
        header = src.read(GLOBAL_HEADER)
        if header[:4] != b"\xd4\xc3\xb2\xa1" or len(header) < GLOBAL_HEADER:
            raise SystemExit(f"tunnel.py: {corpus}: not a little-endian microsecond pcap (as generate.py writes)")
        linktype = struct.unpack_from("<I", header, 20)[0]
        if linktype != 1:
            raise SystemExit(f"tunnel.py: {corpus}: link type {linktype}, not Ethernet")
        dst.write(header[:16] + struct.pack("<II", 65535, 1))
        while True:
            record = src.read(_RECORD.size)
            if len(record) < _RECORD.size:
                break
            sec, usec, caplen, length = _RECORD.unpack(record)
            frame = src.read(caplen)
            ip_id = (ip_id + 1) & 0xFFFF
            total = 20 + 8 + 8 + len(frame)
            ip = _IP4.pack(0x45, 0, total, ip_id, 0x4000, 64, 17, 0, OUTER_SRC, OUTER_DST)
            ip = ip[:10] + struct.pack("!H", 0xFFFF - _sum16(ip)) + ip[12:]
            sport = 49152 + zlib.crc32(frame[:64]) % 16384
            outer = OUTER_ETH + ip + _UDP_VXLAN.pack(sport, VXLAN_PORT, total - 20, 0, 0x08000000, VNI << 8)
            dst.write(_RECORD.pack(sec, usec, caplen + OVERHEAD, length + OVERHEAD))
            dst.write(outer)
            dst.write(frame)
            frames += 1
    truth = json.loads(truth_path(corpus).read_text(encoding="utf-8"))
    truth["summary"]["bytes"] = out.stat().st_size
    truth["summary"]["wrapped_in"] = f"VXLAN (UDP {VXLAN_PORT}, VNI {VNI}) from {corpus.name}"
    truth_path(out).write_text(json.dumps(truth) + "\n", encoding="utf-8")
    return frames


def ensure(corpus: Path) -> Path:
    """The wrapped copy of ``corpus``, written first when missing or older than it."""
    out = wrapped_path(corpus)
    if not out.exists() or out.stat().st_mtime < corpus.stat().st_mtime or not truth_path(out).exists():
        print(f"tunnel.py: writing {out}", file=sys.stderr)
        wrap(corpus, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="a pcap written by generate.py (its .truth.json beside it)")
    parser.add_argument("--out", type=Path, help="default: CORPUS with .vxlan.pcap")
    args = parser.parse_args(argv)
    out = args.out or wrapped_path(args.corpus)
    print(f"{wrap(args.corpus, out):,} frames wrapped into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
