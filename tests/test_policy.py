"""Policy: segments by CIDR and VLAN, violation categories, exemptions, file errors;
the device table; alert deduplication."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detector.devices import DeviceTable
from detector.extract.binding import Binding
from detector.policy import PolicyError, default_policy, load_policy
from detector.records import Observation, Signature
from detector.sinks.alerts import AlertTable

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
TIKTOK_WEB = Signature("tiktok.com", "suffix", "web", "test")
SHARED = Signature("ibyteimg.com", "suffix", "bytedance-shared", "test")


def obs(ip="198.18.10.5", vlan=10, mac="02:00:00:00:10:05", ts=1000.0, name="www.tiktok.com", proto="dns-query"):
    return Observation(ts, proto, name, ip, mac, vlan, "198.19.0.53", 53, "t.pcap", 1)


def test_without_a_file_everything_is_one_monitored_segment():
    verdict = default_policy().decide(obs(ip="203.0.113.9", vlan=None), TIKTOK_WEB, None)
    assert (verdict.segment, verdict.decision, verdict.device) == ("default", "violation", "02:00:00:00:10:05")
    assert default_policy().decide(obs(), SHARED, None).decision == "allowed"  # shared infra: no violation by default


def test_example_policy_segments_and_categories():
    policy = load_policy(EXAMPLE)
    assert policy.decide(obs(), SHARED, None).segment == "staff"
    guest_shared = policy.decide(obs(ip="198.18.20.7", vlan=20), SHARED, None)
    assert (guest_shared.segment, guest_shared.decision) == ("guest", "allowed")  # guests: shared infra allowed
    assert policy.decide(obs(ip="198.18.20.7", vlan=20), TIKTOK_WEB, None).decision == "allowed"  # and web
    assert policy.decide(obs(ip="198.18.20.7", vlan=20), Signature("tiktokv.com", "suffix", "api", "t"), None).segment == "guest"
    # The staff segment wants both its VLAN and its CIDR: a staff address on the guest VLAN is not staff.
    assert policy.decide(obs(ip="198.18.10.5", vlan=20), TIKTOK_WEB, None).segment == "default"
    assert policy.decide(obs(ip="fd00:10::5", vlan=10), TIKTOK_WEB, None).segment == "staff"


def test_exemption_by_hostname_pattern_is_limited_to_its_segment():
    policy = load_policy(EXAMPLE)
    assert policy.decide(obs(), TIKTOK_WEB, "comms-office-mac").decision == "exempt"
    assert policy.decide(obs(), TIKTOK_WEB, "alice-phone").decision == "violation"
    assert policy.decide(obs(ip="203.0.113.9", vlan=None), TIKTOK_WEB, "comms-office-mac").decision == "violation"


def test_a_hostname_alone_needs_trust_hostname(tmp_path):
    """Any phone can call itself comms-office-x in DHCP: an exemption by hostname alone is
    refused unless the policy says it accepts that, and with a MAC it needs no flag."""
    path = tmp_path / "p.toml"
    path.write_text('[[exemption]]\nhostname = "comms-office-*"\nreason = "press"\n')
    with pytest.raises(PolicyError, match=r"exemption #1: a hostname alone is the name a device gives itself"):
        load_policy(path)
    path.write_text('[[exemption]]\nhostname = "comms-office-*"\nreason = "press"\ntrust_hostname = "yes"\n')
    with pytest.raises(PolicyError, match=r"exemption #1: trust_hostname must be true or false"):
        load_policy(path)
    path.write_text('[[exemption]]\nhostname = "comms-office-*"\nreason = "press"\ntrust_hostname = true\n')
    assert [e.trust_hostname for e in load_policy(path).exemptions] == [True]
    path.write_text('[[exemption]]\nhostname = "comms-office-*"\nmac = "02:00:00:00:10:05"\nreason = "press"\n')
    assert [e.trust_hostname for e in load_policy(path).exemptions] == [False]


def test_exemption_by_mac_and_cidr(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[exemption]]\nmac = "02-00-00-00-10-05"\nreason = "lab"\n'
                    '[[exemption]]\ncidr = "198.18.30.0/24"\nreason = "press room"\n')
    policy = load_policy(path)
    assert policy.decide(obs(), TIKTOK_WEB, None).decision == "exempt"
    assert policy.decide(obs(mac=None, ip="198.18.30.4"), TIKTOK_WEB, None).decision == "exempt"
    assert policy.decide(obs(mac=None, ip="198.18.31.4"), TIKTOK_WEB, None).decision == "violation"


@pytest.mark.parametrize("text, message", [
    ("dedup_window = -1", "dedup_window"),
    ("violations = ['games']", "unknown categor"),
    ("colour = 1", "unknown key"),
    ("[[segment]]\nname = 's'", "give cidrs, vlans or both"),
    ("[[segment]]\nname = 's'\ncidrs = ['10.0.0.0/33']", "10.0.0.0/33"),
    ("[[exemption]]\nmac = '02:00'\nreason = 'x'", "not a MAC"),
    ("[[exemption]]\nip = '198.18.0.1'", "needs a reason"),
    ("[[segment]\n", "line 1"),
])
def test_bad_policy_files_give_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    # Each of these once ended in a traceback, a Python-internal message or a silent misreading.
    ("[[exemption]]\nhostname = 5\nreason = 'x'", "exemption #1: hostname must be a non-empty string"),
    ("[[exemption]]\nmac = 'zz'\nreason = 'x'", "exemption #1: mac 'zz' is not a MAC address"),
    ("[[segment]]\nname = 's'\nvlans = [true]", "segment #1: vlans must be a list of VLAN ids 0-4095"),
    ("[[exemption]]\nmac = '02-000-0-00-10-05'\nreason = 'x'", "exemption #1: mac '02-000-0-00-10-05' is not"),
    ("[[exemption]]\nip = 5\nreason = 'x'", "exemption #1: ip must be a string"),
    ("[[exemption]]\nhostname = 'h'\nsegment = ['s']\nreason = 'x'", "exemption #1: segment ['s'] is not"),
    ("segment = {name = 's'}", "top level: segment must be [[segment]] tables"),
    ("violations = " + "[" * 2000 + "]" * 2000, "arrays or inline tables nested too deeply"),
])
def test_known_bad_values_name_their_table_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert re.match(rf"{re.escape(str(path))}(:\d+)?: {re.escape(message)}", str(info.value)), str(info.value)
    assert "\n" not in str(info.value)


def test_exemption_macs_are_kept_in_the_colon_form_observations_carry(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("".join(f"[[exemption]]\nmac = '{mac}'\nreason = 'r'\n"
                            for mac in ("0200.0000.1005", "020000001005", "02:00:00:00:10:05")))
    assert {e.mac for e in load_policy(path).exemptions} == {"02:00:00:00:10:05"}


def test_device_table_follows_rebinding_and_is_bounded():
    table = DeviceTable(max_entries=2)
    table.learn(Binding("02:00:00:00:00:01", "198.18.10.1", "alice-phone"))
    assert table.hostname(None, "198.18.10.1") == "alice-phone"
    assert table.hostname("02:00:00:00:00:01", "198.18.99.9") == "alice-phone"
    table.learn(Binding("02:00:00:00:00:02", "198.18.10.1", None))  # the address moved to another device
    assert table.hostname(None, "198.18.10.1") is None
    table.learn(Binding("02:00:00:00:00:03", "198.18.10.3", None))
    table.learn(Binding("02:00:00:00:00:04", "198.18.10.4", None))
    # Two IP bindings fit: the oldest (198.18.10.1) went; alice's name (one entry) stays.
    assert table.evicted == 1 and len(table) == 3
    assert table.hostname("02:00:00:00:00:01", "198.18.10.1") == "alice-phone"


def test_alerts_fold_a_window_and_reopen_after_it():
    emitted = []
    table = AlertTable(window=60, emit=emitted.append)
    policy = default_policy()
    for ts, name, proto in [(0, "www.tiktok.com", "dns-query"), (10, "m.tiktok.com", "tls-sni"), (59, "www.tiktok.com", "dns-query")]:
        table.add(policy.decide(obs(ts=ts, name=name, proto=proto), TIKTOK_WEB, "alice-phone"))
    assert not emitted
    table.tick(59.5)
    assert not emitted
    table.add(policy.decide(obs(ts=61), TIKTOK_WEB, None))  # a new window
    assert len(emitted) == 1
    alert = emitted[0]
    assert (alert["count"], alert["names"], alert["protos"], alert["hostname"]) == (
        3, ["m.tiktok.com", "www.tiktok.com"], {"dns-query": 2, "tls-sni": 1}, "alice-phone")
    assert alert["first_seen"] == "1970-01-01T00:00:00.000000Z" and alert["last_seen"].startswith("1970-01-01T00:00:59")
    table.tick(200)
    assert len(emitted) == 2 and emitted[1]["count"] == 1
    assert (table.emitted, table.suppressed) == (2, 2)


def test_exempt_verdicts_never_alert():
    emitted = []
    table = AlertTable(window=60, emit=emitted.append)
    verdict = load_policy(EXAMPLE).decide(obs(), TIKTOK_WEB, "comms-office-mac")
    table.add(verdict)
    table.flush()
    assert verdict.decision == "exempt" and not emitted


def test_the_run_record_names_the_policy_as_loaded(tmp_path):
    """The run record used to hash the policy file at the end of the run: a file edited
    meanwhile was recorded as if it had been applied."""
    import hashlib

    from detector.report.meta import policy_info

    path = tmp_path / "policy.toml"
    path.write_text("dedup_window = 900\n")
    applied = hashlib.sha256(path.read_bytes()).hexdigest()
    policy = load_policy(path)
    path.write_text("dedup_window = 60\n")
    info = policy_info(policy)
    assert info.sha256 == applied and info.dedup_window == 900
    assert info.loaded_at is not None and info.loaded_at.endswith("Z")


@pytest.mark.parametrize("value", ["1" + "0" * 400, "inf", "nan", "0", "-5", "31622401"])
def test_dedup_window_out_of_range_is_one_line(tmp_path, value):
    """A 400-digit window overflowed a float (an OverflowError traceback); inf, nan, 0 and
    more than a year are refused too."""
    path = tmp_path / "p.toml"
    path.write_text(f"dedup_window = {value}\n")
    with pytest.raises(PolicyError, match="dedup_window must be a number of seconds above 0"):
        load_policy(path)


def test_errors_name_the_line_of_the_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('dedup_window = 900\n\n[[segment]]\nname = "staff"\ncidrs = ["198.18.10.0/24"]\n'
                    'vlans = [true]\n\n[[exemption]]\nreason = "x"\nmac = "zz"\n')
    with pytest.raises(PolicyError, match=rf"^{re.escape(str(path))}:6: segment #1: vlans must be"):
        load_policy(path)
    path.write_text(path.read_text().replace("[true]", "[10]"))
    with pytest.raises(PolicyError, match=rf"^{re.escape(str(path))}:10: exemption #1: mac 'zz'"):
        load_policy(path)
    path.write_text("dedup_window = -1\n")
    with pytest.raises(PolicyError, match=rf"^{re.escape(str(path))}:1: top level: dedup_window"):
        load_policy(path)


DOH = Signature("dns.google", "suffix", "encrypted-dns", "test")
VPN = Signature("engage.cloudflareclient.com", "exact", "vpn", "test")


def test_blind_spots_are_written_never_alerted_unless_a_segment_bans_them(tmp_path):
    """A visibility category is a ``blind-spot`` (written, counted, never alerted) on a
    segment that does not list it; a segment that lists it (staff may not use VPNs) makes
    it a violation like any other, exemptions included."""
    verdict = default_policy().decide(obs(name="dns.google", proto="tls-sni"), DOH, None)
    assert verdict.decision == "blind-spot"
    emitted = []
    table = AlertTable(window=60, emit=emitted.append)
    table.add(verdict)
    table.flush()
    assert not emitted
    path = tmp_path / "p.toml"
    path.write_text('[[segment]]\nname = "staff"\ncidrs = ["198.18.10.0/24"]\n'
                    'violations = ["api", "web", "vpn"]\n')
    policy = load_policy(path)
    assert policy.decide(obs(name="engage.cloudflareclient.com"), VPN, None).decision == "violation"
    assert policy.decide(obs(name="dns.google"), DOH, None).decision == "blind-spot"
    assert policy.decide(obs(ip="203.0.113.9", vlan=None, name="engage.cloudflareclient.com"), VPN,
                         None).decision == "blind-spot"  # the default segment does not ban VPNs


def test_inferred_matches_are_reported_unless_the_policy_makes_them_violations(tmp_path):
    inferred = Observation(1000.0, "tls-sni", "www.tiktok.com", "198.18.10.5", "02:00:00:00:10:05", 10,
                           "198.19.1.10", 443, "t.pcap", 6, evidence="dns-answer-address", evidence_pcap="t.pcap",
                           evidence_frame=2)
    assert default_policy().decide(inferred, TIKTOK_WEB, None).decision == "inferred"
    assert default_policy().decide(inferred, SHARED, None).decision == "allowed"  # not a violation category
    path = tmp_path / "p.toml"
    path.write_text('inferred = "violation"\n')
    assert load_policy(path).decide(inferred, TIKTOK_WEB, None).decision == "violation"
    path.write_text('inferred = "alert"\n')
    with pytest.raises(PolicyError, match=r'p.toml:1: top level: inferred must be "report"'):
        load_policy(path)
