"""Fuzz the capture reader: pcap, pcapng and gzip files, walked whole and through the skim.

Run alone: ``.venv/bin/python fuzz/fuzz_pcapfile.py fuzz/corpus/pcapfile -dict=fuzz/dicts/pcapfile.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only pcapfile``).

An input that starts with the gzip magic is read as it is, so the fuzzer damages gzip
headers and deflate data itself. Any other input ends in one selector byte: bit 0 gzips
the capture before it is read (the reader's gzip path over every capture shape), bit 1
walks it as worker 0 or 1 (bit 2) of two. The reader's buffer is made small so that
records straddle reads and the buffer grows, as only gigabyte files do at full size.

Each capture is read twice: every frame (what ``CaptureFile`` iterates), and its batches
through a real skimmer, driven as ``replay`` drives it (the clock stops the walks, kept
TCP flows are tracked).

What counts as a finding: any exception but ``CaptureError`` (a damaged capture is one
line for the operator), a ``CaptureError`` message over more than one line, and a skim
walk that disagrees with the whole read: a kept frame the whole read does not have with
the same number, time, link type and bytes, another count of frames, another outcome.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections import Counter
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.decode import IPPROTO_TCP, decode
    from detector.skim import new_skimmer
    from detector.sources import pcapfile
    from detector.sources.pcapfile import GZIP_MAGIC, CaptureError, CaptureFile

#: The reader's buffer while fuzzing: a few hundred bytes instead of 4 MiB (see above).
SMALL_CHUNK = 512
DNS_PORTS = frozenset({53})
QUIC_PORTS = frozenset({443})
#: A small flow table, so the skim's table fills up too.
MAX_FLOWS = 8


def _open(capture: bytes) -> CaptureFile | str:
    """The capture opened, or the one-line error opening it gave."""
    try:
        return CaptureFile("fuzz", stream=io.BytesIO(capture))
    except CaptureError as exc:
        return str(exc)


def _whole(capture: bytes) -> tuple[dict[int, tuple], int, str | None]:
    """Every frame by number, how many records were walked, and the error that ended it."""
    cap = _open(capture)
    if isinstance(cap, str):
        return {}, 0, cap
    frames: dict[int, tuple] = {}
    error = None
    try:
        for ts, linktype, data, number in cap:
            assert number not in frames, f"frame {number} given twice"
            frames[number] = (ts, linktype, data)
    except CaptureError as exc:
        error = str(exc)
    return frames, cap.frames, error


def _skimmed(capture: bytes, worker: int, workers: int) -> tuple[list[tuple], int, str | None]:
    """The kept frames of a skim walk driven as replay drives it, the count, the error."""
    cap = _open(capture)
    if isinstance(cap, str):
        return [], 0, cap
    skimmer = new_skimmer(DNS_PORTS, QUIC_PORTS, MAX_FLOWS, worker=worker, workers=workers)
    skimmer.until = 0.0
    stats: Counter[str] = Counter()
    kept: list[tuple] = []
    error = None
    try:
        for frames, last_ts, _ in cap.batches(skimmer):
            for ts, linktype, data, number, _ in frames:
                kept.append((number, ts, linktype, data))
                packet = decode(linktype, data, stats)
                if packet is not None and packet.l4 == IPPROTO_TCP:
                    key = (packet.src_ip, packet.sport, packet.dst_ip, packet.dport)
                    skimmer.track(skimmer.flow_hash(*key), bool(packet.payload))
            if last_ts is not None:
                skimmer.until = last_ts + 1.0
    except CaptureError as exc:
        error = str(exc)
    return kept, cap.frames, error


def TestOneInput(data: bytes) -> None:
    # Set for this input only: a test session that replays inputs reads real files after.
    chunk, pcapfile.CHUNK = pcapfile.CHUNK, SMALL_CHUNK
    try:
        _read_both(data)
    finally:
        pcapfile.CHUNK = chunk


def _read_both(data: bytes) -> None:
    """Read the input's capture whole and through the skim, and compare."""
    if data.startswith(GZIP_MAGIC) or not data:
        capture, worker, workers = data, 0, 1
    else:
        capture, selector = data[:-1], data[-1]
        if selector & 1:
            capture = gzip.compress(capture, compresslevel=1, mtime=0)
        worker, workers = (selector >> 2 & 1, 2) if selector & 2 else (0, 1)
    frames, walked, error = _whole(capture)
    kept, skim_walked, skim_error = _skimmed(capture, worker, workers)
    for message in (error, skim_error):
        assert message is None or "\n" not in message, message
    assert skim_error == error, (error, skim_error)
    assert skim_walked == walked, (walked, skim_walked)
    numbers = [number for number, *_ in kept]
    assert numbers == sorted(set(numbers)), "kept frames out of order or twice"
    for number, *frame in kept:
        assert frames.get(number) == tuple(frame), f"frame {number} differs from the whole read"


def seeds() -> Iterator[bytes]:
    """The seed captures, cut to their first 8 KiB: plain ones with a selector byte
    (read as they are, gzipped, as worker 1 of 2), gzip files whole."""
    from seeds import capture_paths, unique

    def inputs() -> Iterator[bytes]:
        for path in capture_paths():
            data = path.read_bytes()
            if data.startswith(GZIP_MAGIC):
                yield data[:8192]
            else:
                for selector in (0, 1, 6):
                    yield data[:8192] + bytes((selector,))

    return iter(unique(inputs()))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
