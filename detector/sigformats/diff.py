"""What changes between two signature sets: the review step before adopting a list.

``diff_signatures(old, new)`` compares by pattern: entries added and removed, entries whose
category changed (recategorised), whose match kind changed (an exact name that became a
suffix covers many more names) and whose sources changed. ``format_diff`` prints it grouped
by category with the sources of each entry; ``diff_json`` is the same as data, for tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from detector.match import SignatureSet
from detector.records import CATEGORIES, Signature


@dataclass(frozen=True, slots=True)
class Changed:
    """One pattern in both sets whose category, kind or sources differ."""

    old: Signature
    new: Signature


@dataclass(frozen=True, slots=True)
class SignatureDiff:
    """Added, removed and changed entries between two sets, each in category order."""

    added: tuple[Signature, ...]
    removed: tuple[Signature, ...]
    recategorised: tuple[Changed, ...]
    rematched: tuple[Changed, ...]
    resourced: tuple[Changed, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.recategorised or self.rematched or self.resourced)


def diff_signatures(old: SignatureSet, new: SignatureSet) -> SignatureDiff:
    """Every difference between ``old`` and ``new`` by pattern."""
    before = {sig.pattern: sig for sig in old.entries}
    after = {sig.pattern: sig for sig in new.entries}
    added = [sig for pattern, sig in after.items() if pattern not in before]
    removed = [sig for pattern, sig in before.items() if pattern not in after]
    recategorised, rematched, resourced = [], [], []
    for pattern, sig in after.items():
        was = before.get(pattern)
        if was is None:
            continue
        if was.category != sig.category:
            recategorised.append(Changed(was, sig))
        if was.kind != sig.kind:
            rematched.append(Changed(was, sig))
        if set(_codes(was)) != set(_codes(sig)):
            resourced.append(Changed(was, sig))
    return SignatureDiff(_ordered(added), _ordered(removed), tuple(sorted(recategorised, key=_change_key)),
                         tuple(sorted(rematched, key=_change_key)), tuple(sorted(resourced, key=_change_key)))


def format_diff(diff: SignatureDiff, old: SignatureSet, new: SignatureSet, old_label: str, new_label: str) -> str:
    """Human text: a summary line, then each kind of change grouped by category."""
    out = [
        f"--- {old_label} (version {old.version}, {len(old.entries)} entries)",
        f"+++ {new_label} (version {new.version}, {len(new.entries)} entries)",
        (f"added {len(diff.added)}, removed {len(diff.removed)}, recategorised {len(diff.recategorised)}, "
         f"match changed {len(diff.rematched)}, sources changed {len(diff.resourced)}"),
    ]
    for title, sign, entries in (("added", "+", diff.added), ("removed", "-", diff.removed)):
        if entries:
            out += ["", f"{title}:"]
            for category, group in _by_category(entries, lambda s: s.category):
                out.append(f"  {category}:")
                out += [f"    {sign} {_entry(sig)}" for sig in group]
    if diff.recategorised:
        out += ["", "recategorised:"]
        for move, group in _by_category(diff.recategorised, lambda c: f"{c.old.category} -> {c.new.category}"):
            out.append(f"  {move}:")
            out += [f"    ~ {_entry(change.new)}" for change in group]
    if diff.rematched:
        out += ["", "match changed:"]
        for change in diff.rematched:
            out.append(f"    ~ {change.new.pattern}: {change.old.kind} -> {change.new.kind} "
                       f"(category {change.new.category})")
    if diff.resourced:
        out += ["", "sources changed:"]
        for change in diff.resourced:
            gained = [c for c in _codes(change.new) if c not in _codes(change.old)]
            lost = [c for c in _codes(change.old) if c not in _codes(change.new)]
            parts = [f"+{c}" for c in gained] + [f"-{c}" for c in lost]
            out.append(f"    ~ {change.new.pattern} ({change.new.category}): {' '.join(parts)}")
    codes = sorted({c for sig in diff.added for c in _codes(sig)}
                   | {c for ch in diff.resourced for c in _codes(ch.new) if c not in _codes(ch.old)})
    if codes:
        out += ["", "sources named above:"]
        out += [f"  {code}: {new.sources.get(code, '(no description)')}" for code in codes]
    return "\n".join(out) + "\n"


def diff_json(diff: SignatureDiff) -> dict[str, Any]:
    """The diff as JSON-ready data: lists of entries (pattern, match, category, sources)."""

    def entry(sig: Signature) -> dict[str, Any]:
        return {"pattern": sig.pattern, "match": sig.kind, "category": sig.category, "sources": _codes(sig)}

    def change(item: Changed) -> dict[str, Any]:
        return {"old": entry(item.old), "new": entry(item.new)}

    return {
        "added": [entry(s) for s in diff.added],
        "removed": [entry(s) for s in diff.removed],
        "recategorised": [change(c) for c in diff.recategorised],
        "match_changed": [change(c) for c in diff.rematched],
        "sources_changed": [change(c) for c in diff.resourced],
    }


def _codes(sig: Signature) -> list[str]:
    return [code for code in sig.source.split(",") if code]


def _entry(sig: Signature) -> str:
    return f"{sig.pattern} ({sig.kind}) sources: {', '.join(_codes(sig))}"


_ORDER = {category: i for i, category in enumerate(CATEGORIES)}


def _ordered(entries: Iterable[Signature]) -> tuple[Signature, ...]:
    return tuple(sorted(entries, key=lambda s: (_ORDER.get(s.category, 99), s.pattern)))


def _change_key(change: Changed) -> tuple[int, int, str]:
    return (_ORDER.get(change.old.category, 99), _ORDER.get(change.new.category, 99), change.new.pattern)


def _by_category(items: Iterable[Any], key: Any) -> list[tuple[str, list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.items())
