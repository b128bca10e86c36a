"""Events and alerts to a syslog collector: RFC 5424 messages over UDP, TCP or TLS.

Each JSON record (native or ECS) is the MSG of one RFC 5424 message; its MSGID says which
kind (``event`` or ``alert``) and its structured data names the sensor, so a collector can
route and filter before parsing the JSON:

    <132>1 2026-03-02T10:00:01.250000Z host tiktok-detector 4242 event
        [tiktok-detector@32473 sensor="hq-floor2" format="native"] {"ts":…}

Transports: UDP, one message per datagram (RFC 5426); TCP with octet-counting framing,
``LEN SP MSG`` (RFC 6587 section 3.4.1: a JSON message may hold anything but needs no
delimiter); TLS with the same framing (RFC 5425), the server verified against the system's
CAs or ``--syslog-ca``, a client certificate when the collector asks for one.

Python's ``logging.handlers.SysLogHandler`` writes RFC 3164 (no version, no structured
data, no octet counting) and the RFC 5424 handlers on PyPI send on the caller's thread; the
format is a few lines, the transport is the standard library's.

Sending runs on a thread of its own behind a bounded queue (``detector.sinks.sender``):
the packet loop never waits on a collector. A full queue drops the message, a failed send
reconnects once and then gives the message up; each is counted, never fatal.

The SD-ID ``tiktok-detector@32473`` uses the private enterprise number RFC 5612 reserves
for documentation and examples; the sensor has no number of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from detector.errors import UserError
from detector.records import rfc3339
from detector.sinks.sender import QueuedSender

if TYPE_CHECKING:  # ssl is imported where used: only a sensor that sends over TLS loads it
    import ssl

APP_NAME = "tiktok-detector"
SD_ID = "tiktok-detector@32473"
DEFAULT_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}
#: RFC 5424 facility codes by name (section 6.2.1), for ``--syslog-facility``.
FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "authpriv": 10, "audit": 13,
              **{f"local{n}": 16 + n for n in range(8)}}
SEVERITY_WARNING, SEVERITY_NOTICE = 4, 5
#: Messages waiting to be sent; past this many, new ones are dropped (and counted).
MAX_QUEUED = 8192
#: A failed connection is tried again no sooner than this (seconds); messages meanwhile fail.
RECONNECT_DELAY = 2.0
#: RFC 5424 header field limits (section 6): HOSTNAME 255, APP-NAME 48, PROCID 128.
MAX_HOSTNAME = 255


class SyslogError(UserError):
    """A TLS option for syslog that cannot be used (a missing or unreadable file)."""


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where to send: ``udp://``, ``tcp://`` or ``tls://`` host and port."""

    transport: str
    host: str
    port: int


