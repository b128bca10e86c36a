"""Every count the sensor keeps, declared once: its key, its metric and where it shows.

The pipeline counts in plain integers under dotted keys (a ``Counter`` and the tables' own
fields, read together as one snapshot); nothing calls into prometheus-client per packet.
This module is the one list of those keys. The metrics collector makes its families from
it, the end-of-run summary its "not decoded" and "LOST STATE" lines, and the C skim's drop
keys are names from it, so a count cannot exist without being exported and summarised:
``tests/test_counters.py`` walks this list, and checks that every key a real capture makes
is in it.

The pipeline bumps the constants below (``stats[SKIP_SHORT_FRAME] += 1``); keys made at
run time from bounded sets (a protocol, a policy's segment, a signature category) are
built by the helpers at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from detector.coverage import ENTRIES as COVERAGE_ENTRIES
from detector.coverage import ONE_WAY_KEY, OUTCOME_KEYS
from detector.coverage import UNTRACKED as COVERAGE_UNTRACKED
from detector.records import PROTOS

# -- the keys the pipeline bumps --------------------------------------------------------------

PACKETS, BYTES = "packets", "bytes"
SKIM_TCP, SKIM_UDP, SKIM_TABLE_FULL = "skim.tcp", "skim.udp", "skim.table_full"
SKIP_BAD_IP = "skip.bad_ip"
SKIP_BAD_TCP = "skip.bad_tcp"
#: CAPWAP control (access point management between the access points and their controller).
SKIP_CAPWAP_CONTROL = "skip.capwap_control"
SKIP_NON_FIRST_FRAGMENT = "skip.non_first_fragment"
SKIP_NON_IP = "skip.non_ip"
SKIP_OTHER_TRANSPORT = "skip.other_transport"
SKIP_QUIC_SERVER_LONG_HEADER = "skip.quic_server_long_header"
SKIP_SHORT_FRAME = "skip.short_frame"
SKIP_TCP_NOT_TLS_OR_HTTP = "skip.tcp_not_tls_or_http"
SKIP_UNKNOWN_LINKTYPE = "skip.unknown_linktype"
#: Records a capture file could not give (``CaptureFile.skipped`` reasons, under ``file.``).
FILE_BAD_BLOCK, FILE_TRUNCATED_RECORD, FILE_UNKNOWN_INTERFACE = "bad_block", "truncated_record", "unknown_interface"
FILE_REASONS = (FILE_BAD_BLOCK, FILE_TRUNCATED_RECORD, FILE_UNKNOWN_INTERFACE)
PARSE_ERROR_DNS, PARSE_ERROR_TLS = "parse_error.dns", "parse_error.tls"
PARSE_ERROR_DNS_PARTIAL = "parse_error.dns_partial"
TCP_MIDSTREAM = "tcp.midstream"
TLS_NO_SNI, QUIC_NO_SNI = "tls.no_sni", "quic.no_sni"
#: DNS answers whose query was not seen (extract/oneway.py).
DNS_RESPONSE_ONLY = "dns.response_only"
CAPTURE_RECEIVED = "capture.received"
CAPTURE_KERNEL_DROPS, CAPTURE_INTERFACE_DROPS = "capture.kernel_drops", "capture.interface_drops"
SIGNATURE_RELOADS, SIGNATURE_RELOAD_FAILURES = "signatures.reloads", "signatures.reload_failures"
ALERTS_EMITTED, ALERTS_SUPPRESSED, ALERTS_CLOSED_EARLY = "alerts.emitted", "alerts.suppressed", "alerts.closed_early"
DEVICES_ENTRIES, DEVICES_EVICTED, DEVICES_LEARNT = "devices.entries", "devices.evicted", "devices.learnt"
#: What the Alertmanager push counts, under ``alertmanager.``.
ALERTMANAGER_RESULTS = ("sent", "failed", "dropped")
#: What the syslog sender counts, under ``syslog.``.
SYSLOG_RESULTS = ("sent", "failed", "dropped")


def file_key(reason: str) -> str:
    return f"file.{reason}"


def observation_key(proto: str) -> str:
    return f"observations.{proto}"


def match_key(segment: str, proto: str, category: str) -> str:
    return f"matches.{segment}.{proto}.{category}"


def blind_spot_key(segment: str, kind: str) -> str:
    return f"blind_spots.{segment}.{kind}"


def device_class_key(device_class: str, decision: str) -> str:
    """A decision by the inventory class of the device (records.DEVICE_CLASSES)."""
    return f"device_classes.{device_class}.{decision}"


def verdict_key(decision: str, segment: str | None = None) -> str:
    """A decision by segment, or (no segment) its total over all segments."""
    return f"verdicts.{decision}" if segment is None else f"verdicts.{segment}.{decision}"


# -- the families ----------------------------------------------------------------------------

#: Where the end-of-run summary shows a family: in the "not decoded" line, as a "LOST STATE"
#: line (state let go of before the sensor was done with it: each may have cost a name),
#: in the lines written for it (headline, capture), or only on /metrics.
NOT_DECODED, LOST, HEADLINE, CAPTURE, METRICS_ONLY = "not decoded", "lost", "headline", "capture", "metrics only"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family and the snapshot keys behind its series.

    ``series`` maps each series' label values to its key. ``lost`` says, for the keys
    whose non-zero count is lost state, what was lost (the summary's LOST STATE lines).
    ``optional``: exported only when one of its keys is in the snapshot (a source that not
    every run has: live capture, the Alertmanager push)."""

    metric: str
    help: str
    series: Mapping[tuple[str, ...], str]
    labels: tuple[str, ...] = ()
    gauge: bool = False
    summary: str = METRICS_ONLY
    lost: Mapping[str, str] = field(default_factory=dict)
    optional: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.series.values())


