"""The audit report of a run with a device inventory: class, owner and department per
device, notices counted, and the owner pseudonymized with the addresses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
OWNER = "b.devries@ministry.example"
INVENTORY = ("mac,owner,department,class\n"
             f"02:00:c6:12:0a:22,{OWNER},Communications,personal\n"
             "02:00:c6:12:14:65,c.smit@ministry.example,Finance,official\n")
POLICY = ('violations = ["app", "api", "cdn", "telemetry", "web"]\n\n'
          '[[class_rule]]\nclass = "personal"\ndecision = "notice"\n')


def run(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_report_names_class_owner_and_department_and_pseudonymizes_the_owner(tmp_path):
    (tmp_path / "inventory.csv").write_text(INVENTORY)
    (tmp_path / "policy.toml").write_text(POLICY)
    events = tmp_path / "events.jsonl"
    run("replay", "--no-progress", "--policy", str(tmp_path / "policy.toml"), "--inventory",
        str(tmp_path / "inventory.csv"), "--events", str(events), str(SAMPLE))
    run("report", str(events), "-o", str(tmp_path / "plain.html"), "--json", str(tmp_path / "plain.json"),
        "--csv", str(tmp_path / "plain.csv"))
    doc = json.loads((tmp_path / "plain.json").read_text())
    by_mac = {d["macs"][0]: d for d in doc["devices"]}
    bob = by_mac["02:00:c6:12:0a:22"]
    assert (bob["device_class"], bob["owner"], bob["department"], bob["violations"]) == (
        "personal", OWNER, "Communications", 0)
    assert bob["notices"] > 0
    assert by_mac["02:00:c6:12:14:65"]["device_class"] == "official"
    assert OWNER in (tmp_path / "plain.html").read_text() and OWNER in (tmp_path / "plain.csv").read_text()
    run("report", str(events), "--pseudonymize", "k" * 32, "-o", str(tmp_path / "p.html"), "--json",
        str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"))
    written = "".join((tmp_path / f"p.{ext}").read_text() for ext in ("html", "csv", "json"))
    assert OWNER not in written and "c.smit" not in written
    owners = {d["owner"] for d in json.loads((tmp_path / "p.json").read_text())["devices"] if d["owner"]}
    assert len(owners) == 2 and all(re.fullmatch(r"owner-[0-9a-f]{16}", o) for o in owners)
    assert "Communications" in written  # a department names no person


def test_the_run_record_names_the_inventory_applied(tmp_path):
    from detector.report.meta import read_sidecar

    (tmp_path / "inventory.csv").write_text(INVENTORY)
    (tmp_path / "policy.toml").write_text(POLICY)
    events = tmp_path / "events.jsonl"
    run("replay", "--no-progress", "--policy", str(tmp_path / "policy.toml"), "--inventory",
        str(tmp_path / "inventory.csv"), "--events", str(events), str(SAMPLE))
    recorded = read_sidecar(events)
    assert recorded is not None and recorded.policy is not None
    import hashlib

    assert (recorded.policy.inventory, recorded.policy.inventory_sha256, recorded.policy.inventory_devices,
            recorded.policy.class_rules) == (str(tmp_path / "inventory.csv"),
                                             hashlib.sha256(INVENTORY.encode()).hexdigest(), 2, 1)
