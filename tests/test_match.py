"""Signature loading, checking and matching: the shipped TikTok set and crafted bad files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.match import (
    SignatureError,
    SignatureSet,
    check_signatures,
    load_signatures,
)
from detector.records import BLIND_SPOT_CATEGORIES, TIKTOK_CATEGORIES, Signature

SIGNATURES = Path(__file__).resolve().parent.parent / "signatures"
TIKTOK = SIGNATURES / "tiktok.toml"
VISIBILITY = SIGNATURES / "visibility.toml"
APPS = SIGNATURES / "bytedance-apps.toml"


@pytest.fixture(scope="module")
def sigs() -> SignatureSet:
    return load_signatures(TIKTOK)


# ── the shipped signature set ────────────────────────────────────────────────────────


def test_shipped_set_is_valid_and_identified(sigs: SignatureSet) -> None:
    assert check_signatures(TIKTOK) == []
    assert check_signatures(SIGNATURES) == []
    assert sigs.version
    assert sigs.path == str(TIKTOK)
    assert sigs.sha256 == hashlib.sha256(TIKTOK.read_bytes()).hexdigest()
    assert sigs.categories == TIKTOK_CATEGORIES
    assert all(sig.source and sig.line > 0 for sig in sigs.entries)


def test_directory_load_matches_file_load(sigs: SignatureSet) -> None:
    from_dir = load_signatures(SIGNATURES)
    visibility = load_signatures(VISIBILITY)
    apps = load_signatures(APPS)
    assert from_dir.entries == apps.entries + sigs.entries + visibility.entries  # files sorted by name
    assert from_dir.path == str(SIGNATURES)


def test_visibility_set_holds_only_blind_spot_categories() -> None:
    """The second shipped set says where the sensor is blind, never that TikTok was used."""
    visibility = load_signatures(VISIBILITY)
    assert check_signatures(VISIBILITY) == []
    assert visibility.categories == BLIND_SPOT_CATEGORIES
    both = load_signatures(SIGNATURES)
    found = {name: (both.match(name).category if both.match(name) else None) for name in (
        "dns.google", "mozilla.cloudflare-dns.com", "dns.quad9.net", "abc123.dns.nextdns.io", "mask.icloud.com",
        "mask-h2.icloud.com", "engage.cloudflareclient.com", "www.quad9.net", "www.icloud.com", "google.com",
        "www.tiktok.com")}
    assert found == {
        "dns.google": "encrypted-dns", "mozilla.cloudflare-dns.com": "encrypted-dns", "dns.quad9.net": "encrypted-dns",
        "abc123.dns.nextdns.io": "encrypted-dns", "mask.icloud.com": "relay", "mask-h2.icloud.com": "relay",
        "engage.cloudflareclient.com": "vpn", "www.quad9.net": None, "www.icloud.com": None, "google.com": None,
        "www.tiktok.com": "web"}


@pytest.mark.parametrize(
    ("name", "category", "kind"),
    [
        ("tiktok.com", "web", "suffix"),
        ("www.tiktok.com", "web", "suffix"),
        ("vm.tiktok.com", "web", "suffix"),
        ("sf16-website-login.neutral.ttwstatic.com", "web", "suffix"),
        ("api16-normal-c-useast1a.tiktokv.com", "api", "suffix"),
        ("api16-core-useast5.us.tiktokv.com", "api", "suffix"),
        ("tiktok-lb-maliva.byteoversea.net", "api", "regex"),
        ("abtest-va-tiktok.byteoversea.com", "api", "regex"),
        ("api2-16-h2.musical.ly", "app", "suffix"),
        ("v16m.tiktokcdn.com", "cdn", "suffix"),
        ("pull-f5-tt01.tiktokcdn-eu.com", "cdn", "suffix"),
        ("p16-tiktok-va.ibyteimg.com", "cdn", "regex"),
        ("p16-tiktok-sign-va-h2.ibyteimg.com", "cdn", "regex"),
        ("p16-va-tiktok.ibyteimg.com", "cdn", "exact"),
        ("lf16-tiktok-common.ibytedtos.com", "cdn", "regex"),
        ("p16-tiktokcdn-com.akamaized.net", "cdn", "exact"),
        ("v16m.byteicdn.com", "cdn", "exact"),
        ("abc.tiktokcdn.com.edgesuite.net", "cdn", "suffix"),
        ("pull-f5.ttlivecdn.com.c.bytefcdn-oversea.com", "cdn", "suffix"),
        ("analytics.tiktok.com", "telemetry", "exact"),
        ("analytics-sg.tiktok.com", "telemetry", "regex"),
        ("mssdk.us.tiktok.com", "telemetry", "regex"),
        ("mcs.tiktokw.us", "telemetry", "suffix"),
        ("p16-ad-sg.ibyteimg.com", "telemetry", "exact"),
        ("sf16-telemetry-proxy-oci.tiktokcdn-us.com", "telemetry", "exact"),
        ("p16-sign-va.ibyteimg.com", "bytedance-shared", "suffix"),
        ("log.byteoversea.com", "bytedance-shared", "suffix"),
        ("direct.tiktok-lb-texas.useast5.byteoversea.net", "bytedance-shared", "suffix"),
        ("lf16-pkgcdn.pitaya-clientai.com", "bytedance-shared", "suffix"),
    ],
)
def test_known_hosts(sigs: SignatureSet, name: str, category: str, kind: str) -> None:
    sig = sigs.match(name)
    assert sig is not None, sigs.explain(name)
    assert (sig.category, sig.kind) == (category, kind), sigs.explain(name)


@pytest.mark.parametrize(
    "name",
    [
        "nottiktok.com",
        "xtiktokv.com",
        "tiktok.com.evil.example",
        "tiktokcom",
        "tiktok",
        "com",
        "google.com",
        "example.org",
        "p16-tiktok-va.ibyteimg.com.example",
        "a1.w10.akamai.net",
        "",
        ".",
        "..",
    ],
)
def test_unrelated_names_do_not_match(sigs: SignatureSet, name: str) -> None:
    assert sigs.match(name) is None, sigs.explain(name)


#: Zones the research found in TikTok lists but that serve everyone (judgement call 1).
GENERIC_ZONES = [
    "akamaized.net", "akamaihd.net", "akamai.net", "akadns.net", "edgekey.net",
    "edgesuite.net", "fastly.net", "map.fastly.net", "cloudfront.net", "amazonaws.com",
    "myqcloud.com", "liveplay.myqcloud.com", "cdntip.com", "kunluncan.com", "alikunlun.com",
    "cdngslb.com", "bsgslb.com", "wsglb0.com", "wsdvs.com", "worldfcdn.com", "worldfcdn2.com",
    "ovscdns.net", "footprint.net", "atomile.com", "rocket-cdn.com", "app.link", "onelink.me",
    "appsflyersdk.com", "launches.appsflyersdk.com", "app-measurement.com",
    "googleusercontent.com", "umeng.com", "wshifen.com", "web.app", "dvaitas.lt",
]


@pytest.mark.parametrize("zone", GENERIC_ZONES)
def test_generic_cdns_are_never_flagged_whole(sigs: SignatureSet, zone: str) -> None:
    assert sigs.match(zone) is None
    assert sigs.match(f"e1234.a.{zone}") is None
    assert sigs.match(f"p16-va-other.{zone}") is None


@pytest.mark.parametrize(
    "name", ["capcut.com", "www.capcut.com", "douyin.com", "api.amemv.com", "larksuite.com",
             "tokopedia.com", "volcengine.com", "lemon8-app.com"]
)
def test_other_bytedance_products_are_left_out(sigs: SignatureSet, name: str) -> None:
    assert sigs.match(name) is None


def test_every_domain_entry_matches_itself(sigs: SignatureSet) -> None:
    for sig in sigs.entries:
        if sig.kind in ("suffix", "exact"):
            assert sigs.match(sig.pattern) == sig, sig.pattern
        elif sig.kind == "address":
            assert sigs.match_address(sig.pattern.split("/")[0]) == sig, sig.pattern
            assert sigs.match(sig.pattern) is None  # an address is never a name


def test_address_entries_most_specific_prefix_first() -> None:
    def entry(pattern: str, category: str) -> Signature:
        return Signature(pattern, "address", category, "test")

    s = SignatureSet("1", "test", "", (entry("198.18.0.0/15", "app"), entry("198.18.7.0/24", "vpn"),
                                         entry("198.18.7.53", "encrypted-dns"), entry("fd00::/8", "relay"),
                                         Signature("example.com", "suffix", "web", "test")))
    assert [s.match_address(a).category for a in ("198.19.1.1", "198.18.7.1", "198.18.7.53", "fd00:1::1")] == [
        "app", "vpn", "encrypted-dns", "relay"]
    assert s.match_address("203.0.113.1") is None and s.match_address("not an address") is None
    assert s.match_address("::ffff:198.18.7.53") is None  # another family, another address
    assert s.prefilter_keys() == ("example.com",)
    assert "address '198.18.7.53'" in s.explain("198.18.7.53") and "no address entry" in s.explain("203.0.113.1")


@pytest.mark.parametrize(("pattern", "want"), [
    ("1.1.1.1/24", "without host bits"), ("01.1.1.1", "not an IP address"), ("2606:4700:4700:0::1111",
     "must be written '2606:4700:4700::1111'"), ("1.1.1.1/32", "must be written '1.1.1.1'"), ("dns.google", "not an IP"),
])
def test_bad_address_patterns_are_refused_at_their_line(tmp_path: Path, pattern: str, want: str) -> None:
    path = tmp_path / "addresses.toml"
    path.write_text(f'version = "1"\ndescription = "d"\n[sources]\nx = "y"\n[[entry]]\npattern = "{pattern}"\n'
                    f'match = "address"\ncategory = "encrypted-dns"\nsource = ["x"]\n')
    problems = check_signatures(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:6: ") and want in problems[0], problems


def test_explain_names_the_entry_and_why(sigs: SignatureSet) -> None:
    text = sigs.explain("p16-tiktok-va.ibyteimg.com")
    sig = sigs.match("p16-tiktok-va.ibyteimg.com")
    assert sig is not None
    assert text.splitlines()[0] == "p16-tiktok-va.ibyteimg.com: cdn"
    assert f"{TIKTOK}:{sig.line}" in text and sig.pattern in text and "ndpi" in text
    assert "also matches, less specific: suffix 'ibyteimg.com'" in text

    shared = sigs.explain("p16-sign-va.ibyteimg.com")
    assert "tried first without a match: '^p16-tiktok-" in shared

    none = sigs.explain("x.akamaized.net")
    assert none.startswith("x.akamaized.net: no match")
    assert "'akamaized.net'" in none and "no regex is keyed" in none


# ── precedence on a hand-built set ───────────────────────────────────────────────────


def _set(*entries: tuple[str, str, str]) -> SignatureSet:
    sigs = tuple(Signature(p, k, c, "test", i + 1) for i, (p, k, c) in enumerate(entries))
    return SignatureSet(version="t", path="mem", sha256="0", entries=sigs)


def test_precedence_most_specific_wins() -> None:
    s = _set(
        ("example.com", "suffix", "web"),
        ("a.example.com", "exact", "telemetry"),
        ("b.example.com", "suffix", "api"),
        (r"^img-[0-9]+\.example\.com$", "regex", "cdn"),
        (r"^x[a-z]*\.b\.example\.com$", "regex", "app"),
        ("deep.b.example.com", "suffix", "bytedance-shared"),
    )
    cat = lambda name: (m.category if (m := s.match(name)) else None)  # noqa: E731
    assert cat("example.com") == "web"
    assert cat("a.example.com") == "telemetry"  # exact beats suffix
    assert cat("z.a.example.com") == "web"  # exact is not a suffix
    assert cat("img-7.example.com") == "cdn"  # regex beats the suffix of its own domain
    assert cat("img-x.example.com") == "web"
    assert cat("xyz.b.example.com") == "app"  # regex keyed on the longer domain
    assert cat("q.b.example.com") == "api"
    assert cat("xdeep.b.example.com") == "app"
    assert cat("deep.b.example.com") == "bytedance-shared"  # longer suffix beats the regex
    assert cat("img-1.b.example.com") == "api"
    assert cat("notexample.com") is None
    assert s.categories == ("app", "api", "cdn", "telemetry", "web", "bytedance-shared")


def test_regex_lives_inside_its_literal_domain() -> None:
    # Compiled as (?:BODY)\.DOMAIN: even a top-level alternation cannot reach a name
    # outside the domain the prefilter keys it on.
    s = _set((r"^evil\.org|x\.example\.com$", "regex", "web"))
    assert s.match("evil.org") is None
    assert s.match("x.example.com") is not None
    assert s.match("evil.org.example.com") is not None


def test_hand_built_set_rejects_what_the_loader_rejects() -> None:
    with pytest.raises(SignatureError, match=r"^mem:1: regex .* does not compile"):
        _set((r"^a(\.example\.com$", "regex", "web"))
    with pytest.raises(SignatureError, match=r"^mem:2: duplicate pattern"):
        _set(("a.com", "suffix", "web"), ("a.com", "exact", "web"))
    with pytest.raises(SignatureError, match=r"^mem:1: unknown match kind"):
        _set(("a.com", "prefix", "web"))


# ── error reporting ──────────────────────────────────────────────────────────────────

#: A file with many problems; each line is (text, substring expected in that line's problem).
BAD_FILE = [
    ('version = "test"', None),
    ('description = "bad on purpose"', None),
    ('colour = "red"', "unknown top-level key 'colour'"),
    ("", None),
    ("[sources]", None),
    ('lst = "a list"', None),
    ('empty = ""', "source 'empty' must be a non-empty string"),
    ("", None),
    ("[[entry]]", None),
    ('pattern = "Example.COM"', "must be lowercase"),
    ('match = "suffix"', None),
    ('category = "web"', None),
    ('source = ["lst"]', None),
    ("", None),
    ("[[entry]]", None),
    ('pattern = "example.org"', None),
    ('match = "prefix"', "unknown match kind 'prefix'"),
    ('category = "video"', "unknown category 'video'"),
    ('source = ["nope"]', "unknown source code(s) 'nope'"),
    ('colour = "blue"', "unknown key 'colour' in [[entry]]"),
    ("", None),
    ("[[entry]]  # no category", "missing key 'category'"),
    (r"pattern = '^foo(\.example\.net$'", "does not compile"),
    ('match = "regex"', None),
    ('source = ["lst"]', None),
    ("", None),
    ("[[entry]]", None),
    ('pattern = "example.net"', None),
    ('match = "exact"', None),
    ('category = "cdn"', None),
    ('source = ["lst"]', None),
    ("", None),
    ("[[entry]]", None),
    ('pattern = "example.net"', "duplicate pattern 'example.net' (first at {file}:28)"),
    ('match = "suffix"', None),
    ('category = "cdn"', None),
    ('source = ["lst", "lst"]', "lists a code twice"),
    ("", None),
    ("[[entry]]", None),
    ('pattern = "com"', "needs at least two labels"),
    ('match = "suffix"', None),
    ('category = "web"', None),
    ('source = ["lst"]', None),
    ("[[entry]]", None),
    ('pattern = "a..b.com"', "empty label"),
    ('match = "exact"', None),
    ('category = "web"', None),
    ('source = ["lst"]', None),
    ("[[entry]]", None),
    ('pattern = "10.0.0.1"', "looks like an IP address"),
    ('match = "exact"', None),
    ('category = "web"', None),
    ('source = ["lst"]', None),
    ("[[entry]]", None),
    ('pattern = "-bad.example.com"', "only a-z, 0-9 and inner hyphens"),
    ('match = "suffix"', None),
    ('category = "web"', None),
    ('source = ["lst"]', None),
    ("[[entry]]", None),
    ('pattern = "p16-tiktok-*.ibyteimg.com"', "must be anchored and end in a literal domain"),
    ('match = "regex"', None),
    ('category = "cdn"', None),
    ('source = ["lst"]', None),
    ("[[entry]]", None),
    (r"pattern = '^x\.com$'", "needs at least two labels"),
    ('match = "regex"', None),
    ('category = "cdn"', None),
    ("source = []", "non-empty array"),
]


def test_check_reports_every_problem_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(text for text, _ in BAD_FILE) + "\n")
    problems = check_signatures(path)
    expected = [
        (number, want.format(file=path))
        for number, (_, want) in enumerate(BAD_FILE, 1)
        if want is not None
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for problem, (number, want) in zip(problems, expected):
        assert problem.startswith(f"{path}:{number}: "), (problem, number)
        assert want in problem, (problem, want)
        assert "\n" not in problem

    with pytest.raises(SignatureError) as caught:
        load_signatures(path)
    assert str(caught.value) == f"{problems[0]} (and {len(problems) - 1} more)"
    assert list(caught.value.problems) == problems


@pytest.mark.parametrize(
    ("text", "line", "want"),
    [
        ('version = "1"\ndescription = "d"\nsources = \n', 3, "TOML syntax error: Invalid value"),
        ('version = "1"\ndescription = "unterminated\n', 2, "Illegal character '\\n' (column 28)"),
        ('version = """unterminated\n\n', 3, "Unterminated string (at end of file)"),
        ('[[entry]]\npattern = "a.com"\npattern = "b.com"\n', 3, "Cannot overwrite a value"),
        ("x = [1,\n2,\n", 3, "(at end of file)"),
    ],
)
def test_toml_syntax_errors_carry_the_line(tmp_path: Path, text: str, line: int, want: str) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text(text)
    (problem,) = check_signatures(path)
    assert problem.startswith(f"{path}:{line}: ") and want in problem


