"""Wildcard domain lists (``*.example.com``), as HaGeZi's ``wildcard/`` lists are written
(import only).

``*.name`` covers the name and every name under it (a suffix entry: HaGeZi's lists state
"Domains Wildcard"); a bare name is the name alone, or what ``--match`` says. ``#`` starts
a comment line. A ``*`` anywhere but the front matches inside labels and is skipped with
the reason.
"""

from __future__ import annotations

from detector.sigformats.common import Collector, Entry, ImportOptions, lines_of, read_header


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """One name per line."""
    kind = options.kind or "exact"
    for number, raw in lines_of(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            if line:
                read_header(line[1:], out)
            continue
        fields = line.split()
        if len(fields) != 1:
            out.problem(number, f"expected one name per line, found {len(fields)} fields")
            continue
        name = fields[0].lower().rstrip(".")
        if name.startswith("*."):
            name, this_kind = name[2:], "suffix"
        else:
            this_kind = kind
        if "*" in name:
            out.skip(number, f"{fields[0]!r}: a wildcard inside the name matches inside labels")
            continue
        out.add(number, Entry(name, this_kind))
