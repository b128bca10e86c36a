"""nDPI's host-name table, ``src/lib/ndpi_content_match.c.inc`` (import only).

The table is the C array ``host_match[]`` (``ndpi_protocol_match``): one row per name,
``{ "tiktokcdn.com", "TikTok", NDPI_PROTOCOL_TIKTOK, NDPI_PROTOCOL_CATEGORY_…, … },``,
ended by a row whose name is ``NULL``. nDPI matches a row's name at the end of a host
name on a label boundary, so each row is a suffix entry. ``ImportOptions.service`` picks
the rows of one protocol, by its name (``TikTok``) or its identifier
(``NDPI_PROTOCOL_TIKTOK``); the file's other arrays (address lists, certificate names,
category tables) are not read.

Rows whose string is not a host name (nDPI also lists prefixes such as ``"amazon."``)
are skipped with the reason; a line inside the array that is not a row is a problem.
"""

from __future__ import annotations

import re

from detector.match import _domain_problem
from detector.sigformats.common import Collector, Entry, ImportOptions, lines_of

#: The array's opening line.
_START_RE = re.compile(r"(?:static\s+)?(?:const\s+)?ndpi_protocol_match\s+host_match\s*\[\s*\]\s*=\s*(\{?)")
#: One row: the quoted name (or NULL), the quoted protocol name (or NULL), then identifiers
#: (the level may be a number).
_ROW_RE = re.compile(r'\{\s*(?:"(?P<name>[^"\\]*)"|NULL)\s*,\s*(?:"(?P<proto>[^"\\]*)"|NULL)\s*,'
                     r'\s*(?P<ident>[A-Za-z_][A-Za-z0-9_]*)\s*(?:,\s*[A-Za-z0-9_]+\s*)*\}\s*,?')
_COMMENT_RE = re.compile(r"/\*.*?\*/")


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """The rows of ``host_match[]`` (of ``options.service`` when given)."""
    wanted = options.service.lower() if options.service else None
    inside = found = opened = False
    in_comment = False
    for number, raw in lines_of(text):
        line = _COMMENT_RE.sub(" ", raw)
        if in_comment:
            if "*/" not in line:
                continue
            line, in_comment = line.split("*/", 1)[1], False
        if "/*" in line:
            line, in_comment = line.split("/*", 1)[0], True
        line = line.split("//", 1)[0].strip()
        if not inside:
            start = None if found else _START_RE.fullmatch(line)
            if start:
                inside = found = True
                opened = bool(start[1])
            continue
        if not line or line.startswith("#"):
            continue  # blank, comment or preprocessor line
        if not opened:
            if line != "{":
                out.problem(number, "expected '{' opening host_match[]")
                inside = False
            opened = True
            continue
        if line.startswith("};"):
            inside = False
            continue
        row = _ROW_RE.fullmatch(line)
        if row is None:
            out.problem(number, "not a host_match row ({ \"name\", \"Protocol\", NDPI_PROTOCOL_…, … })")
            continue
        name, proto, ident = row["name"], row["proto"], row["ident"]
        if name is None:
            inside = False  # the NULL row ends the table
            continue
        if wanted is not None and wanted not in ((proto or "").lower(), ident.lower(),
                                                 ident.lower().removeprefix("ndpi_protocol_")):
            continue
        pattern = name.lower().strip(".")
        if name.endswith(".") or _domain_problem(pattern):
            out.skip(number, f"{name!r} is not a host name nDPI matches as a domain")
            continue
        out.add(number, Entry(pattern, "suffix", note=f"nDPI {proto or ident}"))
    if not found:
        out.problem(0, "no host_match[] array (is this nDPI's ndpi_content_match.c.inc?)")
    elif inside:
        out.problem(0, "host_match[] is not closed (no NULL row or '};')")
