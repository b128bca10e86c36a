"""The device inventory: which devices are official, whose they are, and how to know them.

An IT department exports its device management's list (Intune, Jamf, a spreadsheet) as
CSV or JSON; each row names a device by what the network can show of it (its MAC
addresses, DHCP client identifier, DHCPv6 DUID, hostname) and says what it is: its class
(``official``, ``personal`` or ``unknown``), its owner and department. The policy then
decides by class (detector/policy.py), and events, alerts and reports name the owner.

Column names are matched loosely (case, spaces, hyphens and underscores do not matter),
and a few names other tools export are understood (``Wi-Fi MAC``, ``Serial number``,
``Device name``, ``Primary user UPN``, ``Ownership`` with ``Corporate``/``Personal``);
other columns are ignored, as an export carries many. Every problem is one
``InventoryError`` line naming the file and the line of the row (for JSON, of the key).

Which identifier wins when several match: the MAC, then the client identifier, then the
DUID, then the hostname. All but the MAC are chosen by the device itself, so a device can
claim another's; the event says which identifier matched (``identified_by``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detector.errors import UserError, one_line, read_input
from detector.records import DEVICE_CLASSES

#: A bound on rows, so a wrong file (a capture named as the inventory) fails fast.
MAX_ENTRIES = 1_000_000
#: What a column heading may be called, after ``_heading`` (lower case, single spaces).
COLUMNS = {
    "id": ("id", "device id", "asset", "asset tag", "inventory id"),
    "macs": ("mac", "macs", "mac address", "mac addresses", "wifi mac", "wi fi mac", "wifi mac address",
             "wi fi mac address", "ethernet mac", "ethernet mac address"),
    "serial": ("serial", "serial number"),
    "hostname": ("hostname", "host name", "device name"),
    "owner": ("owner", "user", "primary user", "primary user upn", "user principal name", "assigned user"),
    "department": ("department", "dept"),
    "class": ("class", "device class", "ownership"),
    "client_ids": ("client id", "client ids", "dhcp client id"),
    "duids": ("duid", "duids", "dhcpv6 duid"),
}
#: Fields that hold several values (separated by spaces, commas, semicolons or bars).
LIST_FIELDS = ("macs", "client_ids", "duids")
_FIELD_OF = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
#: What a class cell may say, and the class it means ("Ownership" exports say corporate).
CLASS_VALUES = {"official": "official", "corporate": "official", "company": "official",
                "personal": "personal", "byod": "personal", "unknown": "unknown"}
#: Identifiers in the order they are tried (see the module docstring).
MATCH_ORDER = ("mac", "client-id", "duid", "hostname")
_MAC = re.compile(
    r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}|[0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5}"
    r"|[0-9a-fA-F]{4}(?:\.[0-9a-fA-F]{4}){2}|[0-9a-fA-F]{12}"
)
_HEX_ID = re.compile(r"[0-9a-fA-F]{2}(?:[:-]?[0-9a-fA-F]{2})*")
_LIST_SEPARATORS = re.compile(r"[\s,;|]+")


class InventoryError(UserError, ValueError):
    """An inventory that cannot be used; one line naming the file and the line."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One device of the inventory."""

    id: str
    device_class: str
    owner: str | None
    department: str | None
    macs: tuple[str, ...] = ()
    client_ids: tuple[str, ...] = ()
    duids: tuple[str, ...] = ()
    hostname: str | None = None
    serial: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Inventory:
    """The entries of one file, indexed by each identifier."""

    entries: tuple[Entry, ...]
    source: str
    sha256: str | None = None
    _index: dict[str, dict[str, Entry]] = field(default_factory=dict, repr=False, compare=False)

    def match(self, mac: str | None, client_id: str | None, duid: str | None,
              names: tuple[str | None, ...]) -> tuple[Entry, str] | None:
        """The entry a device's identifiers name, and which identifier named it.
        ``names``: the hostname it gave, its FQDN and that FQDN's first label."""
        for how, value in (("mac", mac), ("client-id", client_id), ("duid", duid)):
            if value is not None:
                entry = self._index[how].get(value)
                if entry is not None:
                    return entry, how
        for name in names:
            if name:
                entry = self._index["hostname"].get(name)
                if entry is not None:
                    return entry, "hostname"
        return None


