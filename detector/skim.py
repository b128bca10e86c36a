"""The skim: keep the few frames worth decoding, drop the bulk after a few byte checks.

The work is in C (``detector/skim_c/``, whose ``skim.h`` states the contract); this
module gives it its configuration and names what it hands back. A walk over a capture
buffer (or a live capture's batch) returns the frames the Python pipeline must read,
packed as ``KEPT`` records, and counts what it dropped under the pipeline's own stats
keys (``DROP_KEYS``), so the summary and the metrics read the same with the skim as
without it. Given the signature keys, it also drops DNS messages over UDP none of whose
names can match, counting their names as Python would, and marks a TCP segment that holds
a whole ClientHello with a server name that can match nothing (``HINT_UNWANTED_HELLO``):
Python keeps its flight table in step and counts the name without parsing the hello.
"""

from __future__ import annotations

import secrets
import struct

from collections import Counter
from collections.abc import Iterable, Mapping

from detector.counters import (
    BYTES, PACKETS, PARSE_ERROR_DNS, PARSE_ERROR_DNS_PARTIAL, SKIM_TABLE_FULL, SKIM_TCP, SKIM_UDP,
    SKIP_OTHER_TRANSPORT, SKIP_QUIC_SERVER_LONG_HEADER, observation_key,
)
from detector.decode import DEFAULT_TUNNELS
from detector._skim import BLOCK, CORRUPT, END, FULL, HINT_UNWANTED_HELLO, MAX_BLOCK, MAX_RECORD, TICK, Skimmer
from detector.extract.http import METHODS

__all__ = [
    "BLOCK", "CORRUPT", "DROP_KEYS", "END", "FULL", "HINT_UNWANTED_HELLO", "KEPT", "MAX_BLOCK", "MAX_RECORD", "TICK",
    "FRAME", "REQUEST_STARTS", "Skimmer", "count_drops", "new_skimmer", "set_names",
]

#: One kept frame: (serial, ts, offset in the buffer, caplen, linktype, hint).
KEPT = struct.Struct("=QdQIII4x")
#: What a walk's ``drops`` tuple counts, as keys of the pipeline's stats.
DROP_KEYS = (PACKETS, BYTES, SKIM_UDP, SKIM_TCP, SKIP_QUIC_SERVER_LONG_HEADER, SKIM_TABLE_FULL, SKIP_OTHER_TRANSPORT,
             observation_key("dns-query"), observation_key("dns-answer"), PARSE_ERROR_DNS, PARSE_ERROR_DNS_PARTIAL)
#: One frame of a live capture's batch, as pcapy's next_batch describes it.
FRAME = struct.Struct("=IIII")
#: How an HTTP request starts (a method and a space): such a segment starts a flight.
REQUEST_STARTS = tuple(m + b" " for m in METHODS)


def new_skimmer(
    dns_ports: frozenset[int], quic_ports: frozenset[int], max_flows: int, keep_all: bool = False,
    worker: int = 0, workers: int = 1, names: Iterable[str] | None = None,
    tunnels: Mapping[int, int] = DEFAULT_TUNNELS,
) -> Skimmer:
    """A skimmer for the pipeline's ports and flight-table size; ``keep_all`` walks the
    records without dropping any (the reference the skim is tested against). With
    ``workers`` > 1 it keeps only the frames of worker ``worker``'s share of the flows
    (both directions of a flow in one share; frames it cannot place in worker 0's).
    ``names``: the signature keys to triage DNS by (``set_names``); None keeps every
    DNS message for Python (every name is wanted). ``tunnels``: the UDP ports that open a
    tunnel, as the decoder has them (``decode.udp_tunnels``)."""
    skimmer = Skimmer(dns_ports, quic_ports, REQUEST_STARTS, max_flows, secrets.randbits(64), keep_all, worker,
                      workers)
    for port, kind in tunnels.items():
        skimmer.set_tunnel_port(port, kind)
    if names is not None and not keep_all:
        set_names(skimmer, names)
    return skimmer


def count_drops(stats: Counter[str], drops: tuple[int, ...]) -> None:
    """Add what one walk dropped (its ``drops``, in ``DROP_KEYS`` order) to the pipeline's stats."""
    for key, count in zip(DROP_KEYS, drops):
        if count:
            stats[key] += count


def set_names(skimmer: Skimmer, names: Iterable[str]) -> None:
    """Give the skimmer the signature keys it triages DNS names by."""
    skimmer.set_names(b"\0".join(name.encode("ascii") for name in names))
