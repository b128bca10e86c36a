"""Policy by device class and segment: every class (official, personal, unknown) on every
segment, against a table written out by hand; class-rule file errors; and the class,
owner and department carried onto events, alerts and metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from detector.devices import DeviceTable
from detector.extract.binding import Binding
from detector.inventory import load_inventory
from detector.match import load_signatures
from detector.pipeline import Detector
from detector.policy import PolicyError, load_policy
from detector.records import DEVICE_CLASSES, Observation, Signature
from detector.sinks.alerts import AlertTable
from detector.sinks.events import event_record

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
violations = ["app", "web"]

[[segment]]
name = "staff"
cidrs = ["198.18.10.0/24"]
violations = ["app", "api", "cdn", "telemetry", "web"]

[[segment]]
name = "guest"
cidrs = ["198.18.20.0/24"]
violations = ["web"]

# Official devices: every TikTok category, shared ByteDance infrastructure too, everywhere.
[[class_rule]]
class = "official"
violations = ["app", "api", "cdn", "telemetry", "web", "bytedance-shared"]

# Personal devices: what the segment counts, as a notice, never an alert ...
[[class_rule]]
class = "personal"
decision = "notice"

# ... and nothing at all on the guest Wi-Fi.
[[class_rule]]
class = "personal"
segments = ["guest"]
violations = []

[[exemption]]
mac = "02:00:00:00:00:0e"
reason = "the security team's test phone"
"""
INVENTORY = ("mac,owner,department,class\n02:00:00:00:00:01,alice,Finance,official\n"
             "02:00:00:00:00:02,bob,Finance,personal\n02:00:00:00:00:0e,eve,Security,personal\n")
MAC_OF = {"official": "02:00:00:00:00:01", "personal": "02:00:00:00:00:02", "unknown": "02:00:00:00:00:03"}
IP_OF = {"staff": "198.18.10.5", "guest": "198.18.20.5", "default": "203.0.113.5"}
CATEGORIES = ("app", "api", "web", "bytedance-shared")
V, N, A = "violation", "notice", "allowed"
#: (class, segment) -> the decision for app, api, web, bytedance-shared.
EXPECTED = {
    ("official", "staff"): (V, V, V, V),
    ("official", "guest"): (V, V, V, V),
    ("official", "default"): (V, V, V, V),
    ("personal", "staff"): (N, N, N, A),
    ("personal", "guest"): (A, A, A, A),
    ("personal", "default"): (N, A, N, A),
    ("unknown", "staff"): (V, V, V, A),
    ("unknown", "guest"): (A, A, V, A),
    ("unknown", "default"): (V, A, V, A),
}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("class")
    (directory / "policy.toml").write_text(POLICY)
    (directory / "inventory.csv").write_text(INVENTORY)
    loaded = load_policy(directory / "policy.toml")
    from dataclasses import replace

    return replace(loaded, inventory=load_inventory(directory / "inventory.csv"))


def observe(mac: str, ip: str, ts: float = 1000.0) -> Observation:
    return Observation(ts, "dns-query", "x.tiktok.com", ip, mac, None, "198.19.0.53", 53, "t.pcap", 1)


def test_every_class_on_every_segment_is_covered():
    assert set(EXPECTED) == {(c, s) for c in DEVICE_CLASSES for s in IP_OF}


@pytest.mark.parametrize(("device_class", "segment"), sorted(EXPECTED))
def test_class_by_segment(policy, device_class, segment):
    table = DeviceTable(inventory=policy.inventory)
    mac, ip = MAC_OF[device_class], IP_OF[segment]
    info = table.identify(mac, ip)
    assert info.device_class == device_class
    got = tuple(policy.decide(observe(mac, ip), Signature("x", "suffix", category, "t"), None, info).decision
                for category in CATEGORIES)
    assert got == EXPECTED[(device_class, segment)]


def test_an_exemption_comes_before_a_notice(policy):
    info = DeviceTable(inventory=policy.inventory).identify("02:00:00:00:00:0e", IP_OF["staff"])
    verdict = policy.decide(observe("02:00:00:00:00:0e", IP_OF["staff"]), Signature("x", "suffix", "app", "t"), None,
                            info)
    assert (info.device_class, verdict.decision) == ("personal", "exempt")


