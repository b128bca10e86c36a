"""Suricata rules with datasets, for the names in DNS queries and TLS SNI.

Grammar: Suricata's user guide (``rules/datasets.rst``, ``rules/transforms.rst``) and its
dataset loader (``rust/src/detect/datasets.rs``): a ``type string`` dataset file holds one
base64-encoded value per line (``value,reputation`` for datarep), nothing else; a relative
``load`` path is read beside the rules file.

Export writes, per category, one dataset of the exact names and two rules that look them
up (``dns.query`` and ``tls.sni``, lowercased first); a suffix entry becomes the documented
``dotprefix; content:".name"; endswith;`` rule (the name and every name under it, never
``nottiktok.com``), a regex a ``pcre`` rule behind an ``endswith`` prefilter on its literal
domain. Every rule carries ``metadata: tiktok_category …, tiktok_source …`` (what Suricata
puts in its alert events); a ``# tiktok-detector entry`` comment per entry keeps the note
and the provenance of dataset members, which a dataset file cannot hold. The rules need
Suricata 7 or later (``to_lowercase``).

Import reads such rules (and the usual hand-written shapes of them): dataset lookups on
a name buffer (with their dataset files), dotprefix/endswith suffix rules, exact
startswith+endswith or bsize rules, and anchored pcre rules. Other rules are skipped with
the reason. A bare dataset file imports as the ``suricata-dataset`` format.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable

from detector.match import SignatureSet, _compile_regex
from detector.sigformats.common import (
    TAG, Collector, Exported, ImportOptions, header_lines, lines_of, meta_entry, meta_text, parse_meta,
    read_header, with_notes,
)

DEFAULT_SID_BASE = 1_917_000
#: Sticky buffers that hold a name a device asked for.
NAME_BUFFERS = {"dns.query": "dns", "tls.sni": "tls", "http.host": "http", "quic.sni": "quic"}
_EXPORT_BUFFERS = (("dns.query", "dns", "DNS query"), ("tls.sni", "tls", "TLS SNI"))
_RULE_RE = re.compile(r"(?:alert|drop|reject|rejectsrc|rejectdst|rejectboth|pass)\s", re.IGNORECASE)
_HEX_RE = re.compile(r"\|([0-9A-Fa-f ]*)\|")
#: Reads a dataset file named in a rule's ``load``: (label, text), or None when absent.
Resolver = Callable[[str], "tuple[str, str] | None"]


def export(sigset: SignatureSet, stem: str = "tiktok", sid_base: int = DEFAULT_SID_BASE) -> Exported:
    """The rules file (first) and one dataset file per category with exact entries."""
    lines = header_lines(sigset, "# ")
    datasets: dict[str, list[str]] = {}
    rules: list[str] = []
    sid = sid_base
    for sig, note in with_notes(sigset):
        lines.append(f"# {TAG} entry {json.dumps(sig.pattern)} {meta_text(sig, note)}")
        if sig.kind == "exact":
            datasets.setdefault(sig.category, []).append(sig.pattern)
            continue
        for buffer, proto, where in _EXPORT_BUFFERS:
            sid += 1
            if sig.kind == "suffix":
                match = f'{buffer}; dotprefix; content:".{sig.pattern}"; nocase; endswith;'
            else:
                literal = _literal_domain(sig.pattern)
                match = (f'{buffer}; content:".{literal}"; nocase; endswith; '
                         f'pcre:"/{_escape(sig.pattern)}/i";')
            rules.append(_rule(proto, f"{sig.category} name in {where}: {_msg(sig.pattern)}", match,
                               sig.category, sig.kind, sig.source.split(","), sid))
    files: dict[str, str] = {}
    for category, names in datasets.items():
        name = f"{stem}-{category}"
        files[f"{name}.lst"] = "".join(base64.b64encode(n.encode()).decode() + "\n" for n in names)
        for buffer, proto, where in _EXPORT_BUFFERS:
            sid += 1
            match = f"{buffer}; to_lowercase; dataset:isset,{name},type string,load {name}.lst;"
            rules.append(_rule(proto, f"{category} name (exact list) in {where}", match, category, "exact", [], sid))
    text = "\n".join(lines + [""] + rules) + "\n"
    return Exported({f"{stem}.rules": text, **files})


def _rule(proto: str, msg: str, match: str, category: str, kind: str, sources: list[str], sid: int) -> str:
    meta = ", ".join([f"tiktok_category {category}", f"tiktok_match {kind}",
                      *(f"tiktok_source {s}" for s in sources)])
    return (f'alert {proto} any any -> any any (msg:"tiktok-detector {msg}"; {match} '
            f"metadata: {meta}; sid:{sid}; rev:1;)")


def _literal_domain(pattern: str) -> str:
    """The literal domain a loaded regex ends in (the loader checked it has one)."""
    compiled = _compile_regex(pattern)
    return compiled[0] if isinstance(compiled, tuple) else ""


def _escape(text: str) -> str:
    return text.replace('"', '\\"').replace(";", "\\;")


def _msg(text: str) -> str:
    return text.replace('"', "'").replace(";", ",").replace("\\", "")


# ── import ───────────────────────────────────────────────────────────────────────────


def parse(text: str, out: Collector, options: ImportOptions, resolve: Resolver | None = None) -> None:
    """Every rule that matches names by one of the shapes above; others skipped."""
    notes: dict[str, dict[str, str]] = {}
    for number, rule in _rules(text):
        if rule.startswith("#"):
            body = rule[1:].strip()
            if body.startswith(f"{TAG} entry "):
                pattern, meta = _entry_comment(body[len(TAG) + 7:])
                if pattern:
                    notes[pattern] = meta
            else:
                read_header(body, out)
            continue
        _one_rule(number, rule, out, options, resolve, notes)


def parse_dataset(text: str, out: Collector, options: ImportOptions, label: str | None = None,
                  meta: dict[str, str] | None = None, notes: dict[str, dict[str, str]] | None = None,
                  subdomain: bool = False) -> None:
    """A ``type string`` dataset file: base64 values (``value,rep`` too). With ``match
    subdomain`` a value with a leading dot is a suffix; otherwise each value is exact."""
    for number, raw in lines_of(text):
        if not raw:
            continue
        fields = raw.split(",")
        if len(fields) > 2:
            continue  # Suricata ignores such lines too
        try:
            value = base64.b64decode(fields[0], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            out.problem(number, "not a base64 value (a string dataset holds one per line)", label)
            continue
        name = value.strip().lower().rstrip(".")
        kind = options.kind or "exact"
        if subdomain and name.startswith("."):
            name, kind = name[1:], "suffix"
        stated = (notes or {}).get(name, {})
        out.add(number, meta_entry(name, kind, {**stated, **(meta or {}), "match": kind}), label)


def _rules(text: str) -> list[tuple[int, str]]:
    """Rules with their first line number; a trailing backslash continues a rule."""
    found: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in lines_of(text):
        line = raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        line = "".join(pending) + line
        pending = []
        if line:
            found.append((start, line))
    if pending:
        found.append((start, "".join(pending)))
    return found


def _entry_comment(text: str) -> tuple[str | None, dict[str, str]]:
    try:
        pattern, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None, {}
    return (pattern, parse_meta(text[end:])) if isinstance(pattern, str) else (None, {})


def _one_rule(number: int, rule: str, out: Collector, options: ImportOptions, resolve: Resolver | None,
              notes: dict[str, dict[str, str]]) -> None:
    if not _RULE_RE.match(rule):
        out.problem(number, "not a rule (action protocol source port -> destination port (options))")
        return
    open_at, close_at = rule.find("("), rule.rfind(")")
    if open_at < 0 or close_at < open_at:
        out.problem(number, "rule without its (options)")
        return
    if rule.split(None, 1)[0].lower() == "pass":
        out.skip(number, "pass rule: it allows traffic, it does not list names")
        return
    options_list = _options(rule[open_at + 1:close_at])
    buffers = [name for name, _ in options_list if name in NAME_BUFFERS]
    if not buffers:
        out.skip(number, "no name buffer (dns.query, tls.sni, http.host, quic.sni)")
        return
    meta = _metadata(options_list)
    stated: dict[str, str] = {}
    if "tiktok_category" in meta:
        stated["category"] = meta["tiktok_category"][0]
    if "tiktok_source" in meta:
        stated["source"] = ",".join(meta["tiktok_source"])
    names = [n for n, _ in options_list]
    values = dict(options_list)
    if "dataset" in values:
        _dataset_rule(number, values["dataset"], "dotprefix" in names, out, options, resolve, stated, notes)
        return
    if "pcre" in values:
        regex = _pcre(values["pcre"])
        if regex is None:
            out.skip(number, "pcre is not an anchored /^…$/ name pattern with at most the i flag")
            return
        out.add(number, meta_entry(regex, "regex", {**notes.get(regex, {}), **stated, "match": "regex"}))
        return
    contents = [i for i, name in enumerate(names) if name == "content"]
    if len(contents) != 1:
        out.skip(number, "not one content match on the name (and no dataset or pcre)")
        return
    at = contents[0]
    value = _content(options_list[at][1])
    modifiers = {name for name, _ in options_list[at + 1:]}
    if value is None:
        out.problem(number, "content is not a quoted string")
        return
    value = value.lower()
    if "dotprefix" in names and value.startswith(".") and "endswith" in modifiers:
        name, kind = value[1:], "suffix"
    elif "endswith" in modifiers and ("startswith" in modifiers or values.get("bsize", "").strip() == str(len(value))):
        name, kind = value.lstrip("."), "exact"
    else:
        out.skip(number, "content is not bounded at a label (use dotprefix + endswith, or startswith + endswith)")
        return
    out.add(number, meta_entry(name, kind, {**notes.get(name, {}), **stated, "match": kind}))


def _dataset_rule(number: int, spec: str, dotprefix: bool, out: Collector, options: ImportOptions,
                  resolve: Resolver | None, stated: dict[str, str], notes: dict[str, dict[str, str]]) -> None:
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) < 2 or parts[0] not in ("isset", "set"):
        out.skip(number, f"dataset:{parts[0]} does not list names to match")
        return
    settings = dict((p.split(None, 1) + [""])[:2] for p in parts[2:] if p)
    if settings.get("type", "string") != "string":
        out.skip(number, f"dataset of type {settings['type']} (only string datasets hold names)")
        return
    load = settings.get("load") or settings.get("state")
    if not load:
        out.skip(number, f"dataset {parts[1]} has no load file here (defined in suricata.yaml?)")
        return
    if resolve is None:
        out.problem(number, f"dataset {parts[1]}: its file {load} needs the rules file's directory")
        return
    found = resolve(load)
    if found is None:
        out.problem(number, f"dataset {parts[1]}: no file {load} beside the rules file")
        return
    label, text = found
    subdomain = settings.get("match") == "subdomain" and dotprefix
    parse_dataset(text, out, options, label, stated, notes, subdomain)


def _options(body: str) -> list[tuple[str, str]]:
    """``name:value;`` pairs in order; ``\\;`` and quoted ``;`` do not end an option."""
    found: list[tuple[str, str]] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            current.append(body[i:i + 2])
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            _option("".join(current), found)
            current = []
        else:
            current.append(char)
        i += 1
    _option("".join(current), found)
    return found


def _option(text: str, found: list[tuple[str, str]]) -> None:
    name, _, value = text.strip().partition(":")
    if name:
        found.append((name.strip().lower(), value.strip()))


def _metadata(options: list[tuple[str, str]]) -> dict[str, list[str]]:
    meta: dict[str, list[str]] = {}
    for name, value in options:
        if name == "metadata":
            for pair in value.split(","):
                key, _, item = pair.strip().partition(" ")
                if key:
                    meta.setdefault(key, []).append(item.strip())
    return meta


def _unquote(value: str) -> str | None:
    value = value.strip()
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return None
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def _content(value: str) -> str | None:
    """A content string with its ``|hex|`` runs decoded; None when not a quoted string."""
    text = _unquote(value)
    if text is None:
        return None
    try:
        return _HEX_RE.sub(lambda m: bytes.fromhex(m[1].replace(" ", "")).decode("latin-1"), text)
    except ValueError:
        return None


def _pcre(value: str) -> str | None:
    text = value.strip()
    if not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return None
    body = text[1:-1].replace('\\"', '"').replace("\\;", ";")
    if not body.startswith("/"):
        return None
    end = body.rfind("/")
    pattern, flags = body[1:end], body[end + 1:]
    if end <= 0 or set(flags) - {"i"} or not (pattern.startswith("^") and pattern.endswith("$")):
        return None
    return pattern