def syslog_target(text: str) -> SyslogTarget:
    """argparse type: ``udp://HOST[:PORT]``, ``tcp://…`` or ``tls://…`` (ports 514, 601, 6514)."""
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not udp://HOST[:PORT], tcp://HOST[:PORT] or tls://HOST[:PORT]")
    return SyslogTarget(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


def sd_escape(value: str) -> str:
    """A PARAM-VALUE: '"', '\\' and ']' escaped with a backslash (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` long, else "-"."""
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or "-"


def format_message(record: dict, kind: str, *, sensor: str, format_name: str, facility: int, severity: int,
                   hostname: str, procid: int, now: float) -> bytes:
    """One RFC 5424 message: header, the structured data naming the sensor, the JSON record.

    The JSON is ASCII (non-ASCII escaped), so the MSG needs no BOM (MSG-ANY)."""
    header = (f"<{facility * 8 + severity}>1 {rfc3339(now)} {header_token(hostname, MAX_HOSTNAME)} "
              f"{APP_NAME} {procid} {kind}")
    sd = f'[{SD_ID} sensor="{sd_escape(sensor)}" format="{format_name}"]'
    return f"{header} {sd} {json.dumps(record, separators=(',', ':'))}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: the length in decimal, a space, the message."""
    return b"%d %s" % (len(message), message)


class SyslogSender(QueuedSender[bytes]):
    """Sends formatted messages to one collector: ``send`` runs on the packet loop's thread
    and only queues (``QueuedSender``); its thread keeps the connection and sends."""

    def __init__(self, target: SyslogTarget, *, sensor: str, format_name: str, facility: int = FACILITIES["local0"],
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 timeout: float = 5.0) -> None:
        super().__init__("syslog", MAX_QUEUED)
        self.target = target
        self.sensor = sensor
        self.format_name = format_name
        self.facility = facility
        self.timeout = timeout
        self.hostname = socket.gethostname()  # not getfqdn(): a DNS lookup could stall the start
        self.context = _tls_context(ca_file, cert_file, key_file) if target.transport == "tls" else None
        self._sock: socket.socket | None = None
        self._address: tuple | None = None
        self._retry_at = 0.0

    def send(self, record: dict, kind: str, severity: int) -> None:
        """Queue ``record`` as a message of ``kind`` (``event`` or ``alert``)."""
        self._enqueue(format_message(record, kind, sensor=self.sensor, format_name=self.format_name,
                                     facility=self.facility, severity=severity, hostname=self.hostname,
                                     procid=os.getpid(), now=time.time()))

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                break
            self._deliver(message)
        self._disconnect()

    def _deliver(self, message: bytes) -> None:
        """Send one message; a stream that broke is reopened once for it."""
        for attempt in range(2):
            try:
                sock = self._connect()
                if sock is None:
                    break
                if self.target.transport == "udp":
                    sock.sendto(message, self._address)
                else:
                    sock.sendall(octet_counted(message))
                self.sent += 1
                return
            except OSError as exc:
                self.last_error = str(exc)
                self._disconnect()
                if attempt == 0 and self.target.transport != "udp":
                    self._retry_at = 0.0  # a collector that restarted: reconnect at once, once
        self.failed += 1

    def _connect(self) -> socket.socket | None:
        if self._sock is not None:
            if self.target.transport == "udp" or not self._peer_closed(self._sock):
                return self._sock
            self._disconnect()  # the collector closed (restarted): reconnect at once
            self._retry_at = 0.0
        if time.monotonic() < self._retry_at:
            return None
        self._retry_at = time.monotonic() + RECONNECT_DELAY
        target = self.target
        kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
        family, _, _, _, address = socket.getaddrinfo(target.host, target.port, type=kind)[0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.timeout)
        if kind == socket.SOCK_STREAM:
            try:
                sock.connect(address)
                if self.context is not None:
                    sock = self.context.wrap_socket(sock, server_hostname=target.host)
            except OSError:
                sock.close()
                raise
        self._sock, self._address = sock, address
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether the collector closed the connection. A syslog receiver never sends, so a
        readable socket means its end (or TLS housekeeping, such as session tickets); and a
        write after the end would vanish without an error, so this is asked before each."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        sock.setblocking(False)
        try:
            return not sock.recv(4096)
        except OSError as exc:
            return not (isinstance(exc, BlockingIOError) or _tls_want_read(exc))
        finally:
            sock.settimeout(self.timeout)

    def _disconnect(self) -> None:
        """Close the connection; TLS says so first (close_notify, RFC 5425 section 4.4),
        without which a collector may take the end for an attack and drop what it still
        holds unread."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if self.context is not None:
                sock = sock.unwrap()
        except (OSError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass


def _tls_want_read(exc: OSError) -> bool:
    """A TLS record was read that held no application data (a session ticket)."""
    import ssl

    return isinstance(exc, ssl.SSLWantReadError)


def _tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the collector (system CAs, or ``ca_file``) and offers
    a certificate when given one (RFC 5425 section 5: mutual authentication)."""
    import ssl

    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        where = getattr(exc, "filename", None) or cert_file or ca_file
        raise SyslogError(f"{where}: cannot be used for syslog TLS: {getattr(exc, 'strerror', None) or exc}") from None
    return context