def test_notices_are_written_with_the_owner_and_never_alerted_and_counted_by_class(policy):
    """Through the detector: the personal phone's match is a notice event naming its owner
    and department, no alert; the official laptop's a violation alert naming its owner;
    the per-class counts hold the class and decision, nothing of the owner."""
    verdicts = []
    stats: Counter[str] = Counter()
    devices = DeviceTable(inventory=policy.inventory)
    detector = Detector(load_signatures(ROOT / "signatures"), policy, devices, verdicts.append, stats)
    devices.learn(Binding(MAC_OF["personal"], IP_OF["staff"], "bobs-phone"))
    for mac in (MAC_OF["personal"], MAC_OF["official"]):
        detector.observe(Observation(1000.0, "dns-query", "www.tiktok.com", IP_OF["staff"], mac, None, "198.19.0.53",
                                     53, "t.pcap", 1))
    notice, violation = (event_record(v) for v in verdicts)
    assert (notice["decision"], notice["device_class"], notice["owner"], notice["department"], notice["device_id"],
            notice["identified_by"], notice["hostname"]) == (
        "notice", "personal", "bob", "Finance", "02:00:00:00:00:02", "mac", "bobs-phone")
    assert (violation["decision"], violation["device_class"], violation["owner"]) == ("violation", "official", "alice")
    alerts: list[dict] = []
    table = AlertTable(900, alerts.append)
    for verdict in verdicts:
        table.add(verdict)
    table.flush()
    assert [(a["device_id"], a["owner"], a["department"], a["device_class"]) for a in alerts] == [
        ("02:00:00:00:00:01", "alice", "Finance", "official")]
    assert stats["device_classes.personal.notice"] == 1 and stats["device_classes.official.violation"] == 1
    assert not [key for key in stats if "alice" in key or "bob" in key or "Finance" in key]


@pytest.mark.parametrize(("rule", "message"), [
    ('class = "guest"', 'class_rule #1: class must be one of official, personal, unknown'),
    ('class = "personal"\nsegments = ["lab"]', "class_rule #1: segments has 'lab', which is not a segment name"),
    ('class = "personal"\ndecision = "alert"', 'class_rule #1: decision must be "violation"'),
    ('class = "personal"\nviolations = ["games"]', "class_rule #1: violations has unknown categor(ies) 'games'"),
    ('class = "personal"\nowner = "bob"', "class_rule #1: unknown key(s) 'owner'"),
])
def test_bad_class_rules_name_the_table_key_and_line(tmp_path, rule, message):
    path = tmp_path / "policy.toml"
    path.write_text(f'violations = ["web"]\n\n[[class_rule]]\n{rule}\n')
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    # The line of the key at fault (an unknown key: its table's header).
    line = 4 if rule.startswith('class = "guest"') else 3 if "owner" in rule else 5
    assert message in str(error.value) and str(error.value).startswith(f"{path}:{line}: ")


def test_two_rules_for_one_class_and_segment_are_refused(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[[class_rule]]\nclass = "personal"\n\n[[class_rule]]\nclass = "personal"\ndecision = "notice"\n')
    with pytest.raises(PolicyError, match=r"class_rule #2: class 'personal' on every segment already has "
                                          r"class_rule #1"):
        load_policy(path)


def test_alertmanager_alerts_carry_the_class_as_a_label_and_the_owner_as_an_annotation(policy):
    from detector.sinks.alertmanager import alert_payload

    info = DeviceTable(inventory=policy.inventory).identify(MAC_OF["official"], IP_OF["staff"])
    verdict = policy.decide(observe(MAC_OF["official"], IP_OF["staff"]), Signature("x", "suffix", "app", "t"), None,
                            info)
    payload = alert_payload(verdict, 900)
    assert payload["labels"]["device_class"] == "official" and "owner" not in payload["labels"]
    notes = payload["annotations"]
    assert (notes["owner"], notes["department"], notes["device_id"]) == ("alice", "Finance", MAC_OF["official"])