def test_structural_problems(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("# nothing here\n")
    assert check_signatures(path) == [
        f"{path}:1: missing top-level key 'version'",
        f"{path}:1: missing top-level key 'description'",
        f"{path}:1: missing [sources] table (source code = description of the public list)",
        f"{path}:1: no [[entry]] tables",
    ]
    inline = tmp_path / "inline.toml"
    inline.write_text(
        'version = "1"\ndescription = "d"\nsources = {a = "b"}\n'
        'entry = [{pattern = "a.com", match = "suffix", category = "web", source = ["a"]}]\n'
    )
    assert check_signatures(inline) == [
        f"{inline}:4: write each entry as its own [[entry]] table (no inline arrays of tables)"
    ]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'version = "1"\n\xff\xfe\n')
    assert check_signatures(binary) == [f"{binary}:2: not UTF-8 text"]
    missing = tmp_path / "missing.toml"
    (problem,) = check_signatures(missing)
    assert problem.startswith(f"{missing}:0: cannot read")


def test_deeply_nested_toml_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("version = " + "[" * 3000 + "]" * 3000 + "\n")
    assert check_signatures(path) == [f"{path}:0: arrays or inline tables nested too deeply"]


def _good(pattern: str, version: str = "1") -> str:
    return (
        f'version = "{version}"\ndescription = "d"\n[sources]\nlst = "a list"\n\n'
        f'[[entry]]\npattern = "{pattern}"\nmatch = "suffix"\ncategory = "web"\nsource = ["lst"]\n'
    )


