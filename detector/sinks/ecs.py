"""The native event and alert records renamed to Elastic Common Schema (ECS) fields.

``--events-format ecs`` writes these instead of the native records, to files and syslog
alike, so Elasticsearch, OpenSearch or any SIEM that reads ECS indexes the sensor's
findings beside Zeek's and Suricata's without an ingest pipeline of its own: the client is
``source.*``, the other end ``destination.*``, the name goes where ECS puts names of its
protocol (``dns.question.name``, ``tls.client.server_name``, ``url.domain``), the signature
is ``rule.*`` and the sensor ``observer.*``. What ECS has no field for (segment, device,
decision, evidence frame) sits under ``tiktok_detector.*``, the custom namespace ECS asks
for. Both functions are pure: a native record in, an ECS document out; the native schema
stays the contract both are made from.
"""

from __future__ import annotations

#: The ECS version whose field names these documents use.
ECS_VERSION = "8.11.0"
#: The custom namespace for what ECS has no field for.
CUSTOM = "tiktok_detector"

#: Per native ``proto``: ECS ``network.protocol`` and ``network.transport``.
_NETWORK = {
    "dns-query": ("dns", "udp"), "dns-answer": ("dns", "udp"), "tls-sni": ("tls", "tcp"),
    "quic-sni": ("quic", "udp"), "http-host": ("http", "tcp"), "wireguard": ("wireguard", "udp"),
    "ike": ("ike", "udp"), "openvpn": ("openvpn", None), "dot": ("dns", "tcp"), "doq": ("dns", "udp"),
}
#: Decisions that are findings (``event.kind: alert``); the others are recorded facts.
_ALERTING = ("violation", "inferred")


def ecs_mac(mac: str | None) -> str | None:
    """ECS writes a MAC address as upper-case hexadecimal pairs joined by hyphens."""
    return mac.replace(":", "-").upper() if mac else None


def ecs_event(record: dict) -> dict:
    """The ECS document of one native event record (``detector.sinks.events.event_record``
    with the ``sensor`` field the outputs add)."""
    proto, name = record["proto"], record["name"]
    protocol, transport = _NETWORK.get(proto, (proto, None))
    network: dict = {"protocol": protocol}
    if transport:
        network["transport"] = transport
    if record.get("vlan") is not None:
        network["vlan"] = {"id": str(record["vlan"])}
    doc: dict = {
        "@timestamp": record["ts"],
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "alert" if record["decision"] in _ALERTING else "event",
                  "category": ["network"], "type": ["protocol"], "action": record["decision"],
                  "module": CUSTOM, "dataset": f"{CUSTOM}.event"},
        "observer": {"name": record["sensor"], "type": "sensor", "product": "tiktok-detector"},
        "source": _source(record["client_ip"], record.get("client_mac")),
        "destination": {"ip": record["server_ip"], "port": record["server_port"]},
        "network": network,
        "rule": {"name": record["signature"], "category": record["category"]},
    }
    if proto in ("dns-query", "dns-answer"):
        # A name from the answer section (a CNAME target) is no question: ECS lists it
        # among the answers, and dns.type says which section it came from.
        doc["dns"] = ({"type": "query", "question": {"name": name}} if proto == "dns-query"
                      else {"type": "answer", "answers": [{"name": name}]})
    elif proto in ("tls-sni", "quic-sni"):
        tls: dict = {"client": {"server_name": name}}
        if record.get("alpn"):
            tls["client"]["supported_protocols"] = record["alpn"]
        doc["tls"] = tls
    elif proto == "http-host":
        doc["url"] = {"domain": name}
    if record.get("hostname"):
        doc["source"]["domain"] = record["hostname"]
    custom = {"proto": proto, "name": name, "segment": record["segment"], "device": record["device"],
              "decision": record["decision"], "hostname": record.get("hostname"),
              "pcap": record["pcap"], "frame": record["frame"]}
    for key in ("ech", "evidence"):
        if key in record:
            custom[key] = record[key]
    doc[CUSTOM] = custom
    return doc


def ecs_alert(record: dict) -> dict:
    """The ECS document of one native alert record (``detector.sinks.alerts.AlertTable``)."""
    return {
        "@timestamp": record["ts"],
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "alert", "category": ["network", "intrusion_detection"], "type": ["info"],
                  "action": record["alert"], "module": CUSTOM, "dataset": f"{CUSTOM}.alert",
                  "start": record["first_seen"], "end": record["last_seen"]},
        "observer": {"name": record["sensor"], "type": "sensor", "product": "tiktok-detector"},
        "source": _source(record["client_ips"][0] if record["client_ips"] else None, record.get("client_mac"),
                          record.get("hostname")),
        "related": {"ip": record["client_ips"], "hosts": record["names"]},
        "rule": {"name": record["alert"], "category": record["category"]},
        CUSTOM: {"device": record["device"], "segment": record["segment"], "hostname": record.get("hostname"),
                 "count": record["count"], "window_seconds": record["window_seconds"], "protos": record["protos"],
                 "names": record["names"], "client_ips": record["client_ips"], "evidence": record["evidence"]},
    }


def _source(ip: str | None, mac: str | None, domain: str | None = None) -> dict:
    source: dict = {}
    if ip:
        source["ip"] = ip
    if mac:
        source["mac"] = ecs_mac(mac)
    if domain:
        source["domain"] = domain
    return source
