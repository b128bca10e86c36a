"""The metrics server: HTTP for Prometheus's scrapes, with TLS, client certificates and
basic auth configured by a Prometheus web-config file, as exporter-toolkit reads it.

Apart from the collector (detector.sinks.metrics) because it is a different job: what is
exposed there, how and to whom here. A security setting in the file that this server
cannot honour is refused, never ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from detector.errors import UserError


class MetricsError(UserError, ValueError):
    """Metrics cannot be served as asked (a bad web-config file, an address in use); the
    message is one line."""


#: exporter-toolkit's client_auth_type values that Python's ssl module can do. The two that
#: take a client certificate without verifying it (RequestClientCert, RequireAnyClientCert)
#: are refused: they authenticate nobody.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
#: A bcrypt hash in modular crypt form: variant, cost, then 22 salt and 31 hash characters.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The parts of Prometheus's web configuration file (exporter-toolkit) that we serve."""

    tls: ssl.SSLContext | None
    users: Mapping[str, bytes]  # user name -> bcrypt hash


def load_web_config(path: str | Path) -> WebConfig:
    """Read a web-config file as Prometheus exporters do: ``tls_server_config`` (``cert_file``,
    ``key_file``, ``client_auth_type``, ``client_ca_file``, ``min_version``, ``max_version``;
    paths relative to the file) and ``basic_auth_users`` (name: bcrypt hash). Any other key
    is refused rather than silently ignored: a security setting must not be dropped."""
    import yaml  # only a run with --web-config needs it

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise MetricsError(f"{path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MetricsError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise MetricsError(f"{path}: expected a mapping at the top level")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise MetricsError(f"{path}: unsupported key(s) {', '.join(sorted(map(str, unknown)))} "
                             "(supported: tls_server_config, basic_auth_users)")
    try:
        tls = _tls_context(doc.get("tls_server_config"), path.parent)
        users = _users(doc.get("basic_auth_users"))
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise MetricsError(f"{path}: {exc}") from None
    return WebConfig(tls, users)


def _tls_context(section: object, base: Path) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValueError("tls_server_config must be a mapping")
    unknown = set(section) - _TLS_KEYS
    if unknown:
        raise ValueError(f"tls_server_config: unsupported key(s) {', '.join(sorted(map(str, unknown)))}")
    cert, key = section.get("cert_file"), section.get("key_file")
    if not cert or not key:
        raise ValueError("tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(section.get("min_version", "TLS12"), "min_version")
    if "max_version" in section:
        context.maximum_version = _tls_version(section["max_version"], "max_version")
    context.load_cert_chain(_file(base, cert, "cert_file"), _file(base, key, "key_file"))
    auth = section.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ValueError(f"client_auth_type {auth!r} is not supported (use one of {', '.join(_CLIENT_AUTH)})")
    context.verify_mode = _CLIENT_AUTH[auth]
    ca = section.get("client_ca_file")
    if ca:
        context.load_verify_locations(_file(base, ca, "client_ca_file"))
    elif context.verify_mode != ssl.CERT_NONE:
        raise ValueError(f"client_auth_type {auth} needs client_ca_file")
    return context


def _file(base: Path, name: object, key: str) -> Path:
    path = base / str(name)
    if not path.is_file():
        raise ValueError(f"{key} {path}: no such file")
    return path


def _tls_version(name: object, key: str) -> ssl.TLSVersion:
    if name not in _TLS_VERSIONS:
        raise ValueError(f"{key} {name!r} is not one of {', '.join(_TLS_VERSIONS)}")
    return _TLS_VERSIONS[name]


def _users(section: object) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError("basic_auth_users must map user names to bcrypt hashes")
    users = {}
    for user, hashed in section.items():
        if not isinstance(user, str) or ":" in user or not isinstance(hashed, str) \
                or not _BCRYPT_RE.fullmatch(hashed):
            raise ValueError(f"basic_auth_users: {user!r} needs a bcrypt hash ($2b$12$ and 53 characters)")
        users[user] = hashed.encode()
    return users


class _BasicAuth:
    """WSGI middleware: HTTP basic auth against bcrypt hashes, as exporter-toolkit does it.

    bcrypt is slow on purpose (tens of milliseconds), so a verified (user, password) pair is
    remembered by a keyed digest, never in clear, and a bounded number of them; an unknown
    user is checked against a dummy hash so that timing does not tell which users exist.
    """

    MAX_CACHED = 64

    def __init__(self, app: Callable, users: Mapping[str, bytes]) -> None:
        import bcrypt  # only a run with basic auth needs it

        self.app = app
        self.users = dict(users)
        self._checkpw = bcrypt.checkpw
        self._dummy = bcrypt.hashpw(b"dummy", bcrypt.gensalt(4))
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self._authorised(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("WWW-Authenticate", 'Basic realm="tiktok-detector"')])
        return [b"Unauthorized\n"]

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if digest in self._verified:
                return True
        hashed = self.users.get(user)
        ok = self._checkpw(password.encode(), hashed if hashed is not None else self._dummy)
        if not ok or hashed is None:
            return False
        with self._lock:
            if len(self._verified) >= self.MAX_CACHED:
                self._verified.pop(next(iter(self._verified)))
            self._verified[digest] = None
        return True


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that speaks plain HTTP to TLS, or hangs up mid-request: its problem, not
        # a traceback on the sensor's stderr.
        return


class _QuietHandler(WSGIRequestHandler):
    #: A client that stops sending is dropped after this many seconds (bounds held threads).
    timeout = 10

    def log_message(self, format: str, *args: object) -> None:
        return


#: How often the server loop checks for shutdown (seconds): what closing it can take.
SHUTDOWN_POLL = 0.1


class MetricsServer:
    """``/metrics`` (and every path, as prometheus-client serves) on its own thread.

    TLS handshakes happen on the connection's thread, not the accept loop, so one slow
    client cannot hold the others up.
    """

    def __init__(self, registry: CollectorRegistry, address: tuple[str, int],
                 web_config: WebConfig | None = None) -> None:
        host, port = address
        app: Callable = make_wsgi_app(registry)
        if web_config is not None and web_config.users:
            app = _BasicAuth(app, web_config.users)
        server_class = type("_MetricsServer", (_Server,), {"address_family": _family(host)})
        try:
            self._httpd = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {_join(host, port)}: {exc.strerror or exc}") from None
        if web_config is not None and web_config.tls is not None:
            self._httpd.socket = web_config.tls.wrap_socket(self._httpd.socket, server_side=True,
                                                            do_handshake_on_connect=False)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(SHUTDOWN_POLL,),
                                        name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
