"""DHCP server lease files as binding sources for a replay.

An audit of last month's captures may not hold the DHCP exchanges that tied each address
to a device; the DHCP server's lease file does. Three formats are read, told apart by
their content:

- dnsmasq (``dnsmasq.leases``, dnsmasq(8) ``--dhcp-leasefile``): one lease a line,
  ``EXPIRY MAC IP HOSTNAME CLIENT-ID`` for DHCPv4 and, after the server's ``duid`` line,
  ``EXPIRY IAID IPV6 HOSTNAME DUID`` for DHCPv6 (``*`` for none). It holds the leases in
  force and only their expiry, so its bindings hold from the start of the replay.
- ISC dhcpd (``dhcpd.leases``, dhcpd.leases(5)): ``lease IP { ... }`` blocks with
  ``starts``, ``hardware ethernet``, ``uid``, ``client-hostname``, and ``ia-na`` / ``ia-ta``
  blocks whose ``iaaddr`` addresses belong to the DUID after the IAID in the block's name.
- Kea's memfile CSV (``kea-leases4.csv``, ``kea-leases6.csv``): its heading names the
  columns; a lease holds from ``expire - valid_lifetime``.
- RADIUS accounting in the Livingston "detail" format FreeRADIUS and GNU Radius write
  (rlm_detail(5)): records of ``Attribute = value`` lines under a date line; a Start or
  Interim-Update whose ``Calling-Station-Id`` is a MAC (802.1X on Wi-Fi) binds it to
  ``Framed-IP-Address`` / ``Framed-IPv6-Address`` from its ``Timestamp``.

Each lease is a ``Binding`` with ``ts`` set to its start (None when unknown); the device
table learns it when the capture's clock reaches that time. Every problem is one
``LeaseError`` line naming the file and line.
"""

from __future__ import annotations

import calendar
import csv
import ipaddress
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

from detector.errors import UserError, one_line, read_input
from detector.extract.binding import Binding, format_id, printable

_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_HEX = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2})*")
#: Kea writes a comma inside a value as this entity (its CSV has no quoting).
_KEA_COMMA = "&#x2c"
#: Kea lease states (dhcpsrv/lease.h): 1 is a declined address, bound to no device.
KEA_DECLINED = 1
#: Kea lease6 types: 0 IA_NA, 1 IA_TA, 2 IA_PD (a delegated prefix, no device address).
KEA_PREFIX = 2


class LeaseError(UserError, ValueError):
    """A lease file that cannot be read; one line naming the file and the line."""


class _Problem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def load_leases(path: str | Path) -> list[Binding]:
    """The bindings of one lease file, in the order the file gives them."""
    return parse_leases(read_input(path, LeaseError), str(path))


def parse_leases(data: bytes, path: str) -> list[Binding]:
    """The bindings of the lease file ``data`` (named ``path`` in messages)."""
    text = data.decode("utf-8", "replace")
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")),
                 "")
    try:
        if first.startswith("address,"):
            return list(_kea(text))
        if re.match(r"(lease|ia-na|ia-ta|ia-pd|server-duid|authoring-byte-order|failover|host|class|subclass)\b",
                    first):
            return list(_isc(text))
        if not first or re.match(r"(\d+|duid)\s", first):
            return list(_dnsmasq(text))
        if _DETAIL_DATE.fullmatch(first):
            return list(_radius_detail(text))
    except _Problem as exc:
        raise LeaseError(one_line(f"{path}:{exc.line}: {exc.message}")) from None
    raise LeaseError(f"{path}: not a dnsmasq, ISC dhcpd or Kea lease file, nor a RADIUS detail file")


def _mac(text: str, line: int) -> str:
    if not _MAC.fullmatch(text):
        raise _Problem(line, f"{text!r} is not an Ethernet MAC address")
    return text.lower()


def _hex_id(text: str, line: int, what: str) -> str:
    if not _HEX.fullmatch(text):
        raise _Problem(line, f"{what} {text!r} is not colon-separated hex")
    return format_id(bytes(int(part, 16) for part in text.split(":")))


def _address(text: str, line: int) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Problem(line, f"{text!r} is not an IP address") from None


def _name(text: str) -> str | None:
    name = printable(text.encode("utf-8", "backslashreplace"))
    return name.lower().rstrip(".") or None if name else None


# -- dnsmasq ----------------------------------------------------------------------------


def _dnsmasq(text: str) -> Iterator[Binding]:
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "duid":  # the server's own DUID
            continue
        if len(fields) != 5 or not fields[0].isdigit():
            raise _Problem(number, "expected EXPIRY MAC-or-IAID ADDRESS HOSTNAME CLIENT-ID")
        address = _address(fields[2], number)
        hostname = None if fields[3] == "*" else _name(fields[3])
        ident = None if fields[4] == "*" else _hex_id(fields[4], number, "client id")
        if ":" in address:
            if not fields[1].isdigit():
                raise _Problem(number, f"IAID {fields[1]!r} is not a number")
            yield Binding(None, address, hostname, duid=ident)
        else:
            yield Binding(_mac(fields[1], number), address, hostname, client_id=ident)


