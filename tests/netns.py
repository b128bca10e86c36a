"""Two network namespaces joined by a veth link, and a tcpdump capture of that link.

Tests that drive real clients and servers (OpenSSL, curl, Chromium, aioquic) need the real
bytes those programs put on a real link, yet nothing may leave the machine. A namespace
pair has no route but its own link (198.18.100.0/24, RFC 2544 benchmarking space, and
fd00:198:18:100::/64, unique-local), so every packet stays on the veth; deleting the
namespaces removes the link and whatever was bound to it.

Segmentation and receive offloads are turned off on both ends: with TSO/GSO a sender hands
the kernel one 2 kB "segment" that a capture shows as one packet where a real NIC puts two
on the wire, and GRO glues received segments back together. A sensor on a SPAN port sees
wire segments, so the captures made here must show them too. Checksum offload is turned off
as well, so captured packets carry the checksums a wire would.

Everything is bounded by a timeout and everything started is ended on exit, failure or not:
processes started through ``VethPair.spawn`` by their process group, anything else still
living in the namespaces by its pid, then the namespaces themselves.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLIENT_IP4 = "198.18.100.1"
SERVER_IP4 = "198.18.100.2"
PREFIX4 = 24
CLIENT_IP6 = "fd00:198:18:100::1"
SERVER_IP6 = "fd00:198:18:100::2"
PREFIX6 = 64
#: IPv6 needs links of at least this MTU (RFC 8200 section 5); Linux drops IPv6 below it.
IPV6_MIN_MTU = 1280
#: Offloads that make a capture differ from the wire (see the module docstring).
OFFLOADS = ("tso", "gso", "gro", "lro", "tx", "rx", "tx-udp-segmentation", "rx-gro-list")
#: Bound on each setup or teardown command; they take milliseconds.
COMMAND_TIMEOUT = 10.0
POLL_INTERVAL = 0.02
#: Bound on waiting for both ends of a new link to be up (normally well under a second).
LINK_READY_TIMEOUT = 5.0
#: How many rounds of killing leftover processes before giving up on a namespace.
KILL_ROUNDS = 5

_serial = itertools.count()


def unavailable(*tools: str) -> str | None:
    """Why namespaces cannot be made here, or one of ``tools`` run in them, in words fit
    for ``pytest.skip``; None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "ethtool"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, ethtool)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (make test installs it)"
    probe = f"tkd-probe-{os.getpid()}-{next(_serial)}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` is unavailable: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    return None


@dataclass(frozen=True, slots=True)
class Side:
    """One end of the link: its namespace, interface and addresses."""

    ns: str
    ifname: str
    ip4: str
    ip6: str | None


