"""Fuzz the signature interop formats: every importer (nDPI's host table, AdGuard's blocked
services and wildcard lists among them), and export -> import round trips.

The first byte picks the import format, the rest is the file's text (UTF-8, undecodable
bytes replaced, as a reader that got past decoding sees it). A name the text refers to (a
v2fly ``include:``, a Suricata dataset ``load``) resolves to the same text under another
label, so includes and datasets are exercised, loops included.

What counts as a finding: any exception other than FormatError (the one the command line
prints as one line and exit status 2); a problem that is not one printable ``LABEL:LINE:
message`` line with LINE inside the file; and, for a list that imports, TOML written by
``to_toml`` that the signature loader refuses, or an export in any format that does not
import back to the same entries (those the format can hold).

Run alone: ``.venv/bin/python fuzz/fuzz_sigformats.py fuzz/corpus/sigformats
-dict=fuzz/dicts/sigformats.dict`` (seed it first with
``.venv/bin/python fuzz/run.py --seeds-only sigformats``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import atheris
import dns.zone  # noqa: F401 - imported before instrumentation: the fuzzer aims at our code
import yaml  # noqa: F401 - likewise (AdGuard services are read with it)
import tomllib  # noqa: F401 - likewise
from scratch import scratch_file

with atheris.instrument_imports():
    from detector.match import load_signatures
    from detector.sigformats import (
        EXPORT_FORMATS, IMPORT_FORMATS, FormatError, ImportOptions, export_signatures, import_text, to_toml,
    )

_PROBLEM = re.compile(r"(?P<label>x|x2):(?P<line>\d+): (?P<message>.+)\Z")
_OPTIONS = ImportOptions(category="web", source="fuzz")
#: Formats whose export holds regexes; the others leave them out.
_WITH_REGEX = {"suricata", "adblock", "v2fly"}


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    fmt = IMPORT_FORMATS[data[0] % len(IMPORT_FORMATS)]
    text = data[1:].decode("utf-8", errors="replace")
    lines = text.count("\n") + 1
    try:
        imported = import_text(text, fmt, "x", _OPTIONS, resolve=lambda name: ("x2", text))
    except FormatError as exc:
        assert exc.problems and str(exc).startswith(exc.problems[0]), str(exc)
        for problem in exc.problems:
            parsed = _PROBLEM.match(problem)
            if parsed is None:  # problems about the options name no line
                assert problem.startswith("--") and problem.isprintable(), problem
                continue
            assert problem.isprintable(), problem
            assert 0 <= int(parsed["line"]) <= lines, (problem, lines)
        return
    path = scratch_file("fuzz-sigformats-", ".toml")
    path.write_text(to_toml(imported), encoding="utf-8")
    loaded = load_signatures(path)
    assert {s.pattern for s in loaded.entries} == {s.pattern for s in imported.entries}
    for out_fmt in EXPORT_FORMATS:
        want = {(s.pattern, s.kind, s.category) for s in loaded.entries
                if out_fmt in _WITH_REGEX or s.kind != "regex"}
        if not want:
            continue  # a set of regexes only: nothing for a format without patterns to hold
        exported = export_signatures(loaded, out_fmt)
        said = sum(int(w.split(": ", 1)[1].split()[0]) for w in exported.warnings if "regex entries left out" in w)
        if out_fmt in _WITH_REGEX and said == len(want):
            continue  # every entry was a regex this format could not hold, and it said so
        files = dict(exported.files)
        main = files[next(iter(files))]
        again = import_text(main, out_fmt, "y", ImportOptions(zone="tiktok.rpz"),
                            resolve=lambda name: ("y", files[name]) if name in files else None)
        got = {(s.pattern, s.kind, s.category) for s in again.entries}
        assert got <= want, (out_fmt, got - want)
        dropped = want - got  # only regexes a format had to leave out, and it said how many
        if out_fmt in _WITH_REGEX:
            assert all(kind == "regex" for _, kind, _ in dropped) and len(dropped) == said, (out_fmt, dropped)
        else:
            assert not dropped, (out_fmt, dropped)


def seeds() -> Iterator[bytes]:
    """The shipped set exported in every format, and small hand-written lists of each."""
    root = Path(__file__).resolve().parent.parent
    sigset = load_signatures(root / "signatures" / "tiktok.toml")
    for fmt in EXPORT_FORMATS:
        for text in export_signatures(sigset, fmt).files.values():
            yield bytes([IMPORT_FORMATS.index(fmt)]) + text.encode()
            yield bytes([IMPORT_FORMATS.index(fmt)]) + "\n".join(text.splitlines()[:12]).encode()
    small = {
        "hosts": "0.0.0.0 tiktok.com www.tiktok.com # category=web source=a\nmusical.ly\n",
        "adblock": "||tiktok.com^\n|www.tiktokv.com^$important\n/^p16-tiktok-[a-z0-9-]+\\.ibyteimg\\.com$/\n@@||a.b^\n",
        "rpz": "$ORIGIN r.\n@ SOA a. b. 1 2 3 4 5\ntiktok.com CNAME .\n*.tiktok.com CNAME .\nx.y CNAME rpz-passthru.\n",
        "v2fly": "include:x\ntiktok.com @web\nfull:a.tiktok.com\nregexp:^a\\.b\\.com$\nkeyword:tt\n",
        "zeek-intel": "#fields\tindicator\tindicator_type\tmeta.source\ntiktok.com\tIntel::DOMAIN\ts\n",
        "suricata": 'alert dns any any -> any any (dns.query; dotprefix; content:".tiktok.com"; endswith; sid:1;)\n',
        "suricata-dataset": "dGlrdG9rLmNvbQ==\nLnRpa3Rvay5jb20=,1\n",
        "ndpi": ('static ndpi_protocol_match host_match[] =\n  {\n'
                 '   { "tiktokcdn.com", "TikTok", NDPI_PROTOCOL_TIKTOK, NDPI_PROTOCOL_CATEGORY_SOCIAL_NETWORK,'
                 ' NDPI_PROTOCOL_FUN, NDPI_PROTOCOL_DEFAULT_LEVEL },\n /* c */ { "amazon.", "A", X, Y, Z, 15 },\n'
                 '#if 0\n   { NULL, NULL, NDPI_PROTOCOL_UNKNOWN, A, B, C }\n  };\n'),
        "adguard-services": ("id: tiktok\nname: TikTok\nrules:\n  - '||tiktok.com^'\n  - '|a.tiktokv.com^'\n"
                             "  - '||p16-tiktok-*.ibyteimg.com^'\n"),
        "wildcard": "# Syntax: Domains Wildcard\n*.tiktok.com\nwww.tiktokv.com\nin*side.example\n",
    }
    yield bytes([IMPORT_FORMATS.index("adguard-services")]) + json.dumps(
        {"blocked_services": [{"id": "tiktok", "name": "TikTok", "rules": ["||tiktok.com^", "@@||a.tiktok.com^"]},
                              {"id": "x", "rules": [1]}]}, indent=1).encode()
    for fmt, text in small.items():
        yield bytes([IMPORT_FORMATS.index(fmt)]) + text.encode()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
