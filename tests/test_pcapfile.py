"""The capture reader: every pcap flavour, pcapng with mixed interfaces, gzip, stdin, damage."""

from __future__ import annotations

import gzip
import io
import random
import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from detector.sources.pcapfile import CaptureError, CaptureFile

FRAME_A = b"\x02" * 60
FRAME_B = b"\x45" + b"\x00" * 39


def pcap(records, order="<", nano=False, linktype=1) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def block(kind: int, body: bytes, order="<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", kind, total) + body + struct.pack(order + "I", total)


def idb(linktype: int, tsresol: int | None = None, order="<") -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, 65535)
    if tsresol is not None:
        body += struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\x00" * 3 + b"\x00" * 4
    return block(1, body, order)


def epb(iface: int, ticks: int, data: bytes, order="<") -> bytes:
    body = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data
    return block(6, body, order)


def shb(order="<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return block(0x0A0D0D0A, body, order)


def read(data: bytes, name="t.pcap"):
    cap = CaptureFile(name, io.BytesIO(data))
    return list(cap), cap


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(order, nano):
    frac = 123456789 if nano else 123456
    frames, cap = read(pcap([(1700000000, frac, FRAME_A), (1700000001, 0, FRAME_B)], order, nano))
    assert [(lt, data, n) for _, lt, data, n in frames] == [(1, FRAME_A, 1), (1, FRAME_B, 2)]
    assert frames[0][0] == pytest.approx(1700000000.123456789 if nano else 1700000000.123456, abs=1e-7)
    assert not cap.skipped


def test_gzip_and_truncated_last_record():
    data = pcap([(1, 0, FRAME_A), (2, 0, FRAME_B)])
    frames, cap = read(gzip.compress(data[:-10]))
    assert [n for *_, n in frames] == [1]
    assert cap.skipped == {"truncated_record": 1}


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_keep_their_own_linktype_and_clock(order):
    data = (
        shb(order)
        + idb(1, None, order)  # Ethernet, microseconds
        + idb(101, 9, order)  # raw IP, nanoseconds
        + epb(0, 1_700_000_000_500_000, FRAME_A, order)
        + epb(1, 1_700_000_000_250_000_000, FRAME_B, order)
        + block(5, b"\x00" * 8, order)  # an Interface Statistics Block is skipped
    )
    frames, cap = read(data, "t.pcapng")
    assert [(lt, d, n) for _, lt, d, n in frames] == [(1, FRAME_A, 1), (101, FRAME_B, 2)]
    assert frames[0][0] == pytest.approx(1700000000.5)
    assert frames[1][0] == pytest.approx(1700000000.25)
    assert cap.linktypes == {1, 101}


def test_pcapng_new_section_resets_interfaces():
    data = shb() + idb(1) + epb(0, 0, FRAME_A) + shb(">") + idb(101, order=">") + epb(0, 0, FRAME_B, ">")
    frames, _ = read(data)
    assert [(lt, n) for _, lt, _, n in frames] == [(1, 1), (101, 2)]


def test_pcapng_packet_on_undescribed_interface_is_counted():
    frames, cap = read(shb() + idb(1) + epb(3, 0, FRAME_A) + epb(0, 0, FRAME_B))
    assert [n for *_, n in frames] == [2]
    assert cap.skipped == {"unknown_interface": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng capture"),
        (pcap([])[:10], "truncated pcap file header"),
        (pcap([(1, 0, FRAME_A)]) + struct.pack("<IIII", 0, 0, 10**7, 10**7), "corrupt record"),
    ],
)
def test_damaged_files_give_one_line(data, message):
    with pytest.raises(CaptureError, match=message) as info:
        read(data)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="No such file"):
        CaptureFile(str(tmp_path / "nope.pcap"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_a_valid_header_never_raise_anything_else(tail):
    for head in (pcap([]), shb() + idb(1)):
        try:
            read(head + tail)
        except CaptureError:
            pass


def corrupt_gzip(head: bytes, tail: bytes) -> bytes:
    """A gzip file of two members: ``head`` intact, then ``tail`` with one byte of its
    deflate stream flipped so that zlib itself rejects it (an invalid block, code or
    distance), not just the CRC or the length."""
    packed = gzip.compress(tail, mtime=0)
    for at in range(10, len(packed) - 8):
        damaged = bytearray(packed)
        damaged[at] ^= 0xFF
        try:
            zlib.decompress(bytes(damaged), wbits=31)
        except zlib.error as exc:
            if "invalid" in str(exc):
                return (gzip.compress(head, mtime=0) if head else b"") + bytes(damaged)
    raise AssertionError("no single flipped byte breaks this deflate stream")


def frames_of(count: int) -> bytes:
    """``count`` pcap records of varied, compressible frames."""
    rng = random.Random(1)
    return b"".join(struct.pack("<IIII", i, 0, 1600, 1600) + bytes(rng.choices(b"abcdefgh", k=8)) * 200
                    for i in range(count))


def test_corrupt_gzip_data_is_a_capture_error():
    with pytest.raises(CaptureError, match="corrupt gzip data") as info:
        read(corrupt_gzip(b"", pcap([]) + frames_of(10)))
    assert "\n" not in str(info.value)


def test_corrupt_gzip_data_after_the_first_read_is_a_capture_error():
    """Damage past the first read (4 MiB), met in the walk after frames were given."""
    cap = CaptureFile("t.pcap.gz", io.BytesIO(corrupt_gzip(pcap([]) + frames_of(4000), frames_of(10))))
    with pytest.raises(CaptureError, match="read error after frame [1-9].*corrupt gzip data") as info:
        list(cap)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["replay", "names"])
def test_corrupt_gzip_capture_is_one_line_and_exit_2(tmp_path, command):
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(corrupt_gzip(b"", pcap([]) + frames_of(10)))
    result = subprocess.run([sys.executable, "-m", "detector", command, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "corrupt gzip data" in line]
    assert len(errors) == 1 and errors[0].startswith(f"tiktok-detector: {path}: cannot read: corrupt gzip data (")


def test_an_interface_option_longer_than_its_block_is_not_read_past_it():
    """An IDB whose if_tsoffset option claims 8 bytes where none remain raised struct.error out
    of the reader (found by fuzz/fuzz_pcapfile.py): the options end there, the interface
    keeps its link type, and the packets on it are read."""
    body = struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HH", 14, 8)  # the block ends before the value
    frames, _ = read(shb() + block(1, body) + epb(0, 0, FRAME_A), "t.pcapng")
    assert [(lt, d) for _, lt, d, _ in frames] == [(1, FRAME_A)]