# -- ISC dhcpd --------------------------------------------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|([{};])|([^\s{};"#]+)', re.S)


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    """(kind, value, line): kind is "str" (a quoted string, unescaped), "punct" or "word"."""
    line, pos = 1, 0
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None:
            raise _Problem(line, f"unexpected {text[pos]!r}")
        if found.group(1) is not None:
            yield "str", _unescape(found.group(1)), line
        elif found.group(2) is not None:
            yield "punct", found.group(2), line
        elif found.group(3) is not None:
            yield "word", found.group(3), line
        line += found.group(0).count("\n")
        pos = found.end()


def _unescape(text: str) -> str:
    """A dhcpd.leases string: C escapes, octal for bytes that are not printable."""
    out = bytearray()
    pos = 0
    raw = text.encode("utf-8", "surrogateescape")
    while pos < len(raw):
        if raw[pos] == 0x5C and pos + 1 < len(raw):
            octal = re.match(rb"[0-7]{1,3}", raw[pos + 1 : pos + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                pos += 1 + len(octal.group(0))
                continue
            out.append({ord("n"): 10, ord("t"): 9, ord("r"): 13}.get(raw[pos + 1], raw[pos + 1]))
            pos += 2
            continue
        out.append(raw[pos])
        pos += 1
    return out.decode("latin-1")


#: One statement of dhcpd.leases: its words (kind, value), its block (a list of statements) or None, its line.
_Statement = tuple[list[tuple[str, str]], object, int]


def _block(tokens: Iterator[tuple[str, str, int]], line: int, depth: int) -> list[_Statement]:
    """The statements up to the closing brace: (words, sub-block or None, line)."""
    if depth > 8:
        raise _Problem(line, "blocks nested too deeply")
    statements: list[_Statement] = []
    words: list[tuple[str, str]] = []
    start = line
    for kind, value, at in tokens:
        if not words:
            start = at
        if kind == "punct" and value == ";":
            statements.append((words, None, start))
            words = []
        elif kind == "punct" and value == "{":
            statements.append((words, _block(tokens, at, depth + 1), start))
            words = []
        elif kind == "punct" and value == "}":
            if depth == 0:
                raise _Problem(at, "'}' without its '{'")
            if words:
                raise _Problem(at, "statement without ';' before '}'")
            return statements
        else:
            words.append((kind, value))
    if depth > 0:
        raise _Problem(line, "block not closed: '}' missing")
    if words:
        raise _Problem(start, "statement without ';' at the end of the file")
    return statements


def _isc_time(words: list[tuple[str, str]], line: int) -> float | None:
    """``starts 3 2026/12/02 10:00:00`` (UTC), ``starts epoch 1764669600`` or ``never``."""
    values = [value for _, value in words[1:]]
    if values[:1] == ["never"]:
        return None
    if len(values) >= 2 and values[0] == "epoch" and values[1].isdigit():
        return float(values[1])
    if len(values) >= 3:
        try:
            return float(calendar.timegm(time.strptime(f"{values[1]} {values[2]}", "%Y/%m/%d %H:%M:%S")))
        except ValueError:
            pass
    raise _Problem(line, f"{' '.join(values)!r} is not a dhcpd.leases time")


def _isc(text: str) -> Iterator[Binding]:
    for words, block, line in _block(_tokens(text), 1, 0):
        head = [value for _, value in words]
        if not head or not isinstance(block, list):
            continue
        if head[0] == "lease" and len(head) == 2:
            yield from _isc_lease(_address(head[1], line), block)
        elif head[0] in ("ia-na", "ia-ta") and len(words) == 2 and words[1][0] == "str":
            raw = words[1][1].encode("latin-1")
            if len(raw) <= 4:
                raise _Problem(line, f"{head[0]} names no DUID after its IAID")
            yield from _isc_ia(format_id(raw[4:]), block)


def _isc_lease(address: str, block: list) -> Iterator[Binding]:
    mac = hostname = client_id = None
    start = None
    for words, _, line in block:
        if not words:
            continue
        key = words[0][1]
        if key == "hardware" and len(words) == 3 and words[1][1] == "ethernet":
            mac = _mac(words[2][1], line)
        elif key == "uid" and len(words) == 2:
            kind, value = words[1]
            client_id = format_id(value.encode("latin-1")) if kind == "str" else _hex_id(value, line, "uid")
        elif key == "client-hostname" and len(words) == 2:
            hostname = _name(words[1][1])
        elif key == "starts":
            start = _isc_time(words, line)
    if mac is not None:
        yield Binding(mac, address, hostname, client_id=client_id, ts=start)


def _isc_ia(duid: str, block: list) -> Iterator[Binding]:
    cltt = None
    for words, sub, line in block:
        if words and words[0][1] == "cltt":
            cltt = _isc_time(words, line)
    for words, sub, line in block:
        if len(words) == 2 and words[0][1] == "iaaddr" and isinstance(sub, list):
            start = cltt
            for inner, _, at in sub:
                if inner and inner[0][1] == "starts":
                    start = _isc_time(inner, at)
            yield Binding(None, _address(words[1][1], line), None, duid=duid, ts=start)


# -- Kea --------------------------------------------------------------------------------


def _kea(text: str) -> Iterator[Binding]:
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from _kea_rows(rows, next(rows))
    except csv.Error as exc:  # a quote or line break csv cannot read
        raise _Problem(rows.line_num, str(exc)) from None


def _kea_rows(rows: Iterator[list[str]], heading: list[str]) -> Iterator[Binding]:
    columns = {name.strip(): i for i, name in enumerate(heading)}
    v6 = "duid" in columns
    needed = ("address", "valid_lifetime", "expire") + (("duid",) if v6 else ("hwaddr",))
    missing = [name for name in needed if name not in columns]
    if missing:
        raise _Problem(1, f"Kea heading lacks {', '.join(missing)}")

    def cell(cells: list[str], name: str) -> str:
        index = columns.get(name)
        return cells[index].replace(_KEA_COMMA, ",").strip() if index is not None and index < len(cells) else ""

    for cells in rows:
        line = rows.line_num  # type: ignore[attr-defined]
        if not cells or not any(cells):
            continue
        if len(cells) < len(needed):
            raise _Problem(line, f"{len(cells)} cells, fewer than the heading's columns")
        state = cell(cells, "state")
        if state.isdigit() and int(state) == KEA_DECLINED:
            continue
        if v6 and cell(cells, "lease_type") == str(KEA_PREFIX):
            continue
        lifetime, expire = cell(cells, "valid_lifetime"), cell(cells, "expire")
        if not lifetime.isdigit() or not expire.isdigit():
            raise _Problem(line, "valid_lifetime and expire must be whole seconds")
        start = float(int(expire) - int(lifetime))
        address = _address(cell(cells, "address"), line)
        hostname = _name(cell(cells, "hostname")) if cell(cells, "hostname") else None
        hwaddr = cell(cells, "hwaddr")
        mac = _mac(hwaddr, line) if hwaddr else None
        if v6:
            duid = _hex_id(cell(cells, "duid"), line, "duid") if cell(cells, "duid") else None
            if duid is not None or mac is not None:
                yield Binding(mac, address, hostname, duid=duid, ts=start)
        elif mac is not None:
            client_id = cell(cells, "client_id")
            yield Binding(mac, address, hostname,
                          client_id=_hex_id(client_id, line, "client_id") if client_id else None, ts=start)


# -- RADIUS accounting (detail files) ------------------------------------------------------

#: The date line that starts each record (ctime(3) form: ``Fri Dec 15 18:00:24 2000``).
_DETAIL_DATE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")
_STATION_MAC = re.compile(r"[0-9a-fA-F]{2}(?:[-:.]?[0-9a-fA-F]{2}){5}")
#: Acct-Status-Type values that say the session holds its address now.
_HOLDING = frozenset({"Start", "Interim-Update", "Alive", "1", "3"})


def _radius_detail(text: str) -> Iterator[Binding]:
    record: dict[str, str] = {}
    start = 0
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if not line.strip() or _DETAIL_DATE.fullmatch(line.strip()):
            if record:
                yield from _radius_record(record, start)
            record, start = {}, number
            continue
        name, equals, value = line.partition("=")
        if not equals or not line[:1].isspace():
            raise _Problem(number, "expected an indented 'Attribute = value' line or a date line")
        record[name.strip()] = value.strip().strip('"')


def _radius_record(record: dict[str, str], line: int) -> Iterator[Binding]:
    station = record.get("Calling-Station-Id", "")
    if record.get("Acct-Status-Type") not in _HOLDING or not _STATION_MAC.fullmatch(station):
        return  # a Stop, or a dial-up caller's number: no device address to bind
    stamp = record.get("Timestamp") or record.get("Event-Timestamp", "")
    if not stamp.isdigit():
        raise _Problem(line, "a record without a Timestamp in seconds: when did it happen?")
    mac = bytes.fromhex(re.sub(r"[-:.]", "", station)).hex(":")
    for key in ("Framed-IP-Address", "Framed-IPv6-Address"):
        if key in record:
            yield Binding(mac, _address(record[key], line), None, ts=float(stamp))
