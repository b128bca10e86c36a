"""DNS Response Policy Zones (RPZ) for BIND, Unbound, Knot Resolver and PowerDNS Recursor.

Each QNAME trigger is an owner name in the zone; ``CNAME .`` is the NXDOMAIN action. An
exact entry is one trigger (``name``), a suffix entry two (``name`` and ``*.name``, the
wildcard covering every name under it). RPZ has no regexes: they are left out, saying so.
The metadata of each entry rides in the record's comment (``; category=… source=…``).

Import reads the zone with dnspython (any zone-file syntax BIND accepts: ``$ORIGIN``,
``$TTL``, relative names, parentheses) and keeps every QNAME trigger whose action blocks
or rewrites the answer (NXDOMAIN, NODATA, DROP, TCP-only, local data); passthru triggers
(allow-lists) and the IP, NSDNAME, NSIP and client-IP triggers are skipped with the reason.
"""

from __future__ import annotations

import re

import dns.exception
import dns.name
import dns.rdatatype
import dns.zone

from detector.match import SignatureSet
from detector.sigformats.common import (
    Collector, Exported, ImportOptions, header_lines, lines_of, meta_entry, meta_text, names_only, parse_meta,
    read_header,
)

DEFAULT_ZONE = "tiktok.rpz"
_ORIGIN_RE = re.compile(r"\s*\$ORIGIN\s+(\S+)", re.IGNORECASE)
#: A $GENERATE line makes any number of records from one line; a list to review spells
#: out its names (none of the public RPZ feeds uses it).
_GENERATE_RE = re.compile(r"\s*\$GENERATE\b", re.IGNORECASE)
#: Owner-name suffixes of triggers that are not about the query name (RPZ draft, section 4).
_OTHER_TRIGGERS = ("rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip")
_PASSTHRU = ("rpz-passthru",)


def export(sigset: SignatureSet, zone: str = DEFAULT_ZONE, serial: int = 1) -> Exported:
    """A zone file BIND's named-checkzone and Unbound's ``rpz:`` load as they are."""
    origin = zone.rstrip(".") + "."
    lines = header_lines(sigset, "; ")
    lines += [
        f"$ORIGIN {origin}",
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.localhost. ({serial} 3600 600 86400 300)",
        "  IN NS localhost.",
    ]
    kept, warnings = names_only(sigset, "rpz", None)
    for sig, note in kept:
        comment = meta_text(sig, note)
        lines.append(f"{sig.pattern} CNAME .  ; {comment}")
        if sig.kind == "suffix":
            lines.append(f"*.{sig.pattern} CNAME .  ; {comment}")
    return Exported({f"{zone.rstrip('.')}.zone": "\n".join(lines) + "\n"}, tuple(warnings))


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """Every QNAME trigger with a blocking action, with the metadata in its comment."""
    for _, raw in lines_of(text):
        stripped = raw.strip()
        if stripped.startswith(";"):
            read_header(stripped[1:], out)
    for number, raw in lines_of(text):
        if _GENERATE_RE.match(raw):
            out.problem(number, "$GENERATE is not read: list the names one by one")
            return
    origin_text = options.zone or _first_origin(text)
    if origin_text is None:
        out.problem(0, "the zone has no $ORIGIN: give its name with --zone")
        return
    try:
        origin = dns.name.from_text(origin_text)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        out.problem(0, f"zone name {origin_text!r}: {exc}")
        return
    try:
        zone = dns.zone.from_text(text, origin=origin, relativize=True, check_origin=False)
    except dns.exception.DNSException as exc:
        line, message = _dns_error(str(exc))
        out.problem(_error_line(text, origin, line), f"zone file: {message}")
        return
    except (ValueError, UnicodeError) as exc:  # dnspython raises these for some bad labels
        out.problem(0, f"zone file: {exc}")
        return
    lines = _owner_lines(text, origin)
    triggers: dict[str, dict[str, str]] = {}
    for name, node in zone.items():
        owner = name.to_text(omit_final_dot=True).lower()
        if owner == "@":
            continue
        labels = owner.split(".")
        if labels[-1] in _OTHER_TRIGGERS:
            out.skip(lines.get(owner, 0), f"{owner}: {labels[-1]} trigger (not a query name)")
            continue
        for rdataset in node:
            if rdataset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS):
                continue
            rdata = next(iter(rdataset))
            target = rdata.to_text().lower() if rdataset.rdtype == dns.rdatatype.CNAME else ""
            if target.rstrip(".") in _PASSTHRU:
                out.skip(lines.get(owner, 0), f"{owner}: passthru (an allow-list entry)")
                break
            triggers[owner] = parse_meta(rdata.rdcomment or "")
            break
    for owner, meta in sorted(triggers.items()):
        if owner.startswith("*."):
            apex = owner[2:]
            if apex not in triggers:
                out.notice(lines.get(owner, 0), f"{owner}: only the names under {apex} are listed; "
                                                f"imported as suffix {apex}, which also matches {apex} itself")
            out.add(lines.get(owner, 0), meta_entry(apex, "suffix", {**meta, "match": "suffix"}))
        elif f"*.{owner}" in triggers:
            continue  # the wildcard's entry carries it
        elif owner.startswith("*") or "*" in owner:
            out.problem(lines.get(owner, 0), f"{owner}: a wildcard is only allowed as the first label")
        else:
            out.add(lines.get(owner, 0), meta_entry(owner, "exact", meta))


def _owner_lines(text: str, origin: dns.name.Name) -> dict[str, int]:
    """Where each owner name is first written (dnspython keeps no line numbers): for the
    FILE:LINE of a problem or a skipped trigger; 0 when the owner is implicit."""
    found: dict[str, int] = {}
    suffix = "." + origin.to_text(omit_final_dot=True).lower()
    for number, raw in lines_of(text):
        if not raw or raw[0] in " \t;$(":
            continue
        owner = raw.split(None, 1)[0].lower()
        if owner.endswith("."):
            owner = owner[:-1]
            owner = owner[: -len(suffix)] if owner.endswith(suffix) else owner
        found.setdefault(owner, number)
    return found


def _first_origin(text: str) -> str | None:
    for line in text.split("\n"):
        found = _ORIGIN_RE.match(line)
        if found:
            return found[1]
    return None


def _error_line(text: str, origin: dns.name.Name, line: int) -> int:
    """dnspython names the line after a record whose error it found at the record's end
    (it has read the newline by then): when the lines before ``line`` fail alone, the
    error is on the line before."""
    if line <= 1:
        return line
    head = "\n".join(text.split("\n")[: line - 1]) + "\n"
    try:
        dns.zone.from_text(head, origin=origin, relativize=True, check_origin=False)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return line - 1
    return line


def _dns_error(message: str) -> tuple[int, str]:
    """dnspython says ``<string>:LINE: message``; the line goes to the front of ours."""
    found = re.match(r"<string>:(\d+):\s*(.*)", message, re.DOTALL)
    return (int(found[1]), found[2]) if found else (0, message)
