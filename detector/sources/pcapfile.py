"""pcap and pcapng files (plain or gzip, a path or ``-`` for stdin), walked by the skim.

Hand-written rather than dpkt's readers because dpkt's pcapng reader applies the first
interface's link type and timestamp resolution to every packet, and a capture of a tap
with two interfaces (say an Ethernet SPAN and a raw-IP tunnel) would be misread; and
rather than libpcap's because the frame number of every kept packet must be known for
the evidence, which a filtered libpcap read does not give.

The file is read in large buffers; the skim (C) walks the packet records of each buffer
and hands back only the frames the pipeline must read, with their frame numbers. Python
handles the file headers and the pcapng blocks that are not plain packets. Frames are
plain tuples: this is the hot loop, so no record object per packet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import queue
import struct
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from detector.errors import UserError
from detector.counters import FILE_BAD_BLOCK, FILE_TRUNCATED_RECORD, FILE_UNKNOWN_INTERFACE
from detector.skim import BLOCK, CORRUPT, DROP_KEYS, END, KEPT, MAX_BLOCK, Skimmer, new_skimmer

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

# Records longer than MAX_RECORD are not packets but a corrupt file (Wireshark's limit is
# 256 KiB); MAX_BLOCK bounds other pcapng blocks (name resolution, statistics) and memory.

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete Packet Block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_OPT_TSRESOL = 9
PCAPNG_OPT_TSOFFSET = 14
PCAPNG_BYTE_ORDERS = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
#: How the skimmer is told about pcapng interfaces: (linktype, seconds per tick, offset).
INTERFACE = struct.Struct("=I4xdq")
#: Bytes read at a time; the skim walks all of them in one call.
CHUNK = 4 << 20
#: The SHA-256 thread's buffers: how many, and their size.
HASH_BUFFERS, HASH_BUFFER = 4, 1 << 20

#: One frame for the pipeline: (ts, linktype, data, frame number in its file, the skim's
#: hint: skim.HINT_UNWANTED_HELLO or 0).
Frame = tuple[float, int, bytes, int, int]
#: What ``CaptureFile.batches`` yields: kept frames, time of the last frame walked, drops.
Batch = tuple[list[Frame], float | None, tuple[int, ...]]
_NO_DROPS = (0,) * len(DROP_KEYS)


class CaptureError(UserError):
    """A capture that cannot be read further; the message is one line for the operator."""


class _HashingReader(io.RawIOBase):
    """A raw file whose every byte read also goes into a SHA-256.

    The hash runs in a thread (hashlib lets go of the GIL), so on a second core it costs
    the replay nothing but a copy: SHA-256 alone takes ~0.6 s a gigabyte here, as long as
    the rest of a replay. The copies go into a few reused buffers (a fresh 4 MB object per
    read cost more in page faults than the copy itself), which also bounds what waits.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self.size = 0
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(HASH_BUFFERS):
            self._free.put(bytearray(HASH_BUFFER))
        self._chunks: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._hash, name="sha256", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        while (item := self._chunks.get()) is not None:
            piece, n = item
            with memoryview(piece) as view:
                self._sha256.update(view[:n])
            self._free.put(piece)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - the RawIOBase signature
        n = self._raw.readinto(buffer) or 0
        with memoryview(buffer) as view:
            for start in range(0, n, HASH_BUFFER):
                piece = self._free.get()
                size = min(HASH_BUFFER, n - start)
                piece[:size] = view[start : start + size]
                self._chunks.put((piece, size))
        self.size += n
        return n

    def hexdigest(self) -> str:
        """The SHA-256 of everything read (ends the hashing thread)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        return self._sha256.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
        if self._raw is not sys.stdin.buffer:
            self._raw.close()
        super().close()


class CaptureFile:
    """One capture file opened for reading.

    ``batches(skimmer)`` walks it in large buffers through the skim and yields the frames
    the pipeline must read; iterating it yields every frame as ``(ts, linktype, data,
    frame)``. ``skipped`` counts records dropped inside the file (a truncated last record,
    a packet on an interface that was never described) so the caller can report them; a
    damaged file raises ``CaptureError``. ``bytes_read`` lets a progress bar follow.
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
        self._buf = _Window(self._file)
        try:
            self._buf.need(4)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{self.path}: cannot read: {exc}") from None
        self._magic = bytes(self._buf.data[:4])

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
        return self._hasher.size, self._hasher.hexdigest()

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._raw.close()

    def __iter__(self) -> Iterator[tuple[float, int, bytes, int]]:
        for frames, _, _ in self.batches(new_skimmer(frozenset(), frozenset(), 1, keep_all=True)):
            for ts, linktype, data, frame, _ in frames:
                yield ts, linktype, data, frame

    def batches(self, skimmer: Skimmer) -> Iterator[Batch]:
        """Walk the file through ``skimmer``: each batch holds the kept frames as
        ``(ts, linktype, data, frame, hint)``, the time of the last frame walked (None
        if it had none) and the counts of what was dropped (``skim.DROP_KEYS``).

        A walk stops early once a frame reaches ``skimmer.until``; set it before asking
        for the next batch."""
        try:
            if self._magic in PCAP_MAGICS:
                yield from self._pcap_batches(skimmer)
            elif self._magic == PCAPNG_MAGIC:
                yield from self._pcapng_batches(skimmer)
            elif self._buf.end < 4:
                raise CaptureError(f"{self.path}: empty file, not a pcap or pcapng capture")
            else:
                raise CaptureError(f"{self.path}: not a pcap or pcapng capture (magic {self._magic.hex()})")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{self.path}: read error after frame {self.frames}: {exc}") from None

    def _walked(self, result: tuple, base: int) -> Batch:
        """Account for one walk of the skimmer; the batch it gives the caller."""
        _, _, walked, kept, last_ts, ts_min, ts_max, drops = result
        self.frames += walked
        if ts_min is not None:
            self._span(ts_min)
            self._span(ts_max)
        data = self._buf.data
        frames = [
            (ts, linktype, bytes(data[offset : offset + caplen]), serial - base, hint)
            for serial, ts, offset, caplen, linktype, hint in KEPT.iter_unpack(kept)
        ]
        return frames, last_ts, drops

    def _span(self, ts: float) -> None:
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def _end_of_data(self) -> bool:
        """Read more after a walk that ran out of whole records; True at the end of the
        file (a partial record left there is counted as truncated)."""
        buf = self._buf
        if buf.fill():
            return False
        if buf.end > buf.pos:
            self.skipped[FILE_TRUNCATED_RECORD] += 1
        return True

    def _pcap_batches(self, skimmer: Skimmer) -> Iterator[Batch]:
        order, unit = PCAP_MAGICS[self._magic]
        buf = self._buf
        if not buf.need(24):
            raise CaptureError(f"{self.path}: truncated pcap file header")
        linktype = struct.unpack_from(order + "I", buf.data, 20)[0] & 0x0FFFFFFF
        self.linktypes.add(linktype)
        buf.pos = 24
        base = skimmer.serial
        while True:
            result = skimmer.walk_pcap(buf.data, buf.pos, buf.end, order == ">", unit == 1e-9, linktype)
            status, buf.pos = result[0], result[1]
            yield self._walked(result, base)
            if status == CORRUPT:
                caplen = struct.unpack_from(order + "I", buf.data, buf.pos + 8)[0]
                raise CaptureError(
                    f"{self.path}: corrupt record after frame {self.frames} (length {caplen}); stopped reading"
                )
            if status == END and self._end_of_data():
                return

    def _pcapng_batches(self, skimmer: Skimmer) -> Iterator[Batch]:
        buf = self._buf
        order = "<"  # each section has its own byte order and its own interfaces
        interfaces: list[tuple[int, float, int]] = []  # (linktype, seconds per tick, offset)
        packed = b""
        base = skimmer.serial
        while True:
            result = skimmer.walk_pcapng(buf.data, buf.pos, buf.end, order == ">", packed)
            status, buf.pos = result[0], result[1]
            yield self._walked(result, base)
            if status == END:
                if self._end_of_data():
                    return
                continue
            if status == CORRUPT:
                raise CaptureError(f"{self.path}: corrupt pcapng block after frame {self.frames}; stopped reading")
            if status != BLOCK:
                continue
            # A block the skimmer leaves to Python: headers, and packets it cannot take whole.
            if not buf.need(12):
                self.skipped[FILE_TRUNCATED_RECORD] += 1
                return
            block_type = struct.unpack_from(order + "I", buf.data, buf.pos)[0]
            if block_type == PCAPNG_SHB:
                bom = bytes(buf.data[buf.pos + 8 : buf.pos + 12])
                if bom not in PCAPNG_BYTE_ORDERS:
                    raise CaptureError(f"{self.path}: pcapng section with a bad byte-order magic")
                order = PCAPNG_BYTE_ORDERS[bom]
            total = struct.unpack_from(order + "I", buf.data, buf.pos + 4)[0]
            if block_type == PCAPNG_SHB and (total < 28 or total > MAX_BLOCK or total % 4):
                raise CaptureError(f"{self.path}: corrupt pcapng section header")
            if total < 12 or total % 4 or total > MAX_BLOCK:
                raise CaptureError(f"{self.path}: corrupt pcapng block after frame {self.frames}; stopped reading")
            if not buf.need(total):
                self.skipped[FILE_TRUNCATED_RECORD] += 1
                return
            body = bytes(buf.data[buf.pos + 8 : buf.pos + total])
            buf.pos += total
            if block_type == PCAPNG_SHB:
                interfaces = []
            elif block_type == PCAPNG_IDB:
                interfaces.append(_interface(body, order))
                self.linktypes.add(interfaces[-1][0])
            else:
                frame = self._odd_packet(block_type, body, order, interfaces, skimmer, base)
                if frame is not None and skimmer.worker == 0:  # the skim could not place it
                    yield [frame], frame[0], _NO_DROPS
                continue
            packed = b"".join(INTERFACE.pack(*interface) for interface in interfaces)

    def _odd_packet(
        self, block_type: int, body: bytes, order: str, interfaces: list[tuple[int, float, int]],
        skimmer: Skimmer, base: int,
    ) -> Frame | None:
        """A packet block the skimmer left to Python (an obsolete Packet Block, a Simple
        Packet Block, an EPB with an unknown interface or bad lengths), or None."""
        if block_type == PCAPNG_EPB or block_type == PCAPNG_PB:
            if len(body) < 24:
                self.skipped[FILE_BAD_BLOCK] += 1
                return None
            if block_type == PCAPNG_EPB:
                iface, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", body, 0)
            else:
                iface, _, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", body, 0)
            serial = skimmer.next_serial()
            self.frames += 1
            if iface >= len(interfaces):
                self.skipped[FILE_UNKNOWN_INTERFACE] += 1
            elif caplen > len(body) - 24:
                self.skipped[FILE_BAD_BLOCK] += 1
            else:
                linktype, tick, offset = interfaces[iface]
                ts = ((ts_high << 32) | ts_low) * tick + offset
                self._span(ts)
                return ts, linktype, body[20 : 20 + caplen], serial - base, 0
        elif block_type == PCAPNG_SPB:
            serial = skimmer.next_serial()
            self.frames += 1
            if not interfaces:
                self.skipped[FILE_UNKNOWN_INTERFACE] += 1
            else:
                orig = struct.unpack_from(order + "I", body, 0)[0] if len(body) >= 4 else 0
                # SPBs carry no timestamp; 0 tells the operator it is unknown.
                return 0.0, interfaces[0][0], body[4 : 4 + min(orig, len(body) - 8)], serial - base, 0
        return None


