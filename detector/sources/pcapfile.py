"""pcap and pcapng files (plain or gzip, a path or ``-`` for stdin) as a stream of frames.

Hand-written rather than dpkt's readers because dpkt's pcapng reader applies the first
interface's link type and timestamp resolution to every packet, and a capture of a tap
with two interfaces (say an Ethernet SPAN and a raw-IP tunnel) would be misread. The
format is small (two record layouts), and a reader over a buffered file with
``struct.unpack_from`` is also faster than building a dpkt object per record.

Frames are yielded as plain tuples ``(ts, linktype, data, frame_number)``: this is the
hot loop, so no record object per packet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

#: Larger records than this are not packets but a corrupt file (Wireshark's limit is 256 KiB).
MAX_RECORD = 256 * 1024
#: pcapng blocks other than packets (name resolution, statistics) are rarely big; this bounds memory.
MAX_BLOCK = 16 * 1024 * 1024

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete Packet Block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_OPT_TSRESOL = 9
PCAPNG_OPT_TSOFFSET = 14


class CaptureError(Exception):
    """A capture that cannot be read further; the message is one line for the operator."""


class _HashingReader(io.RawIOBase):
    """A raw file whose every byte read also goes into a SHA-256."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - the RawIOBase signature
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.size += n
        return n or 0

    def digest(self) -> tuple[int, str]:
        """Size and SHA-256 of the whole file: reads what the packets left unread."""
        assert self._hasher is not None, "opened without digest=True"
        chunk = bytearray(1 << 20)
        while self._hasher.readinto(chunk):
            pass
        return self._hasher.size, self._hasher.sha256.hexdigest()

    def _span(self, ts: float) -> None:
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._raw.close()
        super().close()


