"""Signature interop: the signature set in the formats other tools read, and back.

``export_signatures`` writes a loaded ``SignatureSet`` as Zeek Intel, Suricata rules with
datasets, a hosts file, AdGuard/ABP filter rules, an RPZ zone or a v2fly list;
``import_signatures`` reads any of them (and bare Suricata dataset files, nDPI's host
table, AdGuard's blocked services and wildcard domain lists, which are read only) into an
``Imported`` list with its provenance, which ``to_toml`` writes in the signature format and
``detector.sigformats.diff`` compares with another set. One module per format; each has a
pure ``parse(text, collector, options)`` over text and an ``export(sigset)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from detector.match import SignatureSet
from detector.records import CATEGORIES
from detector.sigformats import adblock, adguard_services, hosts, ndpi, rpz, suricata, v2fly, wildcard, zeek
from detector.sigformats.common import Collector, Exported, FormatError, Imported, ImportOptions
from detector.sigformats.v2fly import Resolver

#: Each import format's parser, in a fixed order (the fuzz target picks a format by index).
_PARSERS: dict[str, Callable[[str, Collector, ImportOptions, Resolver | None], None]] = {
    "zeek-intel": lambda text, out, options, _: zeek.parse(text, out, options),
    "suricata": suricata.parse,
    "suricata-dataset": lambda text, out, options, _: suricata.parse_dataset(text, out, options),
    "hosts": lambda text, out, options, _: hosts.parse(text, out, options),
    "adblock": lambda text, out, options, _: adblock.parse(text, out, options),
    "rpz": lambda text, out, options, _: rpz.parse(text, out, options),
    "v2fly": v2fly.parse,
    "ndpi": lambda text, out, options, _: ndpi.parse(text, out, options),
    "adguard-services": lambda text, out, options, _: adguard_services.parse(text, out, options),
    "wildcard": lambda text, out, options, _: wildcard.parse(text, out, options),
}
#: Formats an import reads.
IMPORT_FORMATS = tuple(_PARSERS)
#: Formats an export writes (a dataset file comes with its rules, never alone).
EXPORT_FORMATS = ("zeek-intel", "suricata", "hosts", "adblock", "rpz", "v2fly")
#: Largest file an import reads: lists are reviewed by people; the biggest public
#: blocklists are tens of MB, and anything past this is a mistake.
MAX_FILE_BYTES = 64 << 20

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "Exported", "FormatError", "Imported", "ImportOptions",
           "export_signatures", "import_signatures", "import_text", "to_toml"]


def export_signatures(sigset: SignatureSet, fmt: str, *, stem: str = "tiktok", zone: str = rpz.DEFAULT_ZONE,
                      sid_base: int = suricata.DEFAULT_SID_BASE, address: str = "0.0.0.0") -> Exported:
    """``sigset`` in format ``fmt``: the files to write (the main one first) and what the
    format could not express (``address`` entries, in none of these formats: they judge
    connections that show no name, which no name list can)."""
    addresses = sum(sig.kind == "address" for sig in sigset.entries)
    if addresses:
        names = dataclasses.replace(sigset, entries=tuple(s for s in sigset.entries if s.kind != "address"))
        exported = export_signatures(names, fmt, stem=stem, zone=zone, sid_base=sid_base, address=address)
        return dataclasses.replace(exported, warnings=(
            *exported.warnings, f"{fmt}: {addresses} address entries left out (the format holds names)"))
    if fmt == "zeek-intel":
        return zeek.export(sigset)
    if fmt == "suricata":
        return suricata.export(sigset, stem, sid_base)
    if fmt == "hosts":
        return hosts.export(sigset, address)
    if fmt == "adblock":
        return adblock.export(sigset)
    if fmt == "rpz":
        return rpz.export(sigset, zone)
    if fmt == "v2fly":
        return v2fly.export(sigset, stem)
    raise FormatError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")


def import_text(text: str, fmt: str, label: str, options: ImportOptions = ImportOptions(),
                resolve: Resolver | None = None) -> Imported:
    """Parse ``text`` (named ``label`` in messages) in format ``fmt``; ``resolve`` reads the
    files it refers to (v2fly includes, Suricata dataset files). Raises ``FormatError``."""
    parse = _PARSERS.get(fmt)
    if parse is None:
        raise FormatError(f"unknown import format {fmt!r} (one of {', '.join(IMPORT_FORMATS)})")
    out = Collector(label)
    parse(text, out, options, resolve)
    return out.finish(options, fmt)


def import_signatures(path: str | os.PathLike[str], fmt: str, options: ImportOptions = ImportOptions(),
                      *, follow: bool = True) -> Imported:
    """Read the file at ``path`` in format ``fmt`` (and the files beside it that it names;
    with ``follow`` False a v2fly ``include:`` adds nothing: the file's own lines only)."""
    path = Path(path)
    text = _read(path)
    base = path.parent

    def resolve(name: str) -> tuple[str, str] | None:
        if not follow:
            return f"{path} include:{name}", ""
        other = Path(name) if os.path.isabs(name) else base / name
        if not other.is_file():
            return None
        return str(other), _read(other)

    return import_text(text, fmt, str(path), options, resolve)


def to_toml(imported: Imported) -> str:
    """The imported list in the signature file format (``signatures/README.md``)."""
    lines = [
        f"# Imported by tiktok-detector from {imported.label}; review it (signatures diff) before use.",
        *(f"# {line}" for line in imported.skipped[:50]),
        *(["# … and more, see the import's output"] if len(imported.skipped) > 50 else []),
        "",
        f"version = {_string(imported.version)}",
        f"description = {_string(imported.description)}",
        "",
        "[sources]",
        *(f"{_string(code)} = {_string(text)}" for code, text in imported.sources.items()),
    ]
    order = {category: i for i, category in enumerate(CATEGORIES)}
    for sig in sorted(imported.entries, key=lambda s: (order.get(s.category, 99), s.line)):
        lines += ["", "[[entry]]", f"pattern = {_string(sig.pattern)}", f'match = "{sig.kind}"',
                  f'category = "{sig.category}"', f"source = [{', '.join(_string(s) for s in sig.source.split(','))}]"]
        note = imported.notes.get(sig.pattern)
        if note:
            lines.append(f"note = {_string(note)}")
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"{path}:0: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FormatError(f"{path}:0: larger than {MAX_FILE_BYTES >> 20} MiB; not a list to review")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(f"{path}:{line}: not UTF-8 text") from None
