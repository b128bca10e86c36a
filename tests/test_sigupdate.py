"""Keeping the signatures current (``signatures update``), the readers it adds (nDPI's host
table, AdGuard's blocked services, wildcard lists), the shipped files' provenance, and the
other ByteDance apps' categories from match to policy to the written outputs.

The upstream copies here are small files written in each list's documented format (read
from the projects themselves: v2fly's ``data/`` grammar, nDPI's ``host_match[]`` rows,
AdGuard's ``services/*.yml`` and the ``services.json`` web list, HaGeZi's ``wildcard/``
lists), not the lists themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from detector.match import Signature, check_signatures, load_signatures
from detector.policy import DEFAULT_VIOLATIONS, default_policy, load_policy
from detector.records import BYTEDANCE_APP_CATEGORIES, CATEGORIES, TIKTOK_CATEGORIES, Observation, Verdict, product
from detector.sigformats import FormatError, ImportOptions, import_text
from detector.sigformats.update import (
    UPSTREAM_CODES, UpdateError, check_support, plan_update, read_accept, read_copies, write_update,
)

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = ROOT / "signatures"
#: The shipped files whose entries come from the public lists ``UPSTREAMS`` names.
LIST_FILES = ("tiktok.toml", "bytedance-apps.toml")
OPTIONS = ImportOptions(category="web", source="t")

NDPI = """\
static ndpi_network host_protocol_list[] = {
 { 0x34E69800 /* 52.230.152.0/24 */, 24, NDPI_PROTOCOL_TIKTOK },
};

static ndpi_protocol_match host_match[] =
  {
   /* Detected "x.example". a comment with "quotes" */
   { "amazon.",          "Amazon",  NDPI_PROTOCOL_AMAZON, NDPI_PROTOCOL_CATEGORY_WEB, NDPI_PROTOCOL_ACCEPTABLE, 15 },
   { "tiktokcdn.com",    "TikTok",  NDPI_PROTOCOL_TIKTOK, NDPI_PROTOCOL_CATEGORY_SOCIAL_NETWORK, NDPI_PROTOCOL_FUN, NDPI_PROTOCOL_DEFAULT_LEVEL },
   { "musical.ly",       "TikTok",  NDPI_PROTOCOL_TIKTOK, NDPI_PROTOCOL_CATEGORY_SOCIAL_NETWORK, NDPI_PROTOCOL_FUN, NDPI_PROTOCOL_DEFAULT_LEVEL },
   // { "commented.example", "TikTok", NDPI_PROTOCOL_TIKTOK, NDPI_PROTOCOL_CATEGORY_WEB, NDPI_PROTOCOL_FUN, NDPI_PROTOCOL_DEFAULT_LEVEL },
   { "dingtalk.com",     "DingTalk", NDPI_PROTOCOL_DINGTALK, NDPI_PROTOCOL_CATEGORY_CHAT, NDPI_PROTOCOL_ACCEPTABLE, NDPI_PROTOCOL_DEFAULT_LEVEL },
#ifdef CUSTOM_NDPI_PROTOCOLS
#include "custom.c.inc"
#endif
   { NULL, NULL, NDPI_PROTOCOL_UNKNOWN, NDPI_PROTOCOL_CATEGORY_UNSPECIFIED, NDPI_PROTOCOL_SAFE, NDPI_PROTOCOL_DEFAULT_LEVEL }
  };

static ndpi_category_match category_match[] = {
  { "notahost.example", CUSTOM_CATEGORY_MINING },
};
"""

ADGUARD_YML = """\
id: tiktok
name: TikTok
rules:
  - '|p16-tiktokcdn-com.akamaized.net^'
  - '||tiktokv.com^'
  - '||douyin.com^'
  - '||p16-tiktok-*.ibyteimg.com^'
