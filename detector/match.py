"""Signature sets: TOML signature files loaded, checked and compiled into a name index.

Every extracted name goes through ``SignatureSet.match``, so the lookup is built for
that: one dict probe for exact entries, then one dict probe per label suffix of the
name (longest first), and a regex only when the name ends in the literal domain the
regex is keyed on. The cost is O(number of labels) whatever the size of the set, and
no name is ever scanned against every entry.

Which entry wins when several match — most specific first:

1. an ``exact`` entry equal to the name;
2. walking the name's label suffixes from the longest to the shortest, at each suffix
   first the ``regex`` entries keyed on it, then the ``suffix`` entry equal to it.

A regex counts as more specific than a suffix entry of the same literal domain because
it constrains the labels in front of it too. That ordering is what lets
``^p16-tiktok-[a-z0-9-]+\\.ibyteimg\\.com$`` (TikTok, ``cdn``) win over the suffix entry
``ibyteimg.com`` (``bytedance-shared``): with regexes tried only after every suffix, a
TikTok host on a shared zone could never be told apart from the zone.

Every regex must be written ``^BODY\\.LITERAL\\.DOMAIN$``; the loader splits off the
literal domain (the prefilter key) and compiles ``(?:BODY)\\.literal\\.domain``, so a
regex can only ever match names inside its key and the prefilter is exact, not a hint.

An ``address`` entry is an IP address or prefix (``1.1.1.1``, ``2606:4700::/32``): it
names no name, only where a connection went. ``match_address`` looks the server of a TLS
or QUIC connection that showed no name up there (an IP-literal DoH URL sends no SNI); the
most specific prefix wins, one dict probe per prefix length present.

Loading is strict and reports every problem as ``FILE:LINE: message`` (line 0 means
the file as a whole): signature files are edited by hand and a typo must not silently
drop an entry or, worse, flag a generic CDN.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import re._parser as _sre  # the parser re itself uses: patterns read exactly as re reads them
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from detector.errors import UserError
from detector.records import CATEGORIES, Signature

#: How an entry's pattern is compared with a name (``address``: with a server's address).
KINDS = ("suffix", "exact", "regex", "address")

_TOP_KEYS = ("version", "description", "sources", "entry")
_ENTRY_REQUIRED = ("pattern", "match", "category", "source")
_ENTRY_KEYS = (*_ENTRY_REQUIRED, "note")
#: RFC 1035 limits: 253 characters in presentation form, 63 per label.
_MAX_DOMAIN = 253
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: What the skim's name index takes (skim_c/names.c).
_PREFILTER_KEY_RE = re.compile(r"[a-z0-9.-]{1,253}")
_ENTRY_HEADER_RE = re.compile(r"[ \t]*\[\[[ \t]*entry[ \t]*\]\][ \t]*(?:#.*)?")
_TABLE_HEADER_RE = re.compile(r"[ \t]*\[")
_TOML_AT_LINE_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END_RE = re.compile(r"\s*\(at end of document\)$")
#: ``^BODY`` then the literal ``\.label\.label`` tail then ``$``; the shortest body wins,
#: so the literal tail (the prefilter key) is as long as possible.
_REGEX_SHAPE_RE = re.compile(r"\^(?P<body>.+?)(?P<tail>(?:\\\.[a-z0-9-]+)+)\$", re.DOTALL)


class SignatureError(UserError, ValueError):
    """A signature file or directory is unusable; the message is ``FILE:LINE: what``.

    ``problems`` holds every problem found (the message names the first), so a command
    line can print them all.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        found = [_one_line(p) for p in ([problems] if isinstance(problems, str) else problems)]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        super().__init__(found[0] + more)
        self.problems = tuple(found)


