"""AdGuard / Adblock Plus filter syntax, as AdGuard Home and other DNS filters read it.

``||name^`` blocks a name and every name under it (a suffix entry), ``|name^`` the name
alone (exact), ``/regex/`` a regular expression (AdGuard's DNS syntax). Each rule this
program writes is preceded by a ``! category=… source=…`` comment carrying its metadata.
Rules a DNS filter reads but a signature cannot express are skipped with the reason:
exceptions (``@@``), modifiers that change what a rule means (``$client``, ``$dnsrewrite``,
``$badfilter`` …), wildcards, rules without the ``^`` separator (which match inside longer
names), and cosmetic rules of browser lists.
"""

from __future__ import annotations

import re

from detector.match import SignatureSet
from detector.sigformats.common import (
    Collector, Exported, ImportOptions, header_lines, lines_of, meta_entry, meta_text, parse_meta,
    read_header, with_notes,
)
from detector.sigformats.hosts import parse_line as parse_hosts_line

#: Modifiers that do not change which names a blocking rule covers.
_HARMLESS_MODIFIERS = frozenset({"important"})
_NAME = r"[A-Za-z0-9_.-]+"
_SUFFIX_RE = re.compile(rf"\|\|({_NAME})\^\|?")
_EXACT_RE = re.compile(rf"\|({_NAME})\^\|?")
_COSMETIC = ("##", "#@#", "#$#", "#?#", "#%#", "$$", "#@$#")


def export(sigset: SignatureSet) -> Exported:
    """``||suffix^``, ``|exact^`` and ``/regex/`` rules, each after its metadata comment."""
    lines = ["[Adblock Plus 2.0]", "! Title: TikTok (tiktok-detector signatures)"]
    lines += header_lines(sigset, "! ")
    for sig, note in with_notes(sigset):
        rule = {"suffix": f"||{sig.pattern}^", "exact": f"|{sig.pattern}^", "regex": f"/{sig.pattern}/"}[sig.kind]
        lines += [f"! {meta_text(sig, note, kind=False)}", rule]
    return Exported({"tiktok-adblock.txt": "\n".join(lines) + "\n"})


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """Every blocking rule; a metadata comment applies to the rule right after it."""
    meta: dict[str, str] = {}
    for number, raw in lines_of(text):
        line = raw.strip()
        if not line or (line.startswith("[") and line.endswith("]")):
            continue
        if line.startswith("!") or (line.startswith("#") and not line.startswith(_COSMETIC)):
            comment = line[1:]
            if not read_header(comment, out):
                meta = parse_meta(comment)
            continue
        rule_meta, meta = meta, {}
        parse_rule(number, line, rule_meta, out, options)


def parse_rule(number: int, line: str, meta: dict[str, str], out: Collector, options: ImportOptions,
               label: str | None = None) -> None:
    """One rule (not a comment) at ``number``, with the metadata comment that applies to it;
    also what AdGuard's blocked-services lists hold, one rule per string."""
    if any(marker in line for marker in _COSMETIC):
        out.skip(number, "cosmetic rule (browser element hiding), not a name", label)
        return
    if line.startswith("@@"):
        out.skip(number, "exception rule (@@): it allows names, it does not list them", label)
        return
    rule, modifiers = _split_modifiers(line)
    unsupported = [m for m in modifiers if m not in _HARMLESS_MODIFIERS]
    if unsupported:
        out.skip(number, f"modifier ${','.join(unsupported)} changes what the rule covers", label)
        return
    if rule.startswith("/") and rule.endswith("/") and len(rule) > 2:
        out.add(number, meta_entry(rule[1:-1], "regex", meta), label)
        return
    for shape, kind in ((_SUFFIX_RE, "suffix"), (_EXACT_RE, "exact")):
        found = shape.fullmatch(rule)
        if found:
            out.add(number, meta_entry(found[1].lower().rstrip("."), kind, meta), label)
            return
    if "*" in rule:
        out.skip(number, "wildcard rule: it matches inside names, not at label boundaries", label)
    elif rule.startswith(("||", "|")) or "^" in rule or "/" in rule:
        out.skip(number, "rule without the ^ separator after the name: it also matches longer names", label)
    else:
        # hosts-style and domains-only lines are part of the DNS syntax too
        parse_hosts_line(number, rule, meta, out, options.kind or "exact", label)


def _split_modifiers(line: str) -> tuple[str, list[str]]:
    """``rule$mod1,mod2`` -> rule, [mod1, mod2]; a ``$`` inside a /regex/ is not a modifier."""
    if line.startswith("/") and line.endswith("/"):
        return line, []
    rule, dollar, mods = line.rpartition("$")
    if not dollar:
        return line, []
    return rule, [m.strip().split("=", 1)[0].lstrip("~") for m in mods.split(",") if m.strip()]
