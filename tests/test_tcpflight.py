"""First-flight reassembly: ordering, overlaps, wraparound, bounds, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.extract.tcpflight import MAX_PENDING, FlightCounters, FlightTable

K = ("192.0.2.10", 51000, "198.51.100.1", 443)
ISN = 1000


def syn_table(**kwargs) -> FlightTable:
    table = FlightTable(**kwargs)
    assert table.feed(K, 0.0, ISN, True, b"") is None
    return table


def test_in_order_segments_grow_the_prefix() -> None:
    table = syn_table()
    assert table.feed(K, 0.1, ISN + 1, False, b"hello ") == b"hello "
    assert table.feed(K, 0.2, ISN + 7, False, memoryview(b"world")) == b"hello world"
    assert len(table) == 1 and table.counters.flows_created == 1


def test_out_of_order_and_holes() -> None:
    table = syn_table()
    assert table.feed(K, 0.1, ISN + 7, False, b"world") is None
    assert table.feed(K, 0.1, ISN + 13, False, b"!") is None
    assert table.feed(K, 0.2, ISN + 1, False, b"hello ") == b"hello world"
    assert table.feed(K, 0.2, ISN + 12, False, b"?") == b"hello world?!"
    assert table.counters.out_of_order == 2


def test_retransmissions_bring_nothing() -> None:
    table = syn_table()
    table.feed(K, 0.1, ISN + 1, False, b"abcdef")
    assert table.feed(K, 0.2, ISN + 1, False, b"abcdef") is None
    assert table.feed(K, 0.2, ISN + 3, False, b"cd") is None
    assert table.feed(K, 0.2, ISN, False, b"\x00ab") is None  # before the start
    assert table.counters.retransmitted == 3
    table.feed(K, 0.3, ISN + 20, False, b"xyz")
    assert table.feed(K, 0.3, ISN + 20, False, b"xyz") is None  # duplicate of a pending piece
    assert table.counters.retransmitted == 4


def test_overlaps_keep_the_first_copy() -> None:
    table = syn_table()
    table.feed(K, 0.1, ISN + 1, False, b"GET / HTTP/1.1\r\nHost: ")
    # An overlapping segment that disagrees with bytes already held loses...
    assert table.feed(K, 0.2, ISN + 17, False, b"XXXXXXtiktok") == b"GET / HTTP/1.1\r\nHost: tiktok"
    # ...and so does one that disagrees with a piece held beyond a hole.
    assert table.feed(K, 0.3, ISN + 30, False, b"com") is None  # offsets 29-31, hole at 28
    got = table.feed(K, 0.3, ISN + 29, False, b".evil")  # fills 28, loses 29-31, adds 32
    assert got == b"GET / HTTP/1.1\r\nHost: tiktok.coml"


def test_sequence_wraparound() -> None:
    table = FlightTable()
    isn = 2**32 - 3
    table.feed(K, 0.0, isn, True, b"")
    assert table.feed(K, 0.1, 2**32 - 2, False, b"ab") == b"ab"
    assert table.feed(K, 0.1, 3, False, b"FG") is None  # after the wrap, ahead of a hole
    assert table.feed(K, 0.2, 0, False, b"cdef") == b"abcdeFG"  # its f overlaps F: first copy


def test_syn_at_the_top_of_the_sequence_space() -> None:
    table = FlightTable()
    table.feed(K, 0.0, 2**32 - 1, True, b"")
    assert table.feed(K, 0.1, 0, False, b"first") == b"first"


def test_fast_open_syn_payload_starts_at_isn_plus_one() -> None:
    table = FlightTable()
    assert table.feed(K, 0.0, ISN, True, b"\x16\x03") == b"\x16\x03"
    assert table.feed(K, 0.1, ISN + 3, False, b"\x01") == b"\x16\x03\x01"
    assert table.feed(K, 0.1, ISN, True, b"\x16\x03") is None  # retransmitted SYN
    assert table.counters.flows_created == 1


def test_without_syn_the_lowest_sequence_is_the_start() -> None:
    table = FlightTable()
    assert table.feed(K, 0.0, 5000, False, b"world") == b"world"
    # An earlier segment before anything was consumed moves the start back.
    assert table.feed(K, 0.1, 4994, False, b"hello ") == b"hello world"
    assert table.feed(K, 0.2, 4990, False, b"Oh, ") == b"Oh, hello world"
    # A start further back than max_bytes is not believed.
    assert table.feed(K, 0.3, 4990 - 20000, False, b"x") is None
    assert table.counters.flows_created == 1


def test_start_moves_back_over_a_gap() -> None:
    table = FlightTable()
    table.feed(K, 0.0, 5000, False, b"world")
    assert table.feed(K, 0.1, 4990, False, b"hello") == b"hello"
    assert table.feed(K, 0.1, 4995, False, b"-----") == b"hello-----world"


def test_no_move_back_after_consume() -> None:
    table = FlightTable()
    table.feed(K, 0.0, 5000, False, b"abcd")
    table.consume(K, 2)
    assert table.feed(K, 0.1, 4990, False, b"0123456789") is None
    assert table.feed(K, 0.1, 5004, False, b"e") == b"cde"


def test_late_syn_rebases_a_syn_less_flow() -> None:
    table = FlightTable()
    assert table.feed(K, 0.0, ISN + 4, False, b"def") == b"def"
    assert table.feed(K, 0.0, ISN, True, b"") is None  # the SYN says byte 0 is ISN+1
    assert table.feed(K, 0.1, ISN + 1, False, b"abc") == b"abcdef"


def test_new_isn_on_the_same_key_is_a_new_connection() -> None:
    table = syn_table()
    table.feed(K, 0.1, ISN + 1, False, b"old")
    table.feed(K, 5.0, 777, True, b"")
    assert table.feed(K, 5.1, 778, False, b"new") == b"new"
    assert table.counters.flows_created == 2 and len(table) == 1


def test_consume_reads_message_after_message() -> None:
    table = syn_table()
    table.feed(K, 0.1, ISN + 1, False, b"\x00\x02ab\x00\x03c")
    table.consume(K, 4)
    assert table.feed(K, 0.2, ISN + 8, False, b"de") == b"\x00\x03cde"
    with pytest.raises(ValueError):
        table.consume(K, 6)
    with pytest.raises(ValueError):
        table.consume(K, -1)
    table.consume(("unknown",), 10)  # untracked: nothing to do


def test_consume_frees_room_under_the_byte_cap() -> None:
    table = syn_table(max_bytes=8)
    table.feed(K, 0.1, ISN + 1, False, b"12345678")
    table.consume(K, 8)
    assert table.feed(K, 0.2, ISN + 9, False, b"abcdefgh") == b"abcdefgh"
    assert table.counters.overflow == 0


def test_finished_keys_are_ignored() -> None:
    table = syn_table()
    table.feed(K, 0.1, ISN + 1, False, b"abc")
    assert table.tracking(K) and not table.finished(K)
    table.finish(K)
    assert len(table) == 0 and table.counters.finished == 1
    assert not table.tracking(K) and table.finished(K)
    assert table.feed(K, 0.2, ISN + 4, False, b"def") is None
    assert table.feed(K, 0.2, ISN, True, b"") is None  # its own SYN, retransmitted
    assert table.counters.ignored_finished == 2 and len(table) == 0
    # A SYN with another ISN is a new connection on a reused 4-tuple.
    table.feed(K, 9.0, 5555, True, b"")
    assert table.feed(K, 9.1, 5556, False, b"again") == b"again"


def test_finish_of_a_syn_less_flow_ignores_later_syns_only_if_new() -> None:
    table = FlightTable()
    table.feed(K, 0.0, 5000, False, b"bulk")
    table.finish(K)
    assert table.feed(K, 0.1, 5004, False, b"more") is None
    table.feed(K, 1.0, 42, True, b"")  # any SYN after a mid-stream flow is a new one
    assert len(table) == 1


def test_finished_memory_is_bounded() -> None:
    table = FlightTable(max_flows=4)
    for i in range(10):
        table.feed(i, 0.0, 1, True, b"")
        table.finish(i)
    assert len(table._finished) == 4
    assert table.feed(0, 0.1, 2, False, b"x") == b"x"  # forgotten: tracked afresh (mid-stream)
    assert table.feed(9, 0.1, 2, False, b"x") is None  # remembered


def test_max_flows_evicts_the_least_recently_used() -> None:
    table = FlightTable(max_flows=3)
    for i in range(3):
        table.feed(i, float(i), 100, True, b"")
    table.feed(0, 3.0, 101, False, b"a")  # 0 is now the most recent
    table.feed(3, 4.0, 100, True, b"")
    assert len(table) == 3 and table.counters.evicted_full == 1
    assert table.feed(0, 5.0, 102, False, b"b") == b"ab"  # kept
    assert table.feed(1, 5.0, 101, False, b"z") == b"z"  # evicted, recreated without SYN
    assert table.counters.evicted_full == 2


def test_byte_cap_in_order_returns_what_fits_then_ends_the_flow() -> None:
    table = syn_table(max_bytes=10)
    assert table.feed(K, 0.1, ISN + 1, False, b"0123456") == b"0123456"
    assert table.feed(K, 0.2, ISN + 8, False, b"789abc") == b"0123456789"
    assert table.counters.overflow == 1 and len(table) == 0
    assert table.feed(K, 0.3, ISN + 14, False, b"d") is None  # finished
    assert table.counters.ignored_finished == 1


def test_byte_cap_exactly_full_ends_on_the_next_byte() -> None:
    table = syn_table(max_bytes=4)
    assert table.feed(K, 0.1, ISN + 1, False, b"abcd") == b"abcd"
    assert len(table) == 1
    assert table.feed(K, 0.2, ISN + 5, False, b"e") is None
    assert table.counters.overflow == 1 and len(table) == 0


def test_far_segments_are_dropped_without_ending_the_flow() -> None:
    table = syn_table(max_bytes=100)
    assert table.feed(K, 0.1, ISN + 1 + 10**6, False, b"junk") is None
    assert table.counters.beyond_window == 1 and len(table) == 1
    assert table.feed(K, 0.2, ISN + 1, False, b"real") == b"real"


def test_straddling_piece_is_clipped_and_ends_the_flow_once_full() -> None:
    table = syn_table(max_bytes=10)
    assert table.feed(K, 0.1, ISN + 6, False, b"FGHIJKLMN") is None  # past the window end
    assert len(table) == 1
    assert table.feed(K, 0.2, ISN + 1, False, b"abcde") == b"abcdeFGHIJ"
    assert table.counters.overflow == 1 and len(table) == 0


def test_too_many_holes_is_an_overflow() -> None:
    table = syn_table()
    for i in range(MAX_PENDING):
        table.feed(K, 0.1, ISN + 3 + 2 * i, False, b"x")
    assert len(table) == 1
    table.feed(K, 0.1, ISN + 3 + 2 * MAX_PENDING, False, b"x")
    assert len(table) == 0 and table.counters.overflow == 1


def test_expiry() -> None:
    table = FlightTable(timeout=30.0)
    table.feed("a", 0.0, 1, True, b"")
    table.feed("b", 10.0, 1, True, b"")
    table.feed("a", 20.0, 2, False, b"x")  # keeps "a" alive
    table.expire(39.0)
    assert len(table) == 2
    table.expire(45.0)  # "b" idle 35 s
    assert len(table) == 1 and table.counters.expired == 1
    assert table.feed("a", 46.0, 3, False, b"y") == b"xy"
    table.expire(1000.0)
    assert len(table) == 0 and table.counters.expired == 2


def test_empty_payload_without_syn_creates_nothing() -> None:
    table = FlightTable()
    assert table.feed(K, 0.0, 1, False, b"") is None
    assert len(table) == 0 and table.counters == FlightCounters()


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        FlightTable(max_flows=0)
    with pytest.raises(ValueError):
        FlightTable(max_bytes=0)


# -- properties ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_segmentation_reassembles_the_stream(data: st.DataObject) -> None:
    stream = data.draw(st.binary(min_size=1, max_size=3000))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=20))))
    bounds = [0, *[c for c in cuts if c < len(stream)], len(stream)]
    segments = [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:])]
    # Retransmissions, including ones that straddle the original segment boundaries.
    spans = st.tuples(st.integers(0, len(stream) - 1), st.integers(1, 400))
    segments += [(a, stream[a : a + n]) for a, n in data.draw(st.lists(spans, max_size=6))]
    order = data.draw(st.permutations(segments))
    isn = data.draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 4000, 2**32 - 1)))

    table = FlightTable(max_bytes=4096)
    table.feed(K, 0.0, isn, True, b"")
    last = b""
    for offset, chunk in order:
        got = table.feed(K, 0.1, (isn + 1 + offset) % 2**32, False, chunk)
        if got is not None:
            assert len(got) > len(last) and stream.startswith(got)
            last = got
    assert last == stream


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 5),  # key
            st.integers(0, 2**32 - 1),  # seq
            st.booleans(),  # syn
            st.binary(max_size=40),
            st.sampled_from(["feed", "feed", "feed", "consume", "finish", "expire"]),
        ),
        max_size=80,
    )
)
def test_random_operations_stay_bounded(ops) -> None:
    table = FlightTable(max_flows=3, max_bytes=64, timeout=5.0)
    for i, (key, seq, syn, payload, op) in enumerate(ops):
        if op == "feed":
            got = table.feed(key, i * 0.5, seq if i % 2 else seq % 128, syn, payload)
            assert got is None or 0 < len(got) <= 64
        elif op == "consume":
            table.consume(key, 0)
        elif op == "finish":
            table.finish(key)
        else:
            table.expire(i * 0.5)
        assert len(table) <= 3 and len(table._finished) <= 3
        for flow in table._flows.values():
            assert len(flow.buf) + sum(map(len, flow.pending.values())) <= 64


def test_restart_tracks_a_later_message_but_not_a_retransmission() -> None:
    table = FlightTable()
    key = ("c", 1, "s", 80)
    table.feed(key, 0.0, 999, True, b"")
    assert table.feed(key, 0.1, 1000, False, b"GET / HTTP/1.1\r\n\r\n") is not None
    table.finish(key)
    assert table.finished(key)
    assert not table.restart(key, 0.2, 1000)  # the first request again: a retransmission
    assert table.restart(key, 0.3, 1018)  # the next request on the keep-alive connection
    assert table.tracking(key) and not table.finished(key)
    assert table.feed(key, 0.3, 1018, False, b"GET /2 HTTP/1.1\r\n") == b"GET /2 HTTP/1.1\r\n"
    assert table.counters.restarted == 1
    assert not table.restart(("never", 0, "seen", 0), 0.4, 5)
