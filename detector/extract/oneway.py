"""DNS transactions seen from one side only: an answer whose query the sensor never saw.

Many taps see one direction of a conversation (asymmetric routing, a one-way SPAN session,
a mirror of the resolver's port only). A resolver's answer repeats the question, so the
name a device looked up is still there; an NXDOMAIN answer to a blocked TikTok lookup
carries nothing else. ``QueryTable`` remembers the queries the sensor saw, by transaction
(client address and port, server address and port, DNS ID), so that the pipeline can tell
an answer to a query it saw from one whose query it did not, and report the latter's
question once per transaction, however often the answer is repeated.

Only queries for names the pipeline wants are remembered (the C skim drops the rest before
Python sees them, and the table must hold the same with the skim as without).

Bounded and counted like every table here: at most ``max_entries`` transactions (the
oldest evicted), each forgotten ``timeout`` seconds after it was last seen.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from detector.counters import DNS_RESPONSE_ONLY as RESPONSE_ONLY

#: The counts it keeps in the run's stats (RESPONSE_ONLY too).
EVICTED, EXPIRED, ENTRIES = "dns_queries.evicted", "dns_queries.expired", "dns_queries.entries"
#: What the table knows of a transaction.
QUERIED, ANSWERED, RESPONSE_SEEN = 0, 1, 2

#: (client address, client port, server address, server port, DNS ID).
Transaction = tuple[bytes, int, bytes, int, int]


class QueryTable:
    """Transactions -> what was seen of them (a query, its answer, or an answer alone)."""

    def __init__(self, stats: Counter[str], max_entries: int = 65536, timeout: float = 30.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.stats = stats
        self.max_entries = max_entries
        self.timeout = timeout
        self._seen: OrderedDict[Transaction, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def query(self, key: Transaction, ts: float) -> None:
        """The sensor saw this transaction's query."""
        entry = self._seen.get(key)
        self._put(key, ts, QUERIED if entry is None else entry[1])

    def answer_alone(self, key: Transaction, ts: float) -> bool:
        """The sensor saw an answer: True the first time for a transaction whose query it did
        not see (counted as ``dns.response_only``), False for an answered query or a repeat."""
        entry = self._seen.get(key)
        self._put(key, ts, ANSWERED if entry is not None and entry[1] != RESPONSE_SEEN else RESPONSE_SEEN)
        if entry is not None:
            return False
        self.stats[RESPONSE_ONLY] += 1
        return True

    def expire(self, now: float) -> None:
        """Forget the transactions not seen for ``timeout`` seconds (counted)."""
        seen = self._seen
        while seen:
            key, (ts, _) = next(iter(seen.items()))
            if ts + self.timeout > now:
                return
            del seen[key]
            self.stats[EXPIRED] += 1

    def _put(self, key: Transaction, ts: float, state: int) -> None:
        seen = self._seen
        seen[key] = (ts, state)
        seen.move_to_end(key)
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
            self.stats[EVICTED] += 1