def test_directory_of_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(_good("a.example", "v1"))
    (tmp_path / "b.toml").write_text(_good("b.example", "v2"))
    (tmp_path / "notes.txt").write_text("ignored")
    sigs = load_signatures(tmp_path)
    assert [s.pattern for s in sigs.entries] == ["a.example", "b.example"]
    assert sigs.version == "a:v1,b:v2"
    assert len(sigs.sha256) == 64
    assert f"{tmp_path / 'b.toml'}:6" in sigs.explain("x.b.example")

    (tmp_path / "c.toml").write_text(_good("a.example"))
    assert check_signatures(tmp_path) == [
        f"{tmp_path / 'c.toml'}:7: duplicate pattern 'a.example' (first at {tmp_path / 'a.toml'}:7)"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_signatures(empty) == [f"{empty}:0: no *.toml signature files in this directory"]


# ── properties ───────────────────────────────────────────────────────────────────────

_REGEX_ZONES = [
    "ibyteimg.com", "ibytedtos.com", "tiktok.com", "us.tiktok.com", "byteoversea.net",
    "byteoversea.com",
]
_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)


def _reference(entries: tuple[Signature, ...], name: str) -> Signature | None:
    """Brute force over every entry: exact first, then the longest literal domain, regex
    before suffix at equal length, file order last — the documented precedence."""
    for sig in entries:
        if sig.kind == "exact" and sig.pattern == name:
            return sig
    best: tuple[int, int, int] | None = None
    found = None
    for order, sig in enumerate(entries):
        if sig.kind == "suffix" and (name == sig.pattern or name.endswith("." + sig.pattern)):
            rank = (len(sig.pattern), 0, -order)
        elif sig.kind == "regex" and re.fullmatch(sig.pattern, name):
            tail = re.search(r"((?:\\\.[a-z0-9-]+)+)\$$", sig.pattern)
            assert tail is not None
            rank = (len(tail[1].replace("\\.", ".")) - 1, 1, -order)
        else:
            continue
        if best is None or rank > best:
            best, found = rank, sig
    return found


