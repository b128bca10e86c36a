"""Keyed pseudonyms for the values that identify a person's device: MACs, IPs, hostnames.

A report may go to someone who must learn *that* a device broke the policy, when and how
often, but not *whose* device it was. Each value is replaced by HMAC-SHA256 under a key the
auditor keeps, which gives tokens that are

- stable: the same key turns the same value into the same token, so the reports of two
  months line up, and the key holder can re-identify a device by recomputing its token;
- unlinkable without the key: a plain hash of a MAC or an IPv4 address is reversed by
  hashing every candidate (2^32 addresses take minutes); a keyed hash cannot be computed
  at all without the key, so a token says nothing about the value behind it.

Values are put in one canonical form before hashing (``02:00:C6:12:0A:22`` and
``02-00-c6-12-0a-22`` are the same MAC, ``fd00:10::0001`` and ``fd00:10::1`` the same IP),
and the kind is part of the hashed message, so a hostname that happens to read like an
address never shares its token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

from detector.report.model import Event

#: Hex digits kept of each HMAC: 64 bits, so a collision among a million devices has a
#: probability of about 3e-8, while tokens stay short enough to read in a table.
TOKEN_HEX_DIGITS = 16
#: Keys shorter than this are accepted but warned about: a short key can be guessed.
RECOMMENDED_KEY_BYTES = 16

_MAC_SEPARATORS = re.compile(r"[-:.]")


def canonical(kind: str, value: str) -> str:
    """The form of ``value`` that is hashed: lowercase, separators and zero-padding normalised."""
    text = value.strip().lower()
    if kind == "mac":
        digits = _MAC_SEPARATORS.sub("", text)
        if len(digits) == 12 and all(c in "0123456789abcdef" for c in digits):
            return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
        return text
    if kind == "ip":
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            return text
    return text.rstrip(".")


def kind_of_device(device: str) -> str:
    """A device is named by its MAC when the frames carry one, else by its IP address."""
    try:
        ipaddress.ip_address(device.strip())
    except ValueError:
        return "mac"
    return "ip"


class Pseudonymizer:
    """Replaces identifying values by ``KIND-TOKEN`` (``mac-3f9a1c2b7d4e5f60``)."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the pseudonymization key is empty")
        self._key = key
        # Devices repeat on every event of a busy day: memoise, but boundedly.
        self._cache: dict[tuple[str, str], str] = {}

    def token(self, kind: str, value: str) -> str:
        cache_key = (kind, value)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        message = f"{kind}\x00{canonical(kind, value)}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:TOKEN_HEX_DIGITS]
        token = f"{kind}-{digest}"
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[cache_key] = token
        return token

    def device(self, device: str) -> str:
        """The same token as the MAC or IP the device is named by."""
        return self.token(kind_of_device(device), device)

    def event(self, event: Event) -> Event:
        """The event with its device, MAC, IP, hostname and inventory owner replaced by tokens."""
        return event._replace(
            device=self.device(event.device),
            client_mac=None if event.client_mac is None else self.token("mac", event.client_mac),
            client_ip=None if event.client_ip is None else self.token("ip", event.client_ip),
            hostname=None if event.hostname is None else self.token("host", event.hostname),
            owner=None if event.owner is None else self.token("owner", event.owner),
        )
