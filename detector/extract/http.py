"""Plain-HTTP/1.x Host: the name a client asks a web server (or a proxy) for.

``parse_http_host`` is sans-IO and incremental in the same style as
``client_hello_from_records``: it is handed the first bytes of a TCP stream each time
more arrive and answers NEED_MORE, DONE or NOT_HTTP. It never raises and looks at no
more than MAX_HEADER bytes.

Which name counts follows RFC 9112 section 3.2, as a server resolves it: an
absolute-form target (``GET http://host/ HTTP/1.1``, what clients send to proxies) and
the authority-form of CONNECT name the host and override any Host header; otherwise the
first Host header does. Parsing is as lenient as common servers are (bare LF line ends,
whitespace runs in the request line, leading empty lines, a request line without a
version), so those cannot hide a name.
"""

from __future__ import annotations

import re

from .clienthello import DONE, NEED_MORE, normalize_name

NOT_HTTP = "not-http"  # these bytes cannot start an HTTP/1.x request; stop looking

#: The request methods of RFC 9110 and RFC 5789 (PATCH); methods are case-sensitive.
METHODS = (
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    # WebDAV (RFC 4918, 3253, 5323): Windows' WebDAV redirector and sync clients use them.
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH",
)
#: Request line plus header block cap: well above real requests (browsers send < 8 KiB,
#: servers reject past 8-16 KiB), and the bound on what one flow can make us scan.
MAX_HEADER = 16 * 1024

_METHOD_SP = tuple(m + b" " for m in METHODS)
_LONGEST_METHOD = max(map(len, _METHOD_SP))
_VERSION = re.compile(rb"HTTP/1\.[0-9]\Z")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://")


def parse_http_host(stream: bytes | memoryview) -> tuple[str, str | None]:
    """The Host of the first HTTP/1.x request in the first bytes of a TCP stream.

    Returns ``(DONE, host)`` once the header block is complete: that is the frame
    Wireshark attributes the request to, so an event's frame opens on the same request
    in Wireshark. The host comes from an absolute- or authority-form target when there is
    one (servers use it over the Host header: RFC 9112 3.2), else from the first Host
    header; None when there is none, as in a bare HTTP/1.0 request. It is lowercased with
    any port, IPv6 brackets and trailing dot removed. ``NEED_MORE`` while the bytes are a
    valid prefix; ``NOT_HTTP`` when they cannot be an HTTP/1.x request. A header block
    that passes MAX_HEADER ends the search: with the host if one was seen by then.
    """
    view = memoryview(stream)
    capped = len(view) >= MAX_HEADER  # nothing past the cap can complete the block
    data = bytes(view[:MAX_HEADER])
    # RFC 9112 2.2: servers ignore empty lines before the request line.
    start = len(data) - len(data.lstrip(b"\r\n"))
    status = _method_prefix(data[start : start + _LONGEST_METHOD])
    if status is not DONE:
        return (NOT_HTTP if capped else status), None

    eol = data.find(b"\n", start)
    if eol < 0:
        return (NOT_HTTP if capped else NEED_MORE), None
    # A target with raw spaces is invalid, yet servers (and attack tools) use it as is:
    # the first word is the method, the last the version, and the Host header still names the site.
    # A request line without a version (``GET /path``, HTTP/0.9's form, which some clients
    # and scripts still send with headers after it) is read as a request all the same.
    parts = data[start:eol].split()
    if parts[0:1] == [] or parts[0] not in METHODS or not (
            (len(parts) == 2 and not parts[1].startswith(b"HTTP/")) or (len(parts) >= 3 and _VERSION.match(parts[-1]))):
        return NOT_HTTP, None
    target = parts[1]
    host: str | None = None
    from_target = False
    if parts[0] == b"CONNECT" and b"/" not in target:  # authority-form
        host, from_target = _host_of_authority(target), True
    else:
        scheme = _SCHEME.match(target)
        if scheme:
            authority = target[scheme.end() :]
            for stop in b"/?#":
                authority = authority.split(bytes((stop,)), 1)[0]
            host, from_target = _host_of_authority(authority.rpartition(b"@")[2]), True

    pos = eol + 1
    while True:  # each pass consumes one line, so at most MAX_HEADER passes
        eol = data.find(b"\n", pos)
        if eol < 0:
            if capped:
                return (DONE, host) if host else (NOT_HTTP, None)
            return NEED_MORE, None
        line = data[pos:eol]
        pos = eol + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return DONE, host
        if from_target or host is not None:
            continue
        name, colon, value = line.partition(b":")
        # No whitespace is allowed before the colon (RFC 9112 5.1); servers reject
        # "Host :" outright, so such a line is not a Host header.
        if colon and name.lower() == b"host":
            host = _host_of_authority(value)


def _method_prefix(head: bytes) -> str:
    """DONE if ``head`` starts with a known method and a space, NEED_MORE if it may yet."""
    for method in _METHOD_SP:
        if head.startswith(method):
            return DONE
        if method.startswith(head):
            return NEED_MORE
    return NOT_HTTP


def _host_of_authority(authority: bytes) -> str | None:
    """``host[:port]`` or ``[v6]:port`` -> the normalised host, None when empty."""
    authority = authority.strip(b" \t")
    if authority.startswith(b"["):
        close = authority.find(b"]")
        host = authority[1:close] if close > 0 else b""
    elif authority.count(b":") == 1:
        host = authority.partition(b":")[0]
    else:  # no port, or a bare IPv6 address some clients send without brackets
        host = authority
    return normalize_name(host)
