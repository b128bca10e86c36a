"""Capture files as a report names them: where they are, their SHA-256, size and time span.

One read per file gives everything: the bytes pass through SHA-256 on their way into the
same frame reader the replay uses, so the hash is of the file on disk (compressed, if it is)
and the span is of the packets in it, as the replay saw them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from detector.report.meta import CaptureInfo
from detector.sources.pcapfile import CaptureError, CaptureFile

#: Frames between progress updates while hashing.
PROGRESS_FRAMES = 16384


def describe_capture(path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None) -> CaptureInfo:
    """Hash and span one capture in a single read (the standalone report's case; a replay
    describes its captures while it reads them). Never raises for a damaged file: the hash
    still covers every byte and ``error`` says where reading the packets stopped."""
    path = os.fspath(path)
    try:
        capture = CaptureFile(path, digest=True)
    except CaptureError as exc:
        return CaptureInfo(Path(path).name, path=path, error=str(exc).removeprefix(f"{path}: "))
    error = None
    reported = 0
    try:
        for _ts, _linktype, _data, frame in capture:
            if on_bytes is not None and not frame % PROGRESS_FRAMES:
                on_bytes(capture.bytes_read - reported)
                reported = capture.bytes_read
    except CaptureError as exc:
        error = str(exc)
    return capture_info(capture, error)


def capture_info(capture: CaptureFile, error: str | None) -> CaptureInfo:
    """What a capture read to its end (opened with ``digest=True``) says of itself; closes it."""
    path = capture.path
    try:
        size, sha256 = capture.digest()
    except OSError as exc:
        return CaptureInfo(capture.name, path=path, error=error or f"read error: {exc}", frames=capture.frames or None)
    finally:
        capture.close()
    if error is not None:
        error = error.removeprefix(f"{path}: ")
    elif capture.skipped:
        error = ", ".join(f"{n} record(s) skipped: {r.replace('_', ' ')}" for r, n in sorted(capture.skipped.items()))
    return CaptureInfo(capture.name, path=None if path == "-" else os.path.abspath(path), size=size, sha256=sha256,
                       first_ts=capture.first_ts, last_ts=capture.last_ts, frames=capture.frames, error=error)


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
