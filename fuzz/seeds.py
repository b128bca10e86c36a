"""What the fuzz targets share: where seed captures are, and the packets in them.

A target's ``seeds()`` turns the packets of real captures into inputs of its own shape
(a DNS message, a ClientHello, a QUIC datagram ...), so the fuzzer starts from what
devices really send. The bundled ``pcaps/`` are always there; ``../shared/corpus/``
(captures from the test suites of nDPI, Zeek and suricata-verify) only in a developer's
checkout, and its bytes are never committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from detector.decode import Packet, decode
from detector.sources.pcapfile import CaptureError, CaptureFile

ROOT = Path(__file__).resolve().parent.parent
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".cap", ".pcapng.gz")
#: Seeds a target keeps at most: a corpus too large to start from slows every run.
MAX_SEEDS = 2000
#: Frames read from one capture, so that the seeds come from many captures, not the first.
MAX_FRAMES_PER_CAPTURE = 200


def capture_paths() -> list[Path]:
    """The bundled captures, then the shared corpus when it is beside the checkout."""
    dirs = [ROOT / "pcaps", ROOT.parent / "shared" / "corpus"]
    return sorted(p for d in dirs if d.is_dir() for p in d.rglob("*") if p.name.endswith(CAPTURE_SUFFIXES))


def frames() -> Iterator[tuple[int, bytes]]:
    """The first frames of every seed capture, as (linktype, bytes); damaged captures end early."""
    for path in capture_paths():
        try:
            capture = CaptureFile(str(path))
        except CaptureError:
            continue
        try:
            for _, linktype, data, number in capture:
                if number > MAX_FRAMES_PER_CAPTURE:
                    break
                yield linktype, data
        except CaptureError:
            pass
        finally:
            capture.close()


def packets() -> Iterator[Packet]:
    """Every frame of the seed captures that decodes to a TCP, UDP, ARP or neighbour-discovery packet."""
    stats: Counter[str] = Counter()
    for linktype, data in frames():
        packet = decode(linktype, data, stats)
        if packet is not None:
            yield packet


def unique(inputs: Iterator[bytes], limit: int = MAX_SEEDS) -> list[bytes]:
    """The first ``limit`` distinct non-empty inputs."""
    seen: dict[bytes, None] = {}
    for data in inputs:
        if data and data not in seen:
            seen[data] = None
            if len(seen) >= limit:
                break
    return list(seen)


#: fuzz_skim.c's link types, by the index its set-up bytes give.
SKIM_LINKTYPES = (1, 113, 276, 101, 228, 229, 14, 147)


def skim_inputs() -> Iterator[bytes]:
    """Inputs of fuzz_skim.c: its 8 set-up bytes, then the records of a seed capture (a
    pcap's after its file header; a pcapng whole, since the walk leaves the blocks that are
    not packets to its caller). Each capture goes in alone with DNS triaged by name, and as
    worker 1 of 2 without."""
    for path in capture_paths():
        if path.name.endswith(".gz"):
            continue
        data = path.read_bytes()
        mode, linktype, records = 0, 1, b""
        if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            big = data[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
            mode = 2 * big + 4 * (data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"))
            linktype = int.from_bytes(data[20:24], "big" if big else "little")
            records = data[24:]
        elif data[:4] == b"\x0a\x0d\x0d\x0a" and len(data) >= 12:
            big = data[8:12] == b"\x1a\x2b\x3c\x4d"
            mode = 1 + 2 * big
            records = data
        else:
            continue
        kind = SKIM_LINKTYPES.index(linktype) if linktype in SKIM_LINKTYPES else 0
        for setup, workers_byte in ((mode | 16, 0), (mode, 1 << 2 | 1)):
            yield bytes((setup, workers_byte, kind, kind, kind, kind, 63, 1)) + records[:4096]