class CaptureFile:
    """One capture file opened for reading; iterate it for ``(ts, linktype, data, frame)``.

    ``skipped`` counts records dropped inside the file (a truncated last record, a packet
    on an interface that was never described) so the caller can report them; a damaged
    file header raises ``CaptureError``. ``bytes_read`` lets a progress bar follow.
    ``first_ts`` and ``last_ts`` span the packets read. With ``digest``, every byte of
    the file also goes into a SHA-256 as it is read (``digest()``), so the evidence of an
    audit is identified without a second read of the file (stdin included).
    """

    def __init__(self, path: str, stream: BinaryIO | None = None, digest: bool = False) -> None:
        self.path = path
        self.name = "stdin" if path == "-" else path.rsplit("/", 1)[-1]
        self.skipped: Counter[str] = Counter()
        self.linktypes: set[int] = set()
        self.frames = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        raw = stream if stream is not None else _open_raw(path)
        self._hasher: _HashingReader | None = None
        if digest:
            self._hasher = _HashingReader(raw)
            raw = io.BufferedReader(self._hasher, 1 << 20)
        # A buffered reader can peek at the gzip magic without consuming it (stdin cannot seek).
        self._raw = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
        head = self._raw.peek(2)[:2]
        self._file: BinaryIO = gzip.GzipFile(fileobj=self._raw) if head == GZIP_MAGIC else self._raw
        try:
            self._magic = self._file.read(4)
        except (OSError, EOFError) as exc:
            raise CaptureError(f"{self.path}: cannot read: {exc}") from None

    @property
    def bytes_read(self) -> int:
        """Position in the underlying (possibly compressed) file, for progress bars."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def digest(self) -> tuple[int, str]:
        """Size and SHA-256 of the whole file: reads what the packets left unread."""
        assert self._hasher is not None, "opened without digest=True"
        chunk = bytearray(1 << 20)
        while self._hasher.readinto(chunk):
            pass
        return self._hasher.size, self._hasher.sha256.hexdigest()

    def _span(self, ts: float) -> None:
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._raw.close()

    def __iter__(self) -> Iterator[tuple[float, int, bytes, int]]:
        try:
            if self._magic in PCAP_MAGICS:
                yield from self._read_pcap()
            elif self._magic == PCAPNG_MAGIC:
                yield from self._read_pcapng()
            elif len(self._magic) < 4:
                raise CaptureError(f"{self.path}: empty file, not a pcap or pcapng capture")
            else:
                raise CaptureError(f"{self.path}: not a pcap or pcapng capture (magic {self._magic.hex()})")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{self.path}: read error after frame {self.frames}: {exc}") from None

    def _read_pcap(self) -> Iterator[tuple[float, int, bytes, int]]:
        order, unit = PCAP_MAGICS[self._magic]
        rest = self._file.read(20)
        if len(rest) < 20:
            raise CaptureError(f"{self.path}: truncated pcap file header")
        linktype = struct.unpack(order + "I", rest[16:20])[0] & 0x0FFFFFFF
        self.linktypes.add(linktype)
        record = struct.Struct(order + "IIII")
        read = self._file.read
        frame = 0
        while True:
            head = read(16)
            if len(head) < 16:
                if head:
                    self.skipped["truncated_record"] += 1
                break
            sec, frac, caplen, _ = record.unpack(head)
            if caplen > MAX_RECORD:
                raise CaptureError(
                    f"{self.path}: corrupt record after frame {frame} (length {caplen}); stopped reading"
                )
            data = read(caplen)
            if len(data) < caplen:
                self.skipped["truncated_record"] += 1
                break
            frame += 1
            self.frames = frame
            ts = sec + frac * unit
            self._span(ts)
            yield ts, linktype, data, frame

    def _read_pcapng(self) -> Iterator[tuple[float, int, bytes, int]]:
        read = self._file.read
        # Each section has its own byte order and its own interfaces; the magic was consumed.
        block_type = PCAPNG_SHB
        head = self._magic + read(4)
        frame = 0
        order = "<"
        interfaces: list[tuple[int, float, int]] = []  # (linktype, seconds per tick, offset)
        while True:
            if len(head) < 8:
                if head:
                    self.skipped["truncated_record"] += 1
                return
            if block_type == PCAPNG_SHB:
                bom = read(4)
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise CaptureError(f"{self.path}: pcapng section with a bad byte-order magic")
                total = struct.unpack(order + "I", head[4:8])[0]
                body_len = total - 12 - 4
                if total < 28 or total > MAX_BLOCK or total % 4:
                    raise CaptureError(f"{self.path}: corrupt pcapng section header")
                read(body_len + 4)
                interfaces = []
            else:
                total = struct.unpack(order + "I", head[4:8])[0]
                if total < 12 or total % 4 or total > MAX_BLOCK:
                    raise CaptureError(f"{self.path}: corrupt pcapng block after frame {frame}; stopped reading")
                body = read(total - 8)
                if len(body) < total - 8:
                    self.skipped["truncated_record"] += 1
                    return
                if block_type == PCAPNG_EPB or block_type == PCAPNG_PB:
                    if len(body) < 24:
                        self.skipped["bad_block"] += 1
                    else:
                        if block_type == PCAPNG_EPB:
                            iface, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", body, 0)
                        else:
                            iface, _, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", body, 0)
                        frame += 1
                        self.frames = frame
                        if iface >= len(interfaces):
                            self.skipped["unknown_interface"] += 1
                        elif caplen > len(body) - 24:
                            self.skipped["bad_block"] += 1
                        else:
                            linktype, tick, offset = interfaces[iface]
                            ts = ((ts_high << 32) | ts_low) * tick + offset
                            self._span(ts)
                            yield ts, linktype, body[20 : 20 + caplen], frame
                elif block_type == PCAPNG_SPB:
                    frame += 1
                    self.frames = frame
                    if not interfaces:
                        self.skipped["unknown_interface"] += 1
                    else:
                        linktype, _, _ = interfaces[0]
                        orig = struct.unpack_from(order + "I", body, 0)[0] if len(body) >= 4 else 0
                        # SPBs carry no timestamp; 0 tells the operator it is unknown.
                        yield 0.0, linktype, body[4 : 4 + min(orig, len(body) - 8)], frame
                elif block_type == PCAPNG_IDB:
                    interfaces.append(_interface(body, order))
                    self.linktypes.add(interfaces[-1][0])
            head = read(8)
            if len(head) == 8:
                block_type = struct.unpack(order + "I", head[:4])[0]


def _interface(body: bytes, order: str) -> tuple[int, float, int]:
    """Link type, timestamp tick (seconds) and offset of an Interface Description Block."""
    if len(body) < 12:
        return 0xFFFF, 1e-6, 0
    linktype = struct.unpack_from(order + "H", body, 0)[0]
    tick, offset = 1e-6, 0
    pos, end = 8, len(body) - 4
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if code == 0:
            break
        if code == PCAPNG_OPT_TSRESOL and length >= 1:
            resol = value[0]
            tick = 2.0 ** -(resol & 0x7F) if resol & 0x80 else 10.0 ** -resol
        elif code == PCAPNG_OPT_TSOFFSET and length >= 8:
            offset = struct.unpack_from(order + "q", value, 0)[0]
        pos += 4 + ((length + 3) & ~3)
    return linktype, tick, offset


def _open_raw(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by CaptureFile.close
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror or exc}") from None
