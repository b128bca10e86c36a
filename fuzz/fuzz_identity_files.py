"""Fuzz the device inventory (CSV and JSON) and the lease-file readers (dnsmasq, ISC
dhcpd, Kea, RADIUS detail): the files an operator hands the sensor about its devices.

The first input byte picks the reader (even: ``parse_inventory``, odd: ``parse_leases``);
the rest is the file. An inventory that loads is asked to match a few devices; leases that
load are scheduled into a device table whose clock then passes them all.

Run alone: ``.venv/bin/python fuzz/fuzz_identity_files.py fuzz/corpus/identity_files
-dict=fuzz/dicts/identity_files.dict`` (seed it first with ``.venv/bin/python fuzz/run.py
--seeds-only identity_files``).

What counts as a finding: any exception other than the one error a user is meant to see
(``InventoryError``, ``LeaseError``); such an error that is not one printable line
starting with the file's name (and a line number where the file has lines); an entry with
a class outside official/personal/unknown, a MAC not in colon form, no identifier, or an
identifier the index does not map back to its entry; a lease binding without MAC and
DUID, or with an address that is not one.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    from detector.devices import DeviceTable
    from detector.inventory import InventoryError, parse_inventory
    from detector.leases import LeaseError, parse_leases
    from detector.records import DEVICE_CLASSES

_SOURCE = "fuzz-file"
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
_MESSAGE = re.compile(rf"{_SOURCE}(:\d+)?: ")


def _refused(exc: Exception) -> None:
    """A file refused: one printable line naming the file (and its line, where it has one)."""
    message = str(exc)
    assert _MESSAGE.match(message) and message.isprintable(), message


def _inventory(data: bytes) -> None:
    try:
        inventory = parse_inventory(data, _SOURCE)
    except InventoryError as exc:
        _refused(exc)
        return
    for entry in inventory.entries:
        assert entry.device_class in DEVICE_CLASSES, entry
        assert entry.macs or entry.client_ids or entry.duids or entry.hostname, entry
        for mac in entry.macs:
            assert _MAC.match(mac), mac
            assert inventory.match(mac, None, None, ()) == (entry, "mac"), entry
        for ident in entry.client_ids:
            assert inventory.match(None, ident, None, ())[0] is entry, entry
        if entry.hostname:
            assert inventory.match(None, None, None, (entry.hostname,))[0] is entry, entry


def _leases(data: bytes) -> None:
    try:
        bindings = parse_leases(data, _SOURCE)
    except LeaseError as exc:
        _refused(exc)
        return
    table = DeviceTable(max_entries=4)
    table.schedule(bindings)
    for binding in bindings:
        assert binding.mac is not None or binding.duid is not None, binding
        assert binding.mac is None or _MAC.match(binding.mac), binding
        assert binding.ip is not None and ipaddress.ip_address(binding.ip), binding
        assert binding.hostname is None or binding.hostname.isprintable(), binding
    table.advance(float("inf"))
    assert table.learnt == len(bindings) and len(table) <= 16


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        _leases(data[1:])
    else:
        _inventory(data[1:])


def seeds() -> Iterator[bytes]:
    """The inventories and lease files of the tests, and small variations."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
    import test_leases

    inventories = (
        "id,mac,client id,duid,hostname,owner,department,class\nA1,00:16:3e:00:00:01,,,,alice,Finance,official\n"
        "A2,,ff:00:00:00:01:00:03:00:01:02:16:00:00:00:01,,,bob,Finance,official\n"
        "A3,,,00:03:00:01:aa:bb:cc:dd:ee:ff,,carol,HR,personal\nA4,,,,Dave-Laptop,dave,IT,unknown\n",
        "Device name;Serial number;Wi-Fi MAC;Ethernet MAC;Primary user UPN;Ownership\n"
        "FIN-LT-07;5CG1234;A4-83-E7-00-00-01;a483.e700.0002;a.jansen@example.org;Corporate\n# c\n",
        '{"devices": [\n {"id": "A1", "macs": ["00:16:3e:00:00:01"], "class": "official", "owner": "a"},\n'
        ' {"hostname": "lab-pc", "class": "unknown"}\n]}\n',
        '[{"mac": "00:16:3e:00:00:01", "class": "personal", "duid": ["00:01"]}]',
        'mac,class\n"00:16:3e:00:00:01,official\n',
    )
    for text in inventories:
        yield b"\x00" + text.encode()
    for text in (test_leases.DNSMASQ, test_leases.ISC, test_leases.KEA4, test_leases.KEA6, test_leases.RADIUS):
        yield b"\x01" + text.encode()


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
