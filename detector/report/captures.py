"""Capture files as a report names them: where they are, their SHA-256, size and time span.

One read per file gives everything: the bytes pass through SHA-256 on their way into the
same frame reader the replay uses, so the hash is of the file on disk (compressed, if it is)
and the span is of the packets in it, as the replay saw them.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from detector.report.meta import CaptureInfo
from detector.sources.pcapfile import CaptureError, CaptureFile

#: Bytes read per call while draining the rest of a file into the hash.
CHUNK = 1 << 20


class _HashingReader(io.RawIOBase):
    """A raw file whose every byte read also goes into a SHA-256."""

    def __init__(self, raw: io.BufferedReader, on_bytes: Callable[[int], None] | None) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - the RawIOBase signature
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.size += n
            if self._on_bytes is not None:
                self._on_bytes(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def describe_capture(path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None) -> CaptureInfo:
    """Hash and span one capture in a single read. Never raises for a damaged file: the
    hash still covers every byte and ``error`` says where reading the packets stopped."""
    path = os.fspath(path)
    name = Path(path).name
    try:
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        return CaptureInfo(name, path=path, error=exc.strerror or str(exc))
    reader = _HashingReader(raw, on_bytes)
    first: float | None = None
    last: float | None = None
    error: str | None = None
    frames = 0
    try:
        capture = CaptureFile(path, io.BufferedReader(reader, CHUNK))
        for ts, _linktype, _data, frame in capture:
            frames = frame
            if ts > 0:  # pcapng Simple Packet Blocks carry no time and read as 0
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
        frames = capture.frames
        if capture.skipped:
            error = ", ".join(f"{n} record(s) skipped: {r.replace('_', ' ')}" for r, n in sorted(capture.skipped.items()))
    except CaptureError as exc:
        error = str(exc).removeprefix(f"{path}: ")
    chunk = bytearray(CHUNK)
    try:
        while reader.readinto(chunk):
            pass
    except OSError as exc:
        error = error or f"read error: {exc}"
        return CaptureInfo(name, path=path, error=error, frames=frames or None)
    finally:
        reader.close()
    return CaptureInfo(name, path=path, size=reader.size, sha256=reader.sha256.hexdigest(),
                       first_ts=first, last_ts=last, frames=frames, error=error)


def locate(name: str, directories: Iterable[Path]) -> Path | None:
    """The first ``DIR/name`` that is a file. ``name`` is a bare file name from an event;
    one with a path separator or a dot-dot is refused, so an event cannot point outside."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return None
    for directory in directories:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None
