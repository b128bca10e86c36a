"""What a SIEM and a fleet read: the sensor's name on every record, the ECS format, and the
Alertmanager push to every peer of a cluster. (Syslog: tests/test_syslog.py; the fleet
live: tests/test_fleet_e2e.py.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_metrics import verdict

from detector.sinks.alertmanager import AlertmanagerPeers, alert_payload
from detector.sinks.ecs import ECS_VERSION, ecs_mac

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
POLICY = ROOT / "examples" / "policy.toml"
#: Every capture with an event of each protocol the ECS mapping tells apart.
CAPTURES = [PCAPS / name for name in ("sample-office.pcapng", "http-host.pcap", "quic-v1.pcap", "blind-spots.pcap",
                                      "dns-address-inference.pcap")]
#: The ECS field sets a document may use, and the custom namespace for the rest.
ECS_TOP = {"@timestamp", "ecs", "event", "observer", "source", "destination", "network", "rule", "dns", "tls", "url",
           "related", "tiktok_detector"}


def replay(tmp_path: Path, *args: str, captures=CAPTURES) -> tuple[list[dict], list[dict]]:
    events, alerts = tmp_path / "e.jsonl", tmp_path / "a.jsonl"
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--no-progress", "--policy", str(POLICY),
                           "--events", str(events), "--alerts", str(alerts), *args, *map(str, captures)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ([json.loads(line) for line in events.read_text().splitlines()],
            [json.loads(line) for line in alerts.read_text().splitlines()])


def test_every_event_and_alert_names_its_sensor(tmp_path):
    events, alerts = replay(tmp_path, "--sensor", "annex-lobby")
    assert events and alerts
    assert {r["sensor"] for r in events + alerts} == {"annex-lobby"}
    sidecar = json.loads((tmp_path / "e.jsonl.meta.json").read_text())
    assert sidecar["sensor"] == "annex-lobby"


def test_the_sensor_defaults_to_the_host_name(tmp_path):
    events, alerts = replay(tmp_path, captures=CAPTURES[:1])
    assert {r["sensor"] for r in events + alerts} == {socket.gethostname()}


@pytest.mark.parametrize("name", ["", " hq", "a\tb", "x" * 129])
def test_a_bad_sensor_name_is_one_line_and_status_2(name):
    done = subprocess.run([sys.executable, "-m", "detector", "replay", "--sensor", name, str(CAPTURES[0])],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "sensor name" in done.stderr and "Traceback" not in done.stderr


def test_ecs_documents_carry_what_the_native_records_say(tmp_path):
    native, native_alerts = replay(tmp_path, "--sensor", "hq-floor2")
    ecs, ecs_alerts = replay(tmp_path, "--sensor", "hq-floor2", "--events-format", "ecs")
    assert len(ecs) == len(native) and len(ecs_alerts) == len(native_alerts)
    seen = set()
    for doc, record in zip(ecs, native, strict=True):
        assert set(doc) <= ECS_TOP, set(doc) - ECS_TOP
        assert doc["@timestamp"] == record["ts"] and doc["ecs"]["version"] == ECS_VERSION
        assert doc["observer"]["name"] == "hq-floor2"
        assert doc["source"]["ip"] == record["client_ip"] and doc["source"].get("mac") == ecs_mac(record["client_mac"])
        assert doc["destination"] == {"ip": record["server_ip"], "port": record["server_port"]}
        assert doc["rule"] == {"name": record["signature"], "category": record["category"]}
        assert doc["event"]["action"] == record["decision"]
        assert doc["event"]["kind"] == ("alert" if record["decision"] in ("violation", "inferred") else "event")
        assert doc["event"]["category"] == ["network"] and doc["event"]["type"] == ["protocol"]
        assert doc["tiktok_detector"]["device"] == record["device"]
        assert doc["tiktok_detector"]["segment"] == record["segment"]
        assert (doc["tiktok_detector"]["pcap"], doc["tiktok_detector"]["frame"]) == (record["pcap"], record["frame"])
        name, proto = record["name"], record["proto"]
        if proto == "dns-query":
            assert doc["dns"] == {"type": "query", "question": {"name": name}}
        elif proto == "dns-answer":
            assert doc["dns"] == {"type": "answer", "answers": [{"name": name}]}
        elif proto in ("tls-sni", "quic-sni"):
            assert doc["tls"]["client"]["server_name"] == name
            assert doc["network"]["protocol"] == proto.split("-")[0]
        elif proto == "http-host":
            assert doc["url"] == {"domain": name}
        if record["vlan"] is not None:
            assert doc["network"]["vlan"] == {"id": str(record["vlan"])}
        if record.get("hostname"):
            assert doc["source"]["domain"] == record["hostname"]
        if "evidence" in record:
            assert doc["tiktok_detector"]["evidence"] == record["evidence"]
        seen.add(proto)
    assert {"dns-query", "dns-answer", "tls-sni", "quic-sni", "http-host"} <= seen
    for doc, record in zip(ecs_alerts, native_alerts, strict=True):
        assert set(doc) <= ECS_TOP
        assert doc["event"]["kind"] == "alert" and doc["event"]["start"] == record["first_seen"]
        assert doc["event"]["end"] == record["last_seen"] and doc["observer"]["name"] == "hq-floor2"
        assert doc["source"]["ip"] == record["client_ips"][0] and doc["related"]["ip"] == record["client_ips"]
        assert doc["related"]["hosts"] == record["names"]
        assert doc["rule"] == {"name": "tiktok-use", "category": record["category"]}
        assert doc["tiktok_detector"]["count"] == record["count"]


def test_ecs_mac_is_upper_case_with_hyphens():
    assert ecs_mac("02:00:c6:12:0a:22") == "02-00-C6-12-0A-22"
    assert ecs_mac(None) is None


def test_the_push_labels_name_the_sensor():
    assert alert_payload(verdict(0.0), 900, "hq-floor1")["labels"]["sensor"] == "hq-floor1"
    assert "sensor" not in alert_payload(verdict(0.0), 900)["labels"]


class _Response:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self) -> bytes:
        return b""


def test_every_peer_of_a_cluster_gets_every_alert():
    posted: list[tuple[str, list]] = []

    def opener(request, timeout):
        posted.append((request.full_url, json.loads(request.data)))
        return _Response()

    peers = AlertmanagerPeers(["http://am-1:9093", "http://am-2:9093"], 900, sensor="hq-floor1")
    for push in peers.pushes:
        push._open = opener
    peers.opened(verdict(0.0))
    peers.window = 60
    peers.opened(verdict(1.0, device="02:00:00:00:00:01"))
    peers.close()
    by_peer = {}
    for url, alerts in posted:
        by_peer.setdefault(url, []).extend(alerts)
    assert set(by_peer) == {"http://am-1:9093/api/v2/alerts", "http://am-2:9093/api/v2/alerts"}
    for alerts in by_peer.values():
        assert [a["labels"]["device"] for a in alerts] == ["02:00:c6:12:0a:22", "02:00:00:00:00:01"]
        assert {a["labels"]["sensor"] for a in alerts} == {"hq-floor1"}
        assert alerts[1]["endsAt"] == "1970-01-01T00:01:01.000000Z"  # the reloaded window reached both
    assert peers.counts() == {"sent": 4, "failed": 0, "dropped": 0}