def _one_line(text: str) -> str:
    """A problem as one printable line: ``re`` quotes a bad pattern's characters raw in its
    messages (a tab, a newline), which would break the FILE:LINE: form a user reads."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EntryOrigin(NamedTuple):
    """Where an entry was written, kept for ``explain`` and audit reports."""

    file: str
    note: str


@dataclass(frozen=True, slots=True)
class SignatureSet:
    """Signatures compiled into an index; build one with ``load_signatures``.

    ``origins`` maps each pattern to the file it came from and its note; ``sources``
    maps each source code to the public list it names. The indexes are derived from
    ``entries`` in ``__post_init__`` so that a set built by hand (in tests) behaves
    exactly like a loaded one.
    """

    version: str
    path: str
    sha256: str
    entries: tuple[Signature, ...]
    origins: Mapping[str, EntryOrigin] = field(default_factory=dict, repr=False, compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _exact: dict[str, Signature] = field(init=False, repr=False, compare=False)
    _suffix: dict[str, Signature] = field(init=False, repr=False, compare=False)
    _regex: dict[str, tuple[tuple[re.Pattern[str], Signature], ...]] = field(
        init=False, repr=False, compare=False
    )
    #: (IP version, prefix length) -> network address as an integer -> entry; longest first.
    _networks: dict[tuple[int, int], dict[int, Signature]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: dict[str, Signature] = {}
        suffix: dict[str, Signature] = {}
        regex: dict[str, list[tuple[re.Pattern[str], Signature]]] = {}
        networks: dict[tuple[int, int], dict[int, Signature]] = {}
        seen: set[str] = set()
        for sig in self.entries:
            where = f"{self._file_of(sig)}:{sig.line}"
            if sig.pattern in seen:
                raise SignatureError([f"{where}: duplicate pattern {sig.pattern!r}"])
            seen.add(sig.pattern)
            if sig.kind == "exact":
                exact[sig.pattern] = sig
            elif sig.kind == "suffix":
                suffix[sig.pattern] = sig
            elif sig.kind == "regex":
                compiled = _compile_regex(sig.pattern)
                if isinstance(compiled, str):
                    raise SignatureError([f"{where}: {compiled}"])
                key, pattern = compiled
                regex.setdefault(key, []).append((pattern, sig))
            elif sig.kind == "address":
                network = _network(sig.pattern)
                if isinstance(network, str):
                    raise SignatureError([f"{where}: {network}"])
                networks.setdefault((network.version, network.prefixlen), {})[int(network.network_address)] = sig
            else:
                raise SignatureError([f"{where}: unknown match kind {sig.kind!r}"])
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_suffix", suffix)
        object.__setattr__(self, "_regex", {k: tuple(v) for k, v in regex.items()})
        object.__setattr__(self, "_networks", dict(sorted(networks.items(), key=lambda kv: -kv[0][1])))

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories present in this set, in the canonical ``CATEGORIES`` order."""
        present = {sig.category for sig in self.entries}
        return tuple(c for c in CATEGORIES if c in present)

    def prefilter_keys(self) -> tuple[str, ...] | None:
        """Every name this set can match equals one of these keys or ends in "." and one
        of them (the exact and suffix patterns, the regexes' literal domains): what the C
        skim triages DNS names by. None when a key is not plain ``[a-z0-9.-]`` text of at
        most 253 characters (only a set built by hand can hold one): then every name goes
        to Python."""
        keys = (*self._exact, *self._suffix, *self._regex)
        if all(_PREFILTER_KEY_RE.fullmatch(key) for key in keys):
            return keys
        return None

    def match_address(self, address: str) -> Signature | None:
        """The most specific ``address`` entry holding ``address`` (an IP in text), or None."""
        if not self._networks:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        value, bits = int(ip), ip.max_prefixlen
        for (version, length), table in self._networks.items():
            if version == ip.version:
                sig = table.get(value >> (bits - length) << (bits - length))
                if sig is not None:
                    return sig
        return None

    def match(self, name: str) -> Signature | None:
        """The most specific entry matching ``name`` (lowercase, no trailing dot), or None.

        O(number of labels): an exact dict lookup, then for each label suffix from the
        longest to the shortest the regexes keyed on it and the suffix entry equal to it.
        A suffix entry ``tiktok.com`` matches ``tiktok.com`` and ``a.tiktok.com`` but not
        ``nottiktok.com``. Never raises, whatever the string.
        """
        sig = self._exact.get(name)
        if sig is not None:
            return sig
        suffix = self._suffix
        regex = self._regex
        tail = name
        while True:  # one pass per label: partition always shortens the tail
            keyed = regex.get(tail)
            if keyed is not None:
                for pattern, candidate in keyed:
                    if pattern.fullmatch(name):
                        return candidate
            sig = suffix.get(tail)
            if sig is not None:
                return sig
            _, dot, tail = tail.partition(".")
            if not dot:
                return None

    def explain(self, name: str) -> str:
        """Human text: which entry matches ``name`` and why, or why none does.

        Also names the regexes tried first without a match and the less specific entries
        that match too, so an auditor sees what a more specific entry overrides (e.g. a
        TikTok host on a shared ByteDance zone).
        """
        if _is_address(name):
            sig = self.match_address(name)
            if sig is None:
                return f"{name}: no match\n  why: no address entry holds it"
            return f"{name}: {sig.category}\n  matched: {self._describe(sig)}\n  why: the most specific address entry " \
                   "holding it (a TLS or QUIC connection there that shows no name is judged by it)"
        tried: list[Signature] = []
        hits: list[tuple[Signature, str]] = []
        for sig, reason in self._probe(name):
            if reason is not None:
                hits.append((sig, reason))
            elif not hits:
                tried.append(sig)
        missed = ", ".join(f"'{sig.pattern}'" for sig in tried)
        if not hits:
            tails = ", ".join(repr(t) for t in _label_suffixes(name))
            regexes = (
                f"the regexes keyed on them did not match: {missed}"
                if tried
                else "no regex is keyed on any of them"
            )
            why = (
                f"no exact entry equals {name!r}; no suffix entry equals any of its "
                f"label suffixes ({tails}); {regexes}"
            )
            return f"{name}: no match\n  why: {why}"
        (best, why), *others = hits
        out = [f"{name}: {best.category}", f"  matched: {self._describe(best)}", f"  why: {why}"]
        if tried:
            out.append(f"  tried first without a match: {missed}")
        out.extend(f"  also matches, less specific: {self._describe(sig)}" for sig, _ in others)
        return "\n".join(out)

    def _probe(self, name: str) -> Iterator[tuple[Signature, str | None]]:
        """Every entry ``match`` consults for ``name``, in its order, with the reason it
        matches or None; ``match`` is this walk stopped at the first reason, unrolled."""
        sig = self._exact.get(name)
        if sig is not None:
            yield sig, "exact entry equal to the name (exact entries beat every other kind)"
        for tail in _label_suffixes(name):
            for pattern, candidate in self._regex.get(tail, ()):
                if pattern.fullmatch(name):
                    yield candidate, (
                        f"regex keyed on its literal domain {tail!r} matches the whole name; "
                        "a regex is tried before the suffix entry of that same domain"
                    )
                else:
                    yield candidate, None
            sig = self._suffix.get(tail)
            if sig is not None:
                if tail == name:
                    reason = "suffix entry equal to the name"
                else:
                    reason = f"suffix entry {tail!r} ends the name at a label boundary"
                yield sig, reason + "; no exact entry, longer suffix or regex matched first"

    def _file_of(self, sig: Signature) -> str:
        origin = self.origins.get(sig.pattern)
        return origin.file if origin else self.path

    def _describe(self, sig: Signature) -> str:
        origin = self.origins.get(sig.pattern)
        where = f"{self._file_of(sig)}:{sig.line}"
        note = f"; note: {origin.note}" if origin and origin.note else ""
        return (
            f"{sig.kind} '{sig.pattern}' (category {sig.category}; source {sig.source}) "
            f"at {where}{note}"
        )


