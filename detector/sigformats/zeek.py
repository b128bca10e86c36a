"""Zeek Intelligence Framework files (``Intel::read_files``), indicator type ``Intel::DOMAIN``.

Grammar (Zeek's ``doc/frameworks/intel.rst`` and its ASCII input reader): a ``#fields``
line names the tab-separated columns (``indicator``, ``indicator_type``, ``meta.source``,
then optional ``meta.desc``, ``meta.url`` and extension columns), other ``#`` lines are
comments, ``-`` is an unset field. An indicator known to several sources is one line per
source: Zeek keeps one metadata record per ``meta.source``.

Zeek matches ``Intel::DOMAIN`` against the exact name seen (DNS query, TLS SNI, HTTP Host):
a suffix entry is written as its own name, with ``match=suffix`` in ``meta.desc`` so that an
import restores it, and the export says how many entries only cover their own name.
Regexes have no Intel type and are left out.
"""

from __future__ import annotations

from detector.match import SignatureSet
from detector.sigformats.common import (
    Collector, Exported, ImportOptions, header_lines, lines_of, meta_entry, meta_text, parse_meta, read_header,
    names_only, source_url,
)

FIELDS = ("indicator", "indicator_type", "meta.source", "meta.desc", "meta.url")
_REQUIRED = FIELDS[:3]
_UNSET = "-"
_EMPTY = "(empty)"


def export(sigset: SignatureSet) -> Exported:
    """One ``Intel::DOMAIN`` line per entry and source."""
    lines = header_lines(sigset, "# ")
    lines.append("#fields\t" + "\t".join(FIELDS))
    kept, warnings = names_only(sigset, "zeek-intel", "match only their own name in Zeek (Intel::DOMAIN is an "
                                                       "exact match)")
    for sig, note in kept:
        desc = _field(meta_text(sig, note, sources=False))  # meta.source says it
        for code in sig.source.split(","):
            url = source_url(sigset.sources.get(code, "")) or _UNSET
            lines.append("\t".join((sig.pattern, "Intel::DOMAIN", _field(code), desc, _field(url))))
    return Exported({"tiktok.intel": "\n".join(lines) + "\n"}, tuple(warnings))


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """Every ``Intel::DOMAIN`` line; other indicator types are skipped with the reason."""
    columns: dict[str, int] | None = None
    kind = options.kind or "exact"
    for number, raw in lines_of(text):
        if not raw:
            continue
        if raw.startswith("#fields\t"):
            names = raw.split("\t")[1:]
            missing = [f for f in _REQUIRED if f not in names]
            if missing:
                out.problem(number, f"#fields lacks {', '.join(missing)}")
                return
            if len(set(names)) != len(names):
                out.problem(number, "#fields names a column twice")
                return
            columns = {name: i for i, name in enumerate(names)}
            continue
        if raw.startswith("#"):
            read_header(raw[1:], out)
            continue
        if columns is None:
            out.problem(number, "data before the #fields line (Zeek needs it to name the columns)")
            return
        values = raw.split("\t")
        if len(values) < len(columns):
            out.problem(number, f"{len(values)} tab-separated fields, the #fields line names {len(columns)}")
            continue

        def get(name: str) -> str:
            index = columns.get(name) if columns else None
            value = values[index] if index is not None else _UNSET
            return "" if value in (_UNSET, _EMPTY) else _unescape(value)

        indicator, indicator_type, source = get("indicator"), get("indicator_type"), get("meta.source")
        if indicator_type != "Intel::DOMAIN":
            out.skip(number, f"indicator type {indicator_type or '-'} (only Intel::DOMAIN holds names)")
            continue
        if not source:
            out.problem(number, "meta.source is unset (Zeek requires it)")
            continue
        desc = get("meta.desc")
        meta = parse_meta(desc) or ({"note": desc} if desc else {})
        code = _source_code(source)
        if code not in out.sources:
            url = get("meta.url")
            out.sources[code] = source if code != source else (f"{source} - {url}" if url else source)
        out.add(number, meta_entry(indicator.lower().rstrip("."), kind, {**meta, "source": code}))


def _source_code(source: str) -> str:
    """A source code for a free-form ``meta.source``: itself when it is a plain name."""
    code = "".join(c if c.isalnum() or c in "._-" else "-" for c in source.strip()).strip("-.")
    return code[:64] or "zeek-intel"


def _field(text: str) -> str:
    """A value Zeek reads back unchanged: tabs, newlines and backslashes as ``\\xHH``."""
    if not text:
        return _EMPTY
    return "".join(f"\\x{ord(c):02x}" if c in "\t\n\r\\" else c for c in text)


def _unescape(text: str) -> str:
    """Zeek's ``\\xHH`` escapes back to characters."""
    if "\\x" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text.startswith("\\x", i) and i + 4 <= len(text):
            try:
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            except ValueError:
                pass
        out.append(text[i])
        i += 1
    return "".join(out)
