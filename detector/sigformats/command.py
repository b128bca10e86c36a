"""``tiktok-detector signatures export | import | diff | update``: the interop commands.

Export writes the main file to standard output or ``-o FILE`` (Suricata's rules need
``-o``: the dataset files are written beside the rules file, where Suricata looks for
them) and says on standard error what the format could not express. Import writes the
signature TOML and lists on standard error every line it skipped and why. Diff exits 0
when the sets hold the same entries and 1 when they differ, like diff(1). Update reads
local copies of the upstream lists and shows the refresh, writing it with ``--write``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import replace
from pathlib import Path

from detector.errors import UserError
from detector.match import SignatureSet, load_signatures
from detector.records import CATEGORIES
from detector.sigformats import (
    EXPORT_FORMATS, IMPORT_FORMATS, FormatError, Imported, ImportOptions, export_signatures, import_signatures,
    to_toml,
)
from detector.sigformats.diff import diff_json, diff_signatures, format_diff
from detector.sigformats.rpz import DEFAULT_ZONE
from detector.sigformats.suricata import DEFAULT_SID_BASE
from detector.sigformats.update import Copies, check_support, format_plan, plan_update, read_accept, read_copies, write_update
from detector.sinks.outputs import check_outputs

#: ``diff --format`` value for the signature TOML format itself.
NATIVE = "toml"


class InteropUsageError(UserError):
    """A bad combination of interop options."""


def add_interop_commands(sigs_sub: argparse._SubParsersAction, default_signatures: str) -> None:
    """The export, import and diff actions under ``signatures``."""
    export = sigs_sub.add_parser("export", help="write the signatures for Zeek, Suricata, DNS filters or v2fly")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--signatures", metavar="PATH", default=default_signatures)
    export.add_argument("-o", "--output", metavar="FILE",
                        help="write here instead of standard output (suricata: the rules file, datasets beside it)")
    export.add_argument("--category", dest="categories", action="append", choices=CATEGORIES,
                        help="export only this category (repeatable; default every category)")
    export.add_argument("--zone", default=DEFAULT_ZONE, metavar="NAME", help="rpz: the zone's name (%(default)s)")
    export.add_argument("--sid-base", type=_sid, default=DEFAULT_SID_BASE, metavar="N",
                        help="suricata: rule sids count up from here (%(default)s)")
    export.add_argument("--address", type=_address, default="0.0.0.0", metavar="ADDR",
                        help="hosts: the address each name points to (%(default)s)")
    export.set_defaults(func=_export)

    imp = sigs_sub.add_parser("import", help="read a list in another format into the signature format")
    imp.add_argument("path", metavar="FILE")
    imp.add_argument("--format", required=True, choices=IMPORT_FORMATS)
    imp.add_argument("-o", "--output", metavar="FILE", help="write the TOML here instead of standard output")
    _import_options(imp)
    imp.set_defaults(func=_import)

    diff = sigs_sub.add_parser("diff", help="entries added, removed and recategorised between two signature sets")
    diff.add_argument("old", metavar="OLD", help="signature file or directory")
    diff.add_argument("new", metavar="NEW", help="signature file or directory, or a list in --format")
    diff.add_argument("--format", default=NATIVE, choices=(NATIVE, *IMPORT_FORMATS),
                      help="format of NEW (default: %(default)s, the signature format)")
    diff.add_argument("--json", action="store_true", help="print the differences as one JSON object")
    _import_options(diff)
    diff.set_defaults(func=_diff)

    update = sigs_sub.add_parser("update", help="check the set against local copies of the lists it cites, "
                                                "show the refresh, and write it after review")
    update.add_argument("copies", metavar="COPIES",
                        help="directory holding clones of the upstream lists (docs/signature-update.md)")
    update.add_argument("--signatures", metavar="PATH", default=default_signatures,
                        help="signature directory or file to refresh (default: the shipped set)")
    update.add_argument("--accept", metavar="FILE", help="reviewed additions: [[entry]] tables (pattern, match, "
                                                         "category, note, file); their sources come from the copies")
    update.add_argument("--set-version", metavar="TEXT", help="with --write: the files' new version (a date)")
    update.add_argument("--check", action="store_true",
                        help="only check: exit 1 when an entry is held by none of its cited lists, or by none "
                             "read (--strict)")
    update.add_argument("--strict", action="store_true",
                        help="with --check: an entry whose cited lists have no copy fails too")
    update.add_argument("--write", action="store_true", help="write the refreshed files (after reviewing the diff)")
    update.set_defaults(func=_update)


def _import_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("for formats that do not carry them")
    group.add_argument("--category", choices=CATEGORIES, help="category of entries that have none")
    group.add_argument("--source", metavar="CODE", help="source code of entries that have none")
    group.add_argument("--source-text", metavar="TEXT", help="what --source names (the list and its URL)")
    group.add_argument("--match", dest="kind", choices=("exact", "suffix"),
                       help="match kind of bare names (hosts lines, Intel::DOMAIN, dataset values; default exact)")
    group.add_argument("--zone", metavar="NAME", help="rpz: the zone's origin when the file has no $ORIGIN")
    group.add_argument("--service", metavar="NAME",
                       help="ndpi: the protocol (TikTok); adguard-services: the service id (tiktok); default all")
    group.add_argument("--version", dest="set_version", metavar="TEXT", help="version of the imported set")
    group.add_argument("--description", metavar="TEXT", help="description of the imported set")


def _options(args: argparse.Namespace) -> ImportOptions:
    return ImportOptions(category=args.category, source=args.source, source_text=args.source_text,
                         kind=args.kind, zone=args.zone, service=args.service, version=args.set_version, description=args.description)


def _export(args: argparse.Namespace) -> int:
    if args.format == "suricata" and args.output in (None, "-"):
        raise InteropUsageError("--format suricata writes a rules file and dataset files: give -o FILE.rules")
    stem = Path(args.output).stem if args.output and args.output != "-" else "tiktok"
    sigset = load_signatures(args.signatures)
    if args.categories:
        sigset = replace(sigset, entries=tuple(s for s in sigset.entries if s.category in args.categories))
        if not sigset.entries:
            raise InteropUsageError(f"no entries of category {', '.join(args.categories)} in {args.signatures}")
    exported = export_signatures(sigset, args.format, stem=stem, zone=args.zone, sid_base=args.sid_base,
                                 address=args.address)
    names = list(exported.files)
    if args.output and args.output != "-":
        directory = Path(args.output).parent
        targets = [Path(args.output)] + [directory / name for name in names[1:]]
        check_outputs([str(t) for t in targets], [args.signatures])
        for target, name in zip(targets, names):
            target.write_text(exported.files[name], encoding="utf-8")
    else:
        sys.stdout.write(exported.files[names[0]])
    for warning in exported.warnings:
        print(f"tiktok-detector: {warning}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    if args.output and args.output != "-":
        check_outputs([args.output], [args.path])
    imported = _imported(args.path, args.format, _options(args))
    text = to_toml(imported)
    for line in imported.skipped:
        print(line, file=sys.stderr)
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(f"tiktok-detector: imported {len(imported.entries)} entries from {args.path}"
          f" ({len(imported.skipped)} lines skipped or noted)", file=sys.stderr)
    return 0


def _diff(args: argparse.Namespace) -> int:
    old = load_signatures(args.old)
    new: SignatureSet
    if args.format == NATIVE:
        new = load_signatures(args.new)
    else:
        imported = _imported(args.new, args.format, _options(args))
        for line in imported.skipped:
            print(line, file=sys.stderr)
        new = imported.signature_set()
    found = diff_signatures(old, new)
    if args.json:
        print(json.dumps(diff_json(found), indent=1))
    else:
        sys.stdout.write(format_diff(found, old, new, args.old, args.new))
    return 1 if found else 0


def _update(args: argparse.Namespace) -> int:
    """Print the refresh (lists read, the diff by category with sources, entries not
    checked, upstream names not covered); write it with ``--write``. Exit 1 when there is
    something to write and ``--write`` was not given, like ``diff``."""
    try:
        copies = read_copies(args.copies)
        old = load_signatures(args.signatures)
        if args.check:
            return _update_check(old, copies, args.strict)
        accepted = read_accept(args.accept) if args.accept else []
        plan = plan_update(old, copies, accepted)
    except FormatError as exc:
        for problem in exc.problems[1:]:
            print(problem, file=sys.stderr)
        raise
    sys.stdout.write(format_plan(plan, copies))
    found = diff_signatures(old, plan.new)
    print()
    sys.stdout.write(format_diff(found, old, plan.new, args.signatures, "refreshed"))
    if not found and args.set_version is None:
        return 0
    if not args.write:
        print("\ntiktok-detector: nothing written; review the above and run again with --write", file=sys.stderr)
        return 1
    for name in write_update(plan, args.set_version):
        print(f"tiktok-detector: wrote {name}", file=sys.stderr)
    return 0


def _update_check(sigset: SignatureSet, copies: Copies, strict: bool) -> int:
    """Every entry citing an upstream list, against the copies: one line per failure."""
    failed = 0
    for item in check_support(sigset, copies):
        where = f"{sigset.origins[item.sig.pattern].file}:{item.sig.line}" if item.sig.pattern in sigset.origins \
            else sigset.path
        if item.verdict == "unsupported" or (strict and item.verdict == "unchecked"):
            failed += 1
            why = (f"none of {', '.join(item.lost)} holds it" if item.verdict == "unsupported"
                   else f"no copy of {', '.join(item.unchecked)}")
            print(f"{where}: {item.sig.pattern}: {why}")
        elif item.lost:
            print(f"{where}: note: {item.sig.pattern}: not in {', '.join(item.lost)} any more "
                  f"(held by {', '.join(item.held + item.others) or 'lists not read'})", file=sys.stderr)
    read = ", ".join(sorted(copies.lists)) or "none"
    print(f"tiktok-detector: checked against {read}; {failed} entries failed", file=sys.stderr)
    return 1 if failed else 0


def _imported(path: str, fmt: str, options: ImportOptions) -> Imported:
    """The import, or every problem on standard error (as ``signatures check`` prints them)
    and the first again as the error the command line exits with."""
    try:
        return import_signatures(path, fmt, options)
    except FormatError as exc:
        for problem in exc.problems[1:]:
            print(problem, file=sys.stderr)
        raise


def _sid(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rule sid")
    return int(text)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