def load_signatures(path: str | os.PathLike[str]) -> SignatureSet:
    """Load a signature file, or every ``*.toml`` in a directory (sorted by name).

    Raises ``SignatureError`` naming the first problem as ``FILE:LINE: message`` (all of
    them in ``.problems``): TOML syntax, unknown or missing keys, unknown category or
    match kind, invalid domain pattern, uncompilable regex, duplicate patterns.
    """
    sigset, problems = _load(Path(path))
    if problems or sigset is None:
        raise SignatureError(problems)
    return sigset


def check_signatures(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in a signature file or directory, one ``FILE:LINE: message`` each.

    Empty when the signatures load; used by ``tiktok-detector signatures check`` and CI.
    """
    return _load(Path(path))[1]


# ── loading ──────────────────────────────────────────────────────────────────────────


@dataclass
class _Parsed:
    """One file's contribution: what loaded cleanly and what did not."""

    label: str
    sha256: str = ""
    version: str = ""
    entries: list[Signature] = field(default_factory=list)
    #: Every string pattern, clean entry or not, with the line of its ``pattern =``:
    #: a duplicate is worth reporting even beside another problem in the same entry.
    patterns: list[tuple[str, int]] = field(default_factory=list)
    origins: dict[str, EntryOrigin] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    found: list[tuple[int, str]] = field(default_factory=list)

    def problem(self, line: int, message: str) -> None:
        self.found.append((line, message))

    @property
    def problems(self) -> list[str]:
        """``FILE:LINE: message`` lines in file order, whatever order the checks ran in."""
        ordered = sorted(self.found, key=lambda found: found[0])
        return [_one_line(f"{self.label}:{line}: {message}") for line, message in ordered]


def _load(path: Path) -> tuple[SignatureSet | None, list[str]]:
    """Parse and cross-check every file; the set is None when anything is wrong."""
    if path.is_dir():
        files = sorted(p for p in path.glob("*.toml") if p.is_file())
        if not files:
            return None, [f"{path}:0: no *.toml signature files in this directory"]
    else:
        files = [path]
    parsed = [_parse_file(f) for f in files]
    first_seen: dict[str, str] = {}
    source_text: dict[str, tuple[str, str]] = {}
    for one in parsed:
        for pattern, pattern_line in one.patterns:
            if pattern in first_seen:
                first = first_seen[pattern]
                one.problem(pattern_line, f"duplicate pattern {pattern!r} (first at {first})")
            else:
                first_seen[pattern] = f"{one.label}:{pattern_line}"
        for code, text in one.sources.items():
            if code in source_text and source_text[code][1] != text:
                other = source_text[code][0]
                one.problem(0, f"source {code!r} is described differently in {other}")
            source_text.setdefault(code, (one.label, text))
    problems = [problem for one in parsed for problem in one.problems]
    if problems:
        return None, problems
    if len(parsed) == 1:
        version, digest = parsed[0].version, parsed[0].sha256
    else:
        version = ",".join(f"{Path(one.label).stem}:{one.version}" for one in parsed)
        combined = hashlib.sha256()
        for one in parsed:
            combined.update(f"{Path(one.label).name}\0{one.sha256}\n".encode())
        digest = combined.hexdigest()
    sigset = SignatureSet(
        version=version,
        path=str(path),
        sha256=digest,
        entries=tuple(sig for one in parsed for sig in one.entries),
        origins={k: v for one in parsed for k, v in one.origins.items()},
        sources={code: text for code, (_, text) in source_text.items()},
    )
    return sigset, []


def _parse_file(path: Path) -> _Parsed:
    out = _Parsed(label=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        out.problem(0, f"cannot read: {exc.strerror or exc}")
        return out
    out.sha256 = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        out.problem(data.count(b"\n", 0, exc.start) + 1, "not UTF-8 text")
        return out
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, message = _toml_error(str(exc), text)
        out.problem(line, f"TOML syntax error: {message}")
        return out
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        out.problem(0, "arrays or inline tables nested too deeply")
        return out
    # TOML counts lines by "\n" alone; str.splitlines would also split on \v, \f, \x1c…
    lines = [line.rstrip("\r") for line in text.split("\n")]
    _check_top(doc, lines, out)
    _check_entries(doc, lines, out)
    return out


def _toml_error(message: str, text: str) -> tuple[int, str]:
    """tomllib puts the position at the end of its message; move it to the front."""
    at_line = _TOML_AT_LINE_RE.search(message)
    if at_line:
        return int(at_line[1]), f"{message[: at_line.start()]} (column {at_line[2]})"
    at_end = _TOML_AT_END_RE.search(message)
    if at_end:
        return text.count("\n") + 1, f"{message[: at_end.start()]} (at end of file)"
    return 0, message


def _check_top(doc: dict[str, Any], lines: list[str], out: _Parsed) -> None:
    for key in doc:
        if key not in _TOP_KEYS:
            out.problem(
                _top_key_line(lines, key),
                f"unknown top-level key {key!r} (allowed: {', '.join(_TOP_KEYS)})",
            )
    for key in ("version", "description"):
        value = doc.get(key)
        if value is None:
            out.problem(1, f"missing top-level key {key!r}")
        elif not isinstance(value, str) or not value.strip():
            out.problem(_top_key_line(lines, key), f"{key!r} must be a non-empty string")
    if isinstance(doc.get("version"), str):
        out.version = doc["version"]
    sources = doc.get("sources")
    if sources is None:
        out.problem(1, "missing [sources] table (source code = description of the public list)")
        return
    if not isinstance(sources, dict):
        out.problem(_top_key_line(lines, "sources"), "'sources' must be a table")
        return
    start, end = _table_block(lines, "sources")
    for code, text in sources.items():
        if not isinstance(text, str) or not text.strip():
            out.problem(
                _key_line(lines, start, end, code),
                f"source {code!r} must be a non-empty string naming the public list",
            )
        else:
            out.sources[code] = text


def _check_entries(doc: dict[str, Any], lines: list[str], out: _Parsed) -> None:
    entries = doc.get("entry")
    if entries is None:
        out.problem(1, "no [[entry]] tables")
        return
    headers = [i + 1 for i, line in enumerate(lines) if _ENTRY_HEADER_RE.fullmatch(line)]
    if not isinstance(entries, list) or len(headers) != len(entries):
        out.problem(
            _top_key_line(lines, "entry"),
            "write each entry as its own [[entry]] table (no inline arrays of tables)",
        )
        return
    table_starts = [i + 1 for i, line in enumerate(lines) if _TABLE_HEADER_RE.match(line)]
    for header, entry in zip(headers, entries):
        end = next((t for t in table_starts if t > header), len(lines) + 1)
        if not isinstance(entry, dict):
            out.problem(header, "[[entry]] must be a table")
            continue
        sig = _check_entry(entry, header, lines, end, out)
        if sig is not None:
            out.entries.append(sig)


def _check_entry(
    entry: dict[str, Any], header: int, lines: list[str], end: int, out: _Parsed
) -> Signature | None:
    """Validate one [[entry]] table; every problem is reported, the entry kept only if clean."""
    before = len(out.found)

    def at(key: str) -> int:
        return _key_line(lines, header, end, key)

    for key in entry:
        if key not in _ENTRY_KEYS:
            allowed = ", ".join(_ENTRY_KEYS)
            out.problem(at(key), f"unknown key {key!r} in [[entry]] (allowed: {allowed})")
    for key in _ENTRY_REQUIRED:
        if key not in entry:
            out.problem(header, f"[[entry]] is missing key {key!r}")
    pattern = entry.get("pattern")
    kind = entry.get("match")
    category = entry.get("category")
    source = entry.get("source")
    note = entry.get("note", "")
    if isinstance(pattern, str) and pattern:
        out.patterns.append((pattern, at("pattern")))
    elif "pattern" in entry:
        out.problem(at("pattern"), "'pattern' must be a non-empty string")
    if "match" in entry and kind not in KINDS:
        expected = ", ".join(KINDS)
        out.problem(at("match"), f"unknown match kind {kind!r} (expected one of {expected})")
    if "category" in entry and category not in CATEGORIES:
        expected = ", ".join(CATEGORIES)
        out.problem(at("category"), f"unknown category {category!r} (expected one of {expected})")
    if not isinstance(note, str):
        out.problem(at("note"), "'note' must be a string")
    if "source" in entry:
        problem = _source_problem(source, out.sources)
        if problem:
            out.problem(at("source"), problem)
    if isinstance(pattern, str) and pattern and kind in KINDS:
        if kind == "regex":
            compiled = _compile_regex(pattern)
            problem = compiled if isinstance(compiled, str) else None
        elif kind == "address":
            network = _network(pattern)
            problem = network if isinstance(network, str) else None
        else:
            problem = _domain_problem(pattern)
        if problem:
            out.problem(at("pattern"), problem)
    if len(out.found) > before:
        return None
    out.origins.setdefault(pattern, EntryOrigin(out.label, note))
    return Signature(pattern, kind, category, ",".join(source), header)


def _source_problem(source: object, known: Mapping[str, str]) -> str | None:
    if not isinstance(source, list) or not source or not all(isinstance(s, str) for s in source):
        return "'source' must be a non-empty array of source codes from [sources]"
    unknown = [s for s in source if s not in known]
    if unknown:
        return f"unknown source code(s) {', '.join(map(repr, unknown))} (define them in [sources])"
    if len(set(source)) != len(source):
        return "'source' lists a code twice"
    return None


def _domain_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a lowercase, LDH, multi-label domain name, or None."""
    if pattern != pattern.lower():
        return f"pattern {pattern!r} must be lowercase (names are matched lowercased)"
    if pattern.startswith(".") or pattern.endswith("."):
        return f"pattern {pattern!r} must not start or end with a dot"
    if len(pattern) > _MAX_DOMAIN:
        return f"pattern is {len(pattern)} characters long (a domain has at most {_MAX_DOMAIN})"
    labels = pattern.split(".")
    if len(labels) < 2:
        return f"pattern {pattern!r} needs at least two labels (one would match a whole TLD)"
    for label in labels:
        if not label:
            return f"pattern {pattern!r} has an empty label"
        if len(label) > 63:
            return f"label {label[:20]!r}… of {pattern!r} is longer than 63 characters"
        if not _LABEL_RE.fullmatch(label):
            return (
                f"label {label!r} of {pattern!r} may hold only a-z, 0-9 and inner hyphens "
                "(write IDNs in xn-- form)"
            )
    if labels[-1].isdigit():
        return f"pattern {pattern!r} looks like an IP address, not a domain"
    return None


def _network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """The network an ``address`` pattern names, or why it names none. Written in its
    canonical (compressed, lowercase) form and without host bits, so that a pattern is
    never two patterns."""
    try:
        network = ipaddress.ip_network(pattern, strict=True)
    except ValueError as exc:
        return f"address pattern {pattern!r} is not an IP address or prefix without host bits ({exc})"
    canonical = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    if pattern != canonical:
        return f"address pattern {pattern!r} must be written {canonical!r}"
    return network


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _compile_regex(pattern: str) -> tuple[str, re.Pattern[str]] | str:
    """The literal domain key and the compiled regex, or why the pattern is unusable."""
    shape = _REGEX_SHAPE_RE.fullmatch(pattern)
    if shape is None:
        return (
            f"regex {pattern!r} must be anchored and end in a literal domain, "
            r"like ^p16-tiktok-[a-z0-9-]+\.ibyteimg\.com$"
        )
    body = shape["body"]
    if (len(body) - len(body.rstrip("\\"))) % 2:
        return f"regex {pattern!r}: the literal domain at its end starts with an escaped backslash"
    key = shape["tail"].replace("\\.", ".")[1:]
    problem = _domain_problem(key)
    if problem:
        return f"regex {pattern!r}: its literal domain {key!r} is not usable: {problem}"
    try:
        compiled = re.compile(f"(?:{body})\\.{re.escape(key)}")
        nested = _nested_repeat(_sre.parse(body))
    except (re.error, OverflowError, RecursionError) as exc:
        return f"regex {pattern!r} does not compile: {exc}"
    if nested:
        return (f"regex {pattern!r}: a repetition inside a repetition can take exponential time on a name "
                "a device chooses; write it with one")
    return key, compiled


_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT)


def _nested_repeat(parsed: Any, inside: bool = False) -> bool:
    """Whether a pattern repeats (more than once) something that itself repeats: the shape,
    like ``(a+)+``, whose backtracking grows exponentially with the name. The stdlib's own
    pattern parser reads the pattern exactly as ``re`` will."""
    for op, arg in parsed:
        if op in _REPEATS:
            low, high, sub = arg
            many = high > 1
            if (inside and many) or _nested_repeat(sub, inside or many):
                return True
        elif op is _sre.SUBPATTERN:
            if _nested_repeat(arg[-1], inside):
                return True
        elif op is _sre.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in arg[1]):
                return True
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            if _nested_repeat(arg[1], inside):
                return True
        elif op is _sre.ATOMIC_GROUP:
            if _nested_repeat(arg, inside):
                return True
    return False


def _label_suffixes(name: str) -> Iterator[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``: the order ``match`` probes them in."""
    tail = name
    while True:
        yield tail
        _, dot, tail = tail.partition(".")
        if not dot:
            return


def _key_line(lines: list[str], start: int, end: int, key: str) -> int:
    """Line of ``key = …`` between lines ``start`` and ``end`` (1-based), else ``start``.

    tomllib keeps no positions, so the line is found in the text; a key written in an
    unusual form (dotted, quoted oddly) falls back to the table header's line.
    """
    assign = re.compile(rf"[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=")
    for number in range(start, min(end, len(lines) + 1)):
        if assign.match(lines[number - 1]):
            return number
    return max(start, 1)


def _top_key_line(lines: list[str], key: str) -> int:
    """Line of a top-level ``key = …`` or ``[key]``/``[[key]]`` header, else 1."""
    header = re.compile(rf"[ \t]*\[\[?[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*\]")
    for number, line in enumerate(lines, 1):
        if header.match(line):
            return number
    first_table = next(
        (i + 1 for i, line in enumerate(lines) if _TABLE_HEADER_RE.match(line)), len(lines) + 1
    )
    return _key_line(lines, 1, first_table, key)


def _table_block(lines: list[str], name: str) -> tuple[int, int]:
    """First and past-the-end line numbers of the ``[name]`` table's body."""
    start = _top_key_line(lines, name)
    end = next(
        (i + 1 for i, line in enumerate(lines) if i + 1 > start and _TABLE_HEADER_RE.match(line)),
        len(lines) + 1,
    )
    return start, end
