"""v2fly domain-list-community data files (the source of V2Ray/Xray ``geosite`` lists).

Grammar (the project's README and ``main.go``): ``domain:`` (or a bare name) covers a
domain and its subdomains, ``full:`` one name, ``regexp:`` a Go regular expression,
``keyword:`` a substring; ``@attr`` attributes (``[a-z0-9!]``) follow the value;
``include:list @attr @-attr`` pulls in another file of the same directory, filtered by
attributes; ``&list`` affiliations add the rule to another list as well; ``#`` starts a
comment anywhere on a line.

A category is written as an attribute (``@web``; hyphens dropped, so ``bytedance-shared``
is ``@bytedanceshared``), the sources and note in the line's comment. ``keyword:`` rules
match inside labels and cannot be signatures: they are skipped with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from detector.match import SignatureSet
from detector.records import CATEGORIES
from detector.sigformats.common import (
    Collector, Entry, Exported, ImportOptions, header_lines, lines_of, meta_text, parse_meta, read_header, with_notes,
)

#: Attribute spelling of each category (v2fly attributes allow no hyphen).
ATTRIBUTES = {category.replace("-", ""): category for category in CATEGORIES}
_ATTR_RE = re.compile(r"[a-z0-9!]+")
_LIST_RE = re.compile(r"[A-Za-z0-9!-]+")
#: Includes followed from one file: the v2fly lists nest two or three deep.
MAX_INCLUDE_DEPTH = 8

#: Reads an included list by name: (label, text), or None when there is no such file.
Resolver = Callable[[str], "tuple[str, str] | None"]


def export(sigset: SignatureSet, name: str = "tiktok") -> Exported:
    """One rule per entry; regexes that hold a ``#`` (a comment to v2fly) are left out."""
    lines = header_lines(sigset, "# ")
    left_out = 0
    for sig, note in with_notes(sigset):
        if "#" in sig.pattern or any(c.isspace() for c in sig.pattern):
            left_out += 1
            continue
        prefix = {"suffix": "domain:", "exact": "full:", "regex": "regexp:"}[sig.kind]
        attribute = sig.category.replace("-", "")
        lines.append(f"{prefix}{sig.pattern} @{attribute} # {meta_text(sig, note, kind=False)}")
    warnings = [f"v2fly: {left_out} regex entries left out (a '#' or a space would cut them)"] if left_out else []
    return Exported({name: "\n".join(lines) + "\n"}, tuple(warnings))


def parse(text: str, out: Collector, options: ImportOptions, resolve: Resolver | None = None) -> None:
    """The rules of one list and of every list it includes (through ``resolve``)."""
    _parse(text, out.label, out, resolve, (), (), (out.label,))


def _parse(text: str, label: str, out: Collector, resolve: Resolver | None, must: tuple[str, ...],
           ban: tuple[str, ...], chain: tuple[str, ...]) -> None:
    for number, raw in lines_of(text):
        rule, hash_, comment = raw.partition("#")
        rule = rule.strip()
        if not rule:
            if hash_:
                read_header(comment, out)
            continue
        kind, colon, value = rule.partition(":")
        if not colon:
            kind, value = "domain", kind
        kind = kind.lower()
        fields = value.split()
        if not fields:
            out.problem(number, f"empty {kind}: rule", label)
            continue
        if kind == "include":
            _include(number, fields, label, out, resolve, chain, must, ban)
            continue
        attrs: list[str] = []
        bad = None
        for part in fields[1:]:
            if part.startswith("@") and _ATTR_RE.fullmatch(part[1:].lower()):
                attrs.append(part[1:].lower())
            elif not (part.startswith("&") and _LIST_RE.fullmatch(part[1:])):
                bad = part
        if bad is not None:
            out.problem(number, f"unknown field {bad!r} (expected @attribute or &list)", label)
            continue
        if any(a not in attrs for a in must) or any(a in attrs for a in ban):
            continue  # filtered out by the include line's attributes
        if kind == "keyword":
            out.skip(number, f"keyword:{fields[0]} matches inside names, not at label boundaries", label)
            continue
        ours = {"domain": "suffix", "full": "exact", "regexp": "regex"}.get(kind)
        if ours is None:
            out.problem(number, f"unknown rule type {kind!r} (domain, full, keyword, regexp or include)", label)
            continue
        categories = [ATTRIBUTES[a] for a in attrs if a in ATTRIBUTES]
        if len(categories) > 1:
            out.problem(number, f"two category attributes: {', '.join('@' + a for a in attrs if a in ATTRIBUTES)}",
                        label)
            continue
        meta = parse_meta(comment) if hash_ else {}
        pattern = fields[0] if ours == "regex" else fields[0].lower()
        sources = tuple(s for s in meta.get("source", "").split(",") if s)
        out.add(number, Entry(pattern, ours, categories[0] if categories else None, sources, meta.get("note", "")),
                label)


def _include(number: int, fields: list[str], label: str, out: Collector, resolve: Resolver | None,
             chain: tuple[str, ...], outer_must: tuple[str, ...], outer_ban: tuple[str, ...]) -> None:
    """Follow ``include:list @a @-b``; the filters of enclosing includes still apply inside."""
    name = fields[0]
    if not _LIST_RE.fullmatch(name):
        out.problem(number, f"invalid included list name {name!r}", label)
        return
    must, ban = [], []
    for part in fields[1:]:
        attr = part[1:].lower()
        if not part.startswith("@") or not _ATTR_RE.fullmatch(attr.removeprefix("-")):
            out.problem(number, f"include:{name}: unknown field {part!r} (expected @attr or @-attr)", label)
            return
        (ban if attr.startswith("-") else must).append(attr.removeprefix("-"))
    if resolve is None:
        out.problem(number, f"include:{name}: includes need the list's directory (import the file, not text)",
                    label)
        return
    if len(chain) > MAX_INCLUDE_DEPTH:
        out.problem(number, f"include:{name}: includes nested more than {MAX_INCLUDE_DEPTH} deep", label)
        return
    found = resolve(name.lower())
    if found is None:
        out.problem(number, f"include:{name}: no such list beside this one", label)
        return
    inner_label, inner_text = found
    if inner_label in chain:
        out.problem(number, f"include:{name}: includes itself through {' -> '.join(chain)}", label)
        return
    _parse(inner_text, inner_label, out, resolve, (*outer_must, *must), (*outer_ban, *ban), (*chain, inner_label))