@st.composite
def _names(draw: st.DrawFn, entries: tuple[Signature, ...]) -> str:
    """Names near the signatures: labels in front of patterns, glued prefixes, regex hosts."""
    domains = [s.pattern for s in entries if s.kind != "regex"]
    base = draw(st.sampled_from(domains))
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return ".".join(draw(st.lists(_LABEL, min_size=1, max_size=3)) + [base])
    if shape == 1:
        return draw(_LABEL) + base  # glued: not at a label boundary
    if shape == 2:
        prefix = draw(st.sampled_from(["p16-tiktok-", "lf16-tiktok-", "analytics", "mcs-", "x-"]))
        return f"{prefix}{draw(_LABEL)}.{draw(st.sampled_from(_REGEX_ZONES))}"
    if shape == 3:
        return base + "." + draw(_LABEL)
    return draw(st.text(alphabet="abikmnopt-.0169", max_size=40))


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_match_agrees_with_brute_force(sigs: SignatureSet, data: st.DataObject) -> None:
    name = data.draw(_names(sigs.entries))
    assert sigs.match(name) == _reference(sigs.entries, name)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=300))
def test_match_and_explain_never_raise(sigs: SignatureSet, name: str) -> None:
    result = sigs.match(name)
    assert result is None or isinstance(result, Signature)
    assert sigs.explain(name).startswith(f"{name}: ")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), label=_LABEL)
