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


def capture_paths() -> list[Path]:
    """The bundled captures, then the shared corpus when it is beside the checkout."""
    dirs = [ROOT / "pcaps", ROOT.parent / "shared" / "corpus"]
    return sorted(p for d in dirs if d.is_dir() for p in d.rglob("*") if p.name.endswith(CAPTURE_SUFFIXES))


def frames() -> Iterator[tuple[int, bytes]]:
    """Every frame of every seed capture, as (linktype, bytes); damaged captures end early."""
    for path in capture_paths():
        try:
            capture = CaptureFile(str(path))
        except CaptureError:
            continue
        try:
            for _, linktype, data, _ in capture:
                yield linktype, data
        except CaptureError:
            pass
        finally:
            capture.close()


def packets() -> Iterator[Packet]:
    """Every frame of the seed captures that decodes to a TCP, UDP or ARP packet."""
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