def load_inventory(path: str | Path) -> Inventory:
    """Read a CSV or JSON inventory (JSON when the file starts with ``[`` or ``{``)."""
    return parse_inventory(read_input(path, InventoryError), str(path))


def parse_inventory(data: bytes, source: str) -> Inventory:
    """The inventory in ``data`` (the bytes of a file named ``source`` in messages)."""
    path = source
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        rows = _json_rows(text) if text.lstrip()[:1] in ("[", "{") else _csv_rows(text)
        entries = _entries(rows)
    except _Problem as exc:
        raise InventoryError(one_line(f"{path}:{exc.line}: {exc.message}" if exc.line else f"{path}: {exc.message}")) \
            from None
    return _indexed(entries, source, hashlib.sha256(data).hexdigest())


class _Problem(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


#: One row: its line, each field's value (a string, or a list from JSON) and each field's line.
_Row = tuple[int, dict[str, object], dict[str, int]]


def _heading(text: str) -> str:
    return " ".join(re.sub(r"[-_]", " ", text).lower().split())


def _csv_rows(text: str) -> Iterator[_Row]:
    """Rows of a CSV file with a heading line; comma, semicolon or tab separated (the
    separator of the heading line); lines starting with ``#`` are comments."""
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        raise _Problem(None, "no heading line (the column names) and no devices")
    heading_line = lines[first]
    delimiter = max(",;\t", key=heading_line.count)
    reader = csv.reader(io.StringIO("".join(lines[first:]), newline=""), delimiter=delimiter, strict=True)
    try:
        heading = next(reader)
    except csv.Error as exc:
        raise _Problem(first + 1, f"heading line: {exc}") from None
    fields: list[str | None] = []
    for column in heading:
        fields.append(_FIELD_OF.get(_heading(column)))
    if "class" not in fields:
        raise _Problem(first + 1, "no class column (official, personal or unknown for each device)")
    if not {"macs", "client_ids", "duids", "hostname"} & set(fields):
        raise _Problem(first + 1, "no column the network can show: give mac, client id, duid or hostname")
    for name in set(fields) - {None, *LIST_FIELDS}:
        if fields.count(name) > 1:
            raise _Problem(first + 1, f"two columns mean {name.replace('_', ' ')}")
    while True:
        start = first + reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Problem(start, str(exc)) from None
        line = start
        if not cells or not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if len(cells) > len(fields):
            raise _Problem(line, f"{len(cells)} cells, but the heading names {len(fields)} columns")
        values: dict[str, object] = {}
        for name, cell in zip(fields, cells):
            if name is None or not cell.strip():
                continue
            if name in LIST_FIELDS:
                values.setdefault(name, []).extend(_split(cell))  # type: ignore[union-attr]
            else:
                values[name] = cell.strip()
        yield line, values, {}


def _json_rows(text: str) -> Iterator[_Row]:
    """Rows of a JSON array of objects, or of ``{"devices": [...]}``; each field's line is
    that of its key."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Problem(exc.lineno, exc.msg) from None
    except RecursionError:
        raise _Problem(None, "arrays or objects nested too deeply") from None
    if isinstance(doc, dict):
        if set(doc) != {"devices"} or not isinstance(doc["devices"], list):
            raise _Problem(1, 'expected an array of devices, or an object {"devices": [...]}')
        start = re.search(r'"devices"\s*:\s*\[', text)
        assert start is not None  # json.loads found the key and its array
        pos = start.end()
    elif isinstance(doc, list):
        pos = text.index("[") + 1
    else:
        raise _Problem(1, 'expected an array of devices, or an object {"devices": [...]}')
    decoder = json.JSONDecoder()
    whitespace = re.compile(r"[\s,]*")
    while True:
        pos = whitespace.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos] == "]":
            return
        value, end = decoder.raw_decode(text, pos)
        line = text.count("\n", 0, pos) + 1
        if not isinstance(value, dict):
            raise _Problem(line, "each device must be an object")
        values: dict[str, object] = {}
        lines: dict[str, int] = {}
        for key, raw in value.items():
            name = _FIELD_OF.get(_heading(key))
            if name is None:
                continue
            found = text.find(json.dumps(key), pos, end)
            lines[name] = text.count("\n", 0, found) + 1 if found >= 0 else line
            if raw is None or raw == "" or raw == []:
                continue
            if name in LIST_FIELDS:
                items = raw if isinstance(raw, list) else [raw]
                if not all(isinstance(item, str) for item in items):
                    raise _Problem(lines[name], f"{key}: give a string or a list of strings")
                values[name] = [part for item in items for part in _split(item)]
            elif isinstance(raw, str):
                values[name] = raw.strip()
            else:
                raise _Problem(lines[name], f"{key}: give a string")
        yield line, values, lines
        pos = end


def _split(cell: str) -> list[str]:
    return [part for part in _LIST_SEPARATORS.split(cell.strip()) if part]


def _entries(rows: Iterator[_Row]) -> list[Entry]:
    entries: list[Entry] = []
    for line, values, lines in rows:
        if len(entries) >= MAX_ENTRIES:
            raise _Problem(line, f"more than {MAX_ENTRIES} devices")
        entries.append(_entry(line, values, lines))
    return entries


def _entry(line: int, values: dict[str, object], lines: dict[str, int]) -> Entry:
    def problem(name: str, message: str) -> _Problem:
        return _Problem(lines.get(name, line), message)

    raw_class = values.get("class")
    if not isinstance(raw_class, str) or raw_class.lower() not in CLASS_VALUES:
        shown = f"{raw_class!r}" if raw_class else "empty"
        raise problem("class", f"class is {shown}; write one of {', '.join(DEVICE_CLASSES)}")
    macs = []
    for text in values.get("macs", []):  # type: ignore[attr-defined]
        if not _MAC.fullmatch(text):
            raise problem("macs", f"{text!r} is not a MAC address (write it like 02:00:5e:10:00:01)")
        macs.append(bytes.fromhex(re.sub(r"[:.-]", "", text)).hex(":"))
    identifiers: dict[str, list[str]] = {}
    for name, label in (("client_ids", "client id"), ("duids", "DUID")):
        found = []
        for text in values.get(name, []):  # type: ignore[attr-defined]
            if not _HEX_ID.fullmatch(text):
                raise problem(name, f"{label} {text!r} is not hex bytes (write it like 01:02:00:5e:10:00:01)")
            found.append(bytes.fromhex(re.sub(r"[:-]", "", text)).hex(":"))
        identifiers[name] = found
    hostname = values.get("hostname")
    hostname = hostname.lower().rstrip(".") if isinstance(hostname, str) else None
    if not macs and not identifiers["client_ids"] and not identifiers["duids"] and not hostname:
        raise _Problem(line, "names no MAC, client id, DUID or hostname: the network could never show this device")
    for name in ("owner", "department", "serial", "id"):
        text = values.get(name)
        if isinstance(text, str) and not text.isprintable():
            raise problem(name, f"{name} holds a control character")
    serial = values.get("serial")
    ident = values.get("id") or serial or hostname or (macs[0] if macs else None) \
        or (identifiers["client_ids"] or identifiers["duids"])[0]
    return Entry(str(ident), CLASS_VALUES[raw_class.lower()], _text(values.get("owner")),
                 _text(values.get("department")), tuple(macs), tuple(identifiers["client_ids"]),
                 tuple(identifiers["duids"]), hostname, _text(serial), line)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _indexed(entries: list[Entry], source: str, sha256: str | None) -> Inventory:
    """The inventory with its indexes; an identifier (or id) on two rows is refused, at
    the second: which device it names would be a guess."""
    index: dict[str, dict[str, Entry]] = {how: {} for how in MATCH_ORDER}
    ids: dict[str, Entry] = {}
    for entry in entries:
        for how, values in (("mac", entry.macs), ("client-id", entry.client_ids), ("duid", entry.duids),
                            ("hostname", (entry.hostname,) if entry.hostname else ())):
            for value in values:
                other = index[how].get(value)
                if other is not None and other is not entry:
                    raise InventoryError(one_line(
                        f"{source}:{entry.line}: {how} {value} is already on line {other.line}"))
                index[how][value] = entry
        if entry.id in ids:
            raise InventoryError(one_line(
                f"{source}:{entry.line}: device {entry.id!r} is already on line {ids[entry.id].line}"))
        ids[entry.id] = entry
    return Inventory(tuple(entries), source, sha256, index)
