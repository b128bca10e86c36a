"""Fuzz the TCP first-flight table: segments, finish, restart, consume and expiry, mixed.

Run alone: ``.venv/bin/python fuzz/fuzz_tcpflight.py fuzz/corpus/tcpflight -dict=fuzz/dicts/tcpflight.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only tcpflight``).

The input is a program read with ``atheris.FuzzedDataProvider``: the table's bounds (a few
flows, a few bytes, so eviction, overflow and the pending cap all run), then up to
``MAX_STEPS`` steps, each a segment of one of four flows (sequence numbers next to the
flow's last one, anywhere, or around the 2**32 wrap; SYN, FIN, RST and ACK flags; a
payload of some length; a clock that moves on and sometimes back) fed as the pipeline
feeds it, or a call of ``finish``, ``restart`` or ``expire`` as the pipeline makes them.

What counts as a finding: any exception; more flows or remembered finished keys than the
bound; a flow holding more than ``max_bytes`` or more than ``MAX_PENDING`` pieces; bytes
returned that are not ``bytes`` within ``max_bytes``; ``consume`` refusing a count the
returned bytes allow; a flow reported forgotten that is still tracked.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.extract.tcpflight import MAX_PENDING, FlightTable

MAX_STEPS = 32
KEYS = 4
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
#: What a step does, by its first byte modulo the length (segments most often).
SEGMENT, FINISH, RESTART, EXPIRE = range(4)
STEPS = (SEGMENT,) * 5 + (FINISH, RESTART, EXPIRE)


def _seq(fdp: atheris.FuzzedDataProvider, last: int) -> int:
    """A sequence number next to the flow's last one, anywhere, or around the wrap."""
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        return (last + fdp.ConsumeIntInRange(-80, 80)) & 0xFFFFFFFF
    if how == 1:
        return fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
    if how == 2:
        return (fdp.ConsumeIntInRange(-64, 64)) & 0xFFFFFFFF
    return (last + fdp.ConsumeIntInRange(-(1 << 31), 1 << 31)) & 0xFFFFFFFF


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_flows = fdp.ConsumeIntInRange(1, 3)
    max_bytes = fdp.ConsumeIntInRange(1, 96)
    timeout = float(fdp.ConsumeIntInRange(1, 30))

    def forgotten(key: object) -> None:
        assert not table.tracking(key), f"{key} forgotten but tracked"

    table = FlightTable(max_flows, max_bytes, timeout, forgotten)
    last = [0] * KEYS
    ts = 0.0
    for _ in range(MAX_STEPS):
        if not fdp.remaining_bytes():
            break
        step = STEPS[fdp.ConsumeIntInRange(0, len(STEPS) - 1)]
        key = fdp.ConsumeIntInRange(0, KEYS - 1)
        ts = max(0.0, ts + fdp.ConsumeIntInRange(-5, 40) / 4)
        if step == SEGMENT:
            seq = last[key] = _seq(fdp, last[key])
            flags = fdp.ConsumeIntInRange(0, 0x1F) & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK)
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2 * max_bytes))
            _segment(table, key, ts, seq, flags, payload, fdp)
        elif step == FINISH:
            table.finish(key)
            assert not table.tracking(key) and table.finished(key)
        elif step == RESTART:
            if table.finished(key) and not table.tracking(key):
                table.restart(key, ts, _seq(fdp, last[key]))
        else:
            table.expire(ts)
        _check(table)


def _segment(
    table: FlightTable, key: int, ts: float, seq: int, flags: int, payload: bytes,
    fdp: atheris.FuzzedDataProvider,
) -> None:
    """One segment as the pipeline's ``_segment`` feeds it, then what it does with the bytes."""
    if flags & TCP_SYN:
        # Also a SYN's own payload (TCP Fast Open), which the pipeline does not feed.
        stream = table.feed(key, ts, seq, True, payload if fdp.ConsumeBool() else b"")
    elif payload:
        stream = table.feed(key, ts, seq, False, payload)
    else:
        return
    if stream is None:
        return
    assert type(stream) is bytes and 0 < len(stream) <= table.max_bytes, stream
    what = fdp.ConsumeIntInRange(0, 2)
    if what == 1:  # a parser read whole messages (DNS over TCP): drop them
        table.consume(key, fdp.ConsumeIntInRange(0, len(stream)))
    elif what == 2:  # a parser is done with the flow
        table.finish(key)


def _check(table: FlightTable) -> None:
    """The table's documented bounds."""
    assert len(table) <= table.max_flows, (len(table), table.max_flows)
    assert len(table._finished) <= table.max_flows, len(table._finished)
    for flow in table._flows.values():
        held = len(flow.buf) + sum(len(piece) for piece in flow.pending.values())
        assert held <= table.max_bytes, (held, table.max_bytes)
        assert len(flow.pending) <= MAX_PENDING, len(flow.pending)


def seeds() -> Iterator[bytes]:
    """Programs of real first flights: the TCP payloads of the seed captures, four flows
    at a time, each a SYN then its payload in order, with the widest bounds."""
    from seeds import packets, unique

    payloads = [p.payload for p in packets() if p.l4 == 6 and p.payload]

    def program(chunk: list[bytes]) -> bytes:
        # FuzzedDataProvider takes integers from the end of the input, bytes and booleans
        # from the front.
        ints, front = [2, 95, 29], bytearray()  # max_flows 3, max_bytes 96, timeout 30 s
        for key, payload in enumerate(chunk):
            piece = payload[: 2 * 96]
            # SYN at seq 0 (step, key, clock +0, seq "near 0" + 64, flags, length 0; no TFO)...
            ints += [0, key, 5, 2, 64, TCP_SYN, 0]
            front += b"\x00"
            # ...then the payload at seq 1 (seq "next to the last" + 81), and no parser verdict.
            ints += [0, key, 9, 0, 81, TCP_ACK, len(piece), 0]
            front += piece
        return bytes(front) + bytes(reversed(ints))

    return iter(unique(program(payloads[i : i + KEYS]) for i in range(0, len(payloads), KEYS)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
