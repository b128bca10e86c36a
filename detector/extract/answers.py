"""The addresses DNS answers gave clients for TikTok names, to see a connection that hides
its name.

The table lives with the writer (``pipeline.Detector``), not in the extractor: a DNS answer
and the connection that follows are different flows, which capture and replay workers
split among themselves, and only the writer sees both, in packet order.

A client that sends no SNI, hides it with ECH, or never shows a ClientHello still connects
to an address; if a DNS answer the sensor saw gave that very client that address for a
TikTok name, the connection most likely went to TikTok. ``AnswerTable`` remembers, per
(client, address), the TikTok name and where its answer was (capture and frame: the
evidence), for as long as the answer's TTL lets the client use it.

Bounded and counted like every table here: at most ``max_entries`` (least recently learnt
evicted), each expiring after its TTL clamped to [``MIN_TTL``, ``MAX_TTL``] (a TTL of 0 or
30 s still covers the connection that follows; a week-long TTL does not pin memory).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import NamedTuple

#: The shortest and longest time an answer's address is remembered, whatever its TTL.
MIN_TTL = 60.0
MAX_TTL = 86400.0


class Answer(NamedTuple):
    """A TikTok name a DNS answer resolved for a client, and where that answer is."""

    name: str
    ts: float
    pcap: str
    frame: int | None
    expires: float


#: The counts it keeps in the run's stats (the metrics' and the summary's).
LEARNT, EVICTED, EXPIRED, INFERRED, ENTRIES = (
    "dns_answers.learnt", "dns_answers.evicted", "dns_answers.expired", "dns_answers.inferred", "dns_answers.entries")


class AnswerTable:
    """(client address, server address) -> the TikTok ``Answer`` that gave the client it.

    Counts go to ``stats``: learnt, evicted (for room), expired (found past the TTL),
    inferred (connections to a remembered address that showed no TikTok name), entries."""

    def __init__(self, stats: Counter[str], max_entries: int = 65536) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.stats = stats
        self._entries: OrderedDict[tuple[str, str], Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, client: str, addresses: tuple[tuple[str, int], ...], name: str, ts: float, pcap: str,
              frame: int | None) -> None:
        """Remember that a DNS answer gave ``client`` these (address, TTL) for ``name``."""
        entries, stats = self._entries, self.stats
        for address, ttl in addresses:
            key = (client, address)
            if key in entries:
                del entries[key]
            elif len(entries) >= self.max_entries:
                entries.popitem(last=False)
                stats[EVICTED] += 1
            entries[key] = Answer(name, ts, pcap, frame, ts + min(max(float(ttl), MIN_TTL), MAX_TTL))
            stats[LEARNT] += 1
        stats[ENTRIES] = len(entries)

    def lookup(self, client: str, address: str, now: float) -> Answer | None:
        """The answer that sent ``client`` to ``address``, if one still holds; counted as an
        inference when found (the caller asks only for connections that showed no TikTok name)."""
        answer = self._entries.get((client, address))
        if answer is None:
            return None
        if now > answer.expires:
            del self._entries[(client, address)]
            self.stats[EXPIRED] += 1
            self.stats[ENTRIES] = len(self._entries)
            return None
        self.stats[INFERRED] += 1
        return answer