group: social_network
"""

ADGUARD_WEB = json.dumps({"blocked_services": [
    {"id": "capcut", "name": "CapCut", "rules": ["||capcut.com^"]},
    {"id": "tiktok", "name": "TikTok", "rules": ["||tiktok.com^", "@@||allowed.tiktok.com^"]},
]}, indent=2)

HAGEZI = """\
# Title: test copy in HaGeZi's wildcard syntax
# Syntax: Domains Wildcard (without subdomains)
*.analytics.tiktokw.us.edgesuite.net
*.log-sg.capcutapi.com
*.mon.tiktokv.com
"""

V2FLY_TIKTOK = """\
tiktok.com @!cn
full:p16-tiktokcdn-com.akamaized.net @!cn
include:bytedance-ai # another list: not part of this one
# Ads/tracking
analytics.tiktok.com @ads
"""

V2FLY_BYTEDANCE = """\
include:tiktok
bytegoofy.com
capcut.com @!cn
"""


def write_copies(root: Path, *, hagezi: str = HAGEZI) -> Path:
    """The copies directory laid out as clones of the upstream repositories."""
    files = {
        "domain-list-community/data/tiktok": V2FLY_TIKTOK,
        "domain-list-community/data/bytedance": V2FLY_BYTEDANCE,
        "domain-list-community/data/bytedance-ai": "coze.com\n",
        "nDPI/src/lib/ndpi_content_match.c.inc": NDPI,
        "HostlistsRegistry/services/tiktok.yml": ADGUARD_YML,
        "dns-blocklists/wildcard/native.tiktok.txt": hagezi,
        "ipranges/tiktok/domain.txt": "api16-normal-c-useast1a.tiktokv.com\nwww.tiktok.com\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


SMALL_SET = """\
version = "2026-01-01"
description = "test set"

[sources]
v2fly-tiktok = "v2fly/domain-list-community data/tiktok"
ndpi = "nDPI"
hagezi = "HaGeZi"
aao-fyi = "aao-fyi"
adguard = "AdGuard"

# a comment that must survive the edit
[[entry]]
pattern = "tiktok.com"
match = "suffix"
category = "web"
source = ["v2fly-tiktok"]

[[entry]]
pattern = "tiktokv.com"
match = "suffix"
category = "api"
source = ["ndpi", "hagezi"]
note = "held by hagezi and AdGuard, not by nDPI"

[[entry]]
pattern = "gone.example"
match = "suffix"
category = "api"
source = ["ndpi"]
note = "no list holds it"

[[entry]]
pattern = "musicall.ly"
match = "suffix"
category = "app"
source = ["aao-fyi"]

[[entry]]
pattern = '^p16-tiktok-[a-z0-9-]+\\.ibyteimg\\.com$'
match = "regex"
category = "cdn"
source = ["ndpi"]