def test_suffix_entries_cover_their_subdomains_only(
    sigs: SignatureSet, data: st.DataObject, label: str
) -> None:
    entry = data.draw(st.sampled_from([s for s in sigs.entries if s.kind == "suffix"]))
    under = sigs.match(f"{label}.{entry.pattern}")
    assert under is not None
    # The hit is the entry itself or a more specific one inside it.
    assert under == entry or len(under.pattern) > len(entry.pattern) or under.kind == "regex"
    assert sigs.match(f"{label}{entry.pattern}") != entry


@pytest.mark.parametrize("pattern", [r"^(a+)+\.x\.example\.com$", r"^(?:[a-z]*)*\.example\.com$",
                                     r"^([a-z0-9]+-?)+\.example\.com$"])
def test_a_regex_that_backtracks_exponentially_is_refused(pattern) -> None:
    """A name comes from a device: ^(a+)+... against 'aaaa…!.x.example.com' takes seconds
    per name, and grows twofold per letter. Such a set is refused when loaded."""
    with pytest.raises(SignatureError, match=r"^mem:1: regex .*a repetition inside a repetition"):
        _set((pattern, "regex", "web"))
    assert _set((r"^p16-tiktok-[a-z0-9-]+\.example\.com$", "regex", "cdn")).match("p16-tiktok-va.example.com")