class VethPair:
    """A client and a server namespace joined by one veth link; a context manager.

    ``spawn`` and ``run`` start programs inside either namespace. On exit every spawned
    process group is ended, leftovers in the namespaces are killed, and the namespaces
    (and so the link) are deleted, even when the body raised.
    """

    def __init__(self, *, mtu: int = 1500, ipv6: bool = True) -> None:
        if ipv6 and mtu < IPV6_MIN_MTU:
            raise ValueError(f"IPv6 needs an MTU of at least {IPV6_MIN_MTU}, not {mtu}")
        # Unique per process and per pair, and short: interface names hold 15 bytes.
        tag = f"{os.getpid():x}-{next(_serial):x}"
        self.mtu = mtu
        self.ipv6 = ipv6
        self.client = Side(f"tkd-{tag}-c", f"tk{tag}c", CLIENT_IP4, CLIENT_IP6 if ipv6 else None)
        self.server = Side(f"tkd-{tag}-s", f"tk{tag}s", SERVER_IP4, SERVER_IP6 if ipv6 else None)
        self._made: list[str] = []
        self._spawned: list[subprocess.Popen] = []

    # -- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> VethPair:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _create(self) -> None:
        client, server = self.client, self.server
        for side in (client, server):
            _check(["ip", "netns", "add", side.ns])
            self._made.append(side.ns)
        # Both ends are born inside their namespaces: the host never holds the link.
        _check(["ip", "link", "add", client.ifname, "netns", client.ns, "type", "veth",
                "peer", "name", server.ifname, "netns", server.ns])
        for side in (client, server):
            _check(["ip", "-n", side.ns, "link", "set", "lo", "up"])
            _check(["ip", "-n", side.ns, "link", "set", side.ifname, "mtu", str(self.mtu)])
            offloads = [word for feature in OFFLOADS for word in (feature, "off")]
            _check(self.command(side, ["ethtool", "-K", side.ifname, *offloads]))
            _check(["ip", "-n", side.ns, "addr", "add", f"{side.ip4}/{PREFIX4}", "dev", side.ifname])
            if side.ip6 is None:
                # No IPv6 at all: no router solicitations or MLD reports in the capture.
                self._sysctl(side, "net/ipv6/conf/all/disable_ipv6", "1")
            else:
                # No duplicate address detection, for the link-local address too (neighbour
                # discovery is sent from it): usable at once instead of after a second.
                self._sysctl(side, f"net/ipv6/conf/{side.ifname}/accept_dad", "0")
                _check(["ip", "-n", side.ns, "addr", "add", f"{side.ip6}/{PREFIX6}", "dev",
                        side.ifname, "nodad"])
        for side in (client, server):
            _check(["ip", "-n", side.ns, "link", "set", side.ifname, "up"])
        self._wait_ready()

    def _sysctl(self, side: Side, key: str, value: str) -> None:
        """Set a sysctl inside the namespace of ``side`` (by /proc/sys: procps may be absent)."""
        _check(self.command(side, ["sh", "-c", 'echo "$1" > "/proc/sys/$2"', "sh", value, key]))

    def _wait_ready(self) -> None:
        """Wait (bounded) until both ends are up and IPv6 has configured them.

        The kernel reports carrier up through linkwatch, up to a second late; until then
        IPv6 ignores neighbour solicitations, so a first connection would stall a second.
        """
        deadline = time.monotonic() + LINK_READY_TIMEOUT
        pending = [self.client, self.server]
        while pending:
            side = pending[0]
            link = _output(["ip", "-n", side.ns, "-o", "link", "show", "dev", side.ifname])
            ready = "state UP" in link
            if ready and side.ip6 is not None:
                local = _output(["ip", "-n", side.ns, "-o", "-6", "addr", "show", "dev", side.ifname,
                                 "scope", "link"])
                ready = "fe80::" in local and "tentative" not in local
            if ready:
                pending.pop(0)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{side.ifname} in {side.ns} did not come up: {link.strip()}")
            else:
                time.sleep(POLL_INTERVAL)

    def close(self) -> None:
        """End every process started here and delete the namespaces; safe to call twice."""
        survivors = []
        while self._spawned:
            proc = self._spawned.pop()
            try:
                self.stop(proc)
            except RuntimeError as exc:  # unkillable (stuck in the kernel): still delete the namespaces
                survivors.append(str(exc))
        for ns in reversed(self._made):
            _kill_leftovers(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT)
        self._made.clear()
        if survivors:
            raise RuntimeError("; ".join(survivors))

    # -- running programs ----------------------------------------------------------------

    @staticmethod
    def command(side: Side, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` made to run inside the namespace of ``side``."""
        return ["ip", "netns", "exec", side.ns, *map(os.fspath, argv)]

    def run(self, side: Side, argv: Sequence[str | os.PathLike[str]], *, timeout: float,
            check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``side``'s namespace to completion (killed after ``timeout``)."""
        kwargs.setdefault("capture_output", True)
        done = subprocess.run(self.command(side, argv), timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def spawn(self, side: Side, argv: Sequence[str | os.PathLike[str]], **kwargs) -> subprocess.Popen:
        """Start ``argv`` in ``side``'s namespace, in a process group of its own.

        ``ip netns exec`` execs the program, so the returned pid is the program's; its
        process group is ended on ``stop`` or when the pair closes.
        """
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(self.command(side, argv), start_new_session=True, **kwargs)
        self._spawned.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Send ``sig`` to the process group of ``proc``, then SIGKILL after ``timeout``."""
        if proc in self._spawned:
            self._spawned.remove(proc)
        for signum, wait in ((sig, timeout), (signal.SIGKILL, COMMAND_TIMEOUT)):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        raise RuntimeError(f"pid {proc.pid} survived SIGKILL")

    def wait_listening(self, side: Side, port: int, *, udp: bool = False, timeout: float = 10.0) -> None:
        """Return once a socket in ``side``'s namespace listens on ``port``; raise after ``timeout``."""
        argv = ["ss", "-H", "-lnu" if udp else "-lnt", f"sport = :{port}"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(side, argv, timeout=COMMAND_TIMEOUT, text=True).stdout.strip():
                return
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"nothing listens on {'udp' if udp else 'tcp'} port {port} in {side.ns}")


class Capture:
    """tcpdump on one end of a ``VethPair``, writing a pcap; a context manager.

    Entering returns once tcpdump says it is listening, so no packet sent after that is
    missed. Leaving waits until the file stops growing (the last packets are written: ``-U``
    flushes per packet) and then stops tcpdump, which reports its kernel drop count.
    """

    def __init__(self, pair: VethPair, path: Path, *, side: Side | None = None,
                 timeout: float = 10.0, quiet: float = 0.3) -> None:
        self.pair = pair
        self.path = Path(path)
        self.side = side or pair.client
        self.timeout = timeout
        self.quiet = quiet
        self.log = self.path.with_suffix(".tcpdump.log")
        self.dropped: int | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Capture:
        if shutil.which("tcpdump") is None:
            raise FileNotFoundError("tcpdump is not installed")
        with open(self.log, "wb") as log:
            # -Z root: Debian's tcpdump otherwise drops to user tcpdump, who cannot write
            # into a root-only pytest tmp_path.
            self._proc = self.pair.spawn(
                self.side,
                ["tcpdump", "-n", "-i", self.side.ifname, "-w", self.path, "-U", "--immediate-mode",
                 "-Z", "root"],
                stderr=log,
            )
        deadline = time.monotonic() + self.timeout
        while b"listening on" not in self.log.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                message = self.log.read_text(errors="replace").strip()
                self.pair.stop(self._proc)
                raise RuntimeError(f"tcpdump did not start: {message}")
            time.sleep(POLL_INTERVAL)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is None:
            return
        if exc_type is None:
            self._settle()
        self.pair.stop(self._proc, signal.SIGINT)
        self._proc = None
        found = re.search(rb"(\d+) packets? dropped by kernel", self.log.read_bytes())
        self.dropped = int(found.group(1)) if found else None

    def _settle(self) -> None:
        """Wait (bounded) until the capture file has not grown for ``quiet`` seconds."""
        deadline = time.monotonic() + self.timeout
        size, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.path.stat().st_size if self.path.exists() else 0
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since >= self.quiet:
                return
            time.sleep(POLL_INTERVAL)


def _check(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def _output(argv: Sequence[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT).stdout


def _kill_leftovers(ns: str) -> None:
    """SIGKILL whatever still runs in ``ns`` (children that left their process group)."""
    for _ in range(KILL_ROUNDS):
        listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        pids = [int(word) for word in listed.stdout.split() if word.isdigit()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(POLL_INTERVAL)


# -- reaching a namespace's sockets from the test's own namespace ---------------------------

CLONE_NEWNET = 0x40000000


def socket_in(ns: str, family: int = 2, kind: int = 1) -> socket.socket:
    """A new socket that belongs to the network namespace ``ns`` (AF_INET, SOCK_STREAM by
    default). setns(2) moves only the calling thread, so a short-lived thread enters the
    namespace, makes the socket and ends; the socket keeps its namespace wherever it is used."""
    made: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{ns}", "rb") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            made.append(socket.socket(family, kind))
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=enter, name=f"setns-{ns}")
    thread.start()
    thread.join(COMMAND_TIMEOUT)
    if not made or isinstance(made[0], BaseException):
        raise RuntimeError(f"cannot make a socket in {ns}: {made[0] if made else 'timed out'}")
    return made[0]


class Forward:
    """A TCP relay across namespaces: listens at ``listen`` (in namespace ``listen_ns``,
    or the test's own when None) and joins each connection to ``target`` (in ``target_ns``).

    What the fleet tests need: a Prometheus on the test's loopback scraping sensors that
    live in namespaces of their own, and those sensors pushing to Alertmanagers on that
    loopback. Connections and relay threads end when either side closes or on ``close``.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], *, listen_ns: str | None = None,
                 target_ns: str | None = None) -> None:
        self.target, self.target_ns = target, target_ns
        self._server = socket_in(listen_ns) if listen_ns else socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(listen)
        self._server.listen(16)
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="forward", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket_in(self.target_ns) if self.target_ns else socket.socket()
            upstream.settimeout(COMMAND_TIMEOUT)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            upstream.settimeout(None)
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        for sock in (self._server, *self._open):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s sending side."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
