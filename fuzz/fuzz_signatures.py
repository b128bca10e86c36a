"""Fuzz the signature loader, its checker and the compiled index.

The input is a signature TOML file, optionally followed by a NUL and NUL-separated names
(TOML text cannot hold a raw NUL, so the split is unambiguous). The file is written over
one temporary file made once per process, checked (``signatures check``), loaded, and
when it loads, its own patterns and the fuzzed names are matched and explained.

Run alone: ``.venv/bin/python fuzz/fuzz_signatures.py fuzz/corpus/signatures
-dict=fuzz/dicts/signatures.dict`` (seed it first with
``.venv/bin/python fuzz/run.py --seeds-only signatures``).

What counts as a finding: any exception other than SignatureError (the one the command
line prints as one line and exit status 2); a problem that is not one printable line
``FILE:LINE: message`` with LINE inside the file; ``check_signatures`` finding problems
in a file ``load_signatures`` accepted; and ``match`` answering
an entry that does not match the name, missing an exact entry equal to it, or missing a
domain entry that a pattern itself must hit.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import atheris
import tomllib  # noqa: F401 - imported before instrumentation: the fuzzer aims at our code, not the TOML parser
from scratch import scratch_file

with atheris.instrument_imports():
    from detector.extract.clienthello import normalize_name
    from detector.match import SignatureError, SignatureSet, check_signatures, load_signatures
    from detector.records import Signature

_PROBLEM = re.compile(r"(?P<file>.+?):(?P<line>\d+): (?P<message>.+)\Z")
#: Names matched against every set that loads, besides the fuzzed ones.
_NAMES = ("www.tiktok.com", "p16-tiktok-va.ibyteimg.com", "example.org", "", ".", "com")
def covers(sig: Signature, name: str) -> bool | None:
    """Whether a domain entry matches ``name`` (None for a regex: only the index knows)."""
    if sig.kind == "exact":
        return name == sig.pattern
    if sig.kind == "suffix":
        return name == sig.pattern or name.endswith("." + sig.pattern)
    return None


def check_match(sigs: SignatureSet, name: str) -> None:
    found = sigs.match(name)
    sigs.explain(name)
    sigs.match_address(name)  # never raises, whatever the text
    exact = [s for s in sigs.entries if s.kind == "exact" and s.pattern == name]
    if exact:
        assert found == exact[0], (name, found)
    if found is None:
        assert not any(covers(s, name) for s in sigs.entries), name
    else:
        assert found in sigs.entries and covers(found, name) is not False, (name, found)


def TestOneInput(data: bytes) -> None:
    text, _, tail = data.partition(b"\x00")
    path = scratch_file("fuzz-signatures-", ".toml")
    path.write_bytes(text)
    lines = text.count(b"\n") + 1
    # Loading first: when it fails its problems are what ``check`` prints, so a file
    # costs one parse; only a usable one is parsed again to see ``check`` agree.
    try:
        sigs = load_signatures(path)
    except SignatureError as exc:
        assert exc.problems and str(exc).startswith(exc.problems[0]), str(exc)
        for problem in exc.problems:
            parsed = _PROBLEM.match(problem)
            assert parsed and parsed["file"] == str(path) and problem.isprintable(), problem
            assert 0 <= int(parsed["line"]) <= lines, (problem, lines)
        return
    problems = check_signatures(path)
    assert not problems, problems
    names = [n for n in (normalize_name(raw) for raw in tail.split(b"\x00")[:8] if raw) if n]
    for sig in sigs.entries:
        if sig.kind == "address":
            address = sig.pattern.split("/")[0]
            found = sigs.match_address(address)
            assert found is not None and found.kind == "address", sig
            assert sigs.match(sig.pattern) is None, sig  # an address entry never matches a name
        elif sig.kind != "regex":
            names.append(sig.pattern)
            assert sigs.match(sig.pattern) is not None, sig
            names.append("a." + sig.pattern)
    for name in (*_NAMES, *names):
        check_match(sigs, name)


def seeds() -> Iterator[bytes]:
    """The shipped set, cut-down variants of it (header and a few entries), and sets
    followed by names to match."""
    root = Path(__file__).resolve().parent.parent
    shipped = (root / "signatures" / "tiktok.toml").read_bytes()
    yield shipped
    head, *entries = shipped.split(b"\n[[entry]]\n")
    for count in (0, 1, 2, 5):
        yield b"\n[[entry]]\n".join([head, *entries[:count]]) + b"\n"
    regexes = [e for e in entries if b'match = "regex"' in e]
    exacts = [e for e in entries if b'match = "exact"' in e]
    small = b"\n[[entry]]\n".join([head, entries[0], *regexes[:2], *exacts[:1]]) + b"\n"
    yield small
    yield small + b"\x00www.tiktok.com\x00p16-tiktok-va.ibyteimg.com\x00ibyteimg.com"
    yield b"\n[[entry]]\n".join([head, *entries[:3], entries[0]]) + b"\n"  # a duplicate
    yield (root / "signatures" / "visibility.toml").read_bytes() + b"\x001.1.1.1\x002606:4700:4700::1111"


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
