"""JSON-lines writers for events (one per verdict) and names (one per observation).

The event schema is a contract that later tools (the report, SIEM ingestion) read; it is
documented in the README and must only grow, never change meaning.
"""

from __future__ import annotations

import json
from typing import TextIO

from detector.records import Observation, Verdict, rfc3339


def event_record(verdict: Verdict) -> dict:
    obs = verdict.observation
    record = {
        "ts": rfc3339(obs.ts),
        "proto": obs.proto,
        "name": obs.name,
        "signature": verdict.signature.pattern,
        "category": verdict.signature.category,
        "client_ip": obs.client_ip,
        "client_mac": obs.client_mac,
        "vlan": obs.vlan,
        "server_ip": obs.server_ip,
        "server_port": obs.server_port,
        "segment": verdict.segment,
        "device": verdict.device,
        "hostname": verdict.hostname,
        "decision": verdict.decision,
    }
    record.update(device_record(verdict))
    if obs.ech is not None:
        record["ech"] = obs.ech
        record["alpn"] = list(obs.alpn)
    if obs.evidence is not None:
        record["evidence"] = {"kind": obs.evidence, "ts": rfc3339(obs.evidence_ts) if obs.evidence_ts is not None else None,
                              "pcap": obs.evidence_pcap, "frame": obs.evidence_frame}
    if obs.seen is not None:
        record["seen"] = obs.seen
    record["pcap"] = obs.pcap
    record["frame"] = obs.frame
    return record


def device_record(verdict: Verdict) -> dict:
    """Who the device is (``DeviceInfo``): the keys events and alerts add for it."""
    info = verdict.info
    if info is None:
        return {}
    return {"device_id": info.id, "device_class": info.device_class, "owner": info.owner,
            "department": info.department, "inventory_id": info.inventory_id, "identified_by": info.identified_by,
            "randomised_mac": info.randomised_mac, "client_id": info.client_id, "duid": info.duid,
            "fqdn": info.fqdn, "vendor_class": info.vendor_class}


class JsonLines:
    """One compact JSON object per line; flushed per line when writing to a pipe or terminal
    so a tail -f or a log shipper sees events as they happen."""

    def __init__(self, stream: TextIO, line_buffered: bool) -> None:
        self.stream = stream
        self.line_buffered = line_buffered
        self.written = 0

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.written += 1
        if self.line_buffered:
            self.stream.flush()

    def write_name(self, obs: Observation) -> None:
        record = {"proto": obs.proto, "name": obs.name, "client_ip": obs.client_ip, "pcap": obs.pcap,
                  "frame": obs.frame}
        if obs.seen is not None:
            record["seen"] = obs.seen
        self.write(record)
