"""Bounded reassembly of the first bytes of TCP streams: the sensor's only TCP state.

Names in TCP (a TLS ClientHello, an HTTP request head, DNS messages) sit in the first
few kilobytes a client sends, but a capture shows them as segments that may be split
anywhere, reordered, retransmitted or overlapping. ``FlightTable`` turns the segments of
one direction of a flow back into the contiguous bytes from the stream start, so the
sans-IO parsers can be run over them until they say DONE or NOT_*; the caller then
calls ``finish`` and every later segment of that flow is dropped after a dict lookup.

Everything is bounded and counted: at most ``max_flows`` flows (least recently used
evicted), at most ``max_bytes`` buffered per flow (more ends the flow), at most
``MAX_PENDING`` out-of-order pieces per flow, ``timeout`` seconds of idleness, and a
remembered set of finished keys no larger than ``max_flows``.

Overlapping bytes keep the first copy that arrived, as most stacks do, so a client
cannot show the sensor one name and the server another by re-sending different bytes
for the same sequence numbers (Ptacek and Newsham's classic IDS evasion).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

_MASK = 0xFFFFFFFF
_HALF = 1 << 31
#: Out-of-order pieces kept per flow. A real first flight has a handful of segments;
#: the cap keeps the per-insert hole bookkeeping (linear in pieces) cheap against
#: segment floods, and a flow past it ends as an overflow.
MAX_PENDING = 64

# What _place did with one segment (bit flags).
_GREW = 1  # the contiguous prefix got longer
_AHEAD = 2  # bytes stored beyond a hole
_OLD = 4  # nothing new: all of it was already held or consumed
_BEYOND = 8  # starts at or past the window's end: dropped


@dataclass(slots=True)
class FlightCounters:
    """Plain integers the metrics sink reads at scrape time (no per-packet library calls)."""

    flows_created: int = 0
    evicted_full: int = 0  # least recently used flow dropped because max_flows was reached
    expired: int = 0  # idle longer than timeout
    overflow: int = 0  # ended because the stream needs more than max_bytes (or MAX_PENDING)
    finished: int = 0  # ended by the caller's finish()
    out_of_order: int = 0  # segments stored ahead of a hole
    retransmitted: int = 0  # segments that brought no new bytes
    beyond_window: int = 0  # segments starting max_bytes or more past the head, dropped
    ignored_finished: int = 0  # segments of finished flows
    restarted: int = 0  # finished flows tracked again for a later message (keep-alive, STARTTLS)


class _Flow:
    """One direction of one flow: the contiguous bytes and the pieces after a hole."""

    __slots__ = ("start", "syn", "head", "buf", "pending", "clipped", "ts", "again", "answered")

    def __init__(self, start: int, syn: bool, ts: float) -> None:
        self.start = start  # sequence number of stream byte 0
        self.syn = syn  # start is ISN+1 from a SYN (else the lowest sequence seen)
        self.head = 0  # stream offset of buf[0]: bytes consumed so far
        self.buf = b""  # contiguous bytes from head
        self.pending: dict[int, bytes] = {}  # disjoint pieces past the end of buf, by offset
        self.clipped = False  # a segment covered the window's end: the stream is longer
        self.ts = ts
        self.again = False  # a later message of a connection read before (``restart``)
        self.answered = False  # the server's SYN-ACK was seen (``answer``)


class FlightTable:
    """First-flight reassembly for many flows, keyed by the caller (4-tuple + direction)."""

    def __init__(
        self, max_flows: int = 65536, max_bytes: int = 16384, timeout: float = 30.0,
        on_forget: Callable[[Hashable], None] | None = None,
    ) -> None:
        """``on_forget`` hears of every flow dropped without the caller asking (evicted
        for room, expired); the caller knows of the rest (``finish``, ``tracking``)."""
        if max_flows < 1 or max_bytes < 1 or timeout <= 0:
            raise ValueError("max_flows, max_bytes and timeout must be positive")
        self.on_forget = on_forget
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.counters = FlightCounters()
        # Both in least-recently-used order, so eviction and expiry pop from the front.
        self._flows: OrderedDict[Hashable, _Flow] = OrderedDict()
        # Finished key -> (its stream start if a SYN fixed it, else None; the sequence
        # number just past the bytes it held). The start tells a retransmitted SYN from a
        # new connection reusing the 4-tuple; the end, a later message from a retransmission.
        self._finished: OrderedDict[Hashable, tuple[int | None, int | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def tracking(self, key: Hashable) -> bool:
        """Whether the flow is being reassembled (lets a caller skim before feeding)."""
        return key in self._flows

    def restarted(self, key: Hashable) -> bool:
        """Whether the flow being reassembled is a later message of a connection whose
        first one was read (its outcome is that connection's, already counted)."""
        flow = self._flows.get(key)
        return flow is not None and flow.again

    def answer(self, key: Hashable) -> None:
        """The server answered the flow's SYN (its SYN-ACK was seen): the tap sees both ways."""
        flow = self._flows.get(key)
        if flow is not None:
            flow.answered = True

    def one_way(self, key: Hashable) -> bool:
        """Whether the flow began with a SYN that no SYN-ACK answered: the tap saw the client's
        side only (asymmetric routing, a one-way SPAN). Unknown, so False, without the SYN."""
        flow = self._flows.get(key)
        return flow is not None and flow.syn and not flow.answered and not flow.again

    def finished(self, key: Hashable) -> bool:
        """Whether the key is remembered as finished (its segments would be ignored)."""
        return key in self._finished

    def feed(
        self, key: Hashable, ts: float, seq: int, syn: bool, payload: bytes | memoryview
    ) -> bytes | None:
        """Add one segment; return the contiguous bytes from the head if it added some.

        The stream starts at ISN+1 when the SYN was seen (feed SYNs too, even without
        payload; a SYN's payload, as in TCP Fast Open, starts at ISN+1). Without a SYN
        (capture started mid-connection) it starts at the lowest sequence number seen,
        and a lower one arriving before anything was consumed moves it back by up to
        max_bytes, the returned bytes then restarting from the new start. Sequence
        numbers wrap at 2**32. When the stream needs more than max_bytes past the head
        the flow ends as an overflow; the bytes this segment completed are still returned.
        """
        flow = self._flows.get(key)
        if flow is not None and not syn:
            self._flows.move_to_end(key)
            flow.ts = ts
            n = len(payload)
            if not n:
                return None
            # Fast path: the next in-order segment, nothing pending, room left.
            if (
                (seq - flow.start) & _MASK == flow.head + len(flow.buf)
                and not flow.pending
                and len(flow.buf) + n <= self.max_bytes
            ):
                flow.buf += payload
                return flow.buf
            off = _signed(seq - flow.start)
            if off < 0 and not flow.syn and flow.head == 0 and -off <= self.max_bytes:
                self._rebase(flow, seq & _MASK)
                off = 0
            return self._data(key, flow, off, payload)
        if syn:
            return self._syn(key, flow, ts, (seq + 1) & _MASK, payload)
        if not len(payload):
            return None
        if key in self._finished:
            self._finished.move_to_end(key)
            self.counters.ignored_finished += 1
            return None
        flow = self._create(key, seq & _MASK, False, ts)
        return self._data(key, flow, 0, payload)

    def consume(self, key: Hashable, n: int) -> None:
        """Drop n bytes from the head of a flow (a caller reading message after message).

        A key not tracked (finished, evicted, expired) is ignored: the flow may have
        ended in the very feed() that returned the bytes being consumed.
        """
        flow = self._flows.get(key)
        if flow is None:
            return
        if not 0 <= n <= len(flow.buf):
            raise ValueError(f"cannot consume {n} of {len(flow.buf)} buffered bytes")
        flow.buf = flow.buf[n:]
        flow.head += n
        flow.clipped = False  # the window moved; only a new segment can prove it short

    def finish(self, key: Hashable) -> None:
        """Stop tracking a flow; later segments of that key are ignored cheaply.

        Finished keys are remembered in least-recently-seen order, at most max_flows of
        them (a forgotten one is tracked afresh, mid-stream, if it sends again). A SYN
        with a different ISN on a remembered key is a new connection and is tracked.
        """
        flow = self._flows.pop(key, None)
        if flow is not None:
            self.counters.finished += 1
        self._remember(key, flow)

    def restart(self, key: Hashable, ts: float, seq: int) -> bool:
        """Track a finished flow again from ``seq``, where the caller saw a new message
        start (the next request on a keep-alive connection, a ClientHello after STARTTLS
        or a proxy's CONNECT). Refused (False) for a segment that does not lie past the
        bytes the flow already gave: that is a retransmission, not a new message.
        """
        done = self._finished.get(key)
        if done is None or (done[1] is not None and _signed(seq - done[1]) < 0):
            return False
        del self._finished[key]
        self._create(key, seq & _MASK, True, ts).again = True
        self.counters.restarted += 1
        return True

    def expire(self, now: float) -> None:
        """Drop flows idle for more than timeout seconds.

        Flows are kept in the order they were last fed, which is time order as long as
        timestamps are; with out-of-order timestamps (merged captures) a stale flow
        behind a fresher one waits for a later call or for eviction.
        """
        flows = self._flows
        limit = now - self.timeout
        while flows:
            key = next(iter(flows))
            if flows[key].ts >= limit:
                break
            del flows[key]
            self.counters.expired += 1
            if self.on_forget is not None:
                self.on_forget(key)

    # -- internals -------------------------------------------------------------

    def _syn(
        self, key: Hashable, flow: _Flow | None, ts: float, start: int, payload: bytes | memoryview
    ) -> bytes | None:
        """A SYN: fix the stream start, or recognise a new connection on the same key."""
        if flow is None:
            if key in self._finished:
                if self._finished[key][0] == start:  # retransmitted SYN of a finished flow
                    self._finished.move_to_end(key)
                    self.counters.ignored_finished += 1
                    return None
                del self._finished[key]
            flow = self._create(key, start, True, ts)
        else:
            self._flows.move_to_end(key)
            flow.ts = ts
            if flow.start == start:
                flow.syn = True
            elif flow.syn or flow.head:
                # Another ISN after a SYN, or after bytes were consumed: the 4-tuple is
                # being reused by a new connection, whose state starts from scratch.
                del self._flows[key]
                flow = self._create(key, start, True, ts)
            else:  # the SYN arrived after data: the guessed start was not byte 0
                self._rebase(flow, start)
                flow.syn = True
        return self._data(key, flow, 0, payload) if len(payload) else None

    def _create(self, key: Hashable, start: int, syn: bool, ts: float) -> _Flow:
        if len(self._flows) >= self.max_flows:
            evicted, _ = self._flows.popitem(last=False)
            self.counters.evicted_full += 1
            if self.on_forget is not None:
                self.on_forget(evicted)
        flow = self._flows[key] = _Flow(start, syn, ts)
        self.counters.flows_created += 1
        return flow

    def _remember(self, key: Hashable, flow: _Flow | None) -> None:
        finished = self._finished
        if key not in finished and len(finished) >= self.max_flows:
            finished.popitem(last=False)
        if flow is not None:
            finished[key] = (flow.start if flow.syn else None, (flow.start + flow.head + len(flow.buf)) & _MASK)
        elif key not in finished:
            finished[key] = (None, None)
        finished.move_to_end(key)

    def _data(self, key: Hashable, flow: _Flow, off: int, data: bytes | memoryview) -> bytes | None:
        """Place a segment at stream offset ``off``; count; end the flow if it overflowed."""
        result = self._place(flow, off, data)
        counters = self.counters
        if result & _OLD:
            counters.retransmitted += 1
        if result & _BEYOND:
            counters.beyond_window += 1
        if result & _AHEAD:
            counters.out_of_order += 1
        grown = flow.buf if result & _GREW else None
        if (flow.clipped and len(flow.buf) >= self.max_bytes) or len(flow.pending) > MAX_PENDING:
            del self._flows[key]
            self._remember(key, flow)
            counters.overflow += 1
        return grown

    def _place(self, flow: _Flow, off: int, data: bytes | memoryview) -> int:
        """Store the new bytes of ``data`` (at stream offset ``off``); return _GREW etc.

        Only bytes inside the window [head, head + max_bytes) are kept, and only those
        not already held (in buf or in a pending piece): the first copy wins.
        """
        end = flow.head + len(flow.buf)
        limit = flow.head + self.max_bytes
        stop = off + len(data)
        if stop <= end:
            return _OLD
        if off >= limit:
            if off == limit:  # nothing fits, but it proves the stream is longer
                flow.clipped = True
            return _BEYOND
        view = memoryview(data)
        if off < end:
            view = view[end - off :]
            off = end
        if stop > limit:
            flow.clipped = True
            view = view[: limit - off]
            stop = limit
        pending = flow.pending
        result = 0
        for a, b in _holes(pending, off, stop) if pending else ((off, stop),):
            piece = bytes(view[a - off : b - off])
            if a == end:
                flow.buf += piece
                end = b
                result |= _GREW
            else:
                pending[a] = piece
                result |= _AHEAD
        if not result:
            return _OLD
        while end in pending:
            piece = pending.pop(end)
            flow.buf += piece
            end += len(piece)
        return result

    def _rebase(self, flow: _Flow, start: int) -> None:
        """Move the stream start (nothing consumed yet) and re-place what was held."""
        shift = _signed(flow.start - start)
        held = [(0, flow.buf), *flow.pending.items()]
        flow.start = start
        flow.buf = b""
        flow.pending = {}
        flow.clipped = False
        for off, data in held:
            if data:
                self._place(flow, off + shift, data)


def _signed(delta: int) -> int:
    """A sequence number difference as a signed 32-bit value (RFC 1982 style)."""
    delta &= _MASK
    return delta - (1 << 32) if delta >= _HALF else delta


def _holes(pending: dict[int, bytes], start: int, stop: int) -> list[tuple[int, int]]:
    """The parts of [start, stop) not covered by the disjoint pending pieces."""
    holes = []
    cur = start
    for a in sorted(pending):
        b = a + len(pending[a])
        if b <= cur:
            continue
        if a >= stop:
            break
        if a > cur:
            holes.append((cur, a))
        cur = b
        if cur >= stop:
            break
    if cur < stop:
        holes.append((cur, stop))
    return holes