def test_a_problem_is_one_printable_line_whatever_the_pattern_holds() -> None:
    """re quotes the characters of a bad range raw in its message: a tab or a newline in a
    pattern made the FILE:LINE: problem two lines (found by fuzz/fuzz_signatures.py)."""
    with pytest.raises(SignatureError) as info:
        _set(("^[a-\t\n]+\\.example\\.com$", "regex", "web"))
    assert all(problem.isprintable() for problem in info.value.problems) and str(info.value).isprintable()


# ── the keys the C skim triages DNS names by ─────────────────────────────────────────


def _may_match(keys: tuple[str, ...], name: str) -> bool:
    return any(name == key or name.endswith("." + key) for key in keys)


@settings(max_examples=300, deadline=None)
@given(name=st.from_regex(r"(?:[a-z0-9-]{1,12}\.){0,4}(?:tiktok|tiktokv|ibyteimg|byteoversea|musical|example)"
                          r"\.(?:com|ly|org|net)", fullmatch=True))
def test_prefilter_keys_hold_every_name_the_set_matches(sigs: SignatureSet, name: str) -> None:
    """The skim drops a DNS message none of whose names equals a key or ends in "." and a
    key: a name the set matches must always be one of those."""
    keys = sigs.prefilter_keys()
    assert keys is not None
    if sigs.match(name) is not None:
        assert _may_match(keys, name)


def test_prefilter_keys_of_each_entry_kind() -> None:
    s = _set(("a.example.com", "exact", "web"), ("tiktok.com", "suffix", "app"),
             (r"^p16-[a-z]+\.ibyteimg\.com$", "regex", "cdn"))
    assert sorted(s.prefilter_keys()) == ["a.example.com", "ibyteimg.com", "tiktok.com"]
    # A key the C index cannot take (only a hand-built set holds one): no triage at all.
    assert _set(("Tiktok.com", "suffix", "app")).prefilter_keys() is None