[[entry]]
pattern = "capcut.com"
match = "suffix"
category = "capcut"
source = ["v2fly-bytedance"]
"""


def small_set(tmp_path: Path) -> Path:
    directory = tmp_path / "sigs"
    directory.mkdir()
    (directory / "set.toml").write_text(SMALL_SET.replace('source = ["v2fly-bytedance"]', 'source = ["aao-fyi"]'))
    return directory


def detector(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


# ── the readers ──────────────────────────────────────────────────────────────────────


def test_ndpi_reads_one_protocols_rows_of_host_match_only() -> None:
    tiktok = import_text(NDPI, "ndpi", "c.inc", ImportOptions(category="web", source="ndpi", service="TikTok"))
    assert [(s.pattern, s.kind) for s in tiktok.entries] == [("tiktokcdn.com", "suffix"), ("musical.ly", "suffix")]
    everything = import_text(NDPI, "ndpi", "c.inc", OPTIONS)
    assert [s.pattern for s in everything.entries] == ["tiktokcdn.com", "musical.ly", "dingtalk.com"]
    assert everything.skipped == ("c.inc:8: skipped: 'amazon.' is not a host name nDPI matches as a domain",)
    by_ident = import_text(NDPI, "ndpi", "c.inc", ImportOptions(category="web", source="n", service="DINGTALK"))
    assert [s.pattern for s in by_ident.entries] == ["dingtalk.com"]


def test_ndpi_problems_name_their_line() -> None:
    broken = NDPI.replace('{ "musical.ly",', '{ musical.ly,')
    with pytest.raises(FormatError) as caught:
        import_text(broken, "ndpi", "c.inc", OPTIONS)
    assert str(caught.value).startswith("c.inc:10: not a host_match row")
    with pytest.raises(FormatError, match=r"^c.inc:0: no host_match\[\] array"):
        import_text("int x;\n", "ndpi", "c.inc", OPTIONS)
    with pytest.raises(FormatError, match=r"c.inc:0: host_match\[\] is not closed"):
        import_text(NDPI.split("#ifdef")[0], "ndpi", "c.inc", OPTIONS)


def test_adguard_services_yaml_and_web_list() -> None:
    yml = import_text(ADGUARD_YML, "adguard-services", "tiktok.yml", OPTIONS)
    assert [(s.pattern, s.kind) for s in yml.entries] == [
        ("p16-tiktokcdn-com.akamaized.net", "exact"), ("tiktokv.com", "suffix"), ("douyin.com", "suffix")]
    assert yml.skipped == ("tiktok.yml:7: skipped: wildcard rule: it matches inside names, not at label boundaries",)
    web = import_text(ADGUARD_WEB, "adguard-services", "services.json",
                      ImportOptions(category="web", source="adguard", service="tiktok"))
    assert [s.pattern for s in web.entries] == ["tiktok.com"]
    assert web.skipped[0].startswith("services.json:15: skipped: exception rule")
    assert [s.pattern for s in import_text(ADGUARD_WEB, "adguard-services", "s.json", OPTIONS).entries] == [
        "capcut.com", "tiktok.com"]


@pytest.mark.parametrize(("text", "problem"), [
    ("id: tiktok\nrules: [1, ['x']]\n", "s.yml:2: service tiktok: a rule must be a non-empty string"),
    ("id: tiktok\nrules:\n  - '||ok.example^'\n  - '||a..example^'\n", "s.yml:4: "),
    ("- a\n- b\n", "s.yml:1: a service needs an id and a list of rules"),
    ("id: [unclosed\n", "s.yml:2: not YAML or JSON"),
    ("blocked_services: 3\n", "s.yml:1: blocked_services must be a list"),
])
def test_adguard_services_problems(text: str, problem: str) -> None:
    with pytest.raises(FormatError) as caught:
        import_text(text, "adguard-services", "s.yml", OPTIONS)
    assert str(caught.value).startswith(problem)
    with pytest.raises(FormatError, match="no service with id 'capcut'"):
        import_text(ADGUARD_YML, "adguard-services", "s.yml", ImportOptions(category="web", source="a",
                                                                             service="capcut"))


def test_wildcard_lists() -> None:
    text = "# c\n*.a.example.com\nexact.example.org\nin*side.example.net\n"
    imported = import_text(text, "wildcard", "w.txt", OPTIONS)
    assert [(s.pattern, s.kind) for s in imported.entries] == [("a.example.com", "suffix"),
                                                                ("exact.example.org", "exact")]
    assert imported.skipped == ("w.txt:4: skipped: 'in*side.example.net': a wildcard inside the name matches "
                                "inside labels",)
    with pytest.raises(FormatError, match="^w.txt:2: expected one name per line, found 2 fields"):
        import_text("*.a.example\n0.0.0.0 b.example\n", "wildcard", "w.txt", OPTIONS)


# ── the update ───────────────────────────────────────────────────────────────────────


def test_copies_are_read_per_list_and_missing_ones_said(tmp_path: Path) -> None:
    copies = read_copies(write_copies(tmp_path / "copies"))
    assert set(copies.lists) == {"v2fly-tiktok", "v2fly-bytedance", "ndpi", "adguard", "hagezi", "you-oops"}
    # a v2fly list's own lines only: bytedance's include:tiktok adds nothing to it
    assert copies.lists["v2fly-bytedance"].names == {"bytegoofy.com", "capcut.com"}
    assert copies.lists["v2fly-tiktok"].names == {"tiktok.com", "p16-tiktokcdn-com.akamaized.net",
                                                  "analytics.tiktok.com"}
    assert copies.lists["ndpi"].names == {"tiktokcdn.com", "musical.ly"}  # the TikTok rows only
    assert copies.missing["aao-fyi"].startswith("no copy (hosts/data/social/tiktok.txt")
    assert copies.missing["mischosts-regex"].startswith("no copy")
    broken = tmp_path / "broken"
    write_copies(broken, hagezi="*.ok.example\ntwo fields\n")
    with pytest.raises(UpdateError, match=r"native\.tiktok\.txt:2: expected one name per line"):
        read_copies(broken)


def test_support_of_each_entry(tmp_path: Path) -> None:
    copies = read_copies(write_copies(tmp_path / "copies"))
    sigset = load_signatures(small_set(tmp_path))
    support = {s.sig.pattern: s for s in check_support(sigset, copies)}
    assert support["tiktok.com"].held == ("v2fly-tiktok",)
    assert support["tiktok.com"].others == ("you-oops",)  # names www.tiktok.com
    tiktokv = support["tiktokv.com"]
    assert (tiktokv.held, tiktokv.lost, set(tiktokv.others)) == (("hagezi",), ("ndpi",), {"adguard", "you-oops"})
    assert support["gone.example"].verdict == "unsupported"
    assert support["musicall.ly"].verdict == "unchecked"  # aao-fyi has no copy here
    # a regex is held by a list naming a host it matches; AdGuard's wildcard rule is not compared
    assert support["^p16-tiktok-[a-z0-9-]+\\.ibyteimg\\.com$"].verdict == "unsupported"
    assert support["capcut.com"].others == ("v2fly-bytedance",)


def test_update_writes_the_reviewed_refresh_in_place(tmp_path: Path) -> None:
    copies = read_copies(write_copies(tmp_path / "copies"))
    directory = small_set(tmp_path)
    accept = tmp_path / "accept.toml"
    accept.write_text('[[entry]]\npattern = "tiktokw.us.edgesuite.net"\nmatch = "suffix"\ncategory = "telemetry"\n'
                      'note = "CNAME target"\nfile = "set.toml"\n\n[[entry]]\npattern = "bytegoofy.com"\nmatch = "suffix"\n'
                      'category = "bytedance-shared"\nfile = "set.toml"\n')
    sigset = load_signatures(directory)
    plan = plan_update(sigset, copies, read_accept(accept))
    assert [s.pattern for s in plan.removed] == ["gone.example", "^p16-tiktok-[a-z0-9-]+\\.ibyteimg\\.com$"]
    assert [(a.sig.pattern, a.sig.source) for a in plan.added] == [("tiktokw.us.edgesuite.net", "hagezi"),
                                                                   ("bytegoofy.com", "v2fly-bytedance")]
    assert "coze.com" not in plan.uncovered  # an included list's names are not the including list's
    assert plan.uncovered["log-sg.capcutapi.com"] == ("hagezi",)
    written = write_update(plan, "2026-12-06")
    assert written == [str(directory / "set.toml")]
    text = (directory / "set.toml").read_text()
    assert "# a comment that must survive the edit" in text and "gone.example" not in text
    assert 'version = "2026-12-06"' in text
    assert 'v2fly-bytedance = "v2fly/domain-list-community data/bytedance' in text  # the new source described
    after = load_signatures(directory)
    assert check_signatures(directory) == []
    by = {s.pattern: s for s in after.entries}
    assert by["tiktokv.com"].source.split(",") == ["hagezi", "adguard", "you-oops"]
    assert by["musicall.ly"].source == "aao-fyi"  # unchecked: its claim stays
    assert by["capcut.com"].source == "aao-fyi,v2fly-bytedance"
    assert (by["tiktokw.us.edgesuite.net"].category, by["tiktokw.us.edgesuite.net"].source) == ("telemetry", "hagezi")
    assert after.explain("a.tiktokw.us.edgesuite.net").find("CNAME target") >= 0
    again = plan_update(after, copies, read_accept(accept))
    assert not again.removed and not again.added
    assert all(a == b for a, b in zip(after.entries, again.new.entries))


def test_an_accepted_name_no_list_holds_is_refused(tmp_path: Path) -> None:
    copies = read_copies(write_copies(tmp_path / "copies"))
    accept = tmp_path / "accept.toml"
    accept.write_text('[[entry]]\npattern = "tiktok-usts.net"\nmatch = "suffix"\ncategory = "api"\n')
    with pytest.raises(UpdateError, match="'tiktok-usts.net' \\(accepted at line 1\\) is in none of the lists"):
        plan_update(load_signatures(small_set(tmp_path)), copies, read_accept(accept))
    accept.write_text('[[entry]]\npattern = "bytegoofy.com"\nmatch = "suffix"\ncategory = "bytedance-shared"\n'
                      'file = "other.toml"\n')
    with pytest.raises(UpdateError, match="file 'other.toml' is not one of the set's files"):
        plan_update(load_signatures(tmp_path / "sigs"), copies, read_accept(accept))
    accept.write_text('[[entry]]\npattern = "x.example"\nmatch = "suffix"\ncategory = "nope"\n\n'
                      '[[entry]]\npattern = "y.example"\nmatch = "suffix"\ncategory = "api"\nsource = ["a"]\n')
    with pytest.raises(UpdateError) as caught:
        read_accept(accept)
    assert list(caught.value.problems) == [f"{accept}:1: category 'nope' is not one of " + ", ".join(CATEGORIES),
                                     f"{accept}:6: unknown key 'source' (allowed: pattern, match, category, note, file)"]


def test_update_command_reviews_then_writes(tmp_path: Path) -> None:
    copies = write_copies(tmp_path / "copies")
    directory = small_set(tmp_path)
    review = detector("signatures", "update", str(copies), "--signatures", str(directory))
    assert review.returncode == 1, review.stderr
    out = review.stdout
    assert "  aao-fyi: not read: no copy" in out and "  hagezi: 3 names from" in out
    assert "removed:\n  api:\n    - gone.example (suffix) sources: ndpi" in out
    assert "~ tiktokv.com (api): +adguard +you-oops -ndpi" in out
    assert "    ? musicall.ly (app) cites aao-fyi" in out
    assert "  capcutapi.com:\n    log-sg.capcutapi.com  (hagezi)" in out or "  log-sg.capcutapi.com  (hagezi)" in out
    assert "nothing written" in review.stderr
    assert "gone.example" in (directory / "set.toml").read_text()
    check = detector("signatures", "update", str(copies), "--signatures", str(directory), "--check")
    assert check.returncode == 1
    assert f"{directory / 'set.toml'}:25: gone.example: none of ndpi holds it" in check.stdout
    strict = detector("signatures", "update", str(copies), "--signatures", str(directory), "--check", "--strict")
    assert "musicall.ly: no copy of aao-fyi" in strict.stdout
    wrote = detector("signatures", "update", str(copies), "--signatures", str(directory), "--write")
    assert wrote.returncode == 0, wrote.stderr
    assert "gone.example" not in (directory / "set.toml").read_text()
    assert detector("signatures", "update", str(copies), "--signatures", str(directory)).returncode == 0
    bad = detector("signatures", "update", str(tmp_path / "nowhere"), "--signatures", str(directory))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a directory of upstream copies" in bad.stderr


# ── the shipped files ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", LIST_FILES)
def test_shipped_entries_cite_only_lists_the_update_reads(name: str) -> None:
    """Every entry of the list-built files names at least one public list, each code is one
    ``signatures update`` knows (so the check can be run against the copies), and the file
    describes each code as that list."""
    doc = tomllib.loads((SIGNATURES / name).read_text())
    for code, text in doc["sources"].items():
        assert code in UPSTREAM_CODES, code
        assert text == UPSTREAM_CODES[code].text, code
    for entry in doc["entry"]:
        assert entry["source"] and all(code in UPSTREAM_CODES for code in entry["source"]), entry


@pytest.mark.skipif(not os.environ.get("TIKTOK_DETECTOR_UPSTREAM"),
                    reason="set TIKTOK_DETECTOR_UPSTREAM to a directory of upstream copies "
                           "(docs/signature-update.md) to check the shipped set against them")
def test_shipped_entries_are_held_by_the_copies() -> None:
    copies = read_copies(os.environ["TIKTOK_DETECTOR_UPSTREAM"])
    unsupported = [s.sig.pattern for s in check_support(load_signatures(SIGNATURES), copies)
                   if s.verdict == "unsupported"]
    assert unsupported == []


# ── the other ByteDance apps: match, policy, outputs ─────────────────────────────────


def test_a_name_of_each_new_category_matches() -> None:
    shipped = load_signatures(SIGNATURES)
    found = {name: shipped.match(name).category for name in (
        "www.capcut.com", "log-sg.capcutapi.com", "www.larksuite.com", "v.douyin.com", "www.toutiao.com",
        "console.volcengine.com", "lf1-cdn-tos.bytegoofy.com")}
    assert found == {"www.capcut.com": "capcut", "log-sg.capcutapi.com": "capcut", "www.larksuite.com": "lark",
                     "v.douyin.com": "bytedance-other", "www.toutiao.com": "bytedance-other",
                     "console.volcengine.com": "bytedance-other", "lf1-cdn-tos.bytegoofy.com": "bytedance-shared"}
    assert not set(BYTEDANCE_APP_CATEGORIES) & set(TIKTOK_CATEGORIES)
    assert not set(BYTEDANCE_APP_CATEGORIES) & set(DEFAULT_VIOLATIONS)
    assert {product(c) for c in BYTEDANCE_APP_CATEGORIES} == {"CapCut", "Lemon8", "Lark", "another ByteDance app"}
    # Lemon8 ships no entry (no list read names one, bytedance-apps.toml judgement call 2); a site's own works
    assert not [s for s in shipped.entries if s.category == "lemon8"]


def test_lemon8_entry_of_a_sites_own_matches_and_is_judged(tmp_path: Path) -> None:
    own = tmp_path / "own.toml"
    own.write_text('version = "1"\ndescription = "a site\'s own"\n[sources]\nsite = "our own review"\n[[entry]]\npattern = "lemon8-app.com"\n'
                   'match = "suffix"\ncategory = "lemon8"\nsource = ["site"]\n')
    sig = load_signatures(own).match("www.lemon8-app.com")
    assert sig is not None and sig.category == "lemon8"
    obs = Observation(0.0, "dns-query", "www.lemon8-app.com", "198.18.0.10", None, None, "198.18.0.1", 53, "x", 1)
    assert default_policy().decide(obs, sig, None).decision == "allowed"
    policy = tmp_path / "p.toml"
    policy.write_text('[[segment]]\nname = "staff"\ncidrs = ["198.18.0.0/24"]\n'
                      'violations = ["api", "app", "cdn", "telemetry", "web", "lemon8"]\n')
    assert load_policy(policy).decide(obs, sig, None).decision == "violation"


CLIENT = "198.18.0.10"


def _queries(path: Path) -> Path:
    """A capture of one device asking for CapCut, TikTok and Lark names."""
    frames = [Ether(src="02:00:5e:10:00:01", dst="02:00:5e:10:00:02") / IP(src=CLIENT, dst="198.18.0.1")
              / UDP(sport=40000 + i, dport=53) / DNS(id=i, rd=1, qd=[DNSQR(qname=name)])
              for i, name in enumerate(("www.capcut.com", "www.tiktok.com", "www.larksuite.com"), 1)]
    for i, frame in enumerate(frames):
        frame.time = 1765000000 + i
    wrpcap(str(path), frames)
    return path


def test_without_the_app_categories_nothing_is_written_for_capcut(tmp_path: Path) -> None:
    capture = _queries(tmp_path / "q.pcap")
    events, alerts = tmp_path / "e.jsonl", tmp_path / "a.jsonl"
    result = detector("replay", "--events", str(events), "--alerts", str(alerts), "--no-progress", str(capture))
    assert result.returncode == 0, result.stderr
    written = events.read_text() + alerts.read_text()
    assert [json.loads(line)["name"] for line in events.read_text().splitlines()] == ["www.tiktok.com"]
    assert "capcut" not in written and "lark" not in written
    assert "other ByteDance apps" not in result.stderr


def test_a_segment_listing_them_writes_violations_named_as_the_app(tmp_path: Path) -> None:
    capture = _queries(tmp_path / "q.pcap")
    policy = tmp_path / "policy.toml"
    policy.write_text('[[segment]]\nname = "ministry"\ncidrs = ["198.18.0.0/24"]\n'
                      'violations = ["api", "app", "cdn", "telemetry", "web", "capcut", "lark"]\n')
    events, alerts, report = tmp_path / "e.jsonl", tmp_path / "a.jsonl", tmp_path / "r.html"
    result = detector("replay", "--policy", str(policy), "--events", str(events), "--alerts", str(alerts),
                      "--no-progress", str(capture))
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["name"], e["category"], e["decision"]) for e in written] == [
        ("www.capcut.com", "capcut", "violation"), ("www.tiktok.com", "web", "violation"),
        ("www.larksuite.com", "lark", "violation")]
    assert "1 device(s) with TikTok traffic, 1 device(s) with other ByteDance apps" in result.stderr
    assert "2 (capcut, lark)" in result.stderr
    made = detector("report", str(events), "-o", str(report))
    assert made.returncode == 0, made.stderr
    assert "Events of category capcut, lark are other ByteDance apps, not TikTok" in report.read_text()


def test_alertmanager_names_the_app_never_tiktok() -> None:
    from detector.sinks.alertmanager import alert_payload

    obs = Observation(0.0, "dns-query", "www.capcut.com", CLIENT, None, None, "198.18.0.1", 53, "x", 1)
    sig = Signature("capcut.com", "suffix", "capcut", "v2fly-bytedance")
    alert = alert_payload(Verdict(obs, sig, "ministry", CLIENT, None, "violation"), 900.0, "sensor-1")
    assert alert["labels"]["alertname"] == "ByteDanceAppUse"
    assert "reached CapCut (capcut)" in alert["annotations"]["summary"]
    assert "TikTok" not in json.dumps(alert)


def test_the_shipped_files_copy_into_an_update_that_changes_nothing_without_copies(tmp_path: Path) -> None:
    """Without any copy every cited list is unchecked: the refresh keeps the set as it is."""
    directory = tmp_path / "signatures"
    shutil.copytree(SIGNATURES, directory, ignore=shutil.ignore_patterns("refresh"))
    empty = tmp_path / "copies"
    empty.mkdir()
    result = detector("signatures", "update", str(empty), "--signatures", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added 0, removed 0, recategorised 0, match changed 0, sources changed 0" in result.stdout


def test_metrics_label_the_apps_by_their_category() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from detector.sinks.metrics import DetectorCollector, SignatureInfo

    shipped = load_signatures(SIGNATURES)
    info = SignatureInfo(shipped.version, shipped.sha256, len(shipped.entries), shipped.categories, 1.7e9)
    snapshot = {"matches.ministry.dns-query.capcut": 2, "matches.ministry.dns-query.web": 1}
    registry = CollectorRegistry()
    registry.register(DetectorCollector(lambda: snapshot, lambda: ("ministry", "default"), lambda: info))
    got = {(s.name, s.labels.get("category")): s.value
           for family in text_string_to_metric_families(generate_latest(registry).decode())
           for s in family.samples if s.name == "tiktok_detector_matches_total"}
    assert got == {("tiktok_detector_matches_total", "capcut"): 2, ("tiktok_detector_matches_total", "web"): 1}
