"""Fuzz the policy loader: the input is the bytes of a policy TOML file.

``load_policy`` reads a path, so each input is written over one temporary file made once
per process. A policy that loads is then asked to decide about a few observations.

Run alone: ``.venv/bin/python fuzz/fuzz_policy.py fuzz/corpus/policy -dict=fuzz/dicts/policy.dict``
(seed it first with ``.venv/bin/python fuzz/run.py --seeds-only policy``).

What counts as a finding: any exception other than PolicyError (the one the command line
prints as one line and exit status 2); a PolicyError message that is not one printable
line starting with the file's path; a loaded policy holding a value the loader should
have refused (a VLAN that is a bool or out of 0-4095, a MAC not in colon form, a
non-positive or non-finite dedup window, a class rule of no known class); ``decide`` raising
on a loaded policy, or deciding other than the device class's rule (else its segment) says.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import atheris
import tomllib  # noqa: F401 - imported before instrumentation: the fuzzer aims at our code, not the TOML parser
from scratch import scratch_file

with atheris.instrument_imports():
    from detector.policy import PolicyError, load_policy
    from detector.records import (
        BLIND_SPOT_CATEGORIES, CATEGORIES, DECISIONS, DEVICE_CLASSES, DeviceInfo, Observation, Signature,
    )

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
_SIGNATURES = tuple(Signature(f"{c}.example", "suffix", c, "fuzz") for c in CATEGORIES)
_CLIENTS = (
    ("198.18.10.5", "02:00:00:00:10:05", 10, "comms-office-mac"),
    ("fd00:10::5", None, None, None),
    ("203.0.113.9", "02:00:00:00:00:01", 4095, "alice-phone"),
)


def TestOneInput(data: bytes) -> None:
    path = scratch_file("fuzz-policy-", ".toml")
    path.write_bytes(data)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        message = str(exc)
        assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", message) and message.isprintable(), message
        return
    assert math.isfinite(policy.dedup_window) and policy.dedup_window > 0, policy.dedup_window
    for segment in (*policy.segments, policy.default):
        assert all(type(v) is int and 0 <= v < 4096 for v in segment.vlans), segment.vlans
        assert segment.violations <= set(CATEGORIES), segment.violations
    for exemption in policy.exemptions:
        assert exemption.mac is None or _MAC.match(exemption.mac), exemption.mac
        assert exemption.hostname is None or isinstance(exemption.hostname, str), exemption.hostname
        assert exemption.mac or exemption.network or exemption.hostname is not None, exemption
    for rule in policy.class_rules:
        assert rule.device_class in DEVICE_CLASSES and rule.decision in ("violation", "notice"), rule
    for ip, mac, vlan, hostname in _CLIENTS:
        obs = Observation(0.0, "dns-query", "a.example", ip, mac, vlan, "198.19.0.53", 53, "fuzz", 1)
        for device_class in DEVICE_CLASSES:
            info = DeviceInfo(mac or ip, device_class)
            segment = policy.segment_of(ip, vlan)
            rule = policy.rule_for(device_class, segment.name)
            violations = rule.violations if rule is not None and rule.violations is not None else segment.violations
            for signature in _SIGNATURES:
                verdict = policy.decide(obs, signature, hostname, info)
                assert verdict.decision in DECISIONS, verdict.decision
                # A category is a violation where the device's class rule or else its segment lists
                # it (a notice where the rule says so), else only a blind spot may be written.
                listed = signature.category in violations
                assert (verdict.decision in ("violation", "exempt", "notice")) == listed, verdict
                assert (verdict.decision == "notice") <= (rule is not None and rule.decision == "notice"), verdict
                assert (verdict.decision == "blind-spot") == (
                    not listed and signature.category in BLIND_SPOT_CATEGORIES)


#: Policies as the tests write them, and small variations that reach every check.
_VARIANTS = (
    '[[exemption]]\nmac = "02-00-00-00-10-05"\nreason = "lab"\n'
    '[[exemption]]\ncidr = "198.18.30.0/24"\nreason = "press room"\n',
    "dedup_window = -1",
    "dedup_window = 60.5\nviolations = []",
    "violations = ['games']",
    "colour = 1",
    "[[segment]]\nname = 's'",
    "[[segment]]\nname = 's'\ncidrs = ['10.0.0.0/33']",
    "[[segment]]\nname = 'x'\ncidrs = ['not-a-cidr']\n",
    "[[segment]]\nname = 'v'\nvlans = [1, 4095]\nviolations = ['app']\n",
    "[[exemption]]\nmac = '02:00'\nreason = 'x'",
    "[[exemption]]\nip = '198.18.0.1'",
    "[[exemption]]\nip = '198.18.0.1'\nreason = 'r'\nsegment = 'default'\n",
    "[[exemption]]\nhostname = 'Printer-*'\nreason = 'r'\n",
    "[[segment]\n",
    "[[segment]]\nname = 'guest'\ncidrs = ['198.18.20.0/24']\n[[class_rule]]\nclass = 'official'\n"
    "violations = ['app', 'bytedance-shared']\n[[class_rule]]\nclass = 'personal'\ndecision = 'notice'\n"
    "[[class_rule]]\nclass = 'personal'\nsegments = ['guest']\nviolations = []\n",
    "[[class_rule]]\nclass = 'unknown'\ndecision = 'alert'\n",
)


def seeds() -> Iterator[bytes]:
    """The example policy and the policies the tests load."""
    root = Path(__file__).resolve().parent.parent
    yield (root / "examples" / "policy.toml").read_bytes()
    for text in _VARIANTS:
        yield text.encode()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