class _Window:
    """A growable buffer over a file: the bytes in ``data[pos:end]`` are not walked yet."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.data = bytearray(CHUNK)
        self.pos = 0
        self.end = 0

    def fill(self) -> bool:
        """Move the unwalked bytes to the front and read more; False at the end of the file.
        A buffer that is all one unwalked record grows (records are bounded by MAX_BLOCK)."""
        if self.pos:
            self.data[: self.end - self.pos] = self.data[self.pos : self.end]
            self.end -= self.pos
            self.pos = 0
        if self.end == len(self.data):
            self.data.extend(bytes(len(self.data)))
        try:
            n = self._file.readinto(memoryview(self.data)[self.end :])
        except zlib.error as exc:
            # GzipFile reports damaged deflate data with the decompressor's own exception,
            # not an OSError like every other bad gzip file: the callers catch only those.
            raise gzip.BadGzipFile(f"corrupt gzip data ({exc})") from None
        self.end += n or 0
        return bool(n)

    def need(self, n: int) -> bool:
        """Whether ``n`` unwalked bytes are (or could be read into) the buffer."""
        while self.end - self.pos < n:
            if not self.fill():
                return False
        return True


def _interface(body: bytes, order: str) -> tuple[int, float, int]:
    """Link type, timestamp tick (seconds) and offset of an Interface Description Block."""
    if len(body) < 12:
        return 0xFFFF, 1e-6, 0
    linktype = struct.unpack_from(order + "H", body, 0)[0]
    tick, offset = 1e-6, 0
    pos, end = 8, len(body) - 4
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == 0 or pos + 4 + length > end:  # end of options, or one that overruns the block
            break
        value = body[pos + 4 : pos + 4 + length]
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
