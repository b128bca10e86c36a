"""What every signature format shares: the entry record, the import collector, the
metadata comments and the one error class.

An import is strict about what it cannot read (a malformed line is an error with its line
number) and lenient about what it can read but cannot express (an AdGuard exception rule,
a v2fly ``keyword:``, an RPZ passthru): those are skipped, each with a line saying why, so a
reviewer sees exactly what an upstream list holds that the sensor will not use.

Formats that carry no category or provenance get them from the caller (``ImportOptions``,
the command line's ``--category``/``--source``); where they are missing and not given, the
import fails and says which option to give, rather than guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from detector.match import KINDS, EntryOrigin, SignatureError, SignatureSet, _compile_regex, _domain_problem, _one_line
from detector.records import CATEGORIES, Signature

#: Marks the comments this program writes into foreign formats: the set's version,
#: description and sources (headers) and each entry's category, match kind, sources, note.
TAG = "tiktok-detector"
_KV_RE = re.compile(r'([a-z][a-z0-9_-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URL_RE = re.compile(r"https?://\S+")
#: Bound on what one import may hold: a list is reviewed by a person, and a file of
#: millions of lines is a mistake (or an attack on the reviewer), not a signature set.
MAX_ENTRIES = 200_000
#: Problems kept for the message; the rest are counted (a wrong --format gives one per line).
MAX_PROBLEMS = 1000
#: Skipped lines listed one by one; past this they are counted.
MAX_SKIPPED = 10_000


class FormatError(SignatureError):
    """A file in a foreign format cannot be imported; ``FILE:LINE: what`` for each problem."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One signature as a format states it; ``category``/``sources`` empty when it does not."""

    pattern: str
    kind: str
    category: str | None = None
    sources: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What the caller supplies for what a format does not carry.

    ``category`` and ``source`` fill entries that have none (never override one the file
    states); ``kind`` is the match kind of bare names in formats that do not say it
    (hosts lines, Zeek ``Intel::DOMAIN``, dataset members); ``zone`` the origin of an RPZ
    zone file without ``$ORIGIN``; ``service`` the nDPI protocol or AdGuard service to read
    from a table that holds many (``TikTok``, ``tiktok``; every one when None).
    """

    category: str | None = None
    source: str | None = None
    source_text: str | None = None
    kind: str | None = None
    zone: str | None = None
    service: str | None = None
    version: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Imported:
    """An imported list: entries with their provenance, ready to review, diff or write."""

    label: str
    version: str
    description: str
    sources: Mapping[str, str]
    entries: tuple[Signature, ...]
    notes: Mapping[str, str]
    skipped: tuple[str, ...]

    def signature_set(self) -> SignatureSet:
        """The list as a matchable set (what ``diff`` and a later update compare)."""
        return SignatureSet(
            version=self.version,
            path=self.label,
            sha256="",
            entries=self.entries,
            origins={s.pattern: EntryOrigin(self.label, self.notes.get(s.pattern, "")) for s in self.entries},
            sources=dict(self.sources),
        )


@dataclass(frozen=True, slots=True)
class Exported:
    """One export: file name (relative, the first is the main one) to text, and what the
    format could not express, one line each."""

    files: Mapping[str, str]
    warnings: tuple[str, ...] = ()


@dataclass
class Collector:
    """Gathers entries while a format's parser walks a file; ``finish`` checks and merges.

    Parsers call ``add`` with whatever the line states; the collector validates the
    pattern with the signature loader's own rules, merges a pattern stated twice when the
    two agree (sources united) and reports it when they do not.
    """

    label: str
    header: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[str, int, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    more_problems: int = 0
    more_skipped: int = 0
    full: bool = False
    _entries: dict[str, tuple[Entry, str, int]] = field(default_factory=dict)

    def problem(self, line: int, message: str, label: str | None = None) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((label or self.label, line, message))
        else:
            self.more_problems += 1

    def skip(self, line: int, reason: str, label: str | None = None) -> None:
        self._report(f"{label or self.label}:{line}: skipped: {reason}")

    def notice(self, line: int, text: str, label: str | None = None) -> None:
        """Something imported with a change of meaning the reviewer should know about."""
        self._report(f"{label or self.label}:{line}: note: {text}")

    def _report(self, text: str) -> None:
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append(_one_line(text))
        else:
            self.more_skipped += 1

    def add(self, line: int, entry: Entry, label: str | None = None) -> None:
        """One entry read at ``line``; invalid patterns and conflicts become problems."""
        where = label or self.label
        if entry.kind == "regex":
            compiled = _compile_regex(entry.pattern)
            problem = compiled if isinstance(compiled, str) else None
        else:
            problem = _domain_problem(entry.pattern)
        if problem:
            self.problem(line, problem, where)
            return
        if entry.category is not None and entry.category not in CATEGORIES:
            self.problem(line, f"unknown category {entry.category!r} (expected one of {', '.join(CATEGORIES)})", where)
            return
        if len(set(entry.sources)) != len(entry.sources):
            entry = Entry(entry.pattern, entry.kind, entry.category, tuple(dict.fromkeys(entry.sources)), entry.note)
        bad = [s for s in entry.sources if not _SOURCE_RE.fullmatch(s)]
        if bad:
            self.problem(line, f"source code {bad[0]!r} is not a plain name (letters, digits, . _ -)", where)
            return
        known = self._entries.get(entry.pattern)
        if known is None:
            if len(self._entries) >= MAX_ENTRIES:
                if not self.full:
                    self.problem(line, f"more than {MAX_ENTRIES} entries; split the list", where)
                self.full = True
                return
            self._entries[entry.pattern] = (entry, where, line)
            return
        first, first_label, first_line = known
        if first.kind != entry.kind or None not in (first.category, entry.category) and first.category != entry.category:
            self.problem(line, (f"{entry.pattern!r} is listed as {_what(entry)} here and as {_what(first)} "
                                f"at {first_label}:{first_line}"), where)
            return
        merged = first.sources + tuple(s for s in entry.sources if s not in first.sources)
        self._entries[entry.pattern] = (Entry(first.pattern, first.kind, first.category or entry.category, merged,
                                              first.note or entry.note), first_label, first_line)

    def finish(self, options: ImportOptions, fmt: str) -> Imported:
        """Fill what the file left out from ``options``; raise ``FormatError`` on any problem."""
        if options.category is not None and options.category not in CATEGORIES:
            raise FormatError(f"--category {options.category!r} is not one of {', '.join(CATEGORIES)}")
        if options.source is not None and not _SOURCE_RE.fullmatch(options.source):
            raise FormatError(f"--source {options.source!r} is not a plain name (letters, digits, . _ -)")
        sources = dict(self.sources)
        entries: list[Signature] = []
        notes: dict[str, str] = {}
        for number, (entry, where, line) in enumerate(self._entries.values(), 1):
            category = entry.category or options.category
            codes = entry.sources or ((options.source,) if options.source else ())
            if category is None:
                self.problem(line, f"{entry.pattern!r} has no category and this format does not carry one: "
                                   "give --category", where)
                continue
            if not codes:
                self.problem(line, f"{entry.pattern!r} has no source and this format does not carry one: "
                                   "give --source CODE (and --source-text)", where)
                continue
            for code in codes:
                if code not in sources:
                    if code == options.source and options.source_text:
                        sources[code] = options.source_text
                    else:
                        sources[code] = f"{code} (imported from {self.label}, {fmt} format)"
            entries.append(Signature(entry.pattern, entry.kind, category, ",".join(codes), number))
            if entry.note:
                notes[entry.pattern] = entry.note
        if self.problems:
            ordered = sorted(self.problems, key=lambda p: (p[0], p[1]))
            problems = [f"{label}:{line}: {message}" for label, line, message in ordered]
            if self.more_problems:
                problems.append(f"{self.label}:0: {self.more_problems} more problems not listed")
            raise FormatError(problems)
        if not entries:
            raise FormatError(f"{self.label}:0: no usable entries in this {fmt} file"
                              + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))
        version = options.version or self.header.get("version") or "imported"
        description = (options.description or self.header.get("description")
                       or f"Imported from {self.label} ({fmt} format)")
        skipped = self.skipped + ([f"{self.label}:0: {self.more_skipped} more lines skipped, not listed"]
                                  if self.more_skipped else [])
        return Imported(self.label, version, description, sources, tuple(entries), notes, tuple(skipped))


def _what(entry: Entry) -> str:
    return f"{entry.kind}/{entry.category or 'no category'}"


# ── metadata comments ────────────────────────────────────────────────────────────────


def meta_text(sig: Signature, note: str, *, kind: bool = True, sources: bool = True) -> str:
    """``category=api match=suffix source=a,b note="…"``: an entry's metadata in a comment
    (without what the format's own syntax already states)."""
    parts = [f"category={sig.category}"]
    if kind:
        parts.append(f"match={sig.kind}")
    if sources:
        parts.append(f"source={sig.source}")
    if note:
        parts.append("note=" + json.dumps(_flat(note), ensure_ascii=False))
    return " ".join(parts)


def parse_meta(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a metadata comment (values JSON-quoted when they need it);
    empty when the comment is not one of ours (no ``category=`` or ``source=``)."""
    out: dict[str, str] = {}
    for match in _KV_RE.finditer(text):
        key, value = match[1], match[2]
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        out[key] = value
    return out if ("category" in out or "source" in out) else {}


def meta_entry(pattern: str, kind: str, meta: Mapping[str, str]) -> Entry:
    """An entry from a pattern, the kind its syntax states and its metadata comment; the
    comment's ``match=`` wins when the syntax cannot say it (hosts, Zeek, RPZ apexes)."""
    stated = meta.get("match")
    sources = tuple(s for s in meta.get("source", "").split(",") if s)
    return Entry(pattern, stated if stated in KINDS else kind, meta.get("category") or None, sources,
                 meta.get("note", ""))


def header_lines(sigset: SignatureSet, prefix: str) -> list[str]:
    """The set's version, description and every source it uses, as comment lines."""
    used = {code for sig in sigset.entries for code in sig.source.split(",")}
    lines = [f"{prefix}{TAG} version={json.dumps(sigset.version)} "
             f"description={json.dumps(_flat(_description(sigset)), ensure_ascii=False)}"]
    for code in sorted(used):
        text = sigset.sources.get(code, code)
        lines.append(f"{prefix}{TAG} source {code}={json.dumps(_flat(text), ensure_ascii=False)}")
    return lines


def read_header(text: str, collector: Collector) -> bool:
    """Take a header comment's payload (after the comment marker) into the collector;
    False when the comment is not one of ours."""
    body = text.strip()
    if not body.startswith(TAG + " "):
        return False
    body = body[len(TAG) + 1:]
    if body.startswith("source "):
        pair = _KV_RE.fullmatch(body[len("source "):].strip())
        if pair and pair[2].startswith('"'):
            try:
                collector.sources[pair[1]] = json.loads(pair[2])
            except ValueError:
                return False
            return True
        return False
    for match in _KV_RE.finditer(body):
        if match[1] in ("version", "description") and match[2].startswith('"'):
            try:
                collector.header[match[1]] = json.loads(match[2])
            except ValueError:
                continue
    return True


def source_url(text: str) -> str | None:
    """The first URL in a source's description (Zeek's ``meta.url``)."""
    found = _URL_RE.search(text)
    return found[0] if found else None


def _description(sigset: SignatureSet) -> str:
    """A set keeps no description of its own (a directory joins several files): name it by
    its file or directory and digest, which is what ``signatures check`` prints too."""
    name = sigset.path.rstrip("/").rsplit("/", 1)[-1] or sigset.path
    return f"signatures from {name}" + (f" (sha256 {sigset.sha256[:16]})" if sigset.sha256 else "")


def _flat(text: str) -> str:
    """One line: formats are line-based, and a note must not start a new record."""
    return " ".join(text.split())


def names_only(sigset: SignatureSet, fmt: str, suffix_loss: str | None) -> tuple[list[tuple[Signature, str]], list[str]]:
    """For a format that holds names, not patterns: the exact and suffix entries with their
    notes, and the warnings saying how many regexes were left out and, when the format
    cannot cover the names under a domain (``suffix_loss`` says how), how many suffix
    entries it holds as their own name only."""
    kept = [(sig, note) for sig, note in with_notes(sigset) if sig.kind != "regex"]
    regexes = len(sigset.entries) - len(kept)
    suffixes = sum(sig.kind == "suffix" for sig, _ in kept)
    warnings = []
    if suffix_loss and suffixes:
        warnings.append(f"{fmt}: {suffixes} suffix entries {suffix_loss}")
    if regexes:
        warnings.append(f"{fmt}: {regexes} regex entries left out (the format has no patterns)")
    return kept, warnings


def with_notes(sigset: SignatureSet) -> Iterator[tuple[Signature, str]]:
    """Every entry with its note, in file order."""
    for sig in sigset.entries:
        origin = sigset.origins.get(sig.pattern)
        yield sig, origin.note if origin else ""


def lines_of(text: str) -> Iterable[tuple[int, str]]:
    """Numbered lines, ``\\r\\n`` or ``\\n``; numbering matches what an editor shows."""
    for number, line in enumerate(text.split("\n"), 1):
        yield number, line.rstrip("\r")