def _by(label: str, prefix: str, values: tuple[str, ...] | Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """One series per value, keyed ``prefix + name`` (a mapping gives label -> name)."""
    pairs = values.items() if isinstance(values, Mapping) else ((v, v) for v in values)
    return {(label_value,): prefix + name for label_value, name in pairs}


def _one(key: str) -> dict[tuple[str, ...], str]:
    return {(): key}


#: Traffic: what was read and what became of it (exposition order).
TRAFFIC = (
    Family("packets", "Frames read from the capture.", _one(PACKETS), summary=HEADLINE),
    Family("bytes", "Bytes of the frames read from the capture.", _one(BYTES)),
    Family("skimmed_packets", "Packets dropped as bulk after a few byte checks, by transport.",
           {("tcp",): SKIM_TCP, ("udp",): SKIM_UDP}, ("transport",)),
    Family("skipped_packets", "Frames or segments the decoder could not use, by reason.",
           {(key.removeprefix("skip."),): key for key in (
               SKIP_BAD_IP, SKIP_BAD_TCP, SKIP_CAPWAP_CONTROL, SKIP_NON_FIRST_FRAGMENT, SKIP_NON_IP,
               SKIP_OTHER_TRANSPORT,
               SKIP_QUIC_SERVER_LONG_HEADER, SKIP_SHORT_FRAME, SKIP_TCP_NOT_TLS_OR_HTTP, SKIP_UNKNOWN_LINKTYPE)},
           ("reason",), summary=NOT_DECODED),
    Family("capture_file_skipped_records", "Records a capture file could not give (truncated, damaged), by reason.",
           _by("reason", "file.", FILE_REASONS), ("reason",), summary=NOT_DECODED),
    Family("parse_errors", "Messages a parser rejected, by parser (dns_partial: DNS messages read up to a "
           "malformed part).", {(key.removeprefix("parse_error."),): key for key in (
               PARSE_ERROR_DNS, PARSE_ERROR_DNS_PARTIAL, PARSE_ERROR_TLS)}, ("parser",), summary=NOT_DECODED),
    Family("observations", "Names extracted, by protocol.", _by("proto", "observations.", PROTOS), ("proto",),
           summary=HEADLINE),
    Family("connections", "TCP and QUIC connections whose first message was read, by what it showed of the "
           "server's name (named: SNI or Host; ech: only an Encrypted ClientHello's outer name; no_name: a ClientHello "
           "without one, or unreadable; other: neither TLS nor HTTP; tunnel: a VPN handshake).",
           {(outcome.replace("-", "_"),): key for outcome, key in OUTCOME_KEYS.items()}, ("outcome",)),
    Family("one_way_connections", "TCP connections whose SYN and first message were read but no SYN-ACK: the tap "
           "saw the client's side only (asymmetric routing, a one-way SPAN).", _one(ONE_WAY_KEY)),
    Family("client_hellos_without_sni", "TLS and QUIC ClientHellos that carried no server name, by protocol.",
           {("tls",): TLS_NO_SNI, ("quic",): QUIC_NO_SNI}, ("proto",)),
    Family("dns_response_only_transactions", "DNS transactions of wanted names seen as the answer alone: the "
           "query was not captured (a tap that sees one direction); each gives its question as the name.",
           _one(DNS_RESPONSE_ONLY), summary=HEADLINE),
)

#: The alert table's counts and the push's (exported after the detections).
ALERTS = (
    Family("alerts_emitted", "Deduplicated alerts written (one per device, category and window).",
           _one(ALERTS_EMITTED)),
    Family("alerts_suppressed", "Violations folded into an alert already open.", _one(ALERTS_SUPPRESSED)),
    Family("alertmanager_alerts", "Alerts pushed to Alertmanager, by result (dropped: the send queue was full).",
           _by("result", "alertmanager.", ALERTMANAGER_RESULTS), ("result",), optional=True),
    Family("syslog_messages", "Events and alerts sent to syslog (--syslog), by result (failed: the collector "
           "could not be reached or refused; dropped: the send queue was full).",
           _by("result", "syslog.", SYSLOG_RESULTS), ("result",), optional=True),
)

#: The tcp_flight.* counters (tcpflight.FlightCounters) and quic_initial.* (InitialTable.COUNTERS).
TCP_SEGMENT_KINDS = ("out_of_order", "retransmitted", "beyond_window", "ignored_finished")
QUIC_PACKET_RESULTS = {
    "decrypted": "initials_decrypted", "decrypt_failed": "decrypt_failed", "unknown_version": "unknown_version",
    "version_negotiation": "version_negotiation", "retry": "retry", "zero_rtt": "zero_rtt",
    "handshake": "handshake", "short_header": "short_header", "after_done": "after_done", "malformed": "malformed",
}
QUIC_ABANDONED = {"over_budget": "over_budget", "crypto_overflow": "crypto_overflow", "hello_invalid": "hello_invalid"}

#: The sensor's health: losses, the bounded tables, reassembly (exposition order).
HEALTH = (
    Family("capture_dropped_packets", "Packets the capture lost before the sensor read them, by where they "
           "were lost (0 for a replay).", {("kernel",): CAPTURE_KERNEL_DROPS, ("interface",): CAPTURE_INTERFACE_DROPS},
           ("stage",), summary=CAPTURE),
    Family("capture_received_packets", "Packets the live capture received, as its capture library counts them.",
           _one(CAPTURE_RECEIVED), summary=CAPTURE, optional=True),
    Family("table_evictions", "State dropped from a bounded table before it was done with, by table and reason.",
           {("tcp_flight", "capacity"): "tcp_flight.evicted_full", ("tcp_flight", "timeout"): "tcp_flight.expired",
            ("quic_initial", "capacity"): "quic_initial.evicted", ("quic_initial", "timeout"): "quic_initial.expired",
            ("dns_answers", "capacity"): "dns_answers.evicted", ("dns_answers", "timeout"): "dns_answers.expired",
            ("dns_queries", "capacity"): "dns_queries.evicted", ("dns_queries", "timeout"): "dns_queries.expired",
            ("devices", "capacity"): DEVICES_EVICTED, ("alert_windows", "capacity"): ALERTS_CLOSED_EARLY},
           ("table", "reason"), summary=LOST, lost={
               "tcp_flight.evicted_full": "TCP flows evicted from the full first-flight table",
               "quic_initial.evicted": "QUIC connections evicted from the full Initial table",
               "dns_answers.evicted": "TikTok answer addresses evicted from the full DNS answer table",
               "dns_queries.evicted": "DNS queries evicted from the full query table (their answers may be "
                                      "reported as seen alone)",
               DEVICES_EVICTED: "address bindings evicted from the full device table",
               ALERTS_CLOSED_EARLY: "alert windows closed early because the alert table was full"}),
    Family("table_entries", "Entries held in each bounded table.",
           {("tcp_flight",): "tcp_flight.flows", ("quic_initial",): "quic_initial.connections",
            ("dns_answers",): "dns_answers.entries", ("dns_queries",): "dns_queries.entries",
            ("devices",): DEVICES_ENTRIES, ("coverage",): COVERAGE_ENTRIES}, ("table",), gauge=True),
    Family("coverage_untracked_connections", "Connections of clients beyond the coverage table's capacity: in the "
           "connection totals, not in any device's coverage.", _one(COVERAGE_UNTRACKED), summary=LOST,
           lost={COVERAGE_UNTRACKED: "connections not counted per device (coverage table full)"}),
    Family("dns_answer_addresses", "Addresses DNS answers gave clients for TikTok names, remembered for the "
           "connections that follow.", _one("dns_answers.learnt")),
    Family("inferred_connections", "TLS and QUIC connections that showed no TikTok name to an address a DNS "
           "answer gave the client for one: the name is inferred.", _one("dns_answers.inferred")),
    Family("address_bindings", "MAC-IP-hostname bindings learnt from DHCP, DHCPv6, ARP, neighbour discovery and "
           "lease files.", _one(DEVICES_LEARNT)),
    Family("skim_flow_set_full_segments", "TCP segments the skim kept for Python because its flow set was full "
           "(Python judged them; nothing is lost, only speed).", _one(SKIM_TABLE_FULL), summary=LOST,
           lost={SKIM_TABLE_FULL: "TCP segments kept by the skim after its flow set filled"}),
    Family("tcp_midstream_flows", "TCP flows picked up without their start (the capture began mid-connection).",
           _one(TCP_MIDSTREAM)),
    Family("tcp_reassembly_flows", "TCP client first flights tracked for reassembly.",
           _one("tcp_flight.flows_created")),
    Family("tcp_reassembly_flows_ended", "TCP first flights ended, by reason (completed: the message was read; "
           "overflow: past the byte budget; evictions are in table_evictions).",
           {("completed",): "tcp_flight.finished", ("overflow",): "tcp_flight.overflow"}, ("reason",), summary=LOST,
           lost={"tcp_flight.overflow": "TCP flows given up past the first-flight byte budget"}),
    Family("tcp_reassembly_restarts", "Finished TCP flows tracked again for a later message (keep-alive, STARTTLS).",
           _one("tcp_flight.restarted")),
    Family("tcp_reassembly_segments", "TCP segments reassembly handled specially, by kind.",
           _by("kind", "tcp_flight.", TCP_SEGMENT_KINDS), ("kind",)),
    Family("quic_packets", "QUIC long-header packets to servers' QUIC ports, by what came of them.",
           _by("result", "quic_initial.", QUIC_PACKET_RESULTS), ("result",)),
    Family("quic_client_hellos", "ClientHellos reassembled from QUIC Initials.", _one("quic_initial.hellos")),
    Family("quic_connections_abandoned", "QUIC connections given up before a ClientHello, by reason.",
           _by("reason", "quic_initial.", QUIC_ABANDONED), ("reason",), summary=LOST, lost={
               "quic_initial.over_budget": "QUIC connections given up past the table's CRYPTO budget",
               "quic_initial.crypto_overflow": "QUIC connections given up past a connection's CRYPTO budget"}),
)

#: Reloads (live, on SIGHUP), exported after the signature set's own families.
RELOADS = (
    Family("signature_reload_failures", "Reloads of the signature set that failed (the previous set stays in "
           "use).", _one(SIGNATURE_RELOAD_FAILURES)),
    Family("signature_reloads", "Reloads of the signature set and policy that took effect.",
           _one(SIGNATURE_RELOADS)),
)

#: Families whose label values come from the configuration (segments, categories), made by
#: the collector itself: matches.<segment>.<proto>.<category>, verdicts.<segment>.<decision>
#: (and the verdicts.<decision> totals), blind_spots.<segment>.<kind>,
#: devices_in_violation.<segment>, device_classes.<class>.<decision>; and the processing
#: time histogram, processing.* (detector.timing).
CONFIGURED_PREFIXES = ("matches.", "verdicts.", "blind_spots.", "devices_in_violation.", "device_classes.",
                       "processing.")


def families() -> Iterator[Family]:
    yield from TRAFFIC
    yield from ALERTS
    yield from HEALTH
    yield from RELOADS


def declared(key: str) -> bool:
    """Whether ``key`` is a count this module declares (the configured families' by prefix)."""
    return key in _KEYS or key.startswith(CONFIGURED_PREFIXES)


def losses() -> Iterator[tuple[str, str]]:
    """(key, what was lost) for every count that is lost state when it is not zero."""
    for family in families():
        yield from family.lost.items()


def not_decoded() -> tuple[str, ...]:
    return tuple(key for family in families() if family.summary == NOT_DECODED for key in family.keys)


_KEYS = frozenset(key for family in families() for key in family.keys)
