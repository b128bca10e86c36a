"""hosts files (``0.0.0.0 name``), the format of most DNS blocklists and of /etc/hosts.

A hosts line names exact hosts: it cannot cover the names under a domain, and it has no
regexes. Export writes a suffix entry as its own name (with ``match=suffix`` in the line's
comment, so an import restores it) and leaves regexes out, saying so. Lines that are only
a name (the "domains-only" lists) are read too.
"""

from __future__ import annotations

import ipaddress

from detector.match import SignatureSet
from detector.sigformats.common import (
    Collector, Exported, ImportOptions, header_lines, lines_of, meta_entry, meta_text, names_only, parse_meta,
    read_header,
)

#: Names a hosts file gives the machine itself; never a blocked name.
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
                          "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
                          "ip6-allhosts", "0.0.0.0"})


def export(sigset: SignatureSet, address: str = "0.0.0.0") -> Exported:
    """One ``ADDRESS name  # metadata`` line per exact or suffix entry."""
    lines = header_lines(sigset, "# ")
    kept, warnings = names_only(sigset, "hosts", "written as their own name only (a hosts file cannot match the "
                                                 "names under them)")
    lines += [f"{address} {sig.pattern}  # {meta_text(sig, note)}" for sig, note in kept]
    return Exported({"tiktok.hosts": "\n".join(lines) + "\n"}, tuple(warnings))


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """Every ``[ADDRESS] name...`` line; the trailing comment's metadata applies to its names."""
    kind = options.kind or "exact"
    for number, raw in lines_of(text):
        body, hash_, comment = raw.partition("#")
        if not body.strip():
            if hash_:
                read_header(comment, out)
            continue
        parse_line(number, body, parse_meta(comment) if hash_ else {}, out, kind)


def parse_line(number: int, body: str, meta: dict[str, str], out: Collector, kind: str,
               label: str | None = None) -> None:
    """One ``[ADDRESS] name...`` line (comment removed) with the metadata that applies to it."""
    fields = body.split()
    if not fields:
        out.problem(number, "a rule with no name", label)
        return
    if _is_address(fields[0]):
        names = fields[1:]
        if not names:
            out.problem(number, "an address with no host name", label)
            return
    elif len(fields) == 1:
        names = fields
    else:
        out.problem(number, f"{fields[0]!r} is not an IP address (expected ADDRESS NAME...)", label)
        return
    for name in names:
        name = name.lower().rstrip(".")
        if name in _LOCAL_NAMES:
            out.skip(number, f"{name!r} names the machine itself", label)
            continue
        out.add(number, meta_entry(name, kind, meta), label)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True

