"""Keeping the signature set current: read local copies of the public lists it cites,
check every entry against them, and write the reviewed refresh.

Each source code of ``signatures/*.toml`` (``v2fly-tiktok``, ``ndpi``, ``hagezi`` …)
stands for one public list; ``UPSTREAMS`` says where its copy lies inside a directory of
clones (``COPIES/domain-list-community/data/tiktok`` …) and in which format it is read.
Nothing is downloaded: ``docs/signature-update.md`` gives the clone commands.

``check_support`` tells, for every entry, which of its cited lists hold it now. A list
holds an entry when it names the entry's domain or a name under it (suffix), the name
itself (exact), or a name the regex matches, or states the same regex. An entry whose
cited lists were all read and none holds it any more is *unsupported*; one whose cited
lists were not read (no copy, or no reader for the format) is *unchecked*.

``plan_update`` makes the refreshed set: each entry's sources become the lists that hold
it (lists not read keep their claim), unsupported entries go, and the entries of a
review file (``--accept``: ``[[entry]]`` tables with pattern, match, category, note) come
in, each with the lists that hold it; an accepted entry no list holds is refused. It also
lists the upstream names the set does not cover, for the next review. ``write_update``
edits the signature files in place (sources lines, removed and added entries, version),
keeping every comment and the order of the rest.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detector.match import KINDS, SignatureSet, _compile_regex, _domain_problem, check_signatures
from detector.records import CATEGORIES, Signature
from detector.sigformats import FormatError, ImportOptions, _string, import_signatures


@dataclass(frozen=True, slots=True)
class Upstream:
    """One public list: its source code, its files under the copies directory (each read
    when present), the import format and, for tables that hold many, the service."""

    code: str
    fmt: str | None  # None: no reader for this list's format; its claims stay unchecked
    files: tuple[str, ...]
    text: str
    service: str | None = None
    follow: bool = False  # v2fly: a list's own lines only; each included list is its own source


#: The public lists the shipped files cite, and where a clone keeps them.
UPSTREAMS: tuple[Upstream, ...] = (
    Upstream("v2fly-tiktok", "v2fly", ("domain-list-community/data/tiktok",),
             "v2fly/domain-list-community data/tiktok - https://github.com/v2fly/domain-list-community/blob/master/data/tiktok"),
    Upstream("v2fly-bytedance", "v2fly", ("domain-list-community/data/bytedance",),
             "v2fly/domain-list-community data/bytedance - https://github.com/v2fly/domain-list-community/blob/master/data/bytedance"),
    Upstream("v2fly-lark", "v2fly", ("domain-list-community/data/lark-global",),
             "v2fly/domain-list-community data/lark-global - https://github.com/v2fly/domain-list-community/blob/master/data/lark-global"),
    Upstream("v2fly-douyin", "v2fly", ("domain-list-community/data/douyin",),
             "v2fly/domain-list-community data/douyin - https://github.com/v2fly/domain-list-community/blob/master/data/douyin"),
    Upstream("v2fly-volcengine", "v2fly", ("domain-list-community/data/volcengine",),
             "v2fly/domain-list-community data/volcengine - https://github.com/v2fly/domain-list-community/blob/master/data/volcengine"),
    Upstream("ndpi", "ndpi", ("nDPI/src/lib/ndpi_content_match.c.inc",),
             "nDPI protocol TikTok (id 49), src/lib/ndpi_content_match.c.inc - https://github.com/ntop/nDPI",
             service="TikTok"),
    Upstream("adguard", "adguard-services",
             ("HostlistsRegistry/services/tiktok.yml", "HostlistsRegistry/services/tiktok.json"),
             "AdGuard HostlistsRegistry blocked service tiktok - https://github.com/AdguardTeam/HostlistsRegistry/blob/main/services/tiktok.yml",
             service="tiktok"),
    Upstream("hagezi", "wildcard", ("dns-blocklists/wildcard/native.tiktok.txt",),
             "HaGeZi native.tiktok tracker list - https://github.com/hagezi/dns-blocklists (wildcard/native.tiktok.txt)"),
    Upstream("hagezi-extended", "wildcard", ("dns-blocklists/wildcard/native.tiktok.extended.txt",),
             "HaGeZi native.tiktok.extended - https://github.com/hagezi/dns-blocklists (wildcard/native.tiktok.extended.txt)"),
    Upstream("blocklistproject", "hosts", ("Lists/tiktok.txt",),
             "The Block List Project tiktok.txt - https://github.com/blocklistproject/Lists/blob/master/tiktok.txt"),
    Upstream("mischosts", "hosts", ("mischosts/tiktok-hosts",),
             "mischosts tiktok-hosts - https://github.com/liamengland1/mischosts/blob/master/tiktok-hosts"),
    Upstream("mischosts-regex", None, ("mischosts/social/tiktok-regex.list",),
             "mischosts social/tiktok-regex.list - https://github.com/liamengland1/mischosts/blob/master/social/tiktok-regex.list"),
    Upstream("aao-fyi", "hosts", ("hosts/data/social/tiktok.txt", "hosts/data/social/bytedance.txt"),
             "aao-fyi hosts data/social/tiktok.txt and bytedance.txt - https://github.com/aao-fyi/hosts"),
    Upstream("you-oops", "hosts", ("ipranges/tiktok/domain.txt",),
             "you-oops-dev ipranges tiktok/domain.txt - https://github.com/you-oops-dev/ipranges/blob/main/tiktok/domain.txt"),
    Upstream("antonme", "hosts", ("ipnames/resolve-tiktok.txt", "ipnames/ext-resolve-tiktok.txt"),
             "antonme ipnames resolve-tiktok.txt / ext-resolve-tiktok.txt - https://github.com/antonme/ipnames"),
)
UPSTREAM_CODES = {upstream.code: upstream for upstream in UPSTREAMS}
#: Keys of an ``--accept`` entry.
_ACCEPT_KEYS = ("pattern", "match", "category", "note", "file")
_TABLE_RE = re.compile(r"\s*\[")
_ENTRY_RE = re.compile(r"\s*\[\[\s*entry\s*\]\]\s*(#.*)?")
_KEY_RE = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


class UpdateError(FormatError):
    """A refresh that cannot be made: ``FILE:LINE: what`` for each problem."""


@dataclass(frozen=True, slots=True)
class UpstreamList:
    """What one public list names now, as read from its local copy."""

    code: str
    files: tuple[str, ...]
    names: frozenset[str]  # exact and suffix entries: the names the list states
    regexes: frozenset[str]
    skipped: int
    #: every label suffix of every name: a suffix entry is held when its domain is here
    _under: frozenset[str] = field(default=frozenset(), repr=False)

    def holds(self, sig: Signature) -> bool:
        """Whether this list names what ``sig`` matches (see the module docstring)."""
        if sig.kind == "suffix":
            return sig.pattern in self._under
        if sig.kind == "exact":
            return sig.pattern in self.names
        if sig.kind == "regex":
            if sig.pattern in self.regexes:
                return True
            compiled = _compile_regex(sig.pattern)
            return not isinstance(compiled, str) and any(compiled[1].fullmatch(name) for name in self.names)
        return False


@dataclass(frozen=True, slots=True)
class Copies:
    """The lists read from a copies directory, and what could not be read."""

    root: str
    lists: Mapping[str, UpstreamList]
    missing: Mapping[str, str]  # code -> why it was not read


def read_copies(root: str | Path) -> Copies:
    """Every list of ``UPSTREAMS`` whose files are under ``root``; a file that exists but
    does not import is an error (``UpdateError`` with every problem)."""
    root = Path(root)
    if not root.is_dir():
        raise UpdateError(f"{root}:0: not a directory of upstream copies")
    lists: dict[str, UpstreamList] = {}
    missing: dict[str, str] = {}
    problems: list[str] = []
    for upstream in UPSTREAMS:
        present = [root / name for name in upstream.files if (root / name).is_file()]
        if not present:
            missing[upstream.code] = f"no copy ({' or '.join(upstream.files)})"
            continue
        if upstream.fmt is None:
            missing[upstream.code] = f"no reader for {present[0].name}'s format"
            continue
        names: set[str] = set()
        regexes: set[str] = set()
        skipped = 0
        for path in present:
            options = ImportOptions(category=CATEGORIES[0], source=upstream.code, service=upstream.service)
            try:
                imported = import_signatures(path, upstream.fmt, options, follow=upstream.follow)
            except FormatError as exc:
                problems += exc.problems
                continue
            skipped += len(imported.skipped)
            for sig in imported.entries:
                (regexes if sig.kind == "regex" else names).add(sig.pattern)
        under = {suffix for name in names for suffix in _suffixes(name)}
        lists[upstream.code] = UpstreamList(upstream.code, tuple(map(str, present)), frozenset(names),
                                            frozenset(regexes), skipped, frozenset(under))
    if problems:
        raise UpdateError(problems)
    return Copies(str(root), lists, missing)


@dataclass(frozen=True, slots=True)
class Support:
    """One entry against the copies: the cited lists that hold it, those that do not, and
    those that could not be read; ``others`` are lists it does not cite that hold it."""

    sig: Signature
    held: tuple[str, ...]
    lost: tuple[str, ...]
    unchecked: tuple[str, ...]
    others: tuple[str, ...]

    @property
    def verdict(self) -> str:
        """``supported`` (a list read holds it; the refresh cites every such list),
        ``unsupported`` (no list read holds it and every cited one was read) or
        ``unchecked`` (no list read holds it; some cited ones were not read)."""
        if self.held or self.others:
            return "supported"
        return "unchecked" if self.unchecked else "unsupported"


def check_support(sigset: SignatureSet, copies: Copies) -> list[Support]:
    """Every entry that cites an upstream list against the copies; entries citing none of
    them (visibility.toml's, whose sources are no lists of names) are left out."""
    known = set(UPSTREAM_CODES)
    out = []
    for sig in sigset.entries:
        cited = _codes(sig)
        if not any(code in known for code in cited):
            continue
        held = tuple(c for c in cited if c in copies.lists and copies.lists[c].holds(sig))
        lost = tuple(c for c in cited if c in copies.lists and c not in held)
        unchecked = tuple(c for c in cited if c not in copies.lists)
        others = tuple(c for c, lst in copies.lists.items() if c not in cited and c in known and lst.holds(sig))
        out.append(Support(sig, held, lost, unchecked, others))
    return out


@dataclass(frozen=True, slots=True)
class Accepted:
    """One reviewed addition: the entry, its note, the file it goes to, and its line in
    the review file."""

    sig: Signature
    note: str
    file: str | None
    line: int


def read_accept(path: str | Path) -> list[Accepted]:
    """The ``[[entry]]`` tables of a review file; every problem as ``FILE:LINE: what``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except OSError as exc:
        raise UpdateError(f"{path}:0: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UpdateError(f"{path}:0: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UpdateError(f"{path}:0: TOML syntax error: {exc}") from None
    except RecursionError:
        raise UpdateError(f"{path}:0: arrays or inline tables nested too deeply") from None
    lines = text.split("\n")
    headers = [i + 1 for i, line in enumerate(lines) if _ENTRY_RE.fullmatch(line)]
    tables = doc.get("entry", [])
    problems = [f"{path}:1: unknown top-level key {key!r} (a review file holds [[entry]] tables)"
                for key in doc if key != "entry"]
    if not isinstance(tables, list) or len(tables) != len(headers) or not all(isinstance(t, dict) for t in tables):
        raise UpdateError(problems + [f"{path}:1: write each accepted entry as its own [[entry]] table"])
    out = []
    for line, table in zip(headers, tables):
        where = f"{path}:{line}"
        unknown = [key for key in table if key not in _ACCEPT_KEYS]
        pattern, kind, category = table.get("pattern"), table.get("match"), table.get("category")
        note, target = table.get("note", ""), table.get("file")
        if unknown:
            problems.append(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_ACCEPT_KEYS)})")
        elif not isinstance(pattern, str) or kind not in KINDS or kind == "address":
            problems.append(f"{where}: needs pattern and match (suffix, exact or regex)")
        elif category not in CATEGORIES:
            problems.append(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
        elif not isinstance(note, str) or not (target is None or isinstance(target, str) and "/" not in target):
            problems.append(f"{where}: note must be a string, file a file name in the signatures directory")
        else:
            compiled = _compile_regex(pattern) if kind == "regex" else None
            problem = compiled if isinstance(compiled, str) else (None if kind == "regex" else _domain_problem(pattern))
            if problem:
                problems.append(f"{where}: {problem}")
            else:
                out.append(Accepted(Signature(pattern, kind, category, "", line), note, target, line))
    if problems:
        raise UpdateError(problems)
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The refresh: the new entries (each with its file and note), what changed, and the
    upstream names nothing in the set covers."""

    old: SignatureSet
    new: SignatureSet
    support: tuple[Support, ...]
    removed: tuple[Signature, ...]
    added: tuple[Accepted, ...]
    uncovered: Mapping[str, tuple[str, ...]]  # name -> the lists naming it
    files: Mapping[str, str]  # pattern -> file it is (or goes) in


def plan_update(sigset: SignatureSet, copies: Copies, accepted: Sequence[Accepted] = ()) -> Plan:
    """The refreshed set (see the module docstring); ``UpdateError`` when an accepted
    entry is held by no list read, or names a file that cannot be chosen."""
    support = check_support(sigset, copies)
    by_pattern = {s.sig.pattern: s for s in support}
    files = {sig.pattern: sigset.origins[sig.pattern].file if sig.pattern in sigset.origins else sigset.path
             for sig in sigset.entries}
    entries: list[Signature] = []
    removed: list[Signature] = []
    for sig in sigset.entries:
        checked = by_pattern.get(sig.pattern)
        if checked is None:
            entries.append(sig)
        elif checked.verdict == "unsupported":
            removed.append(sig)
        else:
            kept = [c for c in _codes(sig) if c in checked.held or c in checked.unchecked]
            entries.append(Signature(sig.pattern, sig.kind, sig.category, ",".join(kept + list(checked.others)),
                                     sig.line))
    problems = []
    added: list[Accepted] = []
    present = {sig.pattern for sig in sigset.entries}
    for item in accepted:
        if item.sig.pattern in present:
            continue  # accepted in an earlier refresh: its sources are refreshed above
        held = [c for c, lst in copies.lists.items() if lst.holds(item.sig)]
        if not held:
            problems.append(f"{item.sig.pattern!r} (accepted at line {item.line}) is in none of the lists read "
                            f"from {copies.root}")
            continue
        target = _target(item, sigset, files)
        if target is None:
            problems.append(f"{item.sig.pattern!r} (accepted at line {item.line}): "
                            + (f"file {item.file!r} is not one of the set's files" if item.file is not None else
                               f"say file = \"…\": no single signature file holds category {item.sig.category!r}"))
            continue
        sig = Signature(item.sig.pattern, item.sig.kind, item.sig.category, ",".join(held), 0)
        added.append(Accepted(sig, item.note, target, item.line))
        files[sig.pattern] = target
        present.add(sig.pattern)
    if problems:
        raise UpdateError(problems)
    new = SignatureSet(sigset.version, sigset.path, "", tuple(entries) + tuple(a.sig for a in added),
                       sources={**sigset.sources, **{u.code: u.text for u in UPSTREAMS}})
    uncovered: dict[str, list[str]] = {}
    for code, lst in copies.lists.items():
        for name in sorted(lst.names):
            if new.match(name) is None:
                uncovered.setdefault(name, []).append(code)
    return Plan(sigset, new, tuple(support), tuple(removed), tuple(added),
                {name: tuple(codes) for name, codes in uncovered.items()}, files)


def format_plan(plan: Plan, copies: Copies) -> str:
    """What the review reads before ``--write``: the lists read, entries no cited list
    holds, and the upstream names the refreshed set does not cover, by zone."""
    out = [f"upstream copies in {copies.root}:"]
    for upstream in UPSTREAMS:
        lst = copies.lists.get(upstream.code)
        if lst is not None:
            out.append(f"  {upstream.code}: {len(lst.names) + len(lst.regexes)} names from {', '.join(lst.files)}"
                       + (f" ({lst.skipped} lines skipped)" if lst.skipped else ""))
        else:
            out.append(f"  {upstream.code}: not read: {copies.missing.get(upstream.code, 'not asked for')}")
    counts = {"supported": 0, "unsupported": 0, "unchecked": 0}
    for item in plan.support:
        counts[item.verdict] += 1
    out += ["", f"entries citing these lists: {counts['supported']} held by a list read, "
                f"{counts['unsupported']} held by none (removed), {counts['unchecked']} not checked "
                "(their lists were not read)"]
    unchecked = [s for s in plan.support if s.verdict == "unchecked"]
    if unchecked:
        out.append("not checked:")
        out += [f"    ? {s.sig.pattern} ({s.sig.category}) cites {', '.join(s.unchecked)}" for s in unchecked]
    if plan.uncovered:
        out += ["", f"upstream names the refreshed set does not cover ({len(plan.uncovered)}; review them, "
                    "accept the ones that belong with --accept):"]
        zones: dict[str, list[str]] = {}
        for name, codes in plan.uncovered.items():
            zones.setdefault(_zone(name), []).append(f"{name}  ({', '.join(codes)})")
        for zone in sorted(zones):
            names = zones[zone]
            if len(names) == 1 and names[0].startswith(zone + " "):
                out.append(f"  {names[0]}")
            else:
                out += [f"  {zone}:", *(f"    {line}" for line in names)]
    return "\n".join(out) + "\n"


def write_update(plan: Plan, version: str | None = None) -> list[str]:
    """Edit each signature file in place; returns the files written. Every file is
    checked after the edit (``check_signatures``); a problem there is an ``UpdateError``
    and the files are restored."""
    new_by_pattern = {sig.pattern: sig for sig in plan.new.entries}
    removed = {sig.pattern for sig in plan.removed}
    by_file: dict[str, list[Signature]] = {}
    for sig in plan.old.entries:
        by_file.setdefault(plan.files[sig.pattern], []).append(sig)
    for item in plan.added:
        by_file.setdefault(item.file or "", [])
    written: list[str] = []
    originals: dict[str, str] = {}
    for name, sigs in by_file.items():
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _restore(originals)
            raise UpdateError(f"{path}:0: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        lines = text.split("\n")
        blocks = _entry_blocks(lines)
        edits: list[tuple[int, int, list[str]]] = []  # (start, end) replaced by lines, 0-based, end exclusive
        used_codes: set[str] = set()
        for sig in sigs:
            start, end = blocks[sig.line - 1]
            if sig.pattern in removed:
                stop = end + 1 if end < len(lines) and not lines[end].strip() else end
                edits.append((start, stop, []))
                continue
            new = new_by_pattern[sig.pattern]
            used_codes.update(_codes(new))
            if _codes(new) != _codes(sig):
                for i in range(start, end):
                    key = _KEY_RE.match(lines[i])
                    if key and key[1] == "source":
                        edits.append((i, i + 1, [f"source = [{', '.join(_string(c) for c in _codes(new))}]"]))
        inserts: dict[int, list[str]] = {}
        for item in (a for a in plan.added if a.file == name):
            used_codes.update(_codes(item.sig))
            same = [blocks[s.line - 1][1] for s in sigs if s.category == item.sig.category and s.pattern not in removed]
            at = max(same) if same else len(lines) - (1 if lines and not lines[-1] else 0)
            inserts.setdefault(at, []).extend(["", *_entry_lines(item)])
        edits += [(at, at, added) for at, added in inserts.items()]
        edits += _source_lines(lines, used_codes, plan.new.sources)
        if version is not None and edits:  # a file the refresh does not change keeps its version
            for i, line in enumerate(lines):
                key = _KEY_RE.match(line)
                if key and key[1] == "version" and not _TABLE_RE.match(line):
                    edits.append((i, i + 1, [f"version = {_string(version)}"]))
                    break
        if not edits:
            continue
        for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            lines[start:end] = replacement
        originals[name] = text
        try:
            path.write_text("\n".join(lines), encoding="utf-8")
        except OSError as exc:
            _restore(originals)
            raise UpdateError(f"{path}:0: cannot write: {exc.strerror or exc}") from None
        written.append(name)
    problems = [p for name in written for p in check_signatures(name)]
    if problems:
        _restore(originals)
        raise UpdateError(problems)
    return written


def _restore(originals: Mapping[str, str]) -> None:
    """Put back the files a failed write changed."""
    for name, text in originals.items():
        Path(name).write_text(text, encoding="utf-8")


def _entry_blocks(lines: list[str]) -> dict[int, tuple[int, int]]:
    """Header line (0-based) of each ``[[entry]]`` -> (header, end of its last key line)."""
    headers = [i for i, line in enumerate(lines) if _ENTRY_RE.fullmatch(line)]
    blocks = {}
    for header in headers:
        end = header + 1
        for i in range(header + 1, len(lines)):
            if _TABLE_RE.match(lines[i]):
                break
            if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                end = i + 1
        blocks[header] = (header, end)
    return blocks


def _source_lines(lines: list[str], used: set[str], texts: Mapping[str, str]) -> list[tuple[int, int, list[str]]]:
    """Lines to add to the file's ``[sources]`` table for codes it now uses but lacks."""
    start = next((i for i, line in enumerate(lines) if line.strip() == "[sources]"), None)
    if start is None:
        return []
    end, present = start + 1, set()
    for i in range(start + 1, len(lines)):
        if _TABLE_RE.match(lines[i]):
            break
        key = _KEY_RE.match(lines[i])
        if key:
            present.add(key[1])
            end = i + 1
    missing = sorted(used - present)
    return [(end, end, [f"{code} = {_string(texts[code])}" for code in missing])] if missing else []


def _entry_lines(item: Accepted) -> list[str]:
    sig = item.sig
    out = ["[[entry]]", f"pattern = {_string(sig.pattern) if sig.kind != 'regex' else _literal(sig.pattern)}",
           f'match = "{sig.kind}"', f'category = "{sig.category}"',
           f"source = [{', '.join(_string(c) for c in _codes(sig))}]"]
    if item.note:
        out.append(f"note = {_string(item.note)}")
    return out


def _target(item: Accepted, sigset: SignatureSet, files: Mapping[str, str]) -> str | None:
    """The file an accepted entry goes to: the set's file it names, else the one file that
    holds its category; None when neither is found."""
    if item.file is not None:
        named = [name for name in sorted(set(files.values())) if Path(name).name == item.file]
        return named[0] if named else None
    holding = {files[s.pattern] for s in sigset.entries if s.category == item.sig.category}
    return holding.pop() if len(holding) == 1 else None


def _codes(sig: Signature) -> list[str]:
    return [code for code in sig.source.split(",") if code]




def _literal(text: str) -> str:
    """A regex as a TOML literal string (no escapes), as the shipped files write them."""
    return f"'{text}'" if "'" not in text and "\n" not in text else _string(text)


def _suffixes(name: str) -> Iterable[str]:
    labels = name.split(".")
    return (".".join(labels[i:]) for i in range(len(labels) - 1))


def _zone(name: str) -> str:
    """The last two labels: enough to group a review list."""
    return ".".join(name.split(".")[-2:])
